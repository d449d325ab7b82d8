//! The reads of one reconcile (I/O, no writes): the references on the base branch,
//! the versions the registries offer and the bump commit they would make, the open
//! autobump PR with its checks, mergeability, diff and new commands, the deployed
//! release's rollout, and the rollback PR. What to read is decided in `core` where it
//! depends on the policy's state ([`plan::merge_may_follow`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Deps, ForgeAccess, ReconcileError};
use crate::cluster::DynWorkloads;
use crate::core::commands;
use crate::core::gate::GateVerdict;
use crate::core::merge::{Check, DiffVerdict, FileChange, PrView, checks_pass};
use crate::core::plan::{self, CommandSeen, PlannedBump, PrSnapshot, Promoted};
use crate::core::pr::Row;
use crate::core::promotion::{self, Admission};
use crate::core::reference::ImageRef;
use crate::core::rewrite::{DigestTag, ImageSelector, Plan, SeriesRule, Target};
use crate::core::watch::{self, RollbackTo, RolloutSeen};
use crate::forge::{Forge, PullRequest};
use crate::policy::Policy;
use crate::policy::v1alpha1::{Hold, Release};
use crate::policy::values::BranchName;
use crate::registry::Registry;
use crate::repo::{BumpRequest, Delivery, PreparedBump, Repo, Scanned, Source};
use crate::resolve::{Resolved, Resolver};
use crate::store::{PolicyState, Store};

/// The base branch's head and the image references in the policy's files there.
pub(super) async fn scan_base<G: Repo>(
    repo: &G,
    source: &Source,
    policy: &Policy,
) -> Result<(Scanned, Vec<ImageRef>), ReconcileError> {
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

/// What the registries call for: the bump targets, the tags the digests of
/// digest-only references belong to, each image's source repository, and what
/// could not be resolved.
struct Resolution {
    targets: Vec<Target>,
    /// Each target as `(canonical image, tag)`.
    moved: Vec<(String, String)>,
    digest_tags: Vec<DigestTag>,
    source_repos: BTreeMap<String, String>,
    problems: Vec<String>,
}

async fn resolve_targets<R: Registry>(
    policy: &Policy,
    resolver: &Resolver<R>,
    references: &[ImageRef],
    admission: &Admission,
    now: DateTime<Utc>,
) -> Resolution {
    let mut targets = Vec::new();
    let mut moved = Vec::new();
    let mut problems = Vec::new();
    let mut source_repos = BTreeMap::new();
    let mut digest_tags = Vec::new();
    for image in &policy.spec.images {
        for r in resolver
            .resolve_admitted(image, references, admission, now)
            .await
        {
            digest_tags.extend(r.digest_tags);
            match r.outcome {
                Resolved::Bump { tag, digest } => {
                    if let Some(why) = digest
                        .as_deref()
                        .and_then(|d| admission.digest_problem(&r.canonical, &tag, d))
                    {
                        problems.push(why);
                        continue;
                    }
                    if let Some(repo) = &image.source_repo {
                        source_repos.insert(r.image.clone(), repo.to_string());
                    }
                    moved.push((r.canonical.clone(), tag.clone()));
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
    Resolution {
        targets,
        moved,
        digest_tags,
        source_repos,
        problems,
    }
}

/// A bump (or rollback) of `policy`'s files with `plan`.
fn bump_request(
    policy: &Policy,
    source: &Source,
    plan: Plan,
    delivery: Delivery,
    rollback: Option<String>,
    promoted: Option<(String, String)>,
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
        promoted,
    }
}

/// The image moves of a prepared bump, one row per image and version pair (a
/// digest-only reference's row names the tags its digests belong to).
pub(super) fn rows_of(prepared: &PreparedBump) -> Vec<Row> {
    crate::core::pr::rows(prepared.commit.iter().flat_map(|c| &c.changes))
}

/// The bump the registries call for: the commit it would make on `delivery` (nothing
/// pushed; `None` when nothing moves), its rows, and what could not be resolved.
pub(super) async fn bump<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, S, F>,
    references: &[ImageRef],
    (admission, upstream): (&Admission, Option<&Upstream>),
    delivery: Delivery,
    now: DateTime<Utc>,
) -> Result<(Option<PreparedBump>, Option<PlannedBump>, Vec<String>), ReconcileError> {
    let Resolution {
        targets,
        moved,
        digest_tags,
        source_repos,
        problems,
    } = resolve_targets(policy, deps.resolver, references, admission, now).await;
    if targets.is_empty() {
        return Ok((None, None, problems));
    }
    let promoted = upstream.map(|u| Promoted {
        from: u.name.clone(),
        evidence: promotion::evidence(&u.name, &promotion::cite(&u.state, &moved)),
    });
    let plan = Plan::new(&targets)
        .map_err(|e| ReconcileError::Policy(e.to_string()))?
        .with_digest_tags(digest_tags);
    let prepared = deps
        .repo
        .prepare_bump(
            bump_request(
                policy,
                &deps.source,
                plan,
                delivery,
                None,
                promoted
                    .as_ref()
                    .map(|p| (p.from.clone(), p.evidence.clone())),
            ),
            now,
        )
        .await?;
    let prepared = Some(prepared).filter(|p| p.commit.is_some());
    let bump = prepared.as_ref().map(|p| PlannedBump {
        rows: rows_of(p),
        source_repos,
        promoted,
    });
    Ok((prepared, bump, problems))
}

/// The upstream of a policy with `promotion.from`, as read in this reconcile.
pub(super) struct Upstream {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: PolicyState,
}

/// What `policy` may be offered, and its upstream (with `promotion.from`): `state`'s
/// bad versions, and the upstream's proven versions not bad there or here.
pub(super) fn admission<S: Store>(
    policy: &Policy,
    store: &S,
    state: &PolicyState,
) -> Result<(Admission, Option<Box<Upstream>>), ReconcileError> {
    let Some(from) = policy.spec.promotion.as_ref().map(|p| p.from.to_string()) else {
        return Ok((Admission::own(state), None));
    };
    let upstream = store.load(&from)?;
    Ok((
        Admission::promoted(state, &upstream),
        // Boxed: it is held across the reconcile's awaits.
        Some(Box::new(Upstream {
            name: from,
            state: upstream,
        })),
    ))
}

/// The open autobump PR on `branch`, as the planner sees it, and its commands.
pub(super) struct PrObserved {
    pub pr: Option<PullRequest>,
    pub snapshot: Option<PrSnapshot>,
    pub commands: Vec<CommandSeen>,
}

/// What the PR half reads: the open PR, its comments and the commands delivered by
/// webhook on the policy's other PRs, and — when a merge may follow — its checks and
/// mergeability.
#[allow(clippy::too_many_arguments)] // each is one thing the reads depend on
pub(super) async fn pull_request<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, S, F>,
    f: &ForgeAccess<'_, F>,
    (branch, base_head): (&BranchName, &str),
    (hold, seen, admission): (Option<&Hold>, &[u64], &Admission),
    prepared: Option<&PreparedBump>,
    gate: &GateVerdict,
    now: DateTime<Utc>,
) -> Result<PrObserved, ReconcileError> {
    let pr = f
        .forge
        .find_open_pr(&f.repo, branch.as_str(), &f.bot_login)
        .await?;
    // The open PR's comments (relaxed: webhooks may prove them unchanged), and the
    // commands delivered by webhook on the policy's other PRs, closed ones included.
    let comments = match &pr {
        Some(pr) => f.forge.list_comments_relaxed(&f.repo, pr.number).await?,
        None => Vec::new(),
    };
    let (mut commands, retests) = comments_of(policy, f, pr.as_ref(), &comments, seen).await?;
    let snapshot = match &pr {
        None => None,
        Some(pr) => {
            let read_checks = plan::merge_may_follow(
                &policy.spec,
                hold,
                &pr.labels,
                !commands.is_empty(),
                gate,
                now,
            );
            let mut snapshot = pr_snapshot(
                policy,
                deps,
                f,
                pr,
                prepared,
                (base_head, branch),
                (read_checks, admission),
            )
            .await?;
            if snapshot.view.mergeable.is_some() && f.forge.answers_from_memory() {
                // A merge may follow, and the comments may have come from memory: read
                // them from GitHub (a lost /hold delivery must not let a merge through).
                let fresh = f.forge.list_comments(&f.repo, pr.number, None).await?;
                commands = comments_of(policy, f, Some(pr), &fresh, seen).await?.0;
            }
            snapshot.view.retests_posted = retests;
            Some(snapshot)
        }
    };
    Ok(PrObserved {
        pr,
        snapshot,
        commands,
    })
}

async fn pr_snapshot<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, S, F>,
    f: &ForgeAccess<'_, F>,
    pr: &PullRequest,
    prepared: Option<&PreparedBump>,
    (base_head, branch): (&str, &BranchName),
    (read_checks, admission): (bool, &Admission),
) -> Result<PrSnapshot, ReconcileError> {
    let (head, mergeable, checks_sha, checks) = if read_checks {
        checks(policy, f, pr).await?
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
        verify_reference_only(&files, policy, deps.resolver, admission)
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
async fn checks<F: Forge>(
    policy: &Policy,
    f: &ForgeAccess<'_, F>,
    pr: &PullRequest,
) -> Result<(String, Option<bool>, String, Vec<Check>), ReconcileError> {
    let repo = &f.repo;
    let required = &policy.spec.merge.required_checks;
    let sha = pr.head_sha.clone();
    let mut checks = f.forge.checks_relaxed(repo, &sha).await?;
    if checks_pass(&checks, required) && f.forge.answers_from_memory() {
        checks = f.forge.checks(repo, &sha).await?;
    }
    if !checks_pass(&checks, required) {
        return Ok((sha.clone(), None, sha, checks));
    }
    let mergeability = f.forge.mergeability(repo, pr.number).await?;
    Ok((mergeability.head_sha, mergeability.mergeable, sha, checks))
}

/// The checks read on `sha`, for the rollback PR (none read when none are required).
pub(super) async fn checks_on<F: Forge>(
    f: &ForgeAccess<'_, F>,
    sha: &str,
    required: &[String],
) -> Result<Vec<Check>, ReconcileError> {
    if required.is_empty() {
        return Ok(Vec::new());
    }
    Ok(f.forge.checks(&f.repo, sha).await?)
}

/// A PR that does not carry the planned tree may be an older bump (fine: it may merge,
/// and is refreshed in the next window), a bump whose versions cannot be verified any
/// more (never merged; refreshed), or carry other changes (never merged; held): see
/// [`crate::core::merge::verify_image_moves`]. A version checks out when the tag list
/// the registry gave in this reconcile has its tag, `admission` admits it (never
/// rolled back; with promotion, proven upstream), and a digest it pins is the one the resolver read
/// for that tag (so a PR cannot pin an image the tag never had).
fn verify_reference_only<R: Registry>(
    files: &[crate::repo::ChangedFile],
    policy: &Policy,
    resolver: &Resolver<R>,
    admission: &Admission,
) -> DiffVerdict {
    crate::core::merge::verify_image_moves(&policy.spec, &file_changes(files), &|r| {
        version_problem(resolver, admission, r)
    })
}

/// Why the version `r` names cannot be trusted now, if it cannot.
fn version_problem<R: Registry>(
    resolver: &Resolver<R>,
    admission: &Admission,
    r: &ImageRef,
) -> Option<String> {
    let canonical = r.canonical_repository();
    let Some(tag) = r.tag.as_deref() else {
        return Some("no tag".into());
    };
    let key = (canonical.clone(), tag.to_owned());
    if admission.bad.contains(&key) {
        return Some("this version was rolled back before (here or upstream)".into());
    }
    if admission.proven.as_ref().is_some_and(|p| !p.contains(&key)) {
        return Some("this version was not proven upstream (promotion.from)".into());
    }
    if !resolver.registry_has(&canonical, tag) {
        return Some("the registry does not list this tag".into());
    }
    let digest = r.digest.as_deref()?;
    if let Some(why) = admission.digest_problem(&canonical, tag, digest) {
        return Some(why);
    }
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
async fn comments_of<F: Forge>(
    policy: &Policy,
    f: &ForgeAccess<'_, F>,
    open: Option<&PullRequest>,
    comments: &[crate::forge::Comment],
    seen: &[u64],
) -> Result<(Vec<CommandSeen>, u32), ReconcileError> {
    let retest = policy.spec.merge.retest.as_ref().map(|r| r.comment.trim());
    let is_bot = |login: &str| login.eq_ignore_ascii_case(&f.bot_login);
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
    for d in f.forge.delivered_commands(&f.repo, policy.name()) {
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
        let permission = f.forge.permission(&f.repo, &c.author).await?;
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

/// The rollout of `current` in the workloads named in `rollout.workloads`: they decide
/// when it counts as deployed. Without any, a version is deployed once on the base
/// branch (plus `deployDelay`); with some but no cluster access, it never is (fail
/// closed: no promotion from an unobserved rollout). A cluster that cannot be read is
/// `Unobservable`, with the error kept for the reconcile to fail with if the decision
/// needs the rollout.
pub(super) async fn rollout(
    policy: &Policy,
    workloads: Option<&dyn DynWorkloads>,
    current: &Release,
) -> (RolloutSeen, Option<crate::cluster::ClusterError>) {
    use crate::core::rollout::RolloutState;
    let specs = watch::workload_specs(&policy.spec);
    if specs.is_empty() {
        return (RolloutSeen::Observed(RolloutState::Complete, None), None);
    }
    let Some(cluster) = workloads else {
        return (
            RolloutSeen::Observed(
                RolloutState::Progressing,
                Some("rollout.workloads is set but autobump has no cluster access".into()),
            ),
            None,
        );
    };
    match cluster.observe_boxed(specs, current).await {
        Ok(observed) => (
            RolloutSeen::Observed(observed.state, Some(observed.detail)),
            None,
        ),
        Err(e) => (RolloutSeen::Unobservable(e.to_string()), Some(e)),
    }
}

/// The rollback commit on the current base head, or `None` when the base already
/// carries the known-good versions.
pub(super) async fn rollback_commit<R: Registry, G: Repo, F: Forge, S: Store>(
    policy: &Policy,
    deps: &Deps<'_, R, G, S, F>,
    rb: &RollbackTo,
    delivery: Delivery,
    now: DateTime<Utc>,
) -> Result<Option<PreparedBump>, ReconcileError> {
    let targets = watch::rollback_targets(&policy.spec, rb);
    if targets.is_empty() {
        return Ok(None);
    }
    let plan = Plan::new(&targets).map_err(|e| ReconcileError::Policy(e.to_string()))?;
    let prepared = deps
        .repo
        .prepare_bump(
            bump_request(
                policy,
                &deps.source,
                plan,
                delivery,
                Some(rb.reason.clone()),
                None,
            ),
            now,
        )
        .await?;
    Ok(prepared.commit.is_some().then_some(prepared))
}

/// The rollback PR branch's head and what it changes against its merge base with
/// the base branch, when the branch exists but is not what a rollback made on the
/// base now would push (`prepared`): for [`watch::rollback_branch_serves`].
pub(super) async fn rollback_branch_changes<R: Registry, G: Repo, F: Forge, S: Store>(
    deps: &Deps<'_, R, G, S, F>,
    branch: &BranchName,
    prepared: &PreparedBump,
) -> Result<Option<(String, Vec<crate::repo::ChangedFile>)>, ReconcileError> {
    let Some(head) = prepared
        .branch_head
        .as_deref()
        .filter(|_| !prepared.up_to_date)
    else {
        return Ok(None);
    };
    let files = deps
        .repo
        .changed_files(&deps.source, Some(branch), &prepared.base, head)
        .await?;
    Ok(Some((head.to_owned(), files)))
}

/// The texts of `files` as the pure checks read them.
pub(super) fn file_changes(files: &[crate::repo::ChangedFile]) -> Vec<FileChange<'_>> {
    files
        .iter()
        .map(|f| FileChange {
            path: &f.path,
            old: f.old_text(),
            new: f.new_text(),
        })
        .collect()
}
