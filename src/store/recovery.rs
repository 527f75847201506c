//! Failover state that must survive a restart: every recovery with its steps and
//! outcome (and whether an operator acknowledged it), the old primaries that are fenced,
//! downtime, and the global switch for automatic recovery. A recovery still `running`
//! when the agent starts was cut short: `recovery::resume` settles it from its journal
//! (`journal`) — finished (`succeeded`, blocking like any other), undone (`rolled_back`,
//! blocking nothing), or, when that cannot be told, `interrupted` (blocking until an
//! operator acknowledges it).

use super::{Store, StoreError};
use crate::topology::{time, InstanceKey};
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// One step of a recovery, as run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: String,
    pub instance: Option<InstanceKey>,
    pub ok: bool,
    pub detail: String,
    pub duration_ms: u64,
    /// Written to the journal before it ran, with no outcome after: the agent stopped
    /// (or died) while it ran, and whether it took effect is for the servers to say.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryStatus {
    Running,
    Succeeded,
    Failed,
    /// Stopped before changing anything (a pre hook said no, or no candidate).
    Aborted,
    /// The agent restarted while it ran, and what it had begun could not be settled:
    /// an operator must look (it blocks automatic recovery until acknowledged).
    Interrupted,
    /// The agent stopped while it ran, before anything was promoted; whoever acted next
    /// undid what it had begun. It blocks nothing: the failure is judged afresh.
    #[serde(rename = "rolled_back")]
    RolledBack,
}

impl RecoveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            RecoveryStatus::Running => "running",
            RecoveryStatus::Succeeded => "succeeded",
            RecoveryStatus::Failed => "failed",
            RecoveryStatus::Aborted => "aborted",
            RecoveryStatus::Interrupted => "interrupted",
            RecoveryStatus::RolledBack => "rolled_back",
        }
    }

    fn parse(text: &str) -> RecoveryStatus {
        match text {
            "running" => RecoveryStatus::Running,
            "succeeded" => RecoveryStatus::Succeeded,
            "failed" => RecoveryStatus::Failed,
            "aborted" => RecoveryStatus::Aborted,
            "rolled_back" => RecoveryStatus::RolledBack,
            _ => RecoveryStatus::Interrupted,
        }
    }
}

/// A recovery: what failed, who took over, every step, and the acknowledgement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    pub id: String,
    pub cluster: String,
    /// `failover`, `intermediate` (re-pointing under a dead intermediate primary).
    pub kind: String,
    /// The problem code that triggered it.
    pub problem: String,
    pub failed: InstanceKey,
    pub successor: Option<InstanceKey>,
    /// `automatic`, or who asked (`api`, `cli`).
    pub trigger: String,
    pub status: RecoveryStatus,
    #[serde(with = "time")]
    pub started_at: SystemTime,
    #[serde(with = "time::option")]
    pub finished_at: Option<SystemTime>,
    pub steps: Vec<StepRecord>,
    #[serde(with = "time::option")]
    pub acknowledged_at: Option<SystemTime>,
    pub acknowledged_by: Option<String>,
    pub ack_comment: Option<String>,
}

impl RecoveryRecord {
    /// A recovery that starts now, with no steps yet.
    pub fn started(
        id: &str,
        cluster: &str,
        kind: &str,
        problem: &str,
        failed: &InstanceKey,
        trigger: &str,
        at: SystemTime,
    ) -> Self {
        Self {
            id: id.to_string(),
            cluster: cluster.to_string(),
            kind: kind.to_string(),
            problem: problem.to_string(),
            failed: failed.clone(),
            successor: None,
            trigger: trigger.to_string(),
            status: RecoveryStatus::Running,
            started_at: at,
            finished_at: None,
            steps: Vec::new(),
            acknowledged_at: None,
            acknowledged_by: None,
            ack_comment: None,
        }
    }
}

/// An old primary kept read_only and out of the writable set until re-attached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FencedInstance {
    pub instance: InstanceKey,
    pub cluster: String,
    pub recovery_id: Option<String>,
    #[serde(with = "time")]
    pub fenced_at: SystemTime,
}

/// An instance an operator took out of automatic recovery for a while.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Downtime {
    pub instance: InstanceKey,
    #[serde(with = "time")]
    pub until: SystemTime,
    pub reason: String,
    pub owner: String,
}

fn parse_time(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap_or(SystemTime::UNIX_EPOCH)
}

fn parse_key(text: &str) -> rusqlite::Result<InstanceKey> {
    text.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

const RECOVERY_COLUMNS: &str = "id, cluster, kind, problem, failed, successor, trigger, status, \
     started_at, finished_at, steps, acknowledged_at, acknowledged_by, ack_comment";

/// Whether a listing of recoveries reads their steps (each a JSON document, and the
/// journal of one still running).
#[derive(Clone, Copy, PartialEq)]
enum Steps {
    Read,
    Skipped,
}

fn recovery_from_row(row: &Row<'_>) -> rusqlite::Result<RecoveryRecord> {
    let steps: String = row.get(10)?;
    Ok(RecoveryRecord {
        id: row.get(0)?,
        cluster: row.get(1)?,
        kind: row.get(2)?,
        problem: row.get(3)?,
        failed: parse_key(&row.get::<_, String>(4)?)?,
        successor: row
            .get::<_, Option<String>>(5)?
            .map(|k| parse_key(&k))
            .transpose()?,
        trigger: row.get(6)?,
        status: RecoveryStatus::parse(&row.get::<_, String>(7)?),
        started_at: parse_time(&row.get::<_, String>(8)?),
        finished_at: row.get::<_, Option<String>>(9)?.map(|t| parse_time(&t)),
        steps: serde_json::from_str(&steps).unwrap_or_default(),
        acknowledged_at: row.get::<_, Option<String>>(11)?.map(|t| parse_time(&t)),
        acknowledged_by: row.get(12)?,
        ack_comment: row.get(13)?,
    })
}

impl Store {
    /// Records a recovery as it starts.
    pub fn insert_recovery(&self, record: &RecoveryRecord) -> Result<(), StoreError> {
        self.writer()
            .execute(
                &format!(
                    "INSERT INTO recoveries ({RECOVERY_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, NULL, NULL)"
                ),
                params![
                    record.id,
                    record.cluster,
                    record.kind,
                    record.problem,
                    record.failed.to_string(),
                    record.successor.as_ref().map(|k| k.to_string()),
                    record.trigger,
                    record.status.as_str(),
                    time::format(record.started_at),
                    record.finished_at.map(time::format),
                    serde_json::to_string(&record.steps).unwrap_or_else(|_| "[]".into()),
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Saves a recovery's progress: status, successor, steps, end.
    pub fn update_recovery(&self, record: &RecoveryRecord) -> Result<(), StoreError> {
        self.writer()
            .execute(
                "UPDATE recoveries SET status = ?2, successor = ?3, finished_at = ?4, steps = ?5
                 WHERE id = ?1",
                params![
                    record.id,
                    record.status.as_str(),
                    record.successor.as_ref().map(|k| k.to_string()),
                    record.finished_at.map(time::format),
                    serde_json::to_string(&record.steps).unwrap_or_else(|_| "[]".into()),
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Recoveries, newest first, optionally of one cluster.
    pub fn recoveries(
        &self,
        cluster: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RecoveryRecord>, StoreError> {
        match cluster {
            Some(name) => self.recoveries_named(&[name.to_string()], limit),
            None => self.recoveries_where("1", &[], limit, Steps::Read),
        }
    }

    /// As [`Store::recoveries`] over every cluster, without the steps (left empty): what
    /// the views over the whole fleet need (who was promoted, what is unacknowledged),
    /// without parsing every recovery's steps each time one is drawn.
    pub fn recovery_outlines(&self, limit: usize) -> Result<Vec<RecoveryRecord>, StoreError> {
        self.recoveries_where("1", &[], limit, Steps::Skipped)
    }

    /// The recovery with this id, steps and all.
    pub fn recovery_with_id(&self, id: &str) -> Result<Option<RecoveryRecord>, StoreError> {
        Ok(self
            .recoveries_where("id = ?", &[id.to_string()], 1, Steps::Read)?
            .pop())
    }

    /// Recoveries of a cluster under any of `names` (its name and former names),
    /// newest first.
    pub fn recoveries_named(
        &self,
        names: &[String],
        limit: usize,
    ) -> Result<Vec<RecoveryRecord>, StoreError> {
        let placeholders = vec!["?"; names.len()].join(", ");
        self.recoveries_where(
            &format!("cluster IN ({placeholders})"),
            names,
            limit,
            Steps::Read,
        )
    }

    fn recoveries_where(
        &self,
        condition: &str,
        values: &[String],
        limit: usize,
        steps: Steps,
    ) -> Result<Vec<RecoveryRecord>, StoreError> {
        let columns = match steps {
            Steps::Read => RECOVERY_COLUMNS.to_string(),
            Steps::Skipped => RECOVERY_COLUMNS.replace("steps", "'[]'"),
        };
        let conn = self.reader();
        let mut statement = conn
            .prepare_cached(&format!(
                "SELECT {columns} FROM recoveries WHERE {condition}
                 ORDER BY started_at DESC, rowid DESC LIMIT {limit}"
            ))
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(values), recovery_from_row)
            .map_err(|e| self.error(e))?;
        let mut records: Vec<RecoveryRecord> =
            rows.collect::<Result<_, _>>().map_err(|e| self.error(e))?;
        drop(statement);
        drop(conn);
        if steps == Steps::Skipped {
            return Ok(records);
        }
        // A recovery that has not ended (or never could record its end) shows the steps
        // its journal holds: how far it got.
        for record in records.iter_mut().filter(|r| r.steps.is_empty()) {
            record.steps = self.journal(&record.id)?;
        }
        Ok(records)
    }

    /// How many recoveries (and switchovers) ended in each status, by its name.
    pub fn recovery_counts(&self) -> Result<BTreeMap<String, usize>, StoreError> {
        let conn = self.reader();
        let mut statement = conn
            .prepare_cached("SELECT status, COUNT(*) FROM recoveries GROUP BY status")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                let status: String = row.get(0)?;
                let count: i64 = row.get(1)?;
                Ok((
                    RecoveryStatus::parse(&status).as_str().to_string(),
                    count as usize,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut counts = BTreeMap::new();
        for row in rows {
            let (status, count) = row.map_err(|e| self.error(e))?;
            *counts.entry(status).or_default() += count;
        }
        Ok(counts)
    }

    /// Every recovery started at or after `since` that no operator has acknowledged,
    /// newest first: while one of a cluster is there, the cluster is not recovered
    /// automatically (`coverage::GateFacts::blocking`). Every attempt counts, aborted or
    /// failed too (retrying a failed recovery every poll helps no one); a planned
    /// switchover and a rolled-back recovery do not. Without their steps: read on the
    /// way to every failover, they say only that it is blocked, and by which.
    pub fn blocking_recoveries(
        &self,
        since: SystemTime,
    ) -> Result<Vec<RecoveryRecord>, StoreError> {
        self.recoveries_where(
            "started_at >= ? AND acknowledged_at IS NULL
             AND kind != 'switchover' AND status != 'rolled_back'",
            &[time::format(since)],
            10_000,
            Steps::Skipped,
        )
    }

    /// Acknowledges every unacknowledged recovery of `cluster`; returns how many.
    pub fn acknowledge(&self, cluster: &str, by: &str, comment: &str) -> Result<usize, StoreError> {
        self.writer()
            .execute(
                "UPDATE recoveries SET acknowledged_at = ?2, acknowledged_by = ?3, ack_comment = ?4
                 WHERE cluster = ?1 AND acknowledged_at IS NULL",
                params![cluster, time::format(SystemTime::now()), by, comment],
            )
            .map_err(|e| self.error(e))
    }

    /// Acknowledges the unacknowledged recoveries whose failed or promoted instance is one
    /// of `members` (a cluster's earlier recoveries under another name); returns how many.
    pub fn acknowledge_of(
        &self,
        members: &[InstanceKey],
        by: &str,
        comment: &str,
    ) -> Result<usize, StoreError> {
        let ids: Vec<String> = self
            .recovery_outlines(1000)?
            .into_iter()
            .filter(|r| r.acknowledged_at.is_none())
            .filter(|r| {
                members.contains(&r.failed)
                    || r.successor.as_ref().is_some_and(|s| members.contains(s))
            })
            .map(|r| r.id)
            .collect();
        let conn = self.writer();
        for id in &ids {
            conn.execute(
                "UPDATE recoveries SET acknowledged_at = ?2, acknowledged_by = ?3, ack_comment = ?4
                 WHERE id = ?1",
                params![id, time::format(SystemTime::now()), by, comment],
            )
            .map_err(|e| self.error(e))?;
        }
        Ok(ids.len())
    }

    /// Records `instance` as a fenced old primary of `cluster` (kept read_only until an
    /// operator or a re-attach lifts it).
    pub fn fence(
        &self,
        instance: &InstanceKey,
        cluster: &str,
        recovery_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut cached = self.fenced_cache();
        *cached = None;
        self.writer()
            .execute(
                "INSERT OR REPLACE INTO fenced (host, port, cluster, recovery_id, fenced_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    instance.host,
                    instance.port,
                    cluster,
                    recovery_id,
                    time::format(SystemTime::now())
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The fenced old primaries, by host and port. Read at every judgement: from memory,
    /// once the table has been read since its last change.
    pub fn fenced(&self) -> Result<Vec<FencedInstance>, StoreError> {
        let mut cached = self.fenced_cache();
        if let Some(fenced) = cached.as_ref() {
            return Ok(fenced.clone());
        }
        let fenced = self.fenced_in_table()?;
        *cached = Some(fenced.clone());
        Ok(fenced)
    }

    fn fenced_in_table(&self) -> Result<Vec<FencedInstance>, StoreError> {
        let conn = self.reader();
        let mut statement = conn
            .prepare_cached("SELECT host, port, cluster, recovery_id, fenced_at FROM fenced ORDER BY host, port")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok(FencedInstance {
                    instance: InstanceKey::new(row.get::<_, String>(0)?, row.get(1)?),
                    cluster: row.get(2)?,
                    recovery_id: row.get(3)?,
                    fenced_at: parse_time(&row.get::<_, String>(4)?),
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    /// Lifts the fence (after a re-attach); returns whether it was fenced.
    pub fn unfence(&self, instance: &InstanceKey) -> Result<bool, StoreError> {
        let mut cached = self.fenced_cache();
        *cached = None;
        let changed = self
            .writer()
            .execute(
                "DELETE FROM fenced WHERE host = ?1 AND port = ?2",
                params![instance.host, instance.port],
            )
            .map_err(|e| self.error(e))?;
        Ok(changed > 0)
    }

    pub fn set_downtime(&self, downtime: &Downtime) -> Result<(), StoreError> {
        self.writer()
            .execute(
                "INSERT OR REPLACE INTO downtime (host, port, until, reason, owner)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    downtime.instance.host,
                    downtime.instance.port,
                    time::format(downtime.until),
                    downtime.reason,
                    downtime.owner
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Downtime still in force at `now`.
    pub fn downtimes(&self, now: SystemTime) -> Result<Vec<Downtime>, StoreError> {
        let conn = self.reader();
        let mut statement = conn
            .prepare_cached(
                "SELECT host, port, until, reason, owner FROM downtime WHERE until > ?1
                 ORDER BY host, port",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([time::format(now)], |row| {
                Ok(Downtime {
                    instance: InstanceKey::new(row.get::<_, String>(0)?, row.get(1)?),
                    until: parse_time(&row.get::<_, String>(2)?),
                    reason: row.get(3)?,
                    owner: row.get(4)?,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    pub fn end_downtime(&self, instance: &InstanceKey) -> Result<bool, StoreError> {
        let changed = self
            .writer()
            .execute(
                "DELETE FROM downtime WHERE host = ?1 AND port = ?2",
                params![instance.host, instance.port],
            )
            .map_err(|e| self.error(e))?;
        Ok(changed > 0)
    }

    /// The global switch for automatic recovery (on unless an operator turned it off).
    pub fn automatic_recovery_enabled(&self) -> Result<bool, StoreError> {
        let value: Option<String> = self
            .reader()
            .query_row(
                "SELECT value FROM settings WHERE name = 'automatic_recovery'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error(e))?;
        Ok(value.as_deref() != Some("off"))
    }

    pub fn set_automatic_recovery(&self, enabled: bool) -> Result<(), StoreError> {
        self.writer()
            .execute(
                "INSERT OR REPLACE INTO settings (name, value) VALUES ('automatic_recovery', ?1)",
                [if enabled { "on" } else { "off" }],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp");
        let store = Store::open(&dir.path().join("s.db")).expect("opens");
        (dir, store)
    }

    fn record(id: &str, cluster: &str, started_at: SystemTime) -> RecoveryRecord {
        let failed = InstanceKey::new("db1", 3306);
        RecoveryRecord::started(
            id,
            cluster,
            "failover",
            "DeadPrimary",
            &failed,
            "automatic",
            started_at,
        )
    }

    #[test]
    fn a_recovery_blocks_its_cluster_until_acknowledged() {
        let (_dir, store) = store();
        let now = SystemTime::now();
        let mut first = record("r1", "orders", now);
        store.insert_recovery(&first).expect("insert");
        first.status = RecoveryStatus::Succeeded;
        first.successor = Some(InstanceKey::new("db2", 3306));
        first.steps.push(StepRecord {
            step: "promote".into(),
            instance: Some(InstanceKey::new("db2", 3306)),
            ok: true,
            detail: "read_only OFF".into(),
            duration_ms: 12,
            pending: false,
        });
        store.update_recovery(&first).expect("update");

        let hour_ago = now - Duration::from_secs(3600);
        let blocking = store
            .blocking_recoveries(hour_ago)
            .expect("query")
            .into_iter()
            .find(|r| r.cluster == "orders")
            .expect("blocked");
        assert_eq!(blocking.successor, Some(InstanceKey::new("db2", 3306)));
        // Without its steps (read on the way to every failover); they are a lookup away.
        assert!(blocking.steps.is_empty());
        let whole = store
            .recovery_with_id(&blocking.id)
            .expect("query")
            .expect("r1");
        assert_eq!(whole.steps, first.steps);
        assert_eq!(store.recovery_outlines(10).expect("outlines")[0].id, "r1");
        assert!(store.recovery_with_id("r9").expect("query").is_none());
        assert!(store
            .blocking_recoveries(hour_ago)
            .expect("query")
            .into_iter()
            .find(|r| r.cluster == "other")
            .is_none());
        assert!(store
            .blocking_recoveries(now + Duration::from_secs(1))
            .expect("query")
            .into_iter()
            .find(|r| r.cluster == "orders")
            .is_none());

        assert_eq!(
            store.acknowledge("orders", "dba", "checked").expect("ack"),
            1
        );
        assert!(store
            .blocking_recoveries(hour_ago)
            .expect("query")
            .into_iter()
            .find(|r| r.cluster == "orders")
            .is_none());
        let listed = store.recoveries(Some("orders"), 10).expect("list");
        assert_eq!(listed[0].acknowledged_by.as_deref(), Some("dba"));
    }

    #[test]
    fn recoveries_are_counted_by_outcome() {
        let (_dir, store) = store();
        let now = SystemTime::now();
        for (id, status) in [
            ("r1", RecoveryStatus::Succeeded),
            ("r2", RecoveryStatus::Succeeded),
            ("r3", RecoveryStatus::Failed),
        ] {
            let mut record = record(id, "orders", now);
            record.status = status;
            store.insert_recovery(&record).expect("insert");
        }
        let counts = store.recovery_counts().expect("counts");
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            vec![("failed".to_string(), 1), ("succeeded".to_string(), 2)]
        );
    }

    #[test]
    fn an_interrupted_recovery_blocks_and_a_rolled_back_one_does_not() {
        let (_dir, store) = store();
        let now = SystemTime::now();
        let mut record = record("r1", "orders", now);
        store.insert_recovery(&record).expect("insert");
        record.status = RecoveryStatus::RolledBack;
        store.update_recovery(&record).expect("update");
        let since = now - Duration::from_secs(60);
        assert!(store
            .blocking_recoveries(since)
            .expect("query")
            .into_iter()
            .find(|r| r.cluster == "orders")
            .is_none());
        record.status = RecoveryStatus::Interrupted;
        store.update_recovery(&record).expect("update");
        let blocking = store
            .blocking_recoveries(since)
            .expect("query")
            .into_iter()
            .find(|r| r.cluster == "orders")
            .expect("still blocks");
        assert_eq!(blocking.status, RecoveryStatus::Interrupted);
    }

    #[test]
    fn fences_downtime_and_the_switch_persist() {
        let (dir, store) = store();
        let key = InstanceKey::new("db1", 3306);
        assert!(store.fenced().expect("list").is_empty());
        store.fence(&key, "orders", Some("r1")).expect("fence");
        assert_eq!(store.fenced().expect("list")[0].instance, key);
        // Kept in memory, and in the file: a restarted agent finds the fence.
        let reopened = Store::open(&dir.path().join("s.db")).expect("reopens");
        assert_eq!(reopened.fenced().expect("list")[0].instance, key);
        assert!(store.unfence(&key).expect("unfence"));
        assert!(store.fenced().expect("list").is_empty());
        assert!(Store::open(&dir.path().join("s.db"))
            .expect("reopens")
            .fenced()
            .expect("list")
            .is_empty());

        let now = SystemTime::now();
        store
            .set_downtime(&Downtime {
                instance: key.clone(),
                until: now + Duration::from_secs(60),
                reason: "kernel upgrade".into(),
                owner: "dba".into(),
            })
            .expect("downtime");
        assert_eq!(store.downtimes(now).expect("list").len(), 1);
        assert!(store
            .downtimes(now + Duration::from_secs(120))
            .expect("list")
            .is_empty());
        assert!(store.end_downtime(&key).expect("end"));

        assert!(store.automatic_recovery_enabled().expect("read"));
        store.set_automatic_recovery(false).expect("write");
        assert!(!store.automatic_recovery_enabled().expect("read"));
    }

    /// A failover's journal is written while a dashboard reads a page of recoveries, and
    /// the page is read while a write runs: neither waits for the other.
    #[test]
    fn reads_and_writes_do_not_wait_for_each_other() {
        let (_dir, store) = store();
        store
            .insert_recovery(&record("r1", "orders", SystemTime::now()))
            .expect("insert");
        let done = |work: Box<dyn FnOnce(Store) + Send>| {
            let (tx, rx) = std::sync::mpsc::channel();
            let store = store.clone();
            std::thread::spawn(move || {
                work(store);
                let _ = tx.send(());
            });
            rx.recv_timeout(Duration::from_secs(5)).is_ok()
        };
        {
            let _a_long_read = store.reader();
            assert!(
                done(Box::new(|store| {
                    store
                        .journal_begin("r1", "stop IO thread", None)
                        .expect("journal");
                })),
                "a journal write waited for a read"
            );
        }
        {
            let _a_long_write = store.writer();
            assert!(
                done(Box::new(|store| {
                    let listed = store.recoveries(None, 200).expect("list");
                    assert_eq!(listed[0].steps.len(), 1, "the journal's step: {listed:?}");
                })),
                "a read waited for a write"
            );
        }
    }
}
