//! The cache layer next to the session layer, in either order: a request
//! with a session token is never answered from the shared store, and a
//! response that issues or renews a token is never stored.
#![cfg(feature = "session")]
#![allow(missing_docs)]

mod common;

use std::{sync::Arc, time::Duration};

use axum::{Router, body::Body, routing::get};
use axum_cachex::{
    CacheLayer,
    backend::{Backend, MemoryBackend},
    session::{
        CookieConfig, SessionConfig, SessionContext, SessionHandle, SessionLayer, SessionManager,
        SessionUser,
    },
};
use common::http::{Counter, Reply, send};

const SECRET: &str = "a-secret-of-at-least-32-characters!!";

fn manager(config: SessionConfig) -> SessionManager {
    SessionManager::new(Arc::new(MemoryBackend::new()), config)
}

fn cache() -> CacheLayer {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    CacheLayer::builder()
        .backend(backend)
        .ttl(Duration::from_secs(60))
        .build()
        .expect("layer")
}

/// `/page` greets the session's user (or "anonymous") and counts runs;
/// `/login` logs a user in.
fn routes(counter: &Counter) -> Router {
    let c = counter.clone();
    Router::new()
        .route(
            "/page",
            get(move |session: Option<SessionHandle>| {
                let c = c.clone();
                async move {
                    let who = session
                        .and_then(|s| s.user())
                        .map_or("anonymous".to_owned(), |u| u.user_id);
                    format!("#{} {who}", c.hit())
                }
            }),
        )
        .route(
            "/login",
            get(|ctx: SessionContext| async move {
                ctx.login(SessionUser::new("alice"))
                    .await
                    .map(|_| "in")
                    .map_err(|e| e.to_string())
            }),
        )
}

async fn get_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http::Request::get(uri).header("host", "example.com");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(app, req.body(Body::empty()).expect("request")).await
}

async fn token_for_alice(manager: &SessionManager) -> String {
    manager
        .create_session(SessionUser::new("alice"), None, None, None)
        .await
        .expect("session")
        .1
}

#[tokio::test]
async fn session_token_bypasses_the_cache_with_the_session_layer_outside() {
    let config = SessionConfig::builder(SECRET).build().expect("config");
    let manager = manager(config);
    let c = Counter::default();
    let app = routes(&c)
        .layer(cache())
        .layer(SessionLayer::new(manager.clone()));
    assert_eq!(get_with(&app, "/page", &[]).await.body, "#1 anonymous");
    let token = token_for_alice(&manager).await;
    let alice = get_with(&app, "/page", &[("x-session-token", &token)]).await;
    assert_eq!(alice.body, "#2 alice");
    assert!(alice.cache_status().contains("fwd=bypass"));
    // Alice's page was not stored for the next anonymous client.
    assert_eq!(get_with(&app, "/page", &[]).await.body, "#1 anonymous");
}

#[tokio::test]
async fn session_token_bypasses_the_cache_with_the_cache_layer_outside() {
    // Names the cache layer cannot know in advance: it learns them from the
    // session layer's first response.
    let config = SessionConfig::builder(SECRET)
        .header_name("X-Auth")
        .cookie(CookieConfig::new().name("sid").secure(false))
        .build()
        .expect("config");
    let manager = manager(config);
    let c = Counter::default();
    let app = routes(&c)
        .layer(SessionLayer::new(manager.clone()))
        .layer(cache());
    assert_eq!(get_with(&app, "/page", &[]).await.body, "#1 anonymous");
    let token = token_for_alice(&manager).await;
    for creds in [
        ("x-auth", token.clone()),
        ("cookie", format!("sid={token}")),
    ] {
        let alice = get_with(&app, "/page", &[(creds.0, &creds.1)]).await;
        assert!(
            alice.body.ends_with(b" alice"),
            "{creds:?} got {:?}",
            alice.body
        );
    }
    assert_eq!(get_with(&app, "/page", &[]).await.body, "#1 anonymous");
}

#[tokio::test]
async fn a_response_that_issues_a_token_is_no_store_and_never_stored() {
    let config = SessionConfig::builder(SECRET).build().expect("config");
    let c = Counter::default();
    let app = routes(&c)
        .layer(cache())
        .layer(SessionLayer::new(manager(config)));
    let first = get_with(&app, "/login", &[]).await;
    assert_eq!(first.header("cache-control"), "no-store");
    assert!(!first.header("x-session-token").is_empty());
    let second = get_with(&app, "/login", &[]).await;
    assert!(
        !second.cache_status().contains("hit"),
        "{}",
        second.cache_status()
    );
    assert_ne!(
        second.header("x-session-token"),
        first.header("x-session-token")
    );
}
