//! The session data model: [`Session`], [`SessionUser`], [`FlashMessage`].

use std::{
    fmt,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

use super::{SessionError, token};

/// Category of a flash message when none is given.
pub const DEFAULT_FLASH_CATEGORY: &str = "info";

/// Timestamps are stored as whole milliseconds since the Unix epoch: compact,
/// readable in a store dump, and independent of the platform's `SystemTime`
/// layout.
pub(crate) mod unix_ms {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn to_ms(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn from_ms(ms: u64) -> SystemTime {
        UNIX_EPOCH
            .checked_add(Duration::from_millis(ms))
            .unwrap_or(UNIX_EPOCH)
    }

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(to_ms(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        u64::deserialize(d).map(from_ms)
    }

    pub(crate) mod option {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<SystemTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&to_ms(*t)),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Option::<u64>::deserialize(d).map(|o| o.map(from_ms))
        }
    }
}

/// The user attached to a session.
///
/// Fields the application adds beyond the named ones survive a round trip
/// through the store (they land in [`extra`](Self::extra)).
///
/// ```
/// use axum_cachex::session::SessionUser;
///
/// let user = SessionUser::new("42").with_username("ada").with_role("admin");
/// assert!(user.has_role("admin"));
/// let json = serde_json::json!({"user_id": "7", "tenant": "acme"});
/// let parsed: SessionUser = serde_json::from_value(json).unwrap();
/// assert_eq!(parsed.extra["tenant"], "acme");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionUser {
    /// The application's user id.
    pub user_id: String,
    /// Display name.
    #[serde(default)]
    pub username: Option<String>,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Permission names.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Any other fields, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SessionUser {
    /// A user with only an id.
    pub fn new(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            username: None,
            email: None,
            roles: Vec::new(),
            permissions: Vec::new(),
            metadata: Map::new(),
            extra: Map::new(),
        }
    }
    /// Sets the user name.
    #[must_use]
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }
    /// Sets the e-mail address.
    #[must_use]
    pub fn with_email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }
    /// Adds a role.
    #[must_use]
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }
    /// Adds a permission.
    #[must_use]
    pub fn with_permission(mut self, permission: impl Into<String>) -> Self {
        self.permissions.push(permission.into());
        self
    }
    /// Whether the user has this role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
    /// Whether the user has this permission.
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }
}

/// Whether a session can still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SessionStatus {
    /// In use.
    Active,
    /// Ran past its expiry or absolute timeout.
    Expired,
    /// Ended by the application (logout, invalidation).
    Invalidated,
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Invalidated => "invalidated",
        })
    }
}

/// A one-shot message for the next response (e.g. "Profile saved").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashMessage {
    /// The text.
    pub message: String,
    /// A category such as `info` (the default), `success`, `error`.
    #[serde(default = "default_category")]
    pub category: String,
    /// When it was added.
    #[serde(with = "unix_ms")]
    pub timestamp: SystemTime,
}

fn default_category() -> String {
    DEFAULT_FLASH_CATEGORY.to_owned()
}

/// A server-side session.
///
/// Created by the [`SessionManager`](super::SessionManager); handlers get
/// it through [`SessionHandle`](super::SessionHandle). The id is random
/// (256 bits from the OS generator); `Debug` shows only a short hash of it,
/// never the id itself. Timestamps serialise as Unix milliseconds.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    session_id: String,
    user: Option<SessionUser>,
    #[serde(with = "unix_ms")]
    created_at: SystemTime,
    #[serde(with = "unix_ms")]
    last_accessed: SystemTime,
    #[serde(with = "unix_ms::option")]
    expires_at: Option<SystemTime>,
    status: SessionStatus,
    ip_address: Option<IpAddr>,
    user_agent: Option<String>,
    #[serde(default)]
    data: Map<String, Value>,
    #[serde(default)]
    flash_messages: Vec<FlashMessage>,
    /// Hash of the user id under which the store's per-user index lists
    /// this session (kept in the store record, not in the session's JSON).
    #[serde(skip)]
    pub(crate) indexed_user: Option<String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("session", &token::log_id(&self.session_id))
            .field("user", &self.user.as_ref().map(|u| &u.user_id))
            .field("created_at", &self.created_at)
            .field("last_accessed", &self.last_accessed)
            .field("expires_at", &self.expires_at)
            .field("status", &self.status)
            .field("ip_address", &self.ip_address)
            .field("user_agent", &self.user_agent)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .field("flash_messages", &self.flash_messages.len())
            .finish()
    }
}

impl Session {
    /// A new active session expiring `ttl` from now, with a fresh random id.
    ///
    /// # Errors
    ///
    /// [`SessionError::Random`] when the OS random generator fails.
    pub fn new(user: Option<SessionUser>, ttl: Duration) -> Result<Self, SessionError> {
        let now = SystemTime::now();
        Self::new_at(user, now, now.checked_add(ttl), None, None, Map::new())
    }

    pub(crate) fn new_at(
        user: Option<SessionUser>,
        now: SystemTime,
        expires_at: Option<SystemTime>,
        ip_address: Option<IpAddr>,
        user_agent: Option<String>,
        data: Map<String, Value>,
    ) -> Result<Self, SessionError> {
        Ok(Self {
            session_id: token::new_session_id()?,
            user,
            created_at: now,
            last_accessed: now,
            expires_at,
            status: SessionStatus::Active,
            ip_address,
            user_agent,
            data,
            flash_messages: Vec::new(),
            indexed_user: None,
        })
    }

    /// A stand-in that is never stored: no id, no user, invalidated. Lets
    /// request-scoped code hold "a session" without a fallible constructor.
    pub(crate) fn detached() -> Self {
        Self {
            session_id: String::new(),
            user: None,
            created_at: std::time::UNIX_EPOCH,
            last_accessed: std::time::UNIX_EPOCH,
            expires_at: Some(std::time::UNIX_EPOCH),
            status: SessionStatus::Invalidated,
            ip_address: None,
            user_agent: None,
            data: Map::new(),
            flash_messages: Vec::new(),
            indexed_user: None,
        }
    }

    /// The session id (64 lowercase hex characters). Treat it as a secret:
    /// log [`SessionManager::log_id`](super::SessionManager::log_id) instead.
    pub fn id(&self) -> &str {
        &self.session_id
    }
    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&SessionUser> {
        self.user.as_ref()
    }
    /// The logged-in user, to change roles or metadata. To attach a user,
    /// use [`SessionManager::login`](super::SessionManager::login) so that
    /// the id is regenerated.
    pub fn user_mut(&mut self) -> Option<&mut SessionUser> {
        self.user.as_mut()
    }
    pub(crate) fn set_id(&mut self, id: String) {
        self.session_id = id;
    }
    pub(crate) fn set_user(&mut self, user: Option<SessionUser>) {
        self.user = user;
    }
    /// Drops the application data and the flash messages (a login over
    /// another user's session starts clean).
    pub(crate) fn clear_contents(&mut self) {
        self.data.clear();
        self.flash_messages.clear();
    }
    /// Whether a user is attached.
    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }
    /// When the session was created (or its user logged in).
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }
    pub(crate) fn set_created_at(&mut self, t: SystemTime) {
        self.created_at = t;
    }
    /// When the session was last read. Persisted only when the session is
    /// written anyway (a change or a renewal), so that reads cost no write.
    pub fn last_accessed(&self) -> SystemTime {
        self.last_accessed
    }
    pub(crate) fn touch(&mut self, now: SystemTime) {
        self.last_accessed = now;
    }
    /// When the session expires, unless renewed.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
    pub(crate) fn set_expires_at(&mut self, t: Option<SystemTime>) {
        self.expires_at = t;
    }
    /// Active, expired or invalidated.
    pub fn status(&self) -> SessionStatus {
        self.status
    }
    pub(crate) fn set_status(&mut self, status: SessionStatus) {
        self.status = status;
    }
    /// The client IP the session was created from.
    pub fn ip_address(&self) -> Option<IpAddr> {
        self.ip_address
    }
    /// The `User-Agent` the session was created with.
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }
    /// The application data.
    pub fn data(&self) -> &Map<String, Value> {
        &self.data
    }
    /// The application data, mutable.
    pub fn data_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.data
    }
    /// Reads one data value as `T`; `None` when absent or of another shape.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.data.get(key).and_then(|v| T::deserialize(v).ok())
    }
    /// Stores one data value.
    ///
    /// # Errors
    ///
    /// When `value` cannot be represented as JSON.
    pub fn insert<T: Serialize>(
        &mut self,
        key: impl Into<String>,
        value: T,
    ) -> Result<(), serde_json::Error> {
        let v = serde_json::to_value(value)?;
        self.data.insert(key.into(), v);
        Ok(())
    }
    /// Removes one data value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.data.remove(key)
    }
    /// The pending flash messages, without consuming them.
    pub fn flash_messages(&self) -> &[FlashMessage] {
        &self.flash_messages
    }

    /// Active and not past its expiry.
    pub fn is_valid(&self) -> bool {
        self.is_valid_at(SystemTime::now())
    }
    /// [`is_valid`](Self::is_valid) at a given time.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.status == SessionStatus::Active && !self.is_expired_at(now)
    }
    /// Past its expiry (regardless of status).
    pub fn is_expired(&self) -> bool {
        self.is_expired_at(SystemTime::now())
    }
    /// [`is_expired`](Self::is_expired) at a given time.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }
    /// Extends the expiry to `ttl` from now and records the access. The
    /// manager's sliding renewal also caps it at the absolute timeout.
    pub fn renew(&mut self, ttl: Duration) {
        self.renew_at(ttl, SystemTime::now());
    }
    /// [`renew`](Self::renew) at a given time.
    pub fn renew_at(&mut self, ttl: Duration, now: SystemTime) {
        self.expires_at = now.checked_add(ttl);
        self.last_accessed = now;
    }
    /// Marks the session invalidated; it is refused from then on once saved.
    pub fn invalidate(&mut self) {
        self.status = SessionStatus::Invalidated;
    }
    /// Queues a flash message; `category` defaults to `info`.
    pub fn add_flash_message(&mut self, message: impl Into<String>, category: Option<&str>) {
        self.flash_messages.push(FlashMessage {
            message: message.into(),
            category: category.unwrap_or(DEFAULT_FLASH_CATEGORY).to_owned(),
            timestamp: SystemTime::now(),
        });
    }
    /// The pending flash messages; with `clear` they are removed (the
    /// session then needs saving).
    pub fn get_flash_messages(&mut self, clear: bool) -> Vec<FlashMessage> {
        if clear {
            std::mem::take(&mut self.flash_messages)
        } else {
            self.flash_messages.clone()
        }
    }
}
