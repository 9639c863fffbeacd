//! Backend contract tests: the behaviour every `Backend` must have.
//! Each function takes a fresh backend in its own namespace.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use axum_cachex::backend::{Backend, BackendError};
use bytes::Bytes;

type B = Arc<dyn Backend>;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

const TTL: Option<Duration> = Some(Duration::from_secs(60));

pub async fn set_then_get(be: B) {
    be.set("k1", b("v1"), TTL).await.expect("set");
    assert_eq!(be.get("k1").await.expect("get"), Some(b("v1")));
    be.set("no-ttl", b("forever"), None).await.expect("set");
    assert_eq!(be.get("no-ttl").await.expect("get"), Some(b("forever")));
}

pub async fn get_missing_is_none(be: B) {
    assert_eq!(be.get("missing").await.expect("get"), None);
}

pub async fn overwrite_replaces(be: B) {
    be.set("k", b("one"), TTL).await.expect("set");
    be.set("k", b("two"), TTL).await.expect("set");
    assert_eq!(be.get("k").await.expect("get"), Some(b("two")));
}

pub async fn binary_values_round_trip(be: B) {
    let all_bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    be.set("bin", Bytes::from(all_bytes.clone()), TTL)
        .await
        .expect("set");
    assert_eq!(
        be.get("bin").await.expect("get").as_deref(),
        Some(&all_bytes[..])
    );
    // Keys with spaces, unicode and the default key separator.
    let key = "GET|||h:1|||/p ä/\u{1}x|||q=1 2";
    be.set(key, b("odd key"), TTL).await.expect("set odd key");
    assert_eq!(be.get(key).await.expect("get"), Some(b("odd key")));
    let long_key = format!("GET|||h|||/{}|||", "x".repeat(600));
    be.set(&long_key, b("long key"), TTL)
        .await
        .expect("set long key");
    assert_eq!(be.get(&long_key).await.expect("get"), Some(b("long key")));
}

pub async fn large_value_round_trips(be: B) {
    // 512 KiB: under Memcached's default 1 MiB item limit and the layer's
    // default body limit.
    let big: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    be.set("big", Bytes::from(big.clone()), TTL)
        .await
        .expect("set");
    assert_eq!(be.get("big").await.expect("get").as_deref(), Some(&big[..]));
}

pub async fn ttl_expiry(be: B) {
    be.set("short", b("v"), Some(Duration::from_millis(1200)))
        .await
        .expect("set");
    be.set("long", b("v"), TTL).await.expect("set");
    assert_eq!(be.get("short").await.expect("get"), Some(b("v")));
    // Memcached counts TTLs in whole seconds: wait past the next boundary.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        be.get("short").await.expect("get"),
        None,
        "expired value served"
    );
    assert_eq!(be.get("long").await.expect("get"), Some(b("v")));
}

pub async fn add_only_when_absent(be: B) {
    assert!(be.add("a", b("first"), TTL).await.expect("add"));
    assert!(!be.add("a", b("second"), TTL).await.expect("add"));
    assert_eq!(be.get("a").await.expect("get"), Some(b("first")));
}

pub async fn replace_only_when_present(be: B) {
    assert!(!be.replace("r", b("ghost"), TTL).await.expect("replace"));
    assert_eq!(
        be.get("r").await.expect("get"),
        None,
        "replace resurrected a key"
    );
    be.set("r", b("one"), TTL).await.expect("set");
    assert!(be.replace("r", b("two"), TTL).await.expect("replace"));
    assert_eq!(be.get("r").await.expect("get"), Some(b("two")));
    assert!(be.delete("r").await.expect("delete"));
    assert!(!be.replace("r", b("three"), TTL).await.expect("replace"));
    assert_eq!(be.get("r").await.expect("get"), None);
}

pub async fn take_is_single_use(be: B) {
    be.set("t", b("once"), TTL).await.expect("set");
    assert_eq!(be.take("t").await.expect("take"), Some(b("once")));
    assert_eq!(be.take("t").await.expect("take"), None);
    assert_eq!(be.get("t").await.expect("get"), None);
}

pub async fn concurrent_take_has_one_winner(be: B) {
    be.set("race", b("prize"), TTL).await.expect("set");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let be = Arc::clone(&be);
        tasks.push(tokio::spawn(async move { be.take("race").await }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.expect("join").expect("take").is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

pub async fn delete_if_equals_only_deletes_the_expected_value(be: B) {
    be.set("lock", b("token-a"), TTL).await.expect("set");
    assert!(
        !be.delete_if_equals("lock", b"token-b")
            .await
            .expect("compare")
    );
    assert_eq!(be.get("lock").await.expect("get"), Some(b("token-a")));
    assert!(
        be.delete_if_equals("lock", b"token-a")
            .await
            .expect("compare")
    );
    assert_eq!(be.get("lock").await.expect("get"), None);
    assert!(
        !be.delete_if_equals("lock", b"token-a")
            .await
            .expect("compare")
    );
    // Of concurrent releases of one token, exactly one deletes.
    be.set("lock", b("token-c"), TTL).await.expect("set");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let be = Arc::clone(&be);
        tasks.push(tokio::spawn(async move {
            be.delete_if_equals("lock", b"token-c").await
        }));
    }
    let mut deleted = 0;
    for t in tasks {
        if t.await.expect("join").expect("compare") {
            deleted += 1;
        }
    }
    assert_eq!(deleted, 1);
}

pub async fn delete_reports_existence(be: B) {
    be.set("d", b("v"), TTL).await.expect("set");
    assert!(be.delete("d").await.expect("delete"));
    assert!(!be.delete("d").await.expect("delete"));
    assert_eq!(be.get("d").await.expect("get"), None);
}

fn key(path: &str, query: &str) -> String {
    format!("GET|||example.com|||{path}|||{query}")
}

async fn seed_paths(be: &B) {
    for (p, q) in [
        ("/users", ""),
        ("/users", "page=2"),
        ("/users/1", ""),
        ("/users/2", "x=1"),
        ("/posts", ""),
    ] {
        be.set(&key(p, q), b(p), TTL).await.expect("seed");
    }
}

pub async fn clear_counts_and_empties_namespace(be: B) {
    seed_paths(&be).await;
    be.set("other", b("v"), TTL).await.expect("set");
    let n = be.clear().await.expect("clear");
    if be.capabilities().exact_counts {
        assert_eq!(n, 6);
    } else {
        assert_eq!(n, 0, "a backend that cannot count must say 0, not guess");
    }
    assert_eq!(be.get("other").await.expect("get"), None);
    assert_eq!(be.get(&key("/users", "")).await.expect("get"), None);
    // The namespace works again after a clear.
    be.set("after", b("v"), TTL).await.expect("set");
    assert_eq!(be.get("after").await.expect("get"), Some(b("v")));
}

pub async fn clear_path_exact_and_with_params(be: B) {
    seed_paths(&be).await;
    let exact = be.clear_path("/users", false).await.expect("clear_path");
    assert_eq!(be.get(&key("/users", "")).await.expect("get"), None);
    // Without include_params the query variant stays.
    assert_eq!(
        be.get(&key("/users", "page=2")).await.expect("get"),
        Some(b("/users"))
    );
    let with_params = be.clear_path("/users", true).await.expect("clear_path");
    assert_eq!(be.get(&key("/users", "page=2")).await.expect("get"), None);
    // Other paths, including /users/1, are untouched.
    assert_eq!(
        be.get(&key("/users/1", "")).await.expect("get"),
        Some(b("/users/1"))
    );
    assert_eq!(
        be.get(&key("/posts", "")).await.expect("get"),
        Some(b("/posts"))
    );
    if be.capabilities().exact_counts {
        assert_eq!((exact, with_params), (1, 1));
        assert_eq!(
            be.clear_path("/nothing", true).await.expect("clear_path"),
            0
        );
    }
}

pub async fn clear_pattern_globs_paths(be: B) {
    seed_paths(&be).await;
    match be.clear_pattern("/users/*").await {
        Ok(n) => {
            assert!(be.capabilities().list_keys);
            assert_eq!(n, 2);
            assert_eq!(be.get(&key("/users/1", "")).await.expect("get"), None);
            assert_eq!(be.get(&key("/users/2", "x=1")).await.expect("get"), None);
            assert_eq!(
                be.get(&key("/users", "")).await.expect("get"),
                Some(b("/users"))
            );
            assert_eq!(be.clear_pattern("/p?sts").await.expect("pattern"), 1);
        }
        Err(BackendError::Unsupported {
            operation, hint, ..
        }) => {
            assert!(
                !be.capabilities().list_keys,
                "Unsupported but claims list_keys"
            );
            assert_eq!(operation, "clear_pattern");
            assert!(hint.contains("Redis"), "hint should point to Redis: {hint}");
            // Nothing was silently deleted.
            assert_eq!(
                be.get(&key("/users/1", "")).await.expect("get"),
                Some(b("/users/1"))
            );
        }
        Err(e) => panic!("clear_pattern failed: {e}"),
    }
}

pub async fn keys_and_entries_list_namespace(be: B) {
    seed_paths(&be).await;
    be.set("short-lived", b("v"), Some(Duration::from_secs(30)))
        .await
        .expect("set");
    let expected: BTreeSet<String> = [
        key("/users", ""),
        key("/users", "page=2"),
        key("/users/1", ""),
        key("/users/2", "x=1"),
        key("/posts", ""),
        "short-lived".to_owned(),
    ]
    .into_iter()
    .collect();
    match be.keys().await {
        Ok(keys) => {
            let keys: BTreeSet<String> = keys.into_iter().collect();
            assert_eq!(keys, expected);
            let entries = be.entries().await.expect("entries");
            assert_eq!(entries.len(), 6);
            let e = entries
                .iter()
                .find(|e| e.key == "short-lived")
                .expect("entry");
            assert_eq!(e.value, b("v"));
            let left = e.ttl_remaining.expect("ttl");
            assert!(left <= Duration::from_secs(30) && left > Duration::from_secs(20));
        }
        Err(BackendError::Unsupported { operation, .. }) => {
            assert!(!be.capabilities().list_keys);
            assert_eq!(operation, "keys");
            assert!(matches!(
                be.entries().await,
                Err(BackendError::Unsupported { .. })
            ));
        }
        Err(e) => panic!("keys failed: {e}"),
    }
}

pub async fn concurrent_writers_to_one_key(be: B) {
    let mut tasks = Vec::new();
    for i in 0..32u8 {
        let be = Arc::clone(&be);
        tasks.push(tokio::spawn(async move {
            let value = Bytes::from(vec![i; 4096]);
            be.set("contended", value, TTL).await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("set");
    }
    // Whatever won, the value is one writer's whole value, never a mix.
    let v = be.get("contended").await.expect("get").expect("present");
    assert_eq!(v.len(), 4096);
    assert!(v.iter().all(|&x| x == v[0]), "torn write");
}
