//! Request counters and the rate-limit budget of the GitHub client (pure: atomics only).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// What a request was for; each kind has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `GET /repos/{o}/{r}/pulls?state=open&head=…`.
    FindPr,
    /// `POST /repos/{o}/{r}/pulls`.
    CreatePr,
    /// `PATCH /repos/{o}/{r}/pulls/{n}`.
    UpdatePr,
    /// `GET /repos/{o}/{r}/pulls/{n}`.
    GetPr,
    /// `GET /repos/{o}/{r}/pulls/{n}/files` (every page).
    ListFiles,
    /// `PUT /repos/{o}/{r}/pulls/{n}/merge`.
    Merge,
    /// `POST /repos/{o}/{r}/issues/{n}/labels`.
    AddLabels,
    /// `DELETE /repos/{o}/{r}/issues/{n}/labels/{name}`.
    RemoveLabel,
    /// `GET /repos/{o}/{r}/issues/{n}/comments` (every page).
    ListComments,
    /// `POST /repos/{o}/{r}/issues/{n}/comments`.
    PostComment,
    /// `GET /repos/{o}/{r}/commits/{sha}/status` (every page).
    CombinedStatus,
    /// `GET /repos/{o}/{r}/commits/{sha}/check-runs` (every page).
    CheckRuns,
    /// `GET /repos/{o}/{r}/collaborators/{user}/permission`.
    Permission,
    /// `POST /app/installations/{id}/access_tokens` (GitHub App auth only).
    InstallationToken,
    /// `GET /repos/{owner}/{repo}/installation` (GitHub App auth only).
    Installation,
    /// `GET /app`: the App itself (GitHub App auth only).
    App,
    /// `GET /projects/:id`: a GitLab project's merge settings (before a merge).
    Project,
}

impl RequestKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 17] = [
        Self::FindPr,
        Self::CreatePr,
        Self::UpdatePr,
        Self::GetPr,
        Self::ListFiles,
        Self::Merge,
        Self::AddLabels,
        Self::RemoveLabel,
        Self::ListComments,
        Self::PostComment,
        Self::CombinedStatus,
        Self::CheckRuns,
        Self::Permission,
        Self::InstallationToken,
        Self::Installation,
        Self::App,
        Self::Project,
    ];

    /// Snake-case name, for logs and metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FindPr => "find_pr",
            Self::CreatePr => "create_pr",
            Self::UpdatePr => "update_pr",
            Self::GetPr => "get_pr",
            Self::ListFiles => "list_files",
            Self::Merge => "merge",
            Self::AddLabels => "add_labels",
            Self::RemoveLabel => "remove_label",
            Self::ListComments => "list_comments",
            Self::PostComment => "post_comment",
            Self::CombinedStatus => "combined_status",
            Self::CheckRuns => "check_runs",
            Self::Permission => "permission",
            Self::InstallationToken => "installation_token",
            Self::Installation => "installation",
            Self::App => "app",
            Self::Project => "project",
        }
    }

    /// Whether the request changes something on GitHub (minting an installation token
    /// does not count: it changes nothing a user sees).
    #[must_use]
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Self::CreatePr
                | Self::UpdatePr
                | Self::Merge
                | Self::AddLabels
                | Self::RemoveLabel
                | Self::PostComment
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters shared (via `Arc`) between a [`GitHub`](super::GitHub) client and whoever
/// reports metrics. Every HTTP request sent counts once under its kind, including
/// retries and conditional requests answered with 304.
#[derive(Debug)]
pub struct ForgeStats {
    by_kind: [AtomicU64; RequestKind::ALL.len()],
    not_modified: AtomicU64,
    from_webhooks: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    backoff_millis: AtomicU64,
    /// `x-ratelimit-remaining` of the last response that had it; -1 before any.
    rate_limit_remaining: AtomicI64,
    /// `x-ratelimit-reset` (Unix seconds) of the last response that had it; -1 before any.
    rate_limit_reset: AtomicI64,
}

impl Default for ForgeStats {
    fn default() -> Self {
        Self {
            by_kind: std::array::from_fn(|_| AtomicU64::new(0)),
            not_modified: AtomicU64::new(0),
            from_webhooks: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            backoff_millis: AtomicU64::new(0),
            rate_limit_remaining: AtomicI64::new(-1),
            rate_limit_reset: AtomicI64::new(-1),
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForgeStatsSnapshot {
    /// Requests sent, indexed like [`RequestKind::ALL`].
    pub by_kind: [u64; RequestKind::ALL.len()],
    /// Conditional GETs answered 304 (served from the `ETag` cache, no rate-limit cost).
    pub not_modified: u64,
    /// Reads answered without a request because webhooks proved them unchanged
    /// (see [`WebhookFeed`](super::WebhookFeed)); not counted as requests.
    pub from_webhooks: u64,
    /// Requests sent again after a retryable failure (5xx, rate limit, timeout,
    /// connection, 401 with a refreshed App token).
    pub retries: u64,
    /// Rate-limit answers (primary or secondary) received.
    pub rate_limited: u64,
    /// Total time spent waiting between attempts (back-off and rate-limit waits).
    pub backoff: Duration,
    /// The remaining primary rate-limit budget GitHub reported last; `None` before the
    /// first response that carried `x-ratelimit-remaining`.
    pub rate_limit_remaining: Option<u64>,
    /// When that budget resets (Unix seconds), as GitHub reported it.
    pub rate_limit_reset: Option<i64>,
}

impl ForgeStatsSnapshot {
    /// Requests of one kind.
    #[must_use]
    pub fn requests_of(&self, kind: RequestKind) -> u64 {
        self.by_kind[kind.index()]
    }

    /// All requests sent, of every kind.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.by_kind.iter().sum()
    }

    /// Requests that change something ([`RequestKind::is_write`]).
    #[must_use]
    pub fn writes(&self) -> u64 {
        RequestKind::ALL
            .iter()
            .filter(|k| k.is_write())
            .map(|k| self.requests_of(*k))
            .sum()
    }

    /// Counters accumulated since `earlier` (the budget fields are this snapshot's).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            by_kind: std::array::from_fn(|i| self.by_kind[i] - earlier.by_kind[i]),
            not_modified: self.not_modified - earlier.not_modified,
            from_webhooks: self.from_webhooks - earlier.from_webhooks,
            retries: self.retries - earlier.retries,
            rate_limited: self.rate_limited - earlier.rate_limited,
            backoff: self.backoff.saturating_sub(earlier.backoff),
            ..*self
        }
    }
}

impl ForgeStats {
    pub(crate) fn count_request(&self, kind: RequestKind) {
        self.by_kind[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_not_modified(&self) {
        self.not_modified.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_from_webhooks(&self) {
        self.from_webhooks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_backoff(&self, waited: Duration) {
        let millis = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
        self.backoff_millis.fetch_add(millis, Ordering::Relaxed);
    }

    pub(crate) fn record_rate_limit(&self, remaining: Option<u64>, reset: Option<i64>) {
        if let Some(remaining) = remaining {
            let remaining = i64::try_from(remaining).unwrap_or(i64::MAX);
            self.rate_limit_remaining
                .store(remaining, Ordering::Relaxed);
        }
        if let Some(reset) = reset {
            self.rate_limit_reset.store(reset, Ordering::Relaxed);
        }
    }

    /// The remaining primary rate-limit budget GitHub reported last (`None` before the
    /// first response), for a gauge.
    #[must_use]
    pub fn rate_limit_remaining(&self) -> Option<u64> {
        u64::try_from(self.rate_limit_remaining.load(Ordering::Relaxed)).ok()
    }

    /// When the budget resets (Unix seconds), as GitHub reported last.
    #[must_use]
    pub fn rate_limit_reset(&self) -> Option<i64> {
        let reset = self.rate_limit_reset.load(Ordering::Relaxed);
        (reset >= 0).then_some(reset)
    }

    /// A consistent-enough copy of all counters (each is read atomically).
    #[must_use]
    pub fn snapshot(&self) -> ForgeStatsSnapshot {
        ForgeStatsSnapshot {
            by_kind: std::array::from_fn(|i| self.by_kind[i].load(Ordering::Relaxed)),
            not_modified: self.not_modified.load(Ordering::Relaxed),
            from_webhooks: self.from_webhooks.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            backoff: Duration::from_millis(self.backoff_millis.load(Ordering::Relaxed)),
            rate_limit_remaining: self.rate_limit_remaining(),
            rate_limit_reset: self.rate_limit_reset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_writes() {
        let stats = ForgeStats::default();
        assert_eq!(stats.rate_limit_remaining(), None);
        stats.count_request(RequestKind::FindPr);
        stats.count_request(RequestKind::FindPr);
        stats.count_request(RequestKind::Merge);
        stats.count_request(RequestKind::InstallationToken);
        stats.record_rate_limit(Some(4999), Some(1_700_000_000));
        let before = stats.snapshot();
        assert_eq!(before.requests_of(RequestKind::FindPr), 2);
        assert_eq!(before.requests(), 4);
        assert_eq!(before.writes(), 1);
        assert_eq!(before.rate_limit_remaining, Some(4999));
        stats.count_request(RequestKind::PostComment);
        let delta = stats.snapshot().since(&before);
        assert_eq!(delta.requests(), 1);
        assert_eq!(delta.writes(), 1);
        for (i, kind) in RequestKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{}", kind.as_str());
        }
    }
}
