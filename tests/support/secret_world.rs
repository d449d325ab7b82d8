//! A world full of secrets for the tests that search autobump's outputs for them: a
//! GitHub App (the fake knows its key; its installation tokens are the only logins
//! the git server over the fake's repository accepts), two registries behind basic
//! auth whose logins come from credential helpers (one right, one the registry
//! refuses), a `GITHUB_TOKEN` the App overrides and a notification URL with a secret
//! path. Two policies: `prow` opens a PR as the App, `api` fails on its registry.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use autobump::clock::{Clock, SystemClock};
use serde_json::{Value, json};

use super::cred_helper::{Behaviour, FakeHelper};
use super::git::GitHttpServer;
use super::github_fake::{FakeApp, FakeOptions, GithubFake};
use super::http::WebhookSink;
use super::registry::{ManifestKind, Registry};

/// The App's bot login.
pub const BOT: &str = "autobump[bot]";
const HELPER_PASSWORD: &str = "helper-pw-7Qx2Lm";
const REFUSED_PASSWORD: &str = "stale-pw-9Kd4Rt";
const IGNORED_TOKEN: &str = "ghp_ignoredToken5Hn1";
const NOTIFY_PATH: &str = "notify-secret-3Vb8Wq";
const APP_KEY: &str = include_str!("../testdata/forge/app-key.pem");
const OLD: &str = "v20261101-aaaaaaa";
const NEW: &str = "v20261110-bbbbbbb";

/// A team's registry behind basic auth (`user`, `password`) holding `team/app`
/// 1.0.0 and 1.1.0, and the bare repository `root/infra.git` deploying 1.0.0 from
/// it: what the per-policy credential tests bump.
pub async fn team_registry_and_repo(
    user: &str,
    password: &str,
    root: &Path,
) -> (Registry, PathBuf) {
    let registry = Registry::start_with_htpasswd(user, password).await;
    let host = registry.host();
    registry
        .push_image("team/app", "1.0.0", ManifestKind::OciManifest, None)
        .await;
    registry.retag("team/app", "1.0.0", "1.1.0").await;
    let bare = super::git::bare_repo(
        root,
        "infra.git",
        &[(
            "deploy/app.yaml",
            &format!("image: {host}/team/app:1.0.0\n"),
        )],
    );
    (registry, bare)
}

/// A GitHub fake (on `clock`) that knows the App 4242 (key in tests/testdata/forge),
/// installed on its repository as installation 91, tokens living an hour.
pub async fn fake_with_app(clock: Arc<dyn Clock>) -> GithubFake {
    let fake = GithubFake::start_with(FakeOptions {
        clock,
        ..FakeOptions::default()
    })
    .await;
    fake.enable_app(FakeApp {
        app_id: 4242,
        public_key_pem: include_str!("../testdata/forge/app-key.pub.pem").into(),
        installation_id: 91,
        bot_login: BOT.into(),
        token_ttl: chrono::Duration::hours(1),
    });
    fake
}

/// The fake's repository served over HTTP as `example/infra.git`, to the fake's live
/// App tokens only; the server, its root (keep it) and its `HOST:PORT`.
pub fn serve_to_app_tokens(fake: &GithubFake) -> (tempfile::TempDir, GitHttpServer, String) {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("example")).unwrap();
    std::os::unix::fs::symlink(fake.git_dir(), root.path().join("example/infra.git")).unwrap();
    let live = fake.token_checker();
    let git = GitHttpServer::start_with_check(root.path(), "x-access-token", move |user, token| {
        user == "x-access-token" && live(token).as_deref() == Some(BOT)
    });
    let git_host = git
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    (root, git, git_host)
}

pub struct SecretWorld {
    pub fake: GithubFake,
    pub git: GitHttpServer,
    git_host: String,
    _git_root: tempfile::TempDir,
    pub refusing_host: String,
    good_host: String,
    _registries: (Registry, Registry),
    vault: FakeHelper,
    stale: FakeHelper,
    pub sink: WebhookSink,
    /// Where `autobump` runs: `docker/config.json`, `app.pem`.
    pub dir: tempfile::TempDir,
}

impl SecretWorld {
    pub async fn start() -> Self {
        let fake = fake_with_app(Arc::new(SystemClock)).await;
        let (git_root, git, git_host) = serve_to_app_tokens(&fake);
        let good = Registry::start_with_htpasswd("robot", HELPER_PASSWORD).await;
        let refusing = Registry::start_with_htpasswd("robot", "the-real-one-0Zp").await;
        good.push_image("prow/hook", OLD, ManifestKind::OciManifest, None)
            .await;
        good.retag("prow/hook", OLD, NEW).await;
        refusing
            .push_image("team/api", OLD, ManifestKind::OciManifest, None)
            .await;
        let login = |secret: &str| Behaviour::Login {
            user: "robot".into(),
            secret: secret.into(),
        };
        let vault = FakeHelper::new("vault", &login(HELPER_PASSWORD));
        let stale = FakeHelper::new("stale", &login(REFUSED_PASSWORD));
        let (good_host, refusing_host) = (good.host(), refusing.host());
        fake.commit(
            "main",
            &[
                (
                    "config/hook.yaml",
                    Some(&format!("image: {good_host}/prow/hook:{OLD}\n")),
                ),
                (
                    "config/api.yaml",
                    Some(&format!("image: {refusing_host}/team/api:{OLD}\n")),
                ),
            ],
            "Add hook and api",
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docker")).unwrap();
        std::fs::write(
            dir.path().join("docker/config.json"),
            json!({"auths": {}, "credHelpers": {
                good_host.clone(): "vault",
                refusing_host.clone(): "stale",
            }})
            .to_string(),
        )
        .unwrap();
        std::fs::write(dir.path().join("app.pem"), APP_KEY).unwrap();
        Self {
            fake,
            git,
            git_host,
            _git_root: git_root,
            refusing_host,
            good_host,
            _registries: (good, refusing),
            vault,
            stale,
            sink: WebhookSink::start().await,
            dir,
        }
    }

    /// The specs of the two policies (`prow`, `api`), as JSON.
    #[must_use]
    pub fn specs(&self) -> Vec<(&'static str, Value)> {
        let repo = self.git.url("example/infra.git");
        let spec = |prefix: String, include: &str, branch: &str| {
            json!({
                "images": [{"prefix": prefix, "tags": {"dateSha": {}}}],
                "source": {"repo": repo, "include": [include]},
                // No botLogin: `run` takes the App's bot (GET /app).
                "pullRequest": {"branch": branch},
                "notify": [{"webhook": {"url": {"env": "NOTIFY_URL"}}}],
            })
        };
        vec![
            (
                "prow",
                spec(
                    format!("{}/prow/", self.good_host),
                    "config/hook.yaml",
                    "autobump-prow",
                ),
            ),
            (
                "api",
                spec(
                    format!("{}/team/", self.refusing_host),
                    "config/api.yaml",
                    "autobump-api",
                ),
            ),
        ]
    }

    /// Writes the policies into `dir/policies` (JSON is YAML).
    pub fn write_policies(&self) -> PathBuf {
        let policies = self.dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        for (name, spec) in self.specs() {
            let doc = json!({
                "apiVersion": "autobump.dev/v1alpha1",
                "kind": "Autobump",
                "metadata": {"name": name},
                "spec": spec,
            });
            std::fs::write(policies.join(format!("{name}.yaml")), doc.to_string()).unwrap();
        }
        policies
    }

    /// `autobump ARGS` in `dir`, with the helpers on `PATH`, debug logs, the ignored
    /// `GITHUB_TOKEN` and the notification URL in the environment.
    #[must_use]
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_autobump"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("PATH", self.path())
            .env("AUTOBUMP_LOG", "debug")
            .env("GITHUB_TOKEN", IGNORED_TOKEN)
            .env("NOTIFY_URL", format!("{}/{NOTIFY_PATH}", self.sink.url()))
            .env_remove("GITHUB_APP_ID")
            .env_remove("AUTOBUMP_GITHUB_APP_KEY");
        command
    }

    /// The flags of `run` that reach this world's registries and GitHub.
    #[must_use]
    pub fn run_flags(&self) -> Vec<String> {
        [
            "--log-format",
            "json",
            "--docker-config",
            "docker/config.json",
            "--github-api",
            &self.fake.api_url(),
            "--github-git-host",
            &self.git_host,
            "--github-app-id",
            "4242",
            "--github-app-key",
            "app.pem",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn path(&self) -> OsString {
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let dirs: Vec<PathBuf> = [self.vault.dir(), self.stale.dir()]
            .into_iter()
            .map(Path::to_path_buf)
            .chain(std::env::split_paths(&inherited))
            .collect();
        std::env::join_paths(dirs).unwrap()
    }

    /// Checks that every secret was in use: `prow`'s PR is open as the App (git and
    /// REST with its tokens), both helpers ran, the registry refused `api`'s login
    /// naming its helper (in `log`), and notifications went to the secret URL.
    pub async fn assert_secrets_in_use(&self, log: &str) {
        let pulls = self.fake.pulls();
        assert!(pulls.iter().any(|p| p.author == BOT), "{pulls:?}\n{log}");
        assert!(self.git.only_accepted_logins(), "{:?}", self.git.requests());
        assert!(self.fake.app_jwts_accepted() >= 1);
        assert!(self.vault.calls() >= 1 && self.stale.calls() >= 1);
        assert!(
            log.contains("not authorized")
                && log.contains(&self.refusing_host)
                && log.contains("with the login from docker-credential-stale"),
            "{log}"
        );
        self.sink
            .wait_for(
                "the opened notification",
                std::time::Duration::from_secs(30),
                |r| String::from_utf8_lossy(&r.body).contains("opened"),
            )
            .await;
        assert!(
            self.sink
                .received()
                .iter()
                .all(|r| r.path.contains(NOTIFY_PATH))
        );
    }

    /// Every notification received, headers and body, as text.
    #[must_use]
    pub fn notifications(&self) -> Vec<String> {
        self.sink
            .received()
            .iter()
            .map(|request| {
                let headers = request
                    .headers
                    .iter()
                    .map(|(name, value)| format!("{name}: {value}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                format!("{headers}\n{}", String::from_utf8_lossy(&request.body))
            })
            .collect()
    }

    /// Fails naming the output and the secret when any output shows one.
    pub fn assert_no_secret_in(outputs: &[(String, String)]) {
        let key_body = APP_KEY
            .lines()
            .find(|line| !line.starts_with("-----") && line.len() > 40)
            .unwrap();
        let secrets = [
            HELPER_PASSWORD,
            REFUSED_PASSWORD,
            IGNORED_TOKEN,
            NOTIFY_PATH,
            // Every installation token the fake mints.
            "ghs_fake",
            key_body,
        ];
        assert!(!outputs.is_empty());
        for (what, text) in outputs {
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "{what} shows the secret {secret:?}:\n{text}"
                );
            }
        }
    }
}
