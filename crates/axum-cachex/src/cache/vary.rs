//! `Vary`: which request headers select a stored variant (RFC 9111 §4.1).

use axum_cachex_core::CacheEntry;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, header::VARY};
use xxhash_rust::xxh3::xxh3_128;

/// The header names a response varies on: lowercased, sorted,
/// deduplicated. (`*` is handled before: such a response is not stored.)
pub(crate) fn vary_names(response_headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = response_headers
        .get_all(VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|n| std::str::from_utf8(n.trim_ascii()).ok())
        .filter(|n| !n.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Whether a response's `Vary` contains `*`: it varies on things outside
/// the request headers and can never be selected.
pub(crate) fn varies_on_everything(response_headers: &HeaderMap) -> bool {
    response_headers
        .get_all(VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|n| n.trim_ascii() == b"*")
}

/// The selecting key of a request for `names`: a 128-bit hash of, per
/// name, `name\n` when the request lacks the header, `name=value\n`
/// otherwise, where value is the request's field lines combined with `, `
/// and each trimmed of optional whitespace, and nothing more (RFC 9111
/// §4.1): values that differ in case or inner spacing select different
/// variants. Field values cannot contain a newline, so the input is
/// unambiguous; it is hashed so that a response varying on `Cookie` or
/// `Authorization` never writes those values into the store. Empty when
/// there are no names.
pub(crate) fn vary_key(names: &[String], request_headers: &HeaderMap) -> Bytes {
    if names.is_empty() {
        return Bytes::new();
    }
    let mut out = BytesMut::new();
    for name in names {
        out.put_slice(name.as_bytes());
        let mut lines = request_headers.get_all(name.as_str()).iter().peekable();
        if lines.peek().is_some() {
            out.put_u8(b'=');
        }
        for (i, line) in lines.enumerate() {
            if i > 0 {
                out.put_slice(b", ");
            }
            out.put_slice(trim_ows(line.as_bytes()));
        }
        out.put_u8(b'\n');
    }
    Bytes::copy_from_slice(&xxh3_128(&out).to_be_bytes())
}

/// Trims spaces and tabs (OWS) from both ends.
fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Whether `entry` is the variant for a request with these headers.
pub(crate) fn selects(entry: &CacheEntry, request_headers: &HeaderMap) -> bool {
    if !entry.headers.contains_key(VARY) {
        return entry.vary_key.is_empty();
    }
    let names = vary_names(&entry.headers);
    entry.vary_key == vary_key(&names, request_headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn names_are_lowercased_sorted_and_deduplicated() {
        let res = headers(&[
            ("vary", "Accept-Language, accept-encoding"),
            ("vary", "ACCEPT-ENCODING"),
        ]);
        assert_eq!(vary_names(&res), ["accept-encoding", "accept-language"]);
        assert!(!varies_on_everything(&res));
        assert!(varies_on_everything(&headers(&[("vary", "a, * ")])));
    }

    #[test]
    fn values_compare_after_combining_lines_and_trimming_ows_only() {
        let names = vec!["accept-language".to_owned(), "cookie".to_owned()];
        let key = |pairs| vary_key(&names, &headers(pairs));
        // Combining field lines and trimming OWS: the same.
        assert_eq!(
            key(&[("cookie", " a=1"), ("cookie", "b=2 ")]),
            key(&[("cookie", "a=1, b=2")])
        );
        // Case and inner whitespace matter.
        assert_ne!(key(&[("cookie", "id=ABC")]), key(&[("cookie", "id=abc")]));
        assert_ne!(key(&[("cookie", "a=1,  b")]), key(&[("cookie", "a=1, b")]));
        // Absent differs from empty.
        assert_ne!(key(&[]), key(&[("cookie", "")]));
        assert_ne!(key(&[("accept-language", "fr")]), key(&[("cookie", "fr")]));
    }
}
