//! Cache keys: the default format and custom key builders.

use axum_cachex_core::KEY_SEPARATOR;
use http::{header::HOST, request::Parts};

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
/// Keys that keep the default `{method}|||{host}|||{path}|||{query}` shape
/// keep working with `clear_path` and `clear_pattern`; other shapes can only
/// be removed with `delete` or `clear`.
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

/// The default key: `{method}|||{host}|||{path}|||{query}`, where host is the
/// `Host` header (or the URI authority, or `unknown`) and query the raw query
/// string (empty when none).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultKeyBuilder;

impl KeyBuilder for DefaultKeyBuilder {
    fn build_key(&self, parts: &Parts) -> String {
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or("unknown");
        let path = parts.uri.path();
        let query = parts.uri.query().unwrap_or("");
        let method = parts.method.as_str();
        // Plain pushes rather than `format!`: this runs on every request.
        let mut key = String::with_capacity(
            method.len() + host.len() + path.len() + query.len() + 3 * KEY_SEPARATOR.len(),
        );
        for (i, part) in [method, host, path, query].into_iter().enumerate() {
            if i > 0 {
                key.push_str(KEY_SEPARATOR);
            }
            key.push_str(part);
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_key_format() {
        let (parts, _) = http::Request::get("/users/1?b=2&a=1")
            .header(HOST, "example.com:8080")
            .body(())
            .expect("request")
            .into_parts();
        assert_eq!(
            DefaultKeyBuilder.build_key(&parts),
            "GET|||example.com:8080|||/users/1|||b=2&a=1"
        );
        let (parts, _) = http::Request::get("/x")
            .body(())
            .expect("request")
            .into_parts();
        assert_eq!(DefaultKeyBuilder.build_key(&parts), "GET|||unknown|||/x|||");
    }
}
