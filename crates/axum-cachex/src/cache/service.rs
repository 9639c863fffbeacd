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

use super::{flow, shared::Shared};

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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The service that was driven to readiness handles this request; a
        // clone takes its place for the next one (the usual tower pattern).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        // One span per request, its `decision` field filled with what the
        // layer did (the `Cache-Status` parameters).
        let span = tracing::info_span!(
            "axum_cachex",
            method = %req.method(),
            path = %req.uri().path(),
            decision = tracing::field::Empty,
        );
        let shared = Arc::clone(&self.shared);
        // The flow records its decision in the span itself.
        ResponseFuture {
            inner: Box::pin(flow::serve(shared, inner, req).instrument(span)),
        }
    }
}

/// Response future of [`CacheService`].
///
/// The flow awaits the backend, possibly the handler, the body and the
/// backend again, and may wait for a coalesced request: written as one
/// `async fn` it is boxed once per request. A hand-written state machine
/// would save that one allocation at the cost of a large, fragile enum; the
/// benchmark (`benches/`) shows a hit costs about as much as serving static
/// bytes, so the box stays.
pub struct ResponseFuture<E> {
    inner: Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>,
}

impl<E> fmt::Debug for ResponseFuture<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<E> Future for ResponseFuture<E> {
    type Output = Result<Response<Body>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
