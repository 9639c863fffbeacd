//! The request flow of the cache layer: what happens to one request.
//!
//! ```text
//! request ─ plan ─┬─ not GET/HEAD ─► handler ─► success: delete the URI's entries ─► fwd=method
//!                 ├─ no_store route ─► handler, Cache-Control: no-store ──────────► bypass
//!                 ├─ uncached (credentials, invalid Host, no ttl, private) ─► handler, ETag/304 ─► bypass/miss
//!                 └─ cached ─ lookup ─┬─ fresh ─────────────────────────► hit (200 or 304)
//!                                     ├─ stale, stale-while-revalidate ──► hit + one background refresh
//!                                     └─ miss / stale ─ coalesce ─┬─ waiter: the leader's entry ─► collapsed
//!                                                                 └─ leader: handler (conditional when
//!                                                                    revalidating) ─┬─ 304: freshen, serve stored
//!                                                                                   ├─ 5xx/error in stale-if-error: stale
//!                                                                                   └─ admit ─ store (buffered, or teed
//!                                                                                      while it streams) ─► miss
//! ```
//!
//! HEAD is answered from GET's entry, and on a miss forwarded as GET so
//! that it gets the ETag a GET would and its response can be stored.
//! Every request ends in [`Flow::record`], which writes `Cache-Status`,
//! the counters and the tracing span from one [`CacheStatus`] value.

use std::{
    marker::PhantomData,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};

use axum::body::Body;
use axum_cachex_core::{Backend, CacheEntry, CacheRecord};
use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode,
    header::{CACHE_CONTROL, CONTENT_LENGTH, ETAG},
    request::Parts,
    response::Parts as ResParts,
};
use http_body::Body as HttpBody;
use tower_service::Service;

use super::{
    admit::{self, Admission, Policy},
    body::{self, Collected, Kept, PassReason},
    coalesce::{Flight, Leader, Outcome},
    conditional::Conditions,
    credentials::{CredentialNames, ShareGuard},
    decide::{self, Use},
    entry,
    etag::etag_for,
    extract::CacheHandle,
    headers, invalidate,
    lock::{self, LockOutcome},
    plan::{self, Plan},
    response,
    shared::{Run, Shared},
    stats::bump,
    status::CacheStatus,
    store::{self, Found, Slot},
    vary,
};

use super::unreachable::UpstreamUnreachable;
use crate::lock::LockGuard;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Room left for the status, headers and bookkeeping of a stored entry
/// when a backend limits the size of a value.
const STORED_HEAD_ROOM: usize = 64 * 1024;

/// What a request needs to be answered from the store: the layer, its
/// backend, and what the client asked for. A fresh hit needs nothing more
/// (no handler, no await).
pub(crate) struct Prelude {
    shared: Arc<Shared>,
    backend: Arc<dyn Backend>,
    /// The client asked with HEAD (forwarded as GET, answered bodiless).
    head: bool,
    cond: Conditions,
}

/// One request's view of the layer, handler included.
struct Flow<S, ReqBody> {
    pre: Prelude,
    inner: S,
    _request: PhantomData<fn(ReqBody)>,
}

/// A request [`start`] could not answer, and what it learnt about it.
pub(crate) struct Continuation<ReqBody> {
    pre: Prelude,
    parts: Parts,
    body: ReqBody,
    plan: Plan,
}

/// What [`start`] did with a request.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and moved straight into the boxed future"
)]
pub(crate) enum Started<ReqBody> {
    /// A fresh hit from process memory, answered at once.
    Answered(Response<Body>),
    /// Everything else: for [`serve`].
    Continue(Continuation<ReqBody>),
}

/// What the handler's response will be stored as, once its body is read.
struct Pending {
    slot: Slot,
    policy: Policy,
    /// The client's request headers, which select the variant.
    selecting: HeaderMap,
    /// False when the backend just failed or the request said `no-store`:
    /// waiters still get the entry.
    write: bool,
    leader: Option<Leader>,
    lock: Option<LockGuard>,
    /// Set by an outer middleware when the response must not be shared.
    guard: Option<ShareGuard>,
    /// The handler run, registered for its key: a response made before an
    /// invalidation of the key since is neither stored nor shared (RFC
    /// 9111 §4.4).
    run: Run,
    /// When the handler run began: what it made predates an invalidation
    /// of one of its tags made after this.
    began: SystemTime,
    /// The cross-instance lock was gone when the response was to be stored.
    lock_lost: AtomicBool,
}

/// Entry point: one request's first step, without awaiting. A fresh hit
/// from a store that answers from process memory is answered here, with
/// no future, no handler and no copy of the inner service.
pub(crate) fn start<ReqBody>(shared: Arc<Shared>, req: Request<ReqBody>) -> Started<ReqBody> {
    let (mut parts, body) = req.into_parts();
    shared.name_route(&parts);
    let backend = shared.options.backend.resolve();
    let head = parts.method == Method::HEAD;
    if head && !shared.options.no_store {
        parts.method = Method::GET;
    }
    let pre = Prelude {
        cond: Conditions::from_request(&parts.headers),
        shared,
        backend,
        head,
    };
    let plan = plan::plan(&pre.shared, &parts);
    if let Plan::Cached { key, .. } = &plan {
        if let Some((res, status)) = pre.fresh_hit_now(&parts, key) {
            // `from_entry` and `not_modified` never copy tag fields:
            // `record` need not look for them.
            return Started::Answered(pre.record(res, status, true));
        }
    }
    Started::Continue(Continuation {
        pre,
        parts,
        body,
        plan,
    })
}

/// The rest of a request [`start`] could not answer: the store, the
/// handler, or both.
pub(crate) async fn serve<S, ReqBody, ResBody>(
    cont: Continuation<ReqBody>,
    inner: S,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let Continuation {
        pre,
        parts,
        body,
        plan,
    } = cont;
    let mut flow = Flow {
        pre,
        inner,
        _request: PhantomData,
    };
    let (res, status) = match plan {
        Plan::Unsafe => flow.unsafe_method(parts, body).await?,
        Plan::NoStore => flow.no_store(parts, body).await?,
        Plan::Uncached(status) => flow.uncached(parts, body, status).await?,
        Plan::OnlyIfCachedMiss => only_if_cached_miss(),
        Plan::Cached {
            key,
            may_store,
            only_if_cached,
        } => {
            flow.cached(parts, body, key, may_store, only_if_cached)
                .await?
        }
    };
    Ok(flow.pre.record(res, status, false))
}

impl<S, ReqBody, ResBody> Flow<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    /// Runs the handler, with the [`CacheHandle`] its extractor reads.
    async fn call(&mut self, mut req: Request<ReqBody>) -> Result<Response<ResBody>, S::Error> {
        req.extensions_mut()
            .insert(CacheHandle::new(&self.pre.shared, &self.pre.backend));
        std::future::poll_fn(|cx| self.inner.poll_ready(cx)).await?;
        self.inner.call(req).await
    }

    /// Not GET or HEAD: the handler runs; a success deletes what is stored
    /// for the request's URI and for same-origin `Location` and
    /// `Content-Location` (RFC 9111 §4.4).
    async fn unsafe_method(
        &mut self,
        parts: Parts,
        body: ReqBody,
    ) -> Result<(Response<Body>, CacheStatus), S::Error> {
        let request = invalidate::RequestTarget::of(&parts);
        let res = self.call(Request::from_parts(parts, body)).await?;
        let status = res.status();
        let invalidates = !Method::is_safe(&request.method)
            && (status.is_success() || status.is_redirection())
            && self.pre.shared.stores();
        if invalidates {
            invalidate::apply(&self.pre.shared, &self.pre.backend, &request, res.headers()).await;
        }
        Ok((res.map(Body::new), CacheStatus::forward("method")))
    }

    /// A `no_store` route: the handler's response with the layer's
    /// `Cache-Control: no-store`, streamed.
    async fn no_store(
        &mut self,
        parts: Parts,
        body: ReqBody,
    ) -> Result<(Response<Body>, CacheStatus), S::Error> {
        let mut res = self
            .call(Request::from_parts(parts, body))
            .await?
            .map(Body::new);
        res.headers_mut()
            .insert(CACHE_CONTROL, self.pre.shared.cache_control.clone());
        Ok((res, CacheStatus::bypass("no-store")))
    }

    /// Runs the handler without the store: ETag, `Cache-Control` and 304
    /// for what the handler did not make uncacheable, streamed when its
    /// length is unknown.
    async fn uncached(
        &mut self,
        parts: Parts,
        body: ReqBody,
        status: CacheStatus,
    ) -> Result<(Response<Body>, CacheStatus), S::Error> {
        let res = self.call(Request::from_parts(parts, body)).await?;
        let (mut res_parts, res_body) = res.into_parts();
        self.learn_credentials(&res_parts);
        // A response made for a request with credentials must not invite
        // shared caches downstream to keep it. Caches know `Authorization`
        // (RFC 9111 §3.5): the handler's own `Cache-Control` is left to say
        // what it says, only the layer's default is made private. Other
        // credentials they cannot see: the response says `private`.
        if status.detail == Some("credentials")
            || plan::response_is_credentialed(&self.pre.shared, &res_parts.extensions)
        {
            headers::keep_private(
                &mut res_parts.headers,
                &self.pre.shared.private_cache_control,
            );
        } else if status.detail == Some("authorization") {
            headers::add_default_cache_control(
                &mut res_parts.headers,
                &self.pre.shared.private_cache_control,
            );
        }
        let refused = admit::refusal(
            &self.pre.shared,
            res_parts.status,
            &res_parts.headers,
            &super::targeted::response_directives(
                &res_parts.headers,
                &self.pre.shared.options.targets,
            ),
        );
        if let Some(reason) = refused {
            let res = self.bodiless_if_head(Response::from_parts(res_parts, Body::new(res_body)));
            return Ok((res, status.with_detail_if_none(reason)));
        }
        headers::add_default_cache_control(&mut res_parts.headers, &self.pre.shared.cache_control);
        let buffer = body::exact_len(&res_body)
            .is_some_and(|n| n <= self.pre.shared.options.max_body_size as u64);
        if !buffer {
            let res = Response::from_parts(res_parts, Body::new(res_body));
            return Ok((self.bodiless_if_head(res), status));
        }
        match body::collect_limited(res_body, self.pre.shared.options.max_body_size).await {
            Collected::Complete(bytes) => {
                let mut status = status;
                let res = self.answer_bytes(res_parts, bytes, &mut status);
                Ok((res, status))
            }
            Collected::PassThrough(body, reason) => {
                let res = self.bodiless_if_head(Response::from_parts(res_parts, body));
                Ok((res, status.with_detail_if_none(pass_detail(reason))))
            }
        }
    }

    /// The cacheable path: look up, decide, and go to the handler when the
    /// store cannot answer.
    async fn cached(
        &mut self,
        parts: Parts,
        body: ReqBody,
        key: String,
        may_store: bool,
        only_if_cached: bool,
    ) -> Result<(Response<Body>, CacheStatus), S::Error> {
        let (found, slot) =
            store::lookup(&self.pre.shared, &self.pre.backend, &key, &parts.headers).await;
        let now = self.pre.shared.options.clock.now();
        let write = may_store && !matches!(found, Found::Failed);
        let mut fwd = match found {
            Found::Missing { vary_miss: true } => "vary-miss",
            _ => "miss",
        };
        let mut stale = Stale::default();
        if let Found::Entry(entry) = found {
            fwd = "stale";
            match decide::decide(&entry, now) {
                Use::Fresh => {
                    let status = CacheStatus::hit(response::ttl_left(&entry, now));
                    return Ok((self.pre.answer_entry(&entry, now), status));
                }
                Use::StaleWhileRevalidate => {
                    // A `no-store` request must not cause a store, even in
                    // the background.
                    if write {
                        self.spawn_refresh(&parts, slot);
                    }
                    let status = CacheStatus::hit(response::ttl_left(&entry, now))
                        .with_detail("stale-while-revalidate");
                    return Ok((self.pre.answer_entry(&entry, now), status));
                }
                Use::Revalidate {
                    conditional,
                    stale_if_error,
                } => {
                    let if_unreachable =
                        super::unreachable::may_serve(&self.pre.shared, &entry, now);
                    stale = Stale::new(entry, conditional, stale_if_error, if_unreachable);
                }
            }
        }
        if only_if_cached {
            // RFC 9111 §5.2.1.7: nothing usable stored, and the client
            // does not want the handler asked.
            return Ok(only_if_cached_miss());
        }
        Box::pin(self.forward(parts, body, slot, stale, fwd, write)).await
    }

    /// The miss and revalidation path: coalesce, lock, run the handler,
    /// store.
    async fn forward(
        &mut self,
        mut parts: Parts,
        body: ReqBody,
        slot: Slot,
        stale: Stale,
        fwd: &'static str,
        write: bool,
    ) -> Result<(Response<Body>, CacheStatus), S::Error> {
        let selecting = parts.headers.clone();
        let leader = match self.join_flight(&slot, &selecting).await {
            Ok(leader) => leader,
            Err((shared_entry, stale)) => {
                let now = self.pre.shared.options.clock.now();
                let status = collapsed_status(&shared_entry, now, fwd, stale);
                return Ok((self.pre.answer_entry(&shared_entry, now), status));
            }
        };
        let lock = match self.take_lock(&slot, &selecting, &leader, write).await {
            Ok(lock) => lock,
            Err(computed) => {
                let now = self.pre.shared.options.clock.now();
                let status = collapsed_status(&computed, now, fwd, false);
                return Ok((self.pre.answer_entry(&computed, now), status));
            }
        };
        headers::strip_conditionals(&mut parts.headers);
        // If the handler's 304 turns out not to be about the stored entry,
        // the request is sent again without conditions.
        let retry = stale
            .revalidating()
            .map(|_| clean_request::<ReqBody>(&parts));
        if let Some(entry) = stale.revalidating() {
            decide::add_validators(&mut parts.headers, entry);
        }
        let run = self
            .pre
            .shared
            .invalidations
            .begin(&*self.pre.backend, &slot.base);
        let pending = Pending {
            slot,
            policy: Policy::placeholder(),
            selecting,
            write,
            leader,
            lock,
            guard: parts.extensions.get::<ShareGuard>().cloned(),
            run,
            began: self.pre.shared.options.clock.now(),
            lock_lost: AtomicBool::new(false),
        };
        let result = self.call(Request::from_parts(parts, body)).await;
        self.after_handler(result, stale, pending, fwd, retry).await
    }

    /// Joins the in-process flight of the request's variant. `Ok(leader)`
    /// to run the handler (`None` when coalescing is off or the leader
    /// had nothing to share), `Err(entry)` to serve the leader's entry.
    async fn join_flight(
        &mut self,
        slot: &Slot,
        selecting: &HeaderMap,
    ) -> Result<Option<Leader>, (CacheEntry, bool)> {
        if !self.pre.shared.options.coalesce {
            return Ok(None);
        }
        match self.pre.shared.inflight.join(&slot.flight_key(selecting)) {
            Flight::Leader(leader) => Ok(Some(leader)),
            Flight::Waiter(waiting) => {
                bump(&self.pre.shared.stats.coalesced_waits);
                let outcome = waiting
                    .wait(Some(self.pre.shared.options.coalesce_timeout))
                    .await;
                let now = self.pre.shared.options.clock.now();
                match outcome {
                    // A leader on a cold key may have produced another
                    // variant: not ours to serve. A `no-cache` response is
                    // not reused without validation, even a just-made one.
                    Some(Outcome::Made(entry))
                        if vary::selects(&entry, selecting) && entry.is_fresh(now) =>
                    {
                        Err(((*entry).clone(), false))
                    }
                    Some(Outcome::StaleOnError(entry)) if vary::selects(&entry, selecting) => {
                        Err(((*entry).clone(), true))
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    /// The cross-instance lock, for the in-process leader.
    async fn take_lock(
        &mut self,
        slot: &Slot,
        selecting: &HeaderMap,
        leader: &Option<Leader>,
        backend_up: bool,
    ) -> Result<Option<LockGuard>, CacheEntry> {
        let (Some(lock_ttl), Some(leader), true) =
            (self.pre.shared.options.lock_ttl, leader, backend_up)
        else {
            return Ok(None);
        };
        match lock::acquire(
            &self.pre.shared,
            &self.pre.backend,
            slot,
            selecting,
            lock_ttl,
        )
        .await
        {
            LockOutcome::Held(held) => Ok(Some(held)),
            LockOutcome::Computed(entry) => {
                leader.publish(Outcome::Made(Arc::new((*entry).clone())));
                Err(*entry)
            }
            LockOutcome::Proceed => Ok(None),
        }
    }

    /// What the handler's answer becomes: a freshened entry after a 304,
    /// the stale entry after a failure, or a new response to store.
    async fn after_handler(
        &mut self,
        result: Result<Response<ResBody>, S::Error>,
        stale: Stale,
        pending: Pending,
        fwd: &'static str,
        retry: Option<Request<ReqBody>>,
    ) -> Result<(Response<Body>, CacheStatus), S::Error> {
        let revalidated = match (&result, stale.revalidating()) {
            (Ok(res), Some(old)) if res.status() == StatusCode::NOT_MODIFIED => {
                Some(entry::validators_match(old, res.headers()))
            }
            _ => None,
        };
        let result = match (revalidated, result, retry) {
            (Some(true), Ok(res), _) => return Ok(self.freshen(res, stale, pending).await),
            // A 304 about another response: ask again, without conditions.
            (Some(false), Ok(_), Some(retry)) => self.call(retry).await,
            (_, result, _) => result,
        };
        let res = match result {
            Ok(res) if !res.status().is_server_error() => res,
            failed => {
                let unreachable = failed
                    .as_ref()
                    .is_ok_and(|r| r.extensions().get::<UpstreamUnreachable>().is_some());
                match stale.into_if_error(unreachable) {
                    Some((entry, detail)) => {
                        let code = failed.as_ref().ok().map(|r| r.status().as_u16());
                        return Ok(self.serve_stale_on_error(entry, pending, code, detail));
                    }
                    None => failed?,
                }
            }
        };
        Ok(self.store_response(res, pending, fwd).await)
    }

    /// RFC 9111 §4.3.4: the handler confirmed the stored response; update
    /// its headers from the 304, store it fresh again and serve it.
    async fn freshen(
        &mut self,
        not_modified: Response<ResBody>,
        stale: Stale,
        pending: Pending,
    ) -> (Response<Body>, CacheStatus) {
        let now = self.pre.shared.options.clock.now();
        let Some(old) = stale.into_revalidating() else {
            return (gateway_timeout(), CacheStatus::forward("stale"));
        };
        let mut status = CacheStatus {
            fwd_status: Some(304),
            ..CacheStatus::forward("stale")
        };
        let (parts, _) = not_modified.into_parts();
        self.learn_credentials(&parts);
        let update = &parts.headers;
        // A 304 made for credentials updates nothing shared (as a 200 made
        // for them would not be stored).
        let credentialed = pending
            .guard
            .as_ref()
            .is_some_and(ShareGuard::sharing_forbidden)
            || plan::response_is_credentialed(&self.pre.shared, &parts.extensions);
        if credentialed {
            pending.finish(None);
            let headers =
                headers::merged(&old.headers, &response::end_to_end_headers(update, true));
            let mut res = self.pre.answer_entry(&CacheEntry { headers, ..old }, now);
            headers::keep_private(res.headers_mut(), &self.pre.shared.private_cache_control);
            return (res, status.with_detail("credentials"));
        }
        let stored = entry::freshened(&self.pre.shared, &old, update, &pending.selecting, now);
        match &stored {
            Some(entry) => {
                status.stored = pending
                    .store(&self.pre.shared, &self.pre.backend, entry)
                    .await
            }
            // The handler now says the response may not be stored (`private`,
            // `no-store`, `Vary: *`): the old copy must not outlive that,
            // not even for stale-if-error.
            None => store::delete(&self.pre.shared, &self.pre.backend, &pending.slot.base).await,
        }
        pending.finish(stored.clone());
        // This client gets the stored response updated with all the 304
        // says, its cookies and `Cache-Control` included (RFC 9111 §4.3.4);
        // the store keeps what may be shared.
        let headers = headers::merged(&old.headers, &response::end_to_end_headers(update, true));
        let entry = CacheEntry {
            headers,
            ..stored.unwrap_or(old)
        };
        (self.pre.answer_entry(&entry, now), status)
    }

    fn serve_stale_on_error(
        &self,
        entry: CacheEntry,
        pending: Pending,
        fwd_status: Option<u16>,
        detail: &'static str,
    ) -> (Response<Body>, CacheStatus) {
        bump(&self.pre.shared.stats.handler_failures);
        let now = self.pre.shared.options.clock.now();
        // Waiters share the stale answer instead of each re-running a
        // failing handler.
        let entry = Arc::new(entry);
        pending.finish_with(Outcome::StaleOnError(Arc::clone(&entry)));
        let status = CacheStatus {
            fwd_status,
            ttl: Some(response::ttl_left(&entry, now)),
            ..CacheStatus::forward("stale").with_detail(detail)
        };
        (self.pre.answer_entry(&entry, now), status)
    }

    /// Admits, stores and answers a new response from the handler.
    async fn store_response(
        &mut self,
        res: Response<ResBody>,
        mut pending: Pending,
        fwd: &'static str,
    ) -> (Response<Body>, CacheStatus) {
        let (mut parts, body) = res.into_parts();
        self.learn_credentials(&parts);
        let now = self.pre.shared.options.clock.now();
        let guarded = pending
            .guard
            .as_ref()
            .is_some_and(ShareGuard::sharing_forbidden);
        let admission =
            if guarded || plan::response_is_credentialed(&self.pre.shared, &parts.extensions) {
                Admission::Refuse("credentials")
            } else {
                admit::admit(&self.pre.shared, parts.status, &parts.headers, now)
            };
        let mut status = CacheStatus::forward(fwd);
        let policy = match admission {
            Admission::Store(policy) => policy,
            Admission::Refuse(reason) => {
                pending.finish(None);
                if reason == "credentials" {
                    // Made for credentials: no cache downstream keeps it.
                    headers::keep_private(
                        &mut parts.headers,
                        &self.pre.shared.private_cache_control,
                    );
                }
                let res = self.pass_through(parts, Body::new(body), &mut status);
                return (res, status.with_detail(reason));
            }
        };
        if !pending.write {
            // A `no-store` request: nothing is stored, so nothing is
            // buffered either (nor shared with waiters).
            pending.finish(None);
            headers::add_default_cache_control(&mut parts.headers, &self.pre.shared.cache_control);
            return (
                self.pass_through(parts, Body::new(body), &mut status),
                status,
            );
        }
        pending.policy = policy;
        let limit = self.store_limit();
        match body::exact_len(&body) {
            Some(len) if len > limit as u64 => {
                pending.finish(None);
                headers::add_default_cache_control(
                    &mut parts.headers,
                    &self.pre.shared.cache_control,
                );
                let res = self.pass_through(parts, Body::new(body), &mut status);
                (res, status.with_detail("too-large"))
            }
            Some(_) => self.store_buffered(parts, body, pending, status).await,
            // An unknown length could be endless: answer HEAD at once.
            None if self.pre.head => {
                pending.finish(None);
                headers::add_default_cache_control(
                    &mut parts.headers,
                    &self.pre.shared.cache_control,
                );
                (
                    self.pass_through(parts, Body::new(body), &mut status),
                    status,
                )
            }
            // The client's validators match the handler's: a 304 now, and
            // nothing stored (the body is not read).
            None if self.pre.cond.not_modified_by(
                parts.status,
                parts.headers.get(ETAG),
                &parts.headers,
            ) =>
            {
                pending.finish(None);
                headers::add_default_cache_control(
                    &mut parts.headers,
                    &self.pre.shared.cache_control,
                );
                (
                    self.pass_through(parts, Body::new(body), &mut status),
                    status,
                )
            }
            None => (self.store_streaming(parts, body, pending), status),
        }
    }

    /// A body of known length within the limit: read it, store it, then
    /// answer with its ETag (or 304).
    async fn store_buffered(
        &mut self,
        mut parts: ResParts,
        body: ResBody,
        pending: Pending,
        mut status: CacheStatus,
    ) -> (Response<Body>, CacheStatus) {
        let bytes = match body::collect_limited(body, self.store_limit()).await {
            Collected::Complete(bytes) => bytes,
            Collected::PassThrough(_, PassReason::Error) => {
                // The body failed while it was read to be stored, before
                // the client got anything: a clear answer instead of a head
                // followed by a broken connection.
                pending.finish(None);
                bump(&self.pre.shared.stats.handler_failures);
                let res = bad_gateway("the response body failed before it was complete");
                return (res, status.with_detail("body-error"));
            }
            Collected::PassThrough(body, reason) => {
                pending.finish(None);
                let res = self.pass_through(parts, body, &mut status);
                return (res, status.with_detail(pass_detail(reason)));
            }
        };
        if !headers::declared_length_matches(&parts.headers, bytes.len()) {
            // A body that ended short of its `Content-Length` is not the
            // response (RFC 9111 §3.3): not stored, not shared.
            pending.finish(None);
            headers::add_default_cache_control(&mut parts.headers, &self.pre.shared.cache_control);
            let res = self.answer_bytes(parts, bytes, &mut status);
            return (res, status.with_detail("incomplete"));
        }
        let now = self.pre.shared.options.clock.now();
        // The entry keeps the handler's headers only: the layer's default
        // `Cache-Control` is added on the way out, never stored.
        let entry = entry::new_entry(
            &parts,
            bytes.clone(),
            &pending.policy,
            &pending.selecting,
            now,
        );
        parts.headers.insert(ETAG, entry.etag.clone());
        headers::add_default_cache_control(&mut parts.headers, &self.pre.shared.cache_control);
        status.stored = pending
            .store(&self.pre.shared, &self.pre.backend, &entry)
            .await;
        pending.finish(Some(entry));
        let res = self.answer_bytes(parts, bytes, &mut status);
        (res, status)
    }

    /// A body of unknown length: it goes to the client as it arrives; a
    /// copy is stored once it ends, if it stayed within the limit.
    fn store_streaming(
        &self,
        mut parts: ResParts,
        body: ResBody,
        mut pending: Pending,
    ) -> Response<Body> {
        // A stream may last: requests waiting on this one go and run the
        // handler themselves rather than wait for its end.
        if let Some(leader) = pending.leader.take() {
            leader.publish(Outcome::Nothing);
        }
        let shared = Arc::clone(&self.pre.shared);
        let backend = Arc::clone(&self.pre.backend);
        let head = clone_head(&parts);
        headers::add_default_cache_control(&mut parts.headers, &self.pre.shared.cache_control);
        let teed = body::tee(body, self.store_limit(), move |kept| {
            let kept = match kept {
                Kept::Complete(bytes)
                    if !headers::declared_length_matches(&head.headers, bytes.len()) =>
                {
                    Kept::Dropped(PassReason::Error)
                }
                kept => kept,
            };
            let Kept::Complete(bytes) = kept else {
                if matches!(kept, Kept::Dropped(PassReason::TooLarge)) {
                    bump(&shared.stats.bypass_too_large);
                }
                pending.finish(None);
                return;
            };
            let entry = entry::new_entry(
                &head,
                bytes,
                &pending.policy,
                &pending.selecting,
                shared.options.clock.now(),
            );
            spawn(async move {
                if pending.store(&shared, &backend, &entry).await {
                    bump(&shared.stats.stores);
                }
                pending.finish(Some(entry));
            });
        });
        Response::from_parts(parts, teed)
    }

    /// Starts one background refresh of a stale entry, unless one runs
    /// already or the bound on refreshes is reached.
    fn spawn_refresh(&self, parts: &Parts, slot: Slot) {
        let Ok(permit) = Arc::clone(&self.pre.shared.refresh_slots).try_acquire_owned() else {
            return;
        };
        let Some(leader) = self
            .pre
            .shared
            .inflight
            .try_lead(&slot.flight_key(&parts.headers))
        else {
            return;
        };
        bump(&self.pre.shared.stats.revalidations);
        let mut flow = Flow {
            pre: Prelude {
                shared: Arc::clone(&self.pre.shared),
                backend: Arc::clone(&self.pre.backend),
                head: false,
                cond: Conditions::default(),
            },
            inner: self.inner.clone(),
            _request: PhantomData,
        };
        let request = clean_request::<ReqBody>(parts);
        spawn(async move {
            let _permit = permit;
            flow.refresh(request, slot, leader).await;
        });
    }

    /// A background refresh: a clean request (no conditionals, no
    /// `Range`), stored like a miss; a failure leaves the stale entry.
    async fn refresh(&mut self, request: Request<ReqBody>, slot: Slot, leader: Leader) {
        let selecting = request.headers().clone();
        let run = self
            .pre
            .shared
            .invalidations
            .begin(&*self.pre.backend, &slot.base);
        let pending = Pending {
            slot,
            policy: Policy::placeholder(),
            selecting,
            write: true,
            leader: Some(leader),
            lock: None,
            guard: request.extensions().get::<ShareGuard>().cloned(),
            run,
            began: self.pre.shared.options.clock.now(),
            lock_lost: AtomicBool::new(false),
        };
        match self.call(request).await {
            Ok(res) if !res.status().is_server_error() => {
                let (res, _) = self.store_response(res, pending, "stale").await;
                // Drive a streamed body to its end so that it is stored.
                let _ = http_body_util::BodyExt::collect(res.into_body()).await;
            }
            _ => {
                bump(&self.pre.shared.stats.handler_failures);
                pending.finish(None);
            }
        }
    }

    /// A complete response as the answer: ETag added when the handler gave
    /// none, 304 when the client's validators match.
    fn answer_bytes(
        &self,
        mut parts: ResParts,
        bytes: Bytes,
        status: &mut CacheStatus,
    ) -> Response<Body> {
        let etag = etag_for(parts.headers.get(ETAG), &bytes);
        parts.headers.insert(ETAG, etag.clone());
        if self
            .pre
            .cond
            .not_modified(parts.status, &etag, &parts.headers)
        {
            // RFC 9211 §2.3: the handler answered otherwise.
            status.fwd_status = Some(parts.status.as_u16());
            return response::not_modified(&parts.headers, Some(&etag), None);
        }
        response::from_parts(parts, bytes, self.pre.head)
    }

    /// The largest body the layer buffers to store: its own limit, within
    /// what the backend can hold (Memcached's item size) with room for the
    /// stored head.
    fn store_limit(&self) -> usize {
        let own = self.pre.shared.options.max_body_size;
        match self.pre.backend.max_value_size() {
            Some(max) => own.min(max.saturating_sub(STORED_HEAD_ROOM)),
            None => own,
        }
    }

    /// For HEAD, the same response without its body.
    fn bodiless_if_head(&self, res: Response<Body>) -> Response<Body> {
        if !self.pre.head {
            return res;
        }
        let (mut parts, body) = res.into_parts();
        // HEAD says what GET would send (RFC 9110 §9.3.2): the length when
        // it is known, nothing when it is not.
        // A 204 has no length (RFC 9110 §8.6).
        if let Some(len) = body::exact_len(&body).filter(|_| parts.status != StatusCode::NO_CONTENT)
        {
            parts
                .headers
                .entry(CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(len));
        }
        let empty = if parts.headers.contains_key(CONTENT_LENGTH) {
            Body::empty()
        } else {
            Body::new(body::UnknownLength)
        };
        Response::from_parts(parts, empty)
    }

    /// A response the layer lets through unstored, after it took the
    /// client's conditionals off the request: it answers them itself from
    /// the handler's own validators (RFC 9110 §13.2.1), else the response
    /// goes out whole.
    fn pass_through(
        &self,
        parts: ResParts,
        body: Body,
        status: &mut CacheStatus,
    ) -> Response<Body> {
        let validator = parts.headers.get(ETAG).cloned();
        if self
            .pre
            .cond
            .not_modified_by(parts.status, validator.as_ref(), &parts.headers)
        {
            // RFC 9211 §2.3: the handler answered otherwise.
            status.fwd_status = Some(parts.status.as_u16());
            return response::not_modified(&parts.headers, validator.as_ref(), None);
        }
        self.bodiless_if_head(Response::from_parts(parts, body))
    }

    fn learn_credentials(&self, parts: &ResParts) {
        if let Some(names) = parts.extensions.get::<CredentialNames>() {
            self.pre.shared.credentials.learn(names);
        }
    }
}

impl Prelude {
    /// The hot path, without an await: a fresh hit from a store that
    /// answers from process memory. `None` sends the request down the
    /// full path.
    fn fresh_hit_now(&self, parts: &Parts, key: &str) -> Option<(Response<Body>, CacheStatus)> {
        let record = store::entry_now(&self.shared, &self.backend, key, &parts.headers)?;
        let CacheRecord::Response(entry) = &*record else {
            return None;
        };
        let now = self.shared.options.clock.now();
        if decide::decide(entry, now) != Use::Fresh {
            return None;
        }
        let status = CacheStatus::hit(response::ttl_left(entry, now));
        Some((self.answer_entry(entry, now), status))
    }

    /// A stored entry as the answer: 304 when the client's validators
    /// match, else the full response (bodiless for HEAD).
    fn answer_entry(&self, entry: &CacheEntry, now: SystemTime) -> Response<Body> {
        if !self.cond.stored_not_modified(entry) {
            return response::from_entry(entry, now, self.head, &self.shared);
        }
        let mut res = response::not_modified_from_entry(entry, now);
        headers::add_default_cache_control(res.headers_mut(), &self.shared.cache_control);
        res
    }

    /// Writes `Cache-Status`, the counters and the span field from one
    /// status value.
    fn record(
        &self,
        mut res: Response<Body>,
        status: CacheStatus,
        tagless: bool,
    ) -> Response<Body> {
        if self.shared.options.private {
            // `private` routes say so whatever the handler's own
            // `Cache-Control` says: only the client may keep them.
            headers::keep_private(res.headers_mut(), &self.shared.private_cache_control);
        }
        self.shared.stats.record(&status, res.status());
        let member = status.header_value();
        let span = tracing::Span::current();
        if !span.is_disabled() {
            if let Ok(text) = member.to_str() {
                let decision = text.split_once("; ").map_or(text, |(_, d)| d);
                span.record("decision", decision);
            }
        }
        response::set_status(&mut res, member);
        // Tags are for this cache only: a handler's, and an entry's stamp.
        if !tagless {
            let headers = res.headers_mut();
            headers.remove(&self.shared.options.tag_header);
            headers.remove(super::tags::STORED_TAGS);
        }
        res
    }
}

/// A stored entry that may still be of use on the forward path.
#[derive(Default)]
struct Stale {
    entry: Option<CacheEntry>,
    /// Revalidate it with a conditional request.
    conditional: bool,
    /// Serve it if the handler fails (stale-if-error).
    if_error: bool,
    /// Serve it if the handler reports the origin unreachable.
    if_unreachable: bool,
}

impl Stale {
    fn new(entry: CacheEntry, conditional: bool, if_error: bool, if_unreachable: bool) -> Self {
        Self {
            entry: (conditional || if_error || if_unreachable).then_some(entry),
            conditional,
            if_error,
            if_unreachable,
        }
    }

    /// The entry being revalidated with a conditional request.
    fn revalidating(&self) -> Option<&CacheEntry> {
        self.entry.as_ref().filter(|_| self.conditional)
    }

    fn into_revalidating(self) -> Option<CacheEntry> {
        self.entry.filter(|_| self.conditional)
    }

    /// The entry to serve when the handler failed (`unreachable`: with a
    /// response marked [`UpstreamUnreachable`]), and why it may be.
    fn into_if_error(self, unreachable: bool) -> Option<(CacheEntry, &'static str)> {
        let entry = self.entry?;
        if self.if_error {
            return Some((entry, "stale-if-error"));
        }
        (unreachable && self.if_unreachable).then_some((entry, "upstream-unreachable"))
    }
}

impl Pending {
    /// Writes `entry` where it belongs, unless writing is off. Returns
    /// whether it was stored.
    async fn store(
        &self,
        shared: &Arc<Shared>,
        backend: &Arc<dyn Backend>,
        entry: &CacheEntry,
    ) -> bool {
        if !self.write || self.outdated() {
            return false;
        }
        if let Some(held) = &self.lock {
            if !held.is_held().await {
                // Deleted by an invalidation elsewhere (or expired): what
                // was computed under it is neither stored nor shared.
                self.lock_lost.store(true, Ordering::Release);
                return false;
            }
        }
        // Checked again after the await: an invalidation may have landed
        // while the lock was read.
        !self.outdated()
            && store::write(
                shared,
                backend,
                &self.slot,
                entry,
                &self.selecting,
                self.began,
            )
            .await
    }

    /// Whether an unsafe request invalidated entries since the handler was
    /// called.
    fn outdated(&self) -> bool {
        self.run.outdated() || self.lock_lost.load(Ordering::Acquire)
    }

    /// Hands the outcome to coalesced waiters and releases the
    /// cross-instance lock, off the response path.
    fn finish(self, entry: Option<CacheEntry>) {
        let outcome = entry.map_or(Outcome::Nothing, |e| Outcome::Made(Arc::new(e)));
        self.finish_with(outcome);
    }

    /// [`finish`](Self::finish) with any outcome.
    fn finish_with(self, outcome: Outcome) {
        if let Some(leader) = &self.leader {
            // Requests that came after an invalidation run the handler
            // themselves.
            let outcome = if self.outdated() {
                Outcome::Nothing
            } else {
                outcome
            };
            leader.publish(outcome);
        }
        if let Some(held) = self.lock {
            spawn(held.release());
        }
    }
}

impl Policy {
    /// Replaced by the admission before anything is stored.
    fn placeholder() -> Self {
        Self {
            fresh_for: std::time::Duration::ZERO,
            stale_while_revalidate: std::time::Duration::ZERO,
            stale_if_error: std::time::Duration::ZERO,
            initial_age: std::time::Duration::ZERO,
        }
    }
}

fn collapsed_status(
    entry: &CacheEntry,
    now: SystemTime,
    fwd: &'static str,
    stale_on_error: bool,
) -> CacheStatus {
    let status = CacheStatus {
        collapsed: true,
        ..CacheStatus::forward(fwd)
    };
    if stale_on_error {
        CacheStatus {
            ttl: Some(response::ttl_left(entry, now)),
            ..status.with_detail("stale-if-error")
        }
    } else {
        status
    }
}

fn pass_detail(reason: PassReason) -> &'static str {
    match reason {
        PassReason::TooLarge => "too-large",
        PassReason::Trailers => "trailers",
        PassReason::Error => "body-error",
    }
}

/// A clean GET for a background refresh: the client's headers without
/// conditionals or `Range`, no body, the client's extensions.
fn clean_request<ReqBody: Default>(parts: &Parts) -> Request<ReqBody> {
    let mut req = Request::new(ReqBody::default());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    headers::strip_conditionals(req.headers_mut());
    *req.extensions_mut() = parts.extensions.clone();
    req
}

fn clone_head(parts: &ResParts) -> ResParts {
    let mut head = Response::new(()).into_parts().0;
    head.status = parts.status;
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

/// 504 for `only-if-cached` when the store cannot answer. Nothing was
/// forwarded, so `Cache-Status` has no `fwd` (RFC 9211 §2.2).
fn only_if_cached_miss() -> (Response<Body>, CacheStatus) {
    (
        gateway_timeout(),
        CacheStatus::default().with_detail("only-if-cached"),
    )
}

/// A `502` with a short plain-text reason.
fn bad_gateway(reason: &'static str) -> Response<Body> {
    let mut res = Response::new(Body::from(format!("bad gateway: {reason}\n")));
    *res.status_mut() = StatusCode::BAD_GATEWAY;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn gateway_timeout() -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    res
}

/// Spawns on the current runtime; outside one (a body dropped after its
/// runtime ended) the work is skipped.
fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(task);
    }
}
