//! Command-line flags. Every flag can also come from the `--config` file;
//! a flag given on the command line wins.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;

const EXAMPLE: &str = "\
Example:
  # Cache what http://127.0.0.1:8000 serves, on port 8080, in memory:
  axum-cachex-proxy --upstream http://127.0.0.1:8000 --listen 127.0.0.1:8080

  # Shared by several proxies through Redis, with the admin routes on 9090:
  axum-cachex-proxy --upstream http://app:8000 --listen 0.0.0.0:8080 \\
      --backend redis://127.0.0.1:6379 --admin 127.0.0.1:9090 --admin-token s3cret

  # proxy.toml: the same options, plus rules per path prefix
  upstream = \"http://127.0.0.1:8000\"
  listen = \"127.0.0.1:8080\"
  backend = \"memcached://10.0.0.1:11211,10.0.0.2:11211\"
  targets = [\"CDN-Cache-Control\"]   # targeted cache control (RFC 9213)
  stale_if_unreachable = 3600         # seconds; 0: never serve stale on 502/504

  [[rules]]
  prefix = \"/static/\"
  default_ttl = 3600                  # seconds, when the response sets no freshness (replaces the heuristic)

  [[rules]]
  prefix = \"/api/account\"
  bypass = true                       # never cached

  [[rules]]
  prefix = \"/api/\"
  credential_headers = [\"X-Api-Key\"] # requests with it are not shared

Admin routes (on --admin only): GET /stats, /metrics, /cached-hits,
/cached-records, / (the dashboard); POST /clear-path?path=/p[&include_params=true],
POST /purge?pattern=/p/*, POST /purge?key=<cache key>, POST /purge?tag=<tag>,
POST /purge?all=true.";

/// The axum-cachex HTTP cache as a caching reverse proxy: an RFC 9111
/// shared cache in front of one upstream.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "axum-cachex-proxy", version, after_help = EXAMPLE)]
pub(crate) struct Cli {
    /// The origin to forward to, e.g. `http://127.0.0.1:8000`.
    #[arg(long, value_name = "URL")]
    pub(crate) upstream: Option<String>,
    /// Where to accept client connections [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,
    /// Where responses are stored: `memory`, `redis://…`,
    /// `redis+cluster://host:port[,host:port…]` or
    /// `memcached://host:port[,host:port…]` [default: memory].
    #[arg(long, value_name = "SPEC")]
    pub(crate) backend: Option<String>,
    /// A TOML file with the same options and per-path-prefix rules.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Where to serve the monitoring and invalidation routes (never on the
    /// proxied listener). Off when not given.
    #[arg(long, value_name = "ADDR")]
    pub(crate) admin: Option<SocketAddr>,
    /// Bearer token the admin routes require. Without it the admin routes
    /// accept loopback clients only.
    #[arg(long, value_name = "TOKEN", env = "AXUM_CACHEX_ADMIN_TOKEN")]
    pub(crate) admin_token: Option<String>,
    /// Send the upstream's own host in `Host` instead of the client's.
    #[arg(long)]
    pub(crate) rewrite_host: bool,
    /// Upper bound on waiting for the upstream's response head, in seconds
    /// [default: 30].
    #[arg(long, value_name = "SECS")]
    pub(crate) upstream_timeout: Option<u64>,
    /// How stale a stored response may be served while the upstream cannot
    /// be reached, unless it says must-revalidate, proxy-revalidate,
    /// no-cache or s-maxage (RFC 9111 §4.2.4); 0 never [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub(crate) stale_if_unreachable: Option<u64>,
}
