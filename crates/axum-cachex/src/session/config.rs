//! [`SessionConfig`]: every option of the session manager and middleware,
//! validated when built or deserialised.

use std::{borrow::Cow, fmt, net::IpAddr, str::FromStr, time::Duration};

use http::HeaderName;
use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, Visitor},
};

/// Default [`SessionConfig::session_ttl`]: one hour.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(3600);
/// Default [`SessionConfig::header_name`].
pub const DEFAULT_HEADER_NAME: &str = "X-Session-Token";
/// Default [`SessionConfig::backend_key_prefix`].
pub const DEFAULT_KEY_PREFIX: &str = "session:";
/// Default cookie name when the cookie transport is enabled. On the wire
/// it is `__Host-session` by default (see [`CookieConfig::host_prefix`]).
pub const DEFAULT_COOKIE_NAME: &str = "session";
/// The cookie name prefix that makes browsers refuse the cookie unless it
/// is `Secure`, has `Path=/` and no `Domain` (RFC 6265bis §4.1.3.2), so
/// that a sibling subdomain or a plain-HTTP page cannot plant it.
pub const HOST_PREFIX: &str = "__Host-";
/// The cookie name prefix that makes browsers refuse the cookie unless it
/// is `Secure`.
const SECURE_PREFIX: &str = "__Secure-";
/// Minimum length of [`SessionConfig`]'s secret key, in characters.
pub const MIN_SECRET_LEN: usize = 32;

/// A configuration value that was rejected, naming the field.
///
/// Returned by [`SessionConfigBuilder::build`], and the message of the serde
/// error when a [`SessionConfig`] is deserialised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session config: `{field}` {reason}")]
pub struct SessionConfigError {
    field: &'static str,
    reason: String,
}

impl SessionConfigError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The name of the rejected field, as spelled in the serde form
    /// (e.g. `"sliding_threshold"`, `"cookie.same_site"`).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why it was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// How session tokens are formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TokenFormat {
    /// `{session_id}.{hex HMAC-SHA256}.{unix issued_at}` (serde: `"simple"`).
    #[default]
    Simple,
    /// A JWT with the claims `sid`, `iat`, `exp` and the configured
    /// `iss` / `aud` (serde: `"jwt"`).
    Jwt,
}

impl FromStr for TokenFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "simple" => Ok(Self::Simple),
            "jwt" => Ok(Self::Jwt),
            other => Err(format!("must be \"simple\" or \"jwt\" (got {other:?})")),
        }
    }
}

/// Where the middleware looks for the session token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenSource {
    /// The header named by [`SessionConfig::header_name`] (serde: `"header"`).
    Header,
    /// `Authorization: Bearer <token>`, scheme case-insensitive, when
    /// [`SessionConfig::use_bearer_token`] is on (serde: `"bearer"`).
    Bearer,
    /// The session cookie, when [`SessionConfig::cookie`] is set
    /// (serde: `"cookie"`).
    Cookie,
}

impl FromStr for TokenSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "header" => Ok(Self::Header),
            "bearer" => Ok(Self::Bearer),
            "cookie" => Ok(Self::Cookie),
            other => Err(format!(
                "entries must be \"header\", \"bearer\" or \"cookie\" (got {other:?})"
            )),
        }
    }
}

/// The JWT signing algorithm. Only the HMAC family is offered: the key is
/// derived from [`SessionConfig`]'s secret, and pinning one symmetric
/// algorithm rules out `none` and algorithm-switching attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 (serde: `"HS256"`).
    #[default]
    HS256,
    /// HMAC-SHA384 (serde: `"HS384"`).
    HS384,
    /// HMAC-SHA512 (serde: `"HS512"`).
    HS512,
}

impl FromStr for JwtAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "HS256" => Ok(Self::HS256),
            "HS384" => Ok(Self::HS384),
            "HS512" => Ok(Self::HS512),
            other => Err(format!(
                "must be \"HS256\", \"HS384\" or \"HS512\" (got {other:?}); asymmetric \
                 algorithms and \"none\" are not supported"
            )),
        }
    }
}

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SameSite {
    /// `SameSite=Strict` (serde: `"strict"`).
    Strict,
    /// `SameSite=Lax` (serde: `"lax"`), the default.
    #[default]
    Lax,
    /// `SameSite=None` (serde: `"none"`); requires `secure`.
    None,
}

impl SameSite {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "Strict",
            Self::Lax => "Lax",
            Self::None => "None",
        }
    }
}

impl FromStr for SameSite {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "strict" => Ok(Self::Strict),
            "lax" => Ok(Self::Lax),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "must be \"strict\", \"lax\" or \"none\" (got {s:?})"
            )),
        }
    }
}

/// The cookie transport: when set on the config, the middleware also reads
/// the token from this cookie and answers with `Set-Cookie`.
///
/// Defaults: name `session`, path `/`, no domain, `Secure`, `HttpOnly`,
/// `SameSite=Lax`, persistent (`Max-Age` follows the session's expiry),
/// and the `__Host-` prefix.
///
/// **The `__Host-` prefix.** A cookie that is `Secure`, has `Path=/` and no
/// `Domain` is written and read as `__Host-{name}` (`__Host-session` by
/// default): browsers accept such a cookie only from a secure origin, for
/// exactly this host, so a sibling subdomain (or a man in the middle on
/// plain HTTP) cannot plant a session cookie for the app (session
/// fixation). Only that exact name is read; a plain `session` cookie is
/// ignored. The prefix is left out when the cookie does not qualify
/// (`secure(false)` for a plain-HTTP development server, a `path` or a
/// `domain`), when the name already starts with `__Host-` or `__Secure-`
/// (used as given, and checked: `__Host-` requires the three conditions,
/// `__Secure-` requires `Secure`), and when turned off with
/// [`host_prefix(false)`](Self::host_prefix), e.g. to keep the cookie of an
/// existing deployment. [`cookie_name`](Self::cookie_name) tells the name
/// in use.
///
/// ```
/// use axum_cachex::session::{CookieConfig, SameSite};
///
/// let cookie = CookieConfig::new().name("sid").same_site(SameSite::Strict);
/// assert_eq!(cookie.get_name(), "sid");
/// assert_eq!(cookie.cookie_name(), "__Host-sid");
/// assert_eq!(cookie.clone().host_prefix(false).cookie_name(), "sid");
/// assert_eq!(cookie.path("/app").cookie_name(), "sid");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct CookieConfig {
    name: String,
    path: String,
    domain: Option<String>,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    persistent: bool,
    host_prefix: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_COOKIE_NAME.to_owned(),
            path: "/".to_owned(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            persistent: true,
            host_prefix: true,
        }
    }
}

impl CookieConfig {
    /// The default cookie settings.
    pub fn new() -> Self {
        Self::default()
    }
    /// The cookie name. Default: `session`. It gets the `__Host-` prefix
    /// on the wire when the cookie qualifies (see [`host_prefix`](Self::host_prefix)).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// The `Path` attribute. Default: `/`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }
    /// The `Domain` attribute. Default: none (host-only cookie).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }
    /// The `Secure` attribute. Default: `true`. Turn it off only for plain
    /// HTTP development servers.
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }
    /// The `HttpOnly` attribute. Default: `true`.
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }
    /// The `SameSite` attribute. Default: [`SameSite::Lax`].
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }
    /// Whether the cookie carries `Max-Age` (the session's remaining
    /// lifetime) or is a browser-session cookie. Default: `true`.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }
    /// Whether the name gets the `__Host-` prefix when the cookie is
    /// `Secure`, has `Path=/` and no `Domain`. Default: `true`. Turn it off
    /// only to keep an existing cookie name: without the prefix a sibling
    /// subdomain can set the session cookie.
    pub fn host_prefix(mut self, on: bool) -> Self {
        self.host_prefix = on;
        self
    }

    /// The cookie name.
    pub fn get_name(&self) -> &str {
        &self.name
    }
    /// The `Path` attribute.
    pub fn get_path(&self) -> &str {
        &self.path
    }
    /// The `Domain` attribute.
    pub fn get_domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }
    /// Whether `Secure` is set.
    pub fn is_secure(&self) -> bool {
        self.secure
    }
    /// Whether `HttpOnly` is set.
    pub fn is_http_only(&self) -> bool {
        self.http_only
    }
    /// The `SameSite` attribute.
    pub fn get_same_site(&self) -> SameSite {
        self.same_site
    }
    /// Whether the cookie carries `Max-Age`.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }
    /// Whether the `__Host-` prefix is asked for (it is applied only when
    /// the cookie qualifies; see [`cookie_name`](Self::cookie_name)).
    pub fn get_host_prefix(&self) -> bool {
        self.host_prefix
    }
    /// The name the cookie is written and read under: the configured
    /// name, with the `__Host-` prefix when it is asked for, the cookie is
    /// `Secure`, has `Path=/` and no `Domain`, and the name carries no
    /// prefix of its own.
    pub fn cookie_name(&self) -> Cow<'_, str> {
        let qualifies = self.secure && self.path == "/" && self.domain.is_none();
        if self.host_prefix && qualifies && !has_prefix(&self.name) {
            Cow::Owned(format!("{HOST_PREFIX}{}", self.name))
        } else {
            Cow::Borrowed(&self.name)
        }
    }

    fn validate(&self) -> Result<(), SessionConfigError> {
        // RFC 6265 cookie-name = token (RFC 7230 tchar).
        let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.name.is_empty() || !self.name.chars().all(tchar) {
            return Err(SessionConfigError::new(
                "cookie.name",
                format!("must be a non-empty HTTP token (got {:?})", self.name),
            ));
        }
        let attr_ok = |s: &str| s.chars().all(|c| c.is_ascii_graphic() && c != ';');
        if !self.path.starts_with('/') || !attr_ok(&self.path) {
            return Err(SessionConfigError::new(
                "cookie.path",
                format!(
                    "must start with '/' and contain no ';' or spaces (got {:?})",
                    self.path
                ),
            ));
        }
        if let Some(d) = &self.domain
            && (d.is_empty() || !attr_ok(d))
        {
            return Err(SessionConfigError::new(
                "cookie.domain",
                format!("must be a non-empty host name (got {d:?})"),
            ));
        }
        self.validate_prefix()?;
        if self.same_site == SameSite::None && !self.secure {
            return Err(SessionConfigError::new(
                "cookie.same_site",
                "\"none\" requires `secure`: browsers reject SameSite=None cookies without it",
            ));
        }
        Ok(())
    }
}

impl CookieConfig {
    /// A name that carries a cookie prefix must meet its conditions, or
    /// browsers drop the cookie silently.
    fn validate_prefix(&self) -> Result<(), SessionConfigError> {
        if starts_with_ignore_case(&self.name, HOST_PREFIX)
            && (!self.secure || self.path != "/" || self.domain.is_some())
        {
            return Err(SessionConfigError::new(
                "cookie.name",
                "a `__Host-` name requires `secure`, path \"/\" and no domain",
            ));
        }
        if starts_with_ignore_case(&self.name, SECURE_PREFIX) && !self.secure {
            return Err(SessionConfigError::new(
                "cookie.name",
                "a `__Secure-` name requires `secure`",
            ));
        }
        Ok(())
    }
}

/// Whether a cookie name carries one of the prefixes browsers enforce
/// (matched case-insensitively, as browsers do).
fn has_prefix(name: &str) -> bool {
    starts_with_ignore_case(name, HOST_PREFIX) || starts_with_ignore_case(name, SECURE_PREFIX)
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// A trusted proxy address or network, e.g. `10.0.0.0/8` or `::1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    network: IpAddr,
    prefix: u8,
}

impl TrustedProxy {
    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, what a dual-stack socket
/// reports) compare as the IPv4 address.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for TrustedProxy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
        let network = canonical(network);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has an invalid prefix length (0..={max})"))?,
        };
        Ok(Self { network, prefix })
    }
}

/// The session secret: kept out of `Debug` output.
#[derive(Clone)]
pub(crate) struct SecretKey(String);

impl SecretKey {
    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The validated configuration of the session manager and middleware.
///
/// Build it with [`SessionConfig::builder`] or deserialise it (any serde
/// format; durations are whole seconds). Either way it is validated:
/// the secret has at least 32 characters, `sliding_threshold` lies in
/// 0.0–1.0, names and enum values are checked, unknown fields are
/// rejected, and every error names the field. `Debug` never prints the
/// secret.
///
/// | field | default |
/// |---|---|
/// | `session_ttl` | 3600 s |
/// | `absolute_timeout` | none |
/// | `sliding_expiration` | `true` |
/// | `sliding_threshold` | 0.5 (renew when less than ttl × threshold remains) |
/// | `token_format` | `simple` (or `jwt`) |
/// | `header_name` | `X-Session-Token` |
/// | `use_bearer_token` | `true` (builder setter: `bearer_token`) |
/// | `token_source_priority` | `[header, bearer]` (`cookie` is consulted last when not listed) |
/// | `jwt_algorithm` | `HS256` (`HS384`, `HS512`) |
/// | `jwt_issuer` / `jwt_audience` | none (required and checked when set) |
/// | `jwt_leeway` | 0 s |
/// | `secret_key` | required, ≥ 32 characters |
/// | `ip_binding` / `user_agent_binding` | `false` |
/// | `regenerate_on_login` | `true` |
/// | `backend_key_prefix` | `session:` |
/// | `trusted_proxies` | none (IPs or CIDR networks) |
/// | `cookie` | none (cookie transport off); see [`CookieConfig`] (name `__Host-session` on the wire) |
///
/// ```
/// use std::time::Duration;
/// use axum_cachex::session::{SessionConfig, TokenFormat};
///
/// let config = SessionConfig::builder("a-secret-of-at-least-32-characters!!")
///     .session_ttl(Duration::from_secs(1800))
///     .token_format(TokenFormat::Jwt)
///     .jwt_issuer("my-app")
///     .build()?;
/// assert!(!format!("{config:?}").contains("a-secret"));
///
/// let from_json: SessionConfig = serde_json::from_str(
///     r#"{"secret_key": "a-secret-of-at-least-32-characters!!", "sliding_threshold": 0.25}"#,
/// )?;
/// assert_eq!(from_json.sliding_threshold(), 0.25);
///
/// let bad = serde_json::from_str::<SessionConfig>(
///     r#"{"secret_key": "a-secret-of-at-least-32-characters!!", "sliding_treshold": 0.25}"#,
/// );
/// assert!(bad.unwrap_err().to_string().contains("sliding_treshold"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SessionConfig {
    session_ttl: Duration,
    absolute_timeout: Option<Duration>,
    sliding_expiration: bool,
    sliding_threshold: f64,
    token_format: TokenFormat,
    header_name: HeaderName,
    use_bearer_token: bool,
    token_source_priority: Vec<TokenSource>,
    jwt_algorithm: JwtAlgorithm,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    jwt_leeway: Duration,
    secret_key: SecretKey,
    ip_binding: bool,
    user_agent_binding: bool,
    regenerate_on_login: bool,
    backend_key_prefix: String,
    trusted_proxies: Vec<TrustedProxy>,
    cookie: Option<CookieConfig>,
}

impl SessionConfig {
    /// Starts a configuration with the given secret and every default.
    pub fn builder(secret_key: impl Into<String>) -> SessionConfigBuilder {
        SessionConfigBuilder {
            session_ttl: DEFAULT_SESSION_TTL,
            absolute_timeout: None,
            sliding_expiration: true,
            sliding_threshold: 0.5,
            token_format: TokenFormat::Simple,
            header_name: DEFAULT_HEADER_NAME.to_owned(),
            use_bearer_token: true,
            token_source_priority: vec![TokenSource::Header, TokenSource::Bearer],
            jwt_algorithm: JwtAlgorithm::HS256,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: Duration::ZERO,
            secret_key: SecretKey(secret_key.into()),
            ip_binding: false,
            user_agent_binding: false,
            regenerate_on_login: true,
            backend_key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            trusted_proxies: Vec::new(),
            cookie: None,
        }
    }

    /// Lifetime of a session from its last renewal. Default: 3600 s.
    pub fn session_ttl(&self) -> Duration {
        self.session_ttl
    }
    /// Hard limit on a session's life, counted from its creation (or from
    /// the login that attached its user); sliding renewal never extends past
    /// it. Default: none.
    pub fn absolute_timeout(&self) -> Option<Duration> {
        self.absolute_timeout
    }
    /// Whether reads renew the expiry. Default: `true`.
    pub fn sliding_expiration(&self) -> bool {
        self.sliding_expiration
    }
    /// Renew when less than `session_ttl × sliding_threshold` remains.
    /// Default: 0.5.
    pub fn sliding_threshold(&self) -> f64 {
        self.sliding_threshold
    }
    /// Token format. Default: [`TokenFormat::Simple`].
    pub fn token_format(&self) -> TokenFormat {
        self.token_format
    }
    /// Request and response header carrying the token. Default:
    /// `X-Session-Token`.
    pub fn header_name(&self) -> &HeaderName {
        &self.header_name
    }
    /// Whether `Authorization: Bearer` is read. Default: `true`.
    pub fn use_bearer_token(&self) -> bool {
        self.use_bearer_token
    }
    /// Order in which token sources are consulted. Default:
    /// `[Header, Bearer]`; the cookie, when enabled and not listed, comes
    /// last.
    pub fn token_source_priority(&self) -> &[TokenSource] {
        &self.token_source_priority
    }
    /// JWT algorithm. Default: HS256.
    pub fn jwt_algorithm(&self) -> JwtAlgorithm {
        self.jwt_algorithm
    }
    /// The `iss` claim issued and required. Default: none.
    pub fn jwt_issuer(&self) -> Option<&str> {
        self.jwt_issuer.as_deref()
    }
    /// The `aud` claim issued and required. Default: none.
    pub fn jwt_audience(&self) -> Option<&str> {
        self.jwt_audience.as_deref()
    }
    /// Clock-skew allowance for `exp`, `nbf` and `iat`. Default: 0 s.
    pub fn jwt_leeway(&self) -> Duration {
        self.jwt_leeway
    }
    /// Whether the client IP must match the one the session was created
    /// from. Default: `false`.
    pub fn ip_binding(&self) -> bool {
        self.ip_binding
    }
    /// Whether the `User-Agent` must match the one the session was created
    /// with. Default: `false`.
    pub fn user_agent_binding(&self) -> bool {
        self.user_agent_binding
    }
    /// Whether attaching a user to a session gives it a new id. Default:
    /// `true`.
    pub fn regenerate_on_login(&self) -> bool {
        self.regenerate_on_login
    }
    /// Prefix of every key the manager writes. Default: `session:`.
    pub fn backend_key_prefix(&self) -> &str {
        &self.backend_key_prefix
    }
    /// Proxies whose `X-Forwarded-For` is believed. Default: none.
    pub fn trusted_proxies(&self) -> &[TrustedProxy] {
        &self.trusted_proxies
    }
    /// The cookie transport, when enabled. Default: none.
    pub fn cookie(&self) -> Option<&CookieConfig> {
        self.cookie.as_ref()
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.secret_key
    }

    /// The token sources in the order they are consulted, disabled ones
    /// left out.
    pub(crate) fn effective_sources(&self) -> Vec<TokenSource> {
        let mut out: Vec<TokenSource> = self
            .token_source_priority
            .iter()
            .copied()
            .filter(|s| match s {
                TokenSource::Header => true,
                TokenSource::Bearer => self.use_bearer_token,
                TokenSource::Cookie => self.cookie.is_some(),
            })
            .collect();
        if self.cookie.is_some() && !out.contains(&TokenSource::Cookie) {
            out.push(TokenSource::Cookie);
        }
        out
    }
}

/// Builder of a [`SessionConfig`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionConfigBuilder {
    session_ttl: Duration,
    absolute_timeout: Option<Duration>,
    sliding_expiration: bool,
    sliding_threshold: f64,
    token_format: TokenFormat,
    header_name: String,
    use_bearer_token: bool,
    token_source_priority: Vec<TokenSource>,
    jwt_algorithm: JwtAlgorithm,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    jwt_leeway: Duration,
    secret_key: SecretKey,
    ip_binding: bool,
    user_agent_binding: bool,
    regenerate_on_login: bool,
    backend_key_prefix: String,
    trusted_proxies: Vec<String>,
    cookie: Option<CookieConfig>,
}

impl SessionConfigBuilder {
    /// Session lifetime from its last renewal (≥ 1 s). Default: 3600 s.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }
    /// Hard limit from creation/login (≥ 1 s), or `None`. Default: none.
    pub fn absolute_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.absolute_timeout = timeout.into();
        self
    }
    /// Whether reads renew the expiry. Default: `true`.
    pub fn sliding_expiration(mut self, on: bool) -> Self {
        self.sliding_expiration = on;
        self
    }
    /// Renewal threshold in 0.0–1.0. Default: 0.5.
    pub fn sliding_threshold(mut self, threshold: f64) -> Self {
        self.sliding_threshold = threshold;
        self
    }
    /// Token format. Default: [`TokenFormat::Simple`].
    pub fn token_format(mut self, format: TokenFormat) -> Self {
        self.token_format = format;
        self
    }
    /// Token header name. Default: `X-Session-Token`.
    pub fn header_name(mut self, name: impl Into<String>) -> Self {
        self.header_name = name.into();
        self
    }
    /// Whether `Authorization: Bearer` is read. Default: `true`.
    pub fn bearer_token(mut self, on: bool) -> Self {
        self.use_bearer_token = on;
        self
    }
    /// Former name of [`bearer_token`](Self::bearer_token).
    #[deprecated(
        since = "0.2.0",
        note = "renamed to `bearer_token` (builder setters are bare nouns)"
    )]
    pub fn use_bearer_token(self, on: bool) -> Self {
        self.bearer_token(on)
    }
    /// Token source order (non-empty, no duplicates). Default:
    /// `[Header, Bearer]`.
    pub fn token_source_priority(mut self, order: impl IntoIterator<Item = TokenSource>) -> Self {
        self.token_source_priority = order.into_iter().collect();
        self
    }
    /// JWT algorithm. Default: HS256.
    pub fn jwt_algorithm(mut self, alg: JwtAlgorithm) -> Self {
        self.jwt_algorithm = alg;
        self
    }
    /// The `iss` claim to issue and require. Default: none.
    pub fn jwt_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.jwt_issuer = Some(issuer.into());
        self
    }
    /// The `aud` claim to issue and require. Default: none.
    pub fn jwt_audience(mut self, audience: impl Into<String>) -> Self {
        self.jwt_audience = Some(audience.into());
        self
    }
    /// Clock-skew allowance (whole seconds). Default: 0.
    pub fn jwt_leeway(mut self, leeway: Duration) -> Self {
        self.jwt_leeway = leeway;
        self
    }
    /// Bind sessions to the client IP. Default: `false`.
    pub fn ip_binding(mut self, on: bool) -> Self {
        self.ip_binding = on;
        self
    }
    /// Bind sessions to the `User-Agent`. Default: `false`.
    pub fn user_agent_binding(mut self, on: bool) -> Self {
        self.user_agent_binding = on;
        self
    }
    /// New session id when a user logs in. Default: `true`.
    pub fn regenerate_on_login(mut self, on: bool) -> Self {
        self.regenerate_on_login = on;
        self
    }
    /// Prefix of the manager's keys (non-empty). Default: `session:`.
    pub fn backend_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.backend_key_prefix = prefix.into();
        self
    }
    /// Proxies (IPs or CIDR networks such as `10.0.0.0/8`) whose
    /// `X-Forwarded-For` is believed. Default: none.
    pub fn trusted_proxies<I, T>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.trusted_proxies = proxies.into_iter().map(Into::into).collect();
        self
    }
    /// Enables the cookie transport. Default: off.
    pub fn cookie(mut self, cookie: CookieConfig) -> Self {
        self.cookie = Some(cookie);
        self
    }

    /// Validates and builds the configuration.
    ///
    /// # Errors
    ///
    /// A [`SessionConfigError`] naming the first invalid field: a secret shorter
    /// than 32 characters, a threshold outside 0.0–1.0, a zero TTL, an
    /// invalid header or cookie name, an empty or duplicated source list,
    /// an unparsable trusted proxy, …
    pub fn build(self) -> Result<SessionConfig, SessionConfigError> {
        if self.secret_key.0.chars().count() < MIN_SECRET_LEN {
            return Err(SessionConfigError::new(
                "secret_key",
                format!("must have at least {MIN_SECRET_LEN} characters"),
            ));
        }
        if self.session_ttl < Duration::from_secs(1) {
            return Err(SessionConfigError::new(
                "session_ttl",
                "must be at least 1 second",
            ));
        }
        if self
            .absolute_timeout
            .is_some_and(|t| t < Duration::from_secs(1))
        {
            return Err(SessionConfigError::new(
                "absolute_timeout",
                "must be at least 1 second when set",
            ));
        }
        if !(0.0..=1.0).contains(&self.sliding_threshold) {
            return Err(SessionConfigError::new(
                "sliding_threshold",
                format!(
                    "must be between 0.0 and 1.0 (got {})",
                    self.sliding_threshold
                ),
            ));
        }
        let header_name = HeaderName::from_bytes(self.header_name.as_bytes()).map_err(|_| {
            SessionConfigError::new(
                "header_name",
                format!("is not a valid HTTP header name ({:?})", self.header_name),
            )
        })?;
        if header_name == http::header::AUTHORIZATION || header_name == http::header::COOKIE {
            return Err(SessionConfigError::new(
                "header_name",
                "must not be Authorization or Cookie (use the bearer or cookie sources)",
            ));
        }
        if self.token_source_priority.is_empty() {
            return Err(SessionConfigError::new(
                "token_source_priority",
                "must list at least one source",
            ));
        }
        for (i, s) in self.token_source_priority.iter().enumerate() {
            if self.token_source_priority[..i].contains(s) {
                return Err(SessionConfigError::new(
                    "token_source_priority",
                    format!("lists {s:?} twice"),
                ));
            }
        }
        for (field, value) in [
            ("jwt_issuer", &self.jwt_issuer),
            ("jwt_audience", &self.jwt_audience),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(SessionConfigError::new(field, "must not be empty when set"));
            }
        }
        if self.jwt_leeway.subsec_nanos() != 0 {
            return Err(SessionConfigError::new(
                "jwt_leeway",
                "must be whole seconds",
            ));
        }
        if self.backend_key_prefix.is_empty()
            || self
                .backend_key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(SessionConfigError::new(
                "backend_key_prefix",
                "must be non-empty, without whitespace or control characters",
            ));
        }
        if self
            .backend_key_prefix
            .starts_with(axum_cachex_core::CACHE_NAMESPACE)
        {
            return Err(SessionConfigError::new(
                "backend_key_prefix",
                "must not start with `http:`, the HTTP cache's namespace (clearing the cache would log everyone out)",
            ));
        }
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|s| s.parse::<TrustedProxy>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SessionConfigError::new("trusted_proxies", e))?;
        if let Some(cookie) = &self.cookie {
            cookie.validate()?;
        }
        Ok(SessionConfig {
            session_ttl: self.session_ttl,
            absolute_timeout: self.absolute_timeout,
            sliding_expiration: self.sliding_expiration,
            sliding_threshold: self.sliding_threshold,
            token_format: self.token_format,
            header_name,
            use_bearer_token: self.use_bearer_token,
            token_source_priority: self.token_source_priority,
            jwt_algorithm: self.jwt_algorithm,
            jwt_issuer: self.jwt_issuer,
            jwt_audience: self.jwt_audience,
            jwt_leeway: self.jwt_leeway,
            secret_key: self.secret_key,
            ip_binding: self.ip_binding,
            user_agent_binding: self.user_agent_binding,
            regenerate_on_login: self.regenerate_on_login,
            backend_key_prefix: self.backend_key_prefix,
            trusted_proxies,
            cookie: self.cookie,
        })
    }
}

// ---------------------------------------------------------------------------
// serde: a hand-written map visitor, so that every error (unknown field,
// wrong type, invalid value) names the field; serde's derive reports type
// errors without the field name.

fn field_err<E: de::Error>(field: &str, e: impl fmt::Display) -> E {
    E::custom(format_args!("invalid session config: `{field}`: {e}"))
}

fn next<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    field: &str,
) -> Result<T, A::Error> {
    map.next_value::<T>().map_err(|e| field_err(field, e))
}

fn parse_next<'de, A: MapAccess<'de>, T: FromStr<Err = String>>(
    map: &mut A,
    field: &str,
) -> Result<T, A::Error> {
    let s: String = next(map, field)?;
    s.parse().map_err(|e: String| field_err(field, e))
}

const FIELDS: &[&str] = &[
    "session_ttl",
    "absolute_timeout",
    "sliding_expiration",
    "sliding_threshold",
    "token_format",
    "header_name",
    "use_bearer_token",
    "token_source_priority",
    "jwt_algorithm",
    "jwt_issuer",
    "jwt_audience",
    "jwt_leeway",
    "secret_key",
    "ip_binding",
    "user_agent_binding",
    "regenerate_on_login",
    "backend_key_prefix",
    "trusted_proxies",
    "cookie",
];

struct ConfigVisitor;

impl<'de> Visitor<'de> for ConfigVisitor {
    type Value = SessionConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a session config map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SessionConfig, A::Error> {
        let mut secret: Option<String> = None;
        // The secret is required; start from a placeholder and fill it in.
        let mut b = SessionConfig::builder(String::new());
        let mut seen: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(field_err(&key, "is given twice"));
            }
            match key.as_str() {
                "session_ttl" => b.session_ttl = Duration::from_secs(next(&mut map, &key)?),
                "absolute_timeout" => {
                    b.absolute_timeout =
                        next::<_, Option<u64>>(&mut map, &key)?.map(Duration::from_secs);
                }
                "sliding_expiration" => b.sliding_expiration = next(&mut map, &key)?,
                "sliding_threshold" => b.sliding_threshold = next(&mut map, &key)?,
                "token_format" => b.token_format = parse_next(&mut map, &key)?,
                "header_name" => b.header_name = next(&mut map, &key)?,
                "use_bearer_token" => b.use_bearer_token = next(&mut map, &key)?,
                "token_source_priority" => {
                    let list: Vec<String> = next(&mut map, &key)?;
                    b.token_source_priority = list
                        .iter()
                        .map(|s| s.parse())
                        .collect::<Result<_, String>>()
                        .map_err(|e| field_err(&key, e))?;
                }
                "jwt_algorithm" => b.jwt_algorithm = parse_next(&mut map, &key)?,
                "jwt_issuer" => b.jwt_issuer = next(&mut map, &key)?,
                "jwt_audience" => b.jwt_audience = next(&mut map, &key)?,
                "jwt_leeway" => b.jwt_leeway = Duration::from_secs(next(&mut map, &key)?),
                "secret_key" => secret = Some(next(&mut map, &key)?),
                "ip_binding" => b.ip_binding = next(&mut map, &key)?,
                "user_agent_binding" => b.user_agent_binding = next(&mut map, &key)?,
                "regenerate_on_login" => b.regenerate_on_login = next(&mut map, &key)?,
                "backend_key_prefix" => b.backend_key_prefix = next(&mut map, &key)?,
                "trusted_proxies" => b.trusted_proxies = next(&mut map, &key)?,
                "cookie" => b.cookie = next::<_, Option<CookieSerde>>(&mut map, &key)?.map(|c| c.0),
                other => {
                    return Err(de::Error::unknown_field(other, FIELDS));
                }
            }
            seen.push(key);
        }
        let Some(secret) = secret else {
            return Err(field_err::<A::Error>("secret_key", "is required"));
        };
        b.secret_key = SecretKey(secret);
        b.build().map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for SessionConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ConfigVisitor)
    }
}

/// The serde form of [`CookieConfig`]: `{name, path, domain, secure,
/// http_only, same_site, persistent, host_prefix}`, all optional.
struct CookieSerde(CookieConfig);

const COOKIE_FIELDS: &[&str] = &[
    "name",
    "path",
    "domain",
    "secure",
    "http_only",
    "same_site",
    "persistent",
    "host_prefix",
];

impl<'de> Deserialize<'de> for CookieSerde {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CookieSerde;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a cookie config map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CookieSerde, A::Error> {
                let mut c = CookieConfig::default();
                while let Some(key) = map.next_key::<String>()? {
                    let field = format!("cookie.{key}");
                    match key.as_str() {
                        "name" => c.name = next(&mut map, &field)?,
                        "path" => c.path = next(&mut map, &field)?,
                        "domain" => c.domain = next(&mut map, &field)?,
                        "secure" => c.secure = next(&mut map, &field)?,
                        "http_only" => c.http_only = next(&mut map, &field)?,
                        "same_site" => c.same_site = parse_next(&mut map, &field)?,
                        "persistent" => c.persistent = next(&mut map, &field)?,
                        "host_prefix" => c.host_prefix = next(&mut map, &field)?,
                        other => return Err(de::Error::unknown_field(other, COOKIE_FIELDS)),
                    }
                }
                Ok(CookieSerde(c))
            }
        }
        deserializer.deserialize_map(V)
    }
}
