//! Red-team tests, round 4: network backends, the extractor and
//! invalidation API, streaming, response-driven freshness, hostile input.
//! Each test names the rule it breaks; every test here failed against the
//! code it was written for, unless marked `GUARD`.

use super::support::*;
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use axum_cachex::{
    CacheLayer, Freshness, ManualClock,
    backend::{Backend, Listing, MemcachedBackend, MemoryBackend, RedisBackend},
};
use bytes::Bytes;

/// The suite's Redis, in a namespace of this test's own.
fn redis() -> Option<Arc<dyn Backend>> {
    let url = crate::common::redis_url()?;
    let backend = RedisBackend::builder()
        .url(url)
        .key_prefix(crate::common::unique_prefix("rt4r"))
        .build()
        .expect("redis backend");
    Some(Arc::new(backend))
}

/// The suite's Memcached, in a namespace of this test's own.
fn memcached() -> Option<Arc<dyn Backend>> {
    let servers = crate::common::memcached_servers()?;
    let backend = MemcachedBackend::builder()
        .servers(servers)
        .key_prefix(crate::common::unique_prefix("rt4m"))
        .build()
        .expect("memcached backend");
    Some(Arc::new(backend))
}

/// Every backend available: memory always, Redis and Memcached when their
/// servers are configured.
fn backends() -> Vec<(&'static str, Arc<dyn Backend>)> {
    let mut out: Vec<(&'static str, Arc<dyn Backend>)> =
        vec![("memory", Arc::new(MemoryBackend::new()))];
    if let Some(b) = redis() {
        out.push(("redis", b));
    }
    if let Some(b) = memcached() {
        out.push(("memcached", b));
    }
    out
}

// ---------------------------------------------------------------------------
// Revalidation (RFC 9111 §4.3.4): the 304 updates the stored response.
// ---------------------------------------------------------------------------

/// A stale entry (`max-age=10, stale-if-error=3600`, strong ETag) is
/// revalidated; the handler answers `304` with `Cache-Control: private`:
/// the resource is now per-user. `freshen` finds the updated response
/// unstorable (`freshened` → `None`) and simply does not write, so the
/// OLD shareable entry stays in the store. The next anonymous client whose
/// request meets a 500 is served that entry as `stale-if-error`.
/// RFC 9111 §4.3.4: the stored response is updated with the 304's fields;
/// once it says `private`, a shared cache must not keep or reuse it (§3,
/// §5.2.2.7). (Same with `no-store` or `Vary: *` in the 304.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule9111_304_making_response_private_leaves_shared_entry_for_stale_if_error() {
    for (name, backend) in backends() {
        let clock = ManualClock::new();
        let calls = counter();
        let c = Arc::clone(&calls);
        let layer = CacheLayer::builder()
            .ttl(Duration::from_secs(600))
            .freshness(Freshness::FromResponse)
            .backend(backend)
            .clock(clock.clock())
            .build()
            .unwrap();
        let app = Router::new().route(
            "/account-summary",
            get(move |headers: HeaderMap| {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    match n {
                        1 => (
                            [
                                (header::CACHE_CONTROL, "max-age=10, stale-if-error=3600"),
                                (header::ETAG, "\"v1\""),
                            ],
                            "shared v1",
                        )
                            .into_response(),
                        2 => {
                            assert_eq!(headers.get(header::IF_NONE_MATCH).unwrap(), "\"v1\"");
                            (
                                StatusCode::NOT_MODIFIED,
                                [
                                    (header::CACHE_CONTROL, "private, max-age=10"),
                                    (header::ETAG, "\"v1\""),
                                ],
                            )
                                .into_response()
                        }
                        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            })
            .layer(layer),
        );
        assert_eq!(
            send(&app, get_req("/account-summary")).await.text(),
            "shared v1"
        );
        clock.advance(Duration::from_secs(20));
        let revalidated = send(&app, get_req("/account-summary")).await;
        assert!(
            revalidated.header("cache-control").contains("private"),
            "[{name}] precondition: the 304's private reaches its client"
        );
        let other = send(&app, get_req("/account-summary")).await;
        assert_ne!(
            (other.status, other.text().as_str()),
            (StatusCode::OK, "shared v1"),
            "[{name}] after the origin's 304 said `private`, another client was \
             served the old shared entry (cache-status: {})",
            other.header("cache-status")
        );
    }
}

/// The stored response varies on `Accept-Language`; the revalidating 304
/// says `Vary: accept`. `freshened` merges the new `Vary` into the headers
/// but keeps the old `vary_key` (computed from `Accept-Language`), and
/// `store::write` files it under a variant key computed from `Accept`.
/// Cache-Status says `stored`, yet the entry can never be selected again:
/// the very next identical request is a `vary-miss` and runs the handler.
/// RFC 9111 §4.3.4: the freshened response is the one to reuse (and RFC
/// 9211 `stored` claims it was kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule9111_vary_changed_by_304_makes_freshened_entry_unreachable() {
    for (name, backend) in backends() {
        let clock = ManualClock::new();
        let calls = counter();
        let c = Arc::clone(&calls);
        let layer = CacheLayer::builder()
            .ttl(Duration::from_secs(10))
            .backend(backend)
            .clock(clock.clock())
            .build()
            .unwrap();
        let app = Router::new().route(
            "/p",
            get(move |headers: HeaderMap| {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if headers.contains_key(header::IF_NONE_MATCH) {
                        return (
                            StatusCode::NOT_MODIFIED,
                            [(header::ETAG, "\"v1\""), (header::VARY, "accept")],
                        )
                            .into_response();
                    }
                    (
                        [(header::ETAG, "\"v1\""), (header::VARY, "accept-language")],
                        format!("body {n}"),
                    )
                        .into_response()
                }
            })
            .layer(layer),
        );
        let req = || {
            Request::get("/p")
                .header(header::HOST, "shop.example")
                .header("accept-language", "en")
                .header("accept", "text/plain")
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(send(&app, req()).await.text(), "body 1");
        clock.advance(Duration::from_secs(20));
        let freshened = send(&app, req()).await;
        assert_eq!(freshened.text(), "body 1");
        assert!(
            freshened.header("cache-status").contains("stored"),
            "[{name}] precondition: {}",
            freshened.header("cache-status")
        );
        let next = send(&app, req()).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "[{name}] the entry the 304 freshened (`stored`) was not served to the \
             same request right after: {:?}, cache-status: {}",
            next.text(),
            next.header("cache-status")
        );
    }
}

// ---------------------------------------------------------------------------
// The entry format must round-trip what the layer stores.
// ---------------------------------------------------------------------------

/// A handler's ETag longer than 65 535 bytes: `put_bytes16` in the core
/// entry format silently truncates it (and any `vary_key`), so the hit
/// sends a cut-off, invalid entity tag (no closing quote) that differs
/// from the one the miss sent: conditional requests with the real ETag
/// never match again, and the hit is not byte for byte the handler's
/// response. Encoding must refuse, not corrupt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_entry_format_truncates_long_etag_served_on_hit() {
    for (name, backend) in backends() {
        let layer = CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .backend(backend)
            .build()
            .unwrap();
        let etag = format!("\"{}\"", "e".repeat(70_000));
        let e2 = etag.clone();
        let app = Router::new().route(
            "/p",
            get(move || {
                let e = e2.clone();
                async move { ([(header::ETAG, e)], "body").into_response() }
            })
            .layer(layer),
        );
        let miss = send(&app, get_req("/p")).await;
        assert_eq!(miss.header("etag"), etag, "[{name}] precondition");
        let hit = send(&app, get_req("/p")).await;
        assert!(
            hit.header("etag") == etag,
            "[{name}] the hit's ETag is {} bytes, not the handler's {} (cache-status: {})",
            hit.header("etag").len(),
            etag.len(),
            hit.header("cache-status")
        );
    }
}

/// A response with `Vary` on 70 request headers: `VariantIndex::write_to`
/// keeps only the first 64 names (`MAX_VARY_NAMES`) while the writer filed
/// the variant under a key computed from all 70. Every reader computes the
/// key from 64 names: every request is a `vary-miss`, the handler runs
/// each time, and each run rewrites index and variant claiming `stored`.
/// Fixed: a response varying on more than 64 headers is not stored, and
/// `Cache-Status` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule9111_response_varying_on_many_headers_stored_but_never_served() {
    for (name, backend) in backends() {
        let calls = counter();
        let c = Arc::clone(&calls);
        let layer = CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .backend(backend)
            .build()
            .unwrap();
        let vary: String = (0..70)
            .map(|i| format!("x-h{i:02}"))
            .collect::<Vec<_>>()
            .join(", ");
        let app = Router::new().route(
            "/p",
            get(move || {
                c.fetch_add(1, Ordering::SeqCst);
                let v = vary.clone();
                async move { ([(header::VARY, v)], "body").into_response() }
            })
            .layer(layer),
        );
        let first = send(&app, get_req("/p")).await;
        assert!(
            !first.header("cache-status").contains("stored"),
            "[{name}] claims stored: {}",
            first.header("cache-status")
        );
        assert!(
            first
                .header("cache-status")
                .contains("detail=vary-too-wide")
        );
        let second = send(&app, get_req("/p")).await;
        assert!(!second.header("cache-status").contains("stored"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}

// ---------------------------------------------------------------------------
// Invalidation API vs what the layer stores.
// ---------------------------------------------------------------------------

/// A middleware inside the router rewrites `/items` to `/items/` (trailing
/// slash normalisation) before the route's cache layer. Since round 3 the
/// key of such a request keeps the client's path and puts `\0/items/` in
/// the QUERY part, although the client's URL has no query. So
/// `clear_path("/items", false)` — documented as "the exact path, only the
/// entry without a query string" — removes nothing on any backend, and
/// the old response keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_clear_path_exact_misses_entry_of_rewritten_uri() {
    for (name, backend) in backends() {
        let calls = counter();
        let c = Arc::clone(&calls);
        let layer = CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .backend(Arc::clone(&backend))
            .build()
            .unwrap();
        async fn trailing_slash(mut req: Request<Body>) -> Request<Body> {
            let path = format!("{}/", req.uri().path());
            *req.uri_mut() = path.parse().unwrap();
            req
        }
        let app = Router::new()
            .route(
                "/items",
                get(move || {
                    let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                    async move { format!("items v{n}") }
                })
                .layer(layer),
            )
            .layer(axum::middleware::map_request(trailing_slash));
        assert_eq!(send(&app, get_req("/items")).await.text(), "items v1");
        assert_eq!(
            send(&app, get_req("/items")).await.text(),
            "items v1",
            "[{name}] precondition: stored"
        );
        CacheLayer::builder()
            .backend(backend.clone())
            .build()
            .unwrap()
            .clear_path("/items", false)
            .await
            .unwrap();
        let after = send(&app, get_req("/items")).await;
        assert_eq!(
            after.text(),
            "items v2",
            "[{name}] clear_path(\"/items\", false) left the entry of GET /items \
             (cache-status: {})",
            after.header("cache-status")
        );
    }
}

// ---------------------------------------------------------------------------
// Network backends.
// ---------------------------------------------------------------------------

/// With prefixes `P` (the HTTP cache) and `P` + `sessions:` (sessions),
/// clearing the cache used to SCAN `P*` and delete every session too.
/// Fixed (issue 11): the HTTP cache writes and clears only under its own
/// sub-namespace `http:`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_redis_clear_deletes_keys_of_backend_with_nested_prefix() {
    let Some(url) = crate::common::redis_url() else {
        return;
    };
    let base = crate::common::unique_prefix("nest");
    let cache = RedisBackend::builder()
        .url(url.clone())
        .key_prefix(base.clone())
        .build()
        .unwrap();
    let sessions = RedisBackend::builder()
        .url(url)
        .key_prefix(format!("{base}sessions:"))
        .build()
        .unwrap();
    sessions
        .set(
            "abc",
            Bytes::from_static(b"user=alice"),
            Some(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    cache
        .set(
            "http:GET|||h|||/x|||",
            Bytes::from_static(b"x"),
            Some(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let listed = cache.keys("").await.unwrap();
    let layer = CacheLayer::builder()
        .backend(Arc::new(cache.clone()))
        .build()
        .unwrap();
    assert_eq!(layer.clear().await.unwrap(), 1);
    assert_eq!(cache.get("http:GET|||h|||/x|||").await.unwrap(), None);
    assert!(
        sessions.get("abc").await.unwrap().is_some(),
        "clearing the cache namespace {base:?} deleted the session stored under \
         {base}sessions: (the cache listed {listed:?})"
    );
}

/// The layer's default `max_body_size` is 1 MiB, exactly Memcached's
/// default item size: a body the layer accepts (≤ 1 MiB) plus the entry
/// head and the envelope does not fit, `set` fails with SERVER_ERROR, and
/// the response is silently never cached (every request runs the handler
/// and counts a backend error). Fixed: the backend states its item size,
/// and the layer buffers to store only what fits; larger bodies stream
/// through as `too-large`, not as backend errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_memcached_default_body_limit_exceeds_default_item_size() {
    let Some(backend) = memcached() else {
        return;
    };
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(backend)
        .build()
        .unwrap();
    let stats = layer.clone();
    let app = Router::new()
        .route(
            "/fits",
            get(move || {
                c.fetch_add(1, Ordering::SeqCst);
                async move { vec![b'x'; 900 * 1024] }
            }),
        )
        .route("/big", get(|| async { vec![b'x'; 1024 * 1024 - 64] }))
        .layer(layer);
    send(&app, get_req("/fits")).await;
    let second = send(&app, get_req("/fits")).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a body that fits an item was not cached (cache-status: {})",
        second.header("cache-status")
    );
    let big = send(&app, get_req("/big")).await;
    assert!(
        big.header("cache-status").contains("too-large"),
        "{}",
        big.header("cache-status")
    );
    assert_eq!(
        stats.stats().backend_errors,
        0,
        "the store was tried anyway"
    );
}
