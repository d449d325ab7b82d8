//! The simulated world: everything that survives a crash of autobump — the git
//! remote, the registry, GitHub (pull requests, comments, checks, permissions), the
//! alert source, the cluster (see `cluster.rs`), the state store and the clock — plus
//! the fault injector that sits between autobump's adapters and the world, and the
//! record of what happened.
//!
//! The world is deterministic: its own random choices (check durations, alert lags,
//! "GitHub is still computing mergeability") come from `rng`, seeded per history.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use autobump::core::gate::GateVerdict;
use autobump::core::merge::CheckState;
use autobump::forge::Permission;
use autobump::store::PolicyState;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use fastrand::Rng;
use sha2::{Digest as _, Sha256};

use crate::cluster::ClusterWorld;
use crate::invariants::Checker;
use crate::scenario::{Scenario, TagScheme, image_tokens};

/// Image versions: `(repository, tag)`.
pub type Versions = BTreeSet<(String, String)>;

/// File path → content.
pub type Files = BTreeMap<String, Arc<str>>;
/// A tree: shared, immutable.
pub type Tree = Arc<Files>;

/// 40 hex digits of SHA-256 over length-prefixed parts (a stand-in for git ids).
pub fn hash_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(40);
    for b in &digest[..20] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The id of a tree.
pub fn tree_id(files: &Files) -> String {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(files.len() * 2);
    for (path, content) in files {
        parts.push(path.as_bytes());
        parts.push(content.as_bytes());
    }
    hash_hex(&parts)
}

/// A commit.
#[derive(Debug, Clone)]
pub struct Commit {
    /// Parent commit ids.
    pub parents: Vec<String>,
    /// The tree.
    pub tree: Tree,
    /// [`tree_id`] of the tree.
    pub tree_id: String,
    /// The policy's image versions the tree deploys (computed once, on first use).
    pub versions: OnceLock<Arc<Versions>>,
}

/// The git remote: every object ever made, and the branches.
#[derive(Debug, Default)]
pub struct Git {
    /// Commits by id (also the ones built but never pushed, like a local cache).
    pub commits: HashMap<String, Commit>,
    /// Branch → commit id.
    pub branches: BTreeMap<String, String>,
}

impl Git {
    /// Makes (or finds) the commit; the same inputs give the same id.
    pub fn make_commit(
        &mut self,
        parents: Vec<String>,
        tree: Tree,
        message: &str,
        time: i64,
    ) -> String {
        let tid = tree_id(&tree);
        let joined = parents.join(",");
        let id = hash_hex(&[
            joined.as_bytes(),
            tid.as_bytes(),
            message.as_bytes(),
            &time.to_le_bytes(),
        ]);
        self.commits.entry(id.clone()).or_insert_with(|| Commit {
            parents,
            tree,
            tree_id: tid,
            versions: OnceLock::new(),
        });
        id
    }

    /// The head of `branch`.
    pub fn head(&self, branch: &str) -> Option<&str> {
        self.branches.get(branch).map(String::as_str)
    }

    /// The commit `id`.
    pub fn commit(&self, id: &str) -> Option<&Commit> {
        self.commits.get(id)
    }

    /// The tree of `id` (empty when unknown).
    pub fn tree(&self, id: &str) -> Tree {
        self.commits
            .get(id)
            .map_or_else(|| Arc::new(Files::new()), |c| Arc::clone(&c.tree))
    }

    /// `id` and every commit it descends from.
    pub fn ancestors(&self, id: &str) -> HashSet<String> {
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([id.to_owned()]);
        while let Some(c) = queue.pop_front() {
            if !seen.insert(c.clone()) {
                continue;
            }
            if let Some(commit) = self.commits.get(&c) {
                queue.extend(commit.parents.iter().cloned());
            }
        }
        seen
    }

    /// The nearest common ancestor of `a` and `b` (breadth first from `b`).
    pub fn merge_base(&self, a: &str, b: &str) -> Option<String> {
        let of_a = self.ancestors(a);
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([b.to_owned()]);
        while let Some(c) = queue.pop_front() {
            if of_a.contains(&c) {
                return Some(c);
            }
            if !seen.insert(c.clone()) {
                continue;
            }
            if let Some(commit) = self.commits.get(&c) {
                queue.extend(commit.parents.iter().cloned());
            }
        }
        None
    }
}

/// Three-way merge of whole files: `Err(path)` on the first conflict.
pub fn merge_trees(base: &Files, ours: &Files, theirs: &Files) -> Result<Files, String> {
    let paths: BTreeSet<&String> = base
        .keys()
        .chain(ours.keys())
        .chain(theirs.keys())
        .collect();
    let mut out = Files::new();
    for path in paths {
        let (b, o, t) = (base.get(path), ours.get(path), theirs.get(path));
        let pick = if o == b {
            t
        } else if t == b || t == o {
            o
        } else {
            return Err(path.clone());
        };
        if let Some(content) = pick {
            out.insert(path.clone(), Arc::clone(content));
        }
    }
    Ok(out)
}

/// One tag in the registry.
#[derive(Debug, Clone)]
pub struct TagInfo {
    /// The tag.
    pub tag: String,
    /// Its build time.
    pub created: DateTime<Utc>,
    /// How often it was pushed again (each push is a new manifest, a new digest).
    pub generation: u32,
}

/// The digest of the `generation`-th push of `repo:tag`.
pub fn digest_of(repo: &str, tag: &str, generation: u32) -> String {
    let a = hash_hex(&[repo.as_bytes(), tag.as_bytes(), &generation.to_le_bytes()]);
    let b = hash_hex(&[a.as_bytes()]);
    format!("sha256:{a}{}", &b[..24])
}

/// The registry.
#[derive(Debug, Default)]
pub struct RegistryWorld {
    /// Repository → tags in push order.
    pub repos: BTreeMap<String, Vec<TagInfo>>,
    /// Every `(repository, tag)` ever pushed → whether that build is good.
    pub ever: HashMap<(String, String), bool>,
    /// Every digest `(repository, tag)` ever had.
    pub digests: HashMap<(String, String), Vec<String>>,
    /// When (event counter) `(repository, tag)` was last deleted.
    pub deleted: HashMap<(String, String), u64>,
    /// The date the next tag is built on.
    pub next_date: Option<NaiveDate>,
    /// Semver: the newest release version `(major, minor, patch)` pushed.
    pub semver: (u64, u64, u64),
    /// Regex: the newest build number pushed.
    pub build: u64,
    /// How many odd tags were pushed (numbers them).
    pub odd: u64,
    /// The last tag [`World::new_tag`] pushed.
    pub last: Option<String>,
    /// When `(repository, tag)` was (last) pushed, deleted tags included.
    pub built: HashMap<(String, String), DateTime<Utc>>,
}

impl RegistryWorld {
    /// Whether the registry lists `tag` for `repo` now.
    pub fn has(&self, repo: &str, tag: &str) -> bool {
        self.repos
            .get(repo)
            .is_some_and(|tags| tags.iter().any(|t| t.tag == tag))
    }

    /// Whether `digest` was ever the digest of `repo:tag`.
    pub fn had_digest(&self, repo: &str, tag: &str, digest: &str) -> bool {
        self.digests
            .get(&(repo.to_owned(), tag.to_owned()))
            .is_some_and(|d| d.iter().any(|x| x == digest))
    }

    /// Pushes `repo:tag` again: a new manifest under the same tag.
    pub fn repush(&mut self, repo: &str, index: usize) -> Option<String> {
        let tags = self.repos.get_mut(repo)?;
        let t = tags.get_mut(index)?;
        t.generation += 1;
        let digest = digest_of(repo, &t.tag, t.generation);
        let tag = t.tag.clone();
        self.digests
            .entry((repo.to_owned(), tag.clone()))
            .or_default()
            .push(digest);
        Some(tag)
    }

    /// Whether `tag` of `repo` is a bad build (unknown tags are not).
    pub fn is_bad(&self, repo: &str, tag: &str) -> bool {
        self.ever
            .get(&(repo.to_owned(), tag.to_owned()))
            .is_some_and(|good| !good)
    }
}

/// A tag pushed next to the builds that the policy must never move to (a pre-release
/// the policy takes aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OddTag {
    /// `latest` or `stable`.
    Floating,
    /// A cosign signature (`sha256-<hex>.sig`).
    Signature,
    /// Semver `-rc.N` of the next patch; a dateSha `-debug` variant; `build-N-rcM`.
    Prerelease,
    /// Semver: the next major, outside the range (without a range: as [`OddTag::Old`]).
    OutOfRange,
    /// An older version (a backport, an old build).
    Old,
    /// The newest build under another spelling of the same version (`v1.2.3` for
    /// `1.2.3`, `build-0101` for `build-101`).
    Alias,
}

/// A pull request.
#[derive(Debug, Clone)]
pub struct Pr {
    /// Its number.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Author login.
    pub author: String,
    /// Head branch.
    pub head_branch: String,
    /// Base branch.
    pub base_branch: String,
    /// Open?
    pub open: bool,
    /// Merged?
    pub merged: bool,
    /// The head when it was closed or merged.
    pub final_head: Option<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// The head GitHub has computed mergeability for.
    pub mergeability_for: Option<String>,
    /// Last update.
    pub updated_at: DateTime<Utc>,
}

/// A conversation comment.
#[derive(Debug, Clone)]
pub struct CommentRec {
    /// Id (global, increasing).
    pub id: u64,
    /// The PR.
    pub pr: u64,
    /// Author login.
    pub author: String,
    /// Text.
    pub body: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// The world's event counter when it was written.
    pub created_seq: u64,
}

/// One check of a commit.
#[derive(Debug, Clone)]
pub struct CheckRec {
    /// Its name.
    pub name: String,
    /// A commit status (else a check run).
    pub status: bool,
    /// When the current run started.
    pub started: DateTime<Utc>,
    /// How long the current run takes.
    pub duration: TimeDelta,
    /// How many more runs fail before one passes (`u32::MAX`: always fails).
    pub fails_left: u32,
    /// Whether the current run fails.
    pub failing: bool,
    /// Runs so far.
    pub runs: u32,
}

impl CheckRec {
    /// The check's state at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> CheckState {
        if now < self.started + self.duration {
            CheckState::Pending
        } else if self.failing {
            CheckState::Failure
        } else {
            CheckState::Success
        }
    }
}

/// Why an alert fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A bad build is deployed.
    BadVersion,
    /// Something unrelated.
    Noise,
}

/// An active alert.
#[derive(Debug, Clone)]
pub struct AlertRec {
    /// `alertname`.
    pub name: String,
    /// Whether the policy's matchers select it (`team="sim"`).
    pub counts: bool,
    /// Pending (not yet firing) until this instant.
    pub pending_until: DateTime<Utc>,
    /// Resolves by itself at this instant (noise).
    pub resolves_at: Option<DateTime<Utc>>,
    /// Why.
    pub cause: Cause,
}

/// What goes wrong at one adapter call of a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The call fails without doing anything (retryable or permanent error).
    FailBefore {
        /// A retryable error (else a permanent one).
        retryable: bool,
    },
    /// A write is performed, then the call fails with a retryable error (a timeout
    /// after the server did it). Reads fail before.
    FailAfter,
    /// autobump crashes before the call reaches the world.
    CrashBefore,
    /// A write is performed, then autobump crashes before it sees the answer.
    CrashAfter,
}

/// A fault at the `at`-th adapter call (counted from 0) of a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Which call.
    pub at: u32,
    /// What happens.
    pub kind: FaultKind,
}

/// The fault injector's answer to an adapter call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Perform the call; then, if set, fail (and maybe crash).
    Go(Option<After>),
    /// Fail now without touching the world.
    Fail {
        /// With a retryable error.
        retryable: bool,
    },
}

/// What happens after a performed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Fail with a retryable error.
    Fail,
    /// Crash.
    Crash,
}

/// Who wrote to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    /// autobump (a reconcile).
    Controller,
    /// A person with `autobump hold` / `unhold`.
    Cli(String),
}

/// What the world knows about the reconcile in progress.
// Independent facts about one reconcile, not a state machine in disguise.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone)]
pub struct Reconciling {
    /// The gate verdict autobump was given.
    pub gate: GateVerdict,
    /// Adapter calls so far.
    pub calls: u32,
    /// The fault to inject.
    pub fault: Option<Fault>,
    /// Whether it was injected.
    pub fault_fired: bool,
    /// A world event to happen right before call `.0`.
    pub interleave: Option<(u32, crate::history::Step)>,
    /// Checks read: `(sha, green)`; green per the policy's required checks.
    pub checks_read: Vec<(String, bool)>,
    /// The event counter at the start.
    pub start_seq: u64,
    /// Comment ids marked seen during this reconcile, in order.
    pub newly_seen: Vec<u64>,
    /// A person placed a hold with the CLI while this reconcile ran.
    pub concurrent_cli_hold: bool,
    /// A person lifted the hold with the CLI while this reconcile ran.
    pub concurrent_cli_unhold: bool,
    /// A rollback was due when the reconcile started, or decided during it.
    pub rollback_due: bool,
    /// Observing the rollout in the cluster failed during this reconcile.
    pub observe_failed: bool,
    /// Trace of calls (verbose runs only).
    pub calls_log: Vec<String>,
}

/// How checks behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiMode {
    /// Random: slow, flaky, failing checks.
    Random,
    /// Every check passes after ten minutes (the liveness phase).
    Green,
}

/// Results of pure computations over world data, kept to save time (not state: a
/// restart of autobump could drop them without any difference).
#[derive(Default)]
pub struct Memo {
    /// `rewrite::scan` of a file's text, structured (else text) mode.
    pub scans: HashMap<(Arc<str>, bool), Vec<autobump::core::rewrite::Found>>,
    /// Bump rewrites by tree id and request.
    pub bumps: HashMap<(String, String), Arc<crate::adapters::BumpRewrite>>,
}

/// The world.
// Independent switches of the world (alert source up, CI mode, crashed, verbose).
#[allow(clippy::struct_excessive_bools)]
pub struct World {
    /// The scenario (policy, apps, users).
    pub scenario: Arc<Scenario>,
    /// Now.
    pub now: DateTime<Utc>,
    /// Counts every event and write (orders things that happen at the same instant).
    pub seq: u64,
    /// The world's own randomness.
    pub rng: Rng,
    /// The git remote.
    pub git: Git,
    /// The registry.
    pub registry: RegistryWorld,
    /// The cluster and its GitOps applier (when the policy observes workloads).
    pub cluster: Option<ClusterWorld>,
    /// Pull requests by number.
    pub prs: BTreeMap<u64, Pr>,
    /// Comments.
    pub comments: Vec<CommentRec>,
    /// The next comment id.
    pub next_comment: u64,
    /// Checks by commit.
    pub ci: HashMap<String, Vec<CheckRec>>,
    /// How checks behave.
    pub ci_mode: CiMode,
    /// Active alerts.
    pub alerts: Vec<AlertRec>,
    /// Whether the alert source answers.
    pub alerts_reachable: bool,
    /// When an unreachable alert source comes back by itself.
    pub reachable_again: Option<DateTime<Utc>>,
    /// On-call silenced every alert (the liveness phase).
    pub alerts_silenced: bool,
    /// Since when the deployed versions include a bad build, and when its alert fires.
    pub bad_deployed: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// When the bad-version alert resolves (no bad build deployed any more).
    pub bad_resolves_at: Option<DateTime<Utc>>,
    /// The durable policy state (with [`Self::db`], a mirror of it for the checker).
    pub store: BTreeMap<String, PolicyState>,
    /// The real state database, when the history runs on it (issue 16): the
    /// controller reads and writes it; [`Self::store`] mirrors every write.
    pub db: Option<autobump::store::SqliteStore>,
    /// autobump crashed; every adapter call fails until the restart.
    pub crashed: bool,
    /// The reconcile in progress.
    pub rc: Option<Reconciling>,
    /// Branches a person pushed non-bump changes to (the bot's PR branch tampered).
    pub tampered: BTreeSet<String>,
    /// Invariant bookkeeping and results.
    pub checker: Checker,
    /// Memoized pure computations.
    pub memo: Memo,
    /// Keep a call trace.
    pub verbose: bool,
    /// Lines for the trace of the current step.
    pub notes: Vec<String>,
    /// Notification ids delivered (each history entry at most once).
    pub notified: BTreeSet<String>,
}

/// The GitHub users and their roles; anyone else has none.
pub const USERS: &[(&str, Permission)] = &[
    ("alice", Permission::Admin),
    ("mia", Permission::Maintain),
    ("wanda", Permission::Write),
    ("trinity", Permission::Triage),
    ("reader", Permission::Read),
    ("mallory", Permission::None),
];

/// The bot's login.
pub const BOT: &str = "autobump-bot";

/// The base branch.
pub const MAIN: &str = "main";

impl World {
    /// The world at the start of a history.
    pub fn new(seed: u64, scenario: Arc<Scenario>) -> Self {
        let mut w = Self {
            now: scenario.start,
            seq: 0,
            rng: Rng::with_seed(seed ^ 0x5eed_f301_1d00),
            git: Git::default(),
            registry: RegistryWorld::default(),
            cluster: None,
            prs: BTreeMap::new(),
            comments: Vec::new(),
            next_comment: 1000,
            ci: HashMap::new(),
            ci_mode: CiMode::Random,
            alerts: Vec::new(),
            alerts_reachable: true,
            reachable_again: None,
            alerts_silenced: false,
            bad_deployed: None,
            bad_resolves_at: None,
            store: BTreeMap::new(),
            db: None,
            crashed: false,
            rc: None,
            tampered: BTreeSet::new(),
            checker: Checker::default(),
            memo: Memo::default(),
            verbose: false,
            notes: Vec::new(),
            notified: BTreeSet::new(),
            scenario,
        };
        w.seed_registry_and_repo();
        if let Some(c) = &w.scenario.cluster {
            let head = w.git.head(MAIN).expect("main exists");
            let images = w.manifest_images(&w.git.tree(head));
            // The cluster draws from a stream of its own: the classic ones stay as they were.
            w.cluster = Some(ClusterWorld::new(
                seed ^ 0xc1a5_7e55,
                &w.scenario,
                c,
                &images,
                w.now,
            ));
        }
        w
    }

    fn seed_registry_and_repo(&mut self) {
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid date");
        self.registry.next_date = Some(start);
        self.registry.semver = (1, 3, 0);
        self.registry.build = 100;
        let apps: Vec<usize> = (0..self.scenario.apps.len()).collect();
        let mut first = Vec::new();
        for _ in 0..3 {
            first.push(self.new_tag(&apps, true, 1));
        }
        let deployed = first[1].clone();
        let files = self.scenario.initial_files(&deployed);
        let id = self
            .git
            .make_commit(Vec::new(), Arc::new(files), "Initial commit", 0);
        self.git.branches.insert(MAIN.to_owned(), id);
        self.checker
            .on_main_changed(self.now, &self.deployed_versions());
    }

    /// A person's role on the repository.
    pub fn permission(user: &str) -> Permission {
        if user.eq_ignore_ascii_case(BOT) {
            return Permission::Write;
        }
        USERS
            .iter()
            .find(|(u, _)| u.eq_ignore_ascii_case(user))
            .map_or(Permission::None, |(_, p)| *p)
    }

    /// Notes a line in the current step's trace.
    pub fn note(&mut self, line: impl Into<String>) {
        if self.verbose {
            self.notes.push(line.into());
        }
    }

    /// Pushes a new build for the apps at `apps`, `days` after the last one (semver: a
    /// minor release when `days` is 2, else a patch; regex: `days + 1` build numbers
    /// later); returns the tag.
    pub fn new_tag(&mut self, apps: &[usize], good: bool, days: u32) -> String {
        let tag = match self.scenario.tags {
            TagScheme::DateSha => {
                let date = self
                    .registry
                    .next_date
                    .expect("seeded")
                    .checked_add_days(chrono::Days::new(u64::from(days)))
                    .expect("date in range");
                self.registry.next_date = Some(date);
                let hex = self.hex(7);
                format!("v{}-{hex}", date.format("%Y%m%d"))
            }
            TagScheme::Semver { parts, .. } => {
                let (major, minor, patch) = self.registry.semver;
                // Two-part versions have no patch: every build is a minor release.
                let next = if days >= 2 || parts == 2 {
                    (major, minor + 1, 0)
                } else {
                    (major, minor, patch + 1)
                };
                self.registry.semver = next;
                self.scenario.tags.version_text(next)
            }
            TagScheme::Regex => {
                self.registry.build += 1 + u64::from(days);
                format!("build-{}", self.registry.build)
            }
        };
        self.registry.last = Some(tag.clone());
        self.push_tag(apps, &tag, good);
        tag
    }

    /// `n` random lowercase hex digits.
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from_digit(self.rng.u32(0..16), 16).expect("hex digit"))
            .collect()
    }

    /// Pushes a tag the policy must never move to (or, for a pre-release the policy
    /// takes, may): see [`OddTag`]. Returns it, or `None` when the kind does not apply
    /// to the scheme.
    pub fn odd_tag(&mut self, kind: OddTag) -> Option<String> {
        self.registry.odd += 1;
        let n = self.registry.odd;
        let (major, minor, patch) = self.registry.semver;
        let scheme = self.scenario.tags.clone();
        let next = match scheme {
            TagScheme::Semver { parts: 2, .. } => (major, minor + 1, 0),
            _ => (major, minor, patch + 1),
        };
        let tag = match (kind, scheme.clone()) {
            (OddTag::Floating, _) => (if n.is_multiple_of(2) {
                "latest"
            } else {
                "stable"
            })
            .to_owned(),
            (OddTag::Signature, _) => format!("sha256-{}.sig", self.hex(64)),
            // The next version's release candidate, in the three spellings Docker Hub
            // images use: `1.4.1-rc.3-alpine`, `1.4.1rc3-alpine`, `1.4.1-rc3-alpine`.
            (OddTag::Prerelease, TagScheme::Semver { .. }) => {
                let marker = match n % 3 {
                    0 => format!("-rc.{n}"),
                    1 => format!("rc{n}"),
                    _ => format!("-rc{n}"),
                };
                scheme.version_with(Some(next), Some(&marker), None)
            }
            (OddTag::Prerelease, TagScheme::DateSha) => {
                let date = self.registry.next_date.expect("seeded");
                format!("v{}-{}-debug", date.format("%Y%m%d"), self.hex(7))
            }
            (OddTag::Prerelease, TagScheme::Regex) => {
                format!("build-{}-rc{n}", self.registry.build + 1)
            }
            (OddTag::OutOfRange, TagScheme::Semver { range: Some(_), .. }) => {
                scheme.version_text((major + 1, 0, 0))
            }
            (OddTag::OutOfRange | OddTag::Old, TagScheme::Semver { .. }) => {
                scheme.version_text((major, 0, n))
            }
            (OddTag::OutOfRange | OddTag::Old, TagScheme::DateSha) => {
                format!("v202512{:02}-{}", n % 28 + 1, self.hex(7))
            }
            (OddTag::OutOfRange | OddTag::Old, TagScheme::Regex) => format!("build-{}", n % 50),
            // The newest build in another series: the other `v` spelling, another
            // variant, or a shorter floating alias (`1.4-alpine` for `1.4.1-alpine`),
            // as Docker Hub images publish them side by side.
            (OddTag::Alias, TagScheme::Semver { suffix, .. }) => {
                let last = self.registry.last.clone()?;
                let current = (major, minor, patch);
                match n % 4 {
                    0 => match last.strip_prefix('v') {
                        Some(bare) => bare.to_owned(),
                        None => format!("v{last}"),
                    },
                    1 => scheme.version_with(
                        Some(current),
                        None,
                        Some(if suffix.is_some() { "" } else { "alpine" }),
                    ),
                    2 => scheme.version_with(
                        Some(current),
                        None,
                        Some(&format!("{}-slim", suffix.unwrap_or("bookworm"))),
                    ),
                    _ => {
                        let full = scheme.version_text(current);
                        let numbers = full.split('-').next().unwrap_or(&full);
                        let shorter = &numbers[..numbers.rfind('.')?];
                        match suffix {
                            Some(s) => format!("{shorter}-{s}"),
                            None => shorter.to_owned(),
                        }
                    }
                }
            }
            (OddTag::Alias, TagScheme::Regex) => {
                format!(
                    "build-0{}",
                    self.registry.last.clone()?.strip_prefix("build-")?
                )
            }
            (OddTag::Alias, TagScheme::DateSha) => return None,
        };
        let apps: Vec<usize> = (0..self.scenario.apps.len()).collect();
        self.push_tag(&apps, &tag, true);
        Some(tag)
    }

    fn push_tag(&mut self, apps: &[usize], tag: &str, good: bool) {
        for &a in apps {
            let repo = self.scenario.repo(a);
            self.registry
                .ever
                .insert((repo.clone(), tag.to_owned()), good);
            self.registry
                .digests
                .entry((repo.clone(), tag.to_owned()))
                .or_default()
                .push(digest_of(&repo, tag, 0));
            self.registry
                .built
                .insert((repo.clone(), tag.to_owned()), self.now);
            self.registry.repos.entry(repo).or_default().push(TagInfo {
                tag: tag.to_owned(),
                created: self.now,
                generation: 0,
            });
        }
        self.seq += 1;
    }

    /// The versions of the policy's images on the base branch: `(repo, tag)`.
    pub fn deployed_versions(&self) -> Versions {
        (*self.deployed()).clone()
    }

    /// [`World::deployed_versions`], shared (computed once per commit).
    pub fn deployed(&self) -> Arc<Versions> {
        let head = self.git.head(MAIN).expect("main exists");
        let commit = self.git.commit(head).expect("main's commit exists");
        Arc::clone(
            commit
                .versions
                .get_or_init(|| Arc::new(self.versions_in(&commit.tree))),
        )
    }

    /// The versions the running workloads have: the cluster's, or (without a cluster)
    /// the base branch's.
    pub fn serving_versions(&self) -> Arc<Versions> {
        match &self.cluster {
            Some(c) => Arc::new(c.running_versions(&self.scenario.prefix)),
            None => self.deployed(),
        }
    }

    /// The full image reference (`repo:tag[@digest]`) of each of the policy's
    /// repositories in a tree (the first outside comments, in the policy's files).
    pub fn manifest_images(&self, tree: &Files) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (path, text) in tree {
            if !self.scenario.included(path) {
                continue;
            }
            for line in text.lines() {
                let code = line.split('#').next().unwrap_or("");
                for t in image_tokens(code, &self.scenario.prefix) {
                    let full = &code[t.at..t.version_at() + t.version_len()];
                    out.entry(t.repo.to_owned())
                        .or_insert_with(|| full.to_owned());
                }
            }
        }
        out
    }

    /// The versions of the policy's images a tree deploys (outside comments, in the
    /// policy's files).
    pub fn versions_in(&self, tree: &Files) -> Versions {
        let mut out = BTreeSet::new();
        for (path, text) in tree {
            if !self.scenario.included(path) {
                continue;
            }
            for line in text.lines() {
                let code = line.split('#').next().unwrap_or("");
                for t in image_tokens(code, &self.scenario.prefix) {
                    out.insert((t.repo.to_owned(), t.tag.to_owned()));
                }
            }
        }
        out
    }

    /// Moves the clock and lets the world react (the applier syncs, checks finish,
    /// alerts fire).
    pub fn advance(&mut self, by: TimeDelta) {
        self.now += by;
        self.seq += 1;
        self.sync_cluster();
        self.update_alerts();
    }

    /// Lets the GitOps applier apply the base branch if a sync is due.
    pub fn sync_cluster(&mut self) {
        let now = self.now;
        let due = self.cluster.as_mut().and_then(|c| c.sync_due(now));
        if let Some(at) = due {
            let tree = self.git.tree(self.git.head(MAIN).expect("main"));
            let images = self.manifest_images(&tree);
            let prefix = self.scenario.prefix.clone();
            let registry = &self.registry;
            let good = |r: &str, t: &str| !registry.is_bad(r, t);
            let changed = self
                .cluster
                .as_mut()
                .expect("checked")
                .apply(&images, at, &prefix, &good);
            if changed > 0 {
                self.seq += 1;
                self.note(format!(
                    "  the applier synced main to the cluster ({changed} workloads changed)"
                ));
            }
        }
    }

    /// Fires and resolves the alerts that bad deployed builds cause; noise resolves and
    /// the alert source comes back when their time is up.
    pub fn update_alerts(&mut self) {
        let now = self.now;
        self.alerts
            .retain(|a| a.resolves_at.is_none_or(|t| now < t));
        if self.reachable_again.is_some_and(|t| now >= t) {
            self.reachable_again = None;
            self.alerts_reachable = true;
        }
        let bad: Vec<(String, String)> = self
            .serving_versions()
            .iter()
            .filter(|(r, t)| self.registry.is_bad(r, t))
            .cloned()
            .collect();
        if bad.is_empty() {
            if self.bad_deployed.take().is_some() {
                let lag = TimeDelta::minutes(i64::from(self.rng.u32(0..20)));
                self.bad_resolves_at = Some(self.now + lag);
            }
        } else if self.bad_deployed.is_none() {
            // Most bad builds hurt within the bake; some only after it.
            let bake = self
                .scenario
                .bake
                .unwrap_or(TimeDelta::minutes(30))
                .num_minutes();
            let lag = if self.rng.u32(0..10) == 0 {
                self.rng.i64(bake..=bake * 3 / 2)
            } else {
                self.rng.i64(0..(bake * 4 / 5).max(1))
            };
            let lag = TimeDelta::minutes(lag);
            self.bad_deployed = Some((self.now, self.now + lag));
            self.bad_resolves_at = None;
        }
        if let Some((_, fires)) = self.bad_deployed
            && self.now >= fires
            && !self.alerts.iter().any(|a| a.cause == Cause::BadVersion)
        {
            let pending = TimeDelta::minutes(i64::from(self.rng.u32(0..3)));
            self.alerts.push(AlertRec {
                name: "BadVersion".into(),
                counts: true,
                pending_until: fires + pending,
                resolves_at: None,
                cause: Cause::BadVersion,
            });
            self.note("alert BadVersion starts");
        }
        if let Some(at) = self.bad_resolves_at
            && self.now >= at
        {
            self.bad_resolves_at = None;
            self.alerts.retain(|a| a.cause != Cause::BadVersion);
            self.note("alert BadVersion resolved");
        }
    }

    /// The checks a new head gets.
    pub fn ensure_ci(&mut self, sha: &str) {
        if self.ci.contains_key(sha) {
            return;
        }
        let tree = self.git.tree(sha);
        let bad = self
            .versions_in(&tree)
            .iter()
            .any(|(r, t)| self.registry.is_bad(r, t));
        let mut checks = Vec::new();
        for (name, status) in self.scenario.checks.clone() {
            let (duration, fails_left) = match self.ci_mode {
                CiMode::Green => (TimeDelta::minutes(10), 0),
                CiMode::Random => {
                    let slow = self.rng.u32(0..10) == 0;
                    let minutes = if slow {
                        self.rng.i64(60..180)
                    } else {
                        self.rng.i64(2..25)
                    };
                    let fails = match self.rng.u32(0..20) {
                        0..=1 => u32::MAX,
                        2..=3 => 1,
                        4 => 2,
                        _ if bad && self.rng.u32(0..5) == 0 => u32::MAX,
                        _ => 0,
                    };
                    (TimeDelta::minutes(minutes), fails)
                }
            };
            checks.push(CheckRec {
                name,
                status,
                started: self.now,
                duration,
                failing: fails_left > 0,
                fails_left: fails_left.saturating_sub(1),
                runs: 1,
            });
        }
        self.ci.insert(sha.to_owned(), checks);
    }

    /// Re-runs the failed checks of `sha` (a `/retest`).
    pub fn retest(&mut self, sha: &str) {
        let now = self.now;
        let green = self.ci_mode == CiMode::Green;
        let durations: Vec<i64> = (0..self.scenario.checks.len())
            .map(|_| self.rng.i64(2..25))
            .collect();
        if let Some(checks) = self.ci.get_mut(sha) {
            for (c, minutes) in checks.iter_mut().zip(durations) {
                if c.state(now) == CheckState::Failure {
                    c.started = now;
                    c.duration = TimeDelta::minutes(if green { 10 } else { minutes });
                    c.runs += 1;
                    c.failing = c.fails_left > 0 && !green;
                    c.fails_left = c.fails_left.saturating_sub(1);
                }
            }
        }
    }

    /// The head of an open PR (its branch's head), or where it ended.
    pub fn pr_head(&self, pr: &Pr) -> Option<String> {
        if pr.open {
            self.git.head(&pr.head_branch).map(str::to_owned)
        } else {
            pr.final_head.clone()
        }
    }

    /// The open PR (lowest number) from `branch` by `author`.
    pub fn open_pr(&self, branch: &str, author: Option<&str>) -> Option<&Pr> {
        self.prs.values().find(|p| {
            p.open
                && p.head_branch == branch
                && author.is_none_or(|a| p.author.eq_ignore_ascii_case(a))
        })
    }

    /// Sets `branch` to `id` (a push); runs the branch's checks and updates its PRs.
    pub fn set_branch(&mut self, branch: &str, id: &str) {
        self.git.branches.insert(branch.to_owned(), id.to_owned());
        self.seq += 1;
        if branch == MAIN {
            let versions = self.deployed_versions();
            self.checker.on_main_changed(self.now, &versions);
            if let Some(c) = self.cluster.as_mut() {
                c.main_changed(self.now);
            }
            self.sync_cluster();
            self.update_alerts();
        } else {
            self.ensure_ci(id);
            let now = self.now;
            for pr in self.prs.values_mut() {
                if pr.open && pr.head_branch == branch {
                    pr.updated_at = now;
                }
            }
        }
    }

    /// A new comment.
    pub fn add_comment(&mut self, pr: u64, author: &str, body: &str) -> u64 {
        self.next_comment += 1;
        self.seq += 1;
        let id = self.next_comment;
        self.comments.push(CommentRec {
            id,
            pr,
            author: author.to_owned(),
            body: body.to_owned(),
            created_at: self.now,
            created_seq: self.seq,
        });
        id
    }

    /// The state of the policy.
    pub fn state(&self) -> PolicyState {
        self.store
            .get(&self.scenario.name)
            .cloned()
            .unwrap_or_default()
    }

    /// Writes the policy's state; the checker sees every change.
    pub fn write_state(&mut self, name: &str, after: PolicyState, writer: &Writer) {
        if let Some(db) = &self.db {
            // A person's write from the CLI, or the mirror of one the controller
            // already committed (then nothing changes and nothing is written).
            autobump::store::Store::update(db, name, &mut |s| *s = after.clone())
                .expect("the simulation's state database");
        }
        let before = self
            .store
            .insert(name.to_owned(), after)
            .unwrap_or_default();
        self.seq += 1;
        if name == self.scenario.name {
            let after = self.store[name].clone();
            crate::invariants::on_store_write(self, &before, &after, writer);
        }
    }

    /// The fault injector: called at the start of every adapter call.
    pub fn admit(&mut self, call: &'static str, write: bool) -> Admit {
        if self.crashed {
            return Admit::Fail { retryable: true };
        }
        let Some(rc) = self.rc.as_mut() else {
            return Admit::Go(None);
        };
        let n = rc.calls;
        rc.calls += 1;
        if self.verbose {
            rc.calls_log.push(format!("{n}:{call}"));
        }
        if let Some((at, _)) = &rc.interleave
            && *at == n
        {
            let (_, step) = rc.interleave.take().expect("checked");
            let text = format!("  (interleaved before call {n} {call}: {step:?})");
            self.note(text);
            crate::history::apply_world_event(self, &step);
        }
        let rc = self.rc.as_mut().expect("reconciling");
        let Some(fault) = rc.fault.filter(|f| f.at == n) else {
            return Admit::Go(None);
        };
        rc.fault_fired = true;
        let text = format!("  fault {:?} at call {n} {call}", fault.kind);
        self.note(text);
        match fault.kind {
            FaultKind::FailBefore { retryable } => Admit::Fail { retryable },
            FaultKind::FailAfter if write => Admit::Go(Some(After::Fail)),
            FaultKind::CrashAfter if write => Admit::Go(Some(After::Crash)),
            FaultKind::FailAfter => Admit::Fail { retryable: true },
            // A crash before a call, or at a read (nothing to have done yet).
            FaultKind::CrashBefore | FaultKind::CrashAfter => {
                self.crashed = true;
                Admit::Fail { retryable: true }
            }
        }
    }

    /// After a performed call: `Err(())` when the call must fail now.
    pub fn finish(&mut self, after: Option<After>) -> Result<(), ()> {
        match after {
            None => Ok(()),
            Some(After::Fail) => Err(()),
            Some(After::Crash) => {
                self.crashed = true;
                Err(())
            }
        }
    }

    /// The current gate as the alert source reports it.
    pub fn active_alerts(&self) -> Vec<&AlertRec> {
        if self.alerts_silenced {
            return Vec::new();
        }
        self.alerts.iter().collect()
    }
}
