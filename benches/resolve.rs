//! Resolving 200 images against a real local registry (docker-registry on 127.0.0.1):
//! wall time of a cold poll (tag lists + digests for pinning) and of a quiet poll
//! (nothing changed), and the registry requests each costs per image.
//!
//! Run: `cargo bench --bench resolve` (or `scripts/bench`). Prints figures; asserts
//! nothing about time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use autobump::clock::{Stopwatch, SystemClock};
use autobump::core::reference::ImageRef;
use autobump::policy::v1alpha1::ImagePolicy;
use autobump::registry::{RegistryClient, RegistryConfig};
use autobump::resolve::{Resolved, Resolver};
use support::registry::{ManifestKind, Registry};

const IMAGES: usize = 200;

#[tokio::main]
async fn main() {
    let registry = Registry::start().await;
    let host = registry.host();
    populate(&registry).await;
    measure(&host).await;
}

/// Pushes one image, then tags it into `IMAGES` repositories (blob mounts and
/// manifest PUTs only, so setup takes seconds).
async fn populate(registry: &Registry) {
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let setup = Stopwatch::start();
    registry
        .push_image("bench/base", "1.0.0", ManifestKind::OciManifest, None)
        .await;
    let manifest = registry
        .request(reqwest::Method::GET, "/v2/bench/base/manifests/1.0.0")
        .header("Accept", accept)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    // Blobs are per repository: mount them, then PUT the manifest under each tag.
    let blobs: Vec<String> =
        serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .chain(std::iter::once(
                serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["config"]["digest"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ))
            .collect();
    for i in 0..IMAGES {
        let repo = format!("bench/app-{i:03}");
        for blob in &blobs {
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
        for tag in ["1.0.0", "1.0.1", "1.1.0", "2.0.0-rc.1", "latest"] {
            registry
                .put_manifest(&repo, tag, accept, manifest.clone())
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
            let results = resolver.resolve(&policy, &references, &bad).await;
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
