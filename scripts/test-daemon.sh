#!/usr/bin/env bash
# Starts and stops the real runtad that the Python, conformance, TypeScript and
# dashboard suites test against: one way to do it for every language.
#
#   scripts/test-daemon.sh start [runtad args...]
#       Starts runtad in its own session on a fresh data dir, waits until it is
#       healthy and its admin token works, and prints (KEY=value, one a line):
#         RUNTA_TEST_ENDPOINT, RUNTA_TEST_ADMIN_TOKEN, RUNTA_TEST_DATA_DIR,
#         RUNTA_TEST_DAEMON_PID, RUNTA_TEST_DAEMON_LOG
#       Extra arguments go to runtad (e.g. --stop-grace-secs 2).
#       Exit 3: no runtad binary; any other failure: 1 and the log's tail on stderr.
#   scripts/test-daemon.sh stop DATA_DIR [--keep]
#       SIGTERM (SIGKILL after 15 s) to the daemon started on DATA_DIR, then
#       removes DATA_DIR unless --keep, RUNTA_TEST_KEEP_DATA is set, or something
#       is still mounted under it. Runtimes are NOT deleted here: a stopped
#       runtad leaves its runtimes running by design, so each suite deletes what
#       its tenants own before calling stop.
#
# Env for start: RUNTAD_BIN (default $CARGO_TARGET_DIR/debug/runtad, the target
# dir defaulting to <repo>/target), RUNTA_TEST_PORT (preferred API port; any
# free port if it is taken), RUNTA_TEST_SUBNET_OCTET (preferred runtime subnet
# 10.N.0.0/16, default 151; the first free one in 160..199 if an interface holds it),
# RUNTA_TEST_IMAGES_DIR (/var/lib/runta/images), RUNTA_TEST_DATA_PREFIX
# (runta-test-), RUNTA_TEST_DAEMON_LOG (default <data dir>/runtad.log),
# RUNTA_AGENT_BIN (passed through to runtad when set).
# The ingress listeners always get free ports: a daemon refuses to start
# without them, and the defaults may be another daemon's.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_free() { # port
  python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

# Whether 10.OCTET.0.0/16 is free: no interface holds an address in it. A
# daemon refuses to start on a subnet another interface uses, and the holder
# may be a runtime bridge that some earlier, killed run left behind.
subnet_free() { # octet
  ! ip -4 -o addr show 2>/dev/null | awk '{print $4}' | grep -q "^10\.$1\."
}

free_octet() { # preferred octet: it, or the first free one in 160..199
  local o
  if subnet_free "$1"; then echo "$1"; return; fi
  for ((o = 160; o < 200; o++)); do
    if subnet_free "$o"; then
      echo "subnet 10.$1.0.0/16 is in use; using 10.$o.0.0/16" >&2
      echo "$o"
      return
    fi
  done
  echo "$1"
}

start() {
  local target bin port data log pid endpoint admin deadline octet
  target=${CARGO_TARGET_DIR:-target}
  [[ $target == /* ]] || target=$REPO/$target
  bin=${RUNTAD_BIN:-$target/debug/runtad}
  if [ ! -x "$bin" ]; then
    echo "runtad not found at $bin: run \`bash scripts/build.sh\` or set RUNTAD_BIN" >&2
    exit 3
  fi
  port=${RUNTA_TEST_PORT:-}
  if [ -z "$port" ] || ! port_free "$port"; then port=$(free_port); fi
  octet=$(free_octet "${RUNTA_TEST_SUBNET_OCTET:-151}")
  data=$(mktemp -d "${TMPDIR:-/tmp}/${RUNTA_TEST_DATA_PREFIX:-runta-test-}XXXXXXXX")
  log=${RUNTA_TEST_DAEMON_LOG:-$data/runtad.log}
  endpoint="http://127.0.0.1:$port"
  # setsid: the daemon outlives this script and is not in the caller's
  # process group (a Ctrl-C reaches the suite, which then cleans up).
  setsid "$bin" \
    --data-dir "$data" \
    --listen "127.0.0.1:$port" \
    --images-dir "${RUNTA_TEST_IMAGES_DIR:-/var/lib/runta/images}" \
    --subnet-octet "$octet" \
    --no-prebuild \
    --ingress-listen-https "127.0.0.1:$(free_port)" \
    --ingress-listen-http "127.0.0.1:$(free_port)" \
    "$@" </dev/null >"$log" 2>&1 &
  pid=$!
  echo "$pid" >"$data/test-daemon.pid"
  deadline=$((SECONDS + 60))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "runtad exited during start-up; log:" >&2
      tail -c 3000 "$log" >&2
      exit 1
    fi
    if [ -f "$data/admin-token" ] &&
      curl -fsS -m 2 -o /dev/null "$endpoint/healthz" 2>/dev/null; then
      admin=$(tr -d '[:space:]' <"$data/admin-token")
      # Make sure this is *our* daemon: its admin token must work (a read-only call).
      if curl -fsS -m 5 -o /dev/null -H "Authorization: Bearer $admin" \
        "$endpoint/v1/tokens" 2>/dev/null; then
        break
      fi
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "runtad did not become ready within 60 s; log:" >&2
      tail -c 3000 "$log" >&2
      kill -TERM "$pid" 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
  printf 'RUNTA_TEST_ENDPOINT=%s\nRUNTA_TEST_ADMIN_TOKEN=%s\nRUNTA_TEST_DATA_DIR=%s\nRUNTA_TEST_DAEMON_PID=%s\nRUNTA_TEST_DAEMON_LOG=%s\n' \
    "$endpoint" "$admin" "$data" "$pid" "$log"
}

stop() { # data dir, [--keep]
  local data=${1:?usage: test-daemon.sh stop DATA_DIR [--keep]} keep=${2:-} pid i
  [ -d "$data" ] || return 0
  pid=$(cat "$data/test-daemon.pid" 2>/dev/null || true)
  # Only a runtad started on this data dir: the pid may have been reused.
  if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--data-dir $data "; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  if [ "$keep" = --keep ] || [ -n "${RUNTA_TEST_KEEP_DATA:-}" ]; then
    echo "runtad data kept in $data" >&2
  elif awk -v d="$data" 'index($2, d) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    echo "left $data in place: something is still mounted under it" >&2
  else
    rm -rf --one-file-system "$data" || echo "could not remove $data" >&2
  fi
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: $0 start [runtad args...] | stop DATA_DIR [--keep]" >&2; exit 2 ;;
esac
