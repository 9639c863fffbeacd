//! The Redis backend with its in-process memory tier: the conformance
//! suite, and two "instances" (two backends with their own tiers and
//! connections on the same server) where a change made through one must
//! never be served by the other's tier after the staleness bound, whatever
//! the kind of change, and also after the subscription was lost.
//!
//! Needs `AXUM_CACHEX_REDIS_URL` and `AXUM_CACHEX_REDIS_CLUSTER_NODES`;
//! `scripts/test.sh` sets both.
#![cfg(feature = "redis")]

mod common;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{get, post},
};
use axum_cachex::{
    CacheKey, CacheLayer,
    backend::{Backend, Listing, MemoryTier, RedisBackend, RedisConfig},
};
use bytes::Bytes;
use common::{
    backend_redis::raw,
    http::{Counter, get_ok, send},
};

/// The staleness bound the tests configure.
const BOUND: Duration = Duration::from_millis(200);
const TTL: Option<Duration> = Some(Duration::from_secs(60));

fn tier() -> MemoryTier {
    MemoryTier::new(8 << 20).max_staleness(BOUND)
}

fn tiered(config: RedisConfig, prefix: &str) -> RedisBackend {
    config
        .key_prefix(prefix)
        .memory_tier(tier())
        .build()
        .expect("tiered backend")
}

async fn tiered_factory() -> Option<Arc<dyn Backend>> {
    let url = common::redis_url()?;
    let prefix = common::unique_prefix("tier");
    Some(Arc::new(tiered(RedisConfig::from_url(url), &prefix)))
}

conformance_suite!(tiered_factory);

#[tokio::test]
async fn passes_the_published_conformance_suite() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let be = tiered(
        RedisConfig::from_url(url),
        &common::unique_prefix("tier-conf"),
    );
    let report = common::conformance::run(&be, tokio::time::sleep).await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
}

#[tokio::test]
async fn passes_the_published_conformance_suite_on_cluster() {
    let Some(nodes) = common::redis_cluster_nodes() else {
        return;
    };
    let config = RedisConfig::new().cluster_nodes(nodes);
    let be = tiered(config, &common::unique_prefix("tier-cluster"));
    let report = common::conformance::run(&be, tokio::time::sleep).await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    be.clear("").await.expect("clear");
}

/// Two instances sharing one server (or cluster) and one prefix.
struct Pair {
    a: RedisBackend,
    b: RedisBackend,
}

impl Pair {
    fn standalone(name: &str) -> Option<Self> {
        let url = common::redis_url()?;
        let prefix = common::unique_prefix(name);
        Some(Self {
            a: tiered(RedisConfig::from_url(url.clone()), &prefix),
            b: tiered(RedisConfig::from_url(url), &prefix),
        })
    }

    fn cluster(name: &str) -> Option<Self> {
        let nodes = common::redis_cluster_nodes()?;
        let prefix = common::unique_prefix(name);
        Some(Self {
            a: tiered(RedisConfig::new().cluster_nodes(nodes.clone()), &prefix),
            b: tiered(RedisConfig::new().cluster_nodes(nodes), &prefix),
        })
    }

    /// Waits (bounded) until both tiers are trusted: a value written behind
    /// the backends' back is still served from B's tier.
    async fn warm_up(&self, url_or_node: &str) {
        let key = "warm-up";
        self.a
            .set(key, Bytes::from_static(b"1"), TTL)
            .await
            .expect("set");
        let data_key = format!("{}{key}", self.a.key_prefix());
        for _ in 0..500 {
            self.b.get(key).await.expect("get");
            let mut conn = raw(url_or_node).await;
            let _: () = redis::cmd("SET")
                .arg(&data_key)
                .arg("behind")
                .query_async(&mut conn)
                .await
                .expect("raw set");
            if self.b.get(key).await.expect("get") == Some(Bytes::from_static(b"1")) {
                return;
            }
            self.a
                .set(key, Bytes::from_static(b"1"), TTL)
                .await
                .expect("set");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the memory tier never became trusted");
    }
}

/// B has `key` in its tier with `old`; `change` runs on A; after the bound
/// B must not answer `old` any more.
async fn not_served_after_the_bound<F, Fut>(pair: &Pair, key: &str, change: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    pair.a
        .set(key, Bytes::from_static(b"old"), TTL)
        .await
        .expect("set");
    // B's first read may race the message of A's write and not fill its
    // tier (by design); a later one does.
    let old = Some(Bytes::from_static(b"old"));
    let mut in_tier = false;
    for _ in 0..500 {
        assert_eq!(pair.b.get(key).await.expect("get"), old);
        if pair.b.get_now(key).map(|r| r.expect("get_now")) == Some(old.clone()) {
            in_tier = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(in_tier, "B serves {key} from its tier before the change");
    change().await;
    tokio::time::sleep(BOUND).await;
    assert_ne!(
        pair.b.get(key).await.expect("get"),
        Some(Bytes::from_static(b"old")),
        "B still serves the old value of {key} after the staleness bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_serves_from_memory_while_trusted() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let Some(pair) = Pair::standalone("tier-serves") else {
        return;
    };
    pair.warm_up(&url).await;
    // Behind the backends' back: not announced, so B keeps its copy (the
    // documented limit, bounded by max_ttl).
    assert_eq!(
        pair.b.get("warm-up").await.expect("get"),
        Some(Bytes::from_static(b"1"))
    );
    assert_eq!(
        pair.b.get_now("warm-up").map(|r| r.expect("get_now")),
        Some(Some(Bytes::from_static(b"1"))),
        "a trusted copy is available synchronously"
    );
}

async fn every_change_reaches_the_other_tier(pair: Pair) {
    let (a, b) = (&pair.a, &pair.b);
    not_served_after_the_bound(&pair, "k-set", || async {
        a.set("k-set", Bytes::from_static(b"new"), TTL)
            .await
            .expect("set");
    })
    .await;
    assert_eq!(
        b.get("k-set").await.expect("get"),
        Some(Bytes::from_static(b"new"))
    );
    not_served_after_the_bound(&pair, "k-del", || async {
        a.delete("k-del").await.expect("delete");
    })
    .await;
    not_served_after_the_bound(&pair, "k-take", || async {
        a.take("k-take").await.expect("take");
    })
    .await;
    not_served_after_the_bound(&pair, "k-cas", || async {
        let cas = a.compare_and_swap().expect("cas");
        assert!(
            cas.set_if_equals("k-cas", b"old", Bytes::from_static(b"cas"), TTL)
                .await
                .expect("cas")
        );
    })
    .await;
    not_served_after_the_bound(&pair, "k-cad", || async {
        let cas = a.compare_and_swap().expect("cas");
        assert!(cas.delete_if_equals("k-cad", b"old").await.expect("cad"));
    })
    .await;
    not_served_after_the_bound(&pair, "pre/k", || async {
        a.clear("pre/").await.expect("clear");
    })
    .await;
    let entry = CacheKey::encode_stored("GET", "h", "/tiered", "q=1");
    not_served_after_the_bound(&pair, &entry, || async {
        let paths = a.path_invalidation().expect("paths");
        paths.clear_path("/tiered", true).await.expect("clear_path");
    })
    .await;
    not_served_after_the_bound(&pair, &entry, || async {
        let paths = a.path_invalidation().expect("paths");
        paths.clear_cache().await.expect("clear_cache");
    })
    .await;
    a.clear("").await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_reaches_the_other_tier_standalone() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let Some(pair) = Pair::standalone("tier-changes") else {
        return;
    };
    pair.warm_up(&url).await;
    every_change_reaches_the_other_tier(pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_reaches_the_other_tier_on_cluster() {
    let Some(pair) = Pair::cluster("tier-cluster-changes") else {
        return;
    };
    wait_until_trusted(&pair.b).await;
    every_change_reaches_the_other_tier(pair).await;
}

/// Bounded wait until `backend`'s tier serves a value it read (a value
/// read twice comes from the tier once trusted; observable through
/// `get_now`).
async fn wait_until_trusted(backend: &RedisBackend) {
    backend
        .set("trust-probe", Bytes::from_static(b"p"), TTL)
        .await
        .expect("set");
    for _ in 0..500 {
        backend.get("trust-probe").await.expect("get");
        if backend.get_now("trust-probe").is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the memory tier never became trusted");
}

/// The subscription of B is killed on the server (`CLIENT KILL TYPE
/// pubsub`): messages published meanwhile are lost to it. B must still
/// not serve what A changed, after the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_is_never_trusted_blindly() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let Some(pair) = Pair::standalone("tier-lost") else {
        return;
    };
    pair.warm_up(&url).await;
    not_served_after_the_bound(&pair, "k-lost", || async {
        let mut conn = raw(&url).await;
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut conn)
            .await
            .expect("client kill");
        pair.a.delete("k-lost").await.expect("delete");
    })
    .await;
}

/// Two app instances, each with the cache layer on its own tiered backend:
/// a POST on A invalidates the path; B must not serve the old body after
/// the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_invalidation_on_one_instance_reaches_the_other() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let Some(pair) = Pair::standalone("tier-http") else {
        return;
    };
    pair.warm_up(&url).await;
    let version = Counter::default();
    let app = |backend: RedisBackend| {
        let layer = CacheLayer::builder()
            .backend(Arc::new(backend))
            .ttl(Duration::from_secs(60))
            .build()
            .expect("layer");
        let (v1, v2) = (version.clone(), version.clone());
        Router::new()
            .route(
                "/item",
                get(move || {
                    let v = v1.clone();
                    async move { format!("version {}", v.get()) }
                })
                .post(move || {
                    let v = v2.clone();
                    async move {
                        v.hit();
                        "updated"
                    }
                }),
            )
            .route("/other", post(|| async { "nothing" }))
            .layer(layer)
    };
    let (app_a, app_b) = (app(pair.a.clone()), app(pair.b.clone()));
    assert_eq!(get_ok(&app_b, "/item").await.body, "version 0");
    let again = get_ok(&app_b, "/item").await;
    assert!(again.cache_status().contains("hit"));
    let post = axum::http::Request::post("/item")
        .header("host", "example.com")
        .body(axum::body::Body::empty())
        .expect("request");
    let reply = send(&app_a, post).await;
    assert_eq!(reply.status, http::StatusCode::OK);
    tokio::time::sleep(BOUND).await;
    assert_eq!(get_ok(&app_b, "/item").await.body, "version 1");
}

/// Tag invalidation through the memory tier: instance A invalidates a tag;
/// instance B, which serves the tagged response from its tier, must not
/// serve it after the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidation_on_one_instance_reaches_the_other() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let Some(pair) = Pair::standalone("tier-tags") else {
        return;
    };
    pair.warm_up(&url).await;
    let runs = Counter::default();
    let layer = |backend: RedisBackend| {
        CacheLayer::builder()
            .backend(Arc::new(backend))
            .ttl(Duration::from_secs(60))
            .build()
            .expect("layer")
    };
    let (layer_a, layer_b) = (layer(pair.a.clone()), layer(pair.b.clone()));
    let c = runs.clone();
    let app_b = Router::new()
        .route(
            "/product",
            get(move || {
                let run = c.hit();
                async move { ([("cache-tag", "product:7")], format!("run {run}")) }
            }),
        )
        .layer(layer_b);
    assert_eq!(get_ok(&app_b, "/product").await.body, "run 1");
    let hit = get_ok(&app_b, "/product").await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    layer_a
        .invalidate_tag("product:7")
        .await
        .expect("invalidate");
    tokio::time::sleep(BOUND).await;
    assert_eq!(get_ok(&app_b, "/product").await.body, "run 2");
}
