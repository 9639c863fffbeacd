//! Red-team round 20: fresh hits answered in `CacheService::call`, the
//! Memcached reply/key changes, the Redis key building.
//!
//! Written by a fresh-context reviewer from the changes and the rules, not
//! our tests. Tests marked `REGRESSION GUARD` passed on the reviewed code;
//! every other one failed because of a real bug, since fixed: the layer no
//! longer reserves the inner service's readiness (a fresh hit held it), and
//! an entry with more than 1024 distinct header names is not served (adding
//! the layer's fields to a full header map panicked).
//! Memcached tests need `AXUM_CACHEX_MEMCACHED_SERVERS` (the fake-server
//! guard does not). The span check (`decision` recorded on hits and misses)
//! is not here: `tracing-subscriber` is not a dev-dependency of this crate,
//! and `tracing` alone cannot name the `Current` type a subscriber must
//! return. It was checked out of tree with a `Registry` layer and holds.

mod common;

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use axum_cachex::{
    CacheLayer, ManualClock, Stale,
    backend::{Backend, MemoryBackend},
};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

// ---------------------------------------------------------------------------
// Readiness-reserving services, built exactly like tower's own (the crate's
// dev-dependency on tower has only the `util` feature, so `tower::limit` and
// `tower::buffer` are not compiled in): `poll_ready` reserves, `call`
// consumes the reservation, a clone starts without one.
// ---------------------------------------------------------------------------

/// `tower::limit::ConcurrencyLimit`: `poll_ready` acquires a permit of a
/// semaphore shared by all clones, the response future holds it until it
/// completes.
struct Limit<S> {
    inner: S,
    semaphore: Arc<Semaphore>,
    acquiring: Option<BoxFut<OwnedSemaphorePermit>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<S: Clone> Clone for Limit<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            semaphore: Arc::clone(&self.semaphore),
            acquiring: None,
            permit: None,
        }
    }
}

impl<S, R> Service<R> for Limit<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFut<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.permit.is_none() {
            let semaphore = Arc::clone(&self.semaphore);
            let acquiring = self.acquiring.get_or_insert_with(|| {
                Box::pin(async move { semaphore.acquire_owned().await.expect("never closed") })
            });
            let permit = std::task::ready!(acquiring.as_mut().poll(cx));
            self.acquiring = None;
            self.permit = Some(permit);
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let permit = self
            .permit
            .take()
            .expect("poll_ready must be called first (as tower's ConcurrencyLimit)");
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            drop(permit);
            res
        })
    }
}

#[derive(Clone)]
struct LimitLayer(Arc<Semaphore>);

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;
    fn layer(&self, inner: S) -> Limit<S> {
        Limit {
            inner,
            semaphore: Arc::clone(&self.0),
            acquiring: None,
            permit: None,
        }
    }
}

type Job = (Request<Body>, oneshot::Sender<Response<Body>>);

/// `tower::buffer::Buffer`: `poll_ready` reserves a slot of a bounded
/// queue shared by all clones, `call` sends the request through it; one
/// worker task serves the queue.
struct Queue {
    tx: mpsc::Sender<Job>,
    reserving: Option<BoxFut<mpsc::OwnedPermit<Job>>>,
    permit: Option<mpsc::OwnedPermit<Job>>,
}

impl Clone for Queue {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            reserving: None,
            permit: None,
        }
    }
}

impl Queue {
    /// A queue of `bound` slots in front of `svc`.
    fn new<S>(svc: S, bound: usize) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send,
    {
        let (tx, mut rx) = mpsc::channel::<Job>(bound);
        tokio::spawn(async move {
            while let Some((req, reply)) = rx.recv().await {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let res = svc.oneshot(req).await.expect("infallible");
                    let _ = reply.send(res);
                });
            }
        });
        Self {
            tx,
            reserving: None,
            permit: None,
        }
    }
}

impl Service<Request<Body>> for Queue {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFut<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.permit.is_none() {
            let tx = self.tx.clone();
            let reserving = self.reserving.get_or_insert_with(|| {
                Box::pin(async move { tx.reserve_owned().await.expect("worker alive") })
            });
            let permit = std::task::ready!(reserving.as_mut().poll(cx));
            self.reserving = None;
            self.permit = Some(permit);
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let permit = self
            .permit
            .take()
            .expect("poll_ready must be called first (as tower's Buffer)");
        let (reply, answer) = oneshot::channel();
        permit.send((req, reply));
        Box::pin(async move { Ok(answer.await.expect("worker answers")) })
    }
}

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

/// A handler answering its path, counting its runs.
fn handler(
    runs: Arc<AtomicUsize>,
) -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |req: Request<Body>| {
        let runs = Arc::clone(&runs);
        async move {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, Infallible>(Response::new(Body::from(format!(
                "{} #{n}",
                req.uri().path()
            ))))
        }
    })
}

fn cache_layer() -> CacheLayer {
    CacheLayer::builder()
        .backend(Arc::new(MemoryBackend::new()))
        .ttl(Duration::from_secs(60))
        .build()
        .expect("layer")
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "example.com")
        .body(Body::empty())
        .expect("request")
}

struct Reply {
    status: StatusCode,
    cache_status: String,
    body: Bytes,
}

/// `poll_ready` (bounded: a deadlock fails the test instead of hanging it),
/// then `call`, then the whole body.
async fn send<S>(svc: &mut S, req: Request<Body>, who: &str) -> Reply
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    tokio::time::timeout(Duration::from_secs(3), svc.ready())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{who}: the service did not become ready within 3 s: the inner \
                 service's reservations are held by idle clones of the cache service \
                 (each answered a hit without calling the inner service it made ready)"
            )
        })
        .expect("ready");
    let res = tokio::time::timeout(Duration::from_secs(3), svc.call(req))
        .await
        .unwrap_or_else(|_| panic!("{who}: response timed out"))
        .expect("response");
    let status = res.status();
    let cache_status = res
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        cache_status,
        body,
    }
}

// ---------------------------------------------------------------------------
// 1. Fresh hits answered in `call` keep the inner service's reservation.
// ---------------------------------------------------------------------------

/// The cache layer outermost, a concurrency limit of 1 inside it, two
/// clones of the stack (two connections, two callers): after a fresh hit on
/// one clone, the other clone can never become ready again. `call` answered
/// the hit without calling (or dropping) the inner service that `poll_ready`
/// made ready, so that idle clone keeps the only permit forever. Before the
/// change the ready inner service moved into the response future and its
/// permit was released when the hit completed.
#[tokio::test]
async fn hit_on_one_clone_must_not_starve_other_clones_behind_concurrency_limit() {
    let runs = Arc::new(AtomicUsize::new(0));
    let semaphore = Arc::new(Semaphore::new(1));
    let stack = ServiceBuilder::new()
        .layer(cache_layer())
        .layer(LimitLayer(Arc::clone(&semaphore)))
        .service(handler(Arc::clone(&runs)));
    let mut a = stack.clone();
    let mut b = stack.clone();

    let miss = send(&mut a, get("/a"), "a, miss").await;
    assert_eq!(miss.body, "/a #1");
    let hit = send(&mut a, get("/a"), "a, hit").await;
    assert_eq!(hit.body, "/a #1");
    assert!(hit.cache_status.contains("hit"), "{}", hit.cache_status);
    // Nothing is in flight any more: the permit must be free.
    assert_eq!(
        semaphore.available_permits(),
        1,
        "a completed hit left the concurrency limit's permit reserved in an idle clone"
    );
    let other = send(&mut b, get("/b"), "b, miss after a's hit").await;
    assert_eq!(other.body, "/b #2");
}

/// Same with a `Buffer`-style queue of one slot under the cache layer: a hit
/// leaves the reserved queue slot in the idle clone, and every other clone
/// waits for it forever.
#[tokio::test]
async fn hit_on_one_clone_must_not_hold_the_buffer_slot() {
    let runs = Arc::new(AtomicUsize::new(0));
    let queue = Queue::new(handler(Arc::clone(&runs)), 1);
    let stack = ServiceBuilder::new().layer(cache_layer()).service(queue);
    let mut a = stack.clone();
    let mut b = stack.clone();

    assert_eq!(send(&mut a, get("/a"), "a, miss").await.body, "/a #1");
    let hit = send(&mut a, get("/a"), "a, hit").await;
    assert!(hit.cache_status.contains("hit"), "{}", hit.cache_status);
    let other = send(&mut b, get("/b"), "b, miss after a's hit").await;
    assert_eq!(other.body, "/b #2");
}

/// Many callers mixing hits and misses through one shared stack (cache
/// outermost, then another layer, then a limit of 2), each caller a clone
/// that is reused for its requests as a connection reuses its service:
/// every caller must finish. After two callers each answered a hit their
/// idle clones hold both permits and all the others deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_hits_and_misses_over_many_clones_do_not_deadlock() {
    let runs = Arc::new(AtomicUsize::new(0));
    let semaphore = Arc::new(Semaphore::new(2));
    let stack = ServiceBuilder::new()
        .layer(cache_layer())
        .map_response(|res: Response<Body>| res)
        .layer(LimitLayer(Arc::clone(&semaphore)))
        .service(handler(Arc::clone(&runs)));
    // Warm one key so that hits exist from the start.
    let mut warm = stack.clone();
    send(&mut warm, get("/hot"), "warm-up").await;
    drop(warm);

    let mut callers = Vec::new();
    for caller in 0..6 {
        let mut svc = stack.clone();
        callers.push(tokio::spawn(async move {
            for i in 0..10 {
                // Cold misses and hits alternate, the last one a hit.
                let path = if i % 2 == 1 {
                    "/hot".to_owned()
                } else {
                    format!("/cold/{caller}/{i}")
                };
                let reply = send(&mut svc, get(&path), &format!("caller {caller}, {path}")).await;
                assert_eq!(reply.status, StatusCode::OK);
            }
            // The caller stays connected (its clone alive) while the others
            // still work, as an idle keep-alive connection does.
            svc
        }));
    }
    let mut idle = Vec::new();
    for caller in callers {
        match caller.await {
            Ok(svc) => idle.push(svc),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        semaphore.available_permits(),
        2,
        "idle callers hold the limit's permits after their last (hit) request"
    );
    drop(idle);
}

/// One long-lived service instance (as a `Buffer` worker or an
/// application's handle keeps it), a limit of 1 under the cache: a
/// stale-while-revalidate answer spawns the background refresh, then a
/// fresh hit on another key answered in `call` keeps the permit in the idle
/// instance, so the refresh can never run its handler while only fresh hits
/// arrive. Before the change the hit's future consumed the permit and gave
/// it back at once.
#[tokio::test]
async fn fresh_hit_must_not_starve_the_background_refresh() {
    let runs = Arc::new(AtomicUsize::new(0));
    let semaphore = Arc::new(Semaphore::new(1));
    let clock = ManualClock::new();
    let layer = CacheLayer::builder()
        .backend(Arc::new(MemoryBackend::new()))
        .ttl(Duration::from_secs(10))
        .stale_ttl(Duration::from_secs(600))
        .stale(Stale::Revalidate)
        .clock(clock.clock())
        .build()
        .expect("layer");
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .layer(LimitLayer(Arc::clone(&semaphore)))
        .service(handler(Arc::clone(&runs)));

    assert_eq!(send(&mut svc, get("/a"), "miss /a").await.body, "/a #1");
    clock.advance(Duration::from_secs(11));
    assert_eq!(send(&mut svc, get("/b"), "miss /b").await.body, "/b #2");
    // /a is now stale (within its revalidate window), /b fresh.
    let stale = send(&mut svc, get("/a"), "stale /a").await;
    assert_eq!(stale.body, "/a #1");
    assert!(
        stale.cache_status.contains("stale-while-revalidate"),
        "{}",
        stale.cache_status
    );
    let fresh = send(&mut svc, get("/b"), "fresh /b").await;
    assert!(fresh.cache_status.contains("hit"), "{}", fresh.cache_status);
    // Give the refresh all the time it needs.
    for _ in 0..200 {
        if runs.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "the background refresh of /a never ran: the idle cache service kept the \
         limit's only permit after a fresh hit"
    );
    assert_eq!(semaphore.available_permits(), 1);
}

/// REGRESSION GUARD (passes): the cache layer innermost, the limit and a
/// queue outside it, many clones mixing hits and misses: nothing deadlocks
/// and every permit comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_cache_innermost_under_limit_and_queue() {
    let runs = Arc::new(AtomicUsize::new(0));
    let semaphore = Arc::new(Semaphore::new(1));
    let cached = ServiceBuilder::new()
        .layer(LimitLayer(Arc::clone(&semaphore)))
        .layer(cache_layer())
        .service(handler(Arc::clone(&runs)));
    let queued = Queue::new(cached, 1);
    let mut callers = Vec::new();
    for caller in 0..4 {
        let mut svc = queued.clone();
        callers.push(tokio::spawn(async move {
            for i in 0..10 {
                let path = if i % 3 == 0 {
                    format!("/cold/{caller}/{i}")
                } else {
                    "/hot".to_owned()
                };
                let reply = send(&mut svc, get(&path), &format!("caller {caller}")).await;
                assert_eq!(reply.status, StatusCode::OK);
            }
            svc
        }));
    }
    let mut idle = Vec::new();
    for caller in callers {
        match caller.await {
            Ok(svc) => idle.push(svc),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(semaphore.available_permits(), 1);
}

// ---------------------------------------------------------------------------
// 1b. A stored record the store hands back must never make a hit panic.
// ---------------------------------------------------------------------------

/// A record planted in the store (through the public `Backend::set`, as any
/// writer of a shared store can) with as many distinct header names as a
/// `HeaderMap` holds: it decodes, it is fresh, and `from_entry` copies its
/// headers into a map presized to at most 1024 slots and then *appends*
/// `Cache-Control`, `ETag` and `Age` — `HeaderMap::append` panics
/// ("size overflows MAX_SIZE"). Since this round the panic happens inside
/// `CacheService::call` itself. A bad record must be a miss (or at least an
/// answer), never a panic.
#[tokio::test]
async fn planted_record_with_a_full_header_map_is_not_a_panic() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    planted_record_is_answered(backend).await;
}

/// A fresh record whose header map is full (24 576 distinct names, the
/// most a `HeaderMap` holds): it decodes, and answering it needs three more.
fn full_header_record() -> (Bytes, usize) {
    use axum_cachex::{CacheEntry, CacheRecord};
    use http::{HeaderMap, HeaderName, HeaderValue};
    use std::time::SystemTime;

    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_static("v");
    for i in 0.. {
        let name = HeaderName::try_from(format!("x-h{i}")).expect("name");
        if headers.try_append(name, value.clone()).is_err() {
            break;
        }
    }
    let names = headers.len();
    let entry = CacheEntry {
        status: StatusCode::OK,
        headers,
        body: Bytes::from_static(b"planted"),
        etag: HeaderValue::from_static("\"p\""),
        stored_at: SystemTime::now(),
        fresh_for: Duration::from_secs(60),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        vary_key: Bytes::new(),
    };
    assert!(entry.is_encodable());
    let bytes = CacheRecord::Response(entry).encode();
    assert!(
        CacheRecord::decode(bytes.clone()).is_ok(),
        "the record decodes"
    );
    (bytes, names)
}

/// Plants [`full_header_record`] under `/planted` in `backend`, then asks
/// for it: the answer must come, without a panic.
async fn planted_record_is_answered(backend: Arc<dyn Backend>) {
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&backend))
        .ttl(Duration::from_secs(60))
        .build()
        .expect("layer");
    let key = layer.cache_key(&get("/planted")).expect("cacheable");
    let (bytes, names) = full_header_record();
    backend
        .set(&key, bytes, Some(Duration::from_secs(60)))
        .await
        .expect("plant");

    let runs = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(handler(Arc::clone(&runs)));
    let answered = tokio::spawn(async move {
        let mut svc = svc;
        send(&mut svc, get("/planted"), "planted").await.status
    })
    .await;
    match answered {
        Ok(status) => assert_eq!(status, StatusCode::OK),
        Err(e) if e.is_panic() => panic!(
            "a stored record with {names} distinct header names (it decodes) made the \
             cache layer panic on {}: {:?}",
            backend.name(),
            e.into_panic()
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "<non-string payload>".to_owned())
        ),
        Err(e) => panic!("{e}"),
    }
}

/// A `tower::buffer::Buffer`-style worker: one task owns the service, calls
/// it and hands the response future back to the caller, who polls it.
#[derive(Clone)]
struct Worker {
    tx: mpsc::Sender<WorkerJob>,
}

/// A request for the worker, and where its response future goes.
type WorkerJob = (
    Request<Body>,
    oneshot::Sender<BoxFut<Result<Response<Body>, Infallible>>>,
);

impl Worker {
    fn new<S>(svc: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<WorkerJob>(8);
        tokio::spawn(async move {
            let mut svc = svc;
            while let Some((req, reply)) = rx.recv().await {
                if svc.ready().await.is_err() {
                    return;
                }
                let fut = svc.call(req);
                let _ = reply.send(Box::pin(fut));
            }
        });
        Self { tx }
    }

    /// One request through the worker; `Err` once the worker is gone.
    async fn ask(&self, req: Request<Body>) -> Result<StatusCode, &'static str> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((req, reply))
            .await
            .map_err(|_| "worker gone")?;
        let fut = answer.await.map_err(|_| "worker gone")?;
        let res = tokio::spawn(fut)
            .await
            .map_err(|_| "response future panicked")?
            .expect("infallible");
        Ok(res.status())
    }
}

/// The same planted record behind a `Buffer`-style worker (the cache layer
/// inside it): the panic now happens in `CacheService::call`, that is in
/// the worker task, so one bad record takes down the whole service: every
/// later request, to any path, fails. Before the change `call` only boxed
/// the flow; the panic stayed in that one request's future.
#[tokio::test]
async fn planted_record_must_not_kill_a_buffer_worker() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let layer = CacheLayer::builder()
        .backend(Arc::clone(&backend))
        .ttl(Duration::from_secs(60))
        .build()
        .expect("layer");
    let key = layer.cache_key(&get("/planted")).expect("cacheable");
    let (bytes, _) = full_header_record();
    backend
        .set(&key, bytes, Some(Duration::from_secs(60)))
        .await
        .expect("plant");
    let runs = Arc::new(AtomicUsize::new(0));
    let worker = Worker::new(
        ServiceBuilder::new()
            .layer(layer)
            .service(handler(Arc::clone(&runs))),
    );
    assert_eq!(worker.ask(get("/before")).await, Ok(StatusCode::OK));
    // Whatever happens to this one request…
    let _ = worker.ask(get("/planted")).await;
    // …the service must keep serving the others.
    assert_eq!(
        worker.ask(get("/after")).await,
        Ok(StatusCode::OK),
        "one bad stored record took the whole buffered service down"
    );
}

// ---------------------------------------------------------------------------
// 2. Memcached replies and counters (parsed as bytes since this round).
// ---------------------------------------------------------------------------

#[cfg(feature = "memcached")]
mod memcached {
    use std::time::Duration;

    use axum_cachex::{
        CacheKey,
        backend::{Backend, MemcachedBackend, PathInvalidation},
    };
    use bytes::Bytes;
    use tokio::{
        io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
        net::{TcpListener, TcpStream},
    };

    use super::common;

    const TTL: Option<Duration> = Some(Duration::from_secs(60));

    /// One raw command, its reply read up to `end`.
    async fn raw(addr: &str, command: &[u8], end: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(command).await.expect("write");
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while !reply.ends_with(end) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "server closed after {reply:?}");
            reply.extend_from_slice(&buf[..n]);
        }
        reply
    }

    /// The data block of `key`, read with a raw `get`.
    async fn raw_data(addr: &str, key: &str) -> Vec<u8> {
        let reply = raw(addr, format!("get {key}\r\n").as_bytes(), b"END\r\n").await;
        let eol = reply.windows(2).position(|w| w == b"\r\n").expect("line");
        let header = std::str::from_utf8(&reply[..eol]).expect("ascii");
        let len: usize = header
            .rsplit(' ')
            .next()
            .expect("len")
            .parse()
            .expect("len");
        reply[eol + 2..eol + 2 + len].to_vec()
    }

    /// REGRESSION GUARD (passes): counters keep their meaning as Memcached
    /// writes them: a 20-digit generation, then one space-padded by `decr`,
    /// are read as those numbers (never replaced by a fresh value), and a
    /// `clear_cache` after them still invalidates.
    #[tokio::test]
    async fn guard_counters_twenty_digits_and_space_padded() {
        let Some(servers) = common::memcached_servers() else {
            return;
        };
        let addr = servers[0].clone();
        let prefix = common::unique_prefix("r20c");
        let be = MemcachedBackend::builder()
            .server(addr.clone())
            .key_prefix(&prefix)
            .build()
            .expect("config");
        let key = CacheKey::encode_stored("GET", "example.com", "/c", "");
        let generation = format!("{prefix}@g");
        be.set(&key, Bytes::from_static(b"one"), TTL)
            .await
            .expect("set");
        assert_eq!(
            be.get(&key).await.expect("get").as_deref(),
            Some(&b"one"[..])
        );

        let big = b"18446744073709551614";
        let set = format!("set {generation} 0 0 {}\r\n", big.len());
        let mut command = set.into_bytes();
        command.extend_from_slice(big);
        command.extend_from_slice(b"\r\n");
        assert_eq!(raw(&addr, &command, b"\r\n").await, b"STORED\r\n");
        assert_eq!(be.get(&key).await.expect("get"), None, "a new generation");
        be.set(&key, Bytes::from_static(b"two"), TTL)
            .await
            .expect("set");
        assert_eq!(
            be.get(&key).await.expect("get").as_deref(),
            Some(&b"two"[..])
        );
        assert_eq!(
            raw_data(&addr, &generation).await,
            big,
            "20 digits read as a number"
        );

        let decr = format!("decr {generation} 18446744073709551514\r\n");
        assert_eq!(raw(&addr, decr.as_bytes(), b"\r\n").await, b"100\r\n");
        let padded = raw_data(&addr, &generation).await;
        assert_eq!(
            padded,
            format!("{:<20}", 100).as_bytes(),
            "Memcached pads after decr"
        );
        assert_eq!(be.get(&key).await.expect("get"), None, "a new generation");
        be.set(&key, Bytes::from_static(b"three"), TTL)
            .await
            .expect("set");
        assert_eq!(
            be.get(&key).await.expect("get").as_deref(),
            Some(&b"three"[..])
        );
        assert_eq!(
            raw_data(&addr, &generation).await.trim_ascii(),
            b"100",
            "a padded counter was read as 100, not replaced"
        );
        be.clear_cache().await.expect("clear");
        assert_eq!(be.get(&key).await.expect("get"), None, "cleared");
    }

    /// The same planted record in Memcached (any client of a shared
    /// server can write it): the hit path through the store panics too.
    #[tokio::test]
    async fn planted_record_in_memcached_is_not_a_panic() {
        let Some(servers) = common::memcached_servers() else {
            return;
        };
        let be = MemcachedBackend::builder()
            .servers(servers)
            .key_prefix(common::unique_prefix("r20p"))
            .build()
            .expect("config");
        super::planted_record_is_answered(std::sync::Arc::new(be)).await;
    }

    /// A fake server: answers the first `get` of each connection with
    /// `reply` (`{k}` replaced by the key asked for), then keeps the
    /// connection open without answering anything else.
    async fn fake_server(reply: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let key = line
                        .trim_end()
                        .strip_prefix("get ")
                        .unwrap_or("")
                        .to_owned();
                    let mut out = Vec::new();
                    let mut rest = &reply[..];
                    while let Some(at) = rest.windows(3).position(|w| w == b"{k}") {
                        out.extend_from_slice(&rest[..at]);
                        out.extend_from_slice(key.as_bytes());
                        rest = &rest[at + 3..];
                    }
                    out.extend_from_slice(rest);
                    let _ = stream.get_mut().write_all(&out).await;
                    // Hold the connection; read (and ignore) until closed.
                    let mut sink = Vec::new();
                    let _ = stream.read_to_end(&mut sink).await;
                });
            }
        });
        addr
    }

    /// `[u16 BE key length][logical key][value]`, the backend's envelope.
    fn envelope(logical: &str, value: &[u8]) -> Vec<u8> {
        let mut data = (logical.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(logical.as_bytes());
        data.extend_from_slice(value);
        data
    }

    fn item(key: &str, flags: &str, data: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut out = format!("VALUE {key} {flags} {}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(tail);
        out
    }

    #[derive(Debug, PartialEq)]
    enum Want {
        Hit(&'static [u8]),
        Miss,
        Error,
    }

    /// REGRESSION GUARD (passes): malformed, truncated, oversized and
    /// hostile replies give an error or a miss within the timeout, never a
    /// panic or another key's value; flags up to `u32::MAX` are read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guard_hostile_replies_are_errors_or_misses() {
        let mine = envelope("plain", b"mine");
        let cases: Vec<(&str, Vec<u8>, Want)> = vec![
            (
                "control",
                item("{k}", "51905", &mine, b"\r\nEND\r\n"),
                Want::Hit(b"mine"),
            ),
            (
                "with a cas field",
                [
                    b"VALUE {k} 51905 ".to_vec(),
                    format!("{} 77\r\n", mine.len()).into_bytes(),
                    mine.clone(),
                    b"\r\nEND\r\n".to_vec(),
                ]
                .concat(),
                Want::Hit(b"mine"),
            ),
            (
                "flags u32::MAX (foreign)",
                item("{k}", "4294967295", &mine, b"\r\nEND\r\n"),
                Want::Miss,
            ),
            (
                "another server key",
                item("{k}x", "51905", &mine, b"\r\nEND\r\n"),
                Want::Miss,
            ),
            (
                "another logical key",
                item(
                    "{k}",
                    "51905",
                    &envelope("plaiN", b"theirs"),
                    b"\r\nEND\r\n",
                ),
                Want::Miss,
            ),
            (
                "flags over u32",
                item("{k}", "4294967296", &mine, b"\r\nEND\r\n"),
                Want::Error,
            ),
            (
                "21-digit length",
                b"VALUE {k} 51905 000000000000000000011\r\n".to_vec(),
                Want::Error,
            ),
            (
                "length over 1 GiB",
                b"VALUE {k} 51905 2000000000\r\n".to_vec(),
                Want::Error,
            ),
            (
                "negative length",
                b"VALUE {k} 51905 -1\r\n".to_vec(),
                Want::Error,
            ),
            (
                "truncated block",
                item("{k}", "51905", &mine, b"")[..20].to_vec(),
                Want::Error,
            ),
            (
                "block without CR LF",
                item("{k}", "51905", &mine, b"XYEND\r\n"),
                Want::Error,
            ),
            ("no END", item("{k}", "51905", &mine, b"\r\n"), Want::Error),
            ("endless line", vec![b'V'; 5000], Want::Error),
            ("silence", Vec::new(), Want::Error),
        ];
        for (name, reply, want) in cases {
            let addr = fake_server(reply).await;
            let be = MemcachedBackend::builder()
                .server(addr)
                .key_prefix("r20:")
                .timeout(Duration::from_millis(300))
                .build()
                .expect("config");
            let got = tokio::time::timeout(Duration::from_secs(2), be.get("plain"))
                .await
                .unwrap_or_else(|_| panic!("{name}: hung past the backend timeout"));
            let got = match got {
                Ok(Some(value)) => Want::Hit(if value == b"mine"[..] {
                    b"mine"
                } else {
                    b"other"
                }),
                Ok(None) => Want::Miss,
                Err(_) => Want::Error,
            };
            assert_eq!(got, want, "{name}");
        }
    }
}
