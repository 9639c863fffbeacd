//! Consistent hashing: which server holds a key.

use xxhash_rust::xxh3::xxh3_64;

/// Points each server gets on the ring. More points even out the share of
/// each server (with 160 the shares stay within a few percent of equal);
/// 160 is what ketama-style clients use.
pub(super) const POINTS_PER_SERVER: usize = 160;

/// A hash ring with virtual nodes: each server owns the arcs that end at its
/// points, and a key belongs to the first point at or after its hash.
///
/// A server's points depend only on its own address, so adding or removing
/// one server moves only the keys of the arcs it gains or loses; every other
/// key keeps its server.
#[derive(Debug, Clone)]
pub(super) struct HashRing {
    /// `(point, server index)`, sorted by point.
    points: Vec<(u64, usize)>,
}

impl HashRing {
    /// Builds the ring of `servers` (their addresses, as configured).
    pub(super) fn new<S: AsRef<str>>(servers: &[S]) -> Self {
        let mut points = Vec::with_capacity(servers.len() * POINTS_PER_SERVER);
        for (index, server) in servers.iter().enumerate() {
            for point in 0..POINTS_PER_SERVER {
                let label = format!("{}-{point}", server.as_ref());
                points.push((xxh3_64(label.as_bytes()), index));
            }
        }
        // Ties (two servers hashing a point to the same value) are broken by
        // index so the order, and with it the placement, is deterministic.
        points.sort_unstable();
        Self { points }
    }

    /// The index of the server that holds `key`, or `None` on an empty ring.
    pub(super) fn server_for(&self, key: &[u8]) -> Option<usize> {
        let first = self.points.first()?;
        let hash = xxh3_64(key);
        let at = self.points.partition_point(|&(p, _)| p < hash);
        Some(self.points.get(at).unwrap_or(first).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:11211")).collect()
    }

    #[test]
    fn empty_ring_has_no_server() {
        assert_eq!(HashRing::new::<&str>(&[]).server_for(b"k"), None);
    }

    #[test]
    fn single_server_takes_everything() {
        let ring = HashRing::new(&servers(1));
        assert!((0..1000).all(|i| ring.server_for(format!("k{i}").as_bytes()) == Some(0)));
    }

    #[test]
    fn placement_is_stable_and_balanced() {
        let ring = HashRing::new(&servers(4));
        let again = HashRing::new(&servers(4));
        let mut counts = [0usize; 4];
        for i in 0..40_000 {
            let key = format!("GET|||example.com|||/item/{i}|||");
            let s = ring.server_for(key.as_bytes()).expect("server");
            assert_eq!(again.server_for(key.as_bytes()), Some(s));
            counts[s] += 1;
        }
        // Each server's share stays near a quarter.
        for c in counts {
            assert!((7_000..13_000).contains(&c), "unbalanced: {counts:?}");
        }
    }

    #[test]
    fn removing_a_server_moves_only_its_keys() {
        let all = servers(5);
        let full = HashRing::new(&all);
        let removed = 2;
        let rest: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != removed)
            .map(|(_, s)| s.clone())
            .collect();
        let reduced = HashRing::new(&rest);
        let mut moved = 0;
        for i in 0..20_000 {
            let key = format!("key-{i}");
            let before = &all[full.server_for(key.as_bytes()).expect("server")];
            let after = &rest[reduced.server_for(key.as_bytes()).expect("server")];
            if before == &all[removed] {
                moved += 1;
            } else {
                assert_eq!(before, after, "{key} moved although its server stayed");
            }
        }
        assert!(moved > 0);
    }
}
