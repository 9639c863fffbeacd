//! The managers' counters, as the monitoring routes report them: each
//! manager counts into the registry it was given, so the counts here are
//! exact even with other tests running in the same process.

use std::sync::Arc;

use axum::{Router, body::Body};
use axum_cachex::{
    CacheManager, Registry, StateManager,
    backend::{Backend, MemoryBackend},
    monitoring::{Guard, Monitoring},
};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn body(app: &Router, uri: &str) -> String {
    let req = Request::get(uri)
        .header("authorization", "Bearer t0ken")
        .body(Body::empty())
        .expect("request");
    let res = app.clone().oneshot(req).await.expect("infallible");
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn managers_count_what_they_do_and_monitoring_reports_it() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let registry = Registry::new();
    // Managers of another registry, or of none, count elsewhere.
    let other = Registry::new();
    let elsewhere = CacheManager::builder(Arc::clone(&backend))
        .registry(&other)
        .build()
        .expect("valid");
    let _: Option<u32> = elsewhere.get("nothing").await.expect("get");
    let uncounted = StateManager::new(Arc::clone(&backend));
    uncounted.create_state(None, None).await.expect("state");

    let cache = CacheManager::builder(Arc::clone(&backend))
        .registry(&registry)
        .build()
        .expect("valid");
    let computed: Result<u32, Arc<std::io::Error>> =
        cache.get_or_set("answer", || async { Ok(42) }, None).await;
    assert_eq!(computed.ok(), Some(42));
    let again: Result<u32, Arc<std::io::Error>> =
        cache.get_or_set("answer", || async { Ok(0) }, None).await;
    assert_eq!(again.ok(), Some(42));
    let failed: Result<u32, Arc<std::io::Error>> = cache
        .get_or_set(
            "broken",
            || async { Err(std::io::Error::other("down")) },
            None,
        )
        .await;
    assert!(failed.is_err());

    let states = StateManager::builder(Arc::clone(&backend))
        .registry(&registry)
        .build()
        .expect("valid");
    let state = states.create_state(None, None).await.expect("state");
    states.consume_state(&state).await.expect("first consume");
    assert!(states.consume_state(&state).await.is_err(), "single use");

    // Sessions: one created, loaded once, one forged token refused, deleted.
    #[cfg(feature = "session")]
    {
        use axum_cachex::session::{SessionConfig, SessionManager, SessionUser};
        let config = SessionConfig::builder("a-test-secret-that-is-long-enough-0123456789")
            .build()
            .expect("config");
        let sessions = SessionManager::new(Arc::clone(&backend), config).with_registry(&registry);
        let (session, token) = sessions
            .create_session(SessionUser::new("7"), None, None, None)
            .await
            .expect("create");
        sessions
            .get_session(&token, None, None)
            .await
            .expect("load");
        assert!(
            sessions
                .get_session("forged.token.1", None, None)
                .await
                .is_err()
        );
        assert!(sessions.delete_session(session.id()).await.expect("delete"));
        let stats = registry.manager_stats();
        assert_eq!(
            (
                stats.sessions_created,
                stats.sessions_loaded,
                stats.sessions_rejected,
                stats.sessions_deleted
            ),
            (1, 1, 1, 1)
        );
    }

    let stats = registry.manager_stats();
    assert_eq!(
        (stats.app_cache_hits, stats.app_cache_misses),
        (1, 2),
        "one hit, two cold keys"
    );
    assert_eq!(
        (stats.app_cache_factory_runs, stats.app_cache_factory_errors),
        (2, 1)
    );
    assert_eq!(
        (
            stats.states_created,
            stats.states_consumed,
            stats.states_rejected
        ),
        (1, 1, 1)
    );

    assert_eq!(
        (
            other.manager_stats().app_cache_misses,
            other.manager_stats().states_created
        ),
        (1, 0),
        "the other registry counts only its own manager"
    );

    let app = Monitoring::new(Guard::bearer("t0ken"))
        .backend(Arc::clone(&backend))
        .registry(&registry)
        .add_to(Router::new(), "/_cache");
    let json: serde_json::Value =
        serde_json::from_str(&body(&app, "/_cache/stats").await).expect("json");
    let managers = &json["managers"];
    assert_eq!(managers["app_cache_hits"], 1);
    assert_eq!(managers["app_cache_factory_errors"], 1);
    assert_eq!(managers["states_rejected"], 1);

    let text = body(&app, "/_cache/metrics").await;
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).expect("parse");
    let value = |manager: &str, event: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "axum_cachex_manager_events_total"
                    && s.labels.get("manager") == Some(manager)
                    && s.labels.get("event") == Some(event)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("app_cache", "misses"), Some(2.0));
    assert_eq!(value("states", "consumed"), Some(1.0));
    let sessions_created = if cfg!(feature = "session") { 1.0 } else { 0.0 };
    assert_eq!(value("sessions", "created"), Some(sessions_created));
}
