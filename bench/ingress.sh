#!/usr/bin/env bash
# Ingress overhead: requests/s and p50/p99 latency of one keep-alive HTTP server
# in a runtime, reached straight at the runtime's address and through the
# ingress (plain HTTP and HTTPS), with wrk. It reports; it never fails.
#
# Env: RUNTAD_BIN (default: target/release/runtad, else target/debug/runtad),
#      DURATION (10s), CONNECTIONS (16), IMAGES_DIR (/var/lib/runta/images),
#      SUBNET_OCTET (154).
set -uo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
BIN=${RUNTAD_BIN:-}
if [ -z "$BIN" ]; then
  for b in "$TARGET/release/runtad" "$TARGET/debug/runtad"; do
    [ -x "$b" ] && { BIN=$b; break; }
  done
fi
if [ -z "$BIN" ] || ! command -v wrk >/dev/null; then
  echo "ingress bench skipped: needs wrk (apt-get install wrk) and a built runtad"
  exit 0
fi
DURATION=${DURATION:-10s}
CONNS=${CONNECTIONS:-16}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=$(free_port); HTTPS=$(free_port); HTTP=$(free_port)
# A fixed data dir: the instance tag, and so the bridge, stays the same from run to run.
DATA=${BENCH_DATA_DIR:-/tmp/runta-bench-ingress}
rm -rf "$DATA" && mkdir -p "$DATA"
E=http://127.0.0.1:$API

"$BIN" --data-dir "$DATA" --listen "127.0.0.1:$API" --images-dir "${IMAGES_DIR:-/var/lib/runta/images}" \
  --subnet-octet "${SUBNET_OCTET:-154}" --no-prebuild \
  --ingress-listen-https "127.0.0.1:$HTTPS" --ingress-listen-http "127.0.0.1:$HTTP" >"$DATA/runtad.log" 2>&1 &
PID=$!
TOKEN=
cleanup() {
  [ -n "$TOKEN" ] && curl -s -o /dev/null -X DELETE "$E/v1/runtimes/bench" -H "Authorization: Bearer $TOKEN"
  kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "$E/healthz" >/dev/null && break; sleep 0.1; done
if ! curl -sf "$E/healthz" >/dev/null; then echo "runtad did not start:"; tail "$DATA/runtad.log"; exit 0; fi

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }
TOKEN=$(curl -s -X POST "$E/v1/tokens" -H "Authorization: Bearer $(cat "$DATA/admin-token")" -d '{"tenant":"bench"}' | json '["data"]["token"]')
AUTH="Authorization: Bearer $TOKEN"
R=$(curl -s -X POST "$E/v1/runtimes" -H "$AUTH" -d '{"name":"bench","resources":{"requests":{"vcpus":1,"memory_mib":512}},
  "publish":[{"port":8080,"protocol":"https"},{"port":8081,"protocol":"http"}]}')
ID=$(echo "$R" | json '["data"]["id"]'); IP=$(echo "$R" | json '["data"]["ip"]')
SERVER=$(python3 -c 'import json,sys; print(json.dumps({"command":"cat > /root/server.py","stdin":open(sys.argv[1]).read()}))' \
  crates/runtad/tests/fixtures/ingress_server.py)
curl -s -o /dev/null -X POST "$E/v1/runtimes/bench/exec" -H "$AUTH" -d "$SERVER"
curl -s -o /dev/null -X POST "$E/v1/runtimes/bench/exec" -H "$AUTH" -d '{"command":"cd /root && (nohup python3 server.py 8080 >/dev/null 2>&1 &) && (nohup python3 server.py 8081 >/dev/null 2>&1 &) && for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:8080/ && curl -s -o /dev/null http://127.0.0.1:8081/ && exit 0; sleep 0.1; done"}'

# name | url | Host header (empty: none)
CASES=(
  "direct|http://$IP:8080/|"
  "ingress-http|http://127.0.0.1:$HTTP/|8081-$ID.runta.localhost:$HTTP"
  "ingress-https|https://127.0.0.1:$HTTPS/|$ID.runta.localhost:$HTTPS"
)
to_ms() { # wrk prints 812.00us / 1.23ms / 1.02s
  python3 -c "import sys,re; v=sys.argv[1]; m=re.match(r'([0-9.]+)(us|ms|s)',v); print('%.3f'%(float(m[1])*{'us':1e-3,'ms':1,'s':1e3}[m[2]]) if m else 'nan')" "$1"
}
echo "runtad: $BIN    upstream: python3 keep-alive server in runtime $ID ($IP), wrk $DURATION"
printf '%-14s %6s %12s %10s %10s\n' path conns req/s p50_ms p99_ms
declare -A P50 RPS
for c in 1 "$CONNS"; do
  for case in "${CASES[@]}"; do
    IFS='|' read -r name url host <<<"$case"
    args=(-t "$([ "$c" = 1 ] && echo 1 || echo 2)" -c "$c" -d "$DURATION" --latency)
    [ -n "$host" ] && args+=(-H "Host: $host")
    out=$(wrk "${args[@]}" "$url" 2>&1)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")
    p99=$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    errors=$(echo "$out" | awk -F'Socket errors: ' '/Socket errors/ {print $2}')
    [ -n "${DEBUG:-}" ] && echo "$out"
    P50[$name-$c]=$p50
    RPS[$name-$c]=${rps:-nan}
    printf '%-14s %6s %12s %10s %10s %s\n' "$name" "$c" "${rps:-?}" "$p50" "$p99" "${non2xx:+(non-2xx: $non2xx)}${errors:+ (socket errors: $errors)}"
  done
done
for c in 1 "$CONNS"; do
  for name in ingress-http ingress-https; do
    python3 -c "import sys; a,b=sys.argv[1:3]; print('added p50 %-13s c=%-3s %+.3f ms' % (sys.argv[3], sys.argv[4], float(a)-float(b)))" \
      "${P50[$name-$c]}" "${P50[direct-$c]}" "$name" "$c" 2>/dev/null
  done
done
# Rows for bench/run.sh's report (`Row` in bench/src/report.rs).
if [ -n "${BENCH_INGRESS_OUT:-}" ]; then
  python3 - "$BENCH_INGRESS_OUT" "$CONNS" \
    "${RPS[direct-$CONNS]}" "${RPS[ingress-http-$CONNS]}" "${RPS[ingress-https-$CONNS]}" \
    "${P50[direct-1]}" "${P50[ingress-http-1]}" "${P50[ingress-https-1]}" \
    "${P50[direct-$CONNS]}" "${P50[ingress-http-$CONNS]}" "${P50[ingress-https-$CONNS]}" <<'PY'
import json, math, sys
out, conns = sys.argv[1], sys.argv[2]
rd, rh, rs, d1, h1, s1, dn, hn, sn = (float(x) if x not in ("", "nan") else math.nan for x in sys.argv[3:12])
def num(x):
    return None if math.isnan(x) else round(x, 3)
def row(metric, unit, value, lower, note):
    return {"section": "6", "metric": metric, "unit": unit, "runta": num(value),
            "lower_is_better": lower, "note": note}
json.dump([
    row(f"ingress HTTPS throughput, {conns} connections", "req/s", rs, False,
        f"one python3 keep-alive server in a runtime; direct to its address {rd:.0f} req/s, plain-HTTP ingress {rh:.0f} req/s"),
    row("ingress HTTPS added p50 latency, 1 connection", "ms", s1 - d1, True,
        f"p50 through the ingress minus p50 direct ({d1:.3f} ms); plain HTTP adds {h1 - d1:.3f} ms"),
    row(f"ingress HTTPS added p50 latency, {conns} connections", "ms", sn - dn, True,
        f"direct p50 {dn:.3f} ms; plain HTTP adds {hn - dn:.3f} ms"),
], open(out, "w"))
PY
fi
exit 0
