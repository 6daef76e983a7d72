#!/usr/bin/env bash
# Installs what Runta needs on Debian 12 and is missing: the OCI runtime and
# host tools (apt), a Rust toolchain, and Node.js/Python for the SDKs and the
# dashboard. Idempotent: a second run only checks. Needs root.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root (sudo)" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive

want=(crun runc debootstrap iptables iproute2 curl ca-certificates gcc libc6-dev make
      pkg-config python3 python3-venv procps)
# The image tests: a registry on loopback, image tools, a static busybox to build images
# from, and buildah, which runs Dockerfile builds (docs/images.md).
want+=(docker-registry skopeo umoci zstd busybox-static buildah)
[ "${RUNTA_WITH_BROWSER:-1}" = 1 ] && want+=(chromium)
[ "${RUNTA_WITH_BENCH:-0}" = 1 ] && want+=(podman wrk)
command -v node >/dev/null || want+=(nodejs npm)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  echo "==> installing Rust with rustup"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
fi
