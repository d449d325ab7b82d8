//! Promotion between environments (pure): which versions a policy with
//! `promotion.from` may take, the evidence its pull request or commit cites, and what
//! waits to be promoted.
//!
//! Rules:
//! * a candidate must be a version (canonical image, tag) of a release the upstream
//!   policy recorded as known-good ([`PolicyState::proven`]);
//! * never one the upstream or this policy recorded as bad (a rollback downstream
//!   marks the version bad downstream only; upstream keeps it);
//! * everything else — the tag policy, the series, `consistent`, `minAge` — applies as
//!   without promotion ([`super::select`]); a hold upstream changes nothing about
//!   versions it already proved.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::watch::canonical;
use crate::policy::v1alpha1::{
    AutobumpSpec, ForgeKind, PROVEN_LIMIT, PolicyState, Proven, Release,
};

/// Which versions a policy may be offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Versions recorded as bad, as `(canonical image, tag)`: here, and upstream.
    pub bad: BTreeSet<(String, String)>,
    /// With `promotion.from`: the only versions that may be proposed (proven
    /// upstream). `None`: any version.
    pub proven: Option<BTreeSet<(String, String)>>,
    /// The digest upstream ran for a proven version, where it pinned one: a tag
    /// pushed again since (another image under the same name) is not what was proven.
    pub digests: BTreeMap<(String, String), String>,
}

impl Admission {
    /// Without promotion: anything not recorded bad in `state`.
    #[must_use]
    pub fn own(state: &PolicyState) -> Self {
        Self {
            bad: state.bad_pairs(),
            proven: None,
            digests: BTreeMap::new(),
        }
    }

    /// With promotion from `upstream` (its state as read now): its proven versions
    /// that neither it nor `state` recorded as bad.
    #[must_use]
    pub fn promoted(state: &PolicyState, upstream: &PolicyState) -> Self {
        let mut bad = state.bad_pairs();
        bad.extend(upstream.bad_pairs());
        let proven = proven_pairs(upstream)
            .into_iter()
            .filter(|p| !bad.contains(p))
            .collect();
        // The newest proof of a version names the digest upstream ran last.
        let digests = upstream
            .proven
            .iter()
            .flat_map(|p| &p.release.images)
            .filter_map(|i| {
                let digest = i.digest.clone()?;
                Some(((canonical(&i.image), i.tag.clone()), digest))
            })
            .collect();
        Self {
            bad,
            proven: Some(proven),
            digests,
        }
    }

    /// Why `(canonical image, tag)` at `digest` is not the image upstream proved,
    /// if it is not: upstream pinned another digest for that tag.
    #[must_use]
    pub fn digest_problem(&self, image: &str, tag: &str, digest: &str) -> Option<String> {
        let proven = self.digests.get(&(image.to_owned(), tag.to_owned()))?;
        (proven != digest).then(|| {
            format!(
                "{image}:{tag} is {digest} now, but upstream proved {proven} (the tag was pushed again)"
            )
        })
    }

    /// Whether `(canonical image, tag)` may be proposed.
    #[must_use]
    pub fn admits(&self, image: &str, tag: &str) -> bool {
        let key = (image.to_owned(), tag.to_owned());
        !self.bad.contains(&key) && self.proven.as_ref().is_none_or(|p| p.contains(&key))
    }
}

/// Every `(canonical image, tag)` of `state`'s proven releases.
#[must_use]
pub fn proven_pairs(state: &PolicyState) -> BTreeSet<(String, String)> {
    state
        .proven
        .iter()
        .flat_map(|p| &p.release.images)
        .map(|i| (canonical(&i.image), i.tag.clone()))
        .collect()
}

/// What a policy's releases are proven under: its bake and gate, and the web page of
/// its repository (for links to its pull requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conditions {
    /// How long a release bakes (`gate.bake`, or `rollout.deployDelay` without a gate).
    pub bake: String,
    /// The gate, as people read it (`None`: no gate).
    pub gate: Option<String>,
    /// The repository's web address (`https://github.com/o/r`), when it has one.
    pub web: Option<String>,
    /// Its forge (the path of a pull or merge request page differs).
    pub forge: ForgeKind,
}

impl Conditions {
    /// The conditions `spec` proves its releases under.
    #[must_use]
    pub fn of(spec: &AutobumpSpec) -> Self {
        let (bake, gate) = match &spec.gate {
            Some(g) => {
                let source = match (&g.prometheus, &g.alertmanager) {
                    (Some(p), _) => format!("Prometheus {p}"),
                    (None, Some(a)) => format!("Alertmanager {a}"),
                    (None, None) => "no alert source".to_owned(),
                };
                let pending = if g.include_pending {
                    ", pending alerts count"
                } else {
                    ""
                };
                (
                    g.bake.to_string(),
                    Some(format!(
                        "no alert matching {} firing on {source}{pending}",
                        g.alerts
                    )),
                )
            }
            None => (
                spec.rollout
                    .as_ref()
                    .map_or_else(|| "0s".to_owned(), |r| r.deploy_delay.to_string()),
                None,
            ),
        };
        let url = spec.source.repo.as_str();
        Self {
            bake,
            gate,
            web: web_url(url),
            forge: crate::forge::RepoName::locate(url, spec.source.forge, None)
                .map_or(ForgeKind::GitHub, |r| r.forge),
        }
    }

    /// The proof of `release`, known-good at `now`, merged by `pull_request` if
    /// autobump merged one.
    #[must_use]
    pub fn proof(
        &self,
        release: &Release,
        pull_request: Option<u64>,
        now: DateTime<Utc>,
    ) -> Proven {
        Proven {
            release: release.clone(),
            known_good_at: now,
            bake: self.bake.clone(),
            gate: self.gate.clone(),
            pull_request_url: pull_request.and_then(|n| {
                self.web.as_ref().map(|w| match self.forge {
                    ForgeKind::GitHub => format!("{w}/pull/{n}"),
                    ForgeKind::GitLab => format!("{w}/-/merge_requests/{n}"),
                })
            }),
        }
    }
}

/// Adds `proof` to `state`'s proven releases, keeping the newest [`PROVEN_LIMIT`].
pub fn record(state: &mut PolicyState, proof: Proven) {
    state.proven.push(proof);
    if state.proven.len() > PROVEN_LIMIT {
        let excess = state.proven.len() - PROVEN_LIMIT;
        state.proven.drain(..excess);
    }
}

/// The web address of a repository URL: `https://host/path` without `.git` for
/// HTTP(S) remotes and `user@host:path` ones; `None` for local paths and `file://`.
#[must_use]
pub fn web_url(repo: &str) -> Option<String> {
    let trimmed = repo.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    if let Some(rest) = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
    {
        // Credentials in the URL never go into a link.
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        return Some(format!("https://{rest}"));
    }
    if let Some(rest) = trimmed.strip_prefix("ssh://") {
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let (host, path) = rest.split_once('/')?;
        let host = host.split(':').next().unwrap_or(host);
        return Some(format!("https://{host}/{path}"));
    }
    if trimmed.contains("://") {
        return None;
    }
    let (user_host, path) = trimmed.split_once(':')?;
    let host = user_host.rsplit_once('@').map_or(user_host, |(_, h)| h);
    (!host.is_empty() && !path.is_empty() && !path.starts_with('/'))
        .then(|| format!("https://{host}/{path}"))
}

/// The proof upstream of each moved version `(canonical image, tag)`: the newest
/// proven release that carries it.
#[must_use]
pub fn cite<'a>(upstream: &'a PolicyState, moved: &[(String, String)]) -> Vec<&'a Proven> {
    let mut cited: Vec<&Proven> = Vec::new();
    for (image, tag) in moved {
        let proof = upstream.proven.iter().rev().find(|p| {
            p.release
                .images
                .iter()
                .any(|i| canonical(&i.image) == *image && i.tag == *tag)
        });
        if let Some(p) = proof
            && !cited.iter().any(|c| std::ptr::eq(*c, p))
        {
            cited.push(p);
        }
    }
    cited
}

/// The evidence section of a promoted bump's PR body or commit message (Markdown):
/// upstream policy, each version and when it became known-good, its bake and gate,
/// and the upstream PR.
#[must_use]
pub fn evidence(upstream: &str, cited: &[&Proven]) -> String {
    let mut out = format!("Promoted from `{upstream}`, where these versions baked clean:\n\n");
    for p in cited {
        let versions: Vec<String> = p
            .release
            .images
            .iter()
            .map(|i| format!("`{}:{}`", i.image, i.tag))
            .collect();
        let _ = write!(
            out,
            "- {}: known-good in `{upstream}` since {} after a bake of {}",
            versions.join(", "),
            p.known_good_at.format("%Y-%m-%dT%H:%M:%SZ"),
            p.bake
        );
        match &p.gate {
            Some(g) => {
                let _ = write!(out, " with {g}");
            }
            None => out.push_str(" (no alert gate)"),
        }
        match (&p.pull_request_url, &p.release.commit) {
            (Some(url), _) => {
                let _ = write!(out, "; deployed by {url}");
            }
            (None, Some(commit)) => {
                let _ = write!(out, "; deployed by commit {commit}");
            }
            (None, None) => {}
        }
        out.push_str(".\n");
    }
    out
}

/// What waits to be promoted from `upstream` into a policy deployed at `current`:
/// the newest proven release upstream, unless this policy already runs it or a
/// version of it is bad here or upstream.
#[must_use]
pub fn waiting<'a>(
    upstream: &'a PolicyState,
    own: &PolicyState,
    current: Option<&Release>,
) -> Option<&'a Proven> {
    let bad = Admission::promoted(own, upstream).bad;
    let newest = upstream.proven.iter().rev().find(|p| {
        p.release
            .images
            .iter()
            .all(|i| !bad.contains(&(canonical(&i.image), i.tag.clone())))
    })?;
    let runs = |i: &crate::policy::v1alpha1::ImageVersion| {
        current.is_some_and(|c| {
            c.images
                .iter()
                .any(|m| canonical(&m.image) == canonical(&i.image) && m.tag == i.tag)
        })
    };
    (!newest.release.images.iter().all(runs)).then_some(newest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::v1alpha1::{BadVersion, ImageVersion};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn release(tag: &str) -> Release {
        Release {
            summary: tag.into(),
            images: vec![ImageVersion {
                image: "registry.example.com/shop/cart".into(),
                tag: tag.into(),
                digest: None,
            }],
            since: at("2026-12-01T09:00:00Z"),
            commit: Some("abc1234".into()),
        }
    }

    fn proven(tags: &[&str]) -> PolicyState {
        let mut s = PolicyState::default();
        let c = Conditions {
            bake: "30m".into(),
            gate: Some("no alert matching {severity=\"critical\"} firing".into()),
            web: Some("https://github.com/acme/staging".into()),
            forge: ForgeKind::GitHub,
        };
        for (n, t) in tags.iter().enumerate() {
            record(
                &mut s,
                c.proof(&release(t), Some(10 + n as u64), at("2026-12-01T10:00:00Z")),
            );
        }
        s
    }

    fn bad(s: &mut PolicyState, tag: &str) {
        s.bad_versions.insert(BadVersion {
            image: "registry.example.com/shop/cart".into(),
            tag: tag.into(),
        });
    }

    #[test]
    fn only_versions_proven_upstream_and_bad_nowhere_are_admitted() {
        let mut upstream = proven(&["1.1.0", "1.3.0"]);
        let mut own = PolicyState::default();
        let a = Admission::promoted(&own, &upstream);
        let img = "registry.example.com/shop/cart";
        assert!(a.admits(img, "1.1.0"));
        assert!(a.admits(img, "1.3.0"));
        assert!(!a.admits(img, "1.2.0"), "never proven upstream");
        assert!(!a.admits("registry.example.com/shop/other", "1.1.0"));
        bad(&mut own, "1.3.0");
        assert!(!Admission::promoted(&own, &upstream).admits(img, "1.3.0"));
        bad(&mut upstream, "1.1.0");
        assert!(!Admission::promoted(&own, &upstream).admits(img, "1.1.0"));
        // Without promotion only the policy's own bad versions count.
        assert!(Admission::own(&own).admits(img, "1.2.0"));
        assert!(!Admission::own(&own).admits(img, "1.3.0"));
    }

    #[test]
    fn a_tag_pushed_again_since_upstream_proved_it_is_not_the_proven_image() {
        let mut upstream = PolicyState::default();
        let mut r = release("1.1.0");
        r.images[0].digest = Some("sha256:aaaa".into());
        let c = Conditions {
            bake: "30m".into(),
            gate: None,
            web: None,
            forge: ForgeKind::GitHub,
        };
        record(&mut upstream, c.proof(&r, None, at("2026-12-01T10:00:00Z")));
        let a = Admission::promoted(&PolicyState::default(), &upstream);
        let img = "registry.example.com/shop/cart";
        assert!(a.digest_problem(img, "1.1.0", "sha256:aaaa").is_none());
        let why = a.digest_problem(img, "1.1.0", "sha256:bbbb").unwrap();
        assert!(why.contains("upstream proved sha256:aaaa"), "{why}");
        // Without a pinned digest upstream there is nothing to compare.
        assert!(a.digest_problem(img, "1.3.0", "sha256:bbbb").is_none());
    }

    #[test]
    fn the_proof_names_the_pull_request_on_the_repositorys_web_page() {
        let s = proven(&["1.1.0"]);
        assert_eq!(
            s.proven[0].pull_request_url.as_deref(),
            Some("https://github.com/acme/staging/pull/10")
        );
        let text = evidence(
            "staging",
            &cite(
                &s,
                &[("registry.example.com/shop/cart".into(), "1.1.0".into())],
            ),
        );
        assert!(text.contains("Promoted from `staging`"), "{text}");
        assert!(
            text.contains("`registry.example.com/shop/cart:1.1.0`"),
            "{text}"
        );
        assert!(
            text.contains("since 2026-12-01T10:00:00Z after a bake of 30m"),
            "{text}"
        );
        assert!(text.contains("severity=\"critical\""), "{text}");
        assert!(
            text.contains("https://github.com/acme/staging/pull/10"),
            "{text}"
        );
    }

    /// A GitLab upstream's proof links its merge request page, a GitHub one its pull
    /// request page; the gate is described as people read it.
    #[test]
    fn conditions_of_a_policy_link_the_right_page_of_its_forge() {
        let spec = |repo: &str| -> AutobumpSpec {
            serde_json::from_value(serde_json::json!({
                "images": [{"name": "ghcr.io/acme/shop", "tags": {"semver": {}}}],
                "source": {"repo": repo},
                "gate": {"prometheus": "http://prometheus:9090", "alerts": "{team=\"shop\"}", "bake": "45m"},
            }))
            .unwrap()
        };
        let r = release("1.1.0");
        let now = at("2026-12-01T10:00:00Z");
        let gitlab = Conditions::of(&spec(
            "https://gitlab.example.com/platform/envs/staging.git",
        ));
        assert_eq!(
            gitlab.proof(&r, Some(7), now).pull_request_url.as_deref(),
            Some("https://gitlab.example.com/platform/envs/staging/-/merge_requests/7")
        );
        let github = Conditions::of(&spec("git@github.com:acme/staging.git"));
        assert_eq!(
            github.proof(&r, Some(7), now).pull_request_url.as_deref(),
            Some("https://github.com/acme/staging/pull/7")
        );
        assert_eq!(github.bake, "45m");
        assert_eq!(
            github.gate.as_deref(),
            Some("no alert matching {team=\"shop\"} firing on Prometheus http://prometheus:9090/")
        );
    }

    #[test]
    fn web_addresses_of_the_usual_remote_forms() {
        for (url, web) in [
            (
                "https://github.com/acme/gitops.git",
                Some("https://github.com/acme/gitops"),
            ),
            (
                "https://x-access-token:secret@github.com/acme/gitops",
                Some("https://github.com/acme/gitops"),
            ),
            (
                "git@github.com:acme/gitops.git",
                Some("https://github.com/acme/gitops"),
            ),
            (
                "ssh://git@gitlab.example.com:2222/group/sub/project.git",
                Some("https://gitlab.example.com/group/sub/project"),
            ),
            ("file:///srv/git/gitops.git", None),
            ("/srv/git/gitops", None),
        ] {
            assert_eq!(web_url(url).as_deref(), web, "{url}");
        }
    }

    #[test]
    fn the_proven_list_keeps_the_newest() {
        let tags: Vec<String> = (0..PROVEN_LIMIT + 5).map(|n| format!("1.{n}.0")).collect();
        let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        let s = proven(&refs);
        assert_eq!(s.proven.len(), PROVEN_LIMIT);
        assert_eq!(s.proven[0].release.summary, "1.5.0");
    }

    #[test]
    fn what_waits_is_the_newest_proven_release_not_running_and_not_bad() {
        let mut upstream = proven(&["1.1.0", "1.3.0"]);
        let own = PolicyState::default();
        let w = waiting(&upstream, &own, Some(&release("1.1.0")));
        assert_eq!(w.map(|p| p.release.summary.as_str()), Some("1.3.0"));
        assert!(waiting(&upstream, &own, Some(&release("1.3.0"))).is_none());
        bad(&mut upstream, "1.3.0");
        assert!(waiting(&upstream, &own, Some(&release("1.1.0"))).is_none());
    }
}
