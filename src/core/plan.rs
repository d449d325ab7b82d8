//! The planner for one policy (pure): a function of the snapshot, the policy and
//! `now`, returning the effects to ensure, in order. The delivery mode is data: a
//! pull-request policy and a direct-push one are planned by the same [`plan`].
//!
//! One reconcile of a pull-request policy:
//! 1. new `/hold` and `/unhold` comments are authorised and applied to the policy's
//!    hold (which lives in the store, not on a PR); unauthorised ones get a reply;
//! 2. the `do-not-merge/hold` label on the open PR follows the hold;
//! 3. a bump that is not on the PR branch yet is pushed and the PR opened or
//!    refreshed in place — only inside a schedule window and at most once per
//!    `minInterval`; a PR whose title or body drifted from the plan is edited;
//! 4. the merge engine ([`super::merge`]) decides about the open PR: merge at the
//!    head SHA whose checks were read, wait (maybe posting a retest), or hold the
//!    policy when the PR is not exactly the planned bump.
//!
//! A direct-push policy has no PR and no commands: its bump goes straight to the base
//! branch, so it must pass everything a merge must (not held, inside a window and past
//! `minInterval`, the gate Clear).
//!
//! Either way, a deploy, bake or rollback under way blocks the bump (one rollout at a
//! time: [`super::watch::Block`]).
//!
//! Nothing here does I/O or reads the clock; every effect is an idempotent "ensure",
//! and re-running on an unchanged world plans nothing that writes.

use chrono::{DateTime, Utc};

use super::change::StateChange;
use super::commands::{self, Authorization, Command, Permission, Requirements};
use super::gate::GateVerdict;
use super::merge::{self, Decision, DiffVerdict, MergeInputs, PrView};
use super::pr::{self, Bump, Row};
use super::schedule::Verdict;
use super::watch::Block;
use crate::policy::v1alpha1::{AutobumpSpec, Hold, MergeMethod};

/// How a policy's changes reach the base branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Through a pull request that the merge engine merges.
    PullRequest,
    /// Pushed straight onto the base branch (`directPush`).
    DirectPush,
}

impl Mode {
    /// The mode `spec` asks for.
    #[must_use]
    pub fn of(spec: &AutobumpSpec) -> Self {
        if spec.direct_push.is_some() {
            Self::DirectPush
        } else {
            Self::PullRequest
        }
    }
}

/// The label that mirrors a hold on the open PR.
pub const HOLD_LABEL: &str = "do-not-merge/hold";

/// A new comment carrying a command, with what is known of its author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSeen {
    /// The comment's id (for de-duplication).
    pub id: u64,
    /// Its author.
    pub author: String,
    /// The author's permission on the repository.
    pub permission: Permission,
    /// The command.
    pub command: Command,
    /// Where it was written (a URL).
    pub url: String,
    /// When it was written: a command never undoes a hold placed after it.
    pub at: DateTime<Utc>,
    /// The PR it was written on (the open autobump PR, or another of the policy's PRs
    /// when it came by webhook, e.g. a closed one).
    pub pr: u64,
}

/// The bump the registries call for, as rewritten on the current base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBump {
    /// The moves.
    pub rows: Vec<Row>,
    /// Source repositories by image, for compare links.
    pub source_repos: std::collections::BTreeMap<String, String>,
    /// With promotion: the upstream policy and the evidence its PR body cites.
    pub promoted: Option<Promoted>,
}

/// Where a promoted bump's versions were proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    /// The upstream policy (`promotion.from`).
    pub from: String,
    /// The evidence, as Markdown ([`super::promotion::evidence`]).
    pub evidence: String,
}

/// The open autobump PR, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrSnapshot {
    /// What the merge engine reads.
    pub view: PrView,
    /// Its title.
    pub title: String,
    /// Its body.
    pub body: String,
    /// Whether its head already carries the planned bump's tree.
    pub has_planned_tree: bool,
    /// Its diff against the base, compared with the planned contents.
    pub diff: DiffVerdict,
}

/// Everything one reconcile of a policy decides from.
#[derive(Debug, Clone)]
pub struct Snapshot<'a> {
    /// The policy's name.
    pub policy: &'a str,
    /// Its spec.
    pub spec: &'a AutobumpSpec,
    /// The hold in force before this reconcile.
    pub hold: Option<&'a Hold>,
    /// When the last bump was pushed.
    pub last_bump: Option<DateTime<Utc>>,
    /// The bump to make, if any version is newer.
    pub bump: Option<PlannedBump>,
    /// The open autobump PR, if any.
    pub pr: Option<PrSnapshot>,
    /// New command comments, oldest first.
    pub commands: Vec<CommandSeen>,
    /// The bot's login.
    pub bot_login: &'a str,
    /// The alert gate now.
    pub gate: GateVerdict,
    /// Why nothing may go out now although the gate allows it: the deployed version
    /// still deploys or bakes, or a rollback is under way (one rollout at a time).
    pub rollout_block: Option<Block>,
    /// How the bump is delivered.
    pub delivery: Mode,
}

/// One thing to ensure.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Remember that a comment was handled.
    MarkSeen(u64),
    /// Put the policy on hold.
    SetHold(Hold),
    /// Lift the hold.
    ClearHold {
        /// Who lifted it.
        by: String,
    },
    /// Reply on the PR.
    Comment(String),
    /// Reply on another of the policy's PRs (where a command came from).
    Reply {
        /// The PR.
        pr: u64,
        /// The text.
        body: String,
    },
    /// Ensure these labels are on the PR.
    AddLabels(Vec<String>),
    /// Ensure this label is not on the PR.
    RemoveLabel(String),
    /// Ensure the PR branch carries the planned bump commit (push only if its tree
    /// differs).
    PushBranch,
    /// Open the PR.
    CreatePr {
        /// Title.
        title: String,
        /// Body.
        body: String,
        /// Labels.
        labels: Vec<String>,
    },
    /// Edit the PR's title and body.
    UpdatePr {
        /// Title.
        title: String,
        /// Body.
        body: String,
    },
    /// Remember that a bump was pushed now (for `minInterval`).
    RecordBump,
    /// Merge the PR at exactly this head.
    Merge {
        /// The head SHA whose checks were read.
        sha: String,
        /// The method.
        method: MergeMethod,
    },
    /// Push the bump commit straight to the base branch (direct-push policies).
    PushDirect,
    /// The deployed version baked clean: it is now the last known-good.
    Promote,
    /// The deployed version hurt: hold, record it as bad, and put the last known-good
    /// versions back (never blocked by windows, the hold, or red checks).
    Rollback(String),
    /// Workloads patched to the known-good images (`rollback.patchCluster`), one line
    /// per container changed.
    PatchCluster(Vec<String>),
    /// Nothing merges now, and why (for status and events; writes nothing remote).
    Waiting(String),
}

impl Effect {
    /// Whether the effect writes to the forge, the repository or the store.
    #[must_use]
    pub fn writes(&self) -> bool {
        !matches!(self, Self::Waiting(_))
    }

    /// The effect's kind, as its variant is named (`Merge`, `SetHold`, …), for
    /// reports, logs and tests.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MarkSeen(_) => "MarkSeen",
            Self::SetHold(_) => "SetHold",
            Self::ClearHold { .. } => "ClearHold",
            Self::Comment(_) => "Comment",
            Self::Reply { .. } => "Reply",
            Self::AddLabels(_) => "AddLabels",
            Self::RemoveLabel(_) => "RemoveLabel",
            Self::PushBranch => "PushBranch",
            Self::PushDirect => "PushDirect",
            Self::Promote => "Promote",
            Self::Rollback(_) => "Rollback",
            Self::PatchCluster(_) => "PatchCluster",
            Self::CreatePr { .. } => "CreatePr",
            Self::UpdatePr { .. } => "UpdatePr",
            Self::RecordBump => "RecordBump",
            Self::Merge { .. } => "Merge",
            Self::Waiting(_) => "Waiting",
        }
    }

    /// The change to the policy's state this effect is, for effects that only
    /// change state (`rows`: how many image versions the bump moves).
    #[must_use]
    pub fn state_change(
        &self,
        delivery: Mode,
        rows: usize,
        promoted_from: Option<&str>,
    ) -> Option<StateChange> {
        Some(match self {
            Self::MarkSeen(id) => StateChange::SeeComment(*id),
            Self::SetHold(hold) => StateChange::SetHold(hold.clone()),
            Self::ClearHold { by } => StateChange::ClearHold { by: by.clone() },
            // A direct push records itself when it lands (its intent); a bump pushed
            // for review is recorded now.
            Self::RecordBump => match delivery {
                Mode::PullRequest => StateChange::BumpPushed {
                    rows,
                    from: promoted_from.map(ToOwned::to_owned),
                },
                Mode::DirectPush => StateChange::LastBump,
            },
            _ => return None,
        })
    }

    /// Where a [`Comment`](Self::Comment) (on the open PR, `open`) or a
    /// [`Reply`](Self::Reply) goes, and its text; `None` for other effects and for a
    /// comment with no PR open.
    #[must_use]
    pub fn comment_target(&self, open: Option<u64>) -> Option<(u64, &str)> {
        match self {
            Self::Comment(body) => open.map(|n| (n, body.as_str())),
            Self::Reply { pr, body } => Some((*pr, body.as_str())),
            _ => None,
        }
    }
}

/// Plans one reconcile. See the module docs.
#[must_use]
pub fn plan(s: &Snapshot<'_>, now: DateTime<Utc>) -> Vec<Effect> {
    let mut effects = Vec::new();
    let hold = apply_commands(s, now, &mut effects);
    let pr = s.pr.as_ref();
    sync_hold_label(pr, hold.as_ref(), &mut effects);
    if let Some(block) = &s.rollout_block {
        // Commands and the hold label still apply; nothing new is pushed or merged.
        // (A direct push's rollback is said by its `Rollback` effect.)
        if !matches!(
            (s.delivery, block),
            (Mode::DirectPush, Block::RollingBack(_))
        ) {
            effects.push(Effect::Waiting(block.text()));
        }
        return effects;
    }
    if s.delivery == Mode::DirectPush {
        if s.bump.is_some() {
            effects.extend(direct(s.spec, hold.as_ref(), s.last_bump, &s.gate, now));
        }
        return effects;
    }
    let labels: Vec<String> = s
        .spec
        .pull_request
        .as_ref()
        .map(|p| p.labels.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    let schedule = s.spec.schedule.to_schedule();

    // Bumps: only in a window, at most once per minInterval.
    let mut bumped_now = false;
    if let Some(bump) = &s.bump {
        let text = Bump {
            policy: s.policy,
            rows: bump.rows.clone(),
            source_repos: bump.source_repos.clone(),
            labels: &labels,
            evidence: bump.promoted.as_ref().map(|p| p.evidence.as_str()),
        };
        let (title, body) = (pr::title(&text), pr::body(&text));
        // A PR carrying other changes is held below, never silently overwritten; one
        // that moves to versions that no longer check out is replaced like an older
        // bump.
        let tampered = pr.is_some_and(|p| matches!(p.diff, DiffVerdict::Differs(_)));
        let needs_push = !tampered && pr.is_none_or(|p| !p.has_planned_tree);
        if needs_push {
            match schedule.evaluate(now, s.last_bump) {
                Verdict::Open => {
                    effects.push(Effect::PushBranch);
                    effects.push(match pr {
                        None => Effect::CreatePr {
                            title,
                            body,
                            labels: with_hold_label(labels.clone(), hold.is_some()),
                        },
                        Some(_) => Effect::UpdatePr { title, body },
                    });
                    effects.push(Effect::RecordBump);
                    bumped_now = true;
                }
                Verdict::Closed { reason, next_open } => {
                    effects.push(Effect::Waiting(format!(
                        "bump waits: {reason}{}",
                        next_opening(&reason, next_open)
                    )));
                }
            }
        } else if let Some(p) = pr
            && p.has_planned_tree
            && (p.title != title || p.body != body)
        {
            // (A PR held for other changes keeps its title: it does not carry this
            // bump.)
            effects.push(Effect::UpdatePr { title, body });
        }
    }

    // Merges: the PR as it is now (never one just pushed: its checks are not read).
    if let Some(p) = pr.filter(|_| !bumped_now) {
        let window = schedule.evaluate(now, None);
        let decision = merge::decide(&MergeInputs {
            pr: &p.view,
            bot_login: s.bot_login,
            hold: hold.as_ref(),
            required_checks: &s.spec.merge.required_checks,
            retest: s.spec.merge.retest.as_ref(),
            window: &window,
            gate: &s.gate,
            diff: &p.diff,
        });
        match decision {
            Decision::Merge { sha } => effects.push(Effect::Merge {
                sha,
                method: s.spec.merge.method,
            }),
            Decision::Wait { reason, retest } => {
                if let Some(comment) = retest {
                    effects.push(Effect::Comment(comment));
                }
                effects.push(Effect::Waiting(reason.to_string()));
            }
            Decision::Hold(why) => {
                if hold.is_none() {
                    hold_for_a_changed_pr(s, p.view.number, &why, now, &mut effects);
                }
            }
        }
    }
    effects
}

/// Holds the policy because its PR #`number` carries more than a bump (`why`), labels
/// the PR and says on it what to do.
fn hold_for_a_changed_pr(
    s: &Snapshot<'_>,
    number: u64,
    why: &str,
    now: DateTime<Utc>,
    effects: &mut Vec<Effect>,
) {
    effects.push(Effect::SetHold(Hold {
        by: "autobump".into(),
        since: now,
        reason: why.to_owned(),
        via: Some(format!("PR #{number}")),
        automatic: true,
    }));
    effects.push(Effect::AddLabels(vec![HOLD_LABEL.into()]));
    effects.push(Effect::Comment(format!(
        "autobump will not merge this PR and has put policy `{}` on hold: {why}. \
         After checking, close this PR (autobump then opens a fresh one with the \
         planned bump), then lift the hold: `/unhold` on the new PR or \
         `autobump unhold {}` (needs write permission). While this PR stays open \
         as it is, autobump keeps refusing it.",
        s.policy, s.policy
    )));
}

/// A direct push of the bump: it goes straight to the base branch, so it must pass
/// everything a merge must: not held, inside a window and past `minInterval`, and the
/// gate Clear (Firing and Unknown both wait).
fn direct(
    spec: &AutobumpSpec,
    hold: Option<&Hold>,
    last_bump: Option<DateTime<Utc>>,
    gate: &GateVerdict,
    now: DateTime<Utc>,
) -> Vec<Effect> {
    let wait = |why: String| vec![Effect::Waiting(why)];
    if let Some(h) = hold {
        return wait(format!("the policy is held by {}", h.by));
    }
    if let Verdict::Closed { reason, next_open } =
        spec.schedule.to_schedule().evaluate(now, last_bump)
    {
        return wait(format!(
            "bump waits: {reason}{}",
            next_opening(&reason, next_open)
        ));
    }
    match gate {
        GateVerdict::Clear => vec![Effect::PushDirect, Effect::RecordBump],
        GateVerdict::Firing(alerts) => wait(format!("alerts firing: {}", alerts.join(", "))),
        GateVerdict::Unknown(why) => wait(format!("alert state unknown: {why}")),
    }
}

/// Whether a merge of the open PR may follow from this reconcile, so its checks and
/// mergeability are worth reading: new commands may lift a hold, so they always get
/// the full read; otherwise a hold, a `do-not-merge/…` label, a closed schedule or a
/// gate that is not Clear blocks the merge whatever the checks say (skipping them
/// keeps a quiet blocked reconcile at two conditional requests).
#[must_use]
pub fn merge_may_follow(
    spec: &AutobumpSpec,
    hold: Option<&Hold>,
    labels: &[String],
    new_commands: bool,
    gate: &GateVerdict,
    now: DateTime<Utc>,
) -> bool {
    new_commands
        || (hold.is_none()
            && !labels.iter().any(|l| l.starts_with("do-not-merge/"))
            && spec.schedule.to_schedule().is_open(now)
            && gate.is_clear())
}

/// " (next opening T)" when the reason does not already say until when.
fn next_opening(
    reason: &super::schedule::ClosedReason,
    next_open: Option<DateTime<Utc>>,
) -> String {
    match (reason, next_open) {
        (super::schedule::ClosedReason::OutsideWindow, Some(t)) => format!(" (next opening {t})"),
        _ => String::new(),
    }
}

fn with_hold_label(mut labels: Vec<String>, held: bool) -> Vec<String> {
    if held && !labels.iter().any(|l| l == HOLD_LABEL) {
        labels.push(HOLD_LABEL.into());
    }
    labels
}

/// Applies the new commands in order; returns the hold in force afterwards.
///
/// A command answers on the PR it was written on. On the open autobump PR the hold
/// label says what happened; on another PR (a closed one, by webhook) a reply does.
fn apply_commands(s: &Snapshot<'_>, now: DateTime<Utc>, effects: &mut Vec<Effect>) -> Option<Hold> {
    let mut hold = s.hold.cloned();
    // What an /unhold must postdate: the comment that placed the hold in force (also
    // one placed in this pass), else the time it was placed.
    let mut held_from = hold.as_ref().map(HeldFrom::of);
    let open_pr = s.pr.as_ref().map(|p| p.view.number);
    for c in &s.commands {
        let reply = |body: String| {
            if open_pr == Some(c.pr) {
                Effect::Comment(body)
            } else {
                Effect::Reply { pr: c.pr, body }
            }
        };
        let elsewhere = open_pr != Some(c.pr);
        let requirements = s.spec.pull_request.as_ref().map_or_else(
            Requirements::default,
            crate::policy::v1alpha1::PullRequestSpec::command_requirements,
        );
        let automatic = hold.as_ref().map(|h| h.automatic);
        match commands::authorize(&c.command, &c.author, c.permission, automatic, requirements) {
            Authorization::Denied(text) => effects.push(reply(text)),
            Authorization::Allowed => match &c.command {
                Command::Hold(reason) if hold.is_none() => {
                    let h = Hold {
                        by: format!("user:{}", c.author),
                        since: now,
                        reason: reason.clone().unwrap_or_else(|| "held with /hold".into()),
                        via: Some(c.url.clone()),
                        automatic: false,
                    };
                    effects.push(Effect::SetHold(h.clone()));
                    if elsewhere {
                        effects.push(reply(format!(
                            "Policy `{}` is now on hold: autobump opens and merges nothing for it until someone with permission comments `/unhold`.",
                            s.policy
                        )));
                    }
                    hold = Some(h);
                    held_from = Some(HeldFrom::Comment(c.id));
                }
                Command::Unhold if held_from.is_some_and(|from| from.is_after(c)) => {
                    // Written before the hold in force was placed (or in the same
                    // instant: GitHub's times are whole seconds, and keeping a hold is
                    // the safe side): it was not meant for this hold.
                    let h = hold.as_ref().map_or_else(String::new, |h| {
                        format!(" (by {}, since {})", h.by, h.since.to_rfc3339())
                    });
                    effects.push(reply(format!(
                        "@{} this `/unhold` was written before the current hold{h} was placed, so it does not lift it. Comment `/unhold` again to lift it.",
                        c.author
                    )));
                }
                Command::Unhold if hold.is_some() => {
                    effects.push(Effect::ClearHold {
                        by: format!("user:{}", c.author),
                    });
                    if elsewhere {
                        effects.push(reply(format!(
                            "The hold on policy `{}` is lifted.",
                            s.policy
                        )));
                    }
                    hold = None;
                    held_from = None;
                }
                // Holding a held policy, or lifting no hold, changes nothing.
                Command::Hold(_) | Command::Unhold => {}
            },
        }
        // Seen only once acted on: a crash in between must leave the command to the
        // next reconcile (which finds it done, or does it), never drop it.
        effects.push(Effect::MarkSeen(c.id));
    }
    hold
}

/// From when the hold in force counts, to tell an /unhold written before it.
#[derive(Debug, Clone, Copy)]
enum HeldFrom {
    /// Placed by this comment: GitHub's comment ids grow, so a later comment has a
    /// larger id, whatever the clocks say.
    Comment(u64),
    /// Placed at this time by autobump or the CLI (autobump's clock).
    Time(DateTime<Utc>),
}

impl HeldFrom {
    fn of(hold: &Hold) -> Self {
        hold.via
            .as_deref()
            .and_then(|via| via.rsplit_once("#issuecomment-"))
            .and_then(|(_, id)| id.parse().ok())
            .map_or(Self::Time(hold.since), Self::Comment)
    }

    /// Whether the hold was placed after command `c` was written (or in the same
    /// second: GitHub's times are whole seconds, and keeping a hold is the safe side).
    fn is_after(self, c: &CommandSeen) -> bool {
        match self {
            Self::Comment(id) => c.id < id,
            Self::Time(since) => c.at <= since,
        }
    }
}

fn sync_hold_label(pr: Option<&PrSnapshot>, hold: Option<&Hold>, effects: &mut Vec<Effect>) {
    let Some(pr) = pr else { return };
    let labelled = pr.view.labels.iter().any(|l| l == HOLD_LABEL);
    match (hold.is_some(), labelled) {
        (true, false) => effects.push(Effect::AddLabels(vec![HOLD_LABEL.into()])),
        (false, true) => effects.push(Effect::RemoveLabel(HOLD_LABEL.into())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::merge::{Check, CheckState};

    fn spec(windows: &str) -> AutobumpSpec {
        let text = format!(
            "images: [{{prefix: gcr.io/k8s-prow/, tags: {{dateSha: {{}}}}}}]\nsource: {{repo: https://github.com/acme/infra.git}}\npullRequest: {{labels: [skip-review]}}\nschedule: {{timezone: UTC, minInterval: 1h{windows}}}\n"
        );
        let docs = crate::policy::yaml::parse_documents(&text).unwrap();
        crate::policy::yaml::from_node(&docs[0], &crate::policy::yaml::Path::root()).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn bump(to: &str) -> PlannedBump {
        PlannedBump {
            rows: vec![Row {
                image: "gcr.io/k8s-prow/hook".into(),
                from: "v20240101-aaaaaaa".into(),
                to: to.into(),
            }],
            source_repos: std::collections::BTreeMap::default(),
            promoted: None,
        }
    }

    fn open_pr(spec: &AutobumpSpec, to: &str, checks: CheckState) -> PrSnapshot {
        let labels: Vec<String> = vec!["skip-review".into()];
        let text = Bump {
            policy: "prow",
            rows: bump(to).rows,
            source_repos: std::collections::BTreeMap::default(),
            labels: &labels,
            evidence: None,
        };
        let _ = spec;
        PrSnapshot {
            view: PrView {
                number: 3,
                author: "bot".into(),
                head_sha: "h1".into(),
                labels: labels.clone(),
                mergeable: Some(true),
                checks_sha: "h1".into(),
                checks: vec![Check {
                    name: "unit".into(),
                    state: checks,
                }],
                retests_posted: 0,
            },
            title: pr::title(&text),
            body: pr::body(&text),
            has_planned_tree: true,
            diff: DiffVerdict::Matches,
        }
    }

    static HELD_BY_AUTOBUMP: std::sync::LazyLock<Hold> = std::sync::LazyLock::new(|| Hold {
        by: "autobump".into(),
        since: at("2026-11-23T09:00:00Z"),
        reason: "PR #3 changes more than the planned bump".into(),
        via: Some("PR #3".into()),
        automatic: true,
    });

    fn snapshot<'a>(spec: &'a AutobumpSpec, hold: Option<&'a Hold>) -> Snapshot<'a> {
        Snapshot {
            policy: "prow",
            spec,
            hold,
            last_bump: None,
            bump: None,
            pr: None,
            commands: Vec::new(),
            bot_login: "bot",
            gate: GateVerdict::Clear,
            rollout_block: None,
            delivery: Mode::PullRequest,
        }
    }

    /// The direct-push plan of a bump under `hold`, `last` bump, `gate` at `when`.
    fn direct_plan(
        s: &AutobumpSpec,
        hold: Option<&Hold>,
        last: Option<DateTime<Utc>>,
        bumped: bool,
        gate: &GateVerdict,
        when: DateTime<Utc>,
    ) -> Vec<Effect> {
        let mut snap = snapshot(s, hold);
        snap.delivery = Mode::DirectPush;
        snap.last_bump = last;
        snap.gate = gate.clone();
        snap.bump = bumped.then(|| bump("v20240106-ccccccc"));
        plan(&snap, when)
    }

    fn kinds(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Waiting(why) => format!("Waiting({why})"),
                Effect::Merge { sha, .. } => format!("Merge({sha})"),
                Effect::AddLabels(l) => format!("AddLabels({})", l.join(",")),
                Effect::RemoveLabel(l) => format!("RemoveLabel({l})"),
                other => other.kind().to_owned(),
            })
            .collect()
    }

    #[test]
    fn opens_a_pr_inside_the_window_only() {
        let s = spec(", windows: [\"Mon-Fri 09:00-17:00\"]");
        let mut snap = snapshot(&s, None);
        snap.bump = Some(bump("v20240105-bbbbbbb"));
        // Monday 2026-11-23 10:00 UTC: open.
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert_eq!(kinds(&e), ["PushBranch", "CreatePr", "RecordBump"]);
        let Effect::CreatePr { labels, .. } = &e[1] else {
            panic!()
        };
        assert_eq!(labels, &["skip-review"]);
        // Saturday: nothing is pushed.
        let e = plan(&snap, at("2026-11-21T10:00:00Z"));
        assert_eq!(kinds(&e).len(), 1);
        assert!(
            kinds(&e)[0].starts_with("Waiting(bump waits: outside"),
            "{e:?}"
        );
        // Within minInterval of the last bump: nothing either.
        snap.last_bump = Some(at("2026-11-23T09:30:00Z"));
        assert!(kinds(&plan(&snap, at("2026-11-23T10:00:00Z")))[0].starts_with("Waiting"));
    }

    #[test]
    fn a_newer_version_refreshes_the_same_pr_and_nothing_new_writes_nothing() {
        let s = spec("");
        let mut snap = snapshot(&s, None);
        snap.bump = Some(bump("v20240106-ccccccc"));
        let mut stale = open_pr(&s, "v20240105-bbbbbbb", CheckState::Success);
        stale.has_planned_tree = false;
        snap.pr = Some(stale);
        assert_eq!(
            kinds(&plan(&snap, at("2026-11-23T10:00:00Z"))),
            ["PushBranch", "UpdatePr", "RecordBump"]
        );

        // The PR carries the plan and its checks are running: nothing writes.
        snap.bump = Some(bump("v20240105-bbbbbbb"));
        snap.pr = Some(open_pr(&s, "v20240105-bbbbbbb", CheckState::Pending));
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert!(e.iter().all(|e| !e.writes()), "{e:?}");
    }

    #[test]
    fn green_pr_merges_at_the_read_sha() {
        let s = spec("");
        let mut snap = snapshot(&s, None);
        snap.bump = Some(bump("v20240105-bbbbbbb"));
        snap.pr = Some(open_pr(&s, "v20240105-bbbbbbb", CheckState::Success));
        assert_eq!(
            kinds(&plan(&snap, at("2026-11-23T10:00:00Z"))),
            ["Merge(h1)"]
        );
    }

    #[test]
    fn hold_comments_are_authorised_and_mirrored_by_the_label() {
        let s = spec("");
        let mut snap = snapshot(&s, None);
        snap.pr = Some(open_pr(&s, "v20240105-bbbbbbb", CheckState::Success));
        snap.commands = vec![
            CommandSeen {
                id: 1,
                author: "mallory".into(),
                permission: Permission::Read,
                command: Command::Hold(None),
                url: "u1".into(),
                at: at("2026-11-23T09:00:00Z"),
                pr: 3,
            },
            CommandSeen {
                id: 2,
                author: "alice".into(),
                permission: Permission::Triage,
                command: Command::Hold(Some("migration".into())),
                url: "u2".into(),
                at: at("2026-11-23T09:00:00Z"),
                pr: 3,
            },
        ];
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert_eq!(
            kinds(&e),
            [
                "Comment",
                "MarkSeen",
                "SetHold",
                "MarkSeen",
                "AddLabels(do-not-merge/hold)",
                "Waiting(the policy is held by user:alice)"
            ]
        );
        let Effect::SetHold(h) = &e[2] else { panic!() };
        assert_eq!(
            (h.reason.as_str(), h.via.as_deref(), h.automatic),
            ("migration", Some("u2"), false)
        );

        // Lifted by someone with write: the label goes and the PR merges.
        let held = h.clone();
        let mut snap = snapshot(&s, Some(&held));
        let mut labelled = open_pr(&s, "v20240105-bbbbbbb", CheckState::Success);
        labelled.view.labels.push(HOLD_LABEL.into());
        snap.pr = Some(labelled);
        snap.commands = vec![CommandSeen {
            id: 3,
            author: "bob".into(),
            permission: Permission::Write,
            command: Command::Unhold,
            url: "u3".into(),
            at: at("2026-11-23T10:00:30Z"),
            pr: 3,
        }];
        assert_eq!(
            kinds(&plan(&snap, at("2026-11-23T10:00:00Z"))),
            [
                "ClearHold",
                "MarkSeen",
                "RemoveLabel(do-not-merge/hold)",
                "Waiting(the PR is labelled do-not-merge/hold)"
            ]
        );
    }

    fn command(id: u64, who: &str, command: Command, when: &str, pr: u64) -> CommandSeen {
        CommandSeen {
            id,
            author: who.into(),
            permission: Permission::Write,
            command,
            url: format!("https://github.com/acme/infra/pull/{pr}#c{id}"),
            at: at(when),
            pr,
        }
    }

    #[test]
    fn an_unhold_written_before_the_hold_does_not_lift_it() {
        let s = spec("");
        let cli = Hold {
            by: "cli:alice".into(),
            since: at("2026-11-23T09:10:00Z"),
            reason: "migration".into(),
            via: Some("cli".into()),
            automatic: false,
        };
        let mut snap = snapshot(&s, Some(&cli));
        snap.pr = Some(open_pr(&s, "v20240105-bbbbbbb", CheckState::Success));
        snap.commands = vec![command(
            5,
            "wanda",
            Command::Unhold,
            "2026-11-23T09:00:00Z",
            3,
        )];
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert_eq!(kinds(&e)[..2], ["Comment", "MarkSeen"], "{e:?}");
        assert!(!e.iter().any(|e| matches!(e, Effect::ClearHold { .. })));
        let Effect::Comment(reply) = &e[0] else {
            panic!()
        };
        assert!(reply.contains("written before the current hold"), "{reply}");

        // Written after it: lifted.
        snap.commands[0].at = at("2026-11-23T09:20:00Z");
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert_eq!(kinds(&e)[..2], ["ClearHold", "MarkSeen"], "{e:?}");
    }

    #[test]
    fn a_hold_by_comment_is_ordered_by_comment_id_not_by_clocks() {
        let s = spec("");
        // autobump's clock ran ahead of GitHub's when it recorded the hold.
        let by_comment = Hold {
            by: "user:trinity".into(),
            since: at("2026-11-23T12:00:00Z"),
            reason: "migration".into(),
            via: Some("https://github.com/acme/infra/pull/3#issuecomment-50".into()),
            automatic: false,
        };
        let mut snap = snapshot(&s, Some(&by_comment));
        snap.pr = Some(open_pr(&s, "v20240105-bbbbbbb", CheckState::Success));
        snap.commands = vec![command(
            49,
            "wanda",
            Command::Unhold,
            "2026-11-23T11:00:00Z",
            3,
        )];
        let e = plan(&snap, at("2026-11-23T12:30:00Z"));
        assert!(
            !e.iter().any(|e| matches!(e, Effect::ClearHold { .. })),
            "{e:?}"
        );
        snap.commands = vec![command(
            51,
            "wanda",
            Command::Unhold,
            "2026-11-23T11:00:00Z",
            3,
        )];
        let e = plan(&snap, at("2026-11-23T12:30:00Z"));
        assert_eq!(kinds(&e)[..2], ["ClearHold", "MarkSeen"], "{e:?}");
    }

    #[test]
    fn a_hold_and_a_later_unhold_read_together_both_apply() {
        let s = spec("");
        let mut snap = snapshot(&s, None);
        snap.pr = Some(open_pr(&s, "v20240105-bbbbbbb", CheckState::Success));
        snap.commands = vec![
            command(1, "alice", Command::Hold(None), "2026-11-23T09:00:00Z", 3),
            command(2, "alice", Command::Unhold, "2026-11-23T09:05:00Z", 3),
        ];
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert_eq!(
            kinds(&e),
            ["SetHold", "MarkSeen", "ClearHold", "MarkSeen", "Merge(h1)"]
        );
        let Effect::SetHold(h) = &e[0] else { panic!() };
        assert_eq!(h.since, at("2026-11-23T10:00:00Z"));
    }

    #[test]
    fn commands_on_a_closed_pr_hold_the_policy_and_answer_there() {
        let s = spec("");
        let mut snap = snapshot(&s, None);
        snap.commands = vec![command(
            8,
            "alice",
            Command::Hold(Some("incident".into())),
            "2026-11-23T09:00:00Z",
            7,
        )];
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert_eq!(kinds(&e), ["SetHold", "Reply", "MarkSeen"], "{e:?}");
        let Effect::Reply { pr, body } = &e[1] else {
            panic!()
        };
        assert_eq!(*pr, 7);
        assert!(body.contains("`prow` is now on hold"), "{body}");

        // A denial answers on the PR the command was written on, not the open one.
        let mut snap = snapshot(&s, None);
        snap.pr = Some(open_pr(&s, "v20240105-bbbbbbb", CheckState::Success));
        let mut denied = command(9, "reader", Command::Hold(None), "2026-11-23T09:00:00Z", 7);
        denied.permission = Permission::Read;
        snap.commands = vec![denied];
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert!(
            matches!(&e[0], Effect::Reply { pr: 7, body } if body.contains("Sorry @reader")),
            "{e:?}"
        );
    }

    #[test]
    fn direct_push_needs_everything_a_merge_needs() {
        let s = spec(", windows: [\"Mon-Fri 09:00-17:00\"]");
        let monday = at("2026-11-23T10:00:00Z");
        let clear = GateVerdict::Clear;
        assert_eq!(
            kinds(&direct_plan(&s, None, None, true, &clear, monday)),
            ["PushDirect", "RecordBump"]
        );
        assert!(direct_plan(&s, None, None, false, &clear, monday).is_empty());
        let held = Hold {
            by: "user:a".into(),
            since: monday,
            reason: "x".into(),
            via: None,
            automatic: false,
        };
        for (hold, last, gate, when, why) in [
            (
                Some(&held),
                None,
                clear.clone(),
                monday,
                "the policy is held by user:a",
            ),
            (
                None,
                None,
                clear.clone(),
                at("2026-11-21T10:00:00Z"),
                "bump waits: outside",
            ),
            (
                None,
                Some(at("2026-11-23T09:30:00Z")),
                clear.clone(),
                monday,
                "bump waits: ",
            ),
            (
                None,
                None,
                GateVerdict::Firing(vec!["A".into()]),
                monday,
                "alerts firing: A",
            ),
            (
                None,
                None,
                GateVerdict::Unknown("down".into()),
                monday,
                "alert state unknown: down",
            ),
        ] {
            let e = direct_plan(&s, hold, last, true, &gate, when);
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(kinds(&e)[0].starts_with(&format!("Waiting({why}")), "{e:?}");
        }
    }

    #[test]
    fn hold_permissions_are_configurable() {
        let mut s = spec("");
        s.pull_request.as_mut().unwrap().hold_permission =
            crate::policy::v1alpha1::RepoPermission::Write;
        let mut snap = snapshot(&s, None);
        snap.pr = Some(open_pr(&s, "v20240105-bbbbbbb", CheckState::Success));
        snap.commands = vec![CommandSeen {
            id: 1,
            author: "trinity".into(),
            permission: Permission::Triage,
            command: Command::Hold(None),
            url: "u".into(),
            at: at("2026-11-23T09:00:00Z"),
            pr: 3,
        }];
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert_eq!(kinds(&e)[..2], ["Comment", "MarkSeen"]);
        let Effect::Comment(reply) = &e[0] else {
            panic!()
        };
        assert!(reply.contains("at least `write`"), "{reply}");
    }

    #[test]
    fn a_tampered_pr_holds_the_policy_once() {
        let s = spec("");
        let mut snap = snapshot(&s, None);
        let mut tampered = open_pr(&s, "v20240105-bbbbbbb", CheckState::Success);
        tampered.diff = DiffVerdict::Differs("Makefile is changed but not part of the bump".into());
        snap.pr = Some(tampered.clone());
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert_eq!(
            kinds(&e),
            ["SetHold", "AddLabels(do-not-merge/hold)", "Comment"]
        );
        let Effect::SetHold(h) = &e[0] else { panic!() };
        assert!(h.automatic);
        // Next reconcile: already held; no second comment, never a merge.
        let held = h.clone();
        let mut snap = snapshot(&s, Some(&held));
        tampered.view.labels.push(HOLD_LABEL.into());
        snap.pr = Some(tampered);
        let e = plan(&snap, at("2026-11-23T10:05:00Z"));
        assert!(e.iter().all(|e| !e.writes()), "{e:?}");
    }

    #[test]
    fn a_pr_whose_versions_vanished_is_replaced_not_held() {
        let s = spec("");
        let mut snap = snapshot(&s, None);
        let mut stale = open_pr(&s, "v20240105-bbbbbbb", CheckState::Success);
        stale.has_planned_tree = false;
        stale.diff = DiffVerdict::Unverified(
            "config/hook.yaml:1: the registry does not list this tag".into(),
        );
        snap.pr = Some(stale);
        // Nothing newer to replace it with: it waits, writing nothing (no hold, no
        // comment: nobody tampered with it).
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert!(e.iter().all(|e| !e.writes()), "{e:?}");
        assert!(
            kinds(&e)[0].starts_with("Waiting(the PR moves to versions that cannot be verified"),
            "{e:?}"
        );
        // The next bump replaces its contents (within the schedule and minInterval).
        snap.bump = Some(bump("v20240106-ccccccc"));
        assert_eq!(
            kinds(&plan(&snap, at("2026-11-23T10:00:00Z"))),
            ["PushBranch", "UpdatePr", "RecordBump"]
        );
        snap.last_bump = Some(at("2026-11-23T09:30:00Z"));
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert!(e.iter().all(|e| !e.writes()), "{e:?}");
    }

    #[test]
    fn a_tampered_pr_keeps_its_title() {
        let s = spec("");
        let mut snap = snapshot(&s, Some(&HELD_BY_AUTOBUMP));
        let mut tampered = open_pr(&s, "v20240105-bbbbbbb", CheckState::Success);
        tampered.has_planned_tree = false;
        tampered.diff = DiffVerdict::Differs("Makefile is changed but not part of the bump".into());
        tampered.view.labels.push(HOLD_LABEL.into());
        snap.pr = Some(tampered);
        snap.bump = Some(bump("v20240106-ccccccc"));
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert!(e.iter().all(|e| !e.writes()), "{e:?}");
    }

    #[test]
    fn a_baking_version_blocks_bumps_and_merges_but_not_commands() {
        let s = spec("");
        let mut snap = snapshot(&s, None);
        snap.bump = Some(bump("v20240106-ccccccc"));
        snap.pr = Some(open_pr(&s, "v20240105-bbbbbbb", CheckState::Success));
        snap.rollout_block = Some(Block::Rollout("v1 is baking".into()));
        snap.commands = vec![CommandSeen {
            id: 9,
            author: "alice".into(),
            permission: Permission::Write,
            command: Command::Hold(None),
            url: "u".into(),
            at: at("2026-11-23T09:00:00Z"),
            pr: 3,
        }];
        let e = plan(&snap, at("2026-11-23T10:00:00Z"));
        assert_eq!(
            kinds(&e),
            [
                "SetHold",
                "MarkSeen",
                "AddLabels(do-not-merge/hold)",
                "Waiting(v1 is baking)"
            ]
        );
    }

    #[test]
    fn gate_firing_or_unknown_never_merges() {
        let s = spec("");
        for gate in [
            GateVerdict::Firing(vec!["HookDown".into()]),
            GateVerdict::Unknown("timeout".into()),
        ] {
            let mut snap = snapshot(&s, None);
            snap.pr = Some(open_pr(&s, "v20240105-bbbbbbb", CheckState::Success));
            snap.gate = gate;
            let e = plan(&snap, at("2026-11-23T10:00:00Z"));
            assert!(
                !e.iter().any(|e| matches!(e, Effect::Merge { .. })),
                "{e:?}"
            );
        }
    }
}
