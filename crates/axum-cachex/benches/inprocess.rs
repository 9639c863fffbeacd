//! Run: `cargo bench --bench inprocess` — the cost of a cache hit inside the
//! process, without sockets: a static route and a cached route returning
//! the same bytes, each driven through `Router::oneshot` on one thread.
//! Prints time per request and the ratio; asserts nothing.
//!
//! Wall-clock figures on a shared machine are noisy; for a repeatable
//! figure count instructions instead, e.g.
//! `valgrind --tool=callgrind target/release/deps/inprocess-* /cached`
//! (arguments select routes, `N` the number of requests);
//! `scripts/bench-table.sh` does that for `/static` and `/cached`. With
//! `--features redis,memcached` and the servers' environment variables,
//! `/redis` and `/memcached` are there too.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, body::Body, routing::get};
use axum_cachex::{
    CacheLayer,
    backend::{Backend, MemoryBackend},
};
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn app() -> Router {
    let body = Bytes::from(vec![b'a'; 1024]);
    let b1 = body.clone();
    let mut router = Router::new().route("/static", get(move || std::future::ready(b1.clone())));
    for (path, backend) in backends() {
        let body = body.clone();
        let layer = CacheLayer::builder()
            .ttl(Duration::from_secs(3600))
            .backend(backend)
            .build()
            .expect("valid layer");
        router = router.route(
            path,
            get(move || std::future::ready(body.clone())).layer(layer),
        );
    }
    router
}

/// `/cached` on the memory backend; with `AXUM_CACHEX_REDIS_URL` or
/// `AXUM_CACHEX_REDIS_CLUSTER_NODES` or `AXUM_CACHEX_MEMCACHED_SERVERS` and
/// their features, `/redis`, `/cluster` and `/memcached` too (their servers run outside the measured process, so
/// callgrind counts only this side of a hit).
fn backends() -> Vec<(&'static str, Arc<dyn Backend>)> {
    #[allow(unused_mut)]
    let mut out: Vec<(&'static str, Arc<dyn Backend>)> =
        vec![("/cached", Arc::new(MemoryBackend::new()))];
    #[cfg(feature = "redis")]
    if let Some(b) = std::env::var("AXUM_CACHEX_REDIS_URL")
        .ok()
        .and_then(|url| axum_cachex::backend::RedisBackend::from_url(&url).ok())
    {
        out.push(("/redis", Arc::new(b)));
    }
    #[cfg(feature = "redis")]
    if let Some(b) = std::env::var("AXUM_CACHEX_REDIS_CLUSTER_NODES")
        .ok()
        .and_then(|nodes| {
            axum_cachex::backend::RedisConfig::new()
                .cluster_nodes(nodes.split(','))
                .build()
                .ok()
        })
    {
        out.push(("/cluster", Arc::new(b)));
    }
    #[cfg(feature = "memcached")]
    if let Some(b) = std::env::var("AXUM_CACHEX_MEMCACHED_SERVERS")
        .ok()
        .and_then(|s| {
            axum_cachex::backend::MemcachedBackend::new(s.split(',').map(str::to_owned)).ok()
        })
    {
        out.push(("/memcached", Arc::new(b)));
    }
    out
}

async fn per_request(app: &Router, path: &str, n: u32) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let req = Request::get(path)
            .header("host", "bench")
            .body(Body::empty())
            .expect("request");
        let Ok(res) = app.clone().oneshot(req).await;
        let _ = res.into_body().collect().await;
    }
    start.elapsed() / n
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.starts_with('/'))
        .collect();
    rt.block_on(async {
        // As `axum::serve` does: every route built once, not per request.
        let app = app().with_state(());
        if !args.is_empty() {
            for path in &args {
                println!("{path}: {:?} per request", per_request(&app, path, n).await);
            }
            return;
        }
        // Warm up, then alternate to share out the noise.
        per_request(&app, "/cached", 1000).await;
        let (mut s, mut c) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            s.push(per_request(&app, "/static", n).await);
            c.push(per_request(&app, "/cached", n).await);
        }
        s.sort();
        c.sort();
        let (s, c) = (s[1], c[1]);
        println!("static route: {s:?} per request");
        println!("cached route (hit): {c:?} per request");
        println!(
            "the layer adds {:?} per hit; cached/static time ratio {:.2}",
            c.saturating_sub(s),
            c.as_secs_f64() / s.as_secs_f64()
        );
    });
}
