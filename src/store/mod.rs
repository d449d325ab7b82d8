//! Durable per-policy state: holds, versions, history, bad versions (does I/O).
//!
//! In standalone mode the state lives in a SQLite database ([`sqlite::SqliteStore`]:
//! one row per policy, an append-only history table); in-cluster it lives in the
//! custom resources' status ([`kube::KubeStore`], with a bounded
//! history). Everything a restart must not forget goes here and nowhere else
//! (convention 3): the in-memory state of a reconcile is always rebuilt from the
//! store and the world.
//!
//! [`FileStore`] is the JSON state file of earlier versions: it is read to import it
//! into the database ([`sqlite::SqliteStore::open`]), and kept for tools and tests.
//! It writes atomically (temporary file, fsync, rename, fsync of the
//! directory) under an advisory lock, so a crash mid-write leaves the previous state,
//! and the CLI (`autobump hold`) and a running controller can share the file.
//!
//! Careful with what it finds on disk:
//! * the temporary file gets a fresh random name in the state file's directory and is
//!   created exclusively (`O_CREAT|O_EXCL`), so a symlink planted where it will be
//!   written is never followed (a clash is retried with another name);
//! * a state path that is a symlink is written *through*: the link stays and its
//!   target is replaced (atomically, in the target's directory), so a state file kept
//!   on another volume and linked into place keeps being updated;
//! * a state file that is not JSON, not a regular file, of a newer format, or with
//!   fields this build does not know is refused with an error naming it and never
//!   overwritten (writing it back would drop what this build cannot read).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub(crate) mod change;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::v1alpha1::{HistoryEntry, Intent, IntentKind, Reason};

pub mod history;
pub mod kube;
pub mod sqlite;

pub use sqlite::SqliteStore;

/// How many history entries a policy's in-memory state keeps (oldest dropped
/// first): the whole history of [`MemoryStore`] and of the cluster's status. The
/// database keeps every entry (see [`sqlite`]).
pub const HISTORY_LIMIT: usize = 200;

/// The version of the state file format this build writes.
pub const FORMAT_VERSION: u32 = 1;

pub use crate::policy::v1alpha1::{BadVersion, PolicyState};

impl PolicyState {
    /// Appends a history entry, dropping the oldest beyond [`HISTORY_LIMIT`].
    pub fn record(&mut self, at: DateTime<Utc>, reason: Reason, message: impl Into<String>) {
        let seq = self.history.last().map_or(1, |e| e.seq + 1);
        self.history.push(HistoryEntry {
            seq,
            at,
            reason,
            message: message.into(),
        });
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
    }

    /// Puts `intent` in force, replacing the one of its kind.
    pub fn intend(&mut self, intent: Intent) {
        self.intents.retain(|i| i.kind != intent.kind);
        self.intents.push(intent);
    }

    /// The intent of `kind` in force.
    #[must_use]
    pub fn intent(&self, kind: IntentKind) -> Option<&Intent> {
        self.intents.iter().find(|i| i.kind == kind)
    }

    /// The intent of `kind` happened: it ends, and its history entry is written at the
    /// time it was decided, with `message` if given (what only the outcome tells) or
    /// its own. Nothing when no such intent is in force.
    pub fn fulfil(&mut self, kind: IntentKind, message: Option<String>) {
        let Some(at) = self.intents.iter().position(|i| i.kind == kind) else {
            return;
        };
        let intent = self.intents.remove(at);
        if let Some(reason) = &intent.record {
            self.record(intent.since, *reason, message.unwrap_or(intent.message));
        }
    }

    /// The intent of `kind` did not happen (or needs no record): it ends.
    pub fn abandon(&mut self, kind: IntentKind) {
        self.intents.retain(|i| i.kind != kind);
    }

    /// Remembers a comment id; returns false if it was seen before.
    pub fn see_comment(&mut self, id: u64) -> bool {
        const LIMIT: usize = 1000;
        if self.seen_comments.contains(&id) {
            return false;
        }
        self.seen_comments.push(id);
        if self.seen_comments.len() > LIMIT {
            self.seen_comments.remove(0);
        }
        true
    }

    /// The bad versions as `(image, tag)` pairs, as selection takes them.
    #[must_use]
    pub fn bad_pairs(&self) -> BTreeSet<(String, String)> {
        self.bad_versions
            .iter()
            .map(|b| (b.image.clone(), b.tag.clone()))
            .collect()
    }
}

/// The whole state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(default)]
    policies: BTreeMap<String, PolicyState>,
}

/// Reading or writing the state failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be read or written.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a state file autobump can read.
    #[error("state file {path} is not valid: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The file holds what this build does not know (a newer format, or fields it
    /// would drop): refused rather than read and truncated at the next write.
    #[error("state file {path}: {why}")]
    Version {
        /// The file.
        path: PathBuf,
        /// What this build does not know.
        why: String,
    },
    /// The state database failed.
    #[error("state database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// Whether trying again may help (busy, locked, I/O).
        retryable: bool,
        /// The error.
        source: rusqlite::Error,
    },
    /// Another `autobump run` holds the database.
    #[error(
        "state database {path} is in use by another autobump run ({holder}); two runs on one database would act twice. Stop that one first. A lease left by a process that is gone from this host is taken over automatically; if the holder ran on another host that is gone for good, remove its lease: sqlite3 {path} 'DELETE FROM lease'"
    )]
    Leased {
        /// The database file.
        path: PathBuf,
        /// Who holds it.
        holder: sqlite::LeaseHolder,
    },
}

impl StoreError {
    /// Whether trying again may help (I/O may be transient; a corrupt file is not).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io { .. } => true,
            Self::Database { retryable, .. } => *retryable,
            Self::Corrupt { .. } | Self::Version { .. } | Self::Leased { .. } => false,
        }
    }

    /// The variant name, for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Corrupt { .. } => "corrupt",
            Self::Version { .. } => "version",
            Self::Database { .. } => "database",
            Self::Leased { .. } => "leased",
        }
    }
}

/// Where policy state is kept.
pub trait Store: Send + Sync {
    /// The state of one policy (default when never written).
    fn load(&self, policy: &str) -> Result<PolicyState, StoreError>;

    /// Every policy's state.
    fn load_all(&self) -> Result<BTreeMap<String, PolicyState>, StoreError>;

    /// Reads, changes with `f` and writes back one policy's state, atomically with
    /// respect to other writers. Returns the new state.
    fn update(
        &self,
        policy: &str,
        f: &mut dyn FnMut(&mut PolicyState),
    ) -> Result<PolicyState, StoreError>;

    /// One policy's history entries at or after `since` (all with `None`), oldest
    /// first: the whole trail where the store keeps it (the database), what it has
    /// otherwise.
    fn history(
        &self,
        policy: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut entries = self.load(policy)?.history;
        if let Some(since) = since {
            entries.retain(|e| e.at >= since);
        }
        Ok(entries)
    }

    /// The names of the policies with a state.
    fn policies(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.load_all()?.into_keys().collect())
    }

    /// Every policy's state as it stands, without its history, and the newest
    /// history entry of each of `reasons` (what an overview shows: the last rollback,
    /// the last bump). The database answers this from one row per policy and one
    /// indexed lookup per reason, however long the history; other stores take the
    /// newest entries from the history they hold.
    fn latest_all(&self, reasons: &[Reason]) -> Result<BTreeMap<String, Latest>, StoreError> {
        Ok(self
            .load_all()?
            .into_iter()
            .map(|(name, state)| (name, Latest::of(state, reasons)))
            .collect())
    }
}

/// A policy's state without its history, and the newest entry of some reasons (see
/// [`Store::latest_all`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latest {
    /// The state; its `history` is empty.
    pub state: PolicyState,
    /// The newest entry of each reason asked for that has one, oldest first.
    pub newest: Vec<HistoryEntry>,
}

impl Latest {
    /// From a state with (some of) its history: the newest entry of each of
    /// `reasons` in it, and the state without the history.
    #[must_use]
    pub fn of(mut state: PolicyState, reasons: &[Reason]) -> Self {
        let history = std::mem::take(&mut state.history);
        let mut newest: Vec<HistoryEntry> = reasons
            .iter()
            .filter_map(|r| history.iter().rev().find(|e| e.reason == *r).cloned())
            .collect();
        newest.sort_by_key(|e| e.seq);
        Self { state, newest }
    }

    /// The newest entry of any of `reasons`.
    #[must_use]
    pub fn last_of(&self, reasons: &[Reason]) -> Option<&HistoryEntry> {
        self.newest
            .iter()
            .filter(|e| reasons.contains(&e.reason))
            .max_by_key(|e| e.seq)
    }
}

/// State in one JSON file (the format of earlier versions, imported into the
/// database).
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    lock_path: PathBuf,
}

impl FileStore {
    /// A store at `path` (created on first write; its directory must exist or be
    /// creatable).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut lock = path.clone().into_os_string();
        lock.push(".lock");
        Self {
            path,
            lock_path: PathBuf::from(lock),
        }
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn read(&self) -> Result<StateFile, StoreError> {
        let Some(text) = self.read_text()? else {
            return Ok(StateFile {
                version: FORMAT_VERSION,
                policies: BTreeMap::new(),
            });
        };
        parse_state(&self.path, &text)
    }

    /// The file's text, `None` when there is no file yet. Only a regular file is read
    /// (opened without blocking, so a FIFO in its place cannot stall the reader).
    fn read_text(&self) -> Result<Option<String>, StoreError> {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        if !file.metadata().map_err(|e| self.io(e))?.is_file() {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                why: "not a regular file".into(),
            });
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| self.io(e))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                why: format!("not UTF-8 text ({})", e.utf8_error()),
            })
    }

    /// Where the state is written: the path itself, or the file a symlink there
    /// points to (followed to the end, relative links from their own directory).
    fn target(&self) -> Result<PathBuf, StoreError> {
        // The kernel's own limit on symlinks followed in one lookup.
        const MAX_HOPS: usize = 40;
        let mut path = self.path.clone();
        for _ in 0..MAX_HOPS {
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let link = std::fs::read_link(&path).map_err(|e| self.io(e))?;
                    path = match path.parent() {
                        Some(dir) if link.is_relative() => dir.join(link),
                        _ => link,
                    };
                }
                Ok(_) => return Ok(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path),
                Err(e) => return Err(self.io(e)),
            }
        }
        Err(self.io(std::io::Error::other(format!(
            "more than {MAX_HOPS} symlinks to follow"
        ))))
    }

    fn write(&self, file: &StateFile) -> Result<(), StoreError> {
        let target = self.target()?;
        let dir = target
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let body = serde_json::to_vec_pretty(file).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        let (tmp, mut out) = self.create_temp(&target)?;
        let written = out
            .write_all(&body)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.sync_all());
        drop(out);
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &target)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io(e));
        }
        // Make the rename itself durable.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))
    }

    /// A new temporary file next to `target`, created exclusively under a random
    /// name (`.NAME.RANDOM.tmp`): whatever already sits at a name, a planted symlink
    /// too, is never opened.
    fn create_temp(&self, target: &Path) -> Result<(PathBuf, File), StoreError> {
        const TRIES: usize = 16;
        let name = target
            .file_name()
            .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
        let mut last = None;
        for _ in 0..TRIES {
            let tmp = target.with_file_name(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => return Ok((tmp, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(self.io(e)),
            }
        }
        Err(self.io(last.unwrap_or_else(|| std::io::Error::other("no temporary file"))))
    }

    fn locked<T>(&self, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        if let Some(dir) = self
            .lock_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| self.io(e))?;
        lock.lock().map_err(|e| self.io(e))?;
        let result = f();
        // Closing the file releases the lock; an explicit unlock error is harmless.
        let _ = lock.unlock();
        result
    }
}

impl Store for FileStore {
    fn load(&self, policy: &str) -> Result<PolicyState, StoreError> {
        Ok(self.read()?.policies.remove(policy).unwrap_or_default())
    }

    fn load_all(&self) -> Result<BTreeMap<String, PolicyState>, StoreError> {
        Ok(self.read()?.policies)
    }

    fn update(
        &self,
        policy: &str,
        f: &mut dyn FnMut(&mut PolicyState),
    ) -> Result<PolicyState, StoreError> {
        self.locked(|| {
            let mut file = self.read()?;
            file.version = FORMAT_VERSION;
            let state = file.policies.entry(policy.to_owned()).or_default();
            f(state);
            let new = state.clone();
            self.write(&file)?;
            Ok(new)
        })
    }
}

/// Reads a state file's text (`path` names it in errors): JSON of a known format with
/// only fields this build knows; anything else is refused, never guessed at.
fn parse_state(path: &Path, text: &str) -> Result<StateFile, StoreError> {
    let file: StateFile = parse_known(path, "", text)?;
    if file.version > FORMAT_VERSION {
        return Err(StoreError::Version {
            path: path.to_path_buf(),
            why: format!(
                "written by a newer autobump (format {}, this build reads up to {FORMAT_VERSION}); refusing to overwrite it",
                file.version
            ),
        });
    }
    Ok(file)
}

/// Reads one policy's state row of the database at `path`, refused like a state
/// file with fields this build does not know.
fn parse_policy_state(path: &Path, policy: &str, text: &str) -> Result<PolicyState, StoreError> {
    parse_known(path, &format!("policy {policy}: "), text)
}

/// JSON `text` as a `T` with only fields this build knows (`context` prefixes the
/// reasons given).
fn parse_known<T: serde::de::DeserializeOwned>(
    path: &Path,
    context: &str,
    text: &str,
) -> Result<T, StoreError> {
    // The most unknown fields named in the error.
    const NAMED: usize = 5;
    let mut unknown = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed: Result<T, _> = serde_ignored::deserialize(&mut de, |field| {
        // serde_ignored writes an `Option`'s `Some` as `?`: not part of the field's name.
        unknown.push(field.to_string().replace(".?", ""));
    });
    let value = parsed
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            why: format!("{context}{e}"),
        })?;
    if !unknown.is_empty() {
        let mut named = unknown
            .iter()
            .take(NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if unknown.len() > NAMED {
            let _ = write!(named, " and {} more", unknown.len() - NAMED);
        }
        return Err(StoreError::Version {
            path: path.to_path_buf(),
            why: format!(
                "{context}fields this version of autobump does not know ({named}): written by a newer autobump, or edited by hand? Refusing to read it, since writing it back would drop them; run the newer autobump, or remove the fields"
            ),
        });
    }
    Ok(value)
}

/// State in memory: for tests and the simulator.
#[derive(Debug, Default)]
pub struct MemoryStore {
    policies: Mutex<BTreeMap<String, PolicyState>>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PolicyState>> {
        self.policies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn load(&self, policy: &str) -> Result<PolicyState, StoreError> {
        Ok(self.lock().get(policy).cloned().unwrap_or_default())
    }

    fn load_all(&self) -> Result<BTreeMap<String, PolicyState>, StoreError> {
        Ok(self.lock().clone())
    }

    fn update(
        &self,
        policy: &str,
        f: &mut dyn FnMut(&mut PolicyState),
    ) -> Result<PolicyState, StoreError> {
        let mut all = self.lock();
        let state = all.entry(policy.to_owned()).or_default();
        f(state);
        Ok(state.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::v1alpha1::Hold;

    /// A time from RFC 3339 text (also for the `sqlite` tests).
    pub(super) fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// A person's hold (also for the `sqlite` tests).
    pub(super) fn hold() -> Hold {
        Hold {
            by: "user:alice".into(),
            since: at("2026-11-21T10:00:00Z"),
            reason: "release freeze".into(),
            via: Some("https://github.com/acme/deploy/pull/7#issuecomment-1".into()),
            automatic: false,
        }
    }

    fn merge_intent(pr: u64, since: &str) -> Intent {
        Intent {
            pull_request: Some(pr),
            ..Intent::new(
                IntentKind::Merge,
                Some(Reason::Merged),
                format!("PR #{pr} merged"),
                at(since),
            )
        }
    }

    #[test]
    fn intents_are_one_per_kind_and_end_with_their_record_or_none() {
        let mut s = PolicyState::default();
        s.intend(merge_intent(1, "2026-11-21T10:00:00Z"));
        s.intend(merge_intent(2, "2026-11-21T10:05:00Z"));
        assert_eq!(s.intents.len(), 1, "a new intent replaces its kind's");
        assert_eq!(s.intent(IntentKind::Merge).unwrap().pull_request, Some(2));
        s.record(at("2026-11-21T10:06:00Z"), Reason::Deployed, "x");
        s.fulfil(IntentKind::Merge, Some("PR #2 merged as abc".into()));
        assert!(s.intents.is_empty());
        let last = s.history.last().unwrap();
        assert_eq!(
            (
                last.reason.as_str(),
                last.message.as_str(),
                last.at,
                last.seq
            ),
            (
                "Merged",
                "PR #2 merged as abc",
                at("2026-11-21T10:05:00Z"),
                2
            ),
            "recorded at the time it was decided, in order of recording"
        );
        // Its own message when the outcome adds nothing; nothing when abandoned or absent.
        s.intend(merge_intent(3, "2026-11-21T11:00:00Z"));
        s.fulfil(IntentKind::Merge, None);
        assert_eq!(s.history.last().unwrap().message, "PR #3 merged");
        s.intend(merge_intent(4, "2026-11-21T12:00:00Z"));
        s.abandon(IntentKind::Merge);
        s.fulfil(IntentKind::Merge, None);
        assert_eq!(s.history.len(), 3);
        assert!(s.intents.is_empty());
    }

    #[test]
    fn file_store_round_trips_and_survives_a_new_instance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/autobump.json");
        let store = FileStore::new(&path);
        assert_eq!(store.load("prow").unwrap(), PolicyState::default());
        store
            .update("prow", &mut |s| {
                s.hold = Some(hold());
                s.bad_versions.insert(BadVersion {
                    image: "gcr.io/k8s-prow/hook".into(),
                    tag: "v20240105-bbbbbbb".into(),
                });
                s.record(at("2026-11-21T10:00:00Z"), Reason::Held, "held by alice");
            })
            .unwrap();
        store
            .update("other", &mut |s| {
                s.last_bump = Some(at("2026-11-21T09:00:00Z"));
            })
            .unwrap();

        // A restart: a new store on the same file sees everything.
        let again = FileStore::new(&path);
        let prow = again.load("prow").unwrap();
        assert_eq!(prow.hold, Some(hold()));
        assert_eq!(
            prow.bad_pairs(),
            [(
                "gcr.io/k8s-prow/hook".to_owned(),
                "v20240105-bbbbbbb".to_owned()
            )]
            .into()
        );
        assert_eq!(prow.history.len(), 1);
        assert_eq!(again.load_all().unwrap().len(), 2);
        assert!(
            !path.with_extension("json.tmp").exists(),
            "no temporary file left"
        );
    }

    #[test]
    fn a_corrupt_or_newer_file_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, "{not json").unwrap();
        let store = FileStore::new(&path);
        let err = store.update("p", &mut |_| {}).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{not json");

        std::fs::write(&path, r#"{"version": 99, "policies": {}}"#).unwrap();
        let err = store.load("p").unwrap_err();
        assert!(err.to_string().contains("newer autobump"), "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn a_symlink_planted_at_a_temporary_name_is_never_followed() {
        // Issue 14, F7: the writer used to open `<state>.tmp` without O_EXCL.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("s.json.tmp")).unwrap();
        let store = FileStore::new(&path);
        store.update("p", &mut |s| s.hold = Some(hold())).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(store.load("p").unwrap().hold, Some(hold()));
        // The temporary file is gone, and what is left at the planted name is the link.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| Path::new(n).extension().is_some_and(|e| e == "tmp"))
            .collect();
        assert_eq!(names, ["s.json.tmp"]);
        // A fresh name each time, created exclusively: one that exists is never opened.
        let (a, _) = store.create_temp(&path).unwrap();
        let (b, _) = store.create_temp(&path).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(dir.path()));
    }

    #[test]
    fn a_state_path_that_is_a_symlink_is_written_through_to_its_target() {
        // Issue 14, W7: the link used to be replaced by a regular file.
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("volume");
        std::fs::create_dir(&volume).unwrap();
        let target = volume.join("state.json");
        let link = dir.path().join("s.json");
        // A relative link, resolved from the link's own directory.
        std::os::unix::fs::symlink("volume/state.json", &link).unwrap();
        let store = FileStore::new(&link);
        store.update("p", &mut |s| s.hold = Some(hold())).unwrap();
        store
            .update("q", &mut |s| {
                s.see_comment(7);
            })
            .unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let written = FileStore::new(&target).load_all().unwrap();
        assert_eq!(written["p"].hold, Some(hold()));
        assert_eq!(written["q"].seen_comments, [7]);
        // A chain of links ends at the same file.
        let chain = dir.path().join("chain.json");
        std::os::unix::fs::symlink(&link, &chain).unwrap();
        FileStore::new(&chain)
            .update("r", &mut |s| s.last_bump = Some(at("2026-12-06T10:00:00Z")))
            .unwrap();
        assert_eq!(FileStore::new(&target).load_all().unwrap().len(), 3);
        assert!(
            std::fs::symlink_metadata(&chain)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // A dangling link: its target is created.
        let dangling = dir.path().join("dangling.json");
        std::os::unix::fs::symlink(volume.join("new.json"), &dangling).unwrap();
        FileStore::new(&dangling).update("p", &mut |_| {}).unwrap();
        assert!(volume.join("new.json").is_file());
        // A loop is an error, not a hang.
        let (x, y) = (dir.path().join("x"), dir.path().join("y"));
        std::os::unix::fs::symlink(&y, &x).unwrap();
        std::os::unix::fs::symlink(&x, &y).unwrap();
        let err = FileStore::new(&x).update("p", &mut |_| {}).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
    }

    #[test]
    fn fields_this_build_does_not_know_are_refused_not_dropped() {
        // Issue 14, W8: unknown fields used to vanish at the next write.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let text = r#"{"version": 1, "rollout": "v2", "policies": {"p": {"hold": {"by": "user:a", "since": "2026-11-21T10:00:00Z", "reason": "r", "automatic": false, "scope": "all"}, "quarantine": []}}}"#;
        std::fs::write(&path, text).unwrap();
        let store = FileStore::new(&path);
        for err in [
            store.load("p").unwrap_err(),
            store.update("p", &mut |_| {}).unwrap_err(),
        ] {
            assert!(matches!(err, StoreError::Version { .. }), "{err}");
            assert!(!err.is_retryable());
            assert_eq!(err.metric_label(), "version");
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!(
                    "state file {}: fields this version of autobump does not know (",
                    path.display()
                )),
                "{msg}"
            );
            for field in ["rollout", "policies.p.hold.scope", "policies.p.quarantine"] {
                assert!(msg.contains(field), "{field} in {msg}");
            }
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "never overwritten"
        );
    }

    #[test]
    fn a_state_path_that_is_not_a_regular_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("s.json");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // Opened without blocking (nobody writes to the FIFO), then refused.
        let err = FileStore::new(&fifo).load("p").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "state file {} is not valid: not a regular file",
                fifo.display()
            )
        );
        std::fs::write(dir.path().join("bin.json"), b"{\"version\": 1, \xff}").unwrap();
        let err = FileStore::new(dir.path().join("bin.json"))
            .load("p")
            .unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Random bytes and random edits of a real state file never panic the
        /// reader: each is a state or an error naming the file.
        #[test]
        fn random_state_files_never_panic_the_reader(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024),
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..8),
        ) {
            let path = Path::new("state.json");
            if let Err(e) = parse_state(path, &String::from_utf8_lossy(&bytes)) {
                proptest::prop_assert!(e.to_string().contains("state.json"));
            }
            let mut real = StateFile { version: 1, policies: BTreeMap::new() };
            let mut state = PolicyState { hold: Some(hold()), ..PolicyState::default() };
            state.record(at("2026-11-21T10:00:00Z"), Reason::Held, "held by alice");
            real.policies.insert("p".into(), state);
            let mut text = serde_json::to_vec(&real).unwrap();
            for (at, byte) in edits {
                let at = at % text.len();
                text[at] = byte;
            }
            if let Err(e) = parse_state(path, &String::from_utf8_lossy(&text)) {
                proptest::prop_assert!(e.to_string().contains("state.json"));
            }
        }
    }

    #[test]
    fn concurrent_updates_from_threads_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let path = path.clone();
                scope.spawn(move || {
                    let store = FileStore::new(path);
                    for i in 0..10 {
                        store
                            .update("p", &mut |s| {
                                s.see_comment(t * 100 + i);
                            })
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(
            FileStore::new(&path).load("p").unwrap().seen_comments.len(),
            40
        );
    }

    #[test]
    fn history_and_comment_memory_are_bounded() {
        let mut s = PolicyState::default();
        for i in 0..(HISTORY_LIMIT + 5) {
            s.record(at("2026-11-21T10:00:00Z"), Reason::Merged, format!("{i}"));
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history[0].message, "5");
        assert!(s.see_comment(1));
        assert!(!s.see_comment(1));
    }

    #[test]
    fn memory_store_behaves_like_the_file_store() {
        let store = MemoryStore::default();
        store.update("p", &mut |s| s.hold = Some(hold())).unwrap();
        assert_eq!(store.load("p").unwrap().hold, Some(hold()));
        assert_eq!(store.load("q").unwrap(), PolicyState::default());
    }
}
