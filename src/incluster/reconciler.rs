//! The in-cluster reconciler (`autobump run --kubernetes`): the same per-policy
//! reconcile as standalone mode, fed by [`crate::incluster::driver::Driver`] with
//! `Autobump` objects and keeping state in their status (does I/O).

use std::sync::Arc;

use super::driver::{Failure, Outcome, PolicyReconciler, Request};
use crate::controller::ReconcileError;
use crate::controller::engine::{PolicyOutcome, ProductionEngine};
use crate::policy::Policy;

/// Reconciles `Autobump` objects through the [`ProductionEngine`], their state in
/// their status.
#[derive(Clone)]
pub struct ClusterReconciler {
    engine: Arc<ProductionEngine>,
}

impl ClusterReconciler {
    /// A reconciler running each object through `engine`.
    #[must_use]
    pub fn new(engine: Arc<ProductionEngine>) -> Self {
        Self { engine }
    }
}

impl PolicyReconciler for ClusterReconciler {
    async fn reconcile(&self, request: Request) -> Result<Outcome, Failure> {
        let policy = Policy::from_resource(&request.object)
            .map_err(|problems| Failure::new("invalid_policy", problems.join("; "), false))?;
        match self.engine.run(&policy, &request.store, request.now).await {
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
