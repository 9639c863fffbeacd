//! Red-team tests, round 8: the round-7 changes (`Pending`, `pass_through`
//! answering conditionals from the handler's validators, the streamed-miss
//! 304, `keep_private` on credentialed refusals) and what surrounds them.
//! Each test names the rule it breaks and fails against the code it was
//! written for.

use super::support::*;
use std::{sync::atomic::Ordering, time::Duration};

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use axum_cachex::{CacheLayer, Credentialed, ManualClock};

// ---------------------------------------------------------------------------
// RFC 9111 §3.5 / §4.3.4: a 304 made for credentials must not update the
// shared entry.
// ---------------------------------------------------------------------------

/// BUG: `store_response` refuses a response marked [`Credentialed`] (made
/// for an authenticated user, e.g. by a session or auth layer inside the
/// cache that the cache cannot see) — but `freshen` never looks at the
/// marker (nor at the request's `ShareGuard`). A stale entry revalidated
/// on alice's behalf gets a 304 made for alice; its headers
/// (`X-Account: alice`) are merged into the SHARED entry, stored, and
/// served to the next anonymous client as a fresh hit. flow.rs `freshen`
/// (no `guard` / `response_is_credentialed` check before `pending.store`),
/// entry.rs `freshened`.
#[tokio::test]
async fn rule9111_3_5_credentialed_304_freshens_shared_entry_with_users_headers() {
    let clock = ManualClock::new();
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(10))
        .backend(mem())
        .clock(clock.clock())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/news",
        get(|headers: axum::http::HeaderMap| async move {
            let user = headers
                .get("x-api-key")
                .map(|_| "alice")
                .unwrap_or("anonymous");
            let conditional = headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v == "\"v1\"");
            let mut res: Response = if conditional {
                (
                    StatusCode::NOT_MODIFIED,
                    [("etag", "\"v1\""), ("x-account", user)],
                )
                    .into_response()
            } else {
                ([(header::ETAG, "\"v1\"")], "the news").into_response()
            };
            if user != "anonymous" {
                // An auth layer inside the cache: the response is made for
                // a user.
                res.extensions_mut().insert(Credentialed);
            }
            res
        })
        .layer(cache),
    );
    // Anonymous fill.
    let first = send(&app, get_req("/news")).await;
    assert_eq!(first.status, StatusCode::OK);
    clock.advance(Duration::from_secs(20));
    // Alice, with a credential the cache was never told about.
    let mut req = get_req("/news");
    req.headers_mut()
        .insert("x-api-key", HeaderValue::from_static("alice-key"));
    let alice = send(&app, req).await;
    assert_eq!(alice.status, StatusCode::OK);
    // Bob, anonymous.
    let bob = send(&app, get_req("/news")).await;
    assert_eq!(bob.text(), "the news");
    assert!(
        bob.header("x-account") != "alice",
        "bob got a header of the 304 made for alice (cache-status: {})",
        bob.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// RFC 9110 §13.1.2: `If-None-Match: *` is false when any current
// representation exists.
// ---------------------------------------------------------------------------

/// BUG: `pass_through` answers the client's (stripped) conditionals from
/// the handler's own validators. `not_modified_by` treats a response
/// without an entity tag as matching `*`, but a response whose `ETag` is
/// not a valid entity tag goes to `not_modified` → `if_none_match_matches`,
/// which returns false before it even looks for `*` (`opaque(etag)` is
/// `None`). The client asked "only if none exists"; a current 200 exists,
/// yet it gets the full 200 instead of 304 — and the handler never saw the
/// condition (the layer stripped it). conditional.rs `not_modified_by` /
/// etag.rs `if_none_match_matches`.
#[tokio::test]
async fn rule9110_13_1_2_if_none_match_star_ignored_when_handler_etag_malformed() {
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/doc",
        get(|| async {
            (
                [
                    (header::CACHE_CONTROL, "no-store"),
                    (header::ETAG, "v1-unquoted"),
                ],
                "doc",
            )
        })
        .layer(cache),
    );
    let mut req = get_req("/doc");
    req.headers_mut()
        .insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
    let got = send(&app, req).await;
    assert_eq!(
        got.status,
        StatusCode::NOT_MODIFIED,
        "If-None-Match: * with a current representation (cache-status: {})",
        got.header("cache-status")
    );
}

// ---------------------------------------------------------------------------
// RFC 9110 §8.6: no `Content-Length` on a 204.
// ---------------------------------------------------------------------------

/// BUG: 204 is in the default cacheable statuses. A HEAD answered from the
/// stored 204 gets `Content-Length: 0` inserted by `response::from_entry`
/// (`head` branch), and a HEAD miss gets it from `answer_bytes` — yet
/// "a server MUST NOT send a Content-Length header field in any response
/// with a status code of 1xx or 204" (RFC 9110 §8.6); the GET of the same
/// resource carries none. response.rs `from_entry`, flow.rs `answer_bytes`.
#[tokio::test]
async fn rule9110_8_6_head_of_stored_204_carries_content_length() {
    let cache = CacheLayer::builder()
        .ttl(Duration::from_secs(60))
        .backend(mem())
        .build()
        .unwrap();
    let calls = counter();
    let c = calls.clone();
    let app = Router::new().route(
        "/ping",
        get(move || {
            c.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::NO_CONTENT }
        })
        .layer(cache),
    );
    let get = send(&app, get_req("/ping")).await;
    assert_eq!(get.status, StatusCode::NO_CONTENT);
    let head_req = || {
        axum::http::Request::head("/ping")
            .header(header::HOST, "shop.example")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let head = send(&app, head_req()).await;
    assert_eq!(head.status, StatusCode::NO_CONTENT);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "HEAD was a hit");
    assert!(
        !head.headers.contains_key(header::CONTENT_LENGTH),
        "a 204 with Content-Length: {}",
        head.header("content-length")
    );
}
