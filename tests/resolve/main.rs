//! Version resolution end to end against a real registry: push notifications that
//! trigger re-checks, and (with the registry client) `autobump resolve`.

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use autobump::http::{Recheck, registry_webhook};
use support::registry::{ManifestKind, Registry};
use tokio::sync::mpsc;

/// Serves `router` on an ephemeral 127.0.0.1 port; returns its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_push_to_the_real_registry_triggers_a_recheck() {
    let (tx, mut rx) = mpsc::channel(16);
    let hook = serve(registry_webhook(None, tx)).await;
    let registry = Registry::options()
        .notify(&format!("{hook}/webhooks/registry"))
        .start()
        .await;

    registry
        .push_image("team/app", "v1.2.3", ManifestKind::OciManifest, None)
        .await;
    let recheck = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no notification within 10 s")
        .unwrap();
    assert_eq!(
        recheck,
        Recheck {
            registry: registry.host(),
            repository: "team/app".into(),
            tag: Some("v1.2.3".into()),
        }
    );
    // Blob uploads of the same push are not re-checks of their own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(more) = rx.try_recv() {
        assert_eq!(more.repository, "team/app");
        assert_eq!(more.tag.as_deref(), Some("v1.2.3"), "{more:?}");
    }
}

#[tokio::test]
async fn the_registry_webhook_checks_its_bearer_token() {
    let (tx, mut rx) = mpsc::channel(16);
    let hook = serve(registry_webhook(Some("s3cret".into()), tx)).await;
    let client = support::http_client();
    let body = serde_json::json!({"events": [{
        "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "repository": "team/app", "url": "http://127.0.0.1:5000/v2/team/app/manifests/sha256:00",
                   "tag": "v2"}
    }]})
    .to_string();
    let post = |auth: Option<&str>| {
        let mut request = client
            .post(format!("{hook}/webhooks/registry"))
            .body(body.clone());
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        request.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("Bearer wrong")).await.unwrap().status(), 401);
    assert!(rx.try_recv().is_err(), "an unauthenticated push must not trigger anything");
    assert_eq!(post(Some("Bearer s3cret")).await.unwrap().status(), 200);
    assert_eq!(rx.recv().await.unwrap().tag.as_deref(), Some("v2"));
    let bad = client
        .post(format!("{hook}/webhooks/registry"))
        .header("Authorization", "Bearer s3cret")
        .body("{\"not\": \"events\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
