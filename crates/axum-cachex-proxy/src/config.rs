//! The proxy's settings: the command line over the optional TOML file,
//! checked once at startup.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use http::{HeaderName, Uri};
use serde::Deserialize;

use crate::cli::Cli;

/// Why the proxy cannot start with the settings it was given.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// No upstream was given.
    #[error("no upstream: pass --upstream http://host:port (or set `upstream` in --config)")]
    NoUpstream,
    /// The upstream is not an `http://host[:port]` URL.
    #[error(
        "upstream {0:?} must be an http:// URL with a host (https upstreams are not supported)"
    )]
    BadUpstream(String),
    /// A rule's prefix does not start with `/`.
    #[error("rule prefix {0:?} must start with '/'")]
    BadPrefix(String),
    /// A header name in the settings is not a valid header name.
    #[error("{0:?} is not a valid header name")]
    BadHeader(String),
    /// A duration is zero where that makes no sense.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

/// The TOML file: the flags' names, plus the rules.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    upstream: Option<String>,
    listen: Option<SocketAddr>,
    backend: Option<String>,
    admin: Option<SocketAddr>,
    admin_token: Option<String>,
    #[serde(default)]
    rewrite_host: bool,
    upstream_timeout: Option<u64>,
    stale_if_unreachable: Option<u64>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    rules: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    prefix: String,
    default_ttl: Option<u64>,
    #[serde(default)]
    bypass: bool,
    #[serde(default)]
    credential_headers: Vec<String>,
}

/// What to do with requests under one path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    /// Matched against the request path, longest prefix first.
    pub(crate) prefix: String,
    /// Freshness for responses without explicit freshness (no `s-maxage`,
    /// `max-age` or `Expires`): it replaces the heuristic freshness of RFC
    /// 9111 §4.2.2, as an operator's explicit choice should.
    pub(crate) default_ttl: Option<Duration>,
    /// Forward without caching at all.
    pub(crate) bypass: bool,
    /// Request headers that carry credentials, besides `Authorization` and
    /// `Cookie`: requests with them are never answered from, nor stored in,
    /// the shared cache unless the response is explicitly public.
    pub(crate) credential_headers: Vec<HeaderName>,
}

/// The checked settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) upstream: Uri,
    pub(crate) listen: SocketAddr,
    pub(crate) backend: String,
    pub(crate) admin: Option<SocketAddr>,
    pub(crate) admin_token: Option<String>,
    pub(crate) rewrite_host: bool,
    pub(crate) upstream_timeout: Duration,
    /// How stale a response may be served while the upstream is
    /// unreachable; zero: never.
    pub(crate) stale_if_unreachable: Duration,
    /// Targeted cache-control fields this cache obeys, most specific first.
    pub(crate) targets: Vec<HeaderName>,
    /// Longest prefix first; always ends with the catch-all `/`.
    pub(crate) rules: Vec<Rule>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_STALE_IF_UNREACHABLE: Duration = Duration::from_secs(3600);

impl Settings {
    /// The command line over the config file (if any).
    pub(crate) fn load(cli: Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read(path)?,
            None => File::default(),
        };
        Self::merge(cli, file)
    }

    fn merge(cli: Cli, file: File) -> Result<Self, ConfigError> {
        let raw = cli
            .upstream
            .or(file.upstream)
            .ok_or(ConfigError::NoUpstream)?;
        let timeout = cli.upstream_timeout.or(file.upstream_timeout);
        if timeout == Some(0) {
            return Err(ConfigError::Zero("upstream_timeout"));
        }
        let listen = cli.listen.or(file.listen);
        Ok(Self {
            upstream: upstream(&raw)?,
            listen: listen.unwrap_or_else(|| {
                DEFAULT_LISTEN
                    .parse()
                    .unwrap_or(([127, 0, 0, 1], 8080).into())
            }),
            backend: cli
                .backend
                .or(file.backend)
                .unwrap_or_else(|| "memory".to_owned()),
            admin: cli.admin.or(file.admin),
            admin_token: cli.admin_token.or(file.admin_token),
            rewrite_host: cli.rewrite_host || file.rewrite_host,
            upstream_timeout: timeout.map_or(DEFAULT_UPSTREAM_TIMEOUT, Duration::from_secs),
            stale_if_unreachable: cli
                .stale_if_unreachable
                .or(file.stale_if_unreachable)
                .map_or(DEFAULT_STALE_IF_UNREACHABLE, Duration::from_secs),
            targets: file
                .targets
                .iter()
                .map(|t| header(t))
                .collect::<Result<_, _>>()?,
            rules: rules(file.rules)?,
        })
    }

    /// The rule for `path`: the longest matching prefix of the path in its
    /// normal form (see [`normalize_path`]), so that no other spelling of a
    /// path escapes its rule.
    pub(crate) fn rule_for(&self, path: &str) -> usize {
        let path = normalize_path(path);
        self.rules
            .iter()
            .position(|r| path.starts_with(&r.prefix))
            .unwrap_or(self.rules.len().saturating_sub(1))
    }
}

/// The path as an upstream may read it (RFC 3986 §6.2.2): percent-encoded
/// unreserved characters decoded (`%61` is `a`), `.` and `..` segments
/// removed (§5.2.4), and runs of `/` collapsed (many servers treat `//x`
/// as `/x`).
pub(crate) fn normalize_path(path: &str) -> String {
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut normal = format!("/{}", out.join("/"));
    if trailing && normal != "/" {
        normal.push('/');
    }
    normal
}

/// Decodes `%XX` where it encodes an unreserved character.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
        match decoded {
            Some(b) => {
                out.push(char::from(b));
                i += 3;
            }
            None => {
                let len = path[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&path[i..i + len]);
                i += len;
            }
        }
    }
    out
}

fn read(path: &PathBuf) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.clone(),
        source,
    })
}

fn upstream(raw: &str) -> Result<Uri, ConfigError> {
    let bad = || ConfigError::BadUpstream(raw.to_owned());
    let uri: Uri = raw.parse().map_err(|_| bad())?;
    let plain_http = uri.scheme_str() == Some("http") && uri.host().is_some_and(|h| !h.is_empty());
    let no_path = uri.path_and_query().is_none_or(|pq| pq.as_str() == "/");
    let authority = uri.authority().map_or("", |a| a.as_str());
    // No credentials in the URL (they would reach logs and `Host`), and a
    // port that is a port.
    let no_userinfo = !authority.contains('@');
    let port_ok = match authority
        .rfind(':')
        .filter(|&i| !authority[i..].contains(']'))
    {
        Some(i) => authority[i + 1..].parse::<u16>().is_ok_and(|n| n > 0),
        None => true,
    };
    if !(plain_http && no_path && no_userinfo && port_ok) {
        return Err(bad());
    }
    Ok(uri)
}

fn header(name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError::BadHeader(name.to_owned()))
}

/// The rules, longest prefix first, with a catch-all `/` at the end.
fn rules(raw: Vec<RuleFile>) -> Result<Vec<Rule>, ConfigError> {
    let mut rules = Vec::with_capacity(raw.len() + 1);
    for r in raw {
        if !r.prefix.starts_with('/') {
            return Err(ConfigError::BadPrefix(r.prefix));
        }
        if r.default_ttl == Some(0) {
            return Err(ConfigError::Zero("default_ttl"));
        }
        rules.push(Rule {
            prefix: r.prefix,
            default_ttl: r.default_ttl.map(Duration::from_secs),
            bypass: r.bypass,
            credential_headers: r
                .credential_headers
                .iter()
                .map(|h| header(h))
                .collect::<Result<_, _>>()?,
        });
    }
    if !rules.iter().any(|r| r.prefix == "/") {
        rules.push(Rule {
            prefix: "/".to_owned(),
            default_ttl: None,
            bypass: false,
            credential_headers: Vec::new(),
        });
    }
    // Stable: of equal lengths, the first written wins.
    rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(upstream: &str) -> Cli {
        Cli {
            upstream: Some(upstream.to_owned()),
            ..Cli::default()
        }
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file: File = toml::from_str(
            r#"
            upstream = "http://file:1"
            backend = "redis://127.0.0.1:6379"
            targets = ["CDN-Cache-Control"]
            [[rules]]
            prefix = "/static/"
            default_ttl = 60
            [[rules]]
            prefix = "/static/private/"
            bypass = true
            credential_headers = ["X-Api-Key"]
            "#,
        )
        .expect("toml");
        let s = Settings::merge(cli("http://flag:2"), file).expect("valid");
        assert_eq!(s.upstream, "http://flag:2");
        assert_eq!(s.backend, "redis://127.0.0.1:6379");
        assert_eq!(s.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(s.upstream_timeout, Duration::from_secs(30));
        let prefixes: Vec<_> = s.rules.iter().map(|r| r.prefix.as_str()).collect();
        assert_eq!(prefixes, ["/static/private/", "/static/", "/"]);
        assert!(s.rules[s.rule_for("/static/private/x")].bypass);
        assert_eq!(
            s.rules[s.rule_for("/static/app.js")].default_ttl,
            Some(Duration::from_secs(60))
        );
        assert_eq!(s.rules[s.rule_for("/other")].prefix, "/");
        assert_eq!(s.targets, [HeaderName::from_static("cdn-cache-control")]);
    }

    #[test]
    fn paths_are_matched_in_their_normal_form() {
        for (raw, normal) in [
            ("/api/%61ccount", "/api/account"),
            ("/api/%2Fx", "/api/%2Fx"),
            ("/static/../api/account", "/api/account"),
            ("//api//account/", "/api/account/"),
            ("/./a/./b/..", "/a/"),
            ("/%7euser/%C3%A9", "/~user/%C3%A9"),
            ("/", "/"),
            ("/..", "/"),
        ] {
            assert_eq!(normalize_path(raw), normal, "{raw}");
        }
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let empty = File::default;
        assert!(matches!(
            Settings::merge(Cli::default(), empty()),
            Err(ConfigError::NoUpstream)
        ));
        for bad in [
            "https://x",
            "ftp://x",
            "http://x/path",
            "x:1",
            "http://",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:0",
            "http://user:secret@127.0.0.1:8000",
        ] {
            assert!(
                matches!(
                    Settings::merge(cli(bad), empty()),
                    Err(ConfigError::BadUpstream(_))
                ),
                "{bad}"
            );
        }
        let unknown: Result<File, _> = toml::from_str("upstreem = \"http://x\"");
        assert!(unknown.is_err(), "unknown keys are refused");
        let rule: File = toml::from_str("[[rules]]\nprefix = \"static\"").expect("toml");
        assert!(matches!(
            Settings::merge(cli("http://x"), rule),
            Err(ConfigError::BadPrefix(_))
        ));
    }
}
