//! The dashboard over real HTTP and in a real headless Chromium: what it escapes and
//! never shows, its headers and token, and the demo's story as a person sees it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use autobump::clock::{Clock, SystemClock};
use autobump::core::gate::GateVerdict;
use autobump::core::rollout::BakeProgress;
use autobump::dashboard::{DashboardConfig, FilesSource};
use autobump::http::{ServeLimits, serve};
use autobump::metrics::Metrics;
use autobump::policy::v1alpha1::{Hold, ImageVersion, Reason, Release};
use autobump::store::{SqliteStore, Store};
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::{StatusCode, header};
use tokio::net::TcpListener;

use crate::support::browser;

/// A direct-push policy as `scripts/demo` writes it, on a GitHub repository.
const POLICY: &str = r#"apiVersion: autobump.dev/v1alpha1
kind: Autobump
metadata: {name: web}
spec:
  images:
    - name: registry.example.com/team/web
      tags: {semver: {range: "^1"}}
  source:
    repo: https://github.com/example/infra.git
    include: ["apps/**/*.yaml"]
  directPush: {}
  schedule: {minInterval: 10s}
  gate:
    prometheus: http://127.0.0.1:9/
    alerts: '{team="web"}'
    bake: 1h
"#;

/// What people type into a hold reason, and a state key no policy file could have
/// (the state database takes any text).
const HOSTILE_REASON: &str =
    "<script>alert(1)</script><img src=x onerror=alert(2)> \"quoted\" & 'single'";
const HOSTILE_KEY: &str = "<script>alert(1)</script>";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn release(tag: &str, since: DateTime<Utc>) -> Release {
    Release {
        summary: tag.into(),
        images: vec![ImageVersion {
            image: "registry.example.com/team/web".into(),
            tag: tag.into(),
            digest: None,
        }],
        since,
        commit: Some(SHA.into()),
    }
}

struct Served {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// The dashboard alone on an ephemeral port, over a state with hostile text in it.
async fn start(token: Option<&str>) -> Served {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/web.yaml"), POLICY).unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    let now = SystemClock.now();
    let t = |minutes: i64| now - TimeDelta::minutes(minutes);
    store
        .update("web", &mut |s| {
            s.record(t(300), Reason::Merged, format!("PR #7 merged at {SHA}"));
            s.record(t(240), Reason::Promoted, "1.1.0 is the last known-good");
            s.record(
                t(120),
                Reason::Held,
                format!("held by user:<b>mallory</b>: {HOSTILE_REASON}"),
            );
            s.record(t(119), Reason::RolledBack, "1.2.0 -> 1.1.0 merged as PR #9");
            // An alert whose link carries credentials (a generator URL as some
            // Prometheus setups publish it).
            s.record(
                t(118),
                Reason::Held,
                "held by alert:WebErrors: see https://x-access-token:ghs_0123456789abcdefSECRET@prom.example/graph",
            );
            s.hold = Some(Hold {
                by: "user:<b>mallory</b>".into(),
                since: t(120),
                reason: HOSTILE_REASON.into(),
                via: Some("https://github.com/example/infra/pull/9#issuecomment-1".into()),
                automatic: false,
            });
            s.current = Some(release("1.1.0", t(119)));
            s.last_known_good = Some(release("1.1.0", t(240)));
            s.bake = Some(BakeProgress {
                version: "1.1.0".into(),
                clear_since: Some(t(10)),
                restarts: 0,
            });
        })
        .unwrap();
    store
        .update(HOSTILE_KEY, &mut |s| {
            s.record(t(5), Reason::Held, HOSTILE_REASON);
        })
        .unwrap();
    let metrics = Arc::new(Metrics::new(Arc::new(SystemClock)));
    metrics.gate(
        "web",
        &GateVerdict::Firing(vec!["WebErrors".into(), "<i>Evil</i>".into()]),
    );
    let router = autobump::dashboard::router(DashboardConfig {
        source: Arc::new(FilesSource::new(
            Arc::new(store),
            vec![dir.path().join("policies")],
        )),
        metrics: Some(metrics),
        clock: Arc::new(SystemClock),
        token: token.map(str::to_owned),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, router, ServeLimits::default()));
    Served { addr, _dir: dir }
}

fn client() -> reqwest::Client {
    autobump::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // every page and document, then the same in a browser
async fn every_string_is_escaped_and_no_secret_is_shown() {
    let s = start(None).await;
    let c = client();
    for path in [
        "/",
        "/policies/web",
        "/api/v1/policies",
        "/api/v1/policies/web",
    ] {
        let r = c
            .get(format!("http://{}{path}", s.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let body = r.text().await.unwrap();
        assert!(!body.contains("ghs_0123456789"), "{path} shows the token");
        assert!(!body.contains("x-access-token"), "{path} shows user info");
        if path.starts_with("/api/") {
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(doc["apiVersion"], "autobump.dev/dashboard/v1");
            continue;
        }
        assert!(!body.contains("<script>alert"), "{path}: {body}");
        assert!(!body.contains("<img src=x"), "{path}");
        assert!(!body.contains("<b>mallory"), "{path}");
        assert!(
            body.contains(
                "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"
            ),
            "{path}: {body}"
        );
        assert_eq!(body.matches("<script").count(), 1, "only ours: {path}");
        assert!(!body.contains(" style="), "no inline style: {path}");
    }

    let list = crate::support::get_json(&format!("http://{}/api/v1/policies", s.addr)).await;
    let web = &list["policies"][1];
    assert_eq!(web["name"], "web");
    assert_eq!(web["repoUrl"], "https://github.com/example/infra");
    assert_eq!(web["hold"]["reason"], HOSTILE_REASON);
    assert_eq!(web["gate"]["verdict"], "firing");
    assert_eq!(
        web["gate"]["alerts"],
        serde_json::json!(["WebErrors", "<i>Evil</i>"])
    );
    assert_eq!(web["baking"]["bakeSeconds"], 3600);
    assert_eq!(
        web["lastRollback"]["links"][0]["url"],
        "https://github.com/example/infra/pull/9"
    );
    assert_eq!(
        web["current"]["commitUrl"],
        format!("https://github.com/example/infra/commit/{SHA}")
    );
    assert_eq!(list["policies"][0]["name"], HOSTILE_KEY);
    assert_eq!(list["policies"][0]["defined"], false);

    // The page's poll: the revision as ETag, 304 without a body while unchanged.
    let etag = format!("\"{}\"", list["revision"].as_str().unwrap());
    let r = c
        .get(format!("http://{}/api/v1/policies", s.addr))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()[header::ETAG], etag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .get(format!("http://{}/api/v1/policies", s.addr))
        .header(header::IF_NONE_MATCH, "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let missing = c
        .get(format!("http://{}/api/v1/policies/nope", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let page = c
        .get(format!("http://{}/policies/nope", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    for write in ["/", "/api/v1/policies", "/policies/web"] {
        let r = c
            .post(format!("http://{}{write}", s.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "read-only: {write}"
        );
    }

    // In a real browser: the hostile text is text, no script of it ran, no element
    // of it exists, and nothing was refused or failed.
    let shot = browser::screenshot_dir().join("escaping.png");
    let url = format!("http://{}/", s.addr);
    // The server runs on this test's runtime: the browser waits on another thread.
    let page = tokio::task::spawn_blocking(move || browser::load(
        &url,
        (1280, 800),
        0,
        &shot,
        &[
            "document.scripts.length",
            "document.querySelectorAll('img').length",
            "[...document.querySelectorAll('tr.policy .why')].map(e => e.textContent).join('|')",
            "document.querySelectorAll('tr.policy').length",
            "[...document.querySelectorAll('.alerts li')].map(e => e.textContent)",
        ],
    ))
    .await
    .unwrap();
    assert!(page.console.is_empty(), "{:?}", page.console);
    assert_eq!(page.values[0], 1, "only the dashboard's script");
    assert_eq!(page.values[1], 0, "no injected image");
    let why = page.values[2].as_str().unwrap();
    assert!(why.contains(HOSTILE_REASON), "{why}");
    assert_eq!(page.values[3], 2);
    assert_eq!(
        page.values[4],
        serde_json::json!(["WebErrors", "<i>Evil</i>"])
    );
}

#[tokio::test]
async fn a_token_guards_pages_and_api_but_not_the_assets() {
    let s = start(Some("t0ken")).await;
    let c = client();
    let url = |p: &str| format!("http://{}{p}", s.addr);
    let r = c.get(url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/login");
    let r = c.get(url("/api/v1/policies")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(url("/api/v1/policies"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(url("/api/v1/policies/web"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for asset in ["/assets/dashboard.css", "/assets/dashboard.js", "/login"] {
        let r = c.get(url(asset)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
    }

    let r = c
        .post(url("/login"))
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    let r = c
        .post(url("/login"))
        .form(&[("token", "t0ken")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("t0ken"),
        "the cookie holds a hash, not the token"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let r = c
        .get(url("/"))
        .header(header::COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(url("/"))
        .header(header::COOKIE, "autobump_dashboard=0000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

/// The demo's story in a real browser: `scripts/demo --dashboard` (real registry,
/// Prometheus, Alertmanager and git, `autobump run --listen`) ends held by the alert
/// and rolled back; the page shows that, at desktop and phone width, refreshes itself
/// when a person lifts the hold, and logs nothing. Screenshots land in
/// `target/dashboard-screenshots/`; Ctrl-C stops every process the demo started.
#[tokio::test]
#[allow(clippy::too_many_lines)] // one story: start, four page loads, Ctrl-C
async fn the_demo_dashboard_in_a_real_browser() {
    use tokio::io::{AsyncBufReadExt as _, BufReader};

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = env!("CARGO_BIN_EXE_autobump");
    let mut demo = tokio::process::Command::new("bash")
        .arg(root.join("scripts/demo"))
        .arg("--dashboard")
        .env("AUTOBUMP_BIN", bin)
        .env_remove("GITHUB_TOKEN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A failing assertion still stops the demo the way a person does (its trap then
    // stops the servers); killing only the script would leave them running.
    let _stop = Interrupt(demo.id().unwrap());
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let (mut work, mut url) = (None, None);
    let story = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if let Some(w) = line
                .strip_prefix("(working in ")
                .and_then(|l| l.strip_suffix(')'))
            {
                work = Some(w.to_owned());
            }
            if let Some(u) = line.strip_prefix("dashboard: ") {
                url = u.split_whitespace().next().map(str::to_owned);
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(180), story)
        .await
        .unwrap_or_else(|_| panic!("the demo reached no dashboard in 3 minutes:\n{seen}"));
    let url = url.unwrap_or_else(|| panic!("the demo printed no dashboard URL:\n{seen}"));
    let work = work.expect("the demo names its working directory");
    // Keep reading (and discarding) what the demo prints, so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let dir = browser::screenshot_dir();

    let wide = tokio::task::spawn_blocking({
        let (url, shot) = (url.clone(), dir.join("overview.png"));
        move || {
            browser::load(
                &url,
                (1280, 720),
                0,
                &shot,
                &[
                    "document.querySelectorAll('tr.policy').length",
                    "document.querySelector('tr.policy.is-held .badge.held') !== null",
                    "document.querySelector('tr.policy [data-label=Current] .version').textContent",
                    "document.querySelector('tr.policy [data-label=\"Known-good\"] .version').textContent",
                    "document.querySelector('tr.policy [data-label=\"Last rollback\"]').textContent",
                    "document.querySelector('tr.policy [data-label=Hold]').textContent",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(wide.console.is_empty(), "{:?}", wide.console);
    // web, and web-production promoting from it.
    assert_eq!(wide.values[0], 2);
    assert_eq!(wide.values[1], true, "the held badge");
    assert_eq!(wide.values[2], "1.0.0");
    assert_eq!(wide.values[3], "1.0.0");
    assert!(
        wide.values[4].as_str().unwrap().contains("1.1.0 -> 1.0.0"),
        "{}",
        wide.values[4]
    );
    assert!(
        wide.values[5].as_str().unwrap().contains("alert:WebErrors"),
        "{}",
        wide.values[5]
    );
    eprintln!(
        "dashboard: / loaded in {:.0} ms (1280x720)",
        wide.load_ms.unwrap_or_default()
    );

    let detail = tokio::task::spawn_blocking({
        let (url, shot) = (format!("{url}policies/web"), dir.join("policy.png"));
        move || {
            browser::load(
                &url,
                (1280, 900),
                0,
                &shot,
                &[
                    "[...document.querySelectorAll('svg#timeline-30d circle.ev')].map(c => c.dataset.reason)",
                    "document.querySelector('svg#timeline-30d circle.ev-Held title').textContent",
                    "document.querySelectorAll('table.history tbody tr').length",
                    "document.querySelectorAll('svg#timeline-30d .held-span.open').length",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(detail.console.is_empty(), "{:?}", detail.console);
    let reasons: Vec<&str> = detail.values[0]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for want in ["Pushed", "Promoted", "Held", "RolledBack"] {
        assert!(reasons.contains(&want), "{want} in {reasons:?}");
    }
    let evidence = detail.values[1].as_str().unwrap();
    assert!(
        evidence.contains("WebErrors") && evidence.contains("web answers with errors"),
        "the alert's evidence on hover: {evidence}"
    );
    assert_eq!(
        usize::try_from(detail.values[2].as_u64().unwrap()).unwrap(),
        reasons.len(),
        "one history row per mark (all within 30 days)"
    );
    assert_eq!(detail.values[3], 1, "the hold in force is an open band");

    // A phone: nothing wider than the screen, every row still there.
    let phone = tokio::task::spawn_blocking({
        let (url, shot) = (url.clone(), dir.join("overview-375.png"));
        move || {
            browser::load(
                &url,
                (375, 812),
                0,
                &shot,
                &[
                    "document.documentElement.scrollWidth",
                    "window.innerWidth",
                    "[...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5).map(e => e.tagName + '.' + e.className)",
                    "getComputedStyle(document.querySelector('table.policies thead')).display",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(phone.console.is_empty(), "{:?}", phone.console);
    assert_eq!(phone.values[1], 375);
    assert!(
        phone.values[0].as_u64().unwrap() <= 375,
        "horizontal overflow at 375 px: {:?}",
        phone.values
    );
    assert_eq!(
        phone.values[2],
        serde_json::json!([]),
        "elements past the edge"
    );
    assert_eq!(phone.values[3], "none", "rows become cards");
    // The policy page too: the timeline scrolls inside its frame, the page does not.
    let phone_detail = tokio::task::spawn_blocking({
        let (url, shot) = (format!("{url}policies/web"), dir.join("policy-375.png"));
        move || {
            browser::load(
                &url,
                (375, 812),
                0,
                &shot,
                &["document.documentElement.scrollWidth"],
            )
        }
    })
    .await
    .unwrap();
    assert!(
        phone_detail.console.is_empty(),
        "{:?}",
        phone_detail.console
    );
    assert!(
        phone_detail.values[0].as_u64().unwrap() <= 375,
        "horizontal overflow of the policy page at 375 px: {:?}",
        phone_detail.values
    );

    // The page refreshes itself: a person lifts the hold while it is open.
    let refreshed = tokio::task::spawn_blocking({
        let (url, shot) = (url.clone(), dir.join("after-unhold.png"));
        move || {
            browser::load(
                &url,
                (1280, 720),
                20_000,
                &shot,
                &[
                    "document.querySelector('tr.policy.is-held') === null",
                    "document.querySelector('#refreshed').className",
                ],
            )
        }
    });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let unhold = tokio::process::Command::new(bin)
        .args(["unhold", "web", "--state"])
        .arg(Path::new(&work).join("state.db"))
        .output()
        .await
        .unwrap();
    assert!(
        unhold.status.success(),
        "{}",
        String::from_utf8_lossy(&unhold.stderr)
    );
    let refreshed = refreshed.await.unwrap();
    assert!(refreshed.console.is_empty(), "{:?}", refreshed.console);
    assert_eq!(
        refreshed.values[0], true,
        "the hold is gone without a reload"
    );
    assert_eq!(refreshed.values[1], "live");

    // Ctrl-C stops everything the demo started.
    interrupt(demo.id().unwrap());
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), demo.wait())
        .await
        .expect("the demo stops on Ctrl-C")
        .unwrap();
    assert!(!status.success(), "interrupted: {status:?}");
    assert!(!Path::new(&work).exists(), "{work} removed");
    let left = crate::support::process::processes_mentioning(&work);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// Sends SIGINT (Ctrl-C) to `pid`.
fn interrupt(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}

/// Interrupts the process when dropped (a second Ctrl-C after a clean stop finds no
/// such process and does nothing).
struct Interrupt(u32);

impl Drop for Interrupt {
    fn drop(&mut self) {
        if std::thread::panicking() {
            interrupt(self.0);
            // Give its trap time to stop the servers before the test binary exits.
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
    }
}
