//! Secrets never leave through what `autobump run --kubernetes` writes for people: its
//! debug JSON log, the objects' status (conditions, history), the Events it records,
//! its errors and notifications are searched for every secret it was given or
//! obtained (a credential helper's registry password, a refused one, a GitHub App's
//! key and installation tokens, an overridden `GITHUB_TOKEN`, a notification URL;
//! see `support::secret_world`).

use autobump::policy::{Autobump, AutobumpSpec};
use kube::Api;
use kube::api::PostParams;

use super::incluster::{NS, cluster, eventually};
use super::support::secret_world::SecretWorld;

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_log_status_events_or_notifications() {
    let (cluster, client) = cluster().await;
    let world = SecretWorld::start().await;
    let objects: Api<Autobump> = Api::namespaced(client.clone(), NS);
    for (name, spec) in world.specs() {
        let spec: AutobumpSpec = serde_json::from_value(spec).unwrap();
        objects
            .create(&PostParams::default(), &Autobump::new(name, spec))
            .await
            .unwrap();
    }
    let log_path = world.dir.path().join("autobump.log");
    let mut args: Vec<String> = ["run", "--kubernetes", "--namespace", NS]
        .into_iter()
        .chain(["--lease-namespace", NS, "--identity", "replica-1"])
        .chain(["--interval", "1h", "--cache-dir", "cache"])
        .map(str::to_owned)
        .collect();
    args.extend(world.run_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = world
        .command(&args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // prow's PR is open as the App; api's Ready condition carries the registry's
    // refusal.
    eventually("both policies reconciled", async || {
        let api = objects.get("api").await.map_err(|e| e.to_string())?;
        let ready = api
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        if world.fake.pulls().is_empty() || !ready.contains("not authorized") {
            return Err(format!("api Ready: {ready:?}; {:?}", world.fake.pulls()));
        }
        Ok(())
    })
    .await;
    world.assert_secrets_in_use(&log()).await;
    child.kill().await.unwrap();

    let mut outputs = vec![("the log".to_owned(), log())];
    for what in ["autobumps", "events", "events.events.k8s.io"] {
        let (ok, text) = cluster.kubectl(&["get", what, "-n", NS, "-o", "json"]);
        assert!(ok, "{text}");
        outputs.push((format!("kubectl get {what}"), text));
    }
    assert!(
        outputs[2].1.contains("autobump") && outputs[1].1.contains("not authorized"),
        "Events and status were written: {outputs:?}"
    );
    for text in world.notifications() {
        outputs.push(("a notification".to_owned(), text));
    }
    SecretWorld::assert_no_secret_in(&outputs);
}
