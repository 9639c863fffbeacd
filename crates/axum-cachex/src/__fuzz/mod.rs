//! Entry points for the fuzz targets in `fuzz/` and the property tests.
//!
//! Not part of the API: hidden from the documentation and compiled only
//! with the `fuzzing` feature (which nothing but the `fuzz/` crate enables)
//! or in this crate's own tests. The parsers it reaches are `pub(crate)`;
//! this module gives the out-of-tree fuzz crate thin wrappers around them
//! instead of widening their visibility. Each function takes the raw fuzz
//! input, runs the parser on it, and asserts what must hold for any input
//! (a failed assertion is a finding, like a panic).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum_cachex_core::{CACHE_NAMESPACE, CacheKey, CacheRecord, path_matches_glob};
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, StatusCode,
    header::{self, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, VARY},
};

use crate::cache::{conditional::Conditions, directives, etag, headers, vary};

#[cfg(test)]
mod props;

/// The field lines of `data`: one per `\n`, those that are valid values.
fn field_lines(data: &[u8]) -> impl Iterator<Item = HeaderValue> + '_ {
    data.split(|&b| b == b'\n')
        .filter_map(|line| HeaderValue::from_bytes(line).ok())
}

/// A header map from `name: value` lines (lines that are not are skipped).
fn header_map(data: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

/// Tag headers (`Cache-Tag` / `Surrogate-Key` lines from a handler or an
/// upstream) and stored tag stamps: every tag taken is valid and taken
/// once; a stamp made of the taken tags parses back to them; any stamp
/// read from a store either parses into valid tags or is refused.
pub fn tags(data: &[u8]) {
    use crate::cache::tags;
    let name = HeaderName::from_static("cache-tag");
    let mut map = HeaderMap::new();
    for value in field_lines(data) {
        map.append(&name, value);
    }
    let taken = tags::response_tags(&map, &name, &[]);
    for (i, tag) in taken.iter().enumerate() {
        assert!(tags::is_valid(tag), "{tag:?}");
        assert!(!taken[..i].contains(tag), "{tag:?} taken twice");
    }
    let stamp = std::iter::once("1700000000000000".to_owned()).chain(taken.iter().cloned());
    if let Ok(value) = HeaderValue::try_from(stamp.collect::<Vec<_>>().join(" ")) {
        match tags::stamp_parts(&value) {
            Some((began, back)) => {
                assert_eq!(began, 1_700_000_000_000_000);
                assert_eq!(back, taken.iter().map(String::as_str).collect::<Vec<_>>());
            }
            None => assert!(taken.is_empty(), "a stamp of valid tags parses"),
        }
    }
    for value in field_lines(data) {
        if let Some((_, tags_read)) = tags::stamp_parts(&value) {
            assert!(tags_read.iter().all(|t| tags::is_valid(t)));
        }
    }
}

/// `CacheRecord::decode`: never panics; whatever decodes encodes to bytes
/// that decode to the same record.
pub fn entry_decode(data: &[u8]) {
    let Ok(record) = CacheRecord::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    if let CacheRecord::Response(entry) = &record {
        assert!(entry.is_encodable(), "a decoded entry is encodable");
    }
    let again = CacheRecord::decode(record.encode()).expect("a re-encoded record decodes");
    assert_eq!(again, record, "decode(encode(r)) == r");
}

/// `CacheKey::parse` / `parse_stored`: `Display` gives back exactly the key
/// parsed; encoding four parts and parsing them gives them back; glob
/// matching never panics.
pub fn cache_key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(key) = CacheKey::parse(text) {
        assert_eq!(key.to_string(), text, "Display inverts parse");
        let _ = key.decoded_path();
        let _ = key.is_for_path(&key.decoded_path(), false);
    }
    if let Some(key) = CacheKey::parse_stored(text) {
        assert_eq!(format!("{CACHE_NAMESPACE}{key}"), text);
    }
    let mut parts = text.splitn(5, '\n');
    if let (Some(method), Some(host), Some(path), Some(query)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    {
        // The HTTP layer validates the host: it never contains `|`.
        if !host.contains('|') {
            let encoded = CacheKey::encode_stored(method, host, path, query);
            let key = CacheKey::parse_stored(&encoded).expect("an encoded key parses");
            assert_eq!(key.decoded_method(), method);
            assert_eq!(key.host, host);
            assert_eq!(key.decoded_path(), path);
            assert_eq!(key.decoded_query(), query);
            assert!(key.variant.is_empty());
            assert!(key.is_for_path(path, true));
            let variant = CacheKey::variant_key(&encoded, "00ff");
            let key = CacheKey::parse_stored(&variant).expect("a variant key parses");
            assert_eq!(key.variant, "00ff");
            assert_eq!(key.decoded_path(), path);
        }
    }
    if let Some((pattern, path)) = text.split_once('\n') {
        // Bounded: the matcher is O(pattern × path) in the worst case.
        if pattern.len() <= 256 && path.len() <= 1024 {
            let _ = path_matches_glob(pattern, path);
            assert!(path_matches_glob("*", path));
            if !pattern.contains(['*', '?', '[', '\\']) {
                assert_eq!(path_matches_glob(pattern, path), pattern == path);
            }
        }
    }
}

/// `Cache-Control` (every line of `data` a field line), with `Expires`,
/// `Date` and `Last-Modified` read from the same lines as HTTP-dates.
/// Splitting a value into several lines at a comma changes nothing; making
/// a response private always leaves it private.
pub fn cache_control(data: &[u8]) {
    let lines: Vec<HeaderValue> = field_lines(data).collect();
    let parsed = directives::Directives::parse(lines.iter().map(HeaderValue::as_bytes));
    for seconds in [parsed.max_age, parsed.s_maxage].into_iter().flatten() {
        assert!(seconds <= 2_147_483_648, "delta-seconds are capped");
    }
    // One line holding them all, joined by commas, is the same list.
    let joined = lines
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b","[..]);
    if lines.iter().all(|l| {
        // A line ending inside a quoted string or after a backslash would
        // swallow the comma.
        l.as_bytes().iter().filter(|&&b| b == b'"').count() % 2 == 0
            && !l.as_bytes().contains(&b'\\')
    }) {
        assert_eq!(
            directives::Directives::parse([&joined[..]]),
            parsed,
            "several lines form one list"
        );
    }
    let mut map = HeaderMap::new();
    for line in &lines {
        map.append(header::CACHE_CONTROL, line.clone());
        map.append(header::EXPIRES, line.clone());
        map.append(header::DATE, line.clone());
        map.append(LAST_MODIFIED, line.clone());
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let _ = directives::response_lifetime(&parsed, &map, now);
    let _ = directives::heuristic_lifetime(&map, now, Duration::from_secs(86_400));
    let mut private = map.clone();
    headers::keep_private(
        &mut private,
        &HeaderValue::from_static("private, max-age=0"),
    );
    let after = directives::Directives::from_headers(&private);
    assert!(
        after.private || after.no_store || after.public,
        "keep_private leaves the response private (or explicitly public / no-store)"
    );
}

/// `If-None-Match`, `If-Modified-Since` and `Range` of a request (`name:
/// value` lines): evaluating them never panics; a request that lists our
/// entity tag matches it; stripping the conditionals leaves none.
pub fn conditional(data: &[u8]) {
    let (etag_line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let mut request = header_map(rest);
    let conditions = Conditions::from_request(&request);
    let Ok(etag) = HeaderValue::from_bytes(etag_line) else {
        return;
    };
    let mut response = HeaderMap::new();
    response.append(LAST_MODIFIED, etag.clone());
    let status = StatusCode::OK;
    let modified = conditions.not_modified(status, &etag, &response);
    assert_eq!(
        conditions.not_modified_by(status, Some(&etag), &response),
        modified
    );
    let _ = conditions.not_modified_by(status, None, &response);
    assert!(!conditions.not_modified(StatusCode::NOT_FOUND, &etag, &response));
    let values: Vec<HeaderValue> = request.get_all(IF_NONE_MATCH).iter().cloned().collect();
    let _ = etag::etag_for(Some(&etag), b"body");
    // A valid tag listed in If-None-Match (between any other members)
    // matches by weak comparison, and so does its weak form.
    let valid = etag.as_bytes().len() >= 2
        && etag.as_bytes()[0] == b'"'
        && etag.as_bytes().ends_with(b"\"")
        && !etag.as_bytes()[1..etag.as_bytes().len() - 1].contains(&b'"');
    if valid {
        let mut listed = values
            .first()
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        if listed.iter().filter(|&&b| b == b'"').count() % 2 == 0 {
            listed.extend_from_slice(b", W/");
            listed.extend_from_slice(etag.as_bytes());
            let listed = HeaderValue::from_bytes(&listed).expect("still a valid value");
            assert!(etag::if_none_match_matches([&listed], &etag));
        }
    }
    if request.contains_key(IF_MODIFIED_SINCE) || !values.is_empty() {
        let _ = Conditions::from_request(&request);
    }
    headers::strip_conditionals(&mut request);
    for name in [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
    ] {
        assert!(
            !request.contains_key(&name),
            "strip_conditionals removes {name}"
        );
    }
}

/// `Vary` of a response (first line) and a request (`name: value` lines):
/// names come out lowercase, sorted, unique; the entry stored for a request
/// is selected by that same request.
pub fn vary(data: &[u8]) {
    let (vary_line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let mut response = HeaderMap::new();
    for line in vary_line.split(|&b| b == b'|') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            response.append(VARY, value);
        }
    }
    let request = header_map(rest);
    let names = vary::vary_names(&response);
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    assert!(
        names
            .iter()
            .all(|n| *n == n.to_ascii_lowercase() && !n.is_empty())
    );
    let _ = vary::varies_on_everything(&response);
    let key = vary::vary_key(&names, &request);
    assert_eq!(key, vary::vary_key(&names, &request), "deterministic");
    let entry = axum_cachex_core::CacheEntry {
        status: StatusCode::OK,
        headers: response,
        body: Bytes::new(),
        etag: HeaderValue::from_static("\"x\""),
        stored_at: SystemTime::UNIX_EPOCH,
        fresh_for: Duration::ZERO,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        vary_key: key,
    };
    if entry.headers.contains_key(VARY) {
        assert!(
            vary::selects(&entry, &request),
            "a request selects its own variant"
        );
    }
}

#[cfg(feature = "session")]
pub use session::{cookie, session_token};

#[cfg(feature = "session")]
mod session {
    use std::{
        sync::OnceLock,
        time::{Duration, UNIX_EPOCH},
    };

    use http::{
        HeaderMap, HeaderValue,
        header::{AUTHORIZATION, COOKIE},
    };

    use crate::session::{
        CookieConfig, SessionConfig, TokenFormat,
        token::{Tokens, is_session_id},
        transport::{find_token, read_cookie},
    };

    const SECRET: &str = "a-fuzzing-secret-of-at-least-32-characters";

    fn config(format: TokenFormat) -> SessionConfig {
        SessionConfig::builder(SECRET)
            .token_format(format)
            .cookie(CookieConfig::new().name("sid"))
            .bearer_token(true)
            .build()
            .expect("a valid configuration")
    }

    fn tokens() -> &'static [(SessionConfig, Tokens); 2] {
        static TOKENS: OnceLock<[(SessionConfig, Tokens); 2]> = OnceLock::new();
        TOKENS.get_or_init(|| {
            [TokenFormat::Simple, TokenFormat::Jwt].map(|format| {
                let config = config(format);
                let tokens = Tokens::new(&config);
                (config, tokens)
            })
        })
    }

    /// Simple tokens and JWTs: verifying any text never panics and never
    /// accepts anything but a session id; a token issued for an id
    /// verifies to it; changing one character of it makes it fail.
    pub fn session_token(data: &[u8]) {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let text = String::from_utf8_lossy(data);
        for (_, tokens) in tokens() {
            if let Ok(id) = tokens.verify(&text, now) {
                assert!(is_session_id(&id), "only a session id is accepted");
            }
        }
        if data.len() < 32 {
            return;
        }
        let id = crate::session::token::hex(&data[..32]);
        let flip = usize::from(data[0]);
        for (_, tokens) in tokens() {
            let token = tokens
                .issue(&id, now, None, Duration::from_secs(60))
                .expect("issuing never fails");
            assert_eq!(
                tokens.verify(&token, now).ok().as_deref(),
                Some(id.as_str())
            );
            // One character changed: refused (a JWT's base64 may have
            // slack bits in its last character, so not that one).
            let at = flip % (token.len() - 1);
            let mut forged = token.clone().into_bytes();
            forged[at] = if forged[at] == b'a' { b'b' } else { b'a' };
            let forged = String::from_utf8(forged).expect("ASCII");
            if forged != token {
                assert!(tokens.verify(&forged, now).is_err(), "forgery accepted");
            }
        }
    }

    /// The `Cookie` and `Authorization` headers (one line each per `\n`):
    /// a cookie found is non-empty, trimmed, and has no `;`; finding the
    /// token never panics.
    pub fn cookie(data: &[u8]) {
        let mut headers = HeaderMap::new();
        for (i, line) in data.split(|&b| b == b'\n').enumerate() {
            if let Ok(value) = HeaderValue::from_bytes(line) {
                headers.append(if i % 3 == 2 { AUTHORIZATION } else { COOKIE }, value);
            }
        }
        if let Some(value) = read_cookie(&headers, "sid") {
            assert!(!value.is_empty());
            assert!(!value.contains(';'));
        }
        for (config, _) in tokens() {
            if let Some((token, _)) = find_token(&headers, config) {
                assert!(!token.is_empty());
            }
        }
    }
}

/// The Memcached reply parser: a reply stream of arbitrary bytes (after a
/// command selector and a read size) never panics, and what it gives does
/// not depend on how the stream is cut into reads.
#[cfg(feature = "memcached")]
pub fn memcached_reply(data: &[u8]) {
    use crate::backend::memcached::client::replay::run;
    let [command, chunk, reply @ ..] = data else {
        return;
    };
    let whole = run(*command, reply, usize::MAX);
    let cut = run(*command, reply, usize::from(*chunk));
    assert_eq!(whole, cut, "the result does not depend on read sizes");
}

/// The monitoring routes' query strings: `limit`/`offset`, `purge` and
/// `clear-path` parameters, and the `query_params` of listed keys.
#[cfg(feature = "monitoring")]
pub fn monitoring_query(data: &[u8]) {
    use crate::monitoring::{
        listing::query_params,
        routes::{PurgeRequest, parse_clear_path, parse_page, parse_purge},
    };
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(page) = parse_page(query, 100, 1000) {
        assert!(page.limit <= 1000);
    }
    if let Some(PurgeRequest::All) = parse_purge(query) {
        assert!(query.contains("all"));
    }
    if let Ok((path, _)) = parse_clear_path(query) {
        assert!(path.starts_with('/'));
    }
    let params = query_params(query);
    let listed = CacheKey::encode_stored("GET", "h", "/", query);
    let key = CacheKey::parse_stored(&listed).expect("an encoded key parses");
    assert_eq!(
        query_params(&key.decoded_query()),
        params,
        "listing a key shows the request's parameters"
    );
}
