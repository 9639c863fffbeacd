//! The proxy binary, run as users run it, between a real upstream (an axum
//! server on loopback) and a real client: forwarding, streaming,
//! revalidation, invalidation through the admin listener, and an upstream
//! that goes away.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{
    convert::Infallible,
    net::{SocketAddr, TcpListener as StdListener},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{net::TcpListener, process::Child, sync::oneshot};

/// Bounded waits keep a broken proxy from hanging the suite; they are not
/// time limits on the code under test.
const HANG: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An upstream that counts its requests; stops when dropped.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.expect("bind")).await
    }

    async fn start_on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let app = routes(Arc::clone(&hits));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            hits,
            stop: Some(stop),
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(HANG, &mut self.task).await;
    }
}

fn routes(hits: Arc<AtomicUsize>) -> Router {
    let count = move || hits.fetch_add(1, Ordering::SeqCst) + 1;
    let (c1, c2, c3, c4, c5, c6) = (
        count.clone(),
        count.clone(),
        count.clone(),
        count.clone(),
        count.clone(),
        count,
    );
    Router::new()
        .route(
            "/fresh",
            get(move || async move {
                let n = c1();
                (
                    [
                        (header::CACHE_CONTROL, "max-age=60"),
                        (header::HeaderName::from_static("cache-tag"), "fresh-things"),
                    ],
                    format!("fresh #{n}"),
                )
            }),
        )
        .route(
            "/echo",
            get(move |headers: HeaderMap| async move {
                c2();
                let pick = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned()
                };
                let body = format!(
                    "host={} via={} xff={} connection-token={}",
                    pick("host"),
                    pick("via"),
                    pick("x-forwarded-for"),
                    pick("x-hop")
                );
                (
                    [
                        (header::CONNECTION, "x-upstream-hop"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    [(header::HeaderName::from_static("x-upstream-hop"), "secret")],
                    body,
                )
            }),
        )
        .route(
            "/validated",
            get(move |headers: HeaderMap| async move {
                c3();
                let etag = HeaderValue::from_static("\"v1\"");
                if headers.get(header::IF_NONE_MATCH) == Some(&etag) {
                    return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
                }
                (
                    [
                        (header::CACHE_CONTROL, "max-age=0"),
                        (header::ETAG, "\"v1\""),
                    ],
                    "validated body",
                )
                    .into_response()
            }),
        )
        .route(
            "/item",
            get(move || async move {
                let n = c4();
                (
                    [(header::CACHE_CONTROL, "max-age=600")],
                    format!("item #{n}"),
                )
            })
            .post(|| async { "updated" }),
        )
        .route(
            "/stream",
            get(move || async move {
                c5();
                let chunks = futures_util::stream::iter(
                    (0..64).map(|i| Ok::<_, Infallible>(Bytes::from(format!("chunk {i:02}\n")))),
                );
                (
                    [(header::CACHE_CONTROL, "max-age=60")],
                    Body::from_stream(chunks),
                )
            }),
        )
        .route(
            "/resilient",
            get(move || async move {
                let n = c6();
                (
                    [(header::CACHE_CONTROL, "max-age=1, stale-if-error=600")],
                    format!("resilient #{n}"),
                )
            }),
        )
        .route("/config/x", post(|| async { "configured" }))
}

/// The proxy binary, killed when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Proxy {
    async fn start(upstream: SocketAddr, extra: &[&str]) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_axum-cachex-proxy"))
            .args(["--upstream", &format!("http://{upstream}")])
            .args(["--listen", &addr.to_string(), "--admin", &admin.to_string()])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the proxy binary");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok()
                && tokio::net::TcpStream::connect(admin).await.is_ok()
            {
                return Self { child, addr, admin };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the proxy did not start listening");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(req: http::Request<Full<Bytes>>) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let res = tokio::time::timeout(HANG, client.request(req))
        .await
        .expect("no hang")
        .expect("response");
    let (parts, body) = res.into_parts();
    let body = tokio::time::timeout(HANG, body.collect())
        .await
        .expect("no hang")
        .expect("body")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn get_from(addr: SocketAddr, path: &str) -> http::request::Builder {
    http::Request::get(format!("http://{addr}{path}")).header(header::HOST, "shop.example")
}

async fn fetch(addr: SocketAddr, path: &str) -> Reply {
    send(get_from(addr, path).body(Full::default()).unwrap()).await
}

async fn post_to(addr: SocketAddr, path: &str) -> Reply {
    send(
        http::Request::post(format!("http://{addr}{path}"))
            .header(header::HOST, "shop.example")
            .body(Full::default())
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_response_is_served_from_the_cache() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let first = fetch(proxy.addr, "/fresh").await;
    let second = fetch(proxy.addr, "/fresh").await;
    assert_eq!(
        (first.text(), second.text()),
        ("fresh #1".into(), "fresh #1".into())
    );
    assert_eq!(upstream.hits(), 1);
    assert!(
        second.header("cache-status").contains("hit"),
        "{}",
        second.header("cache-status")
    );
    assert!(
        second.header("age").parse::<u64>().is_ok(),
        "a hit carries Age"
    );
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_keeps_host_adds_via_and_forwarded_for_and_drops_hop_by_hop() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let req = get_from(proxy.addr, "/echo")
        .header(header::CONNECTION, "x-hop")
        .header("x-hop", "client-only")
        .body(Full::default())
        .unwrap();
    let reply = send(req).await;
    assert_eq!(
        reply.text(),
        "host=shop.example via=1.1 axum-cachex xff=127.0.0.1 connection-token=-"
    );
    // The upstream's own hop-by-hop field stops at the proxy too.
    assert_eq!(reply.header("x-upstream-hop"), "");
    assert!(reply.header("via").contains("axum-cachex"));
    upstream.stop().await;

    // --rewrite-host sends the upstream's own authority instead.
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &["--rewrite-host"]).await;
    let reply = fetch(proxy.addr, "/echo").await;
    assert!(
        reply.text().starts_with(&format!("host={}", upstream.addr)),
        "{}",
        reply.text()
    );
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_passes_through_whole_and_is_stored() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let expected: String = (0..64).map(|i| format!("chunk {i:02}\n")).collect();
    let first = fetch(proxy.addr, "/stream").await;
    assert_eq!(first.text(), expected);
    let second = fetch(proxy.addr, "/stream").await;
    assert_eq!(second.text(), expected);
    assert_eq!(upstream.hits(), 1, "the streamed response was stored");
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_is_revalidated_with_the_upstream_and_a_304_freshens_it() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let first = fetch(proxy.addr, "/validated").await;
    assert_eq!(first.text(), "validated body");
    let second = fetch(proxy.addr, "/validated").await;
    assert_eq!(second.text(), "validated body");
    assert_eq!(upstream.hits(), 2, "max-age=0: every use asks the upstream");
    assert!(
        second.header("cache-status").contains("fwd-status=304"),
        "{}",
        second.header("cache-status")
    );
    // The client's own conditional is answered by the proxy.
    let conditional = get_from(proxy.addr, "/validated")
        .header(header::IF_NONE_MATCH, "\"v1\"")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(conditional).await.status, StatusCode::NOT_MODIFIED);
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_requests_and_the_admin_routes_invalidate() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    assert_eq!(fetch(proxy.addr, "/item").await.text(), "item #1");
    assert_eq!(fetch(proxy.addr, "/item").await.text(), "item #1");
    // RFC 9111 §4.4: a successful POST invalidates the stored GET.
    assert_eq!(post_to(proxy.addr, "/item").await.text(), "updated");
    assert_eq!(fetch(proxy.addr, "/item").await.text(), "item #2");
    assert_eq!(fetch(proxy.addr, "/fresh").await.text(), "fresh #3");

    // The admin listener (loopback, no token configured).
    let cleared = post_to(proxy.admin, "/clear-path?path=/item").await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.text());
    assert_eq!(fetch(proxy.addr, "/item").await.text(), "item #4");
    let purged = post_to(proxy.admin, "/purge?pattern=/fr*").await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text());
    assert!(purged.text().contains("\"removed\":1"), "{}", purged.text());
    let fresh = fetch(proxy.addr, "/fresh").await;
    assert_eq!(fresh.text(), "fresh #5");
    assert_eq!(fresh.header("cache-tag"), "", "tags stay in the proxy");
    assert_eq!(fetch(proxy.addr, "/fresh").await.text(), "fresh #5");
    let by_tag = post_to(proxy.admin, "/purge?tag=fresh-things").await;
    assert_eq!(by_tag.status, StatusCode::OK, "{}", by_tag.text());
    assert_eq!(fetch(proxy.addr, "/fresh").await.text(), "fresh #6");
    let all = post_to(proxy.admin, "/purge?all=true").await;
    assert!(all.text().contains("\"removed\":2"), "{}", all.text());
    let stats = fetch(proxy.admin, "/stats").await;
    assert_eq!(stats.status, StatusCode::OK);
    assert!(stats.text().contains("\"hits\""), "{}", stats.text());
    // The admin routes are not on the proxied listener: that path goes to
    // the upstream, which has no such route.
    assert_eq!(
        post_to(proxy.addr, "/purge?all=true").await.status,
        StatusCode::NOT_FOUND
    );
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_outage_is_a_502_or_a_stale_answer_where_allowed() {
    let upstream = Upstream::start().await;
    let addr = upstream.addr;
    let proxy = Proxy::start(addr, &["--upstream-timeout", "2"]).await;
    assert_eq!(fetch(proxy.addr, "/resilient").await.text(), "resilient #1");
    upstream.stop().await;
    // Nothing stored for this path: a bad gateway with a short body.
    let down = fetch(proxy.addr, "/fresh").await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    assert!(down.text().contains("bad gateway"), "{}", down.text());
    // Stale (max-age=1 has passed) but stale-if-error allows it.
    let mut served = None;
    for _ in 0..40 {
        let reply = fetch(proxy.addr, "/resilient").await;
        if reply.header("cache-status").contains("fwd=stale") || reply.header("age") != "0" {
            served = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = served.expect("a stale answer once max-age passed");
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.text(), "resilient #1");

    // The upstream comes back on the same port: forwarding resumes.
    let back = Upstream::start_on(TcpListener::bind(addr).await.expect("rebind")).await;
    assert_eq!(fetch(proxy.addr, "/fresh").await.status, StatusCode::OK);
    back.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_adds_rules_and_bad_settings_stop_the_start() {
    let upstream = Upstream::start().await;
    let dir = std::env::temp_dir().join(format!("axum-cachex-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("proxy.toml");
    std::fs::write(&file, "[[rules]]\nprefix = \"/fresh\"\nbypass = true\n").unwrap();
    let proxy = Proxy::start(upstream.addr, &["--config", file.to_str().unwrap()]).await;
    fetch(proxy.addr, "/fresh").await;
    let second = fetch(proxy.addr, "/fresh").await;
    assert_eq!(
        second.text(),
        "fresh #2",
        "a bypassed prefix is never cached"
    );
    assert_eq!(fetch(proxy.addr, "/item").await.text(), "item #3");
    assert_eq!(fetch(proxy.addr, "/item").await.text(), "item #3");
    upstream.stop().await;

    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_axum-cachex-proxy"))
        .args(["--upstream", "https://example.com"])
        .output()
        .await
        .expect("run");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stdout) + String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("http:// URL"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The bodies in these tests are small; a body the upstream streams slowly
/// reaches the client before the upstream finishes (no buffering).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_bytes_arrive_before_the_upstream_finishes() {
    let (release, released) = oneshot::channel::<()>();
    let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
    let app = Router::new().route(
        "/slow",
        get(move || {
            let released = Arc::clone(&released);
            async move {
                let first = futures_util::stream::once(async {
                    Ok::<_, Infallible>(Bytes::from("first;"))
                });
                let rest = futures_util::stream::once(async move {
                    if let Some(rx) = released.lock().await.take() {
                        let _ = rx.await;
                    }
                    Ok::<_, Infallible>(Bytes::from("rest"))
                });
                Body::from_stream(futures_util::StreamExt::chain(first, rest))
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let proxy = Proxy::start(upstream, &[]).await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let res = tokio::time::timeout(
        HANG,
        client.request(get_from(proxy.addr, "/slow").body(Full::default()).unwrap()),
    )
    .await
    .expect("head before the body is complete")
    .expect("response");
    let mut body = res.into_body();
    let first = tokio::time::timeout(HANG, body.frame())
        .await
        .expect("first bytes before the upstream finished")
        .expect("a frame")
        .expect("data");
    assert_eq!(first.into_data().unwrap(), Bytes::from("first;"));
    let _ = release.send(());
    let rest = tokio::time::timeout(HANG, body.collect())
        .await
        .expect("rest")
        .expect("body");
    assert_eq!(rest.to_bytes(), Bytes::from("rest"));
    server.abort();
}

/// SIGTERM stops accepting and lets the request in flight finish.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_requests_in_flight() {
    let (release, released) = oneshot::channel::<()>();
    let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
    let (entered_tx, entered) = oneshot::channel::<()>();
    let entered_tx = Arc::new(std::sync::Mutex::new(Some(entered_tx)));
    let app = Router::new().route(
        "/slow",
        get(move || {
            let (released, entered_tx) = (Arc::clone(&released), Arc::clone(&entered_tx));
            async move {
                if let Some(tx) = entered_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                if let Some(rx) = released.lock().await.take() {
                    let _ = rx.await;
                }
                "finished"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut proxy = Proxy::start(upstream, &[]).await;
    let in_flight = tokio::spawn(fetch(proxy.addr, "/slow"));
    tokio::time::timeout(HANG, entered)
        .await
        .expect("reached the upstream")
        .unwrap();
    let pid = proxy.child.id().expect("running").to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
    let _ = release.send(());
    let reply = tokio::time::timeout(HANG, in_flight)
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "finished")
    );
    let exit = tokio::time::timeout(HANG, proxy.child.wait())
        .await
        .expect("the proxy exits after draining")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    server.abort();
}
