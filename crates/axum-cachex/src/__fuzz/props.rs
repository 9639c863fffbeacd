//! Property tests of every parser the fuzz targets reach: the same checks
//! as the fuzz targets (on arbitrary bytes) plus structure-aware inputs
//! (directive lists, entity-tag lists, HTTP-dates in all three formats,
//! cookie lines, Memcached replies, query strings). Fixed seed and a small
//! case count: deterministic and quick in CI.

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed};

use crate::cache::{conditional::Conditions, directives::Directives, etag};

/// 256 cases from a fixed seed, no persistence files.
fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x00ca_c4e5),
        ..Config::default()
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Optional whitespace as a sender may write it.
fn ows() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ \t]{0,2}").expect("regex")
}

/// `name` in random letter case.
fn any_case(name: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), name.len()).prop_map(move |upper| {
        name.chars()
            .zip(upper)
            .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

/// One Cache-Control directive: (name as written, lowercase name, argument).
fn directive() -> impl Strategy<Value = (String, &'static str, Option<u64>, bool)> {
    let names = prop_oneof![
        Just("no-store"),
        Just("no-cache"),
        Just("private"),
        Just("public"),
        Just("max-age"),
        Just("s-maxage"),
        Just("stale-while-revalidate"),
        Just("x-ext"),
    ];
    (
        names,
        any::<bool>(),
        proptest::option::of(0u64..100_000),
        any::<bool>(),
    )
        .prop_flat_map(|(name, _, arg, quoted)| {
            any_case(name).prop_map(move |written| (written, name, arg, quoted))
        })
}

/// HTTP-date of `secs` in format `format % 3`: IMF-fixdate, RFC 850,
/// asctime (RFC 9110 §5.6.7).
fn http_date(secs: u64, format: u8) -> String {
    let imf = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let (wday, rest) = imf.split_once(", ").expect("IMF-fixdate");
    let parts: Vec<&str> = rest.split(' ').collect();
    let (day, month, year, time) = (parts[0], parts[1], parts[2], parts[3]);
    let long = match wday {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    match format % 3 {
        0 => imf,
        1 => format!("{long}, {day}-{month}-{}  {time} GMT", &year[2..]).replacen("  ", " ", 1),
        _ => format!(
            "{wday} {month} {:>2} {time} {year}",
            day.trim_start_matches('0')
        ),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn entry_decoder_on_arbitrary_bytes(data in bytes(256)) {
        super::entry_decode(&data);
        let mut framed = b"ACXE\x02\x01".to_vec();
        framed.extend_from_slice(&data);
        super::entry_decode(&framed);
    }

    #[test]
    fn tag_headers_on_arbitrary_bytes(data in bytes(160)) {
        super::tags(&data);
    }

    #[test]
    fn tag_lists(
        tags in proptest::collection::vec("[!-+\\--<>-~]{1,12}", 0..6),
        separators in proptest::collection::vec(prop_oneof![Just(", "), Just(" "), Just(","), Just("\t ,")], 6),
    ) {
        let mut line = String::new();
        for (i, tag) in tags.iter().enumerate() {
            if i > 0 {
                line.push_str(separators[i % separators.len()]);
            }
            line.push_str(tag);
        }
        let name = HeaderName::from_static("cache-tag");
        let mut map = HeaderMap::new();
        map.insert(&name, HeaderValue::try_from(line.as_str()).expect("visible ASCII"));
        let taken = crate::cache::tags::response_tags(&map, &name, &[]);
        let mut expected: Vec<String> = Vec::new();
        for tag in tags {
            if !expected.contains(&tag) {
                expected.push(tag);
            }
        }
        prop_assert_eq!(taken, expected);
        super::tags(line.as_bytes());
    }

    #[test]
    fn cache_key_on_arbitrary_text(text in "[a-zA-Z0-9|%~/?*\\[\\]!\\\\\n:.=&-]{0,64}") {
        super::cache_key(text.as_bytes());
        super::cache_key(format!("http:{text}").as_bytes());
    }

    #[test]
    fn cache_control_on_arbitrary_bytes(data in bytes(128)) {
        super::cache_control(&data);
    }

    #[test]
    fn cache_control_directive_lists(
        list in proptest::collection::vec((directive(), ows(), ows()), 0..8),
        lines in 1usize..3,
    ) {
        let mut elements = Vec::new();
        for ((written, _, arg, quoted), before, after) in &list {
            let element = match arg {
                Some(n) if *quoted => format!("{before}{written}=\"{n}\"{after}"),
                Some(n) => format!("{before}{written}={n}{after}"),
                None => format!("{before}{written}{after}"),
            };
            elements.push(element);
        }
        // Spread the elements over `lines` field lines.
        let per_line = elements.len().div_ceil(lines).max(1);
        let values: Vec<String> = elements.chunks(per_line).map(|c| c.join(",")).collect();
        let parsed = Directives::parse(values.iter().map(|v| v.as_bytes()));
        let has = |name: &str| list.iter().any(|((_, n, _, _), _, _)| *n == name);
        prop_assert_eq!(parsed.no_store, has("no-store"));
        prop_assert_eq!(parsed.no_cache, has("no-cache"));
        prop_assert_eq!(parsed.private, has("private"));
        let max_ages: Vec<Option<u64>> = list
            .iter()
            .filter(|((_, n, _, _), _, _)| *n == "max-age")
            .map(|((_, _, arg, _), _, _)| *arg)
            .collect();
        match max_ages.as_slice() {
            [] => prop_assert_eq!(parsed.max_age, None),
            [Some(n)] => prop_assert_eq!(parsed.max_age, Some(*n)),
            [None] => prop_assert_eq!(parsed.max_age, Some(0)),
            _ => {}
        }
        super::cache_control(values.join("\n").as_bytes());
    }

    #[test]
    fn conditionals_on_arbitrary_bytes(data in bytes(160)) {
        super::conditional(&data);
        let mut with_names = b"\"x\"\nif-none-match:".to_vec();
        with_names.extend_from_slice(&data);
        with_names.extend_from_slice(b"\nrange:");
        with_names.extend_from_slice(&data);
        super::conditional(&with_names);
    }

    #[test]
    fn entity_tag_lists(
        tags in proptest::collection::vec(("[!#-~]{0,6}", any::<bool>(), ows(), ows()), 0..5),
        ours in "[!#-~]{0,6}",
        weak_ours in any::<bool>(),
    ) {
        let etag = HeaderValue::from_str(&format!("{}\"{ours}\"", if weak_ours { "W/" } else { "" }))
            .expect("etag");
        let list: Vec<String> = tags
            .iter()
            .map(|(t, weak, a, b)| format!("{a}{}\"{t}\"{b}", if *weak { "W/" } else { "" }))
            .collect();
        let line = HeaderValue::from_str(&list.join(",")).expect("list");
        let expected = tags.iter().any(|(t, _, _, _)| *t == ours);
        prop_assert_eq!(etag::if_none_match_matches([&line], &etag), expected);
        super::conditional(format!("{}\nif-none-match: {}", etag.to_str().expect("ascii"), list.join(",")).as_bytes());
    }

    #[test]
    fn if_modified_since_in_all_three_formats(
        // Up to 2069: RFC 850's two-digit years are read as 1970-2069.
        secs in 0u64..3_155_760_000,
        format in any::<u8>(),
        later in any::<bool>(),
    ) {
        let date = http_date(secs, format);
        let mut request = HeaderMap::new();
        request.insert(header::IF_MODIFIED_SINCE, HeaderValue::from_str(&date).expect("date"));
        let conditions = Conditions::from_request(&request);
        let modified_at = secs + u64::from(later);
        let mut response = HeaderMap::new();
        response.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_str(&httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(modified_at)))
                .expect("date"),
        );
        prop_assert_eq!(
            conditions.not_modified(StatusCode::OK, &HeaderValue::from_static("\"e\""), &response),
            !later,
            "{}", date
        );
    }

    #[test]
    fn vary_on_arbitrary_bytes(data in bytes(160)) {
        super::vary(&data);
    }

    #[test]
    fn vary_lists(
        names in proptest::collection::vec(("(?i)accept|accept-language|x-[a-z]{1,3}|cookie", ows()), 0..5),
        values in proptest::collection::vec("[ -~]{0,8}", 0..4),
    ) {
        let vary_line = names.iter().map(|(n, w)| format!("{w}{n}{w}")).collect::<Vec<_>>().join(",");
        let mut input = vary_line.into_bytes();
        for ((name, _), value) in names.iter().zip(&values) {
            input.extend_from_slice(format!("\n{name}: {value}").as_bytes());
        }
        super::vary(&input);
    }
}

#[cfg(feature = "session")]
proptest! {
    #![proptest_config(Config { cases: 64, ..config() })]

    #[test]
    fn tokens_on_arbitrary_bytes(data in bytes(200)) {
        super::session_token(&data);
    }

    #[test]
    fn tokens_round_trip(id in proptest::collection::vec(any::<u8>(), 32..33), flip in any::<u8>()) {
        let mut data = id;
        data[0] = flip;
        super::session_token(&data);
    }

    #[test]
    fn cookie_headers(
        before in proptest::collection::vec(("[a-z]{1,5}", "[ -:<-~\u{e9}\u{2713}]{0,6}"), 0..4),
        after in proptest::collection::vec(("[a-z]{1,5}", "[ -:<-~]{0,6}"), 0..3),
        token in "[a-z0-9.]{1,20}",
        seps in proptest::collection::vec("; ?|;", 8),
        quoted in any::<bool>(),
    ) {
        // The session cookie `sid` among others, with any separators;
        // neighbours may carry raw UTF-8 (obs-text).
        let mut pairs: Vec<String> = before
            .iter()
            .filter(|(k, _)| k != "sid")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.push(if quoted { format!("sid=\"{token}\"") } else { format!("sid={token}") });
        pairs.extend(after.iter().filter(|(k, _)| k != "sid").map(|(k, v)| format!("{k}={v}")));
        let mut line = String::new();
        for (i, pair) in pairs.iter().enumerate() {
            if i > 0 {
                line.push_str(&seps[i % seps.len()]);
            }
            line.push_str(pair);
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_bytes(line.as_bytes()).expect("cookie line"));
        prop_assert_eq!(
            crate::session::transport::read_cookie(&headers, "sid"),
            Some(token.as_str()),
            "{}", line
        );
        super::cookie(line.as_bytes());
    }

    #[test]
    fn cookies_on_arbitrary_bytes(data in bytes(128)) {
        super::cookie(&data);
    }
}

#[cfg(feature = "memcached")]
proptest! {
    #![proptest_config(config())]

    #[test]
    fn memcached_replies_on_arbitrary_bytes(data in bytes(96)) {
        super::memcached_reply(&data);
    }

    #[test]
    fn memcached_get_replies(
        items in proptest::collection::vec(("[!-~]{1,8}", any::<u32>(), bytes(24)), 0..4),
        chunk in 1usize..16,
    ) {
        use crate::backend::memcached::client::replay::{Outcome, run};
        let mut reply = Vec::new();
        for (key, flags, data) in &items {
            reply.extend_from_slice(format!("VALUE {key} {flags} {}\r\n", data.len()).as_bytes());
            reply.extend_from_slice(data);
            reply.extend_from_slice(b"\r\n");
        }
        reply.extend_from_slice(b"END\r\n");
        let expected: Vec<_> = items
            .iter()
            .map(|(k, f, d)| (k.clone(), *f, bytes::Bytes::from(d.clone())))
            .collect();
        prop_assert_eq!(run(0, &reply, chunk), Ok(Outcome::Items(expected)));
        // Cut short anywhere: an error, never a panic or a partial answer.
        for cut in [reply.len() / 2, reply.len() - 1] {
            prop_assert!(run(0, &reply[..cut], chunk).is_err());
        }
        let mut framed = vec![0, u8::try_from(chunk).expect("small")];
        framed.extend_from_slice(&reply);
        super::memcached_reply(&framed);
    }
}

#[cfg(feature = "monitoring")]
proptest! {
    #![proptest_config(config())]

    #[test]
    fn monitoring_queries_on_arbitrary_text(query in "[a-z=&%0-9+|/_.\u{e9}-]{0,48}") {
        super::monitoring_query(query.as_bytes());
    }

    #[test]
    fn monitoring_query_pairs(
        limit in proptest::option::of(0usize..5000),
        offset in proptest::option::of(any::<usize>()),
        path in "/[a-z|%/ ]{0,10}",
        include in proptest::option::of(any::<bool>()),
    ) {
        use crate::monitoring::routes::{parse_clear_path, parse_page};
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(limit) = limit {
            query.append_pair("limit", &limit.to_string());
        }
        if let Some(offset) = offset {
            query.append_pair("offset", &offset.to_string());
        }
        query.append_pair("path", &path);
        if let Some(include) = include {
            query.append_pair("include_params", if include { "true" } else { "0" });
        }
        let query = query.finish();
        let page = parse_page(&query, 100, 1000).expect("valid numbers");
        prop_assert_eq!(page.limit, limit.map_or(100, |l| l.min(1000)));
        prop_assert_eq!(page.offset, offset.unwrap_or(0));
        prop_assert_eq!(
            parse_clear_path(&query),
            Ok((path.clone(), include.unwrap_or(false)))
        );
        super::monitoring_query(query.as_bytes());
    }
}
