//! The monitoring routes: JSON fields and values after a known sequence of
//! requests through real cache layers, bounded listings, the guard,
//! Prometheus output checked with a real parser, clear-path, Memcached's
//! "cannot list" answer, and the dashboard rendered by headless Chromium.
mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use axum_cachex::{
    CacheLayer, CacheLayerBuilder, ManualClock, Registry, Stale,
    backend::{Backend, MemoryBackend},
    monitoring::{Guard, Monitoring},
};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "test-token-7f3a9c1e5b2d4a6f8e0c";
const PREFIX: &str = "/_cache";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// A request to the app under test (`Host: example.com`).
async fn get_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Request::get(uri).header("host", "example.com");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(app, builder.body(Body::empty()).expect("request")).await
}

async fn fetch(app: &Router, uri: &str) -> Reply {
    get_with(app, uri, &[]).await
}

/// A monitoring request with the right token.
async fn monitor(app: &Router, path: &str) -> Reply {
    let bearer = format!("Bearer {TOKEN}");
    get_with(
        app,
        &format!("{PREFIX}{path}"),
        &[("authorization", &bearer)],
    )
    .await
}

async fn monitor_json(app: &Router, path: &str) -> Value {
    let reply = monitor(app, path).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.header("cache-control"), "no-store");
    reply.json()
}

async fn post(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Request::post(uri).header("host", "example.com");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(app, builder.body(Body::empty()).expect("request")).await
}

fn layer(builder: CacheLayerBuilder) -> CacheLayer {
    builder.build().expect("valid cache configuration")
}

const C_BODY_LEN: usize = 150;

/// The scenario's app: four cached routes named `{tag}/a` … `{tag}/v` on
/// `backend`, all on one manual clock, and the monitoring routes reporting
/// only those four layers (their registry; the other tests of this binary
/// build layers of their own at the same time).
fn scenario_app(backend: &Arc<dyn Backend>, clock: &ManualClock, tag: &str) -> Router {
    let registry = Registry::new();
    let base = |name: &str| {
        CacheLayer::builder()
            .backend(Arc::clone(backend))
            .clock(clock.clock())
            .name(format!("{tag}/{name}"))
            .registry(&registry)
    };
    let hour = Duration::from_secs(3600);
    let monitoring = Monitoring::new(Guard::bearer(TOKEN))
        .backend(Arc::clone(backend))
        .clock(clock.clock())
        .registry(&registry);
    Router::new()
        .route(
            "/a",
            get(|| async { "alpha" }).layer(layer(base("a").ttl(hour).public())),
        )
        .route(
            "/b",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"b":true}"#,
                )
            })
            .layer(layer(base("b").ttl(hour))),
        )
        .route(
            // Fresh 10 s, then kept an hour for stale-if-error: an expired
            // entry that is still stored.
            "/c",
            get(|| async { "c".repeat(C_BODY_LEN) }).layer(layer(
                base("c")
                    .ttl(Duration::from_secs(10))
                    .stale_ttl(hour)
                    .stale(Stale::Error),
            )),
        )
        .route(
            "/v",
            get(|headers: HeaderMap| async move {
                let french = headers
                    .get("accept-language")
                    .is_some_and(|v| v.as_bytes().starts_with(b"fr"));
                (
                    [(header::VARY, "accept-language")],
                    if french { "bonjour" } else { "hello" },
                )
                    .into_response()
            })
            .layer(layer(base("v").ttl(hour))),
        )
        .merge(monitoring.router(PREFIX))
}

/// Runs the known request sequence, then moves the clock 60 s on: `/c` is
/// past its freshness, the others have 3540 s left. Returns the ETag of
/// `/a`.
async fn run_scenario(app: &Router, backend: &Arc<dyn Backend>, clock: &ManualClock) -> String {
    let a = fetch(app, "/a").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.header("cache-status").contains("fwd=miss"),
        "{a:?}",
        a = a.header("cache-status")
    );
    let etag = a.header("etag").to_owned();
    assert!(
        fetch(app, "/a")
            .await
            .header("cache-status")
            .contains("hit")
    );
    let not_modified = get_with(app, "/a", &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);

    fetch(app, "/b?x=1&y=2&y=3").await;
    assert!(
        fetch(app, "/b?x=1&y=2&y=3")
            .await
            .header("cache-status")
            .contains("hit")
    );

    assert_eq!(fetch(app, "/c").await.body.len(), C_BODY_LEN);

    assert_eq!(
        get_with(app, "/v", &[("accept-language", "fr")]).await.body,
        "bonjour"
    );
    assert_eq!(
        get_with(app, "/v", &[("accept-language", "en")]).await.body,
        "hello"
    );
    let again = get_with(app, "/v", &[("accept-language", "fr")]).await;
    assert_eq!(again.body, "bonjour");
    assert!(again.header("cache-status").contains("hit"));

    // Sessions, OAuth states and locks share the backend: not cache entries.
    backend
        .set(
            "session:abc",
            Bytes::from_static(b"{\"user\":1}"),
            Some(Duration::from_secs(3600)),
        )
        .await
        .expect("set a non-entry value");

    clock.advance(Duration::from_secs(60));
    etag
}

const HIT_FIELDS: [&str; 8] = [
    "cache_key",
    "method",
    "host",
    "path",
    "query_params",
    "etag",
    "is_expired",
    "ttl_remaining",
];

const RECORD_FIELDS: [&str; 11] = [
    "cache_key",
    "method",
    "host",
    "path",
    "query_params",
    "etag",
    "content_type",
    "content_size",
    "is_expired",
    "ttl_remaining",
    "content_preview",
];

fn field_names(v: &Value) -> Vec<String> {
    let mut names: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    names.sort();
    names
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    names.sort();
    names
}

fn key(path: &str, query: &str) -> String {
    format!("http:GET|||example.com|||{path}|||{query}")
}

/// Every assertion on the two listing routes and `/stats` after the
/// scenario.
async fn check_scenario(backend: Arc<dyn Backend>, tag: &str) {
    let clock = ManualClock::new();
    let app = scenario_app(&backend, &clock, tag);
    let etag_a = run_scenario(&app, &backend, &clock).await;

    // --- cached-hits ---
    let hits = monitor_json(&app, "/cached-hits").await;
    assert_eq!(
        field_names(&hits),
        sorted(&[
            "cached_hits",
            "total_hits",
            "valid_hits",
            "expired_hits",
            "unique_routes",
            "summary",
            "listing",
            "limit",
            "offset",
            "counters",
        ])
    );
    assert_eq!(hits["listing"], "complete");
    assert_eq!(hits["total_hits"], 5, "a, b, c and two variants of v");
    assert_eq!(hits["valid_hits"], 4);
    assert_eq!(hits["expired_hits"], 1);
    assert_eq!(hits["unique_routes"], 4);
    assert_eq!(hits["limit"], 100);
    assert_eq!(hits["offset"], 0);
    assert_eq!(
        field_names(&hits["summary"]),
        sorted(&[
            "total_cached_entries",
            "active_entries",
            "frequently_cached_routes"
        ])
    );
    assert_eq!(hits["summary"]["total_cached_entries"], 5);
    assert_eq!(hits["summary"]["active_entries"], 4);
    assert_eq!(
        hits["summary"]["frequently_cached_routes"][0],
        json!({"method": "GET", "path": "/v", "entries": 2})
    );
    assert_eq!(
        hits["summary"]["frequently_cached_routes"]
            .as_array()
            .expect("array")
            .len(),
        4
    );
    let rows = hits["cached_hits"].as_array().expect("rows");
    assert_eq!(rows.len(), 5);
    for row in rows {
        assert_eq!(field_names(row), sorted(&HIT_FIELDS));
    }
    let keys: Vec<&str> = rows
        .iter()
        .map(|r| r["cache_key"].as_str().expect("key"))
        .collect();
    assert_eq!(
        keys,
        [
            key("/a", "").as_str(),
            &key("/b", "x=1&y=2&y=3"),
            &key("/c", ""),
            &key("/v", ""),
            &key("/v", ""),
        ]
    );
    assert_eq!(
        rows[0],
        json!({
            "cache_key": key("/a", ""),
            "method": "GET",
            "host": "example.com",
            "path": "/a",
            "query_params": {},
            "etag": etag_a,
            "is_expired": false,
            "ttl_remaining": 3540.0,
        })
    );
    assert_eq!(rows[1]["query_params"], json!({"x": "1", "y": ["2", "3"]}));
    assert_eq!(rows[2]["is_expired"], true);
    assert_eq!(rows[2]["ttl_remaining"], Value::Null);

    // --- cached-records ---
    let records = monitor_json(&app, "/cached-records").await;
    assert_eq!(
        field_names(&records),
        sorted(&[
            "cached_records",
            "total_records",
            "active_records",
            "expired_records",
            "total_cache_size_bytes",
            "summary",
            "listing",
            "limit",
            "offset",
            "counters",
        ])
    );
    let stored_bytes =
        "alpha".len() + r#"{"b":true}"#.len() + C_BODY_LEN + "bonjour".len() + "hello".len();
    assert_eq!(records["total_records"], 5);
    assert_eq!(records["active_records"], 4);
    assert_eq!(records["expired_records"], 1);
    assert_eq!(records["total_cache_size_bytes"], stored_bytes);
    assert_eq!(
        records["summary"],
        json!({
            "total_entries": 5,
            "valid_entries": 4,
            "estimated_cache_size_kb": ((stored_bytes as f64 / 1024.0) * 100.0).round() / 100.0,
        })
    );
    let rows = records["cached_records"].as_array().expect("rows");
    assert_eq!(rows.len(), 5);
    for row in rows {
        assert_eq!(field_names(row), sorted(&RECORD_FIELDS));
    }
    assert_eq!(rows[0]["content_type"], "text/plain; charset=utf-8");
    assert_eq!(rows[0]["content_size"], 5);
    assert_eq!(rows[0]["content_preview"], "alpha");
    assert_eq!(rows[0]["etag"], etag_a.as_str());
    assert_eq!(rows[1]["content_type"], "application/json");
    assert_eq!(rows[1]["content_preview"], r#"{"b":true}"#);
    assert_eq!(rows[2]["content_size"], C_BODY_LEN);
    assert_eq!(
        rows[2]["content_preview"],
        "c".repeat(100),
        "first 100 bytes"
    );
    assert_eq!(rows[2]["is_expired"], true);
    let mut variants: Vec<&str> = rows[3..]
        .iter()
        .map(|r| r["content_preview"].as_str().expect("preview"))
        .collect();
    variants.sort_unstable();
    assert_eq!(variants, ["bonjour", "hello"]);
    assert_eq!(rows[3]["ttl_remaining"], 3540.0);

    // --- counters, in the listings and at /stats ---
    let expected = json!({
        "a": {"hits": 2, "misses": 1, "stores": 1, "not_modified": 1},
        "b": {"hits": 1, "misses": 1, "stores": 1, "not_modified": 0},
        "c": {"hits": 0, "misses": 1, "stores": 1, "not_modified": 0},
        "v": {"hits": 1, "misses": 2, "stores": 2, "not_modified": 0},
    });
    for body in [&hits, &records] {
        assert_eq!(body["counters"]["hits"], 4);
        assert_eq!(body["counters"]["misses"], 5);
        assert_eq!(body["counters"]["stores"], 5);
        assert_eq!(body["counters"]["hit_ratio"], 0.4444);
    }
    let stats = monitor_json(&app, "/stats").await;
    assert_eq!(
        field_names(&stats),
        sorted(&[
            "backend",
            "evictions",
            "hit_ratio",
            "total",
            "routes",
            "managers"
        ])
    );
    assert_eq!(stats["backend"], backend.name());
    assert_eq!(
        stats["evictions"],
        backend.eviction_count().map_or(Value::Null, Value::from)
    );
    assert_eq!(stats["hit_ratio"], 0.4444);
    assert_eq!(stats["total"]["hits"], 4);
    assert_eq!(stats["total"]["misses"], 5);
    assert_eq!(stats["total"]["stores"], 5);
    assert_eq!(stats["total"]["not_modified"], 1);
    assert_eq!(stats["total"]["backend_errors"], 0);
    assert_eq!(stats["total"]["decode_failures"], 0);
    let routes = stats["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 4);
    for route in routes {
        let name = route["route"].as_str().expect("route name");
        let short = name
            .strip_prefix(&format!("{tag}/"))
            .expect("filtered by tag");
        assert_eq!(route["layers"], 1);
        for (counter, value) in expected[short].as_object().expect("expected") {
            assert_eq!(&route["stats"][counter], value, "{name} {counter}");
        }
    }
    let a = &routes[0];
    assert_eq!(a["route"], format!("{tag}/a"));
    assert_eq!(a["cache_control"], "public, max-age=3600");
    assert_eq!(a["hit_ratio"], 0.6667);
}

#[tokio::test]
async fn json_fields_and_counts_on_memory() {
    check_scenario(Arc::new(MemoryBackend::new()), "mon-memory").await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn json_fields_and_counts_on_redis() {
    if let Some(backend) = common::backend_redis::redis().await {
        check_scenario(backend, "mon-redis").await;
    }
}

#[cfg(feature = "memcached")]
#[tokio::test]
async fn memcached_answers_with_counters_and_says_listing_is_unsupported() {
    let Some(backend) = common::backend_memcached::memcached().await else {
        return;
    };
    let tag = "mon-memcached";
    let clock = ManualClock::new();
    let app = scenario_app(&backend, &clock, tag);
    run_scenario(&app, &backend, &clock).await;

    for (route, rows, totals) in [
        (
            "/cached-hits",
            "cached_hits",
            &["total_hits", "valid_hits", "expired_hits", "unique_routes"][..],
        ),
        (
            "/cached-records",
            "cached_records",
            &[
                "total_records",
                "active_records",
                "expired_records",
                "total_cache_size_bytes",
            ][..],
        ),
    ] {
        let body = monitor_json(&app, route).await;
        let listing = body["listing"].as_str().expect("listing");
        assert!(
            listing.starts_with("unsupported: memcached cannot list keys"),
            "{listing}"
        );
        assert_eq!(body[rows], json!([]));
        for total in totals {
            assert_eq!(body[*total], Value::Null, "{route} {total}");
        }
        assert_eq!(body["counters"]["hits"], 4);
        assert_eq!(body["counters"]["misses"], 5);
        assert_eq!(body["counters"]["stores"], 5);
    }
    let stats = monitor_json(&app, "/stats").await;
    assert_eq!(stats["backend"], "memcached");
    assert_eq!(stats["evictions"], Value::Null);
    assert_eq!(stats["total"]["hits"], 4);

    // Clearing works without listing; the count is unknown.
    let bearer = format!("Bearer {TOKEN}");
    let cleared = post(
        &app,
        &format!("{PREFIX}/clear-path?path=/a"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert_eq!(cleared.json()["exact_count"], false);
    assert!(
        fetch(&app, "/a")
            .await
            .header("cache-status")
            .contains("fwd=miss")
    );
}

#[tokio::test]
async fn listing_is_bounded_by_limit_and_offset() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let cache = layer(
        CacheLayer::builder()
            .backend(Arc::clone(&backend))
            .ttl(Duration::from_secs(3600))
            .name("mon-bounded/items"),
    );
    let app =
        Router::new()
            .route(
                "/items/{id}",
                get(
                    |axum::extract::Path(id): axum::extract::Path<u32>| async move {
                        format!("item {id}")
                    },
                )
                .layer(cache),
            )
            .merge(
                Monitoring::new(Guard::bearer(TOKEN))
                    .backend(Arc::clone(&backend))
                    .default_limit(10)
                    .max_limit(20)
                    .router(PREFIX),
            );
    for i in 0..25 {
        assert_eq!(
            fetch(&app, &format!("/items/{i:02}")).await.status,
            StatusCode::OK
        );
    }
    let paths = |body: &Value, rows: &str| -> Vec<String> {
        body[rows]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["path"].as_str().expect("path").to_owned())
            .collect()
    };

    let first = monitor_json(&app, "/cached-records").await;
    assert_eq!(first["limit"], 10);
    assert_eq!(first["total_records"], 25, "totals count everything");
    assert_eq!(paths(&first, "cached_records").len(), 10);
    assert_eq!(paths(&first, "cached_records")[0], "/items/00");

    let tail = monitor_json(&app, "/cached-hits?limit=5&offset=22").await;
    assert_eq!(
        paths(&tail, "cached_hits"),
        ["/items/22", "/items/23", "/items/24"]
    );
    assert_eq!(tail["total_hits"], 25);
    assert_eq!(tail["offset"], 22);

    let capped = monitor_json(&app, "/cached-hits?limit=5000").await;
    assert_eq!(capped["limit"], 20, "lowered to max_limit");
    assert_eq!(paths(&capped, "cached_hits").len(), 20);

    let past_end = monitor_json(&app, "/cached-records?offset=100").await;
    assert_eq!(paths(&past_end, "cached_records").len(), 0);
    assert_eq!(past_end["total_records"], 25);

    // Pages do not overlap and cover everything.
    let mut all = Vec::new();
    for offset in (0..25).step_by(10) {
        let page = monitor_json(&app, &format!("/cached-hits?offset={offset}")).await;
        all.extend(paths(&page, "cached_hits"));
    }
    let expected: Vec<String> = (0..25).map(|i| format!("/items/{i:02}")).collect();
    assert_eq!(all, expected);

    for bad in ["/cached-hits?limit=abc", "/cached-records?offset=-1"] {
        let reply = monitor(&app, bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.json()["error"], "bad_request");
    }
}

#[tokio::test]
async fn guard_rejects_missing_and_wrong_tokens() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let clock = ManualClock::new();
    let app = scenario_app(&backend, &clock, "mon-guard");
    fetch(&app, "/a").await;

    for route in ["/cached-hits", "/cached-records", "/stats", "/metrics"] {
        let uri = format!("{PREFIX}{route}");
        let missing = fetch(&app, &uri).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{route}");
        assert!(
            missing.header("www-authenticate").starts_with("Bearer "),
            "{route}: {}",
            missing.header("www-authenticate")
        );
        assert_eq!(missing.header("content-type"), "application/json");
        assert_eq!(missing.json()["error"], "unauthorized");
        assert!(!String::from_utf8_lossy(&missing.body).contains("/a"));

        for wrong in [
            "Bearer test-token-7f3a9c1e5b2d4a6f8e0d".to_owned(),
            "Bearer short".to_owned(),
            format!("Basic {TOKEN}"),
            format!("Bearer {TOKEN}x"),
        ] {
            let reply = get_with(&app, &uri, &[("authorization", &wrong)]).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{route} {wrong}");
            assert!(reply.header("www-authenticate").starts_with("Bearer "));
            assert_eq!(reply.json()["error"], "unauthorized");
        }
        assert_eq!(monitor(&app, route).await.status, StatusCode::OK, "{route}");
    }
    let wrong = get_with(
        &app,
        &format!("{PREFIX}/stats"),
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert!(
        wrong
            .header("www-authenticate")
            .contains("error=\"invalid_token\"")
    );

    // clear-path is guarded too: nothing is cleared without the token.
    let denied = post(&app, &format!("{PREFIX}/clear-path?path=/a"), &[]).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert!(
        fetch(&app, "/a")
            .await
            .header("cache-status")
            .contains("hit")
    );

    // The dashboard page needs no token and holds no data.
    for uri in [format!("{PREFIX}/"), PREFIX.to_owned()] {
        let page = fetch(&app, &uri).await;
        assert_eq!(page.status, StatusCode::OK, "{uri}");
        assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
        assert!(
            page.header("content-security-policy")
                .contains("default-src 'none'")
        );
        let html = String::from_utf8_lossy(&page.body);
        assert!(html.contains("id=\"hits\""));
        assert!(!html.contains("example.com") && !html.contains("alpha"));
    }
}

#[tokio::test]
async fn predicate_guard_answers_403() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let app: Router = Monitoring::new(Guard::predicate(|parts| {
        parts.headers.get("x-admin").is_some_and(|v| v == "yes")
    }))
    .backend(backend)
    .router("/admin/cache/");
    let denied = fetch(&app, "/admin/cache/stats").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.header("www-authenticate"), "");
    assert_eq!(denied.json()["error"], "forbidden");
    let allowed = get_with(&app, "/admin/cache/stats", &[("x-admin", "yes")]).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(allowed.json()["backend"], "memory");
}

#[tokio::test]
async fn clear_path_route_clears_and_counts() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let clock = ManualClock::new();
    let app = scenario_app(&backend, &clock, "mon-clear");
    fetch(&app, "/b?x=1").await;
    fetch(&app, "/b?x=2").await;
    fetch(&app, "/a").await;
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];

    let exact_only = post(&app, &format!("{PREFIX}/clear-path?path=/b"), &auth).await;
    assert_eq!(exact_only.status, StatusCode::OK);
    assert_eq!(
        exact_only.json(),
        json!({"path": "/b", "include_params": false, "cleared": 0, "exact_count": true})
    );
    let all = post(
        &app,
        &format!("{PREFIX}/clear-path?path=%2Fb&include_params=true"),
        &auth,
    )
    .await;
    assert_eq!(all.json()["cleared"], 2);
    let left = monitor_json(&app, "/cached-hits").await;
    assert_eq!(left["total_hits"], 1);
    assert_eq!(left["cached_hits"][0]["path"], "/a");

    let missing = post(&app, &format!("{PREFIX}/clear-path"), &auth).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let bad_flag = post(
        &app,
        &format!("{PREFIX}/clear-path?path=/a&include_params=maybe"),
        &auth,
    )
    .await;
    assert_eq!(bad_flag.status, StatusCode::BAD_REQUEST);
    let cross_site = post(
        &app,
        &format!("{PREFIX}/clear-path?path=/a"),
        &[auth[0], ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert_eq!(
        monitor(&app, "/clear-path?path=/a").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(monitor_json(&app, "/cached-hits").await["total_hits"], 1);
}

#[tokio::test]
async fn prometheus_output_parses_and_matches_the_json() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let clock = ManualClock::new();
    let tag = "mon-prom";
    let app = scenario_app(&backend, &clock, tag);
    run_scenario(&app, &backend, &clock).await;
    // A bypass, so a `reason` series is non-zero.
    post(&app, "/b", &[]).await;

    let reply = monitor(&app, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(reply.body.to_vec()).expect("utf-8");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text");
    let stats = monitor_json(&app, "/stats").await;

    // JSON: route -> counter -> value.
    let mut json_counters: BTreeMap<(String, String), u64> = BTreeMap::new();
    for route in stats["routes"].as_array().expect("routes") {
        let name = route["route"].as_str().expect("route").to_owned();
        for (counter, value) in route["stats"].as_object().expect("stats") {
            json_counters.insert(
                (name.clone(), counter.clone()),
                value.as_u64().expect("u64"),
            );
        }
    }
    assert_eq!(
        json_counters[&(format!("{tag}/b"), "bypass_method".to_owned())],
        1
    );

    let mut prom_counters: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut evictions = None;
    for sample in &scrape.samples {
        let prometheus_parse::Value::Counter(value) = sample.value else {
            panic!("{} is not a counter", sample.metric);
        };
        let name = sample
            .metric
            .strip_prefix("axum_cachex_")
            .and_then(|n| n.strip_suffix("_total"))
            .unwrap_or_else(|| panic!("unexpected metric {}", sample.metric));
        if name == "backend_evictions" {
            assert_eq!(sample.labels.get("backend"), Some("memory"));
            evictions = Some(value as u64);
            continue;
        }
        if name == "manager_events" {
            // The managers' counters: covered by tests/manager_metrics.rs.
            assert!(sample.labels.get("manager").is_some() && sample.labels.get("event").is_some());
            continue;
        }
        let route = sample.labels.get("route").expect("route label").to_owned();
        if !route.starts_with(&format!("{tag}/")) {
            continue;
        }
        let counter = if name == "bypasses" {
            format!("bypass_{}", sample.labels.get("reason").expect("reason"))
        } else {
            name.to_owned()
        };
        assert!(
            prom_counters
                .insert((route, counter), value as u64)
                .is_none(),
            "duplicate series"
        );
    }
    assert_eq!(prom_counters, json_counters);
    assert_eq!(prom_counters[&(format!("{tag}/a"), "hits".to_owned())], 2);
    assert_eq!(evictions, backend.eviction_count());
    assert!(
        scrape.docs.contains_key("axum_cachex_hits_total")
            || scrape.docs.contains_key("axum_cachex_hits"),
        "HELP lines: {:?}",
        scrape.docs.keys().collect::<Vec<_>>()
    );
}

/// The dashboard rendered by a real browser: its own script fetches the
/// guarded routes with the token from the URL fragment and fills the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_counters_and_entries_in_chromium() {
    let chromium = match std::env::var("AXUM_CACHEX_CHROMIUM") {
        Ok(path) if !path.is_empty() => path,
        _ if common::servers_required() => {
            panic!(
                "AXUM_CACHEX_CHROMIUM is not set: the dashboard test needs Chromium; run scripts/test.sh"
            )
        }
        _ => {
            eprintln!("skipping: AXUM_CACHEX_CHROMIUM not set (run scripts/test.sh)");
            return;
        }
    };
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let clock = ManualClock::new();
    let app = scenario_app(&backend, &clock, "mon-browser");
    run_scenario(&app, &backend, &clock).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let profile = std::env::temp_dir().join(format!(
        "axum-cachex-chromium-{}-{port}",
        std::process::id()
    ));
    let output = tokio::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("http://127.0.0.1:{port}{PREFIX}/#token={TOKEN}"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run chromium");
    server.abort();
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "chromium failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let text_of = |id: &str| -> String {
        let marker = format!("id=\"{id}\"");
        let start = dom
            .find(&marker)
            .unwrap_or_else(|| panic!("no #{id} in {dom}"));
        let after = &dom[start..];
        let open = after.find('>').expect("tag end") + 1;
        let close = after[open..].find('<').expect("text end");
        after[open..open + close].to_owned()
    };
    assert!(
        text_of("status-text").starts_with("updated"),
        "{}",
        text_of("status-text")
    );
    assert_eq!(text_of("hits"), "4");
    assert_eq!(text_of("misses"), "5");
    assert_eq!(text_of("stores"), "5");
    assert_eq!(text_of("not-modified"), "1");
    assert_eq!(text_of("hit-ratio"), "44.4%");
    assert_eq!(text_of("entries-active"), "4");
    assert_eq!(text_of("entries-total"), "5");
    assert_eq!(text_of("evictions"), "0");
    assert_eq!(text_of("backend"), "backend: memory");
    for path in ["/a", "/b", "/c", "/v"] {
        assert!(
            dom.contains(&format!("<code>{path}</code>")),
            "{path} in the entries table"
        );
    }
    assert!(dom.contains("x=1&amp;y=2&amp;y=3"), "query shown");
    assert!(dom.contains("mon-browser/v"), "route table");
    assert!(dom.contains(">expired<"), "the expired entry is marked");
    assert!(!dom.contains(TOKEN), "the token is not left in the page");
}

/// A cache layer wrapped around the whole app (monitoring routes included)
/// must never store an authorized answer and hand it to a client without
/// the token.
#[tokio::test]
async fn router_wide_cache_layer_never_serves_monitoring_answers_without_the_token() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let app: Router = Monitoring::new(Guard::bearer(TOKEN))
        .backend(Arc::clone(&backend))
        .router(PREFIX)
        .layer(layer(
            CacheLayer::builder()
                .backend(Arc::clone(&backend))
                .ttl(Duration::from_secs(3600))
                .public()
                .name("mon-wrapped/all"),
        ));
    for route in ["/stats", "/cached-hits", "/cached-records", "/metrics"] {
        assert_eq!(monitor(&app, route).await.status, StatusCode::OK, "{route}");
        assert_eq!(monitor(&app, route).await.status, StatusCode::OK, "{route}");
        let anonymous = fetch(&app, &format!("{PREFIX}{route}")).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{route}");
    }
    let listed = monitor_json(&app, "/cached-hits").await;
    assert_eq!(
        listed["total_hits"], 0,
        "a monitoring answer was stored: {listed}"
    );
}

/// Two apps in one process, each with its own registry and the same layer
/// names: each monitoring view counts only its own layers, and a view
/// without a registry counts none.
#[tokio::test]
async fn two_registries_in_one_process_do_not_mix() {
    async fn app(registry: &Registry) -> Router {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let cache = layer(
            CacheLayer::builder()
                .backend(Arc::clone(&backend))
                .ttl(Duration::from_secs(60))
                .name("shared-name")
                .registry(registry),
        );
        Router::new()
            .route("/x", get(|| async { "x" }).layer(cache))
            .merge(
                Monitoring::new(Guard::bearer(TOKEN))
                    .backend(backend)
                    .registry(registry)
                    .router(PREFIX),
            )
    }
    let (first, second) = (Registry::new(), Registry::new());
    let one = app(&first).await;
    let two = app(&second).await;
    for _ in 0..3 {
        assert_eq!(fetch(&one, "/x").await.status, StatusCode::OK);
    }
    fetch(&two, "/x").await;

    let stats_one = monitor_json(&one, "/stats").await;
    let stats_two = monitor_json(&two, "/stats").await;
    assert_eq!(stats_one["routes"].as_array().map(Vec::len), Some(1));
    assert_eq!(stats_one["routes"][0]["layers"], 1, "{stats_one}");
    assert_eq!(stats_one["total"]["misses"], 1, "{stats_one}");
    assert_eq!(stats_one["total"]["hits"], 2, "{stats_one}");
    assert_eq!(stats_two["routes"][0]["layers"], 1, "{stats_two}");
    assert_eq!(stats_two["total"]["misses"], 1, "{stats_two}");
    assert_eq!(stats_two["total"]["hits"], 0, "{stats_two}");
    assert_eq!(first.layer_reports()[0].stats.hits, 2);
    assert_eq!(second.layer_reports()[0].stats.hits, 0);

    // `layer_filter` narrows a registry further.
    let filtered: Router = Monitoring::new(Guard::bearer(TOKEN))
        .backend(Arc::new(MemoryBackend::new()))
        .registry(&first)
        .layer_filter(|name| name != "shared-name")
        .router(PREFIX);
    let stats = monitor_json(&filtered, "/stats").await;
    assert_eq!(stats["routes"], json!([]), "filtered out: {stats}");

    let bare: Router = Monitoring::new(Guard::bearer(TOKEN))
        .backend(Arc::new(MemoryBackend::new()))
        .router(PREFIX);
    let stats = monitor_json(&bare, "/stats").await;
    assert_eq!(
        stats["routes"],
        json!([]),
        "no registry, no layers: {stats}"
    );
    assert_eq!(stats["total"]["hits"], 0);
}
