//! Forge errors (pure types).

use thiserror::Error;

/// What went wrong talking to GitHub. Every variant names the request (`what`: a short
/// description such as `GET /repos/o/r/pulls/7`) so a log line or a status condition
/// says which call failed.
///
/// [`ForgeError::is_retryable`] says whether trying again later can help (the
/// controller requeues) or a person must act (credentials, permissions, a rejected
/// merge). Variants that come from retried requests were already retried as the
/// [`RetryPolicy`](super::RetryPolicy) allows; `attempts` says how often.
#[derive(Debug, Error)]
pub enum ForgeError {
    /// `PUT …/merge` answered 409: the PR's head is no longer the SHA the merge was
    /// asked for (someone pushed after the checks were read). Nothing was merged.
    #[error("{what}: head moved: expected {expected_sha}: {message}")]
    HeadMoved {
        what: String,
        expected_sha: String,
        /// GitHub's message (`Head branch was modified. Review and try the merge again.`).
        message: String,
    },
    /// `PUT …/merge` answered 405: the PR cannot be merged now (conflicts, required
    /// reviews or checks, branch protection). Nothing was merged.
    #[error("{what}: not mergeable: {message}")]
    NotMergeable { what: String, message: String },
    /// 404: the repository, PR, label or user does not exist (or is hidden from us).
    #[error("{what}: not found (404)")]
    NotFound { what: String },
    /// 401: the token is missing, expired or revoked (after one refresh for an App).
    #[error("{what}: bad credentials (401): {message}")]
    Unauthorized { what: String, message: String },
    /// 403 that is not a rate limit: the token lacks a permission or the action is
    /// not allowed.
    #[error("{what}: forbidden (403): {message}")]
    Forbidden { what: String, message: String },
    /// Primary or secondary rate limit on every attempt, or a wait longer than
    /// [`RetryPolicy::max_rate_limit_wait`](super::RetryPolicy::max_rate_limit_wait).
    #[error("{what}: rate limited ({status}); retry in {retry_after_secs} s")]
    RateLimited {
        what: String,
        status: u16,
        /// How long GitHub asked us to wait (0 if it did not say).
        retry_after_secs: u64,
    },
    /// 5xx on every attempt (or once, for a request that is not safe to repeat).
    #[error("{what}: server error {status} after {attempts} attempt(s)")]
    Server {
        what: String,
        status: u16,
        attempts: u32,
    },
    /// 422 or another 4xx: the request itself is wrong (invalid field, PR already
    /// exists for the branch, …).
    #[error("{what}: rejected with {status}: {message}")]
    Rejected {
        what: String,
        status: u16,
        message: String,
    },
    /// No complete answer within the request timeout, on every attempt.
    #[error("{what}: timed out after {attempts} attempt(s)")]
    Timeout { what: String, attempts: u32 },
    /// Could not connect or the connection broke, on every attempt.
    #[error("{what}: connection failed after {attempts} attempt(s): {detail}")]
    Connection {
        what: String,
        attempts: u32,
        detail: String,
    },
    /// The answer is not what GitHub's API describes (bad JSON, a missing field, a
    /// `Link` to another host, a body over the size limit).
    #[error("{what}: invalid response: {detail}")]
    InvalidResponse { what: String, detail: String },
    /// The client configuration is unusable (bad API URL, unreadable private key).
    #[error("GitHub configuration: {detail}")]
    Config { detail: String },
}

impl ForgeError {
    /// Whether trying again later can succeed without anyone changing anything.
    ///
    /// [`HeadMoved`](Self::HeadMoved) is not: the same request will keep failing; the
    /// caller must re-read the checks on the new head and decide again.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Timeout { .. }
                | Self::Connection { .. }
        )
    }

    /// The variant name in snake case, for metric labels.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::HeadMoved { .. } => "head_moved",
            Self::NotMergeable { .. } => "not_mergeable",
            Self::NotFound { .. } => "not_found",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server",
            Self::Rejected { .. } => "rejected",
            Self::Timeout { .. } => "timeout",
            Self::Connection { .. } => "connection",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::Config { .. } => "config",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_retryability() {
        let what = || "GET /x".to_owned();
        let cases = [
            (
                ForgeError::HeadMoved {
                    what: what(),
                    expected_sha: "abc".into(),
                    message: "Head branch was modified".into(),
                },
                "head_moved",
                false,
            ),
            (
                ForgeError::NotMergeable {
                    what: what(),
                    message: "m".into(),
                },
                "not_mergeable",
                false,
            ),
            (ForgeError::NotFound { what: what() }, "not_found", false),
            (
                ForgeError::Unauthorized {
                    what: what(),
                    message: "m".into(),
                },
                "unauthorized",
                false,
            ),
            (
                ForgeError::Forbidden {
                    what: what(),
                    message: "m".into(),
                },
                "forbidden",
                false,
            ),
            (
                ForgeError::RateLimited {
                    what: what(),
                    status: 403,
                    retry_after_secs: 60,
                },
                "rate_limited",
                true,
            ),
            (
                ForgeError::Server {
                    what: what(),
                    status: 502,
                    attempts: 3,
                },
                "server",
                true,
            ),
            (
                ForgeError::Rejected {
                    what: what(),
                    status: 422,
                    message: "m".into(),
                },
                "rejected",
                false,
            ),
            (
                ForgeError::Timeout {
                    what: what(),
                    attempts: 2,
                },
                "timeout",
                true,
            ),
            (
                ForgeError::Connection {
                    what: what(),
                    attempts: 2,
                    detail: "refused".into(),
                },
                "connection",
                true,
            ),
            (
                ForgeError::InvalidResponse {
                    what: what(),
                    detail: "d".into(),
                },
                "invalid_response",
                false,
            ),
            (ForgeError::Config { detail: "d".into() }, "config", false),
        ];
        for (error, label, retryable) in cases {
            assert_eq!(error.metric_label(), label);
            assert_eq!(error.is_retryable(), retryable, "{error}");
        }
    }
}
