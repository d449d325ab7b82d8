//! The GitLab implementation of [`Forge`] (does I/O: HTTPS to GitLab's REST API v4,
//! gitlab.com or self-managed).
//!
//! A pull request is a merge request (its `iid` is the number), a comment is a note
//! (system notes are left out), labels are the MR's labels. The rest maps as follows:
//!
//! * **Checks**: the latest pipeline for the head commit (`GET …/pipelines?sha=`, as a
//!   whole under [`PIPELINE_CHECK`]) and the commit's statuses (`GET
//!   …/repository/commits/:sha/statuses`: the pipeline's jobs under their names and
//!   external statuses under theirs). A job allowed to fail counts as passed when it
//!   fails; `merge.requiredChecks` names jobs, external statuses or `pipeline`.
//! * **Merging**: `PUT …/merge_requests/:iid/merge` with `sha` (GitLab answers 409 when
//!   the head moved, and merges nothing); `squash` as `merge.method` says unless the
//!   project's squash option is `always` or `never`. A refusal (approvals, a protected
//!   branch, a role that may not merge) is remembered for that head: the MR then reads
//!   as not mergeable, so the reconcile waits and says why instead of trying again.
//! * **Permissions**: a user's project role (`GET …/members/all/:id`, inherited
//!   memberships included) mapped onto GitHub's scale: Owner → admin, Maintainer →
//!   maintain, Developer → write, Reporter → triage, Guest and Minimal Access → read.
//! * **Auth**: a personal, group or project access token in `PRIVATE-TOKEN`.
//! * **Politeness**: as the GitHub client — a timeout on every attempt, exponential
//!   back-off with jitter on 5xx, timeouts and connection errors (never re-sending a
//!   request that is not safe to repeat); `RateLimit-Remaining`/`RateLimit-Reset` are
//!   recorded and an exhausted budget is waited out before sending; a 429 waits as
//!   `Retry-After` (else `RateLimit-Reset`, else a minute) says, up to
//!   [`RetryPolicy::max_rate_limit_wait`].
//! * **Cost**: conditional GETs with the `ETag`s GitLab sends (a 304 saves the body; on
//!   GitLab it still counts against the rate limit), and with a [`WebhookFeed`] fed by
//!   `/webhooks/gitlab`, relaxed reads that deliveries prove unchanged cost nothing.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{ETAG, HeaderMap, IF_NONE_MATCH, LINK, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ForgeError;
use super::feed::{Watch, WebhookFeed};
use super::github::{encode, header_parse, next_link};
use super::rest::{self, CachedGet, EtagCache, Reply};
use super::stats::{ForgeStats, RequestKind};
use super::{
    ChangedFile, Check, CheckState, Comment, DeliveredComment, FileStatus, Forge, ForgeKind,
    MergeMethod, Mergeability, MergeableState, Merged, NewPullRequest, PIPELINE_CHECK, Permission,
    PullRequest, PullRequestEdit, RepoName, RetryPolicy,
};
use crate::clock::Clock;

/// Settings of a [`GitLab`] client.
#[derive(Clone)]
pub struct GitLabConfig {
    /// GitLab's web root: `https://gitlab.com`, or a self-managed instance (with its
    /// relative URL root, e.g. `https://example.com/gitlab`). The API is `/api/v4`
    /// under it.
    pub url: String,
    /// A personal, group or project access token (scope `api`).
    pub token: String,
    /// One attempt (connect, send, read the whole body) must finish within this.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// How many GET answers (one per URL) the conditional-request cache keeps.
    pub etag_cache_entries: usize,
    /// The most pages a paginated read follows (100 items each) before it fails with
    /// [`ForgeError::InvalidResponse`] rather than return a partial list.
    pub max_pages: u32,
    /// The largest response body accepted.
    pub max_response_bytes: usize,
}

impl fmt::Debug for GitLabConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitLabConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl GitLabConfig {
    /// Defaults for `token` against `url`.
    #[must_use]
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            etag_cache_entries: 1024,
            max_pages: 30,
            max_response_bytes: 16 * 1024 * 1024,
        }
    }

    /// The same with another retry policy.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// A GitLab REST API client implementing [`Forge`]; cheap to share behind an `Arc`.
pub struct GitLab {
    http: reqwest::Client,
    /// `…/api/v4`, no trailing slash.
    api: url::Url,
    config: GitLabConfig,
    clock: Arc<dyn Clock>,
    stats: Arc<ForgeStats>,
    etags: Mutex<EtagCache>,
    feed: Option<Arc<WebhookFeed>>,
    /// Usernames by user id, learnt from every MR and note read (webhook payloads name
    /// an MR's author by id only).
    usernames: Mutex<HashMap<u64, String>>,
    /// User ids by lower-cased username (`None`: no such user).
    user_ids: Mutex<HashMap<String, Option<u64>>>,
    /// Merges GitLab refused, by MR key.
    refused: Mutex<HashMap<String, Refusal>>,
}

/// A merge GitLab refused.
struct Refusal {
    /// The head it was refused at.
    head: String,
    /// GitLab's `detailed_merge_status` at the first read after the refusal.
    status: Option<String>,
    /// GitLab's answer.
    message: String,
}

impl fmt::Debug for GitLab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitLab")
            .field("api", &self.api.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
}

/// One logical request: what it is for, where, and whether it may be repeated.
struct Request {
    kind: RequestKind,
    method: Method,
    /// Path and query under the API root (`/projects/…`).
    path: String,
    body: Option<serde_json::Value>,
    /// Safe to send again after a 5xx or timeout (GET, PUT).
    idempotent: bool,
    relaxed: Option<(Watch, String)>,
}

impl Request {
    fn new(kind: RequestKind, method: Method, path: String) -> Self {
        Self {
            kind,
            method,
            path,
            body: None,
            idempotent: method != Method::Post,
            relaxed: None,
        }
    }

    fn body(mut self, body: &impl Serialize) -> Result<Self, ForgeError> {
        self.body = Some(
            serde_json::to_value(body).map_err(|e| ForgeError::InvalidResponse {
                what: self.what(),
                detail: format!("request body: {e}"),
            })?,
        );
        Ok(self)
    }

    fn what(&self) -> String {
        let method = match self.method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        };
        let path = self.path.split('?').next().unwrap_or_default();
        format!("{method} {path}")
    }
}

enum Outcome {
    Done(Reply),
    Retry { wait: Duration, error: ForgeError },
    Fail(ForgeError),
}

impl GitLab {
    /// A client for `config`, taking time (rate-limit resets) from `clock`.
    ///
    /// # Errors
    /// [`ForgeError::Config`]: an unusable URL or token, or no TLS.
    pub fn new(config: GitLabConfig, clock: Arc<dyn Clock>) -> Result<Self, ForgeError> {
        crate::install_crypto_provider();
        let config_error = |detail: String| ForgeError::Config { detail };
        let mut api = url::Url::parse(config.url.trim_end_matches('/'))
            .map_err(|e| config_error(format!("GitLab URL {:?}: {e}", config.url)))?;
        if !matches!(api.scheme(), "https" | "http") || api.host_str().is_none() {
            return Err(config_error(format!(
                "GitLab URL {:?}: want https://HOST[/PATH]",
                config.url
            )));
        }
        let root = api.path().trim_end_matches('/').to_owned();
        api.set_path(&format!("{root}/api/v4"));
        let mut headers = HeaderMap::new();
        let mut token = reqwest::header::HeaderValue::from_str(&config.token)
            .map_err(|_| config_error("the GitLab token is not a valid header value".into()))?;
        token.set_sensitive(true);
        headers.insert("PRIVATE-TOKEN", token);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("autobump/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| config_error(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            api,
            etags: Mutex::new(EtagCache::new(config.etag_cache_entries)),
            config,
            clock,
            stats: Arc::new(ForgeStats::default()),
            feed: None,
            usernames: Mutex::default(),
            user_ids: Mutex::default(),
            refused: Mutex::default(),
        })
    }

    /// The same client, answering relaxed reads from memory when `feed` (filled by
    /// the `/webhooks/gitlab` receiver) proves them unchanged.
    #[must_use]
    pub fn with_feed(mut self, feed: Arc<WebhookFeed>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// The request counters and rate-limit budget, for metrics and benchmarks.
    #[must_use]
    pub fn stats(&self) -> Arc<ForgeStats> {
        Arc::clone(&self.stats)
    }

    /// GitLab's web root, as configured.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// The host (`HOST[:PORT]`) of GitLab's web root: its HTTPS git remotes get the
    /// token.
    #[must_use]
    pub fn git_host(&self) -> Option<String> {
        let host = self.api.host_str()?.to_ascii_lowercase();
        Some(match self.api.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // A poisoned lock only means a panic elsewhere mid-update; the maps stay usable.
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn relax(&self, watch: Watch, key: String) -> Option<(Watch, String)> {
        self.feed.as_ref().map(|_| (watch, key))
    }

    fn answer_from_feed(&self, request: &Request) -> Option<Reply> {
        let (feed, (watch, key)) = (self.feed.as_ref()?, request.relaxed.as_ref()?);
        let reply = Self::lock(&self.etags).proven_by(
            &request.path,
            feed,
            (*watch, key),
            self.clock.now(),
        )?;
        self.stats.count_from_webhooks();
        Some(reply)
    }

    /// Sends `request`, retrying as the policy allows.
    async fn send(&self, request: &Request) -> Result<Reply, ForgeError> {
        if let Some(reply) = self.answer_from_feed(request) {
            return Ok(reply);
        }
        let max_attempts = self.config.retry.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(request, attempt).await? {
                Outcome::Done(reply) => return Ok(reply),
                Outcome::Fail(error) => return Err(error),
                Outcome::Retry { wait, error } => {
                    if attempt >= max_attempts {
                        return Err(error);
                    }
                    tracing::debug!(request = %request.what(), attempt, "retrying GitLab request");
                    self.stats.count_retry();
                    self.stats.add_backoff(wait);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(&self, request: &Request, attempt: u32) -> Result<Outcome, ForgeError> {
        self.wait_for_budget(request).await?;
        let etag = (request.method == Method::Get)
            .then(|| {
                Self::lock(&self.etags)
                    .get(&request.path)
                    .map(|c| c.etag.clone())
            })
            .flatten();
        let generation = self.feed.as_ref().map_or(0, |f| f.generation());
        let sent_at = self.clock.now();
        self.stats.count_request(request.kind);
        let exchanged = tokio::time::timeout(
            self.config.request_timeout,
            self.exchange(request, etag.as_deref()),
        )
        .await;
        let (status, headers, body) = match exchanged {
            Err(_elapsed) => {
                let error = ForgeError::Timeout {
                    what: request.what(),
                    attempts: attempt,
                };
                return Ok(self.transient(request, attempt, error));
            }
            Ok(Err(detail)) => {
                let error = ForgeError::Connection {
                    what: request.what(),
                    attempts: attempt,
                    detail,
                };
                return Ok(self.transient(request, attempt, error));
            }
            Ok(Ok(answer)) => answer,
        };
        let remaining = header_parse::<u64>(&headers, "ratelimit-remaining");
        let reset = header_parse::<i64>(&headers, "ratelimit-reset");
        self.stats.record_rate_limit(remaining, reset);
        if body.len() > self.config.max_response_bytes {
            return Ok(Outcome::Fail(ForgeError::InvalidResponse {
                what: request.what(),
                detail: format!(
                    "body of {} bytes is over the limit of {}",
                    body.len(),
                    self.config.max_response_bytes
                ),
            }));
        }
        let link = headers
            .get(LINK)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(match status {
            304 => self.not_modified(request, etag.is_some(), (generation, sent_at)),
            200..=299 => {
                if request.method == Method::Get
                    && let Some(etag) = headers.get(ETAG).and_then(|v| v.to_str().ok())
                {
                    Self::lock(&self.etags).put(
                        request.path.clone(),
                        CachedGet {
                            etag: etag.to_owned(),
                            status,
                            body: body.clone(),
                            link: link.clone(),
                            generation,
                            confirmed_at: sent_at,
                        },
                    );
                }
                Outcome::Done(Reply { status, body, link })
            }
            429 => {
                self.stats.count_rate_limited();
                let wait = header_parse::<u64>(&headers, RETRY_AFTER)
                    .map(Duration::from_secs)
                    .or_else(|| reset.map(|r| self.until(r)))
                    .unwrap_or(Duration::from_secs(60));
                let error = ForgeError::RateLimited {
                    what: request.what(),
                    status,
                    retry_after_secs: wait.as_secs(),
                };
                if wait > self.config.retry.max_rate_limit_wait {
                    Outcome::Fail(error)
                } else {
                    // A throttled request was not processed: safe to repeat.
                    Outcome::Retry { wait, error }
                }
            }
            500..=599 => {
                let error = ForgeError::Server {
                    what: request.what(),
                    status,
                    attempts: attempt,
                };
                self.transient(request, attempt, error)
            }
            _ => Outcome::Done(Reply { status, body, link }),
        })
    }

    fn not_modified(
        &self,
        request: &Request,
        conditional: bool,
        (generation, sent_at): (u64, DateTime<Utc>),
    ) -> Outcome {
        let confirmed = conditional
            .then(|| Self::lock(&self.etags).confirm(&request.path, (generation, sent_at)))
            .flatten();
        match confirmed {
            Some(reply) => {
                self.stats.count_not_modified();
                Outcome::Done(reply)
            }
            None => Outcome::Fail(rest::unasked_304(request.what())),
        }
    }

    fn transient(&self, request: &Request, attempt: u32, error: ForgeError) -> Outcome {
        if request.idempotent {
            Outcome::Retry {
                wait: rest::backoff(&self.config.retry, attempt),
                error,
            }
        } else {
            Outcome::Fail(error)
        }
    }

    fn until(&self, at: i64) -> Duration {
        rest::until(self.clock.now(), at)
    }

    /// With the budget spent (`RateLimit-Remaining: 0`) and not reset yet, waits for
    /// the reset (or fails when that is too far off) instead of being refused.
    async fn wait_for_budget(&self, request: &Request) -> Result<(), ForgeError> {
        let wait = rest::budget_wait(
            &self.stats,
            self.clock.now(),
            &self.config.retry,
            (&|| request.what(), 429),
        )?;
        if wait.is_zero() {
            return Ok(());
        }
        self.stats.add_backoff(wait);
        tokio::time::sleep(wait).await;
        Ok(())
    }

    async fn exchange(
        &self,
        request: &Request,
        etag: Option<&str>,
    ) -> Result<(u16, HeaderMap, String), String> {
        let url = format!("{}{}", self.api.as_str(), request.path);
        let builder = match request.method {
            Method::Get => self.http.get(&url),
            Method::Post => self.http.post(&url),
            Method::Put => self.http.put(&url),
        };
        let builder = match etag {
            Some(etag) => builder.header(IF_NONE_MATCH, etag),
            None => builder,
        };
        let builder = match &request.body {
            Some(body) => builder.json(body),
            None => builder,
        };
        let response = builder.send().await.map_err(|e| crate::error_chain(&e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let limit = self.config.max_response_bytes;
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(|e| crate::error_chain(&e))? {
            body.extend_from_slice(&chunk);
            if body.len() > limit {
                break;
            }
        }
        Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Every page of a paginated GET, following `Link: <…>; rel="next"` on the API
    /// host.
    async fn all_items<T: DeserializeOwned>(
        &self,
        kind: RequestKind,
        first: String,
        relaxed: Option<(Watch, String)>,
    ) -> Result<Vec<T>, ForgeError> {
        let mut items = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(path) = next {
            let mut request = Request::new(kind, Method::Get, path);
            request.relaxed.clone_from(&relaxed);
            if pages >= self.config.max_pages {
                return Err(ForgeError::InvalidResponse {
                    what: request.what(),
                    detail: format!("more than {} pages", self.config.max_pages),
                });
            }
            pages += 1;
            let reply = self.send(&request).await?;
            let page: Vec<T> = expect_json(&request, &reply)?;
            items.extend(page);
            next = match reply.link.as_deref().and_then(next_link) {
                Some(url) => Some(self.relative(&request, url)?),
                None => None,
            };
        }
        Ok(items)
    }

    fn relative(&self, request: &Request, link: &str) -> Result<String, ForgeError> {
        rest::relative_link(link, &self.api, &request.what())
    }

    async fn json<T: DeserializeOwned>(&self, request: Request) -> Result<T, ForgeError> {
        let reply = self.send(&request).await?;
        expect_json(&request, &reply)
    }

    fn learn(&self, user: &wire::User) {
        Self::lock(&self.usernames).insert(user.id, user.username.clone());
    }

    fn mr(&self, repo: &RepoName, mr: wire::MergeRequest) -> PullRequest {
        self.learn(&mr.author);
        let _ = repo;
        PullRequest {
            number: mr.iid,
            title: mr.title,
            body: mr.description.unwrap_or_default(),
            author: mr.author.username,
            open: mr.state == "opened",
            draft: mr.draft,
            head_branch: mr.source_branch,
            head_sha: mr.sha.unwrap_or_default(),
            base_branch: mr.target_branch,
            labels: mr.labels,
            html_url: mr.web_url,
            updated_at: mr.updated_at,
        }
    }

    fn note_url(&self, repo: &RepoName, iid: u64, id: u64) -> String {
        format!(
            "{}/{repo}/-/merge_requests/{iid}#note_{id}",
            self.config.url.trim_end_matches('/')
        )
    }

    async fn notes(
        &self,
        repo: &RepoName,
        iid: u64,
        since: Option<DateTime<Utc>>,
        relaxed: bool,
    ) -> Result<Vec<Comment>, ForgeError> {
        let path = format!(
            "{}/notes?sort=asc&order_by=created_at&per_page=100",
            mr_path(repo, iid)
        );
        let relaxed = relaxed
            .then(|| self.relax(Watch::Comments, WebhookFeed::pr_key(repo, iid)))
            .flatten();
        let notes: Vec<wire::Note> = self
            .all_items(RequestKind::ListComments, path, relaxed)
            .await?;
        Ok(notes
            .into_iter()
            .filter(|n| !n.system)
            .filter(|n| since.is_none_or(|s| n.updated_at >= s))
            .map(|n| {
                self.learn(&n.author);
                Comment {
                    html_url: self.note_url(repo, iid, n.id),
                    id: n.id,
                    body: n.body,
                    author: n.author.username,
                    created_at: n.created_at,
                    updated_at: n.updated_at,
                }
            })
            .collect())
    }

    async fn commit_checks(
        &self,
        repo: &RepoName,
        sha: &str,
        relaxed: bool,
    ) -> Result<Vec<Check>, ForgeError> {
        let key = WebhookFeed::sha_key(repo, sha);
        let pipelines = format!(
            "{}/pipelines?sha={}&order_by=id&sort=desc&per_page=1",
            project_path(repo),
            encode(sha)
        );
        let mut request = Request::new(RequestKind::CheckRuns, Method::Get, pipelines);
        if relaxed {
            request.relaxed = self.relax(Watch::CheckRuns, key.clone());
        }
        let latest: Vec<wire::Pipeline> = self.json(request).await?;
        let statuses = format!(
            "{}/repository/commits/{}/statuses?per_page=100",
            project_path(repo),
            encode(sha)
        );
        let relaxed = relaxed.then(|| self.relax(Watch::Statuses, key)).flatten();
        let statuses: Vec<wire::Status> = self
            .all_items(RequestKind::CombinedStatus, statuses, relaxed)
            .await?;
        Ok(checks_of(latest.first(), &statuses))
    }

    /// The project's id of `username`, looked up once.
    async fn user_id(&self, username: &str) -> Result<Option<u64>, ForgeError> {
        let key = username.to_ascii_lowercase();
        if let Some(id) = Self::lock(&self.user_ids).get(&key) {
            return Ok(*id);
        }
        let request = Request::new(
            RequestKind::Permission,
            Method::Get,
            format!("/users?username={}", encode(username)),
        );
        let users: Vec<wire::User> = self.json(request).await?;
        let id = users
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
            .map(|u| u.id);
        Self::lock(&self.user_ids).insert(key, id);
        Ok(id)
    }

    fn refusal_key(repo: &RepoName, iid: u64) -> String {
        WebhookFeed::pr_key(repo, iid)
    }
}

/// The latest pipeline and the commit's statuses as the merge engine's checks.
fn checks_of(pipeline: Option<&wire::Pipeline>, statuses: &[wire::Status]) -> Vec<Check> {
    let mut checks: Vec<Check> = pipeline
        .map(|p| Check {
            name: PIPELINE_CHECK.to_owned(),
            state: job_state(&p.status, false),
        })
        .into_iter()
        .collect();
    checks.extend(statuses.iter().map(|s| Check {
        name: s.name.clone(),
        state: job_state(&s.status, s.allow_failure),
    }));
    checks
}

/// A pipeline's, job's or commit status's state: `success` and `skipped` pass,
/// `failed` and `canceled` fail (a job allowed to fail passes), anything else
/// (`created`, `pending`, `running`, `manual`, `scheduled`, …) is still pending.
fn job_state(status: &str, allow_failure: bool) -> CheckState {
    match status {
        "success" | "skipped" => CheckState::Success,
        "failed" | "canceled" | "cancelled" if allow_failure => CheckState::Success,
        "failed" | "canceled" | "cancelled" => CheckState::Failure,
        _ => CheckState::Pending,
    }
}

/// A member's access level on GitHub's permission scale.
#[must_use]
pub fn permission_of_access_level(level: u32) -> Permission {
    match level {
        50.. => Permission::Admin,
        40..=49 => Permission::Maintain,
        30..=39 => Permission::Write,
        20..=29 => Permission::Triage,
        1..=19 => Permission::Read,
        0 => Permission::None,
    }
}

/// The access level a member needs for `permission` (the inverse of
/// [`permission_of_access_level`]): Owner 50, Maintainer 40, Developer 30, Reporter 20,
/// Guest 10, not a member 0.
#[must_use]
pub fn access_level_of(permission: Permission) -> u32 {
    match permission {
        Permission::Admin => 50,
        Permission::Maintain => 40,
        Permission::Write => 30,
        Permission::Triage => 20,
        Permission::Read => 10,
        Permission::None => 0,
    }
}

/// GitLab's `detailed_merge_status` as mergeability: `None` while GitLab is still
/// working it out, else whether the MR can be merged now.
fn mergeable_of(detailed: &str) -> (Option<bool>, MergeableState) {
    match detailed {
        "mergeable" => (Some(true), MergeableState::Clean),
        "checking" | "unchecked" | "preparing" | "approvals_syncing" | "ci_still_running"
        | "ci_must_pass" => (None, MergeableState::Unknown),
        "draft_status" => (Some(false), MergeableState::Draft),
        "conflict" | "broken_status" => (Some(false), MergeableState::Dirty),
        "need_rebase" => (Some(false), MergeableState::Behind),
        _ => (Some(false), MergeableState::Blocked),
    }
}

fn project_path(repo: &RepoName) -> String {
    format!("/projects/{}", encode(&repo.to_string()))
}

fn mr_path(repo: &RepoName, iid: u64) -> String {
    format!("{}/merge_requests/{iid}", project_path(repo))
}

fn expect_json<T: DeserializeOwned>(request: &Request, reply: &Reply) -> Result<T, ForgeError> {
    if (200..300).contains(&reply.status) {
        serde_json::from_str(&reply.body).map_err(|e| ForgeError::InvalidResponse {
            what: request.what(),
            detail: format!("unexpected JSON: {e}"),
        })
    } else {
        Err(status_error(request, reply))
    }
}

fn status_error(request: &Request, reply: &Reply) -> ForgeError {
    rest::status_error_of(reply.status, request.what(), error_message(&reply.body))
}

/// GitLab's `message` (a string, a list or an object of field errors) or `error`,
/// shortened.
fn error_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.chars().take(200).collect();
    };
    let text = match (&value["message"], &value["error"]) {
        (serde_json::Value::String(s), _) | (_, serde_json::Value::String(s)) => s.clone(),
        (serde_json::Value::Null, serde_json::Value::Null) => String::new(),
        (serde_json::Value::Null, other) | (other, _) => other.to_string(),
    };
    text.chars().take(300).collect()
}

/// Additions and deletions of a unified diff's hunks.
fn count_lines(diff: &str) -> (u64, u64) {
    diff.lines().fold((0, 0), |(add, del), line| {
        if line.starts_with('+') && !line.starts_with("+++") {
            (add + 1, del)
        } else if line.starts_with('-') && !line.starts_with("---") {
            (add, del + 1)
        } else {
            (add, del)
        }
    })
}

impl Forge for GitLab {
    fn repository(&self, url: &str, explicit: Option<ForgeKind>) -> Result<RepoName, String> {
        let repo = RepoName::locate(
            url,
            explicit.or(Some(ForgeKind::GitLab)),
            Some(&self.config.url),
        )?;
        let host = super::remote_host(url);
        let ours = self.git_host();
        if let (Some(host), Some(ours)) = (host, ours)
            && !host.is_empty()
            && !host.eq_ignore_ascii_case(&ours)
            && super::remote_host_name(&host) != super::remote_host_name(&ours)
        {
            return Err(format!(
                "{} is on {host}, but autobump's GitLab is {} (--gitlab-url)",
                crate::repo::redact_url(url),
                self.config.url
            ));
        }
        Ok(repo)
    }

    async fn find_open_pr(
        &self,
        repo: &RepoName,
        head_branch: &str,
        author: &str,
    ) -> Result<Option<PullRequest>, ForgeError> {
        let path = format!(
            "{}/merge_requests?state=opened&source_branch={}&author_username={}&order_by=created_at&sort=asc&per_page=100",
            project_path(repo),
            encode(head_branch),
            encode(author),
        );
        let mrs: Vec<wire::MergeRequest> = self.all_items(RequestKind::FindPr, path, None).await?;
        Ok(mrs
            .into_iter()
            .filter(|m| {
                m.source_branch == head_branch
                    && m.source_project_id == m.target_project_id
                    && m.author.username.eq_ignore_ascii_case(author)
            })
            .min_by_key(|m| m.iid)
            .map(|m| self.mr(repo, m)))
    }

    async fn create_pr(
        &self,
        repo: &RepoName,
        pr: &NewPullRequest,
    ) -> Result<PullRequest, ForgeError> {
        let title = if pr.draft {
            format!("Draft: {}", pr.title)
        } else {
            pr.title.clone()
        };
        let request = Request::new(
            RequestKind::CreatePr,
            Method::Post,
            format!("{}/merge_requests", project_path(repo)),
        )
        .body(&wire::CreateMergeRequest {
            source_branch: &pr.head_branch,
            target_branch: &pr.base_branch,
            title: &title,
            description: &pr.body,
            remove_source_branch: false,
        })?;
        let mr: wire::MergeRequest = self.json(request).await?;
        Ok(self.mr(repo, mr))
    }

    async fn update_pr(
        &self,
        repo: &RepoName,
        number: u64,
        edit: &PullRequestEdit,
    ) -> Result<PullRequest, ForgeError> {
        let request = Request::new(RequestKind::UpdatePr, Method::Put, mr_path(repo, number))
            .body(&wire::UpdateMergeRequest {
                title: edit.title.as_deref(),
                description: edit.body.as_deref(),
                add_labels: None,
                remove_labels: None,
            })?;
        let mr: wire::MergeRequest = self.json(request).await?;
        Ok(self.mr(repo, mr))
    }

    async fn add_labels(
        &self,
        repo: &RepoName,
        number: u64,
        labels: &[String],
    ) -> Result<Vec<String>, ForgeError> {
        let joined = labels.join(",");
        let request = Request::new(RequestKind::AddLabels, Method::Put, mr_path(repo, number))
            .body(&wire::UpdateMergeRequest {
                title: None,
                description: None,
                add_labels: Some(&joined),
                remove_labels: None,
            })?;
        let mr: wire::MergeRequest = self.json(request).await?;
        Ok(mr.labels)
    }

    async fn remove_label(
        &self,
        repo: &RepoName,
        number: u64,
        label: &str,
    ) -> Result<(), ForgeError> {
        let request = Request::new(RequestKind::RemoveLabel, Method::Put, mr_path(repo, number))
            .body(&wire::UpdateMergeRequest {
                title: None,
                description: None,
                add_labels: None,
                remove_labels: Some(label),
            })?;
        let reply = self.send(&request).await?;
        match reply.status {
            200..=299 => Ok(()),
            _ => Err(status_error(&request, &reply)),
        }
    }

    async fn list_comments(
        &self,
        repo: &RepoName,
        number: u64,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Comment>, ForgeError> {
        self.notes(repo, number, since, false).await
    }

    async fn list_comments_relaxed(
        &self,
        repo: &RepoName,
        number: u64,
    ) -> Result<Vec<Comment>, ForgeError> {
        self.notes(repo, number, None, true).await
    }

    async fn post_comment(
        &self,
        repo: &RepoName,
        number: u64,
        body: &str,
    ) -> Result<Comment, ForgeError> {
        let request = Request::new(
            RequestKind::PostComment,
            Method::Post,
            format!("{}/notes", mr_path(repo, number)),
        )
        .body(&serde_json::json!({ "body": body }))?;
        let note: wire::Note = self.json(request).await?;
        Ok(Comment {
            html_url: self.note_url(repo, number, note.id),
            id: note.id,
            body: note.body,
            author: note.author.username,
            created_at: note.created_at,
            updated_at: note.updated_at,
        })
    }

    async fn pr_files(&self, repo: &RepoName, number: u64) -> Result<Vec<ChangedFile>, ForgeError> {
        let path = format!("{}/diffs?per_page=100", mr_path(repo, number));
        let diffs: Vec<wire::Diff> = self.all_items(RequestKind::ListFiles, path, None).await?;
        Ok(diffs
            .into_iter()
            .map(|d| {
                let (additions, deletions) = count_lines(&d.diff);
                let status = if d.new_file {
                    FileStatus::Added
                } else if d.deleted_file {
                    FileStatus::Removed
                } else if d.renamed_file {
                    FileStatus::Renamed
                } else {
                    FileStatus::Modified
                };
                ChangedFile {
                    previous_filename: d.renamed_file.then_some(d.old_path),
                    filename: d.new_path,
                    status,
                    additions,
                    deletions,
                    patch: (!d.diff.is_empty()).then_some(d.diff),
                }
            })
            .collect())
    }

    async fn checks(&self, repo: &RepoName, sha: &str) -> Result<Vec<Check>, ForgeError> {
        self.commit_checks(repo, sha, false).await
    }

    async fn checks_relaxed(&self, repo: &RepoName, sha: &str) -> Result<Vec<Check>, ForgeError> {
        self.commit_checks(repo, sha, true).await
    }

    async fn mergeability(&self, repo: &RepoName, number: u64) -> Result<Mergeability, ForgeError> {
        let request = Request::new(RequestKind::GetPr, Method::Get, mr_path(repo, number));
        let mr: wire::MergeRequest = self.json(request).await?;
        let head_sha = mr.sha.clone().unwrap_or_default();
        let detailed = mr
            .detailed_merge_status
            .clone()
            .or_else(|| mr.merge_status.clone())
            .unwrap_or_default();
        let (mut mergeable, mut state) = mergeable_of(match detailed.as_str() {
            // The older `merge_status` values.
            "can_be_merged" => "mergeable",
            "cannot_be_merged" | "cannot_be_merged_recheck" => "conflict",
            other => other,
        });
        // A merge GitLab refused at this head stays refused while GitLab's own verdict
        // is what it was when it refused (a protected branch, a role that may not
        // merge: GitLab still says "mergeable"); once that verdict changes (approved,
        // a new head), it is asked again.
        let key = Self::refusal_key(repo, number);
        let mut refused = Self::lock(&self.refused);
        if let Some(refusal) = refused.get_mut(&key) {
            let seen = refusal.status.get_or_insert_with(|| detailed.clone());
            if refusal.head == head_sha && *seen == detailed {
                tracing::debug!(mr = number, why = %refusal.message, "GitLab refused this merge before");
                mergeable = Some(false);
                state = MergeableState::Blocked;
            } else {
                refused.remove(&key);
            }
        }
        drop(refused);
        Ok(Mergeability {
            head_sha,
            mergeable: if mr.state == "opened" {
                mergeable
            } else {
                None
            },
            state,
            open: mr.state == "opened",
            merged: mr.state == "merged",
        })
    }

    async fn merge(
        &self,
        repo: &RepoName,
        number: u64,
        method: MergeMethod,
        expected_head_sha: &str,
    ) -> Result<Merged, ForgeError> {
        let project: wire::Project = self
            .json(Request::new(
                RequestKind::Project,
                Method::Get,
                project_path(repo),
            ))
            .await?;
        let squash = match project.squash_option.as_deref() {
            Some("never") => false,
            Some("always") => true,
            _ => method == MergeMethod::Squash,
        };
        let request = Request::new(
            RequestKind::Merge,
            Method::Put,
            format!("{}/merge", mr_path(repo, number)),
        )
        .body(&wire::Merge {
            sha: expected_head_sha,
            squash,
            should_remove_source_branch: false,
        })?;
        let reply = self.send(&request).await?;
        let message = error_message(&reply.body);
        match reply.status {
            200..=299 => {
                let mr: wire::MergeRequest = expect_json(&request, &reply)?;
                let sha = mr
                    .squash_commit_sha
                    .or(mr.merge_commit_sha)
                    .or(mr.sha)
                    .unwrap_or_default();
                Ok(Merged { sha })
            }
            409 => Err(ForgeError::HeadMoved {
                what: request.what(),
                expected_sha: expected_head_sha.to_owned(),
                message,
            }),
            // 405: not mergeable now (draft, approvals, pipeline, discussions); 406 and
            // 422: conflicts or a failed merge; 401 and 403: this account may not merge
            // into the target branch (protected branch, role).
            401 | 403 | 405 | 406 | 422 => {
                Self::lock(&self.refused).insert(
                    Self::refusal_key(repo, number),
                    Refusal {
                        head: expected_head_sha.to_owned(),
                        status: None,
                        message: message.clone(),
                    },
                );
                Err(ForgeError::NotMergeable {
                    what: request.what(),
                    message: format!("GitLab refused ({}): {message}", reply.status),
                })
            }
            _ => Err(status_error(&request, &reply)),
        }
    }

    async fn permission(&self, repo: &RepoName, user: &str) -> Result<Permission, ForgeError> {
        let Some(id) = self.user_id(user).await? else {
            return Ok(Permission::None);
        };
        let request = Request::new(
            RequestKind::Permission,
            Method::Get,
            format!("{}/members/all/{id}", project_path(repo)),
        );
        let reply = self.send(&request).await?;
        if reply.status == 404 {
            return Ok(Permission::None);
        }
        let member: wire::Member = expect_json(&request, &reply)?;
        if member.state.as_deref().is_some_and(|s| s != "active") {
            return Ok(Permission::None);
        }
        Ok(permission_of_access_level(member.access_level))
    }

    fn answers_from_memory(&self) -> bool {
        self.feed.is_some()
    }

    fn delivered_commands(&self, repo: &RepoName, policy: &str) -> Vec<DeliveredComment> {
        let Some(feed) = &self.feed else {
            return Vec::new();
        };
        let names = Self::lock(&self.usernames);
        feed.commands(repo, policy)
            .into_iter()
            .map(|mut d| {
                // Note hooks name the MR's author by id (see `webhook::parse_gitlab`).
                if let Some(id) = d
                    .pr_author
                    .strip_prefix(super::gitlab_webhook::GITLAB_USER_ID_PREFIX)
                    && let Ok(id) = id.parse::<u64>()
                    && let Some(name) = names.get(&id)
                {
                    d.pr_author.clone_from(name);
                }
                d
            })
            .collect()
    }
}

/// GitLab's JSON, as far as autobump reads it.
mod wire {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Deserialize)]
    pub struct User {
        pub id: u64,
        pub username: String,
    }

    #[derive(Debug, Deserialize)]
    pub struct MergeRequest {
        pub iid: u64,
        pub title: String,
        #[serde(default)]
        pub description: Option<String>,
        pub author: User,
        pub state: String,
        #[serde(default)]
        pub draft: bool,
        pub source_branch: String,
        pub target_branch: String,
        pub source_project_id: u64,
        pub target_project_id: u64,
        #[serde(default)]
        pub sha: Option<String>,
        #[serde(default)]
        pub labels: Vec<String>,
        pub web_url: String,
        pub updated_at: DateTime<Utc>,
        #[serde(default)]
        pub detailed_merge_status: Option<String>,
        #[serde(default)]
        pub merge_status: Option<String>,
        #[serde(default)]
        pub merge_commit_sha: Option<String>,
        #[serde(default)]
        pub squash_commit_sha: Option<String>,
    }

    #[derive(Debug, Serialize)]
    pub struct CreateMergeRequest<'a> {
        pub source_branch: &'a str,
        pub target_branch: &'a str,
        pub title: &'a str,
        pub description: &'a str,
        pub remove_source_branch: bool,
    }

    #[derive(Debug, Serialize)]
    pub struct UpdateMergeRequest<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub title: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub description: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub add_labels: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub remove_labels: Option<&'a str>,
    }

    #[derive(Debug, Serialize)]
    pub struct Merge<'a> {
        pub sha: &'a str,
        pub squash: bool,
        pub should_remove_source_branch: bool,
    }

    #[derive(Debug, Deserialize)]
    pub struct Note {
        pub id: u64,
        pub body: String,
        pub author: User,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
        #[serde(default)]
        pub system: bool,
    }

    #[derive(Debug, Deserialize)]
    #[allow(clippy::struct_field_names)] // GitLab's names
    pub struct Diff {
        pub old_path: String,
        pub new_path: String,
        #[serde(default)]
        pub new_file: bool,
        #[serde(default)]
        pub renamed_file: bool,
        #[serde(default)]
        pub deleted_file: bool,
        #[serde(default)]
        pub diff: String,
    }

    #[derive(Debug, Deserialize)]
    pub struct Pipeline {
        pub status: String,
    }

    #[derive(Debug, Deserialize)]
    #[allow(clippy::struct_field_names)] // GitLab's names
    pub struct Status {
        pub name: String,
        pub status: String,
        #[serde(default)]
        pub allow_failure: bool,
    }

    #[derive(Debug, Deserialize)]
    pub struct Member {
        pub access_level: u32,
        #[serde(default)]
        pub state: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    pub struct Project {
        #[serde(default)]
        pub squash_option: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_levels_map_onto_permissions() {
        assert_eq!(permission_of_access_level(50), Permission::Admin);
        assert_eq!(permission_of_access_level(40), Permission::Maintain);
        assert_eq!(permission_of_access_level(30), Permission::Write);
        assert_eq!(permission_of_access_level(20), Permission::Triage);
        assert_eq!(permission_of_access_level(10), Permission::Read);
        assert_eq!(permission_of_access_level(5), Permission::Read);
        assert_eq!(permission_of_access_level(0), Permission::None);
        // The command rule: Developer may hold (write), Maintainer may lift others'.
        assert!(permission_of_access_level(30) >= Permission::Write);
        assert!(permission_of_access_level(20) < Permission::Write);
        assert!(permission_of_access_level(40) >= Permission::Maintain);
        for p in [
            Permission::None,
            Permission::Read,
            Permission::Triage,
            Permission::Write,
            Permission::Maintain,
            Permission::Admin,
        ] {
            assert_eq!(permission_of_access_level(access_level_of(p)), p);
        }
    }

    #[test]
    fn job_states_and_allowed_failures() {
        let status = |name: &str, status: &str, allow_failure| wire::Status {
            name: name.into(),
            status: status.into(),
            allow_failure,
        };
        let checks = checks_of(
            Some(&wire::Pipeline {
                status: "running".into(),
            }),
            &[
                status("unit", "success", false),
                status("lint", "failed", true),
                status("e2e", "manual", false),
                status("ci/external", "failed", false),
            ],
        );
        let got: Vec<(&str, CheckState)> =
            checks.iter().map(|c| (c.name.as_str(), c.state)).collect();
        assert_eq!(
            got,
            [
                (PIPELINE_CHECK, CheckState::Pending),
                ("unit", CheckState::Success),
                ("lint", CheckState::Success),
                ("e2e", CheckState::Pending),
                ("ci/external", CheckState::Failure),
            ]
        );
    }

    #[test]
    fn detailed_merge_status_maps_to_mergeability() {
        assert_eq!(mergeable_of("mergeable").0, Some(true));
        assert_eq!(mergeable_of("checking").0, None);
        assert_eq!(
            mergeable_of("not_approved"),
            (Some(false), MergeableState::Blocked)
        );
        assert_eq!(
            mergeable_of("conflict"),
            (Some(false), MergeableState::Dirty)
        );
        assert_eq!(mergeable_of("something_new").0, Some(false));
    }

    #[test]
    fn project_paths_are_encoded_whole() {
        let repo = RepoName::gitlab("group/sub", "infra");
        assert_eq!(project_path(&repo), "/projects/group%2Fsub%2Finfra");
        assert_eq!(
            mr_path(&repo, 7),
            "/projects/group%2Fsub%2Finfra/merge_requests/7"
        );
    }

    #[test]
    fn error_messages_of_each_shape() {
        assert_eq!(
            error_message(r#"{"message":"405 Method Not Allowed"}"#),
            "405 Method Not Allowed"
        );
        assert_eq!(
            error_message(r#"{"message":{"title":["is too long"]}}"#),
            r#"{"title":["is too long"]}"#
        );
        assert_eq!(
            error_message(r#"{"error":"invalid_token"}"#),
            "invalid_token"
        );
        assert_eq!(count_lines("@@ -1 +1 @@\n-a\n+b\n+c\n"), (2, 1));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let config = GitLabConfig::new("https://gitlab.example.com", "glpat-secret");
        assert!(!format!("{config:?}").contains("glpat-secret"));
    }
}
