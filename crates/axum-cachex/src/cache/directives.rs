//! Reading `Cache-Control` (RFC 9111 §5.2) and response freshness
//! (RFC 9111 §4.2).
//!
//! The parser works on the raw bytes of every field line, so a line with
//! non-UTF-8 (`obs-text`) bytes still yields its other directives. It
//! follows the list syntax of RFC 9110 §5.6: elements split on commas outside
//! quoted strings, empty elements ignored, optional whitespace dropped,
//! arguments as tokens or quoted strings (with `\` quoted-pairs).
//!
//! Invalid input is read conservatively: a malformed or conflicting
//! `max-age` / `s-maxage` makes the response stale (`Some(0)`), and a
//! malformed element still counts for the directives that only restrict
//! caching (`no-store`, `private`, `no-cache`, ...), but not for those that
//! relax it (`public`, `immutable`, `must-understand`).

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::header::{CACHE_CONTROL, DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The greatest delta-seconds value kept (RFC 9111 §1.2.2): larger values,
/// including ones that overflow, are capped here.
const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// Parsed Cache-Control directives (request or response), from all field lines combined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    /// `no-store`.
    pub(crate) no_store: bool,
    /// `no-cache` with or without a field-name list (qualified no-cache is treated like the unqualified form: revalidate before every reuse).
    pub(crate) no_cache: bool,
    /// `private`, qualified or not (a shared cache never stores it).
    pub(crate) private: bool,
    /// `public` (only from a well-formed element).
    pub(crate) public: bool,
    /// `must-revalidate`.
    pub(crate) must_revalidate: bool,
    /// `proxy-revalidate`.
    pub(crate) proxy_revalidate: bool,
    /// `must-understand` (only from a well-formed element).
    pub(crate) must_understand: bool,
    /// `immutable` (RFC 8246; only from a well-formed element).
    pub(crate) immutable: bool,
    /// `only-if-cached` (request).
    pub(crate) only_if_cached: bool,
    /// `max-age` in seconds; `Some(0)` when invalid or given twice with different values.
    pub(crate) max_age: Option<u64>,
    /// `s-maxage` in seconds; `Some(0)` when invalid or given twice with different values.
    pub(crate) s_maxage: Option<u64>,
    /// `stale-while-revalidate` (RFC 5861) in seconds; invalid values are ignored, the lowest valid one wins.
    pub(crate) stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861) in seconds; invalid values are ignored, the lowest valid one wins.
    pub(crate) stale_if_error: Option<u64>,
    /// `min-fresh` (request) in seconds; invalid values are ignored, the highest valid one wins.
    pub(crate) min_fresh: Option<u64>,
    /// `max-stale` present: `Some(None)` without a value, `Some(Some(n))` with one.
    pub(crate) max_stale: Option<Option<u64>>,
}

impl Directives {
    /// Parses every `Cache-Control` field line of `headers` (as one combined list).
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_header(headers, &CACHE_CONTROL)
    }

    /// Same for any header name (used for e.g. `CDN-Cache-Control` later).
    pub(crate) fn from_header(headers: &HeaderMap, name: &HeaderName) -> Self {
        Self::parse(headers.get_all(name).iter().map(HeaderValue::as_bytes))
    }

    /// Parses one or more raw field values.
    pub(crate) fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut directives = Self::default();
        for element in values.into_iter().flat_map(Elements::new) {
            if let Some(name) = Name::lookup(element.name) {
                directives.apply(name, &element.arg);
            }
        }
        directives
    }

    /// Records one known directive.
    fn apply(&mut self, name: Name, arg: &Arg<'_>) {
        let well_formed = !matches!(arg, Arg::Malformed);
        match name {
            Name::NoStore => self.no_store = true,
            Name::NoCache => self.no_cache = true,
            Name::Private => self.private = true,
            Name::Public => self.public |= well_formed,
            Name::MustRevalidate => self.must_revalidate = true,
            Name::ProxyRevalidate => self.proxy_revalidate = true,
            Name::MustUnderstand => self.must_understand |= well_formed,
            Name::Immutable => self.immutable |= well_formed,
            Name::OnlyIfCached => self.only_if_cached = true,
            Name::MaxAge => merge_strict(&mut self.max_age, arg.delta().unwrap_or(0)),
            Name::SMaxage => merge_strict(&mut self.s_maxage, arg.delta().unwrap_or(0)),
            Name::StaleWhileRevalidate => merge_min(&mut self.stale_while_revalidate, arg.delta()),
            Name::StaleIfError => merge_min(&mut self.stale_if_error, arg.delta()),
            Name::MinFresh => merge_max(&mut self.min_fresh, arg.delta()),
            Name::MaxStale => self.apply_max_stale(arg),
        }
    }

    /// Records `max-stale`: without a value any staleness is accepted, with
    /// one the lowest given wins; an invalid value is ignored.
    fn apply_max_stale(&mut self, arg: &Arg<'_>) {
        let limit = match arg {
            Arg::Absent => None,
            _ => match arg.delta() {
                Some(seconds) => Some(seconds),
                None => return,
            },
        };
        self.max_stale = match (self.max_stale, limit) {
            (Some(Some(old)), Some(new)) => Some(Some(old.min(new))),
            (Some(Some(old)), None) => Some(Some(old)),
            (_, limit) => Some(limit),
        };
    }
}

/// A duplicate with a different value makes the directive invalid: stale.
fn merge_strict(slot: &mut Option<u64>, value: u64) {
    *slot = match *slot {
        Some(old) if old != value => Some(0),
        _ => Some(value),
    };
}

/// Keeps the lowest valid value.
fn merge_min(slot: &mut Option<u64>, value: Option<u64>) {
    if let Some(value) = value {
        *slot = Some(slot.map_or(value, |old| old.min(value)));
    }
}

/// Keeps the highest valid value.
fn merge_max(slot: &mut Option<u64>, value: Option<u64>) {
    if let Some(value) = value {
        *slot = Some(slot.map_or(value, |old| old.max(value)));
    }
}

/// The freshness lifetime a shared cache gives a response (RFC 9111 §4.2.1): `s-maxage`, else `max-age`, else `Expires` − `Date` (Date missing → use `now`), else None. An invalid `Expires` (unparseable date, or multiple Expires lines that disagree) means already expired: `Some(Duration::ZERO)`.
pub(crate) fn response_lifetime(
    d: &Directives,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(seconds) = d.s_maxage.or(d.max_age) {
        return Some(Duration::from_secs(seconds));
    }
    match field_date(headers, &EXPIRES) {
        FieldDate::Absent => None,
        FieldDate::Invalid => Some(Duration::ZERO),
        FieldDate::Valid(expires) => {
            let date = field_date(headers, &DATE).valid().unwrap_or(now);
            Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
        }
    }
}

/// Heuristic freshness (RFC 9111 §4.2.2): 10 % of (Date or now) − Last-Modified, capped at `cap`, when Last-Modified is present and earlier; None otherwise.
pub(crate) fn heuristic_lifetime(
    headers: &HeaderMap,
    now: SystemTime,
    cap: Duration,
) -> Option<Duration> {
    let last_modified = field_date(headers, &LAST_MODIFIED).valid()?;
    let date = field_date(headers, &DATE).valid().unwrap_or(now);
    let age = date.duration_since(last_modified).ok()?;
    (!age.is_zero()).then(|| (age / 10).min(cap))
}

/// An HTTP-date header (`Expires`, `Date`, `Last-Modified`) across all of its
/// field lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldDate {
    /// No field line.
    Absent,
    /// Every line parses to this same instant.
    Valid(SystemTime),
    /// A line does not parse, or the lines disagree.
    Invalid,
}

impl FieldDate {
    /// The instant, if valid.
    fn valid(self) -> Option<SystemTime> {
        match self {
            Self::Valid(time) => Some(time),
            Self::Absent | Self::Invalid => None,
        }
    }
}

/// Reads the HTTP-date header `name` from `headers`.
fn field_date(headers: &HeaderMap, name: &HeaderName) -> FieldDate {
    let mut found = FieldDate::Absent;
    for value in headers.get_all(name) {
        found = match (found, parse_date(value)) {
            (_, None) => return FieldDate::Invalid,
            (FieldDate::Valid(old), Some(new)) if old != new => return FieldDate::Invalid,
            (_, Some(new)) => FieldDate::Valid(new),
        };
    }
    found
}

/// Parses one field line as an HTTP-date (RFC 9110 §5.6.7).
fn parse_date(value: &HeaderValue) -> Option<SystemTime> {
    let text = std::str::from_utf8(value.as_bytes()).ok()?;
    httpdate::parse_http_date(text.trim_matches([' ', '\t'])).ok()
}

/// The directives this cache acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    /// `no-store`.
    NoStore,
    /// `no-cache`.
    NoCache,
    /// `private`.
    Private,
    /// `public`.
    Public,
    /// `must-revalidate`.
    MustRevalidate,
    /// `proxy-revalidate`.
    ProxyRevalidate,
    /// `must-understand`.
    MustUnderstand,
    /// `immutable`.
    Immutable,
    /// `only-if-cached`.
    OnlyIfCached,
    /// `max-age`.
    MaxAge,
    /// `s-maxage`.
    SMaxage,
    /// `stale-while-revalidate`.
    StaleWhileRevalidate,
    /// `stale-if-error`.
    StaleIfError,
    /// `min-fresh`.
    MinFresh,
    /// `max-stale`.
    MaxStale,
}

impl Name {
    /// Every known directive with its (lowercase) name.
    const ALL: [(&'static [u8], Self); 15] = [
        (b"no-store", Self::NoStore),
        (b"no-cache", Self::NoCache),
        (b"private", Self::Private),
        (b"public", Self::Public),
        (b"must-revalidate", Self::MustRevalidate),
        (b"proxy-revalidate", Self::ProxyRevalidate),
        (b"must-understand", Self::MustUnderstand),
        (b"immutable", Self::Immutable),
        (b"only-if-cached", Self::OnlyIfCached),
        (b"max-age", Self::MaxAge),
        (b"s-maxage", Self::SMaxage),
        (b"stale-while-revalidate", Self::StaleWhileRevalidate),
        (b"stale-if-error", Self::StaleIfError),
        (b"min-fresh", Self::MinFresh),
        (b"max-stale", Self::MaxStale),
    ];

    /// The known directive called `name` (case-insensitive), if any.
    fn lookup(name: &[u8]) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|&(_, directive)| directive)
    }
}

/// A directive's argument as written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg<'a> {
    /// No `=`.
    Absent,
    /// A token, or a quoted string with its quoted-pairs resolved.
    Value(Cow<'a, [u8]>),
    /// Empty after `=`, an unterminated or invalid quoted string, or
    /// anything else before the next comma.
    Malformed,
}

impl Arg<'_> {
    /// The argument as delta-seconds (RFC 9111 §1.2.2), if it is one.
    fn delta(&self) -> Option<u64> {
        match self {
            Self::Value(text) => delta_seconds(text),
            Self::Absent | Self::Malformed => None,
        }
    }
}

/// Parses `1*DIGIT`, saturating at [`DELTA_SECONDS_MAX`].
fn delta_seconds(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = text.iter().fold(0u64, |value, digit| {
        value
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    });
    Some(value.min(DELTA_SECONDS_MAX))
}

/// One list element: `token [ "=" ( token / quoted-string ) ]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Element<'a> {
    /// The directive name as written (compare case-insensitively).
    name: &'a [u8],
    /// Its argument.
    arg: Arg<'a>,
}

/// The elements of one field line (RFC 9110 §5.6.1), skipping empty ones and
/// ones that do not start with a token.
struct Elements<'a> {
    /// The field line.
    bytes: &'a [u8],
    /// The next byte to read.
    pos: usize,
}

impl<'a> Elements<'a> {
    /// Starts reading `bytes`.
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// The next byte, without consuming it.
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Consumes and returns the next byte.
    fn bump(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    /// Consumes `byte` if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    /// Consumes the bytes matching `accept` and returns them.
    fn take(&mut self, accept: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&accept) {
            self.pos += 1;
        }
        &self.bytes[start..self.pos]
    }

    /// Whether the element ends here (end of line or a comma).
    fn at_element_end(&self) -> bool {
        matches!(self.peek(), None | Some(b','))
    }

    /// Reads what follows a directive name: `OWS [ "=" OWS value ] OWS`, then
    /// expects the element to end.
    fn argument(&mut self) -> Arg<'a> {
        self.take(is_ows);
        let mut value_start = None;
        let arg = if self.eat(b'=') {
            self.take(is_ows);
            value_start = Some(self.pos);
            self.value()
        } else {
            Arg::Absent
        };
        self.take(is_ows);
        if self.at_element_end() {
            return arg;
        }
        // Junk after the value: the element is malformed, and so may be the
        // quoting that made the value. Read on from just inside the value
        // up to the next comma, so that a directive a quoted string only
        // seemed to enclose still counts (`b="x, private"junk`).
        if let Some(start) = value_start {
            self.pos = start + 1;
        }
        self.skip_element();
        Arg::Malformed
    }

    /// Reads a token or a quoted string.
    fn value(&mut self) -> Arg<'a> {
        if self.peek() == Some(b'"') {
            return self.quoted_string();
        }
        match self.take(is_tchar) {
            [] => Arg::Malformed,
            token => Arg::Value(Cow::Borrowed(token)),
        }
    }

    /// Reads a quoted string (RFC 9110 §5.6.4), resolving quoted-pairs.
    fn quoted_string(&mut self) -> Arg<'a> {
        self.pos += 1;
        let opened = self.pos;
        let mut text = Vec::new();
        let mut valid = true;
        while let Some(byte) = self.bump() {
            let byte = match byte {
                b'"' if valid => return Arg::Value(Cow::Owned(text)),
                b'"' => return Arg::Malformed,
                b'\\' => match self.bump() {
                    Some(escaped) => escaped,
                    None => break,
                },
                byte => byte,
            };
            valid &= is_qdtext(byte);
            text.push(byte);
        }
        // Never closed: the quote opened nothing. Read on from it as junk up
        // to the next comma, so that what follows still counts (a quote
        // that runs to the end of the line must not hide `private`).
        self.pos = opened;
        self.skip_element();
        Arg::Malformed
    }

    /// Skips the rest of a malformed element, to the next comma. A `"`
    /// here does not open a quoted string (a well-formed one was read by
    /// [`quoted_string`](Self::quoted_string) already): a stray quote must
    /// not hide the directives that follow it.
    fn skip_element(&mut self) {
        while let Some(byte) = self.peek() {
            if byte == b',' {
                return;
            }
            self.pos += 1;
        }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Element<'a>;

    fn next(&mut self) -> Option<Element<'a>> {
        loop {
            self.take(|byte| is_ows(byte) || byte == b',');
            self.peek()?;
            let name = self.take(is_tchar);
            if name.is_empty() {
                self.skip_element();
                continue;
            }
            let arg = self.argument();
            return Some(Element { name, arg });
        }
    }
}

/// Optional whitespace: space or horizontal tab.
fn is_ows(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A byte allowed in a quoted string, directly or escaped: HTAB, SP, VCHAR
/// and obs-text (RFC 9110 §5.6.4).
fn is_qdtext(byte: u8) -> bool {
    byte == b'\t' || byte == b' ' || (0x21..=0x7e).contains(&byte) || byte >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses one field line.
    fn one(line: &str) -> Directives {
        Directives::parse([line.as_bytes()])
    }

    /// A header map from name/value pairs (raw bytes allowed).
    fn headers(pairs: &[(&HeaderName, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let value = HeaderValue::from_bytes(value).expect("valid test header value");
            map.append((*name).clone(), value);
        }
        map
    }

    /// `now` plus or minus whole seconds.
    fn at(now: SystemTime, offset: i64) -> SystemTime {
        let delta = Duration::from_secs(offset.unsigned_abs());
        if offset < 0 { now - delta } else { now + delta }
    }

    /// An HTTP-date for `time`.
    fn date(time: SystemTime) -> Vec<u8> {
        httpdate::fmt_http_date(time).into_bytes()
    }

    /// A fixed, whole-second "now".
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn empty_and_unknown() {
        assert_eq!(one(""), Directives::default());
        assert_eq!(one(" , ,, "), Directives::default());
        assert_eq!(one("foo, bar=baz, qux=\"a,b\""), Directives::default());
        assert_eq!(Directives::parse(std::iter::empty()), Directives::default());
    }

    #[test]
    fn all_flags() {
        let d = one(
            "no-store, no-cache, private, public, must-revalidate, proxy-revalidate, \
             must-understand, immutable, only-if-cached",
        );
        assert!(d.no_store && d.no_cache && d.private && d.public);
        assert!(d.must_revalidate && d.proxy_revalidate && d.must_understand);
        assert!(d.immutable && d.only_if_cached);
    }

    #[test]
    fn all_numbers() {
        let d = one(
            "max-age=1, s-maxage=2, stale-while-revalidate=3, stale-if-error=4, \
             min-fresh=5, max-stale=6",
        );
        assert_eq!(d.max_age, Some(1));
        assert_eq!(d.s_maxage, Some(2));
        assert_eq!(d.stale_while_revalidate, Some(3));
        assert_eq!(d.stale_if_error, Some(4));
        assert_eq!(d.min_fresh, Some(5));
        assert_eq!(d.max_stale, Some(Some(6)));
        assert_eq!(one("max-stale").max_stale, Some(None));
    }

    #[test]
    fn names_are_case_insensitive() {
        let d = one("MaX-AgE=7, NO-STORE, Private, S-MAXAGE=3");
        assert_eq!(d.max_age, Some(7));
        assert_eq!(d.s_maxage, Some(3));
        assert!(d.no_store && d.private);
    }

    #[test]
    fn commas_inside_quotes_do_not_split() {
        let d = one("no-cache=\"a, private\", max-age=5");
        assert!(d.no_cache);
        assert!(!d.private);
        assert_eq!(d.max_age, Some(5));

        let d = one("extension=\"max-age=3600\", max-age=1");
        assert_eq!(d.max_age, Some(1));
        let d = one("max-age=1, extension=\"max-age=3600, no-store\"");
        assert_eq!(d.max_age, Some(1));
        assert!(!d.no_store);
    }

    #[test]
    fn quoted_pairs_are_resolved() {
        // The escaped quote does not end the string, so the comma stays inside.
        let d = one(r#"foo="a\", no-store", max-age="\5""#);
        assert!(!d.no_store);
        assert_eq!(d.max_age, Some(5));
        let d = one(r#"foo="a\\", no-store"#);
        assert!(d.no_store);
    }

    #[test]
    fn qualified_no_cache_and_private() {
        let d = one("private=\"set-cookie, x-user\", no-cache=\"set-cookie\"");
        assert!(d.private && d.no_cache);
        let d = one("no-cache=set-cookie, private=x");
        assert!(d.private && d.no_cache);
        assert!(d.private);
    }

    #[test]
    fn quoted_numbers_are_accepted() {
        assert_eq!(one("max-age=\"5\"").max_age, Some(5));
        assert_eq!(one("s-maxage=\"60\"").s_maxage, Some(60));
        assert_eq!(one("stale-if-error=\"9\"").stale_if_error, Some(9));
        assert_eq!(one("max-age=\" 5\"").max_age, Some(0));
    }

    #[test]
    fn whitespace_is_ignored() {
        let d = one(" \tmax-age = 5 ,\tno-store\t, s-maxage=\t\"6\" ");
        assert_eq!(d.max_age, Some(5));
        assert_eq!(d.s_maxage, Some(6));
        assert!(d.no_store);
        assert_eq!(one("max-age =3600").max_age, Some(3600));
        assert_eq!(one("max-age= 3600").max_age, Some(3600));
    }

    #[test]
    fn several_lines_form_one_list() {
        let d = Directives::parse([&b"max-age=5"[..], b"", b"private", b" , no-store"]);
        assert_eq!(d.max_age, Some(5));
        assert!(d.private && d.no_store);

        let map = headers(&[
            (&CACHE_CONTROL, b"public"),
            (&CACHE_CONTROL, b"s-maxage=10"),
        ]);
        let d = Directives::from_headers(&map);
        assert!(d.public);
        assert_eq!(d.s_maxage, Some(10));
    }

    #[test]
    fn unterminated_quote_stays_on_its_line() {
        let d = Directives::parse([&b"no-cache=\"abc, max-age=5"[..], b"private"]);
        assert!(d.no_cache && d.private);
        // The quote opened nothing: what follows the comma is read as the
        // next element, as a cache splitting on commas would.
        assert_eq!(d.max_age, Some(5));
        let d = one("max-age=60, ext=\"a, private");
        assert!(d.private);
        let d = one("max-age=60, ext=\"a\\\", no-store");
        assert!(d.no_store);
    }

    #[test]
    fn other_header_names() {
        let cdn = HeaderName::from_static("cdn-cache-control");
        let map = headers(&[(&cdn, b"max-age=30"), (&CACHE_CONTROL, b"no-store")]);
        let d = Directives::from_header(&map, &cdn);
        assert_eq!(d.max_age, Some(30));
        assert!(!d.no_store);
    }

    #[test]
    fn non_utf8_bytes_do_not_hide_directives() {
        let d = Directives::parse([&b"foo=\xff\xfe, no-store, max-age=5"[..]]);
        assert!(d.no_store);
        assert_eq!(d.max_age, Some(5));
        let d = Directives::parse([&b"no-cache=\"\xe9t\xe9\", private"[..]]);
        assert!(d.no_cache && d.private);
        let d = Directives::parse([&b"\xff, private, x\xff=1"[..]]);
        assert!(d.private);

        let map = headers(&[(&CACHE_CONTROL, b"max-age=60, x=\xff, no-store")]);
        assert!(Directives::from_headers(&map).no_store);
        assert_eq!(Directives::from_headers(&map).max_age, Some(60));
    }

    #[test]
    fn invalid_max_age_and_s_maxage_are_stale() {
        for value in ["-1", "1.5", "abc", "", "5a", "a5", "'5'", "\"\"", "5 6"] {
            let d = one(&format!("max-age={value}, s-maxage={value}"));
            assert_eq!(d.max_age, Some(0), "max-age={value}");
            assert_eq!(d.s_maxage, Some(0), "s-maxage={value}");
        }
        assert_eq!(one("max-age").max_age, Some(0));
        assert_eq!(one("max-age=\"5").max_age, Some(0));
        assert_eq!(one("max-age=003600").max_age, Some(3600));
    }

    #[test]
    fn invalid_optional_numbers_are_ignored() {
        for value in ["-1", "1.5", "abc", "", "\"x\""] {
            let d = one(&format!(
                "stale-while-revalidate={value}, stale-if-error={value}, min-fresh={value}, \
                 max-stale={value}"
            ));
            assert_eq!(d.stale_while_revalidate, None, "{value}");
            assert_eq!(d.stale_if_error, None, "{value}");
            assert_eq!(d.min_fresh, None, "{value}");
            assert_eq!(d.max_stale, None, "{value}");
        }
        assert_eq!(one("stale-if-error").stale_if_error, None);
    }

    #[test]
    fn huge_numbers_are_capped() {
        assert_eq!(one("max-age=2147483647").max_age, Some(2_147_483_647));
        assert_eq!(one("max-age=2147483648").max_age, Some(DELTA_SECONDS_MAX));
        assert_eq!(one("max-age=2147483649").max_age, Some(DELTA_SECONDS_MAX));
        let huge = "9".repeat(40);
        assert_eq!(
            one(&format!("s-maxage={huge}")).s_maxage,
            Some(DELTA_SECONDS_MAX)
        );
        assert_eq!(
            one(&format!("stale-while-revalidate={huge}")).stale_while_revalidate,
            Some(DELTA_SECONDS_MAX)
        );
    }

    #[test]
    fn conflicting_duplicates_are_stale() {
        assert_eq!(one("max-age=60, max-age=10").max_age, Some(0));
        assert_eq!(one("max-age=10, max-age=60").max_age, Some(0));
        assert_eq!(one("max-age=60, max-age=60").max_age, Some(60));
        assert_eq!(one("max-age=60, max-age=\"60\"").max_age, Some(60));
        assert_eq!(one("max-age=60, max-age=x").max_age, Some(0));
        let d = Directives::parse([&b"s-maxage=60"[..], b"s-maxage=10"]);
        assert_eq!(d.s_maxage, Some(0));
    }

    #[test]
    fn optional_duplicates_take_the_stricter_value() {
        let d = one(
            "stale-while-revalidate=60, stale-while-revalidate=10, stale-if-error=5, \
             stale-if-error=50, min-fresh=1, min-fresh=9, max-stale, max-stale=30, max-stale=20",
        );
        assert_eq!(d.stale_while_revalidate, Some(10));
        assert_eq!(d.stale_if_error, Some(5));
        assert_eq!(d.min_fresh, Some(9));
        assert_eq!(d.max_stale, Some(Some(20)));
        assert_eq!(one("max-stale=30, max-stale").max_stale, Some(Some(30)));
        assert_eq!(
            one("stale-if-error=x, stale-if-error=7").stale_if_error,
            Some(7)
        );
    }

    #[test]
    fn malformed_elements_only_restrict() {
        let d = one("no-store junk, private\"x\", public junk, immutable junk");
        assert!(d.no_store && d.private);
        assert!(!d.public && !d.immutable);
        // A quote inside junk does not open a quoted string: what follows
        // the next comma still counts, so a stray quote cannot hide a
        // restriction (reading one too many is the safe direction).
        let d = one("foo bar\"a, no-store\", max-age=4");
        assert!(d.no_store);
        assert_eq!(d.max_age, Some(4));
        let d = one("max-age=60, x=a\"b, private");
        assert!(d.private);
        let d = one("max-age=60, ext=a\\\", no-store");
        assert!(d.no_store);
    }

    #[test]
    fn s_maxage_beats_max_age_beats_expires() {
        let now = now();
        let expires = date(at(now, 100));
        let map = headers(&[(&EXPIRES, &expires), (&DATE, &date(now))]);
        let lifetime = |line: &str| response_lifetime(&one(line), &map, now);
        assert_eq!(
            lifetime("max-age=60, s-maxage=5"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            lifetime("s-maxage=500, max-age=0"),
            Some(Duration::from_secs(500))
        );
        assert_eq!(lifetime("max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(lifetime("max-age=0"), Some(Duration::ZERO));
        assert_eq!(lifetime("public"), Some(Duration::from_secs(100)));
        assert_eq!(response_lifetime(&one(""), &HeaderMap::new(), now), None);
    }

    #[test]
    fn expires_relative_to_date() {
        let now = now();
        let map = headers(&[
            (&DATE, &date(at(now, -50))),
            (&EXPIRES, &date(at(now, 100))),
        ]);
        let d = Directives::default();
        assert_eq!(
            response_lifetime(&d, &map, now),
            Some(Duration::from_secs(150))
        );

        let past = headers(&[(&DATE, &date(now)), (&EXPIRES, &date(at(now, -10)))]);
        assert_eq!(response_lifetime(&d, &past, now), Some(Duration::ZERO));
    }

    #[test]
    fn expires_without_date_uses_now() {
        let now = now();
        let d = Directives::default();
        let map = headers(&[(&EXPIRES, &date(at(now, 30)))]);
        assert_eq!(
            response_lifetime(&d, &map, now),
            Some(Duration::from_secs(30))
        );
        // An unparseable Date counts as missing.
        let map = headers(&[(&EXPIRES, &date(at(now, 30))), (&DATE, b"foo")]);
        assert_eq!(
            response_lifetime(&d, &map, now),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn invalid_expires_is_expired() {
        let now = now();
        let d = Directives::default();
        let future = date(at(now, 3600));
        let invalid: [&[u8]; 5] = [
            b"0",
            b"",
            b"Thu, 18 Aug 2050 02:01:18 UTC",
            b"Thu 18 Aug 2050 02:01:18 GMT",
            b"\xff",
        ];
        for value in invalid {
            let map = headers(&[(&EXPIRES, value), (&DATE, &date(now))]);
            assert_eq!(
                response_lifetime(&d, &map, now),
                Some(Duration::ZERO),
                "{value:?}"
            );
        }
        let disagree = headers(&[(&EXPIRES, &future), (&EXPIRES, &date(at(now, 60)))]);
        assert_eq!(response_lifetime(&d, &disagree, now), Some(Duration::ZERO));
        let agree = headers(&[(&EXPIRES, &future), (&EXPIRES, &future)]);
        assert_eq!(
            response_lifetime(&d, &agree, now),
            Some(Duration::from_secs(3600))
        );
        // max-age still wins over an invalid Expires.
        let map = headers(&[(&EXPIRES, b"0")]);
        assert_eq!(
            response_lifetime(&one("max-age=3600"), &map, now),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn heuristic_freshness() {
        let now = now();
        let cap = Duration::from_secs(86_400);
        let modified = headers(&[(&LAST_MODIFIED, &date(at(now, -1000)))]);
        assert_eq!(
            heuristic_lifetime(&modified, now, cap),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            heuristic_lifetime(&modified, now, Duration::from_secs(7)),
            Some(Duration::from_secs(7))
        );
        let with_date = headers(&[
            (&LAST_MODIFIED, &date(at(now, -1000))),
            (&DATE, &date(at(now, -500))),
        ]);
        assert_eq!(
            heuristic_lifetime(&with_date, now, cap),
            Some(Duration::from_secs(50))
        );
        let future = headers(&[(&LAST_MODIFIED, &date(at(now, 10)))]);
        assert_eq!(heuristic_lifetime(&future, now, cap), None);
        let same = headers(&[(&LAST_MODIFIED, &date(now))]);
        assert_eq!(heuristic_lifetime(&same, now, cap), None);
        let invalid = headers(&[(&LAST_MODIFIED, b"yesterday")]);
        assert_eq!(heuristic_lifetime(&invalid, now, cap), None);
        assert_eq!(heuristic_lifetime(&HeaderMap::new(), now, cap), None);
    }
}
