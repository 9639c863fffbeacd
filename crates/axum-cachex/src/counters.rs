//! The one counter mechanism of the crate: a struct of atomics that is
//! bumped without a lock, and a plain snapshot of it that serializes to
//! JSON (the monitoring routes read counters through that serialized form,
//! so a counter added here shows up in `/stats` and `/metrics` by itself).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Defines a live counter struct (`pub(crate)`, one `AtomicU64` per
/// counter) and its public snapshot (one documented `u64` per counter), with
/// `snapshot()` to copy the one into the other.
macro_rules! define_counters {
    (
        $(#[$live_meta:meta])* live $live:ident;
        $(#[$snap_meta:meta])* snapshot $snap:ident;
        $($(#[$doc:meta])* $name:ident),* $(,)?
    ) => {
        $(#[$live_meta])*
        #[derive(Debug, Default)]
        pub(crate) struct $live {
            $(pub(crate) $name: ::std::sync::atomic::AtomicU64,)*
        }

        $(#[$snap_meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ::serde::Serialize)]
        #[non_exhaustive]
        pub struct $snap {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl $live {
            /// The counters now.
            pub(crate) fn snapshot(&self) -> $snap {
                $snap {
                    $($name: self.$name.load(::std::sync::atomic::Ordering::Relaxed),)*
                }
            }
        }
    };
}
pub(crate) use define_counters;

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}
