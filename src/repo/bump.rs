//! Building the bump commit inside the object database (does I/O: reads and writes
//! git objects in the cache; no working tree), and its message (pure).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use git2::build::TreeUpdateBuilder;
use git2::{FileMode, ObjectType, Oid, Repository, Signature, Tree};

use super::{BumpCommit, BumpRequest, GitConfig};
use crate::core::reference::ImageRef;
use crate::core::rewrite::{Change, Found, Notice};
use crate::policy::v1alpha1::RewriteMode;
use crate::policy::values::Glob;

/// A file the globs select: its path, blob and mode.
struct Selected {
    path: String,
    blob: Oid,
    mode: i32,
}

/// The rewritten tree and what changed.
pub(super) struct Rewrite {
    /// The new tree (the base tree when nothing changed).
    pub(super) tree: Oid,
    pub(super) changes: Vec<Change>,
    pub(super) notices: Vec<Notice>,
}

const MODE_LINK: i32 = 0o120_000;
const MODE_EXECUTABLE: i32 = 0o100_755;
const MODE_GROUP_WRITABLE: i32 = 0o100_664;

/// Every regular file under `tree` that `request`'s globs select. Entries whose names
/// are not UTF-8 cannot be matched by the globs and are not entered; links and
/// submodules are never rewritten.
fn select(
    repo: &Repository,
    tree: &Tree<'_>,
    prefix: &str,
    globs: (&[Glob], &[Glob]),
    mut index: Option<&mut TreeIndex>,
    out: &mut Vec<Selected>,
) -> Result<(), git2::Error> {
    let (include, exclude) = globs;
    // Includes that name files outright (`apps/web.yaml`, the common case for one
    // service per policy) are looked up, not searched for: a policy's scan then costs
    // the same however many files the shared repository holds.
    if prefix.is_empty()
        && let Some(paths) = include
            .iter()
            .map(Glob::exact_path)
            .collect::<Option<Vec<_>>>()
    {
        for path in paths {
            let found = match index.as_deref_mut() {
                Some(index) => index.get_path(repo, tree.id(), path),
                None => tree
                    .get_path(std::path::Path::new(path))
                    .ok()
                    .map(|e| (e.id(), e.filemode(), e.kind())),
            };
            let Some((blob, mode, kind)) = found else {
                continue;
            };
            if kind == Some(ObjectType::Blob)
                && mode != MODE_LINK
                && !exclude.iter().any(|g| g.is_match(path))
                && !out.iter().any(|s: &Selected| s.path == path)
            {
                out.push(Selected {
                    path: path.to_owned(),
                    blob,
                    mode,
                });
            }
        }
        return Ok(());
    }
    for entry in tree {
        let Ok(name) = std::str::from_utf8(entry.name_bytes()) else {
            continue;
        };
        let path = format!("{prefix}{name}");
        match entry.kind() {
            Some(ObjectType::Tree) => {
                // A directory no include can reach is not read at all.
                let dir = format!("{path}/");
                if include.iter().any(|g| g.may_match_under(&dir)) {
                    let sub = repo.find_tree(entry.id())?;
                    select(repo, &sub, &dir, globs, None, out)?;
                }
            }
            Some(ObjectType::Blob)
                if entry.filemode() != MODE_LINK
                    && include.iter().any(|g| g.is_match(&path))
                    && !exclude.iter().any(|g| g.is_match(&path)) =>
            {
                out.push(Selected {
                    path,
                    blob: entry.id(),
                    mode: entry.filemode(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The entries of the directories that scans looked files up in, by tree id, so the
/// next scan finds a file without reading its directory again. libgit2 caches no tree
/// object over 4 KiB (its limit can only be raised by an unsafe call on a process-wide
/// setting), so each scan of a policy whose file sits among 10,000 others inflated,
/// hashed and parsed that directory again: a cost per scan that grew with the number
/// of policies sharing the repository.
///
/// Trees are content-addressed, so an entry is never stale. A tree no lookup used
/// during a whole pass is dropped ([`Self::begin`]), and the index holds at most
/// [`TREE_INDEX_ENTRIES`] directory entries (beyond that it starts over).
#[derive(Default)]
pub(super) struct TreeIndex {
    trees: HashMap<Oid, (u64, Arc<[DirEntry]>)>,
    entries: usize,
    pass: u64,
}

/// At most this many directory entries in a [`TreeIndex`] (about 70 bytes each).
pub(super) const TREE_INDEX_ENTRIES: usize = 200_000;

/// One entry of a directory, as [`TreeIndex`] keeps it.
struct DirEntry {
    name: Box<[u8]>,
    id: Oid,
    mode: i32,
    kind: Option<ObjectType>,
}

impl TreeIndex {
    /// Starts the lookups of pass `pass` (0: no passes; nothing ages out): the trees
    /// no lookup used in the previous pass are dropped.
    pub(super) fn begin(&mut self, pass: u64) {
        if pass == self.pass {
            return;
        }
        let previous = self.pass;
        self.trees.retain(|_, (used, _)| *used >= previous);
        self.entries = self.trees.values().map(|(_, dir)| dir.len()).sum();
        self.pass = pass;
    }

    /// How many trees and directory entries it holds.
    #[cfg(test)]
    pub(super) fn len(&self) -> (usize, usize) {
        (self.trees.len(), self.entries)
    }

    /// Forgets every tree.
    pub(super) fn clear(&mut self) {
        self.trees.clear();
        self.entries = 0;
    }

    /// What [`Tree::get_path`] finds at `path` (components separated by `/`) under the
    /// tree `root`: the entry's id, mode and kind; `None` when there is nothing there
    /// or a tree on the way cannot be read (as `get_path` failing).
    fn get_path(
        &mut self,
        repo: &Repository,
        root: Oid,
        path: &str,
    ) -> Option<(Oid, i32, Option<ObjectType>)> {
        let mut tree = root;
        let mut parts = path.split('/').peekable();
        while let Some(name) = parts.next() {
            let dir = self.dir(repo, tree)?;
            let entry = dir
                .binary_search_by(|e| e.name.as_ref().cmp(name.as_bytes()))
                .ok()
                .map(|i| &dir[i])?;
            if parts.peek().is_none() {
                return Some((entry.id, entry.mode, entry.kind));
            }
            if entry.kind != Some(ObjectType::Tree) {
                return None;
            }
            tree = entry.id;
        }
        None
    }

    /// The entries of the tree `id`, sorted by name, read on first use.
    fn dir(&mut self, repo: &Repository, id: Oid) -> Option<Arc<[DirEntry]>> {
        if let Some((used, dir)) = self.trees.get_mut(&id) {
            *used = self.pass;
            return Some(Arc::clone(dir));
        }
        let tree = repo.find_tree(id).ok()?;
        let mut entries: Vec<DirEntry> = tree
            .iter()
            .map(|e| DirEntry {
                name: e.name_bytes().into(),
                id: e.id(),
                mode: e.filemode(),
                kind: e.kind(),
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let dir: Arc<[DirEntry]> = entries.into();
        if self.entries + dir.len() > TREE_INDEX_ENTRIES {
            self.clear();
        }
        self.entries += dir.len();
        self.trees.insert(id, (self.pass, Arc::clone(&dir)));
        Some(dir)
    }
}

/// The image references in the files of `tree` the globs select (UTF-8 text files
/// only), by path. Files named outright are looked up through `index`.
pub(super) fn scan_tree(
    repo: &Repository,
    tree: &Tree<'_>,
    include: &[Glob],
    exclude: &[Glob],
    mode: RewriteMode,
    index: &mut TreeIndex,
) -> Result<Vec<(String, Vec<Found>)>, git2::Error> {
    let mut files = Vec::new();
    select(repo, tree, "", (include, exclude), Some(index), &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Vec::new();
    for file in files {
        let blob = repo.find_blob(file.blob)?;
        let Ok(text) = std::str::from_utf8(blob.content()) else {
            continue;
        };
        let found = crate::core::rewrite::scan_file(&file.path, text, mode);
        if !found.is_empty() {
            out.push((file.path, found));
        }
    }
    Ok(out)
}

/// Applies the request's plan to the selected files of `base` and writes the new
/// blobs and trees.
pub(super) fn rewrite_tree(
    repo: &Repository,
    base: &Tree<'_>,
    request: &BumpRequest,
) -> Result<Rewrite, git2::Error> {
    let mut files = Vec::new();
    select(
        repo,
        base,
        "",
        (&request.include, &request.exclude),
        None,
        &mut files,
    )?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut changes = Vec::new();
    let mut notices = Vec::new();
    let mut update = TreeUpdateBuilder::new();
    for file in &files {
        let original = repo.find_blob(file.blob)?;
        let text = match std::str::from_utf8(original.content()) {
            Ok(t) if !t.contains('\0') => t,
            _ => {
                notices.push(Notice {
                    file: file.path.clone(),
                    line: 1,
                    message: "skipped: not UTF-8 text".into(),
                });
                continue;
            }
        };
        let r = request.plan.rewrite(&file.path, text, request.mode);
        notices.extend(r.notices);
        if r.changes.is_empty() || r.text.as_ref() == text {
            continue;
        }
        let id = repo.blob(r.text.as_bytes())?;
        let mode = match file.mode {
            MODE_EXECUTABLE => FileMode::BlobExecutable,
            MODE_GROUP_WRITABLE => FileMode::BlobGroupWritable,
            _ => FileMode::Blob,
        };
        update.upsert(file.path.as_str(), id, mode);
        changes.extend(r.changes);
    }
    let tree = if changes.is_empty() {
        base.id()
    } else {
        update.create_updated(repo, base)?
    };
    Ok(Rewrite {
        tree,
        changes,
        notices,
    })
}

/// Builds the bump commit on `base` (`None` when the plan changes nothing), and the
/// rewrite's notices.
pub(super) fn make_commit(
    repo: &Repository,
    config: &GitConfig,
    request: &BumpRequest,
    base: Oid,
    time: DateTime<Utc>,
) -> Result<(Option<BumpCommit>, Vec<Notice>), git2::Error> {
    let parent = repo.find_commit(base)?;
    let base_tree = parent.tree()?;
    let rewrite = rewrite_tree(repo, &base_tree, request)?;
    if rewrite.changes.is_empty() {
        return Ok((None, rewrite.notices));
    }
    let mut message = commit_message(&request.policy, &rewrite.changes);
    if let Some(reason) = &request.rollback {
        message = rollback_message(&message, reason);
    } else if let Some((from, evidence)) = &request.promoted {
        message = promoted_message(&message, from, evidence);
    }
    let when = git2::Time::new(time.timestamp(), 0);
    let author = Signature::new(&config.author.name, &config.author.email, &when)?;
    let committer = Signature::new(&config.committer.name, &config.committer.email, &when)?;
    let tree = repo.find_tree(rewrite.tree)?;
    let id = repo.commit(None, &author, &committer, &message, &tree, &[&parent])?;
    tracing::info!(
        commit = %id,
        base = %base,
        changes = rewrite.changes.len(),
        "bump commit built"
    );
    Ok((
        Some(BumpCommit {
            id: id.to_string(),
            parent: base.to_string(),
            tree: rewrite.tree.to_string(),
            message,
            changes: rewrite.changes,
        }),
        rewrite.notices,
    ))
}

/// The commit message for a bump: built only from the policy name and the changes
/// (no time, no randomness; the order of `changes` does not matter), so the same
/// bump always gets the same message.
///
/// ```text
/// Bump prow to v20240102-def456
///
/// 3 image references in 2 files:
/// - config/prow/cluster/deck.yaml
/// - config/prow/cluster/hook.yaml
///
/// Autobump-Policy: prow
/// Autobump-Image: gcr.io/k8s-prow/deck:v20240101-abc123 -> gcr.io/k8s-prow/deck:v20240102-def456
/// Autobump-Image: gcr.io/k8s-prow/hook:v20240101-abc123 -> gcr.io/k8s-prow/hook:v20240102-def456
/// ```
///
/// The subject names the new version when there is one (tag, and digest if pinned),
/// else up to three versions and how many more. The trailers list each distinct
/// `old -> new` reference pair once, sorted; for a digest-only reference
/// (`repo@sha256:…`) the trailer names the tags of both digests:
/// `Autobump-Image: repo@sha256:A -> repo@sha256:B (tags v1.1.0 -> v1.2.0)`, and the
/// subject's version is the new tag and digest.
#[must_use]
pub fn commit_message(policy: &str, changes: &[Change]) -> String {
    let versions: BTreeSet<String> = changes
        .iter()
        .map(|c| match ImageRef::parse(&c.new) {
            Some(r) => match (r.tag, r.digest, &c.digest_tags) {
                (Some(t), Some(d), _) => format!("{t}@{d}"),
                (Some(t), None, _) => t,
                (None, Some(d), Some(tags)) => format!("{}@{d}", tags.new),
                (None, Some(d), None) => d,
                (None, None, _) => c.new.clone(),
            },
            None => c.new.clone(),
        })
        .collect();
    let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
    let subject = match versions.as_slice() {
        [] => format!("Bump {policy}"),
        [one] => format!("Bump {policy} to {one}"),
        [a, b] => format!("Bump {policy} to {a} and {b}"),
        [a, b, c] => format!("Bump {policy} to {a}, {b} and {c}"),
        [a, b, c, rest @ ..] => format!(
            "Bump {policy} to {a}, {b}, {c} and {} more versions",
            rest.len()
        ),
    };
    let files: BTreeSet<&str> = changes.iter().map(|c| c.file.as_str()).collect();
    // Each distinct trailer once, sorted.
    let trailers: BTreeSet<String> = changes
        .iter()
        .map(|c| match &c.digest_tags {
            Some(t) => format!(
                "Autobump-Image: {} -> {} (tags {} -> {})",
                c.old, c.new, t.old, t.new
            ),
            None => format!("Autobump-Image: {} -> {}", c.old, c.new),
        })
        .collect();
    let mut m = String::new();
    let refs = if changes.len() == 1 {
        "reference"
    } else {
        "references"
    };
    let in_files = if files.len() == 1 { "file" } else { "files" };
    let _ = writeln!(m, "{subject}\n");
    let _ = writeln!(
        m,
        "{} image {refs} in {} {in_files}:",
        changes.len(),
        files.len()
    );
    for f in &files {
        let _ = writeln!(m, "- {f}");
    }
    let _ = writeln!(m, "\nAutobump-Policy: {policy}");
    for t in trailers {
        let _ = writeln!(m, "{t}");
    }
    m
}

/// A bump message with the evidence of its promotion: the evidence after the list of
/// files, and an `Autobump-Promoted-From` trailer after the others.
#[must_use]
pub fn promoted_message(bump_message: &str, from: &str, evidence: &str) -> String {
    let (body, trailers) = bump_message
        .split_once("\nAutobump-Policy:")
        .map_or((bump_message, ""), |(b, t)| (b, t));
    let mut m = String::with_capacity(bump_message.len() + evidence.len() + 64);
    m.push_str(body.trim_end());
    m.push_str("\n\n");
    m.push_str(evidence.trim_end());
    m.push('\n');
    if !trailers.is_empty() {
        m.push_str("\nAutobump-Policy:");
        m.push_str(trailers.trim_end());
        m.push('\n');
    }
    let _ = writeln!(m, "Autobump-Promoted-From: {}", from.replace('\n', " "));
    m
}

/// A bump message turned into a rollback's: "Roll back …" as the subject and the
/// reason as an `Autobump-Rollback` trailer (one line).
#[must_use]
pub fn rollback_message(bump_message: &str, reason: &str) -> String {
    let body = bump_message.strip_prefix("Bump ").unwrap_or(bump_message);
    let reason = reason.replace('\n', " ");
    format!("Roll back {body}Autobump-Rollback: {reason}\n")
}
