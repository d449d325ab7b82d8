//! An HTTP fake of the GitHub REST endpoints autobump uses, on 127.0.0.1, for one
//! repository.
//!
//! * **Git-backed**: branches and commits live in a real bare repository
//!   ([`GithubFake::git_dir`]); a PR's head SHA is read from `refs/heads/<head>` on
//!   every request (pushing to the branch moves the head, as on GitHub), its files are
//!   the diff from the merge base, mergeability is a real three-way tree merge, and a
//!   merge writes a squash / merge commit onto the base branch.
//! * **In memory**: PRs, labels, comments, commit statuses, check runs, collaborator
//!   permissions, tokens.
//! * **HTTP behaviour**: strong `ETag`s (a hash of the body) on every 200 GET and 304
//!   for a matching `If-None-Match` (free: the rate-limit budget is not charged);
//!   `x-ratelimit-*` headers; pagination with `per_page`/`page` and `Link`; bearer
//!   tokens checked (401 otherwise); `PUT …/merge` checks `sha` against the head and
//!   answers GitHub's 409; GitHub App installation tokens minted for a JWT signed with
//!   the App's key and expiring by the fake's clock; the App's installation on the
//!   repository found with the JWT. The JWT is checked as GitHub documents it
//!   ("Generating a JSON Web Token (JWT) for a GitHub App"): RS256 with the App's
//!   public key, `iss` the App id, `iat` not in the future and `exp` at most 10
//!   minutes ahead (both against the wall clock, which the App signs them with).
//! * **Scripted failures** per operation ([`GithubFake::fail_next`]): 5xx, secondary
//!   rate limit (403 + `Retry-After`), primary rate limit (403, remaining 0 + reset).
//! * **Checked against GitHub**: every response of a documented operation is validated
//!   against GitHub's `OpenAPI` description as it is produced (status documented, body
//!   matches the schema); [`GithubFake::assert_responses_valid`] fails the test on any
//!   violation. Scripted failures and 401s are not operation responses and are exempt.
//! * **Counters**: requests per operation id (`pulls/list`, …), writes, 304s, and a log.

#[path = "github_fake/objects.rs"]
mod objects;
#[path = "github_fake/openapi.rs"]
pub mod openapi;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use autobump::clock::{Clock, SystemClock};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use objects::{PullView, Urls};

use crate::support::scripted::Served;

/// A failure to answer instead of the real response.
#[derive(Debug, Clone)]
pub enum Failure {
    /// This status with a `basic-error` body (e.g. 502).
    Status(u16),
    /// 403 "secondary rate limit" with `Retry-After: secs`.
    SecondaryRateLimit { retry_after: u64 },
    /// 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` `reset_in` seconds
    /// after the fake's clock.
    PrimaryRateLimit { reset_in: i64 },
}

/// What the fake's App may do (its installation has the same): what autobump needs.
fn app_permissions() -> Value {
    json!({
        "contents": "write",
        "pull_requests": "write",
        "issues": "write",
        "statuses": "read",
        "checks": "read"
    })
}

/// The webhook events the fake's App subscribes to.
const APP_EVENTS: [&str; 4] = ["pull_request", "issue_comment", "check_run", "status"];

/// A GitHub App the fake knows.
#[derive(Debug, Clone)]
pub struct FakeApp {
    pub app_id: u64,
    /// The App's public key (PEM, `BEGIN PUBLIC KEY`), to check JWT signatures.
    pub public_key_pem: String,
    pub installation_id: u64,
    /// The login its installation tokens act as (`autobump[bot]`).
    pub bot_login: String,
    /// How long a minted token lives.
    pub token_ttl: chrono::Duration,
}

/// How to start a fake.
pub struct FakeOptions {
    pub owner: String,
    pub name: String,
    /// A token accepted from the start, acting as `bot_login`.
    pub token: String,
    pub bot_login: String,
    /// Timestamps, token expiry and rate-limit resets come from here.
    pub clock: Arc<dyn Clock>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            owner: "example".into(),
            name: "infra".into(),
            token: "test-token".into(),
            bot_login: "autobump-bot".into(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The operation id, or `None` for a path the fake does not serve.
    pub operation: Option<String>,
    pub status: u16,
    pub if_none_match: bool,
}

/// What the fake knows about a PR (for assertions).
#[derive(Debug, Clone)]
pub struct FakePull {
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub author: String,
    pub head: String,
    pub base: String,
    pub open: bool,
    pub merged: bool,
    pub merge_commit_sha: Option<String>,
    pub labels: Vec<String>,
}

/// The running fake; stops when dropped.
pub struct GithubFake {
    served: Served,
    state: Arc<Mutex<State>>,
    git_dir: PathBuf,
    _dir: tempfile::TempDir,
}

struct Token {
    login: String,
    expires_at: Option<DateTime<Utc>>,
}

struct Pull {
    number: u64,
    title: String,
    body: Option<String>,
    author: String,
    head: String,
    base: String,
    draft: bool,
    labels: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    merged_at: Option<DateTime<Utc>>,
    merged_by: Option<String>,
    merge_commit_sha: Option<String>,
    /// The head SHA when merged or closed (the branch may move or go later).
    frozen_head: Option<String>,
}

struct CommentRecord {
    id: u64,
    issue: u64,
    author: String,
    body: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

struct StatusRecord {
    id: u64,
    context: String,
    state: String,
    description: Option<String>,
    target_url: Option<String>,
    at: DateTime<Utc>,
}

struct CheckRecord {
    id: u64,
    name: String,
    status: String,
    conclusion: Option<String>,
    started_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

struct Scripted {
    operation: String,
    remaining: u32,
    failure: Failure,
}

struct State {
    urls: Urls,
    clock: Arc<dyn Clock>,
    git: git2::Repository,
    created: DateTime<Utc>,
    tokens: HashMap<String, Token>,
    app: Option<FakeApp>,
    minted: u64,
    /// App JWTs accepted.
    app_jwts: std::sync::atomic::AtomicU64,
    pulls: BTreeMap<u64, Pull>,
    next_number: u64,
    comments: Vec<CommentRecord>,
    next_id: u64,
    statuses: HashMap<String, Vec<StatusRecord>>,
    check_runs: HashMap<String, Vec<CheckRecord>>,
    permissions: HashMap<String, String>,
    scripted: Vec<Scripted>,
    counts: HashMap<String, u64>,
    writes: u64,
    not_modified: u64,
    rate_limit: u64,
    rate_remaining: u64,
    max_per_page: usize,
    log: Vec<Recorded>,
    violations: Vec<String>,
    validated: u64,
}

/// The answer of an operation handler.
struct Answer {
    status: u16,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    fn error(status: u16, message: &str, docs: &str) -> Self {
        Self::json(status, objects::error(status, message, docs))
    }
}

/// A route: the operation's path template in GitHub's description, its parameters.
struct Route {
    template: &'static str,
    params: Vec<String>,
}

fn route(method: &Method, path: &str) -> Option<Route> {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let verb = method.as_str();
    let (template, params): (&'static str, Vec<&str>) = match (verb, parts.as_slice()) {
        ("GET" | "POST", ["repos", owner, repo, "pulls"]) => {
            ("/repos/{owner}/{repo}/pulls", vec![owner, repo])
        }
        ("GET" | "PATCH", ["repos", owner, repo, "pulls", number]) => (
            "/repos/{owner}/{repo}/pulls/{pull_number}",
            vec![owner, repo, number],
        ),
        ("GET", ["repos", owner, repo, "pulls", number, "files"]) => (
            "/repos/{owner}/{repo}/pulls/{pull_number}/files",
            vec![owner, repo, number],
        ),
        ("PUT", ["repos", owner, repo, "pulls", number, "merge"]) => (
            "/repos/{owner}/{repo}/pulls/{pull_number}/merge",
            vec![owner, repo, number],
        ),
        ("POST", ["repos", owner, repo, "issues", number, "labels"]) => (
            "/repos/{owner}/{repo}/issues/{issue_number}/labels",
            vec![owner, repo, number],
        ),
        ("DELETE", ["repos", owner, repo, "issues", number, "labels", name]) => (
            "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}",
            vec![owner, repo, number, name],
        ),
        ("GET" | "POST", ["repos", owner, repo, "issues", number, "comments"]) => (
            "/repos/{owner}/{repo}/issues/{issue_number}/comments",
            vec![owner, repo, number],
        ),
        ("GET", ["repos", owner, repo, "commits", git_ref, "status"]) => (
            "/repos/{owner}/{repo}/commits/{ref}/status",
            vec![owner, repo, git_ref],
        ),
        ("GET", ["repos", owner, repo, "commits", git_ref, "check-runs"]) => (
            "/repos/{owner}/{repo}/commits/{ref}/check-runs",
            vec![owner, repo, git_ref],
        ),
        ("GET", ["repos", owner, repo, "collaborators", user, "permission"]) => (
            "/repos/{owner}/{repo}/collaborators/{username}/permission",
            vec![owner, repo, user],
        ),
        ("GET", ["app"]) => ("/app", vec![]),
        ("GET", ["repos", owner, repo, "installation"]) => {
            ("/repos/{owner}/{repo}/installation", vec![owner, repo])
        }
        ("POST", ["app", "installations", id, "access_tokens"]) => (
            "/app/installations/{installation_id}/access_tokens",
            vec![id],
        ),
        _ => return None,
    };
    Some(Route {
        template,
        params: params.into_iter().map(str::to_owned).collect(),
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn strong_etag(body: &Value) -> String {
    let digest = Sha256::digest(body.to_string().as_bytes());
    let hex = digest.iter().take(20).fold(String::new(), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    });
    format!("\"{hex}\"")
}

impl GithubFake {
    /// A fake for `example/infra` with token `test-token` acting as `autobump-bot`,
    /// and a `main` branch holding `README.md`.
    pub async fn start() -> Self {
        Self::start_with(FakeOptions::default()).await
    }

    pub async fn start_with(options: FakeOptions) -> Self {
        autobump::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temporary directory for the fake's git repo");
        let git_dir = dir.path().join("infra.git");
        let git = git2::Repository::init_bare(&git_dir).expect("git init --bare");
        let listener_state = Arc::new(Mutex::new(State {
            urls: Urls {
                api: String::new(),
                html: "https://github.com".into(),
                owner: options.owner.clone(),
                name: options.name.clone(),
            },
            created: options.clock.now(),
            clock: options.clock,
            git,
            tokens: HashMap::from([(
                options.token.clone(),
                Token {
                    login: options.bot_login.clone(),
                    expires_at: None,
                },
            )]),
            app: None,
            minted: 0,
            app_jwts: std::sync::atomic::AtomicU64::new(0),
            pulls: BTreeMap::new(),
            next_number: 1,
            comments: Vec::new(),
            next_id: 1000,
            statuses: HashMap::new(),
            check_runs: HashMap::new(),
            permissions: HashMap::from([(options.owner.to_ascii_lowercase(), "admin".into())]),
            scripted: Vec::new(),
            counts: HashMap::new(),
            writes: 0,
            not_modified: 0,
            rate_limit: 5000,
            rate_remaining: 5000,
            max_per_page: 100,
            log: Vec::new(),
            violations: Vec::new(),
            validated: 0,
        }));
        let state = Arc::clone(&listener_state);
        let router = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = Arc::clone(&state);
                async move { handle(&state, &method, &uri, &headers, &body) }
            },
        );
        let served = Served::start(router).await;
        let fake = Self {
            served,
            state: listener_state,
            git_dir,
            _dir: dir,
        };
        fake.lock().urls.api = fake.api_url();
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

    /// `http://127.0.0.1:PORT`: the API root to give the client.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.served.addr())
    }

    /// The bare repository backing the branches.
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// Commits `files` (path → content, `None` deletes) onto `branch`, creating the
    /// branch from `main` if it does not exist; returns the new head SHA.
    pub fn commit(&self, branch: &str, files: &[(&str, Option<&str>)], message: &str) -> String {
        self.lock().commit(branch, files, message)
    }

    /// The SHA `refs/heads/<branch>` points to.
    pub fn branch_sha(&self, branch: &str) -> Option<String> {
        self.lock().branch_sha(branch)
    }

    /// Sets a commit status (a newer status of a context replaces the older one).
    pub fn set_status(&self, sha: &str, context: &str, state: &str) {
        let mut s = self.lock();
        let id = s.next_id();
        let at = s.clock.now();
        s.statuses
            .entry(sha.to_owned())
            .or_default()
            .push(StatusRecord {
                id,
                context: context.to_owned(),
                state: state.to_owned(),
                description: Some(format!("{context} is {state}")),
                target_url: Some(format!("https://ci.example.com/{context}/{id}")),
                at,
            });
    }

    /// Adds a check run (`status` `queued`/`in_progress`/`completed`, `conclusion` for
    /// completed ones); returns its id.
    pub fn add_check_run(
        &self,
        sha: &str,
        name: &str,
        status: &str,
        conclusion: Option<&str>,
    ) -> u64 {
        let mut s = self.lock();
        let id = s.next_id();
        let now = s.clock.now();
        s.check_runs
            .entry(sha.to_owned())
            .or_default()
            .push(CheckRecord {
                id,
                name: name.to_owned(),
                status: status.to_owned(),
                conclusion: conclusion.map(str::to_owned),
                started_at: now,
                completed_at: (status == "completed").then_some(now),
            });
        id
    }

    /// Sets `login`'s role (`admin`, `maintain`, `write`, `triage`, `read`, `none`).
    pub fn set_permission(&self, login: &str, role: &str) {
        self.lock()
            .permissions
            .insert(login.to_ascii_lowercase(), role.to_owned());
    }

    /// A comment on PR `number` by someone else; returns its id.
    pub fn add_comment(&self, number: u64, author: &str, body: &str) -> u64 {
        let mut s = self.lock();
        let now = s.clock.now();
        s.add_comment(number, author, body, now)
    }

    /// Accepts tokens minted for `app`.
    pub fn enable_app(&self, app: FakeApp) {
        self.lock().app = Some(app);
    }

    /// The next `times` requests of `operation` (an operation id such as `pulls/get`)
    /// get `failure` instead of an answer.
    pub fn fail_next(&self, operation: &str, times: u32, failure: Failure) {
        self.lock().scripted.push(Scripted {
            operation: operation.to_owned(),
            remaining: times,
            failure,
        });
    }

    /// Pages hold at most `n` items whatever `per_page` asks (to test pagination).
    pub fn set_max_per_page(&self, n: usize) {
        self.lock().max_per_page = n.max(1);
    }

    /// Requests received for an operation id (`pulls/list`, `pulls/get`, …).
    pub fn requests(&self, operation: &str) -> u64 {
        self.lock().counts.get(operation).copied().unwrap_or(0)
    }

    /// All requests received (served paths or not).
    pub fn total_requests(&self) -> u64 {
        self.lock().log.len() as u64
    }

    /// Successful POST, PATCH, PUT and DELETE requests (minting tokens excluded).
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Conditional GETs answered 304.
    pub fn not_modified(&self) -> u64 {
        self.lock().not_modified
    }

    /// The rate-limit budget left.
    pub fn rate_remaining(&self) -> u64 {
        self.lock().rate_remaining
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Recorded> {
        self.lock().log.clone()
    }

    /// Installation tokens minted so far.
    pub fn tokens_minted(&self) -> u64 {
        self.lock().minted
    }

    /// App JWTs accepted (each checked for signature, issuer, `iat` and `exp`).
    pub fn app_jwts_accepted(&self) -> u64 {
        self.lock()
            .app_jwts
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether `token` is a token the fake accepts now (by its clock), and as whom.
    pub fn token_login(&self, token: &str) -> Option<String> {
        (self.token_checker())(token)
    }

    /// [`Self::token_login`] as a function that outlives this borrow: for a git
    /// server standing in front of [`Self::git_dir`].
    pub fn token_checker(&self) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
        let state = Arc::clone(&self.state);
        move |token| {
            let s = state.lock().unwrap_or_else(PoisonError::into_inner);
            let now = s.clock.now();
            s.tokens
                .get(token)
                .filter(|t| t.expires_at.is_none_or(|at| at > now))
                .map(|t| t.login.clone())
        }
    }

    /// The PR as the fake holds it.
    pub fn pull(&self, number: u64) -> FakePull {
        let s = self.lock();
        let p = s
            .pulls
            .get(&number)
            .unwrap_or_else(|| panic!("the fake has no PR #{number}"));
        FakePull {
            number,
            title: p.title.clone(),
            body: p.body.clone(),
            author: p.author.clone(),
            head: p.head.clone(),
            base: p.base.clone(),
            open: p.closed_at.is_none(),
            merged: p.merged_at.is_some(),
            merge_commit_sha: p.merge_commit_sha.clone(),
            labels: p.labels.clone(),
        }
    }

    /// Every PR the fake holds, in number order.
    pub fn pulls(&self) -> Vec<FakePull> {
        let numbers: Vec<u64> = self.lock().pulls.keys().copied().collect();
        numbers.into_iter().map(|n| self.pull(n)).collect()
    }

    /// Panics listing every response that broke GitHub's description; returns how many
    /// responses were validated.
    pub fn assert_responses_valid(&self) -> u64 {
        let s = self.lock();
        assert!(
            s.violations.is_empty(),
            "{} response(s) of the GitHub fake do not match GitHub's OpenAPI description:\n{}",
            s.violations.len(),
            s.violations.join("\n")
        );
        let unrouted: Vec<String> = s
            .log
            .iter()
            .filter(|r| r.operation.is_none())
            .map(|r| format!("{} {}", r.method, r.uri))
            .collect();
        assert!(
            unrouted.is_empty(),
            "requests to paths the fake does not serve: {unrouted:?}"
        );
        s.validated
    }
}

#[allow(clippy::too_many_lines)] // one request's whole path through the fake, top to bottom
fn handle(
    state: &Mutex<State>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let path = uri.path();
    let query = query_pairs(uri.query().unwrap_or_default());
    let if_none_match = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let route = route(method, path);
    let operation = route.as_ref().and_then(|r| {
        openapi::spec()
            .operation_id(method.as_str(), r.template)
            .map(str::to_owned)
    });
    if let Some(op) = &operation {
        *s.counts.entry(op.clone()).or_default() += 1;
    }
    let mut record = Recorded {
        method: method.to_string(),
        uri: uri.to_string(),
        operation: operation.clone(),
        status: 0,
        if_none_match: if_none_match.is_some(),
    };

    let (answer, exempt) = match (&route, &operation) {
        (Some(route), Some(op)) => {
            if let Some(failure) = s.scripted_failure(op) {
                (s.failure_answer(&failure), true)
            } else {
                match s.authenticate(route, headers) {
                    Err(answer) => {
                        // 401 is documented only for minting tokens; elsewhere it is
                        // infrastructure, not an operation response.
                        let exempt = !route.template.starts_with("/app/");
                        (answer, exempt)
                    }
                    Ok(login) => {
                        let body: Value = if body.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_slice(body).unwrap_or(Value::Null)
                        };
                        (s.dispatch(route, method, &query, &body, &login), false)
                    }
                }
            }
        }
        _ => (Answer::error(404, "Not Found", "rest"), true),
    };
    let mut answer = answer;

    // Validate what GitHub would send, before conditional handling.
    if !exempt && let Some(route) = &route {
        match openapi::spec().validate_response(
            method.as_str(),
            route.template,
            answer.status,
            answer.body.as_ref(),
        ) {
            Ok(()) => s.validated += 1,
            Err(violation) => s.violations.push(format!("{method} {uri}: {violation}")),
        }
    }

    let mut etag = None;
    if method == Method::GET
        && answer.status == 200
        && let Some(body) = &answer.body
    {
        let tag = strong_etag(body);
        if if_none_match.as_deref() == Some(tag.as_str()) {
            answer = Answer {
                status: 304,
                body: None,
                headers: Vec::new(),
            };
            s.not_modified += 1;
        }
        etag = Some(tag);
    }
    let charged = answer.status != 304 && !answer_is_rate_limit(&answer);
    if charged && operation.as_deref() != Some("apps/create-installation-access-token") {
        s.rate_remaining = s.rate_remaining.saturating_sub(1);
    }
    if method != Method::GET
        && (200..300).contains(&answer.status)
        && operation.as_deref() != Some("apps/create-installation-access-token")
    {
        s.writes += 1;
    }
    record.status = answer.status;
    s.log.push(record);

    let reset = s.clock.now().timestamp() + 3600;
    let mut response = match &answer.body {
        Some(body) => (
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(body.clone()),
        )
            .into_response(),
        None => StatusCode::from_u16(answer.status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
    };
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(name, value);
        }
    };
    set("x-ratelimit-limit", s.rate_limit.to_string());
    set("x-ratelimit-remaining", s.rate_remaining.to_string());
    set(
        "x-ratelimit-used",
        (s.rate_limit - s.rate_remaining).to_string(),
    );
    set("x-ratelimit-reset", reset.to_string());
    set("x-ratelimit-resource", "core".into());
    set("x-github-api-version-selected", "2022-11-28".into());
    if let Some(etag) = etag {
        set("etag", etag);
    }
    for (name, value) in answer.headers {
        set(name, value);
    }
    response
}

fn answer_is_rate_limit(answer: &Answer) -> bool {
    answer
        .headers
        .iter()
        .any(|(n, v)| *n == "retry-after" || (*n == "x-ratelimit-remaining" && v == "0"))
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn scripted_failure(&mut self, operation: &str) -> Option<Failure> {
        let scripted = self
            .scripted
            .iter_mut()
            .find(|s| s.operation == operation && s.remaining > 0)?;
        scripted.remaining -= 1;
        Some(scripted.failure.clone())
    }

    fn failure_answer(&self, failure: &Failure) -> Answer {
        match failure {
            Failure::Status(status) => Answer::error(*status, "Server Error", "rest"),
            Failure::SecondaryRateLimit { retry_after } => Answer {
                headers: vec![("retry-after", retry_after.to_string())],
                ..Answer::error(
                    403,
                    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    "overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                )
            },
            Failure::PrimaryRateLimit { reset_in } => Answer {
                headers: vec![
                    ("x-ratelimit-remaining", "0".into()),
                    (
                        "x-ratelimit-reset",
                        (self.clock.now().timestamp() + reset_in).to_string(),
                    ),
                ],
                ..Answer::error(
                    403,
                    "API rate limit exceeded for installation ID 1.",
                    "overview/rate-limits-for-the-rest-api",
                )
            },
        }
    }

    /// The login a request acts as, or the 401 answer.
    fn authenticate(&mut self, route: &Route, headers: &HeaderMap) -> Result<String, Answer> {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("token "))
            })
            .map(str::to_owned);
        let unauthorized = |message: &str| Answer::error(401, message, "rest");
        let Some(bearer) = bearer else {
            return Err(unauthorized("Requires authentication"));
        };
        if route.template == "/app/installations/{installation_id}/access_tokens"
            || route.template == "/repos/{owner}/{repo}/installation"
            || route.template == "/app"
        {
            return self.verify_app_jwt(&bearer).map_err(|m| unauthorized(&m));
        }
        let now = self.clock.now();
        match self.tokens.get(&bearer) {
            Some(token) if token.expires_at.is_none_or(|at| at > now) => Ok(token.login.clone()),
            _ => Err(unauthorized("Bad credentials")),
        }
    }

    fn verify_app_jwt(&self, jwt: &str) -> Result<String, String> {
        use octocrab::jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
        #[derive(serde::Deserialize)]
        struct Claims {
            iss: Value,
            iat: i64,
            exp: i64,
        }
        let app = self.app.as_ref().ok_or("no GitHub App is configured")?;
        let key = DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes())
            .map_err(|e| format!("the fake's App public key: {e}"))?;
        let mut validation = Validation::new(Algorithm::RS256);
        // `iss` is a number (the App id); jsonwebtoken only knows string issuers, so it
        // is checked below.
        validation.set_required_spec_claims(&["exp", "iat"]);
        let data = decode::<Claims>(jwt, &key, &validation)
            .map_err(|e| format!("A JSON web token could not be decoded ({e})"))?;
        let iss = match &data.claims.iss {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        if iss != Some(app.app_id) {
            return Err(format!(
                "'Issuer' claim ('iss') must be the App id {}",
                app.app_id
            ));
        }
        // GitHub's bounds: issued no later than now (60 s of drift allowed), expiring
        // in the future but at most 10 minutes ahead.
        let now = SystemClock.now().timestamp();
        let Claims { iat, exp, .. } = data.claims;
        if iat > now + 60 {
            return Err(
                "'Issued at' claim ('iat') must be an Integer representing a time in the past"
                    .into(),
            );
        }
        if exp <= now || exp > now + 600 || exp <= iat {
            return Err("'Expiration time' claim ('exp') is too far in the future".into());
        }
        self.app_jwts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(format!("app:{}", app.app_id))
    }

    fn dispatch(
        &mut self,
        route: &Route,
        method: &Method,
        query: &HashMap<String, String>,
        body: &Value,
        login: &str,
    ) -> Answer {
        let p = &route.params;
        if route.template.starts_with("/repos/")
            && !(p[0].eq_ignore_ascii_case(&self.urls.owner)
                && p[1].eq_ignore_ascii_case(&self.urls.name))
        {
            return Answer::error(404, "Not Found", "rest");
        }
        let number = || p.get(2).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        match (method.as_str(), route.template) {
            ("GET", "/repos/{owner}/{repo}/pulls") => self.list_pulls(query),
            ("POST", "/repos/{owner}/{repo}/pulls") => self.create_pull(body, login),
            ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}") => self.get_pull(number()),
            ("PATCH", "/repos/{owner}/{repo}/pulls/{pull_number}") => {
                self.update_pull(number(), body)
            }
            ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/files") => {
                self.list_files(number(), query)
            }
            ("PUT", "/repos/{owner}/{repo}/pulls/{pull_number}/merge") => {
                self.merge(number(), body, login)
            }
            ("POST", "/repos/{owner}/{repo}/issues/{issue_number}/labels") => {
                self.add_labels(number(), body)
            }
            ("DELETE", "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}") => {
                self.remove_label(number(), &p[3])
            }
            ("GET", "/repos/{owner}/{repo}/issues/{issue_number}/comments") => {
                self.list_comments(number(), query)
            }
            ("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments") => {
                self.create_comment(number(), body, login)
            }
            ("GET", "/repos/{owner}/{repo}/commits/{ref}/status") => {
                self.combined_status(&p[2], query)
            }
            ("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs") => {
                self.list_check_runs(&p[2], query)
            }
            ("GET", "/repos/{owner}/{repo}/collaborators/{username}/permission") => {
                self.permission(&p[2])
            }
            ("POST", "/app/installations/{installation_id}/access_tokens") => {
                self.mint_token(&p[0])
            }
            ("GET", "/repos/{owner}/{repo}/installation") => self.repo_installation(),
            ("GET", "/app") => self.authenticated_app(),
            _ => Answer::error(404, "Not Found", "rest"),
        }
    }

    // --- git -------------------------------------------------------------------

    fn branch_sha(&self, branch: &str) -> Option<String> {
        let reference = self
            .git
            .find_reference(&format!("refs/heads/{branch}"))
            .ok()?;
        Some(reference.peel_to_commit().ok()?.id().to_string())
    }

    fn commit(&mut self, branch: &str, files: &[(&str, Option<&str>)], message: &str) -> String {
        super::fake_git::commit(
            &self.git,
            branch,
            files,
            message,
            self.clock.now().timestamp(),
        )
    }

    fn oid(&self, sha: &str) -> Option<git2::Oid> {
        git2::Oid::from_str(sha)
            .ok()
            .filter(|oid| self.git.find_commit(*oid).is_ok())
    }

    /// A ref as the API takes it: a SHA or a branch name.
    fn resolve_ref(&self, git_ref: &str) -> Option<String> {
        self.oid(git_ref)
            .map(|o| o.to_string())
            .or_else(|| self.branch_sha(git_ref))
    }

    fn head_sha(&self, pull: &Pull) -> String {
        pull.frozen_head
            .clone()
            .or_else(|| self.branch_sha(&pull.head))
            .unwrap_or_default()
    }

    /// The merged index of base and head (three-way from their merge base).
    fn merge_index(&self, pull: &Pull) -> Option<git2::Index> {
        let head = self.oid(&self.head_sha(pull))?;
        let base = self.oid(&self.branch_sha(&pull.base)?)?;
        let ancestor = self.git.merge_base(base, head).ok()?;
        let tree = |oid| self.git.find_commit(oid).ok()?.tree().ok();
        self.git
            .merge_trees(&tree(ancestor)?, &tree(base)?, &tree(head)?, None)
            .ok()
    }

    fn mergeable(&self, pull: &Pull) -> Option<bool> {
        if pull.closed_at.is_some() {
            return None;
        }
        self.merge_index(pull).map(|index| !index.has_conflicts())
    }

    /// `(filename, previous, status, blob sha, additions, deletions, patch)` per file.
    #[allow(clippy::type_complexity)] // a private row type used in one place
    fn diff(
        &self,
        pull: &Pull,
    ) -> Vec<(
        String,
        Option<String>,
        &'static str,
        Option<String>,
        u64,
        u64,
        Option<String>,
    )> {
        let head_sha = self.head_sha(pull);
        let (Some(head), Some(base)) = (
            self.oid(&head_sha),
            self.branch_sha(&pull.base).and_then(|s| self.oid(&s)),
        ) else {
            return Vec::new();
        };
        let from = self
            .git
            .merge_base(base, head)
            .ok()
            .and_then(|o| self.git.find_commit(o).ok())
            .and_then(|c| c.tree().ok());
        let to = self.git.find_commit(head).ok().and_then(|c| c.tree().ok());
        let mut diff = self
            .git
            .diff_tree_to_tree(from.as_ref(), to.as_ref(), None)
            .expect("diff");
        let _ = diff.find_similar(None);
        let mut rows = Vec::new();
        for (i, delta) in diff.deltas().enumerate() {
            let status = match delta.status() {
                git2::Delta::Added => "added",
                git2::Delta::Deleted => "removed",
                git2::Delta::Modified => "modified",
                git2::Delta::Renamed => "renamed",
                git2::Delta::Copied => "copied",
                git2::Delta::Unmodified => "unchanged",
                _ => "changed",
            };
            let new_path = delta
                .new_file()
                .path()
                .or_else(|| delta.old_file().path())
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let old_path = delta
                .old_file()
                .path()
                .map(|p| p.to_string_lossy().into_owned());
            let previous = (status == "renamed" || status == "copied")
                .then_some(old_path)
                .flatten();
            let blob = if status == "removed" {
                delta.old_file().id()
            } else {
                delta.new_file().id()
            };
            let (mut additions, mut deletions, mut patch_text) = (0, 0, None);
            if let Ok(Some(mut patch)) = git2::Patch::from_diff(&diff, i) {
                if let Ok((_, add, del)) = patch.line_stats() {
                    additions = add as u64;
                    deletions = del as u64;
                }
                if let Ok(buf) = patch.to_buf() {
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    // GitHub's `patch` is the hunks only, without the file header.
                    patch_text = text
                        .find("@@")
                        .map(|at| text[at..].trim_end_matches('\n').to_owned());
                }
            }
            rows.push((
                new_path,
                previous,
                status,
                Some(blob.to_string()),
                additions,
                deletions,
                patch_text,
            ));
        }
        rows
    }

    // --- JSON ------------------------------------------------------------------

    fn pull_json(&self, pull: &Pull) -> Value {
        let head_sha = self.head_sha(pull);
        let base_sha = self.branch_sha(&pull.base).unwrap_or_default();
        let open_issues = self
            .pulls
            .values()
            .filter(|p| p.closed_at.is_none())
            .count() as u64;
        let repo = objects::repository(&self.urls, self.created, open_issues);
        let diff = self.diff(pull);
        let mergeable = self.mergeable(pull);
        let mergeable_state = if pull.draft && pull.closed_at.is_none() {
            "draft"
        } else {
            match (pull.closed_at.is_some(), mergeable) {
                (true, _) | (false, None) => "unknown",
                (false, Some(false)) => "dirty",
                (false, Some(true)) => "clean",
            }
        };
        let comments = self
            .comments
            .iter()
            .filter(|c| c.issue == pull.number)
            .count() as u64;
        objects::pull(
            &self.urls,
            &PullView {
                number: pull.number,
                title: &pull.title,
                body: pull.body.as_deref(),
                author: &pull.author,
                open: pull.closed_at.is_none(),
                draft: pull.draft,
                head_branch: &pull.head,
                head_sha: &head_sha,
                base_branch: &pull.base,
                base_sha: &base_sha,
                labels: &pull.labels,
                created_at: pull.created_at,
                updated_at: pull.updated_at,
                closed_at: pull.closed_at,
                merged_at: pull.merged_at,
                merged_by: pull.merged_by.as_deref(),
                merge_commit_sha: pull.merge_commit_sha.as_deref(),
                mergeable,
                mergeable_state,
                comments,
                commits: 1,
                additions: diff.iter().map(|d| d.4).sum(),
                deletions: diff.iter().map(|d| d.5).sum(),
                changed_files: diff.len() as u64,
                repo: &repo,
            },
        )
    }

    fn labels_json(&self, labels: &[String]) -> Value {
        Value::Array(
            labels
                .iter()
                .map(|l| objects::label(&self.urls, l))
                .collect(),
        )
    }

    /// One page of `items` as `per_page`/`page` ask, with a `Link` header.
    fn page(
        &self,
        items: Vec<Value>,
        query: &HashMap<String, String>,
        path: &str,
    ) -> (Vec<Value>, Option<(&'static str, String)>) {
        let per_page = query
            .get("per_page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(30)
            .clamp(1, 100)
            .min(self.max_per_page);
        let page = query
            .get("page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let last = items.len().div_ceil(per_page).max(1);
        let chunk: Vec<Value> = items
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .collect();
        let url = |n: usize| {
            let mut pairs: Vec<String> = query
                .iter()
                .filter(|(k, _)| k.as_str() != "page")
                .map(|(k, v)| format!("{k}={}", encode_query(v)))
                .collect();
            pairs.sort();
            pairs.push(format!("page={n}"));
            format!("<{}{path}?{}>", self.urls.api, pairs.join("&"))
        };
        let mut links = Vec::new();
        if page < last {
            links.push(format!("{}; rel=\"next\"", url(page + 1)));
            links.push(format!("{}; rel=\"last\"", url(last)));
        }
        if page > 1 {
            links.push(format!("{}; rel=\"prev\"", url(page - 1)));
            links.push(format!("{}; rel=\"first\"", url(1)));
        }
        let link = (!links.is_empty()).then(|| ("link", links.join(", ")));
        (chunk, link)
    }

    // --- operations --------------------------------------------------------------

    fn list_pulls(&self, query: &HashMap<String, String>) -> Answer {
        let state = query.get("state").map_or("open", String::as_str);
        let head = query.get("head").map(|h| {
            h.split_once(':')
                .map_or(h.as_str(), |(_, branch)| branch)
                .to_owned()
        });
        let mut pulls: Vec<&Pull> = self
            .pulls
            .values()
            .filter(|p| match state {
                "open" => p.closed_at.is_none(),
                "closed" => p.closed_at.is_some(),
                _ => true,
            })
            .filter(|p| head.as_ref().is_none_or(|h| &p.head == h))
            .filter(|p| query.get("base").is_none_or(|b| &p.base == b))
            .collect();
        pulls.sort_by_key(|p| std::cmp::Reverse(p.number));
        let items = pulls
            .into_iter()
            .map(|p| objects::simple(self.pull_json(p)))
            .collect();
        let path = format!("/repos/{}/pulls", self.urls.full_name());
        let (page, link) = self.page(items, query, &path);
        Answer {
            headers: link.into_iter().collect(),
            ..Answer::json(200, Value::Array(page))
        }
    }

    fn create_pull(&mut self, body: &Value, login: &str) -> Answer {
        let docs = "pulls/pulls#create-a-pull-request";
        let text = |k: &str| body[k].as_str().map(str::to_owned);
        let (Some(title), Some(head), Some(base)) = (text("title"), text("head"), text("base"))
        else {
            return Answer::json(
                422,
                objects::validation_error(
                    "title, head and base are required",
                    "PullRequest",
                    "missing_field",
                    docs,
                ),
            );
        };
        let head = head
            .split_once(':')
            .map_or(head.as_str(), |(_, b)| b)
            .to_owned();
        if self.branch_sha(&head).is_none() {
            return Answer::json(
                422,
                objects::validation_error("head is invalid", "PullRequest", "invalid", docs),
            );
        }
        if self.branch_sha(&base).is_none() {
            return Answer::json(
                422,
                objects::validation_error("base is invalid", "PullRequest", "invalid", docs),
            );
        }
        if self
            .pulls
            .values()
            .any(|p| p.closed_at.is_none() && p.head == head && p.base == base)
        {
            return Answer::json(
                422,
                objects::validation_error(
                    &format!(
                        "A pull request already exists for {}:{head}.",
                        self.urls.owner
                    ),
                    "PullRequest",
                    "custom",
                    docs,
                ),
            );
        }
        let now = self.clock.now();
        let number = self.next_number;
        self.next_number += 1;
        let pull = Pull {
            number,
            title,
            body: text("body"),
            author: login.to_owned(),
            head,
            base,
            draft: body["draft"].as_bool().unwrap_or(false),
            labels: Vec::new(),
            created_at: now,
            updated_at: now,
            closed_at: None,
            merged_at: None,
            merged_by: None,
            merge_commit_sha: None,
            frozen_head: None,
        };
        let json = self.pull_json(&pull);
        self.pulls.insert(number, pull);
        Answer::json(201, json)
    }

    fn get_pull(&self, number: u64) -> Answer {
        match self.pulls.get(&number) {
            Some(pull) => Answer::json(200, self.pull_json(pull)),
            None => Answer::error(404, "Not Found", "pulls/pulls#get-a-pull-request"),
        }
    }

    fn update_pull(&mut self, number: u64, body: &Value) -> Answer {
        let now = self.clock.now();
        let Some(pull) = self.pulls.get_mut(&number) else {
            return Answer::error(403, "Not Found", "pulls/pulls#update-a-pull-request");
        };
        if let Some(title) = body["title"].as_str() {
            title.clone_into(&mut pull.title);
        }
        if let Some(text) = body["body"].as_str() {
            pull.body = Some(text.to_owned());
        }
        pull.updated_at = now;
        let pull = &self.pulls[&number];
        Answer::json(200, self.pull_json(pull))
    }

    fn list_files(&self, number: u64, query: &HashMap<String, String>) -> Answer {
        let Some(pull) = self.pulls.get(&number) else {
            return Answer::json(
                422,
                objects::validation_error(
                    "pull request not found",
                    "PullRequest",
                    "invalid",
                    "pulls/pulls#list-pull-requests-files",
                ),
            );
        };
        let head_sha = self.head_sha(pull);
        let items = self
            .diff(pull)
            .into_iter()
            .map(|(file, previous, status, blob, add, del, patch)| {
                objects::diff_entry(
                    &self.urls,
                    &head_sha,
                    &file,
                    previous.as_deref(),
                    status,
                    blob.as_deref(),
                    add,
                    del,
                    patch.as_deref(),
                )
            })
            .collect();
        let path = format!("/repos/{}/pulls/{number}/files", self.urls.full_name());
        let (page, link) = self.page(items, query, &path);
        Answer {
            headers: link.into_iter().collect(),
            ..Answer::json(200, Value::Array(page))
        }
    }

    fn merge(&mut self, number: u64, body: &Value, login: &str) -> Answer {
        let docs = "pulls/pulls#merge-a-pull-request";
        let Some(pull) = self.pulls.get(&number) else {
            return Answer::error(404, "Not Found", docs);
        };
        let not_mergeable = Answer::json(
            405,
            json!({"message": "Pull Request is not mergeable", "documentation_url": format!("https://docs.github.com/rest/{docs}")}),
        );
        if pull.closed_at.is_some() {
            return not_mergeable;
        }
        let head_sha = self.head_sha(pull);
        if let Some(expected) = body["sha"].as_str()
            && expected != head_sha
        {
            return Answer::json(
                409,
                json!({"message": "Head branch was modified. Review and try the merge again.", "documentation_url": format!("https://docs.github.com/rest/{docs}")}),
            );
        }
        let method = body["merge_method"].as_str().unwrap_or("merge");
        if !matches!(method, "merge" | "squash" | "rebase") {
            return Answer::json(
                422,
                objects::validation_error(
                    "merge_method is invalid",
                    "PullRequest",
                    "invalid",
                    docs,
                ),
            );
        }
        let Some(mut index) = self.merge_index(pull) else {
            return not_mergeable;
        };
        if index.has_conflicts() {
            return not_mergeable;
        }
        let git = &self.git;
        let tree = git
            .find_tree(index.write_tree_to(git).expect("write merged tree"))
            .expect("tree");
        let base_sha = self.branch_sha(&pull.base).expect("base branch");
        let base_commit = git
            .find_commit(git2::Oid::from_str(&base_sha).expect("sha"))
            .expect("base commit");
        let head_commit = git
            .find_commit(git2::Oid::from_str(&head_sha).expect("sha"))
            .expect("head commit");
        let mut parents = vec![&base_commit];
        if method == "merge" {
            parents.push(&head_commit);
        }
        let when = git2::Time::new(self.clock.now().timestamp(), 0);
        let who = git2::Signature::new("GitHub", "noreply@github.com", &when).expect("sig");
        let message = format!("{} (#{number})", pull.title);
        let sha = git
            .commit(
                Some(&format!("refs/heads/{}", pull.base)),
                &who,
                &who,
                &message,
                &tree,
                &parents,
            )
            .expect("merge commit")
            .to_string();
        let now = self.clock.now();
        let pull = self.pulls.get_mut(&number).expect("pull");
        pull.merged_at = Some(now);
        pull.closed_at = Some(now);
        pull.updated_at = now;
        pull.merged_by = Some(login.to_owned());
        pull.merge_commit_sha = Some(sha.clone());
        pull.frozen_head = Some(head_sha);
        Answer::json(
            200,
            json!({"sha": sha, "merged": true, "message": "Pull Request successfully merged"}),
        )
    }

    fn add_labels(&mut self, number: u64, body: &Value) -> Answer {
        let names: Vec<String> = body["labels"]
            .as_array()
            .or_else(|| body.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let now = self.clock.now();
        let Some(pull) = self.pulls.get_mut(&number) else {
            return Answer::error(404, "Not Found", "issues/labels#add-labels-to-an-issue");
        };
        for name in names {
            if !pull.labels.iter().any(|l| l.eq_ignore_ascii_case(&name)) {
                pull.labels.push(name);
            }
        }
        pull.updated_at = now;
        let labels = pull.labels.clone();
        Answer::json(200, self.labels_json(&labels))
    }

    fn remove_label(&mut self, number: u64, name: &str) -> Answer {
        let docs = "issues/labels#remove-a-label-from-an-issue";
        let now = self.clock.now();
        let Some(pull) = self.pulls.get_mut(&number) else {
            return Answer::error(404, "Not Found", docs);
        };
        let before = pull.labels.len();
        pull.labels.retain(|l| !l.eq_ignore_ascii_case(name));
        if pull.labels.len() == before {
            return Answer::error(404, "Label does not exist", docs);
        }
        pull.updated_at = now;
        let labels = pull.labels.clone();
        Answer::json(200, self.labels_json(&labels))
    }

    fn add_comment(&mut self, issue: u64, author: &str, body: &str, at: DateTime<Utc>) -> u64 {
        let id = self.next_id();
        self.comments.push(CommentRecord {
            id,
            issue,
            author: author.to_owned(),
            body: body.to_owned(),
            created_at: at,
            updated_at: at,
        });
        id
    }

    fn comment_json(&self, c: &CommentRecord) -> Value {
        objects::comment(
            &self.urls,
            c.issue,
            c.id,
            &c.author,
            &c.body,
            c.created_at,
            c.updated_at,
        )
    }

    fn list_comments(&self, number: u64, query: &HashMap<String, String>) -> Answer {
        if !self.pulls.contains_key(&number) {
            return Answer::error(404, "Not Found", "issues/comments#list-issue-comments");
        }
        let since = query
            .get("since")
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc));
        let items = self
            .comments
            .iter()
            .filter(|c| c.issue == number && since.is_none_or(|s| c.updated_at >= s))
            .map(|c| self.comment_json(c))
            .collect();
        let path = format!("/repos/{}/issues/{number}/comments", self.urls.full_name());
        let (page, link) = self.page(items, query, &path);
        Answer {
            headers: link.into_iter().collect(),
            ..Answer::json(200, Value::Array(page))
        }
    }

    fn create_comment(&mut self, number: u64, body: &Value, login: &str) -> Answer {
        let docs = "issues/comments#create-an-issue-comment";
        if !self.pulls.contains_key(&number) {
            return Answer::error(404, "Not Found", docs);
        }
        let Some(text) = body["body"].as_str() else {
            return Answer::json(
                422,
                objects::validation_error("body is missing", "IssueComment", "missing_field", docs),
            );
        };
        let now = self.clock.now();
        let id = self.add_comment(number, login, text, now);
        let comment = self.comments.iter().find(|c| c.id == id).expect("comment");
        Answer::json(201, self.comment_json(comment))
    }

    fn combined_status(&self, git_ref: &str, query: &HashMap<String, String>) -> Answer {
        let Some(sha) = self.resolve_ref(git_ref) else {
            return Answer::error(404, "No commit found for SHA: ", "commits/statuses");
        };
        // The latest status of each context, newest first.
        let mut latest: Vec<&StatusRecord> = Vec::new();
        for status in self.statuses.get(&sha).into_iter().flatten().rev() {
            if !latest.iter().any(|s| s.context == status.context) {
                latest.push(status);
            }
        }
        let state = if latest
            .iter()
            .any(|s| s.state == "failure" || s.state == "error")
        {
            "failure"
        } else if latest.is_empty() || latest.iter().any(|s| s.state == "pending") {
            "pending"
        } else {
            "success"
        };
        let items: Vec<Value> = latest
            .iter()
            .map(|s| {
                objects::status(
                    &self.urls,
                    &sha,
                    s.id,
                    &s.context,
                    &s.state,
                    s.description.as_deref(),
                    s.target_url.as_deref(),
                    s.at,
                )
            })
            .collect();
        let total = items.len();
        let path = format!("/repos/{}/commits/{git_ref}/status", self.urls.full_name());
        let (page, link) = self.page(items, query, &path);
        let open_issues = self
            .pulls
            .values()
            .filter(|p| p.closed_at.is_none())
            .count() as u64;
        Answer {
            headers: link.into_iter().collect(),
            ..Answer::json(
                200,
                json!({
                    "state": state,
                    "statuses": page,
                    "sha": sha,
                    "total_count": total,
                    "repository": objects::repository(&self.urls, self.created, open_issues),
                    "commit_url": format!("{}/commits/{sha}", self.urls.repo_api()),
                    "url": format!("{}/commits/{sha}/status", self.urls.repo_api()),
                }),
            )
        }
    }

    fn list_check_runs(&self, git_ref: &str, query: &HashMap<String, String>) -> Answer {
        let sha = self
            .resolve_ref(git_ref)
            .unwrap_or_else(|| git_ref.to_owned());
        // filter=latest (GitHub's default): the newest run of each name.
        let mut latest: Vec<&CheckRecord> = Vec::new();
        for run in self.check_runs.get(&sha).into_iter().flatten().rev() {
            if query.get("filter").map(String::as_str) == Some("all")
                || !latest.iter().any(|r| r.name == run.name)
            {
                latest.push(run);
            }
        }
        latest.reverse();
        let pulls: Vec<Value> = self
            .pulls
            .values()
            .filter(|p| p.closed_at.is_none() && self.head_sha(p) == sha)
            .map(|p| {
                let base_sha = self.branch_sha(&p.base).unwrap_or_default();
                objects::pull_minimal(&self.urls, p.number, (&p.head, &sha), (&p.base, &base_sha))
            })
            .collect();
        let items: Vec<Value> = latest
            .iter()
            .map(|r| {
                objects::check_run(
                    &self.urls,
                    &sha,
                    r.id,
                    &r.name,
                    &r.status,
                    r.conclusion.as_deref(),
                    r.started_at,
                    r.completed_at,
                    &pulls,
                )
            })
            .collect();
        let total = items.len();
        let path = format!(
            "/repos/{}/commits/{git_ref}/check-runs",
            self.urls.full_name()
        );
        let (page, link) = self.page(items, query, &path);
        Answer {
            headers: link.into_iter().collect(),
            ..Answer::json(200, json!({ "total_count": total, "check_runs": page }))
        }
    }

    fn permission(&self, login: &str) -> Answer {
        let Some(role) = self.permissions.get(&login.to_ascii_lowercase()) else {
            return Answer::error(
                404,
                "Not Found",
                "collaborators/collaborators#get-repository-permissions-for-a-user",
            );
        };
        // `permission` is the legacy name: maintain → write, triage → read.
        let legacy = match role.as_str() {
            "maintain" => "write",
            "triage" => "read",
            other => other,
        };
        let rank = ["none", "read", "triage", "write", "maintain", "admin"]
            .iter()
            .position(|r| r == role)
            .unwrap_or(0);
        let mut user = objects::user(&self.urls, login);
        user["role_name"] = Value::String(role.clone());
        user["permissions"] = json!({
            "pull": rank >= 1,
            "triage": rank >= 2,
            "push": rank >= 3,
            "maintain": rank >= 4,
            "admin": rank >= 5,
        });
        Answer::json(
            200,
            json!({ "permission": legacy, "role_name": role, "user": user }),
        )
    }

    /// `GET /app`: the App, its slug its bot's login without `[bot]`.
    fn authenticated_app(&self) -> Answer {
        let Some(app) = &self.app else {
            return Answer::error(404, "Not Found", "apps/apps#get-the-authenticated-app");
        };
        let slug = app.bot_login.trim_end_matches("[bot]");
        Answer::json(
            200,
            json!({
                "id": app.app_id,
                "slug": slug,
                "node_id": format!("A_{}", app.app_id),
                "client_id": format!("Iv1.{:016x}", app.app_id),
                "owner": objects::user(&self.urls, &self.urls.owner),
                "name": slug,
                "description": "Bumps images, merges when green, rolls back on alerts",
                "external_url": format!("{}/{slug}", self.urls.html),
                "html_url": format!("{}/apps/{slug}", self.urls.html),
                "created_at": objects::time(self.created),
                "updated_at": objects::time(self.created),
                "permissions": app_permissions(),
                "events": APP_EVENTS,
                "installations_count": 1
            }),
        )
    }

    fn repo_installation(&self) -> Answer {
        let docs = "apps/apps#get-a-repository-installation-for-the-authenticated-app";
        let Some(app) = &self.app else {
            return Answer::error(404, "Not Found", docs);
        };
        let id = app.installation_id;
        let owner = objects::user(&self.urls, &self.urls.owner);
        Answer::json(
            200,
            json!({
                "id": id,
                "account": owner,
                "repository_selection": "selected",
                "access_tokens_url": format!("{}/app/installations/{id}/access_tokens", self.urls.api),
                "repositories_url": format!("{}/installation/repositories", self.urls.api),
                "html_url": format!("{}/organizations/{}/settings/installations/{id}", self.urls.html, self.urls.owner),
                "app_id": app.app_id,
                "app_slug": app.bot_login.trim_end_matches("[bot]"),
                "target_id": owner["id"],
                "target_type": "Organization",
                "permissions": app_permissions(),
                "events": APP_EVENTS,
                "created_at": objects::time(self.created),
                "updated_at": objects::time(self.created),
                "single_file_name": null,
                "suspended_by": null,
                "suspended_at": null
            }),
        )
    }

    fn mint_token(&mut self, installation: &str) -> Answer {
        let docs = "apps/apps#create-an-installation-access-token-for-an-app";
        let Some(app) = self.app.clone() else {
            return Answer::error(404, "Not Found", docs);
        };
        if installation.parse::<u64>().ok() != Some(app.installation_id) {
            return Answer::error(404, "Not Found", docs);
        }
        self.minted += 1;
        let token = format!("ghs_fake{:04}", self.minted);
        let expires_at = self.clock.now() + app.token_ttl;
        self.tokens.insert(
            token.clone(),
            Token {
                login: app.bot_login.clone(),
                expires_at: Some(expires_at),
            },
        );
        Answer::json(
            201,
            json!({
                "token": token,
                "expires_at": objects::time(expires_at),
                "permissions": {
                    "pull_requests": "write",
                    "issues": "write",
                    "contents": "write",
                    "statuses": "read",
                    "checks": "read"
                },
                "repository_selection": "all"
            }),
        )
    }
}

fn encode_query(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}
