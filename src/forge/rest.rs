//! What the forge clients share over HTTP (pure: caches and arithmetic; the clients
//! do the I/O): the conditional-request cache and answers from the webhook feed,
//! back-off, the rate-limit budget, `Link` pages and the errors of final statuses.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::ForgeError;
use super::feed::{Watch, WebhookFeed};
use super::github::RetryPolicy;
use super::stats::ForgeStats;

/// A final answer (2xx, 304 turned into the cached 2xx, or a 4xx for the caller).
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: String,
    /// The `Link` header (of the cached answer for a 304).
    pub(super) link: Option<String>,
}

pub(super) struct CachedGet {
    pub(super) etag: String,
    pub(super) status: u16,
    pub(super) body: String,
    pub(super) link: Option<String>,
    /// The webhook feed's generation when the request that last confirmed this answer
    /// was sent, and when that was.
    pub(super) generation: u64,
    pub(super) confirmed_at: DateTime<Utc>,
}

/// `ETag`s and bodies of GET answers by path; the oldest entry goes when full.
pub(super) struct EtagCache {
    capacity: usize,
    entries: HashMap<String, CachedGet>,
    order: VecDeque<String>,
}

impl EtagCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(super) fn get(&self, path: &str) -> Option<&CachedGet> {
        self.entries.get(path)
    }

    pub(super) fn get_mut(&mut self, path: &str) -> Option<&mut CachedGet> {
        self.entries.get_mut(path)
    }

    pub(super) fn put(&mut self, path: String, entry: CachedGet) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(path.clone(), entry).is_none() {
            self.order.push_back(path);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.entries.remove(&old);
                }
            }
        }
    }
}

impl EtagCache {
    /// The last answer to `path`, if the webhook `feed` proves it unchanged (`watch` on
    /// `key`) since it was confirmed, less than the feed's resync period before `now`.
    pub(super) fn proven_by(
        &self,
        path: &str,
        feed: &WebhookFeed,
        (watch, key): (Watch, &str),
        now: DateTime<Utc>,
    ) -> Option<Reply> {
        let cached = self.get(path)?;
        let fresh = now - cached.confirmed_at < feed.resync();
        (fresh && feed.unchanged(watch, key, cached.generation)).then(|| Reply {
            status: cached.status,
            body: cached.body.clone(),
            link: cached.link.clone(),
        })
    }

    /// A 304 to a conditional GET of `path`: the cached answer, confirmed as of the
    /// feed generation and the time the request was sent; `None` when nothing is
    /// cached (the 304 answered a request without `If-None-Match`).
    pub(super) fn confirm(
        &mut self,
        path: &str,
        (generation, sent_at): (u64, DateTime<Utc>),
    ) -> Option<Reply> {
        let cached = self.get_mut(path)?;
        cached.generation = generation;
        cached.confirmed_at = sent_at;
        Some(Reply {
            status: cached.status,
            body: cached.body.clone(),
            link: cached.link.clone(),
        })
    }
}

/// The error of a 304 that answered a request without `If-None-Match`.
pub(super) fn unasked_304(what: String) -> ForgeError {
    ForgeError::InvalidResponse {
        what,
        detail: "304 Not Modified to a request without If-None-Match".into(),
    }
}

/// Exponential back-off with jitter (50–100 % of the nominal wait).
pub(super) fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let nominal = policy
        .base_backoff
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(policy.max_backoff);
    nominal.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// Time from `now` until the Unix second `at` (zero if past).
pub(super) fn until(now: DateTime<Utc>, at: i64) -> Duration {
    let millis = at.saturating_mul(1000) - now.timestamp_millis();
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// How long to wait before sending, when the last answer said the budget is spent and
/// it has not reset yet (zero: send now); a [`ForgeError::RateLimited`] (as `refused_with`)
/// when that is longer than the policy waits.
pub(super) fn budget_wait(
    stats: &ForgeStats,
    now: DateTime<Utc>,
    policy: &RetryPolicy,
    (what, refused_with): (&dyn Fn() -> String, u16),
) -> Result<Duration, ForgeError> {
    if stats.rate_limit_remaining() != Some(0) {
        return Ok(Duration::ZERO);
    }
    let Some(reset) = stats.rate_limit_reset() else {
        return Ok(Duration::ZERO);
    };
    let wait = until(now, reset);
    if wait > policy.max_rate_limit_wait {
        return Err(ForgeError::RateLimited {
            what: what(),
            status: refused_with,
            retry_after_secs: wait.as_secs(),
        });
    }
    Ok(wait)
}

/// The path and query of a `Link` URL, which must point under the API root `api`.
pub(super) fn relative_link(link: &str, api: &url::Url, what: &str) -> Result<String, ForgeError> {
    let invalid = |detail: String| ForgeError::InvalidResponse {
        what: what.to_owned(),
        detail,
    };
    let url = url::Url::parse(link).map_err(|e| invalid(format!("Link {link:?}: {e}")))?;
    if url.host_str() != api.host_str()
        || url.port_or_known_default() != api.port_or_known_default()
    {
        return Err(invalid(format!("Link {link:?} leaves the API host")));
    }
    let path = url
        .path()
        .strip_prefix(api.path().trim_end_matches('/'))
        .ok_or_else(|| invalid(format!("Link {link:?} is outside the API root")))?;
    Ok(match url.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    })
}

/// The error for a final non-2xx `status` that the caller does not handle itself.
pub(super) fn status_error_of(status: u16, what: String, message: String) -> ForgeError {
    match status {
        401 => ForgeError::Unauthorized { what, message },
        403 => ForgeError::Forbidden { what, message },
        404 => ForgeError::NotFound { what },
        500..=599 => ForgeError::Server {
            what,
            status,
            attempts: 1,
        },
        _ => ForgeError::Rejected {
            what,
            status,
            message,
        },
    }
}
