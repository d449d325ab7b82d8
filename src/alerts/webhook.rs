//! Alertmanager's webhook payload (version 4) as a reconcile trigger (pure parsing).
//!
//! A trigger says which alerts changed; it never decides anything. The controller
//! reconciles the policies a trigger [affects](AlertTrigger::affects), and those
//! reconciles read the gate afresh — so a forged, replayed or stale webhook costs a
//! reconcile, never a hold or a rollback.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::policy::values::AlertMatchers;

/// Whether a webhook (or one alert in it) reports firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerStatus {
    /// At least one alert fires (for the whole webhook) / this alert fires.
    Firing,
    /// Every alert resolved / this alert resolved.
    Resolved,
}

/// One alert of a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggeredAlert {
    /// The `alertname` label (`?` if missing).
    pub name: String,
    /// Firing or resolved.
    pub status: TriggerStatus,
    /// Every label.
    pub labels: BTreeMap<String, String>,
    /// Every annotation.
    pub annotations: BTreeMap<String, String>,
    /// When it started.
    pub starts_at: Option<DateTime<Utc>>,
    /// The link to the rule's expression.
    pub generator_url: Option<String>,
    /// Alertmanager's fingerprint of the label set.
    pub fingerprint: Option<String>,
}

/// "These alerts changed: reconcile the policies they concern now."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertTrigger {
    /// The Alertmanager receiver that sent it.
    pub receiver: String,
    /// Firing if any alert in it fires.
    pub status: TriggerStatus,
    /// The alerts of the group, firing and resolved.
    pub alerts: Vec<TriggeredAlert>,
    /// The labels the group is formed by.
    pub group_labels: BTreeMap<String, String>,
    /// The labels every alert of the group shares.
    pub common_labels: BTreeMap<String, String>,
    /// The sending Alertmanager's external URL.
    pub external_url: Option<String>,
}

impl AlertTrigger {
    /// The firing alerts.
    pub fn firing(&self) -> impl Iterator<Item = &TriggeredAlert> {
        self.alerts
            .iter()
            .filter(|a| a.status == TriggerStatus::Firing)
    }

    /// Whether a policy whose gate selects alerts with `matchers` should reconcile now:
    /// some firing alert of the webhook matches. (Resolved alerts never make anything
    /// happen sooner; the next poll sees them.)
    #[must_use]
    pub fn affects(&self, matchers: &AlertMatchers) -> bool {
        self.firing()
            .any(|a| matchers.matches(|name| a.labels.get(name).map(String::as_str)))
    }

    /// The distinct names of the firing alerts, sorted.
    #[must_use]
    pub fn firing_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.firing().map(|a| a.name.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Why a webhook body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    /// Not Alertmanager's webhook payload.
    #[error("not an Alertmanager webhook payload: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    #[serde(default)]
    receiver: String,
    status: TriggerStatus,
    alerts: Vec<PayloadAlert>,
    #[serde(default)]
    group_labels: BTreeMap<String, String>,
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    external_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayloadAlert {
    status: TriggerStatus,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// Reads an Alertmanager webhook body (`{"version": "4", "status": …, "alerts": […],
/// …}`). Fields not used are ignored, so newer payload versions keep working as long
/// as these keep their meaning.
pub fn parse_alertmanager_webhook(body: &[u8]) -> Result<AlertTrigger, WebhookError> {
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(AlertTrigger {
        receiver: payload.receiver,
        status: payload.status,
        alerts: payload
            .alerts
            .into_iter()
            .map(|a| TriggeredAlert {
                name: a
                    .labels
                    .get("alertname")
                    .cloned()
                    .unwrap_or_else(|| "?".into()),
                status: a.status,
                labels: a.labels,
                annotations: a.annotations,
                starts_at: a.starts_at,
                generator_url: non_empty(a.generator_url),
                fingerprint: non_empty(a.fingerprint),
            })
            .collect(),
        group_labels: payload.group_labels,
        common_labels: payload.common_labels,
        external_url: non_empty(payload.external_url),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload in the shape Alertmanager 0.25 sends (the integration tests check a
    /// real delivery).
    const PAYLOAD: &str = r#"{
      "receiver": "default", "status": "firing",
      "alerts": [
        {"status": "firing",
         "labels": {"alertname": "HookDown", "job": "prow-hook", "severity": "critical"},
         "annotations": {"summary": "hook is down", "runbook_url": "https://r/hook"},
         "startsAt": "2026-11-21T10:00:00.5Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up", "fingerprint": "0f1e"},
        {"status": "resolved",
         "labels": {"alertname": "CrierDown", "job": "prow-crier", "severity": "critical"},
         "annotations": {}, "startsAt": "2026-11-21T09:00:00Z",
         "endsAt": "2026-11-21T09:30:00Z", "generatorURL": "", "fingerprint": "aa"}
      ],
      "groupLabels": {"alertname": "HookDown"},
      "commonLabels": {"severity": "critical"},
      "commonAnnotations": {},
      "externalURL": "http://127.0.0.1:9093",
      "version": "4", "groupKey": "{}:{alertname=\"HookDown\"}", "truncatedAlerts": 0
    }"#;

    #[test]
    fn parses_firing_and_resolved_alerts() {
        let trigger = parse_alertmanager_webhook(PAYLOAD.as_bytes()).unwrap();
        assert_eq!(trigger.status, TriggerStatus::Firing);
        assert_eq!(trigger.receiver, "default");
        assert_eq!(
            trigger.external_url.as_deref(),
            Some("http://127.0.0.1:9093")
        );
        assert_eq!(trigger.alerts.len(), 2);
        assert_eq!(trigger.firing_names(), ["HookDown"]);
        let hook = &trigger.alerts[0];
        assert_eq!(hook.labels["job"], "prow-hook");
        assert_eq!(hook.annotations["runbook_url"], "https://r/hook");
        assert_eq!(hook.fingerprint.as_deref(), Some("0f1e"));
        assert_eq!(trigger.alerts[1].generator_url, None);
        assert_eq!(trigger.group_labels["alertname"], "HookDown");
        assert_eq!(trigger.common_labels["severity"], "critical");
    }

    #[test]
    fn affects_only_through_firing_alerts() {
        let trigger = parse_alertmanager_webhook(PAYLOAD.as_bytes()).unwrap();
        let m = |s: &str| s.parse::<AlertMatchers>().unwrap();
        assert!(trigger.affects(&m("{}")));
        assert!(trigger.affects(&m(r#"{job=~"prow-.*"}"#)));
        // CrierDown matches but is resolved.
        assert!(!trigger.affects(&m(r#"{job="prow-crier"}"#)));
        assert!(!trigger.affects(&m(r#"{severity="warning"}"#)));
    }

    #[test]
    fn malformed_payloads_are_refused() {
        for bad in [
            "not json",
            "{}",
            r#"{"status": "firing"}"#,
            r#"{"status": "exploded", "alerts": []}"#,
            r#"{"status": "firing", "alerts": [{"status": "firing"}]}"#,
        ] {
            assert!(
                matches!(
                    parse_alertmanager_webhook(bad.as_bytes()),
                    Err(WebhookError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }
}
