//! The Redis memory tier: the backend for the `redis-tier` route, and how
//! long a change made through one instance takes to leave another
//! instance's tier.

use std::time::{Duration, Instant};

use axum_cachex::backend::{Backend, MemoryTier, RedisBackend, RedisConfig};
use bytes::Bytes;

/// A Redis backend with a 64 MiB memory tier, on `AXUM_CACHEX_REDIS_URL`.
pub(super) fn tiered_redis(prefix: &str) -> Option<RedisBackend> {
    let url = std::env::var("AXUM_CACHEX_REDIS_URL").ok()?;
    RedisConfig::from_url(url)
        .key_prefix(prefix)
        .memory_tier(MemoryTier::new(64 << 20))
        .build()
        .ok()
}

/// Two instances; B holds a key in its tier, A deletes it: the time from
/// A's call until B's tier no longer serves it, over `BENCH_TIER_ROUNDS`
/// (default 500) rounds.
pub(super) async fn invalidation_latency() {
    let (Some(a), Some(b)) = (tiered_redis("bench-inv:"), tiered_redis("bench-inv:")) else {
        return;
    };
    let rounds = super::env_num("BENCH_TIER_ROUNDS", 500) as usize;
    let mut seen = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let key = format!("k{round}");
        if !in_tier_of(&a, &b, &key).await {
            println!("memory tier: B never trusted its tier; no invalidation latency");
            return;
        }
        let start = Instant::now();
        let _ = a.delete(&key).await;
        while b.get_now(&key).is_some() {
            tokio::task::yield_now().await;
        }
        seen.push(start.elapsed());
    }
    seen.sort();
    let at = |q: f64| seen[((seen.len() - 1) as f64 * q) as usize];
    println!();
    println!(
        "cross-instance invalidation through the memory tier ({rounds} deletes): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    );
}

/// Writes `key` through A and reads it through B until B's tier has it
/// (bounded).
async fn in_tier_of(a: &RedisBackend, b: &RedisBackend, key: &str) -> bool {
    let _ = a
        .set(key, Bytes::from_static(b"v"), Some(Duration::from_secs(60)))
        .await;
    for _ in 0..500 {
        let _ = b.get(key).await;
        if b.get_now(key).is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
