//! The conformance suite on the in-memory backend, plus its own limits.
mod common;

use std::sync::Arc;

use axum_cachex::backend::{Backend, MemoryBackend};
use bytes::Bytes;

async fn memory() -> Option<Arc<dyn Backend>> {
    Some(Arc::new(MemoryBackend::new()))
}

conformance_suite!(memory);

/// The whole suite again on a namespace of a shared store, beside a sibling
/// namespace holding keys of its own that must never show up.
mod namespaced {
    use super::*;

    async fn namespaced() -> Option<Arc<dyn Backend>> {
        let root = MemoryBackend::new();
        let sibling = root.namespace("other:");
        for key in ["k1", "GET|||example.com|||/users|||", "lock"] {
            sibling
                .set(key, Bytes::from_static(b"sibling"), None)
                .await
                .expect("seed sibling");
        }
        Some(Arc::new(root.namespace("ns:")))
    }

    conformance_suite!(namespaced);
}

#[tokio::test]
async fn namespaces_share_the_bound_and_clear_apart() {
    let root = MemoryBackend::builder().max_capacity(1024 * 1024).build();
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
    assert_eq!(http.keys().await.expect("keys"), ["GET|||h|||/a|||"]);
    assert_eq!(http.clear().await.expect("clear"), 1);
    assert_eq!(
        sessions.get("abc").await.expect("get"),
        Some(Bytes::from_static(b"session")),
        "clearing the responses kept the sessions"
    );
    // The root sees every namespace's keys, prefixed.
    assert_eq!(root.keys().await.expect("keys"), ["session:abc"]);
}

#[tokio::test]
async fn stays_within_its_byte_bound_and_admits_new_keys_when_full() {
    let be = MemoryBackend::builder().max_capacity(256 * 1024).build();
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
