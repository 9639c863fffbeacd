//! Run: `cargo run --example quickstart` — a demo server on the in-memory
//! backend, at http://127.0.0.1:3000 (set `PORT` to change the port).
//!
//! Try it:
//!
//! ```text
//! curl -i localhost:3000/fast                 # Cache-Status: fwd=miss; stored, then hit
//! time curl -s localhost:3000/slow            # ~1 s the first time…
//! time curl -s localhost:3000/slow            # …instant the second time
//! curl -i localhost:3000/no-cache             # handler runs every time; ETag + 304
//! curl -i -H 'If-None-Match: <etag>' localhost:3000/no-cache
//! curl -i localhost:3000/no-store             # Cache-Control: no-store, never stored
//! curl -X POST 'localhost:3000/invalidate?path=/slow'   # next /slow is slow again
//! ```

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    extract::Query,
    routing::{get, post},
};
use axum_cachex::{CacheBackend, CacheLayer, Stale};

fn layer(builder: axum_cachex::CacheLayerBuilder) -> CacheLayer {
    match builder.build() {
        Ok(layer) => layer,
        Err(e) => panic!("invalid cache configuration: {e}"),
    }
}

const ROUTES: &[(&str, &str)] = &[
    ("GET  /fast", "cached 60 s (public, max-age=60)"),
    (
        "GET  /slow",
        "takes 1 s; cached 60 s, so the second request is instant",
    ),
    (
        "GET  /stale",
        "fresh 5 s, then served stale for 30 s while it refreshes",
    ),
    (
        "GET  /no-cache",
        "handler runs every time; ETag + If-None-Match -> 304",
    ),
    ("GET  /no-store", "never stored (Cache-Control: no-store)"),
    (
        "POST /invalidate?path=/slow",
        "drops the cached responses of a path",
    ),
];

#[tokio::main]
async fn main() -> std::io::Result<()> {
    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
    let app = Router::new()
        .route(
            "/",
            get(|| async {
                Json(
                    ROUTES
                        .iter()
                        .map(|(r, d)| format!("{r} — {d}"))
                        .collect::<Vec<_>>(),
                )
            }),
        )
        .route(
            "/fast",
            get(|| async { "Hello from the cache!\n" })
                .layer(layer(CacheLayer::builder().ttl(secs(60)).public())),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(secs(1)).await;
                format!("computed slowly at {:?}\n", std::time::SystemTime::now())
            })
            .layer(layer(CacheLayer::builder().ttl(secs(60)))),
        )
        .route(
            "/stale",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                format!("refreshed at {:?}\n", std::time::SystemTime::now())
            })
            .layer(layer(
                CacheLayer::builder()
                    .ttl(secs(5))
                    .stale_ttl(secs(30))
                    .stale(Stale::Both),
            )),
        )
        .route(
            "/no-cache",
            get(|| async { "Always fresh from the handler, still 304-able.\n" })
                .layer(layer(CacheLayer::builder().no_cache().must_revalidate())),
        )
        .route(
            "/no-store",
            get(|| async { "Never stored.\n" }).layer(layer(CacheLayer::builder().no_store())),
        )
        .route(
            "/invalidate",
            post(
                |cache: CacheBackend, Query(q): Query<HashMap<String, String>>| async move {
                    let path = q.get("path").map(String::as_str).unwrap_or("/slow");
                    match cache.clear_path(path, true).await {
                        Ok(n) => format!("removed {n} cached response(s) of {path}\n"),
                        Err(e) => format!("invalidation failed: {e}\n"),
                    }
                },
            ),
        );

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("axum-cachex quickstart listening on http://{addr} (in-memory backend)");
    for (route, what) in ROUTES {
        println!("  {route:<30} {what}");
    }
    axum::serve(listener, app).await
}
