//! The parts of GitHub's JSON that autobump reads, and the bodies it sends (pure).
//!
//! Only the fields used are declared; serde ignores the rest, so GitHub adding fields
//! never breaks parsing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    ChangedFile, CheckConclusion, CheckRun, CheckStatus, Comment, CommitStatus, FileStatus,
    MergeableState, PullRequest, StatusState,
};

#[derive(Debug, Deserialize)]
pub(super) struct User {
    pub login: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct Label {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct Repo {
    pub full_name: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct Branch {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub sha: String,
    /// `null` when the fork was deleted.
    pub repo: Option<Repo>,
}

/// `pull-request` and `pull-request-simple` (list) share these fields.
#[derive(Debug, Deserialize)]
pub(super) struct Pull {
    pub number: u64,
    pub state: String,
    pub title: String,
    pub body: Option<String>,
    pub user: Option<User>,
    #[serde(default)]
    pub draft: bool,
    pub head: Branch,
    pub base: Branch,
    #[serde(default)]
    pub labels: Vec<Label>,
    pub html_url: String,
    pub updated_at: DateTime<Utc>,
    /// Only in `pull-request` (single PR), not in lists.
    #[serde(default)]
    pub merged: bool,
    #[serde(default)]
    pub mergeable: Option<bool>,
    #[serde(default)]
    pub mergeable_state: Option<MergeableState>,
}

impl Pull {
    pub fn into_pull_request(self) -> PullRequest {
        PullRequest {
            number: self.number,
            title: self.title,
            body: self.body.unwrap_or_default(),
            author: self.user.map(|u| u.login).unwrap_or_default(),
            open: self.state == "open",
            draft: self.draft,
            head_branch: self.head.ref_,
            head_sha: self.head.sha,
            base_branch: self.base.ref_,
            labels: self.labels.into_iter().map(|l| l.name).collect(),
            html_url: self.html_url,
            updated_at: self.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct CreatePull<'a> {
    pub title: &'a str,
    pub body: &'a str,
    pub head: &'a str,
    pub base: &'a str,
    pub draft: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct UpdatePull<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub(super) struct AddLabels<'a> {
    pub labels: &'a [String],
}

#[derive(Debug, Serialize)]
pub(super) struct CreateComment<'a> {
    pub body: &'a str,
}

#[derive(Debug, Serialize)]
pub(super) struct MergePull<'a> {
    pub merge_method: &'a str,
    pub sha: &'a str,
}

#[derive(Debug, Deserialize)]
pub(super) struct MergeResult {
    pub merged: bool,
    pub sha: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct IssueComment {
    pub id: u64,
    #[serde(default)]
    pub body: Option<String>,
    pub user: Option<User>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub html_url: String,
}

impl From<IssueComment> for Comment {
    fn from(c: IssueComment) -> Self {
        Self {
            id: c.id,
            body: c.body.unwrap_or_default(),
            author: c.user.map(|u| u.login).unwrap_or_default(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            html_url: c.html_url,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct DiffEntry {
    pub filename: String,
    #[serde(default)]
    pub previous_filename: Option<String>,
    pub status: FileStatus,
    pub additions: u64,
    pub deletions: u64,
    #[serde(default)]
    pub patch: Option<String>,
}

impl From<DiffEntry> for ChangedFile {
    fn from(d: DiffEntry) -> Self {
        Self {
            filename: d.filename,
            previous_filename: d.previous_filename,
            status: d.status,
            additions: d.additions,
            deletions: d.deletions,
            patch: d.patch,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct SimpleStatus {
    pub context: String,
    pub state: StatusState,
    pub description: Option<String>,
    pub target_url: Option<String>,
}

impl From<SimpleStatus> for CommitStatus {
    fn from(s: SimpleStatus) -> Self {
        Self {
            context: s.context,
            state: s.state,
            description: s.description,
            target_url: s.target_url,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Combined {
    pub state: StatusState,
    pub sha: String,
    pub statuses: Vec<SimpleStatus>,
}

#[derive(Debug, Deserialize)]
pub(super) struct CheckRunWire {
    pub id: u64,
    pub name: String,
    pub head_sha: String,
    pub status: CheckStatus,
    pub conclusion: Option<CheckConclusion>,
    pub details_url: Option<String>,
}

impl From<CheckRunWire> for CheckRun {
    fn from(c: CheckRunWire) -> Self {
        Self {
            id: c.id,
            name: c.name,
            head_sha: c.head_sha,
            status: c.status,
            conclusion: c.conclusion,
            details_url: c.details_url,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CheckRuns {
    pub check_runs: Vec<CheckRunWire>,
}

#[derive(Debug, Deserialize)]
pub(super) struct CollaboratorPermission {
    pub permission: String,
    #[serde(default)]
    pub role_name: Option<String>,
}

/// `integration` (`GET /app`): only its slug is needed.
#[derive(Debug, Deserialize)]
pub(super) struct App {
    pub slug: String,
}

/// `installation`: only its id is needed.
#[derive(Debug, Deserialize)]
pub(super) struct Installation {
    pub id: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct InstallationToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// `basic-error`: `{message, documentation_url}`.
#[derive(Debug, Deserialize, Default)]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub message: String,
}
