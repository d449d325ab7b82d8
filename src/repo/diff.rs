//! The files two commits differ in (does I/O: reads git objects from the cache).

use git2::{Delta, DiffFile, DiffOptions, Oid, Repository};

const MODE_SUBMODULE: u32 = 0o160_000;

use super::{ChangedFile, FileVersion};

/// The files that differ between the merge base of `base` and `head`, and `head`,
/// sorted by path. No rename detection: a rename is a deletion and an addition.
pub(super) fn diff_commits(
    repo: &Repository,
    base: Oid,
    head: Oid,
) -> Result<Vec<ChangedFile>, git2::Error> {
    let from = match repo.merge_base(base, head) {
        Ok(id) => id,
        // Unrelated histories: compare with `base` itself.
        Err(e) if e.code() == git2::ErrorCode::NotFound => base,
        Err(e) => return Err(e),
    };
    let old_tree = repo.find_commit(from)?.tree()?;
    let new_tree = repo.find_commit(head)?.tree()?;
    let mut options = DiffOptions::new();
    options.include_typechange(true).ignore_submodules(false);
    let diff = repo.diff_tree_to_tree(Some(&old_tree), Some(&new_tree), Some(&mut options))?;
    let mut out = Vec::new();
    for delta in diff.deltas() {
        let (old, new) = match delta.status() {
            Delta::Added => (None, Some(version(repo, &delta.new_file())?)),
            Delta::Deleted => (Some(version(repo, &delta.old_file())?), None),
            _ => (
                Some(version(repo, &delta.old_file())?),
                Some(version(repo, &delta.new_file())?),
            ),
        };
        let file = if new.is_some() {
            delta.new_file()
        } else {
            delta.old_file()
        };
        let path = file
            .path_bytes()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        out.push(ChangedFile { path, old, new });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn version(repo: &Repository, file: &DiffFile<'_>) -> Result<FileVersion, git2::Error> {
    let mode = u32::from(file.mode());
    let id = file.id();
    let content = if mode == MODE_SUBMODULE {
        // A submodule's commit is not in this repository.
        Vec::new()
    } else {
        repo.find_blob(id)?.content().to_vec()
    };
    Ok(FileVersion {
        mode,
        id: id.to_string(),
        content,
    })
}
