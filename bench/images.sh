#!/usr/bin/env bash
# Image benchmarks (docs/images.md; results in bench/results/images-*.md):
#   1. first pull of a 200 MB, 8-layer image from a loopback docker-registry
#      through runtad, beside `skopeo copy` of the same image (MB/s);
#   2. create -> ready of a runtime from a cached image beside `base` (ms);
#   3. host memory per runtime for N runtimes of one image beside `base`.
# Needs root, docker-registry, skopeo, curl, python3 and the built binaries
# (bash scripts/build.sh; PROFILE=release for figures worth keeping).
# Usage: bench/images.sh [N_RUNTIMES=50] [CREATES=10]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}
CREATES=${2:-10}
TARGET=${CARGO_TARGET_DIR:-target}
RUNTAD=$TARGET/release/runtad
[ -x "$RUNTAD" ] || RUNTAD=$TARGET/debug/runtad
for t in docker-registry skopeo curl python3; do
  command -v $t >/dev/null || { echo "SKIPPED: $t is not installed"; exit 0; }
done
WORK=$(mktemp -d /tmp/runta-bench-images.XXXXXX)
PIDS=()
# Deletes every runtime of the bench tenant, a page of 100 at a time.
delete_all() {
  local round ids id
  for ((round = 0; round < 20; round++)); do
    ids=$(api GET "/v1/runtimes?limit=100" | python3 -c 'import json,sys; [print(r["id"]) for r in json.load(sys.stdin)["data"]]' 2>/dev/null) || return 1
    [ -n "$ids" ] || return 0
    for id in $ids; do api DELETE "/v1/runtimes/$id" >/dev/null || true; done
  done
}
cleanup() {
  [ -z "${TOKEN:-}" ] || delete_all || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }

# --- the registry and the image ---
REG=127.0.0.1:$(free_port)
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: $REG}
EOF
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
PIDS+=($!)
until curl -sf "http://$REG/v2/" >/dev/null; do sleep 0.1; done
# 8 layers of 25 MB of random bytes (incompressible: the figure is the
# transfer and unpack, not gzip's ratio), as an OCI layout.
python3 - "$WORK/layout" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile
out = sys.argv[1]; blobs = os.path.join(out, "blobs", "sha256"); os.makedirs(blobs)
def put(b):
    d = hashlib.sha256(b).hexdigest(); open(os.path.join(blobs, d), "wb").write(b); return "sha256:" + d, len(b)
layers, diffs = [], []
for i in range(8):
    t = io.BytesIO(); tf = tarfile.open(fileobj=t, mode="w")
    for j in range(5):
        data = os.urandom(5 << 20); ti = tarfile.TarInfo(f"layer{i}/blob{j}"); ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    tf.close(); raw = t.getvalue(); diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
    d, n = put(gzip.compress(raw, 1))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin:/bin"]},
                  "rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
cd, cn = put(cfg)
m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
                "layers": layers}).encode()
md, mn = put(m)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "big"}}]},
          open(os.path.join(out, "index.json"), "w"))
open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
EOF
skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$WORK/layout:big" "docker://$REG/bench/big:1"
BYTES=$(du -sb "$WORK/layout/blobs" | cut -f1)
MB=$(python3 -c "print(round($BYTES/1e6,1))")

# --- skopeo copy of the same image ---
t0=$(now_ms)
skopeo copy --quiet --insecure-policy --src-tls-verify=false "docker://$REG/bench/big:1" "oci:$WORK/skopeo:big"
SKOPEO_MS=$(( $(now_ms) - t0 ))

# --- runtad ---
PORT=$(free_port)
DATA=$WORK/data
mkdir -p "$DATA"
"$RUNTAD" --data-dir "$DATA" --listen 127.0.0.1:$PORT --images-dir "${RUNTA_IMAGES_DIR:-/var/lib/runta/images}" \
  --insecure-registry "$REG" --ingress-listen-https off --ingress-listen-http off >"$WORK/runtad.log" 2>&1 &
PIDS+=($!)
EP=http://127.0.0.1:$PORT
until curl -sf "$EP/healthz" >/dev/null; do sleep 0.2; done
TOKEN=$(cat "$DATA/admin-token")
api() { curl -s -X "$1" "$EP$2" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' ${3:+-d "$3"}; }

t0=$(now_ms)
PULL=$(api POST /v1/images/pulls "{\"reference\": \"$REG/bench/big:1\"}")
PID=$(echo "$PULL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
while :; do
  S=$(api GET "/v1/images/pulls/$PID" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d["status"], d.get("error") or "")')
  case "$S" in succeeded*) break ;; failed*) echo "pull failed: $S"; exit 1 ;; esac
  sleep 0.02
done
PULL_MS=$(( $(now_ms) - t0 ))

# --- create -> ready ---
create_ms() { # image name -> ms of one create that answers running
  local body="{\"name\": \"$2\", \"image\": \"$1\", \"resources\": {\"requests\": {\"vcpus\": 0.1, \"memory_mib\": 64}}}"
  curl -s -o /dev/null -w '%{time_total}' -X POST "$EP/v1/runtimes" -H "Authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' -d "$body" | python3 -c 'import sys; print(round(float(sys.stdin.read())*1000, 1))'
}
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
warm=$(create_ms base warm-base); warm=$(create_ms "$REG/bench/big:1" warm-img)
declare -a CB CI
for i in $(seq 1 "$CREATES"); do
  CB+=("$(create_ms base cb-$i)"); CI+=("$(create_ms "$REG/bench/big:1" ci-$i)")
done
BASE_CREATE=$(median "${CB[@]}"); IMG_CREATE=$(median "${CI[@]}")
delete_all

# --- memory per runtime, disk and page cache ---
# N runtimes of one image, beside N of base: each runtime's memory cgroup
# (median of memory.current / memory.usage_in_bytes: what the runtime itself
# holds, page cache it was first to read included), and for the image, the
# host's page cache before and after every runtime has read all of the
# image's 200 MB through its own rootfs mount (from the host, via
# /proc/PID/root: the image has no shell). Shared lower layers mean the
# cache grows by the image once, not N times.
cgroup_of() { # runtime id -> its memory cgroup dir
  local d
  for d in /sys/fs/cgroup/runta-*/"$1" /sys/fs/cgroup/memory/runta-*/"$1"; do
    [ -d "$d" ] && { echo "$d"; return; }
  done
}
cg_bytes() { cat "$1/memory.current" 2>/dev/null || cat "$1/memory.usage_in_bytes"; }
cached_kib() { awk '/^Cached:/{print $2}' /proc/meminfo; }
ids_of() { api GET "/v1/runtimes?limit=100" | python3 -c 'import json,sys; [print(r["id"]) for r in json.load(sys.stdin)["data"] if r["name"].startswith(sys.argv[1])]' "$1"; }
mem_phase() { # image prefix read? -> "median_cgroup_kib cache_growth_kib"
  local i id ids cg pid c0 c1 vals=()
  for i in $(seq 1 "$N"); do create_ms "$1" "$2-$i" >/dev/null; done
  ids=$(ids_of "$2-")
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; sleep 1
  c0=$(cached_kib)
  if [ "$3" = read ]; then
    for id in $ids; do
      cg=$(cgroup_of "$id"); pid=$(head -n1 "$cg/cgroup.procs" 2>/dev/null || true)
      [ -n "$pid" ] && cat /proc/"$pid"/root/layer*/blob* >/dev/null
    done
  fi
  sleep 1
  c1=$(cached_kib)
  for id in $ids; do
    cg=$(cgroup_of "$id"); [ -n "$cg" ] && vals+=($(( $(cg_bytes "$cg") / 1024 )))
  done
  delete_all
  echo "$(median "${vals[@]}") $(( c1 - c0 ))"
}
read -r MEM_BASE _ <<<"$(mem_phase base mb no)"
read -r MEM_IMG CACHE_GROWTH <<<"$(mem_phase "$REG/bench/big:1" mi read)"
LAYERS_DISK=$(du -sb "$DATA/images/layers" | cut -f1)

rate() { python3 -c "print(round($BYTES/1e6/($1/1000), 1))"; }
cat <<EOF
## Images ($(date -u +%Y-%m-%d), $(basename "$RUNTAD") build $(dirname "$RUNTAD" | xargs basename), $(nproc) cores)

| what | runtad | peer |
|---|---|---|
| first pull, $MB MB in 8 layers, loopback registry | ${PULL_MS} ms ($(rate $PULL_MS) MB/s) | skopeo copy: ${SKOPEO_MS} ms ($(rate $SKOPEO_MS) MB/s) |
| create -> ready, median of $CREATES | image: ${IMG_CREATE} ms | base: ${BASE_CREATE} ms |
| memory per runtime (cgroup, median of $N) | image: $MEM_IMG KiB | base: $MEM_BASE KiB |
| page cache after all $N runtimes read the image's $MB MB through their own rootfs | +$(( CACHE_GROWTH / 1024 )) MB (once would be $MB MB; $N copies $(python3 -c "print(round($BYTES*$N/1e6))") MB) | |
| the image's unpacked layers on disk (once, shared) | $(python3 -c "print(round($LAYERS_DISK/1e6,1))") MB | |
EOF
