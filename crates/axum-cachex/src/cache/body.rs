//! Buffering a response body up to a limit, or handing it on untouched.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The outcome of reading a handler's body for the cache.
pub(crate) enum Collected {
    /// The whole body, within the limit and without trailers.
    Complete(Bytes),
    /// The body is not storable (too large, has trailers, or failed while
    /// reading); this body replays what was read and streams the rest,
    /// error included, so the client gets exactly what the handler sent.
    PassThrough(Body, PassReason),
}

/// Why a body was passed through instead of stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PassReason {
    TooLarge,
    Trailers,
    Error,
}

/// Reads `body` until its end or until more than `limit` bytes arrived.
///
/// A body whose size hint already exceeds the limit is not read at all, so
/// a large download streams through with no buffering.
pub(crate) async fn collect_limited<B>(body: B, limit: usize) -> Collected
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Collected::PassThrough(Body::new(body), PassReason::TooLarge);
    }
    let mut body = Box::pin(body);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    total = total.saturating_add(data.len());
                    chunks.push(data);
                    if total > limit {
                        return pass(chunks, None, Some(body), None, PassReason::TooLarge);
                    }
                }
                Err(frame) => {
                    // Trailers: a cached response could not repeat them.
                    return pass(chunks, Some(frame), Some(body), None, PassReason::Trailers);
                }
            },
            Some(Err(e)) => {
                return pass::<B>(chunks, None, None, Some(e.into()), PassReason::Error);
            }
        }
    }
    Collected::Complete(concat(chunks, total))
}

fn concat(mut chunks: Vec<Bytes>, total: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        // The common case: one chunk, no copy.
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(total);
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    }
}

fn pass<B>(
    chunks: Vec<Bytes>,
    extra: Option<Frame<Bytes>>,
    rest: Option<Pin<Box<B>>>,
    error: Option<BoxError>,
    reason: PassReason,
) -> Collected
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut buffered: VecDeque<Frame<Bytes>> = chunks.into_iter().map(Frame::data).collect();
    buffered.extend(extra);
    let replay = Replay {
        buffered,
        rest: rest.map(|b| Body::new(MapErr(b))),
        error,
    };
    Collected::PassThrough(Body::new(replay), reason)
}

/// Adapts the inner body's error type to `BoxError`.
struct MapErr<B>(Pin<Box<B>>);

impl<B> HttpBody for MapErr<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.as_mut().poll_frame(cx).map_err(Into::into)
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

/// Frames already read, then the rest of the original body (or its error).
struct Replay {
    buffered: VecDeque<Frame<Bytes>>,
    rest: Option<Body>,
    error: Option<BoxError>,
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.buffered.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = self.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_empty()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    /// A body that yields the given frames (or errors) one by one and gives
    /// no size hint, like a streaming handler.
    struct Frames(VecDeque<Result<Frame<Bytes>, std::io::Error>>);

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    #[tokio::test]
    async fn small_body_is_complete() {
        match collect_limited(Full::new(Bytes::from_static(b"hello")), 10).await {
            Collected::Complete(b) => assert_eq!(b, "hello"),
            Collected::PassThrough(..) => panic!("expected complete"),
        }
    }

    #[tokio::test]
    async fn chunked_body_over_limit_replays_everything() {
        let frames = (0..10u8)
            .map(|i| Ok(Frame::data(Bytes::from(vec![i; 100]))))
            .collect();
        match collect_limited(Frames(frames), 250).await {
            Collected::PassThrough(body, reason) => {
                assert_eq!(reason, PassReason::TooLarge);
                let all = body.collect().await.expect("body").to_bytes();
                assert_eq!(all.len(), 1000);
                assert_eq!((all[0], all[999]), (0, 9));
            }
            Collected::Complete(_) => panic!("expected pass-through"),
        }
    }

    #[tokio::test]
    async fn declared_large_body_is_not_read() {
        let body = Full::new(Bytes::from(vec![7u8; 2000]));
        match collect_limited(body, 1000).await {
            Collected::PassThrough(body, PassReason::TooLarge) => {
                assert_eq!(body.collect().await.expect("body").to_bytes().len(), 2000);
            }
            _ => panic!("expected too large"),
        }
    }

    #[tokio::test]
    async fn failing_body_passes_error_on() {
        let frames = [
            Ok(Frame::data(Bytes::from_static(b"part"))),
            Err(std::io::Error::other("boom")),
        ];
        match collect_limited(Frames(frames.into_iter().collect()), 1000).await {
            Collected::PassThrough(body, reason) => {
                assert_eq!(reason, PassReason::Error);
                assert!(body.collect().await.is_err());
            }
            Collected::Complete(_) => panic!("expected pass-through"),
        }
    }
}
