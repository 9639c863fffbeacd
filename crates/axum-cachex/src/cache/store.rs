//! Reading and writing stored responses: one record per key, one key per
//! `Vary` variant.
//!
//! A response without `Vary` is stored under its key. A response with
//! `Vary` is stored under a variant key of its own, and its base key holds
//! a [`VariantIndex`]: the names of the selecting headers and a random
//! epoch that is part of every variant key. So:
//!
//! - a miss encodes and writes one response, whatever the number of
//!   variants (a client cycling header values cannot make each miss
//!   rewrite all of them);
//! - concurrent stores of different variants write different keys and
//!   cannot lose each other;
//! - deleting the base key (invalidation) makes every variant unreachable:
//!   a new index gets a new epoch, hence new variant keys.
//!
//! Every backend call runs under the layer's timeout and fails open.

use std::{sync::Arc, time::Duration};

use axum_cachex_core::{
    Backend, BackendError, CacheEntry, CacheKey, CacheRecord, MAX_VARY_NAMES, VariantIndex,
};
use bytes::Bytes;
use http::HeaderMap;
use xxhash_rust::xxh3::xxh3_128;

use super::{decide, response, shared::Shared, stats::bump, tags, vary};

/// How long past its stale windows an entry with a validator from the
/// handler is kept: while it is kept, a stale entry is revalidated with a
/// conditional request instead of being fetched whole.
const REVALIDATION_GRACE: Duration = Duration::from_secs(3600);

/// The smallest lifetime of a variant index: it is tiny, and outliving
/// its variants only costs a `vary-miss`.
const MIN_INDEX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Where a request's response lives (or would live).
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// The base key.
    pub(crate) base: String,
    /// The variant index under the base key, when there is one.
    pub(crate) index: Option<VariantIndex>,
}

impl Slot {
    /// The key requests with these headers coalesce on: their variant's
    /// key when the selecting headers are known, else the base key.
    pub(crate) fn flight_key(&self, request_headers: &HeaderMap) -> String {
        match &self.index {
            Some(index) => variant_key(&self.base, index, request_headers).0,
            None => self.base.clone(),
        }
    }
}

/// What a lookup found.
#[allow(
    clippy::large_enum_variant,
    reason = "a hit is the hot path: boxing the entry would cost an allocation per hit"
)]
pub(crate) enum Found {
    /// A stored response for this request (checked, see
    /// [`response::sanitize`]).
    Entry(CacheEntry),
    /// Nothing for this request. `vary_miss` when other variants exist.
    Missing { vary_miss: bool },
    /// The backend failed or timed out: serve uncached, skip the store.
    Failed,
}

/// Looks up the response stored for a request with `request_headers`.
pub(crate) async fn lookup(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    base: &str,
    request_headers: &HeaderMap,
) -> (Found, Slot) {
    let (step, index) = base_step(read(shared, backend, base).await, base, request_headers);
    let found = match step {
        Step::Done(found) => found,
        Step::Variant { key, selecting } => {
            variant_step(read(shared, backend, &key).await, &selecting)
        }
    };
    let slot = Slot {
        base: base.to_owned(),
        index,
    };
    let mut found = checked(shared, found, base, request_headers);
    if let Found::Entry(entry) = &found {
        if let Some(stamp) = entry.headers.get(tags::STORED_TAGS) {
            if !tags::still_current(shared, backend, stamp).await {
                found = Found::Missing { vary_miss: false };
            }
        }
    }
    (found, slot)
}

/// The fresh-hit candidate of a request, without awaiting: the entry the
/// store keeps decoded in process memory (see
/// [`Backend::get_record_now`]), shared, not copied. `None` sends the
/// request down the full [`lookup`]: when the store cannot answer so, when
/// nothing is stored, and when the entry needs more than a read (headers
/// to drop, a `Vary` mismatch, tags the store cannot check at once).
pub(crate) fn entry_now(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    base: &str,
    request_headers: &HeaderMap,
) -> Option<Arc<CacheRecord>> {
    let mut record = backend.get_record_now(base)?.ok()??;
    let selecting = match &*record {
        CacheRecord::Response(_) => Bytes::new(),
        CacheRecord::Variants(index) => {
            let (key, selecting) = variant_key(base, index, request_headers);
            record = backend.get_record_now(&key)?.ok()??;
            selecting
        }
    };
    let CacheRecord::Response(entry) = &*record else {
        return None;
    };
    let usable = entry.vary_key == selecting
        && response::is_clean(entry, shared.credentials.credential_header_test())
        && vary::selects(entry, request_headers);
    if !usable {
        return None;
    }
    if let Some(stamp) = entry.headers.get(tags::STORED_TAGS) {
        if !tags::still_current_now(backend, stamp)? {
            return None;
        }
    }
    Some(record)
}

/// What the record under the base key says.
#[allow(
    clippy::large_enum_variant,
    reason = "moved once per lookup; boxing would cost an allocation per hit"
)]
enum Step {
    Done(Found),
    /// Read this variant key next.
    Variant {
        key: String,
        selecting: Bytes,
    },
}

/// What the record under `base` says, and the variant index it holds.
fn base_step(
    record: Result<Option<CacheRecord>, ()>,
    base: &str,
    request_headers: &HeaderMap,
) -> (Step, Option<VariantIndex>) {
    let step = match record {
        Err(()) => Step::Done(Found::Failed),
        Ok(None) => Step::Done(Found::Missing { vary_miss: false }),
        // A plain record must be a response without `Vary` selection.
        Ok(Some(CacheRecord::Response(entry))) if entry.vary_key.is_empty() => {
            Step::Done(Found::Entry(entry))
        }
        Ok(Some(CacheRecord::Response(_))) => Step::Done(Found::Missing { vary_miss: false }),
        Ok(Some(CacheRecord::Variants(index))) => {
            let (key, selecting) = variant_key(base, &index, request_headers);
            return (Step::Variant { key, selecting }, Some(index));
        }
    };
    (step, None)
}

fn variant_step(record: Result<Option<CacheRecord>, ()>, selecting: &Bytes) -> Found {
    match record {
        Err(()) => Found::Failed,
        Ok(Some(CacheRecord::Response(entry))) if entry.vary_key == *selecting => {
            Found::Entry(entry)
        }
        Ok(_) => Found::Missing { vary_miss: true },
    }
}

/// The found entry after the checks every read gets (see
/// [`response::sanitize`]).
fn checked(shared: &Shared, mut found: Found, base: &str, request_headers: &HeaderMap) -> Found {
    if let Found::Entry(entry) = &mut found {
        let usable = response::sanitize(entry, shared.credentials.credential_header_test())
            && vary::selects(entry, request_headers);
        if !usable {
            tracing::warn!(key = base, "stored entry refused on read");
            found = Found::Missing { vary_miss: false };
        }
    }
    found
}

/// Reads and decodes one record. `Err` when the backend failed; an
/// undecodable record is deleted and reads as absent.
async fn read(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    key: &str,
) -> Result<Option<CacheRecord>, ()> {
    let found = match backend.get_now(key) {
        // In-process stores answer at once: no boxed future, no timer.
        Some(Ok(found)) => Some(found),
        Some(Err(error)) => {
            bump(&shared.stats.backend_errors);
            shared.failures.record(backend.name(), "get", &error);
            None
        }
        // Boxed: a network round trip costs far more than the allocation,
        // and in-process hits keep a small future.
        None => Box::pin(with_timeout(shared, &**backend, "get", backend.get(key))).await,
    };
    let Some(bytes) = found.ok_or(())? else {
        return Ok(None);
    };
    match CacheRecord::decode(bytes) {
        Ok(record) => Ok(Some(record)),
        Err(error) => {
            // Corrupt, planted, or written by another version: a miss, and
            // the record goes so the next store replaces it.
            bump(&shared.stats.decode_failures);
            tracing::warn!(%error, "undecodable cache entry deleted");
            let _ = with_timeout(shared, &**backend, "delete", backend.delete(key)).await;
            Ok(None)
        }
    }
}

/// The key of the variant selected by `request_headers`, and its selecting
/// value.
fn variant_key(base: &str, index: &VariantIndex, request_headers: &HeaderMap) -> (String, Bytes) {
    let selecting = vary::vary_key(&index.names, request_headers);
    let mut input = Vec::with_capacity(8 + selecting.len());
    input.extend_from_slice(&index.epoch.to_be_bytes());
    input.extend_from_slice(&selecting);
    let hash = format!("{:032x}", xxh3_128(&input));
    (CacheKey::variant_key(base, &hash), selecting)
}

/// Writes `entry` for the request it was made for. Returns whether it was
/// stored.
pub(crate) async fn write(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    slot: &Slot,
    entry: &CacheEntry,
    request_headers: &HeaderMap,
    began: std::time::SystemTime,
) -> bool {
    let now = shared.options.clock.now();
    let mut ttl = entry.storage_ttl_left(now);
    if decide::has_validator(&entry.headers) {
        ttl = ttl.saturating_add(REVALIDATION_GRACE);
    }
    // Kept as long as it may stand in for an unreachable origin.
    if let Some(window) = shared.options.stale_if_unreachable {
        let fresh_left = entry.fresh_for.saturating_sub(entry.age(now));
        ttl = ttl.max(fresh_left.saturating_add(window));
    }
    if ttl.is_zero() {
        return false;
    }
    let Some(entry) = tags::stamped(shared, backend, entry, began).await else {
        return false;
    };
    let names = vary::vary_names(&entry.headers);
    if !entry.is_encodable() || names.len() > MAX_VARY_NAMES {
        // Stored, it would come back different (truncated) or never be
        // selected: not stored.
        return false;
    }
    let record = CacheRecord::Response(entry.into_owned()).encode();
    if names.is_empty() {
        let call = backend.set(&slot.base, record, Some(ttl));
        return with_timeout(shared, &**backend, "set", call)
            .await
            .is_some();
    }
    let index_ttl = ttl.max(MIN_INDEX_TTL);
    let Some(index) = index_for(shared, backend, slot, names, index_ttl).await else {
        return false;
    };
    let (key, _) = variant_key(&slot.base, &index, request_headers);
    let call = backend.set(&key, record, Some(ttl));
    with_timeout(shared, &**backend, "set", call)
        .await
        .is_some()
}

/// The index to store a variant under: the known one when its names
/// match, else a new or updated one. A new index is created with `add`, so
/// that of two instances storing the first variants of a key at once, both
/// end up under the same epoch.
async fn index_for(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    slot: &Slot,
    names: Vec<String>,
    ttl: Duration,
) -> Option<VariantIndex> {
    match &slot.index {
        Some(index) if index.names == names => return Some(index.clone()),
        Some(index) => {
            let index = VariantIndex {
                names,
                epoch: index.epoch,
            };
            return put_index(shared, backend, &slot.base, &index, ttl).await;
        }
        None => {}
    }
    let fresh = VariantIndex {
        names,
        epoch: crate::random::unique_u64(),
    };
    let encoded = CacheRecord::Variants(fresh.clone()).encode();
    let call = backend.add(&slot.base, encoded, Some(ttl));
    if with_timeout(shared, &**backend, "add", call).await? {
        return Some(fresh);
    }
    // Someone else wrote the base key first: use their index if it is one.
    match read(shared, backend, &slot.base).await.ok()? {
        Some(CacheRecord::Variants(theirs)) if theirs.names == fresh.names => Some(theirs),
        Some(CacheRecord::Variants(theirs)) => {
            let index = VariantIndex {
                names: fresh.names,
                epoch: theirs.epoch,
            };
            put_index(shared, backend, &slot.base, &index, ttl).await
        }
        _ => put_index(shared, backend, &slot.base, &fresh, ttl).await,
    }
}

async fn put_index(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    base: &str,
    index: &VariantIndex,
    ttl: Duration,
) -> Option<VariantIndex> {
    let encoded = CacheRecord::Variants(index.clone()).encode();
    let call = backend.set(base, encoded, Some(ttl));
    with_timeout(shared, &**backend, "set", call).await?;
    Some(index.clone())
}

/// Deletes a base key (and with it every variant) and its lock, failing
/// open.
pub(crate) async fn delete(shared: &Shared, backend: &Arc<dyn Backend>, key: &str) {
    let call = super::purge::delete_key(&**backend, key);
    let _ = with_timeout(shared, &**backend, "delete", call).await;
}

/// Deletes every stored response of `path` (all hosts, queries, users
/// and variants), failing open.
pub(crate) async fn clear_path(shared: &Shared, backend: &Arc<dyn Backend>, path: &str) {
    let call = super::purge::clear_path(&**backend, path, true);
    let _ = with_timeout(shared, &**backend, "clear_path", call).await;
}

/// Runs a backend call under the layer's timeout; failures are counted,
/// logged (rate-limited) and turned into `None`: fail open.
pub(crate) async fn with_timeout<T>(
    shared: &Shared,
    backend: &dyn Backend,
    operation: &'static str,
    call: impl Future<Output = Result<T, BackendError>>,
) -> Option<T> {
    let error = match tokio::time::timeout(shared.options.backend_timeout, call).await {
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
                timeout: shared.options.backend_timeout,
            }
        }
    };
    shared.failures.record(backend.name(), operation, &error);
    None
}
