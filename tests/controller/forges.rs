//! The forge fakes behind one interface, so the pull-request flow's tests run on
//! GitHub and on GitLab alike ([`ForgeFake`]), and those tests.

use std::path::Path;
use std::sync::Arc;

use autobump::clock::SystemClock;
use autobump::core::gate::{Alert, GateReading, GateVerdict};
use autobump::core::merge::CheckState;
use autobump::core::plan::{Effect, HOLD_LABEL};
use autobump::forge::{
    Forges, GitHub, GitHubAuth, GitHubConfig, GitLab, GitLabConfig, Permission, RepoName,
    WebhookFeed,
};
use autobump::store::Store as _;

use super::support::github_fake::GithubFake;
use super::support::gitlab_fake::{self, GitlabFake};
use super::{MONDAY, NEW, NEWER, OLD, World, at, kinds, waiting};

/// A pull (merge) request as the tests look at it.
#[derive(Debug, Clone)]
pub struct FakePr {
    pub title: String,
    pub author: String,
    pub labels: Vec<String>,
    pub merged: bool,
}

/// What the flow's tests need of a forge fake.
pub trait ForgeFake: Sized + Send + Sync + 'static {
    /// The bot account autobump's requests come from.
    const BOT: &'static str;
    /// What marks a comment's URL as a comment.
    const COMMENT_ANCHOR: &'static str;
    async fn start() -> Self;
    fn git_dir(&self) -> &Path;
    fn commit(&self, branch: &str, files: &[(&str, Option<&str>)], message: &str) -> String;
    fn branch_sha(&self, branch: &str) -> Option<String>;
    /// The repository on the forge.
    fn repo(&self) -> RepoName;
    /// autobump's client of the fake (answering from `feed` when given).
    fn client(&self, feed: Option<Arc<WebhookFeed>>) -> Forges;
    /// CI reports `name` on `sha` (GitHub: a check run; GitLab: a job of the pipeline
    /// for `sha`, whose status follows its jobs).
    fn check(&self, sha: &str, name: &str, state: CheckState);
    /// An external commit status.
    fn status(&self, sha: &str, name: &str, state: CheckState);
    /// `user`'s role on the repository.
    fn grant(&self, user: &str, permission: Permission);
    /// `user` comments `body` on PR `number`.
    fn comment(&self, number: u64, user: &str, body: &str);
    fn pr(&self, number: u64) -> FakePr;
    fn writes(&self) -> u64;
    /// Fails the test if autobump used the forge in a way it does not document.
    fn assert_valid(&self);
    /// How a wait names the running or failed checks `names` (GitLab's pipeline is
    /// one more).
    fn named(names: &[&str]) -> String;
}

impl ForgeFake for GithubFake {
    const BOT: &'static str = "autobump-bot";
    const COMMENT_ANCHOR: &'static str = "issuecomment";

    async fn start() -> Self {
        GithubFake::start().await
    }

    fn git_dir(&self) -> &Path {
        GithubFake::git_dir(self)
    }

    fn commit(&self, branch: &str, files: &[(&str, Option<&str>)], message: &str) -> String {
        GithubFake::commit(self, branch, files, message)
    }

    fn branch_sha(&self, branch: &str) -> Option<String> {
        GithubFake::branch_sha(self, branch)
    }

    fn repo(&self) -> RepoName {
        RepoName::new("example", "infra")
    }

    fn client(&self, feed: Option<Arc<WebhookFeed>>) -> Forges {
        let github = GitHub::new(
            GitHubConfig::new(GitHubAuth::Token("test-token".into())).api_url(self.api_url()),
            Arc::new(SystemClock),
        )
        .unwrap();
        Forges {
            github: Some(match feed {
                Some(feed) => github.with_feed(feed),
                None => github,
            }),
            gitlab: None,
        }
    }

    fn check(&self, sha: &str, name: &str, state: CheckState) {
        let (status, conclusion) = match state {
            CheckState::Pending => ("in_progress", None),
            CheckState::Success => ("completed", Some("success")),
            CheckState::Failure => ("completed", Some("failure")),
        };
        self.add_check_run(sha, name, status, conclusion);
    }

    fn status(&self, sha: &str, name: &str, state: CheckState) {
        let state = match state {
            CheckState::Pending => "pending",
            CheckState::Success => "success",
            CheckState::Failure => "failure",
        };
        self.set_status(sha, name, state);
    }

    fn grant(&self, user: &str, permission: Permission) {
        self.set_permission(user, permission.as_str());
    }

    fn comment(&self, number: u64, user: &str, body: &str) {
        self.add_comment(number, user, body);
    }

    fn pr(&self, number: u64) -> FakePr {
        let pull = self.pull(number);
        FakePr {
            title: pull.title,
            author: pull.author,
            labels: pull.labels,
            merged: pull.merged,
        }
    }

    fn writes(&self) -> u64 {
        GithubFake::writes(self)
    }

    fn assert_valid(&self) {
        self.assert_responses_valid();
    }

    fn named(names: &[&str]) -> String {
        names.join(", ")
    }
}

impl ForgeFake for GitlabFake {
    const BOT: &'static str = gitlab_fake::BOT;
    const COMMENT_ANCHOR: &'static str = "#note_";

    async fn start() -> Self {
        GitlabFake::start().await
    }

    fn git_dir(&self) -> &Path {
        GitlabFake::git_dir(self)
    }

    fn commit(&self, branch: &str, files: &[(&str, Option<&str>)], message: &str) -> String {
        GitlabFake::commit(self, branch, files, message)
    }

    fn branch_sha(&self, branch: &str) -> Option<String> {
        GitlabFake::branch_sha(self, branch)
    }

    fn repo(&self) -> RepoName {
        RepoName::gitlab("group/sub", "infra")
    }

    fn client(&self, feed: Option<Arc<WebhookFeed>>) -> Forges {
        let gitlab = GitLab::new(
            GitLabConfig::new(self.url(), gitlab_fake::BOT_TOKEN),
            Arc::new(SystemClock),
        )
        .unwrap();
        Forges {
            github: None,
            gitlab: Some(match feed {
                Some(feed) => gitlab.with_feed(feed),
                None => gitlab,
            }),
        }
    }

    fn check(&self, sha: &str, name: &str, state: CheckState) {
        self.run_job(sha, name, gitlab_status(state));
    }

    fn status(&self, sha: &str, name: &str, state: CheckState) {
        self.set_status(sha, name, gitlab_status(state));
    }

    fn grant(&self, user: &str, permission: Permission) {
        self.add_user(user, autobump::forge::access_level_of(permission));
    }

    fn comment(&self, number: u64, user: &str, body: &str) {
        self.add_note(number, user, body);
    }

    fn pr(&self, number: u64) -> FakePr {
        let mr = self.mr(number);
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        FakePr {
            title: text(&mr["title"]),
            author: text(&mr["author"]["username"]),
            labels: mr["labels"]
                .as_array()
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default(),
            merged: mr["state"] == "merged",
        }
    }

    fn writes(&self) -> u64 {
        GitlabFake::writes(self)
    }

    fn assert_valid(&self) {
        let odd: Vec<_> = self
            .log()
            .into_iter()
            .filter(|r| r.operation == "unknown" || r.status >= 500)
            .collect();
        assert!(
            odd.is_empty(),
            "undocumented requests or server errors: {odd:#?}"
        );
    }

    fn named(names: &[&str]) -> String {
        let mut all = vec![autobump::forge::PIPELINE_CHECK];
        all.extend_from_slice(names);
        all.sort_unstable();
        all.join(", ")
    }
}

fn gitlab_status(state: CheckState) -> &'static str {
    match state {
        CheckState::Pending => "running",
        CheckState::Success => "success",
        CheckState::Failure => "failed",
    }
}

/// Runs `$scenario` (an `async fn` generic over [`ForgeFake`]) on GitHub and GitLab.
macro_rules! on_both_forges {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn on_github() {
                super::$scenario::<crate::support::github_fake::GithubFake>().await;
            }

            #[tokio::test]
            async fn on_gitlab() {
                super::$scenario::<crate::support::gitlab_fake::GitlabFake>().await;
            }
        }
    };
}

on_both_forges!(open_refresh_wait_for_checks_then_merge_at_the_read_sha);
on_both_forges!(hold_and_unhold_by_comment_with_permissions);
on_both_forges!(a_tampered_bot_pr_is_never_merged_and_holds_the_policy);
on_both_forges!(a_head_pushed_after_its_checks_were_read_is_not_merged);
on_both_forges!(a_firing_alert_after_a_merge_is_rolled_back_by_a_rollback_pr);

async fn open_refresh_wait_for_checks_then_merge_at_the_read_sha<F: ForgeFake>() {
    let w = World::<F>::start("").await;
    let host = w.registry.host();

    // 1. What main deploys is promoted (no gate: nothing to bake), then a newer
    //    version: the bump is pushed and the PR opened.
    let r = w.reconcile(MONDAY).await;
    assert_eq!(
        kinds(&r),
        ["Promote", "PushBranch", "CreatePr", "RecordBump"],
        "{r:?}"
    );
    let pr = w.fake.pr(1);
    assert_eq!(pr.author, F::BOT);
    assert_eq!(pr.labels, ["skip-review"]);
    assert_eq!(pr.title, format!("autobump(prow): 2 images → {NEW}"));
    let hook = w.file_on("autobump-prow", "config/prow/hook.yaml");
    assert!(
        hook.contains(&format!(
            "image: {host}/prow/hook:{NEW}  # keep this comment\n"
        )),
        "{hook}"
    );
    assert!(
        w.file_on("autobump-prow", "config/prow/deck.yaml")
            .starts_with(&format!("image: \"{host}/prow/deck:{NEW}\"\n"))
    );

    // 2. Nothing new, no checks yet: zero writes anywhere.
    let writes = w.fake.writes();
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    let r = w.reconcile("2026-11-23T10:05:00Z").await;
    assert!(r.effects.iter().all(|e| !e.writes()), "{r:?}");
    assert_eq!(waiting(&r), "no check has reported on the head yet");
    assert_eq!(w.fake.writes(), writes);
    assert_eq!(w.fake.branch_sha("autobump-prow").unwrap(), head);

    // 3. A newer version within minInterval: it waits; after it, the same PR is
    //    refreshed in place.
    for image in ["prow/hook", "prow/deck"] {
        w.registry.retag(image, OLD, NEWER).await;
    }
    let r = w.reconcile("2026-11-23T10:30:00Z").await;
    assert!(waiting(&r).contains("bump waits"), "{r:?}");
    let r = w.reconcile("2026-11-23T11:01:00Z").await;
    assert_eq!(kinds(&r), ["PushBranch", "UpdatePr", "RecordBump"], "{r:?}");
    assert_eq!(r.pr, Some(1));
    assert_eq!(
        w.fake.pr(1).title,
        format!("autobump(prow): 2 images → {NEWER}")
    );
    let head = w.fake.branch_sha("autobump-prow").unwrap();

    // 4. Checks running, then green: merged at exactly the head whose checks were read.
    w.fake.check(&head, "unit", CheckState::Pending);
    let r = w.reconcile("2026-11-23T11:05:00Z").await;
    assert_eq!(
        waiting(&r),
        format!("checks running: {}", F::named(&["unit"]))
    );
    w.fake.status(&head, "ci/e2e", CheckState::Success);
    w.fake.check(&head, "unit", CheckState::Success);
    let r = w.reconcile("2026-11-23T11:10:00Z").await;
    assert_eq!(kinds(&r), ["Merge"], "{r:?}");
    let Effect::Merge { sha, .. } = &r.effects[0] else {
        panic!()
    };
    assert_eq!(sha, &head);
    assert!(w.fake.pr(1).merged);
    assert!(w.file_on("main", "config/prow/hook.yaml").contains(NEWER));
    let history: Vec<String> = w
        .store
        .load("prow")
        .unwrap()
        .history
        .iter()
        .map(|h| h.reason.to_string())
        .collect();
    assert_eq!(
        history,
        ["Deployed", "Promoted", "BumpPushed", "BumpPushed", "Merged"]
    );

    // 5. The merged version is deployed and (no gate) promoted; then nothing to do.
    let r = w.reconcile("2026-11-23T12:30:00Z").await;
    assert_eq!(kinds(&r), ["Promote"], "{r:?}");
    let r = w.reconcile("2026-11-23T12:31:00Z").await;
    assert!(r.effects.is_empty(), "{r:?}");
    w.fake.assert_valid();
}

async fn hold_and_unhold_by_comment_with_permissions<F: ForgeFake>() {
    let w = World::<F>::start("").await;
    w.reconcile(MONDAY).await;
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    w.fake.check(&head, "unit", CheckState::Success);
    w.fake.grant("trinity", Permission::Triage);
    w.fake.grant("reader", Permission::Read);
    w.fake.grant("wanda", Permission::Write);

    // A triager (GitLab: Reporter) holds: label added, no merge, the hold is recorded
    // with who/why/where.
    w.fake
        .comment(1, "trinity", "/hold the database migration is running");
    let r = w.reconcile("2026-11-23T10:10:00Z").await;
    assert_eq!(
        kinds(&r),
        ["SetHold", "MarkSeen", "AddLabels", "Waiting"],
        "{r:?}"
    );
    assert!(w.fake.pr(1).labels.contains(&HOLD_LABEL.to_owned()));
    let hold = w.store.load("prow").unwrap().hold.unwrap();
    assert_eq!(hold.by, "user:trinity");
    assert_eq!(hold.reason, "the database migration is running");
    assert!(
        hold.via.unwrap().contains(F::COMMENT_ANCHOR),
        "where it came from"
    );
    assert!(!w.fake.pr(1).merged);

    // A reader (GitLab: Guest) cannot lift it: a polite reply, still held.
    w.fake.comment(1, "reader", "/unhold");
    let r = w.reconcile("2026-11-23T10:15:00Z").await;
    assert_eq!(kinds(&r), ["Comment", "MarkSeen", "Waiting"], "{r:?}");
    assert!(w.store.load("prow").unwrap().hold.is_some());

    // The same comments are not acted on twice.
    let r = w.reconcile("2026-11-23T10:16:00Z").await;
    assert_eq!(kinds(&r), ["Waiting"], "{r:?}");

    // A writer (GitLab: Developer) lifts it: label removed; merged on the next reconcile.
    w.fake.comment(1, "wanda", "/hold cancel");
    let r = w.reconcile("2026-11-23T10:20:00Z").await;
    assert_eq!(
        kinds(&r),
        ["ClearHold", "MarkSeen", "RemoveLabel", "Waiting"],
        "{r:?}"
    );
    let r = w.reconcile("2026-11-23T10:25:00Z").await;
    assert_eq!(kinds(&r), ["Merge"], "{r:?}");
    assert!(w.fake.pr(1).merged);
    w.fake.assert_valid();
}

async fn a_tampered_bot_pr_is_never_merged_and_holds_the_policy<F: ForgeFake>() {
    let w = World::<F>::start("").await;
    let host = w.registry.host();
    w.reconcile(MONDAY).await;
    // Someone pushes an extra change to the bot's branch.
    let tampered = format!("image: \"{host}/prow/deck:{NEW}\"\nreplicas: 20\n");
    let head = w.fake.commit(
        "autobump-prow",
        &[("config/prow/deck.yaml", Some(tampered.as_str()))],
        "scale up",
    );
    w.fake.check(&head, "unit", CheckState::Success);
    let r = w.reconcile("2026-11-23T10:10:00Z").await;
    assert_eq!(kinds(&r), ["SetHold", "AddLabels", "Comment"], "{r:?}");
    let hold = w.store.load("prow").unwrap().hold.unwrap();
    assert!(hold.automatic);
    assert!(
        hold.reason.contains("config/prow/deck.yaml"),
        "{}",
        hold.reason
    );
    // Even an hour later it is neither merged nor silently overwritten, and the
    // comment is not repeated.
    let r = w.reconcile("2026-11-23T11:30:00Z").await;
    assert!(r.effects.iter().all(|e| !e.writes()), "{r:?}");
    assert!(!w.fake.pr(1).merged);
    assert_eq!(w.fake.branch_sha("autobump-prow").unwrap(), head);
    w.fake.assert_valid();
}

async fn a_head_pushed_after_its_checks_were_read_is_not_merged<F: ForgeFake>() {
    let w = World::<F>::start("").await;
    let host = w.registry.host();
    w.reconcile(MONDAY).await;
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    w.fake.check(&head, "unit", CheckState::Success);

    let now = at("2026-11-23T10:10:00Z");
    let deps = w.deps();
    let observed = autobump::controller::observe(&w.policy, &deps, &GateVerdict::Clear, now)
        .await
        .unwrap();
    // Between the read and the merge, someone pushes to the branch.
    let sneaky = format!("image: \"{host}/prow/deck:{NEW}\"\nreplicas: 3\n");
    w.fake.commit(
        "autobump-prow",
        &[("config/prow/deck.yaml", Some(sneaky.as_str()))],
        "sneak",
    );
    let r = autobump::controller::execute(&w.policy, &deps, observed, GateVerdict::Clear, now)
        .await
        .unwrap();
    assert_eq!(
        kinds(&r),
        ["Merge"],
        "the merge was attempted at the old head"
    );
    assert!(!w.fake.pr(1).merged, "the forge refused it: the head moved");
    // The next reconcile sees the change and holds instead.
    let r = w.reconcile("2026-11-23T10:15:00Z").await;
    assert_eq!(kinds(&r), ["SetHold", "AddLabels", "Comment"], "{r:?}");
    w.fake.assert_valid();
}

async fn a_firing_alert_after_a_merge_is_rolled_back_by_a_rollback_pr<F: ForgeFake>() {
    let w = World::<F>::start(
        "  gate: {prometheus: http://127.0.0.1:9, alerts: '{team=\"prow\"}', bake: 30m}\n",
    )
    .await;
    let host = w.registry.host();
    let firing = GateVerdict::Firing(vec!["HookDown".into()]);
    let mut alert = Alert::firing("HookDown")
        .label("severity", "page")
        .annotation("summary", "hook answers 5xx to 12% of requests")
        .annotation("runbook_url", "https://runbooks.example/HookDown");
    alert.source_url = Some("http://prometheus.example/alerts".into());
    let evidence = GateReading::from_alerts(vec![alert]);

    // OLD bakes first: no PR meanwhile (said once, as the reason the bump waits).
    let r = w.reconcile(MONDAY).await;
    assert_eq!(kinds(&r), ["Waiting"], "{r:?}");
    assert!(waiting(&r).contains("is baking (30m left)"), "{r:?}");
    assert!(w.fake.branch_sha("autobump-prow").is_none());
    // Known-good: the bump PR opens; green; merged.
    let r = w.reconcile("2026-11-23T10:31:00Z").await;
    assert_eq!(
        kinds(&r),
        ["Promote", "PushBranch", "CreatePr", "RecordBump"],
        "{r:?}"
    );
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    w.fake.check(&head, "unit", CheckState::Success);
    let r = w.reconcile("2026-11-23T10:35:00Z").await;
    assert_eq!(kinds(&r), ["Merge"], "{r:?}");
    assert!(w.file_on("main", "config/prow/hook.yaml").contains(NEW));

    // NEW hurts: a rollback PR puts OLD back, merged at once.
    let r = w.reconcile_reading("2026-11-23T10:40:00Z", &evidence).await;
    assert_eq!(kinds(&r)[..2], ["Rollback", "Merge"], "{r:?}");
    let rollback = w.fake.pr(2);
    assert_eq!(
        rollback.title,
        format!("autobump(prow): roll back to {OLD}")
    );
    assert!(rollback.merged);
    assert!(
        w.file_on("main", "config/prow/hook.yaml")
            .contains(&format!("{host}/prow/hook:{OLD}  # keep this comment"))
    );
    let state = w.store.load("prow").unwrap();
    let hold = state.hold.clone().unwrap();
    assert_eq!((hold.by.as_str(), hold.automatic), ("alert:HookDown", true));
    // The hold carries the evidence: labels, summary, runbook, where to look.
    for part in [
        "HookDown {severity=page}: hook answers 5xx to 12% of requests",
        "runbook: https://runbooks.example/HookDown",
        "see http://prometheus.example/alerts",
    ] {
        assert!(hold.reason.contains(part), "{part:?} in {:?}", hold.reason);
    }
    assert!(
        state
            .bad_pairs()
            .contains(&(format!("{host}/prow/hook"), NEW.to_owned()))
    );

    // Still firing a minute later: OLD is known-good, nothing rolls back twice, and the
    // held policy opens nothing.
    let r = w.reconcile_with("2026-11-23T10:41:00Z", firing).await;
    assert!(
        !kinds(&r).contains(&"Rollback") && !kinds(&r).contains(&"CreatePr"),
        "{r:?}"
    );
    w.fake.assert_valid();
}

/// A running `/webhooks/gitlab` receiver (the real route) feeding a [`WebhookFeed`];
/// what it hands on for a reconcile is counted.
struct GitlabHook {
    url: String,
    client: reqwest::Client,
    handed_on: Arc<std::sync::atomic::AtomicU64>,
}

const GITLAB_HOOK_SECRET: &str = "gitlab-hook-secret";

impl GitlabHook {
    async fn start(feed: Arc<WebhookFeed>) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhooks/gitlab", listener.local_addr().unwrap());
        let router =
            autobump::http::gitlab_webhook(GITLAB_HOOK_SECRET.as_bytes().to_vec(), tx, Some(feed));
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let handed_on = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = Arc::clone(&handed_on);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Self {
            url,
            client: super::support::http_client(),
            handed_on,
        }
    }

    async fn deliver_with(&self, token: &str, event: &str, body: &serde_json::Value) -> u16 {
        self.client
            .post(&self.url)
            .header("X-Gitlab-Event", event)
            .header("X-Gitlab-Token", token)
            .json(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn deliver(&self, event: &str, body: &serde_json::Value) {
        assert_eq!(
            self.deliver_with(GITLAB_HOOK_SECRET, event, body).await,
            200,
            "{event}"
        );
    }
}

/// GitLab requests per quiet reconcile while a pipeline runs, without and with
/// webhooks, counted by the fake (printed; the bounds are asserted because a
/// regression there costs users their rate limit).
#[tokio::test]
async fn gitlab_requests_per_reconcile() {
    let mut w = World::<GitlabFake>::start("").await;
    let before = w.fake.total_requests();
    w.reconcile(MONDAY).await;
    let opening = w.fake.total_requests() - before;
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    w.fake.check(&head, "unit", CheckState::Pending);
    w.reconcile("2026-11-23T10:01:00Z").await; // warms the ETag cache
    let quiet = |w: &World<GitlabFake>| {
        (
            w.fake.total_requests(),
            w.fake.not_modified(),
            w.fake.writes(),
        )
    };
    let before = quiet(&w);
    w.reconcile("2026-11-23T10:02:00Z").await;
    let after = quiet(&w);
    let (polled, polled_304) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(after.2, before.2, "a quiet reconcile writes nothing");
    assert_eq!(
        polled, 4,
        "the MR list, its notes, the head's pipeline and statuses"
    );
    assert_eq!(
        polled, polled_304,
        "every read of a quiet reconcile is conditional"
    );

    // With webhooks: once note, pipeline and job deliveries have come in, a quiet
    // reconcile reads only the MR list.
    let feed = w.attach_feed();
    let hook = GitlabHook::start(Arc::clone(&feed)).await;
    assert_eq!(
        hook.deliver_with("wrong", "Pipeline Hook", &serde_json::json!({}))
            .await,
        401,
        "an unauthenticated delivery is refused"
    );
    w.fake.grant("alice", Permission::Write);
    let note = w.fake.add_note(1, "alice", "looks fine");
    hook.deliver("Note Hook", &w.fake.note_hook(note)).await;
    let pipeline = w
        .fake
        .add_pipeline(&head, "refs/merge-requests/1/head", "running");
    w.fake.set_job(pipeline, "lint", "running", false);
    hook.deliver("Pipeline Hook", &w.fake.pipeline_hook(pipeline))
        .await;
    hook.deliver("Job Hook", &w.fake.job_hook(pipeline, "lint"))
        .await;
    assert_eq!(
        hook.handed_on.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "each delivery triggers a reconcile"
    );
    w.reconcile("2026-11-23T10:03:00Z").await; // reads what the deliveries changed
    let before = quiet(&w);
    w.reconcile("2026-11-23T10:04:00Z").await;
    let after = quiet(&w);
    let hooked = after.0 - before.0;
    assert_eq!(after.2, before.2);
    assert_eq!(hooked, 1, "only the MR list is read");
    // A delivery about the head's pipeline makes its checks be read again.
    w.fake.set_job(pipeline, "lint", "success", false);
    hook.deliver("Job Hook", &w.fake.job_hook(pipeline, "lint"))
        .await;
    let before = quiet(&w);
    w.reconcile("2026-11-23T10:05:00Z").await;
    assert!(quiet(&w).0 - before.0 >= 3, "the checks were read again");
    println!(
        "GitLab requests: opening an MR {opening}; quiet while a pipeline runs: {polled} without webhooks ({polled_304} answered 304), {hooked} with webhooks"
    );
    w.fake.assert_valid();
}

/// With `/webhooks/gitlab`: `/hold` and `/unhold` written on a merged autobump MR reach
/// the policy (note hooks name the MR's author by id; the client knows the bot's id
/// from the MRs it read), and are answered on that MR.
#[tokio::test]
async fn with_gitlab_webhooks_commands_on_a_merged_mr_hold_and_lift() {
    let mut w = World::<GitlabFake>::start("").await;
    let feed = w.attach_feed();
    let hook = GitlabHook::start(Arc::clone(&feed)).await;
    w.reconcile(MONDAY).await;
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    w.fake.check(&head, "unit", CheckState::Success);
    let r = w.reconcile("2026-11-23T10:05:00Z").await;
    assert_eq!(kinds(&r), ["Merge"], "{r:?}");
    assert!(w.fake.pr(1).merged);

    w.fake.grant("alice", Permission::Write);
    w.fake.grant("guest", Permission::Read);
    let note = w.fake.add_note(1, "guest", "/hold I do not like it");
    hook.deliver("Note Hook", &w.fake.note_hook(note)).await;
    let note = w
        .fake
        .add_note(1, "alice", "/hold the new version pages on-call");
    hook.deliver("Note Hook", &w.fake.note_hook(note)).await;
    let r = w.reconcile("2026-11-23T10:10:00Z").await;
    let hold = w
        .store
        .load("prow")
        .unwrap()
        .hold
        .expect("held from the merged MR");
    assert_eq!(hold.by, "user:alice", "{r:?}");
    assert_eq!(hold.reason, "the new version pages on-call");
    assert!(hold.via.unwrap().contains("#note_"));
    let answers = w.fake.notes(1);
    assert!(
        answers
            .iter()
            .any(|(author, body)| author == GitlabFake::BOT && body.contains("guest")),
        "the guest's /hold is answered: {answers:?}"
    );

    let note = w.fake.add_note(1, "alice", "/unhold");
    hook.deliver("Note Hook", &w.fake.note_hook(note)).await;
    let r = w.reconcile("2026-11-23T10:15:00Z").await;
    assert!(kinds(&r).contains(&"ClearHold"), "{r:?}");
    assert!(w.store.load("prow").unwrap().hold.is_none());
    w.fake.assert_valid();
}
