//! The standalone state store: one SQLite database (does I/O).
//!
//! Tables (schema version in `PRAGMA user_version`, brought up to date by
//! [`MIGRATIONS`] when opened):
//! * `policy`: one row per policy, its [`PolicyState`] without the history as JSON,
//!   and the `seq` of its newest history entry;
//! * `history`: the append-only audit trail, one row per entry, every entry ever
//!   recorded unless `--history-retention` pruned it ([`SqliteStore::prune_history`]);
//! * `lease`: at most one row, the `autobump run` that owns the database
//!   ([`SqliteStore::acquire_lease`]);
//! * `meta`: where a JSON state file was imported from.
//!
//! Reading or updating one policy reads its row and its recent history only, so it
//! costs the same with 10 or 10,000 policies. What [`PolicyState::history`] holds
//! when read from here is the *recent* history: the last [`RECENT_HISTORY`] entries,
//! and every entry notifications have not been sent for (at most
//! [`super::HISTORY_LIMIT`]) — what the reconcile, the notifications, the metrics and
//! `status` need. The whole trail is read with [`Store::history`] (`autobump history`);
//! [`Store::latest_all`] (the dashboard) reads each row without its history, and
//! the newest entry of a few reasons by index.
//!
//! Every update is one `BEGIN IMMEDIATE` transaction: writers (the running
//! controller, `autobump hold` from a shell) queue on the database's write lock
//! (waiting up to [`BUSY_TIMEOUT`]) and each reads the state the previous one
//! committed, so no update is lost. The journal is a write-ahead log with
//! `synchronous = FULL`: a committed update survives a crash of the process and of
//! the machine, and a crash mid-update leaves the state before it (the intents in the
//! state make the effects in flight safe to resume, as before).
//!
//! An update whose closure changes nothing writes nothing (no fsync on an idle
//! reconcile). History entries the closure appends (`seq` above the newest stored)
//! are inserted; entries it drops from the in-memory list stay in the table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use super::{HISTORY_LIMIT, Latest, PolicyState, Store, StoreError};
use crate::policy::v1alpha1::{HistoryEntry, Reason};

/// How many of the newest history entries a read of a policy's state carries at
/// least (plus every entry not yet notified, up to [`HISTORY_LIMIT`]).
pub const RECENT_HISTORY: usize = 50;

/// The most memory SQLite's page cache of one connection takes, in KiB (SQLite's
/// default is 2,000). A reconcile reads one policy's row and its recent history, a
/// few pages, and the operating system caches the file anyway: at 100 policies
/// SQLite's default cache was most of the process's heap (2 MiB of pages read once
/// at start), and a larger cache buys nothing measurable at 10,000 (README,
/// "Performance").
pub const PAGE_CACHE_KIB: u32 = 256;

/// How long a writer waits for another's transaction before failing (retryably).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The extension of the database file (`--state` names it; another extension names
/// an old JSON state file, imported into the database next to it).
pub const DB_EXTENSION: &str = "db";

/// The schema migrations: entry `i` brings a database at version `i` to `i + 1`.
/// Append only; never edit one that has shipped.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE policy (
         name TEXT PRIMARY KEY NOT NULL,
         state TEXT NOT NULL,
         last_seq INTEGER NOT NULL DEFAULT 0
     ) WITHOUT ROWID;
     CREATE TABLE history (
         id INTEGER PRIMARY KEY,
         policy TEXT NOT NULL,
         seq INTEGER NOT NULL,
         at TEXT NOT NULL,
         reason TEXT NOT NULL,
         message TEXT NOT NULL
     );
     CREATE INDEX history_by_policy ON history (policy);
     CREATE INDEX history_by_time ON history (at);
     CREATE TABLE lease (
         id INTEGER PRIMARY KEY CHECK (id = 1),
         pid INTEGER NOT NULL,
         host TEXT NOT NULL,
         started TEXT NOT NULL
     );
     CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;",
    // 2: the newest entry of a reason per policy in one index lookup (the dashboard's
    // last rollback and last bump), however long the history.
    "CREATE INDEX history_by_policy_reason ON history (policy, reason);",
];

/// The first bytes of every SQLite database file.
const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

/// Where the state of `--state PATH` lives: the database, and the old JSON state
/// file that is imported into it on first open, if there is one.
///
/// * `PATH` is a SQLite database, or ends in `.db`: it is the database; a JSON state
///   file next to it with the same stem (`autobump-state.json` for
///   `autobump-state.db`) is imported.
/// * Anything else (`state.json`) names an old JSON state file: the database is the
///   same path with `.db` (`state.db`), and the file is imported if it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    /// The database.
    pub db: PathBuf,
    /// The JSON state file imported on first open (when it exists).
    pub json: PathBuf,
}

impl StatePaths {
    /// The paths `--state path` stands for.
    #[must_use]
    pub fn of(path: &Path) -> Self {
        let is_db = path.extension().is_some_and(|e| e == DB_EXTENSION) || is_sqlite(path);
        if is_db {
            Self {
                db: path.to_path_buf(),
                json: path.with_extension("json"),
            }
        } else {
            Self {
                db: path.with_extension(DB_EXTENSION),
                json: path.to_path_buf(),
            }
        }
    }
}

/// Whether `path` is a file that starts like a SQLite database.
fn is_sqlite(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == SQLITE_HEADER)
}

/// State in a SQLite database (see the module docs). Cheap to clone: clones share
/// one connection.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// `--state` as given (what a deferred store opens).
    given: PathBuf,
    /// `None` until first used, for a store made with [`SqliteStore::deferred`].
    conn: Mutex<Option<Connection>>,
}

/// The connection, opened.
struct Conn<'a>(std::sync::MutexGuard<'a, Option<Connection>>);

impl std::ops::Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.0.as_ref().expect("opened by SqliteStore::conn")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.0.as_mut().expect("opened by SqliteStore::conn")
    }
}

/// The `autobump run` holding a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// Its process id.
    pub pid: u32,
    /// The host it runs on.
    pub host: String,
    /// When it started.
    pub started: String,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {}, since {}",
            self.pid, self.host, self.started
        )
    }
}

/// Ownership of a database by one `autobump run` (see [`SqliteStore::acquire_lease`]);
/// released when dropped.
#[derive(Debug)]
pub struct Lease {
    store: SqliteStore,
    holder: LeaseHolder,
}

impl Lease {
    /// Who holds it (this process).
    #[must_use]
    pub fn holder(&self) -> &LeaseHolder {
        &self.holder
    }

    /// The store the lease is on.
    #[must_use]
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let released = self.store.with_conn(|conn| {
            conn.execute(
                "DELETE FROM lease WHERE pid = ?1 AND host = ?2",
                params![self.holder.pid, self.holder.host],
            )
        });
        if let Err(e) = released {
            tracing::warn!(error = %e, "releasing the state database lease; the next run takes it over (same host)");
        }
    }
}

impl SqliteStore {
    /// Opens the state of `--state path` (see [`StatePaths`]): creates the database
    /// if needed, brings its schema up to date, and imports an old JSON state file
    /// found there (once, in one transaction; the file is then renamed
    /// `NAME.imported`). A file that is not a state file autobump can read, of
    /// either kind, is an error naming it, and nothing is written.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let paths = StatePaths::of(path);
        // The JSON file is read (and refused if broken) before the database is created.
        let legacy = match std::fs::symlink_metadata(&paths.json) {
            Ok(_) => Some(super::FileStore::new(&paths.json).read()?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(StoreError::Io {
                    path: paths.json,
                    source,
                });
            }
        };
        let store = Self::open_db(&paths.db)?;
        if let Some(file) = legacy {
            store.import(&paths.json, &file.policies)?;
        }
        Ok(store)
    }

    /// Opens (creating) the database at `db` and migrates it; imports nothing.
    pub fn open_db(db: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: db.to_path_buf(),
                source,
            })?;
        }
        if let Ok(meta) = std::fs::metadata(db)
            && !meta.is_file()
        {
            return Err(StoreError::Corrupt {
                path: db.to_path_buf(),
                why: "not a regular file".into(),
            });
        }
        let err = |e| db_error(db, e);
        let conn = Connection::open(db).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // The first statement reads the header: a file that is not a database fails here.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                path: db.to_path_buf(),
                why: format!("cannot use a write-ahead log (journal mode stays {mode})"),
            });
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous = FULL; PRAGMA cache_size = -{PAGE_CACHE_KIB};"
        ))
        .map_err(err)?;
        let store = Self {
            inner: Arc::new(Inner {
                path: db.to_path_buf(),
                given: db.to_path_buf(),
                conn: Mutex::new(Some(conn)),
            }),
        };
        store.migrate()?;
        Ok(store)
    }

    /// A store on the state of `--state path` that is opened (as by [`Self::open`])
    /// when first used: nothing is created or imported for a driver that never
    /// reads its state (`run --kubernetes`). [`Self::path`] is the database's.
    #[must_use]
    pub fn deferred(path: &Path) -> Self {
        Self {
            inner: Arc::new(Inner {
                path: StatePaths::of(path).db,
                given: path.to_path_buf(),
                conn: Mutex::new(None),
            }),
        }
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The connection, opened (and the database imported and migrated) if it is not yet.
    fn conn(&self) -> Result<Conn<'_>, StoreError> {
        let mut guard = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            let opened = Self::open(&self.inner.given)?;
            let inner = Arc::try_unwrap(opened.inner).map_err(|_| StoreError::Corrupt {
                path: self.inner.path.clone(),
                why: "opened twice".into(),
            })?;
            *guard = inner
                .conn
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Ok(Conn(guard))
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        db_error(&self.inner.path, e)
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        f(&mut conn).map_err(|e| self.err(e))
    }

    /// Runs `f` in one read transaction (one snapshot), begun and ended with cached
    /// statements: rusqlite's `transaction()` parses `BEGIN` and `ROLLBACK` anew each
    /// time, a tenth of an idle reconcile (two state reads) at 10,000 policies.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.conn()?;
        conn.prepare_cached("BEGIN")
            .and_then(|mut s| s.execute([]))
            .map_err(|e| self.err(e))?;
        let value = f(&conn);
        // Nothing was written: ending the transaction either way loses nothing.
        let ended = conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]));
        if let Err(e) = ended {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            return Err(self.err(e));
        }
        value
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction (committed when `f` returns
    /// `Ok(true)`, rolled back otherwise).
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let (value, commit) = f(&tx)?;
        if commit {
            tx.commit().map_err(|e| self.err(e))?;
        }
        Ok(value)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let known = MIGRATIONS.len();
        self.write(|tx| {
            let version: usize = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            if version > known {
                return Err(StoreError::Version {
                    path: self.inner.path.clone(),
                    why: format!(
                        "written by a newer autobump (schema {version}, this build knows up to {known}); refusing to use it"
                    ),
                });
            }
            if version == known {
                return Ok(((), false));
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
                tx.execute_batch(sql).map_err(|e| self.err(e))?;
                tx.pragma_update(None, "user_version", i + 1)
                    .map_err(|e| self.err(e))?;
            }
            if version > 0 {
                tracing::info!(db = %self.inner.path.display(), from = version, to = known, "state database schema migrated");
            }
            Ok(((), true))
        })
    }

    /// Imports the policies of the JSON state file `json` in one transaction, then
    /// renames the file `NAME.imported`. Done once: a database that recorded the
    /// import only finishes the rename (a crash came between the two); a database
    /// that already holds other state refuses (nothing is mixed or overwritten).
    fn import(
        &self,
        json: &Path,
        policies: &BTreeMap<String, PolicyState>,
    ) -> Result<(), StoreError> {
        let source = std::fs::canonicalize(json)
            .unwrap_or_else(|_| json.to_path_buf())
            .display()
            .to_string();
        let count = policies.len();
        let imported = self.write(|tx| {
            let done: Option<String> = tx
                .query_row(
                    "SELECT value FROM meta WHERE key = 'imported_from'",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            if done.as_deref() == Some(source.as_str()) {
                return Ok((false, false));
            }
            let held: i64 = tx
                .query_row("SELECT count(*) FROM policy", [], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            if held > 0 || done.is_some() {
                return Err(StoreError::Corrupt {
                    path: json.to_path_buf(),
                    why: format!(
                        "not imported: the state database {} already holds state{}. Move one of the two away (the database is the newer)",
                        self.inner.path.display(),
                        done.map(|d| format!(" (imported from {d})")).unwrap_or_default()
                    ),
                });
            }
            for (name, state) in policies {
                // Entries recorded before sequence numbers existed (seq 0) keep their
                // order by position; their numbers stay 0.
                write_state(tx, name, state, 0).map_err(|e| self.err(e))?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('imported_from', ?1)",
                [&source],
            )
            .map_err(|e| self.err(e))?;
            Ok((true, true))
        })?;
        let renamed = imported_name(json);
        std::fs::rename(json, &renamed).map_err(|source| StoreError::Io {
            path: json.to_path_buf(),
            source,
        })?;
        if imported {
            tracing::info!(
                from = %json.display(),
                into = %self.inner.path.display(),
                policies = count,
                kept_as = %renamed.display(),
                "imported the JSON state file into the state database"
            );
        } else {
            tracing::info!(from = %json.display(), kept_as = %renamed.display(), "the JSON state file was already imported; renamed it");
        }
        Ok(())
    }

    /// Makes this process the one `autobump run` on the database: records its pid,
    /// host and start in the `lease` row. Refused (naming the holder) while another
    /// process holds it; a lease left by a process that is gone from this host (or by
    /// an earlier process with this pid, as in a restarted container) is taken over.
    pub fn acquire_lease(&self, now: DateTime<Utc>) -> Result<Lease, StoreError> {
        let me = LeaseHolder {
            pid: std::process::id(),
            host: host_name(),
            started: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        };
        self.write(|tx| {
            let current = tx
                .query_row("SELECT pid, host, started FROM lease", [], |r| {
                    Ok(LeaseHolder {
                        pid: r.get(0)?,
                        host: r.get(1)?,
                        started: r.get(2)?,
                    })
                })
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some(holder) = current {
                let here = holder.host == me.host;
                if !here || (holder.pid != me.pid && process_alive(holder.pid)) {
                    return Err(StoreError::Leased {
                        path: self.inner.path.clone(),
                        holder,
                    });
                }
                tracing::warn!(
                    db = %self.inner.path.display(),
                    previous = %holder,
                    "taking over the state database lease of a process that is gone"
                );
            }
            tx.execute(
                "INSERT OR REPLACE INTO lease (id, pid, host, started) VALUES (1, ?1, ?2, ?3)",
                params![me.pid, me.host, me.started],
            )
            .map_err(|e| self.err(e))?;
            Ok(((), true))
        })?;
        Ok(Lease {
            store: self.clone(),
            holder: me,
        })
    }

    /// Deletes the history entries older than `now - retention`, except each
    /// policy's newest (the sequence goes on from it). Returns how many went.
    pub fn prune_history(
        &self,
        retention: chrono::TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let before = timestamp(now - retention);
        self.write(|tx| {
            let n = tx
                .execute(
                    "DELETE FROM history WHERE at < ?1
                     AND seq < (SELECT last_seq FROM policy WHERE name = history.policy)",
                    [&before],
                )
                .map_err(|e| self.err(e))?;
            Ok((n, n > 0))
        })
    }

    fn read_state(&self, conn: &Connection, policy: &str) -> Result<PolicyState, StoreError> {
        let row = conn
            .prepare_cached("SELECT state, last_seq FROM policy WHERE name = ?1")
            .and_then(|mut s| {
                s.query_row([policy], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
            })
            .map_err(|e| self.err(e))?;
        let Some((text, last_seq)) = row else {
            return Ok(PolicyState::default());
        };
        self.state_from_row(conn, policy, &text, last_seq)
    }

    fn state_from_row(
        &self,
        conn: &Connection,
        policy: &str,
        text: &str,
        last_seq: i64,
    ) -> Result<PolicyState, StoreError> {
        let mut state: PolicyState = super::parse_policy_state(&self.inner.path, policy, text)?;
        let last = u64::try_from(last_seq).unwrap_or(0);
        let unsent = state.notified_seq.map_or(0, |n| {
            usize::try_from(last.saturating_sub(n)).unwrap_or(usize::MAX)
        });
        let limit = unsent.clamp(RECENT_HISTORY, HISTORY_LIMIT);
        state.history = self.recent_history(conn, policy, limit)?;
        Ok(state)
    }

    fn read_all(&self, tx: &Connection) -> Result<BTreeMap<String, PolicyState>, StoreError> {
        let rows = tx
            .prepare_cached("SELECT name, state, last_seq FROM policy ORDER BY name")
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(name, text, last)| {
                let state = self.state_from_row(tx, &name, &text, last)?;
                Ok((name, state))
            })
            .collect()
    }

    fn read_latest(
        &self,
        tx: &Connection,
        reasons: &[Reason],
    ) -> Result<BTreeMap<String, Latest>, StoreError> {
        let rows = tx
            .prepare_cached("SELECT name, state FROM policy ORDER BY name")
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.err(e))?;
        let mut newest = tx
            .prepare_cached(
                "SELECT seq, at, reason, message FROM history WHERE policy = ?1 AND reason = ?2
                 ORDER BY id DESC LIMIT 1",
            )
            .map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for (name, text) in rows {
            let state: PolicyState = super::parse_policy_state(&self.inner.path, &name, &text)?;
            let mut entries = Vec::new();
            for reason in reasons {
                if let Some(e) = newest
                    .query_row(params![name, reason.as_str()], entry)
                    .optional()
                    .map_err(|e| self.err(e))?
                {
                    entries.push(e);
                }
            }
            entries.sort_by_key(|e| e.seq);
            out.insert(
                name,
                Latest {
                    state,
                    newest: entries,
                },
            );
        }
        Ok(out)
    }

    fn recent_history(
        &self,
        conn: &Connection,
        policy: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, at, reason, message FROM history WHERE policy = ?1
                 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![policy, i64::try_from(limit).unwrap_or(i64::MAX)],
                entry,
            )
            .map_err(|e| self.err(e))?;
        let mut entries = rows
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        entries.reverse();
        Ok(entries)
    }
}

/// Writes `state` as `name`'s row and appends its history entries with a `seq`
/// above `after` (all of them when importing).
fn write_state(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    state: &PolicyState,
    after: u64,
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO history (policy, seq, at, reason, message) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut last = after;
    for e in state
        .history
        .iter()
        .filter(|e| e.seq > after || (after == 0 && e.seq == 0))
    {
        insert.execute(params![
            name,
            i64::try_from(e.seq).unwrap_or(i64::MAX),
            timestamp(e.at),
            e.reason.as_str(),
            e.message
        ])?;
        last = last.max(e.seq);
    }
    tx.prepare_cached(
        "INSERT INTO policy (name, state, last_seq) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET state = excluded.state, last_seq = excluded.last_seq",
    )?
    .execute(params![
        name,
        state_text(state),
        i64::try_from(last).unwrap_or(i64::MAX)
    ])?;
    Ok(())
}

/// The row text of a state: its JSON without the history (which has its own table).
fn state_text(state: &PolicyState) -> String {
    let bare = PolicyState {
        history: Vec::new(),
        ..state.clone()
    };
    // A struct of strings, numbers and maps with string keys always serializes.
    serde_json::to_string(&bare).unwrap_or_default()
}

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryEntry> {
    // The time and the reason are read in place (no copy of their text).
    let text = |i: usize| {
        r.get_ref(i)?.as_str().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    let at = DateTime::parse_from_rfc3339(text(1)?)
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?
        .with_timezone(&Utc);
    Ok(HistoryEntry {
        seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        at,
        reason: text(2)?.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
        })?,
        message: r.get(3)?,
    })
}

/// A time as stored: RFC 3339 in UTC with nine fractional digits, so text order is
/// time order (`--since` and retention compare text).
#[must_use]
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// `NAME.imported`, or `NAME.imported.N` when that exists already.
fn imported_name(json: &Path) -> PathBuf {
    let mut name = json.as_os_str().to_owned();
    name.push(".imported");
    let first = PathBuf::from(&name);
    if std::fs::symlink_metadata(&first).is_err() {
        return first;
    }
    // Bounded: a directory with a thousand earlier imports is not worth a search.
    (1..1000)
        .map(|n| {
            let mut other = name.clone();
            other.push(format!(".{n}"));
            PathBuf::from(other)
        })
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or(first)
}

fn db_error(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let code = e.sqlite_error_code();
    match code {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_path_buf(),
            why: format!("not a state database autobump can read ({e})"),
        },
        _ => StoreError::Database {
            path: path.to_path_buf(),
            retryable: matches!(
                code,
                Some(
                    ErrorCode::DatabaseBusy
                        | ErrorCode::DatabaseLocked
                        | ErrorCode::SystemIoFailure
                        | ErrorCode::DiskFull
                )
            ),
            source: e,
        },
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, then `$HOSTNAME`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether a process with this id runs on this host (Linux: `/proc/PID` exists).
fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

impl Store for SqliteStore {
    fn load(&self, policy: &str) -> Result<PolicyState, StoreError> {
        // One read transaction: the row and its history from one snapshot.
        self.read(|conn| self.read_state(conn, policy))
    }

    fn load_all(&self) -> Result<BTreeMap<String, PolicyState>, StoreError> {
        self.read(|tx| self.read_all(tx))
    }

    fn update(
        &self,
        policy: &str,
        f: &mut dyn FnMut(&mut PolicyState),
    ) -> Result<PolicyState, StoreError> {
        self.write(|tx| {
            let mut state = self.read_state(tx, policy)?;
            let before_text = state_text(&state);
            let existed = tx
                .prepare_cached("SELECT 1 FROM policy WHERE name = ?1")
                .and_then(|mut s| s.exists([policy]))
                .map_err(|e| self.err(e))?;
            let last = state.history.last().map_or(0, |e| e.seq);
            f(&mut state);
            let appended = state.history.iter().any(|e| e.seq > last);
            if existed && !appended && state_text(&state) == before_text {
                return Ok((state, false));
            }
            write_update(tx, policy, &state, last).map_err(|e| self.err(e))?;
            Ok((state, true))
        })
    }

    fn history(
        &self,
        policy: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let since = since.map_or_else(String::new, timestamp);
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, at, reason, message FROM history WHERE policy = ?1 AND at >= ?2
                 ORDER BY id",
            )?;
            stmt.query_map(params![policy, since], entry)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
    }

    fn latest_all(&self, reasons: &[Reason]) -> Result<BTreeMap<String, Latest>, StoreError> {
        // One read transaction: every row and its entries from one snapshot.
        self.read(|tx| self.read_latest(tx, reasons))
    }

    fn policies(&self) -> Result<Vec<String>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached("SELECT name FROM policy ORDER BY name")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
    }
}

/// [`write_state`] for an update: entries above `last` are new.
fn write_update(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    state: &PolicyState,
    last: u64,
) -> rusqlite::Result<()> {
    if last == 0 {
        // A policy with no entry yet (or only seq-0 imported ones): the new entries
        // start at 1, and seq-0 entries already stored must not be inserted again.
        let mut only_new = state.clone();
        only_new.history.retain(|e| e.seq > 0);
        return write_state(tx, name, &only_new, 0);
    }
    write_state(tx, name, state, last)
}

/// What `autobump run` does first: opens the state of `--state path` (importing an
/// old JSON state file), takes the lease (see [`SqliteStore::acquire_lease`]) and
/// reads every policy's state once, so a state this build cannot read stops the
/// command before anything acts.
pub fn open_for_run(path: &Path, now: DateTime<Utc>) -> Result<Lease, StoreError> {
    let store = SqliteStore::open(path)?;
    let lease = store.acquire_lease(now)?;
    store.load_all()?;
    Ok(lease)
}

/// Every policy's state for `autobump status`: empty, and nothing created, when
/// neither the database nor a JSON state file to import exists.
pub fn load_existing(path: &Path) -> Result<BTreeMap<String, PolicyState>, StoreError> {
    let paths = StatePaths::of(path);
    let exists = |p: &Path| match std::fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    };
    if !exists(&paths.db)? && !exists(&paths.json)? {
        return Ok(BTreeMap::new());
    }
    SqliteStore::open(path)?.load_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::v1alpha1::{Intent, IntentKind, Reason, Release};
    use crate::store::tests::{at, hold};
    use crate::store::{BadVersion, FileStore};

    fn release(tag: &str, since: &str) -> Release {
        Release {
            summary: tag.into(),
            images: vec![crate::policy::v1alpha1::ImageVersion {
                image: "gcr.io/k8s-prow/hook".into(),
                tag: tag.into(),
                digest: None,
            }],
            since: at(since),
            commit: Some("0123abc".into()),
        }
    }

    /// A state with every kind of field set, as an old JSON state file holds it.
    fn full_state() -> PolicyState {
        let mut s = PolicyState {
            hold: Some(hold()),
            current: Some(release("v20240105-bbbbbbb", "2026-11-21T10:30:00Z")),
            last_known_good: Some(release("v20240101-aaaaaaa", "2026-11-21T09:00:00Z")),
            last_bump: Some(at("2026-11-20T09:00:00Z")),
            notified_seq: Some(2),
            ..PolicyState::default()
        };
        s.bad_versions.insert(BadVersion {
            image: "gcr.io/k8s-prow/hook".into(),
            tag: "v20240103-ccccccc".into(),
        });
        s.see_comment(7);
        s.intend(Intent {
            pull_request: Some(12),
            ..Intent::new(
                IntentKind::Merge,
                Some(Reason::Merged),
                "PR #12 merged".into(),
                at("2026-11-21T11:00:00Z"),
            )
        });
        s.record(
            at("2026-11-21T09:00:00Z"),
            Reason::Deployed,
            "v20240101-aaaaaaa",
        );
        s.record(at("2026-11-21T10:00:00Z"), Reason::Held, "held by alice");
        s.record(
            at("2026-11-21T10:30:00.123456789Z"),
            Reason::BumpPushed,
            "v20240105-bbbbbbb",
        );
        s
    }

    #[test]
    fn state_round_trips_and_the_history_is_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.load("prow").unwrap(), PolicyState::default());
        let want = full_state();
        store.update("prow", &mut |s| *s = want.clone()).unwrap();
        let again = SqliteStore::open(&path).unwrap();
        assert_eq!(again.load("prow").unwrap(), want);
        assert_eq!(again.load_all().unwrap()["prow"], want);

        // Far past the in-memory limit: every entry stays in the table, a read
        // carries the recent ones, the sequence goes on.
        let total = HISTORY_LIMIT + 40;
        for i in 0..(total - 3) {
            again
                .update("prow", &mut |s| {
                    s.record(at("2026-11-22T10:00:00Z"), Reason::Merged, format!("{i}"));
                    // Everything is notified: only the recent entries are read.
                    s.notified_seq = s.history.last().map(|e| e.seq);
                })
                .unwrap();
        }
        let all = again.history("prow", None).unwrap();
        assert_eq!(all.len(), total);
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=total as u64).collect::<Vec<_>>()
        );
        assert_eq!(
            all[2].at,
            at("2026-11-21T10:30:00.123456789Z"),
            "nanoseconds kept"
        );
        let loaded = again.load("prow").unwrap();
        assert_eq!(loaded.history.len(), RECENT_HISTORY);
        assert_eq!(loaded.history.last().unwrap().seq, total as u64);
        // Unsent entries are all read (up to the in-memory limit).
        again
            .update("prow", &mut |s| s.notified_seq = Some(100))
            .unwrap();
        let loaded = again.load("prow").unwrap();
        assert_eq!(loaded.history.first().unwrap().seq, 101);
        assert_eq!(
            again
                .history("prow", Some(at("2026-11-21T10:00:00Z")))
                .unwrap()
                .first()
                .unwrap()
                .reason,
            "Held",
            "--since is inclusive"
        );
        assert_eq!(again.policies().unwrap(), ["prow"]);
    }

    #[test]
    fn an_update_that_changes_nothing_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        store.update("p", &mut |s| s.hold = Some(hold())).unwrap();
        let changes = || store.with_conn(|c| Ok(c.total_changes())).unwrap();
        let before = changes();
        store.update("p", &mut |_| {}).unwrap();
        assert_eq!(changes(), before);
        store.update("p", &mut |s| s.hold = None).unwrap();
        assert!(changes() > before);
        // A policy's first update writes its row even when the state is the default.
        store.update("q", &mut |_| {}).unwrap();
        assert_eq!(store.policies().unwrap(), ["p", "q"]);
    }

    #[test]
    fn a_json_state_file_is_imported_once_and_kept_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("state.json");
        let mut old = full_state();
        // Written before sequence numbers existed.
        old.history.insert(
            0,
            HistoryEntry {
                seq: 0,
                at: at("2026-11-01T00:00:00Z"),
                reason: Reason::Deployed,
                message: "first".into(),
            },
        );
        FileStore::new(&json)
            .update("prow", &mut |s| *s = old.clone())
            .unwrap();
        FileStore::new(&json)
            .update("other", &mut |s| s.hold = Some(hold()))
            .unwrap();

        let store = SqliteStore::open(&json).unwrap();
        assert_eq!(store.path(), dir.path().join("state.db"));
        assert!(!json.exists());
        assert!(dir.path().join("state.json.imported").is_file());
        assert_eq!(store.load("prow").unwrap(), old);
        assert_eq!(store.load("other").unwrap().hold, Some(hold()));
        // The next record goes on from the imported sequence.
        let s = store
            .update("prow", &mut |s| {
                s.record(at("2026-11-22T00:00:00Z"), Reason::Unheld, "x");
            })
            .unwrap();
        assert_eq!(s.history.last().unwrap().seq, 4);
        assert_eq!(store.history("prow", None).unwrap().len(), 5);

        // Opened again (by the database's path, or by the JSON path): nothing more.
        drop(store);
        for path in [dir.path().join("state.db"), json.clone()] {
            assert_eq!(
                SqliteStore::open(&path)
                    .unwrap()
                    .history("prow", None)
                    .unwrap()
                    .len(),
                5
            );
        }

        // A crash between the commit and the rename: the rename is finished, the
        // state is not imported twice.
        std::fs::copy(dir.path().join("state.json.imported"), &json).unwrap();
        let store = SqliteStore::open(&json).unwrap();
        assert_eq!(store.history("prow", None).unwrap().len(), 5);
        assert!(!json.exists());
        assert!(dir.path().join("state.json.imported.1").is_file());
    }

    #[test]
    fn the_old_default_json_next_to_the_database_is_imported() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("autobump-state.json");
        FileStore::new(&json)
            .update("prow", &mut |s| s.hold = Some(hold()))
            .unwrap();
        let store = SqliteStore::open(&dir.path().join("autobump-state.db")).unwrap();
        assert_eq!(store.load("prow").unwrap().hold, Some(hold()));
        assert!(dir.path().join("autobump-state.json.imported").is_file());
    }

    #[test]
    fn a_json_file_beside_a_database_with_other_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        SqliteStore::open(&db)
            .unwrap()
            .update("p", &mut |s| s.hold = Some(hold()))
            .unwrap();
        let json = dir.path().join("s.json");
        FileStore::new(&json)
            .update("q", &mut |s| s.hold = Some(hold()))
            .unwrap();
        let text = std::fs::read_to_string(&json).unwrap();
        let err = SqliteStore::open(&db).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&json.display().to_string()), "{msg}");
        assert!(msg.contains("already holds state"), "{msg}");
        assert_eq!(std::fs::read_to_string(&json).unwrap(), text, "untouched");
    }

    #[test]
    fn corrupt_files_of_either_kind_are_refused_naming_them_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        // A broken JSON state file: refused before any database is created.
        let json = dir.path().join("state.json");
        std::fs::write(&json, "{not json").unwrap();
        let err = SqliteStore::open(&json).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains(&json.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&json).unwrap(), "{not json");
        assert!(!dir.path().join("state.db").exists());

        // A file at the database's path that is not a database.
        let db = dir.path().join("other.db");
        std::fs::write(
            &db,
            "this is not a database, it is a shopping list\n".repeat(100),
        )
        .unwrap();
        let before = std::fs::read(&db).unwrap();
        let err = SqliteStore::open(&db).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("state file {} is not valid", db.display())),
            "{err}"
        );
        assert!(!err.is_retryable());
        assert_eq!(std::fs::read(&db).unwrap(), before, "never overwritten");

        // A row this build cannot read (a newer autobump added a field).
        let db = dir.path().join("rows.db");
        let store = SqliteStore::open(&db).unwrap();
        store.update("p", &mut |s| s.hold = Some(hold())).unwrap();
        store
            .with_conn(|c| {
                c.execute(
                    "UPDATE policy SET state = json_set(state, '$.quarantine', 1)",
                    [],
                )
            })
            .unwrap();
        let err = store.load("p").unwrap_err();
        assert!(matches!(err, StoreError::Version { .. }), "{err}");
        assert!(
            err.to_string().contains("policy p: fields this version"),
            "{err}"
        );
        assert!(store.update("p", &mut |s| s.hold = None).is_err());
    }

    #[test]
    fn a_database_of_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let store = SqliteStore::open(&db).unwrap();
        store
            .with_conn(|c| c.pragma_update(None, "user_version", MIGRATIONS.len() + 1))
            .unwrap();
        drop(store);
        let err = SqliteStore::open(&db).unwrap_err();
        assert!(matches!(err, StoreError::Version { .. }), "{err}");
        assert!(err.to_string().contains("newer autobump"), "{err}");
    }

    #[test]
    fn the_lease_admits_one_run_and_is_taken_over_from_a_dead_process() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let store = SqliteStore::open(&db).unwrap();
        let now = at("2026-12-06T15:00:00Z");
        let set = |pid: u32, host: &str| {
            store
                .with_conn(|c| {
                    c.execute(
                        "INSERT OR REPLACE INTO lease (id, pid, host, started) VALUES (1, ?1, ?2, '2026-12-06T14:00:00Z')",
                        params![pid, host],
                    )
                })
                .unwrap();
        };
        // Held by a live process on this host: refused, naming it.
        let mut other = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        set(other.id(), &host_name());
        let err = store.acquire_lease(now).unwrap_err();
        assert!(matches!(err, StoreError::Leased { .. }), "{err}");
        let msg = err.to_string();
        for part in [
            format!(
                "state database {} is in use by another autobump run",
                db.display()
            ),
            format!("pid {} on host {}", other.id(), host_name()),
            "since 2026-12-06T14:00:00Z".into(),
            "taken over automatically".into(),
        ] {
            assert!(msg.contains(&part), "{part} in {msg}");
        }
        assert!(!err.is_retryable());
        // Held by a process of another host: refused (it cannot be checked).
        set(1, "elsewhere.example");
        assert!(store.acquire_lease(now).is_err());
        // The holder is gone: taken over.
        other.kill().unwrap();
        other.wait().unwrap();
        set(other.id(), &host_name());
        let lease = store.acquire_lease(now).unwrap();
        assert_eq!(lease.holder().pid, std::process::id());
        // A second store on the same file sees it; released when dropped.
        let holder = || {
            SqliteStore::open(&db)
                .unwrap()
                .with_conn(|c| {
                    c.query_row("SELECT pid FROM lease", [], |r| r.get::<_, u32>(0))
                        .optional()
                })
                .unwrap()
        };
        assert_eq!(holder(), Some(std::process::id()));
        drop(lease);
        assert_eq!(holder(), None);
    }

    #[test]
    fn retention_prunes_old_entries_but_each_policys_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        for (day, policy) in [(1, "a"), (2, "a"), (3, "a"), (1, "b"), (2, "b"), (20, "c")] {
            store
                .update(policy, &mut |s| {
                    s.record(
                        at(&format!("2026-11-{day:02}T00:00:00Z")),
                        Reason::Merged,
                        "x",
                    );
                })
                .unwrap();
        }
        let now = at("2026-11-21T00:00:00Z");
        let gone = store
            .prune_history(chrono::TimeDelta::days(18), now)
            .unwrap();
        assert_eq!(gone, 3, "a's first two, b's first");
        let seqs = |p: &str| {
            store
                .history(p, None)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs("a"), [3]);
        assert_eq!(seqs("b"), [2]);
        assert_eq!(seqs("c"), [1]);
        let s = store
            .update("a", &mut |s| s.record(now, Reason::Held, "y"))
            .unwrap();
        assert_eq!(s.history.last().unwrap().seq, 4, "the sequence goes on");
        assert_eq!(
            store
                .prune_history(chrono::TimeDelta::days(18), now)
                .unwrap(),
            0
        );
    }

    #[test]
    fn latest_reads_each_state_bare_and_the_newest_entry_of_each_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        store
            .update("web", &mut |s| {
                s.hold = full_state().hold;
                s.record(
                    at("2026-11-01T00:00:00Z"),
                    Reason::RolledBack,
                    "v2 -> v1 pushed",
                );
                // Far more entries after the rollback than a state read carries.
                for i in 0..(i64::try_from(RECENT_HISTORY).unwrap() + 10) {
                    s.record(
                        at("2026-11-02T00:00:00Z") + chrono::TimeDelta::minutes(i),
                        Reason::Merged,
                        format!("PR #{i} merged"),
                    );
                }
            })
            .unwrap();
        store
            .update("api", &mut |s| {
                s.record(at("2026-11-03T00:00:00Z"), Reason::Held, "held by alice");
            })
            .unwrap();
        let latest = store
            .latest_all(&[Reason::RolledBack, Reason::Merged, Reason::Promoted])
            .unwrap();
        assert_eq!(latest.keys().collect::<Vec<_>>(), ["api", "web"]);
        let web = &latest["web"];
        assert!(web.state.history.is_empty());
        assert_eq!(web.state.hold, full_state().hold);
        let newest: Vec<(Reason, &str)> = web
            .newest
            .iter()
            .map(|e| (e.reason, e.message.as_str()))
            .collect();
        assert_eq!(
            newest,
            [
                (Reason::RolledBack, "v2 -> v1 pushed"),
                (Reason::Merged, "PR #59 merged"),
            ]
        );
        assert!(latest["api"].newest.is_empty(), "Held was not asked for");
        // The default (other stores) answers alike from the history it holds.
        let from_state = Latest::of(
            store.load("web").unwrap(),
            &[Reason::RolledBack, Reason::Merged],
        );
        assert_eq!(
            from_state.newest.len(),
            1,
            "the rollback is older than the recent history"
        );
        assert_eq!(from_state.newest[0].message, "PR #59 merged");
    }

    #[test]
    fn concurrent_writers_on_separate_connections_lose_no_update() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        SqliteStore::open(&path).unwrap();
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let path = path.clone();
                scope.spawn(move || {
                    let store = SqliteStore::open(&path).unwrap();
                    for i in 0..10 {
                        store
                            .update("p", &mut |s| {
                                s.see_comment(t * 100 + i);
                                s.record(
                                    at("2026-11-21T10:00:00Z"),
                                    Reason::Held,
                                    format!("{t}/{i}"),
                                );
                            })
                            .unwrap();
                    }
                });
            }
        });
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.load("p").unwrap().seen_comments.len(), 40);
        let all = store.history("p", None).unwrap();
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=40).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_deferred_store_creates_nothing_until_used() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("state.json");
        FileStore::new(&json)
            .update("p", &mut |s| s.hold = Some(hold()))
            .unwrap();
        let store = SqliteStore::deferred(&json);
        assert_eq!(store.path(), dir.path().join("state.db"));
        assert!(!store.path().exists());
        assert!(json.exists());
        assert_eq!(store.load("p").unwrap().hold, Some(hold()));
        assert!(!json.exists());
    }
}
