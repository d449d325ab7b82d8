//! Why a notification could not be delivered.
//!
//! A webhook URL is a credential (whoever has a Slack incoming-webhook URL can post to
//! the channel), so no error here carries it: targets are named by where their URL
//! comes from (`slack url from env SLACK_URL`), and every text taken from the HTTP
//! client or the receiver is redacted before it is stored.

use std::time::Duration;

use thiserror::Error;

/// Why a notification was not delivered.
///
/// `target` fields describe the target by its secret reference, never by its URL.
/// [`NotifyError::is_retryable`] says whether the same notification may succeed
/// later without anyone changing anything (the caller keeps it queued); otherwise a
/// person must fix the policy, the secret or the receiver.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NotifyError {
    /// The URL's secret could not be read (unset environment variable, missing
    /// file, a Secret or key that does not exist).
    #[error("{target}: cannot read the URL: {detail}")]
    Secret {
        /// The target, named by its secret reference.
        target: String,
        /// What went wrong (never the secret's value).
        detail: String,
        /// Whether reading it again later can help (e.g. the API server was
        /// unreachable, not "no such key").
        retryable: bool,
    },
    /// The URL is a `secretKeyRef`, which only the in-cluster controller can read.
    #[error(
        "{target}: secretKeyRef URLs are read from the cluster, which only the in-cluster \
         controller (autobump run --kubernetes) can do; use env or file in standalone mode"
    )]
    InClusterOnly {
        /// The target, named by its secret reference.
        target: String,
    },
    /// The secret's value is not an `http://` or `https://` URL.
    #[error("{target}: the secret's value is not an http(s) URL: {detail}")]
    InvalidUrl {
        /// The target, named by its secret reference.
        target: String,
        /// What is wrong with it (never the value).
        detail: String,
    },
    /// No connection: refused, DNS, TLS, reset.
    #[error("{target}: unreachable: {detail}")]
    Connection {
        /// The target, named by its secret reference.
        target: String,
        /// What the HTTP client said, redacted.
        detail: String,
    },
    /// No complete answer within the request timeout.
    #[error("{target}: no answer within {after:?}")]
    Timeout {
        /// The target, named by its secret reference.
        target: String,
        /// The request timeout that passed.
        after: Duration,
    },
    /// The receiver answered with a status other than 2xx (after the retries the
    /// status allowed).
    #[error("{target}: HTTP {status} after {attempts} attempt(s): {body}")]
    Status {
        /// The target, named by its secret reference.
        target: String,
        /// The last HTTP status.
        status: u16,
        /// How many requests were sent.
        attempts: u32,
        /// The start of the last response body, redacted.
        body: String,
        /// The receiver's `Retry-After`, when it asked for a longer wait than the
        /// notifier does in one delivery.
        retry_after: Option<Duration>,
    },
    /// The notifier cannot be used as configured (an HTTP client that cannot be built).
    #[error("notifier misconfigured: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
}

impl NotifyError {
    /// Whether delivering the same notification later can succeed without a person
    /// acting: transport failures, timeouts, 5xx, 429 (and 408), and secret reads
    /// that failed for a transient reason.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connection { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => retryable_status(*status),
            Self::Secret { retryable, .. } => *retryable,
            Self::InClusterOnly { .. } | Self::InvalidUrl { .. } | Self::Config { .. } => false,
        }
    }

    /// The variant name in snake case, for metric labels.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Secret { .. } => "secret",
            Self::InClusterOnly { .. } => "in_cluster_only",
            Self::InvalidUrl { .. } => "invalid_url",
            Self::Connection { .. } => "connection",
            Self::Timeout { .. } => "timeout",
            Self::Status { .. } => "status",
            Self::Config { .. } => "config",
        }
    }
}

/// Whether an HTTP status is worth another attempt: 5xx, 429 Too Many Requests and
/// 408 Request Timeout.
#[must_use]
pub(crate) fn retryable_status(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_and_labels() {
        let t = || "slack url from env X".to_owned();
        let status = |status| NotifyError::Status {
            target: t(),
            status,
            attempts: 1,
            body: String::new(),
            retry_after: None,
        };
        let cases = [
            (
                NotifyError::Secret {
                    target: t(),
                    detail: "unset".into(),
                    retryable: false,
                },
                false,
                "secret",
            ),
            (
                NotifyError::Secret {
                    target: t(),
                    detail: "API server unreachable".into(),
                    retryable: true,
                },
                true,
                "secret",
            ),
            (
                NotifyError::InClusterOnly { target: t() },
                false,
                "in_cluster_only",
            ),
            (
                NotifyError::InvalidUrl {
                    target: t(),
                    detail: String::new(),
                },
                false,
                "invalid_url",
            ),
            (
                NotifyError::Connection {
                    target: t(),
                    detail: String::new(),
                },
                true,
                "connection",
            ),
            (
                NotifyError::Timeout {
                    target: t(),
                    after: Duration::from_secs(1),
                },
                true,
                "timeout",
            ),
            (status(503), true, "status"),
            (status(429), true, "status"),
            (status(408), true, "status"),
            (status(404), false, "status"),
            (status(400), false, "status"),
            (
                NotifyError::Config {
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
