//! The alert gate's adapter against real servers: Debian's `prometheus` and
//! `prometheus-alertmanager` (1 s scrape and evaluation, real rule files, a scrape
//! target whose gauges the test flips), small in-process servers that fail, stall or
//! answer nonsense, and the `/webhooks/alertmanager` route fed by a real Alertmanager.
//! If the servers are missing, run `scripts/setup`.
//!
//! Prometheus scrapes a new target only ~5 s after it starts, so each test starts its
//! servers once and waits with generous deadlines.

#[path = "../support/mod.rs"]
mod support;

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use autobump::alerts::{
    AlertSource, AlertState, AlertTrigger, AlertsClient, AlertsConfig, AlertsError, GateReading,
    GateVerdict, TriggerStatus, gate, read_gate,
};
use autobump::clock::{Clock, Stopwatch, SystemClock};
use autobump::policy::v1alpha1::GateSpec;
use autobump::policy::values::{AlertMatchers, HttpUrl};
use axum::Router;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use support::scripted::Served;
use support::{
    Alertmanager, AlertmanagerConfig, MetricsTarget, Prometheus, http_client, wait_until,
};
use tokio::sync::mpsc;

/// Three rules over the test target (scraped as job `test`):
/// * `AutobumpTestDown` fires as soon as `autobump_test_up` is 0;
/// * `AutobumpTestSlow` has `for: 1h`, so it stays pending for the whole test;
/// * `AutobumpOtherDown` fires as soon as `autobump_other_up` is 0, and claims to be
///   about job `other` (rule labels overwrite the series' labels).
const RULES: &str = r#"
groups:
  - name: autobump-alerts-test
    rules:
      - alert: AutobumpTestDown
        expr: autobump_test_up == 0
        for: 0s
        labels:
          severity: critical
        annotations:
          summary: hook is down
          description: "{{ $labels.instance }} reports autobump_test_up == 0"
          runbook_url: https://example.com/runbooks/hook-down
      - alert: AutobumpTestSlow
        expr: autobump_test_slow == 1
        for: 1h
        labels:
          severity: warning
        annotations:
          summary: hook is slow
      - alert: AutobumpOtherDown
        expr: autobump_other_up == 0
        for: 0s
        labels:
          severity: critical
          job: other
        annotations:
          summary: another service is down
"#;

/// The policy's matchers: job `test`, critical or warning.
const SELECT: &str = r#"{job="test", severity=~"critical|warning"}"#;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

fn client() -> AlertsClient {
    AlertsClient::new(AlertsConfig::default()).expect("building the alerts client")
}

fn spec(source: &str, url: &str, matchers: &str, include_pending: bool) -> GateSpec {
    let url: HttpUrl = url.parse().expect("a test server URL");
    let alerts: AlertMatchers = matchers.parse().expect("test matchers");
    let yaml = format!(
        "{source}: {url}\nalerts: '{alerts}'\nincludePending: {include_pending}\n",
        alerts = alerts.to_string().replace('\'', "''")
    );
    yaml_serde::from_str(&yaml).unwrap_or_else(|e| panic!("gate spec {yaml}: {e}"))
}

fn prometheus_gate(url: &str, matchers: &str, include_pending: bool) -> GateSpec {
    spec("prometheus", url, matchers, include_pending)
}

fn alertmanager_gate(url: &str, matchers: &str) -> GateSpec {
    spec("alertmanager", url, matchers, false)
}

fn firing(names: &[&str]) -> GateVerdict {
    GateVerdict::Firing(names.iter().map(|n| (*n).to_owned()).collect())
}

/// Reads the gate until its verdict is `want`; returns that reading.
async fn wait_for_verdict(
    what: &str,
    source: &impl AlertSource,
    spec: &GateSpec,
    want: &GateVerdict,
) -> GateReading {
    wait_until(what, WAIT, POLL, async || {
        let reading = read_gate(source, Some(spec)).await;
        if reading.verdict == *want {
            Ok(reading)
        } else {
            Err(format!("{:?}", reading.verdict))
        }
    })
    .await
}

#[tokio::test]
async fn prometheus_gate_clear_pending_and_firing() {
    let watch = Stopwatch::start();
    let target = MetricsTarget::start().await;
    target.set("autobump_test_up", 1.0);
    target.set("autobump_test_slow", 0.0);
    target.set("autobump_other_up", 0.0);
    let prometheus = Prometheus::start(RULES, &[&target.host()], None).await;
    let client = client();
    let url = prometheus.url();
    let selected = prometheus_gate(&url, SELECT, false);
    let selected_or_pending = prometheus_gate(&url, SELECT, true);
    let everything = prometheus_gate(&url, "{}", false);

    // No gate configured: Clear, without asking anyone.
    assert_eq!(gate(&client, None).await, GateVerdict::Clear);

    // The other job's alert fires — proof that rules run on scraped data...
    let other = wait_for_verdict(
        "AutobumpOtherDown firing through a gate that selects everything",
        &client,
        &everything,
        &firing(&["AutobumpOtherDown"]),
    )
    .await;
    let first_firing = watch.elapsed();
    assert_eq!(other.alerts.len(), 1);
    assert_eq!(other.alerts[0].labels["job"], "other");
    // ...but the policy's matchers ignore it, and nothing else fires: Clear.
    assert_eq!(gate(&client, Some(&selected)).await, GateVerdict::Clear);
    assert_eq!(
        gate(&client, Some(&selected_or_pending)).await,
        GateVerdict::Clear
    );

    // A `for: 1h` rule becomes pending: it counts only with includePending.
    target.set("autobump_test_slow", 1.0);
    let pending = wait_for_verdict(
        "AutobumpTestSlow pending, counted with includePending",
        &client,
        &selected_or_pending,
        &firing(&["AutobumpTestSlow"]),
    )
    .await;
    assert_eq!(pending.alerts[0].state, AlertState::Pending);
    assert_eq!(pending.alerts[0].summary(), Some("hook is slow"));
    assert_eq!(gate(&client, Some(&selected)).await, GateVerdict::Clear);

    // The gauge drops: the selected alert fires, with its labels and annotations.
    target.set("autobump_test_up", 0.0);
    let dropped = Stopwatch::start();
    let reading = wait_for_verdict(
        "AutobumpTestDown firing through the policy's gate",
        &client,
        &selected,
        &firing(&["AutobumpTestDown"]),
    )
    .await;
    let fired_after = dropped.elapsed();
    assert_eq!(reading.alerts.len(), 1, "{:?}", reading.alerts);
    let alert = &reading.alerts[0];
    assert_eq!(alert.name, "AutobumpTestDown");
    assert_eq!(alert.state, AlertState::Firing);
    assert_eq!(alert.labels["alertname"], "AutobumpTestDown");
    assert_eq!(alert.labels["job"], "test");
    assert_eq!(alert.labels["severity"], "critical");
    assert_eq!(alert.labels["instance"], target.host());
    assert_eq!(alert.summary(), Some("hook is down"));
    assert_eq!(
        alert.description().map(str::to_owned),
        Some(format!("{} reports autobump_test_up == 0", target.host())),
        "the description template is expanded"
    );
    assert_eq!(
        alert.runbook_url(),
        Some("https://example.com/runbooks/hook-down")
    );
    let active_at = alert.active_at.expect("activeAt");
    let age = SystemClock.now() - active_at;
    assert!(
        age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::minutes(2),
        "activeAt {active_at} is recent"
    );
    assert_eq!(alert.source_url, Some(format!("{url}/alerts")));
    let text = alert.to_string();
    assert!(
        text.starts_with("AutobumpTestDown{instance=")
            && text.contains("severity=\"critical\"")
            && text.contains(": hook is down; runbook: https://example.com/runbooks/hook-down"),
        "{text}"
    );
    // With includePending both count; the names are sorted.
    assert_eq!(
        gate(&client, Some(&selected_or_pending)).await,
        firing(&["AutobumpTestDown", "AutobumpTestSlow"])
    );

    // Prometheus stops: Unknown, never Clear.
    drop(prometheus);
    let GateVerdict::Unknown(why) = gate(&client, Some(&selected)).await else {
        panic!("a stopped Prometheus must make the gate Unknown");
    };
    assert!(why.contains("unreachable"), "{why}");
    eprintln!(
        "prometheus gate test took {:.2?} (first alert firing after {first_firing:.2?}, \
         AutobumpTestDown seen by the gate {fired_after:.2?} after the gauge dropped)",
        watch.elapsed()
    );
}

#[tokio::test]
async fn alertmanager_gate_ignores_silenced_alerts() {
    let watch = Stopwatch::start();
    let alertmanager = Alertmanager::start(AlertmanagerConfig::default()).await;
    let target = MetricsTarget::start().await;
    target.set("autobump_test_up", 0.0);
    target.set("autobump_test_slow", 1.0);
    target.set("autobump_other_up", 0.0);
    let prometheus = Prometheus::start(RULES, &[&target.host()], Some(&alertmanager.url())).await;
    let client = client();
    let am = alertmanager.url();
    let selected = alertmanager_gate(&am, SELECT);
    let everything = alertmanager_gate(&am, "{}");

    let reading = wait_for_verdict(
        "AutobumpTestDown firing through Alertmanager",
        &client,
        &selected,
        &firing(&["AutobumpTestDown"]),
    )
    .await;
    let seen_after = watch.elapsed();
    let alert = &reading.alerts[0];
    assert_eq!(alert.state, AlertState::Firing);
    assert_eq!(alert.labels["job"], "test");
    assert_eq!(alert.labels["instance"], target.host());
    assert_eq!(alert.summary(), Some("hook is down"));
    assert_eq!(
        alert.runbook_url(),
        Some("https://example.com/runbooks/hook-down")
    );
    assert!(alert.active_at.is_some());
    assert!(
        alert
            .generator_url
            .as_deref()
            .is_some_and(|u| u.starts_with(&format!("{}/graph?", prometheus.url()))),
        "generatorURL links the rule's expression in Prometheus: {alert:?}"
    );
    assert!(
        alert
            .source_url
            .as_deref()
            .is_some_and(|u| u.starts_with(&format!("{am}/#/alerts?filter="))),
        "{alert:?}"
    );
    // The pending rule never reaches Alertmanager; the other job's alert does.
    wait_for_verdict(
        "AutobumpOtherDown in Alertmanager too",
        &client,
        &everything,
        &firing(&["AutobumpOtherDown", "AutobumpTestDown"]),
    )
    .await;

    // A real silence for AutobumpTestDown.
    let now = SystemClock.now();
    let response = http_client()
        .post(format!("{am}/api/v2/silences"))
        .json(&json!({
            "matchers": [{"name": "alertname", "value": "AutobumpTestDown", "isRegex": false, "isEqual": true}],
            "startsAt": now.to_rfc3339(),
            "endsAt": (now + chrono::TimeDelta::hours(1)).to_rfc3339(),
            "createdBy": "autobump tests",
            "comment": "silenced alerts do not count"
        }))
        .send()
        .await
        .expect("POST /api/v2/silences");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let silence: Value = response.json().await.expect("silence JSON");
    let silence_id = silence["silenceID"].as_str().expect("silenceID").to_owned();

    wait_for_verdict(
        "the silenced alert to stop counting",
        &client,
        &selected,
        &GateVerdict::Clear,
    )
    .await;
    // Only the silence makes the difference: Alertmanager still holds the alert,
    // suppressed by that silence, and Prometheus still fires it.
    let held = alertmanager.alerts().await;
    let down = held
        .iter()
        .find(|a| a["labels"]["alertname"] == "AutobumpTestDown")
        .unwrap_or_else(|| panic!("Alertmanager still has AutobumpTestDown: {held:?}"));
    assert_eq!(down["status"]["state"], "suppressed", "{down}");
    assert_eq!(down["status"]["silencedBy"], json!([silence_id]), "{down}");
    assert!(
        prometheus
            .alerts()
            .await
            .iter()
            .any(|a| { a["labels"]["alertname"] == "AutobumpTestDown" && a["state"] == "firing" }),
        "Prometheus still fires AutobumpTestDown"
    );
    // The unsilenced alert still counts.
    assert_eq!(
        gate(&client, Some(&everything)).await,
        firing(&["AutobumpOtherDown"])
    );
    eprintln!(
        "alertmanager gate test took {:.2?} (alert seen through Alertmanager after {seen_after:.2?})",
        watch.elapsed()
    );
}

/// Answers by the first path segment: `/fail` 500, `/text` 200 with plain text,
/// `/wrong` 200 JSON of another shape, `/error` Prometheus' API error, `/hang` never.
async fn misbehave(uri: Uri) -> Response {
    let kind = uri.path().trim_start_matches('/').split('/').next();
    match kind {
        Some("fail") => (StatusCode::INTERNAL_SERVER_ERROR, "database on fire\n").into_response(),
        Some("text") => "all good, trust me\n".into_response(),
        Some("wrong") => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status": "success", "data": {"alerts": [{"labels": 7}]}, "alerts": 7}"#,
        )
            .into_response(),
        Some("error") => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status": "error", "errorType": "unavailable", "error": "rule manager not ready"}"#,
        )
            .into_response(),
        Some("hang") => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "too late".into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// What reading `spec` through `client` failed with (panics if it did not fail).
async fn failure(client: &AlertsClient, spec: &GateSpec) -> AlertsError {
    match client.active(spec).await {
        Ok(alerts) => panic!("{spec:?} read fine: {alerts:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn unreadable_sources_make_the_gate_unknown() {
    let watch = Stopwatch::start();
    let served = Served::start(Router::new().fallback(misbehave)).await;
    let base = format!("http://{}", served.host());
    let closed = {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a port");
        let port = listener.local_addr().expect("local address").port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    };
    let timeout = Duration::from_millis(500);
    let client = AlertsClient::new(AlertsConfig {
        request_timeout: timeout,
        ..AlertsConfig::default()
    })
    .expect("alerts client");

    let cases: [(&str, String, &str, &str); 11] = [
        ("prometheus", closed.clone(), "connection", "unreachable"),
        ("alertmanager", closed, "connection", "unreachable"),
        ("prometheus", format!("{base}/fail"), "status", "HTTP 500"),
        ("alertmanager", format!("{base}/fail"), "status", "HTTP 500"),
        (
            "prometheus",
            format!("{base}/text"),
            "invalid_response",
            "malformed",
        ),
        (
            "alertmanager",
            format!("{base}/text"),
            "invalid_response",
            "malformed",
        ),
        (
            "prometheus",
            format!("{base}/wrong"),
            "invalid_response",
            "malformed",
        ),
        (
            "alertmanager",
            format!("{base}/wrong"),
            "invalid_response",
            "malformed",
        ),
        ("prometheus", format!("{base}/error"), "api", "unavailable"),
        (
            "prometheus",
            format!("{base}/hang"),
            "timeout",
            "no answer within",
        ),
        (
            "alertmanager",
            format!("{base}/hang"),
            "timeout",
            "no answer within",
        ),
    ];
    for (source, url, label, says) in cases {
        let spec = spec(source, &url, "{}", true);
        let case = format!("{source} at {url}");
        let started = Stopwatch::start();
        let error = failure(&client, &spec).await;
        let took = started.elapsed();
        assert_eq!(error.metric_label(), label, "{case}: {error}");
        let retryable = label != "invalid_response";
        assert_eq!(error.is_retryable(), retryable, "{case}: {error}");
        assert!(
            took < timeout + Duration::from_secs(5),
            "{case}: gave up only after {took:.2?}"
        );
        let GateVerdict::Unknown(why) = gate(&client, Some(&spec)).await else {
            panic!("{case}: the gate must be Unknown");
        };
        assert!(why.contains(says), "{case}: {why}");
        assert!(
            why.contains(&url),
            "{case}: the reason names the source: {why}"
        );
    }
    eprintln!("unknown-verdict test took {:.2?}", watch.elapsed());
}

/// The webhook route served in this process, with its trigger channel.
async fn serve_webhook(token: &str) -> (Served, mpsc::Receiver<AlertTrigger>) {
    let (tx, rx) = mpsc::channel(16);
    let served = Served::start(autobump::http::alertmanager_webhook(
        Some(token.to_owned()),
        tx,
    ))
    .await;
    (served, rx)
}

#[tokio::test]
async fn alertmanager_webhook_delivers_a_trigger() {
    let watch = Stopwatch::start();
    let token = "s3cret-token-for-tests";
    let (served, mut rx) = serve_webhook(token).await;
    let hook_url = format!("http://{}/webhooks/alertmanager", served.host());

    // Wrong or missing credentials: 401, and nothing reaches the controller.
    let http = http_client();
    let payload = json!({"status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "Forged", "job": "test"}}
    ]});
    for auth in [
        None,
        Some("Bearer wrong"),
        Some(token),
        Some("Basic czNjcmV0"),
    ] {
        let mut request = http.post(&hook_url).json(&payload);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION.as_str(), auth);
        }
        let response = request.send().await.expect("POST the webhook");
        assert_eq!(
            response.status(),
            reqwest::StatusCode::UNAUTHORIZED,
            "{auth:?}"
        );
    }
    // The right token with a body that is not a webhook payload: 400.
    let response = http
        .post(&hook_url)
        .bearer_auth(token)
        .body("{\"events\": []}")
        .send()
        .await
        .expect("POST the webhook");
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(rx.try_recv().is_err(), "refused webhooks trigger nothing");

    // A real Alertmanager posting to the route with the bearer token.
    let config = format!(
        "route:\n  receiver: autobump\n  group_by: ['alertname']\n  group_wait: 0s\n  \
         group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: autobump\n    webhook_configs:\n      - url: {hook_url}\n        \
         send_resolved: true\n        http_config:\n          authorization:\n            \
         credentials: {token}\n"
    );
    let alertmanager = Alertmanager::start(AlertmanagerConfig::raw(&config)).await;
    let target = MetricsTarget::start().await;
    target.set("autobump_test_up", 0.0);
    let prometheus = Prometheus::start(RULES, &[&target.host()], Some(&alertmanager.url())).await;

    let trigger = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no webhook within {WAIT:?}; Alertmanager log:\n{}",
                alertmanager.log_tail()
            )
        })
        .expect("the route keeps its sender");
    let delivered_after = watch.elapsed();
    assert_eq!(trigger.status, TriggerStatus::Firing);
    assert_eq!(trigger.receiver, "autobump");
    assert_eq!(trigger.firing_names(), ["AutobumpTestDown"]);
    assert_eq!(
        trigger.external_url.as_deref(),
        Some(alertmanager.url().as_str())
    );
    assert_eq!(trigger.group_labels["alertname"], "AutobumpTestDown");
    let alert = &trigger.alerts[0];
    assert_eq!(alert.labels["job"], "test");
    assert_eq!(alert.labels["instance"], target.host());
    assert_eq!(alert.annotations["summary"], "hook is down");
    assert!(
        alert.fingerprint.is_some() && alert.starts_at.is_some(),
        "{alert:?}"
    );
    assert!(
        alert
            .generator_url
            .as_deref()
            .is_some_and(|u| u.starts_with(&prometheus.url())),
        "{alert:?}"
    );
    let matchers = |s: &str| s.parse::<AlertMatchers>().expect("matchers");
    assert!(trigger.affects(&matchers(SELECT)));
    assert!(!trigger.affects(&matchers(r#"{job="other"}"#)));

    // It resolves through the same path.
    target.set("autobump_test_up", 1.0);
    let resolved = wait_until("a resolved webhook", WAIT, POLL, async || {
        match rx.try_recv() {
            Ok(t) if t.status == TriggerStatus::Resolved => Ok(t),
            Ok(t) => Err(format!("got {:?} {:?}", t.status, t.firing_names())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert!(resolved.firing_names().is_empty());
    assert!(
        !resolved.affects(&matchers("{}")),
        "resolved alerts trigger nothing"
    );
    eprintln!(
        "webhook test took {:.2?} (first trigger after {delivered_after:.2?})",
        watch.elapsed()
    );
}
