//! The request flow of the cache layer (SPEC S1.3, S1.9, S1.10).
//!
//! ```text
//! request ─┬─ not GET/HEAD ──────────────► handler (unsafe + 2xx/3xx: delete entry) ─► bypass
//!          ├─ no_store route ────────────► handler, Cache-Control: no-store ─────────► bypass
//!          ├─ Authorization, not public ─► handler, ETag/304, nothing stored ────────► bypass
//!          └─ lookup key ─┬─ fresh ───────────── If-None-Match? 304 : 200 from store ─► hit
//!                         ├─ stale, in SWR window ─ serve stale, one background refresh ► hit
//!                         └─ miss / too stale ─ coalesce ─┬─ waiter: leader's response ► collapsed
//!                                                         └─ leader: handler ─┬─ 5xx/error in SIE window ─► stale entry
//!                                                                             └─ store if cacheable, ETag, 304? ► miss
//! ```

use std::{sync::Arc, time::SystemTime};

use axum::body::Body;
use axum_cachex_core::{Backend, BackendError, CacheEntry, EntrySet};
use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response,
    header::{AUTHORIZATION, CACHE_CONTROL, ETAG, SET_COOKIE, VARY},
    request::Parts,
};
use http_body::Body as HttpBody;
use tower_service::Service;

use super::{
    body::{Collected, PassReason, collect_limited},
    coalesce::{self, Flight, Leader},
    conditional::Conditions,
    directives::handler_forbids_storing,
    etag::weak_etag,
    extract::CacheHandle,
    layer::{Shared, key_for_parts},
    lock::{self, LockOutcome},
    response,
    stats::bump,
    status::CacheStatus,
    vary,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) async fn serve<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<ReqBody>,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let backend = shared.backend.resolve();
    if shared.route.get().is_none() {
        if let Some(matched) = parts.extensions.get::<axum::extract::MatchedPath>() {
            let _ = shared.route.set(matched.as_str().to_owned());
        }
    }

    if parts.method != Method::GET && parts.method != Method::HEAD {
        return pass_unsafe(&shared, inner, backend, parts, body).await;
    }
    if shared.no_store {
        bump(&shared.stats.bypass_no_store);
        insert_handle(&shared, &backend, &mut parts);
        let mut res = map_body(call(&mut inner, Request::from_parts(parts, body)).await?);
        res.headers_mut()
            .insert(CACHE_CONTROL, shared.cache_control.clone());
        response::set_status(&mut res, CacheStatus::bypass("no-store"));
        return Ok(res);
    }
    let head = parts.method == Method::HEAD;
    let cond = Conditions::from_request(&parts.headers);
    if parts.headers.contains_key(AUTHORIZATION) && !shared.shares_authorized {
        // RFC 9111 §3.5: a shared cache must not reuse a response to an
        // authenticated request unless the response says it may.
        bump(&shared.stats.bypass_authorization);
        insert_handle(&shared, &backend, &mut parts);
        let res = call(&mut inner, Request::from_parts(parts, body)).await?;
        let answer = finish(&shared, res, &cond, head, None).await;
        return Ok(answer.into_response(CacheStatus::bypass("authorization")));
    }
    if !shared.stores() {
        // no_cache, or no ttl: the handler runs every time; ETag and 304.
        bump(&shared.stats.misses);
        insert_handle(&shared, &backend, &mut parts);
        let res = call(&mut inner, Request::from_parts(parts, body)).await?;
        let answer = finish(&shared, res, &cond, head, None).await;
        let status = if shared.no_cache {
            CacheStatus::forward("miss").with_detail("no-cache")
        } else {
            CacheStatus::forward("miss")
        };
        return Ok(answer.into_response(status));
    }

    let key = key_for_parts(shared.key_builder.as_ref(), &mut parts);
    let lookup = lookup(&shared, &backend, &key).await;
    let now = shared.clock.now();
    let backend_up = !matches!(lookup, Lookup::Failed);
    let mut previous = match lookup {
        Lookup::Found(set) => Some(set),
        Lookup::Missing | Lookup::Failed => None,
    };
    let selected = previous
        .as_ref()
        .and_then(|set| vary::select_index(set, &parts.headers));
    let fwd = if selected.is_some() { "stale" } else { "miss" };
    let mut stale = None;
    if let (Some(set), Some(index)) = (previous.as_mut(), selected) {
        let entry = &set.variants[index];
        let age = entry.age(now);
        if age < entry.fresh_for {
            bump(&shared.stats.hits);
            // The hot path: the set is not needed any more, so the entry is
            // moved out rather than cloned.
            let entry = set.variants.swap_remove(index);
            let status = CacheStatus::hit(response::ttl_left(&entry, now));
            return Ok(answer_from_entry(&shared, entry, &cond, head, now, status));
        }
        if age < entry.fresh_for + entry.stale_while_revalidate {
            bump(&shared.stats.hits);
            bump(&shared.stats.stale_served);
            let entry = entry.clone();
            let request = clone_request::<ReqBody>(&parts);
            spawn_refresh(&shared, &backend, inner, key, previous, request);
            let status = CacheStatus {
                detail: Some("stale-while-revalidate"),
                ..CacheStatus::hit(response::ttl_left(&entry, now))
            };
            return Ok(answer_from_entry(&shared, entry, &cond, head, now, status));
        }
        if age < entry.fresh_for + entry.stale_if_error {
            stale = Some(entry.clone());
        }
    }
    bump(&shared.stats.misses);

    // HEAD neither leads nor waits: its handler run produces no body to
    // share, and the GET requests must not wait on it.
    let leader = if shared.coalesce && !head {
        let flight_key = vary::flight_key(&key, previous.as_ref(), &parts.headers);
        match shared.inflight.join(&flight_key) {
            Flight::Leader(leader) => Some(leader),
            Flight::Waiter(slot) => {
                bump(&shared.stats.coalesced_waits);
                match coalesce::wait(slot, shared.coalesce_timeout).await {
                    // A leader with other `Vary` values produced another
                    // variant: not ours to serve.
                    Some(Some(entry)) if vary::selects(&entry, &parts.headers) => {
                        let now = shared.clock.now();
                        let status = CacheStatus {
                            collapsed: true,
                            ..CacheStatus::forward(fwd)
                        };
                        let entry = (*entry).clone();
                        return Ok(answer_from_entry(&shared, entry, &cond, head, now, status));
                    }
                    // Not shareable, the leader went away, or it took too
                    // long: run the handler ourselves.
                    _ => None,
                }
            }
        }
    } else {
        None
    };

    let request_headers = parts.headers.clone();
    let mut held_lock = None;
    if let (Some(lock_ttl), Some(leader), true) = (shared.lock_ttl, &leader, backend_up) {
        match lock::acquire(&shared, &backend, &key, &request_headers, lock_ttl).await {
            LockOutcome::Held(held) => held_lock = Some(held),
            LockOutcome::Computed(entry) => {
                let entry = *entry;
                // Another instance computed it: serve and share that.
                leader.publish(Some(Arc::new(entry.clone())));
                let now = shared.clock.now();
                let status = CacheStatus {
                    collapsed: true,
                    ..CacheStatus::forward(fwd)
                };
                return Ok(answer_from_entry(&shared, entry, &cond, head, now, status));
            }
            LockOutcome::Proceed => {}
        }
    }
    insert_handle(&shared, &backend, &mut parts);
    let result = call(&mut inner, Request::from_parts(parts, body)).await;
    // Released after the store (or on the early returns below), off the
    // response path.
    let release = |held: Option<lock::HeldLock>| {
        if let Some(held) = held {
            let shared = Arc::clone(&shared);
            let backend = Arc::clone(&backend);
            tokio::spawn(async move { lock::release(&shared, &backend, held).await });
        }
    };
    let res = match result {
        Ok(res) if !res.status().is_server_error() => res,
        Ok(res) => match stale {
            Some(entry) => {
                release(held_lock);
                let code = res.status().as_u16();
                return Ok(serve_stale_on_error(
                    &shared,
                    entry,
                    &cond,
                    head,
                    Some(code),
                ));
            }
            None => res,
        },
        Err(e) => {
            release(held_lock);
            return match stale {
                Some(entry) => Ok(serve_stale_on_error(&shared, entry, &cond, head, None)),
                None => Err(e),
            };
        }
    };
    let store = StoreTo {
        backend: &*backend,
        key: &key,
        previous: previous.as_ref(),
        request_headers: &request_headers,
        write: backend_up && !head,
    };
    let answer = finish(&shared, res, &cond, head, Some(store)).await;
    release(held_lock);
    if let Some(leader) = &leader {
        leader.publish(answer.shareable.clone());
    }
    drop(leader);
    let status = CacheStatus {
        stored: answer.stored,
        ..CacheStatus::forward(fwd)
    };
    Ok(answer.into_response(status))
}

/// Where and how `finish` stores a response.
struct StoreTo<'a> {
    backend: &'a dyn Backend,
    key: &'a str,
    /// The variants already stored under the key, merged with the new one.
    previous: Option<&'a EntrySet>,
    /// The request's headers, for the `Vary` selecting key.
    request_headers: &'a HeaderMap,
    /// False when the backend just failed: build the entry for waiters but
    /// do not wait on a dead backend again.
    write: bool,
}

/// Non-GET/HEAD requests go straight to the handler. A successful unsafe
/// request invalidates the stored GET response of its URI (RFC 9111 §4.4).
async fn pass_unsafe<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    mut inner: S,
    backend: Arc<dyn Backend>,
    mut parts: Parts,
    body: ReqBody,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    bump(&shared.stats.bypass_method);
    let key = (!parts.method.is_safe() && shared.stores())
        .then(|| key_for_parts(shared.key_builder.as_ref(), &mut parts));
    insert_handle(shared, &backend, &mut parts);
    let res = call(&mut inner, Request::from_parts(parts, body)).await?;
    if let Some(key) = key {
        if res.status().is_success() || res.status().is_redirection() {
            let _ = with_timeout(shared, &*backend, "delete", backend.delete(&key)).await;
        }
    }
    let mut res = map_body(res);
    response::set_status(&mut res, CacheStatus::bypass("method"));
    Ok(res)
}

enum Lookup {
    Found(EntrySet),
    Missing,
    /// The backend failed or timed out: serve uncached and skip the store.
    Failed,
}

async fn lookup(shared: &Shared, backend: &Arc<dyn Backend>, key: &str) -> Lookup {
    let found = match backend.get_now(key) {
        // In-process stores answer at once: no boxed future, no timer.
        Some(Ok(found)) => Some(found),
        Some(Err(error)) => {
            bump(&shared.stats.backend_errors);
            shared.failures.record(backend.name(), "get", &error);
            None
        }
        None => with_timeout(shared, &**backend, "get", backend.get(key)).await,
    };
    let Some(bytes) = found else {
        return Lookup::Failed;
    };
    let Some(bytes) = bytes else {
        return Lookup::Missing;
    };
    match EntrySet::decode(bytes) {
        Ok(set) => Lookup::Found(set),
        Err(error) => {
            // Corrupt, or written by another version: a miss, and the entry
            // goes so the next store replaces it.
            bump(&shared.stats.decode_failures);
            tracing::warn!(%error, "undecodable cache entry deleted");
            let _ = with_timeout(shared, &**backend, "delete", backend.delete(key)).await;
            Lookup::Missing
        }
    }
}

/// Runs a backend call under the layer's timeout; failures are counted,
/// logged (rate-limited) and turned into `None` — fail open.
async fn with_timeout<T>(
    shared: &Shared,
    backend: &dyn Backend,
    operation: &'static str,
    call: impl Future<Output = Result<T, BackendError>>,
) -> Option<T> {
    let error = match tokio::time::timeout(shared.backend_timeout, call).await {
        Ok(Ok(value)) => return Some(value),
        Ok(Err(error)) => {
            if matches!(error, BackendError::Timeout { .. }) {
                bump(&shared.stats.backend_timeouts);
            } else {
                bump(&shared.stats.backend_errors);
            }
            error
        }
        Err(_) => {
            bump(&shared.stats.backend_timeouts);
            BackendError::Timeout {
                backend: backend.name(),
                timeout: shared.backend_timeout,
            }
        }
    };
    shared.failures.record(backend.name(), operation, &error);
    None
}

/// A handler response after the layer looked at it.
struct Answer {
    response: Response<Body>,
    stored: bool,
    /// The entry to hand coalesced waiters, when the response is shareable.
    shareable: Option<Arc<CacheEntry>>,
    /// Why it was not stored, for `Cache-Status`.
    detail: Option<&'static str>,
}

impl Answer {
    fn into_response(mut self, mut status: CacheStatus) -> Response<Body> {
        if status.detail.is_none() {
            status.detail = self.detail;
        }
        response::set_status(&mut self.response, status);
        self.response
    }
}

/// Decides what to do with the handler's response: pass it through when
/// it must not be cached, otherwise buffer it, add `ETag` and
/// `Cache-Control`, store it (when `store_to` is given) and answer 304 when
/// `If-None-Match` matches.
async fn finish<ResBody>(
    shared: &Shared,
    res: Response<ResBody>,
    cond: &Conditions,
    head: bool,
    store_to: Option<StoreTo<'_>>,
) -> Answer
where
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let (mut parts, body) = res.into_parts();
    let unstorable = if !shared.cacheable_statuses.contains(&parts.status) {
        Some("status")
    } else if parts.headers.contains_key(SET_COOKIE) {
        Some("set-cookie")
    } else if let Some(reason) = handler_forbids_storing(&parts.headers) {
        Some(reason)
    } else if parts
        .headers
        .get_all(VARY)
        .iter()
        .any(|v| v.as_bytes().contains(&b'*'))
    {
        Some("vary-star")
    } else {
        None
    };
    if let Some(detail) = unstorable {
        // The handler decided: its response goes out as it made it.
        bump(&shared.stats.not_storable);
        return Answer {
            response: Response::from_parts(parts, Body::new(body)),
            stored: false,
            shareable: None,
            detail: Some(detail),
        };
    }
    parts
        .headers
        .insert(CACHE_CONTROL, shared.cache_control.clone());
    if head {
        // A HEAD response has no body to hash or store.
        return Answer {
            response: Response::from_parts(parts, Body::new(body)),
            stored: false,
            shareable: None,
            detail: None,
        };
    }
    let bytes = match collect_limited(body, shared.max_body_size).await {
        Collected::Complete(bytes) => bytes,
        Collected::PassThrough(body, reason) => {
            let detail = match reason {
                PassReason::TooLarge => {
                    bump(&shared.stats.bypass_too_large);
                    "too-large"
                }
                PassReason::Trailers => "trailers",
                PassReason::Error => "body-error",
            };
            return Answer {
                response: Response::from_parts(parts, body),
                stored: false,
                shareable: None,
                detail: Some(detail),
            };
        }
    };
    // Keep a valid ETag the handler chose; otherwise derive a weak one.
    let etag = match parts.headers.get(ETAG) {
        Some(tag) if is_entity_tag(tag) => tag.clone(),
        _ => weak_etag(&bytes),
    };
    parts.headers.insert(ETAG, etag.clone());

    let mut stored = false;
    let mut shareable = None;
    if let (Some(ttl), Some(to)) = (shared.ttl, store_to) {
        let now = whole_millis(shared.clock.now());
        let vary_names = vary::vary_names(&parts.headers);
        let entry = CacheEntry {
            status: parts.status,
            headers: response::storable_headers(&parts.headers),
            body: bytes.clone(),
            etag: etag.clone(),
            // Whole milliseconds, as the entry format keeps them, so that
            // `Age` and `ttl` read the same before and after a round trip.
            stored_at: now,
            fresh_for: ttl,
            stale_while_revalidate: shared.stale_while_revalidate,
            stale_if_error: shared.stale_if_error,
            vary_key: vary::vary_key(&vary_names, to.request_headers),
        };
        if to.write {
            let set = vary::merge(to.previous, entry.clone(), now);
            let ttl = Some(set.storage_ttl(now));
            let encoded = set.encode();
            let backend = to.backend;
            let write = backend.set(to.key, encoded, ttl);
            if with_timeout(shared, backend, "set", write).await.is_some() {
                bump(&shared.stats.stores);
                stored = true;
            }
        }
        shareable = Some(Arc::new(entry));
    }
    let response = if cond.not_modified(&etag, &parts.headers) {
        bump(&shared.stats.not_modified);
        response::not_modified(
            &parts.headers,
            &etag,
            &shared.cache_control,
            None,
            CacheStatus::default(),
        )
    } else {
        response::from_parts(parts, bytes, head)
    };
    Answer {
        response,
        stored,
        shareable,
        detail: None,
    }
}

fn whole_millis(t: SystemTime) -> SystemTime {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(since.as_millis() as u64)
}

fn is_entity_tag(tag: &HeaderValue) -> bool {
    let b = tag.as_bytes();
    let b = b.strip_prefix(b"W/").unwrap_or(b);
    b.len() >= 2 && b[0] == b'"' && b[b.len() - 1] == b'"' && !b[1..b.len() - 1].contains(&b'"')
}

/// 200 or 304 from a stored entry.
fn answer_from_entry(
    shared: &Shared,
    entry: CacheEntry,
    cond: &Conditions,
    head: bool,
    now: SystemTime,
    status: CacheStatus,
) -> Response<Body> {
    if cond.not_modified(&entry.etag, &entry.headers) {
        bump(&shared.stats.not_modified);
        return response::not_modified_from_entry(&entry, now, &shared.cache_control, status);
    }
    response::from_entry(entry, now, &shared.cache_control, head, status)
}

fn serve_stale_on_error(
    shared: &Shared,
    entry: CacheEntry,
    cond: &Conditions,
    head: bool,
    fwd_status: Option<u16>,
) -> Response<Body> {
    bump(&shared.stats.handler_failures);
    bump(&shared.stats.stale_if_error_served);
    let now = shared.clock.now();
    let status = CacheStatus {
        fwd_status,
        ttl: Some(response::ttl_left(&entry, now)),
        ..CacheStatus::forward("stale").with_detail("stale-if-error")
    };
    answer_from_entry(shared, entry, cond, head, now, status)
}

/// A copy of the request head with an empty body, for a background refresh
/// that must not hold on to the client's connection.
fn clone_request<ReqBody: Default>(parts: &Parts) -> Request<ReqBody> {
    let mut req = Request::new(ReqBody::default());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = parts.extensions.clone();
    req
}

/// Starts one background refresh of `key`, unless one is already running
/// for it or the bound on refreshes in flight is reached.
fn spawn_refresh<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    backend: &Arc<dyn Backend>,
    inner: S,
    key: String,
    previous: Option<EntrySet>,
    request: Request<ReqBody>,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let Ok(permit) = Arc::clone(&shared.refresh_slots).try_acquire_owned() else {
        return;
    };
    let flight_key = vary::flight_key(&key, previous.as_ref(), request.headers());
    let Some(leader) = shared.inflight.try_lead(&flight_key) else {
        return;
    };
    bump(&shared.stats.revalidations);
    let shared = Arc::clone(shared);
    let backend = Arc::clone(backend);
    tokio::spawn(async move {
        let _permit = permit;
        refresh(shared, backend, inner, key, previous, request, leader).await;
    });
}

async fn refresh<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    backend: Arc<dyn Backend>,
    mut inner: S,
    key: String,
    mut previous: Option<EntrySet>,
    mut request: Request<ReqBody>,
    leader: Leader,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let request_headers = request.headers().clone();
    // The stale read that scheduled this refresh may predate a refresh
    // that finished since: look again, so one stale window costs one
    // handler run, not one per request that raced the store.
    match lookup(&shared, &backend, &key).await {
        Lookup::Found(set) => {
            let now = shared.clock.now();
            let refreshed = vary::select_index(&set, &request_headers)
                .is_some_and(|i| set.variants[i].is_fresh(now));
            if refreshed {
                return;
            }
            previous = Some(set);
        }
        Lookup::Missing => previous = None,
        Lookup::Failed => {}
    }
    request
        .extensions_mut()
        .insert(CacheHandle::new(&shared, &backend));
    let res = match call(&mut inner, request).await {
        Ok(res) if !res.status().is_server_error() => res,
        // A failed refresh leaves the stale entry in place.
        _ => {
            bump(&shared.stats.handler_failures);
            return;
        }
    };
    let store = StoreTo {
        backend: &*backend,
        key: &key,
        previous: previous.as_ref(),
        request_headers: &request_headers,
        write: true,
    };
    let answer = finish(&shared, res, &Conditions::default(), false, Some(store)).await;
    leader.publish(answer.shareable);
}

async fn call<S, ReqBody, ResBody>(
    inner: &mut S,
    req: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(req).await
}

fn map_body<ResBody>(res: Response<ResBody>) -> Response<Body>
where
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    res.map(Body::new)
}

fn insert_handle(shared: &Arc<Shared>, backend: &Arc<dyn Backend>, parts: &mut Parts) {
    parts.extensions.insert(CacheHandle::new(shared, backend));
}
