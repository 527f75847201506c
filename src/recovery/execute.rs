//! The executor: carries out a promotion plan against the servers, one audited, timed
//! step at a time. Order matters for not losing writes: every replica stops receiving
//! first (a primary that is only cut off cannot feed anyone behind our back), the
//! candidate applies all it received, catches up from a more advanced replica if the
//! plan says so, and only then is promoted; the siblings follow it by GTID.
//!
//! Every change reaches a server through `Executor::open`: a session on the
//! `Replication` edge whose every operation runs only while this agent leads and ends
//! when the lease would (`Leased`). The servers behind the edge are real ones, or the
//! in-memory topology of `recovery::fake` in the unit tests below.

use super::journal_mirror::{JournalMirror, MirroredRecovery};
use super::plan::PromotionPlan;
use crate::leader::{Lease, NotLeader};
use crate::mysql::admin::{LinkTls, ReplicationAccount, ReplicationTls};
use crate::mysql::edge::{AdminSession, Replication};
use crate::mysql::{ConnectSettings, Connection, MysqlError};
use crate::store::recovery::RecoveryRecord;
use crate::store::recovery::StepRecord;
use crate::store::Store;
use crate::topology::InstanceKey;
use futures::future::{join_all, BoxFuture};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the executor reaches servers and how long it waits for them.
#[derive(Clone)]
pub struct Executor {
    /// Where every change goes: the real servers (`MysqlReplication`), or a fake.
    pub servers: Arc<dyn Replication>,
    /// How a switchover reads the servers' state before it decides (reads do not
    /// cross the edge).
    pub connect: ConnectSettings,
    pub account: ReplicationAccount,
    /// How long a candidate may take to apply its relay log (or catch up).
    pub apply_timeout: Duration,
    /// How long a re-pointed replica may take to replicate.
    pub verify_timeout: Duration,
    /// The heartbeat period of a link that had none (`recovery.heartbeat_period`); a
    /// re-pointed replica keeps its own.
    pub heartbeat_period: Duration,
    /// Who may change servers: every connection that changes one is opened only while
    /// this agent leads, and each step ends when the lease would.
    pub lease: Lease,
    /// Sessions kept open between steps (`keeping_sessions`); `None`: each step opens
    /// and closes its own.
    pub(crate) kept: Option<Arc<KeptSessions>>,
}

/// The sessions a failover keeps open between its steps, one per instance: each step
/// after the first on an instance skips the connect (three round trips to a server that
/// may be busy). A session whose operation failed or timed out is closed, never kept.
#[derive(Default)]
pub(crate) struct KeptSessions(std::sync::Mutex<HashMap<InstanceKey, Box<dyn AdminSession>>>);

impl KeptSessions {
    fn take(&self, key: &InstanceKey) -> Option<Box<dyn AdminSession>> {
        self.lock().remove(key)
    }

    fn keep(&self, session: Box<dyn AdminSession>) -> Option<Box<dyn AdminSession>> {
        self.lock().insert(session.key().clone(), session)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceKey, Box<dyn AdminSession>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Steps as they run, for the recovery record. A journaled log also writes each step
/// to the store's journal: `begin` before it runs, `note` with its outcome after.
#[derive(Clone, Debug, Default)]
pub struct StepLog {
    pub recovery_id: String,
    pub steps: Vec<StepRecord>,
    journal: Option<Store>,
    /// With `[ha]`: the journal's copy in Consul, for the next leader.
    mirror: Option<Mirror>,
    /// Steps begun and not yet noted: (step, instance, journal sequence).
    begun: Vec<(String, Option<InstanceKey>, i64)>,
}

/// Where and as what a log's steps are mirrored.
#[derive(Clone, Debug)]
struct Mirror {
    to: Arc<JournalMirror>,
    record: RecoveryRecord,
    epoch: u64,
}

impl StepLog {
    /// A log kept in memory only.
    pub fn new(recovery_id: &str) -> Self {
        Self {
            recovery_id: recovery_id.to_string(),
            ..Self::default()
        }
    }

    /// A log whose steps also go to the journal in `store`, as they begin and end.
    pub fn journaled(recovery_id: &str, store: Store) -> Self {
        Self {
            recovery_id: recovery_id.to_string(),
            journal: Some(store),
            ..Self::default()
        }
    }

    /// Also writes each step begun, before it runs, to the journal's copy in Consul
    /// (with `[ha]`), as part of `record`, by the leader of `epoch`.
    pub fn mirrored(
        mut self,
        mirror: Option<&Arc<JournalMirror>>,
        record: &RecoveryRecord,
        epoch: u64,
    ) -> Self {
        self.mirror = mirror.map(|to| Mirror {
            to: to.clone(),
            record: record.clone(),
            epoch,
        });
        self
    }

    /// A log for steps that run alongside this log's: the same recovery and journals,
    /// its own steps (append them with `absorb`).
    pub fn branch(&self) -> Self {
        Self {
            recovery_id: self.recovery_id.clone(),
            journal: self.journal.clone(),
            mirror: self.mirror.clone(),
            ..Self::default()
        }
    }

    /// Takes the steps of a branch, in the order they were recorded there.
    pub fn absorb(&mut self, branch: StepLog) {
        self.steps.extend(branch.steps);
    }

    /// Writes to the journal (and its copy in Consul) that `step` is about to run. A
    /// step whose beginning cannot be written must not run: whoever acts after a crash
    /// could not know it began.
    pub async fn begin(
        &mut self,
        step: &str,
        instance: Option<&InstanceKey>,
    ) -> Result<(), String> {
        let Some(store) = &self.journal else {
            return Ok(());
        };
        let seq = store
            .journal_begin(&self.recovery_id, step, instance)
            .map_err(|e| e.to_string())?;
        self.begun.push((step.to_string(), instance.cloned(), seq));
        self.mirror_now().await
    }

    /// Writes the journal so far to its copy in Consul (with `[ha]`): done by `begin`,
    /// and after the first step recorded without one (the candidate's choice), so a
    /// leader that dies before changing anything still leaves its recovery for the next
    /// one to settle.
    pub async fn mirror_now(&self) -> Result<(), String> {
        let (Some(store), Some(mirror)) = (&self.journal, &self.mirror) else {
            return Ok(());
        };
        let steps = store.journal(&self.recovery_id).unwrap_or_default();
        mirror
            .to
            .write(&MirroredRecovery {
                record: mirror.record.clone(),
                steps,
                epoch: mirror.epoch,
            })
            .await
            .map_err(|e| format!("the journal's copy in Consul: {e}"))
    }

    /// Records a step's outcome (completing its `begin`, or as a step of its own).
    pub fn note(
        &mut self,
        step: &str,
        instance: Option<&InstanceKey>,
        ok: bool,
        detail: String,
        took: Duration,
    ) {
        tracing::info!(
            recovery_id = %self.recovery_id,
            step,
            instance = %instance.map(|k| k.to_string()).unwrap_or_else(|| "-".into()),
            ok,
            duration_ms = took.as_millis() as u64,
            "{detail}"
        );
        if let Some(store) = &self.journal {
            let open = self
                .begun
                .iter()
                .position(|(name, key, _)| name == step && key.as_ref() == instance);
            let written = match open {
                Some(index) => {
                    let (_, _, seq) = self.begun.remove(index);
                    Ok(seq)
                }
                None => store.journal_begin(&self.recovery_id, step, instance),
            }
            .and_then(|seq| {
                store.journal_end(&self.recovery_id, seq, ok, &detail, took.as_millis() as u64)
            });
            if let Err(error) = written {
                tracing::error!(recovery_id = %self.recovery_id, step, %error, "cannot write the step's outcome to the journal");
            }
        }
        self.steps.push(StepRecord {
            step: step.to_string(),
            instance: instance.cloned(),
            ok,
            detail,
            duration_ms: took.as_millis() as u64,
            pending: false,
        });
    }
}

/// Why a recovery stopped, with the step it stopped at.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {reason}")]
pub struct StepFailed {
    pub step: String,
    pub reason: String,
}

impl Executor {
    /// This executor, keeping each instance's session open from one step to the next
    /// until `close_kept_sessions` (or until it is dropped, when the driver closes them).
    /// Every operation on a kept session is still gated on the lease.
    pub fn keeping_sessions(&self) -> Executor {
        Executor {
            kept: Some(Arc::default()),
            ..self.clone()
        }
    }

    /// As `keeping_sessions`, starting with `warm`: connections the confirmation of the
    /// failure opened a moment ago (its last round), so that each instance's first step
    /// skips the connect too. One the edge does not take (`Replication::adopt`) is closed.
    pub async fn keeping_sessions_from(&self, warm: Vec<Connection>) -> Executor {
        let kept = Arc::<KeptSessions>::default();
        for connection in warm {
            match self.servers.adopt(connection) {
                Ok(session) => {
                    let leased = Box::new(Leased {
                        session,
                        lease: self.lease.clone(),
                    });
                    if let Some(other) = kept.keep(leased) {
                        other.close().await;
                    }
                }
                Err(connection) => connection.close().await,
            }
        }
        Executor {
            kept: Some(kept),
            ..self.clone()
        }
    }

    /// Closes the sessions kept between steps (`keeping_sessions`).
    pub async fn close_kept_sessions(&self) {
        let Some(kept) = &self.kept else {
            return;
        };
        let sessions: Vec<_> = kept.lock().drain().map(|(_, session)| session).collect();
        join_all(sessions.into_iter().map(|session| session.close())).await;
    }

    /// A session for changing `key`, opened only while this agent leads; each of its
    /// operations is gated on the lease again (see `Leased`).
    pub(crate) async fn open(
        &self,
        key: &InstanceKey,
    ) -> Result<Box<dyn AdminSession>, MysqlError> {
        let grant = self.lease.gate().map_err(|not| not_leading(key, not))?;
        let session = tokio::time::timeout(grant.remaining, self.servers.open(key))
            .await
            .unwrap_or_else(|_| Err(lease_ran_out(key)))?;
        Ok(Box::new(Leased {
            session,
            lease: self.lease.clone(),
        }))
    }

    /// Runs one change of `key` (connect, statements, close) within what remains of the
    /// lease: a step never outlasts the right to take it.
    async fn leased<F, Fut>(&self, key: &InstanceKey, operation: F) -> Result<(), MysqlError>
    where
        F: FnOnce(Box<dyn AdminSession>) -> Fut,
        Fut: Future<Output = (Box<dyn AdminSession>, Result<(), MysqlError>)>,
    {
        let remaining = match self.lease.gate() {
            Ok(grant) => grant.remaining,
            Err(not) => return Err(not_leading(key, not)),
        };
        let work = async {
            let kept = self.kept.as_ref().and_then(|kept| kept.take(key));
            let session = match kept {
                Some(session) => session,
                None => self.open(key).await?,
            };
            let (session, result) = operation(session).await;
            match &self.kept {
                Some(kept) if result.is_ok() => {
                    if let Some(other) = kept.keep(session) {
                        other.close().await;
                    }
                }
                _ => session.close().await,
            }
            result
        };
        tokio::time::timeout(remaining, work)
            .await
            .unwrap_or_else(|_| Err(lease_ran_out(key)))
    }

    /// Runs one operation on one instance as a recorded step.
    async fn step<'a, F, Fut>(
        &'a self,
        log: &mut StepLog,
        name: &str,
        key: &'a InstanceKey,
        detail: String,
        operation: F,
    ) -> Result<(), StepFailed>
    where
        F: FnOnce(Box<dyn AdminSession>) -> Fut,
        Fut: Future<Output = (Box<dyn AdminSession>, Result<(), MysqlError>)> + 'a,
    {
        let started = Instant::now();
        if let Err(error) = log.begin(name, Some(key)).await {
            return Err(StepFailed {
                step: format!("{name} on {key}"),
                reason: format!("not run: the journal could not be written ({error})"),
            });
        }
        let result = self.leased(key, operation).await;
        match result {
            Ok(()) => {
                log.note(name, Some(key), true, detail, started.elapsed());
                Ok(())
            }
            Err(error) => {
                log.note(
                    name,
                    Some(key),
                    false,
                    error.without_instance(),
                    started.elapsed(),
                );
                Err(StepFailed {
                    step: format!("{name} on {key}"),
                    reason: error.to_string(),
                })
            }
        }
    }

    /// Runs `operation` on every instance at once, records each as a step named `name`
    /// (with `done` as the detail when it worked), and returns those it failed on.
    async fn on_each<'a, F, Fut>(
        &'a self,
        log: &mut StepLog,
        name: &str,
        keys: &'a [InstanceKey],
        done: impl Fn(&InstanceKey) -> String,
        operation: F,
    ) -> Vec<InstanceKey>
    where
        F: Fn(Box<dyn AdminSession>) -> Fut,
        Fut: Future<Output = (Box<dyn AdminSession>, Result<(), MysqlError>)> + 'a,
    {
        let started = Instant::now();
        let mut failed = Vec::new();
        let mut journaled = Vec::new();
        for key in keys {
            match log.begin(name, Some(key)).await {
                Ok(()) => journaled.push(key),
                Err(error) => {
                    log.note(
                        name,
                        Some(key),
                        false,
                        format!("not run: the journal could not be written ({error})"),
                        Duration::ZERO,
                    );
                    failed.push(key.clone());
                }
            }
        }
        let operation = &operation;
        let results = join_all(
            journaled
                .into_iter()
                .map(|key| async move { (key, self.leased(key, operation).await) }),
        )
        .await;
        let took = started.elapsed();
        for (key, result) in results {
            match result {
                Ok(()) => log.note(name, Some(key), true, done(key), took),
                Err(error) => {
                    log.note(name, Some(key), false, error.without_instance(), took);
                    failed.push(key.clone());
                }
            }
        }
        failed
    }

    /// Stops the IO thread of each replica, concurrently. Returns those that failed.
    pub async fn stop_receiving(
        &self,
        log: &mut StepLog,
        replicas: &[InstanceKey],
    ) -> Vec<InstanceKey> {
        self.on_each(
            log,
            "stop IO thread",
            replicas,
            |_| "no longer receives from the old primary".into(),
            |mut session| async move {
                let result = session.stop_io_thread().await;
                (session, result)
            },
        )
        .await
    }

    /// Brings the plan's candidate level with everything received and promotes it. The
    /// old primary is not touched here: fencing is the caller's, because it may be
    /// unreachable; so is re-pointing the siblings (`repoint_under`), which the caller
    /// runs alongside moving the traffic.
    pub async fn prepare_and_promote(
        &self,
        plan: &PromotionPlan,
        log: &mut StepLog,
    ) -> Result<(), StepFailed> {
        self.prepare(plan, log).await?;
        self.promote(plan, log).await
    }

    /// Brings the plan's candidate level with everything received: replication stopped
    /// on it and its siblings, its relay log applied, and what a sibling had beyond it
    /// copied. Nothing takes writes yet, so a failover runs this while it withdraws the
    /// old primary's routes.
    pub async fn prepare(&self, plan: &PromotionPlan, log: &mut StepLog) -> Result<(), StepFailed> {
        let candidate = &plan.candidate;
        let mut everyone: Vec<InstanceKey> = vec![candidate.clone()];
        everyone.extend(plan.catch_up_from.iter().cloned());
        everyone.extend(
            plan.siblings
                .iter()
                .filter(|k| Some(*k) != plan.catch_up_from.as_ref())
                .cloned(),
        );
        let failed = self.stop_receiving(log, &everyone).await;
        crate::crash_point!("failover-after-stop-io");
        if failed.contains(candidate) {
            return Err(StepFailed {
                step: format!("stop IO thread on {candidate}"),
                reason: "the candidate could not be stopped".into(),
            });
        }

        let timeout = self.apply_timeout;
        let heartbeat = self.heartbeat_period;
        self.step(
            log,
            "apply relay log",
            candidate,
            "applied everything it received".into(),
            |mut session| async move {
                let result = session.wait_relay_applied(timeout).await;
                (session, result)
            },
        )
        .await?;

        crate::crash_point!("failover-after-apply");
        if let Some(source) = &plan.catch_up_from {
            self.step(
                log,
                "apply relay log",
                source,
                "applied everything it received".into(),
                |mut session| async move {
                    let result = session.wait_relay_applied(timeout).await;
                    (session, result)
                },
            )
            .await?;
            let started = Instant::now();
            let target = async {
                let mut session = self.open(source).await?;
                let result = session.written_gtids().await;
                session.close().await;
                result
            }
            .await
            .map_err(|error| {
                log.note(
                    "catch up",
                    Some(candidate),
                    false,
                    error.without_instance(),
                    started.elapsed(),
                );
                StepFailed {
                    step: format!("read the GTIDs of {source}"),
                    reason: error.to_string(),
                }
            })?;
            let from = source.clone();
            let tls = self.link_tls(source).await;
            self.step(
                log,
                "catch up",
                candidate,
                format!("copied what {from} had and it lacked ({target})"),
                |mut session| async move {
                    let result = async {
                        session.repoint(&from, heartbeat, tls).await?;
                        session.wait_for_gtids(&target, timeout).await
                    }
                    .await;
                    (session, result)
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Makes the prepared candidate the primary: its replication reset, read_only off.
    pub async fn promote(&self, plan: &PromotionPlan, log: &mut StepLog) -> Result<(), StepFailed> {
        let candidate = &plan.candidate;
        self.step(
            log,
            "promote",
            candidate,
            "replication reset, read_only OFF: takes writes".into(),
            |mut session| async move {
                let result = session.promote().await;
                (session, result)
            },
        )
        .await
    }

    /// Carries semi-sync over to a new primary whose old one had it: its source side
    /// ON (replica side OFF), once its replicas follow it, so commits wait for their
    /// acknowledgement again instead of the timeout. A server that cannot (MySQL
    /// without the plugins) is a failed step, not a failed promotion: it is the primary
    /// either way, committing asynchronously.
    pub async fn carry_semi_sync(&self, log: &mut StepLog, primary: &InstanceKey) {
        let _ = self
            .step(
                log,
                "semi-sync",
                primary,
                "semi-sync source ON, as on the old primary: commits wait for a replica's acknowledgement".into(),
                |mut session| async move {
                    let result = session.set_semi_sync(true, false).await;
                    (session, result)
                },
            )
            .await;
    }

    /// Starts replication again on replicas a failed recovery had stopped.
    pub async fn resume_receiving(&self, log: &mut StepLog, replicas: &[InstanceKey]) {
        self.on_each(
            log,
            "resume replication",
            replicas,
            |_| "receives again".into(),
            |mut session| async move {
                let result = session.start_replication().await;
                (session, result)
            },
        )
        .await;
    }

    /// Re-points replicas under `source` concurrently and checks each replicates. Failures
    /// are recorded and returned; the others go on.
    pub async fn repoint_under(
        &self,
        log: &mut StepLog,
        replicas: &[InstanceKey],
        source: &InstanceKey,
    ) -> Vec<InstanceKey> {
        let verify = self.verify_timeout;
        let heartbeat = self.heartbeat_period;
        let tls = self.link_tls(source).await;
        self.on_each(
            log,
            "re-point",
            replicas,
            |_| format!("replicates from {source} (GTID)"),
            |mut session| async move {
                let result = async {
                    session.repoint(source, heartbeat, tls).await?;
                    session.verify_replicating(verify).await
                }
                .await;
                (session, result)
            },
        )
        .await
    }

    /// Runs one operation on `key` in a session of its own, unrecorded: for callers that
    /// record the change in their own words.
    pub(crate) async fn change<T>(
        &self,
        key: &InstanceKey,
        operation: impl for<'s> FnOnce(&'s mut dyn AdminSession) -> BoxFuture<'s, Result<T, MysqlError>>,
    ) -> Result<T, MysqlError> {
        let mut session = self.open(key).await?;
        let result = operation(session.as_mut()).await;
        session.close().await;
        result
    }

    /// Sets read_only (with super_read_only) ON or OFF on a fresh session, unrecorded:
    /// for callers that record the step in their own words.
    pub async fn set_read_only(&self, key: &InstanceKey, on: bool) -> Result<(), MysqlError> {
        self.change(key, |session| session.set_read_only(on)).await
    }

    /// Persists the read-only role (MySQL) so a restart brings the server back
    /// read-only; its running read_only is left as it is.
    pub async fn persist_read_only(&self, key: &InstanceKey) -> Result<(), MysqlError> {
        self.change(key, |session| session.persist_read_only())
            .await
    }

    /// Sets read_only ON or OFF as a recorded step named `name`.
    pub async fn set_read_only_step(
        &self,
        log: &mut StepLog,
        name: &str,
        key: &InstanceKey,
        on: bool,
    ) -> Result<(), StepFailed> {
        let detail = if on {
            "read_only ON: takes no writes"
        } else {
            "read_only OFF: takes writes"
        };
        self.step(log, name, key, detail.into(), |mut session| async move {
            let result = session.set_read_only(on).await;
            (session, result)
        })
        .await
    }

    /// Sets read_only (and super_read_only) on an instance, once, bounded by the timeouts.
    pub async fn fence(&self, log: &mut StepLog, key: &InstanceKey) -> Result<(), StepFailed> {
        self.step(
            log,
            "fence",
            key,
            "read_only ON: takes no writes".into(),
            |mut session| async move {
                let result = session.set_read_only(true).await;
                (session, result)
            },
        )
        .await
    }

    /// Makes `key` (an old primary) a replica of `source` with the configured account.
    /// With `semi_sync` (its source waits for acknowledgements), its semi-sync replica
    /// side goes ON and source side OFF first.
    pub async fn attach(
        &self,
        log: &mut StepLog,
        key: &InstanceKey,
        source: &InstanceKey,
        semi_sync: bool,
    ) -> Result<(), StepFailed> {
        let account = self.account.clone();
        let verify = self.verify_timeout;
        let heartbeat = self.heartbeat_period;
        let from = source.clone();
        let tls = self.link_tls(source).await;
        self.step(
            log,
            "attach",
            key,
            format!("replicates from {source} (GTID{})", tls_words(tls)),
            |mut session| async move {
                let result = async {
                    session.set_read_only(true).await?;
                    // Acknowledging its new source's commits from the first one.
                    if semi_sync {
                        session.set_semi_sync(false, true).await?;
                    }
                    session.attach(&from, &account, heartbeat, tls).await?;
                    session.verify_replicating(verify).await
                }
                .await;
                (session, result)
            },
        )
        .await
    }
}

/// A session whose every operation runs only while this agent leads, and ends when the
/// lease would: a session held across steps (a switchover's) cannot outlast the right
/// to change the server either.
struct Leased {
    session: Box<dyn AdminSession>,
    lease: Lease,
}

/// Runs `operation` if the lease allows, within what remains of it.
fn within_lease<'a, T: Send + 'a>(
    lease: &'a Lease,
    key: InstanceKey,
    operation: BoxFuture<'a, Result<T, MysqlError>>,
) -> BoxFuture<'a, Result<T, MysqlError>> {
    Box::pin(async move {
        let grant = lease.gate().map_err(|not| not_leading(&key, not))?;
        tokio::time::timeout(grant.remaining, operation)
            .await
            .unwrap_or_else(|_| Err(lease_ran_out(&key)))
    })
}

impl AdminSession for Leased {
    fn key(&self) -> &InstanceKey {
        self.session.key()
    }

    fn stop_io_thread(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        let key = self.session.key().clone();
        within_lease(&self.lease, key, self.session.stop_io_thread())
    }

    fn stop_replication(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        let key = self.session.key().clone();
        within_lease(&self.lease, key, self.session.stop_replication())
    }

    fn start_replication(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        let key = self.session.key().clone();
        within_lease(&self.lease, key, self.session.start_replication())
    }

    fn wait_relay_applied(&mut self, timeout: Duration) -> BoxFuture<'_, Result<(), MysqlError>> {
        let key = self.session.key().clone();
        within_lease(&self.lease, key, self.session.wait_relay_applied(timeout))
    }

    fn wait_for_gtids<'a>(
        &'a mut self,
        gtids: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), MysqlError>> {
        let key = self.session.key().clone();
        within_lease(
            &self.lease,
            key,
            self.session.wait_for_gtids(gtids, timeout),
        )
    }

    fn written_gtids(&mut self) -> BoxFuture<'_, Result<String, MysqlError>> {
        let key = self.session.key().clone();
        within_lease(&self.lease, key, self.session.written_gtids())
    }

    fn promote(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        let key = self.session.key().clone();
        within_lease(&self.lease, key, self.session.promote())
    }

    fn set_read_only(&mut self, on: bool) -> BoxFuture<'_, Result<(), MysqlError>> {
        let key = self.session.key().clone();
        within_lease(&self.lease, key, self.session.set_read_only(on))
    }

    fn persist_read_only(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        let key = self.session.key().clone();
        within_lease(&self.lease, key, self.session.persist_read_only())
    }

    fn set_semi_sync(
        &mut self,
        source: bool,
        replica: bool,
    ) -> BoxFuture<'_, Result<(), MysqlError>> {
        let key = self.session.key().clone();
        within_lease(
            &self.lease,
            key,
            self.session.set_semi_sync(source, replica),
        )
    }

    fn repoint<'a>(
        &'a mut self,
        source: &'a InstanceKey,
        heartbeat: Duration,
        tls: LinkTls,
    ) -> BoxFuture<'a, Result<(), MysqlError>> {
        let key = self.session.key().clone();
        within_lease(
            &self.lease,
            key,
            self.session.repoint(source, heartbeat, tls),
        )
    }

    fn attach<'a>(
        &'a mut self,
        source: &'a InstanceKey,
        account: &'a ReplicationAccount,
        heartbeat: Duration,
        tls: LinkTls,
    ) -> BoxFuture<'a, Result<(), MysqlError>> {
        let key = self.session.key().clone();
        within_lease(
            &self.lease,
            key,
            self.session.attach(source, account, heartbeat, tls),
        )
    }

    fn tls_for_replicas(&mut self) -> BoxFuture<'_, Result<LinkTls, MysqlError>> {
        let key = self.session.key().clone();
        within_lease(&self.lease, key, self.session.tls_for_replicas())
    }

    fn verify_replicating(&mut self, timeout: Duration) -> BoxFuture<'_, Result<(), MysqlError>> {
        let key = self.session.key().clone();
        within_lease(&self.lease, key, self.session.verify_replicating(timeout))
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.session.close()
    }
}

fn not_leading(key: &InstanceKey, not: NotLeader) -> MysqlError {
    MysqlError::NotLeader {
        instance: key.clone(),
        why: not.to_string(),
    }
}

impl Executor {
    /// What a link pointsman creates or re-points to `source` says about TLS under
    /// `recovery.replication_tls`: with `auto`, what the source says (on MySQL, TLS
    /// exactly when it offers it); left as it is when the source cannot be asked.
    pub(crate) async fn link_tls(&self, source: &InstanceKey) -> LinkTls {
        match self.account.tls {
            ReplicationTls::Required => LinkTls::On,
            ReplicationTls::Off => LinkTls::Off,
            ReplicationTls::Auto => {
                let Ok(mut session) = self.open(source).await else {
                    return LinkTls::Keep;
                };
                let tls = session.tls_for_replicas().await.unwrap_or(LinkTls::Keep);
                session.close().await;
                tls
            }
        }
    }
}

/// How a step names the TLS of the link it makes.
fn tls_words(tls: LinkTls) -> &'static str {
    match tls {
        LinkTls::Keep => "",
        LinkTls::On => ", TLS",
        LinkTls::Off => ", no TLS: the source offers none",
    }
}

fn lease_ran_out(key: &InstanceKey) -> MysqlError {
    MysqlError::NotLeader {
        instance: key.clone(),
        why: "this agent's lease ran out during the step: it stopped here, and the next leader settles the rest".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::{held_for, solo};
    use crate::recovery::fake::{FakeServer, FakeTopology, Op};
    use crate::recovery::plan::{plan_promotion, PromotionPolicy};
    use regex::Regex;

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    /// The primary 1 is dead after executing 12 transactions: 2 received them all and
    /// applied 8; 3 received 10, 4 received 9.
    fn dead_primary() -> FakeTopology {
        FakeTopology::new([
            (key(1), FakeServer::primary(12).unreachable()),
            (key(2), FakeServer::replica(&key(1), 12, 8)),
            (key(3), FakeServer::replica(&key(1), 10, 10)),
            (key(4), FakeServer::replica(&key(1), 9, 9)),
        ])
    }

    /// The plan the pure stage makes for the fake as it stands.
    fn plan_for(fake: &FakeTopology, policy: &PromotionPolicy) -> PromotionPlan {
        plan_promotion(&key(1), &fake.snapshot(), policy, None).expect("a plan")
    }

    fn step_names(log: &StepLog) -> Vec<(&str, u16, bool)> {
        log.steps
            .iter()
            .map(|s| {
                let port = s.instance.as_ref().map_or(0, |k| k.port);
                (s.step.as_str(), port, s.ok)
            })
            .collect()
    }

    /// Prepares and promotes the plan's candidate and re-points its siblings under it,
    /// none left behind.
    async fn promote_and_repoint(executor: &Executor, plan: &PromotionPlan) -> StepLog {
        let mut log = StepLog::new("r");
        executor
            .prepare_and_promote(plan, &mut log)
            .await
            .expect("promoted");
        let left_behind = executor
            .repoint_under(&mut log, &plan.siblings, &plan.candidate)
            .await;
        assert!(left_behind.is_empty());
        log
    }

    #[tokio::test]
    async fn a_failover_stops_every_replica_then_applies_promotes_and_repoints() {
        let fake = dead_primary();
        let executor = fake.executor(solo());
        let plan = plan_for(&fake, &PromotionPolicy::default());
        assert_eq!((&plan.candidate, &plan.catch_up_from), (&key(2), &None));
        let log = promote_and_repoint(&executor, &plan).await;

        let promote = fake.first(&key(2), Op::Promote);
        for port in [2, 3, 4] {
            assert!(fake.first(&key(port), Op::StopIoThread) < promote);
        }
        assert!(fake.first(&key(2), Op::WaitRelayApplied) < promote);
        for port in [3, 4] {
            assert!(fake.first(&key(port), Op::Repoint) > promote);
            assert!(fake.first(&key(port), Op::VerifyReplicating) > promote);
        }
        assert!(
            fake.find(&key(1), Op::Open).is_none(),
            "the dead primary is left alone"
        );

        let promoted = fake.server(&key(2));
        assert!(!promoted.read_only && promoted.source.is_none());
        assert_eq!(
            promoted.executed, 12,
            "it applied its whole relay log first"
        );
        for port in [3, 4] {
            let sibling = fake.server(&key(port));
            assert_eq!(sibling.source, Some(key(2)));
            assert!(sibling.io_running && sibling.sql_running);
            assert_eq!(sibling.executed, 12);
        }
        assert_eq!(
            step_names(&log),
            [
                ("stop IO thread", 2, true),
                ("stop IO thread", 3, true),
                ("stop IO thread", 4, true),
                ("apply relay log", 2, true),
                ("promote", 2, true),
                ("re-point", 3, true),
                ("re-point", 4, true),
            ]
        );
    }

    #[tokio::test]
    async fn a_candidate_behind_a_replica_that_may_not_be_promoted_catches_up_from_it_first() {
        let fake = dead_primary();
        fake.update(&key(3), |s| s.received = 14);
        let executor = fake.executor(solo());
        let policy = PromotionPolicy {
            must_not: vec![Regex::new(":3$").expect("a regex")],
            ..PromotionPolicy::default()
        };
        let plan = plan_for(&fake, &policy);
        assert_eq!(
            (&plan.candidate, &plan.catch_up_from),
            (&key(2), &Some(key(3)))
        );
        let mut log = StepLog::new("r");
        executor
            .prepare_and_promote(&plan, &mut log)
            .await
            .expect("promoted");

        let order = [
            fake.first(&key(2), Op::StopIoThread),
            fake.first(&key(3), Op::StopIoThread),
            fake.first(&key(2), Op::WaitRelayApplied),
            fake.first(&key(3), Op::WaitRelayApplied),
            fake.first(&key(3), Op::WrittenGtids),
            fake.first(&key(2), Op::Repoint),
            fake.first(&key(2), Op::WaitForGtids),
            fake.first(&key(2), Op::Promote),
        ];
        assert!(order.is_sorted(), "{:?}", fake.operations());
        let promoted = fake.server(&key(2));
        assert_eq!(promoted.executed, 14, "nothing 3 held is lost");
        assert!(!promoted.read_only && promoted.source.is_none());
    }

    #[tokio::test]
    async fn a_failed_promotion_leaves_the_replicas_stopped_until_resume_receiving() {
        let fake = dead_primary();
        fake.fail(&key(2), Op::Promote);
        let executor = fake.executor(solo());
        let plan = plan_for(&fake, &PromotionPolicy::default());
        let mut log = StepLog::new("r");
        let failed = executor
            .prepare_and_promote(&plan, &mut log)
            .await
            .expect_err("the promotion fails");
        assert_eq!(failed.step, "promote on 127.0.0.1:2");
        assert!(log.steps.iter().any(|s| s.step == "promote" && !s.ok));
        // Nothing takes writes and no one receives: the state the coordinator undoes.
        for port in [2, 3, 4] {
            let replica = fake.server(&key(port));
            assert!(replica.read_only && !replica.io_running, "{port}");
            assert_eq!(replica.source, Some(key(1)));
        }

        let mut everyone = vec![plan.candidate.clone()];
        everyone.extend(plan.siblings.iter().cloned());
        executor.resume_receiving(&mut log, &everyone).await;
        for port in [2, 3, 4] {
            let replica = fake.server(&key(port));
            assert!(replica.io_running && replica.sql_running, "{port}");
            assert_eq!(replica.source, Some(key(1)));
        }
    }

    #[tokio::test]
    async fn a_candidate_that_cannot_be_stopped_or_cannot_apply_is_not_promoted() {
        let fake = dead_primary();
        fake.fail(&key(2), Op::StopIoThread);
        let plan = plan_for(&fake, &PromotionPolicy::default());
        let mut log = StepLog::new("r");
        let failed = fake
            .executor(solo())
            .prepare_and_promote(&plan, &mut log)
            .await
            .expect_err("not promoted");
        assert_eq!(failed.step, "stop IO thread on 127.0.0.1:2");
        assert_eq!(fake.find(&key(2), Op::WaitRelayApplied), None);
        assert_eq!(fake.find(&key(2), Op::Promote), None);

        let fake = dead_primary();
        fake.update(&key(2), |s| s.sql_running = false);
        let failed = fake
            .executor(solo())
            .prepare_and_promote(&plan, &mut StepLog::new("r"))
            .await
            .expect_err("not promoted");
        assert_eq!(failed.step, "apply relay log on 127.0.0.1:2");
        assert_eq!(fake.find(&key(2), Op::Promote), None);
        assert!(fake.server(&key(2)).read_only);
    }

    #[tokio::test]
    async fn a_sibling_that_does_not_answer_is_left_behind_and_the_others_go_on() {
        let fake = dead_primary();
        let plan = plan_for(&fake, &PromotionPolicy::default());
        fake.update(&key(4), |s| s.reachable = false);
        let executor = fake.executor(solo());
        let mut log = StepLog::new("r");
        executor
            .prepare_and_promote(&plan, &mut log)
            .await
            .expect("promoted without 4");
        let left_behind = executor
            .repoint_under(&mut log, &plan.siblings, &plan.candidate)
            .await;
        assert_eq!(left_behind, [key(4)]);
        assert_eq!(fake.server(&key(3)).source, Some(key(2)));
        assert_eq!(fake.server(&key(4)).source, Some(key(1)));
        assert!(log
            .steps
            .iter()
            .any(|s| s.step == "re-point" && s.instance == Some(key(4)) && !s.ok));
    }

    #[tokio::test]
    async fn an_old_primary_is_fenced_once_it_answers_again() {
        let fake = dead_primary();
        let executor = fake.executor(solo());
        let mut log = StepLog::new("r");
        assert!(executor.fence(&mut log, &key(1)).await.is_err());
        fake.update(&key(1), |s| s.reachable = true);
        executor.fence(&mut log, &key(1)).await.expect("fenced");
        assert!(fake.server(&key(1)).read_only);
        assert_eq!(step_names(&log), [("fence", 1, false), ("fence", 1, true)]);
    }

    #[tokio::test]
    async fn nothing_reaches_a_server_without_the_lease() {
        let fake = dead_primary();
        let plan = plan_for(&fake, &PromotionPolicy::default());
        let executor = fake.executor(held_for(Duration::ZERO));
        let mut log = StepLog::new("r");
        let failed = executor
            .prepare_and_promote(&plan, &mut log)
            .await
            .expect_err("refused");
        assert_eq!(failed.step, "stop IO thread on 127.0.0.1:2");
        assert!(log
            .steps
            .iter()
            .all(|s| !s.ok && s.detail.contains("not changed: this agent does not lead")));
        assert!(executor.set_read_only(&key(2), false).await.is_err());
        assert_eq!(fake.operations(), []);
    }

    /// How many times the executor connected to `key`.
    fn opened(fake: &FakeTopology, key: &InstanceKey) -> usize {
        fake.operations()
            .iter()
            .filter(|(k, op)| k == key && *op == Op::Open)
            .count()
    }

    #[tokio::test]
    async fn a_failover_keeping_sessions_connects_once_to_each_instance_and_never_reuses_a_failed_one(
    ) {
        let fake = dead_primary();
        fake.fail(&key(4), Op::StopIoThread);
        let executor = fake.executor(solo()).keeping_sessions();
        let plan = plan_for(&fake, &PromotionPolicy::default());
        promote_and_repoint(&executor, &plan).await;
        assert_eq!(
            (opened(&fake, &key(2)), opened(&fake, &key(3))),
            (1, 1),
            "stop, apply and promote on one session; stop and re-point on another: {:?}",
            fake.operations()
        );
        assert_eq!(
            opened(&fake, &key(4)),
            2,
            "the session whose stop failed is closed, and the re-point opens a new one"
        );
        assert_eq!(fake.server(&key(4)).source, Some(key(2)));

        executor.close_kept_sessions().await;
        let kept = executor.kept.as_ref().expect("keeping");
        assert!(kept.lock().is_empty(), "every kept session is closed");
    }

    /// The server's count of connections ever made to it, read on `conn`.
    async fn connections_made(conn: &mut Connection) -> u64 {
        let rows = conn
            .query("SHOW GLOBAL STATUS LIKE 'Connections'")
            .await
            .expect("the server's counters");
        rows.first()
            .and_then(|row| row.get("Value").cloned().flatten())
            .and_then(|value| value.parse().ok())
            .expect("a Connections row")
    }

    /// A failover's first step on a replica runs on the connection its confirmation
    /// left open (a real server counts the connects): the step itself connects to no
    /// one, and the replica does stop receiving.
    async fn a_failover_takes_the_confirmations_open_connection_for_its_first_step(
        flavor: crate::sandbox::Flavor,
    ) {
        use crate::mysql::edge::MysqlReplication;
        use crate::sandbox::{Sandbox, SandboxOptions};
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut options = SandboxOptions::new(flavor, dir.path().join("sb"));
        options.replicas = 1;
        let sandbox = Sandbox::up(options).await.expect("a sandbox");
        let settings = ConnectSettings {
            user: sandbox.user.clone(),
            password: crate::config::Secret::new(sandbox.password.clone()),
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
        };
        let node = &sandbox.nodes[1];
        let replica = InstanceKey::new(node.host.clone(), node.port);
        let mut confirmed = Connection::open(&replica, &settings)
            .await
            .expect("the confirmation's connection");
        let before = connections_made(&mut confirmed).await;
        let fake = FakeTopology::new([]);
        let executor = Executor {
            servers: Arc::new(MysqlReplication {
                settings: settings.clone(),
            }),
            ..fake.executor(solo())
        }
        .keeping_sessions_from(vec![confirmed])
        .await;
        let mut log = StepLog::new("r");
        let not_stopped = executor
            .stop_receiving(&mut log, std::slice::from_ref(&replica))
            .await;
        executor.close_kept_sessions().await;

        let mut check = Connection::open(&replica, &settings)
            .await
            .expect("a connection to check");
        let after = connections_made(&mut check).await;
        let io_running = crate::mysql::probe::probe(&mut check)
            .await
            .expect("the replica probed")
            .replication
            .map(|status| status.io_running);
        check.close().await;
        let down = sandbox.down().await;
        assert!(not_stopped.is_empty(), "{:?}", log.steps);
        assert_eq!(
            io_running,
            Some(crate::topology::IoThreadState::No),
            "the step ran"
        );
        assert_eq!(
            after,
            before + 1,
            "the only connect since the confirmation's is this check's"
        );
        down.expect("the sandbox stops");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failover_takes_the_confirmations_open_connection_for_its_first_step_mariadb() {
        a_failover_takes_the_confirmations_open_connection_for_its_first_step(
            crate::sandbox::Flavor::Mariadb,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failover_takes_the_confirmations_open_connection_for_its_first_step_mysql() {
        a_failover_takes_the_confirmations_open_connection_for_its_first_step(
            crate::sandbox::Flavor::Mysql,
        )
        .await;
    }

    #[tokio::test]
    async fn a_kept_session_changes_nothing_once_the_lease_ran_out() {
        let fake = dead_primary();
        let executor = fake
            .executor(held_for(Duration::from_millis(100)))
            .keeping_sessions();
        let plan = plan_for(&fake, &PromotionPolicy::default());
        let mut log = StepLog::new("r");
        assert!(executor
            .stop_receiving(&mut log, &[key(2)])
            .await
            .is_empty());
        tokio::time::sleep(Duration::from_millis(150)).await;
        let refused = executor
            .promote(&plan, &mut log)
            .await
            .expect_err("no lease");
        assert!(refused.reason.contains("not changed"), "{refused}");
        assert_eq!(
            fake.operations(),
            [(key(2), Op::Open), (key(2), Op::StopIoThread)]
        );
        assert!(fake.server(&key(2)).read_only);
    }

    #[tokio::test]
    async fn a_session_held_past_the_lease_changes_nothing_more() {
        let fake = dead_primary();
        let executor = fake.executor(held_for(Duration::from_millis(100)));
        let mut session = executor.open(&key(2)).await.expect("opened while leading");
        session
            .stop_io_thread()
            .await
            .expect("stopped while leading");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let refused = session.promote().await.expect_err("the lease ran out");
        assert!(matches!(refused, MysqlError::NotLeader { .. }), "{refused}");
        assert_eq!(
            fake.operations(),
            [(key(2), Op::Open), (key(2), Op::StopIoThread)]
        );
        assert!(fake.server(&key(2)).read_only);
    }
}
