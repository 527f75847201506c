//! Discovery: crawls topologies from seed instances and keeps every known instance
//! polled. Each instance has its own poller task on its own schedule (a tick every
//! `poll_interval`, not "interval after the last probe finished"), so one slow or dead
//! instance never delays another; a semaphore bounds how many probes run at once (and
//! a few more places are kept for probes asked for now, so a lost primary's are never
//! queued behind the polling of thousands of others). One
//! owner task holds the state, applies probe results, follows new sources and replicas,
//! and publishes an immutable snapshot after every change.
//!
//! A death must be news at once, not at the next poll: beside its poller, every instance
//! has a liveness watch — a second connection parked in `SELECT SLEEP(..)`, which fails
//! the moment the server's process dies and wakes the poller. `probe_now` lets the
//! recovery logic re-read the replicas of a primary it just lost without waiting.

use crate::claims::Claims;
use crate::mysql::probe::probe;
use crate::mysql::{ConnectSettings, Connection, MysqlError};
use crate::store::{AuditEntry, Store};
use crate::topology::cluster::ClusterAlias;
use crate::topology::{ClusterMemo, ClusterView, Instance, InstanceFacts, InstanceKey, Snapshot};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// What discovery needs to run.
#[derive(Clone, Debug)]
pub struct DiscoveryOptions {
    pub connect: ConnectSettings,
    pub poll_interval: Duration,
    pub max_concurrent_probes: usize,
    /// The agent lock taken on every instance's liveness connection, when this agent
    /// shares no `[ha]` lease with others (see `claims`).
    pub claims: Option<Claims>,
    /// How many instances the open-file limit lets this agent watch at two connections
    /// each (`agent::raise_file_limit`): past it, an instance is refused loudly instead
    /// of watched through connections that fail for want of a file descriptor (which
    /// would look like the instance dying).
    pub max_instances: usize,
}

/// The running discovery: read snapshots, add and forget instances.
#[derive(Clone)]
pub struct DiscoveryHandle {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    commands: mpsc::Sender<Command>,
    options: DiscoveryOptions,
    clusters: Arc<ClusterMemo>,
}

enum Command {
    /// An instance an operator asked for, already probed once.
    Add {
        key: InstanceKey,
        facts: Box<InstanceFacts>,
        done: oneshot::Sender<()>,
    },
    Forget {
        key: InstanceKey,
        done: oneshot::Sender<bool>,
    },
    ProbeNow {
        keys: Vec<InstanceKey>,
    },
    /// Ends every poller and liveness watch (closing their connections) and the owner.
    Stop {
        done: oneshot::Sender<()>,
    },
}

struct ProbeReport {
    key: InstanceKey,
    at: SystemTime,
    outcome: Result<(InstanceFacts, Duration), String>,
}

/// Starts discovery from the seeds and from every instance the store remembers.
pub fn start(options: DiscoveryOptions, seeds: Vec<InstanceKey>, store: Store) -> DiscoveryHandle {
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (command_tx, command_rx) = mpsc::channel(64);
    let (report_tx, report_rx) = mpsc::channel(1024);
    let (urgent_tx, urgent_rx) = mpsc::channel(256);
    let owner = Owner {
        world: Snapshot {
            shape: 1,
            ..Snapshot::default()
        },
        pollers: HashMap::new(),
        options: options.clone(),
        semaphore: Arc::new(Semaphore::new(options.max_concurrent_probes)),
        urgent: Arc::new(Semaphore::new(URGENT_PROBES)),
        reports: Reports {
            regular: report_tx,
            urgent: urgent_tx,
        },
        snapshot: snapshot_tx,
        store,
        refused: Default::default(),
        applied: 0,
    };
    tokio::spawn(owner.run(seeds, command_rx, report_rx, urgent_rx));
    DiscoveryHandle {
        clusters: Arc::default(),
        snapshots: snapshot_rx,
        commands: command_tx,
        options,
    }
}

impl DiscoveryHandle {
    /// The clusters of `snapshot` (one this handle gave), grouped again only when the
    /// trees changed shape: whoever asks shares the grouping.
    pub fn clusters(&self, snapshot: &Snapshot, aliases: &[ClusterAlias]) -> Arc<Vec<ClusterView>> {
        self.clusters.clusters(snapshot, aliases)
    }

    /// The latest snapshot; cheap (an `Arc` clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// The agent locks this agent's liveness connections found, when it takes them.
    pub fn claims(&self) -> Option<&Claims> {
        self.options.claims.as_ref()
    }

    /// A receiver that wakes on every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }

    /// Probes `key` now and, if it answers, adds it and crawls its topology. The error
    /// says why the instance could not be probed.
    pub async fn discover(&self, key: InstanceKey) -> Result<InstanceFacts, DiscoverError> {
        let max = self.options.max_instances;
        let snapshot = self.snapshot();
        if snapshot.instances.len() >= max && snapshot.get(&key).is_none() {
            return Err(DiscoverError::Full(max));
        }
        let mut conn = Connection::open(&key, &self.options.connect).await?;
        let facts = probe(&mut conn).await;
        conn.close().await;
        let facts = facts?;
        let (done, wait) = oneshot::channel();
        self.commands
            .send(Command::Add {
                key,
                facts: Box::new(facts.clone()),
                done,
            })
            .await
            .map_err(|_| DiscoverError::Stopped)?;
        wait.await.map_err(|_| DiscoverError::Stopped)?;
        Ok(facts)
    }

    /// Probes these instances now instead of at their next tick. Never waits: when the
    /// owner is busy the request is dropped, and the regular schedule stands.
    pub fn probe_now(&self, keys: Vec<InstanceKey>) {
        let _ = self.commands.try_send(Command::ProbeNow { keys });
    }

    /// Probes these instances now and waits (at most `within`) until the snapshot holds
    /// a probe of each that started after this call, so a caller that just changed them
    /// answers with what the servers say now — an operator who acts twice in a row is
    /// judged on the first action's result, not on the poll before it.
    pub async fn probe_and_wait(&self, keys: Vec<InstanceKey>, within: Duration) {
        let since = SystemTime::now();
        let mut snapshots = self.subscribe();
        self.probe_now(keys.clone());
        let fresh = |snapshot: &Snapshot| {
            keys.iter().all(|key| {
                snapshot.get(key).is_some_and(|instance| {
                    let probe_started = instance.last_seen.map(|seen| {
                        seen - Duration::from_millis(instance.probe_millis.unwrap_or(0))
                    });
                    probe_started.is_some_and(|started| started >= since)
                        || instance.last_failure.is_some_and(|failed| failed >= since)
                })
            })
        };
        let _ = tokio::time::timeout(within, async {
            while !fresh(&snapshots.borrow_and_update()) {
                if snapshots.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Ends discovery: every poller and liveness watch, with their connections; the
    /// snapshot stops changing, and whoever waits for a new one is told it ended.
    pub async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Stop { done }).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Stops polling `key` and removes it. Returns whether it was known. An instance that
    /// still replicates from or to a known one is found again on the next poll.
    pub async fn forget(&self, key: InstanceKey) -> Result<bool, DiscoverError> {
        let (done, wait) = oneshot::channel();
        self.commands
            .send(Command::Forget { key, done })
            .await
            .map_err(|_| DiscoverError::Stopped)?;
        wait.await.map_err(|_| DiscoverError::Stopped)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    Mysql(#[from] MysqlError),
    #[error("discovery has stopped; restart the agent")]
    Stopped,
    #[error("this agent already watches {0} instances, all its open-file limit (RLIMIT_NOFILE) allows at two connections each: raise the limit (LimitNOFILE= in a systemd unit, ulimit -n) and restart the agent")]
    Full(usize),
}

/// The tasks that watch one instance.
struct Poller {
    probing: JoinHandle<()>,
    liveness: JoinHandle<()>,
    wake: Arc<Notify>,
}

impl Poller {
    fn stop(&self) {
        self.probing.abort();
        self.liveness.abort();
    }
}

/// Where pollers send their results: a probe asked for now has a way of its own to the
/// owner, taken first, so it never waits behind the results of a large fleet's polls.
#[derive(Clone)]
struct Reports {
    regular: mpsc::Sender<ProbeReport>,
    urgent: mpsc::Sender<ProbeReport>,
}

/// How many probes asked for now may run at once, beside `max_concurrent_probes`.
const URGENT_PROBES: usize = 8;

struct Owner {
    /// What is known, as the next snapshot will show it.
    world: Snapshot,
    pollers: HashMap<InstanceKey, Poller>,
    options: DiscoveryOptions,
    semaphore: Arc<Semaphore>,
    /// Probes asked for now (a primary that stopped answering, its replicas confirming,
    /// a recovery checking its work) take these, never queueing behind regular polls.
    urgent: Arc<Semaphore>,
    reports: Reports,
    snapshot: watch::Sender<Arc<Snapshot>>,
    store: Store,
    /// Instances refused for the open-file limit, each said once.
    refused: std::collections::HashSet<InstanceKey>,
    /// Probe results applied so far: each instance's `version` is the count at its last.
    applied: u64,
}

impl Owner {
    async fn run(
        mut self,
        seeds: Vec<InstanceKey>,
        mut commands: mpsc::Receiver<Command>,
        mut reports: mpsc::Receiver<ProbeReport>,
        mut urgent: mpsc::Receiver<ProbeReport>,
    ) {
        let remembered = self.store.known_instances().unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read known instances from the store");
            Vec::new()
        });
        for key in seeds.into_iter().chain(remembered) {
            self.track(key, "seed");
        }
        self.publish();
        loop {
            // What was asked for now first, then commands, then the regular polls.
            tokio::select! {
                biased;
                Some(report) = urgent.recv() => {
                    self.apply(report);
                    self.apply_waiting(&mut urgent, &mut reports);
                    self.publish();
                }
                command = commands.recv() => match command {
                    Some(Command::Add { key, facts, done }) => {
                        self.track(key.clone(), "operator");
                        self.apply(ProbeReport { key, at: SystemTime::now(), outcome: Ok((*facts, Duration::ZERO)) });
                        self.publish();
                        let _ = done.send(());
                    }
                    Some(Command::ProbeNow { keys }) => {
                        for key in keys {
                            if let Some(poller) = self.pollers.get(&key) {
                                poller.wake.notify_one();
                            }
                        }
                    }
                    Some(Command::Forget { key, done }) => {
                        let known = self.untrack(&key);
                        self.publish();
                        let _ = done.send(known);
                    }
                    Some(Command::Stop { done }) => {
                        for poller in self.pollers.values() {
                            poller.stop();
                        }
                        let _ = done.send(());
                        return;
                    }
                    None => break,
                },
                Some(report) = reports.recv() => {
                    self.apply(report);
                    self.apply_waiting(&mut urgent, &mut reports);
                    self.publish();
                }
            }
        }
        for (_, poller) in self.pollers.drain() {
            poller.stop();
        }
    }

    /// Applies the results already waiting (at most a batch, the urgent ones first),
    /// so one snapshot is published for all of them.
    fn apply_waiting(
        &mut self,
        urgent: &mut mpsc::Receiver<ProbeReport>,
        reports: &mut mpsc::Receiver<ProbeReport>,
    ) {
        for _ in 0..1024 {
            match urgent.try_recv().or_else(|_| reports.try_recv()) {
                Ok(report) => self.apply(report),
                Err(_) => return,
            }
        }
    }

    /// Starts polling an instance not yet known.
    fn track(&mut self, key: InstanceKey, found_via: &str) {
        if self.pollers.contains_key(&key) {
            return;
        }
        if self.pollers.len() >= self.options.max_instances {
            self.refuse(key, found_via);
            return;
        }
        match self.store.remember_instance(&key) {
            Ok(true) => {
                let _ = self.store.audit(AuditEntry {
                    actor: "agent".into(),
                    action: "instance-discovered".into(),
                    cluster: None,
                    instance: Some(key.clone()),
                    message: format!("now polling {key} (found via {found_via})"),
                });
            }
            Ok(false) => {}
            Err(error) => tracing::error!(%error, instance = %key, "cannot remember instance"),
        }
        self.world
            .instances
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Instance::new(key.clone())));
        self.world.shape += 1;
        let wake = Arc::new(Notify::new());
        let poller = Poller {
            probing: tokio::spawn(poll_instance(
                key.clone(),
                self.options.clone(),
                self.semaphore.clone(),
                self.urgent.clone(),
                self.reports.clone(),
                wake.clone(),
            )),
            liveness: tokio::spawn(watch_liveness(
                key.clone(),
                self.options.clone(),
                wake.clone(),
            )),
            wake,
        };
        self.pollers.insert(key, poller);
    }

    /// An instance past what the open-file limit allows: said in the log (once per
    /// instance) and the audit log, never watched half-way.
    fn refuse(&mut self, key: InstanceKey, found_via: &str) {
        if !self.refused.insert(key.clone()) {
            return;
        }
        let error = DiscoverError::Full(self.options.max_instances);
        tracing::error!(instance = %key, found_via, "not watched: {error}");
        let _ = self.store.audit(AuditEntry {
            actor: "agent".into(),
            action: "instance-not-watched".into(),
            cluster: None,
            instance: Some(key.clone()),
            message: format!("{key} (found via {found_via}) is not watched: {error}"),
        });
    }

    fn untrack(&mut self, key: &InstanceKey) -> bool {
        if let Some(poller) = self.pollers.remove(key) {
            poller.stop();
        }
        let known = self.world.remove(key);
        self.world.shape += 1;
        if let Err(error) = self.store.forget_instance(key) {
            tracing::error!(%error, instance = %key, "cannot forget instance in the store");
        }
        known
    }

    fn apply(&mut self, report: ProbeReport) {
        let ProbeReport { key, at, outcome } = report;
        if !self.pollers.contains_key(&key) {
            return; // forgotten while its probe was running
        }
        let (neighbours, moved) = {
            let Some(shared) = self.world.instances.get_mut(&key) else {
                return;
            };
            // A result that an urgent one overtook on its way here says less than what
            // is already known: dropped.
            if shared
                .last_seen
                .max(shared.last_failure)
                .is_some_and(|latest| at < latest)
            {
                return;
            }
            self.applied += 1;
            match outcome {
                Ok((facts, took)) => {
                    // Compared with the old facts before they go.
                    let heard = source_last_heard(shared, &facts, at);
                    let moved = shared.source() != facts.replication.as_ref().map(|r| &r.source);
                    // The published snapshots keep the instance as it was; the old facts
                    // are replaced, so they are not worth copying.
                    if Arc::strong_count(shared) > 1 {
                        *shared = Arc::new(shared.without_facts());
                    }
                    let instance = Arc::make_mut(shared);
                    if instance.unreachable_since.is_some() {
                        tracing::info!(instance = %key, "instance answers again");
                    }
                    instance.source_last_heard = heard;
                    let neighbours: Vec<InstanceKey> = facts
                        .replication
                        .iter()
                        .map(|r| r.source.clone())
                        .chain(facts.replicas.iter().cloned())
                        .collect();
                    instance.facts = Some(facts);
                    instance.last_seen = Some(at);
                    instance.unreachable_since = None;
                    instance.last_error = None;
                    if took > Duration::ZERO {
                        instance.probe_millis = Some(took.as_millis() as u64);
                    }
                    (neighbours, moved)
                }
                Err(error) => {
                    let instance = Arc::make_mut(shared);
                    if instance.unreachable_since.is_none() {
                        tracing::warn!(instance = %key, %error, "instance does not answer");
                        instance.unreachable_since = Some(at);
                    }
                    instance.last_failure = Some(at);
                    instance.last_error = Some(error);
                    (Vec::new(), false)
                }
            }
        };
        self.world.set_version(&key, self.applied);
        if moved {
            self.world.shape += 1;
        }
        for neighbour in neighbours {
            self.track(neighbour, &key.to_string());
        }
    }

    fn publish(&self) {
        self.snapshot.send_replace(Arc::new(self.world.clone()));
    }
}

/// The replica heard from its source if its heartbeat counter or received position
/// moved since the previous probe; otherwise the previous time stands.
fn source_last_heard(
    previous: &Instance,
    facts: &InstanceFacts,
    at: SystemTime,
) -> Option<SystemTime> {
    let now_status = facts.replication.as_ref()?;
    let before = previous.facts.as_ref().and_then(|f| f.replication.as_ref());
    match before {
        Some(before)
            if before.source == now_status.source
                && before.contact_marker() == now_status.contact_marker()
                && previous.source_last_heard.is_some() =>
        {
            previous.source_last_heard
        }
        _ => Some(at),
    }
}

/// Polls one instance forever on a fixed schedule, keeping one connection open and
/// reconnecting after any failure; `wake` brings the next probe forward.
async fn poll_instance(
    key: InstanceKey,
    options: DiscoveryOptions,
    semaphore: Arc<Semaphore>,
    urgent: Arc<Semaphore>,
    reports: Reports,
    wake: Arc<Notify>,
) {
    let mut ticker = tokio::time::interval(options.poll_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut connection: Option<Connection> = None;
    // Woken while its last result waited to be taken: probe again at once.
    let mut woken_meanwhile = false;
    loop {
        let woken = woken_meanwhile
            || tokio::select! {
                _ = ticker.tick() => false,
                _ = wake.notified() => {
                    ticker.reset();
                    true
                }
            };
        if woken {
            tracing::trace!(instance = %key, "asked to probe now");
        }
        woken_meanwhile = false;
        // Woken while queueing for a regular place (a large fleet waits there most of
        // the time): it moves to the urgent ones.
        let mut asked_now = woken;
        let permit = if woken {
            urgent.acquire().await
        } else {
            tokio::select! {
                permit = semaphore.acquire() => permit,
                _ = wake.notified() => {
                    ticker.reset();
                    asked_now = true;
                    urgent.acquire().await
                }
            }
        };
        let Ok(_permit) = permit else {
            return;
        };
        if asked_now {
            tracing::trace!(instance = %key, "probing now, as asked");
        }
        let started = Instant::now();
        let outcome = probe_once(&key, &options.connect, &mut connection).await;
        let at = SystemTime::now();
        let outcome = match outcome {
            Ok(facts) => Ok((facts, started.elapsed())),
            Err(error) => {
                if let Some(conn) = connection.take() {
                    drop(conn); // a failed connection may be half-open: never reuse it
                }
                Err(error.without_instance())
            }
        };
        let report = ProbeReport {
            key: key.clone(),
            at,
            outcome,
        };
        let sent = if asked_now {
            tracing::trace!(instance = %key, ok = report.outcome.is_ok(), "probed as asked");
            reports.urgent.send(report).await
        } else {
            // A regular result may wait long behind a large fleet's: woken meanwhile,
            // it is dropped for a probe asked for now, which says more anyway.
            tokio::select! {
                sent = reports.regular.send(report) => sent,
                _ = wake.notified() => {
                    ticker.reset();
                    woken_meanwhile = true;
                    Ok(())
                }
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Keeps a second connection parked in a long `SLEEP`: when the server dies the query
/// fails at once, and the poller is woken to see what happened. Reconnects every poll
/// interval while the server does not answer.
/// The same connection holds (or looks for) the agent lock between two parks: every
/// two seconds while it holds it (a lock it must let go of is let go of that soon), every
/// poll interval while it does not.
async fn watch_liveness(key: InstanceKey, options: DiscoveryOptions, wake: Arc<Notify>) {
    const PARK: Duration = Duration::from_secs(30);
    const PARK_HOLDING: Duration = Duration::from_secs(2);
    let comment = options
        .claims
        .as_ref()
        .map_or_else(|| "pointsman liveness".to_string(), Claims::comment);
    loop {
        match Connection::open(&key, &options.connect).await {
            Ok(mut conn) => {
                let mut held = false;
                loop {
                    let period = match &options.claims {
                        None => PARK,
                        Some(claims) => {
                            if claims.keep(&mut conn, &key, &mut held).await.is_err() {
                                break;
                            }
                            if held {
                                PARK_HOLDING
                            } else {
                                options.poll_interval
                            }
                        }
                    };
                    if conn.park(period, &comment).await.is_err() {
                        break;
                    }
                }
                if let Some(claims) = &options.claims {
                    claims.lost(&key);
                }
                tracing::debug!(instance = %key, "liveness connection lost");
                wake.notify_one();
            }
            Err(_) => tokio::time::sleep(options.poll_interval).await,
        }
    }
}

async fn probe_once(
    key: &InstanceKey,
    settings: &ConnectSettings,
    connection: &mut Option<Connection>,
) -> Result<InstanceFacts, MysqlError> {
    if connection.is_none() {
        *connection = Some(Connection::open(key, settings).await?);
    }
    let conn = connection.as_mut().expect("connection was just opened");
    probe(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::instance::tests_support::replica;

    #[test]
    fn a_replica_hears_its_source_when_heartbeats_or_positions_move() {
        let source = InstanceKey::new("127.0.0.1", 1);
        let before = replica(InstanceKey::new("127.0.0.1", 2), source);
        let t0 = before.source_last_heard.expect("set by builder");
        let later = t0 + Duration::from_secs(3);

        let same = before.facts.clone().expect("facts");
        assert_eq!(source_last_heard(&before, &same, later), Some(t0));

        let mut beat = same.clone();
        beat.replication
            .as_mut()
            .expect("replica")
            .received_heartbeats = Some(7);
        assert_eq!(source_last_heard(&before, &beat, later), Some(later));

        let mut event = same.clone();
        event
            .replication
            .as_mut()
            .expect("replica")
            .read_source_log_pos = 900;
        assert_eq!(source_last_heard(&before, &event, later), Some(later));

        let mut primary = same;
        primary.replication = None;
        assert_eq!(source_last_heard(&before, &primary, later), None);
    }
}
