//! Side-by-side HTTP benchmark: the server on one core, the load generator
//! on the other, each a single-threaded Tokio runtime pinned with
//! `core_affinity`, so that neither steals the other's CPU and the ratios
//! say what the server spends per request.
//!
//! Every row is a pair measured in the same run: a baseline route and a
//! candidate route, alternated for `BENCH_ROUNDS` rounds (default 5) of
//! `BENCH_SECS` seconds (default 2) with `BENCH_CONNECTIONS` keep-alive
//! HTTP/1.1 connections (default 32); the ratio is the median of the
//! per-round throughput ratios. Every cached route returns the same 1 KiB
//! as the static route and is a hit after the warm-up.
//!
//! - memory hit vs static route, and vs axum-response-cache 0.5 (the
//!   fastest peer), each serving a 1 KiB hit from process memory;
//! - with `AXUM_CACHEX_REDIS_URL`: Redis, and Redis with the memory tier;
//! - with `AXUM_CACHEX_REDIS_CLUSTER_NODES`: Redis Cluster vs standalone;
//! - with `AXUM_CACHEX_MEMCACHED_SERVERS`: Memcached.
//!
//! Prints the table of issue 14's targets (without the instruction count,
//! which `scripts/bench-table.sh` adds from callgrind). Asserts nothing.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use axum_cachex::{
    CacheLayer,
    backend::{Backend, MemcachedBackend, MemoryBackend, MemoryTier, RedisBackend, RedisConfig},
};
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The network backends the environment names, built on the server's
/// runtime (their connections and tasks live there).
fn network_backends() -> Vec<(&'static str, Arc<dyn Backend>)> {
    let mut out: Vec<(&'static str, Arc<dyn Backend>)> = Vec::new();
    if let Ok(url) = std::env::var("AXUM_CACHEX_REDIS_URL") {
        if let Ok(b) = RedisBackend::from_url(&url) {
            out.push(("redis", Arc::new(b)));
        }
        let tiered = RedisConfig::from_url(url)
            .key_prefix("pinned-tier:")
            .memory_tier(MemoryTier::new(64 << 20))
            .build();
        match tiered {
            Ok(b) => out.push(("tier", Arc::new(b))),
            Err(e) => eprintln!("tiered Redis backend not built: {e}"),
        }
    }
    if let Ok(nodes) = std::env::var("AXUM_CACHEX_REDIS_CLUSTER_NODES") {
        let cluster = RedisConfig::new()
            .cluster_nodes(nodes.split(','))
            .key_prefix("pinned-cluster:")
            .build();
        match cluster {
            Ok(b) => out.push(("cluster", Arc::new(b))),
            Err(e) => eprintln!("Redis Cluster backend not built: {e}"),
        }
    }
    if let Ok(servers) = std::env::var("AXUM_CACHEX_MEMCACHED_SERVERS") {
        if let Ok(b) = MemcachedBackend::new(servers.split(',').map(str::to_owned)) {
            out.push(("memcached", Arc::new(b)));
        }
    }
    out
}

fn layer(backend: Arc<dyn Backend>) -> CacheLayer {
    CacheLayer::builder()
        .ttl(Duration::from_secs(3600))
        .backend(backend)
        .build()
        .expect("valid layer")
}

/// `/static`, `/memory`, `/peer` and one route per network backend, all
/// answering the same 1 KiB.
fn app() -> (Router, Vec<&'static str>) {
    let body = Bytes::from(vec![b'a'; 1024]);
    let handler = move || std::future::ready(body.clone());
    let mut router = Router::new()
        .route("/static", get(handler.clone()))
        .route(
            "/memory",
            get(handler.clone()).layer(layer(Arc::new(MemoryBackend::new()))),
        )
        .route(
            "/peer",
            get(handler.clone()).layer(axum_response_cache::CacheLayer::with_lifespan(
                Duration::from_secs(3600),
            )),
        );
    let mut names = Vec::new();
    for (name, backend) in network_backends() {
        router = router.route(&format!("/{name}"), get(handler.clone()).layer(layer(backend)));
        names.push(name);
    }
    (router, names)
}

/// Starts the server on a thread pinned to `core`; returns its address and
/// the names of the network routes it serves.
fn start_server(core: core_affinity::CoreId) -> (SocketAddr, Vec<&'static str>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        core_affinity::set_for_current(core);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (app, names) = app();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send((listener.local_addr().expect("addr"), names))
                .expect("send");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    rx.recv().expect("server started")
}

/// One keep-alive connection sending `GET path` until `deadline`; returns
/// how many complete responses it read.
async fn drive(addr: SocketAddr, path: &str, deadline: Instant) -> u64 {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return 0;
    };
    let _ = stream.set_nodelay(true);
    let request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").into_bytes();
    let mut buf = vec![0u8; 16 * 1024];
    let mut done = 0;
    while Instant::now() < deadline {
        // A response that never comes ends the connection, not the run.
        if stream.write_all(&request).await.is_err() {
            break;
        }
        let answer = read_response(&mut stream, &mut buf);
        if !tokio::time::timeout(Duration::from_secs(2), answer)
            .await
            .unwrap_or(false)
        {
            break;
        }
        done += 1;
    }
    done
}

/// Reads one response with a `Content-Length` body; false on any error.
async fn read_response(stream: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut len = 0;
    loop {
        let Ok(n) = stream.read(&mut buf[len..]).await else {
            return false;
        };
        if n == 0 {
            return false;
        }
        len += n;
        let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") else {
            if len == buf.len() {
                return false;
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let body: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let total = (end + 4 + body).min(buf.len());
        while len < total {
            let Ok(n) = stream.read(&mut buf[len..total]).await else {
                return false;
            };
            if n == 0 {
                return false;
            }
            len += n;
        }
        return true;
    }
}

/// Requests per second on `path` for `secs` with `connections`.
async fn rate(addr: SocketAddr, path: &str, connections: usize, secs: u64) -> f64 {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let path = path.to_owned();
            tokio::spawn(async move { drive(addr, &path, deadline).await })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap_or(0);
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// The median ratio candidate/baseline over alternating rounds, and the
/// median throughputs.
async fn pair(addr: SocketAddr, baseline: &str, candidate: &str) -> (f64, f64, f64) {
    let connections = env_num("BENCH_CONNECTIONS", 32) as usize;
    let secs = env_num("BENCH_SECS", 2);
    let rounds = env_num("BENCH_ROUNDS", 5).max(1);
    let (mut b, mut c, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let base = rate(addr, baseline, connections, secs).await;
        let cand = rate(addr, candidate, connections, secs).await;
        b.push(base);
        c.push(cand);
        r.push(cand / base.max(1e-9));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(b), median(c), median(r))
}

fn main() {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (server_core, client_core) = match cores.as_slice() {
        [a, b, ..] => (*a, *b),
        _ => {
            eprintln!("needs two cores to pin the server and the client apart");
            return;
        }
    };
    let (addr, names) = start_server(server_core);
    core_affinity::set_for_current(client_core);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // Warm-up: every cached route stores its entry.
        for path in ["/static", "/memory", "/peer"]
            .into_iter()
            .map(str::to_owned)
            .chain(names.iter().map(|n| format!("/{n}")))
        {
            for _ in 0..3 {
                let soon = Instant::now() + Duration::from_millis(20);
                drive(addr, &path, soon).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        println!("| path | baseline req/s | candidate req/s | ratio | target |");
        println!("|---|---:|---:|---:|---:|");
        let row = |label: &str, (b, c, r): (f64, f64, f64), target: &str| {
            println!("| {label} | {b:.0} | {c:.0} | {r:.2}× | {target} |");
        };
        row(
            "memory hit vs static route, 1 KiB",
            pair(addr, "/static", "/memory").await,
            "≥ 0.95×",
        );
        row(
            "memory hit vs axum-response-cache 0.5",
            pair(addr, "/peer", "/memory").await,
            "≥ 1.0×",
        );
        let label = |name: &str| match name {
            "tier" => "two-tier hit (in-process tier) vs static route",
            "redis" => "Redis hit vs static route",
            "cluster" => "Redis Cluster hit vs static route",
            "memcached" => "Memcached hit vs static route",
            _ => "other",
        };
        let target = |name: &str| match name {
            "tier" => "≥ 0.93×",
            "redis" => "≥ 0.6×",
            "memcached" => "≥ 0.45×",
            _ => "",
        };
        for name in &names {
            let path = format!("/{name}");
            row(label(name), pair(addr, "/static", &path).await, target(name));
        }
        if names.contains(&"cluster") && names.contains(&"redis") {
            row(
                "Redis Cluster hit vs standalone Redis hit",
                pair(addr, "/redis", "/cluster").await,
                "≥ 0.9×",
            );
        }
    });
}
