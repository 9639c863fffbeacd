//! Counters of the managers (sessions, OAuth states, the application
//! cache). A manager counts into the [`Registry`](crate::Registry) it was
//! given, if any; the monitoring routes watching that registry report them
//! beside the cache layers' counters.

use std::sync::{Arc, atomic::AtomicU64};

use crate::counters::{add, define_counters};

define_counters! {
    /// The managers' live counters, shared by every manager of one
    /// registry.
    live ManagerCounters;
    /// The managers' counters at one moment, summed over every manager
    /// counting into one [`Registry`](crate::Registry).
    snapshot ManagerStats;
    /// `CacheManager` reads that found a value.
    app_cache_hits,
    /// `CacheManager` reads that found nothing usable.
    app_cache_misses,
    /// `get_or_set` factory runs (one per coalesced miss).
    app_cache_factory_runs,
    /// `get_or_set` factory runs that failed.
    app_cache_factory_errors,
    /// OAuth states created.
    states_created,
    /// OAuth states consumed.
    states_consumed,
    /// OAuth states refused (unknown, used, expired, wrong binding, corrupt).
    states_rejected,
    /// Sessions created (logins included).
    sessions_created,
    /// Sessions loaded from a valid token.
    sessions_loaded,
    /// Tokens or sessions refused (malformed, forged, bound elsewhere,
    /// unknown, invalidated, expired).
    sessions_rejected,
    /// Sliding renewals written.
    sessions_renewed,
    /// Sessions deleted (logouts, logout-everywhere).
    sessions_deleted,
}

/// Where one manager counts: its registry's counters, or nowhere when it
/// was given no registry (then counting costs nothing).
#[derive(Debug, Clone, Default)]
pub(crate) struct ManagerCounting(Option<Arc<ManagerCounters>>);

impl ManagerCounting {
    pub(crate) fn new(counters: Option<Arc<ManagerCounters>>) -> Self {
        Self(counters)
    }

    /// Adds `n` to the counter `which` picks, if counting.
    pub(crate) fn add(&self, which: impl FnOnce(&ManagerCounters) -> &AtomicU64, n: u64) {
        if let Some(counters) = &self.0 {
            add(which(counters), n);
        }
    }

    /// Adds one to the counter `which` picks, if counting.
    pub(crate) fn bump(&self, which: impl FnOnce(&ManagerCounters) -> &AtomicU64) {
        self.add(which, 1);
    }
}
