//! Counters kept by the layer, and rate-limited failure logging.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum_cachex_core::BackendError;

use super::status::CacheStatus;
pub(crate) use crate::counters::bump;
use crate::counters::define_counters;

define_counters! {
    /// Live counters of one [`CacheLayer`](crate::CacheLayer) (atomics,
    /// no lock).
    live CacheStats;
    /// A copy of a layer's counters at one moment.
    snapshot StatsSnapshot;
    /// Requests answered from the store (200 or 304) without the handler.
    hits,
    /// Cacheable requests that ran the handler (no usable entry).
    misses,
    /// Responses written to the backend.
    stores,
    /// 304 Not Modified answers (from the store or after the handler).
    not_modified,
    /// Stale entries served while a background refresh ran.
    stale_served,
    /// Background refreshes started.
    revalidations,
    /// Stale entries served because the handler failed.
    stale_if_error_served,
    /// Handler failures inside a stale-if-error window.
    handler_failures,
    /// Requests that waited for another request's handler run.
    coalesced_waits,
    /// Requests with a method other than GET/HEAD.
    bypass_method,
    /// Requests on a `no_store` route.
    bypass_no_store,
    /// Requests that bypassed the store: credentials (`Authorization`, a
    /// session token, a configured credential) on a route that is not
    /// public, an invalid `Host`, or no user on a per-user route.
    bypass_authorization,
    /// Responses too large to buffer, streamed through.
    bypass_too_large,
    /// Responses the handler made uncacheable (status, Set-Cookie, no-store,
    /// private, `Vary: *`).
    not_storable,
    /// Backend calls that failed (timeouts excluded).
    backend_errors,
    /// Backend calls that timed out.
    backend_timeouts,
    /// Stored entries that could not be decoded (deleted, served as misses).
    decode_failures,
}

impl CacheStats {
    /// Counts what one request's [`CacheStatus`] says happened.
    pub(crate) fn record(&self, status: &CacheStatus, response: http::StatusCode) {
        if status.hit {
            bump(&self.hits);
        }
        match status.fwd {
            Some("miss" | "stale" | "vary-miss") => bump(&self.misses),
            Some("method") => bump(&self.bypass_method),
            Some("bypass") => match status.detail {
                Some("no-store") => bump(&self.bypass_no_store),
                _ => bump(&self.bypass_authorization),
            },
            _ => {}
        }
        if status.stored {
            bump(&self.stores);
        }
        if response == http::StatusCode::NOT_MODIFIED {
            bump(&self.not_modified);
        }
        match status.detail {
            Some("stale-while-revalidate") => bump(&self.stale_served),
            Some("stale-if-error") => bump(&self.stale_if_error_served),
            Some("too-large") => bump(&self.bypass_too_large),
            Some(
                "status" | "set-cookie" | "no-store" | "private" | "vary-star" | "vary-too-wide"
                | "credentials" | "event-stream" | "no-freshness" | "no-cache",
            ) if status.fwd != Some("bypass") => bump(&self.not_storable),
            _ => {}
        }
    }
}

impl StatsSnapshot {
    /// Hits over hits plus misses, 0 when there was no traffic.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// Logs backend failures at most once per interval, with a count of the
/// ones it held back, so an outage does not flood the logs.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    last_logged_ms: AtomicU64,
    suppressed: AtomicU64,
}

const LOG_INTERVAL: Duration = Duration::from_secs(10);

impl FailureLog {
    pub(crate) fn record(&self, backend: &str, operation: &str, error: &BackendError) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let last = self.last_logged_ms.load(Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= LOG_INTERVAL.as_millis() as u64;
        if due
            && self
                .last_logged_ms
                .compare_exchange(last, now_ms.max(1), Relaxed, Relaxed)
                .is_ok()
        {
            let suppressed = self.suppressed.swap(0, Relaxed);
            tracing::warn!(
                backend,
                operation,
                error = %error,
                source = ?std::error::Error::source(error),
                suppressed,
                "cache backend failed; serving without cache (fail open)"
            );
        } else {
            self.suppressed.fetch_add(1, Relaxed);
        }
    }
}
