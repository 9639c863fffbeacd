//! The backend contract of [axum-cachex](https://docs.rs/axum-cachex).
//!
//! This crate holds only what a third party needs to write a cache store:
//!
//! - [`Backend`], the async trait every store implements (memory, Redis,
//!   Memcached, or your own),
//! - [`BackendError`], the typed error a store returns,
//! - [`CacheEntry`], the stored HTTP response, and [`EntrySet`], the stored
//!   variants of one key with their versioned, binary-safe encoding
//!   ([`EntrySet::encode`] / [`EntrySet::decode`]),
//! - [`CacheKey`], the parser of the default key format
//!   `{method}|||{host}|||{path}|||{query}` that stores use to implement
//!   path-based invalidation.
//!
//! Depending on this crate instead of `axum-cachex` keeps a store free of the
//! middleware and its dependencies (the layout follows `tower-sessions-core`).
//!
//! # Writing a backend
//!
//! Values are opaque bytes: the HTTP layer stores [`EntrySet::encode`]d
//! responses, the session and state managers store serialised records. A
//! backend namespaces every key with its own prefix, honours the TTL passed
//! to [`Backend::set`], and never returns an expired value. Run the shared
//! conformance suite of `axum-cachex` (`tests/conformance`) against it.

mod backend;
mod entry;
mod key;

pub use backend::{Backend, BackendError, Capabilities, StoredValue};
pub use entry::{CacheEntry, CacheRecord, DecodeError, ENTRY_FORMAT_VERSION, VariantIndex};
pub use key::{CacheKey, KEY_SEPARATOR, path_matches_glob};
