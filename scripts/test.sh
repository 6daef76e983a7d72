#!/usr/bin/env bash
# Runs the whole test suite: lint, the daemon's end-to-end tests, the CLI, the
# Python and TypeScript SDKs and the dashboard, each against real daemons and
# real runtimes. Installs what it needs first. Prints one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh || exit 1
set +e  # install-deps.sh sets -e; here every step runs and the summary decides
export RUNTA_IMAGES_DIR=${RUNTA_IMAGES_DIR:-/var/lib/runta/images}
# Where cargo puts the binaries (CARGO_TARGET_DIR, relative to the repository).
TARGET=${CARGO_TARGET_DIR:-target}
LOG=$(mktemp -d)
failed=()

step() { # name, command...
  local name=$1; shift
  echo "==> $name"
  if "$@" 2>&1 | tee "$LOG/$name.log"; then :; else failed+=("$name"); fi
}

step build bash -c '[ -x dashboard/build.sh ] && bash dashboard/build.sh; bash scripts/build.sh && cargo build --quiet --tests --workspace'
if [[ " ${failed[*]} " == *" build "* ]]; then echo "build failed"; exit 1; fi
step image "$TARGET/debug/runtad" --data-dir "$LOG/prep" --images-dir "$RUNTA_IMAGES_DIR" --prepare-image
step fmt cargo fmt --all --check
step clippy cargo clippy --quiet --workspace --all-targets -- -D warnings
step rust cargo test --workspace --no-fail-fast -- --test-threads=4
[ -x sdk/python/run-tests.sh ] && step python bash sdk/python/run-tests.sh
[ -x sdk/conformance/run-tests.sh ] && step conformance bash sdk/conformance/run-tests.sh
[ -x sdk/typescript/run-tests.sh ] && step typescript bash sdk/typescript/run-tests.sh
[ -x dashboard/run-tests.sh ] && step dashboard bash dashboard/run-tests.sh
# Request and deployment.json parsing under libFuzzer, briefly (cargo-fuzz on
# the stable toolchain via RUSTC_BOOTSTRAP, see fuzz/run.sh).
fuzz() {
  command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz || return 1
  # libFuzzer's progress lines go to the log only; the end of the run is shown.
  FUZZ_SECS=${FUZZ_SECS:-15} bash fuzz/run.sh > "$LOG/fuzz.out" 2>&1
  local rc=$?
  grep -E '^(Done|==[0-9]+==|SUMMARY|artifact_prefix)' "$LOG/fuzz.out" | tail -20
  [ $rc -eq 0 ] || tail -40 "$LOG/fuzz.out"
  return $rc
}
[ -f fuzz/run.sh ] && step fuzz fuzz

# One summary over every runner's own closing lines: cargo's "test result",
# pytest's "N passed, M failed in …", node's "ℹ pass N" / "# pass N".
passed=0; nfailed=0
add() { passed=$((passed + ${1:-0})); nfailed=$((nfailed + ${2:-0})); }
for f in "$LOG"/*.log; do
  while read -r a b; do add "$a" "$b"; done < <(
    sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$f")
  # pytest: "N passed, M failed, K errors in …" (errors count as failures).
  while read -r last; do
    e=$(grep -oE '[0-9]+ errors?' <<< "$last" | cut -d' ' -f1)
    f_=$(grep -oE '[0-9]+ failed' <<< "$last" | cut -d' ' -f1)
    add "$(grep -oE '[0-9]+ passed' <<< "$last" | cut -d' ' -f1)" $(( ${f_:-0} + ${e:-0} ))
  done < <(grep -E '^(=+ )?([0-9]+ (passed|failed|errors?|skipped)(, )?)+.* in [0-9.]+s' "$f")
  add "$(grep -E '^(#|ℹ) pass [0-9]+' "$f" | tail -1 | awk '{print $3}')" \
      "$(grep -E '^(#|ℹ) fail [0-9]+' "$f" | tail -1 | awk '{print $3}')"
done
# What failed, last, where a CI log's tail shows it: each failed step's failing
# tests and first panic lines, or the end of its log when it failed otherwise.
for name in "${failed[@]}"; do
  f="$LOG/$name.log"
  echo "--- $name"
  hits=$(grep -E '^test .* FAILED$|panicked at|^(FAILED|ERROR) |^not ok |^✖ |Error: ' "$f" | head -40)
  if [ -n "$hits" ]; then echo "$hits"; else tail -25 "$f"; fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed steps: ${failed[*]} (logs in $LOG)"
  [ "$nfailed" -gt 0 ] || nfailed=${#failed[@]}
fi
echo "total: $passed passed, $nfailed failed"
[ ${#failed[@]} -eq 0 ]
