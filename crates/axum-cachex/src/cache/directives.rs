//! Reading the handler's `Cache-Control` header.

use http::{HeaderMap, header::CACHE_CONTROL};

/// Why the handler's own headers forbid storing its response.
pub(crate) fn handler_forbids_storing(headers: &HeaderMap) -> Option<&'static str> {
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for directive in value.split(',') {
            let name = directive.split('=').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("no-store") {
                return Some("no-store");
            }
            if name.eq_ignore_ascii_case("private") {
                return Some("private");
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn finds_no_store_and_private() {
        let mut h = HeaderMap::new();
        assert_eq!(handler_forbids_storing(&h), None);
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=5, NO-STORE"),
        );
        assert_eq!(handler_forbids_storing(&h), Some("no-store"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("private=\"x\""));
        assert_eq!(handler_forbids_storing(&h), Some("private"));
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        );
        assert_eq!(handler_forbids_storing(&h), None);
    }
}
