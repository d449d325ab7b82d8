//! Notifications against a receiver on 127.0.0.1 (`support/notify_receiver.rs`): the
//! Slack and webhook bodies as sent, the events filter, URLs from the environment,
//! files and an injected Secret resolver, retries (5xx, 429 with `Retry-After`, not
//! 4xx), and the webhook URL — a credential — never showing in an error.

#[path = "../support/notify_receiver.rs"]
mod notify_receiver;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use autobump::clock::ManualClock;
use autobump::notify::{
    Delivered, EnvLookup, Notification, Notifier, NotifierConfig, NotifyError, SecretError,
    SecretResolver,
};
use autobump::policy::v1alpha1::{
    NotifyEvent, NotifySpec, NotifyTarget, SecretKeySelector, SecretRef,
};
use futures::future::BoxFuture;
use notify_receiver::{Answer, NotifyReceiver};

/// The part of a Slack incoming-webhook URL that is the credential.
const SECRET_PATH: &str = "/services/T0AUTOBUMP/B0NOTIFY/s3cr3tT0kenXYZ";
const SECRET_TOKEN: &str = "s3cr3tT0kenXYZ";

fn config() -> NotifierConfig {
    NotifierConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        max_attempts: 3,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
    }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new("2026-11-21T10:30:00Z".parse().unwrap()))
}

/// An environment holding only `vars` (the process environment cannot be changed
/// safely from a multi-threaded test).
fn env(vars: &[(&str, &str)]) -> EnvLookup {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Arc::new(move |name: &str| {
        vars.get(name)
            .cloned()
            .ok_or(std::env::VarError::NotPresent)
    })
}

fn notifier(vars: &[(&str, &str)]) -> Notifier {
    Notifier::new(config(), clock())
        .expect("a notifier")
        .with_env(env(vars))
}

fn target(url: SecretRef, events: Vec<NotifyEvent>) -> NotifyTarget {
    NotifyTarget { url, events }
}

fn env_ref(name: &str) -> SecretRef {
    SecretRef::Env(name.parse().unwrap())
}

fn held() -> Notification {
    Notification::new(
        "payments-api/12",
        "payments-api",
        NotifyEvent::Held,
        "2026-11-21T10:29:00Z".parse().unwrap(),
        "no bump merges until the hold is lifted",
    )
    .with_namespace("payments")
    .with_who("alert:PaymentsErrors")
    .with_why("error rate > 5% <critical> & paging")
    .with_versions(Some("2.3.0".into()), "2.4.0")
    .with_link(
        "runbook",
        "https://runbooks.example.com/HeldByAlert?x=1&y=2",
    )
}

/// Every rendering of an error: its text, its chain and its Debug form.
fn renderings(e: &NotifyError) -> String {
    format!("{e} | {e:?} | {e:#?}")
}

fn assert_no_secret(e: &NotifyError, url: &str) {
    let text = renderings(e);
    assert!(
        !text.contains(SECRET_TOKEN) && !text.contains(url),
        "the webhook URL leaked into an error: {text}"
    );
}

#[tokio::test]
async fn slack_message_as_posted() {
    let receiver = NotifyReceiver::start(vec![]).await;
    let url = receiver.url(SECRET_PATH);
    let n = notifier(&[("SLACK_URL", &url)]);
    let spec = NotifySpec::Slack(target(env_ref("SLACK_URL"), vec![]));

    let delivered = n.deliver(&spec, &held()).await.expect("delivered");
    assert!(
        matches!(
            delivered,
            Delivered::Sent {
                status: 200,
                attempts: 1,
                ..
            }
        ),
        "{delivered:?}"
    );

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, SECRET_PATH);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("idempotency-key"),
        None,
        "Slack gets no idempotency key"
    );
    let body = r.json();
    assert_eq!(
        body["text"],
        "payments/payments-api held: 2.3.0 → 2.4.0: no bump merges until the hold is lifted"
    );
    assert_eq!(body["blocks"][0]["type"], "section");
    assert_eq!(body["blocks"][0]["text"]["type"], "mrkdwn");
    assert_eq!(body["blocks"][1]["type"], "context");
    let context = body["blocks"][1]["elements"][0]["text"].as_str().unwrap();
    assert!(context.contains("by alert:PaymentsErrors"), "{context}");
    assert!(
        context.contains("why: error rate &gt; 5% &lt;critical&gt; &amp; paging"),
        "Slack's three characters escaped: {context}"
    );
    assert!(
        context.contains("<https://runbooks.example.com/HeldByAlert?x=1&amp;y=2|runbook>"),
        "{context}"
    );
}

#[tokio::test]
async fn webhook_body_and_idempotency_key_with_url_from_a_file() {
    let receiver = NotifyReceiver::start(vec![]).await;
    let url = receiver.url("/hooks/autobump?token=s3cr3tT0kenXYZ");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("webhook-url");
    // Mounted secrets usually end in a newline.
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let spec = NotifySpec::Webhook(target(
        SecretRef::File(file.to_str().unwrap().to_owned()),
        vec![],
    ));

    let delivered = notifier(&[]).deliver(&spec, &held()).await.unwrap();
    assert!(matches!(delivered, Delivered::Sent { attempts: 1, .. }));

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/hooks/autobump?token=s3cr3tT0kenXYZ");
    assert_eq!(got[0].header("idempotency-key"), Some("payments-api/12"));
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(
        got[0].json(),
        serde_json::json!({
            "schema": "autobump.dev/notification/v1",
            "id": "payments-api/12",
            "event": "held",
            "policy": {"name": "payments-api", "namespace": "payments"},
            "at": "2026-11-21T10:29:00Z",
            "title": "payments/payments-api held: 2.3.0 → 2.4.0",
            "message": "no bump merges until the hold is lifted",
            "who": "alert:PaymentsErrors",
            "why": "error rate > 5% <critical> & paging",
            "versions": {"from": "2.3.0", "to": "2.4.0"},
            "links": [{"text": "runbook", "url": "https://runbooks.example.com/HeldByAlert?x=1&y=2"}],
        })
    );
}

#[tokio::test]
async fn only_the_events_a_target_asks_for_are_sent() {
    let receiver = NotifyReceiver::start(vec![]).await;
    let url = receiver.url(SECRET_PATH);
    let n = notifier(&[("SLACK_URL", &url)]);
    let spec = NotifySpec::Slack(target(
        env_ref("SLACK_URL"),
        vec![NotifyEvent::RolledBack, NotifyEvent::Held],
    ));
    let at = "2026-11-21T10:00:00Z".parse().unwrap();
    let opened = Notification::new("p/1", "p", NotifyEvent::Opened, at, "PR opened");
    let rolled = Notification::new("p/2", "p", NotifyEvent::RolledBack, at, "rolled back");

    assert_eq!(
        n.deliver(&spec, &opened).await.unwrap(),
        Delivered::NotSubscribed
    );
    assert!(receiver.received().is_empty());
    assert!(matches!(
        n.deliver(&spec, &rolled).await.unwrap(),
        Delivered::Sent { .. }
    ));
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].json()["text"]
            .as_str()
            .unwrap()
            .contains("rolled back")
    );
    // No event listed: every event.
    let all = NotifySpec::Slack(target(env_ref("SLACK_URL"), vec![]));
    assert!(matches!(
        n.deliver(&all, &opened).await.unwrap(),
        Delivered::Sent { .. }
    ));
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn missing_or_unusable_secrets_say_which_without_the_url() {
    let n = Notifier::new(config(), clock()).unwrap();
    // The real process environment: this variable is not set.
    let unset = "AUTOBUMP_NOTIFY_TEST_NEVER_SET_4D1F";
    let e = n
        .deliver(&NotifySpec::Slack(target(env_ref(unset), vec![])), &held())
        .await
        .unwrap_err();
    assert!(matches!(e, NotifyError::Secret { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "slack url from env {unset}: cannot read the URL: environment variable {unset} is not set"
        )
    );
    assert!(!e.is_retryable());
    assert_eq!(e.metric_label(), "secret");

    let e = n
        .deliver(
            &NotifySpec::Webhook(target(
                SecretRef::File("/nonexistent/autobump/webhook-url".into()),
                vec![],
            )),
            &held(),
        )
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("webhook url from file /nonexistent/autobump/webhook-url: cannot read the URL: reading /nonexistent/autobump/webhook-url:"),
        "{text}"
    );

    // A value that is not a URL is not repeated (it may be a token pasted wrongly).
    let bad = "hooks.slack.com/services/s3cr3tT0kenXYZ";
    let e = notifier(&[("SLACK_URL", bad)])
        .deliver(
            &NotifySpec::Slack(target(env_ref("SLACK_URL"), vec![])),
            &held(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, NotifyError::InvalidUrl { .. }), "{e:?}");
    assert_no_secret(&e, bad);

    let e = notifier(&[("SLACK_URL", "  \n")])
        .deliver(
            &NotifySpec::Slack(target(env_ref("SLACK_URL"), vec![])),
            &held(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().ends_with("it is empty"), "{e}");

    // secretKeyRef needs the cluster.
    let secret_ref = NotifySpec::Slack(target(
        SecretRef::SecretKeyRef(SecretKeySelector {
            name: "payments-slack".parse().unwrap(),
            key: "webhook-url".into(),
        }),
        vec![],
    ));
    let e = n.deliver(&secret_ref, &held()).await.unwrap_err();
    assert!(matches!(e, NotifyError::InClusterOnly { .. }), "{e:?}");
    assert!(e.to_string().contains("only the in-cluster"), "{e}");
    assert!(
        e.to_string()
            .contains("secret payments-slack key webhook-url")
    );
}

/// A Secret store standing in for the cluster.
struct Secrets {
    url: String,
}

impl SecretResolver for Secrets {
    fn resolve<'a>(
        &'a self,
        namespace: Option<&'a str>,
        selector: &'a SecretKeySelector,
    ) -> BoxFuture<'a, Result<String, SecretError>> {
        Box::pin(async move {
            match (namespace, selector.name.as_str(), selector.key.as_str()) {
                (Some("payments"), "payments-slack", "webhook-url") => Ok(self.url.clone()),
                _ => Err(SecretError {
                    detail: format!(
                        "no key {} in secret {:?}/{}",
                        selector.key, namespace, selector.name
                    ),
                    retryable: false,
                }),
            }
        })
    }
}

#[tokio::test]
async fn secret_key_refs_through_an_injected_resolver() {
    let receiver = NotifyReceiver::start(vec![]).await;
    let n = notifier(&[]).with_secret_resolver(Arc::new(Secrets {
        url: receiver.url(SECRET_PATH),
    }));
    let selector = |key: &str| {
        NotifySpec::Slack(target(
            SecretRef::SecretKeyRef(SecretKeySelector {
                name: "payments-slack".parse().unwrap(),
                key: key.into(),
            }),
            vec![],
        ))
    };
    assert!(matches!(
        n.deliver(&selector("webhook-url"), &held()).await.unwrap(),
        Delivered::Sent { .. }
    ));
    assert_eq!(receiver.received()[0].path, SECRET_PATH);
    let e = n.deliver(&selector("other"), &held()).await.unwrap_err();
    assert!(matches!(e, NotifyError::Secret { .. }), "{e:?}");
    assert!(e.to_string().contains("no key other"), "{e}");
}

#[tokio::test]
async fn a_server_error_is_retried_once_then_delivered() {
    let receiver = NotifyReceiver::start(vec![Answer::status(500).body("boom")]).await;
    let url = receiver.url(SECRET_PATH);
    let spec = NotifySpec::Webhook(target(env_ref("HOOK"), vec![]));
    let delivered = notifier(&[("HOOK", &url)])
        .deliver(&spec, &held())
        .await
        .unwrap();
    let Delivered::Sent {
        status, attempts, ..
    } = delivered
    else {
        panic!("{delivered:?}")
    };
    assert_eq!((status, attempts), (200, 2));
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    // The retry is the same notification: same body, same idempotency key.
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(got[1].header("idempotency-key"), Some("payments-api/12"));
}

#[tokio::test]
async fn too_many_requests_waits_as_retry_after_says() {
    let receiver = NotifyReceiver::start(vec![
        Answer::status(429)
            .header("retry-after", "1")
            .body("rate limited"),
    ])
    .await;
    let url = receiver.url(SECRET_PATH);
    let spec = NotifySpec::Slack(target(env_ref("SLACK_URL"), vec![]));
    let delivered = notifier(&[("SLACK_URL", &url)])
        .deliver(&spec, &held())
        .await
        .unwrap();
    assert_eq!(
        delivered,
        Delivered::Sent {
            status: 200,
            attempts: 2,
            waited: Duration::from_secs(1),
        },
        "one Retry-After wait, not the 20 ms back-off"
    );
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at.saturating_sub(got[0].at);
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_ends_the_delivery_retryably() {
    let receiver =
        NotifyReceiver::start(vec![Answer::status(429).header("retry-after", "3600")]).await;
    let url = receiver.url(SECRET_PATH);
    let spec = NotifySpec::Slack(target(env_ref("SLACK_URL"), vec![]));
    let e = notifier(&[("SLACK_URL", &url)])
        .deliver(&spec, &held())
        .await
        .unwrap_err();
    let NotifyError::Status {
        status,
        attempts,
        retry_after,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (*status, *attempts, *retry_after),
        (429, 1, Some(Duration::from_secs(3600)))
    );
    assert!(e.is_retryable());
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_the_url_stays_secret() {
    // Slack answers 404 `no_service` for a revoked webhook; this receiver also echoes
    // the path, as some servers do, to prove the body is redacted.
    let receiver = NotifyReceiver::start(vec![
        Answer::status(404).body(&format!("no_service: {SECRET_PATH} not found")),
    ])
    .await;
    let url = receiver.url(SECRET_PATH);
    let spec = NotifySpec::Slack(target(env_ref("SLACK_URL"), vec![]));
    let e = notifier(&[("SLACK_URL", &url)])
        .deliver(&spec, &held())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            NotifyError::Status {
                status: 404,
                attempts: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert_eq!(e.metric_label(), "status");
    assert_eq!(receiver.received().len(), 1, "a 404 is not retried");
    assert_no_secret(&e, &url);
    assert_eq!(
        e.to_string(),
        "slack url from env SLACK_URL: HTTP 404 after 1 attempt(s): no_service: [redacted] not found"
    );
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_and_the_url_stays_secret() {
    // A port that was just free: nothing listens there any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}{SECRET_PATH}");
    let spec = NotifySpec::Webhook(target(env_ref("HOOK"), vec![]));
    let n = notifier(&[("HOOK", &url)]);
    let e = n.deliver(&spec, &held()).await.unwrap_err();
    assert!(matches!(e, NotifyError::Connection { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("webhook url from env HOOK: unreachable: cannot connect"),
        "{e}"
    );
    assert!(e.is_retryable());
    assert_no_secret(&e, &url);
    // The notifier's own Debug form holds nothing secret either.
    let debug = format!("{n:?}");
    assert!(!debug.contains(SECRET_TOKEN), "{debug}");
}
