//! The in-cluster driver (`autobump run --kubernetes`): kube-runtime's `Controller`
//! over the `Autobump` objects, acting only while leader (does I/O).
//!
//! Every replica watches the objects (so a standby's cache is warm), and every
//! replica runs a [`LeaderElector`]. Only the leader reconciles: for each object it
//! calls the injected [`PolicyReconciler`] with the object and a [`KubeStore`] scoped
//! to the object's namespace, then writes the status conditions
//! ([`super::conditions`]) and ensures one Event per recent history entry
//! ([`super::events`]), and requeues after [`DriverConfig::interval`] (or sooner,
//! when the outcome asks). A failed reconcile is retried with exponential back-off.
//!
//! * Becoming leader reconciles every object at once. Losing leadership (renewals
//!   failed, or another replica holds the Lease) drops the reconciles in flight at
//!   their next await point: another replica may be acting already, and every effect
//!   is an ensure, so this is the same as a crash, which converges.
//! * A watch event caused only by this process's own status writes (each one is a
//!   new `resourceVersion`) does not start a reconcile before it is due; any other
//!   change (spec, a hold written by the CLI) does.
//! * A [`Trigger`] (a webhook delivery: Alertmanager, registry, GitHub) makes every
//!   object due at once, except one backing off after failures (its back-off keeps a
//!   burst of deliveries off a struggling forge or registry). A trigger only says
//!   *when*: the reconcile reads the gate, registry and forge afresh, so a forged
//!   delivery alone cannot cause a hold or a rollback. Triggers during a reconcile
//!   are not lost: that object reconciles once more right after.
//! * Shutdown (the signal says `true`): no new reconciles, the ones in flight finish,
//!   then the Lease is released so a successor takes over at once.
//!
//! The reconciles run on tasks of the current runtime, which must be tokio's
//! multi-thread runtime ([`KubeStore`]'s synchronous [`crate::store::Store`] methods
//! use `block_in_place`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, TimeDelta, Utc};
use futures::StreamExt as _;
use kube::runtime::Controller;
use kube::runtime::controller::{self, Action};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::watch;
use tracing::Instrument as _;

use super::PolicyKey;
use super::conditions::{self, LastReconcile};
use super::events::EventPublisher;
use super::lease::{LeaderElector, LeaseConfig, LeaseError};
use crate::clock::{Clock, Deadline};
use crate::policy::Autobump;
use crate::store::kube::{KubeStore, KubeStoreError, Scope, state_of};

/// What a successful reconcile of one policy reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// One line on what the reconcile did or waits for (the `Ready` condition's
    /// message). Keep it free of counters that change every time (a countdown), or
    /// every reconcile writes the status.
    pub summary: String,
    /// Reconcile again this soon, when sooner than the driver's interval (a bake
    /// that ends, a window that opens).
    pub requeue_after: Option<Duration>,
}

impl Outcome {
    /// An outcome with this summary and the driver's interval.
    pub fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            requeue_after: None,
        }
    }
}

/// Why a reconcile of one policy failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    /// A PascalCase reason (the `Ready` condition's reason when it is `False`).
    pub reason: String,
    /// What went wrong.
    pub message: String,
    /// Whether a later reconcile may succeed without a person (back-off), or not
    /// (the longest back-off).
    pub retryable: bool,
}

impl Failure {
    /// A failure with a reason given as a metric label (`rate_limited` becomes
    /// `RateLimited`).
    pub fn new(label: &str, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            reason: pascal_case(label),
            message: message.into(),
            retryable,
        }
    }
}

impl From<KubeStoreError> for Failure {
    fn from(e: KubeStoreError) -> Self {
        Self::new(e.metric_label(), crate::error_chain(&e), e.is_retryable())
    }
}

/// `snake_case` (or `kebab-case`) as `PascalCase`.
#[must_use]
pub fn pascal_case(label: &str) -> String {
    label
        .split(['_', '-', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect::<String>()
            })
        })
        .collect()
}

/// One reconcile's input.
#[derive(Debug, Clone)]
pub struct Request {
    /// The object as last seen: spec, name, namespace, generation, status.
    pub object: Arc<Autobump>,
    /// `namespace/name`.
    pub key: PolicyKey,
    /// The state store, scoped to the object's namespace: the policy's bare name
    /// addresses its state.
    pub store: KubeStore,
    /// The time of this reconcile (whole seconds).
    pub now: DateTime<Utc>,
}

/// The per-policy reconcile the driver calls (the seam for `src/controller/`).
pub trait PolicyReconciler: Send + Sync + 'static {
    /// Reconciles one policy. Its state changes go through `request.store` (a
    /// [`crate::store::Store`]); the history entries it records become Events.
    fn reconcile(&self, request: Request) -> impl Future<Output = Result<Outcome, Failure>> + Send;
}

/// How the driver runs.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Which objects to reconcile.
    pub scope: Scope,
    /// The leader election.
    pub lease: LeaseConfig,
    /// How often each policy is reconciled when nothing changes.
    pub interval: Duration,
    /// The first back-off after a failure; it doubles with each failure in a row.
    pub backoff_base: Duration,
    /// The longest back-off (also the wait after a failure that is not retryable).
    pub backoff_max: Duration,
    /// At most this many policies reconcile at once (one object never twice at once).
    pub concurrency: u16,
    /// How far back history entries get Events (see [`super::events`]).
    pub event_window: TimeDelta,
}

impl DriverConfig {
    /// Defaults: every minute, back-off from 5 s to 5 min, four at once.
    #[must_use]
    pub fn new(scope: Scope, lease: LeaseConfig) -> Self {
        Self {
            scope,
            lease,
            interval: Duration::from_secs(60),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            concurrency: 4,
            event_window: super::events::DEFAULT_WINDOW,
        }
    }
}

/// The driver failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The injected reconcile failed (the `Ready` condition says so).
    #[error("reconcile: {0}")]
    Reconcile(#[from] Failure),
    /// The status could not be read or written.
    #[error("status: {0}")]
    Status(#[from] KubeStoreError),
    /// Leader election could not start, or the Lease could not be released.
    #[error("leader election: {0}")]
    Lease(#[from] LeaseError),
}

impl DriverError {
    /// Whether a later attempt may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Reconcile(f) => f.retryable,
            Self::Status(e) => e.is_retryable(),
            Self::Lease(e) => e.is_retryable(),
        }
    }

    /// The variant name, for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Reconcile(_) => "reconcile",
            Self::Status(_) => "status",
            Self::Lease(_) => "lease",
        }
    }
}

/// The back-off after `failures` failures in a row: `base` doubled per failure
/// after the first, at most `max`.
#[must_use]
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(31));
    base.saturating_mul(factor).min(max)
}

/// Asks a running [`Driver`] to reconcile every object now (see the module docs);
/// cheap to clone and to call often: triggers that arrive together coalesce.
#[derive(Debug, Clone)]
pub struct Trigger {
    count: Arc<watch::Sender<u64>>,
}

impl Trigger {
    fn new() -> Self {
        Self {
            count: Arc::new(watch::channel(0).0),
        }
    }

    /// Every object (but those backing off after failures) reconciles at once.
    pub fn reconcile_all(&self) {
        self.count.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.count.subscribe()
    }
}

/// When each object is due, its failures in a row, the generation last reconciled,
/// and the trigger count when that reconcile started.
struct Pace {
    due: Deadline,
    failures: u32,
    generation: Option<i64>,
    triggers: u64,
}

struct Shared<R> {
    reconciler: R,
    store: KubeStore,
    events: EventPublisher,
    clock: Arc<dyn Clock>,
    leader: watch::Receiver<bool>,
    triggers: watch::Receiver<u64>,
    config: DriverConfig,
    pace: Mutex<HashMap<PolicyKey, Pace>>,
}

impl<R> Shared<R> {
    fn now(&self) -> DateTime<Utc> {
        // Decisions and records need no sub-second precision; whole seconds keep
        // status and messages readable (as in the standalone driver).
        self.clock.now().trunc_subsecs(0)
    }

    fn pace(&self) -> std::sync::MutexGuard<'_, HashMap<PolicyKey, Pace>> {
        // A poisoned lock only means a panic elsewhere; the map stays consistent.
        self.pace
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The trigger count now.
    fn triggers(&self) -> u64 {
        *self.triggers.borrow()
    }

    /// The wait left when nothing changed since this object's last reconcile but
    /// this process's own writes (same generation, a `resourceVersion` it wrote),
    /// it is not due yet, and no trigger came since that reconcile started (or it is
    /// backing off after failures, which a trigger does not cut short).
    fn not_due(&self, key: &PolicyKey, object: &Autobump) -> Option<Duration> {
        let pace = self.pace();
        let last = pace.get(key)?;
        let own = object
            .resource_version()
            .is_some_and(|rv| self.store.wrote(key, &rv));
        let triggered = last.failures == 0 && last.triggers != self.triggers();
        (own && !triggered && last.generation == object.metadata.generation && !last.due.expired())
            .then(|| last.due.remaining())
    }

    fn succeeded(&self, key: &PolicyKey, generation: Option<i64>, triggers: u64, wait: Duration) {
        self.pace().insert(
            key.clone(),
            Pace {
                due: Deadline::after(wait),
                failures: 0,
                generation,
                triggers,
            },
        );
    }

    fn failed(&self, key: &PolicyKey, generation: Option<i64>, retryable: bool) -> Duration {
        let mut pace = self.pace();
        let failures = pace.get(key).map_or(0, |p| p.failures) + 1;
        let (base, max) = (self.config.backoff_base, self.config.backoff_max);
        let wait = if retryable {
            // Up to a tenth more, so policies failing together spread out.
            let wait = backoff(base, max, failures);
            wait + wait.mul_f64(fastrand::f64() / 10.0)
        } else {
            max
        };
        // A trigger never shortens a back-off, so the count seen does not matter.
        let triggers = self.triggers();
        pace.insert(
            key.clone(),
            Pace {
                due: Deadline::after(wait),
                failures,
                generation,
                triggers,
            },
        );
        wait
    }

    fn gained_leadership(&self) {
        self.pace().clear();
        self.events.forget();
    }
}

/// Resolves when `leader` says this replica does not lead (or the elector is gone).
async fn leadership_lost(mut leader: watch::Receiver<bool>) {
    let _ = leader.wait_for(|leading| !*leading).await;
}

async fn reconcile<R: PolicyReconciler>(
    object: Arc<Autobump>,
    shared: Arc<Shared<R>>,
) -> Result<Action, DriverError> {
    if !*shared.leader.borrow() {
        return Ok(Action::await_change());
    }
    let Some(key) = PolicyKey::of(&object) else {
        return Ok(Action::await_change());
    };
    if let Some(wait) = shared.not_due(&key, &object) {
        return Ok(Action::requeue(wait));
    }
    let span = tracing::info_span!("reconcile", policy = %key);
    reconcile_policy(object, key, shared).instrument(span).await
}

async fn reconcile_policy<R: PolicyReconciler>(
    object: Arc<Autobump>,
    key: PolicyKey,
    shared: Arc<Shared<R>>,
) -> Result<Action, DriverError> {
    // Taken before anything is read: a trigger from now on reconciles again.
    let triggers = shared.triggers();
    let store = shared.store.in_namespace(&key.namespace);
    let request = Request {
        object: Arc::clone(&object),
        key: key.clone(),
        store: store.clone(),
        now: shared.now(),
    };
    let result = tokio::select! {
        biased;
        () = leadership_lost(shared.leader.clone()) => {
            tracing::warn!(policy = %key, "leadership lost; reconcile abandoned");
            return Ok(Action::await_change());
        }
        result = shared.reconciler.reconcile(request) => result,
    };

    let last = match &result {
        Ok(outcome) => LastReconcile::Succeeded {
            summary: &outcome.summary,
        },
        Err(failure) => LastReconcile::Failed {
            reason: &failure.reason,
            message: &failure.message,
        },
    };
    let generation = object.metadata.generation;
    let now = shared.now();
    let stored = match store
        .update_status_async(&key, |status, _| {
            let state = state_of(status);
            status.conditions =
                conditions::compute(&state, last, &status.conditions, generation, now);
            status.observed_generation = generation;
        })
        .await
    {
        Ok(stored) => stored,
        Err(e) => {
            shared.failed(&key, generation, e.is_retryable());
            return Err(e.into());
        }
    };
    let history = stored
        .status
        .as_ref()
        .map(|s| s.state.history.as_slice())
        .unwrap_or_default();
    if let Err(e) = shared.events.publish(&stored, history, now).await {
        // Events are published again at the next reconcile.
        tracing::warn!(policy = %key, error = %crate::error_chain(&e), "publishing events failed");
    }
    match result {
        Ok(outcome) => {
            let wait = outcome
                .requeue_after
                .map_or(shared.config.interval, |d| d.min(shared.config.interval));
            shared.succeeded(&key, generation, triggers, wait);
            tracing::debug!(policy = %key, summary = %outcome.summary, "reconciled");
            Ok(Action::requeue(wait))
        }
        Err(failure) => Err(failure.into()),
    }
}

// The signature is the one `Controller::run` calls.
#[allow(clippy::needless_pass_by_value)]
fn error_policy<R>(object: Arc<Autobump>, error: &DriverError, shared: Arc<Shared<R>>) -> Action {
    let Some(key) = PolicyKey::of(&object) else {
        return Action::requeue(shared.config.backoff_max);
    };
    // A status failure was counted where it happened.
    let wait = match error {
        DriverError::Status(_) => shared
            .pace()
            .get(&key)
            .map_or(shared.config.backoff_base, |p| p.due.remaining()),
        _ => shared.failed(&key, object.metadata.generation, error.is_retryable()),
    };
    tracing::warn!(
        policy = %key,
        error = %crate::error_chain(error),
        retry_in = ?wait,
        "reconcile failed"
    );
    Action::requeue(wait)
}

/// The in-cluster driver.
pub struct Driver<R> {
    client: Client,
    config: DriverConfig,
    clock: Arc<dyn Clock>,
    reconciler: R,
    elector: Arc<LeaderElector>,
    store: KubeStore,
    trigger: Trigger,
}

impl<R: PolicyReconciler> Driver<R> {
    /// A driver for `config`, calling `reconciler` for each object while leader.
    /// Must be called inside a tokio runtime.
    pub fn new(
        client: Client,
        config: DriverConfig,
        clock: Arc<dyn Clock>,
        reconciler: R,
    ) -> Result<Self, DriverError> {
        let elector = Arc::new(LeaderElector::new(
            client.clone(),
            config.lease.clone(),
            Arc::clone(&clock),
        )?);
        let store = KubeStore::new(client.clone(), config.scope.clone());
        Ok(Self {
            client,
            config,
            clock,
            reconciler,
            elector,
            store,
            trigger: Trigger::new(),
        })
    }

    /// A handle that makes the running driver reconcile every object now (for the
    /// webhooks: Alertmanager, registry pushes, GitHub events).
    #[must_use]
    pub fn trigger(&self) -> Trigger {
        self.trigger.clone()
    }

    /// Leadership as it changes (`true` while this replica leads), e.g. for
    /// `/readyz` or metrics.
    #[must_use]
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.elector.subscribe()
    }

    /// The leader elector (rounds, leadership).
    #[must_use]
    pub fn elector(&self) -> Arc<LeaderElector> {
        Arc::clone(&self.elector)
    }

    /// The state store the driver writes through (for `autobump status` and the
    /// CLI's hold and unhold in cluster mode).
    #[must_use]
    pub fn store(&self) -> KubeStore {
        self.store.clone()
    }

    /// Runs until `shutdown` says `true` (or its sender is dropped): elects, and
    /// while leader reconciles. On shutdown no new reconcile starts, the ones in
    /// flight finish, and then the Lease is released. Returns the release's error,
    /// if any; reconcile and watch errors are logged and retried, never returned.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), DriverError> {
        let api: Api<Autobump> = match &self.config.scope {
            Scope::AllNamespaces => Api::all(self.client.clone()),
            Scope::Namespace(ns) => Api::namespaced(self.client.clone(), ns),
        };
        let shared = Arc::new(Shared {
            reconciler: self.reconciler,
            store: self.store,
            events: EventPublisher::new(self.client.clone(), self.config.lease.identity.clone())
                .with_window(self.config.event_window),
            clock: self.clock,
            leader: self.elector.subscribe(),
            triggers: self.trigger.subscribe(),
            config: self.config,
            pace: Mutex::default(),
        });

        // Leadership gained: forget the pacing of the last term, reconcile all.
        let on_gain = Arc::clone(&shared);
        let gained = futures::stream::unfold(self.elector.subscribe(), |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                if *rx.borrow_and_update() {
                    return Some(((), rx));
                }
            }
        })
        .map(move |()| on_gain.gained_leadership());
        // A trigger: every object at once (`not_due` lets them through).
        let triggered = futures::stream::unfold(self.trigger.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        });

        // The Controller wants a `Sync` shutdown future; a oneshot receiver is one.
        let (graceful_tx, graceful_rx) = futures::channel::oneshot::channel::<()>();
        let relay = async move {
            super::shutdown_requested(&mut shutdown).await;
            let _ = graceful_tx.send(());
        };

        let controller = Controller::new(api, watcher::Config::default())
            .with_config(controller::Config::default().concurrency(shared.config.concurrency))
            .reconcile_all_on(gained)
            .reconcile_all_on(triggered)
            .graceful_shutdown_on(async move {
                let _ = graceful_rx.await;
            })
            .run(reconcile::<R>, error_policy::<R>, Arc::clone(&shared))
            .for_each(|result| async move {
                if let Err(e) = result {
                    match e {
                        controller::Error::ReconcilerFailed(..)
                        | controller::Error::ObjectNotFound(_) => {
                            tracing::debug!(error = %crate::error_chain(&e), "controller");
                        }
                        _ => tracing::warn!(error = %crate::error_chain(&e), "controller"),
                    }
                }
            });

        let (stop_lease, lease_stop) = watch::channel(false);
        let controller = async move {
            controller.await;
            // Only now: the reconciles in flight finished while still leading.
            let _ = stop_lease.send(true);
        };
        let elector = Arc::clone(&self.elector);
        let ((), (), released) = tokio::join!(relay, controller, elector.run(lease_stop));
        released?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_become_pascal_case_reasons() {
        for (label, reason) in [
            ("rate_limited", "RateLimited"),
            ("io", "Io"),
            ("push-race", "PushRace"),
            ("policy", "Policy"),
            ("", ""),
        ] {
            assert_eq!(pascal_case(label), reason);
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let s = Duration::from_secs;
        let waits: Vec<Duration> = (1..=8).map(|n| backoff(s(5), s(300), n)).collect();
        assert_eq!(
            waits,
            [s(5), s(10), s(20), s(40), s(80), s(160), s(300), s(300)]
        );
        assert_eq!(backoff(s(5), s(300), 0), s(5));
        assert_eq!(backoff(s(5), s(300), u32::MAX), s(300));
    }
}
