//! Session ids, key derivation, and the two token formats.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac, digest::KeyInit};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{JwtAlgorithm, SecurityError, SessionConfig, SessionError, TokenError, TokenFormat};

type HmacSha256 = Hmac<Sha256>;

/// Random bytes in a session id: 256 bits, far above the 128 needed.
const ID_BYTES: usize = 32;
/// Length of a session id: lowercase hex of [`ID_BYTES`].
pub(crate) const ID_LEN: usize = ID_BYTES * 2;
/// Length of the hex MAC of a simple token.
const MAC_HEX_LEN: usize = 64;
/// Longest token accepted at all; anything longer is refused unread.
const MAX_TOKEN_LEN: usize = 4096;

/// A fresh session id from the OS CSPRNG.
pub(crate) fn new_session_id() -> Result<String, SessionError> {
    let id = crate::random::bytes::<ID_BYTES>().map_err(SessionError::Random)?;
    Ok(hex(&id))
}

pub(crate) use crate::random::hex;

/// Decodes lowercase hex only: uppercase digits are refused so that each
/// MAC has exactly one accepted spelling.
fn unhex_lower(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

pub(crate) fn is_session_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// HMAC-SHA256 keyed with `key`, without a fallible constructor: this is
/// HMAC's own key schedule (RFC 2104 §2) — a key longer than the 64-byte
/// block is hashed first, a shorter one is zero-padded.
fn hmac(key: &[u8]) -> HmacSha256 {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as KeyInit>::new(&block.into())
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = hmac(key);
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The first 12 characters of a hash, for logs.
pub(crate) fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The short, one-way tag logged instead of a session id or token.
pub(crate) fn log_id(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    hex(&digest[..6])
}

/// Keys derived from the configured secret, one per purpose, so that a
/// value made for one purpose (a token MAC) is never valid for another (a
/// JWT signature, a store key).
#[derive(Clone)]
pub(crate) struct Keys {
    token_mac: [u8; 32],
    store: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

fn derive(secret: &[u8], label: &str) -> [u8; 32] {
    hmac_sha256(secret, &[label.as_bytes()])
}

impl Keys {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self {
            token_mac: derive(secret, "axum-cachex/session/token-mac"),
            store: derive(secret, "axum-cachex/session/store-key"),
        }
    }

    /// Hash of a session id used in store keys: keyed, so a dump of the
    /// store yields neither tokens nor ids.
    pub(crate) fn session_hash(&self, id: &str) -> String {
        hex(&hmac_sha256(&self.store, &[b"sid\0", id.as_bytes()]))
    }

    /// Hash of a user id used in the per-user index key.
    pub(crate) fn user_hash(&self, user_id: &str) -> String {
        hex(&hmac_sha256(&self.store, &[b"uid\0", user_id.as_bytes()]))
    }

    fn mac(&self, id: &str, issued_at: &str) -> [u8; 32] {
        hmac_sha256(
            &self.token_mac,
            &[id.as_bytes(), b".", issued_at.as_bytes()],
        )
    }
}

/// Seconds since the epoch, 0 before it.
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds since the epoch rounded up, for an expiry that must not be
/// advertised earlier than it is.
fn unix_secs_ceil(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

#[derive(Serialize)]
struct ClaimsOut<'a> {
    sid: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// What we read from a JWT ourselves; `iss` and `aud` are checked by
/// `jsonwebtoken`. A missing `sid`, `iat` or `exp` fails deserialisation.
#[derive(Deserialize)]
struct ClaimsIn {
    sid: String,
    iat: u64,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
}

struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    header: Header,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

/// Issues and verifies tokens for one configuration.
pub(crate) struct Tokens {
    format: TokenFormat,
    keys: Keys,
    jwt: Jwt,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    pub(crate) fn new(config: &SessionConfig) -> Self {
        let secret = config.secret().expose();
        let keys = Keys::new(secret);
        // 64 bytes, so that even HS512 gets a key as long as its output
        // (RFC 7518 §3.2): two HMAC blocks with distinct labels.
        let mut jwt_key = Vec::with_capacity(64);
        jwt_key.extend_from_slice(&derive(secret, "axum-cachex/session/jwt/1"));
        jwt_key.extend_from_slice(&derive(secret, "axum-cachex/session/jwt/2"));
        let alg = match config.jwt_algorithm() {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::HS384 => Algorithm::HS384,
            JwtAlgorithm::HS512 => Algorithm::HS512,
        };
        // The algorithm is pinned: `Validation::new` accepts exactly this one,
        // so `none` and algorithm switching fail before any claim is read.
        let mut validation = Validation::new(alg);
        // Time claims are checked against the manager's clock below; the
        // crate's checks would use the system clock and its 60 s leeway.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let mut required = vec!["exp"];
        if let Some(iss) = config.jwt_issuer() {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = config.jwt_audience() {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let jwt = Jwt {
            encoding: EncodingKey::from_secret(&jwt_key),
            decoding: DecodingKey::from_secret(&jwt_key),
            header: Header::new(alg),
            validation,
            issuer: config.jwt_issuer().map(str::to_owned),
            audience: config.jwt_audience().map(str::to_owned),
            leeway: config.jwt_leeway().as_secs(),
        };
        Self {
            format: config.token_format(),
            keys,
            jwt,
        }
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn format(&self) -> TokenFormat {
        self.format
    }

    /// A token for session `id`, issued at `now`, expiring (JWT only) at
    /// `expires_at`.
    pub(crate) fn issue(
        &self,
        id: &str,
        now: SystemTime,
        expires_at: Option<SystemTime>,
        fallback_ttl: Duration,
    ) -> Result<String, SessionError> {
        match self.format {
            TokenFormat::Simple => {
                let ts = unix_secs(now).to_string();
                let mac = self.keys.mac(id, &ts);
                Ok(format!("{id}.{}.{ts}", hex(&mac)))
            }
            TokenFormat::Jwt => {
                let exp = expires_at.unwrap_or_else(|| now + fallback_ttl);
                let claims = ClaimsOut {
                    sid: id,
                    iat: unix_secs(now),
                    exp: unix_secs_ceil(exp),
                    iss: self.jwt.issuer.as_deref(),
                    aud: self.jwt.audience.as_deref(),
                };
                jsonwebtoken::encode(&self.jwt.header, &claims, &self.jwt.encoding)
                    .map_err(|e| SessionError::Signing(Box::new(e)))
            }
        }
    }

    /// Verifies a token and returns the session id it names.
    pub(crate) fn verify(&self, token: &str, now: SystemTime) -> Result<String, SessionError> {
        if token.is_empty() {
            return Err(TokenError::Malformed { reason: "empty" }.into());
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed { reason: "too long" }.into());
        }
        match self.format {
            TokenFormat::Simple => self.verify_simple(token),
            TokenFormat::Jwt => self.verify_jwt(token, now),
        }
    }

    fn verify_simple(&self, token: &str) -> Result<String, SessionError> {
        let malformed = |reason| SessionError::from(TokenError::Malformed { reason });
        let mut parts = token.split('.');
        let (Some(id), Some(mac_hex), Some(ts), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected three dot-separated parts"));
        };
        if !is_session_id(id) {
            return Err(malformed("session id is not 64 lowercase hex digits"));
        }
        if mac_hex.len() != MAC_HEX_LEN {
            return Err(malformed("signature is not 64 hex digits"));
        }
        let Some(mac) = unhex_lower(mac_hex) else {
            return Err(malformed("signature is not lowercase hex"));
        };
        if ts.is_empty() || ts.len() > 20 || !ts.bytes().all(|c| c.is_ascii_digit()) {
            return Err(malformed("timestamp is not a decimal number"));
        }
        // Constant-time comparison of the decoded bytes (`verify_slice`
        // uses `subtle`), so timing reveals nothing about the right MAC.
        let mut expected = hmac(&self.keys.token_mac);
        expected.update(id.as_bytes());
        expected.update(b".");
        expected.update(ts.as_bytes());
        expected
            .verify_slice(&mac)
            .map_err(|_| SecurityError::BadSignature)?;
        Ok(id.to_owned())
    }

    fn verify_jwt(&self, token: &str, now: SystemTime) -> Result<String, SessionError> {
        let data =
            jsonwebtoken::decode::<ClaimsIn>(token, &self.jwt.decoding, &self.jwt.validation)
                .map_err(|e| match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidAlgorithmName
                    | ErrorKind::MissingAlgorithm => {
                        SessionError::from(SecurityError::BadSignature)
                    }
                    ErrorKind::InvalidIssuer => TokenError::Claims {
                        reason: "wrong issuer",
                    }
                    .into(),
                    ErrorKind::InvalidAudience => TokenError::Claims {
                        reason: "wrong audience",
                    }
                    .into(),
                    ErrorKind::MissingRequiredClaim(_) => TokenError::Claims {
                        reason: "a required claim is missing",
                    }
                    .into(),
                    _ => TokenError::Jwt {
                        source: Box::new(e),
                    }
                    .into(),
                })?;
        let claims = data.claims;
        let now = unix_secs(now);
        let leeway = self.jwt.leeway;
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired.into());
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::Claims {
                reason: "issued in the future",
            }
            .into());
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        {
            return Err(TokenError::Claims {
                reason: "not valid yet",
            }
            .into());
        }
        if !is_session_id(&claims.sid) {
            return Err(TokenError::Malformed {
                reason: "sid is not a session id",
            }
            .into());
        }
        Ok(claims.sid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_free_hmac_matches_the_reference_constructor() {
        for len in [0usize, 1, 32, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut a = hmac(&key);
            let mut b = <HmacSha256 as Mac>::new_from_slice(&key).expect("any length");
            a.update(b"message");
            b.update(b"message");
            assert_eq!(
                a.finalize().into_bytes(),
                b.finalize().into_bytes(),
                "len {len}"
            );
        }
    }

    #[test]
    fn hex_round_trips_and_refuses_uppercase() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex_lower("0001abff").as_deref(), Some(&bytes[..]));
        assert_eq!(unhex_lower("0001ABFF"), None);
        assert_eq!(unhex_lower("abc"), None);
    }

    #[test]
    fn ids_are_random_and_well_formed() {
        let a = new_session_id().expect("rng");
        let b = new_session_id().expect("rng");
        assert!(is_session_id(&a) && is_session_id(&b));
        assert_ne!(a, b);
    }
}
