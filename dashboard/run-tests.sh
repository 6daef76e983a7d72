#!/usr/bin/env bash
# End-to-end test of the dashboard: builds it, embeds it into runtad, and drives
# Debian's Chromium (never a downloaded browser) against a fresh daemon.
# Assumes the static agent is built (`bash scripts/build.sh` builds everything).
# Env: RUNTAD_BIN (daemon to test; default $CARGO_TARGET_DIR/debug/runtad,
#      CARGO_TARGET_DIR defaulting to ./target; rebuilt here),
#      RUNTA_TEST_PORT (default 18184), CHROMIUM (default /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  apt-get install -y chromium >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
if [ -z "${RUNTAD_BIN:-}" ]; then
  (cd .. && cargo build --quiet -p runtad)
fi
node tests/e2e.mjs
