//! Request coalescing: one handler run per key at a time, on the crate's
//! single flight ([`crate::flight`]).
//!
//! The first request for a key that must run the handler leads; requests
//! for the same key that arrive while it runs wait and receive the leader's
//! stored response. Background refreshes lead too, which is what
//! deduplicates them per key.

use std::sync::Arc;

use axum_cachex_core::CacheEntry;

/// What a leader hands its waiters.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Nothing to share (uncacheable, too large, streamed, failed): each
    /// waiter runs the handler itself.
    Nothing,
    /// The response the handler just made.
    Made(Arc<CacheEntry>),
    /// The stale entry the leader served because the handler failed
    /// (stale-if-error): waiters share it rather than each fail again.
    StaleOnError(Arc<CacheEntry>),
}

/// The table of keys whose handler is running.
pub(crate) type Coalescer = crate::flight::Flights<Outcome>;
/// Role of a request in a flight.
pub(crate) type Flight = crate::flight::Flight<Outcome>;
/// The leader's end of a flight.
pub(crate) type Leader = crate::flight::Leader<Outcome>;
