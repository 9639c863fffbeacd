//! Errors of the state manager.

use std::time::Duration;

use axum_cachex_core::BackendError;

/// Why a state was rejected as invalid (see [`StateError::Invalid`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidStateReason {
    /// No such state: never issued, already consumed, deleted, or dropped by
    /// the backend after its TTL.
    NotFound,
    /// The value is not shaped like a state this manager issues (wrong
    /// characters or length); the backend was not asked.
    Malformed,
    /// The state exists but is bound to another client (or bound while no
    /// binding was given, or the other way round). It was **not** consumed.
    BindingMismatch,
}

impl std::fmt::Display for InvalidStateReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotFound => "not found or already used",
            Self::Malformed => "malformed",
            Self::BindingMismatch => "bound to another client",
        })
    }
}

/// The error of a [`StateManager`](super::StateManager) operation.
///
/// Answer the client of an OAuth callback with the same response for
/// [`Invalid`](Self::Invalid), [`Expired`](Self::Expired) and
/// [`Corrupt`](Self::Corrupt) (e.g. "login failed, try again"); the variants
/// exist for logs and metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The state is unknown, already used, malformed or bound to another
    /// client.
    #[error("invalid OAuth state: {reason}")]
    Invalid {
        /// Why it was rejected.
        reason: InvalidStateReason,
    },
    /// The state existed but its lifetime had passed. An expired state is
    /// removed when it is consumed.
    #[error("OAuth state expired")]
    Expired,
    /// The stored record could not be decoded (written by something else, or
    /// by an incompatible version). It is removed when it is consumed.
    #[error("stored OAuth state is corrupt")]
    Corrupt {
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The backend failed (unreachable, timed out, rejected the command).
    #[error("OAuth state backend failed")]
    Backend {
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// The requested lifetime is zero, or so large that the expiry time
    /// overflows.
    #[error("invalid OAuth state lifetime {0:?}: it must be non-zero and representable")]
    InvalidTtl(Duration),
    /// The operating system's random number generator failed.
    #[error("could not generate a random OAuth state")]
    Random {
        /// The generator's error.
        #[source]
        source: getrandom::Error,
    },
    /// The record (its metadata) could not be serialised.
    #[error("could not serialise the OAuth state record")]
    Encode {
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A freshly generated state already existed in the backend, which with
    /// 256 random bits means the random generator is broken. Nothing was
    /// overwritten.
    #[error("a freshly generated OAuth state already existed; is the random generator broken?")]
    Collision,
}

impl StateError {
    /// Whether the client sent a state that must be refused
    /// ([`Invalid`](Self::Invalid), [`Expired`](Self::Expired) or
    /// [`Corrupt`](Self::Corrupt)), as opposed to a server-side failure.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Self::Invalid { .. } | Self::Expired | Self::Corrupt { .. }
        )
    }

    pub(crate) fn invalid(reason: InvalidStateReason) -> Self {
        Self::Invalid { reason }
    }
}

impl From<BackendError> for StateError {
    fn from(source: BackendError) -> Self {
        Self::Backend { source }
    }
}

/// Why [`StateManagerBuilder::build`](super::StateManagerBuilder::build)
/// refused a configuration, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateManagerConfigError {
    /// `default_ttl` is zero: every state would be born expired.
    #[error("`default_ttl` must be greater than zero: every state would be born expired")]
    ZeroTtl,
    /// `default_ttl` is so large that expiry times overflow.
    #[error(
        "`default_ttl` of {0:?} is too large: the expiry time overflows; use a lifetime of minutes"
    )]
    TtlOutOfRange(Duration),
    /// `key_prefix` is empty.
    #[error(
        "`key_prefix` must not be empty: without one, a client-supplied state names any key of \
         the backend's namespace; keep the default `oauth_state:` or choose another prefix"
    )]
    EmptyKeyPrefix,
    /// `key_prefix` starts with `http:`, the HTTP cache's namespace.
    #[error(
        "`key_prefix` must not start with `http:`: that is the HTTP cache's namespace, and clearing the cache would delete pending states"
    )]
    CacheNamespace,
}
