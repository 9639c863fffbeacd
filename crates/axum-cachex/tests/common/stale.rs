//! Stale serving, request coalescing, `Vary` and `If-Modified-Since`, run
//! on every backend. Handlers block on a gate the test opens, so "served
//! without waiting" is proven by the test not hanging — no wall-clock
//! assertions.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get as route_get,
};
use axum_cachex::{CacheLayer, ManualClock, Stale, backend::Backend};
use http::{Request, Response};
use tokio::sync::Semaphore;
use tower::{Layer, ServiceExt, service_fn};

use super::http::{Counter, Reply, get_ok, get_with, send};

type B = Arc<dyn Backend>;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Fails the test instead of hanging forever if the layer waits where it
/// must not. Not a performance bound: generous on purpose.
async fn no_hang<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(secs(30), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still waiting after 30 s (the layer blocked)"),
    }
}

/// Polls `cond` until it holds (bounded), yielding in between.
async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..2000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{what}: condition never held");
}

/// A route at `path` whose handler counts its runs and, for the runs where
/// `waits(n)` holds, blocks until the test adds a permit to `gate`; then
/// answers `make(n)`.
fn gated<R: IntoResponse + 'static>(
    path: &str,
    layer: CacheLayer,
    counter: &Counter,
    gate: &Arc<Semaphore>,
    waits: fn(usize) -> bool,
    make: fn(usize) -> R,
) -> Router {
    let c = counter.clone();
    let gate = Arc::clone(gate);
    Router::new().route(
        path,
        route_get(move || {
            let n = c.hit();
            let gate = Arc::clone(&gate);
            async move {
                if waits(n) {
                    let _permit = gate.acquire().await.expect("gate");
                }
                make(n)
            }
        })
        .layer(layer),
    )
}

/// `/r` answering `v{n}`, every run after the first waiting for the gate.
fn gated_router(layer: CacheLayer, counter: &Counter, gate: &Arc<Semaphore>) -> Router {
    gated("/r", layer, counter, gate, |n| n > 1, |n| format!("v{n}"))
}

pub async fn stale_while_revalidate_serves_at_once_and_refreshes_once(be: B) {
    let clock = ManualClock::new();
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(secs(10))
        .stale_ttl(secs(60))
        .stale(Stale::Revalidate)
        .clock(clock.clock())
        .build()
        .expect("layer");
    let stats = layer.clone();
    let c = Counter::default();
    let gate = Arc::new(Semaphore::new(0));
    let app = gated_router(layer, &c, &gate);
    assert_eq!(get_ok(&app, "/r").await.body, "v1");
    clock.advance(secs(15));
    // The refresh handler blocks on the gate, so these only return because
    // the stale entry is served without waiting for it.
    let mut replies = Vec::new();
    for _ in 0..5 {
        replies.push(no_hang("stale hit", get_ok(&app, "/r")).await);
    }
    for r in &replies {
        assert_eq!(r.body, "v1");
        assert_eq!(r.header("age"), "15");
        assert_eq!(
            r.cache_status(),
            "axum-cachex; hit; ttl=-5; detail=stale-while-revalidate"
        );
    }
    eventually("refresh started", async || c.get() == 2).await;
    assert_eq!(
        stats.stats().revalidations,
        1,
        "refreshes are deduplicated per key"
    );
    gate.add_permits(10);
    // Normally v2. On a loaded machine the refresh's store can time out
    // against a network backend (250 ms): that fails open, and a later
    // stale hit starts another refresh (v3, …). Either way the stale body
    // is replaced.
    eventually("refreshed body served", async || {
        get_ok(&app, "/r").await.body != "v1"
    })
    .await;
    assert!(
        get_ok(&app, "/r")
            .await
            .cache_status()
            .starts_with("axum-cachex; hit; ttl=")
    );
}

pub async fn failed_refresh_keeps_stale_entry(be: B) {
    let clock = ManualClock::new();
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(secs(10))
        .stale_ttl(secs(60))
        .stale(Stale::Revalidate)
        .clock(clock.clock())
        .build()
        .expect("layer");
    let c = Counter::default();
    let app = super::layer::router_with(layer, &c, |n| {
        if n == 1 {
            (StatusCode::OK, "good".to_owned())
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("broken {n}"))
        }
    });
    get_ok(&app, "/r").await;
    clock.advance(secs(15));
    assert_eq!(get_ok(&app, "/r").await.body, "good");
    eventually("refresh ran", async || c.get() == 2).await;
    // The failed refresh left the stale entry; the next stale hit tries again.
    eventually("stale still served", async || {
        let r = get_ok(&app, "/r").await;
        r.body == "good" && c.get() >= 3
    })
    .await;
}

fn sie_layer(be: &B, clock: &ManualClock) -> CacheLayer {
    CacheLayer::builder()
        .backend(Arc::clone(be))
        .ttl(secs(10))
        .stale_ttl(secs(60))
        .stale(Stale::Error)
        .clock(clock.clock())
        .build()
        .expect("layer")
}

pub async fn stale_if_error_serves_old_body_on_500(be: B) {
    let clock = ManualClock::new();
    let layer = sie_layer(&be, &clock);
    let stats = layer.clone();
    let c = Counter::default();
    let app = super::layer::router_with(layer, &c, |n| {
        if n == 1 {
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/x-old")],
                "old body".to_owned(),
            )
        } else {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                format!("error {n}"),
            )
        }
    });
    get_ok(&app, "/r").await;
    clock.advance(secs(15));
    let r = get_ok(&app, "/r").await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::OK, &b"old body"[..])
    );
    assert_eq!(r.header("content-type"), "text/x-old");
    assert_eq!(
        r.cache_status(),
        "axum-cachex; fwd=stale; fwd-status=500; ttl=-5; detail=stale-if-error"
    );
    assert_eq!(c.get(), 2, "the handler was tried");
    assert_eq!(stats.stats().stale_if_error_served, 1);
    // Past the window the error goes through.
    clock.advance(secs(60));
    let r = get_ok(&app, "/r").await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::INTERNAL_SERVER_ERROR, &b"error 3"[..])
    );
}

pub async fn stale_if_error_serves_old_body_on_handler_error(be: B) {
    let clock = ManualClock::new();
    let layer = sie_layer(&be, &clock);
    let c = Counter::default();
    let cc = c.clone();
    let svc = layer.layer(service_fn(move |_req: Request<Body>| {
        let n = cc.hit();
        async move {
            if n == 1 {
                Ok(Response::new(Body::from("old body")))
            } else {
                Err(std::io::Error::other("database down"))
            }
        }
    }));
    let req = || {
        Request::get("/h")
            .header("host", "example.com")
            .body(Body::empty())
            .expect("req")
    };
    let first = svc.clone().oneshot(req()).await.expect("first response");
    assert_eq!(first.status(), StatusCode::OK);
    clock.advance(secs(15));
    let r = svc
        .clone()
        .oneshot(req())
        .await
        .expect("stale served instead of the error");
    assert_eq!(r.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body, "old body");
    clock.advance(secs(60));
    assert!(
        svc.clone().oneshot(req()).await.is_err(),
        "error after the window"
    );
    assert_eq!(c.get(), 3);
}

pub async fn concurrent_cold_requests_run_handler_once(be: B) {
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(secs(60))
        .build()
        .expect("layer");
    let stats = layer.clone();
    let c = Counter::default();
    let gate = Arc::new(Semaphore::new(0));
    let app = gated(
        "/cold",
        layer,
        &c,
        &gate,
        |_| true,
        |n| {
            (
                [(header::HeaderName::from_static("x-run"), n.to_string())],
                format!("computed {n}"),
            )
        },
    );
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move { get_ok(&app, "/cold").await }));
    }
    // Everyone has arrived: one leader in the handler, 99 waiting.
    eventually("99 waiters", async || stats.stats().coalesced_waits == 99).await;
    assert_eq!(c.get(), 1);
    gate.add_permits(100);
    let mut replies: Vec<Reply> = Vec::new();
    for t in tasks {
        replies.push(no_hang("coalesced", t).await.expect("task"));
    }
    assert_eq!(c.get(), 1, "handler ran more than once");
    let first = &replies[0];
    for r in &replies {
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, "computed 1");
        assert_eq!(r.header("etag"), replies[0].header("etag"));
        assert_eq!(r.header("x-run"), "1");
    }
    let collapsed = replies
        .iter()
        .filter(|r| r.cache_status().contains("collapsed"))
        .count();
    assert_eq!(collapsed, 99);
    assert!(!first.body.is_empty());
}

pub async fn uncacheable_response_is_not_shared(be: B) {
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(secs(60))
        .build()
        .expect("layer");
    let stats = layer.clone();
    let c = Counter::default();
    let gate = Arc::new(Semaphore::new(0));
    let app = gated(
        "/me",
        layer,
        &c,
        &gate,
        |_| true,
        |n| {
            (
                [(header::SET_COOKIE, format!("session={n}"))],
                format!("private {n}"),
            )
        },
    );
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move { get_ok(&app, "/me").await }));
    }
    eventually("4 waiters", async || stats.stats().coalesced_waits == 4).await;
    gate.add_permits(100);
    let mut bodies = Vec::new();
    for t in tasks {
        let r = no_hang("uncacheable", t).await.expect("task");
        assert_eq!(
            r.header("set-cookie").trim_start_matches("session="),
            r.body
                .strip_prefix(b"private ")
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        );
        bodies.push(r.body);
    }
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 5, "a Set-Cookie response was shared");
    assert_eq!(c.get(), 5);
}

pub async fn waiter_gives_up_after_timeout(be: B) {
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(secs(60))
        .coalesce_timeout(Duration::from_millis(100))
        .build()
        .expect("layer");
    let c = Counter::default();
    let gate = Arc::new(Semaphore::new(0));
    // The leader (run 1) is stuck until the test ends.
    let app = gated("/r", layer, &c, &gate, |n| n == 1, |n| format!("v{n}"));
    let leader = {
        let app = app.clone();
        tokio::spawn(async move { get_ok(&app, "/r").await })
    };
    eventually("leader in handler", async || c.get() == 1).await;
    let r = no_hang("waiter timeout", get_ok(&app, "/r")).await;
    assert_eq!(r.body, "v2", "the waiter ran the handler itself");
    gate.add_permits(1);
    assert_eq!(leader.await.expect("leader").body, "v1");
}

fn vary_router(be: &B, c: &Counter) -> Router {
    let layer = CacheLayer::builder()
        .backend(Arc::clone(be))
        .ttl(secs(60))
        .build()
        .expect("layer");
    let cc = c.clone();
    Router::new().route(
        "/v",
        route_get(move |headers: HeaderMap| {
            let n = cc.hit();
            async move {
                let lang = headers
                    .get("accept-language")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                let enc = headers
                    .get("accept-encoding")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                (
                    [(header::VARY, "Accept-Language, Accept-Encoding")],
                    format!("{lang}/{enc} #{n}"),
                )
                    .into_response()
            }
        })
        .layer(layer),
    )
}

async fn vary_get(app: &Router, lang: &str, enc: &str) -> Reply {
    let req = Request::get("/v")
        .header("host", "example.com")
        .header("accept-language", lang)
        .header("accept-encoding", enc)
        .body(Body::empty())
        .expect("req");
    send(app, req).await
}

pub async fn vary_keeps_variants_apart(be: B) {
    let c = Counter::default();
    let app = vary_router(&be, &c);
    assert_eq!(vary_get(&app, "fr", "gzip").await.body, "fr/gzip #1");
    assert_eq!(vary_get(&app, "de", "gzip").await.body, "de/gzip #2");
    assert_eq!(vary_get(&app, "fr", "br").await.body, "fr/br #3");
    let hit = vary_get(&app, "fr", " gzip ").await;
    assert_eq!(
        hit.body, "fr/gzip #1",
        "values trimmed of optional whitespace select the stored variant"
    );
    assert!(hit.cache_status().contains("hit"));
    // RFC 9111 §4.1: nothing more is normalised; another case is another
    // variant.
    assert_eq!(vary_get(&app, "FR", "gzip").await.body, "FR/gzip #4");
    assert_eq!(vary_get(&app, "de", "gzip").await.body, "de/gzip #2");
    assert_eq!(vary_get(&app, "fr", "br").await.body, "fr/br #3");
    assert_eq!(c.get(), 4);
    let r = vary_get(&app, "de", "gzip").await;
    let etag = r.header("etag").to_owned();
    let req = Request::get("/v")
        .header("host", "example.com")
        .header("accept-language", "de")
        .header("accept-encoding", "gzip")
        .header("if-none-match", etag)
        .body(Body::empty())
        .expect("req");
    let not_modified = send(&app, req).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        not_modified.header("vary"),
        "Accept-Language, Accept-Encoding"
    );
}

pub async fn if_modified_since_and_precedence(be: B) {
    let c = Counter::default();
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(secs(60))
        .build()
        .expect("layer");
    let app = super::layer::router_with(layer, &c, |n| {
        (
            [(header::LAST_MODIFIED, "Wed, 21 Oct 2015 07:28:00 GMT")],
            format!("doc {n}"),
        )
    });
    let first = get_ok(&app, "/r").await;
    assert_eq!(
        first.header("last-modified"),
        "Wed, 21 Oct 2015 07:28:00 GMT"
    );
    let same = get_with(
        &app,
        "/r",
        "if-modified-since",
        "Wed, 21 Oct 2015 07:28:00 GMT",
    )
    .await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        same.header("last-modified"),
        "Wed, 21 Oct 2015 07:28:00 GMT"
    );
    let later = get_with(
        &app,
        "/r",
        "if-modified-since",
        "Thu, 22 Oct 2015 00:00:00 GMT",
    )
    .await;
    assert_eq!(later.status, StatusCode::NOT_MODIFIED);
    let earlier = get_with(
        &app,
        "/r",
        "if-modified-since",
        "Tue, 20 Oct 2015 07:28:00 GMT",
    )
    .await;
    assert_eq!(
        (earlier.status, earlier.body.as_ref()),
        (StatusCode::OK, &b"doc 1"[..])
    );
    let garbage = get_with(&app, "/r", "if-modified-since", "not a date").await;
    assert_eq!(garbage.status, StatusCode::OK);
    // If-None-Match wins (RFC 9110 §13.2.2): a mismatching tag means 200
    // even though the date would say 304.
    let req = super::http::get("/r")
        .header("if-none-match", "\"nope\"")
        .header("if-modified-since", "Thu, 22 Oct 2015 00:00:00 GMT")
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&app, req).await.status, StatusCode::OK);
    assert_eq!(c.get(), 1);
}

pub async fn cross_instance_lock_computes_once(be: B) {
    // Two layers = two app instances: separate in-process coalescing,
    // one shared backend.
    let instance = || {
        CacheLayer::builder()
            .backend(Arc::clone(&be))
            .ttl(secs(60))
            .cross_instance_lock(secs(10))
            .build()
            .expect("layer")
    };
    let c = Counter::default();
    let gate = Arc::new(Semaphore::new(0));
    let make = |layer: CacheLayer| {
        gated(
            "/shared",
            layer,
            &c,
            &gate,
            |_| true,
            |n| format!("computed {n}"),
        )
    };
    let a = make(instance());
    let b = make(instance());
    let ta = {
        let a = a.clone();
        tokio::spawn(async move { get_ok(&a, "/shared").await })
    };
    eventually("instance A computing", async || c.get() == 1).await;
    let lock = "http:lock:GET|||example.com|||/shared|||";
    assert!(
        be.get(lock).await.expect("get").is_some(),
        "A holds the lock"
    );
    let tb = {
        let b = b.clone();
        tokio::spawn(async move { get_ok(&b, "/shared").await })
    };
    // Let B reach the lock and start polling before A finishes.
    tokio::time::sleep(Duration::from_millis(150)).await;
    gate.add_permits(10);
    let ra = no_hang("instance A", ta).await.expect("A");
    let rb = no_hang("instance B", tb).await.expect("B");
    assert_eq!(ra.body, "computed 1");
    assert_eq!(rb.body, "computed 1", "instance B computed the key again");
    assert!(
        rb.cache_status().contains("collapsed"),
        "{}",
        rb.cache_status()
    );
    assert_eq!(c.get(), 1);
    eventually("lock released", async || {
        be.get(lock).await.expect("get").is_none()
    })
    .await;
}

pub async fn different_variants_do_not_wait_for_each_other(be: B) {
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&be))
        .ttl(secs(60))
        .build()
        .expect("layer");
    let stats = layer.clone();
    let c = Counter::default();
    let gate = Arc::new(Semaphore::new(0));
    let cc = c.clone();
    let g = Arc::clone(&gate);
    let app = Router::new().route(
        "/v",
        route_get(move |headers: HeaderMap| {
            let n = cc.hit();
            let g = Arc::clone(&g);
            async move {
                let lang = headers
                    .get("accept-language")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                // The first run stores the variant set; later "de" runs block.
                if n > 1 && lang == "de" {
                    let _permit = g.acquire().await.expect("gate");
                }
                ([(header::VARY, "Accept-Language")], format!("{lang} #{n}"))
            }
        })
        .layer(layer),
    );
    let lang = |l: &'static str| {
        Request::get("/v")
            .header("host", "example.com")
            .header("accept-language", l)
            .body(Body::empty())
            .expect("req")
    };
    // The set now says the route varies on Accept-Language.
    assert_eq!(send(&app, lang("en")).await.body, "en #1");
    let de = {
        let app = app.clone();
        tokio::spawn(async move { send(&app, lang("de")).await })
    };
    eventually("the de leader is in the handler", async || c.get() == 2).await;
    // A French request is another variant: it must not wait for "de".
    let fr = no_hang("fr beside a blocked de", send(&app, lang("fr"))).await;
    assert_eq!(fr.body, "fr #3");
    assert_eq!(stats.stats().coalesced_waits, 0);
    gate.add_permits(1);
    assert_eq!(no_hang("de", de).await.expect("de").body, "de #2");
    assert_eq!(send(&app, lang("en")).await.body, "en #1", "variants kept");
}
