//! Promotion between environments end to end: a real docker-registry, a real
//! Prometheus whose alert gates staging, real git (the GitHub fake's bare repository
//! holds both environments, laid out like Flux's `flux2-kustomize-helm-example`:
//! `apps/staging/` and `apps/production/`), the GitHub adapter for production's pull
//! requests, and one state store.
//!
//! The story: staging bakes 1.1.0 clean → production opens its bump to 1.1.0; 1.2.0
//! fires staging's alert and is rolled back there → production never sees 1.2.0;
//! 1.3.0 bakes clean in staging → production moves to 1.3.0.

use std::path::Path;
use std::time::Duration;

use autobump::alerts::{AlertsClient, AlertsConfig, read_gate};
use autobump::controller::{Deps, ForgeAccess, Report, reconcile, reconcile_read};
use autobump::core::gate::GateVerdict;
use autobump::forge::{Forges, RepoName};
use autobump::policy::{self, Policy};
use autobump::registry::RegistryClient;
use autobump::repo::{Auth, GitRepo, Source};
use autobump::store::{MemoryStore, Store as _};

use super::support::{ManifestKind, MetricsTarget, Prometheus, wait_until};
use super::{World, at, kinds, waiting};

const STAGING: &str = "apps/staging/cart.yaml";
const PRODUCTION: &str = "apps/production/cart.yaml";

/// The staging alert: the cart's health metric says it is failing.
const RULES: &str = r"
groups:
  - name: shop
    rules:
      - alert: CartErrors
        expr: shop_cart_healthy == 0
        for: 0s
        labels:
          severity: critical
          team: shop
        annotations:
          summary: cart checkout errors above budget
";

/// A Deployment as a Kustomize overlay carries it.
fn deployment(host: &str, namespace: &str, tag: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: cart\n  namespace: {namespace}\nspec:\n  template:\n    spec:\n      containers:\n        - name: cart\n          image: {host}/shop/cart:{tag}\n"
    )
}

/// Staging (direct push, with `staging_extra` added to its spec) and production
/// (`promotion.from: staging`, pull requests), one minimum interval for both.
fn policies(w: &World, staging_extra: &str, min_interval: &str) -> (Policy, Policy) {
    let host = w.registry.host();
    let repo = w.fake.git_dir().display().to_string();
    let text = format!(
        "apiVersion: autobump.dev/v1alpha1
kind: Autobump
metadata: {{name: staging}}
spec:
  images:
    - name: {host}/shop/cart
      tags: {{semver: {{}}}}
  source:
    repo: file://{repo}
    include: [\"apps/staging/*.yaml\"]
  directPush: {{}}
  schedule: {{minInterval: {min_interval}}}
{staging_extra}---
apiVersion: autobump.dev/v1alpha1
kind: Autobump
metadata: {{name: production}}
spec:
  images:
    - name: {host}/shop/cart
      tags: {{semver: {{}}}}
  promotion: {{from: staging}}
  source:
    repo: file://{repo}
    include: [\"apps/production/*.yaml\"]
  pullRequest: {{botLogin: autobump-bot}}
  schedule: {{minInterval: {min_interval}}}
"
    );
    let (mut loaded, problems) = policy::load_str(Path::new("shop.yaml"), &text);
    assert!(problems.is_empty(), "{problems:?}");
    let production = loaded.remove(1);
    (loaded.remove(0), production)
}

fn source(p: &Policy) -> Source {
    Source {
        url: p.spec.source.repo.clone(),
        branch: p.spec.source.branch.clone(),
        auth: Auth::None,
    }
}

fn staging_deps<'a>(
    w: &'a World,
    p: &Policy,
) -> Deps<'a, RegistryClient, GitRepo, MemoryStore, Forges> {
    Deps {
        forge: None,
        resolver: &w.resolver,
        repo: &w.repo,
        store: &w.store,
        source: source(p),
        workloads: None,
    }
}

fn production_deps<'a>(
    w: &'a World,
    p: &Policy,
) -> Deps<'a, RegistryClient, GitRepo, MemoryStore, Forges> {
    Deps {
        forge: Some(ForgeAccess {
            forge: &w.forge,
            repo: RepoName::new("example", "infra"),
            bot_login: "autobump-bot".into(),
        }),
        ..staging_deps(w, p)
    }
}

/// Sets the cart's health and waits until Prometheus says whether `CartErrors` fires.
async fn set_health(target: &MetricsTarget, prometheus: &Prometheus, healthy: bool) {
    target.set("shop_cart_healthy", if healthy { 1.0 } else { 0.0 });
    let what = if healthy {
        "CartErrors resolved and the healthy value scraped"
    } else {
        "CartErrors firing"
    };
    wait_until(
        what,
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            let firing = prometheus
                .alerts()
                .await
                .iter()
                .any(|a| a["labels"]["alertname"] == "CartErrors" && a["state"] == "firing");
            let scraped = prometheus.query("shop_cart_healthy").await;
            let value = if healthy { "1" } else { "0" };
            if firing != healthy && scraped[0]["value"][1] == value {
                Ok(())
            } else {
                Err(format!("firing={firing} scraped={scraped}"))
            }
        },
    )
    .await;
}

// One story across both environments; split, each part would replay the others.
#[allow(clippy::too_many_lines)]
#[tokio::test]
async fn production_takes_only_what_staging_proved_under_its_real_alert_gate() {
    let w = World::new("").await;
    let host = w.registry.host();
    w.registry
        .push_image("shop/cart", "1.0.0", ManifestKind::OciManifest, None)
        .await;
    w.registry.retag("shop/cart", "1.0.0", "1.1.0").await;
    w.fake.commit(
        "main",
        &[
            (STAGING, Some(&deployment(&host, "shop-staging", "1.0.0"))),
            (PRODUCTION, Some(&deployment(&host, "shop", "1.0.0"))),
        ],
        "Add the cart to both environments",
    );
    let target = MetricsTarget::start().await;
    let prometheus = Prometheus::start(RULES, &[&target.host()], None).await;
    set_health(&target, &prometheus, true).await;
    let gate = format!(
        "  gate: {{prometheus: {}, alerts: '{{team=\"shop\"}}', bake: 30m}}\n",
        prometheus.url()
    );
    let (staging, production) = policies(&w, &gate, "1m");
    let alerts = AlertsClient::new(AlertsConfig::default()).unwrap();
    let stage = |now: &'static str| {
        let (staging, alerts) = (&staging, &alerts);
        let deps = staging_deps(&w, staging);
        async move {
            // The gate as Prometheus says it now.
            let reading = read_gate(alerts, staging.spec.gate.as_ref()).await;
            reconcile_read(staging, &deps, &reading, at(now))
                .await
                .unwrap_or_else(|e| panic!("staging at {now}: {e}"))
        }
    };
    let produce = |now: &'static str| {
        let production = &production;
        let deps = production_deps(&w, production);
        async move {
            reconcile(production, &deps, GateVerdict::Clear, at(now))
                .await
                .unwrap_or_else(|e| panic!("production at {now}: {e}"))
        }
    };
    let production_versions = |r: &Report| -> Vec<String> {
        let mut seen = vec![w.file_on("main", PRODUCTION)];
        if r.pr.is_some() {
            seen.push(w.file_on("autobump-production", PRODUCTION));
        }
        seen
    };

    // 1. Staging bakes what it runs; production has nothing proven to take.
    let r = stage("2026-11-23T10:00:00Z").await;
    assert!(waiting(&r).contains("1.0.0 is baking (30m left)"), "{r:?}");
    let r = produce("2026-11-23T10:00:00Z").await;
    assert_eq!(r.pr, None, "{r:?}");
    assert!(
        r.registry_problems
            .iter()
            .any(|p| p.contains("no semver tags proven upstream yet")),
        "{r:?}"
    );

    // 2. 1.0.0 baked clean in staging; staging moves to 1.1.0. Production already
    //    runs the only proven version: nothing to do.
    let r = stage("2026-11-23T10:31:00Z").await;
    assert_eq!(kinds(&r), ["Promote", "PushDirect", "RecordBump"], "{r:?}");
    assert!(w.file_on("main", STAGING).contains("shop/cart:1.1.0"));
    let r = produce("2026-11-23T10:31:00Z").await;
    assert_eq!(r.pr, None, "{r:?}");
    assert!(
        !kinds(&r).contains(&"CreatePr"),
        "1.1.0 is not proven yet: {r:?}"
    );

    // 3. 1.1.0 bakes clean in staging: production opens its bump to 1.1.0, citing
    //    the evidence.
    let r = stage("2026-11-23T10:32:00Z").await;
    assert!(waiting(&r).contains("1.1.0 is baking"), "{r:?}");
    let r = stage("2026-11-23T11:03:00Z").await;
    assert_eq!(kinds(&r), ["Promote"], "{r:?}");
    let proof = w.store.load("staging").unwrap().proven.pop().unwrap();
    assert_eq!(proof.release.summary, "1.1.0");
    assert_eq!(proof.known_good_at, at("2026-11-23T11:03:00Z"));
    let r = produce("2026-11-23T11:03:00Z").await;
    assert_eq!(kinds(&r), ["PushBranch", "CreatePr", "RecordBump"], "{r:?}");
    let pr = w.fake.pull(r.pr.unwrap());
    assert!(
        w.file_on("autobump-production", PRODUCTION)
            .contains("shop/cart:1.1.0")
    );
    let body = pr.body.clone().unwrap_or_default();
    for part in [
        "Promoted from `staging`",
        &format!("`{host}/shop/cart:1.1.0`"),
        "known-good in `staging` since 2026-11-23T11:03:00Z after a bake of 30m",
        &format!(
            "no alert matching {{team=\"shop\"}} firing on Prometheus {}",
            prometheus.url()
        ),
        "deployed by commit ",
    ] {
        assert!(body.contains(part), "{part:?} in the PR body:\n{body}");
    }
    let history = w.store.load("production").unwrap().history;
    assert!(
        history
            .last()
            .unwrap()
            .message
            .ends_with("pushed for review, promoted from staging"),
        "{history:?}"
    );

    // 4. 1.2.0 appears; staging takes it and CartErrors fires during its bake: rolled
    //    back there, held, 1.2.0 bad in staging.
    w.registry.retag("shop/cart", "1.0.0", "1.2.0").await;
    let r = stage("2026-11-23T11:05:00Z").await;
    assert_eq!(kinds(&r), ["PushDirect", "RecordBump"], "{r:?}");
    let r = stage("2026-11-23T11:06:00Z").await;
    assert!(waiting(&r).contains("1.2.0 is baking"), "{r:?}");
    set_health(&target, &prometheus, false).await;
    let r = stage("2026-11-23T11:10:00Z").await;
    assert_eq!(kinds(&r), ["Rollback"], "{r:?}");
    assert!(w.file_on("main", STAGING).contains("shop/cart:1.1.0"));
    let s = w.store.load("staging").unwrap();
    assert!(s.hold.is_some());
    assert!(
        s.bad_pairs()
            .contains(&(format!("{host}/shop/cart"), "1.2.0".to_owned()))
    );
    // Production never sees 1.2.0; staging's hold does not stop what staging had
    // proved: the 1.1.0 PR is merged once its checks pass.
    let r = produce("2026-11-23T11:10:00Z").await;
    for text in production_versions(&r) {
        assert!(!text.contains("1.2.0"), "{text}");
    }
    let head = w.fake.branch_sha("autobump-production").unwrap();
    w.fake.set_status(&head, "ci/e2e", "success");
    let r = produce("2026-11-23T11:12:00Z").await;
    assert_eq!(kinds(&r), ["Merge"], "{r:?}");
    assert!(w.file_on("main", PRODUCTION).contains("shop/cart:1.1.0"));
    let r = produce("2026-11-23T11:20:00Z").await;
    for text in production_versions(&r) {
        assert!(!text.contains("1.2.0"), "{text}");
    }
    assert!(!kinds(&r).contains(&"CreatePr"), "{r:?}");

    // 5. The alert resolves, a person lifts staging's hold, 1.3.0 appears and bakes
    //    clean in staging: production moves to 1.3.0.
    set_health(&target, &prometheus, true).await;
    w.store.update("staging", &mut |s| s.hold = None).unwrap();
    w.registry.retag("shop/cart", "1.0.0", "1.3.0").await;
    let r = stage("2026-11-23T11:30:00Z").await;
    assert_eq!(kinds(&r), ["PushDirect", "RecordBump"], "{r:?}");
    assert!(w.file_on("main", STAGING).contains("shop/cart:1.3.0"));
    let r = stage("2026-11-23T11:31:00Z").await;
    assert!(waiting(&r).contains("1.3.0 is baking"), "{r:?}");
    let r = produce("2026-11-23T11:31:00Z").await;
    assert!(!kinds(&r).contains(&"CreatePr"), "1.3.0 still bakes: {r:?}");
    let r = stage("2026-11-23T12:02:00Z").await;
    assert_eq!(kinds(&r), ["Promote"], "{r:?}");
    let r = produce("2026-11-23T12:02:00Z").await;
    assert!(kinds(&r).contains(&"CreatePr"), "{r:?}");
    let branch = w.file_on("autobump-production", PRODUCTION);
    assert!(branch.contains("shop/cart:1.3.0"), "{branch}");
    let body = w.fake.pull(r.pr.unwrap()).body.unwrap_or_default();
    assert!(
        body.contains(&format!(
            "`{host}/shop/cart:1.3.0`: known-good in `staging` since 2026-11-23T12:02:00Z"
        )),
        "{body}"
    );
    // Staging kept its own record: 1.2.0 stays bad there, and production never
    // recorded it at all.
    assert!(w.store.load("production").unwrap().bad_versions.is_empty());
    w.fake.assert_responses_valid();
}

/// `scripts/bench promotion`: seconds from staging's promotion being recorded to
/// production's pull request carrying the version, on the wall clock, with each
/// policy's turn taken every `BENCH_INTERVAL` seconds (default 5) by the real
/// reconcile against a real registry, real git and the GitHub fake:
/// * woken: production's turn follows staging's in the same pass (what `autobump run`
///   does now for a policy and its upstream);
/// * not woken: production's turn comes first in each pass (as in any driver that
///   does not know the two are related), so it sees the proof one interval later.
///
/// `BENCH_RUNS` (default 3) versions per mode. Prints `bench:` lines.
// One measurement set up once; split, the setup would be passed around for nothing.
#[allow(clippy::too_many_lines)]
#[tokio::test]
#[ignore = "a benchmark: scripts/bench promotion"]
async fn bench_promotion_latency() {
    use autobump::clock::{Clock as _, Stopwatch, SystemClock};
    let interval = std::env::var("BENCH_INTERVAL")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(5.0);
    let runs: u32 = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let w = World::new("").await;
    let host = w.registry.host();
    w.registry
        .push_image("shop/cart", "1.0.0", ManifestKind::OciManifest, None)
        .await;
    w.fake.commit(
        "main",
        &[
            (STAGING, Some(&deployment(&host, "shop-staging", "1.0.0"))),
            (PRODUCTION, Some(&deployment(&host, "shop", "1.0.0"))),
        ],
        "Add the cart to both environments",
    );
    // No gate and no deploy delay: staging's release is known-good at its next turn.
    let (staging, production) = policies(&w, "", "1s");
    let now = || chrono::SubsecRound::trunc_subsecs(SystemClock.now(), 0);
    let turn = async |p: &Policy| {
        let deps = if p.name() == "staging" {
            staging_deps(&w, p)
        } else {
            production_deps(&w, p)
        };
        reconcile(p, &deps, GateVerdict::Clear, now())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", p.name()));
    };
    let proven = |tag: &str| {
        w.store
            .load("staging")
            .unwrap()
            .proven
            .iter()
            .any(|p| p.release.summary == tag)
    };
    let proposed = |tag: &str| {
        w.fake.branch_sha("autobump-production").is_some()
            && w.file_on("autobump-production", PRODUCTION)
                .contains(&format!("shop/cart:{tag}"))
    };
    let mut minor = 0;
    for woken in [true, false] {
        let mut latencies = Vec::new();
        for _ in 0..runs {
            minor += 1;
            let tag = format!("1.{minor}.0");
            w.registry.retag("shop/cart", "1.0.0", &tag).await;
            w.resolver.invalidate(&format!("{host}/shop/cart"));
            let mut recorded: Option<Stopwatch> = None;
            let latency = loop {
                let order = if woken {
                    [&staging, &production]
                } else {
                    [&production, &staging]
                };
                for p in order {
                    turn(p).await;
                    if recorded.is_none() && proven(&tag) {
                        recorded = Some(Stopwatch::start());
                    }
                    if recorded.is_some() && proposed(&tag) {
                        break;
                    }
                }
                if let Some(since) = &recorded
                    && proposed(&tag)
                {
                    break since.elapsed().as_secs_f64();
                }
                tokio::time::sleep(Duration::from_secs_f64(interval)).await;
            };
            latencies.push(latency);
        }
        latencies.sort_by(f64::total_cmp);
        let median = latencies[latencies.len() / 2];
        println!(
            "bench: promotion {} ({interval} s between passes, {runs} versions): median {median:.2} s from staging's proof recorded to production's PR carrying it (each: {})",
            if woken {
                "woken: upstream's turn first in the pass"
            } else {
                "not woken: production's turn first"
            },
            latencies
                .iter()
                .map(|l| format!("{l:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
