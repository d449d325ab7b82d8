//! The git side of the forge fakes: a real bare repository whose branches are the
//! forge's, commits written by the test, three-way merges and per-file diffs as a
//! forge computes them (libgit2).

use std::path::Path;

/// One file of a diff: path after, path before (renames), status, additions,
/// deletions, the unified hunks (`@@ …`, no file header).
#[derive(Debug, Clone)]
pub struct DiffRow {
    pub path: String,
    pub old_path: String,
    pub status: git2::Delta,
    pub additions: u64,
    pub deletions: u64,
    pub hunks: Option<String>,
}

/// Commits `files` (path → content, `None` deletes) onto `branch` of `git`, creating
/// it from `main` if it does not exist, at Unix second `at`; returns the new head.
pub fn commit(
    git: &git2::Repository,
    branch: &str,
    files: &[(&str, Option<&str>)],
    message: &str,
    at: i64,
) -> String {
    let parent = branch_sha(git, branch)
        .or_else(|| branch_sha(git, "main"))
        .map(|sha| {
            git.find_commit(git2::Oid::from_str(&sha).expect("sha"))
                .expect("parent commit")
        });
    let mut index = git2::Index::new().expect("in-memory index");
    if let Some(parent) = &parent {
        index
            .read_tree(&parent.tree().expect("parent tree"))
            .expect("read tree");
    }
    for (path, content) in files {
        match content {
            Some(content) => {
                let id = git.blob(content.as_bytes()).expect("write blob");
                index
                    .add(&git2::IndexEntry {
                        ctime: git2::IndexTime::new(0, 0),
                        mtime: git2::IndexTime::new(0, 0),
                        dev: 0,
                        ino: 0,
                        mode: 0o100_644,
                        uid: 0,
                        gid: 0,
                        file_size: u32::try_from(content.len()).unwrap_or(u32::MAX),
                        id,
                        flags: 0,
                        flags_extended: 0,
                        path: path.as_bytes().to_vec(),
                    })
                    .expect("index add");
            }
            None => index.remove_path(Path::new(path)).expect("index remove"),
        }
    }
    let tree = git
        .find_tree(index.write_tree_to(git).expect("write tree"))
        .expect("tree");
    let when = git2::Time::new(at, 0);
    let who = git2::Signature::new("autobump test", "test@example.com", &when).expect("sig");
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    git.commit(
        Some(&format!("refs/heads/{branch}")),
        &who,
        &who,
        message,
        &tree,
        &parents,
    )
    .expect("commit")
    .to_string()
}

/// The SHA `refs/heads/<branch>` points to.
pub fn branch_sha(git: &git2::Repository, branch: &str) -> Option<String> {
    let reference = git.find_reference(&format!("refs/heads/{branch}")).ok()?;
    Some(reference.peel_to_commit().ok()?.id().to_string())
}

fn oid(git: &git2::Repository, sha: &str) -> Option<git2::Oid> {
    git2::Oid::from_str(sha)
        .ok()
        .filter(|oid| git.find_commit(*oid).is_ok())
}

/// The three-way merge of `head` into `base` (from their merge base).
pub fn merge_index(git: &git2::Repository, base: &str, head: &str) -> Option<git2::Index> {
    let (head, base) = (oid(git, head)?, oid(git, base)?);
    let ancestor = git.merge_base(base, head).ok()?;
    let tree = |oid| git.find_commit(oid).ok()?.tree().ok();
    git.merge_trees(&tree(ancestor)?, &tree(base)?, &tree(head)?, None)
        .ok()
}

/// Merges `head` into `base_branch` (a merge commit, or one squashed commit), as
/// `who` at `at`; `None` on conflicts.
pub fn merge(
    git: &git2::Repository,
    base_branch: &str,
    head: &str,
    squash: bool,
    (message, who, at): (&str, &str, i64),
) -> Option<String> {
    let base = branch_sha(git, base_branch)?;
    let mut index = merge_index(git, &base, head)?;
    if index.has_conflicts() {
        return None;
    }
    let tree = git
        .find_tree(index.write_tree_to(git).expect("write merged tree"))
        .expect("tree");
    let base_commit = git.find_commit(oid(git, &base)?).expect("base commit");
    let head_commit = git.find_commit(oid(git, head)?).expect("head commit");
    let mut parents = vec![&base_commit];
    if !squash {
        parents.push(&head_commit);
    }
    let when = git2::Time::new(at, 0);
    let sig = git2::Signature::new(who, "noreply@example.com", &when).expect("sig");
    Some(
        git.commit(
            Some(&format!("refs/heads/{base_branch}")),
            &sig,
            &sig,
            message,
            &tree,
            &parents,
        )
        .expect("merge commit")
        .to_string(),
    )
}

/// What `head` changes against its merge base with `base`, file by file.
pub fn diff(git: &git2::Repository, base: &str, head: &str) -> Vec<DiffRow> {
    let (Some(head), Some(base)) = (oid(git, head), oid(git, base)) else {
        return Vec::new();
    };
    let from = git
        .merge_base(base, head)
        .ok()
        .and_then(|o| git.find_commit(o).ok())
        .and_then(|c| c.tree().ok());
    let to = git.find_commit(head).ok().and_then(|c| c.tree().ok());
    let mut diff = git
        .diff_tree_to_tree(from.as_ref(), to.as_ref(), None)
        .expect("diff");
    let _ = diff.find_similar(None);
    let path = |f: git2::DiffFile<'_>| f.path().map(|p| p.to_string_lossy().into_owned());
    let mut rows = Vec::new();
    for (i, delta) in diff.deltas().enumerate() {
        let new_path = path(delta.new_file())
            .or_else(|| path(delta.old_file()))
            .unwrap_or_default();
        let old_path = path(delta.old_file()).unwrap_or_else(|| new_path.clone());
        let mut row = DiffRow {
            path: new_path,
            old_path,
            status: delta.status(),
            additions: 0,
            deletions: 0,
            hunks: None,
        };
        if let Ok(Some(mut patch)) = git2::Patch::from_diff(&diff, i) {
            if let Ok((_, add, del)) = patch.line_stats() {
                row.additions = add as u64;
                row.deletions = del as u64;
            }
            if let Ok(buf) = patch.to_buf() {
                let text = String::from_utf8_lossy(&buf).into_owned();
                row.hunks = text.find("@@").map(|at| text[at..].to_owned());
            }
        }
        rows.push(row);
    }
    rows
}
