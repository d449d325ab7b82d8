//! The one place that reads time (does I/O: the system clock).
//!
//! Every decision in autobump takes `now` as a parameter; the drivers get it from a
//! [`Clock`]. `clippy.toml` bans `Utc::now`, `SystemTime::now` and `Instant::now`
//! everywhere else, so a test (or the simulator) that controls the clock controls
//! every timestamp autobump produces.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of wall-clock time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned read of the wall clock
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; for tests and the simulator.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    #[must_use]
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock to `to` (which may be earlier: clocks do jump back).
    pub fn set(&self, to: DateTime<Utc>) {
        *self.lock() = to;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.lock();
        *now += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A poisoned lock only means another test thread panicked mid-`set`; the
        // timestamp inside is still a valid value.
        self.now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// A point on the monotonic clock after which a wait gives up: for I/O loops that poll
/// (waiting for a child server to become ready, a retry budget), never for decisions.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: std::time::Instant,
}

impl Deadline {
    /// A deadline `timeout` from now.
    #[must_use]
    #[allow(clippy::disallowed_methods)] // monotonic time for timeouts is read here only
    pub fn after(timeout: Duration) -> Self {
        Self {
            at: std::time::Instant::now() + timeout,
        }
    }

    /// Whether the deadline has passed.
    #[must_use]
    pub fn expired(&self) -> bool {
        self.remaining().is_zero()
    }

    /// Time left until the deadline (zero once it passed).
    #[must_use]
    #[allow(clippy::disallowed_methods)] // see `after`
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(std::time::Instant::now())
    }
}

/// Measures elapsed monotonic time, for logs and metrics (never for decisions).
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    start: std::time::Instant,
}

impl Stopwatch {
    /// Starts measuring.
    #[must_use]
    #[allow(clippy::disallowed_methods)] // see `Deadline::after`
    pub fn start() -> Self {
        Self {
            start: std::time::Instant::now(),
        }
    }

    /// Time since [`Stopwatch::start`].
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = DateTime::parse_from_rfc3339("2026-03-08T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(chrono::Duration::minutes(90));
        assert_eq!(clock.now(), start + chrono::Duration::minutes(90));
        clock.set(start);
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn deadline_in_the_past_is_expired() {
        assert!(Deadline::after(Duration::ZERO).expired());
        assert!(!Deadline::after(Duration::from_secs(3600)).expired());
    }
}
