//! The merge engine's decision (pure): merge a bot PR, wait, or hold the policy.
//!
//! A PR merges only when *all* of these hold, checked in this order (the first that
//! fails is the reason given):
//! 1. its author is the policy's bot (anything else is not autobump's to merge);
//! 2. its diff is exactly the planned bump, or an older bump whose versions still
//!    check out ([`DiffVerdict::Matches`]). A PR carrying any other change is never
//!    merged and the policy is **held** ([`DiffVerdict::Differs`]); one that only
//!    moves the policy's images to versions that cannot be verified now (a tag the
//!    registry no longer lists, a digest the tag does not have, a version rolled back
//!    before) is never merged either, but waits for the next bump to replace it
//!    ([`DiffVerdict::Unverified`]): a tag deleted under autobump's own PR is not
//!    tampering, and a hold there could only be lifted by closing the PR;
//! 3. the policy is not held and the PR has no `do-not-merge/*` label;
//! 4. the schedule window is open;
//! 5. the gate is Clear (Firing and Unknown both wait);
//! 6. the checks were read at the current head SHA;
//! 7. every required check succeeded (with no required checks listed: every check and
//!    status on the head, and there must be at least one — a PR whose CI has not
//!    reported yet is not "all green"); a failure may ask for a retest comment;
//! 8. The forge says the PR is mergeable.
//!
//! The merge then names the head SHA whose checks were read, so a push after the read
//! makes GitHub refuse the merge instead of merging unchecked code.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use super::gate::GateVerdict;
use super::reference::ImageRef;
use super::rewrite::{self, ImageSelector, Plan, SeriesRule, Target};
use super::schedule::Verdict;
use super::select::covers;
use super::tags;
use crate::policy::v1alpha1::{AutobumpSpec, Hold, RetestSpec};

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

/// Whether the PR's changes are a bump autobump may merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffVerdict {
    /// The planned bump, or only moves of the policy's images within their series to
    /// versions that check out (listed by the registry, digests the tags' own, never
    /// rolled back).
    Matches,
    /// Something besides image versions changed (other lines or files, an image
    /// moved out of its series or to another repository); what. Never merged; the
    /// policy is held.
    Differs(String),
    /// Only the policy's images moved, within their series, but to versions that
    /// cannot be verified now; which and why. Never merged, not held: the next bump
    /// replaces the PR's contents.
    Unverified(String),
}

/// One file a pull request changes, both sides as text (`None`: the file does not
/// exist on that side, or is not UTF-8 text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileChange<'a> {
    /// Its path, relative to the repository root.
    pub path: &'a str,
    /// The text at the PR's merge base.
    pub old: Option<&'a str>,
    /// The text at the PR's head.
    pub new: Option<&'a str>,
}

/// Checks what a PR that does not carry the planned tree changes (it may be an older
/// bump, a bump whose versions vanished since, or carry other changes).
///
/// Every file must be one of the policy's (`source.include`, not `source.exclude`),
/// exist on both sides as text, and differ from its base only where a rewrite to the
/// versions the PR names puts them: only tags and digests of references to the
/// policy's images, each within its series. Anything else [`DiffVerdict::Differs`].
/// Then every reference that moved is handed to `problem`, which says why its new
/// version cannot be trusted (`None`: it can); any answer makes the verdict
/// [`DiffVerdict::Unverified`]. References the PR leaves alone are not asked about.
#[must_use]
pub fn verify_image_moves(
    spec: &AutobumpSpec,
    files: &[FileChange<'_>],
    problem: &dyn Fn(&ImageRef) -> Option<String>,
) -> DiffVerdict {
    if files.is_empty() {
        return DiffVerdict::Differs("the PR changes nothing".into());
    }
    let source = &spec.source;
    let mut problems = Vec::new();
    for f in files {
        if !source.include.iter().any(|g| g.is_match(f.path))
            || source.exclude.iter().any(|g| g.is_match(f.path))
        {
            return DiffVerdict::Differs(format!("{} is not one of the policy's files", f.path));
        }
        let (Some(old), Some(new)) = (f.old, f.new) else {
            return DiffVerdict::Differs(format!("{} is added, deleted or not text", f.path));
        };
        // The versions the PR names, as targets: applied to the base they must give
        // exactly the PR's file.
        let mut targets = Vec::new();
        for found in rewrite::scan_file(f.path, new, source.mode) {
            let r = &found.reference;
            let Some(image) = spec.images.iter().find(|i| covers(i, r)) else {
                continue;
            };
            // A tag outside the policy's series never moves (nor is moved to): if the
            // PR changed one, the rewrite below does not reproduce it.
            let Some(tag) = r
                .tag
                .clone()
                .filter(|t| tags::series(&image.tags, t).is_some())
            else {
                continue;
            };
            let target = Target {
                image: ImageSelector::Repository(r.repository.clone()),
                tag,
                digest: r.digest.clone(),
                rule: SeriesRule::Policy(image.tags.clone()),
            };
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        let plan = match Plan::new(&targets) {
            Ok(plan) => plan,
            Err(e) => return DiffVerdict::Differs(format!("{}: {e}", f.path)),
        };
        let rewritten = plan.rewrite(f.path, old, source.mode);
        if rewritten.text.as_ref() != new {
            return DiffVerdict::Differs(format!(
                "{} changes more than the versions of the policy's images",
                f.path
            ));
        }
        for change in &rewritten.changes {
            let why = match ImageRef::parse(&change.new) {
                Some(r) => {
                    let refused = spec.images.iter().find(|i| covers(i, &r)).is_some_and(|i| {
                        r.tag
                            .as_deref()
                            .is_some_and(|t| !crate::core::select::tag_allowed(i, t))
                    });
                    if refused {
                        Some(
                            "the policy excludes this tag (excludeTags, range or pre-release)"
                                .into(),
                        )
                    } else {
                        problem(&r)
                    }
                }
                None => Some("not an image reference".into()),
            };
            if let Some(why) = why {
                problems.push(format!("{}:{}: {}: {why}", f.path, change.line, change.new));
            }
        }
    }
    if problems.is_empty() {
        DiffVerdict::Matches
    } else {
        DiffVerdict::Unverified(problems.join("; "))
    }
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
    /// The PR moves images to versions that cannot be verified now; which and why.
    Unverified(String),
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
    /// The forge is still computing mergeability.
    MergeabilityUnknown,
    /// The forge says the PR cannot be merged (conflicts, branch protection,
    /// approvals; GitLab: also a merge it refused at this head).
    NotMergeable,
}

impl WaitReason {
    /// A PascalCase reason, for Events, metrics and status conditions.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotBot(_) => "NotBotAuthor",
            Self::Unverified(_) => "UnverifiedVersions",
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
            Self::Unverified(what) => write!(
                f,
                "the PR moves to versions that cannot be verified ({what}); the next bump replaces it"
            ),
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
            Self::MergeabilityUnknown => write!(f, "the forge is still computing mergeability"),
            Self::NotMergeable => write!(
                f,
                "the forge says the PR cannot be merged (conflicts, required approvals, a protected branch or a role that may not merge)"
            ),
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
    match inputs.diff {
        DiffVerdict::Matches => {}
        DiffVerdict::Differs(what) => {
            return Decision::Hold(format!(
                "PR #{} changes more than the planned bump: {what}",
                pr.number
            ));
        }
        DiffVerdict::Unverified(what) => return wait(WaitReason::Unverified(what.clone())),
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

/// Whether the rollback PR #`number` merges now: it must be mergeable and carry green
/// `required` checks (`rollback.requiredChecks`, default none). Windows, the hold the
/// rollback caused and the gate never block it. `Err` says why it waits.
///
/// # Errors
/// The line to report while it waits.
pub fn rollback_merge(
    number: u64,
    mergeable: Option<bool>,
    checks: &[Check],
    required: &[String],
) -> Result<(), String> {
    let missing: Vec<&str> = required
        .iter()
        .filter(|r| {
            !checks
                .iter()
                .any(|c| &c.name == *r && c.state == CheckState::Success)
        })
        .map(String::as_str)
        .collect();
    if mergeable == Some(true) && missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "rollback PR #{number} waits: {}",
        if missing.is_empty() {
            "GitHub has not found it mergeable yet".to_owned()
        } else {
            format!("rollback checks not green: {}", missing.join(", "))
        }
    ))
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
                Case::green().with(|c| c.diff = DiffVerdict::Unverified("x".into())),
                "UnverifiedVersions",
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

    fn spec() -> AutobumpSpec {
        let text = "images: [{prefix: gcr.io/k8s-prow/, tags: {dateSha: {}}}]\n\
                    source: {repo: https://github.com/acme/infra.git, include: [\"config/**\"], exclude: [\"config/legacy/**\"]}\n";
        let docs = crate::policy::yaml::parse_documents(text).unwrap();
        crate::policy::yaml::from_node(&docs[0], &crate::policy::yaml::Path::root()).unwrap()
    }

    const BASE: &str = "image: gcr.io/k8s-prow/hook:v20240101-aaaaaaa\nreplicas: 2\n";
    static EVIL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("sha256:{}", "e".repeat(64)));

    fn moved(to: &str) -> String {
        BASE.replace("v20240101-aaaaaaa", to)
    }

    /// Listed tags are `v202401*`; `v20240102-bbbbbbb` was rolled back before; no
    /// tag has a digest of `e`s.
    fn problem(r: &ImageRef) -> Option<String> {
        if r.digest.as_deref() == Some(EVIL.as_str()) {
            return Some("not the tag's digest".into());
        }
        match r.tag.as_deref() {
            Some("v20240102-bbbbbbb") => Some("rolled back before".into()),
            Some(t) if t.starts_with("v202401") => None,
            _ => Some("not listed".into()),
        }
    }

    /// A changed file: path, text at the merge base, text at the head.
    type Changed<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

    fn verdict(files: &[Changed<'_>]) -> String {
        let files: Vec<FileChange<'_>> = files
            .iter()
            .map(|&(path, old, new)| FileChange { path, old, new })
            .collect();
        match verify_image_moves(&spec(), &files, &problem) {
            DiffVerdict::Matches => "Matches".into(),
            DiffVerdict::Differs(why) => format!("Differs: {why}"),
            DiffVerdict::Unverified(why) => format!("Unverified: {why}"),
        }
    }

    #[test]
    fn a_move_to_a_tag_the_policy_excludes_is_never_verified() {
        let text = "images: [{prefix: gcr.io/k8s-prow/, tags: {dateSha: {}}, excludeTags: [\"*-ccccccc\"]}]\n\
                    source: {repo: https://github.com/acme/infra.git, include: [\"config/**\"]}\n";
        let docs = crate::policy::yaml::parse_documents(text).unwrap();
        let spec: AutobumpSpec =
            crate::policy::yaml::from_node(&docs[0], &crate::policy::yaml::Path::root()).unwrap();
        let (excluded, allowed) = (moved("v20240105-ccccccc"), moved("v20240106-ddddddd"));
        let check = |new: &str| {
            let files = [FileChange {
                path: "config/hook.yaml",
                old: Some(BASE),
                new: Some(new),
            }];
            verify_image_moves(&spec, &files, &problem)
        };
        assert!(
            matches!(&check(&excluded), DiffVerdict::Unverified(why) if why.contains("excludes")),
            "{:?}",
            check(&excluded)
        );
        assert_eq!(check(&allowed), DiffVerdict::Matches);
    }

    /// A PR that moves `nginx:1.25.3-alpine` out of its variant or length (to
    /// `1.26.0`, `1.26.0-alpine-slim`, `1.26-alpine`) was not planned: the rewrite of
    /// the named versions does not reproduce it, so it never merges.
    #[test]
    fn a_move_out_of_the_variant_is_never_verified() {
        let text = "images: [{name: nginx, tags: {semver: {}}}]\n\
                    source: {repo: https://github.com/acme/infra.git}\n";
        let docs = crate::policy::yaml::parse_documents(text).unwrap();
        let spec: AutobumpSpec =
            crate::policy::yaml::from_node(&docs[0], &crate::policy::yaml::Path::root()).unwrap();
        let base = "image: nginx:1.25.3-alpine\n";
        let check = |to: &str| {
            let new = base.replace("1.25.3-alpine", to);
            let files = [FileChange {
                path: "web.yaml",
                old: Some(base),
                new: Some(&new),
            }];
            verify_image_moves(&spec, &files, &|_| None)
        };
        assert_eq!(check("1.26.0-alpine"), DiffVerdict::Matches);
        for to in ["1.26.0", "1.26.0-alpine-slim", "1.26-alpine", "alpine"] {
            assert!(
                matches!(check(to), DiffVerdict::Differs(_)),
                "{to}: {:?}",
                check(to)
            );
        }
    }

    #[test]
    fn image_moves_are_verified_and_other_changes_differ() {
        let f = "config/hook.yaml";
        let ok = moved("v20240105-ccccccc");
        let vanished = moved("v20991231-deadbee");
        let bad = moved("v20240102-bbbbbbb");
        let scaled = ok.replace("replicas: 2", "replicas: 20");
        let floating = moved("latest");
        let pinned = moved(&format!("v20240105-ccccccc@{}", *EVIL));
        let base_pinned = moved(&format!("v20240101-aaaaaaa@sha256:{}", "a".repeat(64)));
        let repinned = moved(&format!("v20240101-aaaaaaa@{}", *EVIL));
        let elsewhere = BASE.replace("gcr.io/k8s-prow/hook", "evil.io/k8s-prow/hook");
        let cases: Vec<(Vec<Changed<'_>>, &str)> = vec![
            // An older bump to a listed version merges like the plan.
            (vec![(f, Some(BASE), Some(&ok))], "Matches"),
            // Only image versions moved, to ones that do not check out: never merged,
            // but not tampering either.
            (
                vec![(f, Some(BASE), Some(&vanished))],
                "Unverified: config/hook.yaml:1: gcr.io/k8s-prow/hook:v20991231-deadbee: not listed",
            ),
            (
                vec![(f, Some(BASE), Some(&bad))],
                "Unverified: config/hook.yaml:1: gcr.io/k8s-prow/hook:v20240102-bbbbbbb: rolled back before",
            ),
            // A digest is part of the version asked about, on a new tag or replacing
            // another digest of the same tag.
            (
                vec![(f, Some(BASE), Some(&pinned))],
                "Unverified: config/hook.yaml:1: gcr.io/k8s-prow/hook:v20240105-ccccccc@sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee: not the tag's digest",
            ),
            (
                vec![(f, Some(&base_pinned), Some(&repinned))],
                "Unverified: config/hook.yaml:1: gcr.io/k8s-prow/hook:v20240101-aaaaaaa@sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee: not the tag's digest",
            ),
            // Adding a digest where the tag stays is not something a bump does.
            (
                vec![(f, Some(BASE), Some(&repinned))],
                "Differs: config/hook.yaml changes more than the versions of the policy's images",
            ),
            // A reference the PR leaves alone is not asked about.
            (
                vec![
                    (f, Some(BASE), Some(&ok)),
                    ("config/old.yaml", Some("x: 1\n"), Some("x: 2\n")),
                ],
                "Differs: config/old.yaml changes more than the versions of the policy's images",
            ),
            (
                vec![(f, Some(BASE), Some(&scaled))],
                "Differs: config/hook.yaml changes more than the versions of the policy's images",
            ),
            (
                vec![(f, Some(BASE), Some(&floating))],
                "Differs: config/hook.yaml changes more than the versions of the policy's images",
            ),
            (
                vec![(f, Some(BASE), Some(&elsewhere))],
                "Differs: config/hook.yaml changes more than the versions of the policy's images",
            ),
            (
                vec![("config/legacy/hook.yaml", Some(BASE), Some(&ok))],
                "Differs: config/legacy/hook.yaml is not one of the policy's files",
            ),
            (
                vec![("Makefile", Some("a"), Some("b"))],
                "Differs: Makefile is not one of the policy's files",
            ),
            (
                vec![("config/new.yaml", None, Some(&ok))],
                "Differs: config/new.yaml is added, deleted or not text",
            ),
            (vec![], "Differs: the PR changes nothing"),
        ];
        for (i, (files, want)) in cases.iter().enumerate() {
            assert_eq!(verdict(files), *want, "case {i}");
        }
        // An unchanged reference to a version that no longer checks out is fine.
        let unlisted_base = moved("v20991231-deadbee");
        let two = format!("{unlisted_base}---\nimage: gcr.io/k8s-prow/deck:v20240101-aaaaaaa\n");
        let two_moved = two.replace("deck:v20240101-aaaaaaa", "deck:v20240105-ccccccc");
        assert_eq!(verdict(&[(f, Some(&two), Some(&two_moved))]), "Matches");
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

    #[test]
    fn a_rollback_pr_merges_when_mergeable_with_its_own_checks_green() {
        let check = |name: &str, state| Check {
            name: name.into(),
            state,
        };
        let required = ["smoke".to_owned()];
        for (mergeable, checks, required, want) in [
            (Some(true), vec![], &[][..], Ok(())),
            (
                None,
                vec![],
                &[][..],
                Err("rollback PR #4 waits: GitHub has not found it mergeable yet"),
            ),
            (
                Some(false),
                vec![],
                &[][..],
                Err("rollback PR #4 waits: GitHub has not found it mergeable yet"),
            ),
            (
                Some(true),
                vec![check("smoke", CheckState::Pending)],
                &required[..],
                Err("rollback PR #4 waits: rollback checks not green: smoke"),
            ),
            (
                Some(true),
                vec![
                    check("smoke", CheckState::Success),
                    check("unit", CheckState::Failure),
                ],
                &required[..],
                Ok(()),
            ),
        ] {
            assert_eq!(
                rollback_merge(4, mergeable, &checks, required),
                want.map_err(str::to_owned)
            );
        }
    }
}
