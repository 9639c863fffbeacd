//! Entity tags: computing them and matching `If-None-Match` (RFC 9110 §8.8.3,
//! §13.1.2).

use http::HeaderValue;
use xxhash_rust::xxh3::xxh3_128;

/// A weak entity tag derived from the body: `W/"<32 hex digits>"`.
///
/// xxh3-128 is a fast non-cryptographic hash: an ETag only has to change
/// when the body changes, and 128 bits make accidental collisions
/// negligible. (It is not a defence against someone choosing bodies to
/// collide — the handler's own bodies are not attacker-chosen.)
pub(crate) fn weak_etag(body: &[u8]) -> HeaderValue {
    let hash = xxh3_128(body);
    let mut out = [0u8; 36];
    out[..3].copy_from_slice(b"W/\"");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..16 {
        let byte = (hash >> (120 - 8 * i)) as u8;
        out[3 + 2 * i] = HEX[(byte >> 4) as usize];
        out[4 + 2 * i] = HEX[(byte & 0xf) as usize];
    }
    out[35] = b'"';
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("W/\"0\""))
}

/// The ETag to send for a body: the handler's own when it is a valid
/// entity tag, else a weak one derived from the body.
pub(crate) fn etag_for(handler_etag: Option<&HeaderValue>, body: &[u8]) -> HeaderValue {
    match handler_etag {
        Some(tag) if opaque(tag.as_bytes()).is_some() => tag.clone(),
        _ => weak_etag(body),
    }
}

/// The opaque part of an entity tag (quotes included, `W/` dropped): what
/// weak comparison compares. `None` when `tag` is not a valid entity tag.
fn opaque(tag: &[u8]) -> Option<&[u8]> {
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    if tag.len() >= 2
        && tag[0] == b'"'
        && tag[tag.len() - 1] == b'"'
        && !tag[1..tag.len() - 1].contains(&b'"')
    {
        Some(tag)
    } else {
        None
    }
}

/// Whether an `If-None-Match` header value matches `etag` by weak
/// comparison: `*` matches any current representation, otherwise any entity
/// tag of the comma-separated list whose opaque part equals ours.
///
/// Malformed members are skipped (they match nothing); a malformed header
/// therefore never yields a 304 and never panics.
pub(crate) fn if_none_match_matches<'a>(
    headers: impl IntoIterator<Item = &'a HeaderValue>,
    etag: &HeaderValue,
) -> bool {
    let Some(ours) = opaque(etag.as_bytes()) else {
        return false;
    };
    headers.into_iter().any(|value| {
        let value = value.as_bytes();
        if trim(value) == b"*" {
            return true;
        }
        split_list(value).any(|member| opaque(member) == Some(ours))
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Splits an entity-tag list on commas outside quotes (an opaque tag may
/// itself contain a comma).
fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = value;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let mut in_quotes = false;
            let mut end = rest.len();
            for (i, &c) in rest.iter().enumerate() {
                match c {
                    b'"' => in_quotes = !in_quotes,
                    b',' if !in_quotes => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let member = trim(&rest[..end]);
            rest = if end < rest.len() {
                &rest[end + 1..]
            } else {
                &[]
            };
            if !member.is_empty() {
                return Some(member);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("header")
    }

    fn matches(inm: &str, etag: &str) -> bool {
        if_none_match_matches([&hv(inm)], &hv(etag))
    }

    #[test]
    fn weak_etag_shape_is_stable() {
        let a = weak_etag(b"hello");
        assert_eq!(a, weak_etag(b"hello"));
        assert_ne!(a, weak_etag(b"hellp"));
        let s = a.to_str().expect("ascii");
        assert!(
            s.starts_with("W/\"") && s.ends_with('"') && s.len() == 36,
            "{s}"
        );
    }

    #[test]
    fn weak_comparison() {
        assert!(matches("W/\"abc\"", "W/\"abc\""));
        assert!(matches("\"abc\"", "W/\"abc\""));
        assert!(matches("W/\"abc\"", "\"abc\""));
        assert!(!matches("\"abd\"", "\"abc\""));
    }

    #[test]
    fn lists_and_star() {
        assert!(matches("\"x\", W/\"abc\" ,\"y\"", "W/\"abc\""));
        assert!(matches("\"a,b\", \"abc\"", "\"abc\""));
        assert!(!matches("\"a,b\"", "\"a\""));
        assert!(matches(" * ", "W/\"abc\""));
        // Several header lines.
        assert!(if_none_match_matches(
            [&hv("\"x\""), &hv("\"abc\"")],
            &hv("\"abc\"")
        ));
    }

    #[test]
    fn malformed_never_matches() {
        for bad in ["abc", "W/abc", "\"abc", ",,,", "", "W/", "\"a\"b\"", "**"] {
            assert!(!matches(bad, "\"abc\""), "{bad:?}");
        }
        let huge = format!("{}\"abc\"", "\"x\",".repeat(10_000));
        assert!(matches(&huge, "\"abc\""));
    }
}
