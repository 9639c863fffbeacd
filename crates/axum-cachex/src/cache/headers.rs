//! Header edits on a response's way out and a request's way in:
//! `Cache-Control` defaults and privacy, 304 merges, framing checks, and
//! the client's conditionals the layer answers itself.

use http::{
    HeaderMap, HeaderValue,
    header::{
        CACHE_CONTROL, CONTENT_LENGTH, EXPIRES, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
        IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
    },
};

use super::directives::Directives;

/// `base` with every field `update` has replaced by `update`'s lines.
pub(crate) fn merged(base: &HeaderMap, update: &HeaderMap) -> HeaderMap {
    let mut headers = base.clone();
    for name in update.keys() {
        headers.remove(name);
    }
    for (name, value) in update {
        headers.append(name.clone(), value.clone());
    }
    headers
}

/// Makes `Cache-Control` say `private`: the layer's private value when the
/// response has none, else `private, ` in front of the handler's own,
/// unless it already says `private`, `no-store` or `public` (an explicit
/// choice of the handler).
pub(crate) fn keep_private(headers: &mut HeaderMap, private_default: &HeaderValue) {
    let directives = Directives::from_headers(headers);
    if directives.private || directives.no_store || directives.public {
        return;
    }
    let lines: Vec<&[u8]> = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let value = if lines.is_empty() {
        if headers.contains_key(EXPIRES) {
            HeaderValue::from_static("private")
        } else {
            private_default.clone()
        }
    } else {
        let mut value = b"private".to_vec();
        for line in lines {
            value.extend_from_slice(b", ");
            value.extend_from_slice(line);
        }
        HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static("private"))
    };
    headers.insert(CACHE_CONTROL, value);
}

/// The layer's `Cache-Control` for a response that has neither its own
/// `Cache-Control` nor `Expires` (which the layer's `max-age` would
/// override downstream). Never stored: added on the way out.
pub(crate) fn add_default_cache_control(headers: &mut HeaderMap, default: &HeaderValue) {
    // An empty default (a proxy configured with no directives of its own)
    // adds nothing: an empty field line says nothing either.
    if default.is_empty() || headers.contains_key(EXPIRES) {
        return;
    }
    if let http::header::Entry::Vacant(slot) = headers.entry(CACHE_CONTROL) {
        slot.insert(default.clone());
    }
}

/// Whether a complete body has the length its `Content-Length` declared
/// (true when none is declared).
pub(crate) fn declared_length_matches(headers: &HeaderMap, len: usize) -> bool {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_none_or(|declared| declared == len as u64)
}

/// Removes the client's conditionals and `Range`: the layer evaluates
/// them itself against a complete response, which it can then store.
pub(crate) fn strip_conditionals(headers: &mut HeaderMap) {
    for name in [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
    ] {
        headers.remove(name);
    }
}
