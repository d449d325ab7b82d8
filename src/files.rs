//! The files of a checked-out tree (does I/O): listing them with include/exclude
//! globs, rewriting them with a [`Plan`], and writing results atomically.
//!
//! Kept thin on purpose: every decision is in [`crate::core::rewrite`]; this module
//! only reads and writes.
//!
//! * Paths are relative to the root, `/`-separated, sorted, and matched against the
//!   globs as such: a file is taken when an `include` glob matches and no `exclude`
//!   glob does.
//! * `.git` directories and symbolic links are never entered or written (writing
//!   through a link would replace it with a file).
//! * Files that are not UTF-8 text are skipped, with a notice.
//! * Writes go to a temporary file next to the target, get the original's
//!   permissions, then are renamed over it: a reader sees the old or the new file,
//!   never half of one. Like git's own checkout, files are not fsynced (10,000 fsyncs
//!   cost seconds); the tree is a working copy that can always be checked out again.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::core::rewrite::{self, Change, Found, Notice, Plan};
use crate::policy::v1alpha1::RewriteMode;
use crate::policy::values::Glob;

/// An I/O problem.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The root is not a directory.
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
}

impl FilesError {
    /// A short stable label for metrics and logs.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::NotADirectory(_) => "not_a_directory",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files under `root` that `include` and `exclude` select, relative and sorted.
pub fn list(root: &Path, include: &[Glob], exclude: &[Glob]) -> Result<Vec<String>, FilesError> {
    if !fs::metadata(root).map_err(io(root))?.is_dir() {
        return Err(FilesError::NotADirectory(root.to_path_buf()));
    }
    let mut out = Vec::new();
    walk(root, "", &mut |rel| {
        if include.iter().any(|g| g.is_match(rel)) && !exclude.iter().any(|g| g.is_match(rel)) {
            out.push(rel.to_owned());
        }
    })?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, visit: &mut dyn FnMut(&str)) -> Result<(), FilesError> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let kind = entry.file_type().map_err(io(&entry.path()))?;
        let name = entry.file_name();
        // Names that are not UTF-8 cannot be matched by globs over `/` paths.
        let Some(name) = name.to_str() else { continue };
        let rel = format!("{prefix}{name}");
        if kind.is_dir() {
            if name != ".git" {
                walk(&entry.path(), &format!("{rel}/"), visit)?;
            }
        } else if kind.is_file() {
            visit(&rel);
        }
    }
    Ok(())
}

/// One file's new contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRewrite {
    /// Relative, `/`-separated.
    pub path: String,
    /// The contents before.
    pub before: String,
    /// The contents after.
    pub after: String,
    /// The references changed.
    pub changes: Vec<Change>,
}

/// What rewriting a tree would do (nothing is written until [`TreeRewrite::write`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeRewrite {
    /// The files that change, sorted by path.
    pub files: Vec<FileRewrite>,
    /// Warnings, sorted by file and line.
    pub notices: Vec<Notice>,
    /// How many files were read.
    pub scanned: usize,
}

impl TreeRewrite {
    /// Every change, by file then line.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.files.iter().flat_map(|f| &f.changes)
    }

    /// Writes the changed files under `root`, each atomically.
    pub fn write(&self, root: &Path) -> Result<(), FilesError> {
        for f in &self.files {
            write_atomic(&root.join(&f.path), f.after.as_bytes())?;
        }
        Ok(())
    }
}

/// Every image reference in the selected files under `root` (see
/// [`rewrite::scan`]), by file; files without references and files that are not UTF-8
/// text are left out.
pub fn scan_tree(
    root: &Path,
    include: &[Glob],
    exclude: &[Glob],
    mode: RewriteMode,
) -> Result<Vec<(String, Vec<Found>)>, FilesError> {
    let mut out = Vec::new();
    for rel in list(root, include, exclude)? {
        let path = root.join(&rel);
        let bytes = fs::read(&path).map_err(io(&path))?;
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        let found = rewrite::scan_file(&rel, &text, mode);
        if !found.is_empty() {
            out.push((rel, found));
        }
    }
    Ok(out)
}

/// Reads the selected files under `root` and rewrites them in memory.
pub fn rewrite_tree(
    root: &Path,
    include: &[Glob],
    exclude: &[Glob],
    mode: RewriteMode,
    plan: &Plan,
) -> Result<TreeRewrite, FilesError> {
    let mut out = TreeRewrite::default();
    for rel in list(root, include, exclude)? {
        let path = root.join(&rel);
        let bytes = fs::read(&path).map_err(io(&path))?;
        out.scanned += 1;
        let text = match String::from_utf8(bytes) {
            Ok(t) if !t.contains('\0') => t,
            _ => {
                out.notices.push(Notice {
                    file: rel,
                    line: 1,
                    message: "skipped: not UTF-8 text".into(),
                });
                continue;
            }
        };
        let r = plan.rewrite(&rel, &text, mode);
        out.notices.extend(r.notices);
        if r.changes.is_empty() {
            continue;
        }
        let (after, changes) = (r.text.into_owned(), r.changes);
        out.files.push(FileRewrite {
            path: rel,
            before: text,
            after,
            changes,
        });
    }
    Ok(out)
}

/// Replaces `path` with `contents` atomically (temporary file + rename in the same
/// directory), keeping the original file's permissions.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), FilesError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let permissions = fs::metadata(path).ok().map(|m| m.permissions());
    let mut n = 0u32;
    let (tmp, mut file) = loop {
        let tmp = dir.join(format!(".{name}.autobump-{}-{n}.tmp", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(io(&tmp)(e)),
        }
    };
    let result = (|| {
        file.write_all(contents)?;
        if let Some(p) = permissions {
            fs::set_permissions(&tmp, p)?;
        }
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    Ok(())
}
