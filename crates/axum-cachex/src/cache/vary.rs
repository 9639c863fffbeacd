//! `Vary`: one stored variant per set of selecting request header values
//! (RFC 9111 §4.1).

use axum_cachex_core::{CacheEntry, EntrySet};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, header::VARY};

/// Most variants kept per key; the oldest goes first. Bounds the damage of
/// a client cycling through header values.
pub(crate) const MAX_VARIANTS: usize = 16;

/// The header names a response varies on: lowercased, sorted, deduplicated.
pub(crate) fn vary_names(response_headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = response_headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The selecting key of a request for `names`: `name=value\n` per name,
/// values normalised (list members trimmed and lowercased, whitespace
/// runs collapsed) so that `gzip, br` and `GZIP,br` select the same
/// variant. Empty when there are no names.
pub(crate) fn vary_key(names: &[String], request_headers: &HeaderMap) -> Bytes {
    if names.is_empty() {
        return Bytes::new();
    }
    let mut out = BytesMut::new();
    for name in names {
        out.put_slice(name.as_bytes());
        out.put_u8(b'=');
        let mut first = true;
        for value in request_headers.get_all(name.as_str()) {
            for member in value.as_bytes().split(|&b| b == b',') {
                let normalised = normalise(member);
                if normalised.is_empty() {
                    continue;
                }
                if !first {
                    out.put_u8(b',');
                }
                first = false;
                out.put_slice(&normalised);
            }
        }
        out.put_u8(b'\n');
    }
    out.freeze()
}

fn normalise(member: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(member.len());
    let mut pending_space = false;
    for &b in member {
        if b == b' ' || b == b'\t' {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b.to_ascii_lowercase());
        }
    }
    out
}

/// Whether `entry` is the variant for a request with these headers.
pub(crate) fn selects(entry: &CacheEntry, request_headers: &HeaderMap) -> bool {
    if !entry.headers.contains_key(VARY) {
        return entry.vary_key.is_empty();
    }
    let names = vary_names(&entry.headers);
    entry.vary_key == vary_key(&names, request_headers)
}

/// Index of the variant matching the request, newest first.
pub(crate) fn select_index(set: &EntrySet, request_headers: &HeaderMap) -> Option<usize> {
    set.variants
        .iter()
        .rposition(|e| selects(e, request_headers))
}

/// A copy of the variant matching the request, if any.
pub(crate) fn select(set: &EntrySet, request_headers: &HeaderMap) -> Option<CacheEntry> {
    select_index(set, request_headers).map(|i| set.variants[i].clone())
}

/// The coalescing key of a request: the cache key, plus the request's
/// selecting values when the stored variants say which headers the response
/// varies on. Requests for different variants then run in parallel instead
/// of waiting for a leader whose response they could not use. (On a cold
/// key the `Vary` names are unknown; waiters check the leader's variant.)
pub(crate) fn flight_key<'a>(
    key: &'a str,
    previous: Option<&EntrySet>,
    request_headers: &HeaderMap,
) -> std::borrow::Cow<'a, str> {
    let names = previous
        .and_then(|set| set.variants.last())
        .map(|entry| vary_names(&entry.headers))
        .unwrap_or_default();
    if names.is_empty() {
        return std::borrow::Cow::Borrowed(key);
    }
    let selecting = vary_key(&names, request_headers);
    std::borrow::Cow::Owned(format!("{key}\n{}", String::from_utf8_lossy(&selecting)))
}

/// The set to store after `entry` was produced: the previous variants
/// minus the one it replaces and those past their stale windows, capped at
/// [`MAX_VARIANTS`].
pub(crate) fn merge(
    previous: Option<&EntrySet>,
    entry: CacheEntry,
    now: std::time::SystemTime,
) -> EntrySet {
    let mut variants: Vec<CacheEntry> = previous
        .map(|set| {
            set.variants
                .iter()
                .filter(|e| e.vary_key != entry.vary_key && e.age(now) < e.storage_ttl())
                // A response without Vary replaces every variant.
                .filter(|_| !entry.vary_key.is_empty())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    variants.push(entry);
    if variants.len() > MAX_VARIANTS {
        let excess = variants.len() - MAX_VARIANTS;
        variants.drain(..excess);
    }
    EntrySet { variants }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn names_and_keys_are_normalised() {
        let mut res = HeaderMap::new();
        res.append(
            VARY,
            HeaderValue::from_static("Accept-Language, accept-encoding"),
        );
        res.append(VARY, HeaderValue::from_static("ACCEPT-ENCODING"));
        let names = vary_names(&res);
        assert_eq!(names, ["accept-encoding", "accept-language"]);
        let mut a = HeaderMap::new();
        a.insert("accept-encoding", HeaderValue::from_static("gzip,  BR"));
        a.insert("accept-language", HeaderValue::from_static("fr-CH"));
        let mut b = HeaderMap::new();
        b.insert("accept-encoding", HeaderValue::from_static(" GZIP , br "));
        b.insert("accept-language", HeaderValue::from_static("fr-ch"));
        assert_eq!(vary_key(&names, &a), vary_key(&names, &b));
        b.insert("accept-language", HeaderValue::from_static("de"));
        assert_ne!(vary_key(&names, &a), vary_key(&names, &b));
        // An absent header is distinct from any present value.
        b.remove("accept-language");
        assert_ne!(vary_key(&names, &a), vary_key(&names, &b));
    }
}
