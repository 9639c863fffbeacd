//! Forwarding one request to the upstream and its response back, streaming
//! both bodies.
//!
//! - Hop-by-hop fields (RFC 9110 §7.6.1) are removed both ways: the fixed
//!   list and every field the `Connection` header names.
//! - `Via` gets this hop (§7.6.3); `X-Forwarded-For` and `Forwarded` get the
//!   client's address.
//! - `Host` stays the client's, unless `rewrite_host` sends the upstream's.
//! - Connections to the upstream are pooled (hyper-util's client).
//! - An upstream that cannot be reached is a `502`, one that does not send
//!   its response head within the timeout a `504`, each with a short body
//!   and marked [`UpstreamUnreachable`](axum_cachex::UpstreamUnreachable):
//!   the cache layer in front then answers with a stale response instead
//!   where RFC 9111 §4.2.4 allows (`--stale-if-unreachable`).

use std::{net::SocketAddr, time::Duration};

use axum::{body::Body, extract::ConnectInfo};
use http::{
    HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri,
    header::{CONNECTION, HOST, VIA},
    uri::{Authority, PathAndQuery, Scheme},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1,
/// plus the obsolete `Keep-Alive` and `Proxy-Connection`).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// What this hop adds to `Via`.
const VIA_THIS_HOP: &str = "1.1 axum-cachex";

/// Sends requests to one upstream.
#[derive(Clone)]
pub(crate) struct Forwarder {
    client: Client<HttpConnector, Body>,
    authority: Authority,
    rewrite_host: bool,
    timeout: Duration,
}

impl Forwarder {
    /// A forwarder to `upstream` (an `http://host[:port]` URI, checked by
    /// the settings).
    pub(crate) fn new(upstream: &Uri, rewrite_host: bool, timeout: Duration) -> Option<Self> {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Some(Self {
            client,
            authority: upstream.authority()?.clone(),
            rewrite_host,
            timeout,
        })
    }

    /// Forwards `req`; never fails: upstream trouble becomes a 502 or 504.
    pub(crate) async fn forward(&self, req: Request<Body>) -> Response<Body> {
        let req = match self.outbound(req) {
            Ok(req) => req,
            Err(status) => return short(status, "request cannot be forwarded"),
        };
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(res)) => {
                let idle = self.timeout;
                inbound(res.map(|body| Body::new(IdleTimeout::new(body, idle))))
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, upstream = %self.authority, "upstream unreachable");
                short(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway: the upstream cannot be reached",
                )
            }
            Err(_) => {
                tracing::warn!(upstream = %self.authority, timeout = ?self.timeout, "upstream timed out");
                short(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway timeout: the upstream did not answer in time",
                )
            }
        }
    }

    /// The request as the upstream gets it: the upstream's URI, and its
    /// own `Host` with `rewrite_host`. The client-facing fields were set by
    /// [`client_request`] before the cache saw the request.
    fn outbound(&self, req: Request<Body>) -> Result<Request<Body>, StatusCode> {
        let (mut parts, body) = req.into_parts();
        let client_host = parts.headers.get(HOST).cloned();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        let host = match (client_host, self.rewrite_host) {
            (Some(host), false) => host,
            _ => HeaderValue::from_str(self.authority.as_str())
                .map_err(|_| StatusCode::BAD_REQUEST)?,
        };
        add_forwarding(&mut parts);
        parts.headers.insert(HOST, host);
        Ok(Request::from_parts(parts, body))
    }
}

/// Makes the request what the upstream will see, before the cache looks
/// at it (so that `Vary` selects by exactly those fields): hop-by-hop
/// fields removed and `Host` taken from an absolute-form target (RFC 9112
/// §3.2.2). The per-client fields this hop adds (`Via`,
/// `X-Forwarded-For`, `Forwarded`) come later, on the way to the upstream
/// only, so a hit costs nothing for them; a response that varies on one of
/// them is per client and is not stored (see [`inbound`]).
pub(crate) fn client_request(parts: &mut http::request::Parts) {
    strip_hop_by_hop(&mut parts.headers);
    if let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(HOST, host);
    }
}

/// Adds this hop to `Via`, `X-Forwarded-For` and `Forwarded`.
fn add_forwarding(parts: &mut http::request::Parts) {
    parts
        .headers
        .append(VIA, HeaderValue::from_static(VIA_THIS_HOP));
    let client_addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if let Some(ip) = client_addr {
        let xff = HeaderName::from_static("x-forwarded-for");
        append(&mut parts.headers, xff, ip.to_string());
        let forwarded = forwarded_element(ip, parts.headers.get(HOST));
        append(
            &mut parts.headers,
            HeaderName::from_static("forwarded"),
            forwarded,
        );
    }
}

/// The upstream's response as the client gets it. One that varies on a
/// field this hop sets per client (`Via`, `X-Forwarded-For`,
/// `Forwarded`) was made for this client alone: it is marked
/// [`Credentialed`](axum_cachex::Credentialed), so the cache neither stores
/// nor shares it.
fn inbound(res: Response<Body>) -> Response<Body> {
    let (mut parts, body) = res.into_parts();
    if varies_per_client(&parts.headers) {
        parts.extensions.insert(axum_cachex::Credentialed);
    }
    // RFC 9112 §6.3: with `Transfer-Encoding` the body's length is its
    // chunking, and a `Content-Length` beside it is wrong (and was
    // ignored in reading it): it must not reach the client.
    if parts.headers.contains_key(http::header::TRANSFER_ENCODING) {
        parts.headers.remove(http::header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .append(VIA, HeaderValue::from_static(VIA_THIS_HOP));
    Response::from_parts(parts, body)
}

/// Whether `Vary` names a field this hop sets per client.
fn varies_per_client(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|name| {
            ["via", "x-forwarded-for", "forwarded"]
                .iter()
                .any(|own| name.eq_ignore_ascii_case(own))
        })
}

/// Removes the hop-by-hop fields, including those `Connection` names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Appends `value` to a list-valued field as a field line of its own:
/// equivalent to joining (RFC 9110 §5.3), and every earlier line stays as
/// it was. Takes the `String` so the value is not copied again.
fn append(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.append(name, value);
    }
}

/// One `Forwarded` element (RFC 7239): the client and the host it asked
/// for, IPv6 addresses quoted and bracketed.
fn forwarded_element(ip: std::net::IpAddr, host: Option<&HeaderValue>) -> String {
    let mut element = match ip {
        std::net::IpAddr::V4(v4) => format!("for={v4}"),
        std::net::IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    };
    if let Some(host) = host.and_then(|h| h.to_str().ok())
        && host
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        element.push_str(&format!(";host=\"{host}\""));
    }
    element.push_str(";proto=http");
    element
}

/// An upstream body that fails once no frame arrived for `idle`: a stalled
/// upstream costs a client (and a cache waiting to store the body) at most
/// that long, then the body ends with an error instead of hanging.
struct IdleTimeout<B> {
    inner: B,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    idle: Duration,
}

impl<B> IdleTimeout<B> {
    fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep(idle)),
            idle,
        }
    }
}

/// The error a stalled upstream body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing of the body for {0:?}")]
struct BodyStalled(Duration);

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::{future::Future, task::Poll};
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A short plain-text answer of the proxy's own, marked for the cache layer
/// as "the upstream is unreachable" when it is a 502 or 504.
fn short(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut res = Response::new(Body::from(format!("{text}\n")));
    *res.status_mut() = status;
    if matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
    ) {
        res.extensions_mut()
            .insert(axum_cachex::UpstreamUnreachable);
    }
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_go_including_those_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn list_fields_are_appended_to() {
        let mut h = HeaderMap::new();
        append(&mut h, VIA, VIA_THIS_HOP.to_owned());
        assert_eq!(h[VIA], "1.1 axum-cachex");
        h.insert(VIA, HeaderValue::from_static("1.0 fred"));
        h.append(VIA, HeaderValue::from_static("1.1 wilma"));
        append(&mut h, VIA, VIA_THIS_HOP.to_owned());
        let lines: Vec<_> = h.get_all(VIA).iter().collect();
        assert_eq!(lines, ["1.0 fred", "1.1 wilma", "1.1 axum-cachex"]);
    }

    #[test]
    fn forwarded_quotes_ipv6_and_drops_odd_hosts() {
        let v6: std::net::IpAddr = "::1".parse().expect("ip");
        assert_eq!(forwarded_element(v6, None), "for=\"[::1]\";proto=http");
        let v4: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
        let host = HeaderValue::from_static("example.com");
        assert_eq!(
            forwarded_element(v4, Some(&host)),
            "for=10.0.0.1;host=\"example.com\";proto=http"
        );
        let odd = HeaderValue::from_static("a\"b");
        assert_eq!(forwarded_element(v4, Some(&odd)), "for=10.0.0.1;proto=http");
    }
}
