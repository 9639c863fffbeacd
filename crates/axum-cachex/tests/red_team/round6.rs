//! Red-team tests, round 6 (final sweep). Each test names the rule it
//! breaks and fails against the code it was written for, unless marked
//! `GUARD`.

use super::support::*;
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderValue, Request, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use axum_cachex::{CacheLayer, Freshness, ManualClock, Stale};

fn head_req(uri: &str) -> Request<Body> {
    Request::head(uri)
        .header(header::HOST, "shop.example")
        .body(Body::empty())
        .expect("request")
}

// ---------------------------------------------------------------------------
// RFC 9110 §8.6 / §9.3.2: a HEAD response carries the Content-Length a GET
// would have, or none at all — never a different one.
// ---------------------------------------------------------------------------

/// BUG: on a HEAD miss whose response the layer does not store (here a
/// 404, outside `cacheable_statuses`), `store_response`'s refusal path
/// answers `bodiless_if_head(..)`: the handler's body (of known length,
/// but without a `Content-Length` header yet) is swapped for
/// `Body::empty()`. axum's top-level route then writes `Content-Length: 0`
/// from that empty body, so the HEAD response says 0 where GET sends 9
/// bytes. Lives in flow.rs `bodiless_if_head` (every path that uses it
/// without setting the length: refusals, `too-large`, uncached).
#[tokio::test]
async fn rule9110_head_of_refused_response_says_content_length_zero() {
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/missing",
        get(|| async { (StatusCode::NOT_FOUND, "not found") }).layer(cache),
    );
    let get = send(&app, get_req("/missing")).await;
    assert_eq!(get.body.len(), 9);
    let head = send(&app, head_req("/missing")).await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    let cl = head.header("content-length");
    assert!(
        cl.is_empty() || cl == "9",
        "HEAD Content-Length {cl:?} but GET sends 9 bytes"
    );
}

// ---------------------------------------------------------------------------
// RFC 9111 §4.4: once a successful unsafe request has invalidated a URI,
// what was stored for it before is gone.
// ---------------------------------------------------------------------------

/// Lets spawned work (background refreshes, stores) run.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// A resource whose GET reads the current version and then, when `hold`
/// is armed, waits at a gate before answering: a slow database read.
#[derive(Clone, Default)]
struct Resource {
    version: Arc<AtomicUsize>,
    hold: Arc<std::sync::atomic::AtomicBool>,
    entered: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Notify>,
    gets: Arc<AtomicUsize>,
}

impl Resource {
    fn router(&self, cache: CacheLayer) -> Router {
        let get_side = self.clone();
        let post_side = self.clone();
        Router::new()
            .route(
                "/item",
                get(move || {
                    let r = get_side.clone();
                    async move {
                        r.gets.fetch_add(1, Ordering::SeqCst);
                        let v = r.version.load(Ordering::SeqCst);
                        if r.hold.swap(false, Ordering::SeqCst) {
                            r.entered.notify_one();
                            r.gate.notified().await;
                        }
                        format!("v{v}")
                    }
                })
                .post(move || {
                    let r = post_side.clone();
                    async move {
                        r.version.fetch_add(1, Ordering::SeqCst);
                        "updated"
                    }
                }),
            )
            .layer(cache)
    }
}

fn post_req(uri: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::HOST, "shop.example")
        .body(Body::empty())
        .expect("request")
}

/// BUG: a stale-while-revalidate background refresh that read the
/// resource before a POST changed it is not cancelled by the POST's
/// invalidation. `unsafe_method` deletes the key, but the refresh
/// (`spawn_refresh` → `refresh` → `store_response`) keeps its flight
/// leadership and stores its pre-POST response afterwards, fresh for a
/// whole ttl. Worse, a GET that arrives after the POST has completed
/// finds nothing stored, joins the refresh's flight as a waiter
/// (`join_flight`) and is handed the pre-POST body as `collapsed`. There
/// is no invalidation epoch: flow.rs `unsafe_method` / `refresh` /
/// `Pending::store`, coalesce.rs.
#[tokio::test]
async fn rule9111_4_4_refresh_started_before_post_restores_invalidated_response() {
    let clock = ManualClock::new();
    let backend = mem();
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(10))
        .stale_ttl(Duration::from_secs(60))
        .stale(Stale::Revalidate)
        .backend(backend.clone())
        .clock(clock.clock())
        .build()
        .unwrap();
    let res = Resource::default();
    let app = res.router(cache);

    assert_eq!(send(&app, get_req("/item")).await.text(), "v0");
    clock.advance(Duration::from_secs(15));

    // Stale: served at once, a background refresh starts and reads v0.
    res.hold.store(true, Ordering::SeqCst);
    let entered = res.entered.notified();
    let stale = send(&app, get_req("/item")).await;
    assert_eq!(stale.text(), "v0");
    tokio::time::timeout(HANG, entered)
        .await
        .expect("refresh never ran");

    // The write: version 1, and the URI's entry invalidated.
    let post = send(&app, post_req("/item")).await;
    assert_eq!(post.status, StatusCode::OK);
    assert_eq!(res.version.load(Ordering::SeqCst), 1);

    // A GET strictly after the POST's success.
    let after = {
        let app = app.clone();
        tokio::spawn(async move { send(&app, get_req("/item")).await })
    };
    settle().await;
    res.gate.notify_one();
    let after = tokio::time::timeout(HANG, after).await.unwrap().unwrap();
    settle().await;
    let later = send(&app, get_req("/item")).await;
    assert_eq!(
        (after.text().as_str(), later.text().as_str()),
        ("v1", "v1"),
        "GETs after the POST got the invalidated response \
         (after: {:?}; later: {:?})",
        after.header("cache-status"),
        later.header("cache-status"),
    );
}

/// BUG: the cross-instance lock outlives an invalidation. Instance A
/// misses, takes `lock:{key}` and reads v0; instance B then handles a POST
/// (version 1, the key deleted — the lock is not) and a GET: B finds the
/// lock taken, polls (`lock::acquire`) until A stores its pre-POST v0,
/// and serves that as `Computed`, and v0 stays stored for a whole ttl.
/// lock.rs `acquire` / flow.rs `take_lock` + `unsafe_method`.
#[tokio::test]
async fn rule9111_4_4_cross_instance_lock_serves_response_read_before_post() {
    let backend = mem();
    let layer = || {
        CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .cross_instance_lock(Duration::from_secs(5))
            .backend(backend.clone())
            .build()
            .unwrap()
    };
    let res = Resource::default();
    let instance_a = res.router(layer());
    let instance_b = res.router(layer());

    // A misses, takes the lock and reads v0, slowly.
    res.hold.store(true, Ordering::SeqCst);
    let entered = res.entered.notified();
    let first = {
        let app = instance_a.clone();
        tokio::spawn(async move { send(&app, get_req("/item")).await })
    };
    tokio::time::timeout(HANG, entered)
        .await
        .expect("handler never ran");

    // B: the write, then a read strictly after it.
    assert_eq!(
        send(&instance_b, post_req("/item")).await.status,
        StatusCode::OK
    );
    let after = {
        let app = instance_b.clone();
        tokio::spawn(async move { send(&app, get_req("/item")).await })
    };
    settle().await;
    res.gate.notify_one();
    let first = tokio::time::timeout(HANG, first).await.unwrap().unwrap();
    assert_eq!(first.text(), "v0", "started before the POST");
    let after = tokio::time::timeout(HANG, after).await.unwrap().unwrap();
    let later = send(&instance_b, get_req("/item")).await;
    assert_eq!(
        (after.text().as_str(), later.text().as_str()),
        ("v1", "v1"),
        "reads after the POST got the invalidated response \
         (after: {:?}; later: {:?})",
        after.header("cache-status"),
        later.header("cache-status"),
    );
}

// ---------------------------------------------------------------------------
// RFC 9111 §4.2: a response is fresh while its freshness lifetime exceeds
// its current age — computed from the headers the layer itself stores and
// sends.
// ---------------------------------------------------------------------------

/// Moves `clock` to the next whole second plus `millis`; returns that
/// whole second.
fn align(clock: &ManualClock, millis: u64) -> std::time::SystemTime {
    let now = clock.clock().now();
    let frac = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    clock.advance(Duration::from_nanos(u64::from(1_000_000_000 - frac)));
    let whole = clock.clock().now();
    clock.advance(Duration::from_millis(millis));
    whole
}

/// BUG: the apparent age `now − Date` is truncated to whole seconds
/// (admit.rs `initial_age`: `Duration::from_secs(apparent.as_secs())`),
/// while the lifetime `Expires − Date` is exact. A response received
/// 0.9 s after its `Date` is thus taken as 0.9 s younger than it is, and
/// served as a fresh `hit` for up to a second after its own `Expires`
/// (RFC 9111 §4.2.3: apparent_age = response_time − date_value).
#[tokio::test]
async fn rule9111_4_2_3_apparent_age_truncated_serves_hit_after_expires() {
    let clock = ManualClock::new();
    let date = align(&clock, 900);
    let expires = date + Duration::from_secs(10);
    let calls = counter();
    let c = calls.clone();
    let cache = CacheLayer::builder()
        .freshness(Freshness::FromResponse)
        .backend(mem())
        .clock(clock.clock())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/news",
        get(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                (
                    [
                        (header::DATE, httpdate::fmt_http_date(date)),
                        (header::EXPIRES, httpdate::fmt_http_date(expires)),
                    ],
                    format!("edition {n}"),
                )
            }
        })
        .layer(cache),
    );
    assert_eq!(send(&app, get_req("/news")).await.text(), "edition 1");
    // 10.5 s after Date: half a second past Expires.
    clock.advance(Duration::from_millis(9_600));
    assert!(clock.clock().now() > expires);
    let late = send(&app, get_req("/news")).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "served from the store after its Expires: {:?}, Age {:?}",
        late.header("cache-status"),
        late.header("age"),
    );
}

/// BUG: the layer is a shared cache, and `s-maxage` is the freshness
/// lifetime for shared caches (RFC 9111 §5.2.2.10; it also forbids
/// serving stale). With `.ttl(60).s_maxage(10)` every response says
/// `max-age=60, s-maxage=10`, yet the layer keeps serving it as a fresh
/// `hit` for 60 s — at `Age: 30` a response that is 20 s stale by its own
/// headers, handed to downstream shared caches already expired. The
/// layer's own `s_maxage` never reaches freshness: admit.rs `lifetime`
/// (Layer mode reads only `options.ttl`; the layer's `Cache-Control` is
/// added on the way out, never seen by admission).
#[tokio::test]
async fn rule9111_5_2_2_10_layer_serves_past_its_own_s_maxage() {
    let clock = ManualClock::new();
    let calls = counter();
    let c = calls.clone();
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .s_maxage(Duration::from_secs(10))
        .public()
        .backend(mem())
        .clock(clock.clock())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/feed",
        get(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move { format!("feed {n}") }
        })
        .layer(cache),
    );
    let first = send(&app, get_req("/feed")).await;
    assert!(first.header("cache-control").contains("s-maxage=10"));
    clock.advance(Duration::from_secs(30));
    let later = send(&app, get_req("/feed")).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a shared cache served a response past its s-maxage: \
         Cache-Control {:?}, Age {:?}, Cache-Status {:?}",
        later.header("cache-control"),
        later.header("age"),
        later.header("cache-status"),
    );
}

// ---------------------------------------------------------------------------
// RFC 9110 §13: conditional requests.
// ---------------------------------------------------------------------------

/// BUG: on the forward path the layer strips the client's conditionals
/// before calling the handler (flow.rs `forward`: `strip_conditionals`,
/// "the layer evaluates them itself"), but when admission refuses the
/// response (`Cache-Control: private` here; also `no-store`, `Set-Cookie`,
/// credentials, `Vary: *`) `store_response` returns it untouched and
/// never evaluates them. `If-None-Match` matching the handler's own ETag
/// gets the full 200: neither the handler nor the layer evaluated it
/// (RFC 9110 §13.1.2 / §13.2.1: a 2xx response MUST have it evaluated),
/// and the README's "response `Cache-Control: private` … ETag/304 still
/// work" does not hold. flow.rs `store_response` (Refuse arm).
#[tokio::test]
async fn rule9110_13_if_none_match_ignored_when_response_is_private() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/me",
        get(move |headers: axum::http::HeaderMap| {
            let s = s.clone();
            async move {
                if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
                    s.lock()
                        .unwrap()
                        .push(inm.to_str().unwrap_or_default().to_owned());
                    if inm == "\"v1\"" {
                        return StatusCode::NOT_MODIFIED.into_response();
                    }
                }
                (
                    [
                        (header::ETAG, "\"v1\""),
                        (header::CACHE_CONTROL, "private, max-age=60"),
                    ],
                    "your page",
                )
                    .into_response()
            }
        })
        .layer(cache),
    );
    let first = send(&app, get_req("/me")).await;
    assert_eq!(first.header("etag"), "\"v1\"");
    let mut req = get_req("/me");
    req.headers_mut()
        .insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""));
    let again = send(&app, req).await;
    assert_eq!(
        again.status,
        StatusCode::NOT_MODIFIED,
        "If-None-Match matching the ETag answered {} ({:?}); the handler saw \
         If-None-Match {:?}",
        again.status,
        again.header("cache-status"),
        seen.lock().unwrap(),
    );
}

/// BUG: RFC 9110 §13.1.3: "A recipient MUST ignore the If-Modified-Since
/// header field if … the field value has more than one member". With two
/// `If-Modified-Since` lines the layer reads the first
/// (conditional.rs `Conditions::from_request`: `headers.get(..)`) and
/// answers 304 from it.
#[tokio::test]
async fn rule9110_13_1_3_if_modified_since_with_two_members_not_ignored() {
    let modified = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/doc",
        get(move || async move {
            (
                [(header::LAST_MODIFIED, httpdate::fmt_http_date(modified))],
                "document",
            )
        })
        .layer(cache),
    );
    send(&app, get_req("/doc")).await;
    let mut req = get_req("/doc");
    let later = httpdate::fmt_http_date(modified + Duration::from_secs(3600));
    let earlier = httpdate::fmt_http_date(modified - Duration::from_secs(3600));
    req.headers_mut().append(
        header::IF_MODIFIED_SINCE,
        HeaderValue::from_str(&later).unwrap(),
    );
    req.headers_mut().append(
        header::IF_MODIFIED_SINCE,
        HeaderValue::from_str(&earlier).unwrap(),
    );
    let got = send(&app, req).await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "a two-member If-Modified-Since must be ignored ({:?})",
        got.header("cache-status")
    );
}
