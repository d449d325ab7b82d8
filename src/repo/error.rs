//! Repository errors (pure types) and the mapping of libgit2's errors onto them.

use std::path::PathBuf;

use thiserror::Error;

/// What went wrong with a git repository. Every variant that concerns a remote names
/// it by its URL with any user or password removed ([`super::redact_url`]).
///
/// [`RepoError::is_retryable`] says whether trying again later can succeed without
/// anyone changing anything (the controller requeues), or a person must act (bad
/// credentials, a missing branch, a push the server refuses).
#[derive(Debug, Error)]
pub enum RepoError {
    /// The server wants credentials and none are configured, the configured ones were
    /// rejected (after exactly one attempt), do not fit the transport (a token for an
    /// `ssh://` URL), or the account lacks access (403).
    #[error("{url}: authentication failed: {detail}")]
    Auth { url: String, detail: String },
    /// The TLS certificate or SSH host key was not accepted.
    #[error("{url}: certificate not accepted: {detail}")]
    Certificate { url: String, detail: String },
    /// The repository does not exist (404, or no repository at a `file://` path).
    #[error("{url}: repository not found: {detail}")]
    RepositoryNotFound { url: String, detail: String },
    /// The branch does not exist on the remote.
    #[error("{url}: branch {branch} not found")]
    BranchNotFound { url: String, branch: String },
    /// A commit asked for is not in the repository, even after fetching.
    #[error("{url}: commit {sha} not found")]
    CommitNotFound { url: String, sha: String },
    /// Connecting or transferring failed (refused, reset, DNS, timeout, 5xx).
    #[error("{url}: network error: {detail}")]
    Network { url: String, detail: String },
    /// The server refused the push for a reason other than a race (a protected
    /// branch, a hook that declined, no write access reported as a push status).
    #[error("{url}: push of {branch} rejected: {detail}")]
    PushRejected {
        url: String,
        branch: String,
        detail: String,
    },
    /// A direct push lost the race against other pushes to the base branch on every
    /// attempt (each attempt re-fetched and re-applied the rewrite).
    #[error("{url}: push to {branch} lost to concurrent pushes on all {attempts} attempts")]
    PushRace {
        url: String,
        branch: String,
        attempts: u32,
    },
    /// The local cache could not be used, even after it was deleted and cloned again
    /// (disk full, permissions, a path that is not a directory).
    #[error("cache {}: {detail}", path.display())]
    Cache { path: PathBuf, detail: String },
    /// The caller asked for something that cannot be done (a SHA that is not 40 hex
    /// digits, an invalid branch or URL).
    #[error("invalid request: {detail}")]
    InvalidRequest { detail: String },
    /// Any other libgit2 failure.
    #[error("{url}: git: {detail}")]
    Git { url: String, detail: String },
    /// The blocking task running git panicked or was cancelled.
    #[error("git task failed: {detail}")]
    Task { detail: String },
}

impl RepoError {
    /// Whether trying again later can succeed without anyone changing anything.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Network { .. } | Self::PushRace { .. } | Self::Git { .. } | Self::Task { .. }
        )
    }

    /// The variant name in snake case, for metric labels.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Auth { .. } => "auth",
            Self::Certificate { .. } => "certificate",
            Self::RepositoryNotFound { .. } => "repository_not_found",
            Self::BranchNotFound { .. } => "branch_not_found",
            Self::CommitNotFound { .. } => "commit_not_found",
            Self::Network { .. } => "network",
            Self::PushRejected { .. } => "push_rejected",
            Self::PushRace { .. } => "push_race",
            Self::Cache { .. } => "cache",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::Git { .. } => "git",
            Self::Task { .. } => "task",
        }
    }
}

/// Where in an operation a libgit2 error happened: talking to the remote, or reading
/// and writing the local cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Remote,
    Local,
}

/// An error before it is final: a local one may mean the cache is corrupt, which the
/// caller repairs by deleting the cache and trying once more.
#[derive(Debug)]
pub(super) enum Failure {
    /// Final.
    Error(RepoError),
    /// The cache looks damaged.
    Corrupt(String),
}

impl From<RepoError> for Failure {
    fn from(e: RepoError) -> Self {
        Self::Error(e)
    }
}

/// Classes of libgit2 errors that, on the local side, mean the cache's files are
/// damaged or half-written (a crash left a lock, an object is truncated).
fn is_local_damage(e: &git2::Error) -> bool {
    use git2::ErrorClass as C;
    matches!(
        e.class(),
        C::Odb
            | C::Zlib
            | C::Repository
            | C::Reference
            | C::Index
            | C::Object
            | C::Tree
            | C::Config
            | C::Indexer
            | C::Filesystem
            | C::Sha1
    ) || e.code() == git2::ErrorCode::Locked
}

/// Maps a libgit2 error. `auth_refused` is set when our credentials callback refused
/// to answer (no or wrong credentials): whatever libgit2 says then, it is an auth
/// failure.
pub(super) fn classify(e: &git2::Error, phase: Phase, url: &str, auth_refused: bool) -> Failure {
    use git2::{ErrorClass as C, ErrorCode as K};
    let url = url.to_owned();
    let detail = e.message().to_owned();
    if auth_refused || e.code() == K::Auth {
        return Failure::Error(RepoError::Auth { url, detail });
    }
    if e.code() == K::Certificate {
        return Failure::Error(RepoError::Certificate { url, detail });
    }
    if phase == Phase::Local {
        return if is_local_damage(e) || e.class() == C::Os {
            Failure::Corrupt(detail)
        } else {
            Failure::Error(RepoError::Git { url, detail })
        };
    }
    if e.class() == C::Http && (detail.contains("401") || detail.contains("403")) {
        return Failure::Error(RepoError::Auth { url, detail });
    }
    if (e.class() == C::Http && detail.contains("404"))
        || (e.code() == K::NotFound && matches!(e.class(), C::Repository | C::Os))
        // The local (`file://`) transport reports a missing path only in words.
        || detail.starts_with("failed to resolve path")
        || detail.starts_with("could not find repository")
    {
        return Failure::Error(RepoError::RepositoryNotFound { url, detail });
    }
    if matches!(e.class(), C::Net | C::Http | C::Ssl | C::Ssh | C::Os) || e.code() == K::Timeout {
        return Failure::Error(RepoError::Network { url, detail });
    }
    if is_local_damage(e) {
        // Writing what was fetched into the cache failed.
        return Failure::Corrupt(detail);
    }
    Failure::Error(RepoError::Git { url, detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_retryability() {
        let url = || "https://example.com/a.git".to_owned();
        let cases = [
            (
                RepoError::Auth {
                    url: url(),
                    detail: String::new(),
                },
                "auth",
                false,
            ),
            (
                RepoError::Network {
                    url: url(),
                    detail: String::new(),
                },
                "network",
                true,
            ),
            (
                RepoError::PushRace {
                    url: url(),
                    branch: "main".into(),
                    attempts: 3,
                },
                "push_race",
                true,
            ),
            (
                RepoError::PushRejected {
                    url: url(),
                    branch: "main".into(),
                    detail: "protected branch hook declined".into(),
                },
                "push_rejected",
                false,
            ),
            (
                RepoError::BranchNotFound {
                    url: url(),
                    branch: "main".into(),
                },
                "branch_not_found",
                false,
            ),
        ];
        for (e, label, retry) in cases {
            assert_eq!(e.metric_label(), label, "{e}");
            assert_eq!(e.is_retryable(), retry, "{e}");
        }
    }

    #[test]
    fn classifies_libgit2_errors() {
        use git2::{ErrorClass as C, ErrorCode as K};
        let e = |code, class, msg: &str| git2::Error::new(code, class, msg);
        let u = "https://h/r.git";
        let remote = |err: &git2::Error| match classify(err, Phase::Remote, u, false) {
            Failure::Error(e) => e.metric_label(),
            Failure::Corrupt(_) => "corrupt",
        };
        assert_eq!(
            remote(&e(
                K::GenericError,
                C::Http,
                "unexpected http status code: 403"
            )),
            "auth"
        );
        assert_eq!(
            remote(&e(
                K::GenericError,
                C::Http,
                "unexpected http status code: 404"
            )),
            "repository_not_found"
        );
        assert_eq!(
            remote(&e(K::GenericError, C::Os, "failed to connect: refused")),
            "network"
        );
        assert_eq!(
            remote(&e(K::GenericError, C::Os, "failed to resolve path '/x'")),
            "repository_not_found"
        );
        assert_eq!(remote(&e(K::Auth, C::Callback, "x")), "auth");
        assert_eq!(remote(&e(K::GenericError, C::Odb, "x")), "corrupt");
        assert!(matches!(
            classify(&e(K::GenericError, C::Net, "x"), Phase::Remote, u, true),
            Failure::Error(RepoError::Auth { .. })
        ));
        assert!(matches!(
            classify(&e(K::GenericError, C::Zlib, "x"), Phase::Local, u, false),
            Failure::Corrupt(_)
        ));
    }
}
