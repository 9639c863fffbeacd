//! The bodies of `cached-hits` and `cached-records`: every stored response
//! variant of the backend, with totals over all of them and one bounded page
//! of rows.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime},
};

use axum_cachex_core::{Backend, BackendError, CACHE_NAMESPACE, CacheEntry, CacheKey, CacheRecord};
use serde::Serialize;
use serde_json::{Map, Value};

/// How many bytes of a body `content_preview` shows.
const PREVIEW_BYTES: usize = 100;

/// How many routes `frequently_cached_routes` lists.
const TOP_ROUTES: usize = 10;

/// Every stored response variant, sorted by key (variants in stored order).
pub(crate) struct Listing {
    variants: Vec<(String, CacheEntry)>,
}

/// What listing the backend gave.
pub(crate) enum Loaded {
    /// The backend listed its values.
    Listed(Listing),
    /// The backend cannot list keys (Memcached); the message says so.
    Unsupported(String),
}

/// Reads every value of the backend and keeps the decodable cache entries.
///
/// Values that are not a stored response ([`CacheRecord::Response`]) —
/// variant indexes, sessions, OAuth states, locks and
/// app-cache values share the backend — are skipped.
pub(crate) async fn load(backend: &dyn Backend) -> Result<Loaded, BackendError> {
    let Some(listing) = backend.listing() else {
        return Ok(Loaded::Unsupported(unsupported_message(backend.name())));
    };
    let values = listing.entries(CACHE_NAMESPACE).await?;
    let mut variants = Vec::new();
    for stored in values {
        if let Ok(CacheRecord::Response(entry)) = CacheRecord::decode(stored.value) {
            variants.push((base_key(stored.key), entry));
        }
    }
    // Stable order (a stable sort keeps variants in stored order) so that
    // `offset` pages through the same sequence on every call.
    variants.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Loaded::Listed(Listing { variants }))
}

/// A `Vary` variant is listed under its base key: the key that `delete`
/// and invalidation act on.
fn base_key(key: String) -> String {
    match CacheKey::parse_stored(&key) {
        Some(k) if !k.variant.is_empty() => {
            format!("{CACHE_NAMESPACE}{}", CacheKey { variant: "", ..k })
        }
        _ => key,
    }
}

fn unsupported_message(backend: &str) -> String {
    format!(
        "unsupported: {backend} cannot list keys; use Redis or the memory backend to list entries"
    )
}

/// `"complete"`, or why there are no rows.
pub(crate) const LISTING_COMPLETE: &str = "complete";

/// One page: rows `offset..offset + limit`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page {
    pub(crate) limit: usize,
    pub(crate) offset: usize,
}

/// The parts of a key and its request, as the rows show them.
struct KeyParts {
    method: Option<String>,
    host: Option<String>,
    path: Option<String>,
    query_params: Map<String, Value>,
}

fn key_parts(key: &str) -> KeyParts {
    match CacheKey::parse_stored(key) {
        Some(k) => KeyParts {
            // Unescaped: the key's own `%`/`|` escaping is not part of the
            // request (`?q=a%20b` must list as `q: "a b"`, not `"a%20b"`).
            method: Some(k.decoded_method().into_owned()),
            host: Some(k.host.to_owned()),
            path: Some(k.decoded_path().into_owned()),
            query_params: query_params(&k.decoded_query()),
        },
        // A custom key builder's format: only the key itself is known.
        None => KeyParts {
            method: None,
            host: None,
            path: None,
            query_params: Map::new(),
        },
    }
}

/// The raw query as an object: `a=1&b=x%20y` → `{"a": "1", "b": "x y"}`;
/// a name that appears more than once maps to an array of its values, in
/// order.
pub(crate) fn query_params(query: &str) -> Map<String, Value> {
    let mut params = Map::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = Value::String(value.into_owned());
        match params.get_mut(name.as_ref()) {
            None => {
                params.insert(name.into_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
        }
    }
    params
}

/// Seconds rounded to two decimal places.
fn round2(secs: f64) -> f64 {
    (secs * 100.0).round() / 100.0
}

/// Freshness left, in seconds rounded to 2 places; `None` once the entry is
/// past its freshness (it may still be stored for a stale window).
fn ttl_remaining(entry: &CacheEntry, now: SystemTime) -> Option<f64> {
    let left = entry.fresh_for.saturating_sub(entry.age(now));
    (left > Duration::ZERO).then(|| round2(left.as_secs_f64()))
}

fn etag(entry: &CacheEntry) -> String {
    String::from_utf8_lossy(entry.etag.as_bytes()).into_owned()
}

/// Counts over every variant, not just the page.
struct Totals {
    total: usize,
    fresh: usize,
    bytes: u64,
    /// Entries per `(method, path)`, or per key for custom key formats.
    per_route: HashMap<(Option<String>, String), usize>,
    unique_paths: usize,
}

impl Listing {
    fn totals(&self, now: SystemTime) -> Totals {
        let mut per_route: HashMap<(Option<String>, String), usize> = HashMap::new();
        let mut paths: HashSet<String> = HashSet::new();
        let mut fresh = 0;
        let mut bytes = 0u64;
        for (key, entry) in &self.variants {
            if entry.is_fresh(now) {
                fresh += 1;
            }
            bytes += entry.body.len() as u64;
            let (method, path) = match CacheKey::parse_stored(key) {
                Some(k) => (
                    Some(k.decoded_method().into_owned()),
                    k.decoded_path().into_owned(),
                ),
                None => (None, key.clone()),
            };
            paths.insert(path.clone());
            *per_route.entry((method, path)).or_default() += 1;
        }
        Totals {
            total: self.variants.len(),
            fresh,
            bytes,
            per_route,
            unique_paths: paths.len(),
        }
    }

    fn page(&self, page: Page) -> impl Iterator<Item = &(String, CacheEntry)> {
        self.variants.iter().skip(page.offset).take(page.limit)
    }
}

/// One row of `cached_hits`.
#[derive(Serialize)]
struct HitRow {
    cache_key: String,
    method: Option<String>,
    host: Option<String>,
    path: Option<String>,
    query_params: Map<String, Value>,
    etag: String,
    is_expired: bool,
    ttl_remaining: Option<f64>,
}

/// A route in `frequently_cached_routes`.
#[derive(Serialize)]
struct RouteCount {
    method: Option<String>,
    path: String,
    entries: usize,
}

#[derive(Serialize)]
struct HitsSummary {
    total_cached_entries: Option<usize>,
    active_entries: Option<usize>,
    frequently_cached_routes: Vec<RouteCount>,
}

/// The body of `GET {prefix}/cached-hits`.
#[derive(Serialize)]
pub(crate) struct CachedHits {
    cached_hits: Vec<HitRow>,
    total_hits: Option<usize>,
    valid_hits: Option<usize>,
    expired_hits: Option<usize>,
    unique_routes: Option<usize>,
    summary: HitsSummary,
    listing: String,
    limit: usize,
    offset: usize,
    counters: Map<String, Value>,
}

/// One row of `cached_records`.
#[derive(Serialize)]
struct RecordRow {
    cache_key: String,
    method: Option<String>,
    host: Option<String>,
    path: Option<String>,
    query_params: Map<String, Value>,
    etag: String,
    content_type: Option<String>,
    content_size: usize,
    is_expired: bool,
    ttl_remaining: Option<f64>,
    content_preview: String,
}

#[derive(Serialize)]
struct RecordsSummary {
    total_entries: Option<usize>,
    valid_entries: Option<usize>,
    estimated_cache_size_kb: Option<f64>,
}

/// The body of `GET {prefix}/cached-records`.
#[derive(Serialize)]
pub(crate) struct CachedRecords {
    cached_records: Vec<RecordRow>,
    total_records: Option<usize>,
    active_records: Option<usize>,
    expired_records: Option<usize>,
    total_cache_size_bytes: Option<u64>,
    summary: RecordsSummary,
    listing: String,
    limit: usize,
    offset: usize,
    counters: Map<String, Value>,
}

fn top_routes(per_route: HashMap<(Option<String>, String), usize>) -> Vec<RouteCount> {
    let mut routes: Vec<RouteCount> = per_route
        .into_iter()
        .map(|((method, path), entries)| RouteCount {
            method,
            path,
            entries,
        })
        .collect();
    routes.sort_by(|a, b| {
        b.entries
            .cmp(&a.entries)
            .then_with(|| a.path.cmp(&b.path))
            .then_with(|| a.method.cmp(&b.method))
    });
    routes.truncate(TOP_ROUTES);
    routes
}

/// Builds the `cached-hits` body.
pub(crate) fn cached_hits(
    loaded: &Loaded,
    now: SystemTime,
    page: Page,
    counters: Map<String, Value>,
) -> CachedHits {
    let listing = match loaded {
        Loaded::Listed(listing) => listing,
        Loaded::Unsupported(message) => {
            return CachedHits {
                cached_hits: Vec::new(),
                total_hits: None,
                valid_hits: None,
                expired_hits: None,
                unique_routes: None,
                summary: HitsSummary {
                    total_cached_entries: None,
                    active_entries: None,
                    frequently_cached_routes: Vec::new(),
                },
                listing: message.clone(),
                limit: page.limit,
                offset: page.offset,
                counters,
            };
        }
    };
    let totals = listing.totals(now);
    let rows = listing
        .page(page)
        .map(|(key, entry)| {
            let parts = key_parts(key);
            HitRow {
                cache_key: key.clone(),
                method: parts.method,
                host: parts.host,
                path: parts.path,
                query_params: parts.query_params,
                etag: etag(entry),
                is_expired: !entry.is_fresh(now),
                ttl_remaining: ttl_remaining(entry, now),
            }
        })
        .collect();
    CachedHits {
        cached_hits: rows,
        total_hits: Some(totals.total),
        valid_hits: Some(totals.fresh),
        expired_hits: Some(totals.total - totals.fresh),
        unique_routes: Some(totals.unique_paths),
        summary: HitsSummary {
            total_cached_entries: Some(totals.total),
            active_entries: Some(totals.fresh),
            frequently_cached_routes: top_routes(totals.per_route),
        },
        listing: LISTING_COMPLETE.to_owned(),
        limit: page.limit,
        offset: page.offset,
        counters,
    }
}

/// Builds the `cached-records` body.
pub(crate) fn cached_records(
    loaded: &Loaded,
    now: SystemTime,
    page: Page,
    counters: Map<String, Value>,
) -> CachedRecords {
    let listing = match loaded {
        Loaded::Listed(listing) => listing,
        Loaded::Unsupported(message) => {
            return CachedRecords {
                cached_records: Vec::new(),
                total_records: None,
                active_records: None,
                expired_records: None,
                total_cache_size_bytes: None,
                summary: RecordsSummary {
                    total_entries: None,
                    valid_entries: None,
                    estimated_cache_size_kb: None,
                },
                listing: message.clone(),
                limit: page.limit,
                offset: page.offset,
                counters,
            };
        }
    };
    let totals = listing.totals(now);
    let rows = listing
        .page(page)
        .map(|(key, entry)| {
            let parts = key_parts(key);
            let preview = &entry.body[..entry.body.len().min(PREVIEW_BYTES)];
            RecordRow {
                cache_key: key.clone(),
                method: parts.method,
                host: parts.host,
                path: parts.path,
                query_params: parts.query_params,
                etag: etag(entry),
                content_type: entry
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                content_size: entry.body.len(),
                is_expired: !entry.is_fresh(now),
                ttl_remaining: ttl_remaining(entry, now),
                content_preview: String::from_utf8_lossy(preview).into_owned(),
            }
        })
        .collect();
    CachedRecords {
        cached_records: rows,
        total_records: Some(totals.total),
        active_records: Some(totals.fresh),
        expired_records: Some(totals.total - totals.fresh),
        total_cache_size_bytes: Some(totals.bytes),
        summary: RecordsSummary {
            total_entries: Some(totals.total),
            valid_entries: Some(totals.fresh),
            estimated_cache_size_kb: Some(round2(totals.bytes as f64 / 1024.0)),
        },
        listing: LISTING_COMPLETE.to_owned(),
        limit: page.limit,
        offset: page.offset,
        counters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_decode_and_group_repeats() {
        let params = query_params("a=1&b=x%20y&a=2&c&d=%E2%9C%93+ok");
        assert_eq!(
            Value::Object(params),
            serde_json::json!({"a": ["1", "2"], "b": "x y", "c": "", "d": "✓ ok"})
        );
        assert!(query_params("").is_empty());
    }

    /// Found by the `monitoring_query` property: the key stores the query
    /// with `%` escaped as `%25`, and the rows decoded that escaped form,
    /// so `?q=a%20b` was listed as `q: "a%20b"` and a path with `|` as
    /// `%7C`.
    #[test]
    fn rows_show_the_request_not_the_key_escaping() {
        let key = CacheKey::encode_stored("GET", "h", "/a|b%", "q=a%20b&r=x|y");
        let parts = key_parts(&key);
        assert_eq!(parts.path.as_deref(), Some("/a|b%"));
        assert_eq!(
            Value::Object(parts.query_params),
            serde_json::json!({"q": "a b", "r": "x|y"})
        );
        assert_eq!(parts.method.as_deref(), Some("GET"));
    }

    #[test]
    fn rounding() {
        assert_eq!(round2(59.999), 60.0);
        assert_eq!(round2(1.234), 1.23);
        assert_eq!(round2(0.005), 0.01);
    }
}
