//! The backend contract of [axum-cachex](https://docs.rs/axum-cachex).
//!
//! This crate holds only what a third party needs to write a cache store:
//!
//! - [`Backend`], the async trait every store implements (memory, Redis,
//!   Memcached, or your own),
//! - [`BackendError`], the typed error a store returns,
//! - [`CacheEntry`], the stored HTTP response, and [`CacheRecord`], what
//!   the HTTP layer writes under one key (a response, or the
//!   [`VariantIndex`] of a response with `Vary`), with its versioned,
//!   binary-safe encoding ([`CacheRecord::encode`] /
//!   [`CacheRecord::decode`]),
//! - [`CacheKey`], the injective default key format
//!   `{method}|||{host}|||{path}|||{query}` (parts escaped) that stores
//!   parse to implement path-based invalidation.
//!
//! Depending on this crate instead of `axum-cachex` keeps a store free of the
//! middleware and its dependencies (the layout follows `tower-sessions-core`).
//!
//! # Writing a backend
//!
//! Values are opaque bytes: the HTTP layer stores [`CacheRecord::encode`]d
//! responses, the session and state managers store serialised records. A
//! backend namespaces every key with its own prefix, honours the TTL passed
//! to [`Backend::set`], and never returns an expired value. The
//! conformance suite of `axum-cachex` (`tests/common/contract.rs`, run for
//! a backend with `conformance_suite!(factory)`) checks all of that
//! against a real server.

mod backend;
mod entry;
mod key;

pub use backend::{Backend, BackendError, Capabilities, StoredValue};
pub use entry::{
    CacheEntry, CacheRecord, DecodeError, ENTRY_FORMAT_VERSION, MAX_VARY_NAMES, VariantIndex,
};
pub use key::{CacheKey, KEY_SEPARATOR, path_matches_glob};
