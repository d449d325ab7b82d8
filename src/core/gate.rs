//! The alert gate's verdict (pure types and selection). Three verdicts, not two: a
//! gate that could not be measured is `Unknown`, and Unknown never merges and never
//! promotes.
//!
//! [`Alert`] is what an alert source reported, normalised (Prometheus and Alertmanager
//! alike); [`select`] applies a policy's matchers to them, and [`GateReading`] keeps the
//! selected alerts next to the verdict so a hold or rollback reason can quote their
//! labels, summary, links and runbook.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use crate::policy::values::AlertMatchers;

/// What the alert gate says about the service right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateVerdict {
    /// No selected alert fires (or the policy has no gate).
    Clear,
    /// These selected alerts fire (their names).
    Firing(Vec<String>),
    /// The alert source could not be read, and why.
    Unknown(String),
}

impl GateVerdict {
    /// Whether it is safe to change production: only `Clear` is.
    #[must_use]
    pub fn is_clear(&self) -> bool {
        matches!(self, Self::Clear)
    }

    /// `Clear` for no alerts, else `Firing` with their distinct names, sorted.
    #[must_use]
    pub fn from_alerts(alerts: &[Alert]) -> Self {
        if alerts.is_empty() {
            return Self::Clear;
        }
        let mut names: Vec<String> = alerts.iter().map(|a| a.name.clone()).collect();
        names.sort();
        names.dedup();
        Self::Firing(names)
    }
}

/// A gate's verdict with the selected alerts behind it (empty unless Firing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateReading {
    /// Clear, Firing (the names of `alerts`) or Unknown.
    pub verdict: GateVerdict,
    /// The selected alerts, sorted by name, then labels.
    pub alerts: Vec<Alert>,
}

impl GateReading {
    /// A reading of the selected `alerts` (Clear when there are none).
    #[must_use]
    pub fn from_alerts(mut alerts: Vec<Alert>) -> Self {
        alerts.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        Self {
            verdict: GateVerdict::from_alerts(&alerts),
            alerts,
        }
    }

    /// A reading with no gate configured: Clear.
    #[must_use]
    pub fn clear() -> Self {
        Self {
            verdict: GateVerdict::Clear,
            alerts: Vec::new(),
        }
    }

    /// An unreadable gate: Unknown, and why.
    #[must_use]
    pub fn unknown(why: impl Into<String>) -> Self {
        Self {
            verdict: GateVerdict::Unknown(why.into()),
            alerts: Vec::new(),
        }
    }

    /// A reading known only by its verdict: firing alerts carry their names alone.
    #[must_use]
    pub fn of(verdict: GateVerdict) -> Self {
        let alerts = match &verdict {
            GateVerdict::Firing(names) => names.iter().map(|n| Alert::firing(n)).collect(),
            GateVerdict::Clear | GateVerdict::Unknown(_) => Vec::new(),
        };
        Self { verdict, alerts }
    }
}

/// Where an alert is in its life, as the source reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertState {
    /// The condition holds but not yet for the rule's `for:` (Prometheus only).
    Pending,
    /// Firing (Alertmanager: active, not silenced, not inhibited).
    Firing,
}

impl AlertState {
    /// `pending` or `firing`, as Prometheus spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
        }
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert as an alert source reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The `alertname` label (`?` if the source sent none).
    pub name: String,
    /// Every label, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// Every annotation (`summary`, `description`, `runbook_url`, …).
    pub annotations: BTreeMap<String, String>,
    /// Pending or firing.
    pub state: AlertState,
    /// Since when the alert is active (Prometheus `activeAt`, Alertmanager `startsAt`).
    pub active_at: Option<DateTime<Utc>>,
    /// The link to the rule's expression (Alertmanager's `generatorURL`).
    pub generator_url: Option<String>,
    /// Where a person sees this alert in the source's UI.
    pub source_url: Option<String>,
}

impl Alert {
    /// A firing alert named `name` with only its `alertname` label; for fakes and
    /// tests, refined with [`Alert::label`] and [`Alert::annotation`].
    #[must_use]
    pub fn firing(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            labels: BTreeMap::from([("alertname".to_owned(), name.to_owned())]),
            annotations: BTreeMap::new(),
            state: AlertState::Firing,
            active_at: None,
            generator_url: None,
            source_url: None,
        }
    }

    /// With the label `name=value`.
    #[must_use]
    pub fn label(mut self, name: &str, value: &str) -> Self {
        self.labels.insert(name.to_owned(), value.to_owned());
        self
    }

    /// With the annotation `name=value`.
    #[must_use]
    pub fn annotation(mut self, name: &str, value: &str) -> Self {
        self.annotations.insert(name.to_owned(), value.to_owned());
        self
    }

    /// In state `state`.
    #[must_use]
    pub fn in_state(mut self, state: AlertState) -> Self {
        self.state = state;
        self
    }

    /// The `summary` annotation.
    #[must_use]
    pub fn summary(&self) -> Option<&str> {
        self.annotations.get("summary").map(String::as_str)
    }

    /// The `description` annotation.
    #[must_use]
    pub fn description(&self) -> Option<&str> {
        self.annotations.get("description").map(String::as_str)
    }

    /// The `runbook_url` annotation.
    #[must_use]
    pub fn runbook_url(&self) -> Option<&str> {
        self.annotations.get("runbook_url").map(String::as_str)
    }

    /// Whether the policy's gate counts this alert: its labels match `matchers`, and it
    /// fires (or is pending and `include_pending` is set).
    #[must_use]
    pub fn counts(&self, matchers: &AlertMatchers, include_pending: bool) -> bool {
        let state_counts = match self.state {
            AlertState::Firing => true,
            AlertState::Pending => include_pending,
        };
        state_counts && matchers.matches(|name| self.labels.get(name).map(String::as_str))
    }
}

/// `Name{label="value", …} (state): summary; runbook: URL; source: URL` — labels in
/// name order, so the text is deterministic.
impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        write!(f, "{{{}}}", labels.join(", "))?;
        if self.state == AlertState::Pending {
            f.write_str(" (pending)")?;
        }
        if let Some(summary) = self.summary() {
            write!(f, ": {summary}")?;
        }
        if let Some(runbook) = self.runbook_url() {
            write!(f, "; runbook: {runbook}")?;
        }
        if let Some(link) = self.generator_url.as_ref().or(self.source_url.as_ref()) {
            write!(f, "; source: {link}")?;
        }
        Ok(())
    }
}

/// The alerts a gate counts (see [`Alert::counts`]), as a reading.
#[must_use]
pub fn select(alerts: Vec<Alert>, matchers: &AlertMatchers, include_pending: bool) -> GateReading {
    GateReading::from_alerts(
        alerts
            .into_iter()
            .filter(|a| a.counts(matchers, include_pending))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matchers(s: &str) -> AlertMatchers {
        s.parse().unwrap()
    }

    #[test]
    fn selection_by_matchers_and_state() {
        let alerts = vec![
            Alert::firing("HookDown")
                .label("job", "prow-hook")
                .label("severity", "critical"),
            Alert::firing("HookDown")
                .label("job", "other")
                .label("severity", "critical"),
            Alert::firing("HookSlow")
                .label("job", "prow-hook")
                .label("severity", "warning")
                .in_state(AlertState::Pending),
            Alert::firing("Info")
                .label("job", "prow-hook")
                .label("severity", "info"),
        ];
        let m = matchers(r#"{severity=~"critical|warning", job=~"prow-.*"}"#);
        for (include_pending, names) in [
            (false, vec!["HookDown"]),
            (true, vec!["HookDown", "HookSlow"]),
        ] {
            let reading = select(alerts.clone(), &m, include_pending);
            let want: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            assert_eq!(
                reading.verdict,
                GateVerdict::Firing(want),
                "{include_pending}"
            );
            assert!(
                reading
                    .alerts
                    .iter()
                    .all(|a| a.labels["job"] == "prow-hook")
            );
        }
        let none = select(alerts.clone(), &matchers(r#"{job="nope"}"#), true);
        assert_eq!(none, GateReading::clear());
        // `{}` selects every firing alert; names are distinct and sorted.
        let all = select(alerts, &AlertMatchers::default(), false);
        assert_eq!(
            all.verdict,
            GateVerdict::Firing(vec!["HookDown".into(), "Info".into()])
        );
        assert_eq!(all.alerts.len(), 3);
    }

    #[test]
    fn display_quotes_labels_summary_runbook_and_link() {
        let mut alert = Alert::firing("HookDown")
            .label("severity", "critical")
            .label("job", "hook")
            .annotation("summary", "hook is down")
            .annotation("runbook_url", "https://runbooks/hook-down");
        alert.generator_url = Some("http://prom/graph?g0.expr=up".into());
        assert_eq!(
            alert.to_string(),
            "HookDown{job=\"hook\", severity=\"critical\"}: hook is down; \
             runbook: https://runbooks/hook-down; source: http://prom/graph?g0.expr=up"
        );
        let pending = Alert::firing("X").in_state(AlertState::Pending);
        assert_eq!(pending.to_string(), "X{} (pending)");
        assert_eq!(pending.summary(), None);
    }

    #[test]
    fn verdicts() {
        assert!(GateVerdict::Clear.is_clear());
        assert!(!GateVerdict::Unknown("x".into()).is_clear());
        assert!(!GateVerdict::Firing(vec!["A".into()]).is_clear());
        assert_eq!(
            GateReading::unknown("down").verdict,
            GateVerdict::Unknown("down".into())
        );
    }
}
