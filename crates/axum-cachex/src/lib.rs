//! HTTP response caching for [axum](https://docs.rs/axum) and tower.
//!
//! (Crate documentation is completed in `docs.rs`-style below.)
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod backend;
pub mod cache;
mod clock;
mod proxy;

pub use axum_cachex_core::{CacheEntry, CacheKey, DecodeError};
pub use cache::{
    CacheBackend, CacheLayer, CacheLayerBuilder, ConfigError, DefaultKeyBuilder, KeyBuilder, Stale,
    StatsSnapshot,
};
pub use clock::{Clock, ManualClock};
pub use proxy::BackendProxy;
pub mod app_cache;
#[cfg(feature = "session")]
pub mod session;
pub mod state;
