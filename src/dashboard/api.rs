//! The dashboard's JSON API, version 1 (pure: data in, documents out).
//!
//! * `GET /api/v1/policies` → [`PolicyList`]: one [`PolicySummary`] per policy that
//!   has a definition or a state, sorted by key.
//! * `GET /api/v1/policies/NAME` → [`PolicyDetail`]: the summary, and every history
//!   entry the store keeps, oldest first (in-cluster `NAME` is `namespace/name`).
//!
//! Every document carries `apiVersion: autobump.dev/dashboard/v1` and a `kind`.
//! Within v1 fields are only ever added; a field removed or changed in meaning makes
//! v2 (served next to v1 for at least one release). Times are RFC 3339 UTC; durations
//! are whole seconds. `revision` changes exactly when something shown changes other
//! than the passing of time, so a client polls cheaply and redraws only then.
//!
//! What is never in a document: notification targets (Slack and webhook URLs are
//! secrets and are not read), tokens, and the user info of any URL (a repository
//! `https://user:token@host/...` is shown as `https://host/...`, and URLs inside
//! free text are scrubbed the same way, [`scrub`]).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, TimeDelta, Utc};
use regex::Regex;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::source::{PolicyRecord, Snapshot};
use crate::core::gate::GateVerdict;
use crate::metrics::GateSeen;
use crate::policy::Policy;
use crate::policy::v1alpha1::{HistoryEntry, Reason, Release};
use crate::store::Latest;

/// The `apiVersion` of every document.
pub const API_VERSION: &str = "autobump.dev/dashboard/v1";

/// `GET /api/v1/policies`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyList {
    /// [`API_VERSION`].
    pub api_version: &'static str,
    /// `PolicyList`.
    pub kind: &'static str,
    /// When the document was made.
    pub generated_at: DateTime<Utc>,
    /// Changes when anything shown changes (not with time alone).
    pub revision: String,
    /// One per policy, sorted by key.
    pub policies: Vec<PolicySummary>,
}

/// `GET /api/v1/policies/NAME`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDetail {
    /// [`API_VERSION`].
    pub api_version: &'static str,
    /// `Policy`.
    pub kind: &'static str,
    /// When the document was made.
    pub generated_at: DateTime<Utc>,
    /// Changes when anything shown changes (not with time alone).
    pub revision: String,
    /// The row of the overview.
    pub policy: PolicySummary,
    /// Every history entry kept, oldest first.
    pub history: Vec<Event>,
}

/// One policy at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySummary {
    /// The key: the name (in-cluster `namespace/name`).
    pub name: String,
    /// Whether a policy defines it (false: the state of a removed policy, or an
    /// object whose spec is invalid).
    pub defined: bool,
    /// The repository's web address, when it has one (https or scp-like remotes),
    /// without user info.
    pub repo_url: Option<String>,
    /// The versions deployed now.
    pub current: Option<Version>,
    /// The last versions that baked without alerts.
    pub known_good: Option<Version>,
    /// The hold in force.
    pub hold: Option<HoldView>,
    /// A rollback asked for that the controller has not acted on yet.
    pub rollback_requested: Option<HoldView>,
    /// The bake of the deployed version, while it lasts.
    pub baking: Option<Baking>,
    /// When the next bump may happen; `None` when none was found or the policy is
    /// not defined.
    pub next_window: Option<DateTime<Utc>>,
    /// Whether a bump may happen now (window open, interval passed, no freeze).
    pub window_open: bool,
    /// The alert gate as last read.
    pub gate: Gate,
    /// The last bump opened, pushed or merged.
    pub last_bump: Option<Event>,
    /// The last rollback.
    pub last_rollback: Option<Event>,
}

/// Versions, with the commit that carried them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    /// One line: the tag if all images share it, else a count.
    pub summary: String,
    /// Since when.
    pub since: DateTime<Utc>,
    /// The commit of the branch that carried it.
    pub commit: Option<String>,
    /// The commit's web page, when the repository has one.
    pub commit_url: Option<String>,
    /// Each image and its version.
    pub images: Vec<Image>,
}

/// An image at a version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    /// The canonical repository.
    pub image: String,
    /// The tag.
    pub tag: String,
    /// The pinned digest.
    pub digest: Option<String>,
}

/// A hold (or a rollback request): who, why, since when.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldView {
    /// `user:alice`, `alert:HookDown`, `cli:bob`.
    pub by: String,
    /// Why, as given.
    pub reason: String,
    /// When.
    pub since: DateTime<Utc>,
    /// Placed by autobump itself (only a person lifts it).
    pub automatic: bool,
    /// Where it came from (`cli`, or the comment's address).
    pub via: Option<String>,
}

/// The bake of the deployed version.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Baking {
    /// The version baking.
    pub version: String,
    /// `gate.bake`, in seconds.
    pub bake_seconds: i64,
    /// Since when every reading was Clear (`None`: waiting for a Clear gate).
    pub clear_since: Option<DateTime<Utc>>,
    /// When it becomes known-good if the gate stays Clear.
    pub ends_at: Option<DateTime<Utc>>,
    /// Seconds until then.
    pub remaining_seconds: Option<i64>,
    /// How often the bake restarted because the gate was Unknown.
    pub restarts: u32,
}

/// The alert gate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// `clear`, `firing`, `unknown`, `none` (the policy has no gate, or no policy
    /// defines it) or `unread` (not read since this process started).
    pub verdict: &'static str,
    /// The firing alerts' names.
    pub alerts: Vec<String>,
    /// Why it is unknown.
    pub why: Option<String>,
    /// When it was read.
    pub read_at: Option<DateTime<Utc>>,
}

/// A history entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Its number in the policy's history.
    pub seq: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// `Held`, `Merged`, `RolledBack`, ...
    pub reason: Reason,
    /// What happened, as recorded (alert evidence for alert holds).
    pub message: String,
    /// The pull requests and commits the message names, when the repository has
    /// web pages.
    pub links: Vec<Link>,
}

/// A link to a pull request or a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// `PR #12`, or a short commit hash.
    pub label: String,
    /// Its address.
    pub url: String,
}

/// The overview of `snapshot` at `now`, with the gate readings in `gates`.
#[must_use]
pub fn overview(
    snapshot: &Snapshot,
    gates: &BTreeMap<String, GateSeen>,
    now: DateTime<Utc>,
) -> PolicyList {
    let empty = Latest::default();
    let mut keys: Vec<&String> = snapshot
        .policies
        .keys()
        .chain(snapshot.states.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let policies: Vec<PolicySummary> = keys
        .into_iter()
        .map(|key| {
            summary(
                key,
                snapshot.policies.get(key),
                snapshot.states.get(key).unwrap_or(&empty),
                gate_of(gates, key),
                now,
            )
        })
        .collect();
    PolicyList {
        api_version: API_VERSION,
        kind: "PolicyList",
        generated_at: now,
        revision: revision(&policies, &[]),
        policies,
    }
}

/// One policy with its history.
#[must_use]
pub fn detail(
    key: &str,
    record: &PolicyRecord,
    gates: &BTreeMap<String, GateSeen>,
    now: DateTime<Utc>,
) -> PolicyDetail {
    let policy = summary(
        key,
        record.policy.as_ref(),
        &record.latest,
        gate_of(gates, key),
        now,
    );
    let base = policy.repo_url.clone();
    let history: Vec<Event> = record
        .history
        .iter()
        .map(|e| event(e, base.as_deref()))
        .collect();
    PolicyDetail {
        api_version: API_VERSION,
        kind: "Policy",
        generated_at: now,
        revision: revision(std::slice::from_ref(&policy), &history),
        policy,
        history,
    }
}

/// The controller keys its gate readings by policy name; in-cluster keys are
/// `namespace/name`.
fn gate_of<'a>(gates: &'a BTreeMap<String, GateSeen>, key: &str) -> Option<&'a GateSeen> {
    gates
        .get(key)
        .or_else(|| key.rsplit_once('/').and_then(|(_, name)| gates.get(name)))
}

/// The summary row of one policy.
#[must_use]
pub fn summary(
    key: &str,
    policy: Option<&Policy>,
    latest: &Latest,
    gate: Option<&GateSeen>,
    now: DateTime<Utc>,
) -> PolicySummary {
    let state = &latest.state;
    let repo_url = policy.and_then(|p| web_base(p.spec.source.repo.as_str()));
    let base = repo_url.as_deref();
    let next_window = policy.and_then(|p| {
        p.spec
            .schedule
            .to_schedule()
            .next_open(now, state.last_bump)
    });
    let baking = state.bake.as_ref().map(|b| {
        let duration = policy
            .and_then(|p| p.spec.gate.as_ref())
            .map_or(TimeDelta::zero(), |g| g.bake.delta());
        let ends_at = b.clear_since.map(|t| t + duration);
        Baking {
            version: b.version.clone(),
            bake_seconds: duration.num_seconds(),
            clear_since: b.clear_since,
            ends_at,
            remaining_seconds: ends_at.map(|t| (t - now).num_seconds().max(0)),
            restarts: b.restarts,
        }
    });
    let gate = match (gate, policy.map(|p| p.spec.gate.is_some())) {
        // No gate, or no policy to have one.
        (_, Some(false) | None) => Gate {
            verdict: "none",
            alerts: Vec::new(),
            why: None,
            read_at: None,
        },
        (None, _) => Gate {
            verdict: "unread",
            alerts: Vec::new(),
            why: None,
            read_at: None,
        },
        (Some(seen), _) => {
            let (verdict, alerts, why) = match &seen.verdict {
                GateVerdict::Clear => ("clear", Vec::new(), None),
                GateVerdict::Firing(names) => ("firing", names.clone(), None),
                GateVerdict::Unknown(why) => ("unknown", Vec::new(), Some(scrub(why))),
            };
            Gate {
                verdict,
                alerts,
                why,
                read_at: Some(chrono::SubsecRound::trunc_subsecs(seen.at, 0)),
            }
        }
    };
    PolicySummary {
        name: key.to_owned(),
        defined: policy.is_some(),
        current: state.current.as_ref().map(|r| version(r, base)),
        known_good: state.last_known_good.as_ref().map(|r| version(r, base)),
        hold: state.hold.as_ref().map(|h| HoldView {
            by: scrub(&h.by),
            reason: scrub(&h.reason),
            since: h.since,
            automatic: h.automatic,
            via: h.via.as_deref().map(scrub),
        }),
        rollback_requested: state.rollback_request.as_ref().map(|r| HoldView {
            by: scrub(&r.by),
            reason: scrub(&r.reason),
            since: r.since,
            automatic: false,
            via: r.via.as_deref().map(scrub),
        }),
        baking,
        window_open: next_window.is_some_and(|t| t <= now),
        next_window,
        gate,
        last_bump: latest.last_of(super::BUMP_REASONS).map(|e| event(e, base)),
        last_rollback: latest
            .last_of(&[Reason::RolledBack])
            .map(|e| event(e, base)),
        repo_url,
    }
}

fn version(r: &Release, base: Option<&str>) -> Version {
    Version {
        summary: r.summary.clone(),
        since: r.since,
        commit: r.commit.clone(),
        commit_url: r
            .commit
            .as_deref()
            .filter(|c| is_commit(c))
            .and_then(|c| base.map(|b| format!("{b}/commit/{c}"))),
        images: r
            .images
            .iter()
            .map(|i| Image {
                image: i.image.clone(),
                tag: i.tag.clone(),
                digest: i.digest.clone(),
            })
            .collect(),
    }
}

/// A history entry for the API, with the links its message names.
#[must_use]
pub fn event(e: &HistoryEntry, base: Option<&str>) -> Event {
    let message = scrub(&e.message);
    Event {
        seq: e.seq,
        at: e.at,
        reason: e.reason,
        links: base.map(|b| links(&message, b)).unwrap_or_default(),
        message,
    }
}

fn is_commit(text: &str) -> bool {
    (7..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pull requests (`PR #12`) and full commit hashes a message names, as links
/// under the repository's web address `base` (GitHub's `/pull/N` and `/commit/SHA`).
#[must_use]
pub fn links(message: &str, base: &str) -> Vec<Link> {
    static PR: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\bPR #([0-9]{1,9})\b").expect("valid regex"));
    static SHA: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\b([0-9a-f]{40}|[0-9a-f]{64})\b").expect("valid regex"));
    let mut out: Vec<Link> = PR
        .captures_iter(message)
        .map(|c| Link {
            label: format!("PR #{}", &c[1]),
            url: format!("{base}/pull/{}", &c[1]),
        })
        .collect();
    out.extend(SHA.captures_iter(message).map(|c| Link {
        label: c[1][..7].to_owned(),
        url: format!("{base}/commit/{}", &c[1]),
    }));
    out.dedup();
    out
}

/// The web address of a repository remote, without user info: `https://host/path`
/// for https and http remotes and for scp-like and `ssh://` remotes (as forges serve
/// them); `None` for anything else (a `file://` path has no web page).
#[must_use]
pub fn web_base(remote: &str) -> Option<String> {
    let (host, path) = if let Some((user_host, path)) = remote
        .split_once(':')
        .filter(|(left, _)| left.contains('@') && !left.contains('/'))
    {
        // scp-like: git@github.com:org/repo.git
        (user_host.rsplit_once('@')?.1.to_owned(), path.to_owned())
    } else {
        let url = url::Url::parse(remote).ok()?;
        let host = url.host_str()?.to_owned();
        match url.scheme() {
            "https" | "http" => {
                let host = url
                    .port()
                    .map_or_else(|| host.clone(), |p| format!("{host}:{p}"));
                let path = trim_repo_path(url.path());
                return (!path.is_empty()).then(|| format!("{}://{host}/{path}", url.scheme()));
            }
            "ssh" => (host, url.path().to_owned()),
            _ => return None,
        }
    };
    let path = trim_repo_path(&path);
    (!path.is_empty() && !host.is_empty()).then(|| format!("https://{host}/{path}"))
}

fn trim_repo_path(path: &str) -> String {
    let path = path.trim_matches('/');
    path.strip_suffix(".git").unwrap_or(path).to_owned()
}

/// `text` with the user info of every URL in it removed (`https://user:pw@host` →
/// `https://[redacted]@host`).
#[must_use]
pub fn scrub(text: &str) -> String {
    static USERINFO: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@").expect("valid regex")
    });
    USERINFO.replace_all(text, "${1}[redacted]@").into_owned()
}

/// A short hash of what `policies` and `history` show, leaving out what changes
/// with time alone (time left, the next window's "now", when the gate was read).
fn revision(policies: &[PolicySummary], history: &[Event]) -> String {
    let timeless: Vec<PolicySummary> = policies
        .iter()
        .cloned()
        .map(|mut p| {
            if let Some(b) = &mut p.baking {
                b.remaining_seconds = None;
            }
            if p.window_open {
                p.next_window = None;
            }
            p.gate.read_at = None;
            p
        })
        .collect();
    let mut hash = Sha256::new();
    // Plain data: serializing cannot fail.
    hash.update(serde_json::to_vec(&timeless).unwrap_or_default());
    hash.update(serde_json::to_vec(history).unwrap_or_default());
    let digest = hash.finalize();
    hex(&digest[..8])
}

/// Lower-case hex of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_addresses_of_remotes_have_no_user_info() {
        for (remote, web) in [
            (
                "https://github.com/kubernetes/test-infra.git",
                Some("https://github.com/kubernetes/test-infra"),
            ),
            (
                "https://x-access-token:ghs_abc@github.com/org/repo",
                Some("https://github.com/org/repo"),
            ),
            (
                "git@github.com:org/repo.git",
                Some("https://github.com/org/repo"),
            ),
            (
                "ssh://git@gitlab.example.com/group/repo.git",
                Some("https://gitlab.example.com/group/repo"),
            ),
            (
                "http://127.0.0.1:8080/infra.git",
                Some("http://127.0.0.1:8080/infra"),
            ),
            ("file:///tmp/infra.git", None),
        ] {
            assert_eq!(web_base(remote).as_deref(), web, "{remote}");
        }
    }

    #[test]
    fn messages_link_their_pull_requests_and_commits() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let got = links(
            &format!("v2 -> v1 merged as PR #42; PR #42 merged at {sha}"),
            "https://github.com/o/r",
        );
        assert_eq!(
            got,
            vec![
                Link {
                    label: "PR #42".into(),
                    url: "https://github.com/o/r/pull/42".into()
                },
                Link {
                    label: "0123456".into(),
                    url: format!("https://github.com/o/r/commit/{sha}")
                },
            ]
        );
    }

    #[test]
    fn user_info_in_free_text_is_scrubbed() {
        assert_eq!(
            scrub("prometheus https://bob:s3cret@prom.example:9090/api failed"),
            "prometheus https://[redacted]@prom.example:9090/api failed"
        );
        assert_eq!(scrub("no url here"), "no url here");
    }
}
