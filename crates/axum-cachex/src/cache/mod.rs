//! The HTTP response cache middleware: [`CacheLayer`] and its parts.
//!
//! Laid out like a tower-http middleware: `layer` (the `Layer`, plain
//! shared configuration), `service` (the `Service` and its future), `flow`
//! (what happens to one request), and one small module per concern (keys,
//! ETags, the `Cache-Control` builder, body buffering, coalescing,
//! `Cache-Status`).

mod admit;
mod body;
mod coalesce;
mod conditional;
mod config;
mod credentials;
mod decide;
mod directives;
mod etag;
mod extract;
mod flow;
mod invalidate;
mod key;
mod layer;
mod lock;
mod plan;
mod registry;
mod response;
mod service;
mod shared;
mod stats;
mod status;
mod store;
mod vary;

pub use config::{
    CacheLayerBuilder, ConfigError, DEFAULT_BACKEND_TIMEOUT, DEFAULT_COALESCE_TIMEOUT,
    DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_REFRESHES, Freshness, Stale, UserPartition,
    default_cacheable_statuses,
};
pub use credentials::{CredentialNames, Credentialed, ShareGuard};
pub use extract::CacheBackend;
pub use key::{DefaultKeyBuilder, KeyBuilder};
pub use layer::CacheLayer;
pub use registry::{LayerReport, layer_reports};
pub use service::{CacheService, ResponseFuture};
pub use stats::StatsSnapshot;
