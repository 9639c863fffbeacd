//! Hit throughput of `axum-cachex-proxy` against nginx's `proxy_cache` in
//! front of the same origin, with the same client and load, alternating
//! rounds so that both see the same machine. Prints requests per second
//! and the ratio; asserts nothing. Run it with
//! `scripts/bench-proxy-vs-nginx.sh` (installs nginx from the Debian
//! packages when missing), or `cargo bench -p axum-cachex-proxy --bench
//! vs_nginx` with `nginx` on the `PATH`.
//!
//! Knobs: `BENCH_SECS` (per round, default 5), `BENCH_CONNECTIONS`
//! (default 64), `BENCH_ROUNDS` (default 3).

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use axum::{Router, body::Body, http::header, routing::get};
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

/// The small cached response: 100 bytes, fresh for an hour.
const BODY: &str = "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

async fn origin() -> SocketAddr {
    let app = Router::new().route(
        "/small",
        get(|| async { ([(header::CACHE_CONTROL, "public, max-age=3600")], BODY) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A child process killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_proxy(origin: SocketAddr, port: u16) -> Option<Server> {
    let child = Command::new(env!("CARGO_BIN_EXE_axum-cachex-proxy"))
        .args([
            "--upstream",
            &format!("http://{origin}"),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    Some(Server(child))
}

/// nginx as a caching proxy, in a temporary directory of its own.
fn start_nginx(origin: SocketAddr, port: u16) -> Option<Server> {
    let dir = std::env::temp_dir().join(format!("axum-cachex-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("cache")).ok()?;
    let conf = format!(
        "worker_processes auto;\nerror_log {dir}/error.log;\npid {dir}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  proxy_cache_path {dir}/cache keys_zone=bench:10m;\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
               proxy_pass http://{origin};\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n      proxy_cache bench;\n    }}\n  }}\n}}\n",
        dir = dir.display()
    );
    let conf_file = dir.join("nginx.conf");
    std::fs::write(&conf_file, conf).ok()?;
    let child = Command::new(std::env::var("NGINX").unwrap_or_else(|_| "nginx".to_owned()))
        .args(["-c", &conf_file.to_string_lossy(), "-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Server(child))
}

async fn wait_port(port: u16) -> bool {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Requests per second over `connections` keep-alive connections.
async fn load(port: u16, connections: u64, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(async move {
                let mut done = 0u64;
                let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    return done;
                };
                let _ = stream.set_nodelay(true);
                let Ok((mut sender, conn)) =
                    hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await
                else {
                    return done;
                };
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    let Ok(req) = Request::get("/small")
                        .header("host", "bench")
                        .body(Body::empty())
                    else {
                        break;
                    };
                    let Ok(res) = sender.send_request(req).await else {
                        break;
                    };
                    if res.into_body().collect().await.is_err() {
                        break;
                    }
                    done += 1;
                }
                done
            })
        })
        .collect();
    let started = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap_or(0);
    }
    total as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (secs, connections, rounds) =
            (env_num("BENCH_SECS", 5), env_num("BENCH_CONNECTIONS", 64), env_num("BENCH_ROUNDS", 3));
        let origin = origin().await;
        let (proxy_port, nginx_port) = (free_port(), free_port());
        let _proxy = start_proxy(origin, proxy_port).expect("start axum-cachex-proxy");
        let nginx = start_nginx(origin, nginx_port);
        assert!(wait_port(proxy_port).await, "axum-cachex-proxy did not start");
        let nginx_up = nginx.is_some() && wait_port(nginx_port).await;
        if !nginx_up {
            println!("nginx not found (install it, or set NGINX=/path/to/nginx): proxy only");
        }
        // Warm both caches.
        load(proxy_port, 1, 1).await;
        if nginx_up {
            load(nginx_port, 1, 1).await;
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let a = load(proxy_port, connections, secs).await;
            ours.push(a);
            if nginx_up {
                let b = load(nginx_port, connections, secs).await;
                theirs.push(b);
                println!("round {round}: axum-cachex-proxy {a:.0} req/s, nginx {b:.0} req/s");
            } else {
                println!("round {round}: axum-cachex-proxy {a:.0} req/s");
            }
        }
        let (a, b) = (median(ours), median(theirs));
        println!("hit throughput, {connections} connections, 100-byte cached response (medians of {rounds} rounds of {secs} s):");
        println!("  axum-cachex-proxy: {a:.0} req/s");
        if nginx_up {
            println!("  nginx proxy_cache: {b:.0} req/s");
            println!("  ratio: {:.2}x nginx", a / b.max(1e-9));
        }
    });
}
