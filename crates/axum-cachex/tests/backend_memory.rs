//! The conformance suite on the in-memory backend, plus its own limits.
mod common;

use std::sync::Arc;

use axum_cachex::backend::{Backend, MemoryBackend};
use bytes::Bytes;

async fn memory() -> Option<Arc<dyn Backend>> {
    Some(Arc::new(MemoryBackend::new()))
}

conformance_suite!(memory);

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
