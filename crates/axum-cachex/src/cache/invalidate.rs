//! Invalidation after unsafe requests (RFC 9111 §4.4): a successful
//! unsafe request makes the cache drop what it stored for the request's
//! URI, and for the `Location` and `Content-Location` of the response when
//! they are on the same host.

use http::{
    HeaderMap, Method, Uri,
    header::{CONTENT_LOCATION, LOCATION},
    request::Parts,
};

use super::{key, shared::Shared};

/// What invalidation needs of the request, kept while the handler runs.
pub(crate) struct RequestTarget {
    pub(crate) method: Method,
    /// The request head as a GET (the method of the entries it deletes).
    get: Parts,
}

impl RequestTarget {
    pub(crate) fn of(parts: &Parts) -> Self {
        let get = clone_parts(parts);
        Self {
            method: parts.method.clone(),
            get,
        }
    }
}

/// What to delete after a successful unsafe request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Invalidation {
    /// One stored response (every `Vary` variant of it).
    Key(String),
    /// Every stored response of a path, all users and queries: on a route
    /// cached per user, where one user's write changes what all see.
    Path(String),
}

/// Deletes what a successful unsafe request invalidates, failing open.
pub(crate) async fn apply(
    shared: &Shared,
    backend: &std::sync::Arc<dyn axum_cachex_core::Backend>,
    target: &RequestTarget,
    response: &HeaderMap,
) {
    for found in targets(shared, target, response) {
        match found {
            Invalidation::Key(key) => super::store::delete(shared, backend, &key).await,
            Invalidation::Path(path) => super::store::clear_path(shared, backend, &path).await,
        }
    }
}

/// What a successful unsafe request invalidates: its own target, and the
/// same-host `Location` and `Content-Location` of its response.
pub(crate) fn targets(
    shared: &Shared,
    target: &RequestTarget,
    response: &HeaderMap,
) -> Vec<Invalidation> {
    let mut heads = vec![clone_parts(&target.get)];
    let host = key::request_host(&target.get).unwrap_or_default();
    let request_path = key::request_target(&target.get).path;
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(reference) = response.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Some(path) = same_origin_path(reference.trim(), &host, request_path) else {
            continue;
        };
        let mut parts = clone_parts(&target.get);
        // The reference is a full path: no nesting prefix to restore.
        parts.extensions.remove::<axum::extract::OriginalUri>();
        parts.uri = path;
        heads.push(parts);
    }
    let mut out = Vec::with_capacity(heads.len());
    for parts in &heads {
        let found = if shared.options.per_user.is_some() {
            Some(Invalidation::Path(
                key::request_target(parts).path.to_owned(),
            ))
        } else {
            // The request's host, also for a target rebuilt from a path
            // (an HTTP/2 request names its host in the URI only).
            key::entry_key_for_host(shared, parts, &host).map(Invalidation::Key)
        };
        if let Some(found) = found.filter(|f| !out.contains(f)) {
            out.push(found);
        }
    }
    out
}

/// The path and query of a `Location`-style reference when it names a
/// resource on `host`: absolute URIs must match the host, relative
/// references are resolved against the request's path.
fn same_origin_path(reference: &str, host: &str, request_path: &str) -> Option<Uri> {
    if let Some((scheme, _)) = reference.split_once("://") {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        let uri: Uri = reference.parse().ok()?;
        if !uri.authority()?.as_str().eq_ignore_ascii_case(host) {
            return None;
        }
        return uri.path_and_query()?.as_str().parse().ok();
    }
    if reference.starts_with("//") {
        return None;
    }
    let absolute = if reference.starts_with('/') {
        reference.to_owned()
    } else if reference.starts_with('?') {
        // Only a new query: the request's own path (RFC 3986 §5.2.2).
        format!("{request_path}{reference}")
    } else {
        // A relative path: replace the last segment of the request's path.
        let dir = request_path.rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{dir}/{reference}")
    };
    let (path, query) = match absolute.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (absolute.as_str(), None),
    };
    let path = remove_dot_segments(path);
    match query {
        Some(query) => format!("{path}?{query}").parse().ok(),
        None => path.parse().ok(),
    }
}

/// RFC 3986 §5.2.4 for an absolute path: `.` and `..` segments resolved.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
        // A trailing `.` or `..` names a directory: keep its slash.
        if i == last && (*segment == "." || *segment == "..") {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

fn clone_parts(parts: &Parts) -> Parts {
    let mut out = http::Request::new(()).into_parts().0;
    out.uri = parts.uri.clone();
    out.version = parts.version;
    out.headers = parts.headers.clone();
    out.extensions = parts.extensions.clone();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_only() {
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        assert_eq!(same_origin_path("/a?b=1", "h", "/x/y"), Some(uri("/a?b=1")));
        assert_eq!(same_origin_path("http://H/a", "h", "/x"), Some(uri("/a")));
        assert_eq!(same_origin_path("http://other/a", "h", "/x"), None);
        assert_eq!(same_origin_path("//other/a", "h", "/x"), None);
        assert_eq!(same_origin_path("z", "h", "/x/y"), Some(uri("/x/z")));
        assert_eq!(
            same_origin_path("../list", "h", "/items/1"),
            Some(uri("/list"))
        );
        assert_eq!(
            same_origin_path("/a/./b/../c?q=1", "h", "/"),
            Some(uri("/a/c?q=1"))
        );
        assert_eq!(same_origin_path("..", "h", "/a/b/c"), Some(uri("/a/")));
        assert_eq!(same_origin_path("?q=2", "h", "/a/b"), Some(uri("/a/b?q=2")));
    }
}
