//! `pointsman drill CLUSTER`: a planned switchover there and back, with a verdict — the
//! rehearsal of a failover's moving parts on a healthy cluster, at a time the operator
//! chooses. Each leg is an ordinary switchover (recorded, hooks run, routes moved); after
//! each, every other member must replicate from the new primary (IO and SQL threads
//! running) within `recovery.verify_timeout`. The report gives per leg the write gap,
//! the routing gap and each backend's word, the hooks and their outcome, and every
//! replica's source, heartbeat period and lag; the verdict lists whatever fell short. A
//! drill that could not switch back says so first: the cluster is then left on the
//! replica it moved to, a healthy primary, and `pointsman switchover` brings it back.

use super::coordinator::Coordinator;
use super::switchover::{SwitchoverError, SwitchoverReport};
use crate::store::AuditEntry;
use crate::topology::{InstanceKey, IoThreadState};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a drill did and found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub cluster: String,
    /// The primary before the drill, and after it when it passed.
    pub primary: InstanceKey,
    /// There, then back.
    pub legs: Vec<DrillLeg>,
    pub passed: bool,
    /// Everything that fell short, in words; empty when it passed.
    pub problems: Vec<String>,
    pub took_ms: u64,
}

/// One switchover of the drill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillLeg {
    pub recovery_id: String,
    pub from: InstanceKey,
    pub to: InstanceKey,
    pub write_gap_ms: u64,
    /// Until every routing backend named the new primary; `None` when the cluster is not
    /// routed or a backend did not follow.
    pub route_gap_ms: Option<u64>,
    /// Each routing backend's word.
    pub routing: String,
    /// Each hook that ran: `hook post_switchover: ok`.
    pub hooks: Vec<String>,
    /// Every other member, after the leg.
    pub replicas: Vec<ReplicaCheck>,
}

/// A member after a leg: whom it replicates from and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaCheck {
    pub instance: InstanceKey,
    /// Replicates from the leg's new primary, both threads running.
    pub healthy: bool,
    pub source: Option<InstanceKey>,
    pub heartbeat_period: Option<f64>,
    pub seconds_behind: Option<u64>,
}

impl Coordinator {
    /// Switches `cluster` over to its best replica and back, checking each leg. Refused
    /// (nothing changed) as a switchover would be; after a first leg, always a report.
    pub async fn drill(
        self: &Arc<Self>,
        cluster: &str,
        who: &str,
    ) -> Result<DrillReport, SwitchoverError> {
        let started = Instant::now();
        let there = self.switchover(cluster, None, who).await?;
        let primary = there.old_primary.clone();
        let mut problems = Vec::new();
        let mut legs = vec![self.checked_leg(&there, &mut problems).await];
        // Without an alias the cluster is named by its primary: find it by the member.
        let name = self
            .discovery
            .clusters(&self.discovery.snapshot(), &self.aliases)
            .iter()
            .find(|c| c.members.contains(&there.new_primary))
            .map(|c| c.name.clone())
            .unwrap_or_else(|| cluster.to_string());
        // The agent may hold the cluster for a moment after a switchover (a second look
        // at what a mixed snapshot showed): the way back waits for that, not longer
        // than the replicas were given.
        let deadline = Instant::now() + self.executor.verify_timeout;
        let back = loop {
            match self.switchover(&name, Some(primary.clone()), who).await {
                Err(SwitchoverError::AlreadyRunning { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        };
        match back {
            Ok(back) => legs.push(self.checked_leg(&back, &mut problems).await),
            Err(error) => problems.insert(
                0,
                format!(
                    "could not switch back: {error}. {name} is left with {} as its primary; `pointsman switchover {name} --to {primary}` moves it back",
                    there.new_primary
                ),
            ),
        }
        let report = DrillReport {
            cluster: cluster.to_string(),
            primary,
            passed: problems.is_empty(),
            problems,
            legs,
            took_ms: started.elapsed().as_millis() as u64,
        };
        let _ = self.store.audit(AuditEntry {
            actor: who.to_string(),
            action: "drill".into(),
            cluster: Some(cluster.to_string()),
            instance: Some(report.primary.clone()),
            message: report.verdict(),
        });
        Ok(report)
    }

    /// A leg's report, after waiting (at most `recovery.verify_timeout`) for every other
    /// member to replicate from the new primary; what falls short goes to `problems`.
    async fn checked_leg(&self, leg: &SwitchoverReport, problems: &mut Vec<String>) -> DrillLeg {
        let members: Vec<InstanceKey> = self
            .discovery
            .clusters(&self.discovery.snapshot(), &self.aliases)
            .iter()
            .find(|c| c.members.contains(&leg.new_primary))
            .map(|c| c.members.clone())
            .unwrap_or_default();
        let others: Vec<InstanceKey> = members
            .into_iter()
            .filter(|k| k != &leg.new_primary)
            .collect();
        let deadline = Instant::now() + self.executor.verify_timeout;
        let replicas = loop {
            self.discovery
                .probe_and_wait(others.clone(), Duration::from_secs(2))
                .await;
            let checks = self.replica_checks(&others, &leg.new_primary);
            if checks.iter().all(|c| c.healthy) || Instant::now() >= deadline {
                break checks;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for check in replicas.iter().filter(|c| !c.healthy) {
            problems.push(format!(
                "after the switchover to {}, {} {}",
                leg.new_primary,
                check.instance,
                match &check.source {
                    Some(source) if source != &leg.new_primary => {
                        format!("still replicates from {source}")
                    }
                    Some(_) => "does not replicate (a thread is stopped or failing)".into(),
                    None => "replicates from no one".into(),
                }
            ));
        }
        let steps = &leg.recovery.steps;
        let hooks: Vec<String> = steps
            .iter()
            .filter(|s| s.step.starts_with("hook "))
            .map(|s| format!("{}: {}", s.step, if s.ok { "ok" } else { "failed" }))
            .collect();
        for step in steps
            .iter()
            .filter(|s| s.step.starts_with("hook ") && !s.ok)
        {
            problems.push(format!("{} failed: {}", step.step, step.detail));
        }
        if steps.iter().any(|s| s.step == "route" && !s.ok) {
            problems.push(format!(
                "not every route named {} in time: {}",
                leg.new_primary, leg.routing
            ));
        }
        DrillLeg {
            recovery_id: leg.recovery.id.clone(),
            from: leg.old_primary.clone(),
            to: leg.new_primary.clone(),
            write_gap_ms: leg.write_gap_ms,
            route_gap_ms: leg.route_gap_ms,
            routing: leg.routing.clone(),
            hooks,
            replicas,
        }
    }

    fn replica_checks(&self, others: &[InstanceKey], primary: &InstanceKey) -> Vec<ReplicaCheck> {
        let snapshot = self.discovery.snapshot();
        others
            .iter()
            .map(|key| {
                let replication = snapshot
                    .get(key)
                    .filter(|i| i.is_reachable())
                    .and_then(|i| i.facts.as_ref())
                    .and_then(|f| f.replication.as_ref());
                ReplicaCheck {
                    instance: key.clone(),
                    healthy: replication.is_some_and(|r| {
                        &r.source == primary && r.io_running == IoThreadState::Yes && r.sql_running
                    }),
                    source: replication.map(|r| r.source.clone()),
                    heartbeat_period: replication.and_then(|r| r.heartbeat_period),
                    seconds_behind: replication.and_then(|r| r.seconds_behind_source),
                }
            })
            .collect()
    }
}

impl DrillReport {
    /// One line: the verdict and each leg's gaps.
    pub fn verdict(&self) -> String {
        let legs: Vec<String> = self
            .legs
            .iter()
            .map(|leg| {
                format!(
                    "{} → {}: writes paused {} ms{}",
                    leg.from,
                    leg.to,
                    leg.write_gap_ms,
                    leg.route_gap_ms
                        .map(|ms| format!(", routes {ms} ms later"))
                        .unwrap_or_default()
                )
            })
            .collect();
        if self.passed {
            format!(
                "drill of {} passed in {} ms: {}",
                self.cluster,
                self.took_ms,
                legs.join("; ")
            )
        } else {
            format!(
                "drill of {} FAILED: {}{}",
                self.cluster,
                self.problems.join("; "),
                if legs.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", legs.join("; "))
                }
            )
        }
    }
}
