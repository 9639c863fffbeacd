//! Red-team round 17: tag (surrogate-key) invalidation.
//!
//! The first section held one failing test per bug found by a
//! fresh-context reviewer, all fixed: tags are read byte-wise (a non-ASCII
//! tag no longer hides its neighbours); tokens are invalidation times and
//! entries carry the time their run began, so a run that read its data
//! before an invalidation (on this instance or another, between its check
//! and its store) is never served after it; an invalid tag is a 400 on the
//! monitoring routes; tokens expire. The `// Passing checks` section holds
//! regression checks that passed from the start.
//!
//! Most tests run on the memory backend. The Redis ones start a private
//! redis-server and are skipped without `AXUM_CACHEX_REDIS_SERVER_BIN`:
//!
//! ```sh
//! AXUM_CACHEX_REDIS_SERVER_BIN=/usr/bin/redis-server \
//!   cargo test -p axum-cachex --all-features --test red_team_tags
//! ```
#![cfg(feature = "monitoring")]
#![allow(missing_docs)]

mod common;

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use axum::{
    Router,
    body::Body,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::IntoResponse,
    routing::get as route_get,
};
use axum_cachex::{
    CacheLayer, CacheLayerConfigError, ManualClock, Stale,
    backend::{Backend, BackendError, Listing, MemoryBackend},
    monitoring::{Guard, Monitoring},
};
use bytes::Bytes;
use common::http::{Counter, Reply, get, get_ok, send};
use http::Request;
use tokio::sync::{Notify, Semaphore};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn mem() -> Arc<dyn Backend> {
    Arc::new(MemoryBackend::new())
}

/// The data behind the handlers: a version an "update" bumps right before
/// it invalidates the tag.
#[derive(Clone, Default)]
struct Data(Arc<AtomicUsize>);

impl Data {
    fn read(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    fn update(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// `/item` answering `v{version}` with `Cache-Tag: {tags}` (raw bytes).
fn tagged_router(layer: CacheLayer, data: &Data, tags: &'static [u8]) -> Router {
    let data = data.clone();
    Router::new().route(
        "/item",
        route_get(move || {
            let v = data.read();
            async move {
                let mut res = format!("v{v}").into_response();
                res.headers_mut().insert(
                    HeaderName::from_static("cache-tag"),
                    HeaderValue::from_bytes(tags).expect("header value"),
                );
                res
            }
        })
        .layer(layer),
    )
}

fn body(r: &Reply) -> &str {
    std::str::from_utf8(&r.body).expect("utf-8 body")
}

// ===========================================================================
// Failing tests: one per bug
// ===========================================================================

/// BUG: a valid tag is silently dropped when it shares its header value with
/// a tag that is not visible ASCII, and the response is stored untagged.
///
/// `tags::response_tags` reads each `Cache-Tag` value with
/// `HeaderValue::to_str().ok()`: one non-ASCII byte anywhere in the value
/// (an obs-text tag such as `café`, which the docs say is merely
/// "ignored") throws away the *whole* value, so `product:42` is lost with
/// it. The response is then stored without any tag, and
/// `invalidate_tag("product:42")` returns `Ok(())` but leaves it served:
/// the invalidation is silently lost.
///
/// Expected: `product:42` is recorded (only the invalid tag is ignored), or,
/// when in doubt, the response is not stored. Instead: after the update and
/// the successful invalidation, the old `v0` is still a hit.
#[tokio::test]
async fn a_valid_tag_next_to_a_non_ascii_one_is_still_honoured() {
    let data = Data::default();
    let layer = CacheLayer::builder()
        .backend(mem())
        .ttl(secs(60))
        .build()
        .expect("layer");
    let app = tagged_router(layer.clone(), &data, "product:42 café".as_bytes());
    assert_eq!(body(&get_ok(&app, "/item").await), "v0");

    data.update();
    layer
        .invalidate_tag("product:42")
        .await
        .expect("invalidate_tag succeeds");

    let after = get_ok(&app, "/item").await;
    assert_eq!(
        body(&after),
        "v1",
        "invalidate_tag(\"product:42\") returned Ok but the response tagged \
         `product:42 café` is still served (Cache-Status: {})",
        after.cache_status()
    );
}

/// A memory backend that, the first time it is armed and the layer reads a
/// tag token with `get` (the store stamping a response), lets the
/// application "update its data and invalidate the tag" just before the
/// read goes through: the window between `Pending::store`'s last
/// `outdated()` check and `tags::stamp` reading the token.
struct InvalidatesWhileStamping {
    inner: MemoryBackend,
    armed: AtomicBool,
    data: Data,
    layer: OnceLock<CacheLayer>,
}

impl std::fmt::Debug for InvalidatesWhileStamping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InvalidatesWhileStamping")
    }
}

#[async_trait]
impl Backend for InvalidatesWhileStamping {
    fn name(&self) -> &'static str {
        "invalidates-while-stamping"
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        if key.starts_with("http:tag:") && self.armed.swap(false, Ordering::SeqCst) {
            // The application, on another task: new data, then the
            // invalidation of every response showing the old data.
            self.data.update();
            let layer = self.layer.get().expect("layer set");
            layer.invalidate_tag("product:42").await?;
        }
        self.inner.get(key).await
    }
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, BackendError>> {
        self.inner.get_now(key)
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
    fn listing(&self) -> Option<&dyn Listing> {
        self.inner.listing()
    }
}

/// BUG: an invalidation that lands while the store reads the tag's token
/// is lost, in the same process.
///
/// `invalidate_tag` documents "misses in flight in the process store nothing
/// they read before". `Pending::store` checks `outdated()` and then calls
/// `store::write`, which only then (`tags::stamped` → `current_or_new`)
/// reads the tag's token. An invalidation between the check and that read
/// bumps the process-wide counter (too late: nobody looks at it again) and
/// writes a new token, which the store then reads and stamps onto the
/// response it computed *before* the invalidation. The old response is
/// stored as current and served until its TTL. (The same holds for the
/// streaming store and the background refresh; `outdated()` is not checked
/// after the stamp.)
///
/// Expected: after the update and `invalidate_tag`, the next request gets
/// `v1`. Instead: `v0` is a hit.
#[tokio::test]
async fn an_invalidation_while_the_store_reads_the_token_is_not_lost() {
    let data = Data::default();
    let backend = Arc::new(InvalidatesWhileStamping {
        inner: MemoryBackend::new(),
        armed: AtomicBool::new(false),
        data: data.clone(),
        layer: OnceLock::new(),
    });
    let dyn_backend: Arc<dyn Backend> = backend.clone();
    let layer = CacheLayer::builder()
        .backend(dyn_backend)
        .ttl(secs(60))
        .build()
        .expect("layer");
    backend.layer.set(layer.clone()).expect("once");
    // The tag exists already (an earlier invalidation made its token).
    layer.invalidate_tag("product:42").await.expect("token");
    let app = tagged_router(layer.clone(), &data, b"product:42");

    backend.armed.store(true, Ordering::SeqCst);
    let first = get_ok(&app, "/item").await;
    assert_eq!(body(&first), "v0", "made before the update");
    assert!(
        !backend.armed.load(Ordering::SeqCst),
        "the store read the token (the invalidation ran)"
    );
    assert_eq!(data.read(), 1);

    let after = get_ok(&app, "/item").await;
    assert_eq!(
        body(&after),
        "v1",
        "the response read before invalidate_tag was stored with the new \
         token and is served after it (Cache-Status: {})",
        after.cache_status()
    );
}

/// BUG: the monitoring route answers an invalid tag with a 500 "backend"
/// error.
///
/// `POST /purge?tag=` with an empty tag, or one with `=`, `,`, a space
/// (`+`), non-ASCII or over 256 characters, is bad input from the caller.
/// `tags::invalidate` rejects it with `BackendError::InvalidInput`, and
/// `purge` maps every backend error that is not `Unsupported` or
/// unavailability to `500 Internal Server Error` with code `backend`, and
/// logs it as a failed backend call. An operator's script sees a server
/// fault (and may retry forever) instead of "your tag is invalid".
///
/// Expected: `400 Bad Request` with code `bad_request`. Instead: 500.
#[tokio::test]
async fn monitoring_purge_with_an_invalid_tag_is_a_bad_request() {
    let admin = Monitoring::new(Guard::insecure_allow_all())
        .backend(mem())
        .router::<()>("");
    let mut seen = Vec::new();
    for query in ["tag=", "tag=a%3Db", "tag=a%2Cb", "tag=a+b", "tag=caf%C3%A9"] {
        let req = Request::post(format!("/purge?{query}"))
            .body(Body::empty())
            .expect("request");
        let r = send(&admin, req).await;
        seen.push(format!(
            "{query} -> {} {}",
            r.status.as_u16(),
            String::from_utf8_lossy(&r.body)
        ));
    }
    for line in &seen {
        assert!(
            line.contains("-> 400 "),
            "every invalid tag is a 400: {seen:#?}"
        );
    }
}

/// Redis checks on a private server.
#[cfg(feature = "redis")]
mod on_redis {
    use super::*;
    use axum_cachex::backend::RedisConfig;
    use common::backend_redis::{RedisProcess, raw, redis_server_bin};

    fn client(url: &str, prefix: &str) -> Arc<dyn Backend> {
        Arc::new(
            RedisConfig::from_url(url.to_owned())
                .key_prefix(prefix.to_owned())
                .build()
                .expect("redis backend"),
        )
    }

    /// BUG: with the cross-instance lock, an `invalidate_tag` from another
    /// instance during a run is lost.
    ///
    /// The README: "a run under the cross-instance lock checks that its lock
    /// (which the invalidation deletes with the entry) is still its own
    /// before it stores", and tag invalidation "holds across instances". A
    /// tag invalidation deletes no lock (it does not know the keys) and the
    /// process-wide `Invalidations` counter of instance B is not A's, so
    /// A's run, which read the data before B updated and invalidated it,
    /// goes on to store: `tags::stamp` reads B's *new* token and stamps it
    /// onto the old response, which every instance then serves as current.
    ///
    /// Expected: after B's update and `invalidate_tag`, B gets `v1`.
    /// Instead: B gets A's `v0` as a hit.
    #[tokio::test]
    async fn invalidate_tag_on_another_instance_during_a_locked_run_is_not_lost() {
        let Some(bin) = redis_server_bin() else {
            return;
        };
        let server = RedisProcess::start(bin, &[]);
        let url = server.url();
        let prefix = common::unique_prefix("tags-x");
        let data = Data::default();
        let started = Arc::new(Notify::new());
        let gate = Arc::new(Semaphore::new(0));

        let layer = |be: Arc<dyn Backend>| {
            CacheLayer::builder()
                .backend(be)
                .ttl(secs(60))
                .cross_instance_lock(secs(10))
                .build()
                .expect("layer")
        };
        let layer_a = layer(client(&url, &prefix));
        let layer_b = layer(client(&url, &prefix));

        // Instance A: its handler reads the data, then is slow.
        let app_a = {
            let (data, started, gate) = (data.clone(), started.clone(), gate.clone());
            Router::new().route(
                "/item",
                route_get(move || {
                    let v = data.read();
                    let (started, gate) = (started.clone(), gate.clone());
                    async move {
                        started.notify_one();
                        let _permit = gate.acquire().await.expect("gate");
                        ([("cache-tag", "product:42")], format!("v{v}"))
                    }
                })
                .layer(layer_a),
            )
        };
        let app_b = tagged_router(layer_b.clone(), &data, b"product:42");

        let in_flight = tokio::spawn({
            let app_a = app_a.clone();
            async move { get_ok(&app_a, "/item").await }
        });
        started.notified().await;
        // Instance B: the update and its invalidation.
        data.update();
        layer_b
            .invalidate_tag("product:42")
            .await
            .expect("invalidate");
        gate.add_permits(1);
        let first = in_flight.await.expect("task");
        assert_eq!(body(&first), "v0", "A's response, made before the update");

        let after = get_ok(&app_b, "/item").await;
        assert_eq!(
            body(&after),
            "v1",
            "B invalidated product:42 after updating, yet A's older response \
             was stored and is served (Cache-Status: {}; A's was {})",
            after.cache_status(),
            first.cache_status()
        );
    }

    /// BUG: tag tokens never expire on Redis: one key per tag ever used,
    /// kept forever.
    ///
    /// `current_or_new` creates a token with `add(.., None)` and
    /// `invalidate` writes one with `set(.., None)`: no TTL, although a
    /// token is useless once every entry stamped with it has expired (and
    /// a lost token is safe: its entries become misses). Tags are typically
    /// per object (`product:{id}`, `user:{id}`), so the keys grow without
    /// bound while the responses come and go; on a Redis run with a
    /// `volatile-*` eviction policy (usual when a cache shares Redis with
    /// sessions) keys without a TTL are never evicted, and
    /// `POST /purge?tag=<anything>` adds one more per call.
    ///
    /// Expected: the token key of a tag whose only response had a 60 s TTL
    /// has a finite TTL. Instead: `PTTL` is -1.
    #[tokio::test]
    async fn tag_tokens_do_not_outlive_their_entries_forever() {
        let Some(bin) = redis_server_bin() else {
            return;
        };
        let server = RedisProcess::start(bin, &[]);
        let url = server.url();
        let prefix = common::unique_prefix("tags-ttl");
        let layer = CacheLayer::builder()
            .backend(client(&url, &prefix))
            .ttl(secs(60))
            .build()
            .expect("layer");
        let data = Data::default();
        let app = tagged_router(layer.clone(), &data, b"product:42");
        assert!(
            get_ok(&app, "/item")
                .await
                .cache_status()
                .contains("stored")
        );
        layer.invalidate_tag("product:7").await.expect("invalidate");

        let mut conn = raw(&url).await;
        for tag in ["product:42", "product:7"] {
            let key = format!("{prefix}http:tag:{tag}");
            let exists: bool = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("EXISTS");
            assert!(exists, "the token key is {key}");
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("PTTL");
            assert!(pttl > 0, "token {key} never expires (PTTL {pttl})");
        }
    }

    // Passing checks (Redis)

    /// Two instances (two clients, one server): a tag invalidated on one is
    /// unreachable on the other, and a new response is stored there.
    #[tokio::test]
    async fn invalidate_tag_holds_across_instances() {
        let Some(bin) = redis_server_bin() else {
            return;
        };
        let server = RedisProcess::start(bin, &[]);
        let url = server.url();
        let prefix = common::unique_prefix("tags-two");
        let data = Data::default();
        let layer_a = CacheLayer::builder()
            .backend(client(&url, &prefix))
            .ttl(secs(60))
            .build()
            .expect("layer");
        let layer_b = CacheLayer::builder()
            .backend(client(&url, &prefix))
            .ttl(secs(60))
            .build()
            .expect("layer");
        let app_a = tagged_router(layer_a, &data, b"product:42 list");
        let app_b = tagged_router(layer_b.clone(), &data, b"product:42 list");
        get_ok(&app_a, "/item").await;
        assert!(
            get_ok(&app_b, "/item")
                .await
                .cache_status()
                .starts_with("axum-cachex; hit")
        );
        data.update();
        layer_b.invalidate_tag("list").await.expect("invalidate");
        assert_eq!(body(&get_ok(&app_a, "/item").await), "v1");
        let again = get_ok(&app_b, "/item").await;
        assert_eq!(body(&again), "v1");
        assert!(
            again.cache_status().starts_with("axum-cachex; hit"),
            "{}",
            again.cache_status()
        );
    }
}

// ===========================================================================
// Passing checks
// ===========================================================================

/// Neither the handler's tag header nor the reserved stamp reaches a client,
/// on a miss, a hit, HEAD, a 304, an unsafe method, a `no_store` route and
/// a response the layer refuses to store.
#[tokio::test]
async fn tag_headers_never_reach_the_client() {
    let be = mem();
    let handler = || async {
        (
            [
                ("cache-tag", "product:42"),
                ("x-axum-cachex-tags", "product:42=0000000000000000"),
            ],
            "body",
        )
    };
    let refused = || async {
        (
            [
                ("cache-tag", "product:42"),
                ("x-axum-cachex-tags", "x=y"),
                ("cache-control", "no-store"),
            ],
            "body",
        )
    };
    let cached = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(secs(60))
        .build()
        .expect("layer");
    let no_store = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .no_store()
        .build()
        .expect("layer");
    let app = Router::new()
        .route("/c", route_get(handler).post(handler).layer(cached.clone()))
        .route("/refused", route_get(refused).layer(cached))
        .route("/n", route_get(handler).layer(no_store));
    let miss = get_ok(&app, "/c").await;
    let hit = get_ok(&app, "/c").await;
    assert!(
        hit.cache_status().starts_with("axum-cachex; hit"),
        "{}",
        hit.cache_status()
    );
    let etag = miss.header("etag").to_owned();
    let replies = vec![
        ("miss", miss),
        ("hit", hit),
        (
            "head",
            send(
                &app,
                get("/c").method("HEAD").body(Body::empty()).expect("req"),
            )
            .await,
        ),
        (
            "304",
            send(
                &app,
                get("/c")
                    .header(header::IF_NONE_MATCH, etag)
                    .body(Body::empty())
                    .expect("req"),
            )
            .await,
        ),
        (
            "post",
            send(
                &app,
                get("/c").method("POST").body(Body::empty()).expect("req"),
            )
            .await,
        ),
        ("no_store", get_ok(&app, "/n").await),
        ("refused", get_ok(&app, "/refused").await),
    ];
    for (what, r) in &replies {
        assert_eq!(r.header("cache-tag"), "", "{what}: {:?}", r.headers);
        assert_eq!(
            r.header("x-axum-cachex-tags"),
            "",
            "{what}: {:?}",
            r.headers
        );
    }
    assert_eq!(replies[3].1.status, StatusCode::NOT_MODIFIED);
}

/// Every response carrying a tag (several URLs, `Vary` variants) becomes a
/// miss; responses without it stay.
#[tokio::test]
async fn invalidate_tag_reaches_every_url_and_variant_and_nothing_else() {
    let data = Data::default();
    let layer = CacheLayer::builder()
        .backend(mem())
        .ttl(secs(60))
        .build()
        .expect("layer");
    let route = |tags: &'static str| {
        let data = data.clone();
        route_get(move || {
            let v = data.read();
            async move {
                (
                    [("cache-tag", tags), ("vary", "accept-language")],
                    format!("v{v}"),
                )
            }
        })
    };
    let app = Router::new()
        .route("/a", route("product:42, list"))
        .route("/b", route("list"))
        .route("/other", route("product:7"))
        .layer(layer.clone());
    let lang = |uri: &str, l: &str| {
        get(uri)
            .header("accept-language", l.to_owned())
            .body(Body::empty())
            .expect("req")
    };
    for uri in ["/a", "/b", "/other"] {
        for l in ["en", "fr"] {
            send(&app, lang(uri, l)).await;
        }
    }
    data.update();
    layer.invalidate_tag("list").await.expect("invalidate");
    for uri in ["/a", "/b"] {
        for l in ["en", "fr"] {
            assert_eq!(body(&send(&app, lang(uri, l)).await), "v1", "{uri} {l}");
        }
    }
    for l in ["en", "fr"] {
        let r = send(&app, lang("/other", l)).await;
        assert_eq!(body(&r), "v0", "untagged-by-list stays: {l}");
    }
}

/// A handler that plants the reserved stamp cannot get it stored: the
/// entry is untagged and served (a planted stamp would make it a miss).
#[tokio::test]
async fn a_planted_stamp_is_not_stored() {
    let c = Counter::default();
    let layer = CacheLayer::builder()
        .backend(mem())
        .ttl(secs(60))
        .build()
        .expect("layer");
    let cc = c.clone();
    let app = Router::new().route(
        "/p",
        route_get(move || {
            cc.hit();
            async { ([("x-axum-cachex-tags", "product:42=0123456789abcdef")], "p") }
        })
        .layer(layer),
    );
    get_ok(&app, "/p").await;
    let r = get_ok(&app, "/p").await;
    assert!(
        r.cache_status().starts_with("axum-cachex; hit"),
        "{}",
        r.cache_status()
    );
    assert_eq!(c.get(), 1);
}

/// Bad tags get a clear error from `invalidate_tag` and from the builder;
/// `*` is an ordinary tag, not a wildcard.
#[tokio::test]
async fn bad_tags_are_refused_clearly() {
    let be = mem();
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(secs(60))
        .build()
        .expect("layer");
    let long = "x".repeat(axum_cachex::MAX_TAG_LEN + 1);
    for bad in ["", "a b", "a,b", "a=b", "café", "a\tb", long.as_str()] {
        match layer.invalidate_tag(bad).await {
            Err(BackendError::InvalidInput(message)) => {
                assert!(message.contains("tag"), "{message}")
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    layer
        .invalidate_tag(&"x".repeat(axum_cachex::MAX_TAG_LEN))
        .await
        .expect("the longest tag");
    let built = CacheLayer::builder()
        .backend(be)
        .ttl(secs(60))
        .tags(["ok", "bad=tag"])
        .build();
    assert!(
        matches!(built, Err(CacheLayerConfigError::InvalidTag(ref t)) if t == "bad=tag"),
        "{built:?}"
    );

    let data = Data::default();
    let app = tagged_router(layer.clone(), &data, b"product:42");
    get_ok(&app, "/item").await;
    data.update();
    layer.invalidate_tag("*").await.expect("`*` is a tag");
    assert_eq!(
        body(&get_ok(&app, "/item").await),
        "v0",
        "`*` is no wildcard"
    );
}

/// Neither stale-if-error nor stale-while-revalidate serves an invalidated
/// entry.
#[tokio::test]
async fn stale_windows_never_serve_an_invalidated_entry() {
    for mode in [Stale::Error, Stale::Revalidate] {
        let clock = ManualClock::new();
        let layer = CacheLayer::builder()
            .backend(mem())
            .ttl(secs(10))
            .stale_ttl(secs(60))
            .stale(mode)
            .clock(clock.clock())
            .build()
            .expect("layer");
        let c = Counter::default();
        let cc = c.clone();
        let app = Router::new().route(
            "/s",
            route_get(move || {
                let n = cc.hit();
                async move {
                    if n == 1 {
                        ([("cache-tag", "product:42")], "old".to_owned()).into_response()
                    } else {
                        (StatusCode::INTERNAL_SERVER_ERROR, format!("error {n}")).into_response()
                    }
                }
            })
            .layer(layer.clone()),
        );
        get_ok(&app, "/s").await;
        clock.advance(secs(15));
        layer
            .invalidate_tag("product:42")
            .await
            .expect("invalidate");
        let r = get_ok(&app, "/s").await;
        assert_eq!(
            r.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{mode:?}: {}",
            body(&r)
        );
        assert_eq!(c.get(), 2, "{mode:?}");
    }
}

/// `Surrogate-Key` configured: its tags count, it is stripped, and
/// `Cache-Tag` is then an ordinary header.
#[tokio::test]
async fn surrogate_key_configured() {
    let data = Data::default();
    let layer = CacheLayer::builder()
        .backend(mem())
        .ttl(secs(60))
        .tag_header(HeaderName::from_static("surrogate-key"))
        .build()
        .expect("layer");
    let d = data.clone();
    let app = Router::new().route(
        "/k",
        route_get(move || {
            let v = d.read();
            async move {
                (
                    [("surrogate-key", "product:42 list"), ("cache-tag", "other")],
                    format!("v{v}"),
                )
            }
        })
        .layer(layer.clone()),
    );
    let first = get_ok(&app, "/k").await;
    assert_eq!(first.header("surrogate-key"), "");
    assert_eq!(first.header("cache-tag"), "other");
    data.update();
    layer.invalidate_tag("other").await.expect("invalidate");
    assert_eq!(body(&get_ok(&app, "/k").await), "v0", "not a tag here");
    layer.invalidate_tag("list").await.expect("invalidate");
    assert_eq!(body(&get_ok(&app, "/k").await), "v1");
}

/// The layer's own tags, and `clear()` removing the tokens.
#[tokio::test]
async fn own_tags_and_clear() {
    let be = mem();
    let data = Data::default();
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(secs(60))
        .tags(["site"])
        .build()
        .expect("layer");
    let d = data.clone();
    let app = Router::new().route(
        "/o",
        route_get(move || {
            let v = d.read();
            async move { format!("v{v}") }
        })
        .layer(layer.clone()),
    );
    get_ok(&app, "/o").await;
    data.update();
    layer.invalidate_tag("site").await.expect("invalidate");
    assert_eq!(body(&get_ok(&app, "/o").await), "v1");
    layer.clear().await.expect("clear");
    let left = be
        .listing()
        .expect("listing")
        .keys("http:")
        .await
        .expect("keys");
    assert!(left.is_empty(), "{left:?}");
}

/// A tag invalidated while the handler runs (same process): the response
/// is neither stored nor shared with a waiter.
#[tokio::test]
async fn an_invalidation_during_the_handler_run_is_honoured() {
    let data = Data::default();
    let started = Arc::new(Notify::new());
    let gate = Arc::new(Semaphore::new(0));
    let layer = CacheLayer::builder()
        .backend(mem())
        .ttl(secs(60))
        .build()
        .expect("layer");
    let (d, s, g) = (data.clone(), started.clone(), gate.clone());
    let runs = Counter::default();
    let r2 = runs.clone();
    let app = Router::new().route(
        "/i",
        route_get(move || {
            let v = d.read();
            let n = r2.hit();
            let (s, g) = (s.clone(), g.clone());
            async move {
                if n == 1 {
                    s.notify_one();
                    let _p = g.acquire().await.expect("gate");
                }
                ([("cache-tag", "product:42")], format!("v{v}"))
            }
        })
        .layer(layer.clone()),
    );
    let first = tokio::spawn({
        let app = app.clone();
        async move { get_ok(&app, "/i").await }
    });
    started.notified().await;
    data.update();
    layer
        .invalidate_tag("product:42")
        .await
        .expect("invalidate");
    gate.add_permits(1);
    assert_eq!(body(&first.await.expect("task")), "v0");
    assert_eq!(body(&get_ok(&app, "/i").await), "v1");
}

/// The monitoring route invalidates by tag, and says it cannot count.
#[tokio::test]
async fn monitoring_purge_by_tag() {
    let be = mem();
    let data = Data::default();
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(secs(60))
        .build()
        .expect("layer");
    let app = tagged_router(layer, &data, b"product:42");
    let admin = Monitoring::new(Guard::insecure_allow_all())
        .backend(be)
        .router::<()>("");
    get_ok(&app, "/item").await;
    data.update();
    let r = send(
        &admin,
        Request::post("/purge?tag=product%3A42")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(json["exact_count"], false, "{json}");
    assert_eq!(body(&get_ok(&app, "/item").await), "v1");
}
