//! A random scenario: the policy under test (built from YAML by the real loader), the
//! apps and their manifests, the checks CI runs, and an independent oracle for the
//! schedule (windows and freezes in the policy's timezone, DST included).

use std::fmt::Write as _;
use std::sync::OnceLock;

use autobump::core::commands::{Permission, Requirements};
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
    /// A random scenario.
    // One policy's worth of choices, read top to bottom like the YAML it writes.
    #[allow(clippy::too_many_lines)]
    pub fn generate(seed: u64) -> Self {
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

        let mut y = String::new();
        let _ = writeln!(
            y,
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: {name}}}\nspec:"
        );
        let _ = writeln!(
            y,
            "  images:\n    - prefix: {PREFIX}\n      tags: {{dateSha: {{}}}}\n      consistent: {consistent}\n      pinDigest: {pin_digest}"
        );
        let _ = writeln!(
            y,
            "  source:\n    repo: https://github.com/sim/infra.git\n    include: [\"deploy/**/*.yaml\"]\n    exclude: [\"deploy/legacy/**\"]\n    mode: {}",
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
        if deploy_delay > 0 {
            let _ = writeln!(y, "  rollout: {{deployDelay: {}}}", duration(deploy_delay));
        }
        let _ = writeln!(y, "  rollback: {{pullRequest: true}}");

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
