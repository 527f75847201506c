//! Clusters: instances grouped by the replication tree they belong to. A cluster is
//! named after its primary's `host:port`, or after a configured alias when one of its
//! instances is listed under that alias: the largest such tree (of two as large, the
//! one whose primary takes writes), never one whose writable primary is a stale copy of
//! another's. Pure: a snapshot in, clusters out.

use super::instance::{InstanceFacts, InstanceKey, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// One replication tree: the primary at its root, every replica below its source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterView {
    /// The alias if one applies, else the primary's `host:port`.
    pub name: String,
    pub alias: Option<String>,
    /// The root of the tree: the instance that replicates from no one (it may be
    /// unreachable, or not yet probed, and still be the primary everyone points at).
    pub primary: InstanceKey,
    /// Every instance in the tree, the primary first, then replicas in tree order.
    pub members: Vec<InstanceKey>,
    pub tree: ClusterTreeNode,
}

/// A node of the replication tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterTreeNode {
    pub key: InstanceKey,
    pub replicas: Vec<ClusterTreeNode>,
}

impl ClusterTreeNode {
    /// The node of `key` in this tree.
    pub fn find(&self, key: &InstanceKey) -> Option<&ClusterTreeNode> {
        if &self.key == key {
            return Some(self);
        }
        self.replicas.iter().find_map(|r| r.find(key))
    }
}

/// A configured alias: the cluster containing any of `instances` is called `alias`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterAlias {
    pub alias: String,
    pub instances: Vec<InstanceKey>,
}

/// Groups a snapshot into clusters, sorted by name.
pub fn build_clusters(snapshot: &Snapshot, aliases: &[ClusterAlias]) -> Vec<ClusterView> {
    group(snapshot, aliases).0
}

/// The clusters and whether their names rest on more than the trees' shape (an alias
/// two trees claim goes to the one whose primary takes writes, which facts decide).
fn group(snapshot: &Snapshot, aliases: &[ClusterAlias]) -> (Vec<ClusterView>, bool) {
    let roots: BTreeSet<InstanceKey> = snapshot
        .instances
        .keys()
        .map(|key| root_of(snapshot, key))
        .collect();

    let mut children: BTreeMap<&InstanceKey, Vec<&InstanceKey>> = BTreeMap::new();
    for (key, instance) in &snapshot.instances {
        if let Some(source) = instance.source() {
            if source != key {
                children.entry(source).or_default().push(key);
            }
        }
    }

    let mut clusters: Vec<ClusterView> = roots
        .into_iter()
        .map(|root| {
            let mut visited = BTreeSet::new();
            let tree = grow_tree(&root, &children, &mut visited);
            let mut members = Vec::new();
            flatten(&tree, &mut members);
            ClusterView {
                name: root.to_string(),
                alias: None,
                primary: root,
                members,
                tree,
            }
        })
        .collect();

    let facts_matter = apply_aliases(&mut clusters, aliases, snapshot);
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    (clusters, facts_matter)
}

/// The clusters of the last snapshot asked about, kept while the trees keep their shape
/// (`Snapshot::shape`): snapshots come after every batch of probes, and regrouping
/// thousands of instances for each would cost more than the probes. Shared by whoever
/// groups the same snapshots with the same aliases (the coordinator, routing, the API).
#[derive(Default)]
pub struct ClusterMemo {
    last: std::sync::Mutex<Option<Grouped>>,
}

struct Grouped {
    shape: u64,
    aliases: Vec<ClusterAlias>,
    clusters: Arc<Vec<ClusterView>>,
}

impl ClusterMemo {
    /// As `build_clusters`, done again only when the shape or the aliases changed (or
    /// facts decide a contested alias, or the snapshot's shape is unknown).
    pub fn clusters(&self, snapshot: &Snapshot, aliases: &[ClusterAlias]) -> Arc<Vec<ClusterView>> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(grouped) = last.as_ref() {
            if snapshot.shape != 0 && grouped.shape == snapshot.shape && grouped.aliases == aliases
            {
                return grouped.clusters.clone();
            }
        }
        let (clusters, facts_matter) = group(snapshot, aliases);
        let clusters = Arc::new(clusters);
        // A caller still on an older snapshot does not push out the grouping of a
        // newer one (the coordinator and the recovery lane each hold their own).
        if last.as_ref().is_some_and(|grouped| {
            !facts_matter && grouped.aliases == aliases && grouped.shape > snapshot.shape
        }) {
            return clusters;
        }
        *last = (!facts_matter).then(|| Grouped {
            shape: snapshot.shape,
            aliases: aliases.to_vec(),
            clusters: clusters.clone(),
        });
        clusters
    }
}

/// Follows sources upwards. A cycle (co-primaries) is rooted at its smallest key so
/// every member agrees on the same root.
fn root_of(snapshot: &Snapshot, key: &InstanceKey) -> InstanceKey {
    let mut path = vec![key.clone()];
    let mut current = key.clone();
    loop {
        let Some(source) = snapshot.get(&current).and_then(|i| i.source()).cloned() else {
            return current;
        };
        if let Some(position) = path.iter().position(|k| *k == source) {
            return path[position..]
                .iter()
                .min()
                .cloned()
                .expect("a cycle has at least one member");
        }
        path.push(source.clone());
        current = source;
    }
}

fn grow_tree(
    key: &InstanceKey,
    children: &BTreeMap<&InstanceKey, Vec<&InstanceKey>>,
    visited: &mut BTreeSet<InstanceKey>,
) -> ClusterTreeNode {
    visited.insert(key.clone());
    let replicas = children
        .get(key)
        .map(|list| {
            list.iter()
                .filter(|child| !visited.contains(**child))
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|child| grow_tree(child, children, visited))
        .collect();
    ClusterTreeNode {
        key: key.clone(),
        replicas,
    }
}

fn flatten(node: &ClusterTreeNode, into: &mut Vec<InstanceKey>) {
    into.push(node.key.clone());
    for replica in &node.replicas {
        flatten(replica, into);
    }
}

/// When two trees claim the same alias (an old primary that left the tree, say), the
/// larger tree keeps it and the other is named by its primary. True if any alias was
/// claimed by two trees: then the facts (which root takes writes) decided.
fn apply_aliases(
    clusters: &mut [ClusterView],
    aliases: &[ClusterAlias],
    snapshot: &Snapshot,
) -> bool {
    if aliases.is_empty() {
        return false;
    }
    let cluster_of: HashMap<&InstanceKey, usize> = clusters
        .iter()
        .enumerate()
        .flat_map(|(index, c)| c.members.iter().map(move |m| (m, index)))
        .collect();
    let mut naming: Vec<Option<&str>> = vec![None; clusters.len()];
    let mut facts_matter = false;
    for alias in aliases {
        let candidates: BTreeSet<usize> = alias
            .instances
            .iter()
            .filter_map(|key| cluster_of.get(key).copied())
            .collect();
        facts_matter |= candidates.len() > 1;
        // Never a writable root that is a stale copy of another candidate's writable
        // root (an old primary back writable after a failover its agent forgot):
        // routes must not follow it, however large its tree. Then the larger tree; of
        // two as large (the two halves of a two-server cluster after a failover), the
        // one whose root takes writes.
        let stale = |index: usize| {
            let Some(mine) = writable_root(snapshot, &clusters[index].primary) else {
                return false;
            };
            candidates.iter().any(|&other| {
                other != index
                    && writable_root(snapshot, &clusters[other].primary)
                        .is_some_and(|theirs| mine.gtid.strictly_behind(&theirs.gtid))
            })
        };
        let best = candidates.iter().copied().max_by_key(|&index| {
            (
                !stale(index),
                clusters[index].members.len(),
                writable_root(snapshot, &clusters[index].primary).is_some(),
            )
        });
        if let Some(index) = best {
            naming[index].get_or_insert(&alias.alias);
        }
    }
    for (cluster, alias) in clusters.iter_mut().zip(naming) {
        if let Some(alias) = alias {
            cluster.alias = Some(alias.to_string());
            cluster.name = alias.to_string();
        }
    }
    facts_matter
}

/// The facts of `key` if it answers and takes writes as a primary: no source, read_only
/// (and super_read_only) off.
pub fn writable_root<'a>(snapshot: &'a Snapshot, key: &InstanceKey) -> Option<&'a InstanceFacts> {
    let instance = snapshot.get(key).filter(|i| i.is_reachable())?;
    let facts = instance.facts.as_ref()?;
    (facts.replication.is_none() && !facts.read_only && facts.super_read_only != Some(true))
        .then_some(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::instance::tests_support::{primary, replica};

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    #[test]
    fn a_chain_and_a_separate_primary_form_two_clusters() {
        let snapshot = Snapshot {
            instances: [
                primary(key(1)),
                replica(key(2), key(1)),
                replica(key(3), key(2)),
                primary(key(9)),
            ]
            .into_iter()
            .map(|i| (i.key.clone(), i))
            .collect(),
            ..Snapshot::default()
        };
        let clusters = build_clusters(&snapshot, &[]);
        assert_eq!(clusters.len(), 2);
        let first = &clusters[0];
        assert_eq!(first.name, "127.0.0.1:1");
        assert_eq!(first.members, vec![key(1), key(2), key(3)]);
        assert_eq!(first.tree.replicas[0].key, key(2));
        assert_eq!(first.tree.replicas[0].replicas[0].key, key(3));
        assert_eq!(clusters[1].members, vec![key(9)]);
    }

    #[test]
    fn clusters_are_grouped_again_only_when_the_trees_change_shape() {
        let one = |shape: u64, third_source: u16| Snapshot {
            instances: [
                primary(key(1)),
                replica(key(2), key(1)),
                replica(key(3), key(third_source)),
            ]
            .into_iter()
            .map(|i| (i.key.clone(), i))
            .collect(),
            shape,
            ..Snapshot::default()
        };
        let aliases = [ClusterAlias {
            alias: "demo".into(),
            instances: vec![key(1)],
        }];
        let memo = ClusterMemo::default();
        let first = memo.clusters(&one(7, 1), &aliases);
        assert_eq!(first[0].name, "demo");
        assert!(Arc::ptr_eq(&first, &memo.clusters(&one(7, 1), &aliases)));
        // Other aliases, another shape: grouped again, and right.
        let unaliased = memo.clusters(&one(7, 1), &[]);
        assert_eq!(unaliased[0].name, "127.0.0.1:1");
        let moved = memo.clusters(&one(8, 2), &aliases);
        assert!(!Arc::ptr_eq(&first, &moved));
        assert_eq!(moved[0].tree.replicas[0].replicas[0].key, key(3));
        // A caller on an older snapshot gets that snapshot's clusters, and the newer
        // grouping stays for the others.
        let older = memo.clusters(&one(7, 1), &aliases);
        assert_eq!(older[0].tree.replicas[0].replicas.len(), 0);
        assert!(Arc::ptr_eq(&moved, &memo.clusters(&one(8, 2), &aliases)));
        // An unknown shape is never taken for a known one.
        let unknown = memo.clusters(&one(0, 1), &aliases);
        assert!(!Arc::ptr_eq(&unknown, &memo.clusters(&one(0, 1), &aliases)));
    }

    #[test]
    fn a_contested_alias_is_decided_again_every_time() {
        // Two trees claim the alias: which one takes it rests on facts, not the shape.
        let snapshot = Snapshot {
            instances: [primary(key(1)), primary(key(2))]
                .into_iter()
                .map(|i| (i.key.clone(), i))
                .collect(),
            shape: 5,
            ..Snapshot::default()
        };
        let aliases = [ClusterAlias {
            alias: "demo".into(),
            instances: vec![key(1), key(2)],
        }];
        let memo = ClusterMemo::default();
        let first = memo.clusters(&snapshot, &aliases);
        assert!(!Arc::ptr_eq(&first, &memo.clusters(&snapshot, &aliases)));
    }

    #[test]
    fn a_stale_writable_primary_never_takes_the_alias_however_large_its_tree() {
        use crate::topology::instance::tests_support::with_gtids;
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        // The old primary came back writable with its old replica still under it; the
        // new primary, alone, has everything it had and more.
        let snapshot = Snapshot {
            instances: [
                with_gtids(primary(key(1)), &format!("{uuid}:1-10")),
                replica(key(3), key(1)),
                with_gtids(primary(key(2)), &format!("{uuid}:1-12")),
            ]
            .into_iter()
            .map(|i| (i.key.clone(), i))
            .collect(),
            ..Snapshot::default()
        };
        let aliases = [ClusterAlias {
            alias: "demo".into(),
            instances: vec![key(1), key(2), key(3)],
        }];
        let clusters = build_clusters(&snapshot, &aliases);
        let named = clusters.iter().find(|c| c.name == "demo").expect("demo");
        assert_eq!(named.primary, key(2));
    }

    #[test]
    fn an_alias_names_the_larger_tree_that_contains_a_listed_instance() {
        let snapshot = Snapshot {
            instances: [primary(key(1)), primary(key(2)), replica(key(3), key(2))]
                .into_iter()
                .map(|i| (i.key.clone(), i))
                .collect(),
            ..Snapshot::default()
        };
        let aliases = [ClusterAlias {
            alias: "demo".into(),
            instances: vec![key(1), key(2), key(3)],
        }];
        let clusters = build_clusters(&snapshot, &aliases);
        let demo = clusters.iter().find(|c| c.name == "demo").expect("aliased");
        assert_eq!(demo.primary, key(2));
        assert!(clusters.iter().any(|c| c.name == "127.0.0.1:1"));
    }

    #[test]
    fn co_primaries_share_one_cluster() {
        let snapshot = Snapshot {
            instances: [replica(key(1), key(2)), replica(key(2), key(1))]
                .into_iter()
                .map(|i| (i.key.clone(), i))
                .collect(),
            ..Snapshot::default()
        };
        let clusters = build_clusters(&snapshot, &[]);
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0].primary, key(1));
        assert_eq!(clusters[0].members.len(), 2);
    }

    #[test]
    fn replicas_of_an_unknown_source_are_grouped_under_it() {
        let snapshot = Snapshot {
            instances: [replica(key(2), key(1)), replica(key(3), key(1))]
                .into_iter()
                .map(|i| (i.key.clone(), i))
                .collect(),
            ..Snapshot::default()
        };
        let clusters = build_clusters(&snapshot, &[]);
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0].primary, key(1));
        assert_eq!(clusters[0].members, vec![key(1), key(2), key(3)]);
    }
}
