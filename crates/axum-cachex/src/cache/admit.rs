//! Whether a response may be stored in a shared cache (RFC 9111 §3), and
//! for how long it is fresh (§4.2): a pure function of the layer's
//! configuration and the response head.

use std::time::{Duration, SystemTime};

use axum_cachex_core::MAX_VARY_NAMES;
use http::{HeaderMap, StatusCode, header};

use super::{
    config::Freshness,
    directives::{self, Directives},
    shared::Shared,
    vary,
};

/// Longest heuristic freshness given to a response without explicit
/// freshness (RFC 9111 §4.2.2 leaves the bound to the cache).
const HEURISTIC_CAP: Duration = Duration::from_secs(24 * 3600);

/// Statuses that are heuristically cacheable (RFC 9110 §15.1), minus 206
/// (this cache does not store partial content).
const HEURISTIC_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// The largest delta-seconds value kept (RFC 9111 §1.2.2).
const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// An `Age` value (RFC 9111 §5.1): of a list, the first member counts;
/// digits too many to hold are the largest value; anything else is
/// ignored (`None`).
fn delta_seconds(value: &[u8]) -> Option<u64> {
    let first = value.split(|&b| b == b',').next()?.trim_ascii();
    if first.is_empty() || !first.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs = std::str::from_utf8(first)
        .ok()?
        .parse::<u64>()
        .unwrap_or(MAX_DELTA_SECONDS);
    Some(secs.min(MAX_DELTA_SECONDS))
}

/// How a storable response is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Freshness lifetime, whole seconds.
    pub(crate) fresh_for: Duration,
    /// `stale-while-revalidate` window (zero when it must not be served
    /// stale).
    pub(crate) stale_while_revalidate: Duration,
    /// `stale-if-error` window.
    pub(crate) stale_if_error: Duration,
    /// Age the response already had when the layer received it (`Age`,
    /// and with response-driven freshness the apparent age from `Date`).
    pub(crate) initial_age: Duration,
}

/// What the layer may do with a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Store it under this policy.
    Store(Policy),
    /// Do not store it; the reason goes into `Cache-Status`.
    Refuse(&'static str),
}

/// Decides whether the response with `status` and `headers` may be stored,
/// and how.
pub(crate) fn admit(
    shared: &Shared,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Admission {
    let cc = super::targeted::response_directives(headers, &shared.options.targets);
    if let Some(reason) = refusal(shared, status, headers, &cc) {
        return Admission::Refuse(reason);
    }
    let Some(fresh_for) = lifetime(shared, status, headers, &cc, now) else {
        return Admission::Refuse("no-freshness");
    };
    let has_validator =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    if fresh_for.is_zero() && !has_validator {
        // Could never be reused: every use needs the handler anyway.
        return Admission::Refuse("no-cache");
    }
    let (stale_while_revalidate, stale_if_error) = stale_windows(shared, &cc);
    Admission::Store(Policy {
        fresh_for,
        stale_while_revalidate,
        stale_if_error,
        initial_age: initial_age(headers, now),
    })
}

/// Why a shared cache must not store the response, if it must not.
pub(crate) fn refusal(
    shared: &Shared,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &Directives,
) -> Option<&'static str> {
    let code = status.as_u16();
    if !(200..=599).contains(&code) || code == 206 || code == 304 {
        return Some("status");
    }
    if !storable_status(shared, status, cc) {
        return Some("status");
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Some("set-cookie");
    }
    if shared.credentials.response_carries_token(headers) {
        return Some("credentials");
    }
    // RFC 9111 §5.2.2.3: `must-understand` overrides `no-store` for a
    // status the cache understands, and forbids storing any other.
    if cc.must_understand && !is_known_status(code) {
        return Some("must-understand");
    }
    if cc.no_store && !cc.must_understand {
        return Some("no-store");
    }
    if cc.private && shared.options.per_user.is_none() {
        return Some("private");
    }
    if vary::varies_on_everything(headers) {
        return Some("vary-star");
    }
    if vary::vary_names(headers).len() > MAX_VARY_NAMES {
        // More selecting headers than a variant index holds.
        return Some("vary-too-wide");
    }
    if is_event_stream(headers) {
        return Some("event-stream");
    }
    None
}

/// Statuses the layer stores: the configured ones; with response-driven
/// freshness also the heuristically cacheable ones and any final status
/// that carries explicit freshness or `public` (RFC 9111 §3).
fn storable_status(shared: &Shared, status: StatusCode, cc: &Directives) -> bool {
    if shared.options.cacheable_statuses.contains(&status) {
        return true;
    }
    shared.options.freshness == Freshness::FromResponse
        && (HEURISTIC_STATUSES.contains(&status.as_u16())
            || cc.max_age.is_some()
            || cc.s_maxage.is_some()
            || cc.public)
}

/// The final statuses RFC 9110 defines, whose semantics a cache knows
/// (for `must-understand`).
fn is_known_status(code: u16) -> bool {
    matches!(
        code,
        200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451
            | 500..=508 | 510 | 511
    )
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// The freshness lifetime, or `None` when the response has none the layer
/// may use.
fn lifetime(
    shared: &Shared,
    status: StatusCode,
    headers: &HeaderMap,
    cc: &Directives,
    now: SystemTime,
) -> Option<Duration> {
    if cc.no_cache {
        return Some(Duration::ZERO);
    }
    let explicit = directives::response_lifetime(cc, headers, now);
    let lifetime = match shared.options.freshness {
        // The handler may shorten the layer's ttl, never lengthen it.
        // A shared cache takes `s-maxage` over `max-age`, the layer's own
        // included.
        Freshness::Layer => match (shared.options.s_maxage.or(shared.options.ttl), explicit) {
            (Some(ttl), Some(own)) => Some(ttl.min(own)),
            (ttl, own) => ttl.or(own),
        },
        Freshness::FromResponse => explicit
            .or_else(|| default_ttl(shared, status))
            .or_else(|| heuristic(status, cc, headers, now)),
    }?;
    Some(Duration::from_secs(lifetime.as_secs()))
}

/// The layer's ttl, as the default for a response with a status it is
/// configured to store.
fn default_ttl(shared: &Shared, status: StatusCode) -> Option<Duration> {
    // A shared cache takes `s-maxage` over `max-age`, the layer's own too.
    shared
        .options
        .s_maxage
        .or(shared.options.ttl)
        .filter(|_| shared.options.cacheable_statuses.contains(&status))
}

/// RFC 9111 §4.2.2: for heuristically cacheable statuses, and for any
/// status the response marks `public`.
fn heuristic(
    status: StatusCode,
    cc: &Directives,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    if !HEURISTIC_STATUSES.contains(&status.as_u16()) && !cc.public {
        return None;
    }
    directives::heuristic_lifetime(headers, now, HEURISTIC_CAP)
}

/// Stale windows: none when the response must be revalidated once stale
/// (`must-revalidate`, `proxy-revalidate`, `no-cache`), only its own with
/// `s-maxage`, else the layer's (or, with response-driven freshness, its
/// own first).
fn stale_windows(shared: &Shared, cc: &Directives) -> (Duration, Duration) {
    if cc.must_revalidate || cc.proxy_revalidate || cc.no_cache {
        return (Duration::ZERO, Duration::ZERO);
    }
    let own = |window: Option<u64>| window.map_or(Duration::ZERO, Duration::from_secs);
    if cc.s_maxage.is_some() {
        // RFC 9111 §5.2.2.10: `s-maxage` implies `proxy-revalidate`; only
        // the response's own stale directives can relax that.
        return (own(cc.stale_while_revalidate), own(cc.stale_if_error));
    }
    match shared.options.freshness {
        Freshness::Layer => (shared.stale_while_revalidate, shared.stale_if_error),
        Freshness::FromResponse => (
            cc.stale_while_revalidate
                .map_or(shared.stale_while_revalidate, Duration::from_secs),
            cc.stale_if_error
                .map_or(shared.stale_if_error, Duration::from_secs),
        ),
    }
}

/// RFC 9111 §4.2.3: the `Age` the response arrived with, or the apparent
/// age `now − Date` when larger.
fn initial_age(headers: &HeaderMap, now: SystemTime) -> Duration {
    let age = headers
        .get(header::AGE)
        .and_then(|v| delta_seconds(v.as_bytes()))
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent = headers
        .get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|date| now.duration_since(date).ok())
        .unwrap_or_default();
    age.max(apparent)
}
