//! Clusters: instances grouped by the replication tree they belong to. A cluster is
//! named after its primary's `host:port`, or after a configured alias when one of its
//! instances is listed under that alias. Pure: a snapshot in, clusters out.

use super::instance::{InstanceKey, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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

/// A configured alias: the cluster containing any of `instances` is called `alias`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterAlias {
    pub alias: String,
    pub instances: Vec<InstanceKey>,
}

/// Groups a snapshot into clusters, sorted by name.
pub fn build_clusters(snapshot: &Snapshot, aliases: &[ClusterAlias]) -> Vec<ClusterView> {
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

    apply_aliases(&mut clusters, aliases);
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    clusters
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
/// larger tree keeps it and the other is named by its primary.
fn apply_aliases(clusters: &mut [ClusterView], aliases: &[ClusterAlias]) {
    for alias in aliases {
        let best = clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| c.members.iter().any(|m| alias.instances.contains(m)))
            .max_by_key(|(_, c)| c.members.len())
            .map(|(index, _)| index);
        if let Some(index) = best {
            if clusters[index].alias.is_none() {
                clusters[index].alias = Some(alias.alias.clone());
                clusters[index].name = alias.alias.clone();
            }
        }
    }
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
    fn an_alias_names_the_larger_tree_that_contains_a_listed_instance() {
        let snapshot = Snapshot {
            instances: [primary(key(1)), primary(key(2)), replica(key(3), key(2))]
                .into_iter()
                .map(|i| (i.key.clone(), i))
                .collect(),
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
        };
        let clusters = build_clusters(&snapshot, &[]);
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0].primary, key(1));
        assert_eq!(clusters[0].members, vec![key(1), key(2), key(3)]);
    }
}
