//! Red-team tests, round 10: the per-key invalidation counts
//! (shared.rs `Invalidations`, flow.rs `Pending::outdated`) against every
//! way the crate offers to invalidate a URL.

use super::support::*;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
    routing::{get, post},
};
use axum_cachex::{CacheBackend, CacheLayer, ManualClock};

/// Lets spawned work (stores) run.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

fn post_req(uri: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::HOST, "shop.example")
        .body(Body::empty())
        .expect("request")
}

/// A list whose GET reads the current version, then (when `hold` is
/// armed) waits at a gate before answering: a slow database read.
#[derive(Clone, Default)]
struct List {
    version: Arc<AtomicUsize>,
    hold: Arc<AtomicBool>,
    entered: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Notify>,
}

impl List {
    fn get_route(&self) -> axum::routing::MethodRouter {
        let r = self.clone();
        get(move || {
            let r = r.clone();
            async move {
                let v = r.version.load(Ordering::SeqCst);
                if r.hold.swap(false, Ordering::SeqCst) {
                    r.entered.notify_one();
                    r.gate.notified().await;
                }
                format!("v{v}")
            }
        })
    }

    /// Starts a GET of `uri` that reads the current version and then
    /// waits at the gate.
    async fn start_slow_get(
        &self,
        app: &Router,
        uri: &'static str,
    ) -> tokio::task::JoinHandle<Got> {
        self.hold.store(true, Ordering::SeqCst);
        let entered = self.entered.notified();
        let app = app.clone();
        let task = tokio::spawn(async move { send(&app, get_req(uri)).await });
        tokio::time::timeout(HANG, entered)
            .await
            .expect("handler never ran");
        task
    }

    /// Lets the slow GET answer (with what it read before the write).
    async fn finish_slow_get(&self, task: tokio::task::JoinHandle<Got>) {
        self.gate.notify_one();
        let first = tokio::time::timeout(HANG, task).await.unwrap().unwrap();
        assert_eq!(first.text(), "v0", "the slow GET read before the write");
        settle().await;
    }
}

fn layer(clock: &ManualClock, backend: Arc<axum_cachex::backend::MemoryBackend>) -> CacheLayer {
    CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(backend)
        .clock(clock.clock())
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// RFC 9111 §4.4 and the crate's invalidation API: once a URL has been
// invalidated, a response read before the invalidation is not stored.
// ---------------------------------------------------------------------------

/// BUG: `CacheLayer::invalidate` only deletes the key from the backend;
/// it does not bump `shared.invalidations`. A miss of the same URL whose
/// handler read the data before the write (and before the invalidation)
/// is still in flight; it stores its pre-write response after the
/// invalidation, and that stale body is served as a fresh hit for a whole
/// ttl. The generation guard added for unsafe requests is bypassed by the
/// crate's own public invalidation call.
/// src/cache/layer.rs `CacheLayer::invalidate` (no `invalidations.key`).
#[tokio::test]
async fn rule9111_4_4_layer_invalidate_does_not_stop_inflight_miss() {
    let clock = ManualClock::new();
    let cache = layer(&clock, mem());
    let list = List::default();
    let app = Router::new().route("/items", list.get_route().layer(cache.clone()));

    let slow = list.start_slow_get(&app, "/items").await;
    // The write, then the documented invalidation of the URL.
    list.version.store(1, Ordering::SeqCst);
    cache.invalidate(&get_req("/items")).await.unwrap();
    list.finish_slow_get(slow).await;

    let after = send(&app, get_req("/items")).await;
    assert_eq!(
        after.text(),
        "v1",
        "GET after CacheLayer::invalidate got the pre-write response ({:?})",
        after.header("cache-status"),
    );
}

/// BUG: the same through the handler-side extractor: a POST handler for
/// `/items/{id}` writes and calls `CacheBackend::invalidate(GET /items)`
/// (the use the extractor documents). The layer bumps the counts only
/// for the POST's own URI (`/items/1`), not for what the handler
/// invalidated, so a concurrent miss of `/items` that read the old list
/// stores it after the invalidation: the stale list is a hit afterwards.
/// src/cache/extract.rs `CacheBackend::invalidate` (a bare
/// `backend.delete`, no `invalidations.key`).
#[tokio::test]
async fn rule9111_4_4_handler_cache_backend_invalidate_does_not_stop_inflight_miss() {
    let clock = ManualClock::new();
    let cache = layer(&clock, mem());
    let list = List::default();
    let writer = list.clone();
    let app = Router::new()
        .route("/items", list.get_route())
        .route(
            "/items/{id}",
            post(move |cache: CacheBackend| {
                let w = writer.clone();
                async move {
                    w.version.store(1, Ordering::SeqCst);
                    // `Request<()>`: a `&Request<Body>` held across the
                    // await would make the handler's future non-Send.
                    let list_get = Request::get("/items")
                        .header(header::HOST, "shop.example")
                        .body(())
                        .unwrap();
                    cache.invalidate(&list_get).await.unwrap();
                    "updated"
                }
            }),
        )
        .layer(cache);

    let slow = list.start_slow_get(&app, "/items").await;
    assert_eq!(
        send(&app, post_req("/items/1")).await.status,
        StatusCode::OK
    );
    list.finish_slow_get(slow).await;

    let after = send(&app, get_req("/items")).await;
    assert_eq!(
        after.text(),
        "v1",
        "GET after the handler invalidated /items got the pre-write list ({:?})",
        after.header("cache-status"),
    );
}

/// BUG: `clear_path` reached through the extractor (the crate docs'
/// example: `cache.clear_path("/users", true)` after a write) bumps
/// nothing either: `CacheBackend` derefs straight to the `Backend`. A
/// concurrent miss of the path stores its pre-write body afterwards.
/// src/cache/extract.rs `impl Deref for CacheBackend` (clear_path /
/// delete / clear bypass `Shared::invalidations`).
#[tokio::test]
async fn rule9111_4_4_handler_clear_path_does_not_stop_inflight_miss() {
    let clock = ManualClock::new();
    let cache = layer(&clock, mem());
    let list = List::default();
    let writer = list.clone();
    let app = Router::new()
        .route("/users", list.get_route())
        .route(
            "/users/{id}/rename",
            post(move |cache: CacheBackend| {
                let w = writer.clone();
                async move {
                    w.version.store(1, Ordering::SeqCst);
                    cache.clear_path("/users", true).await.unwrap();
                    "updated"
                }
            }),
        )
        .layer(cache);

    let slow = list.start_slow_get(&app, "/users").await;
    assert_eq!(
        send(&app, post_req("/users/1/rename")).await.status,
        StatusCode::OK
    );
    list.finish_slow_get(slow).await;

    let after = send(&app, get_req("/users")).await;
    assert_eq!(
        after.text(),
        "v1",
        "GET after the handler cleared /users got the pre-write list ({:?})",
        after.header("cache-status"),
    );
}

/// BUG: the counts live in each layer's `Shared`, but keys live in the
/// backend all layers share. With one layer per route (different ttls,
/// one backend), a POST through the item route's layer whose `Location`
/// names `/items` deletes the list's entry (same key) but bumps only its
/// own layer's stripe; the list layer's in-flight miss, which read the
/// list before the POST, stores it afterwards and serves it as a hit.
/// src/cache/shared.rs `Shared::invalidations` (per layer) / flow.rs
/// `unsafe_method`.
#[tokio::test]
async fn rule9111_4_4_location_invalidation_from_another_layer_does_not_stop_inflight_miss() {
    let clock = ManualClock::new();
    let backend = mem();
    let list_cache = layer(&clock, backend.clone());
    let item_cache = layer(&clock, backend.clone());
    let list = List::default();
    let writer = list.clone();
    let app = Router::new()
        .route("/items", list.get_route().layer(list_cache))
        .route(
            "/items/{id}/archive",
            post(move || {
                let w = writer.clone();
                async move {
                    w.version.store(1, Ordering::SeqCst);
                    (StatusCode::SEE_OTHER, [(header::LOCATION, "/items")], "")
                }
            })
            .layer(item_cache),
        );

    let slow = list.start_slow_get(&app, "/items").await;
    assert_eq!(
        send(&app, post_req("/items/1/archive")).await.status,
        StatusCode::SEE_OTHER
    );
    list.finish_slow_get(slow).await;

    let after = send(&app, get_req("/items")).await;
    assert_eq!(
        after.text(),
        "v1",
        "GET after the POST invalidated /items (Location) got the pre-POST list ({:?})",
        after.header("cache-status"),
    );
}
