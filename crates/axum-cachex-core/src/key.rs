use std::borrow::Cow;

/// Separator between the parts of the default cache key.
///
/// The parts are escaped (see [`CacheKey::encode`]) so that no part can
/// contain it: the key of one request can never equal the key of another.
pub const KEY_SEPARATOR: &str = "|||";

/// The namespace of the HTTP cache: every key it writes starts with it, so
/// clearing the cache never touches the sessions, states or application
/// values sharing a store.
pub const CACHE_NAMESPACE: &str = "http:";

/// The prefix of the variant part of a key (see [`CacheKey::variant`]).
const VARIANT_PREFIX: &str = "~";

/// The parts of a cache key in the default format
/// `{method}|||{host}|||{path}|||{query}`, optionally followed by
/// `|||~{variant}` for one stored variant of a response with `Vary`.
///
/// Method, path and query are stored escaped: `%` as `%25` and `|` as
/// `%7C`, so that the separator never occurs inside a part and the format
/// is injective. The host is validated and lowercased by the HTTP layer
/// before it gets here.
///
/// The HTTP cache stores every key under [`CACHE_NAMESPACE`]; it and the
/// stores with a [`PathInvalidation`](crate::PathInvalidation) fast path
/// parse stored keys with [`CacheKey::parse_stored`] to invalidate by path.
/// Keys made by a custom key builder in another format do not parse and are
/// left alone by path and pattern invalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey<'a> {
    /// The request method, e.g. `GET` (escaped).
    pub method: &'a str,
    /// The normalised host (`host[:port]`, lowercase), empty when the
    /// request named none.
    pub host: &'a str,
    /// The request path (escaped).
    pub path: &'a str,
    /// The raw query string (escaped), empty when none.
    pub query: &'a str,
    /// Which stored variant of a response with `Vary` this key holds;
    /// empty for the base key.
    pub variant: &'a str,
}

impl<'a> CacheKey<'a> {
    /// Parses a key in the default format; `None` for any other shape.
    pub fn parse(key: &'a str) -> Option<Self> {
        let mut parts = key.split(KEY_SEPARATOR);
        let method = parts.next()?;
        let host = parts.next()?;
        let path = parts.next()?;
        let query = parts.next()?;
        let variant = match parts.next() {
            None => "",
            // An empty variant is not one the HTTP layer writes, and
            // `Display` could not give the key back: not this format.
            Some(v) => v.strip_prefix(VARIANT_PREFIX).filter(|v| !v.is_empty())?,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            method,
            host,
            path,
            query,
            variant,
        })
    }

    /// Parses a key as the HTTP cache stores it: [`CACHE_NAMESPACE`]
    /// followed by the default format. `None` for any other key, including
    /// the keys of sessions and states.
    pub fn parse_stored(key: &'a str) -> Option<Self> {
        Self::parse(key.strip_prefix(CACHE_NAMESPACE)?)
    }

    /// The key of a request: each part escaped, joined by
    /// [`KEY_SEPARATOR`]. `host` must already be normalised.
    pub fn encode(method: &str, host: &str, path: &str, query: &str) -> String {
        encode_after("", method, host, path, query)
    }

    /// [`encode`](Self::encode) under [`CACHE_NAMESPACE`]: the key the HTTP
    /// cache stores a request's response under.
    pub fn encode_stored(method: &str, host: &str, path: &str, query: &str) -> String {
        encode_after(CACHE_NAMESPACE, method, host, path, query)
    }

    /// The key of one variant of the response stored under `base`.
    /// `variant` must not contain the separator (the HTTP layer uses hex).
    pub fn variant_key(base: &str, variant: &str) -> String {
        let mut key = String::with_capacity(base.len() + 4 + variant.len());
        key.push_str(base);
        key.push_str(KEY_SEPARATOR);
        key.push_str(VARIANT_PREFIX);
        key.push_str(variant);
        key
    }

    /// The request method, unescaped.
    pub fn decoded_method(&self) -> Cow<'a, str> {
        unescape(self.method)
    }

    /// The request path, unescaped.
    pub fn decoded_path(&self) -> Cow<'a, str> {
        unescape(self.path)
    }

    /// The raw query string as the request sent it (unescaped; still
    /// percent-encoded as in the URL).
    pub fn decoded_query(&self) -> Cow<'a, str> {
        unescape(self.query)
    }

    /// Whether this key belongs to `path` (as the request sent it,
    /// unescaped): the exact path, and with `include_params` false only the
    /// entry without a query string.
    pub fn is_for_path(&self, path: &str, include_params: bool) -> bool {
        self.path == escape(path) && (include_params || self.query.is_empty())
    }
}

impl std::fmt::Display for CacheKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = KEY_SEPARATOR;
        write!(
            f,
            "{}{s}{}{s}{}{s}{}",
            self.method, self.host, self.path, self.query
        )?;
        if !self.variant.is_empty() {
            write!(f, "{s}{VARIANT_PREFIX}{}", self.variant)?;
        }
        Ok(())
    }
}

/// `%` → `%25`, `|` → `%7C`; borrowed when there is nothing to escape
/// (the common case).
/// `head` followed by the escaped parts, in one allocation (the hit path
/// builds a key per request).
fn encode_after(head: &str, method: &str, host: &str, path: &str, query: &str) -> String {
    let (method, path, query) = (escape(method), escape(path), escape(query));
    let mut key = String::with_capacity(
        head.len() + method.len() + host.len() + path.len() + query.len() + 3 * KEY_SEPARATOR.len(),
    );
    key.push_str(head);
    for (i, part) in [&*method, host, &*path, &*query].into_iter().enumerate() {
        if i > 0 {
            key.push_str(KEY_SEPARATOR);
        }
        key.push_str(part);
    }
    key
}

fn escape(part: &str) -> Cow<'_, str> {
    // A byte scan: both characters are ASCII, and keys are built on every
    // request.
    if !part.bytes().any(|b| b == b'%' || b == b'|') {
        return Cow::Borrowed(part);
    }
    let mut out = String::with_capacity(part.len() + 8);
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The inverse of [`escape`].
fn unescape(part: &str) -> Cow<'_, str> {
    if !part.contains('%') {
        return Cow::Borrowed(part);
    }
    Cow::Owned(part.replace("%7C", "|").replace("%25", "%"))
}

/// Matches a request path against a glob pattern: `*` matches any run of
/// characters (including `/`, as in Redis `MATCH`), `?` one character, and
/// `[abc]` / `[a-z]` / `[!a]` a character class. `\` escapes the next
/// character.
///
/// Every backend uses this one function so that `clear_pattern` means the
/// same thing everywhere.
pub fn path_matches_glob(pattern: &str, path: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = path.chars().collect();
    // Iterative matcher with single-star backtracking: linear in practice,
    // never recursive, so a hostile pattern cannot blow the stack.
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = match_class(&p, pi, s[si]) {
                        if matched {
                            pi = next;
                            si += 1;
                            continue;
                        }
                    } else if s[si] == '[' {
                        // An unclosed `[` is a literal.
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == s[si] {
                        pi += 2;
                        si += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[si] {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((star_pi, star_si)) => {
                pi = star_pi + 1;
                si = star_si + 1;
                star = Some((star_pi, star_si + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`. Returns
/// whether it matched and the index after the class, or `None` when the
/// class is not closed.
fn match_class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < p.len() && (p[i] == '!' || p[i] == '^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_injective() {
        // `|` in a part can never shift the boundaries between parts.
        let a = CacheKey::encode("GET", "h", "/a|||b", "");
        let b = CacheKey::encode("GET", "h", "/a", "b");
        assert_ne!(a, b);
        assert_ne!(
            CacheKey::encode("GET", "h", "/a%7Cb", ""),
            CacheKey::encode("GET", "h", "/a|b", "")
        );
        let k = CacheKey::encode("GET", "h", "/a|b%", "q=|");
        let parsed = CacheKey::parse(&k).expect("parse");
        assert_eq!(parsed.decoded_path(), "/a|b%");
        assert!(parsed.is_for_path("/a|b%", true));
        assert!(!parsed.is_for_path("/a|b%", false));
        let v = CacheKey::variant_key(&k, "00ff");
        let parsed = CacheKey::parse(&v).expect("variant parses");
        assert_eq!(parsed.variant, "00ff");
        assert_eq!(parsed.to_string(), v);
        assert!(CacheKey::parse(&format!("{v}|||x")).is_none());
    }

    #[test]
    fn parses_default_keys() {
        let k = CacheKey::parse("GET|||example.com:8080|||/users/1|||a=1&b=2").expect("parse");
        assert_eq!(k.method, "GET");
        assert_eq!(k.host, "example.com:8080");
        assert_eq!(k.path, "/users/1");
        assert_eq!(k.query, "a=1&b=2");
        assert_eq!(k.to_string(), "GET|||example.com:8080|||/users/1|||a=1&b=2");
        assert!(CacheKey::parse("session:abc").is_none());
        // Five parts need the variant marker.
        assert!(CacheKey::parse("GET|||h|||/p|||x=|||").is_none());
    }

    #[test]
    fn path_filter() {
        let k = CacheKey::parse("GET|||h|||/p|||a=1").expect("parse");
        assert!(k.is_for_path("/p", true));
        assert!(!k.is_for_path("/p", false));
        assert!(!k.is_for_path("/q", true));
        let k = CacheKey::parse("GET|||h|||/p|||").expect("parse");
        assert!(k.is_for_path("/p", false));
    }

    #[test]
    fn globs() {
        assert!(path_matches_glob("/users/*", "/users/1"));
        assert!(path_matches_glob("/users/*", "/users/1/posts"));
        assert!(!path_matches_glob("/users/*", "/user"));
        assert!(path_matches_glob("/u?ers", "/users"));
        assert!(path_matches_glob("/[a-c]at", "/bat"));
        assert!(!path_matches_glob("/[!a-c]at", "/bat"));
        assert!(path_matches_glob("*", ""));
        assert!(path_matches_glob("/a*b*c", "/aXXbYYc"));
        assert!(!path_matches_glob("/a*b*c", "/aXXbYY"));
        assert!(path_matches_glob("/\\*", "/*"));
        assert!(!path_matches_glob("/\\*", "/x"));
        assert!(path_matches_glob("/[x", "/[x"));
        // Pathological pattern finishes quickly.
        let long = "a".repeat(5000);
        assert!(!path_matches_glob("*a*a*a*a*a*a*b", &long));
    }

    /// Found by the `cache_key` property (`Display` inverts `parse`): a
    /// key ending in `|||~` parsed as a base key with an empty variant, and
    /// printing it back dropped the `|||~`, so the listing's base key and
    /// the stored key differed.
    #[test]
    fn an_empty_variant_is_not_this_format() {
        assert!(CacheKey::parse("GET|||h|||/p|||q|||~").is_none());
        assert!(CacheKey::parse_stored("http:GET|||h|||/p|||q|||~").is_none());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        use crate::fixed_seed::config;

        /// Text rich in the characters the format treats specially.
        const PART: &str = "[a-zA-Z0-9|%~7Cc25/?=&. -]{0,12}";

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn parts_round_trip(
                method in PART,
                host in "[a-z0-9.:-]{0,12}",
                path in PART,
                query in PART,
                variant in proptest::option::of("[0-9a-f]{1,8}"),
            ) {
                let base = CacheKey::encode_stored(&method, &host, &path, &query);
                let key = match &variant {
                    Some(v) => CacheKey::variant_key(&base, v),
                    None => base.clone(),
                };
                let parsed = CacheKey::parse_stored(&key).expect("an encoded key parses");
                prop_assert_eq!(parsed.decoded_method(), method.as_str());
                prop_assert_eq!(parsed.host, host.as_str());
                prop_assert_eq!(parsed.decoded_path(), path.as_str());
                prop_assert_eq!(parsed.decoded_query(), query.as_str());
                prop_assert_eq!(parsed.variant, variant.as_deref().unwrap_or(""));
                prop_assert!(parsed.is_for_path(&path, true));
                prop_assert_eq!(format!("{CACHE_NAMESPACE}{parsed}"), key);
                // Injective: other parts give another key.
                let other = CacheKey::encode_stored(&method, &host, &format!("{path}|"), &query);
                prop_assert_ne!(other, base);
            }

            #[test]
            fn parse_is_inverted_by_display(text in "[a-z|~%]{0,24}") {
                if let Some(key) = CacheKey::parse(&text) {
                    prop_assert_eq!(key.to_string(), text);
                }
            }

            #[test]
            fn globs_never_panic(pattern in "[a-c*?\\[\\]!^\\\\-]{0,12}", path in "[a-c\\[\\]*-]{0,16}") {
                let _ = path_matches_glob(&pattern, &path);
                prop_assert!(path_matches_glob("*", &path));
                prop_assert!(path_matches_glob(&path.replace(['*', '?', '[', ']', '\\'], "?"), &path));
            }
        }
    }
}
