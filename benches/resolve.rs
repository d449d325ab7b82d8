//! Resolving 200 images against a real local registry (docker-registry on 127.0.0.1):
//! wall time of a cold poll (tag lists + digests for pinning) and of a quiet poll
//! (nothing changed), and the registry requests each costs per image. Then one image
//! with 2,000 tags in 30 variants (Docker Hub style: `1.25.3-alpine`,
//! `3.12-slim-bookworm`, ...) with 30 references, one per variant: a resolve and the
//! selection alone. Last, what a credential helper costs: 10 images behind a token
//! service (the real docker-registry with `auth.token`), the login from a
//! `credsStore` helper (a `docker-credential-*` script), polled while the 300 s
//! tokens are valid and once after they expired: requests, token requests and helper
//! runs per poll.
//!
//! Run: `cargo bench --bench resolve` (or `scripts/bench`). Prints figures; asserts
//! nothing about time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use autobump::clock::{Stopwatch, SystemClock};
use autobump::core::reference::ImageRef;
use autobump::policy::v1alpha1::ImagePolicy;
use autobump::registry::{RegistryClient, RegistryConfig};
use autobump::resolve::{Resolved, Resolver};
use support::registry::{ManifestKind, Registry};

const IMAGES: usize = 200;

/// The manifest type every bench image is pushed as.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::main]
async fn main() {
    let registry = Registry::start().await;
    let host = registry.host();
    populate(&registry).await;
    measure(&host).await;
    variants(&registry, &host).await;
    credential_helper().await;
}

/// Requests, token requests and helper runs per poll of 10 images whose login comes
/// from a credential helper: the first poll, idle polls while the tokens are valid,
/// and the poll after they expired (a `ManualClock` moves time; the helper's
/// password outlives the tokens, as ECR's 12-hour ones do Docker Hub's 5 minutes).
async fn credential_helper() {
    use autobump::clock::{Clock, ManualClock};
    use autobump::registry::{Credentials, Registry as _, StatsSnapshot};
    use support::cred_helper::{Behaviour, FakeHelper};
    use support::token::{TokenIssuer, push_small_image, start_token_registry};

    const REPOS: usize = 10;
    const IDLE_POLLS: u32 = 10;
    let issuer = TokenIssuer::start("robot", "unused").await;
    issuer.accept_expiring_passwords("bench-secret-");
    let registry = start_token_registry(&issuer).await;
    let http = support::http_client();
    let mut images = Vec::new();
    for i in 0..REPOS {
        let repo = format!("team/app{i}");
        let token = issuer.token_for(&[&format!("repository:{repo}:pull,push")]);
        let bearer = format!("Bearer {token}");
        push_small_image(
            &http,
            &registry.url(),
            Some(&bearer),
            &repo,
            "v1.0.0",
            "2024-01-01T00:00:00Z",
        )
        .await;
        images.push(ImageRef::parse(&format!("{}/{repo}", registry.host())).unwrap());
    }
    let helper = FakeHelper::new(
        "bench",
        &Behaviour::ExpiringPassword {
            user: "robot".into(),
            prefix: "bench-secret-".into(),
            lifetime_secs: 3600,
        },
    );
    let credentials = Credentials::anonymous().with_store("bench");
    let clock = Arc::new(ManualClock::new(autobump::clock::SystemClock.now()));
    let client = RegistryClient::new(
        RegistryConfig::default()
            .credentials(credentials)
            .helper_path(helper.path_env()),
        Arc::clone(&clock) as Arc<dyn Clock>,
    )
    .unwrap();
    let poll = || async {
        for image in &images {
            client.tags(image).await.unwrap();
            client.digest(image, "v1.0.0").await.unwrap();
        }
        client.stats().snapshot()
    };
    let line = |what: &str, before: StatsSnapshot, after: StatsSnapshot, polls: u32| {
        // Counts of a few dozen: exact in an f64.
        let per = |n: u64| f64::from(u32::try_from(n).unwrap_or(u32::MAX)) / f64::from(polls);
        println!(
            "credential helper: {what}: {:.1} requests per poll of {REPOS} images ({:.1} token \
             requests), {:.1} helper runs",
            per(after.requests() - before.requests()),
            per(after.token - before.token),
            per(after.helper_calls - before.helper_calls),
        );
    };
    let start = client.stats().snapshot();
    let first = poll().await;
    line("first poll", start, first, 1);
    let mut idle = first;
    for _ in 0..IDLE_POLLS {
        clock.advance(chrono::Duration::seconds(20));
        idle = poll().await;
    }
    line("idle polls, tokens valid", first, idle, IDLE_POLLS);
    clock.advance(chrono::Duration::seconds(300));
    let expired = poll().await;
    line("poll after the tokens expired", idle, expired, 1);
    println!(
        "credential helper: {} helper runs and {} token requests in {} polls",
        helper.calls(),
        issuer.hits(),
        IDLE_POLLS + 2
    );
}

/// The variant suffixes of the many-variants image (`""`: plain).
const SUFFIXES: [&str; 15] = [
    "",
    "alpine",
    "alpine-slim",
    "bookworm",
    "slim-bookworm",
    "bullseye",
    "slim-bullseye",
    "alpine3.18",
    "alpine3.19",
    "musl",
    "glibc",
    "uclibc",
    "ubuntu",
    "windowsservercore-ltsc2022",
    "perl",
];

/// The OCI manifest of `bench/base:1.0.0` and the digests of its blobs.
async fn base_manifest(registry: &Registry) -> (Vec<u8>, Vec<String>) {
    let manifest = registry
        .request(reqwest::Method::GET, "/v2/bench/base/manifests/1.0.0")
        .header("Accept", ACCEPT)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let body: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let blobs = body["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .chain(std::iter::once(
            body["config"]["digest"].as_str().unwrap().to_owned(),
        ))
        .collect();
    (manifest, blobs)
}

/// Blobs are per repository: mounts `bench/base`'s into `repo`.
async fn mount(registry: &Registry, repo: &str, blobs: &[String]) {
    for blob in blobs {
        let r = registry
            .request(
                reqwest::Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?mount={blob}&from=bench/base"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "mount {blob} into {repo}");
    }
}

/// Pushes the many-variants image; returns its tags.
async fn push_variants(registry: &Registry) -> Vec<String> {
    let (manifest, blobs) = base_manifest(registry).await;
    mount(registry, "bench/variants", &blobs).await;
    let mut tags = Vec::new();
    let mut minor = 0;
    while tags.len() < 2_000 {
        for (i, suffix) in SUFFIXES.iter().enumerate() {
            let dash = if suffix.is_empty() { "" } else { "-" };
            let patch = minor % 7;
            let minor = minor / 7;
            tags.push(format!("1.{minor}.{patch}{dash}{suffix}"));
            if patch == 0 {
                tags.push(format!("1.{minor}{dash}{suffix}"));
            }
            if i % 5 == 0 {
                tags.push(format!("1.{minor}.{}-rc{patch}{dash}{suffix}", patch + 1));
            }
        }
        minor += 1;
    }
    tags.truncate(2_000);
    tags.extend(["latest", "alpine", "slim-bookworm"].map(str::to_owned));
    let setup = Stopwatch::start();
    for tag in &tags {
        registry
            .put_manifest("bench/variants", tag, ACCEPT, manifest.clone())
            .await;
    }
    println!(
        "setup: bench/variants with {} tags pushed in {:.1} s",
        tags.len(),
        setup.elapsed().as_secs_f64()
    );
    tags
}

/// 2,000 tags in 30 series (15 suffixes x three-part and two-part versions, plus
/// floating aliases and release candidates), 30 references; prints the time of a
/// resolve (tag list included) and of the selection alone.
async fn variants(registry: &Registry, host: &str) {
    let tags = push_variants(registry).await;
    let docs = autobump::policy::yaml::parse_documents(&format!(
        "name: {host}/bench/variants\ntags: {{semver: {{}}}}\n"
    ))
    .unwrap();
    let policy: ImagePolicy =
        autobump::policy::yaml::from_node(&docs[0], &autobump::policy::yaml::Path::root()).unwrap();
    let references: Vec<ImageRef> = SUFFIXES
        .iter()
        .flat_map(|suffix| {
            let dash = if suffix.is_empty() { "" } else { "-" };
            [
                format!("{host}/bench/variants:1.3.2{dash}{suffix}"),
                format!("{host}/bench/variants:1.3{dash}{suffix}"),
            ]
        })
        .map(|r| ImageRef::parse(&r).unwrap())
        .collect();
    let resolver = Resolver::new(
        RegistryClient::new(RegistryConfig::default(), Arc::new(SystemClock)).unwrap(),
    );
    let mut best = f64::INFINITY;
    let mut results = Vec::new();
    for _ in 0..5 {
        let now = autobump::clock::Clock::now(&SystemClock);
        let watch = Stopwatch::start();
        results = resolver
            .resolve(&policy, &references, &BTreeSet::new(), now)
            .await;
        best = best.min(watch.elapsed().as_secs_f64());
    }
    assert_eq!(results.len(), 30, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r.outcome, Resolved::Bump { .. }))
    );
    // The selection alone, on the same tags.
    let current: Vec<String> = references.iter().filter_map(|r| r.tag.clone()).collect();
    let images = std::collections::BTreeMap::from([(
        format!("{host}/bench/variants"),
        autobump::core::select::ImageState {
            current,
            available: tags.clone(),
        },
    )]);
    let (bad, built, ages) = (BTreeSet::new(), HashMap::new(), HashMap::new());
    let inputs = autobump::core::select::Inputs {
        policy: &policy,
        images: &images,
        bad: &bad,
        proven: None,
        build_times: &built,
        ages: &ages,
        now: autobump::clock::Clock::now(&SystemClock),
    };
    let mut select_best = f64::INFINITY;
    for _ in 0..20 {
        let watch = Stopwatch::start();
        let decisions = autobump::core::select::select(&inputs);
        select_best = select_best.min(watch.elapsed().as_secs_f64());
        assert_eq!(decisions.len(), 30);
    }
    println!(
        "many variants: 1 image, {} tags in 30 series, 30 references: resolve {:.1} ms (best of 5, tag list included), selection alone {:.2} ms (best of 20)",
        tags.len(),
        best * 1000.0,
        select_best * 1000.0
    );
}

/// Pushes one image, then tags it into `IMAGES` repositories (blob mounts and
/// manifest PUTs only, so setup takes seconds).
async fn populate(registry: &Registry) {
    let setup = Stopwatch::start();
    registry
        .push_image("bench/base", "1.0.0", ManifestKind::OciManifest, None)
        .await;
    let (manifest, blobs) = base_manifest(registry).await;
    for i in 0..IMAGES {
        let repo = format!("bench/app-{i:03}");
        mount(registry, &repo, &blobs).await;
        for tag in ["1.0.0", "1.0.1", "1.1.0", "2.0.0-rc.1", "latest"] {
            registry
                .put_manifest(&repo, tag, ACCEPT, manifest.clone())
                .await;
        }
    }
    println!(
        "setup: {IMAGES} repositories x 5 tags pushed in {:.1} s",
        setup.elapsed().as_secs_f64()
    );
}

/// Resolves every image once cold and five times quietly; prints the figures.
async fn measure(host: &str) {
    let docs = autobump::policy::yaml::parse_documents(&format!(
        "prefix: {host}/bench/\ntags: {{semver: {{range: \"^1\"}}}}\npinDigest: true\n"
    ))
    .unwrap();
    let policy: ImagePolicy =
        autobump::policy::yaml::from_node(&docs[0], &autobump::policy::yaml::Path::root()).unwrap();
    let references: Vec<ImageRef> = (0..IMAGES)
        .map(|i| ImageRef::parse(&format!("{host}/bench/app-{i:03}:1.0.0")).unwrap())
        .collect();
    let bad = BTreeSet::new();
    let resolver = Resolver::new(
        RegistryClient::new(RegistryConfig::default(), Arc::new(SystemClock)).unwrap(),
    );

    for (label, runs) in [
        ("cold poll (tag lists + digests)", 1),
        ("quiet poll (nothing changed)", 5),
    ] {
        let mut best = f64::INFINITY;
        let mut per_image = (0.0, 0.0);
        for _ in 0..runs {
            let before = resolver.registry().stats().snapshot();
            let watch = Stopwatch::start();
            let now = autobump::clock::Clock::now(&SystemClock);
            let results = resolver.resolve(&policy, &references, &bad, now).await;
            let secs = watch.elapsed().as_secs_f64();
            let after = resolver.registry().stats().snapshot();
            assert_eq!(results.len(), IMAGES);
            assert!(
                results
                    .iter()
                    .all(|r| matches!(r.outcome, Resolved::Bump { .. }))
            );
            best = best.min(secs);
            #[allow(clippy::cast_precision_loss)] // counts are small
            {
                per_image = (
                    (after.tags - before.tags) as f64 / IMAGES as f64,
                    (after.manifest_head + after.manifest_get
                        - before.manifest_head
                        - before.manifest_get) as f64
                        / IMAGES as f64,
                );
            }
        }
        println!(
            "{label}: {IMAGES} images in {:.0} ms (best of {runs}); per image: {:.2} tag-list requests, {:.2} manifest requests",
            best * 1000.0,
            per_image.0,
            per_image.1
        );
    }
}
