//! What a stored entry is good for at a given moment (RFC 9111 §4.2,
//! RFC 5861): a pure function, so the rules are unit-tested here.

use std::time::SystemTime;

use axum_cachex_core::CacheEntry;
use http::{
    HeaderMap,
    header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED},
};

/// How a stored entry may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Fresh: serve it.
    Fresh,
    /// Stale, within `stale-while-revalidate`: serve it and refresh in the
    /// background.
    StaleWhileRevalidate,
    /// Stale: ask the handler first.
    Revalidate {
        /// The entry has a validator from the handler (`ETag` or
        /// `Last-Modified`): ask conditionally, and a 304 freshens it.
        conditional: bool,
        /// Within `stale-if-error`: serve it if the handler fails.
        stale_if_error: bool,
    },
}

/// Decides how `entry` may be used at `now`.
pub(crate) fn decide(entry: &CacheEntry, now: SystemTime) -> Use {
    let age = entry.age(now);
    if age < entry.fresh_for {
        return Use::Fresh;
    }
    if age < entry.fresh_for.saturating_add(entry.stale_while_revalidate) {
        return Use::StaleWhileRevalidate;
    }
    Use::Revalidate {
        conditional: has_validator(&entry.headers),
        stale_if_error: age < entry.fresh_for.saturating_add(entry.stale_if_error),
    }
}

/// Whether the handler gave the response a validator it can check.
pub(crate) fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED)
}

/// Adds the conditional headers that ask the handler whether `entry` is
/// still current (RFC 9111 §4.3.1): its `ETag` as `If-None-Match`, its
/// `Last-Modified` as `If-Modified-Since`.
pub(crate) fn add_validators(request: &mut HeaderMap, entry: &CacheEntry) {
    if let Some(etag) = entry.headers.get(ETAG) {
        request.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = entry.headers.get(LAST_MODIFIED) {
        request.insert(IF_MODIFIED_SINCE, modified.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};

    use super::*;

    fn entry(fresh: u64, swr: u64, sie: u64) -> CacheEntry {
        CacheEntry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            etag: HeaderValue::from_static("W/\"x\""),
            stored_at: SystemTime::UNIX_EPOCH,
            fresh_for: Duration::from_secs(fresh),
            stale_while_revalidate: Duration::from_secs(swr),
            stale_if_error: Duration::from_secs(sie),
            vary_key: Bytes::new(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn fresh_then_stale_windows_then_revalidate() {
        let e = entry(10, 5, 20);
        assert_eq!(decide(&e, at(9)), Use::Fresh);
        assert_eq!(decide(&e, at(10)), Use::StaleWhileRevalidate);
        assert_eq!(
            decide(&e, at(15)),
            Use::Revalidate {
                conditional: false,
                stale_if_error: true
            }
        );
        assert_eq!(
            decide(&e, at(30)),
            Use::Revalidate {
                conditional: false,
                stale_if_error: false
            }
        );
    }

    #[test]
    fn no_cache_entry_is_revalidated_every_time() {
        let mut e = entry(0, 0, 0);
        e.headers.insert(ETAG, HeaderValue::from_static("\"v1\""));
        assert_eq!(
            decide(&e, at(0)),
            Use::Revalidate {
                conditional: true,
                stale_if_error: false
            }
        );
        let mut req = HeaderMap::new();
        add_validators(&mut req, &e);
        assert_eq!(req[IF_NONE_MATCH], "\"v1\"");
        assert!(!req.contains_key(IF_MODIFIED_SINCE));
    }
}
