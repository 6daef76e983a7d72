#!/usr/bin/env bash
# Lints, type-checks and tests the Python SDK against a real runtad.
# Needs $CARGO_TARGET_DIR/debug/runtad (default ./target) and the static agent (bash scripts/build.sh).
# Extra arguments go to pytest (e.g. ./run-tests.sh -k session -x).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# Re-install only when the declared dependencies change.
STAMP="$VENV/.runta-deps"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e '.[test]'
  echo "$WANT" > "$STAMP"
fi
echo "== ruff"
"$VENV/bin/ruff" check src tests
"$VENV/bin/ruff" format --check src tests
echo "== mypy --strict"
"$VENV/bin/mypy" --strict src/runta
echo "== pytest"
"$VENV/bin/pytest" -q "$@"
