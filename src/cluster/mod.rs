//! Where the images run: rollout observation and the break-glass image patch (does
//! I/O: the Kubernetes API through kube's `Client`).
//!
//! * [`Workloads`]: the narrow trait the controller uses (and a simulator fakes) —
//!   "how far is this release rolled out over these workloads" and "set these
//!   workloads' images to this release". [`KubeWorkloads`] is the real one.
//! * [`status`] (pure): from apps/v1 Deployments, `StatefulSets` and `DaemonSets` to a
//!   [`RolloutState`](crate::core::rollout::RolloutState) per workload and for the
//!   release, with a human-readable detail of what is still missing.
//! * [`images`] (pure): which container images belong to a release (repositories
//!   compared canonically), and what to set them to, keeping their spelling.
//!
//! A wrong selector is never taken for a healthy rollout: selecting nothing, or
//! nothing that runs the release's images, is Progressing and says so.

mod client;
mod error;
pub mod images;
pub mod status;

pub use self::client::{BeforeReplace, KubeWorkloads, PATCHED_AT, PATCHED_TO};
pub use self::error::ClusterError;
pub use self::images::ReleaseImages;
pub use self::status::{
    ContainerImage, RolloutObservation, WorkloadId, WorkloadObservation, aggregate,
};
use crate::policy::v1alpha1::{Release, WorkloadSpec};

/// One container image changed by [`Workloads::patch_images`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patched {
    /// The workload.
    pub workload: WorkloadId,
    /// The container's name.
    pub container: String,
    /// An init container.
    pub init: bool,
    /// The image before.
    pub from: String,
    /// The image written.
    pub to: String,
}

/// What the controller needs to know and do about the workloads of
/// `rollout.workloads`.
pub trait Workloads: Send + Sync {
    /// The rollout of `release` over the workloads `specs` select (each kind in its
    /// namespace with its label selector); see [`RolloutObservation`].
    fn observe(
        &self,
        specs: &[WorkloadSpec],
        release: &Release,
    ) -> impl Future<Output = Result<RolloutObservation, ClusterError>> + Send;

    /// Sets every container and init container image of the selected workloads whose
    /// repository is one of `release`'s to the release's version, keeping the
    /// registry and repository as written there. Workloads already at the release
    /// are not written. Returns what changed.
    ///
    /// Every selected workload is tried; if some could not be patched, the first
    /// error is returned after the others were patched (a repeat call is cheap: what
    /// is done already is not written again).
    fn patch_images(
        &self,
        specs: &[WorkloadSpec],
        release: &Release,
    ) -> impl Future<Output = Result<Vec<Patched>, ClusterError>> + Send;
}

/// The object-safe face of [`Workloads`], so the controller's dependencies can hold
/// "some cluster, or none" without another type parameter. Every [`Workloads`] is one.
pub trait DynWorkloads: Send + Sync {
    /// [`Workloads::observe`].
    fn observe_boxed<'a>(
        &'a self,
        specs: &'a [WorkloadSpec],
        release: &'a Release,
    ) -> futures::future::BoxFuture<'a, Result<RolloutObservation, ClusterError>>;

    /// [`Workloads::patch_images`].
    fn patch_images_boxed<'a>(
        &'a self,
        specs: &'a [WorkloadSpec],
        release: &'a Release,
    ) -> futures::future::BoxFuture<'a, Result<Vec<Patched>, ClusterError>>;
}

impl<W: Workloads> DynWorkloads for W {
    fn observe_boxed<'a>(
        &'a self,
        specs: &'a [WorkloadSpec],
        release: &'a Release,
    ) -> futures::future::BoxFuture<'a, Result<RolloutObservation, ClusterError>> {
        Box::pin(self.observe(specs, release))
    }

    fn patch_images_boxed<'a>(
        &'a self,
        specs: &'a [WorkloadSpec],
        release: &'a Release,
    ) -> futures::future::BoxFuture<'a, Result<Vec<Patched>, ClusterError>> {
        Box::pin(self.patch_images(specs, release))
    }
}
