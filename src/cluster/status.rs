//! From workload objects to rollout states (pure).
//!
//! * [`deployment_progress`], [`stateful_set_progress`], [`daemon_set_progress`]: what a
//!   workload's status says about its rollout, whatever version it runs.
//! * [`judge`]: that, and whether its containers run the release's version, as one
//!   workload's [`RolloutState`].
//! * [`aggregate`]: the state of the release's rollout over every selected workload.
//!   Selecting nothing, or only workloads that run none of the release's images, is
//!   **Progressing** with a detail that says so: a wrong selector must show, it is never
//!   taken for a healthy rollout.

use std::fmt;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetStatus, Deployment, DeploymentStatus, StatefulSet, StatefulSetStatus,
};
use k8s_openapi::api::core::v1::PodSpec;
use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::images::{ImageCheck, ReleaseImages};
use crate::core::rollout::RolloutState;
use crate::policy::v1alpha1::{Release, WorkloadKind, WorkloadSpec};

/// One workload: its kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadId {
    /// Deployment, `StatefulSet` or `DaemonSet`.
    pub kind: WorkloadKind,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            kind_name(self.kind),
            self.namespace,
            self.name
        )
    }
}

/// The kind's name as Kubernetes spells it.
#[must_use]
pub fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::DaemonSet => "DaemonSet",
    }
}

/// A container of a workload's pod template and the image it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage {
    /// The container's name.
    pub name: String,
    /// Its `image`, as written (empty when unset).
    pub image: String,
    /// An init container.
    pub init: bool,
}

/// What a workload's status says about its latest rollout, whatever version that is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every replica runs the current template and is ready (and available); a
    /// summary such as `3/3 updated, ready and available`.
    Done(String),
    /// Something is missing, e.g. `2/3 updated, 1/3 ready` or `observedGeneration 4 <
    /// generation 5`.
    Waiting(String),
    /// The rollout gave up: a Deployment's `Progressing` condition is False with
    /// reason `ProgressDeadlineExceeded`.
    DeadlineExceeded(String),
}

/// What was observed of one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadObservation {
    /// Which workload.
    pub workload: WorkloadId,
    /// Its containers, init containers first.
    pub containers: Vec<ContainerImage>,
    /// Some container runs one of the release's repositories (at any version). Only
    /// these workloads count for the release's rollout.
    pub runs_release: bool,
    /// Complete: every container of the release's repositories runs the release's
    /// version, and the status says the rollout is done. Failed: it runs the
    /// release's version and the rollout exceeded its progress deadline. Else
    /// Progressing. (For a workload that runs none of the release's images: its own
    /// rollout's state, for information.)
    pub state: RolloutState,
    /// What is missing or wrong, or a summary when complete.
    pub detail: String,
}

/// The rollout of a release over every selected workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutObservation {
    /// Failed if a workload running the release's images failed; Complete if every
    /// workload running the release's images is complete (and there is at least one);
    /// else Progressing.
    pub state: RolloutState,
    /// Why, in one line (which workloads are missing what, or that the selectors
    /// select nothing relevant).
    pub detail: String,
    /// Each selected workload, in the order of the specs and then of the API's list.
    pub workloads: Vec<WorkloadObservation>,
}

/// What the adapter needs of a workload type: apps/v1 Deployment, `StatefulSet` and
/// `DaemonSet` implement it.
pub trait WorkloadObject:
    kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The kind.
    const KIND: WorkloadKind;
    /// The pod template's spec.
    fn pod_spec(&self) -> Option<&PodSpec>;
    /// The pod template's spec, to change.
    fn pod_spec_mut(&mut self) -> Option<&mut PodSpec>;
    /// What its status says.
    fn progress(&self) -> Progress;
}

impl WorkloadObject for Deployment {
    const KIND: WorkloadKind = WorkloadKind::Deployment;
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.template.spec.as_ref()
    }
    fn pod_spec_mut(&mut self) -> Option<&mut PodSpec> {
        self.spec.template.spec.as_mut()
    }
    fn progress(&self) -> Progress {
        deployment_progress(self)
    }
}

impl WorkloadObject for StatefulSet {
    const KIND: WorkloadKind = WorkloadKind::StatefulSet;
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.template.spec.as_ref()
    }
    fn pod_spec_mut(&mut self) -> Option<&mut PodSpec> {
        self.spec.template.spec.as_mut()
    }
    fn progress(&self) -> Progress {
        stateful_set_progress(self)
    }
}

impl WorkloadObject for DaemonSet {
    const KIND: WorkloadKind = WorkloadKind::DaemonSet;
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.template.spec.as_ref()
    }
    fn pod_spec_mut(&mut self) -> Option<&mut PodSpec> {
        self.spec.template.spec.as_mut()
    }
    fn progress(&self) -> Progress {
        daemon_set_progress(self)
    }
}

/// The workload's kind, namespace and name.
#[must_use]
pub fn workload_id<W: WorkloadObject>(w: &W) -> WorkloadId {
    let meta = w.meta();
    WorkloadId {
        kind: W::KIND,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// The pod template's containers, init containers first.
#[must_use]
pub fn containers(spec: Option<&PodSpec>) -> Vec<ContainerImage> {
    let Some(spec) = spec else {
        return Vec::new();
    };
    let init = spec.init_containers.iter().flatten().map(|c| (c, true));
    let main = spec.containers.iter().map(|c| (c, false));
    init.chain(main)
        .map(|(c, init)| ContainerImage {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            init,
        })
        .collect()
}

/// One workload object judged against the release.
#[must_use]
pub fn observe_object<W: WorkloadObject>(w: &W, images: &ReleaseImages) -> WorkloadObservation {
    judge(
        workload_id(w),
        containers(w.pod_spec()),
        w.progress(),
        images,
    )
}

/// `None` when the status describes the current spec; else what lags.
fn generation_lag(generation: Option<i64>, observed: Option<i64>) -> Option<String> {
    match (generation, observed) {
        (Some(g), Some(o)) if o < g => Some(format!("observedGeneration {o} < generation {g}")),
        (Some(g), None) => Some(format!("status not observed yet (generation {g})")),
        _ => None,
    }
}

fn count(n: Option<i32>) -> i32 {
    n.unwrap_or(0)
}

fn done_or_waiting(missing: &[String], done: String) -> Progress {
    if missing.is_empty() {
        Progress::Done(done)
    } else {
        Progress::Waiting(missing.join(", "))
    }
}

/// A Deployment's rollout: done when the status describes the current generation,
/// `updatedReplicas`, `readyReplicas` and `availableReplicas` reach `spec.replicas`
/// (default 1), no old replicas are left (`status.replicas` = updated) and it is not
/// paused; deadline exceeded when its `Progressing` condition is False with reason
/// `ProgressDeadlineExceeded`.
#[must_use]
pub fn deployment_progress(d: &Deployment) -> Progress {
    let desired = d.spec.replicas.unwrap_or(1);
    let paused = d.spec.paused.unwrap_or(false);
    let default = DeploymentStatus::default();
    let status = d.status.as_ref().unwrap_or(&default);
    if let Some(lag) = generation_lag(d.metadata.generation, status.observed_generation) {
        return Progress::Waiting(lag);
    }
    let stuck = status.conditions.iter().flatten().find(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(c) = stuck {
        return Progress::DeadlineExceeded(match c.message.as_deref() {
            Some(m) if !m.is_empty() => format!("progress deadline exceeded: {m}"),
            _ => "progress deadline exceeded".to_owned(),
        });
    }
    let updated = count(status.updated_replicas);
    let replicas = count(status.replicas);
    let ready = count(status.ready_replicas);
    let available = count(status.available_replicas);
    let mut missing = Vec::new();
    if paused {
        missing.push("paused".to_owned());
    }
    if updated < desired {
        missing.push(format!("{updated}/{desired} updated"));
    }
    if replicas > updated {
        let old = replicas - updated;
        let noun = if old == 1 { "replica" } else { "replicas" };
        missing.push(format!("{old} old {noun} pending termination"));
    }
    if ready < desired {
        missing.push(format!("{ready}/{desired} ready"));
    }
    if available < desired {
        missing.push(format!("{available}/{desired} available"));
    }
    done_or_waiting(
        &missing,
        format!("{desired}/{desired} updated, ready and available"),
    )
}

/// A `StatefulSet`'s rollout: done when the status describes the current generation,
/// every replica is updated (`updateRevision` = `currentRevision`, or
/// `updatedReplicas` reaches `spec.replicas`, default 1) and `readyReplicas` (and
/// `availableReplicas`, where the server reports it) reach `spec.replicas`.
#[must_use]
pub fn stateful_set_progress(s: &StatefulSet) -> Progress {
    let desired = s.spec.replicas.unwrap_or(1);
    let default = StatefulSetStatus::default();
    let status = s.status.as_ref().unwrap_or(&default);
    if let Some(lag) = generation_lag(s.metadata.generation, status.observed_generation) {
        return Progress::Waiting(lag);
    }
    let updated = count(status.updated_replicas);
    let same_revision = status
        .update_revision
        .as_ref()
        .is_some_and(|u| Some(u) == status.current_revision.as_ref());
    let ready = count(status.ready_replicas);
    let mut missing = Vec::new();
    if !same_revision && updated < desired {
        missing.push(format!("{updated}/{desired} updated"));
    }
    if ready < desired {
        missing.push(format!("{ready}/{desired} ready"));
    }
    if let Some(available) = status.available_replicas
        && available < desired
    {
        missing.push(format!("{available}/{desired} available"));
    }
    done_or_waiting(&missing, format!("{desired}/{desired} updated and ready"))
}

/// A `DaemonSet`'s rollout: done when the status describes the current generation and
/// `updatedNumberScheduled`, `numberReady` and `numberAvailable` reach
/// `desiredNumberScheduled`.
#[must_use]
pub fn daemon_set_progress(d: &DaemonSet) -> Progress {
    let default = DaemonSetStatus::default();
    let status = d.status.as_ref().unwrap_or(&default);
    if let Some(lag) = generation_lag(d.metadata.generation, status.observed_generation) {
        return Progress::Waiting(lag);
    }
    let desired = status.desired_number_scheduled;
    let updated = count(status.updated_number_scheduled);
    let ready = status.number_ready;
    let available = count(status.number_available);
    let mut missing = Vec::new();
    if updated < desired {
        missing.push(format!("{updated}/{desired} updated"));
    }
    if ready < desired {
        missing.push(format!("{ready}/{desired} ready"));
    }
    if available < desired {
        missing.push(format!("{available}/{desired} available"));
    }
    done_or_waiting(
        &missing,
        format!("{desired}/{desired} updated, ready and available"),
    )
}

/// One workload's state: see [`WorkloadObservation::state`]. A container of the
/// release's repositories at another version makes it Progressing whatever the status
/// says (`web runs nginx:1.0.0, want 1.1.0`), so a stuck rollout of an older version
/// is not the release's failure.
#[must_use]
pub fn judge(
    workload: WorkloadId,
    containers: Vec<ContainerImage>,
    progress: Progress,
    images: &ReleaseImages,
) -> WorkloadObservation {
    let mut runs_release = false;
    let mut wrong = Vec::new();
    for c in &containers {
        match images.check(&c.image) {
            ImageCheck::NotInRelease => {}
            ImageCheck::AtVersion => runs_release = true,
            ImageCheck::Other { want } => {
                runs_release = true;
                wrong.push(format!("{} runs {}, want {want}", c.name, c.image));
            }
        }
    }
    let (state, detail) = if wrong.is_empty() {
        match progress {
            Progress::Done(d) => (RolloutState::Complete, d),
            Progress::Waiting(d) => (RolloutState::Progressing, d),
            Progress::DeadlineExceeded(d) => (RolloutState::Failed, d),
        }
    } else {
        let mut detail = wrong.join("; ");
        if let Progress::Waiting(d) | Progress::DeadlineExceeded(d) = progress {
            detail.push_str("; ");
            detail.push_str(&d);
        }
        (RolloutState::Progressing, detail)
    };
    WorkloadObservation {
        workload,
        containers,
        runs_release,
        state,
        detail,
    }
}

/// A spec in words: `Deployments in prow with app=web`.
fn describe(spec: &WorkloadSpec) -> String {
    format!(
        "{}s in {} with {}",
        kind_name(spec.kind),
        spec.namespace,
        spec.selector
    )
}

fn list(workloads: &[&WorkloadObservation], with_detail: bool) -> String {
    workloads
        .iter()
        .map(|w| {
            if with_detail {
                format!("{}: {}", w.workload, w.detail)
            } else {
                w.workload.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The release's rollout over the selected `workloads` (see
/// [`RolloutObservation::state`]); `specs` only word the details.
#[must_use]
pub fn aggregate(
    specs: &[WorkloadSpec],
    release: &Release,
    workloads: Vec<WorkloadObservation>,
) -> RolloutObservation {
    let images = ReleaseImages::new(release);
    let relevant: Vec<&WorkloadObservation> = workloads.iter().filter(|w| w.runs_release).collect();
    let failed: Vec<&WorkloadObservation> = relevant
        .iter()
        .copied()
        .filter(|w| w.state == RolloutState::Failed)
        .collect();
    let pending: Vec<&WorkloadObservation> = relevant
        .iter()
        .copied()
        .filter(|w| w.state == RolloutState::Progressing)
        .collect();
    let (state, detail) = if specs.is_empty() {
        (
            RolloutState::Progressing,
            "no workloads to observe (rollout.workloads is empty)".to_owned(),
        )
    } else if workloads.is_empty() {
        let specs: Vec<String> = specs.iter().map(describe).collect();
        (
            RolloutState::Progressing,
            format!(
                "no workload selected ({}): check the selectors",
                specs.join("; ")
            ),
        )
    } else if relevant.is_empty() {
        let all: Vec<&WorkloadObservation> = workloads.iter().collect();
        let what = if images.is_empty() {
            format!("{} names no image", release.summary)
        } else {
            format!(
                "none runs an image of {} ({})",
                release.summary,
                images.repositories()
            )
        };
        (
            RolloutState::Progressing,
            format!(
                "{} selected workload(s) ({}), but {what}: check the selectors",
                workloads.len(),
                list(&all, false)
            ),
        )
    } else if !failed.is_empty() {
        (
            RolloutState::Failed,
            format!(
                "rollout of {} failed: {}",
                release.summary,
                list(&failed, true)
            ),
        )
    } else if !pending.is_empty() {
        (
            RolloutState::Progressing,
            format!(
                "{} of {} workload(s) still rolling out {}: {}",
                pending.len(),
                relevant.len(),
                release.summary,
                list(&pending, true)
            ),
        )
    } else {
        (
            RolloutState::Complete,
            format!(
                "{} workload(s) rolled out {}: {}",
                relevant.len(),
                release.summary,
                list(&relevant, false)
            ),
        )
    };
    RolloutObservation {
        state,
        detail,
        workloads,
    }
}

#[cfg(test)]
mod tests;
