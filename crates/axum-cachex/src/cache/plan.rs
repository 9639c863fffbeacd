//! The first step of a request: what kind of request it is for the cache.

use std::borrow::Cow;

use http::{Method, request::Parts};

use super::{
    credentials::{Credentialed, RequestScan},
    directives::Directives,
    key,
    shared::Shared,
    status::CacheStatus,
};

/// What the layer does with a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Not GET or HEAD: to the handler; a success invalidates.
    Unsafe,
    /// A `no_store` route: to the handler, answered with `no-store`.
    NoStore,
    /// To the handler, never stored nor served from the store; ETag and
    /// 304 still work. The status says why.
    Uncached(CacheStatus),
    /// `only-if-cached`, and the store cannot answer: 504 at once.
    OnlyIfCachedMiss,
    /// Served from the store when possible, stored under `key` otherwise.
    Cached {
        /// The base key of the request (HEAD shares GET's).
        key: String,
        /// False when the request says `no-store`: served from the store,
        /// but its response is not stored.
        may_store: bool,
        /// `only-if-cached`: a miss is answered 504, not forwarded.
        only_if_cached: bool,
    },
}

/// Classifies a request. Pure: no I/O.
pub(crate) fn plan(shared: &Shared, parts: &Parts) -> Plan {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return Plan::Unsafe;
    }
    let scan = shared.credentials.scan(parts);
    let cc = if scan.cache_control {
        Directives::from_headers(&parts.headers)
    } else {
        Directives::default()
    };
    let host = match cacheable_host(shared, parts, scan) {
        Ok(host) => host,
        // RFC 9111 §5.2.1.7: nothing may come from the store, and the
        // client does not want the handler asked.
        Err(_) if cc.only_if_cached => return Plan::OnlyIfCachedMiss,
        Err(plan) => return plan,
    };
    let Some(key) = key::entry_key_for_host(shared, parts, &host) else {
        if cc.only_if_cached {
            return Plan::OnlyIfCachedMiss;
        }
        return Plan::Uncached(CacheStatus::bypass("no-user"));
    };
    Plan::Cached {
        key,
        may_store: !cc.no_store,
        only_if_cached: cc.only_if_cached,
    }
}

/// The request's normalised host when the store may answer it, else the
/// plan that says why not.
fn cacheable_host<'a>(
    shared: &Shared,
    parts: &'a Parts,
    scan: RequestScan,
) -> Result<Cow<'a, str>, Plan> {
    if shared.options.no_store {
        return Err(Plan::NoStore);
    }
    let Some(host) = key::request_host(parts) else {
        return Err(Plan::Uncached(CacheStatus::bypass("invalid-host")));
    };
    if scan.credentialed && !shared.options.public && shared.options.per_user.is_none() {
        // RFC 9111 §3.5, and the reverse: an authenticated request gets
        // neither a stored response nor its own response stored.
        let detail = if scan.other_credentials {
            "credentials"
        } else {
            "authorization"
        };
        return Err(Plan::Uncached(CacheStatus::bypass(detail)));
    }
    if !shared.stores() {
        let status = CacheStatus::forward("miss");
        return Err(Plan::Uncached(
            match (shared.options.no_cache, shared.options.private) {
                (true, _) => status.with_detail("no-cache"),
                (_, true) => status.with_detail("private"),
                _ => status,
            },
        ));
    }
    if scan.origin_precondition {
        // RFC 9111 §4.3.2: preconditions meant for the origin server are
        // not the cache's to evaluate; the handler answers them.
        return Err(Plan::Uncached(
            CacheStatus::forward("miss").with_detail("precondition"),
        ));
    }
    Ok(host)
}

/// Whether the response the handler made must not be shared, whatever the
/// request looked like: an inner middleware (the session layer) saw
/// credentials.
pub(crate) fn response_is_credentialed(shared: &Shared, extensions: &http::Extensions) -> bool {
    extensions.get::<Credentialed>().is_some()
        && !shared.options.public
        && shared.options.per_user.is_none()
}
