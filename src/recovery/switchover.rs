//! Switchover: a planned change of primary while the old one is healthy. The old
//! primary stops taking writes, the candidate applies exactly what it wrote, the
//! candidate is promoted, the old primary becomes its replica and the other replicas
//! follow it. Writes are refused only between read_only ON on the old primary and
//! read_only OFF on the new one; that window is measured and reported.
//!
//! This module owns the decision (which candidate, and every reason to refuse) and the
//! order of the statements. It does not fence: the old primary is a healthy replica
//! afterwards, unless attaching it failed. It reuses `plan`'s eligibility rules and adds
//! what only matters while the primary is alive: the candidate must be replicating now,
//! since it must apply the old primary's last transaction before it may take writes.

use super::coordinator::Coordinator;
use super::coordinator::{describe_run, timed};
use super::execute::{Executor, StepLog};
use super::hooks::{run_hooks, HookContext, HookPoint};
use super::plan::{plan_promotion, PlanError};
use crate::mysql::edge::AdminSession;
use crate::mysql::probe::probe;
use crate::mysql::{Connection, MysqlError};
use crate::store::recovery::{RecoveryRecord, RecoveryStatus};
use crate::store::AuditEntry;
use crate::topology::{
    build_clusters, ClusterView, Instance, InstanceFacts, InstanceKey, IoThreadState, Snapshot,
};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What a switchover did (JSON as the API returns it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwitchoverReport {
    /// Kind `switchover`, problem `Switchover`, trigger the operator; every step.
    pub recovery: RecoveryRecord,
    pub old_primary: InstanceKey,
    pub new_primary: InstanceKey,
    /// From read_only ON on the old primary to read_only OFF on the new one, rounded up
    /// to whole milliseconds (a pause is never reported as none).
    pub write_gap_ms: u64,
    /// From read_only OFF on the new primary until the last routing backend named it as
    /// the writer, rounded up: what applications that reach the primary through
    /// ProxySQL, Consul or DNS wait on top of `write_gap_ms`. `None` when the cluster is
    /// not routed, no backend is configured, or one did not follow within
    /// `routing.apply_timeout`.
    #[serde(default)]
    pub route_gap_ms: Option<u64>,
    /// How each routing backend took the change, in words.
    #[serde(default)]
    pub routing: String,
}

/// Why a switchover was refused or did not complete. Refusals change nothing and leave
/// no recovery record; `Aborted` and `Failed` are recorded.
#[derive(Debug, thiserror::Error)]
pub enum SwitchoverError {
    #[error("no cluster named \"{0}\" (`pointsman clusters` lists them)")]
    UnknownCluster(String),
    #[error("a recovery of cluster {cluster} is already running{}: wait for it to finish", .recovery_id.as_deref().map(|id| format!(" ({id})")).unwrap_or_default())]
    AlreadyRunning {
        cluster: String,
        recovery_id: Option<String>,
    },
    #[error("the primary {primary} of cluster {cluster} does not answer ({reason}): a switchover needs a live primary; if it is down, use `pointsman recover {cluster}`")]
    PrimaryUnreachable {
        cluster: String,
        primary: InstanceKey,
        reason: String,
    },
    #[error("{instance} is not an instance of cluster {cluster}: pointsman knows no such instance (`pointsman topology {cluster}` lists them)")]
    UnknownInstance {
        instance: InstanceKey,
        cluster: String,
    },
    #[error("{instance} is not an instance of cluster {cluster}: it belongs to cluster {other}")]
    OtherCluster {
        instance: InstanceKey,
        cluster: String,
        other: String,
    },
    #[error("{instance} is already the primary of cluster {cluster}")]
    AlreadyPrimary {
        instance: InstanceKey,
        cluster: String,
    },
    #[error("the primary {primary} of cluster {cluster} has no replicas: there is nothing to switch over to")]
    NoReplicas {
        cluster: String,
        primary: InstanceKey,
    },
    #[error("{instance} may not be promoted: {}", .reasons.join("; "))]
    Ineligible {
        instance: InstanceKey,
        reasons: Vec<String>,
    },
    #[error("no replica of {primary} may be promoted:\n{}", .skipped.iter().map(|(k, r)| format!("  {k} skipped: {}", r.join("; "))).collect::<Vec<_>>().join("\n"))]
    NoCandidate {
        primary: InstanceKey,
        skipped: Vec<(InstanceKey, Vec<String>)>,
    },
    /// Replication that cannot be re-pointed by GTID.
    #[error(transparent)]
    Plan(PlanError),
    #[error("switchover {recovery_id} aborted before changing anything: {reason}")]
    Aborted { recovery_id: String, reason: String },
    #[error("switchover {recovery_id} failed: {reason}")]
    Failed { recovery_id: String, reason: String },
    /// Another agent acts on the cluster; nothing was done.
    #[error("{0}")]
    NotActing(String),
}

/// Who takes over, decided on a fresh look at the cluster.
struct Choice {
    cluster: String,
    primary: InstanceKey,
    candidate: InstanceKey,
    /// The primary's other direct replicas that answered: re-pointed under the candidate.
    siblings: Vec<InstanceKey>,
    /// Direct replicas that did not answer: left as they are, with the reason.
    unreachable: Vec<(InstanceKey, String)>,
    /// Restored on roll-back: a primary that was read_only stays so.
    primary_was_writable: bool,
    /// The primary had semi-sync's source side on: carried over to the candidate, and
    /// the old primary acknowledges as a replica.
    semi_sync: bool,
    /// Every replica's verdict, for the record.
    explanation: String,
    members: Vec<InstanceKey>,
}

/// How a recorded switchover ended when it did not succeed.
#[derive(Debug)]
enum Ending {
    /// Nothing was changed.
    Aborted(String),
    /// Stopped after changing something; the text says in what state it left things.
    Failed(String),
}

/// A cluster held for one switchover: automatic recovery and other changes stay away
/// until it is dropped, however the switchover ends.
struct Claim {
    coordinator: Arc<Coordinator>,
    cluster: String,
}

impl Claim {
    fn take(coordinator: &Arc<Coordinator>, cluster: &str) -> Option<Claim> {
        coordinator.begin_change(cluster).then(|| Claim {
            coordinator: coordinator.clone(),
            cluster: cluster.to_string(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.coordinator.end_change(&self.cluster);
    }
}

impl Coordinator {
    /// Moves the primary role of `cluster` to `to` (or the best candidate) while the
    /// primary is healthy, losing no write: see the module documentation for the order.
    /// `who` is recorded as the trigger.
    pub async fn switchover(
        self: &Arc<Self>,
        cluster: &str,
        to: Option<InstanceKey>,
        who: &str,
    ) -> Result<SwitchoverReport, SwitchoverError> {
        self.may_act_on(cluster)
            .map_err(SwitchoverError::NotActing)?;
        let Some(_claim) = Claim::take(self, cluster) else {
            return Err(SwitchoverError::AlreadyRunning {
                cluster: cluster.to_string(),
                recovery_id: None,
            });
        };
        let choice = match (Switch { coordinator: self })
            .choose(cluster, to.as_ref())
            .await
        {
            Ok(choice) => choice,
            Err(error) => {
                tracing::warn!(cluster, %error, "switchover refused");
                let _ = self.store.audit(AuditEntry {
                    actor: who.to_string(),
                    action: "switchover".into(),
                    cluster: Some(cluster.to_string()),
                    instance: to,
                    message: format!("switchover refused: {error}"),
                });
                return Err(error);
            }
        };
        let members = choice.members.clone();
        let result = Switch { coordinator: self }.carry_out(choice, who).await;
        // Judgements on probes from before the switchover are stale: right after it a
        // snapshot can still show the old primary writable beside the new one.
        self.mark_changed(members);
        result
    }
}

/// The private steps of a switchover, on a type of their own so that their names never
/// clash with the coordinator's own methods (coordinator.rs is edited independently).
struct Switch<'a> {
    coordinator: &'a Coordinator,
}

impl std::ops::Deref for Switch<'_> {
    type Target = Coordinator;

    fn deref(&self) -> &Coordinator {
        self.coordinator
    }
}

impl Switch<'_> {
    /// Every check that refuses before anything is recorded or changed.
    async fn choose(
        &self,
        cluster_name: &str,
        to: Option<&InstanceKey>,
    ) -> Result<Choice, SwitchoverError> {
        let snapshot = self.discovery.snapshot();
        let known = build_clusters(&snapshot, &self.aliases)
            .into_iter()
            .find(|c| c.name == cluster_name)
            .ok_or_else(|| SwitchoverError::UnknownCluster(cluster_name.to_string()))?;
        // A failover inserts its record as it starts, so a running one is seen here.
        if let Some(running) = self
            .store
            .recoveries(Some(cluster_name), 50)
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.status == RecoveryStatus::Running)
        {
            return Err(SwitchoverError::AlreadyRunning {
                cluster: cluster_name.to_string(),
                recovery_id: Some(running.id),
            });
        }

        // Decide on the servers' state now, not the last poll's: an errant write or a
        // stopped thread from a moment ago must be seen, and so must a change of primary
        // (a switchover just before this one) that the last poll predates.
        let fresh = self.look_now(&snapshot, &known.members).await;
        let clusters = build_clusters(&fresh, &self.aliases);
        let cluster = clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .or_else(|| clusters.iter().find(|c| c.members.contains(&known.primary)))
            .ok_or_else(|| SwitchoverError::UnknownCluster(cluster_name.to_string()))?;
        let primary = cluster.primary.clone();
        let primary_facts = match fresh.get(&primary) {
            Some(instance) if instance.is_reachable() => instance.facts.clone(),
            other => {
                return Err(SwitchoverError::PrimaryUnreachable {
                    cluster: cluster_name.to_string(),
                    primary: primary.clone(),
                    reason: other
                        .and_then(|i| i.last_error.clone())
                        .unwrap_or_else(|| "never probed".into()),
                })
            }
        };
        if let Some(to) = to {
            check_membership(to, cluster, &clusters, &fresh)?;
        }
        let semi_sync = primary_facts
            .as_ref()
            .is_some_and(|f| f.semi_sync.source_enabled);
        let primary_was_writable = primary_facts.is_some_and(|f| !read_only_on(&f));

        let plan = plan_promotion(&primary, &fresh, &self.policy, None);
        let verdicts = match plan {
            Ok(plan) => plan.verdicts,
            Err(PlanError::NoCandidate { verdicts, .. }) => verdicts,
            Err(PlanError::NoReplicas { .. }) => {
                return Err(SwitchoverError::NoReplicas {
                    cluster: cluster_name.to_string(),
                    primary,
                })
            }
            Err(other) => return Err(SwitchoverError::Plan(other)),
        };
        let fenced = self.store.fenced().unwrap_or_default();
        // plan's verdicts, ranked best first, plus what a live switchover also needs.
        let judged: Vec<(InstanceKey, Vec<String>)> = verdicts
            .iter()
            .map(|verdict| {
                let mut reasons = verdict.reasons.clone();
                // A stopped SQL thread is already one of plan's reasons.
                if !reasons.iter().any(|r| r.starts_with("SQL thread stopped")) {
                    if let Some(instance) =
                        fresh.get(&verdict.instance).filter(|i| i.is_reachable())
                    {
                        reasons.extend(not_replicating(instance));
                    }
                }
                if let Some(fence) = fenced.iter().find(|f| f.instance == verdict.instance) {
                    reasons.push(format!(
                        "fenced as an old primary{}: `pointsman reattach {}` first",
                        fence
                            .recovery_id
                            .as_deref()
                            .map(|id| format!(" by recovery {id}"))
                            .unwrap_or_default(),
                        verdict.instance
                    ));
                }
                (verdict.instance.clone(), reasons)
            })
            .collect();

        let candidate = match to {
            Some(to) => {
                let (_, reasons) = judged.iter().find(|(k, _)| k == to).ok_or_else(|| {
                    // Probed as a member, yet not a direct replica any more.
                    SwitchoverError::Ineligible {
                        instance: to.clone(),
                        reasons: vec![format!("it no longer replicates from {primary}")],
                    }
                })?;
                if !reasons.is_empty() {
                    return Err(SwitchoverError::Ineligible {
                        instance: to.clone(),
                        reasons: reasons.clone(),
                    });
                }
                to.clone()
            }
            None => match judged.iter().find(|(_, reasons)| reasons.is_empty()) {
                Some((best, _)) => best.clone(),
                None => {
                    return Err(SwitchoverError::NoCandidate {
                        primary,
                        skipped: judged,
                    })
                }
            },
        };

        let mut siblings = Vec::new();
        let mut unreachable = Vec::new();
        for (key, _) in &judged {
            if *key == candidate {
                continue;
            }
            match fresh.get(key) {
                Some(instance) if instance.is_reachable() => siblings.push(key.clone()),
                other => unreachable.push((
                    key.clone(),
                    other
                        .and_then(|i| i.last_error.clone())
                        .unwrap_or_else(|| "never probed".into()),
                )),
            }
        }
        let explanation = judged
            .iter()
            .map(|(key, reasons)| {
                if *key == candidate {
                    format!("{key} chosen")
                } else if reasons.is_empty() {
                    format!("{key} eligible, ranked lower")
                } else {
                    format!("{key} skipped: {}", reasons.join("; "))
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Choice {
            cluster: cluster_name.to_string(),
            primary,
            candidate,
            siblings,
            unreachable,
            primary_was_writable,
            semi_sync,
            explanation,
            members: cluster.members.clone(),
        })
    }

    /// Probes `keys` now, concurrently, and returns the snapshot with their answers (an
    /// instance that does not answer is marked unreachable with the error).
    async fn look_now(&self, snapshot: &Snapshot, keys: &[InstanceKey]) -> Snapshot {
        let settings = &self.executor.connect;
        let answers = join_all(keys.iter().map(|key| async move {
            let result = async {
                let mut conn = Connection::open(key, settings).await?;
                let facts = probe(&mut conn).await;
                conn.close().await;
                facts
            }
            .await;
            (key.clone(), result)
        }))
        .await;
        let mut fresh = snapshot.clone();
        let now = SystemTime::now();
        for (key, answer) in answers {
            let instance = fresh
                .instances
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Instance::new(key)));
            let instance = Arc::make_mut(instance);
            match answer {
                Ok(facts) => {
                    instance.facts = Some(facts);
                    instance.last_seen = Some(now);
                    instance.unreachable_since = None;
                    instance.last_error = None;
                }
                Err(error) => {
                    instance.unreachable_since.get_or_insert(now);
                    instance.last_failure = Some(now);
                    instance.last_error = Some(error.without_instance());
                }
            }
        }
        fresh
    }

    /// Records the switchover and runs it to its end.
    async fn carry_out(
        &self,
        choice: Choice,
        who: &str,
    ) -> Result<SwitchoverReport, SwitchoverError> {
        let started = Instant::now();
        let now = SystemTime::now();
        let id = format!(
            "{}-switchover-{}",
            choice.cluster.replace([':', '.'], "-"),
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
        );
        let mut record = RecoveryRecord::started(
            &id,
            &choice.cluster,
            "switchover",
            "Switchover",
            &choice.primary,
            who,
            now,
        );
        // Kind `switchover`: `blocking_recovery` does not count it, since a planned
        // change is no sign of a flapping cluster.
        let epoch = self.executor.lease.gate().map_or(0, |grant| grant.epoch);
        let mut log = StepLog::journaled(&id, self.store.clone()).mirrored(
            self.mirror.as_ref(),
            &record,
            epoch,
        );
        let outcome = match self.store.insert_recovery(&record) {
            Err(error) => {
                // Without a record (and its journal) nobody could settle what this began.
                tracing::error!(%error, recovery_id = %id, "cannot record the switchover: nothing is changed");
                Err(Ending::Aborted(format!(
                    "the store cannot be written ({error}): nothing was changed"
                )))
            }
            Ok(()) => {
                log.note(
                    "choose candidate",
                    Some(&choice.candidate),
                    true,
                    choice.explanation.clone(),
                    started.elapsed(),
                );
                match log.mirror_now().await {
                    Err(error) => Err(Ending::Aborted(format!(
                        "{error}: nothing was changed (every step is recorded there before it runs)"
                    ))),
                    Ok(()) => {
                        crate::crash_point!("switchover-after-choose");
                        self.switch(&choice, &mut log).await
                    }
                }
            }
        };

        let context = self.context(&choice, &id);
        if outcome.is_ok() {
            // A failing post hook is in the steps; the switchover is done either way.
            let _ = self
                .hooks_as_steps(HookPoint::PostSwitchover, &context, &mut log)
                .await;
        }
        record.status = match &outcome {
            Ok(_) => RecoveryStatus::Succeeded,
            Err(Ending::Aborted(_)) => RecoveryStatus::Aborted,
            Err(Ending::Failed(_)) => RecoveryStatus::Failed,
        };
        // The candidate holds the role once promoted, even when attaching failed after.
        let promoted = log
            .steps
            .iter()
            .any(|s| s.step == "promote" && s.ok && s.instance.as_ref() == Some(&choice.candidate));
        record.successor = promoted.then(|| choice.candidate.clone());
        record.steps = log.steps;
        record.finished_at = Some(SystemTime::now());
        if let Err(error) = self.store.update_recovery(&record) {
            tracing::error!(%error, recovery_id = %id, "cannot record the switchover's outcome");
        }
        if let Some(mirror) = &self.mirror {
            mirror.remove(&id).await;
        }
        let message = match &outcome {
            Ok(Switched {
                write_gap_ms,
                route_gap_ms,
                left_behind,
                ..
            }) => format!(
                "switchover of {}: {} is the new primary, {} its replica; writes paused {write_gap_ms} ms{}; done in {} ms{}",
                choice.cluster,
                choice.candidate,
                choice.primary,
                route_gap_ms
                    .map(|ms| format!(", and the routes named it {ms} ms later"))
                    .unwrap_or_default(),
                started.elapsed().as_millis(),
                if left_behind.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; not re-pointed (see the steps): {}",
                        left_behind
                            .iter()
                            .map(|k| k.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
            Err(Ending::Aborted(why)) => format!("switchover of {} aborted: {why}", choice.cluster),
            Err(Ending::Failed(why)) => format!("switchover of {} failed: {why}", choice.cluster),
        };
        let _ = self.store.audit(AuditEntry {
            actor: who.to_string(),
            action: "switchover".into(),
            cluster: Some(choice.cluster.clone()),
            instance: Some(choice.candidate.clone()),
            message,
        });
        // Everyone's role just changed: look now, and answer once the agent sees it.
        self.discovery
            .probe_and_wait(choice.members.clone(), Duration::from_secs(2))
            .await;
        match outcome {
            Ok(switched) => Ok(SwitchoverReport {
                recovery: record,
                old_primary: choice.primary,
                new_primary: choice.candidate,
                write_gap_ms: switched.write_gap_ms,
                route_gap_ms: switched.route_gap_ms,
                routing: switched.routing,
            }),
            Err(Ending::Aborted(reason)) => Err(SwitchoverError::Aborted {
                recovery_id: id,
                reason,
            }),
            Err(Ending::Failed(reason)) => Err(SwitchoverError::Failed {
                recovery_id: id,
                reason,
            }),
        }
    }

    fn context(&self, choice: &Choice, id: &str) -> HookContext {
        HookContext {
            failure_type: "Switchover".into(),
            cluster: choice.cluster.clone(),
            failed: Some(choice.primary.clone()),
            successor: Some(choice.candidate.clone()),
            recovery_id: id.to_string(),
            description: format!("planned switchover of {}", choice.cluster),
            replicas: choice
                .siblings
                .iter()
                .chain(std::iter::once(&choice.candidate))
                .cloned()
                .collect(),
            ..HookContext::default()
        }
    }

    /// Runs the hooks of `point`, each recorded as a step; the first failure's account.
    async fn hooks_as_steps(
        &self,
        point: HookPoint,
        context: &HookContext,
        log: &mut StepLog,
    ) -> Result<(), String> {
        let mut failure = None;
        for run in run_hooks(point, &self.hooks, context).await {
            let detail = describe_run(&run);
            if !run.succeeded() && failure.is_none() {
                failure = Some(detail.clone());
            }
            log.note(
                &format!("hook {}", point.name()),
                None,
                run.succeeded(),
                detail,
                Duration::from_millis(run.duration_ms),
            );
        }
        failure.map_or(Ok(()), Err)
    }

    /// The switchover proper. On success: the write and route gaps, and the replicas
    /// that could not be re-pointed (each step says why).
    async fn switch(&self, choice: &Choice, log: &mut StepLog) -> Result<Switched, Ending> {
        let old = &choice.primary;
        let candidate = &choice.candidate;
        let context = self.context(choice, &log.recovery_id);
        if let Err(hook) = self
            .hooks_as_steps(HookPoint::PreSwitchover, &context, log)
            .await
        {
            return Err(Ending::Aborted(format!(
                "a pre_switchover hook failed: {hook}"
            )));
        }

        // Writes stop at the database and in the routes at once: ProxySQL then holds new
        // writes until the new primary is routed, instead of sending them to a read_only
        // server (and sessions tied to the old primary are cut while the pause lasts,
        // not after it).
        let exchange = Exchange::of(&self.executor, choice);
        let recovery_id = log.recovery_id.clone();
        let ((exchanged, paused_routes), pause_took) = timed(async {
            tokio::join!(
                exchange.run(log),
                self.routing
                    .pause_writer(&choice.cluster, old, &recovery_id)
            )
        })
        .await;
        if paused_routes.routed && !paused_routes.backends.is_empty() {
            log.note(
                "withdraw routes",
                Some(old),
                paused_routes.complete(),
                format!(
                    "no route names {old} as the writer while writes are paused: {paused_routes}"
                ),
                pause_took,
            );
        }
        let gap = match exchanged {
            Ok(gap) => gap,
            Err(ending) => {
                // Rolled back: the old primary writes again, and the routes follow it.
                self.routing.release(&choice.cluster).await;
                return Err(ending);
            }
        };

        for (key, why) in &choice.unreachable {
            log.note(
                "re-point",
                Some(key),
                false,
                format!("skipped: did not answer ({why}); it still replicates from {old}"),
                Duration::ZERO,
            );
        }
        // Concurrently: the other replicas get no new transactions until re-pointed.
        // Traffic moves while the others follow. The old primary is read_only already
        // and withdrawn from the routes, so no backend ever names two writers.
        let mut attach_log = log.branch();
        let mut repoint_log = log.branch();
        let _ = log.begin("route", Some(candidate)).await;
        let ((report, routing_took), attached, not_repointed) = tokio::join!(
            timed(self.routing.route_writer(
                &choice.cluster,
                candidate,
                old,
                false,
                &log.recovery_id
            )),
            self.executor
                .attach(&mut attach_log, old, candidate, choice.semi_sync),
            self.executor
                .repoint_under(&mut repoint_log, &choice.siblings, candidate)
        );
        log.note(
            "route",
            Some(candidate),
            report.complete(),
            format!("routes name {candidate} as the writer: {report}"),
            routing_took,
        );
        log.absorb(attach_log);
        log.absorb(repoint_log);
        if choice.semi_sync {
            self.executor.carry_semi_sync(log, candidate).await;
        }
        crate::crash_point!("switchover-after-repoint");
        if let Err(error) = attached {
            // Kept read_only by the fence, and `reattach` knows where it belongs from
            // this record's successor.
            let fenced = self
                .store
                .fence(old, &choice.cluster, Some(&log.recovery_id))
                .is_ok();
            log.note(
                "fence",
                Some(old),
                fenced,
                "marked fenced: set read_only whenever it answers, until re-attached".into(),
                Duration::ZERO,
            );
            return Err(Ending::Failed(format!(
                "{candidate} is the primary and takes writes (writes paused {gap} ms), but {old} could not be made its replica: {error}; {old} is fenced (kept read_only): fix the cause, then `pointsman reattach {old}`"
            )));
        }
        let mut left_behind: Vec<InstanceKey> = not_repointed;
        left_behind.extend(choice.unreachable.iter().map(|(key, _)| key.clone()));
        let route_gap_ms = (report.routed && !report.backends.is_empty() && report.complete())
            .then(|| {
                report
                    .backends
                    .iter()
                    .filter_map(|b| b.took_ms)
                    .max()
                    .unwrap_or(0)
                    .max(1)
            });
        Ok(Switched {
            write_gap_ms: gap,
            route_gap_ms,
            routing: report.to_string(),
            left_behind,
        })
    }
}

/// What a switchover that went through reports.
struct Switched {
    write_gap_ms: u64,
    route_gap_ms: Option<u64>,
    routing: String,
    left_behind: Vec<InstanceKey>,
}

/// The part of a switchover that moves the writes: both sessions opened before writes
/// stop, the pause, the promotion, and undoing them when a step fails. It needs only the
/// executor, so the unit tests below run it on the in-memory topology.
struct Exchange<'a> {
    executor: &'a Executor,
    old: &'a InstanceKey,
    candidate: &'a InstanceKey,
    /// Restored on roll-back: a primary that was read_only stays so.
    primary_was_writable: bool,
}

impl<'a> Exchange<'a> {
    fn of(executor: &'a Executor, choice: &'a Choice) -> Self {
        Exchange {
            executor,
            old: &choice.primary,
            candidate: &choice.candidate,
            primary_was_writable: choice.primary_was_writable,
        }
    }

    /// Opens a session on both servers (through the lease gate) before writes stop, so
    /// the pause holds only the statements, then pauses and promotes. The write gap in
    /// milliseconds.
    async fn run(&self, log: &mut StepLog) -> Result<u64, Ending> {
        let connecting = Instant::now();
        let (old_session, candidate_session) = tokio::join!(
            self.executor.open(self.old),
            self.executor.open(self.candidate)
        );
        let (mut old_session, mut candidate_session) = match (old_session, candidate_session) {
            (Ok(o), Ok(c)) => (o, c),
            (o, c) => {
                let error = o.err().or(c.err()).map(|e| e.to_string());
                let reason = error.unwrap_or_default();
                log.note("connect", None, false, reason.clone(), connecting.elapsed());
                return Err(Ending::Aborted(reason));
            }
        };
        let result = self
            .pause_and_promote(old_session.as_mut(), candidate_session.as_mut(), log)
            .await;
        old_session.close().await;
        candidate_session.close().await;
        result
    }

    /// From read_only ON on the old primary to read_only OFF on the candidate: the only
    /// part of a switchover during which writes are refused. Any failure restores the
    /// old primary, never leaving two writable primaries.
    async fn pause_and_promote(
        &self,
        old_session: &mut dyn AdminSession,
        candidate_session: &mut dyn AdminSession,
        log: &mut StepLog,
    ) -> Result<u64, Ending> {
        let old = self.old;
        let candidate = self.candidate;
        // The journal says what is about to happen before writes stop: whoever acts
        // after a crash inside the pause knows to give the old primary its writes back.
        let begun = match log.begin("read_only ON", Some(old)).await {
            Ok(()) => log.begin("catch up", Some(candidate)).await,
            Err(error) => Err(error),
        };
        if let Err(error) = begun {
            return Err(Ending::Aborted(format!(
                "the journal could not be written ({error}): nothing was changed"
            )));
        }
        let paused = Instant::now();
        if let Err(error) = old_session.set_read_only(true).await {
            let took = paused.elapsed();
            log.note(
                "read_only ON",
                Some(old),
                false,
                error.without_instance(),
                took,
            );
            return Err(self
                .roll_back(log, format!("{old} could not be set read_only: {error}"))
                .await);
        }
        let read_only_took = paused.elapsed();
        crate::crash_point!("switchover-after-read-only");
        let gtids = match old_session.written_gtids().await {
            Ok(gtids) => gtids,
            Err(error) => {
                log.note(
                    "read_only ON",
                    Some(old),
                    true,
                    "writes stop".into(),
                    read_only_took,
                );
                return Err(self
                    .roll_back(
                        log,
                        format!("the GTIDs of {old} could not be read: {error}"),
                    )
                    .await);
            }
        };
        let waiting = Instant::now();
        if let Err(error) = candidate_session
            .wait_for_gtids(&gtids, self.executor.apply_timeout)
            .await
        {
            let took = waiting.elapsed();
            log.note(
                "read_only ON",
                Some(old),
                true,
                format!("writes stop; it has executed {gtids}"),
                read_only_took,
            );
            log.note(
                "catch up",
                Some(candidate),
                false,
                error.without_instance(),
                took,
            );
            return Err(self
                .roll_back(
                    log,
                    format!(
                        "{candidate} did not apply everything {old} wrote ({gtids}) within recovery.apply_timeout ({}s)",
                        self.executor.apply_timeout.as_secs().max(1)
                    ),
                )
                .await);
        }
        let wait_took = waiting.elapsed();
        crate::crash_point!("switchover-after-catch-up");
        if let Err(error) = log.begin("promote", Some(candidate)).await {
            return Err(self
                .roll_back(log, format!("the journal could not be written ({error})"))
                .await);
        }
        let promoting = Instant::now();
        let promoted = candidate_session.promote().await;
        crate::crash_point!("switchover-after-promote");
        let promote_took = promoting.elapsed();
        let gap_ms = millis_up(paused.elapsed());
        // Recorded once writes flow again, so logging adds nothing to the pause.
        log.note(
            "read_only ON",
            Some(old),
            true,
            format!("writes stop; it has executed {gtids}"),
            read_only_took,
        );
        log.note(
            "catch up",
            Some(candidate),
            true,
            format!("applied everything {old} wrote"),
            wait_took,
        );
        match promoted {
            Ok(()) => {
                log.note(
                    "promote",
                    Some(candidate),
                    true,
                    format!(
                        "replication reset, read_only OFF: takes writes; writes were paused {gap_ms} ms"
                    ),
                    promote_took,
                );
                Ok(gap_ms)
            }
            Err(error) => {
                log.note(
                    "promote",
                    Some(candidate),
                    false,
                    error.without_instance(),
                    promote_took,
                );
                Err(self.undo_promotion(log, error).await)
            }
        }
    }

    /// After a failed promotion the candidate may or may not take writes: it is made
    /// read_only before the old primary takes writes again, or the old primary stays
    /// read_only, so two primaries never take writes at once.
    async fn undo_promotion(&self, log: &mut StepLog, error: MysqlError) -> Ending {
        let candidate = self.candidate;
        let started = Instant::now();
        let fenced = self.executor.set_read_only(candidate, true).await;
        match fenced {
            Ok(()) => {
                log.note(
                    "read_only ON",
                    Some(candidate),
                    true,
                    "the half-promoted candidate takes no writes".into(),
                    started.elapsed(),
                );
                let ending = self
                    .roll_back(log, format!("{candidate} could not be promoted: {error}"))
                    .await;
                // Its replication may be reset already: put it back under the old primary.
                let _ = self.executor.attach(log, candidate, self.old, false).await;
                ending
            }
            Err(fence_error) => {
                log.note(
                    "read_only ON",
                    Some(candidate),
                    false,
                    fence_error.without_instance(),
                    started.elapsed(),
                );
                Ending::Failed(format!(
                    "{candidate} could not be promoted ({error}) nor set read_only ({fence_error}); {} stays read_only so that two primaries never take writes: check {candidate}, then make one of them writable by hand",
                    self.old
                ))
            }
        }
    }

    /// Gives the old primary its writes back (if it had them) on a fresh connection,
    /// since the one in use may have died with the failure.
    async fn roll_back(&self, log: &mut StepLog, why: String) -> Ending {
        let old = self.old;
        if !self.primary_was_writable {
            return Ending::Failed(format!("{why}; {old} was read_only before and stays so"));
        }
        let started = Instant::now();
        let restored = self.executor.set_read_only(old, false).await;
        match restored {
            Ok(()) => {
                log.note(
                    "roll back",
                    Some(old),
                    true,
                    "read_only OFF: takes writes again".into(),
                    started.elapsed(),
                );
                Ending::Failed(format!(
                    "{why}; rolled back: {old} is the primary and takes writes again"
                ))
            }
            Err(error) => {
                log.note(
                    "roll back",
                    Some(old),
                    false,
                    error.without_instance(),
                    started.elapsed(),
                );
                Ending::Failed(format!(
                    "{why}; rolling back failed too ({error}): {old} is read_only and nothing takes writes; set read_only OFF on {old} by hand"
                ))
            }
        }
    }
}

/// Refuses a requested candidate that is not in the cluster, naming where it is.
fn check_membership(
    to: &InstanceKey,
    cluster: &ClusterView,
    clusters: &[ClusterView],
    snapshot: &Snapshot,
) -> Result<(), SwitchoverError> {
    if *to == cluster.primary {
        return Err(SwitchoverError::AlreadyPrimary {
            instance: to.clone(),
            cluster: cluster.name.clone(),
        });
    }
    if cluster.members.contains(to) {
        let source = snapshot.get(to).and_then(|i| i.source());
        return match source {
            Some(source) if *source != cluster.primary => Err(SwitchoverError::Ineligible {
                instance: to.clone(),
                reasons: vec![format!(
                    "it replicates from {source}, not from the primary {}: only a direct replica takes over",
                    cluster.primary
                )],
            }),
            _ => Ok(()),
        };
    }
    match clusters.iter().find(|c| c.members.contains(to)) {
        Some(other) => Err(SwitchoverError::OtherCluster {
            instance: to.clone(),
            cluster: cluster.name.clone(),
            other: other.name.clone(),
        }),
        None => Err(SwitchoverError::UnknownInstance {
            instance: to.clone(),
            cluster: cluster.name.clone(),
        }),
    }
}

/// Why a replica cannot catch up with its primary right now, if it cannot.
fn not_replicating(instance: &Instance) -> Option<String> {
    let status = instance.facts.as_ref()?.replication.as_ref()?;
    if status.is_replicating() {
        return None;
    }
    let mut broken = Vec::new();
    if status.io_running != IoThreadState::Yes {
        broken.push(if status.last_io_errno != 0 {
            format!(
                "IO error {}: {}",
                status.last_io_errno, status.last_io_error
            )
        } else {
            format!("IO thread {:?}", status.io_running)
        });
    }
    if !status.sql_running {
        broken.push(if status.last_sql_errno != 0 {
            format!(
                "SQL thread stopped on error {}: {}",
                status.last_sql_errno, status.last_sql_error
            )
        } else {
            "SQL thread stopped".to_string()
        });
    }
    Some(format!(
        "not replicating ({}): it could not apply the primary's last writes; repair it or choose another candidate",
        broken.join(", ")
    ))
}

/// Whether read_only (or MySQL's super_read_only) is set.
fn read_only_on(facts: &InstanceFacts) -> bool {
    facts.read_only || facts.super_read_only == Some(true)
}

/// Whole milliseconds, rounded up.
fn millis_up(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::solo;
    use crate::recovery::fake::{FakeServer, FakeTopology, Op};
    use crate::topology::instance::tests_support::{primary, replica};

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    /// A healthy primary 1 that executed 20 transactions; its replica 2 received and
    /// applied 18 of them so far.
    fn healthy() -> FakeTopology {
        FakeTopology::new([
            (key(1), FakeServer::primary(20)),
            (key(2), FakeServer::replica(&key(1), 18, 18)),
        ])
    }

    /// Runs the writes' move from 1 to 2 on `fake`.
    async fn exchange(
        fake: &FakeTopology,
        primary_was_writable: bool,
    ) -> (Result<u64, Ending>, StepLog) {
        let executor = fake.executor(solo());
        let (old, candidate) = (key(1), key(2));
        let mut log = StepLog::new("s");
        let result = Exchange {
            executor: &executor,
            old: &old,
            candidate: &candidate,
            primary_was_writable,
        }
        .run(&mut log)
        .await;
        (result, log)
    }

    fn failure(result: Result<u64, Ending>) -> String {
        match result {
            Err(Ending::Failed(why)) => why,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn writes_stop_on_the_old_primary_before_the_candidate_catches_up_and_is_promoted() {
        let fake = healthy();
        let (result, log) = exchange(&fake, true).await;
        result.expect("switched");
        let order = [
            fake.first(&key(1), Op::Open)
                .max(fake.first(&key(2), Op::Open)),
            fake.first(&key(1), Op::SetReadOnly(true)),
            fake.first(&key(1), Op::WrittenGtids),
            fake.first(&key(2), Op::WaitForGtids),
            fake.first(&key(2), Op::Promote),
        ];
        assert!(order.is_sorted(), "{:?}", fake.operations());
        let (old, new) = (fake.server(&key(1)), fake.server(&key(2)));
        assert!(old.read_only);
        assert!(!new.read_only && new.source.is_none());
        assert_eq!(
            new.executed, 20,
            "it applied every write of the old primary"
        );
        let steps: Vec<(&str, bool)> = log.steps.iter().map(|s| (s.step.as_str(), s.ok)).collect();
        assert_eq!(
            steps,
            [
                ("read_only ON", true),
                ("catch up", true),
                ("promote", true)
            ]
        );
    }

    #[tokio::test]
    async fn a_candidate_that_cannot_catch_up_gives_the_old_primary_its_writes_back() {
        let fake = healthy();
        fake.update(&key(2), |s| s.io_running = false);
        let (result, _) = exchange(&fake, true).await;
        let why = failure(result);
        assert!(
            why.contains("rolled back: 127.0.0.1:1 is the primary"),
            "{why}"
        );
        assert!(
            fake.first(&key(2), Op::WaitForGtids) < fake.first(&key(1), Op::SetReadOnly(false))
        );
        assert_eq!(fake.find(&key(2), Op::Promote), None);
        assert!(!fake.server(&key(1)).read_only);
        let candidate = fake.server(&key(2));
        assert!(candidate.read_only);
        assert_eq!(candidate.source, Some(key(1)));
    }

    #[tokio::test]
    async fn a_primary_that_was_read_only_stays_so_on_roll_back() {
        let fake = healthy();
        fake.update(&key(1), |s| s.read_only = true);
        fake.update(&key(2), |s| s.io_running = false);
        let (result, _) = exchange(&fake, false).await;
        assert!(failure(result).contains("was read_only before and stays so"));
        assert_eq!(fake.find(&key(1), Op::SetReadOnly(false)), None);
        assert!(fake.server(&key(1)).read_only);
    }

    #[tokio::test]
    async fn a_failed_promotion_makes_the_candidate_read_only_before_the_old_primary_writes() {
        let fake = healthy();
        fake.fail(&key(2), Op::Promote);
        let (result, _) = exchange(&fake, true).await;
        assert!(failure(result).contains("could not be promoted"));
        let fenced = fake.first(&key(2), Op::SetReadOnly(true));
        assert!(fake.first(&key(2), Op::Promote) < fenced);
        assert!(fenced < fake.first(&key(1), Op::SetReadOnly(false)));
        assert!(fake.first(&key(1), Op::SetReadOnly(false)) < fake.first(&key(2), Op::Attach));
        assert!(!fake.server(&key(1)).read_only);
        let candidate = fake.server(&key(2));
        assert!(candidate.read_only);
        assert_eq!(candidate.source, Some(key(1)));
    }

    #[tokio::test]
    async fn a_candidate_that_does_not_answer_aborts_before_writes_stop() {
        let fake = healthy();
        fake.update(&key(2), |s| s.reachable = false);
        let (result, log) = exchange(&fake, true).await;
        assert!(matches!(result, Err(Ending::Aborted(_))), "{result:?}");
        assert_eq!(fake.find(&key(1), Op::SetReadOnly(true)), None);
        assert!(!fake.server(&key(1)).read_only);
        assert_eq!(log.steps[0].step, "connect");
    }

    #[test]
    fn a_stopped_thread_is_a_reason_with_its_error() {
        let mut broken = replica(key(2), key(1));
        let status = broken
            .facts
            .as_mut()
            .and_then(|f| f.replication.as_mut())
            .expect("replica");
        status.sql_running = false;
        status.last_sql_errno = 1062;
        status.last_sql_error = "Duplicate entry".into();
        let reason = not_replicating(&broken).expect("a reason");
        assert!(
            reason.contains("SQL thread stopped on error 1062: Duplicate entry"),
            "{reason}"
        );
        assert_eq!(not_replicating(&replica(key(3), key(1))), None);
        assert_eq!(not_replicating(&primary(key(1))), None);
    }

    #[test]
    fn the_gap_is_rounded_up_never_down_to_nothing() {
        assert_eq!(millis_up(Duration::from_micros(300)), 1);
        assert_eq!(millis_up(Duration::from_micros(2001)), 3);
        assert_eq!(millis_up(Duration::from_millis(7)), 7);
    }

    #[test]
    fn membership_refusals_name_the_instance() {
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
        let cluster = clusters
            .iter()
            .find(|c| c.primary == key(1))
            .expect("cluster");
        let text = |to: u16| {
            check_membership(&key(to), cluster, &clusters, &snapshot)
                .expect_err("refused")
                .to_string()
        };
        assert!(text(1).contains("127.0.0.1:1 is already the primary"));
        assert!(text(3).contains("127.0.0.1:3 may not be promoted: it replicates from 127.0.0.1:2"));
        assert!(text(9).contains("127.0.0.1:9 is not an instance of cluster 127.0.0.1:1: it belongs to cluster 127.0.0.1:9"));
        assert!(text(7).contains("127.0.0.1:7 is not an instance of cluster 127.0.0.1:1: pointsman knows no such instance"));
        assert!(check_membership(&key(2), cluster, &clusters, &snapshot).is_ok());
    }
}
