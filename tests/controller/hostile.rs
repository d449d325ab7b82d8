//! Issue 14 (F3, W4): one slow or hostile registry delays no other policy by more than
//! its own reconcile deadline, and a stop request cancels the reconciles in flight;
//! (F5) a policy cannot make autobump send the GitHub token to another host.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use autobump::controller::standalone::{PolicyOutcome, Standalone, Tick};
use axum::Router;
use axum::routing::get;

use super::support::git::GitHttpServer;
use super::support::scripted::Served;
use super::{NEW, OLD, World, direct_policy_text};

/// A registry that accepts the connection and never answers a tag list; counts the
/// requests.
async fn stalling_registry() -> (Served, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    let served = Served::start(Router::new().route(
        "/v2/slow/app/tags/list",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "never"
            }
        }),
    ))
    .await;
    (served, requests)
}

/// `autobump run --policies policies` in `dir` with this state and tick, stderr to
/// `dir/log` (returned with the child, which is killed when dropped).
fn spawn_run(
    dir: &std::path::Path,
    state: &str,
    interval: &str,
) -> (tokio::process::Child, std::path::PathBuf) {
    let log = dir.join("log");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args(["run", "--policies", "policies", "--state", state])
        .args(["--cache-dir", "cache", "--interval", interval])
        .current_dir(dir)
        .env_remove("GITHUB_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, log)
}

/// Adds an image on `stalled` to the world's repository.
fn reference_the_stalled_registry(w: &World, stalled: &Served) {
    w.fake.commit(
        "main",
        &[(
            "config/slow/app.yaml",
            Some(&format!("image: {}/slow/app:{OLD}\n", stalled.host())),
        )],
        "Add an app from a slow registry",
    );
}

/// Policies `a` (the image on `stalled`) and `b` (the world's images), both direct
/// push to the world's repository.
fn driver(
    w: &World,
    stalled: &Served,
    dir: &std::path::Path,
    concurrency: usize,
    deadline: Duration,
) -> Standalone {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let a = direct_policy_text(w, "a").replace(
        &format!("{}/prow/", w.registry.host()),
        &format!("{}/slow/", stalled.host()),
    );
    std::fs::write(policies.join("a.yaml"), a).unwrap();
    std::fs::write(policies.join("b.yaml"), direct_policy_text(w, "b")).unwrap();
    super::standalone_driver_within(&policies, dir, deadline).with_concurrency(concurrency)
}

fn outcome<'a>(tick: &'a Tick, name: &str) -> &'a PolicyOutcome {
    tick.outcomes
        .get(name)
        .unwrap_or_else(|| panic!("no outcome for {name}: {tick:?}"))
}

#[tokio::test]
async fn a_stalled_registry_fails_its_own_policy_at_the_deadline_and_no_other() {
    let w = World::new("").await;
    let (stalled, _requests) = stalling_registry().await;
    let dir = tempfile::tempdir().unwrap();
    reference_the_stalled_registry(&w, &stalled);
    // One at a time: b waits for a, but no longer than a's deadline.
    for concurrency in [1, 2] {
        let mut driver = driver(
            &w,
            &stalled,
            dir.path(),
            concurrency,
            Duration::from_secs(2),
        );
        let tick = driver.tick(&AtomicBool::new(false)).await.unwrap();
        match outcome(&tick, "a") {
            PolicyOutcome::Failed(e) => {
                assert_eq!(e.metric_label(), "deadline", "{e}");
                assert!(e.is_retryable());
                assert!(e.to_string().contains("deadline of 2s"), "{e}");
            }
            other => panic!("a: {other:?}"),
        }
        assert!(
            matches!(outcome(&tick, "b"), PolicyOutcome::Done(_)),
            "concurrency {concurrency}: {tick:?}"
        );
        w.wait_for_hook_tag(NEW, "b bumped").await;
        let metrics = driver.metrics().render();
        assert!(
            metrics.contains(r#"autobump_reconcile_errors_total{policy="a",reason="deadline"} 1"#),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn a_stop_request_cancels_the_reconcile_in_flight() {
    let w = World::new("").await;
    let (stalled, _requests) = stalling_registry().await;
    let dir = tempfile::tempdir().unwrap();
    reference_the_stalled_registry(&w, &stalled);
    // A deadline far away: only the stop request can end a's reconcile.
    let mut driver = driver(&w, &stalled, dir.path(), 2, Duration::from_secs(3600));
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = {
        let stop = Arc::clone(&stop);
        let hook = w.fake.git_dir().to_owned();
        tokio::spawn(async move {
            // Once b has pushed its bump, only a is still running.
            let deadline = autobump::clock::Deadline::after(Duration::from_secs(60));
            loop {
                let file = super::support::git::git(&hook, &["show", "main:config/prow/hook.yaml"]);
                if file.contains(NEW) || deadline.expired() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let tick = driver.tick(&stop).await.unwrap();
    stopper.await.unwrap();
    assert!(
        matches!(outcome(&tick, "b"), PolicyOutcome::Done(_)),
        "{tick:?}"
    );
    assert!(
        matches!(outcome(&tick, "a"), PolicyOutcome::Skipped(why) if why.contains("cancelled: shutting down")),
        "{tick:?}"
    );
    // The state file is intact and still usable after the cancellation.
    let store = autobump::store::SqliteStore::open(&dir.path().join("state.json")).unwrap();
    let names = autobump::store::Store::policies(&store).unwrap();
    assert!(names.iter().any(|n| n == "b"), "{names:?}");
    let again = driver.tick(&AtomicBool::new(true)).await.unwrap();
    assert!(
        again.outcomes.is_empty(),
        "stopped before any start: {again:?}"
    );
}

/// `autobump run` sent SIGTERM while a reconcile waits on a registry that never
/// answers (issue 14, F3: the signal was logged and ignored): it cancels the
/// reconcile and exits 0.
#[tokio::test]
async fn sigterm_mid_request_ends_the_process() {
    let w = World::new("").await;
    let (stalled, requests) = stalling_registry().await;
    reference_the_stalled_registry(&w, &stalled);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let a = direct_policy_text(&w, "a").replace(
        &format!("{}/prow/", w.registry.host()),
        &format!("{}/slow/", stalled.host()),
    );
    std::fs::write(dir.path().join("policies/a.yaml"), a).unwrap();
    let (mut child, log) = spawn_run(dir.path(), "state.json", "1h");
    // Wait until the tag request is in flight (the stalled server has it).
    super::support::wait_until(
        "the reconcile to reach the stalled registry",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || match requests.load(Ordering::SeqCst) {
            0 => Err(std::fs::read_to_string(&log).unwrap_or_default()),
            _ => Ok(()),
        },
    )
    .await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("still running 30 s after SIGTERM")
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("cancelled: shutting down"), "{text}");
}

/// `autobump run --once` with `GITHUB_TOKEN` set and a policy whose repository is on
/// another host over plain HTTP (issue 14, F5: that host received the token).
async fn run_once_against(server: &GitHttpServer, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/p.yaml"),
        format!(
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: p}}\nspec:\n  images:\n    - prefix: 127.0.0.1:9/team/\n      tags: {{semver: {{}}}}\n  source:\n    repo: {}\n  directPush: {{}}\n",
            server.url("infra.git")
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args([
            "run",
            "--once",
            "--policies",
            "policies",
            "--state",
            "state.json",
        ])
        .args([
            "--cache-dir",
            "cache",
            "--github-api",
            "https://api.github.com",
        ])
        .args(extra)
        .current_dir(dir.path())
        .env("GITHUB_TOKEN", GITHUB_TOKEN)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(GITHUB_TOKEN), "{text}");
    text
}

const GITHUB_TOKEN: &str = "ghs_f5secrettoken";

#[tokio::test]
async fn the_github_token_goes_to_no_other_git_host() {
    let root = tempfile::tempdir().unwrap();
    super::support::git::bare_repo(
        root.path(),
        "infra.git",
        &[("deploy/app.yaml", "image: 127.0.0.1:9/team/app:v1.0.0\n")],
    );
    let server = GitHttpServer::start(root.path(), "x-access-token", GITHUB_TOKEN);
    let out = run_once_against(&server, &[]).await;
    let requests = server.requests();
    assert!(!requests.is_empty(), "the remote was never asked: {out}");
    assert!(
        requests.iter().all(|r| r.credentials.is_none()),
        "credentials sent to a host that is not GitHub's: {requests:?}"
    );

    // Named as the GitHub host (a loopback test installation), it gets the token.
    server.clear_requests();
    let host = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    run_once_against(&server, &["--github-git-host", &host]).await;
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.credentials == Some(true)),
        "{:?}",
        server.requests()
    );
}

/// `autobump hold` / `unhold` as a separate process on the database of a running
/// `autobump run`: exit code and stdout.
async fn cli(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args(args)
        .args(["--state", "state.db"])
        .current_dir(dir)
        .env("USER", "tester")
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Each of `c0`…`c49` ends held with reason `final` after exactly Held, Unheld, Held.
fn each_own_policy_held_unheld_and_held_again(store: &autobump::store::SqliteStore) {
    use autobump::store::Store as _;
    for i in 0..50 {
        let name = format!("c{i}");
        let state = store.load(&name).unwrap();
        assert_eq!(
            state.hold.as_ref().map(|h| h.reason.as_str()),
            Some("final"),
            "{name}"
        );
        let history: Vec<(u64, String)> = store
            .history(&name, None)
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.reason.to_string()))
            .collect();
        assert_eq!(
            history,
            [(1, "Held".into()), (2, "Unheld".into()), (3, "Held".into())],
            "{name}"
        );
    }
}

/// Issue 16: 50 `autobump hold`/`unhold` processes at once against a running
/// `autobump run` (reconciling every second, writing the same database) lose no
/// update: every policy ends in exactly the expected state with every event in its
/// history, and on the one row all of them and the controller write, the holds and
/// unholds that changed something alternate with no gap in the sequence. A second
/// `run` on the database refuses to start.
#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario, start to stop
async fn fifty_concurrent_holds_and_unholds_against_a_running_run_lose_nothing() {
    use autobump::store::Store as _;
    let w = World::new("").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/a.yaml"),
        direct_policy_text(&w, "a"),
    )
    .unwrap();
    let (mut run, log) = spawn_run(dir.path(), "state.db", "1s");
    let db = dir.path().join("state.db");
    // Running: its first reconcile recorded the policy.
    super::support::wait_until(
        "the first reconcile of the running autobump",
        Duration::from_secs(60),
        Duration::from_millis(100),
        async || {
            let known = db.exists()
                && autobump::store::SqliteStore::open(&db)
                    .and_then(|s| s.policies())
                    .is_ok_and(|p| p.iter().any(|n| n == "a"));
            if known {
                Ok(())
            } else {
                Err(std::fs::read_to_string(&log).unwrap_or_default())
            }
        },
    )
    .await;

    // A second run on the same database refuses, naming the first.
    let (code, text) = cli(
        dir.path(),
        &[
            "run",
            "--once",
            "--policies",
            "policies",
            "--cache-dir",
            "cache2",
        ],
    )
    .await;
    assert_eq!(code, Some(2), "{text}");
    let pid = run.id().unwrap();
    assert!(
        text.contains("is in use by another autobump run (pid ")
            && text.contains(&format!("pid {pid} on host ")),
        "{text}"
    );

    // 50 processes at once: each holds, unholds and holds again its own policy
    // (their rows are written while the controller writes a's).
    let own = (0..50).map(|i| {
        let dir = dir.path().to_path_buf();
        async move {
            let name = format!("c{i}");
            for args in [
                vec!["hold", &name, "--reason", "first"],
                vec!["unhold", &name],
                vec!["hold", &name, "--reason", "final"],
            ] {
                let (code, text) = cli(&dir, &args).await;
                assert_eq!(code, Some(0), "{args:?}: {text}");
            }
        }
    });
    futures::future::join_all(own).await;
    // Then 50 at once on the controller's own row: 25 holds, 25 unholds, all racing.
    let racing = (0..50).map(|i| {
        let dir = dir.path().to_path_buf();
        async move {
            let reason = format!("race {i}");
            let args: Vec<&str> = if i % 2 == 0 {
                vec!["hold", "a", "--reason", &reason]
            } else {
                vec!["unhold", "a"]
            };
            let (code, text) = cli(&dir, &args).await;
            assert_eq!(code, Some(0), "{args:?}: {text}");
        }
    });
    futures::future::join_all(racing).await;

    let store = autobump::store::SqliteStore::open(&db).unwrap();
    each_own_policy_held_unheld_and_held_again(&store);
    // On a's row: holds and unholds alternate (each hold and unhold that changed
    // something is one entry), sequence numbers have no gap, and the final state
    // agrees with the last entry.
    let a = store.history("a", None).unwrap();
    let seqs: Vec<u64> = a.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=a.len() as u64).collect::<Vec<_>>(), "{a:?}");
    let cli_entries: Vec<&str> = a
        .iter()
        .filter(|e| e.message.contains("tester"))
        .map(|e| e.reason.as_str())
        .collect();
    assert!(!cli_entries.is_empty(), "{a:?}");
    for pair in cli_entries.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "holds and unholds alternate: {cli_entries:?}"
        );
    }
    let held = store.load("a").unwrap().hold.is_some();
    assert_eq!(held, cli_entries.last() == Some(&"Held"), "{cli_entries:?}");

    // The run is still running, and stops cleanly (releasing the lease).
    assert!(
        run.try_wait().unwrap().is_none(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), run.wait())
        .await
        .expect("still running 30 s after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let (code, text) = cli(
        dir.path(),
        &[
            "run",
            "--once",
            "--policies",
            "policies",
            "--cache-dir",
            "cache",
        ],
    )
    .await;
    assert!(!text.contains("in use by another"), "{text}");
    assert!(code.is_some(), "{text}");
}
