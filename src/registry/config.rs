//! Per-registry settings and credentials (pure, apart from
//! [`Credentials::from_docker_config_file`] reading a file).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use super::error::CredentialsError;
use crate::core::reference::DOCKER_HUB;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The default for a registry host: plain `http` for loopback registries
    /// (`localhost`, `127.0.0.1`, `[::1]`, any port), `https` for everything else.
    #[must_use]
    pub fn default_for(registry: &str) -> Self {
        let host = match registry.rsplit_once(':') {
            // `[::1]:5000` or `host:5000`; a bare `::1` has no brackets in refs.
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => registry,
        };
        match host {
            "localhost" | "127.0.0.1" | "[::1]" => Self::Http,
            _ => Self::Https,
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// When and how often failed requests are tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (1 = never retry).
    pub max_attempts: u32,
    /// First back-off step; doubled per retry, with jitter (see
    /// [`backoff_delay`](super::wire::backoff_delay)).
    pub base_backoff: Duration,
    /// Largest back-off step.
    pub max_backoff: Duration,
    /// Largest wait a `Retry-After` header can impose; a longer one is cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// Settings for one registry (or the defaults for all of them). Build with
/// `RegistryConfig::default()` and the chainable setters, or set the public fields.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Who to log in as (looked up by registry host).
    pub credentials: Credentials,
    /// A PEM file of extra trusted CA certificates (added to the system roots).
    pub ca_bundle: Option<PathBuf>,
    /// `None`: [`Scheme::default_for`] the host (http for loopback, https otherwise).
    pub scheme: Option<Scheme>,
    /// Requests per second to this registry (token bucket); `None`: unlimited.
    pub rate_limit: Option<f64>,
    /// How many requests may start back to back before the rate applies (≥ 1).
    pub burst: u32,
    /// Requests in flight to this registry at once.
    pub max_concurrency: usize,
    /// A whole request (connect, send, read the body) must finish within this: a
    /// registry that stalls or sends its body a byte at a time costs at most this per
    /// attempt.
    pub request_timeout: Duration,
    /// One call ([`tags`](super::Registry::tags) with every page,
    /// [`digest`](super::Registry::digest), [`created`](super::Registry::created)),
    /// with its retries, back-off and `Retry-After` waits, must finish within this;
    /// past it the call fails with
    /// [`RegistryError::Deadline`](super::RegistryError::Deadline) saying what it was
    /// doing. A wait that would end past it is not started.
    pub call_timeout: Duration,
    /// Connecting must finish within this (part of `request_timeout`).
    pub connect_timeout: Duration,
    /// Listing more tags than this fails with
    /// [`RegistryError::TooManyTags`](super::RegistryError::TooManyTags).
    pub max_tags: usize,
    /// The `n=` page size asked for when listing tags (registries may ignore it).
    pub page_size: usize,
    /// Listing tags reads at most this many pages; more fails with
    /// [`RegistryError::TooManyPages`](super::RegistryError::TooManyPages). A page
    /// that adds no tag not seen before ends the listing with an error too, so a
    /// registry whose `Link` always points somewhere new cannot keep a poll going.
    pub max_pages: usize,
    pub retry: RetryPolicy,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            credentials: Credentials::anonymous(),
            ca_bundle: None,
            scheme: None,
            rate_limit: None,
            burst: 1,
            max_concurrency: 8,
            request_timeout: Duration::from_secs(20),
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_tags: 10_000,
            page_size: 1000,
            max_pages: 1000,
            retry: RetryPolicy::default(),
        }
    }
}

impl RegistryConfig {
    #[must_use]
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    #[must_use]
    pub fn ca_bundle(mut self, pem_file: impl Into<PathBuf>) -> Self {
        self.ca_bundle = Some(pem_file.into());
        self
    }

    #[must_use]
    pub fn scheme(mut self, scheme: Scheme) -> Self {
        self.scheme = Some(scheme);
        self
    }

    /// Plain http for this registry (the `insecure` setting of other tools).
    #[must_use]
    pub fn insecure(self) -> Self {
        self.scheme(Scheme::Http)
    }

    #[must_use]
    pub fn rate_limit(mut self, per_second: f64, burst: u32) -> Self {
        self.rate_limit = Some(per_second);
        self.burst = burst.max(1);
        self
    }

    #[must_use]
    pub fn max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = max.max(1);
        self
    }

    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    #[must_use]
    pub fn max_pages(mut self, max: usize) -> Self {
        self.max_pages = max.max(1);
        self
    }

    #[must_use]
    pub fn max_tags(mut self, max: usize) -> Self {
        self.max_tags = max;
        self
    }

    #[must_use]
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// A user name and password (or token used as a password).
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Registry credentials: anonymous, one login for every registry, or logins per
/// registry host (as read from a Docker `config.json` or a
/// `kubernetes.io/dockerconfigjson` secret). A per-host login wins over the
/// every-registry one.
///
/// Hosts are normalised: a scheme and path are dropped (`https://ghcr.io/v1/` →
/// `ghcr.io`), and Docker Hub's spellings (`https://index.docker.io/v1/`,
/// `index.docker.io`, `registry-1.docker.io`) all mean `docker.io`.
///
/// Not supported: `credsStore`/`credHelpers` (external programs) and
/// `identitytoken` (OAuth refresh tokens); such entries are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    every: Option<BasicAuth>,
    by_registry: BTreeMap<String, BasicAuth>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: Option<BTreeMap<String, DockerAuth>>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// No credentials.
    #[must_use]
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// One login for every registry.
    #[must_use]
    pub fn basic(username: &str, password: &str) -> Self {
        Self {
            every: Some(BasicAuth {
                username: username.to_owned(),
                password: password.to_owned(),
            }),
            by_registry: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the login for one registry host.
    #[must_use]
    pub fn with_registry(mut self, registry: &str, username: &str, password: &str) -> Self {
        self.by_registry.insert(
            normalise_registry(registry),
            BasicAuth {
                username: username.to_owned(),
                password: password.to_owned(),
            },
        );
        self
    }

    /// `other`'s logins added to these (`other` wins for a host both have).
    #[must_use]
    pub fn merge(mut self, other: Credentials) -> Self {
        if other.every.is_some() {
            self.every = other.every;
        }
        self.by_registry.extend(other.by_registry);
        self
    }

    /// The login for `registry` (a host as written in image references), if any.
    #[must_use]
    pub fn lookup(&self, registry: &str) -> Option<&BasicAuth> {
        self.by_registry
            .get(&normalise_registry(registry))
            .or(self.every.as_ref())
    }

    /// Whether there are no credentials at all.
    #[must_use]
    pub fn is_anonymous(&self) -> bool {
        self.every.is_none() && self.by_registry.is_empty()
    }

    /// Parses a Docker `config.json`: `{"auths": {"HOST": {"auth": base64("user:pw")}}}`
    /// or `{"auths": {"HOST": {"username": .., "password": ..}}}`.
    pub fn from_docker_config(json: &[u8]) -> Result<Self, CredentialsError> {
        Self::parse_docker_config(json, "docker config", false)
    }

    /// Reads and parses a Docker `config.json` file.
    pub fn from_docker_config_file(path: &Path) -> Result<Self, CredentialsError> {
        let bytes = std::fs::read(path).map_err(|source| CredentialsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_docker_config(&bytes, &path.display().to_string(), false)
    }

    /// Parses the `.dockerconfigjson` value of a `kubernetes.io/dockerconfigjson`
    /// secret (the decoded bytes, as the Kubernetes client hands them over). The legacy
    /// `.dockercfg` shape (the `auths` map at the top level) is accepted too.
    pub fn from_dockerconfigjson_secret(data: &[u8]) -> Result<Self, CredentialsError> {
        Self::parse_docker_config(data, "secret .dockerconfigjson", true)
    }

    fn parse_docker_config(
        json: &[u8],
        origin: &str,
        allow_legacy: bool,
    ) -> Result<Self, CredentialsError> {
        let malformed = |detail: String| CredentialsError::Malformed {
            origin: origin.to_owned(),
            detail,
        };
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| malformed(format!("not JSON: {e}")))?;
        let auths = if value.get("auths").is_some() || !allow_legacy {
            serde_json::from_value::<DockerConfig>(value)
                .map_err(|e| malformed(e.to_string()))?
                .auths
                .unwrap_or_default()
        } else {
            serde_json::from_value::<BTreeMap<String, DockerAuth>>(value)
                .map_err(|e| malformed(e.to_string()))?
        };
        let mut credentials = Self::default();
        for (host, entry) in auths {
            let login = if let Some(encoded) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| malformed(format!("auths.{host}.auth: not base64: {e}")))?;
                let text = String::from_utf8(decoded)
                    .map_err(|_| malformed(format!("auths.{host}.auth: not UTF-8")))?;
                let Some((username, password)) = text.split_once(':') else {
                    return Err(malformed(format!(
                        "auths.{host}.auth: expected base64 of `user:password`"
                    )));
                };
                BasicAuth {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }
            } else if let (Some(username), Some(password)) = (entry.username, entry.password) {
                BasicAuth { username, password }
            } else {
                // `{}` entries (credentials in a credsStore) and identity tokens.
                continue;
            };
            credentials
                .by_registry
                .insert(normalise_registry(&host), login);
        }
        Ok(credentials)
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://127.0.0.1:5000/` →
/// `127.0.0.1:5000`; lower-cased.
#[must_use]
pub fn normalise_registry(registry: &str) -> String {
    let without_scheme = registry
        .split_once("://")
        .map_or(registry, |(_, rest)| rest);
    let host = without_scheme
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn docker_config_shapes() {
        let json = format!(
            r#"{{
              "auths": {{
                "https://index.docker.io/v1/": {{"auth": "{hub}"}},
                "127.0.0.1:5000": {{"username": "u", "password": "p:w"}},
                "https://ghcr.io": {{"auth": "{ghcr}", "email": "x@y"}},
                "quay.io": {{}}
              }},
              "credsStore": "desktop",
              "HttpHeaders": {{"User-Agent": "x"}}
            }}"#,
            hub = b64("hubuser:hub:pass"),
            ghcr = b64("gh:token"),
        );
        let creds = Credentials::from_docker_config(json.as_bytes()).unwrap();
        let login = |r: &str| {
            creds
                .lookup(r)
                .map(|b| (b.username.clone(), b.password.clone()))
        };
        let pair = |u: &str, p: &str| Some((u.to_owned(), p.to_owned()));
        assert_eq!(login("docker.io"), pair("hubuser", "hub:pass"));
        assert_eq!(login("index.docker.io"), pair("hubuser", "hub:pass"));
        assert_eq!(login("127.0.0.1:5000"), pair("u", "p:w"));
        assert_eq!(login("ghcr.io"), pair("gh", "token"));
        assert_eq!(login("quay.io"), None);
        assert_eq!(login("gcr.io"), None);
    }

    #[test]
    fn secret_shapes_and_errors() {
        let modern = format!(r#"{{"auths":{{"r.example":{{"auth":"{}"}}}}}}"#, b64("a:b"));
        let legacy = format!(r#"{{"r.example":{{"auth":"{}"}}}}"#, b64("a:b"));
        for data in [modern, legacy] {
            let creds = Credentials::from_dockerconfigjson_secret(data.as_bytes()).unwrap();
            assert_eq!(creds.lookup("r.example").unwrap().username, "a");
        }
        for bad in [
            "not json".to_owned(),
            r#"{"auths":{"r":{"auth":"%%%"}}}"#.to_owned(),
            format!(r#"{{"auths":{{"r":{{"auth":"{}"}}}}}}"#, b64("nocolon")),
            r#"{"auths": 3}"#.to_owned(),
        ] {
            let error = Credentials::from_dockerconfigjson_secret(bad.as_bytes()).unwrap_err();
            assert!(!error.is_retryable());
            assert_eq!(error.metric_label(), "malformed", "{bad}");
        }
    }

    #[test]
    fn per_registry_wins_over_every_registry() {
        let creds = Credentials::basic("all", "x").with_registry("https://ghcr.io/", "gh", "y");
        assert_eq!(creds.lookup("ghcr.io").unwrap().username, "gh");
        assert_eq!(creds.lookup("quay.io").unwrap().username, "all");
        assert!(Credentials::anonymous().lookup("quay.io").is_none());
        // Debug output never shows a password.
        assert!(!format!("{creds:?}").contains("\"y\""), "{creds:?}");
    }

    #[test]
    fn default_schemes() {
        for (registry, scheme) in [
            ("localhost", Scheme::Http),
            ("localhost:5000", Scheme::Http),
            ("127.0.0.1:41234", Scheme::Http),
            ("[::1]:5000", Scheme::Http),
            ("docker.io", Scheme::Https),
            ("ghcr.io", Scheme::Https),
            ("registry.local:5000", Scheme::Https),
        ] {
            assert_eq!(Scheme::default_for(registry), scheme, "{registry}");
        }
    }
}
