//! Time source for freshness decisions, replaceable in tests.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

/// A source of wall-clock time.
///
/// The layer reads it to decide freshness and compute `Age`. Production code
/// uses [`Clock::system`]; tests use a [`ManualClock`] to move time forward
/// without sleeping (the moka guide's "tests never sleep").
#[derive(Clone)]
pub struct Clock {
    now: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    /// Whether `now` is the operating system's clock, so that timers of
    /// other libraries (moka's expiry) agree with it.
    system: bool,
}

impl Clock {
    /// The operating system's clock.
    pub fn system() -> Self {
        Self {
            now: Arc::new(SystemTime::now),
            system: true,
        }
    }

    /// A clock that calls `now`.
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self {
            now: Arc::new(now),
            system: false,
        }
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        (self.now)()
    }

    /// Whether this is [`Clock::system`].
    pub(crate) fn is_system(&self) -> bool {
        self.system
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Clock").field(&self.now()).finish()
    }
}

/// A clock that only moves when told to, for tests.
///
/// ```
/// use std::time::Duration;
/// use axum_cachex::ManualClock;
///
/// let manual = ManualClock::new();
/// let clock = manual.clock();
/// let before = clock.now();
/// manual.advance(Duration::from_secs(90));
/// assert_eq!(clock.now().duration_since(before).ok(), Some(Duration::from_secs(90)));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// Starts at the current system time.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(SystemTime::now())))
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    /// A [`Clock`] reading this manual time.
    pub fn clock(&self) -> Clock {
        let inner = Arc::clone(&self.0);
        Clock::from_fn(move || *inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
