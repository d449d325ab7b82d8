//! Secrets never leave through what autobump writes for people: a whole `autobump
//! run` (debug JSON logs), the state it keeps (`status`, `history`), its errors and
//! its notifications are searched for every secret it was given or obtained: a
//! registry password from a credential helper, a refused one, the GitHub App's
//! private key and the installation tokens minted for it, a `GITHUB_TOKEN` the App
//! overrides, and a notification URL.

use std::sync::Arc;

use autobump::clock::SystemClock;
use serde_json::json;

use super::app::{BOT, fake_with_app, serve_to_app_tokens};
use super::support::cred_helper::{Behaviour, FakeHelper};
use super::support::http::WebhookSink;
use super::support::registry::{ManifestKind, Registry};
use super::{NEW, OLD};

const HELPER_PASSWORD: &str = "helper-pw-7Qx2Lm";
const REFUSED_PASSWORD: &str = "stale-pw-9Kd4Rt";
const IGNORED_TOKEN: &str = "ghp_ignoredToken5Hn1";
const NOTIFY_PATH: &str = "notify-secret-3Vb8Wq";

#[tokio::test]
#[allow(clippy::too_many_lines)] // one run, then every output searched
async fn no_secret_reaches_logs_state_errors_or_notifications() {
    let fake = fake_with_app(Arc::new(SystemClock)).await;
    let (_root, git, git_host) = serve_to_app_tokens(&fake);
    // Two registries behind basic auth, each login from a credential helper: one
    // helper hands out the right password, the other one the registry refuses.
    let good = Registry::start_with_htpasswd("robot", HELPER_PASSWORD).await;
    let refusing = Registry::start_with_htpasswd("robot", "the-real-one-0Zp").await;
    good.push_image("prow/hook", OLD, ManifestKind::OciManifest, None)
        .await;
    good.retag("prow/hook", OLD, NEW).await;
    refusing
        .push_image("team/api", OLD, ManifestKind::OciManifest, None)
        .await;
    let vault = FakeHelper::new(
        "vault",
        &Behaviour::Login {
            user: "robot".into(),
            secret: HELPER_PASSWORD.into(),
        },
    );
    let stale = FakeHelper::new(
        "stale",
        &Behaviour::Login {
            user: "robot".into(),
            secret: REFUSED_PASSWORD.into(),
        },
    );
    let path = std::env::join_paths(
        [vault.dir().to_owned(), stale.dir().to_owned()]
            .into_iter()
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )
    .unwrap();
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
    let sink = WebhookSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    let repo = git.url("example/infra.git");
    let policy = |name: &str, prefix: &str, include: &str, flow: &str| {
        format!(
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: {name}}}\nspec:\n  images:\n    - prefix: {prefix}\n      tags: {{dateSha: {{}}}}\n  source:\n    repo: {repo}\n    include: [\"{include}\"]\n  {flow}\n  notify:\n    - webhook: {{url: {{env: NOTIFY_URL}}}}\n"
        )
    };
    std::fs::write(
        dir.path().join("policies/prow.yaml"),
        policy(
            "prow",
            &format!("{good_host}/prow/"),
            "config/hook.yaml",
            &format!("pullRequest: {{botLogin: \"{BOT}\"}}"),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policies/api.yaml"),
        policy(
            "api",
            &format!("{refusing_host}/team/"),
            "config/api.yaml",
            "pullRequest: {botLogin: \"autobump[bot]\", branch: autobump-api}",
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("docker")).unwrap();
    std::fs::write(
        dir.path().join("docker/config.json"),
        json!({"auths": {}, "credHelpers": {good_host.clone(): "vault", refusing_host.clone(): "stale"}})
            .to_string(),
    )
    .unwrap();
    let key = include_str!("../testdata/forge/app-key.pem");
    std::fs::write(dir.path().join("app.pem"), key).unwrap();

    let autobump = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_autobump"));
        command
            .args(args)
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("AUTOBUMP_LOG", "debug")
            .env("GITHUB_TOKEN", IGNORED_TOKEN)
            .env("NOTIFY_URL", format!("{}/{NOTIFY_PATH}", sink.url()))
            .env_remove("GITHUB_APP_ID")
            .env_remove("AUTOBUMP_GITHUB_APP_KEY");
        async move {
            let out = command.output().await.unwrap();
            (
                out.status.code(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        }
    };
    let (code, run_output) = autobump(&[
        "run",
        "--once",
        "--log-format",
        "json",
        "--policies",
        "policies",
        "--state",
        "state.db",
        "--cache-dir",
        "cache",
        "--docker-config",
        "docker/config.json",
        "--github-api",
        &fake.api_url(),
        "--github-git-host",
        &git_host,
        "--github-app-id",
        "4242",
        "--github-app-key",
        "app.pem",
    ])
    .await;
    // The run did what it could: prow's PR is open as the App, api's registry
    // refused the helper's login, and both are in the log.
    assert!(code.is_some(), "{run_output}");
    let pulls = fake.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:?}\n{run_output}");
    assert_eq!(pulls[0].author, BOT);
    assert!(fake.tokens_minted() >= 1);
    assert!(
        run_output.contains("not authorized") && run_output.contains(&refusing_host),
        "{run_output}"
    );
    assert!(
        run_output.contains("with the login from docker-credential-stale"),
        "{run_output}"
    );
    sink.wait_for(
        "the opened notification",
        std::time::Duration::from_secs(10),
        |r| String::from_utf8_lossy(&r.body).contains("opened"),
    )
    .await;

    // Every secret was in use (so its absence below means something).
    assert!(sink.received().iter().all(|r| r.path.contains(NOTIFY_PATH)));
    assert_eq!((vault.calls(), stale.calls()), (1, 1));
    assert!(git.requests().iter().any(|r| r.credentials == Some(true)));
    assert!(fake.app_jwts_accepted() >= 1);

    let mut outputs = vec![("run", run_output)];
    for args in [
        &[
            "status",
            "--state",
            "state.db",
            "--policies",
            "policies",
            "--output",
            "json",
        ][..],
        &["history", "prow", "--state", "state.db", "--output", "json"],
        &["history", "api", "--state", "state.db", "--output", "json"],
    ] {
        let (_, text) = autobump(args).await;
        outputs.push((args[0], text));
    }
    for request in sink.received() {
        let headers = request
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}"))
            .collect::<Vec<_>>()
            .join("\n");
        outputs.push((
            "notification",
            format!("{headers}\n{}", String::from_utf8_lossy(&request.body)),
        ));
    }
    let key_body = key
        .lines()
        .find(|line| !line.starts_with("-----") && line.len() > 40)
        .unwrap();
    let secrets = [
        HELPER_PASSWORD,
        REFUSED_PASSWORD,
        IGNORED_TOKEN,
        NOTIFY_PATH,
        "ghs_fake",
        key_body,
    ];
    for (what, text) in &outputs {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{what} shows the secret {secret:?}:\n{text}"
            );
        }
    }
}
