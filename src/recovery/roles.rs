//! Keeping each server's role true across its own restarts.
//!
//! An old primary that restarts must not take writes: applications may still be aimed
//! at it, and what it accepts becomes errant transactions. So the read-only role is
//! made durable on the servers themselves wherever the server can hold it:
//!
//! - **MySQL** persists it (`SET PERSIST_ONLY read_only=ON, super_read_only=ON`, into
//!   `mysqld-auto.cnf`) on every instance — on the primary too, whose *running* value
//!   stays writable. Any MySQL server pointsman watches therefore starts read-only,
//!   whatever it was before.
//! - **MariaDB** cannot persist a variable; the README asks for `read_only=ON` in every
//!   server's own configuration, and a fenced old primary that does not answer is
//!   probed every 100 ms so it is fenced the moment it answers (`coordinator`).
//!
//! The price is that a primary that restarts *without* a failover (a quick restart, or
//! one while downtimed) comes back read-only. [`WriterMemory`] notices exactly that —
//! a primary seen writable, then gone, then back read-only with replicas still
//! following it and no fence on it — and the coordinator gives it its writes back.
//!
//! This module holds the pure judgements; the coordinator acts on them.

use crate::topology::{ClusterView, Instance, InstanceKey, ServerFlavor, Snapshot};
use std::collections::HashSet;

/// The MySQL instances (reachable, and known to lack it) whose read-only role is not
/// persisted yet.
pub fn unpersisted(snapshot: &Snapshot, cluster: &ClusterView) -> Vec<InstanceKey> {
    cluster
        .members
        .iter()
        .filter(|key| {
            snapshot.get(key).is_some_and(|instance| {
                instance.is_reachable()
                    && instance.facts.as_ref().is_some_and(|facts| {
                        facts.flavor == ServerFlavor::Mysql
                            && facts.persisted_read_only == Some(false)
                    })
            })
        })
        .cloned()
        .collect()
}

/// Which primaries were writable before they went away, from one snapshot to the next.
#[derive(Debug, Default)]
pub struct WriterMemory {
    /// Seen as a writable primary (no source) at the last look.
    writable: HashSet<InstanceKey>,
    /// Writable primaries that stopped answering and have not been seen since.
    gone: HashSet<InstanceKey>,
    /// Of those, the ones back read-only, until they are dealt with (`settled`) or stop
    /// being read-only primaries.
    back: HashSet<InstanceKey>,
    /// The version and shape of the snapshot looked at last (`Snapshot::version`): the
    /// next look reads only the instances probed since, unless instances came or went.
    seen: Option<(u64, u64)>,
}

impl WriterMemory {
    /// Takes in one snapshot; returns the primaries that were writable, went away, and
    /// came back read-only (restarted servers, to be judged by
    /// [`restarted_without_failover`]) and are not settled yet.
    pub fn observe(&mut self, snapshot: &Snapshot) -> Vec<InstanceKey> {
        let version = snapshot.version();
        // An older snapshot than the last one seen (the coordinator and the recovery
        // lane each look at their own) has nothing new: not walked again.
        let older = self
            .seen
            .is_some_and(|(seen, _)| version != 0 && version < seen);
        let since = self.seen.and_then(|(seen, shape)| {
            (version != 0 && seen <= version && shape == snapshot.shape).then_some(seen)
        });
        match since {
            _ if older => return self.settling(),
            Some(seen) => {
                for key in snapshot.changed_since(seen) {
                    if let Some(instance) = snapshot.get(key) {
                        self.look_at(instance);
                    }
                }
            }
            None => snapshot
                .instances
                .values()
                .for_each(|instance| self.look_at(instance)),
        }
        self.seen = Some((version, snapshot.shape));
        self.settling()
    }

    /// The primaries that came back read-only and are not settled yet, in order, as
    /// the last snapshot observed showed them.
    pub fn settling(&self) -> Vec<InstanceKey> {
        let mut back: Vec<InstanceKey> = self.back.iter().cloned().collect();
        back.sort();
        back
    }

    /// Takes in one instance as the snapshot shows it (looking again at one that did not
    /// change changes nothing).
    fn look_at(&mut self, instance: &Instance) {
        let key = &instance.key;
        let Some(facts) = instance.facts.as_ref() else {
            return;
        };
        if !instance.is_reachable() {
            if self.writable.remove(key) || self.back.remove(key) {
                self.gone.insert(key.clone());
            }
            return;
        }
        let read_only = facts.read_only || facts.super_read_only == Some(true);
        let primary = facts.replication.is_none();
        if self.gone.remove(key) && read_only && primary {
            self.back.insert(key.clone());
        }
        if !(read_only && primary) {
            self.back.remove(key);
        }
        if primary && !read_only {
            self.writable.insert(key.clone());
        } else {
            self.writable.remove(key);
        }
    }

    /// `key` was dealt with (given its writes back, or judged to stay read-only).
    pub fn settled(&mut self, key: &InstanceKey) {
        self.back.remove(key);
    }
}

/// Whether `key`, a primary that came back read-only, restarted without a failover and
/// so should take writes again: it is the primary of its cluster, at least one replica
/// still replicates from it (a failover would have moved them), and it is not fenced. A
/// primary without replicas is left read-only: nothing shows that no failover replaced
/// it, and a stale writable primary is worse than a read-only one.
pub fn restarted_without_failover(
    key: &InstanceKey,
    snapshot: &Snapshot,
    clusters: &[ClusterView],
    fenced: &[InstanceKey],
) -> bool {
    if fenced.contains(key) {
        return false;
    }
    let Some(cluster) = clusters.iter().find(|c| &c.primary == key) else {
        return false;
    };
    cluster.members.iter().any(|member| {
        snapshot
            .get(member)
            .is_some_and(|i| i.is_reachable() && i.source() == Some(key))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::build_clusters;
    use crate::topology::instance::tests_support::{primary, replica};
    use crate::topology::Instance;
    use std::time::SystemTime;

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    fn snapshot(instances: Vec<Instance>) -> Snapshot {
        Snapshot::of(instances)
    }

    fn gone(mut instance: Instance) -> Instance {
        instance.unreachable_since = Some(SystemTime::now());
        instance
    }

    fn read_only(mut instance: Instance) -> Instance {
        let facts = instance.facts.as_mut().expect("facts");
        facts.read_only = true;
        facts.super_read_only = Some(true);
        instance
    }

    #[test]
    fn a_primary_back_read_only_after_an_outage_is_noticed_until_settled() {
        let mut memory = WriterMemory::default();
        let healthy = snapshot(vec![primary(key(1)), replica(key(2), key(1))]);
        assert!(memory.observe(&healthy).is_empty());
        let down = snapshot(vec![gone(primary(key(1))), replica(key(2), key(1))]);
        assert!(memory.observe(&down).is_empty());
        let back = snapshot(vec![read_only(primary(key(1))), replica(key(2), key(1))]);
        assert_eq!(memory.observe(&back), vec![key(1)]);
        assert_eq!(memory.observe(&back), vec![key(1)], "until settled");
        memory.settled(&key(1));
        assert!(memory.observe(&back).is_empty());
        let clusters = build_clusters(&back, &[]);
        assert!(restarted_without_failover(&key(1), &back, &clusters, &[]));
        assert!(
            !restarted_without_failover(&key(1), &back, &clusters, &[key(1)]),
            "a fenced old primary stays read-only"
        );
    }

    /// The primary 1 and its replica 2 as discovery publishes them, probed at the
    /// given versions.
    fn probed_pair(primary_version: u64, replica_version: u64) -> Snapshot {
        let mut pair = snapshot(vec![primary(key(1)), replica(key(2), key(1))]);
        pair.shape = 1;
        pair.set_version(&key(1), primary_version);
        pair.set_version(&key(2), replica_version);
        pair
    }

    #[test]
    fn between_snapshots_of_discovery_only_the_instances_probed_since_are_read() {
        let mut memory = WriterMemory::default();
        let mut snapshot = probed_pair(1, 2);
        assert!(memory.observe(&snapshot).is_empty());

        // Changed without a new version: not read again, so not noticed.
        snapshot.get_mut(&key(1)).expect("known").unreachable_since = Some(SystemTime::now());
        assert!(memory.observe(&snapshot).is_empty());
        snapshot.set_version(&key(1), 3);
        assert!(memory.observe(&snapshot).is_empty(), "gone");
        let back = snapshot.get_mut(&key(1)).expect("known");
        back.unreachable_since = None;
        back.facts.as_mut().expect("facts").read_only = true;
        snapshot.set_version(&key(1), 4);
        assert_eq!(memory.observe(&snapshot), vec![key(1)], "back read-only");
        assert_eq!(snapshot.version(), 4);
        assert_eq!(snapshot.changed_since(2).collect::<Vec<_>>(), vec![&key(1)]);
    }

    #[test]
    fn an_older_snapshot_than_the_last_seen_teaches_nothing() {
        let mut memory = WriterMemory::default();
        let newer = probed_pair(5, 6);
        let mut older = newer.clone();
        older.set_version(&key(2), 0);
        older.get_mut(&key(1)).expect("known").unreachable_since = Some(SystemTime::now());
        assert!(memory.observe(&newer).is_empty());
        // Another caller's older view (1 down) is not taken for news: 1 never went
        // away, so read_only set on it later is not a restart to undo.
        assert_eq!(older.version(), 5);
        assert!(memory.observe(&older).is_empty());
        let mut later = newer.clone();
        let facts = later.get_mut(&key(1)).expect("known").facts.as_mut();
        facts.expect("facts").read_only = true;
        later.set_version(&key(1), 7);
        assert!(memory.observe(&later).is_empty(), "not back: never gone");
    }

    #[test]
    fn read_only_set_on_a_running_primary_is_not_a_restart() {
        let mut memory = WriterMemory::default();
        memory.observe(&snapshot(vec![primary(key(1)), replica(key(2), key(1))]));
        let set_by_hand = snapshot(vec![read_only(primary(key(1))), replica(key(2), key(1))]);
        assert!(memory.observe(&set_by_hand).is_empty());
    }

    #[test]
    fn a_primary_without_replicas_or_replaced_stays_read_only() {
        // Its replicas moved to another primary while it was away: a failover happened.
        let moved = snapshot(vec![
            read_only(primary(key(1))),
            primary(key(2)),
            replica(key(3), key(2)),
        ]);
        let clusters = build_clusters(&moved, &[]);
        assert!(!restarted_without_failover(&key(1), &moved, &clusters, &[]));
        let alone = snapshot(vec![read_only(primary(key(1)))]);
        let clusters = build_clusters(&alone, &[]);
        assert!(!restarted_without_failover(&key(1), &alone, &clusters, &[]));
    }

    #[test]
    fn only_mysql_instances_lacking_the_persisted_role_are_listed() {
        let mut lacking = replica(key(2), key(1));
        lacking.facts.as_mut().expect("facts").persisted_read_only = Some(false);
        let mut mariadb = replica(key(3), key(1));
        let facts = mariadb.facts.as_mut().expect("facts");
        facts.flavor = ServerFlavor::Mariadb;
        facts.persisted_read_only = None;
        let all = snapshot(vec![primary(key(1)), lacking, mariadb]);
        let clusters = build_clusters(&all, &[]);
        assert_eq!(unpersisted(&all, &clusters[0]), vec![key(2)]);
    }
}
