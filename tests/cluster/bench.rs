//! The rollback latency benchmark (`scripts/bench rollback` runs it; ignored in
//! `cargo test`): seconds from an alert becoming firing in Prometheus to (a) the hold
//! recorded in the `Autobump` object's status, (b) the rollback pull request opened,
//! (c) the Deployment patched back to the known-good image — once with Alertmanager's
//! webhook waking autobump, once with polling only.
//!
//! Everything is real but GitHub: the `autobump` binary (`AUTOBUMP_BIN`, default the
//! debug build) runs `run --kubernetes` against a kube-apiserver; the GitOps
//! repository is served over smart HTTP (`git http-backend`, token auth as on GitHub)
//! from the GitHub fake's bare repository; Prometheus evaluates a rule every second
//! over a metric the benchmark flips and sends to a real Alertmanager, which posts its
//! webhook (`group_wait: 0s`) to autobump's `--listen` address.
//!
//! Each run is fresh (namespace, `Autobump` object, Deployment, image repository,
//! GitHub fake, autobump process): 1.1.0 is deployed and baking with 1.0.0 as the
//! last known-good version when the metric flips. The three moments are polled every
//! 10 ms; the start is the alert's `activeAt` as Prometheus reports it (with `for: 0s`
//! it fires at once). Polling, the metric flips at a random moment of the interval. `BENCH_RUNS` (default 3) runs per path; `BENCH_POLL_INTERVAL`
//! (default `5s`) is `--interval` when polling.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use autobump::clock::{Clock as _, Deadline, SystemClock};
use autobump::policy::v1alpha1::{ImageVersion, Release};
use autobump::policy::{Autobump, AutobumpSpec};
use autobump::store::Store as _;
use autobump::store::kube::{KubeStore, Scope};
use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::incluster::{NS, cluster};
use super::support::git::GitHttpServer;
use super::support::github_fake::GithubFake;
use super::support::process::free_port;
use super::support::registry::{ManifestKind, Registry};
use super::support::{Alertmanager, AlertmanagerConfig, MetricsTarget, Prometheus};

const GOOD: &str = "1.0.0";
const BAD: &str = "1.1.0";
const TOKEN: &str = "test-token";
const WEBHOOK_TOKEN: &str = "bench-webhook-t0ken";

/// Whether Alertmanager's webhook wakes autobump, or only its interval does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Webhook,
    Polling,
}

/// What is shared by every run.
struct Bench {
    client: Client,
    kubeconfig: String,
    registry: Registry,
    metrics: MetricsTarget,
    prometheus: Prometheus,
    webhook_port: u16,
    binary: PathBuf,
    poll_interval: String,
}

/// One run's figures, in seconds after the alert's `activeAt`.
#[derive(Debug, Clone, Copy)]
struct Figures {
    hold: f64,
    pr: f64,
    patched: f64,
}

fn now() -> DateTime<Utc> {
    SystemClock.now()
}

fn seconds_since(start: DateTime<Utc>, t: DateTime<Utc>) -> f64 {
    // Microseconds fit an f64 exactly for any span a run can have.
    #[allow(clippy::cast_precision_loss)]
    let micros = (t - start).num_microseconds().unwrap_or(i64::MAX) as f64;
    micros / 1e6
}

impl Bench {
    /// One run: see the module docs.
    #[allow(clippy::too_many_lines)] // one run, set-up to figures, top to bottom
    async fn run(&self, path: Path, i: usize) -> Figures {
        let ns = format!("bench-{i}");
        let repository = format!("b{i}/web");
        let image = format!("{}/{repository}", self.registry.host());
        self.registry
            .push_image(&repository, GOOD, ManifestKind::OciManifest, None)
            .await;
        self.registry.retag(&repository, GOOD, BAD).await;
        let series = format!("web_errors{{run=\"{i}\"}}");
        self.metrics.set(&series, 0.0);

        // The GitOps repository: the fake's bare repository, served over HTTP as
        // example/infra.git (the name autobump derives the GitHub repository from).
        let fake = GithubFake::start().await;
        fake.commit(
            "main",
            &[(
                "apps/web/deployment.yaml",
                Some(&format!(
                    "kind: Deployment\nmetadata: {{name: web}}\nspec:\n  template:\n    spec:\n      \
                     containers:\n        - name: web\n          image: {image}:{BAD}\n"
                )),
            )],
            "Deploy web 1.1.0",
        );
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("example")).unwrap();
        std::os::unix::fs::symlink(fake.git_dir(), root.path().join("example/infra.git")).unwrap();
        let git = GitHttpServer::start(root.path(), "x-access-token", TOKEN);

        // The cluster: the Deployment runs 1.1.0, rolled out.
        let client = self.client.clone();
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": format!("{image}:{BAD}")}]},
                },
            },
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap();
        deployments
            .patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                    "readyReplicas": 1, "availableReplicas": 1,
                }})),
            )
            .await
            .unwrap();

        let spec: AutobumpSpec = serde_json::from_value(json!({
            "images": [{"name": image, "tags": {"semver": {}}}],
            "source": {"repo": git.url("example/infra.git"), "include": ["apps/**/*.yaml"]},
            "pullRequest": {"botLogin": "autobump-bot"},
            "gate": {
                "prometheus": self.prometheus.url(),
                "alerts": format!("{{alertname=\"WebErrors\", run=\"{i}\"}}"),
                "bake": "1h",
            },
            "rollout": {"workloads": [{"kind": "Deployment", "namespace": ns, "selector": "app=web"}]},
            "rollback": {"pullRequest": true, "patchCluster": true},
        }))
        .unwrap();
        let objects: Api<Autobump> = Api::namespaced(client.clone(), &ns);
        objects
            .create(&PostParams::default(), &Autobump::new("web", spec))
            .await
            .unwrap();
        // 1.0.0 baked before: the last known-good version.
        let store = KubeStore::new(client.clone(), Scope::Namespace(ns.clone()));
        let good = Release {
            summary: GOOD.into(),
            images: vec![ImageVersion {
                image: image.clone(),
                tag: GOOD.into(),
                digest: None,
            }],
            since: now(),
            commit: None,
        };
        tokio::task::spawn_blocking(move || {
            store.update("web", &mut |s| s.last_known_good = Some(good.clone()))
        })
        .await
        .unwrap()
        .unwrap();

        let work = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args(["run", "--kubernetes", "--namespace", &ns])
            .args(["--lease-namespace", NS, "--identity", &format!("bench-{i}")])
            .args(["--github-api", &fake.api_url()])
            // The token goes only to the GitHub host's git remotes: here the local
            // git server (loopback, so plain HTTP is allowed).
            .args([
                "--github-git-host",
                git.url("")
                    .trim_start_matches("http://")
                    .trim_end_matches('/'),
            ])
            .arg("--cache-dir")
            .arg(work.path().join("cache"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("GITHUB_TOKEN", TOKEN)
            .env("AUTOBUMP_ALERTMANAGER_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path().join("autobump.log")).unwrap())
            .kill_on_drop(true);
        match path {
            Path::Webhook => command.args([
                "--interval",
                "1h",
                "--listen",
                &format!("127.0.0.1:{}", self.webhook_port),
            ]),
            Path::Polling => command.args(["--interval", &self.poll_interval]),
        };
        let mut child = command.spawn().expect("starting autobump");
        let log = || std::fs::read_to_string(work.path().join("autobump.log")).unwrap_or_default();

        // Wait until 1.1.0 bakes with 1.0.0 as the known-good version.
        let deadline = Deadline::after(Duration::from_secs(60));
        loop {
            let status = objects.get("web").await.unwrap().status.unwrap_or_default();
            if status.state.bake.as_ref().is_some_and(|b| b.version == BAD)
                && status.state.last_known_good.is_some()
            {
                break;
            }
            assert!(
                !deadline.expired(),
                "run {i}: 1.1.0 never baked: {status:?}\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // 1.1.0 hurts, at a random moment of the polling cycle (right after the
        // reconcile that started the bake, every poll would be a whole interval away).
        if path == Path::Polling {
            let interval = self
                .poll_interval
                .parse::<autobump::policy::values::Duration>()
                .expect("BENCH_POLL_INTERVAL is a duration such as 5s")
                .delta()
                .to_std()
                .unwrap();
            tokio::time::sleep(interval.mul_f64(fastrand::f64())).await;
        }
        self.metrics.set(&series, 3.0);
        let (mut active, mut hold, mut pr, mut patched) = (None, None, None, None);
        let deadline = Deadline::after(Duration::from_secs(90));
        while active.is_none() || hold.is_none() || pr.is_none() || patched.is_none() {
            assert!(
                !deadline.expired(),
                "run {i}: active {active:?}, hold {hold:?}, PR {pr:?}, patched {patched:?}\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            let t = now();
            if active.is_none() {
                active = self.prometheus.alerts().await.iter().find_map(|a| {
                    (a["labels"]["run"] == i.to_string().as_str() && a["state"] == "firing")
                        .then(|| a["activeAt"].as_str()?.parse::<DateTime<Utc>>().ok())
                        .flatten()
                });
            }
            if hold.is_none() {
                let o = objects.get("web").await.unwrap();
                if o.status.is_some_and(|s| s.state.hold.is_some()) {
                    hold = Some(t);
                }
            }
            if pr.is_none()
                && fake
                    .pulls()
                    .iter()
                    .any(|p| p.head == "autobump-rollback-web")
            {
                pr = Some(t);
            }
            if patched.is_none() {
                let d = deployments.get("web").await.unwrap();
                let running = d.spec.template.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap_or_default();
                if running == format!("{image}:{GOOD}") {
                    patched = Some(t);
                }
            }
        }
        self.metrics.set(&series, 0.0);
        let _ = child.start_kill();
        let _ = child.wait().await;
        let start = active.unwrap();
        Figures {
            hold: seconds_since(start, hold.unwrap()),
            pr: seconds_since(start, pr.unwrap()),
            patched: seconds_since(start, patched.unwrap()),
        }
    }
}

fn range(values: impl Iterator<Item = f64> + Clone) -> String {
    let min = values.clone().fold(f64::INFINITY, f64::min);
    let max = values.fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.2}–{max:.2} s")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: scripts/bench rollback runs it and prints the figures"]
async fn rollback_latency() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let poll_interval = std::env::var("BENCH_POLL_INTERVAL").unwrap_or_else(|_| "5s".into());
    let binary = std::env::var_os("AUTOBUMP_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_autobump")),
        PathBuf::from,
    );
    let (cluster, client) = cluster().await;
    let webhook_port = free_port();
    let alertmanager = Alertmanager::start(AlertmanagerConfig::raw(&format!(
        "route:\n  receiver: autobump\n  group_by: [run]\n  group_wait: 0s\n  \
         group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: autobump\n    webhook_configs:\n      - url: \
         http://127.0.0.1:{webhook_port}/webhooks/alertmanager\n        send_resolved: true\n        \
         http_config: {{authorization: {{credentials: {WEBHOOK_TOKEN}}}}}\n"
    )))
    .await;
    let metrics = MetricsTarget::start().await;
    let prometheus = Prometheus::options()
        .rules(
            "groups:\n  - name: bench\n    rules:\n      - alert: WebErrors\n        \
             expr: web_errors > 0\n        labels: {severity: critical}\n",
        )
        .scrape(&metrics.host())
        .alertmanager(&alertmanager.url())
        .start()
        .await;
    let bench = Bench {
        client,
        kubeconfig: cluster.kubeconfig.clone(),
        registry: Registry::start().await,
        metrics,
        prometheus,
        webhook_port,
        binary,
        poll_interval,
    };
    println!(
        "bench: rollback latency, autobump run --kubernetes ({}), from the alert firing in Prometheus",
        bench.binary.display()
    );
    let mut i = 0;
    for (path, what) in [
        (Path::Webhook, "Alertmanager webhook".to_owned()),
        (
            Path::Polling,
            format!("polling only, --interval {}", bench.poll_interval),
        ),
    ] {
        let mut all = Vec::new();
        for _ in 0..runs {
            i += 1;
            let f = Box::pin(bench.run(path, i)).await;
            println!(
                "bench: {what}, run {i}: (a) hold {:.2} s, (b) rollback PR {:.2} s, (c) workload patched {:.2} s",
                f.hold, f.pr, f.patched
            );
            all.push(f);
        }
        println!(
            "bench: {what}: (a) hold {}, (b) rollback PR {}, (c) workload patched {} over {runs} run(s)",
            range(all.iter().map(|f| f.hold)),
            range(all.iter().map(|f| f.pr)),
            range(all.iter().map(|f| f.patched)),
        );
    }
}
