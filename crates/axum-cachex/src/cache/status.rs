//! The `Cache-Status` response header (RFC 9211).

use std::fmt::Write;

use http::{HeaderName, HeaderValue};

/// `cache-status`, as registered by RFC 9211.
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The cache's identifier in `Cache-Status`.
const CACHE_NAME: &str = "axum-cachex";

/// What the layer did with one request, rendered as a `Cache-Status` member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CacheStatus {
    /// Served from the store without running the handler.
    pub(crate) hit: bool,
    /// Why the request went to the handler (`miss`, `stale`, `bypass`, …).
    pub(crate) fwd: Option<&'static str>,
    /// The status the handler returned, when it differs from the response's.
    pub(crate) fwd_status: Option<u16>,
    /// The handler's response was stored.
    pub(crate) stored: bool,
    /// The response was shared from another request's handler run.
    pub(crate) collapsed: bool,
    /// Seconds of freshness left (negative when stale).
    pub(crate) ttl: Option<i64>,
    /// Extra detail: the bypass or not-stored reason.
    pub(crate) detail: Option<&'static str>,
}

impl CacheStatus {
    pub(crate) fn hit(ttl: i64) -> Self {
        Self {
            hit: true,
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    pub(crate) fn bypass(detail: &'static str) -> Self {
        Self {
            fwd: Some("bypass"),
            detail: Some(detail),
            ..Self::default()
        }
    }

    pub(crate) fn forward(fwd: &'static str) -> Self {
        Self {
            fwd: Some(fwd),
            ..Self::default()
        }
    }

    pub(crate) fn with_detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }

    pub(crate) fn header_value(&self) -> HeaderValue {
        let mut s = String::with_capacity(48);
        s.push_str(CACHE_NAME);
        // Writing to a String cannot fail.
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            let _ = write!(s, "; fwd={fwd}");
        }
        if let Some(code) = self.fwd_status {
            let _ = write!(s, "; fwd-status={code}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(s, "; ttl={ttl}");
        }
        if let Some(detail) = self.detail {
            let _ = write!(s, "; detail={detail}");
        }
        HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9211_members() {
        assert_eq!(
            CacheStatus::hit(42).header_value(),
            "axum-cachex; hit; ttl=42"
        );
        let miss = CacheStatus {
            stored: true,
            ..CacheStatus::forward("miss")
        };
        assert_eq!(miss.header_value(), "axum-cachex; fwd=miss; stored");
        assert_eq!(
            CacheStatus::bypass("authorization").header_value(),
            "axum-cachex; fwd=bypass; detail=authorization"
        );
        let stale = CacheStatus {
            fwd_status: Some(500),
            ..CacheStatus::forward("stale")
        }
        .with_detail("stale-if-error");
        assert_eq!(
            stale.header_value(),
            "axum-cachex; fwd=stale; fwd-status=500; detail=stale-if-error"
        );
    }
}
