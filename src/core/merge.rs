//! The merge engine's decision (pure): merge a bot PR, wait, or hold the policy.
//!
//! A PR merges only when *all* of these hold, checked in this order (the first that
//! fails is the reason given):
//! 1. its author is the policy's bot (anything else is not autobump's to merge);
//! 2. its diff is exactly the planned bump — otherwise the policy is **held**
//!    (a bot PR carrying any other change is never merged);
//! 3. the policy is not held and the PR has no `do-not-merge/*` label;
//! 4. the schedule window is open;
//! 5. the gate is Clear (Firing and Unknown both wait);
//! 6. the checks were read at the current head SHA;
//! 7. every required check succeeded (with no required checks listed: every check and
//!    status on the head, and there must be at least one — a PR whose CI has not
//!    reported yet is not "all green"); a failure may ask for a retest comment;
//! 8. GitHub says the PR is mergeable.
//!
//! The merge then names the head SHA whose checks were read, so a push after the read
//! makes GitHub refuse the merge instead of merging unchecked code.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use super::gate::GateVerdict;
use super::schedule::Verdict;
use crate::policy::v1alpha1::{Hold, RetestSpec};

/// The state of one check run or commit status, normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    /// Queued, in progress, or a pending status.
    Pending,
    /// Success, neutral or skipped.
    Success,
    /// Failure, error, cancelled, timed out, action required.
    Failure,
}

/// A check run or commit status on a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Its name (check run name or status context).
    pub name: String,
    /// Its state.
    pub state: CheckState,
}

/// What the forge says about the PR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrView {
    /// The PR number.
    pub number: u64,
    /// Its author's login.
    pub author: String,
    /// Its head commit.
    pub head_sha: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// GitHub's mergeability (`None`: still being computed).
    pub mergeable: Option<bool>,
    /// The commit the checks below were read at.
    pub checks_sha: String,
    /// Check runs and statuses at `checks_sha`.
    pub checks: Vec<Check>,
    /// Retest comments already posted for `head_sha`.
    pub retests_posted: u32,
}

/// Whether the PR's changes are exactly the planned bump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffVerdict {
    /// Same files, same new contents.
    Matches,
    /// Something else changed; what.
    Differs(String),
}

/// Everything the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct MergeInputs<'a> {
    /// The PR.
    pub pr: &'a PrView,
    /// The bot account whose PRs autobump merges.
    pub bot_login: &'a str,
    /// The policy's hold, if any.
    pub hold: Option<&'a Hold>,
    /// Checks that must succeed; empty means every check on the head.
    pub required_checks: &'a [String],
    /// Retest settings, if any.
    pub retest: Option<&'a RetestSpec>,
    /// The schedule's verdict now.
    pub window: &'a Verdict,
    /// The gate's verdict now.
    pub gate: &'a GateVerdict,
    /// The diff verification.
    pub diff: &'a DiffVerdict,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Merge at exactly this head SHA.
    Merge {
        /// The SHA whose checks were read.
        sha: String,
    },
    /// Not now.
    Wait {
        /// Why.
        reason: WaitReason,
        /// A comment to post to re-run failed checks.
        retest: Option<String>,
    },
    /// Hold the policy: the PR is not what autobump planned.
    Hold(String),
}

/// Why a PR is not merged now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// The PR is not by the bot.
    NotBot(String),
    /// The policy is held by someone.
    Held(String),
    /// A `do-not-merge/*` label is on the PR.
    DoNotMerge(String),
    /// Outside every window (or frozen, or within `minInterval`); when it opens next.
    OutsideWindow(Option<DateTime<Utc>>),
    /// Selected alerts fire.
    GateFiring(Vec<String>),
    /// The alert source could not be read.
    GateUnknown(String),
    /// The head moved after the checks were read.
    StaleChecks,
    /// No check has reported on the head yet.
    NoChecks,
    /// Required checks that have not reported yet.
    MissingChecks(Vec<String>),
    /// Checks still running.
    ChecksPending(Vec<String>),
    /// Checks that failed.
    ChecksFailed(Vec<String>),
    /// GitHub is still computing mergeability.
    MergeabilityUnknown,
    /// GitHub says the PR cannot be merged (conflicts, branch protection).
    NotMergeable,
}

impl WaitReason {
    /// A PascalCase reason, for Events, metrics and status conditions.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotBot(_) => "NotBotAuthor",
            Self::Held(_) => "Held",
            Self::DoNotMerge(_) => "DoNotMergeLabel",
            Self::OutsideWindow(_) => "OutsideWindow",
            Self::GateFiring(_) => "GateFiring",
            Self::GateUnknown(_) => "GateUnknown",
            Self::StaleChecks => "StaleChecks",
            Self::NoChecks => "NoChecks",
            Self::MissingChecks(_) => "MissingChecks",
            Self::ChecksPending(_) => "ChecksPending",
            Self::ChecksFailed(_) => "ChecksFailed",
            Self::MergeabilityUnknown => "MergeabilityUnknown",
            Self::NotMergeable => "NotMergeable",
        }
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotBot(author) => write!(f, "the PR is by {author}, not the bot"),
            Self::Held(by) => write!(f, "the policy is held by {by}"),
            Self::DoNotMerge(label) => write!(f, "the PR is labelled {label}"),
            Self::OutsideWindow(Some(at)) => write!(f, "outside the schedule; next opening {at}"),
            Self::OutsideWindow(None) => write!(f, "outside the schedule; no opening ahead"),
            Self::GateFiring(alerts) => write!(f, "alerts firing: {}", alerts.join(", ")),
            Self::GateUnknown(why) => write!(f, "alert state unknown: {why}"),
            Self::StaleChecks => write!(f, "the head moved after its checks were read"),
            Self::NoChecks => write!(f, "no check has reported on the head yet"),
            Self::MissingChecks(names) => {
                write!(f, "required checks not reported: {}", names.join(", "))
            }
            Self::ChecksPending(names) => write!(f, "checks running: {}", names.join(", ")),
            Self::ChecksFailed(names) => write!(f, "checks failed: {}", names.join(", ")),
            Self::MergeabilityUnknown => write!(f, "GitHub is still computing mergeability"),
            Self::NotMergeable => write!(f, "GitHub says the PR cannot be merged"),
        }
    }
}

fn wait(reason: WaitReason) -> Decision {
    Decision::Wait {
        reason,
        retest: None,
    }
}

/// Decides what to do with a bot PR. See the module docs for the rules.
#[must_use]
pub fn decide(inputs: &MergeInputs<'_>) -> Decision {
    let pr = inputs.pr;
    if !pr.author.eq_ignore_ascii_case(inputs.bot_login) {
        return wait(WaitReason::NotBot(pr.author.clone()));
    }
    if let DiffVerdict::Differs(what) = inputs.diff {
        return Decision::Hold(format!(
            "PR #{} changes more than the planned bump: {what}",
            pr.number
        ));
    }
    if let Some(hold) = inputs.hold {
        return wait(WaitReason::Held(hold.by.clone()));
    }
    if let Some(label) = pr.labels.iter().find(|l| l.starts_with("do-not-merge/")) {
        return wait(WaitReason::DoNotMerge(label.clone()));
    }
    // A freeze or the minimum interval closes the schedule just as a window does.
    if let Verdict::Closed { next_open, .. } = inputs.window {
        return wait(WaitReason::OutsideWindow(*next_open));
    }
    match inputs.gate {
        GateVerdict::Clear => {}
        GateVerdict::Firing(alerts) => return wait(WaitReason::GateFiring(alerts.clone())),
        GateVerdict::Unknown(why) => return wait(WaitReason::GateUnknown(why.clone())),
    }
    if pr.checks_sha != pr.head_sha {
        return wait(WaitReason::StaleChecks);
    }
    if let Some(decision) = checks_decision(inputs) {
        return decision;
    }
    match pr.mergeable {
        None => wait(WaitReason::MergeabilityUnknown),
        Some(false) => wait(WaitReason::NotMergeable),
        Some(true) => Decision::Merge {
            sha: pr.head_sha.clone(),
        },
    }
}

/// Each check that counts with its worst state (a check may appear as a status and
/// a check run, or be re-run), or why none can count yet: the required checks, or
/// every check when none are listed.
fn considered<'a>(
    checks: &'a [Check],
    required: &'a [String],
) -> Result<Vec<(&'a str, CheckState)>, WaitReason> {
    let mut by_name: BTreeMap<&str, CheckState> = BTreeMap::new();
    for check in checks {
        let entry = by_name.entry(check.name.as_str()).or_insert(check.state);
        *entry = worst(*entry, check.state);
    }
    if required.is_empty() {
        if by_name.is_empty() {
            return Err(WaitReason::NoChecks);
        }
        return Ok(by_name.into_iter().collect());
    }
    let missing: Vec<String> = required
        .iter()
        .filter(|r| !by_name.contains_key(r.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(WaitReason::MissingChecks(missing));
    }
    Ok(required
        .iter()
        .map(|r| (r.as_str(), by_name[r.as_str()]))
        .collect())
}

/// Whether the checks let a merge go ahead: every required check (or, with none
/// listed, every check) reported and succeeded. The observe step reads mergeability,
/// and re-reads anything answered from memory, only then.
#[must_use]
pub fn checks_pass(checks: &[Check], required: &[String]) -> bool {
    considered(checks, required)
        .is_ok_and(|c| c.iter().all(|(_, state)| *state == CheckState::Success))
}

/// The verdict of the checks, when they block the merge.
fn checks_decision(inputs: &MergeInputs<'_>) -> Option<Decision> {
    let pr = inputs.pr;
    let considered = match considered(&pr.checks, inputs.required_checks) {
        Ok(c) => c,
        Err(reason) => return Some(wait(reason)),
    };
    let named = |state: CheckState| -> Vec<String> {
        considered
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(n, _)| (*n).to_owned())
            .collect()
    };
    let failed = named(CheckState::Failure);
    if !failed.is_empty() {
        let retest = inputs
            .retest
            .filter(|r| pr.retests_posted < r.max)
            .map(|r| r.comment.clone());
        return Some(Decision::Wait {
            reason: WaitReason::ChecksFailed(failed),
            retest,
        });
    }
    let pending = named(CheckState::Pending);
    if !pending.is_empty() {
        return Some(wait(WaitReason::ChecksPending(pending)));
    }
    None
}

fn worst(a: CheckState, b: CheckState) -> CheckState {
    use CheckState::{Failure, Pending, Success};
    match (a, b) {
        (Failure, _) | (_, Failure) => Failure,
        (Pending, _) | (_, Pending) => Pending,
        (Success, Success) => Success,
    }
}

/// Compares what a PR changes with what the plan would change: the same set of files,
/// each with exactly the planned new content (`None`: the file is deleted). Since the
/// planned contents come from rewriting the base with versions the registry has, a
/// match means only image-reference spans changed, to those versions.
#[must_use]
pub fn verify_diff(
    planned: &BTreeMap<String, String>,
    actual: &BTreeMap<String, Option<String>>,
) -> DiffVerdict {
    if let Some(extra) = actual.keys().find(|k| !planned.contains_key(*k)) {
        return DiffVerdict::Differs(format!("{extra} is changed but not part of the bump"));
    }
    if let Some(missing) = planned.keys().find(|k| !actual.contains_key(*k)) {
        return DiffVerdict::Differs(format!("{missing} is part of the bump but not changed"));
    }
    for (path, want) in planned {
        match &actual[path] {
            None => return DiffVerdict::Differs(format!("{path} is deleted")),
            Some(got) if got != want => {
                let line = got
                    .lines()
                    .zip(want.lines())
                    .position(|(g, w)| g != w)
                    .unwrap_or_else(|| got.lines().count().min(want.lines().count()))
                    + 1;
                return DiffVerdict::Differs(format!(
                    "{path} differs from the plan at line {line}"
                ));
            }
            Some(_) => {}
        }
    }
    DiffVerdict::Matches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::schedule::ClosedReason;

    #[test]
    fn checks_pass_only_when_every_counted_check_succeeded() {
        let check = |name: &str, state| Check {
            name: name.into(),
            state,
        };
        let required = ["unit".to_owned()];
        let green = [
            check("unit", CheckState::Success),
            check("lint", CheckState::Failure),
        ];
        assert!(checks_pass(&green, &required), "lint is not required");
        assert!(
            !checks_pass(&green, &[]),
            "with none required, every check counts"
        );
        assert!(!checks_pass(&[], &[]), "no check reported yet");
        assert!(
            !checks_pass(&green[1..], &required),
            "unit has not reported"
        );
        let rerun = [
            check("unit", CheckState::Success),
            check("unit", CheckState::Pending),
        ];
        assert!(
            !checks_pass(&rerun, &required),
            "the worst run of a name counts"
        );
    }

    struct Case {
        pr: PrView,
        hold: Option<Hold>,
        required: Vec<String>,
        retest: Option<RetestSpec>,
        window: Verdict,
        gate: GateVerdict,
        diff: DiffVerdict,
    }

    impl Case {
        /// A PR that merges: bot author, green check, mergeable, everything open.
        fn green() -> Self {
            Self {
                pr: PrView {
                    number: 7,
                    author: "autobump-bot".into(),
                    head_sha: "abc".into(),
                    labels: vec!["skip-review".into()],
                    mergeable: Some(true),
                    checks_sha: "abc".into(),
                    checks: vec![check("unit", CheckState::Success)],
                    retests_posted: 0,
                },
                hold: None,
                required: Vec::new(),
                retest: None,
                window: Verdict::Open,
                gate: GateVerdict::Clear,
                diff: DiffVerdict::Matches,
            }
        }
        fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
        fn decide(&self) -> Decision {
            decide(&MergeInputs {
                pr: &self.pr,
                bot_login: "autobump-bot",
                hold: self.hold.as_ref(),
                required_checks: &self.required,
                retest: self.retest.as_ref(),
                window: &self.window,
                gate: &self.gate,
                diff: &self.diff,
            })
        }
    }

    fn check(name: &str, state: CheckState) -> Check {
        Check {
            name: name.into(),
            state,
        }
    }

    fn reason(d: &Decision) -> String {
        match d {
            Decision::Merge { sha } => format!("Merge@{sha}"),
            Decision::Wait { reason, retest } => {
                format!(
                    "{}{}",
                    reason.reason(),
                    retest.as_ref().map_or(String::new(), |r| format!("+{r}"))
                )
            }
            Decision::Hold(_) => "Hold".into(),
        }
    }

    // One table row per reason the decision can give; splitting it would hide which
    // reasons are covered.
    #[allow(clippy::too_many_lines)]
    #[test]
    fn every_reason() {
        let at: DateTime<Utc> = "2026-11-23T17:00:00Z".parse().unwrap();
        let cases: Vec<(Case, &str)> = vec![
            (Case::green(), "Merge@abc"),
            (
                Case::green().with(|c| "someone".clone_into(&mut c.pr.author)),
                "NotBotAuthor",
            ),
            (
                Case::green().with(|c| c.pr.author = "Autobump-Bot".into()),
                "Merge@abc",
            ),
            (
                Case::green().with(|c| c.diff = DiffVerdict::Differs("x".into())),
                "Hold",
            ),
            (
                Case::green().with(|c| {
                    c.hold = Some(Hold {
                        by: "user:alice".into(),
                        since: at,
                        reason: "release".into(),
                        via: None,
                        automatic: false,
                    });
                }),
                "Held",
            ),
            (
                Case::green().with(|c| c.pr.labels.push("do-not-merge/hold".into())),
                "DoNotMergeLabel",
            ),
            (
                Case::green().with(|c| {
                    c.window = Verdict::Closed {
                        reason: ClosedReason::OutsideWindow,
                        next_open: Some(at),
                    };
                }),
                "OutsideWindow",
            ),
            (
                Case::green().with(|c| c.gate = GateVerdict::Firing(vec!["HookDown".into()])),
                "GateFiring",
            ),
            (
                Case::green().with(|c| c.gate = GateVerdict::Unknown("timeout".into())),
                "GateUnknown",
            ),
            (
                Case::green().with(|c| c.pr.checks_sha = "old".into()),
                "StaleChecks",
            ),
            (Case::green().with(|c| c.pr.checks.clear()), "NoChecks"),
            (
                Case::green().with(|c| c.required = vec!["unit".into(), "e2e".into()]),
                "MissingChecks",
            ),
            (
                Case::green().with(|c| c.pr.checks.push(check("e2e", CheckState::Pending))),
                "ChecksPending",
            ),
            (
                Case::green().with(|c| c.pr.checks.push(check("e2e", CheckState::Failure))),
                "ChecksFailed",
            ),
            // A failing check outside the required list does not block.
            (
                Case::green().with(|c| {
                    c.pr.checks.push(check("lint", CheckState::Failure));
                    c.required = vec!["unit".into()];
                }),
                "Merge@abc",
            ),
            // The worst state of a repeated name counts.
            (
                Case::green().with(|c| c.pr.checks.push(check("unit", CheckState::Failure))),
                "ChecksFailed",
            ),
            (
                Case::green().with(|c| {
                    c.pr.checks.push(check("e2e", CheckState::Failure));
                    c.retest = Some(RetestSpec {
                        comment: "/retest".into(),
                        max: 2,
                    });
                    c.pr.retests_posted = 1;
                }),
                "ChecksFailed+/retest",
            ),
            (
                Case::green().with(|c| {
                    c.pr.checks.push(check("e2e", CheckState::Failure));
                    c.retest = Some(RetestSpec {
                        comment: "/retest".into(),
                        max: 2,
                    });
                    c.pr.retests_posted = 2;
                }),
                "ChecksFailed",
            ),
            (
                Case::green().with(|c| c.pr.mergeable = None),
                "MergeabilityUnknown",
            ),
            (
                Case::green().with(|c| c.pr.mergeable = Some(false)),
                "NotMergeable",
            ),
        ];
        for (i, (case, want)) in cases.iter().enumerate() {
            assert_eq!(reason(&case.decide()), *want, "case {i}");
        }
    }

    #[test]
    fn a_tampered_pr_is_held_even_when_everything_else_would_wait() {
        let c = Case::green().with(|c| {
            c.diff = DiffVerdict::Differs("Makefile is changed but not part of the bump".into());
            c.window = Verdict::Closed {
                reason: ClosedReason::OutsideWindow,
                next_open: None,
            };
        });
        assert_eq!(
            c.decide(),
            Decision::Hold("PR #7 changes more than the planned bump: Makefile is changed but not part of the bump".into())
        );
    }

    #[test]
    fn diff_verification() {
        let planned: BTreeMap<String, String> =
            [("a.yaml".into(), "image: x:2\nfoo: 1\n".into())].into();
        let same: BTreeMap<String, Option<String>> =
            [("a.yaml".into(), Some("image: x:2\nfoo: 1\n".into()))].into();
        assert_eq!(verify_diff(&planned, &same), DiffVerdict::Matches);
        let extra_line: BTreeMap<String, Option<String>> =
            [("a.yaml".into(), Some("image: x:2\nfoo: 2\n".into()))].into();
        assert_eq!(
            verify_diff(&planned, &extra_line),
            DiffVerdict::Differs("a.yaml differs from the plan at line 2".into())
        );
        let mut extra_file = same.clone();
        extra_file.insert("Makefile".into(), Some("evil".into()));
        assert_eq!(
            verify_diff(&planned, &extra_file),
            DiffVerdict::Differs("Makefile is changed but not part of the bump".into())
        );
        let deleted: BTreeMap<String, Option<String>> = [("a.yaml".into(), None)].into();
        assert_eq!(
            verify_diff(&planned, &deleted),
            DiffVerdict::Differs("a.yaml is deleted".into())
        );
        assert_eq!(
            verify_diff(&planned, &BTreeMap::new()),
            DiffVerdict::Differs("a.yaml is part of the bump but not changed".into())
        );
        let appended: BTreeMap<String, Option<String>> =
            [("a.yaml".into(), Some("image: x:2\nfoo: 1\nbar: 2\n".into()))].into();
        assert_eq!(
            verify_diff(&planned, &appended),
            DiffVerdict::Differs("a.yaml differs from the plan at line 3".into())
        );
    }
}
