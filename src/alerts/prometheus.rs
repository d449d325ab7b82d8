//! Prometheus' active alerts (`GET /api/v1/alerts`) through `prometheus-http-query`
//! (does I/O).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use url::Url;

use super::{AlertsError, SourceKind, display_base, excerpt, join_path};
use crate::core::gate::{Alert, AlertState};
use crate::error_chain;

/// One Prometheus server's alerts.
#[derive(Clone)]
pub struct PrometheusAlerts {
    client: prometheus_http_query::Client,
    /// For messages: the base URL without credentials.
    url: String,
    /// Where a person sees the alerts: `BASE/alerts`.
    alerts_page: String,
    timeout: Duration,
}

impl std::fmt::Debug for PrometheusAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client itself has no Debug; its base URL is `url` (credentials removed).
        f.debug_struct("PrometheusAlerts")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PrometheusAlerts {
    /// Prometheus at `base` (`http://prometheus:9090`, or with a path prefix), reached
    /// with `http` (which should have its own timeouts); `timeout` bounds each read as
    /// a whole.
    pub fn new(http: reqwest::Client, base: &Url, timeout: Duration) -> Result<Self, AlertsError> {
        let url = display_base(base);
        // prometheus-http-query appends `/api/v1/…` to a non-root path itself.
        let mut api_base = base.clone();
        let trimmed = api_base.path().trim_end_matches('/').to_owned();
        api_base.set_path(if trimmed.is_empty() { "/" } else { &trimmed });
        let client = prometheus_http_query::Client::from(http, api_base.as_str()).map_err(|e| {
            AlertsError::Config {
                detail: format!("Prometheus URL {url}: {}", error_chain(&e)),
            }
        })?;
        let mut page = join_path(base, "alerts");
        let _ = page.set_username("");
        let _ = page.set_password(None);
        Ok(Self {
            client,
            alerts_page: page.to_string(),
            url,
            timeout,
        })
    }

    /// The pending and firing alerts, unfiltered.
    pub async fn active(&self) -> Result<Vec<Alert>, AlertsError> {
        let alerts = tokio::time::timeout(self.timeout, self.client.alerts())
            .await
            .map_err(|_| AlertsError::Timeout {
                kind: SourceKind::Prometheus,
                url: self.url.clone(),
                after: self.timeout,
            })?
            .map_err(|e| self.error(&e))?;
        Ok(alerts
            .iter()
            .filter_map(|a| {
                let state = if a.state().is_firing() {
                    AlertState::Firing
                } else if a.state().is_pending() {
                    AlertState::Pending
                } else {
                    return None;
                };
                let labels: BTreeMap<String, String> = a
                    .labels()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let active = a.active_at();
                Some(Alert {
                    name: labels
                        .get("alertname")
                        .cloned()
                        .unwrap_or_else(|| "?".into()),
                    annotations: a
                        .annotations()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    labels,
                    state,
                    active_at: DateTime::<Utc>::from_timestamp(
                        active.unix_timestamp(),
                        active.nanosecond(),
                    ),
                    generator_url: None,
                    source_url: Some(self.alerts_page.clone()),
                })
            })
            .collect())
    }

    fn error(&self, e: &prometheus_http_query::Error) -> AlertsError {
        let kind = SourceKind::Prometheus;
        let url = self.url.clone();
        match e {
            prometheus_http_query::Error::Prometheus(api) => AlertsError::Api {
                kind,
                url,
                error_type: api.error_type().to_string(),
                message: api.message().to_owned(),
            },
            prometheus_http_query::Error::Client(client) => match client.inner() {
                Some(inner) if inner.is_timeout() => AlertsError::Timeout {
                    kind,
                    url,
                    after: self.timeout,
                },
                Some(inner) if inner.is_connect() => AlertsError::Connection {
                    kind,
                    url,
                    detail: error_chain(inner),
                },
                // A non-JSON error answer: the status is all there is.
                Some(inner) if inner.status().is_some() => AlertsError::Status {
                    kind,
                    url,
                    status: inner.status().map_or(0, |s| s.as_u16()),
                    body: excerpt(&client.to_string()),
                },
                Some(inner) if inner.is_decode() || inner.is_body() => {
                    AlertsError::InvalidResponse {
                        kind,
                        url,
                        detail: error_chain(e),
                    }
                }
                Some(inner) => AlertsError::Connection {
                    kind,
                    url,
                    detail: error_chain(inner),
                },
                // The crate's own complaint (e.g. not JSON at all).
                None => AlertsError::InvalidResponse {
                    kind,
                    url,
                    detail: error_chain(e),
                },
            },
            other => AlertsError::Config {
                detail: format!("Prometheus {url}: {}", error_chain(other)),
            },
        }
    }
}
