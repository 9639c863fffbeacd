//! The stall scenario of `benches/http.rs` (`BENCH_STALL=1`, feature
//! `redis`, `AXUM_CACHEX_REDIS_SERVER_BIN` or `redis-server` on the `PATH`):
//! a private redis-server is frozen with `SIGSTOP` for `BENCH_STALL_SECS`
//! (default 10) seconds under load, and the cached route's throughput and
//! p99 during the stall (after its first second) are compared with the
//! uncached route's. `BENCH_STALL_THRESHOLD` sets the breaker threshold
//! (default 3; `0` shows what a stall costs when timeouts never open the
//! breaker). Prints numbers, asserts nothing.

use std::{
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use axum::{Router, routing::get};
use axum_cachex::{
    CacheLayer,
    backend::{Backend, RedisBackend},
};
use bytes::Bytes;

use super::{Measured, env_num, load, load_once, row, serve};

/// A private redis-server, killed when dropped (also when frozen).
struct Server(Child);

impl Server {
    fn start(bin: &str, port: u16) -> Option<Self> {
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Self(child);
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Option<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    Some(listener.local_addr().ok()?.port())
}

/// `/uncached`, `/cached` (default layer: coalescing on) and
/// `/cached-solo` (coalescing off), all on the same backend.
fn app(backend: Arc<dyn Backend>) -> Router {
    let body = Bytes::from(vec![b'a'; 1024]);
    let handler = move || {
        let b = body.clone();
        async move { b }
    };
    let layer = |coalesce: bool| {
        CacheLayer::builder()
            .ttl(Duration::from_secs(3600))
            .backend(Arc::clone(&backend))
            .coalesce(coalesce)
            .build()
            .expect("valid layer")
    };
    Router::new()
        .route("/uncached", get(handler.clone()))
        .route("/cached", get(handler.clone()).layer(layer(true)))
        .route("/cached-solo", get(handler).layer(layer(false)))
}

/// Ratios against the better of the two uncached runs (the higher
/// throughput, the lower p99): the strict reading.
fn ratios(name: &str, m: &Measured, a: &Measured, b: &Measured) {
    let rps = a.rps.max(b.rps).max(1e-9);
    let p99 = a.p99.min(b.p99).as_secs_f64().max(1e-9);
    println!(
        "{name:<36} throughput {:>5.2}x of uncached, p99 {:>6.2}x of uncached",
        m.rps / rps,
        m.p99.as_secs_f64() / p99
    );
}

/// Runs the scenario (see the module documentation).
pub(crate) async fn run(connections: usize, secs: u64) {
    let bin =
        std::env::var("AXUM_CACHEX_REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
    let Some(port) = free_port() else { return };
    let Some(server) = Server::start(&bin, port) else {
        println!("stall: could not start {bin}; skipped");
        return;
    };
    let threshold = env_num("BENCH_STALL_THRESHOLD", 3).min(u64::from(u32::MAX)) as u32;
    let Ok(backend) = RedisBackend::builder()
        .url(format!("redis://127.0.0.1:{port}"))
        .breaker_threshold(threshold)
        .build()
    else {
        return;
    };
    let addr = serve(app(Arc::new(backend))).await;
    let _ = load_once(addr, "/cached").await;
    let stall = env_num("BENCH_STALL_SECS", 10).max(2);
    println!();
    println!(
        "stall: redis-server frozen (SIGSTOP) for {stall} s under load; 250 ms command timeout, breaker_threshold {threshold}"
    );
    let before = load(addr, "/uncached", connections, secs).await;
    row("uncached 1 KiB (baseline)", &before, None);
    let hits = load(addr, "/cached", connections, secs).await;
    row("cached 1 KiB, redis hit", &hits, Some(&before));
    server.signal("-STOP");
    let first = load(addr, "/cached", connections, 1).await;
    let half = ((stall - 1) / 2).max(1);
    let rest = load(addr, "/cached", connections, half).await;
    let solo = load(addr, "/cached-solo", connections, half).await;
    server.signal("-CONT");
    row("stalled, first 1 s", &first, Some(&before));
    row("stalled >1 s", &rest, Some(&before));
    row("stalled >1 s, coalescing off", &solo, Some(&before));
    // Let the probe close the breaker, then measure hits again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = load(addr, "/cached", connections, secs).await;
    row("cached 1 KiB after SIGCONT", &after, Some(&before));
    let again = load(addr, "/uncached", connections, secs).await;
    row("uncached 1 KiB, again", &again, None);
    ratios("stalled, first 1 s", &first, &before, &again);
    ratios("stalled >1 s", &rest, &before, &again);
    ratios("stalled >1 s, coalescing off", &solo, &before, &again);
    drop(server);
}
