//! The simulated cluster: one workload per app (a Deployment, `StatefulSet` or
//! `DaemonSet` in the namespace `sim`, some with an init container of the app's image or
//! a sidecar of another image), a GitOps applier that sets their images from the base
//! branch a random delay after it changes (and, on a resync, reverts autobump's
//! patches), and rollouts that complete, exceed their progress deadline, or hang.
//!
//! [`SimCluster`] is autobump's `Workloads` adapter over it. It builds real apps/v1
//! objects (spec, generation, status) for what the world says and hands them to the
//! real status and image code (`observe_object`, `aggregate`, `retarget_pod_spec`), so
//! only the Kubernetes API itself is simulated. It asks the fault injector first and
//! keeps no state of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::future::{Future, ready};

use autobump::cluster::images::{ReleaseImages, retarget_pod_spec};
use autobump::cluster::status::{containers, observe_object};
use autobump::cluster::{
    ClusterError, ContainerImage, Patched, RolloutObservation, WorkloadId, WorkloadObservation,
    Workloads, aggregate,
};
use autobump::policy::v1alpha1::{Release, WorkloadKind, WorkloadSpec};
use chrono::{DateTime, TimeDelta, Utc};
use fastrand::Rng;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetStatus, Deployment, DeploymentCondition, DeploymentSpec,
    DeploymentStatus, StatefulSet, StatefulSetSpec, StatefulSetStatus,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::adapters::{Shared, lock};
use crate::scenario::{ClusterScenario, NAMESPACE, PART_OF, SIDECAR, Scenario, image_tokens};
use crate::world::{Admit, Versions, World};

/// How a rollout ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every replica is updated and ready at this instant.
    Completes(DateTime<Utc>),
    /// A Deployment's progress deadline is exceeded at this instant (it stays so).
    Stuck(DateTime<Utc>),
    /// Never completes (a `StatefulSet` or `DaemonSet` whose new pods never get
    /// ready: they have no deadline).
    Hangs,
}

/// What a workload's status says at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The controller has not observed the new generation yet.
    Unobserved,
    /// Replicas are being replaced.
    Rolling,
    /// Every replica is updated, ready and available.
    Done,
    /// A Deployment's `Progressing` condition says `ProgressDeadlineExceeded`.
    Deadline,
    /// Rolled out, but a replica is not ready (its node is being drained).
    Disrupted,
}

/// One workload.
#[derive(Debug, Clone)]
pub struct SimWorkload {
    /// Its kind.
    pub kind: WorkloadKind,
    /// Its name (the app's).
    pub name: String,
    /// Its pod template's containers, init containers first.
    pub containers: Vec<ContainerImage>,
    /// `metadata.generation`.
    pub generation: i64,
    /// When the current generation's rollout started.
    pub started: DateTime<Utc>,
    /// How it ends.
    pub outcome: Outcome,
    /// A replica is unready until then.
    pub disrupted_until: Option<DateTime<Utc>>,
    /// The target autobump last patched it to (`None` once the applier wrote it).
    pub patched_to: Option<Vec<ContainerImage>>,
}

impl SimWorkload {
    /// Its id, as the adapter reports it.
    pub fn id(&self) -> WorkloadId {
        WorkloadId {
            kind: self.kind,
            namespace: NAMESPACE.to_owned(),
            name: self.name.clone(),
        }
    }

    fn phase(&self, now: DateTime<Utc>) -> Phase {
        if now < self.started + TimeDelta::minutes(1) {
            return Phase::Unobserved;
        }
        match self.outcome {
            Outcome::Completes(at) if now >= at => {
                if self.disrupted_until.is_some_and(|t| now < t) {
                    Phase::Disrupted
                } else {
                    Phase::Done
                }
            }
            Outcome::Stuck(at) if now >= at => Phase::Deadline,
            _ => Phase::Rolling,
        }
    }

    fn pod_spec(&self) -> PodSpec {
        let container = |c: &ContainerImage| Container {
            name: c.name.clone(),
            image: Some(c.image.clone()),
            ..Container::default()
        };
        let init: Vec<Container> = self
            .containers
            .iter()
            .filter(|c| c.init)
            .map(container)
            .collect();
        PodSpec {
            init_containers: (!init.is_empty()).then_some(init),
            containers: self
                .containers
                .iter()
                .filter(|c| !c.init)
                .map(container)
                .collect(),
            ..PodSpec::default()
        }
    }

    fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.clone()),
            namespace: Some(NAMESPACE.to_owned()),
            generation: Some(self.generation),
            labels: Some(BTreeMap::from([
                (PART_OF.0.to_owned(), PART_OF.1.to_owned()),
                ("app".to_owned(), self.name.clone()),
            ])),
            ..ObjectMeta::default()
        }
    }

    fn template(&self) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(self.pod_spec()),
        }
    }

    /// The status generation the controller reports: one behind while unobserved.
    fn observed(&self, phase: Phase) -> i64 {
        if phase == Phase::Unobserved {
            self.generation - 1
        } else {
            self.generation
        }
    }

    /// The real adapter's judgement of this workload (as built objects) at `now`.
    fn observe(&self, now: DateTime<Utc>, images: &ReleaseImages) -> WorkloadObservation {
        let phase = self.phase(now);
        match self.kind {
            WorkloadKind::Deployment => self.deployment(phase, images),
            WorkloadKind::StatefulSet => self.stateful_set(phase, images),
            WorkloadKind::DaemonSet => self.daemon_set(phase, images),
        }
    }

    /// As a Deployment of 2 replicas (a surge of one while rolling).
    fn deployment(&self, phase: Phase, images: &ReleaseImages) -> WorkloadObservation {
        let observed = Some(self.observed(phase));
        let (replicas, updated, ready) = match phase {
            Phase::Unobserved | Phase::Rolling | Phase::Deadline => (3, 1, 2),
            Phase::Done => (2, 2, 2),
            Phase::Disrupted => (2, 2, 1),
        };
        let condition = if phase == Phase::Deadline {
            DeploymentCondition {
                type_: Some("Progressing".into()),
                status: Some("False".into()),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some(format!(
                    "ReplicaSet \"{}-{}\" has timed out progressing.",
                    self.name, self.generation
                )),
                ..DeploymentCondition::default()
            }
        } else {
            DeploymentCondition {
                type_: Some("Progressing".into()),
                status: Some("True".into()),
                reason: Some(
                    if phase == Phase::Done {
                        "NewReplicaSetAvailable"
                    } else {
                        "ReplicaSetUpdated"
                    }
                    .into(),
                ),
                ..DeploymentCondition::default()
            }
        };
        let d = Deployment {
            metadata: self.meta(),
            spec: DeploymentSpec {
                replicas: Some(2),
                template: self.template(),
                ..DeploymentSpec::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: observed,
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                conditions: Some(vec![condition]),
                ..DeploymentStatus::default()
            }),
        };
        observe_object(&d, images)
    }

    /// As a `StatefulSet` of 2 replicas (no progress deadline).
    fn stateful_set(&self, phase: Phase, images: &ReleaseImages) -> WorkloadObservation {
        let observed = Some(self.observed(phase));
        let previous = format!("{}-{}", self.name, self.generation - 1);
        let current = format!("{}-{}", self.name, self.generation);
        let (revision, updated, ready) = match phase {
            Phase::Unobserved | Phase::Rolling | Phase::Deadline => (previous, 1, 1),
            Phase::Done => (current.clone(), 2, 2),
            Phase::Disrupted => (current.clone(), 2, 1),
        };
        let s = StatefulSet {
            metadata: self.meta(),
            spec: StatefulSetSpec {
                replicas: Some(2),
                template: self.template(),
                ..StatefulSetSpec::default()
            },
            status: Some(StatefulSetStatus {
                observed_generation: observed,
                replicas: 2,
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                updated_replicas: Some(updated),
                current_revision: Some(revision),
                update_revision: Some(current),
                ..StatefulSetStatus::default()
            }),
        };
        observe_object(&s, images)
    }

    /// As a `DaemonSet` on 3 nodes (no progress deadline).
    fn daemon_set(&self, phase: Phase, images: &ReleaseImages) -> WorkloadObservation {
        let observed = Some(self.observed(phase));
        let (updated, ready) = match phase {
            Phase::Unobserved | Phase::Rolling | Phase::Deadline => (1, 2),
            Phase::Done => (3, 3),
            Phase::Disrupted => (3, 2),
        };
        let d = DaemonSet {
            metadata: self.meta(),
            spec: DaemonSetSpec {
                template: self.template(),
                ..DaemonSetSpec::default()
            },
            status: Some(DaemonSetStatus {
                observed_generation: observed,
                desired_number_scheduled: 3,
                current_number_scheduled: 3,
                updated_number_scheduled: Some(updated),
                number_ready: ready,
                number_available: Some(ready),
                ..DaemonSetStatus::default()
            }),
        };
        observe_object(&d, images)
    }
}

/// One workload refuses autobump's writes (an admission webhook, RBAC, or another
/// writer conflicting with every attempt).
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    /// Which workload.
    pub workload: usize,
    /// A retryable refusal (conflicts) or a permanent one (forbidden).
    pub retryable: bool,
    /// Until when.
    pub until: DateTime<Utc>,
}

/// The cluster.
#[derive(Debug)]
pub struct ClusterWorld {
    /// Its own randomness (the classic streams stay as they were).
    rng: Rng,
    /// The workloads, one per app.
    pub workloads: Vec<SimWorkload>,
    /// When the applier syncs the base branch next.
    sync_at: Option<DateTime<Utc>>,
    /// Whether the API server answers.
    pub reachable: bool,
    /// When an unreachable API server comes back by itself.
    reachable_again: Option<DateTime<Utc>>,
    /// Rollouts complete and nothing fails (the liveness phase).
    pub healthy: bool,
    /// A workload that refuses writes.
    pub refusal: Option<Refusal>,
}

/// The repository of a container image under `prefix`, if it is one of the policy's.
pub fn policy_repo<'a>(image: &'a str, prefix: &str) -> Option<&'a str> {
    image_tokens(image, prefix)
        .first()
        .filter(|t| t.at == 0 && t.repo.starts_with(prefix))
        .map(|t| t.repo)
}

impl ClusterWorld {
    /// The cluster at the start: every workload runs what `images` (the base branch's
    /// references by repository) says, rolled out long ago.
    pub fn new(
        seed: u64,
        scenario: &Scenario,
        c: &ClusterScenario,
        images: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Self {
        let workloads = scenario
            .apps
            .iter()
            .enumerate()
            .map(|(a, app)| {
                let image = images
                    .get(&scenario.repo(a))
                    .cloned()
                    .unwrap_or_else(|| panic!("main deploys {app}"));
                let mut containers = Vec::new();
                if c.init[a] {
                    containers.push(ContainerImage {
                        name: "migrate".into(),
                        image: image.clone(),
                        init: true,
                    });
                }
                containers.push(ContainerImage {
                    name: app.clone(),
                    image,
                    init: false,
                });
                if c.sidecar[a] {
                    containers.push(ContainerImage {
                        name: "proxy".into(),
                        image: SIDECAR.into(),
                        init: false,
                    });
                }
                SimWorkload {
                    kind: c.kinds[a],
                    name: app.clone(),
                    containers,
                    generation: 4,
                    started: now - TimeDelta::hours(2),
                    outcome: Outcome::Completes(now - TimeDelta::hours(1)),
                    disrupted_until: None,
                    patched_to: None,
                }
            })
            .collect();
        Self {
            rng: Rng::with_seed(seed),
            workloads,
            sync_at: None,
            reachable: true,
            reachable_again: None,
            healthy: false,
            refusal: None,
        }
    }

    /// The workloads a spec selects (its kind, in its namespace, with every label of
    /// its equality selector), by index.
    pub fn selected(&self, spec: &WorkloadSpec) -> Vec<usize> {
        let wanted: Vec<(&str, &str)> = spec
            .selector
            .as_str()
            .split(',')
            .map(|term| {
                term.split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .expect("the simulator writes equality selectors only")
            })
            .collect();
        if spec.namespace.as_str() != NAMESPACE {
            return Vec::new();
        }
        self.workloads
            .iter()
            .enumerate()
            .filter(|(_, w)| w.kind == spec.kind)
            .filter(|(_, w)| {
                wanted
                    .iter()
                    .all(|(k, v)| (*k, *v) == PART_OF || (*k == "app" && *v == w.name))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The versions of the policy's images the workloads run: `(repo, tag)`.
    pub fn running_versions(&self, prefix: &str) -> Versions {
        let mut out = BTreeSet::new();
        for w in &self.workloads {
            for c in &w.containers {
                if let Some(t) = image_tokens(&c.image, prefix).first() {
                    out.insert((t.repo.to_owned(), t.tag.to_owned()));
                }
            }
        }
        out
    }

    /// The base branch changed: the applier notices it after a delay (some appliers
    /// are webhook-driven and apply at once).
    pub fn main_changed(&mut self, now: DateTime<Utc>) {
        if self.sync_at.is_none() {
            let delay = if self.rng.u32(0..10) < 4 {
                0
            } else {
                self.rng.i64(1..=12)
            };
            self.sync_at = Some(now + TimeDelta::minutes(delay));
        }
    }

    /// A resync now (self-heal: reverts whatever differs from the base branch).
    pub fn resync(&mut self, now: DateTime<Utc>) {
        self.sync_at = Some(now);
    }

    /// When a due sync is to happen; also brings the API server back when its outage
    /// is over and ends a refusal whose time is up.
    pub fn sync_due(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.reachable_again.is_some_and(|t| now >= t) {
            self.reachable_again = None;
            self.reachable = true;
        }
        if self.refusal.is_some_and(|r| now >= r.until) {
            self.refusal = None;
        }
        self.sync_at.filter(|t| *t <= now)
    }

    /// The API server goes down (for a while) or comes back.
    pub fn set_reachable(&mut self, up: bool, now: DateTime<Utc>) {
        self.reachable = up;
        self.reachable_again = (!up).then(|| now + TimeDelta::minutes(self.rng.i64(5..90)));
    }

    /// The applier sets every workload's images of the policy's repositories to
    /// `images` (the base branch's references) at `at`; returns how many changed.
    /// `good` says whether a version is a good build (bad ones fail more rollouts).
    pub fn apply(
        &mut self,
        images: &BTreeMap<String, String>,
        at: DateTime<Utc>,
        prefix: &str,
        good: &dyn Fn(&str, &str) -> bool,
    ) -> usize {
        self.sync_at = None;
        let mut changed = 0;
        for i in 0..self.workloads.len() {
            let mut next = self.workloads[i].containers.clone();
            let mut any = false;
            for c in &mut next {
                if let Some(want) = policy_repo(&c.image, prefix).and_then(|r| images.get(r))
                    && c.image != *want
                {
                    c.image.clone_from(want);
                    any = true;
                }
            }
            if any {
                self.set_spec(i, next, at, prefix, good);
                self.workloads[i].patched_to = None;
                changed += 1;
            }
        }
        changed
    }

    /// A new pod template for workload `i` at `at`: a new generation and rollout.
    pub fn set_spec(
        &mut self,
        i: usize,
        containers: Vec<ContainerImage>,
        at: DateTime<Utc>,
        prefix: &str,
        good: &dyn Fn(&str, &str) -> bool,
    ) {
        let good_build = containers.iter().all(|c| {
            image_tokens(&c.image, prefix)
                .first()
                .is_none_or(|t| good(t.repo, t.tag))
        });
        let kind = self.workloads[i].kind;
        let outcome = self.draw_outcome(kind, good_build, at);
        let w = &mut self.workloads[i];
        w.containers = containers;
        w.generation += 1;
        w.started = at;
        w.outcome = outcome;
    }

    fn draw_outcome(&mut self, kind: WorkloadKind, good: bool, at: DateTime<Utc>) -> Outcome {
        let minutes = |rng: &mut Rng, range: std::ops::Range<i64>| {
            Outcome::Completes(at + TimeDelta::minutes(rng.i64(range)))
        };
        if self.healthy {
            return minutes(&mut self.rng, 2..9);
        }
        let roll = self.rng.u32(0..100);
        let fails = if good { roll < 6 } else { roll < 40 };
        if !fails {
            return if self.rng.u32(0..10) == 0 {
                // Slow: pending pods waiting for capacity.
                minutes(&mut self.rng, 30..120)
            } else {
                minutes(&mut self.rng, 2..15)
            };
        }
        if kind == WorkloadKind::Deployment {
            // The default progressDeadlineSeconds.
            Outcome::Stuck(at + TimeDelta::minutes(10))
        } else {
            Outcome::Hangs
        }
    }

    /// The liveness phase: the API answers, nothing refuses, drained nodes are back,
    /// and every rollout (the current ones too: a person fixed what held them)
    /// completes within minutes.
    pub fn heal(&mut self, now: DateTime<Utc>) {
        self.healthy = true;
        self.reachable = true;
        self.reachable_again = None;
        self.refusal = None;
        for w in &mut self.workloads {
            w.disrupted_until = None;
            let late = match w.outcome {
                Outcome::Completes(at) => at > now + TimeDelta::minutes(5),
                Outcome::Stuck(_) | Outcome::Hangs => true,
            };
            if late {
                w.outcome = Outcome::Completes(now + TimeDelta::minutes(5));
            }
        }
    }

    /// A refusal of writes to workload `pick` (modulo their number) for `minutes`.
    pub fn refuse(&mut self, pick: u32, retryable: bool, minutes: i64, now: DateTime<Utc>) {
        let workload = pick as usize % self.workloads.len();
        self.refusal = Some(Refusal {
            workload,
            retryable,
            until: now + TimeDelta::minutes(minutes),
        });
    }

    /// Workload `pick` (modulo their number) has an unready replica for `minutes`.
    pub fn disrupt(&mut self, pick: u32, minutes: i64, now: DateTime<Utc>) {
        let i = pick as usize % self.workloads.len();
        self.workloads[i].disrupted_until = Some(now + TimeDelta::minutes(minutes));
    }

    fn refused(&self, i: usize, now: DateTime<Utc>) -> Option<bool> {
        self.refusal
            .filter(|r| r.workload == i && now < r.until)
            .map(|r| r.retryable)
    }
}

/// autobump's view of the cluster.
pub struct SimCluster(pub Shared);

fn injected(during: String, retryable: bool) -> ClusterError {
    if retryable {
        ClusterError::Unreachable {
            during,
            detail: "injected: connection refused".into(),
        }
    } else {
        ClusterError::Forbidden {
            during,
            status: 403,
            message: "injected: the service account may not do this".into(),
        }
    }
}

fn unreachable(during: String) -> ClusterError {
    ClusterError::Unreachable {
        during,
        detail: "dial tcp 10.0.0.1:443: connect: connection refused".into(),
    }
}

fn describe(specs: &[WorkloadSpec]) -> String {
    let kinds: Vec<&str> = specs
        .iter()
        .map(|s| crate::scenario::kind_name(s.kind))
        .collect();
    format!("list {} in {NAMESPACE}", kinds.join(", "))
}

impl SimCluster {
    fn observe_now(
        &self,
        specs: &[WorkloadSpec],
        release: &Release,
    ) -> Result<RolloutObservation, ClusterError> {
        let mut w = lock(&self.0);
        let result = Self::observe_in(&mut w, specs, release);
        if result.is_err()
            && let Some(rc) = w.rc.as_mut()
        {
            rc.observe_failed = true;
        }
        result
    }

    fn observe_in(
        w: &mut World,
        specs: &[WorkloadSpec],
        release: &Release,
    ) -> Result<RolloutObservation, ClusterError> {
        if let Admit::Fail { retryable } = w.admit("cluster.observe", false) {
            return Err(injected(describe(specs), retryable));
        }
        let now = w.now;
        let cluster = w.cluster.as_ref().expect("a scenario with a cluster");
        if !cluster.reachable {
            return Err(unreachable(describe(specs)));
        }
        let images = ReleaseImages::new(release);
        let observed = specs
            .iter()
            .flat_map(|spec| cluster.selected(spec))
            .map(|i| cluster.workloads[i].observe(now, &images))
            .collect();
        Ok(aggregate(specs, release, observed))
    }

    fn patch_now(
        &self,
        specs: &[WorkloadSpec],
        release: &Release,
    ) -> Result<Vec<Patched>, ClusterError> {
        Self::patch_in(&mut lock(&self.0), specs, release)
    }

    fn patch_in(
        w: &mut World,
        specs: &[WorkloadSpec],
        release: &Release,
    ) -> Result<Vec<Patched>, ClusterError> {
        let after = match w.admit("cluster.patch_images", true) {
            Admit::Fail { retryable } => return Err(injected(describe(specs), retryable)),
            Admit::Go(after) => after,
        };
        let now = w.now;
        let prefix = w.scenario.prefix.clone();
        let cluster = w.cluster.as_ref().expect("a scenario with a cluster");
        if !cluster.reachable {
            return Err(unreachable(describe(specs)));
        }
        let mut chosen: Vec<usize> = specs.iter().flat_map(|s| cluster.selected(s)).collect();
        chosen.dedup();
        let images = ReleaseImages::new(release);
        let mut out = Vec::new();
        let mut first_error = None;
        for i in chosen {
            let cluster = w.cluster.as_ref().expect("checked");
            let workload = &cluster.workloads[i];
            let id = workload.id();
            if let Some(retryable) = cluster.refused(i, now) {
                first_error.get_or_insert(if retryable {
                    ClusterError::ConflictRetriesExhausted {
                        workload: id.to_string(),
                        attempts: 5,
                    }
                } else {
                    ClusterError::Forbidden {
                        during: format!("replace {id}"),
                        status: 403,
                        message: "admission webhook \"freeze.sim\" denied the request".into(),
                    }
                });
                continue;
            }
            let mut spec = workload.pod_spec();
            let changed = retarget_pod_spec(&id, &mut spec, &images);
            if changed.is_empty() {
                continue;
            }
            let next = containers(Some(&spec));
            crate::invariants::on_cluster_patch(w, i, &next);
            let registry = &w.registry;
            let good = |r: &str, t: &str| !registry.is_bad(r, t);
            let cluster = w.cluster.as_mut().expect("checked");
            cluster.set_spec(i, next.clone(), now, &prefix, &good);
            cluster.workloads[i].patched_to = Some(next);
            w.seq += 1;
            w.note(format!("  autobump patched {id}"));
            out.extend(changed);
        }
        w.update_alerts();
        w.finish(after).map_err(|()| ClusterError::Timeout {
            during: describe(specs),
            detail: "injected: the answer was lost".into(),
        })?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

impl Workloads for SimCluster {
    fn observe(
        &self,
        specs: &[WorkloadSpec],
        release: &Release,
    ) -> impl Future<Output = Result<RolloutObservation, ClusterError>> + Send {
        ready(self.observe_now(specs, release))
    }

    fn patch_images(
        &self,
        specs: &[WorkloadSpec],
        release: &Release,
    ) -> impl Future<Output = Result<Vec<Patched>, ClusterError>> + Send {
        ready(self.patch_now(specs, release))
    }
}
