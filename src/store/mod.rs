//! The embedded store: one SQLite file holding what must survive a restart — the
//! instances pointsman knows and an audit log of every action. Migrations are numbered,
//! each runs in its own transaction, and every statement in them is idempotent, so a
//! store from any earlier version upgrades, and starting twice on the same file is a
//! no-op. (orchestrator users lost start-ups to "Error 1091: Can't DROP INDEX"; here a
//! migration that meets its own work already done simply passes.)
//!
//! `recovery` holds the failover state: recoveries with their steps, fenced old
//! primaries, downtime, and the global recovery switch; `journal` the steps of a
//! recovery as they run, each written before it starts; `retention` what is deleted
//! when it grows old. An action that changed nothing is audited at most once a minute
//! (`audit_no_op`), so repeating it cannot fill the disk. Writes and reads go through
//! two connections, so neither waits for the other (WAL), and the fenced list is kept
//! in memory between changes.

pub mod journal;
pub mod recovery;
pub mod retention;
pub mod routes;

use crate::topology::time;
use crate::topology::InstanceKey;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// The migrations, in order. Never edit a released one; add a new one.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "instances and audit log",
        "CREATE TABLE IF NOT EXISTS instances (
             host TEXT NOT NULL,
             port INTEGER NOT NULL,
             first_seen TEXT NOT NULL,
             PRIMARY KEY (host, port)
         );
         CREATE TABLE IF NOT EXISTS audit (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             at TEXT NOT NULL,
             actor TEXT NOT NULL,
             action TEXT NOT NULL,
             cluster TEXT,
             instance TEXT,
             message TEXT NOT NULL
         );",
    ),
    (
        "audit lookups by cluster",
        "CREATE INDEX IF NOT EXISTS audit_by_cluster ON audit (cluster, id);",
    ),
    (
        "recoveries, fenced instances, downtime, settings",
        "CREATE TABLE IF NOT EXISTS recoveries (
             id TEXT PRIMARY KEY,
             cluster TEXT NOT NULL,
             kind TEXT NOT NULL,
             problem TEXT NOT NULL,
             failed TEXT NOT NULL,
             successor TEXT,
             trigger TEXT NOT NULL,
             status TEXT NOT NULL,
             started_at TEXT NOT NULL,
             finished_at TEXT,
             steps TEXT NOT NULL DEFAULT '[]',
             acknowledged_at TEXT,
             acknowledged_by TEXT,
             ack_comment TEXT
         );
         CREATE INDEX IF NOT EXISTS recoveries_by_cluster ON recoveries (cluster, started_at);
         CREATE TABLE IF NOT EXISTS fenced (
             host TEXT NOT NULL,
             port INTEGER NOT NULL,
             cluster TEXT NOT NULL,
             recovery_id TEXT,
             fenced_at TEXT NOT NULL,
             PRIMARY KEY (host, port)
         );
         CREATE TABLE IF NOT EXISTS downtime (
             host TEXT NOT NULL,
             port INTEGER NOT NULL,
             until TEXT NOT NULL,
             reason TEXT NOT NULL,
             owner TEXT NOT NULL,
             PRIMARY KEY (host, port)
         );
         CREATE TABLE IF NOT EXISTS settings (
             name TEXT PRIMARY KEY,
             value TEXT NOT NULL
         );",
    ),
    (
        "routing epochs",
        "CREATE TABLE IF NOT EXISTS route_epochs (
             cluster TEXT PRIMARY KEY,
             epoch INTEGER NOT NULL,
             writer TEXT,
             recovery_id TEXT,
             decided_at TEXT NOT NULL
         );",
    ),
    (
        "recovery journal",
        "CREATE TABLE IF NOT EXISTS recovery_journal (
             recovery_id TEXT NOT NULL,
             seq INTEGER NOT NULL,
             step TEXT NOT NULL,
             instance TEXT,
             ok INTEGER,
             detail TEXT NOT NULL DEFAULT '',
             duration_ms INTEGER NOT NULL DEFAULT 0,
             begun_at TEXT NOT NULL,
             PRIMARY KEY (recovery_id, seq)
         );",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: cannot create its directory: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path}: {source} (check store.path and that the file is a pointsman store)")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "store {path}: schema version {found} is newer than this pointsman knows ({known}); \
         run the newer pointsman or point store.path elsewhere"
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(with = "time")]
    pub at: SystemTime,
    /// Who acted: `agent`, `api`, `cli`.
    pub actor: String,
    pub action: String,
    pub cluster: Option<String>,
    pub instance: Option<String>,
    pub message: String,
}

/// What to append to the audit log.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub cluster: Option<String>,
    pub instance: Option<InstanceKey>,
    pub message: String,
}

/// A handle to the store; cheap to clone, safe to share between tasks. Statements are
/// short, so they run under a mutex on the caller's thread.
///
/// Writes go through one connection and reads through another: in WAL mode a reader
/// never waits for a writer and sees only committed work, so a dashboard reading a
/// page of recoveries never holds up the journal of a failover that is running (at
/// 10,002 instances the journal's writes waited up to 8 ms for the API's reads on a
/// single connection). The fenced list, read at every judgement, is kept in memory.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    /// The `fenced` table as last read, until a fence or an unfence changes it (they
    /// write the table only through this store, holding this lock).
    fenced: Arc<Mutex<Option<Vec<recovery::FencedInstance>>>>,
    /// The file's inode when opened: a store deleted or replaced under a running agent
    /// is told by a different one (or none).
    inode: u64,
    /// What `check` found wrong last time, if anything.
    problem: Arc<Mutex<Option<String>>>,
    /// When each kind of no-op (actor, action, cluster, instance) was last audited.
    no_ops_audited: Arc<Mutex<HashMap<String, Instant>>>,
}

/// An action that changed nothing is audited at most this often per actor, action,
/// cluster and instance; the repeats in between are only logged (at debug).
pub const NO_OP_AUDIT_EVERY: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let connect = || -> Result<Connection, StoreError> {
            let conn = Connection::open(path).map_err(sqlite)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(sqlite)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(sqlite)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(sqlite)?;
            Ok(conn)
        };
        let mut writer = connect()?;
        migrate(&mut writer, MIGRATIONS.len()).map_err(|e| match e {
            MigrateError::Sqlite(source) => sqlite(source),
            MigrateError::TooNew(found) => StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                known: MIGRATIONS.len(),
            },
        })?;
        let reader = connect()?;
        let inode = std::fs::metadata(path)
            .map(|meta| std::os::unix::fs::MetadataExt::ino(&meta))
            .unwrap_or_default();
        Ok(Store {
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            fenced: Arc::new(Mutex::new(None)),
            inode,
            problem: Arc::new(Mutex::new(None)),
            no_ops_audited: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Checks that the store is still the file it opened and still takes writes (a tiny
    /// write, as a recovery's first would be); says what is wrong once when it changes,
    /// and keeps it for `problem`. The agent runs this every second.
    pub fn check(&self) -> Option<String> {
        let path = self.path.display();
        let found = match std::fs::metadata(&self.path) {
            Err(_) => Some(format!(
                "store {path} is gone (deleted while the agent runs): what it records from now on — fences, recoveries — is lost at the next restart; restart the agent to create a new one, and until then keep fenced old primaries read_only by hand"
            )),
            Ok(meta) if std::os::unix::fs::MetadataExt::ino(&meta) != self.inode => Some(format!(
                "store {path} was replaced by another file while the agent runs: the agent still writes the one it opened, which the next restart will not find; restart the agent"
            )),
            Ok(_) => self
                .writer()
                .execute(
                    "INSERT OR REPLACE INTO settings (name, value) VALUES ('write_check', ?1)",
                    [time::format(SystemTime::now())],
                )
                .err()
                .map(|error| {
                    format!(
                        "store {path} takes no writes ({error}): recoveries cannot be recorded, so none is started; free space or fix the file"
                    )
                }),
        };
        let mut problem = self
            .problem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *problem != found {
            match &found {
                Some(what) => tracing::error!("{what}"),
                None => tracing::info!(path = %path, "the store is writable again"),
            }
            problem.clone_from(&found);
        }
        found
    }

    /// What the last `check` found wrong with the store, if anything.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The connection every write goes through.
    pub(crate) fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements are
        // atomic), so a poisoned mutex is safe to keep using.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The fenced list as last read. Held while the table is written or read into it,
    /// so a read never puts back what a fence or an unfence just changed.
    pub(crate) fn fenced_cache(&self) -> MutexGuard<'_, Option<Vec<recovery::FencedInstance>>> {
        self.fenced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The connection reads go through: it sees every write that has returned, and
    /// never waits for one that is running.
    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Records an instance so it is polled again after a restart. Returns true when it
    /// was not known before.
    pub fn remember_instance(&self, key: &InstanceKey) -> Result<bool, StoreError> {
        let changed = self
            .writer()
            .execute(
                "INSERT OR IGNORE INTO instances (host, port, first_seen) VALUES (?1, ?2, ?3)",
                params![key.host, key.port, time::format(SystemTime::now())],
            )
            .map_err(|e| self.error(e))?;
        Ok(changed > 0)
    }

    /// Removes an instance; returns whether it was known.
    pub fn forget_instance(&self, key: &InstanceKey) -> Result<bool, StoreError> {
        let changed = self
            .writer()
            .execute(
                "DELETE FROM instances WHERE host = ?1 AND port = ?2",
                params![key.host, key.port],
            )
            .map_err(|e| self.error(e))?;
        Ok(changed > 0)
    }

    pub fn known_instances(&self) -> Result<Vec<InstanceKey>, StoreError> {
        let conn = self.reader();
        let mut statement = conn
            .prepare_cached("SELECT host, port FROM instances ORDER BY host, port")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok(InstanceKey::new(row.get::<_, String>(0)?, row.get(1)?))
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    /// Appends to the audit log and mirrors the entry as a structured log event.
    pub fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        tracing::info!(
            actor = %entry.actor,
            action = %entry.action,
            cluster = entry.cluster.as_deref().unwrap_or("-"),
            instance = %entry.instance.as_ref().map(|k| k.to_string()).unwrap_or_else(|| "-".into()),
            "{}",
            entry.message
        );
        self.writer()
            .execute(
                "INSERT INTO audit (at, actor, action, cluster, instance, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    time::format(SystemTime::now()),
                    entry.actor,
                    entry.action,
                    entry.cluster,
                    entry.instance.map(|k| k.to_string()),
                    entry.message
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Audits an action that changed nothing (an `ack` with nothing to acknowledge, the
    /// recovery switch set to what it was), unless the same no-op was audited within
    /// [`NO_OP_AUDIT_EVERY`]: a client repeating it cannot grow the log.
    pub fn audit_no_op(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let kind = format!(
            "{}\0{}\0{}\0{}",
            entry.actor,
            entry.action,
            entry.cluster.as_deref().unwrap_or_default(),
            entry
                .instance
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        let now = Instant::now();
        {
            let mut audited = self
                .no_ops_audited
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            audited.retain(|_, at| now.duration_since(*at) < NO_OP_AUDIT_EVERY);
            if audited.contains_key(&kind) {
                tracing::debug!(
                    actor = %entry.actor,
                    action = %entry.action,
                    cluster = entry.cluster.as_deref().unwrap_or("-"),
                    "{} (repeated; audited at most once a minute)",
                    entry.message
                );
                return Ok(());
            }
            audited.insert(kind, now);
        }
        self.audit(entry)
    }

    /// The newest `limit` audit records, newest first, optionally for one cluster.
    pub fn audit_log(
        &self,
        cluster: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        match cluster {
            Some(name) => self.audit_log_named(&[name.to_string()], limit),
            None => self.audit_where("1", &[], limit),
        }
    }

    /// The newest `limit` audit records of a cluster under any of `names` (its name
    /// and former names), newest first.
    pub fn audit_log_named(
        &self,
        names: &[String],
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let placeholders = vec!["?"; names.len()].join(", ");
        self.audit_where(&format!("cluster IN ({placeholders})"), names, limit)
    }

    fn audit_where(
        &self,
        condition: &str,
        values: &[String],
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.reader();
        let mut statement = conn
            .prepare_cached(&format!(
                "SELECT id, at, actor, action, cluster, instance, message FROM audit
                 WHERE {condition} ORDER BY id DESC LIMIT {limit}"
            ))
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(values), |row| {
                let at: String = row.get(1)?;
                Ok(AuditRecord {
                    id: row.get(0)?,
                    at: humantime::parse_rfc3339(&at).unwrap_or(SystemTime::UNIX_EPOCH),
                    actor: row.get(2)?,
                    action: row.get(3)?,
                    cluster: row.get(4)?,
                    instance: row.get(5)?,
                    message: row.get(6)?,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        schema_version(&self.reader()).map_err(|e| self.error(e))
    }
}

/// What would keep [`Store::open`] from opening `path`, found without creating or
/// changing anything, so `check-config` refuses what `run` would: an existing file must
/// be a pointsman store this version reads, writable with its directory (SQLite writes
/// `-wal` and `-shm` files beside it); a missing one needs the nearest existing
/// directory above it to take new files.
pub fn path_problem(path: &Path) -> Option<String> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Some(
            "is empty: give the store's file, like \"/var/lib/pointsman/pointsman.db\"".into(),
        );
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Some(format!(
            "{shown} is a directory: give the store's file in it, like \"{}\"",
            path.join("pointsman.db").display()
        )),
        Ok(meta) if !meta.is_file() => Some(format!("{shown} is not a regular file")),
        Ok(meta) => {
            let directory = path.parent().filter(|d| !d.as_os_str().is_empty());
            not_writable(path)
                .or_else(|| directory.and_then(not_writable))
                .or_else(|| (meta.len() > 0).then(|| not_a_store(path)).flatten())
        }
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            let existing = path
                .ancestors()
                .skip(1)
                .find(|dir| !dir.as_os_str().is_empty() && std::fs::symlink_metadata(dir).is_ok());
            match existing {
                Some(dir) if !dir.is_dir() => Some(format!(
                    "cannot create {shown}: {} is not a directory",
                    dir.display()
                )),
                Some(dir) => not_writable(dir).map(|why| format!("cannot create {shown}: {why}")),
                // A relative path with no directory part: the working directory.
                None => {
                    not_writable(Path::new(".")).map(|why| format!("cannot create {shown}: {why}"))
                }
            }
        }
        Err(error) => Some(format!("cannot read {shown}: {error}")),
    }
}

/// Why this process cannot write `path` (a file, or a directory to create files in).
fn not_writable(path: &Path) -> Option<String> {
    let text = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: access(2) reads the NUL-terminated path and changes nothing.
    if unsafe { libc::access(text.as_ptr(), libc::W_OK) } == 0 {
        return None;
    }
    let error = std::io::Error::last_os_error();
    Some(match error.raw_os_error() {
        Some(libc::EROFS) => format!(
            "{} is on a read-only filesystem: the store must take writes",
            path.display()
        ),
        _ => format!(
            "{} is not writable by this user ({error}): run the agent as a user that may write it, or set store.path elsewhere",
            path.display()
        ),
    })
}

/// Why the SQLite file at `path` is not a pointsman store this version can use.
fn not_a_store(path: &Path) -> Option<String> {
    let shown = path.display();
    let foreign = || {
        format!(
            "{shown} is not a pointsman store: point store.path at a new file or an existing store"
        )
    };
    let conn = match Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) {
        Ok(conn) => conn,
        Err(error) => return Some(format!("cannot open {shown}: {error}")),
    };
    let version = match schema_version(&conn) {
        Ok(version) => version,
        // "file is not a database": a text file, another format.
        Err(_) => return Some(foreign()),
    };
    if version > MIGRATIONS.len() {
        return Some(format!(
            "{shown} has schema version {version}, newer than this pointsman knows ({}): run the newer pointsman or point store.path elsewhere",
            MIGRATIONS.len()
        ));
    }
    let tables: Vec<String> = conn
        .prepare_cached("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .unwrap_or_default();
    // Every store has this table from its first start; another program's database
    // does not (an empty database is a new store).
    let ours = tables.is_empty() || tables.iter().any(|t| t == "schema_migrations");
    (!ours).then(foreign)
}

enum MigrateError {
    Sqlite(rusqlite::Error),
    TooNew(usize),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(error: rusqlite::Error) -> Self {
        MigrateError::Sqlite(error)
    }
}

fn schema_version(conn: &Connection) -> rusqlite::Result<usize> {
    conn.pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))
        .map(|v| v as usize)
}

/// Applies migrations up to `target` (exclusive count), each in its own transaction
/// together with the version bump, so a crash leaves either all of it or none.
fn migrate(conn: &mut Connection, target: usize) -> Result<(), MigrateError> {
    let current = schema_version(conn)?;
    if current > MIGRATIONS.len() {
        return Err(MigrateError::TooNew(current));
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY,
             description TEXT NOT NULL,
             applied_at TEXT NOT NULL
         );",
    )?;
    for (index, (description, sql)) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        let version = index + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT OR REPLACE INTO schema_migrations (version, description, applied_at)
             VALUES (?1, ?2, ?3)",
            params![version as i64, description, time::format(SystemTime::now())],
        )?;
        tx.pragma_update(None, "user_version", version as i64)?;
        tx.commit()?;
        tracing::info!(version, description, "store schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested/pointsman.db");
        (dir, path)
    }

    #[test]
    fn a_new_store_is_at_the_latest_schema_and_remembers_instances() {
        let (_dir, path) = temp_store_path();
        let store = Store::open(&path).expect("opens");
        assert_eq!(store.schema_version().expect("version"), MIGRATIONS.len());
        let key = InstanceKey::new("127.0.0.1", 3306);
        assert!(store.remember_instance(&key).expect("insert"));
        assert!(!store.remember_instance(&key).expect("again"));
        drop(store);
        let reopened = Store::open(&path).expect("reopens");
        assert_eq!(reopened.known_instances().expect("list"), vec![key.clone()]);
        assert!(reopened.forget_instance(&key).expect("forget"));
        assert!(reopened.known_instances().expect("list").is_empty());
    }

    #[test]
    fn every_earlier_schema_upgrades_and_keeps_its_data() {
        for start in 0..=MIGRATIONS.len() {
            let (_dir, path) = temp_store_path();
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            let mut conn = Connection::open(&path).expect("open");
            migrate(&mut conn, start).unwrap_or_else(|_| panic!("migrate to {start}"));
            if start >= 1 {
                conn.execute(
                    "INSERT INTO instances (host, port, first_seen) VALUES ('old', 1, 'x')",
                    [],
                )
                .expect("old data");
            }
            drop(conn);
            let store = Store::open(&path).unwrap_or_else(|e| panic!("upgrade from {start}: {e}"));
            assert_eq!(store.schema_version().expect("version"), MIGRATIONS.len());
            if start >= 1 {
                assert_eq!(
                    store.known_instances().expect("list"),
                    vec![InstanceKey::new("old", 1)]
                );
            }
        }
    }

    #[test]
    fn starting_twice_and_replaying_every_migration_are_harmless() {
        let (_dir, path) = temp_store_path();
        Store::open(&path).expect("first start");
        Store::open(&path).expect("second start");
        // A store whose version marker was lost replays every migration over the
        // finished schema: idempotent statements make that a no-op, not a crash.
        let conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "user_version", 0).expect("reset");
        drop(conn);
        let store = Store::open(&path).expect("replayed");
        assert_eq!(store.schema_version().expect("version"), MIGRATIONS.len());
    }

    #[test]
    fn a_store_from_a_newer_pointsman_is_refused_with_a_reason() {
        let (_dir, path) = temp_store_path();
        Store::open(&path).expect("create");
        let conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(conn);
        let err = Store::open(&path).expect_err("refused").to_string();
        assert!(err.contains("schema version 99 is newer"), "{err}");
    }

    #[test]
    fn a_path_the_store_cannot_use_is_named_before_anything_is_created() {
        let (dir, path) = temp_store_path();
        assert_eq!(path_problem(&path), None, "a new file in a new directory");
        assert!(!path.exists(), "the check creates nothing");
        let problem = path_problem(dir.path()).expect("a directory");
        assert!(problem.contains("is a directory"), "{problem}");
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a database at all, just some text\n").expect("write");
        let problem = path_problem(&text).expect("text");
        assert!(problem.contains("is not a pointsman store"), "{problem}");
        let problem = path_problem(&text.join("store.db")).expect("under a file");
        assert!(problem.contains("is not a directory"), "{problem}");
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .and_then(|c| c.execute_batch("CREATE TABLE photos (id INTEGER);"))
            .expect("another program's database");
        let problem = path_problem(&other).expect("foreign");
        assert!(problem.contains("is not a pointsman store"), "{problem}");
        Store::open(&path).expect("a store");
        assert_eq!(path_problem(&path), None, "an existing store");
    }

    #[test]
    fn a_repeated_no_op_is_audited_once_a_minute() {
        let (_dir, path) = temp_store_path();
        let store = Store::open(&path).expect("opens");
        let nothing_to_ack = |cluster: &str| AuditEntry {
            actor: "api".into(),
            action: "acknowledge".into(),
            cluster: Some(cluster.into()),
            instance: None,
            message: "0 recoveries acknowledged".into(),
        };
        for _ in 0..100 {
            store.audit_no_op(nothing_to_ack("a")).expect("audit");
        }
        store.audit_no_op(nothing_to_ack("b")).expect("audit");
        let clusters: Vec<Option<String>> = store
            .audit_log(None, 1000)
            .expect("log")
            .into_iter()
            .map(|r| r.cluster)
            .collect();
        assert_eq!(clusters, [Some("b".to_string()), Some("a".to_string())]);
    }

    #[test]
    fn the_audit_log_filters_by_cluster_newest_first() {
        let (_dir, path) = temp_store_path();
        let store = Store::open(&path).expect("opens");
        for (cluster, action) in [("a", "discover"), ("b", "forget"), ("a", "forget")] {
            store
                .audit(AuditEntry {
                    actor: "api".into(),
                    action: action.into(),
                    cluster: Some(cluster.into()),
                    instance: Some(InstanceKey::new("h", 1)),
                    message: format!("{action} on {cluster}"),
                })
                .expect("audit");
        }
        let all = store.audit_log(None, 10).expect("log");
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].message, "forget on a");
        let a = store.audit_log(Some("a"), 10).expect("log");
        assert_eq!(
            a.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
            vec!["forget", "discover"]
        );
        assert_eq!(a[0].instance.as_deref(), Some("h:1"));
        let tables: i64 = store
            .writer()
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_migrations'",
                [],
                |row| row.get(0),
            )
            .expect("query");
        assert_eq!(tables, 1);
    }
}
