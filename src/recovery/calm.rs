//! Which clusters the coordinator judges now. Judging thousands of unchanged healthy
//! clusters on every snapshot cost more than probing them, so every cluster is judged
//! at least every [`JUDGE_ALL_EVERY`] and whenever this agent starts or stops leading;
//! between those, only the clusters with something wrong at their last judgement, a
//! second primary, or a member that changed in substance since it was last looked at
//! (`substance`: whether it answers, its role, its replication threads, source and
//! errors — not the transactions and positions that move with every probe, whose
//! findings, lag and errant transactions, wait for the next judgement of all). "Since"
//! is read from the snapshot's version index (`Snapshot::changed_since`), so the cost
//! follows what changed, not the size of the fleet. Pure: the coordinator owns one
//! `Calm`.

use crate::topology::{ClusterView, Instance, InstanceKey, Snapshot};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every cluster is judged at least this often, changed or not (time alone changes some
/// verdicts: a replica's silence, a block period ending, another agent's lock).
pub const JUDGE_ALL_EVERY: Duration = Duration::from_secs(1);

/// The healthy clusters as last judged.
#[derive(Default)]
pub struct Calm {
    /// When every cluster was last judged, and whether this agent led then.
    all_at: Option<Instant>,
    leading: bool,
    /// The version and shape of the snapshot of the last choice (`Snapshot::version`).
    seen: Option<(u64, u64)>,
    /// Clusters not found healthy at their last judgement: judged every time.
    unsettled: HashSet<String>,
    /// Each instance's `substance` when it was last looked at.
    looked_at: HashMap<InstanceKey, u64>,
    /// Which cluster each instance and each name is in, for the grouping it was made
    /// from (rebuilt only when the grouping changes).
    index: Option<Index>,
}

struct Index {
    clusters: Arc<Vec<ClusterView>>,
    by_member: HashMap<InstanceKey, usize>,
    by_name: HashMap<String, usize>,
}

impl Index {
    fn of(clusters: &Arc<Vec<ClusterView>>) -> Self {
        let mut by_member = HashMap::new();
        let mut by_name = HashMap::new();
        for (at, cluster) in clusters.iter().enumerate() {
            by_name.insert(cluster.name.clone(), at);
            for member in &cluster.members {
                by_member.insert(member.clone(), at);
            }
        }
        Self {
            clusters: clusters.clone(),
            by_member,
            by_name,
        }
    }
}

impl Calm {
    /// The positions in `clusters` (the grouping of `snapshot`) to judge now; `doubled`
    /// names the clusters with a second primary.
    pub fn to_judge<'a>(
        &mut self,
        clusters: &Arc<Vec<ClusterView>>,
        snapshot: &Snapshot,
        doubled: impl IntoIterator<Item = &'a str>,
        leading: bool,
        now: Instant,
    ) -> Vec<usize> {
        let version = snapshot.version();
        let since = self.seen.and_then(|(seen, shape)| {
            (version != 0 && seen <= version && shape == snapshot.shape && shape != 0)
                .then_some(seen)
        });
        self.seen = Some((version, snapshot.shape));
        let due = self
            .all_at
            .is_none_or(|at| now.saturating_duration_since(at) >= JUDGE_ALL_EVERY);
        let (Some(since), false, true) = (since, due, self.leading == leading) else {
            self.all_at = Some(now);
            self.leading = leading;
            self.unsettled.clear();
            self.looked_at = snapshot
                .instances
                .iter()
                .map(|(key, instance)| (key.clone(), substance(instance)))
                .collect();
            return (0..clusters.len()).collect();
        };
        if !self
            .index
            .as_ref()
            .is_some_and(|index| Arc::ptr_eq(&index.clusters, clusters))
        {
            self.index = Some(Index::of(clusters));
        }
        let Some(index) = self.index.as_ref() else {
            return (0..clusters.len()).collect();
        };
        let mut chosen = BTreeSet::new();
        for key in snapshot.changed_since(since) {
            let now = snapshot.get(key).map(substance);
            if now.is_some() && self.looked_at.get(key) == now.as_ref() {
                continue;
            }
            if let Some(now) = now {
                self.looked_at.insert(key.clone(), now);
            }
            chosen.extend(index.by_member.get(key));
        }
        for name in self.unsettled.iter() {
            chosen.extend(index.by_name.get(name));
        }
        for name in doubled {
            chosen.extend(index.by_name.get(name));
        }
        chosen.into_iter().collect()
    }

    /// Notes how a cluster was judged: healthy, it is judged again only when a member
    /// changes (or at the next judgement of all); with a problem, at every judgement.
    pub fn judged(&mut self, cluster: &str, healthy: bool) {
        if healthy {
            self.unsettled.remove(cluster);
        } else {
            self.unsettled.insert(cluster.to_string());
        }
    }
}

/// What of an instance can turn its cluster's verdict at once, as one number: whether
/// it answers, its role and read_only, its semi-sync state, the replicas it names, and
/// as a replica its source, threads, errors and configured delay. Left out: what moves
/// with every probe (executed and received transactions, log positions, lag,
/// heartbeats, when it was seen) — judged at the next judgement of all, within
/// [`JUDGE_ALL_EVERY`].
fn substance(instance: &Instance) -> u64 {
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    instance.unreachable_since.is_some().hash(&mut hash);
    if let Some(facts) = &instance.facts {
        facts.server_id.hash(&mut hash);
        facts.server_uuid.hash(&mut hash);
        facts.read_only.hash(&mut hash);
        facts.super_read_only.hash(&mut hash);
        facts.persisted_read_only.hash(&mut hash);
        facts.log_bin.hash(&mut hash);
        facts.log_replica_updates.hash(&mut hash);
        let semi = &facts.semi_sync;
        (semi.source_enabled, semi.replica_enabled).hash(&mut hash);
        (semi.source_active, semi.replica_active).hash(&mut hash);
        (semi.source_clients, semi.timeout_ms).hash(&mut hash);
        facts.replicas.hash(&mut hash);
        if let Some(replication) = &facts.replication {
            replication.source.hash(&mut hash);
            replication.source_server_id.hash(&mut hash);
            std::mem::discriminant(&replication.io_running).hash(&mut hash);
            replication.sql_running.hash(&mut hash);
            replication.last_io_errno.hash(&mut hash);
            replication.last_sql_errno.hash(&mut hash);
            replication.sql_delay.hash(&mut hash);
            replication.gtid_auto_position.hash(&mut hash);
        }
    } else {
        0xfac7_u16.hash(&mut hash);
    }
    hash.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::instance::tests_support::{primary, replica};
    use crate::topology::{build_clusters, InstanceKey};

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    /// Two clusters of two, as discovery publishes them (versioned, with a shape).
    fn fleet() -> (Snapshot, Arc<Vec<ClusterView>>) {
        let mut snapshot = Snapshot::of([
            primary(key(1)),
            replica(key(2), key(1)),
            primary(key(3)),
            replica(key(4), key(3)),
        ]);
        snapshot.shape = 1;
        for port in 1..=4 {
            snapshot.set_version(&key(port), u64::from(port));
        }
        let clusters = Arc::new(build_clusters(&snapshot, &[]));
        (snapshot, clusters)
    }

    /// Where the cluster whose primary is `port` is in `clusters`.
    fn cluster_of(clusters: &[ClusterView], port: u16) -> usize {
        clusters
            .iter()
            .position(|c| c.primary == key(port))
            .expect("a cluster of that primary")
    }

    /// Every cluster judged, and found healthy.
    fn all_healthy(calm: &mut Calm, clusters: &[ClusterView]) {
        for cluster in clusters {
            calm.judged(&cluster.name, true);
        }
    }

    /// A replica's replication status, to change.
    fn replication_of(replica: &mut Instance) -> &mut crate::topology::ReplicationStatus {
        replica
            .facts
            .as_mut()
            .and_then(|facts| facts.replication.as_mut())
            .expect("a replica's replication status")
    }

    /// A probe result of `port` in which `change` happened (or nothing, when it does
    /// nothing), as discovery applies it: the facts, then a new version.
    fn probed(
        snapshot: &mut Snapshot,
        port: u16,
        version: u64,
        change: impl FnOnce(&mut Instance),
    ) {
        if let Some(instance) = snapshot.get_mut(&key(port)) {
            change(instance);
        }
        snapshot.set_version(&key(port), version);
    }

    #[test]
    fn a_healthy_cluster_is_judged_again_only_when_a_member_changed_in_substance() {
        let (mut snapshot, clusters) = fleet();
        let of_3 = cluster_of(&clusters, 3);
        let mut calm = Calm::default();
        let start = Instant::now();
        let choose = |calm: &mut Calm, snapshot: &Snapshot, leading: bool, after_ms: u64| {
            let now = start + Duration::from_millis(after_ms);
            calm.to_judge(&clusters, snapshot, [], leading, now)
        };
        assert_eq!(
            choose(&mut calm, &snapshot, true, 0),
            vec![0, 1],
            "at first: all"
        );
        all_healthy(&mut calm, &clusters);
        assert!(
            choose(&mut calm, &snapshot, true, 10).is_empty(),
            "nothing changed"
        );

        probed(&mut snapshot, 4, 5, |replica| {
            let replication = replication_of(replica);
            replication.seconds_behind_source = Some(7);
            replication.read_source_log_pos += 1000;
        });
        assert!(
            choose(&mut calm, &snapshot, true, 15).is_empty(),
            "4 was probed, and only its progress moved"
        );
        probed(&mut snapshot, 4, 6, |replica| {
            replication_of(replica).sql_running = false
        });
        assert_eq!(
            choose(&mut calm, &snapshot, true, 20),
            vec![of_3],
            "4's SQL thread stopped"
        );
        calm.judged(&clusters[of_3].name, false);
        assert_eq!(
            choose(&mut calm, &snapshot, true, 30),
            vec![of_3],
            "something is wrong: every time"
        );
        calm.judged(&clusters[of_3].name, true);
        assert!(choose(&mut calm, &snapshot, true, 40).is_empty());
        assert_eq!(
            choose(&mut calm, &snapshot, false, 50),
            vec![0, 1],
            "no longer leading: all of them"
        );
        assert!(choose(&mut calm, &snapshot, false, 60).is_empty());
        assert_eq!(
            choose(&mut calm, &snapshot, false, 1_050),
            vec![0, 1],
            "a second on: all of them"
        );
    }

    #[test]
    fn a_member_that_stops_answering_is_judged_at_once_and_again_when_it_answers() {
        let (mut snapshot, clusters) = fleet();
        let of_1 = cluster_of(&clusters, 1);
        let mut calm = Calm::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        calm.to_judge(&clusters, &snapshot, [], true, at(0));
        all_healthy(&mut calm, &clusters);
        probed(&mut snapshot, 1, 5, |primary| {
            primary.unreachable_since = Some(std::time::SystemTime::now());
        });
        assert_eq!(
            calm.to_judge(&clusters, &snapshot, [], true, at(10)),
            vec![of_1],
            "the primary stopped answering"
        );
        // Judged with everything else a second on, still not answering...
        assert_eq!(
            calm.to_judge(&clusters, &snapshot, [], true, at(1_010))
                .len(),
            clusters.len()
        );
        all_healthy(&mut calm, &clusters);
        probed(&mut snapshot, 1, 6, |_| {});
        assert!(calm
            .to_judge(&clusters, &snapshot, [], true, at(1_020))
            .is_empty());
        // ...and at once when it answers again.
        probed(&mut snapshot, 1, 7, |primary| {
            primary.unreachable_since = None
        });
        assert_eq!(
            calm.to_judge(&clusters, &snapshot, [], true, at(1_030)),
            vec![of_1],
            "the primary answers again"
        );
    }

    #[test]
    fn second_primaries_and_snapshots_made_by_hand_are_always_judged() {
        let (snapshot, clusters) = fleet();
        let mut calm = Calm::default();
        let now = Instant::now();
        calm.to_judge(&clusters, &snapshot, [], true, now);
        let doubled = clusters[1].name.clone();
        assert_eq!(
            calm.to_judge(&clusters, &snapshot, [doubled.as_str()], true, now),
            vec![1]
        );
        let by_hand = Snapshot::of([primary(key(1)), replica(key(2), key(1))]);
        let grouped = Arc::new(build_clusters(&by_hand, &[]));
        assert_eq!(calm.to_judge(&grouped, &by_hand, [], true, now), vec![0]);
        assert_eq!(calm.to_judge(&grouped, &by_hand, [], true, now), vec![0]);
    }

    #[test]
    fn instances_that_come_or_go_make_every_cluster_judged() {
        let (mut snapshot, clusters) = fleet();
        let mut calm = Calm::default();
        let now = Instant::now();
        calm.to_judge(&clusters, &snapshot, [], true, now);
        assert!(calm
            .to_judge(&clusters, &snapshot, [], true, now)
            .is_empty());
        snapshot.remove(&key(4));
        snapshot.shape += 1;
        let regrouped = Arc::new(build_clusters(&snapshot, &[]));
        assert_eq!(
            calm.to_judge(&regrouped, &snapshot, [], true, now).len(),
            regrouped.len()
        );
    }
}
