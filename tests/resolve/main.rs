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

fn now() -> chrono::DateTime<chrono::Utc> {
    autobump::clock::Clock::now(&SystemClock)
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
    let results = resolver.resolve(&policy, &current, &bad, now()).await;
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
    let again = resolver.resolve(&policy, &current, &bad, now()).await;
    let after = resolver.registry().stats().snapshot();
    assert_eq!(again, results);
    assert_eq!(after.tags - before.tags, 2);
    assert_eq!(after.manifest_head - before.manifest_head, 0);
    assert_eq!(after.manifest_get - before.manifest_get, 0);

    // A version recorded as bad is skipped; a push notification invalidates the cache.
    let bad: BTreeSet<_> = [(format!("{host}/team/api"), "1.1.1".to_owned())].into();
    let results = resolver.resolve(&policy, &current, &bad, now()).await;
    assert_eq!(
        results[0].outcome,
        Resolved::Bump {
            tag: "1.1.0".into(),
            digest: Some(first.clone())
        }
    );
    resolver.invalidate(&format!("{host}/team/api"));
    let before = resolver.registry().stats().snapshot();
    resolver.resolve(&policy, &current, &bad, now()).await;
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
    let results = resolver
        .resolve(&policy, &current, &BTreeSet::new(), now())
        .await;
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
        .resolve(&policy, &with_missing, &BTreeSet::new(), now())
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

// ---------------------------------------------------------------------------------
// Real-world tag schemes against a real registry (issue 13).

/// One row: an image, its tag policy, the deployed tag, the tags the registry has and
/// what `resolve` must say.
struct Scheme {
    image: &'static str,
    tags: &'static str,
    deployed: &'static str,
    present: &'static [&'static str],
    expect: &'static str,
}

const fn row(
    image: &'static str,
    tags: &'static str,
    deployed: &'static str,
    present: &'static [&'static str],
    expect: &'static str,
) -> Scheme {
    Scheme {
        image,
        tags,
        deployed,
        present,
        expect,
    }
}

const SEMVER: &str = "{semver: {}}";
const SEMVER_PRE: &str = "{semver: {prerelease: true}}";

/// Tag lists written by hand from the public tag pages: Docker Hub's official images
/// (hub.docker.com/_/<image>/tags: nginx, python, node, postgres, redis, golang,
/// alpine, ubuntu, debian, busybox, mysql, traefik, haproxy, httpd, rabbitmq,
/// memcached, sonarqube), grafana/grafana, bitnami/nginx, homeassistant/home-assistant
/// and Argo CD's quay.io/argoproj/argocd (a vendor `v1.2.3` scheme). Shortened to the
/// tags that matter for each row; every list keeps the floating aliases next to it.
const SCHEMES: &[Scheme] = &[
    // nginx: one version, four variants, floating aliases of every length.
    row("nginx", SEMVER, "1.25.3-alpine", NGINX, "-> 1.26.0-alpine"),
    row("nginx", SEMVER, "1.25.3", NGINX, "-> 1.26.0"),
    row(
        "nginx",
        SEMVER,
        "1.25.3-alpine-slim",
        NGINX,
        "-> 1.26.0-alpine-slim",
    ),
    row(
        "nginx",
        SEMVER,
        "1.25.3-bookworm",
        NGINX,
        "-> 1.26.0-bookworm",
    ),
    row("nginx", SEMVER, "1.25-alpine", NGINX, "-> 1.26-alpine"),
    row(
        "nginx",
        SEMVER_PRE,
        "1.26.0-alpine",
        NGINX,
        "-> 1.27.0-rc1-alpine",
    ),
    // python: slim-bookworm and alpine3.19 variants, rc/alpha glued to the version.
    row(
        "python",
        SEMVER,
        "3.11.6-slim-bookworm",
        PYTHON,
        "-> 3.12.1-slim-bookworm",
    ),
    row(
        "python",
        SEMVER_PRE,
        "3.12.1-slim-bookworm",
        PYTHON,
        "-> 3.13.0rc1-slim-bookworm",
    ),
    row(
        "python",
        SEMVER,
        "3.12.0-alpine3.19",
        PYTHON,
        "-> 3.12.1-alpine3.19",
    ),
    row("python", SEMVER, "3.11-slim", PYTHON, "-> 3.12-slim"),
    // node: alpine3.18 stays on alpine3.18.
    row(
        "node",
        "{semver: {range: \"^20\"}}",
        "20.10.0-alpine3.18",
        NODE,
        "-> 20.11.0-alpine3.18",
    ),
    row(
        "node",
        SEMVER,
        "20.10.0-alpine3.18",
        NODE,
        "-> 21.5.0-alpine3.18",
    ),
    row(
        "node",
        SEMVER,
        "20.10.0-bookworm-slim",
        NODE,
        "-> 20.11.0-bookworm-slim",
    ),
    row("node", SEMVER, "20-alpine3.18", NODE, "-> 21-alpine3.18"),
    // postgres: two-part versions, ranges on the numbers, rc glued to the major.
    row(
        "postgres",
        "{semver: {range: \"<17\"}}",
        "16.1-alpine",
        POSTGRES,
        "-> 16.2-alpine",
    ),
    row(
        "postgres",
        SEMVER,
        "16.1-alpine",
        POSTGRES,
        "-> 17.0-alpine",
    ),
    row(
        "postgres",
        "{semver: {range: \"<17\", prerelease: true}}",
        "16.1",
        POSTGRES,
        "-> 16.2",
    ),
    row(
        "postgres",
        SEMVER,
        "16.1-bookworm",
        POSTGRES,
        "-> 16.2-bookworm",
    ),
    // redis: `-rc2` between the version and the variant.
    row("redis", SEMVER, "7.2.3-alpine", REDIS, "-> 7.2.4-alpine"),
    row(
        "redis",
        SEMVER_PRE,
        "7.2-alpine",
        REDIS,
        "-> 7.4-rc2-alpine",
    ),
    row("redis", SEMVER, "7.2.3", REDIS, "-> 7.2.4"),
    // golang: `1.22rc1` is a two-part pre-release; Windows variants.
    row(
        "golang",
        SEMVER,
        "1.21.5-bookworm",
        GOLANG,
        "-> 1.21.6-bookworm",
    ),
    row(
        "golang",
        SEMVER,
        "1.21.5-alpine3.19",
        GOLANG,
        "-> 1.21.6-alpine3.19",
    ),
    row("golang", SEMVER, "1.21.5", GOLANG, "-> 1.22.0"),
    row("golang", SEMVER_PRE, "1.22rc1", GOLANG, "-> 1.22rc2"),
    row(
        "golang",
        SEMVER,
        "1.21.5-windowsservercore-ltsc2022",
        GOLANG,
        "-> 1.21.6-windowsservercore-ltsc2022",
    ),
    // alpine: three, two and one part (edge snapshots are dates).
    row("alpine", SEMVER, "3.18.5", ALPINE, "-> 3.19.1"),
    row("alpine", SEMVER, "3.18", ALPINE, "-> 3.19"),
    row("alpine", SEMVER, "20231219", ALPINE, "-> 20240126"),
    // ubuntu: numbered releases with semver, dated codename builds with a regex.
    row(
        "ubuntu",
        "{semver: {range: \"^22\"}}",
        "22.04",
        UBUNTU,
        "-> 22.10",
    ),
    row(
        "ubuntu",
        "{regex: {pattern: '^jammy-(?P<d>[0-9]{8})$', extract: d}}",
        "jammy-20240111",
        UBUNTU,
        "-> jammy-20240125",
    ),
    // debian: dated slim builds with a regex; point releases with semver.
    row(
        "debian",
        "{regex: {pattern: '^bookworm-(?P<d>[0-9]{8})-slim$', extract: d}}",
        "bookworm-20240110-slim",
        DEBIAN,
        "-> bookworm-20240130-slim",
    ),
    row("debian", SEMVER, "12.4-slim", DEBIAN, "-> 12.5-slim"),
    // busybox: the libc is the variant.
    row("busybox", SEMVER, "1.36.1-musl", BUSYBOX, "-> 1.37.0-musl"),
    row(
        "busybox",
        SEMVER,
        "1.36.1-glibc",
        BUSYBOX,
        "-> 1.37.0-glibc",
    ),
    row("busybox", SEMVER, "1.36.1-uclibc", BUSYBOX, "up to date"),
    // mysql: the 8.0 LTS line by range; oracle and debian variants.
    row(
        "mysql",
        "{semver: {range: \"~8.0\"}}",
        "8.0.35",
        MYSQL,
        "-> 8.0.36",
    ),
    row(
        "mysql",
        "{semver: {range: \"~8.0\"}}",
        "8.0.35-debian",
        MYSQL,
        "-> 8.0.36-debian",
    ),
    row("mysql", SEMVER, "8.2.0-oracle", MYSQL, "-> 8.3.0-oracle"),
    // traefik: `v` is part of the series.
    row("traefik", SEMVER, "v2.10.7", TRAEFIK, "-> v2.11.0"),
    row("traefik", SEMVER_PRE, "v2.10.7", TRAEFIK, "-> v3.0.0-rc1"),
    row("traefik", SEMVER, "2.10.7", TRAEFIK, "-> 2.11.0"),
    // grafana: the ubuntu variant.
    row(
        "grafana",
        SEMVER,
        "10.2.3-ubuntu",
        GRAFANA,
        "-> 10.3.1-ubuntu",
    ),
    row("grafana", SEMVER, "10.2.3", GRAFANA, "-> 10.3.1"),
    // vendors: v-prefixed releases with rcs; calendar versions with glued betas.
    row("argocd", SEMVER, "v2.9.3", ARGOCD, "-> v2.10.0"),
    row(
        "home-assistant",
        SEMVER,
        "2024.1.5",
        HOME_ASSISTANT,
        "-> 2024.2.0",
    ),
    row(
        "home-assistant",
        SEMVER_PRE,
        "2024.1.6",
        HOME_ASSISTANT,
        "-> 2024.2.0",
    ),
    row(
        "calendar",
        SEMVER,
        "2024.01.15",
        &["2024.01.15", "2024.01.22", "2024.02.05", "stable"],
        "-> 2024.02.05",
    ),
    // sonarqube: four parts and an edition.
    row(
        "sonarqube",
        SEMVER,
        "10.3.0.82913-community",
        SONARQUBE,
        "-> 10.4.0.87286-community",
    ),
    // bitnami: revision counters need a regex (under semver each revision is a series).
    row(
        "bitnami-nginx",
        "{regex: {pattern: '^1\\.25\\.3-debian-12-r(?P<rev>[0-9]+)$', extract: rev}}",
        "1.25.3-debian-12-r5",
        BITNAMI,
        "-> 1.25.3-debian-12-r10",
    ),
    row(
        "bitnami-nginx",
        SEMVER,
        "1.25.3-debian-12-r5",
        BITNAMI,
        "up to date",
    ),
    // more official images with variants
    row(
        "haproxy",
        SEMVER,
        "2.9.1-alpine",
        &[
            "2.9.1-alpine",
            "2.9.2-alpine",
            "2.9.2",
            "2.9-alpine",
            "lts-alpine",
        ],
        "-> 2.9.2-alpine",
    ),
    row(
        "httpd",
        SEMVER,
        "2.4.58-alpine",
        &[
            "2.4.58-alpine",
            "2.4.59-alpine",
            "2.4.59",
            "2.4-alpine",
            "alpine",
        ],
        "-> 2.4.59-alpine",
    ),
    row(
        "rabbitmq",
        SEMVER,
        "3.12.11-management-alpine",
        RABBITMQ,
        "-> 3.12.12-management-alpine",
    ),
    row(
        "rabbitmq",
        SEMVER_PRE,
        "3.12.12-management-alpine",
        RABBITMQ,
        "-> 3.13.0-rc.4-management-alpine",
    ),
    row(
        "memcached",
        SEMVER,
        "1.6.22-alpine3.19",
        &[
            "1.6.22-alpine3.19",
            "1.6.23-alpine3.19",
            "1.6.23-alpine",
            "1.6-alpine3.19",
            "alpine3.19",
        ],
        "-> 1.6.23-alpine3.19",
    ),
];

const NGINX: &[&str] = &[
    "1.25.3",
    "1.25.3-alpine",
    "1.25.3-alpine-slim",
    "1.25.3-bookworm",
    "1.25-alpine",
    "1.26.0",
    "1.26.0-alpine",
    "1.26.0-alpine-slim",
    "1.26.0-bookworm",
    "1.26",
    "1.26-alpine",
    "1",
    "1-alpine",
    "1.27.0-rc1-alpine",
    "mainline",
    "mainline-alpine",
    "alpine",
    "latest",
    "stable-alpine-slim",
];
const PYTHON: &[&str] = &[
    "3.11.6-slim-bookworm",
    "3.12.0-alpine3.19",
    "3.12.1",
    "3.12.1-slim",
    "3.12.1-slim-bookworm",
    "3.12.1-alpine3.19",
    "3.12.1-alpine3.18",
    "3.12-slim",
    "3.11-slim",
    "3.13.0rc1-slim-bookworm",
    "3.13.0a2-alpine3.19",
    "slim-bookworm",
    "3-slim",
    "alpine",
];
const NODE: &[&str] = &[
    "20.10.0-alpine3.18",
    "20.11.0",
    "20.11.0-alpine3.18",
    "20.11.0-alpine3.19",
    "20.11.0-bookworm-slim",
    "20.10.0-bookworm-slim",
    "20-alpine3.18",
    "21-alpine3.18",
    "21.5.0-alpine3.18",
    "lts-alpine3.18",
    "iron-bookworm-slim",
    "current-alpine",
];
const POSTGRES: &[&str] = &[
    "16.1-alpine",
    "16.2-alpine",
    "16.1",
    "16.2",
    "16-alpine",
    "17rc1-alpine",
    "17rc1",
    "17.0-alpine",
    "16.1-bookworm",
    "16.2-bookworm",
    "16.2-bullseye",
    "alpine3.19",
];
const REDIS: &[&str] = &[
    "7.2.3",
    "7.2.3-alpine",
    "7.2.4",
    "7.2.4-alpine",
    "7.2.4-alpine3.19",
    "7.2-alpine",
    "7.4-rc2-alpine",
    "7.4-rc2",
    "7-alpine",
    "alpine",
];
const GOLANG: &[&str] = &[
    "1.21.5",
    "1.21.5-bookworm",
    "1.21.6",
    "1.21.6-bookworm",
    "1.21.6-alpine3.19",
    "1.21.5-alpine3.19",
    "1.21-bookworm",
    "1.22rc1",
    "1.22rc2",
    "1.22rc1-bookworm",
    "1.22.0",
    "1.21.6-windowsservercore-ltsc2022",
    "1.21.5-windowsservercore-ltsc2022",
    "bookworm",
];
const ALPINE: &[&str] = &[
    "3.18.5", "3.18", "3.19.0", "3.19.1", "3.19", "3", "edge", "latest", "20231219", "20240126",
];
const UBUNTU: &[&str] = &[
    "22.04",
    "22.10",
    "23.10",
    "24.04",
    "jammy",
    "jammy-20240111",
    "jammy-20240125",
    "noble-20240127",
    "latest",
];
const DEBIAN: &[&str] = &[
    "bookworm-20240110-slim",
    "bookworm-20240130-slim",
    "bookworm-20240130",
    "trixie-20240130-slim",
    "12.4-slim",
    "12.5-slim",
    "12.5",
    "12-slim",
    "bookworm-slim",
];
const BUSYBOX: &[&str] = &[
    "1.36.1-musl",
    "1.36.1-glibc",
    "1.36.1-uclibc",
    "1.37.0-musl",
    "1.37.0-glibc",
    "1.37-musl",
    "musl",
    "1.37.0",
];
const MYSQL: &[&str] = &[
    "8.0.35",
    "8.0.35-debian",
    "8.0.36",
    "8.0.36-debian",
    "8.0.36-oracle",
    "8.0",
    "8.2.0",
    "8.2.0-oracle",
    "8.3.0",
    "8.3.0-oracle",
    "innovation",
    "lts",
];
const TRAEFIK: &[&str] = &[
    "v2.10.7",
    "2.10.7",
    "v2.11.0",
    "2.11.0",
    "v2.11",
    "v3.0.0-beta5",
    "v3.0.0-rc1",
    "latest",
    "v2.11.0-windowsservercore-1809",
];
const GRAFANA: &[&str] = &[
    "10.2.3",
    "10.2.3-ubuntu",
    "10.3.0-ubuntu",
    "10.3.1",
    "10.3.1-ubuntu",
    "main-ubuntu",
    "latest-ubuntu",
];
const ARGOCD: &[&str] = &["v2.9.3", "v2.9.5", "v2.10.0-rc1", "v2.10.0", "latest"];
const HOME_ASSISTANT: &[&str] = &[
    "2024.1.5",
    "2024.1.6",
    "2024.2.0b1",
    "2024.2.0b3",
    "2024.2.0",
    "stable",
    "beta",
    "rc",
];
const SONARQUBE: &[&str] = &[
    "10.3.0.82913-community",
    "10.4.0.87286-community",
    "10.4.0.87286-developer",
    "10.4-community",
    "community",
    "lts-community",
];
const BITNAMI: &[&str] = &[
    "1.25.3-debian-12-r5",
    "1.25.3-debian-12-r6",
    "1.25.3-debian-12-r10",
    "1.25.4-debian-12-r0",
    "1.25.3",
    "latest",
];
const RABBITMQ: &[&str] = &[
    "3.12.11-management-alpine",
    "3.12.12-management-alpine",
    "3.12.12-management",
    "3.12.12-alpine",
    "3.13.0-rc.4-management-alpine",
    "3.12-management-alpine",
    "management-alpine",
];

/// Pushes one image to `repo` under the first tag and retags it with the others.
async fn push_tags(registry: &Registry, repo: &str, tags: &[&str]) {
    registry
        .push_image(repo, tags[0], ManifestKind::OciManifest, None)
        .await;
    for tag in &tags[1..] {
        registry.retag(repo, tags[0], tag).await;
    }
}

#[tokio::test]
async fn real_world_tag_schemes_resolve_within_their_series() {
    let registry = Registry::start().await;
    let host = registry.host();
    let resolver = Resolver::new(client());
    let now = autobump::clock::Clock::now(&SystemClock);
    let mut pushed = BTreeSet::new();
    let mut failures = Vec::new();
    for (i, s) in SCHEMES.iter().enumerate() {
        let repo = format!("hub/{}", s.image);
        if pushed.insert(repo.clone()) {
            push_tags(&registry, &repo, s.present).await;
        } else {
            // Rows sharing an image share its tag list.
            for tag in s.present {
                if !registry.tags(&repo).await.iter().any(|t| t == tag) {
                    registry.retag(&repo, s.present[0], tag).await;
                }
            }
        }
        let policy = image_policy(&format!("name: {host}/{repo}\ntags: {}\n", s.tags));
        let current = refs(&[format!("{host}/{repo}:{}", s.deployed)]);
        let out = resolver
            .resolve(&policy, &current, &BTreeSet::new(), now)
            .await;
        let got: Vec<String> = out.iter().map(|r| r.outcome.describe()).collect();
        if got != [s.expect] {
            failures.push(format!(
                "row {i}: {}:{} ({}): expected {:?}, got {got:?}",
                s.image, s.deployed, s.tags, s.expect
            ));
        }
    }
    println!(
        "real-world tag schemes: {} of {} rows pass",
        SCHEMES.len() - failures.len(),
        SCHEMES.len()
    );
    assert!(SCHEMES.len() >= 40);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `minAge` against a real registry: build times from the image config, 1970 and
/// missing build times counted from the first listing, configs read only for
/// candidates newer than the deployed version and only once.
#[tokio::test]
async fn min_age_reads_build_times_and_never_trusts_a_1970_one() {
    use chrono::TimeDelta;
    let registry = Registry::start().await;
    let host = registry.host();
    let now = autobump::clock::Clock::now(&SystemClock);
    let ago = |hours: i64| (now - TimeDelta::hours(hours)).to_rfc3339();
    let push = |tag: &'static str, created: Option<String>| {
        let registry = &registry;
        async move {
            registry
                .push_image(
                    "hub/nginx",
                    tag,
                    ManifestKind::OciManifest,
                    created.as_deref(),
                )
                .await;
        }
    };
    push("1.25.3-alpine", Some(ago(24 * 60))).await;
    push("1.25.4-alpine", Some(ago(24 * 10))).await;
    push("1.26.0-alpine", Some(ago(5))).await;
    push("1.26.0", Some(ago(24 * 30))).await;
    // Reproducible builds: ko/Bazel/nix write 1970, others leave `created` out.
    push("1.24.0-ko", Some("1970-01-01T00:00:00Z".into())).await;
    push("1.25.0-ko", Some("1970-01-01T00:00:00Z".into())).await;
    push("1.24.0-nix", None).await;
    push("1.25.0-nix", None).await;

    let policy = image_policy(&format!(
        "name: {host}/hub/nginx\ntags: {{semver: {{}}}}\nminAge: 72h\n"
    ));
    let current = refs(&[
        format!("{host}/hub/nginx:1.25.3-alpine"),
        format!("{host}/hub/nginx:1.24.0-ko"),
        format!("{host}/hub/nginx:1.24.0-nix"),
    ]);
    let resolver = Resolver::new(client());
    let describe = |out: &[autobump::resolve::Resolution]| -> Vec<String> {
        out.iter()
            .map(|r| format!("{}: {}", r.current, r.outcome.describe()))
            .collect()
    };
    let before = resolver.registry().stats().snapshot();
    let out = resolver
        .resolve(&policy, &current, &BTreeSet::new(), now)
        .await;
    // 1.26.0-alpine is 5h old: the 10-day-old 1.25.4-alpine is taken meanwhile.
    assert_eq!(
        describe(&out),
        [
            "1.25.3-alpine: -> 1.25.4-alpine",
            "1.24.0-ko: waiting: 1.25.0-ko is 0s old, minAge 72h",
            "1.24.0-nix: waiting: 1.25.0-nix is 0s old, minAge 72h",
        ]
    );
    let first = resolver.registry().stats().snapshot();
    // Configs of the three series' newer candidates only (1.26.0 and the deployed
    // tags are never read): one manifest and one blob each.
    assert_eq!(first.manifest_get - before.manifest_get, 4, "{first:?}");
    assert_eq!(first.blob - before.blob, 4, "{first:?}");

    // A quiet poll reads no config again; 73 hours later the first-listed times
    // make the reproducible builds old enough.
    let later = now + TimeDelta::hours(73);
    let out = resolver
        .resolve(&policy, &current, &BTreeSet::new(), later)
        .await;
    assert_eq!(
        describe(&out),
        [
            "1.25.3-alpine: -> 1.26.0-alpine",
            "1.24.0-ko: -> 1.25.0-ko",
            "1.24.0-nix: -> 1.25.0-nix",
        ]
    );
    let second = resolver.registry().stats().snapshot();
    assert_eq!(second.manifest_get, first.manifest_get, "{second:?}");
    assert_eq!(second.blob, first.blob, "{second:?}");

    // A fresh start (a new resolver) judges real build times at once, and waits
    // minAge again for the reproducible ones.
    let fresh = Resolver::new(client());
    let out = fresh
        .resolve(&policy, &current, &BTreeSet::new(), later)
        .await;
    assert_eq!(
        describe(&out),
        [
            "1.25.3-alpine: -> 1.26.0-alpine",
            "1.24.0-ko: waiting: 1.25.0-ko is 0s old, minAge 72h",
            "1.24.0-nix: waiting: 1.25.0-nix is 0s old, minAge 72h",
        ]
    );
}

#[tokio::test]
async fn the_resolve_command_says_what_it_waits_for() {
    use chrono::TimeDelta;
    let registry = Registry::start().await;
    let host = registry.host();
    let now = autobump::clock::Clock::now(&SystemClock);
    let ago = |hours: i64| (now - TimeDelta::hours(hours)).to_rfc3339();
    for (tag, hours) in [
        ("1.25.3-alpine", 900),
        ("1.26.0-alpine", 5),
        ("1.26.0", 900),
    ] {
        registry
            .push_image(
                "hub/nginx",
                tag,
                ManifestKind::OciManifest,
                Some(&ago(hours)),
            )
            .await;
    }
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("deployment.yaml"),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: {host}/hub/nginx:1.25.3-alpine\n"
        ),
    )
    .unwrap();
    let policy = repo.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: web}}\nspec:\n  images:\n    - name: {host}/hub/nginx\n      tags: {{semver: {{}}}}\n      minAge: 72h\n  source:\n    repo: https://example.com/infra.git\n"
        ),
    )
    .unwrap();
    let (code, out, err) = autobump(&[
        "resolve",
        "--policy",
        policy.to_str().unwrap(),
        "--repo-dir",
        repo.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!(
            "{host}/hub/nginx [N.N.N-alpine] 1.25.3-alpine: waiting: 1.26.0-alpine is 5h old, minAge 72h\n"
        )
    );
}

/// Knative pins its release images by digest alone (github.com/knative/serving
/// releases, `serving-core.yaml`: `image: gcr.io/knative-releases/knative.dev/
/// serving/cmd/controller@sha256:…`). With `pinDigest`, such a reference moves from a
/// digest the registry lists under a tag to the newest tag's digest, in the same
/// form; a digest no tag carries is reported, never guessed.
#[tokio::test]
async fn digest_only_references_move_to_the_newest_tags_digest() {
    use autobump::core::rewrite::{ImageSelector, Plan, SeriesRule, Target};
    use autobump::policy::v1alpha1::RewriteMode;

    let registry = Registry::start().await;
    let host = registry.host();
    let mut digests = Vec::new();
    for (i, tag) in ["v1.15.0", "v1.15.1", "v1.15.2"].iter().enumerate() {
        let created = format!("2026-11-0{}T10:00:00Z", i + 1);
        digests.push(
            registry
                .push_image(
                    "knative/controller",
                    tag,
                    ManifestKind::OciManifest,
                    Some(&created),
                )
                .await,
        );
    }
    registry
        .push_image(
            "knative/webhook",
            "v1.15.2",
            ManifestKind::OciManifest,
            None,
        )
        .await;
    let unknown = format!("sha256:{}", "c".repeat(64));
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: controller\n  namespace: knative-serving\nspec:\n  template:\n    spec:\n      containers:\n        - name: controller\n          image: {host}/knative/controller@{old}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: webhook\nspec:\n  template:\n    spec:\n      containers:\n        - name: webhook\n          image: {host}/knative/webhook@{unknown}\n",
        old = digests[1]
    );
    let policy = image_policy(&format!(
        "prefix: {host}/knative/\ntags: {{semver: {{}}}}\npinDigest: true\n"
    ));
    let found = autobump::core::rewrite::scan(&manifest, RewriteMode::Structured);
    let references: Vec<ImageRef> = found.into_iter().map(|f| f.reference).collect();
    let resolver = Resolver::new(client());
    let results = resolver
        .resolve(&policy, &references, &BTreeSet::new(), now())
        .await;
    assert_eq!(results.len(), 2, "{results:?}");
    let (controller, webhook) = (&results[0], &results[1]);
    assert_eq!(
        controller.outcome,
        Resolved::Bump {
            tag: "v1.15.2".into(),
            digest: Some(digests[2].clone())
        }
    );
    assert_eq!(controller.current, "v1.15.1");
    assert_eq!(controller.digest_tags.len(), 1);
    assert_eq!(controller.digest_tags[0].tag, "v1.15.1");
    assert_eq!(webhook.series, "digest");
    assert!(
        matches!(&webhook.outcome, Resolved::NoCandidate { reason } if reason.contains(&unknown)),
        "{webhook:?}"
    );

    // What a bump does with it: targets from the resolutions, digests through the plan.
    let targets: Vec<Target> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            Resolved::Bump { tag, digest } => Some(Target {
                image: ImageSelector::Repository(r.image.clone()),
                tag: tag.clone(),
                digest: digest.clone(),
                rule: SeriesRule::Policy(policy.tags.clone()),
            }),
            _ => None,
        })
        .collect();
    let plan = Plan::new(&targets)
        .unwrap()
        .with_digest_tags(results.iter().flat_map(|r| r.digest_tags.clone()));
    let out = plan.rewrite("serving-core.yaml", &manifest, RewriteMode::Structured);
    assert_eq!(out.text, manifest.replace(&digests[1], &digests[2]));
    assert_eq!(out.changes.len(), 1);
    let tags = out.changes[0].digest_tags.as_ref().unwrap();
    assert_eq!(
        (tags.old.as_str(), tags.new.as_str()),
        ("v1.15.1", "v1.15.2")
    );
    let message = autobump::repo::commit_message("knative", &out.changes);
    assert!(message.contains("(tags v1.15.1 -> v1.15.2)"), "{message}");
}
