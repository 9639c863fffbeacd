//! Cache stores: the [`Backend`] contract and its implementations.
//!
//! | backend | feature | shared between instances | [`Listing`] | [`CompareAndSwap`] | [`PathInvalidation`] |
//! |---|---|---|---|---|---|
//! | [`MemoryBackend`] | always | no | yes | yes | no (lists instead) |
//! | `RedisBackend` | `redis` | yes | yes (`SCAN`) | yes (Lua) | yes (per-path index) |
//! | `MemcachedBackend` | `memcached` | yes | no | yes (`gets` + CAS) | yes (generation counters) |
//!
//! Third-party stores implement [`Backend`] (and whichever abilities they
//! have) from the `axum-cachex-core` crate, which does not depend on the
//! middleware, and check themselves with its conformance suite.

#[cfg(any(feature = "redis", feature = "memcached"))]
mod breaker;
#[cfg(feature = "memcached")]
pub(crate) mod memcached;
mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use axum_cachex_core::{
    Backend, BackendError, CompareAndSwap, Listing, PathInvalidation, StoredValue,
};
#[cfg(feature = "memcached")]
pub use memcached::*;
pub use memory::{
    DEFAULT_MAX_CAPACITY, MemoryBackend, MemoryBackendBuilder, MemoryBackendConfigError,
};
#[cfg(feature = "redis")]
pub use redis::*;
