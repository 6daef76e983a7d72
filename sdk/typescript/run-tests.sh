#!/usr/bin/env bash
# Runs everything the TypeScript SDK promises: clean install, strict type-check,
# build, the tests against a fresh runtad, and the npm pack / install check.
# Assumes $CARGO_TARGET_DIR/debug/runtad (default ./target) and the static agent are built (bash scripts/build.sh).
# Env: RUNTAD_BIN, RUNTA_TEST_PORT (18183), RUNTA_TEST_SUBNET_OCTET (152),
#      RUNTA_TEST_FILES (a subset of test files, e.g. "exec.test.js").
set -euo pipefail
cd "$(dirname "$0")"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

step() { printf '\n==> %s\n' "$*"; }

step "npm ci"
npm ci --no-audit --no-fund

step "typecheck (tsc --strict --noEmit)"
npx --no-install tsc -p tsconfig.json --strict --noEmit

step "build"
rm -rf dist build-test
npx --no-install tsc -p tsconfig.json

step "typecheck and build the tests"
npx --no-install tsc -p tsconfig.test.json --strict

step "tests against a live runtad"
node build-test/test/harness.js

step "npm pack: install into a temp project and import"
bash test/pack-check.sh

printf '\nTypeScript SDK: all checks passed\n'
