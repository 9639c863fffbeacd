//! Sessions (feature `session`): configuration and model checks, and the
//! behaviour suite (`tests/common/session_suite.rs`) on every backend.
#![cfg(feature = "session")]

mod common;
#[path = "common/session_suite.rs"]
mod session_suite;

use std::{sync::Arc, time::Duration};

use axum::{Router, body::Body, http::StatusCode, routing::get};
use axum_cachex::{
    backend::{Backend, MemoryBackend},
    session::{
        CookieConfig, JwtAlgorithm, SameSite, SessionConfig, SessionConfigError, SessionHandle,
        SessionStatus, SessionUser, TokenFormat, TokenSource,
    },
};
use session_suite::SECRET;

async fn memory() -> Option<Arc<dyn Backend>> {
    Some(Arc::new(MemoryBackend::new()))
}

mod on_memory {
    use super::*;
    session_suite!(memory);
}

#[cfg(feature = "redis")]
mod on_redis {
    use super::*;
    use common::backend_redis::redis;
    session_suite!(redis);
}

#[cfg(feature = "memcached")]
mod on_memcached {
    use super::*;
    use common::backend_memcached::memcached;
    session_suite!(memcached);
}

fn config_err(json: &str) -> String {
    serde_json::from_str::<SessionConfig>(json)
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn defaults_follow_the_spec() {
    let c = SessionConfig::builder(SECRET).build().expect("config");
    assert_eq!(c.session_ttl(), Duration::from_secs(3600));
    assert_eq!(c.absolute_timeout(), None);
    assert!(c.sliding_expiration());
    assert_eq!(c.sliding_threshold(), 0.5);
    assert_eq!(c.token_format(), TokenFormat::Simple);
    assert_eq!(c.header_name().as_str(), "x-session-token");
    assert!(c.use_bearer_token());
    assert_eq!(
        c.token_source_priority(),
        &[TokenSource::Header, TokenSource::Bearer]
    );
    assert_eq!(c.jwt_algorithm(), JwtAlgorithm::HS256);
    assert_eq!(c.jwt_issuer(), None);
    assert_eq!(c.jwt_audience(), None);
    assert_eq!(c.jwt_leeway(), Duration::ZERO);
    assert!(!c.ip_binding());
    assert!(!c.user_agent_binding());
    assert!(c.regenerate_on_login());
    assert_eq!(c.backend_key_prefix(), "session:");
    assert!(c.trusted_proxies().is_empty());
    assert!(c.cookie().is_none());
    let cookie = CookieConfig::new();
    assert!(cookie.is_http_only() && cookie.is_secure());
    assert_eq!(cookie.get_same_site(), SameSite::Lax);
}

#[test]
fn builder_rejects_invalid_values_naming_the_field() {
    let b = || SessionConfig::builder(SECRET);
    let field = |r: Result<SessionConfig, SessionConfigError>| r.expect_err("invalid").field();
    assert_eq!(field(SessionConfig::builder("short").build()), "secret_key");
    assert_eq!(
        field(SessionConfig::builder("x".repeat(31)).build()),
        "secret_key"
    );
    SessionConfig::builder("é".repeat(32))
        .build()
        .expect("32 characters, more bytes");
    assert_eq!(
        field(b().sliding_threshold(1.5).build()),
        "sliding_threshold"
    );
    assert_eq!(
        field(b().sliding_threshold(-0.1).build()),
        "sliding_threshold"
    );
    assert_eq!(
        field(b().sliding_threshold(f64::NAN).build()),
        "sliding_threshold"
    );
    b().sliding_threshold(0.0).build().expect("0 is allowed");
    b().sliding_threshold(1.0).build().expect("1 is allowed");
    assert_eq!(
        field(b().session_ttl(Duration::ZERO).build()),
        "session_ttl"
    );
    assert_eq!(
        field(b().absolute_timeout(Duration::from_millis(10)).build()),
        "absolute_timeout"
    );
    assert_eq!(field(b().header_name("bad header").build()), "header_name");
    assert_eq!(
        field(b().header_name("Authorization").build()),
        "header_name"
    );
    assert_eq!(
        field(b().token_source_priority([]).build()),
        "token_source_priority"
    );
    assert_eq!(
        field(
            b().token_source_priority([TokenSource::Header, TokenSource::Header])
                .build()
        ),
        "token_source_priority"
    );
    assert_eq!(field(b().jwt_issuer("").build()), "jwt_issuer");
    assert_eq!(
        field(b().jwt_leeway(Duration::from_millis(1500)).build()),
        "jwt_leeway"
    );
    assert_eq!(
        field(b().backend_key_prefix("").build()),
        "backend_key_prefix"
    );
    assert_eq!(
        field(b().trusted_proxies(["10.0.0.0/33"]).build()),
        "trusted_proxies"
    );
    assert_eq!(
        field(b().trusted_proxies(["proxy.local"]).build()),
        "trusted_proxies"
    );
    assert_eq!(
        field(b().cookie(CookieConfig::new().name("a b")).build()),
        "cookie.name"
    );
    assert_eq!(
        field(b().cookie(CookieConfig::new().path("app")).build()),
        "cookie.path"
    );
    assert_eq!(
        field(
            b().cookie(CookieConfig::new().same_site(SameSite::None).secure(false))
                .build()
        ),
        "cookie.same_site"
    );
    // A name with a browser-enforced prefix must meet its conditions.
    assert_eq!(
        field(
            b().cookie(CookieConfig::new().name("__Host-sid").path("/app"))
                .build()
        ),
        "cookie.name"
    );
    assert_eq!(
        field(
            b().cookie(CookieConfig::new().name("__Host-sid").domain("example.com"))
                .build()
        ),
        "cookie.name"
    );
    assert_eq!(
        field(
            b().cookie(CookieConfig::new().name("__Secure-sid").secure(false))
                .build()
        ),
        "cookie.name"
    );
    let e = b().sliding_threshold(2.0).build().expect_err("invalid");
    assert!(e.to_string().contains("sliding_threshold"), "{e}");
}

#[test]
fn deserialisation_validates_and_names_the_field() {
    let ok: SessionConfig = serde_json::from_str(&format!(
        r#"{{"secret_key": "{SECRET}", "session_ttl": 60, "absolute_timeout": 600,
            "token_format": "jwt", "jwt_algorithm": "HS512", "jwt_issuer": "me",
            "token_source_priority": ["bearer", "cookie", "header"],
            "trusted_proxies": ["10.0.0.0/8", "::1"],
            "cookie": {{"name": "sid", "same_site": "strict", "secure": true}}}}"#
    ))
    .expect("valid config");
    assert_eq!(ok.session_ttl(), Duration::from_secs(60));
    assert_eq!(ok.absolute_timeout(), Some(Duration::from_secs(600)));
    assert_eq!(ok.token_format(), TokenFormat::Jwt);
    assert_eq!(ok.jwt_algorithm(), JwtAlgorithm::HS512);
    assert_eq!(ok.cookie().map(|c| c.get_name()), Some("sid"));
    assert_eq!(
        ok.cookie().map(|c| c.cookie_name().into_owned()),
        Some("__Host-sid".to_owned())
    );
    let plain: SessionConfig = serde_json::from_str(&format!(
        r#"{{"secret_key": "{SECRET}", "cookie": {{"host_prefix": false}}}}"#
    ))
    .expect("valid config");
    assert_eq!(
        plain.cookie().map(|c| c.cookie_name().into_owned()),
        Some("session".to_owned())
    );
    assert_eq!(ok.trusted_proxies().len(), 2);

    let s = SECRET;
    for (json, field) in [
        (r#"{"session_ttl": 60}"#.to_owned(), "secret_key"),
        (
            format!(r#"{{"secret_key": "{s}", "sesion_ttl": 60}}"#),
            "sesion_ttl",
        ),
        (
            format!(r#"{{"secret_key": "{s}", "session_ttl": "an hour"}}"#),
            "session_ttl",
        ),
        (
            format!(r#"{{"secret_key": "{s}", "session_ttl": -5}}"#),
            "session_ttl",
        ),
        (
            format!(r#"{{"secret_key": "{s}", "sliding_threshold": 7}}"#),
            "sliding_threshold",
        ),
        (
            format!(r#"{{"secret_key": "{s}", "token_format": "xml"}}"#),
            "token_format",
        ),
        (
            format!(r#"{{"secret_key": "{s}", "jwt_algorithm": "none"}}"#),
            "jwt_algorithm",
        ),
        (
            format!(r#"{{"secret_key": "{s}", "jwt_algorithm": "RS256"}}"#),
            "jwt_algorithm",
        ),
        (
            format!(r#"{{"secret_key": "{s}", "token_source_priority": ["query"]}}"#),
            "token_source_priority",
        ),
        (
            format!(r#"{{"secret_key": "{s}", "ip_binding": "yes"}}"#),
            "ip_binding",
        ),
        (
            format!(r#"{{"secret_key": "{s}", "cookie": {{"nmae": "x"}}}}"#),
            "nmae",
        ),
        (
            format!(r#"{{"secret_key": "{s}", "cookie": {{"same_site": "sometimes"}}}}"#),
            "cookie.same_site",
        ),
        (r#"{"secret_key": "too short"}"#.to_owned(), "secret_key"),
        (
            format!(r#"{{"secret_key": "{s}", "session_ttl": 1, "session_ttl": 2}}"#),
            "session_ttl",
        ),
    ] {
        let msg = config_err(&json);
        assert!(
            msg.contains(field),
            "{json}: message {msg:?} does not name {field}"
        );
    }
}

#[test]
fn debug_never_prints_the_secret() {
    let builder = SessionConfig::builder(SECRET);
    assert!(!format!("{builder:?}").contains(SECRET));
    let config = builder.build().expect("config");
    assert!(!format!("{config:?}").contains(SECRET));
    assert!(format!("{config:?}").contains("redacted"));
    let manager = axum_cachex::session::SessionManager::new(Arc::new(MemoryBackend::new()), config);
    assert!(!format!("{manager:?}").contains(SECRET));
}

#[test]
fn session_model_methods() {
    let mut s = session_suite::sample_session();
    assert!(s.is_valid());
    assert!(!s.is_expired());
    assert!(!format!("{s:?}").contains(s.id()), "Debug hides the id");
    let id = s.id().to_owned();
    assert_eq!(id.len(), 64);
    assert_ne!(session_suite::sample_session().id(), id, "random ids");

    s.add_flash_message("a", None);
    s.add_flash_message("b", Some("error"));
    assert_eq!(s.get_flash_messages(false).len(), 2);
    let taken = s.get_flash_messages(true);
    assert_eq!(taken[0].category, "info");
    assert_eq!(taken[1].category, "error");
    assert!(s.get_flash_messages(true).is_empty());

    let now = std::time::SystemTime::now();
    s.renew_at(Duration::from_secs(10), now);
    assert_eq!(s.expires_at(), Some(now + Duration::from_secs(10)));
    assert!(s.is_expired_at(now + Duration::from_secs(10)));
    assert!(!s.is_valid_at(now + Duration::from_secs(11)));
    s.invalidate();
    assert_eq!(s.status(), SessionStatus::Invalidated);
    assert!(!s.is_valid_at(now));

    // The session's own JSON keeps every field and round-trips.
    let json = serde_json::to_value(&s).expect("json");
    assert_eq!(json["status"], "invalidated");
    assert!(json["created_at"].is_u64());
    let back: axum_cachex::session::Session = serde_json::from_value(json).expect("back");
    assert_eq!(back.id(), s.id());
}

#[tokio::test]
async fn extractors_without_the_layer_explain_the_fix() {
    let app = Router::new()
        .route("/", get(|_s: SessionHandle| async { "unreachable" }))
        .route(
            "/opt",
            get(|_s: Option<SessionHandle>| async { "unreachable" }),
        );
    for uri in ["/", "/opt"] {
        let r = common::http::send(
            &app,
            axum::http::Request::get(uri)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains("SessionLayer"), "{body}");
    }
}

/// The per-user index key of `user_id` under the default prefix, as the
/// manager derives it (module docs: a keyed hash with the store key).
fn user_index_key(user_id: &str) -> String {
    use hmac::{Hmac, Mac};
    let mac = |key: &[u8], parts: &[&[u8]]| {
        let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("hmac key");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    };
    let store = mac(SECRET.as_bytes(), &[b"axum-cachex/session/store-key"]);
    let hash: String = mac(&store, &[b"uid\0", user_id.as_bytes()])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("session:user:{hash}")
}

/// The recorded expiries (Unix seconds) in a user's index.
async fn indexed_expiries(backend: &dyn Backend, user_id: &str) -> Vec<u64> {
    let raw = backend
        .get(&user_index_key(user_id))
        .await
        .expect("get")
        .expect("index exists");
    let index: serde_json::Value = serde_json::from_slice(&raw).expect("index json");
    index["s"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["e"].as_u64().expect("expiry"))
        .collect()
}

/// A renewal (a plain read) never waits for a locked user index: it tries
/// the lock once and leaves the refresh to a background task. A
/// current-thread runtime runs that task only when the test awaits, so the
/// attempt count seen right after the read is the read's own.
#[tokio::test(flavor = "current_thread")]
async fn a_renewal_does_not_wait_for_a_locked_user_index() {
    let f = session_suite::fixture(
        Arc::new(MemoryBackend::new()),
        session_suite::config()
            .session_ttl(Duration::from_secs(100))
            .sliding_threshold(0.5),
    );
    let m = &f.manager;
    let (s, token) = m
        .create_session(SessionUser::new("nia"), None, None, None)
        .await
        .expect("create");
    let created_exp = indexed_expiries(&*f.backend, "nia").await;
    let lock = format!("{}:lock", user_index_key("nia"));
    assert!(
        f.backend
            .add(&lock, "held".into(), Some(Duration::from_secs(60)))
            .await
            .expect("add"),
        "the test holds the index lock"
    );
    let attempts = f.backend.lock_attempts();

    f.clock.advance(Duration::from_secs(60)); // 40 s left: renewed
    let renewed = m.get_session(&token, None, None).await.expect("renewed");
    assert!(renewed.expires_at() > s.expires_at());
    assert_eq!(
        f.backend.lock_attempts(),
        attempts + 1,
        "one attempt at the lock, no waiting"
    );
    assert_eq!(indexed_expiries(&*f.backend, "nia").await, created_exp);

    // Released: the deferred refresh records the new expiry.
    assert!(f.backend.delete(&lock).await.expect("release"));
    m.flush_index_updates().await;
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };
    assert_eq!(
        indexed_expiries(&*f.backend, "nia").await,
        vec![unix(renewed.expires_at().expect("expiry"))]
    );
    // And the index still finds the session.
    assert_eq!(m.delete_user_sessions("nia").await.expect("drain"), 1);
}
