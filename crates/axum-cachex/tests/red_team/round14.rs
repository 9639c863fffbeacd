//! Round 14: sessions after issue 13 (compare-and-set writes, login over
//! another user's session, `__Host-` cookie) and the stalled-backend
//! circuit breaker.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use axum_cachex::{
    backend::{Backend, BackendError, CompareAndSwap, Listing, MemoryBackend},
    session::{
        CookieConfig, SessionConfig, SessionContext, SessionLayer, SessionManager, SessionUser,
    },
};
use bytes::Bytes;

use crate::support::send;

const SECRET: &str = "round-14-secret-of-at-least-32-characters!";

/// A memory store whose reads, or compare-and-set writes, can be made to
/// fail the way an open circuit breaker (or a timeout) makes them fail.
#[derive(Debug, Default)]
struct Flaky {
    inner: MemoryBackend,
    fail_get: AtomicBool,
    /// Fails `set_if_equals` (the guarded session write) only.
    fail_cas: AtomicBool,
    /// Fails `delete_if_equals` (how locks are released) only.
    fail_release: AtomicBool,
}

fn unavailable() -> BackendError {
    BackendError::Connection {
        backend: "flaky",
        source: "server is not answering (circuit open)".into(),
    }
}

#[async_trait]
impl Backend for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        if self.fail_get.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        self.inner.get(key).await
    }
    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        self.inner.set(key, value, ttl).await
    }
    async fn add(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.inner.add(key, value, ttl).await
    }
    async fn replace(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.inner.replace(key, value, ttl).await
    }
    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        self.inner.take(key).await
    }
    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        self.inner.delete(key).await
    }
    fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
        Some(self)
    }
}

#[async_trait]
impl CompareAndSwap for Flaky {
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError> {
        if self.fail_release.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        self.inner.delete_if_equals(key, expected).await
    }
    async fn set_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        if self.fail_cas.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        self.inner.set_if_equals(key, expected, value, ttl).await
    }
}

/// A logged-in user whose session cannot be *read* for a moment (its
/// server's breaker is open — on Memcached only that one server; the
/// others take writes fine) asks for `session_or_anonymous`. The library
/// takes "could not read" for "no session", creates a new anonymous session
/// and sends its cookie: the user's login cookie is overwritten and the
/// user is logged out for good, although the session is alive and comes
/// back as soon as the server does. An unavailable store must fail the
/// call, not pretend the client had no session.
#[tokio::test]
async fn session_or_anonymous_replaces_a_live_login_while_the_store_is_unavailable() {
    let flaky = Arc::new(Flaky::default());
    let config = SessionConfig::builder(SECRET)
        .cookie(CookieConfig::new())
        .build()
        .unwrap();
    let manager = SessionManager::new(flaky.clone(), config);
    let (_alice, token) = manager
        .create_session(SessionUser::new("alice"), None, None, None)
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/cart",
            get(|ctx: SessionContext| async move {
                match ctx.session_or_anonymous().await {
                    Ok(h) => (
                        StatusCode::OK,
                        format!("user={:?}", h.user().map(|u| u.user_id)),
                    )
                        .into_response(),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
                }
            }),
        )
        .layer(SessionLayer::new(manager.clone()));

    flaky.fail_get.store(true, Ordering::SeqCst);
    let req = Request::get("/cart")
        .header(header::HOST, "shop.example")
        .header(header::COOKIE, format!("__Host-session={token}"))
        .body(Body::empty())
        .unwrap();
    let got = send(&app, req).await;
    flaky.fail_get.store(false, Ordering::SeqCst);

    // The session is alive: the store only failed to answer for a moment.
    manager
        .get_session(&token, None, None)
        .await
        .expect("alice's session still exists");
    let set_cookie = got.header("set-cookie");
    assert!(
        !set_cookie.contains("__Host-session=") || set_cookie.contains(&token),
        "a store outage replaced the client's live session cookie with a new anonymous \
         session ({} {}): Set-Cookie: {set_cookie}",
        got.status,
        got.text()
    );
}

/// Login of bob over alice's session without regeneration
/// (`regenerate_on_login(false)`): `update_session` moves the session from
/// alice's index to bob's *before* its compare-and-set write, and does not
/// undo that when the write fails. A write that fails (timeout, breaker
/// opening, `Conflict`) leaves the record as it was — alice's, active —
/// but no longer listed under alice, so "log out everywhere" for alice
/// misses it and her session lives on.
#[tokio::test]
async fn failed_login_save_unlists_a_live_session_from_log_out_everywhere() {
    let flaky = Arc::new(Flaky::default());
    let config = SessionConfig::builder(SECRET)
        .regenerate_on_login(false)
        .build()
        .unwrap();
    let manager = SessionManager::new(flaky.clone(), config);
    let (mut session, alice_token) = manager
        .create_session(SessionUser::new("alice"), None, None, None)
        .await
        .unwrap();

    flaky.fail_cas.store(true, Ordering::SeqCst);
    let login = manager.login(&mut session, SessionUser::new("bob")).await;
    flaky.fail_cas.store(false, Ordering::SeqCst);
    assert!(login.is_err(), "the write failed, so must the login");

    // Still alice's session, still active.
    let stored = manager.get_session(&alice_token, None, None).await.unwrap();
    assert_eq!(stored.user().map(|u| u.user_id.as_str()), Some("alice"));

    let deleted = manager.delete_user_sessions("alice").await.unwrap();
    let after = manager.get_session(&alice_token, None, None).await;
    assert!(
        after.is_err(),
        "alice logged out everywhere ({deleted} deleted) but her session still works: \
         the failed login removed it from her index"
    );
}

#[cfg(feature = "memcached")]
mod memcached_breaker {
    use std::{
        collections::HashMap,
        process::{Child, Command, Stdio},
        sync::{Arc, Mutex},
        time::Duration,
    };

    use axum::{Router, body::Body, extract::Path, http::Request, routing::get};
    use axum_cachex::{
        CacheLayer,
        backend::{Backend, MemcachedBackend},
    };

    use crate::support::{get_req, send};

    struct Memcached {
        child: Child,
        addr: String,
    }

    impl Memcached {
        fn start(bin: &str) -> Self {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
            let child = Command::new(bin)
                .args([
                    "-l",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "0",
                    "-m",
                    "16",
                ])
                .args(["-u", &user])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn memcached");
            let addr = format!("127.0.0.1:{port}");
            // Dropped (killed and waited for) on every path from here.
            let server = Self { child, addr };
            for _ in 0..200 {
                if std::net::TcpStream::connect(&server.addr).is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("private memcached did not start on {}", server.addr);
        }
    }

    impl Drop for Memcached {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-CONT", &self.child.id().to_string()])
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Server A of two is frozen; its breaker opens. A `POST` invalidates
    /// `/p/{x}`, whose cached `GET` lives on A: the bump of A's path
    /// counter is turned away by the open breaker (and the cache layer
    /// ignores the error). When A answers again the breaker closes and the
    /// old entry, never invalidated there, is served: a stale response
    /// after an invalidating write. Before the breaker the bump was sent and
    /// A executed it on resuming; now it is dropped, and nothing makes up
    /// for it when the breaker closes (e.g. a generation bump of that
    /// server).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalidation_turned_away_by_an_open_breaker_is_lost_when_it_closes() {
        let bin = match std::env::var("AXUM_CACHEX_MEMCACHED_BIN") {
            Ok(b) if !b.is_empty() => b,
            _ => {
                if crate::common::memcached_servers().is_some() {
                    panic!("AXUM_CACHEX_MEMCACHED_BIN not set");
                }
                return;
            }
        };
        let a = Memcached::start(&bin);
        let b = Memcached::start(&bin);
        let mc = Arc::new(
            MemcachedBackend::builder()
                .servers([a.addr.clone(), b.addr.clone()])
                .key_prefix(crate::common::unique_prefix("r14-brk"))
                .timeout(Duration::from_millis(200))
                .down_backoff(Duration::from_millis(300))
                .build()
                .unwrap(),
        );
        let backend: Arc<dyn Backend> = mc.clone();
        let version = Arc::new(Mutex::new(1u32));
        let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let cache = CacheLayer::builder()
            .ttl(Duration::from_secs(300))
            .public()
            .backend(backend)
            .build()
            .unwrap();
        let (v, r) = (version.clone(), runs.clone());
        let (v2, _r2) = (version.clone(), runs.clone());
        let app = Router::new()
            .route(
                "/p/{n}",
                get(move |Path(n): Path<String>| {
                    let (v, r) = (v.clone(), r.clone());
                    async move {
                        *r.lock().unwrap().entry(n.clone()).or_default() += 1;
                        format!("{n} v{}", v.lock().unwrap())
                    }
                })
                .post(move |Path(n): Path<String>| {
                    let v = v2.clone();
                    async move {
                        *v.lock().unwrap() = 2;
                        format!("{n} updated")
                    }
                }),
            )
            .layer(cache);

        let paths: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        for p in &paths {
            let got = send(&app, get_req(&format!("/p/{p}"))).await;
            assert_eq!(got.text(), format!("{p} v1"));
        }
        for p in &paths {
            send(&app, get_req(&format!("/p/{p}"))).await;
        }
        let cached_runs = runs.lock().unwrap().clone();
        assert!(
            cached_runs.values().all(|&n| n == 1),
            "all cached: {cached_runs:?}"
        );

        // A key on A, to trip and later watch A's breaker directly.
        let key_on_a = (0..)
            .map(|i| format!("watch-{i}"))
            .find(|k| mc.server_for_key(k) == a.addr)
            .unwrap();

        crate::common::signal_process(a.child.id(), "-STOP");
        for _ in 0..3 {
            assert!(mc.get(&key_on_a).await.is_err(), "A is frozen");
        }
        // Breaker open: paths on A miss at once and run the handler.
        let mut on_a = None;
        for p in &paths {
            send(&app, get_req(&format!("/p/{p}"))).await;
            if runs.lock().unwrap()[p] == 2 {
                on_a = Some(p.clone());
                break;
            }
        }
        let x = on_a.expect("some path is cached on server A");

        // The write: data becomes v2, the layer invalidates /p/{x}.
        let post = Request::post(format!("/p/{x}"))
            .header("host", "shop.example")
            .body(Body::empty())
            .unwrap();
        let got = send(&app, post).await;
        assert!(got.status.is_success());
        tokio::time::sleep(Duration::from_millis(50)).await;

        crate::common::signal_process(a.child.id(), "-CONT");
        // Wait (bounded) until A's breaker lets calls through again.
        let mut closed = false;
        for _ in 0..100 {
            if mc.get(&key_on_a).await.is_ok() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(closed, "A's breaker never closed after the server resumed");

        let got = send(&app, get_req(&format!("/p/{x}"))).await;
        assert_eq!(
            got.text(),
            format!("{x} v2"),
            "stale response served after an invalidating POST: the invalidation of \
             server A was dropped by its open breaker"
        );
        drop(b);
    }
}

/// Found by the soak: a login during a short outage takes the user's
/// session-index lock, and its release fails. Before, the lock then lived
/// its whole 10 s TTL, and every login of that user in the meantime waited
/// 3 s and failed `Busy` although the store was long back. A release that
/// fails is retried until it lands, so the next login goes through.
#[tokio::test]
async fn a_lock_whose_release_failed_is_released_once_the_store_answers() {
    let flaky = Arc::new(Flaky::default());
    let config = SessionConfig::builder(SECRET).build().unwrap();
    let manager = SessionManager::new(flaky.clone(), config);

    flaky.fail_release.store(true, Ordering::SeqCst);
    manager
        .create_session(SessionUser::new("ola"), None, None, None)
        .await
        .expect("the login itself succeeds");
    let locked = flaky.inner.keys("").await.unwrap();
    assert!(
        locked.iter().any(|k| k.ends_with(":lock")),
        "the failed release left the index lock: {locked:?}"
    );

    flaky.fail_release.store(false, Ordering::SeqCst);
    manager
        .create_session(SessionUser::new("ola"), None, None, None)
        .await
        .expect("the next login is not refused for a lock nobody holds");
    assert_eq!(manager.delete_user_sessions("ola").await.unwrap(), 2);
}
