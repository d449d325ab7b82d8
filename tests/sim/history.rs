//! Histories: random steps (as data, so a history is its seed plus its step list and
//! can be shrunk), applying them to the world, running autobump's real reconcile
//! through the simulated adapters, crash-restarts, and the liveness phase at the end.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use autobump::clock::Clock;
use autobump::controller::engine::{Adapters, Engine, PolicyOutcome};
use autobump::core::commands::{self, Command};
use autobump::metrics::Metrics;
use autobump::policy::v1alpha1::Hold;
use chrono::TimeDelta;
use fastrand::Rng;

use crate::adapters::{SimAlerts, SimClock, SimForge, SimNotifier, SimRegistry, SimRepo, SimStore};
use crate::cluster::SimCluster;
use crate::invariants::{self, L1, L2, Violation};
use crate::scenario::{Mix, Scenario, transitions};
use crate::world::{
    AlertRec, BOT, Cause, CiMode, Fault, FaultKind, MAIN, OddTag, Reconciling, USERS, World, Writer,
};

/// What a person writes in a comment.
pub const COMMENTS: &[&str] = &[
    "/hold",
    "/hold the database migration is running",
    "/unhold",
    "/hold cancel",
    "/remove-hold",
    "lgtm",
    "please do not /hold this",
    "/holdup",
    "/hold\n/unhold",
    "/unhold\n/hold waiting for the release notes",
    "/retest",
];

/// How a person changes the bot's PR branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// A change outside image references (replicas).
    NonImage,
    /// An image moved to a tag the registry does not have.
    UnknownTag,
    /// An image moved to another registry.
    OtherRegistry,
    /// An excluded file changed.
    ExcludedFile,
    /// A new file.
    NewFile,
    /// A file deleted.
    DeleteFile,
    /// An image moved to a build recorded as bad (or known to be bad).
    BadTag,
    /// A commit with the same tree (the head moves, the diff does not).
    Empty,
    /// An image pinned to a digest its tag never had.
    OtherDigest,
}

/// How a person changes main.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HumanEdit {
    /// README (outside the policy's files).
    Readme,
    /// A `ConfigMap` among the policy's files (no images).
    Config,
    /// Replicas in a manifest with an image (conflicts with a bump of that file).
    Replicas,
}

/// One step of a history.
#[derive(Debug, Clone)]
pub enum Step {
    /// autobump reconciles (a tick or a webhook), maybe with a fault and a world
    /// event between two of its calls.
    Reconcile {
        /// A fault at one adapter call.
        fault: Option<Fault>,
        /// A world event right before call `.0`.
        interleave: Option<(u32, Box<Step>)>,
    },
    /// Time passes.
    Advance {
        /// Minutes.
        minutes: i64,
    },
    /// The clock jumps to shortly before the policy timezone's next DST change.
    DstJump {
        /// Minutes before the change.
        before: i64,
    },
    /// A new build is pushed for some apps.
    PushTag {
        /// Bit mask of apps (all when it selects none).
        apps: u8,
        /// Good or bad.
        good: bool,
        /// Days after the last build.
        days: u8,
        /// The registry's push notification reaches autobump.
        notify: bool,
    },
    /// Many builds at once.
    Flood {
        /// How many.
        count: u8,
        /// Bit i: build i is bad.
        bad: u16,
    },
    /// A tag is pushed again (a new manifest, a new digest, under the same name).
    Repush {
        /// Which (modulo the number of tags).
        pick: u32,
        /// The registry's push notification reaches autobump.
        notify: bool,
    },
    /// A tag disappears.
    DeleteTag {
        /// Which (modulo the number of tags).
        pick: u32,
    },
    /// A person comments.
    Comment {
        /// Index into [`USERS`].
        user: usize,
        /// Index into [`COMMENTS`].
        text: usize,
        /// On the open bump PR (else on the last closed one: nobody reads it).
        open_pr: bool,
        /// Webhook deliveries: 0 lost, 1, 2 duplicated (each an immediate reconcile).
        webhook: u8,
    },
    /// `autobump hold` / `autobump unhold` by a person.
    Cli {
        /// Hold (else unhold).
        hold: bool,
    },
    /// An unrelated alert fires or resolves.
    Noise {
        /// Fire (else resolve all noise).
        fire: bool,
        /// Selected by the gate's matchers.
        counts: bool,
        /// Pending for a while first.
        pending: bool,
    },
    /// The alert source goes down or comes back.
    Reachable(bool),
    /// A person pushes to the bot's PR branch.
    Tamper(Tamper),
    /// A person pushes to main.
    HumanMain(HumanEdit),
    /// A person closes the bot's PR.
    ClosePr,
    /// autobump restarts (in-memory state dropped).
    Restart,
    /// A tag the policy must not move to is pushed for every app (or a pre-release it
    /// may take).
    OddTag(OddTag),
    /// The cluster's API server goes down (for a while) or comes back.
    ClusterReachable(bool),
    /// One workload refuses autobump's writes for a while.
    RefusePatch {
        /// Which workload (modulo their number).
        pick: u32,
        /// Conflicts (retryable) or a denial (permanent).
        retryable: bool,
        /// For how long.
        minutes: i64,
    },
    /// One workload has an unready replica for a while (a node drain).
    Disrupt {
        /// Which workload (modulo their number).
        pick: u32,
        /// For how long.
        minutes: i64,
    },
    /// The GitOps applier re-applies the base branch now (self-heal), reverting
    /// autobump's patches.
    Resync,
}

/// Draws a random history of `n` steps.
pub fn generate(seed: u64, n: usize) -> Vec<Step> {
    let mut rng = Rng::with_seed(seed ^ 0x6e_6e6e_7273);
    (0..n).map(|_| random_step(&mut rng, true)).collect()
}

fn random_fault(rng: &mut Rng) -> Option<Fault> {
    (rng.u32(0..100) < 30).then(|| Fault {
        at: if rng.u32(0..4) == 0 {
            rng.u32(0..30)
        } else {
            rng.u32(0..10)
        },
        kind: match rng.u32(0..100) {
            0..=29 => FaultKind::FailBefore { retryable: true },
            30..=39 => FaultKind::FailBefore { retryable: false },
            40..=59 => FaultKind::FailAfter,
            60..=74 => FaultKind::CrashBefore,
            _ => FaultKind::CrashAfter,
        },
    })
}

fn random_step(rng: &mut Rng, top: bool) -> Step {
    let roll = rng.u32(0..1000);
    match roll {
        0..=379 if top => Step::Reconcile {
            fault: random_fault(rng),
            interleave: (rng.u32(0..100) < 12).then(|| {
                // Time stands still within a reconcile (it was given `now`).
                let event = match random_step(rng, false) {
                    Step::Advance { .. } | Step::DstJump { .. } => Step::Tamper(Tamper::Empty),
                    other => other,
                };
                (rng.u32(0..20), Box::new(event))
            }),
        },
        0..=559 => Step::Advance {
            minutes: match rng.u32(0..100) {
                0..=49 => rng.i64(1..10),
                50..=79 => rng.i64(10..60),
                80..=94 => rng.i64(60..360),
                _ => rng.i64(1440..4320),
            },
        },
        560..=567 => Step::DstJump {
            before: rng.i64(1..90),
        },
        568..=639 => Step::PushTag {
            apps: if rng.u32(0..5) == 0 { rng.u8(1..8) } else { 0 },
            good: rng.u32(0..100) < 60,
            days: rng.u8(0..3),
            notify: rng.u32(0..10) < 7,
        },
        640..=643 => Step::Repush {
            pick: rng.u32(..),
            notify: rng.bool(),
        },
        644..=647 => Step::Flood {
            count: rng.u8(2..7),
            bad: rng.u16(..),
        },
        648..=662 => Step::DeleteTag { pick: rng.u32(..) },
        663..=762 => Step::Comment {
            user: rng.usize(0..USERS.len()),
            text: rng.usize(0..COMMENTS.len()),
            open_pr: rng.u32(0..10) < 8,
            webhook: if top { rng.u8(0..3) } else { 0 },
        },
        763..=782 => Step::Cli {
            hold: rng.u32(0..10) < 3,
        },
        783..=817 => Step::Noise {
            fire: rng.bool(),
            counts: rng.u32(0..4) > 0,
            pending: rng.u32(0..3) == 0,
        },
        818..=842 => Step::Reachable(rng.u32(0..3) > 0),
        843..=862 => Step::Tamper(match rng.u32(0..9) {
            0 => Tamper::NonImage,
            1 => Tamper::UnknownTag,
            2 => Tamper::OtherRegistry,
            3 => Tamper::ExcludedFile,
            4 => Tamper::NewFile,
            5 => Tamper::DeleteFile,
            6 => Tamper::BadTag,
            7 => Tamper::OtherDigest,
            _ => Tamper::Empty,
        }),
        863..=912 => Step::HumanMain(match rng.u32(0..3) {
            0 => HumanEdit::Readme,
            1 => HumanEdit::Config,
            _ => HumanEdit::Replicas,
        }),
        913..=927 => Step::ClosePr,
        928..=952 if top => Step::Restart,
        953..=966 => Step::OddTag(match rng.u32(0..6) {
            0 => OddTag::Floating,
            1 => OddTag::Signature,
            2 => OddTag::Prerelease,
            3 => OddTag::OutOfRange,
            4 => OddTag::Old,
            _ => OddTag::Alias,
        }),
        967..=974 => Step::ClusterReachable(rng.u32(0..3) > 0),
        975..=982 => Step::RefusePatch {
            pick: rng.u32(..),
            retryable: rng.bool(),
            minutes: rng.i64(5..240),
        },
        983..=990 => Step::Disrupt {
            pick: rng.u32(..),
            minutes: rng.i64(5..90),
        },
        991..=996 => Step::Resync,
        _ => Step::Advance { minutes: 5 },
    }
}

/// Applies a step that only changes the world (everything but reconciles and restarts).
// One arm per kind of event; splitting it would only scatter them.
#[allow(clippy::too_many_lines)]
pub fn apply_world_event(w: &mut World, step: &Step) {
    match step {
        Step::Reconcile { .. } | Step::Restart => {}
        Step::Advance { minutes } => w.advance(TimeDelta::minutes(*minutes)),
        Step::DstJump { before } => {
            let tz = w.scenario.oracle.tz;
            let next = transitions(tz).iter().find(|t| **t > w.now).copied();
            match next {
                Some(t) if t - TimeDelta::minutes(*before) > w.now => {
                    let by = t - TimeDelta::minutes(*before) - w.now;
                    w.advance(by);
                }
                _ => w.advance(TimeDelta::hours(6)),
            }
        }
        Step::PushTag {
            apps, good, days, ..
        } => {
            let n = w.scenario.apps.len();
            let mut chosen: Vec<usize> = (0..n).filter(|i| apps & (1 << i) != 0).collect();
            if chosen.is_empty() {
                chosen = (0..n).collect();
            }
            let tag = w.new_tag(&chosen, *good, u32::from(*days));
            w.note(format!(
                "  pushed {tag} ({}) for {chosen:?}",
                if *good { "good" } else { "bad" }
            ));
        }
        Step::Flood { count, bad } => {
            let all: Vec<usize> = (0..w.scenario.apps.len()).collect();
            for i in 0..*count {
                let good = bad & (1 << (i % 16)) == 0;
                w.new_tag(&all, good, u32::from(i % 2));
            }
        }
        Step::Repush { pick, .. } => {
            let all: Vec<(String, usize)> = w
                .registry
                .repos
                .iter()
                .flat_map(|(r, tags)| (0..tags.len()).map(move |i| (r.clone(), i)))
                .collect();
            if !all.is_empty() {
                let (repo, i) = all[*pick as usize % all.len()].clone();
                if let Some(tag) = w.registry.repush(&repo, i) {
                    w.seq += 1;
                    w.note(format!("  pushed {repo}:{tag} again (new digest)"));
                }
            }
        }
        Step::DeleteTag { pick } => {
            let all: Vec<(String, usize)> = w
                .registry
                .repos
                .iter()
                .flat_map(|(r, tags)| (0..tags.len()).map(move |i| (r.clone(), i)))
                .collect();
            if !all.is_empty() {
                let (repo, i) = all[*pick as usize % all.len()].clone();
                let gone = w.registry.repos.get_mut(&repo).expect("listed").remove(i);
                w.seq += 1;
                let seq = w.seq;
                w.registry
                    .deleted
                    .insert((repo.clone(), gone.tag.clone()), seq);
                w.note(format!("  deleted {repo}:{}", gone.tag));
            }
        }
        Step::Comment {
            user,
            text,
            open_pr,
            ..
        } => {
            let (user, _) = USERS[*user];
            let body = COMMENTS[*text];
            let target = if *open_pr {
                w.open_pr(&w.scenario.bump_branch.clone(), Some(BOT))
                    .map(|p| p.number)
            } else {
                w.prs.values().rev().find(|p| !p.open).map(|p| p.number)
            };
            if let Some(pr) = target {
                let id = w.add_comment(pr, user, body);
                if body.trim() == "/retest"
                    && let Some(head) = w.prs.get(&pr).cloned().and_then(|p| w.pr_head(&p))
                {
                    w.retest(&head);
                }
                w.note(format!("  {user} commented {body:?} on #{pr} (id {id})"));
            }
        }
        Step::Cli { hold } => {
            let name = w.scenario.name.clone();
            let mut state = w.state();
            let who = "alice";
            if *hold {
                if state.hold.is_some() {
                    return;
                }
                state.hold = Some(Hold {
                    by: format!("cli:{who}"),
                    since: w.now,
                    reason: "paused from the command line".into(),
                    via: Some("cli".into()),
                    automatic: false,
                });
                state.record(
                    w.now,
                    autobump::policy::v1alpha1::Reason::Held,
                    format!("held by cli:{who}"),
                );
                if let Some(rc) = w.rc.as_mut() {
                    rc.concurrent_cli_hold = true;
                }
            } else {
                let Some(h) = state.hold.take() else { return };
                if let Some(rc) = w.rc.as_mut() {
                    rc.concurrent_cli_unhold = true;
                }
                state.record(
                    w.now,
                    autobump::policy::v1alpha1::Reason::Unheld,
                    format!("hold by {} lifted by cli:{who}", h.by),
                );
            }
            w.write_state(&name, state, &Writer::Cli(who.into()));
        }
        Step::Noise {
            fire,
            counts,
            pending,
        } => {
            if *fire {
                let n = w.alerts.len();
                let until = if *pending {
                    w.now + TimeDelta::minutes(5)
                } else {
                    w.now
                };
                let lasts = TimeDelta::minutes(w.rng.i64(5..120));
                w.alerts.push(AlertRec {
                    name: format!("Noise{n}"),
                    counts: *counts,
                    pending_until: until,
                    resolves_at: Some(w.now + lasts),
                    cause: Cause::Noise,
                });
            } else {
                w.alerts.retain(|a| a.cause != Cause::Noise);
            }
        }
        Step::Reachable(up) => {
            w.alerts_reachable = *up;
            w.reachable_again = (!*up).then(|| w.now + TimeDelta::minutes(w.rng.i64(5..90)));
        }
        Step::Tamper(kind) => tamper(w, *kind),
        Step::HumanMain(kind) => human_main(w, *kind),
        Step::OddTag(kind) => {
            if let Some(tag) = w.odd_tag(*kind) {
                w.note(format!("  pushed {kind:?} tag {tag}"));
            }
        }
        Step::ClusterReachable(up) => {
            let now = w.now;
            if let Some(c) = w.cluster.as_mut() {
                c.set_reachable(*up, now);
            }
        }
        Step::RefusePatch {
            pick,
            retryable,
            minutes,
        } => {
            let now = w.now;
            if let Some(c) = w.cluster.as_mut() {
                c.refuse(*pick, *retryable, *minutes, now);
            }
        }
        Step::Disrupt { pick, minutes } => {
            let now = w.now;
            if let Some(c) = w.cluster.as_mut() {
                c.disrupt(*pick, *minutes, now);
            }
        }
        Step::Resync => {
            let now = w.now;
            if let Some(c) = w.cluster.as_mut() {
                c.resync(now);
                w.sync_cluster();
                w.update_alerts();
            }
        }
        Step::ClosePr => {
            let branch = w.scenario.bump_branch.clone();
            let head = w.git.head(&branch).map(str::to_owned);
            if let Some(pr) = w
                .prs
                .values_mut()
                .find(|p| p.open && p.head_branch == branch)
            {
                pr.open = false;
                pr.final_head = head;
                w.seq += 1;
            }
        }
    }
}

/// Replaces the first occurrence of `from` in `path` on a copy of `files`.
fn edit(files: &mut crate::world::Files, path: &str, from: &str, to: &str) -> bool {
    let Some(text) = files.get(path) else {
        return false;
    };
    if !text.contains(from) {
        return false;
    }
    let new = text.replacen(from, to, 1);
    files.insert(path.to_owned(), new.into());
    true
}

fn first_tag(text: &str, prefix: &str) -> Option<(String, String)> {
    text.lines().find_map(|l| {
        crate::scenario::image_tokens(l, prefix)
            .first()
            .map(|t| (t.repo.to_owned(), t.tag.to_owned()))
    })
}

/// Pins `repo:tag` in `path` to a digest that tag never had.
fn pin_other_digest(
    files: &mut crate::world::Files,
    path: &str,
    repo: &str,
    tag: &str,
    prefix: &str,
) -> bool {
    let evil = crate::world::digest_of(repo, tag, 9999);
    let Some(line) = files.get(path).and_then(|t| {
        t.lines()
            .find(|l| l.contains(&format!("{repo}:{tag}")))
            .map(str::to_owned)
    }) else {
        return false;
    };
    let old = crate::scenario::image_tokens(&line, prefix)
        .into_iter()
        .next()
        .map(|t| line[t.at..t.version_at() + t.version_len()].to_owned());
    old.is_some_and(|old| edit(files, path, &old, &format!("{repo}:{tag}@{evil}")))
}

fn tamper(w: &mut World, kind: Tamper) {
    let branch = w.scenario.bump_branch.clone();
    let Some(head) = w.git.head(&branch).map(str::to_owned) else {
        return;
    };
    let mut files = (*w.git.tree(&head)).clone();
    let app_file = format!("deploy/{}.yaml", w.scenario.apps[0]);
    let prefix = w.scenario.prefix.clone();
    let current = files.get(&app_file).and_then(|t| first_tag(t, &prefix));
    let changed = match (kind, current) {
        (Tamper::NonImage, _) => edit(&mut files, &app_file, "replicas: 2", "replicas: 20"),
        (Tamper::UnknownTag, Some((repo, tag))) => edit(
            &mut files,
            &app_file,
            &format!("{repo}:{tag}"),
            &format!("{repo}:{}", w.scenario.tags.unknown_tag()),
        ),
        (Tamper::OtherRegistry, Some((repo, tag))) => {
            let evil = repo.replace("registry.sim", "evil.sim");
            edit(
                &mut files,
                &app_file,
                &format!("{repo}:{tag}"),
                &format!("{evil}:{tag}"),
            )
        }
        (Tamper::ExcludedFile, _) => {
            let tag = w
                .registry
                .repos
                .get(&w.scenario.repo(0))
                .and_then(|t| t.last())
                .map(|t| t.tag.clone())
                .unwrap_or_default();
            edit(
                &mut files,
                "deploy/legacy/old.yaml",
                "v20250101-0000000",
                &tag,
            )
        }
        (Tamper::NewFile, _) => {
            files.insert(
                "deploy/extra.yaml".into(),
                format!("image: {prefix}{}:v20260101-abcdef0\n", w.scenario.apps[0]).into(),
            );
            true
        }
        (Tamper::DeleteFile, _) => files.remove("deploy/config.yaml").is_some(),
        (Tamper::BadTag, Some((repo, tag))) => {
            let bad = w
                .registry
                .repos
                .get(&repo)
                .and_then(|tags| tags.iter().rev().find(|t| w.registry.is_bad(&repo, &t.tag)))
                .map(|t| t.tag.clone());
            match bad {
                Some(bad) if bad != tag => edit(
                    &mut files,
                    &app_file,
                    &format!("{repo}:{tag}"),
                    &format!("{repo}:{bad}"),
                ),
                _ => false,
            }
        }
        (Tamper::OtherDigest, Some((repo, tag))) => {
            pin_other_digest(&mut files, &app_file, &repo, &tag, &prefix)
        }
        (Tamper::Empty, _) => true,
        _ => false,
    };
    if !changed {
        return;
    }
    let id = w.git.make_commit(
        vec![head],
        Arc::new(files),
        &format!("tamper: {kind:?}"),
        w.now.timestamp() + w.seq.cast_signed(),
    );
    w.set_branch(&branch, &id);
    if kind != Tamper::Empty {
        w.tampered.insert(branch.clone());
    }
    w.note(format!("  a person pushed {kind:?} to {branch}"));
}

fn human_main(w: &mut World, kind: HumanEdit) {
    let head = w.git.head(MAIN).expect("main").to_owned();
    let mut files = (*w.git.tree(&head)).clone();
    let n = w.seq;
    match kind {
        HumanEdit::Readme => {
            let text = format!("{}\nEdited {n}.\n", files["README.md"]);
            files.insert("README.md".into(), text.into());
        }
        HumanEdit::Config => {
            let text = format!("{}  edit{n}: \"yes\"\n", files["deploy/config.yaml"]);
            files.insert("deploy/config.yaml".into(), text.into());
        }
        HumanEdit::Replicas => {
            let path = format!("deploy/{}.yaml", w.scenario.apps[0]);
            let Some(text) = files.get(&path) else { return };
            let replicas = text
                .lines()
                .find(|l| l.trim_start().starts_with("replicas:"))
                .map(str::to_owned);
            let Some(line) = replicas else { return };
            let value: u32 = line
                .trim()
                .trim_start_matches("replicas:")
                .trim()
                .parse()
                .unwrap_or(2);
            let next = format!(
                "{}replicas: {}",
                &line[..line.len() - line.trim_start().len()],
                value % 5 + 1
            );
            edit(&mut files, &path, &line, &next);
        }
    }
    let id = w.git.make_commit(
        vec![head],
        Arc::new(files),
        &format!("human edit {kind:?}"),
        w.now.timestamp() + n.cast_signed(),
    );
    w.set_branch(MAIN, &id);
}

/// autobump's in-memory side: dropped on every restart.
struct Process {
    engine: Engine<SimRegistry, SimRepo, SimForge, SimAlerts, SimNotifier>,
    store: SimStore,
}

impl Process {
    /// autobump starting: the engine `autobump run` builds, on the simulated
    /// adapters (and the simulated cluster when the policy observes workloads).
    fn start(world: &Arc<Mutex<World>>, scenario: &Scenario) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SimClock(Arc::clone(world)));
        let adapters = Adapters {
            registry: SimRegistry(Arc::clone(world)),
            repo: SimRepo(Arc::clone(world)),
            forge: Some(SimForge(Arc::clone(world))),
            alerts: SimAlerts(Arc::clone(world)),
            notifier: SimNotifier(Arc::clone(world)),
        };
        let metrics = Arc::new(Metrics::new(Arc::clone(&clock)));
        let mut engine = Engine::new(adapters, clock, metrics).with_bot_login(Some(BOT.to_owned()));
        if scenario.cluster.is_some() {
            engine = engine.with_cluster(SimCluster(Arc::clone(world)));
        }
        Self {
            engine,
            store: SimStore(Arc::clone(world)),
        }
    }
}

/// The outcome of one history.
pub struct Outcome {
    /// The first violation, and the step it showed at (`None`: the liveness phase).
    pub violation: Option<(Option<usize>, Violation)>,
    /// Evaluations per invariant.
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    /// Reconciles run.
    pub reconciles: u64,
    /// Crashes.
    pub crashes: u64,
    /// Rollbacks decided.
    pub rollbacks: u32,
    /// Bumps landed.
    pub bumps: u32,
    /// Bumps landed that deploy a bad build.
    pub bad_bumps: u32,
    /// Merges a concurrent CLI hold raced.
    pub hold_races: u32,
    /// Bumps that landed a tag deleted while their reconcile ran.
    pub tag_races: u32,
    /// Rollbacks decided while the rollout could not be observed.
    pub blind_rollbacks: u32,
    /// Reconciles that started held, with the gate not Clear, with a bad build deployed.
    pub coverage: [u64; 3],
    /// The scenario's shape: tag scheme (0 dateSha, 1 semver, 2 regex) and cluster (0
    /// none, 1 observed, 2 observed and patched on rollback).
    pub shape: (usize, usize),
    /// The trace (verbose runs).
    pub trace: Vec<String>,
}

/// Runs one history: the scenario of `seed`, `steps`, then the liveness phase.
pub struct Sim {
    world: Arc<Mutex<World>>,
    scenario: Arc<Scenario>,
    process: Process,
    runtime: tokio::runtime::Runtime,
    reconciles: u64,
    crashes: u64,
    verbose: bool,
    trace: Vec<String>,
    /// See [`Outcome::coverage`].
    coverage: [u64; 3],
    /// Webhook deliveries (wide scenarios).
    deliveries: Rng,
    /// What the modelled upstreams of a chain scenario do (see `upstream.rs`).
    upstream: Rng,
}

impl Sim {
    fn new(seed: u64, mix: Mix, verbose: bool) -> Self {
        let scenario = Arc::new(Scenario::generate_mix(seed, mix));
        let mut world = World::new(seed, Arc::clone(&scenario));
        world.verbose = verbose;
        let world = Arc::new(Mutex::new(world));
        Self {
            process: Process::start(&world, &scenario),
            world,
            scenario,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime"),
            reconciles: 0,
            crashes: 0,
            verbose,
            trace: Vec::new(),
            coverage: [0; 3],
            deliveries: Rng::with_seed(seed ^ 0xde11_7e55),
            upstream: Rng::with_seed(seed ^ 0x0b57_2ea3),
        }
    }

    fn w(&self) -> std::sync::MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn restart(&mut self) {
        self.process = Process::start(&self.world, &self.scenario);
        self.w().crashed = false;
    }

    fn reconcile(&mut self, fault: Option<Fault>, interleave: Option<(u32, Step)>) {
        self.reconciles += 1;
        let policy = &self.scenario.policy;
        let gate = self.runtime.block_on(autobump::alerts::gate(
            &SimAlerts(Arc::clone(&self.world)),
            policy.spec.gate.as_ref(),
        ));
        let now = {
            let (held, bad_deployed) = {
                let w = self.w();
                (w.state().hold.is_some(), w.bad_deployed.is_some())
            };
            self.coverage[0] += u64::from(held);
            self.coverage[1] += u64::from(!gate.is_clear());
            self.coverage[2] += u64::from(bad_deployed);
            let mut w = self.w();
            let start_seq = w.seq;
            w.rc = Some(Reconciling {
                gate: gate.clone(),
                calls: 0,
                fault,
                fault_fired: false,
                interleave,
                checks_read: Vec::new(),
                start_seq,
                newly_seen: Vec::new(),
                concurrent_cli_hold: false,
                concurrent_cli_unhold: false,
                rollback_due: false,
                observe_failed: false,
                calls_log: Vec::new(),
            });
            invariants::on_reconcile_start(&mut w);
            w.now
        };
        // The same turn as `autobump run`: the gate read, the forge chosen, observe →
        // plan → execute, the accounting and the notifications.
        let result =
            match self
                .runtime
                .block_on(self.process.engine.run(policy, &self.process.store, now))
            {
                PolicyOutcome::Done(report) => Ok(report),
                PolicyOutcome::Failed(e) => Err(e),
                PolicyOutcome::Skipped(why) => panic!("the simulated policy runs: {why}"),
            };
        let crashed = {
            let mut w = self.w();
            invariants::on_reconcile_end(&mut w, result.is_ok());
            if self.verbose {
                let rc = w.rc.as_ref().expect("reconciling");
                let mut line = format!("  gate {gate:?}; calls {}", rc.calls_log.join(" "));
                match &result {
                    Ok(report) => {
                        let effects: Vec<String> = report.effects.iter().map(effect_name).collect();
                        let _ = write!(line, "\n  -> {}", effects.join(", "));
                    }
                    Err(e) => {
                        let _ = write!(
                            line,
                            "\n  -> error ({}): {e}",
                            if e.is_retryable() {
                                "retryable"
                            } else {
                                "permanent"
                            }
                        );
                    }
                }
                w.note(line);
            }
            w.rc = None;
            w.crashed
        };
        if crashed {
            self.crashes += 1;
            self.w().note("  autobump crashed; restarting");
            self.restart();
        }
    }

    fn violation(&self) -> Option<Violation> {
        self.w().checker.violations.first().cloned()
    }

    fn apply(&mut self, step: &Step) {
        let firing = self.firing();
        match step {
            Step::Reconcile { fault, interleave } => {
                if !self.scenario.upstreams.is_empty() {
                    let mut upstream = std::mem::replace(&mut self.upstream, Rng::with_seed(0));
                    crate::upstream::act(&mut self.w(), &mut upstream);
                    self.upstream = upstream;
                }
                self.reconcile(
                    *fault,
                    interleave.as_ref().map(|(at, s)| (*at, (**s).clone())),
                );
            }
            Step::Restart => self.restart(),
            Step::PushTag { notify, .. } | Step::Repush { notify, .. } => {
                apply_world_event(&mut self.w(), step);
                if *notify {
                    // A registry push notification: the resolver forgets cached digests and build times.
                    for a in 0..self.scenario.apps.len() {
                        self.process.engine.invalidate(&self.scenario.repo(a));
                    }
                    // (Wide scenarios: and, like `autobump run`, reconciles at once, once
                    // or twice: a duplicated delivery.)
                    self.deliver(1);
                }
            }
            Step::Comment { webhook, .. } => {
                apply_world_event(&mut self.w(), step);
                for _ in 0..*webhook {
                    self.reconcile(None, None);
                }
            }
            _ => apply_world_event(&mut self.w(), step),
        }
        // Wide scenarios: an alert that starts firing reaches autobump by Alertmanager's
        // webhook: lost, delivered, or delivered twice (each an immediate reconcile).
        if self.firing() > firing {
            self.deliver(0);
        }
    }

    /// How many alerts the gate's matchers select that are firing now.
    fn firing(&self) -> usize {
        let w = self.w();
        let now = w.now;
        w.active_alerts()
            .iter()
            .filter(|a| a.counts && now >= a.pending_until)
            .count()
    }

    /// Webhook deliveries in wide scenarios: at least `min`, at most 2 immediate
    /// reconciles (drawn from the sim's own stream).
    fn deliver(&mut self, min: u32) {
        if !self.scenario.mix.is_wide() {
            return;
        }
        for _ in 0..self.deliveries.u32(min..=2) {
            self.reconcile(None, None);
        }
    }

    fn flush_notes(&mut self, header: String) {
        if !self.verbose {
            return;
        }
        self.trace.push(header);
        let notes = std::mem::take(&mut self.w().notes);
        self.trace.extend(notes);
    }

    /// Most wide histories start after autobump has run for a while: it reconciles
    /// every ten minutes (nothing else happens) until the deployed version is known-good
    /// (so that bad builds in the history can be rolled back), at most for
    /// `deployDelay + bake` and half an hour.
    fn warm_up(&mut self) -> Option<Violation> {
        let s = Arc::clone(&self.scenario);
        let limit = s.deploy_delay + s.bake.unwrap_or(TimeDelta::zero()) + TimeDelta::minutes(30);
        let mut elapsed = TimeDelta::zero();
        while elapsed <= limit {
            self.reconcile(None, None);
            let now = self.w().now;
            self.flush_notes(format!("warm-up @{now}"));
            if let Some(v) = self.violation() {
                return Some(v);
            }
            if self.w().state().last_known_good.is_some() {
                break;
            }
            self.w().advance(TimeDelta::minutes(10));
            elapsed += TimeDelta::minutes(10);
        }
        None
    }

    /// The liveness phase: faults stop, on-call silences the alerts, people lift holds
    /// and close tampered PRs, CI is green, and a new good build appears. It must reach
    /// main within `deployDelay + bake + minInterval + checks` of open schedule time
    /// (plus a few reconcile periods).
    fn settle(&mut self) -> Option<Violation> {
        let tick = TimeDelta::minutes(10);
        let (target, had_rollback) = {
            let mut w = self.w();
            w.alerts_silenced = true;
            w.alerts_reachable = true;
            w.ci_mode = CiMode::Green;
            let now = w.now;
            if let Some(c) = w.cluster.as_mut() {
                c.heal(now);
            }
            let apps: Vec<usize> = (0..w.scenario.apps.len()).collect();
            let tag = w.new_tag(&apps, true, 1);
            crate::upstream::prove_everywhere(&mut w, &tag);
            (tag, w.checker.rollbacks > 0)
        };
        for a in 0..self.scenario.apps.len() {
            self.process.engine.invalidate(&self.scenario.repo(a));
        }
        let s = Arc::clone(&self.scenario);
        // With a cluster: the applier's delay (up to 12 minutes), the rollout (up to 9),
        // and a status that lags a minute.
        let cluster = if s.cluster.is_some() {
            TimeDelta::minutes(30)
        } else {
            TimeDelta::zero()
        };
        let budget = s.deploy_delay
            + s.bake.unwrap_or(TimeDelta::zero())
            + s.min_interval
            + TimeDelta::minutes(10)
            + cluster
            + tick * 4;
        let mut open_time = TimeDelta::zero();
        let mut elapsed = TimeDelta::zero();
        let mut round = 0;
        let mut since_reconcile = TimeDelta::zero();
        loop {
            round += 1;
            self.person_cleans_up();
            // The clock moves in 10-minute steps; autobump reconciles at each while the
            // schedule is open, and hourly otherwise (enough for bakes to progress).
            self.w().advance(tick);
            elapsed += tick;
            since_reconcile += tick;
            let open = {
                let w = self.w();
                w.scenario.oracle.open(w.now)
            };
            if open {
                open_time += tick;
            }
            if !open && since_reconcile < TimeDelta::hours(1) {
                if elapsed > budget + TimeDelta::days(35) {
                    return Some(self.stuck(&target, had_rollback, open_time, elapsed, budget));
                }
                continue;
            }
            since_reconcile = TimeDelta::zero();
            self.reconcile(None, None);
            let now = self.w().now;
            self.flush_notes(format!("settle {round} @{now}"));
            if let Some(v) = self.violation() {
                return Some(v);
            }
            let done = {
                let w = self.w();
                let deployed = w.deployed_versions();
                (0..s.apps.len()).all(|a| deployed.contains(&(s.repo(a), target.clone())))
            };
            if done {
                let mut w = self.w();
                w.checker.count(if had_rollback { L2 } else { L1 });
                return None;
            }
            // A weekly window opens within a week, but freezes can cover several
            // openings: the hard cap only stops a history whose window never opens.
            if open_time > budget || elapsed > budget + TimeDelta::days(35) {
                return Some(self.stuck(&target, had_rollback, open_time, elapsed, budget));
            }
        }
    }

    fn stuck(
        &self,
        target: &str,
        had_rollback: bool,
        open_time: TimeDelta,
        elapsed: TimeDelta,
        budget: TimeDelta,
    ) -> Violation {
        let w = self.w();
        let state = w.state();
        let message = format!(
            "{target} not deployed after {}m of open schedule ({}m in all; budget {}m): main deploys {:?}, hold {:?}, open PR {:?}",
            open_time.num_minutes(),
            elapsed.num_minutes(),
            budget.num_minutes(),
            w.deployed_versions(),
            state.hold.map(|h| h.by),
            w.open_pr(&self.scenario.bump_branch, Some(BOT))
                .map(|p| p.number),
        );
        Violation {
            invariant: if had_rollback { L2 } else { L1 },
            message,
        }
    }

    /// What a person does in the liveness phase: lift a hold (by `/unhold` on the
    /// open PR, else the CLI) and close a PR someone tampered with.
    fn person_cleans_up(&mut self) {
        let mut w = self.w();
        let branch = w.scenario.bump_branch.clone();
        // A PR a person changed into more than a bump: they close it. A PR nobody
        // tampered with gets only the `/unhold` autobump's comment asks for (see
        // `regressions::seed_bd27f30de08c5533_vanished_tag_livelock`).
        if w.tampered.remove(&branch) {
            let head = w.git.head(&branch).map(str::to_owned);
            if let Some(pr) = w
                .prs
                .values_mut()
                .find(|p| p.open && p.head_branch == branch)
            {
                pr.open = false;
                pr.final_head = head;
            }
        }
        if w.state().hold.is_some() {
            let pr = w.open_pr(&branch, Some(BOT)).map(|p| p.number);
            // An /unhold written in the same instant as the hold is refused (it may
            // predate it); the person then asks again, as autobump's reply says.
            let since = w.state().hold.as_ref().map(|h| h.since);
            let asked = pr.is_some_and(|n| {
                w.comments
                    .iter()
                    .rev()
                    .find(|c| c.pr == n && c.author == "alice")
                    .is_some_and(|c| {
                        commands::parse(&c.body) == Some(Command::Unhold)
                            && c.created_seq > w.checker.hold_placed_seq()
                            && since.is_none_or(|s| c.created_at > s)
                            && w.checker.last_rollback.is_none_or(|r| c.created_seq > r)
                    })
            });
            match pr {
                Some(n) if !asked => {
                    w.add_comment(n, "alice", "/unhold");
                }
                Some(_) => {}
                None => apply_world_event(&mut w, &Step::Cli { hold: false }),
            }
        }
    }
}

fn effect_name(e: &autobump::core::plan::Effect) -> String {
    use autobump::core::plan::Effect;
    match e {
        Effect::Waiting(why) => format!("Waiting({why})"),
        Effect::Merge { sha, .. } => format!("Merge({})", &sha[..8.min(sha.len())]),
        Effect::Rollback(why) => format!("Rollback({why})"),
        Effect::MarkSeen(id) => format!("MarkSeen({id})"),
        Effect::SetHold(h) => format!("SetHold({})", h.by),
        Effect::ClearHold { by } => format!("ClearHold({by})"),
        other => other.kind().to_owned(),
    }
}

/// Runs the history `(seed, steps)` on the scenario of `mix`; stops at the first
/// violation.
pub fn run(seed: u64, mix: Mix, steps: &[Step], verbose: bool) -> Outcome {
    run_on(seed, mix, steps, verbose, None)
}

/// [`run`] with the policy state in `db` (the real SQLite store) instead of memory.
pub fn run_on(
    seed: u64,
    mix: Mix,
    steps: &[Step],
    verbose: bool,
    db: Option<autobump::store::SqliteStore>,
) -> Outcome {
    let mut sim = Sim::new(seed, mix, verbose);
    sim.w().db = db;
    let mut violation = None;
    if mix.is_wide() && Rng::with_seed(seed ^ 0x3a7e_0b0e).u32(0..10) < 7 {
        violation = sim.warm_up().map(|v| (None, v));
    }
    for (i, step) in steps.iter().enumerate() {
        if violation.is_some() {
            break;
        }
        sim.apply(step);
        let now = sim.w().now;
        sim.flush_notes(format!("step {i} @{now}: {step:?}"));
        if let Some(v) = sim.violation() {
            violation = Some((Some(i), v));
            break;
        }
    }
    if violation.is_none()
        && let Some(v) = sim.settle()
    {
        violation = Some((None, v));
    }
    let w = sim.w();
    Outcome {
        violation,
        counts: w.checker.counts.clone(),
        reconciles: sim.reconciles,
        crashes: sim.crashes,
        rollbacks: w.checker.rollbacks,
        bumps: w.checker.bumps_landed,
        bad_bumps: w.checker.bad_bumps,
        hold_races: w.checker.hold_races,
        tag_races: w.checker.tag_races,
        blind_rollbacks: w.checker.blind_rollbacks,
        coverage: sim.coverage,
        shape: (
            match sim.scenario.tags {
                crate::scenario::TagScheme::DateSha => 0,
                crate::scenario::TagScheme::Semver { .. } => 1,
                crate::scenario::TagScheme::Regex => 2,
            },
            sim.scenario
                .cluster
                .as_ref()
                .map_or(0, |c| if c.patch { 2 } else { 1 }),
        ),
        trace: sim.trace.clone(),
    }
}

/// The shortest prefix of `steps` (then single steps removed while it still fails
/// the same invariant) that violates `invariant`.
pub fn shrink(
    (seed, mix): (u64, Mix),
    steps: &[Step],
    invariant: &str,
    failed_at: Option<usize>,
) -> Vec<Step> {
    let fails = |s: &[Step]| {
        run(seed, mix, s, false)
            .violation
            .is_some_and(|(_, v)| v.invariant == invariant)
    };
    let mut best: Vec<Step> = match failed_at {
        Some(i) if fails(&steps[..=i]) => steps[..=i].to_vec(),
        _ => {
            // Liveness: the shortest prefix whose liveness phase fails.
            let mut found = steps.to_vec();
            for n in 0..steps.len() {
                if fails(&steps[..n]) {
                    found = steps[..n].to_vec();
                    break;
                }
            }
            found
        }
    };
    // Then drop single steps, latest first, while it still fails.
    let mut budget = 400;
    let mut i = best.len();
    while i > 0 && budget > 0 {
        i -= 1;
        budget -= 1;
        let mut candidate = best.clone();
        candidate.remove(i);
        if fails(&candidate) {
            best = candidate;
        }
    }
    best
}
