//! Tag (surrogate-key) invalidation: remove every stored response that
//! carries a tag such as `product:42`, whatever its URL.
//!
//! # How
//!
//! Each tag has a *token* stored under `http:tag:{tag}`: the time (Unix
//! microseconds, by the layer's clock) of its latest invalidation. A
//! response is stored with its tags and the time its handler run *began*
//! (in the reserved [`STORED_TAGS`] field of the entry, never served), and
//! a lookup serves it only while every tag's token is older than that. So:
//!
//! - an invalidation is one write, on any backend, through the plain
//!   [`Backend`] contract: it holds on Redis Cluster (one key, one slot),
//!   across instances, through the Redis memory tier (a token is an
//!   ordinary key, announced like any other) and on Memcached;
//! - a response computed from data read *before* an invalidation (a miss
//!   in flight, on this instance or another) is never served after it,
//!   since its run began before. Across instances this relies on their
//!   clocks agreeing: a clock ahead by `d` lets a run that began up to `d`
//!   before an invalidation count as after it;
//! - invalidated entries are unreachable at once and age out by their TTL,
//!   so [`invalidate`] cannot count them.
//!
//! A token that is missing (never created, evicted by the store's memory
//! bound, expired, lost in a restart) makes its entries misses, and a store
//! that finds it missing creates it dated just before its own run began:
//! everything older is distrusted, so nothing tagged is served on a guess.
//! Tokens live [`TOKEN_TTL`] after their last write, so tags used once do
//! not stay forever.
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

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum_cachex_core::{Backend, BackendError, CacheEntry};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{shared::Shared, store::with_timeout};

/// Where an entry keeps the time its run began and its tags
/// (`{micros} {tag} {tag}…`). Reserved: removed from handlers' responses
/// and never served.
pub(crate) const STORED_TAGS: HeaderName = HeaderName::from_static("x-axum-cachex-tags");

/// The longest tag accepted.
pub const MAX_TAG_LEN: usize = 256;

/// How long a token lives after its last write. Entries outliving their
/// tags' tokens become misses (safe), and a tag used once goes away.
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether `tag` can be used: 1 to [`MAX_TAG_LEN`] visible ASCII
/// characters, without `,` or `=`.
pub(crate) fn is_valid(tag: &str) -> bool {
    (1..=MAX_TAG_LEN).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b',' && b != b'=')
}

/// Whether `name` is a header the cache reads or writes itself, which
/// cannot also carry (and lose) tags.
pub(crate) fn is_reserved_header(name: &HeaderName) -> bool {
    use http::header::{
        AGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_TYPE, DATE,
        ETAG, EXPIRES, LAST_MODIFIED, LOCATION, SET_COOKIE, VARY,
    };
    let reserved = [
        AGE,
        AUTHORIZATION,
        CACHE_CONTROL,
        CONTENT_LENGTH,
        CONTENT_LOCATION,
        CONTENT_TYPE,
        DATE,
        ETAG,
        EXPIRES,
        LAST_MODIFIED,
        LOCATION,
        SET_COOKIE,
        VARY,
        STORED_TAGS,
    ];
    reserved.contains(name) || name.as_str() == "cache-status"
}

/// Where tag tokens live: inside the cache's namespace (a `clear` removes
/// them with the responses), in a part no response key can take.
pub(crate) const TOKEN_NAMESPACE: &str = "http:tag:";

fn token_key(tag: &str) -> String {
    format!("{TOKEN_NAMESPACE}{tag}")
}

/// The tags a response names in `header`, then `own`; invalid ones are
/// skipped (the valid ones beside them kept), duplicates kept once.
pub(crate) fn response_tags(
    headers: &HeaderMap,
    header: &HeaderName,
    own: &[String],
) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let named = headers
        .get_all(header)
        .iter()
        .flat_map(|v| {
            v.as_bytes()
                .split(|&b| b == b',' || b.is_ascii_whitespace())
        })
        .filter_map(|tag| std::str::from_utf8(tag).ok());
    for tag in named.chain(own.iter().map(String::as_str)) {
        if is_valid(tag) && !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    tags
}

/// `entry` as it is stored: its tags (the handler's header, the layer's
/// own) replaced by the [`STORED_TAGS`] stamp of a run that `began` then.
/// An entry that already carries a stamp and names no tag itself (a
/// revalidated entry stored again) keeps it. `None` when the entry must not
/// be stored: a tag was invalidated since the run began, or its token
/// could not be read or made.
pub(crate) async fn stamped<'e>(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    entry: &'e CacheEntry,
    began: SystemTime,
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
    if tags.is_empty() {
        return Some(Cow::Owned(entry));
    }
    let began = micros(began);
    for tag in &tags {
        if token_or_new(shared, backend, tag, began).await? >= began {
            return None; // invalidated during the run
        }
    }
    let stamp = std::iter::once(began.to_string())
        .chain(tags)
        .collect::<Vec<_>>();
    entry
        .headers
        .insert(STORED_TAGS, HeaderValue::try_from(stamp.join(" ")).ok()?);
    Some(Cow::Owned(entry))
}

/// The token of `tag`, created (dated just before `began`) when missing.
async fn token_or_new(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    tag: &str,
    began: u64,
) -> Option<u64> {
    let key = token_key(tag);
    for _ in 0..2 {
        let call = backend.get(&key);
        if let Some(token) = with_timeout(shared, &**backend, "get", call).await? {
            return parse_token(&token);
        }
        let fresh = began.saturating_sub(1);
        let call = backend.add(&key, fresh.to_string().into(), Some(TOKEN_TTL));
        if with_timeout(shared, &**backend, "add", call).await? {
            return Some(fresh);
        }
        // Another store created it first: read theirs.
    }
    None
}

fn parse_token(token: &[u8]) -> Option<u64> {
    std::str::from_utf8(token).ok()?.parse().ok()
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The run start and tags of a [`STORED_TAGS`] value; `None` when it is
/// malformed (a planted or corrupt entry).
pub(crate) fn stamp_parts(stamp: &HeaderValue) -> Option<(u64, Vec<&str>)> {
    let mut parts = stamp.to_str().ok()?.split(' ');
    let began = parts.next()?.parse().ok()?;
    let tags: Vec<&str> = parts.collect();
    (!tags.is_empty() && tags.iter().all(|t| is_valid(t))).then_some((began, tags))
}

/// Whether a stored entry's tags were all invalidated (if ever) before its
/// run began. A backend failure answers `false`: not served.
pub(crate) async fn still_current(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    stamp: &HeaderValue,
) -> bool {
    let Some((began, tags)) = stamp_parts(stamp) else {
        return false;
    };
    for tag in tags {
        let key = token_key(tag);
        let token = match backend.get_now(&key) {
            Some(found) => found.ok().flatten(),
            None => with_timeout(shared, &**backend, "get", backend.get(&key))
                .await
                .flatten(),
        };
        if !predates(token.as_deref(), began) {
            return false;
        }
    }
    true
}

/// [`still_current`] without awaiting: `None` when the store cannot answer
/// from process memory.
pub(crate) fn still_current_now(backend: &Arc<dyn Backend>, stamp: &HeaderValue) -> Option<bool> {
    let Some((began, tags)) = stamp_parts(stamp) else {
        return Some(false);
    };
    for tag in tags {
        let token = backend.get_now(&token_key(tag))?.ok().flatten();
        if !predates(token.as_deref(), began) {
            return Some(false);
        }
    }
    Some(true)
}

/// Whether a token says its tag's last invalidation came before `began`.
fn predates(token: Option<&[u8]>, began: u64) -> bool {
    token.and_then(parse_token).is_some_and(|at| at < began)
}

/// Makes every stored response tagged `tag` whose run began before `now`
/// unreachable, on every instance sharing the backend. The token only
/// moves forward: a clock behind another instance's cannot bring back what
/// that instance invalidated.
pub(crate) async fn invalidate(
    backend: &dyn Backend,
    tag: &str,
    now: SystemTime,
) -> Result<(), BackendError> {
    if !is_valid(tag) {
        return Err(BackendError::InvalidInput(format!(
            "a tag is 1 to {MAX_TAG_LEN} visible ASCII characters without `,` or `=`: {tag:?}"
        )));
    }
    // First: a handler run in flight must not store what it read before.
    super::shared::Invalidations::get().path(backend);
    let key = token_key(tag);
    let now = micros(now);
    for _ in 0..4 {
        let Some(current) = backend.get(&key).await? else {
            if backend
                .add(&key, now.to_string().into(), Some(TOKEN_TTL))
                .await?
            {
                return Ok(());
            }
            continue;
        };
        let at = parse_token(&current).unwrap_or(0);
        let next = now.max(at.saturating_add(1)).to_string();
        let Some(cas) = backend.compare_and_swap() else {
            return backend.set(&key, next.into(), Some(TOKEN_TTL)).await;
        };
        if cas
            .set_if_equals(&key, &current, next.into(), Some(TOKEN_TTL))
            .await?
        {
            return Ok(());
        }
    }
    // Contended: others moved it meanwhile; make sure it is past `now`.
    let at = backend.get(&key).await?.as_deref().and_then(parse_token);
    if at.is_some_and(|at| at >= now) {
        return Ok(());
    }
    backend
        .set(&key, now.to_string().into(), Some(TOKEN_TTL))
        .await
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
    fn stamps_parse_or_are_refused() {
        let ok = HeaderValue::from_static("1700000000000 a b:2");
        assert_eq!(
            stamp_parts(&ok),
            Some((1_700_000_000_000, vec!["a", "b:2"]))
        );
        for bad in ["", "a", "12", "x a", "12  a", "12 a,b", "-1 a"] {
            assert_eq!(stamp_parts(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }

    #[test]
    fn headers_the_cache_uses_cannot_carry_tags() {
        for reserved in [
            "vary",
            "etag",
            "cache-control",
            "x-axum-cachex-tags",
            "cache-status",
        ] {
            assert!(
                is_reserved_header(&HeaderName::from_static(reserved)),
                "{reserved}"
            );
        }
        for ok in ["cache-tag", "surrogate-key", "x-tags"] {
            assert!(!is_reserved_header(&HeaderName::from_static(ok)), "{ok}");
        }
        let refused = crate::CacheLayer::builder()
            .tag_header(http::header::VARY)
            .build();
        assert!(matches!(
            refused,
            Err(crate::CacheLayerConfigError::ReservedTagHeader(_))
        ));
    }

    #[test]
    fn a_token_must_predate_the_run() {
        assert!(predates(Some(b"99"), 100));
        assert!(!predates(Some(b"100"), 100));
        assert!(!predates(None, 100), "a missing token is not trusted");
        assert!(!predates(Some(b"junk"), 100));
    }

    #[test]
    fn non_ascii_does_not_hide_the_valid_tags_beside_it() {
        let name = HeaderName::from_static("cache-tag");
        let mut headers = HeaderMap::new();
        headers.insert(
            &name,
            HeaderValue::from_bytes("product:42 caf\u{e9}".as_bytes()).expect("obs-text"),
        );
        assert_eq!(response_tags(&headers, &name, &[]), ["product:42"]);
    }
}
