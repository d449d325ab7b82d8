//! The GitOps repository (does I/O: network to git remotes, disk for the local cache).
//!
//! [`Repo`] is the narrow interface the controller uses; [`GitRepo`] implements it
//! with libgit2 (`git2`):
//!
//! * **Cache**: one bare repository per remote URL under
//!   [`GitConfig::cache_dir`]`/<hash of the URL>-<name>`, created on first use and
//!   fetched into afterwards (only the branches an operation needs, no tags). A cache
//!   that cannot be opened or whose objects cannot be read is deleted and fetched
//!   again, once per operation. Operations on one cache are serialised in-process.
//! * **Bump commit** ([`Repo::prepare_bump`]): built from the base branch's current
//!   head without a checkout: the included files' blobs are read from the object
//!   database, rewritten with [`Plan::rewrite`], written back as blobs, and the new
//!   tree is the base tree with those entries replaced. The commit has the configured
//!   author and committer, the time passed in, and a message built only from the
//!   policy name and the changes ([`commit_message`]): the same plan on the same base
//!   at the same time is the same commit id.
//! * **Push** ([`Repo::push`]): to a pull-request branch, only when the branch does
//!   not already carry the bump — its tree differs from the bump's, or the base has
//!   moved past it (its PR merged, or the base changed the same references since: a
//!   PR from it would be empty or conflict) — since a push of the same content
//!   re-triggers CI; forced only when the branch exists; or directly to the base branch, never forced: when
//!   another push wins the race, the base is fetched again, the rewrite applied to the
//!   new head, and the push retried, up to [`GitConfig::direct_push_attempts`] times.
//! * **Diffs** ([`Repo::changed_files`]): the files a pull request changes, with both
//!   versions' bytes, so the merge engine can check the diff is exactly the bump.
//! * **Auth** ([`Auth`]): none, HTTP(S) basic (a token, GitHub's
//!   `x-access-token:<token>`) or an SSH key file, offered once per operation: when
//!   the server rejects it, the operation fails with [`RepoError::Auth`] instead of
//!   libgit2 asking again forever. Secrets never appear in logs, errors or `Debug`.
//! * **Threads**: everything libgit2 does blocks; each public call runs on tokio's
//!   blocking pool (`spawn_blocking`), never on the async runtime's threads.
//!
//! libgit2 has no per-operation connect timeout that can be set without `unsafe`
//! (this crate forbids it); a fetch that takes longer than
//! [`GitConfig::transfer_timeout`] while transferring is aborted from its progress
//! callback.

mod auth;
mod bump;
mod diff;
mod engine;
mod error;
mod remote;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::Instrument as _;

use crate::core::rewrite::{Change, Notice, Plan};
use crate::policy::v1alpha1::RewriteMode;
use crate::policy::values::{BranchName, Glob, RepoUrl};

pub use auth::{Auth, github_git_host, github_token_applies, redact_url};
pub use bump::commit_message;
pub use error::RepoError;

/// A repository and the branch deployments come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The remote's URL (`https://`, `ssh://`, scp-like, `file://`).
    pub url: RepoUrl,
    /// The base branch.
    pub branch: BranchName,
    /// How to authenticate.
    pub auth: Auth,
}

/// A name and e-mail address for commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The name.
    pub name: String,
    /// The e-mail address.
    pub email: String,
}

/// How [`GitRepo`] works.
#[derive(Debug, Clone)]
pub struct GitConfig {
    /// Where the per-repository caches live (created if missing).
    pub cache_dir: PathBuf,
    /// The author of bump commits.
    pub author: Person,
    /// The committer of bump commits.
    pub committer: Person,
    /// How many times a direct push is tried when other pushes keep winning the race
    /// (at least 1). Default 3.
    pub direct_push_attempts: u32,
    /// A fetch still transferring after this long is aborted. Default 10 minutes.
    pub transfer_timeout: Duration,
}

impl GitConfig {
    /// The defaults, with `identity` as author and committer.
    #[must_use]
    pub fn new(cache_dir: impl Into<PathBuf>, identity: Person) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            author: identity.clone(),
            committer: identity,
            direct_push_attempts: 3,
            transfer_timeout: Duration::from_secs(600),
        }
    }
}

/// Where a bump goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// To this branch, for a pull request into the base branch.
    PullRequest {
        /// The pull request's head branch.
        branch: BranchName,
    },
    /// Straight onto the base branch.
    DirectPush,
}

/// What a bump commit should do.
#[derive(Debug, Clone)]
pub struct BumpRequest {
    /// The repository and base branch.
    pub source: Source,
    /// The policy's name (the `Autobump-Policy` trailer).
    pub policy: String,
    /// The versions to write.
    pub plan: Plan,
    /// Files to rewrite (globs relative to the repository root).
    pub include: Vec<Glob>,
    /// Files never rewritten.
    pub exclude: Vec<Glob>,
    /// Structured or text rewriting.
    pub mode: RewriteMode,
    /// Where it goes.
    pub delivery: Delivery,
    /// Set when this puts known-good versions back: the commit says "Roll back" and
    /// carries the reason in an `Autobump-Rollback` trailer.
    pub rollback: Option<String>,
    /// Set when the versions were promoted from another policy: the upstream policy
    /// and the evidence (Markdown) the commit message cites, with an
    /// `Autobump-Promoted-From` trailer.
    pub promoted: Option<(String, String)>,
}

impl BumpRequest {
    /// The branch a push updates: the pull request's branch, or the base branch.
    #[must_use]
    pub fn target_branch(&self) -> &BranchName {
        match &self.delivery {
            Delivery::PullRequest { branch } => branch,
            Delivery::DirectPush => &self.source.branch,
        }
    }
}

/// The base branch after a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The base branch's head commit (40 hex digits).
    pub head: String,
    /// Whether the cache was created by this call (a clone) rather than updated.
    pub cloned: bool,
}

/// A bump commit, in the local cache (not pushed yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BumpCommit {
    /// The commit (40 hex digits).
    pub id: String,
    /// Its parent: the base head it was built on.
    pub parent: String,
    /// Its tree.
    pub tree: String,
    /// Its message ([`commit_message`]).
    pub message: String,
    /// The references changed, by file then line.
    pub changes: Vec<Change>,
}

/// The result of [`Repo::prepare_bump`].
#[derive(Debug, Clone)]
pub struct PreparedBump {
    /// The base branch's head when it was fetched.
    pub base: String,
    /// Whether the cache was created by this call.
    pub cloned: bool,
    /// The commit; `None` when the plan changes nothing on the base.
    pub commit: Option<BumpCommit>,
    /// Warnings from the rewrite (files skipped, references that could not be edited).
    pub notices: Vec<Notice>,
    /// Pull-request mode: the PR branch's head on the remote, if the branch exists.
    pub branch_head: Option<String>,
    /// Pull-request mode: the PR branch already has exactly the bump's tree and
    /// contains the base head it was built on, so [`Repo::push`] will not push.
    /// Always `false` in direct-push mode.
    pub up_to_date: bool,
    /// The request, for [`Repo::push`] to re-apply after a lost race.
    pub request: Arc<BumpRequest>,
    /// The commit time, reused for commits re-made by [`Repo::push`].
    pub time: DateTime<Utc>,
}

/// The result of [`Repo::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// Whether anything was pushed.
    pub pushed: bool,
    /// Whether the push was forced (pull-request mode, replacing an older bump).
    pub forced: bool,
    /// The branch pushed to (or that would have been).
    pub branch: String,
    /// The remote branch's head afterwards: the bump commit, the existing commit that
    /// already had its tree, or (direct push, nothing left to change) the base head.
    /// `None` only when nothing was to be pushed and the branch does not exist.
    pub head: Option<String>,
    /// The commit pushed: the prepared one, or one re-made on a newer base after a
    /// lost race (direct push) or when the prepared commit was gone from the cache.
    pub commit: Option<BumpCommit>,
    /// Push attempts made (0 when nothing was pushed).
    pub attempts: u32,
}

/// One version of a file in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVersion {
    /// The git file mode (`0o100644`, `0o100755`, `0o120000` for a link, `0o160000`
    /// for a submodule).
    pub mode: u32,
    /// The blob (or submodule commit) id.
    pub id: String,
    /// The blob's bytes (empty for a submodule).
    pub content: Vec<u8>,
}

/// A file that differs between two commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    /// The path, relative to the repository root, `/`-separated.
    pub path: String,
    /// Before (`None`: added).
    pub old: Option<FileVersion>,
    /// After (`None`: deleted).
    pub new: Option<FileVersion>,
}

impl ChangedFile {
    /// The old content as text, if the file existed and is UTF-8.
    #[must_use]
    pub fn old_text(&self) -> Option<&str> {
        self.old
            .as_ref()
            .and_then(|v| std::str::from_utf8(&v.content).ok())
    }

    /// The new content as text, if the file still exists and is UTF-8.
    #[must_use]
    pub fn new_text(&self) -> Option<&str> {
        self.new
            .as_ref()
            .and_then(|v| std::str::from_utf8(&v.content).ok())
    }
}

/// What the controller needs from the GitOps repository.
pub trait Repo: Send + Sync {
    /// Fetches the base branch and returns its head.
    fn fetch(&self, source: &Source) -> impl Future<Output = Result<Fetched, RepoError>> + Send;

    /// Starts a pass over the policies: scans of a branch may reuse the pass's first
    /// fetch of it (see [`GitRepo::begin_pass`]). Without passes every scan fetches.
    fn begin_pass(&self) {}

    /// Fetches the base branch (and the pull-request branch), and builds the bump
    /// commit for `request.plan` on the base head, with `now` as its time. Nothing
    /// is pushed.
    fn prepare_bump(
        &self,
        request: BumpRequest,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<PreparedBump, RepoError>> + Send;

    /// Ensures the remote has the bump: pull-request mode pushes to the PR branch
    /// unless it already has the bump's tree and contains the current base head
    /// (checked again against the remote: a branch the base moved past, such as one
    /// whose PR merged, gets the bump again);
    /// direct-push mode pushes to the base branch, re-fetching and re-applying the
    /// rewrite after each lost race, up to the configured number of attempts
    /// ([`RepoError::PushRace`] after that). A bump without a commit pushes nothing.
    fn push(&self, bump: &PreparedBump) -> impl Future<Output = Result<Pushed, RepoError>> + Send;

    /// The files that differ between `head` and its merge base with `base` (what a
    /// pull request from `head` into `base` changes, as GitHub shows it), sorted by
    /// path, with both versions' bytes. Commits missing from the cache are fetched
    /// from the base branch and `head_branch`.
    fn changed_files(
        &self,
        source: &Source,
        head_branch: Option<&BranchName>,
        base: &str,
        head: &str,
    ) -> impl Future<Output = Result<Vec<ChangedFile>, RepoError>> + Send;

    /// Fetches the base branch and reads the image references in its files that the
    /// globs select (no checkout): where the current versions come from.
    fn scan(
        &self,
        source: &Source,
        include: &[Glob],
        exclude: &[Glob],
        mode: RewriteMode,
    ) -> impl Future<Output = Result<Scanned, RepoError>> + Send;
}

/// [`Repo`] over libgit2, with a local cache per repository.
#[derive(Debug, Clone)]
pub struct GitRepo {
    inner: Arc<engine::Engine>,
}

impl GitRepo {
    /// A repository client; nothing is fetched until asked.
    #[must_use]
    pub fn new(config: GitConfig) -> Self {
        Self {
            inner: Arc::new(engine::Engine {
                config,
                slots: Mutex::new(HashMap::new()),
                pass: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Starts a pass over the policies (a standalone tick): until the next pass,
    /// [`Repo::scan`]s of a branch reuse the first scan's fetch instead of fetching
    /// again, so a repository many policies share is fetched once per pass, not once
    /// per policy. Preparing and pushing a bump always fetch, and a push makes the
    /// next scan fetch again. Without passes (cluster mode) every scan fetches.
    pub fn begin_pass(&self) {
        self.inner
            .pass
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The cache directory used for `url` (whether or not it exists yet).
    #[must_use]
    pub fn cache_path(&self, url: &RepoUrl) -> PathBuf {
        self.inner.cache_path(url)
    }

    /// Runs `f` on the blocking pool, inside the current tracing span.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&engine::Engine) -> Result<T, RepoError> + Send + 'static,
    ) -> Result<T, RepoError> {
        let inner = Arc::clone(&self.inner);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&inner)))
            .await
            .map_err(|e| RepoError::Task {
                detail: e.to_string(),
            })?
    }
}

impl Repo for GitRepo {
    fn begin_pass(&self) {
        GitRepo::begin_pass(self);
    }

    async fn fetch(&self, source: &Source) -> Result<Fetched, RepoError> {
        let source = source.clone();
        let span = tracing::info_span!(
            "git_fetch",
            repo = %redact_url(source.url.as_str()),
            branch = %source.branch,
        );
        self.blocking(move |e| e.fetch(&source))
            .instrument(span)
            .await
    }

    async fn prepare_bump(
        &self,
        request: BumpRequest,
        now: DateTime<Utc>,
    ) -> Result<PreparedBump, RepoError> {
        let span = tracing::info_span!(
            "git_prepare_bump",
            policy = %request.policy,
            repo = %redact_url(request.source.url.as_str()),
            branch = %request.source.branch,
        );
        let request = Arc::new(request);
        self.blocking(move |e| e.prepare(&request, now))
            .instrument(span)
            .await
    }

    async fn push(&self, bump: &PreparedBump) -> Result<Pushed, RepoError> {
        let span = tracing::info_span!(
            "git_push",
            policy = %bump.request.policy,
            repo = %redact_url(bump.request.source.url.as_str()),
            branch = %bump.request.target_branch(),
        );
        let bump = bump.clone();
        self.blocking(move |e| e.push(&bump)).instrument(span).await
    }

    async fn scan(
        &self,
        source: &Source,
        include: &[Glob],
        exclude: &[Glob],
        mode: RewriteMode,
    ) -> Result<Scanned, RepoError> {
        let span = tracing::info_span!(
            "git_scan",
            repo = %redact_url(source.url.as_str()),
            branch = %source.branch,
        );
        let (source, include, exclude) = (source.clone(), include.to_vec(), exclude.to_vec());
        self.blocking(move |e| e.scan(&source, &include, &exclude, mode))
            .instrument(span)
            .await
    }

    async fn changed_files(
        &self,
        source: &Source,
        head_branch: Option<&BranchName>,
        base: &str,
        head: &str,
    ) -> Result<Vec<ChangedFile>, RepoError> {
        let span = tracing::info_span!(
            "git_changed_files",
            repo = %redact_url(source.url.as_str()),
            base,
            head,
        );
        let (source, head_branch) = (source.clone(), head_branch.cloned());
        let (base, head) = (base.to_owned(), head.to_owned());
        self.blocking(move |e| e.changed_files(&source, head_branch.as_ref(), &base, &head))
            .instrument(span)
            .await
    }
}

/// The references found on the base branch.
#[derive(Debug, Clone)]
pub struct Scanned {
    /// The base head they were read at.
    pub head: String,
    /// Per file (repo-relative path), the references in it.
    pub files: Vec<(String, Vec<crate::core::rewrite::Found>)>,
}

/// Locks one cache directory against concurrent use from this process.
fn lock_guard<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means an operation panicked; the cache on disk is checked
    // (and repaired) by the next operation anyway.
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
