#!/usr/bin/env bash
# Runs every fuzz target briefly; exits non-zero if any target finds a crash.
#   bash fuzz/run.sh            # 20 s per target
#   FUZZ_SECS=300 bash fuzz/run.sh
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain,
# RUSTC_BOOTSTRAP=1 enables the nightly flags cargo-fuzz uses (sanitizers).
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECS:-20}"
export RUSTC_BOOTSTRAP=1
mkdir -p corpus/request_parsing corpus/deployment_parsing
# Seeds: valid bodies, so the fuzzer starts from the interesting shapes.
printf '%s' '{"name":"worker","image":"base","resources":{"requests":{"vcpus":0.5,"memory_mib":256,"disk_gib":1},"limits":{"memory_mib":512}},"env":{"A":"b"},"labels":{"team":"x"},"publish":[{"port":8080,"protocol":"https"}],"idle_timeout_secs":300}' > corpus/request_parsing/create.json
printf '%s' '{"command":"echo","args":["a"],"cwd":"/tmp","env":{"X":"1"},"stdin":"in","timeout_secs":5,"max_output_bytes":100}' > corpus/request_parsing/exec.json
printf '%s' '{"resources":{"requests":{"memory_mib":512,"vcpus":1.5}},"labels":{"a":"b"},"idle_timeout_secs":0}' > corpus/request_parsing/update.json
printf '%s' '{"apiVersion":"runta/v1","kind":"SandboxSet","sandboxes":[{"name":"worker","image":"base","resources":{"vcpus":2,"memory_mib":2048},"env":{},"publish":["8080/https","9000"],"idle_timeout_secs":300}]}' > corpus/deployment_parsing/deploy.json
cargo fuzz build -O
status=0
for t in request_parsing deployment_parsing; do
  echo "== $t (${secs}s)"
  if ! cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048; then
    echo "fuzz target $t FAILED: see fuzz/artifacts/$t" >&2
    status=1
  fi
done
exit $status
