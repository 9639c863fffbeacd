//! Server-side key names, the value envelope and TTL conversion.

use std::time::Duration;

use axum_cachex_core::{CACHE_NAMESPACE, CacheKey};
use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_128;

/// Memcached's limit on key length, in bytes.
pub(super) const MAX_KEY_LEN: usize = 250;

/// Longest accepted prefix: leaves room for the generations and a hashed key
/// (`{prefix}{16 hex}.{16 hex}:h:{32 hex}`) within [`MAX_KEY_LEN`].
pub(super) const MAX_PREFIX_LEN: usize = 128;

/// Longest relative TTL Memcached accepts: larger numbers are read as Unix
/// timestamps. Exactly 30 days is still relative (the server compares with
/// `>`).
pub(super) const MAX_RELATIVE_TTL_SECS: u64 = 30 * 24 * 60 * 60;

/// Memcached item flags marking a value in this backend's envelope format
/// (version 1). Items with other flags are not ours and read as misses.
pub(super) const ENVELOPE_FLAGS: u32 = 0xCAC1;

/// The increment that [`Backend::clear_path`] with `include_params` applies
/// to a path counter: it changes the high half, which every entry of the
/// path embeds. An increment of 1 changes only the low half, which only the
/// entries without a query embed.
///
/// [`Backend::clear_path`]: axum_cachex_core::Backend::clear_path
pub(super) const PATH_ALL_STEP: u64 = 1 << 32;

/// Whether `s` can be used inside a Memcached key as is: printable ASCII
/// without spaces (the text protocol separates tokens with spaces and ends
/// lines with CR LF; non-ASCII is hashed too so keys stay readable in any
/// tool).
pub(super) fn is_key_safe(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// Checks a configured prefix.
pub(super) fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "memcached prefix is {} bytes long, at most {MAX_PREFIX_LEN} allowed",
            prefix.len()
        ));
    }
    if !is_key_safe(prefix) {
        return Err(format!(
            "memcached prefix {prefix:?} must be printable ASCII without spaces"
        ));
    }
    Ok(())
}

/// The server-side names of one logical key's counters and entry.
#[derive(Debug)]
pub(super) struct KeyNames<'a> {
    prefix: &'a str,
    logical: &'a str,
    /// Whether the key is the HTTP cache's (under [`CACHE_NAMESPACE`]): it
    /// then embeds the cache generation.
    cached: bool,
    /// The path counter of keys in the default [`CacheKey`] format, and
    /// whether the key has an empty query (then it embeds the whole counter,
    /// otherwise only its high half).
    path: Option<(String, bool)>,
}

impl<'a> KeyNames<'a> {
    pub(super) fn new(prefix: &'a str, logical: &'a str) -> Self {
        let path = CacheKey::parse_stored(logical).map(|k| {
            (
                path_counter_key(prefix, &k.decoded_path()),
                k.query.is_empty(),
            )
        });
        Self {
            prefix,
            logical,
            cached: logical.starts_with(CACHE_NAMESPACE),
            path,
        }
    }

    /// The counters to read before touching the entry: for a key of the
    /// HTTP cache its generation, then its path counter when the key is in
    /// the default format (a custom key builder's keys have none); none for
    /// any other key (sessions and states are never cleared in bulk here).
    pub(super) fn counters(&self) -> Vec<String> {
        let mut counters = Vec::new();
        if self.cached {
            counters.push(generation_key(self.prefix));
        }
        if let Some((path, _)) = &self.path {
            counters.push(path.clone());
        }
        counters
    }

    /// The entry's server-side key, given the counter values in the order of
    /// [`counters`](Self::counters).
    ///
    /// `{prefix}{gen}.{pathgen}:` (in hex) for a key of the HTTP cache,
    /// `{prefix}{gen}:` for one in a custom format, `{prefix}` for any
    /// other, then
    /// `k:{logical key}` when that is short and printable, otherwise
    /// `h:{xxh3-128 of the logical key}` (the envelope keeps the real key, so
    /// reads detect a collision).
    pub(super) fn entry_key(&self, counters: &[u64]) -> String {
        // Built by hand, in one allocation: this runs on every read.
        let mut key = String::with_capacity(self.prefix.len() + 36 + self.logical.len());
        key.push_str(self.prefix);
        match (&self.path, counters) {
            (Some((_, exact)), &[generation, path, ..]) => {
                push_hex(&mut key, generation);
                key.push('.');
                push_hex(&mut key, if *exact { path } else { path >> 32 });
                key.push(':');
            }
            (None, &[generation, ..]) => {
                push_hex(&mut key, generation);
                key.push(':');
            }
            _ => {}
        }
        if is_key_safe(self.logical) && key.len() + 2 + self.logical.len() <= MAX_KEY_LEN {
            key.push_str("k:");
            key.push_str(self.logical);
        } else {
            key.push_str(&format!("h:{:032x}", xxh3_128(self.logical.as_bytes())));
        }
        key
    }
}

/// Appends `n` in lowercase hex without leading zeros (`{:x}`).
fn push_hex(out: &mut String, n: u64) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        let nibble = ((n >> (i * 4)) & 0xf) as u32;
        out.push(char::from_digit(nibble, 16).unwrap_or('0'));
    }
}

/// The generation counter of the HTTP cache (one on each server).
pub(super) fn generation_key(prefix: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + 2);
    key.push_str(prefix);
    key.push_str("@g");
    key
}

/// The counter of one request path (one on each server holding its keys).
pub(super) fn path_counter_key(prefix: &str, path: &str) -> String {
    if is_key_safe(path) && prefix.len() + 3 + path.len() <= MAX_KEY_LEN {
        let mut key = String::with_capacity(prefix.len() + 3 + path.len());
        key.push_str(prefix);
        key.push_str("@p:");
        key.push_str(path);
        key
    } else {
        format!("{prefix}@q:{:032x}", xxh3_128(path.as_bytes()))
    }
}

/// A value for a counter that is created (first use, or after Memcached
/// evicted it): random, so it differs from every earlier value of the counter
/// and entries written under an evicted counter never become readable again.
/// The low 32 bits are zero so that path counters have room to count
/// exact-path clears without carrying into the high half.
pub(super) fn fresh_counter() -> u64 {
    // Keep 31 random bits in the high half: far from overflowing u64 however
    // many clears follow.
    (crate::random::unique_u64() & 0x7FFF_FFFF) << 32
}

/// Parses a counter as Memcached stores it (decimal, possibly padded with
/// spaces after a decrement).
pub(super) fn parse_counter(data: &[u8]) -> Option<u64> {
    parse_decimal(data.trim_ascii())
}

/// A decimal number of 1 to 20 ASCII digits that fits in a `u64` (what
/// Memcached writes for counters, flags and lengths).
pub(super) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

/// The Memcached `exptime` for a TTL: whole seconds rounded up (so a TTL is
/// never shortened by rounding), at most 30 days; `None` is 0 (no expiry) and
/// a zero TTL is -1 (expired at once, as the other backends treat it).
pub(super) fn exptime(ttl: Option<Duration>) -> i64 {
    match ttl {
        None => 0,
        Some(d) if d.is_zero() => -1,
        Some(d) => {
            let secs = d
                .as_secs()
                .saturating_add(u64::from(d.subsec_nanos() > 0))
                .min(MAX_RELATIVE_TTL_SECS);
            // At most 2_592_000, far inside i64.
            i64::try_from(secs).unwrap_or(0)
        }
    }
}

/// The head of a stored value, written before the caller's bytes:
/// `[u16 BE key length][logical key]`. Keeping the key lets reads detect a
/// hash collision of hashed keys, and lets a person reading the server's
/// items see what they are.
pub(super) fn envelope_head(logical: &str) -> Result<Vec<u8>, String> {
    let len = u16::try_from(logical.len()).map_err(|_| {
        format!(
            "memcached backend keys are limited to {} bytes, got {}",
            u16::MAX,
            logical.len()
        )
    })?;
    let mut head = Vec::with_capacity(2 + logical.len());
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(logical.as_bytes());
    Ok(head)
}

/// Unwraps a stored value: the value if the item has the envelope flags and
/// carries `logical` as its key, `None` for a foreign or colliding item.
pub(super) fn decode_envelope(logical: &str, flags: u32, data: &Bytes) -> Option<Bytes> {
    if flags != ENVELOPE_FLAGS {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*data.first()?, *data.get(1)?]));
    let stored_key = data.get(2..2 + len)?;
    (stored_key == logical.as_bytes()).then(|| data.slice(2 + len..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_written_as_format_writes_it() {
        for n in [
            0,
            1,
            0xf,
            0x10,
            0xabc,
            1 << 32,
            (0x7FFF_FFFF << 32) | 5,
            u64::MAX,
        ] {
            let mut out = String::new();
            push_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}"));
        }
    }

    #[test]
    fn ttl_rounds_up_and_clamps() {
        assert_eq!(exptime(None), 0);
        assert_eq!(exptime(Some(Duration::ZERO)), -1);
        assert_eq!(exptime(Some(Duration::from_nanos(1))), 1);
        assert_eq!(exptime(Some(Duration::from_millis(1200))), 2);
        assert_eq!(exptime(Some(Duration::from_secs(1))), 1);
        assert_eq!(exptime(Some(Duration::from_secs(60))), 60);
        let thirty_days = Duration::from_secs(MAX_RELATIVE_TTL_SECS);
        assert_eq!(exptime(Some(thirty_days)), 2_592_000);
        assert_eq!(
            exptime(Some(thirty_days + Duration::from_millis(1))),
            2_592_000
        );
        assert_eq!(exptime(Some(Duration::from_secs(365 * 86_400))), 2_592_000);
        assert_eq!(exptime(Some(Duration::MAX)), 2_592_000);
    }

    #[test]
    fn readable_keys_stay_readable() {
        let names = KeyNames::new("app:", "session:abc");
        assert!(names.counters().is_empty());
        assert_eq!(names.entry_key(&[]), "app:k:session:abc");
    }

    #[test]
    fn cache_keys_embed_the_path_counter() {
        let with_query = KeyNames::new("app:", "http:GET|||h|||/users|||page=2");
        let exact = KeyNames::new("app:", "http:GET|||h|||/users|||");
        assert_eq!(
            exact.counters(),
            vec!["app:@g".to_owned(), "app:@p:/users".to_owned()]
        );
        let counter = 0x5_0000_0003;
        assert_eq!(
            exact.entry_key(&[1, counter]),
            "app:1.500000003:k:http:GET|||h|||/users|||"
        );
        assert_eq!(
            with_query.entry_key(&[1, counter]),
            "app:1.5:k:http:GET|||h|||/users|||page=2"
        );
        // An exact-path clear (+1) changes the empty-query key only; a clear
        // with params (+2^32) changes both.
        assert_ne!(
            exact.entry_key(&[1, counter]),
            exact.entry_key(&[1, counter + 1])
        );
        assert_eq!(
            with_query.entry_key(&[1, counter]),
            with_query.entry_key(&[1, counter + 1])
        );
        assert_ne!(
            with_query.entry_key(&[1, counter]),
            with_query.entry_key(&[1, counter + PATH_ALL_STEP])
        );
    }

    #[test]
    fn unsafe_keys_are_hashed() {
        for logical in [
            "with space".to_owned(),
            "ctrl\u{1}".to_owned(),
            "unicodé".to_owned(),
            "x".repeat(300),
            format!("http:GET|||h|||/{}|||", "x".repeat(600)),
        ] {
            let key = KeyNames::new("p:", &logical).entry_key(&[7, 9]);
            assert!(key.len() <= MAX_KEY_LEN, "{key}");
            assert!(is_key_safe(&key), "{key}");
            assert!(key.contains(":h:"), "{key}");
        }
        let path = path_counter_key("p:", "/a b");
        assert!(path.starts_with("p:@q:") && is_key_safe(&path));
        // The longest prefix still leaves room.
        let prefix = "p".repeat(MAX_PREFIX_LEN);
        let key = KeyNames::new(&prefix, &format!("http:GET|||h|||/{}|||", "é".repeat(300)))
            .entry_key(&[u64::MAX, u64::MAX]);
        assert!(key.len() <= MAX_KEY_LEN);
        assert!(path_counter_key(&prefix, &"é".repeat(300)).len() <= MAX_KEY_LEN);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(validate_prefix("axum_cachex:").is_ok());
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("a b").is_err());
        assert!(validate_prefix("é").is_err());
        assert!(validate_prefix(&"a".repeat(MAX_PREFIX_LEN + 1)).is_err());
    }

    #[test]
    fn envelope_round_trips_and_detects_collisions() {
        let wrap = |key: &str, value: &[u8]| {
            let mut data = envelope_head(key).expect("head");
            data.extend_from_slice(value);
            Bytes::from(data)
        };
        let data = wrap("k", b"\0value\r\n");
        assert_eq!(
            decode_envelope("k", ENVELOPE_FLAGS, &data).as_deref(),
            Some(&b"\0value\r\n"[..])
        );
        assert_eq!(decode_envelope("other", ENVELOPE_FLAGS, &data), None);
        assert_eq!(decode_envelope("k", 0, &data), None);
        assert_eq!(decode_envelope("k", ENVELOPE_FLAGS, &Bytes::new()), None);
        assert_eq!(
            decode_envelope("k", ENVELOPE_FLAGS, &Bytes::from_static(&[0, 9, b'k'])),
            None
        );
        let empty = wrap("", b"");
        assert_eq!(
            decode_envelope("", ENVELOPE_FLAGS, &empty).as_deref(),
            Some(&b""[..])
        );
        assert!(envelope_head(&"k".repeat(70_000)).is_err());
    }

    #[test]
    fn counters() {
        assert_eq!(parse_counter(b"42"), Some(42));
        assert_eq!(parse_counter(b"42   "), Some(42));
        assert_eq!(parse_counter(b"x"), None);
        let (a, b) = (fresh_counter(), fresh_counter());
        assert_ne!(a, b);
        assert_eq!(a & 0xFFFF_FFFF, 0);
        assert!(a < (1 << 63));
    }
}
