//! Who may read the monitoring data: a bearer token, a predicate, or — only
//! for local use — everyone.

use std::{fmt, sync::Arc};

use http::{HeaderValue, StatusCode, header, request::Parts};
use subtle::ConstantTimeEq;

/// Decides whether a request may use the guarded monitoring routes.
///
/// Every monitoring route that returns data or changes the cache is
/// guarded; only the dashboard's HTML shell (which contains no data) is not.
///
/// - [`Guard::bearer`]: the request must carry `Authorization: Bearer
///   <token>`; compared in constant time. Rejections are `401` with
///   `WWW-Authenticate: Bearer` and a JSON error.
/// - [`Guard::predicate`]: your own check on the request head (a source
///   address set by your proxy, a header your SSO gateway adds, …).
///   Rejections are `403` with a JSON error.
/// - [`Guard::insecure_allow_all`]: no check at all, for a listener bound
///   to loopback during development.
///
/// ```
/// use axum_cachex::monitoring::Guard;
///
/// let guard = Guard::bearer(std::env::var("CACHEX_MONITORING_TOKEN").unwrap_or_else(|_| {
///     "a-long-random-secret-from-your-secret-store".to_owned()
/// }));
/// # let _ = guard;
/// let internal_only = Guard::predicate(|parts| {
///     parts.headers.get("x-internal-user").is_some()
/// });
/// # let _ = internal_only;
/// ```
#[derive(Clone)]
pub struct Guard(Kind);

#[derive(Clone)]
enum Kind {
    Bearer(Arc<[u8]>),
    Predicate(Arc<dyn Fn(&Parts) -> bool + Send + Sync>),
    AllowAll,
    /// A bearer guard built with an unusable token: refuses everything.
    Misconfigured,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        let kind = match self.0 {
            Kind::Bearer(_) => "bearer",
            Kind::Predicate(_) => "predicate",
            Kind::AllowAll => "insecure_allow_all",
            Kind::Misconfigured => "misconfigured",
        };
        f.debug_tuple("Guard").field(&kind).finish()
    }
}

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// A bearer token that is not the configured one.
    InvalidToken,
    /// The predicate said no.
    Forbidden,
    /// The guard's token was unusable: nothing is let through.
    Misconfigured,
}

impl Rejection {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::MissingToken | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Misconfigured => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3) for a 401.
    pub(crate) fn challenge(self) -> Option<HeaderValue> {
        match self {
            Self::MissingToken => Some(HeaderValue::from_static(
                r#"Bearer realm="axum-cachex monitoring""#,
            )),
            Self::InvalidToken => Some(HeaderValue::from_static(
                r#"Bearer realm="axum-cachex monitoring", error="invalid_token""#,
            )),
            Self::Forbidden | Self::Misconfigured => None,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::MissingToken => {
                "monitoring routes need `Authorization: Bearer <token>` (the dashboard reads the token from `#token=<token>` in its URL)"
            }
            Self::InvalidToken => "the bearer token is not valid for the monitoring routes",
            Self::Forbidden => "the monitoring guard refused this request",
            Self::Misconfigured => {
                "the monitoring token is empty or not visible ASCII: every request is refused until it is fixed"
            }
        }
    }
}

impl Guard {
    /// Requires `Authorization: Bearer <token>`, compared in constant time.
    ///
    /// Use a long random secret (32 bytes of randomness, e.g. base64 or hex
    /// encoded) kept out of source control.
    ///
    /// A token that is empty or not visible ASCII (an unset environment
    /// variable, say) cannot be matched: the guard then refuses every
    /// request with `503` and a message saying why, and logs an error now.
    /// The application keeps running; the routes stay closed.
    pub fn bearer(token: impl Into<String>) -> Self {
        let token = token.into();
        let usable = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
        if !usable {
            tracing::error!(
                "monitoring bearer token is empty or not visible ASCII: the monitoring routes refuse every request"
            );
            return Self(Kind::Misconfigured);
        }
        Self(Kind::Bearer(Arc::from(token.into_bytes())))
    }

    /// Lets a request through when `allow` returns true for its head.
    pub fn predicate(allow: impl Fn(&Parts) -> bool + Send + Sync + 'static) -> Self {
        Self(Kind::Predicate(Arc::new(allow)))
    }

    /// Lets every request through.
    ///
    /// **Insecure**: the routes list cache keys (paths and query strings
    /// of your users' requests), previews of cached bodies, and can clear
    /// the cache. Use it only on a listener bound to loopback during local
    /// development, or behind a proxy that authenticates for you.
    pub fn insecure_allow_all() -> Self {
        Self(Kind::AllowAll)
    }

    pub(crate) fn check(&self, parts: &Parts) -> Result<(), Rejection> {
        match &self.0 {
            Kind::AllowAll => Ok(()),
            Kind::Misconfigured => Err(Rejection::Misconfigured),
            Kind::Predicate(allow) => {
                if allow(parts) {
                    Ok(())
                } else {
                    Err(Rejection::Forbidden)
                }
            }
            Kind::Bearer(expected) => {
                let presented = bearer_token(parts).ok_or(Rejection::MissingToken)?;
                // `ct_eq` on slices of different lengths returns false at
                // once: that reveals the token's length, not its content.
                if bool::from(presented.ct_eq(expected)) {
                    Ok(())
                } else {
                    Err(Rejection::InvalidToken)
                }
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme matched
/// case-insensitively, RFC 9110 §11.1).
fn bearer_token(parts: &Parts) -> Option<&[u8]> {
    let value = parts.headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: Option<&str>) -> Parts {
        let mut builder = http::Request::builder();
        if let Some(a) = auth {
            builder = builder.header("authorization", a);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn bearer_accepts_only_the_token() {
        let guard = Guard::bearer("s3cret-token");
        assert_eq!(guard.check(&parts(Some("Bearer s3cret-token"))), Ok(()));
        assert_eq!(guard.check(&parts(Some("bearer  s3cret-token "))), Ok(()));
        assert_eq!(
            guard.check(&parts(Some("Bearer s3cret-tokeN"))),
            Err(Rejection::InvalidToken)
        );
        assert_eq!(
            guard.check(&parts(Some("Bearer s3cret"))),
            Err(Rejection::InvalidToken)
        );
        assert_eq!(guard.check(&parts(None)), Err(Rejection::MissingToken));
        assert_eq!(
            guard.check(&parts(Some("Basic czNjcmV0"))),
            Err(Rejection::MissingToken)
        );
        assert_eq!(
            guard.check(&parts(Some("Bearer "))),
            Err(Rejection::MissingToken)
        );
        assert!(!format!("{guard:?}").contains("s3cret"));
    }

    #[test]
    fn an_unusable_token_closes_the_routes_without_panicking() {
        for token in ["", "with space"] {
            let guard = Guard::bearer(token);
            assert_eq!(
                guard.check(&parts(Some(&format!("Bearer {token}")))),
                Err(Rejection::Misconfigured),
                "{token:?}"
            );
            assert_eq!(
                Rejection::Misconfigured.status(),
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
    }

    #[test]
    fn predicate_and_allow_all() {
        let guard = Guard::predicate(|p| p.headers.contains_key("authorization"));
        assert_eq!(guard.check(&parts(None)), Err(Rejection::Forbidden));
        assert_eq!(guard.check(&parts(Some("x"))), Ok(()));
        assert_eq!(Guard::insecure_allow_all().check(&parts(None)), Ok(()));
    }
}
