//! Behaviour suite of the session manager and middleware, run on every
//! backend by `session_suite!(factory)`. `tests/sessions.rs` includes this
//! file with `#[path]` next to `mod common;` (it needs the `session`
//! feature, so `common/mod.rs` does not declare it).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use axum::{
    Json, Router,
    body::Body,
    extract::ConnectInfo,
    http::{Request, StatusCode},
    routing::{get, post},
};
use axum_cachex::{
    ManualClock,
    backend::{Backend, BackendError, CompareAndSwap, Listing, PathInvalidation, StoredValue},
    session::{
        CookieConfig, JwtAlgorithm, PendingAction, SameSite, SecurityError, Session, SessionConfig,
        SessionConfigBuilder, SessionContext, SessionError, SessionHandle, SessionLayer,
        SessionManager, SessionStatus, SessionUser, TokenError, TokenFormat,
    },
};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::common::http::{Reply, send};

pub type B = Arc<dyn Backend>;

pub const SECRET: &str = "suite-secret-of-at-least-32-characters!";

/// Generates one `#[tokio::test]` per suite function for a backend factory
/// (an `async fn() -> Option<Arc<dyn Backend>>`; `None` skips). Invoke it
/// inside a module per backend so the test names do not clash.
#[macro_export]
macro_rules! session_suite {
    ($factory:path) => {
        $crate::session_suite!(@emit $factory;
            full_lifecycle,
            anonymous_session_and_login,
            login_without_regeneration_keeps_the_id,
            simple_tokens_reject_tampering,
            jwt_rejects_forged_and_foreign_tokens,
            jwt_renewal_issues_a_token_with_the_real_expiry,
            ip_and_user_agent_binding,
            sliding_renewal_fires_only_below_the_threshold,
            absolute_timeout_ends_a_renewed_session,
            regenerated_id_makes_the_old_token_fail,
            concurrent_logout_is_not_undone_by_a_slow_save,
            concurrent_invalidation_is_not_undone_by_a_slow_save,
            invalidation_between_the_read_and_write_of_a_save_wins,
            invalidation_between_the_read_and_write_of_a_renewal_wins,
            invalidation_during_a_regeneration_is_not_moved_to_the_new_id,
            invalidation_during_a_login_is_not_moved_to_the_new_id,
            login_over_another_users_session_starts_clean,
            http_ip_binding_without_connect_info_is_refused,
            delete_user_sessions_deletes_exactly_that_users_sessions,
            delete_user_sessions_counts_concurrent_logins,
            clear_expired_sessions_counts_what_it_removed,
            backend_ttl_follows_the_session_expiry,
            store_keys_and_values_reveal_no_ids,
            user_extra_fields_survive_the_store,
            http_header_transport_flow,
            http_cookie_attributes_on_set_and_removal,
            http_jwt_renewal_is_returned_in_the_header,
            http_spoofed_forwarded_for_does_not_change_the_client_ip,
            http_slow_request_does_not_undo_a_concurrent_logout,
            http_logout_everywhere,
            http_untouched_session_costs_no_backend_call,
            http_deferred_actions_are_committed_after_the_handler,
        );
    };
    (@emit $factory:path; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                if let Some(backend) = $factory().await {
                    $crate::session_suite::$test(backend).await;
                }
            }
        )*
    };
}

// ---------------------------------------------------------------------------
// Fixtures

/// A backend wrapper counting the writes that reach the real backend, to
/// check that reads do not write, the reads, to check that an untouched
/// session costs nothing, and the attempts at user index locks. It
/// delegates every call unchanged.
#[derive(Debug)]
pub struct Counting {
    inner: B,
    writes: AtomicU64,
    reads: AtomicU64,
    lock_attempts: AtomicU64,
}

impl Counting {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            lock_attempts: AtomicU64::new(0),
        }
    }
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
    /// `add` calls on a user index lock key (`…user:{hash}:lock`).
    pub fn lock_attempts(&self) -> u64 {
        self.lock_attempts.load(Ordering::SeqCst)
    }
    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
    fn read(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Backend for Counting {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        self.read();
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, v: Bytes, ttl: Option<Duration>) -> Result<(), BackendError> {
        self.wrote();
        self.inner.set(key, v, ttl).await
    }
    async fn add(&self, key: &str, v: Bytes, ttl: Option<Duration>) -> Result<bool, BackendError> {
        self.wrote();
        if key.contains("user:") && key.ends_with(":lock") {
            self.lock_attempts.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.add(key, v, ttl).await
    }
    async fn replace(
        &self,
        key: &str,
        v: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.wrote();
        self.inner.replace(key, v, ttl).await
    }
    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        self.wrote();
        self.inner.take(key).await
    }
    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        self.wrote();
        self.inner.delete(key).await
    }
    fn listing(&self) -> Option<&dyn Listing> {
        self.inner.listing().map(|_| self as &dyn Listing)
    }
    fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
        self.inner
            .compare_and_swap()
            .map(|_| self as &dyn CompareAndSwap)
    }
    fn path_invalidation(&self) -> Option<&dyn PathInvalidation> {
        self.inner.path_invalidation()
    }
}

/// Listing and compare-and-swap through the counters too (the inner
/// backend has them whenever these are announced).
#[async_trait]
impl Listing for Counting {
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        self.read();
        self.inner_listing()?.keys(prefix).await
    }
    async fn entries(&self, prefix: &str) -> Result<Vec<StoredValue>, BackendError> {
        self.read();
        self.inner_listing()?.entries(prefix).await
    }
    async fn clear(&self, prefix: &str) -> Result<u64, BackendError> {
        self.wrote();
        self.inner_listing()?.clear(prefix).await
    }
}

#[async_trait]
impl CompareAndSwap for Counting {
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError> {
        self.wrote();
        self.inner_cas()?.delete_if_equals(key, expected).await
    }
    async fn set_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.wrote();
        self.inner_cas()?
            .set_if_equals(key, expected, value, ttl)
            .await
    }
}

impl Counting {
    fn missing(&self, operation: &'static str) -> BackendError {
        BackendError::Unsupported {
            backend: self.inner.name(),
            operation,
            hint: "the wrapped backend lacks it",
        }
    }
    fn inner_listing(&self) -> Result<&dyn Listing, BackendError> {
        self.inner.listing().ok_or_else(|| self.missing("listing"))
    }
    fn inner_cas(&self) -> Result<&dyn CompareAndSwap, BackendError> {
        self.inner
            .compare_and_swap()
            .ok_or_else(|| self.missing("compare_and_swap"))
    }
}

/// Which writes of a session record a [`Pausing`] backend holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// `set`, `replace` or `set_if_equals`: a save or a renewal.
    Update,
    /// `add`: the new record of a regeneration.
    Add,
}

/// A backend wrapper that, once armed, holds the next write of a session
/// record of a kind between the caller's read and its write, until the
/// test resumes it: the window in which a concurrent invalidation lands.
/// Everything else is delegated unchanged.
#[derive(Debug)]
pub struct Pausing {
    inner: B,
    armed: std::sync::Mutex<Option<Hold>>,
    held_key: std::sync::Mutex<Option<String>>,
    paused: tokio::sync::Notify,
    resume: tokio::sync::Notify,
}

/// A hang guard only: the paused operation reaches its write at once.
const HANG_GUARD: Duration = Duration::from_secs(30);

impl Pausing {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            armed: std::sync::Mutex::new(None),
            held_key: std::sync::Mutex::new(None),
            paused: tokio::sync::Notify::new(),
            resume: tokio::sync::Notify::new(),
        }
    }

    /// The key of the write that was held.
    pub fn held_key(&self) -> Option<String> {
        self.held_key.lock().expect("lock").clone()
    }

    /// Runs `slow` until it reaches a write of kind `hold`, then
    /// `meanwhile`, then lets `slow` write, and returns its result.
    pub async fn while_held<T, M>(
        &self,
        hold: Hold,
        slow: impl Future<Output = T> + Send + 'static,
        meanwhile: M,
    ) -> T
    where
        T: Send + 'static,
        M: Future<Output = ()>,
    {
        *self.armed.lock().expect("lock") = Some(hold);
        let task = tokio::spawn(slow);
        tokio::time::timeout(HANG_GUARD, self.paused.notified())
            .await
            .expect("the slow operation reaches its write");
        meanwhile.await;
        self.resume.notify_one();
        tokio::time::timeout(HANG_GUARD, task)
            .await
            .expect("the slow operation finishes")
            .expect("no panic")
    }

    async fn hold(&self, kind: Hold, key: &str) {
        let record = key
            .strip_prefix("session:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        let take = {
            let mut armed = self.armed.lock().expect("lock");
            let take = record && *armed == Some(kind);
            if take {
                *armed = None;
            }
            take
        };
        if take {
            *self.held_key.lock().expect("lock") = Some(key.to_owned());
            self.paused.notify_one();
            self.resume.notified().await;
        }
    }

    fn missing(&self, operation: &'static str) -> BackendError {
        BackendError::Unsupported {
            backend: self.inner.name(),
            operation,
            hint: "the wrapped backend lacks it",
        }
    }
}

#[async_trait]
impl Backend for Pausing {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, v: Bytes, ttl: Option<Duration>) -> Result<(), BackendError> {
        self.hold(Hold::Update, key).await;
        self.inner.set(key, v, ttl).await
    }
    async fn add(&self, key: &str, v: Bytes, ttl: Option<Duration>) -> Result<bool, BackendError> {
        self.hold(Hold::Add, key).await;
        self.inner.add(key, v, ttl).await
    }
    async fn replace(
        &self,
        key: &str,
        v: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.hold(Hold::Update, key).await;
        self.inner.replace(key, v, ttl).await
    }
    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        self.inner.take(key).await
    }
    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        self.inner.delete(key).await
    }
    fn listing(&self) -> Option<&dyn Listing> {
        self.inner.listing().map(|_| self as &dyn Listing)
    }
    fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
        self.inner
            .compare_and_swap()
            .map(|_| self as &dyn CompareAndSwap)
    }
    fn path_invalidation(&self) -> Option<&dyn PathInvalidation> {
        self.inner.path_invalidation()
    }
}

#[async_trait]
impl Listing for Pausing {
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        let l = self
            .inner
            .listing()
            .ok_or_else(|| self.missing("listing"))?;
        l.keys(prefix).await
    }
    async fn entries(&self, prefix: &str) -> Result<Vec<StoredValue>, BackendError> {
        let l = self
            .inner
            .listing()
            .ok_or_else(|| self.missing("listing"))?;
        l.entries(prefix).await
    }
    async fn clear(&self, prefix: &str) -> Result<u64, BackendError> {
        let l = self
            .inner
            .listing()
            .ok_or_else(|| self.missing("listing"))?;
        l.clear(prefix).await
    }
}

#[async_trait]
impl CompareAndSwap for Pausing {
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError> {
        let cas = self
            .inner
            .compare_and_swap()
            .ok_or_else(|| self.missing("compare_and_swap"))?;
        cas.delete_if_equals(key, expected).await
    }
    async fn set_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.hold(Hold::Update, key).await;
        let cas = self
            .inner
            .compare_and_swap()
            .ok_or_else(|| self.missing("compare_and_swap"))?;
        cas.set_if_equals(key, expected, value, ttl).await
    }
}

pub struct Fixture {
    pub manager: SessionManager,
    pub clock: ManualClock,
    pub backend: Arc<Counting>,
}

impl Fixture {
    /// Another manager on the same store and clock, with another config.
    pub fn sibling(&self, config: SessionConfigBuilder) -> SessionManager {
        SessionManager::new(
            self.backend.clone(),
            config.build().expect("sibling config"),
        )
        .with_clock(self.clock.clock())
    }
}

pub fn config() -> SessionConfigBuilder {
    SessionConfig::builder(SECRET)
}

pub fn fixture(be: B, config: SessionConfigBuilder) -> Fixture {
    let clock = ManualClock::new();
    // Start on a whole second, so that JWT claims (whole seconds) compare
    // exactly with session times.
    let subsec = clock
        .clock()
        .now()
        .duration_since(UNIX_EPOCH)
        .expect("epoch")
        .subsec_nanos();
    clock.advance(Duration::from_nanos(u64::from(1_000_000_000 - subsec)));
    let backend = Arc::new(Counting::new(be));
    let manager = SessionManager::new(backend.clone(), config.build().expect("config"))
        .with_clock(clock.clock());
    Fixture {
        manager,
        clock,
        backend,
    }
}

fn user(id: &str) -> SessionUser {
    SessionUser::new(id).with_username(format!("name-{id}"))
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().expect("ip"))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs()
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(r: Result<T, SessionError>) {
    assert!(
        matches!(r, Err(SessionError::NotFound)),
        "expected NotFound, got {r:?}"
    );
}

#[track_caller]
fn assert_client_address_unknown<T: std::fmt::Debug>(r: Result<T, SessionError>) {
    match r {
        Err(e @ SessionError::Security(SecurityError::ClientAddressUnknown)) => {
            assert!(!e.is_client_error(), "a server misconfiguration");
            let msg = e.to_string();
            assert!(
                msg.contains("into_make_service_with_connect_info"),
                "the error explains the fix: {msg}"
            );
        }
        other => panic!("expected ClientAddressUnknown, got {other:?}"),
    }
}

#[track_caller]
fn assert_malformed<T: std::fmt::Debug>(r: Result<T, SessionError>) {
    assert!(
        matches!(r, Err(SessionError::Token(TokenError::Malformed { .. }))),
        "expected a malformed-token error, got {r:?}"
    );
}

#[track_caller]
fn assert_bad_signature<T: std::fmt::Debug>(r: Result<T, SessionError>) {
    assert!(
        matches!(r, Err(SessionError::Security(SecurityError::BadSignature))),
        "expected a bad-signature error, got {r:?}"
    );
}

/// The JWT key the manager derives from [`SECRET`] (documented in the
/// module docs): two HMAC-SHA256 blocks with labels.
pub fn derived_jwt_key() -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let block = |label: &str| {
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    [
        block("axum-cachex/session/jwt/1"),
        block("axum-cachex/session/jwt/2"),
    ]
    .concat()
}

fn forge_jwt(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(&derived_jwt_key()),
    )
    .expect("forge")
}

fn jwt_claims(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token)
        .expect("decode")
        .claims
}

fn b64url(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Manager behaviour

pub async fn full_lifecycle(be: B) {
    let f = fixture(be, config());
    let m = &f.manager;
    let alice = user("alice").with_role("admin");
    let mut data = Map::new();
    data.insert("theme".into(), json!("dark"));
    let (s, token) = m
        .create_session(alice.clone(), ip("192.0.2.1"), Some("UA/1"), Some(data))
        .await
        .expect("create");
    assert_eq!(s.user(), Some(&alice));
    assert_eq!(s.status(), SessionStatus::Active);
    assert_eq!(s.ip_address(), ip("192.0.2.1"));
    assert_eq!(s.user_agent(), Some("UA/1"));
    assert_eq!(
        s.expires_at(),
        s.created_at().checked_add(secs(3600)),
        "default ttl is one hour"
    );
    assert!(s.is_valid());

    let mut got = m.get_session(&token, None, None).await.expect("get");
    assert_eq!(got.id(), s.id());
    assert_eq!(got.get::<String>("theme").as_deref(), Some("dark"));

    got.insert("cart", vec![1, 2, 3]).expect("json");
    got.add_flash_message("saved", None);
    got.add_flash_message("careful", Some("warning"));
    m.update_session(&mut got).await.expect("update");

    let mut again = m.get_session(&token, None, None).await.expect("get");
    assert_eq!(again.get::<Vec<u32>>("cart"), Some(vec![1, 2, 3]));
    let flashes = again.get_flash_messages(false);
    assert_eq!(flashes.len(), 2);
    assert_eq!(flashes[0].category, "info");
    assert_eq!(flashes[1].category, "warning");
    assert_eq!(again.get_flash_messages(true).len(), 2);
    assert!(again.get_flash_messages(true).is_empty());
    m.update_session(&mut again).await.expect("update");
    assert!(
        m.get_session(&token, None, None)
            .await
            .expect("get")
            .flash_messages()
            .is_empty(),
        "consumed flash messages stay consumed"
    );

    let new_token = m
        .regenerate_session_id(&mut again)
        .await
        .expect("regenerate");
    assert_ne!(again.id(), s.id());
    assert_not_found(m.get_session(&token, None, None).await);
    let moved = m
        .get_session(&new_token, None, None)
        .await
        .expect("new token");
    assert_eq!(moved.get::<Vec<u32>>("cart"), Some(vec![1, 2, 3]));
    assert_eq!(moved.user(), Some(&alice));

    assert!(m.invalidate_session(moved.id()).await.expect("invalidate"));
    let r = m.get_session(&new_token, None, None).await;
    assert!(
        matches!(
            r,
            Err(SessionError::Invalid {
                status: SessionStatus::Invalidated
            })
        ),
        "{r:?}"
    );
    assert!(m.delete_session(moved.id()).await.expect("delete"));
    assert_not_found(m.get_session(&new_token, None, None).await);
    assert!(!m.delete_session(moved.id()).await.expect("delete again"));
    assert!(
        !m.invalidate_session(moved.id())
            .await
            .expect("invalidate gone")
    );
}

pub async fn anonymous_session_and_login(be: B) {
    let f = fixture(be, config());
    let m = &f.manager;
    let (mut s, t0) = m
        .create_anonymous_session(None, None, None)
        .await
        .expect("anonymous");
    assert!(!s.is_authenticated());
    s.insert("cart", 3).expect("json");
    m.update_session(&mut s).await.expect("update");
    let anon_id = s.id().to_owned();

    f.clock.advance(secs(100));
    let t1 = m.login(&mut s, user("bob")).await.expect("login");
    assert_ne!(t0, t1);
    assert_ne!(s.id(), anon_id, "regenerate_on_login gives a new id");
    assert_not_found(m.get_session(&t0, None, None).await);
    let logged = m.get_session(&t1, None, None).await.expect("logged in");
    assert_eq!(logged.user().map(|u| u.user_id.as_str()), Some("bob"));
    assert_eq!(
        logged.get::<u32>("cart"),
        Some(3),
        "data survives the login"
    );
    assert_eq!(
        logged.created_at(),
        f.manager.now(),
        "the login restarts the session clock"
    );
    // The logged-in session is in the user's index.
    assert_eq!(m.delete_user_sessions("bob").await.expect("delete"), 1);
    assert_not_found(m.get_session(&t1, None, None).await);
}

pub async fn login_without_regeneration_keeps_the_id(be: B) {
    let f = fixture(be, config().regenerate_on_login(false));
    let m = &f.manager;
    let (mut s, t0) = m
        .create_anonymous_session(None, None, None)
        .await
        .expect("anonymous");
    let id = s.id().to_owned();
    let _t1 = m.login(&mut s, user("carol")).await.expect("login");
    assert_eq!(s.id(), id);
    let same = m
        .get_session(&t0, None, None)
        .await
        .expect("old token works");
    assert!(same.is_authenticated());
    assert_eq!(m.delete_user_sessions("carol").await.expect("delete"), 1);
}

pub async fn simple_tokens_reject_tampering(be: B) {
    let f = fixture(be, config());
    let m = &f.manager;
    let (_s, token) = m
        .create_session(user("t"), None, None, None)
        .await
        .expect("create");
    m.get_session(&token, None, None)
        .await
        .expect("genuine token");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0].len(), 64);
    assert_eq!(parts[1].len(), 64);

    // Tampered signature: one hex digit changed.
    let mut mac: Vec<u8> = parts[1].bytes().collect();
    mac[10] = if mac[10] == b'0' { b'1' } else { b'0' };
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        String::from_utf8(mac).expect("ascii"),
        parts[2]
    );
    assert_bad_signature(m.get_session(&tampered, None, None).await);
    // Another id with the genuine signature.
    let other_id = "a".repeat(64);
    assert_bad_signature(
        m.get_session(&format!("{other_id}.{}.{}", parts[1], parts[2]), None, None)
            .await,
    );
    // The timestamp is authenticated too.
    let ts: u64 = parts[2].parse().expect("ts");
    assert_bad_signature(
        m.get_session(&format!("{}.{}.{}", parts[0], parts[1], ts + 1), None, None)
            .await,
    );
    // Truncated inside the signature.
    assert_malformed(m.get_session(&token[..100], None, None).await);
    // Truncated to the id alone.
    assert_malformed(m.get_session(parts[0], None, None).await);
    // Uppercase hex.
    let upper = format!("{}.{}.{}", parts[0], parts[1].to_uppercase(), parts[2]);
    assert_malformed(m.get_session(&upper, None, None).await);
    let upper_id = format!("{}.{}.{}", parts[0].to_uppercase(), parts[1], parts[2]);
    assert_malformed(m.get_session(&upper_id, None, None).await);
    // Wrong part count.
    assert_malformed(m.get_session(&format!("{token}.x"), None, None).await);
    assert_malformed(
        m.get_session(&format!("{}.{}", parts[0], parts[1]), None, None)
            .await,
    );
    assert_malformed(m.get_session(&format!("{token}."), None, None).await);
    // Garbage.
    for garbage in ["", "...", "\u{0}\u{1}\u{7f}", "ü.ö.ä", "not a token at all"] {
        assert_malformed(m.get_session(garbage, None, None).await);
    }
    assert_malformed(m.get_session(&"x".repeat(10_000), None, None).await);
    let non_digit_ts = format!("{}.{}.12a", parts[0], parts[1]);
    assert_malformed(m.get_session(&non_digit_ts, None, None).await);
    // A token signed with another secret.
    let foreign = f.sibling(SessionConfig::builder(
        "another-secret-of-32-characters-or-more",
    ));
    let (_o, foreign_token) = foreign
        .create_session(user("t"), None, None, None)
        .await
        .expect("create");
    assert_bad_signature(m.get_session(&foreign_token, None, None).await);
    // The genuine token still works after all that.
    m.get_session(&token, None, None)
        .await
        .expect("genuine token");
}

pub async fn jwt_rejects_forged_and_foreign_tokens(be: B) {
    let jwt_config = || {
        config()
            .token_format(TokenFormat::Jwt)
            .jwt_issuer("app")
            .jwt_audience("api")
    };
    let f = fixture(be, jwt_config());
    let m = &f.manager;
    let (s, token) = m
        .create_session(user("j"), None, None, None)
        .await
        .expect("create");
    m.get_session(&token, None, None).await.expect("genuine");
    let claims = jwt_claims(&token);
    assert_eq!(claims["sid"], s.id());
    assert_eq!(claims["iss"], "app");
    assert_eq!(claims["aud"], "api");
    assert_eq!(claims["exp"].as_u64(), s.expires_at().map(unix));

    // The documented key derivation: a token forged with it is accepted,
    // so the rejections below are about the claims, not the key.
    let now = unix(m.now());
    let good = json!({"sid": s.id(), "iat": now, "exp": now + 60, "iss": "app", "aud": "api"});
    m.get_session(&forge_jwt(&good), None, None)
        .await
        .expect("forged with the real key");

    // alg: none, with and without a signature.
    let payload = token.split('.').nth(1).expect("payload");
    let none_header = b64url(r#"{"alg":"none","typ":"JWT"}"#);
    for t in [
        format!("{none_header}.{payload}."),
        format!(
            "{none_header}.{payload}.{}",
            token.split('.').nth(2).expect("sig")
        ),
    ] {
        let r = m.get_session(&t, None, None).await;
        assert!(
            matches!(r, Err(SessionError::Token(_) | SessionError::Security(_))),
            "alg none accepted: {r:?}"
        );
    }
    // Another algorithm (HS512 with the same secret).
    let hs512 = f.sibling(jwt_config().jwt_algorithm(JwtAlgorithm::HS512));
    assert_bad_signature(
        m.get_session(&hs512.issue_token(&s).expect("issue"), None, None)
            .await,
    );
    // HS256 header on an HS512 signature.
    let t512 = hs512.issue_token(&s).expect("issue");
    let mut p: Vec<&str> = t512.split('.').collect();
    let hs256_header = token.split('.').next().expect("header");
    p[0] = hs256_header;
    assert_bad_signature(m.get_session(&p.join("."), None, None).await);
    // Wrong audience / issuer, and a missing audience.
    for other in [
        config()
            .token_format(TokenFormat::Jwt)
            .jwt_issuer("app")
            .jwt_audience("other"),
        config()
            .token_format(TokenFormat::Jwt)
            .jwt_issuer("evil")
            .jwt_audience("api"),
        config().token_format(TokenFormat::Jwt).jwt_issuer("app"),
        config().token_format(TokenFormat::Jwt).jwt_audience("api"),
    ] {
        let t = f.sibling(other).issue_token(&s).expect("issue");
        let r = m.get_session(&t, None, None).await;
        assert!(
            matches!(r, Err(SessionError::Token(TokenError::Claims { .. }))),
            "foreign iss/aud accepted: {r:?}"
        );
    }
    // Missing sid, iat or exp (signed with the real key).
    for missing in ["sid", "iat", "exp"] {
        let mut c = good.clone();
        c.as_object_mut().expect("object").remove(missing);
        let r = m.get_session(&forge_jwt(&c), None, None).await;
        assert!(
            matches!(r, Err(SessionError::Token(_))),
            "missing {missing} accepted: {r:?}"
        );
    }
    // A sid that is not a session id.
    let mut c = good.clone();
    c["sid"] = json!("../../etc");
    assert_malformed(m.get_session(&forge_jwt(&c), None, None).await);
    // iat in the future (no leeway by default).
    let mut c = good.clone();
    c["iat"] = json!(now + 30);
    let r = m.get_session(&forge_jwt(&c), None, None).await;
    assert!(
        matches!(r, Err(SessionError::Token(TokenError::Claims { .. }))),
        "{r:?}"
    );
    // … accepted within an explicit leeway.
    let lenient = f.sibling(jwt_config().jwt_leeway(secs(60)));
    lenient
        .get_session(&forge_jwt(&c), None, None)
        .await
        .expect("iat within leeway");
    // Expired exp.
    let mut c = good.clone();
    c["exp"] = json!(now - 1);
    let r = m.get_session(&forge_jwt(&c), None, None).await;
    assert!(
        matches!(r, Err(SessionError::Token(TokenError::Expired))),
        "{r:?}"
    );
    // exp exactly now is expired too.
    c["exp"] = json!(now);
    let r = m.get_session(&forge_jwt(&c), None, None).await;
    assert!(
        matches!(r, Err(SessionError::Token(TokenError::Expired))),
        "{r:?}"
    );
    // A simple token is not a JWT.
    let simple = f.sibling(config());
    let (_x, simple_token) = simple
        .create_session(user("j"), None, None, None)
        .await
        .expect("create");
    assert!(m.get_session(&simple_token, None, None).await.is_err());
    // The genuine token expires with the session, by the manager's clock.
    f.clock.advance(secs(3600));
    let r = m.get_session(&token, None, None).await;
    assert!(
        matches!(r, Err(SessionError::Token(TokenError::Expired))),
        "{r:?}"
    );
}

pub async fn jwt_renewal_issues_a_token_with_the_real_expiry(be: B) {
    let f = fixture(
        be,
        config()
            .token_format(TokenFormat::Jwt)
            .session_ttl(secs(100))
            .sliding_threshold(0.5),
    );
    let m = &f.manager;
    let (s, t0) = m
        .create_session(user("r"), None, None, None)
        .await
        .expect("create");
    let start = s.created_at();
    assert_eq!(jwt_claims(&t0)["exp"].as_u64(), Some(unix(start) + 100));

    f.clock.advance(secs(60));
    let loaded = m.load_session(&t0, None, None).await.expect("load");
    let t1 = loaded.renewed_token.expect("renewal issues a token");
    assert_eq!(loaded.session.expires_at(), start.checked_add(secs(160)));
    assert_eq!(jwt_claims(&t1)["exp"].as_u64(), Some(unix(start) + 160));

    f.clock.advance(secs(10));
    let loaded = m.load_session(&t1, None, None).await.expect("load");
    assert!(
        loaded.renewed_token.is_none(),
        "no renewal above the threshold"
    );

    // Past the first token's exp, only the renewed token works.
    f.clock.advance(secs(40));
    let r = m.get_session(&t0, None, None).await;
    assert!(
        matches!(r, Err(SessionError::Token(TokenError::Expired))),
        "{r:?}"
    );
    m.get_session(&t1, None, None).await.expect("renewed token");
}

pub async fn ip_and_user_agent_binding(be: B) {
    let f = fixture(be, config().ip_binding(true).user_agent_binding(true));
    let m = &f.manager;
    let (_s, token) = m
        .create_session(user("b"), ip("203.0.113.5"), Some("Browser/1"), None)
        .await
        .expect("create");
    m.get_session(&token, ip("203.0.113.5"), Some("Browser/1"))
        .await
        .expect("same client");
    m.get_session(&token, ip("::ffff:203.0.113.5"), Some("Browser/1"))
        .await
        .expect("the same address seen through a dual-stack socket");
    let r = m
        .get_session(&token, ip("198.51.100.9"), Some("Browser/1"))
        .await;
    assert!(
        matches!(r, Err(SessionError::Security(SecurityError::IpMismatch))),
        "{r:?}"
    );
    // No client address at all (served without `ConnectInfo`): refused,
    // not "unknown" matched against "unknown"; the error says how to fix it.
    let r = m.get_session(&token, None, Some("Browser/1")).await;
    assert_client_address_unknown(r);
    let r = m
        .create_session(user("b"), None, Some("Browser/1"), None)
        .await;
    assert_client_address_unknown(r);
    let r = m.create_anonymous_session(None, None, None).await;
    assert_client_address_unknown(r);
    let r = m
        .get_session(&token, ip("203.0.113.5"), Some("Browser/2"))
        .await;
    assert!(
        matches!(
            r,
            Err(SessionError::Security(SecurityError::UserAgentMismatch))
        ),
        "{r:?}"
    );
    // Without the bindings another client may use the token.
    let unbound = f.sibling(config());
    unbound
        .get_session(&token, ip("198.51.100.9"), Some("Other/9"))
        .await
        .expect("no binding");
}

pub async fn sliding_renewal_fires_only_below_the_threshold(be: B) {
    let f = fixture(be, config().session_ttl(secs(100)).sliding_threshold(0.5));
    let m = &f.manager;
    let (s, token) = m
        .create_session(user("s"), None, None, None)
        .await
        .expect("create");
    let start = s.created_at();
    let writes = f.backend.writes();

    f.clock.advance(secs(30)); // 70 s left: above 50
    let got = m.get_session(&token, None, None).await.expect("get");
    assert_eq!(got.expires_at(), start.checked_add(secs(100)));
    assert_eq!(
        got.last_accessed(),
        m.now(),
        "last_accessed set on the read session"
    );
    assert_eq!(
        f.backend.writes(),
        writes,
        "a read above the threshold writes nothing"
    );

    f.clock.advance(secs(21)); // 49 s left: below 50
    let got = m.get_session(&token, None, None).await.expect("get");
    assert_eq!(got.expires_at(), start.checked_add(secs(151)));
    assert!(f.backend.writes() > writes, "the renewal wrote");
    let writes = f.backend.writes();

    f.clock.advance(secs(1));
    let got = m.get_session(&token, None, None).await.expect("get");
    assert_eq!(got.expires_at(), start.checked_add(secs(151)));
    assert_eq!(f.backend.writes(), writes);

    // Threshold 0: never renewed; the session ends at its first expiry.
    let never = f.sibling(config().session_ttl(secs(100)).sliding_threshold(0.0));
    let (s, token) = never
        .create_session(user("s0"), None, None, None)
        .await
        .expect("create");
    f.clock.advance(secs(99));
    let got = never.get_session(&token, None, None).await.expect("get");
    assert_eq!(got.expires_at(), s.expires_at());
    f.clock.advance(secs(1));
    let r = never.get_session(&token, None, None).await;
    assert!(matches!(r, Err(SessionError::Expired)), "{r:?}");

    // sliding_expiration off: likewise.
    let off = f.sibling(config().session_ttl(secs(100)).sliding_expiration(false));
    let (s, token) = off
        .create_session(user("s1"), None, None, None)
        .await
        .expect("create");
    f.clock.advance(secs(90));
    assert_eq!(
        off.get_session(&token, None, None)
            .await
            .expect("get")
            .expires_at(),
        s.expires_at()
    );
}

pub async fn absolute_timeout_ends_a_renewed_session(be: B) {
    let f = fixture(
        be,
        config()
            .session_ttl(secs(100))
            .sliding_threshold(0.5)
            .absolute_timeout(secs(150)),
    );
    let m = &f.manager;
    let (s, token) = m
        .create_session(user("a"), None, None, None)
        .await
        .expect("create");
    let start = s.created_at();

    f.clock.advance(secs(60));
    let got = m.get_session(&token, None, None).await.expect("renewed");
    assert_eq!(
        got.expires_at(),
        start.checked_add(secs(150)),
        "renewal is capped at the absolute timeout"
    );
    let writes = f.backend.writes();
    f.clock.advance(secs(60)); // 30 s left, below the threshold, but at the cap
    m.get_session(&token, None, None)
        .await
        .expect("still valid");
    assert_eq!(
        f.backend.writes(),
        writes,
        "a renewal that gains nothing is not written"
    );

    f.clock.advance(secs(30)); // exactly the absolute deadline
    let r = m.get_session(&token, None, None).await;
    assert!(matches!(r, Err(SessionError::Expired)), "{r:?}");
    // Marked expired in the store: still refused as expired.
    let r = m.get_session(&token, None, None).await;
    assert!(matches!(r, Err(SessionError::Expired)), "{r:?}");
}

pub async fn regenerated_id_makes_the_old_token_fail(be: B) {
    let f = fixture(be, config());
    let m = &f.manager;
    let (mut s, t0) = m
        .create_session(user("g"), None, None, None)
        .await
        .expect("create");
    // A save never moves the record; a regeneration moves it with the
    // unsaved changes.
    s.insert("k", "v").expect("json");
    let id = s.id().to_owned();
    m.update_session(&mut s).await.expect("save");
    assert_eq!(s.id(), id, "a save keeps the id");
    m.get_session(&t0, None, None).await.expect("still there");
    s.insert("k", "v").expect("json");
    let t1 = m.regenerate_session_id(&mut s).await.expect("regenerate");
    assert_ne!(s.id(), id);
    assert_not_found(m.get_session(&t0, None, None).await);
    assert_eq!(
        m.get_session(&t1, None, None)
            .await
            .expect("moved")
            .get::<String>("k")
            .as_deref(),
        Some("v")
    );
    // Through the manager.
    let t2 = m.regenerate_session_id(&mut s).await.expect("regenerate");
    assert_not_found(m.get_session(&t1, None, None).await);
    m.get_session(&t2, None, None).await.expect("new token");
    // The user index follows: exactly one live session.
    assert_eq!(m.delete_user_sessions("g").await.expect("delete"), 1);
}

pub async fn concurrent_logout_is_not_undone_by_a_slow_save(be: B) {
    let f = fixture(be, config());
    let m = &f.manager;
    let (_s, token) = m
        .create_session(user("c"), None, None, None)
        .await
        .expect("create");
    // Request A loads the session …
    let mut slow = m.get_session(&token, None, None).await.expect("load");
    // … request B logs out …
    assert!(m.delete_session(slow.id()).await.expect("logout"));
    // … and A saves its change afterwards.
    slow.insert("late", true).expect("json");
    assert_not_found(m.update_session(&mut slow).await);
    assert_not_found(m.get_session(&token, None, None).await);
    // A slow regeneration after a logout does not resurrect it either.
    let (_s, token) = m
        .create_session(user("c"), None, None, None)
        .await
        .expect("create");
    let mut slow = m.get_session(&token, None, None).await.expect("load");
    assert_eq!(
        m.delete_user_sessions("c")
            .await
            .expect("logout everywhere"),
        1
    );
    assert_not_found(m.regenerate_session_id(&mut slow).await);
    assert_eq!(m.delete_user_sessions("c").await.expect("nothing left"), 0);
}

pub async fn concurrent_invalidation_is_not_undone_by_a_slow_save(be: B) {
    let f = fixture(be, config());
    let m = &f.manager;
    let (_s, token) = m
        .create_session(user("i"), None, None, None)
        .await
        .expect("create");
    let mut slow = m.get_session(&token, None, None).await.expect("load");
    assert!(m.invalidate_session(slow.id()).await.expect("invalidate"));
    slow.insert("late", true).expect("json");
    let r = m.update_session(&mut slow).await;
    assert!(matches!(r, Err(SessionError::Invalid { .. })), "{r:?}");
    let r = m.get_session(&token, None, None).await;
    assert!(matches!(r, Err(SessionError::Invalid { .. })), "{r:?}");
}

/// A fixture whose backend can hold a write (see [`Pausing`]).
fn pausing_fixture(be: B, config: SessionConfigBuilder) -> (Fixture, Arc<Pausing>) {
    let pausing = Arc::new(Pausing::new(be));
    (fixture(pausing.clone(), config), pausing)
}

#[track_caller]
fn assert_invalidated<T: std::fmt::Debug>(r: Result<T, SessionError>) {
    assert!(
        matches!(
            r,
            Err(SessionError::Invalid {
                status: SessionStatus::Invalidated
            })
        ),
        "expected Invalid(invalidated), got {r:?}"
    );
}

/// `invalidate_session` lands after a save read the record and before it
/// writes: the save must not write the session back as active.
pub async fn invalidation_between_the_read_and_write_of_a_save_wins(be: B) {
    let (f, pausing) = pausing_fixture(be, config());
    let m = f.manager.clone();
    let (_s, token) = m
        .create_session(user("ps"), None, None, None)
        .await
        .expect("create");
    let mut slow = m.get_session(&token, None, None).await.expect("load");
    slow.insert("late", true).expect("json");
    let id = slow.id().to_owned();
    let saver = m.clone();
    let saved = pausing
        .while_held(
            Hold::Update,
            async move { saver.update_session(&mut slow).await },
            async {
                assert!(m.invalidate_session(&id).await.expect("invalidate"));
            },
        )
        .await;
    assert_invalidated(saved);
    assert_invalidated(m.get_session(&token, None, None).await);
}

/// The same for the write of a sliding renewal during a read.
pub async fn invalidation_between_the_read_and_write_of_a_renewal_wins(be: B) {
    let (f, pausing) = pausing_fixture(be, config().session_ttl(secs(100)));
    let m = f.manager.clone();
    let (s, token) = m
        .create_session(user("pr"), None, None, None)
        .await
        .expect("create");
    f.clock.advance(secs(60)); // 40 s left: the next read renews
    let reader = m.clone();
    let reader_token = token.clone();
    let id = s.id().to_owned();
    let read = pausing
        .while_held(
            Hold::Update,
            async move { reader.get_session(&reader_token, None, None).await },
            async {
                assert!(m.invalidate_session(&id).await.expect("invalidate"));
            },
        )
        .await;
    assert_invalidated(read);
    assert_invalidated(m.get_session(&token, None, None).await);
}

/// `invalidate_session` lands after a regeneration read the old record and
/// while it creates the new one: the session must not live on under the
/// new id.
pub async fn invalidation_during_a_regeneration_is_not_moved_to_the_new_id(be: B) {
    let (f, pausing) = pausing_fixture(be, config());
    let m = f.manager.clone();
    let (mut s, token) = m
        .create_session(user("pg"), None, None, None)
        .await
        .expect("create");
    let id = s.id().to_owned();
    let mover = m.clone();
    let (moved, s) = pausing
        .while_held(
            Hold::Add,
            async move {
                let r = mover.regenerate_session_id(&mut s).await;
                (r, s)
            },
            async {
                assert!(m.invalidate_session(&id).await.expect("invalidate"));
            },
        )
        .await;
    assert_invalidated(moved);
    assert_eq!(s.id(), id, "a failed regeneration keeps the old id");
    assert_invalidated(m.get_session(&token, None, None).await);
    let new_key = pausing.held_key().expect("the new record's write was held");
    assert_eq!(
        f.backend.get(&new_key).await.expect("get"),
        None,
        "no record under the new id"
    );
}

/// The same through a login, which regenerates the id.
pub async fn invalidation_during_a_login_is_not_moved_to_the_new_id(be: B) {
    let (f, pausing) = pausing_fixture(be, config());
    let m = f.manager.clone();
    let (mut s, token) = m
        .create_anonymous_session(None, None, None)
        .await
        .expect("create");
    let id = s.id().to_owned();
    let mover = m.clone();
    let logged_in = pausing
        .while_held(
            Hold::Add,
            async move { mover.login(&mut s, user("pl")).await },
            async {
                assert!(m.invalidate_session(&id).await.expect("invalidate"));
            },
        )
        .await;
    assert_invalidated(logged_in);
    assert_invalidated(m.get_session(&token, None, None).await);
    let new_key = pausing.held_key().expect("the new record's write was held");
    assert_eq!(f.backend.get(&new_key).await.expect("get"), None);
    assert_eq!(
        m.delete_user_sessions("pl").await.expect("drain"),
        0,
        "the user has no session"
    );
}

/// A login over a session that already has a user starts clean: data and
/// flash messages of the previous login do not carry over. (An anonymous
/// session keeps them: `anonymous_session_and_login`.)
pub async fn login_over_another_users_session_starts_clean(be: B) {
    for regenerate in [true, false] {
        let f = fixture(be.clone(), config().regenerate_on_login(regenerate));
        let m = &f.manager;
        let (mut s, _) = m
            .create_session(user("alice"), None, None, None)
            .await
            .expect("create");
        s.insert("mfa_verified", true).expect("json");
        s.add_flash_message("welcome back, alice", None);
        m.update_session(&mut s).await.expect("save");

        let token = m.login(&mut s, user("mallory")).await.expect("login");
        assert!(s.data().is_empty(), "regenerate={regenerate}: {s:?}");
        assert!(s.flash_messages().is_empty());
        let stored = m.get_session(&token, None, None).await.expect("load");
        assert_eq!(stored.user().map(|u| u.user_id.as_str()), Some("mallory"));
        assert_eq!(
            stored.get::<bool>("mfa_verified"),
            None,
            "regenerate={regenerate}"
        );
        assert!(stored.flash_messages().is_empty());
    }
    // An anonymous session keeps its data and flash messages.
    let f = fixture(be, config());
    let m = &f.manager;
    let (mut s, _) = m
        .create_anonymous_session(None, None, None)
        .await
        .expect("anonymous");
    s.insert("cart", 2).expect("json");
    s.add_flash_message("added to cart", None);
    m.update_session(&mut s).await.expect("save");
    let token = m.login(&mut s, user("bob")).await.expect("login");
    let stored = m.get_session(&token, None, None).await.expect("load");
    assert_eq!(stored.get::<u32>("cart"), Some(2));
    assert_eq!(stored.flash_messages().len(), 1);
}

pub async fn delete_user_sessions_deletes_exactly_that_users_sessions(be: B) {
    let f = fixture(be, config());
    let m = &f.manager;
    let mut alice = Vec::new();
    for _ in 0..2 {
        alice.push(
            m.create_session(user("alice"), None, None, None)
                .await
                .expect("create")
                .1,
        );
    }
    let (mut anon, _) = m
        .create_anonymous_session(None, None, None)
        .await
        .expect("anon");
    alice.push(m.login(&mut anon, user("alice")).await.expect("login"));
    let mut bob = Vec::new();
    for _ in 0..2 {
        bob.push(
            m.create_session(user("bob"), None, None, None)
                .await
                .expect("create"),
        );
    }
    let (_a, anon_token) = m
        .create_anonymous_session(None, None, None)
        .await
        .expect("anon");
    // "alice2" must not match "alice".
    let (_x, alice2) = m
        .create_session(user("alice2"), None, None, None)
        .await
        .expect("create");

    assert_eq!(m.delete_user_sessions("alice").await.expect("delete"), 3);
    for t in &alice {
        assert_not_found(m.get_session(t, None, None).await);
    }
    for (_, t) in &bob {
        m.get_session(t, None, None).await.expect("bob untouched");
    }
    m.get_session(&anon_token, None, None)
        .await
        .expect("anonymous untouched");
    m.get_session(&alice2, None, None)
        .await
        .expect("alice2 untouched");
    assert_eq!(m.delete_user_sessions("alice").await.expect("again"), 0);

    // Only sessions actually deleted are counted.
    assert!(m.delete_session(bob[0].0.id()).await.expect("delete one"));
    assert_eq!(m.delete_user_sessions("bob").await.expect("delete"), 1);
    assert_eq!(m.delete_user_sessions("nobody").await.expect("delete"), 0);
}

pub async fn delete_user_sessions_counts_concurrent_logins(be: B) {
    let f = fixture(be, config());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let m = f.manager.clone();
        tasks.push(tokio::spawn(async move {
            m.create_session(user("dave"), None, None, None)
                .await
                .expect("create")
                .1
        }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.expect("join"));
    }
    assert_eq!(
        f.manager
            .delete_user_sessions("dave")
            .await
            .expect("delete"),
        8,
        "no concurrent login was lost from the index"
    );
    for t in &tokens {
        assert_not_found(f.manager.get_session(t, None, None).await);
    }
}

pub async fn clear_expired_sessions_counts_what_it_removed(be: B) {
    let f = fixture(
        be,
        config().session_ttl(secs(100)).sliding_expiration(false),
    );
    let m = &f.manager;
    let mut old = Vec::new();
    for i in 0..3 {
        old.push(
            m.create_session(user(&format!("e{i}")), None, None, None)
                .await
                .expect("create"),
        );
    }
    assert!(
        m.invalidate_session(old[0].0.id())
            .await
            .expect("invalidate")
    );
    f.clock.advance(secs(50));
    let (_fresh, fresh_token) = m
        .create_session(user("fresh"), None, None, None)
        .await
        .expect("create");
    f.clock.advance(secs(60)); // the first three are past their expiry
    let removed = m.clear_expired_sessions().await.expect("clear");
    if f.backend.listing().is_some() {
        assert_eq!(removed, 3);
        for (_, t) in &old {
            assert_not_found(m.get_session(t, None, None).await);
        }
    } else {
        assert_eq!(
            removed, 0,
            "backends that cannot list keys rely on the backend TTL"
        );
    }
    m.get_session(&fresh_token, None, None)
        .await
        .expect("fresh session kept");
}

pub async fn backend_ttl_follows_the_session_expiry(be: B) {
    // Real time here: the backend TTL is what is under test.
    let m = SessionManager::new(be, config().session_ttl(secs(2)).build().expect("config"));
    let (_s, token) = m
        .create_session(user("ttl"), None, None, None)
        .await
        .expect("create");
    m.get_session(&token, None, None).await.expect("fresh");
    tokio::time::sleep(Duration::from_millis(3300)).await;
    // NotFound (not Expired): the backend itself dropped the record.
    assert_not_found(m.get_session(&token, None, None).await);
}

pub async fn store_keys_and_values_reveal_no_ids(be: B) {
    let f = fixture(be, config().backend_key_prefix("sess:"));
    let m = &f.manager;
    let (s, token) = m
        .create_session(user("secret-user"), None, None, None)
        .await
        .expect("create");
    let Some(listing) = f.backend.listing() else {
        return; // nothing to dump
    };
    let entries = listing.entries("").await.expect("entries");
    assert!(!entries.is_empty());
    let mac = token.split('.').nth(1).expect("mac");
    for e in &entries {
        assert!(e.key.starts_with("sess:"), "unprefixed key {}", e.key);
        let value = String::from_utf8_lossy(&e.value);
        for secret in [s.id(), mac, "secret-user"] {
            assert!(!e.key.contains(secret), "key {} reveals {secret}", e.key);
            if secret != "secret-user" {
                assert!(
                    !value.contains(secret),
                    "value of {} reveals an id or MAC",
                    e.key
                );
            }
        }
        if let Some(ttl) = e.ttl_remaining {
            assert!(ttl <= secs(3600 + 3600 + 60), "ttl {ttl:?}");
        }
    }
}

pub async fn user_extra_fields_survive_the_store(be: B) {
    let f = fixture(be, config());
    let mut u: SessionUser = serde_json::from_value(json!({
        "user_id": "x1",
        "email": "x@example.com",
        "roles": ["admin"],
        "permissions": ["write"],
        "metadata": {"plan": "pro"},
        "tenant": "acme",
        "flags": [1, 2]
    }))
    .expect("user");
    u.username = Some("ex".into());
    let (_s, token) = f
        .manager
        .create_session(u.clone(), None, None, None)
        .await
        .expect("create");
    let got = f
        .manager
        .get_session(&token, None, None)
        .await
        .expect("get");
    assert_eq!(got.user(), Some(&u));
    assert_eq!(got.user().expect("user").extra["tenant"], "acme");
    assert!(got.user().expect("user").has_permission("write"));
}

// ---------------------------------------------------------------------------
// Middleware and extractors, through a real axum Router.

const PEER: &str = "192.0.2.10:50000";

fn request(method: &str, uri: &str, peer: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "example.com")
        .extension(ConnectInfo(peer.parse::<SocketAddr>().expect("peer")))
}

async fn call(app: &Router, method: &str, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = request(method, uri, PEER);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(app, b.body(Body::empty()).expect("request")).await
}

fn body_json(r: &Reply) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

pub fn app(manager: SessionManager) -> Router {
    routes().layer(SessionLayer::new(manager))
}

/// The test routes, without the session layer.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/login/{user}",
            post(
                |ctx: SessionContext, axum::extract::Path(uid): axum::extract::Path<String>| async move {
                    let s = ctx.login(user(&uid)).await.map_err(|e| {
                        (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    })?;
                    Ok::<_, (StatusCode, String)>(Json(json!({"token": s.token()})))
                },
            ),
        )
        .route(
            "/me",
            get(|s: SessionHandle| async move {
                Json(json!({
                    "user": s.user().map(|u| u.user_id),
                    "data": s.snapshot().data().clone(),
                }))
            }),
        )
        .route(
            "/optional",
            get(|s: Option<SessionHandle>| async move {
                if s.is_some() { "some" } else { "none" }
            }),
        )
        .route(
            "/flash",
            post(|s: SessionHandle| async move {
                s.add_flash_message("hello", None);
                s.add_flash_message("oops", Some("error"));
            })
            .get(|s: SessionHandle| async move {
                Json(
                    s.get_flash_messages(true)
                        .into_iter()
                        .map(|m| json!([m.message, m.category]))
                        .collect::<Vec<_>>(),
                )
            }),
        )
        .route(
            "/data/{key}",
            post(
                |s: SessionHandle, axum::extract::Path(key): axum::extract::Path<String>| async move {
                    s.insert(key, true).expect("json");
                },
            ),
        )
        .route(
            "/boom",
            post(|s: SessionHandle| async move {
                s.insert("boom", true).expect("json");
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .route(
            "/logout",
            post(|s: SessionHandle| async move {
                s.logout().await.expect("logout");
            }),
        )
        .route("/plain", get(|| async { "plain" }))
        .route(
            "/manager",
            get(|m: SessionManager| async move { m.config().header_name().to_string() }),
        )
        .route(
            "/both",
            get(|ctx: SessionContext, s: SessionHandle| async move {
                let same = ctx.session().map(|h| h.id()) == Some(s.id());
                if same { "same" } else { "different" }
            }),
        )
        .route(
            "/defer/{action}",
            post(
                |s: SessionHandle, axum::extract::Path(action): axum::extract::Path<String>| async move {
                    s.insert("deferred", action.as_str()).expect("json");
                    assert_eq!(s.pending(), PendingAction::Save, "a change is a pending save");
                    let (action, status) = match action.as_str() {
                        "regenerate" => (PendingAction::Regenerate, StatusCode::OK),
                        "delete" => (PendingAction::Delete, StatusCode::OK),
                        "regenerate-boom" => (PendingAction::Regenerate, StatusCode::INTERNAL_SERVER_ERROR),
                        "delete-boom" => (PendingAction::Delete, StatusCode::INTERNAL_SERVER_ERROR),
                        _ => (PendingAction::Save, StatusCode::BAD_REQUEST),
                    };
                    s.defer(action);
                    s.defer(PendingAction::Save); // never lowers the action
                    (status, format!("{:?}", s.pending()))
                },
            ),
        )
        .route(
            "/logout-all",
            post(|s: SessionHandle| async move {
                Json(json!({"deleted": s.logout_everywhere().await.expect("logout all")}))
            }),
        )
}

pub async fn http_header_transport_flow(be: B) {
    let f = fixture(be, config());
    let app = app(f.manager.clone());

    let r = call(&app, "GET", "/me", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), "Bearer");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(body_json(&r)["error"], "unauthorized");
    let r = call(&app, "GET", "/me", &[("x-session-token", "garbage")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("www-authenticate"),
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(call(&app, "GET", "/optional", &[]).await.body, "none");
    assert_eq!(
        call(&app, "GET", "/optional", &[("x-session-token", "garbage")])
            .await
            .body,
        "none",
        "an invalid token is simply no session"
    );

    let r = call(&app, "POST", "/login/ann", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let token = r.header("x-session-token").to_owned();
    assert!(!token.is_empty(), "the middleware returns the new token");
    assert_eq!(body_json(&r)["token"], token.as_str());
    assert!(
        r.headers.get("set-cookie").is_none(),
        "no cookie transport configured"
    );

    let auth = [("x-session-token", token.as_str())];
    let r = call(&app, "GET", "/me", &auth).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(body_json(&r)["user"], "ann");
    assert!(
        r.headers.get("x-session-token").is_none(),
        "no new token on a plain read"
    );
    let bearer = format!("bEaReR {token}");
    let r = call(&app, "GET", "/me", &[("authorization", bearer.as_str())]).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "bearer scheme is case-insensitive"
    );
    assert_eq!(call(&app, "GET", "/optional", &auth).await.body, "some");

    // Flash messages: added, read once, gone.
    assert_eq!(
        call(&app, "POST", "/flash", &auth).await.status,
        StatusCode::OK
    );
    let r = call(&app, "GET", "/flash", &auth).await;
    assert_eq!(body_json(&r), json!([["hello", "info"], ["oops", "error"]]));
    assert_eq!(
        body_json(&call(&app, "GET", "/flash", &auth).await),
        json!([])
    );

    // Changes are saved after the handler, never after a 5xx.
    assert_eq!(
        call(&app, "POST", "/data/kept", &auth).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "POST", "/boom", &auth).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let data = body_json(&call(&app, "GET", "/me", &auth).await)["data"].clone();
    assert_eq!(data, json!({"kept": true}));

    // Header beats bearer (default priority): a bad header token is not
    // rescued by a good bearer token.
    let both = [
        ("x-session-token", "garbage"),
        ("authorization", bearer.as_str()),
    ];
    assert_eq!(
        call(&app, "GET", "/me", &both).await.status,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        call(&app, "POST", "/logout", &auth).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "GET", "/me", &auth).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Bearer first when configured so.
    let f2 = f.sibling(config().token_source_priority([
        axum_cachex::session::TokenSource::Bearer,
        axum_cachex::session::TokenSource::Header,
    ]));
    let app2 = self::app(f2.clone());
    let token = call(&app2, "POST", "/login/ben", &[])
        .await
        .header("x-session-token")
        .to_owned();
    let bearer = format!("Bearer {token}");
    let both = [
        ("x-session-token", "garbage"),
        ("authorization", bearer.as_str()),
    ];
    assert_eq!(
        call(&app2, "GET", "/me", &both).await.status,
        StatusCode::OK
    );
}

pub async fn http_cookie_attributes_on_set_and_removal(be: B) {
    let f = fixture(be, config().cookie(CookieConfig::new()));
    let app = app(f.manager.clone());
    let r = call(&app, "POST", "/login/cat", &[]).await;
    let token = body_json(&r)["token"].as_str().expect("token").to_owned();
    assert_eq!(
        r.header("set-cookie"),
        format!("__Host-session={token}; Path=/; Max-Age=3600; HttpOnly; Secure; SameSite=Lax"),
        "Secure, Path=/ and no Domain: the `__Host-` prefix by default"
    );
    assert!(
        r.headers.get("x-session-token").is_none(),
        "a cookie client does not get the token in a header"
    );
    // Only the prefixed name is read: a cookie planted without the prefix
    // (a sibling subdomain can set `session`, not `__Host-session`) is not.
    let planted = format!("session={token}");
    let r = call(&app, "GET", "/me", &[("cookie", planted.as_str())]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let cookie = format!("theme=dark; __Host-session={token}");
    let r = call(&app, "GET", "/me", &[("cookie", cookie.as_str())]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(body_json(&r)["user"], "cat");
    let r = call(&app, "POST", "/logout", &[("cookie", cookie.as_str())]).await;
    assert_eq!(
        r.header("set-cookie"),
        "__Host-session=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Secure; SameSite=Lax"
    );
    let r = call(&app, "GET", "/me", &[("cookie", cookie.as_str())]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.header("set-cookie").starts_with("__Host-session=; "),
        "a dead cookie is removed"
    );

    // No prefix when opted out, or when the cookie does not qualify.
    for (cookie, name) in [
        (CookieConfig::new().host_prefix(false), "session"),
        (CookieConfig::new().secure(false), "session"),
        (CookieConfig::new().name("__Host-sid"), "__Host-sid"),
        (CookieConfig::new().name("__Secure-sid"), "__Secure-sid"),
    ] {
        let app = self::app(f.sibling(config().cookie(cookie)));
        let r = call(&app, "POST", "/login/eve", &[]).await;
        let token = body_json(&r)["token"].as_str().expect("token").to_owned();
        assert!(
            r.header("set-cookie")
                .starts_with(&format!("{name}={token}; ")),
            "{}",
            r.header("set-cookie")
        );
        let pair = format!("{name}={token}");
        let r = call(&app, "GET", "/me", &[("cookie", pair.as_str())]).await;
        assert_eq!(r.status, StatusCode::OK, "read under the name it writes");
    }

    // Custom attributes, the same on removal.
    let custom = f.sibling(
        config().cookie(
            CookieConfig::new()
                .name("sid")
                .path("/app")
                .domain("example.com")
                .same_site(SameSite::Strict)
                .persistent(false),
        ),
    );
    let app = self::app(custom);
    let r = call(&app, "POST", "/login/dan", &[]).await;
    let token = body_json(&r)["token"].as_str().expect("token").to_owned();
    assert_eq!(
        r.header("set-cookie"),
        format!("sid={token}; Path=/app; Domain=example.com; HttpOnly; Secure; SameSite=Strict")
    );
    let cookie = format!("sid={token}");
    let r = call(&app, "POST", "/logout", &[("cookie", cookie.as_str())]).await;
    assert_eq!(
        r.header("set-cookie"),
        "sid=; Path=/app; Domain=example.com; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Secure; SameSite=Strict"
    );
}

pub async fn http_jwt_renewal_is_returned_in_the_header(be: B) {
    let f = fixture(
        be,
        config()
            .token_format(TokenFormat::Jwt)
            .session_ttl(secs(100)),
    );
    let app = app(f.manager.clone());
    let token = call(&app, "POST", "/login/eve", &[])
        .await
        .header("x-session-token")
        .to_owned();
    let start = unix(f.manager.now());
    f.clock.advance(secs(60));
    let r = call(
        &app,
        "GET",
        "/me",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let renewed = r.header("x-session-token").to_owned();
    assert!(!renewed.is_empty(), "renewed JWT returned to the client");
    assert_eq!(jwt_claims(&renewed)["exp"].as_u64(), Some(start + 160));
}

pub async fn http_spoofed_forwarded_for_does_not_change_the_client_ip(be: B) {
    let f = fixture(be, config().ip_binding(true));
    let app = app(f.manager.clone());
    let send_from =
        |peer: &'static str, uri: &'static str, headers: Vec<(&'static str, String)>| {
            let app = app.clone();
            async move {
                let mut b = request(
                    if uri.starts_with("/login") {
                        "POST"
                    } else {
                        "GET"
                    },
                    uri,
                    peer,
                );
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                send(&app, b.body(Body::empty()).expect("request")).await
            }
        };
    let token = send_from("203.0.113.7:1000", "/login/fay", vec![])
        .await
        .header("x-session-token")
        .to_owned();
    // Same peer, forged header: still the same client.
    let r = send_from(
        "203.0.113.7:1001",
        "/me",
        vec![
            ("x-session-token", token.clone()),
            ("x-forwarded-for", "198.51.100.1".into()),
            ("x-real-ip", "198.51.100.1".into()),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Another peer claiming to forward for the right address: refused.
    let r = send_from(
        "198.51.100.1:1000",
        "/me",
        vec![
            ("x-session-token", token.clone()),
            ("x-forwarded-for", "203.0.113.7".into()),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Behind a trusted proxy, X-Forwarded-For is read from the right.
    let proxied = f.sibling(config().ip_binding(true).trusted_proxies(["10.0.0.0/8"]));
    let app = self::app(proxied);
    let login = send(
        &app,
        request("POST", "/login/gus", "10.0.0.5:80")
            .header("x-forwarded-for", "1.1.1.1, 203.0.113.7")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    let token = login.header("x-session-token").to_owned();
    let me = |xff: &'static str| {
        request("GET", "/me", "10.0.0.6:80")
            .header("x-session-token", token.clone())
            .header("x-forwarded-for", xff)
            .body(Body::empty())
            .expect("request")
    };
    // The client prepended a spoofed hop; the proxy appended the real one.
    assert_eq!(
        send(&app, me("6.6.6.6, 203.0.113.7")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, me("203.0.113.7, 6.6.6.6")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

pub async fn http_slow_request_does_not_undo_a_concurrent_logout(be: B) {
    let f = fixture(be, config());
    let entered = Arc::new(tokio::sync::Notify::new());
    let go = Arc::new(tokio::sync::Notify::new());
    let (e2, g2) = (entered.clone(), go.clone());
    let app = routes()
        .route(
            "/slow",
            post(move |s: SessionHandle| {
                let (entered, go) = (e2.clone(), g2.clone());
                async move {
                    s.insert("late", true).expect("json");
                    entered.notify_one();
                    go.notified().await;
                }
            }),
        )
        .layer(SessionLayer::new(f.manager.clone()));
    let token = call(&app, "POST", "/login/hal", &[])
        .await
        .header("x-session-token")
        .to_owned();
    let auth = vec![("x-session-token".to_owned(), token.clone())];

    let slow_app = app.clone();
    let slow_auth = auth.clone();
    let slow_req = tokio::spawn(async move {
        let mut b = request("POST", "/slow", PEER);
        for (k, v) in slow_auth {
            b = b.header(k, v);
        }
        send(&slow_app, b.body(Body::empty()).expect("request")).await
    });
    entered.notified().await;
    let r = call(
        &app,
        "POST",
        "/logout",
        &[("x-session-token", token.as_str())],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    go.notify_one();
    assert_eq!(slow_req.await.expect("join").status, StatusCode::OK);
    let r = call(&app, "GET", "/me", &[("x-session-token", token.as_str())]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the logout stands");
    assert_eq!(
        f.manager.delete_user_sessions("hal").await.expect("count"),
        0
    );
}

/// With `ip_binding` on, an app served without `ConnectInfo` knows no
/// client address: sessions are refused (not bound to "unknown"), and the
/// cookie of a client is kept (the client did nothing wrong).
pub async fn http_ip_binding_without_connect_info_is_refused(be: B) {
    let f = fixture(be, config().ip_binding(true).cookie(CookieConfig::new()));
    let app = app(f.manager.clone());
    let (_s, token) = f
        .manager
        .create_session(user("ic"), ip("192.0.2.10"), None, None)
        .await
        .expect("create with an address");
    let bare = |method: &str, uri: &str, cookie: Option<&str>| {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "example.com");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        b.body(Body::empty()).expect("request")
    };
    let cookie = format!("__Host-session={token}");
    let r = send(&app, bare("GET", "/me", Some(&cookie))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get("set-cookie").is_none(), "the cookie is kept");
    // A login cannot create a session it could never check.
    let r = send(&app, bare("POST", "/login/ic", None)).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains("into_make_service_with_connect_info"),
        "{body}"
    );
    // With the address, the same session works.
    let r = call(&app, "GET", "/me", &[("cookie", cookie.as_str())]).await;
    assert_eq!(r.status, StatusCode::OK);
}

pub async fn http_logout_everywhere(be: B) {
    let f = fixture(be, config());
    let app = app(f.manager.clone());
    let t1 = call(&app, "POST", "/login/ivy", &[])
        .await
        .header("x-session-token")
        .to_owned();
    let t2 = call(&app, "POST", "/login/ivy", &[])
        .await
        .header("x-session-token")
        .to_owned();
    let other = call(&app, "POST", "/login/jon", &[])
        .await
        .header("x-session-token")
        .to_owned();
    let r = call(
        &app,
        "POST",
        "/logout-all",
        &[("x-session-token", t1.as_str())],
    )
    .await;
    assert_eq!(body_json(&r)["deleted"], 2);
    for t in [&t1, &t2] {
        assert_eq!(
            call(&app, "GET", "/me", &[("x-session-token", t.as_str())])
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        call(&app, "GET", "/me", &[("x-session-token", other.as_str())])
            .await
            .status,
        StatusCode::OK
    );
}

pub async fn http_untouched_session_costs_no_backend_call(be: B) {
    let f = fixture(be, config());
    let app = app(f.manager.clone());
    let token = call(&app, "POST", "/login/kim", &[])
        .await
        .header("x-session-token")
        .to_owned();
    let auth = [("x-session-token", token.as_str())];
    let calls = || f.backend.reads() + f.backend.writes();
    let before = calls();
    for uri in ["/plain", "/manager"] {
        let r = call(&app, "GET", uri, &auth).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert!(r.headers.get("x-session-token").is_none(), "{uri}");
    }
    assert_eq!(calls(), before, "a request that never touches its session");
    // A forged token on an untouched route: nothing to check, nothing read.
    let r = call(&app, "GET", "/plain", &[("x-session-token", "garbage")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(calls(), before);
    // Two extractors of one request share one load: one read.
    let r = call(&app, "GET", "/both", &auth).await;
    assert_eq!(r.body, "same");
    assert_eq!(calls(), before + 1, "one `get`, no write");
}

pub async fn http_deferred_actions_are_committed_after_the_handler(be: B) {
    let f = fixture(be, config().cookie(CookieConfig::new()));
    let app = app(f.manager.clone());
    let login = |uid: &'static str| {
        let app = app.clone();
        async move {
            let r = call(&app, "POST", &format!("/login/{uid}"), &[]).await;
            format!(
                "__Host-session={}",
                body_json(&r)["token"].as_str().expect("token")
            )
        }
    };
    let me = |cookie: String| {
        let app = app.clone();
        async move { call(&app, "GET", "/me", &[("cookie", cookie.as_str())]).await }
    };

    // A deferred regeneration: new token (by cookie, no-store), old one dead,
    // the changes saved under the new id.
    let old = login("lea").await;
    let r = call(
        &app,
        "POST",
        "/defer/regenerate",
        &[("cookie", old.as_str())],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "Regenerate");
    assert_eq!(r.header("cache-control"), "no-store");
    let set = r.header("set-cookie").to_owned();
    let new = set.split(';').next().expect("cookie pair").to_owned();
    assert!(new.len() > "__Host-session=".len() && new != old, "{set}");
    assert_eq!(me(old).await.status, StatusCode::UNAUTHORIZED);
    let r = me(new.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(body_json(&r)["data"]["deferred"], "regenerate");

    // After a 5xx a regeneration is dropped, with the changes.
    let r = call(
        &app,
        "POST",
        "/defer/regenerate-boom",
        &[("cookie", new.as_str())],
    )
    .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.headers.get("set-cookie").is_none());
    let r = me(new.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "the old token still works");
    assert_eq!(body_json(&r)["data"]["deferred"], "regenerate");

    // A deferred deletion removes the cookie and the session.
    let r = call(&app, "POST", "/defer/delete", &[("cookie", new.as_str())]).await;
    assert_eq!(r.body, "Delete");
    assert_eq!(r.header("cache-control"), "no-store");
    assert!(r.header("set-cookie").starts_with("__Host-session=; "));
    assert_eq!(me(new).await.status, StatusCode::UNAUTHORIZED);

    // … even after a 5xx: a logout must not be lost.
    let cookie = login("max").await;
    let r = call(
        &app,
        "POST",
        "/defer/delete-boom",
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.header("set-cookie").starts_with("__Host-session=; "));
    assert_eq!(me(cookie).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        f.manager.delete_user_sessions("max").await.expect("count"),
        0
    );
}

/// Used by `tests/sessions.rs` for a sanity check of the model outside any
/// backend.
pub fn sample_session() -> Session {
    Session::new(Some(user("m")), secs(60)).expect("session")
}
