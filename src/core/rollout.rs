//! Bake, known-good, and when to roll back (pure).
//!
//! After a version is deployed it **bakes** for `gate.bake`, starting `deployDelay`
//! after it counted as deployed (its commit reached the base branch, or — in-cluster —
//! its rollout completed):
//! * the gate Clear for the whole bake → the version is **promoted** to last
//!   known-good;
//! * the gate Firing during the bake → **roll back** to the last known-good versions
//!   (and hold the policy automatically);
//! * the gate Unknown during the bake → no promotion: the bake restarts when the gate
//!   is readable again (the quiet period must be *observed*, not assumed), and the
//!   decision says so;
//! * a rollout that failed (`ProgressDeadlineExceeded`) is a bad version like a firing
//!   alert.
//!
//! A version that already is the last known-good does not bake again. Without a known-
//! good version there is nothing to roll back to: the policy is held instead.
//!
//! A bad rollout always leaves an automatic hold ([`automatic_hold`]), which only a
//! person with write permission may lift: a person's hold in force is replaced by it
//! (and named in its reason), so whoever may lift that person's hold cannot resume
//! deploys after a rollback by themselves.
//!
//! Reconciles observe the gate at instants, so "clear for the whole bake" means: every
//! observation for at least `bake`, starting with the first after the deploy delay,
//! was Clear. The caller keeps [`BakeProgress`]
//! between reconciles (in the store), and this module updates it.

use chrono::{DateTime, TimeDelta, Utc};

use super::gate::GateVerdict;
use crate::policy::v1alpha1::{Hold, Release};

/// What is known about the deployed version's rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    /// Not complete yet (standalone: the deploy delay has not passed).
    Progressing,
    /// Every workload runs the new version.
    Complete,
    /// The rollout failed (e.g. `ProgressDeadlineExceeded`).
    Failed,
}

pub use crate::policy::v1alpha1::BakeProgress;

/// Everything the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct RolloutInputs<'a> {
    /// The version deployed now and when it counted as deployed.
    pub deployed: Option<(&'a Release, DateTime<Utc>)>,
    /// The rollout's state (standalone: `Complete` once the commit is on the base branch).
    pub rollout: RolloutState,
    /// The last known-good versions.
    pub last_known_good: Option<&'a Release>,
    /// The bake so far.
    pub progress: Option<&'a BakeProgress>,
    /// `gate.bake`.
    pub bake: TimeDelta,
    /// `rollout.deployDelay`.
    pub deploy_delay: TimeDelta,
    /// The gate now.
    pub gate: &'a GateVerdict,
    /// Now.
    pub now: DateTime<Utc>,
}

/// What to do about the deployed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutDecision {
    /// Nothing deployed, or it is the known-good version already.
    Idle,
    /// Waiting for the rollout or the deploy delay; the bake has not started.
    Deploying,
    /// Baking: keep this progress; `remaining` until promotion if it stays Clear.
    Baking {
        /// The progress to store.
        progress: BakeProgress,
        /// Time left (the full bake while the gate is Unknown).
        remaining: TimeDelta,
        /// The gate is Unknown: the bake is on pause and will restart.
        paused: Option<String>,
    },
    /// Clear for the whole bake: this becomes the last known-good.
    Promote,
    /// Roll back to the last known-good, and hold.
    Rollback {
        /// Why (the firing alerts, or the failed rollout).
        reason: String,
    },
    /// Bad, but there is no known-good version to go back to: hold only.
    HoldWithoutRollback {
        /// Why.
        reason: String,
    },
}

impl RolloutDecision {
    /// A PascalCase reason, for Events and status.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::Deploying => "Deploying",
            Self::Baking {
                paused: Some(_), ..
            } => "BakePaused",
            Self::Baking { .. } => "Baking",
            Self::Promote => "Promoted",
            Self::Rollback { .. } => "RollingBack",
            Self::HoldWithoutRollback { .. } => "NoKnownGood",
        }
    }
}

/// Decides what to do about the deployed version. See the module docs.
#[must_use]
pub fn decide(inputs: &RolloutInputs<'_>) -> RolloutDecision {
    let Some((release, deployed_at)) = inputs.deployed else {
        return RolloutDecision::Idle;
    };
    if inputs
        .last_known_good
        .is_some_and(|good| same_versions(good, release))
    {
        return RolloutDecision::Idle;
    }
    let bad = |reason: String| match inputs.last_known_good {
        Some(_) => RolloutDecision::Rollback { reason },
        None => RolloutDecision::HoldWithoutRollback { reason },
    };
    // Progress of another version does not count.
    let previous = inputs
        .progress
        .filter(|p| p.version == release.summary)
        .cloned();
    // The gate Unknown pauses the bake and restarts it: no reading of it may be skipped
    // because the rollout is (again) unready or the deploy delay is running.
    let paused = |why: &String| RolloutDecision::Baking {
        progress: BakeProgress {
            version: release.summary.clone(),
            clear_since: None,
            restarts: previous.as_ref().map_or(0, |p| p.restarts)
                + u32::from(previous.as_ref().is_some_and(|p| p.clear_since.is_some())),
        },
        remaining: inputs.bake,
        paused: Some(why.clone()),
    };
    let bake_started = previous.as_ref().is_some_and(|p| p.clear_since.is_some());
    let bake_start = deployed_at + inputs.deploy_delay;
    let not_yet = match inputs.rollout {
        RolloutState::Failed => {
            return bad(format!("the rollout of {} failed", release.summary));
        }
        // A version still rolling out can already hurt: firing alerts count.
        RolloutState::Progressing => true,
        // (The bake's clock starts at the first Clear observation at or after `bake_start`.)
        RolloutState::Complete => inputs.now < bake_start,
    };
    if not_yet {
        return match inputs.gate {
            GateVerdict::Firing(alerts) => bad(firing_reason(&release.summary, alerts)),
            // A rollout that became unready mid-bake (a node drained) does not hide an
            // Unknown gate: the bake restarts, as it would with the rollout complete.
            GateVerdict::Unknown(why) if bake_started => paused(why),
            _ => RolloutDecision::Deploying,
        };
    }
    match inputs.gate {
        GateVerdict::Firing(alerts) => bad(firing_reason(&release.summary, alerts)),
        GateVerdict::Unknown(why) => paused(why),
        GateVerdict::Clear => {
            // The quiet period starts at the first Clear observation: time nobody
            // observed (the controller down, the gate Unknown) does not count.
            let clear_since = previous
                .as_ref()
                .and_then(|p| p.clear_since)
                .unwrap_or(inputs.now);
            let baked = inputs.now - clear_since;
            if baked >= inputs.bake {
                RolloutDecision::Promote
            } else {
                RolloutDecision::Baking {
                    progress: BakeProgress {
                        version: release.summary.clone(),
                        clear_since: Some(clear_since),
                        restarts: previous.map_or(0, |p| p.restarts),
                    },
                    remaining: inputs.bake - baked,
                    paused: None,
                }
            }
        }
    }
}

fn firing_reason(version: &str, alerts: &[String]) -> String {
    format!(
        "alerts fired after {version} was deployed: {}",
        alerts.join(", ")
    )
}

/// Whether two releases name the same image versions (order and times aside).
#[must_use]
pub fn same_versions(a: &Release, b: &Release) -> bool {
    let key = |r: &Release| {
        let mut v: Vec<(String, String)> = r
            .images
            .iter()
            .map(|i| (i.image.clone(), i.tag.clone()))
            .collect();
        v.sort();
        v
    };
    key(a) == key(b)
}

/// The hold to put in force when a rollout turned out bad: an automatic one by `by`
/// (`alert:…` or `autobump`) with `reason`, since `now` — or `None` when `current` is
/// automatic already (it stays, with its first reason). A person's hold in force is
/// replaced: the new reason ends with who placed it, when, from where and why, since
/// lifting the automatic hold lifts both.
#[must_use]
pub fn automatic_hold(
    current: Option<&Hold>,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Option<Hold> {
    let mut reason = reason.to_owned();
    match current {
        Some(h) if h.automatic => return None,
        Some(h) => {
            use std::fmt::Write as _;
            // Writing into a String cannot fail.
            let _ = write!(
                reason,
                "\n\nThis replaces the hold {} placed at {}{}: {}. Lifting this hold lifts both.",
                h.by,
                h.since.to_rfc3339(),
                h.via
                    .as_deref()
                    .map(|v| format!(" via {v}"))
                    .unwrap_or_default(),
                h.reason
            );
        }
        None => {}
    }
    Some(Hold {
        by: by.to_owned(),
        since: now,
        reason,
        via: Some("gate".into()),
        automatic: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::v1alpha1::ImageVersion;

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
            since: at("2026-11-21T10:00:00Z"),
            commit: None,
        }
    }

    struct World {
        deployed: Release,
        deployed_at: DateTime<Utc>,
        rollout: RolloutState,
        good: Option<Release>,
        progress: Option<BakeProgress>,
        gate: GateVerdict,
    }

    impl World {
        fn new() -> Self {
            Self {
                deployed: release("v2"),
                deployed_at: at("2026-11-21T10:00:00Z"),
                rollout: RolloutState::Complete,
                good: Some(release("v1")),
                progress: None,
                gate: GateVerdict::Clear,
            }
        }
        fn at(&self, now: &str) -> RolloutDecision {
            decide(&RolloutInputs {
                deployed: Some((&self.deployed, self.deployed_at)),
                rollout: self.rollout,
                last_known_good: self.good.as_ref(),
                progress: self.progress.as_ref(),
                bake: TimeDelta::hours(1),
                deploy_delay: TimeDelta::minutes(5),
                gate: &self.gate,
                now: at(now),
            })
        }
        /// Runs a decision and keeps its progress, like the controller does.
        fn step(&mut self, now: &str, gate: GateVerdict) -> RolloutDecision {
            self.gate = gate;
            let d = self.at(now);
            if let RolloutDecision::Baking { progress, .. } = &d {
                self.progress = Some(progress.clone());
            }
            d
        }
    }

    #[test]
    fn clear_for_the_whole_bake_promotes() {
        let mut w = World::new();
        assert_eq!(
            w.step("2026-11-21T10:02:00Z", GateVerdict::Clear),
            RolloutDecision::Deploying
        );
        let RolloutDecision::Baking { remaining, .. } =
            w.step("2026-11-21T10:35:00Z", GateVerdict::Clear)
        else {
            panic!("expected baking");
        };
        assert_eq!(
            remaining,
            TimeDelta::hours(1),
            "the bake starts at the first observation"
        );
        let RolloutDecision::Baking { remaining, .. } =
            w.step("2026-11-21T11:05:00Z", GateVerdict::Clear)
        else {
            panic!("expected baking");
        };
        assert_eq!(remaining, TimeDelta::minutes(30));
        assert_eq!(
            w.step("2026-11-21T11:35:00Z", GateVerdict::Clear),
            RolloutDecision::Promote
        );
    }

    #[test]
    fn firing_during_the_bake_rolls_back() {
        let mut w = World::new();
        w.step("2026-11-21T10:10:00Z", GateVerdict::Clear);
        assert_eq!(
            w.step(
                "2026-11-21T10:20:00Z",
                GateVerdict::Firing(vec!["HookDown".into()])
            ),
            RolloutDecision::Rollback {
                reason: "alerts fired after v2 was deployed: HookDown".into()
            }
        );
        // Also while still rolling out, and during the deploy delay.
        let mut w = World::new();
        w.rollout = RolloutState::Progressing;
        assert!(matches!(
            w.step(
                "2026-11-21T10:01:00Z",
                GateVerdict::Firing(vec!["X".into()])
            ),
            RolloutDecision::Rollback { .. }
        ));
        let mut w = World::new();
        assert!(matches!(
            w.step(
                "2026-11-21T10:01:00Z",
                GateVerdict::Firing(vec!["X".into()])
            ),
            RolloutDecision::Rollback { .. }
        ));
    }

    #[test]
    fn unknown_pauses_and_restarts_the_bake() {
        let mut w = World::new();
        w.step("2026-11-21T10:05:00Z", GateVerdict::Clear);
        let d = w.step(
            "2026-11-21T10:50:00Z",
            GateVerdict::Unknown("timeout".into()),
        );
        assert_eq!(d.reason(), "BakePaused");
        // Readable again at 11:10: an hour of Clear is counted from there, not 10:05.
        assert!(matches!(
            w.step("2026-11-21T11:10:00Z", GateVerdict::Clear),
            RolloutDecision::Baking { .. }
        ));
        assert!(matches!(
            w.step("2026-11-21T12:05:00Z", GateVerdict::Clear),
            RolloutDecision::Baking { .. }
        ));
        assert_eq!(
            w.step("2026-11-21T12:10:00Z", GateVerdict::Clear),
            RolloutDecision::Promote
        );
        assert_eq!(w.progress.as_ref().unwrap().restarts, 1);
    }

    /// Simulator seed 0xf880c3f8f795616c: a replica becomes unready mid-bake (the
    /// rollout reads as Progressing) while the gate is Unknown; the bake must restart,
    /// not resume from before the Unknown reading once the rollout is complete again.
    #[test]
    fn an_unready_rollout_mid_bake_does_not_hide_an_unknown_gate() {
        let mut w = World::new();
        w.step("2026-11-21T10:05:00Z", GateVerdict::Clear);
        w.rollout = RolloutState::Progressing;
        let d = w.step("2026-11-21T10:57:00Z", GateVerdict::Unknown("down".into()));
        assert_eq!(d.reason(), "BakePaused");
        // Still unready and Unknown: the paused bake stays paused, counted once.
        assert_eq!(
            w.step("2026-11-21T11:00:00Z", GateVerdict::Unknown("down".into())),
            RolloutDecision::Deploying
        );
        w.rollout = RolloutState::Complete;
        assert!(matches!(
            w.step("2026-11-21T11:07:00Z", GateVerdict::Clear),
            RolloutDecision::Baking { .. }
        ));
        assert_eq!(
            w.step("2026-11-21T12:07:00Z", GateVerdict::Clear),
            RolloutDecision::Promote,
            "an hour of Clear counted from 11:07"
        );
        assert_eq!(w.progress.as_ref().unwrap().restarts, 1);
        // Before the bake started, Unknown while rolling out is just waiting.
        let mut w = World::new();
        w.rollout = RolloutState::Progressing;
        assert_eq!(
            w.step("2026-11-21T10:30:00Z", GateVerdict::Unknown("down".into())),
            RolloutDecision::Deploying
        );
    }

    #[test]
    fn never_promotes_while_unknown_or_firing() {
        let mut w = World::new();
        w.step("2026-11-21T10:05:00Z", GateVerdict::Clear);
        assert_ne!(
            w.step("2026-11-21T13:00:00Z", GateVerdict::Unknown("down".into())),
            RolloutDecision::Promote
        );
    }

    #[test]
    fn failed_rollout_and_no_known_good() {
        let mut w = World::new();
        w.rollout = RolloutState::Failed;
        assert_eq!(
            w.at("2026-11-21T10:30:00Z"),
            RolloutDecision::Rollback {
                reason: "the rollout of v2 failed".into()
            }
        );
        w.good = None;
        assert_eq!(w.at("2026-11-21T10:30:00Z").reason(), "NoKnownGood");
    }

    #[test]
    fn known_good_and_nothing_deployed_are_idle() {
        let mut w = World::new();
        w.good = Some(release("v2"));
        assert_eq!(w.at("2026-11-21T12:00:00Z"), RolloutDecision::Idle);
        let d = decide(&RolloutInputs {
            deployed: None,
            rollout: RolloutState::Complete,
            last_known_good: None,
            progress: None,
            bake: TimeDelta::hours(1),
            deploy_delay: TimeDelta::zero(),
            gate: &GateVerdict::Firing(vec!["X".into()]),
            now: at("2026-11-21T12:00:00Z"),
        });
        assert_eq!(d, RolloutDecision::Idle);
    }

    #[test]
    fn progress_of_an_older_version_does_not_count() {
        let mut w = World::new();
        w.progress = Some(BakeProgress {
            version: "v1".into(),
            clear_since: Some(at("2026-11-21T08:00:00Z")),
            restarts: 0,
        });
        assert!(matches!(
            w.at("2026-11-21T10:10:00Z"),
            RolloutDecision::Baking { .. }
        ));
    }

    #[test]
    fn a_bad_rollout_leaves_an_automatic_hold_even_under_a_persons() {
        let now = at("2026-11-23T10:00:00Z");
        let placed = automatic_hold(None, "alert:HookDown", "hook 2 hurt", now).unwrap();
        assert_eq!(
            (placed.by.as_str(), placed.reason.as_str(), placed.since),
            ("alert:HookDown", "hook 2 hurt", now)
        );
        assert!(placed.automatic);

        // Already held automatically: that hold stays as it is.
        assert_eq!(
            automatic_hold(Some(&placed), "alert:Other", "again", now),
            None
        );

        // A person's hold is replaced, and the new one says whose it was.
        let person = Hold {
            by: "user:alice".into(),
            since: at("2026-11-23T09:00:00Z"),
            reason: "database migration".into(),
            via: Some("cli".into()),
            automatic: false,
        };
        let upgraded = automatic_hold(Some(&person), "alert:HookDown", "hook 2 hurt", now).unwrap();
        assert!(upgraded.automatic);
        assert_eq!(
            (upgraded.by.as_str(), upgraded.since),
            ("alert:HookDown", now)
        );
        assert_eq!(
            upgraded.reason,
            "hook 2 hurt\n\nThis replaces the hold user:alice placed at \
             2026-11-23T09:00:00+00:00 via cli: database migration. Lifting this hold lifts both."
        );
    }
}
