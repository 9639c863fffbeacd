//! A small circuit breaker in front of the connection: after a failed
//! connection, calls fail at once for a short, growing pause instead of each
//! waiting for a server that is known to be down.
//!
//! Why: the HTTP layer treats a backend error as a miss, so during an outage
//! every request would otherwise pay the full command timeout (twice: lookup
//! and store) before the handler runs. With the breaker open a call costs a
//! mutex lock. It also bounds reconnection attempts to one per pause instead
//! of one per request.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// The error a call gets while the breaker is open. Kept as the source of
/// [`BackendError::Connection`](crate::backend::BackendError::Connection).
#[derive(Debug, thiserror::Error)]
#[error("Redis is unreachable; next connection attempt in {retry_in:?}")]
pub(super) struct CircuitOpen {
    retry_in: Duration,
    /// The failure that opened the breaker.
    #[source]
    last: Option<::redis::RedisError>,
}

#[derive(Debug, Default)]
struct State {
    /// Consecutive failed attempts (each one doubles the pause).
    failures: u32,
    /// Calls before this instant fail without touching the connection.
    retry_at: Option<Instant>,
    last_error: Option<::redis::RedisError>,
}

#[derive(Debug)]
pub(super) struct Breaker {
    min_delay: Duration,
    max_delay: Duration,
    /// Fast path: false while the connection is healthy, so a healthy call
    /// never takes the mutex.
    tripped: AtomicBool,
    state: Mutex<State>,
}

impl Breaker {
    pub(super) fn new(min_delay: Duration, max_delay: Duration) -> Self {
        Self {
            min_delay,
            max_delay,
            tripped: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Ok` when a call may go to the server (healthy, or the pause is over
    /// and this call is a probe).
    pub(super) fn check(&self) -> Result<(), CircuitOpen> {
        if !self.tripped.load(Ordering::Acquire) {
            return Ok(());
        }
        let state = self.state();
        let now = Instant::now();
        match state.retry_at {
            Some(at) if now < at => Err(CircuitOpen {
                retry_in: at - now,
                last: state.last_error.clone(),
            }),
            _ => Ok(()),
        }
    }

    pub(super) fn record_success(&self) {
        if !self.tripped.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.state();
        if state.failures > 0 {
            tracing::info!(
                failures = state.failures,
                "redis backend: connection restored"
            );
        }
        *state = State::default();
        self.tripped.store(false, Ordering::Release);
    }

    pub(super) fn record_connection_failure(&self, error: &::redis::RedisError) {
        let mut state = self.state();
        let now = Instant::now();
        // Calls that were in flight when the server went away all fail at
        // once: count them as one failed attempt, not as many.
        if state.retry_at.is_none_or(|at| now >= at) {
            state.failures = state.failures.saturating_add(1);
            let pause = self.pause(state.failures);
            state.retry_at = now.checked_add(pause);
            if state.failures == 1 {
                tracing::warn!(error = %error, "redis backend: connection failed; failing fast for {pause:?}");
            } else {
                tracing::debug!(error = %error, failures = state.failures, "redis backend: still unreachable; next attempt in {pause:?}");
            }
        }
        state.last_error = Some(error.clone());
        self.tripped.store(true, Ordering::Release);
    }

    fn pause(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.min_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> ::redis::RedisError {
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()
    }

    #[test]
    fn opens_after_a_failure_and_closes_after_a_success() {
        let b = Breaker::new(Duration::from_secs(60), Duration::from_secs(120));
        assert!(b.check().is_ok());
        b.record_connection_failure(&io_error());
        let open = b.check().expect_err("open");
        assert!(open.retry_in <= Duration::from_secs(60));
        assert!(std::error::Error::source(&open).is_some());
        b.record_success();
        assert!(b.check().is_ok());
    }

    #[test]
    fn pause_doubles_up_to_the_max() {
        let b = Breaker::new(Duration::from_millis(50), Duration::from_secs(1));
        assert_eq!(b.pause(1), Duration::from_millis(50));
        assert_eq!(b.pause(2), Duration::from_millis(100));
        assert_eq!(b.pause(5), Duration::from_millis(800));
        assert_eq!(b.pause(6), Duration::from_secs(1));
        assert_eq!(b.pause(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn a_burst_of_failures_counts_once() {
        let b = Breaker::new(Duration::from_secs(60), Duration::from_secs(600));
        for _ in 0..10 {
            b.record_connection_failure(&io_error());
        }
        assert_eq!(b.state().failures, 1);
    }
}
