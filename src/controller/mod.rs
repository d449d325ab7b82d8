//! One reconcile of one policy's pull-request flow: observe → snapshot → plan →
//! execute (does I/O through the adapters; every decision is [`crate::core::plan`]'s).
//!
//! Observe reads, in this order: the policy's state (store), the references on the
//! base branch (repo), the versions the registries offer (resolver), the bump commit
//! those versions would make (repo, nothing pushed), the open autobump PR with its
//! checks, mergeability, diff and new comments (forge), and takes the gate verdict
//! from the caller. Execute performs the plan's effects in order; each is an ensure,
//! so a crash between two effects is repaired by the next reconcile.

pub mod incluster;
pub mod standalone;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::cluster::{ClusterError, DynWorkloads};
use crate::core::commands;
use crate::core::gate::{GateReading, GateVerdict};
use crate::core::merge::{Check, CheckState, DiffVerdict, FileChange, PrView, checks_pass};
use crate::core::plan::{self, CommandSeen, Effect, PlannedBump, PrSnapshot, Snapshot};
use crate::core::pr::Row;
use crate::core::reference::ImageRef;
use crate::core::rewrite::{ImageSelector, Plan, SeriesRule, Target};
use crate::core::select::covers;
use crate::forge::{
    CheckConclusion, CheckStatus, Forge, ForgeError, MergeMethod, NewPullRequest, PullRequest,
    PullRequestEdit, RepoName, StatusState,
};
use crate::policy::Policy;
use crate::policy::v1alpha1::{Hold, ImageVersion, Intent, IntentKind, RollbackRequest};
use crate::registry::Registry;
use crate::repo::{BumpRequest, Delivery, PreparedBump, Repo, RepoError, Source};
use crate::resolve::{Resolved, Resolver};
use crate::store::{Store, StoreError};

/// What a reconcile needs.
pub struct Deps<'a, R, G, F, S> {
    /// Registry resolution (with its caches).
    pub resolver: &'a Resolver<R>,
    /// The GitOps repository.
    pub repo: &'a G,
    /// The forge hosting it.
    pub forge: &'a F,
    /// Durable state.
    pub store: &'a S,
    /// Where the repository is and how to reach it.
    pub source: Source,
    /// The repository on the forge.
    pub forge_repo: RepoName,
    /// The account autobump's PRs come from.
    pub bot_login: String,
    /// The cluster, for policies with `rollout.workloads` (`None`: no cluster access;
    /// such policies then never count a version as deployed, failing closed).
    pub workloads: Option<&'a dyn DynWorkloads>,
}

/// A reconcile failed; the next one retries (every effect is an ensure).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The repository could not be read or written.
    #[error("repository: {0}")]
    Repo(#[from] RepoError),
    /// The forge refused or failed.
    #[error("forge: {0}")]
    Forge(#[from] ForgeError),
    /// The state could not be read or written.
    #[error("state: {0}")]
    Store(#[from] StoreError),
    /// The cluster refused or failed.
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// The policy cannot be run in this flow.
    #[error("policy: {0}")]
    Policy(String),
    /// The reconcile did not finish within its deadline and was cancelled; what it
    /// had written stays consistent (intents), and the next tick tries again.
    #[error(
        "did not finish within the reconcile deadline of {}s and was cancelled (a slow or unresponsive registry, git remote or API?)",
        .0.as_secs_f64()
    )]
    Deadline(std::time::Duration),
}

impl ReconcileError {
    /// Whether a later reconcile may succeed without a person.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Repo(e) => e.is_retryable(),
            Self::Forge(e) => e.is_retryable(),
            Self::Store(e) => e.is_retryable(),
            Self::Cluster(e) => e.is_retryable(),
            Self::Policy(_) => false,
            Self::Deadline(_) => true,
        }
    }

    /// The error kind, for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Repo(e) => e.metric_label(),
            Self::Forge(e) => e.metric_label(),
            Self::Store(e) => e.metric_label(),
            Self::Cluster(e) => e.metric_label(),
            Self::Policy(_) => "policy",
            Self::Deadline(_) => "deadline",
        }
    }
}

/// What one reconcile saw and did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The effects planned, in order (executed unless an error stopped the run).
    pub effects: Vec<Effect>,
    /// Registry results that could not be used, and why.
    pub registry_problems: Vec<String>,
    /// The PR number, if one is open (or was opened).
    pub pr: Option<u64>,
}

impl Report {
    /// One line for people: each effect by kind (waits with their reason), then the
    /// registry problems; `up to date` when there is nothing.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .effects
            .iter()
            .map(|e| match e {
                Effect::Waiting(why) => format!("waiting: {why}"),
                other => other.kind().to_owned(),
            })
            .collect();
        parts.extend(
            self.registry_problems
                .iter()
                .map(|p| format!("registry: {p}")),
        );
        if parts.is_empty() {
            "up to date".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// Everything observed, kept for the execute step.
pub struct Observed {
    snapshot_parts: Parts,
    rollout_block: Option<String>,
    prepared: Option<PreparedBump>,
    pr: Option<PullRequest>,
    registry_problems: Vec<String>,
}

struct Parts {
    hold: Option<crate::policy::v1alpha1::Hold>,
    last_bump: Option<DateTime<Utc>>,
    bump: Option<PlannedBump>,
    pr: Option<PrSnapshot>,
    commands: Vec<CommandSeen>,
}

fn pr_branch(policy: &Policy) -> Result<crate::policy::values::BranchName, ReconcileError> {
    if policy.spec.direct_push.is_some() {
        return Err(ReconcileError::Policy(
            "directPush policies are reconciled by the direct-push flow".into(),
        ));
    }
    let configured = policy
        .spec
        .pull_request
        .as_ref()
        .and_then(|p| p.branch.clone());
    match configured {
        Some(b) => Ok(b),
        None => format!("autobump-{}", policy.name())
            .parse()
            .map_err(ReconcileError::Policy),
    }
}

/// Reads the world for `policy`.
pub async fn observe<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, F, S>,
    gate: &GateVerdict,
    now: DateTime<Utc>,
) -> Result<Observed, ReconcileError> {
    let base = scan_base(deps.repo, &deps.source, policy).await?;
    observe_scanned(policy, deps, gate, now, base).await
}

async fn observe_scanned<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, F, S>,
    gate: &GateVerdict,
    now: DateTime<Utc>,
    (scanned, references): (crate::repo::Scanned, Vec<ImageRef>),
) -> Result<Observed, ReconcileError> {
    let name = policy.name();
    let branch = pr_branch(policy)?;
    let state = deps.store.load(name)?;

    let (targets, source_repos, registry_problems) =
        resolve_targets(policy, deps.resolver, &references, &state.bad_pairs(), now).await;

    let prepared = if targets.is_empty() {
        None
    } else {
        let plan = Plan::new(&targets).map_err(|e| ReconcileError::Policy(e.to_string()))?;
        Some(
            deps.repo
                .prepare_bump(
                    bump_request(
                        policy,
                        &deps.source,
                        plan,
                        Delivery::PullRequest {
                            branch: branch.clone(),
                        },
                        None,
                    ),
                    now,
                )
                .await?,
        )
        .filter(|p| p.commit.is_some())
    };
    let bump = prepared.as_ref().map(|p| PlannedBump {
        rows: rows_of(p),
        source_repos,
    });

    let pr = deps
        .forge
        .find_open_pr(&deps.forge_repo, branch.as_str(), &deps.bot_login)
        .await?;
    // The open PR's comments (relaxed: webhooks may prove them unchanged), and the
    // commands delivered by webhook on the policy's other PRs, closed ones included.
    let comments = match &pr {
        Some(pr) => {
            deps.forge
                .list_comments_relaxed(&deps.forge_repo, pr.number)
                .await?
        }
        None => Vec::new(),
    };
    let seen = &state.seen_comments;
    let (mut commands, retests) =
        observe_comments(policy, deps, pr.as_ref(), &comments, seen).await?;
    let pr_snapshot = match &pr {
        None => None,
        Some(pr) => {
            // Checks and mergeability only matter when nothing else blocks the merge;
            // skipping them then keeps a quiet blocked reconcile at two (conditional)
            // requests. New commands may lift a hold, so they always get the full read.
            let blocked = commands.is_empty()
                && (state.hold.is_some()
                    || pr.labels.iter().any(|l| l.starts_with("do-not-merge/"))
                    || !policy.spec.schedule.to_schedule().is_open(now)
                    || !gate.is_clear());
            let mut snapshot = observe_pr(
                policy,
                deps,
                pr,
                prepared.as_ref(),
                (&scanned.head, &branch),
                (!blocked, &state.bad_pairs()),
            )
            .await?;
            if snapshot.view.mergeable.is_some() && deps.forge.answers_from_memory() {
                // A merge may follow, and the comments may have come from memory: read
                // them from GitHub (a lost /hold delivery must not let a merge through).
                let fresh = deps
                    .forge
                    .list_comments(&deps.forge_repo, pr.number, None)
                    .await?;
                commands = observe_comments(policy, deps, Some(pr), &fresh, seen)
                    .await?
                    .0;
            }
            snapshot.view.retests_posted = retests;
            Some(snapshot)
        }
    };
    Ok(Observed {
        rollout_block: None,
        snapshot_parts: Parts {
            hold: state.hold,
            last_bump: state.last_bump,
            bump,
            pr: pr_snapshot,
            commands,
        },
        prepared,
        pr,
        registry_problems,
    })
}

/// The base branch's head and the image references in the policy's files there.
async fn scan_base<G: Repo>(
    repo: &G,
    source: &Source,
    policy: &Policy,
) -> Result<(crate::repo::Scanned, Vec<ImageRef>), ReconcileError> {
    let spec = &policy.spec.source;
    let scanned = repo
        .scan(source, &spec.include, &spec.exclude, spec.mode)
        .await?;
    let references = scanned
        .files
        .iter()
        .flat_map(|(_, found)| found.iter().map(|f| f.reference.clone()))
        .collect();
    Ok((scanned, references))
}

/// A bump (or rollback) of `policy`'s files with `plan`.
fn bump_request(
    policy: &Policy,
    source: &Source,
    plan: Plan,
    delivery: Delivery,
    rollback: Option<String>,
) -> BumpRequest {
    let spec = &policy.spec.source;
    BumpRequest {
        source: source.clone(),
        policy: policy.name().to_owned(),
        plan,
        include: spec.include.clone(),
        exclude: spec.exclude.clone(),
        mode: spec.mode,
        delivery,
        rollback,
    }
}

/// The image moves of a prepared bump, one row per image and version pair.
fn rows_of(prepared: &PreparedBump) -> Vec<Row> {
    let mut rows = BTreeSet::new();
    for change in prepared.commit.iter().flat_map(|c| &c.changes) {
        let (Some(old), Some(new)) = (ImageRef::parse(&change.old), ImageRef::parse(&change.new))
        else {
            continue;
        };
        let version = |r: &ImageRef| {
            let mut v = r.tag.clone().unwrap_or_default();
            if let Some(d) = &r.digest {
                v.push('@');
                v.push_str(d);
            }
            v
        };
        rows.insert(Row {
            image: old.repository.clone(),
            from: version(&old),
            to: version(&new),
        });
    }
    rows.into_iter().collect()
}

async fn observe_pr<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, F, S>,
    pr: &PullRequest,
    prepared: Option<&PreparedBump>,
    (base_head, branch): (&str, &crate::policy::values::BranchName),
    (read_checks, bad): (bool, &BTreeSet<(String, String)>),
) -> Result<PrSnapshot, ReconcileError> {
    let (head, mergeable, checks_sha, checks) = if read_checks {
        observe_checks(policy, deps, pr).await?
    } else {
        (pr.head_sha.clone(), None, pr.head_sha.clone(), Vec::new())
    };
    let has_planned_tree =
        prepared.is_some_and(|p| p.up_to_date && p.branch_head.as_deref() == Some(head.as_str()));
    let diff = if has_planned_tree {
        DiffVerdict::Matches
    } else {
        let files = deps
            .repo
            .changed_files(&deps.source, Some(branch), base_head, &head)
            .await?;
        verify_reference_only(&files, policy, deps.resolver, bad)
    };
    Ok(PrSnapshot {
        view: PrView {
            number: pr.number,
            author: pr.author.clone(),
            head_sha: head.clone(),
            labels: pr.labels.clone(),
            mergeable,
            checks_sha,
            checks,
            retests_posted: 0,
        },
        title: pr.title.clone(),
        body: pr.body.clone(),
        has_planned_tree,
        diff,
    })
}

/// The PR's head, its mergeability, the SHA whose checks were read, and those checks.
///
/// The checks of the head the PR listing showed are read first, relaxed (webhooks may
/// prove them unchanged: a quiet reconcile while checks run then costs nothing here).
/// Only when they pass is anything more read: the checks again from GitHub if they may
/// have come from memory, and mergeability, whose head must still be the one whose
/// checks were read (the merge engine waits otherwise).
async fn observe_checks<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, F, S>,
    pr: &PullRequest,
) -> Result<(String, Option<bool>, String, Vec<Check>), ReconcileError> {
    let repo = &deps.forge_repo;
    let required = &policy.spec.merge.required_checks;
    let sha = pr.head_sha.clone();
    let status = deps.forge.combined_status_relaxed(repo, &sha).await?;
    let runs = deps.forge.check_runs_relaxed(repo, &sha).await?;
    let mut checks = checks_of(&status.statuses, &runs);
    if checks_pass(&checks, required) && deps.forge.answers_from_memory() {
        let status = deps.forge.combined_status(repo, &sha).await?;
        let runs = deps.forge.check_runs(repo, &sha).await?;
        checks = checks_of(&status.statuses, &runs);
    }
    if !checks_pass(&checks, required) {
        return Ok((sha.clone(), None, sha, checks));
    }
    let mergeability = deps.forge.mergeability(repo, pr.number).await?;
    Ok((mergeability.head_sha, mergeability.mergeable, sha, checks))
}

/// Commit statuses and check runs as the merge engine's checks.
fn checks_of(
    statuses: &[crate::forge::CommitStatus],
    runs: &[crate::forge::CheckRun],
) -> Vec<Check> {
    let mut checks: Vec<Check> = statuses
        .iter()
        .map(|s| Check {
            name: s.context.clone(),
            state: match s.state {
                StatusState::Success => CheckState::Success,
                StatusState::Pending => CheckState::Pending,
                _ => CheckState::Failure,
            },
        })
        .collect();
    checks.extend(runs.iter().map(|r| Check {
        name: r.name.clone(),
        state: match (r.status, r.conclusion) {
            (
                CheckStatus::Completed,
                Some(
                    CheckConclusion::Success | CheckConclusion::Neutral | CheckConclusion::Skipped,
                ),
            ) => CheckState::Success,
            (CheckStatus::Completed, _) => CheckState::Failure,
            _ => CheckState::Pending,
        },
    }));
    checks
}

/// A PR that does not carry the planned tree may be an older bump (fine: it may merge,
/// and is refreshed in the next window), a bump whose versions cannot be verified any
/// more (never merged; refreshed), or carry other changes (never merged; held): see
/// [`crate::core::merge::verify_image_moves`]. A version checks out when the tag list
/// the registry gave in this reconcile has its tag, it was never rolled back (`bad`:
/// canonical image and tag pairs), and a digest it pins is the one the resolver read
/// for that tag (so a PR cannot pin an image the tag never had).
fn verify_reference_only<R: Registry>(
    files: &[crate::repo::ChangedFile],
    policy: &Policy,
    resolver: &Resolver<R>,
    bad: &BTreeSet<(String, String)>,
) -> DiffVerdict {
    let texts: Vec<FileChange<'_>> = files
        .iter()
        .map(|f| FileChange {
            path: &f.path,
            old: f.old_text(),
            new: f.new_text(),
        })
        .collect();
    crate::core::merge::verify_image_moves(&policy.spec, &texts, &|r| {
        version_problem(resolver, bad, r)
    })
}

/// Why the version `r` names cannot be trusted now, if it cannot.
fn version_problem<R: Registry>(
    resolver: &Resolver<R>,
    bad: &BTreeSet<(String, String)>,
    r: &ImageRef,
) -> Option<String> {
    let canonical = r.canonical_repository();
    let Some(tag) = r.tag.as_deref() else {
        return Some("no tag".into());
    };
    if bad.contains(&(canonical.clone(), tag.to_owned())) {
        return Some("this version was rolled back before".into());
    }
    if !resolver.registry_has(&canonical, tag) {
        return Some("the registry does not list this tag".into());
    }
    let digest = r.digest.as_deref()?;
    match resolver.known_digest(&canonical, tag) {
        Some(known) if known == digest => None,
        Some(known) => Some(format!("the registry's digest of {tag} is {known}")),
        None => Some(format!(
            "the digest was not read from the registry for {tag} (autobump pins only the \
             versions it proposes)"
        )),
    }
}

/// New command comments (oldest first) from the open PR's `comments` and from those
/// delivered by webhook on the policy's other PRs, and how many retest comments the
/// bot posted on the open PR (retests are bounded per PR: `merge.retest.max` in all).
async fn observe_comments<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, F, S>,
    open: Option<&PullRequest>,
    comments: &[crate::forge::Comment],
    seen: &[u64],
) -> Result<(Vec<CommandSeen>, u32), ReconcileError> {
    let retest = policy.spec.merge.retest.as_ref().map(|r| r.comment.trim());
    let is_bot = |login: &str| login.eq_ignore_ascii_case(&deps.bot_login);
    let mut found: Vec<(u64, crate::forge::Comment)> = Vec::new();
    let mut retests = 0u32;
    for c in comments {
        if is_bot(&c.author) {
            if retest.is_some_and(|r| c.body.trim() == r) {
                retests += 1;
            }
        } else if let Some(pr) = open {
            found.push((pr.number, c.clone()));
        }
    }
    for d in deps
        .forge
        .delivered_commands(&deps.forge_repo, policy.name())
    {
        // Only the bot's PRs speak for the policy (anyone can paste a marker).
        if is_bot(&d.pr_author) && !found.iter().any(|(_, c)| c.id == d.comment.id) {
            found.push((d.pr, d.comment));
        }
    }
    found.sort_by_key(|(_, c)| (c.created_at, c.id));
    let mut commands = Vec::new();
    for (pr, c) in found {
        if is_bot(&c.author) || seen.contains(&c.id) {
            continue;
        }
        let Some(command) = commands::parse(&c.body) else {
            continue;
        };
        let permission = deps.forge.permission(&deps.forge_repo, &c.author).await?;
        commands.push(CommandSeen {
            id: c.id,
            author: c.author,
            permission,
            command,
            url: c.html_url,
            at: c.created_at,
            pr,
        });
    }
    Ok((commands, retests))
}

/// What a direct-push reconcile needs (no forge).
pub struct DirectDeps<'a, R, G, S> {
    /// Registry resolution.
    pub resolver: &'a Resolver<R>,
    /// The GitOps repository.
    pub repo: &'a G,
    /// Durable state.
    pub store: &'a S,
    /// Where the repository is and how to reach it.
    pub source: Source,
    /// The cluster, as in [`Deps::workloads`].
    pub workloads: Option<&'a dyn DynWorkloads>,
}

/// The bump targets the registries call for, and what could not be resolved.
async fn resolve_targets<R: Registry>(
    policy: &Policy,
    resolver: &Resolver<R>,
    references: &[ImageRef],
    bad: &BTreeSet<(String, String)>,
    now: DateTime<Utc>,
) -> (Vec<Target>, BTreeMap<String, String>, Vec<String>) {
    let mut targets = Vec::new();
    let mut problems = Vec::new();
    let mut source_repos = BTreeMap::new();
    for image in &policy.spec.images {
        for r in resolver.resolve(image, references, bad, now).await {
            match r.outcome {
                Resolved::Bump { tag, digest } => {
                    if let Some(repo) = &image.source_repo {
                        source_repos.insert(r.image.clone(), repo.to_string());
                    }
                    targets.push(Target {
                        image: ImageSelector::Repository(r.image.clone()),
                        tag,
                        digest,
                        rule: SeriesRule::Policy(image.tags.clone()),
                    });
                }
                Resolved::RegistryError { error, .. } => problems.push(error),
                Resolved::NoCandidate { reason } => {
                    problems.push(format!("{} [{}]: {reason}", r.image, r.series));
                }
                // Younger than `minAge`: nothing to do until it is old enough.
                Resolved::UpToDate | Resolved::Waiting { .. } => {}
            }
        }
    }
    (targets, source_repos, problems)
}

/// One reconcile of a direct-push policy: resolve, and push the bump commit to the
/// base branch when it is not held, the schedule allows a bump and the gate is Clear
/// (the push retries on a lost race, never forcing).
pub async fn reconcile_direct<R: Registry, G: Repo, S: Store>(
    policy: &Policy,
    deps: &DirectDeps<'_, R, G, S>,
    gate: &GateVerdict,
    now: DateTime<Utc>,
) -> Result<Report, ReconcileError> {
    reconcile_direct_read(policy, deps, &GateReading::of(gate.clone()), now).await
}

/// [`reconcile_direct`] with the whole gate reading: an automatic hold then says
/// which alerts fired, with their labels, summary, runbook and links.
pub async fn reconcile_direct_read<R: Registry, G: Repo, S: Store>(
    policy: &Policy,
    deps: &DirectDeps<'_, R, G, S>,
    reading: &GateReading,
    now: DateTime<Utc>,
) -> Result<Report, ReconcileError> {
    let gate = &reading.verdict;
    let name = policy.name();
    let (scanned, references) = scan_base(deps.repo, &deps.source, policy).await?;
    let state = deps.store.load(name)?;
    let state = settle_push(policy, deps.store, (&references, &scanned.head), state, now)?;
    let (mut watched, rollback, _) = assess_rollout(
        policy,
        (deps.store, deps.workloads),
        state,
        (&references, &scanned.head),
        reading,
        now,
    )
    .await?;
    if let Some(rb) = &rollback {
        roll_back(policy, deps, rb, now).await?;
    }
    // One rollout at a time: while the deployed version deploys or bakes (or was just
    // rolled back), nothing new goes out, so there is always a known-good to return to.
    if watched
        .iter()
        .any(|e| matches!(e, Effect::Rollback(_) | Effect::Waiting(_)))
    {
        return Ok(Report {
            effects: watched,
            registry_problems: Vec::new(),
            pr: None,
        });
    }
    let state = deps.store.load(name)?;
    let (targets, _, registry_problems) =
        resolve_targets(policy, deps.resolver, &references, &state.bad_pairs(), now).await;
    let prepared = if targets.is_empty() {
        None
    } else {
        let plan = Plan::new(&targets).map_err(|e| ReconcileError::Policy(e.to_string()))?;
        deps.repo
            .prepare_bump(
                bump_request(policy, &deps.source, plan, Delivery::DirectPush, None),
                now,
            )
            .await?
            .into()
    };
    let prepared = prepared.filter(|p: &PreparedBump| p.commit.is_some());
    let effects = plan::plan_direct(
        &policy.spec,
        state.hold.as_ref(),
        state.last_bump,
        prepared.is_some(),
        gate,
        now,
    );
    watched.extend(effects);
    let effects = watched;
    for effect in &effects {
        match effect {
            Effect::PushDirect => {
                if let Some(p) = &prepared {
                    push_bump(policy, deps, p, now).await?;
                }
            }
            Effect::RecordBump => {
                deps.store.update(name, &mut |s| s.last_bump = Some(now))?;
            }
            _ => {}
        }
    }
    Ok(Report {
        effects,
        registry_problems,
        pr: None,
    })
}

/// Pushes a bump straight to the base branch, remembering it before (for
/// `minInterval`, and the intent of its `Pushed` record: see `settle_push`) and
/// recording it after.
async fn push_bump<R: Registry, G: Repo, S: Store>(
    policy: &Policy,
    deps: &DirectDeps<'_, R, G, S>,
    prepared: &PreparedBump,
    now: DateTime<Utc>,
) -> Result<(), ReconcileError> {
    let name = policy.name();
    let rows = rows_of(prepared);
    let moves: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {} -> {}", r.image, r.from, r.to))
        .collect();
    let images: Vec<ImageVersion> = rows
        .iter()
        .map(|r| ImageVersion {
            image: r.image.clone(),
            tag: r.to.split('@').next().unwrap_or(&r.to).to_owned(),
            digest: None,
        })
        .collect();
    let what = format!("to {}: {}", policy.spec.source.branch, moves.join(", "));
    deps.store.update(name, &mut |s| {
        s.last_bump = Some(now);
        s.intend(push_intent(
            "Pushed",
            format!("pushed {what}"),
            &images,
            now,
        ));
    })?;
    let pushed = deps.repo.push(prepared).await?;
    let head = pushed.head.as_deref().unwrap_or("nothing new");
    deps.store.update(name, &mut |s| {
        s.fulfil(IntentKind::Push, Some(format!("pushed {head} {what}")));
    })?;
    Ok(())
}

/// The versions of the policy's images the base branch carries now.
fn deployed_release(
    policy: &Policy,
    references: &[ImageRef],
    head: &str,
    now: DateTime<Utc>,
) -> Option<crate::policy::v1alpha1::Release> {
    let mut images: Vec<crate::policy::v1alpha1::ImageVersion> = references
        .iter()
        .filter(|r| policy.spec.images.iter().any(|i| covers(i, r)))
        .filter_map(|r| {
            let tag = r.tag.clone()?;
            policy
                .spec
                .images
                .iter()
                .find(|i| covers(i, r))
                .and_then(|i| crate::core::tags::series(&i.tags, &tag))?;
            Some(crate::policy::v1alpha1::ImageVersion {
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
    Some(crate::policy::v1alpha1::Release {
        summary,
        images,
        since: now,
        commit: Some(head.to_owned()),
    })
}

/// A rollback to deliver: from the deployed `bad` release to `good`, and why.
struct RollbackTo {
    bad: crate::policy::v1alpha1::Release,
    good: crate::policy::v1alpha1::Release,
    reason: String,
}

/// What watching the deployed version decided: effects to report, the rollback to
/// perform, and the hold placed just now (by the gate or for a rollback request) if
/// any.
type Assessed = (Vec<Effect>, Option<RollbackTo>, Option<Hold>);

/// Tracks the deployed release, bakes it against the gate, promotes it, or decides a
/// rollback (holding the policy and recording the bad versions; the caller delivers
/// it). A deployed version already recorded as bad is rolled back again until the
/// known-good version is on the branch, so a crash between the hold and the delivery
/// converges.
///
/// A rollback request (`autobump rollback`) decides a rollback whatever the gate, the
/// rollout, the hold or the schedule say, when the deployed version is not the last
/// known-good; otherwise it is dropped with a `NothingToRollBack` entry.
#[allow(clippy::too_many_lines)] // one match over the rollout decision; each arm is short
async fn assess_rollout<S: Store>(
    policy: &Policy,
    (store, workloads): (&S, Option<&dyn DynWorkloads>),
    mut state: crate::store::PolicyState,
    (references, head): (&[ImageRef], &str),
    reading: &GateReading,
    now: DateTime<Utc>,
) -> Result<Assessed, ReconcileError> {
    use crate::core::rollout::{self, RolloutDecision};
    let gate = &reading.verdict;
    let name = policy.name();
    let Some(deployed) = deployed_release(policy, references, head, now) else {
        return Ok((Vec::new(), None, None));
    };
    if state
        .current
        .as_ref()
        .is_none_or(|c| !rollout::same_versions(c, &deployed))
    {
        let summary = deployed.summary.clone();
        state = store.update(name, &mut |s| {
            s.current = Some(deployed.clone());
            s.bake = None;
            s.record(
                now,
                "Deployed",
                format!("{summary} is on {}", policy.spec.source.branch),
            );
        })?;
    }
    let current = state.current.clone().unwrap_or(deployed);
    if state.rollback_request.is_some() && requested_rollback(&state, &current).is_none() {
        state = drop_rollback_request(policy, store, &state, &current, now)?;
    }
    let (rollout_state, rollout_detail) = match observe_rollout(policy, workloads, &current).await {
        Ok(observed) => observed,
        // A cluster that cannot be observed must not delay a rollback: alerts firing
        // (or a version recorded as bad, or a rollback request) decide it whatever the
        // rollout's state, and
        // Progressing lets nothing be promoted.
        Err(e) if rollback_needs_no_rollout(policy, &state, &current, gate) => {
            tracing::warn!(policy = name, error = %e, "the rollout cannot be observed; deciding the rollback without it");
            (
                rollout::RolloutState::Progressing,
                Some(format!("the rollout cannot be observed: {e}")),
            )
        }
        Err(e) => return Err(e),
    };
    let decision = decide_rollout(policy, &state, &current, gate, rollout_state, now);
    match decision {
        RolloutDecision::Idle => Ok((Vec::new(), None, None)),
        RolloutDecision::Deploying => {
            let v = &current.summary;
            let why = match (rollout_state, rollout_detail) {
                // Rolled out (or, standalone, on the branch), within `deployDelay`.
                (rollout::RolloutState::Complete, detail) => {
                    let delay = policy
                        .spec
                        .rollout
                        .as_ref()
                        .map_or(chrono::TimeDelta::zero(), |r| r.deploy_delay.delta());
                    format!(
                        "{v} {}; its bake starts after rollout.deployDelay, at {}",
                        detail.map_or_else(
                            || format!("is on {}", policy.spec.source.branch),
                            |d| format!("rolled out ({d})")
                        ),
                        (current.since + delay).format("%Y-%m-%dT%H:%M:%SZ")
                    )
                }
                (_, Some(detail)) => format!("{v} is rolling out ({detail})"),
                (_, None) => format!("{v} is deploying"),
            };
            Ok((
                vec![Effect::Waiting(format!(
                    "{why}; the next bump waits until it is known-good"
                ))],
                None,
                None,
            ))
        }
        RolloutDecision::Baking {
            progress,
            paused,
            remaining,
        } => {
            if state.bake.as_ref() != Some(&progress) {
                store.update(name, &mut |s| s.bake = Some(progress.clone()))?;
            }
            Ok((
                vec![Effect::Waiting(match paused {
                    Some(why) => format!("bake of {} paused, gate unknown: {why}", current.summary),
                    None => format!(
                        "{} is baking ({} left); the next bump waits until it is known-good",
                        current.summary,
                        crate::policy::values::Duration::from_secs(remaining.num_seconds())
                    ),
                })],
                None,
                None,
            ))
        }
        RolloutDecision::Promote => {
            store.update(name, &mut |s| {
                s.last_known_good = Some(current.clone());
                s.bake = None;
                s.record(
                    now,
                    "Promoted",
                    format!("{} is the last known-good", current.summary),
                );
            })?;
            Ok((vec![Effect::Promote], None, None))
        }
        RolloutDecision::Rollback { reason } => {
            let good = state
                .last_known_good
                .clone()
                .unwrap_or_else(|| current.clone());
            // The request that decided this rollback, if one did: its hold is the
            // requester's, and the same update removes it. With alerts firing the hold
            // is the automatic one all the same (only a person with write permission
            // may lift it), and the request is fulfilled by this rollback.
            let firing =
                policy.spec.gate.is_some() && matches!(reading.verdict, GateVerdict::Firing(_));
            let by = match requested_rollback(&state, &current) {
                Some(request) if !firing => HoldBy::Request(request),
                _ => HoldBy::Gate(reading),
            };
            let placed = hold_and_mark_bad(store, name, (&current, &good), by, &reason, now)?;
            let mut effects = vec![Effect::Rollback(reason.clone())];
            if policy.spec.rollback.patch_cluster {
                // The break-glass patch must never stand in the way of the rollback in
                // git: on failure it is recorded and the rollback goes ahead.
                // An intent for this patch left by an earlier reconcile: see `patch_cluster`.
                let earlier = state
                    .intent(IntentKind::Patch)
                    .is_some_and(|i| i.images == good.images);
                match patch_cluster(policy, (store, workloads), (&good, earlier), now).await {
                    Ok(patched) => effects.extend(patched),
                    Err(e) => {
                        tracing::warn!(policy = name, error = %e, "the cluster patch failed; rolling back in git");
                        store.update(name, &mut |s| {
                            s.record(
                                now,
                                "ClusterPatchFailed",
                                format!("patching the workloads to {} failed: {e}", good.summary),
                            );
                        })?;
                    }
                }
            }
            Ok((
                effects,
                Some(RollbackTo {
                    bad: current,
                    good,
                    reason,
                }),
                placed,
            ))
        }
        RolloutDecision::HoldWithoutRollback { reason } => {
            let placed = hold_and_mark_bad(
                store,
                name,
                (&current, &current),
                HoldBy::Gate(reading),
                &reason,
                now,
            )?;
            Ok((
                vec![Effect::Waiting(format!(
                    "held without a known-good version: {reason}"
                ))],
                None,
                placed,
            ))
        }
    }
}

/// The rollout decision for the deployed `current` release: a version already
/// recorded as bad goes back to the known-good at once; otherwise
/// [`crate::core::rollout::decide`] (a policy without a gate bakes for zero time).
/// `rollout.workloads` (empty without a `rollout` section).
fn workload_specs(policy: &Policy) -> &[crate::policy::v1alpha1::WorkloadSpec] {
    policy
        .spec
        .rollout
        .as_ref()
        .map_or(&[][..], |r| r.workloads.as_slice())
}

/// The workloads named in `rollout.workloads`: they decide when `current` counts as
/// deployed. Without any, a version is deployed once on the base branch (plus
/// `deployDelay`); with some but no cluster access, it never is (fail closed: no
/// promotion from an unobserved rollout).
async fn observe_rollout(
    policy: &Policy,
    workloads: Option<&dyn DynWorkloads>,
    current: &crate::policy::v1alpha1::Release,
) -> Result<(crate::core::rollout::RolloutState, Option<String>), ReconcileError> {
    use crate::core::rollout::RolloutState;
    let specs = workload_specs(policy);
    if specs.is_empty() {
        return Ok((RolloutState::Complete, None));
    }
    let Some(cluster) = workloads else {
        return Ok((
            RolloutState::Progressing,
            Some("rollout.workloads is set but autobump has no cluster access".into()),
        ));
    };
    let observed = cluster.observe_boxed(specs, current).await?;
    Ok((observed.state, Some(observed.detail)))
}

/// Break-glass: puts the known-good images into the selected workloads directly
/// (idempotent: workloads already right are not written; repeated while git still
/// says otherwise, so an applier reverting the patch is corrected again).
async fn patch_cluster<S: Store>(
    policy: &Policy,
    (store, workloads): (&S, Option<&dyn DynWorkloads>),
    (good, earlier): (&crate::policy::v1alpha1::Release, bool),
    now: DateTime<Utc>,
) -> Result<Vec<Effect>, ReconcileError> {
    let specs = workload_specs(policy);
    let Some(cluster) = workloads.filter(|_| !specs.is_empty()) else {
        return Ok(vec![Effect::Waiting(
            "rollback.patchCluster is set but there are no workloads or no cluster access".into(),
        )]);
    };
    // The intent (written once per rollback: this runs on every reconcile until the
    // rollback is on the branch; `earlier` when it is in force already) makes a crash
    // between the patch and its record settle here next time: the workloads then need
    // no patch, and the record is due.
    let name = policy.name();
    if !earlier {
        store.update(name, &mut |s| {
            s.intend(Intent {
                images: good.images.clone(),
                ..Intent::new(
                    IntentKind::Patch,
                    Some("ClusterPatched"),
                    format!(
                        "the workloads run {}: patched before a restart or an error",
                        good.summary
                    ),
                    now,
                )
            });
        })?;
    }
    // On an error the intent stays: the next patch settles it.
    let patched = cluster.patch_images_boxed(specs, good).await?;
    if patched.is_empty() {
        store.update(name, &mut |s| {
            if earlier {
                s.fulfil(IntentKind::Patch, None);
            } else {
                s.abandon(IntentKind::Patch);
            }
        })?;
        return Ok(Vec::new());
    }
    let lines: Vec<String> = patched
        .iter()
        .map(|p| format!("{} {}: {} -> {}", p.workload, p.container, p.from, p.to))
        .collect();
    store.update(name, &mut |s| {
        s.fulfil(IntentKind::Patch, Some(lines.join("; ")));
    })?;
    Ok(vec![Effect::PatchCluster(lines.clone())])
}

/// Whether the rollout decision is a rollback whatever the rollout's state: the deployed
/// version is recorded as bad, a rollback was requested, or the policy's gate is Firing.
fn rollback_needs_no_rollout(
    policy: &Policy,
    state: &crate::store::PolicyState,
    current: &crate::policy::v1alpha1::Release,
    gate: &GateVerdict,
) -> bool {
    (recorded_bad(state, current) && state.last_known_good.is_some())
        || requested_rollback(state, current).is_some()
        || (policy.spec.gate.is_some() && matches!(gate, GateVerdict::Firing(_)))
}

/// The rollback request in force for the deployed `current` release: one was made, and
/// there is a last known-good version that `current` is not.
fn requested_rollback<'a>(
    state: &'a crate::store::PolicyState,
    current: &crate::policy::v1alpha1::Release,
) -> Option<&'a RollbackRequest> {
    let good = state.last_known_good.as_ref()?;
    state
        .rollback_request
        .as_ref()
        .filter(|_| !crate::core::rollout::same_versions(good, current))
}

/// Removes a rollback request there is nothing to do for (`current` is the last
/// known-good, or there is none), with a history entry saying so. Returns the new
/// state.
fn drop_rollback_request<S: Store>(
    policy: &Policy,
    store: &S,
    state: &crate::store::PolicyState,
    current: &crate::policy::v1alpha1::Release,
    now: DateTime<Utc>,
) -> Result<crate::store::PolicyState, ReconcileError> {
    let why = if state.last_known_good.is_some() {
        format!(
            "nothing to roll back: {} on {} is the last known-good",
            current.summary, policy.spec.source.branch
        )
    } else {
        "nothing to roll back to: no version is known-good yet".to_owned()
    };
    Ok(store.update(policy.name(), &mut |s| {
        if let Some(r) = s.rollback_request.take() {
            s.record(
                now,
                "NothingToRollBack",
                format!("rollback requested by {}: {}; {why}", r.by, r.reason),
            );
        }
    })?)
}

/// Whether an image version of `current` is recorded as bad.
fn recorded_bad(
    state: &crate::store::PolicyState,
    current: &crate::policy::v1alpha1::Release,
) -> bool {
    let bad = state.bad_pairs();
    current
        .images
        .iter()
        .any(|i| bad.contains(&(canonical(&i.image), i.tag.clone())))
}

fn decide_rollout(
    policy: &Policy,
    state: &crate::store::PolicyState,
    current: &crate::policy::v1alpha1::Release,
    gate: &GateVerdict,
    rollout_state: crate::core::rollout::RolloutState,
    now: DateTime<Utc>,
) -> crate::core::rollout::RolloutDecision {
    use crate::core::rollout::{self, RolloutDecision, RolloutInputs};
    let known_bad = recorded_bad(state, current);
    let (bake, gated) = policy
        .spec
        .gate
        .as_ref()
        .map_or((chrono::TimeDelta::zero(), false), |g| {
            (g.bake.delta(), true)
        });
    if let Some(request) = requested_rollback(state, current) {
        RolloutDecision::Rollback {
            reason: format!("rollback requested by {}: {}", request.by, request.reason),
        }
    } else if known_bad && state.last_known_good.is_some() {
        RolloutDecision::Rollback {
            reason: format!("{} was rolled back before", current.summary),
        }
    } else {
        rollout::decide(&RolloutInputs {
            deployed: Some((current, current.since)),
            rollout: rollout_state,
            last_known_good: state.last_known_good.as_ref(),
            progress: state.bake.as_ref(),
            bake,
            deploy_delay: policy
                .spec
                .rollout
                .as_ref()
                .map_or(chrono::TimeDelta::zero(), |r| r.deploy_delay.delta()),
            gate: if gated { gate } else { &GateVerdict::Clear },
            now,
        })
    }
}

fn canonical(image: &str) -> String {
    ImageRef::parse(image).map_or_else(|| image.to_owned(), |r| r.canonical_repository())
}

/// The reason of an automatic hold: the decision's reason, then one line per firing
/// alert (at most five) with its labels, summary, runbook and where to see it, so
/// the person paged has the evidence without searching.
fn hold_reason(reason: &str, reading: &GateReading) -> String {
    use std::fmt::Write as _;
    const SHOWN: usize = 5;
    let mut text = reason.to_owned();
    let firing: Vec<&crate::core::gate::Alert> = reading
        .alerts
        .iter()
        .filter(|a| a.state == crate::core::gate::AlertState::Firing)
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

/// Who holds the policy when a rollback (or a bad version without one) is decided.
#[derive(Clone, Copy)]
enum HoldBy<'a> {
    /// autobump itself, after what the gate read (or a failed rollout).
    Gate(&'a GateReading),
    /// The person whose rollback request decided it.
    Request(&'a RollbackRequest),
}

/// Holds the policy and records every version of `bad` that is not in `good` as bad.
/// Returns the hold if it was placed now.
///
/// [`HoldBy::Gate`]: the hold is automatic (and a pending rollback request is
/// fulfilled by this rollback). A person's hold in force is replaced by
/// the automatic one, which names it in its reason: a person's hold may be liftable
/// with less permission (`unholdPermission`), but after a bad rollout only a person
/// with write permission may let deploys resume (an automatic hold already in force
/// stays as it is).
///
/// [`HoldBy::Request`]: the hold is the requester's (a person's hold, lifted like any
/// other), placed unless a hold is already in force; the same update removes the
/// request, so from then on the versions recorded as bad carry the rollback to its end.
fn hold_and_mark_bad<S: Store>(
    store: &S,
    name: &str,
    (bad, good): (
        &crate::policy::v1alpha1::Release,
        &crate::policy::v1alpha1::Release,
    ),
    holder: HoldBy<'_>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<Hold>, ReconcileError> {
    let (by, full_reason) = match holder {
        HoldBy::Gate(reading) => (
            match &reading.verdict {
                GateVerdict::Firing(alerts) => format!("alert:{}", alerts.join(",")),
                _ => "autobump".to_owned(),
            },
            hold_reason(reason, reading),
        ),
        HoldBy::Request(request) => (
            request.by.clone(),
            format!(
                "rollback from {} requested: {}",
                bad.summary, request.reason
            ),
        ),
    };
    let mut placed = None;
    store.update(name, &mut |s| {
        placed = None;
        // The quiet period starts over: Clear readings before the alert never count
        // towards promoting this version (it stays deployed when there is no
        // known-good version to go back to).
        s.bake = None;
        match holder {
            HoldBy::Gate(_) => {
                s.rollback_request = None;
                if let Some(hold) =
                    crate::core::rollout::automatic_hold(s.hold.as_ref(), &by, &full_reason, now)
                {
                    let replaced = s
                        .hold
                        .as_ref()
                        .map(|h| format!(" (replaces the hold by {})", h.by))
                        .unwrap_or_default();
                    s.hold = Some(hold.clone());
                    placed = Some(hold);
                    s.record(now, "Held", format!("held by {by}: {reason}{replaced}"));
                }
            }
            HoldBy::Request(request) => {
                s.rollback_request = None;
                if s.hold.is_none() {
                    let hold = Hold {
                        by: by.clone(),
                        since: now,
                        reason: full_reason.clone(),
                        via: request.via.clone(),
                        automatic: false,
                    };
                    s.hold = Some(hold.clone());
                    placed = Some(hold);
                    s.record(now, "Held", format!("held by {by}: {full_reason}"));
                }
            }
        }
        for image in &bad.images {
            if !good.images.contains(image) {
                s.bad_versions.insert(crate::store::BadVersion {
                    image: canonical(&image.image),
                    tag: image.tag.clone(),
                });
            }
        }
    })?;
    Ok(placed)
}

/// Targets that put the known-good versions back for every image that moved.
fn rollback_targets(policy: &Policy, rb: &RollbackTo) -> Vec<Target> {
    rb.good
        .images
        .iter()
        .filter(|g| !rb.bad.images.contains(g))
        .filter_map(|g| {
            let r = ImageRef::parse(&format!("{}:{}", g.image, g.tag))?;
            let image = policy.spec.images.iter().find(|i| covers(i, &r))?;
            Some(Target {
                image: ImageSelector::Repository(g.image.clone()),
                tag: g.tag.clone(),
                digest: g.digest.clone(),
                rule: SeriesRule::Policy(image.tags.clone()),
            })
        })
        .collect()
}

/// The rollback commit on the current base head, or `None` when the base already
/// carries the known-good versions.
async fn prepare_rollback<G: Repo>(
    policy: &Policy,
    repo: &G,
    source: &Source,
    rb: &RollbackTo,
    delivery: Delivery,
    now: DateTime<Utc>,
) -> Result<Option<PreparedBump>, ReconcileError> {
    let targets = rollback_targets(policy, rb);
    if targets.is_empty() {
        return Ok(None);
    }
    let plan = Plan::new(&targets).map_err(|e| ReconcileError::Policy(e.to_string()))?;
    let prepared = repo
        .prepare_bump(
            bump_request(policy, source, plan, delivery, Some(rb.reason.clone())),
            now,
        )
        .await?;
    Ok(prepared.commit.is_some().then_some(prepared))
}

/// Pushes the known-good versions straight to the base branch (direct push: never
/// blocked by the schedule or the hold).
async fn roll_back<R: Registry, G: Repo, S: Store>(
    policy: &Policy,
    deps: &DirectDeps<'_, R, G, S>,
    rb: &RollbackTo,
    now: DateTime<Utc>,
) -> Result<(), ReconcileError> {
    let Some(prepared) = prepare_rollback(
        policy,
        deps.repo,
        &deps.source,
        rb,
        Delivery::DirectPush,
        now,
    )
    .await?
    else {
        return Ok(());
    };
    let what = format!("{} -> {}", rb.bad.summary, rb.good.summary);
    deps.store.update(policy.name(), &mut |s| {
        s.intend(push_intent(
            "RolledBack",
            format!("{what} pushed"),
            &rb.good.images,
            now,
        ));
    })?;
    let pushed = deps.repo.push(&prepared).await?;
    let head = pushed.head.as_deref().unwrap_or("nothing new");
    deps.store.update(policy.name(), &mut |s| {
        s.fulfil(IntentKind::Push, Some(format!("{what} pushed as {head}")));
    })?;
    Ok(())
}

/// The intent of a push to `source.branch` that records `reason` once the branch
/// carries `images`.
fn push_intent(
    reason: &str,
    message: String,
    images: &[ImageVersion],
    now: DateTime<Utc>,
) -> Intent {
    Intent {
        images: images.to_vec(),
        ..Intent::new(IntentKind::Push, Some(reason), message, now)
    }
}

/// Settles a push intent left by a crash or an error: once the base branch carries
/// its versions, its record is written. (Until then it stays: the push is retried by
/// the decision that made it, which writes its intent again.)
fn settle_push<S: Store>(
    policy: &Policy,
    store: &S,
    (references, head): (&[ImageRef], &str),
    state: crate::store::PolicyState,
    now: DateTime<Utc>,
) -> Result<crate::store::PolicyState, ReconcileError> {
    let Some(intent) = state.intent(IntentKind::Push) else {
        return Ok(state);
    };
    let Some(deployed) = deployed_release(policy, references, head, now) else {
        return Ok(state);
    };
    let carried = intent.images.iter().all(|want| {
        deployed
            .images
            .iter()
            .any(|d| d.tag == want.tag && canonical(&d.image) == canonical(&want.image))
    });
    if !carried {
        return Ok(state);
    }
    Ok(store.update(policy.name(), &mut |s| s.fulfil(IntentKind::Push, None))?)
}

/// Ensures the rollback pull request: its own branch carrying the known-good versions
/// on the current base, opened if missing, and merged as soon as it is mergeable and
/// the checks the policy lists for rollbacks (default none) passed. Windows, the hold
/// it caused and the gate never block it.
async fn ensure_rollback_pr<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, F, S>,
    rb: &RollbackTo,
    now: DateTime<Utc>,
) -> Result<Vec<Effect>, ReconcileError> {
    let name = policy.name();
    let branch: crate::policy::values::BranchName = format!("autobump-rollback-{name}")
        .parse()
        .map_err(ReconcileError::Policy)?;
    let delivery = Delivery::PullRequest {
        branch: branch.clone(),
    };
    let Some(prepared) =
        prepare_rollback(policy, deps.repo, &deps.source, rb, delivery, now).await?
    else {
        return Ok(Vec::new());
    };
    deps.repo.push(&prepared).await?;
    let repo = &deps.forge_repo;
    let pr = match deps
        .forge
        .find_open_pr(repo, branch.as_str(), &deps.bot_login)
        .await?
    {
        Some(pr) => pr,
        None => {
            deps.forge
                .create_pr(
                    repo,
                    &NewPullRequest {
                        title: format!("autobump({name}): roll back to {}", rb.good.summary),
                        body: format!(
                            "autobump rolls policy `{name}` back from `{}` to the last known-good `{}`.\n\nWhy: {}\n\nThe policy is held until a person lifts the hold with `/unhold` (or `autobump unhold {name}`).\n\n<!-- autobump:rollback={name} -->\n",
                            rb.bad.summary, rb.good.summary, rb.reason
                        ),
                        head_branch: branch.to_string(),
                        base_branch: policy.spec.source.branch.to_string(),
                        draft: false,
                    },
                )
                .await?
        }
    };
    let mergeability = deps.forge.mergeability(repo, pr.number).await?;
    let missing = missing_checks(
        deps,
        &mergeability.head_sha,
        &policy.spec.rollback.required_checks,
    )
    .await?;
    if mergeability.mergeable != Some(true) || !missing.is_empty() {
        return Ok(vec![Effect::Waiting(format!(
            "rollback PR #{} waits: {}",
            pr.number,
            if missing.is_empty() {
                "GitHub has not found it mergeable yet".to_owned()
            } else {
                format!("rollback checks not green: {}", missing.join(", "))
            }
        ))]);
    }
    let method = MergeMethod::from(policy.spec.merge.method);
    let message = format!(
        "{} -> {} merged as PR #{}",
        rb.bad.summary, rb.good.summary, pr.number
    );
    let merged = merge_recorded(
        deps,
        name,
        (pr.number, &mergeability.head_sha, method),
        ("RolledBack", message),
        now,
    )
    .await?;
    if merged {
        Ok(vec![Effect::Merge {
            sha: mergeability.head_sha,
            method: policy.spec.merge.method,
        }])
    } else {
        Ok(vec![Effect::Waiting(format!(
            "rollback PR #{} changed; merging next time",
            pr.number
        ))])
    }
}

/// Merges PR `n` at `sha` and records it (`Merged`, or `RolledBack`, with `message`
/// and the merge commit) with an intent written first, so a crash between the merge
/// and its record is settled by the next reconcile ([`settle_merge`]). `false` when
/// GitHub refused because the head moved or the PR is not mergeable (the next
/// reconcile reads it again).
async fn merge_recorded<R: Registry, G: Repo, F: Forge, S: Store>(
    deps: &Deps<'_, R, G, F, S>,
    name: &str,
    (n, sha, method): (u64, &str, MergeMethod),
    (reason, message): (&str, String),
    now: DateTime<Utc>,
) -> Result<bool, ReconcileError> {
    deps.store.update(name, &mut |s| {
        s.intend(Intent {
            pull_request: Some(n),
            ..Intent::new(IntentKind::Merge, Some(reason), message.clone(), now)
        });
    })?;
    match deps.forge.merge(&deps.forge_repo, n, method, sha).await {
        Ok(merged) => {
            let done = format!("{message} ({})", merged.sha);
            deps.store.update(name, &mut |s| {
                s.fulfil(IntentKind::Merge, Some(done.clone()));
            })?;
            Ok(true)
        }
        // The head moved after its checks were read: not merged, and the next
        // reconcile reads the new head's checks.
        Err(ForgeError::HeadMoved { .. } | ForgeError::NotMergeable { .. }) => {
            deps.store
                .update(name, &mut |s| s.abandon(IntentKind::Merge))?;
            Ok(false)
        }
        // Unknown whether it merged: the intent stays for the next reconcile to settle.
        Err(e) => Err(e.into()),
    }
}

/// Settles a label intent (its `labels`) left by a crash between opening the bump PR
/// and labelling it: the open bump PR gets the labels it lacks.
async fn settle_labels<R: Registry, G: Repo, F: Forge, S: Store>(
    deps: &Deps<'_, R, G, F, S>,
    name: &str,
    pr: &PullRequest,
    labels: &[String],
) -> Result<Option<Effect>, ReconcileError> {
    let missing: Vec<String> = labels
        .iter()
        .filter(|l| !pr.labels.contains(l))
        .cloned()
        .collect();
    if !missing.is_empty() {
        deps.forge
            .add_labels(&deps.forge_repo, pr.number, &missing)
            .await?;
    }
    deps.store
        .update(name, &mut |s| s.abandon(IntentKind::Label))?;
    Ok((!missing.is_empty()).then_some(Effect::AddLabels(missing)))
}

/// Settles a merge intent left by a crash or an error: GitHub says whether the pull
/// request was merged; if so its record is written now, else the intent ends (the
/// merge engine decides again from what it observes).
async fn settle_merge<R: Registry, G: Repo, F: Forge, S: Store>(
    deps: &Deps<'_, R, G, F, S>,
    name: &str,
    state: crate::store::PolicyState,
) -> Result<crate::store::PolicyState, ReconcileError> {
    let Some(n) = state.intent(IntentKind::Merge).and_then(|i| i.pull_request) else {
        return Ok(state);
    };
    let pr = deps.forge.mergeability(&deps.forge_repo, n).await?;
    Ok(deps.store.update(name, &mut |s| {
        if pr.merged {
            s.fulfil(IntentKind::Merge, None);
        } else {
            s.abandon(IntentKind::Merge);
        }
    })?)
}

/// The checks of `required` that have not succeeded on `sha` (none read when none
/// are required).
async fn missing_checks<R: Registry, G: Repo, F: Forge, S: Store>(
    deps: &Deps<'_, R, G, F, S>,
    sha: &str,
    required: &[String],
) -> Result<Vec<String>, ReconcileError> {
    if required.is_empty() {
        return Ok(Vec::new());
    }
    let statuses = deps.forge.combined_status(&deps.forge_repo, sha).await?;
    let runs = deps.forge.check_runs(&deps.forge_repo, sha).await?;
    let checks = checks_of(&statuses.statuses, &runs);
    let green: BTreeSet<&str> = checks
        .iter()
        .filter(|c| c.state == CheckState::Success)
        .map(|c| c.name.as_str())
        .collect();
    Ok(required
        .iter()
        .filter(|r| !green.contains(r.as_str()))
        .cloned()
        .collect())
}

/// Observes, plans and executes one reconcile of `policy`.
pub async fn reconcile<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, F, S>,
    gate: GateVerdict,
    now: DateTime<Utc>,
) -> Result<Report, ReconcileError> {
    reconcile_read(policy, deps, &GateReading::of(gate), now).await
}

/// [`reconcile`] with the whole gate reading: an automatic hold then says which
/// alerts fired (labels, summary, runbook, links), and the open bump PR gets a
/// comment saying so.
pub async fn reconcile_read<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, F, S>,
    reading: &GateReading,
    now: DateTime<Utc>,
) -> Result<Report, ReconcileError> {
    let gate = reading.verdict.clone();
    let base = scan_base(deps.repo, &deps.source, policy).await?;
    let name = policy.name();
    // Intents a crash or an error left behind are settled first, from one read of the
    // state, so their records come before what follows from them.
    let state = settle_merge(deps, name, deps.store.load(name)?).await?;
    let state = settle_push(policy, deps.store, (&base.1, &base.0.head), state, now)?;
    let labels = state.intent(IntentKind::Label).map(|i| i.labels.clone());
    let (mut rollout, rollback, held_now) = assess_rollout(
        policy,
        (deps.store, deps.workloads),
        state,
        (&base.1, &base.0.head),
        reading,
        now,
    )
    .await?;
    // A deploy or bake in progress blocks the bump; the plan reports it as the reason
    // nothing new goes out (taken out of the rollout's effects, so it is said once).
    let mut block = None;
    if rollback.is_none()
        && let Some(at) = rollout.iter().position(|e| matches!(e, Effect::Waiting(_)))
        && let Effect::Waiting(why) = rollout.remove(at)
    {
        block = Some(why);
    }
    if let Some(rb) = &rollback {
        if policy.spec.rollback.pull_request {
            rollout.extend(ensure_rollback_pr(policy, deps, rb, now).await?);
        }
        block = Some(format!("rolling back: {}", rb.reason));
    }
    let mut observed = observe_scanned(policy, deps, &gate, now, base).await?;
    observed.rollout_block = block;
    if let (Some(pr), Some(labels)) = (&observed.pr, &labels) {
        rollout.extend(settle_labels(deps, name, pr, labels).await?);
    }
    if let (Some(hold), Some(pr)) = (&held_now, &observed.pr) {
        // The label follows the hold through the plan; the comment says why. (A crash
        // right here loses only this comment: the hold and the label stand.)
        let body = if hold.automatic {
            format!(
                "autobump held this policy automatically: nothing merges until a person \
                 with write permission comments `/unhold`.\n\n{}",
                hold.reason
            )
        } else {
            format!(
                "autobump rolls this policy back, as {} asked, who holds it now: nothing \
                 merges until the hold is lifted (`/unhold`, or `autobump unhold {}`).\n\n{}",
                hold.by,
                policy.name(),
                hold.reason
            )
        };
        deps.forge
            .post_comment(&deps.forge_repo, pr.number, &body)
            .await?;
        rollout.push(Effect::Comment(body));
    }
    let mut report = execute(policy, deps, observed, gate, now).await?;
    rollout.append(&mut report.effects);
    report.effects = rollout;
    Ok(report)
}

/// Plans from what was observed and performs the effects in order.
pub async fn execute<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, F, S>,
    observed: Observed,
    gate: GateVerdict,
    now: DateTime<Utc>,
) -> Result<Report, ReconcileError> {
    let name = policy.name();
    let parts = observed.snapshot_parts;
    let snapshot = Snapshot {
        policy: name,
        spec: &policy.spec,
        hold: parts.hold.as_ref(),
        last_bump: parts.last_bump,
        bump: parts.bump,
        pr: parts.pr,
        commands: parts.commands,
        bot_login: &deps.bot_login,
        gate,
        rollout_block: observed.rollout_block.clone(),
    };
    let effects = plan::plan(&snapshot, now);
    let mut pr_number = observed.pr.as_ref().map(|p| p.number);
    let run = Run {
        policy,
        branch: pr_branch(policy)?,
        prepared: observed.prepared.as_ref(),
        bumped_rows: snapshot.bump.as_ref().map_or(0, |b| b.rows.len()),
        now,
    };
    for effect in &effects {
        apply(&run, deps, effect, &mut pr_number).await?;
    }
    Ok(Report {
        effects,
        registry_problems: observed.registry_problems,
        pr: pr_number,
    })
}

/// What one execution's effects share.
struct Run<'a> {
    policy: &'a Policy,
    branch: crate::policy::values::BranchName,
    prepared: Option<&'a PreparedBump>,
    bumped_rows: usize,
    now: DateTime<Utc>,
}

/// Performs one effect (an ensure: harmless when already true).
async fn apply<R: Registry, G: Repo, F: Forge, S: Store>(
    run: &Run<'_>,
    deps: &Deps<'_, R, G, F, S>,
    effect: &Effect,
    pr_number: &mut Option<u64>,
) -> Result<(), ReconcileError> {
    let (now, name) = (run.now, run.policy.name());
    let current = *pr_number;
    if record(run, deps.store, effect)? {
        return Ok(());
    }
    match effect {
        Effect::Comment(_) | Effect::Reply { .. } => {
            if let Some((n, body)) = effect.comment_target(current) {
                deps.forge.post_comment(&deps.forge_repo, n, body).await?;
            }
        }
        Effect::AddLabels(labels) => {
            if let Some(n) = current {
                deps.forge.add_labels(&deps.forge_repo, n, labels).await?;
            }
        }
        Effect::RemoveLabel(label) => {
            if let Some(n) = current {
                deps.forge.remove_label(&deps.forge_repo, n, label).await?;
            }
        }
        Effect::PushBranch | Effect::PushDirect => {
            if let Some(prepared) = run.prepared {
                // Remember the bump before making it: a crash or error between the push
                // and `RecordBump` must not let a second bump out within minInterval.
                deps.store.update(name, &mut |s| s.last_bump = Some(now))?;
                deps.repo.push(prepared).await?;
            }
        }
        Effect::CreatePr {
            title,
            body,
            labels,
        } => {
            *pr_number = Some(open_pr(run, deps, (title, body), labels).await?);
        }
        Effect::UpdatePr { title, body } => {
            if let Some(n) = current {
                deps.forge
                    .update_pr(
                        &deps.forge_repo,
                        n,
                        &PullRequestEdit {
                            title: Some(title.clone()),
                            body: Some(body.clone()),
                        },
                    )
                    .await?;
            }
        }
        Effect::Merge { sha, method } => {
            if let Some(n) = current {
                let method = MergeMethod::from(*method);
                let message = format!("PR #{n} merged at {sha}");
                merge_recorded(deps, name, (n, sha, method), ("Merged", message), now).await?;
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

/// Opens the bump PR and labels it (two calls on GitHub, so an intent makes a crash
/// between them settle at the next reconcile: `settle_labels`); returns its number.
async fn open_pr<R: Registry, G: Repo, F: Forge, S: Store>(
    run: &Run<'_>,
    deps: &Deps<'_, R, G, F, S>,
    (title, body): (&str, &str),
    labels: &[String],
) -> Result<u64, ReconcileError> {
    let (policy, now, name) = (run.policy, run.now, run.policy.name());
    if !labels.is_empty() {
        deps.store.update(name, &mut |s| {
            s.intend(Intent {
                labels: labels.to_vec(),
                ..Intent::new(
                    IntentKind::Label,
                    None,
                    format!("label the pull request {}", labels.join(", ")),
                    now,
                )
            });
        })?;
    }
    let created = deps
        .forge
        .create_pr(
            &deps.forge_repo,
            &NewPullRequest {
                title: title.to_owned(),
                body: body.to_owned(),
                head_branch: run.branch.to_string(),
                base_branch: policy.spec.source.branch.to_string(),
                draft: false,
            },
        )
        .await?;
    if !labels.is_empty() {
        deps.forge
            .add_labels(&deps.forge_repo, created.number, labels)
            .await?;
        deps.store
            .update(name, &mut |s| s.abandon(IntentKind::Label))?;
    }
    Ok(created.number)
}

/// Performs the effects that only change the policy's state; `true` when `effect`
/// was one of them.
fn record<S: Store>(run: &Run<'_>, store: &S, effect: &Effect) -> Result<bool, ReconcileError> {
    let (now, name) = (run.now, run.policy.name());
    match effect {
        Effect::MarkSeen(id) => {
            store.update(name, &mut |s| {
                s.see_comment(*id);
            })?;
        }
        Effect::SetHold(hold) => {
            store.update(name, &mut |s| {
                if s.hold.is_none() {
                    s.hold = Some(hold.clone());
                    s.record(now, "Held", format!("held by {}: {}", hold.by, hold.reason));
                }
            })?;
        }
        Effect::ClearHold { by } => {
            store.update(name, &mut |s| {
                if let Some(h) = s.hold.take() {
                    s.record(now, "Unheld", format!("hold by {} lifted by {by}", h.by));
                }
            })?;
        }
        Effect::RecordBump => {
            let rows = run.bumped_rows;
            store.update(name, &mut |s| {
                s.last_bump = Some(now);
                s.record(
                    now,
                    "BumpPushed",
                    format!("{rows} image versions pushed for review"),
                );
            })?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::v1alpha1::Release;
    use crate::store::{MemoryStore, PolicyState};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn release(tag: &str) -> Release {
        Release {
            summary: tag.into(),
            images: vec![ImageVersion {
                image: "gcr.io/k8s-prow/hook".into(),
                tag: tag.into(),
                digest: None,
            }],
            since: at("2026-11-23T10:00:00Z"),
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

    fn requested(hold: Option<&Hold>) -> MemoryStore {
        let store = MemoryStore::default();
        store
            .update("p", &mut |s| {
                s.hold = hold.cloned();
                s.current = Some(release("v2"));
                s.last_known_good = Some(release("v1"));
                s.rollback_request = Some(request());
            })
            .unwrap();
        store
    }

    #[test]
    fn a_requested_rollback_is_held_by_the_requester_and_consumes_the_request() {
        let store = requested(None);
        let (bad, good, r) = (release("v2"), release("v1"), request());
        let placed = hold_and_mark_bad(
            &store,
            "p",
            (&bad, &good),
            HoldBy::Request(&r),
            "rollback requested by cli:bob: p99 doubled",
            at("2026-11-23T10:06:00Z"),
        )
        .unwrap()
        .expect("a hold is placed");
        assert_eq!(
            (placed.by.as_str(), placed.automatic, placed.via.as_deref()),
            ("cli:bob", false, Some("cli"))
        );
        assert_eq!(placed.reason, "rollback from v2 requested: p99 doubled");
        let s = store.load("p").unwrap();
        assert_eq!(s.hold, Some(placed));
        assert!(s.rollback_request.is_none(), "consumed in the same update");
        assert_eq!(
            s.bad_pairs(),
            [("gcr.io/k8s-prow/hook".to_owned(), "v2".to_owned())].into()
        );
        assert_eq!(
            s.history.last().unwrap().message,
            "held by cli:bob: rollback from v2 requested: p99 doubled"
        );
    }

    #[test]
    fn a_requested_rollback_keeps_a_hold_in_force() {
        let alice = Hold {
            by: "user:alice".into(),
            since: at("2026-11-23T09:00:00Z"),
            reason: "freeze".into(),
            via: None,
            automatic: false,
        };
        let store = requested(Some(&alice));
        let (bad, good, r) = (release("v2"), release("v1"), request());
        let placed = hold_and_mark_bad(
            &store,
            "p",
            (&bad, &good),
            HoldBy::Request(&r),
            "rollback requested",
            at("2026-11-23T10:06:00Z"),
        )
        .unwrap();
        assert!(placed.is_none());
        let s = store.load("p").unwrap();
        assert_eq!(s.hold, Some(alice));
        assert!(s.rollback_request.is_none());
        assert_eq!(s.bad_pairs().len(), 1);
    }

    #[test]
    fn with_alerts_firing_a_requested_rollback_is_held_automatically() {
        let store = requested(None);
        let (bad, good) = (release("v2"), release("v1"));
        let reading = GateReading::of(GateVerdict::Firing(vec!["HookDown".into()]));
        let placed = hold_and_mark_bad(
            &store,
            "p",
            (&bad, &good),
            HoldBy::Gate(&reading),
            "rollback requested by cli:bob: p99 doubled",
            at("2026-11-23T10:06:00Z"),
        )
        .unwrap()
        .expect("a hold is placed");
        assert_eq!(
            (placed.by.as_str(), placed.automatic),
            ("alert:HookDown", true)
        );
        let s = store.load("p").unwrap();
        assert!(s.rollback_request.is_none(), "fulfilled by this rollback");
        assert_eq!(s.bad_pairs().len(), 1);
    }

    #[test]
    fn a_request_applies_only_when_the_deployed_version_is_not_the_known_good() {
        let mut s = PolicyState {
            rollback_request: Some(request()),
            last_known_good: Some(release("v1")),
            ..PolicyState::default()
        };
        assert!(requested_rollback(&s, &release("v2")).is_some());
        assert!(requested_rollback(&s, &release("v1")).is_none());
        s.last_known_good = None;
        assert!(requested_rollback(&s, &release("v2")).is_none());
    }
}
