//! Routing epochs: per cluster, the last writer decided and the epoch of that decision.
//! Kept across restarts so epochs only grow, and an older decision never overwrites a
//! newer one in a shared backend (Consul).

use super::{Store, StoreError};
use crate::topology::{time, InstanceKey};
use rusqlite::{params, OptionalExtension};
use std::time::SystemTime;

/// The last decision about a cluster's writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterDecision {
    pub epoch: u64,
    pub writer: Option<InstanceKey>,
    pub recovery_id: Option<String>,
    pub decided_at: SystemTime,
}

impl Store {
    pub fn writer_decision(&self, cluster: &str) -> Result<Option<WriterDecision>, StoreError> {
        self.reader()
            .query_row(
                "SELECT epoch, writer, recovery_id, decided_at FROM route_epochs WHERE cluster = ?1",
                [cluster],
                |row| {
                    let writer: Option<String> = row.get(1)?;
                    let decided_at: String = row.get(3)?;
                    Ok(WriterDecision {
                        epoch: row.get::<_, i64>(0)? as u64,
                        writer: writer.and_then(|w| w.parse().ok()),
                        recovery_id: row.get(2)?,
                        decided_at: humantime::parse_rfc3339(&decided_at)
                            .unwrap_or(SystemTime::UNIX_EPOCH),
                    })
                },
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    pub fn record_writer_decision(
        &self,
        cluster: &str,
        decision: &WriterDecision,
    ) -> Result<(), StoreError> {
        self.writer()
            .execute(
                "INSERT OR REPLACE INTO route_epochs (cluster, epoch, writer, recovery_id, decided_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    cluster,
                    decision.epoch as i64,
                    decision.writer.as_ref().map(|w| w.to_string()),
                    decision.recovery_id,
                    time::format(decision.decided_at)
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.db");
        let store = Store::open(&path).expect("store");
        assert_eq!(store.writer_decision("app").expect("read"), None);
        let decision = WriterDecision {
            epoch: 7,
            writer: Some(InstanceKey::new("db2", 3306)),
            recovery_id: Some("app-1".into()),
            decided_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        };
        store
            .record_writer_decision("app", &decision)
            .expect("write");
        drop(store);
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.writer_decision("app").expect("read"), Some(decision));
    }
}
