//! Red-team round 18: the distributed lock's late releases
//! (crates/axum-cachex/src/lock.rs: a failed release, and an `add` whose
//! answer never came, are retried with compare-and-delete on a spawned
//! task). The five bugs found are fixed: an unanswered `add` is cleaned up
//! until the server answers (its TTL starts when it is applied), only
//! errors that may hide a sent command start a retry, at most 64 retry
//! tasks run per backend, and a huge lock TTL no longer overflows.
//!
//! The lock module is crate-private, so everything is driven through the
//! public users: the session index (`SessionManager::create_session` with a
//! user), the application cache (`CacheManager::get_or_set` with a
//! `DistributedLock`). All tests run on tokio's paused clock; the memory
//! backend reads the same clock, so TTLs expire in virtual time.

#![cfg(feature = "session")]
#![allow(clippy::unwrap_used)]

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use axum_cachex::{
    CacheManager, Clock,
    app_cache::DistributedLock,
    backend::{Backend, BackendError, CompareAndSwap, Listing, MemoryBackend},
    session::{SessionConfig, SessionManager, SessionUser},
};
use bytes::Bytes;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

const SECRET: &str = "red-team-lock-secret-of-at-least-32-characters!";

/// A memory backend whose expiry follows tokio's (paused) clock.
fn memory() -> Arc<MemoryBackend> {
    let base_sys = SystemTime::now();
    let base = Instant::now();
    let clock = Clock::from_fn(move || base_sys + (Instant::now() - base));
    Arc::new(MemoryBackend::builder().clock(clock).build().unwrap())
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

fn is_lock_key(key: &str) -> bool {
    key.starts_with("lock:") || key.ends_with(":lock")
}

// ---------------------------------------------------------------------------
// A store that freezes: commands queue up in order (one connection, like a
// Redis server paused by a fork or a VM stall) and are applied when it
// wakes, whether or not the client still waits for the answer.
// ---------------------------------------------------------------------------

type Job = Box<dyn FnOnce(Arc<MemoryBackend>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

struct Frozen {
    inner: Arc<MemoryBackend>,
    queue: mpsc::UnboundedSender<Job>,
    frozen_until: Arc<Mutex<Option<Instant>>>,
    /// Freeze the server for this long when the next lock `add` arrives.
    freeze_at_lock_add: Mutex<Option<Duration>>,
}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Frozen")
    }
}

impl Frozen {
    fn new() -> Arc<Self> {
        let inner = memory();
        let (queue, mut rx) = mpsc::unbounded_channel::<Job>();
        let frozen_until = Arc::new(Mutex::new(None::<Instant>));
        let (server, until) = (Arc::clone(&inner), Arc::clone(&frozen_until));
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let wake = *until.lock().unwrap();
                if let Some(wake) = wake {
                    tokio::time::sleep_until(wake).await;
                }
                job(Arc::clone(&server)).await;
            }
        });
        Arc::new(Self {
            inner,
            queue,
            frozen_until,
            freeze_at_lock_add: Mutex::new(None),
        })
    }

    fn freeze_at_next_lock_add(&self, for_: Duration) {
        *self.freeze_at_lock_add.lock().unwrap() = Some(for_);
    }

    async fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(Arc<MemoryBackend>) -> Pin<Box<dyn Future<Output = T> + Send>> + Send + 'static,
    ) -> T {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |backend| {
            Box::pin(async move {
                let _ = tx.send(op(backend).await);
            })
        });
        self.queue.send(job).expect("server task alive");
        rx.await.expect("server answers eventually")
    }
}

#[async_trait]
impl Backend for Frozen {
    fn name(&self) -> &'static str {
        "frozen"
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let key = key.to_owned();
        self.call(move |b| Box::pin(async move { b.get(&key).await }))
            .await
    }
    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let key = key.to_owned();
        self.call(move |b| Box::pin(async move { b.set(&key, value, ttl).await }))
            .await
    }
    async fn add(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        if is_lock_key(key) {
            if let Some(for_) = self.freeze_at_lock_add.lock().unwrap().take() {
                *self.frozen_until.lock().unwrap() = Some(Instant::now() + for_);
            }
        }
        let key = key.to_owned();
        self.call(move |b| Box::pin(async move { b.add(&key, value, ttl).await }))
            .await
    }
    async fn replace(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let key = key.to_owned();
        self.call(move |b| Box::pin(async move { b.replace(&key, value, ttl).await }))
            .await
    }
    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let key = key.to_owned();
        self.call(move |b| Box::pin(async move { b.take(&key).await }))
            .await
    }
    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let key = key.to_owned();
        self.call(move |b| Box::pin(async move { b.delete(&key).await }))
            .await
    }
    fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
        Some(self)
    }
}

#[async_trait]
impl CompareAndSwap for Frozen {
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError> {
        let (key, expected) = (key.to_owned(), expected.to_vec());
        self.call(move |b| Box::pin(async move { b.delete_if_equals(&key, &expected).await }))
            .await
    }
    async fn set_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let (key, expected) = (key.to_owned(), expected.to_vec());
        self.call(move |b| {
            Box::pin(async move { b.set_if_equals(&key, &expected, value, ttl).await })
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// A store whose calls can be made to fail at once, or hang, per operation,
// with or without the CompareAndSwap ability. Counts lock-release calls.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    /// `BackendError::Connection` at once (server down, breaker open).
    Down,
    /// `BackendError::InvalidInput` at once (the client refused the key; the
    /// server never saw the command).
    Invalid,
    /// Never answers.
    Hang,
}

#[derive(Debug)]
struct Faulty {
    inner: Arc<MemoryBackend>,
    cas: bool,
    get: Mutex<Mode>,
    add: Mutex<Mode>,
    set: Mutex<Mode>,
    release: Mutex<Mode>,
    /// Calls of `delete_if_equals` (with CAS) or of `delete` on a lock key
    /// (without).
    release_calls: AtomicUsize,
    /// Whether to count plain `delete` of lock keys, in no-CAS mode.
    armed: AtomicBool,
}

impl Faulty {
    fn new(cas: bool) -> Arc<Self> {
        Arc::new(Self {
            inner: memory(),
            cas,
            get: Mutex::new(Mode::Ok),
            add: Mutex::new(Mode::Ok),
            set: Mutex::new(Mode::Ok),
            release: Mutex::new(Mode::Ok),
            release_calls: AtomicUsize::new(0),
            armed: AtomicBool::new(true),
        })
    }
    fn set_mode(slot: &Mutex<Mode>, mode: Mode) {
        *slot.lock().unwrap() = mode;
    }
    fn calls(&self) -> usize {
        self.release_calls.load(Ordering::SeqCst)
    }
}

async fn behave(mode: Mode) -> Result<(), BackendError> {
    match mode {
        Mode::Ok => Ok(()),
        Mode::Down => Err(BackendError::Connection {
            backend: "faulty",
            source: "connection refused".into(),
        }),
        Mode::Invalid => Err(BackendError::InvalidInput("key refused".into())),
        Mode::Hang => std::future::pending().await,
    }
}

#[async_trait]
impl Backend for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let mode = *self.get.lock().unwrap();
        behave(mode).await?;
        self.inner.get(key).await
    }
    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let mode = *self.set.lock().unwrap();
        behave(mode).await?;
        self.inner.set(key, value, ttl).await
    }
    async fn add(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let mode = *self.add.lock().unwrap();
        behave(mode).await?;
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
        if !self.cas && is_lock_key(key) {
            if self.armed.load(Ordering::SeqCst) {
                self.release_calls.fetch_add(1, Ordering::SeqCst);
            }
            let mode = *self.release.lock().unwrap();
            behave(mode).await?;
        }
        self.inner.delete(key).await
    }
    fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
        if self.cas { Some(self) } else { None }
    }
}

#[async_trait]
impl CompareAndSwap for Faulty {
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError> {
        self.release_calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.release.lock().unwrap();
        behave(mode).await?;
        self.inner.delete_if_equals(key, expected).await
    }
    async fn set_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.inner.set_if_equals(key, expected, value, ttl).await
    }
}

fn app_cache(backend: Arc<dyn Backend>, lock: DistributedLock) -> CacheManager {
    CacheManager::builder(backend)
        .distributed_lock(lock)
        .build()
        .unwrap()
}

/// The lock key of app-cache key `key` with the default prefix.
fn app_lock_key(key: &str) -> String {
    format!("lock:cache:{key}")
}

// ===========================================================================
// Failing tests
// ===========================================================================

/// **Bug (session index):** the new "an `add` whose answer never came is
/// cleared up later" never runs for the session index's lock.
/// `with_index_lock` bounds each lock call by `call_timeout = LOCK_TTL`
/// (10 s), so an `add` that times out does so exactly when the client-side
/// `expires` (counted from *sending* the add) is reached, and
/// `release_until_expired` exits before its first retry
/// (`now + 50 ms < expires` is false). A frozen store then applies the
/// queued `add` when it wakes — with a fresh 10 s TTL counted from *then* —
/// and nothing ever deletes it.
///
/// **Expected:** after the store is back, the user's next login gets the
/// index lock (the ghost lock of the timed-out login is cleared by the
/// background retry, as the commit message promises: "a login after an
/// outage no longer waits for a lock nobody holds").
///
/// **Observed:** the next login waits 3 s and fails with `SessionError::Busy`
/// although the store has answered everything for a second; the lock key
/// holds the timed-out login's token for another ~9 s.
#[tokio::test(start_paused = true)]
async fn session_index_lock_added_late_by_a_frozen_store_is_never_cleared() {
    let server = Frozen::new();
    let config = SessionConfig::builder(SECRET).build().unwrap();
    let manager = SessionManager::new(server.clone(), config);

    // The store freezes just as the login's index-lock `add` arrives and
    // wakes 10.5 s later, applying the queued commands in order.
    server.freeze_at_next_lock_add(Duration::from_millis(10_500));
    let first = manager
        .create_session(SessionUser::new("ola"), None, None, None)
        .await;
    assert!(
        first.is_err(),
        "the login in the outage times out: {first:?}"
    );

    // The store is back (it woke at 10.5 s); give the retry a full second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let locks: Vec<String> = server
        .inner
        .keys("")
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.ends_with(":lock"))
        .collect();
    let second = manager
        .create_session(SessionUser::new("ola"), None, None, None)
        .await;
    assert!(
        second.is_ok(),
        "the next login after the outage was refused for a lock nobody holds: \
         {second:?}; lock keys 1 s after the store woke: {locks:?}"
    );
}

/// **Bug (application cache):** same root cause in `get_or_set`:
/// `lock_or_wait` uses `call_timeout = lock_ttl`, so a lock `add` that times
/// out has already reached the lock's client-side `expires` and the
/// background retry gives up before its first attempt. The frozen store
/// applies the `add` on waking, with a full `lock_ttl` from then on.
///
/// **Expected:** once the store answers again, the orphaned lock (our own
/// token, which we know may have been applied) is deleted within the
/// retry's first pauses; a second `get_or_set` of the key runs at once.
///
/// **Observed:** the lock key is still there 1 s after the store woke
/// (it lives until wake + `lock_ttl`), and the next `get_or_set` of the key
/// on any instance waits for it.
#[tokio::test(start_paused = true)]
async fn app_cache_lock_added_late_by_a_frozen_store_is_never_cleared() {
    let server = Frozen::new();
    let lock = DistributedLock::new()
        .lock_ttl(Duration::from_secs(2))
        .max_wait(Duration::from_secs(5));
    let manager = app_cache(server.clone(), lock);

    server.freeze_at_next_lock_add(Duration::from_millis(2_500));
    let first: Result<u32, Arc<&str>> = manager
        .get_or_set("k", || async { Err("upstream failed") }, None)
        .await;
    assert!(first.is_err());

    // The store woke at 2.5 s; one more second for the retry.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let held = server.inner.get(&app_lock_key("k")).await.unwrap();

    let started = Instant::now();
    let second: Result<u32, Arc<&str>> = manager.get_or_set("k", || async { Ok(7) }, None).await;
    let waited = started.elapsed();
    assert!(
        held.is_none(),
        "the orphaned lock of the timed-out add was never cleared: {held:?} \
         still held 1.5 s after the store woke; the next get_or_set ({second:?}) \
         waited {waited:?} (virtual time) for it"
    );
}

/// **Bug (unbounded background work):** every lock `add` that fails spawns
/// a retry task that lives for the lock's whole TTL and calls
/// `delete_if_equals` every ≤ 1 s — including when the failure is a plain
/// "connection refused" / open circuit breaker, under load. There is no cap
/// (compare `max_refreshes_in_flight`, default 64, for the HTTP cache's
/// background refreshes): the number of tasks is request rate × TTL, and
/// each adds a call per second to a store that is already failing (a retry
/// storm when it comes back).
///
/// **Expected:** background lock-release work stays bounded (here: at most
/// 64 live tasks) however many calls fail.
///
/// **Observed:** 2 000 failed `get_or_set` calls leave ~2 000 live retry
/// tasks, which make 16 000 `delete_if_equals` calls against
/// the down store within 5 s.
#[tokio::test(start_paused = true)]
async fn failed_lock_adds_spawn_one_retry_task_each_without_bound() {
    let store = Faulty::new(true);
    Faulty::set_mode(&store.get, Mode::Down);
    Faulty::set_mode(&store.add, Mode::Down);
    Faulty::set_mode(&store.set, Mode::Down);
    Faulty::set_mode(&store.release, Mode::Down);
    let manager = app_cache(store.clone(), DistributedLock::new());

    let baseline = alive_tasks();
    const CALLS: usize = 2_000;
    for i in 0..CALLS {
        let key = format!("k{i}");
        let got: Result<u32, Arc<&str>> = manager.get_or_set(&key, || async { Ok(1) }, None).await;
        assert_eq!(got.unwrap(), 1, "fails open");
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let live = alive_tasks() - baseline;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let release_calls = store.calls();
    assert!(
        live <= 64,
        "{CALLS} failed lock adds left {live} live background retry tasks, \
         which made {release_calls} delete_if_equals calls against the down \
         store within 5 s"
    );
}

/// **Bug (retrying the unretryable):** an `add` that failed with
/// `BackendError::InvalidInput` was refused by the client before anything
/// was sent (e.g. Memcached's `envelope_head` rejecting the key), so no lock
/// can exist; yet the new code spawns the "late add" retry for it anyway,
/// which calls `delete_if_equals` for the whole TTL (each also failing with
/// `InvalidInput`). `BackendError::is_unavailable` exists for exactly this
/// distinction and is not consulted.
///
/// **Expected:** no background release attempts after a non-transient add
/// failure.
///
/// **Observed:** one `get_or_set` leaves a task making 13 pointless calls
/// over the 10 s TTL.
#[tokio::test(start_paused = true)]
async fn an_add_refused_as_invalid_input_is_still_retried_for_the_whole_ttl() {
    let store = Faulty::new(true);
    Faulty::set_mode(&store.add, Mode::Invalid);
    Faulty::set_mode(&store.release, Mode::Invalid);
    let manager = app_cache(store.clone(), DistributedLock::new());

    let got: Result<u32, Arc<&str>> = manager.get_or_set("k", || async { Ok(1) }, None).await;
    assert_eq!(got.unwrap(), 1);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        store.calls(),
        0,
        "a lock add that never left the client (InvalidInput) was followed by \
         background delete_if_equals calls"
    );
}

/// **Bug (panic):** `try_acquire` now computes `Instant::now() + ttl` for the
/// retry's deadline, which panics ("overflow when adding duration to
/// instant") for a huge TTL. `DistributedLock::lock_ttl` accepts any
/// duration (only zero is raised), and before this change
/// `lock_ttl(Duration::MAX)` ("never expire on its own") worked: the backend
/// call's `tokio::time::timeout` and the memory backend both saturate.
///
/// **Expected:** `get_or_set` returns the factory's value.
///
/// **Observed:** `get_or_set` panics.
#[tokio::test(start_paused = true)]
async fn app_cache_lock_with_duration_max_ttl_panics() {
    let manager = app_cache(memory(), DistributedLock::new().lock_ttl(Duration::MAX));
    let task = tokio::spawn(async move {
        let got: Result<u32, Arc<&str>> = manager.get_or_set("k", || async { Ok(3) }, None).await;
        got
    });
    match task.await {
        Ok(got) => assert_eq!(got.unwrap(), 3),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            panic!("get_or_set with lock_ttl(Duration::MAX) panicked: {msg}");
        }
        Err(e) => panic!("{e}"),
    }
}

// ===========================================================================
// Passing checks
// ===========================================================================

/// A release that failed is retried with compare-and-delete on our token
/// only: when an invalidation (or anything) deleted the lock and another
/// holder took it meanwhile, the late retry never frees that holder's lock.
#[tokio::test(start_paused = true)]
async fn late_release_retry_never_frees_the_next_holders_lock() {
    let store = Faulty::new(true);
    let manager = app_cache(
        store.clone(),
        DistributedLock::new().lock_ttl(Duration::from_secs(10)),
    );
    Faulty::set_mode(&store.release, Mode::Down);
    let got: Result<u32, Arc<&str>> = manager.get_or_set("k", || async { Ok(1) }, None).await;
    assert_eq!(got.unwrap(), 1);
    let key = app_lock_key("k");
    assert!(
        store.inner.get(&key).await.unwrap().is_some(),
        "release failed"
    );

    // Someone deletes the lock and another holder takes it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.inner.delete(&key).await.unwrap();
    let other = Bytes::from_static(b"other-holder-token");
    assert!(
        store
            .inner
            .add(&key, other.clone(), Some(Duration::from_secs(30)))
            .await
            .unwrap()
    );
    // The store recovers while our retry still runs.
    Faulty::set_mode(&store.release, Mode::Ok);
    let before = store.calls();
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(store.calls() > before, "the retry did run after recovery");
    assert_eq!(store.inner.get(&key).await.unwrap(), Some(other));
}

/// The retry of a failed release stops when the TTL has run out: no calls
/// afterwards, and no task left.
#[tokio::test(start_paused = true)]
async fn release_retries_stop_at_the_ttl() {
    let store = Faulty::new(true);
    let manager = app_cache(
        store.clone(),
        DistributedLock::new().lock_ttl(Duration::from_secs(3)),
    );
    let baseline = alive_tasks();
    Faulty::set_mode(&store.release, Mode::Down);
    let got: Result<u32, Arc<&str>> = manager.get_or_set("k", || async { Ok(1) }, None).await;
    assert_eq!(got.unwrap(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_ttl = store.calls();
    assert!(at_ttl > 1, "retried: {at_ttl}");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(store.calls(), at_ttl, "no call after the TTL");
    assert_eq!(alive_tasks(), baseline, "no task left");
}

/// A `delete_if_equals` that hangs forever: each retry is bounded by the
/// call timeout, and the background task ends by TTL + call timeout.
#[tokio::test(start_paused = true)]
async fn hanging_release_retries_are_bounded() {
    let store = Faulty::new(true);
    let manager = app_cache(
        store.clone(),
        DistributedLock::new().lock_ttl(Duration::from_secs(2)),
    );
    let baseline = alive_tasks();
    Faulty::set_mode(&store.release, Mode::Hang);
    let got: Result<u32, Arc<&str>> = manager.get_or_set("k", || async { Ok(1) }, None).await;
    assert_eq!(got.unwrap(), 1);
    tokio::time::sleep(Duration::from_secs(2 + 2 + 1)).await;
    assert_eq!(alive_tasks(), baseline, "the retry task ended");
    // The foreground release (2 s) used up the TTL: no retry was sent.
    assert_eq!(store.calls(), 1);
}

/// Without CompareAndSwap a failed (plain-delete) release is never retried
/// late: after recovery, the next holder's lock survives.
#[tokio::test(start_paused = true)]
async fn no_late_plain_delete_without_compare_and_swap() {
    let store = Faulty::new(false);
    let manager = app_cache(
        store.clone(),
        DistributedLock::new().lock_ttl(Duration::from_secs(5)),
    );
    Faulty::set_mode(&store.release, Mode::Down);
    let got: Result<u32, Arc<&str>> = manager.get_or_set("k", || async { Ok(1) }, None).await;
    assert_eq!(got.unwrap(), 1);
    let first_calls = store.calls();
    let key = app_lock_key("k");
    store.armed.store(false, Ordering::SeqCst);
    store.inner.delete(&key).await.unwrap();
    store.armed.store(true, Ordering::SeqCst);
    let other = Bytes::from_static(b"next-holder");
    store
        .inner
        .add(&key, other.clone(), Some(Duration::from_secs(30)))
        .await
        .unwrap();
    Faulty::set_mode(&store.release, Mode::Ok);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(store.calls(), first_calls, "no late plain delete");
    assert_eq!(store.inner.get(&key).await.unwrap(), Some(other));
}

/// A release that fails fast (connection refused) is retried and lands once
/// the store answers: the next login of the user is not refused.
#[tokio::test(start_paused = true)]
async fn session_lock_whose_release_failed_fast_is_released_after_recovery() {
    let store = Faulty::new(true);
    let config = SessionConfig::builder(SECRET).build().unwrap();
    let manager = SessionManager::new(store.clone(), config);
    Faulty::set_mode(&store.release, Mode::Down);
    manager
        .create_session(SessionUser::new("ola"), None, None, None)
        .await
        .expect("login works");
    Faulty::set_mode(&store.release, Mode::Ok);
    tokio::time::sleep(Duration::from_millis(500)).await;
    manager
        .create_session(SessionUser::new("ola"), None, None, None)
        .await
        .expect("the second login is not refused");
    assert_eq!(manager.delete_user_sessions("ola").await.unwrap(), 2);
}

/// A guard dropped outside any runtime (the request future outlives its
/// runtime) neither panics nor spawns: the TTL frees the lock.
#[test]
fn guard_dropped_outside_a_runtime_does_not_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (manager, store) = rt.block_on(async {
        let store = memory();
        (app_cache(store.clone(), DistributedLock::new()), store)
    });
    let entered = Arc::new(tokio::sync::Notify::new());
    let signal = Arc::clone(&entered);
    let m = manager.clone();
    let mut fut = Box::pin(async move {
        let got: Result<u32, Arc<&str>> = m
            .get_or_set(
                "k",
                || async move {
                    signal.notify_one();
                    std::future::pending::<()>().await;
                    Ok(1)
                },
                None,
            )
            .await;
        got
    });
    rt.block_on(async {
        tokio::select! {
            _ = &mut fut => panic!("factory never finishes"),
            () = entered.notified() => {}
        }
    });
    drop(rt);
    drop(fut); // the LockGuard drops here, with no runtime
    drop((manager, store));
}
