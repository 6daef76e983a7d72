#!/usr/bin/env bash
# Builds the static runta-agent (PID 1 of every runtime) and the daemon and CLI.
# PROFILE=release builds the daemon and CLI optimised (for benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
# The agent runs inside arbitrary images: link it statically. With an explicit
# --target the flag applies to the agent only, not to build scripts.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --quiet --release -p runta-agent --target x86_64-unknown-linux-gnu
if [ "${PROFILE:-debug}" = release ]; then
  cargo build --quiet --release -p runtad -p runta
else
  cargo build --quiet -p runtad -p runta
fi
