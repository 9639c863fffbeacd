//! Runs the conformance suite that `axum-cachex-core` publishes (feature
//! `conformance`): the project's backends pass exactly what a third-party
//! store must pass.

use std::{future::Future, time::Duration};

use axum_cachex::backend::Backend;
use axum_cachex_core::conformance::{Report, Suite};

/// Runs the whole suite, TTL expiry included (`sleep` moves time: the
/// runtime's sleep for a server, a manual clock for the memory backend),
/// and fails the test with the broken check's name and cause.
pub async fn run<F, Fut>(backend: &dyn Backend, sleep: F) -> Report
where
    F: Fn(Duration) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let report = Suite::new(backend)
        .sleep(move |d| Box::pin(sleep(d)))
        .run()
        .await;
    match report {
        Ok(report) => {
            assert!(
                !report
                    .skipped
                    .iter()
                    .any(|(check, _)| *check == "ttl_expiry"),
                "the expiry check must run"
            );
            report
        }
        Err(e) => panic!(
            "{} fails the conformance suite: {e} ({:?})",
            backend.name(),
            std::error::Error::source(&e)
        ),
    }
}
