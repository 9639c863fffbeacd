//! The state manager and the application cache on every backend, plus their
//! axum extractors, the `CacheBackend` extractor outside a layer, and the
//! builders' errors.
//!
//! No test in this binary may build a `CacheLayer` without a backend of its
//! own or set `BackendProxy::global()`'s backend before
//! `cache_backend_outside_a_layer_is_rejected_with_how_to_fix_it` has
//! checked the rejection: either puts the global proxy in use.
mod common;
#[path = "common/manager_suite.rs"]
mod manager_suite;

use std::sync::Arc;

use std::time::Duration;

use axum::{
    Extension, Router,
    body::Body,
    routing::{get, post},
};
use axum_cachex::{
    BackendProxy, CacheBackend, CacheLayer, CacheLayerConfigError,
    app_cache::{CacheManager, CacheManagerConfigError},
    backend::{Backend, MemoryBackend},
    state::{StateManager, StateManagerConfigError},
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

#[tokio::test]
async fn cache_backend_outside_a_layer_is_rejected_with_how_to_fix_it() {
    async fn name(cache: CacheBackend) -> String {
        cache.name().to_owned()
    }
    async fn optional(cache: Option<CacheBackend>) -> String {
        cache.map_or("none".to_owned(), |c| c.name().to_owned())
    }
    let outside = Router::new()
        .route("/purge", post(name))
        .route("/maybe", post(optional));
    let purge = || {
        Request::post("/purge")
            .body(Body::empty())
            .expect("request")
    };
    let maybe = || {
        Request::post("/maybe")
            .body(Body::empty())
            .expect("request")
    };

    // No layer, nothing installed, global proxy unused: a 500 that says
    // what to do, not a silently empty in-memory store.
    let resp = outside.clone().oneshot(purge()).await.expect("call");
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = body_text(resp).await;
    for hint in [
        "outside a CacheLayer",
        ".layer(cache_layer.clone())",
        "Extension(CacheBackend::new(backend))",
        "BackendProxy::global().set_backend(backend)",
    ] {
        assert!(text.contains(hint), "missing {hint:?} in {text}");
    }
    let resp = outside.clone().oneshot(maybe()).await.expect("call");
    assert_eq!(body_text(resp).await, "none");

    // A backend installed for routes outside any layer.
    let installed: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let with_extension = outside
        .clone()
        .layer(Extension(CacheBackend::new(Arc::clone(&installed))));
    let resp = with_extension.clone().oneshot(purge()).await.expect("call");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_text(resp).await, "memory");

    // Under a layer with a backend of its own: that backend.
    let own: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    own.set(
        "http:GET|||h|||/x|||",
        bytes::Bytes::from_static(b"v"),
        None,
    )
    .await
    .expect("set");
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(Arc::clone(&own))
        .build()
        .expect("valid");
    let layered =
        Router::new()
            .route(
                "/purge",
                post(|cache: CacheBackend| async move {
                    cache.clear().await.expect("clear").to_string()
                }),
            )
            .layer(cache);
    let resp = layered.oneshot(purge()).await.expect("call");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        own.listing()
            .expect("memory lists")
            .keys("")
            .await
            .expect("keys")
            .is_empty(),
        "the layer's backend was cleared"
    );

    // A layer with its own backend does not put the global proxy in use.
    let resp = outside.clone().oneshot(purge()).await.expect("call");
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // The original's path: the process-wide backend set explicitly.
    BackendProxy::global().set_backend(Arc::new(MemoryBackend::new()));
    let resp = outside.oneshot(purge()).await.expect("call");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_text(resp).await, "memory");
}

#[test]
fn builders_return_errors_instead_of_panicking() {
    let backend = || -> Arc<dyn Backend> { Arc::new(MemoryBackend::new()) };

    let state = |b: axum_cachex::state::StateManagerBuilder| b.build().err();
    assert_eq!(
        state(StateManager::builder(backend()).default_ttl(Duration::ZERO)),
        Some(StateManagerConfigError::ZeroTtl)
    );
    assert_eq!(
        state(StateManager::builder(backend()).default_ttl(Duration::MAX)),
        Some(StateManagerConfigError::TtlOutOfRange(Duration::MAX))
    );
    assert_eq!(
        state(StateManager::builder(backend()).key_prefix("")),
        Some(StateManagerConfigError::EmptyKeyPrefix)
    );
    assert!(StateManager::builder(backend()).build().is_ok());
    assert!(
        StateManagerConfigError::ZeroTtl
            .to_string()
            .contains("`default_ttl`")
    );

    let cache = |b: axum_cachex::app_cache::CacheManagerBuilder| b.build().err();
    assert_eq!(
        cache(CacheManager::builder(backend()).default_ttl(Duration::ZERO)),
        Some(CacheManagerConfigError::ZeroTtl)
    );
    assert_eq!(
        cache(CacheManager::builder(backend()).key_prefix("")),
        Some(CacheManagerConfigError::EmptyKeyPrefix)
    );
    assert!(CacheManager::builder(backend()).build().is_ok());
    assert!(
        CacheManagerConfigError::EmptyKeyPrefix
            .to_string()
            .contains("cache:")
    );

    assert_eq!(
        CacheLayer::builder()
            .backend(backend())
            .public()
            .private()
            .build()
            .err(),
        Some(CacheLayerConfigError::PublicAndPrivate)
    );
    assert_eq!(
        CacheLayer::builder()
            .backend(backend())
            .ttl(Duration::from_secs(1))
            .cache_status(StatusCode::NOT_MODIFIED)
            .build()
            .err(),
        Some(CacheLayerConfigError::UncacheableStatus(304))
    );
}
