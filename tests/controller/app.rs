//! A GitHub App running the pull-request flow through `autobump run`'s engine: the
//! installation found for the repository, its tokens used for the REST calls and for
//! git over HTTP (the git server accepts exactly the tokens the GitHub fake minted and
//! has not expired), and a run that goes on past a token's hour.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use autobump::clock::{Clock, ManualClock, SystemClock};
use autobump::controller::engine::{self, Engine};
use autobump::controller::standalone::{self, Standalone};
use autobump::forge::{GitHubApp, WebhookFeed};
use autobump::registry::{RegistryClient, RegistryConfig};

use super::support::github_fake::GithubFake;
use super::support::registry::{ManifestKind, Registry};
use super::support::secret_world::{BOT, fake_with_app, serve_to_app_tokens};
use super::{NEW, NEWER, OLD};

#[tokio::test]
async fn a_github_app_opens_and_updates_its_pr_past_the_hour_of_its_tokens() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let fake = fake_with_app(clock.clone()).await;
    let registry = Registry::start().await;
    let host = registry.host();
    registry
        .push_image("prow/hook", OLD, ManifestKind::OciManifest, None)
        .await;
    registry.retag("prow/hook", OLD, NEW).await;
    fake.commit(
        "main",
        &[(
            "config/hook.yaml",
            Some(&format!("image: {host}/prow/hook:{OLD}\n")),
        )],
        "Add hook",
    );
    let (_root, git, git_host) = serve_to_app_tokens(&fake);

    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("prow.yaml"),
        format!(
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: prow}}\nspec:\n  images:\n    - prefix: {host}/prow/\n      tags: {{dateSha: {{}}}}\n  source:\n    repo: {}\n    include: [\"config/**/*.yaml\"]\n  pullRequest: {{botLogin: \"{BOT}\"}}\n",
            git.url("example/infra.git")
        ),
    )
    .unwrap();
    let mut driver = app_driver(&fake, &clock, policies, dir.path(), git_host);
    let stop = AtomicBool::new(false);
    let branch_file = || {
        super::support::git::git(
            fake.git_dir(),
            &["show", "refs/heads/autobump-prow:config/hook.yaml"],
        )
    };

    let tick = driver.tick(&stop).await.unwrap();
    assert!(tick.ok(), "{tick:?}");
    let pulls = fake.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    assert_eq!(pulls[0].author, BOT, "the PR is the App's");
    assert!(branch_file().contains(NEW), "{}", branch_file());
    assert_eq!(fake.requests("apps/get-repo-installation"), 1);
    assert_eq!(fake.tokens_minted(), 1, "one token for REST and git");
    assert!(
        git.only_accepted_logins(),
        "git got the installation token: {:?}",
        git.requests()
    );

    // An hour and a minute later the first token is dead; a newer version is out.
    clock.advance(chrono::Duration::minutes(61));
    registry.retag("prow/hook", OLD, NEWER).await;
    git.clear_requests();
    let tick = driver.tick(&stop).await.unwrap();
    assert!(tick.ok(), "{tick:?}");
    assert!(branch_file().contains(NEWER), "{}", branch_file());
    assert_eq!(fake.pulls().len(), 1, "the same PR, updated");
    assert_eq!(fake.tokens_minted(), 2, "a fresh token, minted before use");
    assert_eq!(fake.requests("apps/get-repo-installation"), 1);
    assert!(
        git.only_accepted_logins(),
        "git got the fresh token: {:?}",
        git.requests()
    );
    assert!(
        fake.log().iter().all(|r| r.status != 401),
        "no request carried a dead token: {:?}",
        fake.log()
    );
    fake.assert_responses_valid();
}

/// `autobump run`'s engine and standalone driver with the GitHub App configured (and
/// a token that must not be used), on `clock`.
fn app_driver(
    fake: &GithubFake,
    clock: &Arc<ManualClock>,
    policies: std::path::PathBuf,
    dir: &std::path::Path,
    git_host: String,
) -> Standalone {
    let feed = Arc::new(WebhookFeed::new(chrono::TimeDelta::minutes(10)));
    let engine = Engine::production(
        engine::Config {
            // The App wins: this token is known neither to the fake nor to git.
            github_token: Some("ghp_not_used_when_an_app_is_configured".into()),
            github_api: fake.api_url(),
            github_git_host: Some(git_host),
            bot_login: None,
            ssh_key: None,
            github_app: Some(GitHubApp {
                app_id: 4242,
                private_key_pem: include_str!("../testdata/forge/app-key.pem").into(),
            }),
            gitlab: None,
        },
        clock.clone() as Arc<dyn Clock>,
        RegistryClient::new(RegistryConfig::default(), clock.clone()).unwrap(),
        super::git_repo(&dir.join("cache")),
        Arc::clone(&feed),
    )
    .unwrap();
    Standalone::new(
        standalone::Config {
            policies: vec![policies],
            state: dir.join("state.db"),
        },
        engine,
        feed,
    )
}

/// `--github-app-id` needs a key, and a key that cannot be read or is not a PEM
/// private key stops `run` before anything acts, naming the file.
#[tokio::test]
async fn an_app_without_a_usable_key_stops_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("not-a-key.pem"), "ghp_0123456789\n").unwrap();
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let dir = dir.path().to_owned();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_autobump"))
                .args([
                    "run",
                    "--once",
                    "--state",
                    "state.db",
                    "--cache-dir",
                    "cache",
                ])
                .args(&args)
                .current_dir(dir)
                .env_remove("GITHUB_TOKEN")
                .env_remove("GITHUB_APP_ID")
                .env_remove("AUTOBUMP_GITHUB_APP_KEY")
                .output()
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, stderr) = run(&["--github-app-id", "4242"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--github-app-key"), "{stderr}");
    let (code, stderr) = run(&["--github-app-id", "4242", "--github-app-key", "missing.pem"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("reading the GitHub App key missing.pem"),
        "{stderr}"
    );
    let (code, stderr) = run(&[
        "--github-app-id",
        "4242",
        "--github-app-key",
        "not-a-key.pem",
    ])
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("not-a-key.pem: not a PEM private key"),
        "{stderr}"
    );
    assert!(!stderr.contains("ghp_0123456789"), "{stderr}");
    assert!(!dir.path().join("state.db").exists(), "nothing acted");
}
