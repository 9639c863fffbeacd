//! Soak under outages (issue 13): mixed traffic against a real app on Redis
//! and on Memcached while a chaos task kills, restarts and freezes
//! (SIGSTOP/SIGCONT) the backend server. Not a CI test.
//!
//! Run: `cargo bench --bench soak --all-features`. Knobs: `SOAK_SECS`
//! (default 600), `SOAK_BACKEND=redis|memcached|both` (default both),
//! `SOAK_CLIENTS` (default 16). Servers are private processes on free
//! loopback ports: `redis-server` / `memcached` from `PATH`, or
//! `AXUM_CACHEX_REDIS_SERVER_BIN` / `AXUM_CACHEX_MEMCACHED_BIN`.

use std::{
    net::{SocketAddr, TcpListener as StdListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{Path, Request},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use axum_cachex::{
    CacheLayer, StateManager,
    backend::{Backend, MemcachedBackend, MemoryBackend, RedisConfig},
    session::{
        SessionConfig, SessionContext, SessionHandle, SessionLayer, SessionManager, SessionUser,
    },
};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small xorshift generator: the soak needs no cryptographic randomness.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Redis,
    Memcached,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Redis => "Redis",
            Kind::Memcached => "Memcached",
        }
    }
}

/// The backend server of one run: a private process the chaos task kills,
/// restarts and freezes.
struct Server {
    kind: Kind,
    bin: String,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(kind: Kind) -> Self {
        let (var, default) = match kind {
            Kind::Redis => ("AXUM_CACHEX_REDIS_SERVER_BIN", "redis-server"),
            Kind::Memcached => ("AXUM_CACHEX_MEMCACHED_BIN", "memcached"),
        };
        let bin = std::env::var(var)
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| default.to_owned());
        let mut s = Self {
            kind,
            bin,
            port: free_port(),
            child: None,
        };
        s.restart();
        s
    }

    fn restart(&mut self) {
        self.kill();
        let port = self.port.to_string();
        let mut cmd = Command::new(&self.bin);
        match self.kind {
            Kind::Redis => cmd.args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ]),
            Kind::Memcached => cmd.args(["-l", "127.0.0.1", "-p", &port, "-U", "0", "-u", "root"]),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin));
        self.child = Some(child);
        for _ in 0..400 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{} did not start on port {}", self.bin, self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

/// Latencies in fixed buckets (10 µs up to 100 ms, then 1 ms up to 10 s),
/// so the tool's own bookkeeping stays flat in memory.
struct Histogram {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

const FINE: u64 = 10_000;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..2 * FINE).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn record(&self, us: u64) {
        let idx = if us < 100_000 {
            us / 10
        } else {
            (FINE + (us - 100_000) / 1000).min(2 * FINE - 1)
        };
        self.buckets[idx as usize].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    fn percentile(&self, p: f64) -> Duration {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let want = ((total as f64) * p).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want.max(1) {
                let i = i as u64;
                let us = if i < FINE {
                    i * 10 + 10
                } else {
                    100_000 + (i - FINE + 1) * 1000
                };
                return Duration::from_micros(us.min(self.max_us.load(Ordering::Relaxed)));
            }
        }
        Duration::ZERO
    }
}

/// Counters of one run.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    failed: AtomicU64,
    expected_errors: AtomicU64,
    wrong_client: AtomicU64,
    double_consume: AtomicU64,
    session_back: AtomicU64,
    consumed: AtomicU64,
    invalidated: AtomicU64,
    latencies: Histogram,
    /// The slowest request to a cached route (fail-open), in µs.
    cached_max_us: AtomicU64,
}

struct App {
    cache: CacheLayer,
    sessions: SessionManager,
    states: StateManager,
}

fn variant(headers: &HeaderMap) -> String {
    headers
        .get("x-variant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

fn vary(body: String) -> Response {
    (
        [("vary", "X-Variant"), ("cache-control", "max-age=3600")],
        body,
    )
        .into_response()
}

fn unavailable(e: impl ToString) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
}

fn router(app: Arc<App>) -> Router {
    let private = CacheLayer::builder()
        .ttl(Duration::from_secs(3600))
        .backend(app.cache.backend())
        .backend_timeout(Duration::from_millis(150))
        .private_per_user(|parts: &http::request::Parts| {
            parts
                .headers
                .get("x-client")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .build()
        .expect("private layer");
    let shared = Router::new()
        .route(
            "/shared/{n}",
            get(|Path(n): Path<u32>, headers: HeaderMap| async move {
                vary(format!(
                    "shared n={n} v={} auth={}",
                    variant(&headers),
                    header(&headers, "authorization")
                ))
            }),
        )
        .layer(app.cache.clone());
    let private = Router::new()
        .route(
            "/private/{n}",
            get(|Path(n): Path<u32>, headers: HeaderMap| async move {
                vary(format!(
                    "private n={n} v={} client={}",
                    variant(&headers),
                    header(&headers, "x-client")
                ))
            }),
        )
        .layer(private);
    let a = Arc::clone(&app);
    let b = Arc::clone(&app);
    let c = Arc::clone(&app);
    let sessions = Router::new()
        .route(
            "/login",
            post(|ctx: SessionContext, headers: HeaderMap| async move {
                match ctx
                    .login(SessionUser::new(header(&headers, "x-client")))
                    .await
                {
                    Ok(s) => {
                        format!("{} {}", s.id(), s.token().unwrap_or_default()).into_response()
                    }
                    Err(e) => unavailable(e),
                }
            }),
        )
        .route(
            "/me",
            get(|session: Option<SessionHandle>| async move {
                let Some(session) = session else {
                    return StatusCode::UNAUTHORIZED.into_response();
                };
                let Some(user) = session.user() else {
                    return StatusCode::UNAUTHORIZED.into_response();
                };
                let n = session.get::<u64>("n").unwrap_or(0) + 1;
                let _ = session.insert("n", n);
                format!("{} {n}", user.user_id).into_response()
            }),
        )
        .layer(SessionLayer::new(app.sessions.clone()));
    Router::new()
        .merge(shared)
        .merge(private)
        .merge(sessions)
        .route(
            "/invalidate/{n}",
            post(move |Path(n): Path<u32>| {
                let a = Arc::clone(&a);
                async move {
                    let req = Request::get(format!("/shared/{n}"))
                        .header("host", "soak")
                        .body(())
                        .expect("request");
                    match a.cache.invalidate(&req).await {
                        Ok(_) => StatusCode::NO_CONTENT.into_response(),
                        Err(e) => unavailable(e),
                    }
                }
            }),
        )
        .route(
            "/state",
            post(move || {
                let b = Arc::clone(&b);
                async move {
                    match b.states.create_state(None, None).await {
                        Ok(s) => s.into_response(),
                        Err(e) => unavailable(e),
                    }
                }
            }),
        )
        .route(
            "/consume/{state}",
            post(move |Path(state): Path<String>| {
                let c = Arc::clone(&c);
                async move {
                    match c.states.consume_state(&state).await {
                        Ok(_) => StatusCode::OK.into_response(),
                        Err(e @ axum_cachex::state::StateError::Backend { .. }) => unavailable(e),
                        Err(_) => StatusCode::BAD_REQUEST.into_response(),
                    }
                }
            }),
        )
}

type HttpClient = Client<HttpConnector, Body>;

/// Sends one request; `None` on a connection error.
async fn send(
    http: &HttpClient,
    stats: &Stats,
    method: &str,
    uri: String,
    headers: &[(&str, String)],
) -> Option<(StatusCode, String)> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri.clone())
        .header("host", "soak");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(Body::empty()).expect("request");
    let start = Instant::now();
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let res = tokio::time::timeout(Duration::from_secs(10), http.request(req)).await;
    let out = match res {
        Ok(Ok(res)) => {
            let status = res.status();
            match res.into_body().collect().await {
                Ok(b) => Some((status, String::from_utf8_lossy(&b.to_bytes()).into_owned())),
                Err(_) => None,
            }
        }
        _ => None,
    };
    let us = start.elapsed().as_micros().min(u64::MAX as u128) as u64;
    stats.latencies.record(us);
    if uri.contains("/shared/") || uri.contains("/private/") {
        stats.cached_max_us.fetch_max(us, Ordering::Relaxed);
    }
    if out.is_none() {
        stats.failed.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// One simulated client: a mix of cached reads, invalidations, logins,
/// session reads/writes and OAuth states.
async fn client(id: u64, base: String, app: Arc<App>, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let me = format!("c{id}");
    let mut rng = Rng::new(id + 1);
    let mut token: Option<(String, String)> = None;
    let mut dead_tokens: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let op = rng.below(100);
        let n = rng.below(200);
        let v = format!("v{}", rng.below(4));
        if op < 45 {
            // Shared cache; sometimes with a credential (must bypass).
            let auth = (rng.below(5) == 0).then(|| format!("Bearer {me}"));
            let mut h = vec![("x-variant", v.clone())];
            if let Some(a) = &auth {
                h.push(("authorization", a.clone()));
            }
            let want = format!("shared n={n} v={v} auth={}", auth.as_deref().unwrap_or("-"));
            check_cached(
                &stats,
                send(&http, &stats, "GET", format!("{base}/shared/{n}"), &h).await,
                &want,
            );
        } else if op < 65 {
            let h = [("x-variant", v.clone()), ("x-client", me.clone())];
            let want = format!("private n={n} v={v} client={me}");
            check_cached(
                &stats,
                send(&http, &stats, "GET", format!("{base}/private/{n}"), &h).await,
                &want,
            );
        } else if op < 70 {
            expect_ok(
                &stats,
                send(&http, &stats, "POST", format!("{base}/invalidate/{n}"), &[]).await,
            );
        } else if op < 75 || token.is_none() {
            let r = send(
                &http,
                &stats,
                "POST",
                format!("{base}/login"),
                &[("x-client", me.clone())],
            )
            .await;
            if let Some((StatusCode::OK, body)) = &r {
                if let Some((sid, tok)) = body.split_once(' ') {
                    token = Some((sid.to_owned(), tok.to_owned()));
                }
            }
            expect_ok(&stats, r);
        } else if op < 88 {
            let (_, tok) = token.clone().expect("token");
            let r = send(
                &http,
                &stats,
                "GET",
                format!("{base}/me"),
                &[("x-session-token", tok)],
            )
            .await;
            if let Some((StatusCode::OK, body)) = &r {
                if body.split(' ').next() != Some(me.as_str()) {
                    stats.wrong_client.fetch_add(1, Ordering::Relaxed);
                }
            }
            expect_ok(&stats, r);
        } else if op < 91 {
            // Invalidate this client's session; it must never come back.
            let (sid, tok) = token.clone().expect("token");
            if let Ok(true) = app.sessions.invalidate_session(&sid).await {
                stats.invalidated.fetch_add(1, Ordering::Relaxed);
                dead_tokens.push(tok);
                if dead_tokens.len() > 16 {
                    dead_tokens.remove(0);
                }
                token = None;
            }
            if let Some(tok) = dead_tokens.get(rng.below(dead_tokens.len().max(1) as u64) as usize)
            {
                let r = send(
                    &http,
                    &stats,
                    "GET",
                    format!("{base}/me"),
                    &[("x-session-token", tok.clone())],
                )
                .await;
                if let Some((StatusCode::OK, _)) = r {
                    stats.session_back.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            // OAuth state: create, consume twice; only the first may succeed.
            let r = send(&http, &stats, "POST", format!("{base}/state"), &[]).await;
            if let Some((StatusCode::OK, state)) = &r {
                // Each state is consumed here only: two successes are a
                // double consumption (no set of past states to keep, so
                // the tool's own memory stays flat).
                let mut successes = 0;
                for _ in 0..2 {
                    let r = send(
                        &http,
                        &stats,
                        "POST",
                        format!("{base}/consume/{state}"),
                        &[],
                    )
                    .await;
                    if let Some((StatusCode::OK, _)) = r {
                        successes += 1;
                        stats.consumed.fetch_add(1, Ordering::Relaxed);
                        if successes > 1 {
                            stats.double_consume.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if let Some((s, _)) = &r {
                        if s.is_server_error() {
                            stats.expected_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            expect_ok(&stats, r);
        }
    }
}

/// A cached route: fail-open promises an answer, so a 5xx is a failure.
fn check_cached(stats: &Stats, r: Option<(StatusCode, String)>, want: &str) {
    if let Some((status, body)) = r {
        if status.is_server_error() {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        } else if body != want {
            eprintln!("WRONG CLIENT: wanted {want:?}, got {body:?}");
            stats.wrong_client.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A session/state route: a 5xx while the backend is down is expected.
fn expect_ok(stats: &Stats, r: Option<(StatusCode, String)>) {
    if let Some((status, _)) = r {
        if status.is_server_error() {
            stats.expected_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct RunReport {
    kind: Kind,
    secs: u64,
    requests: u64,
    failed: u64,
    expected: u64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    max_cached: Duration,
    violations: [u64; 3],
    consumed: u64,
    invalidated: u64,
    kills: u64,
    freezes: u64,
    rss: Vec<(u64, u64)>,
}

async fn run(kind: Kind, secs: u64, clients: u64) -> RunReport {
    let server = Arc::new(Mutex::new(Server::start(kind)));
    let port = server.lock().expect("lock").port;
    let backend: Arc<dyn Backend> = match kind {
        Kind::Redis => Arc::new(
            RedisConfig::from_url(format!("redis://127.0.0.1:{port}"))
                .command_timeout(Duration::from_millis(200))
                .connect_timeout(Duration::from_millis(200))
                .build()
                .expect("redis backend"),
        ),
        Kind::Memcached => Arc::new(
            MemcachedBackend::builder()
                .server(format!("127.0.0.1:{port}"))
                .timeout(Duration::from_millis(200))
                .build()
                .expect("memcached backend"),
        ),
    };
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(3600))
        .backend(Arc::clone(&backend))
        .backend_timeout(Duration::from_millis(150))
        .build()
        .expect("layer");
    let sessions = SessionManager::new(
        Arc::clone(&backend),
        SessionConfig::builder("soak-secret-soak-secret-soak-secret-0123456789")
            .build()
            .expect("session config"),
    );
    let states = StateManager::new(Arc::clone(&backend));
    let app = Arc::new(App {
        cache,
        sessions,
        states,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let router = router(Arc::clone(&app));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let base = format!("http://{addr}");
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for id in 0..clients {
        tasks.push(tokio::spawn(client(
            id,
            base.clone(),
            Arc::clone(&app),
            Arc::clone(&stats),
            Arc::clone(&stop),
        )));
    }
    // Chaos: every 5-15 s, a kill + restart (down 1-3 s) or a freeze (2-4 s).
    let chaos = {
        let server = Arc::clone(&server);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut rng = Rng::new(0xC4A05);
            let (mut kills, mut freezes) = (0u64, 0u64);
            loop {
                let wait = Duration::from_millis(5000 + rng.below(10_000));
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if stop.load(Ordering::Relaxed) {
                        return (kills, freezes);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let outage = Duration::from_millis(1000 + rng.below(2000));
                if rng.below(2) == 0 {
                    kills += 1;
                    server.lock().expect("lock").kill();
                    tokio::time::sleep(outage).await;
                    let s = Arc::clone(&server);
                    let _ = tokio::task::spawn_blocking(move || s.lock().expect("lock").restart())
                        .await;
                } else {
                    freezes += 1;
                    server.lock().expect("lock").signal("-STOP");
                    tokio::time::sleep(outage + Duration::from_secs(1)).await;
                    server.lock().expect("lock").signal("-CONT");
                }
            }
        })
    };
    let started = Instant::now();
    let mut rss = vec![(0, rss_kib())];
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(
            Duration::from_secs(10)
                .min(Duration::from_secs(secs) - started.elapsed().min(Duration::from_secs(secs))),
        )
        .await;
        let t = started.elapsed().as_secs();
        rss.push((t, rss_kib()));
        eprintln!(
            "[{}] t={t}s requests={} failed={} rss={} KiB",
            kind.name(),
            stats.requests.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed),
            rss_kib()
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let (kills, freezes) = chaos.await.unwrap_or((0, 0));
    RunReport {
        kind,
        secs,
        requests: stats.requests.load(Ordering::Relaxed),
        failed: stats.failed.load(Ordering::Relaxed),
        expected: stats.expected_errors.load(Ordering::Relaxed),
        p50: stats.latencies.percentile(0.5),
        p99: stats.latencies.percentile(0.99),
        max: Duration::from_micros(stats.latencies.max_us.load(Ordering::Relaxed)),
        max_cached: Duration::from_micros(stats.cached_max_us.load(Ordering::Relaxed)),
        violations: [
            stats.wrong_client.load(Ordering::Relaxed),
            stats.double_consume.load(Ordering::Relaxed),
            stats.session_back.load(Ordering::Relaxed),
        ],
        consumed: stats.consumed.load(Ordering::Relaxed),
        invalidated: stats.invalidated.load(Ordering::Relaxed),
        kills,
        freezes,
        rss,
    }
}

/// The memory backend's byte bound under one million distinct keys.
async fn memory_bound() -> (u64, u64, u64) {
    const BOUND: u64 = 16 * 1024 * 1024;
    let backend = MemoryBackend::builder()
        .max_capacity(BOUND)
        .build()
        .expect("memory backend");
    let value = Bytes::from(vec![b'x'; 100]);
    let mut peak = 0;
    for i in 0..1_000_000u32 {
        backend
            .set(&format!("soak:key:{i}"), value.clone(), None)
            .await
            .expect("set");
        if i % 50_000 == 0 {
            peak = peak.max(backend.weighted_size());
        }
    }
    peak = peak.max(backend.weighted_size());
    (BOUND, peak, backend.evictions())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs = env_num("SOAK_SECS", 600);
    let clients = env_num("SOAK_CLIENTS", 16);
    let which = std::env::var("SOAK_BACKEND").unwrap_or_else(|_| "both".to_owned());
    let kinds: Vec<Kind> = match which.as_str() {
        "redis" => vec![Kind::Redis],
        "memcached" => vec![Kind::Memcached],
        _ => vec![Kind::Redis, Kind::Memcached],
    };
    let mut reports = Vec::new();
    for kind in kinds {
        reports.push(run(kind, secs, clients).await);
    }
    let (bound, peak, evictions) = memory_bound().await;

    println!(
        "\n| Backend | Duration | Requests | Failed | Expected 5xx (session/state) | p50 | p99 | max | max (cached routes) | Kills / freezes | Wrong-client | Double consume | Session back |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {} | {} s | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            r.kind.name(),
            r.secs,
            r.requests,
            r.failed,
            r.expected,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            ms(r.max_cached),
            r.kills,
            r.freezes,
            r.violations[0],
            r.violations[1],
            r.violations[2],
        );
    }
    println!();
    for r in &reports {
        println!(
            "{}: {} states consumed once, {} sessions invalidated",
            r.kind.name(),
            r.consumed,
            r.invalidated
        );
    }
    println!("\nProcess memory (VmRSS, MiB):\n");
    let times: Vec<u64> = reports
        .first()
        .map(|r| r.rss.iter().map(|(t, _)| *t).collect())
        .unwrap_or_default();
    print!("| t (s) |");
    for r in &reports {
        print!(" {} |", r.kind.name());
    }
    println!();
    print!("|---|");
    for _ in &reports {
        print!("---|");
    }
    println!();
    for (i, t) in times.iter().enumerate() {
        print!("| {t} |");
        for r in &reports {
            match r.rss.get(i) {
                Some((_, kib)) => print!(" {:.1} |", *kib as f64 / 1024.0),
                None => print!(" |"),
            }
        }
        println!();
    }
    println!(
        "\nMemoryBackend, 1,000,000 distinct keys: bound {} B, peak weighted size {} B, {} evictions: {}",
        bound,
        peak,
        evictions,
        if peak <= bound {
            "within bound"
        } else {
            "BOUND EXCEEDED"
        }
    );
    let violations: u64 = reports
        .iter()
        .map(|r| r.violations.iter().sum::<u64>())
        .sum();
    if violations > 0 || peak > bound {
        eprintln!("INVARIANT VIOLATIONS: {violations}");
        std::process::exit(1);
    }
}
