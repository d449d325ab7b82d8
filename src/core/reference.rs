//! Image references: `[host[:port]/]path[:tag][@sha256:hex]` (pure).
//!
//! A reference keeps the repository exactly as written (`nginx`, `gcr.io/k8s-prow/hook`)
//! because that is what a rewrite must preserve; [`ImageRef::canonical_repository`]
//! gives the normalised name the registry knows it by (`docker.io/library/nginx`), and
//! [`ImageRef::registry`] / [`ImageRef::path`] split it for the registry client.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// The repository as written (`nginx`, `localhost:5000/app`, `gcr.io/k8s-prow/hook`).
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The digest (`sha256:…`), if any.
    pub digest: Option<String>,
}

static REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?/)?[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$",
    )
    .expect("valid regex")
});
/// A tag: `[\w][\w.-]{0,127}`. The length is counted apart ([`TAG_MAX_CHARS`]): the
/// bounded repetition of the Unicode class `\w` compiled to about 15 MB of automata.
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[\w][\w.-]*$").expect("valid regex"));
/// The most characters a tag has.
const TAG_MAX_CHARS: usize = 128;
static DIGEST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^sha256:[0-9a-f]{64}$").expect("valid regex"));

impl ImageRef {
    /// Parses a reference. Returns `None` for text that is not one.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) if DIGEST.is_match(d) => (r, Some(d.to_owned())),
            Some(_) => return None,
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match rest[slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[slash + i + 1..];
                if tag.chars().count() > TAG_MAX_CHARS || !TAG.is_match(tag) {
                    return None;
                }
                (&rest[..slash + i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if !REPOSITORY.is_match(repository) {
            return None;
        }
        Some(Self {
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    /// The registry host (`docker.io` when the reference names none).
    #[must_use]
    pub fn registry(&self) -> &str {
        match self.split_host() {
            Some((host, _)) => host,
            None => DOCKER_HUB,
        }
    }

    /// The repository path inside the registry (`library/nginx` for `nginx`).
    #[must_use]
    pub fn path(&self) -> String {
        match self.split_host() {
            Some((DOCKER_HUB | "index.docker.io", path)) if !path.contains('/') => {
                format!("library/{path}")
            }
            Some((_, path)) => path.to_owned(),
            None if !self.repository.contains('/') => format!("library/{}", self.repository),
            None => self.repository.clone(),
        }
    }

    /// `registry/path`, the same for every spelling of one repository
    /// (`nginx`, `docker.io/nginx` and `docker.io/library/nginx` all give the last).
    #[must_use]
    pub fn canonical_repository(&self) -> String {
        let registry = match self.registry() {
            "index.docker.io" => DOCKER_HUB,
            r => r,
        };
        format!("{registry}/{}", self.path())
    }

    fn split_host(&self) -> Option<(&str, &str)> {
        let (first, rest) = self.repository.split_once('/')?;
        (first.contains('.') || first.contains(':') || first == "localhost")
            .then_some((first, rest))
    }

    /// The same repository at another tag and digest.
    #[must_use]
    pub fn with_version(&self, tag: Option<&str>, digest: Option<&str>) -> Self {
        Self {
            repository: self.repository.clone(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The API host for a registry name (Docker Hub's references say `docker.io`, its API
/// lives at `registry-1.docker.io`).
#[must_use]
pub fn api_host(registry: &str) -> &str {
    match registry {
        DOCKER_HUB | "index.docker.io" => DOCKER_HUB_API,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for (text, repo, tag, has_digest, registry, path) in [
            ("nginx", "nginx", None, false, "docker.io", "library/nginx"),
            (
                "nginx:1.25",
                "nginx",
                Some("1.25"),
                false,
                "docker.io",
                "library/nginx",
            ),
            (
                "docker.io/nginx:1",
                "docker.io/nginx",
                Some("1"),
                false,
                "docker.io",
                "library/nginx",
            ),
            (
                "acme/app:v1",
                "acme/app",
                Some("v1"),
                false,
                "docker.io",
                "acme/app",
            ),
            (
                "localhost:5000/app:v2",
                "localhost:5000/app",
                Some("v2"),
                false,
                "localhost:5000",
                "app",
            ),
            (
                "127.0.0.1:5000/a/b",
                "127.0.0.1:5000/a/b",
                None,
                false,
                "127.0.0.1:5000",
                "a/b",
            ),
            (
                "gcr.io/k8s-prow/hook:v20240101-abc1234",
                "gcr.io/k8s-prow/hook",
                Some("v20240101-abc1234"),
                false,
                "gcr.io",
                "k8s-prow/hook",
            ),
            (
                &format!("ghcr.io/a/b:1.2.3@{digest}"),
                "ghcr.io/a/b",
                Some("1.2.3"),
                true,
                "ghcr.io",
                "a/b",
            ),
            (
                &format!("ghcr.io/a/b@{digest}"),
                "ghcr.io/a/b",
                None,
                true,
                "ghcr.io",
                "a/b",
            ),
        ] {
            let r = ImageRef::parse(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(r.repository, repo, "{text}");
            assert_eq!(r.tag.as_deref(), tag, "{text}");
            assert_eq!(r.digest.is_some(), has_digest, "{text}");
            assert_eq!(r.registry(), registry, "{text}");
            assert_eq!(r.path(), path, "{text}");
            assert_eq!(r.to_string(), text, "round trip");
        }
        assert_eq!(
            ImageRef::parse("nginx").unwrap().canonical_repository(),
            ImageRef::parse("docker.io/library/nginx")
                .unwrap()
                .canonical_repository()
        );
    }

    #[test]
    fn rejects_non_references() {
        for text in [
            "",
            "Nginx",
            "a b",
            "app:",
            "app@sha256:short",
            "http://x/y",
            "a//b",
            "x:1:2",
        ] {
            assert_eq!(ImageRef::parse(text), None, "{text}");
        }
    }

    /// A tag is a word character and up to 127 more word characters, dots and
    /// dashes (the distribution reference grammar).
    #[test]
    fn tags_are_at_most_128_characters() {
        let tag = |t: &str| ImageRef::parse(&format!("app:{t}")).and_then(|r| r.tag);
        let longest = format!("v{}", "1.-_".repeat(31) + "abc");
        assert_eq!(longest.chars().count(), 128);
        assert_eq!(tag(&longest), Some(longest.clone()));
        assert_eq!(tag(&format!("{longest}x")), None);
        // Counted in characters, as the regex counts them.
        let wide = "é".repeat(128);
        assert_eq!(tag(&wide), Some(wide.clone()));
        assert_eq!(tag(&format!("{wide}é")), None);
        for bad in ["-v1", ".v1", "v1/x", "v 1", "v1:2"] {
            assert_eq!(tag(bad), None, "{bad}");
        }
    }

    #[test]
    fn docker_hub_api_host() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("ghcr.io"), "ghcr.io");
    }
}
