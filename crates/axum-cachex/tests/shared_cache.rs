//! The layer as a shared cache (RFC 9111 §3–§4): every test is named after
//! the rule it checks, and each failed before the layer followed it.
#![allow(missing_docs)]

mod common;

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Body, extract::Request, response::Response};
use axum_cachex::{
    CacheLayer, CacheLayerBuilder, CacheRecord, Credentialed, Freshness, ManualClock, Stale,
    backend::{Backend, Listing, MemoryBackend},
};
use bytes::Bytes;
use common::http::{Counter, Reply, send};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// One app under test: a router whose every path and method runs `handler`
/// behind the layer, with its own backend and clock.
struct App {
    router: Router,
    calls: Counter,
    backend: Arc<MemoryBackend>,
    clock: ManualClock,
    layer: CacheLayer,
    /// The request heads the handler saw.
    seen: Arc<Mutex<Vec<http::request::Parts>>>,
}

fn app<F, Fut>(builder: CacheLayerBuilder, handler: F) -> App
where
    F: Fn(usize, &http::request::Parts) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let backend = Arc::new(MemoryBackend::new());
    let clock = ManualClock::new();
    let layer = builder
        .backend(backend.clone())
        .clock(clock.clock())
        .build()
        .expect("valid layer");
    let calls = Counter::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c, s) = (calls.clone(), seen.clone());
    let router = Router::new()
        .fallback(move |req: Request| {
            let (c, s, handler) = (c.clone(), s.clone(), handler.clone());
            async move {
                let (parts, _) = req.into_parts();
                let n = c.hit();
                let fut = handler(n, &parts);
                s.lock().expect("lock").push(parts);
                fut.await
            }
        })
        .layer(layer.clone());
    App {
        router,
        calls,
        backend,
        clock,
        layer,
        seen,
    }
}

fn ttl60() -> CacheLayerBuilder {
    CacheLayer::builder().ttl(secs(60))
}

/// A response: `#n` as body, plus headers.
fn reply(n: usize, headers: &[(&'static str, &'static str)]) -> Response {
    let mut res = Response::new(Body::from(format!("#{n}")));
    for (k, v) in headers {
        res.headers_mut().append(*k, HeaderValue::from_static(v));
    }
    res
}

fn plain(n: usize) -> std::future::Ready<Response> {
    std::future::ready(reply(n, &[]))
}

async fn get(app: &App, uri: &str, headers: &[(&str, &str)]) -> Reply {
    request(app, Method::GET, uri, headers).await
}

async fn request(app: &App, method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http::Request::builder().method(method).uri(uri);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", "example.com");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&app.router, req.body(Body::empty()).expect("request")).await
}

// 1. `private` is never shared.

#[tokio::test]
async fn private_route_is_never_stored_in_the_shared_backend() {
    let app = app(ttl60().private(), |n, _| plain(n));
    let first = get(&app, "/p", &[]).await;
    assert_eq!(first.header("cache-control"), "private, max-age=60");
    assert_eq!(get(&app, "/p", &[]).await.body, "#2");
    assert!(app.backend.keys("").await.expect("keys").is_empty());
    // ETag and 304 still work.
    let etag = first.header("etag").to_owned();
    assert!(!etag.is_empty());
    let again = get(&app, "/p", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::OK, "bodies differ: #1 vs #3");
}

#[tokio::test]
async fn handler_private_response_is_never_stored() {
    for cc in [
        "private",
        "PRIVATE",
        "max-age=60, private=\"set-cookie\"",
        "public,private",
    ] {
        let app = app(ttl60(), move |n, _| {
            std::future::ready(reply(n, &[("cache-control", cc)]))
        });
        get(&app, "/p", &[]).await;
        assert_eq!(get(&app, "/p", &[]).await.body, "#2", "{cc}");
    }
}

#[tokio::test]
async fn quoted_private_inside_no_cache_is_not_private() {
    // RFC 9110 §5.6: a comma in a quoted string does not split the list.
    let app = app(ttl60(), |n, _| {
        std::future::ready(reply(
            n,
            &[("cache-control", "max-age=60, community=\"a, private\"")],
        ))
    });
    get(&app, "/p", &[]).await;
    assert_eq!(get(&app, "/p", &[]).await.body, "#1");
}

#[derive(Clone)]
struct UserId(&'static str);

#[tokio::test]
async fn private_per_user_keeps_users_apart() {
    let app = app(
        ttl60().private_per_user(|p: &http::request::Parts| {
            p.extensions.get::<UserId>().map(|u| u.0.to_owned())
        }),
        |n, _| plain(n),
    );
    let as_user = |user: &'static str| {
        let mut req = http::Request::get("/me")
            .header("host", "example.com")
            .header("authorization", "Bearer t")
            .body(Body::empty())
            .expect("request");
        req.extensions_mut().insert(UserId(user));
        send(&app.router, req)
    };
    assert_eq!(as_user("alice").await.body, "#1");
    assert_eq!(as_user("bob").await.body, "#2");
    assert_eq!(as_user("alice").await.body, "#1");
    assert_eq!(as_user("bob").await.body, "#2");
    // No user: not cached.
    assert_eq!(get(&app, "/me", &[]).await.body, "#3");
    assert_eq!(get(&app, "/me", &[]).await.body, "#4");
}

// 2. Credentials.

#[tokio::test]
async fn every_credential_bypasses_the_cache() {
    let builder = ttl60()
        .credential_header(HeaderName::from_static("x-api-key"))
        .credential_cookie("sid");
    let app = app(builder, |n, _| plain(n));
    assert_eq!(get(&app, "/r", &[]).await.body, "#1");
    let credentials: [(&str, &str); 6] = [
        ("authorization", "Bearer a"),
        ("x-session-token", "t"),
        ("cookie", "theme=dark; session=abc"),
        ("x-api-key", "k"),
        ("cookie", "sid=1"),
        ("proxy-authorization", "Basic x"),
    ];
    for (i, cred) in credentials.iter().enumerate() {
        let r = get(&app, "/r", &[*cred]).await;
        assert_eq!(
            r.body,
            format!("#{}", i + 2),
            "{cred:?} was served from the cache"
        );
        assert!(r.cache_status().contains("fwd=bypass"), "{cred:?}");
    }
    // None of them replaced the anonymous entry.
    assert_eq!(get(&app, "/r", &[]).await.body, "#1");
    // A cookie that is not a credential does not bypass.
    assert_eq!(
        get(&app, "/r", &[("cookie", "theme=dark")]).await.body,
        "#1"
    );
}

#[tokio::test]
async fn credentialed_extension_bypasses_the_cache() {
    let app = app(ttl60(), |n, _| plain(n));
    get(&app, "/r", &[]).await;
    let mut req = http::Request::get("/r")
        .header("host", "example.com")
        .body(Body::empty())
        .expect("request");
    req.extensions_mut().insert(Credentialed);
    assert_eq!(send(&app.router, req).await.body, "#2");
}

#[tokio::test]
async fn must_revalidate_or_s_maxage_do_not_share_authorized_responses() {
    for builder in [ttl60().must_revalidate(), ttl60().s_maxage(secs(60))] {
        let app = app(builder, |n, _| plain(n));
        get(&app, "/r", &[("authorization", "Bearer a")]).await;
        assert_eq!(get(&app, "/r", &[]).await.body, "#2");
        assert_eq!(
            get(&app, "/r", &[("authorization", "Bearer b")]).await.body,
            "#3"
        );
    }
    // `public` is the explicit opt-in.
    let app = app(ttl60().public(), |n, _| plain(n));
    get(&app, "/r", &[("authorization", "Bearer a")]).await;
    assert_eq!(
        get(&app, "/r", &[("authorization", "Bearer b")]).await.body,
        "#1"
    );
}

#[tokio::test]
async fn response_carrying_a_token_or_sensitive_header_is_never_stored() {
    let token = app(ttl60(), |n, _| {
        std::future::ready(reply(n, &[("x-session-token", "secret")]))
    });
    get(&token, "/r", &[]).await;
    assert_eq!(get(&token, "/r", &[]).await.body, "#2");
    let sensitive = app(ttl60(), |n, _| {
        let mut res = reply(n, &[]);
        let mut v = HeaderValue::from_static("s3cret");
        v.set_sensitive(true);
        res.headers_mut().insert("x-secret", v);
        std::future::ready(res)
    });
    get(&sensitive, "/r", &[]).await;
    assert_eq!(get(&sensitive, "/r", &[]).await.body, "#2");
}

#[tokio::test]
async fn response_marked_credentialed_by_an_inner_layer_is_not_stored() {
    let app = app(ttl60(), |n, _| {
        let mut res = reply(n, &[]);
        res.extensions_mut().insert(Credentialed);
        std::future::ready(res)
    });
    get(&app, "/r", &[]).await;
    assert_eq!(get(&app, "/r", &[]).await.body, "#2");
}

// 3. The key is injective.

#[tokio::test]
async fn crafted_host_cannot_poison_another_url() {
    let app = app(ttl60(), |n, p| {
        let body = format!("#{n} for {}", p.uri);
        std::future::ready(Response::new(Body::from(body)))
    });
    // `h|||/victim|||` as Host used to produce the key of `/victim` on `h`.
    let attack = get(&app, "/x", &[("host", "h|||/victim|||")]).await;
    assert!(attack.cache_status().contains("detail=invalid-host"));
    let victim = get(&app, "/victim", &[("host", "h")]).await;
    assert!(victim.body.ends_with(b"for /victim"));
    assert!(victim.cache_status().contains("fwd=miss"));
    // Paths and queries with `|` stay apart too.
    let a = get(&app, "/a%7C?x=1", &[]).await;
    let b = get(&app, "/a|?x=1", &[]).await;
    assert_ne!(a.body, b.body);
}

#[tokio::test]
async fn host_is_validated_and_lowercased() {
    let app = app(ttl60(), |n, _| plain(n));
    get(&app, "/r", &[("host", "Example.COM")]).await;
    assert_eq!(get(&app, "/r", &[("host", "example.com")]).await.body, "#1");
    for bad in [
        "exa mple.com",
        "user@example.com",
        "example.com:99999",
        "[::1",
    ] {
        let r = get(&app, "/r", &[("host", bad)]).await;
        assert!(r.cache_status().contains("detail=invalid-host"), "{bad}");
    }
    // Invalidation uses the same normalisation.
    let post = request(&app, Method::POST, "/r", &[("host", "EXAMPLE.com")]).await;
    assert_eq!(post.cache_status(), "axum-cachex; fwd=method");
    assert!(
        get(&app, "/r", &[])
            .await
            .cache_status()
            .contains("fwd=miss")
    );
}

// 4. Vary compares values as RFC 9111 §4.1 says.

#[tokio::test]
async fn vary_values_that_differ_in_case_are_different_variants() {
    let app = app(ttl60(), |n, p| {
        let cookie = p
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let mut res = reply(n, &[("vary", "X-User")]);
        *res.body_mut() = Body::from(format!("#{n} {cookie}"));
        std::future::ready(res)
    });
    assert_eq!(
        get(&app, "/v", &[("x-user", "Alice")]).await.body,
        "#1 Alice"
    );
    assert_eq!(
        get(&app, "/v", &[("x-user", "alice")]).await.body,
        "#2 alice"
    );
    assert_eq!(
        get(&app, "/v", &[("x-user", " Alice\t")]).await.body,
        "#1 Alice"
    );
    let miss = get(&app, "/v", &[("x-user", "bob")]).await;
    assert!(
        miss.cache_status().contains("fwd=vary-miss"),
        "{}",
        miss.cache_status()
    );
}

// 5. The handler's directives count.

#[tokio::test]
async fn response_no_cache_is_revalidated_before_every_reuse() {
    let app = app(ttl60(), |n, p| {
        let matches = p
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"");
        let res = if matches {
            let mut r = reply(n, &[("etag", "\"v1\"")]);
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            *r.body_mut() = Body::empty();
            r
        } else {
            reply(n, &[("cache-control", "no-cache"), ("etag", "\"v1\"")])
        };
        std::future::ready(res)
    });
    assert_eq!(get(&app, "/r", &[]).await.body, "#1");
    let second = get(&app, "/r", &[]).await;
    assert_eq!(second.body, "#1", "the stored body after a 304");
    assert_eq!(app.calls.get(), 2, "the handler was asked");
    assert!(
        second.cache_status().contains("fwd-status=304"),
        "{}",
        second.cache_status()
    );
    let seen = app.seen.lock().expect("lock");
    assert_eq!(seen[1].headers["if-none-match"], "\"v1\"");
}

#[tokio::test]
async fn response_lifetime_shorter_than_ttl_shortens_freshness() {
    for own in ["max-age=5", "s-maxage=5, max-age=100"] {
        let app = app(ttl60(), move |n, _| {
            std::future::ready(reply(n, &[("cache-control", own)]))
        });
        get(&app, "/r", &[]).await;
        app.clock.advance(secs(4));
        assert_eq!(get(&app, "/r", &[]).await.body, "#1", "{own}");
        app.clock.advance(secs(2));
        assert_eq!(get(&app, "/r", &[]).await.body, "#2", "{own}");
    }
    let expires = app(ttl60(), |n, _| {
        let now = std::time::SystemTime::now();
        let date = httpdate::fmt_http_date(now);
        let expires = httpdate::fmt_http_date(now + secs(5));
        let mut res = reply(n, &[]);
        res.headers_mut()
            .insert("date", date.parse().expect("date"));
        res.headers_mut()
            .insert("expires", expires.parse().expect("date"));
        std::future::ready(res)
    });
    get(&expires, "/r", &[]).await;
    expires.clock.advance(secs(6));
    assert_eq!(get(&expires, "/r", &[]).await.body, "#2");
}

#[tokio::test]
async fn must_revalidate_response_is_never_served_stale() {
    for directive in [
        "max-age=10, must-revalidate",
        "max-age=10, proxy-revalidate",
    ] {
        let builder = CacheLayer::builder()
            .ttl(secs(10))
            .stale_ttl(secs(60))
            .stale(Stale::Both);
        let app = app(builder, move |n, _| {
            let mut res = reply(n, &[("cache-control", directive)]);
            if n > 1 {
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            std::future::ready(res)
        });
        get(&app, "/r", &[]).await;
        app.clock.advance(secs(11));
        let r = get(&app, "/r", &[]).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{directive}");
        assert_eq!(r.body, "#2", "{directive}");
    }
}

#[tokio::test]
async fn request_no_store_is_not_stored() {
    let app = app(ttl60(), |n, _| plain(n));
    get(&app, "/r", &[("cache-control", "max-age=0, no-store")]).await;
    assert_eq!(get(&app, "/r", &[]).await.body, "#2");
    // It is still answered from the store.
    assert_eq!(
        get(&app, "/r", &[("cache-control", "no-store")]).await.body,
        "#2"
    );
}

#[tokio::test]
async fn directives_survive_several_lines_and_non_utf8_bytes() {
    let app = app(ttl60(), |n, _| {
        let mut res = reply(n, &[("cache-control", "max-age=60")]);
        let odd = HeaderValue::from_bytes(b"x=\"\xff\", no-store").expect("obs-text is valid");
        res.headers_mut().append("cache-control", odd);
        std::future::ready(res)
    });
    get(&app, "/r", &[]).await;
    assert_eq!(get(&app, "/r", &[]).await.body, "#2");
}

#[tokio::test]
async fn only_if_cached_miss_is_answered_504() {
    let app = app(ttl60(), |n, _| plain(n));
    let miss = get(&app, "/r", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(miss.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(app.calls.get(), 0);
    get(&app, "/r", &[]).await;
    let hit = get(&app, "/r", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(
        (hit.status, hit.body.as_ref()),
        (StatusCode::OK, &b"#1"[..])
    );
}

#[tokio::test]
async fn client_no_cache_and_pragma_do_not_empty_the_shared_cache() {
    let app = app(ttl60(), |n, _| plain(n));
    get(&app, "/r", &[]).await;
    for header in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("pragma", "no-cache"),
    ] {
        assert_eq!(get(&app, "/r", &[header]).await.body, "#1", "{header:?}");
    }
}

// 6. Preconditions and partial content.

#[tokio::test]
async fn origin_preconditions_go_to_the_handler() {
    let app = app(ttl60(), |n, p| {
        let mut res = reply(n, &[("etag", "\"v1\"")]);
        if p.headers.get("if-match").is_some_and(|v| v != "\"v1\"") {
            *res.status_mut() = StatusCode::PRECONDITION_FAILED;
        }
        std::future::ready(res)
    });
    get(&app, "/r", &[]).await;
    let r = get(&app, "/r", &[("if-match", "\"other\"")]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn conditional_requests_never_turn_a_non_2xx_into_304() {
    for status in [StatusCode::MOVED_PERMANENTLY, StatusCode::NOT_FOUND] {
        let builder = ttl60().cacheable_statuses([StatusCode::OK, status]);
        let app = app(builder, move |n, _| {
            let mut res = reply(
                n,
                &[
                    ("location", "/x"),
                    ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ],
            );
            *res.status_mut() = status;
            std::future::ready(res)
        });
        let first = get(&app, "/r", &[]).await;
        let etag = first.header("etag").to_owned();
        for cond in [
            ("if-none-match", etag.as_str()),
            ("if-none-match", "*"),
            ("if-modified-since", "Thu, 22 Oct 2015 07:28:00 GMT"),
        ] {
            let r = get(&app, "/r", &[cond]).await;
            assert_eq!(r.status, status, "{cond:?}");
        }
    }
}

#[tokio::test]
async fn partial_content_is_never_stored_or_served() {
    let app = app(ttl60(), |n, p| {
        let mut res = reply(n, &[("content-range", "bytes 0-1/10")]);
        if p.headers.contains_key("range") {
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        std::future::ready(res)
    });
    // The layer strips `Range` on its way to the handler: a full response.
    let r = get(&app, "/r", &[("range", "bytes=0-1")]).await;
    assert_eq!(r.status, StatusCode::OK);
    // A 206 planted in the store is refused.
    let req = http::Request::get("/p")
        .header("host", "example.com")
        .body(())
        .expect("req");
    let key = app.layer.cache_key(&req).expect("key");
    let mut entry = stored_entry(StatusCode::PARTIAL_CONTENT);
    entry.body = Bytes::from_static(b"PART");
    plant(&app, &key, entry).await;
    let r = get(&app, "/p", &[]).await;
    assert_ne!(r.body, "PART");
    let builder = CacheLayer::builder()
        .ttl(secs(1))
        .cacheable_statuses([StatusCode::PARTIAL_CONTENT])
        .build();
    assert!(builder.is_err());
}

#[tokio::test]
async fn head_miss_carries_the_etag_a_get_would() {
    let app = app(ttl60(), |n, _| plain(n));
    let head = request(&app, Method::HEAD, "/r", &[]).await;
    assert!(head.body.is_empty());
    let get_reply = get(&app, "/r", &[]).await;
    assert!(!head.header("etag").is_empty());
    assert_eq!(head.header("etag"), get_reply.header("etag"));
    assert_eq!(head.header("content-length"), "2");
    assert_eq!(app.calls.get(), 1, "HEAD stored the GET response");
    let seen = app.seen.lock().expect("lock");
    assert_eq!(seen[0].method, Method::GET);
}

// 7. Stored entries are untrusted on read.

fn stored_entry(status: StatusCode) -> axum_cachex::CacheEntry {
    axum_cachex::CacheEntry {
        status,
        headers: HeaderMap::new(),
        body: Bytes::from_static(b"planted"),
        etag: HeaderValue::from_static("W/\"p\""),
        stored_at: ManualClock::new().clock().now(),
        fresh_for: secs(60),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        vary_key: Bytes::new(),
    }
}

async fn plant(app: &App, key: &str, entry: axum_cachex::CacheEntry) {
    app.backend
        .set(key, CacheRecord::Response(entry).encode(), Some(secs(60)))
        .await
        .expect("set");
}

fn key_of(app: &App, uri: &str) -> String {
    let req = http::Request::get(uri)
        .header("host", "example.com")
        .body(())
        .expect("req");
    app.layer.cache_key(&req).expect("key")
}

#[tokio::test]
async fn planted_entry_cannot_set_cookies_credentials_or_framing() {
    let app = app(ttl60(), |n, _| plain(n));
    let mut entry = stored_entry(StatusCode::OK);
    for (k, v) in [
        ("set-cookie", "session=attacker"),
        ("x-session-token", "attacker"),
        ("authorization", "Bearer x"),
        ("content-length", "1000"),
        ("transfer-encoding", "chunked"),
        ("connection", "close"),
        ("x-fine", "kept"),
    ] {
        entry.headers.append(k, HeaderValue::from_static(v));
    }
    plant(&app, &key_of(&app, "/r"), entry).await;
    let r = get(&app, "/r", &[]).await;
    assert_eq!(r.body, "planted");
    for name in [
        "set-cookie",
        "x-session-token",
        "authorization",
        "transfer-encoding",
        "connection",
    ] {
        assert!(
            !r.headers.contains_key(name),
            "{name} served from a planted entry"
        );
    }
    assert_eq!(r.header("content-length"), "7");
    assert_eq!(r.header("x-fine"), "kept");
}

#[tokio::test]
async fn planted_entry_cannot_serve_informational_or_odd_statuses() {
    for code in [101u16, 103, 304, 206, 999] {
        let app = app(ttl60(), |n, _| plain(n));
        let status = StatusCode::from_u16(code).expect("status");
        plant(&app, &key_of(&app, "/r"), stored_entry(status)).await;
        let r = get(&app, "/r", &[]).await;
        assert_eq!(
            (r.status, r.body.as_ref()),
            (StatusCode::OK, &b"#1"[..]),
            "{code}"
        );
    }
}

// 8. Vary cannot amplify work.

#[tokio::test]
async fn each_variant_is_stored_on_its_own() {
    let app = app(ttl60(), |n, _| {
        let mut res = reply(n, &[("vary", "x-v")]);
        *res.body_mut() = Body::from(vec![b'x'; 10_000]);
        std::future::ready(res)
    });
    for i in 0..40 {
        get(&app, "/v", &[("x-v", &i.to_string())]).await;
    }
    // Every stored value holds one response at most: a miss never
    // rewrites the other variants.
    for stored in app.backend.entries("").await.expect("entries") {
        assert!(
            stored.value.len() < 11_000,
            "{} bytes under {}",
            stored.value.len(),
            stored.key
        );
    }
    // All forty variants are still served.
    for i in 0..40 {
        let r = get(&app, "/v", &[("x-v", &i.to_string())]).await;
        assert!(r.cache_status().contains("hit"), "variant {i}");
    }
}

#[tokio::test]
async fn concurrent_stores_of_different_variants_keep_each_other() {
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    let g = gate.clone();
    let app = app(ttl60().coalesce(false), move |n, _| {
        let g = g.clone();
        async move {
            // Both handlers run before either stores.
            g.wait().await;
            reply(n, &[("vary", "accept-language")])
        }
    });
    let (a, b) = tokio::join!(
        get(&app, "/v", &[("accept-language", "fr")]),
        get(&app, "/v", &[("accept-language", "de")])
    );
    assert!(a.cache_status().contains("stored") && b.cache_status().contains("stored"));
    let fr = get(&app, "/v", &[("accept-language", "fr")]).await;
    let de = get(&app, "/v", &[("accept-language", "de")]).await;
    assert!(
        fr.cache_status().contains("hit"),
        "fr lost: {}",
        fr.cache_status()
    );
    assert!(
        de.cache_status().contains("hit"),
        "de lost: {}",
        de.cache_status()
    );
    assert_eq!((fr.body, de.body), (a.body, b.body));
}

#[tokio::test]
async fn invalidation_reaches_every_variant() {
    let app = app(ttl60(), |n, _| {
        std::future::ready(reply(n, &[("vary", "x-v")]))
    });
    get(&app, "/v", &[("x-v", "1")]).await;
    get(&app, "/v", &[("x-v", "2")]).await;
    request(&app, Method::DELETE, "/v", &[]).await;
    get(&app, "/v", &[("x-v", "2")]).await;
    // The old variant 1 must not come back under the new index.
    assert_eq!(get(&app, "/v", &[("x-v", "1")]).await.body, "#5");
}

// Smaller rules.

#[tokio::test]
async fn upstream_age_is_kept() {
    let app = app(ttl60(), |n, _| {
        std::future::ready(reply(n, &[("age", "50")]))
    });
    get(&app, "/r", &[]).await;
    app.clock.advance(secs(5));
    let hit = get(&app, "/r", &[]).await;
    assert_eq!(hit.header("age"), "55");
    app.clock.advance(secs(6));
    assert_eq!(get(&app, "/r", &[]).await.body, "#2", "60 s of age in all");
}

#[tokio::test]
async fn cache_status_appends_to_members_already_present() {
    let app = app(ttl60(), |n, _| {
        std::future::ready(reply(n, &[("cache-status", "origin-cache; hit")]))
    });
    let r = get(&app, "/r", &[]).await;
    assert_eq!(
        r.cache_status(),
        "origin-cache; hit, axum-cachex; fwd=miss; stored"
    );
}

#[tokio::test]
async fn fractional_ttl_never_gives_a_hit_stale_by_its_own_headers() {
    let app = app(
        CacheLayer::builder().ttl(Duration::from_millis(1500)),
        |n, _| plain(n),
    );
    let first = get(&app, "/r", &[]).await;
    assert_eq!(first.header("cache-control"), "max-age=1");
    app.clock.advance(Duration::from_millis(1200));
    let r = get(&app, "/r", &[]).await;
    let age: u64 = r.header("age").parse().unwrap_or(0);
    assert!(
        r.body == "#2" || age < 1,
        "a hit with Age {age} and max-age=1"
    );
}

#[tokio::test]
async fn response_over_the_size_limit_keeps_the_handler_cache_control() {
    let app = app(ttl60().max_body_size(10), |n, _| {
        let mut res = reply(n, &[("cache-control", "no-cache")]);
        *res.body_mut() = Body::from(vec![b'x'; 100]);
        std::future::ready(res)
    });
    let r = get(&app, "/r", &[]).await;
    assert_eq!(r.header("cache-control"), "no-cache");
    assert_eq!(r.body.len(), 100);
}

#[tokio::test]
async fn stale_if_error_waiters_share_the_leaders_stale_answer() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let builder = CacheLayer::builder()
        .ttl(secs(1))
        .stale_ttl(secs(60))
        .stale(Stale::Error);
    let app = app(builder, move |n, _| {
        let g = g.clone();
        async move {
            if n == 1 {
                return reply(n, &[]);
            }
            g.notified().await;
            let mut res = reply(n, &[]);
            *res.status_mut() = StatusCode::BAD_GATEWAY;
            res
        }
    });
    get(&app, "/r", &[]).await;
    app.clock.advance(secs(5));
    let leader = get(&app, "/r", &[]);
    let waiter = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        get(&app, "/r", &[]).await
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        gate.notify_waiters();
    };
    let (l, w, ()) = tokio::join!(leader, waiter, release);
    assert_eq!((l.body.as_ref(), w.body.as_ref()), (&b"#1"[..], &b"#1"[..]));
    assert_eq!(app.calls.get(), 2, "the waiter re-ran the failing handler");
    assert!(
        w.cache_status().contains("collapsed"),
        "{}",
        w.cache_status()
    );
}

// Freshness from the handler, and revalidation.

#[tokio::test]
async fn freshness_from_response_follows_its_headers() {
    let app = app(
        CacheLayer::builder().freshness(Freshness::FromResponse),
        |n, p| {
            let cc = match p.uri.path() {
                "/short" => "max-age=2",
                "/shared" => "max-age=100, s-maxage=3",
                _ => "no-store",
            };
            std::future::ready(reply(n, &[("cache-control", cc)]))
        },
    );
    get(&app, "/short", &[]).await;
    get(&app, "/shared", &[]).await;
    assert_eq!(get(&app, "/short", &[]).await.body, "#1");
    app.clock.advance(secs(2));
    assert_eq!(get(&app, "/short", &[]).await.body, "#3");
    assert_eq!(get(&app, "/shared", &[]).await.body, "#2");
    app.clock.advance(secs(1));
    assert_eq!(get(&app, "/shared", &[]).await.body, "#4");
    // The handler's own Cache-Control goes out as it made it.
    assert_eq!(
        get(&app, "/short", &[]).await.header("cache-control"),
        "max-age=2"
    );
    get(&app, "/none", &[]).await;
    assert_eq!(get(&app, "/none", &[]).await.body, "#6");
}

#[tokio::test]
async fn a_304_from_the_handler_freshens_the_stored_entry() {
    let app = app(
        CacheLayer::builder().freshness(Freshness::FromResponse),
        |n, p| {
            let res = if p.headers.get("if-none-match").is_some_and(|v| v == "\"a\"") {
                let mut r = reply(
                    n,
                    &[
                        ("cache-control", "max-age=10"),
                        ("x-version", "2"),
                        ("set-cookie", "evil=1"),
                    ],
                );
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                *r.body_mut() = Body::empty();
                r
            } else {
                reply(
                    n,
                    &[
                        ("cache-control", "max-age=10"),
                        ("etag", "\"a\""),
                        ("x-version", "1"),
                    ],
                )
            };
            std::future::ready(res)
        },
    );
    get(&app, "/r", &[]).await;
    app.clock.advance(secs(11));
    let revalidated = get(&app, "/r", &[]).await;
    assert_eq!(revalidated.body, "#1");
    assert_eq!(revalidated.header("x-version"), "2");
    // The 304's cookie is for the client that asked, never stored.
    assert_eq!(revalidated.header("set-cookie"), "evil=1");
    // Fresh again: served without the handler.
    app.clock.advance(secs(5));
    let hit = get(&app, "/r", &[]).await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert!(!hit.headers.contains_key("set-cookie"));
    assert_eq!(app.calls.get(), 2);
}

#[tokio::test]
async fn stale_while_revalidate_refresh_sends_a_clean_request() {
    let builder = CacheLayer::builder()
        .ttl(secs(1))
        .stale_ttl(secs(60))
        .stale(Stale::Revalidate);
    let app = app(builder, |n, _| plain(n));
    get(&app, "/r", &[]).await;
    app.clock.advance(secs(2));
    let stale = get(
        &app,
        "/r",
        &[("range", "bytes=0-0"), ("if-none-match", "\"zzz\"")],
    )
    .await;
    assert_eq!(stale.body, "#1");
    for _ in 0..100 {
        if app.calls.get() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = app.seen.lock().expect("lock");
    let refresh = seen.last().expect("a refresh ran");
    assert!(!refresh.headers.contains_key("range"));
    assert!(!refresh.headers.contains_key("if-none-match"));
}

// Streaming.

#[tokio::test]
async fn sse_under_a_router_wide_layer_delivers_its_first_event_at_once() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let app = app(ttl60(), move |_, _| {
        let rx = rx.lock().expect("lock").take();
        async move {
            let stream = ChannelStream(rx.expect("one request"));
            let mut res = Response::new(Body::from_stream(stream));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            res
        }
    });
    let req = http::Request::get("/events")
        .header("host", "example.com")
        .body(Body::empty())
        .expect("request");
    tx.send(Ok(Bytes::from_static(b"data: one\n\n")))
        .await
        .expect("send");
    let res = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .expect("response");
    let mut body = res.into_body();
    // The first event arrives while the stream is still open.
    let first = http_body_util::BodyExt::frame(&mut body)
        .await
        .expect("frame")
        .expect("ok");
    assert_eq!(first.into_data().expect("data"), "data: one\n\n");
    tx.send(Ok(Bytes::from_static(b"data: two\n\n")))
        .await
        .expect("send");
    let second = http_body_util::BodyExt::frame(&mut body)
        .await
        .expect("frame")
        .expect("ok");
    assert_eq!(second.into_data().expect("data"), "data: two\n\n");
}

#[tokio::test]
async fn storable_stream_is_sent_as_it_arrives_and_stored_at_its_end() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let app = app(ttl60(), move |n, _| {
        let rx = rx.lock().expect("lock").take();
        async move {
            match rx {
                Some(rx) => Response::new(Body::from_stream(ChannelStream(rx))),
                None => reply(n, &[]),
            }
        }
    });
    let req = http::Request::get("/s")
        .header("host", "example.com")
        .body(Body::empty())
        .expect("request");
    tx.send(Ok(Bytes::from_static(b"part1 ")))
        .await
        .expect("send");
    let res = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .expect("response");
    let mut body = res.into_body();
    let first = http_body_util::BodyExt::frame(&mut body)
        .await
        .expect("frame")
        .expect("ok");
    assert_eq!(first.into_data().expect("data"), "part1 ");
    tx.send(Ok(Bytes::from_static(b"part2")))
        .await
        .expect("send");
    drop(tx);
    let rest = http_body_util::BodyExt::collect(body)
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(rest, "part2");
    let mut hit = None;
    for _ in 0..100 {
        let r = get(&app, "/s", &[]).await;
        if r.cache_status().contains("hit") {
            hit = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let hit = hit.expect("the streamed response was stored");
    assert_eq!(hit.body, "part1 part2");
}

/// A body stream fed by a channel, as a slow handler would produce it.
struct ChannelStream(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for ChannelStream {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

// Found by the public cache-tests suite run through a small proxy harness.

#[tokio::test]
async fn a_list_valued_age_counts_its_first_member() {
    // RFC 9111 §5.1: `Age: 7200, 0` is 7200 seconds old.
    let app = app(
        CacheLayer::builder().freshness(Freshness::FromResponse),
        |n, _| {
            std::future::ready(reply(
                n,
                &[("cache-control", "max-age=3600"), ("age", "7200, 0")],
            ))
        },
    );
    get(&app, "/r", &[]).await;
    assert_eq!(get(&app, "/r", &[]).await.body, "#2");
}

#[tokio::test]
async fn must_understand_never_stores_an_unknown_status() {
    let app = app(
        CacheLayer::builder().freshness(Freshness::FromResponse),
        |n, _| {
            let mut res = reply(
                n,
                &[("cache-control", "max-age=3600, no-store, must-understand")],
            );
            *res.status_mut() = StatusCode::from_u16(599).expect("status");
            std::future::ready(res)
        },
    );
    get(&app, "/r", &[]).await;
    assert_eq!(get(&app, "/r", &[]).await.body, "#2");
    // A known status with `no-store, must-understand` is stored.
    let known = app_with_status(StatusCode::OK);
    get(&known, "/r", &[]).await;
    assert_eq!(get(&known, "/r", &[]).await.body, "#1");
}

fn app_with_status(status: StatusCode) -> App {
    app(
        CacheLayer::builder().freshness(Freshness::FromResponse),
        move |n, _| {
            let mut res = reply(
                n,
                &[("cache-control", "max-age=3600, no-store, must-understand")],
            );
            *res.status_mut() = status;
            std::future::ready(res)
        },
    )
}

#[tokio::test]
async fn heuristic_freshness_covers_heuristically_cacheable_errors() {
    let app = app(
        CacheLayer::builder().freshness(Freshness::FromResponse),
        |n, _| {
            let mut res = reply(n, &[("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT")]);
            *res.status_mut() = StatusCode::NOT_FOUND;
            std::future::ready(res)
        },
    );
    get(&app, "/gone", &[]).await;
    let r = get(&app, "/gone", &[]).await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::NOT_FOUND, &b"#1"[..])
    );
}

#[tokio::test]
async fn if_modified_since_on_a_stored_response_without_last_modified_uses_its_date() {
    let start = std::time::SystemTime::now();
    let date = httpdate::fmt_http_date(start);
    let app = app(ttl60(), move |n, _| {
        let mut res = reply(n, &[]);
        res.headers_mut()
            .insert("date", date.parse().expect("date"));
        std::future::ready(res)
    });
    get(&app, "/r", &[]).await;
    let later = httpdate::fmt_http_date(start + secs(5));
    let r = get(&app, "/r", &[("if-modified-since", &later)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    let earlier = httpdate::fmt_http_date(start - secs(5));
    let r = get(&app, "/r", &[("if-modified-since", &earlier)]).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_response_already_old_by_its_date_is_stale() {
    // RFC 9111 §4.2.3: the apparent age (now − Date) counts.
    let app = app(ttl60(), |n, _| {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now() - secs(3600));
        let mut res = reply(n, &[]);
        res.headers_mut()
            .insert("date", date.parse().expect("date"));
        std::future::ready(res)
    });
    get(&app, "/r", &[]).await;
    assert_eq!(get(&app, "/r", &[]).await.body, "#2");
}

#[tokio::test]
async fn the_layers_cache_control_is_sent_but_never_stored() {
    // Stored, it would later read as the handler's own freshness (and
    // outlive a change of the layer's configuration).
    let app = app(ttl60(), |n, _| plain(n));
    let first = get(&app, "/r", &[]).await;
    assert_eq!(first.header("cache-control"), "max-age=60");
    let hit = get(&app, "/r", &[]).await;
    assert_eq!(hit.header("cache-control"), "max-age=60");
    let stored = app
        .backend
        .get(&key_of(&app, "/r"))
        .await
        .expect("get")
        .expect("stored");
    let CacheRecord::Response(entry) = CacheRecord::decode(stored).expect("decode") else {
        panic!("a response record");
    };
    assert!(!entry.headers.contains_key("cache-control"));
}

#[tokio::test]
async fn vary_on_credentials_never_writes_them_into_the_store() {
    let app = app(ttl60().public(), |n, _| {
        std::future::ready(reply(n, &[("vary", "Authorization")]))
    });
    get(&app, "/r", &[("authorization", "Bearer very-secret-token")]).await;
    let stored = app.backend.entries("").await.expect("entries");
    assert!(!stored.is_empty());
    for value in stored {
        let raw = String::from_utf8_lossy(&value.value);
        assert!(!raw.contains("very-secret-token"), "{}", value.key);
        assert!(!value.key.contains("very-secret-token"));
    }
    // And the variant is still served to the same credentials only.
    let again = get(&app, "/r", &[("authorization", "Bearer very-secret-token")]).await;
    assert!(again.cache_status().contains("hit"));
    let other = get(&app, "/r", &[("authorization", "Bearer other")]).await;
    assert_eq!(other.body, "#2");
}

#[tokio::test]
async fn credentialed_bypasses_keep_downstream_caches_from_sharing() {
    // `Authorization` is known to every shared cache (RFC 9111 §3.5): the
    // handler's own Cache-Control is left as it is.
    let own = app(ttl60(), |n, _| {
        std::future::ready(reply(n, &[("cache-control", "max-age=100")]))
    });
    let r = get(&own, "/r", &[("authorization", "Bearer a")]).await;
    assert_eq!(r.header("cache-control"), "max-age=100");
    // A session cookie is not: the response is made private.
    let r = get(&own, "/r", &[("cookie", "session=abc")]).await;
    assert_eq!(r.header("cache-control"), "private, max-age=100");
    // Without the handler's own, the layer's default is private either way.
    let layer_default = app(ttl60().s_maxage(secs(60)), |n, _| plain(n));
    let r = get(&layer_default, "/r", &[("authorization", "Bearer a")]).await;
    assert_eq!(r.header("cache-control"), "private, max-age=60");
}

#[tokio::test]
async fn sse_over_a_real_connection_delivers_its_first_event_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let app = app(ttl60(), move |_, _| {
        let rx = rx.lock().expect("lock").take();
        async move {
            let mut res = Response::new(Body::from_stream(ChannelStream(rx.expect("one request"))));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            res
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /events HTTP/1.1\r\nhost: example.com\r\n\r\n")
        .await
        .expect("write");
    tx.send(Ok(Bytes::from_static(b"data: one\n\n")))
        .await
        .expect("send");
    // The stream stays open; the first event must arrive anyway. (A hang
    // here is the bug; the bound only keeps a failing run from hanging.)
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("data: one") {
            let n = conn.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the first event did not arrive while the stream was open"
    );
    let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("cache-status: axum-cachex; fwd=miss; detail=event-stream"),
        "{head}"
    );
    drop(tx);
}

#[tokio::test]
async fn a_write_elsewhere_does_not_stop_a_concurrent_miss_from_being_stored() {
    // Found by the public cache-tests suite: a layer over a whole router
    // sees unsafe requests all the time; only one for the same key may
    // keep a miss in flight from being stored (RFC 9111 §4.4).
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let app = app(ttl60(), move |n, p| {
        let g = g.clone();
        let wait = p.method == Method::GET && n == 1;
        async move {
            if wait {
                g.notified().await;
            }
            reply(n, &[])
        }
    });
    let slow = get(&app, "/a", &[]);
    let write_elsewhere = async {
        tokio::task::yield_now().await;
        let r = request(&app, Method::POST, "/b", &[]).await;
        gate.notify_one();
        r
    };
    let (first, post) = tokio::join!(slow, write_elsewhere);
    assert_eq!(post.status, StatusCode::OK);
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    assert_eq!(get(&app, "/a", &[]).await.body, "#1");
}

// Disconnected from the origin (RFC 9111 §4.2.4) and targeted cache control
// (RFC 9213).

/// The handler's first answer carries `cc`; later ones are a gateway's 502,
/// marked unreachable when `marked`.
fn gateway_app(cc: &'static str, marked: bool) -> App {
    let builder = CacheLayer::builder()
        .freshness(Freshness::FromResponse)
        .stale_if_unreachable(secs(600));
    app(builder, move |n, _| {
        let res = if n == 1 {
            reply(n, &[("cache-control", cc)])
        } else {
            let mut res = reply(n, &[]);
            *res.status_mut() = StatusCode::BAD_GATEWAY;
            if marked {
                res.extensions_mut()
                    .insert(axum_cachex::UpstreamUnreachable);
            }
            res
        };
        std::future::ready(res)
    })
}

#[tokio::test]
async fn rule9111_4_2_4_stale_is_served_when_the_origin_is_unreachable() {
    let app = gateway_app("max-age=10", true);
    assert_eq!(get(&app, "/g", &[]).await.body, "#1");
    app.clock.advance(secs(30));
    let stale = get(&app, "/g", &[]).await;
    assert_eq!(
        (stale.status, stale.body.as_ref()),
        (StatusCode::OK, &b"#1"[..])
    );
    assert!(
        stale.cache_status().contains("detail=upstream-unreachable"),
        "{}",
        stale.cache_status()
    );
    // Past the window: the gateway's answer.
    app.clock.advance(secs(600));
    assert_eq!(get(&app, "/g", &[]).await.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn rule9111_4_2_4_an_origin_error_or_a_prohibiting_directive_gets_no_stale() {
    // A 502 the origin sent itself is not a disconnection.
    let app = gateway_app("max-age=10", false);
    get(&app, "/g", &[]).await;
    app.clock.advance(secs(30));
    assert_eq!(get(&app, "/g", &[]).await.status, StatusCode::BAD_GATEWAY);
    for cc in [
        "max-age=10, must-revalidate",
        "max-age=10, proxy-revalidate",
        "s-maxage=10",
        "no-cache, max-age=10",
    ] {
        let app = gateway_app(cc, true);
        get(&app, "/g", &[]).await;
        app.clock.advance(secs(30));
        let res = get(&app, "/g", &[]).await;
        assert_eq!(
            res.status,
            StatusCode::BAD_GATEWAY,
            "{cc}: {}",
            res.cache_status()
        );
    }
}

#[tokio::test]
async fn rule9213_a_targeted_field_replaces_cache_control_for_this_cache() {
    let builder = CacheLayer::builder()
        .freshness(Freshness::FromResponse)
        .targeted_cache_control(HeaderName::from_static("cdn-cache-control"));
    let app = app(builder, |n, parts| {
        let headers: &[(&'static str, &'static str)] = match parts.uri.path() {
            "/cdn-longer" => &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=600"),
            ],
            "/cdn-private" => &[
                ("cache-control", "max-age=600"),
                ("cdn-cache-control", "private"),
            ],
            _ => &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=\"600\""),
            ],
        };
        std::future::ready(reply(n, headers))
    });
    get(&app, "/cdn-longer", &[]).await;
    assert_eq!(
        get(&app, "/cdn-longer", &[]).await.body,
        "#1",
        "stored by CDN-Cache-Control"
    );
    get(&app, "/cdn-private", &[]).await;
    assert_eq!(
        get(&app, "/cdn-private", &[]).await.body,
        "#3",
        "private for this cache"
    );
    get(&app, "/cdn-invalid", &[]).await;
    assert_eq!(
        get(&app, "/cdn-invalid", &[]).await.body,
        "#5",
        "an invalid targeted field is ignored: no-store holds"
    );
}
