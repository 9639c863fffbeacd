//! Run: `cargo bench --bench http` — cached vs uncached routes under the same
//! HTTP load, in one process on loopback. Prints numbers, asserts nothing.
//!
//! Each scenario drives one route with `BENCH_CONNECTIONS` (default 64)
//! keep-alive HTTP/1.1 connections for `BENCH_SECS` (default 3) seconds and
//! reports requests per second, p50 and p99 latency, and the ratio against
//! its baseline measured in the same run. Baseline and candidate alternate
//! for `BENCH_ROUNDS` (default 3) rounds and the medians are reported, so
//! that the noise of a small machine (client and server share its cores)
//! hits both alike:
//!
//! - `static` routes return fixed bytes with no cache layer (the baseline);
//! - `cached` routes return the same bytes through a `CacheLayer` whose
//!   entry is already stored, so every request is a hit;
//! - `slow` routes take 5 ms in the handler, uncached vs cached;
//! - with `AXUM_CACHEX_REDIS_URL` / `AXUM_CACHEX_MEMCACHED_SERVERS` set and
//!   the `redis` / `memcached` features on, the cached 1 KiB route on those
//!   backends too.
//!
//! A stampede scenario (`BENCH_STAMPEDE=0` skips it) sends 1000 concurrent
//! requests to a cold key whose handler takes 50 ms, with coalescing on and
//! off, and prints how often the handler ran.
//!
//! A stall scenario (`BENCH_STALL=1`, or `BENCH_ONLY_STALL=1` to run only
//! it; feature `redis`, a `redis-server` binary on the `PATH` or in
//! `AXUM_CACHEX_REDIS_SERVER_BIN`) freezes a private redis-server with
//! `SIGSTOP` for `BENCH_STALL_SECS` (default 10) seconds under load and
//! prints the cached route's throughput and p99 during the stall as ratios
//! of the uncached route's.

#[path = "support/mod.rs"]
mod support;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(support::run());
}
