//! The `Cache-Status` response header (RFC 9211).

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

    /// Adds `detail` unless the status already has one.
    pub(crate) fn with_detail_if_none(mut self, detail: &'static str) -> Self {
        self.detail.get_or_insert(detail);
        self
    }

    pub(crate) fn header_value(&self) -> HeaderValue {
        // Plain pushes rather than `write!`: this runs on every response.
        let mut s = String::with_capacity(64);
        s.push_str(CACHE_NAME);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            s.push_str("; fwd=");
            s.push_str(fwd);
        }
        if let Some(code) = self.fwd_status {
            s.push_str("; fwd-status=");
            push_int(&mut s, i64::from(code));
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(ttl) = self.ttl {
            s.push_str("; ttl=");
            push_int(&mut s, ttl);
        }
        if let Some(detail) = self.detail {
            s.push_str("; detail=");
            s.push_str(detail);
        }
        HeaderValue::from_maybe_shared(bytes::Bytes::from(s))
            .unwrap_or_else(|_| HeaderValue::from_static(CACHE_NAME))
    }
}

/// Appends the decimal form of `n` without going through `fmt`.
fn push_int(s: &mut String, n: i64) {
    if n < 0 {
        s.push('-');
    }
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut rest = n.unsigned_abs();
    loop {
        digits[len] = b'0' + (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &d in digits[..len].iter().rev() {
        s.push(d as char);
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
            CacheStatus::hit(-1234).header_value(),
            "axum-cachex; hit; ttl=-1234"
        );
        assert_eq!(
            CacheStatus::hit(0).header_value(),
            "axum-cachex; hit; ttl=0"
        );
        assert_eq!(
            stale.header_value(),
            "axum-cachex; fwd=stale; fwd-status=500; detail=stale-if-error"
        );
    }
}
