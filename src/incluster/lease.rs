//! Leader election on a `coordination.k8s.io/v1` Lease (does I/O).
//!
//! Every replica runs a [`LeaderElector`] with its own identity on the same Lease.
//! Each round reads the Lease and decides ([`decide`], pure):
//! * absent → create it holding it;
//! * held by this replica → renew (`renewTime` = now);
//! * free (no holder, as after a clean release) or expired
//!   (`renewTime + leaseDurationSeconds < now`) → take it over, `leaseTransitions` + 1;
//! * held by another replica and not expired → stand by.
//!
//! Every write carries the `resourceVersion` read (optimistic concurrency): of two
//! replicas racing for a free Lease exactly one write succeeds. The leader renews
//! every `renew_interval`; it steps down when its writes fail for `renew_deadline`
//! (shorter than the lease duration, so it has stopped before anyone may take over),
//! and at once when a renewal conflicts or shows another holder. On shutdown it
//! releases the Lease (clears `holderIdentity`), so a successor takes over at its
//! next round instead of waiting for expiry.
//!
//! Time comes from the injected [`Clock`]; expiry compares the Lease's `renewTime`
//! (written by the holder's clock) with this replica's clock, so replicas' clocks must
//! agree to well within the lease duration.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::clock::Clock;

/// How a replica takes part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (unique per replica: the pod name).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal (whole seconds, ≥ 1 s).
    pub lease_duration: Duration,
    /// How often the leader renews, and a standby tries to acquire.
    pub renew_interval: Duration,
    /// How long the leader keeps leading while its renewals fail.
    pub renew_deadline: Duration,
}

impl LeaseConfig {
    /// The usual timings: a 15 s lease, renewed every 5 s, given up after 10 s of
    /// failed renewals.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
        }
    }

    /// The same with other timings.
    #[must_use]
    pub fn timings(
        mut self,
        lease_duration: Duration,
        renew_interval: Duration,
        renew_deadline: Duration,
    ) -> Self {
        self.lease_duration = lease_duration;
        self.renew_interval = renew_interval;
        self.renew_deadline = renew_deadline;
        self
    }

    /// Checks the timings: renewals come before the deadline, and the deadline
    /// before the lease expires.
    pub fn validate(&self) -> Result<(), LeaseError> {
        let bad = |why: String| Err(LeaseError::Config(why));
        if self.identity.is_empty() || self.name.is_empty() || self.namespace.is_empty() {
            return bad("the lease needs a namespace, a name and an identity".into());
        }
        if self.lease_duration < Duration::from_secs(1) {
            return bad("the lease duration must be at least 1 s".into());
        }
        if self.renew_interval.is_zero()
            || self.renew_interval >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return bad(format!(
                "need 0 < renew interval ({:?}) < renew deadline ({:?}) < lease duration ({:?})",
                self.renew_interval, self.renew_deadline, self.lease_duration
            ));
        }
        Ok(())
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// Leader election failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server could not be reached or refused.
    #[error("lease {lease}: {source}")]
    Api {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The configuration cannot work.
    #[error("lease configuration: {0}")]
    Config(String),
}

impl LeaseError {
    /// Whether a later round may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { source, .. } => crate::store::kube::api_error_is_retryable(source),
            Self::Config(_) => false,
        }
    }

    /// The variant name, for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Api { .. } => "api",
            Self::Config(_) => "config",
        }
    }
}

/// What one round does with the Lease it read (see [`decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// This replica holds it: renew.
    Renew,
    /// Free or expired: take it over with this `leaseTransitions`.
    TakeOver {
        /// The new transition count.
        transitions: i32,
    },
    /// Another replica holds a valid Lease.
    Standby {
        /// Who.
        holder: String,
    },
}

/// The step for a Lease read as `spec` (`None`: absent), for the replica `identity`,
/// at `now`. A Lease without `leaseDurationSeconds` is judged by `default_duration`.
#[must_use]
pub fn decide(
    spec: Option<&LeaseSpec>,
    identity: &str,
    default_duration: Duration,
    now: DateTime<Utc>,
) -> Step {
    let Some(spec) = spec else {
        return Step::Create;
    };
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    let transitions = spec.lease_transitions.unwrap_or(0);
    match holder {
        Some(h) if h == identity => Step::Renew,
        None => Step::TakeOver {
            transitions: transitions.saturating_add(1),
        },
        Some(h) => {
            let duration = spec.lease_duration_seconds.map_or_else(
                || TimeDelta::from_std(default_duration).unwrap_or(TimeDelta::MAX),
                |s| TimeDelta::seconds(i64::from(s)),
            );
            let expired = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .is_none_or(|t| from_micro(t) + duration < now);
            if expired {
                Step::TakeOver {
                    transitions: transitions.saturating_add(1),
                }
            } else {
                Step::Standby {
                    holder: h.to_owned(),
                }
            }
        }
    }
}

/// Whether a leader whose last successful renewal was at `last_renewal` must stop
/// leading at `now`.
#[must_use]
pub fn must_step_down(
    last_renewal: DateTime<Utc>,
    now: DateTime<Utc>,
    renew_deadline: Duration,
) -> bool {
    TimeDelta::from_std(renew_deadline).is_ok_and(|d| now - last_renewal >= d)
}

fn micro(t: DateTime<Utc>) -> MicroTime {
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn from_micro(t: &MicroTime) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.0.as_microsecond()).unwrap_or_default()
}

const RELEASED: &str = "released";

/// One replica's part in the election.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    clock: Arc<dyn Clock>,
    leader: watch::Sender<bool>,
    /// When this replica last wrote the Lease successfully while holding it.
    last_renewal: Mutex<Option<DateTime<Utc>>>,
    rounds: AtomicU64,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .field("leader", &*self.leader.borrow())
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// An elector for `config` (not leading until a round acquires the Lease).
    pub fn new(
        client: Client,
        config: LeaseConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LeaseError> {
        config.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            clock,
            leader: watch::channel(false).0,
            last_renewal: Mutex::new(None),
            rounds: AtomicU64::new(0),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Leadership as it changes: `true` while this replica leads.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Whether this replica leads now.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// How many rounds ([`LeaderElector::try_acquire_or_renew`]) have completed.
    #[must_use]
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::SeqCst)
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn api_error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            lease: self.lease_name(),
            source,
        }
    }

    fn set_leader(&self, leading: bool) {
        self.leader.send_if_modified(|l| {
            let changed = *l != leading;
            *l = leading;
            changed
        });
        if leading {
            tracing::debug!(lease = %self.lease_name(), identity = %self.config.identity, "leading");
        }
    }

    fn renewed(&self, at: DateTime<Utc>) {
        *self.lock_renewal() = Some(at);
        if !self.is_leader() {
            tracing::info!(lease = %self.lease_name(), identity = %self.config.identity, "became leader");
        }
        self.set_leader(true);
    }

    fn lost(&self, why: &str) {
        if self.is_leader() {
            if why == RELEASED {
                tracing::info!(lease = %self.lease_name(), identity = %self.config.identity, "releasing the lease");
            } else {
                tracing::warn!(lease = %self.lease_name(), identity = %self.config.identity, why, "stopped leading");
            }
        }
        *self.lock_renewal() = None;
        self.set_leader(false);
    }

    fn lock_renewal(&self) -> std::sync::MutexGuard<'_, Option<DateTime<Utc>>> {
        // A poisoned lock only means a panic elsewhere; the timestamp is still valid.
        self.last_renewal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A failed write or read: keep leading until the renew deadline passes.
    fn failed(&self, now: DateTime<Utc>, e: &LeaseError) {
        let last = *self.lock_renewal();
        match last {
            Some(at) if !must_step_down(at, now, self.config.renew_deadline) => {
                tracing::warn!(lease = %self.lease_name(), error = %e, "lease renewal failed; still leading");
            }
            Some(_) => self.lost("renewals failed for longer than the renew deadline"),
            None => {}
        }
    }

    fn holding(
        &self,
        now: DateTime<Utc>,
        acquire: Option<MicroTime>,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.duration_seconds()),
            acquire_time: acquire.or_else(|| Some(micro(now))),
            renew_time: Some(micro(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: reads the Lease and creates, renews or takes it over as
    /// [`decide`] says. Returns whether this replica leads afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaseError> {
        let result = self.round().await;
        self.rounds.fetch_add(1, Ordering::SeqCst);
        result
    }

    async fn round(&self) -> Result<bool, LeaseError> {
        let now = self.clock.now();
        let current = match self.api.get_opt(&self.config.name).await {
            Ok(l) => l,
            Err(e) => {
                let e = self.api_error(e);
                self.failed(now, &e);
                return Err(e);
            }
        };
        let step = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.config.identity,
            self.config.lease_duration,
            now,
        );
        let write = match (&step, current) {
            (Step::Standby { holder }, _) => {
                self.lost(&format!("the lease is held by {holder}"));
                return Ok(false);
            }
            (Step::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.holding(now, None, 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Step::Renew, Some(mut lease)) => {
                let spec = lease.spec.take().unwrap_or_default();
                lease.spec =
                    Some(self.holding(now, spec.acquire_time, spec.lease_transitions.unwrap_or(0)));
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
            (Step::TakeOver { transitions }, Some(mut lease)) => {
                lease.spec = Some(self.holding(now, None, *transitions));
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match write {
            Ok(_) => {
                self.renewed(now);
                Ok(true)
            }
            // Someone else wrote the Lease since it was read: they hold it now, or
            // the next round will see.
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => {
                self.lost("another replica wrote the lease first");
                Ok(false)
            }
            Err(e) => {
                let e = self.api_error(e);
                self.failed(now, &e);
                Err(e)
            }
        }
    }

    /// Gives the Lease up if this replica holds it: stops leading first, then clears
    /// `holderIdentity` so a successor takes over at its next round. Returns whether
    /// a release was written.
    pub async fn release(&self) -> Result<bool, LeaseError> {
        self.lost(RELEASED);
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(false);
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.renew_time = Some(micro(self.clock.now()));
        spec.lease_duration_seconds = Some(1);
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Changed since read: it is not ours any more.
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// Runs rounds every `renew_interval` until `stop` says `true`, then releases the
    /// Lease. Errors of single rounds are logged, not returned.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<bool, LeaseError> {
        loop {
            if let Err(e) = self.try_acquire_or_renew().await {
                tracing::warn!(lease = %self.lease_name(), error = %crate::error_chain(&e), "leader election round failed");
            }
            tokio::select! {
                () = super::shutdown_requested(&mut stop) => break,
                () = tokio::time::sleep(self.config.renew_interval) => {}
            }
        }
        self.release().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn held(by: Option<&str>, renewed: &str, seconds: i32, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: by.map(ToOwned::to_owned),
            renew_time: Some(micro(at(renewed))),
            acquire_time: Some(micro(at(renewed))),
            lease_duration_seconds: Some(seconds),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_round_creates_renews_takes_over_or_stands_by() {
        let d = Duration::from_secs(15);
        let now = at("2026-11-21T10:00:20Z");
        let cases = [
            (None, Step::Create),
            (
                Some(held(Some("a"), "2026-11-21T10:00:10Z", 15, 3)),
                Step::Renew,
            ),
            (
                Some(held(Some("b"), "2026-11-21T10:00:10Z", 15, 3)),
                Step::Standby { holder: "b".into() },
            ),
            // Exactly at expiry it is still valid; a moment later it is not.
            (
                Some(held(Some("b"), "2026-11-21T10:00:05Z", 15, 3)),
                Step::Standby { holder: "b".into() },
            ),
            (
                Some(held(Some("b"), "2026-11-21T10:00:04Z", 15, 3)),
                Step::TakeOver { transitions: 4 },
            ),
            // Released: free at once, whatever the times say.
            (
                Some(held(None, "2026-11-21T10:00:19Z", 1, 4)),
                Step::TakeOver { transitions: 5 },
            ),
            (
                Some(held(Some(""), "2026-11-21T10:00:19Z", 15, 0)),
                Step::TakeOver { transitions: 1 },
            ),
            // Without a duration the configured one applies.
            (
                Some(LeaseSpec {
                    lease_duration_seconds: None,
                    ..held(Some("b"), "2026-11-21T10:00:10Z", 0, 0)
                }),
                Step::Standby { holder: "b".into() },
            ),
            // Never renewed: expired.
            (
                Some(LeaseSpec {
                    holder_identity: Some("b".into()),
                    ..LeaseSpec::default()
                }),
                Step::TakeOver { transitions: 1 },
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(decide(spec.as_ref(), "a", d, now), want, "{spec:?}");
        }
    }

    #[test]
    fn a_leader_steps_down_once_renewals_failed_for_the_deadline() {
        let last = at("2026-11-21T10:00:00Z");
        let deadline = Duration::from_secs(10);
        assert!(!must_step_down(last, at("2026-11-21T10:00:09Z"), deadline));
        assert!(must_step_down(last, at("2026-11-21T10:00:10Z"), deadline));
    }

    #[test]
    fn timings_must_leave_room_before_expiry() {
        let ok = LeaseConfig::new("ns", "autobump", "pod-a");
        assert!(ok.validate().is_ok());
        let secs = Duration::from_secs;
        for (lease, renew, deadline) in [
            (secs(15), secs(5), secs(15)),
            (secs(15), secs(10), secs(10)),
            (secs(15), Duration::ZERO, secs(10)),
            (
                Duration::from_millis(500),
                Duration::from_millis(100),
                Duration::from_millis(200),
            ),
        ] {
            let bad = ok.clone().timings(lease, renew, deadline);
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(LeaseConfig::new("ns", "autobump", "").validate().is_err());
    }

    #[test]
    fn micro_times_round_trip() {
        let t = at("2026-11-21T10:00:00.123456Z");
        assert_eq!(from_micro(&micro(t)), t);
    }
}
