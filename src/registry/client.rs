//! The HTTP implementation of [`Registry`] (does I/O: network, and reads CA bundles).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use tracing::{debug, warn};
use url::Url;

use super::config::{BasicAuth, Login, LoginSource, RegistryConfig, Scheme, normalise_registry};
use super::error::RegistryError;
use super::helper;
use super::stats::{RegistryStats, RequestKind};
use super::wire::{backoff_delay, parse_link_next, parse_retry_after, parse_www_authenticate};
use super::{Registry, install_crypto_provider};
use crate::clock::{Clock, Deadline, Stopwatch};
use crate::core::reference::{ImageRef, api_host};

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// What manifest requests accept: indexes first, so a multi-arch tag's digest is the
/// index's (what `docker pull` resolves), then single manifests.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Size limits on what is read into memory.
const TAGS_PAGE_LIMIT: usize = 16 << 20;
const MANIFEST_LIMIT: usize = 4 << 20;
const BLOB_LIMIT: usize = 8 << 20;
const TOKEN_LIMIT: usize = 1 << 20;
/// Token lifetime when the token endpoint does not say (the token spec's default).
const DEFAULT_TOKEN_LIFETIME: i64 = 60;

/// A registry client for every registry: settings per registry host (or the defaults),
/// one HTTP connection pool, rate limiter, concurrency cap and token cache per host.
///
/// Cloning is cheap and clones share hosts, caches and [`RegistryStats`]. Configure
/// registries ([`RegistryClient::with_registry`]) before the first request.
///
/// Requests made per call, once a bearer token is cached:
/// [`tags`](Registry::tags) one per page; [`digest`](Registry::digest) one `HEAD`
/// (plus one `GET` only if the registry sends no `Docker-Content-Digest`);
/// [`created`](Registry::created) manifest `GET`, for an index a second manifest
/// `GET`, then the config blob. The first request to a registry that wants auth draws
/// one 401 (and, for bearer auth, a token request); after that the client sends the
/// right `Authorization` up front.
#[derive(Clone)]
pub struct RegistryClient {
    defaults: RegistryConfig,
    overrides: HashMap<String, RegistryConfig>,
    hosts: Arc<Mutex<HashMap<String, Arc<Host>>>>,
    clock: Arc<dyn Clock>,
    stats: Arc<RegistryStats>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("defaults", &self.defaults)
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

/// One registry's connection state.
struct Host {
    /// As in references, normalised (`docker.io`, `127.0.0.1:5000`).
    name: String,
    /// `scheme://api-host/`
    base: Url,
    config: RegistryConfig,
    /// Where the login comes from (see [`Credentials::source`](super::Credentials::source)).
    source: LoginSource,
    http: reqwest::Client,
    limiter: Option<RateLimiter>,
    permits: Semaphore,
    auth: tokio::sync::Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    mode: AuthMode,
    /// Bearer tokens by scope.
    tokens: HashMap<String, CachedToken>,
    /// The credential helper's answer, kept until the registry refuses it.
    helper_login: HelperLogin,
}

/// What the credential helper said, as far as it is still good.
#[derive(Default)]
enum HelperLogin {
    /// Not asked yet, or its answer was refused since.
    #[default]
    Ask,
    /// Its answer (`None`: it has nothing for this registry).
    Answered(Option<Login>),
}

#[derive(Default, Clone)]
enum AuthMode {
    /// Not challenged yet: requests go out without `Authorization`.
    #[default]
    Unknown,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct CachedToken {
    value: String,
    valid_until: DateTime<Utc>,
}

/// One call's context: names for error messages, and its deadline and request count
/// (bounded by [`RegistryConfig::call_timeout`]).
struct Ctx {
    registry: String,
    image: String,
    deadline: Deadline,
    call_timeout: Duration,
    requests: AtomicU32,
}

impl Ctx {
    /// The call's deadline has passed (or will before `wait` is over): an error that
    /// says what the call was doing.
    fn deadline(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::Deadline {
            registry: self.registry.clone(),
            image: self.image.clone(),
            deadline: self.call_timeout,
            requests: self.requests.load(Ordering::SeqCst),
            detail: detail.into(),
        }
    }

    /// Runs one whole call within the deadline. The request loop checks the deadline
    /// itself and says more; this is the backstop for every other await (a token
    /// endpoint, a lock held by a stalled request).
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        // A little slack, so that the request loop's own (more precise) error wins.
        let limit = self.deadline.remaining() + Duration::from_millis(250);
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(self.deadline("still waiting for the registry")),
        }
    }

    fn invalid(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::InvalidResponse {
            registry: self.registry.clone(),
            image: self.image.clone(),
            detail: detail.into(),
        }
    }

    fn unauthorized(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            image: self.image.clone(),
            detail: detail.into(),
        }
    }

    /// A final non-success status as an error.
    fn status_error(&self, what: &str, fetched: &Fetched) -> RegistryError {
        let registry = self.registry.clone();
        let image = self.image.clone();
        match fetched.status.as_u16() {
            404 => RegistryError::NotFound {
                registry,
                image,
                what: what.to_owned(),
            },
            401 | 403 => RegistryError::Unauthorized {
                registry,
                image,
                detail: format!("{what}: {} {}", fetched.status, fetched.body_snippet()),
            },
            status => RegistryError::Rejected {
                registry,
                image,
                status,
                detail: format!("{what}: {}", fetched.body_snippet()),
            },
        }
    }
}

/// A complete response.
struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn body_snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let trimmed = text.trim();
        match trimmed.char_indices().nth(200) {
            Some((i, _)) => format!("{}…", &trimmed[..i]),
            None => trimmed.to_owned(),
        }
    }
}

/// A token endpoint's answer (Docker token spec; OAuth 2.0 servers say `access_token`).
#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<i64>,
}

/// One page of `GET /v2/<name>/tags/list` (`tags` is `null` for an empty repository
/// on some registries).
#[derive(Deserialize)]
struct TagList {
    tags: Option<Vec<String>>,
}

/// Why one attempt produced no response.
enum Failure {
    /// No complete response in time; how far it got.
    Timeout(String),
    Connection(String),
    TooLarge(usize),
}

/// One request, as sent on every attempt.
struct Req<'a> {
    kind: RequestKind,
    method: Method,
    url: Url,
    accept: Option<&'a str>,
    authorization: Option<String>,
    /// An `application/x-www-form-urlencoded` body (the refresh-token grant).
    form: Option<String>,
    limit: usize,
}

impl RegistryClient {
    /// A client using `defaults` for every registry, and `clock` for token expiry and
    /// `Retry-After` dates. Fails if the defaults name an unreadable CA bundle.
    pub fn new(defaults: RegistryConfig, clock: Arc<dyn Clock>) -> Result<Self, RegistryError> {
        install_crypto_provider();
        load_ca_bundle("(defaults)", &defaults)?;
        Ok(Self {
            defaults,
            overrides: HashMap::new(),
            hosts: Arc::default(),
            clock,
            stats: Arc::default(),
        })
    }

    /// Uses `config` instead of the defaults for `registry` (a host as written in
    /// image references: `ghcr.io`, `localhost:5000`, `docker.io`).
    pub fn with_registry(
        mut self,
        registry: &str,
        config: RegistryConfig,
    ) -> Result<Self, RegistryError> {
        let name = normalise_registry(registry);
        load_ca_bundle(&name, &config)?;
        lock(&self.hosts).remove(&name);
        self.overrides.insert(name, config);
        Ok(self)
    }

    /// Counts into `stats` (e.g. one shared by several clients) instead of its own.
    #[must_use]
    pub fn with_stats(mut self, stats: Arc<RegistryStats>) -> Self {
        self.stats = stats;
        self
    }

    /// The request counters.
    #[must_use]
    pub fn stats(&self) -> Arc<RegistryStats> {
        Arc::clone(&self.stats)
    }

    fn host(
        &self,
        image: &ImageRef,
        call_timeout: Duration,
    ) -> Result<(Arc<Host>, Ctx), RegistryError> {
        let name = normalise_registry(image.registry());
        let ctx = Ctx {
            registry: name.clone(),
            image: image.canonical_repository(),
            deadline: Deadline::after(call_timeout),
            call_timeout,
            requests: AtomicU32::new(0),
        };
        let mut hosts = lock(&self.hosts);
        if let Some(host) = hosts.get(&name) {
            return Ok((Arc::clone(host), ctx));
        }
        let config = self.overrides.get(&name).unwrap_or(&self.defaults).clone();
        let host = Arc::new(Host::new(&name, config)?);
        hosts.insert(name, Arc::clone(&host));
        Ok((host, ctx))
    }

    /// The host and a fresh [`Ctx`] whose deadline starts now.
    fn start_call(&self, image: &ImageRef) -> Result<(Arc<Host>, Ctx), RegistryError> {
        let name = normalise_registry(image.registry());
        let call_timeout = self
            .overrides
            .get(&name)
            .unwrap_or(&self.defaults)
            .call_timeout;
        let (host, ctx) = self.host(image, call_timeout)?;
        Ok((host, ctx))
    }

    /// Sends `req` with retries: 429/503 wait as `Retry-After` says (capped), other 5xx,
    /// timeouts and connection failures back off exponentially with jitter. Returns
    /// any other response (2xx, 3xx, 4xx) as it is.
    async fn execute(
        &self,
        host: &Host,
        ctx: &Ctx,
        req: &Req<'_>,
    ) -> Result<Fetched, RegistryError> {
        let policy = &host.config.retry;
        let max_attempts = policy.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if ctx.deadline.expired() {
                return Err(ctx.deadline(format!("before {} attempt {attempt}", req.kind.as_str())));
            }
            let outcome = self.attempt(host, ctx, req).await;
            let retryable = match &outcome {
                Ok(f) => f.status.is_server_error() || f.status == StatusCode::TOO_MANY_REQUESTS,
                Err(Failure::TooLarge(_)) => false,
                Err(Failure::Timeout(_) | Failure::Connection(_)) => true,
            };
            if !retryable {
                return outcome.map_err(|failure| {
                    ctx.invalid(format!("{}: {}", req.kind.as_str(), failure.describe()))
                });
            }
            let backoff = || {
                backoff_delay(
                    policy.base_backoff,
                    policy.max_backoff,
                    attempt,
                    fastrand::f64(),
                )
            };
            let (wait, reason) = match &outcome {
                Ok(f) => {
                    let told = if f.status == StatusCode::TOO_MANY_REQUESTS
                        || f.status == StatusCode::SERVICE_UNAVAILABLE
                    {
                        f.header(header::RETRY_AFTER)
                            .and_then(|v| parse_retry_after(v, self.clock.now()))
                    } else {
                        None
                    };
                    if f.status == StatusCode::TOO_MANY_REQUESTS {
                        self.stats.count_rate_limited();
                    }
                    let wait = told.map_or_else(backoff, |d| d.min(policy.max_retry_after));
                    let reason = match f.header(header::RETRY_AFTER) {
                        Some(after) => format!("{} with Retry-After: {after}", f.status),
                        None => f.status.to_string(),
                    };
                    (wait, reason)
                }
                Err(failure) => (backoff(), failure.describe()),
            };
            if attempt >= max_attempts {
                return Err(final_error(ctx, outcome, attempt));
            }
            // A wait that would end past the call's deadline is not started (e.g. a
            // 429 with `Retry-After: 3600`, cut to `max_retry_after`, when less than
            // that is left): say so now rather than after the wait.
            if wait >= ctx.deadline.remaining() {
                return Err(ctx.deadline(format!(
                    "{} attempt {attempt}: {reason}; waiting {} would pass the deadline",
                    req.kind.as_str(),
                    human_duration(wait)
                )));
            }
            warn!(
                registry = %host.name,
                image = %ctx.image,
                kind = req.kind.as_str(),
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                %reason,
                "registry request failed; backing off"
            );
            self.stats.count_retry(wait);
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: rate limit, concurrency permit, send, read the whole body, all
    /// within the request timeout (or what is left of the call's deadline, if less).
    async fn attempt(&self, host: &Host, ctx: &Ctx, req: &Req<'_>) -> Result<Fetched, Failure> {
        if let Some(limiter) = &host.limiter {
            let wait = limiter.reserve();
            if !wait.is_zero() {
                self.stats.count_throttled();
                tokio::time::sleep(wait).await;
            }
        }
        // The semaphore is never closed.
        let _permit = host.permits.acquire().await.ok();
        self.stats.count_request(req.kind);
        ctx.requests.fetch_add(1, Ordering::SeqCst);
        let timeout = host.config.request_timeout.min(ctx.deadline.remaining());
        let watch = Stopwatch::start();
        let mut builder = host.http.request(req.method.clone(), req.url.clone());
        if let Some(accept) = req.accept {
            builder = builder.header(header::ACCEPT, accept);
        }
        if let Some(authorization) = &req.authorization {
            builder = builder.header(header::AUTHORIZATION, authorization);
        }
        if let Some(form) = &req.form {
            builder = builder
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.clone());
        }
        let limit = req.limit;
        // How far the exchange got, for the error when it runs out of time.
        let (headers_in, body_read) = (AtomicBool::new(false), AtomicUsize::new(0));
        let (headers_flag, body_count) = (&headers_in, &body_read);
        let exchange = async move {
            let mut response = builder.send().await.map_err(|e| transport_failure(&e))?;
            headers_flag.store(true, Ordering::SeqCst);
            let status = response.status();
            let headers = response.headers().clone();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| transport_failure(&e))? {
                if body.len() + chunk.len() > limit {
                    return Err(Failure::TooLarge(limit));
                }
                body.extend_from_slice(&chunk);
                body_count.store(body.len(), Ordering::SeqCst);
            }
            Ok(Fetched {
                status,
                headers,
                body,
            })
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(Err(Failure::Timeout(_))) | Err(_) => {
                Err(Failure::Timeout(if headers_in.load(Ordering::SeqCst) {
                    format!(
                        "body still arriving after {} ({} bytes read)",
                        human_duration(timeout),
                        body_read.load(Ordering::SeqCst)
                    )
                } else {
                    format!("no response headers within {}", human_duration(timeout))
                }))
            }
            Ok(result) => result,
        };
        let elapsed_ms = u64::try_from(watch.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(f) => debug!(
                registry = %host.name,
                kind = req.kind.as_str(),
                method = %req.method,
                url = %req.url,
                status = f.status.as_u16(),
                elapsed_ms,
                "registry request"
            ),
            Err(failure) => debug!(
                registry = %host.name,
                kind = req.kind.as_str(),
                method = %req.method,
                url = %req.url,
                failure = failure.describe(),
                elapsed_ms,
                "registry request failed"
            ),
        }
        result
    }

    /// A request to the registry API with authentication: sends what worked before
    /// (nothing, basic, or a cached bearer token for `scope`); on a 401 follows the
    /// challenge (basic with the configured login, or a fresh token) and tries once
    /// more.
    async fn request(
        &self,
        host: &Host,
        ctx: &Ctx,
        mut req: Req<'_>,
        scope: &str,
    ) -> Result<Fetched, RegistryError> {
        let mut challenged = false;
        loop {
            req.authorization = self.authorization(host, ctx, scope).await?;
            let fetched = self.execute(host, ctx, &req).await?;
            if fetched.status != StatusCode::UNAUTHORIZED {
                return Ok(fetched);
            }
            if challenged {
                return Err(ctx.unauthorized(format!(
                    "{} still answered 401 after logging in{}: {}",
                    req.kind.as_str(),
                    login_origin(&host.source),
                    fetched.body_snippet()
                )));
            }
            challenged = true;
            self.follow_challenge(host, ctx, scope, req.authorization.as_deref(), &fetched)
                .await?;
        }
    }

    /// The `Authorization` header to send up front, if the registry asked for one
    /// before. Fetches a bearer token when none is cached for `scope`.
    async fn authorization(
        &self,
        host: &Host,
        ctx: &Ctx,
        scope: &str,
    ) -> Result<Option<String>, RegistryError> {
        let mut state = host.auth.lock().await;
        match state.mode.clone() {
            AuthMode::Unknown => Ok(None),
            AuthMode::Basic => match self.login(host, ctx, &mut state).await?.0 {
                Some(Login::Basic(login)) => Ok(Some(basic_header(&login))),
                Some(Login::IdentityToken(_)) => Err(ctx.unauthorized(
                    "the registry asks for basic auth, and an identity token works only \
                     with a token service (bearer auth)",
                )),
                None => Ok(None),
            },
            AuthMode::Bearer { realm, service } => {
                let now = self.clock.now();
                if let Some(token) = state.tokens.get(scope).filter(|t| t.valid_until > now) {
                    return Ok(Some(format!("Bearer {}", token.value)));
                }
                let token = self
                    .token(host, ctx, &mut state, &realm, service.as_deref(), scope)
                    .await?;
                let header = format!("Bearer {}", token.value);
                state.tokens.insert(scope.to_owned(), token);
                Ok(Some(header))
            }
        }
    }

    /// Learns from a 401: switches to bearer (fetching a fresh token for `scope`,
    /// unless a concurrent request already replaced the one `sent`) or to basic auth.
    async fn follow_challenge(
        &self,
        host: &Host,
        ctx: &Ctx,
        scope: &str,
        sent: Option<&str>,
        fetched: &Fetched,
    ) -> Result<(), RegistryError> {
        let challenges: Vec<_> = fetched
            .headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_www_authenticate)
            .collect();
        let bearer = challenges
            .iter()
            .find(|c| c.scheme == "bearer" && c.param("realm").is_some());
        let mut state = host.auth.lock().await;
        if let Some(challenge) = bearer {
            let realm = challenge.param("realm").unwrap_or_default().to_owned();
            let service = challenge.param("service").map(str::to_owned);
            let wanted = challenge.param("scope").unwrap_or(scope);
            let now = self.clock.now();
            let replaced = state.tokens.get(scope).is_some_and(|t| {
                t.valid_until > now && sent != Some(format!("Bearer {}", t.value).as_str())
            });
            if replaced {
                // Another request drew the same challenge and fetched a token meanwhile.
                state.mode = AuthMode::Bearer { realm, service };
                return Ok(());
            }
            let token = self
                .token(host, ctx, &mut state, &realm, service.as_deref(), wanted)
                .await?;
            state.tokens.insert(scope.to_owned(), token);
            state.mode = AuthMode::Bearer { realm, service };
            return Ok(());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            if matches!(state.mode, AuthMode::Basic) && sent.is_some() {
                // The login was refused: a helper is asked again (once: `request`
                // gives up after the next 401).
                state.helper_login = HelperLogin::Ask;
            }
            if self.login(host, ctx, &mut state).await?.0.is_none() {
                let why = match &host.source {
                    LoginSource::Helper { helper, .. } => {
                        format!("docker-credential-{helper} has no credentials for it")
                    }
                    _ => format!("no credentials are configured for {}", host.name),
                };
                return Err(ctx.unauthorized(format!("the registry requires basic auth and {why}")));
            }
            state.mode = AuthMode::Basic;
            return Ok(());
        }
        Err(ctx.unauthorized(format!(
            "401 without a usable Basic or Bearer challenge: {:?}",
            fetched.header(header::WWW_AUTHENTICATE).unwrap_or("(none)")
        )))
    }

    /// The login to use: a known one, or the helper's answer (the helper is run
    /// when it has not been asked yet, or its answer was refused since). The flag
    /// says whether the helper was just run.
    async fn login(
        &self,
        host: &Host,
        ctx: &Ctx,
        state: &mut AuthState,
    ) -> Result<(Option<Login>, bool), RegistryError> {
        let (helper, server_url) = match &host.source {
            LoginSource::Anonymous => return Ok((None, false)),
            LoginSource::Known(login) => return Ok((Some(login.clone()), false)),
            LoginSource::Helper { helper, server_url } => (helper, server_url),
        };
        if let HelperLogin::Answered(answer) = &state.helper_login {
            return Ok((answer.clone(), false));
        }
        self.stats.count_helper_call();
        let timeout = host.config.helper_timeout.min(ctx.deadline.remaining());
        let answer = helper::get(
            helper,
            server_url,
            host.config.helper_path.as_ref(),
            timeout,
        )
        .await
        .map_err(|failure| RegistryError::CredentialHelper {
            registry: ctx.registry.clone(),
            image: ctx.image.clone(),
            helper: helper.clone(),
            detail: failure.detail,
            retryable: failure.retryable,
        })?;
        let login = match answer {
            helper::Answer::Found(login) => Some(login),
            helper::Answer::NotFound => {
                debug!(registry = %host.name, helper = %helper,
                    "the credential helper has no credentials for this registry");
                None
            }
        };
        state.helper_login = HelperLogin::Answered(login.clone());
        Ok((login, true))
    }

    /// A bearer token for `scope` with the login; when the token service refuses a
    /// login a helper gave earlier, the helper is asked again and the token fetched
    /// once more.
    async fn token(
        &self,
        host: &Host,
        ctx: &Ctx,
        state: &mut AuthState,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<CachedToken, RegistryError> {
        let (login, fresh) = self.login(host, ctx, state).await?;
        let first = self
            .fetch_token(host, ctx, realm, service, scope, login.as_ref())
            .await;
        let refused = matches!(first, Err(RegistryError::Unauthorized { .. }));
        if !refused || fresh || !matches!(host.source, LoginSource::Helper { .. }) {
            return first;
        }
        debug!(registry = %host.name, "the token service refused the helper's login; asking the helper again");
        state.helper_login = HelperLogin::Ask;
        let (login, _) = self.login(host, ctx, state).await?;
        self.fetch_token(host, ctx, realm, service, scope, login.as_ref())
            .await
    }

    /// `GET realm?service=..&scope=..` (with the login as basic auth, if any), or
    /// with an identity token the OAuth 2.0 refresh-token grant: `POST realm` with
    /// `grant_type=refresh_token` (distribution's token spec, "OAuth 2.0 token").
    async fn fetch_token(
        &self,
        host: &Host,
        ctx: &Ctx,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        login: Option<&Login>,
    ) -> Result<CachedToken, RegistryError> {
        let mut url = Url::parse(realm)
            .map_err(|e| ctx.invalid(format!("bearer realm {realm:?} is not a URL: {e}")))?;
        let service = service.filter(|s| !s.is_empty());
        let (method, authorization, form) = if let Some(Login::IdentityToken(token)) = login {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("client_id", "autobump")
                .append_pair("refresh_token", token);
            if let Some(service) = service {
                form.append_pair("service", service);
            }
            let scopes: Vec<&str> = scope.split_ascii_whitespace().collect();
            if !scopes.is_empty() {
                form.append_pair("scope", &scopes.join(" "));
            }
            (Method::POST, None, Some(form.finish()))
        } else {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            for scope in scope.split_ascii_whitespace() {
                query.append_pair("scope", scope);
            }
            drop(query);
            let authorization = match login {
                Some(Login::Basic(login)) => Some(basic_header(login)),
                _ => None,
            };
            (Method::GET, authorization, None)
        };
        let req = Req {
            kind: RequestKind::Token,
            method,
            url,
            accept: Some("application/json"),
            authorization,
            form,
            limit: TOKEN_LIMIT,
        };
        let fetched = self.execute(host, ctx, &req).await?;
        // RFC 6749 §5.2: a refused refresh token is a 400 `invalid_grant`.
        let bad_grant = req.form.is_some()
            && fetched.status == StatusCode::BAD_REQUEST
            && String::from_utf8_lossy(&fetched.body).contains("invalid_grant");
        if matches!(fetched.status.as_u16(), 401 | 403) || bad_grant {
            let mut who = match login {
                Some(login) => login.describe(),
                None => "anonymously (no credentials configured)".to_owned(),
            };
            if let LoginSource::Helper { helper, .. } = &host.source {
                write!(who, " (from docker-credential-{helper})").ok();
            }
            return Err(ctx.unauthorized(format!(
                "token endpoint {realm} refused a token {who}: {} {}",
                fetched.status,
                fetched.body_snippet()
            )));
        }
        if !fetched.status.is_success() {
            return Err(ctx.status_error("token", &fetched));
        }
        let parsed: TokenResponse = serde_json::from_slice(&fetched.body)
            .map_err(|e| ctx.invalid(format!("token response is not JSON: {e}")))?;
        let value = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ctx.invalid("token response has neither `token` nor `access_token`"))?;
        let lifetime = parsed
            .expires_in
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let valid_until =
            self.clock.now() + chrono::Duration::seconds(lifetime - token_margin(lifetime));
        Ok(CachedToken { value, valid_until })
    }

    /// `GET` a manifest (by tag or digest) with every accepted media type; returns the
    /// body and its media type.
    async fn get_manifest(
        &self,
        host: &Host,
        ctx: &Ctx,
        path: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        let url = api_url(host, ctx, &format!("v2/{path}/manifests/{reference}"))?;
        let fetched = self
            .request(
                host,
                ctx,
                Req {
                    kind: RequestKind::ManifestGet,
                    method: Method::GET,
                    url,
                    accept: Some(MANIFEST_ACCEPT),
                    authorization: None,
                    form: None,
                    limit: MANIFEST_LIMIT,
                },
                &pull_scope(path),
            )
            .await?;
        if !fetched.status.is_success() {
            return Err(ctx.status_error(&format!("manifest {reference}"), &fetched));
        }
        let media_type = fetched
            .header(header::CONTENT_TYPE)
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());
        Ok((fetched.body, media_type))
    }
}

impl Host {
    fn new(name: &str, config: RegistryConfig) -> Result<Self, RegistryError> {
        let scheme = config.scheme.unwrap_or_else(|| Scheme::default_for(name));
        let base =
            Url::parse(&format!("{}://{}/", scheme.as_str(), api_host(name))).map_err(|e| {
                RegistryError::Config {
                    registry: name.to_owned(),
                    detail: format!("not a usable host: {e}"),
                }
            })?;
        let roots = load_ca_bundle(name, &config)?;
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("autobump/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.max_concurrency)
            .tls_certs_merge(roots);
        if Scheme::default_for(name) == Scheme::Http {
            // A loopback registry is never reached through a proxy.
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| RegistryError::Config {
            registry: name.to_owned(),
            detail: format!("building the HTTP client: {}", crate::error_chain(&e)),
        })?;
        let source = config.credentials.source(name);
        Ok(Self {
            name: name.to_owned(),
            base,
            limiter: config
                .rate_limit
                .and_then(|rate| RateLimiter::new(rate, config.burst)),
            permits: Semaphore::new(config.max_concurrency.max(1)),
            source,
            http,
            config,
            auth: tokio::sync::Mutex::default(),
        })
    }
}

impl Registry for RegistryClient {
    /// The same settings with `credentials` merged over every registry's (they win for
    /// the hosts they name); its own connections and token caches, the same counters.
    fn with_credentials(&self, credentials: &super::Credentials) -> Option<Self> {
        let merge = |config: &RegistryConfig| {
            let mut config = config.clone();
            config.credentials = config.credentials.clone().merge(credentials.clone());
            config
        };
        Some(Self {
            defaults: merge(&self.defaults),
            overrides: self
                .overrides
                .iter()
                .map(|(host, config)| (host.clone(), merge(config)))
                .collect(),
            hosts: Arc::default(),
            clock: Arc::clone(&self.clock),
            stats: Arc::clone(&self.stats),
        })
    }

    /// See [`RegistryClient::list_tags`]; within the call deadline.
    async fn tags(&self, image: &ImageRef) -> Result<Vec<String>, RegistryError> {
        let (host, ctx) = self.start_call(image)?;
        ctx.bounded(self.list_tags(&host, &ctx, image)).await
    }

    /// See [`RegistryClient::manifest_digest`]; within the call deadline.
    async fn digest(&self, image: &ImageRef, tag: &str) -> Result<String, RegistryError> {
        let (host, ctx) = self.start_call(image)?;
        ctx.bounded(self.manifest_digest(&host, &ctx, image, tag))
            .await
    }

    /// See [`RegistryClient::build_time`]; within the call deadline.
    async fn created(
        &self,
        image: &ImageRef,
        tag: &str,
    ) -> Result<Option<DateTime<Utc>>, RegistryError> {
        let (host, ctx) = self.start_call(image)?;
        ctx.bounded(self.build_time(&host, &ctx, image, tag)).await
    }
}

impl RegistryClient {
    /// Reads every page (following `Link: <…>; rel="next"`, relative or absolute, on
    /// the same host only) and returns the tags in the registry's order without
    /// duplicates. More than `max_tags` tags is an error
    /// ([`RegistryError::TooManyTags`]), never a silently truncated list.
    ///
    /// Bounded in requests: at most `max_pages` pages
    /// ([`RegistryError::TooManyPages`]), and a page that brings no tag not seen
    /// before ends the listing with an error (a registry that repeats a page under
    /// ever new `last=` links would otherwise be read forever).
    async fn list_tags(
        &self,
        host: &Host,
        ctx: &Ctx,
        image: &ImageRef,
    ) -> Result<Vec<String>, RegistryError> {
        let path = image.path();
        let scope = pull_scope(&path);
        let mut url = api_url(host, ctx, &format!("v2/{path}/tags/list"))?;
        url.query_pairs_mut()
            .append_pair("n", &host.config.page_size.to_string());
        let mut tags = Vec::new();
        let mut seen = HashSet::new();
        let mut visited = HashSet::from([url.to_string()]);
        let mut pages = 0usize;
        loop {
            pages += 1;
            let fetched = self
                .request(
                    host,
                    ctx,
                    Req {
                        kind: RequestKind::Tags,
                        method: Method::GET,
                        url: url.clone(),
                        accept: Some("application/json"),
                        authorization: None,
                        form: None,
                        limit: TAGS_PAGE_LIMIT,
                    },
                    &scope,
                )
                .await?;
            if !fetched.status.is_success() {
                return Err(ctx.status_error("tags", &fetched));
            }
            let page: TagList = serde_json::from_slice(&fetched.body)
                .map_err(|e| ctx.invalid(format!("tag list is not JSON: {e}")))?;
            let page = page.tags.unwrap_or_default();
            let page_len = page.len();
            let before = tags.len();
            for tag in page {
                if seen.insert(tag.clone()) {
                    tags.push(tag);
                }
            }
            if tags.len() > host.config.max_tags {
                return Err(RegistryError::TooManyTags {
                    registry: ctx.registry.clone(),
                    image: ctx.image.clone(),
                    limit: host.config.max_tags,
                });
            }
            let added = tags.len() - before;
            let Some(next) = fetched.header(header::LINK).and_then(parse_link_next) else {
                break;
            };
            let next = url
                .join(&next)
                .map_err(|e| ctx.invalid(format!("Link {next:?}: {e}")))?;
            if next.origin() != host.base.origin() {
                return Err(ctx.invalid(format!("Link to another host: {next}")));
            }
            if added == 0 || !visited.insert(next.to_string()) {
                return Err(ctx.invalid(format!(
                    "tag pagination does not advance: page {pages} brought {page_len} tags, \
                     none new ({} distinct tags in {pages} pages), and links on to {next}",
                    tags.len()
                )));
            }
            if pages >= host.config.max_pages {
                return Err(RegistryError::TooManyPages {
                    registry: ctx.registry.clone(),
                    image: ctx.image.clone(),
                    limit: host.config.max_pages,
                    tags: tags.len(),
                });
            }
            url = next;
        }
        debug!(registry = %ctx.registry, image = %ctx.image, tags = tags.len(), "listed tags");
        Ok(tags)
    }

    /// `HEAD` with the index and manifest media types; the `Docker-Content-Digest`
    /// header, or (if the registry sends none) the sha256 of a `GET`'s body.
    async fn manifest_digest(
        &self,
        host: &Host,
        ctx: &Ctx,
        image: &ImageRef,
        tag: &str,
    ) -> Result<String, RegistryError> {
        check_tag(ctx, tag)?;
        let path = image.path();
        let url = api_url(host, ctx, &format!("v2/{path}/manifests/{tag}"))?;
        let fetched = self
            .request(
                host,
                ctx,
                Req {
                    kind: RequestKind::ManifestHead,
                    method: Method::HEAD,
                    url,
                    accept: Some(MANIFEST_ACCEPT),
                    authorization: None,
                    form: None,
                    limit: MANIFEST_LIMIT,
                },
                &pull_scope(&path),
            )
            .await?;
        if !fetched.status.is_success() {
            return Err(ctx.status_error(&format!("manifest {tag}"), &fetched));
        }
        if let Some(digest) = fetched
            .header(header::HeaderName::from_static("docker-content-digest"))
            .filter(|d| is_digest(d))
        {
            return Ok(digest.to_owned());
        }
        let (body, _) = self.get_manifest(host, ctx, &path, tag).await?;
        Ok(sha256_digest(&body))
    }

    /// The config blob's `created`; for an index, of its linux/amd64 image (else its
    /// first). `None` when the image has no config or the config no (parseable) time.
    async fn build_time(
        &self,
        host: &Host,
        ctx: &Ctx,
        image: &ImageRef,
        tag: &str,
    ) -> Result<Option<DateTime<Utc>>, RegistryError> {
        check_tag(ctx, tag)?;
        let path = image.path();
        let (body, media_type) = self.get_manifest(host, ctx, &path, tag).await?;
        let mut manifest: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ctx.invalid(format!("manifest {tag} is not JSON: {e}")))?;
        if is_index(&manifest, media_type.as_deref()) {
            let digest = pick_platform(&manifest)
                .ok_or_else(|| ctx.invalid(format!("index {tag} lists no manifests")))?;
            if !is_digest(&digest) {
                return Err(ctx.invalid(format!("index {tag} names a bad digest {digest:?}")));
            }
            let (body, _) = self.get_manifest(host, ctx, &path, &digest).await?;
            verify_digest(ctx, &digest, &body)?;
            manifest = serde_json::from_slice(&body)
                .map_err(|e| ctx.invalid(format!("manifest {digest} is not JSON: {e}")))?;
        }
        let Some(config) = manifest
            .pointer("/config/digest")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
        else {
            return Ok(None);
        };
        if !is_digest(&config) {
            return Err(ctx.invalid(format!("config digest {config:?} is malformed")));
        }
        let url = api_url(host, ctx, &format!("v2/{path}/blobs/{config}"))?;
        let fetched = self
            .request(
                host,
                ctx,
                Req {
                    kind: RequestKind::Blob,
                    method: Method::GET,
                    url,
                    accept: None,
                    authorization: None,
                    form: None,
                    limit: BLOB_LIMIT,
                },
                &pull_scope(&path),
            )
            .await?;
        if !fetched.status.is_success() {
            return Err(ctx.status_error(&format!("blob {config}"), &fetched));
        }
        verify_digest(ctx, &config, &fetched.body)?;
        let blob: serde_json::Value = serde_json::from_slice(&fetched.body)
            .map_err(|e| ctx.invalid(format!("config {config} is not JSON: {e}")))?;
        let Some(created) = blob.get("created").and_then(serde_json::Value::as_str) else {
            return Ok(None);
        };
        match DateTime::parse_from_rfc3339(created) {
            Ok(at) => Ok(Some(at.with_timezone(&Utc))),
            Err(e) => {
                warn!(registry = %ctx.registry, image = %ctx.image, tag, created, error = %e,
                    "config has an unparseable `created`; treating it as absent");
                Ok(None)
            }
        }
    }
}

/// A token-bucket rate limiter (GCRA) that reserves a slot per request and says how
/// long to wait for it. It measures time with a [`Stopwatch`]; the waits themselves
/// are `tokio::time::sleep`s by the caller.
struct RateLimiter {
    interval: Duration,
    burst: u32,
    watch: Stopwatch,
    /// The theoretical arrival time of the next request, as time since `watch` started.
    next: Mutex<Duration>,
}

impl RateLimiter {
    /// `None` for a rate that is not a positive number.
    fn new(per_second: f64, burst: u32) -> Option<Self> {
        (per_second.is_finite() && per_second > 0.0).then(|| Self {
            interval: Duration::from_secs_f64(1.0 / per_second),
            burst: burst.max(1),
            watch: Stopwatch::start(),
            next: Mutex::new(Duration::ZERO),
        })
    }

    fn reserve(&self) -> Duration {
        self.reserve_at(self.watch.elapsed())
    }

    /// Reserves the next slot when the time is `now`; returns how long to wait for it.
    fn reserve_at(&self, now: Duration) -> Duration {
        let mut next = lock(&self.next);
        let arrival = (*next).max(now) + self.interval;
        *next = arrival;
        arrival
            .saturating_sub(now)
            .saturating_sub(self.interval * self.burst)
    }
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Self::Timeout(detail) => format!("timeout: {detail}"),
            Self::Connection(detail) => detail.clone(),
            Self::TooLarge(limit) => format!("body over {limit} bytes"),
        }
    }
}

fn final_error(ctx: &Ctx, outcome: Result<Fetched, Failure>, attempts: u32) -> RegistryError {
    let registry = ctx.registry.clone();
    let image = ctx.image.clone();
    match outcome {
        Ok(f) if f.status == StatusCode::TOO_MANY_REQUESTS => RegistryError::RateLimited {
            registry,
            image,
            attempts,
        },
        Ok(f) => RegistryError::Server {
            registry,
            image,
            status: f.status.as_u16(),
            attempts,
        },
        Err(Failure::Timeout(detail)) => RegistryError::Timeout {
            registry,
            image,
            attempts,
            detail,
        },
        Err(Failure::Connection(detail)) => RegistryError::Connection {
            registry,
            image,
            attempts,
            detail,
        },
        Err(Failure::TooLarge(limit)) => ctx.invalid(format!("response over {limit} bytes")),
    }
}

fn transport_failure(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout(crate::error_chain(e))
    } else {
        Failure::Connection(crate::error_chain(e))
    }
}

/// `1.5s`, `3600s`, `250ms`: for messages.
fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere leaves the maps and counters consistent enough to go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn load_ca_bundle(
    registry: &str,
    config: &RegistryConfig,
) -> Result<Vec<reqwest::Certificate>, RegistryError> {
    let Some(path) = &config.ca_bundle else {
        return Ok(Vec::new());
    };
    let error = |detail: String| RegistryError::Config {
        registry: registry.to_owned(),
        detail,
    };
    let pem = std::fs::read(path)
        .map_err(|e| error(format!("reading CA bundle {}: {e}", path.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        error(format!(
            "CA bundle {}: {}",
            path.display(),
            crate::error_chain(&e)
        ))
    })?;
    if certs.is_empty() {
        return Err(error(format!(
            "CA bundle {} holds no PEM certificates",
            path.display()
        )));
    }
    Ok(certs)
}

/// ` as "user"`, ` with an identity token`, ` with the login from
/// docker-credential-NAME`: for messages, never the secret.
fn login_origin(source: &LoginSource) -> String {
    match source {
        LoginSource::Anonymous => String::new(),
        LoginSource::Known(login) => format!(" {}", login.describe()),
        LoginSource::Helper { helper, .. } => {
            format!(" with the login from docker-credential-{helper}")
        }
    }
}

fn basic_header(login: &BasicAuth) -> String {
    let raw = format!("{}:{}", login.username, login.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn pull_scope(path: &str) -> String {
    format!("repository:{path}:pull")
}

fn api_url(host: &Host, ctx: &Ctx, path: &str) -> Result<Url, RegistryError> {
    host.base
        .join(path)
        .map_err(|e| ctx.invalid(format!("cannot build a URL for {path}: {e}")))
}

/// Safety margin before a token's expiry: 10 s, or a third of a short lifetime.
fn token_margin(lifetime_secs: i64) -> i64 {
    if lifetime_secs >= 30 {
        10
    } else {
        lifetime_secs / 3
    }
}

fn check_tag(ctx: &Ctx, tag: &str) -> Result<(), RegistryError> {
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(RegistryError::InvalidRequest {
            registry: ctx.registry.clone(),
            image: ctx.image.clone(),
            detail: format!("{tag:?} is not a valid tag"),
        })
    }
}

/// `algorithm:hex` as in `sha256:…` (lower-case hex, at least 32 digits).
fn is_digest(s: &str) -> bool {
    s.split_once(':').is_some_and(|(algorithm, hex)| {
        !algorithm.is_empty()
            && algorithm
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
            && hex.len() >= 32
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

fn sha256_digest(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for byte in Sha256::digest(bytes) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Checks `body` against a `sha256:` digest (other algorithms are not checked).
fn verify_digest(ctx: &Ctx, digest: &str, body: &[u8]) -> Result<(), RegistryError> {
    if digest.starts_with("sha256:") && sha256_digest(body) != digest {
        return Err(ctx.invalid(format!("content does not match its digest {digest}")));
    }
    Ok(())
}

fn is_index(manifest: &serde_json::Value, media_type: Option<&str>) -> bool {
    let body_type = manifest
        .get("mediaType")
        .and_then(serde_json::Value::as_str);
    [media_type, body_type]
        .into_iter()
        .flatten()
        .any(|t| t == OCI_INDEX || t == DOCKER_MANIFEST_LIST)
        || (body_type.is_none()
            && manifest
                .get("manifests")
                .is_some_and(serde_json::Value::is_array))
}

/// The linux/amd64 entry's digest, else the first entry's.
fn pick_platform(index: &serde_json::Value) -> Option<String> {
    let entries = index.get("manifests")?.as_array()?;
    let is_amd64 = |entry: &&serde_json::Value| {
        let platform = entry.get("platform");
        let field = |name: &str| {
            platform
                .and_then(|p| p.get(name))
                .and_then(serde_json::Value::as_str)
        };
        field("os") == Some("linux") && field("architecture") == Some("amd64")
    };
    entries
        .iter()
        .find(is_amd64)
        .or_else(|| entries.first())
        .and_then(|e| e.get("digest"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rate_limiter_reserves_slots() {
        let ms = Duration::from_millis;
        // 10/s, burst 1: back-to-back requests wait 0, 100, 200 ms.
        let limiter = RateLimiter::new(10.0, 1).unwrap();
        let waits: Vec<_> = (0..3).map(|_| limiter.reserve_at(Duration::ZERO)).collect();
        assert_eq!(waits, [ms(0), ms(100), ms(200)]);
        // After a quiet second the bucket is full again.
        assert_eq!(limiter.reserve_at(ms(2000)), ms(0));
        // Burst 3: three go at once, the fourth waits one interval.
        let limiter = RateLimiter::new(10.0, 3).unwrap();
        let waits: Vec<_> = (0..4).map(|_| limiter.reserve_at(Duration::ZERO)).collect();
        assert_eq!(waits, [ms(0), ms(0), ms(0), ms(100)]);
        assert!(RateLimiter::new(0.0, 1).is_none());
        assert!(RateLimiter::new(f64::NAN, 1).is_none());
    }

    #[test]
    fn platform_choice() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = json!({"manifests": [
            {"digest": d('a'), "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": d('b'), "platform": {"os": "linux", "architecture": "amd64"}},
        ]});
        assert_eq!(pick_platform(&index), Some(d('b')));
        let index = json!({"manifests": [
            {"digest": d('a'), "platform": {"os": "linux", "architecture": "arm64"}},
        ]});
        assert_eq!(pick_platform(&index), Some(d('a')));
        assert_eq!(pick_platform(&json!({"manifests": []})), None);
        assert!(is_index(&json!({"mediaType": OCI_INDEX}), None));
        assert!(is_index(&json!({}), Some(DOCKER_MANIFEST_LIST)));
        assert!(!is_index(
            &json!({"mediaType": OCI_MANIFEST}),
            Some(OCI_MANIFEST)
        ));
    }

    #[test]
    fn digests_and_tags() {
        assert!(is_digest(&format!("sha256:{}", "0f".repeat(32))));
        assert!(!is_digest("sha256:xyz"));
        assert!(!is_digest("latest"));
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let ctx = Ctx {
            registry: "r".into(),
            image: "r/a".into(),
            deadline: Deadline::after(Duration::from_secs(1)),
            call_timeout: Duration::from_secs(1),
            requests: AtomicU32::new(0),
        };
        for ok in ["v1.2.3", "latest", "_x", "v20240101-abc1234-master"] {
            assert!(check_tag(&ctx, ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a/b", "a:b", "../x", &"a".repeat(129)] {
            assert!(check_tag(&ctx, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_margins() {
        assert_eq!(token_margin(300), 10);
        assert_eq!(token_margin(60), 10);
        assert_eq!(token_margin(9), 3);
    }
}
