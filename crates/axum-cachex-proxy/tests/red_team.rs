//! Red-team tests of the `axum-cachex-proxy` binary: each runs the real
//! binary in front of an upstream started here on 127.0.0.1 (a raw
//! HTTP/1.1 server over a `TcpListener`, so it can misbehave on purpose)
//! and talks to it with a raw HTTP/1.1 client. Every test here fails on a
//! defect; timeouts are hang guards only.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
    sync::Notify,
};

const HANG_GUARD: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- harness

/// A free port on loopback (bound, then released for the proxy).
async fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

/// The proxy process; killed when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

fn proxy_command(args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_axum-cachex-proxy"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("AXUM_CACHEX_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Starts the proxy with `args` plus `--listen`, and waits until it
/// accepts connections.
async fn start_proxy(args: &[&str]) -> Proxy {
    let addr = free_addr().await;
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.push("--listen".into());
    all.push(addr.to_string());
    let mut child = proxy_command(&all).spawn().expect("spawn proxy");
    wait_listening(addr, &mut child).await;
    Proxy { child, addr }
}

async fn wait_listening(addr: SocketAddr, child: &mut Child) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("proxy exited before listening: {status}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hang guard: proxy never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A parsed response.
#[derive(Debug)]
struct Res {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Res {
    fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(raw, b"\r\n") else {
            return out;
        };
        let size_txt = String::from_utf8_lossy(&raw[..eol]);
        let size_txt = size_txt.split(';').next().unwrap_or("").trim().to_owned();
        let Ok(size) = usize::from_str_radix(&size_txt, 16) else {
            return out;
        };
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            out.extend_from_slice(&raw[..size.min(raw.len())]);
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
}

/// Sends one raw request (which should say `Connection: close`) and reads
/// the whole answer until the server closes.
async fn raw_request(addr: SocketAddr, request: &str) -> Res {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    };
    let buf = tokio::time::timeout(HANG_GUARD, fut)
        .await
        .expect("hang guard: no complete answer");
    let end = find(&buf, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&buf)));
    let (status, headers) = parse_head(&String::from_utf8_lossy(&buf[..end]));
    let raw_body = &buf[end + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(raw_body)
    } else if let Some(len) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        raw_body[..len.min(raw_body.len())].to_vec()
    } else {
        raw_body.to_vec()
    };
    Res {
        status,
        headers,
        body,
    }
}

/// A GET through the proxy with extra header lines.
async fn get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Res {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (n, v) in extra {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !extra
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
    {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    raw_request(addr, &req).await
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Vec<u8> + Send + Sync>;

/// A raw HTTP/1.1 upstream: reads each request head (bodies are not
/// read: tests send GETs), records it, writes `handler`'s bytes verbatim
/// and closes the connection.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn read_head(s: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let target = head
                .split("\r\n")
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .unwrap_or_default()
                .to_owned();
            let (_, headers) = parse_head(&head);
            return Some(Seen { target, headers });
        }
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
}

async fn upstream(handler: Handler) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let handler = Arc::clone(&handler);
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                if let Some(req) = read_head(&mut s).await {
                    record.lock().expect("lock").push(req.clone());
                    let out = handler(&req);
                    let _ = s.write_all(&out).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    Upstream { addr, seen }
}

fn response(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    out.into_bytes()
}

fn upstream_url(u: &Upstream) -> String {
    format!("http://{}", u.addr)
}

// ------------------------------------------------------------------ tests

/// Product rule: no response reaches a client it was not made for. The
/// proxy documents `Cookie` as a credential (config.rs, `Rule`), but a
/// response to a request carrying the upstream's session cookie is stored
/// and replayed to a different user.
#[tokio::test]
async fn cookie_credentialed_response_is_not_served_to_another_user() {
    let up = upstream(Arc::new(|req: &Seen| {
        let who = req.header("cookie").unwrap_or("anonymous").to_owned();
        response(
            "200 OK",
            &[("Cache-Control", "max-age=60")],
            &format!("account page of {who}"),
        )
    }))
    .await;
    let proxy = start_proxy(&["--upstream", &upstream_url(&up)]).await;

    let alice = get(proxy.addr, "/account", &[("Cookie", "sid=alice")]).await;
    assert_eq!(alice.text(), "account page of sid=alice");
    let bob = get(proxy.addr, "/account", &[("Cookie", "sid=bob")]).await;
    assert_eq!(
        bob.text(),
        "account page of sid=bob",
        "bob got alice's credentialed response (Cache-Status: {:?})",
        bob.header_all("cache-status")
    );
    drop(proxy);
}

/// Spec: "streams bodies both ways without buffering what it does not
/// store". A request with `Cache-Control: no-store` must not have its
/// response stored (RFC 9111 §5.2.1.5), and it is not; yet the proxy reads
/// the whole body (up to 1 MiB) before sending the client a single byte.
#[tokio::test]
async fn unstored_response_to_no_store_request_is_streamed() {
    let release = Arc::new(Notify::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up_addr = listener.local_addr().expect("addr");
    let up_release = Arc::clone(&release);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let release = Arc::clone(&up_release);
            tokio::spawn(async move {
                if read_head(&mut s).await.is_some() {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 10\r\n\r\nfirst")
                        .await;
                    let _ = s.flush().await;
                    // The rest only once the client has the first part.
                    release.notified().await;
                    let _ = s.write_all(b"-last").await;
                }
            });
        }
    });
    let proxy = start_proxy(&["--upstream", &format!("http://{up_addr}")]).await;

    let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
    s.write_all(
        format!(
            "GET /report HTTP/1.1\r\nHost: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            proxy.addr
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    let got_first = tokio::time::timeout(HANG_GUARD, async {
        let mut chunk = [0u8; 1024];
        loop {
            if find(&buf, b"\r\n\r\nfirst").is_some() {
                return true;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    release.notify_waiters();
    assert_eq!(
        got_first,
        Ok(true),
        "the client got nothing of the body until the upstream sent all of it: the proxy buffers a response it does not store (got {:?})",
        String::from_utf8_lossy(&buf)
    );
    drop(proxy);
}

/// RFC 9112 §6.3: with both `Transfer-Encoding` and `Content-Length`,
/// Transfer-Encoding wins and a proxy MUST remove `Content-Length` before
/// forwarding. The proxy drops `Transfer-Encoding` but keeps the bogus
/// `Content-Length`, so the client gets a truncated body.
#[tokio::test]
async fn upstream_te_plus_content_length_does_not_truncate_the_body() {
    let up = upstream(Arc::new(|_req: &Seen| {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\
Cache-Control: no-store\r\nConnection: close\r\n\r\nb\r\nhello world\r\n0\r\n\r\n"
            .to_vec()
    }))
    .await;
    let proxy = start_proxy(&["--upstream", &upstream_url(&up)]).await;

    let res = get(proxy.addr, "/te", &[]).await;
    assert_eq!(
        res.text(),
        "hello world",
        "body corrupted; content-length sent: {:?}",
        res.header_all("content-length")
    );
    drop(proxy);
}

/// RFC 9110 §7.6.1: hop-by-hop fields are for this hop only, so the cache
/// must not select a stored variant by a field the upstream never saw.
/// The proxy strips `Connection`-named fields only after the cache layer
/// chose the variant: `Accept: application/json` + `Connection: Accept`
/// stores the upstream's answer for "no Accept" as the JSON variant, and
/// every later JSON client gets it (cache poisoning).
#[tokio::test]
async fn connection_named_field_cannot_poison_a_vary_variant() {
    let up = upstream(Arc::new(|req: &Seen| {
        let accept = req.header("accept").unwrap_or("none").to_owned();
        response(
            "200 OK",
            &[("Cache-Control", "max-age=60"), ("Vary", "Accept")],
            &format!("made for accept={accept}"),
        )
    }))
    .await;
    let proxy = start_proxy(&["--upstream", &upstream_url(&up)]).await;

    let _attacker = get(
        proxy.addr,
        "/doc",
        &[
            ("Accept", "application/json"),
            ("Connection", "close, Accept"),
        ],
    )
    .await;
    let victim = get(proxy.addr, "/doc", &[("Accept", "application/json")]).await;
    assert_eq!(
        victim.text(),
        "made for accept=application/json",
        "a JSON client got the variant made for a request without Accept (Cache-Status: {:?})",
        victim.header_all("cache-status")
    );
    drop(proxy);
}

/// Per-prefix rules must hold for every spelling of a path: RFC 3986
/// §6.2.2.2 makes `/api/%61ccount` the same URI as `/api/account`. A
/// `bypass` rule ("never cached") is matched against the raw path, so the
/// percent-encoded spelling is cached under the catch-all rule.
#[tokio::test]
async fn bypass_rule_holds_for_percent_encoded_spelling() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let up = upstream(Arc::new(move |_req: &Seen| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        response(
            "200 OK",
            &[("Cache-Control", "max-age=60")],
            &format!("response {n}"),
        )
    }))
    .await;
    let config = std::env::temp_dir().join(format!("red-team-bypass-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[[rules]]\nprefix = \"/api/account\"\nbypass = true\n",
    )
    .expect("write config");
    let proxy = start_proxy(&[
        "--upstream",
        &upstream_url(&up),
        "--config",
        config.to_str().expect("utf8 path"),
    ])
    .await;

    // The plain spelling bypasses as configured.
    get(proxy.addr, "/api/account", &[]).await;
    get(proxy.addr, "/api/account", &[]).await;
    assert_eq!(hits.load(Ordering::SeqCst), 2, "plain spelling bypasses");

    let first = get(proxy.addr, "/api/%61ccount", &[]).await;
    let second = get(proxy.addr, "/api/%61ccount", &[]).await;
    let _ = std::fs::remove_file(&config);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        4,
        "the bypassed resource was served from the cache: {:?} then {:?} (Cache-Status {:?})",
        first.text(),
        second.text(),
        second.header_all("cache-status")
    );
    drop(proxy);
}

/// RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request with
/// more than one `Host` line or none. The proxy forwards both: with two,
/// the upstream gets only the first (the cache layer saw them as invalid),
/// with none it invents the upstream's.
#[tokio::test]
async fn request_without_exactly_one_host_is_400() {
    let up = upstream(Arc::new(|_req: &Seen| response("200 OK", &[], "ok"))).await;
    let proxy = start_proxy(&["--upstream", &upstream_url(&up)]).await;

    let two = raw_request(
        proxy.addr,
        "GET /two HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    let none = raw_request(
        proxy.addr,
        "GET /none HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        (two.status, none.status),
        (400, 400),
        "upstream saw: {:?}",
        up.requests()
            .iter()
            .map(|r| (r.target.clone(), r.header("host").map(str::to_owned)))
            .collect::<Vec<_>>()
    );
    drop(proxy);
}

/// Bad input gets a clear error: `--upstream http://127.0.0.1:99999` is
/// not a port, yet the proxy starts and sends every request to port 80
/// (hyper-util's default for an unparsable port).
#[tokio::test]
async fn upstream_with_out_of_range_port_is_refused_at_startup() {
    let listen = free_addr().await;
    let mut child = proxy_command(&[
        "--upstream".into(),
        "http://127.0.0.1:99999".into(),
        "--listen".into(),
        listen.to_string(),
    ])
    .spawn()
    .expect("spawn");
    let exited = tokio::time::timeout(HANG_GUARD, child.wait()).await;
    let _ = child.start_kill();
    match exited {
        Ok(Ok(status)) => assert!(!status.success(), "exited with success"),
        _ => panic!("the proxy accepted port 99999 and is serving"),
    }
}

/// Bad input gets a clear error, and credentials never go where they do
/// not belong: `--upstream http://user:secret@host:port` is accepted
/// (and logged in full at startup), and with `--rewrite-host` the
/// userinfo is sent to the upstream inside `Host`.
#[tokio::test]
async fn upstream_userinfo_never_reaches_the_host_header() {
    let up = upstream(Arc::new(|_req: &Seen| response("200 OK", &[], "ok"))).await;
    let listen = free_addr().await;
    let mut child = proxy_command(&[
        "--upstream".into(),
        format!("http://user:secret@{}", up.addr),
        "--rewrite-host".into(),
        "--listen".into(),
        listen.to_string(),
    ])
    .spawn()
    .expect("spawn");
    // Either it refuses to start (fine) ...
    if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_millis(1500), child.wait()).await {
        assert!(!status.success());
        return;
    }
    // ... or it must not leak the userinfo.
    wait_listening(listen, &mut child).await;
    let res = get(listen, "/", &[]).await;
    let hosts: Vec<_> = up
        .requests()
        .iter()
        .map(|r| r.header("host").unwrap_or_default().to_owned())
        .collect();
    let _ = child.start_kill();
    assert!(
        hosts.iter().all(|h| !h.contains("secret")),
        "upstream got Host {hosts:?} (status {})",
        res.status
    );
}

/// `--help` "shows a complete example": the admin routes it lists must
/// exist (it once named `/cached`, `/dashboard` and `POST /clear?path=`,
/// which answered 404).
#[tokio::test]
async fn admin_routes_named_in_help_exist() {
    let help = proxy_command(&["--help".into()])
        .stdout(Stdio::piped())
        .output()
        .await
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for route in [
        "/clear-path?path=",
        "/cached-hits",
        "/cached-records",
        "/purge?pattern=",
    ] {
        assert!(help.contains(route), "--help does not name {route}");
    }

    let up = upstream(Arc::new(|_req: &Seen| response("200 OK", &[], "ok"))).await;
    let admin = free_addr().await;
    let proxy = start_proxy(&[
        "--upstream",
        &upstream_url(&up),
        "--admin",
        &admin.to_string(),
    ])
    .await;
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while TcpStream::connect(admin).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hang guard: admin never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut statuses = Vec::new();
    for (method, path) in [
        ("POST", "/clear-path?path=/x"),
        ("GET", "/cached-hits"),
        ("GET", "/cached-records"),
        ("GET", "/stats"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("POST", "/purge?pattern=/x*"),
    ] {
        let res = raw_request(
            admin,
            &format!("{method} {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        )
        .await;
        statuses.push((path, res.status));
    }
    assert!(
        statuses.iter().all(|(_, s)| *s != 404),
        "routes from --help answer 404: {statuses:?}"
    );
    drop(proxy);
}

/// RFC 9110 §7.6.3 / §5.3: `Via` is a list; field lines combine, and each
/// hop appends. The proxy's `append` reads only the first `Via` line and
/// replaces them all, so the upstream side's earlier hops vanish.
#[tokio::test]
async fn via_keeps_every_earlier_hop() {
    let up = upstream(Arc::new(|_req: &Seen| {
        response(
            "200 OK",
            &[
                ("Cache-Control", "no-store"),
                ("Via", "1.1 first-hop"),
                ("Via", "1.1 second-hop"),
            ],
            "ok",
        )
    }))
    .await;
    let proxy = start_proxy(&["--upstream", &upstream_url(&up)]).await;

    let res = get(proxy.addr, "/via", &[]).await;
    let via = res.header_all("via").join(", ");
    assert!(
        via.contains("first-hop") && via.contains("second-hop") && via.contains("axum-cachex"),
        "Via lost hops: {via:?}"
    );
    drop(proxy);
}

/// Spec: SIGTERM drains in-flight requests. A request whose upstream
/// answer is still pending when SIGTERM arrives completes, and the proxy
/// then exits successfully.
// PASSES: guard
#[tokio::test]
async fn sigterm_drains_the_request_in_flight() {
    let release = Arc::new(Notify::new());
    let arrived = Arc::new(Notify::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up_addr = listener.local_addr().expect("addr");
    let (up_release, up_arrived) = (Arc::clone(&release), Arc::clone(&arrived));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (release, arrived) = (Arc::clone(&up_release), Arc::clone(&up_arrived));
            tokio::spawn(async move {
                if read_head(&mut s).await.is_some() {
                    let wait = release.notified();
                    arrived.notify_one();
                    wait.await;
                    let _ = s
                        .write_all(&response(
                            "200 OK",
                            &[("Cache-Control", "no-store")],
                            "drained",
                        ))
                        .await;
                }
            });
        }
    });
    let mut proxy = start_proxy(&["--upstream", &format!("http://{up_addr}")]).await;
    let addr = proxy.addr;
    let client = tokio::spawn(async move { get(addr, "/slow", &[]).await });
    tokio::time::timeout(HANG_GUARD, arrived.notified())
        .await
        .expect("hang guard: request never reached the upstream");
    let pid = proxy.child.id().expect("pid");
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.notify_one();
    let res = client.await.expect("client task");
    assert_eq!((res.status, res.text().as_str()), (200, "drained"));
    let status = tokio::time::timeout(HANG_GUARD, proxy.child.wait())
        .await
        .expect("hang guard: proxy did not exit after SIGTERM")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
}
