//! Random values from the OS CSPRNG, and their text forms: the one place
//! the crate makes session ids, OAuth states, lock tokens and epochs.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

/// `N` random bytes.
pub(crate) fn bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)?;
    Ok(buf)
}

/// 16 bytes that differ from every other call's: lock tokens and variant
/// epochs, where uniqueness matters and secrecy does not. Falls back to the
/// clock and a counter if the OS generator fails.
pub(crate) fn unique_token() -> bytes::Bytes {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let raw = bytes::<16>().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let count = u128::from(CALLS.fetch_add(1, Ordering::Relaxed));
        (nanos ^ (count << 64) ^ u128::from(std::process::id())).to_le_bytes()
    });
    bytes::Bytes::copy_from_slice(&raw)
}

/// A unique 64-bit number (see [`unique_token`]).
pub(crate) fn unique_u64() -> u64 {
    let token = unique_token();
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&token[..8]);
    u64::from_le_bytes(raw)
}

/// `len` random bytes as base64url without padding.
pub(crate) fn url_token(len: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(&buf))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Compares two byte strings in time independent of where they differ
/// (the length is not hidden).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_url_safe_and_distinct() {
        let a = url_token(32).expect("random");
        let b = url_token(32).expect("random");
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(
            bytes::<16>().expect("random"),
            bytes::<16>().expect("random")
        );
    }

    #[test]
    fn hex_and_constant_time_eq() {
        assert_eq!(hex(&[0, 1, 0xab, 0xff]), "0001abff");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
