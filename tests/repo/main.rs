//! The git adapter (`autobump::repo`) against real repositories: bare repositories
//! over `file://`, and over smart HTTP with basic auth (`git http-backend` behind a
//! server in this process, `tests/support/git.rs`). Fixtures are built and results
//! checked with the `git` command, independently of libgit2. If `git` is missing,
//! run `scripts/setup`.
//!
//! SSH is not tested end to end (no sshd here): `src/repo/auth.rs` unit-tests that an
//! SSH key is offered for `ssh://` URLs, once.

#[path = "../support/mod.rs"]
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use autobump::core::rewrite::{Plan, Target};
use autobump::policy::v1alpha1::RewriteMode;
use autobump::repo::{
    Auth, BumpRequest, Delivery, GitConfig, GitRepo, Person, PreparedBump, Repo, RepoError, Source,
};
use chrono::{DateTime, TimeZone as _, Utc};
use support::git::{GitHttpServer, bare_repo, commit_to, git, git_command, rev_parse};
use tempfile::TempDir;

const HOOK: &str = "\
# hook: the webhook server
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hook
spec:
  template:
    spec:
      containers:
        - name: hook
          image: gcr.io/k8s-prow/hook:v20240101-abc1234  # bumped by autobump
          args: [\"--dry-run=false\"]
";

const DECK: &str = "\
spec:
  containers:
    - image: \"gcr.io/k8s-prow/deck:v20240101-abc1234\"
    - image: 'gcr.io/k8s-prow/deck:v20240101-abc1234-arm64'
    - image: gcr.io/k8s-prow/deck:latest
";

const LEGACY: &str = "image: gcr.io/k8s-prow/hook:v20240101-abc1234\n";
const README: &str = "Deploys gcr.io/k8s-prow/hook:v20240101-abc1234\n";

fn files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("config/prow/hook.yaml", HOOK),
        ("config/prow/deck.yaml", DECK),
        ("config/prow/legacy/old.yaml", LEGACY),
        ("README.md", README),
    ]
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 8, 9, 0, 0).unwrap()
}

fn config(cache: &Path) -> GitConfig {
    let mut c = GitConfig::new(
        cache,
        Person {
            name: "autobump-bot".into(),
            email: "bot@example.com".into(),
        },
    );
    c.committer = Person {
        name: "Autobump".into(),
        email: "autobump@example.com".into(),
    };
    c
}

/// A bare origin with the fixture files, a cache directory and a client.
struct Fixture {
    dir: TempDir,
    origin: PathBuf,
    repo: GitRepo,
    source: Source,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let origin = bare_repo(dir.path(), "infra.git", &files());
        let url = format!("file://{}", origin.display());
        let repo = GitRepo::new(config(&dir.path().join("cache")));
        Self {
            source: Source {
                url: url.parse().unwrap(),
                branch: "main".parse().unwrap(),
                auth: Auth::None,
            },
            dir,
            origin,
            repo,
        }
    }

    fn cache(&self) -> PathBuf {
        self.repo.cache_path(&self.source.url)
    }

    fn request(&self, tag: &str, delivery: Delivery) -> BumpRequest {
        request(self.source.clone(), tag, delivery)
    }

    fn origin_ref(&self, name: &str) -> Option<String> {
        rev_parse(&self.origin, name)
    }
}

fn request(source: Source, tag: &str, delivery: Delivery) -> BumpRequest {
    BumpRequest {
        source,
        policy: "prow".into(),
        plan: Plan::new(&[Target::parse(&format!("gcr.io/k8s-prow/={tag}")).unwrap()]).unwrap(),
        include: vec!["config/**/*.yaml".parse().unwrap()],
        exclude: vec!["config/**/legacy/**".parse().unwrap()],
        mode: RewriteMode::Structured,
        delivery,
        rollback: None,
        promoted: None,
    }
}

fn pr() -> Delivery {
    Delivery::PullRequest {
        branch: "autobump-prow".parse().unwrap(),
    }
}

fn commit_of(bump: &PreparedBump) -> &autobump::repo::BumpCommit {
    bump.commit.as_ref().expect("the plan changes something")
}

#[tokio::test]
async fn first_run_clones_later_runs_fetch_into_the_same_cache() {
    let f = Fixture::new();
    let first = f.repo.fetch(&f.source).await.unwrap();
    assert!(first.cloned);
    assert_eq!(Some(first.head.clone()), f.origin_ref("main"));
    let marker = f.cache().join("autobump-test-marker");
    fs::write(&marker, "still here").unwrap();
    assert_eq!(
        fs::read_dir(f.dir.path().join("cache")).unwrap().count(),
        1,
        "one cache directory per URL"
    );

    let next = commit_to(&f.origin, "main", &[("NEWS", "news\n")], "news");
    let second = f.repo.fetch(&f.source).await.unwrap();
    assert!(!second.cloned, "the second run must fetch, not clone");
    assert_eq!(second.head, next);
    assert!(marker.exists(), "the cache directory was replaced");
    // Only the branch asked for, no tags.
    let refs = git(&f.cache(), &["for-each-ref", "--format=%(refname)"]);
    assert_eq!(refs, "refs/remotes/origin/main");
}

#[tokio::test]
async fn a_damaged_cache_is_deleted_and_cloned_again() {
    let f = Fixture::new();
    f.repo.fetch(&f.source).await.unwrap();
    // Unopenable: HEAD and config are garbage.
    fs::write(f.cache().join("HEAD"), "garbage").unwrap();
    fs::write(f.cache().join("config"), "[[[not a config").unwrap();
    let again = f.repo.fetch(&f.source).await.unwrap();
    assert!(again.cloned);
    assert_eq!(Some(again.head), f.origin_ref("main"));

    // Opens fine but has lost its objects: found when the base tree is read.
    let objects = f.cache().join("objects");
    for entry in fs::read_dir(&objects).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() != "info" {
            fs::remove_dir_all(&p).unwrap();
        }
    }
    let bump = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", pr()), t0())
        .await
        .unwrap();
    assert!(bump.cloned, "the damaged cache must have been re-cloned");
    assert_eq!(commit_of(&bump).changes.len(), 2);
}

#[tokio::test]
async fn bump_commit_has_exactly_the_rewritten_bytes_and_the_configured_identity() {
    let f = Fixture::new();
    let bump = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", pr()), t0())
        .await
        .unwrap();
    let base = f.origin_ref("main").unwrap();
    assert_eq!(bump.base, base);
    assert!(bump.notices.is_empty(), "{:?}", bump.notices);
    assert_eq!(bump.branch_head, None);
    assert!(!bump.up_to_date);
    let c = commit_of(&bump);
    assert_eq!(c.parent, base);
    let changes: Vec<(&str, usize, &str, &str)> = c
        .changes
        .iter()
        .map(|c| (c.file.as_str(), c.line, c.old.as_str(), c.new.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            (
                "config/prow/deck.yaml",
                3,
                "gcr.io/k8s-prow/deck:v20240101-abc1234",
                "gcr.io/k8s-prow/deck:v20240102-def5678"
            ),
            (
                "config/prow/hook.yaml",
                11,
                "gcr.io/k8s-prow/hook:v20240101-abc1234",
                "gcr.io/k8s-prow/hook:v20240102-def5678"
            ),
        ]
    );

    // Inspect the commit with git itself, in the cache.
    let cache = f.cache();
    let id = c.id.as_str();
    assert_eq!(
        git(&cache, &["show", &format!("{id}:config/prow/hook.yaml")]),
        HOOK.replace("v20240101-abc1234", "v20240102-def5678")
            .trim_end()
    );
    let deck = git(
        &cache,
        &["cat-file", "blob", &format!("{id}:config/prow/deck.yaml")],
    );
    assert_eq!(
        format!("{deck}\n"),
        DECK.replacen("deck:v20240101-abc1234\"", "deck:v20240102-def5678\"", 1)
    );
    assert_eq!(
        git(
            &cache,
            &[
                "diff-tree",
                "-r",
                "--name-only",
                "--no-commit-id",
                &base,
                id
            ]
        ),
        "config/prow/deck.yaml\nconfig/prow/hook.yaml"
    );
    for same in ["README.md", "config/prow/legacy/old.yaml"] {
        assert_eq!(
            git(&cache, &["rev-parse", &format!("{base}:{same}")]),
            git(&cache, &["rev-parse", &format!("{id}:{same}")]),
            "{same} must keep its blob"
        );
    }
    assert_commit_metadata(&cache, id, &c.message);
}

/// The commit's identities, time, message and trailers, as `git` reads them.
fn assert_commit_metadata(cache: &Path, id: &str, message_built: &str) {
    let ts = t0().timestamp();
    assert_eq!(
        git(
            cache,
            &["log", "-1", "--format=%an <%ae> %at%n%cn <%ce> %ct", id]
        ),
        format!("autobump-bot <bot@example.com> {ts}\nAutobump <autobump@example.com> {ts}")
    );
    let raw = git_command(cache)
        .args(["cat-file", "commit", id])
        .output()
        .unwrap()
        .stdout;
    let raw = String::from_utf8(raw).unwrap();
    let message = raw.split_once("\n\n").unwrap().1;
    assert_eq!(
        message,
        "Bump prow to v20240102-def5678\n\
         \n\
         2 image references in 2 files:\n\
         - config/prow/deck.yaml\n\
         - config/prow/hook.yaml\n\
         \n\
         Autobump-Policy: prow\n\
         Autobump-Image: gcr.io/k8s-prow/deck:v20240101-abc1234 -> gcr.io/k8s-prow/deck:v20240102-def5678\n\
         Autobump-Image: gcr.io/k8s-prow/hook:v20240101-abc1234 -> gcr.io/k8s-prow/hook:v20240102-def5678\n"
    );
    assert_eq!(message, message_built);
    // git itself reads the trailers.
    assert_eq!(
        git(
            cache,
            &["log", "-1", "--format=%(trailers:only,unfold)", id]
        ),
        "Autobump-Policy: prow\n\
         Autobump-Image: gcr.io/k8s-prow/deck:v20240101-abc1234 -> gcr.io/k8s-prow/deck:v20240102-def5678\n\
         Autobump-Image: gcr.io/k8s-prow/hook:v20240101-abc1234 -> gcr.io/k8s-prow/hook:v20240102-def5678\n"
    );
}

#[tokio::test]
async fn same_plan_base_and_time_give_the_same_commit() {
    let f = Fixture::new();
    let first = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", pr()), t0())
        .await
        .unwrap();
    let again = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", pr()), t0())
        .await
        .unwrap();
    assert_eq!(commit_of(&again), commit_of(&first));

    // Nothing to do: no commit.
    let noop = f
        .repo
        .prepare_bump(f.request("v20240101-abc1234", pr()), t0())
        .await
        .unwrap();
    assert!(noop.commit.is_none());
    assert_eq!(Some(noop.base), f.origin_ref("main"));
}

#[tokio::test]
async fn pull_request_branch_is_pushed_only_when_its_tree_changes() {
    let f = Fixture::new();
    let branch = "refs/heads/autobump-prow";

    // First bump: creates the branch (nothing to force).
    let bump = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", pr()), t0())
        .await
        .unwrap();
    let pushed = f.repo.push(&bump).await.unwrap();
    assert!(pushed.pushed && !pushed.forced);
    assert_eq!(pushed.attempts, 1);
    assert_eq!(pushed.branch, "autobump-prow");
    assert_eq!(pushed.head.as_deref(), Some(commit_of(&bump).id.as_str()));
    assert_eq!(f.origin_ref(branch).as_deref(), pushed.head.as_deref());
    let first_head = pushed.head.clone().unwrap();

    // Same plan an hour later: a different commit id, the same tree: no push.
    let later = t0() + chrono::Duration::hours(1);
    let rerun = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", pr()), later)
        .await
        .unwrap();
    assert_ne!(commit_of(&rerun).id, first_head);
    assert!(rerun.up_to_date);
    assert_eq!(rerun.branch_head.as_deref(), Some(first_head.as_str()));
    let not_pushed = f.repo.push(&rerun).await.unwrap();
    assert!(!not_pushed.pushed);
    assert_eq!(not_pushed.attempts, 0);
    assert_eq!(not_pushed.head.as_deref(), Some(first_head.as_str()));
    assert_eq!(f.origin_ref(branch).as_deref(), Some(first_head.as_str()));

    // A newer plan: force-pushed onto the same branch.
    let newer = f
        .repo
        .prepare_bump(f.request("v20240103-0123abc", pr()), later)
        .await
        .unwrap();
    assert!(!newer.up_to_date);
    let forced = f.repo.push(&newer).await.unwrap();
    assert!(forced.pushed && forced.forced);
    let head = f.origin_ref(branch).unwrap();
    assert_eq!(Some(head.clone()), forced.head);
    assert_eq!(
        git(
            &f.origin,
            &["show", &format!("{head}:config/prow/hook.yaml")]
        ),
        HOOK.replace("v20240101-abc1234", "v20240103-0123abc")
            .trim_end()
    );
    assert_eq!(
        git(&f.origin, &["rev-parse", &format!("{head}^")]),
        f.origin_ref("main").unwrap(),
        "the bump sits directly on the base head"
    );

    // The base moves (an unrelated change): same plan, new tree: rebased by force.
    let main = commit_to(&f.origin, "main", &[("NEWS", "news\n")], "news");
    let rebased = f
        .repo
        .prepare_bump(f.request("v20240103-0123abc", pr()), later)
        .await
        .unwrap();
    assert!(!rebased.up_to_date);
    let pushed = f.repo.push(&rebased).await.unwrap();
    assert!(pushed.pushed && pushed.forced);
    assert_eq!(git(&f.origin, &["rev-parse", &format!("{branch}^")]), main);
}

#[tokio::test]
async fn push_rechecks_the_branch_and_does_not_push_what_is_already_there() {
    // Two replicas prepared the same bump; the first pushed. The second's push finds
    // the branch already has the tree.
    let f = Fixture::new();
    let a = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", pr()), t0())
        .await
        .unwrap();
    let b = f
        .repo
        .prepare_bump(
            f.request("v20240102-def5678", pr()),
            t0() + chrono::Duration::minutes(5),
        )
        .await
        .unwrap();
    assert!(f.repo.push(&a).await.unwrap().pushed);
    let second = f.repo.push(&b).await.unwrap();
    assert!(!second.pushed);
    assert_eq!(second.head.as_deref(), Some(commit_of(&a).id.as_str()));
}

#[tokio::test]
async fn a_branch_the_base_moved_past_gets_the_same_tree_again() {
    // A second rollback to the same known-good version: the first rollback's branch
    // merged (merge commit), the bad version came back on main, and the rollback on
    // the new main has exactly the tree the old branch has. A PR from the old branch
    // would be empty ("No commits between"): it must be pushed again.
    let f = Fixture::new();
    let branch = "refs/heads/autobump-prow";
    let first = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", pr()), t0())
        .await
        .unwrap();
    assert!(f.repo.push(&first).await.unwrap().pushed);
    let old_head = f.origin_ref(branch).unwrap();
    let main = f.origin_ref("main").unwrap();
    let tree = git(&f.origin, &["rev-parse", &format!("{old_head}^{{tree}}")]);
    let merge = git(
        &f.origin,
        &[
            "-c",
            "user.name=merger",
            "-c",
            "user.email=merger@example.com",
            "commit-tree",
            &tree,
            "-p",
            &main,
            "-p",
            &old_head,
            "-m",
            "Merge the rollback",
        ],
    );
    git(&f.origin, &["update-ref", "refs/heads/main", &merge]);
    commit_to(
        &f.origin,
        "main",
        &[
            ("config/prow/hook.yaml", HOOK),
            ("config/prow/deck.yaml", DECK),
        ],
        "the old versions are back",
    );

    let later = t0() + chrono::Duration::hours(1);
    let again = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", pr()), later)
        .await
        .unwrap();
    assert_eq!(
        commit_of(&again).tree,
        tree,
        "the same tree as the old branch"
    );
    assert!(!again.up_to_date, "the branch is already merged into main");
    let pushed = f.repo.push(&again).await.unwrap();
    assert!(pushed.pushed && pushed.forced, "{pushed:?}");
    let head = f.origin_ref(branch).unwrap();
    assert_eq!(pushed.head.as_deref(), Some(head.as_str()));
    assert_eq!(
        git(&f.origin, &["rev-parse", &format!("{head}^")]),
        f.origin_ref("main").unwrap(),
        "the bump sits on the current base"
    );

    // Now it carries the bump on the current base: nothing more is pushed.
    let rerun = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", pr()), later)
        .await
        .unwrap();
    assert!(rerun.up_to_date);
    assert!(!f.repo.push(&rerun).await.unwrap().pushed);
}

#[tokio::test]
async fn direct_push_after_a_lost_race_reapplies_on_the_new_head() {
    let f = Fixture::new();
    let bump = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", Delivery::DirectPush), t0())
        .await
        .unwrap();
    // Between fetch and push, someone else lands a commit touching the same file.
    let edited = HOOK.replace(
        "# hook: the webhook server",
        "# hook: the webhook server (edited)",
    );
    let other = commit_to(
        &f.origin,
        "main",
        &[
            ("config/prow/hook.yaml", &edited),
            ("OWNERS", "approvers: [a]\n"),
        ],
        "someone else's change",
    );
    let pushed = f.repo.push(&bump).await.unwrap();
    assert!(pushed.pushed && !pushed.forced);
    assert_eq!(pushed.attempts, 2);
    let head = f.origin_ref("main").unwrap();
    assert_eq!(pushed.head.as_deref(), Some(head.as_str()));
    let commit = pushed.commit.unwrap();
    assert_ne!(commit.id, commit_of(&bump).id, "re-made on the new head");
    assert_eq!(commit.parent, other);
    assert_eq!(git(&f.origin, &["rev-parse", "main^"]), other);
    assert_eq!(
        git(&f.origin, &["show", "main:config/prow/hook.yaml"]),
        edited
            .replace("v20240101-abc1234", "v20240102-def5678")
            .trim_end()
    );
    assert_eq!(git(&f.origin, &["show", "main:OWNERS"]), "approvers: [a]");
    assert_eq!(commit.message, commit_of(&bump).message);
}

#[tokio::test]
async fn direct_push_stops_when_the_winner_already_did_the_bump() {
    let f = Fixture::new();
    let bump = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", Delivery::DirectPush), t0())
        .await
        .unwrap();
    let other = commit_to(
        &f.origin,
        "main",
        &[
            (
                "config/prow/hook.yaml",
                &HOOK.replace("v20240101-abc1234", "v20240102-def5678"),
            ),
            (
                "config/prow/deck.yaml",
                &DECK.replacen("deck:v20240101-abc1234\"", "deck:v20240102-def5678\"", 1),
            ),
        ],
        "a human bumped it",
    );
    let pushed = f.repo.push(&bump).await.unwrap();
    assert!(!pushed.pushed);
    assert!(pushed.commit.is_none());
    assert_eq!(pushed.head.as_deref(), Some(other.as_str()));
    assert_eq!(f.origin_ref("main").as_deref(), Some(other.as_str()));
}

#[tokio::test]
async fn changed_files_show_what_a_pull_request_changes() {
    let f = Fixture::new();
    let bump = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", pr()), t0())
        .await
        .unwrap();
    let head = f.repo.push(&bump).await.unwrap().head.unwrap();
    // The base moves on; the PR's diff is still only the bump (three-dot, as GitHub).
    let main = commit_to(&f.origin, "main", &[("NEWS", "news\n")], "news");
    // A fresh client with an empty cache must fetch the commits first.
    let fresh = GitRepo::new(config(&f.dir.path().join("other-cache")));
    let files = fresh
        .changed_files(
            &f.source,
            Some(&"autobump-prow".parse().unwrap()),
            &main,
            &head,
        )
        .await
        .unwrap();
    let paths: Vec<&str> = files.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["config/prow/deck.yaml", "config/prow/hook.yaml"]);
    let hook = &files[1];
    assert_eq!(hook.old_text(), Some(HOOK));
    assert_eq!(
        hook.new_text().map(str::to_owned),
        Some(HOOK.replace("v20240101-abc1234", "v20240102-def5678"))
    );
    assert_eq!(hook.old.as_ref().unwrap().mode, 0o100_644);

    let missing = "0123456789012345678901234567890123456789";
    let err = fresh
        .changed_files(&f.source, None, &main, missing)
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::CommitNotFound { .. }), "{err}");
    let err = fresh
        .changed_files(&f.source, None, &main, "HEAD")
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::InvalidRequest { .. }), "{err}");
}

#[tokio::test]
async fn missing_branch_and_missing_repository_are_final_errors() {
    let f = Fixture::new();
    let mut source = f.source.clone();
    source.branch = "nope".parse().unwrap();
    let err = f.repo.fetch(&source).await.unwrap_err();
    assert!(matches!(err, RepoError::BranchNotFound { .. }), "{err}");
    assert!(!err.is_retryable());

    let gone = Source {
        url: format!("file://{}/missing.git", f.dir.path().display())
            .parse()
            .unwrap(),
        ..f.source.clone()
    };
    let err = f.repo.fetch(&gone).await.unwrap_err();
    assert!(matches!(err, RepoError::RepositoryNotFound { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(err.metric_label(), "repository_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_operations_on_one_cache_are_serialised() {
    let f = Fixture::new();
    let r1 = f.request("v20240102-def5678", pr());
    let r2 = f.request("v20240102-def5678", pr());
    let (a, b, c) = tokio::join!(
        f.repo.prepare_bump(r1, t0()),
        f.repo.prepare_bump(r2, t0()),
        f.repo.fetch(&f.source),
    );
    assert_eq!(commit_of(&a.unwrap()), commit_of(&b.unwrap()));
    c.unwrap();
}

// ---- smart HTTP with credentials ----

const USER: &str = "bot";
const TOKEN: &str = "s3cret-t0ken";

struct HttpFixture {
    dir: TempDir,
    server: GitHttpServer,
    origin: PathBuf,
    url: String,
}

impl HttpFixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("srv");
        fs::create_dir(&root).unwrap();
        let origin = bare_repo(&root, "infra.git", &files());
        let server = GitHttpServer::start(&root, USER, TOKEN);
        let url = server.url("infra.git");
        Self {
            dir,
            server,
            origin,
            url,
        }
    }

    fn source(&self, auth: Auth) -> Source {
        Source {
            url: self.url.parse().unwrap(),
            branch: "main".parse().unwrap(),
            auth,
        }
    }

    fn repo(&self) -> GitRepo {
        GitRepo::new(config(&self.dir.path().join("cache")))
    }
}

fn user_pass(password: &str) -> Auth {
    Auth::UserPass {
        username: USER.into(),
        password: password.into(),
    }
}

#[tokio::test]
async fn smart_http_with_a_token_clones_fetches_and_pushes() {
    let h = HttpFixture::new();
    let repo = h.repo();
    let source = h.source(user_pass(TOKEN));
    let first = repo.fetch(&source).await.unwrap();
    assert!(first.cloned);
    assert_eq!(Some(first.head), rev_parse(&h.origin, "main"));
    let bump = repo
        .prepare_bump(request(source.clone(), "v20240102-def5678", pr()), t0())
        .await
        .unwrap();
    assert!(!bump.cloned);
    let pushed = repo.push(&bump).await.unwrap();
    assert!(pushed.pushed);
    assert_eq!(rev_parse(&h.origin, "autobump-prow"), pushed.head);
    let requests = h.server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.target.contains("git-receive-pack") && r.status == 200),
        "{requests:?}"
    );
    assert!(requests.iter().all(|r| r.credentials != Some(false)));
}

#[tokio::test]
async fn smart_http_without_or_with_wrong_credentials_fails_once_and_clearly() {
    let h = HttpFixture::new();
    let repo = h.repo();

    let err = repo.fetch(&h.source(Auth::None)).await.unwrap_err();
    assert!(matches!(err, RepoError::Auth { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(err.metric_label(), "auth");
    assert!(err.to_string().contains("none are configured"), "{err}");
    assert_eq!(h.server.requests().len(), 1, "{:?}", h.server.requests());

    h.server.clear_requests();
    let err = repo
        .fetch(&h.source(user_pass("wrong-password")))
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::Auth { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains("wrong-password"), "{err}");
    let requests = h.server.requests();
    // One anonymous request (401), one with the credentials (401), then it gives up.
    let tried = requests
        .iter()
        .filter(|r| r.credentials == Some(false))
        .count();
    assert_eq!(
        tried, 1,
        "credentials must be offered exactly once: {requests:?}"
    );
    assert!(requests.len() <= 2, "{requests:?}");

    // The token for GitHub-style auth is sent as x-access-token, which this server
    // does not know: rejected the same way.
    let err = repo
        .fetch(&h.source(Auth::github_token(TOKEN)))
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::Auth { .. }), "{err}");
}

#[tokio::test]
async fn direct_push_retries_are_bounded() {
    let h = HttpFixture::new();
    // Another writer wins every race: a pre-receive hook moves `main` just before
    // receive-pack updates it, so every push fails with "failed to update ref".
    let hook = h.origin.join("hooks/pre-receive");
    fs::write(
        &hook,
        "#!/bin/sh\n\
         unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES\n\
         n=$(cat race-count 2>/dev/null || echo 0); n=$((n+1)); echo $n > race-count\n\
         export GIT_AUTHOR_NAME=racer GIT_AUTHOR_EMAIL=racer@example.com\n\
         export GIT_COMMITTER_NAME=racer GIT_COMMITTER_EMAIL=racer@example.com\n\
         head=$(git rev-parse refs/heads/main)\n\
         new=$(git commit-tree \"$head^{tree}\" -p \"$head\" -m \"race $n\")\n\
         git update-ref refs/heads/main \"$new\" \"$head\"\n",
    )
    .unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();

    let repo = h.repo();
    let source = h.source(user_pass(TOKEN));
    let bump = repo
        .prepare_bump(
            request(source, "v20240102-def5678", Delivery::DirectPush),
            t0(),
        )
        .await
        .unwrap();
    let err = repo.push(&bump).await.unwrap_err();
    assert!(
        matches!(err, RepoError::PushRace { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.metric_label(), "push_race");
    assert_eq!(
        fs::read_to_string(h.origin.join("race-count"))
            .unwrap()
            .trim(),
        "3"
    );
    assert_eq!(
        git(&h.origin, &["log", "--format=%s", "main"]),
        "race 3\nrace 2\nrace 1\ninitial",
        "only the racer's commits landed"
    );
}

#[test]
fn the_git_used_by_the_tests_is_installed() {
    // Fails (naming scripts/setup) instead of letting the tests above skip.
    assert!(support::git::git_binary().exists());
    let version = git(Path::new("/"), &["--version"]);
    assert!(version.starts_with("git version"), "{version}");
}

#[tokio::test]
async fn scan_reads_the_references_of_the_base_branch_through_the_globs() {
    let f = Fixture::new();
    let include: Vec<autobump::policy::values::Glob> = vec!["config/**/*.yaml".parse().unwrap()];
    let exclude: Vec<autobump::policy::values::Glob> = vec!["config/**/legacy/**".parse().unwrap()];
    let scanned = f
        .repo
        .scan(&f.source, &include, &exclude, RewriteMode::Structured)
        .await
        .unwrap();
    assert_eq!(Some(scanned.head.clone()), f.origin_ref("main"));
    let paths: Vec<&str> = scanned.files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["config/prow/deck.yaml", "config/prow/hook.yaml"]);
    assert!(
        scanned
            .files
            .iter()
            .flat_map(|(_, found)| found)
            .all(|f| f.reference.repository.starts_with("gcr.io/k8s-prow/")),
        "{scanned:?}"
    );
    // A new commit on the base is seen by the next scan.
    let next = commit_to(
        &f.origin,
        "main",
        &[(
            "config/prow/new.yaml",
            "image: gcr.io/k8s-prow/new:v20260101-abcdef0\n",
        )],
        "new",
    );
    let again = f
        .repo
        .scan(&f.source, &include, &exclude, RewriteMode::Structured)
        .await
        .unwrap();
    assert_eq!(again.head, next);
    assert_eq!(again.files.len(), 3);
}

/// Within a pass (a standalone tick) the policies sharing a repository fetch it once
/// for their scans; the next pass, and any push, make the next scan fetch again.
#[tokio::test]
async fn scans_within_a_pass_share_one_fetch_and_a_push_or_a_new_pass_fetches_again() {
    let f = Fixture::new();
    let include: Vec<autobump::policy::values::Glob> = vec!["config/**/*.yaml".parse().unwrap()];
    let scan = || {
        f.repo
            .scan(&f.source, &include, &[], RewriteMode::Structured)
    };
    f.repo.begin_pass();
    let first = scan().await.unwrap();
    assert_eq!(Some(first.head.clone()), f.origin_ref("main"));
    let next = commit_to(&f.origin, "main", &[("NEWS", "news\n")], "news");
    assert_eq!(
        scan().await.unwrap().head,
        first.head,
        "same pass: no fetch"
    );

    f.repo.begin_pass();
    assert_eq!(scan().await.unwrap().head, next, "a new pass fetches");

    // A push in the pass: the next scan fetches and sees it.
    let bump = f
        .repo
        .prepare_bump(f.request("v20240102-def5678", pr()), t0())
        .await
        .unwrap();
    f.repo.push(&bump).await.unwrap();
    let other = commit_to(&f.origin, "main", &[("NEWS", "more news\n")], "more news");
    assert_eq!(scan().await.unwrap().head, other, "a push ends the reuse");

    // Without passes (cluster mode) every scan fetches.
    let f = Fixture::new();
    let scan = || {
        f.repo
            .scan(&f.source, &include, &[], RewriteMode::Structured)
    };
    scan().await.unwrap();
    let next = commit_to(&f.origin, "main", &[("NEWS", "news\n")], "news");
    assert_eq!(scan().await.unwrap().head, next);
}
