//! Retention: the audit log and the recovery history are kept for a while, not forever.
//! `prune` deletes audit records older than `store.keep_audit` and all but the newest
//! `store.keep_recoveries` finished recoveries, each with its journal. It never deletes
//! a recovery that is still running (its journal is how it is settled), one a fence
//! names (re-attaching the old primary needs its successor), or one that still holds
//! automatic recovery back (unacknowledged within the block period, or interrupted and
//! unacknowledged); fences, downtime and known instances are not its business.

use super::{Store, StoreError};
use crate::topology::time;
use rusqlite::params;
use std::time::{Duration, SystemTime};

/// How much history to keep (`[store]`), and the block period that decides which
/// recoveries still count.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub keep_audit: Duration,
    pub keep_recoveries: usize,
    pub block_period: Duration,
}

/// What one `prune` deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub audit_records: usize,
    pub recoveries: usize,
}

impl Store {
    /// Deletes what `retention` no longer keeps, as of `now`, in one transaction.
    pub fn prune(&self, retention: &Retention, now: SystemTime) -> Result<Pruned, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let audit_records = match now.checked_sub(retention.keep_audit) {
            Some(oldest_kept) => tx
                .execute(
                    "DELETE FROM audit WHERE at < ?1",
                    [time::format(oldest_kept)],
                )
                .map_err(|e| self.error(e))?,
            None => 0,
        };
        let still_blocking_since = now
            .checked_sub(retention.block_period)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let doomed: Vec<String> = {
            let mut statement = tx
                .prepare_cached(
                    "SELECT id FROM recoveries
                     WHERE status != 'running'
                       AND id NOT IN (SELECT recovery_id FROM fenced WHERE recovery_id IS NOT NULL)
                       AND NOT (acknowledged_at IS NULL
                                AND (started_at >= ?2 OR status = 'interrupted'))
                     ORDER BY started_at DESC, rowid DESC LIMIT -1 OFFSET ?1",
                )
                .map_err(|e| self.error(e))?;
            let rows = statement
                .query_map(
                    params![
                        retention.keep_recoveries as i64,
                        time::format(still_blocking_since)
                    ],
                    |row| row.get(0),
                )
                .map_err(|e| self.error(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.error(e))?
        };
        for id in &doomed {
            tx.execute("DELETE FROM recoveries WHERE id = ?1", [id])
                .map_err(|e| self.error(e))?;
            tx.execute("DELETE FROM recovery_journal WHERE recovery_id = ?1", [id])
                .map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))?;
        Ok(Pruned {
            audit_records,
            recoveries: doomed.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::recovery::{RecoveryRecord, RecoveryStatus};
    use crate::store::AuditEntry;
    use crate::topology::InstanceKey;

    const DAY: Duration = Duration::from_secs(86_400);

    fn recovery(store: &Store, id: &str, started_at: SystemTime, status: RecoveryStatus) {
        let mut record = RecoveryRecord::started(
            id,
            "orders",
            "failover",
            "DeadPrimary",
            &InstanceKey::new("db1", 3306),
            "automatic",
            started_at,
        );
        record.status = status;
        store.insert_recovery(&record).expect("insert");
        store.journal_begin(id, "promote", None).expect("journal");
    }

    fn ids(store: &Store) -> Vec<String> {
        let mut ids: Vec<String> = store
            .recoveries(None, 1000)
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn old_history_goes_and_what_still_matters_stays() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("s.db")).expect("store");
        let now = SystemTime::now();
        let long_ago = now - 400 * DAY;
        for id in ["a-old1", "a-old2", "a-old3"] {
            recovery(&store, id, long_ago, RecoveryStatus::Succeeded);
        }
        recovery(&store, "b-running", long_ago, RecoveryStatus::Running);
        recovery(&store, "c-fenced", long_ago, RecoveryStatus::Succeeded);
        recovery(
            &store,
            "d-interrupted",
            long_ago,
            RecoveryStatus::Interrupted,
        );
        store
            .acknowledge("orders", "test", "old news")
            .expect("ack");
        recovery(
            &store,
            "e-blocking",
            now - Duration::from_secs(60),
            RecoveryStatus::Failed,
        );
        recovery(
            &store,
            "f-unacked-interrupted",
            long_ago,
            RecoveryStatus::Interrupted,
        );
        store
            .fence(&InstanceKey::new("db1", 3306), "orders", Some("c-fenced"))
            .expect("fence");
        store
            .audit(AuditEntry {
                actor: "api".into(),
                action: "acknowledge".into(),
                cluster: Some("orders".into()),
                instance: None,
                message: "today".into(),
            })
            .expect("audit");
        let retention = Retention {
            keep_audit: 90 * DAY,
            keep_recoveries: 1,
            block_period: Duration::from_secs(3600),
        };

        // Nothing is old yet but the finished recoveries beyond the newest one: an
        // acknowledged interrupted one is finished too.
        let pruned = store.prune(&retention, now).expect("prune");
        assert_eq!(
            pruned,
            Pruned {
                audit_records: 0,
                recoveries: 3
            }
        );
        assert_eq!(
            ids(&store),
            [
                "b-running",
                "c-fenced",
                "d-interrupted",
                "e-blocking",
                "f-unacked-interrupted"
            ]
        );
        assert!(store.journal("a-old1").expect("journal").is_empty());
        assert_eq!(store.journal("b-running").expect("journal").len(), 1);
        assert_eq!(store.fenced().expect("fences").len(), 1);

        // A year on: the audit record is old, the blocking recovery no longer blocks.
        let later = now + 365 * DAY;
        let pruned = store.prune(&retention, later).expect("prune");
        assert_eq!(pruned.audit_records, 1);
        assert!(store.audit_log(None, 10).expect("log").is_empty());
        assert_eq!(
            ids(&store),
            [
                "b-running",
                "c-fenced",
                "e-blocking",
                "f-unacked-interrupted"
            ]
        );
        // Pruning again deletes nothing more.
        assert_eq!(
            store.prune(&retention, later).expect("prune"),
            Pruned::default()
        );
    }
}
