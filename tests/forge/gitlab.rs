//! The GitLab forge adapter against the GitLab fake, and the fake against an
//! independent client: python-gitlab (`PyPI`, installed by `scripts/setup` into
//! `.cache/gitlab/venv`) reads the fake's answers, and the fake's webhook bodies carry
//! the field names of GitLab's "Webhook events" documentation.

use std::sync::Arc;
use std::time::Duration;

use autobump::clock::SystemClock;
use autobump::forge::gitlab_webhook::parse_gitlab_webhook;
use autobump::forge::webhook::{ChecksKind, PullRequestAction, WebhookEvent};
use autobump::forge::{
    CheckState, FileStatus, Forge, ForgeError, ForgeKind, GitLab, GitLabConfig, MergeMethod,
    NewPullRequest, PIPELINE_CHECK, Permission, PullRequestEdit, RepoName, RequestKind,
    RetryPolicy,
};
use serde_json::Value;

use crate::support::gitlab_fake::{BOT, BOT_TOKEN, Failure, GitlabFake, PROJECT_PATH};

const BRANCH: &str = "autobump-shop";

fn project() -> RepoName {
    RepoName::gitlab("group/sub", "infra")
}

fn client(fake: &GitlabFake) -> GitLab {
    GitLab::new(
        GitLabConfig::new(fake.url(), BOT_TOKEN).retry(RetryPolicy {
            max_attempts: 4,
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            max_rate_limit_wait: Duration::from_secs(5),
        }),
        Arc::new(SystemClock),
    )
    .unwrap()
}

/// An MR from the bot on [`BRANCH`] changing one image tag; returns its head.
async fn open_mr(fake: &GitlabFake, gl: &GitLab) -> String {
    fake.commit(
        "main",
        &[(
            "shop/app.yaml",
            Some("image: registry.example.com/shop/app:4.1.0\n"),
        )],
        "Add shop",
    );
    let head = fake.commit(
        BRANCH,
        &[(
            "shop/app.yaml",
            Some("image: registry.example.com/shop/app:4.2.0\n"),
        )],
        "Bump shop to 4.2.0",
    );
    let mr = gl
        .create_pr(
            &project(),
            &NewPullRequest {
                title: "Bump shop to 4.2.0".into(),
                body: "<!-- autobump:policy=shop -->\nBumps shop.".into(),
                head_branch: BRANCH.into(),
                base_branch: "main".into(),
                draft: false,
            },
        )
        .await
        .unwrap();
    assert_eq!((mr.number, mr.head_sha.as_str()), (1, head.as_str()));
    head
}

/// The venv's python with python-gitlab, or a failure naming `scripts/setup`.
fn python_gitlab() -> std::path::PathBuf {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/gitlab/venv/bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import gitlab"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python-gitlab is not installed in {}: run scripts/setup",
        python.display()
    );
    python
}

#[tokio::test]
async fn python_gitlab_reads_the_fakes_answers() {
    let fake = GitlabFake::start().await;
    let gl = client(&fake);
    let first_head = open_mr(&fake, &gl).await;
    fake.add_user("alice", 30);
    for body in ["looks good", "/hold", "why?"] {
        fake.add_note(1, "alice", body);
    }
    // The head moves: python-gitlab's merge at the first head must be refused.
    let head = fake.commit(
        BRANCH,
        &[(
            "shop/app.yaml",
            Some("image: registry.example.com/shop/app:4.2.1\n"),
        )],
        "Bump shop to 4.2.1",
    );
    let pipeline = fake.add_pipeline(&head, "refs/merge-requests/1/head", "success");
    fake.set_job(pipeline, "unit", "success", false);
    fake.set_job(pipeline, "lint", "failed", true);
    fake.set_status(&head, "ci/external", "success");

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/forge/python_gitlab.py");
    let output = tokio::process::Command::new(python_gitlab())
        .arg(&script)
        .args([&fake.url(), BOT_TOKEN, PROJECT_PATH, BRANCH, &first_head])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "python-gitlab failed:\n{}\nrequests: {:#?}\nMR: {}",
        String::from_utf8_lossy(&output.stderr),
        fake.log(),
        fake.mr(1)
    );
    let got: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(got["user"], BOT);
    assert_eq!(got["project"]["id"], 42);
    assert_eq!(got["project"]["path"], PROJECT_PATH);
    assert_eq!(got["open_mrs"], serde_json::json!([1]));
    assert_eq!(got["mr"]["sha"], head.as_str());
    assert_eq!(got["mr"]["author"], BOT);
    assert_eq!(got["mr"]["detailed_merge_status"], "mergeable");
    let notes: Vec<&str> = got["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        notes,
        ["looks good", "/hold", "why?"],
        "all pages, oldest first"
    );
    assert_eq!(got["created_note"]["body"], "/hold cancel");
    assert_eq!(got["labels_after"], serde_json::json!(["skip-review"]));
    assert_eq!(got["pipelines"][0]["status"], "success");
    assert_eq!(got["statuses"].as_array().unwrap().len(), 3);
    assert_eq!(got["statuses"][1]["name"], "lint");
    assert_eq!(got["statuses"][1]["allow_failure"], true);
    assert_eq!(got["alice"], 30);
    assert_eq!(got["stranger"], 404);
    assert_eq!(got["stale_merge"], 409, "a moved head is never merged");
    assert_eq!(got["merged"]["state"], "merged");
    assert!(got["merged"]["squash_commit_sha"].is_string());
    assert!(
        fake.requests("notes/list") >= 2,
        "python-gitlab followed the Link header"
    );
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one MR's whole life, in order
async fn merge_requests_open_update_label_and_merge_at_the_head() {
    let fake = GitlabFake::start().await;
    let gl = client(&fake);
    let repo = project();
    assert_eq!(gl.find_open_pr(&repo, BRANCH, BOT).await.unwrap(), None);
    let head = open_mr(&fake, &gl).await;
    let found = gl.find_open_pr(&repo, BRANCH, BOT).await.unwrap().unwrap();
    assert_eq!(
        (found.number, found.open, found.author.as_str()),
        (1, true, BOT)
    );
    assert_eq!(
        gl.find_open_pr(&repo, BRANCH, "someone-else")
            .await
            .unwrap(),
        None
    );

    let edited = gl
        .update_pr(
            &repo,
            1,
            &PullRequestEdit {
                title: Some("Bump shop to 4.2.0 (2)".into()),
                body: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(edited.title, "Bump shop to 4.2.0 (2)");
    assert!(
        edited.body.contains("autobump:policy=shop"),
        "the description stays"
    );
    let labels = gl
        .add_labels(&repo, 1, &["autobump".into(), "do-not-merge/hold".into()])
        .await
        .unwrap();
    assert_eq!(labels, ["autobump", "do-not-merge/hold"]);
    gl.remove_label(&repo, 1, "do-not-merge/hold")
        .await
        .unwrap();
    gl.remove_label(&repo, 1, "not-there").await.unwrap();
    assert_eq!(fake.mr(1)["labels"], serde_json::json!(["autobump"]));

    fake.add_user("alice", 30);
    fake.add_note(1, "alice", "/hold");
    let posted = gl.post_comment(&repo, 1, "Held by alice").await.unwrap();
    let comments = gl.list_comments(&repo, 1, None).await.unwrap();
    let bodies: Vec<(&str, &str)> = comments
        .iter()
        .map(|c| (c.author.as_str(), c.body.as_str()))
        .collect();
    assert_eq!(bodies, [("alice", "/hold"), (BOT, "Held by alice")]);
    assert!(
        posted
            .html_url
            .ends_with(&format!("/-/merge_requests/1#note_{}", posted.id))
    );

    let files = gl.pr_files(&repo, 1).await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(
        (
            files[0].filename.as_str(),
            files[0].status,
            files[0].additions,
            files[0].deletions
        ),
        ("shop/app.yaml", FileStatus::Modified, 1, 1)
    );

    // Checks: the head pipeline (pending while it runs), its jobs, external statuses.
    assert!(gl.checks(&repo, &head).await.unwrap().is_empty());
    let pipeline = fake.add_pipeline(&head, "refs/merge-requests/1/head", "running");
    fake.set_job(pipeline, "unit", "running", false);
    fake.set_status(&head, "ci/external", "success");
    let states = |checks: Vec<autobump::forge::Check>| -> Vec<(String, CheckState)> {
        checks.into_iter().map(|c| (c.name, c.state)).collect()
    };
    assert_eq!(
        states(gl.checks(&repo, &head).await.unwrap()),
        [
            (PIPELINE_CHECK.to_owned(), CheckState::Pending),
            ("unit".to_owned(), CheckState::Pending),
            ("ci/external".to_owned(), CheckState::Success),
        ]
    );
    fake.set_job(pipeline, "unit", "success", false);
    fake.set_pipeline_status(pipeline, "success");
    assert!(
        gl.checks(&repo, &head)
            .await
            .unwrap()
            .iter()
            .all(|c| c.state == CheckState::Success)
    );

    let m = gl.mergeability(&repo, 1).await.unwrap();
    assert_eq!(
        (m.head_sha.as_str(), m.mergeable, m.open),
        (head.as_str(), Some(true), true)
    );
    // Someone pushes after the checks were read: GitLab answers 409, nothing merges.
    let moved = fake.commit(BRANCH, &[("shop/extra.yaml", Some("x: 1\n"))], "sneak");
    let stale = gl
        .merge(&repo, 1, MergeMethod::Squash, &head)
        .await
        .unwrap_err();
    assert!(matches!(stale, ForgeError::HeadMoved { .. }), "{stale}");
    assert_eq!(fake.mr(1)["state"], "opened");
    let merged = gl
        .merge(&repo, 1, MergeMethod::Squash, &moved)
        .await
        .unwrap();
    let mr = fake.mr(1);
    assert_eq!(mr["state"], "merged");
    assert_eq!(mr["squash_commit_sha"], merged.sha.as_str());
    assert_eq!(
        fake.branch_sha("main").as_deref(),
        Some(merged.sha.as_str())
    );
    let after = gl.mergeability(&repo, 1).await.unwrap();
    assert!(after.merged && !after.open);
}

#[tokio::test]
async fn the_projects_squash_option_wins_over_the_policy() {
    let fake = GitlabFake::start().await;
    let gl = client(&fake);
    let head = open_mr(&fake, &gl).await;
    fake.set_squash_option("never");
    gl.merge(&project(), 1, MergeMethod::Squash, &head)
        .await
        .unwrap();
    let mr = fake.mr(1);
    assert!(
        mr["squash_commit_sha"].is_null() && mr["merge_commit_sha"].is_string(),
        "{mr}"
    );
}

#[tokio::test]
async fn refused_merges_are_reported_and_not_retried() {
    let fake = GitlabFake::start().await;
    let gl = client(&fake);
    let repo = project();
    let head = open_mr(&fake, &gl).await;
    // Approvals required: GitLab says so before any merge is tried.
    fake.require_approval();
    let m = gl.mergeability(&repo, 1).await.unwrap();
    assert_eq!(m.mergeable, Some(false), "not_approved is not mergeable");
    let refused = gl
        .merge(&repo, 1, MergeMethod::Merge, &head)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ForgeError::NotMergeable { .. }),
        "{refused}"
    );
    // Read again (the verdict it was refused under), then approved: asked again.
    assert_eq!(
        gl.mergeability(&repo, 1).await.unwrap().mergeable,
        Some(false)
    );
    fake.approve(1);
    assert_eq!(
        gl.mergeability(&repo, 1).await.unwrap().mergeable,
        Some(true)
    );
    // The target branch is protected against the bot: GitLab says "mergeable" but
    // refuses the merge; the client remembers that, so the reconcile waits (saying
    // why) instead of trying again every time.
    fake.protect_against_bot();
    let refused = gl
        .merge(&repo, 1, MergeMethod::Merge, &head)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    assert!(!refused.is_retryable());
    for _ in 0..2 {
        assert_eq!(
            gl.mergeability(&repo, 1).await.unwrap().mergeable,
            Some(false)
        );
    }
    assert_eq!(fake.requests("mrs/merge"), 2);
    // A new head is a new question.
    fake.commit(BRANCH, &[("shop/extra.yaml", Some("x: 1\n"))], "more");
    assert_eq!(
        gl.mergeability(&repo, 1).await.unwrap().mergeable,
        Some(true)
    );
}

#[tokio::test]
async fn permissions_follow_gitlab_access_levels() {
    let fake = GitlabFake::start().await;
    let gl = client(&fake);
    let repo = project();
    for (user, level, want) in [
        ("owner", 50, Permission::Admin),
        ("maintainer", 40, Permission::Maintain),
        ("developer", 30, Permission::Write),
        ("reporter", 20, Permission::Triage),
        ("guest", 10, Permission::Read),
        ("outsider", 0, Permission::None),
    ] {
        fake.add_user(user, level);
        assert_eq!(gl.permission(&repo, user).await.unwrap(), want, "{user}");
    }
    assert_eq!(
        gl.permission(&repo, "nobody").await.unwrap(),
        Permission::None
    );
    // The user id is looked up once.
    let before = fake.requests("users/list");
    gl.permission(&repo, "developer").await.unwrap();
    assert_eq!(fake.requests("users/list"), before);
}

#[tokio::test]
async fn rate_limits_are_honoured_and_reads_are_conditional() {
    let fake = GitlabFake::start().await;
    let gl = client(&fake);
    let repo = project();
    open_mr(&fake, &gl).await;
    fake.fail_next("mrs/list", 2, Failure::RateLimited { retry_after: 0 });
    assert!(gl.find_open_pr(&repo, BRANCH, BOT).await.unwrap().is_some());
    assert_eq!(gl.stats().snapshot().rate_limited, 2);
    // A long Retry-After fails the call at once (the reconcile is retried later).
    fake.fail_next("mrs/list", 1, Failure::RateLimited { retry_after: 3600 });
    let e = gl.find_open_pr(&repo, BRANCH, BOT).await.unwrap_err();
    assert!(
        matches!(
            e,
            ForgeError::RateLimited {
                retry_after_secs: 3600,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_retryable());
    // 5xx are retried for reads.
    fake.fail_next("mrs/get", 2, Failure::Status(502));
    gl.mergeability(&repo, 1).await.unwrap();
    // The same read again: answered 304 and served from the cache.
    let before = fake.not_modified();
    gl.mergeability(&repo, 1).await.unwrap();
    assert_eq!(fake.not_modified(), before + 1);
    let remaining = gl.stats().rate_limit_remaining().unwrap();
    assert!(
        remaining < autobump_rate_limit() && remaining > 0,
        "{remaining}"
    );
    assert!(gl.stats().snapshot().requests_of(RequestKind::GetPr) >= 3);
    // A bad token is not retried.
    let bad = GitLab::new(
        GitLabConfig::new(fake.url(), "glpat-wrong"),
        Arc::new(SystemClock),
    )
    .unwrap();
    let e = bad.mergeability(&repo, 1).await.unwrap_err();
    assert!(matches!(e, ForgeError::Unauthorized { .. }), "{e}");
}

fn autobump_rate_limit() -> u64 {
    crate::support::gitlab_fake::RATE_LIMIT
}

#[tokio::test]
async fn the_gitlab_client_serves_only_its_own_host() {
    let fake = GitlabFake::start().await;
    let gl = client(&fake);
    let ours = format!("{}/group/sub/infra.git", fake.url());
    assert_eq!(gl.repository(&ours, None), Ok(project()));
    let other = gl
        .repository("https://gitlab.com/group/sub/infra.git", None)
        .unwrap_err();
    assert!(other.contains("--gitlab-url"), "{other}");
    assert_eq!(
        gl.repository(&ours, Some(ForgeKind::GitLab)).unwrap().forge,
        ForgeKind::GitLab
    );
}

/// The fields of GitLab's "Webhook events" documentation each event must carry
/// (`docs.gitlab.com/user/project/integrations/webhook_events/`: merge request,
/// comment, pipeline and job events), by path.
const DOCUMENTED: &[(&str, &[&str])] = &[
    (
        "Merge Request Hook",
        &[
            "object_kind",
            "event_type",
            "user.username",
            "project.id",
            "project.path_with_namespace",
            "project.web_url",
            "object_attributes.iid",
            "object_attributes.author_id",
            "object_attributes.source_branch",
            "object_attributes.target_branch",
            "object_attributes.state",
            "object_attributes.action",
            "object_attributes.last_commit.id",
            "object_attributes.detailed_merge_status",
            "object_attributes.url",
            "labels",
            "changes",
        ],
    ),
    (
        "Note Hook",
        &[
            "object_kind",
            "user.username",
            "project_id",
            "project.path_with_namespace",
            "object_attributes.id",
            "object_attributes.note",
            "object_attributes.noteable_type",
            "object_attributes.author_id",
            "object_attributes.created_at",
            "object_attributes.updated_at",
            "object_attributes.system",
            "object_attributes.url",
            "object_attributes.action",
            "merge_request.iid",
            "merge_request.state",
            "merge_request.author_id",
            "merge_request.description",
            "merge_request.last_commit.id",
        ],
    ),
    (
        "Pipeline Hook",
        &[
            "object_kind",
            "object_attributes.id",
            "object_attributes.ref",
            "object_attributes.sha",
            "object_attributes.status",
            "object_attributes.source",
            "project.path_with_namespace",
            "commit.id",
            "builds",
        ],
    ),
    (
        "Job Hook",
        &[
            "object_kind",
            "ref",
            "sha",
            "build_id",
            "build_name",
            "build_status",
            "build_allow_failure",
            "pipeline_id",
            "project_id",
            "project.path_with_namespace",
            "repository.name",
        ],
    ),
];

fn field<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

#[tokio::test]
async fn webhook_bodies_carry_the_documented_fields_and_parse() {
    let fake = GitlabFake::start().await;
    let gl = client(&fake);
    let head = open_mr(&fake, &gl).await;
    fake.add_user("alice", 30);
    let note = fake.add_note(1, "alice", "/hold");
    let pipeline = fake.add_pipeline(&head, "refs/merge-requests/1/head", "running");
    fake.set_job(pipeline, "unit", "running", false);
    let bodies = [
        ("Merge Request Hook", fake.merge_request_hook(1, "update")),
        ("Note Hook", fake.note_hook(note)),
        ("Pipeline Hook", fake.pipeline_hook(pipeline)),
        ("Job Hook", fake.job_hook(pipeline, "unit")),
    ];
    for ((event, body), (documented_event, fields)) in bodies.iter().zip(DOCUMENTED) {
        assert_eq!(event, documented_event);
        for path in *fields {
            assert!(field(body, path).is_some(), "{event}: no {path}");
        }
    }
    let parsed: Vec<WebhookEvent> = bodies
        .iter()
        .map(|(event, body)| parse_gitlab_webhook(event, body.to_string().as_bytes()).unwrap())
        .collect();
    let WebhookEvent::PullRequest(mr) = &parsed[0] else {
        panic!("{:?}", parsed[0])
    };
    assert_eq!(
        (mr.number, mr.action, mr.head_sha.as_str()),
        (1, PullRequestAction::Synchronize, head.as_str())
    );
    assert_eq!(mr.repo, project());
    let WebhookEvent::IssueComment(c) = &parsed[1] else {
        panic!("{:?}", parsed[1])
    };
    assert_eq!(
        (c.number, c.body.as_str(), c.author.as_str()),
        (1, "/hold", "alice")
    );
    assert!(c.issue_body.contains("autobump:policy=shop"));
    for (i, kind) in [(2, ChecksKind::CheckRun), (3, ChecksKind::Status)] {
        let WebhookEvent::Checks(ch) = &parsed[i] else {
            panic!("{:?}", parsed[i])
        };
        assert_eq!((ch.kind, ch.sha.as_str()), (kind, head.as_str()));
    }
}
