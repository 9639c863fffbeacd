//! Turning stored entries into responses, and responses into entries.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum_cachex_core::CacheEntry;
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Response, StatusCode,
    header::{
        AGE, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_LOCATION, DATE, ETAG, EXPIRES,
        LAST_MODIFIED, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, SET_COOKIE, TE, TRAILER,
        TRANSFER_ENCODING, UPGRADE, VARY,
    },
};

use super::{shared::Shared, status::CACHE_STATUS, tags::STORED_TAGS};

/// Headers a 304 repeats from the full response (RFC 9110 §15.4.5), plus
/// `Last-Modified`, which guides cache updates, and `Set-Cookie`, which
/// only a response made for this client can carry (stored entries never
/// do), and which a 304 must not swallow.
const NOT_MODIFIED_HEADERS: [HeaderName; 7] = [
    CONTENT_LOCATION,
    DATE,
    VARY,
    EXPIRES,
    LAST_MODIFIED,
    CACHE_CONTROL,
    SET_COOKIE,
];

/// Headers never stored and never served from a stored entry: hop-by-hop
/// ones (RFC 9110 §7.6.1), `Set-Cookie`, framing (`Content-Length` is
/// derived from the stored body), and the ones the layer writes itself
/// (`Age`, `Cache-Status`).
fn is_unstorable(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == PROXY_AUTHENTICATE
        || name == PROXY_AUTHORIZATION
        || name == SET_COOKIE
        || name == CONTENT_LENGTH
        || name == AGE
        || name == CACHE_STATUS
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// The end-to-end headers of a response, as stored.
pub(crate) fn storable_headers(headers: &HeaderMap) -> HeaderMap {
    let mut stored = end_to_end_headers(headers, false);
    // Only the layer stamps tags (a handler naming its own stamp could
    // make an invalidated entry look current).
    stored.remove(super::tags::STORED_TAGS);
    stored
}

/// Most header slots reserved up front for a copy of a header map.
const MAX_PRESIZE: usize = 1024;

/// An empty map with room for `values` header values, within what
/// `HeaderMap` can reserve: its length counts every value, and a stored
/// record may repeat a name tens of thousands of times (`with_capacity`
/// would panic); repeated values do not need slots of their own.
fn presized(values: usize) -> HeaderMap {
    HeaderMap::try_with_capacity(values.min(MAX_PRESIZE)).unwrap_or_default()
}

/// The end-to-end headers of a response: without hop-by-hop, framing and
/// cache-written fields, and without `Set-Cookie` unless `cookies`.
pub(crate) fn end_to_end_headers(headers: &HeaderMap, cookies: bool) -> HeaderMap {
    // Headers listed in `Connection` are hop-by-hop too.
    // Read as bytes: a line with obs-text must not hide what it lists.
    let listed: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|name| std::str::from_utf8(name.trim_ascii()).ok())
        .map(str::to_ascii_lowercase)
        .collect();
    let mut out = presized(headers.len());
    for (name, value) in headers {
        let kept = !is_unstorable(name) || (cookies && name == SET_COOKIE);
        if kept && !listed.iter().any(|l| l == name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Checks an entry read from a store that others may write to: a status a
/// cache may serve, and no header that must never be served from a store
/// (cookies, credentials, framing). False when the status is unusable;
/// offending headers are dropped.
pub(crate) fn sanitize(
    entry: &mut CacheEntry,
    is_credential: impl Fn(&HeaderName) -> bool,
) -> bool {
    if !servable(entry) {
        return false;
    }
    let bad = |name: &HeaderName| is_unstorable(name) || is_credential(name);
    if entry.headers.keys().any(bad) {
        let mut clean = presized(entry.headers.len());
        for (name, value) in &entry.headers {
            if !bad(name) {
                clean.append(name.clone(), value.clone());
            }
        }
        entry.headers = clean;
    }
    true
}

/// Whether [`sanitize`] would leave an entry as it is: a status a cache
/// may serve, and nothing to drop.
pub(crate) fn is_clean(entry: &CacheEntry, is_credential: impl Fn(&HeaderName) -> bool) -> bool {
    servable(entry)
        && !entry
            .headers
            .keys()
            .any(|name| is_unstorable(name) || is_credential(name))
}

/// Most distinct header names a stored entry may have to be served: far
/// beyond any real response, and far below what a `HeaderMap` can hold, so
/// that the fields the layer adds always fit (a planted record filling the
/// map would make adding them panic).
const MAX_SERVED_NAMES: usize = 1024;

/// An entry a cache may serve from a store: a status that is not partial
/// content, not a 304 (those only update stored responses) and within
/// 200..=599, and a header map with room for the layer's fields.
fn servable(entry: &CacheEntry) -> bool {
    let status = entry.status.as_u16();
    (200..=599).contains(&status)
        && status != 206
        && status != 304
        && entry.headers.keys_len() <= MAX_SERVED_NAMES
}

/// Whole seconds since `stored_at`, for `Age`.
pub(crate) fn age_value(entry: &CacheEntry, now: SystemTime) -> HeaderValue {
    let secs = entry.age(now).as_secs();
    // Most hits are young: their `Age` comes from a table instead of being
    // formatted on every hit.
    match SMALL_AGES.get(secs as usize) {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(secs),
    }
}

/// `Age` values 0 to 63, preformatted.
const SMALL_AGES: [&str; 64] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32",
    "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46", "47", "48",
    "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60", "61", "62", "63",
];

/// Seconds of freshness left (negative once stale), for `Cache-Status`.
pub(crate) fn ttl_left(entry: &CacheEntry, now: SystemTime) -> i64 {
    let age = entry.age(now);
    let fresh = entry.fresh_for;
    if age <= fresh {
        // Rounded up: an entry stored a moment ago still has its whole ttl.
        secs_i64((fresh - age).saturating_add(Duration::from_millis(999)))
    } else {
        -secs_i64((age - fresh).saturating_add(Duration::from_millis(999)))
    }
}

fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A full answer from a stored entry (an empty body for HEAD). The entry's
/// headers carry the `Cache-Control` it was stored with.
///
/// Tag fields (the handler's, named by `shared`, and the stored stamp) stay
/// out, and the layer's default `Cache-Control` goes in when the entry has
/// neither `Cache-Control` nor `Expires` (see
/// [`add_default_cache_control`](super::headers::add_default_cache_control)):
/// both decided in the one pass that copies the headers.
pub(crate) fn from_entry(
    entry: &CacheEntry,
    now: SystemTime,
    head: bool,
    shared: &Shared,
) -> Response<Body> {
    // Built with room for what the layer adds (ETag, Age, Cache-Control,
    // Cache-Status, Content-Length): a clone would have none and grow.
    let mut headers = presized(entry.headers.len() + 5);
    let mut has_freshness = false;
    for (name, value) in &entry.headers {
        // The entry's own validator and age are the layer's to send.
        if name == STORED_TAGS || *name == shared.options.tag_header || name == ETAG || name == AGE
        {
            continue;
        }
        has_freshness |= name == CACHE_CONTROL || name == EXPIRES;
        headers.append(name.clone(), value.clone());
    }
    let default = &shared.cache_control;
    // Appends: none of these is in the map (nothing to replace).
    if !has_freshness && !default.is_empty() {
        headers.append(CACHE_CONTROL, default.clone());
    }
    headers.append(ETAG, entry.etag.clone());
    headers.append(AGE, age_value(entry, now));
    let body = if head {
        // HEAD carries the GET response's length, not its bytes (a 204
        // has none, RFC 9110 §8.6).
        head_body(&mut headers, entry.status, entry.body.len())
    } else {
        Body::from(entry.body.clone())
    };
    let mut res = Response::new(body);
    *res.status_mut() = entry.status;
    *res.headers_mut() = headers;
    res
}

/// A 304 repeating what RFC 9110 §15.4.5 requires from `source` headers.
pub(crate) fn not_modified(
    source: &HeaderMap,
    etag: Option<&HeaderValue>,
    age: Option<HeaderValue>,
) -> Response<Body> {
    let mut headers = HeaderMap::with_capacity(8);
    for name in NOT_MODIFIED_HEADERS {
        for value in source.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(etag) = etag {
        headers.insert(ETAG, etag.clone());
    }
    if let Some(age) = age {
        headers.insert(AGE, age);
    }
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::NOT_MODIFIED;
    *res.headers_mut() = headers;
    res
}

/// A 304 for a stored entry.
pub(crate) fn not_modified_from_entry(entry: &CacheEntry, now: SystemTime) -> Response<Body> {
    not_modified(
        &entry.headers,
        Some(&entry.etag),
        Some(age_value(entry, now)),
    )
}

/// A response from parts and complete body bytes.
pub(crate) fn from_parts(
    mut parts: http::response::Parts,
    body: Bytes,
    head: bool,
) -> Response<Body> {
    let body = if head {
        head_body(&mut parts.headers, parts.status, body.len())
    } else {
        Body::from(body)
    };
    Response::from_parts(parts, body)
}

/// The body of a HEAD answer: none, with the GET's `Content-Length`, or
/// for a 204, which has no length (RFC 9110 §8.6), a body that announces
/// none either.
fn head_body(headers: &mut HeaderMap, status: StatusCode, len: usize) -> Body {
    if status == StatusCode::NO_CONTENT {
        headers.remove(CONTENT_LENGTH);
        return Body::new(super::body::UnknownLength);
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    Body::empty()
}

/// Adds this cache's member to `Cache-Status`, after any members caches
/// nearer the origin put there (RFC 9211 §2).
pub(crate) fn set_status<B>(res: &mut Response<B>, ours: HeaderValue) {
    let mut lines = match res.headers_mut().entry(CACHE_STATUS) {
        http::header::Entry::Vacant(slot) => {
            slot.insert(ours);
            return;
        }
        http::header::Entry::Occupied(lines) => lines,
    };
    let mut combined: Vec<u8> = Vec::with_capacity(64 + ours.len());
    for line in lines.iter() {
        combined.extend_from_slice(line.as_bytes());
        combined.extend_from_slice(b", ");
    }
    combined.extend_from_slice(ours.as_bytes());
    lines.insert(HeaderValue::from_bytes(&combined).unwrap_or(ours));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_cookies_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("set-cookie", HeaderValue::from_static("a=b"));
        h.insert("connection", HeaderValue::from_static("x-hop, close"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-length", HeaderValue::from_static("99"));
        let stored = storable_headers(&h);
        let names: Vec<_> = stored.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "x-custom"]);
    }
}
