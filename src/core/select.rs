//! Which version each watched image should move to (pure).
//!
//! Input: one image policy, the tags each image is at in the repository (its
//! *current* references, grouped into series by [`crate::core::tags`]), the tags the
//! registry has, the versions recorded as bad, build times where they are needed, and
//! (with `minAge`) since when each candidate exists, and `now`.
//! Output: one [`Decision`] per image and series: bump to a tag, up to date, waiting
//! for a tag to be old enough, or the reason nothing was chosen.
//!
//! Rules:
//! * only series that occur among the current references move (each dateSha variant
//!   suffix, and each semver shape — `v` or not, number of parts, variant suffix — is
//!   its own series and gets its own newest tag);
//! * candidates are the registry's tags in the same series, minus signature and
//!   attestation tags, the policy's `excludeTags`, versions recorded as bad (exact
//!   tags: a bad `1.26.0-alpine` says nothing about `1.26.0`), and (semver) versions
//!   whose numeric release is outside the range or pre-releases unless asked for;
//! * with `minAge`, a candidate counts only once it is that old ([`ages_needed`] says
//!   whose age the caller must look up); the newest old-enough candidate wins, and when
//!   every newer one is too young the decision is to wait;
//! * the newest candidate wins; for `dateSha`, the newest date wins and the build time
//!   breaks ties between tags of one date ([`build_times_needed`] says which ones the
//!   caller must look up);
//! * a candidate must be strictly newer than the current version: nothing ever moves
//!   backwards or sideways;
//! * `consistent`: all images of a series move to one tag, the newest that exists for
//!   every one of them and is newer than the newest current version among them.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};

use super::reference::ImageRef;
use super::tags::{self, Key, Series};
use crate::policy::v1alpha1::{ImagePolicy, TagPolicy};

/// What is known about one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageState {
    /// The tags the repository's references use now (any number; floating tags are
    /// ignored).
    pub current: Vec<String>,
    /// The tags the registry has.
    pub available: Vec<String>,
}

/// Everything [`select`] decides from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The image policy (tag policy, exclusions, `consistent`).
    pub policy: &'a ImagePolicy,
    /// Each image (by canonical repository) and its state.
    pub images: &'a BTreeMap<String, ImageState>,
    /// Versions recorded as bad, as `(image, tag)`.
    pub bad: &'a BTreeSet<(String, String)>,
    /// With promotion (`promotion.from`): the only `(image, tag)` pairs that may be
    /// candidates, those proven upstream (see [`super::promotion`]).
    pub proven: Option<&'a BTreeSet<(String, String)>>,
    /// Known build times of `(image, tag)`.
    pub build_times: &'a HashMap<(String, String), DateTime<Utc>>,
    /// Since when `(image, tag)` counts as existing, for `minAge` (see
    /// [`crate::resolve`] for where the time comes from); a tag without one is not
    /// old enough.
    pub ages: &'a HashMap<(String, String), DateTime<Utc>>,
    /// The time of the decision.
    pub now: DateTime<Utc>,
}

/// The decision for one image and series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The image (canonical repository).
    pub image: String,
    /// The series.
    pub series: Series,
    /// The current version in this series (the newest, if references disagree).
    pub current: String,
    /// What to do.
    pub outcome: Outcome,
}

/// What to do with one image and series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Move to this tag.
    Bump(String),
    /// The current version is the newest acceptable one.
    UpToDate,
    /// A newer acceptable tag exists but is younger than `minAge` (and no other newer
    /// one is old enough).
    Waiting {
        /// The newest such tag.
        tag: String,
        /// How old it is (`None`: unknown).
        age: Option<TimeDelta>,
        /// The policy's `minAge`.
        min_age: TimeDelta,
    },
    /// Nothing can be chosen, and why.
    NoCandidate(String),
}

/// Whether `image` (an entry of a policy's `images`) covers the reference `r`: by
/// canonical repository, `name` exactly, `prefix` as a leading path (so `nginx` and
/// `docker.io/library/nginx` are the same image, and `gcr.io/x/` does not cover
/// `ghcr.io/x/app`).
#[must_use]
pub fn covers(image: &ImagePolicy, r: &ImageRef) -> bool {
    let canonical = r.canonical_repository();
    let as_canonical = |s: &str| ImageRef::parse(s).map(|i| i.canonical_repository());
    image
        .name
        .as_ref()
        .is_some_and(|n| as_canonical(n.as_str()).as_deref() == Some(canonical.as_str()))
        || image.prefix.as_ref().is_some_and(|p| {
            as_canonical(&format!("{}x", p.as_str()))
                .and_then(|c| c.strip_suffix('x').map(str::to_owned))
                .is_some_and(|prefix| canonical.starts_with(&prefix))
        })
}

/// A tag with what orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ranked {
    tag: String,
    key: Key,
    built: Option<DateTime<Utc>>,
}

impl Ranked {
    fn cmp_newness(&self, other: &Self) -> Ordering {
        self.key
            .cmp(&other.key)
            // Same date: the later build is newer; an unknown build time sorts first so
            // that an unknown never beats a known newer one.
            .then_with(|| self.built.cmp(&other.built))
            // Fully tied (no build times): deterministic, by tag text.
            .then_with(|| self.tag.cmp(&other.tag))
    }

    fn is_newer_than(&self, other: &Self) -> bool {
        match self.key.cmp(&other.key) {
            Ordering::Greater => true,
            Ordering::Less => false,
            // Same key: newer only with evidence (a later build time), never by tag text.
            Ordering::Equal => match (self.built, other.built) {
                (Some(a), Some(b)) => a > b,
                _ => false,
            },
        }
    }
}

fn rank(inputs: &Inputs<'_>, image: &str, tag: &str) -> Option<Ranked> {
    Some(Ranked {
        tag: tag.to_owned(),
        key: tags::key(&inputs.policy.tags, tag)?,
        built: inputs
            .build_times
            .get(&(image.to_owned(), tag.to_owned()))
            .copied(),
    })
}

/// Whether the policy accepts `tag` as a candidate at all (independent of series).
fn acceptable(inputs: &Inputs<'_>, image: &str, tag: &str) -> bool {
    let key = (image.to_owned(), tag.to_owned());
    !inputs.bad.contains(&key)
        && inputs.proven.is_none_or(|p| p.contains(&key))
        && tag_allowed(inputs.policy, tag)
}

/// Whether `policy` allows `tag` at all: not excluded (`excludeTags`), and for semver
/// a version tag whose numeric release (`16.1-alpine` is 16.1.0) is within the range,
/// a pre-release only when asked for (and then judged by the release it leads to, so
/// `range: "<17"` refuses `17rc1-alpine`). A PR moving an image to a tag this refuses
/// was not planned by autobump and is never merged. (`minAge` is not judged here: it
/// depends on time, and a PR autobump opened stays mergeable.)
#[must_use]
pub fn tag_allowed(policy: &ImagePolicy, tag: &str) -> bool {
    if policy.exclude_tags.iter().any(|g| g.is_match(tag)) {
        return false;
    }
    match &policy.tags {
        TagPolicy::Semver(semver) => {
            let Some(version) = tags::parse_version(tag) else {
                return false;
            };
            if version.is_prerelease() && !semver.prerelease {
                return false;
            }
            semver
                .range
                .as_ref()
                .is_none_or(|range| range.req().matches(&version.release()))
        }
        TagPolicy::DateSha(_) | TagPolicy::Regex(_) => true,
    }
}

/// Whether `tag` of `image` is old enough for the policy's `minAge` (always, without
/// one; never, when its age is not known).
fn old_enough(inputs: &Inputs<'_>, image: &str, tag: &str) -> bool {
    inputs
        .policy
        .required_age()
        .is_none_or(|min| age(inputs, image, tag).is_some_and(|age| age >= min))
}

fn age(inputs: &Inputs<'_>, image: &str, tag: &str) -> Option<TimeDelta> {
    inputs
        .ages
        .get(&(image.to_owned(), tag.to_owned()))
        .map(|since| inputs.now - *since)
}

/// The waiting decision for `tag` (of `images`; the youngest counts).
fn waiting(inputs: &Inputs<'_>, images: &[&str], tag: &str) -> Outcome {
    let ages: Option<Vec<TimeDelta>> = images.iter().map(|i| age(inputs, i, tag)).collect();
    Outcome::Waiting {
        tag: tag.to_owned(),
        age: ages.and_then(|a| a.into_iter().min()),
        min_age: inputs.policy.required_age().unwrap_or_default(),
    }
}

/// The series present among an image's current references, each with its newest
/// current version.
fn current_series(
    inputs: &Inputs<'_>,
    image: &str,
    state: &ImageState,
) -> BTreeMap<Series, Ranked> {
    let mut out: BTreeMap<Series, Ranked> = BTreeMap::new();
    for tag in &state.current {
        let (Some(series), Some(ranked)) = (
            tags::series(&inputs.policy.tags, tag),
            rank(inputs, image, tag),
        ) else {
            continue;
        };
        match out.get(&series) {
            Some(existing) if existing.cmp_newness(&ranked) != Ordering::Less => {}
            _ => {
                out.insert(series, ranked);
            }
        }
    }
    out
}

/// The acceptable registry tags of `image` in `series`, newest first.
fn candidates(
    inputs: &Inputs<'_>,
    image: &str,
    state: &ImageState,
    series: &Series,
) -> Vec<Ranked> {
    let mut out: Vec<Ranked> = state
        .available
        .iter()
        .filter(|t| tags::series(&inputs.policy.tags, t).as_ref() == Some(series))
        .filter(|t| acceptable(inputs, image, t))
        .filter_map(|t| rank(inputs, image, t))
        .collect();
    out.sort_by(|a, b| b.cmp_newness(a));
    out
}

/// The `(image, tag)` pairs whose build time [`select`] needs: for `dateSha`, the
/// tags sharing the newest date of a series (candidates and the current version), when
/// more than one tag has that date. Look them up and pass them in `build_times`.
#[must_use]
pub fn build_times_needed(inputs: &Inputs<'_>) -> Vec<(String, String)> {
    if !matches!(inputs.policy.tags, TagPolicy::DateSha(_)) {
        return Vec::new();
    }
    let mut out = BTreeSet::new();
    for (image, state) in inputs.images {
        for (series, current) in current_series(inputs, image, state) {
            let mut all = candidates(inputs, image, state, &series);
            all.push(current);
            let Some(top) = all.iter().map(|r| r.key.clone()).max() else {
                continue;
            };
            let tied: Vec<&Ranked> = all.iter().filter(|r| r.key == top).collect();
            if tied.len() > 1 {
                out.extend(
                    tied.iter()
                        .filter(|r| r.built.is_none())
                        .map(|r| (image.clone(), r.tag.clone())),
                );
            }
        }
    }
    out.into_iter().collect()
}

/// The `(image, tag)` pairs whose age [`select`] needs for `minAge` and lacks in
/// `ages`: per image and series, walking the candidates newer than the current version
/// newest first, the first whose age is unknown, unless an older-known one before it
/// is old enough (for `consistent`, per common tag, every member's). Look them up, add
/// them to `ages`, and ask again until nothing is needed: each round adds at least one
/// age, and a poll where the newest candidate's age is known needs none.
#[must_use]
pub fn ages_needed(inputs: &Inputs<'_>) -> Vec<(String, String)> {
    if inputs.policy.required_age().is_none() {
        return Vec::new();
    }
    let known = |image: &str, tag: &str| {
        inputs
            .ages
            .contains_key(&(image.to_owned(), tag.to_owned()))
    };
    let mut out = BTreeSet::new();
    if inputs.policy.consistent {
        for (series, members) in consistent_groups(inputs) {
            let per_image: Vec<Vec<Ranked>> = members
                .iter()
                .map(|(image, state, _)| candidates(inputs, image, state, &series))
                .collect();
            let floor = group_floor(&members);
            for r in common_tags(&per_image) {
                if floor.as_ref().is_some_and(|f| !r.is_newer_than(f)) {
                    break;
                }
                let unknown: Vec<&String> = members
                    .iter()
                    .map(|(image, _, _)| *image)
                    .filter(|image| !known(image, &r.tag))
                    .collect();
                if !unknown.is_empty() {
                    out.extend(unknown.into_iter().map(|i| (i.clone(), r.tag.clone())));
                    break;
                }
                if members
                    .iter()
                    .all(|(image, _, _)| old_enough(inputs, image, &r.tag))
                {
                    break;
                }
            }
        }
    } else {
        for (image, state) in inputs.images {
            for (series, current) in current_series(inputs, image, state) {
                for c in candidates(inputs, image, state, &series) {
                    if !c.is_newer_than(&current) {
                        break;
                    }
                    if !known(image, &c.tag) {
                        out.insert((image.clone(), c.tag.clone()));
                        break;
                    }
                    if old_enough(inputs, image, &c.tag) {
                        break;
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

/// Decides, for every image and series, the version to move to.
#[must_use]
pub fn select(inputs: &Inputs<'_>) -> Vec<Decision> {
    if inputs.policy.consistent {
        select_consistent(inputs)
    } else {
        inputs
            .images
            .iter()
            .flat_map(|(image, state)| {
                current_series(inputs, image, state)
                    .into_iter()
                    .map(move |(series, current)| {
                        let all = candidates(inputs, image, state, &series);
                        let mut newer = all.iter().filter(|c| c.is_newer_than(&current));
                        let newest = newer.clone().next();
                        let outcome =
                            match (newer.find(|c| old_enough(inputs, image, &c.tag)), newest) {
                                (Some(b), _) => Outcome::Bump(b.tag.clone()),
                                (None, Some(young)) => {
                                    waiting(inputs, &[image.as_str()], &young.tag)
                                }
                                (None, None) if all.is_empty() => {
                                    Outcome::NoCandidate(no_candidate_reason(inputs, &series))
                                }
                                (None, None) => Outcome::UpToDate,
                            };
                        Decision {
                            image: image.clone(),
                            series,
                            current: current.tag,
                            outcome,
                        }
                    })
            })
            .collect()
    }
}

fn no_candidate_reason(inputs: &Inputs<'_>, series: &Series) -> String {
    let what = match (&inputs.policy.tags, series) {
        (TagPolicy::DateSha(_), s) => format!("dateSha tags in series {}", s.label()),
        (TagPolicy::Semver(p), s) => match &p.range {
            Some(r) => format!("{} tags in range \"{r}\"", s.label()),
            None => format!("{} tags", s.label()),
        },
        (TagPolicy::Regex(p), _) => format!("tags matching \"{}\"", p.pattern),
    };
    if inputs.proven.is_some() {
        format!("no {what} proven upstream yet (promotion.from; after exclusions and bad versions)")
    } else {
        format!("the registry has no acceptable {what} (after exclusions and bad versions)")
    }
}

/// A consistent group member: the image, its state and its current version.
type Member<'a> = (&'a String, &'a ImageState, Ranked);

/// The images of a consistent policy grouped by series: each series moves as one.
fn consistent_groups<'a>(inputs: &Inputs<'a>) -> BTreeMap<Series, Vec<Member<'a>>> {
    let mut groups: BTreeMap<Series, Vec<Member<'a>>> = BTreeMap::new();
    for (image, state) in inputs.images {
        for (series, current) in current_series(inputs, image, state) {
            groups
                .entry(series)
                .or_default()
                .push((image, state, current));
        }
    }
    groups
}

/// The floor of a group: nothing may move below its newest current version.
fn group_floor(members: &[Member<'_>]) -> Option<Ranked> {
    members
        .iter()
        .map(|(_, _, c)| c)
        .max_by(|a, b| a.cmp_newness(b))
        .cloned()
}

/// Newest first, the tags every image has (ranked as the first image ranks them).
fn common_tags(per_image: &[Vec<Ranked>]) -> Vec<&Ranked> {
    per_image
        .first()
        .map(|first| {
            first
                .iter()
                .filter(|r| {
                    per_image[1..]
                        .iter()
                        .all(|c| c.iter().any(|o| o.tag == r.tag))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn select_consistent(inputs: &Inputs<'_>) -> Vec<Decision> {
    let mut out = Vec::new();
    for (series, members) in consistent_groups(inputs) {
        let per_image: Vec<Vec<Ranked>> = members
            .iter()
            .map(|(image, state, _)| candidates(inputs, image, state, &series))
            .collect();
        let floor = group_floor(&members);
        let images: Vec<&str> = members.iter().map(|(i, _, _)| i.as_str()).collect();
        let common = common_tags(&per_image);
        let above_floor = |r: &&&Ranked| floor.as_ref().is_none_or(|f| r.is_newer_than(f));
        // The floor's own tag is deployed in the group already: catching up to it
        // needs no wait.
        let chosen = common.iter().find(|r| {
            floor.as_ref().is_some_and(|f| r.tag == f.tag)
                || (above_floor(r) && images.iter().all(|i| old_enough(inputs, i, &r.tag)))
        });
        // The newest common tag above the floor, when it is too young to be chosen.
        let young = common
            .iter()
            .find(above_floor)
            .filter(|y| chosen.is_none_or(|c| y.is_newer_than(c)));
        for (image, _, current) in &members {
            let outcome = match (chosen, young) {
                (Some(r), None) if r.tag == current.tag => Outcome::UpToDate,
                (Some(r), _)
                    if r.tag != current.tag
                        && (r.is_newer_than(current)
                            || floor.as_ref().is_some_and(|f| f.tag == r.tag)) =>
                {
                    Outcome::Bump(r.tag.clone())
                }
                (_, Some(y)) => waiting(inputs, &images, &y.tag),
                _ => consistent_shortfall(inputs, &series, &members, &per_image, floor.as_ref()),
            };
            out.push(Decision {
                image: (*image).clone(),
                series: series.clone(),
                current: current.tag.clone(),
                outcome,
            });
        }
    }
    out
}

/// Why a consistent group cannot move: up to date, or which image lacks the newest tag.
fn consistent_shortfall(
    inputs: &Inputs<'_>,
    series: &Series,
    members: &[Member<'_>],
    per_image: &[Vec<Ranked>],
    floor: Option<&Ranked>,
) -> Outcome {
    let newest = per_image
        .iter()
        .filter_map(|c| c.first())
        .filter(|r| floor.is_none_or(|f| r.is_newer_than(f)))
        .max_by(|a, b| a.cmp_newness(b));
    match newest {
        None if per_image.iter().any(|c| !c.is_empty()) => Outcome::UpToDate,
        None => Outcome::NoCandidate(no_candidate_reason(inputs, series)),
        Some(newest) => {
            let lacking: Vec<&str> = members
                .iter()
                .zip(per_image)
                .filter(|(_, c)| !c.iter().any(|r| r.tag == newest.tag))
                .map(|((image, _, _), _)| image.as_str())
                .collect();
            Outcome::NoCandidate(format!(
                "no tag newer than {} exists for every image of series {}: the newest, {}, is missing for {}",
                floor.map_or("the current version", |f| f.tag.as_str()),
                series.label(),
                newest.tag,
                lacking.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_prefix_covers_every_repository_on_that_registry_only() {
        let mut policy = World::semver(None, false).policy;
        policy.prefix = Some("localhost:5000/".parse().unwrap());
        let r = |s: &str| ImageRef::parse(s).unwrap();
        assert!(covers(&policy, &r("localhost:5000/app:1.0.0")));
        assert!(covers(&policy, &r("localhost:5000/team/app:1.0.0")));
        assert!(!covers(&policy, &r("localhost:5001/app:1.0.0")));
        assert!(!covers(&policy, &r("localhost/app:1.0.0")));
        assert!(!covers(&policy, &r("app:1.0.0")));
    }
    use crate::policy::v1alpha1::{DateShaPolicy, Order, RegexPolicy, SemverPolicy};

    /// A fixture: `World::new(policy).image(name, current, available)…`.
    struct World {
        policy: ImagePolicy,
        images: BTreeMap<String, ImageState>,
        bad: BTreeSet<(String, String)>,
        proven: Option<BTreeSet<(String, String)>>,
        built: HashMap<(String, String), DateTime<Utc>>,
        ages: HashMap<(String, String), DateTime<Utc>>,
        now: DateTime<Utc>,
    }

    impl World {
        fn new(tags: TagPolicy) -> Self {
            Self {
                policy: ImagePolicy {
                    prefix: Some("gcr.io/k8s-prow/".parse().unwrap()),
                    name: None,
                    tags,
                    consistent: false,
                    pin_digest: false,
                    exclude_tags: Vec::new(),
                    source_repo: None,
                    min_age: None,
                    credentials: None,
                },
                images: BTreeMap::new(),
                bad: BTreeSet::new(),
                proven: None,
                built: HashMap::new(),
                ages: HashMap::new(),
                now: "2024-03-01T12:00:00Z".parse().unwrap(),
            }
        }
        fn semver(range: Option<&str>, prerelease: bool) -> Self {
            Self::new(TagPolicy::Semver(SemverPolicy {
                range: range.map(|r| r.parse().unwrap()),
                prerelease,
            }))
        }
        fn date_sha() -> Self {
            Self::new(TagPolicy::DateSha(DateShaPolicy {}))
        }
        fn consistent(mut self) -> Self {
            self.policy.consistent = true;
            self
        }
        fn exclude(mut self, glob: &str) -> Self {
            self.policy.exclude_tags.push(glob.parse().unwrap());
            self
        }
        fn image(mut self, name: &str, current: &[&str], available: &[&str]) -> Self {
            self.images.insert(
                name.into(),
                ImageState {
                    current: current.iter().map(ToString::to_string).collect(),
                    available: available.iter().map(ToString::to_string).collect(),
                },
            );
            self
        }
        fn bad(mut self, image: &str, tag: &str) -> Self {
            self.bad.insert((image.into(), tag.into()));
            self
        }
        fn proven(mut self, image: &str, tag: &str) -> Self {
            self.proven
                .get_or_insert_with(BTreeSet::new)
                .insert((image.into(), tag.into()));
            self
        }
        fn built(mut self, image: &str, tag: &str, at: &str) -> Self {
            self.built
                .insert((image.into(), tag.into()), at.parse().unwrap());
            self
        }
        fn inputs(&self) -> Inputs<'_> {
            Inputs {
                policy: &self.policy,
                images: &self.images,
                bad: &self.bad,
                proven: self.proven.as_ref(),
                build_times: &self.built,
                ages: &self.ages,
                now: self.now,
            }
        }
        fn min_age(mut self, text: &str) -> Self {
            self.policy.min_age = Some(text.parse().unwrap());
            self
        }
        /// `image:tag` has existed for `hours`.
        fn aged(mut self, image: &str, tag: &str, hours: i64) -> Self {
            self.ages.insert(
                (image.into(), tag.into()),
                self.now - TimeDelta::hours(hours),
            );
            self
        }
        /// `(image, series label, current, outcome)` rows.
        fn decide(&self) -> Vec<(String, String, String, String)> {
            select(&self.inputs())
                .into_iter()
                .map(|d| {
                    let outcome = match d.outcome {
                        Outcome::Bump(t) => format!("bump {t}"),
                        Outcome::UpToDate => "up to date".into(),
                        Outcome::Waiting { tag, age, min_age } => format!(
                            "wait {tag} {}h/{}h",
                            age.map_or(-1, |a| a.num_hours()),
                            min_age.num_hours()
                        ),
                        Outcome::NoCandidate(why) => format!("none: {why}"),
                    };
                    (d.image, d.series.label(), d.current, outcome)
                })
                .collect()
        }
        fn outcomes(&self) -> Vec<String> {
            self.decide().into_iter().map(|r| r.3).collect()
        }
    }

    #[test]
    fn semver_table() {
        let cases: &[(World, &[&str])] = &[
            (
                World::semver(None, false).image(
                    "a",
                    &["1.2.3"],
                    &["1.2.3", "1.3.0", "1.10.0", "latest"],
                ),
                &["bump 1.10.0"],
            ),
            (
                World::semver(None, false).image("a", &["v1.2.3"], &["v1.2.3", "v1.2.4"]),
                &["bump v1.2.4"],
            ),
            (
                World::semver(Some(">=1.0.0, <2.0.0"), false).image(
                    "a",
                    &["1.2.3"],
                    &["1.3.0", "2.0.0"],
                ),
                &["bump 1.3.0"],
            ),
            (
                World::semver(None, false).image("a", &["1.2.3"], &["1.3.0-rc.1", "1.2.3"]),
                &["up to date"],
            ),
            (
                World::semver(None, true).image("a", &["1.2.3"], &["1.3.0-rc.1", "1.2.3"]),
                &["bump 1.3.0-rc.1"],
            ),
            (
                World::semver(Some("^1"), true).image("a", &["1.2.3"], &["1.3.0-rc.1"]),
                &["bump 1.3.0-rc.1"],
            ),
            // Never older or equal.
            (
                World::semver(None, false).image("a", &["2.0.0"], &["1.9.0", "2.0.0"]),
                &["up to date"],
            ),
            // Floating tags are not a series: nothing moves.
            (
                World::semver(None, false).image("a", &["latest"], &["1.0.0"]),
                &[],
            ),
            // Signature tags and exclusions.
            (
                World::semver(None, false).exclude("*.99").image(
                    "a",
                    &["1.0.0"],
                    &["1.0.99", "sha256-abc.sig", "1.0.5"],
                ),
                &["bump 1.0.5"],
            ),
        ];
        for (i, (world, want)) in cases.iter().enumerate() {
            assert_eq!(world.outcomes(), *want, "case {i}");
        }
    }

    #[test]
    fn bad_versions_are_never_proposed() {
        let w = World::semver(None, false)
            .image("a", &["1.0.0"], &["1.0.0", "1.1.0", "1.2.0"])
            .bad("a", "1.2.0");
        assert_eq!(w.outcomes(), ["bump 1.1.0"]);
        let w = World::semver(None, false)
            .image("a", &["1.0.0"], &["1.2.0"])
            .bad("a", "1.2.0");
        assert_eq!(
            w.outcomes(),
            [
                "none: the registry has no acceptable semver tags (after exclusions and bad versions)"
            ]
        );
    }

    #[test]
    fn date_sha_variants_are_separate_series() {
        let w = World::date_sha().image(
            "gcr.io/k8s-prow/hook",
            &[
                "v20240101-aaaaaaa",
                "v20240101-aaaaaaa-master",
                "latest-master",
            ],
            &[
                "v20240101-aaaaaaa",
                "v20240105-bbbbbbb",
                "v20240103-ccccccc-master",
                "v20240109-ddddddd-canary",
                "latest",
            ],
        );
        assert_eq!(
            w.decide(),
            [
                (
                    "gcr.io/k8s-prow/hook".into(),
                    "(no suffix)".into(),
                    "v20240101-aaaaaaa".into(),
                    "bump v20240105-bbbbbbb".into()
                ),
                (
                    "gcr.io/k8s-prow/hook".into(),
                    "-master".into(),
                    "v20240101-aaaaaaa-master".into(),
                    "bump v20240103-ccccccc-master".into()
                ),
            ]
        );
    }

    #[test]
    fn date_sha_ties_are_broken_by_build_time() {
        let w = World::date_sha().image(
            "x",
            &["v20240101-aaaaaaa"],
            &["v20240102-bbbbbbb", "v20240102-ccccccc"],
        );
        let mut needed = build_times_needed(&w.inputs());
        needed.sort();
        assert_eq!(
            needed,
            [
                ("x".to_owned(), "v20240102-bbbbbbb".to_owned()),
                ("x".to_owned(), "v20240102-ccccccc".to_owned())
            ]
        );
        let w = w
            .built("x", "v20240102-bbbbbbb", "2024-01-02T18:00:00Z")
            .built("x", "v20240102-ccccccc", "2024-01-02T09:00:00Z");
        assert!(build_times_needed(&w.inputs()).is_empty());
        assert_eq!(w.outcomes(), ["bump v20240102-bbbbbbb"]);

        // A same-day tag is newer than the current one only with evidence.
        let w = World::date_sha().image("x", &["v20240102-aaaaaaa"], &["v20240102-bbbbbbb"]);
        assert_eq!(w.outcomes(), ["up to date"]);
        let w = w
            .built("x", "v20240102-aaaaaaa", "2024-01-02T08:00:00Z")
            .built("x", "v20240102-bbbbbbb", "2024-01-02T10:00:00Z");
        assert_eq!(w.outcomes(), ["bump v20240102-bbbbbbb"]);
    }

    #[test]
    fn regex_orders_by_the_extracted_group() {
        let mut w = World::new(TagPolicy::Regex(RegexPolicy {
            pattern: r"^build-(?P<n>\d+)$".parse().unwrap(),
            extract: Some("n".into()),
            order: Order::Numerical,
        }));
        w = w.image(
            "docs",
            &["build-9"],
            &["build-9", "build-10", "build-2", "nightly"],
        );
        assert_eq!(w.outcomes(), ["bump build-10"]);
        let mut w = World::new(TagPolicy::Regex(RegexPolicy {
            pattern: r"^(?P<v>[a-z]+)-stable$".parse().unwrap(),
            extract: Some("v".into()),
            order: Order::Alphabetical,
        }));
        w = w.image(
            "app",
            &["bionic-stable"],
            &["focal-stable", "jammy-stable", "bionic"],
        );
        assert_eq!(w.outcomes(), ["bump jammy-stable"]);
    }

    #[test]
    fn consistent_prefix_moves_to_the_newest_common_tag() {
        let w = World::date_sha()
            .consistent()
            .image(
                "p/hook",
                &["v20240101-aaaaaaa"],
                &["v20240103-ccccccc", "v20240105-eeeeeee"],
            )
            .image("p/tide", &["v20240101-aaaaaaa"], &["v20240103-ccccccc"]);
        assert_eq!(
            w.outcomes(),
            ["bump v20240103-ccccccc", "bump v20240103-ccccccc"]
        );

        // No common newer tag: the reason names the image that lacks the newest.
        let w = World::date_sha()
            .consistent()
            .image("p/hook", &["v20240101-aaaaaaa"], &["v20240105-eeeeeee"])
            .image("p/tide", &["v20240101-aaaaaaa"], &["v20240101-aaaaaaa"]);
        let outcomes = w.outcomes();
        assert_eq!(outcomes.len(), 2);
        for o in outcomes {
            assert_eq!(
                o,
                "none: no tag newer than v20240101-aaaaaaa exists for every image of series (no suffix): the newest, v20240105-eeeeeee, is missing for p/tide"
            );
        }

        // An image behind the others catches up; nothing moves below the newest current.
        let w = World::date_sha()
            .consistent()
            .image(
                "p/hook",
                &["v20240103-ccccccc"],
                &["v20240101-aaaaaaa", "v20240103-ccccccc"],
            )
            .image(
                "p/tide",
                &["v20240101-aaaaaaa"],
                &["v20240101-aaaaaaa", "v20240103-ccccccc"],
            );
        assert_eq!(w.outcomes(), ["up to date", "bump v20240103-ccccccc"]);

        // All up to date.
        let w = World::date_sha()
            .consistent()
            .image("p/hook", &["v20240103-ccccccc"], &["v20240103-ccccccc"])
            .image("p/tide", &["v20240103-ccccccc"], &["v20240103-ccccccc"]);
        assert_eq!(w.outcomes(), ["up to date", "up to date"]);
    }

    #[test]
    fn consistent_never_proposes_a_bad_version_for_any_image() {
        let w = World::date_sha()
            .consistent()
            .image(
                "p/hook",
                &["v20240101-aaaaaaa"],
                &["v20240103-ccccccc", "v20240102-bbbbbbb"],
            )
            .image(
                "p/tide",
                &["v20240101-aaaaaaa"],
                &["v20240103-ccccccc", "v20240102-bbbbbbb"],
            )
            .bad("p/tide", "v20240103-ccccccc");
        assert_eq!(
            w.outcomes(),
            ["bump v20240102-bbbbbbb", "bump v20240102-bbbbbbb"]
        );
    }

    /// Docker Hub schemes (tag lists written by hand from hub.docker.com/_/nginx,
    /// /_/python, /_/node, /_/postgres, /_/redis, /_/golang, /_/busybox): each
    /// reference moves within its own variant and length.
    #[test]
    #[allow(clippy::too_many_lines)] // one table of real schemes reads best in one piece
    fn variants_and_lengths_are_separate_series() {
        let nginx = [
            "1.25.3",
            "1.25.3-alpine",
            "1.25.3-alpine-slim",
            "1.25.3-bookworm",
            "1.26.0",
            "1.26.0-alpine",
            "1.26.0-alpine-slim",
            "1.26.0-bookworm",
            "1.26",
            "1.26-alpine",
            "1",
            "mainline",
            "alpine",
            "stable-alpine",
            "1.27.0-rc1-alpine",
        ];
        let w = World::semver(None, false).image(
            "nginx",
            &[
                "1.25.3",
                "1.25.3-alpine",
                "1.25.3-alpine-slim",
                "1.25.3-bookworm",
                "alpine",
            ],
            &nginx,
        );
        assert_eq!(
            w.decide()
                .into_iter()
                .map(|r| (r.1, r.2, r.3))
                .collect::<Vec<_>>(),
            [
                ("semver".into(), "1.25.3".into(), "bump 1.26.0".into()),
                (
                    "N.N.N-alpine".into(),
                    "1.25.3-alpine".into(),
                    "bump 1.26.0-alpine".into()
                ),
                (
                    "N.N.N-alpine-slim".into(),
                    "1.25.3-alpine-slim".into(),
                    "bump 1.26.0-alpine-slim".into()
                ),
                (
                    "N.N.N-bookworm".into(),
                    "1.25.3-bookworm".into(),
                    "bump 1.26.0-bookworm".into()
                ),
            ]
        );
        let cases: &[(World, &[&str])] = &[
            (
                World::semver(None, false).image(
                    "python",
                    &["3.11.6-slim-bookworm"],
                    &[
                        "3.12.1",
                        "3.12.1-slim",
                        "3.12.1-slim-bookworm",
                        "3.13.0rc1-slim-bookworm",
                        "slim-bookworm",
                    ],
                ),
                &["bump 3.12.1-slim-bookworm"],
            ),
            (
                World::semver(None, true).image(
                    "python",
                    &["3.12.1-slim-bookworm"],
                    &[
                        "3.12.1-slim-bookworm",
                        "3.13.0rc1-slim-bookworm",
                        "3.13.0rc1",
                    ],
                ),
                &["bump 3.13.0rc1-slim-bookworm"],
            ),
            (
                World::semver(None, false).image(
                    "node",
                    &["20.10.0-alpine3.18"],
                    &[
                        "20.11.0",
                        "20.11.0-alpine3.19",
                        "20.11.0-alpine3.18",
                        "20-alpine3.18",
                        "21.0.0-alpine3.19",
                    ],
                ),
                &["bump 20.11.0-alpine3.18"],
            ),
            (
                World::semver(None, false).image(
                    "postgres",
                    &["16.1-alpine"],
                    &[
                        "16.1-alpine",
                        "16.2-alpine",
                        "16.2",
                        "16-alpine",
                        "17rc1-alpine",
                        "16.2-bookworm",
                    ],
                ),
                &["bump 16.2-alpine"],
            ),
            (
                World::semver(Some("<17"), true).image(
                    "postgres",
                    &["16.1-alpine"],
                    &["16.2-alpine", "17.0-alpine", "17rc1-alpine"],
                ),
                &["bump 16.2-alpine"],
            ),
            (
                World::semver(None, false).image(
                    "redis",
                    &["7.2.3-alpine"],
                    &["7.2.4", "7.2.4-alpine", "7.4-rc2-alpine", "7.2-alpine"],
                ),
                &["bump 7.2.4-alpine"],
            ),
            (
                World::semver(None, false).image(
                    "busybox",
                    &["1.36.1-musl"],
                    &[
                        "1.36.1-glibc",
                        "1.37.0-glibc",
                        "1.37.0-uclibc",
                        "1.36.1-musl",
                    ],
                ),
                &["up to date"],
            ),
            (
                World::semver(None, false).image(
                    "traefik",
                    &["v2.10.7"],
                    &["2.11.0", "v2.10.7", "v2.11"],
                ),
                &["up to date"],
            ),
            // A plain reference never moves to a suffixed tag, nor three parts to two.
            (
                World::semver(None, false).image(
                    "golang",
                    &["1.21.5"],
                    &["1.22-alpine", "1.22", "1.22.0-bookworm"],
                ),
                &[
                    "none: the registry has no acceptable semver tags (after exclusions and bad versions)",
                ],
            ),
        ];
        for (i, (world, want)) in cases.iter().enumerate() {
            assert_eq!(world.outcomes(), *want, "case {i}");
        }
    }

    /// Promotion: production (`~1.1` here) takes the newest version of its own series
    /// that staging proved, even when staging proved newer ones outside it; with
    /// nothing proven newer it is up to date, and with nothing proven at all it says so.
    #[test]
    fn promotion_takes_the_newest_proven_version_of_the_policys_own_series() {
        let w = World::semver(Some("~1.1"), false)
            .image(
                "a",
                &["1.1.0"],
                &["1.1.0", "1.1.1", "1.1.2", "1.2.0", "1.3.0"],
            )
            .proven("a", "1.1.1")
            .proven("a", "1.3.0");
        assert_eq!(w.outcomes(), ["bump 1.1.1"]);
        let w = World::semver(None, false)
            .image("a", &["1.1.0"], &["1.1.0", "1.2.0", "1.3.0"])
            .proven("a", "1.1.0")
            .proven("a", "1.3.0")
            .bad("a", "1.3.0");
        assert_eq!(w.outcomes(), ["up to date"]);
        let w = World::semver(None, false)
            .image("a", &["1.0.0"], &["1.0.0", "1.2.0"])
            .proven("b", "1.2.0");
        let out = w.outcomes();
        assert!(
            out[0].starts_with("none: no semver tags proven upstream yet"),
            "{out:?}"
        );
    }

    /// `consistent` with promotion: the group moves to the newest tag proven for every
    /// member, never to one proven for only some of them.
    #[test]
    fn promotion_moves_a_consistent_group_only_to_a_version_proven_for_all() {
        let w = World::date_sha()
            .consistent()
            .image(
                "p/hook",
                &["v20240101-aaaaaaa"],
                &[
                    "v20240101-aaaaaaa",
                    "v20240102-bbbbbbb",
                    "v20240103-ccccccc",
                ],
            )
            .image(
                "p/tide",
                &["v20240101-aaaaaaa"],
                &[
                    "v20240101-aaaaaaa",
                    "v20240102-bbbbbbb",
                    "v20240103-ccccccc",
                ],
            )
            .proven("p/hook", "v20240102-bbbbbbb")
            .proven("p/tide", "v20240102-bbbbbbb")
            .proven("p/hook", "v20240103-ccccccc");
        assert_eq!(
            w.outcomes(),
            ["bump v20240102-bbbbbbb", "bump v20240102-bbbbbbb"]
        );
    }

    #[test]
    fn a_bad_variant_says_nothing_about_the_plain_version() {
        let w = World::semver(None, false)
            .image(
                "nginx",
                &["1.25.3", "1.25.3-alpine"],
                &["1.26.0", "1.26.0-alpine", "1.25.4-alpine"],
            )
            .bad("nginx", "1.26.0-alpine");
        assert_eq!(w.outcomes(), ["bump 1.26.0", "bump 1.25.4-alpine"]);
    }

    #[test]
    fn consistent_works_per_series() {
        let w = World::semver(None, false)
            .consistent()
            .image(
                "p/api",
                &["1.25.3", "1.25.3-alpine"],
                &["1.26.0", "1.26.0-alpine", "1.27.0"],
            )
            .image(
                "p/web",
                &["1.25.3", "1.25.3-alpine"],
                &["1.26.0", "1.27.0-alpine", "1.26.0-alpine"],
            );
        assert_eq!(
            w.decide()
                .into_iter()
                .map(|r| format!("{} {}: {}", r.0, r.2, r.3))
                .collect::<Vec<_>>(),
            [
                "p/api 1.25.3: bump 1.26.0",
                "p/web 1.25.3: bump 1.26.0",
                "p/api 1.25.3-alpine: bump 1.26.0-alpine",
                "p/web 1.25.3-alpine: bump 1.26.0-alpine",
            ]
        );
    }

    #[test]
    fn min_age_waits_for_young_tags_and_takes_an_older_one() {
        let base = || {
            World::semver(None, false).min_age("72h").image(
                "nginx",
                &["1.25.3-alpine"],
                &["1.25.3-alpine", "1.25.4-alpine", "1.26.0-alpine"],
            )
        };
        // Ages unknown: the newest newer candidate's age is needed first, then the next.
        let w = base();
        assert_eq!(
            ages_needed(&w.inputs()),
            [("nginx".to_owned(), "1.26.0-alpine".to_owned())]
        );
        assert_eq!(w.outcomes(), ["wait 1.26.0-alpine -1h/72h"]);
        let w = base().aged("nginx", "1.26.0-alpine", 5);
        assert_eq!(
            ages_needed(&w.inputs()),
            [("nginx".to_owned(), "1.25.4-alpine".to_owned())]
        );
        // The newest is 5h old; the older one is 10 days old and is taken.
        let w = w.aged("nginx", "1.25.4-alpine", 240);
        assert!(ages_needed(&w.inputs()).is_empty());
        assert_eq!(w.outcomes(), ["bump 1.25.4-alpine"]);
        // Both young: wait, naming the newest.
        let w = base()
            .aged("nginx", "1.26.0-alpine", 5)
            .aged("nginx", "1.25.4-alpine", 71);
        assert_eq!(w.outcomes(), ["wait 1.26.0-alpine 5h/72h"]);
        // Old enough: exactly minAge counts; only the newest was looked up.
        let w = base().aged("nginx", "1.26.0-alpine", 72);
        assert!(ages_needed(&w.inputs()).is_empty());
        assert_eq!(w.outcomes(), ["bump 1.26.0-alpine"]);
        // Nothing newer: no age is needed and the image is up to date.
        let w = World::semver(None, false).min_age("72h").image(
            "nginx",
            &["1.26.0-alpine"],
            &["1.25.4-alpine", "1.26.0-alpine"],
        );
        assert!(ages_needed(&w.inputs()).is_empty());
        assert_eq!(w.outcomes(), ["up to date"]);
        // `minAge: 0s` waits for nothing and reads no age.
        let w = World::semver(None, false)
            .min_age("0s")
            .image("nginx", &["1.25.3"], &["1.26.0"]);
        assert!(ages_needed(&w.inputs()).is_empty());
        assert_eq!(w.outcomes(), ["bump 1.26.0"]);
        // Without minAge ages are never needed.
        let w = World::semver(None, false).image("nginx", &["1.25.3"], &["1.26.0"]);
        assert!(ages_needed(&w.inputs()).is_empty());
    }

    #[test]
    fn min_age_in_a_consistent_group_waits_for_every_member() {
        let w = World::semver(None, false)
            .consistent()
            .min_age("1d")
            .image("p/api", &["1.0.0"], &["1.0.0", "1.1.0", "1.2.0"])
            .image("p/web", &["1.0.0"], &["1.0.0", "1.1.0", "1.2.0"]);
        assert_eq!(
            ages_needed(&w.inputs()),
            [
                ("p/api".to_owned(), "1.2.0".to_owned()),
                ("p/web".to_owned(), "1.2.0".to_owned())
            ]
        );
        let w = w
            .aged("p/api", "1.2.0", 48)
            .aged("p/web", "1.2.0", 3)
            .aged("p/api", "1.1.0", 100)
            .aged("p/web", "1.1.0", 100);
        assert!(ages_needed(&w.inputs()).is_empty());
        assert_eq!(w.outcomes(), ["bump 1.1.0", "bump 1.1.0"]);
        let w = World::semver(None, false)
            .consistent()
            .min_age("1d")
            .image("p/api", &["1.1.0"], &["1.1.0", "1.2.0"])
            .image("p/web", &["1.1.0"], &["1.1.0", "1.2.0"])
            .aged("p/api", "1.2.0", 48)
            .aged("p/web", "1.2.0", 3);
        assert_eq!(w.outcomes(), ["wait 1.2.0 3h/24h", "wait 1.2.0 3h/24h"]);
    }
}
