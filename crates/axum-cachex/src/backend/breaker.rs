//! The circuit breaker shared by the networked backends (one per Redis
//! server or Cluster primary, one per Memcached server): after a failed connection, or after
//! [`threshold`](Breaker::new) consecutive timeouts (a server that is alive
//! but frozen, e.g. stopped with `SIGSTOP`, swapping, or stuck in a slow
//! command), calls fail at once instead of each waiting for a server that is
//! known not to answer.
//!
//! Why: the HTTP layer treats a backend error as a miss, so during an outage
//! every request would otherwise pay the full command timeout (twice: lookup
//! and store) before the handler runs. With the breaker open a call costs an
//! atomic load and a mutex lock, and the request goes straight to the
//! handler.
//!
//! While open, no request talks to the server. When the pause is over, the
//! next call that is turned away receives a [`ProbeTicket`]: the backend
//! spawns a probe (a `PING` / `version` bounded by the command timeout) in
//! the background, so no request ever waits for the probe. A probe that gets
//! an answer closes the breaker; one that fails or times out doubles the
//! pause (up to the maximum). At most one probe is in flight at a time.
//!
//! Measured (`BENCH_ONLY_STALL=1 cargo bench --bench http --features
//! redis`, 2 cores, 64 connections, redis-server frozen with `SIGSTOP` for
//! 10 s, default settings): after the first second the cached route runs at
//! 0.65–0.67× of the uncached route's throughput with 1.5× its p99
//! (0.87–0.89 ms); with timeouts not opening the breaker
//! (`breaker_threshold(0)`) it runs at 253 requests/s with a p50 of 252 ms.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// The cause the breaker remembers: the error that opened it or the last
/// failed probe's.
pub(crate) type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// The error a call gets while the breaker is open. Kept as the source of
/// [`BackendError::Connection`](crate::backend::BackendError::Connection),
/// which is [`is_unavailable`](crate::backend::BackendError::is_unavailable),
/// so the HTTP layer serves the request from the handler.
#[derive(Debug, thiserror::Error)]
#[error("{server} is not answering (circuit open); next probe in {retry_in:?}")]
pub(crate) struct CircuitOpen {
    server: String,
    retry_in: Duration,
    /// The failure that opened the breaker (or the last failed probe's).
    #[source]
    last: Option<Cause>,
}

/// The cause recorded when consecutive timeouts opened the breaker.
#[derive(Debug, thiserror::Error)]
#[error("{count} consecutive calls timed out after {timeout:?}")]
pub(crate) struct TimedOut {
    count: u32,
    timeout: Duration,
}

/// A cause known only by its message (for errors that are not `Clone`).
#[cfg(feature = "memcached")]
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Message(pub(crate) String);

#[derive(Debug, Default)]
struct State {
    /// Consecutive timeouts while closed.
    timeouts: u32,
    /// 0 while closed; else the number of failed attempts since it opened
    /// (each one doubles the pause).
    failures: u32,
    /// While open: no probe before this instant.
    retry_at: Option<Instant>,
    /// A probe is in flight.
    probing: bool,
    last_error: Option<Cause>,
}

/// A circuit breaker; see the [module documentation](self).
#[derive(Debug)]
pub(crate) struct Breaker {
    server: String,
    threshold: u32,
    min_delay: Duration,
    max_delay: Duration,
    /// Fast path of [`check`](Self::check): true while open.
    open: AtomicBool,
    /// Fast path of [`record_success`](Self::record_success): false while the
    /// state is pristine (closed, no timeout counted).
    dirty: AtomicBool,
    state: Mutex<State>,
}

/// Why [`Breaker::check`] turned a call away.
#[derive(Debug)]
pub(crate) struct Rejected {
    /// The error to return to the caller.
    pub(crate) error: CircuitOpen,
    /// Present when a probe is due: the caller should run one in the
    /// background and report its outcome through the ticket.
    pub(crate) probe: Option<ProbeTicket>,
}

/// The right (and duty) to run the one probe in flight. Dropping it without
/// [`succeeded`](Self::succeeded) counts as a failed probe, so a probe that
/// was cancelled (e.g. its runtime shut down) cannot leave the breaker
/// waiting forever.
#[derive(Debug)]
pub(crate) struct ProbeTicket {
    breaker: Arc<Breaker>,
    done: bool,
}

impl ProbeTicket {
    /// The server answered: closes the breaker.
    pub(crate) fn succeeded(mut self) {
        self.done = true;
        self.breaker.record_success();
    }

    /// The probe failed with `cause`: the breaker stays open for a longer
    /// pause.
    pub(crate) fn failed(mut self, cause: Cause) {
        self.done = true;
        self.breaker.probe_failed(Some(cause));
    }
}

impl Drop for ProbeTicket {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.probe_failed(None);
        }
    }
}

/// Watches one call for the breaker: a call whose future is dropped after
/// waiting at least half its timeout (typically because the caller's own
/// timeout, such as the cache layer's `backend_timeout`, fired first) counts
/// as a timeout, so an outer timeout equal to or shorter than the backend's
/// cannot hide a frozen server from the breaker. Calls dropped sooner (a
/// client that went away) count for nothing.
#[derive(Debug)]
pub(crate) struct Watch<'a> {
    breaker: &'a Breaker,
    started: Instant,
    timeout: Duration,
    armed: bool,
}

impl<'a> Watch<'a> {
    /// Starts watching a call bounded by `timeout`.
    pub(crate) fn new(breaker: &'a Breaker, timeout: Duration) -> Self {
        Self {
            breaker,
            started: Instant::now(),
            timeout,
            armed: true,
        }
    }

    /// The call ended and its outcome was reported.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if self.armed && self.started.elapsed() >= self.timeout / 2 {
            self.breaker.record_timeout(self.timeout);
        }
    }
}

impl Breaker {
    /// A closed breaker for `server` (named in errors and logs). It opens
    /// after one failed connection or `threshold` consecutive timeouts
    /// (0 = timeouts never open it); while open, probes are `min_delay`
    /// apart, doubling after each failed probe up to `max_delay`. A zero
    /// `min_delay` disables the breaker: it never opens.
    pub(crate) fn new(
        server: impl Into<String>,
        threshold: u32,
        min_delay: Duration,
        max_delay: Duration,
    ) -> Self {
        Self {
            server: server.into(),
            threshold,
            min_delay,
            max_delay: max_delay.max(min_delay),
            open: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn disabled(&self) -> bool {
        self.min_delay.is_zero()
    }

    /// `Ok` when a call may go to the server; otherwise the error to return
    /// and, when one is due, a probe ticket.
    pub(crate) fn check(self: &Arc<Self>) -> Result<(), Rejected> {
        if !self.open.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut state = self.state();
        if state.failures == 0 {
            return Ok(()); // closed since the load
        }
        let now = Instant::now();
        let due = state.retry_at.is_none_or(|at| now >= at);
        let probe = (due && !state.probing).then(|| {
            state.probing = true;
            ProbeTicket {
                breaker: Arc::clone(self),
                done: false,
            }
        });
        Err(Rejected {
            error: CircuitOpen {
                server: self.server.clone(),
                retry_in: state
                    .retry_at
                    .map_or(Duration::ZERO, |at| at.saturating_duration_since(now)),
                last: state.last_error.clone(),
            },
            probe,
        })
    }

    /// A call got an answer: the server is alive, the breaker closes.
    pub(crate) fn record_success(&self) {
        if !self.dirty.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.state();
        if state.failures > 0 {
            tracing::info!(server = %self.server, failures = state.failures, "backend server answers again; circuit closed");
        }
        *state = State::default();
        self.open.store(false, Ordering::Release);
        self.dirty.store(false, Ordering::Release);
    }

    /// A connection attempt failed or a connection broke: opens the breaker
    /// at once (a refused connection costs nothing to detect, and the next
    /// attempt would most likely be refused too).
    pub(crate) fn record_connection_failure(&self, cause: Cause) {
        if self.disabled() {
            return;
        }
        let mut state = self.state();
        if state.failures == 0 {
            self.trip(&mut state, &cause);
        }
        state.last_error = Some(cause);
    }

    /// A call timed out: after `threshold` consecutive ones (no answer in
    /// between), the server is taken for frozen and the breaker opens.
    pub(crate) fn record_timeout(&self, timeout: Duration) {
        if self.disabled() || self.threshold == 0 {
            return;
        }
        let mut state = self.state();
        if state.failures > 0 {
            return; // already open: calls that were in flight
        }
        state.timeouts = state.timeouts.saturating_add(1);
        self.dirty.store(true, Ordering::Release);
        if state.timeouts >= self.threshold {
            let cause: Cause = Arc::new(TimedOut {
                count: state.timeouts,
                timeout,
            });
            self.trip(&mut state, &cause);
            state.last_error = Some(cause);
        }
    }

    /// Opens a closed breaker.
    fn trip(&self, state: &mut State, cause: &Cause) {
        state.failures = 1;
        state.timeouts = 0;
        let pause = self.pause(1);
        state.retry_at = Instant::now().checked_add(pause);
        tracing::warn!(server = %self.server, error = %cause, "backend server unavailable; circuit open, failing fast for {pause:?}");
        self.dirty.store(true, Ordering::Release);
        self.open.store(true, Ordering::Release);
    }

    fn probe_failed(&self, cause: Option<Cause>) {
        let mut state = self.state();
        state.probing = false;
        if state.failures == 0 {
            return; // closed meanwhile by another call's success
        }
        state.failures = state.failures.saturating_add(1);
        let pause = self.pause(state.failures);
        state.retry_at = Instant::now().checked_add(pause);
        if let Some(cause) = cause {
            tracing::debug!(server = %self.server, error = %cause, failures = state.failures, "backend server still unavailable; next probe in {pause:?}");
            state.last_error = Some(cause);
        }
    }

    fn pause(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.min_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }

    /// Whether calls are currently turned away (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> Cause {
        Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    fn breaker(threshold: u32, min: Duration, max: Duration) -> Arc<Breaker> {
        Arc::new(Breaker::new("test", threshold, min, max))
    }

    #[test]
    fn opens_after_a_failure_and_closes_after_a_success() {
        let b = breaker(3, Duration::from_secs(60), Duration::from_secs(120));
        assert!(b.check().is_ok());
        b.record_connection_failure(io_error());
        let open = b.check().expect_err("open");
        assert!(open.error.retry_in <= Duration::from_secs(60));
        assert!(open.probe.is_none(), "no probe before the pause is over");
        assert!(std::error::Error::source(&open.error).is_some());
        b.record_success();
        assert!(b.check().is_ok());
    }

    #[test]
    fn opens_after_threshold_consecutive_timeouts_only() {
        let b = breaker(3, Duration::from_secs(60), Duration::from_secs(120));
        let t = Duration::from_millis(250);
        b.record_timeout(t);
        b.record_timeout(t);
        b.record_success();
        b.record_timeout(t);
        b.record_timeout(t);
        assert!(b.check().is_ok(), "a success in between resets the count");
        b.record_timeout(t);
        let open = b.check().expect_err("open after 3 in a row");
        assert!(open.error.to_string().contains("not answering"));
        let source = std::error::Error::source(&open.error).expect("cause");
        assert!(source.to_string().contains("3 consecutive"), "{source}");
    }

    #[test]
    fn one_probe_at_a_time_and_its_outcome_decides() {
        let b = breaker(1, Duration::from_millis(1), Duration::from_millis(1));
        b.record_timeout(Duration::from_millis(250));
        std::thread::sleep(Duration::from_millis(5)); // past the pause
        let ticket = b.check().expect_err("open").probe.expect("probe due");
        assert!(b.check().expect_err("open").probe.is_none(), "one probe");
        ticket.failed(io_error());
        assert_eq!(b.state().failures, 2);
        std::thread::sleep(Duration::from_millis(5));
        let ticket = b.check().expect_err("open").probe.expect("probe due");
        drop(ticket); // a cancelled probe counts as failed
        assert!(!b.state().probing);
        std::thread::sleep(Duration::from_millis(5));
        b.check()
            .expect_err("open")
            .probe
            .expect("probe due")
            .succeeded();
        assert!(b.check().is_ok());
        assert!(!b.is_open());
    }

    #[test]
    fn zero_threshold_or_delay_never_opens_on_timeouts() {
        let b = breaker(0, Duration::from_secs(1), Duration::from_secs(1));
        for _ in 0..100 {
            b.record_timeout(Duration::from_millis(1));
        }
        assert!(b.check().is_ok());
        let b = breaker(3, Duration::ZERO, Duration::ZERO);
        for _ in 0..100 {
            b.record_timeout(Duration::from_millis(1));
            b.record_connection_failure(io_error());
        }
        assert!(b.check().is_ok());
    }

    #[test]
    fn an_abandoned_call_counts_as_a_timeout_once_it_waited_long_enough() {
        let b = breaker(2, Duration::from_secs(60), Duration::from_secs(120));
        drop(Watch::new(&b, Duration::from_secs(3600))); // abandoned at once
        let mut done = Watch::new(&b, Duration::ZERO);
        done.disarm();
        drop(done); // reported its own outcome
        assert_eq!(b.state().timeouts, 0);
        drop(Watch::new(&b, Duration::ZERO)); // waited "half" of zero
        drop(Watch::new(&b, Duration::ZERO));
        assert!(b.check().is_err(), "two abandoned calls opened it");
    }

    #[test]
    fn pause_doubles_up_to_the_max() {
        let b = breaker(3, Duration::from_millis(50), Duration::from_secs(1));
        assert_eq!(b.pause(1), Duration::from_millis(50));
        assert_eq!(b.pause(2), Duration::from_millis(100));
        assert_eq!(b.pause(5), Duration::from_millis(800));
        assert_eq!(b.pause(6), Duration::from_secs(1));
        assert_eq!(b.pause(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn a_burst_of_failures_counts_once() {
        let b = breaker(3, Duration::from_secs(60), Duration::from_secs(600));
        for _ in 0..10 {
            b.record_connection_failure(io_error());
            b.record_timeout(Duration::from_millis(1));
        }
        assert_eq!(b.state().failures, 1);
    }
}
