#!/usr/bin/env bash
# Secret injection overhead (issue 18): p50/p99 of one HTTPS request on a
# keep-alive connection from a runtime to an upstream in a test network
# namespace, (a) to a host with a binding (intercepted: TLS terminated by the
# gateway, header injected, TLS again to the upstream) and (b) the same
# request to a host without one (spliced by the gateway, no interception);
# then (c) = (b) again with 1,000 more bindings in the tenant (other hosts),
# which requests that match none must not feel. The client is Python's
# http.client in the runtime, the same code for every case. It reports; it
# never fails.
#
# Env: RUNTAD_BIN (default: target/release/runtad, else target/debug/runtad),
#      REQUESTS (500), IMAGES_DIR (/var/lib/runta/images), SUBNET_OCTET (157).
set -uo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
BIN=${RUNTAD_BIN:-}
if [ -z "$BIN" ]; then
  for b in "$TARGET/release/runtad" "$TARGET/debug/runtad"; do
    [ -x "$b" ] && { BIN=$b; break; }
  done
fi
if [ -z "$BIN" ] || ! command -v openssl >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "secrets bench skipped: needs root, openssl and a built runtad"
  exit 0
fi
N=${REQUESTS:-500}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=$(free_port)
DATA=${BENCH_DATA_DIR:-/tmp/runta-bench-secrets}
NS=rt-bench-sec
rm -rf "$DATA" && mkdir -p "$DATA"
E=http://127.0.0.1:$API
PID= ; SRV= ; TOKEN=
cleanup() {
  [ -n "$TOKEN" ] && curl -s -o /dev/null -X DELETE "$E/v1/runtimes/bench-sec" -H "Authorization: Bearer $TOKEN"
  [ -n "$PID" ] && { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null
  ip netns del $NS 2>/dev/null; ip link del rtbsh 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT

# The upstream: its own CA, one HTTPS server (HTTP/1.1 keep-alive) on two
# addresses, in its own namespace.
ip netns del $NS 2>/dev/null; ip link del rtbsh 2>/dev/null
ip netns add $NS
ip link add rtbsh type veth peer name rtbsp
ip link set rtbsp netns $NS
ip addr add 198.18.157.1/24 dev rtbsh && ip link set rtbsh up
ip -n $NS addr add 198.18.157.2/24 dev rtbsp; ip -n $NS addr add 198.18.157.3/24 dev rtbsp
ip -n $NS link set rtbsp up; ip -n $NS link set lo up; ip -n $NS route add default via 198.18.157.1
cd "$DATA"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj /CN=bound.bench 2>/dev/null
printf 'subjectAltName=DNS:bound.bench,DNS:plain.bench\n' > ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 -extfile ext 2>/dev/null
cat leaf.pem ca.pem > chain.pem
cd - >/dev/null
printf '198.18.157.2 bound.bench\n198.18.157.3 plain.bench\n' > "$DATA/hosts"
cat > "$DATA/server.py" <<'EOF'
import http.server, socketserver, ssl, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        b = b"ok\n"
        self.send_response(200); self.send_header("content-length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
def serve(addr):
    s = S((addr, 443), H)
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[1], sys.argv[2])
    s.socket = c.wrap_socket(s.socket, server_side=True); s.serve_forever()
threading.Thread(target=serve, args=("198.18.157.3",), daemon=True).start()
serve("198.18.157.2")
EOF
ip netns exec $NS /usr/bin/python3 "$DATA/server.py" "$DATA/chain.pem" "$DATA/leaf.key" &
SRV=$!
for _ in $(seq 100); do
  curl -s -o /dev/null --cacert "$DATA/ca.pem" --resolve plain.bench:443:198.18.157.3 https://plain.bench/ && break
  sleep 0.1
done

"$BIN" --data-dir "$DATA/d" --listen "127.0.0.1:$API" --images-dir "${IMAGES_DIR:-/var/lib/runta/images}" \
  --subnet-octet "${SUBNET_OCTET:-157}" --no-prebuild --ingress-listen-https off --ingress-listen-http off \
  --egress-hosts "$DATA/hosts" --egress-upstream-ca "$DATA/ca.pem" >"$DATA/runtad.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -sf "$E/healthz" >/dev/null && break; sleep 0.1; done
if ! curl -sf "$E/healthz" >/dev/null; then echo "runtad did not start:"; tail "$DATA/runtad.log"; exit 0; fi
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }
TOKEN=$(curl -s -X POST "$E/v1/tokens" -H "Authorization: Bearer $(cat "$DATA/d/admin-token")" -d '{"tenant":"bench"}' | json '["data"]["token"]')
AUTH="Authorization: Bearer $TOKEN"
curl -s -o /dev/null -X POST "$E/v1/runtimes" -H "$AUTH" -d '{"name":"bench-sec","resources":{"requests":{"vcpus":1,"memory_mib":256}}}'
ex() { # command → stdout
  python3 -c 'import json,sys; print(json.dumps({"command":sys.argv[1],"timeout_secs":300}))' "$1" |
    curl -s -X POST "$E/v1/runtimes/bench-sec/exec" -H "$AUTH" -d @- | tee "$DATA/last-exec.json" | json '["data"]["stdout"]'
}
ex "printf '198.18.157.2 bound.bench\n198.18.157.3 plain.bench\n' >> /etc/hosts" >/dev/null
CA=$(cat "$DATA/ca.pem")
python3 -c 'import json,sys; print(json.dumps({"command":"cat > /root/up-ca.pem","stdin":sys.argv[1]}))' "$CA" |
  curl -s -o /dev/null -X POST "$E/v1/runtimes/bench-sec/exec" -H "$AUTH" -d @-
curl -s -o /dev/null -X POST "$E/v1/secrets" -H "$AUTH" -d '{"name":"bench-key","value":"bench-secret-value"}'
curl -s -o /dev/null -X POST "$E/v1/runtimes/bench-sec/secret-injection-rules" -H "$AUTH" \
  -d '{"host":"bound.bench","path":"/*","secret":"bench-key","injection":{"headerName":"Authorization","valueFormat":"Bearer ${credential}"}}'

# The client: N sequential GETs on one keep-alive connection after 20 warm-up
# requests; p50/p99 in microseconds. The runtime's trust store is the
# image's plus its own CA; the pass-through case verifies with the upstream
# CA (the runtime talks TLS to the upstream itself).
cat > "$DATA/client.py" <<EOF
import http.client, ssl, sys, time
host, ca = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=ca if ca != "-" else None)
c = http.client.HTTPSConnection(host, 443, context=ctx)
def one():
    c.request("GET", "/v1/x"); c.getresponse().read()
for _ in range(20): one()
t = []
for _ in range($N):
    a = time.perf_counter(); one(); t.append(time.perf_counter() - a)
t.sort()
print("%d %d" % (t[len(t)//2] * 1e6, t[int(len(t)*0.99)] * 1e6))
EOF
python3 -c 'import json,sys; print(json.dumps({"command":"cat > /root/client.py","stdin":open(sys.argv[1]).read()}))' "$DATA/client.py" |
  curl -s -o /dev/null -X POST "$E/v1/runtimes/bench-sec/exec" -H "$AUTH" -d @-

measure() { ex "python3 /root/client.py $1 $2"; }
INJ=$(measure bound.bench -)
[ -z "$INJ" ] && { echo "injected case failed:"; cat "$DATA/last-exec.json"; echo; tail -5 "$DATA/runtad.log"; }
PASS=$(measure plain.bench /root/up-ca.pem)
[ -z "$PASS" ] && { echo "pass-through case failed:"; cat "$DATA/last-exec.json"; echo;
  curl -s "$E/v1/audits?category=egress&runtime=bench-sec&limit=5" -H "$AUTH"; echo; }
# 1,000 more bindings in the tenant, none for plain.bench.
for i in $(seq 1000); do
  printf '{"host":"h%d.other.bench","path":"/*","secret":"bench-key","injection":{"headerName":"X-K","valueFormat":"${credential}"}}' "$i" |
    curl -s -o /dev/null -X POST "$E/v1/runtimes/bench-sec/secret-injection-rules" -H "$AUTH" -d @-
done
PASS1K=$(measure plain.bench /root/up-ca.pem)
INJ1K=$(measure bound.bench -)

read -r i50 i99 <<<"$INJ"; read -r p50 p99 <<<"$PASS"; read -r k50 k99 <<<"$PASS1K"; read -r j50 j99 <<<"$INJ1K"
echo "secret injection, $N keep-alive HTTPS GETs from a runtime (Python http.client), microseconds:"
printf '  %-44s p50 %6s  p99 %6s\n' "pass-through (no binding for the host)" "$p50" "$p99" \
  "injected (binding: TLS terminated + header)" "$i50" "$i99" \
  "pass-through, 1,000 other bindings in tenant" "$k50" "$k99" \
  "injected, 1,000 other bindings in tenant" "$j50" "$j99"
[ -n "$i50" ] && [ -n "$p50" ] && echo "  added by injection (p50): $(( i50 - p50 )) us; by 1,000 bindings on pass-through (p50): $(( k50 - p50 )) us"
