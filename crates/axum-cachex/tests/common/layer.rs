//! HTTP layer behaviour, run on every backend: the same router tests
//! against memory, Redis and Memcached.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::IntoResponse,
    routing::get as route_get,
};
use axum_cachex::{CacheBackend, CacheLayer, CacheLayerBuilder, ManualClock, backend::Backend};
use bytes::Bytes;
use http::Request;

use super::http::{Counter, get, get_ok, get_with, send};

type B = Arc<dyn Backend>;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A router with one counted route `/r` returning `make()`.
fn router<R>(layer: CacheLayer, counter: &Counter, make: fn(usize) -> R) -> Router
where
    R: IntoResponse + 'static,
{
    let c = counter.clone();
    Router::new().route(
        "/r",
        route_get(move || {
            let c = c.clone();
            async move { make(c.hit()) }
        })
        .post(|| async { "posted" })
        .layer(layer),
    )
}

/// [`router`] for tests in other modules.
pub fn router_with<R>(layer: CacheLayer, counter: &Counter, make: fn(usize) -> R) -> Router
where
    R: IntoResponse + 'static,
{
    router(layer, counter, make)
}

fn text(n: usize) -> String {
    format!("response #{n}")
}

fn cached(be: &B) -> CacheLayerBuilder {
    CacheLayer::builder().backend(Arc::clone(be)).ttl(secs(60))
}

pub async fn hit_does_not_run_handler(be: B) {
    let c = Counter::default();
    let app = router(cached(&be).build().expect("layer"), &c, text);
    let first = get_ok(&app, "/r").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, "response #1");
    assert_eq!(first.cache_status(), "axum-cachex; fwd=miss; stored");
    assert_eq!(first.header("cache-control"), "max-age=60");
    assert!(first.header("etag").starts_with("W/\""));
    let second = get_ok(&app, "/r").await;
    assert_eq!(second.body, "response #1");
    assert_eq!(c.get(), 1, "hit ran the handler");
    assert!(
        second.cache_status().starts_with("axum-cachex; hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(second.header("etag"), first.header("etag"));
    assert_eq!(second.header("age"), "0");
    // Another query string is another entry.
    let other = get_ok(&app, "/r?x=1").await;
    assert_eq!(other.body, "response #2");
}

pub async fn conditional_requests(be: B) {
    let c = Counter::default();
    let app = router(cached(&be).build().expect("layer"), &c, text);
    let first = get_ok(&app, "/r").await;
    let etag = first.header("etag").to_owned();
    let opaque = etag.trim_start_matches("W/").to_owned();
    for inm in [
        etag.clone(),
        opaque.clone(),
        format!("\"nope\", {etag}"),
        format!("\"a\",{opaque} , \"b\""),
        "*".to_owned(),
    ] {
        let r = get_with(&app, "/r", "if-none-match", &inm).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "If-None-Match: {inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), etag);
        assert_eq!(r.header("cache-control"), "max-age=60");
    }
    for inm in [
        "\"nope\"",
        "W/\"other\", \"x\"",
        "garbage",
        "\"",
        ",,,",
        "W/",
    ] {
        let r = get_with(&app, "/r", "if-none-match", inm).await;
        assert_eq!(r.status, StatusCode::OK, "If-None-Match: {inm}");
        assert_eq!(r.body, "response #1");
    }
    // A huge, malformed header is harmless.
    let huge = format!("{}W/\"x", "\"a\", ".repeat(2000));
    let r = get_with(&app, "/r", "if-none-match", &huge).await;
    assert_eq!(r.status, StatusCode::OK);
    let bad = Request::get("/r")
        .header("host", "example.com")
        .header(
            "if-none-match",
            HeaderValue::from_bytes(b"\"\xff\xfe\"").expect("obs-text"),
        )
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&app, bad).await.status, StatusCode::OK);
    assert_eq!(c.get(), 1, "conditional hits ran the handler");
}

pub async fn not_modified_repeats_required_headers(be: B) {
    let c = Counter::default();
    // A Date of now: an older one would make the response stale at once
    // (its apparent age, RFC 9111 §4.2.3).
    let app = router(cached(&be).build().expect("layer"), &c, |n| {
        (
            [
                (header::VARY, "accept-language".to_owned()),
                (header::CONTENT_LOCATION, "/r.txt".to_owned()),
                (header::EXPIRES, "Thu, 01 Jan 2099 00:00:00 GMT".to_owned()),
                (
                    header::DATE,
                    httpdate::fmt_http_date(std::time::SystemTime::now()),
                ),
                (
                    header::HeaderName::from_static("x-custom"),
                    "not repeated".to_owned(),
                ),
            ],
            format!("v{n}"),
        )
    });
    let first = get_ok(&app, "/r").await;
    let r = get_with(&app, "/r", "if-none-match", first.header("etag")).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.header("vary"), "accept-language");
    assert_eq!(r.header("content-location"), "/r.txt");
    assert_eq!(r.header("expires"), "Thu, 01 Jan 2099 00:00:00 GMT");
    assert!(!first.header("date").is_empty());
    assert_eq!(r.header("date"), first.header("date"));
    assert_eq!(r.header("x-custom"), "");
}

pub async fn head_is_answered_from_get_entry(be: B) {
    let c = Counter::default();
    let app = router(cached(&be).build().expect("layer"), &c, text);
    let full = get_ok(&app, "/r").await;
    let head = send(
        &app,
        Request::head("/r")
            .header("host", "example.com")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("etag"), full.header("etag"));
    assert_eq!(head.header("content-length"), full.body.len().to_string());
    assert!(head.cache_status().contains("hit"));
    assert_eq!(c.get(), 1);
}

pub async fn post_passes_through_and_invalidates(be: B) {
    let c = Counter::default();
    let app = router(cached(&be).build().expect("layer"), &c, text);
    get_ok(&app, "/r").await;
    let post = send(
        &app,
        Request::post("/r")
            .header("host", "example.com")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(post.body, "posted");
    assert_eq!(post.cache_status(), "axum-cachex; fwd=method");
    assert_eq!(post.header("etag"), "");
    assert_eq!(post.header("cache-control"), "");
    // RFC 9111 §4.4: the successful POST invalidated the GET entry.
    assert_eq!(get_ok(&app, "/r").await.body, "response #2");
}

/// Empties the HTTP cache of `be` between the parts of a test.
async fn reset(be: &B) {
    cached(be)
        .build()
        .expect("layer")
        .clear()
        .await
        .expect("clear");
}

pub async fn no_store_stores_nothing(be: B) {
    let c = Counter::default();
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .no_store()
        .build()
        .expect("layer");
    let app = router(layer, &c, text);
    let a = get_ok(&app, "/r").await;
    let b = get_ok(&app, "/r").await;
    assert_eq!(
        (a.body.as_ref(), b.body.as_ref()),
        (&b"response #1"[..], &b"response #2"[..])
    );
    assert_eq!(a.header("cache-control"), "no-store");
    assert_eq!(a.cache_status(), "axum-cachex; fwd=bypass; detail=no-store");
    assert_eq!(a.header("etag"), "");
    if let Some(listing) = be.listing() {
        assert!(listing.keys("").await.expect("keys").is_empty());
    }
}

pub async fn no_cache_runs_handler_and_answers_304(be: B) {
    let c = Counter::default();
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .no_cache()
        .must_revalidate()
        .build()
        .expect("layer");
    let app = router(layer, &c, |_| "same body");
    let first = get_ok(&app, "/r").await;
    assert_eq!(first.header("cache-control"), "no-cache, must-revalidate");
    let r = get_with(&app, "/r", "if-none-match", first.header("etag")).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(c.get(), 2, "no-cache must run the handler every time");
    let r = get_with(&app, "/r", "if-none-match", "\"other\"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(c.get(), 3);
}

async fn assert_not_stored(app: &Router, c: &Counter, detail: &str) {
    let a = get_ok(app, "/r").await;
    let b = get_ok(app, "/r").await;
    assert_eq!(c.get(), 2, "a {detail} response was stored");
    assert!(
        a.cache_status().contains(&format!("detail={detail}")),
        "{}",
        a.cache_status()
    );
    assert!(!b.cache_status().contains("hit"));
}

pub async fn uncacheable_responses_are_not_stored(be: B) {
    let c = Counter::default();
    let app1 = router(cached(&be).build().expect("layer"), &c, |n| {
        ([(header::SET_COOKIE, "a=b")], text(n))
    });
    assert_not_stored(&app1, &c, "set-cookie").await;
    let c = Counter::default();
    let app2 = router(cached(&be).build().expect("layer"), &c, |n| {
        ([(header::CACHE_CONTROL, "private")], text(n))
    });
    assert_not_stored(&app2, &c, "private").await;
    let c = Counter::default();
    let app3 = router(cached(&be).build().expect("layer"), &c, |n| {
        ([(header::CACHE_CONTROL, "no-store")], text(n))
    });
    assert_not_stored(&app3, &c, "no-store").await;
    let c = Counter::default();
    let app4 = router(cached(&be).build().expect("layer"), &c, |n| {
        (StatusCode::INTERNAL_SERVER_ERROR, text(n))
    });
    assert_not_stored(&app4, &c, "status").await;
    let c = Counter::default();
    let app5 = router(cached(&be).build().expect("layer"), &c, |n| {
        ([(header::VARY, "*")], text(n))
    });
    assert_not_stored(&app5, &c, "vary-star").await;
    // The handler's own Cache-Control on an uncacheable response is kept.
    let r = get_ok(&app3, "/r").await;
    assert_eq!(r.header("cache-control"), "no-store");
}

pub async fn oversize_bodies_stream_through(be: B) {
    let c = Counter::default();
    let layer = cached(&be).max_body_size(1000).build().expect("layer");
    let app = router(layer, &c, |_| vec![b'x'; 5000]);
    let r = get_ok(&app, "/r").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), 5000);
    assert!(r.cache_status().contains("detail=too-large"));
    get_ok(&app, "/r").await;
    assert_eq!(c.get(), 2);
    // A streamed body of unknown length over the limit too.
    let c2 = Counter::default();
    let layer = cached(&be).max_body_size(1000).build().expect("layer");
    let cc = c2.clone();
    let streaming = Router::new().route(
        "/s",
        route_get(move || {
            cc.hit();
            async {
                let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 300])));
                Body::from_stream(tokio_stream_iter(chunks.collect()))
            }
        })
        .layer(layer),
    );
    // Streamed at once: its size is only known at the end, so the head
    // cannot say it was too large; it simply is not stored.
    let r = get_ok(&streaming, "/s").await;
    assert_eq!(r.body.len(), 3000);
    assert!(!r.cache_status().contains("stored"));
    get_ok(&streaming, "/s").await;
    assert_eq!(c2.get(), 2);
}

/// A stream over a Vec without pulling in a stream crate.
fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl futures_core::Stream<Item = T> + Send {
    struct Iter<T>(std::collections::VecDeque<T>);
    impl<T> Unpin for Iter<T> {}
    impl<T> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.pop_front())
        }
    }
    Iter(items.into())
}

pub async fn status_and_headers_survive_a_hit(be: B) {
    let c = Counter::default();
    let layer = cached(&be)
        .cacheable_statuses([StatusCode::OK, StatusCode::CREATED, StatusCode::NOT_FOUND])
        .build()
        .expect("layer");
    let app = router(layer, &c, |n| {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.test+json"),
        );
        h.insert("x-custom", HeaderValue::from_static("kept"));
        h.append("x-multi", HeaderValue::from_static("one"));
        h.append("x-multi", HeaderValue::from_static("two"));
        (StatusCode::CREATED, h, format!("{{\"n\":{n}}}"))
    });
    let a = get_ok(&app, "/r").await;
    let b = get_ok(&app, "/r").await;
    assert_eq!(c.get(), 1);
    assert_eq!(b.status, StatusCode::CREATED);
    assert_eq!(b.header("content-type"), "application/vnd.test+json");
    assert_eq!(b.header("x-custom"), "kept");
    let multi: Vec<_> = b.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["one", "two"]);
    assert_eq!(a.body, b.body);

    reset(&be).await;
    let c404 = Counter::default();
    let layer = cached(&be)
        .cacheable_statuses([StatusCode::OK, StatusCode::NOT_FOUND])
        .build()
        .expect("layer");
    let app404 = router(layer, &c404, |_| (StatusCode::NOT_FOUND, "gone"));
    get_ok(&app404, "/r").await;
    let r = get_ok(&app404, "/r").await;
    assert_eq!((r.status, c404.get()), (StatusCode::NOT_FOUND, 1));
    // Without opting in, 404 is not stored.
    reset(&be).await;
    let c = Counter::default();
    let not_opted = app_404(cached(&be).build().expect("layer"), &c);
    get_ok(&not_opted, "/r").await;
    get_ok(&not_opted, "/r").await;
    assert_eq!(c.get(), 2);
}

fn app_404(layer: CacheLayer, c: &Counter) -> Router {
    router(layer, c, |_| (StatusCode::NOT_FOUND, "gone"))
}

pub async fn binary_body_round_trips(be: B) {
    let c = Counter::default();
    let app = router(cached(&be).build().expect("layer"), &c, |_| {
        let body: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
        ([(header::CONTENT_TYPE, "application/octet-stream")], body)
    });
    let a = get_ok(&app, "/r").await;
    let b = get_ok(&app, "/r").await;
    assert_eq!(c.get(), 1);
    let expected: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    assert_eq!(a.body.as_ref(), &expected[..]);
    assert_eq!(b.body.as_ref(), &expected[..]);
}

pub async fn expiry_follows_the_clock(be: B) {
    let manual = ManualClock::new();
    let c = Counter::default();
    let layer = cached(&be).clock(manual.clock()).build().expect("layer");
    let app = router(layer, &c, text);
    get_ok(&app, "/r").await;
    manual.advance(secs(30));
    let mid = get_ok(&app, "/r").await;
    assert_eq!(mid.header("age"), "30");
    assert_eq!(mid.cache_status(), "axum-cachex; hit; ttl=30");
    assert_eq!(c.get(), 1);
    manual.advance(secs(31));
    let after = get_ok(&app, "/r").await;
    assert_eq!(after.body, "response #2", "expired entry served");
    assert!(
        after.cache_status().contains("fwd=stale"),
        "{}",
        after.cache_status()
    );
    assert_eq!(get_ok(&app, "/r").await.body, "response #2");
}

pub async fn authorization_bypasses_unless_public(be: B) {
    let c = Counter::default();
    let app = router(cached(&be).build().expect("layer"), &c, text);
    get_ok(&app, "/r").await;
    let r = get_with(&app, "/r", "authorization", "Bearer secret").await;
    assert_eq!(
        r.body, "response #2",
        "authorized request served from shared cache"
    );
    assert_eq!(
        r.cache_status(),
        "axum-cachex; fwd=bypass; detail=authorization"
    );
    let r = get_with(&app, "/r", "authorization", "Bearer secret").await;
    assert_eq!(r.body, "response #3");
    // The unauthenticated entry was not replaced by an authorized response.
    assert_eq!(get_ok(&app, "/r").await.body, "response #1");

    reset(&be).await;
    let c = Counter::default();
    let app = router(cached(&be).public().build().expect("layer"), &c, text);
    get_with(&app, "/r", "authorization", "Bearer x").await;
    let r = get_with(&app, "/r", "authorization", "Bearer x").await;
    assert_eq!((r.body.as_ref(), c.get()), (&b"response #1"[..], 1));
}

pub async fn corrupt_entry_is_a_miss(be: B) {
    let c = Counter::default();
    let layer = cached(&be).build().expect("layer");
    let key = layer
        .cache_key(&get("/r").body(()).expect("req"))
        .expect("key");
    be.set(
        &key,
        Bytes::from_static(b"\x00garbage that is not an entry"),
        Some(secs(60)),
    )
    .await
    .expect("set");
    let app = router(layer.clone(), &c, text);
    let r = get_ok(&app, "/r").await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::OK, &b"response #1"[..])
    );
    assert_eq!(layer.stats().decode_failures, 1);
    assert_eq!(get_ok(&app, "/r").await.body, "response #1");
    assert_eq!(c.get(), 1, "the corrupt entry was not replaced");
}

pub async fn invalidation_counts(be: B) {
    let c = Counter::default();
    let layer = cached(&be).build().expect("layer");
    let l2 = layer.clone();
    let counter = c.clone();
    let handler = move || {
        let counter = counter.clone();
        async move { text(counter.hit()) }
    };
    let site = Router::new()
        .route("/users", route_get(handler.clone()))
        .route("/users/{id}", route_get(handler.clone()))
        .route("/posts", route_get(handler))
        .layer(layer);
    for uri in ["/users", "/users?page=2", "/users/1", "/users/2", "/posts"] {
        get_ok(&site, uri).await;
    }
    assert_eq!(c.get(), 5);
    let exact = be.path_invalidation().is_none_or(|p| p.counts_exactly());
    // invalidate: the entry of this request.
    assert!(
        l2.invalidate(&get("/posts").body(()).expect("req"))
            .await
            .expect("invalidate")
    );
    assert!(
        !l2.invalidate(&get("/posts").body(()).expect("req"))
            .await
            .expect("invalidate")
    );
    get_ok(&site, "/posts").await;
    assert_eq!(c.get(), 6);
    // delete by key.
    let key = l2
        .cache_key(&get("/posts").body(()).expect("req"))
        .expect("key");
    assert!(be.delete(&key).await.expect("delete"));
    // clear_path without params: only /users itself.
    let n = l2.clear_path("/users", false).await.expect("clear_path");
    get_ok(&site, "/users?page=2").await;
    assert_eq!(c.get(), 6, "query variant removed without include_params");
    get_ok(&site, "/users").await;
    assert_eq!(c.get(), 7);
    if exact {
        assert_eq!(n, 1);
        assert_eq!(l2.clear_path("/users", true).await.expect("clear_path"), 2);
    } else {
        l2.clear_path("/users", true).await.expect("clear_path");
    }
    get_ok(&site, "/users?page=2").await;
    assert_eq!(c.get(), 8);
    match l2.clear_pattern("/users/*").await {
        Ok(n) => {
            assert_eq!(n, 2);
            get_ok(&site, "/users/1").await;
            assert_eq!(c.get(), 9);
        }
        Err(e) => assert!(be.listing().is_none(), "{e}"),
    }
    let n = l2.clear().await.expect("clear");
    if exact {
        // Left: /users?page=2 and /users/1, both fetched again above.
        assert_eq!(n, 2);
    }
    let before = c.get();
    get_ok(&site, "/users/2").await;
    assert_eq!(c.get(), before + 1);
}

pub async fn extractor_and_late_backend(be: B) {
    use axum_cachex::BackendProxy;
    // A layer built before its backend was chosen uses the one set later.
    let proxy = BackendProxy::new(Arc::new(axum_cachex::backend::MemoryBackend::new()));
    let layer = CacheLayer::builder()
        .backend_proxy(proxy.clone())
        .ttl(secs(60))
        .build()
        .expect("layer");
    proxy.set_backend(Arc::clone(&be));
    let c = Counter::default();
    let cc = c.clone();
    let app = Router::new()
        .route(
            "/r",
            route_get(move || {
                let cc = cc.clone();
                async move { text(cc.hit()) }
            }),
        )
        .route(
            "/purge",
            axum::routing::post(|cache: CacheBackend| async move {
                let req = Request::get("/r")
                    .header("host", "example.com")
                    .body(())
                    .expect("req");
                format!(
                    "{} {}",
                    cache.name(),
                    cache.invalidate(&req).await.expect("invalidate")
                )
            }),
        )
        .layer(layer);
    get_ok(&app, "/r").await;
    let key = "http:GET|||example.com|||/r|||".to_owned();
    assert!(
        be.get(&key).await.expect("get").is_some(),
        "stored in the late backend"
    );
    let purge = send(
        &app,
        Request::post("/purge")
            .header("host", "example.com")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(purge.body, format!("{} true", be.name()));
    get_ok(&app, "/r").await;
    assert_eq!(c.get(), 2);
}

/// Tag invalidation: tags from the handler's `Cache-Tag` and from the
/// layer; `invalidate_tag` makes every response carrying one unreachable
/// (on every backend), the others stay; tags never reach the client, and a
/// handler cannot plant the stored stamp.
pub async fn tags_invalidate_every_tagged_response(be: B) {
    let c = Counter::default();
    let layer = cached(&be).tags(["site"]).build().expect("layer");
    let counter = c.clone();
    let app = Router::new()
        .route(
            "/p/{n}",
            route_get(move |axum::extract::Path(n): axum::extract::Path<String>| {
                let run = counter.hit();
                async move {
                    (
                        [
                            ("cache-tag", format!("product:{n} all-products")),
                            ("x-axum-cachex-tags", "site=forged".to_owned()),
                        ],
                        format!("product {n} run {run}"),
                    )
                }
            }),
        )
        .layer(layer.clone());
    let first = get_ok(&app, "/p/1").await;
    assert_eq!(first.header("cache-tag"), "", "tags are for the cache only");
    assert_eq!(first.header("x-axum-cachex-tags"), "");
    get_ok(&app, "/p/2").await;
    let hit = get_ok(&app, "/p/1").await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(hit.header("cache-tag"), "");
    assert_eq!(hit.header("x-axum-cachex-tags"), "");
    assert_eq!(c.get(), 2);

    layer.invalidate_tag("product:1").await.expect("invalidate");
    assert_eq!(get_ok(&app, "/p/1").await.body, "product 1 run 3");
    assert!(get_ok(&app, "/p/2").await.cache_status().contains("hit"));
    assert!(get_ok(&app, "/p/1").await.cache_status().contains("hit"));

    layer.invalidate_tag("site").await.expect("invalidate");
    assert_eq!(get_ok(&app, "/p/2").await.body, "product 2 run 4");
    assert_eq!(get_ok(&app, "/p/1").await.body, "product 1 run 5");
    layer
        .invalidate_tag("all-products")
        .await
        .expect("invalidate");
    assert_eq!(get_ok(&app, "/p/1").await.body, "product 1 run 6");

    assert!(matches!(
        layer.invalidate_tag("two words").await,
        Err(axum_cachex::backend::BackendError::InvalidInput(_))
    ));
    reset(&be).await;
}
