//! Request counters of the registry client (pure: atomics only).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a request was for; each kind has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `GET /v2/<name>/tags/list` (every page).
    Tags,
    /// `HEAD /v2/<name>/manifests/<ref>`.
    ManifestHead,
    /// `GET /v2/<name>/manifests/<ref>`.
    ManifestGet,
    /// `GET /v2/<name>/blobs/<digest>`.
    Blob,
    /// A bearer token from the challenge's realm.
    Token,
}

impl RequestKind {
    /// Snake-case name, for logs and metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tags => "tags",
            Self::ManifestHead => "manifest_head",
            Self::ManifestGet => "manifest_get",
            Self::Blob => "blob",
            Self::Token => "token",
        }
    }
}

/// Counters shared (via `Arc`) between a [`RegistryClient`](super::RegistryClient) and
/// whoever reports metrics. Every HTTP request sent counts once under its kind,
/// including retries and the unauthenticated request that draws a 401 challenge.
#[derive(Debug, Default)]
pub struct RegistryStats {
    tags: AtomicU64,
    manifest_head: AtomicU64,
    manifest_get: AtomicU64,
    blob: AtomicU64,
    token: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    throttled: AtomicU64,
    backoff_millis: AtomicU64,
    helper_calls: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Tag-list requests (each page counts).
    pub tags: u64,
    pub manifest_head: u64,
    pub manifest_get: u64,
    pub blob: u64,
    pub token: u64,
    /// Requests sent again after a retryable failure (429, 5xx, timeout, connection).
    pub retries: u64,
    /// 429 answers received.
    pub rate_limited: u64,
    /// Requests that waited for the per-registry rate limit.
    pub throttled: u64,
    /// Total time spent waiting between retries (back-off and `Retry-After`).
    pub backoff: Duration,
    /// Credential helpers run (`docker-credential-NAME get`); not requests.
    pub helper_calls: u64,
}

impl StatsSnapshot {
    /// All requests sent, of every kind.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.tags + self.manifest_head + self.manifest_get + self.blob + self.token
    }
}

impl RegistryStats {
    pub(crate) fn count_request(&self, kind: RequestKind) {
        let counter = match kind {
            RequestKind::Tags => &self.tags,
            RequestKind::ManifestHead => &self.manifest_head,
            RequestKind::ManifestGet => &self.manifest_get,
            RequestKind::Blob => &self.blob,
            RequestKind::Token => &self.token,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_retry(&self, waited: Duration) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        let millis = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
        self.backoff_millis.fetch_add(millis, Ordering::Relaxed);
    }

    pub(crate) fn count_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_helper_call(&self) {
        self.helper_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            tags: get(&self.tags),
            manifest_head: get(&self.manifest_head),
            manifest_get: get(&self.manifest_get),
            blob: get(&self.blob),
            token: get(&self.token),
            retries: get(&self.retries),
            rate_limited: get(&self.rate_limited),
            throttled: get(&self.throttled),
            backoff: Duration::from_millis(get(&self.backoff_millis)),
            helper_calls: get(&self.helper_calls),
        }
    }
}
