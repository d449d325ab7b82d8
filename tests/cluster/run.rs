//! `autobump run --kubernetes` as a process against the real API server: it reads an
//! `Autobump` object, reconciles it (a direct-push policy on a local git repository),
//! writes the outcome into the object's status conditions, holds the Lease while it
//! runs, and on SIGTERM exits 0 and releases the Lease.

use std::process::Command;

use autobump::policy::{Autobump, AutobumpSpec};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;

use super::incluster::{NS, cluster, eventually};

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git not found: run scripts/setup");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

// One process's life, start to SIGTERM; splitting it would restart the process.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread")]
async fn run_kubernetes_reconciles_objects_holds_the_lease_and_stops_cleanly() {
    let (cluster, client) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("deploy")).unwrap();
    std::fs::write(
        work.join("deploy/app.yaml"),
        "image: 127.0.0.1:9/team/app:1.0.0\n",
    )
    .unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(
        &work,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "app",
        ],
    );
    let remote = dir.path().join("remote.git");
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            remote.to_str().unwrap(),
        ],
    );

    let spec: AutobumpSpec = serde_json::from_value(serde_json::json!({
        "images": [{"name": "127.0.0.1:9/team/app", "tags": {"semver": {}}}],
        "source": {"repo": format!("file://{}", remote.display()), "branch": "main"},
        "directPush": {},
    }))
    .unwrap();
    let objects: Api<Autobump> = Api::namespaced(client.clone(), NS);
    objects
        .create(&PostParams::default(), &Autobump::new("app", spec))
        .await
        .unwrap();

    let port = crate::support::process::free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args([
            "--log-format",
            "json",
            "run",
            "--kubernetes",
            "--namespace",
            NS,
        ])
        .args(["--lease-namespace", NS, "--identity", "replica-1"])
        .args(["--interval", "1h", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env_remove("GITHUB_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The registry (port 9) is unreachable: the reconcile succeeds, says so, and the
    // deployed version 1.0.0 is recorded from git.
    let ready = eventually("the Ready condition", async || {
        let object = objects.get("app").await.map_err(|e| e.to_string())?;
        let status = object.status.clone().ok_or("no status yet")?;
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .ok_or(format!("{status:?}"))?
            .clone();
        let current = status.state.current.clone().ok_or(format!("{status:?}"))?;
        Ok((ready, current))
    })
    .await;
    assert_eq!(ready.1.summary, "1.0.0");
    assert!(ready.0.message.contains("registry"), "{:?}", ready.0);

    // autobump status reads the same from the cluster.
    let status = Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args(["status", "--kubernetes", "--namespace", NS])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}{status:?}");
    let row = table
        .lines()
        .find(|l| l.starts_with("autobump/app "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("1.0.0") && row.contains("open now"), "{table}");

    // autobump hold/unhold --kubernetes write the object's status; the running
    // controller reacts at once (its interval is an hour) with the Held condition.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_autobump"))
            .args(args)
            .args(["--kubernetes", "--namespace", NS])
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("USER", "oncall")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?}: {text}{out:?}");
        text
    };
    let said = cli(&["hold", "app", "--reason", "incident 4711"]);
    assert_eq!(said, "app held by cli:oncall: incident 4711\n");
    let held_condition = |want: &'static str| {
        let objects = objects.clone();
        async move {
            let object = objects.get("app").await.map_err(|e| e.to_string())?;
            let status = object.status.clone().ok_or("no status")?;
            let condition = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Held")
                .ok_or(format!("{status:?}"))?;
            if condition.status == want {
                Ok((status.state.hold.clone(), condition.message.clone()))
            } else {
                Err(format!("{condition:?}"))
            }
        }
    };
    let (hold, message) = eventually("Held=True after autobump hold", async || {
        held_condition("True").await
    })
    .await;
    let hold = hold.expect("the hold is in the status");
    assert_eq!(
        (hold.by.as_str(), hold.reason.as_str()),
        ("cli:oncall", "incident 4711")
    );
    assert!(message.contains("incident 4711"), "{message}");
    // The dashboard's API reads the objects: the row, and the policy with its history.
    let list = crate::support::get_json(&format!("http://127.0.0.1:{port}/api/v1/policies")).await;
    let row = &list["policies"][0];
    assert_eq!(row["name"], format!("{NS}/app"), "{list}");
    assert_eq!(row["defined"], true, "{list}");
    assert_eq!(row["current"]["summary"], "1.0.0", "{list}");
    assert_eq!(row["hold"]["by"], "cli:oncall", "{list}");
    let detail =
        crate::support::get_json(&format!("http://127.0.0.1:{port}/api/v1/policies/{NS}/app"))
            .await;
    let reasons: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"Held"), "{detail}");
    let page = crate::support::http_client()
        .get(format!("http://127.0.0.1:{port}/policies/{NS}/app"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(page.text().await.unwrap().contains("incident 4711"));
    assert!(cli(&["hold", "app", "--reason", "again"]).contains("already held"));
    assert_eq!(
        cli(&["unhold", &format!("{NS}/app")]),
        "app: lifted the hold by cli:oncall (incident 4711)\n"
            .replace("app:", &format!("{NS}/app:"))
    );
    let (hold, _) = eventually("Held=False after autobump unhold", async || {
        held_condition("False").await
    })
    .await;
    assert!(hold.is_none());

    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let holder = leases
        .get("autobump")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("replica-1"));

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("autobump did not stop within 30 s of SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    let holder = leases
        .get("autobump")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert!(
        holder.as_deref().is_none_or(str::is_empty),
        "the lease is released on shutdown: {holder:?}"
    );
}

/// `autobump rollback --kubernetes` records the request in the object's status (where
/// the controller acts on it), as `cli:$USER`; it refuses, writing nothing, when there
/// is nothing to roll back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_kubernetes_records_the_request_in_the_status() {
    use autobump::policy::v1alpha1::{ImageVersion, Release};
    use autobump::store::Store as _;
    use autobump::store::kube::{KubeStore, Scope};
    use kube::ResourceExt as _;

    let (cluster, client) = cluster().await;
    let spec: AutobumpSpec = serde_json::from_value(serde_json::json!({
        "images": [{"name": "127.0.0.1:9/team/app", "tags": {"semver": {}}}],
        "source": {"repo": "https://github.com/example/infra.git"},
        "directPush": {},
    }))
    .unwrap();
    let objects: Api<Autobump> = Api::namespaced(client.clone(), NS);
    objects
        .create(&PostParams::default(), &Autobump::new("app", spec))
        .await
        .unwrap();
    let release = |tag: &str| Release {
        summary: tag.into(),
        images: vec![ImageVersion {
            image: "127.0.0.1:9/team/app".into(),
            tag: tag.into(),
            digest: None,
        }],
        since: "2026-11-23T10:00:00Z".parse().unwrap(),
        commit: None,
    };
    let store = KubeStore::new(client.clone(), Scope::Namespace(NS.into()));
    store
        .update("app", &mut |s| {
            s.current = Some(release("1.1.0"));
            s.last_known_good = Some(release("1.1.0"));
        })
        .unwrap();
    let rollback = |name: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_autobump"))
            .args(["rollback", name, "--reason", "checkout errors"])
            .args(["--kubernetes", "--namespace", NS])
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("USER", "oncall")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // The deployed version is the known-good one: refused, the object untouched.
    let version = objects.get("app").await.unwrap().resource_version();
    let (code, out, err) = rollback("app");
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("already runs its last known-good version 1.1.0"),
        "{err}"
    );
    assert_eq!(
        objects.get("app").await.unwrap().resource_version(),
        version
    );

    // 1.2.0 is deployed: the request lands in the status.
    store
        .update("app", &mut |s| s.current = Some(release("1.2.0")))
        .unwrap();
    let (code, out, err) = rollback(&format!("{NS}/app"));
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        format!(
            "{NS}/app: rollback from 1.2.0 to 1.1.0 requested by cli:oncall: checkout errors\n"
        )
    );
    let status = objects.get("app").await.unwrap().status.unwrap();
    let request = status
        .state
        .rollback_request
        .expect("the request is in the status");
    assert_eq!(
        (
            request.by.as_str(),
            request.reason.as_str(),
            request.via.as_deref()
        ),
        ("cli:oncall", "checkout errors", Some("cli"))
    );
    let last = status.state.history.last().unwrap();
    assert_eq!(last.reason, "RollbackRequested");
    assert_eq!(
        last.message,
        "rollback from 1.2.0 to 1.1.0 requested by cli:oncall: checkout errors"
    );
    // Asked again: already pending, nothing changes.
    let (code, out, _) = rollback("app");
    assert_eq!(code, Some(0));
    assert!(out.contains("already requested by cli:oncall"), "{out}");
}

/// Promotion in a cluster: `promotion.from` names an Autobump object in the same
/// namespace. The API server keeps the upstream's proof in its status (the CRD's
/// schema accepts it), the downstream reads it by bare name through its
/// namespace-scoped store, and `autobump status --kubernetes` shows the upstream and
/// what waits there.
// One setup, read three ways; split, each part would rebuild the objects.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_reads_the_upstream_object_in_the_same_namespace() {
    use autobump::core::change::StateChange;
    use autobump::core::promotion::{Admission, Conditions};
    use autobump::policy::v1alpha1::{ImageVersion, Release};
    use autobump::store::Store as _;
    use autobump::store::kube::{KubeStore, Scope};

    let (cluster, client) = cluster().await;
    let spec = |promotion: Option<&str>| -> AutobumpSpec {
        let mut spec = serde_json::json!({
            "images": [{"name": "127.0.0.1:9/shop/cart", "tags": {"semver": {}}}],
            "source": {"repo": "https://github.com/example/fleet.git"},
            "directPush": {},
            "gate": {"prometheus": "http://prometheus.monitoring.svc:9090", "alerts": "{team=\"shop\"}", "bake": "30m"},
        });
        if let Some(from) = promotion {
            spec["promotion"] = serde_json::json!({"from": from});
        }
        serde_json::from_value(spec).unwrap()
    };
    let objects: Api<Autobump> = Api::namespaced(client.clone(), NS);
    for (name, from) in [
        ("cart-staging", None),
        ("cart-production", Some("cart-staging")),
    ] {
        objects
            .create(&PostParams::default(), &Autobump::new(name, spec(from)))
            .await
            .unwrap();
    }
    let release = |tag: &str| Release {
        summary: tag.into(),
        images: vec![ImageVersion {
            image: "127.0.0.1:9/shop/cart".into(),
            tag: tag.into(),
            digest: Some(format!("sha256:{}", tag.replace('.', "").repeat(16))),
        }],
        since: "2026-11-23T10:00:00Z".parse().unwrap(),
        commit: Some("0123abc".into()),
    };
    // Staging proves 1.1.0 and 1.3.0 (through the real state code) and rolls back 1.2.0.
    let store = KubeStore::new(client.clone(), Scope::Namespace(NS.into()));
    let conditions = Conditions::of(&spec(None));
    store
        .update("cart-staging", &mut |s| {
            for (tag, at) in [
                ("1.1.0", "2026-11-23T11:00:00Z"),
                ("1.3.0", "2026-11-23T12:00:00Z"),
            ] {
                s.current = Some(release(tag));
                s.apply(
                    &[StateChange::Promote(release(tag), conditions.clone())],
                    at.parse().unwrap(),
                );
            }
            s.bad_versions
                .insert(autobump::policy::v1alpha1::BadVersion {
                    image: "127.0.0.1:9/shop/cart".into(),
                    tag: "1.2.0".into(),
                });
        })
        .unwrap();
    store
        .update("cart-production", &mut |s| {
            s.current = Some(release("1.1.0"));
        })
        .unwrap();

    // What the API server kept, as production's namespace-scoped store reads it.
    let upstream = store.in_namespace(NS).load("cart-staging").unwrap();
    assert_eq!(upstream.proven.len(), 2);
    assert_eq!(upstream.proven[1].bake, "30m");
    assert!(
        upstream.proven[1]
            .gate
            .as_deref()
            .unwrap()
            .contains("{team=\"shop\"}")
    );
    let own = store.load("cart-production").unwrap();
    let admission = Admission::promoted(&own, &upstream);
    let image = "127.0.0.1:9/shop/cart";
    assert!(admission.admits(image, "1.3.0"));
    assert!(!admission.admits(image, "1.2.0"), "rolled back in staging");
    assert!(
        admission
            .digest_problem(image, "1.3.0", "sha256:other")
            .is_some()
    );

    let out = Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args(["status", "--kubernetes", "--namespace", NS])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = text
        .lines()
        .find(|l| l.contains("cart-production"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.contains(&format!("from {NS}/cart-staging: 1.3.0 waiting")),
        "{text}"
    );
}
