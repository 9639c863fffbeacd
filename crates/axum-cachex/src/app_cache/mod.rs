//! A typed application cache with stampede protection (SPEC S6).
//!
//! [`CacheManager`] stores any serde value as JSON in any
//! [`Backend`](crate::backend::Backend) under `cache:{key}`, with an optional
//! default TTL: [`get`](CacheManager::get), [`set`](CacheManager::set),
//! [`delete`](CacheManager::delete), [`has`](CacheManager::has),
//! [`clear_pattern`](CacheManager::clear_pattern) and
//! [`get_or_set`](CacheManager::get_or_set).
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use axum_cachex::{app_cache::{CacheError, CacheManager}, backend::MemoryBackend};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct User { id: u64, name: String }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), CacheError> {
//! let cache = CacheManager::builder(Arc::new(MemoryBackend::new()))
//!     .default_ttl(Duration::from_secs(60))
//!     .build()
//!     .expect("valid configuration");
//!
//! let alice = User { id: 1, name: "alice".into() };
//! cache.set("user:1", &alice, None).await?;
//! assert_eq!(cache.get::<User>("user:1").await?, Some(alice));
//! // A value that does not decode into the requested type is a miss.
//! assert_eq!(cache.get::<Vec<u8>>("user:1").await?, None);
//!
//! cache.set("user:2", &User { id: 2, name: "bob".into() }, None).await?;
//! assert_eq!(cache.clear_pattern("user:*").await?, 2);
//! assert!(!cache.has("user:1").await?);
//! # Ok(()) }
//! ```
//!
//! # `get_or_set` and stampedes
//!
//! When a popular entry expires, every request that misses it would run the
//! expensive computation at once. [`get_or_set`](CacheManager::get_or_set)
//! runs it once per key and process: the other callers wait for that run and
//! all get its value, or all get its error (an `Arc<E>`, not cached: the next
//! call tries again). With
//! [`distributed_lock`](CacheManagerBuilder::distributed_lock) the instances
//! sharing a backend (Redis, Memcached) also coordinate through a lock key
//! (created with `add`, holding a random token, released only by its
//! holder); waiters on other instances poll for the value for a bounded
//! time, then compute it themselves.
//!
//! ```
//! # use std::{convert::Infallible, sync::Arc, time::Duration};
//! # use axum_cachex::{app_cache::CacheManager, backend::MemoryBackend};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cache = CacheManager::new(Arc::new(MemoryBackend::new()));
//! let report = cache
//!     .get_or_set(
//!         "report:today",
//!         || async { Ok::<_, Infallible>(vec![1, 2, 3]) }, // the expensive part
//!         Some(Duration::from_secs(300)),
//!     )
//!     .await;
//! assert_eq!(report.ok(), Some(vec![1, 2, 3]));
//! # }
//! ```
//!
//! # Backends
//!
//! Every operation works on every backend except
//! [`clear_pattern`](CacheManager::clear_pattern), which lists keys and so
//! returns [`BackendError::Unsupported`](crate::backend::BackendError::Unsupported)
//! on Memcached. The cross-instance lock is released with a
//! compare-and-delete
//! ([`CompareAndSwap::delete_if_equals`](crate::backend::CompareAndSwap::delete_if_equals)),
//! which every built-in backend has (a Lua script on Redis, a CAS-guarded
//! meta delete on Memcached 1.6+, a compare-and-remove on the memory
//! backend); on a third-party backend without it, with a plain delete. The
//! lock is useful only where several instances share the backend (Redis,
//! Memcached); on the memory backend it costs a few extra calls and changes
//! nothing.
//!
//! # In handlers
//!
//! [`CacheManager`] is an axum extractor reading the manager installed with
//! `.layer(axum::Extension(manager))` (500 with [`MissingCacheManager`]'s
//! message when absent); with a router state, `State<CacheManager>` through
//! `FromRef` works as well.
//!
//! ```
//! use std::{convert::Infallible, sync::Arc};
//! use axum::{Extension, Json, Router, routing::get};
//! use axum_cachex::{app_cache::CacheManager, backend::MemoryBackend};
//!
//! async fn stats(cache: CacheManager) -> Json<u64> {
//!     let n = cache
//!         .get_or_set("stats", || async { Ok::<_, Infallible>(42u64) }, None)
//!         .await
//!         .unwrap_or_default();
//!     Json(n)
//! }
//!
//! let cache = CacheManager::new(Arc::new(MemoryBackend::new()));
//! let app: Router = Router::new().route("/stats", get(stats)).layer(Extension(cache));
//! # let _ = app;
//! ```

mod error;
mod extract;
mod manager;

pub use error::{CacheError, CacheManagerConfigError};
pub use extract::MissingCacheManager;
pub use manager::{CacheManager, CacheManagerBuilder, DEFAULT_CACHE_PREFIX, DistributedLock};
