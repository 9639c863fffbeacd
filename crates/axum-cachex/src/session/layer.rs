//! [`SessionLayer`]: loads the session before the handler, saves it after.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, StatusCode, header};
use tower_layer::Layer;
use tower_service::Service;

use crate::cache::{CredentialNames, Credentialed, ShareGuard};

use super::{SessionContext, SessionManager, request::RequestSession, transport};

/// The session middleware.
///
/// For each request it reads the token (configured header, `Authorization:
/// Bearer`, cookie — in the configured priority; the first source present
/// wins) and puts a [`SessionContext`] into the request extensions for the
/// extractors, which load and check the session on first use (a handler
/// that uses no session extractor costs no backend call). An invalid token
/// simply means no session. After the handler it commits the session's
/// [pending action](super::PendingAction) (a save or regeneration not
/// after a 5xx), and sends back any token issued during the request: as the
/// configured header (e.g. `X-Session-Token`) when the request used the
/// header or bearer transport, as `Set-Cookie` when it used the cookie, and
/// — for a request that carried no token — as a cookie if the cookie
/// transport is on, else as the header.
///
/// The client IP for `ip_binding` is the socket address, which axum provides
/// only when the app is served with
/// `into_make_service_with_connect_info::<SocketAddr>()`. Without it no IP
/// is known, and with `ip_binding` on every session is refused (loading
/// and creating alike, with [`SecurityError::ClientAddressUnknown`]; the
/// misconfiguration is logged once, at `error`) rather than bound to
/// "unknown".
///
/// [`SecurityError::ClientAddressUnknown`]: super::SecurityError::ClientAddressUnknown
///
/// ```
/// use std::sync::Arc;
/// use axum::{Router, routing::get};
/// use axum_cachex::backend::MemoryBackend;
/// use axum_cachex::session::{SessionConfig, SessionHandle, SessionLayer, SessionManager};
///
/// let config = SessionConfig::builder("a-secret-of-at-least-32-characters!!").build()?;
/// let manager = SessionManager::new(Arc::new(MemoryBackend::new()), config);
/// let app: Router = Router::new()
///     .route("/me", get(|s: SessionHandle| async move { s.id().len().to_string() }))
///     .layer(SessionLayer::new(manager));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SessionLayer {
    manager: SessionManager,
}

impl SessionLayer {
    /// A layer using `manager`.
    pub fn new(manager: SessionManager) -> Self {
        Self { manager }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            manager: self.manager.clone(),
        }
    }
}

/// The service built by [`SessionLayer`].
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    inner: S,
    manager: SessionManager,
}

/// The future of [`SessionService`]. Boxed: committing is a backend round
/// trip (network I/O on Redis and Memcached) after the handler.
pub type SessionFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = SessionFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone that was driven to readiness handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let manager = self.manager.clone();
        Box::pin(async move {
            let rs = prepare(&manager, &mut req);
            let credentialed = rs.source().is_some();
            let mut res = match inner.call(req).await {
                Ok(res) => res,
                Err(error) => {
                    // A logout the handler deferred is carried out even so
                    // (as after a 5xx); there is no response to carry a
                    // token.
                    rs.settle(StatusCode::INTERNAL_SERVER_ERROR).await;
                    return Err(error);
                }
            };
            let outcome = rs.settle(res.status()).await;
            transport::write_token(
                res.headers_mut(),
                manager.config(),
                rs.source(),
                outcome,
                manager.now(),
            );
            if credentialed {
                // Nor a cache layer outside it, even before it has learned
                // the names below.
                res.extensions_mut().insert(Credentialed);
            }
            // A cache layer outside this one learns which request headers
            // and cookies carry session tokens.
            res.extensions_mut()
                .insert(credential_names(manager.config()));
            Ok(res)
        })
    }
}

/// Sets the request up for the handler, synchronously, so that the request
/// (whose body need not be `Sync`) is not held across an await: reads the
/// token and the client, and puts the request's session (not loaded yet)
/// and the markers for cache layers into the extensions.
fn prepare<B>(manager: &SessionManager, req: &mut Request<B>) -> Arc<RequestSession> {
    // One guard per request: a middleware outside may have put one there
    // already, and raising either must reach the cache layer.
    let share_guard = req
        .extensions()
        .get::<ShareGuard>()
        .cloned()
        .unwrap_or_default();
    req.extensions_mut().insert(share_guard.clone());
    let config = manager.config();
    let headers = req.headers();
    let ip = transport::client_ip(headers, req.extensions(), config.trusted_proxies());
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let found = transport::find_token(headers, config);
    if found.is_some() {
        // A cache layer inside this one must not share the answer.
        req.extensions_mut().insert(Credentialed);
    }
    let rs = Arc::new(RequestSession::new(
        manager.clone(),
        ip,
        ua,
        found,
        share_guard,
    ));
    req.extensions_mut()
        .insert(SessionContext::new(Arc::clone(&rs)));
    rs
}

/// The request header and cookie the session layer reads tokens from.
fn credential_names(config: &super::SessionConfig) -> CredentialNames {
    CredentialNames {
        headers: vec![config.header_name().clone()],
        cookies: config
            .cookie()
            .map(|c| c.cookie_name().into_owned())
            .into_iter()
            .collect(),
    }
}
