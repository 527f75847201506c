//! An in-memory topology behind the `Replication` edge, for unit tests only (compiled
//! under `cfg(test)`): the executor and the switchover run on it exactly as on servers,
//! in milliseconds, and the tests read what happened from it.
//!
//! Each instance keeps what a recovery changes: reachable or not, read_only (running and
//! persisted), its source, its IO and SQL threads, and how far it received and executed
//! the cluster's one history (a count of transactions, shown as the GTID set
//! `FAKE_UUID:1-n`). Operations change that state as the server would — promote stops
//! and forgets replication and sets read_only OFF, a re-pointed or attached replica
//! receives and applies what its new source executed — and a wait that the state cannot
//! satisfy fails at once, as a server would after its timeout. Replication flows only
//! inside operations that wait or start it: nothing moves behind a test's back.
//!
//! Every operation is recorded in order, as (instance, operation), failed ones too; a
//! test can make a given operation fail on a given instance (`fail`). Modelled after
//! tikv client-rust's mock PD client and vtorc's fake tablet manager client.

use super::coordinator::Coordinator;
use super::execute::Executor;
use super::hooks::{Hooks, HooksConfig};
use super::plan::PromotionPolicy;
use crate::analysis::ProblemRules;
use crate::config::Secret;
use crate::discovery::{self, DiscoveryOptions};
use crate::leader::{solo, Lease};
use crate::mysql::admin::{LinkTls, ReplicationAccount, ReplicationTls};
use crate::mysql::edge::{AdminSession, Replication};
use crate::mysql::{ConnectSettings, MysqlError};
use crate::routing::engine::{EngineSettings, Routing};
use crate::routing::RoutePolicy;
use crate::store::Store;
use crate::topology::instance::tests_support::{primary, replica, with_gtids};
use crate::topology::{Instance, InstanceKey, IoThreadState, Snapshot};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// The server UUID of the fake cluster's history.
const FAKE_UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

/// One instance as the fake keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FakeServer {
    pub reachable: bool,
    pub read_only: bool,
    /// read_only persisted for the next start (MySQL's SET PERSIST_ONLY).
    pub persisted_read_only: bool,
    /// Whom it replicates from; `None`: not a replica (a primary, or reset).
    pub source: Option<InstanceKey>,
    pub io_running: bool,
    pub sql_running: bool,
    /// Transactions received (its relay log reaches this far), of the one history.
    pub received: u64,
    /// Transactions executed (never more than received, for a replica).
    pub executed: u64,
}

impl FakeServer {
    /// A writable primary that executed `executed` transactions.
    pub fn primary(executed: u64) -> Self {
        FakeServer {
            reachable: true,
            read_only: false,
            persisted_read_only: false,
            source: None,
            io_running: false,
            sql_running: false,
            received: executed,
            executed,
        }
    }

    /// A read-only replica of `source`, both threads running, that received `received`
    /// transactions and applied `executed` of them.
    pub fn replica(source: &InstanceKey, received: u64, executed: u64) -> Self {
        FakeServer {
            read_only: true,
            source: Some(source.clone()),
            io_running: true,
            sql_running: true,
            received,
            ..FakeServer::primary(executed)
        }
    }

    /// The same server, not answering.
    pub fn unreachable(self) -> Self {
        FakeServer {
            reachable: false,
            ..self
        }
    }
}

/// An operation of the edge, as the fake records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Open,
    StopIoThread,
    StopReplication,
    StartReplication,
    WaitRelayApplied,
    WaitForGtids,
    WrittenGtids,
    Promote,
    SetReadOnly(bool),
    PersistReadOnly,
    SetSemiSync { source: bool, replica: bool },
    Repoint,
    Attach,
    TlsForReplicas,
    VerifyReplicating,
}

/// The fake topology; clones share it.
#[derive(Clone, Default)]
pub(crate) struct FakeTopology {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    servers: BTreeMap<InstanceKey, FakeServer>,
    operations: Vec<(InstanceKey, Op)>,
    failing: Vec<(InstanceKey, Op)>,
}

/// The GTID set of the first `count` transactions of the fake history.
fn gtids(count: u64) -> String {
    if count == 0 {
        String::new()
    } else {
        format!("{FAKE_UUID}:1-{count}")
    }
}

/// How many transactions a set made by `gtids` holds.
fn count(gtids: &str) -> Option<u64> {
    if gtids.is_empty() {
        return Some(0);
    }
    gtids.strip_prefix(&format!("{FAKE_UUID}:1-"))?.parse().ok()
}

impl FakeTopology {
    pub fn new(servers: impl IntoIterator<Item = (InstanceKey, FakeServer)>) -> Self {
        let topology = FakeTopology::default();
        topology.lock().servers = servers.into_iter().collect();
        topology
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How `key` stands now.
    pub fn server(&self, key: &InstanceKey) -> FakeServer {
        self.lock()
            .servers
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} is not in the fake topology"))
    }

    /// Changes `key` behind the edge's back (a crash, a write, a broken thread).
    pub fn update(&self, key: &InstanceKey, change: impl FnOnce(&mut FakeServer)) {
        let mut state = self.lock();
        let server = state
            .servers
            .get_mut(key)
            .unwrap_or_else(|| panic!("{key} is not in the fake topology"));
        change(server);
    }

    /// Makes every `op` on `key` fail from now on, changing nothing.
    pub fn fail(&self, key: &InstanceKey, op: Op) {
        self.lock().failing.push((key.clone(), op));
    }

    /// Every operation so far, in order, failed ones included.
    pub fn operations(&self) -> Vec<(InstanceKey, Op)> {
        self.lock().operations.clone()
    }

    /// Where the first `op` on `key` is in `operations`; panics if it never ran.
    pub fn first(&self, key: &InstanceKey, op: Op) -> usize {
        self.find(key, op)
            .unwrap_or_else(|| panic!("{op:?} never ran on {key}: {:?}", self.operations()))
    }

    /// Where the first `op` on `key` is in `operations`, if it ran.
    pub fn find(&self, key: &InstanceKey, op: Op) -> Option<usize> {
        self.lock()
            .operations
            .iter()
            .position(|(k, o)| k == key && *o == op)
    }

    /// An executor whose changes go to this topology, under `lease`.
    pub fn executor(&self, lease: Lease) -> Executor {
        Executor {
            servers: Arc::new(self.clone()),
            connect: ConnectSettings {
                user: "pointsman".into(),
                password: Secret::new("unused by the fake"),
                connect_timeout: Duration::from_secs(1),
                query_timeout: Duration::from_secs(1),
            },
            account: ReplicationAccount {
                user: "repl".into(),
                password: Secret::new("unused by the fake"),
                // Fixed, so no step asks a source about TLS: the recorded order stays
                // the order of the changes.
                tls: ReplicationTls::Required,
            },
            apply_timeout: Duration::from_secs(1),
            verify_timeout: Duration::from_secs(1),
            heartbeat_period: Duration::from_secs(1),
            lease,
            kept: None,
        }
    }

    /// A coordinator whose executor changes this topology (solo lease), with a store in
    /// `dir`, routing without backends and a discovery that watches nothing: for the
    /// coordinator's own steps that need no snapshot of discovery's.
    pub fn coordinator(&self, dir: &std::path::Path) -> Arc<Coordinator> {
        let executor = self.executor(solo());
        let store = Store::open(&dir.join("store.db")).expect("a store in a temporary directory");
        let discovery = discovery::start(
            DiscoveryOptions {
                connect: executor.connect.clone(),
                poll_interval: Duration::from_secs(60),
                max_concurrent_probes: 1,
                claims: None,
                max_instances: usize::MAX,
            },
            Vec::new(),
            store.clone(),
        );
        let routing = Routing::start(
            Vec::new(),
            EngineSettings {
                policy: RoutePolicy {
                    max_reader_lag: Duration::from_secs(10),
                    primary_serves_reads: true,
                },
                reconcile_interval: Duration::from_secs(60),
                apply_timeout: Duration::from_secs(1),
                reconcile_timeout: Duration::from_secs(1),
            },
            store.clone(),
            discovery.clone(),
            Vec::new(),
            executor.lease.clone(),
            None,
        );
        Coordinator::new(
            discovery,
            store,
            executor,
            PromotionPolicy::default(),
            ProblemRules::default(),
            Vec::new(),
            Vec::new(),
            Duration::from_secs(3600),
            Hooks {
                config: HooksConfig::default(),
                secret_variables: Vec::new(),
            },
            routing,
            None,
            false,
            crate::recovery::lane::LaneHandle::default(),
        )
    }

    /// What discovery would see now: each server's facts, as a MySQL instance.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        let now = SystemTime::now();
        let instances = state.servers.iter().map(|(key, server)| {
            let mut instance: Instance = match &server.source {
                Some(source) => replica(key.clone(), source.clone()),
                None => primary(key.clone()),
            };
            instance = with_gtids(instance, &gtids(server.executed));
            let facts = instance.facts.as_mut().expect("tests_support sets facts");
            facts.read_only = server.read_only;
            facts.super_read_only = Some(server.read_only);
            facts.persisted_read_only = Some(server.persisted_read_only);
            if let Some(replication) = facts.replication.as_mut() {
                replication.io_running = if server.io_running {
                    IoThreadState::Yes
                } else {
                    IoThreadState::No
                };
                replication.sql_running = server.sql_running;
                replication.received_gtids = gtids(server.received);
            }
            if !server.reachable {
                instance.unreachable_since = Some(now);
                instance.last_failure = Some(now);
            }
            (key.clone(), instance)
        });
        Snapshot {
            instances: instances.collect(),
            ..Snapshot::default()
        }
    }

    /// Records `op` on `key` and runs it on the state, unless it is made to fail or the
    /// server does not answer.
    fn run<T>(
        &self,
        key: &InstanceKey,
        op: Op,
        change: impl FnOnce(&mut BTreeMap<InstanceKey, FakeServer>) -> Result<T, String>,
    ) -> Result<T, MysqlError> {
        let mut state = self.lock();
        state.operations.push((key.clone(), op));
        let failure = |message: &str| MysqlError::Query {
            instance: key.clone(),
            statement: format!("{op:?}"),
            message: message.to_string(),
        };
        if state.failing.contains(&(key.clone(), op)) {
            return Err(failure("failed on purpose (fake)"));
        }
        match state.servers.get(key) {
            None => return Err(failure("no such server (fake)")),
            Some(server) if !server.reachable && op == Op::Open => {
                return Err(MysqlError::Connect {
                    instance: key.clone(),
                    message: "Connection refused (fake)".into(),
                })
            }
            Some(server) if !server.reachable => {
                return Err(failure("server has gone away (fake)"))
            }
            Some(_) => {}
        }
        change(&mut state.servers).map_err(|message| MysqlError::Unexpected {
            instance: key.clone(),
            statement: format!("{op:?}"),
            message,
        })
    }
}

/// `key` receives what its source executed (if its IO thread runs and the source
/// answers) and applies what it received (if its SQL thread runs).
fn replicate(servers: &mut BTreeMap<InstanceKey, FakeServer>, key: &InstanceKey) {
    let available = servers
        .get(key)
        .filter(|server| server.io_running)
        .and_then(|server| server.source.as_ref())
        .and_then(|source| servers.get(source))
        .filter(|source| source.reachable)
        .map(|source| source.executed);
    let server = servers.get_mut(key).expect("run checked the server exists");
    if let Some(available) = available {
        server.received = server.received.max(available);
    }
    if server.sql_running {
        server.executed = server.executed.max(server.received);
    }
}

fn server<'a>(
    servers: &'a mut BTreeMap<InstanceKey, FakeServer>,
    key: &InstanceKey,
) -> &'a mut FakeServer {
    servers.get_mut(key).expect("run checked the server exists")
}

impl Replication for FakeTopology {
    fn open<'a>(
        &'a self,
        key: &'a InstanceKey,
    ) -> BoxFuture<'a, Result<Box<dyn AdminSession>, MysqlError>> {
        Box::pin(async move {
            self.run(key, Op::Open, |_| Ok(()))?;
            Ok(Box::new(FakeSession {
                topology: self.clone(),
                key: key.clone(),
            }) as Box<dyn AdminSession>)
        })
    }
}

/// A session on one fake instance.
struct FakeSession {
    topology: FakeTopology,
    key: InstanceKey,
}

impl FakeSession {
    /// Runs `change` when the returned future is first polled, as a server runs a
    /// statement only once it is sent (a future that is never awaited changes nothing).
    fn run<T: Send + 'static>(
        &self,
        op: Op,
        change: impl FnOnce(&mut BTreeMap<InstanceKey, FakeServer>, &InstanceKey) -> Result<T, String>
            + Send
            + 'static,
    ) -> BoxFuture<'static, Result<T, MysqlError>> {
        let topology = self.topology.clone();
        let key = self.key.clone();
        Box::pin(async move { topology.run(&key, op, |servers| change(servers, &key)) })
    }
}

impl AdminSession for FakeSession {
    fn key(&self) -> &InstanceKey {
        &self.key
    }

    fn stop_io_thread(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        self.run(Op::StopIoThread, |servers, key| {
            server(servers, key).io_running = false;
            Ok(())
        })
    }

    fn stop_replication(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        self.run(Op::StopReplication, |servers, key| {
            let server = server(servers, key);
            server.io_running = false;
            server.sql_running = false;
            Ok(())
        })
    }

    fn start_replication(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        self.run(Op::StartReplication, |servers, key| {
            let server = server(servers, key);
            if server.source.is_none() {
                return Err("no source configured: not a replica".into());
            }
            server.io_running = true;
            server.sql_running = true;
            Ok(())
        })
    }

    fn wait_relay_applied(&mut self, _: Duration) -> BoxFuture<'_, Result<(), MysqlError>> {
        self.run(Op::WaitRelayApplied, |servers, key| {
            let server = server(servers, key);
            if server.source.is_some() && server.sql_running {
                server.executed = server.executed.max(server.received);
            }
            if server.source.is_some() && server.executed < server.received {
                return Err(format!(
                    "did not reach {} (SQL thread stopped)",
                    gtids(server.received)
                ));
            }
            Ok(())
        })
    }

    fn wait_for_gtids<'a>(
        &'a mut self,
        wanted: &'a str,
        _: Duration,
    ) -> BoxFuture<'a, Result<(), MysqlError>> {
        let wanted = wanted.to_string();
        self.run(Op::WaitForGtids, move |servers, key| {
            let wanted_count =
                count(&wanted).ok_or_else(|| format!("not a fake GTID set: {wanted}"))?;
            replicate(servers, key);
            if server(servers, key).executed >= wanted_count {
                Ok(())
            } else {
                Err(format!("did not reach {wanted}"))
            }
        })
    }

    fn tls_for_replicas(&mut self) -> BoxFuture<'_, Result<LinkTls, MysqlError>> {
        self.run(Op::TlsForReplicas, |_, _| Ok(LinkTls::Keep))
    }

    fn written_gtids(&mut self) -> BoxFuture<'_, Result<String, MysqlError>> {
        self.run(Op::WrittenGtids, |servers, key| {
            Ok(gtids(server(servers, key).executed))
        })
    }

    fn promote(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        self.run(Op::Promote, |servers, key| {
            let server = server(servers, key);
            server.io_running = false;
            server.sql_running = false;
            server.source = None;
            server.read_only = false;
            Ok(())
        })
    }

    fn set_read_only(&mut self, on: bool) -> BoxFuture<'_, Result<(), MysqlError>> {
        self.run(Op::SetReadOnly(on), move |servers, key| {
            server(servers, key).read_only = on;
            Ok(())
        })
    }

    fn persist_read_only(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        self.run(Op::PersistReadOnly, |servers, key| {
            server(servers, key).persisted_read_only = true;
            Ok(())
        })
    }

    fn set_semi_sync(
        &mut self,
        source: bool,
        replica: bool,
    ) -> BoxFuture<'_, Result<(), MysqlError>> {
        self.run(Op::SetSemiSync { source, replica }, |_, _| Ok(()))
    }

    fn repoint<'a>(
        &'a mut self,
        source: &'a InstanceKey,
        _: Duration,
        _: LinkTls,
    ) -> BoxFuture<'a, Result<(), MysqlError>> {
        let source = source.clone();
        self.run(Op::Repoint, move |servers, key| {
            follow(servers, key, source);
            Ok(())
        })
    }

    fn attach<'a>(
        &'a mut self,
        source: &'a InstanceKey,
        _: &'a ReplicationAccount,
        _: Duration,
        _: LinkTls,
    ) -> BoxFuture<'a, Result<(), MysqlError>> {
        let source = source.clone();
        self.run(Op::Attach, move |servers, key| {
            follow(servers, key, source);
            Ok(())
        })
    }

    fn verify_replicating(&mut self, _: Duration) -> BoxFuture<'_, Result<(), MysqlError>> {
        self.run(Op::VerifyReplicating, |servers, key| {
            let source_answers = servers
                .get(key)
                .and_then(|server| server.source.as_ref())
                .and_then(|source| servers.get(source))
                .is_some_and(|source| source.reachable);
            let server = server(servers, key);
            if server.source.is_none() {
                return Err("not replicating: it is not a replica".into());
            }
            if !(server.io_running && server.sql_running && source_answers) {
                return Err(
                    "not replicating: a thread is stopped or the source does not answer".into(),
                );
            }
            replicate(servers, key);
            Ok(())
        })
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// Replication changed to `source` and started; it receives by GTID at once.
fn follow(servers: &mut BTreeMap<InstanceKey, FakeServer>, key: &InstanceKey, source: InstanceKey) {
    let server = server(servers, key);
    server.source = Some(source);
    server.io_running = true;
    server.sql_running = true;
    replicate(servers, key);
}
