//! The recovery journal's copy in Consul, for the next leader. With `[ha]` a recovery's
//! journal lives in the leader's own store, which a new leader cannot read; so every
//! step, before it runs, is also written to `<lock_key>/journal/<recovery id>` (the
//! recovery and every step begun so far, with the leader's epoch), and the key is
//! deleted once the recovery has ended. An agent that starts to lead copies any key
//! left there into its store as a running recovery, and settles it like one of its own
//! (`resume`).
//!
//! It must not decide anything; writing a step fails the step when Consul does not
//! take it, as the local journal does.

use crate::config::ConsulSettings;
use crate::routing::consul_http::Http;
use crate::store::recovery::{RecoveryRecord, StepRecord};
use serde::{Deserialize, Serialize};

/// A recovery as the mirror holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MirroredRecovery {
    pub record: RecoveryRecord,
    /// The steps begun so far (their outcomes are in the leader's store).
    pub steps: Vec<StepRecord>,
    /// The lease epoch of the leader that wrote it.
    pub epoch: u64,
}

/// The Consul side of the journal.
pub struct JournalMirror {
    http: Http,
    prefix: String,
}

impl std::fmt::Debug for JournalMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalMirror")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl JournalMirror {
    /// The mirror under `<lock_key>/journal/`, in the Consul the lease uses.
    pub fn new(settings: &ConsulSettings, lock_key: &str) -> Result<JournalMirror, String> {
        let address = settings
            .config
            .address
            .clone()
            .ok_or("the journal mirror needs routing.consul.address")?;
        let prefix = format!("{}/journal", lock_key.trim_end_matches('/'));
        let http = Http::new(
            &address,
            settings,
            format!("key write on the prefix \"{prefix}/\""),
        )?;
        Ok(JournalMirror { http, prefix })
    }

    fn key(&self, recovery_id: &str) -> String {
        format!("{}/{recovery_id}", self.prefix)
    }

    /// Writes the recovery and the steps begun so far.
    pub async fn write(&self, mirrored: &MirroredRecovery) -> Result<(), String> {
        let value = serde_json::to_vec(mirrored).map_err(|e| e.to_string())?;
        self.http
            .kv_put_local(&self.key(&mirrored.record.id), value)
            .await
            .map_err(|e| e.to_string())
    }

    /// Forgets a recovery that has ended.
    pub async fn remove(&self, recovery_id: &str) {
        if let Err(error) = self.http.kv_delete_local(&self.key(recovery_id)).await {
            tracing::warn!(recovery_id, %error, "cannot remove the ended recovery from the journal in Consul: the next leader will settle it again (harmlessly)");
        }
    }

    /// Every recovery left in the mirror.
    pub async fn left(&self) -> Result<Vec<MirroredRecovery>, String> {
        let entries = self
            .http
            .kv_list_local(&format!("{}/", self.prefix))
            .await
            .map_err(|e| e.to_string())?;
        Ok(entries
            .iter()
            .filter_map(|entry| serde_json::from_str(&entry.text()).ok())
            .collect())
    }
}
