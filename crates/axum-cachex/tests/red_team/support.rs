//! Helpers every round uses.

use std::{
    sync::{Arc, atomic::AtomicUsize},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
};
use axum_cachex::backend::MemoryBackend;
use bytes::Bytes;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Fails a test that hangs instead of hanging the suite. Not a speed
/// bound: generous on purpose.
pub(crate) const HANG: Duration = Duration::from_secs(30);

pub(crate) fn mem() -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::new())
}

/// A response read whole.
pub(crate) struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Every line of a header, joined with `, `.
    pub(crate) fn header(&self, name: &str) -> String {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(crate) async fn send(app: &Router, req: Request<Body>) -> Got {
    let fut = async {
        let res = app.clone().oneshot(req).await.expect("infallible");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Got {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(HANG, fut).await.expect("request hung")
}

pub(crate) fn get_req(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, "shop.example")
        .body(Body::empty())
        .expect("request")
}

pub(crate) fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}
