//! The blocking core behind [`GitRepo`](super::GitRepo) (does I/O: disk and network;
//! every function here blocks and runs on tokio's blocking pool).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use git2::{Oid, Repository};
use sha2::{Digest as _, Sha256};

use super::auth::redact_url;
use super::bump::{TreeIndex, make_commit};
use super::diff::diff_commits;
use super::error::{Failure, Phase, classify};
use super::remote::{self, PushResult};
use super::{
    BumpCommit, ChangedFile, Delivery, Fetched, GitConfig, PreparedBump, Pushed, RepoError, Source,
    lock_guard,
};
use crate::policy::v1alpha1::RewriteMode;
use crate::policy::values::{BranchName, Glob, RepoUrl};

/// The configuration and the cache directories in use, each behind its lock.
#[derive(Debug)]
pub(super) struct Engine {
    pub(super) config: GitConfig,
    pub(super) slots: Mutex<HashMap<PathBuf, Arc<Mutex<Slot>>>>,
    /// The pass scans belong to (see [`super::GitRepo::begin_pass`]); 0: no passes,
    /// every scan fetches.
    pub(super) pass: AtomicU64,
}

/// One cache directory in use: the repository handle, kept open between operations
/// (opening parses its config and packs, and libgit2's caches live in the handle),
/// and what operations remember ([`Memo`]).
#[derive(Default)]
pub(super) struct Slot {
    repo: Option<Repository>,
    /// The cache on disk as the last operation left it.
    stamp: Option<Stamp>,
    memo: Memo,
}

/// What operations on one cache remember between each other.
#[derive(Default)]
pub(super) struct Memo {
    /// The last fetch of each branch, with the pass it was made in.
    fetched: HashMap<String, (u64, Oid)>,
    /// The directories scans looked files up in.
    trees: TreeIndex,
}

impl Slot {
    /// Keeps `repo` open for the next operation, with the cache as it is now.
    fn keep(&mut self, repo: Repository, path: &Path) {
        self.stamp = Stamp::of(path);
        self.repo = Some(repo);
    }
}

/// What changes on disk when anything touches a bare repository's configuration,
/// `HEAD`, objects or packs: size, modification time and inode of each.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<(u64, std::time::SystemTime, u64)>);

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        ["config", "HEAD", "objects", "objects/pack", "refs"]
            .iter()
            .map(|p| {
                let meta = std::fs::metadata(path.join(p)).ok()?;
                Some((meta.len(), meta.modified().ok()?, meta.ino()))
            })
            .collect::<Option<Vec<_>>>()
            .map(Self)
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("open", &self.repo.is_some())
            .field("stamp", &self.stamp)
            .field("fetched", &self.memo.fetched)
            .finish()
    }
}

impl Engine {
    /// `<cache_dir>/<first 16 bytes of SHA-256(url), hex>-<last path segment>`: one
    /// directory per URL as written, readable by an operator.
    pub(super) fn cache_path(&self, url: &RepoUrl) -> PathBuf {
        let digest = Sha256::digest(url.as_str().as_bytes());
        let mut name = String::with_capacity(48);
        for b in &digest[..16] {
            let _ = write!(name, "{b:02x}");
        }
        let last = url
            .as_str()
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or_default();
        let last: String = last
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .take(40)
            .collect();
        let last = last.trim_start_matches('.');
        if !last.is_empty() {
            name.push('-');
            name.push_str(last);
        }
        self.config.cache_dir.join(name)
    }

    /// Runs `op` on the cache of `url`, holding its lock. `op` gets the repository and
    /// whether it was just created. When the cache cannot be opened, or `op` finds it
    /// damaged, the cache is deleted and `op` runs once more on a fresh one.
    fn with_cache<T>(
        &self,
        url: &RepoUrl,
        mut op: impl FnMut(&Repository, bool) -> Result<T, Failure>,
    ) -> Result<T, RepoError> {
        self.with_slot(url, |repo, created, _| op(repo, created))
    }

    /// [`Self::with_cache`], with what the slot remembers for `op` to read and update.
    fn with_slot<T>(
        &self,
        url: &RepoUrl,
        mut op: impl FnMut(&Repository, bool, &mut Memo) -> Result<T, Failure>,
    ) -> Result<T, RepoError> {
        let path = self.cache_path(url);
        let slot = {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(slots.entry(path.clone()).or_default())
        };
        let mut slot = lock_guard(&slot);
        let mut last = String::new();
        let mut attempt = 0;
        while attempt < 2 {
            // The handle kept open is used while nothing else changed the cache on
            // disk since the last operation (which a handle would not notice).
            let stamp = Stamp::of(&path);
            let held = slot
                .repo
                .take()
                .filter(|_| stamp.is_some() && slot.stamp == stamp);
            let opened = if let Some(repo) = held {
                Ok((repo, false))
            } else {
                slot.memo.fetched.clear();
                open_or_init(&path)
            };
            let (repo, created) = match opened {
                Ok(opened) => opened,
                Err(Failure::Error(e)) => return Err(e),
                Err(Failure::Corrupt(detail)) => {
                    last = detail;
                    Self::discard(&path, attempt, &last)?;
                    attempt += 1;
                    continue;
                }
            };
            match op(&repo, created, &mut slot.memo) {
                Ok(value) => {
                    slot.keep(repo, &path);
                    return Ok(value);
                }
                Err(Failure::Error(e)) => {
                    slot.keep(repo, &path);
                    return Err(e);
                }
                Err(Failure::Corrupt(detail)) => {
                    drop(repo);
                    slot.memo.fetched.clear();
                    slot.memo.trees.clear();
                    last = detail;
                    Self::discard(&path, attempt, &last)?;
                    attempt += 1;
                }
            }
        }
        Err(RepoError::Cache {
            path,
            detail: format!("still unusable after a fresh clone: {last}"),
        })
    }

    /// A damaged cache found on `attempt`: the first time it is deleted (and cloned
    /// again by the next try).
    fn discard(path: &Path, attempt: u32, detail: &str) -> Result<(), RepoError> {
        if attempt == 0 {
            tracing::warn!(
                cache = %path.display(),
                error = %detail,
                "cache unusable; deleting it and cloning again"
            );
            remove_cache(path)?;
        }
        Ok(())
    }

    pub(super) fn fetch(&self, source: &Source) -> Result<Fetched, RepoError> {
        self.with_cache(&source.url, |repo, cloned| {
            let heads = remote::fetch(repo, &self.config, source, &[source.branch.as_str()])?;
            let head = base_head(&heads, source)?;
            Ok(Fetched {
                head: head.to_string(),
                cloned,
            })
        })
    }

    pub(super) fn scan(
        &self,
        source: &Source,
        include: &[Glob],
        exclude: &[Glob],
        mode: RewriteMode,
    ) -> Result<super::Scanned, RepoError> {
        let url = redact_url(source.url.as_str());
        let pass = self.pass.load(Ordering::SeqCst);
        self.with_slot(&source.url, |repo, _, memo| {
            // Within a pass, the branch is fetched once for every policy that reads it.
            let branch = source.branch.as_str();
            let head = match memo.fetched.get(branch) {
                Some(&(at, head)) if pass != 0 && at == pass => head,
                _ => {
                    let heads = remote::fetch(repo, &self.config, source, &[branch])?;
                    let head = base_head(&heads, source)?;
                    memo.fetched.insert(branch.to_owned(), (pass, head));
                    head
                }
            };
            memo.trees.begin(pass);
            let files = repo
                .find_commit(head)
                .and_then(|c| c.tree())
                .and_then(|tree| {
                    super::bump::scan_tree(repo, &tree, include, exclude, mode, &mut memo.trees)
                })
                .map_err(|e| classify(&e, Phase::Local, &url, false))?;
            Ok(super::Scanned {
                head: head.to_string(),
                files,
            })
        })
    }

    pub(super) fn prepare(
        &self,
        request: &Arc<super::BumpRequest>,
        now: DateTime<Utc>,
    ) -> Result<PreparedBump, RepoError> {
        let source = &request.source;
        let url = redact_url(source.url.as_str());
        self.with_cache(&source.url, |repo, cloned| {
            let mut branches = vec![source.branch.as_str()];
            if let Delivery::PullRequest { branch } = &request.delivery {
                branches.push(branch.as_str());
            }
            let heads = remote::fetch(repo, &self.config, source, &branches)?;
            let base = base_head(&heads, source)?;
            let (commit, notices) = make_commit(repo, &self.config, request, base, now)
                .map_err(|e| classify(&e, Phase::Local, &url, false))?;
            let branch_head = match &request.delivery {
                Delivery::PullRequest { branch } => heads.get(branch.as_str()).copied(),
                Delivery::DirectPush => None,
            };
            let up_to_date = match (&commit, branch_head) {
                (Some(c), Some(head)) => carries(repo, head, base, &c.tree, &url)?,
                _ => false,
            };
            Ok(PreparedBump {
                base: base.to_string(),
                cloned,
                commit,
                notices,
                branch_head: branch_head.map(|h| h.to_string()),
                up_to_date,
                request: Arc::clone(request),
                time: now,
            })
        })
    }

    pub(super) fn push(&self, bump: &PreparedBump) -> Result<Pushed, RepoError> {
        let request = &bump.request;
        let source = &request.source;
        let url = redact_url(source.url.as_str());
        let Some(prepared) = &bump.commit else {
            let head = match request.delivery {
                Delivery::PullRequest { .. } => bump.branch_head.clone(),
                Delivery::DirectPush => Some(bump.base.clone()),
            };
            return Ok(not_pushed(request.target_branch(), head));
        };
        self.with_slot(&source.url, |repo, _, memo| {
            // What this pass fetched is not what the remote has any more.
            memo.fetched.clear();
            match &request.delivery {
                Delivery::PullRequest { branch } => {
                    self.push_pr(repo, bump, prepared, branch, &url)
                }
                Delivery::DirectPush => self.push_direct(repo, bump, prepared, &url),
            }
        })
    }

    /// Pull-request push: only when the branch's tree differs from the bump's, forced
    /// when the branch exists.
    fn push_pr(
        &self,
        repo: &Repository,
        bump: &PreparedBump,
        prepared: &BumpCommit,
        branch: &BranchName,
        url: &str,
    ) -> Result<Pushed, Failure> {
        let request = &bump.request;
        let source = &request.source;
        // Level-triggered: look at the branch as it is now, not as it was when the
        // bump was prepared.
        let heads = remote::fetch(
            repo,
            &self.config,
            source,
            &[source.branch.as_str(), branch.as_str()],
        )?;
        let existing = heads.get(branch.as_str()).copied();
        let mut commit = prepared.clone();
        if !has_commit(repo, &commit.id) {
            // The cache was cloned again since: make the commit again.
            let base = base_head(&heads, source)?;
            let (remade, _) = make_commit(repo, &self.config, request, base, bump.time)
                .map_err(|e| classify(&e, Phase::Local, url, false))?;
            let Some(c) = remade else {
                return Ok(not_pushed(branch, existing.map(|h| h.to_string())));
            };
            commit = c;
        }
        let base = base_head(&heads, source)?;
        if let Some(head) = existing
            && carries(repo, head, base, &commit.tree, url)?
        {
            tracing::info!(%head, %branch, "branch already has the bump's tree; not pushing");
            return Ok(not_pushed(branch, Some(head.to_string())));
        }
        let id = parse_oid(&commit.id)?;
        let force = existing.is_some();
        match remote::push(repo, &self.config, source, id, branch.as_str(), force)? {
            PushResult::Done => Ok(Pushed {
                pushed: true,
                forced: force,
                branch: branch.to_string(),
                head: Some(commit.id.clone()),
                commit: Some(commit),
                attempts: 1,
            }),
            // Even a forced push can lose to a concurrent update of the same ref on
            // the server; the next reconcile tries again.
            PushResult::Race(why) => {
                tracing::warn!(%branch, reason = %why, "push lost a race");
                Err(Failure::Error(RepoError::PushRace {
                    url: url.to_owned(),
                    branch: branch.to_string(),
                    attempts: 1,
                }))
            }
        }
    }

    /// Direct push with bounded retries: each lost race re-fetches the base and
    /// re-applies the rewrite on its new head.
    fn push_direct(
        &self,
        repo: &Repository,
        bump: &PreparedBump,
        prepared: &BumpCommit,
        url: &str,
    ) -> Result<Pushed, Failure> {
        let request = &bump.request;
        let source = &request.source;
        let branch = source.branch.as_str();
        let max = self.config.direct_push_attempts.max(1);
        let mut commit = if has_commit(repo, &prepared.id) {
            Some(prepared.clone())
        } else {
            None
        };
        let mut attempt = 0;
        loop {
            let current = if let Some(c) = commit.take() {
                c
            } else {
                let heads = remote::fetch(repo, &self.config, source, &[branch])?;
                let base = base_head(&heads, source)?;
                let (remade, _) = make_commit(repo, &self.config, request, base, bump.time)
                    .map_err(|e| classify(&e, Phase::Local, url, false))?;
                let Some(c) = remade else {
                    tracing::info!(%base, "the new base already has the bump");
                    return Ok(Pushed {
                        pushed: false,
                        forced: false,
                        branch: branch.to_owned(),
                        head: Some(base.to_string()),
                        commit: None,
                        attempts: attempt,
                    });
                };
                c
            };
            attempt += 1;
            let id = parse_oid(&current.id)?;
            match remote::push(repo, &self.config, source, id, branch, false)? {
                PushResult::Done => {
                    return Ok(Pushed {
                        pushed: true,
                        forced: false,
                        branch: branch.to_owned(),
                        head: Some(current.id.clone()),
                        commit: Some(current),
                        attempts: attempt,
                    });
                }
                PushResult::Race(why) => {
                    tracing::warn!(attempt, max, reason = %why, "direct push lost a race");
                    if attempt >= max {
                        return Err(Failure::Error(RepoError::PushRace {
                            url: url.to_owned(),
                            branch: branch.to_owned(),
                            attempts: attempt,
                        }));
                    }
                }
            }
        }
    }

    pub(super) fn changed_files(
        &self,
        source: &Source,
        head_branch: Option<&BranchName>,
        base: &str,
        head: &str,
    ) -> Result<Vec<ChangedFile>, RepoError> {
        let url = redact_url(source.url.as_str());
        let (base_id, head_id) = (parse_oid(base)?, parse_oid(head)?);
        self.with_cache(&source.url, |repo, _| {
            if !has_commit(repo, base) || !has_commit(repo, head) {
                let mut branches = vec![source.branch.as_str()];
                branches.extend(head_branch.map(BranchName::as_str));
                remote::fetch(repo, &self.config, source, &branches)?;
            }
            for sha in [base, head] {
                if !has_commit(repo, sha) {
                    return Err(Failure::Error(RepoError::CommitNotFound {
                        url: url.clone(),
                        sha: sha.to_owned(),
                    }));
                }
            }
            diff_commits(repo, base_id, head_id)
                .map_err(|e| classify(&e, Phase::Local, &url, false))
        })
    }
}

/// Nothing pushed; `head` is the branch's head on the remote.
fn not_pushed(branch: &BranchName, head: Option<String>) -> Pushed {
    Pushed {
        pushed: false,
        forced: false,
        branch: branch.to_string(),
        head,
        commit: None,
        attempts: 0,
    }
}

/// Opens the cache at `path`, or creates it (then `true`).
fn open_or_init(path: &Path) -> Result<(Repository, bool), Failure> {
    if path.exists() {
        return match Repository::open_bare(path) {
            Ok(repo) if repo.is_bare() => Ok((repo, false)),
            Ok(_) => Err(Failure::Corrupt("not a bare repository".into())),
            Err(e) => Err(Failure::Corrupt(e.message().to_owned())),
        };
    }
    let cache_error = |detail: String| {
        Failure::Error(RepoError::Cache {
            path: path.to_path_buf(),
            detail,
        })
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| cache_error(e.to_string()))?;
    }
    let repo = Repository::init_bare(path).map_err(|e| cache_error(e.message().to_owned()))?;
    tracing::info!(cache = %path.display(), "created the repository cache");
    Ok((repo, true))
}

fn remove_cache(path: &Path) -> Result<(), RepoError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RepoError::Cache {
            path: path.to_path_buf(),
            detail: format!("deleting the damaged cache: {e}"),
        }),
    }
}

/// The base branch's head among fetched heads.
fn base_head(heads: &HashMap<String, Oid>, source: &Source) -> Result<Oid, Failure> {
    heads.get(source.branch.as_str()).copied().ok_or_else(|| {
        Failure::Error(RepoError::BranchNotFound {
            url: redact_url(source.url.as_str()),
            branch: source.branch.to_string(),
        })
    })
}

fn has_commit(repo: &Repository, sha: &str) -> bool {
    Oid::from_str(sha).is_ok_and(|id| repo.find_commit(id).is_ok())
}

/// Whether the branch at `head` already carries a bump with `tree` on the base at
/// `base`: same tree, and the base head is the branch head or one of its ancestors.
/// A branch that the base has moved past with the same content (its PR merged, or
/// the base changed the same references since) would open an empty or conflicting
/// PR: it must get the bump again, on the current base.
fn carries(
    repo: &Repository,
    head: Oid,
    base: Oid,
    tree: &str,
    url: &str,
) -> Result<bool, Failure> {
    if tree_of(repo, head, url)? != tree {
        return Ok(false);
    }
    Ok(head == base
        || repo
            .graph_descendant_of(head, base)
            .map_err(|e| classify(&e, Phase::Local, url, false))?)
}

fn tree_of(repo: &Repository, commit: Oid, url: &str) -> Result<String, Failure> {
    repo.find_commit(commit)
        .map(|c| c.tree_id().to_string())
        .map_err(|e| classify(&e, Phase::Local, url, false))
}

fn parse_oid(sha: &str) -> Result<Oid, RepoError> {
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RepoError::InvalidRequest {
            detail: format!("{sha:?} is not a commit id (40 hex digits)"),
        });
    }
    Oid::from_str(sha).map_err(|e| RepoError::InvalidRequest {
        detail: e.message().to_owned(),
    })
}
