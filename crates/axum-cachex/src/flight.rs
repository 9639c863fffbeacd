//! Single flight: one computation per key at a time in this process.
//!
//! The first caller for a key becomes the *leader* and computes; callers
//! for the same key that arrive while it runs become *waiters* and receive
//! what the leader [publishes](Leader::publish). The HTTP cache coalesces
//! handler runs (and deduplicates background refreshes) with it, the
//! application cache its `get_or_set` factories.
//!
//! A leader that goes away without publishing (an error it does not share,
//! a cancelled request) removes its key when dropped, so waiters never hang:
//! [`Waiter::wait`] returns `None` and the caller decides, e.g. runs the
//! work itself or joins again (then one of the waiters leads the next
//! flight).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::sync::watch;

type Table<V> = Arc<Mutex<HashMap<String, watch::Receiver<Option<V>>>>>;

/// The keys being computed, each with the channel its result goes out on.
pub(crate) struct Flights<V> {
    inflight: Table<V>,
}

impl<V> Default for Flights<V> {
    fn default() -> Self {
        Self {
            inflight: Arc::default(),
        }
    }
}

/// A caller's role in the flight of its key.
pub(crate) enum Flight<V> {
    /// Compute, then [`publish`](Leader::publish).
    Leader(Leader<V>),
    /// Wait for the leader.
    Waiter(Waiter<V>),
}

/// The leader's end of a flight; dropping it ends the flight.
pub(crate) struct Leader<V> {
    key: String,
    tx: watch::Sender<Option<V>>,
    inflight: Table<V>,
}

/// A waiter's end of a flight.
pub(crate) struct Waiter<V>(watch::Receiver<Option<V>>);

/// Locks the table: held to look up, insert or remove one key, never across
/// an await, so a poisoned table is still consistent.
fn lock<V>(table: &Table<V>) -> MutexGuard<'_, HashMap<String, watch::Receiver<Option<V>>>> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<V> Flights<V> {
    /// Joins the flight of `key`, leading it if none is running.
    pub(crate) fn join(&self, key: &str) -> Flight<V> {
        let mut map = lock(&self.inflight);
        if let Some(rx) = map.get(key) {
            return Flight::Waiter(Waiter(rx.clone()));
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_owned(), rx);
        Flight::Leader(Leader {
            key: key.to_owned(),
            tx,
            inflight: Arc::clone(&self.inflight),
        })
    }

    /// Leads the flight of `key` only if none is running.
    pub(crate) fn try_lead(&self, key: &str) -> Option<Leader<V>> {
        match self.join(key) {
            Flight::Leader(leader) => Some(leader),
            Flight::Waiter(_) => None,
        }
    }

    /// How many flights are running.
    pub(crate) fn len(&self) -> usize {
        lock(&self.inflight).len()
    }
}

impl<V> Leader<V> {
    /// Hands the result to every waiter.
    pub(crate) fn publish(&self, value: V) {
        // No receivers left is fine: nobody was waiting.
        let _ = self.tx.send(Some(value));
    }
}

impl<V> Drop for Leader<V> {
    fn drop(&mut self) {
        lock(&self.inflight).remove(&self.key);
    }
}

impl<V: Clone> Waiter<V> {
    /// The leader's result; `None` when the leader went away without
    /// publishing, or `timeout` passed first.
    pub(crate) async fn wait(mut self, timeout: Option<Duration>) -> Option<V> {
        let published = self.0.wait_for(Option::is_some);
        let result = match timeout {
            Some(timeout) => tokio::time::timeout(timeout, published).await.ok()?,
            None => published.await,
        };
        result.ok().and_then(|value| value.clone())
    }
}
