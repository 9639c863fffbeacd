//! Red-team tests, round 3. Each test names the rule it breaks; every test
//! here failed against the code it was written for, unless marked `GUARD`.

use super::support::*;
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, Request, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use axum_cachex::{
    CacheLayer, Stale,
    session::{SessionConfig, SessionContext, SessionLayer, SessionManager, SessionUser},
};

const SECRET: &str = "red-team-secret-of-at-least-32-characters!!";

/// Sends on a task of its own: `Err(message)` when the layer panicked.
async fn send_catching(app: &Router, req: Request<Body>) -> Result<Got, String> {
    let app = app.clone();
    let task = tokio::spawn(async move { send(&app, req).await });
    match task.await {
        Ok(got) => Ok(got),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err(msg)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A handler answering `{name} v{n}`, n counting its runs from 1.
fn versioned(
    name: &'static str,
    calls: &Arc<AtomicUsize>,
) -> impl Fn() -> std::future::Ready<String> + Clone + Send + Sync + 'static {
    let calls = Arc::clone(calls);
    move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(format!("{name} v{n}"))
    }
}

// ---------------------------------------------------------------------------
// Keys: no two resources may share a key.
// ---------------------------------------------------------------------------

/// Regression of the round-1 nested-router fix. `key::request_path` uses
/// axum's `OriginalUri` only when it `ends_with` the (stripped) URI path.
/// For the root route of a nested router, `/users` arrives as `/` and
/// `"/users".ends_with("/")` is false: the key uses `/`. Two nested
/// routers' index pages (`/users`, `/posts`) then share the key
/// `GET|||host|||/|||` and one is served for the other.
#[tokio::test]
async fn rule3_key_injective_nested_router_roots_share_key() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let (u, p) = (counter(), counter());
    let users = Router::new()
        .route("/", get(versioned("user list", &u)))
        .layer(layer.clone());
    let posts = Router::new()
        .route("/", get(versioned("post list", &p)))
        .layer(layer.clone());
    let app = Router::new().nest("/users", users).nest("/posts", posts);
    assert_eq!(send(&app, get_req("/users")).await.text(), "user list v1");
    let res = send(&app, get_req("/posts")).await;
    assert_eq!(
        res.text(),
        "post list v1",
        "GET /posts was answered with /users' stored response (cache-status: {})",
        res.header("cache-status")
    );
}

/// Same bug seen from the public API: `CacheLayer::cache_key` of
/// `GET /users` (what an application passes to `invalidate`) is not the
/// key the layer stored `/users` under, so `invalidate` removes nothing
/// and the old list keeps being served.
#[tokio::test]
async fn rule_invalidate_misses_nested_router_root() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let u = counter();
    let users = Router::new()
        .route("/", get(versioned("user list", &u)))
        .layer(layer.clone());
    let app = Router::new().nest("/users", users);
    assert_eq!(send(&app, get_req("/users")).await.text(), "user list v1");
    let removed = layer.invalidate(&get_req("/users")).await.unwrap();
    let res = send(&app, get_req("/users")).await;
    assert!(
        removed && res.text() == "user list v2",
        "invalidate(GET /users) removed: {removed}; next GET /users got {:?} \
         (cache-status: {}); key asked: {:?}",
        res.text(),
        res.header("cache-status"),
        layer.cache_key(&get_req("/users"))
    );
}

// ---------------------------------------------------------------------------
// Invalidation (RFC 9111 §4.4).
// ---------------------------------------------------------------------------

/// HTTP/2 requests carry the host in the URI (`:authority`), usually with
/// no `Host` header. The request's own target is invalidated under the
/// right host, but `Location` / `Content-Location` targets are rebuilt as
/// origin-form URIs with the request's headers: no authority, no `Host`,
/// so their key has an empty host and never matches what was stored.
/// RFC 9111 §4.4: the cache MUST invalidate the `Location` target on the
/// same host.
#[tokio::test]
async fn rule_invalidation_location_target_missed_without_host_header() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let version = counter();
    let v = Arc::clone(&version);
    let v2 = Arc::clone(&version);
    let app = Router::new()
        .route(
            "/items/1",
            get(move || {
                let n = v.load(Ordering::SeqCst);
                async move { format!("item 1 v{n}") }
            })
            .layer(layer.clone()),
        )
        .route(
            "/items",
            axum::routing::post(move || {
                v2.fetch_add(1, Ordering::SeqCst);
                async { (StatusCode::CREATED, [(header::LOCATION, "/items/1")], "ok") }
            })
            .layer(layer.clone()),
        );
    let h2_get = || {
        Request::get("http://shop.example/items/1")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(send(&app, h2_get()).await.text(), "item 1 v0");
    let post = Request::post("http://shop.example/items")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, post).await.status, StatusCode::CREATED);
    let res = send(&app, h2_get()).await;
    assert_eq!(
        res.text(),
        "item 1 v1",
        "after a 201 with `Location: /items/1`, the stored /items/1 was still served \
         (cache-status: {})",
        res.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Arithmetic: no configuration may make a request panic.
// ---------------------------------------------------------------------------

/// `stale_ttl(Duration::MAX)` ("serve stale on error for as long as it
/// takes") and `ttl(Duration::MAX)` pass validation, but
/// `CacheEntry::storage_ttl` (`fresh_for + stale window`) and
/// `store::write` (`ttl += REVALIDATION_GRACE`) add `Duration`s with `+`,
/// which panics on overflow: the request that stores the response panics.
#[tokio::test]
async fn rule_no_panic_huge_configured_lifetimes_overflow_duration_add() {
    let cases: Vec<(&str, CacheLayer, bool)> = vec![
        (
            "ttl(60s).stale_ttl(MAX).stale(Error)",
            CacheLayer::builder()
                .ttl(Duration::from_secs(60))
                .stale_ttl(Duration::MAX)
                .stale(Stale::Error)
                .backend(mem())
                .build()
                .unwrap(),
            false,
        ),
        (
            "ttl(MAX), handler ETag",
            CacheLayer::builder()
                .ttl(Duration::MAX)
                .backend(mem())
                .build()
                .unwrap(),
            true,
        ),
    ];
    let mut failures = Vec::new();
    for (name, layer, etag) in cases {
        let app = Router::new().route(
            "/forever",
            get(move || async move {
                let mut res = "forever".into_response();
                if etag {
                    res.headers_mut()
                        .insert(header::ETAG, HeaderValue::from_static("\"v1\""));
                }
                res
            })
            .layer(layer),
        );
        if let Err(msg) = send_catching(&app, get_req("/forever")).await {
            failures.push(format!("{name}: request panicked: {msg}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------
// Rule 2: credentials.
// ---------------------------------------------------------------------------

fn session_manager(config: SessionConfig) -> SessionManager {
    SessionManager::new(mem(), config)
}

/// Regression of the round-1/2 fixes (private `Cache-Control` on
/// credentialed responses; `response_is_credentialed` for the first
/// request with a custom session header). On a layer that does not store
/// (`s_maxage` only: an ETag/CDN layer) outside a session layer with a
/// custom header, the first authenticated request goes the `uncached`
/// path, which ignores the `Credentialed` marker the session layer put on
/// the response and stamps the layer's `Cache-Control: s-maxage=60`: a
/// downstream CDN may store alice's page and serve it to everyone
/// (RFC 9111 §3.5).
#[tokio::test]
async fn rule2_non_storing_layer_outside_session_stamps_s_maxage_on_first_authenticated_page() {
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
        .s_maxage(Duration::from_secs(60))
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
    let cc = alice.header("cache-control").to_ascii_lowercase();
    assert!(
        !cc.contains("s-maxage") || cc.contains("private") || cc.contains("no-store"),
        "alice's page went out with `Cache-Control: {cc}` (cache-status: {}): a CDN may \
         share it (RFC 9111 §3.5)",
        alice.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Coalescing and Cache-Status (RFC 9211).
// ---------------------------------------------------------------------------

/// A handler answers `Cache-Control: max-age=0` with an `ETag` (stale at
/// once, revalidate before reuse) on a layer with a stale-if-error window.
/// A request coalesced on the leader gets the leader's just-made response
/// through `usable_by_waiter` (`age < fresh_for + stale_if_error`) and
/// `collapsed_status` labels it `detail=stale-if-error`, counting a
/// stale-if-error serve, although the handler never failed. RFC 9111
/// §4.2.4: a stale response may only be served where explicitly allowed,
/// and stale-if-error (RFC 5861 §4) only allows it when an error occurred;
/// RFC 9211 `detail` must not report an error fallback that did not happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule5861_waiter_served_stale_if_error_without_error() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .stale_ttl(Duration::from_secs(300))
        .stale(Stale::Error)
        .backend(mem())
        .build()
        .unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let calls = counter();
    let (r, c) = (Arc::clone(&release), Arc::clone(&calls));
    let app = Router::new().route(
        "/quote",
        get(move || {
            let r = Arc::clone(&r);
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 1 {
                    r.notified().await;
                }
                (
                    [
                        (header::CACHE_CONTROL, "max-age=0"),
                        (header::ETAG, "\"q1\""),
                    ],
                    format!("quote v{n}"),
                )
            }
        })
        .layer(layer.clone()),
    );
    let leader = tokio::spawn({
        let app = app.clone();
        async move { send(&app, get_req("/quote")).await }
    });
    // Wait until the leader runs the handler.
    tokio::time::timeout(HANG, async {
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    let waiter = tokio::spawn({
        let app = app.clone();
        async move { send(&app, get_req("/quote")).await }
    });
    tokio::time::timeout(HANG, async {
        while layer.stats().coalesced_waits == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the second request never coalesced");
    release.notify_one();
    let leader = leader.await.unwrap();
    let waiter = waiter.await.unwrap();
    assert_eq!(leader.text(), "quote v1");
    let cs = waiter.header("cache-status");
    assert!(
        !cs.contains("stale-if-error"),
        "the handler never failed, yet the coalesced request got {:?} with `Cache-Status: {cs}` \
         (stale_if_error_served = {})",
        waiter.text(),
        layer.stats().stale_if_error_served
    );
}

// ---------------------------------------------------------------------------
// only-if-cached (RFC 9111 §5.2.1.7).
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct UserId(&'static str);

/// Regression of the round-2 fix (only-if-cached on bypassed requests
/// answers 504): on a `.private_per_user` route, a request without a user
/// is classified `Uncached(no-user)` after the only-if-cached check, so an
/// `only-if-cached` request runs the handler. Nothing is stored for it:
/// RFC 9111 §5.2.1.7 wants a 504, not a forwarded request.
#[tokio::test]
async fn rule_only_if_cached_without_user_on_per_user_route_runs_handler() {
    let calls = counter();
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .private_per_user(|parts: &http::request::Parts| {
            parts.extensions.get::<UserId>().map(|u| u.0.to_owned())
        })
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route("/inbox", get(versioned("inbox", &calls)).layer(layer));
    let mut req = get_req("/inbox");
    req.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("only-if-cached"),
    );
    let res = send(&app, req).await;
    assert!(
        res.status == StatusCode::GATEWAY_TIMEOUT && calls.load(Ordering::SeqCst) == 0,
        "only-if-cached request got {} {:?} after {} handler run(s) (cache-status: {})",
        res.status,
        res.text(),
        calls.load(Ordering::SeqCst),
        res.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Configuration: errors, not panics.
// ---------------------------------------------------------------------------

/// `max_refreshes_in_flight(usize::MAX)` ("no bound") is accepted by
/// `validate` and then `Shared::new` hands it to
/// `tokio::sync::Semaphore::new`, which panics above `MAX_PERMITS`:
/// `build()` panics instead of returning a `ConfigError`.
#[test]
fn rule_no_panic_build_with_unbounded_refreshes() {
    let built = std::panic::catch_unwind(|| {
        CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .max_refreshes_in_flight(usize::MAX)
            .backend(mem())
            .build()
            .is_ok()
    });
    assert!(
        built.is_ok(),
        "CacheLayerBuilder::build panicked for max_refreshes_in_flight(usize::MAX)"
    );
}

// ---------------------------------------------------------------------------
// Invalidation of relative references (RFC 9111 §4.4, RFC 3986 §5.2).
// ---------------------------------------------------------------------------

/// `same_origin_path` resolves a relative `Location` by pasting it after
/// the request's directory, without removing dot-segments (RFC 3986
/// §5.2.4): `Location: ../list` from `POST /items/1` becomes
/// `/items/../list`, not `/list`, and the stored `/list` is not
/// invalidated.
#[tokio::test]
async fn rule_invalidation_relative_location_with_dot_segments_missed() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let version = counter();
    let (v, v2) = (Arc::clone(&version), Arc::clone(&version));
    let app = Router::new()
        .route(
            "/list",
            get(move || {
                let n = v.load(Ordering::SeqCst);
                async move { format!("list v{n}") }
            })
            .layer(layer.clone()),
        )
        .route(
            "/items/{id}",
            axum::routing::delete(move || {
                v2.fetch_add(1, Ordering::SeqCst);
                async { (StatusCode::SEE_OTHER, [(header::LOCATION, "../list")]) }
            })
            .layer(layer.clone()),
        );
    assert_eq!(send(&app, get_req("/list")).await.text(), "list v0");
    let del = Request::delete("/items/1")
        .header(header::HOST, "shop.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, del).await.status, StatusCode::SEE_OTHER);
    let res = send(&app, get_req("/list")).await;
    assert_eq!(
        res.text(),
        "list v1",
        "after a 303 with `Location: ../list` from /items/1, the stored /list was still \
         served (cache-status: {})",
        res.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// Rule 1: `private` routes.
// ---------------------------------------------------------------------------

/// `.private()` promises "only the client's own cache may store the
/// response", and `.private_per_user(f)` caches one user's page for that
/// user only. Both add their `Cache-Control: private, …` only to responses
/// without one (`add_default_cache_control`): a handler that sets its own
/// `Cache-Control: max-age=60` (meant for the browser) goes out without
/// `private`, so a shared cache downstream (a CDN, or a router-wide
/// `CacheLayer` outside, as here) stores alice's page and serves it to bob.
#[tokio::test]
async fn rule1_private_route_response_with_handler_max_age_is_shared_downstream() {
    let routes: Vec<(&str, CacheLayer)> = vec![
        (
            "private()",
            CacheLayer::builder()
                .ttl(Duration::from_secs(60))
                .private()
                .backend(mem())
                .build()
                .unwrap(),
        ),
        (
            "private_per_user()",
            CacheLayer::builder()
                .ttl(Duration::from_secs(60))
                .private_per_user(|parts: &http::request::Parts| {
                    parts.extensions.get::<UserId>().map(|u| u.0.to_owned())
                })
                .backend(mem())
                .build()
                .unwrap(),
        ),
    ];
    let mut failures = Vec::new();
    for (name, inner) in routes {
        // Downstream shared cache: a router-wide layer on its own backend.
        let outer = CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .backend(mem())
            .build()
            .unwrap();
        // The application's authentication: a `sid` cookie names the user.
        async fn auth(
            mut req: Request<Body>,
            next: axum::middleware::Next,
        ) -> axum::response::Response {
            let cookie = req
                .headers()
                .get(header::COOKIE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if cookie.contains("sid=alice") {
                req.extensions_mut().insert(UserId("alice"));
            } else if cookie.contains("sid=bob") {
                req.extensions_mut().insert(UserId("bob"));
            }
            next.run(req).await
        }
        let app = Router::new()
            .route(
                "/account",
                get(|user: Option<axum::Extension<UserId>>| async move {
                    let who = user.map_or("nobody", |u| u.0.0);
                    (
                        [(header::CACHE_CONTROL, "max-age=60")],
                        format!("account of {who}"),
                    )
                })
                .layer(inner),
            )
            .layer(axum::middleware::from_fn(auth))
            .layer(outer);
        let as_user = |sid: &str| {
            let mut req = get_req("/account");
            req.headers_mut().insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("sid={sid}")).unwrap(),
            );
            req
        };
        let alice = send(&app, as_user("alice")).await;
        assert_eq!(alice.text(), "account of alice");
        let bob = send(&app, as_user("bob")).await;
        if bob.text() != "account of bob" {
            failures.push(format!(
                "{name}: alice's response went out with `Cache-Control: {}`; bob got {:?} \
                 (cache-status: {})",
                alice.header("cache-control"),
                bob.text(),
                bob.header("cache-status")
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------
// GUARD: Vary on credentials on a `.public()` route.
// ---------------------------------------------------------------------------

/// GUARD (passed when written). On a `.public()` route, a response with
/// `Vary: Authorization` is stored per token: another token, or none, never
/// gets it, and invalidating the URL drops every variant.
#[tokio::test]
async fn guard_public_route_vary_authorization_keeps_users_apart() {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .public()
        .backend(mem())
        .build()
        .unwrap();
    let calls = counter();
    let c = Arc::clone(&calls);
    let app = Router::new().route(
        "/me",
        get(move |headers: HeaderMap| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let who = headers
                .get(header::AUTHORIZATION)
                .map_or("anonymous".to_owned(), |v| v.to_str().unwrap().to_owned());
            async move { ([(header::VARY, "Authorization")], format!("{who} v{n}")) }
        })
        .layer(layer.clone()),
    );
    let with = |token: Option<&'static str>| {
        let mut req = get_req("/me");
        if let Some(t) = token {
            req.headers_mut()
                .insert(header::AUTHORIZATION, HeaderValue::from_static(t));
        }
        req
    };
    assert_eq!(
        send(&app, with(Some("Bearer a"))).await.text(),
        "Bearer a v1"
    );
    assert_eq!(
        send(&app, with(Some("Bearer b"))).await.text(),
        "Bearer b v2"
    );
    assert_eq!(send(&app, with(None)).await.text(), "anonymous v3");
    assert_eq!(
        send(&app, with(Some("Bearer a"))).await.text(),
        "Bearer a v1"
    );
    assert!(layer.invalidate(&with(None)).await.unwrap());
    assert_eq!(
        send(&app, with(Some("Bearer a"))).await.text(),
        "Bearer a v4"
    );
}
