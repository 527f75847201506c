//! The shapes the API returns and the CLI reads: clusters with their health, one
//! cluster's tree with every instance and its findings. Built purely from a snapshot,
//! the configured aliases and rules, and `now`.

use crate::analysis::{cluster_findings, summarize, Finding, FindingRules, HealthSummary};
use crate::topology::cluster::ClusterAlias;
use crate::topology::{build_clusters, ClusterTreeNode, Instance, InstanceKey, Snapshot};
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// One line of the cluster list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterSummary {
    pub name: String,
    pub alias: Option<String>,
    pub primary: InstanceKey,
    pub instance_count: usize,
    pub health: HealthSummary,
}

/// What an instance is in its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    /// A replica that other replicas replicate from.
    IntermediatePrimary,
    Replica,
}

/// An instance with its place in the cluster and what was found on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub cluster: String,
    pub role: Role,
    #[serde(flatten)]
    pub instance: Instance,
    pub findings: Vec<Finding>,
}

/// One cluster in full.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterDetail {
    pub name: String,
    pub alias: Option<String>,
    pub primary: InstanceKey,
    pub health: HealthSummary,
    pub tree: ClusterTreeNode,
    pub instances: Vec<InstanceView>,
    pub findings: Vec<Finding>,
}

impl ClusterDetail {
    pub fn summary(&self) -> ClusterSummary {
        ClusterSummary {
            name: self.name.clone(),
            alias: self.alias.clone(),
            primary: self.primary.clone(),
            instance_count: self.instances.len(),
            health: self.health.clone(),
        }
    }

    pub fn instance(&self, key: &InstanceKey) -> Option<&InstanceView> {
        self.instances.iter().find(|view| &view.instance.key == key)
    }
}

/// Every cluster in the snapshot, in full, sorted by name.
pub fn cluster_details(
    snapshot: &Snapshot,
    aliases: &[ClusterAlias],
    rules: &FindingRules,
    now: SystemTime,
) -> Vec<ClusterDetail> {
    build_clusters(snapshot, aliases)
        .into_iter()
        .map(|cluster| {
            let findings = cluster_findings(&cluster, snapshot, rules, now);
            let instances = cluster
                .members
                .iter()
                .map(|key| {
                    let instance = snapshot
                        .get(key)
                        .cloned()
                        .unwrap_or_else(|| Instance::new(key.clone()));
                    let role = if *key == cluster.primary {
                        Role::Primary
                    } else if has_replicas(&cluster.tree, key) {
                        Role::IntermediatePrimary
                    } else {
                        Role::Replica
                    };
                    InstanceView {
                        cluster: cluster.name.clone(),
                        role,
                        findings: findings
                            .iter()
                            .filter(|f| &f.instance == key)
                            .cloned()
                            .collect(),
                        instance,
                    }
                })
                .collect();
            ClusterDetail {
                health: summarize(&findings),
                name: cluster.name,
                alias: cluster.alias,
                primary: cluster.primary,
                tree: cluster.tree,
                instances,
                findings,
            }
        })
        .collect()
}

fn has_replicas(node: &ClusterTreeNode, key: &InstanceKey) -> bool {
    if &node.key == key {
        return !node.replicas.is_empty();
    }
    node.replicas.iter().any(|child| has_replicas(child, key))
}
