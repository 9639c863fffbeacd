//! Run: `REDIS_URL=redis://127.0.0.1:6379 cargo run --example redis --features redis`
//!
//! One cache shared by two instances of an application: this process starts
//! two axum servers, "A" on port 3001 and "B" on port 3002, each with its
//! own `RedisBackend` (its own connection, as two separate deployments
//! would have) on the same Redis namespace. `REDIS_URL` defaults to
//! `redis://127.0.0.1:6379`.
//!
//! Try it:
//!
//! ```text
//! time curl -s localhost:3001/report       # ~1 s: computed by instance A, stored in Redis
//! time curl -s localhost:3002/report       # instant: instance B serves A's response
//! curl -si localhost:3002/report | grep -i cache-status   # a hit
//! curl -X POST 'localhost:3002/invalidate?path=/report'   # B clears it for both
//! time curl -s localhost:3001/report       # ~1 s again, computed by A
//! curl -s localhost:3001/health            # Redis reachable?
//! ```
//!
//! Fail open: stop Redis (`redis-cli shutdown nosave`) and `/report` is still
//! answered, by the handler, every time; `/health` says why. Start Redis
//! again and caching resumes within about a second, without restarting the
//! servers.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::Query,
    routing::{get, post},
};
use axum_cachex::{
    CacheBackend, CacheLayer,
    backend::{Backend, RedisBackend},
};
use http::{header::HOST, request::Parts};

/// The default key format (`{method}|||{host}|||{path}|||{query}`, so
/// `clear_path` keeps working) with the port dropped from the host: behind a
/// load balancer all instances see the same `Host`, here the two ports
/// differ.
fn key_without_port(parts: &Parts) -> String {
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("unknown");
    let host = host.rsplit_once(':').map_or(host, |(name, _port)| name);
    format!(
        "{}|||{host}|||{}|||{}",
        parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or("")
    )
}

fn instance(name: &'static str, redis: RedisBackend) -> Router {
    let backend: Arc<dyn Backend> = Arc::new(redis.clone());
    let cache = match CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .public()
        .backend(backend)
        .key_builder(key_without_port)
        .build()
    {
        Ok(layer) => layer,
        Err(e) => panic!("invalid cache configuration: {e}"),
    };
    Router::new()
        .route(
            "/report",
            get(move || async move {
                // The slow work the cache saves.
                tokio::time::sleep(Duration::from_secs(1)).await;
                format!(
                    "report computed by instance {name} at {:?}\n",
                    std::time::SystemTime::now()
                )
            })
            .layer(cache.clone()),
        )
        .route(
            "/invalidate",
            post(
                move |backend: CacheBackend, Query(q): Query<HashMap<String, String>>| async move {
                    let path = q.get("path").map_or("/report", String::as_str);
                    match backend.clear_path(path, true).await {
                        Ok(n) => {
                            format!("instance {name} removed {n} cached response(s) of {path}\n")
                        }
                        Err(e) => format!("instance {name}: invalidation failed: {e}\n"),
                    }
                },
            )
            .layer(cache),
        )
        .route(
            "/health",
            get(move || async move {
                match redis.ping().await {
                    Ok(()) => format!("instance {name}: redis ok\n"),
                    Err(e) => {
                        let cause = std::error::Error::source(&e)
                            .map(|s| format!(" ({s})"))
                            .unwrap_or_default();
                        format!("instance {name}: redis unavailable: {e}{cause}\n")
                    }
                }
            }),
        )
}

async fn serve(port: u16, app: Router) -> std::io::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    // Two backends, as two deployments would have; the same prefix makes
    // them share entries. Building does not connect: the servers start even
    // when Redis is down.
    let build = || {
        RedisBackend::builder()
            .url(url.clone())
            .key_prefix("axum_cachex_example:")
            .build()
    };
    let (a, b) = (build()?, build()?);
    println!("instance A on http://127.0.0.1:3001, instance B on http://127.0.0.1:3002");
    println!("sharing {a:?}");
    tokio::try_join!(serve(3001, instance("A", a)), serve(3002, instance("B", b)))?;
    Ok(())
}
