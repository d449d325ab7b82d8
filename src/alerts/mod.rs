//! The alert gate's adapter (does I/O: HTTP to Prometheus and Alertmanager).
//!
//! * [`AlertSource`]: the narrow trait the controller uses — "the active alerts at this
//!   gate's source". [`AlertsClient`] is the real one: it reads
//!   [Prometheus](PrometheusAlerts) (`/api/v1/alerts`, through `prometheus-http-query`)
//!   or [Alertmanager](AlertmanagerAlerts) (`/api/v2/alerts`), whichever the policy's
//!   `gate` names.
//! * [`read_gate`] / [`gate`]: turn a source and a policy's [`GateSpec`] into a
//!   [`GateReading`] / [`GateVerdict`]. No gate configured → Clear; the source could not
//!   be read (unreachable, timeout, non-2xx, malformed body, API error) → **Unknown**,
//!   never Clear; otherwise the alerts the policy's matchers select
//!   ([`crate::core::gate::select`], pure) → Firing, or Clear if there are none.
//!   Pending alerts (Prometheus only: Alertmanager receives firing alerts only) count
//!   only with `includePending`. Through Alertmanager, silenced and inhibited alerts do
//!   not count.
//! * [`parse_alertmanager_webhook`]: Alertmanager's webhook payload (version 4) as an
//!   [`AlertTrigger`], for [`crate::http::alertmanager_webhook`]. A trigger only makes
//!   the controller reconcile the affected policies *now* instead of at the next poll:
//!   the decision is made from a fresh [`read_gate`], so a forged, replayed or stale
//!   webhook alone can never cause a hold or a rollback.
//!
//! Every request has a timeout ([`AlertsConfig::request_timeout`]) and a body cap.

mod alertmanager;
mod error;
mod prometheus;
mod webhook;

use std::time::Duration;

use url::Url;

pub use self::alertmanager::AlertmanagerAlerts;
pub use self::error::{AlertsError, SourceKind};
pub use self::prometheus::PrometheusAlerts;
pub use self::webhook::{
    AlertTrigger, TriggerStatus, TriggeredAlert, WebhookError, parse_alertmanager_webhook,
};
use crate::core::gate::select;
pub use crate::core::gate::{Alert, AlertState, GateReading, GateVerdict};
pub use crate::install_crypto_provider;
use crate::policy::v1alpha1::GateSpec;
use crate::policy::values::HttpUrl;

/// What the gate needs from an alert source.
pub trait AlertSource: Send + Sync {
    /// The alerts active at the source `gate` names (`prometheus` or `alertmanager`):
    /// firing ones, and pending ones where the source knows them (Prometheus). Not yet
    /// filtered by the gate's matchers or `includePending` — [`read_gate`] does that, so
    /// a fake source only has to say what the server would.
    ///
    /// Through Alertmanager, silenced and inhibited alerts are left out here: they are
    /// not active from the gate's point of view.
    fn active(
        &self,
        gate: &GateSpec,
    ) -> impl Future<Output = Result<Vec<Alert>, AlertsError>> + Send;
}

/// Reads the gate: Clear without a gate, Unknown (with the error's text) when the
/// source cannot be read, else the selected alerts (Firing) or Clear.
pub async fn read_gate(source: &impl AlertSource, spec: Option<&GateSpec>) -> GateReading {
    let Some(spec) = spec else {
        return GateReading::clear();
    };
    match source.active(spec).await {
        Ok(alerts) => {
            let reading = select(alerts, &spec.alerts, spec.include_pending);
            tracing::debug!(verdict = ?reading.verdict, "alert gate read");
            reading
        }
        Err(e) => {
            tracing::warn!(error = %e, kind = e.metric_label(), retryable = e.is_retryable(), "alert gate unknown");
            GateReading::unknown(e.to_string())
        }
    }
}

/// [`read_gate`]'s verdict alone.
pub async fn gate(source: &impl AlertSource, spec: Option<&GateSpec>) -> GateVerdict {
    read_gate(source, spec).await.verdict
}

/// How the alert sources are reached.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// The longest a whole request may take (connect, send, read the body). Default 10 s.
    pub request_timeout: Duration,
    /// The longest a connection may take to open. Default 3 s.
    pub connect_timeout: Duration,
    /// The largest response body read (Alertmanager). Default 16 MiB.
    pub max_body: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_body: 16 << 20,
        }
    }
}

/// The real [`AlertSource`]: one HTTP connection pool for every policy's Prometheus or
/// Alertmanager. Loopback sources are reached without a proxy; others honour the
/// usual `HTTPS_PROXY`/`NO_PROXY` environment.
#[derive(Debug, Clone)]
pub struct AlertsClient {
    proxied: reqwest::Client,
    direct: reqwest::Client,
    config: AlertsConfig,
}

impl AlertsClient {
    /// Builds the HTTP clients (installing the crypto provider first).
    pub fn new(config: AlertsConfig) -> Result<Self, AlertsError> {
        install_crypto_provider();
        let build = |direct: bool| {
            let mut builder = reqwest::Client::builder()
                .user_agent(concat!("autobump/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(config.connect_timeout)
                .timeout(config.request_timeout);
            if direct {
                builder = builder.no_proxy();
            }
            builder.build().map_err(|e| AlertsError::Config {
                detail: format!("building the HTTP client: {}", crate::error_chain(&e)),
            })
        };
        Ok(Self {
            proxied: build(false)?,
            direct: build(true)?,
            config,
        })
    }

    /// The Prometheus at `url`.
    pub fn prometheus(&self, url: &HttpUrl) -> Result<PrometheusAlerts, AlertsError> {
        PrometheusAlerts::new(
            self.http_for(url.url()),
            url.url(),
            self.config.request_timeout,
        )
    }

    /// The Alertmanager at `url`.
    #[must_use]
    pub fn alertmanager(&self, url: &HttpUrl) -> AlertmanagerAlerts {
        AlertmanagerAlerts::new(
            self.http_for(url.url()),
            url.url(),
            self.config.request_timeout,
            self.config.max_body,
        )
    }

    fn http_for(&self, url: &Url) -> reqwest::Client {
        if is_loopback(url) {
            self.direct.clone()
        } else {
            self.proxied.clone()
        }
    }
}

impl AlertSource for AlertsClient {
    async fn active(&self, gate: &GateSpec) -> Result<Vec<Alert>, AlertsError> {
        match (&gate.prometheus, &gate.alertmanager) {
            (Some(url), None) => self.prometheus(url)?.active().await,
            (None, Some(url)) => self.alertmanager(url).active().await,
            (Some(_), Some(_)) => Err(AlertsError::Config {
                detail: "the gate names both `prometheus` and `alertmanager`".into(),
            }),
            (None, None) => Err(AlertsError::Config {
                detail: "the gate names neither `prometheus` nor `alertmanager`".into(),
            }),
        }
    }
}

/// `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The base URL for messages and links: no user name or password, no query or
/// fragment, and a path without a trailing `/` (`http://prom:9090`, `http://x/prom`).
fn display_base(url: &Url) -> String {
    let mut clean = url.clone();
    // Both fail only for URLs that cannot have credentials; nothing to strip then.
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.set_query(None);
    clean.set_fragment(None);
    clean.as_str().trim_end_matches('/').to_owned()
}

/// `url` with `path` (no leading `/`) appended to its path.
fn join_path(url: &Url, path: &str) -> Url {
    let mut joined = url.clone();
    let base = url.path().trim_end_matches('/');
    joined.set_path(&format!("{base}/{path}"));
    joined.set_query(None);
    joined.set_fragment(None);
    joined
}

/// The first 200 characters of a response body, on one line.
fn excerpt(body: &str) -> String {
    let one_line: String = body
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    one_line
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(Result<Vec<Alert>, AlertsError>);

    impl AlertSource for Fake {
        async fn active(&self, _gate: &GateSpec) -> Result<Vec<Alert>, AlertsError> {
            self.0.clone()
        }
    }

    fn spec(yaml: &str) -> GateSpec {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[tokio::test]
    async fn verdicts_from_a_fake_source() {
        let gate_spec = spec("prometheus: http://prom:9090\nalerts: '{job=\"hook\"}'\n");
        let hook = Alert::firing("HookDown").label("job", "hook");
        let other = Alert::firing("OtherDown").label("job", "other");
        let firing = Fake(Ok(vec![hook.clone(), other]));
        // No gate: Clear, whatever the source says.
        assert_eq!(gate(&firing, None).await, GateVerdict::Clear);
        let reading = read_gate(&firing, Some(&gate_spec)).await;
        assert_eq!(
            reading.verdict,
            GateVerdict::Firing(vec!["HookDown".into()])
        );
        assert_eq!(reading.alerts, [hook]);
        assert_eq!(
            gate(&Fake(Ok(vec![])), Some(&gate_spec)).await,
            GateVerdict::Clear
        );
        let down = Fake(Err(AlertsError::Connection {
            kind: SourceKind::Prometheus,
            url: "http://prom:9090".into(),
            detail: "connection refused".into(),
        }));
        assert_eq!(
            gate(&down, Some(&gate_spec)).await,
            GateVerdict::Unknown(
                "Prometheus http://prom:9090: unreachable: connection refused".into()
            )
        );
    }

    #[tokio::test]
    async fn a_gate_without_exactly_one_source_is_unknown() {
        let client = AlertsClient::new(AlertsConfig::default()).unwrap();
        let mut both = spec("prometheus: http://127.0.0.1:1\n");
        both.alertmanager = Some("http://127.0.0.1:2".parse().unwrap());
        let mut neither = both.clone();
        neither.prometheus = None;
        neither.alertmanager = None;
        for s in [both, neither] {
            let GateVerdict::Unknown(why) = gate(&client, Some(&s)).await else {
                panic!("not Unknown");
            };
            assert!(why.contains("misconfigured"), "{why}");
        }
    }

    #[test]
    fn urls() {
        let url = Url::parse("http://user:secret@127.0.0.1:9090/prom/?x=1#f").unwrap();
        assert_eq!(display_base(&url), "http://127.0.0.1:9090/prom");
        assert_eq!(
            join_path(&url, "api/v1/alerts").as_str(),
            "http://user:secret@127.0.0.1:9090/prom/api/v1/alerts"
        );
        assert!(is_loopback(&url));
        assert!(is_loopback(&Url::parse("http://localhost:9093").unwrap()));
        assert!(is_loopback(&Url::parse("http://[::1]:9093").unwrap()));
        assert!(!is_loopback(&Url::parse("http://prometheus:9090").unwrap()));
        assert_eq!(excerpt("  a\nb  "), "a b");
    }
}
