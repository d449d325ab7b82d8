//! Resolving a policy's images to the versions they should move to (does I/O through
//! a [`Registry`]; every decision is [`crate::core::select`]'s).
//!
//! Per image policy: the images are the repository's current references that the
//! policy covers (a `prefix` discovers them; no registry catalog is needed); each is
//! asked for its tags once, build times are read only to break same-day `dateSha`
//! ties and, with `minAge`, for candidates newer than the deployed version (newest
//! first, only until one is old enough), and digests only for tags about to be pinned.
//! Build times and digests are cached by `(image, tag)` until [`Resolver::invalidate`]
//! is called for the image (a registry push notification does that), so a poll where
//! nothing changed costs one tag-list request per image and nothing else.
//!
//! **The age of a tag** (for `minAge`) counts from its build time, the image config's
//! `created`, when that is plausible: present, not before 2000-01-01 and at most five
//! minutes ahead of `now`. Otherwise it counts from when this resolver first listed
//! the tag. Reproducible builds (ko, Bazel, nix) write `created` as 1970-01-01 or leave
//! it out; taken at face value they would look decades old and skip the wait, so they
//! wait `minAge` from first sight instead. Images with a real build time are judged by
//! it, so a fresh start never stalls them. The first-listed times live in memory:
//! after a restart a tag without a plausible build time waits `minAge` again from the
//! first listing after the restart (a delay, never an early deploy). A failed config
//! read counts as "no plausible build time" for that poll and is tried again next
//! poll.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use futures::future::join_all;

use crate::core::promotion::Admission;
use crate::core::reference::ImageRef;
use crate::core::rewrite::DigestTag;
use crate::core::select::{self, ImageState, Inputs, Outcome};
use crate::core::tags::{self, Series};
use crate::policy::v1alpha1::ImagePolicy;
use crate::registry::{Registry, RegistryError};

/// The result for one image and series.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resolution {
    /// The image, as the repository writes it (e.g. `nginx`).
    pub image: String,
    /// The canonical repository (e.g. `docker.io/library/nginx`).
    pub canonical: String,
    /// The series label (`-master`, `semver`, …).
    pub series: String,
    /// The current version in the repository.
    pub current: String,
    /// What to do.
    #[serde(flatten)]
    pub outcome: Resolved,
    /// Digest-only references (`repo@sha256:…`) of this image and series, with
    /// `pinDigest`: the tag each digest is the digest of, as the registry lists it.
    /// A bump's [`crate::core::rewrite::Plan`] needs them
    /// ([`crate::core::rewrite::Plan::with_digest_tags`]) to move those references.
    #[serde(rename = "digestTags", skip_serializing_if = "Vec::is_empty")]
    pub digest_tags: Vec<DigestTag>,
}

/// The outcome of resolving one image and series.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Resolved {
    /// Move to `tag` (pinned to `digest` when the policy asks).
    Bump {
        /// The new tag.
        tag: String,
        /// Its digest, with `pinDigest`.
        #[serde(skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
    /// Already at the newest acceptable version.
    UpToDate,
    /// A newer acceptable version exists but is younger than `minAge`.
    #[serde(rename_all = "camelCase")]
    Waiting {
        /// The newest such tag.
        tag: String,
        /// Its age in seconds (`None`: unknown).
        age_seconds: Option<i64>,
        /// The policy's `minAge` in seconds.
        min_age_seconds: i64,
    },
    /// Nothing acceptable, and why.
    NoCandidate {
        /// Why.
        reason: String,
    },
    /// The registry could not be read.
    RegistryError {
        /// What failed.
        error: String,
        /// Whether trying again later may help.
        retryable: bool,
    },
}

impl Resolved {
    /// One line for people: `-> 1.26.0-alpine`, `up to date`,
    /// `waiting: 1.26.0-alpine is 5h old, minAge 72h`, `nothing chosen: …`,
    /// `registry error: …`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Bump {
                tag,
                digest: Some(d),
            } => format!("-> {tag}@{d}"),
            Self::Bump { tag, digest: None } => format!("-> {tag}"),
            Self::UpToDate => "up to date".to_owned(),
            Self::Waiting {
                tag,
                age_seconds: Some(age),
                min_age_seconds,
            } => format!(
                "waiting: {tag} is {} old, minAge {}",
                duration_text(*age, false),
                duration_text(*min_age_seconds, true)
            ),
            Self::Waiting {
                tag,
                age_seconds: None,
                min_age_seconds,
            } => format!(
                "waiting: the age of {tag} is unknown, minAge {}",
                duration_text(*min_age_seconds, true)
            ),
            Self::NoCandidate { reason } => format!("nothing chosen: {reason}"),
            Self::RegistryError { error, .. } => format!("registry error: {error}"),
        }
    }
}

/// `secs` in whole hours (`5h`, `72h`), or minutes or seconds below an hour; `exact`
/// writes the remainder too (`1h30m`) instead of rounding down.
fn duration_text(secs: i64, exact: bool) -> String {
    let secs = secs.max(0);
    if !exact {
        return match secs {
            s if s >= 3600 => format!("{}h", s / 3600),
            s if s >= 60 => format!("{}m", s / 60),
            s => format!("{s}s"),
        };
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            write!(out, "{n}{unit}").expect("writing to a String");
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// The earliest build time taken at face value; anything before is a placeholder
/// (1970-01-01 from reproducible builds).
const PLAUSIBLE_SINCE: &str = "2000-01-01T00:00:00Z";

/// How far ahead of `now` a build time may be (clock skew between builder and us).
const FUTURE_SKEW_SECS: i64 = 300;

/// Whether a config's `created` is a real build time at `now`.
fn plausible(created: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let floor: DateTime<Utc> = PLAUSIBLE_SINCE.parse().expect("valid timestamp");
    created >= floor && created <= now + chrono::TimeDelta::seconds(FUTURE_SKEW_SECS)
}

/// `(canonical image, tag)`.
type ImageTag = (String, String);

/// Resolves images against a registry, caching what does not change under a tag.
pub struct Resolver<R> {
    registry: R,
    listed: Mutex<HashMap<String, BTreeSet<String>>>,
    digests: Mutex<HashMap<(String, String), String>>,
    /// Config `created` times read (`None`: the config has none).
    build_times: Mutex<HashMap<ImageTag, Option<DateTime<Utc>>>>,
    /// When each tag was first listed (kept for images with `minAge`, for the tags
    /// the registry still lists).
    first_seen: Mutex<HashMap<String, HashMap<String, DateTime<Utc>>>>,
}

/// One image covered by an image policy: its canonical name, how the repo writes it,
/// the tags its references use and the digests of its digest-only references.
struct Covered {
    reference: ImageRef,
    current: Vec<String>,
    digests: Vec<String>,
}

/// How many of an image's newest tags are asked for their digest to find the tags of
/// its digest-only references (one manifest `HEAD` each, cached): a digest older
/// than that many releases is reported, not looked for further.
pub const MAX_DIGEST_LOOKUPS: usize = 50;

impl<R: Registry> Resolver<R> {
    /// A resolver with empty caches.
    pub fn new(registry: R) -> Self {
        Self {
            registry,
            listed: Mutex::new(HashMap::new()),
            digests: Mutex::new(HashMap::new()),
            build_times: Mutex::new(HashMap::new()),
            first_seen: Mutex::new(HashMap::new()),
        }
    }

    /// The registry (for its statistics).
    pub fn registry(&self) -> &R {
        &self.registry
    }

    /// Whether the last tag list read for `canonical` had `tag`: `false` when the
    /// image was never listed or its last read failed. (The controller resolves every
    /// image of a policy before checking its PR, so within a reconcile this is that
    /// reconcile's listing, never an older one that may still hold a deleted tag.)
    pub fn registry_has(&self, canonical: &str, tag: &str) -> bool {
        lock(&self.listed)
            .get(canonical)
            .is_some_and(|tags| tags.contains(tag))
    }

    /// The digest of `canonical:tag` as this resolver last read it from the registry
    /// (for a tag it pinned), unless a push to the image made it forget it since
    /// (`None`: not read). A digest nobody read from the registry is never taken on
    /// trust.
    pub fn known_digest(&self, canonical: &str, tag: &str) -> Option<String> {
        lock(&self.digests)
            .get(&(canonical.to_owned(), tag.to_owned()))
            .cloned()
    }

    /// Forgets cached digests and build times of `canonical` (after a push to it).
    pub fn invalidate(&self, canonical: &str) {
        lock(&self.digests).retain(|(image, _), _| image != canonical);
        lock(&self.build_times).retain(|(image, _), _| image != canonical);
    }

    /// Resolves one image policy against the repository's current references at
    /// `now`. `bad` holds `(canonical image, tag)` pairs recorded as bad.
    pub async fn resolve(
        &self,
        policy: &ImagePolicy,
        references: &[ImageRef],
        bad: &BTreeSet<(String, String)>,
        now: DateTime<Utc>,
    ) -> Vec<Resolution> {
        let admission = Admission {
            bad: bad.clone(),
            ..Admission::default()
        };
        self.resolve_admitted(policy, references, &admission, now)
            .await
    }

    /// [`Self::resolve`] offering only the versions `admission` admits (not bad; with
    /// promotion, proven upstream).
    pub async fn resolve_admitted(
        &self,
        policy: &ImagePolicy,
        references: &[ImageRef],
        admission: &Admission,
        now: DateTime<Utc>,
    ) -> Vec<Resolution> {
        let covered = covered_images(policy, references);
        let listed = join_all(covered.values().map(|c| self.registry.tags(&c.reference))).await;
        let mut images = BTreeMap::new();
        let mut failed: BTreeMap<String, RegistryError> = BTreeMap::new();
        for ((canonical, c), tags) in covered.iter().zip(listed) {
            match tags {
                Ok(available) => {
                    lock(&self.listed)
                        .insert(canonical.clone(), available.iter().cloned().collect());
                    if policy.required_age().is_some() {
                        self.note_first_seen(canonical, &available, now);
                    }
                    images.insert(
                        canonical.clone(),
                        ImageState {
                            current: c.current.clone(),
                            available,
                        },
                    );
                }
                Err(e) => {
                    // What the registry listed before may be gone since: nothing is
                    // checked against an old listing (see `registry_has`).
                    lock(&self.listed).remove(canonical);
                    failed.insert(canonical.clone(), e);
                }
            }
        }
        // A consistent group cannot be decided with a member missing.
        if policy.consistent && !failed.is_empty() {
            let errors: Vec<String> = failed.values().map(ToString::to_string).collect();
            let retryable = failed.values().all(RegistryError::is_retryable);
            return covered
                .iter()
                .flat_map(|(canonical, c)| {
                    series_of(policy, &c.current)
                        .into_iter()
                        .map(|series| Resolution {
                            image: c.reference.repository.clone(),
                            canonical: canonical.clone(),
                            series: series.label(),
                            current: newest_label(&c.current),
                            outcome: Resolved::RegistryError {
                                error: errors.join("; "),
                                retryable,
                            },
                            digest_tags: Vec::new(),
                        })
                })
                .collect();
        }

        let (digest_tags, mut out) = if policy.pin_digest {
            self.resolve_digests(policy, &covered, &mut images).await
        } else {
            (Vec::new(), Vec::new())
        };
        let decisions = self.decide(policy, &images, admission, &covered, now).await;
        for d in decisions {
            let reference = &covered[&d.image].reference;
            let outcome = match d.outcome {
                Outcome::Bump(tag) if policy.pin_digest => {
                    match self.digest(reference, &d.image, &tag).await {
                        Ok(digest) => Resolved::Bump {
                            tag,
                            digest: Some(digest),
                        },
                        Err(e) => Resolved::RegistryError {
                            retryable: e.is_retryable(),
                            error: e.to_string(),
                        },
                    }
                }
                Outcome::Bump(tag) => Resolved::Bump { tag, digest: None },
                Outcome::UpToDate => Resolved::UpToDate,
                Outcome::Waiting { tag, age, min_age } => Resolved::Waiting {
                    tag,
                    age_seconds: age.map(|a| a.num_seconds()),
                    min_age_seconds: min_age.num_seconds(),
                },
                Outcome::NoCandidate(reason) => Resolved::NoCandidate { reason },
            };
            out.push(Resolution {
                image: reference.repository.clone(),
                digest_tags: digest_tags_of(policy, &digest_tags, &d.image, &d.series),
                canonical: d.image,
                series: d.series.label(),
                current: d.current,
                outcome,
            });
        }
        out.extend(failed_resolutions(policy, &covered, failed));
        out.sort_by(|a, b| (&a.canonical, &a.series).cmp(&(&b.canonical, &b.series)));
        out
    }

    /// With `pinDigest`: the tags of the digests of digest-only references (added
    /// to the images' current tags, so selection sees their series), and a
    /// resolution for each digest no tag has and each image whose digests could not
    /// be read.
    async fn resolve_digests(
        &self,
        policy: &ImagePolicy,
        covered: &BTreeMap<String, Covered>,
        images: &mut BTreeMap<String, ImageState>,
    ) -> (Vec<DigestTag>, Vec<Resolution>) {
        let mut out = Vec::new();
        let mut digest_tags: Vec<DigestTag> = Vec::new();
        for (canonical, c) in covered.iter().filter(|(_, c)| !c.digests.is_empty()) {
            let Some(state) = images.get_mut(canonical) else {
                continue;
            };
            match self
                .tags_of_digests(policy, c, canonical, &state.available)
                .await
            {
                Ok((found, missing)) => {
                    for d in &found {
                        if !state.current.contains(&d.tag) {
                            state.current.push(d.tag.clone());
                        }
                    }
                    digest_tags.extend(found);
                    out.extend(missing.into_iter().map(|digest| Resolution {
                        image: c.reference.repository.clone(),
                        canonical: canonical.clone(),
                        series: "digest".to_owned(),
                        current: format!("@{digest}"),
                        outcome: Resolved::NoCandidate {
                            reason: format!(
                                "{digest} is the digest of none of the {} newest tags the \
                                 policy accepts; a digest-only reference moves only from a \
                                 digest the registry lists under a tag (never guessed)",
                                MAX_DIGEST_LOOKUPS.min(state.available.len())
                            ),
                        },
                        digest_tags: Vec::new(),
                    }));
                }
                Err(e) => out.push(Resolution {
                    image: c.reference.repository.clone(),
                    canonical: canonical.clone(),
                    series: "digest".to_owned(),
                    current: digests_label(&c.digests),
                    outcome: Resolved::RegistryError {
                        error: e.to_string(),
                        retryable: e.is_retryable(),
                    },
                    digest_tags: Vec::new(),
                }),
            }
        }
        (digest_tags, out)
    }

    /// Records `now` as the first sight of every tag of `canonical` not seen before,
    /// and forgets tags the registry no longer lists (so the record stays as large as
    /// the tag list).
    fn note_first_seen(&self, canonical: &str, available: &[String], now: DateTime<Utc>) {
        let mut seen = lock(&self.first_seen);
        let seen = seen.entry(canonical.to_owned()).or_default();
        let listed: BTreeSet<&String> = available.iter().collect();
        seen.retain(|tag, _| listed.contains(tag));
        for tag in available {
            seen.entry(tag.clone()).or_insert(now);
        }
    }

    /// Runs selection, first fetching the build times it needs to break ties and the
    /// ages `minAge` needs.
    async fn decide(
        &self,
        policy: &ImagePolicy,
        images: &BTreeMap<String, ImageState>,
        admission: &Admission,
        covered: &BTreeMap<String, Covered>,
        now: DateTime<Utc>,
    ) -> Vec<select::Decision> {
        let none = HashMap::new();
        let base = Inputs {
            policy,
            images,
            bad: &admission.bad,
            proven: admission.proven.as_ref(),
            build_times: &none,
            ages: &none,
            now,
        };
        let mut ages = HashMap::new();
        let mut build_times = self.known_build_times();
        let needed = select::build_times_needed(&Inputs {
            build_times: &build_times,
            ..base
        });
        for (key, created) in needed.iter().zip(self.created(covered, &needed).await) {
            // An image without a build time stays unknown: the tie is then broken
            // conservatively (see `select`), never by guessing.
            if let Ok(Some(created)) = created {
                build_times.insert(key.clone(), created);
            }
        }
        loop {
            let needed = select::ages_needed(&Inputs {
                build_times: &build_times,
                ages: &ages,
                ..base
            });
            if needed.is_empty() {
                break;
            }
            let read = self.created(covered, &needed).await;
            let seen = lock(&self.first_seen);
            for ((image, tag), created) in needed.into_iter().zip(read) {
                let since = match created {
                    Ok(Some(created)) if plausible(created, now) => created,
                    _ => seen
                        .get(&image)
                        .and_then(|tags| tags.get(&tag))
                        .copied()
                        .unwrap_or(now),
                };
                ages.insert((image, tag), since);
            }
        }
        select::select(&Inputs {
            build_times: &build_times,
            ages: &ages,
            ..base
        })
    }

    /// The build times read so far.
    fn known_build_times(&self) -> HashMap<(String, String), DateTime<Utc>> {
        lock(&self.build_times)
            .iter()
            .filter_map(|(k, v)| v.map(|v| (k.clone(), v)))
            .collect()
    }

    /// The config `created` of each `(image, tag)`, from the cache or the registry
    /// (concurrently); what was read is cached, a failure is not.
    async fn created(
        &self,
        covered: &BTreeMap<String, Covered>,
        keys: &[(String, String)],
    ) -> Vec<Result<Option<DateTime<Utc>>, ()>> {
        let cached: Vec<Option<Option<DateTime<Utc>>>> = {
            let cache = lock(&self.build_times);
            keys.iter().map(|k| cache.get(k).copied()).collect()
        };
        let read = join_all(
            keys.iter()
                .zip(&cached)
                .map(|((image, tag), hit)| async move {
                    if let Some(hit) = hit {
                        return Ok(*hit);
                    }
                    let reference = &covered.get(image).ok_or(())?.reference;
                    self.registry.created(reference, tag).await.map_err(|_| ())
                }),
        )
        .await;
        let mut cache = lock(&self.build_times);
        for (key, result) in keys.iter().zip(&read) {
            if let Ok(created) = result {
                cache.insert(key.clone(), *created);
            }
        }
        read
    }

    /// The tags whose digests the digests of `c`'s digest-only references are:
    /// the newest tags the policy accepts are read newest first (at most
    /// [`MAX_DIGEST_LOOKUPS`], each digest read once and cached) until every digest
    /// has a tag. Returns the tags found and the digests no tag read has.
    async fn tags_of_digests(
        &self,
        policy: &ImagePolicy,
        c: &Covered,
        canonical: &str,
        available: &[String],
    ) -> Result<(Vec<DigestTag>, Vec<String>), RegistryError> {
        let mut candidates: Vec<(tags::Key, &String)> = available
            .iter()
            .filter(|t| select::tag_allowed(policy, t))
            .filter_map(|t| tags::key(&policy.tags, t).map(|k| (k, t)))
            .collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let mut missing: Vec<String> = c.digests.clone();
        let mut found = Vec::new();
        for (_, tag) in candidates.into_iter().take(MAX_DIGEST_LOOKUPS) {
            if missing.is_empty() {
                break;
            }
            let digest = self.digest(&c.reference, canonical, tag).await?;
            if let Some(i) = missing.iter().position(|d| *d == digest) {
                missing.remove(i);
                found.push(DigestTag {
                    image: c.reference.repository.clone(),
                    digest,
                    tag: tag.clone(),
                });
            }
        }
        Ok((found, missing))
    }

    async fn digest(
        &self,
        reference: &ImageRef,
        canonical: &str,
        tag: &str,
    ) -> Result<String, RegistryError> {
        let key = (canonical.to_owned(), tag.to_owned());
        if let Some(d) = lock(&self.digests).get(&key) {
            return Ok(d.clone());
        }
        let digest = self.registry.digest(reference, tag).await?;
        lock(&self.digests).insert(key, digest.clone());
        Ok(digest)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a cache lock leaves a usable cache.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The canonical form of an image policy's prefix (`acme/` → `docker.io/acme/`).
fn canonical_prefix(prefix: &str) -> Option<String> {
    let probe = ImageRef::parse(&format!("{prefix}x"))?.canonical_repository();
    probe.strip_suffix('x').map(str::to_owned)
}

/// The images `policy` covers among `references`, keyed by canonical repository.
fn covered_images(policy: &ImagePolicy, references: &[ImageRef]) -> BTreeMap<String, Covered> {
    let prefix = policy
        .prefix
        .as_ref()
        .and_then(|p| canonical_prefix(p.as_str()));
    let name = policy
        .name
        .as_ref()
        .and_then(|n| ImageRef::parse(n.as_str()))
        .map(|r| r.canonical_repository());
    let mut out: BTreeMap<String, Covered> = BTreeMap::new();
    for r in references {
        let canonical = r.canonical_repository();
        let covered = prefix
            .as_ref()
            .is_some_and(|p| canonical.starts_with(p.as_str()))
            || name.as_ref().is_some_and(|n| *n == canonical);
        if !covered {
            continue;
        }
        let entry = out.entry(canonical).or_insert_with(|| Covered {
            reference: r.with_version(None, None),
            current: Vec::new(),
            digests: Vec::new(),
        });
        if let Some(tag) = &r.tag
            && !entry.current.contains(tag)
        {
            entry.current.push(tag.clone());
        }
        if let (None, Some(digest)) = (&r.tag, &r.digest)
            && !entry.digests.contains(digest)
        {
            entry.digests.push(digest.clone());
        }
    }
    out
}

/// The digest tags of `canonical` in `series`.
fn digest_tags_of(
    policy: &ImagePolicy,
    all: &[DigestTag],
    canonical: &str,
    series: &Series,
) -> Vec<DigestTag> {
    all.iter()
        .filter(|t| {
            ImageRef::parse(&t.image).is_some_and(|r| r.canonical_repository() == canonical)
                && tags::series(&policy.tags, &t.tag).as_ref() == Some(series)
        })
        .cloned()
        .collect()
}

/// A registry error resolution for each series (and the digest-only references,
/// with `pinDigest`) of each image whose tags could not be listed.
fn failed_resolutions(
    policy: &ImagePolicy,
    covered: &BTreeMap<String, Covered>,
    failed: BTreeMap<String, RegistryError>,
) -> Vec<Resolution> {
    let mut out = Vec::new();
    for (canonical, e) in failed {
        let c = &covered[&canonical];
        let mut labels: Vec<(String, String)> = series_of(policy, &c.current)
            .into_iter()
            .map(|s| (s.label(), newest_label(&c.current)))
            .collect();
        if policy.pin_digest && !c.digests.is_empty() {
            labels.push(("digest".to_owned(), digests_label(&c.digests)));
        }
        for (series, current) in labels {
            out.push(Resolution {
                image: c.reference.repository.clone(),
                canonical: canonical.clone(),
                series,
                current,
                outcome: Resolved::RegistryError {
                    error: e.to_string(),
                    retryable: e.is_retryable(),
                },
                digest_tags: Vec::new(),
            });
        }
    }
    out
}

fn series_of(policy: &ImagePolicy, current: &[String]) -> BTreeSet<Series> {
    current
        .iter()
        .filter_map(|t| crate::core::tags::series(&policy.tags, t))
        .collect()
}

fn newest_label(current: &[String]) -> String {
    current.join(", ")
}

fn digests_label(digests: &[String]) -> String {
    digests
        .iter()
        .map(|d| format!("@{d}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry whose tag list is set by the test (`None`: unreachable).
    struct Fake(Mutex<Option<Vec<String>>>);

    impl Registry for Fake {
        async fn tags(&self, image: &ImageRef) -> Result<Vec<String>, RegistryError> {
            lock(&self.0).clone().ok_or_else(|| RegistryError::Server {
                registry: image.registry().to_owned(),
                image: image.canonical_repository(),
                status: 503,
                attempts: 3,
            })
        }

        async fn digest(&self, image: &ImageRef, tag: &str) -> Result<String, RegistryError> {
            match lock(&self.0).as_ref() {
                Some(tags) if tags.iter().any(|t| t == tag) => Ok(digest_of(tag)),
                _ => Err(RegistryError::NotFound {
                    registry: image.registry().to_owned(),
                    image: image.canonical_repository(),
                    what: format!("manifest {tag}"),
                }),
            }
        }

        async fn created(
            &self,
            _image: &ImageRef,
            _tag: &str,
        ) -> Result<Option<DateTime<Utc>>, RegistryError> {
            Ok(None)
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn waiting_is_described_in_hours() {
        let w = |age, min| Resolved::Waiting {
            tag: "1.26.0-alpine".into(),
            age_seconds: age,
            min_age_seconds: min,
        };
        assert_eq!(
            w(Some(5 * 3600 + 59 * 60), 72 * 3600).describe(),
            "waiting: 1.26.0-alpine is 5h old, minAge 72h"
        );
        assert_eq!(
            w(Some(42), 90 * 60).describe(),
            "waiting: 1.26.0-alpine is 42s old, minAge 1h30m"
        );
        assert_eq!(
            w(None, 3 * 86_400).describe(),
            "waiting: the age of 1.26.0-alpine is unknown, minAge 72h"
        );
    }

    #[test]
    fn only_real_build_times_are_plausible() {
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        assert!(!plausible(at("1970-01-01T00:00:00Z"), now()));
        assert!(!plausible(at("1999-12-31T23:59:59Z"), now()));
        assert!(plausible(at("2026-11-20T10:00:00Z"), now()));
        assert!(plausible(at("2026-12-01T12:04:00Z"), now()));
        assert!(!plausible(at("2026-12-01T13:00:00Z"), now()));
    }

    /// The fake's digest of `tag`: its last hex digit repeated.
    fn digest_of(tag: &str) -> String {
        format!("sha256:{}", tag[tag.len() - 1..].repeat(64))
    }

    fn image_policy(pin: bool) -> ImagePolicy {
        let text = format!(
            "images: [{{prefix: gcr.io/k8s-prow/, tags: {{dateSha: {{}}}}, pinDigest: {pin}}}]\nsource: {{repo: https://github.com/acme/infra.git}}\n"
        );
        let docs = crate::policy::yaml::parse_documents(&text).unwrap();
        let spec: crate::policy::v1alpha1::AutobumpSpec =
            crate::policy::yaml::from_node(&docs[0], &crate::policy::yaml::Path::root()).unwrap();
        spec.images[0].clone()
    }

    #[tokio::test]
    async fn a_failed_listing_forgets_the_previous_one() {
        let hook = "gcr.io/k8s-prow/hook";
        let references = [ImageRef::parse(&format!("{hook}:v20240101-aaaaaaa")).unwrap()];
        let listing = vec![
            "v20240101-aaaaaaa".to_owned(),
            "v20240102-bbbbbbb".to_owned(),
        ];
        let resolver = Resolver::new(Fake(Mutex::new(Some(listing))));
        let policy = image_policy(false);
        resolver
            .resolve(&policy, &references, &BTreeSet::new(), now())
            .await;
        assert!(resolver.registry_has(hook, "v20240102-bbbbbbb"));
        assert!(!resolver.registry_has(hook, "v20240103-ccccccc"));
        assert!(!resolver.registry_has("gcr.io/k8s-prow/deck", "v20240102-bbbbbbb"));

        // The tag is deleted, then the registry cannot be read: the old listing no
        // longer vouches for it.
        *lock(&resolver.registry.0) = None;
        let out = resolver
            .resolve(&policy, &references, &BTreeSet::new(), now())
            .await;
        assert!(
            matches!(
                out[0].outcome,
                Resolved::RegistryError {
                    retryable: true,
                    ..
                }
            ),
            "{out:?}"
        );
        assert!(!resolver.registry_has(hook, "v20240102-bbbbbbb"));
        assert!(!resolver.registry_has(hook, "v20240101-aaaaaaa"));

        *lock(&resolver.registry.0) = Some(vec!["v20240101-aaaaaaa".to_owned()]);
        resolver
            .resolve(&policy, &references, &BTreeSet::new(), now())
            .await;
        assert!(resolver.registry_has(hook, "v20240101-aaaaaaa"));
        assert!(!resolver.registry_has(hook, "v20240102-bbbbbbb"));
    }

    #[tokio::test]
    async fn only_digests_read_from_the_registry_are_known() {
        let hook = "gcr.io/k8s-prow/hook";
        let references = [ImageRef::parse(&format!("{hook}:v20240101-aaaaaaa")).unwrap()];
        let listing = vec![
            "v20240101-aaaaaaa".to_owned(),
            "v20240102-bbbbbbb".to_owned(),
        ];
        let resolver = Resolver::new(Fake(Mutex::new(Some(listing))));
        // Without pinning nothing is read: no digest is known, not even a listed tag's.
        resolver
            .resolve(&image_policy(false), &references, &BTreeSet::new(), now())
            .await;
        assert_eq!(resolver.known_digest(hook, "v20240102-bbbbbbb"), None);
        // Pinning reads the digest of the tag it proposes, and only that one.
        let out = resolver
            .resolve(&image_policy(true), &references, &BTreeSet::new(), now())
            .await;
        let pinned = digest_of("v20240102-bbbbbbb");
        assert_eq!(
            out[0].outcome,
            Resolved::Bump {
                tag: "v20240102-bbbbbbb".into(),
                digest: Some(pinned.clone())
            }
        );
        assert_eq!(
            resolver.known_digest(hook, "v20240102-bbbbbbb"),
            Some(pinned)
        );
        assert_eq!(resolver.known_digest(hook, "v20240101-aaaaaaa"), None);
        // A push to the image may have moved the tag: the digest is read again.
        resolver.invalidate(hook);
        assert_eq!(resolver.known_digest(hook, "v20240102-bbbbbbb"), None);
    }

    /// Knative's release manifests pin images by digest alone
    /// (github.com/knative/serving/releases, `serving-core.yaml`:
    /// `image: gcr.io/knative-releases/knative.dev/serving/cmd/controller@sha256:…`).
    #[tokio::test]
    async fn digest_only_references_resolve_through_the_tags_that_carry_them() {
        let hook = "gcr.io/k8s-prow/hook";
        let old = digest_of("v20240101-aaaaaaa");
        let unknown = format!("sha256:{}", "c".repeat(64));
        let references = [
            ImageRef::parse(&format!("{hook}@{old}")).unwrap(),
            ImageRef::parse(&format!("gcr.io/k8s-prow/deck@{unknown}")).unwrap(),
        ];
        let listing = vec![
            "v20240101-aaaaaaa".to_owned(),
            "v20240102-bbbbbbb".to_owned(),
            "latest".to_owned(),
        ];
        let resolver = Resolver::new(Fake(Mutex::new(Some(listing))));
        // Without pinDigest a digest-only reference is not looked at.
        let out = resolver
            .resolve(&image_policy(false), &references, &BTreeSet::new(), now())
            .await;
        assert!(out.is_empty(), "{out:?}");

        let out = resolver
            .resolve(&image_policy(true), &references, &BTreeSet::new(), now())
            .await;
        assert_eq!(out.len(), 2, "{out:?}");
        let deck = &out[0];
        assert_eq!(
            (deck.series.as_str(), deck.image.as_str()),
            ("digest", "gcr.io/k8s-prow/deck")
        );
        assert!(
            matches!(&deck.outcome, Resolved::NoCandidate { reason } if reason.contains(&unknown) && reason.contains("never guessed")),
            "{deck:?}"
        );
        let hook_out = &out[1];
        assert_eq!(
            hook_out.outcome,
            Resolved::Bump {
                tag: "v20240102-bbbbbbb".into(),
                digest: Some(digest_of("v20240102-bbbbbbb")),
            }
        );
        assert_eq!(hook_out.current, "v20240101-aaaaaaa");
        assert_eq!(
            hook_out.digest_tags,
            [DigestTag {
                image: hook.into(),
                digest: old.clone(),
                tag: "v20240101-aaaaaaa".into(),
            }]
        );
        let json = serde_json::to_value(hook_out).unwrap();
        assert_eq!(json["digestTags"][0]["tag"], "v20240101-aaaaaaa", "{json}");
    }
}
