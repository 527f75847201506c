//! Discovery: crawls topologies from seed instances and keeps every known instance
//! polled. Each instance has its own task and one connection, on its own schedule (a
//! probe every `poll_interval`, not "interval after the last probe finished"), so one
//! slow or dead instance never delays another; a semaphore bounds how many connections
//! are opened and probed at once (and a few more places are kept for probes asked for
//! now, so a lost primary's are never queued behind the polling of thousands of
//! others). One owner task holds the state, applies probe results, follows new sources
//! and replicas, and publishes an immutable snapshot after every change.
//!
//! A death must be news at once, not at the next poll: between two probes the
//! instance's connection is parked in `DO SLEEP(..)` until the next (the liveness
//! watch), and that query fails the moment the server's process dies. The probe rides
//! in the same query, behind the park: the server answers it as the park ends, so the
//! connection is never idle and a death is news whenever it comes (a probe that waited
//! for a place on its own was blind meanwhile: hundreds of ms at 10,000 instances on two
//! cores). The semaphore bounds the probes that are not sent behind a park: a new
//! connection's first (a fleet's start-up), and the few sent after a park too short to
//! be worth a statement. `probe_now` lets the recovery logic re-read the replicas of a
//! primary it just lost without waiting: on a connection of its own while the
//! instance's is parked; `probe_here_and_wait` does so from the caller's own
//! runtime (the recovery lane), through places of its own, and hands back the results
//! laid over the latest snapshot, so a confirmation queues neither behind the polling
//! nor behind the owner publishing what it found.

use crate::claims::Claims;
use crate::mysql::probe::{self, probe};
use crate::mysql::{ConnectSettings, Connection, MysqlError};
use crate::store::{AuditEntry, Store};
use crate::topology::cluster::ClusterAlias;
use crate::topology::{
    ClusterMemo, ClusterView, Instance, InstanceFacts, InstanceKey, ServerFlavor, Snapshot,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tokio::task::JoinHandle;

/// What discovery needs to run.
#[derive(Clone, Debug)]
pub struct DiscoveryOptions {
    pub connect: ConnectSettings,
    pub poll_interval: Duration,
    pub max_concurrent_probes: usize,
    /// The agent lock taken on every instance's connection, when this agent shares no
    /// `[ha]` lease with others (see `claims`).
    pub claims: Option<Claims>,
    /// How many instances the open-file limit lets this agent watch at one connection
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
    here: Arc<ProbesHere>,
    looks: Arc<ProbesHere>,
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
    /// Ends every instance's watch (closing its connection) and the owner.
    Stop {
        done: oneshot::Sender<()>,
    },
}

#[derive(Clone)]
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
        places: Places {
            regular: Arc::new(Semaphore::new(options.max_concurrent_probes)),
            urgent: Arc::new(Semaphore::new(URGENT_PROBES)),
        },
        reports: Reports {
            regular: report_tx,
            urgent: urgent_tx,
        },
        snapshot: snapshot_tx,
        store,
        refused: Default::default(),
        applied: 0,
    };
    let here = Arc::new(ProbesHere {
        places: Arc::new(Semaphore::new(PROBES_HERE)),
        reports: owner.reports.urgent.clone(),
        running: Default::default(),
    });
    let looks = Arc::new(ProbesHere {
        places: Arc::new(Semaphore::new(LOOKS)),
        reports: owner.reports.urgent.clone(),
        running: Default::default(),
    });
    tokio::spawn(owner.run(seeds, command_rx, report_rx, urgent_rx));
    DiscoveryHandle {
        clusters: Arc::default(),
        snapshots: snapshot_rx,
        commands: command_tx,
        options,
        here,
        looks,
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

    /// The agent locks this agent's connections found, when it takes them.
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

    /// Looks at instances that are down, each on a connection of its own through places
    /// of their own (`LOOKS`), its result published at once: the fenced old primaries,
    /// looked at every 100 ms so that one that restarts is fenced the moment it answers.
    /// A host that is gone for good (powered off, its address dropped) holds its place
    /// for the whole connect timeout; through the places of probes asked for now, a few
    /// such hosts kept a primary's death waiting for one. An instance still being looked
    /// at is not looked at again.
    pub fn look_at(&self, keys: Vec<InstanceKey>) {
        let known = self.snapshot();
        for key in keys {
            let Some(running) = self.looks.start(&key) else {
                continue;
            };
            let flavor = learned_flavor(&known, &key);
            let connect = self.options.connect.clone();
            tokio::spawn(async move {
                running
                    .probe(flavor, &connect, None, "a look at an instance that is down")
                    .await;
            });
        }
    }

    /// Probes these instances now and waits (at most `within`) until the snapshot holds
    /// a probe of each that started after this call, so a caller that just changed them
    /// answers with what the servers say now — an operator who acts twice in a row is
    /// judged on the first action's result, not on the poll before it.
    pub async fn probe_and_wait(&self, keys: Vec<InstanceKey>, within: Duration) {
        let since = SystemTime::now();
        let snapshots = self.subscribe();
        self.probe_now(keys.clone());
        until_probed_since(snapshots, &keys, since, within).await;
    }

    /// As `probe_and_wait`, but the probes run on the caller's runtime (each on a
    /// connection of its own, through places of their own), not in the instances' watches,
    /// and their results are read here as well as sent to the owner: a lost primary's
    /// confirmation, on the recovery lane, waits neither for the busy runtime of a large
    /// fleet's polling to send and read its probes nor for the owner to publish them.
    /// An instance whose probe from here is still running is not probed a second time;
    /// its result is awaited in the owner's snapshots.
    ///
    /// Returns the latest snapshot with these probes' results in it, and the
    /// connections of the probes that answered in time, left open: a recovery that
    /// follows at once takes them and skips its connects. Whatever the caller does not
    /// use, it closes.
    pub async fn probe_here_and_wait(
        &self,
        keys: Vec<InstanceKey>,
        within: Duration,
    ) -> ProbedHere {
        let since = SystemTime::now();
        let deadline = tokio::time::Instant::now() + within;
        let snapshots = self.subscribe();
        let (left_open, mut open) = mpsc::unbounded_channel();
        let (results, mut heard) = mpsc::unbounded_channel();
        let mut awaited_elsewhere = Vec::new();
        let known = self.snapshot();
        for key in &keys {
            let Some(running) = self.here.start(key) else {
                awaited_elsewhere.push(key.clone());
                continue;
            };
            let flavor = learned_flavor(&known, key);
            let caller = Caller {
                left_open: left_open.clone(),
                results: results.clone(),
            };
            let connect = self.options.connect.clone();
            tokio::spawn(async move {
                running
                    .probe(flavor, &connect, Some(caller), "from the caller")
                    .await;
            });
        }
        drop((left_open, results));
        let mut reports = Vec::new();
        while let Ok(Some(report)) = tokio::time::timeout_at(deadline, heard.recv()).await {
            reports.push(report);
        }
        if !awaited_elsewhere.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            until_probed_since(snapshots, &awaited_elsewhere, since, left).await;
        }
        // A probe hands its connection over before it sends its result, so every probe
        // heard from has; one that comes later closes its own.
        let mut connections = Vec::new();
        while let Ok(connection) = open.try_recv() {
            connections.push(connection);
        }
        let mut snapshot = (*self.snapshot()).clone();
        for report in reports {
            // Grouped afresh if a replica moved: the memo's grouping is of the owner's
            // shapes, and this one is not among them.
            if apply_to(&mut snapshot, report).is_some_and(|applied| applied.moved) {
                snapshot.shape = 0;
            }
        }
        ProbedHere {
            snapshot: Arc::new(snapshot),
            open: connections,
        }
    }

    /// Ends discovery: every instance's watch, with its connection; the
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

/// What `probe_here_and_wait` found.
pub struct ProbedHere {
    /// The latest snapshot, with the results of the probes from here in it (which the
    /// owner may not have published yet).
    pub snapshot: Arc<Snapshot>,
    /// The connections of the probes that answered, left open.
    pub open: Vec<Connection>,
}

/// The flavour a probe of `key` learned, if one did.
fn learned_flavor(snapshot: &Snapshot, key: &InstanceKey) -> Option<ServerFlavor> {
    snapshot
        .get(key)
        .and_then(|instance| instance.facts.as_ref())
        .map(|facts| facts.flavor)
}

/// Waits (at most `within`) until `snapshots` holds a probe of every key that started
/// at or after `since`, or a failure since then.
async fn until_probed_since(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    keys: &[InstanceKey],
    since: SystemTime,
    within: Duration,
) {
    let fresh = |snapshot: &Snapshot| {
        keys.iter().all(|key| {
            snapshot.get(key).is_some_and(|instance| {
                let probe_started = instance
                    .last_seen
                    .map(|seen| seen - Duration::from_millis(instance.probe_millis.unwrap_or(0)));
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

/// Probes run by callers themselves (`probe_here_and_wait`), or looks at instances that
/// are down (`look_at`), each kind with places of its own; their results are sent to
/// the owner as urgent ones.
struct ProbesHere {
    places: Arc<Semaphore>,
    reports: mpsc::Sender<ProbeReport>,
    /// The instances being probed from here now.
    running: std::sync::Mutex<std::collections::HashSet<InstanceKey>>,
}

impl ProbesHere {
    /// Marks `key` as probed from here; `None` when it already is.
    fn start(self: &Arc<Self>, key: &InstanceKey) -> Option<ProbeHere> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(key.clone()).then(|| ProbeHere {
            here: self.clone(),
            key: key.clone(),
        })
    }
}

/// One probe from here; its instance is unmarked when it ends or is dropped.
struct ProbeHere {
    here: Arc<ProbesHere>,
    key: InstanceKey,
}

impl ProbeHere {
    async fn probe(
        &self,
        flavor: Option<ServerFlavor>,
        connect: &ConnectSettings,
        caller: Option<Caller>,
        from: &str,
    ) {
        let here = &self.here;
        probe_aside(
            &self.key,
            flavor,
            connect,
            &here.places,
            &here.reports,
            from,
            caller,
        )
        .await;
    }
}

/// Where a probe from the caller hands its connection (when it answered) and a copy of
/// its result, before the owner is sent the result.
struct Caller {
    left_open: mpsc::UnboundedSender<Connection>,
    results: mpsc::UnboundedSender<ProbeReport>,
}

impl Drop for ProbeHere {
    fn drop(&mut self) {
        let mut running = self.here.running.lock().unwrap_or_else(|p| p.into_inner());
        running.remove(&self.key);
    }
}

/// One probe asked for now, on a connection of its own through one of `places`, its
/// result sent to the owner as an urgent one; `from` says where it was asked (for the
/// trace). `flavor`: the instance's, when a probe already learned it (the connect then
/// does not ask). The connection is closed after the probe, or, given a `caller` and
/// the probe answered, handed over there first, with a copy of the result. `false` once
/// the owner is gone.
async fn probe_aside(
    key: &InstanceKey,
    flavor: Option<ServerFlavor>,
    connect: &ConnectSettings,
    places: &Semaphore,
    reports: &mpsc::Sender<ProbeReport>,
    from: &str,
    caller: Option<Caller>,
) -> bool {
    let Ok(_permit) = places.acquire().await else {
        return false;
    };
    tracing::trace!(instance = %key, "probing now, as asked, {from}");
    let started = tokio::time::Instant::now();
    let outcome = async {
        let mut conn = Connection::open_as(key, connect, flavor).await?;
        let facts = probe::probe(&mut conn).await;
        let took = started.elapsed();
        match (&facts, &caller) {
            (Ok(_), Some(caller)) => {
                if let Err(unwanted) = caller.left_open.send(conn) {
                    unwanted.0.close().await;
                }
            }
            _ => conn.close().await,
        }
        facts.map(|facts| (facts, took))
    }
    .await;
    let report = ProbeReport::new(key, outcome);
    tracing::trace!(instance = %key, ok = report.outcome.is_ok(), "probed as asked");
    if let Some(caller) = caller {
        let _ = caller.results.send(report.clone());
    }
    reports.send(report).await.is_ok()
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    Mysql(#[from] MysqlError),
    #[error("discovery has stopped; restart the agent")]
    Stopped,
    #[error("this agent already watches {0} instances, all its open-file limit (RLIMIT_NOFILE) allows at one connection each: raise the limit (LimitNOFILE= in a systemd unit, ulimit -n) and restart the agent")]
    Full(usize),
}

/// The task that watches one instance (`watch_instance`).
struct Poller {
    task: JoinHandle<()>,
    wake: Arc<Notify>,
}

impl Poller {
    fn stop(&self) {
        self.task.abort();
    }
}

/// Where pollers send their results: a probe asked for now has a way of its own to the
/// owner, taken first, so it never waits behind the results of a large fleet's polls.
#[derive(Clone)]
struct Reports {
    regular: mpsc::Sender<ProbeReport>,
    urgent: mpsc::Sender<ProbeReport>,
}

/// How long a regular probe's result may wait to be published with others. Results
/// asked for now (a death, a recovery's check) and commands are published at once.
const PUBLISH_REGULAR: Duration = Duration::from_millis(25);

/// How many probes asked for now may run at once, beside `max_concurrent_probes`.
const URGENT_PROBES: usize = 8;

/// How many looks at instances that are down (`DiscoveryHandle::look_at`) may run at
/// once: apart from the urgent places, which a death's probe needs at once.
const LOOKS: usize = 4;

/// How many probes callers run themselves (a lost primary's replicas confirming it) may
/// run at once: places of their own, so that a failover's confirmation never queues
/// behind probes asked for now elsewhere (fenced old primaries looked at every 100 ms,
/// recoveries checking their work).
const PROBES_HERE: usize = 16;

struct Owner {
    /// What is known, as the next snapshot will show it.
    world: Snapshot,
    pollers: HashMap<InstanceKey, Poller>,
    options: DiscoveryOptions,
    /// Probes asked for now (a primary that stopped answering, its replicas confirming,
    /// a recovery checking its work) take urgent places, never queueing behind regular
    /// polls.
    places: Places,
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
        // Regular results not yet published, and when they will be.
        let mut held_back: Option<tokio::time::Instant> = None;
        loop {
            let publish_held_back = async {
                match held_back {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // What was asked for now first, then commands, then the regular polls.
            tokio::select! {
                biased;
                Some(report) = urgent.recv() => {
                    // Published without the regular results waiting behind (up to a
                    // batch of them on a large fleet): those follow.
                    let mut news = self.apply(report);
                    while let Ok(report) = urgent.try_recv() {
                        news |= self.apply(report);
                    }
                    // An instance that was down and still is (a fenced old primary
                    // looked at every 100 ms) is no reason to judge at once: dozens of
                    // them kept the coordinator judging a large fleet without pause.
                    if news {
                        self.world.urgent += 1;
                    }
                    self.publish();
                    held_back = None;
                }
                command = commands.recv() => match command {
                    Some(Command::Add { key, facts, done }) => {
                        self.track(key.clone(), "operator");
                        let _ = self.apply(ProbeReport { key, at: SystemTime::now(), outcome: Ok((*facts, Duration::ZERO)) });
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
                // Before the regular results: a fleet that always has one waiting must
                // not hold its snapshot back for ever.
                _ = publish_held_back => {
                    self.publish();
                    held_back = None;
                }
                Some(report) = reports.recv() => {
                    let _ = self.apply(report);
                    self.apply_waiting(&urgent, &mut reports);
                    // A large fleet's results come a few at a time: published together,
                    // at most every PUBLISH_REGULAR, or every small batch would cost the
                    // coordinator and the routing engine a look at the snapshot.
                    held_back.get_or_insert_with(|| tokio::time::Instant::now() + PUBLISH_REGULAR);
                }
            }
        }
        for (_, poller) in self.pollers.drain() {
            poller.stop();
        }
    }

    /// Applies the regular results already waiting (at most a batch), so one snapshot
    /// is published for all of them; an urgent one waiting stops the batch.
    fn apply_waiting(
        &mut self,
        urgent: &mpsc::Receiver<ProbeReport>,
        reports: &mut mpsc::Receiver<ProbeReport>,
    ) {
        for _ in 0..1024 {
            if !urgent.is_empty() {
                return;
            }
            match reports.try_recv() {
                Ok(report) => {
                    let _ = self.apply(report);
                }
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
            task: tokio::spawn(watch_instance(
                key.clone(),
                self.options.clone(),
                self.places.clone(),
                self.reports.clone(),
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

    /// Takes in one probe result; returns whether it is news: the instance answered,
    /// or stopped answering (not: it failed again while already unreachable).
    fn apply(&mut self, report: ProbeReport) -> bool {
        let key = report.key.clone();
        if !self.pollers.contains_key(&key) {
            return false; // forgotten while its probe was running
        }
        let was_unreachable = self
            .world
            .get(&key)
            .is_some_and(|instance| instance.unreachable_since.is_some());
        let Some(applied) = apply_to(&mut self.world, report) else {
            return false;
        };
        let news = applied.error.is_none() || !was_unreachable;
        match &applied.error {
            None if was_unreachable => tracing::info!(instance = %key, "instance answers again"),
            Some(error) if !was_unreachable => {
                tracing::warn!(instance = %key, %error, "instance does not answer");
            }
            _ => {}
        }
        self.applied += 1;
        self.world.set_version(&key, self.applied);
        if applied.moved {
            self.world.shape += 1;
        }
        for neighbour in applied.neighbours {
            self.track(neighbour, &key.to_string());
        }
        news
    }

    fn publish(&self) {
        self.snapshot.send_replace(Arc::new(self.world.clone()));
    }
}

/// What one probe result changed in the instance it is about (`apply_to`).
struct Applied {
    /// Its source and replicas, as it now names them.
    neighbours: Vec<InstanceKey>,
    /// It replicates from another source than before (or no longer does).
    moved: bool,
    /// Why it did not answer, if it did not.
    error: Option<String>,
}

/// Takes `report` into the instance of `world` it is about; `None` when that instance
/// is not there or already holds a later result (one that an urgent probe overtook on
/// its way says less than what is known). Versions and shape are the caller's.
fn apply_to(world: &mut Snapshot, report: ProbeReport) -> Option<Applied> {
    let ProbeReport { key, at, outcome } = report;
    let shared = world.instances.get_mut(&key)?;
    if shared
        .last_seen
        .max(shared.last_failure)
        .is_some_and(|latest| at < latest)
    {
        return None;
    }
    Some(match outcome {
        Ok((facts, took)) => {
            // Compared with the old facts before they go.
            let heard = source_last_heard(shared, &facts, at);
            let moved = shared.source() != facts.replication.as_ref().map(|r| &r.source);
            // The published snapshots keep the instance as it was; the old facts are
            // replaced, so they are not worth copying.
            if Arc::strong_count(shared) > 1 {
                *shared = Arc::new(shared.without_facts());
            }
            let instance = Arc::make_mut(shared);
            instance.source_last_heard = heard;
            // An instance without a host is nowhere to look (and no key the API's
            // clients can read back).
            let neighbours = facts
                .replication
                .iter()
                .map(|r| r.source.clone())
                .chain(facts.replicas.iter().cloned())
                .filter(|key| !key.host.is_empty())
                .collect();
            instance.facts = Some(facts);
            instance.last_seen = Some(at);
            instance.unreachable_since = None;
            instance.last_error = None;
            if took > Duration::ZERO {
                instance.probe_millis = Some(took.as_millis() as u64);
            }
            Applied {
                neighbours,
                moved,
                error: None,
            }
        }
        Err(error) => {
            let instance = Arc::make_mut(shared);
            instance.unreachable_since.get_or_insert(at);
            instance.last_failure = Some(at);
            instance.last_error = Some(error.clone());
            Applied {
                neighbours: Vec::new(),
                moved: false,
                error: Some(error),
            }
        }
    })
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

/// How long one park may last while the agent lock is in play: a lock this agent must
/// let go of is let go of within it, and a lock it may take is looked at again.
const PARK_WITH_LOCK: Duration = Duration::from_secs(2);

/// A park shorter than this is not worth a statement: the connection waits idle.
const SHORTEST_PARK: Duration = Duration::from_millis(20);

/// Watches one instance forever through one connection: a probe on a fixed schedule
/// (every `poll_interval` from the first, not "an interval after the last probe
/// finished"), and between two probes the same connection parked in `SLEEP` until the
/// next one — the liveness watch, which fails the moment the server's process dies, so
/// a death is news at once. A park that lasts until the probe is due carries the probe
/// in the same query (one round trip a second, and the connection is never idle); a
/// probe not sent behind a park (a new connection's first, one after a park too short
/// to be worth a statement) waits for a place (`max_concurrent_probes`). The agent lock
/// (`claims`) is held on this connection too.
///
/// `wake` asks for a probe now, through the urgent places: on this connection when it
/// is not parked, else on a connection of its own (the parked one is left to its watch).
async fn watch_instance(
    key: InstanceKey,
    options: DiscoveryOptions,
    places: Places,
    reports: Reports,
    wake: Arc<Notify>,
) {
    let comment = options
        .claims
        .as_ref()
        .map_or_else(|| "pointsman liveness".to_string(), Claims::comment);
    let aside = Aside {
        key: &key,
        options: &options,
        places: &places,
        reports: &reports,
    };
    let interval = options.poll_interval;
    let mut connection: Option<Connection> = None;
    let mut holds_lock = false;
    let mut due = tokio::time::Instant::now();
    // A probe asked for while none could run (a park that failed, a wake while busy).
    let mut asked_now = false;
    // When a park (or the lock's statements before it) last failed: a server that keeps
    // failing them is not probed at once each time, so that it cannot set the agent
    // spinning.
    let mut park_failed_at: Option<tokio::time::Instant> = None;
    loop {
        // Connected and not asked for anything: parked until the probe is due.
        if let (Some(conn), false) = (connection.as_mut(), asked_now) {
            let left = due.saturating_duration_since(tokio::time::Instant::now());
            if let Some(park) = park_length(left, options.claims.is_some()) {
                // Asked for while probing: on this connection, before it parks.
                if woken_already(&wake).await {
                    asked_now = true;
                    continue;
                }
                if let Some(claims) = &options.claims {
                    if let Err(error) = claims.keep(conn, &key, &mut holds_lock).await {
                        tracing::debug!(instance = %key, %error, "agent lock not kept");
                        lose(&key, &options, &mut connection, &mut holds_lock);
                        asked_now =
                            expedite(&mut park_failed_at, tokio::time::Instant::now(), interval);
                        continue;
                    }
                }
                // A park that lasts until the probe is due carries the probe behind
                // it, in the same query: the server answers it as the park ends, and
                // the connection is never idle, so a death at any moment ends the
                // query at once (a probe that waited for a place was blind meanwhile).
                if park == left {
                    let statements = probe::statements(conn.flavor);
                    let parked = conn.park_then(park, &comment, &statements);
                    let Some(answered) = aside.ride_out(parked, &wake).await else {
                        return;
                    };
                    let now = tokio::time::Instant::now();
                    let probe_due = due;
                    due = next_due(due, now, interval);
                    match answered {
                        Ok(sets) => {
                            let took = now.saturating_duration_since(probe_due);
                            let outcome =
                                probe::read(&key, conn.flavor, sets).map(|facts| (facts, took));
                            let report = ProbeReport::new(&key, outcome);
                            if !send_regular(&reports, report, &wake, &mut asked_now).await {
                                return;
                            }
                        }
                        Err(error) => {
                            // Gone, or refusing a statement: asked again at once on a new
                            // connection, whose answer says which.
                            tracing::debug!(instance = %key, %error, "liveness park or the probe behind it failed");
                            lose(&key, &options, &mut connection, &mut holds_lock);
                            asked_now = expedite(&mut park_failed_at, now, interval);
                        }
                    }
                    continue;
                }
                let parked = conn.park(park, &comment);
                match aside.ride_out(parked, &wake).await {
                    None => return,
                    Some(Ok(())) => {}
                    Some(Err(error)) => {
                        tracing::debug!(instance = %key, %error, "liveness park ended");
                        lose(&key, &options, &mut connection, &mut holds_lock);
                        asked_now =
                            expedite(&mut park_failed_at, tokio::time::Instant::now(), interval);
                    }
                }
                continue;
            }
        }
        // Not connected (or the probe is due in less than a park's worth): wait for it.
        if !asked_now {
            let left = due.saturating_duration_since(tokio::time::Instant::now());
            tokio::select! {
                _ = tokio::time::sleep(left) => {}
                _ = wake.notified() => asked_now = true,
            }
        }
        // A probe alone, through the places. Woken while queueing for a regular place
        // (a large fleet waits there at start-up): it moves to the urgent ones.
        let permit = if asked_now {
            places.urgent.clone().acquire_owned().await
        } else {
            tokio::select! {
                permit = places.regular.clone().acquire_owned() => permit,
                _ = wake.notified() => {
                    asked_now = true;
                    places.urgent.clone().acquire_owned().await
                }
            }
        };
        let Ok(permit) = permit else {
            return;
        };
        let started = tokio::time::Instant::now();
        due = if asked_now {
            started + interval
        } else {
            next_due(due, started, interval)
        };
        let urgent = std::mem::take(&mut asked_now);
        if urgent {
            tracing::trace!(instance = %key, "probing now, as asked");
        }
        if connection.is_none() {
            // A new connection takes the lock before it probes: once an instance is
            // seen, its lock has been tried.
            let opened = match Connection::open(&key, &options.connect).await {
                Ok(mut conn) => match &options.claims {
                    Some(claims) => claims
                        .keep(&mut conn, &key, &mut holds_lock)
                        .await
                        .map(|()| conn),
                    None => Ok(conn),
                },
                Err(error) => Err(error),
            };
            match opened {
                Ok(conn) => connection = Some(conn),
                Err(error) => {
                    lose(&key, &options, &mut connection, &mut holds_lock);
                    let report = ProbeReport::new(&key, Err(error));
                    let sent = if urgent {
                        reports.urgent.send(report).await.is_ok()
                    } else {
                        send_regular(&reports, report, &wake, &mut asked_now).await
                    };
                    if !sent {
                        return;
                    }
                    continue;
                }
            }
        }
        let conn = connection.as_mut().expect("connected above");
        let sets = conn.query_all(&probe::statements(conn.flavor)).await;
        let lost = sets.as_ref().err().map(|error| error.to_string());
        let outcome = sets
            .and_then(|sets| probe::read(&key, conn.flavor, sets))
            .map(|facts| (facts, started.elapsed()));
        let report = ProbeReport::new(&key, outcome);
        let sent = if urgent {
            tracing::trace!(instance = %key, ok = report.outcome.is_ok(), "probed as asked");
            reports.urgent.send(report).await.is_ok()
        } else {
            send_regular(&reports, report, &wake, &mut asked_now).await
        };
        if !sent {
            return;
        }
        drop(permit);
        if let Some(error) = lost {
            tracing::debug!(instance = %key, %error, "connection lost");
            lose(&key, &options, &mut connection, &mut holds_lock);
        }
    }
}

/// Sends a regular probe's result. It may wait long behind a large fleet's: woken
/// meanwhile, it is dropped for a probe asked for now, which says more anyway.
/// `false` once the owner is gone.
async fn send_regular(
    reports: &Reports,
    report: ProbeReport,
    wake: &Notify,
    asked_now: &mut bool,
) -> bool {
    tokio::select! {
        sent = reports.regular.send(report) => sent.is_ok(),
        _ = wake.notified() => {
            *asked_now = true;
            true
        }
    }
}

/// When the probe after the one due at `due` and sent at `sent` is due: an interval
/// later, or an interval after `sent` when it ran that late (the schedule does not
/// try to catch up).
fn next_due(
    due: tokio::time::Instant,
    sent: tokio::time::Instant,
    interval: Duration,
) -> tokio::time::Instant {
    if due + interval <= sent {
        sent + interval
    } else {
        due + interval
    }
}

/// Whether a wake is waiting already (it is taken).
async fn woken_already(wake: &Notify) -> bool {
    tokio::select! {
        biased;
        _ = wake.notified() => true,
        _ = std::future::ready(()) => false,
    }
}

/// How long to park for `left` until the next probe, when it is worth a statement.
fn park_length(left: Duration, lock_in_play: bool) -> Option<Duration> {
    let park = if lock_in_play {
        left.min(PARK_WITH_LOCK)
    } else {
        left
    };
    (park >= SHORTEST_PARK).then_some(park)
}

/// A connection that failed is never used again (it may be half-open); the lock it held
/// went with it.
fn lose(
    key: &InstanceKey,
    options: &DiscoveryOptions,
    connection: &mut Option<Connection>,
    holds_lock: &mut bool,
) {
    *connection = None;
    *holds_lock = false;
    if let Some(claims) = &options.claims {
        claims.lost(key);
    }
}

/// Whether a lost connection is worth a probe at once: yes, unless the last one was lost
/// within a poll interval (a server that answers probes but ends every park, or refuses
/// the lock's statements).
fn expedite(
    last: &mut Option<tokio::time::Instant>,
    now: tokio::time::Instant,
    interval: Duration,
) -> bool {
    let recent = last.is_some_and(|at| now.duration_since(at) < interval);
    *last = Some(now);
    !recent
}

/// The places probes take: regular polls, and probes asked for now.
#[derive(Clone)]
struct Places {
    regular: Arc<Semaphore>,
    urgent: Arc<Semaphore>,
}

/// Probes asked for while an instance's connection is parked: run on a connection of
/// their own.
struct Aside<'a> {
    key: &'a InstanceKey,
    options: &'a DiscoveryOptions,
    places: &'a Places,
    reports: &'a Reports,
}

impl Aside<'_> {
    /// Awaits `parked`; every wake meanwhile is answered by a probe on a connection of
    /// its own. `None`: the owner is gone.
    async fn ride_out<T>(&self, parked: impl Future<Output = T>, wake: &Notify) -> Option<T> {
        tokio::pin!(parked);
        loop {
            tokio::select! {
                biased;
                ended = &mut parked => return Some(ended),
                _ = wake.notified() => {
                    if !self.probe().await {
                        return None;
                    }
                }
            }
        }
    }

    /// One probe on a new connection, through the urgent places; `false` once the owner
    /// is gone.
    async fn probe(&self) -> bool {
        let (places, reports) = (&self.places.urgent, &self.reports.urgent);
        let beside = "beside the parked connection";
        probe_aside(
            self.key,
            None,
            &self.options.connect,
            places,
            reports,
            beside,
            None,
        )
        .await
    }
}

impl ProbeReport {
    /// A probe's result (with how long it took), as the owner takes it.
    fn new(key: &InstanceKey, outcome: Result<(InstanceFacts, Duration), MysqlError>) -> Self {
        ProbeReport {
            key: key.clone(),
            at: SystemTime::now(),
            outcome: outcome.map_err(|error| error.without_instance()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::instance::tests_support::replica;

    #[test]
    fn a_park_lasts_until_the_probe_short_enough_for_the_lock_and_never_a_sliver() {
        let second = Duration::from_secs(1);
        assert_eq!(park_length(second, false), Some(second));
        assert_eq!(park_length(second * 5, false), Some(second * 5));
        assert_eq!(park_length(second * 5, true), Some(PARK_WITH_LOCK));
        assert_eq!(park_length(Duration::from_millis(19), false), None);
        assert_eq!(park_length(Duration::ZERO, true), None);
    }

    #[test]
    fn an_instance_is_probed_from_here_once_at_a_time() {
        let (reports, _unread) = mpsc::channel(1);
        let here = Arc::new(ProbesHere {
            places: Arc::new(Semaphore::new(1)),
            reports,
            running: Default::default(),
        });
        let (one, other) = (
            InstanceKey::new("127.0.0.1", 1),
            InstanceKey::new("127.0.0.1", 2),
        );
        let running = here.start(&one).expect("not probed yet");
        assert!(here.start(&one).is_none(), "asked again while it runs");
        let beside = here
            .start(&other)
            .expect("another instance is not held back");
        drop(running);
        assert!(here.start(&one).is_some(), "asked again once it ended");
        drop(beside);
    }

    #[test]
    fn a_lost_connection_is_probed_at_once_but_not_twice_within_an_interval() {
        let interval = Duration::from_secs(1);
        let start = tokio::time::Instant::now();
        let mut last = None;
        assert!(expedite(&mut last, start, interval), "the first loss");
        let soon = start + Duration::from_millis(300);
        assert!(
            !expedite(&mut last, soon, interval),
            "a second loss 300 ms later"
        );
        let later = soon + Duration::from_millis(1_100);
        assert!(
            expedite(&mut last, later, interval),
            "a loss after a quiet interval"
        );
    }

    /// What a confirmation lays over the latest snapshot: a result newer than what is
    /// known replaces it, an older one is dropped, a failure keeps the first moment
    /// the instance stopped answering, and a replica that changed source says so.
    #[test]
    fn a_result_is_taken_into_a_snapshot_only_when_it_is_newer() {
        let (source, other, key) = (
            InstanceKey::new("127.0.0.1", 1),
            InstanceKey::new("127.0.0.1", 3),
            InstanceKey::new("127.0.0.1", 2),
        );
        let known = replica(key.clone(), source.clone());
        let seen = known.last_seen.expect("set by builder");
        let mut world = Snapshot::of([known.clone()]);
        let report = |at, outcome| ProbeReport {
            key: key.clone(),
            at,
            outcome,
        };
        let facts = known.facts.clone().expect("facts");

        let older = report(seen - Duration::from_secs(1), Err("refused".into()));
        assert!(apply_to(&mut world, older).is_none());
        assert_eq!(
            world.get(&key),
            Some(&known),
            "an older result changes nothing"
        );

        let failed_at = seen + Duration::from_secs(1);
        let failed = apply_to(&mut world, report(failed_at, Err("refused".into())));
        assert_eq!(failed.and_then(|a| a.error).as_deref(), Some("refused"));
        let again = failed_at + Duration::from_secs(1);
        apply_to(&mut world, report(again, Err("still refused".into())));
        let instance = world.get(&key).expect("kept");
        assert_eq!(instance.unreachable_since, Some(failed_at));
        assert_eq!(instance.last_failure, Some(again));
        assert_eq!(instance.last_error.as_deref(), Some("still refused"));

        let mut moved_facts = facts;
        moved_facts.replication.as_mut().expect("replica").source = other.clone();
        let back = again + Duration::from_secs(1);
        let applied = apply_to(&mut world, report(back, Ok((moved_facts, Duration::ZERO))))
            .expect("a newer result");
        assert!(applied.moved && applied.error.is_none());
        assert_eq!(applied.neighbours, vec![other.clone()]);
        let instance = world.get(&key).expect("kept");
        assert_eq!(
            (
                instance.last_seen,
                instance.unreachable_since,
                instance.source()
            ),
            (Some(back), None, Some(&other))
        );
        assert!(
            apply_to(
                &mut world,
                ProbeReport {
                    key: source,
                    at: back,
                    outcome: Err("x".into())
                }
            )
            .is_none(),
            "an instance the snapshot does not hold is not added"
        );
    }

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
