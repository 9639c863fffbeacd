//! The circuit breakers of one Redis backend, and on Cluster the slot map
//! that picks them.
//!
//! A standalone server has one breaker. A Cluster has one per primary, so
//! that a primary that dies or freezes fails *its* keys open while the
//! others keep serving hits: with a single breaker, one dead primary out of
//! three would turn every request into a miss. Which primary owns a key is
//! read from `CLUSTER SLOTS` (refreshed in the background every
//! [`REFRESH_EVERY`] and after a failure); until the first answer, and for
//! calls that span the cluster (listing, clearing), the backend-wide
//! breaker is used. A stale map only picks the wrong breaker for a moment:
//! routing itself is redis-rs's, which follows `MOVED` redirections.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ::redis::Value;
use arc_swap::ArcSwapOption;

use super::{conn::NodeAddr, keys::slot_of};
use crate::backend::breaker::Breaker;

/// How often the slot map is read again while the backend is in use.
pub(super) const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// What a call talks to, for picking its breaker.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target<'a> {
    /// The node that owns this Redis key.
    Key(&'a str),
    /// This node.
    Node(&'a NodeAddr),
    /// Any node, or all of them.
    Whole,
}

/// Which primary serves which slots.
#[derive(Debug, Default)]
pub(super) struct SlotMap {
    /// `(first slot, last slot, primary)`, sorted by first slot.
    ranges: Vec<(u16, u16, NodeAddr)>,
}

impl SlotMap {
    /// Parses a `CLUSTER SLOTS` reply; `None` when it has no usable range.
    pub(super) fn parse(reply: &Value) -> Option<Self> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut parsed: Vec<_> = ranges.iter().filter_map(parse_range).collect();
        parsed.sort_by_key(|r| r.0);
        (!parsed.is_empty()).then_some(Self { ranges: parsed })
    }

    /// Every primary, once each.
    pub(super) fn primaries(&self) -> Vec<NodeAddr> {
        let mut nodes: Vec<NodeAddr> = Vec::new();
        for (_, _, node) in &self.ranges {
            if !nodes.contains(node) {
                nodes.push(node.clone());
            }
        }
        nodes
    }

    /// The primary serving `slot`.
    pub(super) fn node_of(&self, slot: u16) -> Option<&NodeAddr> {
        let after = self.ranges.partition_point(|r| r.0 <= slot);
        let (_, last, node) = self.ranges.get(after.checked_sub(1)?)?;
        (slot <= *last).then_some(node)
    }
}

/// The primaries a `CLUSTER NODES` reply lists, slots or not (a node
/// importing its first slot already holds keys). Nodes still in the
/// handshake or without an address are left out.
pub(super) fn primaries_in(cluster_nodes: &str) -> Vec<NodeAddr> {
    cluster_nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_id, addr, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            let usable = !flags.contains(&"handshake") && !flags.contains(&"noaddr");
            if !flags.contains(&"master") || !usable {
                return None;
            }
            // `ip:port@cport[,hostname]`; the ip may be IPv6 (no brackets).
            let ip_port = addr.split(['@', ',']).next()?;
            let (host, port) = ip_port.rsplit_once(':')?;
            Some(NodeAddr {
                host: host.to_owned(),
                port: port.parse().ok()?,
            })
        })
        .filter(|node| !node.host.is_empty())
        .collect()
}

/// One `[first, last, [host, port, …], replicas…]` entry.
fn parse_range(entry: &Value) -> Option<(u16, u16, NodeAddr)> {
    let Value::Array(fields) = entry else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let (first, last) = (int(fields.first()?)?, int(fields.get(1)?)?);
    let Value::Array(primary) = fields.get(2)? else {
        return None;
    };
    let host = match primary.first()? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
        Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    let port = int(primary.get(1)?)?;
    (first <= last && !host.is_empty()).then_some((first, last, NodeAddr { host, port }))
}

/// How breakers are made (the backend's settings).
#[derive(Debug, Clone)]
pub(super) struct BreakerSettings {
    pub(super) threshold: u32,
    pub(super) min_delay: Duration,
    pub(super) max_delay: Duration,
}

/// The breakers of one backend (see the module docs).
pub(super) struct Breakers {
    settings: BreakerSettings,
    whole: Arc<Breaker>,
    cluster: bool,
    per_node: Mutex<HashMap<NodeAddr, Arc<Breaker>>>,
    slots: ArcSwapOption<SlotMap>,
    refreshed: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
}

impl Breakers {
    pub(super) fn new(name: String, settings: BreakerSettings, cluster: bool) -> Self {
        let whole = Breaker::new(
            name,
            settings.threshold,
            settings.min_delay,
            settings.max_delay,
        );
        Self {
            settings,
            whole: Arc::new(whole),
            cluster,
            per_node: Mutex::new(HashMap::new()),
            slots: ArcSwapOption::empty(),
            refreshed: Mutex::new(None),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The breaker of `target`, and the node it stands for.
    pub(super) fn pick(&self, target: Target<'_>) -> (Arc<Breaker>, Option<NodeAddr>) {
        if !self.cluster {
            return (Arc::clone(&self.whole), None);
        }
        let node = match target {
            Target::Whole => None,
            Target::Node(node) => Some(node.clone()),
            Target::Key(key) => self.node_of_key(key),
        };
        match node {
            Some(node) => (self.node_breaker(&node), Some(node)),
            None => (Arc::clone(&self.whole), None),
        }
    }

    /// The primary the last slot map gives `key`'s slot; `None` before the
    /// first map, and on a standalone server.
    pub(super) fn node_of_key(&self, key: &str) -> Option<NodeAddr> {
        if !self.cluster {
            return None;
        }
        self.slots
            .load()
            .as_ref()
            .and_then(|map| map.node_of(slot_of(key.as_bytes())).cloned())
    }

    fn node_breaker(&self, node: &NodeAddr) -> Arc<Breaker> {
        let mut nodes = self.per_node.lock().unwrap_or_else(PoisonError::into_inner);
        let breaker = nodes.entry(node.clone()).or_insert_with(|| {
            let s = &self.settings;
            Arc::new(Breaker::new(
                format!("redis cluster node {node}"),
                s.threshold,
                s.min_delay,
                s.max_delay,
            ))
        });
        Arc::clone(breaker)
    }

    /// The primaries of the last slot map read; `None` before the first.
    pub(super) fn primaries(&self) -> Option<Vec<NodeAddr>> {
        self.slots.load().as_ref().map(|map| map.primaries())
    }

    /// Whether this caller should read the slot map now (Cluster only; at
    /// most one caller at a time). Call [`refreshed`](Self::refreshed)
    /// after, whatever the outcome.
    pub(super) fn claim_refresh(&self, failure: bool) -> bool {
        if !self.cluster {
            return false;
        }
        let due = failure
            || self
                .refreshed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
        due && !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Ends a refresh claimed with [`claim_refresh`](Self::claim_refresh).
    pub(super) fn refreshed(&self, map: Option<SlotMap>) {
        if let Some(map) = map {
            self.slots.store(Some(Arc::new(map)));
        }
        *self
            .refreshed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.refreshing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    fn range(first: i64, last: i64, primary: Value) -> Value {
        Value::Array(vec![Value::Int(first), Value::Int(last), primary])
    }

    #[test]
    fn slot_map_finds_each_slot_owner() {
        let reply = Value::Array(vec![
            range(5461, 10922, node("127.0.0.1", 7001)),
            range(0, 5460, node("127.0.0.1", 7000)),
            range(10923, 16383, node("127.0.0.1", 7002)),
            range(9, 2, node("127.0.0.1", 7003)), // inverted: ignored
            Value::Array(vec![Value::Int(1)]),    // truncated: ignored
        ]);
        let map = SlotMap::parse(&reply).expect("map");
        let port = |slot| map.node_of(slot).expect("owner").port;
        assert_eq!((port(0), port(5460), port(5461)), (7000, 7000, 7001));
        assert_eq!((port(10922), port(10923), port(16383)), (7001, 7002, 7002));
        assert!(SlotMap::parse(&Value::Array(vec![])).is_none());
        assert!(SlotMap::parse(&Value::Nil).is_none());
    }

    #[test]
    fn cluster_nodes_lists_every_primary() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-16383
c3 127.0.0.1:7002@17002 master - 0 1 3 connected
d4 127.0.0.1:7003@17003 slave a1 0 1 1 connected
e5 ::1:7004@17004,host.example master - 0 1 4 connected
f6 :0@0 master,noaddr - 0 1 5 disconnected
g7 127.0.0.1:7005@17005 master,handshake - 0 1 0 connected
";
        let ports: Vec<u16> = primaries_in(text).iter().map(|n| n.port).collect();
        assert_eq!(ports, [7000, 7001, 7002, 7004]);
        assert_eq!(primaries_in(text)[3].host, "::1");
        assert!(primaries_in("garbage\n\n").is_empty());
    }

    #[test]
    fn a_gap_in_the_map_has_no_owner() {
        let reply = Value::Array(vec![
            range(0, 99, node("h", 1)),
            range(200, 299, node("h", 2)),
        ]);
        let map = SlotMap::parse(&reply).expect("map");
        assert!(map.node_of(150).is_none());
        assert!(map.node_of(300).is_none());
        assert_eq!(map.node_of(250).expect("owner").port, 2);
    }
}
