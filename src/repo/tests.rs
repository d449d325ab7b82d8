//! Unit tests of the parts that need no remote: messages, cache paths, and the tree
//! rewrite against a repository built in a temporary directory with libgit2.

use std::sync::Arc;

use chrono::TimeZone as _;
use git2::build::TreeUpdateBuilder;
use git2::{FileMode, Repository, Signature};

use super::bump::{TreeIndex, make_commit, rewrite_tree, scan_tree};
use super::*;
use crate::core::rewrite::Target;

fn change(file: &str, line: usize, old: &str, new: &str) -> Change {
    Change {
        file: file.into(),
        line,
        old: old.into(),
        new: new.into(),
        digest_tags: None,
    }
}

#[test]
fn commit_message_is_built_from_the_changes_only() {
    let changes = vec![
        change(
            "config/hook.yaml",
            7,
            "gcr.io/k8s-prow/hook:v20240101-abc123",
            "gcr.io/k8s-prow/hook:v20240102-def456",
        ),
        change(
            "config/deck.yaml",
            3,
            "gcr.io/k8s-prow/deck:v20240101-abc123",
            "gcr.io/k8s-prow/deck:v20240102-def456",
        ),
        change(
            "config/deck.yaml",
            9,
            "gcr.io/k8s-prow/deck:v20240101-abc123",
            "gcr.io/k8s-prow/deck:v20240102-def456",
        ),
    ];
    let message = commit_message("prow", &changes);
    assert_eq!(
        message,
        "Bump prow to v20240102-def456\n\
         \n\
         3 image references in 2 files:\n\
         - config/deck.yaml\n\
         - config/hook.yaml\n\
         \n\
         Autobump-Policy: prow\n\
         Autobump-Image: gcr.io/k8s-prow/deck:v20240101-abc123 -> gcr.io/k8s-prow/deck:v20240102-def456\n\
         Autobump-Image: gcr.io/k8s-prow/hook:v20240101-abc123 -> gcr.io/k8s-prow/hook:v20240102-def456\n"
    );
    let mut reversed = changes.clone();
    reversed.reverse();
    assert_eq!(commit_message("prow", &reversed), message);
}

/// A Knative-style digest-only reference: the message names the tags of both digests.
#[test]
fn commit_message_names_the_tags_of_digest_only_references() {
    let (a, b) = (
        format!("sha256:{}", "a".repeat(64)),
        format!("sha256:{}", "b".repeat(64)),
    );
    let image = "gcr.io/knative-releases/knative.dev/serving/cmd/controller";
    let mut c = change(
        "serving-core.yaml",
        7,
        &format!("{image}@{a}"),
        &format!("{image}@{b}"),
    );
    c.digest_tags = Some(crate::core::rewrite::DigestTags {
        old: "v1.15.1".into(),
        new: "v1.15.2".into(),
    });
    let m = commit_message("knative", &[c]);
    assert!(
        m.starts_with(&format!("Bump knative to v1.15.2@{b}\n")),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "Autobump-Image: {image}@{a} -> {image}@{b} (tags v1.15.1 -> v1.15.2)\n"
        )),
        "{m}"
    );
}

#[test]
fn commit_message_subjects() {
    let one = [change("a.yaml", 1, "app:v1", "app:v2")];
    assert!(commit_message("p", &one).starts_with("Bump p to v2\n"));
    let digest = format!("sha256:{}", "a".repeat(64));
    let pinned = [change("a.yaml", 1, "app:v1", &format!("app:v2@{digest}"))];
    assert!(commit_message("p", &pinned).starts_with(&format!("Bump p to v2@{digest}\n")));
    let many: Vec<Change> = (1..=5)
        .map(|i| change("a.yaml", i, "app:v1", &format!("app{i}:v{i}")))
        .collect();
    let m = commit_message("p", &many);
    assert!(
        m.starts_with(
            "Bump p to v1, v2, v3 and 2 more versions\n\n5 image references in 1 file:\n"
        ),
        "{m}"
    );
}

fn engine(dir: &std::path::Path) -> GitRepo {
    GitRepo::new(GitConfig::new(
        dir,
        Person {
            name: "bot".into(),
            email: "bot@example.com".into(),
        },
    ))
}

#[test]
fn one_cache_directory_per_url() {
    let dir = tempfile::tempdir().unwrap();
    let repo = engine(dir.path());
    let a: RepoUrl = "https://github.com/example/infra.git".parse().unwrap();
    let b: RepoUrl = "https://github.com/example/other.git".parse().unwrap();
    let pa = repo.cache_path(&a);
    assert_eq!(pa, repo.cache_path(&a));
    assert_ne!(pa, repo.cache_path(&b));
    assert_eq!(pa.parent().unwrap(), dir.path());
    let name = pa.file_name().unwrap().to_str().unwrap();
    assert!(name.ends_with("-infra.git"), "{name}");
    assert_eq!(name.len(), 32 + "-infra.git".len());
    let scp: RepoUrl = "git@github.com:example/infra.git".parse().unwrap();
    assert!(
        repo.cache_path(&scp)
            .to_str()
            .unwrap()
            .ends_with("-infra.git")
    );
}

fn request(plan: &str, include: &[&str], exclude: &[&str]) -> BumpRequest {
    BumpRequest {
        source: Source {
            url: "file:///nonexistent".parse().unwrap(),
            branch: "main".parse().unwrap(),
            auth: Auth::None,
        },
        policy: "prow".into(),
        plan: Plan::new(&[Target::parse(plan).unwrap()]).unwrap(),
        include: include.iter().map(|g| g.parse().unwrap()).collect(),
        exclude: exclude.iter().map(|g| g.parse().unwrap()).collect(),
        mode: RewriteMode::Structured,
        delivery: Delivery::DirectPush,
        rollback: None,
        promoted: None,
    }
}

/// A bare repository with one commit holding `files` (path, bytes, mode).
fn repo_with(dir: &std::path::Path, files: &[(&str, &[u8], FileMode)]) -> (Repository, git2::Oid) {
    let repo = Repository::init_bare(dir).unwrap();
    let empty = repo.treebuilder(None).unwrap().write().unwrap();
    let mut update = TreeUpdateBuilder::new();
    for (path, bytes, mode) in files {
        let id = repo.blob(bytes).unwrap();
        update.upsert(*path, id, *mode);
    }
    let tree = {
        let empty = repo.find_tree(empty).unwrap();
        update.create_updated(&repo, &empty).unwrap()
    };
    let sig = Signature::new("t", "t@example.com", &git2::Time::new(0, 0)).unwrap();
    let commit = {
        let tree = repo.find_tree(tree).unwrap();
        repo.commit(None, &sig, &sig, "init", &tree, &[]).unwrap()
    };
    (repo, commit)
}

#[test]
fn rewrites_selected_blobs_and_keeps_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = b"spec:\n  image: gcr.io/x/app:v1 # keep\n";
    let (repo, base) = repo_with(
        dir.path(),
        &[
            ("deploy/app.yaml", deploy, FileMode::Blob),
            ("deploy/run.yaml", deploy, FileMode::BlobExecutable),
            ("deploy/legacy/old.yaml", deploy, FileMode::Blob),
            (
                "deploy/bin.yaml",
                b"image: gcr.io/x/app:v1\0",
                FileMode::Blob,
            ),
            ("deploy/link.yaml", b"app.yaml", FileMode::Link),
            ("README.md", b"image: gcr.io/x/app:v1\n", FileMode::Blob),
        ],
    );
    let req = request("gcr.io/x/app=v2", &["deploy/**"], &["deploy/legacy/**"]);
    let base_tree = repo.find_commit(base).unwrap().tree().unwrap();
    let r = rewrite_tree(&repo, &base_tree, &req).unwrap();
    let files: Vec<(&str, usize)> = r
        .changes
        .iter()
        .map(|c| (c.file.as_str(), c.line))
        .collect();
    assert_eq!(files, [("deploy/app.yaml", 2), ("deploy/run.yaml", 2)]);
    assert_eq!(r.notices.len(), 1, "{:?}", r.notices);
    assert_eq!(r.notices[0].file, "deploy/bin.yaml");
    let tree = repo.find_tree(r.tree).unwrap();
    let blob = |path: &str| {
        let e = tree.get_path(std::path::Path::new(path)).unwrap();
        (
            repo.find_blob(e.id()).unwrap().content().to_vec(),
            e.filemode(),
        )
    };
    let want = b"spec:\n  image: gcr.io/x/app:v2 # keep\n".to_vec();
    assert_eq!(blob("deploy/app.yaml"), (want.clone(), 0o100_644));
    assert_eq!(blob("deploy/run.yaml"), (want, 0o100_755));
    for unchanged in [
        "deploy/legacy/old.yaml",
        "deploy/bin.yaml",
        "deploy/link.yaml",
        "README.md",
    ] {
        let p = std::path::Path::new(unchanged);
        assert_eq!(
            tree.get_path(p).unwrap().id(),
            base_tree.get_path(p).unwrap().id(),
            "{unchanged}"
        );
    }
}

#[test]
fn same_plan_base_and_time_make_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, base) = repo_with(
        dir.path(),
        &[("a.yaml", b"image: gcr.io/x/app:v1\n", FileMode::Blob)],
    );
    let config = GitConfig::new(
        dir.path(),
        Person {
            name: "bot".into(),
            email: "bot@example.com".into(),
        },
    );
    let req = Arc::new(request("gcr.io/x/app=v2", &["**"], &[]));
    let t = Utc.with_ymd_and_hms(2026, 3, 8, 9, 0, 0).unwrap();
    let (a, _) = make_commit(&repo, &config, &req, base, t).unwrap();
    let (b, _) = make_commit(&repo, &config, &req, base, t).unwrap();
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    let (c, _) = make_commit(&repo, &config, &req, base, t + chrono::Duration::seconds(1)).unwrap();
    assert_ne!(c.unwrap().id, a.id, "the time is part of the commit");
    let commit = repo
        .find_commit(git2::Oid::from_str(&a.id).unwrap())
        .unwrap();
    assert_eq!(commit.time().seconds(), t.timestamp());
    assert_eq!(commit.parent_id(0).unwrap(), base);

    let noop = Arc::new(request("gcr.io/x/app=v1", &["**"], &[]));
    assert!(
        make_commit(&repo, &config, &noop, base, t)
            .unwrap()
            .0
            .is_none()
    );
}

/// A promoted bump's commit message keeps the bump's subject, files and trailers,
/// cites the evidence, and names the upstream in a trailer of its own.
#[test]
fn a_promoted_bump_message_cites_its_evidence_and_upstream() {
    let bump = "Bump podinfo-production to 6.7.1\n\n1 image reference in 1 file:\n- apps/production/podinfo.yaml\n\nAutobump-Policy: podinfo-production\nAutobump-Image: ghcr.io/stefanprodan/podinfo:6.7.0 -> ghcr.io/stefanprodan/podinfo:6.7.1\n";
    let evidence = "Promoted from `podinfo-staging`, where these versions baked clean:\n\n- `ghcr.io/stefanprodan/podinfo:6.7.1`: known-good in `podinfo-staging` since 2026-12-02T11:00:00Z after a bake of 1h.\n";
    let m = super::bump::promoted_message(bump, "podinfo-staging", evidence);
    assert!(
        m.starts_with("Bump podinfo-production to 6.7.1\n\n1 image reference"),
        "{m}"
    );
    let evidence_at = m.find("Promoted from `podinfo-staging`").expect("evidence");
    let trailers_at = m
        .find("\nAutobump-Policy: podinfo-production\nAutobump-Image:")
        .expect("trailers");
    assert!(evidence_at < trailers_at, "{m}");
    assert!(
        m.ends_with("Autobump-Promoted-From: podinfo-staging\n"),
        "{m}"
    );
}

/// Files named outright are found through the tree index exactly as by walking the
/// tree (links, directories, excluded and missing paths skipped), a changed directory
/// is read anew under its new id, and a tree no scan used during a pass is dropped.
#[test]
fn scans_through_the_tree_index_find_what_the_tree_holds() {
    let dir = tempfile::tempdir().unwrap();
    let app = |tag: &str| format!("image: gcr.io/x/app:{tag}\n").into_bytes();
    let (v1, v2) = (app("v1"), app("v2"));
    let mut files: Vec<(String, Vec<u8>, FileMode)> = (0..300)
        .map(|i| {
            (
                format!("apps/app{i}.yaml"),
                app(&format!("v{i}")),
                FileMode::Blob,
            )
        })
        .collect();
    files.push(("apps/web.yaml".into(), v1.clone(), FileMode::Blob));
    files.push((
        "apps/link.yaml".into(),
        b"web.yaml".to_vec(),
        FileMode::Link,
    ));
    files.push(("apps/sub/deep.yaml".into(), v1.clone(), FileMode::Blob));
    let borrowed: Vec<(&str, &[u8], FileMode)> = files
        .iter()
        .map(|(p, b, m)| (p.as_str(), b.as_slice(), *m))
        .collect();
    let (repo, base) = repo_with(dir.path(), &borrowed);
    let tree = repo.find_commit(base).unwrap().tree().unwrap();
    let globs = |g: &[&str]| g.iter().map(|g| g.parse().unwrap()).collect::<Vec<Glob>>();
    let include = globs(&[
        "apps/web.yaml",
        "apps/link.yaml",
        "apps/sub",
        "apps/sub/deep.yaml",
        "apps/missing.yaml",
        "apps/web.yaml/x",
        "apps/app7.yaml",
    ]);
    let exclude = globs(&["apps/app7.yaml"]);
    let mut index = TreeIndex::default();
    index.begin(1);
    let scan = |index: &mut TreeIndex, tree: &git2::Tree<'_>| {
        scan_tree(
            &repo,
            tree,
            &include,
            &exclude,
            RewriteMode::Structured,
            index,
        )
        .unwrap()
        .into_iter()
        .map(|(path, found)| (path, found.len()))
        .collect::<Vec<_>>()
    };
    let want = vec![
        ("apps/sub/deep.yaml".to_owned(), 1),
        ("apps/web.yaml".to_owned(), 1),
    ];
    assert_eq!(scan(&mut index, &tree), want);
    assert_eq!(index.len(), (3, 305), "the root, apps/ and apps/sub/");
    assert_eq!(
        scan(&mut index, &tree),
        want,
        "the second scan reads the index"
    );

    // A new commit changes apps/web.yaml: apps/ has a new id and is read again.
    let mut update = TreeUpdateBuilder::new();
    update.upsert("apps/web.yaml", repo.blob(&v2).unwrap(), FileMode::Blob);
    let changed = repo
        .find_tree(update.create_updated(&repo, &tree).unwrap())
        .unwrap();
    index.begin(2);
    let found = scan_tree(
        &repo,
        &changed,
        &include,
        &exclude,
        RewriteMode::Structured,
        &mut index,
    )
    .unwrap();
    let web = found.iter().find(|(p, _)| p == "apps/web.yaml").unwrap();
    assert_eq!(web.1[0].reference.tag.as_deref(), Some("v2"));
    assert_eq!(
        index.len().0,
        5,
        "both versions of the root and apps/, and apps/sub/"
    );
    // Pass 2 used only the new trees: the old root and apps/ go when pass 3 begins,
    // and everything when pass 4 begins after a pass that scanned nothing.
    index.begin(3);
    assert_eq!(index.len(), (3, 305));
    index.begin(4);
    assert_eq!(index.len(), (0, 0));
}
