#!/usr/bin/env bash
# Runs the public HTTP caching conformance suite (http-tests/cache-tests)
# against axum-cachex-proxy and scores it as cache-tests.fyi does.
#
# The suite is never part of this repository: point CACHE_TESTS_DIR at a
# checkout of it with its dependencies installed, e.g.
#   git clone https://github.com/http-tests/cache-tests /opt/cache-tests
#   (cd /opt/cache-tests && npm install --omit=dev)
#   CACHE_TESTS_DIR=/opt/cache-tests scripts/cache-tests.sh
#
# The suite's origin server listens on every interface, so the origin, the
# proxy and the client run in a private network namespace where only
# loopback exists (needs root for `unshare -n`). Results go to
# target/cache-tests/ (results.json, score.md).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${CACHE_TESTS_DIR:-}" ]; then
    cat <<'HELP'
cache-tests: CACHE_TESTS_DIR is not set, nothing to run.
  git clone https://github.com/http-tests/cache-tests /opt/cache-tests
  (cd /opt/cache-tests && npm install --omit=dev)
  CACHE_TESTS_DIR=/opt/cache-tests scripts/cache-tests.sh
HELP
    exit 0
fi

OUT="$PWD/target/cache-tests"
BIN="$PWD/target/release/axum-cachex-proxy"

if [ -z "${CACHE_TESTS_IN_NAMESPACE:-}" ]; then
    cargo build --release --quiet -p axum-cachex-proxy
    mkdir -p "$OUT"
    exec unshare -n env CACHE_TESTS_IN_NAMESPACE=1 "$0" "$@"
fi

ip link set lo up
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "error: nothing listens on port $1" >&2
    exit 1
}

(cd "$CACHE_TESTS_DIR" && npm_config_protocol=http npm_config_port=8000 \
    npm_config_pidfile="$OUT/origin.pid" exec node test-engine/server/server.mjs) \
    > "$OUT/origin.log" 2>&1 &
PIDS+=($!)
RUST_LOG=warn "$BIN" --upstream http://127.0.0.1:8000 --listen 127.0.0.1:8080 \
    --config scripts/cache-tests-proxy.toml > "$OUT/proxy.log" 2>&1 &
PIDS+=($!)
wait_port 8000
wait_port 8080

# The client exits 0 whatever the results: the score comes from its JSON.
(cd "$CACHE_TESTS_DIR" && npm_config_base=http://127.0.0.1:8080 npm_config_id= \
    npm_package_config_id= exec node --no-warnings test-engine/cli.mjs) > "$OUT/results.json"
node scripts/cache-tests-score.mjs "$CACHE_TESTS_DIR" "$OUT/results.json" | tee "$OUT/score.md"
