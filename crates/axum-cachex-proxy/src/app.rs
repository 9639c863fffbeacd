//! The proxied listener: one cache layer per rule in front of the
//! forwarder, and the request dispatched by the longest matching prefix.

use std::{convert::Infallible, sync::Arc};

use axum::{Router, body::Body, extract::Request, response::Response};
use axum_cachex::{CacheLayer, CacheLayerConfigError, Freshness, Registry, backend::Backend};
use tower::{ServiceBuilder, ServiceExt, service_fn, util::BoxCloneSyncService};

use crate::{
    config::{Rule, Settings},
    forward::Forwarder,
};

type Route = BoxCloneSyncService<Request, Response, Infallible>;

/// Builds the proxied router.
pub(crate) fn build(
    settings: &Settings,
    forwarder: Forwarder,
    backend: Arc<dyn Backend>,
    registry: &Registry,
) -> Result<Router, CacheLayerConfigError> {
    // Behind an `Arc`: the route service is cloned for every request, and
    // a hit never uses the forwarder.
    let forwarder = Arc::new(forwarder);
    let forward = service_fn(move |req: Request| {
        let forwarder = Arc::clone(&forwarder);
        async move { Ok::<_, Infallible>(forwarder.forward(req).await) }
    });
    let mut routes: Vec<Route> = Vec::with_capacity(settings.rules.len());
    let mut invalidator = None;
    for rule in &settings.rules {
        if rule.bypass {
            let cache = match &invalidator {
                Some(cache) => CacheLayer::clone(cache),
                None => invalidator
                    .insert(shared_builder(settings, &backend, None).build()?)
                    .clone(),
            };
            routes.push(bypassing(forward.clone(), cache));
            continue;
        }
        let layer = layer_for(rule, settings, &backend, Some(registry))?;
        let service = ServiceBuilder::new().layer(layer).service(forward.clone());
        routes.push(BoxCloneSyncService::new(service));
    }
    let router = match <[Route; 1]>::try_from(routes) {
        // One rule (the catch-all): no dispatch at all.
        Ok([only]) => Router::new().fallback_service(only),
        Err(routes) => dispatch(settings.clone(), routes),
    };
    // Outermost: the cache must see the request exactly as the upstream
    // will.
    let router = router.layer(tower::layer::layer_fn(WellFormed));
    // The access log costs a few allocations per request: only when it is
    // on (`RUST_LOG` at info for the `access` target).
    if tracing::enabled!(target: "access", tracing::Level::INFO) {
        return Ok(router.layer(axum::middleware::from_fn(access_log)));
    }
    Ok(router)
}

/// Routes each request to the service of its rule: the longest matching
/// prefix.
fn dispatch(rules: Settings, routes: Vec<Route>) -> Router {
    let routes = Arc::new(routes);
    Router::new().fallback(move |req: Request| {
        let route = routes.get(rules.rule_for(req.uri().path())).cloned();
        async move {
            match route {
                Some(route) => route
                    .oneshot(req)
                    .await
                    .unwrap_or_else(|never| match never {}),
                None => Response::new(Body::empty()),
            }
        }
    })
}

/// What every request must be before the cache sees it: exactly one
/// `Host` in HTTP/1.1 (RFC 9112 §3.2: anything else is a 400), `Max-Forwards`
/// honoured, and the fields the upstream will see (see
/// [`client_request`](crate::forward::client_request)) already in place, so
/// that `Vary` selects by exactly what the upstream saw. A plain service wrapper, not
/// an axum middleware: it is on every hit's path.
#[derive(Clone)]
struct WellFormed<S>(S);

impl<S> tower::Service<Request> for WellFormed<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        futures_util::future::Either<std::future::Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let hosts = req.headers().get_all(http::header::HOST).iter().count();
        let needs_host = req.version() >= http::Version::HTTP_11;
        if hosts > 1 || (hosts == 0 && needs_host) {
            let mut res = Response::new(Body::from(
                "bad request: exactly one Host header is required\n",
            ));
            *res.status_mut() = http::StatusCode::BAD_REQUEST;
            return futures_util::future::Either::Left(std::future::ready(Ok(res)));
        }
        if let Some(res) = max_forwards(&mut req) {
            return futures_util::future::Either::Left(std::future::ready(Ok(res)));
        }
        let (mut parts, body) = req.into_parts();
        crate::forward::client_request(&mut parts);
        futures_util::future::Either::Right(self.0.call(Request::from_parts(parts, body)))
    }
}

/// RFC 9110 §7.6.2: an `OPTIONS` or `TRACE` whose `Max-Forwards` is 0 is
/// answered here (the proxy is its final recipient); a larger value is
/// decremented on the way.
fn max_forwards(req: &mut Request) -> Option<Response> {
    use http::{Method, header::MAX_FORWARDS};
    if req.method() != Method::OPTIONS && req.method() != Method::TRACE {
        return None;
    }
    let left = req
        .headers()
        .get(MAX_FORWARDS)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    if let Some(decremented) = left.checked_sub(1) {
        req.headers_mut()
            .insert(MAX_FORWARDS, http::HeaderValue::from(decremented));
        return None;
    }
    // As the final recipient: the methods it forwards; no TRACE echo.
    let allow = http::HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
    let mut res = Response::new(Body::empty());
    if req.method() == Method::TRACE {
        *res.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
    }
    res.headers_mut().insert(http::header::ALLOW, allow);
    Some(res)
}

/// One `tracing` event per request: method, path, status, what the cache
/// did (`Cache-Status`) and how long it took.
async fn access_log(req: Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let res = next.run(req).await;
    let cache = res
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info!(
        target: "access",
        %method,
        path,
        status = res.status().as_u16(),
        cache,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    res
}

/// A route that is never cached, but whose successful unsafe requests
/// still invalidate what the cache stored for their URI and for the
/// same-host `Location` / `Content-Location` (RFC 9111 §4.4: the proxy is
/// one cache, whatever its rules).
fn bypassing<F>(forward: F, cache: CacheLayer) -> Route
where
    F: tower::Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    F::Future: Send,
{
    BoxCloneSyncService::new(tower::service_fn(move |req: Request| {
        let (forward, cache) = (forward.clone(), cache.clone());
        async move {
            let head = (!req.method().is_safe()).then(|| head_of(&req));
            let mut res = forward.oneshot(req).await?;
            // Cache tags are for the cache, bypassed or not.
            res.headers_mut().remove(cache.tag_header());
            let Some(head) = head else {
                return Ok(res);
            };
            let (parts, body) = res.into_parts();
            cache.invalidate_after(&head, &parts).await;
            Ok(Response::from_parts(parts, body))
        }
    }))
}

/// The head of `req`, for invalidating after it was forwarded.
fn head_of(req: &Request) -> http::Request<()> {
    let mut head = http::Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    *head.extensions_mut() = req.extensions().clone();
    head
}

/// The settings every layer of the proxy shares: a shared cache whose
/// freshness comes from the upstream's responses (RFC 9111 §4.2).
fn shared_builder(
    settings: &Settings,
    backend: &Arc<dyn Backend>,
    registry: Option<&Registry>,
) -> axum_cachex::CacheLayerBuilder {
    // A shared cache in front of an application it knows nothing about:
    // any cookie may be a session, so a request with one is answered from,
    // and stored for, itself only (unless the response is explicitly
    // shareable, as for `Authorization`).
    let mut builder = CacheLayer::builder()
        .freshness(Freshness::FromResponse)
        .backend(Arc::clone(backend))
        .credential_header(http::header::COOKIE);
    if let Some(registry) = registry {
        builder = builder.registry(registry);
    }
    for target in &settings.targets {
        builder = builder.targeted_cache_control(target.clone());
    }
    if !settings.stale_if_unreachable.is_zero() {
        builder = builder.stale_if_unreachable(settings.stale_if_unreachable);
    }
    builder
}

/// The cache layer of one rule.
fn layer_for(
    rule: &Rule,
    settings: &Settings,
    backend: &Arc<dyn Backend>,
    registry: Option<&Registry>,
) -> Result<CacheLayer, CacheLayerConfigError> {
    let mut builder = shared_builder(settings, backend, registry).name(rule.prefix.clone());
    if let Some(ttl) = rule.default_ttl {
        builder = builder.ttl(ttl);
    }
    for header in &rule.credential_headers {
        builder = builder.credential_header(header.clone());
    }
    builder.build()
}
