//! GitLab webhook deliveries (pure): the `X-Gitlab-Token` check and the payloads of
//! merge request, note (comment), pipeline and job events, reduced to the same
//! [`WebhookEvent`]s GitHub's deliveries become, so one [`WebhookFeed`](super::WebhookFeed)
//! serves both forges.
//!
//! Field names follow GitLab's "Webhook events" documentation: `object_kind`,
//! `object_attributes` (`iid`, `state`, `action`, `source_branch`, `target_branch`,
//! `last_commit.id`, `author_id`; for notes `id`, `note`, `noteable_type`, `url`,
//! `created_at`, `updated_at`), `merge_request` on notes, `project.path_with_namespace`,
//! `user.username`, `labels[].title`; jobs carry `sha` at the top level, pipelines in
//! `object_attributes.sha`.

use chrono::{DateTime, NaiveDateTime, Utc};
use sha2::{Digest, Sha256};

use super::RepoName;
use super::webhook::{
    ChecksEvent, ChecksKind, CommentAction, IssueCommentEvent, PullRequestAction, PullRequestEvent,
    WebhookError, WebhookEvent,
};

/// What stands for an MR author known by id only (note hooks carry `author_id`, not
/// the username): `gitlab-user-id:N`. The GitLab client turns it into the username
/// it learnt from reading MRs.
pub const GITLAB_USER_ID_PREFIX: &str = "gitlab-user-id:";

/// Whether the `X-Gitlab-Token` header is the configured secret, compared in constant
/// time (over SHA-256 digests, so neither content nor length leaks). An empty secret
/// accepts nothing.
#[must_use]
pub fn verify_gitlab_token(secret: &[u8], header: &str) -> bool {
    if secret.is_empty() {
        return false;
    }
    let want = Sha256::digest(secret);
    let got = Sha256::digest(header.as_bytes());
    want.iter()
        .zip(got.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

mod payload {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    pub struct User {
        pub username: String,
    }

    #[derive(Debug, Deserialize)]
    pub struct Project {
        pub path_with_namespace: String,
    }

    #[derive(Debug, Deserialize)]
    pub struct Label {
        pub title: String,
    }

    #[derive(Debug, Deserialize)]
    pub struct LastCommit {
        pub id: String,
    }

    #[derive(Debug, Deserialize)]
    pub struct MrAttributes {
        pub iid: u64,
        pub author_id: u64,
        pub source_branch: String,
        pub target_branch: String,
        pub state: String,
        #[serde(default)]
        pub action: Option<String>,
        #[serde(default)]
        pub oldrev: Option<String>,
        #[serde(default)]
        pub last_commit: Option<LastCommit>,
    }

    #[derive(Debug, Deserialize)]
    pub struct MergeRequestHook {
        pub user: User,
        pub project: Project,
        pub object_attributes: MrAttributes,
        #[serde(default)]
        pub labels: Vec<Label>,
    }

    #[derive(Debug, Deserialize)]
    pub struct NoteAttributes {
        pub id: u64,
        pub note: String,
        pub noteable_type: String,
        pub created_at: String,
        pub updated_at: String,
        #[serde(default)]
        pub url: String,
        #[serde(default)]
        pub system: bool,
        #[serde(default)]
        pub action: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    pub struct NotedMr {
        pub iid: u64,
        pub state: String,
        pub author_id: u64,
        #[serde(default)]
        pub description: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    pub struct NoteHook {
        pub user: User,
        pub project: Project,
        pub object_attributes: NoteAttributes,
        #[serde(default)]
        pub merge_request: Option<NotedMr>,
    }

    #[derive(Debug, Deserialize)]
    pub struct PipelineAttributes {
        pub sha: String,
    }

    #[derive(Debug, Deserialize)]
    pub struct PipelineHook {
        pub project: Project,
        pub object_attributes: PipelineAttributes,
    }

    #[derive(Debug, Deserialize)]
    pub struct JobHook {
        pub sha: String,
        pub project: Project,
    }
}

/// GitLab's hook timestamps: `2026-11-23 10:00:00 UTC` (the documented form), RFC 3339,
/// or with a numeric offset.
fn timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    if let Some(naive) = text.strip_suffix(" UTC")
        && let Ok(at) = NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S")
    {
        return Some(at.and_utc());
    }
    DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S %z")
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// Parses a delivery whose `X-Gitlab-Event` header is `event`.
///
/// # Errors
/// A body over [`MAX_WEBHOOK_BODY_BYTES`](super::webhook::MAX_WEBHOOK_BODY_BYTES), or one
/// that is not the documented payload.
pub fn parse_gitlab_webhook(event: &str, body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    super::webhook::within_limit(event, body)?;
    let invalid = |detail: String| WebhookError::InvalidPayload {
        event: event.to_owned(),
        detail,
    };
    let json = |e: serde_json::Error| invalid(e.to_string());
    match event {
        "Merge Request Hook" => {
            merge_request(serde_json::from_slice(body).map_err(json)?, &invalid)
        }
        "Note Hook" => note(event, serde_json::from_slice(body).map_err(json)?, &invalid),
        "Pipeline Hook" => {
            let p: payload::PipelineHook = serde_json::from_slice(body).map_err(json)?;
            Ok(WebhookEvent::Checks(ChecksEvent {
                kind: ChecksKind::CheckRun,
                repo: repo(&p.project.path_with_namespace, &invalid)?,
                sha: p.object_attributes.sha,
            }))
        }
        "Job Hook" => {
            let p: payload::JobHook = serde_json::from_slice(body).map_err(json)?;
            Ok(WebhookEvent::Checks(ChecksEvent {
                kind: ChecksKind::Status,
                repo: repo(&p.project.path_with_namespace, &invalid)?,
                sha: p.sha,
            }))
        }
        other => Ok(WebhookEvent::Other {
            event: other.to_owned(),
        }),
    }
}

type Invalid<'a> = dyn Fn(String) -> WebhookError + 'a;

fn repo(path: &str, invalid: &Invalid<'_>) -> Result<RepoName, WebhookError> {
    path.rsplit_once('/')
        .map(|(namespace, name)| RepoName::gitlab(namespace, name))
        .ok_or_else(|| invalid(format!("project.path_with_namespace {path:?}")))
}

fn merge_request(
    p: payload::MergeRequestHook,
    invalid: &Invalid<'_>,
) -> Result<WebhookEvent, WebhookError> {
    let a = p.object_attributes;
    let action = match a.action.as_deref() {
        Some("open") => PullRequestAction::Opened,
        Some("reopen") => PullRequestAction::Reopened,
        Some("close" | "merge") => PullRequestAction::Closed,
        Some("update") if a.oldrev.is_some() => PullRequestAction::Synchronize,
        Some("update") => PullRequestAction::Edited,
        _ => PullRequestAction::Other,
    };
    Ok(WebhookEvent::PullRequest(PullRequestEvent {
        action,
        repo: repo(&p.project.path_with_namespace, invalid)?,
        number: a.iid,
        author: format!("{GITLAB_USER_ID_PREFIX}{}", a.author_id),
        head_branch: a.source_branch,
        head_sha: a.last_commit.map(|c| c.id).unwrap_or_default(),
        base_branch: a.target_branch,
        open: a.state == "opened",
        merged: a.state == "merged",
        labels: p.labels.into_iter().map(|l| l.title).collect(),
        sender: p.user.username,
    }))
}

fn note(
    event: &str,
    p: payload::NoteHook,
    invalid: &Invalid<'_>,
) -> Result<WebhookEvent, WebhookError> {
    let a = p.object_attributes;
    let Some(mr) = p
        .merge_request
        .filter(|_| a.noteable_type == "MergeRequest")
    else {
        return Ok(WebhookEvent::Other {
            event: format!("{event} on {}", a.noteable_type),
        });
    };
    if a.system {
        return Ok(WebhookEvent::Other {
            event: format!("{event} (system note)"),
        });
    }
    let at = |field: &str, text: &str| {
        timestamp(text).ok_or_else(|| invalid(format!("{field} {text:?}")))
    };
    Ok(WebhookEvent::IssueComment(IssueCommentEvent {
        action: match a.action.as_deref() {
            Some("update") => CommentAction::Edited,
            _ => CommentAction::Created,
        },
        repo: repo(&p.project.path_with_namespace, invalid)?,
        number: mr.iid,
        is_pull_request: true,
        issue_open: mr.state == "opened",
        issue_author: format!("{GITLAB_USER_ID_PREFIX}{}", mr.author_id),
        issue_body: mr.description.unwrap_or_default(),
        comment_id: a.id,
        body: a.note,
        author: p.user.username.clone(),
        created_at: at("object_attributes.created_at", &a.created_at)?,
        updated_at: at("object_attributes.updated_at", &a.updated_at)?,
        html_url: a.url,
        sender: p.user.username,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(verify_gitlab_token(b"s3cret", "s3cret"));
        assert!(!verify_gitlab_token(b"s3cret", "s3cre"));
        assert!(!verify_gitlab_token(b"s3cret", "s3cret "));
        assert!(!verify_gitlab_token(b"", ""));
    }

    #[test]
    fn hook_timestamps_in_each_form() {
        let want: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        for text in [
            "2026-11-23 10:00:00 UTC",
            "2026-11-23T10:00:00Z",
            "2026-11-23T11:00:00+01:00",
            "2026-11-23 11:00:00 +0100",
        ] {
            assert_eq!(timestamp(text), Some(want), "{text}");
        }
        assert_eq!(timestamp("yesterday"), None);
    }

    #[test]
    fn a_note_on_an_mr_is_a_comment_on_it() {
        let body = serde_json::json!({
            "object_kind": "note",
            "user": {"username": "alice"},
            "project": {"path_with_namespace": "group/sub/infra"},
            "object_attributes": {
                "id": 1244, "note": "/hold", "noteable_type": "MergeRequest",
                "created_at": "2026-11-23 10:00:00 UTC", "updated_at": "2026-11-23 10:00:00 UTC",
                "url": "https://gitlab.example.com/group/sub/infra/-/merge_requests/3#note_1244"
            },
            "merge_request": {"iid": 3, "state": "merged", "author_id": 7, "description": "x"}
        });
        let WebhookEvent::IssueComment(c) =
            parse_gitlab_webhook("Note Hook", body.to_string().as_bytes()).unwrap()
        else {
            panic!("a comment")
        };
        assert_eq!(c.repo, RepoName::gitlab("group/sub", "infra"));
        assert_eq!(
            (c.number, c.issue_open, c.author.as_str()),
            (3, false, "alice")
        );
        assert_eq!(c.issue_author, "gitlab-user-id:7");
        let bad = parse_gitlab_webhook("Note Hook", b"{}").unwrap_err();
        assert_eq!(bad.metric_label(), "invalid_payload");
    }
}
