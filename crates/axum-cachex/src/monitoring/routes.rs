//! The route handlers: guard, parameters, backend call, JSON.

use crate::cache::{purge, tags};
use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use axum_cachex_core::{Backend, BackendError};
use http::{HeaderValue, StatusCode, header, request::Parts};
use serde::Serialize;

use super::{
    Guard,
    guard::Rejection,
    listing::{self, Loaded, Page},
    metrics,
};
use crate::{BackendProxy, Clock, Registry};

/// Where the routes find the backend to inspect.
#[derive(Clone)]
pub(crate) enum Source {
    Fixed(Arc<dyn Backend>),
    Proxy(BackendProxy),
    /// The backend of the registry's layers, else
    /// [`BackendProxy::global`]'s; looked up per request.
    Default,
}

impl Inner {
    /// The backend the routes list and clear.
    pub(crate) fn backend(&self) -> Arc<dyn Backend> {
        match &self.source {
            Source::Fixed(b) => Arc::clone(b),
            Source::Proxy(p) => p.backend(),
            Source::Default => self
                .registry
                .layer_backend()
                .unwrap_or_else(|| BackendProxy::global().backend()),
        }
    }
}

/// Layer names the routes report on.
pub(crate) type LayerFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The configuration every handler shares.
pub(crate) struct Inner {
    pub(crate) guard: Guard,
    pub(crate) source: Source,
    pub(crate) clock: Clock,
    pub(crate) default_limit: usize,
    pub(crate) max_limit: usize,
    pub(crate) backend_timeout: Duration,
    pub(crate) layer_filter: LayerFilter,
    pub(crate) registry: Registry,
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");
/// Monitoring answers are never stored: not by browsers or proxies, and not
/// by a [`CacheLayer`](crate::CacheLayer) wrapping the whole router (it
/// honours the handler's `no-store`), which could otherwise hand an
/// authorized answer to an unauthorized client.
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, JSON);
            headers.insert(header::CACHE_CONTROL, NO_STORE);
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "monitoring: could not serialize a response");
            (StatusCode::INTERNAL_SERVER_ERROR, "serialization failed").into_response()
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json(
        status,
        &ErrorBody {
            error: code,
            message,
        },
    )
}

/// Why a monitoring request gets an error answer.
enum Failure {
    Guard(Rejection),
    /// A request that changes the cache, labelled cross-site by the browser.
    CrossSite(&'static str),
    BadRequest(&'static str),
    Backend {
        operation: &'static str,
        error: BackendError,
    },
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Self::Guard(rejection) => {
                let code = match rejection.status() {
                    StatusCode::FORBIDDEN => "forbidden",
                    _ => "unauthorized",
                };
                let mut response = error(rejection.status(), code, rejection.message());
                if let Some(challenge) = rejection.challenge() {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, challenge);
                }
                response
            }
            Self::BadRequest(message) => error(StatusCode::BAD_REQUEST, "bad_request", message),
            Self::CrossSite(route) => error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("{route} does not accept cross-site requests"),
            ),
            Self::Backend {
                operation,
                error: e,
            } => {
                tracing::warn!(
                    operation,
                    error = %e,
                    source = ?std::error::Error::source(&e),
                    "monitoring: backend call failed"
                );
                let status = match &e {
                    BackendError::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
                    e if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                error(status, "backend", &e.to_string())
            }
        }
    }
}

fn check_guard(inner: &Inner, parts: &Parts) -> Result<(), Failure> {
    inner.guard.check(parts).map_err(Failure::Guard)
}

/// Runs a backend call under the monitoring timeout.
async fn timed<T>(
    inner: &Inner,
    backend: &dyn Backend,
    operation: &'static str,
    call: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, Failure> {
    let result = match tokio::time::timeout(inner.backend_timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::Timeout {
            backend: backend.name(),
            timeout: inner.backend_timeout,
        }),
    };
    result.map_err(|error| Failure::Backend { operation, error })
}

fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

fn raw_query(parts: &Parts) -> &str {
    parts.uri.query().unwrap_or("")
}

/// `limit` (default and maximum from the configuration) and `offset`.
fn page(inner: &Inner, parts: &Parts) -> Result<Page, Failure> {
    parse_page(raw_query(parts), inner.default_limit, inner.max_limit).map_err(Failure::BadRequest)
}

/// `limit` and `offset` from a listing route's raw query string; the
/// message of the 400 answer for an invalid one.
pub(crate) fn parse_page(
    query: &str,
    default_limit: usize,
    max_limit: usize,
) -> Result<Page, &'static str> {
    let mut page = Page {
        limit: default_limit.min(max_limit),
        offset: 0,
    };
    for (name, value) in query_pairs(query) {
        match name.as_str() {
            "limit" => {
                let limit: usize = value
                    .parse()
                    .map_err(|_| "`limit` must be a non-negative integer")?;
                page.limit = limit.min(max_limit);
            }
            "offset" => {
                page.offset = value
                    .parse()
                    .map_err(|_| "`offset` must be a non-negative integer")?;
            }
            _ => {}
        }
    }
    Ok(page)
}

/// What `POST purge` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PurgeRequest {
    /// `?pattern=/glob/*`.
    Pattern(String),
    /// `?key=<cache key>`.
    Key(String),
    /// `?tag=product:42`.
    Tag(String),
    /// `?all=true`.
    All,
}

/// The purge request of a raw query string: exactly one of `pattern`,
/// `key`, `tag` or `all=true`, else `None`.
pub(crate) fn parse_purge(query: &str) -> Option<PurgeRequest> {
    let mut pairs = query_pairs(query);
    let (name, value) = pairs.next()?;
    if pairs.next().is_some() {
        return None;
    }
    match name.as_str() {
        "pattern" => Some(PurgeRequest::Pattern(value)),
        "key" => Some(PurgeRequest::Key(value)),
        "tag" => Some(PurgeRequest::Tag(value)),
        "all" if value == "true" => Some(PurgeRequest::All),
        _ => None,
    }
}

/// `path` and `include_params` of `POST clear-path` from a raw query
/// string; the message of the 400 answer for an invalid one.
pub(crate) fn parse_clear_path(query: &str) -> Result<(String, bool), &'static str> {
    let mut path = None;
    let mut include_params = false;
    for (name, value) in query_pairs(query) {
        match name.as_str() {
            "path" => path = Some(value),
            "include_params" => {
                include_params = match value.as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" | "" => false,
                    _ => return Err("`include_params` must be true or false"),
                }
            }
            _ => {}
        }
    }
    match path.filter(|p| p.starts_with('/')) {
        Some(path) => Ok((path, include_params)),
        None => Err("`path` is required and must start with `/`, e.g. ?path=/products"),
    }
}

async fn listing_request(inner: &Inner, request: Request) -> Result<(Loaded, Page), Failure> {
    let (parts, _) = request.into_parts();
    check_guard(inner, &parts)?;
    let page = page(inner, &parts)?;
    let backend = inner.backend();
    let loaded = timed(
        inner,
        backend.as_ref(),
        "entries",
        listing::load(backend.as_ref()),
    )
    .await?;
    Ok((loaded, page))
}

fn counters(inner: &Inner) -> serde_json::Map<String, serde_json::Value> {
    metrics::totals_json(&route_stats(inner))
}

fn route_stats(inner: &Inner) -> Vec<metrics::RouteStats> {
    metrics::route_stats(&inner.registry, inner.layer_filter.as_ref())
}

/// `GET {prefix}/cached-hits`.
pub(crate) async fn cached_hits(inner: Arc<Inner>, request: Request) -> Response {
    match listing_request(&inner, request).await {
        Ok((loaded, page)) => {
            let body = listing::cached_hits(&loaded, inner.clock.now(), page, counters(&inner));
            json(StatusCode::OK, &body)
        }
        Err(failure) => failure.into_response(),
    }
}

/// `GET {prefix}/cached-records`.
pub(crate) async fn cached_records(inner: Arc<Inner>, request: Request) -> Response {
    match listing_request(&inner, request).await {
        Ok((loaded, page)) => {
            let body = listing::cached_records(&loaded, inner.clock.now(), page, counters(&inner));
            json(StatusCode::OK, &body)
        }
        Err(failure) => failure.into_response(),
    }
}

/// `GET {prefix}/stats`.
pub(crate) async fn stats(inner: Arc<Inner>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if let Err(failure) = check_guard(&inner, &parts) {
        return failure.into_response();
    }
    let backend = inner.backend();
    let routes = route_stats(&inner);
    json(
        StatusCode::OK,
        &metrics::stats_body(backend.as_ref(), routes, inner.registry.manager_stats()),
    )
}

/// `GET {prefix}/metrics`.
pub(crate) async fn prometheus(inner: Arc<Inner>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if let Err(failure) = check_guard(&inner, &parts) {
        return failure.into_response();
    }
    let backend = inner.backend();
    let routes = route_stats(&inner);
    match metrics::prometheus_text(&routes, inner.registry.manager_stats(), backend.as_ref()) {
        Ok(text) => {
            let mut response = Response::new(Body::from(text));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            );
            headers.insert(header::CACHE_CONTROL, NO_STORE);
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "monitoring: could not encode metrics");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics",
                "could not encode metrics",
            )
        }
    }
}

#[derive(Serialize)]
struct Cleared {
    path: String,
    include_params: bool,
    cleared: u64,
    /// False on backends that invalidate by generation counter (Memcached):
    /// the entries are gone but `cleared` is 0.
    exact_count: bool,
}

/// The checks of every route that changes the cache: the guard, and no
/// cross-site request. A guard that does not rely on a header the browser
/// adds by itself (a predicate on the client address, say) would let
/// another site's page make the admin's browser post here; browsers label
/// such requests.
fn check_write(inner: &Inner, parts: &Parts, route: &'static str) -> Result<(), Failure> {
    check_guard(inner, parts)?;
    let cross_site = parts
        .headers
        .get("sec-fetch-site")
        .is_some_and(|site| !matches!(site.as_bytes(), b"same-origin" | b"none"));
    if cross_site {
        return Err(Failure::CrossSite(route));
    }
    Ok(())
}

/// `POST {prefix}/purge?pattern=/glob/*`, `?key=<cache key>`,
/// `?tag=<tag>` or `?all=true`: exactly one of them.
pub(crate) async fn purge(inner: Arc<Inner>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if let Err(refused) = check_write(&inner, &parts, "purge") {
        return refused.into_response();
    }
    let Some(request) = parse_purge(raw_query(&parts)) else {
        return Failure::BadRequest(
            "give exactly one of ?pattern=/glob/*, ?key=<cache key>, ?tag=<tag> or ?all=true",
        )
        .into_response();
    };
    if let PurgeRequest::Tag(tag) = &request {
        if !tags::is_valid(tag) {
            return Failure::BadRequest(
                "a tag is 1 to 256 visible ASCII characters without `,` or `=`",
            )
            .into_response();
        }
    }
    let backend = inner.backend();
    let backend = backend.as_ref();
    let (operation, arg) = match &request {
        PurgeRequest::Pattern(pattern) => ("clear_pattern", pattern.as_str()),
        PurgeRequest::Key(key) => ("delete", key.as_str()),
        PurgeRequest::Tag(tag) => ("invalidate_tag", tag.as_str()),
        PurgeRequest::All => ("clear", ""),
    };
    let result = match operation {
        "clear_pattern" => {
            timed(
                &inner,
                backend,
                operation,
                purge::clear_pattern(backend, arg),
            )
            .await
        }
        "delete" => timed(&inner, backend, operation, purge::delete_key(backend, arg))
            .await
            .map(u64::from),
        // Tagged responses become unreachable without being counted.
        "invalidate_tag" => {
            let now = inner.clock.now();
            timed(
                &inner,
                backend,
                operation,
                tags::invalidate(backend, arg, now),
            )
            .await
            .map(|()| 0)
        }
        _ => timed(&inner, backend, operation, purge::clear_all(backend)).await,
    };
    match result {
        Ok(removed) => json(
            StatusCode::OK,
            &Purged {
                removed,
                exact_count: !matches!(request, PurgeRequest::Tag(_))
                    && purge::counts_exactly(backend),
            },
        ),
        Err(failure) => failure.into_response(),
    }
}

#[derive(Serialize)]
struct Purged {
    removed: u64,
    /// As [`Cleared::exact_count`].
    exact_count: bool,
}

/// `POST {prefix}/clear-path?path=/x&include_params=true`.
pub(crate) async fn clear_path(inner: Arc<Inner>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if let Err(refused) = check_write(&inner, &parts, "clear-path") {
        return refused.into_response();
    }
    let (path, include_params) = match parse_clear_path(raw_query(&parts)) {
        Ok(parsed) => parsed,
        Err(message) => return Failure::BadRequest(message).into_response(),
    };
    let backend = inner.backend();
    match timed(
        &inner,
        backend.as_ref(),
        "clear_path",
        purge::clear_path(backend.as_ref(), &path, include_params),
    )
    .await
    {
        Ok(cleared) => json(
            StatusCode::OK,
            &Cleared {
                path,
                include_params,
                cleared,
                exact_count: purge::counts_exactly(backend.as_ref()),
            },
        ),
        Err(failure) => failure.into_response(),
    }
}

/// The dashboard: a static page with no data in it, so it needs no guard;
/// its script fetches the guarded routes with the token.
pub(crate) async fn dashboard() -> Response {
    let mut response = Response::new(Body::from(super::DASHBOARD_HTML));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Only its own inline script and style, fetches to this origin, no
    // framing, no referrer.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
