//! Durable per-policy state: holds, versions, history, bad versions (does I/O).
//!
//! In standalone mode the state lives in one JSON file; in-cluster it will live in the
//! custom resources' status. Everything a restart must not forget goes here and
//! nowhere else (convention 3): the in-memory state of a reconcile is always rebuilt
//! from the store and the world.
//!
//! [`FileStore`] writes atomically (temporary file, fsync, rename, fsync of the
//! directory) under an advisory lock, so a crash mid-write leaves the previous state,
//! and the CLI (`autobump hold`) and a running controller can share the file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::v1alpha1::{HistoryEntry, Hold, Intent, IntentKind, Release, RollbackRequest};

/// How many history entries a policy keeps (oldest dropped first).
pub const HISTORY_LIMIT: usize = 200;

/// The version of the state file format this build writes.
pub const FORMAT_VERSION: u32 = 1;

/// An image version recorded as bad (rolled back from); never proposed again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BadVersion {
    /// The canonical repository.
    pub image: String,
    /// The tag.
    pub tag: String,
}

/// What autobump remembers about one policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyState {
    /// The hold in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// The versions deployed now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Release>,
    /// The last versions that baked without alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_good: Option<Release>,
    /// The bake of the deployed version, between reconciles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<crate::core::rollout::BakeProgress>,
    /// When the last bump was opened or pushed (for `minInterval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_bump: Option<DateTime<Utc>>,
    /// Versions rolled back from.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub bad_versions: BTreeSet<BadVersion>,
    /// Comment ids already acted on (webhook and polling de-duplication), bounded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen_comments: Vec<u64>,
    /// The last history entry (its `seq`) notifications went out for; `None` until
    /// the first delivery round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_seq: Option<u64>,
    /// Recent decisions, newest last, at most [`HISTORY_LIMIT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Writes under way whose history entries wait for their outcome, at most one of
    /// each kind (see [`Intent`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intents: Vec<Intent>,
    /// A rollback a person asked for (`autobump rollback`), until a reconcile acts on
    /// it: it is removed in the same update that places the hold and records the bad
    /// versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_request: Option<RollbackRequest>,
}

impl PolicyState {
    /// Appends a history entry, dropping the oldest beyond [`HISTORY_LIMIT`].
    pub fn record(&mut self, at: DateTime<Utc>, reason: &str, message: impl Into<String>) {
        let seq = self.history.last().map_or(1, |e| e.seq + 1);
        self.history.push(HistoryEntry {
            seq,
            at,
            reason: reason.to_owned(),
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
            self.record(intent.since, reason, message.unwrap_or(intent.message));
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
}

impl StoreError {
    /// Whether trying again may help (I/O may be transient; a corrupt file is not).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. })
    }

    /// The variant name, for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Corrupt { .. } => "corrupt",
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
}

/// State in one JSON file.
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
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(StateFile {
                    version: FORMAT_VERSION,
                    policies: BTreeMap::new(),
                });
            }
            Err(e) => return Err(self.io(e)),
        };
        let file: StateFile = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        if file.version > FORMAT_VERSION {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                why: format!(
                    "written by a newer autobump (format {}, this build reads up to {FORMAT_VERSION}); refusing to overwrite it",
                    file.version
                ),
            });
        }
        Ok(file)
    }

    fn write(&self, file: &StateFile) -> Result<(), StoreError> {
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let body = serde_json::to_vec_pretty(file).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        let mut out = File::create(&tmp).map_err(|e| self.io(e))?;
        out.write_all(&body)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.sync_all())
            .map_err(|e| self.io(e))?;
        drop(out);
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        // Make the rename itself durable.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))
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

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn hold() -> Hold {
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
                Some("Merged"),
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
        s.record(at("2026-11-21T10:06:00Z"), "Deployed", "x");
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
                s.record(at("2026-11-21T10:00:00Z"), "Held", "held by alice");
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
            s.record(at("2026-11-21T10:00:00Z"), "Bumped", format!("{i}"));
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
