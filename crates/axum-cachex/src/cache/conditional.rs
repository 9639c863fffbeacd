//! Conditional requests: `If-None-Match` and `If-Modified-Since`
//! (RFC 9110 §13).

use std::time::SystemTime;

use axum_cachex_core::CacheEntry;
use http::{
    HeaderMap, HeaderValue, StatusCode,
    header::{DATE, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED},
};

use super::etag::if_none_match_matches;

/// The validators a request carries.
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    if_none_match: Vec<HeaderValue>,
    if_modified_since: Option<SystemTime>,
}

impl Conditions {
    pub(crate) fn from_request(headers: &HeaderMap) -> Self {
        let if_none_match: Vec<HeaderValue> =
            headers.get_all(IF_NONE_MATCH).iter().cloned().collect();
        // An invalid date is ignored, as RFC 9110 §13.1.3 requires.
        // RFC 9110 §13.1.3: a recipient must ignore an invalid date, and
        // two field lines make it invalid.
        let mut lines = headers.get_all(IF_MODIFIED_SINCE).iter();
        let if_modified_since = match (lines.next(), lines.next()) {
            (Some(line), None) => line
                .to_str()
                .ok()
                .and_then(|v| httpdate::parse_http_date(v).ok()),
            _ => None,
        };
        Self {
            if_none_match,
            if_modified_since,
        }
    }

    /// Whether a response with this status, ETag and headers is "not
    /// modified" for the request. Only a 2xx response can be (RFC 9110
    /// §13.2.1: preconditions are evaluated when the response would be
    /// 2xx). `If-None-Match`, when present, decides alone (§13.2.2);
    /// otherwise `If-Modified-Since` is compared with the response's
    /// `Last-Modified`.
    pub(crate) fn not_modified(
        &self,
        status: StatusCode,
        etag: &HeaderValue,
        response_headers: &HeaderMap,
    ) -> bool {
        self.evaluate(status, etag, response_headers.get(LAST_MODIFIED))
    }

    /// [`not_modified`](Self::not_modified) for a response that may have
    /// no entity tag: then `If-None-Match` matches only `*` (RFC 9110
    /// §13.1.2: any current representation).
    pub(crate) fn not_modified_by(
        &self,
        status: StatusCode,
        etag: Option<&HeaderValue>,
        response_headers: &HeaderMap,
    ) -> bool {
        let star = self
            .if_none_match
            .iter()
            .any(|v| v.as_bytes().trim_ascii() == b"*");
        if star {
            // Any current representation matches `*`, whatever its tag.
            return status.is_success();
        }
        match etag {
            Some(etag) => self.not_modified(status, etag, response_headers),
            None if !self.if_none_match.is_empty() => {
                status.is_success()
                    && self
                        .if_none_match
                        .iter()
                        .any(|v| v.as_bytes().trim_ascii() == b"*")
            }
            None => self.evaluate(
                status,
                &HeaderValue::from_static("\"\""),
                response_headers.get(LAST_MODIFIED),
            ),
        }
    }

    /// [`not_modified`](Self::not_modified) for a stored response, which
    /// without `Last-Modified` counts as modified at its `Date` (RFC 9111
    /// §4.3.2).
    pub(crate) fn stored_not_modified(&self, entry: &CacheEntry) -> bool {
        if self.if_none_match.is_empty() && self.if_modified_since.is_none() {
            return false;
        }
        let modified = entry
            .headers
            .get(LAST_MODIFIED)
            .or_else(|| entry.headers.get(DATE));
        self.evaluate(entry.status, &entry.etag, modified)
    }

    fn evaluate(
        &self,
        status: StatusCode,
        etag: &HeaderValue,
        last_modified: Option<&HeaderValue>,
    ) -> bool {
        if !status.is_success() {
            return false;
        }
        if !self.if_none_match.is_empty() {
            return if_none_match_matches(&self.if_none_match, etag);
        }
        let Some(since) = self.if_modified_since else {
            return false;
        };
        last_modified
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|modified| modified <= since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn if_modified_since_and_precedence() {
        let etag = HeaderValue::from_static("\"a\"");
        let res = headers(&[("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        let later = Conditions::from_request(&headers(&[(
            "if-modified-since",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        )]));
        assert!(later.not_modified(StatusCode::OK, &etag, &res));
        let earlier = Conditions::from_request(&headers(&[(
            "if-modified-since",
            "Tue, 20 Oct 2015 07:28:00 GMT",
        )]));
        assert!(!earlier.not_modified(StatusCode::OK, &etag, &res));
        // If-None-Match wins over If-Modified-Since.
        let both = Conditions::from_request(&headers(&[
            ("if-none-match", "\"other\""),
            ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]));
        assert!(!both.not_modified(StatusCode::OK, &etag, &res));
        let bad = Conditions::from_request(&headers(&[("if-modified-since", "yesterday")]));
        assert!(!bad.not_modified(StatusCode::OK, &etag, &res));
        // No Last-Modified: never "not modified" by date.
        assert!(!later.not_modified(StatusCode::OK, &etag, &HeaderMap::new()));
        // Only a 2xx answer can become a 304.
        let star = Conditions::from_request(&headers(&[("if-none-match", "*")]));
        assert!(star.not_modified(StatusCode::OK, &etag, &res));
        for status in [StatusCode::MOVED_PERMANENTLY, StatusCode::NOT_FOUND] {
            assert!(!star.not_modified(status, &etag, &res));
            assert!(!later.not_modified(status, &etag, &res));
        }
    }
}
