//! The shapes the API returns and the CLI reads: clusters with their health, one
//! cluster's tree with every instance and its findings, whether automatic recovery
//! covers it, the names it had before a recovery renamed it and the recovery nobody has
//! acknowledged yet. Built purely from a snapshot, the configured aliases and rules, the
//! recoveries on record, and `now`.

use crate::analysis::{
    cluster_findings, cluster_problems_given, summarize, Finding, HealthSummary, Problem,
    ProblemRules,
};
use crate::recovery::coverage::Coverage;
use crate::store::recovery::{Downtime, RecoveryRecord, RecoveryStatus};
use crate::topology::cluster::ClusterAlias;
use crate::topology::{
    build_clusters, ClusterInstances, ClusterTreeNode, ClusterView, Instance, InstanceKey,
    Instances, Snapshot,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::SystemTime;

/// One line of the cluster list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterSummary {
    pub name: String,
    pub alias: Option<String>,
    pub primary: InstanceKey,
    pub instance_count: usize,
    pub health: HealthSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formerly: Vec<String>,
    /// As in `ClusterDetail`: announced on the dashboard until acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unacknowledged: Option<RecoveryRecord>,
    /// Every instance, as `host:port`: what a search by instance looks through.
    #[serde(default)]
    pub members: Vec<InstanceKey>,
    /// What is wrong, as in `ClusterDetail` (empty in a healthy cluster): the list of
    /// clusters and the problems page need nothing more.
    #[serde(default)]
    pub problems: Vec<Problem>,
    #[serde(default)]
    pub findings: Vec<Finding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_refused: Option<String>,
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
    /// What automatic recovery would do if the primary failed now: shown before
    /// anything fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
    /// The names the cluster had before recoveries renamed it (a cluster without an
    /// alias is named after its primary), newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formerly: Vec<String>,
    /// The newest recovery of this cluster (under any of its names) that no operator
    /// has acknowledged: announced until someone does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unacknowledged: Option<RecoveryRecord>,
}

/// The recoveries on record (newest first), looked up by the names and instances they
/// concern: every cluster a list shows asks which recoveries renamed it and which one
/// nobody acknowledged, and walking every record for every cluster cost clusters ×
/// records (3,334 × up to 200 on a fleet of 10,000 instances).
pub struct RecoveryIndex<'a> {
    recoveries: &'a [RecoveryRecord],
    /// Succeeded recoveries that renamed a cluster named after its primary, by their
    /// successor as written (`host:port`): the name they gave it.
    renames: HashMap<String, Vec<&'a RecoveryRecord>>,
    /// The announced recoveries (not acknowledged, not a switchover, not rolled back),
    /// as places in `recoveries`, by cluster name and by the instances they concern.
    announced_by_name: HashMap<&'a str, Vec<usize>>,
    announced_by_instance: HashMap<&'a InstanceKey, Vec<usize>>,
}

impl<'a> RecoveryIndex<'a> {
    pub fn of(recoveries: &'a [RecoveryRecord]) -> Self {
        let mut index = Self {
            recoveries,
            renames: HashMap::new(),
            announced_by_name: HashMap::new(),
            announced_by_instance: HashMap::new(),
        };
        for (at, record) in recoveries.iter().enumerate() {
            if let Some(successor) = &record.successor {
                if record.status == RecoveryStatus::Succeeded
                    && record.cluster == record.failed.to_string()
                {
                    let renames = index.renames.entry(successor.to_string()).or_default();
                    renames.push(record);
                }
            }
            let announced = record.acknowledged_at.is_none()
                && record.kind != "switchover"
                && record.status != RecoveryStatus::RolledBack;
            if announced {
                let by_name = index.announced_by_name.entry(&record.cluster);
                by_name.or_default().push(at);
                for instance in std::iter::once(&record.failed).chain(&record.successor) {
                    let by_instance = index.announced_by_instance.entry(instance);
                    by_instance.or_default().push(at);
                }
            }
        }
        index
    }

    /// The names `name` had before recoveries renamed it, newest first: each succeeded
    /// recovery (or switchover) that promoted the instance a cluster was named after
    /// renamed it from the cluster it recorded.
    pub fn former_names(&self, name: &str) -> Vec<String> {
        let mut names = vec![name.to_string()];
        let mut former = Vec::new();
        // Newest first: each step looks for the recoveries that gave the last name found.
        let mut index = 0;
        while index < names.len() {
            let current = names[index].clone();
            for record in self.renames.get(&current).into_iter().flatten() {
                if record.cluster != current && !names.contains(&record.cluster) {
                    names.push(record.cluster.clone());
                    former.push(record.cluster.clone());
                }
            }
            index += 1;
        }
        former
    }

    /// The newest recovery of the cluster (`names`: its name and former names;
    /// `members`) that no operator acknowledged. A switchover is planned, and a
    /// rolled-back recovery changed nothing: neither is announced.
    pub fn unacknowledged(
        &self,
        names: &[String],
        members: &[InstanceKey],
    ) -> Option<&'a RecoveryRecord> {
        let by_name = names
            .iter()
            .filter_map(|name| self.announced_by_name.get(name.as_str()));
        let by_instance = members
            .iter()
            .filter_map(|member| self.announced_by_instance.get(member));
        let newest = by_name.chain(by_instance).flatten().min()?;
        Some(&self.recoveries[*newest])
    }
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
            coverage: self.coverage.clone(),
            formerly: self.formerly.clone(),
            unacknowledged: self.unacknowledged.clone(),
            members: self
                .instances
                .iter()
                .map(|v| v.instance.key.clone())
                .collect(),
            problems: self.problems.clone(),
            findings: self.findings.clone(),
            recovery_refused: self.recovery_refused.clone(),
        }
    }

    /// As `summary`, taking the detail apart instead of copying it.
    pub fn into_summary(self) -> ClusterSummary {
        ClusterSummary {
            instance_count: self.instances.len(),
            members: self.instances.into_iter().map(|v| v.instance.key).collect(),
            name: self.name,
            alias: self.alias,
            primary: self.primary,
            health: self.health,
            coverage: self.coverage,
            formerly: self.formerly,
            unacknowledged: self.unacknowledged,
            problems: self.problems,
            findings: self.findings,
            recovery_refused: self.recovery_refused,
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
    details_of(
        snapshot,
        &clusters,
        &doubled,
        rules,
        marks,
        now,
        InstanceDepth::Whole,
    )
}

/// How much of each instance a detail carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceDepth {
    /// Everything the last probe learned: what a cluster's page and the API show.
    Whole,
    /// The key, role and marks only: enough for summaries (members, counts), without
    /// copying every instance's facts.
    KeyOnly,
}

/// As `cluster_details`, for the clusters of `snapshot` already grouped.
/// `doubled`: the second primaries of the whole fleet (`multiple_primaries` over every
/// cluster), so `clusters` may be a few of them.
pub fn details_of(
    snapshot: &Snapshot,
    clusters: &[ClusterView],
    doubled: &[Problem],
    rules: &ProblemRules,
    marks: &InstanceMarks,
    now: SystemTime,
    depth: InstanceDepth,
) -> Vec<ClusterDetail> {
    let details = clusters
        .iter()
        .map(|cluster| {
            let members = ClusterInstances::of(&cluster.members, snapshot);
            let findings = cluster_findings(cluster, &members, &rules.findings, now);
            let mut problems = cluster_problems_given(cluster, &members, rules, now, &findings);
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
                    let instance = match (depth, members.get(key)) {
                        (InstanceDepth::Whole, Some(instance)) => instance.clone(),
                        _ => Instance::new(key.clone()),
                    };
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
                name: cluster.name.clone(),
                alias: cluster.alias.clone(),
                primary: cluster.primary.clone(),
                tree: cluster.tree.clone(),
                instances,
                findings,
                problems,
                recovery_refused: None,
                coverage: None,
                formerly: Vec::new(),
                unacknowledged: None,
            }
        })
        .collect();
    fold_fenced(details, marks, snapshot)
}

/// The clusters to build to show the one called `name`: it, and the lone trees of the
/// fenced old primaries, which may fold into it (`fold_fenced`).
pub fn clusters_to_detail(
    name: &str,
    clusters: &[ClusterView],
    marks: &InstanceMarks,
) -> Vec<ClusterView> {
    clusters
        .iter()
        .filter(|c| c.name == name || marks.fenced.iter().any(|f| f.instance == c.primary))
        .cloned()
        .collect()
}

/// Of the details built from `clusters_to_detail`, the one called `name`, as the whole
/// view shows it; `None` for the lone tree of a fenced old primary, which the whole view
/// may fold into a cluster not built here (the caller then builds them all).
pub fn the_detail_named(details: Vec<ClusterDetail>, name: &str) -> Option<ClusterDetail> {
    details
        .into_iter()
        .find(|d| d.name == name)
        .filter(|d| !d.instance(&d.primary).is_some_and(|v| v.fenced))
}

/// A fenced old primary replicates from no one, so it forms a tree of its own; it is
/// shown inside the cluster it was fenced from instead, outside that cluster's tree.
fn fold_fenced(
    mut details: Vec<ClusterDetail>,
    marks: &InstanceMarks,
    snapshot: &Snapshot,
) -> Vec<ClusterDetail> {
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
            // From the snapshot: a view of `InstanceDepth::KeyOnly` carries no state.
            if snapshot
                .get(&view.instance.key)
                .is_some_and(Instance::is_reachable)
            {
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

    /// A recovery of `cluster` from `failed` to `successor`, finished as `status`.
    fn recovery(
        id: &str,
        cluster: &str,
        kind: &str,
        failed: u16,
        successor: u16,
        status: RecoveryStatus,
    ) -> RecoveryRecord {
        let key = |port| InstanceKey::new("127.0.0.1", port);
        let mut record = RecoveryRecord::started(
            id,
            cluster,
            kind,
            "DeadPrimary",
            &key(failed),
            "automatic",
            SystemTime::now(),
        );
        record.successor = Some(key(successor));
        record.status = status;
        record
    }

    #[test]
    fn a_cluster_named_after_an_ipv6_primary_keeps_its_former_name() {
        // Named as the key is written: `[::1]:3306`, never `::1:3306`.
        let (old, new) = (InstanceKey::new("::1", 3306), InstanceKey::new("::1", 3307));
        let mut record = RecoveryRecord::started(
            "r1",
            "[::1]:3306",
            "failover",
            "DeadPrimary",
            &old,
            "automatic",
            SystemTime::now(),
        );
        record.successor = Some(new);
        record.status = RecoveryStatus::Succeeded;
        let recoveries = [record];
        let index = RecoveryIndex::of(&recoveries);
        assert_eq!(
            index.former_names("[::1]:3307"),
            vec!["[::1]:3306".to_string()]
        );
        assert!(index.former_names("::1:3307").is_empty());
    }

    #[test]
    fn a_cluster_named_after_its_primary_keeps_its_former_names() {
        // Newest first: 1 failed over to 2, then 2 to 3; an aliased cluster's recovery
        // (named "orders") and a failed attempt rename nothing.
        let recoveries = vec![
            recovery(
                "r4",
                "127.0.0.1:7",
                "failover",
                7,
                8,
                RecoveryStatus::Failed,
            ),
            recovery("r3", "orders", "failover", 4, 5, RecoveryStatus::Succeeded),
            recovery(
                "r2",
                "127.0.0.1:2",
                "failover",
                2,
                3,
                RecoveryStatus::Succeeded,
            ),
            recovery(
                "r1",
                "127.0.0.1:1",
                "switchover",
                1,
                2,
                RecoveryStatus::Succeeded,
            ),
        ];
        let index = RecoveryIndex::of(&recoveries);
        assert_eq!(
            index.former_names("127.0.0.1:3"),
            vec!["127.0.0.1:2".to_string(), "127.0.0.1:1".to_string()]
        );
        assert!(index.former_names("127.0.0.1:5").is_empty());
        assert!(index.former_names("127.0.0.1:8").is_empty());
        assert!(index.former_names("orders").is_empty());
    }

    #[test]
    fn the_newest_unacknowledged_recovery_is_announced_under_any_name() {
        let key = |port| InstanceKey::new("127.0.0.1", port);
        let mut acked = recovery("r3", "t", "failover", 3, 4, RecoveryStatus::Succeeded);
        acked.acknowledged_at = Some(SystemTime::now());
        let recoveries = vec![
            recovery("r5", "t", "switchover", 4, 3, RecoveryStatus::Succeeded),
            recovery("r4", "t", "failover", 5, 4, RecoveryStatus::RolledBack),
            acked,
            recovery(
                "r2",
                "127.0.0.1:1",
                "failover",
                1,
                2,
                RecoveryStatus::Failed,
            ),
        ];
        // Planned, rolled back, acknowledged: none is announced; the failed attempt of
        // the cluster under its old name is, found by name or by a member.
        let index = RecoveryIndex::of(&recoveries);
        let names = vec!["t".to_string(), "127.0.0.1:1".to_string()];
        let announced = index.unacknowledged(&names, &[]).expect("r2");
        assert_eq!(announced.id, "r2");
        let by_member = index.unacknowledged(&["t".to_string()], &[key(1)]);
        assert_eq!(by_member.map(|r| r.id.as_str()), Some("r2"));
        assert!(index
            .unacknowledged(&["t".to_string()], &[key(9)])
            .is_none());
    }

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
            ..Snapshot::default()
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
        let text = crate::client::format_topology(cluster, false);
        assert!(text.contains("- 127.0.0.1:1"), "{text}");
        assert!(text.contains("FENCED] old primary, fenced"), "{text}");

        // Back and kept read_only: that is the fence working, not a finding; but it
        // replicates from nobody, and that needs an operator.
        let mut answering = primary(key(1));
        if let Some(facts) = answering.facts.as_mut() {
            facts.read_only = true;
        }
        let mut snapshot = snapshot;
        snapshot.insert(answering);
        let details = cluster_details(&snapshot, &[], &rules, &marks, SystemTime::now());
        let fenced = details[0].instance(&key(1)).expect("folded in");
        let codes: Vec<FindingCode> = fenced.findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, vec![FindingCode::FencedDetached]);
        assert_eq!(details[0].health.status, HealthStatus::Warning);

        // Built alone with what may fold into it, the cluster is the same as in the whole
        // view; the fenced old primary's own tree is not answered alone.
        let clusters = build_clusters(&snapshot, &[]);
        let now = SystemTime::now();
        let whole = |only: Option<&str>| {
            let wanted = match only {
                Some(name) => clusters_to_detail(name, &clusters, &marks),
                None => clusters.clone(),
            };
            details_of(
                &snapshot,
                &wanted,
                &[],
                &rules,
                &marks,
                now,
                InstanceDepth::Whole,
            )
        };
        let all = whole(None);
        assert_eq!(
            the_detail_named(whole(Some(&all[0].name)), &all[0].name).as_ref(),
            Some(&all[0])
        );
        let alone = clusters
            .iter()
            .find(|c| c.primary == key(1))
            .expect("the fenced tree");
        assert_eq!(
            the_detail_named(whole(Some(&alone.name)), &alone.name),
            None
        );

        // Summaries built without the instances' facts say exactly the same.
        let summaries = |depth| {
            details_of(&snapshot, &clusters, &[], &rules, &marks, now, depth)
                .iter()
                .map(ClusterDetail::summary)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            summaries(InstanceDepth::KeyOnly),
            summaries(InstanceDepth::Whole)
        );
    }
}
