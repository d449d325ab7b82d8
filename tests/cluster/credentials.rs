//! Per-policy credentials on the real kube-apiserver: a policy's registry login
//! (`kubernetes.io/dockerconfigjson`) and git login (`kubernetes.io/basic-auth`) come
//! from Secrets in its own namespace and a rotated Secret applies at the next
//! reconcile, without a restart; a policy in another namespace cannot use them.
//! `autobump run --kubernetes` runs as a process with no credentials of its own.

use autobump::policy::{Autobump, AutobumpSpec};
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::incluster::{NS, cluster, eventually};
use super::support::git::{GitHttpServer, git};
use super::support::secret_world::team_registry_and_repo;

const PULL_PASSWORD: &str = "team-a-pull-Rk2";
const GIT_PASSWORD: &str = "team-a-deploy-Wq9";

/// A `kubernetes.io/dockerconfigjson` Secret logging in to `host` as `user`.
fn pull_secret(host: &str, user: &str, password: &str) -> Secret {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = json!({"auths": {host: {"auth": auth}}}).to_string();
    serde_json::from_value(json!({
        "metadata": {"name": "pull"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config},
    }))
    .unwrap()
}

/// The Ready condition's message of `name` (empty before the first reconcile).
async fn ready(objects: &Api<Autobump>, name: &str) -> String {
    objects
        .get(name)
        .await
        .ok()
        .and_then(|o| o.status)
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message)
        .unwrap_or_default()
}

// One controller's life across a Secret rotation; splitting it would restart it.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn a_policy_uses_its_own_namespaces_secrets_and_follows_their_rotation() {
    let (cluster, client) = cluster().await;
    for ns in ["team-a", "team-b"] {
        cluster.must(&["create", "namespace", ns]);
    }
    let root = tempfile::tempdir().unwrap();
    let (registry, bare) = team_registry_and_repo("team-a", PULL_PASSWORD, root.path()).await;
    let host = registry.host();
    let server = GitHttpServer::start(root.path(), "deployer", GIT_PASSWORD);

    // team-a's Secrets: a pull secret with a password the registry no longer takes,
    // and the git login.
    let team_a: Api<Secret> = Api::namespaced(client.clone(), "team-a");
    team_a
        .create(
            &PostParams::default(),
            &pull_secret(&host, "team-a", "rotated-away-0"),
        )
        .await
        .unwrap();
    let deploy: Secret = serde_json::from_value(json!({
        "metadata": {"name": "deploy"},
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": "deployer", "password": GIT_PASSWORD},
    }))
    .unwrap();
    team_a
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();

    let spec: AutobumpSpec = serde_json::from_value(json!({
        "images": [{
            "name": format!("{host}/team/app"),
            "tags": {"semver": {}},
            "credentials": {"secret": "pull"},
        }],
        "source": {"repo": server.url("infra.git"), "credentials": {"secret": "deploy"}},
        "directPush": {},
    }))
    .unwrap();
    let in_a: Api<Autobump> = Api::namespaced(client.clone(), "team-a");
    let in_b: Api<Autobump> = Api::namespaced(client.clone(), "team-b");
    in_a.create(&PostParams::default(), &Autobump::new("app", spec.clone()))
        .await
        .unwrap();
    // The same spec in team-b: its `pull` and `deploy` would be team-b's, which has none.
    in_b.create(&PostParams::default(), &Autobump::new("app", spec))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("autobump.log");
    let _child = tokio::process::Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args(["--log-format", "json", "run", "--kubernetes"])
        .args(["--lease-namespace", NS, "--identity", "replica-1"])
        .args(["--interval", "1s", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", dir.path())
        .env_remove("GITHUB_TOKEN")
        .env_remove("DOCKER_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // The stale password: the registry refuses it; git works with the Secret's login.
    eventually("team-a's registry login refused", async || {
        let message = ready(&in_a, "app").await;
        if message.contains("not authorized") && message.contains(&host) {
            Ok(())
        } else {
            Err(format!("{message:?}\n{}", log()))
        }
    })
    .await;
    assert!(
        server.only_accepted_logins(),
        "git got team-a's login: {:?}",
        server.requests()
    );
    assert!(
        git(&bare, &["show", "main:deploy/app.yaml"]).contains("1.0.0"),
        "nothing deployed with a refused login"
    );

    // Rotation: the Secret gets the registry's password; the running controller bumps.
    team_a
        .patch(
            "pull",
            &PatchParams::default(),
            &Patch::Merge(pull_secret(&host, "team-a", PULL_PASSWORD)),
        )
        .await
        .unwrap();
    eventually("1.1.0 pushed with the rotated Secret", async || {
        let deployed = git(&bare, &["show", "main:deploy/app.yaml"]);
        if deployed.contains("1.1.0") {
            Ok(())
        } else {
            Err(format!(
                "{deployed}; Ready: {:?}",
                ready(&in_a, "app").await
            ))
        }
    })
    .await;

    // team-b's copy never reaches team-a's Secrets.
    let message = ready(&in_b, "app").await;
    assert!(
        message.contains("Secret team-b/pull not found"),
        "{message}\n{}",
        log()
    );
    // No value of those Secrets in the log, the objects' status or the Events.
    let mut outputs = vec![("the log".to_owned(), log())];
    for what in ["autobumps", "events", "events.events.k8s.io"] {
        let (ok, text) = cluster.kubectl(&["get", what, "-A", "-o", "json"]);
        assert!(ok, "{text}");
        outputs.push((format!("kubectl get {what}"), text));
    }
    for (what, text) in &outputs {
        for secret in [PULL_PASSWORD, GIT_PASSWORD, "rotated-away-0"] {
            assert!(!text.contains(secret), "{what} shows {secret}");
        }
    }
}
