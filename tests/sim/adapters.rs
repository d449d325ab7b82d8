//! autobump's adapters, simulated: each implements the real trait (`Registry`, `Repo`,
//! `Forge`, `Store`, `AlertSource`) over the shared [`World`], asks the fault injector
//! before touching it, and behaves like the real service where the controller could
//! notice (GitHub's 409/405/422 answers, mergeability still being computed, forced
//! pushes only when the tree differs, direct pushes re-applied after a lost race).
//!
//! They keep no state of their own: a restart of autobump drops them with the
//! resolver's caches, and only the world survives.

use std::future::{Future, ready};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use autobump::alerts::{Alert, AlertSource, AlertState, AlertsError, SourceKind};
use autobump::clock::Clock;
use autobump::core::merge::CheckState;
use autobump::core::reference::ImageRef;
use autobump::forge::{
    ChangedFile as ForgeFile, Check, Comment, FileStatus, Forge, ForgeError, ForgeKind,
    MergeMethod, Mergeability, MergeableState, Merged, NewPullRequest, PIPELINE_CHECK, Permission,
    PullRequest, PullRequestEdit, RepoName, access_level_of, permission_of_access_level,
};
use autobump::notify::{Deliver, Delivered, Notification, NotifyError};
use autobump::policy::v1alpha1::NotifySpec;
use autobump::policy::v1alpha1::{GateSpec, RewriteMode};
use autobump::policy::values::{BranchName, Glob};
use autobump::registry::{Registry, RegistryError};
use autobump::repo::{
    BumpCommit, BumpRequest, ChangedFile, Delivery, Fetched, FileVersion, PreparedBump, Pushed,
    Repo, RepoError, Scanned, Source, commit_message,
};
use autobump::store::{PolicyState, Store, StoreError};
use chrono::{DateTime, Utc};

use crate::invariants;
use crate::world::{Admit, BOT, Files, MAIN, Pr, Tree, World, Writer, hash_hex, merge_trees};

/// The world, shared by the adapters and the driver.
pub type Shared = Arc<Mutex<World>>;

/// Locks the world (a panic elsewhere does not poison it for the report).
pub fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The simulated registry.
pub struct SimRegistry(pub Shared);

fn registry_error(image: &ImageRef, retryable: bool) -> RegistryError {
    let (registry, image) = (image.registry().to_owned(), image.canonical_repository());
    if retryable {
        RegistryError::Server {
            registry,
            image,
            status: 503,
            attempts: 3,
        }
    } else {
        RegistryError::Unauthorized {
            registry,
            image,
            detail: "injected".into(),
        }
    }
}

impl SimRegistry {
    fn tags_now(&self, image: &ImageRef) -> Result<Vec<String>, RegistryError> {
        let mut w = lock(&self.0);
        if let Admit::Fail { retryable } = w.admit("registry.tags", false) {
            return Err(registry_error(image, retryable));
        }
        let repo = image.canonical_repository();
        match w.registry.repos.get(&repo) {
            Some(tags) => Ok(tags.iter().map(|t| t.tag.clone()).collect()),
            None => Err(RegistryError::NotFound {
                registry: image.registry().to_owned(),
                image: repo,
                what: "tags".into(),
            }),
        }
    }

    fn created_now(
        &self,
        image: &ImageRef,
        tag: &str,
    ) -> Result<Option<DateTime<Utc>>, RegistryError> {
        let mut w = lock(&self.0);
        if let Admit::Fail { retryable } = w.admit("registry.created", false) {
            return Err(registry_error(image, retryable));
        }
        let repo = image.canonical_repository();
        w.registry
            .repos
            .get(&repo)
            .and_then(|tags| tags.iter().find(|t| t.tag == tag))
            .map(|t| Some(t.created))
            .ok_or_else(|| RegistryError::NotFound {
                registry: image.registry().to_owned(),
                image: repo,
                what: format!("manifest {tag}"),
            })
    }
}

impl Registry for SimRegistry {
    fn tags(
        &self,
        image: &ImageRef,
    ) -> impl Future<Output = Result<Vec<String>, RegistryError>> + Send {
        ready(self.tags_now(image))
    }

    fn digest(
        &self,
        image: &ImageRef,
        tag: &str,
    ) -> impl Future<Output = Result<String, RegistryError>> + Send {
        let result = self.created_now(image, tag).and_then(|_| {
            let w = lock(&self.0);
            let repo = image.canonical_repository();
            w.registry
                .repos
                .get(&repo)
                .and_then(|tags| tags.iter().find(|t| t.tag == tag))
                .map(|t| crate::world::digest_of(&repo, tag, t.generation))
                .ok_or_else(|| RegistryError::NotFound {
                    registry: image.registry().to_owned(),
                    image: repo,
                    what: format!("manifest {tag}"),
                })
        });
        ready(result)
    }

    fn created(
        &self,
        image: &ImageRef,
        tag: &str,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, RegistryError>> + Send {
        ready(self.created_now(image, tag))
    }
}

/// The simulated git remote (and local cache).
pub struct SimRepo(pub Shared);

const URL: &str = "https://github.com/sim/infra.git";

fn repo_error(retryable: bool) -> RepoError {
    if retryable {
        RepoError::Network {
            url: URL.into(),
            detail: "injected: connection reset".into(),
        }
    } else {
        RepoError::Auth {
            url: URL.into(),
            detail: "injected: credentials rejected".into(),
        }
    }
}

fn selected(path: &str, include: &[Glob], exclude: &[Glob]) -> bool {
    include.iter().any(|g| g.is_match(path)) && !exclude.iter().any(|g| g.is_match(path))
}

/// The bump of `request` on `files`: the new files and the changes (none: nothing to do).
fn rewrite(
    files: &Files,
    request: &BumpRequest,
) -> (
    Files,
    Vec<autobump::core::rewrite::Change>,
    Vec<autobump::core::rewrite::Notice>,
) {
    let mut out = files.clone();
    let mut changes = Vec::new();
    let mut notices = Vec::new();
    for (path, text) in files {
        if !selected(path, &request.include, &request.exclude) {
            continue;
        }
        let r = request.plan.rewrite(path, text, request.mode);
        notices.extend(r.notices);
        if r.changes.is_empty() || r.text.as_ref() == text.as_ref() {
            continue;
        }
        out.insert(path.clone(), r.text.as_ref().into());
        changes.extend(r.changes);
    }
    (out, changes, notices)
}

fn message(request: &BumpRequest, changes: &[autobump::core::rewrite::Change]) -> String {
    let m = commit_message(&request.policy, changes);
    match &request.rollback {
        Some(reason) => format!(
            "Roll back {}Autobump-Rollback: {reason}\n",
            m.strip_prefix("Bump ").unwrap_or(&m)
        ),
        None => m,
    }
}

/// What a bump request makes of a tree: the new files (shared), the changes, the
/// notices and the commit message. A pure function of the tree and the request, so
/// the world memoizes it (reconciles prepare the same bump again and again).
pub type BumpRewrite = (
    Tree,
    Vec<autobump::core::rewrite::Change>,
    Vec<autobump::core::rewrite::Notice>,
    String,
);

/// Builds the bump commit on `base` (not on any branch).
fn make_bump(
    w: &mut World,
    request: &BumpRequest,
    base: &str,
    time: DateTime<Utc>,
) -> (Option<BumpCommit>, Vec<autobump::core::rewrite::Notice>) {
    let tree_id = w
        .git
        .commit(base)
        .map(|c| c.tree_id.clone())
        .unwrap_or_default();
    let key = (
        tree_id,
        // (The globs are the policy's, fixed for a history; their Debug form is costly.)
        format!(
            "{:?}|{:?}|{:?}|{}",
            request.plan, request.mode, request.rollback, request.policy
        ),
    );
    let done = if let Some(done) = w.memo.bumps.get(&key) {
        Arc::clone(done)
    } else {
        let files = w.git.tree(base);
        let (new, changes, notices) = rewrite(&files, request);
        let msg = if changes.is_empty() {
            String::new()
        } else {
            message(request, &changes)
        };
        let done = Arc::new((Arc::new(new), changes, notices, msg));
        w.memo.bumps.insert(key, Arc::clone(&done));
        done
    };
    let (new, changes, notices, msg) = &*done;
    let (changes, notices, msg) = (changes.clone(), notices.clone(), msg.clone());
    if changes.is_empty() {
        return (None, notices);
    }
    let id = w.git.make_commit(
        vec![base.to_owned()],
        Arc::clone(new),
        &msg,
        time.timestamp(),
    );
    let tree = w.git.commit(&id).expect("just made").tree_id.clone();
    (
        Some(BumpCommit {
            id,
            parent: base.to_owned(),
            tree,
            message: msg,
            changes,
        }),
        notices,
    )
}

/// Whether the branch at `head` already carries a bump with `tree` on `base`: same
/// tree, and `base` is `head` or one of its ancestors (as the real adapter).
fn carries(w: &World, head: &str, base: &str, tree: &str) -> bool {
    w.git.commit(head).is_some_and(|c| c.tree_id == tree)
        && w.git.merge_base(head, base).as_deref() == Some(base)
}

impl SimRepo {
    fn main(w: &World) -> Result<String, RepoError> {
        w.git
            .head(MAIN)
            .map(str::to_owned)
            .ok_or_else(|| RepoError::BranchNotFound {
                url: URL.into(),
                branch: MAIN.into(),
            })
    }

    fn prepare_now(
        &self,
        request: BumpRequest,
        now: DateTime<Utc>,
    ) -> Result<PreparedBump, RepoError> {
        let mut w = lock(&self.0);
        if let Admit::Fail { retryable } = w.admit("repo.prepare_bump", false) {
            return Err(repo_error(retryable));
        }
        let base = Self::main(&w)?;
        let (commit, notices) = make_bump(&mut w, &request, &base, now);
        let branch_head = match &request.delivery {
            Delivery::PullRequest { branch } => w.git.head(branch.as_str()).map(str::to_owned),
            Delivery::DirectPush => None,
        };
        let up_to_date = match (&commit, &branch_head) {
            (Some(c), Some(h)) => carries(&w, h, &base, &c.tree),
            _ => false,
        };
        Ok(PreparedBump {
            base,
            cloned: false,
            commit,
            notices,
            branch_head,
            up_to_date,
            request: Arc::new(request),
            time: now,
        })
    }

    fn push_now(&self, bump: &PreparedBump) -> Result<Pushed, RepoError> {
        let mut w = lock(&self.0);
        let after = match w.admit("repo.push", true) {
            Admit::Fail { retryable } => return Err(repo_error(retryable)),
            Admit::Go(after) => after,
        };
        let request = &bump.request;
        let target = request.target_branch().to_string();
        let result = match (&bump.commit, &request.delivery) {
            (None, Delivery::PullRequest { .. }) => not_pushed(&target, bump.branch_head.clone()),
            (None, Delivery::DirectPush) => not_pushed(&target, Some(bump.base.clone())),
            (Some(commit), Delivery::PullRequest { branch }) => {
                let existing = w.git.head(branch.as_str()).map(str::to_owned);
                let base = Self::main(&w)?;
                let same = existing
                    .as_ref()
                    .is_some_and(|h| carries(&w, h, &base, &commit.tree));
                if same {
                    not_pushed(&target, existing)
                } else {
                    w.set_branch(branch.as_str(), &commit.id);
                    crate::invariants::on_branch_push(&mut w, branch.as_str(), &commit.id);
                    Pushed {
                        pushed: true,
                        forced: existing.is_some(),
                        branch: target,
                        head: Some(commit.id.clone()),
                        commit: Some(commit.clone()),
                        attempts: 1,
                    }
                }
            }
            (Some(prepared), Delivery::DirectPush) => {
                let head = Self::main(&w)?;
                let commit = if head == prepared.parent {
                    Some(prepared.clone())
                } else {
                    // Lost the race: re-apply the rewrite on the new head.
                    make_bump(&mut w, request, &head, bump.time).0
                };
                match commit {
                    None => not_pushed(&target, Some(head)),
                    Some(c) => {
                        let before = w.git.tree(&head);
                        w.set_branch(MAIN, &c.id);
                        let after_tree = w.git.tree(&c.id);
                        let kind = if request.rollback.is_some() {
                            crate::invariants::Landing::Rollback
                        } else {
                            crate::invariants::Landing::Bump
                        };
                        crate::invariants::on_landing(&mut w, kind, &before, &after_tree, None);
                        Pushed {
                            pushed: true,
                            forced: false,
                            branch: target,
                            head: Some(c.id.clone()),
                            commit: Some(c),
                            attempts: 1,
                        }
                    }
                }
            }
        };
        w.finish(after).map_err(|()| repo_error(true))?;
        Ok(result)
    }

    fn changed_now(&self, base: &str, head: &str) -> Result<Vec<ChangedFile>, RepoError> {
        let mut w = lock(&self.0);
        if let Admit::Fail { retryable } = w.admit("repo.changed_files", false) {
            return Err(repo_error(retryable));
        }
        for sha in [base, head] {
            if w.git.commit(sha).is_none() {
                return Err(RepoError::CommitNotFound {
                    url: URL.into(),
                    sha: sha.into(),
                });
            }
        }
        let merge_base = w
            .git
            .merge_base(head, base)
            .unwrap_or_else(|| base.to_owned());
        let (old, new) = (w.git.tree(&merge_base), w.git.tree(head));
        let version = |text: &str| FileVersion {
            mode: 0o100_644,
            id: hash_hex(&[text.as_bytes()]),
            content: text.as_bytes().to_vec(),
        };
        let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
        paths.sort();
        paths.dedup();
        Ok(paths
            .into_iter()
            .filter(|p| old.get(*p) != new.get(*p))
            .map(|p| ChangedFile {
                path: p.clone(),
                old: old.get(p).map(|t| version(t)),
                new: new.get(p).map(|t| version(t)),
            })
            .collect())
    }

    fn scan_now(
        &self,
        include: &[Glob],
        exclude: &[Glob],
        mode: RewriteMode,
    ) -> Result<Scanned, RepoError> {
        let mut w = lock(&self.0);
        if let Admit::Fail { retryable } = w.admit("repo.scan", false) {
            return Err(repo_error(retryable));
        }
        let head = Self::main(&w)?;
        let tree = w.git.tree(&head);
        let structured = mode == RewriteMode::Structured;
        let mut files = Vec::new();
        for (path, text) in tree.iter() {
            if !selected(path, include, exclude) {
                continue;
            }
            // A pure function of the text: memoized across reconciles.
            let found = w
                .memo
                .scans
                .entry((Arc::clone(text), structured))
                .or_insert_with(|| autobump::core::rewrite::scan(text, mode));
            if !found.is_empty() {
                files.push((path.clone(), found.clone()));
            }
        }
        Ok(Scanned { head, files })
    }
}

fn not_pushed(branch: &str, head: Option<String>) -> Pushed {
    Pushed {
        pushed: false,
        forced: false,
        branch: branch.to_owned(),
        head,
        commit: None,
        attempts: 0,
    }
}

impl Repo for SimRepo {
    fn fetch(&self, _source: &Source) -> impl Future<Output = Result<Fetched, RepoError>> + Send {
        let mut w = lock(&self.0);
        let result = match w.admit("repo.fetch", false) {
            Admit::Fail { retryable } => Err(repo_error(retryable)),
            Admit::Go(_) => Self::main(&w).map(|head| Fetched {
                head,
                cloned: false,
            }),
        };
        ready(result)
    }

    fn prepare_bump(
        &self,
        request: BumpRequest,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<PreparedBump, RepoError>> + Send {
        ready(self.prepare_now(request, now))
    }

    fn push(&self, bump: &PreparedBump) -> impl Future<Output = Result<Pushed, RepoError>> + Send {
        ready(self.push_now(bump))
    }

    fn changed_files(
        &self,
        _source: &Source,
        _head_branch: Option<&BranchName>,
        base: &str,
        head: &str,
    ) -> impl Future<Output = Result<Vec<ChangedFile>, RepoError>> + Send {
        ready(self.changed_now(base, head))
    }

    fn scan(
        &self,
        _source: &Source,
        include: &[Glob],
        exclude: &[Glob],
        mode: RewriteMode,
    ) -> impl Future<Output = Result<Scanned, RepoError>> + Send {
        ready(self.scan_now(include, exclude, mode))
    }
}

/// Simulated GitHub.
pub struct SimForge(pub Shared);

fn forge_error(what: &str, retryable: bool) -> ForgeError {
    if retryable {
        ForgeError::Server {
            what: what.to_owned(),
            status: 502,
            attempts: 1,
        }
    } else {
        ForgeError::Forbidden {
            what: what.to_owned(),
            message: "injected: resource not accessible by integration".into(),
        }
    }
}

fn pr_view(w: &World, pr: &Pr) -> PullRequest {
    PullRequest {
        number: pr.number,
        title: pr.title.clone(),
        body: pr.body.clone(),
        author: pr.author.clone(),
        open: pr.open,
        draft: false,
        head_branch: pr.head_branch.clone(),
        head_sha: w.pr_head(pr).unwrap_or_default(),
        base_branch: pr.base_branch.clone(),
        labels: pr.labels.clone(),
        html_url: format!("https://github.com/sim/infra/pull/{}", pr.number),
        updated_at: pr.updated_at,
    }
}

/// Runs `f` on the world under the fault injector; `write` calls may fail after
/// being performed.
fn call<T>(
    shared: &Shared,
    what: &'static str,
    write: bool,
    f: impl FnOnce(&mut World) -> Result<T, ForgeError>,
) -> Result<T, ForgeError> {
    let mut w = lock(shared);
    let after = match w.admit(what, write) {
        Admit::Fail { retryable } => return Err(forge_error(what, retryable)),
        Admit::Go(after) => after,
    };
    let result = f(&mut w)?;
    w.finish(after).map_err(|()| ForgeError::Timeout {
        what: what.to_owned(),
        attempts: 1,
    })?;
    Ok(result)
}

fn not_found(what: &str) -> ForgeError {
    ForgeError::NotFound {
        what: what.to_owned(),
    }
}

/// The checks of `sha` GitHub reports at `now`, and whether they are green for the
/// policy (recorded for the invariants).
fn read_checks(w: &mut World, sha: &str, statuses: bool) -> Vec<(String, CheckState)> {
    let now = w.now;
    let all: Vec<(String, CheckState, bool)> =
        w.ci.get(sha)
            .map(|checks| {
                checks
                    .iter()
                    .map(|c| (c.name.clone(), c.state(now), c.status))
                    .collect()
            })
            .unwrap_or_default();
    let green = {
        let required = &w.scenario.required_checks;
        let ok = |name: &str| {
            all.iter()
                .any(|(n, s, _)| n == name && *s == CheckState::Success)
        };
        if required.is_empty() {
            !all.is_empty() && all.iter().all(|(_, s, _)| *s == CheckState::Success)
        } else {
            required.iter().all(|r| ok(r))
        }
    };
    if let Some(rc) = w.rc.as_mut() {
        rc.checks_read.push((sha.to_owned(), green));
    }
    all.into_iter()
        .filter(|(_, _, s)| *s == statuses)
        .map(|(n, state, _)| (n, state))
        .collect()
}

impl Forge for SimForge {
    fn find_open_pr(
        &self,
        _repo: &RepoName,
        head_branch: &str,
        author: &str,
    ) -> impl Future<Output = Result<Option<PullRequest>, ForgeError>> + Send {
        ready(call(&self.0, "forge.find_open_pr", false, |w| {
            Ok(w.open_pr(head_branch, Some(author)).map(|p| pr_view(w, p)))
        }))
    }

    fn create_pr(
        &self,
        _repo: &RepoName,
        new: &NewPullRequest,
    ) -> impl Future<Output = Result<PullRequest, ForgeError>> + Send {
        ready(call(&self.0, "forge.create_pr", true, |w| {
            let what = "POST /repos/sim/infra/pulls";
            let rejected = |message: String| ForgeError::Rejected {
                what: what.into(),
                status: 422,
                message,
            };
            let Some(head) = w.git.head(&new.head_branch).map(str::to_owned) else {
                return Err(rejected(format!("head {} does not exist", new.head_branch)));
            };
            let base = w
                .git
                .head(&new.base_branch)
                .map(str::to_owned)
                .unwrap_or_default();
            if w.git.ancestors(&base).contains(&head) {
                return Err(rejected(format!(
                    "No commits between {} and {}",
                    new.base_branch, new.head_branch
                )));
            }
            if w.prs.values().any(|p| {
                p.open && p.head_branch == new.head_branch && p.base_branch == new.base_branch
            }) {
                crate::invariants::on_duplicate_pr(w, &new.head_branch);
                return Err(rejected(format!(
                    "A pull request already exists for sim:{}.",
                    new.head_branch
                )));
            }
            let number = w.prs.keys().next_back().map_or(1, |n| n + 1);
            let pr = Pr {
                number,
                title: new.title.clone(),
                body: new.body.clone(),
                author: BOT.into(),
                head_branch: new.head_branch.clone(),
                base_branch: new.base_branch.clone(),
                open: true,
                merged: false,
                final_head: None,
                labels: Vec::new(),
                mergeability_for: None,
                updated_at: w.now,
            };
            w.seq += 1;
            w.ensure_ci(&head);
            let view = pr_view(w, &pr);
            w.prs.insert(number, pr);
            crate::invariants::on_pr_created(w, number);
            w.note(format!("  PR #{number} opened from {}", new.head_branch));
            Ok(view)
        }))
    }

    fn update_pr(
        &self,
        _repo: &RepoName,
        number: u64,
        edit: &PullRequestEdit,
    ) -> impl Future<Output = Result<PullRequest, ForgeError>> + Send {
        ready(call(&self.0, "forge.update_pr", true, |w| {
            let now = w.now;
            let pr = w
                .prs
                .get_mut(&number)
                .ok_or_else(|| not_found("PATCH pull"))?;
            if let Some(t) = &edit.title {
                pr.title.clone_from(t);
            }
            if let Some(b) = &edit.body {
                pr.body.clone_from(b);
            }
            pr.updated_at = now;
            let pr = pr.clone();
            Ok(pr_view(w, &pr))
        }))
    }

    fn add_labels(
        &self,
        _repo: &RepoName,
        number: u64,
        labels: &[String],
    ) -> impl Future<Output = Result<Vec<String>, ForgeError>> + Send {
        ready(call(&self.0, "forge.add_labels", true, |w| {
            let pr = w
                .prs
                .get_mut(&number)
                .ok_or_else(|| not_found("POST labels"))?;
            for l in labels {
                if !pr.labels.contains(l) {
                    pr.labels.push(l.clone());
                }
            }
            Ok(pr.labels.clone())
        }))
    }

    fn remove_label(
        &self,
        _repo: &RepoName,
        number: u64,
        label: &str,
    ) -> impl Future<Output = Result<(), ForgeError>> + Send {
        ready(call(&self.0, "forge.remove_label", true, |w| {
            let pr = w
                .prs
                .get_mut(&number)
                .ok_or_else(|| not_found("DELETE label"))?;
            pr.labels.retain(|l| l != label);
            Ok(())
        }))
    }

    fn list_comments(
        &self,
        _repo: &RepoName,
        number: u64,
        since: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Vec<Comment>, ForgeError>> + Send {
        ready(call(&self.0, "forge.list_comments", false, |w| {
            Ok(w.comments
                .iter()
                .filter(|c| c.pr == number && since.is_none_or(|s| c.created_at >= s))
                .map(|c| Comment {
                    id: c.id,
                    body: c.body.clone(),
                    author: c.author.clone(),
                    created_at: c.created_at,
                    updated_at: c.created_at,
                    html_url: format!(
                        "https://github.com/sim/infra/pull/{}#issuecomment-{}",
                        c.pr, c.id
                    ),
                })
                .collect())
        }))
    }

    fn post_comment(
        &self,
        _repo: &RepoName,
        number: u64,
        body: &str,
    ) -> impl Future<Output = Result<Comment, ForgeError>> + Send {
        ready(call(&self.0, "forge.post_comment", true, |w| {
            let pr = w
                .prs
                .get(&number)
                .cloned()
                .ok_or_else(|| not_found("POST comment"))?;
            let id = w.add_comment(number, BOT, body);
            if body.trim() == "/retest"
                && let Some(head) = w.pr_head(&pr)
            {
                w.retest(&head);
            }
            Ok(Comment {
                id,
                body: body.to_owned(),
                author: BOT.into(),
                created_at: w.now,
                updated_at: w.now,
                html_url: format!("https://github.com/sim/infra/pull/{number}#issuecomment-{id}"),
            })
        }))
    }

    fn pr_files(
        &self,
        _repo: &RepoName,
        number: u64,
    ) -> impl Future<Output = Result<Vec<ForgeFile>, ForgeError>> + Send {
        ready(call(&self.0, "forge.pr_files", false, |w| {
            let pr = w
                .prs
                .get(&number)
                .cloned()
                .ok_or_else(|| not_found("GET files"))?;
            let head = w.pr_head(&pr).unwrap_or_default();
            let main = w.git.head(MAIN).unwrap_or_default().to_owned();
            let base = w.git.merge_base(&head, &main).unwrap_or(main);
            let (old, new) = (w.git.tree(&base), w.git.tree(&head));
            let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
            paths.sort();
            paths.dedup();
            Ok(paths
                .into_iter()
                .filter(|p| old.get(*p) != new.get(*p))
                .map(|p| ForgeFile {
                    filename: p.clone(),
                    previous_filename: None,
                    status: match (old.get(p), new.get(p)) {
                        (None, _) => FileStatus::Added,
                        (_, None) => FileStatus::Removed,
                        _ => FileStatus::Modified,
                    },
                    additions: 1,
                    deletions: 1,
                    patch: None,
                })
                .collect())
        }))
    }

    fn checks(
        &self,
        repo: &RepoName,
        sha: &str,
    ) -> impl Future<Output = Result<Vec<Check>, ForgeError>> + Send {
        ready((|| {
            let forge = lock(&self.0).scenario.forge;
            assert_eq!(
                repo.forge, forge,
                "the engine sent {repo}'s call to the other forge"
            );
            let check = |(name, state)| Check { name, state };
            match forge {
                // GitHub: commit statuses, then check runs.
                ForgeKind::GitHub => {
                    let mut checks: Vec<Check> =
                        call(&self.0, "forge.combined_status", false, |w| {
                            Ok(read_checks(w, sha, true))
                        })?
                        .into_iter()
                        .map(check)
                        .collect();
                    checks.extend(
                        call(&self.0, "forge.check_runs", false, |w| {
                            Ok(read_checks(w, sha, false))
                        })?
                        .into_iter()
                        .map(check),
                    );
                    Ok(checks)
                }
                // GitLab: the head pipeline (its jobs are the check runs), then the
                // commit's statuses (the jobs again, and the external statuses).
                ForgeKind::GitLab => {
                    let jobs = call(&self.0, "forge.pipelines", false, |w| {
                        Ok(read_checks(w, sha, false))
                    })?;
                    let mut checks: Vec<Check> = pipeline_of(&jobs).into_iter().collect();
                    checks.extend(jobs.into_iter().map(check));
                    checks.extend(
                        call(&self.0, "forge.statuses", false, |w| {
                            Ok(read_checks(w, sha, true))
                        })?
                        .into_iter()
                        .map(check),
                    );
                    Ok(checks)
                }
            }
        })())
    }

    fn mergeability(
        &self,
        _repo: &RepoName,
        number: u64,
    ) -> impl Future<Output = Result<Mergeability, ForgeError>> + Send {
        ready(call(&self.0, "forge.mergeability", false, |w| {
            let pr = w
                .prs
                .get(&number)
                .cloned()
                .ok_or_else(|| not_found("GET pull"))?;
            let head = w.pr_head(&pr).unwrap_or_default();
            // GitHub computes mergeability in the background after the head moves: the
            // first read of a new head may say "not known yet".
            let first = pr.mergeability_for.as_deref() != Some(head.as_str());
            let computing = pr.open && first && w.rng.bool();
            if let Some(p) = w.prs.get_mut(&number) {
                p.mergeability_for = Some(head.clone());
            }
            let mergeable = if computing {
                None
            } else {
                Some(pr.open && merge_result(w, &head).is_ok())
            };
            Ok(Mergeability {
                head_sha: head,
                mergeable,
                state: match mergeable {
                    None => MergeableState::Unknown,
                    Some(true) => MergeableState::Clean,
                    Some(false) => MergeableState::Dirty,
                },
                open: pr.open,
                merged: pr.merged,
            })
        }))
    }

    fn merge(
        &self,
        _repo: &RepoName,
        number: u64,
        method: MergeMethod,
        expected_head_sha: &str,
    ) -> impl Future<Output = Result<Merged, ForgeError>> + Send {
        ready(call(&self.0, "forge.merge", true, |w| {
            let what = format!("PUT /repos/sim/infra/pulls/{number}/merge");
            let pr = w
                .prs
                .get(&number)
                .cloned()
                .ok_or_else(|| not_found(&what))?;
            let head = w.pr_head(&pr).unwrap_or_default();
            if !pr.open {
                return Err(ForgeError::NotMergeable {
                    what,
                    message: "Pull Request is not mergeable".into(),
                });
            }
            if head != expected_head_sha {
                return Err(ForgeError::HeadMoved {
                    what,
                    expected_sha: expected_head_sha.to_owned(),
                    message: "Head branch was modified. Review and try the merge again.".into(),
                });
            }
            let merged = merge_result(w, &head).map_err(|path| ForgeError::NotMergeable {
                what: what.clone(),
                message: format!("merge conflict in {path}"),
            })?;
            let main = w.git.head(MAIN).expect("main").to_owned();
            let before = w.git.tree(&main);
            let parents = match method {
                MergeMethod::Merge => vec![main.clone(), head.clone()],
                MergeMethod::Squash | MergeMethod::Rebase => vec![main.clone()],
            };
            let title = format!("{} (#{number})", pr.title);
            let id = w
                .git
                .make_commit(parents, Arc::new(merged), &title, w.now.timestamp());
            w.set_branch(MAIN, &id);
            let after = w.git.tree(&id);
            if let Some(p) = w.prs.get_mut(&number) {
                p.open = false;
                p.merged = true;
                p.final_head = Some(head.clone());
            }
            let kind = if pr.head_branch == w.scenario.bump_branch {
                crate::invariants::Landing::Bump
            } else if pr.head_branch == w.scenario.rollback_branch {
                crate::invariants::Landing::Rollback
            } else {
                crate::invariants::Landing::Other
            };
            crate::invariants::on_landing(w, kind, &before, &after, Some((&pr, expected_head_sha)));
            w.note(format!("  PR #{number} merged at {}", &head[..8]));
            Ok(Merged { sha: id })
        }))
    }

    fn permission(
        &self,
        _repo: &RepoName,
        user: &str,
    ) -> impl Future<Output = Result<Permission, ForgeError>> + Send {
        ready(call(&self.0, "forge.permission", false, |w| {
            let permission = World::permission(user);
            Ok(match w.scenario.forge {
                ForgeKind::GitHub => permission,
                // GitLab answers with the member's access level.
                ForgeKind::GitLab => permission_of_access_level(access_level_of(permission)),
            })
        }))
    }
}

/// The pipeline GitLab runs the `jobs` in, as a whole: failed if one failed, running
/// while one runs, passed when all passed; none without jobs.
fn pipeline_of(jobs: &[(String, CheckState)]) -> Option<Check> {
    let state = if jobs.is_empty() {
        return None;
    } else if jobs.iter().any(|(_, s)| *s == CheckState::Failure) {
        CheckState::Failure
    } else if jobs.iter().any(|(_, s)| *s == CheckState::Pending) {
        CheckState::Pending
    } else {
        CheckState::Success
    };
    Some(Check {
        name: PIPELINE_CHECK.to_owned(),
        state,
    })
}

/// What merging `head` into main would give (`Err(path)` on a conflict).
pub fn merge_result(w: &World, head: &str) -> Result<Files, String> {
    let main = w.git.head(MAIN).expect("main");
    let base = w
        .git
        .merge_base(head, main)
        .unwrap_or_else(|| main.to_owned());
    merge_trees(&w.git.tree(&base), &w.git.tree(main), &w.git.tree(head))
}

/// The simulated state store (the durable part is the world's).
pub struct SimStore(pub Shared);

fn store_error(retryable: bool) -> StoreError {
    let path = std::path::PathBuf::from("/var/lib/autobump/state.json");
    if retryable {
        StoreError::Io {
            path,
            source: std::io::Error::other("injected: disk busy"),
        }
    } else {
        StoreError::Corrupt {
            path,
            why: "injected".into(),
        }
    }
}

impl Store for SimStore {
    fn load(&self, policy: &str) -> Result<PolicyState, StoreError> {
        let mut w = lock(&self.0);
        if let Admit::Fail { retryable } = w.admit("store.load", false) {
            return Err(store_error(retryable));
        }
        if let Some(db) = &w.db {
            return db.load(policy);
        }
        Ok(w.store.get(policy).cloned().unwrap_or_default())
    }

    fn load_all(&self) -> Result<std::collections::BTreeMap<String, PolicyState>, StoreError> {
        let mut w = lock(&self.0);
        if let Admit::Fail { retryable } = w.admit("store.load_all", false) {
            return Err(store_error(retryable));
        }
        if let Some(db) = &w.db {
            return db.load_all();
        }
        Ok(w.store.clone())
    }

    fn update(
        &self,
        policy: &str,
        f: &mut dyn FnMut(&mut PolicyState),
    ) -> Result<PolicyState, StoreError> {
        let mut w = lock(&self.0);
        let after = match w.admit("store.update", true) {
            Admit::Fail { retryable } => return Err(store_error(retryable)),
            Admit::Go(after) => after,
        };
        let state = if let Some(db) = &w.db {
            // One transaction on the real database.
            db.update(policy, f)?
        } else {
            let mut state = w.store.get(policy).cloned().unwrap_or_default();
            f(&mut state);
            state
        };
        w.write_state(policy, state.clone(), &Writer::Controller);
        // A crash after the write: the file is renamed into place, the process dies.
        w.finish(after).map_err(|()| store_error(true))?;
        Ok(state)
    }
}

/// The simulated alert source (read before each reconcile, like the standalone driver).
pub struct SimAlerts(pub Shared);

impl AlertSource for SimAlerts {
    fn active(
        &self,
        _gate: &GateSpec,
    ) -> impl Future<Output = Result<Vec<Alert>, AlertsError>> + Send {
        let w = lock(&self.0);
        let result = if w.alerts_reachable {
            let now = w.now;
            Ok(w.active_alerts()
                .into_iter()
                .map(|a| {
                    Alert::firing(&a.name)
                        .label("team", if a.counts { "sim" } else { "other" })
                        .in_state(if now < a.pending_until {
                            AlertState::Pending
                        } else {
                            AlertState::Firing
                        })
                })
                .collect())
        } else {
            Err(AlertsError::Connection {
                kind: SourceKind::Prometheus,
                url: "http://prometheus.sim:9090".into(),
                detail: "connection refused".into(),
            })
        };
        ready(result)
    }
}

/// The simulated notification receiver: records each delivery and checks that no
/// history entry is delivered twice, and only one the state records.
pub struct SimNotifier(pub Shared);

impl Deliver for SimNotifier {
    fn deliver(
        &self,
        _target: &NotifySpec,
        n: &Notification,
    ) -> impl Future<Output = Result<Delivered, NotifyError>> + Send {
        let mut w = lock(&self.0);
        let result = match w.admit("notify.deliver", true) {
            Admit::Fail { .. } => Err(notify_error()),
            Admit::Go(after) => {
                w.checker.count(invariants::N1);
                let recorded =
                    n.id.rsplit('/')
                        .next()
                        .and_then(|seq| seq.parse::<u64>().ok())
                        .is_some_and(|seq| {
                            w.state()
                                .history
                                .iter()
                                .any(|e| e.seq == seq && e.at == n.at)
                        });
                if !recorded {
                    w.checker.fail(
                        invariants::N1,
                        format!("notification {} is not in the recorded history", n.id),
                    );
                }
                if !w.notified.insert(n.id.clone()) {
                    w.checker.fail(
                        invariants::N1,
                        format!("notification {} delivered twice", n.id),
                    );
                }
                w.finish(after).map_or_else(
                    |()| Err(notify_error()),
                    |()| {
                        Ok(Delivered::Sent {
                            status: 200,
                            attempts: 1,
                            waited: std::time::Duration::ZERO,
                        })
                    },
                )
            }
        };
        ready(result)
    }
}

fn notify_error() -> NotifyError {
    NotifyError::Config {
        detail: "the simulated receiver is unreachable".into(),
    }
}

/// The simulated time, as the engine's clock.
pub struct SimClock(pub Shared);

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        lock(&self.0).now
    }
}
