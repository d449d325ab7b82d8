//! The status conditions of an `Autobump` object (pure).
//!
//! Four conditions, computed after every reconcile from the policy state, the
//! reconcile's outcome and `now`:
//! * `Ready`: the last reconcile succeeded (`Reconciled`), or why it failed;
//! * `Held`: a hold is in force (`ManualHold`, `AutomaticHold`) or not (`NotHeld`);
//! * `Baking`: the deployed version bakes (`Baking`, or `BakePaused` while the gate
//!   is not clear), or not (`KnownGood`, `Deploying`, `NothingDeployed`);
//! * `RolledBack`: autobump rolled back and nothing was promoted since
//!   (`RolledBack`), or not (`Promoted`, `NoRollback`).
//!
//! Following the Kubernetes conventions, `lastTransitionTime` changes only when a
//! condition's `status` does; reasons are PascalCase and messages never empty (the
//! v1.20 API server rejects empty required strings). Conditions of other types,
//! written by someone else, are kept.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::core::rollout::same_versions;
use crate::policy::v1alpha1::{Condition, Reason};
use crate::store::PolicyState;

/// The condition types autobump writes, in the order written.
pub const TYPES: [&str; 4] = ["Ready", "Held", "Baking", "RolledBack"];

/// How the last reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastReconcile<'a> {
    /// It succeeded; `summary` says what it did or waits for.
    Succeeded {
        /// One line (may be empty: a default is written).
        summary: &'a str,
    },
    /// It failed.
    Failed {
        /// A PascalCase reason.
        reason: &'a str,
        /// What went wrong.
        message: &'a str,
    },
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: if message.is_empty() {
            "-".to_owned()
        } else {
            message
        },
        // Set by `compute`.
        last_transition_time: DateTime::UNIX_EPOCH,
        observed_generation: None,
    }
}

fn ready(last: LastReconcile<'_>) -> Condition {
    match last {
        LastReconcile::Succeeded { summary } => condition(
            "Ready",
            true,
            "Reconciled",
            if summary.is_empty() {
                "reconciled".to_owned()
            } else {
                summary.to_owned()
            },
        ),
        LastReconcile::Failed { reason, message } => condition(
            "Ready",
            false,
            if reason.is_empty() {
                "ReconcileFailed"
            } else {
                reason
            },
            message.to_owned(),
        ),
    }
}

fn held(state: &PolicyState) -> Condition {
    match &state.hold {
        Some(h) => {
            let mut message = format!(
                "held by {} since {}: {}",
                h.by,
                h.since.to_rfc3339(),
                h.reason
            );
            if let Some(via) = h.via.as_deref().filter(|v| !v.is_empty()) {
                let _ = write!(message, " (via {via})");
            }
            condition(
                "Held",
                true,
                if h.automatic {
                    "AutomaticHold"
                } else {
                    "ManualHold"
                },
                message,
            )
        }
        None => condition("Held", false, "NotHeld", "no hold in force".to_owned()),
    }
}

fn baking(state: &PolicyState) -> Condition {
    if let Some(bake) = &state.bake {
        return match bake.clear_since {
            Some(since) => condition(
                "Baking",
                true,
                "Baking",
                format!(
                    "{} bakes; the gate has been clear since {}",
                    bake.version,
                    since.to_rfc3339()
                ),
            ),
            None => condition(
                "Baking",
                true,
                "BakePaused",
                format!(
                    "{} bakes, but the gate is not clear (bake restarted {} times)",
                    bake.version, bake.restarts
                ),
            ),
        };
    }
    match (&state.current, &state.last_known_good) {
        (Some(current), Some(good)) if same_versions(current, good) => condition(
            "Baking",
            false,
            "KnownGood",
            format!("{} is the last known-good version", current.summary),
        ),
        (Some(current), _) => condition(
            "Baking",
            false,
            "Deploying",
            format!("{} is deploying; its bake has not started", current.summary),
        ),
        (None, _) => condition(
            "Baking",
            false,
            "NothingDeployed",
            "no deployed version of the policy's images seen yet".to_owned(),
        ),
    }
}

fn rolled_back(state: &PolicyState) -> Condition {
    let last = |reason: Reason| state.history.iter().rposition(|e| e.reason == reason);
    match (last(Reason::RolledBack), last(Reason::Promoted)) {
        (Some(rb), promoted) if promoted.is_none_or(|p| p < rb) => {
            let entry = &state.history[rb];
            condition(
                "RolledBack",
                true,
                "RolledBack",
                format!(
                    "rolled back at {}: {}",
                    entry.at.to_rfc3339(),
                    entry.message
                ),
            )
        }
        (Some(_), Some(p)) => condition(
            "RolledBack",
            false,
            "Promoted",
            format!(
                "a version was promoted after the last rollback: {}",
                state.history[p].message
            ),
        ),
        _ => condition(
            "RolledBack",
            false,
            "NoRollback",
            "no rollback in the recent history".to_owned(),
        ),
    }
}

/// The conditions to write: autobump's four (in [`TYPES`] order) computed from
/// `state` and `last`, each keeping its `lastTransitionTime` from `previous` when its
/// status is unchanged (else `now`), all with `generation`; then the conditions of
/// other types from `previous`, unchanged.
#[must_use]
pub fn compute(
    state: &PolicyState,
    last: LastReconcile<'_>,
    previous: &[Condition],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = [ready(last), held(state), baking(state), rolled_back(state)]
        .into_iter()
        .map(|mut c| {
            c.last_transition_time = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .map_or(now, |p| p.last_transition_time);
            c.observed_generation = generation;
            c
        })
        .collect();
    out.extend(
        previous
            .iter()
            .filter(|p| !TYPES.contains(&p.type_.as_str()))
            .cloned(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rollout::BakeProgress;
    use crate::policy::v1alpha1::{Hold, ImageVersion, Release};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn release(tag: &str) -> Release {
        Release {
            summary: tag.into(),
            images: vec![ImageVersion {
                image: "gcr.io/k8s-prow/hook".into(),
                tag: tag.into(),
                digest: None,
            }],
            since: at("2026-11-21T09:00:00Z"),
            commit: None,
        }
    }

    /// A state builder: `state().held(..).baking(..)`.
    struct S(PolicyState);

    fn state() -> S {
        S(PolicyState::default())
    }

    impl S {
        fn held(mut self, automatic: bool) -> Self {
            self.0.hold = Some(Hold {
                by: "alert:HookDown".into(),
                since: at("2026-11-21T10:00:00Z"),
                reason: "HookDown firing".into(),
                via: Some("gate".into()),
                automatic,
            });
            self
        }
        fn current(mut self, tag: &str) -> Self {
            self.0.current = Some(release(tag));
            self
        }
        fn known_good(mut self, tag: &str) -> Self {
            self.0.last_known_good = Some(release(tag));
            self
        }
        fn baking(mut self, clear: bool) -> Self {
            self.0.bake = Some(BakeProgress {
                version: "v2".into(),
                clear_since: clear.then(|| at("2026-11-21T10:05:00Z")),
                restarts: 1,
            });
            self
        }
        fn history(mut self, reason: &str) -> Self {
            self.0.record(
                at("2026-11-21T10:10:00Z"),
                reason.parse().unwrap(),
                format!("{reason} happened"),
            );
            self
        }
    }

    fn find<'a>(cs: &'a [Condition], t: &str) -> &'a Condition {
        cs.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn each_state_gives_its_status_and_reason() {
        let ok = LastReconcile::Succeeded { summary: "" };
        let now = at("2026-11-21T11:00:00Z");
        // (state, condition type, status, reason)
        let cases = [
            (state(), "Ready", "True", "Reconciled"),
            (state(), "Held", "False", "NotHeld"),
            (state().held(false), "Held", "True", "ManualHold"),
            (state().held(true), "Held", "True", "AutomaticHold"),
            (state(), "Baking", "False", "NothingDeployed"),
            (state().current("v2"), "Baking", "False", "Deploying"),
            (
                state().current("v2").baking(true),
                "Baking",
                "True",
                "Baking",
            ),
            (
                state().current("v2").baking(false),
                "Baking",
                "True",
                "BakePaused",
            ),
            (
                state().current("v1").known_good("v1"),
                "Baking",
                "False",
                "KnownGood",
            ),
            (state(), "RolledBack", "False", "NoRollback"),
            (
                state().history("RolledBack"),
                "RolledBack",
                "True",
                "RolledBack",
            ),
            (
                state()
                    .history("Promoted")
                    .history("RolledBack")
                    .history("Deployed"),
                "RolledBack",
                "True",
                "RolledBack",
            ),
            (
                state().history("RolledBack").history("Promoted"),
                "RolledBack",
                "False",
                "Promoted",
            ),
        ];
        for (s, t, status, reason) in cases {
            let cs = compute(&s.0, ok, &[], Some(3), now);
            let c = find(&cs, t);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                (status, reason),
                "{t} of {:?}",
                s.0
            );
            assert!(!c.message.is_empty());
            assert_eq!(c.observed_generation, Some(3));
            assert_eq!(c.last_transition_time, now);
        }
        let cs = compute(&state().0, ok, &[], None, now);
        assert_eq!(
            cs.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            TYPES
        );
    }

    #[test]
    fn a_failure_makes_ready_false_with_its_reason() {
        let cs = compute(
            &state().0,
            LastReconcile::Failed {
                reason: "RateLimited",
                message: "GitHub rate limit",
            },
            &[],
            None,
            at("2026-11-21T11:00:00Z"),
        );
        let ready = find(&cs, "Ready");
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            ("False", "RateLimited", "GitHub rate limit")
        );
    }

    #[test]
    fn transition_times_move_only_when_the_status_does() {
        let t0 = at("2026-11-21T10:00:00Z");
        let t1 = at("2026-11-21T10:01:00Z");
        let t2 = at("2026-11-21T10:02:00Z");
        let first = compute(
            &state().0,
            LastReconcile::Succeeded { summary: "idle" },
            &[],
            Some(1),
            t0,
        );
        // Same statuses, other message and generation: times kept.
        let second = compute(
            &state().0,
            LastReconcile::Succeeded {
                summary: "waiting for the window",
            },
            &first,
            Some(2),
            t1,
        );
        assert!(second.iter().all(|c| c.last_transition_time == t0));
        assert_eq!(find(&second, "Ready").message, "waiting for the window");
        // Held flips: only Held moves.
        let third = compute(
            &state().held(false).0,
            LastReconcile::Succeeded { summary: "idle" },
            &second,
            Some(2),
            t2,
        );
        for c in &third {
            let want = if c.type_ == "Held" { t2 } else { t0 };
            assert_eq!(c.last_transition_time, want, "{}", c.type_);
        }
    }

    #[test]
    fn foreign_conditions_are_kept() {
        let foreign = Condition {
            type_: "Reviewed".into(),
            status: "True".into(),
            reason: "LooksGood".into(),
            message: "by alice".into(),
            last_transition_time: at("2026-11-20T10:00:00Z"),
            observed_generation: None,
        };
        let cs = compute(
            &state().0,
            LastReconcile::Succeeded { summary: "" },
            std::slice::from_ref(&foreign),
            None,
            at("2026-11-21T10:00:00Z"),
        );
        assert_eq!(cs.len(), 5);
        assert_eq!(cs[4], foreign);
    }
}
