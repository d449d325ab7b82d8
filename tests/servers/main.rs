//! Smoke tests of the real servers the integration tests run against (Debian's
//! `docker-registry`, `prometheus`, `prometheus-alertmanager`) and of the support code
//! that starts them. If these fail, run `scripts/setup`.

#[path = "../support/mod.rs"]
mod support;

mod dashboard;
mod listener;
mod notify;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use autobump::clock::Stopwatch;
use reqwest::{Method, StatusCode, header};
use serde_json::Value;
use support::{
    Alertmanager, AlertmanagerConfig, ManifestKind, MetricsTarget, Prometheus, Registry,
    WebhookSink, wait_until,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Lists a gzip'd tar with the system `tar`, proving the layer we push is a real one.
fn tar_list(gzip: &[u8]) -> String {
    let mut child = Command::new("tar")
        .args(["-tzf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running tar");
    child
        .stdin
        .take()
        .expect("tar stdin")
        .write_all(gzip)
        .expect("feeding tar");
    let out = child.wait_with_output().expect("waiting for tar");
    assert!(
        out.status.success(),
        "tar rejected the layer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn get_json(registry: &Registry, path: &str, accept: &str) -> Value {
    let response = registry
        .request(Method::GET, path)
        .header(header::ACCEPT, accept)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.expect("JSON body")
}

#[tokio::test]
async fn registry_push_list_head_and_notify() {
    let watch = Stopwatch::start();
    let sink = WebhookSink::start().await;
    let registry = Registry::options().notify(&sink.url()).start().await;

    let created = "2026-03-08T09:00:00Z";
    let oci = registry
        .push_image(
            "team/app",
            "v1.0.0",
            ManifestKind::OciManifest,
            Some(created),
        )
        .await;
    let docker = registry
        .push_image("team/app", "v1.1.0", ManifestKind::DockerV2, None)
        .await;
    assert_ne!(oci, docker);
    assert!(oci.starts_with("sha256:") && oci.len() == 7 + 64, "{oci}");

    assert_eq!(registry.tags("team/app").await, ["v1.0.0", "v1.1.0"]);

    // HEAD needs an Accept header to return the digest of what was pushed.
    assert_eq!(
        registry
            .head_manifest("team/app", "v1.0.0", OCI_MANIFEST)
            .await,
        Some(oci.clone())
    );
    assert_eq!(
        registry
            .head_manifest("team/app", "v1.1.0", DOCKER_MANIFEST)
            .await,
        Some(docker.clone())
    );
    assert_eq!(
        registry
            .head_manifest("team/app", "v9.9.9", OCI_MANIFEST)
            .await,
        None
    );

    // The pushed image is well-formed: the config carries `created`, the layer is a
    // gzip'd tar.
    let manifest = get_json(&registry, "/v2/team/app/manifests/v1.0.0", OCI_MANIFEST).await;
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let config = get_json(
        &registry,
        &format!("/v2/team/app/blobs/{config_digest}"),
        "*/*",
    )
    .await;
    assert_eq!(config["created"], created);
    assert_eq!(config["architecture"], "amd64");
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest");
    let layer = registry
        .request(Method::GET, &format!("/v2/team/app/blobs/{layer_digest}"))
        .send()
        .await
        .expect("GET layer")
        .bytes()
        .await
        .expect("layer bytes");
    assert_eq!(tar_list(&layer).trim(), "autobump-test.txt");

    // An OCI index over two platform images.
    let amd64 = registry
        .push_platform_image(
            "team/multi",
            ManifestKind::OciManifest,
            Some(created),
            "amd64",
        )
        .await;
    let arm64 = registry
        .push_platform_image(
            "team/multi",
            ManifestKind::OciManifest,
            Some(created),
            "arm64",
        )
        .await;
    let index = registry
        .push_index(
            "team/multi",
            "2.0.0",
            ManifestKind::OciManifest,
            &[amd64.clone(), arm64],
        )
        .await;
    assert_eq!(registry.tags("team/multi").await, ["2.0.0"]);
    assert_eq!(
        registry
            .head_manifest("team/multi", "2.0.0", OCI_INDEX)
            .await,
        Some(index.clone())
    );
    let listed = get_json(&registry, "/v2/team/multi/manifests/2.0.0", OCI_INDEX).await;
    assert_eq!(listed["manifests"][0]["digest"], amd64.digest.as_str());
    assert_eq!(listed["manifests"][1]["platform"]["architecture"], "arm64");

    // Push notifications arrive at the configured endpoint.
    let pushed_tag = |r: &support::Request, tag: &str| {
        r.json()["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| {
                e["action"] == "push"
                    && e["target"]["repository"] == "team/app"
                    && e["target"]["tag"] == tag
            })
        })
    };
    let note = sink
        .wait_for(
            "a push notification for team/app:v1.1.0",
            Duration::from_secs(10),
            |r| pushed_tag(r, "v1.1.0"),
        )
        .await;
    assert!(
        note.header("content-type")
            .is_some_and(|t| t.starts_with("application/vnd.docker.distribution.events.v1+json")),
        "{:?}",
        note.headers
    );
    eprintln!("registry smoke test took {:.2?}", watch.elapsed());
}

#[tokio::test]
async fn registry_with_htpasswd_requires_basic_auth() {
    let watch = Stopwatch::start();
    let registry = Registry::start_with_htpasswd("bot", "s3cret pass").await;
    let client = support::http_client();

    let anonymous = client
        .get(format!("{}/v2/", registry.url()))
        .send()
        .await
        .expect("anonymous GET /v2/");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let challenge = anonymous
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.starts_with("Basic "), "challenge: {challenge:?}");
    assert!(challenge.contains("realm="), "challenge: {challenge:?}");

    let wrong = client
        .get(format!("{}/v2/", registry.url()))
        .basic_auth("bot", Some("wrong"))
        .send()
        .await
        .expect("GET /v2/ with a wrong password");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let authed = registry
        .request(Method::GET, "/v2/")
        .send()
        .await
        .expect("authenticated GET /v2/");
    assert_eq!(authed.status(), StatusCode::OK);

    let digest = registry
        .push_image(
            "private/app",
            "1.2.3",
            ManifestKind::DockerV2,
            Some("2026-01-01T00:00:00Z"),
        )
        .await;
    assert_eq!(registry.tags("private/app").await, ["1.2.3"]);
    assert_eq!(
        registry
            .head_manifest("private/app", "1.2.3", DOCKER_MANIFEST)
            .await,
        Some(digest)
    );
    let anonymous_tags = client
        .get(format!("{}/v2/private/app/tags/list", registry.url()))
        .send()
        .await
        .expect("anonymous tag list");
    assert_eq!(anonymous_tags.status(), StatusCode::UNAUTHORIZED);
    eprintln!("htpasswd registry smoke test took {:.2?}", watch.elapsed());
}

const RULES: &str = r"
groups:
  - name: autobump-test
    rules:
      - alert: AutobumpTestDown
        expr: autobump_test_up == 0
        for: 0s
        labels:
          severity: critical
          team: autobump
        annotations:
          summary: the test target says it is down
";

/// Names of the alerts Prometheus has in `state` (`firing`, `pending`).
async fn prometheus_alerts(prometheus: &Prometheus, state: &str) -> Vec<String> {
    prometheus
        .alerts()
        .await
        .iter()
        .filter(|a| a["state"] == state)
        .map(|a| a["labels"]["alertname"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Waits until Prometheus has scraped `autobump_test_up` with `value`.
async fn wait_scraped(prometheus: &Prometheus, value: &str) {
    wait_until(
        &format!("Prometheus to scrape autobump_test_up = {value}"),
        Duration::from_secs(30),
        Duration::from_millis(200),
        async || {
            let result = prometheus.query("autobump_test_up").await;
            if result[0]["value"][1] == value {
                Ok(())
            } else {
                Err(result.to_string())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn prometheus_alert_fires_and_resolves() {
    let watch = Stopwatch::start();
    let target = MetricsTarget::start().await;
    target.set("autobump_test_up", 1.0);
    let prometheus = Prometheus::start(RULES, &[&target.host()], None).await;

    // Healthy first: scraped, and no alert.
    wait_scraped(&prometheus, "1").await;
    let first_scrape = watch.elapsed();
    assert!(target.scrapes() > 0);
    // Give the rule a couple of evaluations on the healthy value.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(prometheus.alerts().await, Vec::<Value>::new());

    target.set("autobump_test_up", 0.0);
    let down = Stopwatch::start();
    let alert = wait_until(
        "AutobumpTestDown firing in /api/v1/alerts",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let alerts = prometheus.alerts().await;
            alerts
                .iter()
                .find(|a| a["labels"]["alertname"] == "AutobumpTestDown" && a["state"] == "firing")
                .cloned()
                .ok_or_else(|| format!("{alerts:?}"))
        },
    )
    .await;
    let fired_after = down.elapsed();
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["job"], "test");
    assert_eq!(alert["labels"]["instance"], target.host().as_str());
    assert_eq!(
        alert["annotations"]["summary"],
        "the test target says it is down"
    );

    target.set("autobump_test_up", 1.0);
    let up = Stopwatch::start();
    wait_until(
        "AutobumpTestDown to resolve",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let firing = prometheus_alerts(&prometheus, "firing").await;
            if firing.is_empty() {
                Ok(())
            } else {
                Err(format!("still firing: {firing:?}"))
            }
        },
    )
    .await;
    eprintln!(
        "prometheus smoke test took {:.2?} (first scrape seen after {first_scrape:.2?}, \
         firing {fired_after:.2?} after the gauge dropped, resolved {:.2?} after it rose)",
        watch.elapsed(),
        up.elapsed()
    );
}

#[tokio::test]
async fn alertmanager_receives_the_firing_alert() {
    let watch = Stopwatch::start();
    let sink = WebhookSink::start().await;
    let alertmanager = Alertmanager::start(AlertmanagerConfig::webhook(&sink.url())).await;
    assert_eq!(alertmanager.alerts().await, Vec::<Value>::new());

    let target = MetricsTarget::start().await;
    target.set("autobump_test_up", 0.0);
    let prometheus = Prometheus::start(RULES, &[&target.host()], Some(&alertmanager.url())).await;

    let alert = wait_until(
        "AutobumpTestDown active in Alertmanager's /api/v2/alerts",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let alerts = alertmanager.alerts().await;
            alerts
                .iter()
                .find(|a| {
                    a["labels"]["alertname"] == "AutobumpTestDown"
                        && a["status"]["state"] == "active"
                })
                .cloned()
                .ok_or_else(|| format!("{alerts:?}"))
        },
    )
    .await;
    let in_alertmanager = watch.elapsed();
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["team"], "autobump");
    assert_eq!(alert["labels"]["job"], "test");
    assert_eq!(alert["labels"]["instance"], target.host().as_str());
    assert!(
        alert["generatorURL"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("{}/graph?", prometheus.url()))),
        "generatorURL names the Prometheus it came from: {alert}"
    );

    // The webhook receiver got it too.
    let hook = sink
        .wait_for("a firing webhook", Duration::from_secs(10), |r| {
            r.method == "POST" && r.json()["status"] == "firing"
        })
        .await;
    let payload = hook.json();
    assert_eq!(payload["commonLabels"]["alertname"], "AutobumpTestDown");
    assert_eq!(payload["alerts"][0]["labels"]["severity"], "critical");

    // And resolves through the same path.
    target.set("autobump_test_up", 1.0);
    sink.wait_for("a resolved webhook", Duration::from_secs(30), |r| {
        r.json()["status"] == "resolved"
    })
    .await;
    eprintln!(
        "alertmanager smoke test took {:.2?} (alert in Alertmanager after {in_alertmanager:.2?})",
        watch.elapsed()
    );
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// A server that cannot start fails the test with the reason from its own log.
#[tokio::test]
async fn a_server_that_cannot_start_panics_with_its_log() {
    let broken = "groups: [{name: broken, rules: [{alert: X}]}]";
    let outcome = tokio::spawn(async move {
        let _prometheus = Prometheus::start(broken, &[], None).await;
    })
    .await;
    let payload = outcome
        .expect_err("Prometheus started with a broken rule file")
        .into_panic();
    let message = panic_message(payload.as_ref());
    assert!(
        message.contains("prometheus (/usr/bin/prometheus) failed to start"),
        "{message}"
    );
    assert!(message.contains("field 'expr' must be set"), "{message}");
}

/// A missing server binary names the script that installs it.
#[test]
fn a_missing_binary_names_scripts_setup() {
    let payload = std::panic::catch_unwind(|| {
        support::process::find_binary("autobump-no-such-server", "no-such-package")
    })
    .expect_err("found a binary that does not exist");
    let message = panic_message(payload.as_ref());
    assert!(
        message.contains("autobump-no-such-server not found"),
        "{message}"
    );
    assert!(message.contains("run scripts/setup"), "{message}");
    assert!(message.contains("no-such-package"), "{message}");
}

/// The GitHub test data `scripts/setup` caches is where the helpers look for it.
#[test]
fn github_test_data_is_cached() {
    let openapi = support::github_openapi_path();
    let size = std::fs::metadata(&openapi).expect("openapi file").len();
    assert!(
        size > 1_000_000,
        "{} is only {size} bytes",
        openapi.display()
    );
    let examples = support::webhook_examples("pull_request");
    assert!(
        examples
            .iter()
            .all(|e| e["pull_request"]["number"].is_u64()),
        "every pull_request example has a PR number"
    );
    assert!(
        support::webhook_examples("issue_comment")
            .iter()
            .any(|e| e["action"] == "created")
    );
}
