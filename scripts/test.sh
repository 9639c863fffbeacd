#!/usr/bin/env bash
# Runs the whole axum-cachex test suite against real servers.
#
# Installs redis-server and memcached from Debian packages when missing,
# starts one Redis, a Redis Cluster of three primaries (redis-server
# --cluster-enabled yes, joined with redis-cli --cluster create) and two
# Memcached servers on free loopback ports in a
# temporary directory (no persistence), exports their addresses to the tests,
# runs formatting, lints and every test, and stops the servers at the end —
# also on failure or Ctrl-C.
#
# Usage: scripts/test.sh [extra cargo test args]
#        AXUM_CACHEX_SKIP_LINT=1 scripts/test.sh   # tests only (local iteration; CI lints)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_packages=()
command -v redis-server >/dev/null 2>&1 || need_packages+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_packages+=(redis-tools)
command -v memcached >/dev/null 2>&1 || need_packages+=(memcached)
# The dashboard's browser test renders it in headless Chromium.
command -v chromium >/dev/null 2>&1 || need_packages+=(chromium)
if ((${#need_packages[@]})); then
    log "installing ${need_packages[*]} from Debian packages"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi

WORKDIR="$(mktemp -d -t axum-cachex-test.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORKDIR"
}
trap cleanup EXIT INT TERM

# Distinct free loopback ports, all chosen while held open so that no two
# servers get the same one. A Cluster node also listens on its port + 10000
# (the cluster bus), so theirs come from below 55536 with that one free too.
read -r REDIS_PORT MC1_PORT MC2_PORT CLUSTER_PORT1 CLUSTER_PORT2 CLUSTER_PORT3 < <(python3 -c '
import random, socket
held = []
def take(port=0):
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    held.append(s)
    return s.getsockname()[1]
ports = [take() for _ in range(3)]
while len(ports) < 6:
    p = random.randint(20000, 45000)
    try:
        take(p + 10000)
        ports.append(take(p))
    except OSError:
        continue
print(" ".join(map(str, ports)))
for s in held: s.close()')

wait_port() {
    local port=$1 name=$2
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "error: $name did not start on port $port" >&2
    exit 1
}

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORKDIR" --logfile "$WORKDIR/redis.log" --daemonize no &
PIDS+=($!)
memcached -l 127.0.0.1 -p "$MC1_PORT" -U 0 -m 128 -u "$(id -un)" &
PIDS+=($!)
memcached -l 127.0.0.1 -p "$MC2_PORT" -U 0 -m 128 -u "$(id -un)" &
PIDS+=($!)
CLUSTER_PORTS=()
for port in "$CLUSTER_PORT1" "$CLUSTER_PORT2" "$CLUSTER_PORT3"; do
    mkdir -p "$WORKDIR/cluster-$port"
    # No replicas: keep serving the live primaries' slots if one fails.
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
        --cluster-require-full-coverage no \
        --dir "$WORKDIR/cluster-$port" --logfile "$WORKDIR/cluster-$port/redis.log" --daemonize no &
    PIDS+=($!)
    CLUSTER_PORTS+=("$port")
done
wait_port "$REDIS_PORT" redis-server
wait_port "$MC1_PORT" memcached
wait_port "$MC2_PORT" memcached
for port in "${CLUSTER_PORTS[@]}"; do wait_port "$port" "redis-server (cluster)"; done
redis-cli --cluster create "${CLUSTER_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 1 100); do
    ok=1
    for port in "${CLUSTER_PORTS[@]}"; do
        redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' || ok=0
    done
    [ "$ok" = 1 ] && break
    sleep 0.1
done
[ "$ok" = 1 ] || { echo "error: the Redis Cluster did not reach cluster_state:ok" >&2; exit 1; }

# Read by tests/common: the servers to use, and the binaries that outage
# tests start (and stop) on ports of their own.
export AXUM_CACHEX_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export AXUM_CACHEX_MEMCACHED_SERVERS="127.0.0.1:$MC1_PORT,127.0.0.1:$MC2_PORT"
CLUSTER_URLS=("${CLUSTER_PORTS[@]/#/redis://127.0.0.1:}")
export AXUM_CACHEX_REDIS_CLUSTER_NODES="$(IFS=,; echo "${CLUSTER_URLS[*]}")"
export AXUM_CACHEX_REDIS_SERVER_BIN="$(command -v redis-server)"
export AXUM_CACHEX_MEMCACHED_BIN="$(command -v memcached)"
export AXUM_CACHEX_CHROMIUM="$(command -v chromium)"
# Tests of a backend whose server is missing fail instead of skipping.
export AXUM_CACHEX_REQUIRE_SERVERS=1
log "redis on $AXUM_CACHEX_REDIS_URL, redis cluster on $AXUM_CACHEX_REDIS_CLUSTER_NODES, memcached on $AXUM_CACHEX_MEMCACHED_SERVERS"

if [ "${AXUM_CACHEX_SKIP_LINT:-0}" != 1 ]; then
    log "cargo fmt --check"
    cargo fmt --all -- --check
    log "cargo clippy"
    cargo clippy --workspace --all-targets --all-features -- -D warnings
    # The library alone, with no optional feature: no dead code behind a
    # feature gate.
    cargo clippy -p axum-cachex --no-default-features -- -D warnings
    log "cargo doc"
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --quiet
fi
log "cargo test"
cargo test --workspace --all-features "$@"
