//! Targeted cache control (RFC 9213): fields such as `CDN-Cache-Control`
//! that address one class of caches. A cache configured with a list of
//! targets uses the first of them the response carries with a valid value,
//! instead of `Cache-Control`, for every decision of its own.
//!
//! Targeted fields are Structured Field Dictionaries (RFC 8941); one that
//! does not parse as a dictionary, or whose numeric directives are not
//! integers, is ignored as a whole (RFC 9213 §2.1). The check below is the
//! dictionary grammar only, not a full parser: the directives are then read
//! by the ordinary `Cache-Control` parser, whose syntax a valid dictionary
//! of directives also follows. A whole Structured Fields crate would be a
//! dependency for these sixty lines.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::directives::Directives;

/// The directives this cache obeys: those of the first target the response
/// carries validly, else `Cache-Control`'s.
pub(crate) fn response_directives(headers: &HeaderMap, targets: &[HeaderName]) -> Directives {
    for target in targets {
        let lines: Vec<&[u8]> = headers
            .get_all(target)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        if !lines.is_empty() && lines.iter().all(|line| is_valid(line)) {
            return Directives::parse(lines);
        }
    }
    Directives::from_headers(headers)
}

/// Whether `value` is a dictionary whose freshness directives have
/// integer values.
fn is_valid(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    members(text).is_some_and(|members| {
        members.iter().all(|(key, value)| match *key {
            "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error" => {
                value.is_some_and(is_integer)
            }
            _ => true,
        })
    })
}

/// The `key[=value]` members of a dictionary, parameters dropped; `None`
/// when the text is not a dictionary.
fn members(text: &str) -> Option<Vec<(&str, Option<&str>)>> {
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    if text.is_empty() {
        return Some(Vec::new());
    }
    split_outside_quotes(text, ',')?
        .into_iter()
        .map(|member| {
            let member = member.trim_matches(|c| c == ' ' || c == '\t');
            let mut params = split_outside_quotes(member, ';')?.into_iter();
            let (key, value) = key_value(params.next()?)?;
            for param in params {
                key_value(param.trim_start_matches(' '))?;
            }
            Some((key, value))
        })
        .collect()
}

/// Splits on `sep` outside quoted strings; `None` on an unterminated one.
fn split_outside_quotes(text: &str, sep: char) -> Option<Vec<&str>> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in text.char_indices() {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => quoted = !quoted,
            (false, _, c) if c == sep => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    (!quoted).then(|| {
        parts.push(&text[start..]);
        parts
    })
}

/// `key` or `key=bare-item`, each well formed.
fn key_value(text: &str) -> Option<(&str, Option<&str>)> {
    let (key, value) = match text.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (text, None),
    };
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '*');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.*".contains(c));
    (first_ok && rest_ok && value.is_none_or(is_bare_item)).then_some((key, value))
}

fn is_integer(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// An Integer, Decimal, String, Token, Byte Sequence or Boolean.
fn is_bare_item(value: &str) -> bool {
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b'-' | b'0'..=b'9') => is_integer(value) || is_decimal(value),
        Some(b'"') => value.len() >= 2 && value.ends_with('"') && value.is_ascii(),
        Some(b':') => value.len() >= 2 && value.ends_with(':'),
        Some(b'?') => value == "?0" || value == "?1",
        Some(c) if c.is_ascii_alphabetic() || *c == b'*' => value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b)),
        _ => false,
    }
}

fn is_decimal(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    match digits.split_once('.') {
        Some((int, frac)) => {
            (1..=12).contains(&int.len())
                && (1..=3).contains(&frac.len())
                && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_valid_target_replaces_cache_control() {
        let cdn = [HeaderName::from_static("cdn-cache-control")];
        let h = with(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600"),
        ]);
        let d = response_directives(&h, &cdn);
        assert_eq!((d.no_store, d.max_age), (false, Some(600)));
        let h = with(&[
            ("cache-control", "max-age=600"),
            ("cdn-cache-control", "private"),
        ]);
        assert!(response_directives(&h, &cdn).private);
        // Without targets configured, the field means nothing.
        assert!(response_directives(&h, &[]).max_age == Some(600));
    }

    #[test]
    fn invalid_targets_are_ignored_as_a_whole() {
        let cdn = [HeaderName::from_static("cdn-cache-control")];
        for bad in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age =60",
            "Max-Age=60",
            "max-age=1.5",
        ] {
            let h = with(&[("cache-control", "no-store"), ("cdn-cache-control", bad)]);
            assert!(response_directives(&h, &cdn).no_store, "{bad}");
        }
        for good in [
            "max-age=60, private",
            "max-age=60;x=1, foo=\"a,b\"",
            "s-maxage=0, x=?1, y=:AA==:",
        ] {
            let h = with(&[("cache-control", "no-store"), ("cdn-cache-control", good)]);
            assert!(!response_directives(&h, &cdn).no_store, "{good}");
        }
    }
}
