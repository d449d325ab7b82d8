//! The safety invariants of `DESIGN.md` ("Safety invariants" 1–7), checked against the
//! world at the moment something happens (a merge, a push, a store write, a write to
//! a workload, the end of a reconcile), plus the bookkeeping they need. Every
//! evaluation is counted per invariant; the first violation ends the history.
//!
//! What they say about the cluster (`rollout.workloads`, `rollback.patchCluster`) is
//! checked under names of its own (`2c`, `3c`, `5c`, `7c`), so their counts show that
//! the generator reaches them.
//!
//! The checks use the world's own knowledge (what is on `main`, what the registry
//! lists, who commented what with which role, what the gate was) and independent
//! oracles (the schedule in [`crate::scenario::ScheduleOracle`], a line-level diff
//! check) rather than autobump's code, so a bug shared by the controller and its
//! helpers still shows.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use autobump::cluster::ContainerImage;
use autobump::core::commands::{self, Command, Permission};
use autobump::store::PolicyState;
use chrono::{DateTime, TimeDelta, Utc};

use crate::scenario::image_tokens;
use crate::world::{BOT, Files, MAIN, Pr, Versions, World, Writer};

/// 1. Nothing merges outside a window, during a freeze, or while held.
pub const I1: &str = "1 window/freeze/hold";
/// 2. Nothing merges or is promoted unless the gate is Clear.
pub const I2: &str = "2 gate clear";
/// 3. Only the planned bump merges, at the head whose checks were read.
pub const I3: &str = "3 diff and head";
/// 4. At most one bump per minInterval; at most one open PR.
pub const I4: &str = "4 interval, one PR";
/// 5. A rollback is never blocked.
pub const I5: &str = "5 rollback unblocked";
/// 6. Holds: lifted only by a person; who, when, why.
pub const I6: &str = "6 holds";
/// 7. Crash-restart converges: no duplicate PR, lost hold, double rollback.
pub const I7: &str = "7 crash convergence";
/// 2 in the cluster: nothing is promoted before every workload runs it, rolled out,
/// for the whole bake.
pub const C2: &str = "2c promoted after rollout";
/// 3 in the cluster: autobump writes a workload only during a rollback, only the
/// policy's images, only to the last known-good version (never one recorded as bad).
pub const C3: &str = "3c patch to known-good";
/// 5 in the cluster: with `patchCluster`, a due rollback reaches every workload
/// within a few clean reconciles.
pub const C5: &str = "5c rollback reaches cluster";
/// 7 in the cluster: a workload is written once per rollback (a crash or a retry
/// never writes it again unless the applier reverted it).
pub const C7: &str = "7c one patch per revert";
/// Promotion: a policy with `promotion.from` lands only versions its upstream recorded
/// as known-good (and not bad there) at that moment.
pub const P1: &str = "P1 only proven upstream";
/// Promotion: a version bad in the policy or its upstream is never proposed (a bump
/// branch pushed, a direct push) there.
pub const P2: &str = "P2 bad never proposed";
/// Notifications: each history entry is delivered at most once, across crashes and
/// restarts, and only entries the state records are delivered.
pub const N1: &str = "N notified once";
/// Liveness: a newer good version goes out.
pub const L1: &str = "L1 bump liveness";
/// Liveness: after a rollback and the hold lifted, a newer good version goes out.
pub const L2: &str = "L2 liveness after rollback";

/// Every name, in report order.
pub const ALL: &[&str] = &[
    I1, I2, I3, I4, I5, I6, I7, C2, C3, C5, C7, N1, P1, P2, L1, L2,
];

/// A violated invariant.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Which one.
    pub invariant: &'static str,
    /// What happened.
    pub message: String,
}

/// What lands on main.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// A bump (PR merge or direct push).
    Bump,
    /// A rollback (PR merge or direct push).
    Rollback,
    /// A PR that is neither.
    Other,
}

/// Bookkeeping and results.
#[derive(Debug, Default)]
pub struct Checker {
    /// Evaluations per invariant.
    pub counts: BTreeMap<&'static str, u64>,
    /// Violations (the first ends the history).
    pub violations: Vec<Violation>,
    /// Since when main deploys its current versions.
    main_since: Option<(DateTime<Utc>, Versions)>,
    /// When bumps were pushed.
    last_bump_push: Option<DateTime<Utc>>,
    /// Rollbacks landed, by the release they replaced.
    rollbacks_landed: HashMap<Versions, u32>,
    /// Completed reconciles: when, gate Clear, what main deployed.
    completed: Vec<Reading>,
    /// `/unhold` comments that already lifted a hold.
    consumed: HashSet<u64>,
    /// The event counter when the hold in force was placed, and whether by the CLI.
    hold_placed: Option<(u64, bool)>,
    /// The event counter of the last rollback decision.
    pub last_rollback: Option<u64>,
    /// Clean reconciles since a rollback became due.
    rollback_due_clean: u32,
    /// Rollback decisions so far.
    pub rollbacks: u32,
    /// Bumps landed on main.
    pub bumps_landed: u32,
    /// Bumps landed that deploy a bad build.
    pub bad_bumps: u32,
    /// Promotions.
    pub promotions: u32,
    /// Holds placed.
    pub holds: u32,
    /// Merges a CLI hold raced (placed while the reconcile ran, after it read the store).
    pub hold_races: u32,
    /// Bumps that landed a tag deleted while their reconcile ran (after it was listed).
    pub tag_races: u32,
    /// Rollbacks decided in a reconcile that could not observe the rollout (the
    /// cluster unreachable or failing): the cluster must not delay a rollback.
    pub blind_rollbacks: u32,
    /// Holds lifted.
    lifts: Vec<Lift>,
    /// Every version ever promoted: `(repo, tag)`.
    promoted_versions: HashSet<(String, String)>,
    /// Clean reconciles since a due rollback should have reached the cluster.
    cluster_due_clean: u32,
}

/// A completed reconcile: when, whether the gate was Clear, what main deployed.
type Reading = (DateTime<Utc>, bool, Versions);

/// A hold lifted.
#[derive(Debug, Clone, Copy)]
struct Lift {
    /// The event counter of the store write.
    written: u64,
    /// The event counter of the decision (the comment; the write, for the CLI).
    decided: u64,
    /// The person's role.
    role: Permission,
}

impl Checker {
    /// Counts one evaluation of `inv`.
    pub fn count(&mut self, inv: &'static str) {
        *self.counts.entry(inv).or_default() += 1;
    }

    /// Records a violation of `inv`.
    pub fn fail(&mut self, inv: &'static str, message: impl Into<String>) {
        self.violations.push(Violation {
            invariant: inv,
            message: message.into(),
        });
    }

    /// The event counter when the hold in force was placed.
    pub fn hold_placed_seq(&self) -> u64 {
        self.hold_placed.map_or(0, |(seq, _)| seq)
    }

    /// Main's versions changed (or not).
    pub fn on_main_changed(&mut self, now: DateTime<Utc>, versions: &Versions) {
        if self.main_since.as_ref().is_none_or(|(_, v)| v != versions) {
            self.main_since = Some((now, versions.clone()));
        }
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(8)]
}

/// A line with the versions (`tag[@digest]`) of its references replaced by `*`, to
/// compare lines around references.
fn blank(line: &str, prefix: &str) -> String {
    let mut out = String::new();
    let mut last = 0;
    for t in image_tokens(line, prefix) {
        out.push_str(&line[last..t.version_at()]);
        out.push('*');
        last = t.version_at() + t.version_len();
    }
    out.push_str(&line[last..]);
    out
}

/// An image reference moved: repository, old tag, new tag.
type Move = (String, String, String);

/// Checks that `before → after` changes only tags of the policy's images, in the
/// policy's files, within their series; returns the references moved.
fn image_only_diff(w: &World, before: &Files, after: &Files) -> Result<Vec<Move>, String> {
    let prefix = &w.scenario.prefix;
    let mut moved = Vec::new();
    let paths: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for path in paths {
        let (old, new) = (before.get(path), after.get(path));
        if old == new {
            continue;
        }
        if !w.scenario.included(path) {
            return Err(format!("{path} changed, but the policy does not cover it"));
        }
        let (Some(old), Some(new)) = (old, new) else {
            return Err(format!("{path} was added or deleted"));
        };
        let (ol, nl): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
        if ol.len() != nl.len() || old.ends_with('\n') != new.ends_with('\n') {
            return Err(format!("{path}: lines were added or removed"));
        }
        for (i, (o, n)) in ol.iter().zip(&nl).enumerate() {
            if o == n {
                continue;
            }
            let (ot, nt) = (image_tokens(o, prefix), image_tokens(n, prefix));
            if ot.is_empty() || ot.len() != nt.len() || blank(o, prefix) != blank(n, prefix) {
                return Err(format!(
                    "{path}:{}: changes more than image tags: {o:?} -> {n:?}",
                    i + 1
                ));
            }
            let comment_at = o.find('#').unwrap_or(usize::MAX);
            for (a, b) in ot.iter().zip(&nt) {
                if a.tag == b.tag && a.digest == b.digest {
                    continue;
                }
                if let Some(d) = b.digest
                    && !w.registry.had_digest(b.repo, b.tag, d)
                {
                    return Err(format!(
                        "{path}:{}: {}:{} pinned to {d}, which that tag never had",
                        i + 1,
                        b.repo,
                        b.tag
                    ));
                }
                if a.repo != b.repo || !a.repo.starts_with(prefix.as_str()) {
                    return Err(format!(
                        "{path}:{}: {} is not the policy's image",
                        i + 1,
                        b.repo
                    ));
                }
                if w.scenario.structured && a.at > comment_at {
                    return Err(format!(
                        "{path}:{}: a comment changed in structured mode",
                        i + 1
                    ));
                }
                if !w.scenario.tags.same_series(a.tag, b.tag) {
                    return Err(format!(
                        "{path}:{}: {} -> {} leaves the series",
                        i + 1,
                        a.tag,
                        b.tag
                    ));
                }
                moved.push((b.repo.to_owned(), a.tag.to_owned(), b.tag.to_owned()));
            }
        }
    }
    Ok(moved)
}

/// Something landed on main (`pr`: the merged PR and the SHA the merge named).
pub fn on_landing(
    w: &mut World,
    kind: Landing,
    before: &Files,
    after: &Files,
    pr: Option<(&Pr, &str)>,
) {
    match kind {
        Landing::Other => {
            w.checker.count(I3);
            let number = pr.map_or(0, |(p, _)| p.number);
            w.checker.fail(
                I3,
                format!("autobump merged PR #{number}, which is not its bump or rollback PR"),
            );
        }
        Landing::Bump => {
            w.checker.bumps_landed += 1;
            let bad = w
                .versions_in(after)
                .iter()
                .any(|(r, t)| w.registry.is_bad(r, t));
            w.checker.bad_bumps += u32::from(bad);
            landing_bump(w, before, after, pr);
            if pr.is_none() {
                bump_pushed(w);
            }
        }
        Landing::Rollback => {
            w.checker.count(I3);
            w.checker.count(I7);
            let state = w.state();
            let good: Versions = state
                .last_known_good
                .iter()
                .flat_map(|r| r.images.iter().map(|i| (i.image.clone(), i.tag.clone())))
                .collect();
            match image_only_diff(w, before, after) {
                Err(why) => w.checker.fail(
                    I3,
                    format!("a rollback changed more than image versions: {why}"),
                ),
                Ok(moved) => {
                    if let Some((repo, _, tag)) = moved
                        .iter()
                        .find(|(r, _, t)| !good.contains(&(r.clone(), t.clone())))
                    {
                        w.checker.fail(
                            I3,
                            format!(
                                "a rollback moved {repo}:{tag} which is not the last known-good"
                            ),
                        );
                    }
                }
            }
            let replaced = w.versions_in(before);
            let bad = state.bad_pairs();
            if !replaced
                .iter()
                .any(|(r, t)| bad.contains(&(r.clone(), t.clone())))
            {
                w.checker.fail(
                    I7,
                    format!("a rollback replaced {replaced:?}, which was never recorded as bad"),
                );
            }
            let n = {
                let n = w
                    .checker
                    .rollbacks_landed
                    .entry(replaced.clone())
                    .or_default();
                *n += 1;
                *n
            };
            if n > 1 {
                w.checker
                    .fail(I7, format!("{replaced:?} was rolled back {n} times"));
            }
        }
    }
}

fn landing_bump(w: &mut World, before: &Files, after: &Files, pr: Option<(&Pr, &str)>) {
    let now = w.now;
    // 1: window, freeze, hold.
    w.checker.count(I1);
    let oracle_open = w.scenario.oracle.open(now);
    if !oracle_open {
        w.checker.fail(
            I1,
            format!(
                "a bump landed at {now} ({} local), outside the schedule",
                now.with_timezone(&w.scenario.oracle.tz)
            ),
        );
    }
    let state = w.state();
    if let Some(h) = &state.hold {
        let raced = w.rc.as_ref().is_some_and(|rc| rc.concurrent_cli_hold)
            && w.checker
                .hold_placed
                .is_some_and(|(seq, cli)| cli && seq > w.rc.as_ref().map_or(0, |rc| rc.start_seq));
        if raced {
            // Not a bug: a hold placed with the CLI after the reconcile read the store
            // is a race no check closes (the merge was decided before it existed).
            w.checker.hold_races += 1;
        } else {
            w.checker.fail(
                I1,
                format!(
                    "a bump landed while held by {} since {} ({})",
                    h.by, h.since, h.reason
                ),
            );
        }
    }
    // 2: gate.
    w.checker.count(I2);
    if let Some(rc) = &w.rc
        && !rc.gate.is_clear()
    {
        let gate = rc.gate.clone();
        w.checker
            .fail(I2, format!("a bump landed while the gate was {gate:?}"));
    }
    // 3: diff, registry, head and checks.
    w.checker.count(I3);
    match image_only_diff(w, before, after) {
        Err(why) => w.checker.fail(
            I3,
            format!("a bump changed more than image versions: {why}"),
        ),
        Ok(moved) => {
            if moved.is_empty() {
                w.checker.fail(I3, "a bump landed that moves no image");
            }
            policy_order(w, &moved);
            if let Some((repo, _, tag)) = moved.iter().find(|(r, _, t)| !w.registry.has(r, t)) {
                let m = (repo.clone(), tag.clone());
                let start = w.rc.as_ref().map_or(u64::MAX, |rc| rc.start_seq);
                if w.registry.deleted.get(&m).is_some_and(|at| *at > start) {
                    // Not a bug: deleted between the listing and the push, a race no
                    // check closes. (A tag deleted earlier must not merge, even when
                    // the registry cannot be read in the reconcile that merges.)
                    w.checker.tag_races += 1;
                } else {
                    w.checker.fail(
                        I3,
                        format!("a bump moved {repo}:{tag}, which the registry does not list"),
                    );
                }
            }
            let bad = state.bad_pairs();
            if let Some((repo, _, tag)) = moved
                .iter()
                .find(|(r, _, t)| bad.contains(&(r.clone(), t.clone())))
            {
                let message = format!("a bump moved {repo}:{tag}, a version recorded as bad");
                w.checker.fail(I3, message);
            }
            let versions: Versions = moved
                .iter()
                .map(|(r, _, t)| (r.clone(), t.clone()))
                .collect();
            promoted_only(w, &versions, "landed");
        }
    }
    if let Some((pr, expected)) = pr {
        merged_pr(w, pr, expected);
    }
    // 6: after a rollback, a person with write lifted a hold before anything new lands.
    after_rollback_needs_person(w, "a bump landed");
}

/// A bump moves every reference to a tag the policy accepts (its pattern, range and
/// pre-release rule; never a floating or signature tag) that is strictly newer than
/// the one it replaces (never backwards or sideways, e.g. to another spelling).
fn policy_order(w: &mut World, moved: &[Move]) {
    let tags = &w.scenario.tags;
    let registry = &w.registry;
    let wrong = moved.iter().find_map(|(repo, from, to)| {
        if !tags.accepts(to) {
            Some(format!(
                "a bump moved {repo} to {to}, which the policy's tag rule ({}) excludes",
                tags.yaml()
            ))
        } else if !tags.newer(from, to, |tag| {
            registry.built.get(&(repo.clone(), tag.to_owned())).copied()
        }) {
            Some(format!(
                "a bump moved {repo} from {from} to {to}, which is not newer"
            ))
        } else {
            None
        }
    });
    if let Some(message) = wrong {
        w.checker.fail(I3, message);
    }
}

/// A bump PR merged: by the bot, at the head whose checks autobump read (green) in
/// the same reconcile.
fn merged_pr(w: &mut World, pr: &Pr, expected: &str) {
    if !pr.author.eq_ignore_ascii_case(BOT) {
        w.checker
            .fail(I3, format!("PR #{} by {} merged", pr.number, pr.author));
    }
    let read = w.rc.as_ref().and_then(|rc| {
        rc.checks_read
            .iter()
            .rev()
            .find(|(sha, _)| sha == expected)
            .map(|(_, g)| *g)
    });
    match read {
        None => w.checker.fail(
            I3,
            format!(
                "PR #{} merged at {} without its checks read in that reconcile",
                pr.number,
                short(expected)
            ),
        ),
        Some(false) => w.checker.fail(
            I3,
            format!(
                "PR #{} merged at {} although its checks were not green",
                pr.number,
                short(expected)
            ),
        ),
        Some(true) => {}
    }
}

fn after_rollback_needs_person(w: &mut World, what: &str) {
    w.checker.count(I6);
    let Some(r) = w.checker.last_rollback else {
        return;
    };
    let after: Vec<Lift> = w
        .checker
        .lifts
        .iter()
        .filter(|l| l.written > r)
        .copied()
        .collect();
    if after
        .iter()
        .any(|l| l.decided > r && l.role >= Permission::Write)
    {
        return;
    }
    if after.iter().any(|l| l.decided <= r) {
        w.checker.fail(
            I6,
            format!(
                "{what} after a rollback; the hold was lifted only by an /unhold written before it"
            ),
        );
    } else if !after.is_empty() {
        w.checker.fail(
            I6,
            format!("{what} after a rollback; the hold in force was lifted by someone without write permission"),
        );
    } else {
        w.checker.fail(
            I6,
            format!("{what} after a rollback although nobody lifted a hold since"),
        );
    }
}

/// A bump was pushed (PR branch or base branch): at most one per minInterval.
fn bump_pushed(w: &mut World) {
    let now = w.now;
    w.checker.count(I4);
    if let Some(last) = w.checker.last_bump_push
        && now - last < w.scenario.min_interval
    {
        w.checker.fail(
            I4,
            format!(
                "bumps pushed at {last} and {now}, closer than minInterval {}m",
                w.scenario.min_interval.num_minutes()
            ),
        );
    }
    w.checker.last_bump_push = Some(now);
}

/// The bot pushed `id` to `branch`.
pub fn on_branch_push(w: &mut World, branch: &str, id: &str) {
    if branch == w.scenario.bump_branch {
        bump_pushed(w);
        // What the branch proposes: the versions it carries that main does not.
        let Some(commit) = w.git.commit(id) else {
            return;
        };
        let tree = Arc::clone(&commit.tree);
        let main = w.deployed();
        let proposed: Versions = w
            .versions_in(&tree)
            .into_iter()
            .filter(|v| !main.contains(v))
            .collect();
        promoted_only(w, &proposed, "proposed");
    }
}

/// P1 and P2 for `versions` landed or proposed now: with an upstream, each is proven
/// there and bad neither there nor here.
fn promoted_only(w: &mut World, versions: &Versions, what: &str) {
    let Some(from) = w.scenario.upstreams.first().cloned() else {
        return;
    };
    let up = crate::upstream::state(w, &from);
    let own = w.state();
    let proven = autobump::core::promotion::proven_pairs(&up);
    let mut bad = own.bad_pairs();
    bad.extend(up.bad_pairs());
    w.checker.count(P2);
    if let Some((repo, tag)) = versions.iter().find(|v| bad.contains(v)) {
        w.checker.fail(
            P2,
            format!("{repo}:{tag} {what}, a version recorded as bad here or in {from}"),
        );
    }
    if what == "landed" {
        w.checker.count(P1);
        if let Some((repo, tag)) = versions.iter().find(|v| !proven.contains(v)) {
            w.checker.fail(
                P1,
                format!("{repo}:{tag} landed, which {from} never recorded as known-good"),
            );
        }
    }
}

/// GitHub refused a second PR from the same branch.
pub fn on_duplicate_pr(w: &mut World, branch: &str) {
    w.checker.count(I7);
    w.checker.fail(
        I7,
        format!("autobump tried to open a second PR from {branch}"),
    );
}

/// A PR was opened.
pub fn on_pr_created(w: &mut World, _number: u64) {
    w.checker.count(I4);
    for branch in [
        w.scenario.bump_branch.clone(),
        w.scenario.rollback_branch.clone(),
    ] {
        let open = w
            .prs
            .values()
            .filter(|p| p.open && p.head_branch == branch)
            .count();
        if open > 1 {
            w.checker.fail(I4, format!("{open} open PRs from {branch}"));
        }
    }
}

/// The policy's state changed.
pub fn on_store_write(w: &mut World, before: &PolicyState, after: &PolicyState, writer: &Writer) {
    match (&before.hold, &after.hold) {
        (None, Some(h)) => placed(w, h, writer),
        // A bad rollout puts an automatic hold in force over a person's (it names
        // theirs): placing it is checked like any other.
        (Some(a), Some(b)) if !a.automatic && b.automatic => placed(w, b, writer),
        (Some(a), Some(b)) if a != b => {
            w.checker.count(I6);
            w.checker.fail(I6, format!("hold {a:?} replaced by {b:?}"));
        }
        (Some(h), None) => {
            w.checker.count(I6);
            lifted(w, h.automatic, writer);
        }
        _ => {}
    }
    if after.last_known_good != before.last_known_good
        && let Some(good) = &after.last_known_good
    {
        w.checker.promotions += 1;
        promoted(w, good, after);
    }
    let new_bad: Vec<_> = after
        .bad_versions
        .difference(&before.bad_versions)
        .collect();
    if !new_bad.is_empty() {
        w.checker.rollbacks += 1;
        w.checker.last_rollback = Some(w.seq);
        if let Some(rc) = w.rc.as_mut() {
            rc.rollback_due = true;
            if rc.observe_failed {
                w.checker.blind_rollbacks += 1;
            }
        }
    }
    let new_seen: Vec<u64> = after
        .seen_comments
        .iter()
        .filter(|id| !before.seen_comments.contains(id))
        .copied()
        .collect();
    if let Some(rc) = w.rc.as_mut() {
        rc.newly_seen.extend(new_seen);
    }
}

/// A hold was placed: it says who, when and why, and whoever it names asked for it.
fn placed(w: &mut World, h: &autobump::policy::v1alpha1::Hold, writer: &Writer) {
    let now = w.now;
    w.checker.count(I6);
    w.checker.holds += 1;
    // A hold a person asked for by comment counts from the comment (later
    // comments in the same batch may lift it); others from the write.
    let asked_at = h
        .via
        .as_deref()
        .and_then(|v| v.rsplit_once("issuecomment-"))
        .and_then(|(_, id)| id.parse::<u64>().ok())
        .and_then(|id| w.comments.iter().find(|c| c.id == id))
        .map(|c| c.created_seq);
    w.checker.hold_placed = Some((asked_at.unwrap_or(w.seq), matches!(writer, Writer::Cli(_))));
    if h.by.trim().is_empty() || h.reason.trim().is_empty() || h.since != now {
        w.checker
            .fail(I6, format!("a hold does not say who, when and why: {h:?}"));
    }
    if let Some(user) = h.by.strip_prefix("user:") {
        let allowed = World::permission(user) >= w.scenario.requirements.hold;
        let asked = w.comments.iter().any(|c| {
            c.author == user && matches!(commands::parse(&c.body), Some(Command::Hold(_)))
        });
        if !allowed || !asked {
            w.checker.fail(
                I6,
                format!(
                    "a hold by {user} (role {}) who did not ask for it with a permitted /hold",
                    World::permission(user)
                ),
            );
        }
    }
    if h.automatic && !(h.by.starts_with("alert:") || h.by == "autobump") {
        w.checker.fail(
            I6,
            format!("an automatic hold names {} as its author", h.by),
        );
    }
}

fn lifted(w: &mut World, automatic: bool, writer: &Writer) {
    let placed = w.checker.hold_placed.take().map_or(0, |(seq, _)| seq);
    let seq = w.seq;
    match writer {
        Writer::Cli(_) => w.checker.lifts.push(Lift {
            written: seq,
            decided: seq,
            role: Permission::Admin,
        }),
        Writer::Controller => {
            let needs = w.scenario.unhold_needs(automatic);
            let candidates: Vec<(u64, u64, Permission)> = w
                .comments
                .iter()
                .filter(|c| {
                    !w.checker.consumed.contains(&c.id)
                        && commands::parse(&c.body) == Some(Command::Unhold)
                        && World::permission(&c.author) >= needs
                })
                .map(|c| (c.id, c.created_seq, World::permission(&c.author)))
                .collect();
            let fresh = candidates.iter().find(|(_, created, _)| *created > placed);
            match (fresh, candidates.first()) {
                (Some(&(id, created, role)), _) => {
                    w.checker.consumed.insert(id);
                    w.checker.lifts.push(Lift {
                        written: seq,
                        decided: created,
                        role,
                    });
                }
                (None, Some(&(id, created, role))) => {
                    w.checker.consumed.insert(id);
                    w.checker.lifts.push(Lift {
                        written: seq,
                        decided: created,
                        role,
                    });
                    w.checker.fail(
                        I6,
                        format!("a{} hold was lifted by an /unhold written before the hold was placed (comment {id})", if automatic { "n automatic" } else { "" }),
                    );
                }
                (None, None) => w.checker.fail(
                    I6,
                    format!(
                        "a{} hold was lifted, but nobody with {needs} permission asked for it",
                        if automatic { "n automatic" } else { "" }
                    ),
                ),
            }
        }
    }
}

fn promoted(w: &mut World, good: &autobump::policy::v1alpha1::Release, state: &PolicyState) {
    let now = w.now;
    w.checker.count(I2);
    let versions: Versions = good
        .images
        .iter()
        .map(|i| (i.image.clone(), i.tag.clone()))
        .collect();
    if let Some(rc) = &w.rc
        && !rc.gate.is_clear()
    {
        let gate = rc.gate.clone();
        w.checker.fail(
            I2,
            format!("{} promoted while the gate was {gate:?}", good.summary),
        );
    }
    if versions != w.deployed_versions() {
        w.checker.fail(
            I2,
            format!(
                "{} promoted but main deploys {:?}",
                good.summary,
                w.deployed_versions()
            ),
        );
    }
    let bake = w.scenario.bake.unwrap_or(TimeDelta::zero());
    let need = bake + w.scenario.deploy_delay;
    if let Some((since, _)) = &w.checker.main_since
        && now - *since < need
    {
        let since = *since;
        w.checker.fail(
            I2,
            format!(
                "{} promoted at {now}, deployed since {since}: less than deployDelay + bake",
                good.summary
            ),
        );
    }
    if w.scenario.bake.is_some() {
        // Readings strictly inside the bake: one at its very start may precede (at the
        // same instant) the Clear reading that started it.
        let window_start = now - bake;
        // Whether or not the rollout was complete at that reading: an Unknown gate
        // restarts a started bake either way.
        let noisy = w
            .checker
            .completed
            .iter()
            .find(|(t, clear, v)| *t > window_start && *t < now && !clear && *v == versions)
            .map(|(t, ..)| *t);
        if let Some(t) = noisy {
            w.checker.fail(
                I2,
                format!(
                    "{} promoted at {now}, but a reconcile at {t} saw the gate not Clear during its bake",
                    good.summary
                ),
            );
        }
    }
    let bad = state.bad_pairs();
    if versions.iter().any(|v| bad.contains(v)) {
        w.checker.fail(
            I2,
            format!("{} promoted although recorded as bad", good.summary),
        );
    }
    w.checker.promoted_versions.extend(versions);
    if w.cluster.is_some() {
        promoted_in_cluster(w, good);
    }
}

/// Whether `image` (a container's) runs `good`'s version of its repository: `Some(false)`
/// when it runs another version, `None` when it is none of `good`'s repositories.
fn runs(image: &str, good: &autobump::policy::v1alpha1::Release, prefix: &str) -> Option<bool> {
    let t = image_tokens(image, prefix).into_iter().next()?;
    let want = good.images.iter().find(|i| i.image == t.repo)?;
    Some(t.tag == want.tag && want.digest.as_ref().is_none_or(|d| t.digest == Some(d)))
}

/// 2c: every workload runs the promoted release, and its rollout completed at least a
/// bake before.
fn promoted_in_cluster(w: &mut World, good: &autobump::policy::v1alpha1::Release) {
    use crate::cluster::Outcome;
    let now = w.now;
    w.checker.count(C2);
    let bake = w.scenario.bake.unwrap_or(TimeDelta::zero());
    let prefix = &w.scenario.prefix;
    let cluster = w.cluster.as_ref().expect("checked");
    let mut wrong = None;
    for wl in &cluster.workloads {
        let id = wl.id();
        if let Some(c) = wl
            .containers
            .iter()
            .find(|c| runs(&c.image, good, prefix) == Some(false))
        {
            wrong = Some(format!(
                "{} promoted at {now} while {id} runs {}",
                good.summary, c.image
            ));
            break;
        }
        match wl.outcome {
            Outcome::Completes(at) if at + bake <= now => {}
            Outcome::Completes(at) => {
                wrong = Some(format!(
                    "{} promoted at {now}, but the rollout of {id} completed only at {at} (bake {}m)",
                    good.summary,
                    bake.num_minutes()
                ));
                break;
            }
            Outcome::Stuck(_) | Outcome::Hangs => {
                wrong = Some(format!(
                    "{} promoted at {now} while the rollout of {id} never completes ({:?})",
                    good.summary, wl.outcome
                ));
                break;
            }
        }
    }
    if let Some(message) = wrong {
        w.checker.fail(C2, message);
    }
}

/// autobump is about to write workload `i` with `next` containers (3c, 7c).
pub fn on_cluster_patch(w: &mut World, i: usize, next: &[ContainerImage]) {
    w.checker.count(C3);
    w.checker.count(C7);
    let state = w.state();
    let prefix = w.scenario.prefix.clone();
    let cluster = w.cluster.as_ref().expect("a cluster");
    let workload = &cluster.workloads[i];
    let id = workload.id();
    let mut wrong = Vec::new();
    if !w.rc.as_ref().is_some_and(|rc| rc.rollback_due) {
        wrong.push(format!(
            "{id} patched in a reconcile that neither found nor decided a rollback"
        ));
    }
    let Some(good) = &state.last_known_good else {
        w.checker.fail(
            C3,
            format!("{id} patched although there is no known-good version"),
        );
        return;
    };
    let bad = state.bad_pairs();
    if next.len() != workload.containers.len() {
        wrong.push(format!("{id}: containers added or removed"));
    }
    for (old, new) in workload.containers.iter().zip(next) {
        if old == new {
            continue;
        }
        if old.name != new.name || old.init != new.init {
            wrong.push(format!(
                "{id}: container {} replaced by {}",
                old.name, new.name
            ));
            continue;
        }
        let Some(t) = image_tokens(&new.image, &prefix).into_iter().next() else {
            wrong.push(format!("{id}: {} set to {}", new.name, new.image));
            continue;
        };
        if crate::cluster::policy_repo(&old.image, &prefix).is_none() {
            wrong.push(format!(
                "{id}: {} runs {}, not one of the policy's images, and was set to {}",
                old.name, old.image, new.image
            ));
        } else if runs(&new.image, good, &prefix) != Some(true) {
            wrong.push(format!(
                "{id}: {} set to {}, which is not the last known-good {}",
                new.name, new.image, good.summary
            ));
        } else if bad.contains(&(t.repo.to_owned(), t.tag.to_owned())) {
            wrong.push(format!(
                "{id}: {} set to {}, a version recorded as bad",
                new.name, new.image
            ));
        } else if !w
            .checker
            .promoted_versions
            .contains(&(t.repo.to_owned(), t.tag.to_owned()))
        {
            wrong.push(format!(
                "{id}: {} set to {}, which was never promoted",
                new.name, new.image
            ));
        }
    }
    if let Some(message) = wrong.first() {
        w.checker.fail(C3, message.clone());
    }
    if workload.patched_to.as_deref() == Some(next) {
        w.checker.fail(
            C7,
            format!("{id} patched to the same images again although nothing reverted it"),
        );
    }
}

/// 5c (at the end of a reconcile): with `patchCluster`, while main deploys a version
/// recorded as bad, every workload runs the known-good within a few clean reconciles.
fn cluster_rollback(w: &mut World, clean: bool) {
    let patches = w.scenario.cluster.as_ref().is_some_and(|c| c.patch);
    if !patches || !rollback_due(w) {
        w.checker.cluster_due_clean = 0;
        return;
    }
    w.checker.count(C5);
    let now = w.now;
    let state = w.state();
    let good = state.last_known_good.clone().expect("a rollback is due");
    let prefix = w.scenario.prefix.clone();
    let cluster = w.cluster.as_ref().expect("a cluster");
    // Not a bug: a workload cannot be written while the API server is unreachable or
    // while it refuses writes; such reconciles do not count towards the limit (the
    // rollback in git is checked by 5 whatever the cluster does).
    let blocked = !cluster.reachable || cluster.refusal.is_some_and(|r| now < r.until);
    let behind: Vec<String> = cluster
        .workloads
        .iter()
        .flat_map(|wl| {
            wl.containers
                .iter()
                .filter(|c| runs(&c.image, &good, &prefix) == Some(false))
                .map(move |c| format!("{} {} runs {}", wl.id(), c.name, c.image))
        })
        .collect();
    if behind.is_empty() {
        w.checker.cluster_due_clean = 0;
    } else if clean && !blocked {
        w.checker.cluster_due_clean += 1;
        if w.checker.cluster_due_clean > 2 {
            w.checker.fail(
                C5,
                format!(
                    "a rollback to {} is due, but after {} clean reconciles {}",
                    good.summary,
                    w.checker.cluster_due_clean,
                    behind.join("; ")
                ),
            );
        }
    }
}

/// The reconcile in progress ended (`ok`: it returned Ok).
pub fn on_reconcile_end(w: &mut World, ok: bool) {
    let Some(rc) = w.rc.clone() else { return };
    let now = w.now;
    let state = w.state();
    // 7: no lost hold. The last permitted command among the comments this reconcile
    // marked seen decides whether a person's hold must be in force.
    w.checker.count(I7);
    let mut wants_hold: Option<(DateTime<Utc>, u64)> = None;
    for id in &rc.newly_seen {
        let Some(c) = w.comments.iter().find(|c| c.id == *id) else {
            continue;
        };
        let role = World::permission(&c.author);
        match commands::parse(&c.body) {
            Some(Command::Hold(_)) if role >= w.scenario.requirements.hold => {
                wants_hold = Some((c.created_at, c.id));
            }
            Some(Command::Unhold) if role >= w.scenario.unhold_needs(false) => wants_hold = None,
            _ => {}
        }
    }
    // Not a bug: a reconcile that failed or crashed after applying a later permitted
    // /unhold but before marking it seen (commands apply in order, each followed by its
    // mark) lifted the hold legitimately; the restart reads that /unhold again.
    let lifted_unseen = |hold: (DateTime<Utc>, u64)| {
        !ok && w.comments.iter().any(|c| {
            // Written before the reconcile started: a comment takes the event
            // number it made, so one made last before the start has `start_seq`.
            c.created_seq <= rc.start_seq
                && (c.created_at, c.id) > hold
                && !state.seen_comments.contains(&c.id)
                && matches!(commands::parse(&c.body), Some(Command::Unhold))
                && World::permission(&c.author) >= w.scenario.unhold_needs(false)
        })
    };
    // (A person lifting the hold with the CLI while the reconcile ran races it:
    // the command was judged against the hold read at the start.)
    if wants_hold.is_some_and(|h| !lifted_unseen(h))
        && state.hold.is_none()
        && !rc.concurrent_cli_unhold
    {
        w.checker.fail(
            I7,
            "a permitted /hold was marked seen but no hold is in force (lost hold)",
        );
    }
    // Clean: nothing injected. A reconcile that fails on its own still counts: a
    // rollback blocked by a persistent error is blocked.
    let clean = !rc.fault_fired && rc.interleave.is_none() && !w.crashed;
    if ok {
        let deployed = w.deployed_versions();
        w.checker
            .completed
            .push((now, rc.gate.is_clear(), deployed));
        let horizon = now - TimeDelta::hours(12);
        w.checker.completed.retain(|(t, ..)| *t >= horizon);
    }
    if w.cluster.is_some() {
        cluster_rollback(w, clean);
    }
    // 5: a due rollback is delivered within a few clean reconciles, whatever the
    // window, the hold or the checks say.
    let due = rollback_due(w);
    if rc.rollback_due || due {
        w.checker.count(I5);
    }
    if !due {
        w.checker.rollback_due_clean = 0;
    } else if clean {
        // Every clean reconcile counts, whatever else failed in it: neither a cluster
        // that cannot be observed or patched nor an earlier rollback's branch may
        // stand in the way of the rollback in git.
        w.checker.rollback_due_clean += 1;
        if w.checker.rollback_due_clean > 3 {
            let main = w.git.head(MAIN).unwrap_or_default().to_owned();
            w.checker.fail(
                I5,
                format!(
                    "main ({}) still deploys a bad version after {} clean reconciles",
                    short(&main),
                    w.checker.rollback_due_clean
                ),
            );
        }
    }
}

/// Whether main deploys a version recorded as bad while there is a known-good one.
pub fn rollback_due(w: &World) -> bool {
    let state = w.state();
    let bad = state.bad_pairs();
    state.last_known_good.is_some() && w.deployed_versions().iter().any(|v| bad.contains(v))
}

/// At the start of a reconcile: the schedule agrees with the oracle.
pub fn on_reconcile_start(w: &mut World) {
    let now = w.now;
    let due = rollback_due(w);
    if let Some(rc) = w.rc.as_mut() {
        rc.rollback_due = due;
    }
    w.checker.count(I1);
    let ours = w.scenario.oracle.open(now);
    let theirs = w.scenario.policy.spec.schedule.to_schedule().is_open(now);
    if ours != theirs {
        w.checker.fail(
            I1,
            format!(
                "at {now} ({} local) the schedule says open={theirs}, the oracle open={ours}",
                now.with_timezone(&w.scenario.oracle.tz)
            ),
        );
    }
}
