//! Watching the deployed release (pure): what the base branch carries, its bake, its
//! promotion, and when it goes back to the last known-good.
//!
//! The executor observes, this module decides, in two steps because the second
//! observation depends on the first decision:
//! 1. [`track`]: from the references on the base branch and the state, the deployed
//!    release (recorded when it changed) and the rollback request still in force;
//! 2. the executor observes that release's rollout in the cluster (if the policy names
//!    workloads), then [`assess`] decides: wait while it deploys or bakes, promote it,
//!    or roll back (hold, record the bad versions, deliver the known-good versions,
//!    and optionally patch the cluster).
//!
//! Both return [`StateChange`]s for the executor to apply; nothing here writes.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};

use super::change::{BadRolloutHold, StateChange};
use super::gate::{AlertState, GateReading, GateVerdict};
use super::merge::{DiffVerdict, FileChange, verify_image_moves};
use super::plan::Effect;
use super::reference::ImageRef;
use super::rewrite::{ImageSelector, SeriesRule, Target};
use super::rollout::{self, BakeProgress, RolloutDecision, RolloutInputs, RolloutState};
use super::select::covers;
use crate::policy::v1alpha1::{
    AutobumpSpec, Hold, ImageVersion, Intent, IntentKind, Reason, Release, RollbackRequest,
};

/// The canonical repository of `image` (as bad versions are recorded).
#[must_use]
pub fn canonical(image: &str) -> String {
    ImageRef::parse(image).map_or_else(|| image.to_owned(), |r| r.canonical_repository())
}

/// The versions of the policy's images the base branch (at `head`) carries, as a
/// release counted from `now`; `None` when it carries none of them.
#[must_use]
pub fn deployed_release(
    spec: &AutobumpSpec,
    references: &[ImageRef],
    head: &str,
    now: DateTime<Utc>,
) -> Option<Release> {
    let mut images: Vec<ImageVersion> = references
        .iter()
        .filter_map(|r| {
            let tag = r.tag.clone()?;
            spec.images
                .iter()
                .find(|i| covers(i, r))
                .and_then(|i| super::tags::series(&i.tags, &tag))?;
            Some(ImageVersion {
                image: r.repository.clone(),
                tag,
                digest: r.digest.clone(),
            })
        })
        .collect();
    images.sort_by(|a, b| (&a.image, &a.tag).cmp(&(&b.image, &b.tag)));
    images.dedup_by(|a, b| a.image == b.image && a.tag == b.tag);
    if images.is_empty() {
        return None;
    }
    let mut tags: Vec<&str> = images.iter().map(|i| i.tag.as_str()).collect();
    tags.sort_unstable();
    tags.dedup();
    let summary = match tags.as_slice() {
        [one] => (*one).to_owned(),
        _ => format!("{} images", images.len()),
    };
    Some(Release {
        summary,
        images,
        since: now,
        commit: Some(head.to_owned()),
    })
}

/// What the state says about the deployed release (the parts [`track`] and
/// [`assess`] read).
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    /// The release recorded as deployed.
    pub current: Option<&'a Release>,
    /// The last known-good release.
    pub last_known_good: Option<&'a Release>,
    /// The bake so far.
    pub bake: Option<&'a BakeProgress>,
    /// The bad versions (canonical image, tag).
    pub bad: &'a BTreeSet<(String, String)>,
    /// A rollback a person asked for.
    pub rollback_request: Option<&'a RollbackRequest>,
    /// The images of a cluster-patch intent in force.
    pub patch_intent: Option<&'a [ImageVersion]>,
}

/// What [`track`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked {
    /// The state changes to apply before anything else.
    pub changes: Vec<StateChange>,
    /// The deployed release (recorded now, or as recorded before).
    pub current: Release,
    /// The rollback request still in force after the changes.
    pub request: Option<RollbackRequest>,
}

/// The deployed release: a new one on the branch is recorded (its bake starts over),
/// and a rollback request there is nothing to do for is dropped. `None` when the
/// branch carries none of the policy's images.
#[must_use]
pub fn track(
    spec: &AutobumpSpec,
    deployed: Option<Release>,
    recorded: &Recorded<'_>,
) -> Option<Tracked> {
    let deployed = deployed?;
    let mut changes = Vec::new();
    let current = match recorded.current {
        Some(c) if rollout::same_versions(c, &deployed) => c.clone(),
        _ => {
            changes.push(StateChange::Deployed {
                release: deployed.clone(),
                branch: spec.source.branch.to_string(),
            });
            deployed
        }
    };
    let mut request = recorded.rollback_request.cloned();
    if request.is_some() && requested_rollback(recorded, &current).is_none() {
        let why = if recorded.last_known_good.is_some() {
            format!(
                "nothing to roll back: {} on {} is the last known-good",
                current.summary, spec.source.branch
            )
        } else {
            "nothing to roll back to: no version is known-good yet".to_owned()
        };
        changes.push(StateChange::DropRollbackRequest { why });
        request = None;
    }
    Some(Tracked {
        changes,
        current,
        request,
    })
}

/// The rollback request in force for the deployed `current` release: one was made, and
/// there is a last known-good version that `current` is not.
#[must_use]
pub fn requested_rollback<'a>(
    recorded: &Recorded<'a>,
    current: &Release,
) -> Option<&'a RollbackRequest> {
    let good = recorded.last_known_good?;
    recorded
        .rollback_request
        .filter(|_| !rollout::same_versions(good, current))
}

/// How the deployed release's rollout was observed.
#[derive(Debug, Clone, PartialEq)]
pub enum RolloutSeen {
    /// Its state, and a line on the workloads (none without `rollout.workloads`).
    Observed(RolloutState, Option<String>),
    /// The cluster could not be read (why).
    Unobservable(String),
}

/// Everything [`assess`] reads.
#[derive(Debug, Clone)]
pub struct Watch<'a> {
    /// The policy.
    pub spec: &'a AutobumpSpec,
    /// The deployed release ([`Tracked::current`]).
    pub current: &'a Release,
    /// The state (its `rollback_request` as [`Tracked::request`] left it).
    pub recorded: Recorded<'a>,
    /// The rollout.
    pub rollout: RolloutSeen,
    /// The gate.
    pub reading: &'a GateReading,
    /// Whether autobump can reach the cluster (for `rollback.patchCluster`).
    pub cluster_access: bool,
}

/// A rollback to deliver: from the deployed `bad` release to `good`, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackTo {
    /// The release rolled back from.
    pub bad: Release,
    /// The release rolled back to.
    pub good: Release,
    /// Why.
    pub reason: String,
}

/// A break-glass patch of the workloads to `good` (`rollback.patchCluster`).
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// The release to put in the workloads.
    pub good: Release,
    /// Whether a patch intent for it is in force from an earlier reconcile (else the
    /// executor writes [`Patch::intent`] first).
    pub earlier: bool,
}

/// What [`assess`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// State changes, applied first (in one update).
    pub changes: Vec<StateChange>,
    /// What to report: `Promote`, or `Rollback` (and why the cluster is not
    /// patched). A wait is not among them: it is the [`Block`].
    pub effects: Vec<Effect>,
    /// Why nothing new goes out now (a deploy, a bake or a rollback under way).
    pub block: Option<Block>,
    /// The rollback to deliver.
    pub rollback: Option<RollbackTo>,
    /// The cluster patch to make (after the changes, before the rollback).
    pub patch: Option<Patch>,
}

/// One rollout at a time: why the next bump waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// The deployed release deploys or bakes (the `Waiting` line, moved out of the
    /// assessment's effects so it is said once).
    Rollout(String),
    /// A rollback is under way (reported by its `Rollback` effect).
    RollingBack(String),
}

impl Block {
    /// The line people see.
    #[must_use]
    pub fn text(&self) -> String {
        match self {
            Self::Rollout(why) => why.clone(),
            Self::RollingBack(reason) => format!("rolling back: {reason}"),
        }
    }
}

impl Assessment {
    fn report(effects: Vec<Effect>) -> Self {
        Self {
            changes: Vec::new(),
            effects,
            block: None,
            rollback: None,
            patch: None,
        }
    }
}

/// Whether the decision is a rollback whatever the rollout's state: the deployed
/// version is recorded as bad (and there is a known-good), a rollback was requested,
/// or the policy's gate is Firing. When the rollout cannot be observed, only then is
/// a decision made (with the rollout taken as Progressing, so nothing is promoted).
#[must_use]
pub fn rollback_needs_no_rollout(w: &Watch<'_>) -> bool {
    (recorded_bad(w.recorded.bad, w.current) && w.recorded.last_known_good.is_some())
        || requested_rollback(&w.recorded, w.current).is_some()
        || (w.spec.gate.is_some() && matches!(w.reading.verdict, GateVerdict::Firing(_)))
}

/// Whether a version of `current` is recorded as bad.
#[must_use]
pub fn recorded_bad(bad: &BTreeSet<(String, String)>, current: &Release) -> bool {
    current
        .images
        .iter()
        .any(|i| bad.contains(&(canonical(&i.image), i.tag.clone())))
}

/// The rollout decision for the deployed release: a requested rollback, a version
/// already recorded as bad (back to the known-good at once), else
/// [`rollout::decide`] (a policy without a gate bakes for zero time).
fn decide(w: &Watch<'_>, state: RolloutState, now: DateTime<Utc>) -> RolloutDecision {
    let (bake, gated) = w
        .spec
        .gate
        .as_ref()
        .map_or((TimeDelta::zero(), false), |g| (g.bake.delta(), true));
    if let Some(request) = requested_rollback(&w.recorded, w.current) {
        RolloutDecision::Rollback {
            reason: format!("rollback requested by {}: {}", request.by, request.reason),
        }
    } else if recorded_bad(w.recorded.bad, w.current) && w.recorded.last_known_good.is_some() {
        RolloutDecision::Rollback {
            reason: format!("{} was rolled back before", w.current.summary),
        }
    } else {
        rollout::decide(&RolloutInputs {
            deployed: Some((w.current, w.current.since)),
            rollout: state,
            last_known_good: w.recorded.last_known_good,
            progress: w.recorded.bake,
            bake,
            deploy_delay: deploy_delay(w.spec),
            gate: if gated {
                &w.reading.verdict
            } else {
                &GateVerdict::Clear
            },
            now,
        })
    }
}

fn deploy_delay(spec: &AutobumpSpec) -> TimeDelta {
    spec.rollout
        .as_ref()
        .map_or(TimeDelta::zero(), |r| r.deploy_delay.delta())
}

/// Decides about the deployed release; `None` when the rollout could not be observed
/// and the decision needs it (the reconcile then fails and is retried).
///
/// A rollback request (`autobump rollback`) decides a rollback whatever the gate, the
/// rollout, the hold or the schedule say, when the deployed version is not the last
/// known-good. A deployed version already recorded as bad is rolled back again until
/// the known-good version is on the branch, so a crash between the hold and the
/// delivery converges.
#[must_use]
pub fn assess(w: &Watch<'_>, now: DateTime<Utc>) -> Option<Assessment> {
    let (state, detail) = match &w.rollout {
        RolloutSeen::Observed(state, detail) => (*state, detail.clone()),
        // A cluster that cannot be observed must not delay a rollback: alerts firing
        // (or a version recorded as bad, or a rollback request) decide it whatever the
        // rollout's state, and Progressing lets nothing be promoted.
        RolloutSeen::Unobservable(e) if rollback_needs_no_rollout(w) => (
            RolloutState::Progressing,
            Some(format!("the rollout cannot be observed: {e}")),
        ),
        RolloutSeen::Unobservable(_) => return None,
    };
    let current = w.current;
    Some(match decide(w, state, now) {
        RolloutDecision::Idle => Assessment::report(Vec::new()),
        RolloutDecision::Deploying => {
            let v = &current.summary;
            let why = match (state, detail) {
                // Rolled out (or, standalone, on the branch), within `deployDelay`.
                (RolloutState::Complete, detail) => format!(
                    "{v} {}; its bake starts after rollout.deployDelay, at {}",
                    detail.map_or_else(
                        || format!("is on {}", w.spec.source.branch),
                        |d| format!("rolled out ({d})")
                    ),
                    (current.since + deploy_delay(w.spec)).format("%Y-%m-%dT%H:%M:%SZ")
                ),
                (_, Some(detail)) => format!("{v} is rolling out ({detail})"),
                (_, None) => format!("{v} is deploying"),
            };
            waiting(format!("{why}; the next bump waits until it is known-good"))
        }
        RolloutDecision::Baking {
            progress,
            paused,
            remaining,
        } => {
            let mut a = waiting(match paused {
                Some(why) => format!("bake of {} paused, gate unknown: {why}", current.summary),
                None => format!(
                    "{} is baking ({} left); the next bump waits until it is known-good",
                    current.summary,
                    crate::policy::values::Duration::from_secs(remaining.num_seconds())
                ),
            });
            if w.recorded.bake != Some(&progress) {
                a.changes.push(StateChange::Bake(progress));
            }
            a
        }
        RolloutDecision::Promote => Assessment {
            changes: vec![StateChange::Promote(
                current.clone(),
                super::promotion::Conditions::of(w.spec),
            )],
            ..Assessment::report(vec![Effect::Promote])
        },
        RolloutDecision::Rollback { reason } => rollback(w, reason),
        RolloutDecision::HoldWithoutRollback { reason } => {
            let hold = automatic(w.reading, &reason);
            let mut a = waiting(format!("held without a known-good version: {reason}"));
            a.changes.push(StateChange::HoldForBadRollout {
                hold,
                bad: Vec::new(),
            });
            a
        }
    })
}

/// Waits with `why`, which blocks the next bump (the planner reports it, after the
/// commands that still apply, so it is said once).
fn waiting(why: String) -> Assessment {
    Assessment {
        block: Some(Block::Rollout(why)),
        ..Assessment::report(Vec::new())
    }
}

/// The automatic hold after what the gate read.
fn automatic(reading: &GateReading, reason: &str) -> BadRolloutHold {
    BadRolloutHold::Automatic {
        by: match &reading.verdict {
            GateVerdict::Firing(alerts) => format!("alert:{}", alerts.join(",")),
            _ => "autobump".to_owned(),
        },
        reason: hold_reason(reason, reading),
        summary: reason.to_owned(),
    }
}

fn rollback(w: &Watch<'_>, reason: String) -> Assessment {
    let current = w.current;
    let good = w
        .recorded
        .last_known_good
        .cloned()
        .unwrap_or_else(|| current.clone());
    // The request that decided this rollback, if one did: its hold is the requester's,
    // and the same update removes it. With alerts firing the hold is the automatic one
    // all the same (only a person with write permission may lift it), and the request
    // is fulfilled by this rollback.
    let firing = w.spec.gate.is_some() && matches!(w.reading.verdict, GateVerdict::Firing(_));
    let hold = match requested_rollback(&w.recorded, current) {
        Some(request) if !firing => BadRolloutHold::Requested {
            request: request.clone(),
            reason: format!(
                "rollback from {} requested: {}",
                current.summary, request.reason
            ),
        },
        _ => automatic(w.reading, &reason),
    };
    let bad = current
        .images
        .iter()
        .filter(|i| !good.images.contains(i))
        .map(|i| (canonical(&i.image), i.tag.clone()))
        .collect();
    let mut effects = vec![Effect::Rollback(reason.clone())];
    let mut patch = None;
    if w.spec.rollback.patch_cluster {
        if workload_specs(w.spec).is_empty() || !w.cluster_access {
            effects.push(Effect::Waiting(
                "rollback.patchCluster is set but there are no workloads or no cluster access"
                    .into(),
            ));
        } else {
            patch = Some(Patch {
                earlier: w.recorded.patch_intent.is_some_and(|i| i == good.images),
                good: good.clone(),
            });
        }
    }
    Assessment {
        changes: vec![StateChange::HoldForBadRollout { hold, bad }],
        effects,
        block: Some(Block::RollingBack(reason.clone())),
        rollback: Some(RollbackTo {
            bad: current.clone(),
            good,
            reason,
        }),
        patch,
    }
}

/// `rollout.workloads` (empty without a `rollout` section).
#[must_use]
pub fn workload_specs(spec: &AutobumpSpec) -> &[crate::policy::v1alpha1::WorkloadSpec] {
    spec.rollout
        .as_ref()
        .map_or(&[][..], |r| r.workloads.as_slice())
}

impl Patch {
    /// The intent written before patching (once per rollback), so a crash between the
    /// patch and its record settles at the next reconcile: the workloads then need no
    /// patch, and the record is due.
    #[must_use]
    pub fn intent(&self, now: DateTime<Utc>) -> Option<StateChange> {
        (!self.earlier).then(|| {
            StateChange::Intend(Intent {
                images: self.good.images.clone(),
                ..Intent::new(
                    IntentKind::Patch,
                    Some(Reason::ClusterPatched),
                    format!(
                        "the workloads run {}: patched before a restart or an error",
                        self.good.summary
                    ),
                    now,
                )
            })
        })
    }

    /// What the patch's outcome writes: `lines` says what changed, one per container
    /// (none: the workloads were right already); `Err` when it failed (recorded, and
    /// the rollback in git goes ahead).
    #[must_use]
    pub fn settled(&self, outcome: Result<&[String], &str>) -> StateChange {
        match outcome {
            Ok([]) if self.earlier => StateChange::Fulfil(IntentKind::Patch, None),
            Ok([]) => StateChange::Abandon(IntentKind::Patch),
            Ok(lines) => StateChange::Fulfil(IntentKind::Patch, Some(lines.join("; "))),
            Err(e) => StateChange::Record {
                reason: Reason::ClusterPatchFailed,
                message: format!(
                    "patching the workloads to {} failed: {e}",
                    self.good.summary
                ),
            },
        }
    }
}

/// The reason of an automatic hold: the decision's reason, then one line per firing
/// alert (at most five) with its labels, summary, runbook and where to see it, so the
/// person paged has the evidence without searching.
#[must_use]
pub fn hold_reason(reason: &str, reading: &GateReading) -> String {
    const SHOWN: usize = 5;
    let mut text = reason.to_owned();
    let firing: Vec<&super::gate::Alert> = reading
        .alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .collect();
    // Writing into a String cannot fail.
    for alert in firing.iter().take(SHOWN) {
        let labels: Vec<String> = alert
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(text, "\n- {}", alert.name);
        if !labels.is_empty() {
            let _ = write!(text, " {{{}}}", labels.join(", "));
        }
        if let Some(v) = ["summary", "description"]
            .iter()
            .find_map(|k| alert.annotations.get(*k))
        {
            let _ = write!(text, ": {}", v.trim());
        }
        if let Some(runbook) = alert.annotations.get("runbook_url") {
            let _ = write!(text, "; runbook: {runbook}");
        }
        if let Some(url) = alert.source_url.as_ref().or(alert.generator_url.as_ref()) {
            let _ = write!(text, "; see {url}");
        }
    }
    if firing.len() > SHOWN {
        let _ = write!(text, "\n- and {} more", firing.len() - SHOWN);
    }
    text
}

/// The comment on the open bump PR when a bad rollout placed `hold` just now.
#[must_use]
pub fn hold_comment(policy: &str, hold: &Hold) -> String {
    if hold.automatic {
        format!(
            "autobump held this policy automatically: nothing merges until a person \
             with write permission comments `/unhold`.\n\n{}",
            hold.reason
        )
    } else {
        format!(
            "autobump rolls this policy back, as {} asked, who holds it now: nothing \
             merges until the hold is lifted (`/unhold`, or `autobump unhold {policy}`).\n\n{}",
            hold.by, hold.reason
        )
    }
}

/// Targets that put the known-good versions back for every image that moved.
#[must_use]
pub fn rollback_targets(spec: &AutobumpSpec, rb: &RollbackTo) -> Vec<Target> {
    rb.good
        .images
        .iter()
        .filter(|g| !rb.bad.images.contains(g))
        .filter_map(|g| {
            let r = ImageRef::parse(&format!("{}:{}", g.image, g.tag))?;
            let image = spec.images.iter().find(|i| covers(i, &r))?;
            Some(Target {
                image: ImageSelector::Repository(g.image.clone()),
                tag: g.tag.clone(),
                digest: g.digest.clone(),
                rule: SeriesRule::Policy(image.tags.clone()),
            })
        })
        .collect()
}

/// Whether the rollback pull request's branch can stay as it is although the base
/// branch moved since it was pushed (so a rollback made on the base now would be a
/// new commit): its changes (`files`, against its merge base) only move the
/// policy's image references, each to the version rolled back to, and they cover
/// every file a rollback made on the base now would change (`needed`).
///
/// Pushing it again restarts GitHub's mergeability computation and the required
/// checks; on a base branch that moves between every two reconciles a rollback that
/// is re-pushed each time would never merge. A branch that conflicts with the moved
/// base is GitHub's to say (`mergeable: false`); then it is pushed again.
#[must_use]
pub fn rollback_branch_serves(
    spec: &AutobumpSpec,
    rb: &RollbackTo,
    files: &[FileChange<'_>],
    needed: &[&str],
) -> bool {
    if needed.iter().any(|n| !files.iter().any(|f| f.path == *n)) {
        return false;
    }
    let known_good = |r: &ImageRef| {
        let image = canonical(&r.canonical_repository());
        let good = rb.good.images.iter().any(|g| {
            canonical(&g.image) == image
                && r.tag.as_deref() == Some(g.tag.as_str())
                && (r.digest.is_none() || r.digest == g.digest)
        });
        (!good).then(|| "not the version rolled back to".to_owned())
    };
    verify_image_moves(spec, files, &known_good) == DiffVerdict::Matches
}

/// Whether a push intent's versions are on the base branch (`deployed`): then its
/// record is due. (Until then it stays: the push is retried by the decision that made
/// it, which writes its intent again.)
#[must_use]
pub fn push_landed(intent: &Intent, deployed: Option<&Release>) -> bool {
    deployed.is_some_and(|deployed| {
        intent.images.iter().all(|want| {
            deployed
                .images
                .iter()
                .any(|d| d.tag == want.tag && canonical(&d.image) == canonical(&want.image))
        })
    })
}

/// The intent of a push to `source.branch` that records `reason` once the branch
/// carries `images`.
#[must_use]
pub fn push_intent(
    reason: Reason,
    message: String,
    images: &[ImageVersion],
    now: DateTime<Utc>,
) -> Intent {
    Intent {
        images: images.to_vec(),
        ..Intent::new(IntentKind::Push, Some(reason), message, now)
    }
}

/// The versions `rows` move to (tags; digests are left out).
#[must_use]
pub fn versions_of(rows: &[super::pr::Row]) -> Vec<ImageVersion> {
    rows.iter()
        .map(|r| ImageVersion {
            image: r.image.clone(),
            tag: r.to.split('@').next().unwrap_or(&r.to).to_owned(),
            digest: None,
        })
        .collect()
}

/// What a direct push of a bump moving `rows` writes before pushing (the bump's time
/// for `minInterval`, and the intent whose `Pushed` record is written once the branch
/// carries the new versions), and the line that describes it ("to BRANCH: image a ->
/// b, …").
#[must_use]
pub fn direct_push(
    spec: &AutobumpSpec,
    rows: &[super::pr::Row],
    promoted_from: Option<&str>,
    now: DateTime<Utc>,
) -> (Vec<StateChange>, String) {
    let moves: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {} -> {}", r.image, r.from, r.to))
        .collect();
    let images = versions_of(rows);
    let promoted = promoted_from
        .map(|f| format!(", promoted from {f}"))
        .unwrap_or_default();
    let what = format!("to {}: {}{promoted}", spec.source.branch, moves.join(", "));
    let intent = push_intent(Reason::Pushed, format!("pushed {what}"), &images, now);
    (
        vec![StateChange::LastBump, StateChange::Intend(intent)],
        what,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gate::Alert;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// A gated policy (15 m bake, 5 m deploy delay) for Prow's hook image, as in the
    /// rollback examples of the README; `extra` adds YAML to the spec.
    fn spec(extra: &str) -> AutobumpSpec {
        let text = format!(
            "images: [{{prefix: gcr.io/k8s-prow/, tags: {{semver: {{}}}}}}]\nsource: {{repo: https://github.com/acme/infra.git}}\ngate: {{prometheus: 'http://127.0.0.1:9090', alerts: '{{severity=\"page\"}}', bake: 15m}}\nrollout: {{deployDelay: 5m}}\n{extra}"
        );
        let docs = crate::policy::yaml::parse_documents(&text).unwrap();
        crate::policy::yaml::from_node(&docs[0], &crate::policy::yaml::Path::root()).unwrap()
    }

    fn release(tag: &str, since: &str) -> Release {
        Release {
            summary: tag.into(),
            images: vec![ImageVersion {
                image: "gcr.io/k8s-prow/hook".into(),
                tag: tag.into(),
                digest: None,
            }],
            since: at(since),
            commit: None,
        }
    }

    fn request() -> RollbackRequest {
        RollbackRequest {
            by: "cli:bob".into(),
            since: at("2026-11-23T10:05:00Z"),
            reason: "p99 doubled".into(),
            via: Some("cli".into()),
        }
    }

    const NO_BAD: &BTreeSet<(String, String)> = &BTreeSet::new();

    fn recorded<'a>(
        current: Option<&'a Release>,
        good: Option<&'a Release>,
        request: Option<&'a RollbackRequest>,
    ) -> Recorded<'a> {
        Recorded {
            current,
            last_known_good: good,
            bake: None,
            bad: NO_BAD,
            rollback_request: request,
            patch_intent: None,
        }
    }

    /// A rollback branch made on an older base may stay only while it is exactly the
    /// rollback: its changes move only the policy's images, each to the version
    /// rolled back to, in every file that still needs it.
    #[test]
    fn a_rollback_branch_stays_while_it_moves_exactly_to_known_good() {
        let s = spec("");
        let rb = RollbackTo {
            bad: release("v1.3.0", "2026-11-23T10:00:00Z"),
            good: release("v1.2.0", "2026-11-22T10:00:00Z"),
            reason: "alerts fired".into(),
        };
        // A Deployment manifest as Prow's deploy/ keeps them (kubernetes/test-infra
        // config/prow/cluster/hook_deployment.yaml, shortened).
        let manifest = |tag: &str, replicas: u32| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: hook}}\nspec:\n  replicas: {replicas}\n  template:\n    spec:\n      containers:\n        - name: hook\n          image: gcr.io/k8s-prow/hook:{tag}\n"
            )
        };
        let base = manifest("v1.3.0", 4);
        let cases: [(&str, String, &[&str], bool); 5] = [
            (
                "exactly the rollback",
                manifest("v1.2.0", 4),
                &["config/hook.yaml"],
                true,
            ),
            (
                "another version",
                manifest("v1.1.0", 4),
                &["config/hook.yaml"],
                false,
            ),
            (
                "also other lines",
                manifest("v1.2.0", 2),
                &["config/hook.yaml"],
                false,
            ),
            (
                "a file it misses",
                manifest("v1.2.0", 4),
                &["config/hook.yaml", "config/deck.yaml"],
                false,
            ),
            (
                "no change at all",
                base.clone(),
                &["config/hook.yaml"],
                false,
            ),
        ];
        for (what, head, needed, serves) in cases {
            // What a diff lists: only files whose text differs.
            let files: Vec<FileChange<'_>> = (head != base)
                .then(|| FileChange {
                    path: "config/hook.yaml",
                    old: Some(&base),
                    new: Some(&head),
                })
                .into_iter()
                .collect();
            assert_eq!(
                rollback_branch_serves(&s, &rb, &files, needed),
                serves,
                "{what}"
            );
        }
    }

    #[test]
    fn the_deployed_release_is_what_the_branch_carries_in_the_policys_series() {
        let s = spec("");
        let refs: Vec<ImageRef> = [
            "gcr.io/k8s-prow/hook:v1.2.0",
            "gcr.io/k8s-prow/deck:v1.2.0",
            // Another series (a floating tag) and another image: not the policy's.
            "gcr.io/k8s-prow/hook:latest",
            "docker.io/library/nginx:1.27.3",
        ]
        .iter()
        .map(|r| ImageRef::parse(r).unwrap())
        .collect();
        let now = at("2026-11-23T10:00:00Z");
        let d = deployed_release(&s, &refs, "abc", now).unwrap();
        assert_eq!(d.summary, "v1.2.0");
        assert_eq!(d.images.len(), 2);
        assert_eq!((d.since, d.commit.as_deref()), (now, Some("abc")));
        let two = [
            ImageRef::parse("gcr.io/k8s-prow/hook:v1.2.0").unwrap(),
            ImageRef::parse("gcr.io/k8s-prow/deck:v1.3.0").unwrap(),
        ];
        assert_eq!(
            deployed_release(&s, &two, "abc", now).unwrap().summary,
            "2 images"
        );
        assert!(deployed_release(&s, &refs[3..], "abc", now).is_none());
    }

    #[test]
    fn tracking_records_a_new_release_and_drops_a_request_there_is_nothing_to_do_for() {
        let s = spec("");
        let (v1, v2) = (
            release("v1", "2026-11-23T09:00:00Z"),
            release("v2", "2026-11-23T10:00:00Z"),
        );
        let r = request();
        // (recorded current, known-good, request, deployed) → (Deployed?, drop why, request left)
        #[allow(clippy::type_complexity)]
        let cases: [(
            Option<&Release>,
            Option<&Release>,
            Option<&RollbackRequest>,
            &Release,
            bool,
            Option<&str>,
            bool,
        ); 5] = [
            (Some(&v1), Some(&v1), None, &v1, false, None, false),
            (Some(&v1), Some(&v1), None, &v2, true, None, false),
            (None, None, None, &v1, true, None, false),
            (Some(&v2), Some(&v1), Some(&r), &v2, false, None, true),
            (
                Some(&v1),
                Some(&v1),
                Some(&r),
                &v1,
                false,
                Some("nothing to roll back: v1 on main is the last known-good"),
                false,
            ),
        ];
        for (current, good, req, deployed, recorded_new, dropped, left) in cases {
            let t = track(&s, Some(deployed.clone()), &recorded(current, good, req)).unwrap();
            assert_eq!(
                t.changes
                    .iter()
                    .any(|c| matches!(c, StateChange::Deployed { .. })),
                recorded_new,
                "{t:?}"
            );
            let why = t.changes.iter().find_map(|c| match c {
                StateChange::DropRollbackRequest { why } => Some(why.as_str()),
                _ => None,
            });
            assert_eq!(why, dropped);
            assert_eq!(t.request.is_some(), left);
            assert_eq!(t.current.summary, deployed.summary);
        }
        let none = track(&s, Some(v2.clone()), &recorded(Some(&v2), None, Some(&r))).unwrap();
        assert_eq!(
            none.changes,
            [StateChange::DropRollbackRequest {
                why: "nothing to roll back to: no version is known-good yet".into()
            }]
        );
        assert!(track(&s, None, &recorded(None, None, None)).is_none());
    }

    fn kinds(a: &Assessment) -> Vec<String> {
        let mut k: Vec<String> = a
            .changes
            .iter()
            .map(|c| match c {
                StateChange::Bake(_) => "Bake".to_owned(),
                StateChange::Promote(r, _) => format!("Promote({})", r.summary),
                StateChange::HoldForBadRollout { hold, bad } => format!(
                    "Hold({},{})",
                    match hold {
                        BadRolloutHold::Automatic { by, .. } => by.clone(),
                        BadRolloutHold::Requested { request, .. } => request.by.clone(),
                    },
                    bad.iter()
                        .map(|(_, t)| t.as_str())
                        .collect::<Vec<_>>()
                        .join("+")
                ),
                other => format!("{other:?}"),
            })
            .collect();
        k.extend(a.effects.iter().map(|e| e.kind().to_owned()));
        if let Some(b) = &a.block {
            k.push(format!("block: {}", b.text()));
        }
        k
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one table, a row per decision
    fn assessment_table() {
        let s = spec("");
        let v1 = release("v1", "2026-11-23T09:00:00Z");
        let v2 = release("v2", "2026-11-23T10:00:00Z");
        let clear = GateReading::of(GateVerdict::Clear);
        let firing = GateReading::from_alerts(vec![Alert::firing("HookDown")]);
        let unknown = GateReading::of(GateVerdict::Unknown("timeout".into()));
        let bad_v2: BTreeSet<(String, String)> =
            [("gcr.io/k8s-prow/hook".to_owned(), "v2".to_owned())].into();
        let baking = BakeProgress {
            version: "v2".into(),
            clear_since: Some(at("2026-11-23T10:05:00Z")),
            restarts: 0,
        };
        let r = request();
        let complete = RolloutSeen::Observed(RolloutState::Complete, None);
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Option<&BakeProgress>,
            &BTreeSet<_>,
            Option<&RollbackRequest>,
            &GateReading,
            &str,
            Vec<&str>,
        )> = vec![
            (
                "within the deploy delay",
                None,
                NO_BAD,
                None,
                &clear,
                "10:03",
                vec![
                    "block: v2 is on main; its bake starts after rollout.deployDelay, at 2026-11-23T10:05:00Z; the next bump waits until it is known-good",
                ],
            ),
            (
                "the bake starts",
                None,
                NO_BAD,
                None,
                &clear,
                "10:06",
                vec![
                    "Bake",
                    "block: v2 is baking (15m left); the next bump waits until it is known-good",
                ],
            ),
            (
                "the bake goes on, nothing new to store",
                Some(&baking),
                NO_BAD,
                None,
                &clear,
                "10:10",
                vec!["block: v2 is baking (10m left); the next bump waits until it is known-good"],
            ),
            (
                "clear for the whole bake",
                Some(&baking),
                NO_BAD,
                None,
                &clear,
                "10:21",
                vec!["Promote(v2)", "Promote"],
            ),
            (
                "an alert during the bake",
                Some(&baking),
                NO_BAD,
                None,
                &firing,
                "10:10",
                vec![
                    "Hold(alert:HookDown,v2)",
                    "Rollback",
                    "block: rolling back: alerts fired after v2 was deployed: HookDown",
                ],
            ),
            (
                "the gate unknown pauses the bake",
                Some(&baking),
                NO_BAD,
                None,
                &unknown,
                "10:10",
                vec!["Bake", "block: bake of v2 paused, gate unknown: timeout"],
            ),
            (
                "a version rolled back before goes back at once",
                None,
                &bad_v2,
                None,
                &clear,
                "10:03",
                vec![
                    "Hold(autobump,v2)",
                    "Rollback",
                    "block: rolling back: v2 was rolled back before",
                ],
            ),
            (
                "a request is the requester's hold",
                None,
                NO_BAD,
                Some(&r),
                &clear,
                "10:03",
                vec![
                    "Hold(cli:bob,v2)",
                    "Rollback",
                    "block: rolling back: rollback requested by cli:bob: p99 doubled",
                ],
            ),
            (
                "a request with alerts firing is held automatically",
                None,
                NO_BAD,
                Some(&r),
                &firing,
                "10:03",
                vec![
                    "Hold(alert:HookDown,v2)",
                    "Rollback",
                    "block: rolling back: rollback requested by cli:bob: p99 doubled",
                ],
            ),
        ];
        for (what, bake, bad, req, reading, time, want) in cases {
            let w = Watch {
                spec: &s,
                current: &v2,
                recorded: Recorded {
                    current: Some(&v2),
                    last_known_good: Some(&v1),
                    bake,
                    bad,
                    rollback_request: req,
                    patch_intent: None,
                },
                rollout: complete.clone(),
                reading,
                cluster_access: false,
            };
            let a = assess(&w, at(&format!("2026-11-23T{time}:00Z"))).unwrap();
            assert_eq!(kinds(&a), want, "{what}");
            assert_eq!(a.rollback.is_some(), want.contains(&"Rollback"), "{what}");
        }
    }

    #[test]
    fn without_a_known_good_version_a_bad_rollout_only_holds() {
        let s = spec("");
        let v2 = release("v2", "2026-11-23T10:00:00Z");
        let firing = GateReading::from_alerts(vec![Alert::firing("HookDown")]);
        let w = Watch {
            spec: &s,
            current: &v2,
            recorded: recorded(Some(&v2), None, None),
            rollout: RolloutSeen::Observed(RolloutState::Complete, None),
            reading: &firing,
            cluster_access: false,
        };
        let a = assess(&w, at("2026-11-23T10:10:00Z")).unwrap();
        assert_eq!(
            kinds(&a),
            [
                "Hold(alert:HookDown,)",
                "block: held without a known-good version: alerts fired after v2 was deployed: HookDown"
            ]
        );
        assert!(a.rollback.is_none());
    }

    #[test]
    fn an_unobservable_rollout_decides_only_a_rollback() {
        let s = spec("rollback: {patchCluster: true}\n");
        let (v1, v2) = (
            release("v1", "2026-11-23T09:00:00Z"),
            release("v2", "2026-11-23T10:00:00Z"),
        );
        let clear = GateReading::of(GateVerdict::Clear);
        let firing = GateReading::from_alerts(vec![Alert::firing("HookDown")]);
        let watch = |reading| Watch {
            spec: &s,
            current: &v2,
            recorded: recorded(Some(&v2), Some(&v1), None),
            rollout: RolloutSeen::Unobservable("connection refused".into()),
            reading,
            cluster_access: true,
        };
        let now = at("2026-11-23T10:10:00Z");
        assert!(assess(&watch(&clear), now).is_none(), "needs the rollout");
        let a = assess(&watch(&firing), now).expect("a rollback needs no rollout");
        assert_eq!(kinds(&a)[..2], ["Hold(alert:HookDown,v2)", "Rollback"]);
        // patchCluster without workloads in the policy: said, not attempted.
        assert!(a.patch.is_none());
        assert!(matches!(&a.effects[1], Effect::Waiting(w) if w.contains("no workloads")));
    }

    #[test]
    fn a_cluster_patch_is_intended_once_and_settled_by_its_outcome() {
        let good = release("v1", "2026-11-23T09:00:00Z");
        let now = at("2026-11-23T10:10:00Z");
        let fresh = Patch {
            good: good.clone(),
            earlier: false,
        };
        let again = Patch {
            good,
            earlier: true,
        };
        assert!(
            matches!(fresh.intent(now), Some(StateChange::Intend(i)) if i.kind == IntentKind::Patch && i.images.len() == 1)
        );
        assert!(again.intent(now).is_none());
        let lines = ["deploy/hook hook: v2 -> v1".to_owned()];
        for (patch, outcome, want) in [
            (&fresh, Ok(&[][..]), StateChange::Abandon(IntentKind::Patch)),
            (
                &again,
                Ok(&[][..]),
                StateChange::Fulfil(IntentKind::Patch, None),
            ),
            (
                &fresh,
                Ok(&lines[..]),
                StateChange::Fulfil(IntentKind::Patch, Some(lines[0].clone())),
            ),
            (
                &fresh,
                Err("forbidden"),
                StateChange::Record {
                    reason: Reason::ClusterPatchFailed,
                    message: "patching the workloads to v1 failed: forbidden".into(),
                },
            ),
        ] {
            assert_eq!(patch.settled(outcome), want);
        }
    }

    #[test]
    fn a_push_landed_once_the_branch_carries_every_version_it_pushed() {
        let intent = push_intent(
            Reason::Pushed,
            "pushed".into(),
            &release("v2", "2026-11-23T10:00:00Z").images,
            at("2026-11-23T10:00:00Z"),
        );
        assert!(push_landed(
            &intent,
            Some(&release("v2", "2026-11-23T10:01:00Z"))
        ));
        assert!(!push_landed(
            &intent,
            Some(&release("v1", "2026-11-23T10:01:00Z"))
        ));
        assert!(!push_landed(&intent, None));
    }

    #[test]
    fn the_hold_reason_carries_the_alerts_evidence() {
        let alert = Alert::firing("HookDown")
            .label("namespace", "prow")
            .annotation("summary", "hook returns 5xx ")
            .annotation("runbook_url", "https://runbooks.example/hook");
        let reading = GateReading::from_alerts(vec![alert]);
        assert_eq!(
            hold_reason("alerts fired after v2 was deployed: HookDown", &reading),
            "alerts fired after v2 was deployed: HookDown\n- HookDown {namespace=prow}: hook returns 5xx; runbook: https://runbooks.example/hook"
        );
        let many =
            GateReading::from_alerts((0..7).map(|i| Alert::firing(&format!("A{i}"))).collect());
        assert!(hold_reason("x", &many).ends_with("\n- and 2 more"));
    }
}
