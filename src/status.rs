//! `autobump status`: one row per policy from its state (and, when the policy is
//! known, its schedule) — pure; the caller reads the state file or the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::policy::Policy;
use crate::policy::v1alpha1::{Hold, Reason, RollbackRequest};
use crate::store::PolicyState;

/// What `autobump status` shows for one policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRow {
    /// The policy.
    pub policy: String,
    /// The versions deployed now (summary).
    pub current: Option<String>,
    /// The last known-good versions (summary).
    pub last_known_good: Option<String>,
    /// The hold in force.
    pub hold: Option<Hold>,
    /// When the next bump may happen (`now` when it may now); `None` when the policy
    /// is unknown (state only) or no opening was found.
    pub next_window: Option<DateTime<Utc>>,
    /// When the last bump was opened or pushed.
    pub last_bump: Option<DateTime<Utc>>,
    /// The last rollback: when, and what it said.
    pub last_rollback: Option<(DateTime<Utc>, String)>,
    /// A rollback asked for with `autobump rollback` that the controller has not acted
    /// on yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_request: Option<RollbackRequest>,
    /// Whether a policy file defines the policy (false: state of a removed policy).
    pub defined: bool,
    /// With `promotion.from`: the upstream policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// With `promotion.from`: the newest release proven upstream that this policy
    /// does not run yet (what waits to be promoted), and when it became known-good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<(String, DateTime<Utc>)>,
}

/// One row per policy that has a definition or a state, sorted by name.
#[must_use]
pub fn rows(
    policies: &[impl std::borrow::Borrow<Policy>],
    states: &BTreeMap<String, PolicyState>,
    now: DateTime<Utc>,
) -> Vec<StatusRow> {
    let keyed: Vec<(String, &Policy)> = policies
        .iter()
        .map(|p| (p.borrow().name().to_owned(), p.borrow()))
        .collect();
    rows_keyed(&keyed, states, now)
}

/// [`rows`] with each policy under a key of the caller's (in-cluster:
/// `namespace/name`), matching the keys of `states`.
#[must_use]
pub fn rows_keyed(
    policies: &[(String, &Policy)],
    states: &BTreeMap<String, PolicyState>,
    now: DateTime<Utc>,
) -> Vec<StatusRow> {
    let by_name: BTreeMap<&str, &Policy> = policies.iter().map(|(k, p)| (k.as_str(), *p)).collect();
    let names: BTreeSet<&str> = by_name
        .keys()
        .copied()
        .chain(states.keys().map(String::as_str))
        .collect();
    let empty = PolicyState::default();
    names
        .into_iter()
        .map(|name| {
            let state = states.get(name).unwrap_or(&empty);
            let policy = by_name.get(name);
            let upstream = policy.and_then(|p| p.spec.promotion.as_ref()).map(|pr| {
                match name.rsplit_once('/') {
                    // In-cluster keys are `namespace/name`: the upstream is in the
                    // same namespace.
                    Some((ns, _)) => format!("{ns}/{}", pr.from),
                    None => pr.from.to_string(),
                }
            });
            let waiting = upstream.as_ref().and_then(|u| {
                let up = states.get(u)?;
                crate::core::promotion::waiting(up, state, state.current.as_ref())
                    .map(|p| (p.release.summary.clone(), p.known_good_at))
            });
            StatusRow {
                policy: name.to_owned(),
                current: state.current.as_ref().map(|r| r.summary.clone()),
                last_known_good: state.last_known_good.as_ref().map(|r| r.summary.clone()),
                hold: state.hold.clone(),
                next_window: policy.and_then(|p| {
                    p.spec
                        .schedule
                        .to_schedule()
                        .next_open(now, state.last_bump)
                }),
                last_bump: state.last_bump,
                last_rollback: state
                    .history
                    .iter()
                    .rev()
                    .find(|e| e.reason == Reason::RolledBack)
                    .map(|e| (e.at, e.message.clone())),
                rollback_request: state.rollback_request.clone(),
                defined: policy.is_some(),
                upstream,
                waiting,
            }
        })
        .collect()
}

/// A duration as people say it: `45s`, `12m`, `3h10m`, `2d4h`.
#[must_use]
pub fn human(d: TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

/// The rows as an aligned text table.
#[must_use]
pub fn table(rows: &[StatusRow], now: DateTime<Utc>) -> String {
    let header = [
        "POLICY",
        "CURRENT",
        "KNOWN-GOOD",
        "HELD",
        "NEXT WINDOW",
        "LAST BUMP",
        "LAST ROLLBACK",
    ];
    let dash = || "-".to_owned();
    // The promotion column only when some policy promotes from another.
    let promotes = rows.iter().any(|r| r.upstream.is_some());
    let mut header: Vec<&str> = header.to_vec();
    if promotes {
        header.push("PROMOTION");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let held = r.hold.as_ref().map_or_else(dash, |h| {
                format!(
                    "by {} {} ago: {}",
                    h.by,
                    human(now - h.since),
                    one_line(&h.reason, 60)
                )
            });
            let next = match r.next_window {
                Some(t) if t <= now => "open now".to_owned(),
                Some(t) => format!("in {} ({})", human(t - now), t.format("%Y-%m-%d %H:%M UTC")),
                None if r.defined => "none found".to_owned(),
                None => "(no policy file)".to_owned(),
            };
            let mut row = vec![
                r.policy.clone(),
                r.current.clone().unwrap_or_else(dash),
                r.last_known_good.clone().unwrap_or_else(dash),
                held,
                next,
                r.last_bump
                    .map_or_else(dash, |t| format!("{} ago", human(now - t))),
                match (&r.rollback_request, &r.last_rollback) {
                    (Some(q), _) => format!(
                        "requested by {} {} ago, pending: {}",
                        q.by,
                        human(now - q.since),
                        one_line(&q.reason, 60)
                    ),
                    (None, Some((t, m))) => {
                        format!("{} ago: {}", human(now - *t), one_line(m, 60))
                    }
                    (None, None) => dash(),
                },
            ];
            if promotes {
                row.push(match (&r.upstream, &r.waiting) {
                    (None, _) => dash(),
                    (Some(u), None) => format!("from {u}: nothing waiting"),
                    (Some(u), Some((v, t))) => format!(
                        "from {u}: {v} waiting (known-good there {} ago)",
                        human(now - *t)
                    ),
                });
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[String]| {
        let mut text = String::new();
        for (i, (c, w)) in cols.iter().zip(widths.iter().copied()).enumerate() {
            if i + 1 == cols.len() {
                text.push_str(c);
            } else {
                let _ = write!(text, "{c:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in &cells {
        line(row);
    }
    out
}

fn one_line(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or_default();
    if first.chars().count() > max {
        let cut: String = first.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        first.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::v1alpha1::Release;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn release(summary: &str) -> Release {
        Release {
            summary: summary.into(),
            images: Vec::new(),
            since: at("2026-11-20T10:00:00Z"),
            commit: None,
        }
    }

    /// The example pair in `policies/`: production shows its upstream and what waits
    /// there; staging (no upstream) shows no promotion.
    #[test]
    fn status_shows_each_policys_upstream_and_what_waits_to_be_promoted() {
        use crate::core::promotion::{Conditions, record};
        use crate::policy::v1alpha1::ImageVersion;
        let now = at("2026-12-02T12:00:00Z");
        let mut policies = Vec::new();
        for file in ["podinfo-staging.yaml", "podinfo-production.yaml"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("policies")
                .join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let (mut loaded, problems) = crate::policy::load::load_str(&path, &text);
            assert!(problems.is_empty(), "{problems:?}");
            policies.append(&mut loaded);
        }
        let podinfo = |tag: &str| Release {
            images: vec![ImageVersion {
                image: "ghcr.io/stefanprodan/podinfo".into(),
                tag: tag.into(),
                digest: None,
            }],
            ..release(tag)
        };
        let conditions = Conditions::of(&policies[0].spec);
        let mut staging = PolicyState::default();
        record(
            &mut staging,
            conditions.proof(&podinfo("6.7.0"), None, at("2026-12-01T10:00:00Z")),
        );
        record(
            &mut staging,
            conditions.proof(&podinfo("6.7.1"), None, at("2026-12-02T11:00:00Z")),
        );
        let production = PolicyState {
            current: Some(podinfo("6.7.0")),
            ..PolicyState::default()
        };
        let states = BTreeMap::from([
            ("podinfo-staging".to_owned(), staging),
            ("podinfo-production".to_owned(), production),
        ]);
        let rows = rows(&policies, &states, now);
        let prod = rows
            .iter()
            .find(|r| r.policy == "podinfo-production")
            .unwrap();
        assert_eq!(prod.upstream.as_deref(), Some("podinfo-staging"));
        assert_eq!(
            prod.waiting,
            Some(("6.7.1".to_owned(), at("2026-12-02T11:00:00Z")))
        );
        let text = table(&rows, now);
        assert!(
            text.lines().next().unwrap().ends_with("PROMOTION"),
            "{text}"
        );
        assert!(
            text.contains("from podinfo-staging: 6.7.1 waiting (known-good there 1h ago)"),
            "{text}"
        );
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["upstream"], "podinfo-staging");
        assert!(json[1].get("upstream").is_none(), "{json}");
    }

    #[test]
    fn a_held_rolled_back_policy_reads_at_a_glance() {
        let now = at("2026-11-21T12:00:00Z");
        let mut s = PolicyState {
            current: Some(release("1.0.0")),
            last_known_good: Some(release("1.0.0")),
            hold: Some(Hold {
                by: "alert:HighErrorRate".into(),
                since: at("2026-11-21T11:30:00Z"),
                reason: "HighErrorRate firing after 1.1.0\nsecond line".into(),
                via: Some("gate".into()),
                automatic: true,
            }),
            last_bump: Some(at("2026-11-21T09:00:00Z")),
            ..PolicyState::default()
        };
        s.record(
            at("2026-11-21T11:30:05Z"),
            Reason::RolledBack,
            "1.1.0 -> 1.0.0 pushed as abc",
        );
        let states = BTreeMap::from([("web".to_owned(), s)]);
        let rows = rows(&[] as &[Policy], &states, now);
        assert_eq!(rows.len(), 1);
        assert!(!rows[0].defined);
        let text = table(&rows, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("POLICY  CURRENT  KNOWN-GOOD  HELD"),
            "{text}"
        );
        for cell in [
            "web",
            "1.0.0",
            "by alert:HighErrorRate 30m ago: HighErrorRate firing after 1.1.0",
            "(no policy file)",
            "3h ago",
            "29m ago: 1.1.0 -> 1.0.0 pushed as abc",
        ] {
            assert!(lines[1].contains(cell), "{cell:?} in\n{text}");
        }
        assert!(!text.contains("second line"));
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["hold"]["by"], "alert:HighErrorRate");
        assert_eq!(json[0]["lastRollback"][1], "1.1.0 -> 1.0.0 pushed as abc");
    }

    #[test]
    fn a_pending_rollback_request_shows() {
        let now = at("2026-11-21T12:00:00Z");
        let s = PolicyState {
            current: Some(release("1.1.0")),
            last_known_good: Some(release("1.0.0")),
            rollback_request: Some(RollbackRequest {
                by: "cli:bob".into(),
                since: at("2026-11-21T11:55:00Z"),
                reason: "p99 doubled".into(),
                via: Some("cli".into()),
            }),
            ..PolicyState::default()
        };
        let states = BTreeMap::from([("web".to_owned(), s)]);
        let rows = rows(&[] as &[Policy], &states, now);
        let text = table(&rows, now);
        assert!(
            text.contains("requested by cli:bob 5m ago, pending: p99 doubled"),
            "{text}"
        );
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["rollbackRequest"]["by"], "cli:bob");
    }

    #[test]
    fn durations_read_like_people_say_them() {
        for (secs, text) in [
            (45, "45s"),
            (720, "12m"),
            (3600, "1h"),
            (11_400, "3h10m"),
            (86_400 * 2 + 3600 * 4 + 60, "2d4h"),
            (86_400, "1d"),
        ] {
            assert_eq!(human(TimeDelta::seconds(secs)), text);
        }
    }
}
