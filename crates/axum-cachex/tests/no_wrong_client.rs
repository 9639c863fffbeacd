//! The property the shared cache exists to keep: whatever mix of hosts,
//! paths, credentials and `Vary` values clients send, no client ever
//! receives a response the handler made for another.
#![allow(missing_docs)]

mod common;

use std::{sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::Request, response::Response};
use axum_cachex::{CacheLayer, ManualClock, backend::MemoryBackend};
use common::http::send;
use http::HeaderValue;
use proptest::prelude::*;

/// One request a random client sends.
#[derive(Debug, Clone)]
struct Client {
    host: &'static str,
    path: &'static str,
    lang: Option<&'static str>,
    credential: Option<(&'static str, String)>,
    advance_secs: u64,
}

const HOSTS: [&str; 5] = [
    "a.example",
    "A.Example",
    "b.example:8080",
    "a.example|||/p|||",
    "b.example",
];
const PATHS: [&str; 4] = ["/p", "/p?x=1", "/q", "/p%7C"];
const LANGS: [&str; 3] = ["fr", "FR", "de"];

fn client() -> impl Strategy<Value = Client> {
    let credential = prop_oneof![
        Just(None),
        (0..3u8).prop_map(|u| Some(("authorization", format!("Bearer user{u}")))),
        (0..3u8).prop_map(|u| Some(("x-session-token", format!("tok{u}")))),
        (0..3u8).prop_map(|u| Some(("cookie", format!("theme=dark; session=s{u}")))),
        Just(Some(("cookie", "theme=dark".to_owned()))),
    ];
    (
        prop::sample::select(&HOSTS[..]),
        prop::sample::select(&PATHS[..]),
        prop::option::of(prop::sample::select(&LANGS[..])),
        credential,
        0..40u64,
    )
        .prop_map(|(host, path, lang, credential, advance_secs)| Client {
            host,
            path,
            lang,
            credential,
            advance_secs,
        })
}

/// What a response was made for, as the handler writes it in the body.
fn made_for(host: &str, uri: &str, lang: Option<&str>, credential: Option<&str>) -> String {
    format!(
        "host={} uri={uri} lang={} cred={}",
        host.to_ascii_lowercase(),
        lang.unwrap_or("-"),
        credential.unwrap_or("-")
    )
}

/// The credential a request carries, as the handler sees it: a theme
/// cookie is not one.
fn credential_of(headers: &http::HeaderMap) -> Option<String> {
    for name in ["authorization", "x-session-token"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            return Some(v.to_owned());
        }
    }
    headers
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.contains("session="))
        .map(str::to_owned)
}

fn app(clock: &ManualClock) -> Router {
    let layer = CacheLayer::builder()
        .ttl(Duration::from_secs(30))
        .backend(Arc::new(MemoryBackend::new()))
        .clock(clock.clock())
        .build()
        .expect("layer");
    Router::new()
        .fallback(|req: Request| async move {
            let h = req.headers();
            let host = h.get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
            let lang = h.get("x-lang").and_then(|v| v.to_str().ok());
            let body = made_for(
                host,
                &req.uri().to_string(),
                lang,
                credential_of(h).as_deref(),
            );
            let mut res = Response::new(Body::from(body));
            res.headers_mut()
                .insert("vary", HeaderValue::from_static("X-Lang"));
            res
        })
        .layer(layer)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_client_receives_a_response_made_for_another(clients in prop::collection::vec(client(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let clock = ManualClock::new();
            let app = app(&clock);
            for c in &clients {
                clock.advance(Duration::from_secs(c.advance_secs));
                let mut req = http::Request::get(c.path).header("host", c.host);
                if let Some(lang) = c.lang {
                    req = req.header("x-lang", lang);
                }
                if let Some((name, value)) = &c.credential {
                    req = req.header(*name, value.as_str());
                }
                let reply = send(&app, req.body(Body::empty()).expect("request")).await;
                let credential = credential_of(&reply_request_headers(c));
                let expected = made_for(c.host, c.path, c.lang, credential.as_deref());
                prop_assert_eq!(
                    String::from_utf8_lossy(&reply.body).into_owned(),
                    expected,
                    "request {:?} got {}",
                    c,
                    reply.cache_status()
                );
            }
            Ok(())
        })?;
    }
}

fn reply_request_headers(c: &Client) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    if let Some((name, value)) = &c.credential {
        h.insert(*name, value.parse().expect("value"));
    }
    h
}
