//! What every request of one layer shares: the validated options, what is
//! derived from them once, and the layer's live state.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
    time::Duration,
};

use axum_cachex_core::Backend;
use http::HeaderValue;

use super::{
    coalesce::Coalescer,
    config::{CacheLayerBuilder, Freshness},
    credentials::CredentialCheck,
    stats::{CacheStats, FailureLog},
};

/// The largest delta-seconds value a cache keeps (RFC 9111 §1.2.2).
const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// Everything a request needs, built once by
/// [`CacheLayerBuilder::build`].
pub(crate) struct Shared {
    /// The options as the builder validated them.
    pub(crate) options: CacheLayerBuilder,
    /// The `Cache-Control` the layer adds to responses without their own.
    pub(crate) cache_control: HeaderValue,
    /// The same with `private` and without what lets shared caches keep
    /// it: for responses to requests with credentials.
    pub(crate) private_cache_control: HeaderValue,
    /// The stale windows the options give.
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) credentials: CredentialCheck,
    pub(crate) refresh_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) stats: CacheStats,
    pub(crate) failures: FailureLog,
    pub(crate) inflight: Coalescer,
    /// Invalidations so far (process-wide, see [`Invalidations::get`]): a
    /// handler run that began before one of its key does not store its
    /// response.
    pub(crate) invalidations: &'static Invalidations,
    /// Name for reports: from the builder, or the first matched route.
    pub(crate) route: OnceLock<String>,
}

impl Shared {
    /// The shared part of a layer built from validated `options`.
    pub(crate) fn new(mut options: CacheLayerBuilder) -> Self {
        // Whole seconds, as `max-age` says: a fractional ttl must never
        // give a hit that is stale by its own headers.
        // Lifetimes past 2^31 seconds are that (RFC 9111 §1.2.2), so that
        // no sum of them can overflow.
        options.ttl = options
            .ttl
            .map(|t| Duration::from_secs(t.as_secs().min(MAX_DELTA_SECONDS)));
        for lifetime in [
            &mut options.s_maxage,
            &mut options.stale_ttl,
            &mut options.lock_ttl,
        ] {
            *lifetime = lifetime.map(|d| d.min(Duration::from_secs(MAX_DELTA_SECONDS)));
        }
        let route = OnceLock::new();
        if let Some(name) = options.name.take() {
            let _ = route.set(name);
        }
        Self {
            cache_control: options.render_cache_control(),
            private_cache_control: options.render_private_cache_control(),
            stale_while_revalidate: options.stale_while_revalidate(),
            stale_if_error: options.stale_if_error(),
            credentials: CredentialCheck::new(std::mem::take(&mut options.credentials)),
            refresh_slots: Arc::new(tokio::sync::Semaphore::new(options.max_refreshes)),
            stats: CacheStats::default(),
            failures: FailureLog::default(),
            inflight: Coalescer::default(),
            invalidations: Invalidations::get(),
            route,
            options,
        }
    }

    /// Names the layer after the first route it serves, unless named.
    pub(crate) fn name_route(&self, parts: &http::request::Parts) {
        if self.route.get().is_none() {
            if let Some(matched) = parts.extensions.get::<axum::extract::MatchedPath>() {
                let _ = self.route.set(matched.as_str().to_owned());
            }
        }
    }

    pub(crate) fn route_label(&self) -> String {
        self.route
            .get()
            .cloned()
            .unwrap_or_else(|| "unnamed".to_owned())
    }

    /// Whether responses are stored and served from the store: a ttl is
    /// set (or the response decides freshness), and the route is neither
    /// no-cache, no-store nor private (unless cached per user).
    pub(crate) fn stores(&self) -> bool {
        (self.options.ttl.is_some() || self.options.freshness == Freshness::FromResponse)
            && !self.options.no_cache
            && !self.options.no_store
            && (!self.options.private || self.options.per_user.is_some())
    }
}

/// Which keys were invalidated while a handler run for them was in flight
/// (RFC 9111 §4.4: a response read before an invalidation must not be
/// stored after it). Exact per backend and key (a 64-bit hash of both):
/// only runs of the invalidated key on that backend are affected, however
/// many writes go to other keys or other backends. Invalidations by path or
/// pattern reach every run on their backend.
///
/// A backend is told apart by its address, so the layers sharing one
/// `Arc<dyn Backend>` (or one [`BackendProxy`](crate::BackendProxy)) see
/// each other's invalidations; two separately built clients of one server
/// are like two app instances (see the cross-instance lock).
#[derive(Default)]
pub(crate) struct Invalidations {
    inflight: Mutex<HashMap<u64, InFlight>>,
    paths: Mutex<HashMap<usize, u64>>,
}

/// The handler runs of one key in flight.
#[derive(Default)]
struct InFlight {
    runs: usize,
    /// How often the key was invalidated since the oldest run began.
    invalidated: u64,
}

/// One handler run, registered from its start until it is dropped.
pub(crate) struct Run {
    counts: &'static Invalidations,
    backend: usize,
    key: u64,
    invalidated: u64,
    paths: u64,
}

/// The identity of a backend: the address of the value behind the `dyn`.
fn backend_id(backend: &dyn Backend) -> usize {
    std::ptr::from_ref(backend).cast::<()>() as usize
}

fn key_hash(backend: usize, key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), backend as u64)
}

/// Locks a map held for one operation, never across an await: a poisoned
/// map is still consistent.
fn locked<K, V>(map: &Mutex<HashMap<K, V>>) -> MutexGuard<'_, HashMap<K, V>> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Invalidations {
    /// The counts every layer of the process shares: layers on different
    /// routes often share one backend, and an invalidation through one of
    /// them (a `Location`, a handler's `clear_path`) must stop a run in
    /// flight in another.
    pub(crate) fn get() -> &'static Self {
        static COUNTS: OnceLock<Invalidations> = OnceLock::new();
        COUNTS.get_or_init(Self::default)
    }

    fn paths_of(&self, backend: usize) -> u64 {
        locked(&self.paths).get(&backend).copied().unwrap_or(0)
    }

    /// Registers a handler run for `key` on `backend`.
    pub(crate) fn begin(&'static self, backend: &dyn Backend, key: &str) -> Run {
        let backend = backend_id(backend);
        let hash = key_hash(backend, key);
        let paths = self.paths_of(backend);
        let mut map = locked(&self.inflight);
        let slot = map.entry(hash).or_default();
        slot.runs += 1;
        Run {
            counts: self,
            backend,
            key: hash,
            invalidated: slot.invalidated,
            paths,
        }
    }

    /// `key` of `backend` is being invalidated.
    pub(crate) fn key(&self, backend: &dyn Backend, key: &str) {
        let hash = key_hash(backend_id(backend), key);
        if let Some(slot) = locked(&self.inflight).get_mut(&hash) {
            slot.invalidated += 1;
        }
    }

    /// A path or pattern of `backend` is being invalidated: every run in
    /// flight on it.
    pub(crate) fn path(&self, backend: &dyn Backend) {
        *locked(&self.paths).entry(backend_id(backend)).or_default() += 1;
    }
}

impl Run {
    /// Whether its key was invalidated since the run began.
    pub(crate) fn outdated(&self) -> bool {
        if self.counts.paths_of(self.backend) != self.paths {
            return true;
        }
        locked(&self.counts.inflight)
            .get(&self.key)
            .is_some_and(|slot| slot.invalidated != self.invalidated)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let mut map = locked(&self.counts.inflight);
        if let Some(slot) = map.get_mut(&self.key) {
            slot.runs -= 1;
            if slot.runs == 0 {
                map.remove(&self.key);
            }
        }
    }
}
