//! Shared test support: where the real servers are, and the conformance
//! suite that every backend runs.
#![allow(dead_code, unreachable_pub, missing_docs)]

#[cfg(feature = "memcached")]
pub mod backend_memcached;
#[cfg(feature = "redis")]
pub mod backend_redis;
#[cfg(feature = "redis")]
pub mod cluster_lab;
pub mod conformance;
pub mod http;
pub mod layer;
pub mod stale;

use std::sync::atomic::{AtomicU64, Ordering};

/// Whether a missing server must fail the test (set by `scripts/test.sh`,
/// and therefore in CI) instead of skipping it.
pub fn servers_required() -> bool {
    std::env::var_os("AXUM_CACHEX_REQUIRE_SERVERS").is_some_and(|v| v == "1")
}

fn server_env(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if servers_required() => {
            panic!("{var} is not set: {what} tests need a real server; run scripts/test.sh")
        }
        _ => {
            eprintln!("skipping: {var} not set (run scripts/test.sh to start {what})");
            None
        }
    }
}

/// `redis://127.0.0.1:PORT` of the suite's Redis server.
pub fn redis_url() -> Option<String> {
    server_env("AXUM_CACHEX_REDIS_URL", "Redis")
}

/// Seed URLs of the suite's Redis Cluster (three primaries).
#[allow(dead_code)] // not every test binary uses every helper
pub fn redis_cluster_nodes() -> Option<Vec<String>> {
    server_env("AXUM_CACHEX_REDIS_CLUSTER_NODES", "Redis Cluster")
        .map(|s| s.split(',').map(str::to_owned).collect())
}

/// `host:port` list of the suite's Memcached servers.
pub fn memcached_servers() -> Option<Vec<String>> {
    server_env("AXUM_CACHEX_MEMCACHED_SERVERS", "Memcached")
        .map(|s| s.split(',').map(str::to_owned).collect())
}

/// A key prefix no other test uses, so tests sharing one server never see
/// each other's keys (and `clear` only empties the test's own namespace).
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        name
    )
}

/// Generates one `#[tokio::test]` per conformance test, each calling the
/// factory (an `async fn() -> Option<Arc<dyn Backend>>`, `None` = server
/// absent and not required) for a fresh, isolated backend.
///
/// A new backend gets the whole suite with one line:
/// `conformance_suite!(my_factory);`
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@emit $factory;
            layer::hit_does_not_run_handler,
            layer::conditional_requests,
            layer::not_modified_repeats_required_headers,
            layer::head_is_answered_from_get_entry,
            layer::post_passes_through_and_invalidates,
            layer::no_store_stores_nothing,
            layer::no_cache_runs_handler_and_answers_304,
            layer::uncacheable_responses_are_not_stored,
            layer::oversize_bodies_stream_through,
            layer::status_and_headers_survive_a_hit,
            layer::binary_body_round_trips,
            layer::expiry_follows_the_clock,
            layer::authorization_bypasses_unless_public,
            layer::corrupt_entry_is_a_miss,
            layer::invalidation_counts,
            layer::extractor_and_late_backend,
            layer::tags_invalidate_every_tagged_response,
            stale::stale_while_revalidate_serves_at_once_and_refreshes_once,
            stale::failed_refresh_keeps_stale_entry,
            stale::stale_if_error_serves_old_body_on_500,
            stale::stale_if_error_serves_old_body_on_handler_error,
            stale::concurrent_cold_requests_run_handler_once,
            stale::uncacheable_response_is_not_shared,
            stale::waiter_gives_up_after_timeout,
            stale::vary_keeps_variants_apart,
            stale::if_modified_since_and_precedence,
            stale::cross_instance_lock_computes_once,
            stale::different_variants_do_not_wait_for_each_other,
        );
    };
    (@emit $factory:path; $($module:ident :: $test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                if let Some(backend) = $factory().await {
                    common::$module::$test(backend).await;
                }
            }
        )*
    };
}

/// Sends `signal` (`-STOP`, `-CONT`, …) to process `pid` with `kill`, and
/// for `-STOP`/`-CONT` waits until the kernel shows the process stopped or
/// running again: delivery is asynchronous, and a server that still
/// answers right after `kill -STOP` would make a freeze test flaky. The
/// wait is bounded (a hang guard, not a time limit on the code).
pub fn signal_process(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
    let want_stopped = match signal {
        "-STOP" => true,
        "-CONT" => false,
        _ => return,
    };
    for _ in 0..500 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state is the first field after the `)` that ends the name.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        let stopped = matches!(state, Some('T' | 't'));
        if state.is_none() || stopped == want_stopped {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("process {pid} did not reach the state {signal} asks for");
}
