//! Run: `cargo run --example dashboard` — a demo server with a few cached
//! routes and the monitoring routes under `/_cache`, on 127.0.0.1:3000 (set
//! `PORT` to change the port, `CACHEX_MONITORING_TOKEN` to choose the
//! token; otherwise a random one is printed).
//!
//! Make some traffic, then open the dashboard URL it prints
//! (`http://127.0.0.1:3000/_cache/#token=…`):
//!
//! ```text
//! curl -s localhost:3000/products >/dev/null; curl -s localhost:3000/products >/dev/null
//! curl -s 'localhost:3000/products/7?lang=fr' >/dev/null
//! curl -s -H 'Accept-Language: fr' localhost:3000/greeting
//! curl -s -H "Authorization: Bearer $TOKEN" localhost:3000/_cache/stats
//! curl -s -H "Authorization: Bearer $TOKEN" localhost:3000/_cache/metrics
//! curl -s -H "Authorization: Bearer $TOKEN" 'localhost:3000/_cache/cached-records?limit=10'
//! curl -s -X POST -H "Authorization: Bearer $TOKEN" 'localhost:3000/_cache/clear-path?path=/products&include_params=true'
//! ```

use std::{net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    extract::Path,
    http::{HeaderMap, header},
    response::IntoResponse,
    routing::get,
};
use axum_cachex::{
    CacheLayer, CacheLayerBuilder, Registry, Stale,
    monitoring::{Guard, Monitoring},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::json;

/// Builds a layer that reports to `registry`, the dashboard's.
fn layer(registry: &Registry, builder: CacheLayerBuilder) -> CacheLayer {
    match builder.registry(registry).build() {
        Ok(layer) => layer,
        Err(e) => panic!("invalid cache configuration: {e}"),
    }
}

/// The configured token, or 32 random bytes, URL-safe base64.
fn token() -> String {
    if let Ok(token) = std::env::var("CACHEX_MONITORING_TOKEN") {
        if !token.is_empty() {
            return token;
        }
    }
    let mut bytes = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("no randomness for the monitoring token: {e}");
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
    // What the dashboard reports: the layers given this registry.
    let registry = Registry::new();
    let layer = |builder| layer(&registry, builder);
    let app = Router::new()
        .route(
            "/products",
            get(|| async {
                Json(json!([{"id": 1, "name": "teapot"}, {"id": 7, "name": "kettle"}]))
            })
            .layer(layer(
                CacheLayer::builder()
                    .ttl(secs(60))
                    .public()
                    .name("products"),
            )),
        )
        .route(
            "/products/{id}",
            get(|Path(id): Path<u32>| async move { Json(json!({"id": id, "price": id * 3})) })
                .layer(layer(
                    CacheLayer::builder()
                        .ttl(secs(30))
                        .stale_ttl(secs(300))
                        .stale(Stale::Revalidate)
                        .name("product"),
                )),
        )
        .route(
            "/greeting",
            get(|headers: HeaderMap| async move {
                let french = headers
                    .get(header::ACCEPT_LANGUAGE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"fr"));
                (
                    [(header::VARY, "accept-language")],
                    if french { "bonjour\n" } else { "hello\n" },
                )
                    .into_response()
            })
            .layer(layer(CacheLayer::builder().ttl(secs(120)).name("greeting"))),
        )
        .route(
            "/report",
            get(|| async {
                // Slow on purpose: the second request is served from the cache.
                tokio::time::sleep(Duration::from_millis(500)).await;
                "quarterly report: all green\n"
            })
            // Fresh 10 s, then kept 10 min to answer if the handler fails:
            // the dashboard shows it as expired but still stored.
            .layer(layer(
                CacheLayer::builder()
                    .ttl(secs(10))
                    .stale_ttl(secs(600))
                    .stale(Stale::Error)
                    .name("report"),
            )),
        );

    // Guarded by a bearer token; this demo listens on loopback only.
    let token = token();
    let app = Monitoring::new(Guard::bearer(token.clone()))
        .registry(&registry)
        .add_to(app, "/_cache");

    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("demo on http://{addr}: /products, /products/{{id}}, /greeting, /report");
    println!("dashboard: http://{addr}/_cache/#token={token}");
    println!("token for curl: export TOKEN={token}");
    axum::serve(listener, app).await
}
