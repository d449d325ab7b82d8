//! The cluster adapter's errors.

use thiserror::Error;

/// Why the Kubernetes API could not be read or written.
///
/// [`ClusterError::is_retryable`] says whether trying again soon can help (the API
/// server is down, slow or busy, or another writer keeps changing the object) or a
/// person must act (RBAC, a missing object, a broken kubeconfig). `during` names the
/// request (`list Deployments in prow with app=web`).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// No connection to the API server: refused, reset, DNS, TLS handshake.
    #[error("{during}: Kubernetes API unreachable: {detail}")]
    Unreachable {
        /// The request.
        during: String,
        /// What the client said.
        detail: String,
    },
    /// The API server did not answer in time (client timeout, or its own 504).
    #[error("{during}: Kubernetes API timed out: {detail}")]
    Timeout {
        /// The request.
        during: String,
        /// What the client or server said.
        detail: String,
    },
    /// 401 or 403: the credentials are not allowed to do this (RBAC).
    #[error("{during}: forbidden (HTTP {status}): {message}")]
    Forbidden {
        /// The request.
        during: String,
        /// 401 or 403.
        status: u16,
        /// The API server's message.
        message: String,
    },
    /// 404: the namespace, object or API does not exist.
    #[error("{during}: not found: {message}")]
    NotFound {
        /// The request.
        during: String,
        /// The API server's message.
        message: String,
    },
    /// Another writer changed the object between every read and write.
    #[error(
        "{workload}: still conflicting after {attempts} attempts (another writer keeps changing it)"
    )]
    ConflictRetriesExhausted {
        /// The workload (`Deployment prow/hook`).
        workload: String,
        /// How many replaces were tried.
        attempts: u32,
    },
    /// Any other error status from the API server (409 outside a retried write,
    /// 422 invalid, 429, 5xx).
    #[error("{during}: HTTP {status} {reason}: {message}")]
    Api {
        /// The request.
        during: String,
        /// The HTTP status code.
        status: u16,
        /// The API's machine-readable reason (`Invalid`, `TooManyRequests`, …).
        reason: String,
        /// The API server's message.
        message: String,
    },
    /// The answer was not the API's shape.
    #[error("{during}: malformed response: {detail}")]
    InvalidResponse {
        /// The request.
        during: String,
        /// What was wrong.
        detail: String,
    },
    /// No usable client: no kubeconfig or in-cluster config, bad credentials setup,
    /// TLS configuration, or a request that could not be built.
    #[error("Kubernetes client: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
}

impl ClusterError {
    /// Whether trying again soon can help: unreachable, timeouts, conflicts, 429 and
    /// 5xx.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. }
            | Self::Timeout { .. }
            | Self::ConflictRetriesExhausted { .. } => true,
            Self::Api { status, .. } => *status >= 500 || *status == 429 || *status == 409,
            Self::Forbidden { .. }
            | Self::NotFound { .. }
            | Self::InvalidResponse { .. }
            | Self::Config { .. } => false,
        }
    }

    /// The variant name in snake case, for metric labels.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound { .. } => "not_found",
            Self::ConflictRetriesExhausted { .. } => "conflict_retries_exhausted",
            Self::Api { .. } => "api",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::Config { .. } => "config",
        }
    }

    /// Classifies a kube client error from the request `during`.
    pub(crate) fn from_kube(error: kube::Error, during: impl Into<String>) -> Self {
        let during = during.into();
        match error {
            kube::Error::Api(status) => match status.code {
                401 | 403 => Self::Forbidden {
                    during,
                    status: status.code,
                    message: status.message,
                },
                404 => Self::NotFound {
                    during,
                    message: status.message,
                },
                504 => Self::Timeout {
                    during,
                    detail: status.message,
                },
                code => Self::Api {
                    during,
                    status: code,
                    reason: status.reason,
                    message: status.message,
                },
            },
            e @ (kube::Error::HyperError(_)
            | kube::Error::Service(_)
            | kube::Error::ReadEvents(_)) => {
                let detail = crate::error_chain(&e);
                if timed_out(&e) {
                    Self::Timeout { during, detail }
                } else {
                    Self::Unreachable { during, detail }
                }
            }
            e @ (kube::Error::SerdeError(_)
            | kube::Error::FromUtf8(_)
            | kube::Error::LinesCodecMaxLineLengthExceeded) => Self::InvalidResponse {
                during,
                detail: crate::error_chain(&e),
            },
            e => Self::Config {
                detail: format!("{during}: {}", crate::error_chain(&e)),
            },
        }
    }
}

/// Whether a transport error is a timeout (the connector's I/O timeouts surface as
/// `io::ErrorKind::TimedOut`, tower's as "deadline has elapsed").
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        let text = e.to_string();
        if text.contains("timed out") || text.contains("deadline has elapsed") {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            status: Some(kube::core::response::StatusSummary::Failure),
            code,
            message: format!("message {code}"),
            metadata: None,
            reason: reason.to_owned(),
            details: None,
        }))
    }

    #[test]
    fn kube_errors_are_classified() {
        let cases = [
            (api(403, "Forbidden"), "forbidden", false),
            (api(401, "Unauthorized"), "forbidden", false),
            (api(404, "NotFound"), "not_found", false),
            (api(504, "Timeout"), "timeout", true),
            (api(500, "InternalError"), "api", true),
            (api(429, "TooManyRequests"), "api", true),
            (api(409, "Conflict"), "api", true),
            (api(422, "Invalid"), "api", false),
            (
                kube::Error::Service(Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ))),
                "unreachable",
                true,
            ),
            (
                kube::Error::Service(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "slow",
                ))),
                "timeout",
                true,
            ),
            (
                kube::Error::SerdeError(serde_json::from_str::<u8>("x").unwrap_err()),
                "invalid_response",
                false,
            ),
            (kube::Error::TlsRequired, "config", false),
        ];
        for (error, label, retryable) in cases {
            let text = error.to_string();
            let e = ClusterError::from_kube(error, "list Deployments in prow");
            assert_eq!(e.metric_label(), label, "{text} -> {e}");
            assert_eq!(e.is_retryable(), retryable, "{text} -> {e}");
            assert!(e.to_string().contains("list Deployments in prow"), "{e}");
        }
    }

    #[test]
    fn conflicts_exhausted_are_retryable() {
        let e = ClusterError::ConflictRetriesExhausted {
            workload: "Deployment prow/hook".into(),
            attempts: 5,
        };
        assert!(e.is_retryable());
        assert_eq!(e.metric_label(), "conflict_retries_exhausted");
        assert_eq!(
            e.to_string(),
            "Deployment prow/hook: still conflicting after 5 attempts (another writer keeps changing it)"
        );
    }
}
