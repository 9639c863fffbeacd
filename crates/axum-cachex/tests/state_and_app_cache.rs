//! The state manager and the application cache on every backend, plus their
//! axum extractors.
mod common;
#[path = "common/manager_suite.rs"]
mod manager_suite;

use std::sync::Arc;

use axum::{Extension, Router, body::Body, routing::get};
use axum_cachex::{
    app_cache::CacheManager,
    backend::{Backend, MemoryBackend},
    state::StateManager,
};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn memory() -> Option<Arc<dyn Backend>> {
    Some(Arc::new(MemoryBackend::new()))
}

mod memory {
    crate::manager_suite!(super::memory);
}

#[cfg(feature = "redis")]
mod redis_backend {
    crate::manager_suite!(crate::common::backend_redis::redis);
}

#[cfg(feature = "memcached")]
mod memcached_backend {
    crate::manager_suite!(crate::common::backend_memcached::memcached);
}

async fn body_text(resp: axum::response::Response) -> String {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn request(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn extractors_read_the_managers_from_extensions() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let app = Router::new()
        .route(
            "/state",
            get(|states: StateManager| async move {
                states.create_state(None, None).await.expect("create")
            }),
        )
        .route(
            "/cache",
            get(|cache: CacheManager| async move {
                cache.set("k", &1u8, None).await.expect("set");
                cache.key_prefix().to_owned()
            }),
        )
        .route(
            "/optional",
            get(
                |s: Option<StateManager>, c: Option<CacheManager>| async move {
                    format!("{} {}", s.is_some(), c.is_some())
                },
            ),
        );

    let configured = app
        .clone()
        .layer(Extension(StateManager::new(Arc::clone(&backend))))
        .layer(Extension(CacheManager::new(Arc::clone(&backend))));
    let resp = configured
        .clone()
        .oneshot(request("/state"))
        .await
        .expect("call");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_text(resp).await.len(), 43);
    let resp = configured
        .clone()
        .oneshot(request("/cache"))
        .await
        .expect("call");
    assert_eq!(body_text(resp).await, "cache:");
    let resp = configured
        .oneshot(request("/optional"))
        .await
        .expect("call");
    assert_eq!(body_text(resp).await, "true true");

    // Without the extensions: a 500 that says how to fix it.
    let resp = app.clone().oneshot(request("/state")).await.expect("call");
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = body_text(resp).await;
    assert!(
        text.contains("StateManager") && text.contains("Extension"),
        "{text}"
    );
    let resp = app.clone().oneshot(request("/cache")).await.expect("call");
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body_text(resp).await.contains("CacheManager"));
    let resp = app.oneshot(request("/optional")).await.expect("call");
    assert_eq!(body_text(resp).await, "false false");
}

#[tokio::test]
async fn managers_work_as_router_state_through_from_ref() {
    use axum::extract::{FromRef, State};

    #[derive(Clone)]
    struct AppState {
        states: StateManager,
        cache: CacheManager,
    }
    // What `#[derive(FromRef)]` (axum's `macros` feature) generates.
    impl FromRef<AppState> for StateManager {
        fn from_ref(app: &AppState) -> Self {
            app.states.clone()
        }
    }
    impl FromRef<AppState> for CacheManager {
        fn from_ref(app: &AppState) -> Self {
            app.cache.clone()
        }
    }
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let app = Router::new()
        .route(
            "/",
            get(
                |State(states): State<StateManager>, State(cache): State<CacheManager>| async move {
                    let s = states.create_state(None, None).await.expect("create");
                    cache.set("last", &s, None).await.expect("set");
                    s
                },
            ),
        )
        .with_state(AppState {
            states: StateManager::new(Arc::clone(&backend)),
            cache: CacheManager::new(backend),
        });
    let resp = app.oneshot(request("/")).await.expect("call");
    assert_eq!(resp.status(), StatusCode::OK);
}
