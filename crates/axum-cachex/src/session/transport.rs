//! Reading the token and the client address from a request, and writing
//! tokens and cookies into a response.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime},
};

use axum::extract::ConnectInfo;
use http::{
    Extensions, HeaderMap, HeaderValue,
    header::{AUTHORIZATION, CACHE_CONTROL, COOKIE, SET_COOKIE},
};
use tracing::warn;

use super::{
    CookieConfig, SessionConfig, TokenSource,
    config::{TrustedProxy, canonical},
    request::{Issued, TokenOutcome},
};

/// The first token present in the configured source order, and where it
/// came from. Only the first present source counts: a bad token there is
/// not silently replaced by another source's.
pub(crate) fn find_token(
    headers: &HeaderMap,
    config: &SessionConfig,
) -> Option<(String, TokenSource)> {
    for source in config.effective_sources() {
        let found = match source {
            TokenSource::Header => headers
                .get(config.header_name())
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| !s.is_empty()),
            TokenSource::Bearer => headers.get_all(AUTHORIZATION).iter().find_map(bearer),
            TokenSource::Cookie => config
                .cookie()
                .and_then(|c| read_cookie(headers, &c.cookie_name())),
        };
        if let Some(token) = found {
            return Some((token.to_owned(), source));
        }
    }
    None
}

/// `Authorization: Bearer <token>`, the scheme matched case-insensitively
/// (RFC 9110 §11.1).
fn bearer(value: &HeaderValue) -> Option<&str> {
    let s = value.to_str().ok()?.trim();
    let (scheme, rest) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// The value of cookie `name` from the request's `Cookie` headers.
///
/// Read as bytes, pair by pair: another cookie with a non-ASCII value (which
/// browsers send as raw UTF-8) must not hide the session cookie sharing its
/// line. Only the value found has to be text.
pub(crate) fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let at = pair.iter().position(|&b| b == b'=')?;
            let (k, v) = (&pair[..at], &pair[at + 1..]);
            (k.trim_ascii() == name.as_bytes()).then(|| {
                let v = v.trim_ascii();
                v.strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v)
            })
        })
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|v| !v.is_empty())
}

/// The client address used for `ip_binding`.
///
/// The socket peer (axum's `ConnectInfo<SocketAddr>`). Only when that peer
/// is a configured trusted proxy is `X-Forwarded-For` read, from the right:
/// trusted hops are skipped and the first untrusted address is the client.
/// Without trusted proxies the header is ignored, so a client cannot choose
/// the address it is bound to. `X-Real-IP` is never read.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    extensions: &Extensions,
    trusted: &[TrustedProxy],
) -> Option<IpAddr> {
    let peer = canonical(extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip());
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        if !is_trusted(client) {
            break;
        }
        match parse_hop(hop) {
            Some(ip) => client = canonical(ip),
            // An unreadable hop ends what can be believed.
            None => break,
        }
    }
    Some(client)
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// Tells the client about its token: the one issued during the request
/// (login, regeneration, JWT renewal), or the removal of its cookie.
///
/// A client that sent its token by cookie gets it back by cookie, one that
/// used the header or bearer transport by header; a client that sent none
/// gets a cookie when the cookie transport is on. A token never travels in
/// a header to a cookie client (page scripts could read it).
pub(crate) fn write_token(
    headers: &mut HeaderMap,
    config: &SessionConfig,
    source: Option<TokenSource>,
    outcome: TokenOutcome,
    now: SystemTime,
) {
    let TokenOutcome {
        issued,
        remove_cookie,
    } = outcome;
    if issued.is_some() || remove_cookie {
        // A response that issues, renews or removes a token is for this
        // client alone: no cache on the way may keep it (RFC 9111 §5.2.2.5).
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let cookie_transport = match source {
        Some(source) => source == TokenSource::Cookie,
        None => config.cookie().is_some(),
    };
    let cookie = config.cookie().filter(|_| cookie_transport);
    match (issued, cookie) {
        (Some(Issued { token, expires_at }), Some(cookie)) => {
            match session_cookie(cookie, &token, expires_at, now) {
                Some(v) => {
                    headers.append(SET_COOKIE, v);
                }
                None => warn!("session cookie could not be encoded"),
            }
        }
        (Some(Issued { token, .. }), None) => match HeaderValue::from_str(&token) {
            Ok(mut v) => {
                v.set_sensitive(true);
                headers.insert(config.header_name().clone(), v);
            }
            Err(_) => warn!("session token could not be encoded as a header"),
        },
        (None, _) => {
            if let Some(v) = config
                .cookie()
                .filter(|_| remove_cookie)
                .and_then(removal_cookie)
            {
                headers.append(SET_COOKIE, v);
            }
        }
    }
}

/// `Set-Cookie` carrying a token.
pub(crate) fn session_cookie(
    cookie: &CookieConfig,
    token: &str,
    expires_at: Option<SystemTime>,
    now: SystemTime,
) -> Option<HeaderValue> {
    let max_age = if cookie.is_persistent() {
        expires_at.map(|e| {
            let d = e.duration_since(now).unwrap_or(Duration::ZERO);
            d.as_secs() + u64::from(d.subsec_nanos() > 0)
        })
    } else {
        None
    };
    build_cookie(cookie, token, max_age, false)
}

/// `Set-Cookie` that deletes the session cookie: same name, path, domain
/// and flags (a browser only replaces a cookie with matching attributes).
pub(crate) fn removal_cookie(cookie: &CookieConfig) -> Option<HeaderValue> {
    build_cookie(cookie, "", Some(0), true)
}

fn build_cookie(
    cookie: &CookieConfig,
    value: &str,
    max_age: Option<u64>,
    expired: bool,
) -> Option<HeaderValue> {
    let mut s = format!(
        "{}={value}; Path={}",
        cookie.cookie_name(),
        cookie.get_path()
    );
    if let Some(d) = cookie.get_domain() {
        s.push_str("; Domain=");
        s.push_str(d);
    }
    if let Some(age) = max_age {
        s.push_str(&format!("; Max-Age={age}"));
    }
    if expired {
        s.push_str("; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
    }
    if cookie.is_http_only() {
        s.push_str("; HttpOnly");
    }
    if cookie.is_secure() {
        s.push_str("; Secure");
    }
    s.push_str("; SameSite=");
    s.push_str(cookie.get_same_site().as_str());
    HeaderValue::from_str(&s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &[&str]) -> Vec<TrustedProxy> {
        list.iter().map(|s| s.parse().expect("proxy")).collect()
    }

    fn ext(peer: &str) -> Extensions {
        let mut e = Extensions::new();
        e.insert(ConnectInfo(peer.parse::<SocketAddr>().expect("addr")));
        e
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).expect("hv"));
        h
    }

    #[test]
    fn forwarded_for_is_ignored_without_trusted_proxies() {
        let ip = client_ip(&xff("6.6.6.6"), &ext("1.2.3.4:5"), &[]);
        assert_eq!(ip, Some("1.2.3.4".parse().expect("ip")));
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_skipping_trusted_hops() {
        let t = trusted(&["10.0.0.0/8"]);
        // spoofed, real client, inner proxy
        let h = xff("6.6.6.6, 203.0.113.7, 10.1.1.1");
        let ip = client_ip(&h, &ext("10.0.0.2:80"), &t);
        assert_eq!(ip, Some("203.0.113.7".parse().expect("ip")));
        // The peer is not a trusted proxy: the header is not believed.
        let ip = client_ip(&h, &ext("198.51.100.1:80"), &t);
        assert_eq!(ip, Some("198.51.100.1".parse().expect("ip")));
        // Mapped IPv6 peers match IPv4 networks.
        let ip = client_ip(&xff("203.0.113.9"), &ext("[::ffff:10.0.0.2]:80"), &t);
        assert_eq!(ip, Some("203.0.113.9".parse().expect("ip")));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(&HeaderValue::from_static("bEaReR abc")), Some("abc"));
        assert_eq!(bearer(&HeaderValue::from_static("Basic abc")), None);
        assert_eq!(bearer(&HeaderValue::from_static("Bearer ")), None);
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; session=tok; b=2"));
        assert_eq!(read_cookie(&h, "session"), Some("tok"));
        assert_eq!(read_cookie(&h, "sess"), None);
    }

    /// Found by the `cookie` property: a line was read only when all of it
    /// was visible ASCII, so another cookie with a UTF-8 value on the same
    /// line (`Cookie: name=José; session=tok`) made the session disappear.
    #[test]
    fn a_non_ascii_neighbour_does_not_hide_the_session_cookie() {
        let mut h = HeaderMap::new();
        let line = HeaderValue::from_bytes("name=Jos\u{e9}; session=tok".as_bytes())
            .expect("obs-text is a valid field value");
        h.append(COOKIE, line);
        assert_eq!(read_cookie(&h, "session"), Some("tok"));
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"session=\xff").expect("obs-text"),
        );
        assert_eq!(read_cookie(&h, "session"), None);
    }
}
