//! The HTTP response cache middleware: [`CacheLayer`] and its parts.
//!
//! Laid out like a tower-http middleware: `config` (the builder and its
//! validation), `layer` (the `Layer`), `shared` (what its services share),
//! `service` (the `Service` and its future), and `flow` (what happens to
//! one request), in steps of one module each:
//!
//! - `plan`: what kind of request it is (pure);
//! - `store`: look it up, write it (one record per key and variant);
//! - `decide`: what a stored entry is good for now (pure);
//! - `coalesce` / `lock`: lead or wait;
//! - `admit`: may the response be stored, and for how long (pure);
//! - `body`: buffer or tee the body;
//! - `status`: the `Cache-Status` that records the decision.
//!
//! and one small module per HTTP concern (keys, ETags, `Cache-Control`
//! parsing, conditionals, `Vary`, credentials, invalidation).

mod admit;
mod body;
mod coalesce;
pub(crate) mod conditional;
mod config;
mod credentials;
mod decide;
pub(crate) mod directives;
mod entry;
pub(crate) mod etag;
mod extract;
mod flow;
pub(crate) mod headers;
mod invalidate;
mod key;
mod layer;
mod lock;
mod plan;
pub(crate) mod purge;
mod response;
mod service;
pub(crate) mod shared;
mod stats;
mod status;
mod store;
pub(crate) mod tags;
mod targeted;
mod unreachable;
pub(crate) mod vary;

pub use crate::registry::{LayerReport, Registry};
pub use config::{
    CacheLayerBuilder, CacheLayerConfigError, DEFAULT_BACKEND_TIMEOUT, DEFAULT_CACHEABLE_STATUSES,
    DEFAULT_COALESCE_TIMEOUT, DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_REFRESHES, Freshness, Stale,
    UserPartition, default_cacheable_statuses,
};
pub use credentials::{CredentialNames, Credentialed, ShareGuard};
pub use extract::{CacheBackend, MissingCacheBackend};
pub use key::{DefaultKeyBuilder, KeyBuilder};
pub use layer::CacheLayer;
pub use service::{CacheService, ResponseFuture};
pub use stats::StatsSnapshot;
pub use tags::MAX_TAG_LEN;
pub use unreachable::UpstreamUnreachable;
