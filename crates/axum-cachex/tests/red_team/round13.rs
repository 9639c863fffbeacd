//! Round 13: the spec's consistency rules seen from outside — backends
//! wired as the README says, the `CacheBackend` extractor outside a layer,
//! a `Registry` + monitoring per app with two apps in one process, builder
//! validation of odd values, and a third-party store checked by the
//! published conformance suite. Written from the README, the issue text
//! and the code, without reading the rest of the suite.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use axum::{
    Extension, Router,
    body::Body,
    http::{Request, StatusCode, header},
    routing::{get, post},
};
use axum_cachex::{
    CacheBackend, CacheLayer, Registry,
    app_cache::CacheManager,
    backend::{Backend, BackendError, MemoryBackend},
    monitoring::{Guard, Monitoring},
    session::{SessionConfig, SessionManager, SessionUser},
};
use bytes::Bytes;

use crate::support::{get_req, mem, send};

const SECRET: &str = "round-13-secret-0123456789abcdef0123456789";
const TOKEN: &str = "round13-monitoring-token-0123456789abcdef";

fn cached(backend: Option<Arc<dyn Backend>>, registry: Option<&Registry>) -> CacheLayer {
    let mut b = CacheLayer::builder().ttl(Duration::from_secs(60));
    if let Some(backend) = backend {
        b = b.backend(backend);
    }
    if let Some(registry) = registry {
        b = b.registry(registry);
    }
    b.build().expect("valid layer")
}

fn authed(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "shop.example")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .expect("request")
}

/// Spec §4: "`CacheBackend` outside a cache layer answers with a rejection
/// that says how to fix it, instead of silently using the global memory
/// backend"; "two apps in one process do not mix".
///
/// App A is the README's zero-configuration app: a layer without a backend
/// (so it uses `BackendProxy::global()`). App B wires its own backend into
/// its layer and has an admin route outside the layer.
///
/// Reported: B's admin route, with nothing installed, got the global store
/// that app A put in use. Decision (documented on `CacheBackend` and in the
/// crate docs' "Process-wide state"): outside any layer, the extractor uses
/// the process-wide proxy once it is in use, because the original's quick
/// start calls `CacheBackend` from a route outside its layers with no setup
/// at all. An app that shares its process and wants its own store installs
/// `Extension(CacheBackend::new(backend))`: this guards that it then gets
/// exactly that store.
#[tokio::test]
async fn cache_backend_outside_layer_uses_the_installed_backend() {
    // PASSES: guard (the reported behaviour is a documented choice)
    let app_a = Router::new().route(
        "/r13-app-a-products",
        get(|| async { "a" }).layer(cached(None, None)),
    );
    let _ = send(&app_a, get_req("/r13-app-a-products")).await;

    let b_backend: Arc<dyn Backend> = mem();
    let app_b = Router::new()
        .route(
            "/r13-app-b-products",
            get(|| async { "b" }).layer(cached(Some(b_backend.clone()), None)),
        )
        .route(
            "/r13-app-b-purge",
            post(|cache: CacheBackend| async move {
                cache
                    .clear()
                    .await
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            }),
        )
        .layer(axum::Extension(CacheBackend::new(b_backend.clone())));
    let stored = send(&app_b, get_req("/r13-app-b-products")).await;
    assert_eq!(stored.status, StatusCode::OK);
    let purge = send(
        &app_b,
        Request::post("/r13-app-b-purge")
            .header(header::HOST, "shop.example")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(purge.status, StatusCode::OK);
    assert_eq!(purge.text(), "1", "app B's own store was cleared");
}

/// Spec §4: "monitoring receives a handle (`Registry`) to what it watches,
/// so two apps, or two tests, in one process do not mix."
///
/// App B registers its layer (with its own backend) in its registry and
/// mounts `Monitoring::new(..).registry(&registry)`, as the README shows.
/// The listing and `clear-path` routes still go to
/// `BackendProxy::global()`'s store — app A's — not to the store of the
/// layers in the registry: B's monitoring shows app A's entries, does not
/// show B's own, and its `clear-path` empties app A's cache.
#[tokio::test]
async fn monitoring_with_a_registry_inspects_that_registrys_layers_not_the_global_store() {
    // App A: zero configuration (global proxy), stores one entry.
    let app_a = Router::new().route(
        "/r13-mon-a-only",
        get(|| async { "a" }).layer(cached(None, None)),
    );
    let _ = send(&app_a, get_req("/r13-mon-a-only")).await;

    // App B: own backend, own registry, own monitoring.
    let registry = Registry::new();
    let b_backend: Arc<dyn Backend> = mem();
    let app_b = Router::new().route(
        "/r13-mon-b-only",
        get(|| async { "b" }).layer(cached(Some(b_backend.clone()), Some(&registry))),
    );
    let app_b = Monitoring::new(Guard::bearer(TOKEN))
        .registry(&registry)
        .add_to(app_b, "/_cache");
    let stored = send(&app_b, get_req("/r13-mon-b-only")).await;
    assert!(
        stored.header("cache-status").contains("stored"),
        "{}",
        stored.header("cache-status")
    );

    let listing = send(&app_b, authed("GET", "/_cache/cached-hits?limit=1000")).await;
    assert_eq!(listing.status, StatusCode::OK, "{}", listing.text());
    assert!(
        listing.text().contains("r13-mon-b-only"),
        "app B's monitoring (given app B's registry) does not list app B's stored \
         entry; it lists the process-wide proxy's store instead: {}",
        listing.text()
    );
    assert!(
        !listing.text().contains("r13-mon-a-only"),
        "app B's monitoring lists app A's entries: {}",
        listing.text()
    );

    let cleared = send(
        &app_b,
        authed("POST", "/_cache/clear-path?path=/r13-mon-b-only"),
    )
    .await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.text());
    let after = send(&app_b, get_req("/r13-mon-b-only")).await;
    assert!(
        !after.header("cache-status").contains("hit"),
        "clear-path on app B's monitoring left app B's entry in place: {}",
        after.header("cache-status")
    );
}

/// Spec §4: "no panics in builders"; product rule: "bad input gets a clear
/// error". The README's monitoring example reads the token from the
/// environment (`Guard::bearer(token)`); an unset/empty variable panics
/// the process at startup instead of returning an error the app can
/// report.
#[test]
fn monitoring_guard_with_an_empty_token_is_an_error_not_a_panic() {
    let outcome = std::panic::catch_unwind(|| {
        let _ = Guard::bearer(String::new());
    });
    assert!(
        outcome.is_ok(),
        "Guard::bearer(\"\") panicked instead of returning a configuration error"
    );
}

/// Spec §1: "The HTTP cache writes under its own sub-namespace, so
/// `CacheBackend::clear()` can never wipe sessions sharing the store";
/// product rule: "bad input gets a clear error and loses nothing".
///
/// `SessionConfig::builder(..).backend_key_prefix("http:")` is accepted
/// (its validation checks only emptiness and whitespace), so sessions land
/// in the HTTP cache's namespace and an admin's `CacheBackend::clear()`
/// logs every user out.
#[tokio::test]
async fn session_prefix_inside_the_http_namespace_is_refused_or_survives_cache_clear() {
    let Ok(config) = SessionConfig::builder(SECRET.to_owned())
        .backend_key_prefix("http:")
        .build()
    else {
        return; // refused with a clear error: nothing can be lost
    };
    let store: Arc<dyn Backend> = mem();
    let sessions = SessionManager::new(store.clone(), config);
    let (_, token) = sessions
        .create_session(SessionUser::new("alice"), None, None, None)
        .await
        .expect("session");
    sessions
        .get_session(&token, None, None)
        .await
        .expect("the session loads before the clear");

    let removed = CacheBackend::new(store).clear().await.expect("clear");
    let after = sessions.get_session(&token, None, None).await;
    assert!(
        after.is_ok(),
        "CacheBackend::clear() removed {removed} value(s) and wiped a session sharing \
         the store: {after:?}"
    );
}

/// Same rule for the application cache: `CacheManager::builder(..)
/// .key_prefix("http:")` passes validation, and the HTTP cache's `clear()`
/// then deletes application values it never wrote.
#[tokio::test]
async fn app_cache_prefix_inside_the_http_namespace_is_refused_or_survives_cache_clear() {
    let store: Arc<dyn Backend> = mem();
    let Ok(app_cache) = CacheManager::builder(store.clone())
        .key_prefix("http:")
        .build()
    else {
        return;
    };
    app_cache
        .set("report", &vec![1u32, 2, 3], None)
        .await
        .expect("set");
    let removed = CacheBackend::new(store).clear().await.expect("clear");
    assert_eq!(
        app_cache.get::<Vec<u32>>("report").await.expect("get"),
        Some(vec![1, 2, 3]),
        "CacheBackend::clear() removed {removed} value(s), among them an application \
         cache value sharing the store"
    );
}

/// A third-party store, as "Write your own backend" describes, whose
/// `replace` treats an expired value as present: it brings an expired
/// record back to life (a late session save after the session's TTL ran
/// out resurrects it — exactly what `replace` exists to prevent).
#[derive(Debug, Default)]
struct ResurrectingStore {
    map: Mutex<HashMap<String, (Bytes, Option<Instant>)>>,
}

fn expiry(ttl: Option<Duration>) -> Option<Instant> {
    ttl.map(|t| Instant::now() + t)
}

fn live(entry: &(Bytes, Option<Instant>)) -> bool {
    entry.1.is_none_or(|at| at > Instant::now())
}

#[async_trait]
impl Backend for ResurrectingStore {
    fn name(&self) -> &'static str {
        "resurrecting"
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let map = self.map.lock().unwrap();
        Ok(map.get(key).filter(|e| live(e)).map(|e| e.0.clone()))
    }
    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        self.map
            .lock()
            .unwrap()
            .insert(key.to_owned(), (value, expiry(ttl)));
        Ok(())
    }
    async fn add(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let mut map = self.map.lock().unwrap();
        if map.get(key).is_some_and(live) {
            return Ok(false);
        }
        map.insert(key.to_owned(), (value, expiry(ttl)));
        Ok(true)
    }
    async fn replace(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        // The defect: "present" ignores expiry.
        let mut map = self.map.lock().unwrap();
        if !map.contains_key(key) {
            return Ok(false);
        }
        map.insert(key.to_owned(), (value, expiry(ttl)));
        Ok(true)
    }
    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let mut map = self.map.lock().unwrap();
        Ok(map.remove(key).filter(live).map(|e| e.0))
    }
    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let mut map = self.map.lock().unwrap();
        Ok(map.remove(key).is_some_and(|e| live(&e)))
    }
}

/// Spec §1: "The conformance suite is published for third parties"; README:
/// the suite checks "`add`/`replace` conditions". It checks `add` over an
/// expired value but never `replace` over one, so a store whose `replace`
/// resurrects expired records passes the published suite.
#[tokio::test]
async fn conformance_suite_rejects_a_store_whose_replace_resurrects_expired_values() {
    let store = ResurrectingStore::default();
    // The defect is real: an expired value comes back through `replace`.
    store
        .set("k", Bytes::from_static(b"old"), Some(Duration::ZERO))
        .await
        .unwrap();
    assert!(store.get("k").await.unwrap().is_none());
    assert!(
        store
            .replace("k", Bytes::from_static(b"late"), None)
            .await
            .unwrap()
    );
    assert!(store.get("k").await.unwrap().is_some(), "resurrected");
    store.delete("k").await.unwrap();

    let report = axum_cachex_core::conformance::Suite::new(&store)
        .run()
        .await;
    assert!(
        report.is_err(),
        "the published conformance suite passed a store whose `replace` brings an \
         expired value back to life: {report:?}"
    );
}

/// README wiring, guard: one `Arc<dyn Backend>` with namespaces; the
/// layer's `clear()` leaves the application cache and OAuth states alone.
// PASSES: guard
#[tokio::test]
async fn readme_wiring_clear_touches_only_responses() {
    let root = MemoryBackend::new();
    let http: Arc<dyn Backend> = Arc::new(root.namespace("http:"));
    let data: Arc<dyn Backend> = Arc::new(root.namespace("data:"));
    let layer = cached(Some(http.clone()), None);
    let app_cache = CacheManager::new(data.clone());
    app_cache.set("v", &1u8, None).await.expect("set");
    let app = Router::new()
        .route("/r13-wired", get(|| async { "x" }).layer(layer.clone()))
        .layer(Extension(app_cache.clone()));
    let _ = send(&app, get_req("/r13-wired")).await;
    assert_eq!(layer.clear().await.expect("clear"), 1);
    assert_eq!(app_cache.get::<u8>("v").await.expect("get"), Some(1));
}
