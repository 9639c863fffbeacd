//! Red-team tests, round 9: key.rs, vary.rs, invalidate.rs and the
//! session layer's ShareGuard / Credentialed plumbing.

use super::support::*;
use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{
    Extension, Router,
    body::Body,
    http::{Request, StatusCode},
    routing::get,
};
use axum_cachex::{
    CacheLayer, ManualClock, ShareGuard,
    session::{SessionConfig, SessionLayer, SessionManager},
};

const SECRET: &str = "a-secret-of-at-least-32-characters!!";

/// The outer auth middleware's handle on the guard it put into the request.
#[derive(Clone)]
struct MyAuth(ShareGuard);

// ---------------------------------------------------------------------------
// RFC 9111 §3.5 / crate docs of `ShareGuard`: a response whose guard was
// raised must not be stored in the shared cache.
// ---------------------------------------------------------------------------

/// BUG: `SessionService::call` always inserts a brand-new
/// `ShareGuard::default()` into the request extensions, silently replacing
/// any guard an outer middleware already put there (the documented way for
/// "a middleware that runs outside the cache layer and may attach a
/// credential to the response" to keep it out of the cache). The cache
/// layer inside the session layer then watches the session's guard; when
/// the outer middleware raises its own guard during the handler (it logs
/// alice in), the cache never sees it, stores alice's response, and hands
/// it to the next anonymous client as a hit.
/// src/session/layer.rs `SessionService::call` (`ShareGuard::default()` +
/// `insert`, no reuse of an existing guard).
#[tokio::test]
async fn rule9111_3_5_session_layer_clobbers_outer_share_guard() {
    let clock = ManualClock::new();
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .clock(clock.clock())
        .build()
        .unwrap();
    let manager = SessionManager::new(mem(), SessionConfig::builder(SECRET).build().unwrap());
    let calls = counter();
    let c = Arc::clone(&calls);
    let app = Router::new()
        .route(
            "/home",
            get(
                move |Extension(MyAuth(guard)): Extension<MyAuth>,
                      headers: axum::http::HeaderMap| {
                    let c = Arc::clone(&c);
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        if headers.contains_key("x-login") {
                            // The auth middleware logs alice in during the
                            // handler: this response is hers alone.
                            guard.forbid_sharing();
                            "welcome alice, your token is t-alice".to_owned()
                        } else {
                            "welcome, guest".to_owned()
                        }
                    }
                },
            ),
        )
        .layer(cache)
        .layer(SessionLayer::new(manager))
        .layer(axum::middleware::map_request(
            |mut req: Request<Body>| async move {
                let guard = ShareGuard::default();
                req.extensions_mut().insert(guard.clone());
                req.extensions_mut().insert(MyAuth(guard));
                Ok::<_, std::convert::Infallible>(req)
            },
        ));

    let mut login = get_req("/home");
    login
        .headers_mut()
        .insert("x-login", axum::http::HeaderValue::from_static("1"));
    let alice = send(&app, login).await;
    assert_eq!(alice.status, StatusCode::OK);
    assert!(alice.text().contains("alice"));

    let guest = send(&app, get_req("/home")).await;
    assert_eq!(guest.status, StatusCode::OK);
    assert!(
        !guest.text().contains("alice"),
        "anonymous client got alice's response from the cache: {:?} (cache-status {:?})",
        guest.text(),
        guest.header("cache-status")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
