//! The executor (I/O, no decisions): performs what the planner decided, in order,
//! and is the only writer of the store.
//!
//! Every effect is an ensure, so a crash between two effects is repaired by the next
//! reconcile. Where one effect is two writes in two places (a push and its record, a
//! merge and its record, a PR and its labels, a cluster patch and its record), an
//! intent is written first and fulfilled after; the next reconcile settles an intent
//! a crash left behind ([`super::reconcile`]).

use chrono::{DateTime, Utc};

use super::{Deps, ForgeAccess, ReconcileError, observe};
use crate::core::change::StateChange;
use crate::core::plan::{Effect, Mode};
use crate::core::watch::{self, Patch, RollbackTo};
use crate::forge::{Forge, ForgeError, MergeMethod, NewPullRequest, PullRequest, PullRequestEdit};
use crate::policy::Policy;
use crate::policy::v1alpha1::{Hold, ImageVersion, Intent, IntentKind, Reason};
use crate::policy::values::BranchName;
use crate::registry::Registry;
use crate::repo::{Delivery, PreparedBump, Repo};
use crate::store::{PolicyState, Store};

/// Performs one reconcile's decisions for one policy.
pub(super) struct Executor<'r, 'a, R, G, S, F> {
    pub policy: &'r Policy,
    pub deps: &'r Deps<'a, R, G, S, F>,
    pub now: DateTime<Utc>,
}

impl<R: Registry, G: Repo, S: Store, F: Forge> Executor<'_, '_, R, G, S, F> {
    /// Applies `changes` to the policy's state in one store update (the only place
    /// the store is written); returns the state after them, and the hold they placed.
    /// Nothing is written when there are none (`state` is returned as it is).
    pub fn write(
        &self,
        state: PolicyState,
        changes: &[StateChange],
    ) -> Result<(PolicyState, Option<Hold>), ReconcileError> {
        if changes.is_empty() {
            return Ok((state, None));
        }
        let mut placed = None;
        let state = self.deps.store.update(self.policy.name(), &mut |s| {
            placed = s.apply(changes, self.now);
        })?;
        Ok((state, placed))
    }

    fn change(&self, changes: &[StateChange]) -> Result<(), ReconcileError> {
        self.write(PolicyState::default(), changes).map(drop)
    }

    /// The one way anything is pushed: `before` is written first (the bump's time
    /// for `minInterval`, a push intent), then `prepared` is pushed, then `after`
    /// (given the new head, or "nothing new") records it.
    pub async fn push(
        &self,
        prepared: &PreparedBump,
        before: &[StateChange],
        after: Option<&(dyn Fn(&str) -> StateChange + Sync)>,
    ) -> Result<(), ReconcileError> {
        self.change(before)?;
        let pushed = self.deps.repo.push(prepared).await?;
        if let Some(after) = after {
            let head = pushed.head.as_deref().unwrap_or("nothing new");
            self.change(&[after(head)])?;
        }
        Ok(())
    }

    /// Merges PR `n` at `sha` and records it (`reason`: `Merged` or `RolledBack`,
    /// with `message` and the merge commit), with an intent written first, so a crash
    /// between the merge and its record is settled by the next reconcile. `false`
    /// when the forge refused because the head moved or the PR is not mergeable (the
    /// next reconcile reads it again).
    pub async fn merge(
        &self,
        f: &ForgeAccess<'_, F>,
        (n, sha, method): (u64, &str, MergeMethod),
        (reason, message): (Reason, String),
        images: Vec<ImageVersion>,
    ) -> Result<bool, ReconcileError> {
        self.change(&[StateChange::Intend(Intent {
            pull_request: Some(n),
            images,
            ..Intent::new(IntentKind::Merge, Some(reason), message.clone(), self.now)
        })])?;
        match f.forge.merge(&f.repo, n, method, sha).await {
            Ok(merged) => {
                let done = format!("{message} ({})", merged.sha);
                self.change(&[StateChange::Fulfil(IntentKind::Merge, Some(done))])?;
                Ok(true)
            }
            // The head moved after its checks were read: not merged, and the next
            // reconcile reads the new head's checks.
            Err(ForgeError::HeadMoved { .. } | ForgeError::NotMergeable { .. }) => {
                self.change(&[StateChange::Abandon(IntentKind::Merge)])?;
                Ok(false)
            }
            // Unknown whether it merged: the intent stays for the next reconcile.
            Err(e) => Err(e.into()),
        }
    }

    /// Settles a label intent (its `labels`) left by a crash between opening the bump
    /// PR and labelling it: the open bump PR gets the labels it lacks.
    pub async fn settle_labels(
        &self,
        f: &ForgeAccess<'_, F>,
        pr: &PullRequest,
        labels: &[String],
    ) -> Result<Option<Effect>, ReconcileError> {
        let missing: Vec<String> = labels
            .iter()
            .filter(|l| !pr.labels.contains(l))
            .cloned()
            .collect();
        if !missing.is_empty() {
            f.forge.add_labels(&f.repo, pr.number, &missing).await?;
        }
        self.change(&[StateChange::Abandon(IntentKind::Label)])?;
        Ok((!missing.is_empty()).then_some(Effect::AddLabels(missing)))
    }

    /// Break-glass: puts the known-good images into the selected workloads directly
    /// (idempotent: workloads already right are not written; repeated while git still
    /// says otherwise, so an applier reverting the patch is corrected again). A failure
    /// is recorded and never stands in the way of the rollback in git.
    pub async fn patch(&self, patch: &Patch) -> Result<Vec<Effect>, ReconcileError> {
        let specs = watch::workload_specs(&self.policy.spec);
        let Some(cluster) = self.deps.workloads else {
            return Ok(Vec::new());
        };
        self.change(&patch.intent(self.now).into_iter().collect::<Vec<_>>())?;
        match cluster.patch_images_boxed(specs, &patch.good).await {
            Ok(patched) => {
                let lines: Vec<String> = patched
                    .iter()
                    .map(|p| format!("{} {}: {} -> {}", p.workload, p.container, p.from, p.to))
                    .collect();
                self.change(&[patch.settled(Ok(&lines))])?;
                Ok(if lines.is_empty() {
                    Vec::new()
                } else {
                    vec![Effect::PatchCluster(lines)]
                })
            }
            // The intent stays: the next patch settles it.
            Err(e) => {
                tracing::warn!(policy = self.policy.name(), error = %e, "the cluster patch failed; rolling back in git");
                self.change(&[patch.settled(Err(&e.to_string()))])?;
                Ok(Vec::new())
            }
        }
    }

    /// Delivers a rollback: pushed straight to the base branch (direct push), or as
    /// the rollback pull request, merged as soon as it is mergeable and its checks
    /// passed. Windows, the hold it caused and the gate never block it.
    pub async fn roll_back(
        &self,
        rb: &RollbackTo,
        delivery: Mode,
    ) -> Result<Vec<Effect>, ReconcileError> {
        let what = format!("{} -> {}", rb.bad.summary, rb.good.summary);
        match delivery {
            Mode::DirectPush => {
                let Some(prepared) = observe::rollback_commit(
                    self.policy,
                    self.deps,
                    rb,
                    Delivery::DirectPush,
                    self.now,
                )
                .await?
                else {
                    return Ok(Vec::new());
                };
                let intent = watch::push_intent(
                    Reason::RolledBack,
                    format!("{what} pushed"),
                    &rb.good.images,
                    self.now,
                );
                let done = |head: &str| {
                    StateChange::Fulfil(IntentKind::Push, Some(format!("{what} pushed as {head}")))
                };
                self.push(&prepared, &[StateChange::Intend(intent)], Some(&done))
                    .await?;
                Ok(Vec::new())
            }
            Mode::PullRequest if self.policy.spec.rollback.pull_request => {
                self.rollback_pr(rb, &what).await
            }
            Mode::PullRequest => Ok(Vec::new()),
        }
    }

    async fn rollback_pr(
        &self,
        rb: &RollbackTo,
        what: &str,
    ) -> Result<Vec<Effect>, ReconcileError> {
        let f = self.deps.forge_access()?;
        let name = self.policy.name();
        let branch: BranchName = format!("autobump-rollback-{name}")
            .parse()
            .map_err(ReconcileError::Policy)?;
        let delivery = Delivery::PullRequest {
            branch: branch.clone(),
        };
        let Some(prepared) =
            observe::rollback_commit(self.policy, self.deps, rb, delivery, self.now).await?
        else {
            return Ok(Vec::new());
        };
        let open = f
            .forge
            .find_open_pr(&f.repo, branch.as_str(), &f.bot_login)
            .await?;
        // The open rollback PR's branch, made on an older base, stays while it is
        // still exactly the rollback: pushing it again would restart the
        // mergeability check and the checks.
        let kept = match &open {
            Some(pr) => {
                self.rollback_branch_kept(rb, &branch, &prepared, pr)
                    .await?
            }
            None => None,
        };
        if kept.is_none() {
            self.push(&prepared, &[], None).await?;
        }
        let pr = match open {
            Some(pr) => pr,
            None => self.open_rollback_pr(&f, rb, &branch).await?,
        };
        let mergeability = f.forge.mergeability(&f.repo, pr.number).await?;
        if let Some(head) = &kept
            && (mergeability.mergeable == Some(false) || mergeability.head_sha != *head)
        {
            // It conflicts with the moved base (or its head moved since it was read):
            // a rollback made on the base now replaces it.
            self.push(&prepared, &[], None).await?;
            return Ok(vec![Effect::Waiting(format!(
                "rollback PR #{} made again on the current {}; merging once GitHub finds it mergeable",
                pr.number, self.policy.spec.source.branch
            ))]);
        }
        let required = &self.policy.spec.rollback.required_checks;
        let checks = observe::checks_on(&f, &mergeability.head_sha, required).await?;
        if let Err(why) =
            crate::core::merge::rollback_merge(pr.number, mergeability.mergeable, &checks, required)
        {
            return Ok(vec![Effect::Waiting(why)]);
        }
        let method = MergeMethod::from(self.policy.spec.merge.method);
        let message = format!("{what} merged as PR #{}", pr.number);
        let merged = self
            .merge(
                &f,
                (pr.number, &mergeability.head_sha, method),
                (Reason::RolledBack, message),
                rb.good.images.clone(),
            )
            .await?;
        Ok(vec![if merged {
            Effect::Merge {
                sha: mergeability.head_sha,
                method: self.policy.spec.merge.method,
            }
        } else {
            Effect::Waiting(format!(
                "rollback PR #{} changed; merging next time",
                pr.number
            ))
        }])
    }

    /// Opens the rollback PR from `branch`.
    async fn open_rollback_pr(
        &self,
        f: &ForgeAccess<'_, F>,
        rb: &RollbackTo,
        branch: &BranchName,
    ) -> Result<PullRequest, ReconcileError> {
        let name = self.policy.name();
        let pr = NewPullRequest {
            title: format!("autobump({name}): roll back to {}", rb.good.summary),
            body: format!(
                "autobump rolls policy `{name}` back from `{}` to the last known-good `{}`.\n\nWhy: {}\n\nThe policy is held until a person lifts the hold with `/unhold` (or `autobump unhold {name}`).\n\n<!-- autobump:rollback={name} -->\n",
                rb.bad.summary, rb.good.summary, rb.reason
            ),
            head_branch: branch.to_string(),
            base_branch: self.policy.spec.source.branch.to_string(),
            draft: false,
        };
        Ok(f.forge.create_pr(&f.repo, &pr).await?)
    }

    /// The head of the open rollback PR `pr` when its branch can stay as it is (see
    /// [`watch::rollback_branch_serves`]), `None` when a rollback made on the base
    /// now must replace it.
    async fn rollback_branch_kept(
        &self,
        rb: &RollbackTo,
        branch: &BranchName,
        prepared: &PreparedBump,
        pr: &PullRequest,
    ) -> Result<Option<String>, ReconcileError> {
        let Some((head, files)) =
            observe::rollback_branch_changes(self.deps, branch, prepared).await?
        else {
            return Ok(None);
        };
        if head != pr.head_sha {
            return Ok(None);
        }
        let needed: Vec<&str> = prepared
            .commit
            .iter()
            .flat_map(|c| c.changes.iter().map(|ch| ch.file.as_str()))
            .collect();
        let serves = watch::rollback_branch_serves(
            &self.policy.spec,
            rb,
            &observe::file_changes(&files),
            &needed,
        );
        Ok(serves.then_some(head))
    }

    /// Performs one planned effect (an ensure: harmless when already true).
    pub async fn apply(
        &self,
        run: &Run<'_>,
        effect: &Effect,
        pr_number: &mut Option<u64>,
    ) -> Result<(), ReconcileError> {
        if let Some(change) = effect.state_change(run.delivery, run.bumped_rows, run.promoted_from)
        {
            return self.change(&[change]);
        }
        let current = *pr_number;
        match effect {
            Effect::PushBranch => {
                if let Some(prepared) = run.prepared {
                    // Remember the bump before making it: a crash or error between the
                    // push and `RecordBump` must not let a second bump out within
                    // minInterval.
                    self.push(prepared, &[StateChange::LastBump], None).await?;
                }
            }
            Effect::PushDirect => {
                if let Some(prepared) = run.prepared {
                    let (before, what) = watch::direct_push(
                        &self.policy.spec,
                        &observe::rows_of(prepared),
                        run.promoted_from,
                        self.now,
                    );
                    let done = |head: &str| {
                        StateChange::Fulfil(IntentKind::Push, Some(format!("pushed {head} {what}")))
                    };
                    self.push(prepared, &before, Some(&done)).await?;
                }
            }
            Effect::Comment(_) | Effect::Reply { .. } => {
                if let Some((n, body)) = effect.comment_target(current) {
                    let f = self.deps.forge_access()?;
                    f.forge.post_comment(&f.repo, n, body).await?;
                }
            }
            Effect::AddLabels(labels) => {
                if let Some(n) = current {
                    let f = self.deps.forge_access()?;
                    f.forge.add_labels(&f.repo, n, labels).await?;
                }
            }
            Effect::RemoveLabel(label) => {
                if let Some(n) = current {
                    let f = self.deps.forge_access()?;
                    f.forge.remove_label(&f.repo, n, label).await?;
                }
            }
            Effect::CreatePr {
                title,
                body,
                labels,
            } => {
                *pr_number = Some(self.open_pr(run, (title, body), labels).await?);
            }
            Effect::UpdatePr { title, body } => {
                if let Some(n) = current {
                    let f = self.deps.forge_access()?;
                    let edit = PullRequestEdit {
                        title: Some(title.clone()),
                        body: Some(body.clone()),
                    };
                    f.forge.update_pr(&f.repo, n, &edit).await?;
                }
            }
            Effect::Merge { sha, method } => {
                if let Some(n) = current {
                    let f = self.deps.forge_access()?;
                    let message = format!("PR #{n} merged at {sha}");
                    let method = MergeMethod::from(*method);
                    // The versions it carries (its diff is the planned bump's, or
                    // it would not merge): named by the release they deploy.
                    let images = run
                        .prepared
                        .map(|p| watch::versions_of(&observe::rows_of(p)))
                        .unwrap_or_default();
                    self.merge(&f, (n, sha, method), (Reason::Merged, message), images)
                        .await?;
                }
            }
            Effect::MarkSeen(_)
            | Effect::SetHold(_)
            | Effect::ClearHold { .. }
            | Effect::RecordBump
            | Effect::Promote
            | Effect::Rollback(_)
            | Effect::PatchCluster(_)
            | Effect::Waiting(_) => {}
        }
        Ok(())
    }

    /// Opens the bump PR and labels it (two calls on the forge, so an intent makes a
    /// crash between them settle at the next reconcile: [`Self::settle_labels`]);
    /// returns its number.
    async fn open_pr(
        &self,
        run: &Run<'_>,
        (title, body): (&str, &str),
        labels: &[String],
    ) -> Result<u64, ReconcileError> {
        let f = self.deps.forge_access()?;
        let branch = run
            .branch
            .ok_or_else(|| ReconcileError::Policy("a pull request needs a branch".into()))?;
        if !labels.is_empty() {
            self.change(&[StateChange::Intend(Intent {
                labels: labels.to_vec(),
                ..Intent::new(
                    IntentKind::Label,
                    None,
                    format!("label the pull request {}", labels.join(", ")),
                    self.now,
                )
            })])?;
        }
        let created = f
            .forge
            .create_pr(
                &f.repo,
                &NewPullRequest {
                    title: title.to_owned(),
                    body: body.to_owned(),
                    head_branch: branch.to_string(),
                    base_branch: self.policy.spec.source.branch.to_string(),
                    draft: false,
                },
            )
            .await?;
        if !labels.is_empty() {
            f.forge.add_labels(&f.repo, created.number, labels).await?;
            self.change(&[StateChange::Abandon(IntentKind::Label)])?;
        }
        Ok(created.number)
    }
}

/// What one execution's effects share.
pub(super) struct Run<'a> {
    pub delivery: Mode,
    pub branch: Option<&'a BranchName>,
    pub prepared: Option<&'a PreparedBump>,
    pub bumped_rows: usize,
    /// With promotion: the upstream policy the bump's versions were proven in.
    pub promoted_from: Option<&'a str>,
}
