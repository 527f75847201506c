//! Resuming a recovery that its agent did not finish (it was killed, or lost its lease,
//! part-way). Whoever acts next reads the recovery's journal, looks at what the servers
//! say now, and brings the cluster back to **exactly one writable primary, every
//! reachable replica replicating from it**:
//!
//! - past the point of no return — the candidate's replication was reset by `promote` —
//!   the promotion is finished: the candidate made writable, the others re-pointed under
//!   it, the old primary fenced (a failover) or attached below it (a switchover), routes
//!   moved;
//! - before it, what was begun is undone: replication started again where the recovery
//!   stopped it, the failed primary's fence lifted, a switchover's old primary given its
//!   writes back. The recovery is then `rolled_back`, which blocks nothing, so a failure
//!   that is still there is judged and recovered afresh;
//! - when an instance that decides between the two does not answer, nothing is touched
//!   and the agent looks again.
//!
//! `resolve` is the decision, pure over the journal and a snapshot; `Coordinator::
//! resume_unfinished` carries it out, journaled like any other recovery step.

use super::coordinator::Coordinator;
use super::execute::StepLog;
use crate::store::recovery::{RecoveryRecord, RecoveryStatus, StepRecord};
use crate::store::AuditEntry;
use crate::topology::{InstanceKey, IoThreadState, Snapshot};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What to do with an unfinished recovery.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// The candidate was promoted (its replication is reset): finish the promotion.
    Finish {
        primary: InstanceKey,
        /// It is still read_only: the crash came between the reset and read_only OFF.
        make_writable: bool,
        /// Replicas that still replicate from somewhere else.
        repoint: Vec<InstanceKey>,
        /// A switchover's old primary, to be attached below the new one.
        attach: Option<InstanceKey>,
    },
    /// Nothing was promoted: undo what the recovery had begun.
    RollBack {
        /// Replicas the recovery stopped (or was moving) that do not replicate now.
        restart: Vec<InstanceKey>,
        /// A switchover's old primary, set read_only by it: writable again.
        writable_again: Option<InstanceKey>,
        /// A failover's fence on the old primary, recorded by this recovery.
        lift_fence: Option<InstanceKey>,
    },
    /// The servers cannot tell yet; look again later.
    Wait(String),
}

/// Steps that stop or move a replica's replication.
const REPLICATION_STEPS: &[&str] = &["stop IO thread", "catch up", "re-point", "apply relay log"];

/// Decides how to settle `record`, an unfinished recovery whose journal is `steps`, from
/// what the servers say in `snapshot`.
pub fn resolve(record: &RecoveryRecord, steps: &[StepRecord], snapshot: &Snapshot) -> Resolution {
    let old = &record.failed;
    let facts = |key: &InstanceKey| {
        snapshot
            .get(key)
            .filter(|i| i.is_reachable())
            .and_then(|i| i.facts.as_ref())
    };
    let candidate = steps
        .iter()
        .find(|s| s.step == "choose candidate" && s.ok)
        .and_then(|s| s.instance.clone());
    let began = |name: &str, key: &InstanceKey| {
        steps
            .iter()
            .any(|s| s.step == name && s.instance.as_ref() == Some(key))
    };
    // Everyone the recovery touched, and every replica of the old primary now.
    let mut touched: BTreeSet<InstanceKey> =
        steps.iter().filter_map(|s| s.instance.clone()).collect();
    touched.extend(
        snapshot
            .instances
            .values()
            .filter(|i| i.source() == Some(old))
            .map(|i| i.key.clone()),
    );
    touched.remove(old);

    // Probed at least once since the agent started (answering or not): before that,
    // how far the recovery got cannot be told, nor who still hangs below the old primary.
    let unprobed = |key: &InstanceKey| {
        snapshot
            .get(key)
            .is_none_or(|i| i.facts.is_none() && i.unreachable_since.is_none())
    };
    let unknown: Vec<&InstanceKey> = std::iter::once(old)
        .chain(candidate.as_ref())
        .chain(snapshot.instances.keys())
        .filter(|key| unprobed(key))
        .collect();
    if let Some(key) = unknown.first() {
        return Resolution::Wait(format!("{key} has not been probed yet"));
    }

    let promotion = candidate
        .as_ref()
        .filter(|candidate| began("promote", candidate));
    if let Some(candidate) = promotion {
        let Some(candidate_facts) = facts(candidate) else {
            return Resolution::Wait(format!(
                "{candidate} was being promoted and does not answer: whether it takes writes cannot be told yet"
            ));
        };
        if candidate_facts.replication.is_none() {
            let repoint = touched
                .iter()
                .filter(|key| *key != candidate)
                .filter(|key| {
                    facts(key)
                        .and_then(|f| f.replication.as_ref())
                        .is_some_and(|r| &r.source != candidate)
                })
                .cloned()
                .collect();
            let attach = (record.kind == "switchover"
                && facts(old).is_some_and(|f| {
                    f.replication
                        .as_ref()
                        .is_none_or(|r| &r.source != candidate)
                }))
            .then(|| old.clone());
            return Resolution::Finish {
                primary: candidate.clone(),
                make_writable: candidate_facts.read_only
                    || candidate_facts.super_read_only == Some(true),
                repoint,
                attach,
            };
        }
    }

    // Not promoted: undo.
    let restart = touched
        .iter()
        .filter(|key| REPLICATION_STEPS.iter().any(|step| began(step, key)))
        .filter(|key| {
            facts(key)
                .and_then(|f| f.replication.as_ref())
                .is_some_and(|r| r.io_running == IoThreadState::No || !r.sql_running)
        })
        .cloned()
        .collect();
    let writable_again = (record.kind == "switchover"
        && began("read_only ON", old)
        && facts(old).is_some_and(|f| f.replication.is_none() && f.read_only)
        && !snapshot.instances.values().any(|i| {
            &i.key != old
                && i.is_reachable()
                && touched.contains(&i.key)
                && i.facts
                    .as_ref()
                    .is_some_and(|f| !f.read_only && f.replication.is_none())
        }))
    .then(|| old.clone());
    let lift_fence =
        (record.kind == "failover" && steps.iter().any(|s| s.step == "fence")).then(|| old.clone());
    Resolution::RollBack {
        restart,
        writable_again,
        lift_fence,
    }
}

/// How long an unfinished recovery is looked at again while the servers cannot tell
/// how far it got; then it is left `interrupted` for an operator.
const SETTLE_FOR: Duration = Duration::from_secs(60);

impl Coordinator {
    /// With `[ha]`, on starting to lead: copies into this agent's store every recovery
    /// that an earlier leader left in the journal's copy in Consul and this store does
    /// not hold, as running, with the steps it had begun — `resume_unfinished` then
    /// settles it like one of this agent's own.
    pub(crate) async fn adopt_mirrored(&self) {
        let Some(mirror) = &self.mirror else {
            return;
        };
        let left = match mirror.left().await {
            Ok(left) => left,
            Err(error) => {
                tracing::error!(%error, "cannot read the journal in Consul: a recovery another leader left half-done is not settled by this one");
                return;
            }
        };
        let known = self
            .store
            .recoveries(None, usize::MAX >> 1)
            .unwrap_or_default();
        for mirrored in left {
            let id = mirrored.record.id.clone();
            if let Some(own) = known.iter().find(|r| r.id == id) {
                if own.status != RecoveryStatus::Running {
                    mirror.remove(&id).await; // ended here; the key outlived it
                }
                continue;
            }
            tracing::warn!(recovery_id = %id, cluster = %mirrored.record.cluster, epoch = mirrored.epoch, "a recovery begun by an earlier leader did not finish: this leader settles it");
            let mut record = mirrored.record.clone();
            record.status = RecoveryStatus::Running;
            record.steps.clear();
            let adopted = self.store.insert_recovery(&record).and_then(|()| {
                for step in &mirrored.steps {
                    let seq = self
                        .store
                        .journal_begin(&id, &step.step, step.instance.as_ref())?;
                    if !step.pending {
                        self.store.journal_end(
                            &id,
                            seq,
                            step.ok,
                            &step.detail,
                            step.duration_ms,
                        )?;
                    }
                }
                Ok(())
            });
            if let Err(error) = adopted {
                tracing::error!(%error, recovery_id = %id, "cannot copy the unfinished recovery into the store");
            }
        }
    }

    /// On starting to act: every old primary the routes record in Consul names as
    /// fenced, and this agent's store does not (a lost or replaced store, another
    /// agent's fence), is fenced here too — recorded and audited — so that losing the
    /// store never unfences an old primary. Returns whether that is done (or there is
    /// no record to read): `false` when Consul or the store could not be read, and the
    /// caller tries again. The record itself is written only once it is done
    /// (`Routing::set_fences_restored`).
    pub(crate) async fn restore_recorded_fences(&self) -> bool {
        let recorded = match self.routing.recorded_fences().await {
            None => {
                self.routing.set_fences_restored(true);
                return true;
            }
            Some(Ok(recorded)) => recorded,
            Some(Err(error)) => {
                tracing::warn!(%error, "cannot read the routes record in Consul: the fences it holds and this store lacks are restored once it can be read (until then old primaries are found by their GTIDs only)");
                return false;
            }
        };
        let Ok(known) = self.store.fenced() else {
            return false;
        };
        let mut all_recorded = true;
        for (cluster, key) in recorded {
            if known.iter().any(|f| f.instance == key) {
                continue;
            }
            let message = match self.store.fence(&key, &cluster, None) {
                Ok(()) => format!(
                    "{key} is fenced in the routes record in Consul but not in this agent's store (lost or replaced): fenced here too, read_only until `pointsman reattach`"
                ),
                Err(error) => {
                    all_recorded = false;
                    format!(
                        "{key} is fenced in the routes record in Consul; recording the fence in this agent's store failed ({error}): tried again every second, and the record is not written until then"
                    )
                }
            };
            tracing::warn!(%cluster, instance = %key, "{message}");
            let _ = self.store.audit(AuditEntry {
                actor: "agent".into(),
                action: "fence".into(),
                cluster: Some(cluster),
                instance: Some(key),
                message,
            });
        }
        // Written from the store, the record keeps only the fences the store has.
        self.routing.set_fences_restored(all_recorded);
        all_recorded
    }

    /// Settles every recovery this agent's store holds as still running (its agent
    /// stopped part-way), each in its own task with its cluster marked as changing.
    pub(crate) fn resume_unfinished(self: &Arc<Self>) {
        let unfinished: Vec<RecoveryRecord> = match self.store.recoveries(None, usize::MAX >> 1) {
            Ok(records) => records
                .into_iter()
                .filter(|r| r.status == RecoveryStatus::Running)
                .collect(),
            Err(error) => {
                tracing::error!(%error, "cannot read the recovery journal: unfinished recoveries are not resumed");
                return;
            }
        };
        for record in unfinished {
            if !self.begin_change(&record.cluster) {
                continue;
            }
            tracing::warn!(
                recovery_id = %record.id,
                cluster = %record.cluster,
                kind = %record.kind,
                "a recovery did not finish (the agent stopped while it ran): settling it"
            );
            let this = self.clone();
            tokio::spawn(async move {
                let cluster = record.cluster.clone();
                this.settle(record).await;
                this.end_change(&cluster);
            });
        }
    }

    async fn settle(&self, mut record: RecoveryRecord) {
        let started = Instant::now();
        let mut log = StepLog::journaled(&record.id, self.store.clone());
        let mut delay = Duration::from_millis(200);
        let resolution = loop {
            let steps = self.store.journal(&record.id).unwrap_or_default();
            // Everyone: a replica the journal never names may still hang below the
            // old primary, and must be seen before it is left there.
            let mut keys: Vec<InstanceKey> =
                steps.iter().filter_map(|s| s.instance.clone()).collect();
            keys.extend(self.discovery.snapshot().instances.keys().cloned());
            keys.push(record.failed.clone());
            keys.sort();
            keys.dedup();
            self.discovery
                .probe_and_wait(keys, Duration::from_secs(5))
                .await;
            let snapshot = self.discovery.snapshot();
            match resolve(&record, &steps, &snapshot) {
                Resolution::Wait(why) if started.elapsed() < SETTLE_FOR => {
                    tracing::info!(recovery_id = %record.id, "{why}; looking again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                resolution => break resolution,
            }
        };
        let (status, message) = match resolution {
            Resolution::Wait(why) => {
                log.note(
                    "resume",
                    None,
                    false,
                    format!("not settled after {}s: {why}; look at the cluster, then `pointsman ack {}`", SETTLE_FOR.as_secs(), record.cluster),
                    started.elapsed(),
                );
                (
                    RecoveryStatus::Interrupted,
                    format!(
                        "recovery {} was cut short and could not be settled: {why}",
                        record.id
                    ),
                )
            }
            Resolution::Finish {
                primary,
                make_writable,
                repoint,
                attach,
            } => {
                log.note(
                    "resume",
                    Some(&primary),
                    true,
                    format!(
                        "found {primary} promoted (its replication reset): finishing the promotion"
                    ),
                    Duration::ZERO,
                );
                let finished = self
                    .finish_promotion(
                        &record,
                        &primary,
                        make_writable,
                        &repoint,
                        attach.as_ref(),
                        &mut log,
                    )
                    .await;
                record.successor = Some(primary.clone());
                match finished {
                    Ok(()) => (
                        RecoveryStatus::Succeeded,
                        format!("recovery {} resumed after a stop of its agent: {primary} is the primary of {}", record.id, record.cluster),
                    ),
                    Err(why) => (
                        RecoveryStatus::Failed,
                        format!("recovery {} resumed after a stop of its agent, {primary} is the primary, but: {why}", record.id),
                    ),
                }
            }
            Resolution::RollBack {
                restart,
                writable_again,
                lift_fence,
            } => {
                log.note(
                    "resume",
                    None,
                    true,
                    "found nothing promoted: undoing what was begun".into(),
                    Duration::ZERO,
                );
                self.undo_begun(
                    &record,
                    &restart,
                    writable_again.as_ref(),
                    lift_fence.as_ref(),
                    &mut log,
                )
                .await;
                (
                    RecoveryStatus::RolledBack,
                    format!("recovery {} was cut short before any promotion and was rolled back; the cluster is judged afresh", record.id),
                )
            }
        };
        record.status = status;
        record.finished_at = Some(SystemTime::now());
        record.steps = self.store.journal(&record.id).unwrap_or(log.steps);
        if let Err(error) = self.store.update_recovery(&record) {
            tracing::error!(%error, recovery_id = %record.id, "cannot record how the unfinished recovery was settled");
        }
        if let Some(mirror) = &self.mirror {
            mirror.remove(&record.id).await;
        }
        tracing::warn!(recovery_id = %record.id, cluster = %record.cluster, "{message}");
        let _ = self.store.audit(AuditEntry {
            actor: "agent".into(),
            action: "recovery-resumed".into(),
            cluster: Some(record.cluster.clone()),
            instance: Some(record.failed.clone()),
            message,
        });
        self.mark_changed(record.steps.iter().filter_map(|s| s.instance.clone()));
    }

    async fn finish_promotion(
        &self,
        record: &RecoveryRecord,
        primary: &InstanceKey,
        make_writable: bool,
        repoint: &[InstanceKey],
        attach: Option<&InstanceKey>,
        log: &mut StepLog,
    ) -> Result<(), String> {
        let failover = record.kind != "switchover";
        if failover {
            // The fence was recorded before anything was promoted; make sure of it.
            let _ = self
                .store
                .fence(&record.failed, &record.cluster, Some(&record.id));
        }
        if make_writable {
            self.executor
                .set_read_only_step(log, "promote", primary, false)
                .await
                .map_err(|e| e.to_string())?;
        }
        let routing = self.routing.route_writer(
            &record.cluster,
            primary,
            &record.failed,
            failover,
            &record.id,
        );
        let mut branch = log.branch();
        let (report, left_behind) = tokio::join!(
            routing,
            self.executor.repoint_under(&mut branch, repoint, primary)
        );
        log.note(
            "route",
            Some(primary),
            report.complete(),
            format!("routes name {primary} as the writer: {report}"),
            Duration::ZERO,
        );
        log.absorb(branch);
        if let Some(old) = attach {
            let semi_sync = self
                .discovery
                .snapshot()
                .get(primary)
                .is_some_and(|i| i.facts.as_ref().is_some_and(|f| f.semi_sync.source_enabled));
            self.executor
                .attach(log, old, primary, semi_sync)
                .await
                .map_err(|e| e.to_string())?;
        }
        if left_behind.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} could not be re-pointed (see the steps)",
                left_behind
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    async fn undo_begun(
        &self,
        record: &RecoveryRecord,
        restart: &[InstanceKey],
        writable_again: Option<&InstanceKey>,
        lift_fence: Option<&InstanceKey>,
        log: &mut StepLog,
    ) {
        if let Some(old) = writable_again {
            let _ = self
                .executor
                .set_read_only_step(log, "roll back", old, false)
                .await;
        }
        if let Some(old) = lift_fence {
            let lifted = self.store.unfence(old);
            log.note(
                "lift fence",
                Some(old),
                lifted.is_ok(),
                match lifted {
                    Ok(_) => "the fence this recovery set is lifted: nothing replaced it".into(),
                    Err(error) => error.to_string(),
                },
                Duration::ZERO,
            );
        }
        self.executor.resume_receiving(log, restart).await;
        self.routing.release(&record.cluster).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::solo;
    use crate::recovery::fake::{FakeServer, FakeTopology, Op};
    use crate::recovery::plan::{plan_promotion, PromotionPolicy};
    use crate::topology::instance::tests_support::{primary, replica};
    use crate::topology::Instance;

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    fn step(name: &str, port: u16, pending: bool) -> StepRecord {
        StepRecord {
            step: name.into(),
            instance: Some(key(port)),
            ok: !pending,
            detail: String::new(),
            duration_ms: 0,
            pending,
        }
    }

    fn record(kind: &str) -> RecoveryRecord {
        RecoveryRecord::started(
            "r",
            "t",
            kind,
            "DeadPrimary",
            &key(1),
            "automatic",
            SystemTime::now(),
        )
    }

    fn dead(key: InstanceKey) -> Instance {
        let mut instance = primary(key);
        instance.unreachable_since = Some(SystemTime::now());
        instance
    }

    fn io_stopped(mut instance: Instance) -> Instance {
        let replication = instance
            .facts
            .as_mut()
            .and_then(|f| f.replication.as_mut())
            .expect("a replica");
        replication.io_running = IoThreadState::No;
        instance
    }

    fn read_only(mut instance: Instance) -> Instance {
        let facts = instance.facts.as_mut().expect("facts");
        facts.read_only = true;
        facts.super_read_only = Some(true);
        instance
    }

    fn snapshot(instances: Vec<Instance>) -> Snapshot {
        Snapshot::of(instances)
    }

    /// The journal of a failover of 1 to 2, with 3 a sibling, up to `upto` steps.
    fn failover_steps(upto: usize) -> Vec<StepRecord> {
        let all = vec![
            step("choose candidate", 2, false),
            step("fence", 1, false),
            step("withdraw routes", 1, false),
            step("stop IO thread", 2, false),
            step("stop IO thread", 3, false),
            step("apply relay log", 2, false),
            step("promote", 2, true),
        ];
        all.into_iter().take(upto).collect()
    }

    #[test]
    fn killed_before_the_promotion_the_failover_is_undone() {
        let now = snapshot(vec![
            dead(key(1)),
            io_stopped(replica(key(2), key(1))),
            io_stopped(replica(key(3), key(1))),
        ]);
        let resolution = resolve(&record("failover"), &failover_steps(6), &now);
        assert_eq!(
            resolution,
            Resolution::RollBack {
                restart: vec![key(2), key(3)],
                writable_again: None,
                lift_fence: Some(key(1)),
            }
        );
    }

    #[test]
    fn killed_inside_promote_before_the_reset_it_is_undone_too() {
        let now = snapshot(vec![
            dead(key(1)),
            io_stopped(replica(key(2), key(1))),
            io_stopped(replica(key(3), key(1))),
        ]);
        assert!(matches!(
            resolve(&record("failover"), &failover_steps(7), &now),
            Resolution::RollBack { .. }
        ));
    }

    #[test]
    fn killed_after_the_reset_the_promotion_is_finished() {
        let now = snapshot(vec![
            dead(key(1)),
            read_only(primary(key(2))),
            io_stopped(replica(key(3), key(1))),
        ]);
        assert_eq!(
            resolve(&record("failover"), &failover_steps(7), &now),
            Resolution::Finish {
                primary: key(2),
                make_writable: true,
                repoint: vec![key(3)],
                attach: None,
            }
        );
    }

    #[test]
    fn nothing_is_decided_before_the_old_primary_and_the_candidate_were_probed() {
        let now = snapshot(vec![
            Instance::new(key(1)),
            read_only(primary(key(2))),
            io_stopped(replica(key(3), key(1))),
        ]);
        assert!(matches!(
            resolve(&record("failover"), &failover_steps(7), &now),
            Resolution::Wait(_)
        ));
    }

    #[test]
    fn a_candidate_that_does_not_answer_after_promote_began_is_waited_for() {
        let now = snapshot(vec![
            dead(key(1)),
            dead(key(2)),
            io_stopped(replica(key(3), key(1))),
        ]);
        assert!(matches!(
            resolve(&record("failover"), &failover_steps(7), &now),
            Resolution::Wait(_)
        ));
    }

    #[test]
    fn a_switchover_killed_while_writes_were_paused_gives_the_old_primary_its_writes_back() {
        let steps = vec![
            step("choose candidate", 2, false),
            step("read_only ON", 1, false),
            step("catch up", 2, true),
        ];
        let now = snapshot(vec![
            read_only(primary(key(1))),
            replica(key(2), key(1)),
            replica(key(3), key(1)),
        ]);
        assert_eq!(
            resolve(&record("switchover"), &steps, &now),
            Resolution::RollBack {
                restart: vec![],
                writable_again: Some(key(1)),
                lift_fence: None,
            }
        );
    }

    #[test]
    fn a_switchover_killed_after_the_promotion_attaches_the_old_primary() {
        let steps = vec![
            step("choose candidate", 2, false),
            step("read_only ON", 1, false),
            step("catch up", 2, false),
            step("promote", 2, false),
        ];
        let now = snapshot(vec![
            read_only(primary(key(1))),
            primary(key(2)),
            replica(key(3), key(1)),
        ]);
        assert_eq!(
            resolve(&record("switchover"), &steps, &now),
            Resolution::Finish {
                primary: key(2),
                make_writable: false,
                repoint: vec![key(3)],
                attach: Some(key(1)),
            }
        );
    }

    /// The primary 1 died after 12 transactions; 2 received them all, 3 received 11.
    fn dead_primary_on_fake() -> FakeTopology {
        FakeTopology::new([
            (key(1), FakeServer::primary(12).unreachable()),
            (key(2), FakeServer::replica(&key(1), 12, 10)),
            (key(3), FakeServer::replica(&key(1), 11, 11)),
        ])
    }

    /// Runs a failover of 1 on the fake whose promotion of 2 does not happen (the agent
    /// stops there); its journal: the candidate's choice, then the executor's steps.
    async fn failover_stopped_at_the_promotion(fake: &FakeTopology) -> Vec<StepRecord> {
        let plan = plan_promotion(&key(1), &fake.snapshot(), &PromotionPolicy::default(), None)
            .expect("a plan");
        assert_eq!(plan.candidate, key(2));
        fake.fail(&key(2), Op::Promote);
        let mut log = StepLog::new("r");
        log.note(
            "choose candidate",
            Some(&plan.candidate),
            true,
            plan.explain(),
            Duration::ZERO,
        );
        let stopped = fake
            .executor(solo())
            .prepare_and_promote(&plan, &mut log)
            .await;
        assert!(stopped.is_err());
        log.steps
    }

    #[tokio::test]
    async fn a_failover_stopped_before_the_reset_is_undone_on_the_servers() {
        let fake = dead_primary_on_fake();
        let steps = failover_stopped_at_the_promotion(&fake).await;
        let Resolution::RollBack {
            restart,
            writable_again,
            lift_fence,
        } = resolve(&record("failover"), &steps, &fake.snapshot())
        else {
            panic!("a roll-back");
        };
        assert_eq!(restart, [key(2), key(3)]);
        let dir = tempfile::tempdir().expect("a temporary directory");
        fake.coordinator(dir.path())
            .undo_begun(
                &record("failover"),
                &restart,
                writable_again.as_ref(),
                lift_fence.as_ref(),
                &mut StepLog::new("r"),
            )
            .await;
        for port in [2, 3] {
            let replica = fake.server(&key(port));
            assert!(replica.io_running && replica.sql_running && replica.read_only);
            assert_eq!(replica.source, Some(key(1)));
        }
        assert_eq!(fake.find(&key(2), Op::SetReadOnly(false)), None);
    }

    #[tokio::test]
    async fn a_failover_stopped_after_the_reset_is_finished_on_the_servers() {
        let fake = dead_primary_on_fake();
        let steps = failover_stopped_at_the_promotion(&fake).await;
        // Stopped inside promote between the reset and read_only OFF (the crash point
        // promote-after-reset): 2 forgot its source and is still read_only.
        fake.update(&key(2), |server| server.source = None);
        let resolution = resolve(&record("failover"), &steps, &fake.snapshot());
        assert_eq!(
            resolution,
            Resolution::Finish {
                primary: key(2),
                make_writable: true,
                repoint: vec![key(3)],
                attach: None,
            }
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        fake.coordinator(dir.path())
            .finish_promotion(
                &record("failover"),
                &key(2),
                true,
                &[key(3)],
                None,
                &mut StepLog::new("r"),
            )
            .await
            .expect("finished");
        assert!(fake.first(&key(2), Op::SetReadOnly(false)) < fake.first(&key(3), Op::Repoint));
        let promoted = fake.server(&key(2));
        assert!(!promoted.read_only && promoted.source.is_none());
        assert_eq!(promoted.executed, 12);
        let sibling = fake.server(&key(3));
        assert_eq!(sibling.source, Some(key(2)));
        assert!(sibling.io_running && sibling.sql_running);
        assert_eq!(sibling.executed, 12);
    }
}
