//! The in-process backend: bounded by bytes, per-entry TTL, built on moka.

use std::{
    borrow::Cow,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use async_trait::async_trait;
use axum_cachex_core::{Backend, BackendError, CacheRecord, CompareAndSwap, Listing, StoredValue};
use bytes::Bytes;
use moka::{
    Expiry,
    notification::RemovalCause,
    ops::compute::{CompResult, Op},
    policy::EvictionPolicy,
    sync::Cache,
};

use crate::Clock;

/// Default bound of the memory backend: 64 MiB of keys and values.
pub const DEFAULT_MAX_CAPACITY: u64 = 64 * 1024 * 1024;

/// Bytes charged per entry on top of its key and value, for moka's own
/// bookkeeping, so that a flood of tiny entries is bounded too.
const ENTRY_OVERHEAD: usize = 96;

/// Bytes charged per header slot of a decoded record (a `HeaderMap`
/// bucket and its index), on top of the encoded bytes, which the decoded
/// record's values share.
const DECODED_SLOT_OVERHEAD: usize = 128;

/// Bytes charged per header value of a decoded record: a repeated name's
/// values live outside the slots (an entry of about 72 bytes, in a vector
/// that may have twice the room it uses).
const DECODED_VALUE_OVERHEAD: usize = 144;

#[derive(Clone)]
struct Stored {
    value: Bytes,
    /// The value decoded as an HTTP record, when it is one: decoded once
    /// when written, so that a cache hit clones it instead of decoding the
    /// bytes again (see [`Backend::get_record_now`]). It shares the
    /// value's buffer, so it costs only its own structure.
    record: Option<Arc<CacheRecord>>,
    /// When the value stops being readable, by the backend's [`Clock`].
    expires_at: Option<SystemTime>,
    /// When moka may drop the entry (by its own clock), which only frees
    /// memory; reads go by `expires_at`. `None` with an injected clock, which
    /// moka's timer would not follow: expired entries then wait for
    /// eviction by size.
    ttl: Option<Duration>,
}

impl Stored {
    fn is_live(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    /// What the entry costs against the byte bound, `key` included.
    fn weight(&self, key: &str) -> u32 {
        let decoded = match self.record.as_deref() {
            None => 0,
            Some(CacheRecord::Response(entry)) => {
                // Custom names are copied out of the buffer when decoded.
                let names: usize = entry.headers.keys().map(|n| n.as_str().len()).sum();
                std::mem::size_of::<CacheRecord>()
                    + entry.headers.capacity() * DECODED_SLOT_OVERHEAD
                    + entry.headers.len() * DECODED_VALUE_OVERHEAD
                    + names
            }
            Some(CacheRecord::Variants(index)) => {
                std::mem::size_of::<CacheRecord>()
                    + index.names.iter().map(|n| n.len() + 24).sum::<usize>()
            }
        };
        u32::try_from(key.len() + self.value.len() + ENTRY_OVERHEAD + decoded).unwrap_or(u32::MAX)
    }
}

struct PerEntryTtl;

impl Expiry<String, Stored> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, v: &Stored, _: Instant) -> Option<Duration> {
        v.ttl
    }
    fn expire_after_update(
        &self,
        _: &String,
        v: &Stored,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        v.ttl
    }
}

/// The default backend: an in-process cache bounded by total bytes.
///
/// - **Bounded**: keys plus values (plus a small per-entry overhead) never
///   exceed [`max_capacity`](MemoryBackendBuilder::max_capacity) bytes,
///   64 MiB by default.
/// - **Per-entry TTL**: each value expires after the TTL passed to `set`;
///   an expired value is never returned, even before it is swept.
/// - **Concurrent**: reads take no global lock (moka's sharded, lock-free
///   read path).
/// - **Eviction**: least-recently-used. moka's default TinyLFU admission can
///   refuse a new key when the cache is full of keys read more often, which
///   for a response cache means a fresh response silently not cached; LRU
///   always admits it.
///
/// Each instance is its own namespace: `clear` empties this instance only.
/// To share one byte bound between several namespaces (say, responses and
/// sessions) while clearing them apart, derive them with
/// [`namespace`](MemoryBackend::namespace):
///
/// ```
/// use axum_cachex::backend::MemoryBackend;
///
/// let root = MemoryBackend::builder().max_capacity(16 * 1024 * 1024).build()?;
/// let responses = root.namespace("responses:");
/// let sessions = root.namespace("sessions:");
/// # let _ = (responses, sessions);
/// # Ok::<(), axum_cachex::backend::MemoryBackendConfigError>(())
/// ```
#[derive(Clone)]
pub struct MemoryBackend {
    cache: Cache<String, Stored>,
    evictions: Arc<AtomicU64>,
    /// Prepended to every key; empty for a root instance, which therefore
    /// sees the keys of all its namespaces.
    prefix: Arc<str>,
    clock: Clock,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("entries", &self.cache.entry_count())
            .field("weighted_size", &self.cache.weighted_size())
            .finish()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a [`MemoryBackendBuilder`] cannot make a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryBackendConfigError {
    /// `max_capacity(0)`: the backend could store nothing.
    #[error("the memory backend's max_capacity must be greater than zero")]
    ZeroCapacity,
}

/// Builder of a [`MemoryBackend`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryBackendBuilder {
    max_capacity: u64,
    key_prefix: String,
    clock: Clock,
}

impl MemoryBackendBuilder {
    /// The bound in bytes of keys plus values. Default: 64 MiB
    /// ([`DEFAULT_MAX_CAPACITY`]).
    pub fn max_capacity(mut self, bytes: u64) -> Self {
        self.max_capacity = bytes;
        self
    }

    /// A key prefix. Default: none, since an instance is a namespace of its
    /// own; see [`MemoryBackend::namespace`] for several namespaces in one
    /// bound.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The clock that decides when values expire. Default: the system
    /// clock. Tests pass a [`ManualClock`](crate::ManualClock)'s clock and
    /// move time instead of sleeping.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Builds a backend from settings already checked.
    fn build_valid(self) -> MemoryBackend {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&evictions);
        let cache = Cache::builder()
            .max_capacity(self.max_capacity)
            .weigher(|k: &String, v: &Stored| v.weight(k))
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        MemoryBackend {
            cache,
            evictions,
            prefix: Arc::from(self.key_prefix.as_str()),
            clock: self.clock,
        }
    }

    /// Builds the backend.
    ///
    /// # Errors
    ///
    /// [`MemoryBackendConfigError::ZeroCapacity`] for a bound of 0 bytes,
    /// which would store nothing.
    pub fn build(self) -> Result<MemoryBackend, MemoryBackendConfigError> {
        if self.max_capacity == 0 {
            return Err(MemoryBackendConfigError::ZeroCapacity);
        }
        Ok(self.build_valid())
    }
}

impl MemoryBackend {
    /// A backend with the default bound (64 MiB).
    pub fn new() -> Self {
        Self::builder().build_valid()
    }

    /// Starts configuring a backend.
    pub fn builder() -> MemoryBackendBuilder {
        MemoryBackendBuilder {
            max_capacity: DEFAULT_MAX_CAPACITY,
            key_prefix: String::new(),
            clock: Clock::system(),
        }
    }

    /// A backend over the same store and byte bound whose keys live under
    /// `prefix` (appended to this one's): its `clear`, `keys` and the other
    /// namespace-wide operations see only its own keys. Namespaces should
    /// not be prefixes of one another.
    pub fn namespace(&self, prefix: impl AsRef<str>) -> MemoryBackend {
        MemoryBackend {
            cache: self.cache.clone(),
            evictions: Arc::clone(&self.evictions),
            prefix: Arc::from(format!("{}{}", self.prefix, prefix.as_ref())),
            clock: self.clock.clone(),
        }
    }

    /// How many entries were evicted to respect the size bound.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Current weighted size in bytes (approximate: moka applies writes in
    /// batches).
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    fn stored(&self, value: Bytes, ttl: Option<Duration>) -> Stored {
        Stored {
            // Only values that start as records are decoded: the check of
            // the magic bytes is all other values pay.
            record: CacheRecord::decode(value.clone()).ok().map(Arc::new),
            value,
            expires_at: ttl.and_then(|t| self.clock.now().checked_add(t)),
            ttl: ttl.filter(|_| self.clock.is_system()),
        }
    }

    /// The stored key of a logical key (no allocation without a prefix:
    /// the hit path of the default instance).
    fn full<'k>(&self, key: &'k str) -> Cow<'k, str> {
        if self.prefix.is_empty() {
            Cow::Borrowed(key)
        } else {
            Cow::Owned(format!("{}{key}", self.prefix))
        }
    }

    /// The logical key of a stored key of this namespace.
    fn logical<'k>(&self, stored: &'k str) -> Option<&'k str> {
        stored.strip_prefix(&*self.prefix)
    }

    /// A live value, read without waiting.
    fn read(&self, key: &str) -> Option<Bytes> {
        let now = self.clock.now();
        self.cache
            .get(&*self.full(key))
            .filter(|s| s.is_live(now))
            .map(|s| s.value)
    }

    /// Removes the entry of `key` and returns it if it was live.
    fn remove_live(&self, key: &str) -> Option<Bytes> {
        let now = self.clock.now();
        self.cache
            .remove(&*self.full(key))
            .filter(|s| s.is_live(now))
            .map(|s| s.value)
    }

    /// Atomically computes the new state of one key from its live value
    /// (`None` when absent or expired).
    fn compute(
        &self,
        key: &str,
        op: impl FnOnce(Option<&Bytes>) -> Op<Stored>,
    ) -> CompResult<String, Stored> {
        let now = self.clock.now();
        self.cache
            .entry(self.full(key).into_owned())
            .and_compute_with(|existing| {
                let live = existing.map(|e| e.into_value()).filter(|s| s.is_live(now));
                op(live.as_ref().map(|s| &s.value))
            })
    }

    /// The live entries of this namespace whose logical keys start with
    /// `prefix`, with their logical keys.
    fn live_under<'p>(&'p self, prefix: &'p str) -> impl Iterator<Item = (String, Stored)> + 'p {
        let now = self.clock.now();
        self.cache.iter().filter_map(move |(k, v)| {
            let logical = self.logical(&k)?;
            (logical.starts_with(prefix) && v.is_live(now)).then(|| (logical.to_owned(), v))
        })
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        Ok(self.read(key))
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, BackendError>> {
        Some(Ok(self.read(key)))
    }

    fn get_record_now(&self, key: &str) -> Option<Result<Option<Arc<CacheRecord>>, BackendError>> {
        let now = self.clock.now();
        match self.cache.get(&*self.full(key)).filter(|s| s.is_live(now)) {
            None => Some(Ok(None)),
            // Not a record: the caller reads it the slow way.
            Some(stored) => Some(Ok(Some(stored.record?))),
        }
    }

    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        self.cache
            .insert(self.full(key).into_owned(), self.stored(value, ttl));
        Ok(())
    }

    async fn add(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let result = self.compute(key, |live| match live {
            Some(_) => Op::Nop,
            None => Op::Put(self.stored(value, ttl)),
        });
        Ok(matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        ))
    }

    async fn replace(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let result = self.compute(key, |live| match live {
            Some(_) => Op::Put(self.stored(value, ttl)),
            None => Op::Nop,
        });
        Ok(matches!(result, CompResult::ReplacedWith(_)))
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        Ok(self.remove_live(key))
    }

    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        Ok(self.remove_live(key).is_some())
    }

    fn eviction_count(&self) -> Option<u64> {
        Some(self.evictions())
    }

    fn listing(&self) -> Option<&dyn Listing> {
        Some(self)
    }

    fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
        Some(self)
    }
}

#[async_trait]
impl Listing for MemoryBackend {
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        Ok(self.live_under(prefix).map(|(k, _)| k).collect())
    }

    async fn entries(&self, prefix: &str) -> Result<Vec<StoredValue>, BackendError> {
        let now = self.clock.now();
        Ok(self
            .live_under(prefix)
            .map(|(key, v)| StoredValue {
                key,
                value: v.value,
                ttl_remaining: v
                    .expires_at
                    .map(|at| at.duration_since(now).unwrap_or_default()),
            })
            .collect())
    }

    async fn clear(&self, prefix: &str) -> Result<u64, BackendError> {
        let keys: Vec<String> = self.live_under(prefix).map(|(k, _)| k).collect();
        Ok(keys
            .iter()
            .filter(|k| self.remove_live(k).is_some())
            .count() as u64)
    }
}

#[async_trait]
impl CompareAndSwap for MemoryBackend {
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError> {
        let result = self.compute(key, |live| match live {
            Some(v) if v == expected => Op::Remove,
            _ => Op::Nop,
        });
        Ok(matches!(result, CompResult::Removed(_)))
    }

    async fn set_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let result = self.compute(key, |live| match live {
            Some(v) if v == expected => Op::Put(self.stored(value, ttl)),
            _ => Op::Nop,
        });
        Ok(matches!(result, CompResult::ReplacedWith(_)))
    }
}
