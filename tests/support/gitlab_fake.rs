//! An HTTP fake of the GitLab REST API v4 endpoints autobump uses, on 127.0.0.1, for
//! one project (`group/sub/infra`, id 42, in a nested group).
//!
//! * **Git-backed** ([`fake_git`](super::fake_git)): an MR's head is read from its
//!   source branch on every request (pushing moves it), its diffs are the changes from
//!   the merge base, conflicts are a real three-way merge, and merging writes a merge
//!   or squash commit onto the target branch.
//! * **In memory**: merge requests, labels, notes, pipelines, commit statuses (jobs and
//!   external), users and their project access levels, tokens.
//! * **HTTP behaviour** as GitLab documents it: `PRIVATE-TOKEN` (401 otherwise); the
//!   project by numeric id or URL-encoded path; `per_page`/`page` pagination with
//!   `Link`, `X-Page`, `X-Next-Page`, `X-Total`; weak `ETag`s and 304 for a matching
//!   `If-None-Match`; `RateLimit-*` headers on every answer (304s count too, as on
//!   GitLab); `PUT …/merge` checks `sha` against the head (409), refuses drafts,
//!   unapproved MRs (405, `detailed_merge_status: not_approved`) and accounts that may
//!   not merge into the target branch (401); conflicts answer 422.
//! * **Scripted failures** per operation ([`GitlabFake::fail_next`]): a status, or 429
//!   with `Retry-After`.
//! * **Webhook bodies** of merge request, note, pipeline and job events with the field
//!   names of GitLab's "Webhook events" page ([`GitlabFake::note_hook`], …).
//! * **Checked against a real client**: `tests/forge/gitlab.rs` drives this fake with
//!   python-gitlab.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use autobump::clock::{Clock, SystemClock};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::fake_git;
use crate::support::scripted::Served;

/// The project's id and path.
pub const PROJECT_ID: u64 = 42;
pub const PROJECT_PATH: &str = "group/sub/infra";
/// The bot's token, login and user id.
pub const BOT_TOKEN: &str = "glpat-bot-token";
pub const BOT: &str = "project_42_bot";
pub const BOT_ID: u64 = 1042;
/// The rate limit per window the fake announces.
pub const RATE_LIMIT: u64 = 2000;

/// A failure to answer instead of the real response.
#[derive(Debug, Clone)]
pub enum Failure {
    /// This status with GitLab's `{"message": …}` body.
    Status(u16),
    /// 429 with `Retry-After: secs`.
    RateLimited { retry_after: u64 },
}

#[derive(Debug, Clone)]
struct Mr {
    iid: u64,
    title: String,
    description: String,
    author_id: u64,
    source_branch: String,
    target_branch: String,
    state: &'static str,
    draft: bool,
    labels: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The head once merged or closed (the branch may move on).
    frozen_head: Option<String>,
    merge_commit_sha: Option<String>,
    squash_commit_sha: Option<String>,
    approved: bool,
}

#[derive(Debug, Clone)]
struct Note {
    id: u64,
    iid: u64,
    body: String,
    author_id: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    system: bool,
}

#[derive(Debug, Clone)]
struct Pipeline {
    id: u64,
    sha: String,
    git_ref: String,
    status: String,
}

#[derive(Debug, Clone)]
#[allow(clippy::struct_field_names)] // GitLab's names
struct Status {
    id: u64,
    sha: String,
    name: String,
    status: String,
    allow_failure: bool,
    /// `Some` for a pipeline's job, `None` for an external status.
    pipeline_id: Option<u64>,
}

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub operation: String,
    pub status: u16,
}

struct State {
    clock: Arc<dyn Clock>,
    git: git2::Repository,
    web: String,
    squash_option: String,
    tokens: HashMap<String, u64>,
    users: BTreeMap<u64, String>,
    access: HashMap<u64, u32>,
    may_not_merge: HashSet<u64>,
    require_approval: bool,
    mrs: BTreeMap<u64, Mr>,
    notes: Vec<Note>,
    pipelines: Vec<Pipeline>,
    statuses: Vec<Status>,
    next_id: u64,
    scripted: Vec<(String, u32, Failure)>,
    counts: HashMap<String, u64>,
    writes: u64,
    not_modified: u64,
    rate_remaining: u64,
    log: Vec<Recorded>,
}

/// The running fake; see the module docs.
pub struct GitlabFake {
    served: Served,
    state: Arc<Mutex<State>>,
    git_dir: PathBuf,
    _dir: tempfile::TempDir,
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// What one handler answers: status, JSON body, extra headers.
struct Answer {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    fn message(status: u16, message: &str) -> Self {
        Self::json(status, json!({ "message": message }))
    }
}

impl GitlabFake {
    /// A fake whose `main` holds `README.md`; the bot (`BOT_TOKEN`) is a Developer.
    pub async fn start() -> Self {
        autobump::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temporary directory for the fake's git repo");
        let git_dir = dir.path().join("infra.git");
        let git = git2::Repository::init_bare(&git_dir).expect("git init --bare");
        let state = Arc::new(Mutex::new(State {
            clock: Arc::new(SystemClock),
            git,
            web: String::new(),
            squash_option: "default_off".into(),
            tokens: HashMap::from([(BOT_TOKEN.to_owned(), BOT_ID)]),
            users: BTreeMap::from([(BOT_ID, BOT.to_owned())]),
            access: HashMap::from([(BOT_ID, 30)]),
            may_not_merge: HashSet::new(),
            require_approval: false,
            mrs: BTreeMap::new(),
            notes: Vec::new(),
            pipelines: Vec::new(),
            statuses: Vec::new(),
            next_id: 5000,
            scripted: Vec::new(),
            counts: HashMap::new(),
            writes: 0,
            not_modified: 0,
            rate_remaining: RATE_LIMIT,
            log: Vec::new(),
        }));
        let handler_state = Arc::clone(&state);
        let router = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = Arc::clone(&handler_state);
                async move { handle(&state, &method, &uri, &headers, &body) }
            },
        );
        let served = Served::start(router).await;
        let fake = Self {
            served,
            state,
            git_dir,
            _dir: dir,
        };
        fake.lock().web = fake.url();
        fake.commit(
            "main",
            &[("README.md", Some("# infra\n"))],
            "Initial commit",
        );
        fake
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `http://127.0.0.1:PORT`: GitLab's web root (the API is `/api/v4` under it).
    pub fn url(&self) -> String {
        format!("http://{}", self.served.addr())
    }

    /// The bare repository backing the branches.
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// Commits onto `branch` (see [`fake_git::commit`]); returns the new head.
    pub fn commit(&self, branch: &str, files: &[(&str, Option<&str>)], message: &str) -> String {
        let s = self.lock();
        fake_git::commit(&s.git, branch, files, message, s.clock.now().timestamp())
    }

    /// The SHA of `branch`.
    pub fn branch_sha(&self, branch: &str) -> Option<String> {
        fake_git::branch_sha(&self.lock().git, branch)
    }

    /// Adds a user (or changes one) with `access_level` on the project (0: not a
    /// member); returns its id.
    pub fn add_user(&self, username: &str, access_level: u32) -> u64 {
        let mut s = self.lock();
        let id = s
            .user_id(username)
            .unwrap_or_else(|| s.users.keys().max().copied().unwrap_or(0) + 1);
        s.users.insert(id, username.to_owned());
        if access_level > 0 {
            s.access.insert(id, access_level);
        } else {
            s.access.remove(&id);
        }
        id
    }

    /// CI runs job `name` on `sha` in `status`: in the latest pipeline for `sha` (a new
    /// one if there is none), whose status then follows its jobs (failed if one
    /// failed, running while one runs, else success).
    pub fn run_job(&self, sha: &str, name: &str, status: &str) {
        let pipeline = self
            .lock()
            .pipelines
            .iter()
            .filter(|p| p.sha == sha)
            .map(|p| p.id)
            .max();
        let pipeline = pipeline
            .unwrap_or_else(|| self.add_pipeline(sha, "refs/merge-requests/1/head", "running"));
        self.set_job(pipeline, name, status, false);
        let mut s = self.lock();
        let jobs: Vec<String> = s
            .statuses
            .iter()
            .filter(|j| j.pipeline_id == Some(pipeline))
            .map(|j| j.status.clone())
            .collect();
        let overall = if jobs.iter().any(|j| j == "failed") {
            "failed"
        } else if jobs.iter().all(|j| j == "success" || j == "skipped") {
            "success"
        } else {
            "running"
        };
        if let Some(p) = s.pipelines.iter_mut().find(|p| p.id == pipeline) {
            overall.clone_into(&mut p.status);
        }
    }

    /// A new pipeline for `sha` on `git_ref` in `status` (its jobs added with
    /// [`Self::add_job`]); returns its id.
    pub fn add_pipeline(&self, sha: &str, git_ref: &str, status: &str) -> u64 {
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        s.pipelines.push(Pipeline {
            id,
            sha: sha.to_owned(),
            git_ref: git_ref.to_owned(),
            status: status.to_owned(),
        });
        id
    }

    /// Changes a pipeline's status.
    pub fn set_pipeline_status(&self, id: u64, status: &str) {
        let mut s = self.lock();
        if let Some(p) = s.pipelines.iter_mut().find(|p| p.id == id) {
            status.clone_into(&mut p.status);
        }
    }

    /// Adds or updates the job `name` of `pipeline`.
    pub fn set_job(&self, pipeline: u64, name: &str, status: &str, allow_failure: bool) {
        let mut s = self.lock();
        let sha = s
            .pipelines
            .iter()
            .find(|p| p.id == pipeline)
            .map(|p| p.sha.clone())
            .expect("pipeline");
        s.upsert_status(&sha, name, status, allow_failure, Some(pipeline));
    }

    /// Sets the external commit status `name` of `sha`.
    pub fn set_status(&self, sha: &str, name: &str, status: &str) {
        self.lock().upsert_status(sha, name, status, false, None);
    }

    /// A note by `username` on MR `iid`; returns its id.
    pub fn add_note(&self, iid: u64, username: &str, body: &str) -> u64 {
        let mut s = self.lock();
        let author_id = s.user_id(username).expect("a user the fake knows");
        s.add_note(iid, author_id, body, false)
    }

    /// MRs must be approved before they merge (`PUT …/merge` answers 405 until
    /// [`Self::approve`]).
    pub fn require_approval(&self) {
        self.lock().require_approval = true;
    }

    /// Approves MR `iid`.
    pub fn approve(&self, iid: u64) {
        if let Some(mr) = self.lock().mrs.get_mut(&iid) {
            mr.approved = true;
        }
    }

    /// The bot may not merge into protected target branches (`PUT …/merge` → 401).
    pub fn protect_against_bot(&self) {
        self.lock().may_not_merge.insert(BOT_ID);
    }

    /// The project's squash option (`never`, `always`, `default_on`, `default_off`).
    pub fn set_squash_option(&self, option: &str) {
        option.clone_into(&mut self.lock().squash_option);
    }

    /// The next `times` requests of `operation` fail with `failure`.
    pub fn fail_next(&self, operation: &str, times: u32, failure: Failure) {
        self.lock()
            .scripted
            .push((operation.to_owned(), times, failure));
    }

    /// Requests of `operation` so far.
    pub fn requests(&self, operation: &str) -> u64 {
        self.lock().counts.get(operation).copied().unwrap_or(0)
    }

    /// All requests so far.
    pub fn total_requests(&self) -> u64 {
        self.lock().counts.values().sum()
    }

    /// Requests that changed something.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// GETs answered 304.
    pub fn not_modified(&self) -> u64 {
        self.lock().not_modified
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Recorded> {
        self.lock().log.clone()
    }

    /// MR `iid` as JSON (as `GET …/merge_requests/:iid` answers it).
    pub fn mr(&self, iid: u64) -> Value {
        let s = self.lock();
        s.mrs.get(&iid).map(|m| s.mr_json(m)).expect("MR")
    }

    /// The notes on MR `iid`, oldest first: `(author, body)`.
    pub fn notes(&self, iid: u64) -> Vec<(String, String)> {
        let s = self.lock();
        s.notes
            .iter()
            .filter(|n| n.iid == iid && !n.system)
            .map(|n| (s.users[&n.author_id].clone(), n.body.clone()))
            .collect()
    }

    /// Closes MR `iid` (as a person would).
    pub fn close(&self, iid: u64) {
        let mut s = self.lock();
        let now = s.clock.now();
        let head = s.mrs.get(&iid).map(|m| s.head(m));
        if let Some(mr) = s.mrs.get_mut(&iid) {
            mr.state = "closed";
            mr.frozen_head = head;
            mr.updated_at = now;
        }
    }

    /// The `Note Hook` body GitLab sends for note `id`.
    pub fn note_hook(&self, id: u64) -> Value {
        let s = self.lock();
        let note = s.notes.iter().find(|n| n.id == id).expect("note");
        let mr = &s.mrs[&note.iid];
        json!({
            "object_kind": "note",
            "event_type": "note",
            "user": s.user_json(note.author_id),
            "project_id": PROJECT_ID,
            "project": s.hook_project(),
            "repository": {"name": "infra", "url": format!("{}/{PROJECT_PATH}.git", s.web), "homepage": format!("{}/{PROJECT_PATH}", s.web)},
            "object_attributes": {
                "id": note.id,
                "note": note.body,
                "noteable_type": "MergeRequest",
                "author_id": note.author_id,
                "created_at": note.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                "updated_at": note.updated_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                "project_id": PROJECT_ID,
                "attachment": null,
                "line_code": null,
                "commit_id": "",
                "noteable_id": mr.iid + 100,
                "system": note.system,
                "st_diff": null,
                "action": "create",
                "url": format!("{}/{PROJECT_PATH}/-/merge_requests/{}#note_{}", s.web, mr.iid, note.id)
            },
            "merge_request": s.hook_mr(mr)
        })
    }

    /// The `Merge Request Hook` body for MR `iid` and `action` (`open`, `update`, …).
    pub fn merge_request_hook(&self, iid: u64, action: &str) -> Value {
        let s = self.lock();
        let mr = &s.mrs[&iid];
        let mut attributes = s.hook_mr(mr);
        attributes["action"] = json!(action);
        if action == "update" {
            attributes["oldrev"] = json!("0000000000000000000000000000000000000000");
        }
        json!({
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": s.user_json(BOT_ID),
            "project": s.hook_project(),
            "object_attributes": attributes,
            "labels": mr.labels.iter().map(|l| json!({"id": 1, "title": l, "color": "#428BCA", "project_id": PROJECT_ID, "type": "ProjectLabel"})).collect::<Vec<_>>(),
            "changes": {},
            "repository": {"name": "infra", "url": format!("{}/{PROJECT_PATH}.git", s.web)}
        })
    }

    /// The `Pipeline Hook` body for pipeline `id`.
    pub fn pipeline_hook(&self, id: u64) -> Value {
        let s = self.lock();
        let p = s.pipelines.iter().find(|p| p.id == id).expect("pipeline");
        json!({
            "object_kind": "pipeline",
            "object_attributes": {
                "id": p.id, "iid": p.id - 5000, "ref": p.git_ref, "tag": false, "sha": p.sha,
                "before_sha": "0000000000000000000000000000000000000000", "source": "merge_request_event",
                "status": p.status, "detailed_status": p.status, "stages": ["test"],
                "created_at": "2026-11-23 10:00:00 UTC", "finished_at": null, "duration": null,
                "variables": []
            },
            "merge_request": null,
            "user": s.user_json(BOT_ID),
            "project": s.hook_project(),
            "commit": {"id": p.sha, "message": "bump", "title": "bump"},
            "builds": s.statuses.iter().filter(|j| j.pipeline_id == Some(p.id)).map(|j| json!({"id": j.id, "stage": "test", "name": j.name, "status": j.status, "allow_failure": j.allow_failure})).collect::<Vec<_>>()
        })
    }

    /// The `Job Hook` body for job `name` of `pipeline`.
    pub fn job_hook(&self, pipeline: u64, name: &str) -> Value {
        let s = self.lock();
        let j = s
            .statuses
            .iter()
            .find(|j| j.pipeline_id == Some(pipeline) && j.name == name)
            .expect("job");
        json!({
            "object_kind": "build",
            "ref": "refs/merge-requests/1/head", "tag": false,
            "before_sha": "0000000000000000000000000000000000000000", "sha": j.sha,
            "build_id": j.id, "build_name": j.name, "build_stage": "test", "build_status": j.status,
            "build_allow_failure": j.allow_failure, "pipeline_id": pipeline,
            "project_id": PROJECT_ID, "project_name": "group / sub / infra",
            "user": s.user_json(BOT_ID),
            "commit": {"id": pipeline, "sha": j.sha, "message": "bump", "status": j.status},
            "repository": {"name": "infra", "url": format!("{}/{PROJECT_PATH}.git", s.web)},
            "project": s.hook_project()
        })
    }
}

impl State {
    fn user_id(&self, username: &str) -> Option<u64> {
        self.users
            .iter()
            .find(|(_, u)| u.eq_ignore_ascii_case(username))
            .map(|(id, _)| *id)
    }

    fn user_json(&self, id: u64) -> Value {
        let username = self.users.get(&id).cloned().unwrap_or_default();
        json!({
            "id": id, "username": username, "name": username, "state": "active",
            "avatar_url": null, "web_url": format!("{}/{username}", self.web)
        })
    }

    fn head(&self, mr: &Mr) -> String {
        mr.frozen_head
            .clone()
            .or_else(|| fake_git::branch_sha(&self.git, &mr.source_branch))
            .unwrap_or_default()
    }

    fn conflicts(&self, mr: &Mr) -> bool {
        let base = fake_git::branch_sha(&self.git, &mr.target_branch).unwrap_or_default();
        fake_git::merge_index(&self.git, &base, &self.head(mr)).is_none_or(|i| i.has_conflicts())
    }

    fn detailed_status(&self, mr: &Mr) -> &'static str {
        if mr.state != "opened" {
            "not_open"
        } else if mr.draft {
            "draft_status"
        } else if self.conflicts(mr) {
            "conflict"
        } else if self.require_approval && !mr.approved {
            "not_approved"
        } else {
            "mergeable"
        }
    }

    fn mr_json(&self, mr: &Mr) -> Value {
        let detailed = self.detailed_status(mr);
        json!({
            "id": mr.iid + 100,
            "iid": mr.iid,
            "project_id": PROJECT_ID,
            "title": mr.title,
            "description": mr.description,
            "state": mr.state,
            "created_at": ts(mr.created_at),
            "updated_at": ts(mr.updated_at),
            "merged_at": (mr.state == "merged").then(|| ts(mr.updated_at)),
            "closed_at": (mr.state == "closed").then(|| ts(mr.updated_at)),
            "target_branch": mr.target_branch,
            "source_branch": mr.source_branch,
            "author": self.user_json(mr.author_id),
            "source_project_id": PROJECT_ID,
            "target_project_id": PROJECT_ID,
            "labels": mr.labels,
            "draft": mr.draft,
            "work_in_progress": mr.draft,
            "merge_when_pipeline_succeeds": false,
            "merge_status": if detailed == "conflict" { "cannot_be_merged" } else { "can_be_merged" },
            "detailed_merge_status": detailed,
            "has_conflicts": detailed == "conflict",
            "sha": self.head(mr),
            "merge_commit_sha": mr.merge_commit_sha,
            "squash_commit_sha": mr.squash_commit_sha,
            "squash": false,
            "references": {"short": format!("!{}", mr.iid), "full": format!("{PROJECT_PATH}!{}", mr.iid)},
            "web_url": format!("{}/{PROJECT_PATH}/-/merge_requests/{}", self.web, mr.iid),
            "user_notes_count": self.notes.iter().filter(|n| n.iid == mr.iid && !n.system).count()
        })
    }

    fn hook_mr(&self, mr: &Mr) -> Value {
        json!({
            "id": mr.iid + 100, "iid": mr.iid, "title": mr.title, "description": mr.description,
            "state": mr.state, "action": null, "author_id": mr.author_id,
            "source_branch": mr.source_branch, "target_branch": mr.target_branch,
            "source_project_id": PROJECT_ID, "target_project_id": PROJECT_ID,
            "merge_status": "can_be_merged", "detailed_merge_status": self.detailed_status(mr),
            "created_at": mr.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            "updated_at": mr.updated_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            "last_commit": {"id": self.head(mr), "message": mr.title, "title": mr.title},
            "draft": mr.draft, "work_in_progress": mr.draft,
            "url": format!("{}/{PROJECT_PATH}/-/merge_requests/{}", self.web, mr.iid)
        })
    }

    fn hook_project(&self) -> Value {
        json!({
            "id": PROJECT_ID, "name": "infra", "description": "", "web_url": format!("{}/{PROJECT_PATH}", self.web),
            "git_ssh_url": format!("git@127.0.0.1:{PROJECT_PATH}.git"),
            "git_http_url": format!("{}/{PROJECT_PATH}.git", self.web),
            "namespace": "sub", "visibility_level": 0, "path_with_namespace": PROJECT_PATH,
            "default_branch": "main"
        })
    }

    fn upsert_status(
        &mut self,
        sha: &str,
        name: &str,
        status: &str,
        allow_failure: bool,
        pipeline_id: Option<u64>,
    ) {
        if let Some(s) = self
            .statuses
            .iter_mut()
            .find(|s| s.sha == sha && s.name == name && s.pipeline_id == pipeline_id)
        {
            status.clone_into(&mut s.status);
            s.allow_failure = allow_failure;
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.statuses.push(Status {
            id,
            sha: sha.to_owned(),
            name: name.to_owned(),
            status: status.to_owned(),
            allow_failure,
            pipeline_id,
        });
    }

    fn add_note(&mut self, iid: u64, author_id: u64, body: &str, system: bool) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let now = self.clock.now();
        self.notes.push(Note {
            id,
            iid,
            body: body.to_owned(),
            author_id,
            created_at: now,
            updated_at: now,
            system,
        });
        id
    }

    fn note_json(&self, n: &Note) -> Value {
        json!({
            "id": n.id, "type": null, "body": n.body, "attachment": null,
            "author": self.user_json(n.author_id),
            "created_at": ts(n.created_at), "updated_at": ts(n.updated_at),
            "system": n.system, "noteable_id": n.iid + 100, "noteable_type": "MergeRequest",
            "noteable_iid": n.iid, "project_id": PROJECT_ID, "resolvable": false,
            "confidential": false, "internal": false
        })
    }

    fn project_json(&self) -> Value {
        json!({
            "id": PROJECT_ID, "name": "infra", "path": "infra",
            "path_with_namespace": PROJECT_PATH, "name_with_namespace": "group / sub / infra",
            "namespace": {"id": 7, "name": "sub", "path": "sub", "kind": "group", "full_path": "group/sub"},
            "default_branch": "main", "web_url": format!("{}/{PROJECT_PATH}", self.web),
            "http_url_to_repo": format!("{}/{PROJECT_PATH}.git", self.web),
            "ssh_url_to_repo": format!("git@127.0.0.1:{PROJECT_PATH}.git"),
            "merge_method": "merge", "squash_option": self.squash_option,
            "only_allow_merge_if_pipeline_succeeds": false
        })
    }
}

/// A parsed query string.
fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

#[allow(clippy::too_many_lines)] // auth, scripting, ETag, pagination and rate headers in order
fn handle(
    state: &Mutex<State>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    // Path segments, percent-decoded one by one (the project path is one segment).
    let raw = uri.path();
    let segments: Vec<String> = raw
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let q = query(uri);
    let json_body: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        // python-gitlab sends some writes form-encoded.
        Value::Object(
            url::form_urlencoded::parse(body)
                .into_owned()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    });
    // Like GitLab (Grape), a parameter may come in the query string or in the body.
    let mut json_body = json_body;
    if let Value::Object(fields) = &mut json_body {
        for (k, v) in &q {
            fields
                .entry(k.clone())
                .or_insert_with(|| Value::String(v.clone()));
        }
    }
    let operation = operation(method, &seg);
    *s.counts.entry(operation.clone()).or_default() += 1;
    s.rate_remaining = s.rate_remaining.saturating_sub(1);
    let user = headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| s.tokens.get(t).copied());
    let answer = if let Some(i) = s
        .scripted
        .iter()
        .position(|(op, n, _)| *op == operation && *n > 0)
    {
        s.scripted[i].1 -= 1;
        match s.scripted[i].2.clone() {
            Failure::Status(status) => Answer::message(status, &format!("{status} scripted")),
            Failure::RateLimited { retry_after } => {
                let mut a = Answer::message(429, "Retry later");
                a.headers.push(("retry-after", retry_after.to_string()));
                a
            }
        }
    } else {
        match user {
            None => Answer::message(401, "401 Unauthorized"),
            Some(user) => route(&mut s, method, &seg, &q, &json_body, user),
        }
    };
    if method != Method::GET && (200..300).contains(&answer.status) {
        s.writes += 1;
    }
    let text = answer.body.to_string();
    let etag = format!("W/\"{}\"", hex(&Sha256::digest(text.as_bytes())[..16]));
    let not_modified = method == Method::GET
        && answer.status == 200
        && headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == etag);
    let status = if not_modified { 304 } else { answer.status };
    s.log.push(Recorded {
        method: method.to_string(),
        path: uri.to_string(),
        operation,
        status,
    });
    if not_modified {
        s.not_modified += 1;
    }
    let reset = s.clock.now().timestamp() + 60;
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            StatusCode::from_u16(status).expect("status"),
            [("content-type", "application/json")],
            text,
        )
            .into_response()
    };
    let h = response.headers_mut();
    let mut put = |name: &'static str, value: String| {
        h.insert(name, HeaderValue::from_str(&value).expect("header"));
    };
    if method == Method::GET && answer.status == 200 {
        put("etag", etag);
    }
    put("ratelimit-limit", RATE_LIMIT.to_string());
    put(
        "ratelimit-observed",
        (RATE_LIMIT - s.rate_remaining).to_string(),
    );
    put("ratelimit-remaining", s.rate_remaining.to_string());
    put("ratelimit-reset", reset.to_string());
    for (name, value) in answer.headers {
        if name == "x-autobump-next" {
            // `Link` to the next page: this URL with `page` replaced.
            let host = headers
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("127.0.0.1");
            let mut q: Vec<(String, String)> = query(uri)
                .into_iter()
                .filter(|(k, _)| k != "page")
                .collect();
            q.sort();
            q.push(("page".into(), value));
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(q)
                .finish();
            put(
                "link",
                format!("<http://{host}{}?{query}>; rel=\"next\"", uri.path()),
            );
        } else {
            put(name, value);
        }
    }
    response
}

/// `%XX` escapes decoded (GitLab takes the project path as one encoded segment).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(u8::try_from(h * 16 + l).expect("a byte"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A name per documented operation (`mrs/list`, …), for counters and scripting.
fn operation(method: &Method, seg: &[&str]) -> String {
    let m = method.as_str();
    let name = match (m, seg) {
        ("GET", ["api", "v4", "user"]) => "user/get",
        ("GET", ["api", "v4", "users"]) => "users/list",
        ("GET", ["api", "v4", "projects", _]) => "projects/get",
        ("GET", ["api", "v4", "projects", _, "merge_requests"]) => "mrs/list",
        ("POST", ["api", "v4", "projects", _, "merge_requests"]) => "mrs/create",
        ("GET", ["api", "v4", "projects", _, "merge_requests", _]) => "mrs/get",
        ("PUT", ["api", "v4", "projects", _, "merge_requests", _]) => "mrs/update",
        ("PUT", ["api", "v4", "projects", _, "merge_requests", _, "merge"]) => "mrs/merge",
        ("GET", ["api", "v4", "projects", _, "merge_requests", _, "diffs"]) => "mrs/diffs",
        ("GET", ["api", "v4", "projects", _, "merge_requests", _, "notes"]) => "notes/list",
        ("POST", ["api", "v4", "projects", _, "merge_requests", _, "notes"]) => "notes/create",
        ("GET", ["api", "v4", "projects", _, "pipelines"]) => "pipelines/list",
        (
            "GET",
            [
                "api",
                "v4",
                "projects",
                _,
                "repository",
                "commits",
                _,
                "statuses",
            ],
        ) => "statuses/list",
        ("POST", ["api", "v4", "projects", _, "statuses", _]) => "statuses/create",
        ("GET", ["api", "v4", "projects", _, "members", "all", _]) => "members/get",
        _ => "unknown",
    };
    name.to_owned()
}

#[allow(clippy::too_many_lines)] // one match arm per documented operation
fn route(
    s: &mut State,
    method: &Method,
    seg: &[&str],
    q: &HashMap<String, String>,
    body: &Value,
    user: u64,
) -> Answer {
    let not_found = || Answer::message(404, "404 Not found");
    // The project, by id or by path.
    if let ["api", "v4", "projects", id, ..] = seg
        && *id != PROJECT_ID.to_string()
        && *id != PROJECT_PATH
    {
        return Answer::message(404, "404 Project Not Found");
    }
    let page = |items: Vec<Value>| paginate(items, q);
    let iid = |text: &str| text.parse::<u64>().ok();
    match (method.as_str(), seg) {
        ("GET", ["api", "v4", "user"]) => Answer::json(200, s.user_json(user)),
        ("GET", ["api", "v4", "users"]) => {
            let want = q.get("username").map(String::as_str).unwrap_or_default();
            page(
                s.users
                    .iter()
                    .filter(|(_, u)| u.eq_ignore_ascii_case(want))
                    .map(|(id, _)| s.user_json(*id))
                    .collect(),
            )
        }
        ("GET", ["api", "v4", "projects", _]) => Answer::json(200, s.project_json()),
        ("GET", ["api", "v4", "projects", _, "members", "all", id]) => {
            match iid(id).and_then(|id| s.access.get(&id).map(|level| (id, *level))) {
                Some((id, level)) => {
                    let mut member = s.user_json(id);
                    member["access_level"] = json!(level);
                    member["expires_at"] = Value::Null;
                    Answer::json(200, member)
                }
                None => not_found(),
            }
        }
        ("GET", ["api", "v4", "projects", _, "merge_requests"]) => {
            let wanted = |m: &&Mr| {
                q.get("state").is_none_or(|st| st == "all" || st == m.state)
                    && q.get("source_branch").is_none_or(|b| *b == m.source_branch)
                    && q
                        .get("author_username")
                        .is_none_or(|a| s.users.get(&m.author_id).is_some_and(|u| u == a))
            };
            let mut mrs: Vec<&Mr> = s.mrs.values().filter(wanted).collect();
            if q.get("sort").is_none_or(|d| d == "desc") {
                mrs.reverse();
            }
            page(mrs.into_iter().map(|m| s.mr_json(m)).collect())
        }
        ("POST", ["api", "v4", "projects", _, "merge_requests"]) => create_mr(s, body, user),
        ("GET", ["api", "v4", "projects", _, "merge_requests", n]) => {
            match iid(n).and_then(|n| s.mrs.get(&n)) {
                Some(mr) => Answer::json(200, s.mr_json(mr)),
                None => not_found(),
            }
        }
        ("PUT", ["api", "v4", "projects", _, "merge_requests", n]) => {
            let Some(n) = iid(n).filter(|n| s.mrs.contains_key(n)) else {
                return not_found();
            };
            update_mr(s, n, body)
        }
        ("PUT", ["api", "v4", "projects", _, "merge_requests", n, "merge"]) => {
            let Some(n) = iid(n).filter(|n| s.mrs.contains_key(n)) else {
                return not_found();
            };
            merge(s, n, body, user)
        }
        ("GET", ["api", "v4", "projects", _, "merge_requests", n, "diffs"]) => {
            let Some(mr) = iid(n).and_then(|n| s.mrs.get(&n)) else {
                return not_found();
            };
            let base = fake_git::branch_sha(&s.git, &mr.target_branch).unwrap_or_default();
            let rows = fake_git::diff(&s.git, &base, &s.head(mr));
            page(
                rows.into_iter()
                    .map(|r| {
                        json!({
                            "old_path": r.old_path, "new_path": r.path,
                            "a_mode": "100644", "b_mode": "100644",
                            "new_file": r.status == git2::Delta::Added,
                            "renamed_file": r.status == git2::Delta::Renamed,
                            "deleted_file": r.status == git2::Delta::Deleted,
                            "generated_file": false,
                            "diff": r.hunks.unwrap_or_default()
                        })
                    })
                    .collect(),
            )
        }
        ("GET", ["api", "v4", "projects", _, "merge_requests", n, "notes"]) => {
            let Some(n) = iid(n).filter(|n| s.mrs.contains_key(n)) else {
                return not_found();
            };
            let mut notes: Vec<&Note> = s.notes.iter().filter(|x| x.iid == n).collect();
            if q.get("sort").is_none_or(|d| d == "desc") {
                notes.reverse();
            }
            page(notes.into_iter().map(|x| s.note_json(x)).collect())
        }
        ("POST", ["api", "v4", "projects", _, "merge_requests", n, "notes"]) => {
            let Some(n) = iid(n).filter(|n| s.mrs.contains_key(n)) else {
                return not_found();
            };
            let Some(text) = body["body"].as_str().filter(|b| !b.trim().is_empty()) else {
                return Answer::message(400, "400 Bad request - body is missing");
            };
            let id = s.add_note(n, user, text, false);
            let note = s.notes.iter().find(|x| x.id == id).expect("note");
            Answer::json(201, s.note_json(note))
        }
        ("GET", ["api", "v4", "projects", _, "pipelines"]) => {
            let mut pipelines: Vec<&Pipeline> = s
                .pipelines
                .iter()
                .filter(|p| q.get("sha").is_none_or(|sha| *sha == p.sha))
                .filter(|p| q.get("ref").is_none_or(|r| *r == p.git_ref))
                .collect();
            pipelines.sort_by_key(|p| p.id);
            if q.get("sort").is_none_or(|d| d == "desc") {
                pipelines.reverse();
            }
            page(
                pipelines
                    .into_iter()
                    .map(|p| {
                        json!({
                            "id": p.id, "iid": p.id - 5000, "project_id": PROJECT_ID, "sha": p.sha,
                            "ref": p.git_ref, "status": p.status, "source": "merge_request_event",
                            "created_at": "2026-11-23T10:00:00.000Z", "updated_at": "2026-11-23T10:00:00.000Z",
                            "web_url": format!("{}/{PROJECT_PATH}/-/pipelines/{}", s.web, p.id)
                        })
                    })
                    .collect(),
            )
        }
        ("GET", ["api", "v4", "projects", _, "repository", "commits", sha, "statuses"]) => page(
            s.statuses
                .iter()
                .filter(|x| x.sha == *sha)
                .map(|x| {
                    json!({
                        "id": x.id, "sha": x.sha, "ref": "main", "status": x.status, "name": x.name,
                        "target_url": null, "description": null, "created_at": "2026-11-23T10:00:00.000Z",
                        "started_at": null, "finished_at": null, "allow_failure": x.allow_failure,
                        "coverage": null, "pipeline_id": x.pipeline_id,
                        "author": s.user_json(BOT_ID)
                    })
                })
                .collect(),
        ),
        ("POST", ["api", "v4", "projects", _, "statuses", sha]) => {
            let (Some(state), name) = (
                body["state"].as_str(),
                body["name"].as_str().or(body["context"].as_str()).unwrap_or("default"),
            ) else {
                return Answer::message(400, "400 Bad request - state is missing");
            };
            let (sha, name, state) = ((*sha).to_owned(), name.to_owned(), state.to_owned());
            s.upsert_status(&sha, &name, &state, false, None);
            Answer::json(201, json!({"id": s.next_id, "sha": sha, "name": name, "status": state, "allow_failure": false}))
        }
        _ => not_found(),
    }
}

fn paginate(items: Vec<Value>, q: &HashMap<String, String>) -> Answer {
    let per_page = q
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let pages = total.div_ceil(per_page).max(1);
    let body: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut answer = Answer::json(200, Value::Array(body));
    answer.headers.push(("x-page", page.to_string()));
    answer.headers.push(("x-per-page", per_page.to_string()));
    answer.headers.push(("x-total", total.to_string()));
    answer.headers.push(("x-total-pages", pages.to_string()));
    answer.headers.push((
        "x-next-page",
        if page < pages {
            (page + 1).to_string()
        } else {
            String::new()
        },
    ));
    // The handler knows no host: the `Link` is completed in `with_link`.
    if page < pages {
        answer
            .headers
            .push(("x-autobump-next", (page + 1).to_string()));
    }
    answer
}

fn create_mr(s: &mut State, body: &Value, user: u64) -> Answer {
    let field = |name: &str| body[name].as_str().map(str::to_owned);
    let (Some(source), Some(target), Some(title)) = (
        field("source_branch"),
        field("target_branch"),
        field("title"),
    ) else {
        return Answer::message(
            400,
            "400 Bad request - source_branch, target_branch, title are missing",
        );
    };
    if fake_git::branch_sha(&s.git, &source).is_none() {
        return Answer::json(422, json!({"message": ["Source branch does not exist"]}));
    }
    if s.mrs
        .values()
        .any(|m| m.state == "opened" && m.source_branch == source && m.target_branch == target)
    {
        return Answer::json(
            409,
            json!({"message": [format!("Another open merge request already exists for this source branch: !1")]}),
        );
    }
    let now = s.clock.now();
    let iid = s.mrs.keys().next_back().map_or(1, |n| n + 1);
    let draft = title.starts_with("Draft:");
    let labels = field("labels")
        .map(|l| {
            l.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mr = Mr {
        iid,
        title,
        description: field("description").unwrap_or_default(),
        author_id: user,
        source_branch: source,
        target_branch: target,
        state: "opened",
        draft,
        labels,
        created_at: now,
        updated_at: now,
        frozen_head: None,
        merge_commit_sha: None,
        squash_commit_sha: None,
        approved: false,
    };
    let json = s.mr_json(&mr);
    s.mrs.insert(iid, mr);
    Answer::json(201, json)
}

fn update_mr(s: &mut State, iid: u64, body: &Value) -> Answer {
    let now = s.clock.now();
    let split = |v: &Value| -> Vec<String> {
        v.as_str()
            .map(|t| {
                t.split(',')
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mr = s.mrs.get_mut(&iid).expect("checked");
    if let Some(title) = body["title"].as_str() {
        title.clone_into(&mut mr.title);
        mr.draft = title.starts_with("Draft:");
    }
    if let Some(description) = body["description"].as_str() {
        description.clone_into(&mut mr.description);
    }
    if body.get("labels").is_some_and(|l| !l.is_null()) {
        mr.labels = split(&body["labels"]);
    }
    for label in split(&body["add_labels"]) {
        if !mr.labels.contains(&label) {
            mr.labels.push(label);
        }
    }
    let remove = split(&body["remove_labels"]);
    mr.labels.retain(|l| !remove.contains(l));
    mr.updated_at = now;
    let mr = s.mrs[&iid].clone();
    Answer::json(200, s.mr_json(&mr))
}

fn merge(s: &mut State, iid: u64, body: &Value, user: u64) -> Answer {
    let mr = s.mrs[&iid].clone();
    let head = s.head(&mr);
    match s.detailed_status(&mr) {
        "not_open" | "draft_status" | "not_approved" => {
            return Answer::message(405, "405 Method Not Allowed");
        }
        _ => {}
    }
    if s.may_not_merge.contains(&user) {
        return Answer::message(401, "401 Unauthorized");
    }
    if let Some(sha) = body["sha"].as_str()
        && sha != head
    {
        return Answer::message(409, "SHA does not match HEAD of source branch");
    }
    let squash = match s.squash_option.as_str() {
        "never" => false,
        "always" => true,
        _ => {
            matches!(&body["squash"], Value::Bool(true))
                || body["squash"]
                    .as_str()
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        }
    };
    let message = format!("{}\n\nSee merge request {PROJECT_PATH}!{iid}", mr.title);
    let at = s.clock.now().timestamp();
    let Some(sha) = fake_git::merge(
        &s.git,
        &mr.target_branch,
        &head,
        squash,
        (&message, "GitLab", at),
    ) else {
        return Answer::message(422, "Branch cannot be merged");
    };
    let now = s.clock.now();
    let m = s.mrs.get_mut(&iid).expect("MR");
    m.state = "merged";
    m.frozen_head = Some(head);
    m.updated_at = now;
    if squash {
        m.squash_commit_sha = Some(sha);
    } else {
        m.merge_commit_sha = Some(sha);
    }
    let mr = s.mrs[&iid].clone();
    Answer::json(200, s.mr_json(&mr))
}
