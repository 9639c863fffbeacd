//! Red-team round 19: the hit path (decoded records in the memory backend,
//! the layer's fresh-hit path, Memcached one-round-trip hits).
//!
//! Written by a fresh-context reviewer from the issue and the code. Every
//! test asserts the correct behaviour. Those marked "REGRESSION GUARD"
//! passed on the code under review; the others failed because of a bug,
//! since fixed (headers presized within `HeaderMap`'s limit; decoded
//! records charged per header value and custom name).

mod common;

use std::{sync::Arc, time::Duration};

use axum::{Router, body::Body, routing::get as route_get};
use axum_cachex::{
    CacheEntry, CacheLayer, CacheRecord,
    backend::{Backend, MemoryBackend},
};
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};

use common::http::{Counter, send};

const TTL: Option<Duration> = Some(Duration::from_secs(600));

/// A router whose `/r` counts its runs and answers `body #n`.
fn app(layer: CacheLayer, counter: &Counter) -> Router {
    let c = counter.clone();
    Router::new().route(
        "/r",
        route_get(move || {
            let c = c.clone();
            async move { format!("body #{}", c.hit()) }
        })
        .layer(layer),
    )
}

fn get_r() -> Request<Body> {
    Request::get("/r")
        .header("host", "example.com")
        .body(Body::empty())
        .expect("request")
}

/// The key the layer uses for `GET /r`.
fn key_of(layer: &CacheLayer) -> String {
    layer.cache_key(&get_r()).expect("cacheable")
}

/// Reads the stored entry under `key`, lets `edit` change it, writes it
/// back: what anyone who can write to the store can do.
async fn plant(be: &Arc<dyn Backend>, key: &str, edit: impl FnOnce(&mut CacheEntry)) {
    let bytes = be.get(key).await.expect("get").expect("stored entry");
    let CacheRecord::Response(mut entry) = CacheRecord::decode(bytes).expect("record") else {
        panic!("a response record");
    };
    edit(&mut entry);
    be.set(key, CacheRecord::Response(entry).encode(), TTL)
        .await
        .expect("set");
}

/// Sends `req` on its own task: `Err` when answering it panicked.
async fn send_catching(app: &Router, req: Request<Body>) -> Result<common::http::Reply, String> {
    let app = app.clone();
    tokio::spawn(async move { send(&app, req).await })
        .await
        .map_err(|e| format!("the request panicked: {e}"))
}

/// Many values of one header: a valid record (every header lawful, the
/// status servable) that is only unusual in size.
fn add_repeated_header(entry: &mut CacheEntry, values: usize) {
    for _ in 0..values {
        entry.headers.append("x-a", HeaderValue::from_static("1"));
    }
}

// ---------------------------------------------------------------------------
// Layer: `from_entry` sizes its map from the entry's header count.
// ---------------------------------------------------------------------------

/// BUG: `response::from_entry` builds the answer with
/// `HeaderMap::with_capacity(entry.headers.len() + 5)`, which panics once
/// that exceeds http's table limit (about 24 572). `len()` counts values,
/// and a stored record may carry up to 65 535 of them (repeated names are
/// not bounded by the table), so a planted record crashes every request
/// for its URL on the fast path. Before the change the entry's own map
/// was moved into the response: no panic.
#[tokio::test]
async fn planted_record_with_many_header_values_does_not_panic_the_fast_path() {
    let mem = MemoryBackend::new();
    let be: Arc<dyn Backend> = Arc::new(mem);
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(Duration::from_secs(600))
        .build()
        .expect("layer");
    let key = key_of(&layer);
    let c = Counter::default();
    let app = app(layer, &c);
    let first = send(&app, get_r()).await;
    assert_eq!(first.status, StatusCode::OK);
    plant(&be, &key, |e| add_repeated_header(e, 30_000)).await;
    let reply = send_catching(&app, get_r()).await;
    let reply = reply.expect("a planted record must be a miss or a hit, never a panic");
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.starts_with(b"body #"));
}

// ---------------------------------------------------------------------------
// Memory backend: the byte bound and decoded records.
// ---------------------------------------------------------------------------

/// An encoded response record with `values` empty values of header `a`:
/// 7 encoded bytes per value.
fn many_values_record(values: usize) -> Bytes {
    let mut headers = http::HeaderMap::new();
    for _ in 0..values {
        headers.append("a", HeaderValue::from_static(""));
    }
    CacheRecord::Response(CacheEntry {
        status: StatusCode::OK,
        headers,
        body: Bytes::new(),
        etag: HeaderValue::from_static("\"e\""),
        stored_at: std::time::SystemTime::now(),
        fresh_for: Duration::from_secs(600),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        vary_key: Bytes::new(),
    })
    .encode()
}

/// BUG: `Stored::weight` charges a decoded record by its header table's
/// capacity (`HeaderMap::capacity() * 128`), but values of a repeated
/// name live outside the table (http's `extra_values`, 72 bytes each
/// against 7 encoded bytes). The decoded records the backend keeps then
/// hold several times `max_capacity`: here, at least the `HeaderValue`s
/// alone (40 bytes each, a strict lower bound of what they cost) of the
/// records the backend still hands out exceed the bound.
#[tokio::test]
async fn decoded_records_stay_within_the_byte_bound() {
    const BOUND: u64 = 8 * 1024 * 1024;
    const VALUES: usize = 65_535;
    let mem = MemoryBackend::builder()
        .max_capacity(BOUND)
        .build()
        .expect("backend");
    let rss_before = rss_bytes();
    for i in 0..20 {
        mem.set(&format!("http:k{i}"), many_values_record(VALUES), TTL)
            .await
            .expect("set");
    }
    let charged = mem.weighted_size();
    assert!(charged <= BOUND, "moka's own accounting: {charged}");
    let mut kept = 0u64;
    let mut held = 0u64;
    for i in 0..20 {
        if let Some(Ok(Some(record))) = mem.get_record_now(&format!("http:k{i}")) {
            let CacheRecord::Response(entry) = &*record else {
                panic!("a response");
            };
            kept += 1;
            held += (entry.headers.len() * std::mem::size_of::<HeaderValue>()) as u64;
        }
    }
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    assert!(
        held <= BOUND,
        "{kept} decoded records kept under a {BOUND}-byte bound (charged {charged}) hold \
         {held} bytes of header values alone; the process grew by {rss_growth} bytes"
    );
}

/// Resident set size of this process (Linux), 0 when unknown.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

// ---------------------------------------------------------------------------
// Memcached: the same planted record, on the full (network) lookup path.
// ---------------------------------------------------------------------------

/// BUG (same root as the fast-path test): the full lookup path answers a
/// stored entry through the same `from_entry`, so on Memcached (a store
/// other processes write to) the planted record crashes the request too.
#[cfg(feature = "memcached")]
#[tokio::test]
async fn planted_record_with_many_header_values_does_not_panic_on_memcached() {
    let Some(servers) = common::memcached_servers() else {
        return;
    };
    let be: Arc<dyn Backend> = Arc::new(
        axum_cachex::backend::MemcachedBackend::builder()
            .servers(servers)
            .key_prefix(common::unique_prefix("rt19p"))
            .build()
            .expect("config"),
    );
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(Duration::from_secs(600))
        .build()
        .expect("layer");
    let key = key_of(&layer);
    let c = Counter::default();
    let app = app(layer, &c);
    assert_eq!(send(&app, get_r()).await.status, StatusCode::OK);
    plant(&be, &key, |e| add_repeated_header(e, 30_000)).await;
    let reply = send_catching(&app, get_r()).await;
    let reply = reply.expect("a planted record must be a miss or a hit, never a panic");
    assert_eq!(reply.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------
// Memcached one-round-trip reads: REGRESSION GUARDS (they pass).
// ---------------------------------------------------------------------------

#[cfg(feature = "memcached")]
mod memcached {
    use super::*;
    use axum_cachex::{
        CacheKey,
        backend::{MemcachedBackend, PathInvalidation},
    };
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    fn pair() -> Option<(MemcachedBackend, MemcachedBackend, String)> {
        let servers = common::memcached_servers()?;
        let prefix = common::unique_prefix("rt19");
        let make = || {
            MemcachedBackend::builder()
                .servers(servers.clone())
                .key_prefix(prefix.clone())
                .build()
                .expect("config")
        };
        Some((make(), make(), prefix))
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    async fn raw_delete(addr: &str, key: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(format!("delete {key}\r\n").as_bytes())
            .await
            .expect("write");
        let mut reply = Vec::new();
        let mut buf = [0u8; 256];
        while !reply.ends_with(b"\r\n") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed");
            reply.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&reply).into_owned()
    }

    /// REGRESSION GUARD: a clear by another instance is seen at once by a
    /// reader whose hints are warm (exact path, path with params, whole
    /// cache), and a write after it is read back, not the old entry.
    #[tokio::test]
    async fn clears_by_another_instance_beat_warm_hints() {
        let Some((a, other, _)) = pair() else { return };
        let plain = CacheKey::encode_stored("GET", "example.com", "/r", "");
        let query = CacheKey::encode_stored("GET", "example.com", "/r", "x=1");
        for (clear, key) in [(0, &plain), (1, &query), (2, &plain), (2, &query)] {
            a.set(key, b("old"), TTL).await.expect("set");
            for _ in 0..3 {
                assert_eq!(a.get(key).await.expect("get"), Some(b("old")));
            }
            match clear {
                0 => other.clear_path("/r", false).await.map(drop),
                1 => other.clear_path("/r", true).await.map(drop),
                _ => other.clear_cache().await.map(drop),
            }
            .expect("clear");
            assert_eq!(a.get(key).await.expect("get"), None, "clear {clear} {key}");
            other.set(key, b("new"), TTL).await.expect("set");
            assert_eq!(a.get(key).await.expect("get"), Some(b("new")));
        }
    }

    /// REGRESSION GUARD: a counter that vanishes (evicted, deleted) makes
    /// the entries written under it unreachable for an instance whose hint
    /// still names them, and a hint map that starts over changes nothing.
    #[tokio::test]
    async fn vanished_counters_and_hint_overflow_never_bring_back_old_entries() {
        let Some((a, other, prefix)) = pair() else {
            return;
        };
        let key = CacheKey::encode_stored("GET", "example.com", "/v", "");
        let addr = a.server_for_key(&key).to_owned();
        a.set(&key, b("old"), TTL).await.expect("set");
        assert_eq!(a.get(&key).await.expect("get"), Some(b("old")));
        raw_delete(&addr, &format!("{prefix}@p:/v")).await;
        assert_eq!(a.get(&key).await.expect("get"), None);
        other.set(&key, b("new"), TTL).await.expect("set");
        assert_eq!(a.get(&key).await.expect("get"), Some(b("new")));
        raw_delete(&addr, &format!("{prefix}@g")).await;
        assert_eq!(a.get(&key).await.expect("get"), None);
        // Overflow the hint map (4096 counters) between a read and a clear.
        a.set(&key, b("again"), TTL).await.expect("set");
        assert_eq!(a.get(&key).await.expect("get"), Some(b("again")));
        for i in 0..4200 {
            let k = CacheKey::encode_stored("GET", "example.com", &format!("/o{i}"), "");
            if a.server_for_key(&k) == addr {
                let _ = a.get(&k).await.expect("get");
            }
        }
        other.clear_path("/v", false).await.expect("clear");
        assert_eq!(a.get(&key).await.expect("get"), None);
    }
}

// ---------------------------------------------------------------------------
// Layer: fast path against full path, side by side. REGRESSION GUARD.
// ---------------------------------------------------------------------------

mod differential {
    use super::*;
    use async_trait::async_trait;
    use axum::response::IntoResponse;
    use axum_cachex::{
        ManualClock,
        backend::{BackendError, CompareAndSwap, Listing},
    };
    use http::{HeaderMap, HeaderName, header};

    /// A memory backend without `get_now`/`get_record_now`: every lookup
    /// takes the full (async) path.
    #[derive(Debug)]
    struct Slow(MemoryBackend);

    #[async_trait]
    impl Backend for Slow {
        fn name(&self) -> &'static str {
            "slow-memory"
        }
        async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
            self.0.get(key).await
        }
        async fn set(
            &self,
            key: &str,
            value: Bytes,
            ttl: Option<Duration>,
        ) -> Result<(), BackendError> {
            self.0.set(key, value, ttl).await
        }
        async fn add(
            &self,
            key: &str,
            value: Bytes,
            ttl: Option<Duration>,
        ) -> Result<bool, BackendError> {
            self.0.add(key, value, ttl).await
        }
        async fn replace(
            &self,
            key: &str,
            value: Bytes,
            ttl: Option<Duration>,
        ) -> Result<bool, BackendError> {
            self.0.replace(key, value, ttl).await
        }
        async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
            self.0.take(key).await
        }
        async fn delete(&self, key: &str) -> Result<bool, BackendError> {
            self.0.delete(key).await
        }
        fn listing(&self) -> Option<&dyn Listing> {
            self.0.listing()
        }
        fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
            self.0.compare_and_swap()
        }
    }

    fn respond(path: &str, req: &HeaderMap, n: usize) -> axum::response::Response {
        let lang = req
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let body = format!("{path} {lang} #{n}");
        let mut headers = HeaderMap::new();
        let mut status = StatusCode::OK;
        match path {
            "/tagged" => {
                headers.insert("cache-tag", HeaderValue::from_static("a b"));
            }
            "/custom" => {
                headers.insert("x-surrogate", HeaderValue::from_static("c"));
                headers.insert("cache-tag", HeaderValue::from_static("not-ours"));
            }
            "/expires" => {
                headers.insert(
                    header::EXPIRES,
                    HeaderValue::from_static("Thu, 01 Jan 2099 00:00:00 GMT"),
                );
            }
            "/own-cc" => {
                headers.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=30"),
                );
            }
            "/vary" => {
                headers.insert(header::VARY, HeaderValue::from_static("accept-language"));
            }
            "/lm" => {
                headers.insert(
                    header::LAST_MODIFIED,
                    HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
                );
            }
            "/empty" => status = StatusCode::NO_CONTENT,
            _ => {}
        }
        let body = if status == StatusCode::NO_CONTENT {
            String::new()
        } else {
            body
        };
        (status, headers, body).into_response()
    }

    const PATHS: [&str; 8] = [
        "/plain", "/tagged", "/custom", "/expires", "/own-cc", "/vary", "/lm", "/empty",
    ];

    fn router(be: Arc<dyn Backend>, clock: &ManualClock, counter: &Counter) -> Router {
        let mut router = Router::new();
        for path in PATHS {
            let c = counter.clone();
            let mut builder = CacheLayer::builder()
                .backend(Arc::clone(&be))
                .ttl(Duration::from_secs(60))
                .clock(clock.clock());
            if path == "/custom" {
                builder = builder.tag_header(HeaderName::from_static("x-surrogate"));
            }
            let layer = builder.build().expect("layer");
            router = router.route(
                path,
                route_get(move |headers: HeaderMap| {
                    let c = c.clone();
                    async move { respond(path, &headers, c.hit()) }
                })
                .layer(layer),
            );
        }
        router
    }

    fn requests(path: &str, etag: &str) -> Vec<Request<Body>> {
        let build = |method: &str, uri: String, host: &str, extra: &[(&str, &str)]| {
            let mut b = Request::builder()
                .method(method)
                .uri(uri)
                .header("host", host);
            for (n, v) in extra {
                b = b.header(*n, *v);
            }
            b.body(Body::empty()).expect("request")
        };
        let p = path.to_owned();
        vec![
            build("GET", p.clone(), "example.com", &[]),
            build("HEAD", p.clone(), "example.com", &[]),
            build("GET", p.clone(), "example.com", &[("if-none-match", etag)]),
            build("HEAD", p.clone(), "example.com", &[("if-none-match", etag)]),
            build(
                "GET",
                p.clone(),
                "example.com",
                &[("if-modified-since", "Thu, 22 Oct 2015 00:00:00 GMT")],
            ),
            build(
                "GET",
                p.clone(),
                "example.com",
                &[("accept-language", "fr")],
            ),
            build(
                "GET",
                p.clone(),
                "example.com",
                &[("accept-language", "fr")],
            ),
            build("GET", p.clone(), "EXAMPLE.com", &[]),
            build("GET", p.clone(), "example.com:8080", &[]),
            build("GET", format!("http://example.com{p}"), "example.com", &[]),
            build("GET", p.clone(), "[::1]:80", &[]),
            build("GET", p, "example.com", &[]),
        ]
    }

    fn sorted(headers: &HeaderMap) -> Vec<(String, String)> {
        let mut all: Vec<_> = headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        all.sort();
        all
    }

    /// REGRESSION GUARD: for stored responses with tags (default and
    /// custom tag header), Expires only, their own Cache-Control, Vary,
    /// Last-Modified and 204, every request shape (GET, HEAD, 304s,
    /// variants, host spellings, absolute form) gets byte-identical
    /// answers from the fast path and from the full path, and no tag field
    /// ever reaches the client.
    #[tokio::test]
    async fn fast_and_full_paths_answer_alike() {
        let clock = ManualClock::new();
        let (cf, cs) = (Counter::default(), Counter::default());
        let fast = router(Arc::new(MemoryBackend::new()), &clock, &cf);
        let slow = router(Arc::new(Slow(MemoryBackend::new())), &clock, &cs);
        let mut fast_hits = 0;
        for path in PATHS {
            let warm_f = send(&fast, requests(path, "")[0].clone_for_test()).await;
            let warm_s = send(&slow, requests(path, "")[0].clone_for_test()).await;
            assert_eq!(
                sorted(&warm_f.headers),
                sorted(&warm_s.headers),
                "{path} miss"
            );
            let etag = warm_f.header("etag").to_owned();
            for (i, (rf, rs)) in requests(path, &etag)
                .into_iter()
                .zip(requests(path, &etag))
                .enumerate()
            {
                let f = send(&fast, rf).await;
                let s = send(&slow, rs).await;
                let what = format!("{path} request {i}");
                assert_eq!(f.status, s.status, "{what}");
                assert_eq!(sorted(&f.headers), sorted(&s.headers), "{what}");
                assert_eq!(f.body, s.body, "{what}");
                let tag = if path == "/custom" {
                    "x-surrogate"
                } else {
                    "cache-tag"
                };
                for name in [tag, "x-axum-cachex-tags"] {
                    assert!(f.headers.get(name).is_none(), "{what}: {name} leaked");
                }
                fast_hits += usize::from(f.cache_status().contains("hit"));
            }
        }
        assert_eq!(cf.get(), cs.get(), "handler runs differ");
        assert!(
            fast_hits > 40,
            "the fast path was not exercised: {fast_hits}"
        );
    }

    /// REGRESSION GUARD: crafted records planted in the store (cookies,
    /// framing and cache-written fields, statuses a cache may not serve,
    /// a `Vary` that does not select, stamps current or not, tag fields,
    /// non-records) get the same answer from both paths.
    #[tokio::test]
    async fn planted_records_get_the_same_answer_on_both_paths() {
        type Edit = fn(&mut CacheEntry);
        let edits: Vec<(&str, Edit)> = vec![
            ("cookie", |e| {
                e.headers
                    .append(header::SET_COOKIE, HeaderValue::from_static("s=1"));
            }),
            ("framing", |e| {
                e.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
                e.headers
                    .insert(header::AGE, HeaderValue::from_static("77"));
                e.headers
                    .insert("cache-status", HeaderValue::from_static("planted"));
                e.headers
                    .insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
                e.headers.insert("x-hop", HeaderValue::from_static("1"));
            }),
            ("206", |e| e.status = StatusCode::PARTIAL_CONTENT),
            ("304", |e| e.status = StatusCode::NOT_MODIFIED),
            ("vary-key", |e| {
                e.vary_key = Bytes::from_static(b"0123456789abcdef")
            }),
            ("vary-header", |e| {
                e.headers
                    .insert(header::VARY, HeaderValue::from_static("accept-language"));
            }),
            ("stamp-now", |e| {
                e.headers.insert(
                    "x-axum-cachex-tags",
                    HeaderValue::from_static("18446744073709551615 t"),
                );
            }),
            ("stamp-bad", |e| {
                e.headers
                    .insert("x-axum-cachex-tags", HeaderValue::from_static("x"));
            }),
            ("tag-fields", |e| {
                e.headers.insert("cache-tag", HeaderValue::from_static("a"));
                e.headers.append("cache-tag", HeaderValue::from_static("b"));
            }),
            ("expires-and-etags", |e| {
                e.headers.insert(
                    header::EXPIRES,
                    HeaderValue::from_static("Thu, 01 Jan 2099 00:00:00 GMT"),
                );
                e.headers
                    .append(header::ETAG, HeaderValue::from_static("\"x\""));
                e.headers
                    .append(header::ETAG, HeaderValue::from_static("\"y\""));
            }),
            ("private", |e| {
                e.headers
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
            }),
        ];
        for (name, edit) in edits {
            let clock = ManualClock::new();
            let (cf, cs) = (Counter::default(), Counter::default());
            let mf: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
            let ms = MemoryBackend::new();
            let slow_be: Arc<dyn Backend> = Arc::new(Slow(ms.clone()));
            let fast = router(Arc::clone(&mf), &clock, &cf);
            let slow = router(Arc::clone(&slow_be), &clock, &cs);
            let warm = send(&fast, requests("/plain", "")[0].clone_for_test()).await;
            send(&slow, requests("/plain", "")[0].clone_for_test()).await;
            // A token for tag `t`, as an invalidation long ago would leave.
            for be in [&mf, &slow_be] {
                be.set("http:tag:t", Bytes::from_static(b"5"), TTL)
                    .await
                    .expect("set");
            }
            let key = ms
                .keys("")
                .await
                .expect("keys")
                .into_iter()
                .find(|k| k.contains("/plain"));
            let key = key.expect("stored key");
            plant(&mf, &key, edit).await;
            plant(&slow_be, &key, edit).await;
            let etag = warm.header("etag").to_owned();
            for (i, (rf, rs)) in requests("/plain", &etag)
                .into_iter()
                .zip(requests("/plain", &etag))
                .enumerate()
            {
                let f = send(&fast, rf).await;
                let s = send(&slow, rs).await;
                let what = format!("{name} request {i}");
                assert_eq!(f.status, s.status, "{what}");
                assert_eq!(sorted(&f.headers), sorted(&s.headers), "{what}");
                assert_eq!(f.body, s.body, "{what}");
                for field in ["set-cookie", "cache-tag", "x-axum-cachex-tags"] {
                    assert!(f.headers.get(field).is_none(), "{what}: {field} served");
                }
            }
            assert_eq!(cf.get(), cs.get(), "{name}: handler runs differ");
        }
        // Not a record at all.
        let mf: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let c = Counter::default();
        let fast = router(Arc::clone(&mf), &ManualClock::new(), &c);
        send(&fast, requests("/plain", "")[0].clone_for_test()).await;
        let key = mf.listing().expect("listing").keys("").await.expect("keys");
        for k in key {
            mf.set(&k, Bytes::from_static(b"ACXE\x02\x01garbage"), TTL)
                .await
                .expect("set");
        }
        let r = send(&fast, requests("/plain", "")[0].clone_for_test()).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(c.get(), 2, "a planted non-record must be a miss");
    }

    trait CloneForTest {
        fn clone_for_test(&self) -> Request<Body>;
    }

    impl CloneForTest for Request<Body> {
        fn clone_for_test(&self) -> Request<Body> {
            let mut b = Request::builder()
                .method(self.method().clone())
                .uri(self.uri().clone());
            for (n, v) in self.headers() {
                b = b.header(n, v);
            }
            b.body(Body::empty()).expect("request")
        }
    }
}

// ---------------------------------------------------------------------------
// Redis memory tier: decoded hits follow invalidations. REGRESSION GUARD.
// ---------------------------------------------------------------------------

#[cfg(feature = "redis")]
mod redis_tier {
    use super::*;
    use axum_cachex::backend::{MemoryTier, RedisConfig};

    const STALENESS: Duration = Duration::from_millis(200);

    fn tiered(url: &str, prefix: &str) -> Arc<dyn Backend> {
        Arc::new(
            RedisConfig::from_url(url.to_owned())
                .key_prefix(prefix.to_owned())
                .memory_tier(MemoryTier::new(8 << 20).max_staleness(STALENESS))
                .build()
                .expect("redis backend"),
        )
    }

    /// Waits until `be` answers `key` from its tier, decoded.
    async fn wait_decoded(be: &Arc<dyn Backend>, key: &str) -> bool {
        for _ in 0..200 {
            let _ = be.get(key).await;
            if matches!(be.get_record_now(key), Some(Ok(Some(_)))) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// REGRESSION GUARD: an instance serving a fresh hit from its tier's
    /// decoded record stops within `max_staleness` after another instance
    /// deletes the entry, clears its path, or invalidates its tag.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tier_hits_follow_other_instances_invalidations() {
        let Some(url) = common::redis_url() else {
            return;
        };
        for how in ["delete", "clear_path", "tag"] {
            let prefix = common::unique_prefix("rt19t");
            let (a, b) = (tiered(&url, &prefix), tiered(&url, &prefix));
            let layer_a = CacheLayer::builder()
                .backend(Arc::clone(&a))
                .ttl(Duration::from_secs(600))
                .tags(["t"])
                .build()
                .expect("layer");
            let layer_b = CacheLayer::builder()
                .backend(Arc::clone(&b))
                .ttl(Duration::from_secs(600))
                .tags(["t"])
                .build()
                .expect("layer");
            let key = key_of(&layer_a);
            let c = Counter::default();
            let app_a = app(layer_a, &c);
            assert_eq!(send(&app_a, get_r()).await.body, "body #1");
            assert!(
                wait_decoded(&a, &key).await,
                "{how}: never served from the tier"
            );
            let _ = a.get("http:tag:t").await;
            let hit = send(&app_a, get_r()).await;
            assert!(
                hit.cache_status().contains("hit"),
                "{how}: {}",
                hit.cache_status()
            );
            match how {
                "delete" => drop(layer_b.delete(&key).await.expect("delete")),
                "clear_path" => drop(layer_b.clear_path("/r", true).await.expect("clear")),
                _ => layer_b.invalidate_tag("t").await.expect("tag"),
            }
            tokio::time::sleep(STALENESS + Duration::from_millis(50)).await;
            let after = send(&app_a, get_r()).await;
            assert_eq!(after.body, "body #2", "{how}: {}", after.cache_status());
        }
    }
}
