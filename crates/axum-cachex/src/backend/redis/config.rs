//! Configuration of the Redis backend: where the server is, how long to wait,
//! and which namespace to use.

use std::{fmt, time::Duration};

use ::redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use super::{
    RedisBackend,
    conn::Endpoint,
    tier::{MemoryTier, Tier},
};

/// Default namespace prefix of every key the backend writes.
pub(super) const DEFAULT_KEY_PREFIX: &str = "axum_cachex:";
/// Default bound on one round trip to Redis (waiting for a connection
/// included).
pub(super) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// Default bound on establishing one connection (TCP, TLS, `AUTH`,
/// `SELECT`).
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default pause after a failed connection before the next attempt; it
/// doubles after each further failure up to [`DEFAULT_RECONNECT_MAX_DELAY`].
pub(super) const DEFAULT_RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// Default upper bound of the pause between two connection attempts.
pub(super) const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);
/// Default number of consecutive command timeouts that open the circuit
/// breaker (a server that is alive but frozen).
pub(super) const DEFAULT_BREAKER_THRESHOLD: u32 = 3;

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 6379;

/// Why a [`RedisConfig`] cannot be turned into a backend.
///
/// Only configuration mistakes end up here: an unreachable server is *not*
/// an error at build time (the backend connects lazily, see
/// [`RedisBackend`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConfigError {
    /// The URL or the connection settings could not be parsed.
    #[error("invalid Redis connection settings")]
    Invalid {
        /// The client library's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// TLS was asked for (`rediss://` or [`RedisConfig::tls`]) but the crate
    /// was built without the `redis-tls` feature.
    #[error("TLS connections to Redis need the `redis-tls` feature of axum-cachex")]
    TlsNotEnabled,
    /// The key prefix is empty: `clear()` would then empty the whole
    /// database.
    #[error("the Redis key prefix must not be empty (clear() would delete the whole database)")]
    EmptyPrefix,
    /// A timeout or delay was zero.
    #[error("the Redis {0} must be greater than zero")]
    ZeroDuration(&'static str),
}

/// Settings of a [`RedisBackend`]; also its builder.
///
/// Start from [`RedisConfig::from_url`] or [`RedisConfig::new`] (equivalently
/// [`RedisBackend::builder`]), chain setters, and finish with
/// [`build`](RedisConfig::build). Setters given after a URL override the
/// URL's parts, so a password can come from a secret store while the rest
/// comes from `REDIS_URL`.
///
/// ```
/// use std::time::Duration;
/// use axum_cachex::backend::RedisConfig;
///
/// let backend = RedisConfig::from_url("redis://127.0.0.1:6379/0")
///     .password("s3cret")
///     .key_prefix("shop:")
///     .command_timeout(Duration::from_millis(100))
///     .build()?;
/// # let _ = backend;
/// # Ok::<(), axum_cachex::backend::RedisConfigError>(())
/// ```
///
/// `Debug` never prints the password (nor one embedded in the URL).
#[derive(Clone)]
#[must_use]
pub struct RedisConfig {
    url: Option<String>,
    cluster_nodes: Option<Vec<String>>,
    host: Option<String>,
    port: Option<u16>,
    username: Option<String>,
    password: Option<String>,
    db: Option<i64>,
    tls: Option<bool>,
    #[cfg(feature = "redis-tls")]
    tls_root_cert_pem: Option<Vec<u8>>,
    #[cfg(feature = "redis-tls")]
    tls_client_cert: Option<(Vec<u8>, Vec<u8>)>,
    pub(super) key_prefix: String,
    pub(super) connect_timeout: Duration,
    pub(super) command_timeout: Duration,
    pub(super) reconnect_min_delay: Duration,
    pub(super) reconnect_max_delay: Duration,
    pub(super) breaker_threshold: u32,
    memory_tier: Option<MemoryTier>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            cluster_nodes: None,
            host: None,
            port: None,
            username: None,
            password: None,
            db: None,
            tls: None,
            #[cfg(feature = "redis-tls")]
            tls_root_cert_pem: None,
            #[cfg(feature = "redis-tls")]
            tls_client_cert: None,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            reconnect_min_delay: DEFAULT_RECONNECT_MIN_DELAY,
            reconnect_max_delay: DEFAULT_RECONNECT_MAX_DELAY,
            breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
            memory_tier: None,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RedisConfig");
        let nodes: Option<Vec<String>> = self
            .cluster_nodes
            .as_ref()
            .map(|urls| urls.iter().map(|u| redact_url(u)).collect());
        d.field("url", &self.url.as_deref().map(redact_url))
            .field("cluster_nodes", &nodes)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("tls", &self.tls);
        #[cfg(feature = "redis-tls")]
        d.field("tls_root_cert_pem", &self.tls_root_cert_pem.is_some())
            .field("tls_client_cert", &self.tls_client_cert.is_some());
        d.field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("reconnect_min_delay", &self.reconnect_min_delay)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("memory_tier", &self.memory_tier)
            .finish()
    }
}

fn invalid(e: ::redis::RedisError) -> RedisConfigError {
    RedisConfigError::Invalid {
        source: Box::new(e),
    }
}

/// Hides the user-info part (`user:password@`) of a URL.
pub(super) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}<redacted>{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl RedisConfig {
    /// Default settings: `127.0.0.1:6379`, database 0, no password, no TLS,
    /// prefix `axum_cachex:`, 250 ms command timeout, 1 s connect timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Settings from a URL: `redis://[user][:password@]host[:port][/db]`,
    /// `rediss://…` for TLS (feature `redis-tls`), or
    /// `redis+unix:///path/to/socket[?db=N]`. The URL is parsed by
    /// [`build`](Self::build). `rediss://…#insecure` (TLS without
    /// certificate verification) is refused: trust a private CA with
    /// `tls_root_cert_pem` instead.
    pub fn from_url(url: impl Into<String>) -> Self {
        Self::new().url(url)
    }

    /// Connects to this URL (see [`from_url`](Self::from_url)). Default: none,
    /// i.e. `redis://127.0.0.1:6379/0`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Connects to a Redis Cluster through these seed nodes (URLs as for
    /// [`url`](Self::url); one reachable seed is enough, the others are
    /// found with `CLUSTER SLOTS`) instead of a standalone server. Every
    /// other setting applies the same way; credentials and TLS settings
    /// given here override each seed's. [`url`](Self::url),
    /// [`host`](Self::host) and [`port`](Self::port) are then not allowed,
    /// nor a database other than 0 (a Cluster has only database 0). See
    /// [`RedisBackend`]'s section on Cluster for the key layout and what a
    /// failover or a resharding means for cached entries. Default: none
    /// (standalone).
    pub fn cluster_nodes<I>(mut self, nodes: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.cluster_nodes = Some(nodes.into_iter().map(Into::into).collect());
        self
    }

    /// Server host name or IP address. Overrides the URL's host. Default:
    /// `127.0.0.1`.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Server port. Overrides the URL's port. Default: `6379`.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// ACL user name (Redis 6+). Overrides the URL's. Default: none (the
    /// `default` user).
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Password sent with `AUTH` on every (re)connection. Overrides the
    /// URL's. Default: none.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Logical database number selected on every (re)connection. Overrides
    /// the URL's. Default: `0`.
    pub fn db(mut self, db: i64) -> Self {
        self.db = Some(db);
        self
    }

    /// Whether to connect over TLS. Overrides the URL's scheme
    /// (`rediss://` means TLS). Default: `false`. Building with TLS on fails
    /// with [`RedisConfigError::TlsNotEnabled`] unless the `redis-tls`
    /// feature is enabled.
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = Some(tls);
        self
    }

    /// PEM certificate(s) of the certificate authority to trust instead of
    /// the system's root store (e.g. for a self-signed server certificate).
    /// Default: the system root store.
    #[cfg(feature = "redis-tls")]
    pub fn tls_root_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert_pem = Some(pem.into());
        self
    }

    /// Client certificate and private key (PEM) for servers that require
    /// mutual TLS. Default: none.
    #[cfg(feature = "redis-tls")]
    pub fn tls_client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_client_cert = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Namespace prefix put in front of every key, so that several
    /// applications (or caches) can share one database and `clear()` only
    /// empties this one. Must not be empty. Default: `axum_cachex:`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Bound on establishing one connection: TCP connect, TLS handshake,
    /// `AUTH` and `SELECT`. Default: 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on one round trip (one command, one pipeline or one script),
    /// *including* any wait for a connection. When it elapses the call fails
    /// with [`BackendError::Timeout`](crate::backend::BackendError::Timeout).
    /// Bulk operations (`clear`, `clear_pattern`, `keys`, `entries`) make
    /// several round trips, each bounded by it. Default: 250 ms.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Pause of the circuit breaker after a failed connection attempt, or
    /// after [`breaker_threshold`](Self::breaker_threshold) consecutive
    /// timeouts, before the next attempt (`min`), doubling with each further
    /// failure up to `max`. During the pause calls fail at once with
    /// [`BackendError::Connection`](crate::backend::BackendError::Connection)
    /// instead of each waiting for a server that is known not to answer;
    /// when it is over, a `PING` sent in the background (no request waits
    /// for it) closes the breaker if the server answers within the command
    /// timeout. Default: 50 ms doubling up to 1 s, so a recovered server is
    /// used again within about a second.
    pub fn reconnect_delay(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min_delay = min;
        self.reconnect_max_delay = max.max(min);
        self
    }

    /// Number of consecutive command timeouts (no answer in between) after
    /// which the server is taken for frozen and the circuit breaker opens:
    /// calls then fail at once with
    /// [`BackendError::Connection`](crate::backend::BackendError::Connection)
    /// (the HTTP layer serves from the handler) while a background `PING`,
    /// paced by [`reconnect_delay`](Self::reconnect_delay), waits for the
    /// server to answer again. `0` never opens it on timeouts (connection
    /// failures still do).
    ///
    /// Default: 3. One slow reply does not open it, yet a frozen server is
    /// detected after three waits at most, which under load is the first
    /// command-timeout window; a false alarm (a burst of timeouts from one
    /// slow command) costs only misses until the next probe, 50 ms later by
    /// default.
    pub fn breaker_threshold(mut self, timeouts: u32) -> Self {
        self.breaker_threshold = timeouts;
        self
    }

    /// Puts a bounded in-process tier in front of Redis: reads are served
    /// from process memory while it is trusted, and every change made
    /// through any instance's backend (set, delete, take, compare-and-set,
    /// clears by prefix, path or pattern, so also session invalidations)
    /// reaches every instance's tier through a pub/sub channel
    /// (`{prefix}__invalidations`) within
    /// [`max_staleness`](MemoryTier::max_staleness). See
    /// [`RedisBackend`]'s section on the memory tier. Default: none.
    pub fn memory_tier(mut self, tier: MemoryTier) -> Self {
        self.memory_tier = Some(tier);
        self
    }

    /// Builds the backend without contacting the server: it connects on
    /// first use and reconnects by itself, so the application starts even
    /// when Redis is down.
    ///
    /// # Errors
    ///
    /// [`RedisConfigError`] when the URL does not parse, TLS is asked for
    /// without the `redis-tls` feature, the prefix is empty, or a timeout is
    /// zero.
    pub fn build(self) -> Result<RedisBackend, RedisConfigError> {
        if self.key_prefix.is_empty() {
            return Err(RedisConfigError::EmptyPrefix);
        }
        for (name, value) in [
            ("command timeout", self.command_timeout),
            ("connect timeout", self.connect_timeout),
            ("reconnect delay", self.reconnect_min_delay),
        ] {
            if value.is_zero() {
                return Err(RedisConfigError::ZeroDuration(name));
            }
        }
        let (endpoint, address) = match &self.cluster_nodes {
            None => {
                let client = self.client()?;
                let address = client.get_connection_info().addr().to_string();
                (Endpoint::Standalone(client), address)
            }
            Some(seeds) => self.cluster_client(seeds)?,
        };
        let tier = self.tier()?;
        Ok(RedisBackend::from_parts(endpoint, address, self, tier))
    }

    /// The memory tier and the clients its subscriber connects with (the
    /// server, or each Cluster seed: a `PUBLISH` reaches every node).
    fn tier(&self) -> Result<Option<(Tier, Vec<::redis::Client>)>, RedisConfigError> {
        let Some(settings) = &self.memory_tier else {
            return Ok(None);
        };
        let staleness = Duration::from_millis(4)..=Duration::from_secs(3600);
        if !staleness.contains(&settings.max_staleness) {
            return Err(RedisConfigError::Invalid {
                source: "the memory tier's max_staleness must be between 4 ms and 1 hour".into(),
            });
        }
        if settings.max_ttl.is_zero() {
            return Err(RedisConfigError::ZeroDuration("memory tier max_ttl"));
        }
        let tier = Tier::new(settings.clone()).map_err(|e| RedisConfigError::Invalid {
            source: Box::new(e),
        })?;
        let clients = match &self.cluster_nodes {
            None => vec![self.client()?],
            Some(seeds) => seeds
                .iter()
                .map(|url| self.client_for(self.connection_info(Some(url))?))
                .collect::<Result<_, _>>()?,
        };
        Ok(Some((tier, clients)))
    }

    /// Resolves the URL and the overrides into a client (which does not
    /// connect yet).
    fn client(&self) -> Result<::redis::Client, RedisConfigError> {
        self.client_for(self.connection_info(self.url.as_deref())?)
    }

    fn client_for(&self, info: ConnectionInfo) -> Result<::redis::Client, RedisConfigError> {
        #[cfg(feature = "redis-tls")]
        if let Some(certs) = self.certificates() {
            return ::redis::Client::build_with_tls(info, certs).map_err(invalid);
        }
        ::redis::Client::open(info).map_err(invalid)
    }

    /// The seeds and the overrides as a Cluster client (which does not
    /// connect yet), and the seeds' addresses.
    fn cluster_client(&self, seeds: &[String]) -> Result<(Endpoint, String), RedisConfigError> {
        let refuse = |what: &str| RedisConfigError::Invalid {
            source: format!("{what} cannot be combined with `cluster_nodes`").into(),
        };
        if self.url.is_some() {
            return Err(refuse("`url`"));
        }
        if self.host.is_some() || self.port.is_some() {
            return Err(refuse("`host`/`port`"));
        }
        if seeds.is_empty() {
            return Err(RedisConfigError::Invalid {
                source: "`cluster_nodes` needs at least one seed node".into(),
            });
        }
        if let Some(problem) = super::keys::cluster_prefix_problem(&self.key_prefix) {
            return Err(RedisConfigError::Invalid {
                source: format!(
                    "the key prefix {:?} has {problem}: on a Cluster a prefix may only \
                     contain a complete, non-empty hash tag such as `{{shop}}:`",
                    self.key_prefix
                )
                .into(),
            });
        }
        let seeds = seeds
            .iter()
            .map(|url| self.connection_info(Some(url)))
            .collect::<Result<Vec<_>, _>>()?;
        if seeds.iter().any(|s| s.redis_settings().db() != 0) {
            return Err(RedisConfigError::Invalid {
                source: "a Redis Cluster has only database 0".into(),
            });
        }
        let address = seeds
            .iter()
            .map(|s| s.addr().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let node_template = Box::new(seeds[0].clone());
        // One attempt per call, as for a standalone server: the breakers
        // pace retries. Redirections (`MOVED`/`ASK`) are still followed.
        let builder = ::redis::cluster::ClusterClientBuilder::new(seeds).retries(1);
        #[cfg(feature = "redis-tls")]
        let builder = match self.certificates() {
            Some(certs) => builder.certs(certs),
            None => builder,
        };
        let client = builder.build().map_err(invalid)?;
        let endpoint = Endpoint::Cluster {
            client,
            node_template,
            #[cfg(feature = "redis-tls")]
            certificates: self.certificates(),
        };
        Ok((endpoint, address))
    }

    #[cfg(feature = "redis-tls")]
    fn certificates(&self) -> Option<::redis::TlsCertificates> {
        if self.tls_root_cert_pem.is_none() && self.tls_client_cert.is_none() {
            return None;
        }
        Some(::redis::TlsCertificates {
            client_tls: self
                .tls_client_cert
                .as_ref()
                .map(|(cert, key)| ::redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.tls_root_cert_pem.clone(),
        })
    }

    /// One server's connection settings: `url` (or the default address)
    /// with the overrides applied.
    fn connection_info(&self, url: Option<&str>) -> Result<ConnectionInfo, RedisConfigError> {
        if let Some(url) = url {
            // redis-rs rejects a TLS URL as "invalid" when built without TLS;
            // say what is really missing.
            let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
            let tls_scheme =
                scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys");
            if tls_scheme && !cfg!(feature = "redis-tls") {
                return Err(RedisConfigError::TlsNotEnabled);
            }
        }
        let mut info = match url {
            Some(url) => url.into_connection_info().map_err(invalid)?,
            None => ConnectionAddr::Tcp(DEFAULT_HOST.to_owned(), DEFAULT_PORT)
                .into_connection_info()
                .map_err(invalid)?,
        };

        // Address overrides. `ConnectionAddr` is non-exhaustive: an address
        // kind we do not know is kept unless host or port is overridden.
        let (host, port, tls) = match info.addr() {
            ConnectionAddr::Tcp(h, p) => (Some(h.clone()), Some(*p), false),
            ConnectionAddr::TcpTls { host, port, .. } => (Some(host.clone()), Some(*port), true),
            _ => (None, None, false),
        };
        let tls = self.tls.unwrap_or(tls);
        if self.host.is_some() || self.port.is_some() || self.tls.is_some() {
            let host = self
                .host
                .clone()
                .or(host)
                .unwrap_or_else(|| DEFAULT_HOST.to_owned());
            let port = self.port.or(port).unwrap_or(DEFAULT_PORT);
            let addr = if tls {
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host, port)
            };
            info = info.set_addr(addr);
        }
        match info.addr() {
            ConnectionAddr::TcpTls { .. } if !cfg!(feature = "redis-tls") => {
                return Err(RedisConfigError::TlsNotEnabled);
            }
            ConnectionAddr::TcpTls { insecure: true, .. } => {
                return Err(RedisConfigError::Invalid {
                    source: "`#insecure` (no certificate verification) is not supported; \
                             trust the server's CA with `tls_root_cert_pem` instead"
                        .into(),
                });
            }
            _ => {}
        }

        let mut redis = info.redis_settings().clone();
        if let Some(user) = &self.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        if let Some(db) = self.db {
            redis = redis.set_db(db);
        }
        Ok(info.set_redis_settings(redis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_credentials() {
        assert_eq!(
            redact_url("redis://user:pw@host:1/2"),
            "redis://<redacted>@host:1/2"
        );
        assert_eq!(redact_url("redis://host:1"), "redis://host:1");
        let cfg = RedisConfig::from_url("redis://:hunter2@h").password("hunter3");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter"), "{shown}");
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(matches!(
            RedisConfig::new().key_prefix("").build(),
            Err(RedisConfigError::EmptyPrefix)
        ));
        assert!(matches!(
            RedisConfig::new().command_timeout(Duration::ZERO).build(),
            Err(RedisConfigError::ZeroDuration(_))
        ));
        assert!(matches!(
            RedisConfig::from_url("nonsense://x").build(),
            Err(RedisConfigError::Invalid { .. })
        ));
        #[cfg(not(feature = "redis-tls"))]
        for tls in [
            RedisConfig::from_url("rediss://localhost"),
            RedisConfig::from_url("redis://localhost").tls(true),
        ] {
            assert!(matches!(tls.build(), Err(RedisConfigError::TlsNotEnabled)));
        }
        #[cfg(feature = "redis-tls")]
        assert!(matches!(
            RedisConfig::from_url("rediss://localhost#insecure").build(),
            Err(RedisConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn cluster_settings_are_checked() {
        let ok = RedisConfig::new()
            .cluster_nodes(["redis://a:7000", "redis://:pw@b:7001"])
            .password("override")
            .build()
            .expect("cluster");
        assert!(ok.is_cluster());
        assert!(!format!("{ok:?}").contains("pw"));
        let refused =
            |cfg: RedisConfig| matches!(cfg.build(), Err(RedisConfigError::Invalid { .. }));
        assert!(refused(
            RedisConfig::new().cluster_nodes(Vec::<String>::new())
        ));
        assert!(refused(RedisConfig::new().cluster_nodes(["redis://a:1/2"])));
        assert!(refused(
            RedisConfig::new().cluster_nodes(["redis://a:1"]).db(3)
        ));
        assert!(refused(
            RedisConfig::from_url("redis://x").cluster_nodes(["redis://a:1"])
        ));
        assert!(refused(
            RedisConfig::new().cluster_nodes(["redis://a:1"]).port(2)
        ));
        assert!(refused(RedisConfig::new().cluster_nodes(["nonsense://a"])));
    }

    #[test]
    fn overrides_apply_on_top_of_the_url() {
        let cfg = RedisConfig::from_url("redis://a:1/3").port(2).password("p");
        let client = cfg.client().expect("client");
        let info = client.get_connection_info();
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("a".to_owned(), 2));
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().password(), Some("p"));
    }
}
