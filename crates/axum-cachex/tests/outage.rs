//! Fail-open at the HTTP level: with a real Redis or Memcached server
//! stopped mid-test (killed, or frozen with SIGSTOP), cached routes keep
//! answering 200 from the handler, and once the server is back, responses
//! are cached again — without rebuilding the layer, the backend or the app.
//! A frozen server costs at most the breaker threshold's worth of timeouts.
#![cfg(any(feature = "redis", feature = "memcached"))]

mod common;

use std::{sync::Arc, time::Duration};

use axum::{Router, routing::get};
use axum_cachex::{CacheLayer, backend::Backend};
use common::http::{Counter, Reply, get_ok};
use http::StatusCode;

/// A route `/p/{n}` counting its handler runs, cached for a minute.
fn app(backend: Arc<dyn Backend>, counter: &Counter) -> (Router, CacheLayer) {
    let layer = CacheLayer::builder()
        .backend(backend)
        .ttl(Duration::from_secs(60))
        .build()
        .expect("layer");
    route(layer, counter)
}

fn route(layer: CacheLayer, counter: &Counter) -> (Router, CacheLayer) {
    let c = counter.clone();
    let router = Router::new().route(
        "/p/{n}",
        get(move || {
            let c = c.clone();
            async move { format!("run {}", c.hit()) }
        })
        .layer(layer.clone()),
    );
    (router, layer)
}

fn is_hit(r: &Reply) -> bool {
    r.cache_status().starts_with("axum-cachex; hit")
}

/// Polls until a request is stored and the next one is a hit (bounded).
async fn cached_again(app: &Router, uri: &str) {
    for _ in 0..200 {
        let first = get_ok(app, uri).await;
        assert_eq!(first.status, StatusCode::OK);
        if is_hit(&first) || first.cache_status().contains("stored") {
            let second = get_ok(app, uri).await;
            if is_hit(&second) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{uri} never got cached again after the server came back");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_serves_from_the_handler_and_recovers() {
    use common::backend_redis::{RedisProcess, redis_backend, redis_server_bin};

    let Some(bin) = redis_server_bin() else {
        return;
    };
    let mut server = RedisProcess::start(bin, &[]);
    let backend: Arc<dyn Backend> = Arc::new(redis_backend(server.url(), "outage"));
    let c = Counter::default();
    let (app, layer) = app(backend, &c);

    assert!(get_ok(&app, "/p/1").await.cache_status().contains("stored"));
    assert!(is_hit(&get_ok(&app, "/p/1").await));
    assert_eq!(c.get(), 1);

    server.kill();
    for i in 0..5 {
        let r = get_ok(&app, "/p/1").await;
        assert_eq!(r.status, StatusCode::OK, "request {i} during the outage");
        assert!(!is_hit(&r));
        assert!(!r.cache_status().contains("stored"));
    }
    assert_eq!(
        c.get(),
        6,
        "every request during the outage ran the handler"
    );
    let stats = layer.stats();
    assert!(
        stats.backend_errors + stats.backend_timeouts >= 5,
        "{stats:?}"
    );

    server.restart();
    cached_again(&app, "/p/1").await;
}

/// Requests through the layer while the server is frozen: every one is
/// answered by the handler, and at most `threshold` backend calls waited for
/// a full timeout (the rest failed fast on the open breaker).
async fn served_while_frozen(app: &Router, layer: &CacheLayer, uris: &[String], threshold: u64) {
    let before = layer.stats();
    for (i, uri) in uris.iter().enumerate() {
        let r = get_ok(app, uri).await;
        assert_eq!(r.status, StatusCode::OK, "request {i} during the stall");
        assert!(!is_hit(&r), "request {i}: {}", r.cache_status());
    }
    let stats = layer.stats();
    let timeouts = stats.backend_timeouts - before.backend_timeouts;
    let errors = stats.backend_errors - before.backend_errors;
    assert!(
        timeouts <= threshold,
        "{timeouts} backend calls waited a full timeout: {stats:?}"
    );
    assert!(
        errors + timeouts >= uris.len() as u64,
        "every lookup failed: {stats:?}"
    );
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_fails_fast_and_recovers() {
    use common::backend_redis::{RedisProcess, config, redis_server_bin};

    let Some(bin) = redis_server_bin() else {
        return;
    };
    let server = RedisProcess::start(bin, &[]);
    let backend = config(server.url(), "frozen-outage")
        .command_timeout(Duration::from_millis(200))
        .breaker_threshold(3)
        .build()
        .expect("backend");
    // The layer gives up first: calls it abandons after waiting still count
    // as timeouts for the breaker.
    let layer = CacheLayer::builder()
        .backend(Arc::new(backend))
        .ttl(Duration::from_secs(60))
        .backend_timeout(Duration::from_millis(150))
        .build()
        .expect("layer");
    let c = Counter::default();
    let (app, layer) = route(layer, &c);
    assert!(get_ok(&app, "/p/1").await.cache_status().contains("stored"));
    assert!(is_hit(&get_ok(&app, "/p/1").await));

    server.freeze();
    let uris: Vec<String> = (0..30).map(|_| "/p/1".to_owned()).collect();
    served_while_frozen(&app, &layer, &uris, 3).await;
    assert_eq!(
        c.get(),
        31,
        "every request during the stall ran the handler"
    );

    server.thaw();
    cached_again(&app, "/p/2").await;
    assert!(is_hit(&get_ok(&app, "/p/1").await), "old entries survive");
}

#[cfg(feature = "memcached")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_memcached_server_fails_fast_and_recovers() {
    use axum_cachex::backend::MemcachedBackend;
    use memcached_process::OwnServer;

    let bin = match std::env::var("AXUM_CACHEX_MEMCACHED_BIN") {
        Ok(bin) if !bin.is_empty() => bin,
        _ if common::servers_required() => panic!("AXUM_CACHEX_MEMCACHED_BIN is not set"),
        _ => return,
    };
    let a = OwnServer::start(&bin).await;
    let b = OwnServer::start(&bin).await;
    let backend = MemcachedBackend::builder()
        .servers([a.addr(), b.addr()])
        .key_prefix(common::unique_prefix("frozen"))
        .timeout(Duration::from_millis(100))
        .breaker_threshold(3)
        .build()
        .expect("backend");
    let owner = |n: usize| {
        backend
            .server_for_key(&format!("http:GET|||example.com|||/p/{n}|||"))
            .to_owned()
    };
    let on_a: Vec<usize> = (0..40).filter(|&n| owner(n) == a.addr()).collect();
    let on_b: Vec<usize> = (0..40).filter(|&n| owner(n) == b.addr()).collect();
    assert!(!on_a.is_empty() && !on_b.is_empty());
    let c = Counter::default();
    let (app, layer) = app(Arc::new(backend.clone()), &c);
    for n in 0..40 {
        get_ok(&app, &format!("/p/{n}")).await;
    }

    a.signal("-STOP");
    let uris: Vec<String> = on_a.iter().map(|n| format!("/p/{n}")).collect();
    let uris: Vec<String> = uris.iter().cycle().take(30).cloned().collect();
    served_while_frozen(&app, &layer, &uris, 3).await;
    for &n in &on_b {
        let r = get_ok(&app, &format!("/p/{n}")).await;
        assert!(is_hit(&r), "/p/{n} lives on the running server");
    }

    a.signal("-CONT");
    cached_again(&app, &format!("/p/{}", on_a[0])).await;
}

#[cfg(feature = "memcached")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_losing_one_server_keeps_the_others_entries() {
    use axum_cachex::backend::MemcachedBackend;
    use memcached_process::OwnServer;

    let bin = match std::env::var("AXUM_CACHEX_MEMCACHED_BIN") {
        Ok(bin) if !bin.is_empty() => bin,
        _ if common::servers_required() => panic!("AXUM_CACHEX_MEMCACHED_BIN is not set"),
        _ => return,
    };
    let mut a = OwnServer::start(&bin).await;
    let b = OwnServer::start(&bin).await;
    let backend = MemcachedBackend::builder()
        .servers([a.addr(), b.addr()])
        .key_prefix(common::unique_prefix("outage"))
        .build()
        .expect("backend");
    let owner = |n: usize| {
        backend
            .server_for_key(&format!("http:GET|||example.com|||/p/{n}|||"))
            .to_owned()
    };
    let on_a: Vec<usize> = (0..40).filter(|&n| owner(n) == a.addr()).collect();
    let on_b: Vec<usize> = (0..40).filter(|&n| owner(n) == b.addr()).collect();
    assert!(
        !on_a.is_empty() && !on_b.is_empty(),
        "both servers hold keys"
    );
    let c = Counter::default();
    let (app, _layer) = app(Arc::new(backend.clone()), &c);
    for n in 0..40 {
        get_ok(&app, &format!("/p/{n}")).await;
    }
    assert_eq!(c.get(), 40);

    a.kill();
    for &n in &on_b {
        let r = get_ok(&app, &format!("/p/{n}")).await;
        assert!(
            is_hit(&r),
            "/p/{n} lives on the surviving server: {}",
            r.cache_status()
        );
    }
    assert_eq!(c.get(), 40, "the surviving server's entries were served");
    let before = c.get();
    for &n in &on_a {
        let r = get_ok(&app, &format!("/p/{n}")).await;
        assert_eq!(r.status, StatusCode::OK, "fail open for /p/{n}");
        assert!(!is_hit(&r));
    }
    assert_eq!(c.get(), before + on_a.len());

    a.restart().await;
    cached_again(&app, &format!("/p/{}", on_a[0])).await;
}

#[cfg(feature = "memcached")]
mod memcached_process {
    use std::{
        process::{Child, Command, Stdio},
        time::Duration,
    };

    /// A memcached process of this test's own; killed when dropped.
    pub(crate) struct OwnServer {
        bin: String,
        child: Child,
        port: u16,
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    fn spawn(bin: &str, port: u16) -> Child {
        Command::new(bin)
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-u",
                "root",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start memcached")
    }

    impl OwnServer {
        pub(crate) async fn start(bin: &str) -> Self {
            let port = free_port();
            let server = Self {
                bin: bin.to_owned(),
                child: spawn(bin, port),
                port,
            };
            server.wait_ready().await;
            server
        }

        async fn wait_ready(&self) {
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("memcached on port {} did not start", self.port);
        }

        pub(crate) fn addr(&self) -> String {
            format!("127.0.0.1:{}", self.port)
        }

        pub(crate) fn kill(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }

        /// `kill -STOP` (freeze) or `kill -CONT` (resume).
        pub(crate) fn signal(&self, signal: &str) {
            crate::common::signal_process(self.child.id(), signal);
        }

        pub(crate) async fn restart(&mut self) {
            self.kill();
            self.child = spawn(&self.bin, self.port);
            self.wait_ready().await;
        }
    }

    impl Drop for OwnServer {
        fn drop(&mut self) {
            self.kill();
        }
    }
}
