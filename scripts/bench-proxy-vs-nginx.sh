#!/usr/bin/env bash
# Hit throughput of axum-cachex-proxy against nginx's proxy_cache in front of
# the same origin, same client and load, alternating rounds (see
# crates/axum-cachex-proxy/benches/vs_nginx.rs). A benchmark, never run in CI.
# Installs nginx from the Debian packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends nginx-light >/dev/null 2>&1 \
        || $SUDO apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
NGINX="$(command -v nginx)" cargo bench -p axum-cachex-proxy --bench vs_nginx
