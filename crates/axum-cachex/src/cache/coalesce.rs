//! Request coalescing: one handler run per key at a time.
//!
//! The first request for a key that must run the handler becomes the
//! *leader*; requests for the same key that arrive while it runs become
//! *waiters* and receive the leader's stored response. Background refreshes
//! lead too, which is what deduplicates them per key.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum_cachex_core::CacheEntry;
use tokio::sync::watch;

/// What a leader hands its waiters.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Nothing to share (uncacheable, too large, streamed, failed): each
    /// waiter runs the handler itself.
    Nothing,
    /// The response the handler just made.
    Made(Arc<CacheEntry>),
    /// The stale entry the leader served because the handler failed
    /// (stale-if-error): waiters share it rather than each fail again.
    StaleOnError(Arc<CacheEntry>),
}

type Slot = watch::Receiver<Option<Outcome>>;

/// The table of keys whose handler is running.
#[derive(Default)]
pub(crate) struct Coalescer {
    // A plain mutex: held only to insert or remove one key, never across an
    // await.
    inflight: Arc<Mutex<HashMap<String, Slot>>>,
}

/// Role of a request in a flight.
pub(crate) enum Flight {
    /// Run the handler and [`publish`](Leader::publish) the result.
    Leader(Leader),
    /// Wait for the leader.
    Waiter(Slot),
}

/// The leader's end of a flight. Dropping it (after publishing, or on
/// error/cancellation) removes the key, so waiters never hang on a leader
/// that went away: they see the channel close and run the handler.
pub(crate) struct Leader {
    key: String,
    tx: watch::Sender<Option<Outcome>>,
    inflight: Arc<Mutex<HashMap<String, Slot>>>,
}

impl Coalescer {
    /// Joins the flight for `key`, leading it if none is running.
    pub(crate) fn join(&self, key: &str) -> Flight {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(key) {
            return Flight::Waiter(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_owned(), rx);
        Flight::Leader(Leader {
            key: key.to_owned(),
            tx,
            inflight: Arc::clone(&self.inflight),
        })
    }

    /// Leads the flight for `key` only if none is running.
    pub(crate) fn try_lead(&self, key: &str) -> Option<Leader> {
        match self.join(key) {
            Flight::Leader(l) => Some(l),
            Flight::Waiter(_) => None,
        }
    }
}

impl Leader {
    /// Hands the result to every waiter.
    pub(crate) fn publish(&self, outcome: Outcome) {
        // No receivers left is fine: nobody was waiting.
        let _ = self.tx.send(Some(outcome));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.key);
    }
}

/// Waits for the leader's outcome; `None` when the leader went away
/// without publishing or `timeout` passed.
pub(crate) async fn wait(mut slot: Slot, timeout: std::time::Duration) -> Option<Outcome> {
    match tokio::time::timeout(timeout, slot.wait_for(Option::is_some)).await {
        Ok(Ok(value)) => value.clone(),
        _ => None,
    }
}
