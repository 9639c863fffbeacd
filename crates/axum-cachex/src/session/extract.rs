//! The axum extractors: [`SessionContext`] and [`SessionHandle`], two views
//! of the request's [`RequestSession`].

use std::{fmt, net::IpAddr, sync::Arc};

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header, request::Parts};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{
    FlashMessage, PendingAction, Session, SessionError, SessionManager, SessionStatus, SessionUser,
    TokenSource,
    request::{Committed, RequestSession},
};

/// The session machinery of one request, put in the request extensions by
/// [`SessionLayer`](super::SessionLayer).
///
/// Extract it to log a user in or to start an anonymous session; extract
/// [`SessionHandle`] (or `Option<SessionHandle>`) to use the current one.
/// Extracting either loads the session (once per request); a handler that
/// extracts neither costs no backend call. Code that takes the context from
/// the request extensions directly calls [`load`](Self::load) first.
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
    rs: Arc<RequestSession>,
}

impl fmt::Debug for SessionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SessionContext").field(&self.rs).finish()
    }
}

impl SessionContext {
    pub(crate) fn new(rs: Arc<RequestSession>) -> Self {
        Self { rs }
    }

    fn handle(&self) -> SessionHandle {
        SessionHandle {
            rs: Arc::clone(&self.rs),
        }
    }

    /// Loads the session the request's token names, if not done yet, and
    /// returns it as [`session`](Self::session) does. The extractors call
    /// this; call it yourself only with a context taken from the request
    /// extensions (in a middleware, say).
    pub async fn load(&self) -> Option<SessionHandle> {
        self.rs.ensure_loaded().await;
        self.session()
    }

    /// The current session, if the request carried a valid token (or one
    /// was started during this request).
    pub fn session(&self) -> Option<SessionHandle> {
        self.rs.has_session().then(|| self.handle())
    }

    /// Whether the request carried a token that was refused (malformed,
    /// bad signature, unknown, expired, bound to another client).
    pub fn token_rejected(&self) -> bool {
        self.rs.token_rejected()
    }

    /// The session manager.
    pub fn manager(&self) -> &SessionManager {
        self.rs.manager()
    }

    /// The client address used for IP binding (see the [module docs](super)).
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.rs.client_ip()
    }

    /// The request's `User-Agent`.
    pub fn user_agent(&self) -> Option<&str> {
        self.rs.user_agent()
    }

    /// Where the request's token came from, if it carried one.
    pub fn token_source(&self) -> Option<TokenSource> {
        self.rs.source()
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
        self.rs.ensure_loaded().await;
        self.rs.login(user).await?;
        Ok(self.handle())
    }

    /// The current session, or a new anonymous one bound to this request's
    /// client (for carts, CSRF tokens, flash messages before login).
    ///
    /// # Errors
    ///
    /// [`SessionError::StoreUnavailable`] when the request carried a token
    /// the store could not be asked about (a new session would log the
    /// client out for good); any [`SessionError`] of
    /// [`SessionManager::create_anonymous_session`].
    pub async fn session_or_anonymous(&self) -> Result<SessionHandle, SessionError> {
        self.rs.ensure_loaded().await;
        if self.rs.load_failed() {
            // The client's session may well live: a new one would log it
            // out for good.
            return Err(SessionError::StoreUnavailable);
        }
        if self.rs.live_session().is_none() {
            let (session, token) = self
                .rs
                .manager()
                .create_anonymous_session(self.client_ip(), self.user_agent(), None)
                .await?;
            self.rs.install(session, Some(token));
        }
        Ok(self.handle())
    }
}

/// The current session of a request: a cheap handle (an `Arc`) on the
/// request's one session object, which every handle and the
/// [`SessionContext`] share.
///
/// As an extractor it requires a session and answers `401 Unauthorized`
/// (with `WWW-Authenticate: Bearer` and a JSON body) when there is none;
/// extract `Option<SessionHandle>` to make it optional.
///
/// Changes made through the handle make a save [pending](Self::pending);
/// the middleware commits the pending action after the handler (changes and
/// regenerations not after a 5xx). The save is update-only, so a session
/// deleted meanwhile (logout on another device) stays deleted.
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
    rs: Arc<RequestSession>,
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle")
            .field("session", &self.snapshot())
            .field("pending", &self.pending())
            .finish()
    }
}

impl SessionHandle {
    fn read<R>(&self, f: impl FnOnce(&Session) -> R) -> R {
        self.rs.with_session(false, |s| f(s))
    }

    /// Changes the session; it is saved after the handler.
    pub fn update<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R {
        self.rs.with_session(true, f)
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
        let msgs = self.rs.with_session(false, |s| s.get_flash_messages(clear));
        if clear && !msgs.is_empty() {
            self.rs.mark_changed();
        }
        msgs
    }

    /// Whether something is pending: the handler changed the session since
    /// it was loaded or last committed, or deferred an action.
    pub fn is_modified(&self) -> bool {
        self.pending() != PendingAction::None
    }

    /// What the next commit will do (after the handler, or at an explicit
    /// [`save`](Self::save)).
    pub fn pending(&self) -> PendingAction {
        self.rs.pending()
    }

    /// Defers `action` to the commit after the handler, instead of carrying
    /// it out now as [`save`](Self::save), [`regenerate`](Self::regenerate)
    /// and [`logout`](Self::logout) do. The pending action only escalates:
    /// deferring `Save` after `Regenerate` changes nothing.
    pub fn defer(&self, action: PendingAction) {
        self.rs.defer(action);
    }

    /// The token issued to the client during this request (login,
    /// regeneration, JWT renewal), if any. The middleware sends it back by
    /// itself; this is for APIs that also return it in the body.
    pub fn token(&self) -> Option<String> {
        self.rs.issued_token()
    }

    /// Commits the pending action now instead of after the handler (with
    /// nothing pending, writes the session as it is).
    ///
    /// # Errors
    ///
    /// [`SessionError::NotFound`] after a logout in this request; otherwise
    /// as [`SessionManager::update_session`] (or
    /// [`regenerate_session_id`](SessionManager::regenerate_session_id) /
    /// [`delete_session`](SessionManager::delete_session) for a deferred
    /// regeneration or deletion).
    pub async fn save(&self) -> Result<(), SessionError> {
        if self.rs.ended() {
            return Err(SessionError::NotFound);
        }
        self.rs.mark_changed();
        self.rs.commit().await.map(|_| ())
    }

    /// Gives the session a new id now (after a privilege change), saving
    /// its pending changes under it; the new token goes back to the client
    /// and the old one stops working.
    ///
    /// # Errors
    ///
    /// As [`SessionManager::regenerate_session_id`];
    /// [`SessionError::NotFound`] after a logout in this request (or when a
    /// deferred deletion was pending, which this commit then carried out).
    /// On an error the regeneration stays pending.
    pub async fn regenerate(&self) -> Result<String, SessionError> {
        self.rs.defer(PendingAction::Regenerate);
        match self.rs.commit().await? {
            Committed::Regenerated(token) => Ok(token),
            _ => Err(SessionError::NotFound),
        }
    }

    /// Deletes the session now; the response removes the session cookie
    /// (when the cookie transport is on). Returns whether it still existed.
    ///
    /// # Errors
    ///
    /// As [`SessionManager::delete_session`].
    pub async fn logout(&self) -> Result<bool, SessionError> {
        self.rs.defer(PendingAction::Delete);
        Ok(matches!(self.rs.commit().await?, Committed::Deleted(true)))
    }

    /// Deletes every session of the logged-in user (all devices), or just
    /// this one for an anonymous session; returns how many were deleted.
    ///
    /// # Errors
    ///
    /// As [`SessionManager::delete_user_sessions`].
    pub async fn logout_everywhere(&self) -> Result<u64, SessionError> {
        let user = self.read(|s| s.user().map(|u| u.user_id.clone()));
        let mut n = match user {
            Some(uid) => self.rs.manager().delete_user_sessions(&uid).await?,
            None => 0,
        };
        // This session may predate its user's index (e.g. a login without
        // regeneration whose index update raced): delete it directly too.
        if self.logout().await? {
            n += 1;
        }
        Ok(n)
    }
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

/// Loads the session on the way: extracting a context or a handle is the
/// "first use" of the request's session.
impl<S: Send + Sync> FromRequestParts<S> for SessionContext {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ctx = context(parts)?;
        ctx.load().await;
        Ok(ctx)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SessionHandle {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ctx = context(parts)?;
        ctx.load().await.ok_or(SessionRejection::Unauthenticated {
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
        Ok(context(parts)?.load().await)
    }
}

/// Does not load the session.
impl<S: Send + Sync> FromRequestParts<S> for SessionManager {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(context(parts)?.manager().clone())
    }
}
