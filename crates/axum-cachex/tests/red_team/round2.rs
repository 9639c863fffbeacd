//! Red-team tests, round 2. Each test names the rule it breaks; every test
//! here failed against the code it was written for, unless marked `GUARD`.

use super::support::*;
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, Request, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use axum_cachex::{CacheLayer, ManualClock, Stale, backend::MemoryBackend};
use bytes::Bytes;

// ---------------------------------------------------------------------------
// Rule 2: credentials. Responses to authorized requests must not invite
// downstream shared caches to keep them.
// ---------------------------------------------------------------------------

/// Regression of the round-1 fix "private Cache-Control on credentialed
/// bypass responses": on a layer that does not store (no ttl — an
/// ETag-only layer that tells CDNs `s-maxage`), `plan` returns
/// `Uncached(fwd=miss)` before it looks at credentials, so the authorized
/// response goes out with the layer's `Cache-Control: s-maxage=60`. RFC
/// 9111 §3.5: `s-maxage` is exactly what lets a CDN store an authorized
/// response and hand it to everyone.
#[tokio::test]
async fn rule2_non_storing_layer_stamps_s_maxage_on_authorized_response() {
    let layer = CacheLayer::builder()
        .s_maxage(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route("/me", get(|| async { "account of alice" }).layer(layer));
    let mut req = get_req("/me");
    req.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer alice"),
    );
    let res = send(&app, req).await;
    let cc = res.header("cache-control").to_ascii_lowercase();
    let shareable =
        cc.contains("s-maxage") || cc.contains("must-revalidate") || cc.contains("public");
    assert!(
        !shareable || cc.contains("private") || cc.contains("no-store"),
        "authorized response sent with `Cache-Control: {cc}` (cache-status: {}): a downstream \
         shared cache may store it and serve it to other users (RFC 9111 §3.5)",
        res.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Rule: unsafe methods invalidate the target URI (RFC 9111 §4.4).
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct UserId(&'static str);

/// On a `.private_per_user` route, a successful POST deletes only the
/// poster's own partition (`u<hex>@…`): every other user's stored response
/// for the same URI stays and is served fresh. RFC 9111 §4.4: the cache
/// MUST invalidate the target URI — every response stored for it.
#[tokio::test]
async fn rule_invalidation_per_user_post_leaves_other_users_entries() {
    let version = counter();
    let v = Arc::clone(&version);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(600))
        .private_per_user(|parts: &http::request::Parts| {
            parts.extensions.get::<UserId>().map(|u| u.0.to_owned())
        })
        .backend(mem())
        .build()
        .unwrap();
    let v2 = Arc::clone(&version);
    let app = Router::new().route(
        "/doc",
        get(move || {
            let n = v.load(Ordering::SeqCst);
            async move { format!("doc v{n}") }
        })
        .post(move || {
            v2.fetch_add(1, Ordering::SeqCst);
            async { "updated" }
        })
        .layer(layer),
    );
    let as_user = |mut req: Request<Body>, user: &'static str| {
        req.extensions_mut().insert(UserId(user));
        req
    };
    assert_eq!(
        send(&app, as_user(get_req("/doc"), "alice")).await.text(),
        "doc v0"
    );
    assert_eq!(
        send(&app, as_user(get_req("/doc"), "bob")).await.text(),
        "doc v0"
    );
    let post = Request::post("/doc")
        .header(header::HOST, "shop.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&app, as_user(post, "alice")).await.status,
        StatusCode::OK
    );
    let bob = send(&app, as_user(get_req("/doc"), "bob")).await;
    assert_eq!(
        bob.text(),
        "doc v1",
        "after a successful POST to /doc, bob's stored /doc was still served \
         (cache-status: {})",
        bob.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Rule 5: the handler's freshness shortens the layer's ttl.
// ---------------------------------------------------------------------------

/// With the default `Freshness::Layer`, the age of a response is only its
/// `Age` header: the apparent age `now − Date` (RFC 9111 §4.2.3) is
/// ignored. A response whose `Date` is an hour ago and whose `Expires` is
/// half an hour ago (freshness lifetime 30 min, current age 60 min:
/// already stale) is stored fresh for the layer's whole ttl and served as
/// a hit.
#[tokio::test]
async fn rule5_layer_mode_serves_response_already_expired_by_date_and_expires() {
    let clock = ManualClock::new();
    let handler_clock = clock.clock();
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(600))
        .clock(clock.clock())
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/quote",
        get(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let now = handler_clock.now();
            async move {
                (
                    [
                        (
                            header::DATE,
                            httpdate::fmt_http_date(now - Duration::from_secs(3600)),
                        ),
                        (
                            header::EXPIRES,
                            httpdate::fmt_http_date(now - Duration::from_secs(1800)),
                        ),
                    ],
                    format!("quote v{n}"),
                )
            }
        })
        .layer(layer),
    );
    assert_eq!(send(&app, get_req("/quote")).await.text(), "quote v1");
    clock.advance(Duration::from_secs(1));
    let second = send(&app, get_req("/quote")).await;
    assert_eq!(
        second.text(),
        "quote v2",
        "a response already expired by its own Date/Expires was served from the store \
         (cache-status: {}, age: {})",
        second.header("cache-status"),
        second.header("age")
    );
}

// ---------------------------------------------------------------------------
// Rule: only-if-cached — a miss is answered 504, never forwarded.
// ---------------------------------------------------------------------------

/// A request with `only-if-cached` that the layer bypasses (credentials)
/// is forwarded to the handler: the client asked for the handler not to be
/// contacted (RFC 9111 §5.2.1.7) and the README promises a 504 when
/// nothing stored can answer.
#[tokio::test]
async fn rule_only_if_cached_bypassed_request_runs_handler() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/report",
        get(move || {
            c.fetch_add(1, Ordering::SeqCst);
            async { "expensive report" }
        })
        .layer(layer),
    );
    let mut req = get_req("/report");
    req.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer alice"),
    );
    req.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("only-if-cached"),
    );
    let res = send(&app, req).await;
    assert_eq!(
        (res.status, calls.load(Ordering::SeqCst)),
        (StatusCode::GATEWAY_TIMEOUT, 0),
        "only-if-cached request was forwarded to the handler (cache-status: {})",
        res.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Rule 10: revalidation (RFC 9111 §4.3.4).
// ---------------------------------------------------------------------------

/// The handler answers a revalidation with 304 plus `Set-Cookie` (it
/// renews a cookie for this client). The layer freshens the stored entry
/// (dropping `Set-Cookie` from what it stores, rightly) but answers the
/// client with the stored response only: the cookie the handler set for
/// this client is lost. RFC 9111 §4.3.4: the response to the request is
/// the stored one updated with the 304's header fields.
#[tokio::test]
async fn rule10_set_cookie_of_revalidation_304_never_reaches_client() {
    let clock = ManualClock::new();
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(10))
        .clock(clock.clock())
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/page",
        get(move |headers: HeaderMap| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n > 1 && headers.get(header::IF_NONE_MATCH).is_some() {
                    let mut res = StatusCode::NOT_MODIFIED.into_response();
                    res.headers_mut()
                        .insert(header::ETAG, HeaderValue::from_static("\"v1\""));
                    res.headers_mut().insert(
                        header::SET_COOKIE,
                        HeaderValue::from_static("consent=renewed; Path=/"),
                    );
                    return res;
                }
                ([(header::ETAG, "\"v1\"")], "page v1").into_response()
            }
        })
        .layer(layer),
    );
    assert_eq!(send(&app, get_req("/page")).await.text(), "page v1");
    clock.advance(Duration::from_secs(11));
    let res = send(&app, get_req("/page")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "not revalidated");
    assert!(
        res.header("set-cookie").contains("consent=renewed"),
        "the 304's Set-Cookie was dropped from the response to the client \
         (cache-status: {})",
        res.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Rule 3: the key is what the handler answers for.
// ---------------------------------------------------------------------------

/// Regression of the round-1 `OriginalUri` fix. A middleware added with
/// `Router::layer` runs after axum recorded `OriginalUri` and before the
/// route's cache layer; here it moves the API version from a header into
/// the query (`?v=2`), which is what the handler reads. The layer keys on
/// `OriginalUri` (no query) instead of the URI the handler is given, so
/// both versions share one key and the v2 client is served the v1 body.
#[tokio::test]
async fn rule3_key_ignores_uri_rewritten_by_middleware_inside_router() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    async fn version_to_query(mut req: Request<Body>) -> Request<Body> {
        let v = req
            .headers()
            .get("api-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("1")
            .to_owned();
        let path = req.uri().path().to_owned();
        *req.uri_mut() = format!("{path}?v={v}").parse().unwrap();
        req
    }
    let app = Router::new()
        .route(
            "/items",
            get(|uri: axum::http::Uri| async move {
                format!("items as of {}", uri.query().unwrap_or(""))
            })
            .layer(layer),
        )
        .layer(axum::middleware::map_request(version_to_query));
    assert_eq!(
        send(&app, get_req("/items")).await.text(),
        "items as of v=1"
    );
    let mut req = get_req("/items");
    req.headers_mut()
        .insert("api-version", HeaderValue::from_static("2"));
    let v2 = send(&app, req).await;
    assert_eq!(
        v2.text(),
        "items as of v=2",
        "request rewritten to /items?v=2 was served the entry of /items?v=1 \
         (cache-status: {})",
        v2.header("cache-status")
    );
}

/// The handler answers a revalidation with `304` and
/// `Cache-Control: private` (the resource became per-user). The merged
/// response is not storable, so `freshen` answers with the *old* stored
/// entry and its old headers: the client gets no `private`, and the
/// layer's shareable `max-age` goes out instead. RFC 9111 §4.3.4: the
/// answer is the stored response updated with the 304's fields.
#[tokio::test]
async fn rule1_private_of_revalidation_304_not_passed_to_client() {
    let clock = ManualClock::new();
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(10))
        .clock(clock.clock())
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/page",
        get(move |headers: HeaderMap| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n > 1 && headers.get(header::IF_NONE_MATCH).is_some() {
                    let mut res = StatusCode::NOT_MODIFIED.into_response();
                    res.headers_mut()
                        .insert(header::ETAG, HeaderValue::from_static("\"v1\""));
                    res.headers_mut().insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("private, max-age=10"),
                    );
                    return res;
                }
                ([(header::ETAG, "\"v1\"")], "page v1").into_response()
            }
        })
        .layer(layer),
    );
    assert_eq!(send(&app, get_req("/page")).await.text(), "page v1");
    clock.advance(Duration::from_secs(11));
    let res = send(&app, get_req("/page")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "not revalidated");
    let cc = res.header("cache-control");
    assert!(
        cc.contains("private"),
        "the handler's 304 said `private`, the client got `Cache-Control: {cc}` \
         (cache-status: {})",
        res.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Rule 11: Age kept (RFC 9111 §4.2.3, §1.2.2).
// ---------------------------------------------------------------------------

/// An upstream `Age` too large for a u64 fails `parse::<u64>()` and is
/// read as 0: the (ancient) response is stored as brand new and served
/// fresh for the whole ttl. RFC 9111 §1.2.2: a delta-seconds value that
/// overflows MUST be taken as 2^31 — far past any freshness lifetime.
#[tokio::test]
async fn rule11_overflowing_age_read_as_zero_serves_ancient_response_fresh() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/relay",
        get(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                (
                    [(header::AGE, "99999999999999999999999")],
                    format!("relayed v{n}"),
                )
            }
        })
        .layer(layer),
    );
    assert_eq!(send(&app, get_req("/relay")).await.text(), "relayed v1");
    let second = send(&app, get_req("/relay")).await;
    assert_eq!(
        second.text(),
        "relayed v2",
        "a response with an overflowing Age was served as fresh (cache-status: {}, age: {})",
        second.header("cache-status"),
        second.header("age")
    );
}

// ---------------------------------------------------------------------------
// Cache-Status (RFC 9211).
// ---------------------------------------------------------------------------

/// RFC 9211 §2.2: `fwd` says the request went forward to the origin. An
/// `only-if-cached` miss is answered 504 without asking the handler, yet
/// its `Cache-Status` says `fwd=miss`.
#[tokio::test]
async fn rule9211_only_if_cached_504_claims_it_was_forwarded() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/x",
        get(move || {
            c.fetch_add(1, Ordering::SeqCst);
            async { "x" }
        })
        .layer(layer),
    );
    let mut req = get_req("/x");
    req.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("only-if-cached"),
    );
    let res = send(&app, req).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let cs = res.header("cache-status");
    assert!(
        !cs.contains("fwd="),
        "504 answered without forwarding, but `Cache-Status: {cs}`"
    );
}

/// RFC 9211 §2.3: without `fwd-status`, the forwarded request's status is
/// taken to be the response's. The handler answered 200 and the layer
/// turned it into a 304 for the client's `If-None-Match`, but
/// `Cache-Status` has `fwd=miss` and no `fwd-status=200`: it says the
/// handler answered 304.
#[tokio::test]
async fn rule9211_304_made_from_handler_200_lacks_fwd_status() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/x",
        get(|| async { ([(header::ETAG, "\"x1\"")], "x") }).layer(layer),
    );
    let mut req = get_req("/x");
    req.headers_mut()
        .insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x1\""));
    let res = send(&app, req).await;
    assert_eq!(res.status, StatusCode::NOT_MODIFIED);
    let cs = res.header("cache-status");
    assert!(
        !cs.contains("fwd=") || cs.contains("fwd-status=200"),
        "handler answered 200, client got 304, `Cache-Status: {cs}`"
    );
}

// ---------------------------------------------------------------------------
// Streaming: only complete responses are stored (RFC 9111 §3.3).
// ---------------------------------------------------------------------------

/// Waits (bounded) until the backend holds at least one key.
async fn wait_for_store(backend: &MemoryBackend) {
    use axum_cachex::backend::Listing;
    tokio::time::timeout(HANG, async {
        while backend.keys("").await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("nothing was stored");
}

/// A streamed body (unknown length to the layer) that ends cleanly after
/// 5 of the 10 bytes its `Content-Length` announces is an incomplete
/// response. The tee stores it as complete, drops the announced length,
/// and every later client gets the 5 bytes as a full 200 with a derived
/// `Content-Length: 5`. RFC 9111 §3.3: an incomplete response must not be
/// used to answer requests as if complete.
#[tokio::test]
async fn rule_streamed_body_shorter_than_content_length_stored_as_complete() {
    let backend = mem();
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(Arc::clone(&backend) as Arc<dyn axum_cachex::backend::Backend>)
        .build()
        .unwrap();
    let layer_for_control = layer.clone();
    let app = Router::new().route(
        "/file",
        get(|| async {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(b"01234"))];
            let mut res = Body::from_stream(futures_stream(chunks)).into_response();
            res.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
            res
        })
        .layer(layer),
    );
    let first = send(&app, get_req("/file")).await;
    assert_eq!(first.text(), "01234");
    // A complete stream on the same layer, requested after the cut one:
    // once it is stored, the cut one's background store has had its turn.
    let control = Router::new()
        .route(
            "/ok",
            get(|| async {
                let chunks: Vec<Result<Bytes, std::io::Error>> =
                    vec![Ok(Bytes::from_static(b"complete"))];
                Body::from_stream(futures_stream(chunks)).into_response()
            }),
        )
        .layer(layer_for_control);
    assert_eq!(send(&control, get_req("/ok")).await.text(), "complete");
    wait_for_store(&backend).await;
    let second = send(&app, get_req("/file")).await;
    assert!(
        !second.header("cache-status").contains("hit"),
        "a body cut short of its Content-Length (10) was stored and served as a complete \
         response: {:?} with content-length {} (cache-status: {})",
        second.text(),
        second.header("content-length"),
        second.header("cache-status")
    );
}

/// A minimal `Stream` over a vector (no futures-util dev-dependency).
fn futures_stream(
    items: Vec<Result<Bytes, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    struct Iter(std::collections::VecDeque<Result<Bytes, std::io::Error>>);
    impl futures_core::Stream for Iter {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.pop_front())
        }
    }
    Iter(items.into_iter().collect())
}

// ---------------------------------------------------------------------------
// Request no-store → not stored (RFC 9111 §5.2.1.5).
// ---------------------------------------------------------------------------

/// A stale-while-revalidate hit for a request with
/// `Cache-Control: no-store` spawns a background refresh that sends the
/// client's request again (its `Cache-Control: no-store` included) and
/// stores the response with `write: true`: the response to a no-store
/// request ends up in the store. RFC 9111 §5.2.1.5: the cache MUST NOT
/// store any response to it.
#[tokio::test]
async fn rule_request_no_store_swr_refresh_stores_response() {
    use axum_cachex::backend::Backend;
    let clock = ManualClock::new();
    let calls = counter();
    let c = Arc::clone(&calls);
    let backend = mem();
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(10))
        .stale_ttl(Duration::from_secs(60))
        .stale(Stale::Revalidate)
        .clock(clock.clock())
        .backend(Arc::clone(&backend) as Arc<dyn Backend>)
        .build()
        .unwrap();
    let app = Router::new().route(
        "/news",
        get(move |headers: HeaderMap| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let cc = headers
                .get(header::CACHE_CONTROL)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            async move { format!("news v{n} (request cache-control: {cc:?})") }
        })
        .layer(layer),
    );
    assert!(
        send(&app, get_req("/news"))
            .await
            .text()
            .starts_with("news v1")
    );
    clock.advance(Duration::from_secs(11));
    let mut req = get_req("/news");
    req.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let stale = send(&app, req).await;
    assert!(stale.text().starts_with("news v1"), "{}", stale.text());
    // Give the background refresh (if any) time to run and store.
    let key = "http:GET|||shop.example|||/news|||";
    let mut stored = String::new();
    for _ in 0..200 {
        if let Some(bytes) = backend.get(key).await.unwrap() {
            if let Ok(axum_cachex::CacheRecord::Response(entry)) =
                axum_cachex::CacheRecord::decode(bytes)
            {
                stored = String::from_utf8_lossy(&entry.body).into_owned();
                if stored.starts_with("news v2") {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !stored.starts_with("news v2"),
        "the response to a `Cache-Control: no-store` request was stored: {stored:?}"
    );
}
