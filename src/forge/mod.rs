//! The forge adapters (do I/O: HTTPS to the GitHub REST API and GitLab's REST API v4;
//! the webhook helpers in [`webhook`] and [`gitlab_webhook`] are pure).
//!
//! [`Forge`] is the narrow interface the executor and the observe step use: the bot's
//! open PR (a GitLab merge request), creating and editing it, labels, comments (notes),
//! changed files, a commit's checks, mergeability, merging at an expected head SHA, and
//! a user's permission. [`GitHub`] and [`GitLab`] implement it (the GitLab client, its
//! mapping of pipelines, merges and roles: see its docs); [`Forges`] holds both and
//! sends each call to the forge of its repository ([`RepoName::forge`]). The GitHub
//! client, with octocrab:
//!
//! * **Auth**: a token, or a GitHub App (app id + PEM private key → installation token,
//!   minted again when it is within [`GitHubConfig::token_refresh_margin`] of expiry by
//!   the injected [`Clock`](crate::clock::Clock)).
//! * **Politeness**: a timeout on every attempt; 5xx, timeouts and connection errors
//!   back off exponentially with jitter; primary (`x-ratelimit-remaining: 0` +
//!   `x-ratelimit-reset`) and secondary (403/429 with `Retry-After`) rate limits wait as
//!   GitHub says, up to [`RetryPolicy::max_rate_limit_wait`]. Requests that are not
//!   safe to repeat (creating a PR or a comment) are not re-sent after a 5xx or a
//!   timeout: the error is retryable and the next reconcile finds what was created.
//! * **Cost**: conditional GETs — the `ETag`s of earlier answers are sent as
//!   `If-None-Match`, and a 304 (free of rate-limit cost) returns the cached body.
//!   [`ForgeStats`] counts every request by [`RequestKind`] and exposes the remaining
//!   rate-limit budget.
//! * **Webhooks**: with a [`WebhookFeed`] attached, reads that GitHub's deliveries prove
//!   unchanged cost nothing at all (the `*_relaxed` methods), and commands written on
//!   any of autobump's PRs, even closed ones, reach the policy
//!   ([`Forge::delivered_commands`]).

mod error;
pub mod feed;
mod forges;
mod github;
mod gitlab;
pub mod gitlab_webhook;
mod rest;
mod stats;
pub mod webhook;
mod wire;

use std::fmt;
use std::future::Future;

use chrono::{DateTime, Utc};

pub use error::ForgeError;
pub use feed::{DeliveredComment, WebhookFeed};
pub use forges::Forges;
pub use github::{GitHub, GitHubApp, GitHubAuth, GitHubConfig, RetryPolicy, checks_of};
pub use gitlab::{GitLab, GitLabConfig, access_level_of, permission_of_access_level};
pub use stats::{ForgeStats, ForgeStatsSnapshot, RequestKind};

pub use crate::policy::v1alpha1::ForgeKind;

/// A repository on a forge: `owner/name` on GitHub; on GitLab the project's
/// namespace (`group` or `group/subgroup/…`) and its path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName {
    /// The user or organisation (GitHub); the group path (GitLab).
    pub owner: String,
    /// The repository's (project's) name.
    pub name: String,
    /// The forge it is on.
    pub forge: ForgeKind,
}

impl RepoName {
    /// `owner/name` on GitHub.
    #[must_use]
    pub fn new(owner: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            name: name.into(),
            forge: ForgeKind::GitHub,
        }
    }

    /// The GitLab project `namespace/name` (`namespace` may hold subgroups).
    #[must_use]
    pub fn gitlab(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            forge: ForgeKind::GitLab,
            ..Self::new(namespace, name)
        }
    }

    /// Parses `owner/name`, or a GitHub URL (`https://github.com/owner/name(.git)`,
    /// `git@github.com:owner/name.git`). `None` if it is neither.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (_, path) = split_remote(text);
        let (owner, name) = path.split_once('/')?;
        (valid_segment(owner) && valid_segment(name)).then(|| Self::new(owner, name))
    }

    /// The repository a policy's `source.repo` names, on the forge `explicit` names
    /// (`source.forge`) or else the one its host tells (see [`forge_of`]).
    /// `gitlab_base` is the controller's GitLab URL (`--gitlab-url`): its host is
    /// GitLab, and its path (a self-managed GitLab under a relative URL root such as
    /// `https://example.com/gitlab`) is not part of the project path.
    ///
    /// # Errors
    /// Why the URL names no repository on that forge (said for people).
    pub fn locate(
        url: &str,
        explicit: Option<ForgeKind>,
        gitlab_base: Option<&str>,
    ) -> Result<Self, String> {
        let shown = crate::repo::redact_url(url);
        let (host, path) = split_remote(url);
        let base = gitlab_base.and_then(|b| url::Url::parse(b).ok());
        let on_base = match (&base, host.as_deref()) {
            (Some(base), Some(host)) => base
                .host_str()
                .is_some_and(|b| b.eq_ignore_ascii_case(host_name(host))),
            _ => false,
        };
        let told = host.as_deref().and_then(forge_of_host);
        if let (Some(explicit), Some(told)) = (explicit, told)
            && explicit != told
        {
            return Err(format!(
                "{shown} is on {}, but source.forge says {}",
                told.as_str(),
                explicit.as_str()
            ));
        }
        let segments: Vec<&str> = path.split('/').collect();
        let kind = explicit
            .or(told)
            .or(on_base.then_some(ForgeKind::GitLab))
            .unwrap_or(if segments.len() > 2 {
                ForgeKind::GitLab
            } else {
                ForgeKind::GitHub
            });
        match kind {
            ForgeKind::GitHub => Self::parse(path)
                .filter(|_| segments.len() == 2)
                .ok_or_else(|| format!("{shown} is not a GitHub repository (OWNER/NAME)")),
            ForgeKind::GitLab => {
                let mut path = path;
                if on_base
                    && let Some(base) = &base
                    && let Some(rest) = path.strip_prefix(base.path().trim_matches('/'))
                    && rest.starts_with('/')
                {
                    path = rest.trim_start_matches('/');
                }
                match path.rsplit_once('/') {
                    Some((namespace, name))
                        if namespace.split('/').all(valid_segment) && valid_segment(name) =>
                    {
                        Ok(Self::gitlab(namespace, name))
                    }
                    _ => Err(format!(
                        "{shown} is not a GitLab project (GROUP[/SUBGROUP...]/PROJECT)"
                    )),
                }
            }
        }
    }
}

/// The forge a remote URL's host tells, when it tells one: `github.com` is GitHub;
/// `gitlab.com` and hosts named `gitlab.*` are GitLab.
#[must_use]
pub fn forge_of(url: &str) -> Option<ForgeKind> {
    split_remote(url).0.as_deref().and_then(forge_of_host)
}

fn forge_of_host(host: &str) -> Option<ForgeKind> {
    let host = host_name(host).to_ascii_lowercase();
    if host == "github.com" || host == "www.github.com" {
        Some(ForgeKind::GitHub)
    } else if host == "gitlab.com" || host.starts_with("gitlab.") {
        Some(ForgeKind::GitLab)
    } else {
        None
    }
}

/// The host (`HOST[:PORT]`, no user info) of a remote URL; `None` for a bare slug.
#[must_use]
pub fn remote_host(url: &str) -> Option<String> {
    split_remote(url).0
}

/// `HOST` of `HOST[:PORT]`, lower-cased.
#[must_use]
pub fn remote_host_name(host: &str) -> String {
    host_name(host).to_ascii_lowercase()
}

/// `HOST` of `HOST[:PORT]`.
fn host_name(host: &str) -> &str {
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The host (`HOST[:PORT]`, no user info) and the path of a remote URL
/// (`scheme://[user@]host/path`, `user@host:path`) or a bare `owner/name` slug (no
/// host), without a trailing `.git` and slashes.
fn split_remote(text: &str) -> (Option<String>, &str) {
    let text = text.trim().trim_end_matches('/');
    let text = text.strip_suffix(".git").unwrap_or(text);
    let (host, path) = if let Some((_, rest)) = text.split_once("://") {
        match rest.split_once('/') {
            Some((authority, path)) => (Some(authority), path),
            None => (Some(rest), ""),
        }
    } else if let Some((authority, rest)) = text.split_once(':') {
        (Some(authority), rest)
    } else {
        (None, text)
    };
    let host = host.map(|a| a.rsplit_once('@').map_or(a, |(_, h)| h).to_owned());
    (host, path.trim_matches('/'))
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A pull request, as far as autobump cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    /// The description (`""` when there is none).
    pub body: String,
    /// The author's login (`example-bot`, `my-app[bot]`).
    pub author: String,
    /// Whether it is open (else closed or merged).
    pub open: bool,
    pub draft: bool,
    /// The head branch (without `refs/heads/`).
    pub head_branch: String,
    /// The head commit.
    pub head_sha: String,
    /// The branch it merges into.
    pub base_branch: String,
    /// Label names, in the forge's order.
    pub labels: Vec<String>,
    /// The web page of the PR.
    pub html_url: String,
    pub updated_at: DateTime<Utc>,
}

/// What to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPullRequest {
    pub title: String,
    pub body: String,
    /// The head branch (in the same repository).
    pub head_branch: String,
    /// The branch to merge into.
    pub base_branch: String,
    pub draft: bool,
}

/// Changes to a PR's text; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullRequestEdit {
    pub title: Option<String>,
    pub body: Option<String>,
}

/// A comment on an issue or PR (the conversation, not review comments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub body: String,
    /// The author's login.
    pub author: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub html_url: String,
}

/// How a file changed in a PR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Added,
    Removed,
    Modified,
    Renamed,
    Copied,
    Changed,
    Unchanged,
    /// A status this client does not know.
    #[serde(other)]
    Unknown,
}

/// One file of a PR's diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    /// Path after the change.
    pub filename: String,
    /// Path before a rename or copy.
    pub previous_filename: Option<String>,
    pub status: FileStatus,
    pub additions: u64,
    pub deletions: u64,
    /// The unified diff hunk text; `None` for binary files and very large diffs
    /// (GitHub omits it), which a caller verifying the diff must treat as unverifiable.
    pub patch: Option<String>,
}

/// A commit status or combined status state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    Success,
    Pending,
    Failure,
    Error,
    /// A state this client does not know (treated as not successful by callers).
    #[serde(other)]
    Unknown,
}

/// One context of the combined status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    /// The status's name (`ci/prow/unit`).
    pub context: String,
    pub state: StatusState,
    pub description: Option<String>,
    pub target_url: Option<String>,
}

/// `GET /commits/{sha}/status`: the latest status of each context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CombinedStatus {
    /// The commit the statuses are for.
    pub sha: String,
    /// GitHub's summary: `pending` also when there are no statuses at all.
    pub state: StatusState,
    pub statuses: Vec<CommitStatus>,
}

/// Where a check run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Queued,
    InProgress,
    Completed,
    Waiting,
    Requested,
    Pending,
    #[serde(other)]
    Unknown,
}

/// How a completed check run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckConclusion {
    Success,
    Failure,
    Neutral,
    Cancelled,
    Skipped,
    TimedOut,
    ActionRequired,
    Stale,
    StartupFailure,
    #[serde(other)]
    Unknown,
}

/// One check run on a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRun {
    pub id: u64,
    pub name: String,
    pub head_sha: String,
    pub status: CheckStatus,
    /// `None` until completed.
    pub conclusion: Option<CheckConclusion>,
    pub details_url: Option<String>,
}

/// Why a PR can or cannot be merged: GitHub's `mergeable_state`, and GitLab's
/// `detailed_merge_status` mapped onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeableState {
    /// Mergeable, checks green.
    Clean,
    /// Mergeable, some non-required check failing.
    Unstable,
    /// Mergeable, with pre-receive hooks.
    HasHooks,
    /// Branch protection blocks it (reviews, required checks).
    Blocked,
    /// The head is behind the base and protection requires it up to date.
    Behind,
    /// Conflicts.
    Dirty,
    Draft,
    /// The forge is still computing it (ask again shortly).
    Unknown,
    #[serde(other)]
    Other,
}

/// What `GET /pulls/{n}` says about merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mergeability {
    /// The head commit these fields describe: merge at this SHA.
    pub head_sha: String,
    /// `None` while the forge computes it in the background.
    pub mergeable: Option<bool>,
    pub state: MergeableState,
    pub open: bool,
    pub merged: bool,
}

/// How to merge a PR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MergeMethod {
    /// One commit on the base branch.
    #[default]
    Squash,
    /// A merge commit.
    Merge,
    /// The PR's commits replayed.
    Rebase,
}

impl MergeMethod {
    /// GitHub's name for it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Squash => "squash",
            Self::Merge => "merge",
            Self::Rebase => "rebase",
        }
    }
}

impl From<crate::policy::v1alpha1::MergeMethod> for MergeMethod {
    fn from(method: crate::policy::v1alpha1::MergeMethod) -> Self {
        use crate::policy::v1alpha1::MergeMethod as Api;
        match method {
            Api::Squash => Self::Squash,
            Api::Merge => Self::Merge,
            Api::Rebase => Self::Rebase,
        }
    }
}

/// A successful merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The commit on the base branch (the merge or squash commit).
    pub sha: String,
}

pub use crate::core::commands::Permission;
pub use crate::core::merge::{Check, CheckState};

/// The name of the check that stands for a GitLab pipeline as a whole (its jobs are
/// checks of their own names).
pub const PIPELINE_CHECK: &str = "pipeline";

/// What autobump's controller needs from a code forge. Every method is one logical
/// read or write; paginated reads return all pages. Reads may be answered from the
/// conditional-request cache (the data is then what the forge last sent, confirmed
/// unchanged by a 304).
pub trait Forge: Send + Sync {
    /// The repository `url` (a policy's `source.repo`) names on this forge, on the
    /// forge `explicit` names (`source.forge`) or its host tells
    /// ([`RepoName::locate`]).
    ///
    /// # Errors
    /// Why this forge cannot serve it (said for people: the policy is skipped).
    fn repository(&self, url: &str, explicit: Option<ForgeKind>) -> Result<RepoName, String> {
        RepoName::locate(url, explicit, None)
    }

    /// The open PR whose head is `head_branch` in `repo` itself and whose author is
    /// `author` (a PR from anyone else on that branch is ignored). If there are
    /// several, the lowest-numbered one.
    fn find_open_pr(
        &self,
        repo: &RepoName,
        head_branch: &str,
        author: &str,
    ) -> impl Future<Output = Result<Option<PullRequest>, ForgeError>> + Send;

    /// Opens a PR.
    fn create_pr(
        &self,
        repo: &RepoName,
        pr: &NewPullRequest,
    ) -> impl Future<Output = Result<PullRequest, ForgeError>> + Send;

    /// Changes a PR's title and/or body.
    fn update_pr(
        &self,
        repo: &RepoName,
        number: u64,
        edit: &PullRequestEdit,
    ) -> impl Future<Output = Result<PullRequest, ForgeError>> + Send;

    /// Adds labels (existing ones stay); returns all labels now on the PR.
    fn add_labels(
        &self,
        repo: &RepoName,
        number: u64,
        labels: &[String],
    ) -> impl Future<Output = Result<Vec<String>, ForgeError>> + Send;

    /// Removes a label; removing a label that is not there is not an error.
    fn remove_label(
        &self,
        repo: &RepoName,
        number: u64,
        label: &str,
    ) -> impl Future<Output = Result<(), ForgeError>> + Send;

    /// The conversation comments, oldest first; with `since`, only those updated at
    /// or after it.
    fn list_comments(
        &self,
        repo: &RepoName,
        number: u64,
        since: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Vec<Comment>, ForgeError>> + Send;

    /// Posts a comment.
    fn post_comment(
        &self,
        repo: &RepoName,
        number: u64,
        body: &str,
    ) -> impl Future<Output = Result<Comment, ForgeError>> + Send;

    /// The files the PR changes, all pages.
    fn pr_files(
        &self,
        repo: &RepoName,
        number: u64,
    ) -> impl Future<Output = Result<Vec<ChangedFile>, ForgeError>> + Send;

    /// Every check reported on `sha`, by name: GitHub's commit statuses and check
    /// runs; GitLab's pipeline for `sha` (each of its jobs, and the pipeline as a
    /// whole under [`PIPELINE_CHECK`]) and external commit statuses.
    fn checks(
        &self,
        repo: &RepoName,
        sha: &str,
    ) -> impl Future<Output = Result<Vec<Check>, ForgeError>> + Send;

    /// Whether the PR can be merged, and at which head.
    fn mergeability(
        &self,
        repo: &RepoName,
        number: u64,
    ) -> impl Future<Output = Result<Mergeability, ForgeError>> + Send;

    /// Merges the PR if and only if its head is still `expected_head_sha`
    /// ([`ForgeError::HeadMoved`] otherwise; [`ForgeError::NotMergeable`] when the forge
    /// refuses for another reason).
    fn merge(
        &self,
        repo: &RepoName,
        number: u64,
        method: MergeMethod,
        expected_head_sha: &str,
    ) -> impl Future<Output = Result<Merged, ForgeError>> + Send;

    /// `user`'s role on `repo` (GitLab: the access level, mapped); [`Permission::None`]
    /// for a user the forge does not know.
    fn permission(
        &self,
        repo: &RepoName,
        user: &str,
    ) -> impl Future<Output = Result<Permission, ForgeError>> + Send;

    /// A token for git over HTTPS to `repo` that the forge hands out (a GitHub App's
    /// installation token, valid for several minutes more), or `None` when git
    /// credentials come from elsewhere (the default).
    fn git_token(
        &self,
        repo: &RepoName,
    ) -> impl Future<Output = Result<Option<String>, ForgeError>> + Send {
        let _ = repo;
        async { Ok(None) }
    }

    /// All of [`list_comments`](Self::list_comments), or the last answer when the forge's
    /// webhooks prove no comment was written or edited since (see [`feed`]). Only for
    /// reads whose staleness can make autobump wait, never act.
    fn list_comments_relaxed(
        &self,
        repo: &RepoName,
        number: u64,
    ) -> impl Future<Output = Result<Vec<Comment>, ForgeError>> + Send {
        self.list_comments(repo, number, None)
    }

    /// [`checks`](Self::checks), or the last answer when webhooks prove them
    /// unchanged; as for [`list_comments_relaxed`](Self::list_comments_relaxed).
    fn checks_relaxed(
        &self,
        repo: &RepoName,
        sha: &str,
    ) -> impl Future<Output = Result<Vec<Check>, ForgeError>> + Send {
        self.checks(repo, sha)
    }

    /// Whether the `*_relaxed` reads may answer from memory (a webhook feed is
    /// attached); when they may, the reconcile confirms a green verdict with strict reads
    /// before it merges.
    fn answers_from_memory(&self) -> bool {
        false
    }

    /// Command comments delivered by webhook on `policy`'s PRs in `repo`, open or
    /// closed, oldest first (the reconcile skips those it has handled). Without
    /// webhooks, none: commands are then read from the open PR only.
    fn delivered_commands(&self, repo: &RepoName, policy: &str) -> Vec<DeliveredComment> {
        let _ = (repo, policy);
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_parse_from_slugs_and_urls() {
        let repo = RepoName::new("example", "infra");
        let want = Some(repo.clone());
        for text in [
            "example/infra",
            "https://github.com/example/infra.git",
            "https://github.com/example/infra",
            "https://github.com/example/infra/",
            "git@github.com:example/infra.git",
        ] {
            assert_eq!(RepoName::parse(text), want, "{text}");
        }
        for bad in [
            "example",
            "/infra",
            "example/",
            "https://github.com/example",
            "a b/c",
        ] {
            assert_eq!(RepoName::parse(bad), None, "{bad}");
        }
        assert_eq!(repo.to_string(), "example/infra");
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one table of cases
    fn remotes_locate_their_forge_and_project() {
        let gitlab = |ns: &str, name: &str| Ok(RepoName::gitlab(ns, name));
        let github = |o: &str, name: &str| Ok(RepoName::new(o, name));
        let cases = [
            // gitlab.com, nested groups, https and scp-like ssh
            (
                "https://gitlab.com/group/project.git",
                None,
                None,
                gitlab("group", "project"),
            ),
            (
                "https://gitlab.com/group/sub/project",
                None,
                None,
                gitlab("group/sub", "project"),
            ),
            (
                "git@gitlab.com:group/sub/deep/project.git",
                None,
                None,
                gitlab("group/sub/deep", "project"),
            ),
            (
                "ssh://git@gitlab.example.com:2222/g/p.git",
                None,
                None,
                gitlab("g", "p"),
            ),
            // a self-managed host that does not say GitLab: named, or the configured URL
            (
                "https://code.example.com/g/p.git",
                Some(ForgeKind::GitLab),
                None,
                gitlab("g", "p"),
            ),
            (
                "https://code.example.com/g/p.git",
                None,
                Some("https://code.example.com"),
                gitlab("g", "p"),
            ),
            // a relative URL root is not part of the project path
            (
                "https://example.com/gitlab/g/sub/p.git",
                None,
                Some("https://example.com/gitlab/"),
                gitlab("g/sub", "p"),
            ),
            // nested paths can only be GitLab
            (
                "https://code.example.com/a/b/c.git",
                None,
                None,
                gitlab("a/b", "c"),
            ),
            // GitHub as before: github.com, and any other host with OWNER/NAME
            (
                "https://github.com/example/infra.git",
                None,
                None,
                github("example", "infra"),
            ),
            (
                "git@github.com:example/infra.git",
                None,
                None,
                github("example", "infra"),
            ),
            (
                "https://ghe.example.com/example/infra",
                None,
                None,
                github("example", "infra"),
            ),
        ];
        for (url, explicit, base, want) in cases {
            assert_eq!(RepoName::locate(url, explicit, base), want, "{url}");
        }
        let errors = [
            (
                "https://gitlab.com/group/p.git",
                Some(ForgeKind::GitHub),
                "is on gitlab",
            ),
            (
                "https://github.com/o/r.git",
                Some(ForgeKind::GitLab),
                "is on github",
            ),
            (
                "https://code.example.com/a/b/c",
                Some(ForgeKind::GitHub),
                "not a GitHub repository",
            ),
            ("https://gitlab.com/project", None, "not a GitLab project"),
            ("https://gitlab.com/a b/c", None, "not a GitLab project"),
        ];
        for (url, explicit, want) in errors {
            let got = RepoName::locate(url, explicit, None).unwrap_err();
            assert!(got.contains(want), "{url}: {got}");
        }
        assert_eq!(
            RepoName::gitlab("group/sub", "p").to_string(),
            "group/sub/p"
        );
        assert_eq!(
            forge_of("https://gitlab.example.org/x/y"),
            Some(ForgeKind::GitLab)
        );
        assert_eq!(forge_of("https://code.example.org/x/y"), None);
        // user info never becomes part of the host
        assert_eq!(
            remote_host("https://oauth2:t0ken@gitlab.com/g/p").as_deref(),
            Some("gitlab.com")
        );
    }

    #[test]
    fn permissions_are_ordered_and_parse() {
        assert!(Permission::Admin > Permission::Maintain);
        assert!(Permission::Maintain > Permission::Write);
        assert!(Permission::Write > Permission::Triage);
        assert!(Permission::Triage > Permission::Read);
        assert!(Permission::Read > Permission::None);
        for p in [
            Permission::None,
            Permission::Read,
            Permission::Triage,
            Permission::Write,
            Permission::Maintain,
            Permission::Admin,
        ] {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        assert_eq!(Permission::parse("custom-role"), None);
    }
}
