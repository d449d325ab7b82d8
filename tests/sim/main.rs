//! Deterministic simulation of the whole loop over random histories (issue 8).
//!
//! autobump's real planner and executor (`controller::reconcile`, one flow for
//! pull-request and direct-push policies, with the real resolver, rewrite engine, merge engine, schedule and rollout decisions) run against
//! simulated adapters for the registry, git, GitHub, the alert source, the cluster and
//! the store, on a current-thread runtime, with seeded randomness and a simulated
//! clock: a history is its seed and its list of steps, and replays exactly. Histories
//! run on several threads (`AUTOBUMP_SIM_THREADS`), each history on one, and the
//! totals do not depend on how they were spread.
//!
//! Scenarios vary the policy (pull requests or direct push, windows and freezes across
//! DST changes, gate and bake, checks, digests, structured or text rewriting), the tag
//! scheme (dateSha, semver with ranges and pre-releases, a regex over build numbers)
//! and whether the images run in a simulated cluster whose rollouts autobump observes
//! (`rollout.workloads`) and patches on rollback (`rollback.patchCluster`). Histories
//! mix new good and bad builds, floods, re-pushed and deleted tags, odd tags the policy
//! must skip, comments and duplicated or lost webhooks, CLI holds, alerts and outages,
//! tampering, people pushing to main, applier delays and resyncs, stuck rollouts,
//! drained nodes, refused writes, retryable and permanent adapter errors, crashes and
//! restarts.
//!
//! After every step the safety invariants of `DESIGN.md` are checked against the
//! world's history (see `invariants.rs`); every history ends with a liveness phase. A
//! violation prints the seed, the shortest history that still shows it, and a trace.
//!
//! Environment:
//! * `AUTOBUMP_SIM_HISTORIES` (default 3000): how many histories;
//! * `AUTOBUMP_SIM_THREADS` (default: the available parallelism): worker threads;
//! * `AUTOBUMP_SIM_SEED` (default 0xc0ffee): the base seed (decimal or 0x-hex);
//!   history `i` gets a seed derived from it;
//! * `AUTOBUMP_SIM_FIRST` (default 0): the first `i` (to split a run over processes);
//! * `AUTOBUMP_SIM_KEEP_GOING`: tally every kind of violation instead of stopping;
//! * `AUTOBUMP_SIM_REPLAY=SEED`: run only that history, verbosely (with
//!   `AUTOBUMP_SIM_STEPS=N`: only its first N steps).
//!
//! `scripts/sim --histories N --seed S` runs a release build of this test.

mod adapters;
mod cluster;
mod history;
mod invariants;
mod regressions;
mod scenario;
mod upstream;
mod world;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use autobump::clock::Stopwatch;
use scenario::Mix;

/// Histories `cargo test --test sim` runs (`scripts/sim` runs a release build).
const DEFAULT_HISTORIES: u64 = 3000;
/// The first seed `cargo test --test sim` uses.
const DEFAULT_SEED: u64 = 0x00c0_ffee;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text}: {e}")))
}

/// The seed of history `i` after `base` (splitmix64: neighbouring histories differ).
fn history_seed(base: u64, i: u64) -> u64 {
    let mut z = base.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The scenario dimensions of history `seed`: every third a promotion chain.
fn mix_of(seed: u64) -> Mix {
    if seed.is_multiple_of(3) {
        Mix::Chain
    } else {
        Mix::Wide
    }
}

/// How many steps history `seed` has.
fn history_len(seed: u64) -> usize {
    20 + usize::try_from(seed % 100).expect("small")
}

/// Prints everything needed to understand and replay a failing history, then panics.
fn report(
    seed: u64,
    steps: &[history::Step],
    failed_at: Option<usize>,
    v: &invariants::Violation,
) -> ! {
    eprintln!(
        "\nVIOLATION of invariant {} in history seed {seed:#x} ({}): {}",
        v.invariant,
        failed_at.map_or_else(
            || "in the liveness phase".to_owned(),
            |i| format!("at step {i}")
        ),
        v.message
    );
    let minimal = history::shrink((seed, mix_of(seed)), steps, v.invariant, failed_at);
    let out = history::run(seed, mix_of(seed), &minimal, true);
    let scenario = scenario::Scenario::generate_mix(seed, mix_of(seed));
    eprintln!("\npolicy:\n{}", scenario.yaml);
    eprintln!("start {}, apps {:?}", scenario.start, scenario.apps);
    eprintln!(
        "\nshortest history that still fails ({} of {} steps):",
        minimal.len(),
        steps.len()
    );
    for (i, s) in minimal.iter().enumerate() {
        eprintln!("  {i:3} {s:?}");
    }
    eprintln!("\ntrace:");
    for line in &out.trace {
        eprintln!("{line}");
    }
    if let Some((at, v)) = &out.violation {
        eprintln!("\nshrunk: {} at {at:?}: {}", v.invariant, v.message);
    }
    eprintln!(
        "\nreplay: AUTOBUMP_SIM_REPLAY={seed:#x}{} cargo test --test sim -- --nocapture random_histories",
        failed_at.map_or_else(String::new, |i| format!(" AUTOBUMP_SIM_STEPS={}", i + 1))
    );
    panic!(
        "invariant {} violated in history {seed:#x}: {}",
        v.invariant, v.message
    );
}

/// Totals over many histories.
#[derive(Default)]
struct Totals {
    histories: u64,
    steps: u64,
    reconciles: u64,
    crashes: u64,
    rollbacks: u64,
    bumps: u64,
    bad_bumps: u64,
    hold_races: u64,
    tag_races: u64,
    blind_rollbacks: u64,
    coverage: [u64; 3],
    /// Histories and rollbacks by tag scheme and by cluster (see `Outcome::shape`).
    schemes: [(u64, u64); 3],
    clusters: [(u64, u64); 3],
    /// Histories and rollbacks on GitHub and on GitLab (by seed: see
    /// `scenario::forge_of_seed`).
    forges: [(u64, u64); 2],
    counts: BTreeMap<&'static str, u64>,
    /// Violations by invariant and message shape: how many, and one seed.
    failures: BTreeMap<String, (u64, u64)>,
}

impl Totals {
    fn add(&mut self, steps: usize, out: history::Outcome) {
        self.histories += 1;
        self.steps += steps as u64;
        self.reconciles += out.reconciles;
        self.crashes += out.crashes;
        self.rollbacks += u64::from(out.rollbacks);
        self.bumps += u64::from(out.bumps);
        self.bad_bumps += u64::from(out.bad_bumps);
        self.hold_races += u64::from(out.hold_races);
        self.tag_races += u64::from(out.tag_races);
        self.blind_rollbacks += u64::from(out.blind_rollbacks);
        for (total, c) in self.coverage.iter_mut().zip(out.coverage) {
            *total += c;
        }
        for (slot, i) in [
            (&mut self.schemes, out.shape.0),
            (&mut self.clusters, out.shape.1),
        ] {
            slot[i].0 += 1;
            slot[i].1 += u64::from(out.rollbacks);
        }
        for (k, v) in out.counts {
            *self.counts.entry(k).or_default() += v;
        }
    }

    /// Tallies a violation (keep-going runs) by invariant and the message's words.
    fn failed(&mut self, seed: u64, v: &invariants::Violation) {
        let shape: String = v
            .message
            .split_whitespace()
            .filter(|w| w.chars().all(char::is_alphabetic))
            .take(14)
            .collect::<Vec<_>>()
            .join(" ");
        let entry = self
            .failures
            .entry(format!("{}: {shape}", v.invariant))
            .or_insert((0, seed));
        entry.0 += 1;
    }

    // Rates and percentages for people to read; precision beyond 2^52 is moot.
    #[allow(clippy::cast_precision_loss)]
    fn print(&self, base: u64, range: std::ops::Range<u64>, secs: f64, threads: usize) {
        println!(
            "sim: {} histories ({}..{}) from seed {base:#x} in {secs:.1} s on {threads} threads ({:.1} histories/s): {} steps, {} reconciles, {} crash-restarts, {} rollbacks, {} bumps landed ({} of bad builds); races no check can close: {} merges with a CLI hold placed mid-reconcile, {} bumps with their tag deleted mid-reconcile",
            self.histories,
            range.start,
            range.end,
            self.histories as f64 / secs.max(1e-9),
            self.steps,
            self.reconciles,
            self.crashes,
            self.rollbacks,
            self.bumps,
            self.bad_bumps,
            self.hold_races,
            self.tag_races
        );
        println!(
            "invariant checks (evaluations, {}):",
            if self.failures.is_empty() {
                "all passed"
            } else {
                "some FAILED, see below"
            }
        );
        for name in invariants::ALL {
            println!(
                "  {name:28} {}",
                self.counts.get(name).copied().unwrap_or(0)
            );
        }
        let shape = |names: [&str; 3], counts: &[(u64, u64); 3]| {
            names
                .iter()
                .zip(counts)
                .map(|(n, (h, r))| format!("{n} {h}/{r}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "scenarios (histories/rollbacks): {}; {}; {} rollbacks decided while the rollout could not be observed",
            shape(["dateSha", "semver", "regex"], &self.schemes),
            shape(
                ["no cluster", "cluster observed", "cluster patched"],
                &self.clusters
            ),
            self.blind_rollbacks
        );
        let [(github, github_rb), (gitlab, gitlab_rb)] = self.forges;
        println!(
            "forges (histories/rollbacks): simulated GitHub {github}/{github_rb}, simulated GitLab {gitlab}/{gitlab_rb}"
        );
        let pct = |n: u64| 100.0 * n as f64 / self.reconciles.max(1) as f64;
        println!(
            "reconciles: {:.0}% held, {:.0}% gate not Clear, {:.0}% with a bad build deployed",
            pct(self.coverage[0]),
            pct(self.coverage[1]),
            pct(self.coverage[2])
        );
        for (shape, (count, seed)) in &self.failures {
            println!("FAILED {count}x (e.g. seed {seed:#x}) {shape}");
        }
    }
}

/// Runs one history verbosely (`AUTOBUMP_SIM_REPLAY`).
fn replay(seed: u64) {
    let mut steps = history::generate(seed, history_len(seed));
    if let Some(n) = env_u64("AUTOBUMP_SIM_STEPS") {
        steps.truncate(usize::try_from(n).expect("small"));
    }
    let out = history::run(seed, mix_of(seed), &steps, true);
    println!(
        "policy:\n{}",
        scenario::Scenario::generate_mix(seed, mix_of(seed)).yaml
    );
    for line in &out.trace {
        println!("{line}");
    }
    if let Some((at, v)) = out.violation {
        report(seed, &steps, at, &v);
    }
    println!("history {seed:#x}: no violation");
}

/// One history's result, with where it stands in the run.
struct Ran {
    index: u64,
    seed: u64,
    steps: Vec<history::Step>,
    out: history::Outcome,
}

/// Runs histories `range` of `base` on `threads` threads; returns them in index order.
/// Without `keep_going`, histories after the first failing one may be skipped (every
/// history before it still runs, so which failure is first does not depend on the
/// threads).
fn run_all(base: u64, range: std::ops::Range<u64>, threads: usize, keep_going: bool) -> Vec<Ran> {
    let next = AtomicU64::new(range.start);
    let first_failure = AtomicU64::new(u64::MAX);
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= range.end || index > first_failure.load(Ordering::Relaxed) {
                        break;
                    }
                    let seed = history_seed(base, index);
                    let steps = history::generate(seed, history_len(seed));
                    let out = history::run(seed, mix_of(seed), &steps, false);
                    if out.violation.is_some() && !keep_going {
                        first_failure.fetch_min(index, Ordering::Relaxed);
                    }
                    mine.push(Ran {
                        index,
                        seed,
                        steps,
                        out,
                    });
                }
                done.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .append(&mut mine);
            });
        }
    });
    let mut all = done
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    all.sort_by_key(|r| r.index);
    all
}

#[test]
fn random_histories() {
    if let Some(seed) = env_u64("AUTOBUMP_SIM_REPLAY") {
        replay(seed);
        return;
    }
    let n = env_u64("AUTOBUMP_SIM_HISTORIES").unwrap_or(DEFAULT_HISTORIES);
    let base = env_u64("AUTOBUMP_SIM_SEED").unwrap_or(DEFAULT_SEED);
    let first = env_u64("AUTOBUMP_SIM_FIRST").unwrap_or(0);
    let threads = env_u64("AUTOBUMP_SIM_THREADS").map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        |t| usize::try_from(t).expect("a thread count"),
    );
    let keep_going = std::env::var_os("AUTOBUMP_SIM_KEEP_GOING").is_some();
    let watch = Stopwatch::start();
    let ran = run_all(base, first..first + n, threads, keep_going);
    let secs = watch.elapsed().as_secs_f64();
    let mut t = Totals::default();
    for r in ran {
        if let Some((at, v)) = &r.out.violation {
            if !keep_going {
                report(r.seed, &r.steps, *at, v);
            }
            t.failed(r.seed, v);
        }
        let forge =
            usize::from(scenario::forge_of_seed(r.seed) == autobump::forge::ForgeKind::GitLab);
        t.forges[forge].0 += 1;
        t.forges[forge].1 += u64::from(r.out.rollbacks);
        t.add(r.steps.len(), r.out);
    }
    t.print(base, first..first + n, secs, threads);
    assert!(
        t.failures.is_empty(),
        "{} kinds of violations",
        t.failures.len()
    );
    for name in invariants::ALL {
        assert!(
            t.counts.get(name).copied().unwrap_or(0) > 0 || n < 50,
            "invariant {name} was never evaluated: the generator does not reach it"
        );
    }
}

/// A slice of the random histories with the policy state in a real SQLite database
/// (issue 16): every update one transaction, crashes after any write, people's
/// holds from the CLI in between; the invariants hold as with the in-memory store.
#[test]
fn random_histories_on_the_state_database() {
    const SLICE: u64 = 24;
    let base = env_u64("AUTOBUMP_SIM_SEED").unwrap_or(DEFAULT_SEED);
    let dir = tempfile::tempdir().unwrap();
    let mut reconciles = 0;
    let mut crashes = 0;
    for index in 0..SLICE {
        let seed = history_seed(base, index);
        let steps = history::generate(seed, history_len(seed));
        let db = autobump::store::SqliteStore::open(&dir.path().join(format!("{index}.db")))
            .expect("a state database in a temporary directory");
        let out = history::run_on(seed, mix_of(seed), &steps, false, Some(db));
        if let Some((at, v)) = &out.violation {
            // Prints the seed, the shortest failing history and its trace, then fails.
            report(seed, &steps, *at, v);
        }
        reconciles += out.reconciles;
        crashes += out.crashes;
    }
    println!("sim on SQLite: {SLICE} histories, {reconciles} reconciles, {crashes} crash-restarts");
    assert!(
        reconciles > 0 && crashes > 0,
        "the slice reconciles and crashes"
    );
}

/// The semver scenarios' tags cover what Docker Hub publishes (two, three and four
/// parts, variant suffixes, three spellings of release candidates, other variants and
/// shorter floating aliases next to the builds), and the oracle's reading of "same
/// series" and "accepted" agrees with autobump's on every tag the generator makes.
#[test]
fn semver_tag_shapes_cover_docker_hub_variants() {
    use autobump::core::tags;
    use autobump::policy::v1alpha1::{SemverPolicy, TagPolicy};
    use scenario::{Scenario, TagScheme};
    use world::{OddTag, World};

    let semver = TagPolicy::Semver(SemverPolicy::default());
    let mut shapes = std::collections::BTreeSet::new();
    let mut odd = std::collections::BTreeSet::new();
    for seed in 0..400u64 {
        let s = Scenario::generate_mix(seed, Mix::Wide);
        let TagScheme::Semver { parts, suffix, .. } = s.tags else {
            continue;
        };
        shapes.insert((parts, suffix));
        let scheme = s.tags.clone();
        let mut w = World::new(seed, std::sync::Arc::new(s));
        let apps: Vec<usize> = (0..w.scenario.apps.len()).collect();
        let deployed = w.registry.last.clone().expect("seeded");
        for step in 0..12u32 {
            let build = w.new_tag(&apps, true, step % 3);
            let oracle_same = scheme.same_series(&deployed, &build);
            assert!(oracle_same, "{deployed} -> {build}");
            assert_eq!(
                tags::series(&semver, &build),
                tags::series(&semver, &deployed),
                "{deployed} -> {build}"
            );
            assert!(
                scheme.newer(&deployed, &build, |_| None),
                "{deployed} -> {build}"
            );
            for kind in [
                OddTag::Prerelease,
                OddTag::Alias,
                OddTag::Old,
                OddTag::OutOfRange,
            ] {
                let Some(tag) = w.odd_tag(kind) else {
                    continue;
                };
                let theirs = tags::series(&semver, &tag) == tags::series(&semver, &build);
                assert_eq!(scheme.same_series(&build, &tag), theirs, "{build} vs {tag}");
                let allowed =
                    autobump::core::select::tag_allowed(&w.scenario.policy.spec.images[0], &tag);
                assert_eq!(
                    scheme.accepts(&tag),
                    allowed,
                    "{tag} under {}",
                    scheme.yaml()
                );
                if kind == OddTag::Prerelease {
                    assert!(
                        theirs,
                        "a release candidate {tag} is in the series of {build}"
                    );
                    odd.insert(if tag.contains("-rc.") {
                        "-rc.N"
                    } else if tag.contains("-rc") {
                        "-rcN"
                    } else {
                        "rcN"
                    });
                }
                if kind == OddTag::Alias && !theirs {
                    odd.insert("another series");
                }
            }
        }
    }
    for parts in [2, 3, 4] {
        assert!(shapes.iter().any(|(p, _)| *p == parts), "{shapes:?}");
    }
    for suffix in [
        None,
        Some("alpine"),
        Some("slim-bookworm"),
        Some("alpine3.18"),
    ] {
        assert!(shapes.iter().any(|(_, s)| *s == suffix), "{shapes:?}");
    }
    assert_eq!(odd.len(), 4, "{odd:?}");
}
