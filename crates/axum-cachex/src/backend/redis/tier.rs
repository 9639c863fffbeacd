//! The in-process memory tier in front of Redis, kept coherent across
//! instances by invalidation messages on a Redis pub/sub channel.
//!
//! # Why our own channel, not `CLIENT TRACKING`
//!
//! Redis can track the keys a connection read and push an invalidation when
//! any client changes them (RESP3 client-side caching). We publish our own
//! messages instead, for three reasons:
//!
//! - **Reconnects.** Tracking state dies with the connection, and redis-rs
//!   hides reconnections inside its connection manager, so a lost push
//!   cannot be told apart from no change. Our subscriber owns its
//!   connection: it knows when it lost it and flushes the tier.
//! - **Cluster.** Tracking is per node connection, and redis-rs's cluster
//!   client gives no hook for the pushes of each node. A plain `PUBLISH`
//!   reaches every node of a Cluster, so one subscription on any node sees
//!   every instance's messages.
//! - **Cost.** Tracking makes the server remember every key every client
//!   read and sends one push per key; a `clear_path` or a prefix clear is
//!   one message of ours, applied locally to whatever matches.
//!
//! The price: only changes made *through this backend* are announced. A
//! key changed by another program reaches the tier only when its local
//! copy expires ([`MemoryTier::max_ttl`]).
//!
//! # The staleness bound
//!
//! Each change is published atomically with it (inside the same Lua script;
//! bulk clears announce after they ran), so the message exists once the
//! change does. Messages on one
//! subscription arrive in the order the server handled them (on a
//! Cluster: in the order each primary handled them, over its cluster-bus
//! link, so there a heartbeat goes to every primary and trust needs all of
//! them back). The subscriber
//! also publishes a heartbeat every quarter of `max_staleness` and, when its
//! own heartbeat comes back, knows that every message published before it
//! was sent has been applied. The tier is read only while the last
//! heartbeat that came back was sent less than `max_staleness` ago. So a
//! change made through any instance stops being served by every other
//! instance's tier at most `max_staleness` after it returned (normally
//! within a message delivery, well under a millisecond on loopback). A
//! subscription that drops flushes the tier before it is trusted again.
//!
//! A fetch from Redis fills the tier only if no invalidation that could
//! cover its key was applied while it was in flight (generation counters:
//! one per stripe of keys for single-key changes, one for bulk changes),
//! so a read that raced a change cannot put the old value back, and a
//! write to one key does not keep every other key out of the tier.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum_cachex_core::{Backend, CacheKey, CacheRecord, Listing};
use bytes::Bytes;
use tokio::time::Instant;

use crate::backend::MemoryBackend;

/// Settings of the in-process tier of a [`RedisBackend`](super::RedisBackend)
/// (see [`RedisConfig::memory_tier`](super::RedisConfig::memory_tier)).
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryTier {
    pub(super) max_capacity: u64,
    pub(super) max_staleness: Duration,
    pub(super) max_ttl: Duration,
}

impl MemoryTier {
    /// A tier holding at most `max_capacity` bytes (keys, values and a fixed
    /// overhead per entry, as [`MemoryBackend`] counts them), with a
    /// staleness bound of 1 s and local copies kept at most 60 s.
    pub fn new(max_capacity: u64) -> Self {
        Self {
            max_capacity,
            max_staleness: Duration::from_secs(1),
            max_ttl: Duration::from_secs(60),
        }
    }

    /// How long after a change made through another instance this tier may
    /// still serve the old value, when messages are delayed or the
    /// subscription is lost. Heartbeats go out every quarter of it. Between
    /// 4 ms and 1 hour ([`RedisConfig::build`](super::RedisConfig::build)
    /// refuses others). Default: 1 s.
    pub fn max_staleness(mut self, bound: Duration) -> Self {
        self.max_staleness = bound;
        self
    }

    /// The longest a local copy is kept (never longer than the key's TTL in
    /// Redis). Bounds how long a change made *outside* this backend (another
    /// program writing the same keys) can go unnoticed. Default: 60 s.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }
}

/// What an invalidation message removes from the tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scope {
    /// One logical key.
    Key(String),
    /// Every logical key starting with this (empty: everything).
    Prefix(String),
    /// The HTTP cache's entries of a path.
    Path { path: String, include_params: bool },
}

/// How many sent heartbeats are remembered while waiting for them to come
/// back.
const HEARTBEATS_KEPT: usize = 16;
/// Stripes of the per-key generation counters.
const STRIPES: usize = 64;

/// The counters a fetch compares before filling the tier: its key's
/// stripe and the bulk one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Generation {
    stripe: u64,
    bulk: u64,
}

/// The tier of one backend.
pub(super) struct Tier {
    store: MemoryBackend,
    settings: MemoryTier,
    /// Bumped by single-key invalidations (per stripe) and by bulk ones,
    /// before they are applied.
    stripes: [AtomicU64; STRIPES],
    bulk: AtomicU64,
    /// Nanoseconds after `epoch` until which reads are trusted (0: not).
    trusted_until: AtomicU64,
    epoch: Instant,
    /// Sent heartbeats not yet seen back: `(sequence, sent at, node)`.
    sent: Mutex<VecDeque<(u64, Instant, String)>>,
    /// Per node published on: when the latest heartbeat that came back was
    /// sent. Trust needs one from every node in `nodes`.
    returned: Mutex<HashMap<String, Instant>>,
    nodes: Mutex<Vec<String>>,
}

impl Tier {
    pub(super) fn new(
        settings: MemoryTier,
    ) -> Result<Self, crate::backend::MemoryBackendConfigError> {
        let store = MemoryBackend::builder()
            .max_capacity(settings.max_capacity)
            .build()?;
        Ok(Self {
            store,
            settings,
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
            bulk: AtomicU64::new(0),
            trusted_until: AtomicU64::new(0),
            epoch: Instant::now(),
            sent: Mutex::new(VecDeque::new()),
            returned: Mutex::new(HashMap::new()),
            nodes: Mutex::new(vec![String::new()]),
        })
    }

    pub(super) fn heartbeat_every(&self) -> Duration {
        self.settings.max_staleness / 4
    }

    fn trusted(&self) -> bool {
        let now = nanos_since(self.epoch, Instant::now());
        now < self.trusted_until.load(Ordering::Acquire)
    }

    /// The local copy of `key`, while the tier is trusted.
    pub(super) fn get(&self, key: &str) -> Option<Bytes> {
        if !self.trusted() {
            return None;
        }
        self.store.get_now(key).and_then(Result::ok).flatten()
    }

    /// [`get`](Self::get), decoded as an HTTP record (see
    /// [`Backend::get_record_now`]).
    pub(super) fn get_record(&self, key: &str) -> Option<Arc<CacheRecord>> {
        if !self.trusted() {
            return None;
        }
        self.store
            .get_record_now(key)
            .and_then(Result::ok)
            .flatten()
    }

    fn stripe(&self, key: &str) -> &AtomicU64 {
        let hash = super::keys::slot_hash(key.as_bytes());
        &self.stripes[usize::from(hash) % STRIPES]
    }

    /// The generation of `key` to hand to [`fill`](Self::fill) after a
    /// fetch.
    pub(super) fn generation(&self, key: &str) -> Generation {
        Generation {
            stripe: self.stripe(key).load(Ordering::Acquire),
            bulk: self.bulk.load(Ordering::Acquire),
        }
    }

    /// Keeps a fetched value, unless an invalidation was applied since
    /// `generation` was read (the value may be older than it). `remote_ttl`
    /// is the key's TTL in Redis (`None`: no expiry).
    pub(super) async fn fill(
        &self,
        key: &str,
        value: Bytes,
        remote_ttl: Option<Duration>,
        generation: Generation,
    ) {
        if !self.trusted() || self.generation(key) != generation {
            return;
        }
        let ttl = remote_ttl.map_or(self.settings.max_ttl, |t| t.min(self.settings.max_ttl));
        let _ = self.store.set(key, value, Some(ttl)).await;
        // An invalidation that bumped the generation after the check may
        // have been applied before the insert: undo it.
        if self.generation(key) != generation {
            let _ = self.store.delete(key).await;
        }
    }

    /// Applies an invalidation (ours or another instance's).
    pub(super) async fn invalidate(&self, scope: &Scope) {
        match scope {
            Scope::Key(key) => {
                self.stripe(key).fetch_add(1, Ordering::AcqRel);
                let _ = self.store.delete(key).await;
            }
            Scope::Prefix(prefix) => {
                self.bulk.fetch_add(1, Ordering::AcqRel);
                let _ = self.store.clear(prefix).await;
            }
            Scope::Path {
                path,
                include_params,
            } => {
                self.bulk.fetch_add(1, Ordering::AcqRel);
                self.clear_path(path, *include_params).await;
            }
        }
    }

    async fn clear_path(&self, path: &str, include_params: bool) {
        let Ok(keys) = self.store.keys(axum_cachex_core::CACHE_NAMESPACE).await else {
            return;
        };
        for key in keys {
            if CacheKey::parse_stored(&key).is_some_and(|k| k.is_for_path(path, include_params)) {
                let _ = self.store.delete(&key).await;
            }
        }
    }

    /// Forgets everything and stops trusting the tier until heartbeats
    /// come back: messages may have been missed.
    pub(super) async fn distrust(&self) {
        self.trusted_until.store(0, Ordering::Release);
        self.bulk.fetch_add(1, Ordering::AcqRel);
        locked(&self.sent).clear();
        locked(&self.returned).clear();
        let _ = self.store.clear("").await;
    }

    /// The nodes heartbeats go to: one name per node whose messages reach
    /// the subscription over their own ordered path (`""` for a standalone
    /// server; each primary on a Cluster, where a change's message comes
    /// from its key's primary over the cluster bus).
    pub(super) fn publish_to(&self, nodes: Vec<String>) {
        *locked(&self.nodes) = nodes;
    }

    /// Records a heartbeat about to be published on `node`.
    pub(super) fn heartbeat_sent(&self, sequence: u64, node: &str) {
        let kept = HEARTBEATS_KEPT * locked(&self.nodes).len().max(1);
        let mut sent = locked(&self.sent);
        if sent.len() >= kept {
            sent.pop_front();
        }
        sent.push_back((sequence, Instant::now(), node.to_owned()));
    }

    /// Our heartbeat `sequence` came back: every message its node published
    /// before it has been applied. The tier is trusted until `max_staleness`
    /// after the oldest of the latest heartbeats of every node.
    pub(super) fn heartbeat_received(&self, sequence: u64) {
        let Some((_, sent_at, node)) = ({
            let mut sent = locked(&self.sent);
            sent.iter()
                .position(|(s, _, _)| *s == sequence)
                .and_then(|position| sent.remove(position))
        }) else {
            return;
        };
        let oldest = {
            let mut returned = locked(&self.returned);
            let latest = returned.entry(node).or_insert(sent_at);
            *latest = (*latest).max(sent_at);
            let nodes = locked(&self.nodes);
            nodes
                .iter()
                .map(|n| returned.get(n).copied())
                .collect::<Option<Vec<Instant>>>()
                .and_then(|times| times.into_iter().min())
        };
        let Some(oldest) = oldest else {
            return; // a node has not answered yet
        };
        let until = oldest
            .checked_add(self.settings.max_staleness)
            .map_or(u64::MAX, |t| nanos_since(self.epoch, t));
        self.trusted_until.fetch_max(until, Ordering::AcqRel);
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn nanos_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// The invalidation channel's messages: `{instance}\n{kind}{payload}`.
pub(super) mod message {
    use super::Scope;

    /// A message naming `scope`, from `instance`.
    pub(in super::super) fn encode(instance: &str, scope: &Scope) -> Vec<u8> {
        let body = match scope {
            Scope::Key(key) => format!("k{key}"),
            Scope::Prefix(prefix) => format!("p{prefix}"),
            Scope::Path {
                path,
                include_params,
            } => format!("P{}{path}", u8::from(*include_params)),
        };
        format!("{instance}\n{body}").into_bytes()
    }

    /// A heartbeat of `instance`.
    pub(in super::super) fn heartbeat(instance: &str, sequence: u64) -> Vec<u8> {
        format!("{instance}\nh{sequence}").into_bytes()
    }

    /// What a received message says.
    #[derive(Debug, PartialEq, Eq)]
    pub(in super::super) enum Received {
        Invalidate(Scope),
        Heartbeat(u64),
    }

    /// The sender and content of a message; `None` when it is not one of
    /// ours (anyone can publish on a channel).
    pub(in super::super) fn decode(raw: &[u8]) -> Option<(&str, Received)> {
        let text = std::str::from_utf8(raw).ok()?;
        let (instance, body) = text.split_once('\n')?;
        let mut chars = body.chars();
        let kind = chars.next()?;
        let rest = chars.as_str();
        let received = match kind {
            'k' => Received::Invalidate(Scope::Key(rest.to_owned())),
            'p' => Received::Invalidate(Scope::Prefix(rest.to_owned())),
            'P' => {
                let (flag, path) = rest.split_at_checked(1)?;
                let include_params = match flag {
                    "0" => false,
                    "1" => true,
                    _ => return None,
                };
                Received::Invalidate(Scope::Path {
                    path: path.to_owned(),
                    include_params,
                })
            }
            'h' => Received::Heartbeat(rest.parse().ok()?),
            _ => return None,
        };
        Some((instance, received))
    }
}

#[cfg(test)]
mod tests {
    use super::{message::*, *};

    #[test]
    fn messages_round_trip_and_strangers_are_ignored() {
        for scope in [
            Scope::Key("http:GET|||h|||/a\nb|||".into()),
            Scope::Prefix(String::new()),
            Scope::Path {
                path: "/p".into(),
                include_params: true,
            },
            Scope::Path {
                path: String::new(),
                include_params: false,
            },
        ] {
            let raw = encode("i1", &scope);
            assert_eq!(decode(&raw), Some(("i1", Received::Invalidate(scope))));
        }
        assert_eq!(
            decode(&heartbeat("i2", 7)),
            Some(("i2", Received::Heartbeat(7)))
        );
        for stranger in [&b"hello"[..], b"i\nx", b"i\nP2/x", b"i\nhnan", b"\xff\nk"] {
            assert_eq!(decode(stranger), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trusted_only_within_the_bound_of_a_returned_heartbeat() {
        let tier = Tier::new(MemoryTier::new(1 << 20).max_staleness(Duration::from_secs(1)))
            .expect("tier");
        tier.heartbeat_sent(1, "");
        tier.fill("k", Bytes::from_static(b"v"), None, tier.generation("k"))
            .await;
        assert_eq!(
            tier.get("k"),
            None,
            "untrusted before any heartbeat came back"
        );
        tier.heartbeat_received(1);
        tier.fill("k", Bytes::from_static(b"v"), None, tier.generation("k"))
            .await;
        assert_eq!(tier.get("k"), Some(Bytes::from_static(b"v")));
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(tier.get("k"), None, "the heartbeat is too old");
        tier.heartbeat_received(1); // a duplicate extends nothing
        assert_eq!(tier.get("k"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_cluster_every_primary_must_answer() {
        let tier = Tier::new(MemoryTier::new(1 << 20).max_staleness(Duration::from_secs(1)))
            .expect("tier");
        tier.publish_to(vec!["a:1".into(), "b:2".into()]);
        tier.heartbeat_sent(1, "a:1");
        tier.heartbeat_sent(2, "b:2");
        tier.heartbeat_received(1);
        tier.fill("k", Bytes::from_static(b"v"), None, tier.generation("k"))
            .await;
        assert_eq!(tier.get("k"), None, "b:2 has not answered");
        tokio::time::advance(Duration::from_millis(600)).await;
        tier.heartbeat_received(2);
        tier.fill("k", Bytes::from_static(b"v"), None, tier.generation("k"))
            .await;
        assert!(tier.get("k").is_some());
        // Trust runs from the older of the two: a's, sent 600 ms ago.
        tokio::time::advance(Duration::from_millis(401)).await;
        assert_eq!(tier.get("k"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_that_raced_an_invalidation_is_not_kept() {
        let tier = Tier::new(MemoryTier::new(1 << 20)).expect("tier");
        tier.heartbeat_sent(1, "");
        tier.heartbeat_received(1);
        let before = tier.generation("k");
        tier.invalidate(&Scope::Key("k".into())).await;
        tier.fill("k", Bytes::from_static(b"old"), None, before)
            .await;
        assert_eq!(tier.get("k"), None);
        // A change to another key (in another stripe) does not block it.
        let before = tier.generation("k");
        let other = (0..)
            .map(|i| format!("other{i}"))
            .find(|o| !std::ptr::eq(tier.stripe(o), tier.stripe("k")))
            .expect("a key in another stripe");
        tier.invalidate(&Scope::Key(other)).await;
        tier.fill("k", Bytes::from_static(b"new"), None, before)
            .await;
        assert_eq!(tier.get("k"), Some(Bytes::from_static(b"new")));

        tier.fill(
            "http:GET|||h|||/p|||q",
            Bytes::from_static(b"x"),
            None,
            tier.generation("http:GET|||h|||/p|||q"),
        )
        .await;
        tier.fill(
            "http:GET|||h|||/o|||",
            Bytes::from_static(b"y"),
            None,
            tier.generation("http:GET|||h|||/o|||"),
        )
        .await;
        tier.invalidate(&Scope::Path {
            path: "/p".into(),
            include_params: true,
        })
        .await;
        assert_eq!(tier.get("http:GET|||h|||/p|||q"), None);
        assert!(tier.get("http:GET|||h|||/o|||").is_some());
        tier.distrust().await;
        assert_eq!(tier.get("http:GET|||h|||/o|||"), None);
    }
}
