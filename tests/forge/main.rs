//! The GitHub forge adapter through octocrab against the GitHub fake (an axum server
//! on 127.0.0.1 backed by a bare git repository), with every fake response validated
//! against GitHub's `OpenAPI` description; and the webhook helpers on the payloads of
//! `@octokit/webhooks-examples`.

#[path = "../support/mod.rs"]
mod support;

mod gitlab;

use std::sync::Arc;
use std::time::Duration;

use autobump::clock::{Clock, ManualClock, Stopwatch, SystemClock};
use autobump::forge::webhook::{
    CommentAction, DeliveryDeduplicator, PullRequestAction, WebhookEvent, parse_webhook, sign,
    verify_signature,
};
use autobump::forge::{
    CheckConclusion, CheckStatus, FileStatus, Forge, ForgeError, GitHub, GitHubAuth, GitHubConfig,
    MergeMethod, MergeableState, NewPullRequest, Permission, PullRequestEdit, RepoName,
    RequestKind, RetryPolicy, StatusState,
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use support::github_fake::{Failure, FakeApp, FakeOptions, GithubFake, openapi};
use support::secret_world::fake_with_app;
use support::webhook_examples;

const BRANCH: &str = "autobump-prow";
const BOT: &str = "autobump-bot";

fn repo() -> RepoName {
    RepoName::new("example", "infra")
}

/// Short back-offs so retry tests take milliseconds, not seconds.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_rate_limit_wait: Duration::from_secs(10),
    }
}

fn client_with(fake: &GithubFake, auth: GitHubAuth, clock: Arc<dyn Clock>) -> GitHub {
    autobump::install_crypto_provider();
    let config = GitHubConfig::new(auth)
        .api_url(fake.api_url())
        .retry(fast_retry());
    GitHub::new(config, clock).expect("building the GitHub client")
}

fn client(fake: &GithubFake) -> GitHub {
    client_with(
        fake,
        GitHubAuth::Token("test-token".into()),
        Arc::new(SystemClock),
    )
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("timestamp")
        .with_timezone(&Utc)
}

fn new_pr() -> NewPullRequest {
    NewPullRequest {
        title: "Bump prow to v20260308-abc".into(),
        body: "<!-- autobump:prow -->\n| image | old | new |".into(),
        head_branch: BRANCH.into(),
        base_branch: "main".into(),
        draft: false,
    }
}

/// `main` with a manifest, and the autobump branch changing one line of it.
fn seed_bump(fake: &GithubFake) -> String {
    fake.commit(
        "main",
        &[(
            "deploy/hook.yaml",
            Some("image: gcr.io/k8s-prow/hook:v1\nreplicas: 2\n"),
        )],
        "hook",
    );
    fake.commit(
        BRANCH,
        &[(
            "deploy/hook.yaml",
            Some("image: gcr.io/k8s-prow/hook:v2\nreplicas: 2\n"),
        )],
        "Bump hook to v2",
    )
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario walking every method in the order a reconcile uses them
async fn every_forge_method_works_against_the_fake() {
    let clock = Arc::new(ManualClock::new(at("2026-03-08T09:00:00Z")));
    let fake = GithubFake::start_with(FakeOptions {
        clock: clock.clone(),
        ..FakeOptions::default()
    })
    .await;
    let gh = client_with(&fake, GitHubAuth::Token("test-token".into()), clock.clone());
    let repo = repo();
    let head = seed_bump(&fake);

    assert_eq!(gh.find_open_pr(&repo, BRANCH, BOT).await.unwrap(), None);
    let pr = gh.create_pr(&repo, &new_pr()).await.unwrap();
    assert_eq!(pr.number, 1);
    assert_eq!(pr.author, BOT);
    assert_eq!(pr.head_sha, head);
    assert_eq!(
        (pr.head_branch.as_str(), pr.base_branch.as_str()),
        (BRANCH, "main")
    );
    assert!(pr.open && !pr.draft && pr.labels.is_empty());

    let found = gh.find_open_pr(&repo, BRANCH, BOT).await.unwrap();
    assert_eq!(found.as_ref().map(|p| p.number), Some(1));
    assert_eq!(found.unwrap().body, new_pr().body);
    // Another author's PR on that branch is not ours; logins compare case-insensitively.
    assert_eq!(
        gh.find_open_pr(&repo, BRANCH, "mallory").await.unwrap(),
        None
    );
    assert!(
        gh.find_open_pr(&repo, BRANCH, "AutoBump-Bot")
            .await
            .unwrap()
            .is_some()
    );

    clock.advance(chrono::Duration::minutes(1));
    let edited = gh
        .update_pr(
            &repo,
            1,
            &PullRequestEdit {
                title: Some("Bump prow to v20260308-def".into()),
                body: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(edited.title, "Bump prow to v20260308-def");
    assert_eq!(edited.body, new_pr().body, "an edit without body keeps it");

    let labels = gh
        .add_labels(
            &repo,
            1,
            &["skip-review".into(), "do-not-merge/hold".into()],
        )
        .await
        .unwrap();
    assert_eq!(labels, ["skip-review", "do-not-merge/hold"]);
    gh.remove_label(&repo, 1, "do-not-merge/hold")
        .await
        .unwrap();
    // Removing a label that is not there is fine (an idempotent ensure).
    gh.remove_label(&repo, 1, "do-not-merge/hold")
        .await
        .unwrap();
    assert_eq!(fake.pull(1).labels, ["skip-review"]);

    let posted = gh.post_comment(&repo, 1, "/retest").await.unwrap();
    assert_eq!(
        (posted.author.as_str(), posted.body.as_str()),
        (BOT, "/retest")
    );
    clock.advance(chrono::Duration::minutes(5));
    let later = clock.now();
    fake.add_comment(1, "alice", "/hold the canary looks bad");
    let all = gh.list_comments(&repo, 1, None).await.unwrap();
    let bodies: Vec<&str> = all.iter().map(|c| c.body.as_str()).collect();
    assert_eq!(bodies, ["/retest", "/hold the canary looks bad"]);
    assert_eq!(all[1].author, "alice");
    assert_eq!(all[1].created_at, later);
    let recent = gh.list_comments(&repo, 1, Some(later)).await.unwrap();
    assert_eq!(recent.len(), 1, "{recent:?}");
    assert_eq!(recent[0].author, "alice");

    let files = gh.pr_files(&repo, 1).await.unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].filename, "deploy/hook.yaml");
    assert_eq!(files[0].status, FileStatus::Modified);
    assert_eq!((files[0].additions, files[0].deletions), (1, 1));
    let patch = files[0].patch.as_deref().expect("a patch");
    assert!(patch.starts_with("@@"), "{patch}");
    assert!(patch.contains("-image: gcr.io/k8s-prow/hook:v1"), "{patch}");
    assert!(patch.contains("+image: gcr.io/k8s-prow/hook:v2"), "{patch}");

    let status = gh.combined_status(&repo, &head).await.unwrap();
    assert_eq!(
        status.state,
        StatusState::Pending,
        "no statuses yet is pending"
    );
    assert!(status.statuses.is_empty());
    fake.set_status(&head, "ci/unit", "pending");
    fake.set_status(&head, "ci/unit", "success");
    fake.set_status(&head, "ci/lint", "success");
    let status = gh.combined_status(&repo, &head).await.unwrap();
    assert_eq!(status.sha, head);
    assert_eq!(status.state, StatusState::Success);
    let mut contexts: Vec<(&str, StatusState)> = status
        .statuses
        .iter()
        .map(|s| (s.context.as_str(), s.state))
        .collect();
    contexts.sort_by_key(|c| c.0);
    assert_eq!(
        contexts,
        [
            ("ci/lint", StatusState::Success),
            ("ci/unit", StatusState::Success)
        ]
    );

    fake.add_check_run(&head, "build", "completed", Some("success"));
    fake.add_check_run(&head, "e2e", "in_progress", None);
    let runs = gh.check_runs(&repo, &head).await.unwrap();
    let runs: Vec<(&str, CheckStatus, Option<CheckConclusion>)> = runs
        .iter()
        .map(|r| (r.name.as_str(), r.status, r.conclusion))
        .collect();
    assert_eq!(
        runs,
        [
            (
                "build",
                CheckStatus::Completed,
                Some(CheckConclusion::Success)
            ),
            ("e2e", CheckStatus::InProgress, None)
        ]
    );

    let merge = gh.mergeability(&repo, 1).await.unwrap();
    assert_eq!(merge.head_sha, head);
    assert_eq!(merge.mergeable, Some(true));
    assert_eq!(merge.state, MergeableState::Clean);
    assert!(merge.open && !merge.merged);

    let merged = gh
        .merge(&repo, 1, MergeMethod::Squash, &merge.head_sha)
        .await
        .unwrap();
    assert_eq!(Some(merged.sha.clone()), fake.branch_sha("main"));
    let pull = fake.pull(1);
    assert!(pull.merged && !pull.open);
    assert_eq!(pull.merge_commit_sha, Some(merged.sha));
    assert_eq!(gh.find_open_pr(&repo, BRANCH, BOT).await.unwrap(), None);
    let after = gh.mergeability(&repo, 1).await.unwrap();
    assert!(after.merged && !after.open);

    assert_eq!(
        gh.permission(&repo, "example").await.unwrap(),
        Permission::Admin
    );

    let counters = gh.stats().snapshot();
    assert_eq!(counters.requests_of(RequestKind::CreatePr), 1);
    assert_eq!(counters.requests_of(RequestKind::RemoveLabel), 2);
    assert_eq!(counters.requests_of(RequestKind::Merge), 1);
    // create, update, add labels, remove ×2, comment, merge (the 404 remove counts here,
    // but changed nothing on the fake).
    assert_eq!(counters.writes(), 7);
    assert_eq!(fake.writes(), 6);
    assert_eq!(counters.requests(), fake.total_requests());
    assert_eq!(counters.rate_limit_remaining, Some(fake.rate_remaining()));
    let validated = fake.assert_responses_valid();
    assert_eq!(
        validated,
        fake.total_requests(),
        "every response was validated"
    );
}

#[tokio::test]
async fn a_second_identical_read_is_conditional_and_free() {
    let fake = GithubFake::start().await;
    let gh = client(&fake);
    let repo = repo();
    let head = seed_bump(&fake);
    gh.create_pr(&repo, &new_pr()).await.unwrap();
    fake.set_status(&head, "ci/unit", "success");
    fake.add_check_run(&head, "build", "completed", Some("success"));
    fake.add_comment(1, "alice", "lgtm");

    let first = (
        gh.find_open_pr(&repo, BRANCH, BOT).await.unwrap(),
        gh.combined_status(&repo, &head).await.unwrap(),
        gh.check_runs(&repo, &head).await.unwrap(),
        gh.list_comments(&repo, 1, None).await.unwrap(),
        gh.mergeability(&repo, 1).await.unwrap(),
    );
    assert_eq!(fake.not_modified(), 0);
    let budget = fake.rate_remaining();
    let requests = fake.total_requests();

    let second = (
        gh.find_open_pr(&repo, BRANCH, BOT).await.unwrap(),
        gh.combined_status(&repo, &head).await.unwrap(),
        gh.check_runs(&repo, &head).await.unwrap(),
        gh.list_comments(&repo, 1, None).await.unwrap(),
        gh.mergeability(&repo, 1).await.unwrap(),
    );
    assert_eq!(first, second, "a 304 returns the cached data");
    assert_eq!(fake.total_requests(), requests + 5, "one request per read");
    assert_eq!(fake.not_modified(), 5, "all five were 304");
    assert_eq!(fake.rate_remaining(), budget, "304s cost no rate limit");
    assert!(
        fake.log()
            .iter()
            .rev()
            .take(5)
            .all(|r| r.if_none_match && r.status == 304)
    );
    assert_eq!(gh.stats().snapshot().not_modified, 5);

    // A change is seen at once: the ETag no longer matches.
    fake.set_status(&head, "ci/unit", "failure");
    let status = gh.combined_status(&repo, &head).await.unwrap();
    assert_eq!(status.state, StatusState::Failure);
    assert_eq!(fake.not_modified(), 5);
    fake.assert_responses_valid();
}

/// With a webhook feed, relaxed reads cost nothing while deliveries prove them
/// unchanged; a delivery about the commit, or the resync period passing (a lost
/// delivery), sends the read again; strict reads always go to GitHub.
#[tokio::test]
async fn relaxed_reads_are_answered_from_webhooks_until_a_delivery_or_the_resync() {
    use autobump::forge::webhook::{ChecksEvent, ChecksKind};
    let fake = GithubFake::start().await;
    let clock = Arc::new(ManualClock::new(at("2026-03-08T09:00:00Z")));
    let feed = Arc::new(autobump::forge::WebhookFeed::new(
        chrono::Duration::minutes(10),
    ));
    let gh = client_with(
        &fake,
        GitHubAuth::Token("test-token".into()),
        Arc::clone(&clock) as Arc<dyn Clock>,
    )
    .with_feed(Arc::clone(&feed));
    assert!(gh.answers_from_memory());
    let repo = repo();
    let head = seed_bump(&fake);
    fake.add_check_run(&head, "build", "in_progress", None);
    let delivery = |sha: &str| {
        WebhookEvent::Checks(ChecksEvent {
            kind: ChecksKind::CheckRun,
            repo: repo.clone(),
            sha: sha.to_owned(),
        })
    };
    let sent = || fake.requests("checks/list-for-ref");

    // No delivery of check runs yet: the hook may not be subscribed, so every read goes out.
    gh.check_runs_relaxed(&repo, &head).await.unwrap();
    gh.check_runs_relaxed(&repo, &head).await.unwrap();
    assert_eq!(sent(), 2);
    feed.record(&delivery("0000000000000000000000000000000000000000"));
    gh.check_runs_relaxed(&repo, &head).await.unwrap();
    assert_eq!(
        sent(),
        3,
        "the answer before the hook was live is read again"
    );
    let runs = gh.check_runs_relaxed(&repo, &head).await.unwrap();
    assert_eq!(sent(), 3, "proved unchanged: no request");
    assert_eq!(runs[0].status, CheckStatus::InProgress);
    assert_eq!(gh.stats().snapshot().from_webhooks, 1);
    // Strict reads always ask.
    gh.check_runs(&repo, &head).await.unwrap();
    assert_eq!(sent(), 4);

    // The run completes and GitHub delivers it: read again, and the change is seen.
    fake.add_check_run(&head, "build", "completed", Some("success"));
    feed.record(&delivery(&head));
    let runs = gh.check_runs_relaxed(&repo, &head).await.unwrap();
    assert_eq!(sent(), 5);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].conclusion, Some(CheckConclusion::Success));

    // A lost delivery is made up for by the resync period.
    gh.check_runs_relaxed(&repo, &head).await.unwrap();
    assert_eq!(sent(), 5);
    clock.advance(chrono::Duration::minutes(11));
    gh.check_runs_relaxed(&repo, &head).await.unwrap();
    assert_eq!(sent(), 6);
    fake.assert_responses_valid();
}

#[tokio::test]
async fn merging_at_a_stale_head_is_refused_as_head_moved() {
    let fake = GithubFake::start().await;
    let gh = client(&fake);
    let repo = repo();
    seed_bump(&fake);
    gh.create_pr(&repo, &new_pr()).await.unwrap();
    let read = gh.mergeability(&repo, 1).await.unwrap();

    // Someone pushes after the checks were read.
    let pushed = fake.commit(BRANCH, &[("extra.txt", Some("sneaky\n"))], "more");
    let error = gh
        .merge(&repo, 1, MergeMethod::Squash, &read.head_sha)
        .await
        .unwrap_err();
    assert!(matches!(error, ForgeError::HeadMoved { .. }), "{error}");
    assert_eq!(error.metric_label(), "head_moved");
    assert!(!error.is_retryable());
    assert!(
        error.to_string().contains("Head branch was modified"),
        "{error}"
    );
    assert!(!fake.pull(1).merged);
    assert_eq!(fake.requests("pulls/merge"), 1, "a 409 is not retried");

    let merged = gh
        .merge(&repo, 1, MergeMethod::Merge, &pushed)
        .await
        .unwrap();
    assert_eq!(Some(merged.sha), fake.branch_sha("main"));
    fake.assert_responses_valid();
}

#[tokio::test]
async fn a_conflicting_pr_is_not_mergeable() {
    let fake = GithubFake::start().await;
    let gh = client(&fake);
    let repo = repo();
    seed_bump(&fake);
    gh.create_pr(&repo, &new_pr()).await.unwrap();
    fake.commit(
        "main",
        &[(
            "deploy/hook.yaml",
            Some("image: gcr.io/k8s-prow/hook:v3\nreplicas: 2\n"),
        )],
        "someone else bumped",
    );
    let state = gh.mergeability(&repo, 1).await.unwrap();
    assert_eq!(state.mergeable, Some(false));
    assert_eq!(state.state, MergeableState::Dirty);
    let error = gh
        .merge(&repo, 1, MergeMethod::Squash, &state.head_sha)
        .await
        .unwrap_err();
    assert!(matches!(error, ForgeError::NotMergeable { .. }), "{error}");
    assert_eq!(error.metric_label(), "not_mergeable");
    fake.assert_responses_valid();
}

#[tokio::test]
async fn validation_errors_are_typed_rejections() {
    let fake = GithubFake::start().await;
    let gh = client(&fake);
    let repo = repo();
    seed_bump(&fake);
    gh.create_pr(&repo, &new_pr()).await.unwrap();
    let error = gh.create_pr(&repo, &new_pr()).await.unwrap_err();
    match &error {
        ForgeError::Rejected {
            status, message, ..
        } => {
            assert_eq!(*status, 422);
            assert!(message.contains("already exists"), "{message}");
        }
        other => panic!("expected a rejection, got {other}"),
    }
    assert!(!error.is_retryable());
    let error = gh.mergeability(&repo, 99).await.unwrap_err();
    assert!(matches!(error, ForgeError::NotFound { .. }), "{error}");
    let other_repo = RepoName::new("example", "elsewhere");
    let error = gh.list_comments(&other_repo, 1, None).await.unwrap_err();
    assert_eq!(error.metric_label(), "not_found");
    fake.assert_responses_valid();
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let fake = GithubFake::start().await;
    let gh = client(&fake);
    let repo = repo();
    seed_bump(&fake);
    gh.create_pr(&repo, &new_pr()).await.unwrap();

    fake.fail_next("pulls/get", 2, Failure::Status(502));
    let state = gh.mergeability(&repo, 1).await.unwrap();
    assert_eq!(state.mergeable, Some(true));
    assert_eq!(fake.requests("pulls/get"), 3, "two 502s, then the answer");
    let counters = gh.stats().snapshot();
    assert_eq!(counters.retries, 2);
    assert_eq!(counters.requests_of(RequestKind::GetPr), 3);

    // Always failing: the error says how often it was tried, and it is retryable.
    fake.fail_next("pulls/get", 10, Failure::Status(503));
    let error = gh.mergeability(&repo, 1).await.unwrap_err();
    match &error {
        ForgeError::Server {
            status, attempts, ..
        } => {
            assert_eq!((*status, *attempts), (503, 4));
        }
        other => panic!("expected a server error, got {other}"),
    }
    assert!(error.is_retryable());
    assert_eq!(fake.requests("pulls/get"), 7);

    // Posting a comment is not safe to repeat: one attempt, a retryable error.
    fake.fail_next("issues/create-comment", 1, Failure::Status(502));
    let error = gh.post_comment(&repo, 1, "hello").await.unwrap_err();
    assert!(
        matches!(error, ForgeError::Server { attempts: 1, .. }),
        "{error}"
    );
    assert!(error.is_retryable());
    assert_eq!(fake.requests("issues/create-comment"), 1);
    fake.assert_responses_valid();
}

#[tokio::test]
async fn a_secondary_rate_limit_waits_for_retry_after() {
    let fake = GithubFake::start().await;
    let gh = client(&fake);
    let repo = repo();
    seed_bump(&fake);
    gh.create_pr(&repo, &new_pr()).await.unwrap();
    fake.fail_next(
        "pulls/list",
        1,
        Failure::SecondaryRateLimit { retry_after: 1 },
    );
    let watch = Stopwatch::start();
    let found = gh.find_open_pr(&repo, BRANCH, BOT).await.unwrap();
    let waited = watch.elapsed();
    assert_eq!(found.map(|p| p.number), Some(1));
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert_eq!(fake.requests("pulls/list"), 2);
    let counters = gh.stats().snapshot();
    assert_eq!((counters.rate_limited, counters.retries), (1, 1));

    // Even a request that is not safe to repeat is retried after a rate limit: GitHub
    // did not process it.
    fake.fail_next(
        "issues/create-comment",
        1,
        Failure::SecondaryRateLimit { retry_after: 1 },
    );
    gh.post_comment(&repo, 1, "after the limit").await.unwrap();
    assert_eq!(fake.requests("issues/create-comment"), 2);
    fake.assert_responses_valid();
}

#[tokio::test]
async fn a_spent_primary_rate_limit_waits_until_the_reset() {
    let fake = GithubFake::start().await;
    let gh = client(&fake);
    let repo = repo();
    let head = seed_bump(&fake);
    fake.fail_next(
        "repos/get-combined-status-for-ref",
        1,
        Failure::PrimaryRateLimit { reset_in: 1 },
    );
    let watch = Stopwatch::start();
    let status = gh.combined_status(&repo, &head).await.unwrap();
    assert_eq!(status.sha, head);
    assert!(watch.elapsed() >= Duration::from_millis(10), "it waited");
    assert_eq!(fake.requests("repos/get-combined-status-for-ref"), 2);
    assert_eq!(
        gh.stats().rate_limit_remaining(),
        Some(fake.rate_remaining()),
        "the budget exposed is the last one GitHub reported"
    );

    // A reset further off than the policy's longest wait fails at once, retryably…
    fake.fail_next(
        "repos/get-combined-status-for-ref",
        1,
        Failure::PrimaryRateLimit { reset_in: 3600 },
    );
    let watch = Stopwatch::start();
    let error = gh.combined_status(&repo, &head).await.unwrap_err();
    assert!(watch.elapsed() < Duration::from_secs(5));
    match &error {
        ForgeError::RateLimited {
            retry_after_secs, ..
        } => assert!((3590..=3600).contains(retry_after_secs), "{error}"),
        other => panic!("expected a rate limit, got {other}"),
    }
    assert!(error.is_retryable());
    assert_eq!(gh.stats().rate_limit_remaining(), Some(0));
    // …and until the reset, nothing more is sent.
    let before = fake.total_requests();
    let error = gh.check_runs(&repo, &head).await.unwrap_err();
    assert_eq!(error.metric_label(), "rate_limited");
    assert_eq!(
        fake.total_requests(),
        before,
        "no request while the budget is spent"
    );
    fake.assert_responses_valid();
}

#[tokio::test]
async fn permissions_map_every_role() {
    let fake = GithubFake::start().await;
    let gh = client(&fake);
    let repo = repo();
    let cases = [
        ("ada", "admin", Permission::Admin),
        ("max", "maintain", Permission::Maintain),
        ("wes", "write", Permission::Write),
        ("tia", "triage", Permission::Triage),
        ("rea", "read", Permission::Read),
        ("nob", "none", Permission::None),
    ];
    for (login, role, _) in cases {
        fake.set_permission(login, role);
    }
    for (login, role, want) in cases {
        assert_eq!(gh.permission(&repo, login).await.unwrap(), want, "{role}");
    }
    assert_eq!(
        gh.permission(&repo, "stranger").await.unwrap(),
        Permission::None,
        "an unknown user has no permission"
    );
    fake.assert_responses_valid();
}

#[tokio::test]
async fn a_bad_token_is_unauthorized() {
    let fake = GithubFake::start().await;
    let gh = client_with(
        &fake,
        GitHubAuth::Token("wrong".into()),
        Arc::new(SystemClock),
    );
    let error = gh.permission(&repo(), "example").await.unwrap_err();
    assert!(matches!(error, ForgeError::Unauthorized { .. }), "{error}");
    assert!(!error.is_retryable());
    assert_eq!(
        fake.total_requests(),
        1,
        "a 401 with a plain token is final"
    );
}

#[tokio::test]
async fn pagination_follows_links_and_pages_are_conditional() {
    let fake = GithubFake::start().await;
    let gh = client(&fake);
    let repo = repo();
    fake.commit("main", &[("base.txt", Some("base\n"))], "base");
    let files: Vec<(String, String)> = (0..5)
        .map(|i| (format!("deploy/app-{i}.yaml"), format!("image: app:v{i}\n")))
        .collect();
    let refs: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    let head = fake.commit(BRANCH, &refs, "five files");
    gh.create_pr(&repo, &new_pr()).await.unwrap();
    for i in 0..5 {
        fake.add_comment(1, "alice", &format!("comment {i}"));
        fake.set_status(&head, &format!("ci/{i}"), "success");
    }
    for i in 0..3 {
        fake.add_check_run(&head, &format!("check-{i}"), "completed", Some("success"));
    }
    fake.set_max_per_page(2);

    let files = gh.pr_files(&repo, 1).await.unwrap();
    assert_eq!(files.len(), 5);
    assert!(files.iter().all(|f| f.status == FileStatus::Added));
    assert_eq!(fake.requests("pulls/list-files"), 3);
    let comments = gh.list_comments(&repo, 1, None).await.unwrap();
    let bodies: Vec<String> = comments.iter().map(|c| c.body.clone()).collect();
    assert_eq!(
        bodies,
        (0..5).map(|i| format!("comment {i}")).collect::<Vec<_>>()
    );
    assert_eq!(fake.requests("issues/list-comments"), 3);
    let status = gh.combined_status(&repo, &head).await.unwrap();
    assert_eq!(status.statuses.len(), 5);
    let runs = gh.check_runs(&repo, &head).await.unwrap();
    assert_eq!(runs.len(), 3);

    // Every page is cached: reading again is 3 + 3 + 3 + 2 conditional requests.
    let again = gh.list_comments(&repo, 1, None).await.unwrap();
    assert_eq!(again, comments);
    gh.pr_files(&repo, 1).await.unwrap();
    gh.combined_status(&repo, &head).await.unwrap();
    gh.check_runs(&repo, &head).await.unwrap();
    assert_eq!(fake.not_modified(), 11);
    fake.assert_responses_valid();
}

#[tokio::test]
async fn github_app_tokens_are_minted_and_refreshed_before_expiry() {
    let start = at("2026-03-08T09:00:00Z");
    let clock = Arc::new(ManualClock::new(start));
    let fake = GithubFake::start_with(FakeOptions {
        clock: clock.clone(),
        ..FakeOptions::default()
    })
    .await;
    fake.enable_app(FakeApp {
        app_id: 4242,
        public_key_pem: include_str!("../testdata/forge/app-key.pub.pem").into(),
        installation_id: 77,
        bot_login: "autobump[bot]".into(),
        token_ttl: chrono::Duration::hours(1),
    });
    let app = |app_id| GitHubAuth::App {
        app_id,
        private_key_pem: include_str!("../testdata/forge/app-key.pem").into(),
        installation_id: Some(77),
    };
    let gh = client_with(&fake, app(4242), clock.clone());
    let repo = repo();
    seed_bump(&fake);

    let pr = gh.create_pr(&repo, &new_pr()).await.unwrap();
    assert_eq!(
        pr.author, "autobump[bot]",
        "the installation acts as the App's bot"
    );
    assert_eq!(fake.tokens_minted(), 1);
    assert_eq!(
        gh.installation_token_expiry().await,
        Some(start + chrono::Duration::hours(1))
    );

    // Half-way through its life the token is reused.
    clock.advance(chrono::Duration::minutes(30));
    gh.find_open_pr(&repo, BRANCH, "autobump[bot]")
        .await
        .unwrap()
        .expect("found by the bot login");
    assert_eq!(fake.tokens_minted(), 1);

    // Within the refresh margin (5 minutes) of expiry, a new one is minted first, so
    // no request ever carries an expired token.
    clock.advance(chrono::Duration::minutes(26));
    gh.mergeability(&repo, 1).await.unwrap();
    assert_eq!(fake.tokens_minted(), 2);
    assert_eq!(
        gh.installation_token_expiry().await,
        Some(start + chrono::Duration::minutes(56) + chrono::Duration::hours(1))
    );
    let counters = gh.stats().snapshot();
    assert_eq!(counters.requests_of(RequestKind::InstallationToken), 2);
    assert!(
        fake.log().iter().all(|r| r.status != 401),
        "no request was refused: {:?}",
        fake.log()
    );

    // A JWT from another App id is refused by the fake (iss checked with the key).
    let stranger = client_with(&fake, app(1), clock.clone());
    let error = stranger.permission(&repo, "example").await.unwrap_err();
    assert!(matches!(error, ForgeError::Unauthorized { .. }), "{error}");
    fake.assert_responses_valid();
}

/// An App configured by id and key only (as `--github-app-id`/`--github-app-key`
/// configure it): the installation is found per repository, and the installation
/// token runs out in the middle of a run of calls; git gets the same tokens.
#[tokio::test]
async fn an_app_finds_its_installation_and_outlives_its_installation_tokens() {
    use autobump::forge::GitHubApp;
    let start = at("2026-03-08T09:00:00Z");
    let clock = Arc::new(ManualClock::new(start));
    let fake = fake_with_app(clock.clone()).await;
    let app = GitHubApp {
        app_id: 4242,
        private_key_pem: include_str!("../testdata/forge/app-key.pem").into(),
    };
    assert!(!format!("{app:?}").contains("PRIVATE KEY"), "{app:?}");
    let gh = client_with(&fake, app.auth(), clock.clone());
    let repo = repo();
    seed_bump(&fake);

    assert_eq!(
        gh.app_bot_login().await.unwrap().as_deref(),
        Some("autobump[bot]"),
        "the App's bot, from GET /app"
    );
    let pr = gh.create_pr(&repo, &new_pr()).await.unwrap();
    assert_eq!(pr.author, "autobump[bot]", "PRs come from the App's bot");
    assert_eq!(fake.requests("apps/get-repo-installation"), 1);
    assert_eq!(fake.tokens_minted(), 1);
    let git_token = gh
        .git_token(&repo)
        .await
        .unwrap()
        .expect("an App token for git");
    assert_eq!(
        fake.token_login(&git_token).as_deref(),
        Some("autobump[bot]"),
        "git gets the installation token"
    );
    assert_eq!(fake.tokens_minted(), 1, "git reuses the API's token");

    // A run of calls, one every 10 minutes for two hours: the 1-hour tokens run out
    // twice; each is renewed before it expires, never after a refusal.
    for step in 1..=12 {
        clock.advance(chrono::Duration::minutes(10));
        gh.find_open_pr(&repo, BRANCH, "autobump[bot]")
            .await
            .unwrap_or_else(|e| panic!("call {step}: {e}"))
            .expect("found by the bot login");
        gh.post_comment(&repo, pr.number, &format!("step {step}"))
            .await
            .unwrap();
        let now = clock.now();
        let expiry = gh.installation_token_expiry().await.expect("a token");
        assert!(
            expiry - now > chrono::Duration::minutes(4),
            "step {step}: {expiry} at {now}"
        );
    }
    assert_eq!(fake.tokens_minted(), 3);
    assert_eq!(
        fake.requests("apps/get-repo-installation"),
        1,
        "the installation is looked up once"
    );
    assert!(
        fake.log().iter().all(|r| r.status != 401),
        "{:?}",
        fake.log()
    );
    // The first git token has expired by the fake's clock; git now gets a live one.
    assert_eq!(fake.token_login(&git_token), None);
    let fresh = gh.git_token(&repo).await.unwrap().expect("a fresh token");
    assert_eq!(fake.token_login(&fresh).as_deref(), Some("autobump[bot]"));
    assert!(
        fake.app_jwts_accepted() >= 4,
        "{}",
        fake.app_jwts_accepted()
    );

    // Another repository is not in any installation: the error says so.
    let elsewhere = RepoName::new("example", "not-installed");
    let error = gh
        .find_open_pr(&elsewhere, BRANCH, "autobump[bot]")
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("installation on example/not-installed"),
        "{error}"
    );
    fake.assert_responses_valid();
}

/// The fake refuses App JWTs as GitHub does ("Generating a JSON Web Token (JWT) for
/// a GitHub App"): expiring more than 10 minutes ahead, issued in the future,
/// expired, or not RS256 with the App's key.
#[tokio::test]
async fn the_fake_refuses_app_jwts_outside_githubs_bounds() {
    use octocrab::jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let fake = fake_with_app(Arc::new(SystemClock)).await;
    let claims = |iat_offset: i64, exp_offset: i64| {
        let now = SystemClock.now().timestamp();
        json!({"iss": 4242, "iat": now + iat_offset, "exp": now + exp_offset})
    };
    let sign = |iat_offset: i64, exp_offset: i64| {
        let key = include_str!("../testdata/forge/app-key.pem");
        let key = EncodingKey::from_rsa_pem(key.as_bytes()).unwrap();
        encode(
            &Header::new(Algorithm::RS256),
            &claims(iat_offset, exp_offset),
            &key,
        )
        .unwrap()
    };
    let mint_with = |jwt: String| {
        let url = format!("{}/app/installations/91/access_tokens", fake.api_url());
        async move {
            support::http_client()
                .post(url)
                .bearer_auth(jwt)
                .header("accept", "application/vnd.github+json")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        mint_with(sign(-60, 540)).await,
        201,
        "octocrab's own bounds"
    );
    assert_eq!(
        mint_with(sign(-60, 1200)).await,
        401,
        "exp 20 minutes ahead"
    );
    assert_eq!(mint_with(sign(300, 540)).await, 401, "iat 5 minutes ahead");
    assert_eq!(mint_with(sign(-700, -60)).await, 401, "expired");
    let shared_secret = encode(
        &Header::new(Algorithm::HS256),
        &claims(-60, 540),
        &EncodingKey::from_secret(b"not the App's key"),
    )
    .unwrap();
    assert_eq!(mint_with(shared_secret).await, 401, "HS256");

    assert_eq!(fake.tokens_minted(), 1);
    fake.assert_responses_valid();
}

#[test]
fn the_validator_rejects_what_github_would_not_send() {
    let spec = openapi::spec();
    let errors = spec.validate(spec.schema("pull-request"), &json!({"number": "7"}));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("missing required property \"head\"")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("$.number: expected an integer")),
        "{errors:?}"
    );
    assert!(
        spec.validate(spec.schema("nullable-simple-user"), &Value::Null)
            .is_empty()
    );
    assert!(
        !spec
            .validate(spec.schema("simple-user"), &Value::Null)
            .is_empty()
    );
    let errors = spec.validate(
        spec.schema("diff-entry"),
        &json!({"sha": null, "filename": "a", "status": "edited", "additions": 1,
                "deletions": 0, "changes": 1, "blob_url": "", "raw_url": "",
                "contents_url": ""}),
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("\"edited\" is not one of")),
        "{errors:?}"
    );
    let undocumented = spec.validate_response(
        "PUT",
        "/repos/{owner}/{repo}/pulls/{pull_number}/merge",
        418,
        None,
    );
    assert!(undocumented.is_err());
}

#[test]
#[allow(clippy::too_many_lines)] // every example event, checked field by field
fn webhook_examples_verify_and_parse() {
    let secret = b"autobump-webhook-secret";
    let dedup = DeliveryDeduplicator::new(100);

    let comments = webhook_examples("issue_comment");
    let mut created = None;
    for (i, example) in comments.iter().enumerate() {
        let body = serde_json::to_vec(example).unwrap();
        let signature = sign(secret, &body);
        assert!(verify_signature(secret, &body, &signature));
        let mut tampered = body.clone();
        tampered[body.len() / 2] ^= 1;
        assert!(!verify_signature(secret, &tampered, &signature));
        assert!(!verify_signature(b"another secret", &body, &signature));

        let WebhookEvent::IssueComment(event) = parse_webhook("issue_comment", &body).unwrap()
        else {
            panic!("example {i} is not an issue comment");
        };
        assert_eq!(event.repo.to_string(), example["repository"]["full_name"]);
        assert_eq!(Some(event.number), example["issue"]["number"].as_u64());
        assert_eq!(Some(event.comment_id), example["comment"]["id"].as_u64());
        assert_eq!(
            event.body,
            example["comment"]["body"].as_str().unwrap_or_default()
        );
        assert_eq!(event.author, example["comment"]["user"]["login"]);
        assert_eq!(
            event.created_at,
            at(example["comment"]["created_at"].as_str().unwrap())
        );
        assert!(!event.is_pull_request, "none of the examples is on a PR");
        if event.action == CommentAction::Created && created.is_none() {
            created = Some(example.clone());
        }
        let delivery = format!("delivery-{i}");
        assert!(dedup.first_delivery(&delivery));
        assert!(!dedup.first_delivery(&delivery), "a redelivery is dropped");
    }

    // The same comment on a PR: GitHub then sets `issue.pull_request`. The payload built
    // here must still be what GitHub's description says a comment webhook is.
    let mut on_pr = created.clone().expect("an issue_comment created example");
    let number = on_pr["issue"]["number"].as_u64().unwrap();
    let base = format!(
        "https://api.github.com/repos/{}",
        on_pr["repository"]["full_name"].as_str().unwrap()
    );
    on_pr["issue"]["pull_request"] = json!({
        "url": format!("{base}/pulls/{number}"),
        "html_url": format!("https://github.com/{}/pull/{number}", on_pr["repository"]["full_name"].as_str().unwrap()),
        "diff_url": format!("https://github.com/{}/pull/{number}.diff", on_pr["repository"]["full_name"].as_str().unwrap()),
        "patch_url": format!("https://github.com/{}/pull/{number}.patch", on_pr["repository"]["full_name"].as_str().unwrap()),
        "merged_at": null
    });
    on_pr["comment"]["body"] = json!("/hold canary is failing");
    // The examples predate fields GitHub's description now requires (`reactions`,
    // `performed_via_github_app`, …), so the check is relative: marking the issue as a
    // PR must not add a single violation.
    let spec = openapi::spec();
    let schema = spec.schema("webhook-issue-comment-created");
    let original = spec.validate(schema, created.as_ref().unwrap());
    let modified = spec.validate(schema, &on_pr);
    assert_eq!(
        modified, original,
        "the PR comment payload breaks the schema"
    );
    let link_schema = &schema["properties"]["issue"]["allOf"][0]["properties"]["pull_request"];
    assert!(
        link_schema.is_object(),
        "the schema describes issue.pull_request"
    );
    let errors = spec.validate(link_schema, &on_pr["issue"]["pull_request"]);
    assert!(errors.is_empty(), "{errors:?}");
    let body = serde_json::to_vec(&on_pr).unwrap();
    assert!(verify_signature(secret, &body, &sign(secret, &body)));
    let WebhookEvent::IssueComment(event) = parse_webhook("issue_comment", &body).unwrap() else {
        panic!("not an issue comment");
    };
    assert!(event.is_pull_request);
    assert_eq!(event.action, CommentAction::Created);
    assert_eq!(event.body, "/hold canary is failing");

    let mut seen = Vec::new();
    for example in webhook_examples("pull_request") {
        let want = match example["action"].as_str() {
            Some("opened") => PullRequestAction::Opened,
            Some("synchronize") => PullRequestAction::Synchronize,
            _ => continue,
        };
        let body = serde_json::to_vec(&example).unwrap();
        assert!(verify_signature(secret, &body, &sign(secret, &body)));
        let WebhookEvent::PullRequest(event) = parse_webhook("pull_request", &body).unwrap() else {
            panic!("not a pull_request event");
        };
        let pr = &example["pull_request"];
        assert_eq!(event.action, want);
        assert_eq!(Some(event.number), pr["number"].as_u64());
        assert_eq!(event.head_sha, pr["head"]["sha"]);
        assert_eq!(event.head_branch, pr["head"]["ref"]);
        assert_eq!(event.base_branch, pr["base"]["ref"]);
        assert_eq!(event.author, pr["user"]["login"]);
        assert_eq!(event.repo.to_string(), example["repository"]["full_name"]);
        assert!(event.open && !event.merged);
        seen.push(want);
    }
    assert!(seen.contains(&PullRequestAction::Opened), "{seen:?}");
    assert!(seen.contains(&PullRequestAction::Synchronize), "{seen:?}");

    let ping = &webhook_examples("ping")[0];
    assert_eq!(
        parse_webhook("ping", &serde_json::to_vec(ping).unwrap()).unwrap(),
        WebhookEvent::Ping
    );
}

/// Every example of the check and status events GitHub documents parses to the
/// commit it is about.
#[test]
fn check_and_status_examples_name_their_commit() {
    use autobump::forge::webhook::ChecksKind;
    for (event, kind, sha_of) in [
        (
            "status",
            ChecksKind::Status,
            &(|e: &Value| e["sha"].clone()) as &dyn Fn(&Value) -> Value,
        ),
        ("check_run", ChecksKind::CheckRun, &|e: &Value| {
            e["check_run"]["head_sha"].clone()
        }),
        ("check_suite", ChecksKind::CheckRun, &|e: &Value| {
            e["check_suite"]["head_sha"].clone()
        }),
    ] {
        let examples = webhook_examples(event);
        assert!(!examples.is_empty(), "{event}");
        for example in examples {
            let body = serde_json::to_vec(&example).unwrap();
            let WebhookEvent::Checks(parsed) = parse_webhook(event, &body).unwrap() else {
                panic!("{event} did not parse as a checks event")
            };
            assert_eq!(parsed.kind, kind);
            assert_eq!(Value::String(parsed.sha), sha_of(&example), "{event}");
            assert_eq!(
                parsed.repo.to_string(),
                example["repository"]["full_name"].as_str().unwrap()
            );
        }
    }
}

/// `/webhooks/github`: signed deliveries of real example payloads reach the
/// controller's channel; unsigned, forged, duplicated and irrelevant ones do not.
// One delivery sequence against one server; splitting it would repeat the setup.
#[allow(clippy::too_many_lines)]
#[tokio::test]
async fn the_github_webhook_route_verifies_deduplicates_and_forwards() {
    use autobump::forge::webhook::{WebhookEvent, sign};
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/github", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            autobump::http::github_webhook(b"s3cret".to_vec(), tx, None),
        )
        .await
        .unwrap();
    });
    let client = support::http_client();
    let post =
        |event: &'static str, delivery: &'static str, body: Vec<u8>, signature: Option<String>| {
            let mut request = client
                .post(&url)
                .header("X-GitHub-Event", event)
                .header("X-GitHub-Delivery", delivery)
                .body(body);
            if let Some(sig) = signature {
                request = request.header("X-Hub-Signature-256", sig);
            }
            request.send()
        };

    let mut comment = webhook_examples("issue_comment")
        .into_iter()
        .find(|e| e["action"] == "created")
        .expect("an issue_comment created example");
    let number = comment["issue"]["number"].as_u64().unwrap();
    comment["issue"]["pull_request"] =
        json!({"url": format!("https://api.github.com/repos/x/y/pulls/{number}")});
    comment["comment"]["body"] = json!("/hold please wait");
    let body = serde_json::to_vec(&comment).unwrap();

    // Unsigned or signed with another secret: refused, nothing forwarded.
    assert_eq!(
        post("issue_comment", "d1", body.clone(), None)
            .await
            .unwrap()
            .status(),
        401
    );
    let forged = sign(b"other", &body);
    assert_eq!(
        post("issue_comment", "d1", body.clone(), Some(forged))
            .await
            .unwrap()
            .status(),
        401
    );
    assert!(rx.try_recv().is_err());

    // Signed: forwarded once; the same delivery again is acknowledged and dropped.
    let good = sign(b"s3cret", &body);
    assert_eq!(
        post("issue_comment", "d2", body.clone(), Some(good.clone()))
            .await
            .unwrap()
            .status(),
        200
    );
    let Some(WebhookEvent::IssueComment(c)) = rx.recv().await else {
        panic!("expected the comment event");
    };
    assert!(c.is_pull_request);
    assert_eq!(c.number, number);
    assert_eq!(c.body, "/hold please wait");
    assert_eq!(
        post("issue_comment", "d2", body.clone(), Some(good))
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        rx.try_recv().is_err(),
        "a redelivery must not trigger twice"
    );

    // A comment on a plain issue is not autobump's business; ping answers pong.
    let plain = webhook_examples("issue_comment")
        .into_iter()
        .find(|e| e["action"] == "created")
        .unwrap();
    let plain = serde_json::to_vec(&plain).unwrap();
    let signed = sign(b"s3cret", &plain);
    assert_eq!(
        post("issue_comment", "d3", plain, Some(signed))
            .await
            .unwrap()
            .status(),
        202
    );
    let ping_body = serde_json::to_vec(&webhook_examples("ping")[0]).unwrap();
    let signed = sign(b"s3cret", &ping_body);
    let answer = post("ping", "d4", ping_body, Some(signed)).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "pong\n");
    assert!(rx.try_recv().is_err());

    // Oversized bodies are refused before any parsing.
    let big = vec![b' '; autobump::forge::webhook::MAX_WEBHOOK_BODY_BYTES + 1];
    let signed = sign(b"s3cret", &big);
    assert_eq!(
        post("issue_comment", "d5", big, Some(signed))
            .await
            .unwrap()
            .status(),
        413
    );
}
