//! [`SessionManager`]: session records in a [`Backend`].

use std::{
    fmt,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum_cachex_core::Backend;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::{debug, error, warn};

use crate::{Clock, Registry, manager_stats::ManagerCounting};

use super::{
    SecurityError, Session, SessionConfig, SessionError, SessionStatus, SessionUser, TokenFormat,
    config::canonical,
    index::DeferredRefreshes,
    token::{self, Tokens, log_id},
};

/// How long a session marked expired stays readable as "expired" (rather
/// than "not found") before the backend drops it.
const EXPIRED_RECORD_GRACE: Duration = Duration::from_secs(60);
/// Attempts at a fresh id when `add` finds the key taken (with 256-bit ids
/// this never happens; the loop exists so that a collision cannot
/// overwrite another session).
const CREATE_ATTEMPTS: usize = 3;
/// Version of the stored record layout.
const RECORD_VERSION: u8 = 1;
/// Attempts at a compare-and-set write of a session record (a save, a
/// renewal, the removal of the old record of a regeneration) before giving
/// up with [`SessionError::Conflict`]: each failed attempt means another
/// writer changed the record in between, so the budget is only exhausted
/// under a storm of concurrent writes to one session.
const CAS_ATTEMPTS: usize = 8;

/// A session read by [`SessionManager::load_session`], with the new token
/// when the read renewed a JWT session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadedSession {
    /// The session.
    pub session: Session,
    /// With [`TokenFormat::Jwt`], a fresh token whose `exp` follows the
    /// renewed expiry; the client must use it from now on (the middleware
    /// sends it back). Always `None` for simple tokens, which carry no
    /// expiry.
    pub renewed_token: Option<String>,
}

/// The stored form: the session without its id (the key is a keyed hash of
/// the id and the reader knows the id from the token, so a dump of the
/// store reveals no id at all), plus bookkeeping that is not part of the
/// session's own JSON.
#[derive(Serialize)]
struct RecordOut<'a> {
    v: u8,
    s: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<&'a str>,
}

#[derive(Deserialize)]
struct RecordIn {
    v: u8,
    s: Value,
    #[serde(default)]
    u: Option<String>,
}

const ID_FIELD: &str = "session_id";

/// Server-side sessions over any [`Backend`].
///
/// Cheap to clone (an `Arc`). See the [module docs](super) for the
/// lifecycle, the security model and the store layout.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use axum_cachex::backend::MemoryBackend;
/// use axum_cachex::session::{SessionConfig, SessionManager, SessionUser};
///
/// let config = SessionConfig::builder("a-secret-of-at-least-32-characters!!").build()?;
/// let manager = SessionManager::new(Arc::new(MemoryBackend::new()), config);
///
/// let (session, token) = manager
///     .create_session(SessionUser::new("42"), None, None, None)
///     .await?;
/// let again = manager.get_session(&token, None, None).await?;
/// assert_eq!(again.id(), session.id());
///
/// manager.delete_session(session.id()).await?;
/// assert!(manager.get_session(&token, None, None).await.is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    config: SessionConfig,
    tokens: Tokens,
    clock: Clock,
    deferred: DeferredRefreshes,
    counting: ManagerCounting,
    /// Whether the missing client address under `ip_binding` was logged.
    warned_no_client_ip: AtomicBool,
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("backend", &self.inner.backend.name())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl SessionManager {
    /// A manager storing sessions in `backend`.
    pub fn new(backend: Arc<dyn Backend>, config: SessionConfig) -> Self {
        Self::with_parts(backend, config, Clock::system(), ManagerCounting::default())
    }

    fn with_parts(
        backend: Arc<dyn Backend>,
        config: SessionConfig,
        clock: Clock,
        counting: ManagerCounting,
    ) -> Self {
        let tokens = Tokens::new(&config);
        Self {
            inner: Arc::new(Inner {
                backend,
                config,
                tokens,
                clock,
                deferred: DeferredRefreshes::default(),
                counting,
                warned_no_client_ip: AtomicBool::new(false),
            }),
        }
    }

    /// The same manager counting what it does (sessions created, loaded,
    /// rejected, renewed, deleted) in `registry`, for the monitoring routes
    /// watching it. Default: not counted.
    #[must_use]
    pub fn with_registry(self, registry: &Registry) -> Self {
        Self::with_parts(
            Arc::clone(&self.inner.backend),
            self.inner.config.clone(),
            self.inner.clock.clone(),
            registry.manager_counting(),
        )
    }

    /// The same manager reading time from `clock`; tests pass a
    /// [`ManualClock`](crate::ManualClock)'s clock to expire sessions
    /// without sleeping. (Backend TTLs still run on real time.)
    #[must_use]
    pub fn with_clock(self, clock: Clock) -> Self {
        Self::with_parts(
            Arc::clone(&self.inner.backend),
            self.inner.config.clone(),
            clock,
            self.inner.counting.clone(),
        )
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Now, by the manager's clock, truncated to whole milliseconds: the
    /// precision of stored timestamps, so that a session compares equal
    /// before and after a round trip through the store.
    pub fn now(&self) -> SystemTime {
        let now = self.inner.clock.now();
        match now.duration_since(UNIX_EPOCH) {
            Ok(d) => now - Duration::from_nanos(u64::from(d.subsec_nanos() % 1_000_000)),
            Err(_) => now,
        }
    }

    /// The short one-way tag under which logs mention a session id: the
    /// first 12 hex digits of its SHA-256.
    pub fn log_id(session_id: &str) -> String {
        log_id(session_id)
    }

    // ---- store layout ----------------------------------------------------

    pub(crate) fn backend_ref(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    pub(crate) fn deferred(&self) -> &DeferredRefreshes {
        &self.inner.deferred
    }

    fn prefix(&self) -> &str {
        self.inner.config.backend_key_prefix()
    }

    pub(crate) fn keys(&self) -> &token::Keys {
        self.inner.tokens.keys()
    }

    /// `{prefix}{keyed hash of the id}`: the id itself never reaches the store.
    fn key(&self, session_id: &str) -> String {
        self.key_for_hash(&self.keys().session_hash(session_id))
    }

    pub(crate) fn key_for_hash(&self, hash: &str) -> String {
        format!("{}{hash}", self.prefix())
    }

    pub(crate) fn user_key(&self, user_hash: &str) -> String {
        format!("{}user:{user_hash}", self.prefix())
    }

    pub(crate) fn user_lock_key(&self, user_hash: &str) -> String {
        format!("{}user:{user_hash}:lock", self.prefix())
    }

    fn encode(&self, s: &Session) -> Result<Bytes, SessionError> {
        let mut body = serde_json::to_value(s).map_err(SessionError::Corrupt)?;
        if let Value::Object(map) = &mut body {
            map.remove(ID_FIELD);
        }
        let rec = RecordOut {
            v: RECORD_VERSION,
            s: body,
            u: s.indexed_user.as_deref(),
        };
        serde_json::to_vec(&rec)
            .map(Bytes::from)
            .map_err(SessionError::Corrupt)
    }

    /// Decodes a record; `id` is the session id when known (from the
    /// token), otherwise the session's id is left empty (sweeps and index
    /// pruning look only at status and expiry).
    pub(crate) fn decode(&self, bytes: &[u8], id: Option<&str>) -> Result<Session, SessionError> {
        let rec: RecordIn = serde_json::from_slice(bytes).map_err(SessionError::Corrupt)?;
        if rec.v != RECORD_VERSION {
            return Err(SessionError::Corrupt(serde::de::Error::custom(
                "unsupported session record version",
            )));
        }
        let mut body = rec.s;
        let Value::Object(map) = &mut body else {
            return Err(SessionError::Corrupt(serde::de::Error::custom(
                "session record is not an object",
            )));
        };
        map.insert(
            ID_FIELD.to_owned(),
            Value::String(id.unwrap_or_default().to_owned()),
        );
        let mut s: Session = serde_json::from_value(body).map_err(SessionError::Corrupt)?;
        s.indexed_user = rec.u;
        Ok(s)
    }

    // ---- guarded writes ----------------------------------------------------

    /// Writes `value` over a record only while it still holds `expected`,
    /// the bytes the caller read and decided on: compare-and-set when the
    /// backend has [`CompareAndSwap`](axum_cachex_core::CompareAndSwap),
    /// else `replace` (only a deletion is then detected; see the module
    /// docs). `false`: the record changed or vanished, read it again.
    async fn write_if_unchanged(
        &self,
        key: &str,
        expected: &[u8],
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, SessionError> {
        let backend = &self.inner.backend;
        Ok(match backend.compare_and_swap() {
            Some(cas) => cas.set_if_equals(key, expected, value, Some(ttl)).await?,
            None => backend.replace(key, value, Some(ttl)).await?,
        })
    }

    /// Deletes a record only while it still holds `expected` (plain
    /// `delete` without compare-and-swap). `false`: it changed or vanished.
    async fn delete_if_unchanged(&self, key: &str, expected: &[u8]) -> Result<bool, SessionError> {
        let backend = &self.inner.backend;
        Ok(match backend.compare_and_swap() {
            Some(cas) => cas.delete_if_equals(key, expected).await?,
            None => backend.delete(key).await?,
        })
    }

    /// Refuses to write an active session over a stored record that was
    /// invalidated or marked expired meanwhile: an ended session stays
    /// ended. A record that cannot be decoded does not block the write.
    fn ensure_not_ended(&self, session: &Session, stored: &[u8]) -> Result<(), SessionError> {
        if session.status() == SessionStatus::Active
            && let Ok(stored) = self.decode(stored, None)
            && stored.status() != SessionStatus::Active
        {
            return Err(SessionError::Invalid {
                status: stored.status(),
            });
        }
        Ok(())
    }

    /// With `ip_binding` on, a request without a client address (the app
    /// is served without `ConnectInfo`) cannot be checked: refused, and the
    /// misconfiguration logged once per manager.
    fn require_client_ip(&self, ip: Option<IpAddr>) -> Result<(), SessionError> {
        if ip.is_some() || !self.inner.config.ip_binding() {
            return Ok(());
        }
        let e = SecurityError::ClientAddressUnknown;
        if !self.inner.warned_no_client_ip.swap(true, Ordering::Relaxed) {
            error!("session refused: {e}");
        }
        Err(e.into())
    }

    // ---- time rules -------------------------------------------------------

    /// The absolute deadline of a session, if `absolute_timeout` is set.
    fn deadline(&self, s: &Session) -> Option<SystemTime> {
        self.inner
            .config
            .absolute_timeout()
            .and_then(|t| s.created_at().checked_add(t))
    }

    /// `now + session_ttl`, never past the absolute deadline.
    fn capped_expiry(&self, s: &Session, now: SystemTime) -> Option<SystemTime> {
        let sliding = now.checked_add(self.inner.config.session_ttl());
        match (sliding, self.deadline(s)) {
            (Some(e), Some(d)) => Some(e.min(d)),
            (e, None) => e,
            (None, d) => d,
        }
    }

    /// Whether the session is past its expiry or absolute deadline.
    fn is_over(&self, s: &Session, now: SystemTime) -> bool {
        s.is_expired_at(now) || self.deadline(s).is_some_and(|d| now >= d)
    }

    /// Backend TTL: the time to `expires_at`, rounded up to whole seconds
    /// (Memcached's unit), at least 1 s.
    fn ttl(&self, s: &Session, now: SystemTime) -> Duration {
        let left = match s.expires_at() {
            Some(e) => e.duration_since(now).unwrap_or(Duration::ZERO),
            None => self.inner.config.session_ttl(),
        };
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Duration::from_secs(secs.max(1))
    }

    fn should_renew(&self, s: &Session, now: SystemTime) -> bool {
        let config = &self.inner.config;
        if !config.sliding_expiration() {
            return false;
        }
        let Some(expires) = s.expires_at() else {
            return false;
        };
        let left = expires.duration_since(now).unwrap_or(Duration::ZERO);
        let threshold = config.session_ttl().mul_f64(config.sliding_threshold());
        // Renew only below the threshold, and only when it gains something:
        // at the absolute deadline the capped expiry equals the current one.
        left < threshold && self.capped_expiry(s, now).is_some_and(|e| e > expires)
    }

    // ---- tokens -------------------------------------------------------------

    /// A token for `session`: simple tokens are re-signed with the current
    /// time; JWTs get `exp` = the session's expiry.
    ///
    /// # Errors
    ///
    /// [`SessionError::Signing`] if the JWT cannot be encoded.
    pub fn issue_token(&self, session: &Session) -> Result<String, SessionError> {
        self.inner.tokens.issue(
            session.id(),
            self.now(),
            session.expires_at(),
            self.inner.config.session_ttl(),
        )
    }

    /// Verifies a token and returns the session id it names, without
    /// touching the store.
    ///
    /// # Errors
    ///
    /// [`SessionError::Token`] for a malformed token or rejected claims,
    /// [`SessionError::Security`] for a bad signature or algorithm.
    pub fn verify_token(&self, token: &str) -> Result<String, SessionError> {
        self.inner.tokens.verify(token, self.now())
    }

    // ---- operations -------------------------------------------------------

    /// Creates a session for `user` and returns it with its token.
    ///
    /// `ip` and `user_agent` are recorded for `ip_binding` /
    /// `user_agent_binding`. The record is written with `add`, so an
    /// existing session is never overwritten, and listed in the user's index.
    ///
    /// # Errors
    ///
    /// [`SessionError::Backend`], [`SessionError::Busy`] (user index locked),
    /// [`SessionError::Random`], [`SessionError::Signing`];
    /// [`SecurityError::ClientAddressUnknown`] when `ip_binding` is on and
    /// `ip` is `None` (the session could never be checked).
    pub async fn create_session(
        &self,
        user: SessionUser,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        data: Option<Map<String, Value>>,
    ) -> Result<(Session, String), SessionError> {
        self.create(Some(user), ip, user_agent, data).await
    }

    /// Creates a session without a user (a cart, a CSRF token, a login
    /// flow in progress). Attach a user later with [`login`](Self::login).
    ///
    /// # Errors
    ///
    /// As [`create_session`](Self::create_session).
    pub async fn create_anonymous_session(
        &self,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        data: Option<Map<String, Value>>,
    ) -> Result<(Session, String), SessionError> {
        self.create(None, ip, user_agent, data).await
    }

    async fn create(
        &self,
        user: Option<SessionUser>,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        data: Option<Map<String, Value>>,
    ) -> Result<(Session, String), SessionError> {
        self.require_client_ip(ip)?;
        let now = self.now();
        let mut s = Session::new_at(
            user,
            now,
            None,
            ip.map(canonical),
            user_agent.map(str::to_owned),
            data.unwrap_or_default(),
        )?;
        s.set_expires_at(self.capped_expiry(&s, now));
        self.insert_new(&mut s, now).await?;
        let token = self.issue_token(&s)?;
        debug!(session = %log_id(s.id()), user = s.is_authenticated(), "session created");
        self.inner.counting.bump(|c| &c.sessions_created);
        Ok((s, token))
    }

    /// Writes a session under a key that must not exist yet, then lists it
    /// in its user's index. On an index failure the record is removed again,
    /// so that no session escapes [`delete_user_sessions`](Self::delete_user_sessions).
    async fn insert_new(&self, s: &mut Session, now: SystemTime) -> Result<(), SessionError> {
        let user_hash = s.user().map(|u| self.keys().user_hash(&u.user_id));
        s.indexed_user = user_hash.clone();
        let mut attempt = 0;
        let key = loop {
            let key = self.key(s.id());
            if self
                .inner
                .backend
                .add(&key, self.encode(s)?, Some(self.ttl(s, now)))
                .await?
            {
                break key;
            }
            attempt += 1;
            if attempt >= CREATE_ATTEMPTS {
                warn!("session id collided {attempt} times; the random generator is suspect");
                return Err(SessionError::Busy);
            }
            s.set_id(token::new_session_id()?);
        };
        if let Some(uh) = user_hash {
            let hash = self.keys().session_hash(s.id());
            if let Err(e) = self.index_upsert(&uh, &hash, s.expires_at()).await {
                if let Err(del) = self.inner.backend.delete(&key).await {
                    warn!(session = %log_id(s.id()), error = %del, "could not roll back an unindexed session");
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Reads the session a token names; see [`load_session`](Self::load_session).
    /// With JWT tokens, prefer `load_session`: it also returns the renewed
    /// token, without which the client is cut off at the old `exp`.
    ///
    /// # Errors
    ///
    /// As [`load_session`](Self::load_session).
    pub async fn get_session(
        &self,
        token: &str,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
    ) -> Result<Session, SessionError> {
        self.load_session(token, ip, user_agent)
            .await
            .map(|l| l.session)
    }

    /// Verifies `token`, reads its session and checks it.
    ///
    /// A read writes to the store only when the sliding renewal fires (less
    /// than `session_ttl × sliding_threshold` left); the expiry then moves to
    /// `now + session_ttl`, never past `absolute_timeout`. `last_accessed` is
    /// set on the returned session and persisted with the next write.
    ///
    /// # Errors
    ///
    /// - [`SessionError::Token`]: malformed token, JWT expired or with wrong
    ///   claims;
    /// - [`SessionError::Security`]: bad signature or algorithm, IP or
    ///   `User-Agent` mismatch (with the bindings on), no `ip` at all with
    ///   `ip_binding` on ([`SecurityError::ClientAddressUnknown`], not a
    ///   client error: the app is served without `ConnectInfo`);
    /// - [`SessionError::NotFound`]: no such session (also when it was
    ///   deleted while this read renewed it);
    /// - [`SessionError::Invalid`]: the session was invalidated;
    /// - [`SessionError::Expired`]: past its expiry or absolute timeout (it
    ///   is marked expired in the store);
    /// - [`SessionError::Conflict`]: the renewal kept losing to concurrent
    ///   writes of the record;
    /// - [`SessionError::Corrupt`], [`SessionError::Backend`].
    pub async fn load_session(
        &self,
        token: &str,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
    ) -> Result<LoadedSession, SessionError> {
        let result = self.load_checked(token, ip, user_agent).await;
        match &result {
            Ok(_) => self.inner.counting.bump(|c| &c.sessions_loaded),
            Err(e) if e.is_client_error() => {
                self.inner.counting.bump(|c| &c.sessions_rejected);
            }
            Err(_) => {}
        }
        result
    }

    async fn load_checked(
        &self,
        token: &str,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
    ) -> Result<LoadedSession, SessionError> {
        let now = self.now();
        let id = self.inner.tokens.verify(token, now)?;
        self.require_client_ip(ip)?;
        let key = self.key(&id);
        for _ in 0..CAS_ATTEMPTS {
            if let Some(loaded) = self.load_once(&id, &key, ip, user_agent, now).await? {
                return Ok(loaded);
            }
            debug!(session = %log_id(&id), "session changed during its renewal; reading it again");
        }
        Err(SessionError::Conflict)
    }

    /// One read (and renewal) of a session; `None` when the record changed
    /// between the read and the renewal's write, which then did not happen.
    async fn load_once(
        &self,
        id: &str,
        key: &str,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        now: SystemTime,
    ) -> Result<Option<LoadedSession>, SessionError> {
        let Some(bytes) = self.inner.backend.get(key).await? else {
            debug!(session = %log_id(id), "session not found");
            return Err(SessionError::NotFound);
        };
        let mut s = self.decode(&bytes, Some(id))?;
        self.check_loaded(&mut s, key, &bytes, ip, user_agent, now)
            .await?;
        s.touch(now);
        let mut renewed_token = None;
        if self.should_renew(&s, now) {
            s.set_expires_at(self.capped_expiry(&s, now));
            let ttl = self.ttl(&s, now);
            if !self
                .write_if_unchanged(key, &bytes, self.encode(&s)?, ttl)
                .await?
            {
                // Changed (a save, an invalidation) or deleted (logout)
                // between our read and this write: decide again.
                return Ok(None);
            }
            debug!(session = %log_id(id), "session renewed");
            self.inner.counting.bump(|c| &c.sessions_renewed);
            if let Some(uh) = s.indexed_user.clone() {
                // Never waits for the index lock: see `index::refresh`.
                let hash = self.keys().session_hash(s.id());
                self.index_refresh(uh, hash, s.expires_at()).await;
            }
            if self.inner.tokens.format() == TokenFormat::Jwt {
                renewed_token = Some(self.issue_token(&s)?);
            }
        }
        Ok(Some(LoadedSession {
            session: s,
            renewed_token,
        }))
    }

    /// The checks of a read session: active, not over (else marked expired
    /// in the store), bound to this client.
    async fn check_loaded(
        &self,
        s: &mut Session,
        key: &str,
        bytes: &[u8],
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        now: SystemTime,
    ) -> Result<(), SessionError> {
        match s.status() {
            SessionStatus::Active => {}
            SessionStatus::Expired => return Err(SessionError::Expired),
            status => return Err(SessionError::Invalid { status }),
        }
        if self.is_over(s, now) {
            s.set_status(SessionStatus::Expired);
            // Only over what was read: a session deleted or invalidated
            // meanwhile stays so.
            let _ = self
                .write_if_unchanged(key, bytes, self.encode(s)?, EXPIRED_RECORD_GRACE)
                .await?;
            debug!(session = %log_id(s.id()), "session expired");
            return Err(SessionError::Expired);
        }
        let config = &self.inner.config;
        if config.ip_binding() && s.ip_address() != ip.map(canonical) {
            debug!(session = %log_id(s.id()), "client IP does not match the session");
            return Err(SecurityError::IpMismatch.into());
        }
        if config.user_agent_binding() && s.user_agent() != user_agent {
            debug!(session = %log_id(s.id()), "user agent does not match the session");
            return Err(SecurityError::UserAgentMismatch.into());
        }
        Ok(())
    }

    /// Saves a changed session.
    ///
    /// The write is update-only: a session deleted meanwhile (logout
    /// elsewhere) is not resurrected; the call then fails with
    /// [`SessionError::NotFound`]. An active session does not overwrite a
    /// stored one that was invalidated or marked expired meanwhile
    /// ([`SessionError::Invalid`]): the record is read, checked, and written
    /// only if it still holds what was read (compare-and-set, re-read and
    /// checked again when it changed). A save never moves the record: a
    /// new id is [`regenerate_session_id`](Self::regenerate_session_id)'s
    /// job. A changed user is moved between the per-user indexes.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotFound`], [`SessionError::Invalid`],
    /// [`SessionError::Conflict`], [`SessionError::Backend`],
    /// [`SessionError::Busy`].
    pub async fn update_session(&self, session: &mut Session) -> Result<(), SessionError> {
        let now = self.now();
        session.touch(now);
        let key = self.key(session.id());
        let mut index_synced = false;
        let mut moved_from = None;
        for _ in 0..CAS_ATTEMPTS {
            let Some(current) = self.inner.backend.get(&key).await? else {
                debug!(session = %log_id(session.id()), "save of a deleted session refused");
                return Err(SessionError::NotFound);
            };
            self.ensure_not_ended(session, &current)?;
            if !index_synced {
                moved_from = self.index_new_user(session).await?;
                index_synced = true;
            }
            let ttl = self.ttl(session, now);
            if self
                .write_if_unchanged(&key, &current, self.encode(session)?, ttl)
                .await?
            {
                self.unindex_old_user(session, moved_from).await;
                return Ok(());
            }
            debug!(session = %log_id(session.id()), "session changed during its save; reading it again");
        }
        Err(SessionError::Conflict)
    }

    /// Keeps the per-user index in step when the application changed the
    /// session's user directly, in two steps around the write: the new
    /// user's index lists the session before the record says it is theirs,
    /// and the old user's stops listing it only after (see
    /// [`unindex_old_user`](Self::unindex_old_user)). A write that fails in
    /// between leaves it listed under both, never under neither: "log out
    /// everywhere" always reaches it. Returns the old user's hash.
    async fn index_new_user(&self, s: &mut Session) -> Result<Option<String>, SessionError> {
        let now_hash = s.user().map(|u| self.keys().user_hash(&u.user_id));
        if now_hash == s.indexed_user {
            return Ok(None);
        }
        if let Some(uh) = &now_hash {
            let hash = self.keys().session_hash(s.id());
            self.index_upsert(uh, &hash, s.expires_at()).await?;
        }
        let old = s.indexed_user.take();
        s.indexed_user = now_hash;
        Ok(old)
    }

    /// The second step of [`index_new_user`](Self::index_new_user), once the
    /// record is written. A failure leaves an extra entry (the old user's
    /// "log out everywhere" would still end this session): logged.
    async fn unindex_old_user(&self, s: &Session, old: Option<String>) {
        let Some(old) = old else { return };
        let hash = self.keys().session_hash(s.id());
        if let Err(e) = self.index_remove(&old, &hash).await {
            warn!(session = %log_id(s.id()), error = %e, "could not unlist a session from its former user's index");
        }
    }

    /// Moves a session's record from `old_id` to its current id: the new
    /// record is created first, and the old one deleted only while it still
    /// holds what was read and checked (compare-and-delete). If the old one
    /// vanished (a concurrent logout) or was invalidated meanwhile, the new
    /// one is removed again and the call fails: an ended session is never
    /// re-created under a new id.
    async fn move_record(
        &self,
        s: &mut Session,
        old_id: &str,
        now: SystemTime,
    ) -> Result<(), SessionError> {
        let old_key = self.key(old_id);
        let Some(mut current) = self.inner.backend.get(&old_key).await? else {
            return Err(SessionError::NotFound);
        };
        self.ensure_not_ended(s, &current)?;
        self.insert_new(s, now).await?;
        let mut attempts = 0;
        let refused = loop {
            if self.delete_if_unchanged(&old_key, &current).await? {
                debug!(old = %log_id(old_id), new = %log_id(s.id()), "session id regenerated");
                return Ok(());
            }
            attempts += 1;
            let checked = match self.inner.backend.get(&old_key).await {
                Ok(Some(bytes)) => self.ensure_not_ended(s, &bytes).map(|()| bytes),
                Ok(None) => Err(SessionError::NotFound),
                Err(e) => Err(e.into()),
            };
            match checked {
                // Changed but still active (a save or renewal): the moved
                // copy is the newer one; delete the old record as it is now.
                Ok(bytes) if attempts < CAS_ATTEMPTS => current = bytes,
                Ok(_) => break SessionError::Conflict,
                Err(e) => break e,
            }
        };
        if let Err(del) = self.inner.backend.delete(&self.key(s.id())).await {
            warn!(session = %log_id(old_id), error = %del, "could not roll back a refused regeneration");
        }
        debug!(session = %log_id(old_id), error = %refused, "session ended during regeneration");
        Err(refused)
    }

    /// Gives the session a new id and returns its new token; the old id and
    /// token stop working. Use after any privilege change. A session
    /// deleted or invalidated while it moves is not re-created under the
    /// new id ([`SessionError::NotFound`], [`SessionError::Invalid`]).
    ///
    /// # Errors
    ///
    /// As [`update_session`](Self::update_session), plus
    /// [`SessionError::Random`] and [`SessionError::Signing`]. On an error
    /// `session` keeps its old id.
    pub async fn regenerate_session_id(
        &self,
        session: &mut Session,
    ) -> Result<String, SessionError> {
        let old_id = session.id().to_owned();
        session.set_id(token::new_session_id()?);
        let now = self.now();
        session.touch(now);
        if let Err(e) = self.move_record(session, &old_id, now).await {
            session.set_id(old_id);
            return Err(e);
        }
        self.issue_token(session)
    }

    /// Attaches `user` to an existing (typically anonymous) session and
    /// returns the token to use from now on.
    ///
    /// The login restarts the session's clock: `created_at` (the base of
    /// `absolute_timeout`) and the expiry start from now. With
    /// `regenerate_on_login` (the default) the session also gets a new id,
    /// so that an id planted before the login (session fixation) is
    /// worthless after it.
    ///
    /// The session's data and flash messages are kept only when an
    /// anonymous session becomes a logged-in one (a cart survives the
    /// login). A login over a session that already has a user — another
    /// user, or the same one logging in again — starts clean, so that
    /// nothing the previous login earned (an `mfa_verified` flag, a
    /// message meant for that user) carries over.
    ///
    /// # Errors
    ///
    /// As [`regenerate_session_id`](Self::regenerate_session_id).
    pub async fn login(
        &self,
        session: &mut Session,
        user: SessionUser,
    ) -> Result<String, SessionError> {
        let now = self.now();
        if session.is_authenticated() {
            session.clear_contents();
        }
        session.set_user(Some(user));
        session.set_created_at(now);
        session.set_expires_at(self.capped_expiry(session, now));
        if self.inner.config.regenerate_on_login() {
            return self.regenerate_session_id(session).await;
        }
        self.update_session(session).await?;
        self.issue_token(session)
    }

    /// Deletes a session. Returns whether it existed.
    ///
    /// # Errors
    ///
    /// [`SessionError::Backend`].
    pub async fn delete_session(&self, session_id: &str) -> Result<bool, SessionError> {
        if !token::is_session_id(session_id) {
            return Ok(false);
        }
        let existed = self.inner.backend.delete(&self.key(session_id)).await?;
        debug!(session = %log_id(session_id), existed, "session deleted");
        if existed {
            self.inner.counting.bump(|c| &c.sessions_deleted);
        }
        Ok(existed)
    }

    /// Marks a session invalidated (kept until its expiry, refused on every
    /// read). Returns whether it existed.
    ///
    /// # Errors
    ///
    /// [`SessionError::Backend`], [`SessionError::Corrupt`].
    pub async fn invalidate_session(&self, session_id: &str) -> Result<bool, SessionError> {
        if !token::is_session_id(session_id) {
            return Ok(false);
        }
        let key = self.key(session_id);
        let Some(bytes) = self.inner.backend.get(&key).await? else {
            return Ok(false);
        };
        let mut s = self.decode(&bytes, Some(session_id))?;
        s.invalidate();
        let now = self.now();
        let done = self
            .inner
            .backend
            .replace(&key, self.encode(&s)?, Some(self.ttl(&s, now)))
            .await?;
        debug!(session = %log_id(session_id), done, "session invalidated");
        Ok(done)
    }

    /// Deletes every session of a user ("log out everywhere") and returns
    /// how many were deleted.
    ///
    /// Uses the per-user index, not a scan of the keyspace, so it works the
    /// same on Memcached and costs O(sessions of the user).
    ///
    /// # Errors
    ///
    /// [`SessionError::Backend`], [`SessionError::Busy`].
    pub async fn delete_user_sessions(&self, user_id: &str) -> Result<u64, SessionError> {
        let uh = self.keys().user_hash(user_id);
        let n = self.index_drain(&uh).await?;
        debug!(user = %token::short(&uh), deleted = n, "user sessions deleted");
        self.inner.counting.add(|c| &c.sessions_deleted, n);
        Ok(n)
    }

    /// Deletes the sessions that are expired (by the manager's clock or the
    /// absolute timeout), invalidated, or unreadable, and returns how many.
    ///
    /// On backends that cannot list keys (Memcached) this returns 0 without
    /// doing anything: there the backend TTL, which follows each session's
    /// expiry, removes them.
    ///
    /// # Errors
    ///
    /// [`SessionError::Backend`].
    pub async fn clear_expired_sessions(&self) -> Result<u64, SessionError> {
        let backend = &self.inner.backend;
        let Some(listing) = backend.listing() else {
            return Ok(0);
        };
        let now = self.now();
        let mut removed = 0;
        for entry in listing.entries(self.prefix()).await? {
            let Some(hash) = entry.key.strip_prefix(self.prefix()) else {
                continue;
            };
            if !token::is_session_id(hash) {
                continue; // a user index or lock, or another prefix's key
            }
            if let Ok(s) = self.decode(&entry.value, None)
                && s.status() == SessionStatus::Active
                && !self.is_over(&s, now)
            {
                continue;
            }
            if backend.delete(&entry.key).await? {
                removed += 1;
            }
        }
        debug!(removed, "expired sessions cleared");
        Ok(removed)
    }
}
