//! [`RequestSession`]: the one session object of a request.
//!
//! [`SessionLayer`](super::SessionLayer) creates it, the extractors
//! ([`SessionContext`](super::SessionContext),
//! [`SessionHandle`](super::SessionHandle)) are views of it, and everything
//! the store learns about the request's session goes through
//! [`RequestSession::commit`]: explicit saves, regenerations and logouts
//! during the handler, and whatever is still pending after it.
//!
//! The session is loaded on first use (the first extractor that needs it),
//! not by the layer: a request that never touches its session costs no
//! backend call.

use std::{
    fmt,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::SystemTime,
};

use http::StatusCode;
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use crate::cache::ShareGuard;

use super::{SecurityError, Session, SessionError, SessionManager, TokenSource, token::log_id};

/// What will happen to the request's session when it is next committed:
/// by an explicit [`SessionHandle::save`](super::SessionHandle::save),
/// [`regenerate`](super::SessionHandle::regenerate) or
/// [`logout`](super::SessionHandle::logout), or by the middleware after the
/// handler.
///
/// Actions only escalate (`None` < `Save` < `Regenerate` < `Delete`): each
/// includes the ones before it (a regeneration saves the changes under the
/// new id; a deletion drops them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PendingAction {
    /// Nothing to write.
    #[default]
    None,
    /// The session changed: write it back (update-only, never resurrecting
    /// a session deleted meanwhile).
    Save,
    /// Give the session a new id (saving its changes under it); the new
    /// token goes back to the client and the old one stops working.
    Regenerate,
    /// Delete the session; the response removes the session cookie.
    Delete,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Committed {
    /// Nothing was pending, or the session had already ended.
    Nothing,
    Saved,
    /// The new token.
    Regenerated(String),
    /// Whether the session still existed.
    Deleted(bool),
}

/// A token issued during the request, to be sent back by the middleware.
#[derive(Clone)]
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) expires_at: Option<SystemTime>,
}

/// What the middleware must tell the client about its token.
pub(crate) struct TokenOutcome {
    pub(crate) issued: Option<Issued>,
    pub(crate) remove_cookie: bool,
}

#[derive(Default)]
struct State {
    /// The current session: loaded, or started during the request. Once
    /// set it is never taken away (a logout ends it in place), so a handle
    /// always has a session to show.
    session: Option<Session>,
    /// Deleted during this request.
    ended: bool,
    pending: PendingAction,
    /// Bumped by every change and deferral, so that a commit learns whether
    /// the request moved on while it waited on the store.
    version: u64,
    issued: Option<Issued>,
    remove_cookie: bool,
    token_rejected: bool,
    /// The token could not be checked: the store failed.
    load_failed: bool,
}

/// The session state of one request; shared (in an `Arc`) by the layer and
/// every extractor of the request.
pub(crate) struct RequestSession {
    manager: SessionManager,
    client_ip: Option<IpAddr>,
    user_agent: Option<String>,
    /// The token the request carried, and where from; checked on first use.
    token: Option<(String, TokenSource)>,
    /// Set when this request issues, renews or removes a token: a cache
    /// layer inside the session layer must not keep the response.
    share_guard: ShareGuard,
    loaded: OnceCell<()>,
    state: Mutex<State>,
    /// Held while a commit (or a login) talks to the store: one at a time,
    /// and the commit after the handler waits for one still running.
    committing: tokio::sync::Mutex<()>,
}

impl fmt::Debug for RequestSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token: it is a credential.
        let st = self.lock();
        f.debug_struct("RequestSession")
            .field("client_ip", &self.client_ip)
            .field("source", &self.source())
            .field("loaded", &self.loaded.initialized())
            .field("has_session", &st.session.is_some())
            .field("pending", &st.pending)
            .finish()
    }
}

impl RequestSession {
    pub(crate) fn new(
        manager: SessionManager,
        client_ip: Option<IpAddr>,
        user_agent: Option<String>,
        token: Option<(String, TokenSource)>,
        share_guard: ShareGuard,
    ) -> Self {
        Self {
            manager,
            client_ip,
            user_agent,
            token,
            share_guard,
            loaded: OnceCell::new(),
            state: Mutex::new(State::default()),
            committing: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another handler task must not take the session down
        // with it: the data is plain and still consistent field by field.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn manager(&self) -> &SessionManager {
        &self.manager
    }

    pub(crate) fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    pub(crate) fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    pub(crate) fn source(&self) -> Option<TokenSource> {
        self.token.as_ref().map(|(_, s)| *s)
    }

    // ---- loading -----------------------------------------------------------

    /// Loads the session the request's token names, once; later calls (and
    /// concurrent ones) wait for that first load.
    pub(crate) async fn ensure_loaded(&self) {
        self.loaded.get_or_init(|| self.load()).await;
    }

    async fn load(&self) {
        let Some((token, source)) = &self.token else {
            return;
        };
        let loaded = self
            .manager
            .load_session(token, self.client_ip, self.user_agent())
            .await;
        match loaded {
            Ok(loaded) => {
                let expires_at = loaded.session.expires_at();
                self.lock().session = Some(loaded.session);
                if let Some(token) = loaded.renewed_token {
                    self.issue(token, expires_at);
                }
            }
            Err(e) if e.is_client_error() => {
                debug!(token = %log_id(token), ?source, error = %e, "session token refused");
                let mut st = self.lock();
                st.token_rejected = true;
                if *source == TokenSource::Cookie {
                    // Stop the browser from sending a dead token forever.
                    self.share_guard.forbid_sharing();
                    st.remove_cookie = true;
                }
            }
            Err(SessionError::Security(SecurityError::ClientAddressUnknown)) => {
                // A misconfiguration (no `ConnectInfo` under `ip_binding`),
                // logged once by the manager: no session, cookie kept.
                debug!(token = %log_id(token), "session refused: client address unknown");
            }
            Err(e) => {
                // Backend down or a corrupt record: continue without a
                // session rather than failing the request, but remember it:
                // nothing may replace a session that may well still live.
                warn!(token = %log_id(token), error = %e, "session could not be loaded");
                self.lock().load_failed = true;
            }
        }
    }

    pub(crate) fn token_rejected(&self) -> bool {
        self.lock().token_rejected
    }

    /// Whether the request's token could not be checked (store failure).
    pub(crate) fn load_failed(&self) -> bool {
        self.lock().load_failed
    }

    // ---- the session --------------------------------------------------------

    /// Whether the request has a session that was not logged out.
    pub(crate) fn has_session(&self) -> bool {
        let st = self.lock();
        st.session.is_some() && !st.ended
    }

    /// A copy of the session if it is live: not ended by a logout, nor
    /// doomed by a deferred one.
    pub(crate) fn live_session(&self) -> Option<Session> {
        let st = self.lock();
        let doomed = st.ended || st.pending == PendingAction::Delete;
        st.session.clone().filter(|_| !doomed)
    }

    /// Whether the session was logged out during this request.
    pub(crate) fn ended(&self) -> bool {
        self.lock().ended
    }

    /// Runs `f` on the session; with `change` the session becomes pending
    /// a save.
    pub(crate) fn with_session<R>(&self, change: bool, f: impl FnOnce(&mut Session) -> R) -> R {
        let mut st = self.lock();
        if change {
            st.pending = st.pending.max(PendingAction::Save);
            st.version += 1;
        }
        // Only reachable through a handle, which exists once there is a
        // session; the stand-in keeps this panic-free regardless.
        f(st.session.get_or_insert_with(Session::detached))
    }

    /// Marks the session changed: pending at least a save.
    pub(crate) fn mark_changed(&self) {
        self.defer(PendingAction::Save);
    }

    pub(crate) fn pending(&self) -> PendingAction {
        self.lock().pending
    }

    /// Raises the pending action to at least `action`.
    pub(crate) fn defer(&self, action: PendingAction) {
        let mut st = self.lock();
        st.pending = st.pending.max(action);
        st.version += 1;
    }

    /// Makes `session` the request's session, nothing pending, and sends
    /// `token` (if any) back to the client.
    pub(crate) fn install(&self, session: Session, token: Option<String>) {
        let expires_at = session.expires_at();
        {
            let mut st = self.lock();
            st.session = Some(session);
            st.ended = false;
            st.pending = PendingAction::None;
        }
        if let Some(token) = token {
            self.issue(token, expires_at);
        }
    }

    fn issue(&self, token: String, expires_at: Option<SystemTime>) {
        self.share_guard.forbid_sharing();
        let mut st = self.lock();
        st.issued = Some(Issued { token, expires_at });
        st.remove_cookie = false;
    }

    /// The token issued during this request, if any.
    pub(crate) fn issued_token(&self) -> Option<String> {
        self.lock().issued.as_ref().map(|i| i.token.clone())
    }

    // ---- committing ------------------------------------------------------------

    /// Carries out the pending action: the only code that writes the
    /// request's session to the store. On an error the action stays
    /// pending.
    ///
    /// The store work runs on its own task: a caller that is cancelled
    /// half-way (a timeout around `regenerate`, say) cannot leave the store
    /// changed and the request unaware of it; the commit after the handler
    /// waits for it.
    pub(crate) async fn commit(self: &Arc<Self>) -> Result<Committed, SessionError> {
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let _turn = this.committing.lock().await;
            this.commit_locked().await
        });
        task.await.unwrap_or(Err(SessionError::Busy))
    }

    /// [`commit`](Self::commit), with the commit lock held.
    async fn commit_locked(&self) -> Result<Committed, SessionError> {
        let (mut session, action, version) = {
            let st = self.lock();
            match &st.session {
                Some(s) if !st.ended && st.pending != PendingAction::None => {
                    (s.clone(), st.pending, st.version)
                }
                _ => return Ok(Committed::Nothing),
            }
        };
        let manager = &self.manager;
        match action {
            PendingAction::None => Ok(Committed::Nothing),
            PendingAction::Save => {
                manager.update_session(&mut session).await?;
                self.settled(session, version, None);
                Ok(Committed::Saved)
            }
            PendingAction::Regenerate => {
                let token = manager.regenerate_session_id(&mut session).await?;
                self.settled(session, version, Some(token.clone()));
                Ok(Committed::Regenerated(token))
            }
            PendingAction::Delete => {
                let existed = manager.delete_session(session.id()).await?;
                self.end();
                Ok(Committed::Deleted(existed))
            }
        }
    }

    /// Takes in what a save or regeneration wrote. When the request changed
    /// the session or deferred something while the store was busy, those
    /// stay: the newer contents under the stored id, still pending.
    fn settled(&self, stored: Session, version: u64, token: Option<String>) {
        let expires_at = stored.expires_at();
        {
            let mut st = self.lock();
            if st.version == version {
                st.session = Some(stored);
                st.pending = PendingAction::None;
            } else if let Some(newer) = &mut st.session {
                newer.set_id(stored.id().to_owned());
                newer.indexed_user = stored.indexed_user.clone();
                // What was just written is done; what came since is not.
                st.pending = st.pending.max(PendingAction::Save);
                if st.pending == PendingAction::Regenerate && token.is_some() {
                    st.pending = PendingAction::Save;
                }
            }
        }
        if let Some(token) = token {
            self.issue(token, expires_at);
        }
    }

    /// Logs `user` in, after carrying out a logout still pending: attaches
    /// them to the live session (saving its changes) or creates a session
    /// bound to the request's client.
    pub(crate) async fn login(&self, user: super::SessionUser) -> Result<(), SessionError> {
        let _turn = self.committing.lock().await;
        if self.pending() == PendingAction::Delete {
            self.commit_locked().await?;
        }
        let (session, token) = match self.live_session() {
            Some(mut session) => {
                let token = self.manager.login(&mut session, user).await?;
                (session, token)
            }
            None => {
                let (ip, agent) = (self.client_ip, self.user_agent());
                self.manager.create_session(user, ip, agent, None).await?
            }
        };
        self.install(session, Some(token));
        Ok(())
    }

    /// The session was deleted: invalidated in place, nothing pending, and
    /// the response removes the cookie instead of issuing a token.
    fn end(&self) {
        {
            let mut st = self.lock();
            st.ended = true;
            st.pending = PendingAction::None;
            if let Some(s) = &mut st.session {
                s.invalidate();
            }
            st.issued = None;
            st.remove_cookie = true;
        }
        self.share_guard.forbid_sharing();
    }

    /// After the handler: commits what is still pending and says which
    /// token to send back. After a 5xx, changes and regenerations are
    /// dropped (the handler failed half-way), but a deletion is carried out:
    /// a logout must not be lost.
    pub(crate) async fn settle(self: &Arc<Self>, status: StatusCode) -> TokenOutcome {
        let (pending, tag) = {
            let st = self.lock();
            (st.pending, st.session.as_ref().map(|s| log_id(s.id())))
        };
        let tag = tag.unwrap_or_default();
        if status.is_server_error() && pending < PendingAction::Delete {
            if pending != PendingAction::None {
                debug!(session = %tag, ?pending, "session changes not saved after a server error");
            }
        } else if let Err(e) = self.commit().await {
            if e.is_client_error() {
                // Typically: deleted by a concurrent logout. Not
                // resurrecting it is the point.
                debug!(session = %tag, ?pending, error = %e, "session changes dropped");
            } else {
                warn!(session = %tag, ?pending, error = %e, "session could not be committed");
            }
        }
        let st = self.lock();
        TokenOutcome {
            issued: st.issued.clone(),
            remove_cookie: st.remove_cookie,
        }
    }
}
