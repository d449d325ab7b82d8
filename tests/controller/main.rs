//! The pull-request flow end to end: a real docker-registry, real git (the GitHub
//! fake's bare repository is the GitOps repo), the GitHub adapter through octocrab
//! against the OpenAPI-validated fake, and the state store.

#[path = "../support/mod.rs"]
mod support;

mod app;
mod forges;
mod hostile;
mod own_credentials;
mod promotion;
mod rollback;
mod secrets;

use std::sync::Arc;

use autobump::clock::SystemClock;
use autobump::controller::{Deps, ForgeAccess, Report, reconcile_read};
use autobump::core::gate::{GateReading, GateVerdict};
use autobump::core::plan::Effect;
use autobump::forge::{Forge as _, Forges, RepoName, WebhookFeed};
use autobump::policy::{self, Policy};
use autobump::registry::{RegistryClient, RegistryConfig};
use autobump::repo::{Auth, GitConfig, GitRepo, Person, Source};
use autobump::resolve::Resolver;
use autobump::store::{MemoryStore, Store as _};
use chrono::{DateTime, Utc};
use support::github_fake::GithubFake;
use support::registry::{ManifestKind, Registry};

const OLD: &str = "v20261101-aaaaaaa";
const NEW: &str = "v20261110-bbbbbbb";
const NEWER: &str = "v20261112-ccccccc";

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Monday 2026-11-23, 10:00 UTC: inside "Mon-Fri 09:00-17:00".
const MONDAY: &str = "2026-11-23T10:00:00Z";

struct World<F = GithubFake> {
    fake: F,
    registry: Registry,
    policy: Policy,
    resolver: Resolver<RegistryClient>,
    repo: GitRepo,
    forge: Forges,
    store: MemoryStore,
    _cache: tempfile::TempDir,
}

impl World {
    /// The flow on the GitHub fake.
    async fn new(extra_spec: &str) -> Self {
        Self::start(extra_spec).await
    }
}

impl<F: forges::ForgeFake> World<F> {
    /// The flow on a fresh `F` fake, with `extra_spec` appended to the policy.
    async fn start(extra_spec: &str) -> Self {
        let fake = F::start().await;
        let registry = Registry::start().await;
        let host = registry.host();
        for image in ["prow/hook", "prow/deck"] {
            registry
                .push_image(image, OLD, ManifestKind::OciManifest, None)
                .await;
            registry.retag(image, OLD, NEW).await;
        }
        let hook = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: hook}}\nspec:\n  template:\n    spec:\n      containers:\n        - name: hook\n          image: {host}/prow/hook:{OLD}  # keep this comment\n"
        );
        let deck = format!("image: \"{host}/prow/deck:{OLD}\"\nreplicas: 2\n");
        fake.commit(
            "main",
            &[
                ("config/prow/hook.yaml", Some(hook.as_str())),
                ("config/prow/deck.yaml", Some(deck.as_str())),
            ],
            "Add prow",
        );
        let policy_text = format!(
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: prow}}\nspec:\n  images:\n    - prefix: {host}/prow/\n      tags: {{dateSha: {{}}}}\n      consistent: true\n  source:\n    repo: file://{}\n    include: [\"config/**/*.yaml\"]\n  pullRequest: {{labels: [skip-review], botLogin: {}}}\n  schedule:\n    timezone: UTC\n    windows: [\"Mon-Fri 09:00-17:00\"]\n    minInterval: 1h\n{extra_spec}",
            fake.git_dir().display(),
            F::BOT,
        );
        let (mut policies, diagnostics) =
            policy::load_str(std::path::Path::new("prow.yaml"), &policy_text);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let cache = tempfile::tempdir().unwrap();
        let forge = fake.client(None);
        Self {
            policy: policies.remove(0),
            resolver: Resolver::new(
                RegistryClient::new(RegistryConfig::default(), Arc::new(SystemClock)).unwrap(),
            ),
            repo: git_repo(cache.path()),
            forge,
            store: MemoryStore::default(),
            fake,
            registry,
            _cache: cache,
        }
    }

    /// Lets the forge client answer relaxed reads from memory when deliveries to the
    /// returned feed prove them unchanged (what `autobump run` does with webhooks).
    fn attach_feed(&mut self) -> Arc<WebhookFeed> {
        let feed = Arc::new(WebhookFeed::new(chrono::Duration::minutes(10)));
        self.forge = self.fake.client(Some(Arc::clone(&feed)));
        feed
    }

    fn deps(&self) -> Deps<'_, RegistryClient, GitRepo, MemoryStore, Forges> {
        Deps {
            resolver: &self.resolver,
            repo: &self.repo,
            forge: Some(ForgeAccess {
                forge: &self.forge,
                repo: self.fake.repo(),
                bot_login: F::BOT.into(),
            }),
            store: &self.store,
            source: Source {
                url: self.policy.spec.source.repo.clone(),
                branch: self.policy.spec.source.branch.clone(),
                auth: Auth::None,
            },
            workloads: None,
        }
    }

    async fn reconcile_with(&self, now: &str, gate: GateVerdict) -> Report {
        self.reconcile_reading(now, &GateReading::of(gate)).await
    }

    async fn reconcile_reading(&self, now: &str, reading: &GateReading) -> Report {
        let deps = self.deps();
        reconcile_read(&self.policy, &deps, reading, at(now))
            .await
            .unwrap_or_else(|e| panic!("reconcile at {now}: {e}"))
    }

    async fn reconcile(&self, now: &str) -> Report {
        self.reconcile_with(now, GateVerdict::Clear).await
    }

    /// What a direct-push reconcile of `policy` needs (no forge).
    fn direct_deps(&self, policy: &Policy) -> Deps<'_, RegistryClient, GitRepo, MemoryStore> {
        Deps {
            forge: None,
            resolver: &self.resolver,
            repo: &self.repo,
            store: &self.store,
            source: Source {
                url: policy.spec.source.repo.clone(),
                branch: policy.spec.source.branch.clone(),
                auth: Auth::None,
            },
            workloads: None,
        }
    }

    /// Waits until `main`'s hook.yaml carries `tag` (a running `autobump run` moved it).
    async fn wait_for_hook_tag(&self, tag: &str, what: &str) {
        let hook = || self.file_on("main", "config/prow/hook.yaml");
        support::wait_until(
            what,
            std::time::Duration::from_secs(30),
            std::time::Duration::from_millis(200),
            async || {
                if hook().contains(tag) {
                    Ok(())
                } else {
                    Err(hook())
                }
            },
        )
        .await;
    }

    fn file_on(&self, branch: &str, path: &str) -> String {
        let repo = git2::Repository::open_bare(self.fake.git_dir()).unwrap();
        let commit = repo
            .find_reference(&format!("refs/heads/{branch}"))
            .unwrap()
            .peel_to_commit()
            .unwrap();
        let entry = commit
            .tree()
            .unwrap()
            .get_path(std::path::Path::new(path))
            .unwrap();
        let blob = repo.find_blob(entry.id()).unwrap();
        String::from_utf8(blob.content().to_vec()).unwrap()
    }
}

fn kinds(report: &Report) -> Vec<&'static str> {
    report.effects.iter().map(Effect::kind).collect()
}

fn waiting(report: &Report) -> String {
    report
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Waiting(w) => Some(w.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test]
async fn outside_the_window_no_pr_and_no_merge() {
    let w = World::new("").await;
    // Saturday.
    let r = w.reconcile("2026-11-21T10:00:00Z").await;
    assert_eq!(kinds(&r), ["Promote", "Waiting"]);
    assert!(waiting(&r).starts_with("bump waits: outside"), "{r:?}");
    assert_eq!(w.fake.writes(), 0);
    assert!(w.fake.branch_sha("autobump-prow").is_none());

    // Opened on Monday, green on Friday evening: it waits for Monday.
    w.reconcile(MONDAY).await;
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    w.fake
        .add_check_run(&head, "unit", "completed", Some("success"));
    let r = w.reconcile("2026-11-27T18:00:00Z").await;
    assert!(
        waiting(&r).starts_with("outside the schedule; next opening 2026-11-30 09:00:00 UTC"),
        "{r:?}"
    );
    assert!(!w.fake.pull(1).merged);
    w.fake.assert_responses_valid();
}

#[tokio::test]
async fn a_firing_or_unknown_gate_never_merges() {
    let w = World::new("").await;
    w.reconcile(MONDAY).await;
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    w.fake
        .add_check_run(&head, "unit", "completed", Some("success"));
    let r = w
        .reconcile_with(
            "2026-11-23T10:10:00Z",
            GateVerdict::Firing(vec!["HookDown".into()]),
        )
        .await;
    assert_eq!(waiting(&r), "alerts firing: HookDown");
    let r = w
        .reconcile_with(
            "2026-11-23T10:15:00Z",
            GateVerdict::Unknown("prometheus unreachable".into()),
        )
        .await;
    assert_eq!(waiting(&r), "alert state unknown: prometheus unreachable");
    assert!(!w.fake.pull(1).merged);
    w.fake.assert_responses_valid();
}

#[tokio::test]
async fn red_checks_ask_for_a_bounded_number_of_retests() {
    let w = World::new("  merge: {retest: {comment: /retest, max: 2}}\n").await;
    w.reconcile(MONDAY).await;
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    w.fake
        .add_check_run(&head, "unit", "completed", Some("failure"));
    for (minute, want) in [
        ("10", vec!["Comment", "Waiting"]),
        ("11", vec!["Comment", "Waiting"]),
        ("12", vec!["Waiting"]),
    ] {
        let r = w.reconcile(&format!("2026-11-23T10:{minute}:00Z")).await;
        assert_eq!(kinds(&r), want, "{r:?}");
        assert_eq!(waiting(&r), "checks failed: unit");
    }
    assert!(!w.fake.pull(1).merged);
    w.fake.assert_responses_valid();
}

/// GitHub requests per reconcile, counted by the fake (printed; the conditional
/// reads are asserted because a regression there costs users their rate limit).
#[tokio::test]
async fn github_requests_per_reconcile() {
    let w = World::new("").await;
    let before = (w.fake.total_requests(), w.fake.not_modified());
    w.reconcile(MONDAY).await;
    let opening = w.fake.total_requests() - before.0;
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    w.fake.add_check_run(&head, "unit", "in_progress", None);
    w.reconcile("2026-11-23T10:01:00Z").await; // warms the ETag cache
    let before = (
        w.fake.total_requests(),
        w.fake.not_modified(),
        w.fake.writes(),
    );
    w.reconcile("2026-11-23T10:02:00Z").await;
    let quiet = w.fake.total_requests() - before.0;
    let conditional = w.fake.not_modified() - before.1;
    assert_eq!(
        w.fake.writes(),
        before.2,
        "a quiet reconcile writes nothing"
    );
    assert_eq!(
        quiet, conditional,
        "every read of a quiet reconcile is conditional"
    );

    // Held (or outside the window, or the gate not Clear): checks are not even read.
    w.store
        .update("prow", &mut |s| {
            s.hold = Some(autobump::policy::v1alpha1::Hold {
                by: "cli:ops".into(),
                since: at(MONDAY),
                reason: "x".into(),
                via: None,
                automatic: false,
            });
        })
        .unwrap();
    w.reconcile("2026-11-23T10:03:00Z").await; // labels the PR (a write)
    w.reconcile("2026-11-23T10:04:00Z").await; // warms the ETag cache after the label
    let before = (
        w.fake.total_requests(),
        w.fake.not_modified(),
        w.fake.writes(),
    );
    w.reconcile("2026-11-23T10:05:00Z").await;
    let blocked = w.fake.total_requests() - before.0;
    let blocked_conditional = w.fake.not_modified() - before.1;
    assert_eq!(w.fake.writes(), before.2);
    assert_eq!(
        blocked, 2,
        "a blocked quiet reconcile reads the PR list and the comments only"
    );
    assert_eq!(blocked_conditional, 2);
    println!(
        "GitHub requests: opening a PR {opening}; quiet, waiting for checks {quiet} ({conditional} answered 304, free); quiet and blocked {blocked} ({blocked_conditional} answered 304)"
    );
    w.fake.assert_responses_valid();
}

/// A running `/webhooks/github` receiver (the real route) feeding a [`WebhookFeed`].
struct Hook {
    url: String,
    client: reqwest::Client,
    deliveries: std::sync::atomic::AtomicU64,
}

const HOOK_SECRET: &[u8] = b"hook-secret";

impl Hook {
    async fn start(feed: Arc<WebhookFeed>) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhooks/github", listener.local_addr().unwrap());
        let router = autobump::http::github_webhook(HOOK_SECRET.to_vec(), tx, Some(feed));
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        // The reconciles here are driven by the test; drain the pokes.
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        Self {
            url,
            client: support::http_client(),
            deliveries: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Delivers `payload` (an `@octokit/webhooks-examples` payload, adjusted) signed.
    async fn deliver(&self, event: &str, payload: &serde_json::Value) {
        let body = serde_json::to_vec(payload).unwrap();
        let n = self
            .deliveries
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let status = self
            .client
            .post(&self.url)
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", format!("delivery-{n}"))
            .header(
                "X-Hub-Signature-256",
                autobump::forge::webhook::sign(HOOK_SECRET, &body),
            )
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{event} delivery");
    }
}

/// GitHub's example payload of `event` (the first with `action`, if given), moved to
/// example/infra.
fn example(event: &str, action: Option<&str>) -> serde_json::Value {
    let mut payload = support::webhook_examples(event)
        .into_iter()
        .find(|e| action.is_none_or(|a| e["action"] == a))
        .unwrap_or_else(|| panic!("an example of {event} {action:?}"));
    payload["repository"]["full_name"] = serde_json::json!("example/infra");
    payload
}

fn check_run_delivery(sha: &str) -> serde_json::Value {
    let mut payload = example("check_run", Some("completed"));
    payload["check_run"]["head_sha"] = serde_json::json!(sha);
    payload
}

fn status_delivery(sha: &str) -> serde_json::Value {
    let mut payload = example("status", None);
    payload["sha"] = serde_json::json!(sha);
    payload
}

/// A comment written at `when` by `author` on PR `number`, whose author and body
/// (autobump's marker or not) are given.
fn comment_delivery(
    (number, open, pr_author, pr_body): (u64, bool, &str, &str),
    (id, author, text, when): (u64, &str, &str, &str),
) -> serde_json::Value {
    let mut payload = example("issue_comment", Some("created"));
    payload["issue"]["number"] = serde_json::json!(number);
    payload["issue"]["state"] = serde_json::json!(if open { "open" } else { "closed" });
    payload["issue"]["user"]["login"] = serde_json::json!(pr_author);
    payload["issue"]["body"] = serde_json::json!(pr_body);
    payload["issue"]["pull_request"] = serde_json::json!({
        "url": format!("https://api.github.com/repos/example/infra/pulls/{number}")
    });
    let comment = &mut payload["comment"];
    comment["id"] = serde_json::json!(id);
    comment["body"] = serde_json::json!(text);
    comment["user"]["login"] = serde_json::json!(author);
    comment["created_at"] = serde_json::json!(when);
    comment["updated_at"] = serde_json::json!(when);
    comment["html_url"] = serde_json::json!(format!(
        "https://github.com/example/infra/pull/{number}#issuecomment-{id}"
    ));
    payload
}

/// With GitHub webhooks: a quiet reconcile while checks run costs one conditional
/// request (the PR list), and a check's delivery makes the next reconcile read again
/// and merge. Returns the world with PR #1 merged.
async fn merged_with_webhooks() -> (World, Hook) {
    let mut w = World::new("").await;
    let feed = w.attach_feed();
    let hook = Hook::start(Arc::clone(&feed)).await;

    w.reconcile(MONDAY).await;
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    w.fake.add_check_run(&head, "unit", "in_progress", None);
    // The hook is subscribed to check runs, statuses and comments: it delivered each.
    hook.deliver("check_run", &check_run_delivery(&head)).await;
    hook.deliver(
        "status",
        &status_delivery("0123456789abcdef0123456789abcdef01234567"),
    )
    .await;
    hook.deliver(
        "issue_comment",
        &comment_delivery(
            (99, true, "someone", "unrelated"),
            (9_901, "someone", "thanks!", "2026-11-23T10:00:30Z"),
        ),
    )
    .await;
    let r = w.reconcile("2026-11-23T10:01:00Z").await;
    assert_eq!(waiting(&r), "checks running: unit");
    let before = (
        w.fake.total_requests(),
        w.fake.not_modified(),
        w.fake.writes(),
    );
    let r = w.reconcile("2026-11-23T10:02:00Z").await;
    assert_eq!(waiting(&r), "checks running: unit");
    let quiet = w.fake.total_requests() - before.0;
    let conditional = w.fake.not_modified() - before.1;
    assert_eq!(w.fake.writes(), before.2);
    assert_eq!(
        (quiet, conditional),
        (1, 1),
        "a quiet reconcile with webhooks reads only the PR list, conditionally"
    );

    // The check completes and GitHub says so: the next reconcile reads and merges.
    w.fake
        .add_check_run(&head, "unit", "completed", Some("success"));
    hook.deliver("check_run", &check_run_delivery(&head)).await;
    let r = w.reconcile("2026-11-23T10:03:00Z").await;
    assert_eq!(kinds(&r), ["Merge"], "{r:?}");
    assert!(w.fake.pull(1).merged);
    println!(
        "GitHub requests with webhooks: quiet, waiting for checks {quiet} ({conditional} answered 304); reads answered from webhooks: {}",
        w.forge
            .github
            .as_ref()
            .unwrap()
            .stats()
            .snapshot()
            .from_webhooks
    );
    (w, hook)
}

#[tokio::test]
async fn with_webhooks_a_quiet_reconcile_costs_one_conditional_request() {
    let (w, _hook) = merged_with_webhooks().await;
    w.fake.assert_responses_valid();
}

/// `/hold` and `/unhold` written on the merged (closed) PR reach the policy by webhook
/// and are answered there.
#[tokio::test]
async fn with_webhooks_commands_on_a_closed_pr_hold_and_lift() {
    let (w, hook) = merged_with_webhooks().await;
    let repo = RepoName::new("example", "infra");

    // `/hold` on the merged PR, by someone with triage: the policy is held, and the
    // answer is on that PR.
    let body = w.fake.pull(1).body.unwrap_or_default();
    w.fake.set_permission("alice", "triage");
    hook.deliver(
        "issue_comment",
        &comment_delivery(
            (1, false, "autobump-bot", &body),
            (
                9_902,
                "alice",
                "/hold the database migration",
                "2026-11-23T10:03:30Z",
            ),
        ),
    )
    .await;
    w.reconcile("2026-11-23T10:04:00Z").await;
    let hold = w
        .store
        .load("prow")
        .unwrap()
        .hold
        .expect("held from the closed PR");
    assert_eq!(
        (hold.by.as_str(), hold.reason.as_str()),
        ("user:alice", "the database migration")
    );
    let answers = w.forge.list_comments(&repo, 1, None).await.unwrap();
    assert!(
        answers
            .iter()
            .any(|c| c.author == "autobump-bot" && c.body.contains("`prow` is now on hold")),
        "{answers:?}"
    );
    // The same delivery again (GitHub redelivers on request) changes nothing.
    w.reconcile("2026-11-23T10:04:30Z").await;
    assert_eq!(
        w.forge.list_comments(&repo, 1, None).await.unwrap().len(),
        answers.len()
    );

    // `/unhold` by someone with triage only: refused politely there; with write: lifted.
    w.fake.set_permission("bob", "write");
    for (id, who, when) in [
        (9_903, "alice", "2026-11-23T10:05:00Z"),
        (9_904, "bob", "2026-11-23T10:05:10Z"),
    ] {
        hook.deliver(
            "issue_comment",
            &comment_delivery(
                (1, false, "autobump-bot", &body),
                (id, who, "/unhold", when),
            ),
        )
        .await;
    }
    w.reconcile("2026-11-23T10:06:00Z").await;
    assert!(w.store.load("prow").unwrap().hold.is_none());
    let answers = w.forge.list_comments(&repo, 1, None).await.unwrap();
    assert!(
        answers.iter().any(|c| c.body.starts_with("Sorry @alice")),
        "{answers:?}"
    );
    assert!(
        answers.iter().any(|c| c.body.contains("is lifted")),
        "{answers:?}"
    );
    w.fake.assert_responses_valid();
}

#[tokio::test]
async fn a_secondary_rate_limit_is_waited_out_and_the_pr_still_opens() {
    let w = World::new("").await;
    w.fake.fail_next(
        "pulls/create",
        1,
        support::github_fake::Failure::SecondaryRateLimit { retry_after: 1 },
    );
    let watch = autobump::clock::Stopwatch::start();
    let r = w.reconcile(MONDAY).await;
    assert_eq!(
        kinds(&r),
        ["Promote", "PushBranch", "CreatePr", "RecordBump"],
        "{r:?}"
    );
    assert!(
        watch.elapsed() >= std::time::Duration::from_millis(900),
        "Retry-After was honoured"
    );
    assert_eq!(
        w.fake.requests("pulls/create"),
        2,
        "refused once, then created"
    );
    assert!(w.fake.pull(1).open);
    w.fake.assert_responses_valid();
}

#[tokio::test]
async fn direct_push_bumps_the_base_branch_when_not_held_and_the_gate_is_clear() {
    use autobump::controller::reconcile;
    let w = World::new("").await;
    let host = w.registry.host();
    let text = format!(
        "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: direct}}\nspec:\n  images:\n    - prefix: {host}/prow/\n      tags: {{dateSha: {{}}}}\n  source:\n    repo: file://{}\n    include: [\"config/**/*.yaml\"]\n  directPush: {{}}\n  schedule: {{minInterval: 1h}}\n",
        w.fake.git_dir().display()
    );
    let (mut policies, diagnostics) = policy::load_str(std::path::Path::new("direct.yaml"), &text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let direct = policies.remove(0);
    let deps = w.direct_deps(&direct);
    let before = w.fake.branch_sha("main").unwrap();

    // Held, or the gate not Clear: nothing is pushed.
    w.store
        .update("direct", &mut |s| {
            s.hold = Some(autobump::policy::v1alpha1::Hold {
                by: "cli:ops".into(),
                since: at(MONDAY),
                reason: "release".into(),
                via: Some("cli".into()),
                automatic: false,
            });
        })
        .unwrap();
    let r = reconcile(&direct, &deps, GateVerdict::Clear, at(MONDAY))
        .await
        .unwrap();
    assert_eq!(waiting(&r), "the policy is held by cli:ops");
    w.store.update("direct", &mut |s| s.hold = None).unwrap();
    let r = reconcile(
        &direct,
        &deps,
        GateVerdict::Unknown("down".into()),
        at(MONDAY),
    )
    .await
    .unwrap();
    assert_eq!(waiting(&r), "alert state unknown: down");
    assert_eq!(w.fake.branch_sha("main").unwrap(), before);

    // Clear: pushed to main, exactly the version bump.
    let r = reconcile(&direct, &deps, GateVerdict::Clear, at(MONDAY))
        .await
        .unwrap();
    assert_eq!(kinds(&r), ["PushDirect", "RecordBump"], "{r:?}");
    assert_ne!(w.fake.branch_sha("main").unwrap(), before);
    assert!(
        w.file_on("main", "config/prow/hook.yaml")
            .contains(&format!("{host}/prow/hook:{NEW}  # keep this comment"))
    );
    let state = w.store.load("direct").unwrap();
    assert_eq!(state.last_bump, Some(at(MONDAY)));
    // Without a gate the deployed version was promoted at once, then the bump pushed.
    let reasons: Vec<&str> = state.history.iter().map(|h| h.reason.as_str()).collect();
    assert_eq!(reasons, ["Deployed", "Promoted", "Pushed"]);
    assert!(
        state.history[2]
            .message
            .contains(&format!("{OLD} -> {NEW}")),
        "{:?}",
        state.history
    );

    // The pushed version is deployed; with no gate it is promoted; then nothing to do.
    let r = reconcile(
        &direct,
        &deps,
        GateVerdict::Clear,
        at("2026-11-23T12:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(kinds(&r), ["Promote"], "{r:?}");
    let r = reconcile(
        &direct,
        &deps,
        GateVerdict::Clear,
        at("2026-11-23T12:01:00Z"),
    )
    .await
    .unwrap();
    assert!(r.effects.is_empty(), "{r:?}");
}

/// A store whose write of a history entry with reason `refuse` fails, as if the
/// process died right before it (the write before it, and the world, stand).
struct RefusingStore<'a> {
    inner: &'a dyn autobump::store::Store,
    refuse: std::sync::Mutex<Option<&'static str>>,
}

impl autobump::store::Store for RefusingStore<'_> {
    fn load(
        &self,
        policy: &str,
    ) -> Result<autobump::store::PolicyState, autobump::store::StoreError> {
        self.inner.load(policy)
    }

    fn load_all(
        &self,
    ) -> Result<
        std::collections::BTreeMap<String, autobump::store::PolicyState>,
        autobump::store::StoreError,
    > {
        self.inner.load_all()
    }

    fn update(
        &self,
        policy: &str,
        f: &mut dyn FnMut(&mut autobump::store::PolicyState),
    ) -> Result<autobump::store::PolicyState, autobump::store::StoreError> {
        let before = self.inner.load(policy)?;
        let mut after = before.clone();
        f(&mut after);
        let added = &after.history[before.history.len().min(after.history.len())..];
        if let Some(reason) = *self.refuse.lock().unwrap()
            && added.iter().any(|e| e.reason == reason)
        {
            return Err(autobump::store::StoreError::Io {
                path: "crash".into(),
                source: std::io::Error::other(format!("crashed before recording {reason}")),
            });
        }
        self.inner.update(policy, f)
    }
}

/// Direct push: a crash between the push and its `Pushed` record loses nothing; the
/// restart finds the branch carrying the versions and records it, once.
#[tokio::test]
async fn a_crash_between_a_direct_push_and_its_record_is_settled_on_restart() {
    let w = World::new("").await;
    crash_between_push_and_record(&w, &w.store).await;
}

/// The same on the standalone state database (issue 16: crash safety on
/// transactions): the failed update is a rolled-back transaction.
#[tokio::test]
async fn a_crash_between_a_direct_push_and_its_record_is_settled_on_restart_with_sqlite() {
    let w = World::new("").await;
    let dir = tempfile::tempdir().unwrap();
    let db = autobump::store::SqliteStore::open(&dir.path().join("state.db")).unwrap();
    crash_between_push_and_record(&w, &db).await;
    // What a restarted process reads from the file agrees.
    let again = autobump::store::SqliteStore::open(&dir.path().join("state.db")).unwrap();
    let reasons: Vec<String> = again
        .history("direct", None)
        .unwrap()
        .into_iter()
        .map(|e| e.reason.to_string())
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| *r == "Pushed").count(),
        1,
        "{reasons:?}"
    );
}

async fn crash_between_push_and_record(w: &World, inner: &dyn autobump::store::Store) {
    use autobump::controller::{Deps, reconcile};
    let text = direct_policy_text(w, "direct");
    let (mut policies, diagnostics) = policy::load_str(std::path::Path::new("direct.yaml"), &text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let direct = policies.remove(0);
    let plain = w.direct_deps(&direct);
    let store = RefusingStore {
        inner,
        refuse: std::sync::Mutex::new(Some("Pushed")),
    };
    let deps: Deps<'_, _, _, _> = Deps {
        forge: None,
        resolver: plain.resolver,
        repo: plain.repo,
        store: &store,
        source: plain.source.clone(),
        workloads: None,
    };
    let before = w.fake.branch_sha("main").unwrap();
    let crashed = reconcile(&direct, &deps, GateVerdict::Clear, at(MONDAY)).await;
    assert!(crashed.is_err(), "{crashed:?}");
    assert_ne!(
        w.fake.branch_sha("main").unwrap(),
        before,
        "the push happened"
    );
    let pushed = || {
        inner
            .load("direct")
            .unwrap()
            .history
            .iter()
            .filter(|h| h.reason == "Pushed")
            .count()
    };
    assert_eq!(pushed(), 0);
    assert_eq!(inner.load("direct").unwrap().intents.len(), 1);

    // The restart: a fresh reconcile with a store that works.
    *store.refuse.lock().unwrap() = None;
    reconcile(
        &direct,
        &deps,
        GateVerdict::Clear,
        at("2026-11-23T10:01:00Z"),
    )
    .await
    .unwrap();
    reconcile(
        &direct,
        &deps,
        GateVerdict::Clear,
        at("2026-11-23T10:02:00Z"),
    )
    .await
    .unwrap();
    let state = inner.load("direct").unwrap();
    assert_eq!(pushed(), 1, "{:?}", state.history);
    assert!(state.intents.is_empty(), "{:?}", state.intents);
    let record = state.history.iter().find(|h| h.reason == "Pushed").unwrap();
    assert_eq!(record.at, at(MONDAY), "recorded at the time of the push");
    assert!(
        record.message.contains(&format!("{OLD} -> {NEW}")),
        "{record:?}"
    );
}

/// Within `rollout.deployDelay` the deployed version waits to bake, and says so
/// plainly (not "deploying" with a finished rollout).
#[tokio::test]
async fn within_the_deploy_delay_the_wait_says_when_the_bake_starts() {
    use autobump::controller::reconcile;
    let w = World::new("").await;
    let text = format!(
        "{}  rollout: {{deployDelay: 10m}}\n",
        direct_policy_text(&w, "direct")
    );
    let (mut policies, diagnostics) = policy::load_str(std::path::Path::new("direct.yaml"), &text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let direct = policies.remove(0);
    let deps = w.direct_deps(&direct);
    let r = reconcile(&direct, &deps, GateVerdict::Clear, at(MONDAY))
        .await
        .unwrap();
    assert_eq!(
        waiting(&r),
        format!(
            "{OLD} is on main; its bake starts after rollout.deployDelay, at 2026-11-23T10:10:00Z; the next bump waits until it is known-good"
        ),
        "{r:?}"
    );
    let r = reconcile(
        &direct,
        &deps,
        GateVerdict::Clear,
        at("2026-11-23T10:10:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(kinds(&r)[0], "Promote", "{r:?}");
}

fn direct_policy_text(w: &World, name: &str) -> String {
    format!(
        "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: {name}}}\nspec:\n  images:\n    - prefix: {}/prow/\n      tags: {{dateSha: {{}}}}\n  source:\n    repo: file://{}\n    include: [\"config/**/*.yaml\"]\n  directPush: {{}}\n",
        w.registry.host(),
        w.fake.git_dir().display()
    )
}

/// `autobump run --once` in a directory, with `NOTIFY_URL` set; returns stdout.
async fn run_once(dir: &std::path::Path, notify_url: &str) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args(["run", "--once", "--policies", "policies"])
        .args(["--state", "state.json", "--cache-dir", "cache"])
        .current_dir(dir)
        .env_remove("GITHUB_TOKEN")
        .env("NOTIFY_URL", notify_url)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn run_once_through_the_binary_bumps_and_notifies_once_across_restarts() {
    let w = World::new("").await;
    let sink = support::http::WebhookSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/direct.yaml"),
        direct_policy_text(&w, "direct")
            + "  notify:\n    - webhook: {url: {env: NOTIFY_URL}, events: [opened, promoted]}\n",
    )
    .unwrap();
    let before = w.fake.branch_sha("main").unwrap();
    let stdout = run_once(dir.path(), &sink.url()).await;
    assert_eq!(stdout, "direct: Promote; PushDirect; RecordBump\n");
    assert_ne!(w.fake.branch_sha("main").unwrap(), before);
    let state = autobump::store::SqliteStore::open(&dir.path().join("state.json"))
        .unwrap()
        .load("direct")
        .unwrap();
    assert!(state.last_bump.is_some());

    // One message per subscribed event (Promoted, then the push as Opened), each with
    // its idempotency key; Deployed is not a notification.
    let events = |sink: &support::http::WebhookSink| -> Vec<(String, String)> {
        sink.received()
            .iter()
            .map(|r| {
                let body = r.json();
                (
                    body["event"].as_str().unwrap_or_default().to_owned(),
                    r.header("idempotency-key").unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let first = events(&sink);
    assert_eq!(
        first.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
        ["promoted", "opened"],
        "{first:?}"
    );
    assert!(
        first.iter().all(|(_, key)| key.starts_with("-/direct/")),
        "{first:?}"
    );

    // The next run promotes what was pushed (no gate: no bake): one new message, the
    // earlier ones not again.
    run_once(dir.path(), &sink.url()).await;
    let second = events(&sink);
    assert_eq!(second[..2], first[..], "{second:?}");
    assert_eq!(second.len(), 3, "{second:?}");
    assert_eq!(second[2].0, "promoted");
    // A restart with nothing new sends nothing.
    run_once(dir.path(), &sink.url()).await;
    assert_eq!(events(&sink), second, "no duplicates after a restart");
}

/// Git with its clones cached in `cache`, committing as autobump.
fn git_repo(cache: &std::path::Path) -> GitRepo {
    GitRepo::new(GitConfig::new(
        cache,
        Person {
            name: "autobump".into(),
            email: "autobump@example.com".into(),
        },
    ))
}

/// A standalone driver for the policy files under `policies`, with its state and git
/// cache in `dir`, no GitHub token and default registry settings.
fn standalone_driver(
    policies: &std::path::Path,
    dir: &std::path::Path,
) -> autobump::controller::standalone::Standalone {
    standalone_driver_within(
        policies,
        dir,
        autobump::controller::engine::DEFAULT_RECONCILE_TIMEOUT,
    )
}

/// [`standalone_driver`] whose reconciles each end within `deadline`.
fn standalone_driver_within(
    policies: &std::path::Path,
    dir: &std::path::Path,
    deadline: std::time::Duration,
) -> autobump::controller::standalone::Standalone {
    use autobump::controller::engine::{self, Engine};
    use autobump::controller::standalone::{self, Standalone};
    use autobump::forge::WebhookFeed;
    let feed = Arc::new(WebhookFeed::new(chrono::TimeDelta::minutes(10)));
    let engine = Engine::production(
        engine::Config {
            github_token: None,
            github_api: "http://127.0.0.1:9".into(),
            github_git_host: None,
            bot_login: None,
            ssh_key: None,
            github_app: None,
            gitlab: None,
        },
        Arc::new(SystemClock),
        RegistryClient::new(RegistryConfig::default(), Arc::new(SystemClock)).unwrap(),
        git_repo(&dir.join("cache")),
        Arc::clone(&feed),
    )
    .unwrap()
    .with_reconcile_timeout(deadline);
    Standalone::new(
        standalone::Config {
            policies: vec![policies.to_owned()],
            state: dir.join("state.json"),
        },
        engine,
        feed,
    )
}

#[tokio::test]
async fn an_invalid_policy_file_keeps_the_last_good_version_and_never_stops_the_others() {
    use autobump::controller::standalone::PolicyOutcome;
    use std::sync::atomic::AtomicBool;
    let w = World::new("").await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("a.yaml"), direct_policy_text(&w, "a")).unwrap();
    std::fs::write(
        policies.join("b.yaml"),
        direct_policy_text(&w, "b").replace("/prow/", "/other/"),
    )
    .unwrap();
    let mut driver = standalone_driver(&policies, dir.path());
    let stop = AtomicBool::new(false);
    let tick = driver.tick(&stop).await.unwrap();
    assert!(tick.ok(), "{tick:?}");
    assert_eq!(tick.outcomes.keys().collect::<Vec<_>>(), ["a", "b"]);

    // a.yaml breaks: a's last good version still runs, b is unaffected.
    std::fs::write(policies.join("a.yaml"), "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {name: a}\nspec: {images: []\n").unwrap();
    let tick = driver.tick(&stop).await.unwrap();
    assert_eq!(tick.diagnostics.len(), 1, "{tick:?}");
    assert!(tick.diagnostics[0].file.ends_with("a.yaml"));
    assert!(
        matches!(tick.outcomes["a"], PolicyOutcome::Done(_)),
        "{tick:?}"
    );
    assert!(
        matches!(tick.outcomes["b"], PolicyOutcome::Done(_)),
        "{tick:?}"
    );
    assert!(!tick.ok());

    // b.yaml is removed: b is gone; a is fixed and runs from the file again.
    std::fs::remove_file(policies.join("b.yaml")).unwrap();
    std::fs::write(policies.join("a.yaml"), direct_policy_text(&w, "a")).unwrap();
    let tick = driver.tick(&stop).await.unwrap();
    assert!(tick.ok(), "{tick:?}");
    assert_eq!(tick.outcomes.keys().collect::<Vec<_>>(), ["a"]);
}

/// The loop autobump exists for: a bump that makes alerts fire during its bake is
/// rolled back to the last known-good version within one reconcile, the policy is
/// held by the alert, the bad version is never proposed again, and a newer good version
/// goes out once a person lifts the hold.
#[tokio::test]
async fn firing_alerts_during_the_bake_roll_back_hold_and_remember_the_bad_version() {
    use autobump::controller::reconcile;
    let w = World::new("").await;
    let host = w.registry.host();
    let text = direct_policy_text(&w, "gated")
        + "  gate: {prometheus: http://127.0.0.1:9, alerts: '{team=\"prow\"}', bake: 30m}\n";
    let (mut policies, diagnostics) = policy::load_str(std::path::Path::new("gated.yaml"), &text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let gated = policies.remove(0);
    let deps = w.direct_deps(&gated);
    let clear = GateVerdict::Clear;
    let firing = GateVerdict::Firing(vec!["HookDown".into()]);
    let step = |now: &'static str, gate: &GateVerdict| {
        let gate = gate.clone();
        let (policy, deps) = (&gated, &deps);
        async move {
            reconcile(policy, deps, gate.clone(), at(now))
                .await
                .unwrap()
        }
    };

    // OLD is deployed and bakes: nothing new goes out meanwhile.
    let r = step("2026-11-23T10:00:00Z", &clear).await;
    assert!(waiting(&r).contains("is baking (30m left)"), "{r:?}");
    // Baked clean: promoted, and the bump to NEW goes out in the same reconcile.
    let r = step("2026-11-23T10:31:00Z", &clear).await;
    assert_eq!(kinds(&r), ["Promote", "PushDirect", "RecordBump"], "{r:?}");
    assert!(w.file_on("main", "config/prow/hook.yaml").contains(NEW));

    // NEW hurts: rolled back to OLD at once, held by the alert, NEW recorded as bad.
    let r = step("2026-11-23T10:35:00Z", &firing).await;
    assert_eq!(kinds(&r), ["Rollback"], "{r:?}");
    assert!(
        w.file_on("main", "config/prow/hook.yaml")
            .contains(&format!("{host}/prow/hook:{OLD}  # keep this comment"))
    );
    assert!(w.file_on("main", "config/prow/deck.yaml").contains(OLD));
    let state = w.store.load("gated").unwrap();
    let hold = state.hold.clone().unwrap();
    assert_eq!((hold.by.as_str(), hold.automatic), ("alert:HookDown", true));
    assert!(
        state
            .bad_pairs()
            .contains(&(format!("{host}/prow/hook"), NEW.to_owned()))
    );
    let repo = git2::Repository::open_bare(w.fake.git_dir()).unwrap();
    let message = repo
        .find_reference("refs/heads/main")
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .message()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with(&format!("Roll back gated to {OLD}\n")),
        "{message}"
    );
    assert!(
        message.ends_with(
            "Autobump-Rollback: alerts fired after v20261110-bbbbbbb was deployed: HookDown\n"
        ),
        "{message}"
    );
    // A second reconcile while it still fires does not roll back twice.
    let main_after = w.fake.branch_sha("main").unwrap();
    let r = step("2026-11-23T10:36:00Z", &firing).await;
    assert!(!kinds(&r).contains(&"Rollback"), "{r:?}");
    assert_eq!(w.fake.branch_sha("main").unwrap(), main_after);

    // Quiet again, and NEW is bad: nothing to bump at all.
    let r = step("2026-11-23T11:40:00Z", &clear).await;
    assert!(r.effects.is_empty(), "{r:?}");
    // NEWER appears: held, so it waits.
    for image in ["prow/hook", "prow/deck"] {
        w.registry.retag(image, OLD, NEWER).await;
    }
    let r = step("2026-11-23T11:45:00Z", &clear).await;
    assert!(waiting(&r).contains("held by alert:HookDown"), "{r:?}");
    // A person lifts the hold: NEWER goes out (NEW never again).
    w.store.update("gated", &mut |s| s.hold = None).unwrap();
    let r = step("2026-11-23T11:50:00Z", &clear).await;
    assert_eq!(kinds(&r), ["PushDirect", "RecordBump"], "{r:?}");
    let hook = w.file_on("main", "config/prow/hook.yaml");
    assert!(hook.contains(NEWER) && !hook.contains(NEW), "{hook}");
    let reasons: Vec<String> = w
        .store
        .load("gated")
        .unwrap()
        .history
        .iter()
        .map(|h| h.reason.to_string())
        .collect();
    assert!(reasons.contains(&"RolledBack".to_owned()), "{reasons:?}");
}

// One process's life, start to SIGTERM; splitting it would restart the process.
#[allow(clippy::too_many_lines)]
#[tokio::test]
async fn run_serves_webhooks_that_trigger_a_reconcile_and_exits_0_on_sigterm() {
    let w = World::new("").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let policy = direct_policy_text(&w, "direct") + "  schedule: {minInterval: 1s}\n";
    std::fs::write(dir.path().join("policies/direct.yaml"), policy).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args([
            "run",
            "--policies",
            "policies",
            "--state",
            "state.json",
            "--cache-dir",
            "cache",
        ])
        .args(["--interval", "1h", "--listen", &listen])
        .current_dir(dir.path())
        .env_remove("GITHUB_TOKEN")
        .env("AUTOBUMP_REGISTRY_WEBHOOK_TOKEN", "t0ken")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    w.wait_for_hook_tag(NEW, "the first tick bumps to NEW")
        .await;

    // A push to the registry, announced by its webhook, is picked up at once (the next
    // tick would be an hour away). First let the policy's 1 s minInterval pass.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    for image in ["prow/hook", "prow/deck"] {
        w.registry.retag(image, OLD, NEWER).await;
    }
    let client = support::http_client();
    let health = client
        .get(format!("http://{listen}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("http://{listen}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "ready after the first pass");
    let metrics = client
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        r#"autobump_reconciles_total{policy="direct",result="ok"} 1"#,
        "autobump_policy_files_invalid 0",
        "autobump_leader 1",
        r#"autobump_registry_requests_total{kind="tags"}"#,
        r#"autobump_seconds_since_last_bump{policy="direct"}"#,
    ] {
        assert!(metrics.contains(expected), "{expected} in\n{metrics}");
    }
    let body = serde_json::json!({"events": [{
        "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "repository": "prow/hook", "tag": NEWER,
                   "url": format!("http://{}/v2/prow/hook/manifests/{NEWER}", w.registry.host())}
    }]})
    .to_string();
    let refused = client
        .post(format!("http://{listen}/webhooks/registry"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the token is required");
    let accepted = client
        .post(format!("http://{listen}/webhooks/registry"))
        .header("Authorization", "Bearer t0ken")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    w.wait_for_hook_tag(NEWER, "the webhook-triggered reconcile bumps to NEWER")
        .await;

    // A policy file edited (here: broken) is noticed without waiting for the hourly
    // tick: the reload runs, counts the problem, and keeps the last good version.
    std::fs::write(dir.path().join("policies/broken.yaml"), "spec: [unclosed\n").unwrap();
    support::wait_until(
        "the broken policy file to be noticed",
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(200),
        async || {
            let text = client
                .get(format!("http://{listen}/metrics"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            if text.lines().any(|l| l == "autobump_policy_files_invalid 1") {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await;

    // SIGTERM: the reconcile in flight finishes, exit 0.
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("autobump did not stop within 30 s of SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

/// A rollback PR waiting for its checks stays as it is while people push to main:
/// pushing it again onto each new main would restart its checks, and on a busy main
/// it would never merge. One that conflicts with main is made again on it.
#[tokio::test]
async fn a_rollback_pr_waiting_for_its_checks_is_not_pushed_again_when_main_moves() {
    let w = World::new(
        "  gate: {prometheus: http://127.0.0.1:9, alerts: '{team=\"prow\"}', bake: 30m}\n  rollback: {pullRequest: true, requiredChecks: [unit]}\n",
    )
    .await;
    let host = w.registry.host();
    let firing = GateVerdict::Firing(vec!["HookDown".into()]);
    w.reconcile(MONDAY).await;
    w.reconcile("2026-11-23T10:31:00Z").await;
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    w.fake
        .add_check_run(&head, "unit", "completed", Some("success"));
    let r = w.reconcile("2026-11-23T10:35:00Z").await;
    assert_eq!(kinds(&r), ["Merge"], "{r:?}");

    // NEW hurts: the rollback PR opens and waits for its check.
    let r = w
        .reconcile_with("2026-11-23T10:40:00Z", firing.clone())
        .await;
    assert_eq!(kinds(&r)[0], "Rollback", "{r:?}");
    let first = w.fake.branch_sha("autobump-rollback-prow").unwrap();
    assert!(!w.fake.pull(2).merged);

    // People push to main twice (outside the rollback's lines): the branch stays.
    w.fake
        .commit("main", &[("README.md", Some("# infra\n"))], "Docs");
    w.reconcile_with("2026-11-23T10:41:00Z", firing.clone())
        .await;
    w.fake.commit(
        "main",
        &[(
            "config/prow/plugins.yaml",
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plugins}\ndata: {}\n"),
        )],
        "Add the plugins config",
    );
    let r = w
        .reconcile_with("2026-11-23T10:42:00Z", firing.clone())
        .await;
    assert_eq!(
        w.fake.branch_sha("autobump-rollback-prow").unwrap(),
        first,
        "not pushed again: {r:?}"
    );

    // A person edits the rollback's own line on main: it conflicts, and is made again.
    let edited = w
        .file_on("main", "config/prow/hook.yaml")
        .replace("# keep this comment", "# keep this comment, please");
    w.fake.commit(
        "main",
        &[("config/prow/hook.yaml", Some(&edited))],
        "Comment",
    );
    let r = w
        .reconcile_with("2026-11-23T10:43:00Z", firing.clone())
        .await;
    assert!(
        waiting(&r).contains("made again on the current main"),
        "{r:?}"
    );
    let second = w.fake.branch_sha("autobump-rollback-prow").unwrap();
    assert_ne!(second, first);

    // Its check passes: merged onto the moved main, keeping everyone's changes.
    w.fake
        .add_check_run(&second, "unit", "completed", Some("success"));
    let r = w.reconcile_with("2026-11-23T10:44:00Z", firing).await;
    assert!(kinds(&r).contains(&"Merge"), "{r:?}");
    assert!(w.fake.pull(2).merged);
    let hook = w.file_on("main", "config/prow/hook.yaml");
    assert!(
        hook.contains(&format!(
            "{host}/prow/hook:{OLD}  # keep this comment, please"
        )),
        "{hook}"
    );
    assert!(w.file_on("main", "README.md").contains("# infra"));
    assert!(
        w.file_on("main", "config/prow/plugins.yaml")
            .contains("ConfigMap")
    );
    w.fake.assert_responses_valid();
}

/// The README's first command, as CI runs it: the demo ends held and rolled back to
/// the good version, measures the rollback, and leaves no process behind.
#[tokio::test]
async fn the_demo_ends_held_and_rolled_back_and_leaves_nothing_running() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = tokio::process::Command::new("bash")
        .arg(root.join("scripts/demo"))
        .env("AUTOBUMP_BIN", env!("CARGO_BIN_EXE_autobump"))
        .env_remove("GITHUB_TOKEN")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), run)
        .await
        .expect("the demo must finish within three minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("rollback latency from the alert"),
        "{stdout}"
    );
    assert!(stdout.contains("autobump exited 0"), "{stdout}");
    let status = stdout
        .split("autobump status")
        .last()
        .unwrap_or_default()
        .to_owned();
    let row = status
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("no status row for web:\n{stdout}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[1..3],
        ["1.0.0", "1.0.0"],
        "current and known-good: {row}"
    );
    assert!(
        row.contains("by alert:WebErrors"),
        "held by the alert: {row}"
    );
    assert!(row.contains("1.1.0 -> 1.0.0"), "the rollback: {row}");
    // The second environment took 1.0.0 from web once it baked clean, never 1.1.0.
    let production = status
        .lines()
        .find(|l| l.starts_with("web-production "))
        .unwrap_or_else(|| panic!("no status row for web-production:\n{stdout}"));
    let cells: Vec<&str> = production.split_whitespace().collect();
    assert_eq!(cells[1], "1.0.0", "{production}");
    assert!(
        production.ends_with("from web: nothing waiting"),
        "{production}"
    );
    assert!(
        stdout.contains("production runs 1.0.0: 1.1.0 never reached it"),
        "{stdout}"
    );

    let work = stdout
        .lines()
        .find_map(|l| l.strip_prefix("(working in ")?.strip_suffix(')'))
        .expect("the demo names its working directory")
        .to_owned();
    assert!(!std::path::Path::new(&work).exists(), "{work} removed");
    let left = crate::support::process::processes_mentioning(&work);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// The README's first command prepares only what the demo needs: `scripts/setup
/// --for demo` never starts the kube-apiserver build (4-10 minutes on a fresh
/// machine), which the tests' setup (the default) does start.
#[test]
fn setup_for_the_demo_does_not_build_the_test_cluster() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    // A stand-in for ../shared/tools/kube-test-cluster whose build leaves a mark.
    let tools = dir.path().join("kube-test-cluster");
    std::fs::create_dir(&tools).unwrap();
    let mark = dir.path().join("build-ran");
    let build = tools.join("build");
    std::fs::write(
        &build,
        format!(
            "#!/bin/sh\ntouch '{}'\necho 'cached: stand-in'\n",
            mark.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&build).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&build, perms).unwrap();
    let setup = |args: &[&str]| {
        let out = std::process::Command::new(root.join("scripts/setup"))
            .args(args)
            .env("KUBE_TEST_CLUSTER_DIR", &tools)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "scripts/setup {args:?}:\n{text}");
        text
    };

    let demo = setup(&["--for", "demo"]);
    assert!(
        !mark.exists(),
        "the demo's setup started the cluster build:\n{demo}"
    );
    assert!(demo.contains("ready for the demo"), "{demo}");
    assert!(
        !demo.contains("kube-test-cluster") && !demo.contains("npm"),
        "the demo's setup touched test-only things:\n{demo}"
    );

    let tests = setup(&[]);
    assert!(
        mark.exists(),
        "the tests' setup must build the cluster:\n{tests}"
    );
    assert!(
        tests.contains("kube-test-cluster: cached: stand-in"),
        "{tests}"
    );
}

/// A digest-only reference (`repo@sha256:…`, as Knative's release manifests pin their
/// images: knative/serving's `config/core/deployments/controller.yaml` in a release)
/// with `pinDigest` moves through a real reconcile to the newest tag's digest in the
/// same form, and the commit says which tags the digests are.
#[tokio::test]
async fn a_digest_only_reference_moves_to_the_newest_tags_digest_in_a_reconcile() {
    use autobump::controller::reconcile;
    let w = World::new("").await;
    let host = w.registry.host();
    let mut digests = Vec::new();
    for (i, tag) in ["v1.15.0", "v1.15.1", "v1.15.2"].iter().enumerate() {
        let created = format!("2026-11-0{}T10:00:00Z", i + 1);
        digests.push(
            w.registry
                .push_image(
                    "knative/controller",
                    tag,
                    ManifestKind::OciManifest,
                    Some(&created),
                )
                .await,
        );
    }
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: controller, namespace: knative-serving}}\nspec:\n  template:\n    spec:\n      containers:\n        - name: controller\n          image: {host}/knative/controller@{old}\n",
        old = digests[1]
    );
    w.fake.commit(
        "main",
        &[("config/knative/controller.yaml", Some(manifest.as_str()))],
        "Add knative",
    );
    let text = format!(
        "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: knative}}\nspec:\n  images:\n    - prefix: {host}/knative/\n      tags: {{semver: {{}}}}\n      pinDigest: true\n  source:\n    repo: file://{}\n    include: [\"config/knative/*.yaml\"]\n  directPush: {{}}\n",
        w.fake.git_dir().display()
    );
    let (mut policies, diagnostics) = policy::load_str(std::path::Path::new("knative.yaml"), &text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let knative = policies.remove(0);
    let deps = w.direct_deps(&knative);
    let r = reconcile(&knative, &deps, GateVerdict::Clear, at(MONDAY))
        .await
        .unwrap();
    assert_eq!(kinds(&r), ["PushDirect", "RecordBump"], "{r:?}");
    let after = w.file_on("main", "config/knative/controller.yaml");
    assert_eq!(
        after,
        manifest.replace(&digests[1], &digests[2]),
        "only the digest changed, in the same form"
    );
    let message = w.main_commit_message();
    assert!(
        message.contains("v1.15.1") && message.contains("v1.15.2"),
        "the commit names the tags of both digests: {message}"
    );
    let state = w.store.load("knative").unwrap();
    let pushed = state.history.iter().find(|h| h.reason == "Pushed").unwrap();
    assert!(
        pushed.message.contains("v1.15.1@") && pushed.message.contains("v1.15.2@"),
        "{pushed:?}"
    );
}

/// A policy moved from pull requests to direct push may still carry a merge intent
/// from its pull-request days; with no forge to ask, it is left as it is and the
/// direct push goes on.
#[tokio::test]
async fn a_direct_push_policy_with_a_merge_intent_from_its_pull_request_days_still_runs() {
    use autobump::controller::reconcile;
    use autobump::policy::v1alpha1::{Intent, IntentKind, Reason};
    let w = World::new("").await;
    let text = direct_policy_text(&w, "direct");
    let (mut policies, diagnostics) = policy::load_str(std::path::Path::new("direct.yaml"), &text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let direct = policies.remove(0);
    w.store
        .update("direct", &mut |s| {
            s.intend(Intent {
                pull_request: Some(7),
                ..Intent::new(
                    IntentKind::Merge,
                    Some(Reason::Merged),
                    "PR #7 merged at abc".into(),
                    at("2026-11-20T10:00:00Z"),
                )
            });
        })
        .unwrap();
    let deps = w.direct_deps(&direct);
    let r = reconcile(&direct, &deps, GateVerdict::Clear, at(MONDAY))
        .await
        .unwrap();
    // (Without a gate the deployed version is promoted at once, then the bump pushed.)
    assert_eq!(kinds(&r), ["Promote", "PushDirect", "RecordBump"], "{r:?}");
    assert!(
        w.store
            .load("direct")
            .unwrap()
            .intent(IntentKind::Merge)
            .is_some()
    );
}
