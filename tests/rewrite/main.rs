//! Golden tests of rewriting: `tests/testdata/rewrite/<case>/{before,after}/`, an
//! `args` file (the `autobump rewrite` arguments after DIR, one or more per line;
//! `--policy` paths are relative to the case directory), `stdout` (what the
//! command prints), and `notices` when the rewrite has any (`FILE:LINE: message`,
//! one per line). Each case runs through the library and through the binary, and
//! both must give `after/` byte for byte.
//!
//! A case with a `digest-tags` file (`IMAGE@DIGEST=TAG` lines: what the registry
//! lists, as `pinDigest` resolution finds it) runs through the library only: the
//! command line has no registry to ask, so digest-only references move only in
//! `autobump run`.
//!
//! `AUTOBUMP_BLESS=1 cargo test --test rewrite` rewrites `after/`, `stdout` and
//! `notices` from the library's output. Review the diff by eye before committing it.

mod props;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use autobump::core::rewrite::{DigestTag, Plan, Target};
use autobump::files::{self, TreeRewrite};
use autobump::policy::v1alpha1::RewriteMode;
use autobump::policy::values::Glob;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/rewrite")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(testdata())
        .expect("tests/testdata/rewrite")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("args").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "expected at least 15 golden cases");
    cases
}

fn bless() -> bool {
    std::env::var_os("AUTOBUMP_BLESS").is_some_and(|v| v == "1")
}

fn args(case: &Path) -> Vec<String> {
    let text = fs::read_to_string(case.join("args")).unwrap();
    let mut args: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    for i in 1..args.len() {
        if args[i - 1] == "--policy" {
            args[i] = case.join(&args[i]).to_string_lossy().into_owned();
        }
    }
    args
}

/// The same choices `autobump rewrite` makes from its arguments (plus the case's
/// digest tags).
fn run_library(case: &Path, dir: &Path, args: &[String]) -> TreeRewrite {
    let mut targets = Vec::new();
    let mut mode = None;
    let (mut include, mut exclude, mut policy) = (Vec::new(), Vec::new(), None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().expect("flag value").clone();
        match flag.as_str() {
            "--set" => targets.push(value.parse::<Target>().unwrap()),
            "--mode" => {
                mode = Some(if value == "text" {
                    RewriteMode::Text
                } else {
                    RewriteMode::Structured
                });
            }
            "--include" => include.push(value.parse::<Glob>().unwrap()),
            "--exclude" => exclude.push(value.parse::<Glob>().unwrap()),
            "--policy" => policy = Some(PathBuf::from(value)),
            other => panic!("unknown flag in args: {other}"),
        }
    }
    let (mut p_mode, mut p_include, mut p_exclude) = (
        RewriteMode::Structured,
        vec!["**/*.yaml".parse().unwrap(), "**/*.yml".parse().unwrap()],
        Vec::new(),
    );
    if let Some(file) = policy {
        let loaded = autobump::policy::load_paths(&[file]).unwrap();
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let spec = &loaded.policies[0].spec;
        targets = targets
            .into_iter()
            .map(|t| t.with_policy(&spec.images).unwrap())
            .collect();
        p_mode = spec.source.mode;
        p_include.clone_from(&spec.source.include);
        p_exclude.clone_from(&spec.source.exclude);
    }
    let include = if include.is_empty() {
        p_include
    } else {
        include
    };
    let exclude = if exclude.is_empty() {
        p_exclude
    } else {
        exclude
    };
    let plan = Plan::new(&targets)
        .unwrap()
        .with_digest_tags(digest_tags(case));
    files::rewrite_tree(dir, &include, &exclude, mode.unwrap_or(p_mode), &plan).unwrap()
}

/// The case's `digest-tags` file (`IMAGE@DIGEST=TAG` per line), if any.
fn digest_tags(case: &Path) -> Vec<DigestTag> {
    let Ok(text) = fs::read_to_string(case.join("digest-tags")) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (reference, tag) = l.split_once('=').expect("IMAGE@DIGEST=TAG");
            let (image, digest) = reference.split_once('@').expect("IMAGE@DIGEST=TAG");
            DigestTag {
                image: image.to_owned(),
                digest: digest.to_owned(),
                tag: tag.to_owned(),
            }
        })
        .collect()
}

fn notices_of(tree: &TreeRewrite) -> String {
    let mut out = String::new();
    for n in &tree.notices {
        writeln!(out, "{n}").unwrap();
    }
    out
}

fn stdout_of(tree: &TreeRewrite) -> String {
    let mut out = String::new();
    for c in tree.changes() {
        writeln!(out, "{}:{}: {} -> {}", c.file, c.line, c.old, c.new).unwrap();
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &format!("{rel}/"), out);
            } else {
                out.insert(rel, fs::read(entry.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}

fn assert_same_tree(case: &Path, got: &Path, how: &str) {
    let want = read_tree(&case.join("after"));
    let got = read_tree(got);
    let name = case.file_name().unwrap().to_string_lossy();
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{name} ({how}): file sets differ"
    );
    for (file, bytes) in &want {
        let got = &got[file];
        assert!(
            bytes == got,
            "{name} ({how}): {file} differs from after/ (AUTOBUMP_BLESS=1 to update):\n{}",
            autobump::core::rewrite::unified_diff(
                file,
                &String::from_utf8_lossy(bytes),
                &String::from_utf8_lossy(got)
            )
        );
    }
}

#[test]
fn golden_cases_through_the_library() {
    for case in cases() {
        let tmp = tempfile::tempdir().unwrap();
        copy_tree(&case.join("before"), tmp.path());
        let tree = run_library(&case, tmp.path(), &args(&case));
        tree.write(tmp.path()).unwrap();
        let stdout = stdout_of(&tree);
        let notices = notices_of(&tree);
        if bless() {
            let after = case.join("after");
            if after.exists() {
                fs::remove_dir_all(&after).unwrap();
            }
            copy_tree(tmp.path(), &after);
            fs::write(case.join("stdout"), &stdout).unwrap();
            if notices.is_empty() {
                let _ = fs::remove_file(case.join("notices"));
            } else {
                fs::write(case.join("notices"), &notices).unwrap();
            }
        }
        assert_same_tree(&case, tmp.path(), "library");
        let name = case.file_name().unwrap().to_string_lossy();
        assert_eq!(
            fs::read_to_string(case.join("stdout")).unwrap(),
            stdout,
            "{name}: changes"
        );
        assert_eq!(
            fs::read_to_string(case.join("notices")).unwrap_or_default(),
            notices,
            "{name}: notices"
        );
        // Rewriting again changes nothing: the result is a fixed point.
        let again = run_library(&case, tmp.path(), &args(&case));
        assert!(
            again.files.is_empty(),
            "{name}: second run changed {:?}",
            again.files
        );
    }
}

fn autobump(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args(args)
        .output()
        .expect("run autobump")
}

#[test]
fn golden_cases_through_the_binary() {
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        if case.join("digest-tags").exists() {
            continue; // no registry on the command line: see the module docs
        }
        let tmp = tempfile::tempdir().unwrap();
        copy_tree(&case.join("before"), tmp.path());
        let mut argv = vec![
            "rewrite".to_owned(),
            tmp.path().to_string_lossy().into_owned(),
        ];
        argv.extend(args(&case));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = autobump(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert_eq!(
            fs::read_to_string(case.join("stdout")).unwrap(),
            String::from_utf8(out.stdout).unwrap(),
            "{name}: stdout"
        );
        for notice in fs::read_to_string(case.join("notices"))
            .unwrap_or_default()
            .lines()
        {
            assert!(
                stderr.contains(&format!("autobump: warning: {notice}")),
                "{name}: stderr lacks {notice:?}:\n{stderr}"
            );
        }
        assert_same_tree(&case, tmp.path(), "binary");
    }
}

#[test]
fn dry_run_prints_a_diff_and_writes_nothing() {
    let case = testdata().join("crlf");
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&case.join("before"), tmp.path());
    let dir = tmp.path().to_string_lossy().into_owned();
    let out = autobump(&[
        "rewrite",
        &dir,
        "--set",
        "gcr.io/acme/app=v20240202-bbbbbbb-master",
        "--dry-run",
    ]);
    assert!(out.status.success());
    let diff = String::from_utf8(out.stdout).unwrap();
    assert_eq!(read_tree(tmp.path()), read_tree(&case.join("before")));
    let want = "--- a/lf-no-final-newline.yaml\n\
                +++ b/lf-no-final-newline.yaml\n\
                @@ -1 +1 @@\n\
                -image: gcr.io/acme/app:v20240101-aaaaaaa-master\n\
                \\ No newline at end of file\n\
                +image: gcr.io/acme/app:v20240202-bbbbbbb-master\n\
                \\ No newline at end of file\n";
    assert!(diff.contains(want), "{diff}");
    assert!(diff.contains("--- a/crlf.yaml\n+++ b/crlf.yaml\n@@ -3,6 +3,6 @@\n"));
    assert!(diff.contains("\n-      image: gcr.io/acme/app:v20240101-aaaaaaa-master\r\n"));
    assert!(diff.contains("\n+      image: gcr.io/acme/app:v20240202-bbbbbbb-master\r\n"));
    assert_eq!(diff.matches("--- a/").count(), 4, "{diff}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("nothing written"), "{stderr}");
}

#[test]
fn nothing_to_change_is_success() {
    let case = testdata().join("latest-untouched");
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&case.join("before"), tmp.path());
    let dir = tmp.path().to_string_lossy().into_owned();
    let out = autobump(&["rewrite", &dir, "--set", "gcr.io/other/app=1.0.0"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no changes"));
    assert_eq!(read_tree(tmp.path()), read_tree(&case.join("before")));
}

#[test]
fn usage_and_io_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_string_lossy().into_owned();
    let missing = tmp.path().join("missing").to_string_lossy().into_owned();
    for (args, message) in [
        (vec!["rewrite", &dir, "--set", "nginx"], "IMAGE=TAG"),
        (vec!["rewrite", &dir, "--set", "nginx=latest"], "floating"),
        (
            vec![
                "rewrite",
                &dir,
                "--set",
                "nginx=1.0.0",
                "--set",
                "nginx=1.1.0",
            ],
            "conflicting",
        ),
        (vec!["rewrite", &missing, "--set", "nginx=1.0.0"], "missing"),
        (
            vec!["rewrite", &dir, "--set", "nginx=1.0.0", "--include", "/abs"],
            "relative",
        ),
        (vec!["rewrite", &dir], "--set"),
    ] {
        let out = autobump(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[cfg(unix)]
#[test]
fn writes_keep_permissions_and_leave_no_temporary_files() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("run.yaml");
    fs::write(&file, "image: gcr.io/acme/app:v1.0.0\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    let dir = tmp.path().to_string_lossy().into_owned();
    let out = autobump(&["rewrite", &dir, "--set", "gcr.io/acme/app=v1.0.1"]);
    assert!(out.status.success());
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "image: gcr.io/acme/app:v1.0.1\n"
    );
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn scan_tree_lists_references_by_file() {
    let case = testdata().join("excluded");
    let include: Vec<Glob> = vec!["**/*.yaml".parse().unwrap()];
    let exclude: Vec<Glob> = vec!["legacy/**".parse().unwrap()];
    let found = files::scan_tree(
        &case.join("before"),
        &include,
        &exclude,
        RewriteMode::Structured,
    )
    .unwrap();
    let files: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        files,
        [
            "apps/.hidden/deploy.yaml",
            "apps/deploy.generated.yaml",
            "apps/deploy.yaml"
        ]
    );
    assert!(
        found.iter().all(|(_, refs)| refs.len() == 1
            && refs[0].reference.to_string() == "gcr.io/acme/app:v1.0.0")
    );
}

/// What each golden tree of issue 17 holds, by the kind of place a reference was
/// found in (references without a tag included): the readers find every reference
/// of their class, and nothing else.
#[test]
fn golden_trees_find_each_class() {
    use autobump::core::rewrite::RefKind::{
        Dockerfile, HelmParameter, HelmValues, ImageValue, Marker, Template, Text,
    };
    let cases = [
        ("katib-configmap", vec![(ImageValue, 11)]),
        (
            "argocd-application",
            vec![(ImageValue, 3), (HelmValues, 2), (HelmParameter, 2)],
        ),
        ("image-keys", vec![(ImageValue, 6), (HelmValues, 5)]),
        ("chart-template", vec![(Template, 4)]),
        ("knative-digest-only", vec![(ImageValue, 4), (Marker, 1)]),
        (
            "dockerfile-compose",
            vec![(ImageValue, 4), (Dockerfile, 6), (Text, 2)],
        ),
    ];
    for (name, want) in cases {
        let case = testdata().join(name);
        let mut include: Vec<Glob> = Vec::new();
        for w in args(&case).windows(2) {
            if w[0] == "--include" {
                include.push(w[1].parse().unwrap());
            }
        }
        if include.is_empty() {
            include = vec!["**/*.yaml".parse().unwrap(), "**/*.yml".parse().unwrap()];
        }
        let found =
            files::scan_tree(&case.join("before"), &include, &[], RewriteMode::Structured).unwrap();
        let mut got: Vec<(autobump::core::rewrite::RefKind, usize)> = Vec::new();
        for f in found.iter().flat_map(|(_, refs)| refs) {
            match got.iter_mut().find(|(k, _)| *k == f.kind) {
                Some((_, n)) => *n += 1,
                None => got.push((f.kind, 1)),
            }
        }
        let mut want = want;
        want.sort_by_key(|(k, _)| format!("{k:?}"));
        got.sort_by_key(|(k, _)| format!("{k:?}"));
        assert_eq!(got, want, "{name}");
    }
}

/// Issue 17: `autobump check` accepts a prefix that is a registry with a port and no
/// path, as `rewrite --set localhost:5000/=…` does.
#[test]
fn check_accepts_a_registry_with_a_port_as_prefix() {
    let policy = testdata().join("policy-registry-prefix/policy.yaml");
    let out = autobump(&["check", &policy.to_string_lossy()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ok: 1 polic"), "{stdout}");
}
