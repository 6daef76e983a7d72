#!/usr/bin/env bash
# Conformance of runtad with Runta's official Python client: installs
# runta-sdk==0.1.1 and ==0.1.21 from PyPI into their own venvs and drives both
# against a real runtad (started by tests/conftest.py, as sdk/python does).
# Needs $CARGO_TARGET_DIR/debug/runtad (default ./target) and the static agent (bash scripts/build.sh).
# Extra arguments go to pytest (e.g. ./run-tests.sh -k lifecycle -x).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VERSIONS=${RUNTA_SDK_VERSIONS:-"0.1.1 0.1.21"}
status=0
n=0
for v in $VERSIONS; do
  n=$((n + 1))
  venv=".venv-$v"
  if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv "$venv"
  fi
  if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("runta-sdk"))' 2>/dev/null)" != "$v" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "runta-sdk==$v" -r requirements.txt
  fi
  echo "== runta-sdk $v"
  # Each version gets its own daemon port so a slow teardown cannot collide.
  if ! RUNTA_TEST_PORT=$((18290 + n)) RUNTA_TEST_SUBNET_OCTET=$((151 + n)) "$venv/bin/pytest" -q -p no:cacheprovider tests "$@"; then
    status=1
  fi
done
exit $status
