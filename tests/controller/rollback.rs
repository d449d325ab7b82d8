//! `autobump rollback` through the binary, then the controller acting on the request
//! it records: a direct-push policy and a pull-request policy, both on a state file
//! that the CLI and the reconcile share.

use std::path::Path;

use autobump::controller::{Deps, ForgeAccess, reconcile};
use autobump::core::gate::GateVerdict;
use autobump::forge::Forges;
use autobump::policy;
use autobump::registry::RegistryClient;
use autobump::repo::GitRepo;
use autobump::store::{SqliteStore, Store as _};

use super::{MONDAY, NEW, NEWER, OLD, World, at, direct_policy_text, kinds, waiting};

const GATE: &str =
    "  gate: {prometheus: http://127.0.0.1:9, alerts: '{team=\"prow\"}', bake: 30m}\n";

/// `autobump ARGS --state STATE` run by `$USER=user`: exit code, stdout, stderr.
async fn cli(state: &Path, user: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_autobump"))
        .args(args)
        .arg("--state")
        .arg(state)
        .env("USER", user)
        .env_remove("AUTOBUMP_STATE")
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asks for a rollback of `name` and expects exit 1 with `why` on stderr.
async fn refused(state: &Path, name: &str, why: &str) {
    let (code, out, err) = cli(state, "oncall", &["rollback", name, "--reason", "x"]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains(why), "{why:?} in {err:?}");
    assert!(out.is_empty(), "{out}");
}

fn reasons(store: &SqliteStore, name: &str) -> Vec<String> {
    store
        .load(name)
        .unwrap()
        .history
        .iter()
        .map(|h| h.reason.to_string())
        .collect()
}

/// The direct-push reconcile's dependencies on `store`.
fn direct_deps_on<'a>(
    w: &'a World,
    policy: &autobump::policy::Policy,
    store: &'a SqliteStore,
) -> Deps<'a, RegistryClient, GitRepo, SqliteStore> {
    let base = w.direct_deps(policy);
    Deps {
        forge: None,
        resolver: base.resolver,
        repo: base.repo,
        store,
        source: base.source.clone(),
        workloads: None,
    }
}

impl World {
    /// The pull-request reconcile's dependencies on `store` instead of the memory store.
    fn deps_on<'a>(
        &'a self,
        store: &'a SqliteStore,
    ) -> Deps<'a, RegistryClient, GitRepo, SqliteStore, Forges> {
        let base = self.deps();
        let forge = base.forge.as_ref().unwrap();
        Deps {
            resolver: base.resolver,
            repo: base.repo,
            forge: Some(ForgeAccess {
                forge: forge.forge,
                repo: forge.repo.clone(),
                bot_login: forge.bot_login.clone(),
            }),
            store,
            source: base.source.clone(),
            workloads: None,
        }
    }

    pub(crate) fn main_commit_message(&self) -> String {
        let repo = git2::Repository::open_bare(self.fake.git_dir()).unwrap();
        repo.find_reference("refs/heads/main")
            .unwrap()
            .peel_to_commit()
            .unwrap()
            .message()
            .unwrap()
            .to_owned()
    }
}

// One story from the first bake to the next good version; split, it would repeat it.
#[allow(clippy::too_many_lines)]
#[tokio::test]
async fn autobump_rollback_pushes_the_known_good_back_held_by_the_requester() {
    let w = World::new("").await;
    let host = w.registry.host();
    let text = direct_policy_text(&w, "direct") + GATE;
    let (mut policies, diagnostics) = policy::load_str(Path::new("direct.yaml"), &text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let direct = policies.remove(0);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let store = SqliteStore::open(&state).unwrap();
    let deps = direct_deps_on(&w, &direct, &store);
    let step = |now: &'static str| {
        let (policy, deps) = (&direct, &deps);
        async move {
            reconcile(policy, deps, GateVerdict::Clear, at(now))
                .await
                .unwrap_or_else(|e| panic!("reconcile at {now}: {e}"))
        }
    };

    // Nothing recorded yet, then nothing known-good yet: refused, nothing written.
    refused(&state, "direct", "recorded nothing for it").await;
    assert!(!state.exists(), "a refusal writes nothing");
    let r = step("2026-11-23T10:00:00Z").await;
    assert!(waiting(&r).contains("is baking (30m left)"), "{r:?}");
    refused(&state, "direct", "no last known-good version").await;
    // OLD baked clean: known-good, and NEW is pushed. The deployed version is still
    // the known-good one until a reconcile sees NEW on main: refused.
    let r = step("2026-11-23T10:31:00Z").await;
    assert_eq!(kinds(&r), ["Promote", "PushDirect", "RecordBump"], "{r:?}");
    refused(
        &state,
        "direct",
        &format!("already runs its last known-good version {OLD}"),
    )
    .await;
    let r = step("2026-11-23T10:32:00Z").await;
    assert!(waiting(&r).contains(&format!("{NEW} is baking")), "{r:?}");

    // NEW hurts but no alert says so: a person asks for the rollback.
    let (code, out, err) = cli(
        &state,
        "oncall",
        &["rollback", "direct", "--reason", "checkout errors"],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        format!("direct: rollback from {NEW} to {OLD} requested by cli:oncall: checkout errors\n")
    );
    let (code, again, _) = cli(&state, "other", &["rollback", "direct", "--reason", "y"]).await;
    assert_eq!(code, Some(0));
    assert!(
        again.contains("already requested by cli:oncall") && again.contains("nothing changed"),
        "{again}"
    );
    let request = store.load("direct").unwrap().rollback_request.unwrap();
    assert_eq!(
        (request.by.as_str(), request.reason.as_str()),
        ("cli:oncall", "checkout errors")
    );
    assert_eq!(
        reasons(&store, "direct").last().unwrap(),
        "RollbackRequested"
    );

    // The next reconcile, with the gate Clear: OLD is pushed back at once.
    let before = w.fake.branch_sha("main").unwrap();
    let r = step("2026-11-23T10:40:00Z").await;
    assert_eq!(kinds(&r), ["Rollback"], "{r:?}");
    assert_ne!(w.fake.branch_sha("main").unwrap(), before);
    assert!(
        w.file_on("main", "config/prow/hook.yaml")
            .contains(&format!("{host}/prow/hook:{OLD}  # keep this comment"))
    );
    assert!(w.file_on("main", "config/prow/deck.yaml").contains(OLD));
    let message = w.main_commit_message();
    assert!(
        message.starts_with(&format!("Roll back direct to {OLD}\n")),
        "{message}"
    );
    assert!(
        message.ends_with("Autobump-Rollback: rollback requested by cli:oncall: checkout errors\n"),
        "{message}"
    );
    let s = store.load("direct").unwrap();
    let hold = s.hold.clone().expect("held");
    assert_eq!(
        (
            hold.by.as_str(),
            hold.automatic,
            hold.via.as_deref(),
            hold.reason.as_str()
        ),
        (
            "cli:oncall",
            false,
            Some("cli"),
            format!("rollback from {NEW} requested: checkout errors").as_str()
        )
    );
    assert!(s.rollback_request.is_none(), "the request is consumed");
    assert!(
        s.bad_pairs()
            .contains(&(format!("{host}/prow/hook"), NEW.to_owned()))
    );
    let history = reasons(&store, "direct");
    let tail: Vec<&str> = history[history.len() - 3..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        ["RollbackRequested", "Held", "RolledBack"],
        "{history:?}"
    );

    // Done once: the next reconcile rolls nothing back again, and there is nothing
    // left to roll back.
    let main_after = w.fake.branch_sha("main").unwrap();
    let r = step("2026-11-23T10:41:00Z").await;
    assert!(!kinds(&r).contains(&"Rollback"), "{r:?}");
    assert_eq!(w.fake.branch_sha("main").unwrap(), main_after);
    refused(
        &state,
        "direct",
        &format!("already runs its last known-good version {OLD}"),
    )
    .await;

    // Another person lifts the requester's hold: NEW is never proposed again...
    let (code, out, _) = cli(&state, "lead", &["unhold", "direct"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        format!(
            "direct: lifted the hold by cli:oncall (rollback from {NEW} requested: checkout errors)\n"
        )
    );
    let r = step("2026-11-23T11:00:00Z").await;
    assert!(r.effects.is_empty(), "{r:?}");
    assert_eq!(w.fake.branch_sha("main").unwrap(), main_after);
    // ...and NEWER goes out (after the minimum interval since NEW).
    for image in ["prow/hook", "prow/deck"] {
        w.registry.retag(image, OLD, NEWER).await;
    }
    let r = step("2026-11-23T11:35:00Z").await;
    assert_eq!(kinds(&r), ["PushDirect", "RecordBump"], "{r:?}");
    let hook = w.file_on("main", "config/prow/hook.yaml");
    assert!(hook.contains(NEWER) && !hook.contains(NEW), "{hook}");
}

/// A policy already held by someone else (with a gate that says Unknown) is rolled
/// back all the same; the hold in force stays as it is.
#[tokio::test]
async fn a_held_policy_is_rolled_back_on_request_and_keeps_its_hold() {
    let w = World::new("").await;
    let text = direct_policy_text(&w, "direct") + GATE;
    let (mut policies, diagnostics) = policy::load_str(Path::new("direct.yaml"), &text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let direct = policies.remove(0);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let store = SqliteStore::open(&state).unwrap();
    let deps = direct_deps_on(&w, &direct, &store);
    for now in [
        "2026-11-23T10:00:00Z",
        "2026-11-23T10:31:00Z",
        "2026-11-23T10:32:00Z",
    ] {
        reconcile(&direct, &deps, GateVerdict::Clear, at(now))
            .await
            .unwrap();
    }
    assert_eq!(store.load("direct").unwrap().current.unwrap().summary, NEW);
    let (code, out, _) = cli(&state, "lead", &["hold", "direct", "--reason", "freeze"]).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out, err) = cli(
        &state,
        "oncall",
        &["rollback", "direct", "--reason", "slow"],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");

    let unknown = GateVerdict::Unknown("prometheus down".into());
    let r = reconcile(&direct, &deps, unknown.clone(), at("2026-11-23T10:40:00Z"))
        .await
        .unwrap();
    assert_eq!(kinds(&r), ["Rollback"], "{r:?}");
    assert!(w.file_on("main", "config/prow/hook.yaml").contains(OLD));
    let s = store.load("direct").unwrap();
    let hold = s.hold.unwrap();
    assert_eq!(
        (hold.by.as_str(), hold.reason.as_str()),
        ("cli:lead", "freeze")
    );
    assert!(s.rollback_request.is_none());
    assert_eq!(s.bad_versions.len(), 2, "{:?}", s.bad_versions);
}

/// A request that finds nothing to roll back (the deployed version became the
/// known-good one in the meantime, say by an alert-driven rollback) is dropped with a
/// history entry saying so, and changes nothing else.
#[tokio::test]
async fn a_request_with_nothing_to_roll_back_is_dropped_with_a_record() {
    let w = World::new("").await;
    let text = direct_policy_text(&w, "direct");
    let (mut policies, diagnostics) = policy::load_str(Path::new("direct.yaml"), &text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let direct = policies.remove(0);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.json")).unwrap();
    let deps = direct_deps_on(&w, &direct, &store);
    // Without a gate OLD is known-good at once; hold it so that nothing else happens.
    store
        .update("direct", &mut |s| {
            s.hold = Some(autobump::policy::v1alpha1::Hold {
                by: "cli:lead".into(),
                since: at(MONDAY),
                reason: "quiet".into(),
                via: Some("cli".into()),
                automatic: false,
            });
        })
        .unwrap();
    reconcile(&direct, &deps, GateVerdict::Clear, at(MONDAY))
        .await
        .unwrap();
    assert_eq!(
        store
            .load("direct")
            .unwrap()
            .last_known_good
            .unwrap()
            .summary,
        OLD
    );
    store
        .update("direct", &mut |s| {
            s.rollback_request = Some(autobump::policy::v1alpha1::RollbackRequest {
                by: "cli:oncall".into(),
                since: at(MONDAY),
                reason: "too late".into(),
                via: Some("cli".into()),
            });
        })
        .unwrap();
    let before = w.fake.branch_sha("main").unwrap();
    let r = reconcile(
        &direct,
        &deps,
        GateVerdict::Clear,
        at("2026-11-23T10:01:00Z"),
    )
    .await
    .unwrap();
    assert!(!kinds(&r).contains(&"Rollback"), "{r:?}");
    assert_eq!(w.fake.branch_sha("main").unwrap(), before);
    let s = store.load("direct").unwrap();
    assert!(s.rollback_request.is_none());
    assert!(s.bad_versions.is_empty());
    assert_eq!(s.hold.unwrap().by, "cli:lead", "the hold is untouched");
    let last = s.history.last().unwrap();
    assert_eq!(last.reason, "NothingToRollBack");
    assert_eq!(
        last.message,
        format!(
            "rollback requested by cli:oncall: too late; nothing to roll back: {OLD} on main is the last known-good"
        )
    );
}

#[tokio::test]
async fn autobump_rollback_opens_and_merges_a_rollback_pr_outside_the_window() {
    let w = World::new(GATE).await;
    let host = w.registry.host();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let store = SqliteStore::open(&state).unwrap();
    let deps = w.deps_on(&store);
    let step = |now: &'static str| {
        let deps = &deps;
        let policy = &w.policy;
        async move {
            autobump::controller::reconcile(policy, deps, GateVerdict::Clear, at(now))
                .await
                .unwrap_or_else(|e| panic!("reconcile at {now}: {e}"))
        }
    };

    // OLD bakes, becomes known-good; the bump PR to NEW opens, goes green, merges.
    step(MONDAY).await;
    let r = step("2026-11-23T10:31:00Z").await;
    assert_eq!(
        kinds(&r),
        ["Promote", "PushBranch", "CreatePr", "RecordBump"],
        "{r:?}"
    );
    let head = w.fake.branch_sha("autobump-prow").unwrap();
    w.fake
        .add_check_run(&head, "unit", "completed", Some("success"));
    let r = step("2026-11-23T10:35:00Z").await;
    assert_eq!(kinds(&r), ["Merge"], "{r:?}");
    let r = step("2026-11-23T10:36:00Z").await;
    assert!(waiting(&r).contains(&format!("{NEW} is baking")), "{r:?}");

    // The evening, outside the window, the gate Clear: a person asks for the rollback.
    let (code, out, err) = cli(
        &state,
        "oncall",
        &["rollback", "prow", "--reason", "webhooks time out"],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let r = step("2026-11-23T19:00:00Z").await;
    assert_eq!(kinds(&r)[..2], ["Rollback", "Merge"], "{r:?}");
    let rollback = w.fake.pull(2);
    assert_eq!(
        rollback.title,
        format!("autobump(prow): roll back to {OLD}")
    );
    assert!(rollback.merged);
    let body = rollback.body.unwrap_or_default();
    assert!(
        body.contains("Why: rollback requested by cli:oncall: webhooks time out"),
        "{body}"
    );
    assert!(
        w.file_on("main", "config/prow/hook.yaml")
            .contains(&format!("{host}/prow/hook:{OLD}  # keep this comment"))
    );
    let s = store.load("prow").unwrap();
    let hold = s.hold.clone().expect("held");
    assert_eq!((hold.by.as_str(), hold.automatic), ("cli:oncall", false));
    assert!(s.rollback_request.is_none());
    assert!(
        s.bad_pairs()
            .contains(&(format!("{host}/prow/hook"), NEW.to_owned()))
    );
    assert!(
        reasons(&store, "prow").contains(&"RolledBack".to_owned()),
        "{:?}",
        reasons(&store, "prow")
    );

    // Once only; and after the hold is lifted, inside the window, NEW is never
    // proposed again.
    let r = step("2026-11-23T19:01:00Z").await;
    assert!(
        !kinds(&r).contains(&"Rollback") && !kinds(&r).contains(&"CreatePr"),
        "{r:?}"
    );
    let (code, _, _) = cli(&state, "lead", &["unhold", "prow"]).await;
    assert_eq!(code, Some(0));
    let r = step("2026-11-24T10:00:00Z").await;
    assert!(!kinds(&r).contains(&"CreatePr"), "{r:?}");
    assert_eq!(w.fake.pulls().len(), 2, "no third pull request");
    w.fake.assert_responses_valid();
}
