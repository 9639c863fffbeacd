//! The Redis backend on a real Redis Cluster of three primaries: the
//! conformance suite (backend and HTTP layer), listing and clearing across
//! every primary, the per-path index in one slot, and one primary dying
//! under traffic.
//!
//! Needs `AXUM_CACHEX_REDIS_CLUSTER_NODES` (the shared cluster's seeds) and,
//! for the outage test, `AXUM_CACHEX_REDIS_SERVER_BIN` (its own cluster,
//! started with the `redis-cli` next to it); `scripts/test.sh` sets both.
#![cfg(feature = "redis")]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use axum::{Router, routing::get};
use axum_cachex::{
    CacheKey, CacheLayer,
    backend::{Backend, Listing},
};
use bytes::Bytes;
use common::{
    backend_redis::{RedisCluster, cluster_backend, raw, redis_server_bin},
    http::{Counter, get_ok},
};

conformance_suite!(common::backend_redis::redis_cluster);

const TTL: Option<Duration> = Some(Duration::from_secs(60));

#[tokio::test]
async fn passes_the_published_conformance_suite() {
    let Some(nodes) = common::redis_cluster_nodes() else {
        return;
    };
    let be = cluster_backend(nodes, "conformance");
    assert!(be.is_cluster());
    let report = common::conformance::run(&be, tokio::time::sleep).await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    be.clear("").await.expect("clear");
}

/// Every key under `prefix` on each node, raw (node URL → keys).
async fn keys_by_node(nodes: &[String], prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut found = BTreeMap::new();
    for url in nodes {
        let mut conn = raw(url).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        found.insert(url.clone(), keys.into_iter().collect());
    }
    found
}

#[tokio::test]
async fn listing_and_clearing_visit_every_primary() {
    let Some(nodes) = common::redis_cluster_nodes() else {
        return;
    };
    let be = cluster_backend(nodes.clone(), "visit");
    for i in 0..60 {
        be.set(&format!("k{i}"), Bytes::from(format!("v{i}")), TTL)
            .await
            .expect("set");
    }
    let spread = keys_by_node(&nodes, be.key_prefix()).await;
    let holding = spread.values().filter(|keys| !keys.is_empty()).count();
    assert!(
        holding >= 2,
        "60 keys should spread over the primaries: {spread:?}"
    );

    let listed: BTreeSet<String> = be.keys("").await.expect("keys").into_iter().collect();
    let expected: BTreeSet<String> = (0..60).map(|i| format!("k{i}")).collect();
    assert_eq!(listed, expected);
    let entries = be.entries("k1").await.expect("entries");
    assert_eq!(entries.len(), 11, "k1 and k10..k19");
    assert!(
        entries
            .iter()
            .all(|e| e.value == format!("v{}", &e.key[1..]))
    );

    assert_eq!(be.clear("k1").await.expect("clear k1"), 11);
    assert_eq!(be.keys("").await.expect("keys").len(), 49);
    assert_eq!(be.clear("").await.expect("clear all"), 49);
    let left = keys_by_node(&nodes, be.key_prefix()).await;
    assert!(left.values().all(BTreeSet::is_empty), "{left:?}");
}

#[tokio::test]
async fn one_path_lives_in_one_slot_and_clear_path_removes_it_everywhere() {
    let Some(nodes) = common::redis_cluster_nodes() else {
        return;
    };
    let be = cluster_backend(nodes.clone(), "paths");
    for p in 0..20 {
        for q in ["", "a=1", "b=2"] {
            let key = CacheKey::encode_stored("GET", "h", &format!("/p/{p}"), q);
            be.set(&key, Bytes::from_static(b"x"), TTL)
                .await
                .expect("set");
            let variant = CacheKey::variant_key(&key, "ab12");
            be.set(&variant, Bytes::from_static(b"y"), TTL)
                .await
                .expect("set");
        }
    }
    // Every key of /p/7 (entries, variants and its index) on one node.
    let spread = keys_by_node(&nodes, be.key_prefix()).await;
    let holders: Vec<&String> = spread
        .iter()
        .filter(|(_, keys)| {
            keys.iter()
                .any(|k| k.contains("/p/7|||") || k.ends_with("/p/7"))
        })
        .map(|(node, _)| node)
        .collect();
    assert_eq!(holders.len(), 1, "{spread:?}");

    let paths = be.path_invalidation().expect("path invalidation");
    assert_eq!(paths.clear_path("/p/7", true).await.expect("clear_path"), 6);
    assert_eq!(
        paths.clear_path("/p/8", false).await.expect("clear_path"),
        2
    );
    let left = be.keys("http:").await.expect("keys");
    assert_eq!(left.len(), 120 - 8);
    assert!(!left.iter().any(|k| k.contains("/p/7|||")));
    assert_eq!(paths.clear_cache().await.expect("clear_cache"), 112);
    let raw_left = keys_by_node(&nodes, be.key_prefix()).await;
    assert!(
        raw_left.values().all(BTreeSet::is_empty),
        "index keys too: {raw_left:?}"
    );
}

/// One primary of three is killed under traffic. Its keys fail open (the
/// handler answers), the other primaries' keys keep being served from the
/// cache: the dead node's circuit breaker opens, not the whole backend's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_fails_its_keys_open_and_the_others_keep_hitting() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let mut cluster = RedisCluster::start(bin, 3);
    let backend = axum_cachex::backend::RedisConfig::new()
        .cluster_nodes(cluster.urls())
        .key_prefix("outage:")
        .command_timeout(Duration::from_millis(200))
        .build()
        .expect("backend");
    let backend: Arc<dyn Backend> = Arc::new(backend);
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&backend))
        .ttl(Duration::from_secs(60))
        .build()
        .expect("layer");
    let counter = Counter::default();
    let c = counter.clone();
    let app = Router::new().route(
        "/p/{n}",
        get(move || {
            let c = c.clone();
            async move { format!("run {}", c.hit()) }
        })
        .layer(layer),
    );
    let uris: Vec<String> = (0..30).map(|n| format!("/p/{n}")).collect();
    for uri in &uris {
        get_ok(&app, uri).await;
        let second = get_ok(&app, uri).await;
        assert!(second.cache_status().contains("hit"), "{uri} is cached");
    }

    // Which node holds which path.
    let spread = keys_by_node(&cluster.urls(), "outage:").await;
    let victim = cluster.nodes[0].url();
    let on_victim: BTreeSet<String> = uris
        .iter()
        .filter(|uri| {
            spread[&victim]
                .iter()
                .any(|k| k.contains(&format!("{uri}|||")))
        })
        .cloned()
        .collect();
    assert!(
        !on_victim.is_empty() && on_victim.len() < uris.len(),
        "{spread:?}"
    );

    cluster.nodes[0].kill();
    for round in 0..5 {
        for uri in &uris {
            let reply = get_ok(&app, uri).await;
            assert_eq!(reply.status, http::StatusCode::OK, "{uri} in round {round}");
            let hit = reply.cache_status().contains("hit");
            if on_victim.contains(uri) {
                assert!(!hit, "{uri} lives on the dead primary");
            } else {
                assert!(
                    hit,
                    "{uri} (round {round}) lives on a live primary: {}",
                    reply.cache_status()
                );
            }
        }
    }
}
