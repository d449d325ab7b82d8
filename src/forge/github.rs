//! The GitHub implementation of [`Forge`] (does I/O: HTTPS to the GitHub REST API).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use octocrab::Octocrab;
use reqwest::header::{ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH, LINK, RETRY_AFTER};
use serde::de::DeserializeOwned;

use super::error::ForgeError;
use super::feed::{Watch, WebhookFeed};
use super::rest::{self, CachedGet, EtagCache, Reply};
use super::stats::{ForgeStats, RequestKind};
use super::wire;
use super::{
    ChangedFile, Check, CheckConclusion, CheckRun, CheckState, CheckStatus, CombinedStatus,
    Comment, CommitStatus, DeliveredComment, Forge, ForgeKind, MergeMethod, Mergeability,
    MergeableState, Merged, NewPullRequest, Permission, PullRequest, PullRequestEdit, RepoName,
    StatusState,
};
use crate::clock::Clock;

/// How the client authenticates.
#[derive(Clone)]
pub enum GitHubAuth {
    /// A personal access token, fine-grained token or any other bearer token.
    Token(String),
    /// A GitHub App: requests carry an installation token minted with a JWT signed
    /// by the App's private key, for the installation that holds the repository.
    App {
        /// The App's numeric id (the JWT's `iss`).
        app_id: u64,
        /// The App's private key, PEM (`-----BEGIN RSA PRIVATE KEY-----`).
        private_key_pem: String,
        /// The installation for every repository; `None`: found per repository
        /// (`GET /repos/{owner}/{repo}/installation`, once per repository).
        installation_id: Option<u64>,
    },
}

impl fmt::Debug for GitHubAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::App {
                app_id,
                installation_id,
                ..
            } => f
                .debug_struct("App")
                .field("app_id", app_id)
                .field("private_key_pem", &"<redacted>")
                .field("installation_id", installation_id)
                .finish(),
        }
    }
}

/// A GitHub App's credentials (`--github-app-id`, `--github-app-key`): which
/// installation holds a repository is asked per repository.
#[derive(Clone)]
pub struct GitHubApp {
    /// The App's numeric id.
    pub app_id: u64,
    /// The App's private key, PEM.
    pub private_key_pem: String,
}

impl GitHubApp {
    /// The App's auth, its installations found per repository.
    #[must_use]
    pub fn auth(&self) -> GitHubAuth {
        GitHubAuth::App {
            app_id: self.app_id,
            private_key_pem: self.private_key_pem.clone(),
            installation_id: None,
        }
    }
}

impl fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubApp")
            .field("app_id", &self.app_id)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// When and how often a failed request is tried again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request in all (≥ 1), rate-limit waits included.
    pub max_attempts: u32,
    /// The first back-off after a 5xx, timeout or connection error; doubles each time,
    /// with jitter.
    pub base_backoff: Duration,
    /// The longest back-off.
    pub max_backoff: Duration,
    /// The longest rate-limit wait (`Retry-After`, `x-ratelimit-reset`) done inside a
    /// call; a longer one fails the call with [`ForgeError::RateLimited`] at once, so
    /// the controller requeues instead of blocking.
    pub max_rate_limit_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_rate_limit_wait: Duration::from_secs(60),
        }
    }
}

/// Settings of a [`GitHub`] client.
#[derive(Debug, Clone)]
pub struct GitHubConfig {
    /// The REST API root: `https://api.github.com`, or `https://HOST/api/v3` for GitHub
    /// Enterprise Server.
    pub api_url: String,
    pub auth: GitHubAuth,
    /// One attempt (connect, send, read the whole body) must finish within this.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// An App installation token is minted again when it expires within this.
    pub token_refresh_margin: chrono::Duration,
    /// How many GET answers (one per URL) the conditional-request cache keeps.
    pub etag_cache_entries: usize,
    /// The most pages a paginated read follows (100 items each) before it fails with
    /// [`ForgeError::InvalidResponse`] rather than return a partial list.
    pub max_pages: u32,
    /// The largest response body accepted.
    pub max_response_bytes: usize,
}

impl GitHubConfig {
    /// Defaults for `auth` against api.github.com.
    #[must_use]
    pub fn new(auth: GitHubAuth) -> Self {
        Self {
            api_url: "https://api.github.com".to_owned(),
            auth,
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            token_refresh_margin: chrono::Duration::minutes(5),
            etag_cache_entries: 1024,
            max_pages: 30,
            max_response_bytes: 16 * 1024 * 1024,
        }
    }

    /// The same with another API root (GitHub Enterprise Server, a test fake).
    #[must_use]
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = url.into();
        self
    }

    /// The same with another retry policy.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// A GitHub REST API client implementing [`Forge`]; cheap to share behind an `Arc`.
pub struct GitHub {
    /// Token-authenticated, or (App auth) JWT-authenticated for minting tokens.
    base: Octocrab,
    installation: Option<InstallationAuth>,
    clock: Arc<dyn Clock>,
    config: GitHubConfig,
    stats: Arc<ForgeStats>,
    etags: Mutex<EtagCache>,
    feed: Option<Arc<WebhookFeed>>,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("api_url", &self.config.api_url)
            .field("auth", &self.config.auth)
            .finish_non_exhaustive()
    }
}

struct InstallationAuth {
    /// The installation of every repository, when configured.
    fixed: Option<u64>,
    /// Installations found, by `owner/repo` (lower case).
    by_repo: Mutex<HashMap<String, u64>>,
    /// Each installation's current token: the client carrying it, the token, and
    /// when it expires.
    current: tokio::sync::Mutex<HashMap<u64, Minted>>,
}

#[derive(Clone)]
struct Minted {
    client: Octocrab,
    token: String,
    expires_at: DateTime<Utc>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Patch,
    Put,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Patch => "PATCH",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
        }
    }
}

/// One request, before retries.
struct Request {
    kind: RequestKind,
    method: Method,
    /// Path and query, relative to the API root.
    path: String,
    body: Option<serde_json::Value>,
    /// Whether the request may be sent again after a 5xx or a timeout (the first one
    /// may have taken effect).
    idempotent: bool,
    /// Send as the App (JWT) rather than as the installation.
    as_app: bool,
    /// A read that may be answered from the last answer when the webhook feed proves
    /// it unchanged: what it watches, and the feed key.
    relaxed: Option<(Watch, String)>,
}

impl Request {
    fn new(kind: RequestKind, method: Method, path: String) -> Self {
        let idempotent = !matches!(kind, RequestKind::CreatePr | RequestKind::PostComment);
        Self {
            kind,
            method,
            path,
            body: None,
            idempotent,
            as_app: false,
            relaxed: None,
        }
    }

    fn relaxed(mut self, relaxed: Option<(Watch, String)>) -> Self {
        self.relaxed = relaxed;
        self
    }

    fn body(mut self, body: &impl serde::Serialize) -> Result<Self, ForgeError> {
        self.body = Some(serde_json::to_value(body).map_err(|e| ForgeError::Config {
            detail: format!("serializing a request body: {e}"),
        })?);
        Ok(self)
    }

    /// `GET /repos/o/r/pulls` (no query: it can carry branch names, keep logs short).
    fn what(&self) -> String {
        let path = self.path.split('?').next().unwrap_or_default();
        format!("{} {path}", self.method.as_str())
    }
}

/// Why an attempt failed in a way that another attempt may fix.
enum Failure {
    Status(u16),
    RateLimited { status: u16, wait: Duration },
    Timeout,
    Connection(String),
}

impl Failure {
    fn into_error(self, what: String, attempts: u32) -> ForgeError {
        match self {
            Self::Status(status) => ForgeError::Server {
                what,
                status,
                attempts,
            },
            Self::RateLimited { status, wait } => ForgeError::RateLimited {
                what,
                status,
                retry_after_secs: wait.as_secs(),
            },
            Self::Timeout => ForgeError::Timeout { what, attempts },
            Self::Connection(detail) => ForgeError::Connection {
                what,
                attempts,
                detail,
            },
        }
    }
}

/// What to do after one attempt.
enum Outcome {
    Done(Reply),
    Retry { wait: Duration, failure: Failure },
    Fail(ForgeError),
}

impl GitHub {
    /// A client for `config`, taking time (token expiry, rate-limit resets) from
    /// `clock`. Must be called inside a Tokio runtime (octocrab spawns its worker).
    pub fn new(config: GitHubConfig, clock: Arc<dyn Clock>) -> Result<Self, ForgeError> {
        crate::install_crypto_provider();
        let config_error = |what: &str, e: &dyn fmt::Display| ForgeError::Config {
            detail: format!("{what}: {e}"),
        };
        url::Url::parse(&config.api_url)
            .map_err(|e| config_error(&format!("API URL {:?}", config.api_url), &e))?;
        let builder = Octocrab::builder()
            .base_uri(config.api_url.as_str())
            .map_err(|e| config_error(&format!("API URL {:?}", config.api_url), &e))?
            // Retries are done here (counted, rate-limit aware, by our clock).
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
            .set_connect_timeout(Some(config.request_timeout.min(Duration::from_secs(10))))
            .add_header(
                reqwest::header::ACCEPT,
                "application/vnd.github+json".to_owned(),
            );
        let (builder, installation) = match &config.auth {
            GitHubAuth::Token(token) => (builder.personal_token(token.clone()), None),
            GitHubAuth::App {
                app_id,
                private_key_pem,
                installation_id,
            } => {
                let key = octocrab::EncodingKey::from_rsa_pem(private_key_pem.as_bytes())
                    .map_err(|e| config_error("GitHub App private key", &e))?;
                (
                    builder.app(octocrab::models::AppId(*app_id), key),
                    Some(InstallationAuth {
                        fixed: *installation_id,
                        by_repo: Mutex::default(),
                        current: tokio::sync::Mutex::default(),
                    }),
                )
            }
        };
        let base = builder
            .build()
            .map_err(|e| config_error("building the HTTP client", &e))?;
        Ok(Self {
            base,
            installation,
            clock,
            etags: Mutex::new(EtagCache::new(config.etag_cache_entries)),
            config,
            stats: Arc::new(ForgeStats::default()),
            feed: None,
        })
    }

    /// The same client, answering relaxed reads from memory when `feed` (filled by
    /// the `/webhooks/github` receiver) proves them unchanged, and handing on the
    /// commands it collected.
    #[must_use]
    pub fn with_feed(mut self, feed: Arc<WebhookFeed>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// The relaxed-read key of `watch` on `key`, when a feed is attached.
    fn relax(&self, watch: Watch, key: String) -> Option<(Watch, String)> {
        self.feed.as_ref().map(|_| (watch, key))
    }

    /// The last answer to `request`, if it is a relaxed read the webhook feed proves
    /// unchanged since it was confirmed, less than the feed's resync period ago.
    fn answer_from_feed(&self, request: &Request) -> Option<Reply> {
        let (feed, (watch, key)) = (self.feed.as_ref()?, request.relaxed.as_ref()?);
        let reply = self
            .etags()
            .proven_by(&request.path, feed, (*watch, key), self.clock.now())?;
        self.stats.count_from_webhooks();
        Some(reply)
    }

    /// The request counters and rate-limit budget, for metrics and benchmarks.
    #[must_use]
    pub fn stats(&self) -> Arc<ForgeStats> {
        Arc::clone(&self.stats)
    }

    /// When the first of the cached installation tokens expires (`None` with token
    /// auth, or before the first request).
    pub async fn installation_token_expiry(&self) -> Option<DateTime<Utc>> {
        let installation = self.installation.as_ref()?;
        installation
            .current
            .lock()
            .await
            .values()
            .map(|m| m.expires_at)
            .min()
    }

    /// The client to send `request` with: the token client, or the client of the
    /// installation holding the request's repository, with a token valid for at least
    /// the refresh margin (minted if needed).
    async fn api_client(&self, request: &Request) -> Result<Octocrab, ForgeError> {
        if self.installation.is_none() {
            return Ok(self.base.clone());
        }
        let repo = repo_of_path(&request.path).ok_or_else(|| ForgeError::Config {
            detail: format!(
                "{}: with GitHub App auth every request must name a repository",
                request.what()
            ),
        })?;
        Ok(self.installation_token(&repo).await?.client)
    }

    /// The installation token for `repo` (`owner/repo`), minted when there is none
    /// or it expires within the refresh margin.
    async fn installation_token(&self, repo: &str) -> Result<Minted, ForgeError> {
        let Some(installation) = &self.installation else {
            return Err(ForgeError::Config {
                detail: "installation tokens need GitHub App auth".into(),
            });
        };
        let id = self.installation_id(installation, repo).await?;
        let mut current = installation.current.lock().await;
        let now = self.clock.now();
        if let Some(minted) = current.get(&id)
            && minted.expires_at - now > self.config.token_refresh_margin
        {
            return Ok(minted.clone());
        }
        let mut request = Request::new(
            RequestKind::InstallationToken,
            Method::Post,
            format!("/app/installations/{id}/access_tokens"),
        )
        .body(&serde_json::json!({}))?;
        request.as_app = true;
        let reply = Box::pin(self.send(&request)).await?;
        let token: wire::InstallationToken = expect_json(&request, &reply)?;
        let client = self
            .base
            .user_access_token(token.token.clone())
            .map_err(|e| ForgeError::Config {
                detail: format!("installation client: {e}"),
            })?;
        tracing::debug!(installation = id, expires_at = %token.expires_at, "minted a GitHub App installation token");
        let minted = Minted {
            client,
            token: token.token,
            expires_at: token.expires_at,
        };
        current.insert(id, minted.clone());
        Ok(minted)
    }

    /// The installation holding `repo`: the configured one, or found once per
    /// repository as the App (`GET /repos/{owner}/{repo}/installation`).
    async fn installation_id(
        &self,
        installation: &InstallationAuth,
        repo: &str,
    ) -> Result<u64, ForgeError> {
        if let Some(id) = installation.fixed {
            return Ok(id);
        }
        let key = repo.to_ascii_lowercase();
        let known = installation
            .by_repo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied();
        if let Some(id) = known {
            return Ok(id);
        }
        let (owner, name) = repo.split_once('/').unwrap_or((repo, ""));
        let mut request = Request::new(
            RequestKind::Installation,
            Method::Get,
            format!("/repos/{}/{}/installation", encode(owner), encode(name)),
        );
        request.as_app = true;
        let reply = Box::pin(self.send(&request)).await?;
        if reply.status == 404 {
            return Err(ForgeError::NotFound {
                what: format!("the GitHub App's installation on {repo} (install the App on it)"),
            });
        }
        let found: wire::Installation = expect_json(&request, &reply)?;
        installation
            .by_repo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, found.id);
        Ok(found.id)
    }

    /// (App auth) an installation token for the installation holding `repo`, valid
    /// for at least the refresh margin; `None` with token auth.
    async fn app_git_token(&self, repo: &RepoName) -> Result<Option<String>, ForgeError> {
        match &self.config.auth {
            GitHubAuth::Token(_) => Ok(None),
            GitHubAuth::App { .. } => Ok(Some(
                self.installation_token(&format!("{}/{}", repo.owner, repo.name))
                    .await?
                    .token,
            )),
        }
    }

    /// The login the App's PRs and comments carry (`SLUG[bot]`, from `GET /app`);
    /// `None` with token auth.
    pub async fn app_bot_login(&self) -> Result<Option<String>, ForgeError> {
        if self.installation.is_none() {
            return Ok(None);
        }
        let mut request = Request::new(RequestKind::App, Method::Get, "/app".to_owned());
        request.as_app = true;
        let reply = self.send(&request).await?;
        let app: wire::App = expect_json(&request, &reply)?;
        Ok(Some(format!("{}[bot]", app.slug)))
    }

    async fn forget_installation_token(&self, request: &Request) {
        let Some(installation) = &self.installation else {
            return;
        };
        let Some(repo) = repo_of_path(&request.path) else {
            return;
        };
        let id = installation.fixed.or_else(|| {
            installation
                .by_repo
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&repo.to_ascii_lowercase())
                .copied()
        });
        if let Some(id) = id {
            installation.current.lock().await.remove(&id);
        }
    }

    fn etags(&self) -> std::sync::MutexGuard<'_, EtagCache> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map is usable.
        self.etags.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl GitHub {
    /// Sends `request`, retrying as the policy allows; returns the final answer (2xx,
    /// or a 4xx the caller maps) or the error.
    async fn send(&self, request: &Request) -> Result<Reply, ForgeError> {
        if let Some(reply) = self.answer_from_feed(request) {
            return Ok(reply);
        }
        let max_attempts = self.config.retry.max_attempts.max(1);
        let mut refreshed_after_401 = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(request, attempt).await? {
                Outcome::Done(reply)
                    if reply.status == 401
                        && !refreshed_after_401
                        && self.installation.is_some()
                        && !request.as_app =>
                {
                    // The installation token was revoked or expired early: mint a new
                    // one, once (this does not use up an attempt).
                    refreshed_after_401 = true;
                    attempt -= 1;
                    self.stats.count_retry();
                    self.forget_installation_token(request).await;
                }
                Outcome::Done(reply) => return Ok(reply),
                Outcome::Fail(error) => return Err(error),
                Outcome::Retry { wait, failure } => {
                    if attempt >= max_attempts {
                        return Err(failure.into_error(request.what(), attempt));
                    }
                    tracing::debug!(
                        request = %request.what(),
                        attempt,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "retrying GitHub request"
                    );
                    self.stats.count_retry();
                    self.stats.add_backoff(wait);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One attempt: waits for an exhausted budget to reset, sends (conditionally for
    /// GETs), and classifies the answer.
    async fn attempt(&self, request: &Request, attempt: u32) -> Result<Outcome, ForgeError> {
        self.wait_for_budget(request).await?;
        let client = if request.as_app {
            self.base.clone()
        } else {
            self.api_client(request).await?
        };
        let etag = if request.method == Method::Get {
            self.etags().get(&request.path).map(|c| c.etag.clone())
        } else {
            None
        };
        // Taken before sending: a delivery that arrives while the request is in flight
        // must invalidate its answer.
        let generation = self.feed.as_ref().map_or(0, |f| f.generation());
        let sent_at = self.clock.now();
        self.stats.count_request(request.kind);
        let exchanged = tokio::time::timeout(
            self.config.request_timeout,
            exchange(&client, request, etag.as_deref()),
        )
        .await;
        let (status, headers, body) = match exchanged {
            Err(_elapsed) => return Ok(self.transient(request, attempt, Failure::Timeout)),
            Ok(Err(detail)) => {
                return Ok(self.transient(request, attempt, Failure::Connection(detail)));
            }
            Ok(Ok(answer)) => answer,
        };
        let remaining = header_parse::<u64>(&headers, "x-ratelimit-remaining");
        let reset = header_parse::<i64>(&headers, "x-ratelimit-reset");
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
                    self.etags().put(
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
            403 | 429 => match self.rate_limit_wait(status, &headers, &body, remaining, reset) {
                Some(wait) => {
                    self.stats.count_rate_limited();
                    if wait > self.config.retry.max_rate_limit_wait {
                        Outcome::Fail(ForgeError::RateLimited {
                            what: request.what(),
                            status,
                            retry_after_secs: wait.as_secs(),
                        })
                    } else {
                        // A rate-limited request was not processed: safe to repeat.
                        Outcome::Retry {
                            wait,
                            failure: Failure::RateLimited { status, wait },
                        }
                    }
                }
                None => Outcome::Done(Reply { status, body, link }),
            },
            500..=599 => self.transient(request, attempt, Failure::Status(status)),
            _ => Outcome::Done(Reply { status, body, link }),
        })
    }

    /// A 304 to a conditional GET: the cached answer, confirmed as of `confirmed`
    /// (the feed generation and the time the request was sent).
    fn not_modified(
        &self,
        request: &Request,
        conditional: bool,
        (generation, sent_at): (u64, DateTime<Utc>),
    ) -> Outcome {
        let confirmed = conditional
            .then(|| self.etags().confirm(&request.path, (generation, sent_at)))
            .flatten();
        match confirmed {
            Some(reply) => {
                self.stats.count_not_modified();
                Outcome::Done(reply)
            }
            None => Outcome::Fail(rest::unasked_304(request.what())),
        }
    }

    /// After a 5xx, timeout or connection error: back off and retry, unless the
    /// request may already have taken effect and is not safe to repeat.
    fn transient(&self, request: &Request, attempt: u32, failure: Failure) -> Outcome {
        if request.idempotent {
            Outcome::Retry {
                wait: self.backoff(attempt),
                failure,
            }
        } else {
            Outcome::Fail(failure.into_error(request.what(), attempt))
        }
    }

    /// Exponential back-off with jitter (50–100 % of the nominal wait).
    fn backoff(&self, attempt: u32) -> Duration {
        rest::backoff(&self.config.retry, attempt)
    }

    /// How long a 403/429 asks us to wait, or `None` if it is not a rate limit.
    ///
    /// Secondary limits carry `Retry-After`; the primary limit is
    /// `x-ratelimit-remaining: 0` with `x-ratelimit-reset` (Unix seconds, compared with
    /// our clock); a secondary limit without a header waits a minute, as GitHub's
    /// documentation asks.
    fn rate_limit_wait(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &str,
        remaining: Option<u64>,
        reset: Option<i64>,
    ) -> Option<Duration> {
        if let Some(secs) = header_parse::<u64>(headers, RETRY_AFTER) {
            return Some(Duration::from_secs(secs));
        }
        if remaining == Some(0)
            && let Some(reset) = reset
        {
            return Some(self.until(reset));
        }
        let message = serde_json::from_str::<wire::ErrorBody>(body)
            .unwrap_or_default()
            .message
            .to_ascii_lowercase();
        (status == 429 || message.contains("rate limit")).then(|| Duration::from_secs(60))
    }

    /// Time from our clock's now until the Unix second `at` (zero if past).
    fn until(&self, at: i64) -> Duration {
        rest::until(self.clock.now(), at)
    }

    /// If the last answer said the primary budget is spent and it has not reset yet,
    /// waits for the reset (or fails when that is too far off) instead of sending a
    /// request that is sure to be refused.
    async fn wait_for_budget(&self, request: &Request) -> Result<(), ForgeError> {
        if request.as_app {
            return Ok(());
        }
        let wait = rest::budget_wait(
            &self.stats,
            self.clock.now(),
            &self.config.retry,
            (&|| request.what(), 403),
        )?;
        if wait.is_zero() {
            return Ok(());
        }
        self.stats.add_backoff(wait);
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Every page of a paginated GET, following `Link: <…>; rel="next"`.
    /// `relaxed`: each page may come from the webhook feed (see [`Self::from_feed`]).
    async fn get_pages(
        &self,
        kind: RequestKind,
        first: String,
        relaxed: Option<(Watch, String)>,
    ) -> Result<Vec<String>, ForgeError> {
        let mut pages = Vec::new();
        let mut next = Some(first);
        while let Some(path) = next {
            let request = Request::new(kind, Method::Get, path).relaxed(relaxed.clone());
            if pages.len() >= self.config.max_pages as usize {
                return Err(ForgeError::InvalidResponse {
                    what: request.what(),
                    detail: format!("more than {} pages", self.config.max_pages),
                });
            }
            let reply = self.send(&request).await?;
            if !(200..300).contains(&reply.status) {
                return Err(status_error(&request, &reply));
            }
            next = match reply.link.as_deref().and_then(next_link) {
                Some(url) => Some(self.relative(&request, url)?),
                None => None,
            };
            pages.push(reply.body);
        }
        Ok(pages)
    }

    /// The path and query of a `Link` URL, which must point at our API root.
    fn relative(&self, request: &Request, link: &str) -> Result<String, ForgeError> {
        let base =
            url::Url::parse(&self.config.api_url).map_err(|e| ForgeError::InvalidResponse {
                what: request.what(),
                detail: format!("API URL: {e}"),
            })?;
        rest::relative_link(link, &base, &request.what())
    }

    /// Sends a request that expects one JSON answer.
    async fn json<T: DeserializeOwned>(&self, request: Request) -> Result<T, ForgeError> {
        let reply = self.send(&request).await?;
        expect_json(&request, &reply)
    }

    /// Every page of a paginated GET whose pages are JSON arrays.
    async fn all_items<T: DeserializeOwned>(
        &self,
        kind: RequestKind,
        first: String,
        relaxed: Option<(Watch, String)>,
    ) -> Result<Vec<T>, ForgeError> {
        let mut items = Vec::new();
        for body in self.get_pages(kind, first.clone(), relaxed).await? {
            let page: Vec<T> = parse_json(&Request::new(kind, Method::Get, first.clone()), &body)?;
            items.extend(page);
        }
        Ok(items)
    }
}

/// Sends one request and reads the whole answer; `Err` is a transport failure.
async fn exchange(
    client: &Octocrab,
    request: &Request,
    etag: Option<&str>,
) -> Result<(u16, HeaderMap, String), String> {
    let path = request.path.as_str();
    let body = request.body.as_ref();
    let response = match request.method {
        Method::Get => {
            let mut headers = HeaderMap::new();
            if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
                headers.insert(IF_NONE_MATCH, etag);
            }
            client._get_with_headers(path, Some(headers)).await
        }
        Method::Post => client._post(path, body).await,
        Method::Patch => client._patch(path, body).await,
        Method::Put => client._put(path, body).await,
        Method::Delete => client._delete(path, body).await,
    }
    .map_err(|e| crate::error_chain(&e))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = client
        .body_to_string(response)
        .await
        .map_err(|e| crate::error_chain(&e))?;
    Ok((status, headers, text))
}

pub(super) fn header_parse<T: std::str::FromStr>(
    headers: &HeaderMap,
    name: impl reqwest::header::AsHeaderName,
) -> Option<T> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The `rel="next"` URL of a `Link` header.
pub(super) fn next_link(link: &str) -> Option<&str> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        is_next.then(|| url.trim().trim_start_matches('<').trim_end_matches('>'))
    })
}

/// Percent-encodes a path segment or query value (everything but RFC 3986 unreserved
/// characters).
pub(super) fn encode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn repo_path(repo: &RepoName) -> String {
    format!("/repos/{}/{}", encode(&repo.owner), encode(&repo.name))
}

/// `owner/repo` of a `/repos/{owner}/{repo}/…` path (still percent-encoded, as
/// GitHub names never need encoding).
fn repo_of_path(path: &str) -> Option<String> {
    let mut parts = path.strip_prefix("/repos/")?.split(['/', '?']);
    let owner = parts.next().filter(|s| !s.is_empty())?;
    let name = parts.next().filter(|s| !s.is_empty())?;
    Some(format!("{owner}/{name}"))
}

fn parse_json<T: DeserializeOwned>(request: &Request, body: &str) -> Result<T, ForgeError> {
    serde_json::from_str(body).map_err(|e| ForgeError::InvalidResponse {
        what: request.what(),
        detail: format!("unexpected JSON: {e}"),
    })
}

fn expect_json<T: DeserializeOwned>(request: &Request, reply: &Reply) -> Result<T, ForgeError> {
    if (200..300).contains(&reply.status) {
        parse_json(request, &reply.body)
    } else {
        Err(status_error(request, reply))
    }
}

/// The error for a final non-2xx answer that the caller does not handle itself.
fn status_error(request: &Request, reply: &Reply) -> ForgeError {
    rest::status_error_of(reply.status, request.what(), error_message(&reply.body))
}

/// GitHub's `message`, plus the `errors` of a validation error (422), shortened.
fn error_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.chars().take(200).collect();
    };
    let mut message = value["message"].as_str().unwrap_or_default().to_owned();
    if let Some(errors) = value.get("errors") {
        let errors: String = errors.to_string().chars().take(300).collect();
        message = format!("{message} {errors}");
    }
    message
}

/// `since` as GitHub wants it: `2026-03-08T09:00:00Z`.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Forge for GitHub {
    /// With App auth, the installation token of the repository's installation.
    async fn git_token(&self, repo: &RepoName) -> Result<Option<String>, ForgeError> {
        self.app_git_token(repo).await
    }

    async fn find_open_pr(
        &self,
        repo: &RepoName,
        head_branch: &str,
        author: &str,
    ) -> Result<Option<PullRequest>, ForgeError> {
        let path = format!(
            "{}/pulls?state=open&head={}&per_page=100",
            repo_path(repo),
            encode(&format!("{}:{head_branch}", repo.owner)),
        );
        let pulls: Vec<wire::Pull> = self.all_items(RequestKind::FindPr, path, None).await?;
        let full_name = repo.to_string();
        Ok(pulls
            .into_iter()
            .filter(|p| {
                p.head.ref_ == head_branch
                    && p.head
                        .repo
                        .as_ref()
                        .is_some_and(|r| r.full_name.eq_ignore_ascii_case(&full_name))
                    && p.user
                        .as_ref()
                        .is_some_and(|u| u.login.eq_ignore_ascii_case(author))
            })
            .min_by_key(|p| p.number)
            .map(wire::Pull::into_pull_request))
    }

    async fn create_pr(
        &self,
        repo: &RepoName,
        pr: &NewPullRequest,
    ) -> Result<PullRequest, ForgeError> {
        let request = Request::new(
            RequestKind::CreatePr,
            Method::Post,
            format!("{}/pulls", repo_path(repo)),
        )
        .body(&wire::CreatePull {
            title: &pr.title,
            body: &pr.body,
            head: &pr.head_branch,
            base: &pr.base_branch,
            draft: pr.draft,
        })?;
        let pull: wire::Pull = self.json(request).await?;
        Ok(pull.into_pull_request())
    }

    async fn update_pr(
        &self,
        repo: &RepoName,
        number: u64,
        edit: &PullRequestEdit,
    ) -> Result<PullRequest, ForgeError> {
        let request = Request::new(
            RequestKind::UpdatePr,
            Method::Patch,
            format!("{}/pulls/{number}", repo_path(repo)),
        )
        .body(&wire::UpdatePull {
            title: edit.title.as_deref(),
            body: edit.body.as_deref(),
        })?;
        let pull: wire::Pull = self.json(request).await?;
        Ok(pull.into_pull_request())
    }

    async fn add_labels(
        &self,
        repo: &RepoName,
        number: u64,
        labels: &[String],
    ) -> Result<Vec<String>, ForgeError> {
        let request = Request::new(
            RequestKind::AddLabels,
            Method::Post,
            format!("{}/issues/{number}/labels", repo_path(repo)),
        )
        .body(&wire::AddLabels { labels })?;
        let labels: Vec<wire::Label> = self.json(request).await?;
        Ok(labels.into_iter().map(|l| l.name).collect())
    }

    async fn remove_label(
        &self,
        repo: &RepoName,
        number: u64,
        label: &str,
    ) -> Result<(), ForgeError> {
        let request = Request::new(
            RequestKind::RemoveLabel,
            Method::Delete,
            format!(
                "{}/issues/{number}/labels/{}",
                repo_path(repo),
                encode(label)
            ),
        );
        let reply = self.send(&request).await?;
        match reply.status {
            200..=299 | 404 => Ok(()),
            _ => Err(status_error(&request, &reply)),
        }
    }

    async fn list_comments(
        &self,
        repo: &RepoName,
        number: u64,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Comment>, ForgeError> {
        self.comments(repo, number, since, false).await
    }

    async fn list_comments_relaxed(
        &self,
        repo: &RepoName,
        number: u64,
    ) -> Result<Vec<Comment>, ForgeError> {
        self.comments(repo, number, None, true).await
    }

    async fn checks(&self, repo: &RepoName, sha: &str) -> Result<Vec<Check>, ForgeError> {
        let status = self.statuses(repo, sha, false).await?;
        let runs = self.runs(repo, sha, false).await?;
        Ok(checks_of(&status.statuses, &runs))
    }

    async fn checks_relaxed(&self, repo: &RepoName, sha: &str) -> Result<Vec<Check>, ForgeError> {
        let status = self.statuses(repo, sha, true).await?;
        let runs = self.runs(repo, sha, true).await?;
        Ok(checks_of(&status.statuses, &runs))
    }

    fn repository(&self, url: &str, explicit: Option<ForgeKind>) -> Result<RepoName, String> {
        let repo = RepoName::locate(url, explicit, None)?;
        match repo.forge {
            ForgeKind::GitHub => Ok(repo),
            ForgeKind::GitLab => Err(format!(
                "{} is a GitLab project: give autobump GitLab access (GITLAB_TOKEN)",
                crate::repo::redact_url(url)
            )),
        }
    }

    fn answers_from_memory(&self) -> bool {
        self.feed.is_some()
    }

    fn delivered_commands(&self, repo: &RepoName, policy: &str) -> Vec<DeliveredComment> {
        self.feed
            .as_ref()
            .map(|f| f.commands(repo, policy))
            .unwrap_or_default()
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
            format!("{}/issues/{number}/comments", repo_path(repo)),
        )
        .body(&wire::CreateComment { body })?;
        let comment: wire::IssueComment = self.json(request).await?;
        Ok(comment.into())
    }

    async fn pr_files(&self, repo: &RepoName, number: u64) -> Result<Vec<ChangedFile>, ForgeError> {
        let path = format!("{}/pulls/{number}/files?per_page=100", repo_path(repo));
        let files: Vec<wire::DiffEntry> =
            self.all_items(RequestKind::ListFiles, path, None).await?;
        Ok(files.into_iter().map(ChangedFile::from).collect())
    }

    async fn mergeability(&self, repo: &RepoName, number: u64) -> Result<Mergeability, ForgeError> {
        let request = Request::new(
            RequestKind::GetPr,
            Method::Get,
            format!("{}/pulls/{number}", repo_path(repo)),
        );
        let pull: wire::Pull = self.json(request).await?;
        Ok(Mergeability {
            head_sha: pull.head.sha,
            mergeable: pull.mergeable,
            state: pull.mergeable_state.unwrap_or(MergeableState::Unknown),
            open: pull.state == "open",
            merged: pull.merged,
        })
    }

    async fn merge(
        &self,
        repo: &RepoName,
        number: u64,
        method: MergeMethod,
        expected_head_sha: &str,
    ) -> Result<Merged, ForgeError> {
        let request = Request::new(
            RequestKind::Merge,
            Method::Put,
            format!("{}/pulls/{number}/merge", repo_path(repo)),
        )
        .body(&wire::MergePull {
            merge_method: method.as_str(),
            sha: expected_head_sha,
        })?;
        let reply = self.send(&request).await?;
        match reply.status {
            200..=299 => {
                let result: wire::MergeResult = parse_json(&request, &reply.body)?;
                if result.merged {
                    Ok(Merged { sha: result.sha })
                } else {
                    Err(ForgeError::NotMergeable {
                        what: request.what(),
                        message: result.message,
                    })
                }
            }
            409 => Err(ForgeError::HeadMoved {
                what: request.what(),
                expected_sha: expected_head_sha.to_owned(),
                message: error_message(&reply.body),
            }),
            405 => Err(ForgeError::NotMergeable {
                what: request.what(),
                message: error_message(&reply.body),
            }),
            _ => Err(status_error(&request, &reply)),
        }
    }

    async fn permission(&self, repo: &RepoName, user: &str) -> Result<Permission, ForgeError> {
        let request = Request::new(
            RequestKind::Permission,
            Method::Get,
            format!(
                "{}/collaborators/{}/permission",
                repo_path(repo),
                encode(user)
            ),
        );
        let reply = self.send(&request).await?;
        if reply.status == 404 {
            return Ok(Permission::None);
        }
        let answer: wire::CollaboratorPermission = expect_json(&request, &reply)?;
        // `role_name` knows triage and maintain; `permission` folds them into read and
        // write. A custom role's name is unknown here: fall back to `permission`.
        let permission = answer
            .role_name
            .as_deref()
            .and_then(Permission::parse)
            .or_else(|| Permission::parse(&answer.permission));
        permission.ok_or_else(|| ForgeError::InvalidResponse {
            what: request.what(),
            detail: format!("unknown permission {:?}", answer.permission),
        })
    }
}

/// GitHub's own kinds of checks (what [`Forge::checks`] is made of).
impl GitHub {
    /// The combined commit status of `sha` (all contexts, all pages).
    ///
    /// # Errors
    /// As every request ([`ForgeError`]).
    pub async fn combined_status(
        &self,
        repo: &RepoName,
        sha: &str,
    ) -> Result<CombinedStatus, ForgeError> {
        self.statuses(repo, sha, false).await
    }

    /// The check runs of `sha` (latest run of each name, as GitHub filters by default).
    ///
    /// # Errors
    /// As every request ([`ForgeError`]).
    pub async fn check_runs(
        &self,
        repo: &RepoName,
        sha: &str,
    ) -> Result<Vec<CheckRun>, ForgeError> {
        self.runs(repo, sha, false).await
    }

    /// [`Self::combined_status`], or the last answer when webhooks prove it unchanged.
    ///
    /// # Errors
    /// As every request ([`ForgeError`]).
    pub async fn combined_status_relaxed(
        &self,
        repo: &RepoName,
        sha: &str,
    ) -> Result<CombinedStatus, ForgeError> {
        self.statuses(repo, sha, true).await
    }

    /// [`Self::check_runs`], or the last answer when webhooks prove them unchanged.
    ///
    /// # Errors
    /// As every request ([`ForgeError`]).
    pub async fn check_runs_relaxed(
        &self,
        repo: &RepoName,
        sha: &str,
    ) -> Result<Vec<CheckRun>, ForgeError> {
        self.runs(repo, sha, true).await
    }
}

/// Commit statuses and check runs as the merge engine's checks.
#[must_use]
pub fn checks_of(statuses: &[CommitStatus], runs: &[CheckRun]) -> Vec<Check> {
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

/// The reads behind [`Forge`]'s strict and relaxed methods.
impl GitHub {
    /// [`Forge::list_comments`]; `relaxed`: possibly from the webhook feed.
    async fn comments(
        &self,
        repo: &RepoName,
        number: u64,
        since: Option<DateTime<Utc>>,
        relaxed: bool,
    ) -> Result<Vec<Comment>, ForgeError> {
        let mut path = format!("{}/issues/{number}/comments?per_page=100", repo_path(repo));
        if let Some(since) = since {
            path.push_str("&since=");
            path.push_str(&encode(&timestamp(since)));
        }
        let relaxed = relaxed
            .then(|| self.relax(Watch::Comments, WebhookFeed::pr_key(repo, number)))
            .flatten();
        let comments: Vec<wire::IssueComment> = self
            .all_items(RequestKind::ListComments, path, relaxed)
            .await?;
        Ok(comments.into_iter().map(Comment::from).collect())
    }

    /// [`Forge::combined_status`]; `relaxed`: possibly from the webhook feed.
    async fn statuses(
        &self,
        repo: &RepoName,
        sha: &str,
        relaxed: bool,
    ) -> Result<CombinedStatus, ForgeError> {
        let relaxed = relaxed
            .then(|| self.relax(Watch::Statuses, WebhookFeed::sha_key(repo, sha)))
            .flatten();
        let path = format!(
            "{}/commits/{}/status?per_page=100",
            repo_path(repo),
            encode(sha)
        );
        let request = Request::new(RequestKind::CombinedStatus, Method::Get, path.clone());
        let mut combined: Option<CombinedStatus> = None;
        for body in self
            .get_pages(RequestKind::CombinedStatus, path, relaxed)
            .await?
        {
            let page: wire::Combined = parse_json(&request, &body)?;
            let statuses = page.statuses.into_iter().map(Into::into);
            match &mut combined {
                Some(c) => c.statuses.extend(statuses),
                None => {
                    combined = Some(CombinedStatus {
                        sha: page.sha,
                        state: page.state,
                        statuses: statuses.collect(),
                    });
                }
            }
        }
        combined.ok_or_else(|| ForgeError::InvalidResponse {
            what: request.what(),
            detail: "no pages".into(),
        })
    }

    /// [`Forge::check_runs`]; `relaxed`: possibly from the webhook feed.
    async fn runs(
        &self,
        repo: &RepoName,
        sha: &str,
        relaxed: bool,
    ) -> Result<Vec<CheckRun>, ForgeError> {
        let relaxed = relaxed
            .then(|| self.relax(Watch::CheckRuns, WebhookFeed::sha_key(repo, sha)))
            .flatten();
        let path = format!(
            "{}/commits/{}/check-runs?per_page=100",
            repo_path(repo),
            encode(sha)
        );
        let request = Request::new(RequestKind::CheckRuns, Method::Get, path.clone());
        let mut runs = Vec::new();
        for body in self
            .get_pages(RequestKind::CheckRuns, path, relaxed)
            .await?
        {
            let page: wire::CheckRuns = parse_json(&request, &body)?;
            runs.extend(page.check_runs.into_iter().map(CheckRun::from));
        }
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_found() {
        let link = r#"<https://api.github.com/repositories/1/pulls?page=2>; rel="next", <https://api.github.com/repositories/1/pulls?page=5>; rel="last""#;
        assert_eq!(
            next_link(link),
            Some("https://api.github.com/repositories/1/pulls?page=2")
        );
        let last = r#"<https://api.github.com/x?page=1>; rel="prev", <https://api.github.com/x?page=1>; rel="first""#;
        assert_eq!(next_link(last), None);
    }

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode("autobump/prow"), "autobump%2Fprow");
        assert_eq!(encode("do-not-merge/hold"), "do-not-merge%2Fhold");
        assert_eq!(encode("a b&c"), "a%20b%26c");
        assert_eq!(encode("ok-1.2_~"), "ok-1.2_~");
    }

    #[test]
    fn error_messages_include_validation_errors() {
        let body = r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"A pull request already exists"}]}"#;
        let message = error_message(body);
        assert!(message.starts_with("Validation Failed "), "{message}");
        assert!(message.contains("already exists"), "{message}");
        assert_eq!(error_message("not json"), "not json");
    }

    #[test]
    fn etag_cache_is_bounded() {
        let mut cache = EtagCache::new(2);
        let entry = |tag: &str| CachedGet {
            etag: tag.into(),
            status: 200,
            body: String::new(),
            link: None,
            generation: 0,
            confirmed_at: DateTime::UNIX_EPOCH,
        };
        cache.put("/a".into(), entry("1"));
        cache.put("/b".into(), entry("2"));
        cache.put("/a".into(), entry("3"));
        cache.put("/c".into(), entry("4"));
        assert!(cache.get("/a").is_none());
        assert_eq!(cache.get("/b").map(|c| c.etag.as_str()), Some("2"));
        assert_eq!(cache.get("/c").map(|c| c.etag.as_str()), Some("4"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let token = format!("{:?}", GitHubAuth::Token("ghp_secret".into()));
        assert!(!token.contains("secret"), "{token}");
        let app = format!(
            "{:?}",
            GitHubAuth::App {
                app_id: 1,
                private_key_pem: "-----BEGIN secret".into(),
                installation_id: Some(2)
            }
        );
        assert!(!app.contains("secret"), "{app}");
    }
}
