//! What to rewrite to: [`Target`]s as given by `--set` or a plan, compiled into a
//! [`Plan`] that decides, for one found reference, which target (if any) applies.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use regex::Regex;

use crate::core::reference::{DOCKER_HUB, ImageRef};
use crate::core::tags::{self, Series, is_signature_tag, parse_date_sha, parse_version};
use crate::policy::v1alpha1::{DateShaPolicy, ImagePolicy, SemverPolicy, TagPolicy};

/// Which references a target applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageSelector {
    /// One repository, as written (`nginx`, `gcr.io/k8s-prow/hook`) or canonical
    /// (`docker.io/library/nginx`); matched by canonical name, so every spelling of
    /// the repository matches, but the same path under another registry does not.
    Repository(String),
    /// Every repository under a prefix ending in `/` (`gcr.io/k8s-prow/`), compared
    /// by canonical name.
    Prefix(String),
}

impl fmt::Display for ImageSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Repository(s) | Self::Prefix(s) => f.write_str(s),
        }
    }
}

/// Which current tags a target may replace.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesRule {
    /// The tag policy's series ([`crate::core::tags::series`]): a reference moves
    /// only when its current tag is in the same series as the new tag.
    Policy(TagPolicy),
    /// Inferred from the new tag's shape (the command line without `--policy`):
    /// a date-sha tag → the `dateSha` series of its variant suffix; a version tag
    /// `[v]N(.N)*[-SUFFIX]` → the `semver` policy's series, exactly as with a policy
    /// (`1.25.4` replaces `1.25.3` but not `v1.0.0`, `1.25` or `1.25.3-alpine`;
    /// `1.26.0-alpine` replaces `1.25.3-alpine` and `1.26.0-rc1-alpine`);
    /// anything else → tags of the same *shape* (runs of digits
    /// and git-hash-like segments compared as placeholders, so `build-123` replaces
    /// `build-99` and `3.12-slim` replaces `3.11-slim`, but not `3.11-alpine`).
    /// A tag without a digit (`latest`, `stable`, `latest-master`) is floating: it
    /// is never replaced, and is refused as a target.
    Infer,
}

/// One version to write: every matching reference whose current tag is in the same
/// series as `tag` moves to `tag` (and `digest`).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The references it applies to.
    pub image: ImageSelector,
    /// The new tag.
    pub tag: String,
    /// The new digest (`sha256:…`), written where the reference has (or can have)
    /// one. Without it, a stale digest is removed.
    pub digest: Option<String>,
    /// Which current tags it may replace.
    pub rule: SeriesRule,
}

/// A target that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// `IMAGE=TAG[@DIGEST]` is malformed or names an invalid image, tag or digest.
    #[error("invalid target \"{target}\": {reason}")]
    InvalidTarget {
        /// The target as written.
        target: String,
        /// What is wrong.
        reason: String,
    },
    /// Two targets would move the same references to different versions.
    #[error(
        "conflicting targets for {image}: \"{first}\" and \"{second}\" are in the same series; give one version per series"
    )]
    Conflict {
        /// The image or prefix.
        image: String,
        /// One version.
        first: String,
        /// The other.
        second: String,
    },
    /// `--policy` was given but no image of the policy covers the target's image.
    #[error("{image}: not watched by the policy (no `images[].name` or `prefix` covers it)")]
    NotInPolicy {
        /// The image or prefix.
        image: String,
    },
}

impl RewriteError {
    /// A short stable label for metrics and logs.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidTarget { .. } => "invalid_target",
            Self::Conflict { .. } => "conflict",
            Self::NotInPolicy { .. } => "not_in_policy",
        }
    }
}

impl Target {
    /// Parses `IMAGE=TAG[@DIGEST]` (the `--set` syntax) with [`SeriesRule::Infer`].
    /// `IMAGE` is a repository, or a prefix ending in `/`.
    pub fn parse(spec: &str) -> Result<Self, RewriteError> {
        let bad = |reason: &str| RewriteError::InvalidTarget {
            target: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (image, version) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected IMAGE=TAG[@DIGEST]"))?;
        let (tag, digest) = match version.split_once('@') {
            Some((t, d)) => (t, Some(d)),
            None => (version, None),
        };
        let image = if image.ends_with('/') {
            ImageSelector::Prefix(image.to_owned())
        } else {
            ImageSelector::Repository(image.to_owned())
        };
        let target = Self {
            image,
            tag: tag.to_owned(),
            digest: digest.map(str::to_owned),
            rule: SeriesRule::Infer,
        };
        compile(&target)?;
        Ok(target)
    }

    /// Takes the series rule from the policy image that covers this target's image
    /// (a `name` equal to it, else the longest `prefix` that covers it).
    pub fn with_policy(mut self, images: &[ImagePolicy]) -> Result<Self, RewriteError> {
        let own = selector(&self.image).map_err(|reason| RewriteError::InvalidTarget {
            target: self.to_string(),
            reason,
        })?;
        let mut best: Option<(usize, &TagPolicy)> = None;
        for image in images {
            let (theirs, rank) = match (&image.name, &image.prefix) {
                (Some(name), _) => match selector(&ImageSelector::Repository(name.to_string())) {
                    Ok(s) => (s, usize::MAX),
                    Err(_) => continue,
                },
                (None, Some(prefix)) => {
                    match selector(&ImageSelector::Prefix(prefix.to_string())) {
                        Ok(s) => {
                            let len = s.text().len();
                            (s, len)
                        }
                        Err(_) => continue,
                    }
                }
                (None, None) => continue,
            };
            if theirs.covers_selector(&own) && best.is_none_or(|(r, _)| rank > r) {
                best = Some((rank, &image.tags));
            }
        }
        let (_, policy) = best.ok_or_else(|| RewriteError::NotInPolicy {
            image: self.image.to_string(),
        })?;
        self.rule = SeriesRule::Policy(policy.clone());
        compile(&self)?;
        Ok(self)
    }
}

impl FromStr for Target {
    type Err = RewriteError;

    fn from_str(s: &str) -> Result<Self, RewriteError> {
        Self::parse(s)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.image, self.tag)?;
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// A selector in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sel {
    /// `registry/path`.
    Repo(String),
    /// `registry/path/` or `registry/`.
    Prefix(String),
}

impl Sel {
    fn text(&self) -> &str {
        match self {
            Self::Repo(s) | Self::Prefix(s) => s,
        }
    }

    /// How specific a match of `canonical` is (`None`: no match).
    fn rank(&self, canonical: &str) -> Option<usize> {
        match self {
            Self::Repo(r) => (r == canonical).then_some(usize::MAX),
            Self::Prefix(p) => canonical.starts_with(p.as_str()).then_some(p.len()),
        }
    }

    fn covers_selector(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Repo(a), Self::Repo(b)) => a == b,
            (Self::Prefix(p), Self::Repo(r) | Self::Prefix(r)) => r.starts_with(p.as_str()),
            (Self::Repo(_), Self::Prefix(_)) => false,
        }
    }

    /// A substring every spelling of a matching reference contains, for a cheap
    /// prefilter (`None`: no such substring, e.g. all of Docker Hub).
    fn needle(&self) -> Option<String> {
        match self {
            Self::Repo(r) => r.rsplit('/').next().map(str::to_owned),
            Self::Prefix(p) => {
                let (registry, path) = p.split_once('/')?;
                if path.is_empty() {
                    return (registry != DOCKER_HUB).then(|| format!("{registry}/"));
                }
                if registry == DOCKER_HUB && path == "library/" {
                    return None;
                }
                let last = path.trim_end_matches('/').rsplit('/').next()?;
                Some(format!("{last}/"))
            }
        }
    }
}

fn selector(image: &ImageSelector) -> Result<Sel, String> {
    match image {
        ImageSelector::Repository(r) => match ImageRef::parse(r) {
            Some(parsed) if parsed.tag.is_none() && parsed.digest.is_none() => {
                Ok(Sel::Repo(parsed.canonical_repository()))
            }
            Some(_) => Err(format!(
                "\"{r}\": name the image without a tag or digest (IMAGE=TAG[@DIGEST])"
            )),
            None => Err(format!("\"{r}\" is not an image repository")),
        },
        ImageSelector::Prefix(p) => {
            let body = p.strip_suffix('/').unwrap_or(p);
            if matches!(body, DOCKER_HUB | "index.docker.io") {
                return Ok(Sel::Prefix(format!("{DOCKER_HUB}/")));
            }
            match ImageRef::parse(&format!("{body}/x")) {
                Some(parsed) if parsed.tag.is_none() => {
                    let canonical = parsed.canonical_repository();
                    Ok(Sel::Prefix(canonical[..canonical.len() - 1].to_owned()))
                }
                _ => Err(format!("\"{p}\" is not an image prefix")),
            }
        }
    }
}

/// Which tags a compiled target replaces.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Class {
    /// Tags in this series under this policy.
    Series(TagPolicy, Series),
    /// Tags of this shape (see [`shape`]).
    Shape(String),
}

impl Class {
    fn contains(&self, tag: &str) -> bool {
        match self {
            Self::Series(policy, series) => tags::series(policy, tag).as_ref() == Some(series),
            Self::Shape(s) => {
                !is_signature_tag(tag)
                    && parse_date_sha(tag).is_none()
                    && parse_version(tag).is_none()
                    && shape(tag).as_deref() == Some(s.as_str())
            }
        }
    }
}

/// The shape of a tag: each segment (split at `.`, `-`, `_`) that looks like a git
/// hash (7+ hex digits with at least one digit) becomes `#`, and every run of
/// digits elsewhere becomes `#`. `None` when no digit is left to vary: the tag is
/// floating.
fn shape(tag: &str) -> Option<String> {
    let mut out = String::with_capacity(tag.len());
    let mut rest = tag;
    loop {
        let end = rest.find(['.', '-', '_']).unwrap_or(rest.len());
        let segment = &rest[..end];
        let hashy = segment.len() >= 7
            && segment
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && segment.bytes().any(|b| b.is_ascii_digit());
        if hashy {
            out.push('#');
        } else {
            push_collapsing_digits(&mut out, segment);
        }
        if end == rest.len() {
            break;
        }
        out.push_str(&rest[end..=end]);
        rest = &rest[end + 1..];
    }
    out.contains('#').then_some(out)
}

/// Appends `text` to `out` with every run of ASCII digits written as one `#`.
fn push_collapsing_digits(out: &mut String, text: &str) {
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
}

/// A target ready for matching.
#[derive(Debug, Clone)]
pub(super) struct Compiled {
    pub(super) sel: Sel,
    pub(super) tag: String,
    pub(super) digest: Option<String>,
    pub(super) class: Class,
    /// The target as given, for messages.
    pub(super) display: String,
}

fn compile(target: &Target) -> Result<Compiled, RewriteError> {
    let display = target.to_string();
    let bad = |reason: String| RewriteError::InvalidTarget {
        target: display.clone(),
        reason,
    };
    let sel = selector(&target.image).map_err(&bad)?;
    let mut version = format!("x:{}", target.tag);
    if let Some(d) = &target.digest {
        version.push('@');
        version.push_str(d);
    }
    match ImageRef::parse(&version) {
        Some(r) if r.tag.as_deref() == Some(target.tag.as_str()) => {}
        _ => {
            return Err(bad(match &target.digest {
                Some(d) if ImageRef::parse(&format!("x@{d}")).is_none() => {
                    format!("\"{d}\" is not a digest (sha256: and 64 lowercase hex digits)")
                }
                _ => format!("\"{}\" is not a valid tag", target.tag),
            }));
        }
    }
    let class = match &target.rule {
        SeriesRule::Policy(policy) => match tags::series(policy, &target.tag) {
            Some(series) => Class::Series(policy.clone(), series),
            None => {
                return Err(bad(format!(
                    "tag \"{}\" is not a version under the policy's tag rule",
                    target.tag
                )));
            }
        },
        SeriesRule::Infer => {
            if is_signature_tag(&target.tag) {
                return Err(bad(format!(
                    "\"{}\" is a signature or attestation tag",
                    target.tag
                )));
            }
            if let Some(d) = parse_date_sha(&target.tag) {
                Class::Series(
                    TagPolicy::DateSha(DateShaPolicy {}),
                    Series::DateSha(d.variant.map(str::to_owned)),
                )
            } else if let Some(v) = parse_version(&target.tag) {
                Class::Series(TagPolicy::Semver(SemverPolicy::default()), v.series())
            } else if let Some(s) = shape(&target.tag) {
                Class::Shape(s)
            } else {
                return Err(bad(format!(
                    "\"{}\" is a floating tag (no digit): it never replaces another tag",
                    target.tag
                )));
            }
        }
    };
    Ok(Compiled {
        sel,
        tag: target.tag.clone(),
        digest: target.digest.clone(),
        class,
        display,
    })
}

/// A digest the registry lists under a tag: what lets a digest-only reference
/// (`repo@sha256:…`) move, as if it were at that tag (see [`Plan::with_digest_tags`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct DigestTag {
    /// The image (any spelling; compared by canonical repository).
    pub image: String,
    /// The digest (`sha256:…`).
    pub digest: String,
    /// The tag whose manifest has that digest.
    pub tag: String,
}

/// Targets compiled for matching: build once, rewrite many files.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(super) targets: Vec<Compiled>,
    /// Matches a substring every file with a watched reference contains (`None`:
    /// every file must be scanned).
    prefilter: Option<Regex>,
    /// `(canonical repository, digest)` → the tag the registry lists it under.
    digest_tags: HashMap<(String, String), String>,
}

impl Plan {
    /// Compiles and checks targets: each must be valid, and no two may give the same
    /// image (or prefix) different versions in one series. Identical duplicates are
    /// fine.
    pub fn new(targets: &[Target]) -> Result<Self, RewriteError> {
        let mut compiled: Vec<Compiled> = Vec::with_capacity(targets.len());
        for target in targets {
            let c = compile(target)?;
            if let Some(other) = compiled
                .iter()
                .find(|o| o.sel == c.sel && o.class == c.class)
            {
                if other.tag == c.tag && other.digest == c.digest {
                    continue;
                }
                return Err(RewriteError::Conflict {
                    image: target.image.to_string(),
                    first: other.display.clone(),
                    second: c.display,
                });
            }
            compiled.push(c);
        }
        Ok(Self::from_compiled(compiled))
    }

    /// Compiles the valid targets and ignores the others (for [`super::rewrite_text`],
    /// whose signature has no room for errors).
    pub(super) fn lenient(targets: &[Target]) -> Self {
        let mut compiled: Vec<Compiled> = Vec::new();
        for target in targets {
            if let Ok(c) = compile(target)
                && !compiled
                    .iter()
                    .any(|o| o.sel == c.sel && o.class == c.class)
            {
                compiled.push(c);
            }
        }
        Self::from_compiled(compiled)
    }

    fn from_compiled(targets: Vec<Compiled>) -> Self {
        let needles: Option<Vec<String>> = targets.iter().map(|t| t.sel.needle()).collect();
        let prefilter = needles.map(|mut n| {
            n.sort();
            n.dedup();
            let pattern = n
                .iter()
                .map(|s| regex::escape(s))
                .collect::<Vec<_>>()
                .join("|");
            // An empty alternation would match everywhere; no targets match nothing.
            let pattern = if pattern.is_empty() {
                r"[^\s\S]".to_owned()
            } else {
                pattern
            };
            Regex::new(&pattern).expect("escaped literals form a valid regex")
        });
        Self {
            targets,
            prefilter,
            digest_tags: HashMap::new(),
        }
    }

    /// Lets digest-only references (`repo@sha256:D`, no tag) move: a reference whose
    /// digest is one of these is treated as being at its tag, and when a target
    /// with a digest applies to that tag, its digest is replaced by the target's
    /// (the form stays digest-only). A digest not listed here is never guessed at:
    /// such a reference does not move. Without this, digest-only references never
    /// move.
    #[must_use]
    pub fn with_digest_tags(mut self, known: impl IntoIterator<Item = DigestTag>) -> Self {
        for d in known {
            if let Some(r) = ImageRef::parse(&d.image) {
                self.digest_tags
                    .insert((r.canonical_repository(), d.digest), d.tag);
            }
        }
        self
    }

    /// Whether `text` may contain a reference some target applies to (a cheap
    /// substring test; `false` means certainly not).
    #[must_use]
    pub fn may_match(&self, text: &str) -> bool {
        !self.targets.is_empty() && self.prefilter.as_ref().is_none_or(|r| r.is_match(text))
    }

    pub(super) fn prefilter(&self) -> Option<&Regex> {
        self.prefilter.as_ref()
    }

    /// [`Self::target_for`], and for a digest-only reference the target for the tag
    /// its digest is known under (returned too).
    pub(super) fn target_for_found<'a>(
        &'a self,
        reference: &ImageRef,
    ) -> Option<(&'a Compiled, Option<&'a str>)> {
        match (&reference.tag, &reference.digest) {
            (None, Some(digest)) => {
                let canonical = reference.canonical_repository();
                let tag = self.digest_tags.get(&(canonical.clone(), digest.clone()))?;
                let target = self.target_for_tag(&canonical, tag)?;
                Some((target, Some(tag.as_str())))
            }
            _ => self.target_for(reference).map(|t| (t, None)),
        }
    }

    /// The target for a reference: among the targets whose image matches it and
    /// whose series holds its current tag, the most specific (a repository beats a
    /// prefix, a longer prefix a shorter one; then the first given).
    pub(super) fn target_for(&self, reference: &ImageRef) -> Option<&Compiled> {
        let tag = reference.tag.as_deref()?;
        self.target_for_tag(&reference.canonical_repository(), tag)
    }

    fn target_for_tag(&self, canonical: &str, tag: &str) -> Option<&Compiled> {
        let mut best: Option<(usize, &Compiled)> = None;
        for t in &self.targets {
            if let Some(rank) = t.sel.rank(canonical)
                && best.is_none_or(|(r, _)| rank > r)
                && t.class.contains(tag)
            {
                best = Some((rank, t));
            }
        }
        best.map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sets: &[&str]) -> Plan {
        let targets: Vec<Target> = sets.iter().map(|s| s.parse().unwrap()).collect();
        Plan::new(&targets).unwrap()
    }

    fn moves(plan: &Plan, reference: &str) -> Option<String> {
        plan.target_for(&ImageRef::parse(reference).unwrap())
            .map(|t| t.tag.clone())
    }

    #[test]
    fn shapes() {
        for (tag, want) in [
            ("build-123", Some("build-#")),
            ("3.12-slim", Some("#.#-slim")),
            ("sha-abc1234", Some("sha-#")),
            ("r2024_01", Some("r#_#")),
            ("latest", None),
            ("latest-master", None),
            ("stable", None),
        ] {
            assert_eq!(shape(tag).as_deref(), want, "{tag}");
        }
    }

    #[test]
    fn inferred_series() {
        let p = plan(&[
            "gcr.io/k8s-prow/hook=v20240202-bbbbbbb",
            "gcr.io/k8s-prow/hook=v20240202-bbbbbbb-master",
            "nginx=1.27.0",
            "python=3.13-slim",
        ]);
        let cases = [
            (
                "gcr.io/k8s-prow/hook:v20240101-aaaaaaa",
                Some("v20240202-bbbbbbb"),
            ),
            (
                "gcr.io/k8s-prow/hook:v20240101-aaaaaaa-master",
                Some("v20240202-bbbbbbb-master"),
            ),
            ("gcr.io/k8s-prow/hook:v20240101-aaaaaaa-arm64", None),
            ("gcr.io/k8s-prow/hook:latest", None),
            ("gcr.io/k8s-prow/hook:latest-master", None),
            ("ghcr.io/k8s-prow/hook:v20240101-aaaaaaa", None),
            ("docker.io/library/nginx:1.25.3", Some("1.27.0")),
            ("nginx:1.25", None),
            ("nginx:1.25.3-alpine", None),
            // A `v` prefix is its own series (issue 13: the same rule as `resolve`).
            ("nginx:v1.0.0", None),
            ("nginx:latest", None),
            ("python:3.12-slim", Some("3.13-slim")),
            ("python:3.12-alpine", None),
            ("nginx", None),
        ];
        for (reference, want) in cases {
            assert_eq!(moves(&p, reference).as_deref(), want, "{reference}");
        }
    }

    /// Docker Hub variants (hub.docker.com/_/nginx, /_/postgres, /_/node): without a
    /// policy, `--set` moves only references of the new tag's own series.
    #[test]
    fn inferred_version_series_follow_the_variant() {
        let p = plan(&[
            "nginx=1.26.0-alpine",
            "nginx=1.26.0",
            "postgres=16.2-alpine",
            "node=20.11.0-alpine3.18",
        ]);
        let cases = [
            ("nginx:1.25.3-alpine", Some("1.26.0-alpine")),
            ("nginx:1.27.0-rc1-alpine", Some("1.26.0-alpine")),
            ("nginx:1.25.3", Some("1.26.0")),
            ("nginx:1.25.3-alpine-slim", None),
            ("nginx:1.25-alpine", None),
            ("nginx:alpine", None),
            ("postgres:16.1-alpine", Some("16.2-alpine")),
            ("postgres:16-alpine", None),
            ("postgres:16.1", None),
            ("node:20.10.0-alpine3.18", Some("20.11.0-alpine3.18")),
            ("node:20.10.0-alpine3.19", None),
            ("node:20-alpine3.18", None),
        ];
        for (reference, want) in cases {
            assert_eq!(moves(&p, reference).as_deref(), want, "{reference}");
        }
        // One version per variant: two targets of one series conflict.
        let t = |s: &str| Target::parse(s).unwrap();
        assert!(matches!(
            Plan::new(&[t("nginx=1.26.0-alpine"), t("nginx=1.26.1-alpine")]),
            Err(RewriteError::Conflict { .. })
        ));
    }

    /// A rollback puts back a known-good release that names one image in several
    /// variants (policy targets, as `controller::rollback_targets` builds them): each
    /// target moves only its own series, and they do not conflict.
    #[test]
    fn policy_targets_of_one_image_in_several_variants() {
        let images: Vec<ImagePolicy> = serde_json::from_value(serde_json::json!([
            {"name": "nginx", "tags": {"semver": {}}},
        ]))
        .unwrap();
        let t = |s: &str| Target::parse(s).unwrap().with_policy(&images).unwrap();
        let p = Plan::new(&[t("nginx=1.25.3"), t("nginx=1.25.3-alpine")]).unwrap();
        for (reference, want) in [
            ("nginx:1.26.0", Some("1.25.3")),
            ("nginx:1.26.0-alpine", Some("1.25.3-alpine")),
            ("nginx:1.26.0-alpine-slim", None),
            ("nginx:1.26-alpine", None),
            ("nginx:alpine", None),
        ] {
            assert_eq!(moves(&p, reference).as_deref(), want, "{reference}");
        }
    }

    #[test]
    fn most_specific_target_wins() {
        let p = plan(&[
            "gcr.io/p/=v20240303-ccccccc",
            "gcr.io/p/hook=v20240202-bbbbbbb",
        ]);
        assert_eq!(
            moves(&p, "gcr.io/p/hook:v20240101-aaaaaaa").as_deref(),
            Some("v20240202-bbbbbbb")
        );
        assert_eq!(
            moves(&p, "gcr.io/p/deck:v20240101-aaaaaaa").as_deref(),
            Some("v20240303-ccccccc")
        );
        // The repository target has no -master version; the prefix one does not either.
        assert_eq!(moves(&p, "gcr.io/p/hook:v20240101-aaaaaaa-master"), None);
    }

    #[test]
    fn prefixes_are_canonical() {
        for (prefix, reference, want) in [
            ("acme/", "docker.io/acme/app:1.0.0", true),
            ("docker.io/acme/", "acme/app:1.0.0", true),
            ("library/", "nginx:1.0.0", true),
            ("docker.io/", "nginx:1.0.0", true),
            ("gcr.io/", "gcr.io/x/app:1.0.0", true),
            ("gcr.io/", "ghcr.io/x/app:1.0.0", false),
            (
                "localhost:5000/team/",
                "localhost:5000/team/app:1.0.0",
                true,
            ),
            (
                "localhost:5000/team/",
                "localhost:5001/team/app:1.0.0",
                false,
            ),
        ] {
            let p = plan(&[&format!("{prefix}=2.0.0")]);
            assert_eq!(moves(&p, reference).is_some(), want, "{prefix} {reference}");
            if want {
                assert!(p.may_match(reference), "prefilter {prefix} {reference}");
            }
        }
    }

    #[test]
    fn invalid_and_conflicting_targets() {
        for spec in [
            "nginx",
            "nginx=latest",
            "nginx=",
            "Nginx=1.0.0",
            "nginx:1=2.0.0",
            "nginx=1.0.0@sha256:short",
            "nginx=sha256-abc.sig",
        ] {
            assert!(Target::parse(spec).is_err(), "{spec}");
        }
        let t = |s: &str| Target::parse(s).unwrap();
        assert!(matches!(
            Plan::new(&[t("nginx=1.0.0"), t("docker.io/library/nginx=1.1.0")]),
            Err(RewriteError::Conflict { .. })
        ));
        // One version per variant is fine, and so is a repeated identical target.
        assert!(
            Plan::new(&[
                t("app=v20240101-aaaaaaa"),
                t("app=v20240101-aaaaaaa-master"),
                t("app=v20240101-aaaaaaa"),
            ])
            .is_ok()
        );
    }

    #[test]
    fn policy_rule() {
        let images: Vec<ImagePolicy> = serde_json::from_value(serde_json::json!([
            {"prefix": "gcr.io/k8s-prow/", "tags": {"dateSha": {}}},
            {"name": "gcr.io/k8s-prow/special", "tags": {"regex": {"pattern": "^build-(?P<n>\\d+)$", "extract": "n"}}},
        ]))
        .unwrap();
        let t = |s: &str| Target::parse(s).unwrap();
        let hook = t("gcr.io/k8s-prow/hook=v20240101-aaaaaaa")
            .with_policy(&images)
            .unwrap();
        assert!(matches!(
            hook.rule,
            SeriesRule::Policy(TagPolicy::DateSha(_))
        ));
        // The regex policy of the named image wins over the prefix's, and its
        // tags need not look like anything `Infer` knows.
        let special = Target {
            image: ImageSelector::Repository("gcr.io/k8s-prow/special".into()),
            tag: "build-12".into(),
            digest: None,
            rule: SeriesRule::Infer,
        }
        .with_policy(&images)
        .unwrap();
        assert!(matches!(
            special.rule,
            SeriesRule::Policy(TagPolicy::Regex(_))
        ));
        let p = Plan::new(&[special]).unwrap();
        assert_eq!(
            moves(&p, "gcr.io/k8s-prow/special:build-9").as_deref(),
            Some("build-12")
        );
        assert_eq!(moves(&p, "gcr.io/k8s-prow/special:latest"), None);
        assert!(matches!(
            t("ghcr.io/other=1.0.0").with_policy(&images),
            Err(RewriteError::NotInPolicy { .. })
        ));
        assert!(matches!(
            t("gcr.io/k8s-prow/hook=1.0.0").with_policy(&images),
            Err(RewriteError::InvalidTarget { .. })
        ));
    }
}
