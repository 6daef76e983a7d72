#!/usr/bin/env bash
# This tree's daemon against a baseline commit's, in one run on one machine.
#
#   sudo bash bench/baseline.sh                 # baseline: the 2026-11-24 results' commit
#   BENCH_BASELINE=<commit> sudo bash bench/baseline.sh
#
# Builds the baseline commit (release) in a git worktree of its own, starts both
# daemons side by side on fresh data dirs, and runs `runta-bench compare`:
# create -> ready and `exec true` in alternating blocks, the same client for
# both (bench/src/compare.rs). Writes bench/results/<date>-baseline.{md,json}.
# Environment: BENCH_BASELINE (commit, default 652ed6f)  BENCH_BASELINE_DIR
#              BENCH_SKIP_BUILD=1  BENCH_ARGS="--rounds 20 …"
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ "$(id -u)" = 0 ] || { echo "bench/baseline.sh: run as root" >&2; exit 2; }
BASELINE=${BENCH_BASELINE:-652ed6f}
BASELINE_DIR=${BENCH_BASELINE_DIR:-/var/tmp/runta-baseline-$BASELINE}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[ -d /var/lib/runta/images/base/rootfs ] || {
  echo "bench/baseline.sh: no base image (run: runtad --prepare-image --images-dir /var/lib/runta/images)" >&2; exit 2; }

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  echo "== building this tree (release)" >&2
  PROFILE=release bash scripts/build.sh
  cargo build --quiet --release -p runta-bench
  if [ ! -d "$BASELINE_DIR" ]; then
    git worktree add --detach "$BASELINE_DIR" "$BASELINE" >&2
  fi
  echo "== building the baseline $BASELINE (release) in $BASELINE_DIR" >&2
  (cd "$BASELINE_DIR" && unset CARGO_TARGET_DIR && PROFILE=release bash scripts/build.sh)
fi
BENCH=$TARGET/release/runta-bench

WORK=$(mktemp -d /tmp/runta-baseline.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  if ! grep -q " $WORK/" /proc/mounts; then rm -rf "$WORK"; else echo "left $WORK (still mounted)" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # binary dir port octet -> prints a tenant token
  local bin=$1 dir=$2 port=$3 octet=$4
  mkdir -p "$dir"
  # Only flags the baseline daemon also has.
  "$bin" --data-dir "$dir" --listen "127.0.0.1:$port" --images-dir /var/lib/runta/images \
    --subnet-octet "$octet" --no-prebuild --capacity-memory-mib 100000 \
    --ingress-listen-https off --ingress-listen-http off >"$dir.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 300); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS -X POST -H "Authorization: Bearer $(cat "$dir/admin-token")" \
    -H 'Content-Type: application/json' -d '{"tenant":"bench"}' \
    "http://127.0.0.1:$port/v1/tokens" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["token"])'
}

PORT=${BENCH_PORT:-18186}
echo "== starting both daemons" >&2
start "$TARGET/release/runtad" "$WORK/current" "$PORT" 156 >"$WORK/current.token"
start "$BASELINE_DIR/target/release/runtad" "$WORK/baseline" "$((PORT + 1))" 157 >"$WORK/baseline.token"

python3 - "$WORK/env.json" <<EOF
import json, os, platform, subprocess, sys
def sh(c):
    return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
json.dump({"kernel": platform.release(), "cpus": os.cpu_count(),
  "crun": sh("crun --version | head -1"), "loadavg_at_start": sh("cut -d' ' -f1-3 /proc/loadavg"),
  "current": sh("git -C '$ROOT' rev-parse --short HEAD"),
  "baseline": sh("git -C '$BASELINE_DIR' rev-parse --short HEAD")}, open(sys.argv[1], "w"))
EOF

# shellcheck disable=SC2086
"$BENCH" compare --endpoint "http://127.0.0.1:$PORT" --token "$(cat "$WORK/current.token")" \
  --baseline-endpoint "http://127.0.0.1:$((PORT + 1))" --baseline-token "$(cat "$WORK/baseline.token")" \
  --label "this tree ($(git rev-parse --short HEAD))" \
  --baseline-label "baseline ($(git -C "$BASELINE_DIR" rev-parse --short HEAD))" \
  --out-dir "$ROOT/bench/results" --stem "$(date +%F)-baseline" --env-json "$WORK/env.json" \
  ${BENCH_ARGS:-}
