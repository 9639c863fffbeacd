//! Typed errors of the session manager.

use std::error::Error as StdError;

use axum_cachex_core::BackendError;

use super::SessionStatus;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a token was refused before any signature question arose (or, for a
/// JWT, why its claims were refused).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token does not have the expected shape: wrong part count or
    /// length, non-hex or uppercase hex, bad characters, too long.
    #[error("malformed token: {reason}")]
    Malformed {
        /// What was wrong.
        reason: &'static str,
    },
    /// The JWT `exp` has passed (beyond the configured leeway).
    #[error("token expired")]
    Expired,
    /// A JWT claim is missing or wrong: `iss`, `aud`, `iat` in the future,
    /// `nbf` not reached.
    #[error("token claims rejected: {reason}")]
    Claims {
        /// Which claim and why.
        reason: &'static str,
    },
    /// The JWT could not be decoded (bad base64 or JSON, a missing `sid`,
    /// `iat` or `exp`, …).
    #[error("JWT rejected")]
    Jwt {
        /// The `jsonwebtoken` error.
        #[source]
        source: BoxError,
    },
}

/// A token that is well formed but fails a security check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// The MAC or JWT signature does not verify, or the JWT names another
    /// algorithm than the configured one.
    #[error("bad token signature")]
    BadSignature,
    /// `ip_binding` is on and the client IP differs from the session's.
    #[error("client IP does not match the session")]
    IpMismatch,
    /// `user_agent_binding` is on and the `User-Agent` differs.
    #[error("user agent does not match the session")]
    UserAgentMismatch,
    /// `ip_binding` is on but the request has no client address: the app
    /// is served without `ConnectInfo`. A server misconfiguration, not the
    /// client's fault ([`SessionError::is_client_error`] is `false`).
    #[error(
        "ip_binding is on but the client address is unknown: serve the router with \
         `into_make_service_with_connect_info::<SocketAddr>()` (e.g. \
         `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`), \
         or turn ip_binding off"
    )]
    ClientAddressUnknown,
}

/// The error of a [`SessionManager`](super::SessionManager) operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The token is malformed, expired or carries wrong claims.
    #[error("invalid session token")]
    Token(#[from] TokenError),
    /// A signature or binding check failed, or a binding cannot be checked.
    #[error("session security check failed: {0}")]
    Security(#[from] SecurityError),
    /// No session with this id exists (never did, expired from the store,
    /// deleted, or moved to a new id).
    #[error("session not found")]
    NotFound,
    /// The session exists but is not active.
    #[error("session is {status}")]
    Invalid {
        /// Its status.
        status: SessionStatus,
    },
    /// The session ran past its expiry or absolute timeout (it is now
    /// marked expired in the store).
    #[error("session expired")]
    Expired,
    /// The stored record could not be decoded.
    #[error("stored session record is corrupt")]
    Corrupt(#[source] serde_json::Error),
    /// The per-user index stayed locked by concurrent logins or logouts of
    /// the same user for longer than the retry budget.
    #[error("session index of the user is busy; retry")]
    Busy,
    /// The request carried a session token, but the store could not be
    /// read (down, frozen, a breaker open): whether the session lives is
    /// unknown, so no new session replaces it.
    #[error("the session store could not be read; retry")]
    StoreUnavailable,
    /// The session record kept changing under concurrent writes (saves,
    /// renewals) for longer than the retry budget of a compare-and-set
    /// write; nothing was written. Retry.
    #[error("session record changed concurrently too often; retry")]
    Conflict,
    /// The backend failed.
    #[error("session backend failed")]
    Backend(#[from] BackendError),
    /// A JWT could not be signed.
    #[error("could not sign the session token")]
    Signing(#[source] BoxError),
    /// The OS random number generator failed.
    #[error("the OS random number generator failed")]
    Random(#[source] getrandom::Error),
}

impl SessionError {
    /// Whether the error comes from the client's token or session (as
    /// opposed to the server: backend, randomness, signing, a missing
    /// client address under `ip_binding`). The middleware treats these as
    /// "no session" quietly and logs the others as warnings.
    pub fn is_client_error(&self) -> bool {
        match self {
            Self::Security(e) => *e != SecurityError::ClientAddressUnknown,
            Self::Token(_) | Self::NotFound | Self::Invalid { .. } | Self::Expired => true,
            _ => false,
        }
    }
}
