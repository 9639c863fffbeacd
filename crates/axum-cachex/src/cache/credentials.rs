//! Which requests carry credentials, and which responses carry tokens.
//!
//! A shared cache must not hand a response made for one authenticated user
//! to anybody else (RFC 9111 §3.5), and must not answer an authenticated
//! request with a response made for somebody else either. The layer treats
//! a request as carrying credentials when it has any of:
//!
//! - `Authorization` (and `Proxy-Authorization`);
//! - the session layer's token header or cookie: the session layer marks
//!   the request with [`Credentialed`] when it runs first, and names its
//!   header and cookie on every response ([`CredentialNames`]) so that a
//!   cache layer running first learns them;
//! - a header or cookie named with
//!   [`credential_header`](crate::CacheLayerBuilder::credential_header) /
//!   [`credential_cookie`](crate::CacheLayerBuilder::credential_cookie);
//! - a [`Credentialed`] marker inserted by any other middleware.
//!
//! The session layer's default names (`X-Session-Token`, cookies `__Host-session`
//! and `session`) are known from the start.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use arc_swap::ArcSwap;
use http::{
    HeaderMap, HeaderName,
    header::{
        AUTHORIZATION, CACHE_CONTROL, COOKIE, IF_MATCH, IF_UNMODIFIED_SINCE, PROXY_AUTHORIZATION,
    },
    request::Parts,
};

/// Marks a request as carrying credentials (or a response as made for
/// one): the cache layer neither serves such a request from the store nor
/// stores its response, unless the layer is explicitly
/// [`public`](crate::CacheLayerBuilder::public).
///
/// The session layer inserts it; an authentication middleware of your own
/// can too, in the request's extensions:
///
/// ```
/// use axum_cachex::Credentialed;
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Credentialed);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Credentialed;

/// A flag that keeps the response to one request out of shared caches,
/// set while the handler runs.
///
/// A middleware that runs outside the cache layer and may attach a
/// credential to the response after the cache layer has seen it (the
/// session layer issuing a token on login) puts one into the request's
/// extensions and sets it when it does; the cache layer then neither
/// stores the response nor hands it to coalesced requests.
///
/// ```
/// use axum_cachex::ShareGuard;
/// let guard = ShareGuard::default();
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(guard.clone());
/// // ... later, while the handler runs:
/// guard.forbid_sharing();
/// assert!(guard.sharing_forbidden());
/// ```
#[derive(Debug, Clone, Default)]
pub struct ShareGuard(Arc<AtomicBool>);

impl ShareGuard {
    /// Keeps the response out of shared caches.
    pub fn forbid_sharing(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`forbid_sharing`](Self::forbid_sharing) was called.
    pub fn sharing_forbidden(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The header and cookie names a middleware reads credentials from. The
/// session layer puts it into every response's extensions; a cache layer
/// that sees it adds the names to those it checks on later requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialNames {
    /// Request headers that carry a credential.
    pub headers: Vec<HeaderName>,
    /// Cookie names that carry a credential.
    pub cookies: Vec<String>,
}

impl CredentialNames {
    /// The names the session layer uses unless configured otherwise.
    pub(crate) fn session_defaults() -> Self {
        Self {
            headers: vec![HeaderName::from_static("x-session-token")],
            cookies: vec!["__Host-session".to_owned(), "session".to_owned()],
        }
    }

    fn union(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for h in &other.headers {
            if !out.headers.contains(h) {
                out.headers.push(h.clone());
            }
        }
        for c in &other.cookies {
            if !out.cookies.contains(c) {
                out.cookies.push(c.clone());
            }
        }
        out
    }

    fn contains(&self, other: &Self) -> bool {
        other.headers.iter().all(|h| self.headers.contains(h))
            && other.cookies.iter().all(|c| self.cookies.contains(c))
    }
}

/// The names one layer checks: configured ones plus those learned from
/// responses. Read on every request without a lock.
pub(crate) struct CredentialCheck {
    names: ArcSwap<CredentialNames>,
}

impl CredentialCheck {
    pub(crate) fn new(configured: CredentialNames) -> Self {
        let names = CredentialNames::session_defaults().union(&configured);
        Self {
            names: ArcSwap::from_pointee(names),
        }
    }

    /// What the cache needs to know of a request's headers, in one pass
    /// over their (few) names; the configured names are loaded only when
    /// a header could be one of them.
    pub(crate) fn scan(&self, parts: &Parts) -> RequestScan {
        let marked = parts.extensions.get::<Credentialed>().is_some();
        let mut scan = RequestScan {
            credentialed: marked,
            ..RequestScan::default()
        };
        let mut names = None;
        for name in parts.headers.keys() {
            if name == AUTHORIZATION || name == PROXY_AUTHORIZATION {
                scan.credentialed = true;
                scan.authorization = true;
            } else if name == CACHE_CONTROL {
                scan.cache_control = true;
            } else if name == IF_MATCH || name == IF_UNMODIFIED_SINCE {
                scan.origin_precondition = true;
            } else if !is_common_request_header(name) {
                let names = names.get_or_insert_with(|| self.names.load());
                let found = if name == COOKIE {
                    // `credential_header(COOKIE)`: every cookie counts.
                    names.headers.contains(name) || has_cookie(&parts.headers, &names.cookies)
                } else {
                    names.headers.contains(name)
                };
                scan.credentialed |= found;
                scan.other_credentials |= found;
            }
        }
        scan.other_credentials |= marked;
        scan
    }

    /// Whether response headers carry a token or secret: a credential
    /// header, or any value marked sensitive.
    pub(crate) fn response_carries_token(&self, headers: &HeaderMap) -> bool {
        let names = self.names.load();
        names.headers.iter().any(|h| headers.contains_key(h))
            || headers.contains_key(AUTHORIZATION)
            || headers.values().any(http::HeaderValue::is_sensitive)
    }

    /// A test for credential headers (dropped from stored entries on
    /// read), with the configured names loaded once.
    pub(crate) fn credential_header_test(&self) -> impl Fn(&HeaderName) -> bool + '_ {
        let names = self.names.load();
        move |name| {
            name == AUTHORIZATION || name == PROXY_AUTHORIZATION || names.headers.contains(name)
        }
    }

    /// Adds names a response announced (the session layer's).
    pub(crate) fn learn(&self, announced: &CredentialNames) {
        if self.names.load().contains(announced) {
            return;
        }
        self.names.rcu(|current| current.union(announced));
    }
}

/// What [`CredentialCheck::scan`] found in a request's headers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestScan {
    /// It carries a credential.
    pub(crate) credentialed: bool,
    /// Among them `Authorization` (or `Proxy-Authorization`), which every
    /// shared cache downstream recognises (RFC 9111 §3.5).
    pub(crate) authorization: bool,
    /// Credentials a cache downstream cannot recognise: a session token, a
    /// configured header or cookie, a [`Credentialed`] mark.
    pub(crate) other_credentials: bool,
    /// It has `Cache-Control`.
    pub(crate) cache_control: bool,
    /// It has `If-Match` or `If-Unmodified-Since`: preconditions for the
    /// origin server.
    pub(crate) origin_precondition: bool,
}

/// Headers that are never credentials: skipped without a lookup.
fn is_common_request_header(name: &HeaderName) -> bool {
    use http::header::{
        ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, CONNECTION, HOST, IF_MODIFIED_SINCE,
        IF_NONE_MATCH, REFERER, USER_AGENT,
    };
    [
        HOST,
        ACCEPT,
        ACCEPT_ENCODING,
        ACCEPT_LANGUAGE,
        USER_AGENT,
        CONNECTION,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        REFERER,
    ]
    .iter()
    .any(|common| common == name)
}

/// Whether a `Cookie` header names one of `cookies`.
fn has_cookie(headers: &HeaderMap, cookies: &[String]) -> bool {
    headers.get_all(COOKIE).iter().any(|value| {
        value.as_bytes().split(|&b| b == b';').any(|pair| {
            let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
            let name = name.trim_ascii();
            cookies.iter().any(|c| c.as_bytes() == name)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(pairs: &[(&'static str, &'static str)]) -> Parts {
        let mut req = http::Request::get("/");
        for (k, v) in pairs {
            req = req.header(*k, *v);
        }
        req.body(()).expect("request").into_parts().0
    }

    #[test]
    fn finds_every_kind_of_credential() {
        let check = CredentialCheck::new(CredentialNames {
            headers: vec![HeaderName::from_static("x-api-key")],
            cookies: vec!["sid".into()],
        });
        assert!(!check.scan(&parts(&[("cookie", "theme=dark")])).credentialed);
        for creds in [
            ("authorization", "Bearer x"),
            ("x-session-token", "t"),
            ("x-api-key", "k"),
            ("cookie", "theme=dark; session=abc"),
            ("cookie", "sid=1"),
        ] {
            assert!(check.scan(&parts(&[creds])).credentialed, "{creds:?}");
        }
        let mut marked = parts(&[]);
        marked.extensions.insert(Credentialed);
        assert!(check.scan(&marked).credentialed);
    }

    #[test]
    fn learns_announced_names() {
        let check = CredentialCheck::new(CredentialNames::default());
        assert!(!check.scan(&parts(&[("x-auth", "1")])).credentialed);
        check.learn(&CredentialNames {
            headers: vec![HeaderName::from_static("x-auth")],
            cookies: vec!["__Host-s".into()],
        });
        assert!(check.scan(&parts(&[("x-auth", "1")])).credentialed);
        assert!(check.scan(&parts(&[("cookie", "__Host-s=v")])).credentialed);
    }
}
