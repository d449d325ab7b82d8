//! `autobump run --kubernetes --listen` reconciles at once when a webhook arrives: a
//! registry push (its image's cached tags dropped first) and an Alertmanager delivery
//! each start a reconcile of the `Autobump` objects, an hour before the interval
//! would. A forged alert changes nothing by itself: the reconcile reads the gate anew.

use std::process::Command;
use std::time::Duration;

use autobump::policy::{Autobump, AutobumpSpec};
use kube::Api;
use kube::api::PostParams;

use super::incluster::{NS, cluster};
use super::support::git::{bare_repo, git};
use super::support::registry::{ManifestKind, Registry};
use super::support::{http_client, wait_until};

/// `autobump_reconciles_total{policy="app",result="ok"}`, or 0 before the first.
async fn reconciles(client: &reqwest::Client, listen: &str) -> Result<u64, String> {
    let text = client
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(r#"autobump_reconciles_total{policy="app",result="ok"} "#))
        .map_or(0, |n| n.trim().parse().unwrap_or(0)))
}

// One process's life, start to SIGTERM; splitting it would restart the process.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_reconcile_every_object_at_once_in_cluster_mode() {
    let (cluster, client) = cluster().await;
    let registry = Registry::start().await;
    let host = registry.host();
    registry
        .push_image("team/app", "1.0.0", ManifestKind::OciManifest, None)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let remote = bare_repo(
        dir.path(),
        "infra.git",
        &[(
            "deploy/app.yaml",
            &format!("image: {host}/team/app:1.0.0\n"),
        )],
    );
    let deployed = || git(&remote, &["show", "main:deploy/app.yaml"]);
    let spec: AutobumpSpec = serde_json::from_value(serde_json::json!({
        "images": [{"name": format!("{host}/team/app"), "tags": {"semver": {}}}],
        "source": {"repo": format!("file://{}", remote.display())},
        "directPush": {},
    }))
    .unwrap();
    let objects: Api<Autobump> = Api::namespaced(client.clone(), NS);
    objects
        .create(&PostParams::default(), &Autobump::new("app", spec))
        .await
        .unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    // An hour between periodic reconciles: every reconcile after the first is a
    // webhook's.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args(["run", "--kubernetes", "--namespace", NS])
        .args(["--lease-namespace", NS, "--identity", "replica-1"])
        .args(["--interval", "1h", "--listen", &listen, "--cache-dir"])
        .arg(dir.path().join("cache"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("AUTOBUMP_REGISTRY_WEBHOOK_TOKEN", "registry-t0ken")
        .env("AUTOBUMP_ALERTMANAGER_WEBHOOK_TOKEN", "alerts-t0ken")
        .env_remove("GITHUB_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = http_client();
    let count = async || reconciles(&http, &listen).await;
    let wait_for_reconciles = async |n: u64, what: &str| {
        wait_until(
            what,
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || match count().await? {
                seen if seen >= n => Ok(seen),
                seen => Err(format!("{seen} reconciles")),
            },
        )
        .await
    };
    wait_for_reconciles(1, "the first reconcile").await;

    // A push, announced by the registry's webhook: reconciled (and bumped) at once,
    // although the registry's tags were read a moment ago.
    registry.retag("team/app", "1.0.0", "1.1.0").await;
    let push = serde_json::json!({"events": [{
        "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "repository": "team/app", "tag": "1.1.0",
                   "url": format!("http://{host}/v2/team/app/manifests/1.1.0")}
    }]})
    .to_string();
    let refused = http
        .post(format!("http://{listen}/webhooks/registry"))
        .body(push.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the token is required");
    let accepted = http
        .post(format!("http://{listen}/webhooks/registry"))
        .bearer_auth("registry-t0ken")
        .body(push)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    wait_until(
        "the registry webhook's reconcile to bump main to 1.1.0",
        Duration::from_secs(60),
        Duration::from_millis(100),
        async || {
            let text = deployed();
            if text.contains("team/app:1.1.0") {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await;

    // A forged alert: a reconcile at once, which reads the gate (none: Clear) and
    // changes nothing.
    let before = count().await.unwrap();
    let alert = serde_json::json!({
        "receiver": "autobump", "status": "firing", "version": "4",
        "groupKey": "{}:{alertname=\"AppDown\"}", "truncatedAlerts": 0,
        "groupLabels": {"alertname": "AppDown"}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{"status": "firing", "labels": {"alertname": "AppDown"}, "annotations": {},
                    "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": "0a"}],
    })
    .to_string();
    let accepted = http
        .post(format!("http://{listen}/webhooks/alertmanager"))
        .bearer_auth("alerts-t0ken")
        .body(alert)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    wait_for_reconciles(before + 1, "the Alertmanager webhook's reconcile").await;
    let status = objects.get("app").await.unwrap().status.unwrap();
    assert!(status.state.hold.is_none(), "{status:?}");
    assert!(deployed().contains("team/app:1.1.0"));

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("autobump did not stop within 30 s of SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}
