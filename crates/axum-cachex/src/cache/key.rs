//! Cache keys: the default format and custom key builders.

use std::borrow::Cow;

use axum::extract::{NestedPath, OriginalUri};
use axum_cachex_core::{CACHE_NAMESPACE, CacheKey};
use http::{Method, Request, header::HOST, request::Parts};

use super::shared::Shared;

/// Builds the cache key of a request.
///
/// The layer calls it with the request head; for `HEAD` requests the method
/// in `parts` is already `GET`, so both share one entry. Implemented for
/// every `Fn(&Parts) -> String + Send + Sync`, so a closure works:
///
/// ```
/// use axum_cachex::{CacheLayer, KeyBuilder};
/// use std::time::Duration;
///
/// // One entry per path, whatever the query or host.
/// let layer = CacheLayer::builder()
///     .ttl(Duration::from_secs(60))
///     .key_builder(|parts: &http::request::Parts| format!("GET|||any|||{}|||", parts.uri.path()))
///     .build()
///     .expect("valid configuration");
/// # let _ = layer;
/// ```
///
/// The layer stores the key under [`CACHE_NAMESPACE`]
/// (`http:`), whatever the builder returns. Keys made with
/// [`CacheKey::encode`] keep working with `clear_path` and `clear_pattern`;
/// other shapes can only be removed with `delete` or `clear`. A custom key must tell apart every pair of requests that may
/// get different responses: a key that collides serves one client's
/// response to another.
pub trait KeyBuilder: Send + Sync + 'static {
    /// The key for this request head.
    fn build_key(&self, parts: &Parts) -> String;
}

impl<F> KeyBuilder for F
where
    F: Fn(&Parts) -> String + Send + Sync + 'static,
{
    fn build_key(&self, parts: &Parts) -> String {
        self(parts)
    }
}

/// The default key: method, host, path and raw query, each escaped and
/// joined by `|||` (see [`CacheKey::encode`]), so that no two requests
/// share a key unless they agree on all four. The path is the one the
/// client sent, nesting prefixes included (axum's `OriginalUri`).
///
/// The host is the URI's authority (absolute-form requests, HTTP/2) or the
/// `Host` header, lowercased; empty when the request names none. A request
/// whose host is not a valid `host[:port]` is not cached at all: the layer
/// bypasses it before any key is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultKeyBuilder;

impl KeyBuilder for DefaultKeyBuilder {
    fn build_key(&self, parts: &Parts) -> String {
        let host = request_host(parts).unwrap_or_default();
        default_key(parts, &host, false)
    }
}

/// The default key, under [`CACHE_NAMESPACE`] when `stored`.
fn default_key(parts: &Parts, host: &str, stored: bool) -> String {
    let target = request_target(parts);
    let method = match &target.rewritten {
        // In the method part, which path invalidation does not read: the
        // entry stays under its URL's path and query.
        Some(rewritten) => Cow::Owned(format!("{}\0{rewritten}", parts.method)),
        None => Cow::Borrowed(parts.method.as_str()),
    };
    if stored {
        CacheKey::encode_stored(&method, host, target.path, target.query)
    } else {
        CacheKey::encode(&method, host, target.path, target.query)
    }
}

/// What names the response to a request; see [`request_target`].
pub(crate) struct Target<'a> {
    /// The path clients use.
    pub(crate) path: &'a str,
    /// The query clients use.
    pub(crate) query: &'a str,
    /// The target the handler saw, when a middleware rewrote it after
    /// routing.
    pub(crate) rewritten: Option<&'a str>,
}

/// The path and query that name what the handler answers.
///
/// Inside `Router::nest` the request's URI lacks the nesting prefix
/// (`/users` arrives as `/`, `/alice/profile` as `/profile`); axum keeps
/// the full URI as `OriginalUri` and the prefix's pattern as `NestedPath`.
/// The full URI is used then, so that two nested routers never share keys
/// and invalidation by the URL clients use reaches the entry. When the two
/// differ otherwise, a middleware rewrote the URI after routing: the key
/// keeps the client's path and query, and the rewritten target rides along
/// (see [`Target::rewritten`]) so that two rewrites of one URL never share
/// a key.
pub(crate) fn request_target(parts: &Parts) -> Target<'_> {
    let (path, query) = (parts.uri.path(), parts.uri.query().unwrap_or(""));
    let same = Target {
        path,
        query,
        rewritten: None,
    };
    let Some(OriginalUri(original)) = parts.extensions.get::<OriginalUri>() else {
        return same;
    };
    let original_query = original.query().unwrap_or("");
    if original.path() == path && original_query == query {
        return same;
    }
    let nesting = parts
        .extensions
        .get::<NestedPath>()
        .map_or(0, |nested| segments(nested.as_str()));
    let nested_only = strip_segments(original.path(), nesting) == path && original_query == query;
    Target {
        path: original.path(),
        query: original_query,
        rewritten: (!nested_only)
            .then(|| parts.uri.path_and_query().map_or(path, |pq| pq.as_str())),
    }
}

/// How many path segments a route pattern has (`/{tenant}/api` has 2).
fn segments(pattern: &str) -> usize {
    pattern.split('/').filter(|s| !s.is_empty()).count()
}

/// `path` without its first `n` segments; `/` when nothing is left.
fn strip_segments(path: &str, n: usize) -> &str {
    let mut rest = path;
    for _ in 0..n {
        let trimmed = rest.strip_prefix('/').unwrap_or(rest);
        rest = trimmed.find('/').map_or("", |i| &trimmed[i..]);
    }
    if rest.is_empty() { "/" } else { rest }
}

/// The key a request's response is stored under: [`CACHE_NAMESPACE`],
/// then on a route cached per user the user's partition (hex-encoded, so
/// it cannot run into the key), then the key builder's key. `None` when the
/// route is per user and the request has no user. `parts.method` must be
/// `GET` (HEAD shares GET's entry).
pub(crate) fn entry_key(shared: &Shared, parts: &Parts) -> Option<String> {
    let host = request_host(parts).unwrap_or_default();
    entry_key_for_host(shared, parts, &host)
}

/// [`entry_key`] when the request's normalised host is already known:
/// the default key builder then needs no second look at the headers.
pub(crate) fn entry_key_for_host(shared: &Shared, parts: &Parts, host: &str) -> Option<String> {
    let user = match &shared.options.per_user {
        Some(partition) => Some(partition.user(parts)?),
        None => None,
    };
    let custom = shared.options.custom_keys;
    if user.is_none() && !custom {
        // The common case, in one allocation.
        return Some(default_key(parts, host, true));
    }
    let base = if custom {
        shared.options.key_builder.build_key(parts)
    } else {
        default_key(parts, host, false)
    };
    Some(match user {
        Some(user) => format!(
            "{CACHE_NAMESPACE}u{}@{base}",
            crate::random::hex(user.as_bytes())
        ),
        None => format!("{CACHE_NAMESPACE}{base}"),
    })
}

/// [`entry_key`] for a whole request, whatever its method.
pub(crate) fn key_for_request<B>(shared: &Shared, request: &Request<B>) -> Option<String> {
    let mut parts = head_of(request);
    parts.method = Method::GET;
    entry_key(shared, &parts)
}

/// A copy of a request's head (its body left behind).
pub(crate) fn head_of<B>(request: &Request<B>) -> Parts {
    let mut parts = Request::new(()).into_parts().0;
    parts.method = request.method().clone();
    parts.uri = request.uri().clone();
    parts.version = request.version();
    parts.headers = request.headers().clone();
    parts.extensions = request.extensions().clone();
    parts
}

/// The host a request is for, normalised: lowercase `host[:port]`, empty
/// when the request names none. `None` when it names an invalid one.
pub(crate) fn request_host(parts: &Parts) -> Option<Cow<'_, str>> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        // RFC 9112 §3.2: more than one Host is a bad request.
        return None;
    }
    let raw = match (parts.uri.authority(), header) {
        // An absolute-form target names the host (RFC 9112 §3.2.2); a
        // `Host` header that disagrees could steer a handler that reads it
        // into another host's entry: not cached.
        (Some(authority), Some(value))
            if !authority
                .as_str()
                .as_bytes()
                .eq_ignore_ascii_case(value.as_bytes()) =>
        {
            return None;
        }
        (Some(authority), _) => authority.as_str().as_bytes(),
        (None, Some(value)) => value.as_bytes(),
        (None, None) => return Some(Cow::Borrowed("")),
    };
    if is_plain_host(raw) {
        // Valid and lowercase already: the common case, in one pass.
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    let host = std::str::from_utf8(raw).ok()?;
    if !is_valid_host(host) {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

/// A lowercase name of letters, digits, `-`, `.`, `_` and `~`, with an
/// optional port of one to four digits: a subset of what
/// [`is_valid_host`] accepts, checked in one pass.
fn is_plain_host(raw: &[u8]) -> bool {
    let (name, port) = match raw.iter().position(|&b| b == b':') {
        Some(i) => (&raw[..i], &raw[i + 1..]),
        None => (raw, &[][..]),
    };
    let port_ok = raw.len() == name.len()
        || ((1..=4).contains(&port.len()) && port.iter().all(u8::is_ascii_digit));
    port_ok
        && !name.is_empty()
        && name.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_' | b'~')
        })
}

/// `host[:port]` where host is a bracketed IP literal or a name of
/// letters, digits, `-`, `.`, `_` and `~` (RFC 3986 unreserved), and port
/// at most five digits. No userinfo.
fn is_valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port))
            if !name.ends_with(':')
                && (name.starts_with('[') == name.ends_with(']'))
                && !port.contains(']') =>
        {
            (name, Some(port))
        }
        _ => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    let name_ok = if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        !literal.is_empty()
            && literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    };
    port_ok && name_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut req = http::Request::get(uri);
        if let Some(host) = host {
            req = req.header(HOST, host);
        }
        req.body(()).expect("request").into_parts().0
    }

    #[test]
    fn default_key_format() {
        let p = parts("/users/1?b=2&a=1", Some("Example.COM:8080"));
        assert_eq!(
            DefaultKeyBuilder.build_key(&p),
            "GET|||example.com:8080|||/users/1|||b=2&a=1"
        );
        assert_eq!(
            DefaultKeyBuilder.build_key(&parts("/x", None)),
            "GET||||||/x|||"
        );
    }

    #[test]
    fn nesting_strips_whole_segments() {
        assert_eq!(strip_segments("/users", 1), "/");
        assert_eq!(strip_segments("/users/", 1), "/");
        assert_eq!(strip_segments("/t1/api/x", 2), "/x");
        assert_eq!(strip_segments("/a", 0), "/a");
        assert_eq!(segments("/{tenant}/api"), 2);
    }

    #[test]
    fn host_is_validated() {
        for good in [
            "a.example",
            "a.example:80",
            "[::1]:8080",
            "127.0.0.1",
            "[fe80::1]",
            "x_y~z",
        ] {
            assert!(request_host(&parts("/", Some(good))).is_some(), "{good}");
        }
        for bad in [
            "a|||b", "a b", "a:", "a:123456", "a:b", "user@a", "[::1", "::1", "a/b", ":80", "a%2e",
        ] {
            assert!(request_host(&parts("/", Some(bad))).is_none(), "{bad}");
        }
        assert_eq!(
            request_host(&parts("http://Up.Example/p", Some("up.example"))).as_deref(),
            Some("up.example")
        );
        assert_eq!(
            request_host(&parts("http://up.example/p", None)).as_deref(),
            Some("up.example")
        );
        // Target and Host disagree: no host to trust.
        assert!(request_host(&parts("http://a.example/p", Some("b.example"))).is_none());
    }

    #[test]
    fn the_one_pass_check_accepts_only_valid_lowercase_hosts() {
        let samples = [
            "a.example",
            "a.example:80",
            "a.example:8080",
            "a.example:65535",
            "a.example:65536",
            "A.example",
            "a:",
            ":80",
            "a::80",
            "a:8a",
            "[::1]:80",
            "x_y~z",
            "",
            "a b",
            "a:0",
            "a.example:00080",
            "é.example",
        ];
        for host in samples {
            if is_plain_host(host.as_bytes()) {
                assert!(is_valid_host(host), "{host}");
                assert_eq!(host, host.to_ascii_lowercase(), "{host}");
            }
        }
        assert!(is_plain_host(b"a.example:8080"));
        assert!(is_plain_host(b"localhost"));
    }
}
