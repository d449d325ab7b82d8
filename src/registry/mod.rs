//! The registry client (does I/O: HTTP(S) to OCI registries, reads CA bundles and
//! Docker config files).
//!
//! [`Registry`] is the narrow interface the resolver uses (tags, digest, build time);
//! [`RegistryClient`] implements it over the OCI Distribution API:
//!
//! * **Names**: `nginx` is `docker.io/library/nginx`, served by
//!   `registry-1.docker.io`; `localhost:5000/app` and `127.0.0.1:5000/a/b` work as
//!   written ([`ImageRef`](crate::core::reference::ImageRef)).
//! * **Scheme**: https, except loopback registries (`localhost`, `127.0.0.1`,
//!   `[::1]`, any port), which default to plain http; [`RegistryConfig::scheme`] /
//!   [`RegistryConfig::insecure`] override it per registry.
//! * **Auth**: anonymous; basic; bearer-token challenges (token fetched with the basic
//!   login if one is configured, cached per registry and scope until `expires_in` minus
//!   a margin by the injected [`Clock`](crate::clock::Clock), one retry with a fresh
//!   token after a 401). Credentials come from code, a Docker `config.json` or a
//!   `kubernetes.io/dockerconfigjson` secret ([`Credentials`]): logins, identity
//!   tokens (the OAuth 2.0 refresh-token grant at the token service) and credential
//!   helpers (`credHelpers`, `credsStore`: `docker-credential-NAME get`, run only
//!   when a login is needed, with a timeout; its answer is kept until the registry or
//!   its token service refuses it, then asked for again, once).
//! * **TLS**: rustls with the system roots plus an optional per-registry CA bundle.
//! * **Politeness**, per registry: a token-bucket rate limit, a concurrency cap, a
//!   timeout on every request; 429/503 wait as `Retry-After` says (seconds or an
//!   HTTP-date, capped), other 5xx, timeouts and connection errors back off
//!   exponentially with jitter, for a bounded number of attempts; 401/403/404 and other
//!   4xx are final.
//! * **Cost**: no hidden requests. Listing tags is one request per page once a token is
//!   cached; [`RegistryStats`] counts every request by kind.

mod client;
mod config;
mod error;
mod helper;
mod stats;
pub mod wire;

use std::future::Future;

use chrono::{DateTime, Utc};

pub use client::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, RegistryClient};
pub use config::{
    BasicAuth, Credentials, IdentityToken, Login, LoginSource, RegistryConfig, RetryPolicy, Scheme,
    normalise_registry,
};
pub use error::{CredentialsError, RegistryError};
pub use stats::{RegistryStats, RequestKind, StatsSnapshot};

use crate::core::reference::ImageRef;

/// What the resolver needs to know from a registry.
pub trait Registry: Send + Sync {
    /// Every tag of the repository, all pages, in the registry's order, no duplicates.
    /// A repository with more tags than the configured maximum is an error
    /// ([`RegistryError::TooManyTags`]), not a truncated list.
    fn tags(
        &self,
        image: &ImageRef,
    ) -> impl Future<Output = Result<Vec<String>, RegistryError>> + Send;

    /// The content digest (`sha256:…`) of `image:tag`: of the index / manifest list for
    /// a multi-platform tag, else of the manifest.
    fn digest(
        &self,
        image: &ImageRef,
        tag: &str,
    ) -> impl Future<Output = Result<String, RegistryError>> + Send;

    /// Build time: the config blob's `created` (for an index, of the linux/amd64
    /// image, else of the first). `None` when absent.
    fn created(
        &self,
        image: &ImageRef,
        tag: &str,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, RegistryError>> + Send;

    /// A registry like this one whose logins come from `credentials` for the
    /// registries it names (a policy's own credentials), with caches of its own;
    /// `None` when this registry takes no other credentials (the default).
    fn with_credentials(&self, credentials: &Credentials) -> Option<Self>
    where
        Self: Sized,
    {
        let _ = credentials;
        None
    }
}

pub use crate::install_crypto_provider;
