//! Buffering a response body up to a limit, or handing it on untouched,
//! or teeing it: streaming it to the client while keeping a bounded copy.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An empty body that does not say its length: a HEAD answer whose GET
/// length is unknown (an empty body of known length would announce
/// `Content-Length: 0`).
pub(crate) struct UnknownLength;

impl HttpBody for UnknownLength {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(None)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

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
    /// More bytes than the limit (read, or announced by the size hint).
    TooLarge,
    /// The body ended with trailers, which a cached response cannot repeat.
    Trailers,
    /// The body failed, or was dropped before its end (client went away).
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

/// What a tee kept of a body once the client side finished.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    /// The body ended normally, within the limit and without trailers.
    Complete(Bytes),
    /// Nothing was kept, for this reason.
    Dropped(PassReason),
}

/// Whether the body's size hint says its exact length is known
/// (lower == upper), and that length.
pub(crate) fn exact_len<B: HttpBody>(body: &B) -> Option<u64> {
    body.size_hint().exact()
}

/// Wraps `body` so that every frame goes to the client as soon as it
/// arrives, while a copy of the data is kept up to `limit` bytes.
///
/// `on_done` is called exactly once with what was kept: when the body ends
/// (or reports its end), fails, yields trailers, passes the limit (the copy
/// is freed at once and the tee becomes a plain pass-through), or is
/// dropped before its end because the client went away. The client always
/// gets every frame, the inner body's error included.
pub(crate) fn tee<B, F>(body: B, limit: usize, on_done: F) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    F: FnOnce(Kept) + Send + 'static,
{
    Body::new(Tee {
        inner: body,
        rec: Recorder {
            chunks: Vec::new(),
            total: 0,
            limit,
            on_done: Some(on_done),
        },
    })
}

/// The copy a tee keeps, and the callback still to be called.
struct Recorder<F> {
    chunks: Vec<Bytes>,
    total: usize,
    limit: usize,
    /// `None` once called: the tee is then a plain pass-through.
    on_done: Option<F>,
}

impl<F: FnOnce(Kept)> Recorder<F> {
    /// Whether the outcome is still open (data is still being kept).
    fn active(&self) -> bool {
        self.on_done.is_some()
    }

    /// Calls `on_done` if not done yet, and frees the copy.
    fn finish(&mut self, kept: Kept) {
        self.chunks = Vec::new();
        if let Some(f) = self.on_done.take() {
            f(kept);
        }
    }

    /// Reports the whole body as kept.
    fn complete(&mut self) {
        if self.active() {
            let chunks = std::mem::take(&mut self.chunks);
            self.finish(Kept::Complete(concat(chunks, self.total)));
        }
    }

    /// Keeps a copy of `data`, or gives up if that passes the limit.
    fn data(&mut self, data: &Bytes) {
        if !self.active() {
            return;
        }
        self.total = self.total.saturating_add(data.len());
        if self.total > self.limit {
            self.finish(Kept::Dropped(PassReason::TooLarge));
        } else if !data.is_empty() {
            self.chunks.push(data.clone());
        }
    }

    /// Records what the inner body just yielded; `ended` is whether it
    /// now reports its end.
    fn frame<E>(&mut self, frame: &Option<Result<Frame<Bytes>, E>>, ended: bool) {
        match frame {
            None => self.complete(),
            Some(Err(_)) => self.finish(Kept::Dropped(PassReason::Error)),
            Some(Ok(f)) => match f.data_ref() {
                Some(data) => {
                    self.data(data);
                    if ended {
                        self.complete();
                    }
                }
                None => self.finish(Kept::Dropped(PassReason::Trailers)),
            },
        }
    }
}

pin_project! {
    /// A body that forwards every frame and records a bounded copy.
    struct Tee<B, F>
    where
        B: HttpBody,
        F: FnOnce(Kept),
    {
        #[pin]
        inner: B,
        rec: Recorder<F>,
    }

    impl<B, F> PinnedDrop for Tee<B, F>
    where
        B: HttpBody,
        F: FnOnce(Kept),
    {
        fn drop(this: Pin<&mut Self>) {
            // Only reached with the outcome open when no error, trailers or
            // excess was seen; a body that says it ended is then complete.
            let this = this.project();
            let ended = this.inner.is_end_stream();
            if ended {
                this.rec.complete();
            } else {
                this.rec.finish(Kept::Dropped(PassReason::Error));
            }
        }
    }
}

impl<B, F> HttpBody for Tee<B, F>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
    F: FnOnce(Kept),
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let rec = this.rec;
        if rec.active() {
            let announced = this.inner.size_hint().lower();
            if announced.saturating_add(rec.total as u64) > rec.limit as u64 {
                rec.finish(Kept::Dropped(PassReason::TooLarge));
            }
        }
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        if rec.active() {
            rec.frame(&frame, this.inner.is_end_stream());
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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

    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    };
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// What `on_done` received, and how many times it was called.
    #[derive(Clone, Default)]
    struct Done {
        calls: Arc<AtomicUsize>,
        kept: Arc<Mutex<Option<Kept>>>,
    }

    impl Done {
        /// A callback recording into this `Done`.
        fn callback(&self) -> impl FnOnce(Kept) + Send + 'static {
            let done = self.clone();
            move |kept| {
                done.calls.fetch_add(1, Ordering::SeqCst);
                *done.kept.lock().expect("lock") = Some(kept);
            }
        }

        /// The number of calls so far.
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        /// Asserts exactly one call, and returns what it got.
        fn once(&self) -> Kept {
            assert_eq!(self.calls(), 1, "on_done must run exactly once");
            self.kept.lock().expect("lock").take().expect("kept")
        }
    }

    /// A body fed by a channel: a frame is available only once sent.
    struct Chan(mpsc::Receiver<Bytes>);

    impl HttpBody for Chan {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    fn data_frames(chunks: &[&'static [u8]]) -> Frames {
        Frames(
            chunks
                .iter()
                .map(|c| Ok(Frame::data(Bytes::from_static(c))))
                .collect(),
        )
    }

    #[tokio::test]
    async fn tee_streams_chunks_in_order_and_keeps_them() {
        let done = Done::default();
        let body = tee(data_frames(&[b"ab", b"cd", b"ef"]), 100, done.callback());
        let all = body.collect().await.expect("body").to_bytes();
        assert_eq!(all, "abcdef");
        assert_eq!(done.once(), Kept::Complete(Bytes::from_static(b"abcdef")));
    }

    #[tokio::test]
    async fn tee_single_chunk_is_not_copied() {
        let done = Done::default();
        let chunk = Bytes::from_static(b"only");
        let body = tee(
            Frames([Ok(Frame::data(chunk.clone()))].into()),
            100,
            done.callback(),
        );
        body.collect().await.expect("body");
        match done.once() {
            Kept::Complete(b) => assert_eq!(b.as_ptr(), chunk.as_ptr()),
            Kept::Dropped(r) => panic!("dropped: {r:?}"),
        }
    }

    #[tokio::test]
    async fn tee_over_limit_delivers_everything_and_reports_once() {
        let done = Done::default();
        let frames = (0..10u8)
            .map(|i| Ok(Frame::data(Bytes::from(vec![i; 100]))))
            .collect();
        let mut body = tee(Frames(frames), 250, done.callback());
        let mut all = Vec::new();
        for _ in 0..3 {
            let frame = body.frame().await.expect("frame").expect("ok");
            all.extend_from_slice(&frame.into_data().expect("data"));
        }
        // Reported as soon as the limit is passed, not at the end.
        assert_eq!(done.calls(), 1);
        all.extend_from_slice(&body.collect().await.expect("body").to_bytes());
        assert_eq!(all.len(), 1000);
        assert_eq!((all[0], all[999]), (0, 9));
        assert_eq!(done.once(), Kept::Dropped(PassReason::TooLarge));
    }

    #[tokio::test]
    async fn tee_declared_large_body_is_too_large_at_once() {
        let done = Done::default();
        let mut body = tee(
            Full::new(Bytes::from(vec![7u8; 2000])),
            1000,
            done.callback(),
        );
        let frame = body.frame().await.expect("frame").expect("ok");
        assert_eq!(frame.into_data().expect("data").len(), 2000);
        assert!(body.is_end_stream());
        assert_eq!(done.once(), Kept::Dropped(PassReason::TooLarge));
        drop(body);
        assert_eq!(done.calls(), 1);
    }

    #[tokio::test]
    async fn tee_passes_error_on() {
        let done = Done::default();
        let frames = [
            Ok(Frame::data(Bytes::from_static(b"part"))),
            Err(std::io::Error::other("boom")),
        ];
        let body = tee(Frames(frames.into()), 1000, done.callback());
        assert!(body.collect().await.is_err());
        assert_eq!(done.once(), Kept::Dropped(PassReason::Error));
    }

    #[tokio::test]
    async fn tee_passes_trailers_on() {
        let done = Done::default();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("1"));
        let frames = [
            Ok(Frame::data(Bytes::from_static(b"data"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = tee(Frames(frames.into()), 1000, done.callback());
        let collected = body.collect().await.expect("body");
        assert_eq!(collected.trailers().map(|t| t.len()), Some(1));
        assert_eq!(collected.to_bytes(), "data");
        assert_eq!(done.once(), Kept::Dropped(PassReason::Trailers));
    }

    #[tokio::test]
    async fn tee_dropped_midway_reports_once() {
        let done = Done::default();
        let mut body = tee(data_frames(&[b"one", b"two"]), 1000, done.callback());
        body.frame().await.expect("frame").expect("ok");
        assert_eq!(done.calls(), 0);
        drop(body);
        assert_eq!(done.once(), Kept::Dropped(PassReason::Error));
    }

    #[tokio::test]
    async fn tee_end_stream_without_final_poll_is_complete() {
        // hyper stops polling once `is_end_stream` is true.
        let done = Done::default();
        let mut body = tee(Full::new(Bytes::from_static(b"full")), 100, done.callback());
        body.frame().await.expect("frame").expect("ok");
        assert!(body.is_end_stream());
        drop(body);
        assert_eq!(done.once(), Kept::Complete(Bytes::from_static(b"full")));
    }

    #[tokio::test]
    async fn tee_empty_body_never_polled_is_complete() {
        let done = Done::default();
        let body = tee(Full::new(Bytes::new()), 100, done.callback());
        assert!(body.is_end_stream());
        assert_eq!(done.calls(), 0);
        drop(body);
        assert_eq!(done.once(), Kept::Complete(Bytes::new()));
    }

    #[tokio::test]
    async fn tee_forwards_first_frame_before_the_second_exists() {
        let done = Done::default();
        let (tx, rx) = mpsc::channel(1);
        let mut body = tee(Chan(rx), 1000, done.callback());
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        // The client: forwards each frame it receives.
        let client = tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                let data = frame.expect("ok").into_data().expect("data");
                seen_tx.send(data).expect("test alive");
            }
        });
        let wait = Duration::from_secs(5);
        tx.send(Bytes::from_static(b"one")).await.expect("send");
        let first = tokio::time::timeout(wait, seen.recv())
            .await
            .expect("frame 1 in time");
        // Frame 2 has not been sent yet, and the client already has frame 1.
        assert_eq!(first.as_deref(), Some(&b"one"[..]));
        assert_eq!(done.calls(), 0);
        tx.send(Bytes::from_static(b"two")).await.expect("send");
        drop(tx);
        let second = tokio::time::timeout(wait, seen.recv())
            .await
            .expect("frame 2 in time");
        assert_eq!(second.as_deref(), Some(&b"two"[..]));
        client.await.expect("client");
        assert_eq!(done.once(), Kept::Complete(Bytes::from_static(b"onetwo")));
    }

    #[test]
    fn exact_len_only_for_known_sizes() {
        assert_eq!(exact_len(&Full::new(Bytes::from_static(b"abc"))), Some(3));
        assert_eq!(exact_len(&data_frames(&[b"abc"])), None);
    }
}
