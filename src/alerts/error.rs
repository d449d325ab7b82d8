//! The alert sources' errors. Every one of them makes the gate Unknown: an alert
//! source that cannot be read is never taken for a healthy service.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

/// Which kind of alert source an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Prometheus' `/api/v1/alerts`.
    Prometheus,
    /// Alertmanager's `/api/v2/alerts`.
    Alertmanager,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Prometheus => "Prometheus",
            Self::Alertmanager => "Alertmanager",
        })
    }
}

/// Why the alerts could not be read.
///
/// [`AlertsError::is_retryable`] says whether trying again soon can help (the
/// controller requeues quickly) or the configuration is likely wrong (a person must
/// act). Either way the gate is Unknown until a read succeeds. `url` is the source's
/// base URL without any password.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AlertsError {
    /// No connection: refused, DNS, TLS, reset.
    #[error("{kind} {url}: unreachable: {detail}")]
    Connection {
        /// Prometheus or Alertmanager.
        kind: SourceKind,
        /// The source's base URL.
        url: String,
        /// What the HTTP client said.
        detail: String,
    },
    /// No complete answer within the request timeout.
    #[error("{kind} {url}: no answer within {after:?}")]
    Timeout {
        /// Prometheus or Alertmanager.
        kind: SourceKind,
        /// The source's base URL.
        url: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// A non-2xx HTTP status.
    #[error("{kind} {url}: HTTP {status}: {body}")]
    Status {
        /// Prometheus or Alertmanager.
        kind: SourceKind,
        /// The source's base URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body (or the client's message).
        body: String,
    },
    /// The body is not the API's shape (not JSON, wrong fields, too large).
    #[error("{kind} {url}: malformed response: {detail}")]
    InvalidResponse {
        /// Prometheus or Alertmanager.
        kind: SourceKind,
        /// The source's base URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// Prometheus answered `"status": "error"`.
    #[error("{kind} {url}: API error {error_type}: {message}")]
    Api {
        /// Prometheus or Alertmanager.
        kind: SourceKind,
        /// The source's base URL.
        url: String,
        /// The API's `errorType` (`timeout`, `unavailable`, `bad_data`, …).
        error_type: String,
        /// The API's `error` text.
        message: String,
    },
    /// The gate or client cannot be used as configured (no source URL, two of them,
    /// an unusable URL, an HTTP client that cannot be built).
    #[error("alert source misconfigured: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
}

impl AlertsError {
    /// Whether trying again soon can help: transport failures, timeouts, 5xx and 429,
    /// and the API's own transient error types.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connection { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Api { error_type, .. } => matches!(
                error_type.as_str(),
                "timeout" | "canceled" | "internal" | "unavailable"
            ),
            Self::InvalidResponse { .. } | Self::Config { .. } => false,
        }
    }

    /// The variant name in snake case, for metric labels.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Connection { .. } => "connection",
            Self::Timeout { .. } => "timeout",
            Self::Status { .. } => "status",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::Api { .. } => "api",
            Self::Config { .. } => "config",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_and_labels() {
        let kind = SourceKind::Prometheus;
        let url = String::from("http://prom/");
        let cases = [
            (
                AlertsError::Connection {
                    kind,
                    url: url.clone(),
                    detail: "refused".into(),
                },
                true,
                "connection",
            ),
            (
                AlertsError::Timeout {
                    kind,
                    url: url.clone(),
                    after: Duration::from_secs(1),
                },
                true,
                "timeout",
            ),
            (
                AlertsError::Status {
                    kind,
                    url: url.clone(),
                    status: 503,
                    body: String::new(),
                },
                true,
                "status",
            ),
            (
                AlertsError::Status {
                    kind,
                    url: url.clone(),
                    status: 404,
                    body: String::new(),
                },
                false,
                "status",
            ),
            (
                AlertsError::Api {
                    kind,
                    url: url.clone(),
                    error_type: "unavailable".into(),
                    message: String::new(),
                },
                true,
                "api",
            ),
            (
                AlertsError::Api {
                    kind,
                    url: url.clone(),
                    error_type: "bad_data".into(),
                    message: String::new(),
                },
                false,
                "api",
            ),
            (
                AlertsError::InvalidResponse {
                    kind,
                    url,
                    detail: String::new(),
                },
                false,
                "invalid_response",
            ),
            (
                AlertsError::Config {
                    detail: String::new(),
                },
                false,
                "config",
            ),
        ];
        for (error, retryable, label) in cases {
            assert_eq!(error.is_retryable(), retryable, "{error}");
            assert_eq!(error.metric_label(), label, "{error}");
        }
    }
}
