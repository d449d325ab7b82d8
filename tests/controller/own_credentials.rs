//! Per-policy credentials standalone: a policy's `credentials: {file: ...}` give it a
//! registry login (a Docker config.json) and a git token of its own where the process
//! has none, a rewritten file applies at the next tick, and a policy naming a Secret
//! is told that needs cluster mode.

use std::sync::atomic::AtomicBool;

use autobump::controller::standalone::PolicyOutcome;
use serde_json::json;

use super::support::git::{GitHttpServer, git};
use super::support::secret_world::team_registry_and_repo;

const TOKEN: &str = "team-token-Hq7";

#[tokio::test]
async fn a_policys_own_files_are_its_logins_and_a_rewrite_applies_at_the_next_tick() {
    let root = tempfile::tempdir().unwrap();
    let (registry, bare) = team_registry_and_repo("team", "pull-pw-Zr4", root.path()).await;
    let host = registry.host();
    let server = GitHttpServer::start(root.path(), "x-access-token", TOKEN);

    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let docker = secrets.join("config.json");
    let login = |password: &str| {
        json!({"auths": {host.clone(): {"username": "team", "password": password}}}).to_string()
    };
    std::fs::write(&docker, login("an-old-password")).unwrap();
    std::fs::write(secrets.join("token"), format!("{TOKEN}\n")).unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let policy = |name: &str, image_credentials: &str, source_credentials: &str| {
        format!(
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: {name}}}\nspec:\n  images:\n    - name: {host}/team/app\n      tags: {{semver: {{}}}}\n      credentials: {image_credentials}\n  source:\n    repo: {}\n    credentials: {source_credentials}\n  directPush: {{}}\n",
            server.url("infra.git")
        )
    };
    std::fs::write(
        policies.join("app.yaml"),
        policy(
            "app",
            &format!("{{file: {}}}", docker.display()),
            &format!("{{file: {}}}", secrets.join("token").display()),
        ),
    )
    .unwrap();
    // Another image, so the two policies do not overlap.
    std::fs::write(
        policies.join("clustered.yaml"),
        policy("clustered", "{secret: pull}", "{secret: deploy}").replace("team/app", "team/other"),
    )
    .unwrap();
    let mut driver = super::standalone_driver(&policies, dir.path());
    let stop = AtomicBool::new(false);

    // The old password: the registry refuses it (a registry problem, nothing pushed);
    // git is reached with the policy's token.
    let tick = driver.tick(&stop).await.unwrap();
    match &tick.outcomes["app"] {
        PolicyOutcome::Done(report) => assert!(
            report
                .registry_problems
                .iter()
                .any(|p| p.contains("not authorized")),
            "{report:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(server.only_accepted_logins(), "{:?}", server.requests());
    match tick
        .outcomes
        .get("clustered")
        .unwrap_or_else(|| panic!("{tick:?}"))
    {
        PolicyOutcome::Failed(e) => assert!(
            e.to_string()
                .contains("spec.images[0].credentials: `secret` needs cluster mode"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }

    // The file is rewritten with the right password: the next tick bumps.
    std::fs::write(&docker, login("pull-pw-Zr4")).unwrap();
    let tick = driver.tick(&stop).await.unwrap();
    assert!(
        matches!(tick.outcomes["app"], PolicyOutcome::Done(_)),
        "{tick:?}"
    );
    assert!(
        git(&bare, &["show", "main:deploy/app.yaml"]).contains("1.1.0"),
        "{tick:?}"
    );
}
