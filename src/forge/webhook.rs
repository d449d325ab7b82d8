//! GitHub webhooks: signature check, payload parsing and delivery de-duplication
//! (pure: no I/O; the HTTP route that uses them lives in `crate::http`).
//!
//! A receiver (1) refuses bodies over [`MAX_WEBHOOK_BODY_BYTES`], (2) checks
//! `X-Hub-Signature-256` with [`verify_signature`] before looking at the body,
//! (3) drops a `X-GitHub-Delivery` id it has seen ([`DeliveryDeduplicator`]) — GitHub
//! redelivers on timeouts and on request — and (4) turns the body into a
//! [`WebhookEvent`] with [`parse_webhook`] (`X-GitHub-Event` names the event).

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use thiserror::Error;

use super::RepoName;

/// The largest webhook body accepted (1 MiB). `issue_comment` and `pull_request`
/// payloads are tens of KiB (a comment or PR body is at most 65 536 characters); a
/// larger body is refused rather than buffered. A refused event is not lost for
/// good: the controller also polls the autobump PR's comments.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 1024 * 1024;

/// Whether `signature_header` (`X-Hub-Signature-256: sha256=<64 hex digits>`) is the
/// HMAC-SHA256 of `body` under `secret`. The comparison takes the same time wherever
/// the first difference is. A missing prefix, bad hex or an empty secret is `false`.
#[must_use]
pub fn verify_signature(secret: &[u8], body: &[u8], signature_header: &str) -> bool {
    if secret.is_empty() {
        return false;
    }
    let Some(hex) = signature_header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// `sha256=<hex>` for `body` under `secret`: what GitHub sends (for tests and for
/// re-signing forwarded deliveries).
#[must_use]
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    use std::fmt::Write as _;
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    let mut out = String::from("sha256=");
    for byte in mac.finalize().into_bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| char::from(c).to_digit(16);
            u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()
        })
        .collect()
}

/// [`WebhookError::TooLarge`] for a body over [`MAX_WEBHOOK_BODY_BYTES`].
pub(crate) fn within_limit(event: &str, body: &[u8]) -> Result<(), WebhookError> {
    if body.len() > MAX_WEBHOOK_BODY_BYTES {
        return Err(WebhookError::TooLarge {
            event: event.to_owned(),
            size: body.len(),
            limit: MAX_WEBHOOK_BODY_BYTES,
        });
    }
    Ok(())
}

/// A webhook body that cannot be used.
#[derive(Debug, Error)]
pub enum WebhookError {
    /// Over [`MAX_WEBHOOK_BODY_BYTES`].
    #[error("{event}: body of {size} bytes is over the limit of {limit}")]
    TooLarge {
        event: String,
        size: usize,
        limit: usize,
    },
    /// Not JSON, or missing a field the event must have.
    #[error("{event}: invalid payload: {detail}")]
    InvalidPayload { event: String, detail: String },
}

impl WebhookError {
    /// Never: the same body will fail again.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// The variant name in snake case, for metric labels.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::InvalidPayload { .. } => "invalid_payload",
        }
    }
}

/// A webhook delivery, reduced to what autobump uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// `issue_comment`: a comment on an issue or a PR's conversation.
    IssueComment(IssueCommentEvent),
    /// `pull_request`.
    PullRequest(PullRequestEvent),
    /// `status`, `check_run` or `check_suite`: a check on a commit changed.
    Checks(ChecksEvent),
    /// `ping`, sent when the hook is created.
    Ping,
    /// Any other event (the receiver answers 2xx and ignores it).
    Other { event: String },
}

/// `issue_comment` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommentAction {
    Created,
    Edited,
    Deleted,
    #[serde(other)]
    Other,
}

/// A comment was created, edited or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueCommentEvent {
    pub action: CommentAction,
    pub repo: RepoName,
    /// The issue or PR number.
    pub number: u64,
    /// Whether the issue is a pull request (`issue.pull_request` is present).
    pub is_pull_request: bool,
    /// Whether the issue or PR is open.
    pub issue_open: bool,
    /// The issue's or PR's author.
    pub issue_author: String,
    /// The issue's or PR's description (autobump's PRs carry the policy's marker).
    pub issue_body: String,
    pub comment_id: u64,
    pub body: String,
    /// The comment author's login.
    pub author: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The comment's page.
    pub html_url: String,
    /// Who caused the event (for `deleted`, possibly not the author).
    pub sender: String,
}

/// Which kind of check a [`ChecksEvent`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksKind {
    /// A commit status (`status` event).
    Status,
    /// A check run or check suite (`check_run`, `check_suite`).
    CheckRun,
}

/// A commit status or check run on `sha` was created or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksEvent {
    pub kind: ChecksKind,
    pub repo: RepoName,
    /// The commit the check is on.
    pub sha: String,
}

/// `pull_request` actions autobump reacts to; the rest are [`Other`](Self::Other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullRequestAction {
    Opened,
    Reopened,
    Synchronize,
    Closed,
    Edited,
    Labeled,
    Unlabeled,
    #[serde(other)]
    Other,
}

/// Something happened to a PR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestEvent {
    pub action: PullRequestAction,
    pub repo: RepoName,
    pub number: u64,
    /// The PR author's login.
    pub author: String,
    pub head_branch: String,
    pub head_sha: String,
    pub base_branch: String,
    pub open: bool,
    pub merged: bool,
    pub labels: Vec<String>,
    pub sender: String,
}

mod payload {
    use chrono::{DateTime, Utc};
    use serde::Deserialize;

    use super::{CommentAction, PullRequestAction};

    #[derive(Deserialize)]
    pub struct User {
        pub login: String,
    }

    #[derive(Deserialize)]
    pub struct Repository {
        pub full_name: String,
    }

    #[derive(Deserialize)]
    pub struct Issue {
        pub number: u64,
        /// Present (an object of URLs) only when the issue is a PR.
        #[serde(default)]
        pub pull_request: Option<serde_json::Value>,
        pub state: String,
        pub user: User,
        #[serde(default)]
        pub body: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Comment {
        pub id: u64,
        #[serde(default)]
        pub body: Option<String>,
        pub user: User,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
        pub html_url: String,
    }

    /// `status`: the commit is the payload's `sha`.
    #[derive(Deserialize)]
    pub struct Status {
        pub sha: String,
        pub repository: Repository,
    }

    #[derive(Deserialize)]
    pub struct HeadSha {
        pub head_sha: String,
    }

    #[derive(Deserialize)]
    pub struct CheckRun {
        pub check_run: HeadSha,
        pub repository: Repository,
    }

    #[derive(Deserialize)]
    pub struct CheckSuite {
        pub check_suite: HeadSha,
        pub repository: Repository,
    }

    #[derive(Deserialize)]
    pub struct IssueComment {
        pub action: CommentAction,
        pub issue: Issue,
        pub comment: Comment,
        pub repository: Repository,
        pub sender: User,
    }

    #[derive(Deserialize)]
    pub struct Branch {
        #[serde(rename = "ref")]
        pub ref_: String,
        pub sha: String,
    }

    #[derive(Deserialize)]
    pub struct Label {
        pub name: String,
    }

    #[derive(Deserialize)]
    pub struct Pull {
        pub number: u64,
        pub state: String,
        pub user: User,
        pub head: Branch,
        pub base: Branch,
        #[serde(default)]
        pub merged: Option<bool>,
        #[serde(default)]
        pub labels: Vec<Label>,
    }

    #[derive(Deserialize)]
    pub struct PullRequestPayload {
        pub action: PullRequestAction,
        pub pull_request: Pull,
        pub repository: Repository,
        pub sender: User,
    }
}

/// Parses the body of a delivery of `event` (the `X-GitHub-Event` header).
pub fn parse_webhook(event: &str, body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    within_limit(event, body)?;
    let invalid = |detail: String| WebhookError::InvalidPayload {
        event: event.to_owned(),
        detail,
    };
    let repo = |full_name: &str| {
        RepoName::parse(full_name)
            .ok_or_else(|| invalid(format!("repository.full_name {full_name:?}")))
    };
    match event {
        "issue_comment" => {
            let p: payload::IssueComment =
                serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
            Ok(WebhookEvent::IssueComment(IssueCommentEvent {
                action: p.action,
                repo: repo(&p.repository.full_name)?,
                number: p.issue.number,
                is_pull_request: p.issue.pull_request.is_some_and(|v| !v.is_null()),
                issue_open: p.issue.state == "open",
                issue_author: p.issue.user.login,
                issue_body: p.issue.body.unwrap_or_default(),
                comment_id: p.comment.id,
                body: p.comment.body.unwrap_or_default(),
                author: p.comment.user.login,
                created_at: p.comment.created_at,
                updated_at: p.comment.updated_at,
                html_url: p.comment.html_url,
                sender: p.sender.login,
            }))
        }
        "status" | "check_run" | "check_suite" => {
            let (kind, sha, full_name) = match event {
                "status" => {
                    let p: payload::Status =
                        serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
                    (ChecksKind::Status, p.sha, p.repository.full_name)
                }
                "check_run" => {
                    let p: payload::CheckRun =
                        serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
                    (
                        ChecksKind::CheckRun,
                        p.check_run.head_sha,
                        p.repository.full_name,
                    )
                }
                _ => {
                    let p: payload::CheckSuite =
                        serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
                    (
                        ChecksKind::CheckRun,
                        p.check_suite.head_sha,
                        p.repository.full_name,
                    )
                }
            };
            Ok(WebhookEvent::Checks(ChecksEvent {
                kind,
                repo: repo(&full_name)?,
                sha,
            }))
        }
        "pull_request" => {
            let p: payload::PullRequestPayload =
                serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
            let pr = p.pull_request;
            Ok(WebhookEvent::PullRequest(PullRequestEvent {
                action: p.action,
                repo: repo(&p.repository.full_name)?,
                number: pr.number,
                author: pr.user.login,
                head_branch: pr.head.ref_,
                head_sha: pr.head.sha,
                base_branch: pr.base.ref_,
                open: pr.state == "open",
                merged: pr.merged.unwrap_or(false),
                labels: pr.labels.into_iter().map(|l| l.name).collect(),
                sender: p.sender.login,
            }))
        }
        "ping" => Ok(WebhookEvent::Ping),
        other => Ok(WebhookEvent::Other {
            event: other.to_owned(),
        }),
    }
}

/// Remembers the last `capacity` delivery ids (`X-GitHub-Delivery`) so a redelivered
/// event is handled once. Memory is bounded: the oldest id is forgotten first.
#[derive(Debug)]
pub struct DeliveryDeduplicator {
    capacity: usize,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl DeliveryDeduplicator {
    /// Remembers up to `capacity` ids (at least 1).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    /// `true` the first time `delivery_id` is offered (handle the event), `false` for
    /// a repeat (drop it).
    pub fn first_delivery(&self, delivery_id: &str) -> bool {
        // A poisoned lock only means a panic elsewhere mid-insert; the sets are usable.
        let mut guard = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (set, order) = &mut *guard;
        if !set.insert(delivery_id.to_owned()) {
            return false;
        }
        order.push_back(delivery_id.to_owned());
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }
}

impl Default for DeliveryDeduplicator {
    /// The last 10 000 deliveries (about 1 MB).
    fn default() -> Self {
        Self::new(10_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_and_reject_tampering() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        // The example from GitHub's "Validating webhook deliveries" page.
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, body), expected);
        assert!(verify_signature(secret, body, expected));
        assert!(!verify_signature(secret, b"Hello, World?", expected));
        assert!(!verify_signature(b"other", body, expected));
        assert!(!verify_signature(b"", body, expected));
        assert!(!verify_signature(secret, body, &expected[7..]));
        assert!(!verify_signature(secret, body, "sha256=zz"));
        assert!(!verify_signature(
            secret,
            body,
            &expected.replace("sha256", "sha1")
        ));
        assert!(!verify_signature(
            secret,
            body,
            &expected.replace("757107", "75710g")
        ));
    }

    #[test]
    fn deliveries_are_deduplicated_with_bounded_memory() {
        let dedup = DeliveryDeduplicator::new(2);
        assert!(dedup.first_delivery("a"));
        assert!(!dedup.first_delivery("a"));
        assert!(dedup.first_delivery("b"));
        assert!(dedup.first_delivery("c"));
        // "a" was forgotten to make room.
        assert!(dedup.first_delivery("a"));
        assert!(!dedup.first_delivery("c"));
    }

    #[test]
    fn oversized_and_broken_bodies_are_errors() {
        let big = vec![b' '; MAX_WEBHOOK_BODY_BYTES + 1];
        let error = parse_webhook("issue_comment", &big).unwrap_err();
        assert_eq!(error.metric_label(), "too_large");
        let error = parse_webhook("pull_request", b"{}").unwrap_err();
        assert_eq!(error.metric_label(), "invalid_payload");
        assert!(!error.is_retryable());
        assert_eq!(
            parse_webhook("push", b"{}").unwrap(),
            WebhookEvent::Other {
                event: "push".into()
            }
        );
    }
}
