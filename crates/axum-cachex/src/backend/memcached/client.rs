//! A minimal client for Memcached's classic text protocol: one connection
//! ([`Conn`]) and one server's small pool ([`Server`]).
//!
//! Only the commands the backend needs: `get` (several keys), `set`, `add`,
//! `replace`, `delete` and `incr`. Every command waits for its answer before
//! the next is sent on the same connection; a connection whose exchange
//! failed in any way (I/O error, error reply, timeout, cancellation) is
//! dropped instead of being reused, so a half-read answer can never be taken
//! for the next command's.

use super::{hints::CounterHints, keys::parse_decimal};
use std::{
    io,
    sync::{Arc, Mutex},
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::{Semaphore, SemaphorePermit},
    time::timeout_at,
};

use crate::backend::breaker::{Breaker, Message, Watch};

/// Largest value accepted in a reply: Memcached's own ceiling for its item
/// size (`-I`) is 1 GiB.
const MAX_VALUE: usize = 1 << 30;

/// Longest reply line accepted (a `VALUE` line has a key of at most 250
/// bytes and three numbers); a longer one means the peer is not Memcached.
const MAX_LINE: u64 = 2048;

/// What went wrong talking to one server; kept as the `source` of the
/// [`BackendError`](axum_cachex_core::BackendError) returned to the caller.
#[derive(Debug, thiserror::Error)]
pub(super) enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("memcached server {server}: {op} failed")]
    Io {
        server: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The connection pool is closed (never happens: it is never closed).
    #[error("memcached server {server}: the connection pool is closed")]
    PoolClosed { server: String },
    /// The server answered `ERROR`, `CLIENT_ERROR …` or `SERVER_ERROR …`
    /// (e.g. `SERVER_ERROR object too large for cache`).
    #[error("memcached server {server} answered {reply:?}")]
    Server { server: String, reply: String },
    /// The answer does not follow the protocol.
    #[error("memcached server {server} sent an unexpected reply: {reply:?}")]
    Protocol { server: String, reply: String },
}

impl ClientError {
    /// Whether the server could not be reached or the connection broke.
    pub(super) fn is_connection(&self) -> bool {
        matches!(self, Self::Io { .. } | Self::PoolClosed { .. })
    }
}

/// One item of a `get` reply.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) key: String,
    pub(super) flags: u32,
    pub(super) data: Bytes,
}

/// The three storage commands the backend uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoreMode {
    /// Store unconditionally.
    Set,
    /// Store only if the key holds nothing.
    Add,
    /// Store only if the key holds something.
    Replace,
    /// Store only if the item still has this CAS unique (read with `gets`).
    Cas(u64),
}

impl StoreMode {
    fn command(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Add => "add",
            Self::Replace => "replace",
            Self::Cas(_) => "cas",
        }
    }
}

/// One open connection to a server. Generic over the stream only so that
/// the reply parser can be fed bytes from memory (property tests, fuzzing);
/// the backend always uses a `TcpStream`.
#[derive(Debug)]
pub(super) struct Conn<S = TcpStream> {
    reader: BufReader<S>,
    server: String,
    line: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wraps a connected stream.
    pub(super) fn new(stream: S, server: &str) -> Self {
        Self {
            reader: BufReader::with_capacity(16 * 1024, stream),
            server: server.to_owned(),
            line: Vec::with_capacity(128),
        }
    }

    fn io(&self, op: &'static str, source: io::Error) -> ClientError {
        ClientError::Io {
            server: self.server.clone(),
            op,
            source,
        }
    }

    fn unexpected(&self, reply: &[u8]) -> ClientError {
        let reply = String::from_utf8_lossy(reply).into_owned();
        let server = self.server.clone();
        if reply == "ERROR"
            || reply.starts_with("CLIENT_ERROR")
            || reply.starts_with("SERVER_ERROR")
        {
            ClientError::Server { server, reply }
        } else {
            ClientError::Protocol { server, reply }
        }
    }

    async fn send(&mut self, request: &[u8]) -> Result<(), ClientError> {
        let stream = self.reader.get_mut();
        match stream.write_all(request).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.io("write", e)),
        }
    }

    /// Reads one reply line without its CR LF into `self.line`.
    async fn read_line(&mut self) -> Result<(), ClientError> {
        self.line.clear();
        let read = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut self.line)
            .await;
        match read {
            Err(e) => Err(self.io("read", e)),
            Ok(0) => Err(self.io(
                "read",
                io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"),
            )),
            Ok(_) => {
                if self.line.ends_with(b"\r\n") {
                    self.line.truncate(self.line.len() - 2);
                    Ok(())
                } else {
                    let reply = self.line.clone();
                    Err(self.unexpected(&reply))
                }
            }
        }
    }

    /// `get k1 k2 …`: the items found, in the server's order.
    pub(super) async fn get_multi(&mut self, keys: &[&str]) -> Result<Vec<Item>, ClientError> {
        let mut request = Vec::with_capacity(8 + keys.iter().map(|k| k.len() + 1).sum::<usize>());
        request.extend_from_slice(b"get");
        for key in keys {
            request.push(b' ');
            request.extend_from_slice(key.as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        self.send(&request).await?;
        let mut items = Vec::new();
        loop {
            self.read_line().await?;
            if self.line == b"END" {
                return Ok(items);
            }
            let Some((key, flags, len)) = parse_value_line(&self.line) else {
                let reply = self.line.clone();
                return Err(self.unexpected(&reply));
            };
            let data = self.read_data(len).await?;
            items.push(Item { key, flags, data });
        }
    }

    /// Reads a data block of `len` bytes and its CR LF.
    async fn read_data(&mut self, len: usize) -> Result<Bytes, ClientError> {
        // Grow with what arrives rather than trusting the announced length
        // for one big allocation.
        let mut data = BytesMut::with_capacity(len.min(1024 * 1024) + 2);
        let mut limited = (&mut self.reader).take(len as u64 + 2);
        // Stops once the block is in: one more `read_buf` on a full buffer
        // would grow (and copy) it just to learn that nothing is left.
        while data.len() < len + 2 {
            match limited.read_buf(&mut data).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(self.io("read", e)),
            }
        }
        if data.len() != len + 2 {
            return Err(self.io(
                "read",
                io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-value"),
            ));
        }
        if !data.ends_with(b"\r\n") {
            return Err(ClientError::Protocol {
                server: self.server.clone(),
                reply: "data block not followed by CR LF".to_owned(),
            });
        }
        data.truncate(len);
        Ok(data.freeze())
    }

    /// `set`/`add`/`replace`/`cas`: whether the value was stored. `parts` are
    /// written back to back as the value (so the envelope head and the
    /// caller's bytes need no joining first).
    pub(super) async fn store(
        &mut self,
        mode: StoreMode,
        key: &str,
        flags: u32,
        exptime: i64,
        parts: &[&[u8]],
    ) -> Result<bool, ClientError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let command = mode.command();
        let header = match mode {
            StoreMode::Cas(unique) => {
                format!("{command} {key} {flags} {exptime} {len} {unique}\r\n")
            }
            _ => format!("{command} {key} {flags} {exptime} {len}\r\n"),
        };
        let mut request = Vec::with_capacity(header.len() + len + 2);
        request.extend_from_slice(header.as_bytes());
        for part in parts {
            request.extend_from_slice(part);
        }
        request.extend_from_slice(b"\r\n");
        self.send(&request).await?;
        self.read_line().await?;
        match self.line.as_slice() {
            b"STORED" => Ok(true),
            // `EXISTS`/`NOT_FOUND`: a `cas` whose item changed or vanished.
            b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" => Ok(false),
            other => {
                let reply = other.to_vec();
                Err(self.unexpected(&reply))
            }
        }
    }

    /// `delete`: whether the key held a value.
    pub(super) async fn delete(&mut self, key: &str) -> Result<bool, ClientError> {
        self.send(format!("delete {key}\r\n").as_bytes()).await?;
        self.read_line().await?;
        match self.line.as_slice() {
            b"DELETED" => Ok(true),
            b"NOT_FOUND" => Ok(false),
            other => {
                let reply = other.to_vec();
                Err(self.unexpected(&reply))
            }
        }
    }

    /// `gets k`: the item and its CAS unique, `None` when absent.
    pub(super) async fn gets(&mut self, key: &str) -> Result<Option<(Item, u64)>, ClientError> {
        self.send(format!("gets {key}\r\n").as_bytes()).await?;
        self.read_line().await?;
        if self.line == b"END" {
            return Ok(None);
        }
        let Some((key, flags, len, cas)) = parse_gets_line(&self.line) else {
            let reply = self.line.clone();
            return Err(self.unexpected(&reply));
        };
        let data = self.read_data(len).await?;
        self.read_line().await?;
        if self.line != b"END" {
            let reply = self.line.clone();
            return Err(self.unexpected(&reply));
        }
        Ok(Some((Item { key, flags, data }, cas)))
    }

    /// Meta delete guarded by a CAS unique (`md <key> C<cas>`, Memcached
    /// 1.6+): whether this call deleted the item. `false` when it changed
    /// (`EX`) or vanished (`NF`) since it was read.
    pub(super) async fn delete_cas(&mut self, key: &str, cas: u64) -> Result<bool, ClientError> {
        self.send(format!("md {key} C{cas}\r\n").as_bytes()).await?;
        self.read_line().await?;
        match self.line.as_slice() {
            b"HD" => Ok(true),
            b"EX" | b"NF" => Ok(false),
            other => {
                let reply = other.to_vec();
                Err(self.unexpected(&reply))
            }
        }
    }

    /// `incr`: the new value, `None` when the key holds nothing.
    pub(super) async fn incr(&mut self, key: &str, delta: u64) -> Result<Option<u64>, ClientError> {
        self.send(format!("incr {key} {delta}\r\n").as_bytes())
            .await?;
        self.read_line().await?;
        if self.line == b"NOT_FOUND" {
            return Ok(None);
        }
        match std::str::from_utf8(&self.line)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            Some(n) => Ok(Some(n)),
            None => {
                let reply = self.line.clone();
                Err(self.unexpected(&reply))
            }
        }
    }

    /// `version`: the cheapest command that proves the server answers (the
    /// circuit breaker's probe).
    pub(super) async fn version(&mut self) -> Result<(), ClientError> {
        self.send(b"version\r\n").await?;
        self.read_line().await?;
        if self.line.starts_with(b"VERSION ") {
            Ok(())
        } else {
            let reply = self.line.clone();
            Err(self.unexpected(&reply))
        }
    }
}

impl Conn<TcpStream> {
    /// Whether an idle connection can be used again: nothing unread is
    /// waiting and the server has not closed it (a restarted server closes
    /// every old connection; catching that here saves the next command from
    /// failing on it).
    pub(super) fn is_reusable(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(
            self.reader.get_ref().try_read(&mut probe),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        )
    }
}

/// Parses `VALUE <key> <flags> <bytes> [<cas>]`.
fn parse_value_line(line: &[u8]) -> Option<(String, u32, usize)> {
    // Split as bytes: a reply is read on every call.
    let mut parts = line.split(|&b| b == b' ');
    if parts.next()? != b"VALUE" {
        return None;
    }
    let key = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let flags = parse_decimal(parts.next()?)?;
    let len = parse_decimal(parts.next()?).filter(|&len| len <= MAX_VALUE as u64)?;
    Some((key, u32::try_from(flags).ok()?, usize::try_from(len).ok()?))
}

/// `VALUE <key> <flags> <bytes> <cas>`, the reply line of `gets`.
fn parse_gets_line(line: &[u8]) -> Option<(String, u32, usize, u64)> {
    let text = std::str::from_utf8(line).ok()?;
    let (head, cas) = text.rsplit_once(' ')?;
    let (key, flags, len) = parse_value_line(head.as_bytes())?;
    Some((key, flags, len, cas.parse().ok()?))
}

/// Drives [`Conn`] over a reply held in memory: what the property tests and
/// the `memcached_reply` fuzz target feed arbitrary server replies through.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod replay {
    use std::{
        io,
        pin::Pin,
        task::{Context, Poll},
    };

    use bytes::Bytes;
    use futures_util::FutureExt;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::{Conn, StoreMode};

    /// A stream that answers every read with the next at most `chunk` bytes
    /// of `data` (then end of stream) and swallows every write.
    struct Replay<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl AsyncRead for Replay<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.data.len().min(self.chunk).min(buf.remaining());
            let (head, rest) = self.data.split_at(n);
            buf.put_slice(head);
            self.data = rest;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Replay<'_> {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// What a command made of the reply.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Outcome {
        /// `get`: key, flags, data of each item.
        Items(Vec<(String, u32, Bytes)>),
        /// `gets`: the item and its CAS unique.
        Gets(Option<(String, u32, Bytes, u64)>),
        /// `set`/`add`/`replace`/`cas`, `delete`, `md`.
        Done(bool),
        /// `incr`.
        Number(Option<u64>),
    }

    /// Runs command number `command % 6` (get, gets, set, delete, md, incr)
    /// against `reply`, delivered `chunk` bytes per read (at least one).
    /// Errors are rendered as their message.
    pub(crate) fn run(command: u8, reply: &[u8], chunk: usize) -> Result<Outcome, String> {
        let stream = Replay {
            data: reply,
            chunk: chunk.max(1),
        };
        let mut conn = Conn::new(stream, "replay");
        let exchange = async move {
            match command % 6 {
                0 => conn.get_multi(&["a", "b"]).await.map(|items| {
                    Outcome::Items(
                        items
                            .into_iter()
                            .map(|item| (item.key, item.flags, item.data))
                            .collect(),
                    )
                }),
                1 => conn.gets("a").await.map(|found| {
                    Outcome::Gets(found.map(|(item, cas)| (item.key, item.flags, item.data, cas)))
                }),
                2 => conn
                    .store(StoreMode::Cas(7), "a", 1, 60, &[b"xy"])
                    .await
                    .map(Outcome::Done),
                3 => conn.delete("a").await.map(Outcome::Done),
                4 => conn.delete_cas("a", 7).await.map(Outcome::Done),
                _ => conn.incr("a", 1).await.map(Outcome::Number),
            }
        };
        // The stream never returns `Pending`, so one poll finishes.
        match exchange.now_or_never() {
            Some(result) => result.map_err(|e| e.to_string()),
            None => Err("the exchange did not finish in one poll".to_owned()),
        }
    }
}

/// One server: its address, idle connections and connection budget.
#[derive(Debug)]
pub(super) struct Server {
    addr: String,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    /// Fails calls fast while the server is unreachable or frozen.
    pub(super) breaker: Arc<Breaker>,
    /// An invalidation (a counter bump) did not reach this server: its
    /// HTTP cache entries are dropped wholesale before it is used again.
    pub(super) missed_invalidation: std::sync::atomic::AtomicBool,
    /// The counter values last seen on this server (see [`CounterHints`]).
    pub(super) hints: CounterHints,
}

/// A connection checked out of a [`Server`]'s pool. Dropping it closes the
/// connection; [`Lease::release`] puts it back.
#[derive(Debug)]
pub(super) struct Lease<'a> {
    server: &'a Server,
    conn: Conn,
    _permit: SemaphorePermit<'a>,
    /// Counts the call as a timeout if it is abandoned mid-exchange.
    watch: Watch<'a>,
}

impl Lease<'_> {
    /// The server this connection goes to.
    pub(super) fn server(&self) -> &Server {
        self.server
    }

    /// The connection.
    pub(super) fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// The call's outcome was reported to the breaker.
    pub(super) fn settle(&mut self) {
        self.watch.disarm();
    }

    /// Returns the connection to the pool after a clean exchange.
    pub(super) fn release(mut self) {
        self.watch.disarm();
        let mut idle = self
            .server
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.push(self.conn);
    }
}

/// Why a connection could not be had.
#[derive(Debug)]
pub(super) enum LeaseError {
    /// The deadline passed (waiting for a free connection or connecting).
    Timeout,
    /// Connecting failed, or the server is marked down.
    Client(ClientError),
}

impl Server {
    /// A server with at most `pool_size` connections (at least one) and
    /// its own circuit breaker.
    pub(super) fn new(addr: String, pool_size: usize, breaker: Breaker) -> Self {
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(pool_size.max(1)),
            breaker: Arc::new(breaker),
            missed_invalidation: std::sync::atomic::AtomicBool::new(false),
            hints: CounterHints::default(),
        }
    }

    /// The address as configured.
    pub(super) fn addr(&self) -> &str {
        &self.addr
    }

    /// Checks out a connection: an idle one that is still open, or a new
    /// one. A failed (or timed out) connection attempt opens the breaker;
    /// the caller checks it before leasing.
    pub(super) async fn lease(
        &self,
        deadline: tokio::time::Instant,
        timeout: std::time::Duration,
    ) -> Result<Lease<'_>, LeaseError> {
        let mut watch = Watch::new(&self.breaker, timeout);
        match self.checkout(deadline).await {
            Ok((conn, permit)) => Ok(Lease {
                server: self,
                conn,
                _permit: permit,
                watch,
            }),
            Err(e) => {
                watch.disarm(); // reported by `checkout` or the caller
                Err(e)
            }
        }
    }

    async fn checkout(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(Conn, SemaphorePermit<'_>), LeaseError> {
        let permit = match timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => {
                // The semaphore is never closed; treat it like a dead server
                // rather than panicking.
                return Err(LeaseError::Client(ClientError::PoolClosed {
                    server: self.addr.clone(),
                }));
            }
            Err(_) => return Err(LeaseError::Timeout),
        };
        loop {
            let conn = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            match conn {
                Some(conn) if conn.is_reusable() => {
                    return Ok((conn, permit));
                }
                // Closed by the server (e.g. it restarted): drop and look on.
                Some(_) => {}
                None => break,
            }
        }
        match timeout_at(deadline, TcpStream::connect(&self.addr)).await {
            Ok(Ok(stream)) => {
                // Requests are written whole; don't let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                Ok((Conn::new(stream, &self.addr), permit))
            }
            Ok(Err(source)) => {
                let error = ClientError::Io {
                    server: self.addr.clone(),
                    op: "connect",
                    source,
                };
                let cause = Message(format!("{error}: {}", error_source(&error)));
                self.breaker.record_connection_failure(Arc::new(cause));
                Err(LeaseError::Client(error))
            }
            Err(_) => {
                let cause = Message(format!(
                    "connecting to memcached server {} timed out",
                    self.addr
                ));
                self.breaker.record_connection_failure(Arc::new(cause));
                Err(LeaseError::Timeout)
            }
        }
    }
}

/// The message of `error`'s source, if any.
fn error_source(error: &ClientError) -> String {
    std::error::Error::source(error).map_or_else(String::new, ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_lines() {
        assert_eq!(
            parse_value_line(b"VALUE k 51905 12"),
            Some(("k".to_owned(), 51905, 12))
        );
        assert_eq!(
            parse_value_line(b"VALUE k 0 3 99"),
            Some(("k".to_owned(), 0, 3))
        );
        assert_eq!(parse_value_line(b"VALUE k x 3"), None);
        assert_eq!(parse_value_line(b"VALUE k 0"), None);
        assert_eq!(parse_value_line(b"VALUES k 0 1"), None);
        assert_eq!(parse_value_line(b"END"), None);
        assert_eq!(parse_value_line(b"VALUE k 0 99999999999999999999"), None);
        assert_eq!(parse_value_line(b"VALUE k 0 2000000000"), None);
    }
}
