//! The load generator and the scenarios of `benches/http.rs`.

#[cfg(feature = "redis")]
mod stall;
#[cfg(feature = "redis")]
mod tier;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Body, routing::get};
use axum_cachex::{
    CacheLayer,
    backend::{Backend, MemoryBackend},
};
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Throughput and latency of one scenario.
pub(crate) struct Measured {
    pub(crate) requests: usize,
    pub(crate) rps: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

/// Drives `path` with `connections` keep-alive connections for `secs`.
pub(crate) async fn load(
    addr: SocketAddr,
    path: &'static str,
    connections: usize,
    secs: u64,
) -> Measured {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                return latencies;
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await
            else {
                return latencies;
            };
            tokio::spawn(conn);
            while Instant::now() < deadline {
                let req = Request::get(path)
                    .header("host", "bench")
                    .body(Body::empty())
                    .expect("request");
                let start = Instant::now();
                let Ok(res) = sender.send_request(req).await else {
                    break;
                };
                if res.into_body().collect().await.is_err() {
                    break;
                }
                latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            latencies
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    all.sort_unstable();
    let pct = |p: f64| -> Duration {
        if all.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((all.len() as f64 * p) as usize).min(all.len() - 1);
        Duration::from_micros(all[idx] as u64)
    };
    Measured {
        requests: all.len(),
        rps: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn cached(backend: Arc<dyn Backend>) -> CacheLayer {
    CacheLayer::builder()
        .ttl(Duration::from_secs(3600))
        .backend(backend)
        .build()
        .expect("valid layer")
}

/// The app under test: static and cached routes returning the same bytes.
fn app(backends: &[(&'static str, Arc<dyn Backend>)]) -> Router {
    let kb1 = Bytes::from(vec![b'a'; 1024]);
    let kb10 = Bytes::from(vec![b'b'; 10 * 1024]);
    let memory: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Bytes::from(vec![b'c'; 1024])
    };
    let mut router = Router::new()
        .route(
            "/static-1k",
            get({
                let b = kb1.clone();
                move || {
                    let b = b.clone();
                    async move { b }
                }
            }),
        )
        .route(
            "/cached-1k",
            get({
                let b = kb1.clone();
                move || {
                    let b = b.clone();
                    async move { b }
                }
            })
            .layer(cached(Arc::clone(&memory))),
        )
        .route(
            "/static-10k",
            get({
                let b = kb10.clone();
                move || {
                    let b = b.clone();
                    async move { b }
                }
            }),
        )
        .route(
            "/cached-10k",
            get({
                let b = kb10.clone();
                move || {
                    let b = b.clone();
                    async move { b }
                }
            })
            .layer(cached(Arc::clone(&memory))),
        )
        .route("/slow-uncached", get(slow))
        .route("/slow-cached", get(slow).layer(cached(Arc::clone(&memory))));
    for (name, backend) in backends {
        let path: &'static str = Box::leak(format!("/cached-1k-{name}").into_boxed_str());
        router = router.route(
            path,
            get({
                let b = kb1.clone();
                move || {
                    let b = b.clone();
                    async move { b }
                }
            })
            .layer(cached(Arc::clone(backend))),
        );
    }
    router
}

fn row(name: &str, m: &Measured, baseline: Option<&Measured>) {
    let ratio = baseline
        .map(|b| format!("{:>6.2}x", m.rps / b.rps.max(1e-9)))
        .unwrap_or_else(|| "      -".into());
    println!(
        "{name:<28} {:>10.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  {ratio}  ({} requests)",
        m.rps,
        m.p50.as_secs_f64() * 1e3,
        m.p99.as_secs_f64() * 1e3,
        m.requests
    );
}

/// Runs `baseline` and `candidate` in alternating rounds (so drift on a
/// busy machine hits both alike); returns the median round of each and the
/// median of the per-round ratios.
async fn pair(
    addr: SocketAddr,
    baseline: &'static str,
    candidate: &'static str,
    connections: usize,
    secs: u64,
    rounds: usize,
) -> (Measured, Measured, f64) {
    let mut base = Vec::new();
    let mut cand = Vec::new();
    let mut ratios = Vec::new();
    for _ in 0..rounds.max(1) {
        let b = load(addr, baseline, connections, secs).await;
        let c = load(addr, candidate, connections, secs).await;
        ratios.push(c.rps / b.rps.max(1e-9));
        base.push(b);
        cand.push(c);
    }
    let median = |mut v: Vec<Measured>| {
        v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        v.swap_remove(v.len() / 2)
    };
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    (median(base), median(cand), ratio)
}

fn row_ratio(name: &str, m: &Measured, ratio: f64) {
    println!(
        "{name:<28} {:>10.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  {:>6.2}x  ({} requests)",
        m.rps,
        m.p50.as_secs_f64() * 1e3,
        m.p99.as_secs_f64() * 1e3,
        ratio,
        m.requests
    );
}

async fn network_backends() -> Vec<(&'static str, Arc<dyn Backend>)> {
    #[allow(unused_mut)]
    let mut out: Vec<(&'static str, Arc<dyn Backend>)> = Vec::new();
    #[cfg(feature = "redis")]
    if let Some(b) = super_redis().await {
        out.push(("redis", b));
    }
    #[cfg(feature = "redis")]
    if let Some(b) = tier::tiered_redis("bench-tier:") {
        out.push(("redis-tier", Arc::new(b)));
    }
    #[cfg(feature = "redis")]
    if let Some(b) = super_redis_cluster() {
        out.push(("redis-cluster", b));
    }
    #[cfg(feature = "memcached")]
    if let Some(b) = super_memcached().await {
        out.push(("memcached", b));
    }
    out
}

#[cfg(feature = "redis")]
async fn super_redis() -> Option<Arc<dyn Backend>> {
    let url = std::env::var("AXUM_CACHEX_REDIS_URL").ok()?;
    let backend = axum_cachex::backend::RedisBackend::from_url(&url).ok()?;
    Some(Arc::new(backend))
}

#[cfg(feature = "redis")]
fn super_redis_cluster() -> Option<Arc<dyn Backend>> {
    let nodes = std::env::var("AXUM_CACHEX_REDIS_CLUSTER_NODES").ok()?;
    let backend = axum_cachex::backend::RedisConfig::new()
        .cluster_nodes(nodes.split(','))
        .key_prefix("bench-cluster:")
        .build()
        .ok()?;
    Some(Arc::new(backend))
}

#[cfg(feature = "memcached")]
async fn super_memcached() -> Option<Arc<dyn Backend>> {
    let servers = std::env::var("AXUM_CACHEX_MEMCACHED_SERVERS").ok()?;
    let servers: Vec<String> = servers.split(',').map(str::to_owned).collect();
    let backend = axum_cachex::backend::MemcachedBackend::new(servers).ok()?;
    Some(Arc::new(backend))
}

pub(crate) async fn run() {
    #[cfg(feature = "redis")]
    if env_num("BENCH_ONLY_STALL", 0) != 0 {
        let connections = env_num("BENCH_CONNECTIONS", 64) as usize;
        stall::run(connections, env_num("BENCH_SECS", 3)).await;
        return;
    }
    let connections = env_num("BENCH_CONNECTIONS", 64) as usize;
    let secs = env_num("BENCH_SECS", 3);
    let backends = network_backends().await;
    let addr = serve(app(&backends)).await;
    println!(
        "axum-cachex HTTP benchmark: {connections} keep-alive connections, {secs} s per scenario, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    // Warm every cached route so the measured runs are all hits.
    let mut paths = vec!["/cached-1k", "/cached-10k", "/slow-cached"];
    let extra: Vec<&'static str> = backends
        .iter()
        .map(|(name, _)| &*Box::leak(format!("/cached-1k-{name}").into_boxed_str()))
        .collect();
    paths.extend(extra.iter().copied());
    for p in &paths {
        let _ = load_once(addr, p).await;
    }
    let rounds = env_num("BENCH_ROUNDS", 3) as usize;
    println!(
        "each pair runs {rounds} alternating rounds; the row shows the median round (by req/s), the ratio is the median of the per-round ratios"
    );
    let (s1, c1, r1) = pair(addr, "/static-1k", "/cached-1k", connections, secs, rounds).await;
    row("static 1 KiB (baseline)", &s1, None);
    row_ratio("cached 1 KiB, memory", &c1, r1);
    let (_, h1, rh) = pair(
        addr,
        "/static-1k",
        "/static-1k-headers",
        connections,
        secs,
        rounds,
    )
    .await;
    row_ratio("static 1 KiB + hit headers", &h1, rh);
    let (_, _, rch) = pair(
        addr,
        "/static-1k-headers",
        "/cached-1k",
        connections,
        secs,
        rounds,
    )
    .await;
    println!(
        "{:<28} {:>6.2}x  cached 1 KiB vs static with the same headers",
        "", rch
    );
    let mut by_backend = Vec::new();
    for (name, path) in backends.iter().map(|(n, _)| n).zip(extra.iter()) {
        let (_, m, r) = pair(addr, "/static-1k", path, connections, secs, rounds).await;
        row_ratio(&format!("cached 1 KiB, {name}"), &m, r);
        println!("{:<28} {:>6.2}x of memory", "", m.rps / c1.rps.max(1e-9));
        by_backend.push((*name, m.rps));
    }
    let rps = |name: &str| by_backend.iter().find(|(n, _)| *n == name).map(|(_, r)| *r);
    if let (Some(cluster), Some(single)) = (rps("redis-cluster"), rps("redis")) {
        println!(
            "{:<28} {:>6.2}x  Redis Cluster hit vs standalone Redis hit",
            "",
            cluster / single.max(1e-9)
        );
    }
    #[cfg(feature = "redis")]
    tier::invalidation_latency().await;
    let (s10, c10, r10) = pair(
        addr,
        "/static-10k",
        "/cached-10k",
        connections,
        secs,
        rounds,
    )
    .await;
    row("static 10 KiB (baseline)", &s10, None);
    row_ratio("cached 10 KiB, memory", &c10, r10);
    let (su, sc, rs) = pair(
        addr,
        "/slow-uncached",
        "/slow-cached",
        connections,
        secs,
        rounds,
    )
    .await;
    row("5 ms handler, uncached", &su, None);
    row_ratio("5 ms handler, cached", &sc, rs);
    if env_num("BENCH_STAMPEDE", 1) != 0 {
        stampede().await;
    }
    #[cfg(feature = "redis")]
    if env_num("BENCH_STALL", 0) != 0 {
        stall::run(connections, secs).await;
    }
}

async fn load_once(addr: SocketAddr, path: &'static str) -> Option<()> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "bench")
        .body(Body::empty())
        .ok()?;
    sender
        .send_request(req)
        .await
        .ok()?
        .into_body()
        .collect()
        .await
        .ok()?;
    Some(())
}

/// 1000 concurrent requests to a cold key with a 50 ms handler.
async fn stampede() {
    println!();
    println!("stampede: 1000 concurrent requests to a cold key, 50 ms handler");
    for coalesce in [true, false] {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        let layer = CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .backend(Arc::new(MemoryBackend::new()))
            .coalesce(coalesce)
            .build()
            .expect("valid layer");
        let app = Router::new().route(
            "/cold",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    "computed"
                }
            })
            .layer(layer),
        );
        let addr = serve(app).await;
        // Open the connections first so the requests start together.
        let mut senders = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                continue;
            };
            let Ok((sender, conn)) =
                hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await
            else {
                continue;
            };
            tokio::spawn(conn);
            senders.push(sender);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(senders.len()));
        let mut tasks = Vec::new();
        for mut sender in senders {
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let start = Instant::now();
                let req = Request::get("/cold")
                    .header("host", "bench")
                    .body(Body::empty())
                    .expect("request");
                let res = sender.send_request(req).await.ok()?;
                res.into_body().collect().await.ok()?;
                Some(start.elapsed())
            }));
        }
        let mut lat: Vec<Duration> = Vec::new();
        for t in tasks {
            if let Ok(Some(d)) = t.await {
                lat.push(d);
            }
        }
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        println!(
            "coalescing {:<3}  handler runs {:>4}  p50 {:>7.1} ms  p99 {:>7.1} ms  ({} responses)",
            if coalesce { "on" } else { "off" },
            runs.load(Ordering::SeqCst),
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            lat.len()
        );
    }
}
