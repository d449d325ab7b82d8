//! The policy API end to end: the example policies load, every broken policy in
//! `tests/testdata/invalid/` produces exactly its recorded errors, the checked-in CRD
//! matches the types, and `autobump check` / `autobump crd` behave as documented.
//!
//! Set `AUTOBUMP_BLESS=1` to rewrite the `.err` files from the current output (then
//! review the diff: each line is a promise to users).

use std::path::{Path, PathBuf};
use std::process::Command;

use autobump::policy::{self, v1alpha1::TagPolicy};

mod hostile;
mod props;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rel(p: &Path) -> PathBuf {
    p.strip_prefix(root()).unwrap_or(p).to_path_buf()
}

fn autobump(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run autobump");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn example_policies_are_valid() {
    let loaded = policy::load_paths(&[root().join("policies")]).unwrap();
    assert!(
        loaded.diagnostics.is_empty(),
        "{}",
        loaded
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(loaded.files.len() >= 3);
    let by_name = |n: &str| {
        loaded
            .policies
            .iter()
            .find(|p| p.name() == n)
            .unwrap_or_else(|| panic!("policy {n} not loaded"))
    };

    let prow = by_name("prow");
    let image = &prow.spec.images[0];
    assert!(matches!(image.tags, TagPolicy::DateSha(_)));
    assert!(image.consistent);
    assert_eq!(image.prefix.as_ref().unwrap().as_str(), "gcr.io/k8s-prow/");
    assert_eq!(
        prow.spec.schedule.timezone.to_string(),
        "America/Los_Angeles"
    );
    assert_eq!(prow.spec.gate.as_ref().unwrap().alerts.matchers.len(), 2);

    let payments = by_name("payments-api");
    assert!(payments.spec.images.iter().all(|i| i.pin_digest));
    assert!(matches!(payments.spec.images[0].tags, TagPolicy::Semver(_)));
    assert!(payments.spec.gate.as_ref().unwrap().alertmanager.is_some());

    let docs = by_name("docs-site");
    assert!(docs.spec.direct_push.is_some() && docs.spec.pull_request.is_none());
    // Defaults: UTC, no windows, branch from the file, merge method squash.
    assert_eq!(docs.spec.schedule.timezone.to_string(), "UTC");
    assert!(docs.spec.schedule.windows.is_empty());

    // The promotion pair: production takes only what staging proved; both rewrite
    // podinfo in one repository and branch, each in its own directory.
    let staging = by_name("podinfo-staging");
    let production = by_name("podinfo-production");
    assert!(staging.spec.promotion.is_none());
    assert_eq!(
        production.spec.promotion.as_ref().unwrap().from.as_str(),
        "podinfo-staging"
    );
    assert_eq!(staging.spec.source.repo, production.spec.source.repo);
    assert_eq!(staging.spec.images[0].name, production.spec.images[0].name);
    assert_ne!(staging.spec.source.include, production.spec.source.include);
}

/// A GitLab project in a nested group on a host that does not say GitLab: `check`
/// accepts it and the project path is what the API is asked about.
#[test]
fn a_gitlab_policy_names_its_forge() {
    let loaded =
        policy::load_paths(&[root().join("tests/testdata/forge/shop-gitlab.yaml")]).unwrap();
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let shop = &loaded.policies[0];
    let forge = shop.spec.source.forge;
    assert_eq!(forge, Some(autobump::forge::ForgeKind::GitLab));
    assert_eq!(
        autobump::forge::RepoName::locate(shop.spec.source.repo.as_str(), forge, None),
        Ok(autobump::forge::RepoName::gitlab("acme/platform", "deploy"))
    );
}

/// The example's schedule, as the planner will see it: Pacific working hours, the
/// holiday freeze inclusive of its last day, one bump an hour.
#[test]
fn example_schedule_is_the_pure_schedule() {
    use chrono::{DateTime, Utc};
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    let loaded = policy::load_paths(&[root().join("policies/prow.yaml")]).unwrap();
    let schedule = loaded.policies[0].spec.schedule.to_schedule();
    // Friday 2026-11-20 16:59 PST is open; 17:00 PST is closed until Monday 09:00 PST.
    assert!(schedule.is_open(at("2026-11-21T00:59:00Z")));
    assert!(!schedule.is_open(at("2026-11-21T01:00:00Z")));
    assert_eq!(
        schedule.next_open(at("2026-11-21T01:00:00Z"), None),
        Some(at("2026-11-23T17:00:00Z"))
    );
    // The freeze runs through Monday 2027-01-04, so Tuesday 09:00 PST is next.
    assert_eq!(
        schedule.next_open(at("2026-12-18T20:00:00Z"), Some(at("2026-12-18T19:30:00Z"))),
        Some(at("2026-12-18T20:30:00Z"))
    );
    assert_eq!(
        schedule.next_open(at("2026-12-21T17:00:00Z"), None),
        Some(at("2027-01-05T17:00:00Z"))
    );
}

/// Policies also arrive as custom resources (JSON from the API server): the types
/// must read back what they write.
#[test]
fn example_policies_round_trip_through_json() {
    let loaded = policy::load_paths(&[root().join("policies")]).unwrap();
    for p in &loaded.policies {
        let cr = p.to_resource();
        let json = serde_json::to_string(&cr).unwrap();
        let back: policy::Autobump = serde_json::from_str(&json).unwrap();
        assert_eq!(back.spec, p.spec, "{}", p.name());
    }
}

fn invalid_cases() -> Vec<PathBuf> {
    let dir = root().join("tests/testdata/invalid");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    cases
}

#[test]
fn every_invalid_policy_produces_its_recorded_errors() {
    let cases = invalid_cases();
    assert!(cases.len() >= 20, "only {} invalid cases", cases.len());
    let bless = std::env::var_os("AUTOBUMP_BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases {
        let arg = rel(&case);
        let loaded = policy::load_paths(std::slice::from_ref(&arg)).unwrap();
        assert!(
            !loaded.diagnostics.is_empty(),
            "{} loaded without errors",
            arg.display()
        );
        let got: String = loaded
            .diagnostics
            .iter()
            .fold(String::new(), |acc, d| acc + &d.to_string() + "\n");
        let expected_file = case.with_extension("err");
        if bless {
            std::fs::write(&expected_file, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|_| panic!("{} is missing", expected_file.display()));
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                arg.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_error_line_has_file_line_col_and_field_path() {
    for case in invalid_cases() {
        let text = std::fs::read_to_string(case.with_extension("err")).unwrap();
        for line in text.lines() {
            let mut parts = line.splitn(5, ':');
            let file = parts.next().unwrap();
            let line_no: usize = parts.next().unwrap().parse().expect(line);
            let col: usize = parts.next().unwrap().parse().expect(line);
            assert!(file.starts_with("tests/testdata/invalid/"), "{line}");
            assert!(line_no >= 1 && col >= 1, "{line}");
        }
    }
}

#[test]
fn check_exits_0_on_valid_policies_with_a_summary() {
    let (code, out, err) = autobump(&["check", "policies/"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].starts_with("ok: 5 policies in 5 files"), "{out}");
}

#[test]
fn check_exits_1_and_prints_every_error() {
    let (code, out, _) = autobump(&["check", "tests/testdata/invalid/several-errors.yaml"]);
    assert_eq!(code, 1);
    let expected =
        std::fs::read_to_string(root().join("tests/testdata/invalid/several-errors.err")).unwrap();
    assert!(out.starts_with(&expected), "{out}");
    assert!(expected.lines().count() >= 4, "several errors expected");
    assert!(
        out.lines().last().unwrap().starts_with("invalid: "),
        "{out}"
    );

    // All files are checked, not just the first broken one.
    let (code, out, _) = autobump(&[
        "check",
        "tests/testdata/invalid/bad-duration.yaml",
        "tests/testdata/invalid/bad-glob.yaml",
        "policies/",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("bad-duration.yaml:") && out.contains("bad-glob.yaml:"),
        "{out}"
    );
    assert!(out.contains("5 policies valid"), "{out}");
}

#[test]
fn check_output_json_lists_errors() {
    let (code, out, _) = autobump(&[
        "check",
        "--output",
        "json",
        "tests/testdata/invalid/bad-duration.yaml",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    let e = &v["errors"][0];
    assert_eq!(e["file"], "tests/testdata/invalid/bad-duration.yaml");
    assert_eq!(e["path"], "spec.schedule.minInterval");
    assert!(e["line"].as_u64().unwrap() > 1 && e["column"].as_u64().unwrap() > 1);
    assert!(e["message"].as_str().unwrap().contains("1hour"));

    let (code, out, _) = autobump(&["check", "-o", "json", "policies"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["policies"].as_u64()),
        (Some(true), Some(5))
    );
}

#[test]
fn check_exits_2_on_usage_and_io_errors() {
    let (code, _, err) = autobump(&["check", "no/such/dir"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no/such/dir: no such file or directory"),
        "{err}"
    );
    let (code, _, _) = autobump(&["check"]);
    assert_eq!(code, 2, "no PATH is a usage error");
    let (code, _, _) = autobump(&["check", "--output", "xml", "policies"]);
    assert_eq!(code, 2);
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = autobump(&["check", empty.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no policy files"), "{err}");
}

#[test]
fn help_lists_only_working_commands() {
    let (code, out, _) = autobump(&["--help"]);
    assert_eq!(code, 0);
    let commands: Vec<&str> = out
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        // Command lines are indented by two spaces; wrapped descriptions by more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "check", "resolve", "rewrite", "run", "hold", "unhold", "rollback", "status",
            "history", "crd", "help"
        ]
    );
}

#[test]
fn hold_and_unhold_record_who_why_and_survive_in_the_state_file() {
    use autobump::store::Store as _;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let state = state.to_str().unwrap();
    let (code, out, _) = autobump(&["hold", "prow", "--reason", "DB migration", "--state", state]);
    assert_eq!(code, 0);
    assert!(out.contains("prow held by cli:"), "{out}");
    let (code, out, _) = autobump(&["hold", "prow", "--reason", "again", "--state", state]);
    assert_eq!(code, 0);
    assert!(
        out.contains("already held") && out.contains("DB migration"),
        "{out}"
    );
    // Read back from the database, as a restarted process would.
    let saved = autobump::store::SqliteStore::open(state.as_ref())
        .unwrap()
        .load("prow")
        .unwrap();
    let hold = saved.hold.unwrap();
    assert_eq!(hold.reason, "DB migration");
    assert_eq!(hold.via.as_deref(), Some("cli"));
    let hold_json = serde_json::to_value(&hold).unwrap();
    assert!(hold_json["since"].as_str().unwrap().ends_with('Z'));
    let (code, out, _) = autobump(&["unhold", "prow", "--state", state]);
    assert_eq!(code, 0);
    assert!(out.contains("lifted the hold"), "{out}");
    let store = autobump::store::SqliteStore::open(state.as_ref()).unwrap();
    assert!(store.load("prow").unwrap().hold.is_none());
    assert_eq!(store.load("prow").unwrap().history.len(), 2);
    // `autobump history` prints both, oldest first, as text and as JSON.
    let (code, out, err) = autobump(&["history", "prow", "--state", state]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("    #1  ") && lines[0].contains("Held"),
        "{out}"
    );
    assert!(lines[0].contains("DB migration"), "{out}");
    assert!(
        lines[1].starts_with("    #2  ") && lines[1].contains("Unheld"),
        "{out}"
    );
    let (code, out, _) = autobump(&["history", "prow", "--state", state, "--output", "json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["policy"], "prow");
    assert_eq!(doc["entries"][1]["reason"], "Unheld");
    assert_eq!(doc["entries"][1]["seq"], 2);
    // --since in the future: nothing; an unknown policy: exit 2 naming the known ones.
    let (code, out, _) = autobump(&["history", "prow", "--state", state, "--since", "2999-01-01"]);
    assert_eq!(code, 0);
    assert_eq!(out, "prow: no history entry in that time\n");
    let (code, _, err) = autobump(&["history", "prwo", "--state", state]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no policy prwo in the state (policies: prow)"),
        "{err}"
    );
    let (code, _, err) = autobump(&["history", "prow", "--state", state, "--since", "lately"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid --since \"lately\""), "{err}");
    let (code, _, err) = autobump(&["hold", "prow", "--reason", " ", "--state", state]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn status_shows_holds_and_windows_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let state = state.to_str().unwrap();
    let policies = root().join("policies");
    let policies = policies.to_str().unwrap();
    // No state yet: every defined policy is listed, nothing held.
    let (code, out, err) = autobump(&["status", "--state", state, "--policies", policies]);
    assert_eq!(code, 0, "{err}");
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("POLICY") && header.contains("NEXT WINDOW"),
        "{out}"
    );
    let prow = out
        .lines()
        .find(|l| l.starts_with("prow "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(prow.contains("open now") || prow.contains(" in "), "{prow}");

    let (code, _, _) = autobump(&["hold", "prow", "--reason", "DB migration", "--state", state]);
    assert_eq!(code, 0);
    let (code, out, _) = autobump(&["status", "--state", state, "--policies", policies]);
    assert_eq!(code, 0);
    let prow = out.lines().find(|l| l.starts_with("prow ")).unwrap();
    assert!(
        prow.contains("by cli:") && prow.contains("DB migration"),
        "{out}"
    );

    let (code, out, _) = autobump(&["status", "--state", state, "--output", "json"]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["policy"], "prow");
    assert_eq!(rows[0]["hold"]["reason"], "DB migration");
    assert_eq!(rows[0]["defined"], false, "no --policies: state only");
}

/// A first `autobump status` (no state yet, no policies named) says where it looked
/// and how to begin, instead of printing an empty table.
#[test]
fn status_without_state_says_where_it_looked_and_how_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("autobump-state.json");
    let state = state.to_str().unwrap();
    let (code, out, err) = autobump(&["status", "--state", state]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "", "no empty table");
    assert!(
        err.contains(&format!("the state file {state} does not exist")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "autobump run --policies policies/ --state {state}"
        )),
        "{err}"
    );
    // JSON stays machine-readable: an empty list, the hint on stderr.
    let (code, out, err) = autobump(&["status", "--state", state, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!([])
    );
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn checked_in_crd_matches_the_types() {
    let generated = policy::crd_yaml();
    let checked_in = std::fs::read_to_string(root().join("manifests/crd.yaml")).unwrap();
    assert!(
        generated == checked_in,
        "manifests/crd.yaml is stale: run `cargo run -- crd > manifests/crd.yaml`"
    );
    let (code, out, _) = autobump(&["crd"]);
    assert_eq!(code, 0);
    assert_eq!(out, checked_in);
}

#[test]
fn crd_has_status_subresource_printer_columns_and_a_structural_schema() {
    let crd: serde_json::Value = yaml_serde::from_str(&policy::crd_yaml()).unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["group"], "autobump.dev");
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Current", "Known-good", "Held", "Age"]);
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["required"], serde_json::json!(["images", "source"]));
    // Structural schemas may not use $ref; every node needs a type or x-kubernetes marker.
    let text = serde_json::to_string(&crd).unwrap();
    assert!(!text.contains("$ref"), "CRD schema must be inlined");
}

/// Issue 16: an existing user's JSON state file (`--state state.json`) is imported
/// into the database next to it by the first command, in one go, kept renamed
/// `state.json.imported`, and the log says so; the history and the hold survive.
#[test]
fn a_json_state_file_is_imported_by_the_first_command_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("state.json");
    // The format earlier versions wrote (`autobump hold` then `unhold` then `hold`).
    std::fs::write(
        &json,
        r#"{
  "version": 1,
  "policies": {
    "prow": {
      "hold": {"by": "cli:alice", "since": "2026-11-21T10:05:00Z", "reason": "DB migration", "via": "cli", "automatic": false},
      "lastKnownGood": {"summary": "v20261101-aaaaaaa", "images": [{"image": "gcr.io/k8s-prow/hook", "tag": "v20261101-aaaaaaa"}], "since": "2026-11-02T09:00:00Z"},
      "badVersions": [{"image": "gcr.io/k8s-prow/hook", "tag": "v20261110-bbbbbbb"}],
      "notifiedSeq": 2,
      "history": [
        {"at": "2026-11-21T10:00:00Z", "reason": "Held", "message": "held by cli:alice: freeze", "seq": 1},
        {"at": "2026-11-21T10:01:00Z", "reason": "Unheld", "message": "hold by cli:alice lifted by cli:alice (cli)", "seq": 2},
        {"at": "2026-11-21T10:05:00Z", "reason": "Held", "message": "held by cli:alice: DB migration", "seq": 3}
      ]
    }
  }
}
"#,
    )
    .unwrap();
    let state = json.to_str().unwrap();
    let (code, out, err) = autobump(&["status", "--state", state, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("imported the JSON state file into the state database"),
        "{err}"
    );
    assert!(
        err.contains(&format!("from={state}"))
            && err.contains("policies=1")
            && err.contains("kept_as="),
        "{err}"
    );
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["hold"]["reason"], "DB migration");
    assert!(!json.exists());
    assert!(dir.path().join("state.json.imported").is_file());
    assert!(dir.path().join("state.db").is_file());
    // The same --state keeps working, now on the database; nothing imported twice.
    let (code, out, err) = autobump(&["history", "prow", "--state", state]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("imported"), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines().last().unwrap().contains("DB migration"),
        "{out}"
    );
    let (code, out, _) = autobump(&["unhold", "prow", "--state", state]);
    assert_eq!(code, 0);
    assert!(out.contains("lifted the hold"), "{out}");
    let (_, out, _) = autobump(&["history", "prow", "--state", state, "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["entries"][3]["seq"], 4, "the sequence goes on");
}

/// The standalone driver reloads its policy files every tick through a cache: a file
/// rewritten (even within the same second, at the same size) is parsed again, a
/// removed file's policies are gone, and an unchanged one gives the same policies.
#[test]
fn cached_loading_sees_every_change_of_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let policy = |name: &str, tag: &str| {
        format!(
            "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: {name}}}\nspec:\n  images:\n    - name: registry.example/app\n      tags: {{semver: {{}}}}\n  source:\n    repo: https://github.com/acme/infra.git\n    include: [\"apps/{tag}.yaml\"]\n  directPush: {{}}\n"
        )
    };
    std::fs::write(dir.path().join("a.yaml"), policy("a", "web")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), policy("b", "api")).unwrap();
    let paths = vec![dir.path().to_owned()];
    let mut cache = autobump::policy::LoadCache::default();
    let include = |loaded: &autobump::policy::Loaded, name: &str| {
        loaded
            .policies
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.spec.source.include[0].as_str().to_owned())
    };
    let first = autobump::policy::load_paths_cached(&paths, &mut cache).unwrap();
    assert_eq!(include(&first, "a").as_deref(), Some("apps/web.yaml"));
    let again = autobump::policy::load_paths_cached(&paths, &mut cache).unwrap();
    assert_eq!(again.policies, first.policies);

    // Same size, same second: still seen.
    std::fs::write(dir.path().join("a.yaml"), policy("a", "dbs")).unwrap();
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    let changed = autobump::policy::load_paths_cached(&paths, &mut cache).unwrap();
    assert_eq!(include(&changed, "a").as_deref(), Some("apps/dbs.yaml"));
    assert_eq!(include(&changed, "b"), None);
    assert_eq!(
        changed.policies,
        autobump::policy::load_paths(&paths).unwrap().policies
    );
}
