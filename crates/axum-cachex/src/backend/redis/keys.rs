//! Where each logical key lives in Redis: the prefix, and on Cluster the
//! hash tag that keeps keys which must move together in one slot.
//!
//! Standalone: `{prefix}{key}`, and the path index `{prefix}__path_index:{path}`.
//!
//! Cluster: `{prefix}{{tag}}{key}` and `{prefix}__path_index:{{tag}}{path}`,
//! where `tag` is four hex digits of the CRC16 of the entry's *path* for an
//! HTTP cache key (so an entry, its `Vary` variants, its cross-instance lock
//! and its path index share a slot: the indexing script and the atomic
//! path invalidation touch them together), and of the whole key for any
//! other key (sessions, states, application values: spread over the
//! cluster). Redis hashes only the first `{…}` of a key, so a prefix that
//! carries its own hash tag (`{shop}:`) pins everything to one slot, which
//! is also correct.

use axum_cachex_core::{BackendError, CacheKey};

/// Marker after the prefix of the per-path index keys. Logical keys starting
/// with it are reserved.
pub(super) const PATH_INDEX_MARKER: &str = "__path_index:";

/// Length of `{tag}`: braces and four hex digits.
const TAG_LEN: usize = 6;

/// Why a prefix cannot be used on a Cluster, if it cannot: Redis hashes
/// the first `{…}` of a key, so a prefix must either contain no brace, or
/// begin a complete non-empty hash tag of its own (`{shop}:`, which pins
/// every key to one slot). An unclosed `{` would swallow the backend's tag
/// into a tag that differs between an entry and its index, and an empty
/// `{}` makes Redis hash whole keys: either way an entry and its index
/// would land in different slots and every write would fail.
pub(super) fn cluster_prefix_problem(prefix: &str) -> Option<&'static str> {
    // A `}` before any `{` does not matter: Redis looks for a `{` first.
    let open = prefix.find('{')?;
    match prefix[open + 1..].find('}') {
        None => Some("an unclosed `{`"),
        Some(0) => Some("an empty hash tag `{}`"),
        Some(_) => None,
    }
}

/// The key layout of one backend.
#[derive(Debug)]
pub(super) struct KeyLayout {
    prefix: String,
    index_prefix: String,
    tagged: bool,
}

impl KeyLayout {
    /// `tagged`: the Cluster layout.
    pub(super) fn new(prefix: String, tagged: bool) -> Self {
        Self {
            index_prefix: format!("{prefix}{PATH_INDEX_MARKER}"),
            prefix,
            tagged,
        }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of a logical key.
    pub(super) fn data_key(&self, key: &str) -> Result<String, BackendError> {
        if key.starts_with(PATH_INDEX_MARKER) {
            return Err(BackendError::InvalidInput(format!(
                "keys starting with `{PATH_INDEX_MARKER}` are reserved by the Redis backend"
            )));
        }
        if !self.tagged {
            return Ok(concat(&[&self.prefix, key]));
        }
        let tag = match CacheKey::parse_stored(key) {
            Some(http) => tag(http.decoded_path().as_bytes()),
            None => tag(key.as_bytes()),
        };
        Ok(concat(&[&self.prefix, &tag, key]))
    }

    /// The Redis key of a path's index.
    pub(super) fn index_key(&self, path: &str) -> String {
        if self.tagged {
            format!("{}{}{path}", self.index_prefix, tag(path.as_bytes()))
        } else {
            format!("{}{path}", self.index_prefix)
        }
    }

    pub(super) fn is_index_key(&self, raw: &[u8]) -> bool {
        raw.starts_with(self.index_prefix.as_bytes())
    }

    /// The logical key of a scanned data key (`None` for index keys and for
    /// keys this backend never writes: not UTF-8, or without the tag).
    pub(super) fn logical<'a>(&self, raw: &'a [u8]) -> Option<&'a str> {
        if self.is_index_key(raw) {
            return None;
        }
        let mut rest = raw.get(self.prefix.len()..)?;
        if self.tagged {
            let (tag, key) = rest.split_at_checked(TAG_LEN)?;
            if tag.first() != Some(&b'{') || tag.last() != Some(&b'}') {
                return None;
            }
            rest = key;
        }
        std::str::from_utf8(rest).ok()
    }

    /// The `SCAN MATCH` pattern of the data keys whose logical keys start
    /// with `logical_prefix`; with an empty one, of every key of the
    /// backend, index keys included.
    pub(super) fn scan_pattern(&self, logical_prefix: &str) -> String {
        let prefix = escape_glob(&self.prefix);
        if logical_prefix.is_empty() {
            return format!("{prefix}*");
        }
        let tag = if self.tagged { "{????}" } else { "" };
        format!("{prefix}{tag}{}*", escape_glob(logical_prefix))
    }

    /// The `SCAN MATCH` pattern of every path index key.
    pub(super) fn index_pattern(&self) -> String {
        format!("{}*", escape_glob(&self.index_prefix))
    }
}

/// `{xxxx}`: the hash tag of `s`, four hex digits of its CRC16 (the same
/// function Redis slots keys with; any stable hash would do).
fn tag(s: &[u8]) -> String {
    let hash = slot_hash(s);
    let mut tag = String::with_capacity(6);
    tag.push('{');
    for shift in [12, 8, 4, 0] {
        let digit = u32::from((hash >> shift) & 0xf);
        tag.push(char::from_digit(digit, 16).unwrap_or('0'));
    }
    tag.push('}');
    tag
}

/// `parts` end to end, in one allocation of the exact size: keys are built
/// on every call, where `format!` costs more than the copy.
fn concat(parts: &[&str]) -> String {
    let mut joined = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        joined.push_str(part);
    }
    joined
}

/// CRC16/XMODEM, Redis Cluster's key hash.
pub(super) fn slot_hash(s: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(s)
}

/// The Cluster slot of a Redis key: the hash of its first non-empty
/// `{…}`, else of the whole key, modulo 16384.
pub(super) fn slot_of(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    slot_hash(hashed) % 16384
}

/// Escapes the glob characters of Redis `MATCH` so that a prefix matches
/// itself only.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_match_patterns() {
        assert_eq!(escape_glob("a*b?c[d]e\\"), "a\\*b\\?c\\[d\\]e\\\\");
        assert_eq!(escape_glob("plain:"), "plain:");
    }

    #[test]
    fn tags_are_four_lowercase_hex_digits_in_braces() {
        for s in [&b""[..], b"/", b"/a b", b"123456789", b"\xff"] {
            assert_eq!(tag(s), format!("{{{:04x}}}", slot_hash(s)));
        }
    }

    #[test]
    fn slots_follow_the_redis_rules() {
        // Values from the Redis Cluster specification.
        assert_eq!(slot_hash(b"123456789"), 0x31c3);
        assert_eq!(
            slot_of(b"{user1000}.following"),
            slot_of(b"{user1000}.followers")
        );
        assert_eq!(slot_of(b"foo{}{bar}"), slot_hash(b"foo{}{bar}") % 16384);
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_hash(b"{bar") % 16384);
        assert_eq!(slot_of(b"foo{bar}{zap}"), slot_hash(b"bar") % 16384);
    }

    #[test]
    fn cluster_keys_of_one_path_share_a_slot_and_round_trip() {
        let layout = KeyLayout::new("app:".into(), true);
        let entry = CacheKey::encode_stored("GET", "h", "/a b", "x=1");
        let variant = CacheKey::variant_key(&entry, "ab12");
        let lock = entry.replacen("http:", "http:lock:", 1);
        let slot = slot_of(layout.index_key("/a b").as_bytes());
        for key in [&entry, &variant, &lock] {
            let raw = layout.data_key(key).expect("key");
            assert_eq!(slot_of(raw.as_bytes()), slot, "{raw}");
            assert_eq!(layout.logical(raw.as_bytes()), Some(key.as_str()));
        }
        let other = layout.data_key("session:abc").expect("key");
        assert_eq!(layout.logical(other.as_bytes()), Some("session:abc"));
        assert!(layout.logical(b"app:untagged").is_none());
        assert!(
            layout
                .logical(layout.index_key("/a b").as_bytes())
                .is_none()
        );
    }

    #[test]
    fn cluster_prefixes_keep_an_entry_and_its_index_in_one_slot() {
        for ok in ["app:", "{shop}:", "a{b}c{", "x{t}}", "a}b"] {
            assert_eq!(cluster_prefix_problem(ok), None, "{ok}");
            let layout = KeyLayout::new(ok.into(), true);
            let entry = CacheKey::encode_stored("GET", "h", "/p", "");
            let raw = layout.data_key(&entry).expect("key");
            assert_eq!(
                slot_of(raw.as_bytes()),
                slot_of(layout.index_key("/p").as_bytes()),
                "{ok}"
            );
        }
        for bad in ["shop{", "app{}:", "{}x{y}"] {
            assert!(cluster_prefix_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn index_keys_are_recognised_and_reserved() {
        for tagged in [false, true] {
            let layout = KeyLayout::new("p:".into(), tagged);
            assert!(layout.is_index_key(layout.index_key("/x").as_bytes()));
            assert!(!layout.is_index_key(layout.data_key("x").expect("key").as_bytes()));
            assert!(layout.data_key("__path_index:/x").is_err());
        }
    }
}
