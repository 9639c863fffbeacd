//! OAuth `state` values: single-use, expiring, optionally bound to the client
//! (SPEC S5).
//!
//! An OAuth 2.0 / OIDC login sends the user to the provider with a random
//! `state` and checks, on the way back, that the callback carries a state the
//! server issued and has not seen used. [`StateManager`] issues such states
//! and stores them in any [`Backend`](crate::backend::Backend) under
//! `oauth_state:{state}`, with a lifetime (600 s by default) and any JSON
//! metadata (where to return to, a PKCE verifier, …).
//!
//! - [`create_state`](StateManager::create_state): 32 bytes from the OS
//!   CSPRNG (`getrandom`), base64url without padding (43 characters).
//! - [`consume_state`](StateManager::consume_state): returns the record and
//!   removes it **atomically** ([`Backend::take`](crate::backend::Backend::take):
//!   `GETDEL` on Redis, delete-wins on Memcached, remove on memory), so of any
//!   number of concurrent callbacks with one state exactly one succeeds.
//! - [`validate_state`](StateManager::validate_state) and
//!   [`get_state_metadata`](StateManager::get_state_metadata) read without
//!   consuming; [`delete_state`](StateManager::delete_state) drops a state.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use axum_cachex::{backend::MemoryBackend, state::{StateError, StateManager}};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), StateError> {
//! let states = StateManager::new(Arc::new(MemoryBackend::new()));
//!
//! // /login: create a state and put it in the authorization URL.
//! let state = states
//!     .create_state(Some(Duration::from_secs(300)), Some(json!({ "return_to": "/home" })))
//!     .await?;
//! assert_eq!(state.len(), 43);
//!
//! // /callback?code=…&state=…: consume it. A second use is refused.
//! let data = states.consume_state(&state).await?;
//! assert_eq!(data.metadata, Some(json!({ "return_to": "/home" })));
//! assert!(matches!(states.consume_state(&state).await, Err(StateError::Invalid { .. })));
//! # Ok(()) }
//! ```
//!
//! # Binding a state to the client
//!
//! A state alone proves only that *someone* started a login. Binding it to a
//! value only the starting browser presents (a random `HttpOnly` cookie set by
//! the login route, or a digest of its session id) stops a leaked or injected
//! state from being completed by another client (login CSRF):
//! [`create_bound_state`](StateManager::create_bound_state) stores the
//! binding and [`consume_bound_state`](StateManager::consume_bound_state)
//! compares it in constant time.
//!
//! **On a mismatch the state is not consumed.** The manager reads the record,
//! checks the binding, and only then takes it. Otherwise whoever saw the
//! state (in a log, a `Referer`, a shared link) could burn it and break the
//! legitimate user's login; the cost is one extra backend read per consume.
//! Records are written once and never modified, so the check cannot be
//! raced. A bound state is refused by the unbound
//! [`consume_state`](StateManager::consume_state) and the other way round.
//!
//! ```
//! # use std::sync::Arc;
//! # use axum_cachex::{backend::MemoryBackend, state::{InvalidStateReason, StateError, StateManager}};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), StateError> {
//! # let states = StateManager::new(Arc::new(MemoryBackend::new()));
//! let state = states.create_bound_state("cookie-value-of-this-browser", None, None).await?;
//!
//! let err = states.consume_bound_state(&state, "another-browser").await.unwrap_err();
//! assert!(matches!(err, StateError::Invalid { reason: InvalidStateReason::BindingMismatch }));
//! // Still there for the right browser:
//! states.consume_bound_state(&state, "cookie-value-of-this-browser").await?;
//! # Ok(()) }
//! ```
//!
//! # Expiry
//!
//! The backend drops a state after its lifetime, and the manager also checks
//! `expires_at` against its [`Clock`](crate::Clock) (so a backend whose TTL
//! is coarse, like Memcached's whole seconds, cannot extend a state). Tests
//! inject a [`ManualClock`](crate::ManualClock) with
//! [`StateManagerBuilder::clock`].
//!
//! # In handlers
//!
//! [`StateManager`] is an axum extractor reading the manager installed with
//! `.layer(axum::Extension(manager))`; without it the handler is answered
//! with 500 and [`MissingStateManager`]'s message. Routers with a state type
//! can instead extract `State<StateManager>` through `FromRef`. See
//! `examples/oauth_state.rs` for a complete login round trip.

mod data;
mod error;
mod extract;
mod manager;

pub use data::StateData;
pub use error::{InvalidStateReason, StateError, StateManagerConfigError};
pub use extract::MissingStateManager;
pub use manager::{
    DEFAULT_STATE_PREFIX, DEFAULT_STATE_TTL, STATE_BYTES, StateManager, StateManagerBuilder,
};
