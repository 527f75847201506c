//! The executor: carries out a promotion plan against the servers, one audited, timed
//! step at a time. Order matters for not losing writes: every replica stops receiving
//! first (a primary that is only cut off cannot feed anyone behind our back), the
//! candidate applies all it received, catches up from a more advanced replica if the
//! plan says so, and only then is promoted; the siblings follow it by GTID.

use super::plan::PromotionPlan;
use crate::mysql::admin::{self, ReplicationAccount};
use crate::mysql::{ConnectSettings, Connection, MysqlError};
use crate::store::recovery::StepRecord;
use crate::topology::InstanceKey;
use futures::future::join_all;
use std::future::Future;
use std::time::{Duration, Instant};

/// How the executor reaches servers and how long it waits for them.
#[derive(Clone, Debug)]
pub struct Executor {
    pub connect: ConnectSettings,
    pub account: ReplicationAccount,
    /// How long a candidate may take to apply its relay log (or catch up).
    pub apply_timeout: Duration,
    /// How long a re-pointed replica may take to replicate.
    pub verify_timeout: Duration,
    /// The heartbeat period of a link that had none (`recovery.heartbeat_period`); a
    /// re-pointed replica keeps its own.
    pub heartbeat_period: Duration,
}

/// Steps as they run, for the recovery record.
#[derive(Clone, Debug, Default)]
pub struct StepLog {
    pub recovery_id: String,
    pub steps: Vec<StepRecord>,
}

impl StepLog {
    pub fn new(recovery_id: &str) -> Self {
        Self {
            recovery_id: recovery_id.to_string(),
            steps: Vec::new(),
        }
    }

    /// Records a step that happened outside the executor (a decision, a hook).
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
        self.steps.push(StepRecord {
            step: step.to_string(),
            instance: instance.cloned(),
            ok,
            detail,
            duration_ms: took.as_millis() as u64,
        });
    }
}

/// Why a recovery stopped, with the step it stopped at.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {source}")]
pub struct StepFailed {
    pub step: String,
    #[source]
    pub source: MysqlError,
}

impl Executor {
    async fn open(&self, key: &InstanceKey) -> Result<Connection, MysqlError> {
        Connection::open(key, &self.connect).await
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
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = (Connection, Result<(), MysqlError>)> + 'a,
    {
        let started = Instant::now();
        let result = match self.open(key).await {
            Ok(conn) => {
                let (conn, result) = operation(conn).await;
                conn.close().await;
                result
            }
            Err(error) => Err(error),
        };
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
                    source: error,
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
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = (Connection, Result<(), MysqlError>)> + 'a,
    {
        let started = Instant::now();
        let operation = &operation;
        let results = join_all(keys.iter().map(|key| async move {
            let result = match self.open(key).await {
                Ok(conn) => {
                    let (conn, result) = operation(conn).await;
                    conn.close().await;
                    result
                }
                Err(error) => Err(error),
            };
            (key, result)
        }))
        .await;
        let took = started.elapsed();
        let mut failed = Vec::new();
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
            |mut conn| async move {
                let result = admin::stop_io_thread(&mut conn).await;
                (conn, result)
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
        if failed.contains(candidate) {
            return Err(StepFailed {
                step: format!("stop IO thread on {candidate}"),
                source: MysqlError::Unexpected {
                    instance: candidate.clone(),
                    statement: "STOP REPLICA IO_THREAD".into(),
                    message: "the candidate could not be stopped".into(),
                },
            });
        }

        let timeout = self.apply_timeout;
        let heartbeat = self.heartbeat_period;
        self.step(
            log,
            "apply relay log",
            candidate,
            "applied everything it received".into(),
            |mut conn| async move {
                let result = admin::wait_relay_applied(&mut conn, timeout).await;
                (conn, result)
            },
        )
        .await?;

        if let Some(source) = &plan.catch_up_from {
            self.step(
                log,
                "apply relay log",
                source,
                "applied everything it received".into(),
                |mut conn| async move {
                    let result = admin::wait_relay_applied(&mut conn, timeout).await;
                    (conn, result)
                },
            )
            .await?;
            let started = Instant::now();
            let target = async {
                let mut conn = self.open(source).await?;
                let result = admin::written_gtids(&mut conn).await;
                conn.close().await;
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
                    source: error,
                }
            })?;
            let from = source.clone();
            self.step(
                log,
                "catch up",
                candidate,
                format!("copied what {from} had and it lacked ({target})"),
                |mut conn| async move {
                    let result = async {
                        admin::repoint(&mut conn, &from, heartbeat).await?;
                        admin::wait_for_gtids(&mut conn, &target, timeout).await
                    }
                    .await;
                    (conn, result)
                },
            )
            .await?;
        }

        self.step(
            log,
            "promote",
            candidate,
            "replication reset, read_only OFF: takes writes".into(),
            |mut conn| async move {
                let result = admin::promote(&mut conn).await;
                (conn, result)
            },
        )
        .await
    }

    /// Starts replication again on replicas a failed recovery had stopped.
    pub async fn resume_receiving(&self, log: &mut StepLog, replicas: &[InstanceKey]) {
        self.on_each(
            log,
            "resume replication",
            replicas,
            |_| "receives again".into(),
            |mut conn| async move {
                let result = admin::start_replication(&mut conn).await;
                (conn, result)
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
        self.on_each(
            log,
            "re-point",
            replicas,
            |_| format!("replicates from {source} (GTID)"),
            |mut conn| async move {
                let result = async {
                    admin::repoint(&mut conn, source, heartbeat).await?;
                    admin::verify_replicating(&mut conn, verify).await
                }
                .await;
                (conn, result)
            },
        )
        .await
    }

    /// Sets read_only (with super_read_only) ON or OFF on a fresh connection, unrecorded:
    /// for callers that record the step in their own words.
    pub async fn set_read_only(&self, key: &InstanceKey, on: bool) -> Result<(), MysqlError> {
        let mut conn = self.open(key).await?;
        let result = admin::set_read_only(&mut conn, on).await;
        conn.close().await;
        result
    }

    /// Sets read_only (and super_read_only) on an instance, once, bounded by the timeouts.
    pub async fn fence(&self, log: &mut StepLog, key: &InstanceKey) -> Result<(), StepFailed> {
        self.step(
            log,
            "fence",
            key,
            "read_only ON: takes no writes".into(),
            |mut conn| async move {
                let result = admin::set_read_only(&mut conn, true).await;
                (conn, result)
            },
        )
        .await
    }

    /// Makes `key` (an old primary) a replica of `source` with the configured account.
    pub async fn attach(
        &self,
        log: &mut StepLog,
        key: &InstanceKey,
        source: &InstanceKey,
    ) -> Result<(), StepFailed> {
        let account = self.account.clone();
        let verify = self.verify_timeout;
        let heartbeat = self.heartbeat_period;
        let from = source.clone();
        self.step(
            log,
            "attach",
            key,
            format!("replicates from {source} (GTID)"),
            |mut conn| async move {
                let result = async {
                    admin::set_read_only(&mut conn, true).await?;
                    admin::attach(&mut conn, &from, &account, heartbeat).await?;
                    admin::verify_replicating(&mut conn, verify).await
                }
                .await;
                (conn, result)
            },
        )
        .await
    }
}
