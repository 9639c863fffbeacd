//! Server-side sessions (feature `session`): API-first, stored in any
//! [`Backend`](crate::backend::Backend) — memory, Redis or Memcached.
//!
//! - [`SessionConfig`]: every option, validated when built or deserialised.
//! - [`SessionManager`]: create, load, save, regenerate, invalidate and
//!   delete sessions; log a user out everywhere; sweep expired sessions.
//! - [`SessionLayer`]: the tower middleware that reads the token (header,
//!   `Authorization: Bearer`, or cookie), lets the extractors load the
//!   session on first use, and commits its [`PendingAction`] afterwards.
//! - Extractors: [`SessionHandle`] (required: 401 without a session;
//!   `Option<SessionHandle>` for optional), [`SessionContext`] (log in,
//!   start an anonymous session) and [`SessionManager`].
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::{get, post}};
//! use axum_cachex::backend::MemoryBackend;
//! use axum_cachex::session::{
//!     SessionConfig, SessionContext, SessionHandle, SessionLayer, SessionManager, SessionUser,
//! };
//!
//! async fn login(ctx: SessionContext) -> Result<String, String> {
//!     // … verify credentials …
//!     let session = ctx.login(SessionUser::new("42")).await.map_err(|e| e.to_string())?;
//!     Ok(session.token().unwrap_or_default())
//! }
//!
//! async fn me(session: SessionHandle) -> String {
//!     session.user().map(|u| u.user_id).unwrap_or_default()
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = SessionConfig::builder(std::env::var("SESSION_SECRET")
//!     .unwrap_or_else(|_| "dev-only-secret-of-at-least-32-chars".into()))
//!     .build()?;
//! let manager = SessionManager::new(Arc::new(MemoryBackend::new()), config);
//! let app: Router = Router::new()
//!     .route("/login", post(login))
//!     .route("/me", get(me))
//!     .layer(SessionLayer::new(manager));
//! # Ok(()) }
//! ```
//!
//! # The request's session
//!
//! Each request has one session object, created by the layer and shared by
//! every [`SessionContext`] and [`SessionHandle`] of the request. It is
//! loaded lazily: the first extractor that needs it ([`SessionContext`],
//! [`SessionHandle`], `Option<SessionHandle>`) verifies the token and reads
//! the store, once; a handler that extracts none of them (or only
//! [`SessionManager`]) costs no backend call. A token that is refused
//! (forged, expired, unknown) is found out at that point: the extractor
//! answers 401 `invalid_token`, and a dead session cookie is removed.
//!
//! What the store will learn about the session is one visible
//! [`PendingAction`] ([`SessionHandle::pending`]): `None`; `Save` once the
//! handler changes the session; `Regenerate` (a new id, the changes saved
//! under it) or `Delete`, deferred with [`SessionHandle::defer`]. Actions
//! only escalate. One commit carries the action out: right away for
//! [`SessionHandle::save`], [`regenerate`](SessionHandle::regenerate) and
//! [`logout`](SessionHandle::logout), or in the layer after the handler.
//! After a 5xx the layer drops a pending save or regeneration (the handler
//! failed half-way) but still carries out a deletion (a logout must not be
//! lost). A save never moves the record: only a regeneration gives the
//! session a new id.
//!
//! # Lifecycle
//!
//! A session expires `session_ttl` after creation. With
//! `sliding_expiration`, a read that finds less than `session_ttl ×
//! sliding_threshold` left moves the expiry to `now + session_ttl`; only
//! that read writes to the store (other reads cost one `get`, and a request
//! that never touches its session costs nothing).
//! `absolute_timeout`, if set, ends the session that long after its
//! creation — or after the login that attached its user — however often it
//! was renewed. The backend TTL of each record follows its expiry (at least
//! 1 s), so the store forgets dead sessions by itself.
//!
//! Writes are race-safe: creation uses `add` (an existing id is never
//! overwritten). A save, a sliding renewal and a regeneration read the
//! record, decide, and write only while it still holds what they read
//! (compare-and-set through the backend's
//! [`CompareAndSwap`](crate::backend::CompareAndSwap); when it changed they
//! read it again and decide again, a few times, then fail with
//! [`SessionError::Conflict`]). So a session deleted (logout) or
//! invalidated by a concurrent request is never written back as active by
//! a slow request finishing later, and a regeneration, which creates the
//! new record before deleting the old one, rolls back when the old one
//! vanished or was invalidated meanwhile: an ended session is never
//! re-created under a new id. Concurrent saves of an active session still
//! follow "last writer wins" for its data.
//!
//! # With the cache layer
//!
//! A response made for a session must never reach another client from a
//! shared cache, whatever the order of the two layers:
//!
//! - a request that carries a token is marked
//!   [`Credentialed`](crate::Credentialed), and so is its response: a
//!   [`CacheLayer`](crate::CacheLayer) on either side bypasses it;
//! - every response names the session's header and cookie
//!   ([`CredentialNames`](crate::CredentialNames)), so a cache layer
//!   outside learns custom names (the defaults it knows already);
//! - a response that issues, renews or removes a token gets
//!   `Cache-Control: no-store`, and a handler that logs in behind an inner
//!   cache layer raises the request's [`ShareGuard`](crate::ShareGuard).
//!
//! # Security
//!
//! **Tokens.** Session ids are 256 random bits from the operating system's
//! generator. The simple format is `{id}.{mac}.{issued_at}` with `mac` =
//! lowercase hex HMAC-SHA256 over `{id}.{issued_at}` (the timestamp is
//! authenticated too); verification checks the exact shape (three parts, 64
//! lowercase hex digits each for id and MAC, a decimal timestamp) and then
//! compares the decoded MAC in constant time. JWTs are signed with the
//! configured HMAC algorithm, which is pinned (`alg: none` or any other
//! algorithm is refused); `sid`, `iat` and `exp` are required, `iss` and
//! `aud` are required and checked when configured, `iat` may not lie in the
//! future and `exp` must not have passed, both beyond `jwt_leeway` (default
//! 0, not `jsonwebtoken`'s 60 s) and by the manager's clock. A JWT renewal
//! issues a new token whose `exp` follows the session's real expiry; the
//! middleware returns it (header or cookie).
//!
//! **Keys.** Nothing is keyed with `secret_key` directly: separate keys are
//! derived as HMAC-SHA256(secret, label) for the token MAC
//! (`axum-cachex/session/token-mac`), the JWT key (two blocks,
//! `…/jwt/1` and `…/jwt/2`, 64 bytes so that HS512 gets a full-length key)
//! and the store keys (`…/store-key`). Rotating the secret therefore ends
//! every session.
//!
//! **Store.** Records live under `{backend_key_prefix}{HMAC(store key,
//! id)}`, so a dump of the store contains neither ids nor tokens and cannot
//! be replayed. The per-user index (`{prefix}user:{HMAC(store key,
//! user_id)}`) lists the hashes of a user's sessions so that
//! [`SessionManager::delete_user_sessions`] needs no keyspace scan (which
//! Memcached cannot do anyway); its updates are serialised by a short-lived
//! lock record taken with `add`. Creating, regenerating or re-assigning a
//! session waits for that lock (the entry must exist before the session is
//! usable). A sliding renewal never does: it only refreshes an entry's
//! recorded expiry, tries the lock once, and when it is busy leaves the
//! refresh to a background task ([`SessionManager::flush_index_updates`]
//! waits for those). So a read never waits on another request's index
//! update, and the index stays exact in which sessions it lists; only the
//! recorded expiry of an entry can lag, by at most one refresh, which never
//! hides a session from [`SessionManager::delete_user_sessions`] (an entry
//! is dropped only once the store confirms its session is gone, and the
//! index outlives its newest entry by a full `session_ttl` plus a minute).
//!
//! **Binding.** With `ip_binding` / `user_agent_binding` a session is
//! refused when the client IP / `User-Agent` differs from the one it was
//! created with. With `ip_binding` on, a request without a client address
//! (the app is not served with
//! `into_make_service_with_connect_info::<SocketAddr>()`) is refused too,
//! creating and loading alike ([`SecurityError::ClientAddressUnknown`],
//! whose message says how to serve the router; logged once per manager at
//! `error`): "unknown" is never matched against "unknown". The client IP
//! is the socket address; `X-Forwarded-For` is believed only from
//! configured `trusted_proxies`, read from the right skipping trusted hops, so a client cannot pick the address it is checked
//! against. Binding is a detection aid, not authentication: mobile users
//! change networks and browsers update their `User-Agent`, and both then
//! lose their session; several users behind one NAT share an IP.
//!
//! **Login.** [`SessionManager::login`] (and [`SessionContext::login`])
//! gives the session a new id when `regenerate_on_login` is on (the
//! default), defeating session fixation. Its data and flash messages are
//! kept only when an anonymous session becomes a logged-in one; a login
//! over a session that already has a user starts clean, so nothing the
//! previous login earned (an `mfa_verified` flag) carries over.
//!
//! **Cookies.** The optional cookie transport sets `HttpOnly`, `Secure` and
//! `SameSite=Lax` by default, and names the cookie `__Host-session`: a
//! cookie that is `Secure`, has `Path=/` and no `Domain` gets the `__Host-`
//! prefix (see [`CookieConfig`]), which browsers accept only from this very
//! host, so a sibling subdomain cannot plant a session cookie; logout sends a removal cookie with the same
//! name, path, domain and flags. A token is never echoed in a response
//! header to a client that sent it by cookie (that would hand it to page
//! scripts).
//!
//! **Logging.** Tokens and session ids are never logged: logs (via
//! `tracing`, mostly at `debug`) name a session by the first 12 hex digits
//! of the SHA-256 of its id ([`SessionManager::log_id`]), and users by a
//! prefix of their keyed hash. `Debug` of [`SessionConfig`] never prints the
//! secret, and `Debug` of [`Session`] prints the same short tag instead of
//! the id.
//!
//! **Timeouts.** `session_ttl` is idle time (with sliding renewal) or total
//! time (without); `absolute_timeout` is the hard cap on a session's life
//! from creation or login; `jwt_leeway` only tolerates clock skew between
//! servers for the JWT time claims.
//!
//! # Backends
//!
//! Everything works the same on every backend, except
//! [`SessionManager::clear_expired_sessions`]: it lists keys, which
//! Memcached cannot do, so there it returns 0 — Memcached drops each record
//! at its TTL (= the session's expiry) anyway.
//!
//! All three built-in backends have [`CompareAndSwap`](crate::backend::CompareAndSwap).
//! On a third-party backend without it, the guarded writes fall back to
//! `replace` (saves, renewals) and `delete` (the old record of a
//! regeneration): a deletion is still never undone, but an invalidation
//! that lands in the one round trip between the read and the write of a
//! save, renewal or regeneration can be (the session is then active again,
//! or lives on under the new id). Implement `CompareAndSwap` for a store
//! that holds sessions.
//!
//! The `jsonwebtoken` crate is used with its pure-Rust `rust_crypto`
//! backend. If another crate in your build enables its `aws_lc_rs` feature
//! too, `jsonwebtoken` cannot pick a provider by itself: install one with
//! `jsonwebtoken::crypto::CryptoProvider::install_default` at startup.

pub(crate) mod config;
mod error;
mod extract;
mod index;
mod layer;
mod manager;
mod model;
mod request;
pub(crate) mod token;
pub(crate) mod transport;

pub use config::{
    CookieConfig, DEFAULT_COOKIE_NAME, DEFAULT_HEADER_NAME, DEFAULT_KEY_PREFIX,
    DEFAULT_SESSION_TTL, HOST_PREFIX, JwtAlgorithm, MIN_SECRET_LEN, SameSite, SessionConfig,
    SessionConfigBuilder, SessionConfigError, TokenFormat, TokenSource, TrustedProxy,
};
pub use error::{SecurityError, SessionError, TokenError};
pub use extract::{SessionContext, SessionHandle, SessionRejection};
pub use layer::{SessionFuture, SessionLayer, SessionService};
pub use manager::{LoadedSession, SessionManager};
pub use model::{DEFAULT_FLASH_CATEGORY, FlashMessage, Session, SessionStatus, SessionUser};
pub use request::PendingAction;
