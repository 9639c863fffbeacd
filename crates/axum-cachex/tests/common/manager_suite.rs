//! Behaviour suite of the OAuth state manager and the application cache,
//! run on every backend by `manager_suite!(factory)` (see
//! `tests/state_and_app_cache.rs`).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use axum_cachex::{
    ManualClock,
    app_cache::{CacheError, CacheManager, DistributedLock},
    backend::{Backend, BackendError, CompareAndSwap, Listing, PathInvalidation},
    state::{InvalidStateReason, StateError, StateManager},
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Barrier, watch};

/// Generates one `#[tokio::test]` per suite function for a backend factory
/// (an `async fn() -> Option<Arc<dyn Backend>>`; `None` skips). Invoke it
/// inside a module per backend so the test names do not clash.
#[macro_export]
macro_rules! manager_suite {
    ($factory:path) => {
        $crate::manager_suite!(@emit $factory;
            state_round_trip_with_metadata,
            concurrent_consume_has_one_winner,
            expired_state_is_rejected_by_the_clock,
            expired_state_is_rejected_after_its_ttl,
            validate_and_metadata_do_not_consume,
            binding_mismatch_is_rejected_and_does_not_consume,
            concurrent_bound_consumers_cannot_burn_the_state,
            malformed_unknown_and_deleted_states,
            corrupt_record_is_reported_and_dropped,
            invalid_ttls_are_refused,
            state_prefix_is_configurable,
            cache_typed_round_trip_delete_and_has,
            cache_type_mismatch_is_a_miss,
            cache_ttls_expire,
            cache_clear_pattern_counts,
            get_or_set_runs_the_factory_once,
            get_or_set_shares_the_error_and_does_not_cache_it,
            get_or_set_survives_a_cancelled_leader,
            distributed_lock_runs_the_factory_once_across_instances,
            distributed_lock_waiter_takes_over_after_a_failure,
        );
    };
    (@emit $factory:path; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                if let Some(backend) = $factory().await {
                    $crate::manager_suite::$test(backend).await;
                }
            }
        )*
    };
}

// ---------------------------------------------------------------- helpers

/// Wraps a real backend and counts the reads, so a test can tell when every
/// concurrent caller has passed its first cache lookup. Everything else is
/// delegated unchanged.
#[derive(Debug)]
pub struct CountingBackend {
    inner: Arc<dyn Backend>,
    gets: AtomicUsize,
}

impl CountingBackend {
    pub fn new(inner: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            gets: AtomicUsize::new(0),
        })
    }
    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }
    /// Waits (yielding, no wall-clock limit) until at least `n` reads
    /// completed, then lets the readers run on to where they block.
    pub async fn wait_for_gets(&self, n: usize) {
        while self.gets() < n {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[async_trait]
impl Backend for CountingBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let r = self.inner.get(key).await;
        self.gets.fetch_add(1, Ordering::SeqCst);
        r
    }
    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        self.inner.set(key, value, ttl).await
    }
    async fn add(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.inner.add(key, value, ttl).await
    }
    async fn replace(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.inner.replace(key, value, ttl).await
    }
    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        self.inner.take(key).await
    }
    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        self.inner.delete(key).await
    }
    fn listing(&self) -> Option<&dyn Listing> {
        self.inner.listing()
    }
    fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
        self.inner.compare_and_swap()
    }
    fn path_invalidation(&self) -> Option<&dyn PathInvalidation> {
        self.inner.path_invalidation()
    }
}

/// A gate the factories wait on; once opened it stays open.
fn gate() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

async fn wait_open(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|open| *open).await;
}

fn is_url_safe(s: &str) -> bool {
    s.bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    id: u64,
    name: String,
    tags: Vec<String>,
}

fn profile(id: u64) -> Profile {
    Profile {
        id,
        name: format!("user {id}"),
        tags: vec!["a".into(), "b".into()],
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct FactoryError(&'static str);

// ------------------------------------------------------------ state tests

pub async fn state_round_trip_with_metadata(backend: Arc<dyn Backend>) {
    let states = StateManager::new(backend);
    let meta = json!({ "return_to": "/home", "pkce": "verifier", "n": [1, 2] });
    let ttl = Duration::from_secs(120);
    let state = states
        .create_state(Some(ttl), Some(meta.clone()))
        .await
        .expect("create");
    assert_eq!(state.len(), 43, "32 bytes as unpadded base64url");
    assert!(is_url_safe(&state), "{state}");
    let other = states.create_state(None, None).await.expect("create");
    assert_ne!(state, other);

    assert!(states.validate_state(&state).await.expect("validate"));
    let data = states.consume_state(&state).await.expect("consume");
    assert_eq!(data.state, state);
    assert_eq!(data.metadata, Some(meta));
    assert!(!data.is_bound());
    let lifetime = data
        .expires_at
        .duration_since(data.created_at)
        .expect("expires after creation");
    assert!(
        lifetime.abs_diff(ttl) < Duration::from_millis(1),
        "{lifetime:?}"
    );
    #[derive(Deserialize)]
    struct Meta {
        return_to: String,
    }
    assert_eq!(
        data.metadata_as::<Meta>().expect("typed").return_to,
        "/home"
    );

    let again = states.consume_state(&state).await;
    assert!(
        matches!(
            again,
            Err(StateError::Invalid {
                reason: InvalidStateReason::NotFound
            })
        ),
        "{again:?}"
    );
    assert!(!states.validate_state(&state).await.expect("validate"));

    // Default TTL and no metadata.
    let data = states.consume_state(&other).await.expect("consume");
    assert_eq!(data.metadata, None);
    assert_eq!(data.metadata_as::<Option<u8>>().expect("null"), None);
    let lifetime = data
        .expires_at
        .duration_since(data.created_at)
        .expect("after");
    assert!(lifetime.abs_diff(Duration::from_secs(600)) < Duration::from_millis(1));
}

pub async fn concurrent_consume_has_one_winner(backend: Arc<dyn Backend>) {
    let states = StateManager::new(backend);
    let state = states
        .create_state(None, Some(json!("x")))
        .await
        .expect("create");
    let barrier = Arc::new(Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (states, state, barrier) = (states.clone(), state.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                states.consume_state(&state).await
            })
        })
        .collect();
    let (mut won, mut invalid) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(data) => {
                assert_eq!(data.metadata, Some(json!("x")));
                won += 1;
            }
            Err(StateError::Invalid {
                reason: InvalidStateReason::NotFound,
            }) => invalid += 1,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!((won, invalid), (1, 49));
}

pub async fn expired_state_is_rejected_by_the_clock(backend: Arc<dyn Backend>) {
    let clock = ManualClock::new();
    let states = StateManager::builder(backend)
        .clock(clock.clock())
        .build()
        .expect("valid");
    let state = states
        .create_state(Some(Duration::from_secs(60)), Some(json!(1)))
        .await
        .expect("create");
    clock.advance(Duration::from_secs(59));
    assert!(states.validate_state(&state).await.expect("validate"));
    // Past the expiry (not *at* it: the record keeps times as floating-point
    // seconds, exact to about a microsecond).
    clock.advance(Duration::from_secs(2));
    assert!(!states.validate_state(&state).await.expect("validate"));
    assert_eq!(states.get_state_metadata(&state).await.expect("meta"), None);
    let err = states.consume_state(&state).await.expect_err("expired");
    assert!(matches!(err, StateError::Expired), "{err:?}");
    assert!(err.is_rejection());
    // Consuming an expired state removes it.
    let err = states.consume_state(&state).await.expect_err("gone");
    assert!(matches!(err, StateError::Invalid { .. }), "{err:?}");
}

pub async fn expired_state_is_rejected_after_its_ttl(backend: Arc<dyn Backend>) {
    let states = StateManager::new(backend);
    let state = states
        .create_state(Some(Duration::from_millis(1000)), None)
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!states.validate_state(&state).await.expect("validate"));
    // Expired by the clock, or already dropped by the backend's TTL.
    let err = states.consume_state(&state).await.expect_err("expired");
    assert!(
        matches!(err, StateError::Expired | StateError::Invalid { .. }),
        "{err:?}"
    );
}

pub async fn validate_and_metadata_do_not_consume(backend: Arc<dyn Backend>) {
    let states = StateManager::new(backend);
    let meta = json!({ "provider": "github" });
    let state = states
        .create_state(None, Some(meta.clone()))
        .await
        .expect("create");
    for _ in 0..3 {
        assert!(states.validate_state(&state).await.expect("validate"));
        assert_eq!(
            states.get_state_metadata(&state).await.expect("meta"),
            Some(meta.clone())
        );
    }
    let data = states.consume_state(&state).await.expect("still there");
    assert_eq!(data.metadata, Some(meta));
    assert_eq!(states.get_state_metadata(&state).await.expect("meta"), None);
}

fn is_mismatch<T: std::fmt::Debug>(r: &Result<T, StateError>) -> bool {
    matches!(
        r,
        Err(StateError::Invalid {
            reason: InvalidStateReason::BindingMismatch
        })
    )
}

pub async fn binding_mismatch_is_rejected_and_does_not_consume(backend: Arc<dyn Backend>) {
    let states = StateManager::new(backend);
    let state = states
        .create_bound_state("browser-a", None, Some(json!(7)))
        .await
        .expect("create");

    let r = states.consume_bound_state(&state, "browser-b").await;
    assert!(is_mismatch(&r), "{r:?}");
    let r = states.consume_bound_state(&state, "browser-").await;
    assert!(is_mismatch(&r), "prefix of the binding: {r:?}");
    let r = states.consume_state(&state).await;
    assert!(is_mismatch(&r), "unbound consume of a bound state: {r:?}");
    assert!(
        !states
            .validate_bound_state(&state, "browser-b")
            .await
            .expect("v")
    );
    assert!(!states.validate_state(&state).await.expect("v"));
    assert!(
        states
            .validate_bound_state(&state, "browser-a")
            .await
            .expect("v")
    );

    let data = states
        .consume_bound_state(&state, "browser-a")
        .await
        .expect("the right client still can");
    assert!(data.is_bound());
    assert_eq!(data.metadata, Some(json!(7)));

    // An unbound state is not consumed by a bound consume either.
    let unbound = states.create_state(None, None).await.expect("create");
    let r = states.consume_bound_state(&unbound, "browser-a").await;
    assert!(is_mismatch(&r), "{r:?}");
    states
        .consume_state(&unbound)
        .await
        .expect("unbound consume");
}

pub async fn concurrent_bound_consumers_cannot_burn_the_state(backend: Arc<dyn Backend>) {
    let states = StateManager::new(backend);
    let state = states
        .create_bound_state("cookie-1", None, None)
        .await
        .expect("create");
    let barrier = Arc::new(Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (states, state, barrier) = (states.clone(), state.clone(), Arc::clone(&barrier));
            // Even tasks are the legitimate client, odd ones an attacker
            // who has the state but not the cookie.
            let binding = if i % 2 == 0 { "cookie-1" } else { "cookie-2" };
            tokio::spawn(async move {
                barrier.wait().await;
                (
                    i % 2 == 0,
                    states.consume_bound_state(&state, binding).await,
                )
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        let (legit, r) = t.await.expect("task");
        if legit {
            match r {
                Ok(_) => won += 1,
                Err(StateError::Invalid {
                    reason: InvalidStateReason::NotFound,
                }) => {}
                Err(e) => panic!("legit client: {e:?}"),
            }
        } else {
            // Mismatch while the state exists, not found once it is used.
            assert!(matches!(r, Err(StateError::Invalid { .. })), "{r:?}");
        }
    }
    assert_eq!(won, 1);
}

pub async fn malformed_unknown_and_deleted_states(backend: Arc<dyn Backend>) {
    let states = StateManager::new(backend);
    let long = "a".repeat(129);
    for bad in ["", "has space", "../etc", "a\nb", "é", long.as_str()] {
        let r = states.consume_state(bad).await;
        assert!(
            matches!(
                r,
                Err(StateError::Invalid {
                    reason: InvalidStateReason::Malformed
                })
            ),
            "{bad:?}: {r:?}"
        );
        assert!(!states.validate_state(bad).await.expect("validate"));
        assert_eq!(states.get_state_metadata(bad).await.expect("meta"), None);
        assert!(!states.delete_state(bad).await.expect("delete"));
    }
    let unknown = "A".repeat(43);
    let r = states.consume_state(&unknown).await;
    assert!(
        matches!(
            r,
            Err(StateError::Invalid {
                reason: InvalidStateReason::NotFound
            })
        ),
        "{r:?}"
    );
    assert!(!states.delete_state(&unknown).await.expect("delete"));

    let state = states.create_state(None, None).await.expect("create");
    assert!(states.delete_state(&state).await.expect("delete"));
    assert!(!states.delete_state(&state).await.expect("delete"));
    assert!(states.consume_state(&state).await.is_err());
}

pub async fn corrupt_record_is_reported_and_dropped(backend: Arc<dyn Backend>) {
    let states = StateManager::new(Arc::clone(&backend));
    let key = "oauth_state:corrupt_state_1";
    backend
        .set(
            key,
            Bytes::from_static(b"\xff not json"),
            Some(Duration::from_secs(60)),
        )
        .await
        .expect("set");
    assert!(
        !states
            .validate_state("corrupt_state_1")
            .await
            .expect("validate")
    );
    let r = states.get_state_metadata("corrupt_state_1").await;
    assert!(matches!(r, Err(StateError::Corrupt { .. })), "{r:?}");
    let err = states
        .consume_state("corrupt_state_1")
        .await
        .expect_err("corrupt");
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "keeps the source"
    );
    assert_eq!(backend.get(key).await.expect("get"), None, "dropped");

    // A record with an impossible timestamp is corrupt, not a panic.
    backend
        .set(
            "oauth_state:corrupt_state_2",
            Bytes::from_static(
                br#"{"state":"corrupt_state_2","created_at":-1e300,"expires_at":1e300,"metadata":null}"#,
            ),
            Some(Duration::from_secs(60)),
        )
        .await
        .expect("set");
    let err = states
        .consume_state("corrupt_state_2")
        .await
        .expect_err("corrupt");
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
}

pub async fn invalid_ttls_are_refused(backend: Arc<dyn Backend>) {
    let states = StateManager::new(backend);
    let r = states.create_state(Some(Duration::ZERO), None).await;
    assert!(matches!(r, Err(StateError::InvalidTtl(_))), "{r:?}");
    let r = states.create_state(Some(Duration::MAX), None).await;
    assert!(matches!(r, Err(StateError::InvalidTtl(_))), "{r:?}");
}

pub async fn state_prefix_is_configurable(backend: Arc<dyn Backend>) {
    let states = StateManager::builder(Arc::clone(&backend))
        .key_prefix("login_state:")
        .build()
        .expect("valid");
    let state = states.create_state(None, None).await.expect("create");
    assert!(
        backend
            .get(&format!("login_state:{state}"))
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        backend
            .get(&format!("oauth_state:{state}"))
            .await
            .expect("get")
            .is_none()
    );
    // Another prefix is another set of states.
    let default = StateManager::new(Arc::clone(&backend));
    assert!(!default.validate_state(&state).await.expect("validate"));
    states.consume_state(&state).await.expect("consume");
}

// ------------------------------------------------------- app cache tests

pub async fn cache_typed_round_trip_delete_and_has(backend: Arc<dyn Backend>) {
    let cache = CacheManager::new(Arc::clone(&backend));
    assert_eq!(cache.get::<Profile>("p1").await.expect("get"), None);
    assert!(!cache.has("p1").await.expect("has"));

    cache.set("p1", &profile(1), None).await.expect("set");
    assert_eq!(
        cache.get::<Profile>("p1").await.expect("get"),
        Some(profile(1))
    );
    assert!(cache.has("p1").await.expect("has"));
    assert!(
        backend.get("cache:p1").await.expect("raw").is_some(),
        "prefixed"
    );

    cache.set("n", &42u64, None).await.expect("set");
    cache.set("s", "text", None).await.expect("set unsized");
    cache
        .set("v", &json!({"a": [1, 2]}), None)
        .await
        .expect("set");
    assert_eq!(cache.get::<u64>("n").await.expect("get"), Some(42));
    assert_eq!(
        cache.get::<String>("s").await.expect("get").as_deref(),
        Some("text")
    );
    assert_eq!(
        cache.get::<serde_json::Value>("v").await.expect("get"),
        Some(json!({"a": [1, 2]}))
    );

    cache.set("p1", &profile(2), None).await.expect("overwrite");
    assert_eq!(
        cache.get::<Profile>("p1").await.expect("get"),
        Some(profile(2))
    );

    assert!(cache.delete("p1").await.expect("delete"));
    assert!(!cache.delete("p1").await.expect("delete again"));
    assert!(!cache.has("p1").await.expect("has"));

    // A map with non-string keys cannot be JSON: a typed error.
    let mut bad = std::collections::HashMap::new();
    bad.insert((1, 2), 3);
    let r = cache.set("bad", &bad, None).await;
    assert!(matches!(r, Err(CacheError::Serialize { .. })), "{r:?}");
}

pub async fn cache_type_mismatch_is_a_miss(backend: Arc<dyn Backend>) {
    let cache = CacheManager::new(backend);
    cache.set("k", "not a number", None).await.expect("set");
    assert_eq!(cache.get::<u64>("k").await.expect("get"), None);
    assert_eq!(cache.get::<Profile>("k").await.expect("get"), None);
    assert!(cache.has("k").await.expect("has"), "has ignores the type");

    let calls = AtomicUsize::new(0);
    let v = cache
        .get_or_set(
            "k",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, FactoryError>(7u64)
            },
            None,
        )
        .await
        .expect("factory value");
    assert_eq!((v, calls.load(Ordering::SeqCst)), (7, 1));
    assert_eq!(
        cache.get::<u64>("k").await.expect("get"),
        Some(7),
        "overwritten"
    );
}

pub async fn cache_ttls_expire(backend: Arc<dyn Backend>) {
    let cache = CacheManager::builder(Arc::clone(&backend))
        .default_ttl(Duration::from_secs(1))
        .build()
        .expect("valid");
    cache.set("default", &1u8, None).await.expect("set");
    cache
        .set("explicit", &2u8, Some(Duration::from_secs(1)))
        .await
        .expect("set");
    cache
        .set("long", &3u8, Some(Duration::from_secs(60)))
        .await
        .expect("set");
    let v = cache
        .get_or_set("computed", || async { Ok::<_, FactoryError>(4u8) }, None)
        .await
        .expect("value");
    assert_eq!(v, 4);
    assert!(cache.has("computed").await.expect("has"));
    // Memcached counts TTLs in whole seconds, so allow one more.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(cache.get::<u8>("default").await.expect("get"), None);
    assert_eq!(cache.get::<u8>("explicit").await.expect("get"), None);
    assert_eq!(cache.get::<u8>("computed").await.expect("get"), None);
    assert_eq!(cache.get::<u8>("long").await.expect("get"), Some(3));

    // A zero TTL stores nothing and removes the old value.
    cache
        .set("long", &5u8, Some(Duration::ZERO))
        .await
        .expect("set");
    assert!(!cache.has("long").await.expect("has"));
}

pub async fn cache_clear_pattern_counts(backend: Arc<dyn Backend>) {
    let cache = CacheManager::new(Arc::clone(&backend));
    for key in ["user:1", "user:2", "user:10", "user:1:posts", "post:1"] {
        cache.set(key, &key, None).await.expect("set");
    }
    // Same names outside the cache's prefix are not the cache's.
    backend
        .set("user:3", Bytes::from_static(b"\"raw\""), None)
        .await
        .expect("set");
    let other = CacheManager::builder(Arc::clone(&backend))
        .key_prefix("other:")
        .build()
        .expect("valid");
    other.set("user:1", &1, None).await.expect("set");

    if backend.listing().is_none() {
        let r = cache.clear_pattern("user:*").await;
        assert!(
            matches!(
                r,
                Err(CacheError::Backend {
                    source: BackendError::Unsupported { .. }
                })
            ),
            "{r:?}"
        );
        return;
    }
    assert_eq!(cache.clear_pattern("user:?").await.expect("clear"), 2);
    assert!(cache.has("user:10").await.expect("has"));
    assert_eq!(cache.clear_pattern("user:*").await.expect("clear"), 2);
    assert_eq!(cache.clear_pattern("user:*").await.expect("clear"), 0);
    assert!(cache.has("post:1").await.expect("has"));
    assert!(other.has("user:1").await.expect("has"));
    assert!(backend.get("user:3").await.expect("get").is_some());
    assert_eq!(cache.clear_pattern("*").await.expect("clear"), 1);
    assert!(!cache.has("post:1").await.expect("has"));
}

pub async fn get_or_set_runs_the_factory_once(backend: Arc<dyn Backend>) {
    let counting = CountingBackend::new(backend);
    let cache = CacheManager::new(counting.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let (open, gate_rx) = gate();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, calls, gate_rx) = (cache.clone(), Arc::clone(&calls), gate_rx.clone());
            tokio::spawn(async move {
                cache
                    .get_or_set(
                        "hot",
                        || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            wait_open(gate_rx).await;
                            Ok::<_, FactoryError>(profile(9))
                        },
                        Some(Duration::from_secs(60)),
                    )
                    .await
            })
        })
        .collect();
    // 100 first lookups plus the leader's second one: everybody has missed
    // and joined the flight.
    counting.wait_for_gets(101).await;
    assert_eq!(cache.flights_in_progress(), 1);
    open.send_replace(true);
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("value"), profile(9));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.flights_in_progress(), 0);
    assert_eq!(
        cache.get::<Profile>("hot").await.expect("get"),
        Some(profile(9))
    );
    // A hit does not run the factory.
    let v = cache
        .get_or_set(
            "hot",
            || async { Err::<Profile, _>(FactoryError("must not run")) },
            None,
        )
        .await
        .expect("hit");
    assert_eq!(v, profile(9));
}

pub async fn get_or_set_shares_the_error_and_does_not_cache_it(backend: Arc<dyn Backend>) {
    let counting = CountingBackend::new(backend);
    let cache = CacheManager::new(counting.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let (open, gate_rx) = gate();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, calls, gate_rx) = (cache.clone(), Arc::clone(&calls), gate_rx.clone());
            tokio::spawn(async move {
                cache
                    .get_or_set(
                        "flaky",
                        || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            wait_open(gate_rx).await;
                            Err::<u64, _>(FactoryError("upstream down"))
                        },
                        None,
                    )
                    .await
            })
        })
        .collect();
    counting.wait_for_gets(101).await;
    open.send_replace(true);
    let mut errors = Vec::new();
    for t in tasks {
        errors.push(t.await.expect("task").expect_err("shared error"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(errors.iter().all(|e| **e == FactoryError("upstream down")));
    assert!(
        errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])),
        "every waiter gets the same Arc"
    );
    assert!(
        !cache.has("flaky").await.expect("has"),
        "errors are not cached"
    );
    assert_eq!(cache.flights_in_progress(), 0);

    let v = cache
        .get_or_set(
            "flaky",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, FactoryError>(5u64)
            },
            None,
        )
        .await
        .expect("second try runs the factory again");
    assert_eq!((v, calls.load(Ordering::SeqCst)), (5, 2));
    assert_eq!(cache.get::<u64>("flaky").await.expect("get"), Some(5));
}

pub async fn get_or_set_survives_a_cancelled_leader(backend: Arc<dyn Backend>) {
    let counting = CountingBackend::new(backend);
    let cache = CacheManager::new(counting.clone());
    let leader_started = Arc::new(tokio::sync::Notify::new());
    let leader = {
        let (cache, started) = (cache.clone(), Arc::clone(&leader_started));
        tokio::spawn(async move {
            cache
                .get_or_set(
                    "slow",
                    || async move {
                        started.notify_one();
                        std::future::pending::<()>().await;
                        Ok::<_, FactoryError>(1u64)
                    },
                    None,
                )
                .await
        })
    };
    leader_started.notified().await;
    let gets_before = counting.gets();
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_set("slow", || async { Ok::<_, FactoryError>(2u64) }, None)
                .await
        })
    };
    counting.wait_for_gets(gets_before + 1).await;
    assert!(!follower.is_finished(), "waits for the leader");
    leader.abort();
    assert!(leader.await.expect_err("aborted").is_cancelled());
    assert_eq!(follower.await.expect("task").expect("value"), 2);
    assert_eq!(cache.flights_in_progress(), 0);
    assert_eq!(cache.get::<u64>("slow").await.expect("get"), Some(2));
}

fn locked(backend: &Arc<dyn Backend>) -> CacheManager {
    CacheManager::builder(Arc::clone(backend))
        .distributed_lock(
            DistributedLock::new()
                .lock_ttl(Duration::from_secs(2))
                .max_wait(Duration::from_secs(120))
                .poll_interval(Duration::from_millis(10)),
        )
        .build()
        .expect("valid")
}

pub async fn distributed_lock_runs_the_factory_once_across_instances(backend: Arc<dyn Backend>) {
    // Four managers over one backend stand for four server instances: each
    // has its own in-process coalescing, only the lock spans them.
    let instances: Vec<CacheManager> = (0..4).map(|_| locked(&backend)).collect();
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(tokio::sync::Notify::new());
    let (open, gate_rx) = gate();
    let call = |cache: CacheManager| {
        let (calls, started, gate_rx) = (Arc::clone(&calls), Arc::clone(&started), gate_rx.clone());
        tokio::spawn(async move {
            cache
                .get_or_set(
                    "shared",
                    || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        started.notify_one();
                        wait_open(gate_rx).await;
                        Ok::<_, FactoryError>(profile(3))
                    },
                    Some(Duration::from_secs(60)),
                )
                .await
        })
    };
    let mut tasks = vec![call(instances[0].clone())];
    started.notified().await;
    for cache in &instances {
        for _ in 0..10 {
            tasks.push(call(cache.clone()));
        }
    }
    // Let the other instances reach their polling loop (correctness does
    // not depend on it: a late caller finds the value).
    tokio::time::sleep(Duration::from_millis(100)).await;
    open.send_replace(true);
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("value"), profile(3));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for cache in &instances {
        assert_eq!(cache.flights_in_progress(), 0);
    }
}

pub async fn distributed_lock_waiter_takes_over_after_a_failure(backend: Arc<dyn Backend>) {
    let (a, b) = (locked(&backend), locked(&backend));
    let started = Arc::new(tokio::sync::Notify::new());
    let (open, gate_rx) = gate();
    let leader = {
        let (started, a) = (Arc::clone(&started), a.clone());
        tokio::spawn(async move {
            a.get_or_set(
                "takeover",
                || async move {
                    started.notify_one();
                    wait_open(gate_rx).await;
                    Err::<u64, _>(FactoryError("leader failed"))
                },
                None,
            )
            .await
        })
    };
    started.notified().await;
    let follower = tokio::spawn(async move {
        b.get_or_set("takeover", || async { Ok::<_, FactoryError>(11u64) }, None)
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    open.send_replace(true);
    let err = leader.await.expect("task").expect_err("leader error");
    assert_eq!(*err, FactoryError("leader failed"));
    // The follower on the other instance takes the lock once it is released
    // (or, where the backend cannot release it, once it expires) and
    // computes the value itself.
    assert_eq!(follower.await.expect("task").expect("value"), 11);
    assert_eq!(a.get::<u64>("takeover").await.expect("get"), Some(11));
}
