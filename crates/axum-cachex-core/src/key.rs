/// Separator between the parts of the default cache key.
///
/// Three pipes, because hosts contain `:` and paths contain `/`.
pub const KEY_SEPARATOR: &str = "|||";

/// The parts of a cache key in the default format
/// `{method}|||{host}|||{path}|||{query}`.
///
/// Backends parse keys with it to implement
/// [`Backend::clear_path`](crate::Backend::clear_path) and
/// [`Backend::clear_pattern`](crate::Backend::clear_pattern); keys made by a
/// custom key builder in another format do not parse and are left alone by
/// those two operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey<'a> {
    /// The request method, e.g. `GET`.
    pub method: &'a str,
    /// The `Host` header, or `unknown`.
    pub host: &'a str,
    /// The request path.
    pub path: &'a str,
    /// The raw query string, empty when none.
    pub query: &'a str,
}

impl<'a> CacheKey<'a> {
    /// Parses a key in the default format; `None` for any other shape.
    pub fn parse(key: &'a str) -> Option<Self> {
        let mut parts = key.splitn(4, KEY_SEPARATOR);
        let method = parts.next()?;
        let host = parts.next()?;
        let path = parts.next()?;
        let query = parts.next()?;
        Some(Self {
            method,
            host,
            path,
            query,
        })
    }

    /// Whether this key belongs to `path`: the exact path, and with
    /// `include_params` false only the entry without a query string.
    pub fn is_for_path(&self, path: &str, include_params: bool) -> bool {
        self.path == path && (include_params || self.query.is_empty())
    }
}

impl std::fmt::Display for CacheKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = KEY_SEPARATOR;
        write!(
            f,
            "{}{s}{}{s}{}{s}{}",
            self.method, self.host, self.path, self.query
        )
    }
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
    fn parses_default_keys() {
        let k = CacheKey::parse("GET|||example.com:8080|||/users/1|||a=1&b=2").expect("parse");
        assert_eq!(k.method, "GET");
        assert_eq!(k.host, "example.com:8080");
        assert_eq!(k.path, "/users/1");
        assert_eq!(k.query, "a=1&b=2");
        assert_eq!(k.to_string(), "GET|||example.com:8080|||/users/1|||a=1&b=2");
        assert!(CacheKey::parse("session:abc").is_none());
        // A query containing the separator stays in the query part.
        let k = CacheKey::parse("GET|||h|||/p|||x=|||").expect("parse");
        assert_eq!(k.query, "x=|||");
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
}
