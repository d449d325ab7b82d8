//! Notifications to people: Slack incoming webhooks and a generic JSON webhook (does
//! I/O: reads secrets from the environment and files, posts over HTTP).
//!
//! A policy lists its targets in `spec.notify` ([`NotifySpec`]); each names where its
//! URL comes from ([`SecretRef`]) and which events it wants (none listed: all).
//! [`Notifier::deliver`] sends one [`Notification`] to one target:
//!
//! 1. skips it when the target does not want the event ([`Delivered::NotSubscribed`]);
//! 2. reads the URL afresh (a rotated secret applies at once): `env` and `file` here,
//!    `secretKeyRef` through an injected [`SecretResolver`] (in-cluster only);
//! 3. posts the body — [`slack_payload`] or [`webhook_payload`], the latter with an
//!    `Idempotency-Key` header equal to the notification's id;
//! 4. retries transport failures, timeouts, 5xx and 429 with exponential back-off and
//!    jitter, waiting as `Retry-After` says on 429 and 503; a `Retry-After` longer
//!    than [`NotifierConfig::max_retry_after`] ends the delivery with a retryable
//!    error instead of blocking the caller. 4xx other than 408/429 are not retried.
//!
//! **A webhook URL is a credential.** It is never logged, never put in an error and
//! never kept: targets are named by their secret reference (`slack url from env
//! SLACK_URL`), and every text from the HTTP client or the receiver is redacted.
//!
//! Exactly-once across restarts is the caller's part: it keeps a cursor of delivered
//! ids in the state store, and receivers de-duplicate on the id.

mod error;
mod message;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tracing::{debug, warn};
use url::{Host, Url};

use crate::clock::Clock;
use crate::policy::v1alpha1::{
    NotifyEvent, NotifySpec, NotifyTarget, SecretKeySelector, SecretRef,
};
use crate::registry::wire::{backoff_delay, parse_retry_after};

pub use error::NotifyError;
pub use message::{
    Link, Notification, VersionChange, WEBHOOK_SCHEMA, event_for_history_reason, event_name,
    slack_escape, slack_payload, webhook_payload,
};

/// The header carrying the notification's id on generic webhooks.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// How much of an error response body is kept (after redaction).
const BODY_EXCERPT_CHARS: usize = 200;
/// How much of an error response body is read at most.
const BODY_READ_LIMIT: usize = 16 * 1024;
/// What replaces the URL wherever it might appear in a text.
const REDACTED: &str = "[redacted]";

/// Reads a key of a Kubernetes Secret, for `secretKeyRef` URLs; the in-cluster
/// controller provides one. Implementations must not put the value in their errors.
pub trait SecretResolver: Send + Sync {
    /// The value of `selector` in the Secret of that name in `namespace` (the
    /// policy's namespace; `None` when the policy has none).
    fn resolve<'a>(
        &'a self,
        namespace: Option<&'a str>,
        selector: &'a SecretKeySelector,
    ) -> BoxFuture<'a, Result<String, SecretError>>;
}

/// Why a [`SecretResolver`] could not read a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError {
    /// What went wrong (never the value).
    pub detail: String,
    /// Whether trying again later can help (API server unreachable) or not (no such
    /// Secret or key, forbidden).
    pub retryable: bool,
}

/// Timeouts and retries of a [`Notifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifierConfig {
    /// Connecting, per attempt.
    pub connect_timeout: Duration,
    /// The whole exchange (connect, send, read the answer), per attempt.
    pub request_timeout: Duration,
    /// Attempts per delivery, the first included (at least 1).
    pub max_attempts: u32,
    /// The first back-off; doubled per retry, with jitter.
    pub base_backoff: Duration,
    /// The longest back-off.
    pub max_backoff: Duration,
    /// The longest `Retry-After` waited inside one delivery; a longer one ends the
    /// delivery with a retryable [`NotifyError::Status`] carrying it.
    pub max_retry_after: Duration,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_attempts: 4,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// The outcome of a delivery that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// The receiver accepted it.
    Sent {
        /// The receiver's 2xx status.
        status: u16,
        /// Requests sent (1 when the first one succeeded).
        attempts: u32,
        /// Time spent waiting between attempts (back-off and `Retry-After`).
        waited: Duration,
    },
    /// The target does not want this event; nothing was sent.
    NotSubscribed,
}

/// The kind of receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Slack,
    Webhook,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Webhook => "webhook",
        }
    }
}

/// Delivers one notification to one target: the [`Notifier`], or a recording
/// stand-in (the simulator).
pub trait Deliver: Send + Sync {
    /// Delivers `n` to `target`, unless the target does not want its event.
    fn deliver(
        &self,
        target: &NotifySpec,
        n: &Notification,
    ) -> impl std::future::Future<Output = Result<Delivered, NotifyError>> + Send;
}

impl Deliver for Notifier {
    fn deliver(
        &self,
        target: &NotifySpec,
        n: &Notification,
    ) -> impl std::future::Future<Output = Result<Delivered, NotifyError>> + Send {
        Notifier::deliver(self, target, n)
    }
}

/// Sends notifications. Cheap to share; holds no secret.
#[derive(Clone)]
pub struct Notifier {
    /// For most receivers: honours the proxy environment variables.
    proxied: reqwest::Client,
    /// For loopback receivers, which no proxy can reach.
    direct: reqwest::Client,
    config: NotifierConfig,
    clock: Arc<dyn Clock>,
    secrets: Option<Arc<dyn SecretResolver>>,
    env: EnvLookup,
}

/// Reads an environment variable (see [`Notifier::with_env`]).
pub type EnvLookup = Arc<dyn Fn(&str) -> Result<String, std::env::VarError> + Send + Sync>;

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("config", &self.config)
            .field("secret_resolver", &self.secrets.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether `target` wants `event` (an empty list wants all).
#[must_use]
pub fn wants(target: &NotifySpec, event: NotifyEvent) -> bool {
    let (_, t) = parts(target);
    t.events.is_empty() || t.events.contains(&event)
}

fn parts(target: &NotifySpec) -> (Kind, &NotifyTarget) {
    match target {
        NotifySpec::Slack(t) => (Kind::Slack, t),
        NotifySpec::Webhook(t) => (Kind::Webhook, t),
    }
}

/// Names a target by where its URL comes from: `slack url from env SLACK_URL`.
#[must_use]
pub fn describe_target(target: &NotifySpec) -> String {
    let (kind, t) = parts(target);
    let from = match &t.url {
        SecretRef::Env(name) => format!("env {name}"),
        SecretRef::File(path) => format!("file {path}"),
        SecretRef::SecretKeyRef(s) => format!("secret {} key {}", s.name, s.key),
    };
    format!("{} url from {from}", kind.as_str())
}

impl Notifier {
    /// A notifier with `config`, reading `Retry-After` dates against `clock`.
    pub fn new(config: NotifierConfig, clock: Arc<dyn Clock>) -> Result<Self, NotifyError> {
        crate::install_crypto_provider();
        let build = |direct: bool| {
            let mut builder = reqwest::Client::builder()
                .user_agent(concat!("autobump/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(config.connect_timeout)
                .timeout(config.request_timeout)
                // A redirected POST would turn into a GET, or carry the body to
                // wherever the receiver points: a webhook answers, it does not move.
                .redirect(reqwest::redirect::Policy::none());
            if direct {
                builder = builder.no_proxy();
            }
            builder.build().map_err(|e| NotifyError::Config {
                detail: format!("building the HTTP client: {}", crate::error_chain(&e)),
            })
        };
        Ok(Self {
            proxied: build(false)?,
            direct: build(true)?,
            config,
            clock,
            secrets: None,
            env: Arc::new(|name: &str| std::env::var(name)),
        })
    }

    /// Reads `env` URLs through `lookup` instead of the process environment (for
    /// embedders and tests: changing the environment of a running multi-threaded
    /// process is unsound, `std::env::set_var` is `unsafe`).
    #[must_use]
    pub fn with_env(mut self, lookup: EnvLookup) -> Self {
        self.env = lookup;
        self
    }

    /// Reads `secretKeyRef` URLs through `resolver` (the in-cluster controller).
    #[must_use]
    pub fn with_secret_resolver(mut self, resolver: Arc<dyn SecretResolver>) -> Self {
        self.secrets = Some(resolver);
        self
    }

    /// Delivers `n` to `target`, unless the target does not want its event.
    pub async fn deliver(
        &self,
        target: &NotifySpec,
        n: &Notification,
    ) -> Result<Delivered, NotifyError> {
        if !wants(target, n.event) {
            return Ok(Delivered::NotSubscribed);
        }
        let (kind, t) = parts(target);
        let name = describe_target(target);
        let raw = self
            .read_secret(&name, &t.url, n.namespace.as_deref())
            .await?;
        let url = parse_url(&name, &raw)?;
        let redactor = Redactor::new(&raw, &url);
        let body = match kind {
            Kind::Slack => slack_payload(n),
            Kind::Webhook => webhook_payload(n),
        };
        let body = body.to_string().into_bytes();
        let mut request = self
            .client_for(&url)
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if kind == Kind::Webhook {
            let key = HeaderValue::from_str(&n.id).map_err(|_| NotifyError::Config {
                detail: format!(
                    "notification id {:?} cannot be an {IDEMPOTENCY_KEY} header",
                    n.id
                ),
            })?;
            request = request.header(IDEMPOTENCY_KEY, key);
        }
        self.send(&name, &redactor, &request).await
    }

    fn client_for(&self, url: &Url) -> &reqwest::Client {
        let loopback = match url.host() {
            Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if loopback {
            &self.direct
        } else {
            &self.proxied
        }
    }

    /// Reads the URL's secret (trimmed; files end in a newline more often than not).
    async fn read_secret(
        &self,
        name: &str,
        secret: &SecretRef,
        namespace: Option<&str>,
    ) -> Result<String, NotifyError> {
        let fail = |detail: String, retryable: bool| NotifyError::Secret {
            target: name.to_owned(),
            detail,
            retryable,
        };
        let value = match secret {
            SecretRef::Env(var) => match (self.env)(var.as_str()) {
                Ok(v) => v,
                Err(std::env::VarError::NotPresent) => {
                    return Err(fail(
                        format!("environment variable {var} is not set"),
                        false,
                    ));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(fail(
                        format!("environment variable {var} is not valid UTF-8"),
                        false,
                    ));
                }
            },
            SecretRef::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| fail(format!("reading {path}: {e}"), false))?,
            SecretRef::SecretKeyRef(selector) => {
                let Some(resolver) = &self.secrets else {
                    return Err(NotifyError::InClusterOnly {
                        target: name.to_owned(),
                    });
                };
                resolver
                    .resolve(namespace, selector)
                    .await
                    .map_err(|e| fail(e.detail, e.retryable))?
            }
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(fail("it is empty".to_owned(), false));
        }
        Ok(value.to_owned())
    }

    /// Posts with retries; see the module docs for which failures are retried.
    async fn send(
        &self,
        name: &str,
        redactor: &Redactor,
        request: &reqwest::RequestBuilder,
    ) -> Result<Delivered, NotifyError> {
        let max_attempts = self.config.max_attempts.max(1);
        let mut attempts = 0;
        let mut waited = Duration::ZERO;
        loop {
            attempts += 1;
            let request = request
                .try_clone()
                .expect("a request with an in-memory body can be cloned");
            let (error, wait) = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let status = response.status().as_u16();
                    debug!(
                        target_name = name,
                        status, attempts, "notification delivered"
                    );
                    return Ok(Delivered::Sent {
                        status,
                        attempts,
                        waited,
                    });
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = if status == 429 || status == 503 {
                        response
                            .headers()
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| parse_retry_after(v, self.clock.now()))
                    } else {
                        None
                    };
                    let body = redactor.redact(&read_excerpt(response).await);
                    let error = NotifyError::Status {
                        target: name.to_owned(),
                        status,
                        attempts,
                        body,
                        retry_after: retry_after.filter(|d| *d > self.config.max_retry_after),
                    };
                    if retry_after.is_some_and(|d| d > self.config.max_retry_after) {
                        // Waiting that long here would stall the caller's reconcile;
                        // the caller keeps the notification and tries later.
                        return Err(error);
                    }
                    (error, retry_after)
                }
                Err(e) => (self.transport_error(name, redactor, &e), None),
            };
            if !error.is_retryable() || attempts >= max_attempts {
                return Err(error);
            }
            let wait = wait.unwrap_or_else(|| {
                backoff_delay(
                    self.config.base_backoff,
                    self.config.max_backoff,
                    attempts,
                    fastrand::f64(),
                )
            });
            warn!(
                target_name = name,
                attempt = attempts,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %error,
                "notification not delivered; retrying"
            );
            tokio::time::sleep(wait).await;
            waited += wait;
        }
    }

    fn transport_error(&self, name: &str, redactor: &Redactor, e: &reqwest::Error) -> NotifyError {
        if e.is_timeout() {
            return NotifyError::Timeout {
                target: name.to_owned(),
                after: self.config.request_timeout,
            };
        }
        NotifyError::Connection {
            target: name.to_owned(),
            detail: redactor.redact(&transport_detail(e)),
        }
    }
}

/// What went wrong on the wire, from the transport's error chain. reqwest's own
/// message names the URL, so it is replaced by a plain head; the sources (hyper,
/// rustls, the OS) are kept, and the caller redacts the result all the same.
fn transport_detail(e: &reqwest::Error) -> String {
    let mut text = String::from(if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "sending the request failed"
    });
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Parses the secret's value as an http(s) URL; errors never include it.
fn parse_url(name: &str, raw: &str) -> Result<Url, NotifyError> {
    let invalid = |detail: String| NotifyError::InvalidUrl {
        target: name.to_owned(),
        detail,
    };
    let url = Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(invalid(format!("scheme {other:?}, expected http or https"))),
    }
    if url.host().is_none() {
        return Err(invalid("no host".to_owned()));
    }
    Ok(url)
}

/// Removes every form of a URL from texts: as written, as normalised, and its path
/// and query (the secret part of a Slack webhook URL) on their own.
struct Redactor {
    needles: Vec<String>,
}

impl Redactor {
    fn new(raw: &str, url: &Url) -> Self {
        let mut needles = vec![raw.to_owned(), url.as_str().to_owned()];
        let path = url.path().trim_start_matches('/');
        if !path.is_empty() {
            needles.push(url.path().to_owned());
            needles.push(path.to_owned());
        }
        if let Some(query) = url.query().filter(|q| !q.is_empty()) {
            needles.push(query.to_owned());
        }
        if !url.password().unwrap_or_default().is_empty() {
            needles.extend(url.password().map(str::to_owned));
        }
        // Longest first, so a URL is replaced whole before its path is.
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Self { needles }
    }

    fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for needle in &self.needles {
            if text.contains(needle.as_str()) {
                text = text.replace(needle.as_str(), REDACTED);
            }
        }
        text
    }
}

/// The start of a response body as text, for error messages.
async fn read_excerpt(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < BODY_READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.chars().count() > BODY_EXCERPT_CHARS {
        let mut cut: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
        cut.push('…');
        cut
    } else {
        text.to_owned()
    }
}
