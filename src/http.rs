//! HTTP endpoints (does I/O). Today: the registry push-notification webhook, which
//! turns a push into "re-check this image now", and the Alertmanager webhook, which
//! turns a firing alert into "reconcile the policies it concerns now".
//!
//! A notification only *triggers* a re-check: the decision is always made from a
//! fresh registry read, so a forged or replayed notification can cost a request but
//! never change what gets deployed.
//!
//! # Bounds
//!
//! What a client, authenticated or not, can cost is bounded (see [`serve`] and
//! [`ServeLimits`]):
//!
//! * a request is authenticated from its headers **before** its body is read (bearer
//!   token; for GitHub the presence of a well-formed `X-Hub-Signature-256` and of
//!   `X-GitHub-Event`, since the HMAC itself needs the body); a refused request's
//!   body is never read and its connection is closed;
//! * a body is read only up to its endpoint's size limit (a larger `Content-Length`
//!   is refused before reading), within [`BODY_READ_TIMEOUT`], and at most
//!   [`MAX_BODY_READS`] bodies are read at once (so bodies in memory stay under
//!   `MAX_BODY_READS` × 1 MiB);
//! * request headers must arrive within [`ServeLimits::header_read_timeout`], which
//!   is also how long a kept-alive connection may sit idle;
//! * at most [`ServeLimits::max_connections`] connections are open at once, so
//!   clients cannot use up the process's file descriptors; at the cap a new
//!   connection closes the oldest one not in a request (so connections held open
//!   without use cannot lock out `/healthz`); an accept error (EMFILE, ENFILE,
//!   ECONNABORTED) is logged and retried after a pause, never fatal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

use crate::alerts::{AlertTrigger, parse_alertmanager_webhook};
use crate::forge::webhook::{
    DeliveryDeduplicator, MAX_WEBHOOK_BODY_BYTES, WebhookEvent, parse_webhook, verify_signature,
};

/// The largest notification body accepted (distribution batches a few events).
const MAX_BODY: usize = 1 << 20;

/// A request body must arrive completely within this (including the wait for a
/// read slot); a client that sends slower is answered 408 and disconnected.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Bodies read at the same time, across all endpoints; with bodies of at most
/// 1 MiB this bounds what webhooks hold in memory to 16 MiB.
pub const MAX_BODY_READS: usize = 16;

/// The read slots of [`MAX_BODY_READS`].
static BODY_READS: Semaphore = Semaphore::const_new(MAX_BODY_READS);

/// A refusal: status and a one-line body.
pub(crate) type Refusal = (StatusCode, &'static str);

/// Reads `body` (after the request was authenticated from its headers): refuses a
/// declared `Content-Length` over `limit` without reading anything, reads at most
/// `limit` bytes, and gives up after [`BODY_READ_TIMEOUT`].
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, Refusal> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"));
    }
    let read = async {
        use futures::StreamExt as _;
        // The semaphore is never closed.
        let _slot = BODY_READS.acquire().await.ok();
        let mut stream = body.into_data_stream();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| (StatusCode::BAD_REQUEST, "body could not be read\n"))?;
            if out.len() + chunk.len() > limit {
                return Err((StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(result) => result,
        Err(_) => Err((StatusCode::REQUEST_TIMEOUT, "body not received in time\n")),
    }
}

/// "Re-check this image now": the registry host and repository path of a push.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Recheck {
    /// The registry as clients address it (`127.0.0.1:5000`, `ghcr.io`).
    pub registry: String,
    /// The repository path inside it (`team/app`).
    pub repository: String,
    /// The tag pushed, when the push named one.
    pub tag: Option<String>,
}

impl Recheck {
    /// `registry/repository`, comparable with
    /// [`crate::core::reference::ImageRef::canonical_repository`].
    #[must_use]
    pub fn canonical_repository(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// Why a notification body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotificationError {
    /// Not the distribution events envelope.
    #[error("not a registry notification envelope: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct Envelope {
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    action: String,
    target: Target,
    #[serde(default)]
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    #[serde(default)]
    media_type: String,
    repository: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    host: Option<String>,
}

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Reads a distribution notification envelope (`{"events": [...]}`) and returns one
/// [`Recheck`] per distinct manifest push. Pulls, deletes, mounts and blob pushes are
/// ignored.
pub fn parse_registry_notification(body: &[u8]) -> Result<Vec<Recheck>, NotificationError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| NotificationError::Malformed(e.to_string()))?;
    let mut out: Vec<Recheck> = envelope
        .events
        .into_iter()
        .filter(|e| e.action == "push")
        .filter(|e| {
            e.target.tag.is_some() || MANIFEST_TYPES.contains(&e.target.media_type.as_str())
        })
        .filter_map(|e| {
            // The URL says where clients reach the registry; the request's Host header
            // is the fallback.
            let registry = e
                .target
                .url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| {
                    u.host_str().map(|h| {
                        u.port()
                            .map_or_else(|| h.to_owned(), |p| format!("{h}:{p}"))
                    })
                })
                .or_else(|| e.request.and_then(|r| r.host))?;
            Some(Recheck {
                registry,
                repository: e.target.repository,
                tag: e.target.tag,
            })
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

#[derive(Clone)]
struct RegistryHook {
    token: Option<String>,
    tx: mpsc::Sender<Recheck>,
}

/// The router for `POST /webhooks/registry`. With a `token`, requests must carry
/// `Authorization: Bearer <token>` (distribution sends it from the endpoint's
/// `headers:`). Each manifest push becomes a [`Recheck`] on `tx`; when the receiver
/// is full the notification is answered 503 so the registry retries it later.
pub fn registry_webhook(token: Option<String>, tx: mpsc::Sender<Recheck>) -> Router {
    Router::new()
        .route("/webhooks/registry", post(receive_registry))
        .with_state(RegistryHook { token, tx })
}

async fn receive_registry(
    State(hook): State<RegistryHook>,
    headers: HeaderMap,
    body: Body,
) -> (StatusCode, &'static str) {
    if !bearer_ok(hook.token.as_deref(), &headers) {
        return (StatusCode::UNAUTHORIZED, "bad or missing bearer token\n");
    }
    let body = match read_body(&headers, body, MAX_BODY).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let rechecks = match parse_registry_notification(&body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "refused a registry notification");
            return (
                StatusCode::BAD_REQUEST,
                "not a registry notification envelope\n",
            );
        }
    };
    for recheck in rechecks {
        tracing::debug!(registry = %recheck.registry, repository = %recheck.repository, "registry push");
        if hook.tx.try_send(recheck).is_err() {
            return (StatusCode::SERVICE_UNAVAILABLE, "busy, retry later\n");
        }
    }
    (StatusCode::OK, "ok\n")
}

#[derive(Clone)]
struct AlertmanagerHook {
    token: Option<String>,
    tx: mpsc::Sender<AlertTrigger>,
}

/// The router for `POST /webhooks/alertmanager`, Alertmanager's webhook receiver
/// (payload version 4). With a `token`, requests must carry
/// `Authorization: Bearer <token>` (Alertmanager sends it from the receiver's
/// `http_config: authorization: credentials:`); run without a token only on a
/// trusted network. Each payload becomes an [`AlertTrigger`] on `tx`; when the
/// receiver is full the webhook is answered 503 and Alertmanager retries it.
///
/// A trigger only makes the controller reconcile the affected policies sooner: the
/// decision comes from a fresh gate read ([`crate::alerts::read_gate`]), so a forged
/// or stale webhook alone cannot hold or roll anything back.
pub fn alertmanager_webhook(token: Option<String>, tx: mpsc::Sender<AlertTrigger>) -> Router {
    Router::new()
        .route("/webhooks/alertmanager", post(receive_alertmanager))
        .with_state(AlertmanagerHook { token, tx })
}

async fn receive_alertmanager(
    State(hook): State<AlertmanagerHook>,
    headers: HeaderMap,
    body: Body,
) -> (StatusCode, &'static str) {
    if !bearer_ok(hook.token.as_deref(), &headers) {
        return (StatusCode::UNAUTHORIZED, "bad or missing bearer token\n");
    }
    let body = match read_body(&headers, body, MAX_BODY).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let trigger = match parse_alertmanager_webhook(&body) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "refused an Alertmanager webhook");
            return (
                StatusCode::BAD_REQUEST,
                "not an Alertmanager webhook payload\n",
            );
        }
    };
    tracing::debug!(
        status = ?trigger.status,
        firing = ?trigger.firing_names(),
        "Alertmanager webhook"
    );
    if hook.tx.try_send(trigger).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy, retry later\n");
    }
    (StatusCode::OK, "ok\n")
}

/// The secrets of the webhook endpoints (from the environment, never flags).
#[derive(Default)]
pub struct Webhooks {
    /// GitHub's webhook secret; without it `/webhooks/github` is not served
    /// (unsigned commands must never be accepted).
    pub github_secret: Option<Vec<u8>>,
    /// Where GitHub deliveries are recorded so the client can skip reads they prove
    /// unchanged and act on commands on closed PRs (GitLab's go there too).
    pub github_feed: Option<std::sync::Arc<crate::forge::WebhookFeed>>,
    /// GitLab's webhook secret token (`X-Gitlab-Token`); without it
    /// `/webhooks/gitlab` is not served.
    pub gitlab_secret: Option<Vec<u8>>,
    /// Bearer token for `/webhooks/registry` (open when `None`: a push only triggers
    /// a re-read).
    pub registry_token: Option<String>,
    /// Bearer token for `/webhooks/alertmanager` (likewise).
    pub alertmanager_token: Option<String>,
    /// Served on `/metrics` when set.
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// `/readyz` answers 200 once this is true (policies loaded, first pass done),
    /// 503 before and while shutting down.
    pub ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Standalone: `/readyz` also answers 503 (saying why) while loading the policy
    /// files has failed for longer than its threshold.
    pub policy_load: Option<std::sync::Arc<crate::policy::health::LoadHealth>>,
    /// The read-only dashboard (`/`, `/policies/NAME`, `/api/v1/...`), when set.
    pub dashboard: Option<crate::dashboard::DashboardConfig>,
}

/// What the webhook endpoints deliver.
pub struct Events {
    /// GitHub comments and pull-request events.
    pub github: mpsc::Receiver<WebhookEvent>,
    /// Registry pushes.
    pub registry: mpsc::Receiver<Recheck>,
    /// Alertmanager notifications.
    pub alerts: mpsc::Receiver<AlertTrigger>,
}

/// Every endpoint of the controller's HTTP server: `/healthz` (the process
/// answers), `/readyz` (it is ready to act), `/metrics`, the webhooks and the
/// dashboard ([`crate::dashboard`]).
pub fn server(hooks: Webhooks) -> (Router, Events) {
    let (github_tx, github) = mpsc::channel(256);
    let (registry_tx, registry) = mpsc::channel(256);
    let (alerts_tx, alerts) = mpsc::channel(256);
    let ready = hooks.ready;
    let policy_load = hooks.policy_load;
    let mut router = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || async move {
                if !ready.load(std::sync::atomic::Ordering::SeqCst) {
                    return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned());
                }
                match policy_load.as_ref().and_then(|h| h.not_ready()) {
                    Some(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {why}\n"),
                    ),
                    None => (StatusCode::OK, "ready\n".to_owned()),
                }
            }),
        )
        .merge(registry_webhook(hooks.registry_token, registry_tx))
        .merge(alertmanager_webhook(hooks.alertmanager_token, alerts_tx));
    if let Some(dashboard) = hooks.dashboard {
        router = router.merge(crate::dashboard::router(dashboard));
    }
    if let Some(secret) = hooks.gitlab_secret {
        router = router.merge(gitlab_webhook(
            secret,
            github_tx.clone(),
            hooks.github_feed.clone(),
        ));
    }
    if let Some(secret) = hooks.github_secret {
        router = router.merge(github_webhook(secret, github_tx, hooks.github_feed));
    }
    if let Some(metrics) = hooks.metrics {
        router = router.route(
            "/metrics",
            axum::routing::get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }),
        );
    }
    (
        router,
        Events {
            github,
            registry,
            alerts,
        },
    )
}

/// Whether the request carries `Authorization: Bearer <token>` (always true when no
/// token is configured).
pub(crate) fn bearer_ok(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else { return true };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

#[derive(Clone)]
struct GitHubHook {
    secret: std::sync::Arc<Vec<u8>>,
    feed: Option<std::sync::Arc<crate::forge::WebhookFeed>>,
    deliveries: std::sync::Arc<DeliveryDeduplicator>,
    tx: mpsc::Sender<WebhookEvent>,
}

/// The router for `POST /webhooks/github`. Every delivery must be signed with the
/// shared `secret` (`X-Hub-Signature-256`, checked in constant time) and at most
/// [`MAX_WEBHOOK_BODY_BYTES`]; a redelivered `X-GitHub-Delivery` id is acknowledged
/// and dropped. Every authenticated delivery is recorded in `feed` (when given);
/// comments on pull requests, pull-request events and check or status changes go to
/// `tx` so the controller reconciles at once. The reconcile reads the PR afresh and
/// re-reads everything before it merges, so a delivery only ever makes it sooner.
pub fn github_webhook(
    secret: Vec<u8>,
    tx: mpsc::Sender<WebhookEvent>,
    feed: Option<std::sync::Arc<crate::forge::WebhookFeed>>,
) -> Router {
    Router::new()
        .route("/webhooks/github", post(receive_github))
        .with_state(GitHubHook {
            secret: std::sync::Arc::new(secret),
            feed,
            deliveries: std::sync::Arc::new(DeliveryDeduplicator::default()),
            tx,
        })
}

async fn receive_github(
    State(hook): State<GitHubHook>,
    headers: HeaderMap,
    body: Body,
) -> (StatusCode, &'static str) {
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // What can be checked before the body: the signature must be there and look
    // like one (the HMAC itself covers the body), and so must the event.
    let signature = header_str("x-hub-signature-256").unwrap_or_default();
    if !looks_like_signature(signature) {
        return (
            StatusCode::UNAUTHORIZED,
            "bad or missing X-Hub-Signature-256\n",
        );
    }
    let Some(event) = header_str("x-github-event") else {
        return (StatusCode::BAD_REQUEST, "missing X-GitHub-Event\n");
    };
    let body = match read_body(&headers, body, MAX_WEBHOOK_BODY_BYTES).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    if !verify_signature(&hook.secret, &body, signature) {
        return (
            StatusCode::UNAUTHORIZED,
            "bad or missing X-Hub-Signature-256\n",
        );
    }
    if let Some(delivery) = header_str("x-github-delivery")
        && !hook.deliveries.first_delivery(delivery)
    {
        return (StatusCode::OK, "duplicate delivery, ignored\n");
    }
    let parsed = match parse_webhook(event, &body) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, event, "refused a GitHub webhook");
            return (StatusCode::BAD_REQUEST, "not a GitHub webhook payload\n");
        }
    };
    if let Some(feed) = &hook.feed {
        feed.record(&parsed);
    }
    let relevant = match &parsed {
        WebhookEvent::Ping => return (StatusCode::OK, "pong\n"),
        WebhookEvent::IssueComment(c) => c.is_pull_request,
        WebhookEvent::PullRequest(_) | WebhookEvent::Checks(_) => true,
        WebhookEvent::Other { .. } => false,
    };
    if !relevant {
        return (StatusCode::ACCEPTED, "ignored\n");
    }
    if hook.tx.try_send(parsed).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy, retry later\n");
    }
    (StatusCode::OK, "ok\n")
}

/// The router for `POST /webhooks/gitlab`: merge request, note, pipeline and job
/// events. Every delivery must carry the shared `secret` as `X-Gitlab-Token`
/// (compared in constant time) and be at most [`MAX_WEBHOOK_BODY_BYTES`]; a redelivery
/// (the same `Idempotency-Key`) is acknowledged and dropped. Authenticated deliveries
/// are recorded in `feed` and go to `tx` as for GitHub: each triggers a reconcile.
pub fn gitlab_webhook(
    secret: Vec<u8>,
    tx: mpsc::Sender<WebhookEvent>,
    feed: Option<std::sync::Arc<crate::forge::WebhookFeed>>,
) -> Router {
    Router::new()
        .route("/webhooks/gitlab", post(receive_gitlab))
        .with_state(GitHubHook {
            secret: std::sync::Arc::new(secret),
            feed,
            deliveries: std::sync::Arc::new(DeliveryDeduplicator::default()),
            tx,
        })
}

async fn receive_gitlab(
    State(hook): State<GitHubHook>,
    headers: HeaderMap,
    body: Body,
) -> (StatusCode, &'static str) {
    use crate::forge::gitlab_webhook::{parse_gitlab_webhook, verify_gitlab_token};
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !verify_gitlab_token(
        &hook.secret,
        header_str("x-gitlab-token").unwrap_or_default(),
    ) {
        return (StatusCode::UNAUTHORIZED, "bad or missing X-Gitlab-Token\n");
    }
    let Some(event) = header_str("x-gitlab-event") else {
        return (StatusCode::BAD_REQUEST, "missing X-Gitlab-Event\n");
    };
    let body = match read_body(&headers, body, MAX_WEBHOOK_BODY_BYTES).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    if let Some(key) = header_str("idempotency-key")
        && !hook.deliveries.first_delivery(key)
    {
        return (StatusCode::OK, "duplicate delivery, ignored\n");
    }
    let parsed = match parse_gitlab_webhook(event, &body) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, event, "refused a GitLab webhook");
            return (StatusCode::BAD_REQUEST, "not a GitLab webhook payload\n");
        }
    };
    if let Some(feed) = &hook.feed {
        feed.record(&parsed);
    }
    if matches!(parsed, WebhookEvent::Other { .. } | WebhookEvent::Ping) {
        return (StatusCode::ACCEPTED, "ignored\n");
    }
    if hook.tx.try_send(parsed).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy, retry later\n");
    }
    (StatusCode::OK, "ok\n")
}

/// `sha256=` and 64 hex digits: the shape of GitHub's `X-Hub-Signature-256`.
fn looks_like_signature(header: &str) -> bool {
    header
        .trim()
        .strip_prefix("sha256=")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Bounds of the HTTP server's connections (see the module docs).
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Connections open at once; a new one beyond it closes the oldest connection
    /// that is not in a request (or is refused when every one is).
    pub max_connections: usize,
    /// Request headers must arrive within this after the connection opened or the
    /// previous response was sent (so it is also the idle timeout of a kept-alive
    /// connection).
    pub header_read_timeout: Duration,
    /// The longest a connection may stay open at all.
    pub connection_lifetime: Duration,
    /// After a failed `accept` (EMFILE: out of file descriptors), wait this long
    /// before accepting again.
    pub accept_error_pause: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 128,
            header_read_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(300),
            accept_error_pause: Duration::from_millis(500),
        }
    }
}

/// A connection's service: the router, marking the connection busy while it is in a
/// request (a busy connection is never closed to make room for a new one).
#[derive(Clone)]
struct Tracked {
    inner: hyper_util::service::TowerToHyperService<Router>,
    busy: Arc<AtomicBool>,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.busy.store(true, Ordering::SeqCst);
        let response = self.inner.call(request);
        let busy = Arc::clone(&self.busy);
        Box::pin(async move {
            let response = response.await;
            busy.store(false, Ordering::SeqCst);
            response
        })
    }
}

/// The open connections, oldest first: whether each is in a request, and how to close
/// it.
#[derive(Default)]
struct Open {
    next: u64,
    connections: std::collections::BTreeMap<u64, (Arc<AtomicBool>, tokio::task::AbortHandle)>,
}

/// Serves `router` on `listener` until the task is dropped, within `limits`: HTTP/1.1,
/// each connection with a header-read (and idle) timeout and a lifetime, at most
/// `max_connections` at once. At the cap, a new connection closes the oldest one that
/// is not in a request (still sending its headers, or idle): clients that hold
/// connections without using them cannot lock out a health probe. A failed accept is
/// logged and retried after a pause.
pub async fn serve(listener: TcpListener, router: Router, limits: ServeLimits) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let open = Arc::new(std::sync::Mutex::new(Open::default()));
    let mut pause_logged = false;
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = match listener.accept().await {
            Ok(accepted) => {
                pause_logged = false;
                accepted
            }
            Err(e) => {
                // Out of file descriptors (or the like): the listener stays, the
                // pending connections wait in the backlog until descriptors free up.
                if !pause_logged {
                    tracing::warn!(error = %e, pause_ms = u64::try_from(limits.accept_error_pause.as_millis()).unwrap_or(u64::MAX),
                        "accepting an HTTP connection failed; pausing, then accepting again");
                    pause_logged = true;
                }
                tokio::time::sleep(limits.accept_error_pause).await;
                continue;
            }
        };
        // Held across the spawn, so a connection that ends at once removes its entry
        // only after it was added.
        let mut guard = open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.connections.len() >= limits.max_connections.max(1) {
            let idle = guard
                .connections
                .iter()
                .find(|(_, (busy, _))| !busy.load(Ordering::SeqCst))
                .map(|(id, _)| *id);
            let Some(id) = idle else {
                tracing::debug!(%peer, "every connection is in a request; refusing a new one");
                continue;
            };
            if let Some((_, closing)) = guard.connections.remove(&id) {
                closing.abort();
                tracing::debug!(%peer, "at the connection cap: closed the oldest idle connection");
            }
        }
        let id = guard.next;
        guard.next += 1;
        let busy = Arc::new(AtomicBool::new(false));
        let service = Tracked {
            inner: TowerToHyperService::new(router.clone()),
            busy: Arc::clone(&busy),
        };
        let limits = limits.clone();
        let registry = Arc::clone(&open);
        let task = tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(64 * 1024);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.connection_lifetime, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP connection ended"),
                Err(_) => tracing::debug!(%peer, "HTTP connection open too long; closed"),
            }
            registry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .connections
                .remove(&id);
        });
        guard.connections.insert(id, (busy, task.abort_handle()));
    }
}

/// Compares secrets without leaking where they differ through timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, media_type: &str, tag: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "id": "1", "timestamp": "2026-11-21T10:00:00Z", "action": action,
            "target": {
                "mediaType": media_type, "size": 10, "digest": "sha256:00", "length": 10,
                "repository": "team/app",
                "url": "http://127.0.0.1:5000/v2/team/app/manifests/sha256:00",
                "tag": tag
            },
            "request": {"id": "r", "addr": "127.0.0.1:1", "host": "127.0.0.1:5000", "method": "PUT", "useragent": "x"},
            "actor": {}, "source": {"addr": "host:5000", "instanceID": "i"}
        })
    }

    #[test]
    fn manifest_pushes_become_rechecks_once() {
        let body = serde_json::json!({"events": [
            event("push", "application/vnd.oci.image.manifest.v1+json", Some("v1")),
            event("push", "application/vnd.oci.image.manifest.v1+json", Some("v1")),
            event("push", "application/vnd.oci.image.layer.v1.tar+gzip", None),
            event("pull", "application/vnd.oci.image.manifest.v1+json", Some("v1")),
            event("delete", "application/vnd.oci.image.manifest.v1+json", Some("v0")),
        ]});
        let got = parse_registry_notification(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            got,
            [Recheck {
                registry: "127.0.0.1:5000".into(),
                repository: "team/app".into(),
                tag: Some("v1".into()),
            }]
        );
        assert_eq!(got[0].canonical_repository(), "127.0.0.1:5000/team/app");
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(parse_registry_notification(b"{}").is_err());
        assert!(parse_registry_notification(b"not json").is_err());
        assert_eq!(
            parse_registry_notification(br#"{"events": []}"#),
            Ok(vec![])
        );
    }

    #[test]
    fn signature_shapes() {
        assert!(looks_like_signature(&format!(
            "sha256={}",
            "aB0".repeat(21) + "f"
        )));
        assert!(!looks_like_signature("sha256=abc"));
        assert!(!looks_like_signature(&format!("sha1={}", "0".repeat(64))));
        assert!(!looks_like_signature(""));
    }

    proptest::proptest! {
        // Bounded work per case: inputs up to 4 KiB, 256 cases per parser.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random bytes never panic a webhook parser (issue 14).
        #[test]
        fn webhook_parsers_survive_random_bytes(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..4096),
            event in "[a-z_]{0,20}",
        ) {
            let _ = parse_registry_notification(&body);
            let _ = parse_alertmanager_webhook(&body);
            let _ = parse_webhook(&event, &body);
            let _ = crate::forge::gitlab_webhook::parse_gitlab_webhook(&event, &body);
            for hook in ["Merge Request Hook", "Note Hook", "Pipeline Hook", "Job Hook"] {
                let _ = crate::forge::gitlab_webhook::parse_gitlab_webhook(hook, &body);
            }
        }

        /// JSON-shaped noise reaches deeper into the parsers than random bytes.
        #[test]
        fn webhook_parsers_survive_json_shaped_noise(
            body in r#"\{("(events|action|target|alerts|status|labels|comment|pull_request|issue|body|number|tag|url|repository)": ?(\[|\{|"[a-z:/.0-9]{0,12}"|-?[0-9]{1,20}|null|true|\]|\}),?){0,40}"#,
            event in "(issue_comment|pull_request|check_run|status|ping|push)",
        ) {
            let _ = parse_registry_notification(body.as_bytes());
            let _ = parse_alertmanager_webhook(body.as_bytes());
            let _ = parse_webhook(&event, body.as_bytes());
        }

        /// The same for GitLab's hooks, with the field names its bodies carry.
        #[test]
        fn gitlab_webhook_parser_survives_json_shaped_noise(
            body in r#"\{("(object_kind|object_attributes|iid|state|action|source_branch|last_commit|id|note|noteable_type|merge_request|project|path_with_namespace|sha|user|username|author_id|status|builds)": ?(\[|\{|"[a-zA-Z:/.0-9 ]{0,12}"|-?[0-9]{1,20}|null|true|\]|\}),?){0,40}"#,
            hook in "(Merge Request Hook|Note Hook|Pipeline Hook|Job Hook|Push Hook)",
        ) {
            let _ = crate::forge::gitlab_webhook::parse_gitlab_webhook(&hook, body.as_bytes());
        }
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
