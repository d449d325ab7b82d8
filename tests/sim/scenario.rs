//! A random scenario: the policy under test (built from YAML by the real loader), the
//! apps and their manifests, the checks CI runs, the tag scheme (dateSha, semver with a
//! range and pre-releases, or a regex over build numbers), the cluster the images run in
//! (if the policy observes workloads), and independent oracles for the schedule
//! (windows and freezes in the policy's timezone, DST included) and for which tags the
//! policy accepts and in what order.

use std::fmt::Write as _;
use std::sync::OnceLock;

use autobump::core::commands::{Permission, Requirements};
use autobump::forge::ForgeKind;
use autobump::policy::v1alpha1::WorkloadKind;
use autobump::policy::{self, Policy};
use chrono::{DateTime, Datelike as _, NaiveDate, TimeDelta, Timelike as _, Utc};
use chrono_tz::Tz;
use fastrand::Rng;

use crate::world::Files;

/// The registry host and namespace every app lives under.
pub const PREFIX: &str = "registry.sim/team/";

/// A weekly window, for the oracle: days (Monday = 0) and minutes of the day.
#[derive(Debug, Clone)]
pub struct OracleWindow {
    days: [bool; 7],
    start: u32,
    end: u32,
}

/// A freeze, for the oracle.
#[derive(Debug, Clone)]
pub enum OracleFreeze {
    /// Local dates, both inclusive.
    Dates(NaiveDate, NaiveDate),
    /// Instants, end exclusive.
    Instants(DateTime<Utc>, DateTime<Utc>),
}

/// When bumps may happen, computed independently of `core::schedule`: naive local
/// wall-clock time in the timezone (so a skipped hour never occurs and a repeated one
/// occurs twice), windows `[start, end)` with `end <= start` running overnight.
#[derive(Debug, Clone)]
pub struct ScheduleOracle {
    /// The timezone.
    pub tz: Tz,
    windows: Vec<OracleWindow>,
    freezes: Vec<OracleFreeze>,
}

impl ScheduleOracle {
    /// Inside a window and not frozen.
    pub fn open(&self, t: DateTime<Utc>) -> bool {
        let local = t.with_timezone(&self.tz).naive_local();
        let frozen = self.freezes.iter().any(|f| match f {
            OracleFreeze::Dates(a, b) => *a <= local.date() && local.date() <= *b,
            OracleFreeze::Instants(a, b) => *a <= t && t < *b,
        });
        if frozen {
            return false;
        }
        if self.windows.is_empty() {
            return true;
        }
        let minute = local.hour() * 60 + local.minute();
        let day = local.weekday().num_days_from_monday() as usize;
        let yesterday = (day + 6) % 7;
        self.windows.iter().any(|w| {
            if w.start < w.end {
                w.days[day] && w.start <= minute && minute < w.end
            } else {
                (w.days[day] && minute >= w.start) || (w.days[yesterday] && minute < w.end)
            }
        })
    }
}

/// Which dimensions a scenario draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// The first generator's: dateSha tags, no cluster. The fixed-seed regressions were
    /// found (and are replayed) with these scenarios, so they never change.
    Classic,
    /// Classic, plus the dimensions added later, drawn from their own stream: semver and
    /// regex tag schemes, and a cluster with `rollout.workloads` and maybe
    /// `rollback.patchCluster`. The random histories use these.
    Wide,
    /// Wide, and the policy is the last of a promotion chain of two or three
    /// (`promotion.from`; the upstreams are modelled, see `upstream.rs`). A third of
    /// the random histories use these.
    Chain,
}

impl Mix {
    /// Whether the wide dimensions are drawn.
    pub fn is_wide(self) -> bool {
        matches!(self, Self::Wide | Self::Chain)
    }
}

/// The tag scheme of the policy's images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagScheme {
    /// `vYYYYMMDD-<hex>` (`tags: {dateSha: {}}`).
    DateSha,
    /// `[v]N.N[.N[.N]][-SUFFIX]` with pre-releases `-rc.N`, `rcN` or `-rcN` before the
    /// suffix (`tags: {semver: {range, prerelease}}`).
    Semver {
        /// Tags are written with a leading `v`.
        v: bool,
        /// `semver.range` (Cargo syntax), if any.
        range: Option<&'static str>,
        /// `semver.prerelease`.
        prerelease: bool,
        /// How many numeric parts the builds have (2, 3 or 4).
        parts: u8,
        /// The variant the builds are published as (`alpine`, `slim-bookworm`,
        /// `alpine3.18`), if any; other variants are pushed next to them.
        suffix: Option<&'static str>,
    },
    /// `build-N` (`tags: {regex: {pattern: '^build-(?P<n>[0-9]+)$', extract: n}}`).
    Regex,
}

/// The regex scheme's pattern.
pub const BUILD_PATTERN: &str = "^build-(?P<n>[0-9]+)$";

/// The cluster of a scenario whose policy observes workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterScenario {
    /// The kind of each app's workload (by app index).
    pub kinds: Vec<WorkloadKind>,
    /// `rollback.patchCluster`.
    pub patch: bool,
    /// Apps whose workload also runs the app's image in an init container.
    pub init: Vec<bool>,
    /// Apps whose workload has a sidecar of another image.
    pub sidecar: Vec<bool>,
}

/// The namespace of the simulated workloads.
pub const NAMESPACE: &str = "sim";
/// The label every simulated workload carries, and the policy selects.
pub const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "sim");
/// The image of the sidecars (not one of the policy's).
pub const SIDECAR: &str = "registry.sim/infra/proxy:1.4.2";

/// Everything fixed for one history.
pub struct Scenario {
    /// The policy's name.
    pub name: String,
    /// The policy, as loaded.
    pub policy: Policy,
    /// Its YAML (for reports).
    pub yaml: String,
    /// Direct push (else pull requests).
    pub direct: bool,
    /// App names (`hook`, `deck`, `crier`).
    pub apps: Vec<String>,
    /// [`PREFIX`].
    pub prefix: String,
    /// The PR branch.
    pub bump_branch: String,
    /// The rollback PR branch.
    pub rollback_branch: String,
    /// `schedule.minInterval`.
    pub min_interval: TimeDelta,
    /// `gate.bake`, when there is a gate.
    pub bake: Option<TimeDelta>,
    /// `rollout.deployDelay`.
    pub deploy_delay: TimeDelta,
    /// The schedule oracle.
    pub oracle: ScheduleOracle,
    /// Who may `/hold` and `/unhold`.
    pub requirements: Requirements,
    /// `merge.requiredChecks`.
    pub required_checks: Vec<String>,
    /// The checks CI runs: name, and whether it is a commit status.
    pub checks: Vec<(String, bool)>,
    /// Structured (else text) rewriting.
    pub structured: bool,
    /// `pinDigest`: references carry `@sha256:…`.
    pub pin_digest: bool,
    /// Where the history starts.
    pub start: DateTime<Utc>,
    /// The dimensions it was drawn with.
    pub mix: Mix,
    /// The promotion chain above the policy, its direct upstream first (empty: no
    /// `promotion.from`).
    pub upstreams: Vec<String>,
    /// How the images are tagged.
    pub tags: TagScheme,
    /// The cluster, when the policy observes workloads.
    pub cluster: Option<ClusterScenario>,
    /// The forge the repository is on: GitLab for odd seeds (a nested-group project on
    /// a `gitlab.*` host), GitHub for even ones; decided by the seed alone, so every
    /// other choice of a seed stays what it was.
    pub forge: ForgeKind,
}

/// The forge of `seed`'s history (see [`Scenario::forge`]).
pub fn forge_of_seed(seed: u64) -> ForgeKind {
    if seed % 2 == 1 {
        ForgeKind::GitLab
    } else {
        ForgeKind::GitHub
    }
}

/// The repository URL a history on `forge` names.
pub fn repo_url(forge: ForgeKind) -> &'static str {
    match forge {
        ForgeKind::GitHub => "https://github.com/sim/infra.git",
        ForgeKind::GitLab => "https://gitlab.example.com/sim/platform/infra.git",
    }
}

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/Los_Angeles",
    "Australia/Sydney",
    "Asia/Kolkata",
];

/// `(window text, days, start minute, end minute)`.
const WINDOWS: &[(&str, [bool; 7], u32, u32)] = &[
    (
        "Mon-Fri 09:00-17:00",
        [true, true, true, true, true, false, false],
        540,
        1020,
    ),
    ("* 01:00-04:00", [true; 7], 60, 240),
    (
        "Sun 02:30-03:30",
        [false, false, false, false, false, false, true],
        150,
        210,
    ),
    (
        "Fri 22:00-02:00",
        [false, false, false, false, true, false, false],
        1320,
        120,
    ),
    (
        "Sat,Sun 00:00-24:00",
        [false, false, false, false, false, true, true],
        0,
        1440,
    ),
    (
        "Mon,Wed,Fri 12:00-13:00",
        [true, false, true, false, true, false, false],
        720,
        780,
    ),
    (
        "Tue-Thu 20:00-08:00",
        [false, true, true, true, false, false, false],
        1200,
        480,
    ),
];

/// The instants in 2026 where `tz` changes its UTC offset.
pub fn transitions(tz: Tz) -> &'static [DateTime<Utc>] {
    static CACHE: OnceLock<Vec<(Tz, Vec<DateTime<Utc>>)>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        ZONES
            .iter()
            .map(|z| {
                let tz: Tz = z.parse().expect("known zone");
                let mut out = Vec::new();
                let mut t: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("valid");
                let offset = |t: DateTime<Utc>| chrono::Offset::fix(t.with_timezone(&tz).offset());
                let mut last = offset(t);
                while t.year() < 2028 {
                    t += TimeDelta::minutes(30);
                    let now = offset(t);
                    if now != last {
                        out.push(t);
                        last = now;
                    }
                }
                (tz, out)
            })
            .collect()
    });
    all.iter()
        .find(|(z, _)| *z == tz)
        .map_or(&[], |(_, v)| v.as_slice())
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(0..items.len())]
}

fn duration(minutes: i64) -> String {
    if minutes % 60 == 0 {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

impl Scenario {
    /// The classic scenario of `seed` (see [`Mix::Classic`]).
    pub fn generate(seed: u64) -> Self {
        Self::generate_mix(seed, Mix::Classic)
    }

    /// A random scenario with the dimensions of `mix`. The classic choices come first
    /// and from the same streams in every mix, so a wide scenario is its classic one
    /// plus a tag scheme and a cluster.
    // One policy's worth of choices, read top to bottom like the YAML it writes.
    #[allow(clippy::too_many_lines)]
    pub fn generate_mix(seed: u64, mix: Mix) -> Self {
        let mut rng = Rng::with_seed(seed ^ 0x5ce7_a410);
        let name = "sim".to_owned();
        let direct = rng.u32(0..100) < 35;
        let n_apps = rng.usize(1..=3);
        let apps: Vec<String> = ["hook", "deck", "crier"][..n_apps]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let consistent = rng.bool();
        // Choices added later draw from their own stream, so older seeds keep their
        // scenarios (the regression tests rely on that).
        let mut later = Rng::with_seed(seed ^ 0x1a7e_c401);
        let pin_digest = later.u32(0..10) < 3;
        let structured = rng.u32(0..5) > 0;
        let tz_name = *pick(&mut rng, ZONES);
        let tz: Tz = tz_name.parse().expect("known zone");

        // Start near a DST change of the zone (or anywhere in 2026 without one).
        let changes = transitions(tz);
        let start = if changes.is_empty() || rng.u32(0..4) == 0 {
            let day = rng.i64(0..330);
            "2026-01-05T00:00:00Z"
                .parse::<DateTime<Utc>>()
                .expect("valid")
                + TimeDelta::days(day)
                + TimeDelta::minutes(rng.i64(0..1440))
        } else {
            *pick(&mut rng, changes) - TimeDelta::minutes(rng.i64(0..72 * 60))
        };
        let start = start - TimeDelta::seconds(i64::from(start.second()));

        let mut windows = Vec::new();
        if rng.u32(0..10) >= 4 {
            for _ in 0..rng.usize(1..=2) {
                // Mostly the broad windows (the first two and the weekend), sometimes
                // the narrow ones.
                let w = if rng.u32(0..3) == 0 {
                    pick(&mut rng, WINDOWS)
                } else {
                    &WINDOWS[*pick(&mut rng, &[0, 1, 4, 6])]
                };
                if !windows
                    .iter()
                    .any(|x: &&(&str, [bool; 7], u32, u32)| x.0 == w.0)
                {
                    windows.push(w);
                }
            }
        }
        let mut freezes = Vec::new();
        let mut freeze_yaml = Vec::new();
        for _ in 0..rng.usize(0..=2) {
            let local = start.with_timezone(&tz).date_naive();
            if rng.bool() {
                let from = local + TimeDelta::days(rng.i64(0..6));
                let to = from + TimeDelta::days(rng.i64(0..2));
                freeze_yaml.push(format!(
                    "{{from: \"{from}\", to: \"{to}\", reason: \"release {}\"}}",
                    freezes.len()
                ));
                freezes.push(OracleFreeze::Dates(from, to));
            } else {
                let from = start + TimeDelta::minutes(rng.i64(0..5 * 1440));
                let to = from + TimeDelta::minutes(rng.i64(30..1440));
                let f = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
                freeze_yaml.push(format!(
                    "{{from: \"{}\", to: \"{}\", reason: \"migration {}\"}}",
                    f(from),
                    f(to),
                    freezes.len()
                ));
                freezes.push(OracleFreeze::Instants(from, to));
            }
        }
        let min_interval = *pick(&mut rng, &[1i64, 10, 60, 60, 120, 360]);
        let gate = rng.u32(0..10) < 7;
        let bake = *pick(&mut rng, &[10i64, 30, 60, 120]);
        let deploy_delay = *pick(&mut rng, &[0i64, 0, 5, 15]);
        let include_pending = rng.u32(0..4) == 0;
        let method = *pick(&mut rng, &["squash", "merge", "rebase"]);
        let all_checks = [("unit", false), ("e2e", false), ("ci/lint", true)];
        let n_checks = rng.usize(1..=3);
        let checks: Vec<(String, bool)> = all_checks[..n_checks]
            .iter()
            .map(|(n, s)| ((*n).to_owned(), *s))
            .collect();
        let required_checks: Vec<String> = if rng.bool() {
            Vec::new()
        } else {
            vec![checks[0].0.clone()]
        };
        let retest = rng.bool();
        let hold_permission = *pick(&mut rng, &["triage", "triage", "write", "read"]);
        let unhold_permission = *pick(&mut rng, &["write", "write", "maintain", "triage"]);
        let (tags, cluster) = match mix {
            Mix::Classic => (TagScheme::DateSha, None),
            Mix::Wide | Mix::Chain => wide_choices(seed, n_apps),
        };
        // Drawn from a stream of its own: wide scenarios stay as they were.
        let upstreams: Vec<String> = if mix == Mix::Chain {
            let length = Rng::with_seed(seed ^ 0xc4a1_9e01).usize(1..=2);
            ["staging", "dev"][..length]
                .iter()
                .map(|u| format!("{name}-{u}"))
                .collect()
        } else {
            Vec::new()
        };

        let mut y = String::new();
        let _ = writeln!(
            y,
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: {name}}}\nspec:"
        );
        let _ = writeln!(
            y,
            "  images:\n    - prefix: {PREFIX}\n      tags: {}\n      consistent: {consistent}\n      pinDigest: {pin_digest}",
            tags.yaml()
        );
        let _ = writeln!(
            y,
            "  source:\n    repo: {}\n    include: [\"deploy/**/*.yaml\"]\n    exclude: [\"deploy/legacy/**\"]\n    mode: {}",
            repo_url(forge_of_seed(seed)),
            if structured { "structured" } else { "text" }
        );
        if direct {
            let _ = writeln!(y, "  directPush: {{}}");
        } else {
            let _ = writeln!(
                y,
                "  pullRequest: {{labels: [skip-review], botLogin: {}, holdPermission: {hold_permission}, unholdPermission: {unhold_permission}}}",
                crate::world::BOT
            );
        }
        let _ = writeln!(
            y,
            "  schedule:\n    timezone: {tz_name}\n    minInterval: {}",
            duration(min_interval)
        );
        if !windows.is_empty() {
            let list: Vec<String> = windows.iter().map(|w| format!("\"{}\"", w.0)).collect();
            let _ = writeln!(y, "    windows: [{}]", list.join(", "));
        }
        if !freeze_yaml.is_empty() {
            let _ = writeln!(y, "    freezes: [{}]", freeze_yaml.join(", "));
        }
        let required: Vec<String> = required_checks.iter().map(|c| format!("\"{c}\"")).collect();
        let _ = writeln!(
            y,
            "  merge: {{method: {method}, requiredChecks: [{}]{}}}",
            required.join(", "),
            if retest {
                ", retest: {comment: /retest, max: 2}"
            } else {
                ""
            }
        );
        if gate {
            let _ = writeln!(
                y,
                "  gate: {{prometheus: \"http://prometheus.sim:9090\", alerts: '{{team=\"sim\"}}', bake: {}, includePending: {include_pending}}}",
                duration(bake)
            );
        }
        let delay = if deploy_delay > 0 {
            format!("deployDelay: {}", duration(deploy_delay))
        } else {
            String::new()
        };
        match &cluster {
            None if deploy_delay > 0 => {
                let _ = writeln!(y, "  rollout: {{{delay}}}");
            }
            None => {}
            Some(c) => {
                let mut kinds: Vec<&str> = c.kinds.iter().map(|k| kind_name(*k)).collect();
                kinds.sort_unstable();
                kinds.dedup();
                let specs: Vec<String> = kinds
                    .iter()
                    .map(|k| {
                        format!(
                            "{{kind: {k}, namespace: {NAMESPACE}, selector: \"{}={}\"}}",
                            PART_OF.0, PART_OF.1
                        )
                    })
                    .collect();
                let sep = if delay.is_empty() { "" } else { ", " };
                let _ = writeln!(
                    y,
                    "  rollout: {{{delay}{sep}workloads: [{}]}}",
                    specs.join(", ")
                );
            }
        }
        let _ = writeln!(
            y,
            "  rollback: {{pullRequest: true{}}}",
            if cluster.as_ref().is_some_and(|c| c.patch) {
                ", patchCluster: true"
            } else {
                ""
            }
        );

        if let Some(from) = upstreams.first() {
            let _ = writeln!(y, "  promotion: {{from: {from}}}");
        }
        // Every event notified (the simulated receiver checks each goes out once).
        let _ = writeln!(y, "  notify:\n    - webhook: {{url: {{env: SIM_HOOK}}}}");
        let (mut policies, diagnostics) = policy::load_str(std::path::Path::new("sim.yaml"), &y);
        assert!(
            diagnostics.is_empty(),
            "the simulator wrote an invalid policy: {diagnostics:?}\n{y}"
        );
        let policy = policies.remove(0);
        let requirements = policy.spec.pull_request.as_ref().map_or_else(
            Requirements::default,
            autobump::policy::v1alpha1::PullRequestSpec::command_requirements,
        );
        Self {
            forge: forge_of_seed(seed),
            bump_branch: format!("autobump-{name}"),
            rollback_branch: format!("autobump-rollback-{name}"),
            name,
            policy,
            yaml: y,
            direct,
            apps,
            prefix: PREFIX.to_owned(),
            min_interval: TimeDelta::minutes(min_interval),
            bake: gate.then(|| TimeDelta::minutes(bake)),
            deploy_delay: TimeDelta::minutes(deploy_delay),
            oracle: ScheduleOracle {
                tz,
                windows: windows
                    .iter()
                    .map(|w| OracleWindow {
                        days: w.1,
                        start: w.2,
                        end: w.3,
                    })
                    .collect(),
                freezes,
            },
            requirements,
            required_checks,
            checks,
            structured,
            pin_digest,
            start,
            mix,
            upstreams,
            tags,
            cluster,
        }
    }

    /// No windows and no freezes.
    pub fn oracle_is_always_open(&self) -> bool {
        self.oracle.windows.is_empty() && self.oracle.freezes.is_empty()
    }

    /// The repository of app `a`.
    pub fn repo(&self, a: usize) -> String {
        format!("{}{}", self.prefix, self.apps[a])
    }

    /// Whether the policy rewrites `path`.
    pub fn included(&self, path: &str) -> bool {
        let spec = &self.policy.spec.source;
        spec.include.iter().any(|g| g.is_match(path))
            && !spec.exclude.iter().any(|g| g.is_match(path))
    }

    /// The least permission to lift a hold (`automatic`: placed by autobump).
    pub fn unhold_needs(&self, automatic: bool) -> Permission {
        if automatic {
            self.requirements.unhold.max(Permission::Write)
        } else {
            self.requirements.unhold
        }
    }

    /// The repository's files at the start, every app at `tag` (pinned to its first
    /// digest with `pinDigest`).
    pub fn initial_files(&self, tag: &str) -> Files {
        let mut files = Files::new();
        let app = &self.apps[0];
        let version = |app: &str| {
            if self.pin_digest {
                format!(
                    "{tag}@{}",
                    crate::world::digest_of(&format!("{PREFIX}{app}"), tag, 0)
                )
            } else {
                tag.to_owned()
            }
        };
        let v = version(app);
        files.insert(
            format!("deploy/{app}.yaml"),
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n        - name: {app}\n          image: {PREFIX}{app}:{v}  # keep this comment\n          args: [\"--config=/etc/{app}/config.yaml\"]\n# previously {PREFIX}{app}:{tag}\n"
            )
            .into(),
        );
        if self.apps.len() > 1 {
            let mut bundle = String::new();
            for app in &self.apps[1..] {
                let v = version(app);
                let _ = write!(
                    bundle,
                    "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n        - name: {app}\n          image: \"{PREFIX}{app}:{v}\"\n"
                );
            }
            files.insert("deploy/bundle.yaml".into(), bundle.into());
        }
        files.insert(
            "deploy/config.yaml".into(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  level: info\n"
                .into(),
        );
        files.insert(
            "deploy/legacy/old.yaml".into(),
            format!("image: {PREFIX}{app}:v20250101-0000000\n").into(),
        );
        files.insert(
            "README.md".into(),
            format!("# infra\n\nDeploys {PREFIX}{app}:{tag} and friends.\n").into(),
        );
        files
    }
}

/// The tag scheme and the cluster of a wide scenario, from their own stream.
fn wide_choices(seed: u64, n_apps: usize) -> (TagScheme, Option<ClusterScenario>) {
    let mut rng = Rng::with_seed(seed ^ 0x3c1d_e5a7_0b0e);
    let tags = match rng.u32(0..100) {
        0..=44 => TagScheme::DateSha,
        45..=84 => {
            let (v, range, prerelease) = (
                rng.bool(),
                *pick(&mut rng, &[None, Some("^1"), Some(">=1.2, <2")]),
                rng.u32(0..3) == 0,
            );
            // The shape draws from a stream of its own: the other choices stay as they were.
            let mut shape = Rng::with_seed(seed ^ 0x05e7_1e5a_11a5);
            TagScheme::Semver {
                v,
                range,
                prerelease,
                parts: *pick(&mut shape, &[2, 3, 3, 4]),
                suffix: *pick(
                    &mut shape,
                    &[
                        None,
                        None,
                        Some("alpine"),
                        Some("slim-bookworm"),
                        Some("alpine3.18"),
                    ],
                ),
            }
        }
        _ => TagScheme::Regex,
    };
    let cluster = (rng.u32(0..100) < 45).then(|| {
        let kinds = (0..n_apps)
            .map(|a| {
                if a == 0 {
                    WorkloadKind::Deployment
                } else {
                    *pick(
                        &mut rng,
                        &[
                            WorkloadKind::Deployment,
                            WorkloadKind::StatefulSet,
                            WorkloadKind::DaemonSet,
                        ],
                    )
                }
            })
            .collect();
        ClusterScenario {
            kinds,
            patch: rng.u32(0..10) < 6,
            init: (0..n_apps).map(|a| a == 0 && rng.bool()).collect(),
            sidecar: (0..n_apps).map(|_| rng.bool()).collect(),
        }
    });
    (tags, cluster)
}

/// The kind's name as the policy spells it.
pub fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::DaemonSet => "DaemonSet",
    }
}

/// A `vYYYYMMDD-<hex>[-variant]` tag: its date and variant (own parser, for the oracle).
fn date_sha(tag: &str) -> Option<(u32, Option<&str>)> {
    let rest = tag.strip_prefix('v')?;
    let (date, rest) = (rest.get(..8)?, rest.get(8..)?);
    if !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(date, "%Y%m%d").ok()?;
    let rest = rest.strip_prefix('-')?;
    let (hex, variant) = match rest.split_once('-') {
        Some((h, v)) => (h, Some(v)),
        None => (rest, None),
    };
    let hex_ok = (7..=10).contains(&hex.len())
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let variant_ok = variant.is_none_or(|v| {
        v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    (hex_ok && variant_ok).then(|| (date.parse().expect("digits"), variant))
}

/// The build number of a `build-N` tag, without leading zeros.
fn build_number(tag: &str) -> Option<&str> {
    let digits = tag.strip_prefix("build-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed })
}

/// A version tag as the oracle reads it (its own parser, independent of autobump's):
/// `[v]N(.N){0,3}`, an optional pre-release (`rcN` glued, or `-rc.N` / `-rcN` as the
/// first segment), an optional `-SUFFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OracleVersion {
    v: bool,
    numbers: Vec<u64>,
    /// The release candidate number, for a pre-release.
    rc: Option<u64>,
    suffix: String,
}

fn version_of(tag: &str) -> Option<OracleVersion> {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(
            r"^(v?)([0-9]+(?:\.[0-9]+){0,3})(?:rc([0-9]+)|-rc\.?([0-9]+))?(?:-([a-z0-9][a-z0-9.-]*))?$",
        )
        .expect("valid regex")
    });
    let caps = re.captures(tag)?;
    Some(OracleVersion {
        v: !caps[1].is_empty(),
        numbers: caps[2]
            .split('.')
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?,
        rc: caps
            .get(3)
            .or_else(|| caps.get(4))
            .map(|n| n.as_str().parse().expect("digits")),
        suffix: caps.get(5).map_or("", |m| m.as_str()).to_owned(),
    })
}

impl TagScheme {
    /// The `tags:` value in the policy.
    pub fn yaml(&self) -> String {
        match self {
            Self::DateSha => "{dateSha: {}}".to_owned(),
            Self::Semver {
                range, prerelease, ..
            } => {
                let mut opts = Vec::new();
                if let Some(r) = range {
                    opts.push(format!("range: \"{r}\""));
                }
                if *prerelease {
                    opts.push("prerelease: true".to_owned());
                }
                format!("{{semver: {{{}}}}}", opts.join(", "))
            }
            Self::Regex => format!("{{regex: {{pattern: '{BUILD_PATTERN}', extract: n}}}}"),
        }
    }

    /// Whether the policy takes `tag` as a version at all (its pattern, range and
    /// pre-release rules; never floating or signature tags).
    pub fn accepts(&self, tag: &str) -> bool {
        match self {
            Self::DateSha => date_sha(tag).is_some(),
            Self::Semver {
                range, prerelease, ..
            } => {
                let Some(version) = version_of(tag) else {
                    return false;
                };
                if version.rc.is_some() && !prerelease {
                    return false;
                }
                range.is_none_or(|r| {
                    let req = semver::VersionReq::parse(r).expect("valid range");
                    let n = |i: usize| version.numbers.get(i).copied().unwrap_or(0);
                    req.matches(&semver::Version::new(n(0), n(1), n(2)))
                })
            }
            Self::Regex => build_number(tag).is_some(),
        }
    }

    /// Whether `a` may be replaced by `b` (one series: a dateSha variant; for semver
    /// the same `v` prefix, number of parts and suffix; or the pattern).
    pub fn same_series(&self, a: &str, b: &str) -> bool {
        match self {
            Self::DateSha => match (date_sha(a), date_sha(b)) {
                (Some((_, va)), Some((_, vb))) => va == vb,
                _ => false,
            },
            Self::Semver { .. } => match (version_of(a), version_of(b)) {
                (Some(va), Some(vb)) => {
                    (va.v, va.numbers.len(), va.suffix) == (vb.v, vb.numbers.len(), vb.suffix)
                }
                _ => false,
            },
            Self::Regex => build_number(a).is_some() && build_number(b).is_some(),
        }
    }

    /// Whether `b` is strictly newer than `a` (same dateSha date: only with both build
    /// times known, the later one).
    pub fn newer(&self, a: &str, b: &str, built: impl Fn(&str) -> Option<DateTime<Utc>>) -> bool {
        match self {
            Self::DateSha => match (date_sha(a), date_sha(b)) {
                (Some((da, _)), Some((db, _))) => {
                    db > da
                        || (db == da && matches!((built(a), built(b)), (Some(x), Some(y)) if y > x))
                }
                _ => false,
            },
            Self::Semver { .. } => match (version_of(a), version_of(b)) {
                // Same numbers: a release is newer than its candidates, a later
                // candidate newer than an earlier one.
                (Some(va), Some(vb)) => {
                    let rank = |rc: Option<u64>| rc.map_or(u64::MAX, |n| n);
                    (vb.numbers, rank(vb.rc)) > (va.numbers, rank(va.rc))
                }
                _ => false,
            },
            Self::Regex => match (build_number(a), build_number(b)) {
                (Some(na), Some(nb)) => (nb.len(), nb) > (na.len(), na),
                _ => false,
            },
        }
    }

    /// A semver scheme's build `(major, minor, patch)` written in its shape: two parts
    /// `major.minor`, three `major.minor.patch`, four `major.minor.0.patch`; with the
    /// `v` prefix and the suffix.
    pub fn version_text(&self, (major, minor, patch): (u64, u64, u64)) -> String {
        self.version_with(Some((major, minor, patch)), None, None)
    }

    /// [`TagScheme::version_text`] with a pre-release `marker` (written right after the
    /// numbers, e.g. `rc3` or `-rc.3`) and another `suffix` (`Some("")`: none).
    pub fn version_with(
        &self,
        version: Option<(u64, u64, u64)>,
        marker: Option<&str>,
        suffix: Option<&str>,
    ) -> String {
        let Self::Semver {
            v,
            parts,
            suffix: own,
            ..
        } = self
        else {
            return String::new();
        };
        let (major, minor, patch) = version.unwrap_or((1, 0, 0));
        let mut out = String::from(if *v { "v" } else { "" });
        match parts {
            2 => write!(out, "{major}.{minor}"),
            4 => write!(out, "{major}.{minor}.0.{patch}"),
            _ => write!(out, "{major}.{minor}.{patch}"),
        }
        .expect("writing to a String");
        out.push_str(marker.unwrap_or(""));
        match suffix.or(*own) {
            Some(s) if !s.is_empty() => {
                out.push('-');
                out.push_str(s);
            }
            _ => {}
        }
        out
    }

    /// A tag in the series that no registry has.
    pub fn unknown_tag(&self) -> String {
        match self {
            Self::DateSha => "v20991231-deadbee".to_owned(),
            Self::Semver { .. } => self.version_text((1, 99, 99)),
            Self::Regex => "build-99999".to_owned(),
        }
    }
}

/// An image reference `<prefix><app>:<tag>[@<digest>]` found in a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    /// Byte offset in the line.
    pub at: usize,
    /// `registry.sim/team/app` (or whatever stands at the prefix's place).
    pub repo: &'a str,
    /// The tag.
    pub tag: &'a str,
    /// The digest (`sha256:…`), if pinned.
    pub digest: Option<&'a str>,
}

impl Token<'_> {
    /// Where the version (tag and digest) starts in the line.
    pub fn version_at(&self) -> usize {
        self.at + self.repo.len() + 1
    }

    /// The version's length (`tag[@digest]`).
    pub fn version_len(&self) -> usize {
        self.tag.len() + self.digest.map_or(0, |d| d.len() + 1)
    }
}

/// Image references in `line` whose repository contains `/team/` (the policy's
/// namespace, under any registry host, so a moved host is seen too).
pub fn image_tokens<'a>(line: &'a str, prefix: &str) -> Vec<Token<'a>> {
    let ns = prefix.split_once('/').map_or(prefix, |(_, rest)| rest);
    let is_ref = |c: char| c.is_ascii_alphanumeric() || "._/:@-".contains(c);
    let mut out = Vec::new();
    let mut i = 0;
    let bytes = line.as_bytes();
    while i < bytes.len() {
        if !is_ref(char::from(bytes[i])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ref(char::from(bytes[i])) {
            i += 1;
        }
        let word = line[start..i].trim_end_matches(['.', ':']);
        let Some(slash) = word.rfind('/') else {
            continue;
        };
        let Some(colon) = word[slash..].find(':').map(|c| c + slash) else {
            continue;
        };
        let repo = &word[..colon];
        if !repo.contains(&format!("/{ns}")) && !repo.starts_with(ns) {
            continue;
        }
        let version = &word[colon + 1..];
        let (tag, digest) = match version.split_once('@') {
            Some((t, d)) => (t, Some(d)),
            None => (version, None),
        };
        out.push(Token {
            at: start,
            repo,
            tag,
            digest,
        });
    }
    out
}
