//! Resolving a policy's images to the versions they should move to (does I/O through
//! a [`Registry`]; every decision is [`crate::core::select`]'s).
//!
//! Per image policy: the images are the repository's current references that the
//! policy covers (a `prefix` discovers them; no registry catalog is needed); each is
//! asked for its tags once, build times are read only to break same-day `dateSha`
//! ties, and digests only for tags about to be pinned. Build times and digests are
//! cached by `(image, tag)` until [`Resolver::invalidate`] is called for the image (a
//! registry push notification does that), so a poll where nothing changed costs one
//! tag-list request per image and nothing else.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use futures::future::join_all;

use crate::core::reference::ImageRef;
use crate::core::select::{self, ImageState, Inputs, Outcome};
use crate::core::tags::Series;
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

/// Resolves images against a registry, caching what does not change under a tag.
pub struct Resolver<R> {
    registry: R,
    listed: Mutex<HashMap<String, BTreeSet<String>>>,
    digests: Mutex<HashMap<(String, String), String>>,
    build_times: Mutex<HashMap<(String, String), DateTime<Utc>>>,
}

/// One image covered by an image policy: its canonical name, how the repo writes it,
/// and the tags its references use.
struct Covered {
    reference: ImageRef,
    current: Vec<String>,
}

impl<R: Registry> Resolver<R> {
    /// A resolver with empty caches.
    pub fn new(registry: R) -> Self {
        Self {
            registry,
            listed: Mutex::new(HashMap::new()),
            digests: Mutex::new(HashMap::new()),
            build_times: Mutex::new(HashMap::new()),
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

    /// Resolves one image policy against the repository's current references.
    /// `bad` holds `(canonical image, tag)` pairs recorded as bad.
    pub async fn resolve(
        &self,
        policy: &ImagePolicy,
        references: &[ImageRef],
        bad: &BTreeSet<(String, String)>,
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
                        })
                })
                .collect();
        }

        let decisions = self.decide(policy, &images, bad, &covered).await;
        let mut out = Vec::new();
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
                Outcome::NoCandidate(reason) => Resolved::NoCandidate { reason },
            };
            out.push(Resolution {
                image: reference.repository.clone(),
                canonical: d.image,
                series: d.series.label(),
                current: d.current,
                outcome,
            });
        }
        for (canonical, e) in failed {
            let c = &covered[&canonical];
            for series in series_of(policy, &c.current) {
                out.push(Resolution {
                    image: c.reference.repository.clone(),
                    canonical: canonical.clone(),
                    series: series.label(),
                    current: newest_label(&c.current),
                    outcome: Resolved::RegistryError {
                        error: e.to_string(),
                        retryable: e.is_retryable(),
                    },
                });
            }
        }
        out.sort_by(|a, b| (&a.canonical, &a.series).cmp(&(&b.canonical, &b.series)));
        out
    }

    /// Runs selection, first fetching the build times it needs to break ties.
    async fn decide(
        &self,
        policy: &ImagePolicy,
        images: &BTreeMap<String, ImageState>,
        bad: &BTreeSet<(String, String)>,
        covered: &BTreeMap<String, Covered>,
    ) -> Vec<select::Decision> {
        let mut build_times = lock(&self.build_times).clone();
        let needed = select::build_times_needed(&Inputs {
            policy,
            images,
            bad,
            build_times: &build_times,
        });
        let lookups = join_all(needed.iter().map(|(image, tag)| async move {
            let reference = &covered.get(image)?.reference;
            self.registry.created(reference, tag).await.ok().flatten()
        }))
        .await;
        {
            let mut cache = lock(&self.build_times);
            for (key, created) in needed.into_iter().zip(lookups) {
                // An image without a build time stays unknown: the tie is then broken
                // conservatively (see `select`), never by guessing.
                if let Some(created) = created {
                    cache.insert(key.clone(), created);
                    build_times.insert(key, created);
                }
            }
        }
        select::select(&Inputs {
            policy,
            images,
            bad,
            build_times: &build_times,
        })
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
        });
        if let Some(tag) = &r.tag
            && !entry.current.contains(tag)
        {
            entry.current.push(tag.clone());
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
            .resolve(&policy, &references, &BTreeSet::new())
            .await;
        assert!(resolver.registry_has(hook, "v20240102-bbbbbbb"));
        assert!(!resolver.registry_has(hook, "v20240103-ccccccc"));
        assert!(!resolver.registry_has("gcr.io/k8s-prow/deck", "v20240102-bbbbbbb"));

        // The tag is deleted, then the registry cannot be read: the old listing no
        // longer vouches for it.
        *lock(&resolver.registry.0) = None;
        let out = resolver
            .resolve(&policy, &references, &BTreeSet::new())
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
            .resolve(&policy, &references, &BTreeSet::new())
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
            .resolve(&image_policy(false), &references, &BTreeSet::new())
            .await;
        assert_eq!(resolver.known_digest(hook, "v20240102-bbbbbbb"), None);
        // Pinning reads the digest of the tag it proposes, and only that one.
        let out = resolver
            .resolve(&image_policy(true), &references, &BTreeSet::new())
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
}
