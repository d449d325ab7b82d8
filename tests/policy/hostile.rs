//! Hostile and careless policy folders and state files (issue 14): each row of the
//! issue's table that concerns files is a case here. Every run of the binary has a
//! hang guard (it is killed and the test fails after a minute): a regression to
//! "blocks forever" fails instead of stalling the suite. No test asserts on speed;
//! `scripts/bench input` prints time and memory.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use autobump::policy;

const VALID: &str = "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {name: NAME}\nspec:\n  images:\n    - {prefix: registry.example.com/NAME/, tags: {dateSha: {}}}\n  source: {repo: REPO}\n  directPush: {}\n";

/// A valid direct-push policy named `name` whose repository is `repo`.
fn valid(name: &str, repo: &str) -> String {
    VALID.replace("NAME", name).replace("REPO", repo)
}

/// The alias bomb of the issue (F1): `levels` levels of ten aliases to the level below.
fn alias_bomb(levels: usize) -> String {
    let mut text = valid("bomb", "https://github.com/example/infra.git");
    let _ = writeln!(text, "x0: &a0 [{}]", ["lol"; 10].join(", "));
    for i in 1..=levels {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        let _ = writeln!(text, "x{i}: &a{i} [{refs}]");
    }
    text
}

/// Waits for `child`, killing it and failing after a minute: a hang guard, not a
/// speed check.
fn finish(mut child: Child, what: &str) -> (i32, String, String) {
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("{what} did not finish within a minute (blocked?)");
}

fn autobump_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args(args)
        .current_dir(dir)
        .env_remove("GITHUB_TOKEN")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child, &format!("autobump {}", args.join(" ")))
}

/// `autobump run --once` on `policies/`, state in `s.json`.
const RUN_ONCE: &[&str] = &[
    "run",
    "--once",
    "--policies",
    "policies",
    "--state",
    "s.json",
    "--cache-dir",
    "cache",
];

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn hostile_files_in_a_policy_folder_are_errors_naming_them_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policies");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(
        p.join("a-good.yaml"),
        valid("good", "https://github.com/example/infra.git"),
    )
    .unwrap();
    std::fs::write(p.join("bomb.yaml"), alias_bomb(7)).unwrap();
    // W1: a FIFO nobody writes to; W2: a symlink to an endless device.
    mkfifo(&p.join("fifo.yaml"));
    std::os::unix::fs::symlink("/dev/zero", p.join("zero.yaml")).unwrap();
    // One byte over the limit, and otherwise harmless (a comment).
    let mut big = String::from("#");
    big.push_str(&"x".repeat(usize::try_from(policy::load::MAX_FILE_BYTES).unwrap() - 2));
    big.push_str("\n\n");
    std::fs::write(p.join("huge.yaml"), big).unwrap();
    // Latin-1 where UTF-8 belongs (an editor's doing): "Zürich" as 0xFC.
    std::fs::write(
        p.join("latin1.yaml"),
        b"apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {name: z\xfcrich}\n",
    )
    .unwrap();

    let (code, out, err) = autobump_in(dir.path(), &["check", "policies"]);
    assert_eq!(code, 1, "{out}{err}");
    let expected = [
        "policies/bomb.yaml:13:5: the documents of this file expand to more than 200000 nodes (the limit; an alias counts its whole target each time it is used)",
        "policies/fifo.yaml:1:1: a FIFO, not a regular file: policies are read from regular files only",
        "policies/huge.yaml:1:1: larger than 1048576 bytes, the limit for a policy file",
        "policies/latin1.yaml:3:19: not UTF-8 text (byte 0xfc); policy files must be UTF-8",
        "policies/zero.yaml:1:1: a device, not a regular file: policies are read from regular files only",
        "invalid: 5 errors in 5 of 6 files; 1 policy valid",
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected, "{out}{err}");

    // The library says the same (what `run` acts on): the good policy loads.
    let loaded = policy::load_paths(std::slice::from_ref(&p)).unwrap();
    assert_eq!(
        loaded.policies.iter().map(|p| p.name()).collect::<Vec<_>>(),
        ["good"]
    );
    assert_eq!(loaded.diagnostics.len(), 5);
    assert_eq!(loaded.files.len(), 6);

    // A FIFO named on the command line is refused the same way.
    let (code, out, _) = autobump_in(dir.path(), &["check", "policies/fifo.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("policies/fifo.yaml:1:1: a FIFO"), "{out}");
}

#[test]
fn large_policies_are_checked_in_linear_time() {
    // W3: 90,000 label keys ending in a duplicate, and 15,000 images ending in one
    // that an earlier prefix covers (both were quadratic; both fit in 1 MiB).
    let mut keys = String::from(
        "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata:\n  name: keys\n  labels:\n",
    );
    for i in 0..60_000 {
        let _ = writeln!(keys, "    k{i}: v");
    }
    keys.push_str("    k17: again\n");
    let (_, diagnostics) = policy::load_str(Path::new("keys.yaml"), &keys);
    assert_eq!(
        diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["keys.yaml:60006:5: duplicate key \"k17\" (first at line 23)"]
    );

    let mut images = String::from(
        "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {name: images}\nspec:\n  source: {repo: https://github.com/example/infra.git}\n  images:\n    - {prefix: registry.example.com/team/, tags: {dateSha: {}}}\n",
    );
    for i in 0..15_000 {
        let _ = writeln!(
            images,
            "    - {{name: registry.example.com/app{i}, tags: {{dateSha: {{}}}}}}"
        );
    }
    images.push_str("    - {name: registry.example.com/team/x, tags: {dateSha: {}}}\n");
    images.push_str("    - {prefix: registry.example.com/, tags: {dateSha: {}}}\n");
    assert!(images.len() < 1 << 20);
    let (_, diagnostics) = policy::load_str(Path::new("images.yaml"), &images);
    assert_eq!(
        diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "images.yaml:15008:7: spec.images[15001]: image \"registry.example.com/team/x\" is already covered by spec.images[0]",
            // The new prefix covers every earlier entry; the first in name order is named.
            "images.yaml:15009:7: spec.images[15002]: image prefix \"registry.example.com/\" is already covered by spec.images[1]",
        ]
    );
}

#[test]
fn a_path_with_files_but_no_policy_is_exit_2_for_check_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policies");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("empty.yaml"), "").unwrap();
    std::fs::write(p.join("dashes.yaml"), "---\n# nothing yet\n---\n").unwrap();
    let want = "autobump: error: no policies in policies (2 files, each empty or only comments and `---`)\n";
    let (code, out, err) = autobump_in(dir.path(), &["check", "policies"]);
    assert_eq!((code, out.as_str(), err.as_str()), (2, "", want));
    let (code, _, err) = autobump_in(dir.path(), &["check", "policies/empty.yaml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no policies in policies/empty.yaml (1 file,"),
        "{err}"
    );

    let (code, out, err) = autobump_in(dir.path(), RUN_ONCE);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.ends_with(want), "{err}");
    assert!(!dir.path().join("s.json").exists(), "nothing was written");

    // With a policy among them, the empty files are fine.
    std::fs::write(
        p.join("one.yaml"),
        valid("one", "https://github.com/example/infra.git"),
    )
    .unwrap();
    let (code, out, _) = autobump_in(dir.path(), &["check", "policies"]);
    assert_eq!((code, out.as_str()), (0, "ok: 1 policy in 3 files\n"));
}

#[test]
fn a_password_in_a_repository_url_is_never_printed() {
    // F6: `http://user:PASS@host/x.git` is refused, but the error in `check` and
    // `run`'s log used to print the URL with the password.
    let secret = "s3cr3t-Pa55";
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policies");
    std::fs::create_dir(&p).unwrap();
    let repo = format!("http://deploy-bot:{secret}@git.example.com/infra.git");
    std::fs::write(p.join("leaky.yaml"), valid("leaky", &repo)).unwrap();
    // A valid neighbour on a local repository that does not exist (no network).
    let missing = format!("file://{}/no-such-repo", dir.path().display());
    std::fs::write(p.join("good.yaml"), valid("good", &missing)).unwrap();
    for output in ["text", "json"] {
        let (code, out, err) = autobump_in(dir.path(), &["check", "policies", "--output", output]);
        assert_eq!(code, 1, "the policy is refused: {out}{err}");
        assert!(
            format!("{out}{err}").contains("leaky.yaml"),
            "the error names the file: {out}{err}"
        );
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "check --output {output} printed the password:\n{out}{err}"
        );
    }
    let (_, out, err) = autobump_in(dir.path(), RUN_ONCE);
    assert!(
        err.contains("leaky.yaml"),
        "run reports the broken file: {err}"
    );
    assert!(
        !out.contains(secret) && !err.contains(secret),
        "run printed the password:\n{out}{err}"
    );
}

#[test]
fn error_messages_say_each_cause_once() {
    // W10: an I/O error whose message already includes its source was printed as
    // "...: Not a directory (os error 20): Not a directory (os error 20)".
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "").unwrap();
    let (code, _, err) = autobump_in(dir.path(), &["status", "--state", "file/state.json"]);
    assert_eq!(code, 2);
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
    assert!(err.contains("state file file/state.json"), "{err}");
}

/// Runs `autobump run --once` on a policy whose repository does not exist (its
/// reconcile fails and logs an ERROR) with stderr behind a pseudo-terminal
/// (`script`), and returns what was written there.
fn logs_on_a_terminal(dir: &Path, no_color: Option<&str>) -> String {
    let bin = env!("CARGO_BIN_EXE_autobump");
    let cmd =
        format!("{bin} run --once --policies policies --state s.json --cache-dir cache >/dev/null");
    let mut script = Command::new("script");
    script
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(dir)
        .env_remove("GITHUB_TOKEN")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(v) = no_color {
        script.env("NO_COLOR", v);
    }
    let (_, out, err) = finish(script.spawn().unwrap(), "script");
    assert!(out.contains("reconcile failed"), "{out}{err}");
    out
}

#[test]
fn logs_have_colours_only_on_a_terminal_and_never_with_no_color() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let missing = format!("file://{}/no-such-repo", dir.path().display());
    std::fs::write(dir.path().join("policies/p.yaml"), valid("p", &missing)).unwrap();

    // Into a pipe (a file, a log collector): plain text.
    let (code, _, err) = autobump_in(dir.path(), RUN_ONCE);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("reconcile failed"), "{err}");
    assert!(!err.contains('\x1b'), "escape codes in piped logs: {err:?}");

    // On a terminal: colours, unless NO_COLOR is set to anything but "".
    assert!(logs_on_a_terminal(dir.path(), None).contains("\x1b["));
    assert!(logs_on_a_terminal(dir.path(), Some("")).contains("\x1b["));
    assert!(!logs_on_a_terminal(dir.path(), Some("1")).contains('\x1b'));
}

/// One HTTP/1.1 GET on 127.0.0.1: the status code and the body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_owned()))
}

/// Polls `GET path` until `want` says yes (up to a minute, then fails).
fn wait_for(port: u16, path: &str, what: &str, want: impl Fn(u16, &str) -> bool) -> String {
    for _ in 0..600 {
        if let Some((status, body)) = get(port, path)
            && want(status, &body)
        {
            return body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: never happened; last answer {:?}", get(port, path));
}

fn metric(port: u16, name: &str) -> u64 {
    let (_, body) = get(port, "/metrics").expect("/metrics answers");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

#[test]
fn run_keeps_going_through_policy_folder_trouble_and_turns_not_ready_only_after_a_while() {
    // F2: a file that is not UTF-8, the folder missing while it is swapped, and then
    // missing for good: the controller never exits, /healthz stays up, each problem
    // is logged once, and /readyz turns 503 only after --not-ready-after.
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let missing = format!("file://{}/no-such-repo", dir.path().display());
    std::fs::write(policies.join("p.yaml"), valid("p", &missing)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_autobump"))
        // RUN_ONCE without --once.
        .arg("run")
        .args(&RUN_ONCE[2..])
        .args(["--interval", "1s", "--not-ready-after", "3s"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env_remove("GITHUB_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let alive = |child: &mut Child| {
        assert!(
            child.try_wait().unwrap().is_none(),
            "autobump exited: {}",
            std::fs::read_to_string(dir.path().join("log")).unwrap()
        );
    };
    wait_for(port, "/readyz", "ready after the first pass", |s, _| {
        s == 200
    });

    // A file that is not UTF-8: a problem of that file; the rest runs, still ready.
    std::fs::write(policies.join("bad.yaml"), b"metadata:\n  name: \xff\n").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    alive(&mut child);
    assert_eq!(metric(port, "autobump_policy_files_invalid"), 1);
    assert_eq!(get(port, "/readyz").unwrap().0, 200);

    // The folder replaced by a rename (missing for 0.3 s), as a deploy tool does.
    let aside = dir.path().join("policies.old");
    std::fs::rename(&policies, &aside).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::rename(&aside, &policies).unwrap();
    alive(&mut child);

    // Missing for good: still up, counted, and not ready once 3 s have passed.
    let errors_before = metric(port, "autobump_policy_load_errors_total");
    std::fs::rename(&policies, &aside).unwrap();
    let why = wait_for(
        port,
        "/readyz",
        "not ready after --not-ready-after",
        |s, _| s == 503,
    );
    assert!(
        why.starts_with("not ready: loading the policies has failed for "),
        "{why}"
    );
    assert!(why.contains("policies: no such file or directory"), "{why}");
    assert_eq!(get(port, "/healthz").map(|(s, _)| s), Some(200));
    alive(&mut child);
    assert!(metric(port, "autobump_policy_load_errors_total") > errors_before + 1);

    // Back: ready again.
    std::fs::rename(&aside, &policies).unwrap();
    wait_for(
        port,
        "/readyz",
        "ready once the policies load again",
        |s, _| s == 200,
    );
    alive(&mut child);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, _, _) = finish(child, "autobump run after SIGTERM");
    assert_eq!(code, 0);
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    let count = |s: &str| log.lines().filter(|l| l.contains(s)).count();
    // Logged once per change, although several ticks saw each problem.
    assert_eq!(count("bad.yaml:2:9: not UTF-8 text"), 1, "{log}");
    assert!(
        (1..=2).contains(&count("loading the policies failed")),
        "once for the long absence (and at most once for the 0.3 s swap): {log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("loading the policies failed")
                && l.contains("policies: no such file or directory"))
            .count(),
        count("loading the policies failed"),
        "{log}"
    );
    assert!(count("the policies load again") >= 1, "{log}");
}

#[test]
fn the_state_file_of_another_version_stops_run_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/p.yaml"),
        valid("p", "https://github.com/example/infra.git"),
    )
    .unwrap();
    let newer = r#"{"version": 1, "policies": {"p": {"hold": null, "quarantine": {"until": "2027-01-01T00:00:00Z"}}}}"#;
    std::fs::write(dir.path().join("s.json"), newer).unwrap();
    let (code, out, err) = autobump_in(dir.path(), RUN_ONCE);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("state file s.json: fields this version of autobump does not know (policies.p.quarantine)"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("s.json")).unwrap(),
        newer
    );
    let (code, _, err) = autobump_in(
        dir.path(),
        &["hold", "p", "--reason", "x", "--state", "s.json"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("policies.p.quarantine"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("s.json")).unwrap(),
        newer
    );
}
