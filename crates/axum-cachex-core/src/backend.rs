use std::{error::Error as StdError, fmt, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;

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
    /// The backend cannot do this operation at all.
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

/// What a backend can do beyond the required operations.
///
/// Callers (the conformance suite, the monitoring routes) read it instead of
/// guessing from the backend's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`Backend::keys`], [`Backend::entries`] and [`Backend::clear_pattern`]
    /// work. When false they return [`BackendError::Unsupported`].
    pub list_keys: bool,
    /// [`Backend::clear`] and [`Backend::clear_path`] return exact counts.
    /// When false (generation-counter invalidation) they return 0 and the
    /// entries become unreachable all the same.
    pub exact_counts: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            list_keys: true,
            exact_counts: true,
        }
    }
}

impl Capabilities {
    /// A backend that can neither list keys nor count what a clear removed
    /// (e.g. Memcached).
    pub fn unlisted() -> Self {
        Self {
            list_keys: false,
            exact_counts: false,
        }
    }
}

/// One stored value with its key and remaining lifetime, as listed by
/// [`Backend::entries`] for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// The key as the caller passed it to [`Backend::set`] (without prefix).
    pub key: String,
    /// The stored bytes.
    pub value: Bytes,
    /// Time left before the backend drops the value; `None` when it has no
    /// expiry or the backend cannot tell.
    pub ttl_remaining: Option<Duration>,
}

/// An async key-value store for cache entries, sessions and state.
///
/// Keys passed in are *logical* keys; every implementation prepends its own
/// namespace prefix, and operations that act on "everything" ([`clear`],
/// [`keys`], [`entries`]) only touch that namespace.
///
/// Every method may fail with a [`BackendError`]; no method may panic on data
/// read from the server.
///
/// [`clear`]: Backend::clear
/// [`keys`]: Backend::keys
/// [`entries`]: Backend::entries
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and errors: `"memory"`, `"redis"`, …
    fn name(&self) -> &'static str;

    /// What this backend can and cannot do. The default claims everything.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Reads a value. An expired value is never returned.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError>;

    /// Reads a value without awaiting, for stores that answer from process
    /// memory: `Some(result)` is what [`get`](Backend::get) would return,
    /// `None` means "ask `get`". The HTTP layer tries it first on every
    /// request, which spares in-process stores the boxed future and the
    /// timeout of an async call. The default returns `None`; network
    /// backends keep it.
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, BackendError>> {
        let _ = key;
        None
    }

    /// Writes a value, replacing any previous one. `ttl: None` keeps it until
    /// evicted or deleted.
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

    /// Deletes every value of this backend's namespace. Returns how many went
    /// (backends that cannot count, such as Memcached, return what they know).
    async fn clear(&self) -> Result<u64, BackendError>;

    /// Deletes the cached responses of one path (keys in the default
    /// [`CacheKey`](crate::CacheKey) format). With `include_params` every query variant goes
    /// too; without it only the entries with an empty query.
    async fn clear_path(&self, path: &str, include_params: bool) -> Result<u64, BackendError>;

    /// Deletes the cached responses whose path matches a glob pattern
    /// (see [`path_matches_glob`](crate::path_matches_glob)).
    async fn clear_pattern(&self, pattern: &str) -> Result<u64, BackendError>;

    /// Lists the logical keys of this namespace.
    async fn keys(&self) -> Result<Vec<String>, BackendError>;

    /// Lists the values of this namespace with their remaining lifetime.
    async fn entries(&self) -> Result<Vec<StoredValue>, BackendError>;

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

    /// Deletes a value only if it still equals `expected` (used to release
    /// distributed locks with a token). Returns whether it was deleted.
    ///
    /// The default returns [`BackendError::Unsupported`].
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError> {
        let _ = (key, expected);
        Err(BackendError::Unsupported {
            backend: self.name(),
            operation: "delete_if_equals",
            hint: "use the Redis backend for cross-instance locks",
        })
    }
}
