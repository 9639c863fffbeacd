//! The conformance suite every [`Backend`] must pass (feature
//! `conformance`).
//!
//! One call runs it: the required operations always, and the checks of each
//! ability ([`Listing`], [`CompareAndSwap`], [`PathInvalidation`]) the store
//! announces. The built-in memory, Redis and Memcached backends run through
//! exactly this suite.
//!
//! ```
//! # async fn demo(my_store: &dyn axum_cachex_core::Backend) {
//! let report = axum_cachex_core::conformance::run(my_store)
//!     .await
//!     .expect("the store breaks the backend contract");
//! assert!(report.skipped.is_empty(), "not checked: {:?}", report.skipped);
//! # }
//! ```
//!
//! Give the suite a backend of its own: it writes keys under `conf/` and
//! under [`CACHE_NAMESPACE`] and clears the HTTP
//! cache namespace. Checks that need time to pass (a value expiring after its
//! TTL) run only when the suite can wait: hand it your runtime's sleep with
//! [`Suite::sleep`]. Concurrency checks run their futures on the caller's
//! task, so the suite itself needs no runtime.

use std::{collections::BTreeSet, future::Future, pin::Pin, time::Duration};

use bytes::Bytes;
use futures_util::future::join_all;

use crate::{
    Backend, BackendError, CACHE_NAMESPACE, CacheEntry, CacheKey, CacheRecord, CompareAndSwap,
    Listing, PathInvalidation,
};

/// A future that completes after a delay, from the caller's runtime.
pub type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The caller's sleep function (e.g. `|d| Box::pin(tokio::time::sleep(d))`).
pub type SleepFn = Box<dyn Fn(Duration) -> SleepFuture + Send + Sync>;

/// A check the backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConformanceError {
    /// An operation failed where it should have worked.
    #[error("check `{check}`: the backend failed")]
    Backend {
        /// The failed check.
        check: &'static str,
        /// What the backend returned.
        #[source]
        source: BackendError,
    },
    /// An operation worked but broke the contract.
    #[error("check `{check}`: {message}")]
    Contract {
        /// The failed check.
        check: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// What a successful run checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The checks that ran and passed.
    pub passed: Vec<&'static str>,
    /// The checks that did not run, with why (an ability the store does not
    /// announce, or no [`Suite::sleep`]).
    pub skipped: Vec<(&'static str, &'static str)>,
}

/// Runs the whole suite against `backend`, without time-dependent checks.
/// See [`Suite`] to add them.
pub async fn run(backend: &dyn Backend) -> Result<Report, ConformanceError> {
    Suite::new(backend).run().await
}

/// The suite, configured.
#[must_use]
pub struct Suite<'a> {
    backend: &'a dyn Backend,
    sleep: Option<SleepFn>,
}

impl std::fmt::Debug for Suite<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("backend", &self.backend.name())
            .field("sleep", &self.sleep.is_some())
            .finish()
    }
}

/// Why a check failed, before it is named.
enum Problem {
    Backend(BackendError),
    Contract(String),
}

impl From<BackendError> for Problem {
    fn from(e: BackendError) -> Self {
        Self::Backend(e)
    }
}

type Outcome = Result<(), Problem>;

/// Fails the current check with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Problem::Contract(format!($($msg)+)));
        }
    };
}

impl<'a> Suite<'a> {
    /// The suite for `backend`.
    pub fn new(backend: &'a dyn Backend) -> Self {
        Self {
            backend,
            sleep: None,
        }
    }

    /// Lets the suite wait, which enables the TTL expiry check (about 2.5 s,
    /// since Memcached counts whole seconds).
    pub fn sleep(
        mut self,
        sleep: impl Fn(Duration) -> SleepFuture + Send + Sync + 'static,
    ) -> Self {
        self.sleep = Some(Box::new(sleep));
        self
    }

    /// Runs every applicable check; stops at the first failure.
    pub async fn run(self) -> Result<Report, ConformanceError> {
        let b = self.backend;
        let mut report = Report::default();
        macro_rules! check {
            ($name:ident($($arg:expr),*)) => {{
                let name = stringify!($name);
                match $name($($arg),*).await {
                    Ok(()) => report.passed.push(name),
                    Err(Problem::Backend(source)) => {
                        return Err(ConformanceError::Backend { check: name, source })
                    }
                    Err(Problem::Contract(message)) => {
                        return Err(ConformanceError::Contract { check: name, message })
                    }
                }
            }};
        }
        check!(set_then_get(b));
        check!(missing_is_none(b));
        check!(overwrite_replaces(b));
        check!(binary_values_and_odd_keys(b));
        check!(large_value(b));
        check!(zero_ttl_stores_nothing(b));
        check!(add_only_when_absent(b));
        check!(replace_only_when_present(b));
        check!(take_is_single_use(b));
        check!(concurrent_take_has_one_winner(b));
        check!(delete_reports_existence(b));
        check!(expired_values_are_absent(b));
        check!(concurrent_writers_never_tear(b));
        check!(get_now_agrees_with_get(b));
        check!(get_record_now_follows_every_write(b));
        match &self.sleep {
            Some(sleep) => check!(ttl_expiry(b, sleep)),
            None => report.skipped.push(("ttl_expiry", "no Suite::sleep given")),
        }
        match b.listing() {
            Some(l) => {
                check!(listing_by_prefix(l));
                check!(clear_by_prefix(l));
            }
            None => report.skipped.push(("listing", "Backend::listing is None")),
        }
        match b.compare_and_swap() {
            Some(c) => {
                check!(delete_if_equals(c));
                check!(set_if_equals(c));
                check!(compare_ignores_expired_values(c));
            }
            None => report
                .skipped
                .push(("compare_and_swap", "Backend::compare_and_swap is None")),
        }
        match b.path_invalidation() {
            Some(p) => {
                check!(clear_path(p));
                check!(clear_cache_only_touches_the_cache(p));
            }
            None => report
                .skipped
                .push(("path_invalidation", "Backend::path_invalidation is None")),
        }
        Ok(report)
    }
}

const TTL: Option<Duration> = Some(Duration::from_secs(60));

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Deletes `keys` so that a check starts from nothing, whatever an earlier
/// run against a persistent server left.
async fn fresh(b: &dyn Backend, keys: &[&str]) -> Outcome {
    for key in keys {
        b.delete(key).await?;
    }
    Ok(())
}

async fn expect_value(b: &dyn Backend, key: &str, want: Option<&[u8]>) -> Outcome {
    let got = b.get(key).await?;
    ensure!(
        got.as_deref() == want,
        "get({key:?}) returned {:?}, expected {:?}",
        got.as_deref().map(String::from_utf8_lossy),
        want.map(String::from_utf8_lossy)
    );
    Ok(())
}

async fn set_then_get(b: &dyn Backend) -> Outcome {
    fresh(b, &["conf/k1", "conf/no-ttl"]).await?;
    b.set("conf/k1", bytes("v1"), TTL).await?;
    expect_value(b, "conf/k1", Some(b"v1")).await?;
    b.set("conf/no-ttl", bytes("forever"), None).await?;
    expect_value(b, "conf/no-ttl", Some(b"forever")).await?;
    fresh(b, &["conf/k1", "conf/no-ttl"]).await
}

async fn missing_is_none(b: &dyn Backend) -> Outcome {
    fresh(b, &["conf/missing"]).await?;
    expect_value(b, "conf/missing", None).await
}

async fn overwrite_replaces(b: &dyn Backend) -> Outcome {
    fresh(b, &["conf/k"]).await?;
    b.set("conf/k", bytes("one"), TTL).await?;
    b.set("conf/k", bytes("two"), TTL).await?;
    expect_value(b, "conf/k", Some(b"two")).await
}

async fn binary_values_and_odd_keys(b: &dyn Backend) -> Outcome {
    let all_bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    b.set("conf/bin", Bytes::from(all_bytes.clone()), TTL)
        .await?;
    expect_value(b, "conf/bin", Some(&all_bytes)).await?;
    let long = format!("conf/{}", "x".repeat(600));
    for key in ["conf/a key ä\u{1}|||q=1 2", "conf/\r\nline", &long, ""] {
        b.set(key, bytes(key), TTL).await?;
        expect_value(b, key, Some(key.as_bytes())).await?;
        b.delete(key).await?;
    }
    let empty = Bytes::new();
    b.set("conf/empty", empty, TTL).await?;
    expect_value(b, "conf/empty", Some(b"")).await
}

async fn large_value(b: &dyn Backend) -> Outcome {
    // 512 KiB, or what the store says it accepts, minus room for a key.
    let size = b
        .max_value_size()
        .map_or(512 * 1024, |max| (max.saturating_sub(1024)).min(512 * 1024));
    let big: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    b.set("conf/big", Bytes::from(big.clone()), TTL).await?;
    expect_value(b, "conf/big", Some(&big)).await?;
    fresh(b, &["conf/big"]).await
}

async fn zero_ttl_stores_nothing(b: &dyn Backend) -> Outcome {
    fresh(b, &["conf/zero"]).await?;
    b.set("conf/zero", bytes("gone"), Some(Duration::ZERO))
        .await?;
    expect_value(b, "conf/zero", None).await?;
    b.set("conf/zero", bytes("old"), TTL).await?;
    b.set("conf/zero", bytes("gone"), Some(Duration::ZERO))
        .await?;
    expect_value(b, "conf/zero", None).await
}

/// Every write that takes a TTL honours it: `set`, `add`, `replace` and,
/// when announced, `set_if_equals` (which replaces the old TTL).
async fn ttl_expiry(b: &dyn Backend, sleep: &SleepFn) -> Outcome {
    let short = Some(Duration::from_millis(1200));
    let keys = [
        "conf/short",
        "conf/long",
        "conf/add",
        "conf/replace",
        "conf/swap",
    ];
    fresh(b, &keys).await?;
    b.set("conf/short", bytes("v"), short).await?;
    b.set("conf/long", bytes("v"), TTL).await?;
    ensure!(
        b.add("conf/add", bytes("v"), short).await?,
        "add to an absent key returned false"
    );
    b.set("conf/replace", bytes("old"), TTL).await?;
    ensure!(
        b.replace("conf/replace", bytes("v"), short).await?,
        "replace of a value returned false"
    );
    let cas = b.compare_and_swap();
    if let Some(cas) = cas {
        cas.set("conf/swap", bytes("old"), TTL).await?;
        let swapped = cas
            .set_if_equals("conf/swap", b"old", bytes("v"), short)
            .await?;
        ensure!(
            swapped,
            "set_if_equals of the expected value returned false"
        );
    }
    expect_value(b, "conf/short", Some(b"v")).await?;
    // Memcached counts TTLs in whole seconds: wait past the next boundary.
    sleep(Duration::from_millis(2500)).await;
    for (key, how) in [
        ("conf/short", "set"),
        ("conf/add", "add"),
        ("conf/replace", "replace"),
    ] {
        let left = b.get(key).await?;
        ensure!(
            left.is_none(),
            "a value written by `{how}` with a 1.2 s TTL outlived it"
        );
    }
    if cas.is_some() {
        let left = b.get("conf/swap").await?;
        ensure!(
            left.is_none(),
            "`set_if_equals` kept the old TTL instead of the new one"
        );
    }
    expect_value(b, "conf/long", Some(b"v")).await?;
    fresh(b, &keys).await
}

async fn add_only_when_absent(b: &dyn Backend) -> Outcome {
    fresh(b, &["conf/a"]).await?;
    ensure!(
        b.add("conf/a", bytes("first"), TTL).await?,
        "add to an absent key returned false"
    );
    ensure!(
        !b.add("conf/a", bytes("second"), TTL).await?,
        "add over a value returned true"
    );
    expect_value(b, "conf/a", Some(b"first")).await?;
    b.set("conf/a", bytes("x"), Some(Duration::ZERO)).await?;
    ensure!(
        b.add("conf/a", bytes("third"), TTL).await?,
        "add over an expired value returned false"
    );
    expect_value(b, "conf/a", Some(b"third")).await
}

async fn replace_only_when_present(b: &dyn Backend) -> Outcome {
    fresh(b, &["conf/r"]).await?;
    ensure!(
        !b.replace("conf/r", bytes("ghost"), TTL).await?,
        "replace of an absent key returned true"
    );
    expect_value(b, "conf/r", None).await?;
    b.set("conf/r", bytes("one"), TTL).await?;
    ensure!(
        b.replace("conf/r", bytes("two"), TTL).await?,
        "replace of a value returned false"
    );
    expect_value(b, "conf/r", Some(b"two")).await?;
    b.delete("conf/r").await?;
    ensure!(
        !b.replace("conf/r", bytes("three"), TTL).await?,
        "replace resurrected a deleted key"
    );
    expect_value(b, "conf/r", None).await
}

async fn take_is_single_use(b: &dyn Backend) -> Outcome {
    fresh(b, &["conf/t"]).await?;
    b.set("conf/t", bytes("once"), TTL).await?;
    let first = b.take("conf/t").await?;
    ensure!(
        first.as_deref() == Some(&b"once"[..]),
        "take returned {first:?}"
    );
    let second = b.take("conf/t").await?;
    ensure!(second.is_none(), "a second take returned {second:?}");
    expect_value(b, "conf/t", None).await
}

async fn concurrent_take_has_one_winner(b: &dyn Backend) -> Outcome {
    b.set("conf/race", bytes("prize"), TTL).await?;
    let results = join_all((0..50).map(|_| b.take("conf/race"))).await;
    let mut winners = 0;
    for result in results {
        winners += usize::from(result?.is_some());
    }
    ensure!(
        winners == 1,
        "{winners} of 50 concurrent takes got the value"
    );
    Ok(())
}

async fn delete_reports_existence(b: &dyn Backend) -> Outcome {
    fresh(b, &["conf/d"]).await?;
    b.set("conf/d", bytes("v"), TTL).await?;
    ensure!(
        b.delete("conf/d").await?,
        "delete of a value returned false"
    );
    ensure!(
        !b.delete("conf/d").await?,
        "delete of nothing returned true"
    );
    expect_value(b, "conf/d", None).await
}

/// An expired value counts as absent for every operation: `replace` must
/// not bring it back (the late save that resurrects a session), `take`
/// must not return it, `delete` must not report it.
async fn expired_values_are_absent(b: &dyn Backend) -> Outcome {
    let expired = Some(Duration::ZERO);
    b.set("conf/expired", bytes("old"), expired).await?;
    let replaced = b.replace("conf/expired", bytes("new"), TTL).await?;
    ensure!(!replaced, "replace wrote over an expired value");
    expect_value(b, "conf/expired", None).await?;
    b.set("conf/expired", bytes("old"), expired).await?;
    let taken = b.take("conf/expired").await?;
    ensure!(taken.is_none(), "take returned an expired value");
    b.set("conf/expired", bytes("old"), expired).await?;
    ensure!(
        !b.delete("conf/expired").await?,
        "delete reported an expired value"
    );
    Ok(())
}

async fn concurrent_writers_never_tear(b: &dyn Backend) -> Outcome {
    let writes = (0..32u8).map(|i| b.set("conf/contended", Bytes::from(vec![i; 4096]), TTL));
    for result in join_all(writes).await {
        result?;
    }
    let value = b.get("conf/contended").await?.unwrap_or_default();
    ensure!(
        value.len() == 4096,
        "the value has {} bytes, not 4096",
        value.len()
    );
    ensure!(
        value.iter().all(|&x| x == value[0]),
        "a torn write: two writers' bytes mixed"
    );
    fresh(b, &["conf/contended"]).await
}

async fn get_now_agrees_with_get(b: &dyn Backend) -> Outcome {
    b.set("conf/now", bytes("v"), TTL).await?;
    fresh(b, &["conf/now-missing"]).await?;
    for (key, want) in [("conf/now", Some(&b"v"[..])), ("conf/now-missing", None)] {
        if let Some(now) = b.get_now(key) {
            let got = now?;
            ensure!(
                got.as_deref() == want,
                "get_now({key:?}) returned {got:?}, get {want:?}"
            );
        }
    }
    fresh(b, &["conf/now"]).await
}

/// A record with `body`, as the HTTP layer stores it.
fn record(body: &str) -> CacheRecord {
    CacheRecord::Response(CacheEntry {
        status: http::StatusCode::OK,
        headers: http::HeaderMap::new(),
        body: bytes(body),
        etag: http::HeaderValue::from_static("\"conf\""),
        stored_at: std::time::UNIX_EPOCH,
        fresh_for: Duration::from_secs(60),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        vary_key: Bytes::new(),
    })
}

/// A store that keeps decoded records must drop them with every write:
/// a record read after a write is the written one, never the one before.
async fn get_record_now_follows_every_write(b: &dyn Backend) -> Outcome {
    let key = "conf/record";
    let read = |want: Option<&CacheRecord>| -> Outcome {
        if let Some(now) = b.get_record_now(key) {
            let got = now?;
            ensure!(
                got.as_deref() == want,
                "get_record_now returned {got:?}, expected {want:?}"
            );
        }
        Ok(())
    };
    let (first, second) = (record("first"), record("second"));
    b.set(key, first.encode(), TTL).await?;
    read(Some(&first))?;
    read(Some(&first))?;
    b.set(key, second.encode(), TTL).await?;
    read(Some(&second))?;
    b.delete(key).await?;
    read(None)?;
    ensure!(
        b.add(key, first.encode(), TTL).await?,
        "add to an empty key failed"
    );
    read(Some(&first))?;
    ensure!(
        b.replace(key, second.encode(), TTL).await?,
        "replace failed"
    );
    read(Some(&second))?;
    b.take(key).await?;
    read(None)?;
    // Bytes that are not a record are never handed out as one.
    b.set(key, bytes("not a record"), TTL).await?;
    if let Some(Ok(Some(got))) = b.get_record_now(key) {
        return Err(Problem::Contract(format!(
            "get_record_now decoded plain bytes as {got:?}"
        )));
    }
    fresh(b, &[key]).await
}

async fn listing_by_prefix(l: &dyn Listing) -> Outcome {
    l.clear("conf/list/").await?;
    let keys = ["conf/list/a", "conf/list/b", "conf/list/sub/c"];
    for key in keys {
        l.set(key, bytes(key), Some(Duration::from_secs(30)))
            .await?;
    }
    l.set("conf/list/expired", bytes("x"), Some(Duration::ZERO))
        .await?;
    l.set("conf/listing-neighbour", bytes("x"), TTL).await?;
    let listed: BTreeSet<String> = l.keys("conf/list/").await?.into_iter().collect();
    let want: BTreeSet<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    ensure!(
        listed == want,
        "keys(\"conf/list/\") returned {listed:?}, expected {want:?}"
    );
    let entries = l.entries("conf/list/sub/").await?;
    ensure!(
        entries.len() == 1,
        "entries(\"conf/list/sub/\") returned {} values",
        entries.len()
    );
    let entry = &entries[0];
    ensure!(
        entry.key == "conf/list/sub/c" && entry.value == bytes("conf/list/sub/c"),
        "entries returned {entry:?}"
    );
    let left = entry.ttl_remaining.unwrap_or(Duration::MAX);
    ensure!(
        left <= Duration::from_secs(30) && left > Duration::from_secs(10),
        "a 30 s value has {left:?} left"
    );
    let all = l.keys("").await?;
    ensure!(
        all.iter().any(|k| k == "conf/listing-neighbour"),
        "keys(\"\") misses a key"
    );
    fresh(l, &["conf/listing-neighbour"]).await
}

async fn clear_by_prefix(l: &dyn Listing) -> Outcome {
    for key in ["conf/clear/a", "conf/clear/b", "conf/clearing-neighbour"] {
        l.set(key, bytes("v"), TTL).await?;
    }
    let removed = l.clear("conf/clear/").await?;
    ensure!(
        removed == 2,
        "clear(\"conf/clear/\") reported {removed} removals, not 2"
    );
    expect_value(l, "conf/clear/a", None).await?;
    expect_value(l, "conf/clearing-neighbour", Some(b"v")).await?;
    l.set("conf/clear/a", bytes("again"), TTL).await?;
    expect_value(l, "conf/clear/a", Some(b"again")).await?;
    fresh(l, &["conf/clear/a", "conf/clearing-neighbour"]).await
}

async fn delete_if_equals(c: &dyn CompareAndSwap) -> Outcome {
    c.set("conf/lock", bytes("token-a"), TTL).await?;
    ensure!(
        !c.delete_if_equals("conf/lock", b"token-b").await?,
        "deleted another token's value"
    );
    expect_value(c, "conf/lock", Some(b"token-a")).await?;
    ensure!(
        c.delete_if_equals("conf/lock", b"token-a").await?,
        "did not delete the expected value"
    );
    expect_value(c, "conf/lock", None).await?;
    ensure!(
        !c.delete_if_equals("conf/lock", b"token-a").await?,
        "deleted an absent value"
    );
    c.set("conf/lock", bytes("token-c"), TTL).await?;
    let results = join_all((0..20).map(|_| c.delete_if_equals("conf/lock", b"token-c"))).await;
    let mut deleted = 0;
    for result in results {
        deleted += usize::from(result?);
    }
    ensure!(deleted == 1, "{deleted} of 20 concurrent releases deleted");
    Ok(())
}

/// An expired value counts as absent: no swap matches it, and nothing
/// brings it back.
async fn compare_ignores_expired_values(c: &dyn CompareAndSwap) -> Outcome {
    c.set("conf/cas-expired", bytes("v1"), Some(Duration::ZERO))
        .await?;
    let deleted = c.delete_if_equals("conf/cas-expired", b"v1").await?;
    ensure!(!deleted, "delete_if_equals matched an expired value");
    let swapped = c
        .set_if_equals("conf/cas-expired", b"v1", bytes("v2"), TTL)
        .await?;
    ensure!(!swapped, "set_if_equals matched an expired value");
    expect_value(c, "conf/cas-expired", None).await
}

async fn set_if_equals(c: &dyn CompareAndSwap) -> Outcome {
    fresh(c, &["conf/cas"]).await?;
    let absent = c.set_if_equals("conf/cas", b"v1", bytes("v2"), TTL).await?;
    ensure!(!absent, "set_if_equals wrote over an absent value");
    expect_value(c, "conf/cas", None).await?;
    c.set("conf/cas", bytes("v1"), TTL).await?;
    ensure!(
        !c.set_if_equals("conf/cas", b"other", bytes("v2"), TTL)
            .await?,
        "wrote over a different value"
    );
    expect_value(c, "conf/cas", Some(b"v1")).await?;
    ensure!(
        c.set_if_equals("conf/cas", b"v1", bytes("v2"), TTL).await?,
        "did not write over the expected value"
    );
    expect_value(c, "conf/cas", Some(b"v2")).await?;
    let results = join_all(
        (0..20u8).map(|i| c.set_if_equals("conf/cas", b"v2", Bytes::from(vec![i; 8]), TTL)),
    )
    .await;
    let mut written = 0;
    for result in results {
        written += usize::from(result?);
    }
    ensure!(
        written == 1,
        "{written} of 20 concurrent swaps from one value won"
    );
    fresh(c, &["conf/cas"]).await
}

/// A key of the HTTP cache, as the cache writes it.
fn cache_key(path: &str, query: &str) -> String {
    format!(
        "{CACHE_NAMESPACE}{}",
        CacheKey::encode("GET", "conf.test", path, query)
    )
}

async fn seed_cache(b: &dyn Backend) -> Result<Vec<String>, Problem> {
    let mut keys = Vec::new();
    for (path, query) in [
        ("/users", ""),
        ("/users", "page=2"),
        ("/users/1", ""),
        ("/posts", ""),
    ] {
        let key = cache_key(path, query);
        b.set(&key, bytes(path), TTL).await?;
        keys.push(key);
    }
    b.set("conf/not-cache", bytes("v"), TTL).await?;
    Ok(keys)
}

async fn clear_path(p: &dyn PathInvalidation) -> Outcome {
    p.clear_cache().await?;
    let keys = seed_cache(p).await?;
    let exact = p.clear_path("/users", false).await?;
    expect_value(p, &keys[0], None).await?;
    expect_value(p, &keys[1], Some(b"/users")).await?;
    let with_params = p.clear_path("/users", true).await?;
    expect_value(p, &keys[1], None).await?;
    expect_value(p, &keys[2], Some(b"/users/1")).await?;
    expect_value(p, &keys[3], Some(b"/posts")).await?;
    expect_value(p, "conf/not-cache", Some(b"v")).await?;
    if p.counts_exactly() {
        ensure!(
            (exact, with_params) == (1, 1),
            "counts {exact} and {with_params}, not 1 and 1"
        );
    } else {
        ensure!(
            (exact, with_params) == (0, 0),
            "a store that cannot count must report 0"
        );
    }
    // Entries written after a clear are readable.
    p.set(&keys[0], bytes("again"), TTL).await?;
    expect_value(p, &keys[0], Some(b"again")).await
}

async fn clear_cache_only_touches_the_cache(p: &dyn PathInvalidation) -> Outcome {
    p.clear_cache().await?;
    let keys = seed_cache(p).await?;
    let removed = p.clear_cache().await?;
    for key in &keys {
        expect_value(p, key, None).await?;
    }
    expect_value(p, "conf/not-cache", Some(b"v")).await?;
    if p.counts_exactly() {
        ensure!(
            removed == 4,
            "clear_cache reported {removed} removals, not 4"
        );
    }
    p.set(&keys[0], bytes("again"), TTL).await?;
    expect_value(p, &keys[0], Some(b"again")).await?;
    p.clear_cache().await?;
    fresh(p, &["conf/not-cache"]).await
}
