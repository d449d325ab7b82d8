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
    assert!(
        rx.try_recv().is_err(),
        "an unauthenticated push must not trigger anything"
    );
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

// ---------------------------------------------------------------------------------
// The resolver against a real registry.

use std::collections::BTreeSet;
use std::sync::Arc;

use autobump::clock::SystemClock;
use autobump::core::reference::ImageRef;
use autobump::policy::v1alpha1::ImagePolicy;
use autobump::registry::{RegistryClient, RegistryConfig};
use autobump::resolve::{Resolved, Resolver};

fn image_policy(yaml: &str) -> ImagePolicy {
    let docs = autobump::policy::yaml::parse_documents(yaml).unwrap();
    autobump::policy::yaml::from_node(&docs[0], &autobump::policy::yaml::Path::root()).unwrap()
}

fn refs(texts: &[String]) -> Vec<ImageRef> {
    texts.iter().map(|t| ImageRef::parse(t).unwrap()).collect()
}

fn client() -> RegistryClient {
    RegistryClient::new(RegistryConfig::default(), Arc::new(SystemClock)).unwrap()
}

#[tokio::test]
async fn semver_with_digest_pinning_resolves_and_a_quiet_poll_costs_one_request_per_image() {
    let registry = Registry::start().await;
    let host = registry.host();
    let first = registry
        .push_image("team/api", "1.0.0", ManifestKind::OciManifest, None)
        .await;
    for tag in ["1.1.0", "1.2.0-rc.1", "2.0.0", "latest"] {
        registry.retag("team/api", "1.0.0", tag).await;
    }
    let newest = registry
        .push_image(
            "team/api",
            "1.1.1",
            ManifestKind::OciManifest,
            Some("2026-11-20T10:00:00Z"),
        )
        .await;
    assert_ne!(first, newest);
    registry
        .push_image("team/worker", "1.0.0", ManifestKind::DockerV2, None)
        .await;

    let policy = image_policy(&format!(
        "prefix: {host}/team/\ntags: {{semver: {{range: \"^1\"}}}}\npinDigest: true\n"
    ));
    let current = refs(&[
        format!("{host}/team/api:1.0.0"),
        format!("{host}/team/worker:1.0.0"),
        format!("{host}/other/app:0.1.0"),
    ]);
    let resolver = Resolver::new(client());
    let bad = BTreeSet::new();
    let results = resolver.resolve(&policy, &current, &bad).await;
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].canonical, format!("{host}/team/api"));
    assert_eq!(
        results[0].outcome,
        Resolved::Bump {
            tag: "1.1.1".into(),
            digest: Some(newest.clone())
        }
    );
    assert_eq!(results[1].outcome, Resolved::UpToDate);

    // Nothing changed: one tag list per image, no manifest request (digest cached).
    let before = resolver.registry().stats().snapshot();
    let again = resolver.resolve(&policy, &current, &bad).await;
    let after = resolver.registry().stats().snapshot();
    assert_eq!(again, results);
    assert_eq!(after.tags - before.tags, 2);
    assert_eq!(after.manifest_head - before.manifest_head, 0);
    assert_eq!(after.manifest_get - before.manifest_get, 0);

    // A version recorded as bad is skipped; a push notification invalidates the cache.
    let bad: BTreeSet<_> = [(format!("{host}/team/api"), "1.1.1".to_owned())].into();
    let results = resolver.resolve(&policy, &current, &bad).await;
    assert_eq!(
        results[0].outcome,
        Resolved::Bump {
            tag: "1.1.0".into(),
            digest: Some(first.clone())
        }
    );
    resolver.invalidate(&format!("{host}/team/api"));
    let before = resolver.registry().stats().snapshot();
    resolver.resolve(&policy, &current, &bad).await;
    assert_eq!(
        resolver.registry().stats().snapshot().manifest_head - before.manifest_head,
        1
    );
}

#[tokio::test]
async fn consistent_date_sha_prefix_against_a_real_registry() {
    let registry = Registry::start().await;
    let host = registry.host();
    for image in ["prow/hook", "prow/tide"] {
        registry
            .push_image(image, "v20261101-aaaaaaa", ManifestKind::OciManifest, None)
            .await;
        registry
            .retag(image, "v20261101-aaaaaaa", "v20261110-bbbbbbb")
            .await;
        registry
            .retag(image, "v20261101-aaaaaaa", "v20261110-bbbbbbb-canary")
            .await;
    }
    // Only hook has the newest build; ties on 2026-11-10 do not exist.
    registry
        .retag("prow/hook", "v20261101-aaaaaaa", "v20261120-ccccccc")
        .await;

    let policy = image_policy(&format!(
        "prefix: {host}/prow/\ntags: {{dateSha: {{}}}}\nconsistent: true\n"
    ));
    let current = refs(&[
        format!("{host}/prow/hook:v20261101-aaaaaaa"),
        format!("{host}/prow/tide:v20261101-aaaaaaa"),
    ]);
    let resolver = Resolver::new(client());
    let results = resolver.resolve(&policy, &current, &BTreeSet::new()).await;
    let outcomes: Vec<_> = results.iter().map(|r| r.outcome.clone()).collect();
    let bump = Resolved::Bump {
        tag: "v20261110-bbbbbbb".into(),
        digest: None,
    };
    assert_eq!(outcomes, [bump.clone(), bump]);

    // A member the registry does not know makes the whole group undecidable.
    let mut with_missing = current.clone();
    with_missing.push(ImageRef::parse(&format!("{host}/prow/deck:v20261101-aaaaaaa")).unwrap());
    let results = resolver
        .resolve(&policy, &with_missing, &BTreeSet::new())
        .await;
    assert_eq!(results.len(), 3);
    for r in &results {
        match &r.outcome {
            Resolved::RegistryError { error, retryable } => {
                assert!(!retryable, "a 404 is permanent");
                assert!(error.contains("prow/deck"), "{error}");
            }
            other => panic!("expected a registry error, got {other:?}"),
        }
    }
}

fn autobump(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args(args)
        .env("DOCKER_CONFIG", "/nonexistent")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn the_resolve_command_reads_the_repo_and_asks_the_registry() {
    let registry = Registry::start().await;
    let host = registry.host();
    registry
        .push_image("team/api", "1.0.0", ManifestKind::OciManifest, None)
        .await;
    let newest = registry
        .push_image(
            "team/api",
            "1.4.0",
            ManifestKind::OciManifest,
            Some("2026-11-20T10:00:00Z"),
        )
        .await;
    registry.retag("team/api", "1.0.0", "2.0.0").await;

    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("apps/api")).unwrap();
    std::fs::write(
        repo.path().join("apps/api/deployment.yaml"),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          image: {host}/team/api:1.0.0 # pinned below\n        - name: proxy\n          image: docker.io/library/envoy:v1.30.1\n"
        ),
    )
    .unwrap();
    let policy = repo.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: api}}\nspec:\n  images:\n    - name: {host}/team/api\n      tags: {{semver: {{range: \"^1\"}}}}\n      pinDigest: true\n  source:\n    repo: https://example.com/infra.git\n    include: [\"apps/**/*.yaml\"]\n"
        ),
    )
    .unwrap();
    let dir = repo.path().to_str().unwrap();
    let policy = policy.to_str().unwrap();

    let (code, out, err) = autobump(&["resolve", "--policy", policy, "--repo-dir", dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!("{host}/team/api [semver] 1.0.0: -> 1.4.0@{newest}\n")
    );

    let (code, out, _) = autobump(&[
        "resolve",
        "--policy",
        policy,
        "--repo-dir",
        dir,
        "-o",
        "json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["outcome"], "bump");
    assert_eq!(v[0]["tag"], "1.4.0");
    assert_eq!(v[0]["digest"], newest.as_str());
    assert_eq!(v[0]["current"], "1.0.0");

    // No references under the directory: exit 1 and say so.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = autobump(&[
        "resolve",
        "--policy",
        policy,
        "--repo-dir",
        empty.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no references to the policy's images"),
        "{err}"
    );

    // The registry going away is a registry error, exit 1.
    drop(registry);
    let (code, out, _) = autobump(&["resolve", "--policy", policy, "--repo-dir", dir]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("registry error:"), "{out}");
}
