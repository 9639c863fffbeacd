//! Tag (surrogate-key) invalidation: remove every stored response that
//! carries a tag such as `product:42`, whatever its URL.
//!
//! # How
//!
//! Each tag has a *token* stored under `http:tag:{tag}`: a random value
//! that [`invalidate`] replaces. A response is stored with the tokens its
//! tags had at that moment (in the reserved [`STORED_TAGS`] field of the
//! entry, never served), and a lookup serves it only while every token is
//! still the current one. So an invalidation is one write, on any backend,
//! through the plain [`Backend`] contract: it holds on Redis Cluster (one
//! key, one slot), across instances, through the Redis memory tier (a
//! token is an ordinary key, announced like any other) and on Memcached.
//! Invalidated entries are unreachable at once and age out by their TTL,
//! so [`invalidate`] cannot count them.
//!
//! A token that is missing (never created, evicted by the store's memory
//! bound, lost in a restart) makes its entries misses: a store creates the
//! token before it stores a tagged response, so a missing token can only
//! mean that something was forgotten, and nothing tagged is served on a
//! guess.
//!
//! # Cost
//!
//! A tagged response costs one `get` per tag when it is stored (plus an
//! `add` for a new tag), and one `get` per tag on each hit (from process
//! memory with the memory backend or the Redis memory tier). Untagged
//! responses cost nothing.
//!
//! # Where tags come from
//!
//! The handler's response header named by
//! [`CacheLayerBuilder::tag_header`](super::CacheLayerBuilder::tag_header)
//! (`Cache-Tag` by default; comma- or space-separated, so `Surrogate-Key`
//! values work too), plus the layer's own
//! [`tags`](super::CacheLayerBuilder::tags). The header is removed from
//! every response the layer sends.

use std::{borrow::Cow, sync::Arc};

use axum_cachex_core::{Backend, BackendError, CacheEntry};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{shared::Shared, store::with_timeout};

/// Where an entry keeps its tags and their tokens (`tag=token` pairs,
/// space-separated). Reserved: removed from handlers' responses and never
/// served.
pub(crate) const STORED_TAGS: HeaderName = HeaderName::from_static("x-axum-cachex-tags");

/// The longest tag accepted.
pub const MAX_TAG_LEN: usize = 256;

/// Whether `tag` can be used: 1 to [`MAX_TAG_LEN`] visible ASCII
/// characters, without `,` or `=` (separators in headers and in the stored
/// field).
pub(crate) fn is_valid(tag: &str) -> bool {
    (1..=MAX_TAG_LEN).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b',' && b != b'=')
}

/// Where tag tokens live: inside the cache's namespace (a `clear` removes
/// them with the responses), in a part no response key can take.
pub(crate) const TOKEN_NAMESPACE: &str = "http:tag:";

fn token_key(tag: &str) -> String {
    format!("{TOKEN_NAMESPACE}{tag}")
}

/// The tags a response names in `header`, then `own`; invalid ones are
/// skipped, duplicates kept once.
pub(crate) fn response_tags(
    headers: &HeaderMap,
    header: &HeaderName,
    own: &[String],
) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let named = headers
        .get_all(header)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(|c: char| c == ',' || c.is_ascii_whitespace()));
    for tag in named.chain(own.iter().map(String::as_str)) {
        if is_valid(tag) && !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    tags
}

/// `entry` as it is stored: its tags (the handler's header, the layer's
/// own) replaced by their [`STORED_TAGS`] stamp. An entry that already
/// carries a stamp and names no tag itself (a revalidated entry stored
/// again) keeps it. `None` when a tag's token could not be read or made:
/// the entry is then not stored.
pub(crate) async fn stamped<'e>(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    entry: &'e CacheEntry,
) -> Option<Cow<'e, CacheEntry>> {
    let header = &shared.options.tag_header;
    let names_tags = entry.headers.contains_key(header);
    if !names_tags && (entry.headers.contains_key(STORED_TAGS) || shared.options.tags.is_empty()) {
        return Some(Cow::Borrowed(entry));
    }
    let tags = response_tags(&entry.headers, header, &shared.options.tags);
    let mut entry = entry.clone();
    entry.headers.remove(header);
    entry.headers.remove(STORED_TAGS);
    if !tags.is_empty() {
        entry
            .headers
            .insert(STORED_TAGS, stamp(shared, backend, &tags).await?);
    }
    Some(Cow::Owned(entry))
}

/// The [`STORED_TAGS`] value for `tags`: each with its current token,
/// created when missing. `None` when the backend failed (the response is
/// then not stored: it could not be invalidated by tag).
async fn stamp(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    tags: &[String],
) -> Option<HeaderValue> {
    let mut pairs = Vec::with_capacity(tags.len());
    for tag in tags {
        let token = current_or_new(shared, backend, tag).await?;
        pairs.push(format!("{tag}={token}"));
    }
    HeaderValue::try_from(pairs.join(" ")).ok()
}

async fn current_or_new(shared: &Shared, backend: &Arc<dyn Backend>, tag: &str) -> Option<String> {
    let key = token_key(tag);
    for _ in 0..2 {
        let call = backend.get(&key);
        if let Some(token) = with_timeout(shared, &**backend, "get", call).await? {
            return String::from_utf8(token.to_vec()).ok();
        }
        let fresh = new_token();
        let call = backend.add(&key, fresh.clone().into(), None);
        if with_timeout(shared, &**backend, "add", call).await? {
            return Some(fresh);
        }
        // Another store created it first: read theirs.
    }
    None
}

fn new_token() -> String {
    format!("{:016x}", crate::random::unique_u64())
}

/// The `(tag, token)` pairs of a [`STORED_TAGS`] value; `None` when it is
/// malformed (a planted or corrupt entry).
pub(crate) fn stamp_pairs(stamp: &HeaderValue) -> Option<Vec<(&str, &str)>> {
    let text = stamp.to_str().ok()?;
    text.split(' ')
        .map(|pair| pair.rsplit_once('=').filter(|(tag, _)| is_valid(tag)))
        .collect()
}

/// Whether every tag of a stored entry still has the token it was stored
/// with. A backend failure answers `false`: not served.
pub(crate) async fn still_current(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    stamp: &HeaderValue,
) -> bool {
    let Some(pairs) = stamp_pairs(stamp) else {
        return false;
    };
    for (tag, token) in pairs {
        let key = token_key(tag);
        let current = match backend.get_now(&key) {
            Some(found) => found.ok().flatten(),
            None => with_timeout(shared, &**backend, "get", backend.get(&key))
                .await
                .flatten(),
        };
        if current.as_deref() != Some(token.as_bytes()) {
            return false;
        }
    }
    true
}

/// [`still_current`] without awaiting: `None` when the store cannot answer
/// from process memory.
pub(crate) fn still_current_now(backend: &Arc<dyn Backend>, stamp: &HeaderValue) -> Option<bool> {
    let Some(pairs) = stamp_pairs(stamp) else {
        return Some(false);
    };
    for (tag, token) in pairs {
        let current = backend.get_now(&token_key(tag))?.ok().flatten();
        if current.as_deref() != Some(token.as_bytes()) {
            return Some(false);
        }
    }
    Some(true)
}

/// Makes every stored response tagged `tag` unreachable, on every instance
/// sharing the backend.
pub(crate) async fn invalidate(backend: &dyn Backend, tag: &str) -> Result<(), BackendError> {
    if !is_valid(tag) {
        return Err(BackendError::InvalidInput(format!(
            "a tag is 1 to {MAX_TAG_LEN} visible ASCII characters without `,` or `=`: {tag:?}"
        )));
    }
    // First: a handler run in flight must not store what it read before.
    super::shared::Invalidations::get().path(backend);
    backend.set(&token_key(tag), new_token().into(), None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_live_in_the_cache_namespace_apart_from_responses() {
        assert!(TOKEN_NAMESPACE.starts_with(axum_cachex_core::CACHE_NAMESPACE));
        assert!(axum_cachex_core::CacheKey::parse_stored(&token_key("a")).is_none());
    }

    #[test]
    fn tags_come_from_the_header_and_the_layer() {
        let mut headers = HeaderMap::new();
        let name = HeaderName::from_static("cache-tag");
        headers.append(&name, HeaderValue::from_static("product:42, list"));
        headers.append(&name, HeaderValue::from_static("a b  c,,list"));
        let own = vec!["site".to_owned(), "bad=tag".to_owned()];
        assert_eq!(
            response_tags(&headers, &name, &own),
            ["product:42", "list", "a", "b", "c", "site"]
        );
        assert!(response_tags(&HeaderMap::new(), &name, &[]).is_empty());
    }

    #[test]
    fn tag_rules() {
        assert!(is_valid("product:42"));
        for bad in ["", "a b", "a,b", "a=b", "é", &"x".repeat(MAX_TAG_LEN + 1)] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn stored_pairs_parse_or_refuse() {
        let ok = HeaderValue::from_static("a=1f b:2=ff");
        assert_eq!(stamp_pairs(&ok), Some(vec![("a", "1f"), ("b:2", "ff")]));
        for bad in ["a", "=x", "a=1  b=2", "a,b=1"] {
            assert_eq!(stamp_pairs(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }
}
