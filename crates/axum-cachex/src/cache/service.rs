//! The `Service` wrapping a handler, and its response future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body as HttpBody;
use tower_service::Service;

use tracing::Instrument;

use super::{
    flow::{self, Started},
    shared::Shared,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The middleware [`CacheLayer`](super::CacheLayer) puts around a service.
#[derive(Clone)]
pub struct CacheService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheService").finish_non_exhaustive()
    }
}

impl<S> CacheService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CacheService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    /// Always ready: a fresh hit never reaches the inner service, so its
    /// readiness is not reserved here (a reserved permit or queue slot
    /// would be held by a hit that never uses it). A request that needs
    /// the inner service drives a clone of it to readiness in its response
    /// future, as axum's `Router` does.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // One span per request, its `decision` field filled with what the
        // layer did (the `Cache-Status` parameters); the flow records it.
        let span = tracing::info_span!(
            "axum_cachex",
            method = %req.method(),
            path = %req.uri().path(),
            decision = tracing::field::Empty,
        );
        let started = {
            let _entered = span.enter();
            flow::start(Arc::clone(&self.shared), req)
        };
        let cont = match started {
            Started::Answered(res) => {
                return ResponseFuture {
                    inner: Kind::Ready(std::future::ready(Ok(res))),
                };
            }
            Started::Continue(cont) => cont,
        };
        // A clone, driven to readiness in the future (see `poll_ready`).
        let inner = self.inner.clone();
        ResponseFuture {
            inner: Kind::Flow(Box::pin(flow::serve(cont, inner).instrument(span))),
        }
    }
}

/// Response future of [`CacheService`].
///
/// A fresh hit from process memory is answered before the future exists
/// (no allocation, no copy of the inner service). Everything else awaits
/// the backend, possibly the handler, the body and the backend again, and
/// may wait for a coalesced request: written as one `async fn`, boxed once
/// per request. A hand-written state machine would save that allocation at
/// the cost of a large, fragile enum, on paths that pay for a handler run
/// or a network round trip anyway.
pub struct ResponseFuture<E> {
    inner: Kind<E>,
}

enum Kind<E> {
    Ready(std::future::Ready<Result<Response<Body>, E>>),
    Flow(Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>),
}

impl<E> fmt::Debug for ResponseFuture<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<E> Future for ResponseFuture<E> {
    type Output = Result<Response<Body>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            Kind::Ready(ready) => Pin::new(ready).poll(cx),
            Kind::Flow(flow) => flow.as_mut().poll(cx),
        }
    }
}
