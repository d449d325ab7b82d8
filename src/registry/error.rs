//! Registry errors (pure types).

use thiserror::Error;

/// What went wrong talking to a registry. Every variant names the registry (as written
/// in image references, e.g. `docker.io`, `127.0.0.1:5000`) and, where there is one,
/// the image (its canonical repository, e.g. `docker.io/library/nginx`).
///
/// [`RegistryError::is_retryable`] says whether trying again later can help (the
/// controller requeues) or a person must act (bad credentials, missing tag, config).
/// Variants that come from retried requests were already retried as the
/// [`RetryPolicy`](super::RetryPolicy) allows; `attempts` says how often.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// 404: the repository, tag or blob does not exist.
    #[error("{registry}: {image}: {what} not found (404)")]
    NotFound {
        registry: String,
        image: String,
        /// `tags`, `manifest v1.2`, `blob sha256:…`.
        what: String,
    },
    /// 401/403 that authentication could not fix: no credentials for a registry that
    /// wants them, credentials rejected, or access denied.
    #[error("{registry}: {image}: not authorized: {detail}")]
    Unauthorized {
        registry: String,
        image: String,
        detail: String,
    },
    /// 429 on every attempt.
    #[error("{registry}: {image}: rate limited (429) on all {attempts} attempts")]
    RateLimited {
        registry: String,
        image: String,
        attempts: u32,
    },
    /// 5xx on every attempt.
    #[error("{registry}: {image}: server error {status} on all {attempts} attempts")]
    Server {
        registry: String,
        image: String,
        status: u16,
        attempts: u32,
    },
    /// Another 4xx (not 401, 403, 404, 429): the request itself is wrong.
    #[error("{registry}: {image}: request rejected with {status}: {detail}")]
    Rejected {
        registry: String,
        image: String,
        status: u16,
        detail: String,
    },
    /// No complete answer within the request timeout, on every attempt.
    #[error("{registry}: {image}: timed out after {attempts} attempts: {detail}")]
    Timeout {
        registry: String,
        image: String,
        attempts: u32,
        /// How far the last attempt got (`no response headers within 30s`, `body
        /// still arriving after 30s (17 bytes read)`).
        detail: String,
    },
    /// The call (with its pages, retries and waits) did not finish within the
    /// per-call deadline ([`RegistryConfig::call_timeout`](super::RegistryConfig)).
    #[error(
        "{registry}: {image}: gave up after {requests} requests: the {deadline:?} deadline per call is reached ({detail})"
    )]
    Deadline {
        registry: String,
        image: String,
        deadline: std::time::Duration,
        /// Requests sent during the call.
        requests: u32,
        /// What the call was doing (`429 with Retry-After: 3600`, `reading page 3`).
        detail: String,
    },
    /// Could not connect or the connection broke (DNS, refused, TLS), on every attempt.
    #[error("{registry}: {image}: connection failed after {attempts} attempts: {detail}")]
    Connection {
        registry: String,
        image: String,
        attempts: u32,
        detail: String,
    },
    /// The registry answered something that does not follow the protocol (bad JSON, a
    /// digest that does not match the content, a `Link` to another host, a body over the
    /// size limit).
    #[error("{registry}: {image}: invalid response: {detail}")]
    InvalidResponse {
        registry: String,
        image: String,
        detail: String,
    },
    /// The repository has more tags than `max_tags` allows; nothing is returned rather
    /// than a partial list that could hide the newest tag.
    #[error("{registry}: {image}: more than {limit} tags (raise max_tags for this registry)")]
    TooManyTags {
        registry: String,
        image: String,
        limit: usize,
    },
    /// Listing tags needed more than `max_pages` pages.
    #[error(
        "{registry}: {image}: tag listing still paging after {limit} pages ({tags} distinct tags); raise max_pages for this registry"
    )]
    TooManyPages {
        registry: String,
        image: String,
        limit: usize,
        tags: usize,
    },
    /// The caller asked for something that cannot be a request (a malformed tag).
    #[error("{registry}: {image}: invalid request: {detail}")]
    InvalidRequest {
        registry: String,
        image: String,
        detail: String,
    },
    /// The credential helper for this registry gave no answer: not installed, failed,
    /// timed out, or printed something that is not the helper protocol's JSON. Never
    /// holds what the helper printed on success.
    #[error("{registry}: {image}: credential helper docker-credential-{helper}: {detail}")]
    CredentialHelper {
        registry: String,
        image: String,
        helper: String,
        detail: String,
        /// Whether trying again can help (a timeout), or a person must act.
        retryable: bool,
    },
    /// The configuration for this registry is unusable (unreadable CA bundle, …).
    #[error("{registry}: configuration: {detail}")]
    Config { registry: String, detail: String },
}

impl RegistryError {
    /// Whether trying again later can succeed without anyone changing anything.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Timeout { .. }
                | Self::Deadline { .. }
                | Self::Connection { .. }
                | Self::CredentialHelper {
                    retryable: true,
                    ..
                }
        )
    }

    /// The variant name in snake case, for metric labels.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Unauthorized { .. } => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server",
            Self::Rejected { .. } => "rejected",
            Self::Timeout { .. } => "timeout",
            Self::Deadline { .. } => "deadline",
            Self::TooManyPages { .. } => "too_many_pages",
            Self::Connection { .. } => "connection",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::TooManyTags { .. } => "too_many_tags",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::CredentialHelper { .. } => "credential_helper",
            Self::Config { .. } => "config",
        }
    }

    /// The registry this error is about.
    #[must_use]
    pub fn registry(&self) -> &str {
        match self {
            Self::NotFound { registry, .. }
            | Self::Unauthorized { registry, .. }
            | Self::RateLimited { registry, .. }
            | Self::Server { registry, .. }
            | Self::Rejected { registry, .. }
            | Self::Timeout { registry, .. }
            | Self::Deadline { registry, .. }
            | Self::TooManyPages { registry, .. }
            | Self::Connection { registry, .. }
            | Self::InvalidResponse { registry, .. }
            | Self::TooManyTags { registry, .. }
            | Self::InvalidRequest { registry, .. }
            | Self::CredentialHelper { registry, .. }
            | Self::Config { registry, .. } => registry,
        }
    }
}

/// A credentials file or secret that cannot be read.
#[derive(Debug, Error)]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The content is not a Docker config / `.dockerconfigjson`.
    #[error("{origin}: {detail}")]
    Malformed { origin: String, detail: String },
}

impl CredentialsError {
    /// Never: a person has to fix the file or secret.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// The variant name in snake case, for metric labels.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Malformed { .. } => "malformed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_retryability() {
        let registry = || "r".to_owned();
        let image = || "r/a".to_owned();
        let cases = [
            (
                RegistryError::NotFound {
                    registry: registry(),
                    image: image(),
                    what: "tags".into(),
                },
                "not_found",
                false,
            ),
            (
                RegistryError::RateLimited {
                    registry: registry(),
                    image: image(),
                    attempts: 3,
                },
                "rate_limited",
                true,
            ),
            (
                RegistryError::Unauthorized {
                    registry: registry(),
                    image: image(),
                    detail: "x".into(),
                },
                "unauthorized",
                false,
            ),
            (
                RegistryError::Timeout {
                    registry: registry(),
                    image: image(),
                    attempts: 2,
                    detail: "no response headers within 30s".into(),
                },
                "timeout",
                true,
            ),
            (
                RegistryError::TooManyTags {
                    registry: registry(),
                    image: image(),
                    limit: 5,
                },
                "too_many_tags",
                false,
            ),
        ];
        for (error, label, retryable) in cases {
            assert_eq!(error.metric_label(), label);
            assert_eq!(error.is_retryable(), retryable, "{error}");
            assert_eq!(error.registry(), "r");
            assert!(error.to_string().starts_with("r: r/a: "), "{error}");
        }
    }
}
