//! The recovery journal: the steps of a recovery (failover, switchover, re-pointing),
//! each written **before** it runs and completed with its outcome after. A recovery
//! record says what was attempted and how it ended; the journal says how far it got,
//! which is what whoever acts next — the same agent restarted, or another — needs to
//! finish or undo it (`recovery::resume`). Rows are keyed by (recovery, sequence), so
//! steps that run concurrently each write their own row.

use super::recovery::StepRecord;
use super::{Store, StoreError};
use crate::topology::{time, InstanceKey};
use rusqlite::params;
use std::time::SystemTime;

impl Store {
    /// Writes that `step` (on `instance`) is about to run; returns its sequence number.
    pub fn journal_begin(
        &self,
        recovery_id: &str,
        step: &str,
        instance: Option<&InstanceKey>,
    ) -> Result<i64, StoreError> {
        let conn = self.writer();
        let seq: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM recovery_journal WHERE recovery_id = ?1",
                [recovery_id],
                |row| row.get(0),
            )
            .map_err(|e| self.error(e))?;
        conn.execute(
            "INSERT INTO recovery_journal (recovery_id, seq, step, instance, ok, begun_at)
             VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
            params![
                recovery_id,
                seq,
                step,
                instance.map(|k| k.to_string()),
                time::format(SystemTime::now())
            ],
        )
        .map_err(|e| self.error(e))?;
        Ok(seq)
    }

    /// Completes a begun step with its outcome.
    pub fn journal_end(
        &self,
        recovery_id: &str,
        seq: i64,
        ok: bool,
        detail: &str,
        duration_ms: u64,
    ) -> Result<(), StoreError> {
        self.writer()
            .execute(
                "UPDATE recovery_journal SET ok = ?3, detail = ?4, duration_ms = ?5
                 WHERE recovery_id = ?1 AND seq = ?2",
                params![recovery_id, seq, ok, detail, duration_ms as i64],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The journal of a recovery in the order its steps began; a step with no outcome
    /// is `pending`.
    pub fn journal(&self, recovery_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        let conn = self.reader();
        let mut statement = conn
            .prepare_cached(
                "SELECT step, instance, ok, detail, duration_ms FROM recovery_journal
                 WHERE recovery_id = ?1 ORDER BY seq",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([recovery_id], |row| {
                let ok: Option<bool> = row.get(2)?;
                Ok(StepRecord {
                    step: row.get(0)?,
                    instance: row
                        .get::<_, Option<String>>(1)?
                        .and_then(|text| text.parse().ok()),
                    ok: ok.unwrap_or(false),
                    detail: row.get(3)?,
                    duration_ms: row.get::<_, i64>(4)?.max(0) as u64,
                    pending: ok.is_none(),
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_pending_from_its_beginning_until_its_outcome_is_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("s.db")).expect("store");
        let replica = InstanceKey::new("db2", 3306);
        let first = store
            .journal_begin("r1", "stop IO thread", Some(&replica))
            .expect("begin");
        let second = store
            .journal_begin("r1", "promote", Some(&replica))
            .expect("begin");
        store.journal_begin("r2", "fence", None).expect("begin");
        store
            .journal_end("r1", first, true, "no longer receives", 3)
            .expect("end");
        let steps = store.journal("r1").expect("journal");
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert_eq!(second, 2);
        assert!(steps[0].ok && !steps[0].pending, "{:?}", steps[0]);
        assert_eq!(steps[0].instance.as_ref(), Some(&replica));
        assert_eq!(steps[0].detail, "no longer receives");
        assert!(!steps[1].ok && steps[1].pending, "{:?}", steps[1]);
        assert_eq!(store.journal("r2").expect("journal").len(), 1);
    }
}
