//! The conformance suite on the in-memory backend, plus its own limits.
mod common;

use std::{sync::Arc, time::Duration};

use axum_cachex::{
    ManualClock,
    backend::{Backend, Listing, MemoryBackend},
};
use bytes::Bytes;

async fn memory() -> Option<Arc<dyn Backend>> {
    Some(Arc::new(MemoryBackend::new()))
}

conformance_suite!(memory);

#[tokio::test]
async fn passes_the_published_conformance_suite() {
    let manual = ManualClock::new();
    let backend = MemoryBackend::builder()
        .clock(manual.clock())
        .build()
        .expect("valid");
    let report = common::conformance::run(&backend, move |d| {
        manual.advance(d);
        std::future::ready(())
    })
    .await;
    let skipped: Vec<_> = report.skipped.iter().map(|(check, _)| *check).collect();
    assert_eq!(skipped, ["path_invalidation"], "memory lists instead");
}

#[tokio::test]
async fn a_namespace_passes_the_suite_beside_a_sibling() {
    let manual = ManualClock::new();
    let root = MemoryBackend::builder()
        .clock(manual.clock())
        .build()
        .expect("valid");
    let sibling = root.namespace("other:");
    for key in ["conf/k1", "http:GET|||conf.test|||/users|||", "conf/list/a"] {
        sibling
            .set(key, Bytes::from_static(b"sibling"), None)
            .await
            .expect("seed sibling");
    }
    common::conformance::run(&root.namespace("ns:"), move |d| {
        manual.advance(d);
        std::future::ready(())
    })
    .await;
    assert_eq!(
        sibling.keys("").await.expect("keys").len(),
        3,
        "the sibling namespace was touched"
    );
}

#[tokio::test]
async fn namespaces_share_the_bound_and_clear_apart() {
    let root = MemoryBackend::builder()
        .max_capacity(1024 * 1024)
        .build()
        .expect("valid");
    let http = root.namespace("http:");
    let sessions = root.namespace("session:");
    http.set("GET|||h|||/a|||", Bytes::from_static(b"page"), None)
        .await
        .expect("set");
    sessions
        .set("abc", Bytes::from_static(b"session"), None)
        .await
        .expect("set");
    assert_eq!(
        http.get("abc").await.expect("get"),
        None,
        "namespaces are apart"
    );
    assert_eq!(http.keys("").await.expect("keys"), ["GET|||h|||/a|||"]);
    assert_eq!(http.clear("").await.expect("clear"), 1);
    assert_eq!(
        sessions.get("abc").await.expect("get"),
        Some(Bytes::from_static(b"session")),
        "clearing the responses kept the sessions"
    );
    // The root sees every namespace's keys, prefixed.
    assert_eq!(root.keys("").await.expect("keys"), ["session:abc"]);
}

/// Expiry follows the injected clock: no sleeping.
#[tokio::test]
async fn values_expire_by_the_injected_clock() {
    let manual = ManualClock::new();
    let be = MemoryBackend::builder()
        .clock(manual.clock())
        .build()
        .expect("valid");
    be.set("k", Bytes::from_static(b"v"), Some(Duration::from_secs(60)))
        .await
        .expect("set");
    manual.advance(Duration::from_secs(59));
    assert_eq!(
        be.get("k").await.expect("get"),
        Some(Bytes::from_static(b"v"))
    );
    let listed = be.entries("").await.expect("entries");
    assert_eq!(listed[0].ttl_remaining, Some(Duration::from_secs(1)));
    manual.advance(Duration::from_secs(1));
    assert_eq!(be.get("k").await.expect("get"), None);
    assert!(be.keys("").await.expect("keys").is_empty());
    assert!(
        be.add("k", Bytes::from_static(b"new"), None)
            .await
            .expect("add")
    );
}

#[tokio::test]
async fn stays_within_its_byte_bound_and_admits_new_keys_when_full() {
    let be = MemoryBackend::builder()
        .max_capacity(256 * 1024)
        .build()
        .expect("valid");
    // Fill far past the bound, reading the early keys often so that a
    // frequency-based admission policy would favour them.
    for i in 0..400 {
        be.set(&format!("k{i}"), Bytes::from(vec![1u8; 2048]), None)
            .await
            .expect("set");
        for _ in 0..3 {
            let _ = be.get("k0").await.expect("get");
        }
    }
    assert!(
        be.weighted_size() <= 256 * 1024,
        "size {}",
        be.weighted_size()
    );
    assert!(be.evictions() > 0);
    // A brand-new key is admitted and readable right after the cache filled.
    be.set("fresh", Bytes::from_static(b"new"), None)
        .await
        .expect("set");
    let _ = be.weighted_size();
    assert_eq!(
        be.get("fresh").await.expect("get"),
        Some(Bytes::from_static(b"new"))
    );
}
