#!/usr/bin/env bash
# Runs the whole test suite: lint, the daemon's end-to-end tests, the CLI, the
# Python and TypeScript SDKs and the dashboard, each against real daemons and
# real runtimes. Installs what it needs first. Prints one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh || exit 1
export RUNTA_IMAGES_DIR=${RUNTA_IMAGES_DIR:-/var/lib/runta/images}
LOG=$(mktemp -d)
failed=()

step() { # name, command...
  local name=$1; shift
  echo "==> $name"
  if "$@" 2>&1 | tee "$LOG/$name.log"; then :; else failed+=("$name"); fi
}

step build bash -c '[ -x dashboard/build.sh ] && bash dashboard/build.sh; bash scripts/build.sh && cargo build --quiet --tests --workspace'
if [[ " ${failed[*]} " == *" build "* ]]; then echo "build failed"; exit 1; fi
step image target/debug/runtad --data-dir "$LOG/prep" --images-dir "$RUNTA_IMAGES_DIR" --prepare-image
step fmt cargo fmt --all --check
step clippy cargo clippy --quiet --workspace --all-targets -- -D warnings
step rust cargo test --workspace --no-fail-fast -- --test-threads=4
[ -x sdk/python/run-tests.sh ] && step python bash sdk/python/run-tests.sh
[ -x sdk/typescript/run-tests.sh ] && step typescript bash sdk/typescript/run-tests.sh
[ -x dashboard/run-tests.sh ] && step dashboard bash dashboard/run-tests.sh
# Request and deployment.json parsing under libFuzzer, briefly (cargo-fuzz on
# the stable toolchain via RUSTC_BOOTSTRAP, see fuzz/run.sh).
fuzz() {
  command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz || return 1
  FUZZ_SECS=${FUZZ_SECS:-15} bash fuzz/run.sh
}
[ -f fuzz/run.sh ] && step fuzz fuzz

# One summary over every runner's own closing lines.
passed=0; nfailed=0
for f in "$LOG"/*.log; do
  p=$(grep -hoE '^test result: .* ([0-9]+) passed; ([0-9]+) failed' "$f" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed/\1 \2/')
  while read -r a b; do [ -n "${a:-}" ] && passed=$((passed+a)) && nfailed=$((nfailed+b)); done <<< "$p"
  for pat in '([0-9]+) passed' ; do
    case "$f" in */rust.log) continue;; esac
    a=$(grep -hoE '^=+ .*\b([0-9]+) passed' "$f" | grep -oE '[0-9]+ passed' | tail -1 | cut -d' ' -f1)
    b=$(grep -hoE '^=+ .*\b([0-9]+) failed' "$f" | grep -oE '[0-9]+ failed' | tail -1 | cut -d' ' -f1)
    passed=$((passed+${a:-0})); nfailed=$((nfailed+${b:-0}))
  done
  a=$(grep -hoE '^# pass [0-9]+' "$f" | tail -1 | awk '{print $3}')
  b=$(grep -hoE '^# fail [0-9]+' "$f" | tail -1 | awk '{print $3}')
  passed=$((passed+${a:-0})); nfailed=$((nfailed+${b:-0}))
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed steps: ${failed[*]} (logs in $LOG)"
  [ "$nfailed" -gt 0 ] || nfailed=${#failed[@]}
fi
echo "total: $passed passed, $nfailed failed"
[ ${#failed[@]} -eq 0 ]
