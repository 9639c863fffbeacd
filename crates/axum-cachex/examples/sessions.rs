//! Run: `cargo run --example sessions --features session` — a demo API with
//! server-side sessions on the in-memory backend, at http://127.0.0.1:3000
//! (set `PORT` to change the port, `SESSION_SECRET` to set the secret).
//!
//! Demo users: `ada` / `lovelace` and `alan` / `turing`.
//!
//! Try it:
//!
//! ```text
//! # Log in: the token comes back in the X-Session-Token header and the body.
//! TOKEN=$(curl -s -X POST localhost:3000/login \
//!     -H 'content-type: application/json' \
//!     -d '{"username": "ada", "password": "lovelace"}' \
//!   | sed -E 's/.*"token":"([^"]+)".*/\1/')
//!
//! curl -i localhost:3000/profile                                  # 401, WWW-Authenticate: Bearer
//! curl -s localhost:3000/profile -H "X-Session-Token: $TOKEN"     # user, visits, flash messages
//! curl -s localhost:3000/profile -H "Authorization: Bearer $TOKEN" # same, bearer transport
//!
//! # A flash message is shown once, on the next profile read.
//! curl -s -X POST localhost:3000/flash -H "X-Session-Token: $TOKEN" \
//!     -H 'content-type: application/json' -d '{"message": "Settings saved"}'
//! curl -s localhost:3000/profile -H "X-Session-Token: $TOKEN"     # flash: ["Settings saved"]
//! curl -s localhost:3000/profile -H "X-Session-Token: $TOKEN"     # flash: []
//!
//! # Log out this session; the token stops working.
//! curl -s -X POST localhost:3000/logout -H "X-Session-Token: $TOKEN"
//! curl -i localhost:3000/profile -H "X-Session-Token: $TOKEN"     # 401
//!
//! # Log out everywhere: log in twice (two devices), end both at once.
//! login() { curl -s -X POST localhost:3000/login -H 'content-type: application/json' \
//!   -d '{"username": "alan", "password": "turing"}' | sed -E 's/.*"token":"([^"]+)".*/\1/'; }
//! PHONE=$(login); LAPTOP=$(login)
//! curl -s -X POST localhost:3000/logout-everywhere -H "X-Session-Token: $PHONE"   # {"deleted":2}
//! curl -i localhost:3000/profile -H "X-Session-Token: $LAPTOP"    # 401
//! ```
//!
//! The app is served with `into_make_service_with_connect_info`, so the
//! socket address is known (it is what `ip_binding` would check).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    http::StatusCode,
    routing::{get, post},
};
use axum_cachex::{
    backend::MemoryBackend,
    session::{
        SessionConfig, SessionContext, SessionHandle, SessionLayer, SessionManager, SessionUser,
    },
};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct Flash {
    message: String,
}

type ApiResult = Result<Json<Value>, (StatusCode, Json<Value>)>;

fn api_error(status: StatusCode, message: impl ToString) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message.to_string() })))
}

/// A stand-in for a user database.
fn check_credentials(c: &Credentials) -> Option<SessionUser> {
    let (id, role) = match (c.username.as_str(), c.password.as_str()) {
        ("ada", "lovelace") => ("1", "admin"),
        ("alan", "turing") => ("2", "user"),
        _ => return None,
    };
    Some(
        SessionUser::new(id)
            .with_username(&c.username)
            .with_email(format!("{}@example.com", c.username))
            .with_role(role),
    )
}

async fn login(ctx: SessionContext, Json(creds): Json<Credentials>) -> ApiResult {
    let Some(user) = check_credentials(&creds) else {
        return Err(api_error(
            StatusCode::UNAUTHORIZED,
            "wrong user name or password",
        ));
    };
    // Attaches the user to the current session (with a new id) or creates
    // one; the middleware also returns the token in X-Session-Token.
    let session = ctx
        .login(user)
        .await
        .map_err(|e| api_error(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(json!({ "token": session.token() })))
}

async fn profile(session: SessionHandle) -> ApiResult {
    let Some(user) = session.user() else {
        return Err(api_error(StatusCode::UNAUTHORIZED, "log in first"));
    };
    // A change to the session: saved by the middleware after the handler.
    let visits = session.get::<u64>("visits").unwrap_or(0) + 1;
    session
        .insert("visits", visits)
        .map_err(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let flash: Vec<String> = session
        .get_flash_messages(true)
        .into_iter()
        .map(|m| m.message)
        .collect();
    Ok(Json(json!({
        "user": user,
        "visits": visits,
        "flash": flash,
    })))
}

async fn add_flash(session: SessionHandle, Json(flash): Json<Flash>) -> StatusCode {
    session.add_flash_message(flash.message, Some("success"));
    StatusCode::NO_CONTENT
}

async fn logout(session: SessionHandle) -> ApiResult {
    let existed = session
        .logout()
        .await
        .map_err(|e| api_error(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(json!({ "logged_out": existed })))
}

async fn logout_everywhere(session: SessionHandle) -> ApiResult {
    let deleted = session
        .logout_everywhere()
        .await
        .map_err(|e| api_error(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(json!({ "deleted": deleted })))
}

async fn home(session: Option<SessionHandle>) -> String {
    match session.and_then(|s| s.user()) {
        Some(user) => format!("hello {}\n", user.username.unwrap_or(user.user_id)),
        None => "hello anonymous: POST /login to start a session\n".to_owned(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("SESSION_SECRET").unwrap_or_else(|_| {
        eprintln!("SESSION_SECRET not set: using a development secret");
        "development-secret-do-not-use-in-production".to_owned()
    });
    let config = SessionConfig::builder(secret)
        .session_ttl(Duration::from_secs(30 * 60))
        .absolute_timeout(Duration::from_secs(12 * 3600))
        .build()?;
    let manager = SessionManager::new(Arc::new(MemoryBackend::new()), config);

    let app = Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/profile", get(profile))
        .route("/flash", post(add_flash))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .layer(SessionLayer::new(manager));

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("sessions example on http://{addr}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
