//! Serving stale when the origin cannot be reached (RFC 9111 §4.2.4: a
//! cache may answer with a stale response when it is disconnected from the
//! origin, unless the response forbids it).
//!
//! A gateway handler (such as `axum-cachex-proxy`'s forwarder) marks the
//! `502`/`504` it makes for an unreachable or silent upstream with
//! [`UpstreamUnreachable`]; a layer configured with
//! [`stale_if_unreachable`](super::CacheLayerBuilder::stale_if_unreachable)
//! then serves the stored response instead, if it is stale by no more than
//! that window and carries none of `must-revalidate`, `proxy-revalidate`,
//! `no-cache` or `s-maxage`. An error the origin itself sent (a `500`) is
//! not a disconnection: only `stale-if-error` covers it.

use std::time::SystemTime;

use axum_cachex_core::CacheEntry;

use super::{shared::Shared, targeted};

/// Marks a response as made by a gateway because the origin could not be
/// reached or did not answer in time (insert it into the response's
/// extensions). See
/// [`CacheLayerBuilder::stale_if_unreachable`](super::CacheLayerBuilder::stale_if_unreachable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamUnreachable;

/// Whether `entry` may be served while the origin is unreachable at `now`.
pub(crate) fn may_serve(shared: &Shared, entry: &CacheEntry, now: SystemTime) -> bool {
    let Some(window) = shared.options.stale_if_unreachable else {
        return false;
    };
    let stale_for = entry.age(now).saturating_sub(entry.fresh_for);
    if stale_for > window {
        return false;
    }
    let cc = targeted::response_directives(&entry.headers, &shared.options.targets);
    !(cc.must_revalidate || cc.proxy_revalidate || cc.no_cache || cc.s_maxage.is_some())
}
