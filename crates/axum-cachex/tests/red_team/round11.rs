//! Round 11: the redesigned backend contract (core trait + abilities, the
//! `http:` namespace, the published conformance suite, the one distributed
//! lock, the memory backend's injectable clock).
//!
//! Every test here FAILS on the code it was written against, because of a
//! defect named in its doc comment.

use super::support::*;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use axum::{Router, routing::get};
use axum_cachex::{
    CacheLayer, ManualClock,
    backend::{Backend, BackendError, CompareAndSwap, Listing, MemoryBackend, StoredValue},
};
use axum_cachex_core::conformance::Suite;
use bytes::Bytes;
use tokio::sync::Notify;

// ---------------------------------------------------------------------------
// A deliberately flawed third-party store, on virtual time, for the suite.
// ---------------------------------------------------------------------------

/// Which contract rule the store breaks.
#[derive(Debug, Default, Clone, Copy)]
struct Flaws {
    /// `add` and `replace` store the value without expiry, whatever the TTL.
    add_ignores_ttl: bool,
    /// `delete_if_equals` / `set_if_equals` compare against expired values
    /// too (the contract: "An expired value counts as absent").
    cas_sees_expired: bool,
    /// `set_if_equals` swaps the bytes but keeps the old expiry (the
    /// contract: "Replaces the value with `value` (and its TTL with `ttl`)").
    cas_keeps_old_ttl: bool,
}

type Items = HashMap<String, (Bytes, Option<Duration>)>;

#[derive(Debug)]
struct FlawedStore {
    flaws: Flaws,
    /// Virtual time since the store was made.
    now: Arc<Mutex<Duration>>,
    items: Mutex<Items>,
}

impl FlawedStore {
    fn new(flaws: Flaws) -> Self {
        Self {
            flaws,
            now: Arc::new(Mutex::new(Duration::ZERO)),
            items: Mutex::new(HashMap::new()),
        }
    }

    fn now(&self) -> Duration {
        *self.now.lock().unwrap()
    }

    fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }

    /// The suite with a sleep that moves the store's virtual clock: the
    /// TTL check runs, without waiting.
    fn suite(&self) -> Suite<'_> {
        let now = Arc::clone(&self.now);
        Suite::new(self).sleep(move |d| {
            *now.lock().unwrap() += d;
            Box::pin(std::future::ready(()))
        })
    }

    fn expiry(&self, ttl: Option<Duration>) -> Option<Duration> {
        ttl.map(|t| self.now() + t)
    }

    fn live(&self, items: &Items, key: &str) -> Option<Bytes> {
        let now = self.now();
        items
            .get(key)
            .filter(|(_, exp)| exp.is_none_or(|e| e > now))
            .map(|(v, _)| v.clone())
    }
}

#[async_trait]
impl Backend for FlawedStore {
    fn name(&self) -> &'static str {
        "flawed"
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        Ok(self.live(&self.items.lock().unwrap(), key))
    }
    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let exp = self.expiry(ttl);
        self.items
            .lock()
            .unwrap()
            .insert(key.to_owned(), (value, exp));
        Ok(())
    }
    async fn add(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let mut items = self.items.lock().unwrap();
        if self.live(&items, key).is_some() {
            return Ok(false);
        }
        let exp = if self.flaws.add_ignores_ttl {
            None
        } else {
            self.expiry(ttl)
        };
        items.insert(key.to_owned(), (value, exp));
        Ok(true)
    }
    async fn replace(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let mut items = self.items.lock().unwrap();
        if self.live(&items, key).is_none() {
            return Ok(false);
        }
        let exp = if self.flaws.add_ignores_ttl {
            None
        } else {
            self.expiry(ttl)
        };
        items.insert(key.to_owned(), (value, exp));
        Ok(true)
    }
    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let mut items = self.items.lock().unwrap();
        let v = self.live(&items, key);
        items.remove(key);
        Ok(v)
    }
    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let mut items = self.items.lock().unwrap();
        let v = self.live(&items, key);
        items.remove(key);
        Ok(v.is_some())
    }
    fn listing(&self) -> Option<&dyn Listing> {
        Some(self)
    }
    fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
        Some(self)
    }
}

#[async_trait]
impl Listing for FlawedStore {
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        Ok(self
            .entries(prefix)
            .await?
            .into_iter()
            .map(|e| e.key)
            .collect())
    }
    async fn entries(&self, prefix: &str) -> Result<Vec<StoredValue>, BackendError> {
        let now = self.now();
        let items = self.items.lock().unwrap();
        Ok(items
            .iter()
            .filter(|(k, (_, exp))| k.starts_with(prefix) && exp.is_none_or(|e| e > now))
            .map(|(k, (v, exp))| StoredValue {
                key: k.clone(),
                value: v.clone(),
                ttl_remaining: exp.map(|e| e - now),
            })
            .collect())
    }
}

#[async_trait]
impl CompareAndSwap for FlawedStore {
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError> {
        let mut items = self.items.lock().unwrap();
        let current = if self.flaws.cas_sees_expired {
            items.get(key).map(|(v, _)| v.clone())
        } else {
            self.live(&items, key)
        };
        if current.as_deref() == Some(expected) {
            items.remove(key);
            return Ok(true);
        }
        Ok(false)
    }
    async fn set_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let mut items = self.items.lock().unwrap();
        let current = if self.flaws.cas_sees_expired {
            items.get(key).cloned()
        } else {
            self.live(&items, key).map(|v| (v, items[key].1))
        };
        match current {
            Some((v, old_exp)) if v == expected => {
                let exp = if self.flaws.cas_keeps_old_ttl {
                    old_exp
                } else {
                    self.expiry(ttl)
                };
                items.insert(key.to_owned(), (value, exp));
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Control: the same store without flaws passes the suite with nothing
/// skipped, so the flawed runs below differ only by their flaw.
async fn control_passes() {
    let ok = FlawedStore::new(Flaws::default());
    let report = ok.suite().run().await.expect("the flawless store conforms");
    assert!(
        report
            .skipped
            .iter()
            .all(|(n, _)| *n == "path_invalidation"),
        "{report:?}"
    );
}

/// The published suite accepts a store whose `add` (and `replace`) ignore
/// the TTL. `ttl_expiry` only checks `set`; `add_only_when_absent` only uses
/// a zero TTL written with `set`. Yet the one distributed lock is an `add`
/// with a TTL ("The TTL bounds how long a crashed holder blocks others"): on
/// a store that passes the suite, a crashed holder's lock is permanent.
/// Violates: "Publish the conformance suite for third parties" / "a backend
/// honours the TTL passed" — conformance.rs `ttl_expiry` (line 287) tests
/// `set` only.
#[tokio::test]
async fn r11_suite_accepts_a_store_whose_add_ignores_ttl() {
    control_passes().await;
    let store = FlawedStore::new(Flaws {
        add_ignores_ttl: true,
        ..Flaws::default()
    });
    // The flaw is real: a lock taken with a 1 s TTL never expires.
    assert!(
        store
            .add(
                "lock:x",
                Bytes::from_static(b"t"),
                Some(Duration::from_secs(1))
            )
            .await
            .unwrap()
    );
    store.advance(Duration::from_secs(3600));
    assert!(store.get("lock:x").await.unwrap().is_some());
    store.delete("lock:x").await.unwrap();

    let verdict = store.suite().run().await;
    assert!(
        verdict.is_err(),
        "the suite passed a store whose add/replace never expire: {verdict:?}"
    );
}

/// The suite accepts a `CompareAndSwap` that matches expired values, although
/// the trait says "An expired value counts as absent": `set_if_equals` then
/// resurrects an expired value (a lock renewal of a lock another instance may
/// already hold by `add`). Neither `delete_if_equals` nor `set_if_equals`
/// checks run against an expired value. conformance.rs `delete_if_equals` /
/// `set_if_equals` (lines 469, 495).
#[tokio::test]
async fn r11_suite_accepts_a_cas_that_sees_expired_values() {
    control_passes().await;
    let store = FlawedStore::new(Flaws {
        cas_sees_expired: true,
        ..Flaws::default()
    });
    store
        .set("k", Bytes::from_static(b"a"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    store.advance(Duration::from_secs(2));
    assert!(store.get("k").await.unwrap().is_none());
    // The flaw: an expired value is swapped, and comes back.
    assert!(
        store
            .set_if_equals("k", b"a", Bytes::from_static(b"b"), None)
            .await
            .unwrap()
    );
    assert!(store.get("k").await.unwrap().is_some());
    store.delete("k").await.unwrap();

    let verdict = store.suite().run().await;
    assert!(
        verdict.is_err(),
        "the suite passed a compare-and-swap that treats expired values as present: {verdict:?}"
    );
}

/// The suite accepts a `set_if_equals` that ignores its `ttl` argument (keeps
/// the old expiry), although the trait says it replaces "the value with
/// `value` (and its TTL with `ttl`)": every `set_if_equals` check passes the
/// same 60 s TTL that `set` used. conformance.rs `set_if_equals`.
#[tokio::test]
async fn r11_suite_accepts_a_set_if_equals_that_ignores_ttl() {
    control_passes().await;
    let store = FlawedStore::new(Flaws {
        cas_keeps_old_ttl: true,
        ..Flaws::default()
    });
    store
        .set("k", Bytes::from_static(b"a"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(
        store
            .set_if_equals(
                "k",
                b"a",
                Bytes::from_static(b"b"),
                Some(Duration::from_secs(600))
            )
            .await
            .unwrap()
    );
    store.advance(Duration::from_secs(2));
    // The flaw: the value written with a 600 s TTL is gone after 2 s.
    assert!(store.get("k").await.unwrap().is_none());

    let verdict = store.suite().run().await;
    assert!(
        verdict.is_err(),
        "the suite passed a set_if_equals that keeps the old TTL: {verdict:?}"
    );
}

// ---------------------------------------------------------------------------
// Memory backend on an injected clock.
// ---------------------------------------------------------------------------

/// With an injected clock the memory backend still expires values by the
/// wall clock: the TTL is also handed to moka (`PerEntryTtl`), and moka's
/// reads hide entries past it by its own clock. A value whose TTL has not
/// passed on the injected clock vanishes once real time passes, so a test on
/// a stopped `ManualClock` is not deterministic. The comment on
/// `Stored::ttl` claims moka's TTL "only frees memory; reads go by
/// `expires_at`". backend/memory.rs:50-63 (`PerEntryTtl`), 160 (`expire_after`); README "Expiry follows an injectable clock … tests move time instead of sleeping".
#[tokio::test]
async fn r11_memory_backend_expires_by_wall_clock_despite_manual_clock() {
    let clock = ManualClock::new();
    let backend = MemoryBackend::builder()
        .clock(clock.clock())
        .build()
        .expect("valid");
    backend
        .set(
            "k",
            Bytes::from_static(b"v"),
            Some(Duration::from_millis(20)),
        )
        .await
        .unwrap();
    assert_eq!(backend.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    // The injected clock stands still; only real time passes.
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        backend.get("k").await.unwrap().as_deref(),
        Some(&b"v"[..]),
        "expired by the wall clock although the injected clock has not moved"
    );
}

// ---------------------------------------------------------------------------
// The HTTP cache's cross-instance lock lives outside its namespace.
// ---------------------------------------------------------------------------

/// Two app instances (two handles on one store; `Invalidations` tells them
/// apart by address, like two processes) with the cross-instance lock. A
/// miss on A holds `lock:http:GET|||…` while its handler runs; instance B
/// changes the data and calls `CacheLayer::clear_path("/p", true)`. The
/// design says an invalidation elsewhere deletes the lock so the run that
/// began before it does not store (`LockGuard::is_held`, flow.rs
/// `Pending::store`); an unsafe request does delete `lock:{key}`. But the
/// lock key is `lock:` + the stored key, outside `http:`, so `clear_path`,
/// `clear_pattern` and `clear` (which now only list/clear `http:`) never
/// reach it: A stores the response it read before the write, and B serves it.
/// Before the namespace, the lock key `lock:GET|||h|||/p|||` parsed as a key
/// of /p and went with the path. Violates "Behaviour of the HTTP cache is
/// unchanged" / RFC 9111 §4.4. cache/lock.rs:26 (`lock_key`), cache/purge.rs.
#[tokio::test]
async fn r11_clear_path_on_another_instance_leaves_the_lock_so_stale_is_stored() {
    let store = MemoryBackend::new();
    let inst_a: Arc<dyn Backend> = Arc::new(store.clone());
    let inst_b: Arc<dyn Backend> = Arc::new(store.clone());

    let version = Arc::new(AtomicUsize::new(1));
    let calls = counter();
    let entered = Arc::new(Notify::new());
    let gate = Arc::new(Notify::new());
    let handler = {
        let (version, calls, entered, gate) = (
            Arc::clone(&version),
            Arc::clone(&calls),
            Arc::clone(&entered),
            Arc::clone(&gate),
        );
        move || {
            let (version, calls, entered, gate) = (
                Arc::clone(&version),
                Arc::clone(&calls),
                Arc::clone(&entered),
                Arc::clone(&gate),
            );
            async move {
                let v = version.load(Ordering::SeqCst);
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    entered.notify_one();
                    gate.notified().await;
                }
                format!("v{v}")
            }
        }
    };
    let layer = |backend: &Arc<dyn Backend>| {
        CacheLayer::builder()
            .ttl(Duration::from_secs(300))
            .cross_instance_lock(Duration::from_secs(30))
            .backend(Arc::clone(backend))
            .build()
            .unwrap()
    };
    let (layer_a, layer_b) = (layer(&inst_a), layer(&inst_b));
    let app_a = Router::new().route("/p", get(handler.clone()).layer(layer_a));
    let app_b = Router::new().route("/p", get(handler).layer(layer_b.clone()));

    // Instance A misses and computes under the lock.
    let pending = tokio::spawn({
        let app_a = app_a.clone();
        async move { send(&app_a, get_req("/p")).await }
    });
    tokio::time::timeout(HANG, entered.notified())
        .await
        .expect("handler A never ran");

    // Instance B: the data changes, then the cache of /p is invalidated.
    version.store(2, Ordering::SeqCst);
    layer_b.clear_path("/p", true).await.unwrap();

    gate.notify_one();
    let first = pending.await.unwrap();
    assert_eq!(first.text(), "v1");

    let after = send(&app_b, get_req("/p")).await;
    assert_eq!(
        after.text(),
        "v2",
        "B serves what A read before B's clear_path: the lock outside `http:` survived the clear"
    );
}

/// The README's own guarantee, on a route cached per user: "a run under the
/// cross-instance lock checks that its lock (which the invalidation deletes
/// with the entry) is still its own before it stores". On a per-user route a
/// successful unsafe request invalidates by path (`Invalidation::Path` →
/// `purge::clear_path`), which lists only `http:`; the lock
/// `lock:http:u…@GET|||…` is outside it and stays. Instance A's run that read
/// before instance B's POST stores its response, and the user is served the
/// pre-write data. (Before the namespace, `lock:u…@GET|||h|||/p|||` parsed
/// as a key of /p and went with the path.) cache/lock.rs:26 (`lock_key`),
/// cache/flow.rs:200-201 (`Invalidation::Path` deletes no lock),
/// cache/purge.rs:83.
#[tokio::test]
async fn r11_per_user_post_on_another_instance_leaves_the_lock_so_stale_is_stored() {
    use axum::{body::Body, http::Request};
    let store = MemoryBackend::new();
    let inst_a: Arc<dyn Backend> = Arc::new(store.clone());
    let inst_b: Arc<dyn Backend> = Arc::new(store.clone());

    let version = Arc::new(AtomicUsize::new(1));
    let calls = counter();
    let entered = Arc::new(Notify::new());
    let gate = Arc::new(Notify::new());
    let read = {
        let (version, calls, entered, gate) = (
            Arc::clone(&version),
            Arc::clone(&calls),
            Arc::clone(&entered),
            Arc::clone(&gate),
        );
        move || {
            let (version, calls, entered, gate) = (
                Arc::clone(&version),
                Arc::clone(&calls),
                Arc::clone(&entered),
                Arc::clone(&gate),
            );
            async move {
                let v = version.load(Ordering::SeqCst);
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    entered.notify_one();
                    gate.notified().await;
                }
                format!("v{v}")
            }
        }
    };
    let write = {
        let version = Arc::clone(&version);
        move || {
            let version = Arc::clone(&version);
            async move {
                version.store(2, Ordering::SeqCst);
                "written"
            }
        }
    };
    let app = |backend: &Arc<dyn Backend>| {
        let layer = CacheLayer::builder()
            .ttl(Duration::from_secs(300))
            .private_per_user(|p: &axum::http::request::Parts| {
                p.headers
                    .get("x-test-user")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .cross_instance_lock(Duration::from_secs(30))
            .backend(Arc::clone(backend))
            .build()
            .unwrap();
        Router::new().route("/p", get(read.clone()).post(write.clone()).layer(layer))
    };
    let (app_a, app_b) = (app(&inst_a), app(&inst_b));
    let req = |method: &str| {
        Request::builder()
            .method(method)
            .uri("/p")
            .header("host", "shop.example")
            .header("x-test-user", "alice")
            .body(Body::empty())
            .unwrap()
    };

    let pending = tokio::spawn({
        let app_a = app_a.clone();
        let r = req("GET");
        async move { send(&app_a, r).await }
    });
    tokio::time::timeout(HANG, entered.notified())
        .await
        .expect("handler A never ran");

    let posted = send(&app_b, req("POST")).await;
    assert_eq!(posted.text(), "written");

    gate.notify_one();
    assert_eq!(pending.await.unwrap().text(), "v1");

    let after = send(&app_b, req("GET")).await;
    assert_eq!(
        after.text(),
        "v2",
        "alice is served what A read before her POST on B: the lock survived the path invalidation"
    );
}

// ---------------------------------------------------------------------------
// Memcached: entries under custom keys survive `clear`.
// ---------------------------------------------------------------------------

/// A layer with a custom key builder stores under `http:{custom key}`
/// (KeyBuilder docs: "other shapes can only be removed with `delete` or
/// `clear`"). On memory and Redis `CacheLayer::clear()` removes them (it
/// clears the namespace). On Memcached `clear` is `clear_cache`, a bump of
/// the generation counter, and only keys that parse as a `CacheKey` embed
/// it: the custom-keyed entry stays readable and is served after `clear()`.
/// The suite's `clear_cache_only_touches_the_cache` only seeds CacheKey-shaped
/// keys, so Memcached passes it. Violates "Removes (or makes unreachable)
/// every entry of the HTTP cache" (PathInvalidation::clear_cache).
/// backend/memcached/keys.rs:69 (`KeyNames::new` only parses),
/// memcached/mod.rs:750 (`clear_cache`).
#[cfg(feature = "memcached")]
#[tokio::test]
async fn r11_memcached_clear_leaves_custom_keyed_entries() {
    use axum_cachex::backend::MemcachedBackend;
    let Some(servers) = crate::common::memcached_servers() else {
        return;
    };
    let mc: Arc<dyn Backend> = Arc::new(
        MemcachedBackend::builder()
            .servers(servers)
            .key_prefix(crate::common::unique_prefix("r11clear"))
            .build()
            .unwrap(),
    );
    let memory: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    for backend in [memory, mc] {
        let calls = counter();
        let layer = CacheLayer::builder()
            .ttl(Duration::from_secs(300))
            .key_builder(|p: &axum::http::request::Parts| format!("custom:{}", p.uri.path()))
            .backend(Arc::clone(&backend))
            .build()
            .unwrap();
        let app = Router::new().route(
            "/x",
            get({
                let calls = Arc::clone(&calls);
                move || async move { format!("n{}", calls.fetch_add(1, Ordering::SeqCst)) }
            })
            .layer(layer.clone()),
        );
        assert_eq!(send(&app, get_req("/x")).await.text(), "n0");
        assert_eq!(
            send(&app, get_req("/x")).await.text(),
            "n0",
            "{}: stored",
            backend.name()
        );
        layer.clear().await.unwrap();
        assert_eq!(
            send(&app, get_req("/x")).await.text(),
            "n1",
            "{}: a response cached under a custom key was served after CacheLayer::clear()",
            backend.name()
        );
    }
}
