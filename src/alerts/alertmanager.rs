//! Alertmanager's active alerts (`GET /api/v2/alerts`) (does I/O).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use url::Url;

use super::{AlertsError, SourceKind, display_base, excerpt, join_path};
use crate::core::gate::{Alert, AlertState};
use crate::error_chain;

/// One Alertmanager's alerts.
#[derive(Debug, Clone)]
pub struct AlertmanagerAlerts {
    http: reqwest::Client,
    endpoint: Url,
    /// For messages and links: the base URL without credentials.
    url: String,
    timeout: Duration,
    max_body: usize,
}

/// A `gettableAlert` of Alertmanager's API v2, the parts used.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Gettable {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    status: Status,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    /// `unprocessed`, `active` or `suppressed`.
    state: String,
    #[serde(default)]
    silenced_by: Vec<String>,
    #[serde(default)]
    inhibited_by: Vec<String>,
}

impl AlertmanagerAlerts {
    /// Alertmanager at `base` (`http://alertmanager:9093`, or with a path prefix),
    /// reached with `http`; `timeout` bounds each read as a whole, `max_body` its size.
    #[must_use]
    pub fn new(http: reqwest::Client, base: &Url, timeout: Duration, max_body: usize) -> Self {
        let mut endpoint = join_path(base, "api/v2/alerts");
        // Server-side filters; the state is checked again on the answer.
        endpoint
            .query_pairs_mut()
            .append_pair("active", "true")
            .append_pair("silenced", "false")
            .append_pair("inhibited", "false");
        Self {
            http,
            endpoint,
            url: display_base(base),
            timeout,
            max_body,
        }
    }

    /// The firing alerts that are neither silenced nor inhibited. Alerts Alertmanager
    /// has not processed yet count (their silences are not known to apply).
    pub async fn active(&self) -> Result<Vec<Alert>, AlertsError> {
        let body = tokio::time::timeout(self.timeout, self.fetch())
            .await
            .map_err(|_| AlertsError::Timeout {
                kind: SourceKind::Alertmanager,
                url: self.url.clone(),
                after: self.timeout,
            })??;
        self.parse(&body)
    }

    /// Reads an `/api/v2/alerts` answer, leaving out suppressed alerts.
    fn parse(&self, body: &[u8]) -> Result<Vec<Alert>, AlertsError> {
        let alerts: Vec<Gettable> = serde_json::from_slice(body).map_err(|e| {
            self.invalid(format!(
                "not a list of alerts ({e}): {}",
                excerpt(&String::from_utf8_lossy(body))
            ))
        })?;
        Ok(alerts
            .into_iter()
            .filter(|a| {
                a.status.state != "suppressed"
                    && a.status.silenced_by.is_empty()
                    && a.status.inhibited_by.is_empty()
            })
            .map(|a| {
                let name = a
                    .labels
                    .get("alertname")
                    .cloned()
                    .unwrap_or_else(|| "?".into());
                let filter: String = url::form_urlencoded::byte_serialize(
                    format!("{{alertname=\"{name}\"}}").as_bytes(),
                )
                .collect();
                Alert {
                    source_url: Some(format!("{}/#/alerts?filter={filter}", self.url)),
                    name,
                    labels: a.labels,
                    annotations: a.annotations,
                    state: AlertState::Firing,
                    active_at: a.starts_at,
                    generator_url: a.generator_url.filter(|u| !u.is_empty()),
                }
            })
            .collect())
    }

    async fn fetch(&self) -> Result<Vec<u8>, AlertsError> {
        let mut response = self
            .http
            .get(self.endpoint.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if body.len() + chunk.len() > self.max_body {
                return Err(self.invalid(format!("response over {} bytes", self.max_body)));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(AlertsError::Status {
                kind: SourceKind::Alertmanager,
                url: self.url.clone(),
                status: status.as_u16(),
                body: excerpt(&String::from_utf8_lossy(&body)),
            });
        }
        Ok(body)
    }

    fn transport(&self, e: &reqwest::Error) -> AlertsError {
        if e.is_timeout() {
            AlertsError::Timeout {
                kind: SourceKind::Alertmanager,
                url: self.url.clone(),
                after: self.timeout,
            }
        } else {
            AlertsError::Connection {
                kind: SourceKind::Alertmanager,
                url: self.url.clone(),
                detail: error_chain(e),
            }
        }
    }

    fn invalid(&self, detail: String) -> AlertsError {
        AlertsError::InvalidResponse {
            kind: SourceKind::Alertmanager,
            url: self.url.clone(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> AlertmanagerAlerts {
        AlertmanagerAlerts::new(
            {
                crate::install_crypto_provider();
                reqwest::Client::new()
            },
            &Url::parse("http://u:p@127.0.0.1:9093/am/").unwrap(),
            Duration::from_secs(1),
            1024,
        )
    }

    #[test]
    fn endpoint_and_filters() {
        let am = source();
        assert_eq!(
            am.endpoint.as_str(),
            "http://u:p@127.0.0.1:9093/am/api/v2/alerts?active=true&silenced=false&inhibited=false"
        );
        assert_eq!(am.url, "http://127.0.0.1:9093/am");
    }

    #[test]
    fn suppressed_alerts_do_not_count() {
        let alert = |name: &str, state: &str, silenced: &[&str], inhibited: &[&str]| {
            serde_json::json!({
                "labels": {"alertname": name, "job": "hook"},
                "annotations": {"summary": "s"},
                "startsAt": "2026-11-21T10:00:00.123Z",
                "endsAt": "2026-11-21T10:05:00Z",
                "updatedAt": "2026-11-21T10:00:01Z",
                "generatorURL": "http://prom/graph?g0.expr=up",
                "fingerprint": "abc",
                "receivers": [{"name": "default"}],
                "status": {"state": state, "silencedBy": silenced, "inhibitedBy": inhibited}
            })
        };
        let body = serde_json::json!([
            alert("Active", "active", &[], &[]),
            alert("New", "unprocessed", &[], &[]),
            alert("Silenced", "suppressed", &["s1"], &[]),
            alert("Inhibited", "suppressed", &[], &["f1"]),
            alert("Odd", "active", &["s1"], &[]),
        ]);
        let got = source().parse(body.to_string().as_bytes()).unwrap();
        let names: Vec<&str> = got.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["Active", "New"]);
        assert_eq!(got[0].summary(), Some("s"));
        assert_eq!(
            got[0].active_at.unwrap().to_rfc3339(),
            "2026-11-21T10:00:00.123+00:00"
        );
        assert_eq!(
            got[0].source_url.as_deref(),
            Some("http://127.0.0.1:9093/am/#/alerts?filter=%7Balertname%3D%22Active%22%7D")
        );
        for bad in ["{}", "not json", r#"[{"labels": {}}]"#] {
            let e = source().parse(bad.as_bytes()).unwrap_err();
            assert_eq!(e.metric_label(), "invalid_response", "{bad}: {e}");
        }
    }
}
