#!/usr/bin/env bash
# Runta benchmark suite: one command.
#
#   sudo bash bench/run.sh            # full run, writes bench/results/<date>.{md,json}
#   BENCH_QUICK=1 bash bench/run.sh   # a small smoke run (few repetitions), to a *-quick file
#
# Builds the release daemon and the bench client, starts a private runtad on a
# fresh data dir, measures Runta (REST API, compiled keep-alive client), podman
# and raw crun in the same run, then deletes everything it created and stops the
# daemon, also on failure. Benchmarks report; they never fail a test suite.
# Environment: BENCH_SYSTEMS=runta,podman,crun  BENCH_PORT=18186  BENCH_SKIP_BUILD=1
#              BENCH_ARGS="--create-reps 50 …" (extra runta-bench arguments)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root (crun, podman and runtad need it)" >&2; exit 2; }
command -v podman >/dev/null || apt-get install -y podman
command -v crun >/dev/null || apt-get install -y crun
command -v wrk >/dev/null || apt-get install -y wrk

BASE=/var/lib/runta/images/base/rootfs
[ -d "$BASE" ] || { echo "bench/run.sh: no base image at $BASE (run: runtad --prepare-image --images-dir /var/lib/runta/images)" >&2; exit 2; }
PORT=${BENCH_PORT:-18186}
ENDPOINT=http://127.0.0.1:$PORT

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  echo "== building (release)" >&2
  PROFILE=release bash scripts/build.sh
  cargo build --quiet --release -p runta-bench
fi
BENCH=$ROOT/target/release/runta-bench

WORK=$(mktemp -d /tmp/runta-bench.XXXXXX)
DATA=$WORK/data
OVL=$WORK/crun-rootfs
DAEMON_PID=
TOKEN=

cleanup() {
  set +e
  echo "== cleaning up" >&2
  if [ -n "$TOKEN" ]; then
    "$BENCH" cleanup --endpoint "$ENDPOINT" --token "$TOKEN" --data-dir "$DATA" --work "$WORK"
  fi
  if [ -n "$DAEMON_PID" ]; then
    kill -TERM "$DAEMON_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null
  fi
  mountpoint -q "$OVL/merged" && umount "$OVL/merged"
  for c in /sys/fs/cgroup/*/runta-bench-crun /sys/fs/cgroup/runta-bench-crun; do
    [ -d "$c" ] && rmdir "$c" 2>/dev/null
  done
  # Only remove the work dir when nothing is mounted below it any more.
  if ! grep -q " $WORK/" /proc/mounts; then rm -rf "$WORK"; else echo "left $WORK (still mounted)" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if curl -fsS "$ENDPOINT/healthz" >/dev/null 2>&1; then
  echo "bench/run.sh: something already listens on port $PORT (set BENCH_PORT)" >&2
  exit 2
fi

echo "== starting runtad on $ENDPOINT (data dir $DATA)" >&2
mkdir -p "$DATA"
# 200 idle runtimes in one tenant: a PID limit that keeps them all below the
# host's pid_max, and quotas above the bench's counts (docs/operations.md,
# "Quotas and capacity").
"$ROOT/target/release/runtad" --data-dir "$DATA" --listen "127.0.0.1:$PORT" \
  --images-dir /var/lib/runta/images --subnet-octet 156 --no-prebuild \
  --capacity-memory-mib 100000 \
  --pids-limit 128 --quota-runtimes 1000 --quota-vcpus 100000 --quota-pids 1000000 \
  --quota-checkpoints 10000 --ingress-listen-https off --ingress-listen-http off \
  >"$WORK/runtad.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 300); do
  curl -fsS "$ENDPOINT/healthz" >/dev/null 2>&1 && break
  kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/runtad.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "$ENDPOINT/healthz" >/dev/null
ADMIN=$(cat "$DATA/admin-token")
TOKEN=$(curl -fsS -X POST -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d '{"tenant":"bench"}' "$ENDPOINT/v1/tokens" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["token"])')

# crun's rootfs: an overlay over the read-only base image (never written).
mkdir -p "$OVL/upper" "$OVL/work" "$OVL/merged"
mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$OVL/upper,workdir=$OVL/work" "$OVL/merged"

python3 - "$WORK/env.json" <<EOF
import json, os, platform, subprocess, sys
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception as e: return str(e)
mem = sh("awk '/MemTotal/ {print \$2}' /proc/meminfo")
json.dump({
  "kernel": platform.release(), "cpus": os.cpu_count(),
  "mem_total_mib": int(mem) // 1024 if mem.isdigit() else None,
  "cgroup": sh("stat -fc %T /sys/fs/cgroup") + ("+unified(hybrid)" if os.path.ismount("/sys/fs/cgroup/unified") else ""),
  "podman": sh("podman --version"), "crun": sh("crun --version | head -1"),
  "runc": sh("runc --version | head -1"), "runta_commit": sh("git -C '$ROOT' rev-parse --short HEAD"),
  "loadavg_at_start": sh("cut -d' ' -f1-3 /proc/loadavg"),
}, open(sys.argv[1], "w"))
EOF

INGRESS_ARGS=()
if [ -f bench/ingress.sh ] && [ -z "${BENCH_NO_INGRESS:-}" ]; then
  echo "== ingress (bench/ingress.sh)" >&2
  if RUNTA_ENDPOINT=$ENDPOINT RUNTA_TOKEN=$TOKEN BENCH_DATA_DIR=$WORK/ingress-data \
     BENCH_INGRESS_OUT=$WORK/ingress.json bash bench/ingress.sh >&2 && [ -s "$WORK/ingress.json" ]; then
    INGRESS_ARGS=(--ingress-json "$WORK/ingress.json")
  else
    echo "bench/ingress.sh failed or wrote no rows; ingress reported as skipped" >&2
  fi
fi

# Egress rows (bench/egress.sh) travel in the same file as the ingress rows.
if [ -f bench/egress.sh ] && [ -z "${BENCH_NO_EGRESS:-}" ]; then
  echo "== egress (bench/egress.sh)" >&2
  if BENCH_DATA_DIR=$WORK/egress-data BENCH_EGRESS_OUT=$WORK/egress.json bash bench/egress.sh >&2 &&
     [ -s "$WORK/egress.json" ]; then
    python3 - "$WORK/egress.json" "$WORK/ingress.json" "$WORK/script-rows.json" <<'PY'
import json, os, sys
rows = []
for p in (sys.argv[2], sys.argv[1]):
    if os.path.exists(p) and os.path.getsize(p):
        rows += json.load(open(p))
json.dump(rows, open(sys.argv[3], "w"))
PY
    INGRESS_ARGS=(--ingress-json "$WORK/script-rows.json")
  else
    echo "bench/egress.sh failed or wrote no rows; egress not reported" >&2
  fi
fi

STEM=$(date +%F)
QUICK=()
if [ -n "${BENCH_QUICK:-}" ]; then
  STEM=$STEM-quick
  QUICK=(--create-reps 5 --exec-reps 50 --podman-exec-reps 10 --throughput-secs 2
         --pause-reps 5 --concurrent 10 --density 10 --settle-secs 2)
fi
# shellcheck disable=SC2086
"$BENCH" run --endpoint "$ENDPOINT" --token "$TOKEN" --data-dir "$DATA" --work "$WORK" \
  --daemon-pid "$DAEMON_PID" --rootfs "$BASE" --crun-rootfs "$OVL/merged" \
  --systems "${BENCH_SYSTEMS:-runta,podman,crun}" --out-dir "$ROOT/bench/results" \
  --stem "$STEM" --env-json "$WORK/env.json" "${INGRESS_ARGS[@]}" "${QUICK[@]}" ${BENCH_ARGS:-}
cp "$WORK/runtad.log" "/tmp/runta-bench-runtad-$STEM.log" 2>/dev/null || true
