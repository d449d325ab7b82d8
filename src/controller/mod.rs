//! One reconcile of one policy: observe → snapshot → plan → execute, the same for
//! pull-request and direct-push policies (the delivery mode is data).
//!
//! Every decision is made in `core` from what was observed ([`crate::core::watch`]
//! for the deployed release, [`crate::core::plan`] for commands, bumps and merges);
//! [`observe`] only reads, and the executor ([`execute`]) only performs what was
//! decided and is the only writer of the store. One reconcile:
//! 1. intents a crash or an error left behind are settled, from one read of the state,
//!    so their records come before what follows from them;
//! 2. the deployed release is tracked, its rollout observed, and its bake, promotion
//!    or rollback decided and carried out (one rollout at a time: while it deploys,
//!    bakes or rolls back, nothing new goes out);
//! 3. the bump the registries call for and (pull requests) the open PR with its
//!    checks and commands are read, planned and executed.

pub mod engine;
pub mod standalone;

mod execute;
mod observe;

use chrono::{DateTime, Utc};

use crate::cluster::{ClusterError, DynWorkloads};
use crate::core::change::StateChange;
use crate::core::gate::{GateReading, GateVerdict};
use crate::core::plan::{self, CommandSeen, Effect, Mode, PlannedBump, PrSnapshot, Snapshot};
use crate::core::watch::{self, Block, Recorded, RollbackTo, Watch};
use crate::forge::{Forge, ForgeError, GitHub, PullRequest, RepoName};
use crate::policy::Policy;
use crate::policy::v1alpha1::{Hold, IntentKind};
use crate::policy::values::BranchName;
use crate::registry::Registry;
use crate::repo::{Delivery, PreparedBump, Repo, RepoError, Source};
use crate::resolve::Resolver;
use crate::store::{PolicyState, Store, StoreError};
use execute::{Executor, Run};

/// What a reconcile needs: the adapters, and where the policy's repository is.
pub struct Deps<'a, R, G, S, F = GitHub> {
    /// Registry resolution (with its caches).
    pub resolver: &'a Resolver<R>,
    /// The GitOps repository.
    pub repo: &'a G,
    /// Durable state.
    pub store: &'a S,
    /// Where the repository is and how to reach it.
    pub source: Source,
    /// The cluster, for policies with `rollout.workloads` (`None`: no cluster access;
    /// such policies then never count a version as deployed, failing closed).
    pub workloads: Option<&'a dyn DynWorkloads>,
    /// The forge hosting the repository: needed by pull-request policies, unused by
    /// direct-push ones.
    pub forge: Option<ForgeAccess<'a, F>>,
}

/// The forge, the repository on it, and the account autobump's PRs come from.
pub struct ForgeAccess<'a, F> {
    /// The forge.
    pub forge: &'a F,
    /// The repository on the forge.
    pub repo: RepoName,
    /// The account autobump's PRs come from.
    pub bot_login: String,
}

impl<'a, F: Forge> ForgeAccess<'a, F> {
    /// What `policy`'s flow needs of the forge: nothing for a direct push; for pull
    /// requests `forge`, the repository `source.repo` names on it, and the bot account
    /// (`pullRequest.botLogin`, else `default_bot`).
    ///
    /// # Errors
    /// Why a pull-request policy cannot run here (it is skipped, not failed): no
    /// forge, a repository the forge does not host, no bot account.
    pub fn for_policy(
        policy: &Policy,
        forge: Option<&'a F>,
        default_bot: Option<&str>,
    ) -> Result<Option<Self>, String> {
        if Mode::of(&policy.spec) == Mode::DirectPush {
            return Ok(None);
        }
        let forge = forge.ok_or_else(|| {
            "pull-request policies need forge access (GitHub: GITHUB_TOKEN, or a GitHub \
                 App: --github-app-id and --github-app-key; GitLab: GITLAB_TOKEN)"
                .to_owned()
        })?;
        let repo = forge.repository(policy.spec.source.repo.as_str(), policy.spec.source.forge)?;
        let bot_login = policy
            .spec
            .pull_request
            .as_ref()
            .and_then(|pr| pr.bot_login.clone())
            .or_else(|| default_bot.map(str::to_owned))
            .ok_or_else(|| {
                "name the bot account (pullRequest.botLogin or --bot-login)".to_owned()
            })?;
        Ok(Some(Self {
            forge,
            repo,
            bot_login,
        }))
    }

    fn borrowed(&self) -> ForgeAccess<'_, F> {
        ForgeAccess {
            forge: self.forge,
            repo: self.repo.clone(),
            bot_login: self.bot_login.clone(),
        }
    }
}

impl<R, G, S, F: Forge> Deps<'_, R, G, S, F> {
    /// The forge, which a pull-request policy cannot do without.
    fn forge_access(&self) -> Result<ForgeAccess<'_, F>, ReconcileError> {
        self.forge
            .as_ref()
            .map(ForgeAccess::borrowed)
            .ok_or_else(|| {
                ReconcileError::Policy(
                    "a pull-request policy needs a forge (GitHub token and repository)".into(),
                )
            })
    }
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
    /// The policy's own credentials (`credentials:`) cannot be read or used.
    #[error("credentials: {0}")]
    Credentials(#[from] crate::credentials::CredentialsError),
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
            Self::Credentials(e) => e.is_retryable(),
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
            Self::Credentials(e) => e.metric_label(),
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

/// Everything observed for the bump-and-merge half, kept for the execute step.
pub struct Observed {
    delivery: Mode,
    branch: Option<BranchName>,
    hold: Option<Hold>,
    last_bump: Option<DateTime<Utc>>,
    bump: Option<PlannedBump>,
    pr_snapshot: Option<PrSnapshot>,
    commands: Vec<CommandSeen>,
    rollout_block: Option<Block>,
    prepared: Option<PreparedBump>,
    pr: Option<PullRequest>,
    registry_problems: Vec<String>,
}

/// The branch of the policy's bump PR (`None` for direct push).
fn pr_branch(policy: &Policy) -> Result<Option<BranchName>, ReconcileError> {
    if Mode::of(&policy.spec) == Mode::DirectPush {
        return Ok(None);
    }
    let configured = policy
        .spec
        .pull_request
        .as_ref()
        .and_then(|p| p.branch.clone());
    match configured {
        Some(b) => Ok(Some(b)),
        None => format!("autobump-{}", policy.name())
            .parse()
            .map(Some)
            .map_err(ReconcileError::Policy),
    }
}

/// Reads the world for the bump-and-merge half of `policy` (the deployed release is
/// not watched: see [`reconcile`]).
pub async fn observe<R: Registry, G: Repo, S: Store, F: Forge>(
    policy: &Policy,
    deps: &Deps<'_, R, G, S, F>,
    gate: &GateVerdict,
    now: DateTime<Utc>,
) -> Result<Observed, ReconcileError> {
    let (scanned, references) = observe::scan_base(deps.repo, &deps.source, policy).await?;
    let state = deps.store.load(policy.name())?;
    observe_bump(
        policy,
        deps,
        (&scanned.head, &references),
        &state,
        None,
        gate,
        now,
    )
    .await
}

async fn observe_bump<R: Registry, G: Repo, S: Store, F: Forge>(
    policy: &Policy,
    deps: &Deps<'_, R, G, S, F>,
    (head, references): (&str, &[crate::core::reference::ImageRef]),
    state: &PolicyState,
    block: Option<Block>,
    gate: &GateVerdict,
    now: DateTime<Utc>,
) -> Result<Observed, ReconcileError> {
    let delivery = Mode::of(&policy.spec);
    let branch = pr_branch(policy)?;
    let (admission, upstream) = observe::admission(policy, deps.store, state)?;
    let promotion = (&admission, upstream.as_deref());
    let mut observed = Observed {
        delivery,
        branch: branch.clone(),
        hold: state.hold.clone(),
        last_bump: state.last_bump,
        bump: None,
        pr_snapshot: None,
        commands: Vec::new(),
        rollout_block: block,
        prepared: None,
        pr: None,
        registry_problems: Vec::new(),
    };
    let Some(branch) = branch else {
        // A direct push that waits for a rollout has nothing to read.
        if observed.rollout_block.is_none() {
            let (prepared, bump, problems) = observe::bump(
                policy,
                deps,
                references,
                promotion,
                Delivery::DirectPush,
                now,
            )
            .await?;
            (observed.prepared, observed.bump, observed.registry_problems) =
                (prepared, bump, problems);
        }
        return Ok(observed);
    };
    let f = deps.forge_access()?;
    let delivery = Delivery::PullRequest {
        branch: branch.clone(),
    };
    let (prepared, bump, problems) =
        observe::bump(policy, deps, references, promotion, delivery, now).await?;
    let pr = observe::pull_request(
        policy,
        deps,
        &f,
        (&branch, head),
        (state.hold.as_ref(), &state.seen_comments, &admission),
        prepared.as_ref(),
        gate,
        now,
    )
    .await?;
    (observed.prepared, observed.bump, observed.registry_problems) = (prepared, bump, problems);
    (observed.pr, observed.pr_snapshot, observed.commands) = (pr.pr, pr.snapshot, pr.commands);
    Ok(observed)
}

/// Observes, plans and executes one reconcile of `policy`.
pub async fn reconcile<R: Registry, G: Repo, S: Store, F: Forge>(
    policy: &Policy,
    deps: &Deps<'_, R, G, S, F>,
    gate: GateVerdict,
    now: DateTime<Utc>,
) -> Result<Report, ReconcileError> {
    reconcile_read(policy, deps, &GateReading::of(gate), now).await
}

/// [`reconcile`] with the whole gate reading: an automatic hold then says which
/// alerts fired (labels, summary, runbook, links), and the open bump PR gets a
/// comment saying so.
pub async fn reconcile_read<R: Registry, G: Repo, S: Store, F: Forge>(
    policy: &Policy,
    deps: &Deps<'_, R, G, S, F>,
    reading: &GateReading,
    now: DateTime<Utc>,
) -> Result<Report, ReconcileError> {
    let x = Executor { policy, deps, now };
    let delivery = Mode::of(&policy.spec);
    let name = policy.name();
    let (scanned, references) = observe::scan_base(deps.repo, &deps.source, policy).await?;
    let deployed = watch::deployed_release(&policy.spec, &references, &scanned.head, now);

    // 1. Intents left behind: the forge says whether a recorded merge happened; a
    //    push's versions on the branch say it landed.
    let state = deps.store.load(name)?;
    let mut settle = Vec::new();
    // (A direct-push policy has no forge: a merge intent left from when it used pull
    // requests stays as it is, as it always did.)
    if let (Some(n), Some(f)) = (
        state.intent(IntentKind::Merge).and_then(|i| i.pull_request),
        deps.forge.as_ref(),
    ) {
        let merged = f.forge.mergeability(&f.repo, n).await?.merged;
        settle.push(if merged {
            StateChange::Fulfil(IntentKind::Merge, None)
        } else {
            StateChange::Abandon(IntentKind::Merge)
        });
    }
    if state
        .intent(IntentKind::Push)
        .is_some_and(|i| watch::push_landed(i, deployed.as_ref()))
    {
        settle.push(StateChange::Fulfil(IntentKind::Push, None));
    }
    let (state, _) = x.write(state, &settle)?;
    let labels = state.intent(IntentKind::Label).map(|i| i.labels.clone());

    // 2. The deployed release.
    let (mut effects, block, rollback, held_now, state) =
        watch_deployed(&x, deployed, state, reading).await?;
    if let Some(rb) = &rollback {
        effects.extend(x.roll_back(rb, delivery).await?);
    }

    // 3. The bump, and the PR.
    let observed = observe_bump(
        policy,
        deps,
        (&scanned.head, &references),
        &state,
        block,
        &reading.verdict,
        now,
    )
    .await?;
    if let (Some(pr), Some(labels)) = (&observed.pr, &labels) {
        let f = deps.forge_access()?;
        effects.extend(x.settle_labels(&f, pr, labels).await?);
    }
    if let (Some(hold), Some(pr)) = (&held_now, &observed.pr) {
        // The label follows the hold through the plan; the comment says why. (A crash
        // right here loses only this comment: the hold and the label stand.)
        let body = watch::hold_comment(name, hold);
        let f = deps.forge_access()?;
        f.forge.post_comment(&f.repo, pr.number, &body).await?;
        effects.push(Effect::Comment(body));
    }
    let mut report = execute(policy, deps, observed, reading.verdict.clone(), now).await?;
    effects.append(&mut report.effects);
    report.effects = effects;
    Ok(report)
}

/// What watching the deployed release did: the effects to report, what blocks the
/// next bump, the rollback to deliver, the hold placed just now, and the state after.
type Watched = (
    Vec<Effect>,
    Option<Block>,
    Option<RollbackTo>,
    Option<Hold>,
    PolicyState,
);

/// Tracks the deployed release, observes its rollout, and carries out what
/// [`watch::assess`] decides (its state changes, and the cluster patch).
async fn watch_deployed<R: Registry, G: Repo, S: Store, F: Forge>(
    x: &Executor<'_, '_, R, G, S, F>,
    deployed: Option<crate::policy::v1alpha1::Release>,
    state: PolicyState,
    reading: &GateReading,
) -> Result<Watched, ReconcileError> {
    let (policy, now) = (x.policy, x.now);
    let bad = state.bad_pairs();
    let tracked = watch::track(
        &policy.spec,
        deployed,
        &Recorded {
            current: state.current.as_ref(),
            last_known_good: state.last_known_good.as_ref(),
            bake: state.bake.as_ref(),
            bad: &bad,
            rollback_request: state.rollback_request.as_ref(),
            patch_intent: None,
        },
    );
    let Some(tracked) = tracked else {
        return Ok((Vec::new(), None, None, None, state));
    };
    let (state, _) = x.write(state, &tracked.changes)?;
    let (seen, error) = observe::rollout(policy, x.deps.workloads, &tracked.current).await;
    let w = Watch {
        spec: &policy.spec,
        current: &tracked.current,
        recorded: Recorded {
            current: state.current.as_ref(),
            last_known_good: state.last_known_good.as_ref(),
            bake: state.bake.as_ref(),
            bad: &bad,
            rollback_request: tracked.request.as_ref(),
            patch_intent: state.intent(IntentKind::Patch).map(|i| i.images.as_slice()),
        },
        rollout: seen,
        reading,
        cluster_access: x.deps.workloads.is_some(),
    };
    let Some(assessment) = watch::assess(&w, now) else {
        return Err(error.map_or_else(
            || ReconcileError::Policy("the rollout could not be observed".into()),
            ReconcileError::Cluster,
        ));
    };
    if let Some(e) = &error {
        tracing::warn!(policy = policy.name(), error = %e, "the rollout cannot be observed; deciding the rollback without it");
    }
    let (state, placed) = x.write(state, &assessment.changes)?;
    let mut effects = assessment.effects;
    if let Some(patch) = &assessment.patch {
        effects.extend(x.patch(patch).await?);
    }
    Ok((
        effects,
        assessment.block,
        assessment.rollback,
        placed,
        state,
    ))
}

/// Plans from what was observed and performs the effects in order.
pub async fn execute<R: Registry, G: Repo, S: Store, F: Forge>(
    policy: &Policy,
    deps: &Deps<'_, R, G, S, F>,
    observed: Observed,
    gate: GateVerdict,
    now: DateTime<Utc>,
) -> Result<Report, ReconcileError> {
    let bot_login = deps
        .forge
        .as_ref()
        .map_or_else(String::new, |f| f.bot_login.clone());
    let snapshot = Snapshot {
        policy: policy.name(),
        spec: &policy.spec,
        hold: observed.hold.as_ref(),
        last_bump: observed.last_bump,
        bump: observed.bump,
        pr: observed.pr_snapshot,
        commands: observed.commands,
        bot_login: &bot_login,
        gate,
        rollout_block: observed.rollout_block,
        delivery: observed.delivery,
    };
    let effects = plan::plan(&snapshot, now);
    let mut pr_number = observed.pr.as_ref().map(|p| p.number);
    let run = Run {
        delivery: observed.delivery,
        branch: observed.branch.as_ref(),
        prepared: observed.prepared.as_ref(),
        bumped_rows: snapshot.bump.as_ref().map_or(0, |b| b.rows.len()),
        promoted_from: snapshot
            .bump
            .as_ref()
            .and_then(|b| b.promoted.as_ref())
            .map(|p| p.from.as_str()),
    };
    let x = Executor { policy, deps, now };
    for effect in &effects {
        x.apply(&run, effect, &mut pr_number).await?;
    }
    Ok(Report {
        effects,
        registry_problems: observed.registry_problems,
        pr: pr_number,
    })
}
