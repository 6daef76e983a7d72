#!/usr/bin/env bash
# Quick start: installs what is missing, builds Runta (release), installs the
# binaries, prepares the default image and starts `runtad` on 127.0.0.1:8080
# with its data in /var/lib/runta. Prints a tenant token (also written to
# /var/lib/runta/default-token). Safe to run again: it upgrades in place, and
# running runtimes survive the daemon restart.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
DATA=${RUNTA_DATA_DIR:-/var/lib/runta}
LISTEN=${RUNTA_LISTEN:-127.0.0.1:8080}
ENDPOINT="http://$LISTEN"
PREFIX=${PREFIX:-/usr/local}

echo "==> building (release)"
[ -x dashboard/build.sh ] && bash dashboard/build.sh
PROFILE=release bash scripts/build.sh
install -m 0755 target/release/runtad target/release/runta "$PREFIX/bin/"
install -m 0755 target/x86_64-unknown-linux-gnu/release/runta-agent "$PREFIX/bin/runta-agent"

echo "==> preparing the base image (Debian bookworm; about a minute the first time)"
"$PREFIX/bin/runtad" --prepare-image

if curl -sf "$ENDPOINT/healthz" >/dev/null; then
  echo "==> restarting runtad (runtimes keep running)"
  pkill -TERM -f "^$PREFIX/bin/runtad " || true
  for _ in $(seq 50); do curl -sf "$ENDPOINT/healthz" >/dev/null || break; sleep 0.1; done
fi
echo "==> starting runtad on $LISTEN (log: $DATA/runtad.log)"
mkdir -p "$DATA"
setsid nohup "$PREFIX/bin/runtad" --data-dir "$DATA" --listen "$LISTEN" \
  --agent-bin "$PREFIX/bin/runta-agent" >>"$DATA/runtad.log" 2>&1 < /dev/null &
for _ in $(seq 100); do curl -sf "$ENDPOINT/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$ENDPOINT/healthz" >/dev/null || { echo "runtad did not start; see $DATA/runtad.log" >&2; tail -5 "$DATA/runtad.log" >&2; exit 1; }

if [ ! -s "$DATA/default-token" ]; then
  RUNTA_ENDPOINT=$ENDPOINT RUNTA_TOKEN=$(cat "$DATA/admin-token") \
    "$PREFIX/bin/runta" token create --tenant default > "$DATA/default-token"
  chmod 600 "$DATA/default-token"
fi
cat <<MSG

Runta is running at $ENDPOINT (admin token: $DATA/admin-token).
Use it:

  export RUNTA_ENDPOINT=$ENDPOINT
  export RUNTA_TOKEN=$(cat "$DATA/default-token")
  runta run --name worker --cpus 2 --memory 2048
  runta exec worker -- sh -lc 'pwd && python3 --version'

Dashboard: $ENDPOINT/  (sign in with the token above)
MSG
