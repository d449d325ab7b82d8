//! Which container images belong to a release, whether they run its version, and
//! what to set them to (pure).
//!
//! Repositories are compared canonically (`nginx` is `docker.io/library/nginx`), and a
//! rewritten image keeps the registry and repository spelling it had: only the tag and
//! digest change.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::PodSpec;

use super::Patched;
use super::status::WorkloadId;
use crate::core::reference::ImageRef;
use crate::policy::v1alpha1::Release;

/// A version of one image: a tag, and a digest when the release pins one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The tag.
    pub tag: String,
    /// The digest (`sha256:…`), when pinned.
    pub digest: Option<String>,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag)?;
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// How a container image relates to a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageCheck {
    /// Not one of the release's repositories (or not an image reference at all).
    NotInRelease,
    /// One of the release's repositories, at the release's version.
    AtVersion,
    /// One of the release's repositories at another version; `want` is the release's.
    Other {
        /// The release's version of this repository.
        want: Version,
    },
}

/// A release's versions by canonical repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseImages {
    by_repository: BTreeMap<String, Version>,
}

impl ReleaseImages {
    /// The release's images. Should a release name one repository twice (two
    /// spellings of it), the first entry wins.
    #[must_use]
    pub fn new(release: &Release) -> Self {
        let mut by_repository = BTreeMap::new();
        for image in &release.images {
            by_repository
                .entry(canonical(&image.image))
                .or_insert_with(|| Version {
                    tag: image.tag.clone(),
                    digest: image.digest.clone(),
                });
        }
        Self { by_repository }
    }

    /// Whether the release names no image.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_repository.is_empty()
    }

    /// The canonical repositories, comma-separated, for messages.
    #[must_use]
    pub fn repositories(&self) -> String {
        self.by_repository
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// How `image` (a container's `image` field) relates to the release.
    ///
    /// A container runs the release's version when its tag is the release's tag and,
    /// if the release pins a digest, its digest is that digest. A digest-only
    /// reference (`repo@sha256:…`) runs it when the digest is the pinned one.
    #[must_use]
    pub fn check(&self, image: &str) -> ImageCheck {
        let Some((reference, want)) = self.lookup(image) else {
            return ImageCheck::NotInRelease;
        };
        if runs(&reference, want) {
            ImageCheck::AtVersion
        } else {
            ImageCheck::Other { want: want.clone() }
        }
    }

    /// The image `image` should be set to, if it is one of the release's repositories
    /// at another version: the same repository as written, at the release's tag (and
    /// digest, when pinned; an old digest is dropped otherwise).
    #[must_use]
    pub fn retarget(&self, image: &str) -> Option<String> {
        let (reference, want) = self.lookup(image)?;
        if runs(&reference, want) {
            return None;
        }
        Some(
            reference
                .with_version(Some(&want.tag), want.digest.as_deref())
                .to_string(),
        )
    }

    fn lookup(&self, image: &str) -> Option<(ImageRef, &Version)> {
        let reference = ImageRef::parse(image)?;
        let want = self.by_repository.get(&reference.canonical_repository())?;
        Some((reference, want))
    }
}

/// Sets every container and init container image of `spec` that is one of the
/// release's repositories to the release's version ([`ReleaseImages::retarget`]) and
/// says what changed; nothing changes when all are right already.
pub fn retarget_pod_spec(
    workload: &WorkloadId,
    spec: &mut PodSpec,
    images: &ReleaseImages,
) -> Vec<Patched> {
    let init = spec.init_containers.iter_mut().flatten().map(|c| (c, true));
    let main = spec.containers.iter_mut().map(|c| (c, false));
    let mut changed = Vec::new();
    for (container, init) in init.chain(main) {
        let Some(from) = container.image.as_deref() else {
            continue;
        };
        if let Some(to) = images.retarget(from) {
            changed.push(Patched {
                workload: workload.clone(),
                container: container.name.clone(),
                init,
                from: from.to_owned(),
                to: to.clone(),
            });
            container.image = Some(to);
        }
    }
    changed
}

fn runs(reference: &ImageRef, want: &Version) -> bool {
    match (&want.digest, &reference.tag) {
        (Some(digest), None) => reference.digest.as_ref() == Some(digest),
        (Some(digest), Some(tag)) => *tag == want.tag && reference.digest.as_ref() == Some(digest),
        (None, tag) => tag.as_ref() == Some(&want.tag),
    }
}

/// The canonical repository of a release image (as written there), or the text itself
/// when it does not parse.
fn canonical(image: &str) -> String {
    ImageRef::parse(image).map_or_else(|| image.to_owned(), |r| r.canonical_repository())
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::policy::v1alpha1::ImageVersion;

    fn release(images: &[(&str, &str, Option<&str>)]) -> Release {
        Release {
            summary: "test".into(),
            images: images
                .iter()
                .map(|(image, tag, digest)| ImageVersion {
                    image: (*image).into(),
                    tag: (*tag).into(),
                    digest: digest.map(str::to_owned),
                })
                .collect(),
            since: DateTime::UNIX_EPOCH,
            commit: None,
        }
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn checks_compare_repositories_canonically() {
        let images = ReleaseImages::new(&release(&[
            ("nginx", "1.1.0", None),
            ("gcr.io/k8s-prow/hook", "v2", None),
        ]));
        let want = Version {
            tag: "1.1.0".into(),
            digest: None,
        };
        for (image, expected) in [
            ("nginx:1.1.0", ImageCheck::AtVersion),
            ("docker.io/library/nginx:1.1.0", ImageCheck::AtVersion),
            ("docker.io/nginx:1.1.0", ImageCheck::AtVersion),
            ("index.docker.io/library/nginx:1.1.0", ImageCheck::AtVersion),
            (
                "docker.io/library/nginx:1.0.0",
                ImageCheck::Other { want: want.clone() },
            ),
            ("nginx", ImageCheck::Other { want: want.clone() }),
            // A digest the release does not pin does not matter.
            (
                &format!("nginx:1.1.0@{}", digest('a')),
                ImageCheck::AtVersion,
            ),
            ("gcr.io/k8s-prow/hook:v2", ImageCheck::AtVersion),
            ("gcr.io/k8s-prow/deck:v2", ImageCheck::NotInRelease),
            ("quay.io/library/nginx:1.1.0", ImageCheck::NotInRelease),
            ("Not An Image!", ImageCheck::NotInRelease),
        ] {
            assert_eq!(images.check(image), expected, "{image}");
        }
        assert!(!images.is_empty());
        assert_eq!(
            images.repositories(),
            "docker.io/library/nginx, gcr.io/k8s-prow/hook"
        );
    }

    #[test]
    fn a_pinned_digest_must_match() {
        let images = ReleaseImages::new(&release(&[(
            "docker.io/library/nginx",
            "1.1.0",
            Some(&digest('b')),
        )]));
        let want = Version {
            tag: "1.1.0".into(),
            digest: Some(digest('b')),
        };
        for (image, expected) in [
            (
                format!("nginx:1.1.0@{}", digest('b')),
                ImageCheck::AtVersion,
            ),
            (format!("nginx@{}", digest('b')), ImageCheck::AtVersion),
            (
                format!("nginx:1.1.0@{}", digest('a')),
                ImageCheck::Other { want: want.clone() },
            ),
            (
                "nginx:1.1.0".into(),
                ImageCheck::Other { want: want.clone() },
            ),
            (
                format!("nginx@{}", digest('a')),
                ImageCheck::Other { want: want.clone() },
            ),
            // The right digest under another tag is not the release's version.
            (
                format!("nginx:1.0.0@{}", digest('b')),
                ImageCheck::Other { want: want.clone() },
            ),
        ] {
            assert_eq!(images.check(&image), expected, "{image}");
        }
        assert_eq!(
            want.to_string(),
            format!("1.1.0@{}", digest('b')),
            "versions print as tag@digest"
        );
    }

    #[test]
    fn retarget_keeps_the_spelling() {
        let images = ReleaseImages::new(&release(&[
            ("docker.io/library/nginx", "1.1.0", Some(&digest('b'))),
            ("localhost:5000/team/web", "v2", None),
        ]));
        let pinned = format!("1.1.0@{}", digest('b'));
        for (image, expected) in [
            ("nginx:1.0.0", Some(format!("nginx:{pinned}"))),
            (
                "docker.io/library/nginx:1.0.0",
                Some(format!("docker.io/library/nginx:{pinned}")),
            ),
            ("nginx", Some(format!("nginx:{pinned}"))),
            (&format!("nginx:{pinned}"), None),
            (
                "localhost:5000/team/web:v1",
                Some("localhost:5000/team/web:v2".into()),
            ),
            // An old digest is dropped when the release pins none.
            (
                &format!("localhost:5000/team/web:v1@{}", digest('c')),
                Some("localhost:5000/team/web:v2".into()),
            ),
            ("localhost:5000/team/web:v2", None),
            ("busybox:1.36", None),
        ] {
            assert_eq!(images.retarget(image), expected, "{image}");
        }
    }

    #[test]
    fn retarget_pod_spec_changes_only_release_images() {
        let images = ReleaseImages::new(&release(&[("nginx", "1.1.0", None)]));
        let workload = WorkloadId {
            kind: crate::policy::v1alpha1::WorkloadKind::Deployment,
            namespace: "prod".into(),
            name: "web".into(),
        };
        let mut spec: PodSpec = serde_json::from_value(serde_json::json!({
            "initContainers": [{"name": "migrate", "image": "docker.io/nginx:1.0.0"}],
            "containers": [
                {"name": "web", "image": "nginx:1.0.0"},
                {"name": "sidecar", "image": "busybox:1.36"},
                {"name": "done", "image": "nginx:1.1.0"},
                {"name": "bare"},
            ],
        }))
        .unwrap();
        let changed = retarget_pod_spec(&workload, &mut spec, &images);
        let summary: Vec<_> = changed
            .iter()
            .map(|p| (p.container.as_str(), p.init, p.from.as_str(), p.to.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "migrate",
                    true,
                    "docker.io/nginx:1.0.0",
                    "docker.io/nginx:1.1.0"
                ),
                ("web", false, "nginx:1.0.0", "nginx:1.1.0"),
            ]
        );
        assert!(changed.iter().all(|p| p.workload == workload));
        let images_now: Vec<_> = spec.containers.iter().map(|c| c.image.as_deref()).collect();
        assert_eq!(
            images_now,
            [
                Some("nginx:1.1.0"),
                Some("busybox:1.36"),
                Some("nginx:1.1.0"),
                None
            ]
        );
        assert!(retarget_pod_spec(&workload, &mut spec, &images).is_empty());
    }

    #[test]
    fn first_spelling_of_a_repository_wins() {
        let images = ReleaseImages::new(&release(&[
            ("nginx", "2", None),
            ("docker.io/library/nginx", "3", None),
        ]));
        assert_eq!(images.check("nginx:2"), ImageCheck::AtVersion);
        assert!(ReleaseImages::new(&release(&[])).is_empty());
    }
}
