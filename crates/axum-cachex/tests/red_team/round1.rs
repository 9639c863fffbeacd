//! Round 1: credentials and sessions in either layer order, keys under
//! nested routers and Host tricks, Cache-Control parsing, revalidation,
//! streaming. Each test names the rule it broke.

use super::support::*;
use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, Request, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use axum_cachex::{
    CacheLayer, Freshness, ManualClock, Stale,
    session::{SessionConfig, SessionContext, SessionLayer, SessionManager, SessionUser},
};
use bytes::Bytes;
use http_body_util::BodyExt;
use tower::ServiceExt;

const SECRET: &str = "red-team-secret-of-at-least-32-characters!!";

// ---------------------------------------------------------------------------
// Rule 3: keys are injective (method/host/path/query).
// ---------------------------------------------------------------------------

/// A cache layer on a nested router keys on the path axum hands it, which
/// has the nest prefix stripped: `/alice/profile` and `/bob/profile` share
/// the key `GET|||shop.example|||/profile|||`, so Bob gets Alice's page.
#[tokio::test]
async fn rule3_key_injective_nested_router_prefix_is_not_in_key() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let tenant = |name: &'static str| {
        Router::new()
            .route(
                "/profile",
                get(move || async move { format!("private profile of {name}") }),
            )
            .layer(layer.clone())
    };
    let app = Router::new()
        .nest("/alice", tenant("alice"))
        .nest("/bob", tenant("bob"));
    let a = send(&app, get_req("/alice/profile")).await;
    assert_eq!(a.text(), "private profile of alice");
    let b = send(&app, get_req("/bob/profile")).await;
    assert_eq!(
        b.text(),
        "private profile of bob",
        "Bob was served Alice's cached page (cache-status: {})",
        b.header("cache-status")
    );
}

/// Same with a path parameter in the nest prefix: every tenant shares one
/// key.
#[tokio::test]
async fn rule3_key_injective_nested_router_path_param_is_not_in_key() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let inner = Router::new()
        .route(
            "/balance",
            get(|uri: axum::extract::OriginalUri| async move {
                format!("balance page for {}", uri.0.path())
            }),
        )
        .layer(layer);
    let app = Router::new().nest("/accounts/{id}", inner);
    let a = send(&app, get_req("/accounts/1/balance")).await;
    assert_eq!(a.text(), "balance page for /accounts/1/balance");
    let b = send(&app, get_req("/accounts/2/balance")).await;
    assert_eq!(
        b.text(),
        "balance page for /accounts/2/balance",
        "account 2 was served account 1's cached page (cache-status: {})",
        b.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Rule 2: credentials, whatever the order of SessionLayer and CacheLayer.
// ---------------------------------------------------------------------------

fn session_manager(config: SessionConfig) -> SessionManager {
    SessionManager::new(mem(), config)
}

/// GUARD (passes since commit c276000, ShareGuard): keeps the fix.
/// SessionLayer outside CacheLayer (the session layer runs first): the
/// handler starts an anonymous session and renders its token (a CSRF /
/// session token page). The cache stores the handler's response before the
/// session layer adds `Cache-Control: no-store` and the token header, so
/// the next anonymous client is served the first client's token.
#[tokio::test]
async fn guard_rule2_session_outside_cache_token_issuing_response_is_not_shared() {
    let manager = session_manager(SessionConfig::builder(SECRET).build().unwrap());
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/start",
            get(|ctx: SessionContext| async move {
                let handle = ctx.session_or_anonymous().await.expect("session");
                format!("your token: {}", handle.token().unwrap_or_default())
            }),
        )
        .layer(cache)
        .layer(SessionLayer::new(manager));
    let first = send(&app, get_req("/start")).await;
    assert!(
        first.text().len() > "your token: ".len(),
        "{}",
        first.text()
    );
    let second = send(&app, get_req("/start")).await;
    assert_ne!(
        second.text(),
        first.text(),
        "an anonymous client got another client's session token from the cache \
         (cache-status: {})",
        second.header("cache-status")
    );
}

/// CacheLayer outside SessionLayer with a custom token header (`X-Auth`).
/// The cache only learns the header name from the session layer's first
/// response, after it has already stored that response: the first
/// authenticated request's page is stored and served to anonymous clients.
#[tokio::test]
async fn rule2_cache_outside_session_custom_header_first_authenticated_page_is_shared() {
    let manager = session_manager(
        SessionConfig::builder(SECRET)
            .header_name("X-Auth")
            .build()
            .unwrap(),
    );
    let (_, token) = manager
        .create_session(SessionUser::new("alice"), None, None, None)
        .await
        .unwrap();
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/me",
            get(|ctx: SessionContext| async move {
                match ctx.session().and_then(|s| s.user()) {
                    Some(user) => format!("account of {}", user.user_id),
                    None => "anonymous".to_owned(),
                }
            }),
        )
        .layer(SessionLayer::new(manager))
        .layer(cache);
    let mut req = get_req("/me");
    req.headers_mut()
        .insert("x-auth", HeaderValue::from_str(&token).unwrap());
    let alice = send(&app, req).await;
    assert_eq!(alice.text(), "account of alice");
    let anon = send(&app, get_req("/me")).await;
    assert_eq!(
        anon.text(),
        "anonymous",
        "an anonymous client was served alice's page (cache-status: {})",
        anon.header("cache-status")
    );
}

/// Same with a custom session cookie name.
#[tokio::test]
async fn rule2_cache_outside_session_custom_cookie_first_authenticated_page_is_shared() {
    let manager = session_manager(
        SessionConfig::builder(SECRET)
            .cookie(axum_cachex::session::CookieConfig::new().name("sid"))
            .build()
            .unwrap(),
    );
    let (_, token) = manager
        .create_session(SessionUser::new("alice"), None, None, None)
        .await
        .unwrap();
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/me",
            get(|ctx: SessionContext| async move {
                match ctx.session().and_then(|s| s.user()) {
                    Some(user) => format!("account of {}", user.user_id),
                    None => "anonymous".to_owned(),
                }
            }),
        )
        .layer(SessionLayer::new(manager))
        .layer(cache);
    let mut req = get_req("/me");
    req.headers_mut().insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("__Host-sid={token}")).unwrap(),
    );
    let alice = send(&app, req).await;
    assert_eq!(alice.text(), "account of alice");
    let anon = send(&app, get_req("/me")).await;
    assert_eq!(
        anon.text(),
        "anonymous",
        "an anonymous client was served alice's page (cache-status: {})",
        anon.header("cache-status")
    );
}

/// A request with `Authorization` bypasses the layer, but the layer still
/// stamps its own `Cache-Control` (`s-maxage`, `must-revalidate`) on the
/// response. RFC 9111 §3.5: those directives are exactly what allow a
/// downstream shared cache (CDN) to store an authorized response and serve
/// it to everyone. Requirement: "must_revalidate or s_maxage alone never
/// allow sharing authorized responses".
#[tokio::test]
async fn rule2_authorized_bypass_response_advertises_shareable_cache_control() {
    for layer in [
        CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .s_maxage(Duration::from_secs(60))
            .backend(mem())
            .build()
            .unwrap(),
        CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .must_revalidate()
            .backend(mem())
            .build()
            .unwrap(),
    ] {
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
            "authorized response sent with `Cache-Control: {cc}`: a downstream shared cache \
             may store it and serve it to other users (RFC 9111 §3.5)"
        );
    }
}

// ---------------------------------------------------------------------------
// Rule 1 / 5: Cache-Control parsing must not hide `private` / `no-store`.
// ---------------------------------------------------------------------------

/// A stray `"` inside a token (not the start of a quoted-string, RFC 9110
/// §5.6.4) makes the parser skip the rest of the field line as if quoted:
/// the following `private` is lost and a per-user response is shared.
#[tokio::test]
async fn rule1_private_hidden_by_stray_quote_in_previous_element() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/me",
        get(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                (
                    [(header::CACHE_CONTROL, "max-age=60, x=a\"b, private")],
                    format!("personal page #{n}"),
                )
            }
        })
        .layer(layer),
    );
    let first = send(&app, get_req("/me")).await;
    assert_eq!(first.text(), "personal page #1");
    let second = send(&app, get_req("/me")).await;
    assert_eq!(
        second.text(),
        "personal page #2",
        "a `private` response was stored and shared (cache-status: {})",
        second.header("cache-status")
    );
}

/// Same with a backslash outside a quoted string (`x=a\"`).
#[tokio::test]
async fn rule5_no_store_hidden_by_backslash_quote_in_previous_element() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/me",
        get(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                (
                    [(header::CACHE_CONTROL, "max-age=60, ext=a\\\", no-store")],
                    format!("personal page #{n}"),
                )
            }
        })
        .layer(layer),
    );
    send(&app, get_req("/me")).await;
    let second = send(&app, get_req("/me")).await;
    assert_eq!(
        second.text(),
        "personal page #2",
        "a `no-store` response was stored (cache-status: {})",
        second.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Rule 5 / 10: handler freshness and revalidation.
// ---------------------------------------------------------------------------

/// RFC 9111 §5.2.2.10: `s-maxage` incorporates `proxy-revalidate`: a shared
/// cache must not serve the response stale (§4.2.4). The layer applies its
/// own stale-while-revalidate window to it anyway.
#[tokio::test]
async fn rule5_s_maxage_response_is_served_stale() {
    let clock = ManualClock::new();
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .stale_ttl(Duration::from_secs(30))
        .stale(Stale::Revalidate)
        .clock(clock.clock())
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/price",
        get(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                (
                    [(header::CACHE_CONTROL, "s-maxage=5")],
                    format!("price v{n}"),
                )
            }
        })
        .layer(layer),
    );
    assert_eq!(send(&app, get_req("/price")).await.text(), "price v1");
    clock.advance(Duration::from_secs(6));
    let stale = send(&app, get_req("/price")).await;
    assert_eq!(
        stale.text(),
        "price v2",
        "a response with s-maxage was served stale (cache-status: {})",
        stale.header("cache-status")
    );
}

/// Same rule with stale-if-error: the handler fails after s-maxage ran
/// out and the stale response is served instead of the error.
#[tokio::test]
async fn rule5_s_maxage_response_is_served_stale_on_error() {
    let clock = ManualClock::new();
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .stale_ttl(Duration::from_secs(30))
        .stale(Stale::Error)
        .clock(clock.clock())
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/price",
        get(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 1 {
                    ([(header::CACHE_CONTROL, "s-maxage=5")], "price v1").into_response()
                } else {
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                }
            }
        })
        .layer(layer),
    );
    assert_eq!(send(&app, get_req("/price")).await.text(), "price v1");
    clock.advance(Duration::from_secs(6));
    let res = send(&app, get_req("/price")).await;
    assert_eq!(
        res.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a response with s-maxage was served stale on error (cache-status: {})",
        res.header("cache-status")
    );
}

/// `Freshness::FromResponse`: the handler gives `Expires` (10 s) and no
/// `Cache-Control`. The layer stores the entry with its own
/// `Cache-Control: max-age=60` added; when a 304 later freshens the entry
/// (RFC 9111 §4.3.4) the freshness is recomputed from that injected
/// `max-age=60` instead of the handler's new `Expires`, so the entry is
/// served as fresh long after the handler said it expires.
#[tokio::test]
async fn rule10_freshened_entry_uses_injected_max_age_instead_of_expires() {
    let clock = ManualClock::new();
    let handler_clock = clock.clock();
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .freshness(Freshness::FromResponse)
        .clock(clock.clock())
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/news",
        get(move |headers: HeaderMap| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let now = handler_clock.now();
            async move {
                let dates = [
                    (header::DATE, httpdate::fmt_http_date(now)),
                    (
                        header::EXPIRES,
                        httpdate::fmt_http_date(now + Duration::from_secs(10)),
                    ),
                    (header::ETAG, "\"v1\"".to_owned()),
                ];
                if headers.get(header::IF_NONE_MATCH).is_some() {
                    (StatusCode::NOT_MODIFIED, dates).into_response()
                } else {
                    (dates, format!("news (run {n})")).into_response()
                }
            }
        })
        .layer(layer),
    );
    let first = send(&app, get_req("/news")).await;
    assert_eq!(first.text(), "news (run 1)");
    // Stale after 10 s: revalidated with a 304 that carries Expires +10 s.
    clock.advance(Duration::from_secs(12));
    let revalidated = send(&app, get_req("/news")).await;
    assert_eq!(revalidated.text(), "news (run 1)");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // 15 s after the 304: past its Expires, must be revalidated again.
    clock.advance(Duration::from_secs(15));
    let later = send(&app, get_req("/news")).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "entry served fresh 15 s after a 304 whose Expires was +10 s \
         (cache-status: {}, cache-control: {})",
        later.header("cache-status"),
        later.header("cache-control")
    );
}

/// The handler's `Expires` (10 s) shortens the layer's freshness, but the
/// layer then adds `Cache-Control: max-age=60`, which overrides `Expires`
/// for every downstream cache (RFC 9111 §5.3): clients are told the
/// response is fresh six times longer than the layer itself thinks.
#[tokio::test]
async fn rule5_expires_shorter_than_ttl_but_layer_advertises_max_age_ttl() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/news",
        get(|| async {
            let now = SystemTime::now();
            (
                [
                    (header::DATE, httpdate::fmt_http_date(now)),
                    (
                        header::EXPIRES,
                        httpdate::fmt_http_date(now + Duration::from_secs(10)),
                    ),
                ],
                "news",
            )
        })
        .layer(layer),
    );
    let res = send(&app, get_req("/news")).await;
    let cc = res.header("cache-control");
    let max_age = cc
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .filter_map(|v| v.parse::<u64>().ok())
        .next();
    assert!(
        max_age.is_none_or(|a| a <= 10),
        "Expires is 10 s away but the response says `Cache-Control: {cc}`"
    );
}

/// RFC 9111 §4.3.4: a 304 whose strong validator matches no stored
/// response MUST NOT be used to update it. The layer copies the 304's
/// `ETag: "v2"` onto the stored body of `"v1"`, and serves v1's bytes
/// labelled as v2.
#[tokio::test]
async fn rule10_304_with_other_strong_etag_updates_stored_response() {
    let clock = ManualClock::new();
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(1))
        .clock(clock.clock())
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/doc",
        get(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 1 {
                    ([(header::ETAG, "\"v1\"")], "body of v1").into_response()
                } else {
                    (StatusCode::NOT_MODIFIED, [(header::ETAG, "\"v2\"")]).into_response()
                }
            }
        })
        .layer(layer),
    );
    assert_eq!(send(&app, get_req("/doc")).await.text(), "body of v1");
    clock.advance(Duration::from_secs(3));
    let res = send(&app, get_req("/doc")).await;
    assert!(
        !(res.text() == "body of v1" && res.header("etag") == "\"v2\""),
        "v1's body was served with ETag \"v2\" (cache-status: {})",
        res.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Rule 6: preconditions.
// ---------------------------------------------------------------------------

/// RFC 9110 §13.1.1: a failed `If-Match` must not give a 200. On a miss the
/// layer strips `If-Match` before calling the handler (which would answer
/// 412) and then serves a 200 to the client.
#[tokio::test]
async fn rule6_if_match_precondition_dropped_on_miss() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/doc",
        get(|headers: HeaderMap| async move {
            match headers.get(header::IF_MATCH) {
                Some(v) if v != "\"v1\"" && v != "*" => {
                    StatusCode::PRECONDITION_FAILED.into_response()
                }
                _ => ([(header::ETAG, "\"v1\"")], "doc v1").into_response(),
            }
        })
        .layer(layer),
    );
    let mut req = get_req("/doc");
    req.headers_mut()
        .insert(header::IF_MATCH, HeaderValue::from_static("\"v0\""));
    let res = send(&app, req).await;
    assert_eq!(
        res.status,
        StatusCode::PRECONDITION_FAILED,
        "If-Match: \"v0\" against ETag \"v1\" answered {} (cache-status: {})",
        res.status,
        res.header("cache-status")
    );
}

/// Same for a stored response: `If-Match` that does not match the stored
/// ETag is answered 200 from the store.
#[tokio::test]
async fn rule6_if_match_precondition_ignored_on_hit() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/doc",
        get(|headers: HeaderMap| async move {
            match headers.get(header::IF_MATCH) {
                Some(v) if v != "\"v1\"" && v != "*" => {
                    StatusCode::PRECONDITION_FAILED.into_response()
                }
                _ => ([(header::ETAG, "\"v1\"")], "doc v1").into_response(),
            }
        })
        .layer(layer),
    );
    send(&app, get_req("/doc")).await;
    let mut req = get_req("/doc");
    req.headers_mut()
        .insert(header::IF_MATCH, HeaderValue::from_static("\"v0\""));
    let res = send(&app, req).await;
    assert_eq!(
        res.status,
        StatusCode::PRECONDITION_FAILED,
        "If-Match: \"v0\" against stored ETag \"v1\" answered {} (cache-status: {})",
        res.status,
        res.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Coalescing.
// ---------------------------------------------------------------------------

/// RFC 9111 §5.2.2.4: a `no-cache` response must not satisfy another
/// request without validation. A request that coalesced on the leader's
/// flight is handed the leader's `no-cache` response, and Cache-Status
/// (RFC 9211) even labels it `detail=stale-if-error` although nothing
/// failed.
#[tokio::test]
async fn rule5_no_cache_response_shared_with_coalesced_waiter() {
    let calls = counter();
    let c = Arc::clone(&calls);
    let gate = Arc::new(tokio::sync::Notify::new());
    let entered = Arc::new(tokio::sync::Notify::new());
    let (g, e) = (Arc::clone(&gate), Arc::clone(&entered));
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/feed",
        get(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let (g, e) = (Arc::clone(&g), Arc::clone(&e));
            async move {
                if n == 1 {
                    e.notify_one();
                    g.notified().await;
                }
                (
                    [(header::CACHE_CONTROL, "no-cache"), (header::ETAG, "\"f\"")],
                    format!("feed for request {n}"),
                )
            }
        })
        .layer(layer.clone()),
    );
    let app1 = app.clone();
    let leader = tokio::spawn(async move { send(&app1, get_req("/feed")).await });
    entered.notified().await;
    let app2 = app.clone();
    let waiter = tokio::spawn(async move { send(&app2, get_req("/feed")).await });
    // Let the second request join the flight before the leader finishes.
    for _ in 0..200 {
        if layer.stats().coalesced_waits > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gate.notify_one();
    let _ = leader.await.unwrap();
    let w = waiter.await.unwrap();
    let status = w.header("cache-status");
    assert!(
        !status.contains("collapsed"),
        "a no-cache response was reused for another request without validation \
         (cache-status: {status}, body: {})",
        w.text()
    );
}

// ---------------------------------------------------------------------------
// Rule 9: streaming.
// ---------------------------------------------------------------------------

fn endless_stream() -> Body {
    let stream = futures_stream::first_then_pending(Bytes::from_static(b"{\"tick\":1}\n"));
    Body::from_stream(stream)
}

mod futures_stream {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    use bytes::Bytes;

    pub(super) struct FirstThenPending(Option<Bytes>);

    pub(super) fn first_then_pending(first: Bytes) -> FirstThenPending {
        FirstThenPending(Some(first))
    }

    impl futures_core::Stream for FirstThenPending {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.0.take() {
                Some(b) => Poll::Ready(Some(Ok(b))),
                None => Poll::Pending,
            }
        }
    }
}

fn ndjson_app(layer: CacheLayer) -> Router {
    Router::new().route(
        "/live",
        get(|| async {
            Response::builder()
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .body(endless_stream())
                .unwrap()
        })
        .layer(layer),
    )
}

/// HEAD on a storable response of unknown length: the layer forwards it
/// as GET and buffers the whole body before answering, so HEAD on a live
/// NDJSON feed never gets its headers (GET on the same route streams).
#[tokio::test]
async fn rule9_head_on_endless_stream_never_answers() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = ndjson_app(layer);
    // GET streams its first line at once (sanity check).
    let res = app.clone().oneshot(get_req("/live")).await.unwrap();
    let mut body = res.into_body();
    let first = tokio::time::timeout(HANG, body.frame())
        .await
        .expect("GET streams its first frame");
    assert!(first.is_some());
    drop(body);
    // HEAD must answer with headers too.
    let head = Request::head("/live")
        .header(header::HOST, "shop.example")
        .body(Body::empty())
        .unwrap();
    let answered = tokio::time::timeout(HANG, app.clone().oneshot(head)).await;
    assert!(
        answered.is_ok(),
        "HEAD on a streamed response got no answer: the layer waits for the endless body"
    );
}

/// A second client of a storable stream of unknown length coalesces on
/// the first one's flight and gets nothing until the leader's body ends
/// (here: never; by default up to the 5 s coalesce timeout), although
/// the leader's client is being streamed to.
#[tokio::test]
async fn rule9_coalesced_client_of_teed_stream_gets_nothing_while_leader_streams() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .coalesce_timeout(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = ndjson_app(layer);
    let res = app.clone().oneshot(get_req("/live")).await.unwrap();
    let mut leader_body = res.into_body();
    let first = tokio::time::timeout(HANG, leader_body.frame())
        .await
        .expect("leader streams its first frame");
    assert!(first.is_some());
    // Leader still streaming; a second client arrives.
    let second = tokio::time::timeout(HANG, async {
        let res = app.clone().oneshot(get_req("/live")).await.unwrap();
        let mut body = res.into_body();
        body.frame().await.map(|f| f.is_ok())
    })
    .await;
    drop(leader_body);
    assert!(
        second.is_ok(),
        "a second client of a live stream got no byte while the first was streamed to"
    );
}

// ---------------------------------------------------------------------------
// Rule 3: Host.
// ---------------------------------------------------------------------------

/// An absolute-form request target names one host while the `Host` header
/// names another. The key follows the target's authority, but handlers
/// (and axum-extra's `Host` extractor) read the `Host` header: the response
/// made for `attacker.example` is stored under `shop.example` and served
/// to every later `shop.example` client (cache poisoning). A mismatch
/// should bypass the cache like an invalid Host does.
#[tokio::test]
async fn rule3_absolute_form_target_with_other_host_header_poisons_key() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/page",
        get(|headers: HeaderMap| async move {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            format!("<script src=\"https://{host}/app.js\"></script>")
        })
        .layer(layer),
    );
    let poison = Request::get("http://shop.example/page")
        .header(header::HOST, "attacker.example")
        .body(Body::empty())
        .unwrap();
    send(&app, poison).await;
    let victim = send(&app, get_req("/page")).await;
    assert_eq!(
        victim.text(),
        "<script src=\"https://shop.example/app.js\"></script>",
        "a shop.example client was served the response made for another Host \
         (cache-status: {})",
        victim.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Rule 11: Age.
// ---------------------------------------------------------------------------

/// RFC 9111 §4.2.3 / §4.3.4: the 304 that freshens an entry carries the
/// upstream `Age`; the freshened response's age starts from it. The layer
/// drops the 304's `Age` (it is not a storable header) and restarts the
/// entry at age 0, so it is served fresh past its `max-age`.
#[tokio::test]
async fn rule11_age_of_304_ignored_when_freshening() {
    let clock = ManualClock::new();
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .clock(clock.clock())
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/quote",
        get(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 1 {
                    (
                        [
                            (header::CACHE_CONTROL, "max-age=10"),
                            (header::ETAG, "\"q\""),
                        ],
                        "quote",
                    )
                        .into_response()
                } else {
                    (
                        StatusCode::NOT_MODIFIED,
                        [
                            (header::CACHE_CONTROL, "max-age=10"),
                            (header::ETAG, "\"q\""),
                            (header::AGE, "8"),
                        ],
                    )
                        .into_response()
                }
            }
        })
        .layer(layer),
    );
    assert_eq!(send(&app, get_req("/quote")).await.text(), "quote");
    clock.advance(Duration::from_secs(11));
    let freshened = send(&app, get_req("/quote")).await;
    assert_eq!(freshened.text(), "quote");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        freshened.header("age").parse::<u64>().unwrap_or(0) >= 8,
        "the freshened response lost the upstream Age: 8 (age: {:?})",
        freshened.header("age")
    );
}

// ---------------------------------------------------------------------------
// Rule 7: planted entries (GUARD).
// ---------------------------------------------------------------------------

/// GUARD: an entry planted in the backend with Set-Cookie, credential and
/// framing headers is served without them; a planted 1xx is not served.
#[tokio::test]
async fn guard_rule7_planted_entry_headers_are_dropped() {
    use axum_cachex::backend::Backend;
    use axum_cachex::{CacheEntry, CacheRecord};
    let backend = mem();
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(backend.clone())
        .build()
        .unwrap();
    let app = Router::new().route("/p", get(|| async { "origin" }).layer(layer.clone()));
    let key = layer.cache_key(&get_req("/p")).unwrap();
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("set-cookie", "session=stolen"),
        ("x-session-token", "stolen"),
        ("authorization", "Bearer stolen"),
        ("content-length", "999"),
        ("transfer-encoding", "chunked"),
    ] {
        headers.append(k, HeaderValue::from_static(v));
    }
    let entry = |status: u16| CacheEntry {
        status: StatusCode::from_u16(status).unwrap(),
        headers: headers.clone(),
        body: Bytes::from_static(b"planted"),
        etag: HeaderValue::from_static("\"p\""),
        stored_at: SystemTime::now(),
        fresh_for: Duration::from_secs(600),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        vary_key: Bytes::new(),
    };
    backend
        .set(&key, CacheRecord::Response(entry(200)).encode(), None)
        .await
        .unwrap();
    let res = send(&app, get_req("/p")).await;
    for name in [
        "set-cookie",
        "x-session-token",
        "authorization",
        "transfer-encoding",
    ] {
        assert!(!res.headers.contains_key(name), "planted {name} served");
    }
    assert_ne!(res.header("content-length"), "999");
    backend
        .set(&key, CacheRecord::Response(entry(101)).encode(), None)
        .await
        .unwrap();
    let res = send(&app, get_req("/p")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.text(), "origin");
}
