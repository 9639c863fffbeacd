//! Red-team tests, round 7: the round-6 changes (invalidation generation
//! and lock re-check, the layer answering conditionals on unstored
//! responses, the layer's own `s_maxage`, credentials on the cached path).
//! Each test names the rule it breaks and fails against the code it was
//! written for, unless marked `GUARD`.

use super::support::*;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use axum::{
    Router,
    body::Body,
    http::{HeaderValue, Request, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use axum_cachex::{
    CacheLayer, Freshness, ManualClock,
    backend::{Backend, BackendError, CompareAndSwap, Listing, MemoryBackend},
    session::{SessionConfig, SessionContext, SessionLayer, SessionManager, SessionUser},
};
use bytes::Bytes;

const SECRET: &str = "red-team-secret-of-at-least-32-characters!!";

fn post_req(uri: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::HOST, "shop.example")
        .body(Body::empty())
        .expect("request")
}

/// Lets spawned work (background stores, lock releases) run.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

// ---------------------------------------------------------------------------
// RFC 9111 §5.2.2.10: `s-maxage` is a shared cache's freshness lifetime.
// ---------------------------------------------------------------------------

/// BUG: round 6 made the layer's own `s_maxage` its freshness, but only in
/// `Freshness::Layer` mode. With `Freshness::FromResponse` (documented:
/// "the layer's configured directives are the defaults for responses that
/// carry none (its ttl, its stale window, its `Cache-Control`)"), a
/// response without `Cache-Control` goes out with the layer's
/// `max-age=60, s-maxage=10`, yet it is stored fresh for the layer's ttl
/// (60 s) and served as a `hit` at `Age: 30` — 20 s stale by the very
/// `s-maxage` the layer stamped on it. admit.rs `lifetime` /
/// `default_ttl` read `options.ttl` only, never `options.s_maxage`.
#[tokio::test]
async fn rule9111_5_2_2_10_from_response_mode_serves_past_layer_s_maxage() {
    let clock = ManualClock::new();
    let calls = counter();
    let c = calls.clone();
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .s_maxage(Duration::from_secs(10))
        .freshness(Freshness::FromResponse)
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
    assert!(
        first.header("cache-control").contains("s-maxage=10"),
        "{}",
        first.header("cache-control")
    );
    clock.advance(Duration::from_secs(30));
    let later = send(&app, get_req("/feed")).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a shared cache served a response past its s-maxage: body {:?}, \
         Cache-Control {:?}, Age {:?}, Cache-Status {:?}",
        later.text(),
        later.header("cache-control"),
        later.header("age"),
        later.header("cache-status"),
    );
}

// ---------------------------------------------------------------------------
// README "Shared-cache rules": a credentialed response's Cache-Control says
// `private` (the handler's own too, unless the credential is
// `Authorization`), so that caches downstream do not share it.
// ---------------------------------------------------------------------------

/// BUG: the cache layer sits outside a session layer with a custom token
/// header. The first authenticated request looks anonymous to the cache
/// (it has not learned `X-Auth` yet), so it takes the *cached* path; the
/// session layer marks the response `Credentialed` and `store_response`
/// refuses to store it ("credentials") — but the refusal arm only calls
/// `pass_through`, never `headers::keep_private` (which the `uncached`
/// path applies for the same marker). The handler's `Cache-Control:
/// max-age=60` goes out unchanged: a CDN in front stores alice's account
/// page and serves it to everyone (RFC 9111 §3.5: it cannot see the
/// custom credential). flow.rs `store_response`, `Admission::Refuse` arm.
#[tokio::test]
async fn rule2_credentialed_response_on_cached_path_keeps_shareable_cache_control() {
    let manager = SessionManager::new(
        mem(),
        SessionConfig::builder(SECRET)
            .header_name("X-Auth")
            .build()
            .unwrap(),
    );
    let (_, token) = manager
        .create_session(SessionUser::new("alice"), None, None, None)
        .await
        .unwrap();
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/me",
            get(|ctx: SessionContext| async move {
                let who = match ctx.session().and_then(|s| s.user()) {
                    Some(user) => format!("account of {}", user.user_id),
                    None => "anonymous".to_owned(),
                };
                ([(header::CACHE_CONTROL, "max-age=60")], who)
            }),
        )
        .layer(SessionLayer::new(manager))
        .layer(cache);
    let mut req = get_req("/me");
    req.headers_mut()
        .insert("x-auth", HeaderValue::from_str(&token).unwrap());
    let alice = send(&app, req).await;
    assert_eq!(alice.text(), "account of alice");
    let cc = alice.header("cache-control").to_ascii_lowercase();
    assert!(
        cc.contains("private") || cc.contains("no-store"),
        "alice's page went out with `Cache-Control: {cc}` (cache-status: {}): a CDN \
         that cannot see X-Auth may share it",
        alice.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// RFC 9110 §13.2.1 / §15.4.5: the layer answers the client's conditionals
// itself on responses it does not store — the 304 it makes must not lose
// what the handler's 200 told this client.
// ---------------------------------------------------------------------------

/// BUG: on the cached path the layer strips the client's `If-None-Match`,
/// the handler answers 200 with its `ETag` and a `Set-Cookie` (a renewed
/// session cookie, a logout), admission refuses to store it
/// ("set-cookie"), and `pass_through` turns it into a 304 built by
/// `response::not_modified`, which copies only the §15.4.5 metadata: the
/// `Set-Cookie` meant for this client is silently dropped (the browser
/// never learns its new cookie). The handler never chose a 304; the layer
/// did, and lost state it had no right to discard — the freshen path keeps
/// a 304's `Set-Cookie` for the client (round 2), and a handler answering
/// the conditional itself would keep it too. flow.rs `pass_through` /
/// response.rs `not_modified`.
#[tokio::test]
async fn rule9110_15_4_5_layer_made_304_drops_handlers_set_cookie() {
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/page",
        get(|| async {
            (
                [
                    (header::ETAG, "\"v1\""),
                    (header::SET_COOKIE, "session=renewed; Path=/; HttpOnly"),
                ],
                "page body",
            )
        })
        .layer(cache),
    );
    let mut req = get_req("/page");
    req.headers_mut()
        .insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""));
    let got = send(&app, req).await;
    assert!(
        got.status == StatusCode::OK || !got.header("set-cookie").is_empty(),
        "the layer answered {} and dropped the handler's Set-Cookie \
         (headers: {:?}, cache-status: {})",
        got.status,
        got.headers,
        got.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// RFC 9111 §4.4: once a successful unsafe request has invalidated a URI,
// what was read for it before is not stored.
// ---------------------------------------------------------------------------

/// A memory backend whose reads of lock keys may be slow to answer: the
/// value is read at once (as Redis would at the moment the command
/// arrives) but handed back only when the test opens the gate — network
/// latency on the reply.
#[derive(Debug)]
struct SlowLockReads {
    inner: MemoryBackend,
    armed: AtomicBool,
    entered: tokio::sync::Notify,
    gate: tokio::sync::Notify,
}

impl SlowLockReads {
    fn new() -> Self {
        Self {
            inner: MemoryBackend::new(),
            armed: AtomicBool::new(false),
            entered: tokio::sync::Notify::new(),
            gate: tokio::sync::Notify::new(),
        }
    }
}

#[async_trait]
impl Backend for SlowLockReads {
    fn name(&self) -> &'static str {
        "slow-lock-reads"
    }
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let value = self.inner.get(key).await;
        if key.starts_with("http:lock:") && self.armed.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.gate.notified().await;
        }
        value
    }
    async fn set(&self, key: &str, v: Bytes, ttl: Option<Duration>) -> Result<(), BackendError> {
        self.inner.set(key, v, ttl).await
    }
    async fn add(&self, key: &str, v: Bytes, ttl: Option<Duration>) -> Result<bool, BackendError> {
        self.inner.add(key, v, ttl).await
    }
    async fn replace(
        &self,
        key: &str,
        v: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.inner.replace(key, v, ttl).await
    }
    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        self.inner.take(key).await
    }
    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        self.inner.delete(key).await
    }
    fn listing(&self) -> Option<&dyn Listing> {
        self.inner.listing()
    }
    fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
        self.inner.compare_and_swap()
    }
}

/// A resource whose GET reads the current version; POST bumps it.
fn versioned(cache: CacheLayer, version: Arc<AtomicUsize>) -> Router {
    let post_side = version.clone();
    Router::new()
        .route(
            "/item",
            get(move || {
                let v = version.load(Ordering::SeqCst);
                async move { format!("v{v}") }
            })
            .post(move || {
                post_side.fetch_add(1, Ordering::SeqCst);
                async { "updated" }
            }),
        )
        .layer(cache)
}

/// BUG: `Pending::store` checks the invalidation generation *before*
/// `lock::still_held`, then writes after it. The lock check is a backend
/// round trip; a POST on the same layer that completes meanwhile (bump,
/// delete of the key and the lock) is not seen: the lock was read before
/// the POST deleted it, the generation was read before the POST bumped
/// it. The GET that read v0 before the POST then stores v0 after the
/// POST's invalidation, fresh for a whole ttl: every later GET gets the
/// pre-POST response. The check and the write are not ordered with the
/// await between them; flow.rs `Pending::store` (re-check `outdated`
/// after `still_held`, or after the write).
#[tokio::test]
async fn rule9111_4_4_post_during_lock_check_lets_pre_post_response_be_stored() {
    let backend = Arc::new(SlowLockReads::new());
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .cross_instance_lock(Duration::from_secs(5))
        .backend_timeout(Duration::from_secs(20))
        .backend(backend.clone())
        .build()
        .unwrap();
    let version = Arc::new(AtomicUsize::new(0));
    let app = versioned(cache, version.clone());

    // The GET reads v0, then checks its lock before storing; the reply of
    // that check is slow.
    backend.armed.store(true, Ordering::SeqCst);
    let entered = backend.entered.notified();
    let first = {
        let app = app.clone();
        tokio::spawn(async move { send(&app, get_req("/item")).await })
    };
    tokio::time::timeout(HANG, entered)
        .await
        .expect("the lock was never checked");

    // The write completes: version 1, the key and the lock deleted.
    assert_eq!(send(&app, post_req("/item")).await.status, StatusCode::OK);
    assert_eq!(version.load(Ordering::SeqCst), 1);

    backend.gate.notify_one();
    let first = tokio::time::timeout(HANG, first).await.unwrap().unwrap();
    assert_eq!(first.text(), "v0", "read before the POST");
    settle().await;
    let later = send(&app, get_req("/item")).await;
    assert_eq!(
        later.text(),
        "v1",
        "a GET after the POST got the invalidated response (cache-status: {:?})",
        later.header("cache-status")
    );
}

/// BUG: the cross-instance half of the invalidation fix stops the store
/// but not the sharing. Instance A's leader reads v0 under its lock;
/// instance B handles a POST (version 1, key and lock deleted). A GET on
/// A that starts strictly after the POST has completed finds nothing
/// stored and joins A's in-process flight. When the leader finishes,
/// `Pending::store` sees the lock gone (`still_held` false: "may predate
/// that invalidation: it is not stored") — yet `Pending::finish` still
/// publishes `Outcome::Made(v0)`, because `finish_with` only looks at the
/// in-process generation. The waiter is served v0 as `collapsed`, a
/// response read before a write it came after. flow.rs `store_buffered`
/// / `Pending::finish_with` (the lost lock is not carried to the
/// outcome).
#[tokio::test]
async fn rule9111_4_4_waiter_gets_response_the_lost_lock_refused_to_store() {
    let backend = mem();
    let layer = || {
        CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .cross_instance_lock(Duration::from_secs(5))
            .backend(backend.clone())
            .build()
            .unwrap()
    };
    let version = Arc::new(AtomicUsize::new(0));
    let hold = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Notify::new());
    let router = |cache: CacheLayer| {
        let (version, post_side) = (version.clone(), version.clone());
        let (hold, entered, gate) = (hold.clone(), entered.clone(), gate.clone());
        Router::new()
            .route(
                "/item",
                get(move || {
                    let v = version.load(Ordering::SeqCst);
                    let (hold, entered, gate) = (hold.clone(), entered.clone(), gate.clone());
                    async move {
                        if hold.swap(false, Ordering::SeqCst) {
                            entered.notify_one();
                            gate.notified().await;
                        }
                        format!("v{v}")
                    }
                })
                .post(move || {
                    post_side.fetch_add(1, Ordering::SeqCst);
                    async { "updated" }
                }),
            )
            .layer(cache)
    };
    let instance_a = router(layer());
    let instance_b = router(layer());

    // A's leader reads v0, slowly, under the lock.
    hold.store(true, Ordering::SeqCst);
    let in_handler = entered.notified();
    let leader = {
        let app = instance_a.clone();
        tokio::spawn(async move { send(&app, get_req("/item")).await })
    };
    tokio::time::timeout(HANG, in_handler)
        .await
        .expect("handler never ran");

    // B: the write completes.
    assert_eq!(
        send(&instance_b, post_req("/item")).await.status,
        StatusCode::OK
    );

    // A: a read strictly after the write.
    let after = {
        let app = instance_a.clone();
        tokio::spawn(async move { send(&app, get_req("/item")).await })
    };
    settle().await;
    gate.notify_one();
    let leader = tokio::time::timeout(HANG, leader).await.unwrap().unwrap();
    assert_eq!(leader.text(), "v0", "started before the POST");
    let after = tokio::time::timeout(HANG, after).await.unwrap().unwrap();
    assert_eq!(
        after.text(),
        "v1",
        "a GET that began after the POST got the response read before it \
         (cache-status: {:?})",
        after.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// RFC 9110 §13.2.1: the layer took the client's conditionals off the
// request, so it must evaluate them on every response it forwards.
// ---------------------------------------------------------------------------

/// A body of unknown length (no size hint): streamed by the layer.
struct Streamed(Option<Bytes>);

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// BUG: round 6 made the layer answer the conditionals it strips on every
/// response it does not store (`pass_through`), but a storable response
/// whose length is unknown goes `store_response` → `store_streaming`,
/// which streams it whole and never looks at `self.cond`. A client
/// revalidating with `If-None-Match` equal to the handler's own `ETag`
/// gets a full 200 — neither the handler (its request had no
/// conditionals) nor the layer evaluated the precondition (RFC 9110
/// §13.1.2 / §13.2.1). Any streamed body (a `Body::from_stream`, a file,
/// a proxied upstream) is affected on every miss. flow.rs
/// `store_response` (`None` arm) / `store_streaming`.
#[tokio::test]
async fn rule9110_13_2_1_if_none_match_ignored_on_streamed_response() {
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/report",
        get(|| async {
            (
                [(header::ETAG, "\"r1\"")],
                Body::new(Streamed(Some(Bytes::from_static(b"a long report")))),
            )
                .into_response()
        })
        .layer(cache),
    );
    let mut req = get_req("/report");
    req.headers_mut()
        .insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"r1\""));
    let got = send(&app, req).await;
    assert_eq!(
        got.status,
        StatusCode::NOT_MODIFIED,
        "If-None-Match matching the handler's ETag got {} with {} bytes (cache-status: {})",
        got.status,
        got.body.len(),
        got.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// RFC 9211 §2.3: `fwd-status` is the status the next hop returned; absent,
// it is taken to be the response's own.
// ---------------------------------------------------------------------------

/// BUG: round 2 made `answer_bytes` record `fwd-status=200` when the layer
/// turns the handler's 200 into a 304; round 6's new `pass_through` does
/// the same conversion (here for a `private` response the layer does not
/// store) but leaves the status alone. The client gets a 304 with
/// `Cache-Status: axum-cachex; fwd=miss; detail=private`, which by RFC
/// 9211 §2.3 says the handler itself answered 304 — it answered 200.
/// flow.rs `pass_through` (no `CacheStatus` to update).
#[tokio::test]
async fn rule9211_304_made_by_pass_through_lacks_fwd_status() {
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/account",
        get(|| async {
            (
                [
                    (header::ETAG, "\"a1\""),
                    (header::CACHE_CONTROL, "private, max-age=60"),
                ],
                "account page",
            )
        })
        .layer(cache),
    );
    let mut req = get_req("/account");
    req.headers_mut()
        .insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a1\""));
    let got = send(&app, req).await;
    assert_eq!(got.status, StatusCode::NOT_MODIFIED);
    let status = got.header("cache-status");
    assert!(
        status.contains("fwd-status=200"),
        "the layer made a 304 from the handler's 200, but Cache-Status says {status:?}"
    );
}

/// BUG: round 2 made the `Set-Cookie` of the handler's revalidation 304
/// reach the client (RFC 9111 §4.3.4: the response is the stored one
/// updated with the 304's fields) — but only when the client gets a 200.
/// A browser revalidating its own copy sends `If-None-Match`; `freshen`
/// builds the merged entry (cookie included) and hands it to
/// `answer_entry`, whose 304 branch (`response::not_modified_from_entry`)
/// copies only the §15.4.5 metadata: the renewed cookie is dropped for
/// exactly the clients that revalidate, which is most of them. flow.rs
/// `freshen` → `answer_entry` / response.rs `not_modified`.
#[tokio::test]
async fn rule9111_4_3_4_set_cookie_of_revalidation_304_dropped_for_conditional_client() {
    let clock = ManualClock::new();
    let calls = counter();
    let c = Arc::clone(&calls);
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(10))
        .clock(clock.clock())
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/page",
        get(move |headers: axum::http::HeaderMap| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n > 1 && headers.get(header::IF_NONE_MATCH).is_some() {
                    let mut res = StatusCode::NOT_MODIFIED.into_response();
                    res.headers_mut()
                        .insert(header::ETAG, HeaderValue::from_static("\"v1\""));
                    res.headers_mut().insert(
                        header::SET_COOKIE,
                        HeaderValue::from_static("consent=renewed; Path=/"),
                    );
                    return res;
                }
                ([(header::ETAG, "\"v1\"")], "page v1").into_response()
            }
        })
        .layer(layer),
    );
    assert_eq!(send(&app, get_req("/page")).await.text(), "page v1");
    clock.advance(Duration::from_secs(11));
    let mut req = get_req("/page");
    req.headers_mut()
        .insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""));
    let res = send(&app, req).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "not revalidated");
    assert!(
        res.header("set-cookie").contains("consent=renewed"),
        "the revalidating client got {} without the 304's Set-Cookie \
         (cache-status: {})",
        res.status,
        res.header("cache-status")
    );
}
