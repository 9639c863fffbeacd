use std::{error::Error as StdError, fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;

use crate::CacheRecord;

/// A boxed error from a backend's client library, kept as the source.
type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error a [`Backend`] returns.
///
/// Callers in the HTTP layer treat every variant as a cache miss (fail open);
/// the managers surface it to the application.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The operation did not finish within the configured timeout.
    #[error("{backend} backend: operation timed out after {timeout:?}")]
    Timeout {
        /// Name of the backend (see [`Backend::name`]).
        backend: &'static str,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The server could not be reached or the connection broke.
    #[error("{backend} backend: connection failed")]
    Connection {
        /// Name of the backend.
        backend: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
    /// The server answered with an error, or the answer made no sense.
    #[error("{backend} backend: command failed")]
    Command {
        /// Name of the backend.
        backend: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
    /// The operation needs an ability the backend does not have (see the
    /// extension traits [`Listing`], [`CompareAndSwap`] and
    /// [`PathInvalidation`]). Backends never return it themselves; the
    /// callers that need an ability do.
    #[error("{backend} backend does not support {operation}: {hint}")]
    Unsupported {
        /// Name of the backend.
        backend: &'static str,
        /// The operation that was asked for, e.g. `clear_pattern`.
        operation: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// The caller passed a key or pattern the backend cannot use.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl BackendError {
    /// Whether the error means the backend is unreachable or slow (as opposed
    /// to a bad request): these are the failures fail-open is about.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Connection { .. })
    }
}

/// One stored value with its key and remaining lifetime, as listed by
/// [`Listing::entries`] for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// The key as the caller passed it to [`Backend::set`] (without the
    /// backend's own prefix).
    pub key: String,
    /// The stored bytes.
    pub value: Bytes,
    /// Time left before the backend drops the value; `None` when it has no
    /// expiry or the backend cannot tell.
    pub ttl_remaining: Option<Duration>,
}

/// An async key-value store: the contract every cache store implements.
///
/// Six operations make a backend: [`get`](Backend::get),
/// [`set`](Backend::set), [`add`](Backend::add),
/// [`replace`](Backend::replace), [`take`](Backend::take) and
/// [`delete`](Backend::delete), with per-value TTLs. Everything else is
/// optional:
///
/// - **hints** with defaults ([`get_now`](Backend::get_now),
///   [`get_record_now`](Backend::get_record_now),
///   [`max_value_size`](Backend::max_value_size),
///   [`eviction_count`](Backend::eviction_count)), overridden only by
///   stores that have something to say;
/// - **abilities**, each an extension trait that a store implements and then
///   announces through its accessor: [`Listing`] via
///   [`listing`](Backend::listing), [`CompareAndSwap`] via
///   [`compare_and_swap`](Backend::compare_and_swap), [`PathInvalidation`]
///   via [`path_invalidation`](Backend::path_invalidation). Callers ask the
///   accessor and fall back (or explain what is missing) when it answers
///   `None`, so no store fails at run time for lack of an ability.
///
/// Keys passed in are *logical* keys; an implementation may prepend its own
/// namespace prefix. Values are opaque bytes. Every method may fail with a
/// [`BackendError`]; no method may panic on data read from the server, and
/// every call finishes in bounded time: a store that talks to a server
/// bounds each call with a timeout ([`BackendError::Timeout`]).
///
/// The `conformance` feature of this crate holds the suite every store
/// must pass (`axum_cachex_core::conformance::run`).
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and errors: `"memory"`, `"redis"`, …
    fn name(&self) -> &'static str;

    /// Reads a value. An expired value is never returned.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError>;

    /// Writes a value, replacing any previous one. `ttl: None` keeps it
    /// until evicted or deleted; a zero TTL stores nothing readable.
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>)
    -> Result<(), BackendError>;

    /// Writes a value only if the key holds none (Redis `SET NX`, Memcached
    /// `add`). Returns whether it was written.
    async fn add(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError>;

    /// Writes a value only if the key already holds one (Redis `SET XX`,
    /// Memcached `replace`). Returns whether it was written. Used so that a
    /// late save never resurrects a deleted record.
    async fn replace(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError>;

    /// Reads and deletes a value atomically: of any number of concurrent
    /// callers for one key, at most one gets the value.
    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError>;

    /// Deletes a value. Returns whether one existed.
    async fn delete(&self, key: &str) -> Result<bool, BackendError>;

    /// Reads a value without awaiting, for stores that answer from process
    /// memory: `Some(result)` is what [`get`](Backend::get) would return,
    /// `None` means "ask `get`". The HTTP layer tries it first on every
    /// request, which spares in-process stores the boxed future and the
    /// timeout of an async call. The default returns `None`.
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, BackendError>> {
        let _ = key;
        None
    }

    /// [`get_now`](Backend::get_now) for a value the HTTP layer stored,
    /// decoded: stores that answer from process memory may keep the
    /// decoded [`CacheRecord`] beside the bytes, so that a cache hit does
    /// not decode the same bytes again. `None` means "ask `get`", as for
    /// `get_now`, and so does a value that is not a record (the layer then
    /// reads it the slow way and deletes it).
    ///
    /// The default decodes what `get_now` returns. A store overriding it
    /// must return exactly the record its bytes decode to.
    fn get_record_now(&self, key: &str) -> Option<Result<Option<Arc<CacheRecord>>, BackendError>> {
        match self.get_now(key)? {
            Ok(Some(bytes)) => CacheRecord::decode(bytes)
                .ok()
                .map(|record| Ok(Some(Arc::new(record)))),
            Ok(None) => Some(Ok(None)),
            Err(e) => Some(Err(e)),
        }
    }

    /// The largest value the store accepts, when it has such a limit
    /// (Memcached's item size). The HTTP layer never buffers a response it
    /// could not store. Default: `None` (no limit).
    fn max_value_size(&self) -> Option<usize> {
        None
    }

    /// How many values the backend dropped to stay within its size bound,
    /// when it keeps count (the memory backend does). Default: `None`.
    fn eviction_count(&self) -> Option<u64> {
        None
    }

    /// This backend as a [`Listing`], if it can list and clear by prefix.
    /// Default: `None`.
    fn listing(&self) -> Option<&dyn Listing> {
        None
    }

    /// This backend as a [`CompareAndSwap`], if it can change a value only
    /// while it still holds an expected one. Default: `None`.
    fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
        None
    }

    /// This backend as a [`PathInvalidation`], if it has a fast path for
    /// invalidating the HTTP cache by path. Default: `None`.
    fn path_invalidation(&self) -> Option<&dyn PathInvalidation> {
        None
    }
}

/// The ability to list and clear the keys under a prefix.
///
/// The HTTP cache clears its own namespace with it
/// ([`CACHE_NAMESPACE`](crate::CACHE_NAMESPACE)) and invalidates by path or
/// glob by listing that namespace; monitoring lists entries; the session
/// manager finds expired sessions. A store that cannot enumerate its keys
/// (Memcached) does not implement it.
///
/// Announce it from [`Backend::listing`] with
/// `fn listing(&self) -> Option<&dyn Listing> { Some(self) }`.
#[async_trait]
pub trait Listing: Backend {
    /// The live logical keys that start with `prefix` (`""`: all of them).
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BackendError>;

    /// The live values whose keys start with `prefix`, with their remaining
    /// lifetime.
    async fn entries(&self, prefix: &str) -> Result<Vec<StoredValue>, BackendError>;

    /// Deletes every value whose key starts with `prefix` and returns how
    /// many went. The default lists the keys and deletes them one by one;
    /// stores with a bulk delete override it.
    async fn clear(&self, prefix: &str) -> Result<u64, BackendError> {
        let mut removed = 0;
        for key in self.keys(prefix).await? {
            if self.delete(&key).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The ability to change a value only while it still holds an expected
/// one: the release of a distributed lock that must not free another
/// holder's lock, and updates that must not overwrite a concurrent one.
///
/// Both operations are atomic with respect to every other operation on the
/// key. An expired value counts as absent.
#[async_trait]
pub trait CompareAndSwap: Backend {
    /// Deletes the value only if it equals `expected`. Returns whether it
    /// was deleted.
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError>;

    /// Replaces the value with `value` (and its TTL with `ttl`) only if it
    /// equals `expected`. Returns whether it was written.
    async fn set_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError>;
}

/// A fast path for invalidating the HTTP cache, for stores that index its
/// entries as they are written (Redis keeps a per-path index, Memcached
/// per-path generation counters).
///
/// Keys under [`CACHE_NAMESPACE`](crate::CACHE_NAMESPACE) that parse as a
/// [`CacheKey`](crate::CacheKey) (see [`CacheKey::parse_stored`]) are the
/// HTTP cache's. Without this ability the HTTP cache invalidates by
/// [`Listing`] its namespace, which is what a third-party store should rely
/// on.
///
/// [`CacheKey::parse_stored`]: crate::CacheKey::parse_stored
#[async_trait]
pub trait PathInvalidation: Backend {
    /// Removes (or makes unreachable) the HTTP cache's entries of `path`:
    /// with `include_params` every query variant, without it only the entry
    /// with an empty query. Returns how many went, or 0 when the store
    /// cannot count (see [`counts_exactly`](PathInvalidation::counts_exactly)).
    async fn clear_path(&self, path: &str, include_params: bool) -> Result<u64, BackendError>;

    /// Removes (or makes unreachable) every entry of the HTTP cache, and
    /// nothing else. Returns a count as [`clear_path`](Self::clear_path).
    async fn clear_cache(&self) -> Result<u64, BackendError>;

    /// Whether the counts returned are exact. Generation counters make
    /// entries unreachable without knowing how many there were.
    fn counts_exactly(&self) -> bool {
        true
    }
}
