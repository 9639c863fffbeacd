#!/usr/bin/env bash
# Issue 14's table of hit-path targets, measured in one run. A benchmark,
# never run in CI.
#
# 1. Instructions per request of a memory hit and of the static route, under
#    valgrind's callgrind (`cargo bench --bench inprocess`): each route is run
#    twice, with N=2000 and N=12000 requests, and the difference divided by
#    10 000, so that start-up costs cancel out.
# 2. The HTTP ratios from `bench-pinned` (server and load generator pinned
#    to their own cores, axum-response-cache beside us). Set
#    AXUM_CACHEX_REDIS_URL, AXUM_CACHEX_REDIS_CLUSTER_NODES and
#    AXUM_CACHEX_MEMCACHED_SERVERS for the network rows.
#
# Installs valgrind from the Debian packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

bench=$(cargo bench -p axum-cachex --bench inprocess --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "inprocess" and m.get("executable"):
        print(m["executable"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Instructions for N requests to one route.
instructions() {
    N="$2" valgrind --tool=callgrind --callgrind-out-file="$work/out" "$bench" "$1" 2>&1 \
        | awk '/refs:/ { gsub(",", "", $4); print $4 }'
}
per_request() {
    local small large
    small=$(instructions "$1" 2000)
    large=$(instructions "$1" 12000)
    echo $(((large - small) / 10000))
}
static=$(per_request /static)
cached=$(per_request /cached)

(cd bench-pinned && cargo run --release --quiet)
python3 -c "print('| instructions per memory hit (in-process bench) | $static static | $cached hit | %.2f× static | ≤ 1.2× static |' % ($cached / $static))"
