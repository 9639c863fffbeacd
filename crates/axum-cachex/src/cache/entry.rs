//! Stored entries made from responses: a new one from a complete response,
//! and a stored one freshened by a 304 (RFC 9111 §4.3.4).

use std::time::SystemTime;

use axum_cachex_core::CacheEntry;
use bytes::Bytes;
use http::{HeaderMap, header::ETAG, response::Parts as ResParts};

use super::{
    admit::{self, Admission, Policy},
    etag::etag_for,
    headers, response,
    shared::Shared,
    vary,
};

/// The entry for a complete response.
pub(crate) fn new_entry(
    parts: &ResParts,
    body: Bytes,
    policy: &Policy,
    selecting: &HeaderMap,
    now: SystemTime,
) -> CacheEntry {
    let names = vary::vary_names(&parts.headers);
    CacheEntry {
        status: parts.status,
        headers: response::storable_headers(&parts.headers),
        etag: etag_for(parts.headers.get(ETAG), &body),
        body,
        stored_at: stored_at(&now, policy),
        fresh_for: policy.fresh_for,
        stale_while_revalidate: policy.stale_while_revalidate,
        stale_if_error: policy.stale_if_error,
        vary_key: vary::vary_key(&names, selecting),
    }
}

/// The stored entry updated by a 304's headers (RFC 9111 §4.3.4), or
/// `None` when the updated response may not be stored.
pub(crate) fn freshened(
    shared: &Shared,
    old: &CacheEntry,
    update: &HeaderMap,
    selecting: &HeaderMap,
    now: SystemTime,
) -> Option<CacheEntry> {
    let age = update.get(http::header::AGE).cloned();
    let mut headers = headers::merged(&old.headers, &response::storable_headers(update));
    // The 304's `Age` counts (RFC 9111 §4.2.3), but is not stored.
    if let Some(age) = age {
        headers.insert(http::header::AGE, age);
    }
    let admission = admit::admit(shared, old.status, &headers, now);
    headers.remove(http::header::AGE);
    let Admission::Store(policy) = admission else {
        return None;
    };
    // A 304 may change `Vary`: the entry is selected by the new names.
    let vary_key = vary::vary_key(&vary::vary_names(&headers), selecting);
    Some(CacheEntry {
        etag: etag_for(headers.get(ETAG), &old.body),
        vary_key,
        headers,
        stored_at: stored_at(&now, &policy),
        fresh_for: policy.fresh_for,
        stale_while_revalidate: policy.stale_while_revalidate,
        stale_if_error: policy.stale_if_error,
        ..old.clone()
    })
}

/// Whether a 304 is about the stored entry (RFC 9111 §4.3.4): its `ETag`,
/// or without one its `Last-Modified`, matches the entry's.
pub(crate) fn validators_match(stored: &CacheEntry, not_modified: &HeaderMap) -> bool {
    use http::header::LAST_MODIFIED;
    if let Some(etag) = not_modified.get(ETAG) {
        return stored.headers.get(ETAG) == Some(etag);
    }
    match (
        not_modified.get(LAST_MODIFIED),
        stored.headers.get(LAST_MODIFIED),
    ) {
        (Some(new), Some(old)) => new == old,
        _ => true,
    }
}

/// When a response was made: now, in whole milliseconds as the entry format
/// keeps them (so that `Age` reads the same before and after a round
/// trip), moved back by the age the response arrived with.
fn stored_at(now: &SystemTime, policy: &Policy) -> SystemTime {
    whole_millis(*now)
        .checked_sub(policy.initial_age)
        .unwrap_or(std::time::UNIX_EPOCH)
}

fn whole_millis(t: SystemTime) -> SystemTime {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(since.as_millis() as u64)
}
