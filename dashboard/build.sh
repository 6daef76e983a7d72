#!/usr/bin/env bash
# Builds the dashboard into dashboard/dist, which `cargo build -p runtad` embeds
# (crates/runtad/build.rs). Run before building the daemon; scripts/build.sh does.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1; then
  echo "dashboard/build.sh: npm not found; runtad will embed a notice page instead" >&2
  exit 1
fi
# Reinstall only when the lockfile changed since the last install.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
