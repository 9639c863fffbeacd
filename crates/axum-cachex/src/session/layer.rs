//! [`SessionLayer`]: loads the session before the handler, saves it after.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response, header};
use tower_layer::Layer;
use tower_service::Service;
use tracing::{debug, warn};

use crate::cache::{CredentialNames, Credentialed, ShareGuard};

use super::{
    SessionManager, TokenSource,
    extract::{Issued, SessionContext, lock},
    token::log_id,
    transport,
};

/// The session middleware.
///
/// For each request it reads the token (configured header, `Authorization:
/// Bearer`, cookie — in the configured priority; the first source present
/// wins), loads and checks the session, and puts a [`SessionContext`] into
/// the request extensions for the extractors. An invalid token simply means
/// no session. After the handler it saves a changed session (never after a
/// 5xx), and sends back any token issued during the request: as the
/// configured header (e.g. `X-Session-Token`) when the request used the
/// header or bearer transport, as `Set-Cookie` when it used the cookie, and
/// — for a request that carried no token — as a cookie if the cookie
/// transport is on, else as the header.
///
/// The client IP for `ip_binding` is the socket address, which axum provides
/// only when the app is served with
/// `into_make_service_with_connect_info::<SocketAddr>()`; without it no IP
/// is known (and `ip_binding` then binds to "unknown").
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

/// The future of [`SessionService`]. Boxed: loading and saving are backend
/// round trips (network I/O on Redis and Memcached) around the handler.
pub type SessionFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
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
            // One guard per request: a middleware outside may have put one
            // there already, and raising either must reach the cache layer.
            let share_guard = req
                .extensions()
                .get::<ShareGuard>()
                .cloned()
                .unwrap_or_default();
            req.extensions_mut().insert(share_guard.clone());
            let (ctx, found) = prepare(&manager, &req, share_guard);
            let credentialed = found.is_some();
            if credentialed {
                // A cache layer inside this one must not share the answer.
                req.extensions_mut().insert(Credentialed);
            }
            let ctx = load(&manager, ctx, found).await;
            req.extensions_mut().insert(ctx.clone());
            let mut res = inner.call(req).await?;
            finish(&manager, &ctx, &mut res).await;
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

/// Reads what the middleware needs from the request synchronously, so that
/// the request (whose body need not be `Sync`) is not held across an await.
fn prepare<B>(
    manager: &SessionManager,
    req: &Request<B>,
    share_guard: ShareGuard,
) -> (SessionContext, Option<(String, TokenSource)>) {
    let config = manager.config();
    let headers = req.headers();
    let ip = transport::client_ip(headers, req.extensions(), config.trusted_proxies());
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let found = transport::find_token(headers, config);
    let ctx = SessionContext::new(
        manager.clone(),
        ip,
        ua,
        found.as_ref().map(|(_, s)| *s),
        share_guard,
    );
    (ctx, found)
}

async fn load(
    manager: &SessionManager,
    ctx: SessionContext,
    found: Option<(String, TokenSource)>,
) -> SessionContext {
    if let Some((token, source)) = found {
        let (ip, ua) = (ctx.client_ip(), ctx.user_agent());
        match manager.load_session(&token, ip, ua).await {
            Ok(loaded) => ctx.set_loaded(loaded.session, loaded.renewed_token),
            Err(e) if e.is_client_error() => {
                debug!(token = %log_id(&token), ?source, error = %e, "session token refused");
                ctx.mark_rejected();
                if source == TokenSource::Cookie {
                    // Stop the browser from sending a dead token forever.
                    ctx.inner.share_guard.forbid_sharing();
                    lock(&ctx.inner.state).remove_cookie = true;
                }
            }
            Err(e) => {
                // Backend down or a corrupt record: continue without a
                // session rather than failing the request.
                warn!(token = %log_id(&token), error = %e, "session could not be loaded");
            }
        }
    }
    ctx
}

/// The request header and cookie the session layer reads tokens from.
fn credential_names(config: &super::SessionConfig) -> CredentialNames {
    CredentialNames {
        headers: vec![config.header_name().clone()],
        cookies: config
            .cookie()
            .map(|c| c.get_name().to_owned())
            .into_iter()
            .collect(),
    }
}

async fn finish<B>(manager: &SessionManager, ctx: &SessionContext, res: &mut Response<B>) {
    let handle = lock(&ctx.inner.state).handle.clone();
    if let Some(handle) = handle {
        let pending = {
            let hs = lock(&handle);
            (hs.modified && !hs.deleted).then(|| hs.session.clone())
        };
        if let Some(mut session) = pending {
            if res.status().is_server_error() {
                debug!(session = %log_id(session.id()), "changes not saved after a server error");
            } else {
                let regenerated = session.replaced_id.is_some();
                match manager.update_session(&mut session).await {
                    Ok(()) => {
                        if regenerated {
                            match manager.issue_token(&session) {
                                Ok(token) => {
                                    let expires_at = session.expires_at();
                                    lock(&ctx.inner.state).issued =
                                        Some(Issued { token, expires_at });
                                }
                                Err(e) => {
                                    warn!(error = %e, "could not issue the regenerated token")
                                }
                            }
                        }
                        let mut hs = lock(&handle);
                        hs.session = session;
                        hs.modified = false;
                    }
                    Err(e) if e.is_client_error() => {
                        // Typically: deleted by a concurrent logout. Not
                        // resurrecting it is the point.
                        debug!(session = %log_id(session.id()), error = %e, "session changes dropped");
                    }
                    Err(e) => {
                        warn!(session = %log_id(session.id()), error = %e, "session could not be saved")
                    }
                }
            }
        }
    }
    let (issued, remove_cookie) = {
        let st = lock(&ctx.inner.state);
        (st.issued.clone(), st.remove_cookie)
    };
    let config = manager.config();
    let cookie_transport = match ctx.token_source() {
        Some(TokenSource::Cookie) => true,
        Some(_) => false,
        None => config.cookie().is_some(),
    };
    if issued.is_some() || remove_cookie {
        // A response that issues, renews or removes a token is for this
        // client alone: no cache on the way may keep it (RFC 9111 §5.2.2.5).
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(Issued { token, expires_at }) = issued {
        match (cookie_transport, config.cookie()) {
            (true, Some(cookie)) => {
                match transport::session_cookie(cookie, &token, expires_at, manager.now()) {
                    Some(v) => {
                        res.headers_mut().append(header::SET_COOKIE, v);
                    }
                    None => warn!("session cookie could not be encoded"),
                }
            }
            _ => match HeaderValue::from_str(&token) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    res.headers_mut().insert(config.header_name().clone(), v);
                }
                Err(_) => warn!("session token could not be encoded as a header"),
            },
        }
    } else if remove_cookie && let Some(cookie) = config.cookie() {
        if let Some(v) = transport::removal_cookie(cookie) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}
