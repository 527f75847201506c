//! An operator's single-instance actions from the API, the CLI and the web page:
//! relocate a replica below another instance (GTID), start or stop its replication,
//! set read_only. Each is checked first on the latest snapshot (pure: `check_relocate`),
//! refused with a sentence that says why, run while no recovery or switchover changes
//! the same cluster, and audited.

use super::coordinator::Coordinator;
use crate::analysis::findings::errant_gtids;
use crate::mysql::edge::AdminSession;
use crate::store::AuditEntry;
use crate::topology::{build_clusters, InstanceKey, Snapshot};
use std::time::Duration;

/// How long an action waits for the agent to see its result before answering: an
/// answer means the next read (and the next action's check) shows the change.
const SEEN_WITHIN: Duration = Duration::from_secs(2);

/// Why an action was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    /// The request makes no sense for the topology as it is; nothing was done.
    #[error("{0}")]
    Refused(String),
    /// Another change of the cluster is running; nothing was done.
    #[error("cluster {0} is being changed by a recovery or switchover: try again when it ends")]
    Busy(String),
    /// The servers did not do it.
    #[error("{0}")]
    Failed(String),
}

/// Whether `replica` may replicate from `below`: both known and answering, in the same
/// cluster, no loop, `below` writes a binary log its replicas can read, and `replica`
/// holds nothing `below` lacks (else those transactions would be errant under it).
/// Returns the cluster's name.
pub fn check_relocate(
    snapshot: &Snapshot,
    aliases: &[crate::topology::cluster::ClusterAlias],
    replica: &InstanceKey,
    below: &InstanceKey,
) -> Result<String, String> {
    let known = |key: &InstanceKey| {
        snapshot
            .get(key)
            .filter(|i| i.is_reachable())
            .ok_or_else(|| format!("{key} is not known or does not answer"))
    };
    let moving = known(replica)?;
    let target = known(below)?;
    if replica == below {
        return Err(format!("{replica} cannot replicate from itself"));
    }
    let Some(source) = moving.source() else {
        return Err(format!(
            "{replica} is a primary: relocate moves replicas (make it a replica with a switchover)"
        ));
    };
    if source == below {
        return Err(format!("{replica} already replicates from {below}"));
    }
    let mut up = Some(below.clone());
    while let Some(key) = up {
        if &key == replica {
            return Err(format!(
                "{below} replicates (directly or not) from {replica}: that would make a replication loop"
            ));
        }
        up = snapshot.get(&key).and_then(|i| i.source().cloned());
    }
    let clusters = build_clusters(snapshot, aliases);
    let cluster_of = |key: &InstanceKey| {
        clusters
            .iter()
            .find(|c| c.members.contains(key))
            .map(|c| c.name.clone())
    };
    let cluster = cluster_of(replica).unwrap_or_default();
    if cluster_of(below).as_deref() != Some(cluster.as_str()) {
        return Err(format!(
            "{below} is not in {replica}'s cluster {cluster}: relocate moves replicas within a cluster"
        ));
    }
    let (Some(moving_facts), Some(target_facts)) = (&moving.facts, &target.facts) else {
        return Err(format!("{replica} or {below} has not been probed yet"));
    };
    if !target_facts.log_bin {
        return Err(format!(
            "{below} writes no binary log: nothing could replicate from it"
        ));
    }
    if target.source().is_some() && !target_facts.log_replica_updates {
        return Err(format!(
            "{below} does not log what it replicates (log_replica_updates OFF): a replica under it would miss every transaction"
        ));
    }
    if !moving
        .facts
        .as_ref()
        .and_then(|f| f.replication.as_ref())
        .is_some_and(|r| r.gtid_auto_position)
    {
        return Err(format!(
            "{replica} replicates by file and position: relocating needs GTID auto-positioning"
        ));
    }
    if let Some(errant) = errant_gtids(&moving_facts.gtid, &target_facts.gtid, target_facts) {
        return Err(format!(
            "{replica} holds transactions {below} lacks ({errant}): under it they would be errant"
        ));
    }
    Ok(cluster)
}

impl Coordinator {
    /// Makes `replica` replicate from `below` (GTID) and checks it does.
    pub async fn relocate(
        &self,
        replica: &InstanceKey,
        below: &InstanceKey,
        who: &str,
    ) -> Result<String, OperateError> {
        let snapshot = self.discovery.snapshot();
        let cluster = check_relocate(&snapshot, &self.aliases, replica, below)
            .map_err(OperateError::Refused)?;
        let result = self
            .while_changing(&cluster, async {
                let tls = self.executor.link_tls(below).await;
                let mut session = self.open(replica).await?;
                let done = async {
                    session
                        .repoint(below, self.executor.heartbeat_period, tls)
                        .await?;
                    session
                        .verify_replicating(self.executor.verify_timeout)
                        .await
                }
                .await;
                session.close().await;
                done.map_err(|e| OperateError::Failed(e.to_string()))
            })
            .await;
        let message = match &result {
            Ok(()) => format!("{replica} relocated: it replicates from {below}"),
            Err(error) => format!("relocating {replica} below {below} failed: {error}"),
        };
        self.audit_action(who, "relocate", &cluster, replica, &message);
        self.discovery
            .probe_and_wait(vec![replica.clone(), below.clone()], SEEN_WITHIN)
            .await;
        result.map(|()| message)
    }

    /// Starts or stops both replication threads of a replica.
    pub async fn set_replication(
        &self,
        replica: &InstanceKey,
        running: bool,
        who: &str,
    ) -> Result<String, OperateError> {
        let cluster = self.cluster_of(replica)?;
        let is_replica = self
            .discovery
            .snapshot()
            .get(replica)
            .is_some_and(|i| i.source().is_some());
        if !is_replica {
            return Err(OperateError::Refused(format!(
                "{replica} is not a replica: it has no replication to start or stop"
            )));
        }
        let result = self
            .while_changing(&cluster, async {
                let mut session = self.open(replica).await?;
                let done = if running {
                    session.start_replication().await
                } else {
                    session.stop_replication().await
                };
                session.close().await;
                done.map_err(|e| OperateError::Failed(e.to_string()))
            })
            .await;
        let message = match (&result, running) {
            (Ok(()), true) => format!("replication started on {replica}"),
            (Ok(()), false) => format!(
                "replication stopped on {replica} (it receives and applies nothing until started)"
            ),
            (Err(error), _) => format!("changing replication on {replica} failed: {error}"),
        };
        self.audit_action(who, "replication", &cluster, replica, &message);
        self.discovery
            .probe_and_wait(vec![replica.clone()], SEEN_WITHIN)
            .await;
        result.map(|()| message)
    }

    /// Sets `read_only` (and on MySQL `super_read_only` with it) on an instance. A fenced
    /// old primary is never made writable here: `reattach` or `forget --unfence` first.
    pub async fn set_read_only_by_hand(
        &self,
        key: &InstanceKey,
        read_only: bool,
        who: &str,
    ) -> Result<String, OperateError> {
        let cluster = self.cluster_of(key)?;
        let fenced = self
            .store
            .fenced()
            .unwrap_or_default()
            .iter()
            .any(|f| &f.instance == key);
        if fenced && !read_only {
            return Err(OperateError::Refused(format!(
                "{key} is a fenced old primary: it stays read_only until `pointsman reattach` (or `forget --unfence`)"
            )));
        }
        let result = self
            .while_changing(&cluster, async {
                self.executor
                    .set_read_only(key, read_only)
                    .await
                    .map_err(|e| OperateError::Failed(e.to_string()))
            })
            .await;
        let message = match &result {
            Ok(()) => format!(
                "{key} is now read_only={}",
                if read_only { "ON" } else { "OFF" }
            ),
            Err(error) => format!("setting read_only on {key} failed: {error}"),
        };
        self.audit_action(who, "read_only", &cluster, key, &message);
        self.discovery
            .probe_and_wait(vec![key.clone()], SEEN_WITHIN)
            .await;
        result.map(|()| message)
    }

    fn cluster_of(&self, key: &InstanceKey) -> Result<String, OperateError> {
        let snapshot = self.discovery.snapshot();
        if !snapshot.get(key).is_some_and(|i| i.is_reachable()) {
            return Err(OperateError::Refused(format!(
                "{key} is not known or does not answer"
            )));
        }
        Ok(build_clusters(&snapshot, &self.aliases)
            .into_iter()
            .find(|c| c.members.contains(key))
            .map(|c| c.name)
            .unwrap_or_else(|| key.to_string()))
    }

    /// A session for changing `key`, through the executor's lease gate.
    async fn open(&self, key: &InstanceKey) -> Result<Box<dyn AdminSession>, OperateError> {
        self.executor
            .open(key)
            .await
            .map_err(|e| OperateError::Failed(e.to_string()))
    }

    /// Runs `work` with the cluster marked as changing, so no recovery starts meanwhile.
    async fn while_changing<T>(
        &self,
        cluster: &str,
        work: impl std::future::Future<Output = Result<T, OperateError>>,
    ) -> Result<T, OperateError> {
        self.may_act_on(cluster).map_err(OperateError::Refused)?;
        if !self.begin_change(cluster) {
            return Err(OperateError::Busy(cluster.to_string()));
        }
        let result = work.await;
        self.end_change(cluster);
        result
    }

    fn audit_action(
        &self,
        who: &str,
        action: &str,
        cluster: &str,
        key: &InstanceKey,
        message: &str,
    ) {
        let _ = self.store.audit(AuditEntry {
            actor: who.to_string(),
            action: action.into(),
            cluster: Some(cluster.to_string()),
            instance: Some(key.clone()),
            message: message.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::instance::tests_support::{primary, replica};

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    /// 1 → 2 → 3 (chained), 1 → 4; 9 is a primary of its own.
    fn snapshot() -> Snapshot {
        let mut snapshot = Snapshot::default();
        for instance in [
            primary(key(1)),
            replica(key(2), key(1)),
            replica(key(3), key(2)),
            replica(key(4), key(1)),
            primary(key(9)),
        ] {
            snapshot.insert(instance);
        }
        snapshot
    }

    fn check(replica: u16, below: u16) -> Result<String, String> {
        check_relocate(&snapshot(), &[], &key(replica), &key(below))
    }

    #[test]
    fn a_replica_moves_below_a_sibling_or_back_up() {
        assert_eq!(check(4, 2), Ok("127.0.0.1:1".into()));
        assert_eq!(check(3, 1), Ok("127.0.0.1:1".into()));
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        let refused = |r: u16, b: u16, why: &str| {
            let error = check(r, b).expect_err("refused");
            assert!(error.contains(why), "{r} below {b}: {error}");
        };
        refused(2, 2, "from itself");
        refused(1, 2, "is a primary");
        refused(2, 1, "already replicates from");
        refused(2, 3, "replication loop");
        refused(4, 9, "not in");
        refused(4, 7, "not known");
    }
}
