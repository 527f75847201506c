//! The shapes the API returns and the CLI reads: clusters with their health, one
//! cluster's tree with every instance and its findings. Built purely from a snapshot,
//! the configured aliases and rules, and `now`.

use crate::analysis::{
    cluster_findings, cluster_problems, summarize, Finding, HealthSummary, Problem, ProblemRules,
};
use crate::store::recovery::Downtime;
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
    /// An old primary fenced by a failover, outside the replication tree.
    FencedPrimary,
}

/// An instance with its place in the cluster and what was found on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub cluster: String,
    pub role: Role,
    #[serde(flatten)]
    pub instance: Instance,
    pub findings: Vec<Finding>,
    /// An old primary fenced by a failover: kept read_only until re-attached.
    #[serde(default)]
    pub fenced: bool,
    /// Out of automatic recovery until then.
    #[serde(default, with = "crate::topology::time::option")]
    pub downtimed_until: Option<SystemTime>,
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
    /// Failover-level judgements (DeadPrimary, UnreachablePrimary, ...).
    pub problems: Vec<Problem>,
    /// Why automatic recovery is refused for a failure now (blocked, not in
    /// auto_clusters, downtimed, switched off), so nobody waits for a failover that
    /// will not come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_refused: Option<String>,
}

/// What the store knows about instances beyond the snapshot.
#[derive(Clone, Debug, Default)]
pub struct InstanceMarks {
    pub fenced: Vec<FencedMark>,
    pub downtimes: Vec<Downtime>,
}

/// A fenced old primary, and where it belongs.
#[derive(Clone, Debug)]
pub struct FencedMark {
    pub instance: InstanceKey,
    /// The cluster's name when it was fenced.
    pub cluster: String,
    /// The instance that replaced it.
    pub successor: Option<InstanceKey>,
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
    rules: &ProblemRules,
    marks: &InstanceMarks,
    now: SystemTime,
) -> Vec<ClusterDetail> {
    let clusters = build_clusters(snapshot, aliases);
    let doubled = crate::analysis::multiple_primaries(&clusters, snapshot, aliases);
    let details = clusters
        .into_iter()
        .map(|cluster| {
            let findings = cluster_findings(&cluster, snapshot, &rules.findings, now);
            let mut problems = cluster_problems(&cluster, snapshot, rules, now);
            problems.extend(
                doubled
                    .iter()
                    .filter(|p| p.cluster == cluster.name)
                    .cloned(),
            );
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
                        fenced: marks.fenced.iter().any(|f| &f.instance == key),
                        downtimed_until: marks
                            .downtimes
                            .iter()
                            .find(|d| &d.instance == key)
                            .map(|d| d.until),
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
                problems,
                recovery_refused: None,
            }
        })
        .collect();
    fold_fenced(details, marks)
}

/// A fenced old primary replicates from no one, so it forms a tree of its own; it is
/// shown inside the cluster it was fenced from instead, outside that cluster's tree.
fn fold_fenced(mut details: Vec<ClusterDetail>, marks: &InstanceMarks) -> Vec<ClusterDetail> {
    for mark in &marks.fenced {
        let Some(alone) = details
            .iter()
            .position(|d| d.primary == mark.instance && d.instances.len() == 1)
        else {
            continue;
        };
        let home = details.iter().position(|d| {
            d.primary != mark.instance
                && (d.name == mark.cluster
                    || mark
                        .successor
                        .as_ref()
                        .is_some_and(|s| d.instance(s).is_some()))
        });
        let Some(mut home) = home else {
            continue;
        };
        let alone_detail = details.remove(alone);
        if alone < home {
            home -= 1;
        }
        let alone = alone_detail;
        let target = &mut details[home];
        // Read-only is what fencing is for: not a finding on a fenced old primary.
        let expected = |f: &Finding| f.code == crate::analysis::FindingCode::PrimaryReadOnly;
        for mut view in alone.instances {
            view.role = Role::FencedPrimary;
            view.cluster = target.name.clone();
            view.findings.retain(|f| !expected(f));
            if view.instance.is_reachable() {
                // Safe, but not done: it holds data nobody reads until an operator acts.
                let key = &view.instance.key;
                let back = Finding {
                    code: crate::analysis::FindingCode::FencedDetached,
                    severity: crate::analysis::Severity::Warning,
                    instance: key.clone(),
                    message: format!(
                        "the fenced old primary {key} is back and answers, but replicates from nobody: `pointsman reattach {key}` makes it a replica of the new primary (if it has no transactions the new primary lacks), or `pointsman forget {key} --unfence` drops it"
                    ),
                    detail: None,
                };
                view.findings.push(back.clone());
                target.findings.push(back);
            }
            target.instances.push(view);
        }
        target
            .findings
            .extend(alone.findings.into_iter().filter(|f| !expected(f)));
        target.health = summarize(&target.findings);
    }
    details
}

fn has_replicas(node: &ClusterTreeNode, key: &InstanceKey) -> bool {
    if &node.key == key {
        return !node.replicas.is_empty();
    }
    node.replicas.iter().any(|child| has_replicas(child, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{FindingCode, HealthStatus};
    use crate::topology::instance::tests_support::{primary, replica};

    #[test]
    fn a_fenced_old_primary_is_shown_inside_the_cluster_it_left() {
        let key = |port| InstanceKey::new("127.0.0.1", port);
        let mut old = primary(key(1));
        old.unreachable_since = Some(SystemTime::now());
        let snapshot = Snapshot {
            instances: [old, primary(key(2)), replica(key(3), key(2))]
                .into_iter()
                .map(|i| (i.key.clone(), i))
                .collect(),
        };
        let rules = ProblemRules::default();
        let marks = InstanceMarks {
            fenced: vec![FencedMark {
                instance: key(1),
                cluster: "127.0.0.1:1".into(),
                successor: Some(key(2)),
            }],
            downtimes: Vec::new(),
        };
        let details = cluster_details(&snapshot, &[], &rules, &marks, SystemTime::now());
        assert_eq!(
            details.len(),
            1,
            "{:?}",
            details.iter().map(|d| &d.name).collect::<Vec<_>>()
        );
        let cluster = &details[0];
        assert_eq!(cluster.primary, key(2));
        let fenced = cluster.instance(&key(1)).expect("folded in");
        assert_eq!(fenced.role, Role::FencedPrimary);
        assert!(fenced.fenced);
        assert_eq!(cluster.health.problems, 1, "the old primary is still down");
        let text = crate::client::format_topology(cluster);
        assert!(text.contains("- 127.0.0.1:1"), "{text}");
        assert!(text.contains("FENCED] old primary, fenced"), "{text}");

        // Back and kept read_only: that is the fence working, not a finding; but it
        // replicates from nobody, and that needs an operator.
        let mut answering = primary(key(1));
        if let Some(facts) = answering.facts.as_mut() {
            facts.read_only = true;
        }
        let mut snapshot = snapshot;
        snapshot.instances.insert(key(1), answering);
        let details = cluster_details(&snapshot, &[], &rules, &marks, SystemTime::now());
        let fenced = details[0].instance(&key(1)).expect("folded in");
        let codes: Vec<FindingCode> = fenced.findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, vec![FindingCode::FencedDetached]);
        assert_eq!(details[0].health.status, HealthStatus::Warning);
    }
}
