//! Prometheus metrics (`/metrics`, prometheus-client).
//!
//! Decisions are counted from the policies' **history**, not from code paths: every
//! hold, unhold, bump, merge and rollback is a history entry with a sequence number,
//! and [`Metrics::observe_state`] counts the entries newer than the last it saw. That
//! way a hold placed with `autobump hold` by another process, or an effect executed
//! just before a crash, is counted exactly once, and metrics cannot drift from what
//! `autobump status` shows.
//!
//! Names (each counter is exposed with `_total`): `autobump_reconciles{policy,result}`,
//! `autobump_reconcile_errors{policy,reason}`, `autobump_reconcile_duration_seconds`,
//! `autobump_bumps_opened`, `autobump_merges{policy,kind}`,
//! `autobump_holds{policy,source}`, `autobump_unholds{policy,source}`,
//! `autobump_held`, `autobump_held_since_timestamp_seconds`, `autobump_rollbacks`,
//! `autobump_gate_verdicts{policy,verdict}`, `autobump_policy_load_errors`,
//! `autobump_policy_files_invalid`, `autobump_seconds_since_last_bump`,
//! `autobump_github_rate_limit_remaining`, `autobump_github_requests{kind}`,
//! `autobump_registry_requests{kind}`, `autobump_registry_backoffs`,
//! `autobump_registry_backoff_seconds`, `autobump_leader`.

use crate::policy::v1alpha1::Reason;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::clock::Clock;
use crate::core::gate::GateVerdict;
use crate::forge::ForgeStats;
use crate::registry::RegistryStats;
use crate::store::PolicyState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyResult {
    policy: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyReason {
    policy: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyKind {
    policy: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicySource {
    policy: String,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyVerdict {
    policy: String,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Every metric autobump exports, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<PolicyResult, Counter>,
    reconcile_errors: Family<PolicyReason, Counter>,
    reconcile_duration: Family<PolicyLabel, Histogram>,
    bumps_opened: Family<PolicyLabel, Counter>,
    merges: Family<PolicyKind, Counter>,
    holds: Family<PolicySource, Counter>,
    unholds: Family<PolicySource, Counter>,
    held: Family<PolicyLabel, Gauge>,
    held_since: Family<PolicyLabel, Gauge>,
    rollbacks: Family<PolicyLabel, Counter>,
    gate_verdicts: Family<PolicyVerdict, Counter>,
    policy_load_errors: Counter,
    policy_files_invalid: Gauge,
    leader: Gauge,
    live: Arc<Live>,
    /// The last history entry counted, per policy.
    cursors: Mutex<BTreeMap<String, u64>>,
    /// The last gate reading per policy (for the dashboard; not exported).
    gates: Mutex<BTreeMap<String, GateSeen>>,
}

/// A policy's last gate reading, as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateSeen {
    /// The verdict, with the firing alerts' names or why it is unknown.
    pub verdict: GateVerdict,
    /// When it was read.
    pub at: DateTime<Utc>,
}

/// What is read at scrape time: adapter counters and bump ages.
struct Live {
    clock: Arc<dyn Clock>,
    registry: OnceLock<Arc<RegistryStats>>,
    forge: OnceLock<Arc<ForgeStats>>,
    last_bump: Mutex<BTreeMap<String, DateTime<Utc>>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    /// All metrics at zero; `clock` dates the bump ages at scrape time.
    #[must_use]
    #[allow(clippy::too_many_lines)] // a flat list of registrations, one per metric
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<PolicyResult, Counter>::default();
        let reconcile_errors = Family::<PolicyReason, Counter>::default();
        let reconcile_duration =
            Family::<PolicyLabel, Histogram>::new_with_constructor(new_duration_histogram);
        let bumps_opened = Family::<PolicyLabel, Counter>::default();
        let merges = Family::<PolicyKind, Counter>::default();
        let holds = Family::<PolicySource, Counter>::default();
        let unholds = Family::<PolicySource, Counter>::default();
        let held = Family::<PolicyLabel, Gauge>::default();
        let held_since = Family::<PolicyLabel, Gauge>::default();
        let rollbacks = Family::<PolicyLabel, Counter>::default();
        let gate_verdicts = Family::<PolicyVerdict, Counter>::default();
        let policy_load_errors = Counter::default();
        let policy_files_invalid = Gauge::default();
        let leader = Gauge::default();
        registry.register(
            "autobump_reconciles",
            "Reconciles of a policy, by result (ok, error)",
            reconciles.clone(),
        );
        registry.register(
            "autobump_reconcile_errors",
            "Failed reconciles, by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "autobump_reconcile_duration_seconds",
            "How long one reconcile of a policy took",
            reconcile_duration.clone(),
        );
        registry.register(
            "autobump_bumps_opened",
            "Bumps opened or refreshed as a pull request, or pushed directly",
            bumps_opened.clone(),
        );
        registry.register(
            "autobump_merges",
            "Pull requests merged by autobump, by kind (bump, rollback)",
            merges.clone(),
        );
        registry.register(
            "autobump_holds",
            "Holds placed, by source (comment, cli, alert, automatic)",
            holds.clone(),
        );
        registry.register(
            "autobump_unholds",
            "Holds lifted, by source (comment, cli)",
            unholds.clone(),
        );
        registry.register("autobump_held", "1 while the policy is held", held.clone());
        registry.register(
            "autobump_held_since_timestamp_seconds",
            "When the hold in force was placed (Unix seconds; absent when not held)",
            held_since.clone(),
        );
        registry.register(
            "autobump_rollbacks",
            "Rollbacks performed (pushed, or merged as a rollback PR)",
            rollbacks.clone(),
        );
        registry.register(
            "autobump_gate_verdicts",
            "Gate readings, by verdict (clear, firing, unknown)",
            gate_verdicts.clone(),
        );
        registry.register(
            "autobump_policy_load_errors",
            "Policy file problems found while (re)loading, and loads that failed as a whole; the last good version stays in force",
            policy_load_errors.clone(),
        );
        registry.register(
            "autobump_policy_files_invalid",
            "Problems in the policy files as last loaded",
            policy_files_invalid.clone(),
        );
        registry.register(
            "autobump_leader",
            "1 while this instance acts (always 1 in standalone mode)",
            leader.clone(),
        );
        let live = Arc::new(Live {
            clock,
            registry: OnceLock::new(),
            forge: OnceLock::new(),
            last_bump: Mutex::new(BTreeMap::new()),
        });
        registry.register_collector(Box::new(LiveCollector(Arc::clone(&live))));
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            bumps_opened,
            merges,
            holds,
            unholds,
            held,
            held_since,
            rollbacks,
            gate_verdicts,
            policy_load_errors,
            policy_files_invalid,
            leader,
            live,
            cursors: Mutex::new(BTreeMap::new()),
            gates: Mutex::new(BTreeMap::new()),
        }
    }

    /// Reads the registry client's request counters at every scrape (first call wins).
    pub fn attach_registry(&self, stats: Arc<RegistryStats>) {
        let _ = self.live.registry.set(stats);
    }

    /// Reads the GitHub client's counters and rate-limit budget at every scrape.
    pub fn attach_forge(&self, stats: Arc<ForgeStats>) {
        let _ = self.live.forge.set(stats);
    }

    /// The text exposition format, as served on `/metrics`.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// One reconcile finished: `error` is the error kind when it failed.
    pub fn reconciled(&self, policy: &str, error: Option<&str>, took: Duration) {
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&PolicyResult {
                policy: policy.to_owned(),
                result,
            })
            .inc();
        if let Some(reason) = error {
            self.reconcile_errors
                .get_or_create(&PolicyReason {
                    policy: policy.to_owned(),
                    reason: reason.to_owned(),
                })
                .inc();
        }
        self.reconcile_duration
            .get_or_create(&PolicyLabel {
                policy: policy.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A gate reading (counted, and kept as the policy's last for [`Self::gates`]).
    pub fn gate(&self, policy: &str, verdict: &GateVerdict) {
        lock(&self.gates).insert(
            policy.to_owned(),
            GateSeen {
                verdict: verdict.clone(),
                at: self.live.clock.now(),
            },
        );
        let verdict = match verdict {
            GateVerdict::Clear => "clear",
            GateVerdict::Firing(_) => "firing",
            GateVerdict::Unknown(_) => "unknown",
        };
        self.gate_verdicts
            .get_or_create(&PolicyVerdict {
                policy: policy.to_owned(),
                verdict,
            })
            .inc();
    }

    /// Every policy's last gate reading since this process started.
    #[must_use]
    pub fn gates(&self) -> BTreeMap<String, GateSeen> {
        lock(&self.gates).clone()
    }

    /// The policy files were (re)loaded with `problems` problems.
    pub fn policies_loaded(&self, problems: usize) {
        self.policy_load_errors.inc_by(problems as u64);
        self.policy_files_invalid
            .set(i64::try_from(problems).unwrap_or(i64::MAX));
    }

    /// Loading the policy files failed as a whole (the last good ones stay).
    pub fn policy_load_failed(&self) {
        self.policy_load_errors.inc();
    }

    /// Whether this instance acts.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Brings the per-policy figures up to date with `state`: the hold gauges, the
    /// last bump, and one count per history entry newer than the last seen. The
    /// first observation of a policy only sets the cursor (entries written before
    /// this process started were counted by the process that wrote them).
    pub fn observe_state(&self, policy: &str, state: &PolicyState) {
        let label = PolicyLabel {
            policy: policy.to_owned(),
        };
        if let Some(h) = &state.hold {
            self.held.get_or_create(&label).set(1);
            self.held_since
                .get_or_create(&label)
                .set(h.since.timestamp());
        } else {
            self.held.get_or_create(&label).set(0);
            self.held_since.remove(&label);
        }
        if let Some(at) = state.last_bump {
            lock(&self.live.last_bump).insert(policy.to_owned(), at);
        }
        let newest = state.history.last().map_or(0, |e| e.seq);
        let previous = lock(&self.cursors).insert(policy.to_owned(), newest);
        let Some(previous) = previous else { return };
        for entry in state.history.iter().filter(|e| e.seq > previous) {
            self.count_entry(policy, entry.reason, &entry.message, state);
        }
    }

    fn count_entry(&self, policy: &str, reason: Reason, message: &str, state: &PolicyState) {
        let policy = policy.to_owned();
        match reason {
            Reason::BumpPushed | Reason::Pushed => {
                self.bumps_opened
                    .get_or_create(&PolicyLabel { policy })
                    .inc();
            }
            Reason::Merged => {
                self.merges
                    .get_or_create(&PolicyKind {
                        policy,
                        kind: "bump",
                    })
                    .inc();
            }
            Reason::RolledBack => {
                if message.contains("merged as PR") {
                    self.merges
                        .get_or_create(&PolicyKind {
                            policy: policy.clone(),
                            kind: "rollback",
                        })
                        .inc();
                }
                self.rollbacks.get_or_create(&PolicyLabel { policy }).inc();
            }
            Reason::Held => {
                let source = state.hold.as_ref().map_or("comment", |h| {
                    if h.by.starts_with("alert:") {
                        "alert"
                    } else if h.automatic {
                        "automatic"
                    } else if h.via.as_deref() == Some("cli") {
                        "cli"
                    } else {
                        "comment"
                    }
                });
                self.holds
                    .get_or_create(&PolicySource { policy, source })
                    .inc();
            }
            Reason::Unheld => {
                let source = if message.ends_with("(cli)") {
                    "cli"
                } else {
                    "comment"
                };
                self.unholds
                    .get_or_create(&PolicySource { policy, source })
                    .inc();
            }
            // Counted elsewhere (deploys and promotions by the status gauges), or
            // not a counted event.
            Reason::Deployed
            | Reason::Promoted
            | Reason::RollbackRequested
            | Reason::NothingToRollBack
            | Reason::ClusterPatched
            | Reason::ClusterPatchFailed => {}
        }
    }
}

fn new_duration_histogram() -> Histogram {
    // 10 ms … ~80 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// Renders the figures read at scrape time.
#[derive(Debug)]
struct LiveCollector(Arc<Live>);

impl Collector for LiveCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let live = &self.0;
        let now = live.clock.now();
        {
            let ages = lock(&live.last_bump);
            if !ages.is_empty() {
                let mut family = encoder.encode_descriptor(
                    "autobump_seconds_since_last_bump",
                    "Seconds since the policy's last bump was opened or pushed",
                    None,
                    MetricType::Gauge,
                )?;
                for (policy, at) in ages.iter() {
                    #[allow(clippy::cast_precision_loss)] // seconds fit f64 exactly
                    let age = (now - *at).num_milliseconds().max(0) as f64 / 1000.0;
                    let label = PolicyLabel {
                        policy: policy.clone(),
                    };
                    ConstGauge::new(age).encode(family.encode_family(&label)?)?;
                }
            }
        }
        if let Some(stats) = live.registry.get() {
            let s = stats.snapshot();
            let mut family = encoder.encode_descriptor(
                "autobump_registry_requests",
                "HTTP requests sent to registries, by kind",
                None,
                MetricType::Counter,
            )?;
            for (kind, n) in [
                ("tags", s.tags),
                ("manifest_head", s.manifest_head),
                ("manifest_get", s.manifest_get),
                ("blob", s.blob),
                ("token", s.token),
            ] {
                ConstCounter::new(n).encode(family.encode_family(&KindLabel { kind })?)?;
            }
            ConstCounter::new(s.retries).encode(encoder.encode_descriptor(
                "autobump_registry_backoffs",
                "Registry requests retried after a back-off (429, 5xx, timeouts)",
                None,
                MetricType::Counter,
            )?)?;
            ConstCounter::new(s.backoff.as_secs_f64()).encode(encoder.encode_descriptor(
                "autobump_registry_backoff_seconds",
                "Time spent waiting before registry retries",
                None,
                MetricType::Counter,
            )?)?;
        }
        if let Some(stats) = live.forge.get() {
            let s = stats.snapshot();
            if let Some(remaining) = s.rate_limit_remaining {
                ConstGauge::new(i64::try_from(remaining).unwrap_or(i64::MAX)).encode(
                    encoder.encode_descriptor(
                        "autobump_github_rate_limit_remaining",
                        "GitHub API requests left in the current rate-limit window",
                        None,
                        MetricType::Gauge,
                    )?,
                )?;
            }
            let mut family = encoder.encode_descriptor(
                "autobump_github_requests",
                "GitHub API requests sent, by kind",
                None,
                MetricType::Counter,
            )?;
            for kind in crate::forge::RequestKind::ALL {
                ConstCounter::new(s.requests_of(kind)).encode(family.encode_family(
                    &KindLabel {
                        kind: kind.as_str(),
                    },
                )?)?;
            }
            ConstCounter::new(s.not_modified).encode(encoder.encode_descriptor(
                "autobump_github_not_modified",
                "GitHub reads answered 304 Not Modified (free of rate-limit cost)",
                None,
                MetricType::Counter,
            )?)?;
            ConstCounter::new(s.from_webhooks).encode(encoder.encode_descriptor(
                "autobump_github_reads_from_webhooks",
                "GitHub reads not sent because webhook deliveries proved them unchanged",
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::policy::v1alpha1::Hold;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn metrics() -> Metrics {
        Metrics::new(Arc::new(ManualClock::new(at("2026-11-21T12:00:00Z"))))
    }

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn history_entries_are_counted_once_and_only_when_new() {
        let m = metrics();
        let mut s = PolicyState::default();
        s.record(at("2026-11-21T09:00:00Z"), Reason::BumpPushed, "1 image");
        // Written before this process started: not counted again.
        m.observe_state("web", &s);
        assert!(line(&m.render(), "autobump_bumps_opened_total{").is_none());

        s.record(at("2026-11-21T10:00:00Z"), Reason::BumpPushed, "1 image");
        s.hold = Some(Hold {
            by: "alert:HighErrorRate".into(),
            since: at("2026-11-21T10:05:00Z"),
            reason: "HighErrorRate firing".into(),
            via: Some("gate".into()),
            automatic: true,
        });
        s.record(at("2026-11-21T10:05:00Z"), Reason::Held, "held by alert");
        s.record(
            at("2026-11-21T10:05:01Z"),
            Reason::RolledBack,
            "1.1 -> 1.0 merged as PR #7 (abc)",
        );
        s.last_bump = Some(at("2026-11-21T10:00:00Z"));
        m.observe_state("web", &s);
        m.observe_state("web", &s);
        let text = m.render();
        assert_eq!(
            line(&text, "autobump_bumps_opened_total{"),
            Some(r#"autobump_bumps_opened_total{policy="web"} 1"#)
        );
        assert_eq!(
            line(&text, "autobump_holds_total{"),
            Some(r#"autobump_holds_total{policy="web",source="alert"} 1"#)
        );
        assert_eq!(
            line(&text, "autobump_merges_total{"),
            Some(r#"autobump_merges_total{policy="web",kind="rollback"} 1"#)
        );
        assert_eq!(
            line(&text, "autobump_rollbacks_total{"),
            Some(r#"autobump_rollbacks_total{policy="web"} 1"#)
        );
        assert_eq!(
            line(&text, "autobump_held{"),
            Some(r#"autobump_held{policy="web"} 1"#)
        );
        assert!(
            text.contains(&format!(
                r#"autobump_held_since_timestamp_seconds{{policy="web"}} {}"#,
                at("2026-11-21T10:05:00Z").timestamp()
            )),
            "{text}"
        );
        assert!(
            text.contains(r#"autobump_seconds_since_last_bump{policy="web"} 7200.0"#),
            "{text}"
        );

        s.hold = None;
        s.record(
            at("2026-11-21T11:00:00Z"),
            Reason::Unheld,
            "hold by alert:HighErrorRate lifted by user:alice (cli)",
        );
        m.observe_state("web", &s);
        let text = m.render();
        assert_eq!(
            line(&text, "autobump_unholds_total{"),
            Some(r#"autobump_unholds_total{policy="web",source="cli"} 1"#)
        );
        assert_eq!(
            line(&text, "autobump_held{"),
            Some(r#"autobump_held{policy="web"} 0"#)
        );
        assert!(!text.contains("autobump_held_since_timestamp_seconds{"));
    }

    #[test]
    fn reconciles_gate_readings_and_load_problems_are_counted() {
        let m = metrics();
        m.reconciled("web", None, Duration::from_millis(30));
        m.reconciled("web", Some("forge_rate_limited"), Duration::from_millis(20));
        m.gate("web", &GateVerdict::Unknown("down".into()));
        m.policies_loaded(2);
        m.policies_loaded(0);
        m.set_leader(true);
        let text = m.render();
        for expected in [
            r#"autobump_reconciles_total{policy="web",result="ok"} 1"#,
            r#"autobump_reconciles_total{policy="web",result="error"} 1"#,
            r#"autobump_reconcile_errors_total{policy="web",reason="forge_rate_limited"} 1"#,
            r#"autobump_reconcile_duration_seconds_count{policy="web"} 2"#,
            r#"autobump_gate_verdicts_total{policy="web",verdict="unknown"} 1"#,
            "autobump_policy_load_errors_total 2",
            "autobump_policy_files_invalid 0",
            "autobump_leader 1",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected}\n{text}");
        }
    }

    #[test]
    fn adapter_counters_are_read_at_scrape_time() {
        let m = metrics();
        let stats = Arc::new(RegistryStats::default());
        m.attach_registry(Arc::clone(&stats));
        stats.count_request(crate::registry::RequestKind::Tags);
        let text = m.render();
        assert!(
            text.contains(r#"autobump_registry_requests_total{kind="tags"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("autobump_registry_backoffs_total 0"),
            "{text}"
        );
    }
}
