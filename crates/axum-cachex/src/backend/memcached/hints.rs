//! The counter values this instance saw last, so that a read of an HTTP
//! cache entry can name its key before the counters answer.
//!
//! Entry keys embed counter values (see the backend's docs). A read sends
//! the counters and the entry their remembered values name in one
//! multi-get, and uses the entry only when the counters come back with
//! exactly those values: so it reads what the two-step read (counters,
//! then entry) would, in one round trip. A hint is never trusted on its
//! own; a wrong one (a clear since, or another instance's write) costs
//! the second round trip of the two-step read, nothing else.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

/// Remembered values of one server's counters. Request paths name
/// counters, so the map is bounded: when full it starts over.
#[derive(Debug, Default)]
pub(super) struct CounterHints {
    seen: Mutex<HashMap<String, u64>>,
}

/// Most counters remembered before the map starts over.
const MAX_HINTS: usize = 4096;

impl CounterHints {
    /// The remembered values of `counters`, when all are known.
    pub(super) fn get(&self, counters: &[String]) -> Option<Vec<u64>> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .iter()
            .map(|name| seen.get(name.as_str()).copied())
            .collect()
    }

    /// Remembers the values `counters` had.
    pub(super) fn put(&self, counters: &[String], values: &[u64]) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() + counters.len() > MAX_HINTS {
            seen.clear();
        }
        for (name, value) in counters.iter().zip(values) {
            seen.insert(name.clone(), *value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_all_or_nothing() {
        let hints = CounterHints::default();
        let counters = ["g".to_owned(), "p:/a".to_owned()];
        assert_eq!(hints.get(&counters), None);
        hints.put(&counters, &[1, 2]);
        assert_eq!(hints.get(&counters), Some(vec![1, 2]));
        assert_eq!(hints.get(&["g".to_owned(), "p:/b".to_owned()]), None);
    }

    #[test]
    fn the_map_is_bounded() {
        let hints = CounterHints::default();
        for i in 0..(3 * MAX_HINTS) {
            hints.put(&[format!("p:/{i}")], &[1]);
        }
        assert!(hints.seen.lock().expect("lock").len() <= MAX_HINTS);
    }
}
