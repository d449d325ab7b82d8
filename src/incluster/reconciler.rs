//! The in-cluster reconciler (`autobump run --kubernetes`): the same per-policy
//! reconcile as standalone mode, fed by [`crate::incluster::driver::Driver`] with
//! `Autobump` objects and keeping state in their status (does I/O).

use std::sync::Arc;

use crate::controller::ReconcileError;
use crate::controller::standalone::{PolicyOutcome, Standalone};
use tracing::Instrument as _;

use super::driver::{Failure, Outcome, PolicyReconciler, Request};
use crate::clock::Stopwatch;
use crate::policy::Policy;

/// Reconciles `Autobump` objects with the adapters of a [`Standalone`] driver (its
/// policy files and state file are not used).
#[derive(Clone)]
pub struct ClusterReconciler {
    engine: Arc<Standalone>,
}

impl ClusterReconciler {
    /// A reconciler using `engine`'s registry, git, GitHub, alert and cluster
    /// adapters and its metrics.
    #[must_use]
    pub fn new(engine: Arc<Standalone>) -> Self {
        Self { engine }
    }
}

impl PolicyReconciler for ClusterReconciler {
    async fn reconcile(&self, request: Request) -> Result<Outcome, Failure> {
        let policy = Policy::from_resource(&request.object)
            .map_err(|problems| Failure::new("invalid_policy", problems.join("; "), false))?;
        let watch = Stopwatch::start();
        let span = tracing::info_span!("reconcile", policy = %request.key);
        let outcome = self
            .engine
            .reconcile_bounded(&policy, &request.store, request.now)
            .instrument(span.clone())
            .await;
        let state = span.in_scope(|| {
            self.engine
                .account(policy.name(), &request.store, &outcome, watch.elapsed())
        });
        if let Some(state) = state {
            self.engine
                .notify(&policy, &request.store, &state, request.now)
                .instrument(span)
                .await;
        }
        match outcome {
            PolicyOutcome::Done(report) => Ok(Outcome::new(report.summary())),
            PolicyOutcome::Failed(e) => Err(e.into()),
            PolicyOutcome::Skipped(why) => Err(Failure::new("skipped", why, false)),
        }
    }
}

impl From<ReconcileError> for Failure {
    fn from(e: ReconcileError) -> Self {
        Self::new(e.metric_label(), crate::error_chain(&e), e.is_retryable())
    }
}
