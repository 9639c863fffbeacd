//! The state manager.

use std::{sync::Arc, time::Duration};

use axum_cachex_core::Backend;
use bytes::Bytes;
use serde_json::Value;

use super::{InvalidStateReason, StateData, StateError, StateManagerConfigError};
use crate::random::{constant_time_eq, url_token};
use crate::{Clock, Registry, manager_stats::ManagerCounting};

/// Default key prefix of state records: `oauth_state:`.
pub const DEFAULT_STATE_PREFIX: &str = "oauth_state:";

/// Default lifetime of a state: 600 seconds.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(600);

/// Random bytes in a state: 32 (256 bits), encoded as 43 base64url
/// characters.
pub const STATE_BYTES: usize = 32;

/// Longest state accepted from a client. Anything longer is malformed
/// without asking the backend, so a client cannot make the manager build
/// huge backend keys.
const MAX_STATE_LEN: usize = 128;

/// Issues and checks single-use OAuth `state` values (SPEC S5).
///
/// Each state is 32 bytes from the operating system's CSPRNG, encoded as
/// URL-safe base64 without padding, and stored in the backend under
/// `{key_prefix}{state}` with the requested lifetime. Cloning is cheap and
/// clones share the backend.
///
/// See the [module documentation](super) for the flow and the binding.
#[derive(Clone)]
pub struct StateManager {
    backend: Arc<dyn Backend>,
    key_prefix: Arc<str>,
    default_ttl: Duration,
    clock: Clock,
    counting: ManagerCounting,
}

impl std::fmt::Debug for StateManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateManager")
            .field("backend", &self.backend.name())
            .field("key_prefix", &self.key_prefix)
            .field("default_ttl", &self.default_ttl)
            .field("clock", &self.clock)
            .finish()
    }
}

/// Builder of a [`StateManager`]; start with [`StateManager::builder`].
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use axum_cachex::{Registry, backend::MemoryBackend, state::{StateManager, StateManagerConfigError}};
///
/// let registry = Registry::new();
/// let states = StateManager::builder(Arc::new(MemoryBackend::new()))
///     .default_ttl(Duration::from_secs(300))
///     .registry(&registry)
///     .build()?;
/// # drop(states);
/// let refused = StateManager::builder(Arc::new(MemoryBackend::new()))
///     .default_ttl(Duration::ZERO)
///     .build();
/// assert_eq!(refused.err(), Some(StateManagerConfigError::ZeroTtl));
/// # Ok::<(), StateManagerConfigError>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct StateManagerBuilder {
    backend: Arc<dyn Backend>,
    key_prefix: String,
    default_ttl: Duration,
    clock: Clock,
    registry: Option<Registry>,
}

impl StateManagerBuilder {
    /// The prefix of the state keys inside the backend's namespace.
    /// Default: `oauth_state:` ([`DEFAULT_STATE_PREFIX`]).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The lifetime of states created without an explicit one.
    /// Default: 600 s ([`DEFAULT_STATE_TTL`]).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The time source for `created_at` and the expiry check; tests pass a
    /// [`ManualClock`](crate::ManualClock)'s clock to check expiry without
    /// sleeping. The backend's own TTL still runs on real time, so a state
    /// past its clock expiry is reported as [`StateError::Expired`] while
    /// the backend still holds it. Default: [`Clock::system`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Counts what the manager does (states created, consumed, rejected)
    /// in `registry`, for the monitoring routes watching it. Default: not
    /// counted.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Checks the configuration and builds the manager.
    ///
    /// # Errors
    ///
    /// A [`StateManagerConfigError`] saying what to change: a zero or
    /// overflowing `default_ttl`, or an empty `key_prefix`.
    pub fn build(self) -> Result<StateManager, StateManagerConfigError> {
        if self.default_ttl.is_zero() {
            return Err(StateManagerConfigError::ZeroTtl);
        }
        if self.clock.now().checked_add(self.default_ttl).is_none() {
            return Err(StateManagerConfigError::TtlOutOfRange(self.default_ttl));
        }
        if self.key_prefix.is_empty() {
            return Err(StateManagerConfigError::EmptyKeyPrefix);
        }
        if self
            .key_prefix
            .starts_with(axum_cachex_core::CACHE_NAMESPACE)
        {
            return Err(StateManagerConfigError::CacheNamespace);
        }
        Ok(StateManager {
            backend: self.backend,
            key_prefix: self.key_prefix.into(),
            default_ttl: self.default_ttl,
            clock: self.clock,
            counting: self
                .registry
                .as_ref()
                .map(Registry::manager_counting)
                .unwrap_or_default(),
        })
    }
}

impl StateManager {
    /// A manager with the default prefix (`oauth_state:`), lifetime (600 s)
    /// and clock, counting nowhere. Infallible: the defaults are valid; use
    /// [`builder`](Self::builder) for anything else.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            key_prefix: DEFAULT_STATE_PREFIX.into(),
            default_ttl: DEFAULT_STATE_TTL,
            clock: Clock::system(),
            counting: ManagerCounting::default(),
        }
    }

    /// Starts configuring a manager over `backend`.
    pub fn builder(backend: Arc<dyn Backend>) -> StateManagerBuilder {
        StateManagerBuilder {
            backend,
            key_prefix: DEFAULT_STATE_PREFIX.to_owned(),
            default_ttl: DEFAULT_STATE_TTL,
            clock: Clock::system(),
            registry: None,
        }
    }

    /// The backend the states are stored in.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The key prefix of the state records.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The lifetime of states created without an explicit one.
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// Creates and stores a new state; returns the token to put in the
    /// authorization URL's `state` parameter.
    ///
    /// `ttl: None` uses the manager's default lifetime. `metadata` is kept
    /// with the state and handed back by [`consume_state`](Self::consume_state).
    ///
    /// # Errors
    ///
    /// [`StateError::InvalidTtl`] for a zero or overflowing `ttl`,
    /// [`StateError::Random`] when the OS generator fails,
    /// [`StateError::Backend`] when the backend fails.
    pub async fn create_state(
        &self,
        ttl: Option<Duration>,
        metadata: Option<Value>,
    ) -> Result<String, StateError> {
        self.counted_create(self.create(ttl, metadata, None).await)
    }

    /// Like [`create_state`](Self::create_state), and binds the state to a
    /// value the client presents again on the callback (e.g. a random
    /// `HttpOnly` cookie set by the login route, or a hash of the session
    /// id). Only [`consume_bound_state`](Self::consume_bound_state) with the
    /// same binding consumes it.
    ///
    /// The binding is stored in the backend as given: pass a value that is
    /// not a long-lived credential itself.
    ///
    /// # Errors
    ///
    /// As [`create_state`](Self::create_state).
    pub async fn create_bound_state(
        &self,
        binding: &str,
        ttl: Option<Duration>,
        metadata: Option<Value>,
    ) -> Result<String, StateError> {
        self.counted_create(self.create(ttl, metadata, Some(binding)).await)
    }

    /// Consumes an unbound state: returns its data and removes it, atomically
    /// (of any number of concurrent calls with one state, exactly one
    /// succeeds).
    ///
    /// A bound state is refused here ([`InvalidStateReason::BindingMismatch`])
    /// and stays in place.
    ///
    /// # Errors
    ///
    /// [`StateError::Invalid`] (unknown, used, malformed, bound),
    /// [`StateError::Expired`], [`StateError::Corrupt`],
    /// [`StateError::Backend`].
    pub async fn consume_state(&self, state: &str) -> Result<StateData, StateError> {
        self.counted_consume(self.consume(state, None).await)
    }

    /// Consumes a state created by
    /// [`create_bound_state`](Self::create_bound_state) with the same
    /// `binding` (compared in constant time).
    ///
    /// On a mismatch the state is **not** consumed: whoever holds the state
    /// but not the binding (a leaked URL, an attacker) cannot burn it for the
    /// legitimate client, who can still finish the login.
    ///
    /// # Errors
    ///
    /// As [`consume_state`](Self::consume_state).
    pub async fn consume_bound_state(
        &self,
        state: &str,
        binding: &str,
    ) -> Result<StateData, StateError> {
        self.counted_consume(self.consume(state, Some(binding)).await)
    }

    /// Whether [`consume_state`](Self::consume_state) would accept the state
    /// now (exists, not expired, decodes, unbound). Does not consume it.
    ///
    /// # Errors
    ///
    /// Only [`StateError::Backend`]; every rejection is `Ok(false)`.
    pub async fn validate_state(&self, state: &str) -> Result<bool, StateError> {
        self.validate(state, None).await
    }

    /// Whether [`consume_bound_state`](Self::consume_bound_state) would
    /// accept the state with this binding now. Does not consume it.
    ///
    /// # Errors
    ///
    /// Only [`StateError::Backend`]; every rejection is `Ok(false)`.
    pub async fn validate_bound_state(
        &self,
        state: &str,
        binding: &str,
    ) -> Result<bool, StateError> {
        self.validate(state, Some(binding)).await
    }

    /// The metadata stored with a live state, without consuming it. `None`
    /// when the state is unknown, expired, malformed, or has no metadata.
    /// The binding is not checked: this is a server-side read.
    ///
    /// # Errors
    ///
    /// [`StateError::Corrupt`] when the record does not decode,
    /// [`StateError::Backend`] when the backend fails.
    pub async fn get_state_metadata(&self, state: &str) -> Result<Option<Value>, StateError> {
        let Some(key) = self.key(state) else {
            return Ok(None);
        };
        let Some(raw) = self.backend.get(&key).await? else {
            return Ok(None);
        };
        let data = decode(&raw)?;
        if data.is_expired_at(self.clock.now()) {
            return Ok(None);
        }
        Ok(data.metadata)
    }

    /// Deletes a state without reading it (e.g. when the user cancels the
    /// login). Returns whether it existed.
    ///
    /// # Errors
    ///
    /// [`StateError::Backend`] when the backend fails.
    pub async fn delete_state(&self, state: &str) -> Result<bool, StateError> {
        match self.key(state) {
            Some(key) => Ok(self.backend.delete(&key).await?),
            None => Ok(false),
        }
    }

    /// The backend key of a state, or `None` when the state is not shaped
    /// like one of ours.
    fn key(&self, state: &str) -> Option<String> {
        let well_formed = !state.is_empty()
            && state.len() <= MAX_STATE_LEN
            && state
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| format!("{}{state}", self.key_prefix))
    }

    async fn create(
        &self,
        ttl: Option<Duration>,
        metadata: Option<Value>,
        binding: Option<&str>,
    ) -> Result<String, StateError> {
        let ttl = ttl.unwrap_or(self.default_ttl);
        if ttl.is_zero() {
            return Err(StateError::InvalidTtl(ttl));
        }
        let created_at = self.clock.now();
        let expires_at = created_at
            .checked_add(ttl)
            .ok_or(StateError::InvalidTtl(ttl))?;
        let state = url_token(STATE_BYTES).map_err(|source| StateError::Random { source })?;
        let data = StateData {
            state,
            created_at,
            expires_at,
            metadata,
            binding: binding.map(str::to_owned),
        };
        let bytes = serde_json::to_vec(&data).map_err(|source| StateError::Encode { source })?;
        let key = format!("{}{}", self.key_prefix, data.state);
        // `add`, not `set`: a new state never overwrites an existing record,
        // so even a broken generator cannot hijack another user's state.
        if self
            .backend
            .add(&key, Bytes::from(bytes), Some(ttl))
            .await?
        {
            Ok(data.state)
        } else {
            Err(StateError::Collision)
        }
    }

    async fn consume(&self, state: &str, binding: Option<&str>) -> Result<StateData, StateError> {
        let key = self
            .key(state)
            .ok_or(StateError::invalid(InvalidStateReason::Malformed))?;
        // Check the binding *before* taking: a client that has the state but
        // not the binding must not be able to burn it. Records are written
        // once (`add`) and never modified, so what `get` saw is what `take`
        // returns, if anything.
        let raw = self
            .backend
            .get(&key)
            .await?
            .ok_or(StateError::invalid(InvalidStateReason::NotFound))?;
        match decode(&raw) {
            Ok(data) => check_binding(&data, binding)?,
            Err(e) => {
                // A corrupt record can never be consumed: drop it.
                if let Err(err) = self.backend.delete(&key).await {
                    tracing::warn!(error = %err, "could not delete a corrupt OAuth state");
                }
                return Err(e);
            }
        }
        // The atomic step: of concurrent consumers only one gets the record.
        let raw = self
            .backend
            .take(&key)
            .await?
            .ok_or(StateError::invalid(InvalidStateReason::NotFound))?;
        let data = decode(&raw)?;
        check_binding(&data, binding)?;
        if data.is_expired_at(self.clock.now()) {
            return Err(StateError::Expired);
        }
        Ok(data)
    }

    async fn validate(&self, state: &str, binding: Option<&str>) -> Result<bool, StateError> {
        let Some(key) = self.key(state) else {
            return Ok(false);
        };
        let Some(raw) = self.backend.get(&key).await? else {
            return Ok(false);
        };
        Ok(decode(&raw).is_ok_and(|data| {
            check_binding(&data, binding).is_ok() && !data.is_expired_at(self.clock.now())
        }))
    }
}

fn decode(raw: &[u8]) -> Result<StateData, StateError> {
    serde_json::from_slice(raw).map_err(|source| StateError::Corrupt { source })
}

/// Bound states need the same binding, unbound states need none.
fn check_binding(data: &StateData, binding: Option<&str>) -> Result<(), StateError> {
    let matches = match (data.binding.as_deref(), binding) {
        (None, None) => true,
        (Some(stored), Some(given)) => constant_time_eq(stored.as_bytes(), given.as_bytes()),
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        Err(StateError::invalid(InvalidStateReason::BindingMismatch))
    }
}

impl StateManager {
    fn counted_create(&self, result: Result<String, StateError>) -> Result<String, StateError> {
        if result.is_ok() {
            self.counting.bump(|c| &c.states_created);
        }
        result
    }

    fn counted_consume(
        &self,
        result: Result<StateData, StateError>,
    ) -> Result<StateData, StateError> {
        match &result {
            Ok(_) => self.counting.bump(|c| &c.states_consumed),
            Err(e) if e.is_rejection() => self.counting.bump(|c| &c.states_rejected),
            Err(_) => {}
        }
        result
    }
}
