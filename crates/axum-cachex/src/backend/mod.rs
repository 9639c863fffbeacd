//! Cache stores: the [`Backend`] contract and its implementations.
//!
//! | backend | feature | shared between instances | lists keys |
//! |---|---|---|---|
//! | [`MemoryBackend`] | always | no | yes |
//! | `RedisBackend` | `redis` | yes | yes (`SCAN`) |
//! | `MemcachedBackend` | `memcached` | yes | no |
//!
//! Third-party stores implement [`Backend`] from the `axum-cachex-core`
//! crate, which does not depend on the middleware.

#[cfg(feature = "memcached")]
mod memcached;
mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use axum_cachex_core::{Backend, BackendError, Capabilities, StoredValue};
#[cfg(feature = "memcached")]
pub use memcached::*;
pub use memory::{DEFAULT_MAX_CAPACITY, MemoryBackend, MemoryBackendBuilder};
#[cfg(feature = "redis")]
pub use redis::*;
