//! Problems: the judgement a failover is built on. The first rule is never to fail over
//! when we should not: a primary the agent cannot reach is only *dead* when every replica
//! that the agent can reach says it cannot reach it either — its IO thread is failing, or
//! it has heard no heartbeat for several heartbeat periods (a primary alive but cut off
//! from everyone). While any replica still hears its primary, it is merely
//! `UnreachablePrimary`, and nothing happens but an alert.
//! Pure: a cluster, the snapshot (which carries each replica's last-heard time) and
//! `now` in, problems out.

use super::findings::{cluster_findings, Finding, FindingCode, FindingRules};
use crate::topology::cluster::{writable_root, ClusterAlias};
use crate::topology::{
    ClusterTreeNode, ClusterView, Instance, InstanceKey, Instances, IoThreadState, Snapshot,
};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// What kind of problem, stable for scripts, hooks and alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProblemCode {
    /// The primary is unreachable and every replica confirms it: fail over.
    DeadPrimary,
    /// As `DeadPrimary`, and some replicas are unreachable too: fail over to the rest.
    DeadPrimaryAndSomeReplicas,
    /// The primary and all its replicas are unreachable: nothing can confirm or be promoted.
    DeadPrimaryAndReplicas,
    /// The primary is unreachable and has no replicas to promote.
    DeadPrimaryWithoutReplicas,
    /// The agent cannot reach the primary but replicas still hear it: no failover.
    UnreachablePrimary,
    /// As `UnreachablePrimary`, with replicas lagging: no failover, but look now.
    UnreachablePrimaryWithLaggingReplicas,
    /// The primary answers but none of its replicas replicate.
    AllReplicasNotReplicating,
    /// A replica that has replicas is dead and they confirm it: re-point them.
    DeadIntermediatePrimary,
    /// Semi-sync is on and no replica acknowledges: commits wait for the timeout.
    LockedSemiSyncPrimary,
    ErrantGtid,
    ReplicationStopped,
    ReplicationLagging,
    PrimaryReadOnly,
    /// Every instance replicates from another one: nobody takes writes.
    ClusterHasNoPrimary,
    /// Another instance listed under the cluster's alias answers as a writable primary
    /// beside the cluster's own (an old primary back writable after a failover whose
    /// fence was lost): two places take writes. A stale one is fenced by the agent.
    MultiplePrimaries,
}

impl ProblemCode {
    /// Whether this problem is one a recovery fixes by promoting or re-pointing.
    pub fn needs_recovery(self) -> bool {
        matches!(
            self,
            ProblemCode::DeadPrimary
                | ProblemCode::DeadPrimaryAndSomeReplicas
                | ProblemCode::DeadIntermediatePrimary
        )
    }
}

/// One problem in one cluster, with the instance it is about and a sentence saying why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub code: ProblemCode,
    pub cluster: String,
    /// The failed or affected instance.
    pub instance: InstanceKey,
    /// The instances whose state the judgement rests on (e.g. the confirming replicas).
    pub related: Vec<InstanceKey>,
    pub explanation: String,
}

/// Thresholds the problems are judged by.
#[derive(Clone, Copy, Debug)]
pub struct ProblemRules {
    pub findings: FindingRules,
    /// A replica whose IO thread says Yes but has heard nothing for this many of its
    /// heartbeat periods counts as not replicating.
    pub silent_heartbeats: u32,
}

impl ProblemRules {
    /// The rules a configuration sets.
    pub fn from_config(config: &crate::config::Config) -> ProblemRules {
        ProblemRules {
            findings: FindingRules {
                lag_warning: config.analysis.lag_warning.0,
                heartbeat_warning: config.recovery.heartbeat_period.0 * 2,
                semi_sync_must_not_fall_back: config.recovery.require_semi_sync_ack,
            },
            silent_heartbeats: config.recovery.silent_heartbeats,
        }
    }
}

impl Default for ProblemRules {
    /// The configuration's defaults.
    fn default() -> Self {
        ProblemRules {
            findings: FindingRules::default(),
            silent_heartbeats: 3,
        }
    }
}

/// How a replica's link to its source looks from here.
#[derive(Clone, Debug, PartialEq)]
enum Link {
    Replicating,
    /// Not receiving, and the reason is evidence about the source: the IO thread fails
    /// to connect, or it has been silent too long.
    Broken(String),
    /// Not receiving because someone stopped it: says nothing about the source, so the
    /// replica does not vote on whether the source is dead.
    Stopped,
    Unreachable,
}

fn link(replica: &Instance, rules: &ProblemRules, now: SystemTime) -> Option<Link> {
    if !replica.is_reachable() {
        return Some(Link::Unreachable);
    }
    let status = replica.facts.as_ref()?.replication.as_ref()?;
    match status.io_running {
        IoThreadState::Yes => {}
        IoThreadState::No if status.last_io_errno == 0 => return Some(Link::Stopped),
        state => {
            let how = if state == IoThreadState::Connecting {
                "cannot connect"
            } else {
                "IO thread stopped"
            };
            return Some(Link::Broken(format!(
                "{how} (error {}: {})",
                status.last_io_errno, status.last_io_error
            )));
        }
    }
    // A period of 0 or an unknown one means no heartbeats: silence proves nothing then,
    // so the replica is given the benefit of the doubt.
    let Some(period) = status.heartbeat_period.filter(|p| *p > 0.0) else {
        return Some(Link::Replicating);
    };
    let period_length = Duration::from_secs_f64(period);
    // Silence is what the replica itself showed at its last probe, not how old the
    // agent's data is: a slow agent must not mistake its own staleness for silence. Data
    // older than a heartbeat period proves nothing either way.
    let (Some(seen), Some(heard)) = (replica.last_seen, replica.source_last_heard) else {
        return Some(Link::Replicating);
    };
    if now.duration_since(seen).unwrap_or_default() > period_length {
        return Some(Link::Replicating);
    }
    let silence = seen.duration_since(heard).unwrap_or_default();
    let limit = period_length * rules.silent_heartbeats.max(1);
    if silence > limit {
        Some(Link::Broken(format!(
            "heard nothing for {:.1}s (heartbeat every {period}s)",
            silence.as_secs_f64()
        )))
    } else {
        Some(Link::Replicating)
    }
}

/// Two writable primaries under one alias: for each aliased cluster whose primary takes
/// writes, every other tree holding an instance listed under that alias whose own root
/// takes writes too. The explanation says whether that root is a stale copy of the
/// cluster's primary (its executed GTIDs a strict subset: safe to fence) or diverged.
pub fn multiple_primaries(
    clusters: &[ClusterView],
    snapshot: &Snapshot,
    aliases: &[ClusterAlias],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    // Only a tree without an alias can hold a second primary of an aliased cluster: with
    // none (the steady state), there is nothing to look through.
    let unaliased: Vec<&ClusterView> = clusters.iter().filter(|c| c.alias.is_none()).collect();
    if unaliased.is_empty() {
        return problems;
    }
    let by_alias: std::collections::HashMap<&str, &ClusterAlias> =
        aliases.iter().map(|a| (a.alias.as_str(), a)).collect();
    for cluster in clusters {
        let Some(alias) = cluster.alias.as_deref().and_then(|a| by_alias.get(a)) else {
            continue;
        };
        let Some(primary) = writable_root(snapshot, &cluster.primary) else {
            continue;
        };
        for other in &unaliased {
            if !other.members.iter().any(|m| alias.instances.contains(m)) {
                continue;
            }
            let Some(theirs) = writable_root(snapshot, &other.primary) else {
                continue;
            };
            let how = if theirs.gtid.strictly_behind(&primary.gtid) {
                "its executed GTIDs are a strict subset of the primary's: it is a stale old primary, and is fenced (read_only) by the agent"
            } else {
                "its executed GTIDs are not a subset of the primary's (it took writes the primary lacks): decide by hand which one keeps the writes, then set the other read_only"
            };
            problems.push(Problem {
                code: ProblemCode::MultiplePrimaries,
                cluster: cluster.name.clone(),
                instance: other.primary.clone(),
                related: vec![cluster.primary.clone()],
                explanation: format!(
                    "{} takes writes beside the primary {} of {}: {how}",
                    other.primary, cluster.primary, cluster.name
                ),
            });
        }
    }
    problems
}

/// Everything wrong in one cluster, failover-worthy problems first.
pub fn cluster_problems(
    cluster: &ClusterView,
    snapshot: &impl Instances,
    rules: &ProblemRules,
    now: SystemTime,
) -> Vec<Problem> {
    let findings = cluster_findings(cluster, snapshot, &rules.findings, now);
    cluster_problems_given(cluster, snapshot, rules, now, &findings)
}

/// `cluster_problems`, for a caller that has the cluster's findings (judged with
/// `rules.findings` at `now`) already.
pub fn cluster_problems_given(
    cluster: &ClusterView,
    snapshot: &impl Instances,
    rules: &ProblemRules,
    now: SystemTime,
    findings: &[Finding],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let problem =
        |code, instance: &InstanceKey, related: Vec<InstanceKey>, explanation: String| Problem {
            code,
            cluster: cluster.name.clone(),
            instance: instance.clone(),
            related,
            explanation,
        };

    let primary = snapshot.get(&cluster.primary);
    let primary_dead = primary.is_some_and(|p| p.unreachable_since.is_some());
    if primary.and_then(|p| p.source()).is_some() {
        problems.push(problem(
            ProblemCode::ClusterHasNoPrimary,
            &cluster.primary,
            cluster.members.clone(),
            "every instance replicates from another one: no instance takes writes".into(),
        ));
    }

    // The primary and every intermediate primary, judged by the replicas under them.
    judge_sources(
        &cluster.tree,
        true,
        snapshot,
        rules,
        now,
        &mut |code, key, related, why| problems.push(problem(code, key, related, why)),
    );

    if let Some(primary) = primary.filter(|p| p.is_reachable()) {
        if let Some(facts) = &primary.facts {
            let semi = &facts.semi_sync;
            if semi.source_enabled && semi.source_active && semi.source_clients == 0 {
                problems.push(problem(
                    ProblemCode::LockedSemiSyncPrimary,
                    &primary.key,
                    Vec::new(),
                    "semi-sync is on but no replica acknowledges: every commit waits for the semi-sync timeout".into(),
                ));
            }
        }
    }

    // Per-instance problems from the findings; replicas of a dead primary are already
    // explained by the primary's problem.
    for finding in findings {
        let code = match finding.code {
            FindingCode::ErrantGtid => ProblemCode::ErrantGtid,
            FindingCode::ReplicationStopped
            | FindingCode::ReplicationIoError
            | FindingCode::ReplicationSqlError => ProblemCode::ReplicationStopped,
            FindingCode::ReplicationLagging => ProblemCode::ReplicationLagging,
            FindingCode::PrimaryReadOnly => ProblemCode::PrimaryReadOnly,
            _ => continue,
        };
        let source_dead = snapshot
            .get(&finding.instance)
            .and_then(|i| i.source())
            .and_then(|source| snapshot.get(source))
            .is_some_and(|source| source.unreachable_since.is_some());
        if code == ProblemCode::ReplicationStopped && (source_dead || primary_dead) {
            continue;
        }
        if code == ProblemCode::PrimaryReadOnly && primary.and_then(|p| p.source()).is_some() {
            continue; // ClusterHasNoPrimary says it better
        }
        problems.push(problem(
            code,
            &finding.instance,
            Vec::new(),
            finding.message.clone(),
        ));
    }
    problems.sort_by_key(|p| (!p.code.needs_recovery(), p.code));
    problems
}

/// Receives each problem found: code, instance, related instances, explanation.
type Report<'a> = dyn FnMut(ProblemCode, &InstanceKey, Vec<InstanceKey>, String) + 'a;

/// Judges `node` (the primary when `is_root`) by its direct replicas, then recurses.
fn judge_sources(
    node: &ClusterTreeNode,
    is_root: bool,
    snapshot: &impl Instances,
    rules: &ProblemRules,
    now: SystemTime,
    report: &mut Report<'_>,
) {
    let key = &node.key;
    let unreachable = snapshot
        .get(key)
        .is_none_or(|i| i.unreachable_since.is_some());
    let links: Vec<(&InstanceKey, Link)> = node
        .replicas
        .iter()
        .filter_map(|r| Some((&r.key, link(snapshot.get(&r.key)?, rules, now)?)))
        .collect();
    let reachable: Vec<&(&InstanceKey, Link)> = links
        .iter()
        .filter(|(_, l)| *l != Link::Unreachable)
        .collect();
    // Replicas someone stopped neither confirm nor deny: the vote is among the others.
    let voters = reachable
        .iter()
        .filter(|(_, l)| *l != Link::Stopped)
        .count();
    let broken: Vec<String> = reachable
        .iter()
        .filter_map(|(k, l)| match l {
            Link::Broken(why) => Some(format!("{k} {why}")),
            _ => None,
        })
        .collect();
    let keys =
        |list: &[&(&InstanceKey, Link)]| list.iter().map(|(k, _)| (*k).clone()).collect::<Vec<_>>();
    let all_confirm = voters > 0 && broken.len() == voters;
    let none_replicating =
        !reachable.is_empty() && reachable.iter().all(|(_, l)| *l != Link::Replicating);
    let some_unreachable = reachable.len() < links.len();

    if unreachable && is_root {
        let (code, why) = if links.is_empty() {
            (
                ProblemCode::DeadPrimaryWithoutReplicas,
                "the primary does not answer and has no replicas to promote".to_string(),
            )
        } else if reachable.is_empty() {
            (
                ProblemCode::DeadPrimaryAndReplicas,
                "neither the primary nor any replica answers: nothing can confirm the failure (is the agent cut off?)".to_string(),
            )
        } else if all_confirm {
            let code = if some_unreachable {
                ProblemCode::DeadPrimaryAndSomeReplicas
            } else {
                ProblemCode::DeadPrimary
            };
            (
                code,
                format!(
                    "the primary does not answer and every reachable replica confirms it: {}",
                    broken.join("; ")
                ),
            )
        } else {
            let hearing: Vec<String> = reachable
                .iter()
                .filter(|(_, l)| *l == Link::Replicating)
                .map(|(k, _)| k.to_string())
                .collect();
            let lagging = reachable.iter().any(|(k, _)| {
                snapshot
                    .get(k)
                    .and_then(|i| {
                        i.facts
                            .as_ref()?
                            .replication
                            .as_ref()?
                            .seconds_behind_source
                    })
                    .is_some_and(|lag| lag > rules.findings.lag_warning.as_secs())
            });
            let code = if lagging {
                ProblemCode::UnreachablePrimaryWithLaggingReplicas
            } else {
                ProblemCode::UnreachablePrimary
            };
            (
                code,
                format!(
                    "the agent cannot reach the primary, but {} still replicate from it: no failover",
                    hearing.join(", ")
                ),
            )
        };
        report(code, key, keys(&reachable), why);
    } else if unreachable && all_confirm {
        report(
            ProblemCode::DeadIntermediatePrimary,
            key,
            keys(&reachable),
            format!(
                "this intermediate primary does not answer and its replicas confirm it: {}",
                broken.join("; ")
            ),
        );
    } else if !unreachable && is_root && none_replicating {
        report(
            ProblemCode::AllReplicasNotReplicating,
            key,
            keys(&reachable),
            format!(
                "the primary answers but no replica replicates: {}",
                reachable
                    .iter()
                    .map(|(k, l)| match l {
                        Link::Broken(why) => format!("{k} {why}"),
                        _ => format!("{k} IO thread stopped"),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        );
    }
    for replica in &node.replicas {
        if !replica.replicas.is_empty() {
            judge_sources(replica, false, snapshot, rules, now, report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::build_clusters;
    use crate::topology::instance::tests_support::{primary, replica};

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    const NOW_OFFSET: Duration = Duration::from_secs(100);

    fn rules() -> ProblemRules {
        ProblemRules::default()
    }

    /// Instances in a certain state, for the table below.
    fn dead(mut instance: Instance) -> Instance {
        instance.unreachable_since = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(90));
        instance.last_error = Some("connection refused".into());
        instance
    }

    fn io(mut instance: Instance, state: IoThreadState, errno: u32) -> Instance {
        let status = instance
            .facts
            .as_mut()
            .and_then(|f| f.replication.as_mut())
            .expect("a replica");
        status.io_running = state;
        status.last_io_errno = errno;
        status.last_io_error = "error connecting to master".into();
        instance
    }

    fn heard(mut instance: Instance, seconds_ago: u64) -> Instance {
        instance.source_last_heard =
            Some(SystemTime::UNIX_EPOCH + NOW_OFFSET - Duration::from_secs(seconds_ago));
        instance
    }

    fn lag(mut instance: Instance, seconds: u64) -> Instance {
        instance
            .facts
            .as_mut()
            .and_then(|f| f.replication.as_mut())
            .expect("a replica")
            .seconds_behind_source = Some(seconds);
        instance
    }

    /// Instances as probed just now, on the test clock.
    fn fresh(mut instance: Instance) -> Instance {
        if instance.unreachable_since.is_none() {
            instance.last_seen = Some(SystemTime::UNIX_EPOCH + NOW_OFFSET);
        }
        instance
    }

    fn problems(instances: Vec<Instance>) -> Vec<(ProblemCode, u16)> {
        let snapshot = Snapshot {
            instances: instances
                .into_iter()
                .map(fresh)
                .map(|i| (i.key.clone(), i))
                .collect(),
            ..Snapshot::default()
        };
        let clusters = build_clusters(&snapshot, &[]);
        assert_eq!(clusters.len(), 1, "one cluster expected");
        cluster_problems(
            &clusters[0],
            &snapshot,
            &rules(),
            SystemTime::UNIX_EPOCH + NOW_OFFSET,
        )
        .into_iter()
        .map(|p| (p.code, p.instance.port))
        .collect()
    }

    fn r(port: u16, source: u16) -> Instance {
        heard(replica(key(port), key(source)), 0)
    }

    use IoThreadState::{Connecting, No};
    use ProblemCode::*;

    #[test]
    fn the_failover_guard_over_many_topology_shapes() {
        type Case = (&'static str, Vec<Instance>, Vec<(ProblemCode, u16)>);
        let cases: Vec<Case> = vec![
            ("healthy", vec![primary(key(1)), r(2, 1), r(3, 1)], vec![]),
            (
                "dead primary, both replicas cannot connect",
                vec![
                    dead(primary(key(1))),
                    io(r(2, 1), Connecting, 2003),
                    io(r(3, 1), Connecting, 2013),
                ],
                vec![(DeadPrimary, 1)],
            ),
            (
                "agent cut off from the primary, replicas still replicate",
                vec![dead(primary(key(1))), r(2, 1), r(3, 1)],
                vec![(UnreachablePrimary, 1)],
            ),
            (
                "one replica still hears the primary: no failover",
                vec![
                    dead(primary(key(1))),
                    io(r(2, 1), Connecting, 2003),
                    r(3, 1),
                ],
                vec![(UnreachablePrimary, 1)],
            ),
            (
                "unreachable primary with a lagging replica",
                vec![dead(primary(key(1))), lag(r(2, 1), 60), r(3, 1)],
                vec![
                    (UnreachablePrimaryWithLaggingReplicas, 1),
                    (ReplicationLagging, 2),
                ],
            ),
            (
                "primary alive but cut off from everyone: IO says Yes, heartbeats stopped",
                vec![
                    dead(primary(key(1))),
                    heard(replica(key(2), key(1)), 5),
                    heard(replica(key(3), key(1)), 4),
                ],
                vec![(DeadPrimary, 1)],
            ),
            (
                "heartbeats late by less than the limit prove nothing",
                vec![
                    dead(primary(key(1))),
                    heard(replica(key(2), key(1)), 2),
                    heard(replica(key(3), key(1)), 5),
                ],
                vec![(UnreachablePrimary, 1)],
            ),
            (
                "dead primary, one replica stopped by hand, the other cannot connect",
                vec![
                    dead(primary(key(1))),
                    io(r(2, 1), No, 0),
                    io(r(3, 1), Connecting, 2003),
                ],
                vec![(DeadPrimary, 1)],
            ),
            (
                "dead primary and every replica stopped by hand: nothing confirms",
                vec![
                    dead(primary(key(1))),
                    io(r(2, 1), No, 0),
                    io(r(3, 1), No, 0),
                ],
                vec![(UnreachablePrimary, 1)],
            ),
            (
                "dead primary and one dead replica, the other confirms",
                vec![
                    dead(primary(key(1))),
                    dead(r(2, 1)),
                    io(r(3, 1), Connecting, 2003),
                ],
                vec![(DeadPrimaryAndSomeReplicas, 1)],
            ),
            (
                "dead primary and every replica dead: the agent may be the one cut off",
                vec![dead(primary(key(1))), dead(r(2, 1)), dead(r(3, 1))],
                vec![(DeadPrimaryAndReplicas, 1)],
            ),
            (
                "dead primary alone",
                vec![dead(primary(key(1)))],
                vec![(DeadPrimaryWithoutReplicas, 1)],
            ),
            (
                "primary fine, every replica's IO thread stopped",
                vec![primary(key(1)), io(r(2, 1), No, 0), io(r(3, 1), No, 0)],
                vec![
                    (AllReplicasNotReplicating, 1),
                    (ReplicationStopped, 2),
                    (ReplicationStopped, 3),
                ],
            ),
            (
                "primary fine, one replica stopped",
                vec![primary(key(1)), io(r(2, 1), No, 0), r(3, 1)],
                vec![(ReplicationStopped, 2)],
            ),
            (
                "dead intermediate primary, its replica confirms",
                vec![
                    primary(key(1)),
                    dead(r(2, 1)),
                    io(r(3, 2), Connecting, 2003),
                ],
                vec![(DeadIntermediatePrimary, 2)],
            ),
            (
                "unreachable intermediate primary whose replica still hears it",
                vec![primary(key(1)), dead(r(2, 1)), r(3, 2)],
                vec![],
            ),
            (
                "lagging replica",
                vec![primary(key(1)), lag(r(2, 1), 30)],
                vec![(ReplicationLagging, 2)],
            ),
            (
                "co-primaries replicating from each other",
                vec![r(1, 2), r(2, 1)],
                vec![(ClusterHasNoPrimary, 1)],
            ),
        ];
        for (name, instances, expected) in cases {
            assert_eq!(problems(instances), expected, "{name}");
        }
    }

    #[test]
    fn stale_agent_data_is_not_mistaken_for_silence() {
        // The replicas were last probed 5 s ago and heard their source then: the agent is
        // behind, not the replicas.
        let stale = |port| {
            let mut replica = heard(replica(key(port), key(1)), 5);
            replica.last_seen = replica.source_last_heard;
            replica
        };
        let snapshot = Snapshot {
            instances: [dead(primary(key(1))), stale(2), stale(3)]
                .into_iter()
                .map(|i| (i.key.clone(), i))
                .collect(),
            ..Snapshot::default()
        };
        let cluster = &build_clusters(&snapshot, &[])[0];
        let found = cluster_problems(
            cluster,
            &snapshot,
            &rules(),
            SystemTime::UNIX_EPOCH + NOW_OFFSET,
        );
        assert_eq!(found[0].code, UnreachablePrimary, "{found:?}");
    }

    #[test]
    fn a_replica_without_heartbeats_is_never_judged_silent() {
        let mut quiet = heard(replica(key(2), key(1)), 60);
        quiet
            .facts
            .as_mut()
            .and_then(|f| f.replication.as_mut())
            .expect("replica")
            .heartbeat_period = None;
        assert_eq!(
            problems(vec![dead(primary(key(1))), quiet]),
            vec![(UnreachablePrimary, 1)]
        );
    }

    #[test]
    fn a_locked_semi_sync_primary_is_reported() {
        let mut locked = primary(key(1));
        let semi = &mut locked.facts.as_mut().expect("facts").semi_sync;
        semi.source_enabled = true;
        semi.source_active = true;
        semi.source_clients = 0;
        assert_eq!(
            problems(vec![locked, r(2, 1)]),
            vec![(LockedSemiSyncPrimary, 1)]
        );
    }

    #[test]
    fn explanations_say_why() {
        let snapshot = Snapshot {
            instances: [
                dead(primary(key(1))),
                io(r(2, 1), Connecting, 2003),
                r(3, 1),
            ]
            .into_iter()
            .map(fresh)
            .map(|i| (i.key.clone(), i))
            .collect(),
            ..Snapshot::default()
        };
        let cluster = &build_clusters(&snapshot, &[])[0];
        let found = cluster_problems(
            cluster,
            &snapshot,
            &rules(),
            SystemTime::UNIX_EPOCH + NOW_OFFSET,
        );
        assert!(
            found[0].explanation.contains("127.0.0.1:3 still replicate"),
            "{}",
            found[0].explanation
        );
        assert_eq!(found[0].related, vec![key(2), key(3)]);
    }

    #[test]
    fn a_second_writable_primary_under_an_alias_is_stale_or_diverged() {
        use crate::topology::instance::tests_support::with_gtids;
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let other_uuid = "4e11fa47-71ca-11e1-9e33-c80aa9429562";
        let aliases = [ClusterAlias {
            alias: "t".into(),
            instances: vec![key(1), key(2), key(3)],
        }];
        let judge = |old_primary_gtids: &str| {
            let snapshot = Snapshot {
                instances: [
                    with_gtids(primary(key(1)), old_primary_gtids),
                    with_gtids(primary(key(2)), &format!("{uuid}:1-12")),
                    replica(key(3), key(2)),
                ]
                .into_iter()
                .map(|i| (i.key.clone(), i))
                .collect(),
                ..Snapshot::default()
            };
            let clusters = build_clusters(&snapshot, &aliases);
            multiple_primaries(&clusters, &snapshot, &aliases)
        };
        let stale = judge(&format!("{uuid}:1-10"));
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].code, ProblemCode::MultiplePrimaries);
        assert_eq!(
            (stale[0].cluster.as_str(), &stale[0].instance),
            ("t", &key(1))
        );
        assert!(
            stale[0].explanation.contains("stale"),
            "{}",
            stale[0].explanation
        );
        let diverged = judge(&format!("{uuid}:1-10,{other_uuid}:1"));
        assert!(
            diverged[0].explanation.contains("by hand"),
            "{}",
            diverged[0].explanation
        );
        // Read-only (fenced) beside the primary: nothing to report.
        let snapshot = Snapshot {
            instances: [
                replica(key(1), key(9)),
                primary(key(2)),
                replica(key(3), key(2)),
            ]
            .into_iter()
            .map(|i| (i.key.clone(), i))
            .collect(),
            ..Snapshot::default()
        };
        let clusters = build_clusters(&snapshot, &aliases);
        assert!(multiple_primaries(&clusters, &snapshot, &aliases).is_empty());
    }
}
