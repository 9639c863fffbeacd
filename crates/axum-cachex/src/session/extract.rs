//! The request-scoped session state and the axum extractors.

use std::{
    fmt,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::SystemTime,
};

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header, request::Parts};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::cache::ShareGuard;

use super::{
    FlashMessage, Session, SessionError, SessionManager, SessionStatus, SessionUser, TokenSource,
};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another handler task must not take the session down with
    // it: the data is plain and still consistent field by field.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A token issued during the request, to be sent back by the middleware.
#[derive(Clone)]
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) expires_at: Option<SystemTime>,
}

pub(crate) struct HandleState {
    pub(crate) session: Session,
    pub(crate) modified: bool,
    pub(crate) deleted: bool,
}

#[derive(Default)]
pub(crate) struct CtxState {
    pub(crate) handle: Option<Arc<Mutex<HandleState>>>,
    pub(crate) issued: Option<Issued>,
    pub(crate) remove_cookie: bool,
    pub(crate) token_rejected: bool,
}

pub(crate) struct ContextInner {
    pub(crate) manager: SessionManager,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) user_agent: Option<String>,
    pub(crate) source: Option<TokenSource>,
    pub(crate) state: Mutex<CtxState>,
    /// Set when this request issues, renews or removes a token: a cache
    /// layer inside the session layer must not keep the response.
    pub(crate) share_guard: ShareGuard,
}

/// The session machinery of one request, put in the request extensions by
/// [`SessionLayer`](super::SessionLayer).
///
/// Extract it to log a user in or to start an anonymous session; extract
/// [`SessionHandle`] (or `Option<SessionHandle>`) to use the current one.
///
/// ```
/// use axum::Json;
/// use axum_cachex::session::{SessionContext, SessionError, SessionUser};
///
/// async fn login(ctx: SessionContext) -> Result<Json<serde_json::Value>, String> {
///     // … check the credentials first …
///     let session = ctx
///         .login(SessionUser::new("42").with_username("ada"))
///         .await
///         .map_err(|e: SessionError| e.to_string())?;
///     Ok(Json(serde_json::json!({ "token": session.token() })))
/// }
/// ```
#[derive(Clone)]
pub struct SessionContext {
    pub(crate) inner: Arc<ContextInner>,
}

impl fmt::Debug for SessionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionContext")
            .field("client_ip", &self.inner.client_ip)
            .field("source", &self.inner.source)
            .field("has_session", &lock(&self.inner.state).handle.is_some())
            .finish()
    }
}

impl SessionContext {
    pub(crate) fn new(
        manager: SessionManager,
        client_ip: Option<IpAddr>,
        user_agent: Option<String>,
        source: Option<TokenSource>,
        share_guard: ShareGuard,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                manager,
                client_ip,
                user_agent,
                source,
                state: Mutex::new(CtxState::default()),
                share_guard,
            }),
        }
    }

    pub(crate) fn set_loaded(&self, session: Session, renewed_token: Option<String>) {
        let mut st = lock(&self.inner.state);
        if let Some(token) = renewed_token {
            self.inner.share_guard.forbid_sharing();
            st.issued = Some(Issued {
                token,
                expires_at: session.expires_at(),
            });
        }
        st.handle = Some(Arc::new(Mutex::new(HandleState {
            session,
            modified: false,
            deleted: false,
        })));
    }

    pub(crate) fn mark_rejected(&self) {
        lock(&self.inner.state).token_rejected = true;
    }

    fn handle_from(&self, state: Arc<Mutex<HandleState>>) -> SessionHandle {
        SessionHandle {
            ctx: Arc::clone(&self.inner),
            state,
        }
    }

    /// The current session, if the request carried a valid token (or one
    /// was started during this request).
    pub fn session(&self) -> Option<SessionHandle> {
        let st = lock(&self.inner.state);
        st.handle.clone().map(|h| self.handle_from(h))
    }

    /// Whether the request carried a token that was refused (malformed,
    /// bad signature, unknown, expired, bound to another client).
    pub fn token_rejected(&self) -> bool {
        lock(&self.inner.state).token_rejected
    }

    /// The session manager.
    pub fn manager(&self) -> &SessionManager {
        &self.inner.manager
    }

    /// The client address used for IP binding (see the [module docs](super)).
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.inner.client_ip
    }

    /// The request's `User-Agent`.
    pub fn user_agent(&self) -> Option<&str> {
        self.inner.user_agent.as_deref()
    }

    /// Where the request's token came from, if it carried one.
    pub fn token_source(&self) -> Option<TokenSource> {
        self.inner.source
    }

    /// Logs `user` in: attaches them to the current session (with a new id
    /// when `regenerate_on_login` is on) or creates a session bound to this
    /// request's client. The token goes back to the client in the response
    /// (header or cookie) and is available from [`SessionHandle::token`].
    ///
    /// # Errors
    ///
    /// Any [`SessionError`] of [`SessionManager::login`] or
    /// [`SessionManager::create_session`].
    pub async fn login(&self, user: SessionUser) -> Result<SessionHandle, SessionError> {
        let manager = &self.inner.manager;
        if let Some(handle) = self.session().filter(|h| !h.is_deleted()) {
            let mut session = handle.snapshot();
            let token = manager.login(&mut session, user).await?;
            let expires_at = session.expires_at();
            {
                let mut hs = lock(&handle.state);
                hs.session = session;
                hs.modified = false;
            }
            self.set_issued(token, expires_at);
            return Ok(handle);
        }
        let (session, token) = manager
            .create_session(user, self.inner.client_ip, self.user_agent(), None)
            .await?;
        Ok(self.install(session, token))
    }

    /// The current session, or a new anonymous one bound to this request's
    /// client (for carts, CSRF tokens, flash messages before login).
    ///
    /// # Errors
    ///
    /// Any [`SessionError`] of [`SessionManager::create_anonymous_session`].
    pub async fn session_or_anonymous(&self) -> Result<SessionHandle, SessionError> {
        if let Some(handle) = self.session().filter(|h| !h.is_deleted()) {
            return Ok(handle);
        }
        let (session, token) = self
            .inner
            .manager
            .create_anonymous_session(self.inner.client_ip, self.user_agent(), None)
            .await?;
        Ok(self.install(session, token))
    }

    fn install(&self, session: Session, token: String) -> SessionHandle {
        let expires_at = session.expires_at();
        let state = Arc::new(Mutex::new(HandleState {
            session,
            modified: false,
            deleted: false,
        }));
        lock(&self.inner.state).handle = Some(Arc::clone(&state));
        set_issued(&self.inner, token, expires_at);
        self.handle_from(state)
    }

    fn set_issued(&self, token: String, expires_at: Option<SystemTime>) {
        set_issued(&self.inner, token, expires_at);
    }
}

/// The current session of a request: a cheap handle (an `Arc`) that tracks
/// whether the handler changed the session.
///
/// As an extractor it requires a session and answers `401 Unauthorized`
/// (with `WWW-Authenticate: Bearer` and a JSON body) when there is none;
/// extract `Option<SessionHandle>` to make it optional.
///
/// Changes made through the handle are saved by the middleware after the
/// handler, unless the response is a 5xx; the save is update-only, so a
/// session deleted meanwhile (logout on another device) stays deleted.
///
/// ```
/// use axum_cachex::session::SessionHandle;
///
/// async fn visit(session: SessionHandle) -> String {
///     let n: u64 = session.get("visits").unwrap_or(0) + 1;
///     session.insert("visits", n).expect("a number is JSON");
///     format!("visit number {n}")
/// }
/// ```
#[derive(Clone)]
pub struct SessionHandle {
    ctx: Arc<ContextInner>,
    state: Arc<Mutex<HandleState>>,
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hs = lock(&self.state);
        f.debug_struct("SessionHandle")
            .field("session", &hs.session)
            .field("modified", &hs.modified)
            .field("deleted", &hs.deleted)
            .finish()
    }
}

impl SessionHandle {
    fn read<R>(&self, f: impl FnOnce(&Session) -> R) -> R {
        f(&lock(&self.state).session)
    }

    /// Changes the session; it is saved after the handler.
    pub fn update<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R {
        let mut hs = lock(&self.state);
        hs.modified = true;
        f(&mut hs.session)
    }

    /// A copy of the session as it is now.
    pub fn snapshot(&self) -> Session {
        self.read(Clone::clone)
    }

    /// The session id. Treat it as a secret; log
    /// [`SessionManager::log_id`] of it instead.
    pub fn id(&self) -> String {
        self.read(|s| s.id().to_owned())
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<SessionUser> {
        self.read(|s| s.user().cloned())
    }

    /// Whether a user is logged in.
    pub fn is_authenticated(&self) -> bool {
        self.read(Session::is_authenticated)
    }

    /// The session's status (invalidated after [`logout`](Self::logout)).
    pub fn status(&self) -> SessionStatus {
        self.read(Session::status)
    }

    /// Reads a data value.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.read(|s| s.get(key))
    }

    /// Stores a data value.
    ///
    /// # Errors
    ///
    /// When `value` cannot be represented as JSON.
    pub fn insert<T: Serialize>(
        &self,
        key: impl Into<String>,
        value: T,
    ) -> Result<(), serde_json::Error> {
        self.update(|s| s.insert(key, value))
    }

    /// Removes a data value.
    pub fn remove(&self, key: &str) -> Option<Value> {
        self.update(|s| s.remove(key))
    }

    /// Queues a flash message (`category` defaults to `info`).
    pub fn add_flash_message(&self, message: impl Into<String>, category: Option<&str>) {
        self.update(|s| s.add_flash_message(message, category));
    }

    /// The pending flash messages; with `clear` they are consumed.
    pub fn get_flash_messages(&self, clear: bool) -> Vec<FlashMessage> {
        let mut hs = lock(&self.state);
        let msgs = hs.session.get_flash_messages(clear);
        if clear && !msgs.is_empty() {
            hs.modified = true;
        }
        msgs
    }

    /// Whether the handler changed the session since it was loaded or saved.
    pub fn is_modified(&self) -> bool {
        lock(&self.state).modified
    }

    fn is_deleted(&self) -> bool {
        lock(&self.state).deleted
    }

    /// The token issued to the client during this request (login,
    /// regeneration, JWT renewal), if any. The middleware sends it back by
    /// itself; this is for APIs that also return it in the body.
    pub fn token(&self) -> Option<String> {
        lock(&self.ctx.state)
            .issued
            .as_ref()
            .map(|i| i.token.clone())
    }

    /// Saves the session now instead of after the handler.
    ///
    /// # Errors
    ///
    /// As [`SessionManager::update_session`].
    pub async fn save(&self) -> Result<(), SessionError> {
        let mut session = self.snapshot();
        let regenerated = session.replaced_id.is_some();
        self.ctx.manager.update_session(&mut session).await?;
        let token = if regenerated {
            Some(self.ctx.manager.issue_token(&session)?)
        } else {
            None
        };
        let expires_at = session.expires_at();
        {
            let mut hs = lock(&self.state);
            hs.session = session;
            hs.modified = false;
        }
        if let Some(token) = token {
            set_issued(&self.ctx, token, expires_at);
        }
        Ok(())
    }

    /// Gives the session a new id (after a privilege change); the new token
    /// goes back to the client and the old one stops working.
    ///
    /// # Errors
    ///
    /// As [`SessionManager::regenerate_session_id`].
    pub async fn regenerate(&self) -> Result<String, SessionError> {
        let mut session = self.snapshot();
        let token = self.ctx.manager.regenerate_session_id(&mut session).await?;
        let expires_at = session.expires_at();
        {
            let mut hs = lock(&self.state);
            hs.session = session;
            hs.modified = false;
        }
        set_issued(&self.ctx, token.clone(), expires_at);
        Ok(token)
    }

    /// Deletes the session now; the response removes the session cookie
    /// (when the cookie transport is on). Returns whether it still existed.
    ///
    /// # Errors
    ///
    /// As [`SessionManager::delete_session`].
    pub async fn logout(&self) -> Result<bool, SessionError> {
        let id = self.id();
        let existed = self.ctx.manager.delete_session(&id).await?;
        self.mark_deleted();
        Ok(existed)
    }

    /// Deletes every session of the logged-in user (all devices), or just
    /// this one for an anonymous session; returns how many were deleted.
    ///
    /// # Errors
    ///
    /// As [`SessionManager::delete_user_sessions`].
    pub async fn logout_everywhere(&self) -> Result<u64, SessionError> {
        let (id, user) = self.read(|s| (s.id().to_owned(), s.user().map(|u| u.user_id.clone())));
        let manager = &self.ctx.manager;
        let mut n = match user {
            Some(uid) => manager.delete_user_sessions(&uid).await?,
            None => 0,
        };
        // This session may predate its user's index (e.g. a login without
        // regeneration whose index update raced): delete it directly too.
        if manager.delete_session(&id).await? {
            n += 1;
        }
        self.mark_deleted();
        Ok(n)
    }

    fn mark_deleted(&self) {
        {
            let mut hs = lock(&self.state);
            hs.deleted = true;
            hs.modified = false;
            hs.session.invalidate();
        }
        self.ctx.share_guard.forbid_sharing();
        let mut st = lock(&self.ctx.state);
        st.issued = None;
        st.remove_cookie = true;
    }
}

fn set_issued(ctx: &ContextInner, token: String, expires_at: Option<SystemTime>) {
    ctx.share_guard.forbid_sharing();
    let mut st = lock(&ctx.state);
    st.issued = Some(Issued { token, expires_at });
    st.remove_cookie = false;
}

/// Why a session extractor refused the request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionRejection {
    /// No [`SessionLayer`](super::SessionLayer) ran for this route: a
    /// server bug, answered with 500.
    MissingLayer,
    /// The request has no valid session: 401 with `WWW-Authenticate:
    /// Bearer` (plus `error="invalid_token"` when a token was refused).
    Unauthenticated {
        /// Whether the request carried a token that was refused.
        token_rejected: bool,
    },
}

impl fmt::Display for SessionRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingLayer => f.write_str(
                "session extractor used without the session middleware: \
                 is the SessionLayer added to this router (with .layer(SessionLayer::new(manager)))?",
            ),
            Self::Unauthenticated { .. } => f.write_str("a valid session is required"),
        }
    }
}

impl std::error::Error for SessionRejection {}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        match self {
            Self::MissingLayer => {
                tracing::error!("{self}");
                (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
            }
            Self::Unauthenticated { token_rejected } => {
                let body = serde_json::json!({
                    "error": "unauthorized",
                    "message": self.to_string(),
                });
                let challenge = if token_rejected {
                    HeaderValue::from_static("Bearer error=\"invalid_token\"")
                } else {
                    HeaderValue::from_static("Bearer")
                };
                let mut res = (StatusCode::UNAUTHORIZED, body.to_string()).into_response();
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                res
            }
        }
    }
}

fn context(parts: &Parts) -> Result<SessionContext, SessionRejection> {
    parts
        .extensions
        .get::<SessionContext>()
        .cloned()
        .ok_or(SessionRejection::MissingLayer)
}

impl<S: Send + Sync> FromRequestParts<S> for SessionContext {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        context(parts)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SessionHandle {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ctx = context(parts)?;
        ctx.session().ok_or(SessionRejection::Unauthenticated {
            token_rejected: ctx.token_rejected(),
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for SessionHandle {
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(context(parts)?.session())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SessionManager {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(context(parts)?.inner.manager.clone())
    }
}
