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
    /// A credential helper (`docker-credential-NAME get`) must answer within this;
    /// it is killed past it and the call fails naming the helper and the registry.
    pub helper_timeout: Duration,
    /// The `PATH` searched for `docker-credential-*` programs; `None`: the process's.
    pub helper_path: Option<std::ffi::OsString>,
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
            // ECR's and GCR's helpers call their cloud's token service: seconds.
            helper_timeout: Duration::from_secs(15),
            helper_path: None,
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

    #[must_use]
    pub fn helper_timeout(mut self, timeout: Duration) -> Self {
        self.helper_timeout = timeout;
        self
    }

    /// Searches `path` (a `PATH` value) for credential helpers.
    #[must_use]
    pub fn helper_path(mut self, path: impl Into<std::ffi::OsString>) -> Self {
        self.helper_path = Some(path.into());
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
/// Besides logins, a Docker config names where logins come from (as the docker CLI
/// reads them; [`Credentials::source`] decides per registry):
///
/// * `credHelpers: {HOST: NAME}`: for HOST, run the credential helper
///   `docker-credential-NAME get` (ECR's `ecr-login`, GAR/GCR's `gcr`, ACR's
///   `acr-env`). It wins over everything else for its host.
/// * `auths.HOST.identitytoken`: an OAuth 2.0 refresh token, exchanged at the
///   registry's token service (`grant_type=refresh_token`) for access tokens.
/// * `auths.HOST.auth` / `username`+`password`: a login.
/// * `credsStore: NAME`: the helper for every host without a login of its own
///   (`desktop`, `pass`, `secretservice`, `osxkeychain`, `ecr-login`).
///
/// A helper is run only when a login is needed (a token to fetch, a 401 to answer),
/// its answer is kept in memory and asked for again once the registry refuses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    every: Option<BasicAuth>,
    by_registry: BTreeMap<String, BasicAuth>,
    /// Identity (OAuth 2.0 refresh) tokens by normalised host.
    identity_tokens: BTreeMap<String, IdentityToken>,
    /// `credHelpers`: normalised host → (helper, server URL as written).
    helpers: BTreeMap<String, (String, String)>,
    /// `credsStore`.
    store: Option<String>,
}

/// An identity token (an OAuth 2.0 refresh token); `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityToken(pub String);

impl fmt::Debug for IdentityToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityToken(<redacted>)")
    }
}

/// A login as the registry's auth needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// User name and password: basic auth, or the login for a bearer token.
    Basic(BasicAuth),
    /// An OAuth 2.0 refresh token, exchanged at the token service for access tokens.
    IdentityToken(String),
}

impl Login {
    /// For messages: the user, or that an identity token is used; never the secret.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Basic(login) => format!("as {:?}", login.username),
            Self::IdentityToken(_) => "with an identity token".to_owned(),
        }
    }
}

/// Where the login for one registry comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginSource {
    /// No credentials: anonymous.
    Anonymous,
    /// Known up front.
    Known(Login),
    /// Asked of `docker-credential-{helper} get` with `server_url` on stdin.
    Helper { helper: String, server_url: String },
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: Option<BTreeMap<String, DockerAuth>>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The server URL the docker CLI hands helpers for Docker Hub.
const DOCKER_HUB_SERVER_URL: &str = "https://index.docker.io/v1/";

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
            ..Self::default()
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

    /// Uses `docker-credential-{helper}` for one registry host (`credHelpers`).
    #[must_use]
    pub fn with_helper(mut self, registry: &str, helper: &str) -> Self {
        self.helpers.insert(
            normalise_registry(registry),
            (helper.to_owned(), registry.to_owned()),
        );
        self
    }

    /// Uses `docker-credential-{helper}` for every host without a login of its own
    /// (`credsStore`).
    #[must_use]
    pub fn with_store(mut self, helper: &str) -> Self {
        self.store = Some(helper.to_owned());
        self
    }

    /// Uses an identity token (OAuth 2.0 refresh token) for one registry host.
    #[must_use]
    pub fn with_identity_token(mut self, registry: &str, token: &str) -> Self {
        self.identity_tokens.insert(
            normalise_registry(registry),
            IdentityToken(token.to_owned()),
        );
        self
    }

    /// `other`'s logins added to these (`other` wins for a host both have).
    #[must_use]
    pub fn merge(mut self, other: Credentials) -> Self {
        if other.every.is_some() {
            self.every = other.every;
        }
        if other.store.is_some() {
            self.store = other.store;
        }
        for host in other
            .by_registry
            .keys()
            .chain(other.identity_tokens.keys())
            .chain(other.helpers.keys())
        {
            self.by_registry.remove(host);
            self.identity_tokens.remove(host);
            self.helpers.remove(host);
        }
        self.by_registry.extend(other.by_registry);
        self.identity_tokens.extend(other.identity_tokens);
        self.helpers.extend(other.helpers);
        self
    }

    /// Where the login for `registry` (a host as written in image references) comes
    /// from: its `credHelpers` entry, else its identity token, else its login, else
    /// `credsStore`, else the every-registry login, else none.
    #[must_use]
    pub fn source(&self, registry: &str) -> LoginSource {
        let host = normalise_registry(registry);
        if let Some((helper, written)) = self.helpers.get(&host) {
            return LoginSource::Helper {
                helper: helper.clone(),
                server_url: server_url(&host, written),
            };
        }
        if let Some(token) = self.identity_tokens.get(&host) {
            return LoginSource::Known(Login::IdentityToken(token.0.clone()));
        }
        if let Some(login) = self.by_registry.get(&host) {
            return LoginSource::Known(Login::Basic(login.clone()));
        }
        if let Some(helper) = &self.store {
            return LoginSource::Helper {
                helper: helper.clone(),
                server_url: server_url(&host, &host),
            };
        }
        match &self.every {
            Some(login) => LoginSource::Known(Login::Basic(login.clone())),
            None => LoginSource::Anonymous,
        }
    }

    /// The login for `registry` (a host as written in image references), if any.
    #[must_use]
    pub fn lookup(&self, registry: &str) -> Option<&BasicAuth> {
        self.by_registry
            .get(&normalise_registry(registry))
            .or(self.every.as_ref())
    }

    /// Whether any registry's login comes from a credential helper (`credHelpers`,
    /// `credsStore`).
    #[must_use]
    pub fn uses_helpers(&self) -> bool {
        !self.helpers.is_empty() || self.store.is_some()
    }

    /// Whether there are no credentials at all.
    #[must_use]
    pub fn is_anonymous(&self) -> bool {
        self.every.is_none()
            && self.by_registry.is_empty()
            && self.identity_tokens.is_empty()
            && self.helpers.is_empty()
            && self.store.is_none()
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
        let modern = value.get("auths").is_some()
            || value.get("credHelpers").is_some()
            || value.get("credsStore").is_some()
            || !allow_legacy;
        let mut credentials = Self::default();
        let auths = if modern {
            let config = serde_json::from_value::<DockerConfig>(value)
                .map_err(|e| malformed(e.to_string()))?;
            for (host, helper) in config.cred_helpers.unwrap_or_default() {
                if !super::helper::valid_name(&helper) {
                    return Err(malformed(format!(
                        "credHelpers.{host}: {helper:?} is not a credential helper name"
                    )));
                }
                credentials = credentials.with_helper(&host, &helper);
            }
            if let Some(store) = config.creds_store.filter(|s| !s.is_empty()) {
                if !super::helper::valid_name(&store) {
                    return Err(malformed(format!(
                        "credsStore: {store:?} is not a credential helper name"
                    )));
                }
                credentials.store = Some(store);
            }
            config.auths.unwrap_or_default()
        } else {
            serde_json::from_value::<BTreeMap<String, DockerAuth>>(value)
                .map_err(|e| malformed(e.to_string()))?
        };
        for (host, entry) in auths {
            if let Some(token) = entry.identitytoken.filter(|t| !t.is_empty()) {
                credentials
                    .identity_tokens
                    .insert(normalise_registry(&host), IdentityToken(token));
                continue;
            }
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
                // `{}` entries: the credentials are in the credsStore.
                continue;
            };
            credentials
                .by_registry
                .insert(normalise_registry(&host), login);
        }
        Ok(credentials)
    }
}

/// The server URL a helper is asked about: Docker Hub's as the docker CLI spells it,
/// else the host as the config wrote it.
fn server_url(host: &str, written: &str) -> String {
    if host == DOCKER_HUB {
        DOCKER_HUB_SERVER_URL.to_owned()
    } else {
        written.to_owned()
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
    fn helpers_stores_and_identity_tokens() {
        // Shaped like the configs `docker login`, `gcloud auth configure-docker`,
        // `aws ecr get-login-password | docker login` and Docker Desktop write
        // (docs.docker.com/reference/cli/docker/login/#credential-stores).
        let json = format!(
            r#"{{
              "auths": {{
                "https://index.docker.io/v1/": {{}},
                "myregistry.azurecr.io": {{"auth": "", "identitytoken": "refresh-abc"}},
                "ghcr.io": {{"auth": "{ghcr}"}}
              }},
              "credHelpers": {{
                "123456789012.dkr.ecr.us-east-1.amazonaws.com": "ecr-login",
                "europe-docker.pkg.dev": "gcloud"
              }},
              "credsStore": "desktop"
            }}"#,
            ghcr = b64("gh:token"),
        );
        let creds = Credentials::from_docker_config(json.as_bytes()).unwrap();
        let helper = |h: &str, url: &str| LoginSource::Helper {
            helper: h.to_owned(),
            server_url: url.to_owned(),
        };
        assert_eq!(
            creds.source("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
            helper("ecr-login", "123456789012.dkr.ecr.us-east-1.amazonaws.com")
        );
        assert_eq!(
            creds.source("europe-docker.pkg.dev"),
            helper("gcloud", "europe-docker.pkg.dev")
        );
        assert_eq!(
            creds.source("myregistry.azurecr.io"),
            LoginSource::Known(Login::IdentityToken("refresh-abc".into()))
        );
        assert_eq!(
            creds.source("ghcr.io"),
            LoginSource::Known(Login::Basic(BasicAuth {
                username: "gh".into(),
                password: "token".into()
            }))
        );
        // Everything else goes to the store; Docker Hub under the CLI's server URL.
        assert_eq!(
            creds.source("docker.io"),
            helper("desktop", "https://index.docker.io/v1/")
        );
        assert_eq!(creds.source("quay.io"), helper("desktop", "quay.io"));
        assert!(!creds.is_anonymous());
        assert!(!format!("{creds:?}").contains("refresh-abc"), "{creds:?}");

        let plain = Credentials::from_docker_config(br#"{"auths": {}}"#).unwrap();
        assert_eq!(plain.source("quay.io"), LoginSource::Anonymous);
        for bad in [
            r#"{"credHelpers": {"r.example": "../../bin/sh"}}"#,
            r#"{"credsStore": "a b"}"#,
        ] {
            let error = Credentials::from_docker_config(bad.as_bytes()).unwrap_err();
            assert_eq!(error.metric_label(), "malformed", "{bad}");
        }
        // A later source wins for a host, whatever kind each is.
        let merged = creds.merge(Credentials::anonymous().with_registry("ghcr.io", "x", "y"));
        assert!(matches!(
            merged.source("ghcr.io"),
            LoginSource::Known(Login::Basic(_))
        ));
        let merged = merged.merge(Credentials::anonymous().with_helper("ghcr.io", "gh"));
        assert_eq!(merged.source("ghcr.io"), helper("gh", "ghcr.io"));
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
