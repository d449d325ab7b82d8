//! How loading the policy files is going, for logs and readiness (no I/O; the time
//! comes from the injected [`Clock`]).
//!
//! The running controller never stops on a load failure (a folder swapped under it,
//! a file that is not UTF-8, no file descriptors left): the last good policies stay
//! in force. [`LoadHealth`] remembers since when loading has been failing and with
//! which error, so that a failure is logged once per change rather than every tick,
//! and `/readyz` turns not ready once it has lasted longer than allowed.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

use crate::clock::Clock;

/// How long policy loading may fail before `/readyz` says not ready, unless
/// `--not-ready-after` says otherwise.
pub const DEFAULT_NOT_READY_AFTER: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Whether the policies last loaded, and since when they have not.
pub struct LoadHealth {
    clock: Arc<dyn Clock>,
    not_ready_after: chrono::Duration,
    failing: Mutex<Option<Failing>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Failing {
    since: DateTime<Utc>,
    error: String,
}

/// What a load result changed, so the caller logs only changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// As before (the same error again, or loaded again).
    Same,
    /// A new error, or a different one than last time.
    NewError,
    /// Loading works again after failing.
    Recovered,
}

impl LoadHealth {
    /// Healthy, with `not_ready_after` as the longest failure that keeps it ready.
    #[must_use]
    pub fn new(clock: Arc<dyn Clock>, not_ready_after: std::time::Duration) -> Self {
        Self {
            clock,
            not_ready_after: chrono::Duration::from_std(not_ready_after)
                .unwrap_or(chrono::Duration::MAX),
            failing: Mutex::new(None),
        }
    }

    /// The same, with another threshold (the failure in progress, if any, is kept).
    #[must_use]
    pub fn with_not_ready_after(self, not_ready_after: std::time::Duration) -> Self {
        Self {
            not_ready_after: chrono::Duration::from_std(not_ready_after)
                .unwrap_or(chrono::Duration::MAX),
            ..self
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Failing>> {
        // The value is replaced whole under the lock; a panic elsewhere leaves it valid.
        self.failing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loading failed with `error`.
    pub fn failed(&self, error: &str) -> Change {
        let mut failing = self.lock();
        match &mut *failing {
            Some(f) if f.error == error => Change::Same,
            Some(f) => {
                error.clone_into(&mut f.error);
                Change::NewError
            }
            None => {
                *failing = Some(Failing {
                    since: self.clock.now(),
                    error: error.to_owned(),
                });
                Change::NewError
            }
        }
    }

    /// Loading worked.
    pub fn loaded(&self) -> Change {
        if self.lock().take().is_some() {
            Change::Recovered
        } else {
            Change::Same
        }
    }

    /// The error of the failure in progress, if loading fails now.
    #[must_use]
    pub fn error(&self) -> Option<String> {
        self.lock().as_ref().map(|f| f.error.clone())
    }

    /// Why the controller is not ready: loading has failed for longer than allowed
    /// (`None` while it works, or has failed only briefly).
    #[must_use]
    pub fn not_ready(&self) -> Option<String> {
        let failing = self.lock();
        let f = failing.as_ref()?;
        let lasted = self.clock.now() - f.since;
        (lasted > self.not_ready_after).then(|| {
            format!(
                "loading the policies has failed for {}s (since {}): {}",
                lasted.num_seconds(),
                f.since.format("%Y-%m-%dT%H:%M:%SZ"),
                f.error
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_failure_is_new_once_and_not_ready_only_after_the_threshold() {
        let clock = Arc::new(ManualClock::new("2026-12-06T10:00:00Z".parse().unwrap()));
        let health = LoadHealth::new(clock.clone(), std::time::Duration::from_secs(300));
        assert_eq!(health.loaded(), Change::Same);
        assert_eq!(health.not_ready(), None);

        assert_eq!(health.failed("policies: gone"), Change::NewError);
        assert_eq!(health.failed("policies: gone"), Change::Same);
        clock.advance(chrono::Duration::seconds(300));
        assert_eq!(
            health.not_ready(),
            None,
            "exactly the threshold is still ready"
        );
        // Another error keeps the start of the failure.
        assert_eq!(health.failed("policies: EMFILE"), Change::NewError);
        clock.advance(chrono::Duration::seconds(1));
        let why = health.not_ready().unwrap();
        assert!(why.contains("301s") && why.contains("EMFILE"), "{why}");
        assert_eq!(health.error().as_deref(), Some("policies: EMFILE"));

        assert_eq!(health.loaded(), Change::Recovered);
        assert_eq!(health.not_ready(), None);
        assert_eq!(health.error(), None);
        // A new failure starts a new clock.
        assert_eq!(health.failed("policies: gone"), Change::NewError);
        clock.advance(chrono::Duration::seconds(10));
        assert_eq!(health.not_ready(), None);
    }
}
