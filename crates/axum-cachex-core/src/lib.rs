//! The backend contract of [axum-cachex](https://docs.rs/axum-cachex).
//!
//! This crate holds only what a third party needs to write a cache store:
//!
//! - [`Backend`], the small async trait every store implements: get, set,
//!   add, replace, take and delete, with TTLs;
//! - the optional abilities, one extension trait each: [`Listing`] (list
//!   and clear by prefix), [`CompareAndSwap`] (locks, concurrent updates)
//!   and [`PathInvalidation`] (a fast path for the HTTP cache's path
//!   invalidation);
//! - [`BackendError`], the typed error a store returns;
//! - [`CacheEntry`], the stored HTTP response, and [`CacheRecord`], what
//!   the HTTP layer writes under one key, with its versioned, binary-safe
//!   encoding;
//! - [`CacheKey`], the injective key format of the HTTP cache
//!   (`{method}|||{host}|||{path}|||{query}`, parts escaped), stored under
//!   [`CACHE_NAMESPACE`];
//! - with the `conformance` feature, the suite every store must pass.
//!
//! Depending on this crate instead of `axum-cachex` keeps a store free of the
//! middleware and its dependencies: no axum, tokio or moka (the layout
//! follows `tower-sessions-core`).
//!
//! # Writing a backend
//!
//! Values are opaque bytes: the HTTP layer stores [`CacheRecord::encode`]d
//! responses, the session and state managers store serialised records. A
//! backend honours the TTL passed to [`Backend::set`] and never returns an
//! expired value. Implement the six required operations, then whichever
//! abilities the store has, and announce them from the matching accessor
//! ([`Backend::listing`] and so on). Run `conformance::run` (feature
//! `conformance`) in the store's tests: the built-in memory, Redis and
//! Memcached backends pass exactly that suite. `examples/hashmap_backend.rs`
//! in the repository is a complete store in one file.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;

/// The property tests' runner settings: a fixed seed and no persistence
/// files, so CI runs the same cases every time.
#[cfg(test)]
mod fixed_seed {
    use proptest::test_runner::{Config, RngAlgorithm, RngSeed};

    /// 256 cases from a fixed seed.
    pub(crate) fn config() -> Config {
        Config {
            cases: 256,
            failure_persistence: None,
            rng_algorithm: RngAlgorithm::ChaCha,
            rng_seed: RngSeed::Fixed(0x00ca_c4e5),
            ..Config::default()
        }
    }
}
mod entry;
mod key;

pub use backend::{Backend, BackendError, CompareAndSwap, Listing, PathInvalidation, StoredValue};
pub use entry::{
    CacheEntry, CacheRecord, DecodeError, ENTRY_FORMAT_VERSION, MAX_VARY_NAMES, VariantIndex,
};
pub use key::{CACHE_NAMESPACE, CacheKey, KEY_SEPARATOR, path_matches_glob};

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;
