//! The stored HTTP response and its wire format.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Version byte written after the magic. An entry of any other version
/// decodes to [`DecodeError::UnsupportedVersion`] and is treated as a miss.
pub const ENTRY_FORMAT_VERSION: u8 = 2;

const MAGIC: &[u8; 4] = b"ACXE";

/// Spare header slots reserved when decoding; see `read_from`.
const EXTRA_HEADER_ROOM: usize = 6;

/// A cached HTTP response: everything needed to answer a request byte for
/// byte as the handler did, plus its freshness bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The handler's status code.
    pub status: StatusCode,
    /// The handler's end-to-end headers (never `Set-Cookie`, never
    /// hop-by-hop headers; the layer filters them before storing).
    pub headers: HeaderMap,
    /// The exact body bytes.
    pub body: Bytes,
    /// The entity tag sent as `ETag`, quotes and `W/` included.
    pub etag: HeaderValue,
    /// When the response was produced.
    pub stored_at: SystemTime,
    /// How long it is fresh (`max-age`).
    pub fresh_for: Duration,
    /// How long past freshness it may be served while a refresh runs
    /// (`stale-while-revalidate`).
    pub stale_while_revalidate: Duration,
    /// How long past freshness it may be served when the handler fails
    /// (`stale-if-error`).
    pub stale_if_error: Duration,
    /// The normalised values of the request headers named by the response's
    /// `Vary`, which select this variant; empty when it has no `Vary`.
    pub vary_key: Bytes,
}

/// Why bytes read from a backend are not a [`CacheEntry`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes do not start with the entry magic: not an entry at all.
    #[error("not a cache entry (bad magic)")]
    BadMagic,
    /// Written by another version of the format.
    #[error("cache entry format version {0} is not supported (expected {ENTRY_FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// The record kind is unknown.
    #[error("cache record kind {0} is unknown")]
    UnknownKind(u8),
    /// The bytes end before the entry does.
    #[error("cache entry is truncated")]
    Truncated,
    /// Bytes left over after the entry: corrupt.
    #[error("cache entry has {0} trailing bytes")]
    TrailingBytes(usize),
    /// The status code is out of range.
    #[error("cache entry has an invalid status code {0}")]
    InvalidStatus(u16),
    /// A header name or value is not valid HTTP.
    #[error("cache entry has an invalid header")]
    InvalidHeader,
    /// The storage time is beyond what this platform's clock can represent.
    #[error("cache entry has a storage time out of range")]
    InvalidTimestamp,
}

impl CacheEntry {
    /// The age of the entry at `now` (zero if the clock went backwards).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.stored_at).unwrap_or_default()
    }

    /// Whether the entry is fresh at `now`.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.age(now) < self.fresh_for
    }

    /// How long a store should keep the entry: freshness plus the longest
    /// stale window.
    pub fn storage_ttl(&self) -> Duration {
        self.fresh_for
            .saturating_add(self.stale_while_revalidate.max(self.stale_if_error))
    }

    /// Whether the format can hold the entry exactly: the ETag and the
    /// selecting key within 64 KiB, at most 65 535 headers, each name
    /// within 64 KiB. An entry that cannot is not stored (encoding it
    /// would truncate it).
    pub fn is_encodable(&self) -> bool {
        let short = |n: usize| n <= usize::from(u16::MAX);
        short(self.etag.len())
            && short(self.vary_key.len())
            && short(self.headers.len())
            && self.headers.keys().all(|name| short(name.as_str().len()))
            && self
                .headers
                .values()
                .all(|value| u32::try_from(value.len()).is_ok())
    }

    /// How much of [`storage_ttl`](Self::storage_ttl) is left at `now`.
    pub fn storage_ttl_left(&self, now: SystemTime) -> Duration {
        self.storage_ttl().saturating_sub(self.age(now))
    }

    fn write_to(&self, out: &mut BytesMut) {
        out.put_u16(self.status.as_u16());
        out.put_u64(millis_since_epoch(self.stored_at));
        out.put_u64(duration_millis(self.fresh_for));
        out.put_u64(duration_millis(self.stale_while_revalidate));
        out.put_u64(duration_millis(self.stale_if_error));
        put_bytes16(out, self.etag.as_bytes());
        put_bytes16(out, &self.vary_key);
        // Header count is bounded by u16; saturate rather than panic, and
        // write exactly that many.
        let count = self.headers.len().min(u16::MAX as usize);
        out.put_u16(count as u16);
        for (name, value) in self.headers.iter().take(count) {
            put_bytes16(out, name.as_str().as_bytes());
            out.put_u32(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        out.put_u64(self.body.len() as u64);
        out.put_slice(&self.body);
    }

    fn encoded_len_hint(&self) -> usize {
        let header_bytes: usize = self
            .headers
            .iter()
            .map(|(n, v)| 6 + n.as_str().len() + v.len())
            .sum();
        48 + self.etag.len() + self.vary_key.len() + header_bytes + self.body.len()
    }

    fn read_from(r: &mut Reader) -> Result<Self, DecodeError> {
        let status_code = r.u16()?;
        let status = StatusCode::from_u16(status_code)
            .map_err(|_| DecodeError::InvalidStatus(status_code))?;
        // Checked: how far a `SystemTime` reaches depends on the platform
        // (on Windows, not to `u64::MAX` milliseconds after the epoch).
        let stored_at = UNIX_EPOCH
            .checked_add(Duration::from_millis(r.u64()?))
            .ok_or(DecodeError::InvalidTimestamp)?;
        let fresh_for = Duration::from_millis(r.u64()?);
        let stale_while_revalidate = Duration::from_millis(r.u64()?);
        let stale_if_error = Duration::from_millis(r.u64()?);
        let etag_len = r.u16()? as usize;
        let etag = HeaderValue::from_maybe_shared(r.take(etag_len)?)
            .map_err(|_| DecodeError::InvalidHeader)?;
        let vary_len = r.u16()? as usize;
        let vary_key = r.take(vary_len)?;
        let count = r.u16()? as usize;
        // Room for the headers a cache adds when it answers (ETag,
        // Cache-Control, Age, Cache-Status, Content-Length) so that adding
        // them does not grow the map.
        // Bounded: a corrupt count must not make `HeaderMap` panic on a
        // capacity beyond its maximum.
        let mut headers = HeaderMap::try_with_capacity((count + EXTRA_HEADER_ROOM).min(1024))
            .map_err(|_| DecodeError::InvalidHeader)?;
        for _ in 0..count {
            let name_len = r.u16()? as usize;
            let name = HeaderName::from_bytes(r.bytes(name_len)?)
                .map_err(|_| DecodeError::InvalidHeader)?;
            let value_len = r.u32()? as usize;
            let value = HeaderValue::from_maybe_shared(r.take(value_len)?)
                .map_err(|_| DecodeError::InvalidHeader)?;
            headers
                .try_append(name, value)
                .map_err(|_| DecodeError::InvalidHeader)?;
        }
        let body_len = usize::try_from(r.u64()?).map_err(|_| DecodeError::Truncated)?;
        let body = r.take(body_len)?;
        Ok(Self {
            status,
            headers,
            body,
            etag,
            stored_at,
            fresh_for,
            stale_while_revalidate,
            stale_if_error,
            vary_key,
        })
    }
}

/// What the HTTP layer stores under one cache key.
///
/// A response without `Vary` is stored whole under its key. A response
/// with `Vary` is stored under a key of its own per variant (see
/// [`CacheKey::variant`](crate::CacheKey)), and the base key holds a
/// [`VariantIndex`] naming the selecting headers. Storing each variant on
/// its own means a miss writes one response, never the whole set, and
/// concurrent stores of different variants cannot overwrite each other.
///
/// The encoding is versioned and binary-safe: any header value and body
/// byte round-trips, and bytes of another version decode to an error (a
/// miss), never a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "responses are the common case; boxing them would cost an allocation per cache hit"
)]
pub enum CacheRecord {
    /// A stored response.
    Response(CacheEntry),
    /// The base key of a response that varies: where its variants live.
    Variants(VariantIndex),
}

/// The record under the base key of a response with `Vary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantIndex {
    /// The header names the response varies on: lowercased, sorted,
    /// deduplicated.
    pub names: Vec<String>,
    /// A random number that is part of every variant key. Deleting the
    /// index and creating a new one (a new epoch) makes every variant
    /// stored before unreachable, so an invalidation of the base key
    /// reaches all variants.
    pub epoch: u64,
}

const KIND_RESPONSE: u8 = 1;
const KIND_VARIANTS: u8 = 2;

impl CacheRecord {
    /// Encodes the record (the format of [`ENTRY_FORMAT_VERSION`]).
    pub fn encode(&self) -> Bytes {
        let hint = match self {
            Self::Response(entry) => entry.encoded_len_hint(),
            Self::Variants(index) => 16 + index.names.iter().map(|n| n.len() + 2).sum::<usize>(),
        };
        let mut out = BytesMut::with_capacity(8 + hint);
        out.put_slice(MAGIC);
        out.put_u8(ENTRY_FORMAT_VERSION);
        match self {
            Self::Response(entry) => {
                out.put_u8(KIND_RESPONSE);
                entry.write_to(&mut out);
            }
            Self::Variants(index) => {
                out.put_u8(KIND_VARIANTS);
                index.write_to(&mut out);
            }
        }
        out.freeze()
    }

    /// Decodes bytes written by [`encode`](Self::encode). Bodies and header
    /// values share the input buffer (no copy).
    ///
    /// Decoding checks the format only. The bytes come from a store that
    /// others may write to: the HTTP layer filters the decoded headers and
    /// status again before it serves anything.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for anything that is not a complete, valid record
    /// of the current version. Callers treat that as a miss.
    pub fn decode(bytes: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.bytes(4)? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u8()?;
        if version != ENTRY_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let record = match r.u8()? {
            KIND_RESPONSE => Self::Response(CacheEntry::read_from(&mut r)?),
            KIND_VARIANTS => Self::Variants(VariantIndex::read_from(&mut r)?),
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if r.remaining() != 0 {
            return Err(DecodeError::TrailingBytes(r.remaining()));
        }
        Ok(record)
    }
}

/// Most header names a [`VariantIndex`] holds: a response varying on more
/// is not stored.
pub const MAX_VARY_NAMES: usize = 64;

impl VariantIndex {
    fn write_to(&self, out: &mut BytesMut) {
        out.put_u64(self.epoch);
        let count = self.names.len().min(MAX_VARY_NAMES);
        out.put_u16(count as u16);
        for name in self.names.iter().take(count) {
            put_bytes16(out, name.as_bytes());
        }
    }

    fn read_from(r: &mut Reader) -> Result<Self, DecodeError> {
        let epoch = r.u64()?;
        let count = r.u16()? as usize;
        if count > MAX_VARY_NAMES {
            return Err(DecodeError::InvalidHeader);
        }
        let mut names = Vec::with_capacity(count);
        for _ in 0..count {
            let len = r.u16()? as usize;
            let name =
                HeaderName::from_bytes(r.bytes(len)?).map_err(|_| DecodeError::InvalidHeader)?;
            names.push(name.as_str().to_owned());
        }
        Ok(Self { names, epoch })
    }
}

fn put_bytes16(out: &mut BytesMut, bytes: &[u8]) {
    let len = bytes.len().min(u16::MAX as usize);
    out.put_u16(len as u16);
    out.put_slice(&bytes[..len]);
}

fn millis_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(duration_millis)
        .unwrap_or(0)
}

fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Bounds-checked reader: every read returns `Truncated` instead of
/// panicking. Numbers are read from the slice in place; only fields kept in
/// the entry take a (reference-counted, zero-copy) slice of the buffer.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated);
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..start + n])
    }

    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated);
        }
        let start = self.pos;
        self.pos += n;
        Ok(self.buf.slice(start..start + n))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CacheEntry {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        CacheEntry {
            status: StatusCode::CREATED,
            headers,
            body: Bytes::from(vec![0u8, 159, 146, 150, 255, 10, 13]),
            etag: HeaderValue::from_static("W/\"abc\""),
            stored_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            fresh_for: Duration::from_secs(60),
            stale_while_revalidate: Duration::from_secs(5),
            stale_if_error: Duration::from_millis(1500),
            vary_key: Bytes::new(),
        }
    }

    fn encode(entry: CacheEntry) -> Bytes {
        CacheRecord::Response(entry).encode()
    }

    #[test]
    fn round_trips_binary_bodies_and_repeated_headers() {
        let mut entry = sample();
        entry.vary_key = Bytes::from_static(b"accept-language=fr\n");
        entry.body = Bytes::from_static(b"\xffbonjour");
        let record = CacheRecord::Response(entry);
        let decoded = CacheRecord::decode(record.encode()).expect("decode");
        assert_eq!(decoded, record);
        let CacheRecord::Response(decoded) = decoded else {
            panic!("a response");
        };
        let multi: Vec<_> = decoded.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        let index = CacheRecord::Variants(VariantIndex {
            names: vec!["accept-language".into(), "cookie".into()],
            epoch: 0xdead_beef,
        });
        assert_eq!(CacheRecord::decode(index.encode()).expect("decode"), index);
    }

    #[test]
    fn rejects_every_truncation_and_corruption() {
        let bytes = encode(sample());
        for cut in 0..bytes.len() {
            assert!(
                CacheRecord::decode(bytes.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let mut extra = BytesMut::from(&bytes[..]);
        extra.put_u8(0);
        assert_eq!(
            CacheRecord::decode(extra.freeze()),
            Err(DecodeError::TrailingBytes(1))
        );
        let mut wrong_version = BytesMut::from(&bytes[..]);
        wrong_version[4] = 1;
        assert_eq!(
            CacheRecord::decode(wrong_version.freeze()),
            Err(DecodeError::UnsupportedVersion(1))
        );
        let mut wrong_kind = BytesMut::from(&bytes[..]);
        wrong_kind[5] = 9;
        assert_eq!(
            CacheRecord::decode(wrong_kind.freeze()),
            Err(DecodeError::UnknownKind(9))
        );
        assert_eq!(
            CacheRecord::decode(Bytes::from_static(b"hello world")),
            Err(DecodeError::BadMagic)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // More distinct headers than `HeaderMap` can hold (32 768).
        let mut huge = BytesMut::new();
        huge.put_slice(MAGIC);
        huge.put_u8(ENTRY_FORMAT_VERSION);
        huge.put_u8(KIND_RESPONSE);
        huge.put_u16(200);
        huge.put_slice(&[0u8; 32]);
        huge.put_u16(0); // etag
        huge.put_u16(0); // vary key
        huge.put_u16(u16::MAX);
        for i in 0..u16::MAX {
            let name = format!("h{i}");
            huge.put_u16(name.len() as u16);
            huge.put_slice(name.as_bytes());
            huge.put_u32(0);
        }
        huge.put_u64(0);
        assert!(CacheRecord::decode(huge.freeze()).is_err());
        // Pseudo-random garbage after a valid prefix.
        let valid = encode(sample());
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..2000 {
            let mut bytes = BytesMut::from(&valid[..]);
            for _ in 0..(round % 7 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % bytes.len();
                bytes[at] = (seed >> 32) as u8;
            }
            let _ = CacheRecord::decode(bytes.freeze());
        }
    }

    #[test]
    fn freshness() {
        let e = sample();
        assert!(e.is_fresh(e.stored_at + Duration::from_secs(59)));
        assert!(!e.is_fresh(e.stored_at + Duration::from_secs(60)));
        assert_eq!(e.storage_ttl(), Duration::from_secs(65));
        assert_eq!(e.age(e.stored_at - Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(
            e.storage_ttl_left(e.stored_at + Duration::from_secs(60)),
            Duration::from_secs(5)
        );
        assert_eq!(
            e.storage_ttl_left(e.stored_at + Duration::from_secs(99)),
            Duration::ZERO
        );
    }

    /// Found by review while writing the `entry_decode` target: the
    /// storage time was added to the epoch unchecked, which panics where
    /// `SystemTime` cannot reach `u64::MAX` milliseconds (Windows).
    #[test]
    fn any_storage_time_decodes_or_errs() {
        let mut bytes = BytesMut::from(&encode(sample())[..]);
        bytes[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        match CacheRecord::decode(bytes.freeze()) {
            Ok(_) | Err(DecodeError::InvalidTimestamp) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        use crate::fixed_seed::config;

        fn header_name() -> impl Strategy<Value = HeaderName> {
            "[a-z][a-z0-9-]{0,12}".prop_map(|n| HeaderName::from_bytes(n.as_bytes()).expect("name"))
        }

        fn header_value() -> impl Strategy<Value = HeaderValue> {
            proptest::collection::vec(
                any::<u8>().prop_filter("field byte", |&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
                0..16,
            )
            .prop_map(|v| HeaderValue::from_bytes(&v).expect("value"))
        }

        fn entry() -> impl Strategy<Value = CacheEntry> {
            (
                100u16..1000,
                proptest::collection::vec((header_name(), header_value()), 0..6),
                proptest::collection::vec(any::<u8>(), 0..64),
                header_value(),
                (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
                proptest::collection::vec(any::<u8>(), 0..17),
            )
                .prop_map(
                    |(status, headers, body, etag, (at, fresh, swr, sie), vary)| {
                        let mut map = HeaderMap::new();
                        for (name, value) in headers {
                            map.append(name, value);
                        }
                        CacheEntry {
                            status: StatusCode::from_u16(status).expect("status"),
                            headers: map,
                            body: Bytes::from(body),
                            etag,
                            stored_at: UNIX_EPOCH + Duration::from_millis(u64::from(at) * 1000),
                            fresh_for: Duration::from_millis(u64::from(fresh)),
                            stale_while_revalidate: Duration::from_millis(u64::from(swr)),
                            stale_if_error: Duration::from_millis(u64::from(sie)),
                            vary_key: Bytes::from(vary),
                        }
                    },
                )
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn responses_round_trip(entry in entry()) {
                let record = CacheRecord::Response(entry);
                prop_assert_eq!(CacheRecord::decode(record.encode()), Ok(record));
            }

            #[test]
            fn variant_indexes_round_trip(
                names in proptest::collection::vec("[a-z][a-z0-9-]{0,10}", 0..8),
                epoch in any::<u64>(),
            ) {
                let record = CacheRecord::Variants(VariantIndex { names, epoch });
                prop_assert_eq!(CacheRecord::decode(record.encode()), Ok(record));
            }

            /// Any corruption of a valid record: an error or a record that
            /// encodes back to itself, never a panic.
            #[test]
            fn corrupted_records_never_panic(
                entry in entry(),
                edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                cut in any::<usize>(),
            ) {
                let mut bytes = BytesMut::from(&CacheRecord::Response(entry).encode()[..]);
                for (at, byte) in edits {
                    let at = at % bytes.len();
                    bytes[at] = byte;
                }
                let cut = cut % (bytes.len() + 1);
                for candidate in [bytes.clone().freeze(), bytes.freeze().slice(..cut)] {
                    if let Ok(record) = CacheRecord::decode(candidate) {
                        prop_assert_eq!(CacheRecord::decode(record.encode()), Ok(record));
                    }
                }
            }

            #[test]
            fn arbitrary_bytes_are_refused_or_round_trip(data in proptest::collection::vec(any::<u8>(), 0..128)) {
                let mut framed = b"ACXE\x02".to_vec();
                framed.extend_from_slice(&data);
                for candidate in [data, framed] {
                    if let Ok(record) = CacheRecord::decode(Bytes::from(candidate)) {
                        prop_assert_eq!(CacheRecord::decode(record.encode()), Ok(record));
                    }
                }
            }
        }
    }
}
