//! Process-wide counters of the managers (sessions, OAuth states, the
//! application cache), reported by the monitoring routes beside the cache
//! layers' counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

macro_rules! manager_counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub(crate) struct ManagerCounters {
            $(pub(crate) $name: AtomicU64,)*
        }

        /// The managers' counters at one moment, summed over every manager
        /// in the process.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        #[non_exhaustive]
        pub struct ManagerStats {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl ManagerCounters {
            fn snapshot(&self) -> ManagerStats {
                ManagerStats { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

manager_counters! {
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

static COUNTERS: std::sync::OnceLock<ManagerCounters> = std::sync::OnceLock::new();

pub(crate) fn counters() -> &'static ManagerCounters {
    COUNTERS.get_or_init(ManagerCounters::default)
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// The managers' counters now.
pub fn manager_stats() -> ManagerStats {
    counters().snapshot()
}
