#!/usr/bin/env bash
# Egress gateway overhead, side by side with a runtime that has no policy, in
# one run: wrk from each runtime's network namespace to a keep-alive HTTP and
# HTTPS server on a test host in a network namespace this script makes
# (198.18.90.2, nothing leaves the machine); create -> ready with and without a
# policy; the daemon's memory for N runtimes once they get policies. It
# reports; it never fails.
#
# Env: RUNTAD_BIN (default: target/release/runtad, else target/debug/runtad),
#      DURATION (10s), CONNECTIONS (16), CREATE_REPS (20), DENSITY (200),
#      IMAGES_DIR (/var/lib/runta/images), SUBNET_OCTET (153),
#      BENCH_EGRESS_OUT (rows for bench/run.sh's report, `Row` in src/report.rs).
set -uo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
BIN=${RUNTAD_BIN:-}
if [ -z "$BIN" ]; then
  for b in "$TARGET/release/runtad" "$TARGET/debug/runtad"; do
    [ -x "$b" ] && { BIN=$b; break; }
  done
fi
if [ -z "$BIN" ] || ! command -v wrk >/dev/null || ! command -v iptables >/dev/null; then
  echo "egress bench skipped: needs wrk (apt-get install wrk), iptables and a built runtad"
  exit 0
fi
DURATION=${DURATION:-10s}
CONNS=${CONNECTIONS:-16}
CREATE_REPS=${CREATE_REPS:-20}
DENSITY=${DENSITY:-200}
NS=runta-bench-eg
VETH=rbeg0
HOST_IP=198.18.90.2
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=$(free_port)
DATA=${BENCH_DATA_DIR:-/tmp/runta-bench-egress}
rm -rf "$DATA" && mkdir -p "$DATA"
E=http://127.0.0.1:$API
PID=
SERVER_PID=
cleanup() {
  # Pages of 100 until none is left: the density phase makes more than one
  # page, and a runtime left behind keeps its bridge (and subnet) alive.
  local round ids
  for ((round = 0; round < 20; round++)); do
    [ -n "${TOKEN:-}" ] || break
    ids=$(curl -s -m 10 "$E/v1/runtimes?limit=100" -H "Authorization: Bearer $TOKEN" |
      python3 -c 'import json,sys; [print(r["id"]) for r in json.load(sys.stdin).get("data", [])]' 2>/dev/null)
    [ -n "$ids" ] || break
    for n in $ids; do
      curl -s -m 30 -o /dev/null -X DELETE "$E/v1/runtimes/$n" -H "Authorization: Bearer $TOKEN"
    done
  done
  [ -n "$PID" ] && { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  ip link del "$VETH" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT

# The test host: a veth into a namespace of its own, one asyncio server
# (HTTP/1.1 keep-alive, a fixed 2-byte body) on :80 and, with a self-signed
# certificate, :443.
ip netns del "$NS" 2>/dev/null; ip link del "$VETH" 2>/dev/null
ip netns add "$NS"
ip link add "$VETH" type veth peer name rbeg1
ip link set rbeg1 netns "$NS"
ip addr add 198.18.90.1/24 dev "$VETH" && ip link set "$VETH" up
ip -n "$NS" addr add "$HOST_IP/24" dev rbeg1 && ip -n "$NS" link set rbeg1 up && ip -n "$NS" link set lo up
ip -n "$NS" route add default via 198.18.90.1
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$DATA/key.pem" -out "$DATA/cert.pem" >/dev/null 2>&1
cat >"$DATA/server.py" <<'PY'
import asyncio, ssl, sys
RESP = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
async def serve(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            w.write(RESP)
            await w.drain()
    except Exception:
        pass
    w.close()
async def main():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[1], sys.argv[2])
    a = await asyncio.start_server(serve, "0.0.0.0", 80, backlog=1024)
    b = await asyncio.start_server(serve, "0.0.0.0", 443, ssl=c, backlog=1024)
    await asyncio.gather(a.serve_forever(), b.serve_forever())
asyncio.run(main())
PY
ip netns exec "$NS" python3 "$DATA/server.py" "$DATA/cert.pem" "$DATA/key.pem" &
SERVER_PID=$!
echo "$HOST_IP bench.test" >"$DATA/hosts"

"$BIN" --data-dir "$DATA/d" --listen "127.0.0.1:$API" --images-dir "${IMAGES_DIR:-/var/lib/runta/images}" \
  --subnet-octet "${SUBNET_OCTET:-153}" --no-prebuild --egress-hosts "$DATA/hosts" \
  --capacity-memory-mib 100000 --pids-limit 128 --quota-runtimes 1000 --quota-vcpus 100000 \
  --quota-pids 1000000 --ingress-listen-https off --ingress-listen-http off >"$DATA/runtad.log" 2>&1 &
PID=$!
for _ in $(seq 300); do curl -sf "$E/healthz" >/dev/null && break; sleep 0.1; done
if ! curl -sf "$E/healthz" >/dev/null; then echo "runtad did not start:"; tail "$DATA/runtad.log"; exit 0; fi
for _ in $(seq 50); do curl -sf -m 1 "http://$HOST_IP/" >/dev/null && break; sleep 0.1; done

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }
TOKEN=$(curl -s -X POST "$E/v1/tokens" -H "Authorization: Bearer $(cat "$DATA/d/admin-token")" -d '{"tenant":"bench"}' | json '["data"]["token"]')
AUTH="Authorization: Bearer $TOKEN"
POLICY='{"mode":"allowlist","allowed_hosts":["bench.test","'$HOST_IP'"]}'
mk() { # name [policy]
  local body='{"name":"'$1'","resources":{"requests":{"vcpus":1,"memory_mib":64}}'
  [ -n "${2:-}" ] && body+=',"egress_policy":'$2
  curl -s -X POST "$E/v1/runtimes?wait=true" -H "$AUTH" -d "$body}" | json '["data"]["id"]'
}
OPEN_ID=$(mk eg-open)
POL_ID=$(mk eg-policy "$POLICY")
init_pid() { cat "/sys/fs/cgroup/pids/runta-"*"/$1/cgroup.procs" "/sys/fs/cgroup/runta-"*"/$1/cgroup.procs" 2>/dev/null | head -1; }

to_ms() { # wrk prints 812.00us / 1.23ms / 1.02s
  python3 -c "import sys,re; v=sys.argv[1]; m=re.match(r'([0-9.]+)(us|ms|s)',v); print('%.3f'%(float(m[1])*{'us':1e-3,'ms':1,'s':1e3}[m[2]]) if m else 'nan')" "$1"
}
echo "runtad: $BIN    test host: python3 asyncio keep-alive server at $HOST_IP, wrk $DURATION from each runtime's netns"
printf '%-8s %-6s %6s %12s %10s %10s\n' runtime proto conns req/s p50_ms p99_ms
declare -A P50 RPS
for c in 1 "$CONNS"; do
  for proto in http https; do
    for rt in open policy; do
      id=$OPEN_ID; [ "$rt" = policy ] && id=$POL_ID
      pid=$(init_pid "$id")
      # HTTP names the host in Host (the gateway's name path, every request
      # checked); HTTPS by address (wrk's SNI is the URL's host).
      args=(-t "$([ "$c" = 1 ] && echo 1 || echo 2)" -c "$c" -d "$DURATION" --latency)
      url="https://$HOST_IP/"
      [ "$proto" = http ] && { url="http://$HOST_IP/"; args+=(-H "Host: bench.test"); }
      out=$(nsenter -t "$pid" -n wrk "${args[@]}" "$url" 2>&1)
      rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      p50=$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")
      p99=$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")
      non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
      [ -n "${DEBUG:-}" ] && echo "$out"
      P50[$rt-$proto-$c]=$p50
      RPS[$rt-$proto-$c]=${rps:-nan}
      printf '%-8s %-6s %6s %12s %10s %10s %s\n' "$rt" "$proto" "$c" "${rps:-?}" "$p50" "$p99" "${non2xx:+(non-2xx: $non2xx)}"
    done
  done
done

# create -> ready, alternating with and without a policy; then the daemon's
# RSS for DENSITY open runtimes before and after each gets a policy.
python3 - "$E" "$TOKEN" "$CREATE_REPS" "$DENSITY" "$PID" "$POLICY" "$DATA/create.json" <<'PY'
import json, statistics, sys, time, urllib.request
e, token, reps, density, pid, policy, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], json.loads(sys.argv[6]), sys.argv[7]
def call(method, path, body=None):
    r = urllib.request.Request(e + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                               headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(r, timeout=120) as f:
        return json.loads(f.read() or b"null")
def rss_kib():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])
times = {"open": [], "policy": []}
for i in range(reps + 2):
    for kind in ("open", "policy"):
        body = {"name": f"c-{kind}-{i}", "resources": {"requests": {"vcpus": 1, "memory_mib": 64}}}
        if kind == "policy":
            body["egress_policy"] = policy
        t0 = time.perf_counter()
        rid = call("POST", "/v1/runtimes?wait=true", body)["data"]["id"]
        dt = (time.perf_counter() - t0) * 1000
        if i >= 2:  # warm-up
            times[kind].append(dt)
        call("DELETE", f"/v1/runtimes/{rid}")
ids = []
for i in range(density):
    ids.append(call("POST", "/v1/runtimes?wait=true", {"name": f"d-{i}", "resources": {"requests": {"vcpus": 1, "memory_mib": 64}}})["data"]["id"])
time.sleep(3)
before = rss_kib()
for rid in ids:
    call("PATCH", f"/v1/runtimes/{rid}", {"egress_policy": policy})
time.sleep(3)
after = rss_kib()
for rid in ids:
    call("DELETE", f"/v1/runtimes/{rid}")
res = {"create_open_p50": statistics.median(times["open"]), "create_policy_p50": statistics.median(times["policy"]),
       "density": density, "rss_before_kib": before, "rss_after_kib": after}
json.dump(res, open(out, "w"))
print("create->ready p50: open %.1f ms, policy %.1f ms (%+.1f ms); daemon RSS for %d runtimes: %.1f MiB open, %.1f MiB with policies (%+.2f MiB, %+.2f MiB per 200)" % (
    res["create_open_p50"], res["create_policy_p50"], res["create_policy_p50"] - res["create_open_p50"], density,
    before / 1024, after / 1024, (after - before) / 1024, (after - before) / 1024 * 200 / max(density, 1)))
PY

for c in 1 "$CONNS"; do
  for proto in http https; do
    python3 -c "import sys; a,b,x,y=map(float,sys.argv[1:5]); print('added p50 %-5s c=%-3s %+.3f ms, throughput %.0f%% of no policy' % (sys.argv[5], sys.argv[6], a-b, 100*x/y if y else float('nan')))" \
      "${P50[policy-$proto-$c]}" "${P50[open-$proto-$c]}" "${RPS[policy-$proto-$c]}" "${RPS[open-$proto-$c]}" "$proto" "$c" 2>/dev/null
  done
done
if [ -n "${BENCH_EGRESS_OUT:-}" ] && [ -s "$DATA/create.json" ]; then
  python3 - "$BENCH_EGRESS_OUT" "$CONNS" "$DATA/create.json" \
    "${P50[open-https-1]}" "${P50[policy-https-1]}" "${P50[open-http-1]}" "${P50[policy-http-1]}" \
    "${RPS[open-https-$CONNS]}" "${RPS[policy-https-$CONNS]}" "${RPS[open-http-$CONNS]}" "${RPS[policy-http-$CONNS]}" <<'PY'
import json, math, sys
out, conns, cj = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
o1s, p1s, o1h, p1h, ons, pns, onh, pnh = (float(x) if x not in ("", "nan") else math.nan for x in sys.argv[4:12])
def num(x):
    return None if math.isnan(x) else round(x, 3)
def row(metric, unit, value, lower, target, note):
    return {"section": "8", "metric": metric, "unit": unit, "runta": num(value),
            "lower_is_better": lower, "target": target, "note": note}
mem = (cj["rss_after_kib"] - cj["rss_before_kib"]) / 1024 * 200 / max(cj["density"], 1)
json.dump([
    row("egress gateway added p50, keep-alive HTTPS, 1 connection", "ms", p1s - o1s, True, 0.3,
        f"policy runtime minus no-policy runtime ({o1s:.3f} ms); plain HTTP (every request checked) adds {p1h - o1h:.3f} ms"),
    row(f"egress gateway throughput, HTTPS, {conns} connections", "% of no policy", 100 * pns / ons if ons else math.nan, False, 80,
        f"{pns:.0f} vs {ons:.0f} req/s; plain HTTP {pnh:.0f} vs {onh:.0f} req/s (python3 asyncio test host)"),
    row("create -> ready with a policy, added p50", "ms", cj["create_policy_p50"] - cj["create_open_p50"], True, 2,
        f"{cj['create_policy_p50']:.1f} vs {cj['create_open_p50']:.1f} ms"),
    row("daemon memory for 200 runtimes with policies", "MiB", mem, True, 20,
        f"RSS growth when {cj['density']} idle runtimes get a policy, scaled to 200"),
], open(out, "w"))
PY
fi
exit 0
