//! The dashboard with 1,000 policies: server time of `/`, `/api/v1/policies` and one
//! policy's page over real HTTP (median and 90th percentile of 30 requests each, after
//! a warm-up), the page weight (HTML, stylesheet, script, icon, in bytes), and, when
//! Chromium is installed, the browser's load time of `/` (navigation start to the
//! load event, as the page measures it).
//!
//! The state is a SQLite database like a year of use: every policy with 200 history
//! entries (bumps, merges, promotions, some holds and rollbacks), a third of them held,
//! a fifth baking; the policies are 1,000 files in one folder.
//!
//! Run: `cargo bench --bench dashboard` (or `scripts/bench dashboard`). Prints figures;
//! asserts nothing about time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use autobump::clock::{Clock, Stopwatch, SystemClock};
use autobump::core::gate::GateVerdict;
use autobump::core::rollout::BakeProgress;
use autobump::dashboard::{DashboardConfig, FilesSource};
use autobump::metrics::Metrics;
use autobump::policy::v1alpha1::{Hold, ImageVersion, Reason, Release};
use autobump::store::{SqliteStore, Store};
use chrono::TimeDelta;

const POLICIES: usize = 1000;
const HISTORY: usize = 200;
const REQUESTS: usize = 30;

fn policy(name: &str) -> String {
    format!(
        r#"apiVersion: autobump.dev/v1alpha1
kind: Autobump
metadata: {{name: {name}}}
spec:
  images:
    - name: registry.example.com/team/{name}
      tags: {{semver: {{range: "^1"}}}}
  source:
    repo: https://github.com/example/infra.git
    include: ["apps/{name}/**/*.yaml"]
  pullRequest: {{branch: autobump-{name}, botLogin: example-bot}}
  schedule:
    timezone: Europe/Berlin
    windows: ["Mon-Fri 09:00-17:00"]
    minInterval: 1h
  gate:
    prometheus: http://prometheus:9090
    alerts: '{{job="{name}"}}'
    bake: 1h
"#
    )
}

fn release(name: &str, tag: &str, since: chrono::DateTime<chrono::Utc>) -> Release {
    Release {
        summary: tag.into(),
        images: vec![ImageVersion {
            image: format!("registry.example.com/team/{name}"),
            tag: tag.into(),
            digest: None,
        }],
        since,
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
    }
}

/// The policy folder and the state database with [`POLICIES`] policies, and each
/// one's gate reading.
fn populate(dir: &std::path::Path) -> (std::path::PathBuf, SqliteStore, Arc<Metrics>) {
    let policies = dir.join("policies");
    std::fs::create_dir(&policies).unwrap();
    let store = SqliteStore::open(&dir.join("state.db")).unwrap();
    let now = SystemClock.now();
    let metrics = Arc::new(Metrics::new(Arc::new(SystemClock)));
    let watch = Stopwatch::start();
    for i in 0..POLICIES {
        let name = format!("svc-{i:04}");
        std::fs::write(policies.join(format!("{name}.yaml")), policy(&name)).unwrap();
        store
            .update(&name, &mut |s| {
                for k in 0..HISTORY {
                    let at = now - TimeDelta::hours(i64::try_from(HISTORY - k).unwrap() * 4);
                    let (reason, message) = match k % 10 {
                        0 => (
                            Reason::Held,
                            format!("held by alert:{name}Down: 5xx above 1%"),
                        ),
                        1 => (
                            Reason::RolledBack,
                            "1.4.1 -> 1.4.0 merged as PR #12".to_owned(),
                        ),
                        2 => (Reason::Unheld, "hold lifted by user:alice".to_owned()),
                        3 | 6 => (
                            Reason::Merged,
                            format!("PR #{k} merged at 0123456789abcdef0123456789abcdef01234567"),
                        ),
                        4 | 7 => (Reason::Deployed, format!("1.{k}.0 is on main")),
                        _ => (Reason::Promoted, format!("1.{k}.0 is the last known-good")),
                    };
                    s.record(at, reason, message);
                }
                s.current = Some(release(&name, "1.9.0", now - TimeDelta::hours(3)));
                s.last_known_good = Some(release(&name, "1.8.0", now - TimeDelta::days(2)));
                s.last_bump = Some(now - TimeDelta::hours(3));
                if i % 3 == 0 {
                    s.hold = Some(Hold {
                        by: format!("alert:{name}Down"),
                        since: now - TimeDelta::hours(1),
                        reason: "alerts fired after 1.9.0 was deployed: 5xx above 1%".into(),
                        via: Some("gate".into()),
                        automatic: true,
                    });
                }
                if i % 5 == 0 {
                    s.bake = Some(BakeProgress {
                        version: "1.9.0".into(),
                        clear_since: Some(now - TimeDelta::minutes(20)),
                        restarts: 0,
                    });
                }
            })
            .unwrap();
        metrics.gate(
            &name,
            &if i % 7 == 0 {
                GateVerdict::Firing(vec![format!("{name}Down")])
            } else {
                GateVerdict::Clear
            },
        );
    }
    println!(
        "state: {POLICIES} policies x {HISTORY} history entries, made in {:.1?}",
        watch.elapsed()
    );

    (policies, store, metrics)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (policies, store, metrics) = populate(dir.path());
    let router = autobump::dashboard::router(DashboardConfig {
        source: Arc::new(FilesSource::new(Arc::new(store), vec![policies])),
        metrics: Some(metrics),
        clock: Arc::new(SystemClock),
        token: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(autobump::http::serve(
        listener,
        router,
        autobump::http::ServeLimits::default(),
    ));
    let client = support::http_client();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://{addr}{path}"))
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.bytes().await.unwrap().len()
        }
    };

    // The first request reads the 1,000 policy files (later ones only stat them).
    let watch = Stopwatch::start();
    get("/".into()).await;
    println!(
        "first GET / (reads the policy files): {:.0?}",
        watch.elapsed()
    );

    let mut weight = Vec::new();
    for path in ["/", "/policies/svc-0000", "/api/v1/policies"] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..REQUESTS {
            let watch = Stopwatch::start();
            bytes = get(path.into()).await;
            times.push(watch.elapsed());
        }
        times.sort();
        println!(
            "GET {path}: median {:.1?}, p90 {:.1?} ({REQUESTS} requests), {bytes} bytes",
            times[REQUESTS / 2],
            times[REQUESTS * 9 / 10]
        );
        weight.push((path, bytes));
    }
    let mut assets = 0;
    for path in [
        "/assets/dashboard.css",
        "/assets/dashboard.js",
        "/assets/favicon.svg",
    ] {
        assets += get(path.into()).await;
    }
    println!(
        "page weight: / with {POLICIES} policies {} bytes HTML + {assets} bytes of assets (CSS, JS, icon; cached a day); one policy's page {} bytes",
        weight[0].1, weight[1].1
    );

    if std::path::Path::new("/usr/bin/chromium").exists() {
        let shot = dir.path().join("bench.png");
        let url = format!("http://{addr}/");
        let load = tokio::task::spawn_blocking(move || {
            let mut loads = Vec::new();
            for _ in 0..3 {
                let page = support::browser::load(
                    &url,
                    (1280, 800),
                    0,
                    &shot,
                    &["document.querySelectorAll('tr.policy').length"],
                );
                assert_eq!(page.values[0], POLICIES, "{:?}", page.console);
                loads.push(page.load_ms.unwrap_or_default());
            }
            loads
        })
        .await
        .unwrap();
        println!(
            "browser (headless Chromium, 1280x800): / with {POLICIES} policies loads in {:.0} / {:.0} / {:.0} ms (navigation start to load event, 3 fresh profiles)",
            load[0], load[1], load[2]
        );
    } else {
        println!("browser: chromium not installed (scripts/setup); load time not measured");
    }
}
