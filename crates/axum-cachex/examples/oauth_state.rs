//! An OAuth-style login round trip protected by the state manager.
//!
//! Run with `cargo run --example oauth_state` (add `-- --serve` to keep the
//! server running and try it in a browser at the printed address).
//!
//! One server plays both parts:
//!
//! 1. `GET /login` sets a random `oauth_binding` cookie, creates a state bound
//!    to it (with the page to return to as metadata) and redirects to the
//!    "provider".
//! 2. `GET /provider/authorize` (the fake provider) "logs the user in" and
//!    redirects back to `/callback?code=..&state=..`.
//! 3. `GET /callback` consumes the state with the cookie's binding: single
//!    use, not expired, same browser. Only then would a real application
//!    exchange the code for tokens.
//!
//! Without `--serve`, the example drives the flow itself with an HTTP client
//! and shows that a replayed callback, and a callback from a browser without
//! the cookie, are refused, the latter without burning the user's state.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    extract::Query,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use axum_cachex::{
    backend::MemoryBackend,
    state::{StateError, StateManager},
};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde::Deserialize;
use serde_json::json;

const BINDING_COOKIE: &str = "oauth_binding";

fn app(states: StateManager) -> Router {
    Router::new()
        .route("/login", get(login))
        .route("/provider/authorize", get(provider_authorize))
        .route("/callback", get(callback))
        .layer(Extension(states))
}

/// Starts a login: binding cookie, bound state, redirect to the provider.
async fn login(states: StateManager) -> Response {
    // A per-attempt random value only this browser gets back; the state is
    // bound to it, so a state used from another browser is refused.
    let mut raw = [0u8; 16];
    if getrandom::fill(&mut raw).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no randomness").into_response();
    }
    let binding: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let state = match states
        .create_bound_state(
            &binding,
            Some(Duration::from_secs(300)),
            Some(json!({ "return_to": "/dashboard" })),
        )
        .await
    {
        Ok(state) => state,
        Err(e) => {
            log(&format!("could not create a state: {e}"));
            return (StatusCode::SERVICE_UNAVAILABLE, "try again later").into_response();
        }
    };
    let cookie =
        format!("{BINDING_COOKIE}={binding}; HttpOnly; SameSite=Lax; Path=/callback; Max-Age=300");
    let location =
        format!("/provider/authorize?client_id=demo&redirect_uri=/callback&state={state}");
    ([(header::SET_COOKIE, cookie)], Redirect::to(&location)).into_response()
}

#[derive(Deserialize)]
struct Authorize {
    redirect_uri: String,
    state: String,
}

/// The fake provider: approves at once and sends the browser back with a code
/// and the state untouched.
async fn provider_authorize(Query(q): Query<Authorize>) -> Redirect {
    Redirect::to(&format!(
        "{}?code=fake-code-123&state={}",
        q.redirect_uri, q.state
    ))
}

/// What `/login` stores with the state.
#[derive(Deserialize)]
struct LoginMeta {
    return_to: String,
}

#[derive(Deserialize)]
struct Callback {
    code: String,
    state: String,
}

/// Finishes the login: the state must be ours, unused, fresh, and bound to
/// this browser's cookie.
async fn callback(states: StateManager, headers: HeaderMap, Query(q): Query<Callback>) -> Response {
    let binding = cookie(&headers, BINDING_COOKIE).unwrap_or_default();
    match states.consume_bound_state(&q.state, &binding).await {
        Ok(data) => {
            let return_to = data
                .metadata_as::<LoginMeta>()
                .map_or_else(|_| "/".to_owned(), |m| m.return_to);
            // A real application exchanges `q.code` for tokens here.
            (
                StatusCode::OK,
                format!("logged in with code {}; next stop {return_to}", q.code),
            )
                .into_response()
        }
        // Invalid, expired or corrupt: the client's fault or an attack. The
        // reason is shown here for the demo; in production give every
        // rejection the same answer and log the reason.
        Err(e) if e.is_rejection() => {
            (StatusCode::BAD_REQUEST, format!("login failed: {e}")).into_response()
        }
        Err(e) => {
            log(&format!("state backend failed: {e}"));
            (StatusCode::SERVICE_UNAVAILABLE, "try again later").into_response()
        }
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Server-side log (a real application uses `tracing`).
fn log(msg: &str) {
    eprintln!("{msg}");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let states = StateManager::new(Arc::new(MemoryBackend::new()));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(axum::serve(listener, app(states.clone())).into_future());

    if std::env::args().any(|a| a == "--serve") {
        println!("open http://{addr}/login (Ctrl-C to stop)");
        server.await??;
        return Ok(());
    }

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let fetch = |path: String, cookie: Option<String>| {
        let client = client.clone();
        async move {
            let mut req = http::Request::get(format!("http://{addr}{path}"));
            if let Some(c) = cookie {
                req = req.header(header::COOKIE, c);
            }
            let resp = client.request(req.body(Empty::new())?).await?;
            let status = resp.status();
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let set_cookie = resp
                .headers()
                .get(header::SET_COOKIE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .map(str::to_owned);
            let body = resp.into_body().collect().await?.to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            Ok::<_, Box<dyn std::error::Error>>((status, location, set_cookie, body))
        }
    };

    // 1. /login → cookie + redirect to the provider.
    let (status, to_provider, browser_cookie, _) = fetch("/login".into(), None).await?;
    println!("GET /login -> {status}, cookie {browser_cookie:?}");
    let to_provider = to_provider.ok_or("login did not redirect")?;
    // 2. provider → redirect back to /callback with code and state.
    let (status, to_callback, _, _) = fetch(to_provider.clone(), None).await?;
    println!("GET {to_provider} -> {status}");
    let to_callback = to_callback.ok_or("provider did not redirect")?;
    // 3. /callback with the browser's cookie → logged in.
    let (status, _, _, body) = fetch(to_callback.clone(), browser_cookie.clone()).await?;
    println!("GET {to_callback} -> {status}: {body}");
    assert_eq!(status, StatusCode::OK);
    // Replaying the callback fails: the state was single use.
    let (status, _, _, body) = fetch(to_callback, browser_cookie).await?;
    println!("replayed callback -> {status}: {body}");
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Another login whose callback URL leaks to a second browser (no cookie):
    // refused, and the user's own callback still works afterwards.
    let (_, to_provider, browser_cookie, _) = fetch("/login".into(), None).await?;
    let (_, to_callback, _, _) = fetch(to_provider.ok_or("no redirect")?, None).await?;
    let to_callback = to_callback.ok_or("no redirect")?;
    let (status, _, _, body) = fetch(to_callback.clone(), None).await?;
    println!("leaked callback from another browser -> {status}: {body}");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _, body) = fetch(to_callback, browser_cookie).await?;
    println!("the user's own callback -> {status}: {body}");
    assert_eq!(status, StatusCode::OK);

    // States can also be inspected without consuming them.
    let state = states
        .create_state(None, Some(json!({ "provider": "demo" })))
        .await?;
    println!(
        "validate_state: {}, metadata: {:?}",
        states.validate_state(&state).await?,
        states.get_state_metadata(&state).await?
    );
    states.delete_state(&state).await?;
    let err = states.consume_state(&state).await.err();
    println!(
        "after delete_state: {}",
        err.as_ref()
            .map_or("still there".into(), StateError::to_string)
    );

    server.abort();
    Ok(())
}
