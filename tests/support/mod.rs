//! Test support shared by the integration tests: real sandbox topologies that are torn
//! down (by their own PIDs) when a test ends however it ends, an in-process agent
//! configured for them, and a patient `eventually` for asserting on a live system.
//!
//! These are dev helpers, not product code. Every database here is a real server from
//! `scripts/install-servers.sh`; a missing server fails the test, it is never skipped.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod agent_process;
pub mod consul;
pub mod fleet;
pub mod proxy;
pub mod proxysql;
pub mod real_proxysql;
pub mod stack;
pub mod wire;

use mysql_async::prelude::Queryable;
use pointsman::agent::RunningAgent;
use pointsman::client::{ApiClient, ClientError};
use pointsman::config::{Config, HumanDuration, Settings};
use pointsman::discovery::DiscoveryHandle;
use pointsman::sandbox::{Flavor, Sandbox, SandboxOptions};
use pointsman::topology::InstanceKey;
use std::future::Future;
use std::time::{Duration, Instant};

/// A sandbox that dies with the test.
pub struct TestTopology {
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
}

impl TestTopology {
    pub async fn start(flavor: Flavor, replicas: usize) -> TestTopology {
        Self::start_with(flavor, replicas, false).await
    }

    /// As `start`, with semi-synchronous replication when `semi_sync`.
    pub async fn start_with(flavor: Flavor, replicas: usize, semi_sync: bool) -> TestTopology {
        // Unix socket paths must stay short: keep the directory directly under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("pm-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let mut options = SandboxOptions::new(flavor, dir.path());
        options.replicas = replicas;
        options.semi_sync = semi_sync;
        let sandbox = Sandbox::up(options)
            .await
            .unwrap_or_else(|e| panic!("sandbox {flavor}: {e}"));
        TestTopology { sandbox, dir }
    }

    pub fn key(&self, node: &str) -> InstanceKey {
        let node = self.sandbox.node(node).expect("node exists");
        InstanceKey::new(node.host.clone(), node.port)
    }

    /// How the agent would connect to these nodes (the sandbox's user, 5 s timeouts).
    pub fn connect_settings(&self) -> pointsman::mysql::ConnectSettings {
        pointsman::mysql::ConnectSettings {
            user: self.sandbox.user.clone(),
            password: pointsman::config::Secret::new(self.sandbox.password.clone()),
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
        }
    }

    pub fn keys(&self) -> Vec<InstanceKey> {
        self.sandbox
            .nodes
            .iter()
            .map(|n| InstanceKey::new(n.host.clone(), n.port))
            .collect()
    }

    pub fn flavor(&self) -> Flavor {
        self.sandbox.flavor
    }

    /// Runs statements on a node as the sandbox admin.
    pub async fn sql(&self, node: &str, statements: &[&str]) {
        let mut conn = self.sandbox.connect(node).await.expect("connect");
        for statement in statements {
            conn.query_drop(*statement)
                .await
                .unwrap_or_else(|e| panic!("{node}: {statement}: {e}"));
        }
        let _ = conn.disconnect().await;
    }

    /// Runs a query on a node and returns the first column of the first row.
    pub async fn value(&self, node: &str, query: &str) -> Option<String> {
        let mut conn = self.sandbox.connect(node).await.expect("connect");
        let value: Option<Option<String>> = conn
            .query_first(query)
            .await
            .unwrap_or_else(|e| panic!("{node}: {query}: {e}"));
        let _ = conn.disconnect().await;
        value.flatten()
    }

    /// As `value`, for waiting: `None` while the query fails (a table not replicated yet).
    pub async fn try_value(&self, node: &str, query: &str) -> Option<String> {
        let mut conn = self.sandbox.connect(node).await.ok()?;
        let value: Option<Option<String>> = conn.query_first(query).await.ok()?;
        let _ = conn.disconnect().await;
        value.flatten()
    }

    /// Waits (30 s at most) until `node` has `schema`, and `table` in it when given: a
    /// write on its source has replicated there. `what` names the wait in a failure.
    pub async fn replicated(&self, node: &str, schema: &str, table: Option<&str>, what: &str) {
        let query = match table {
            Some(table) => format!(
                "SELECT COUNT(*) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = '{schema}' AND TABLE_NAME = '{table}'"
            ),
            None => format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{schema}'"
            ),
        };
        eventually(Duration::from_secs(30), what, || async {
            (self.try_value(node, &query).await.as_deref() == Some("1")).then_some(())
        })
        .await;
    }

    /// The words this flavour uses for replication statements.
    pub fn words(&self) -> Words {
        if self.flavor().is_mysql() {
            Words {
                stop: "STOP REPLICA",
                start: "START REPLICA",
                change: "CHANGE REPLICATION SOURCE TO",
                host: "SOURCE_HOST",
                port: "SOURCE_PORT",
                password: "SOURCE_PASSWORD",
                delay: "SOURCE_DELAY",
                gtid: "SOURCE_AUTO_POSITION=1",
            }
        } else {
            Words {
                stop: "STOP SLAVE",
                start: "START SLAVE",
                change: "CHANGE MASTER TO",
                host: "MASTER_HOST",
                port: "MASTER_PORT",
                password: "MASTER_PASSWORD",
                delay: "MASTER_DELAY",
                gtid: "MASTER_USE_GTID=slave_pos",
            }
        }
    }

    /// Re-points a replica at `source` by GTID, keeping its account; heartbeats every
    /// second as the sandbox set them (MariaDB resets the period on CHANGE MASTER).
    pub async fn replicate_from(&self, replica: &str, source: &InstanceKey) {
        let words = self.words();
        let heartbeat = if self.flavor().is_mysql() {
            "SOURCE_HEARTBEAT_PERIOD=1"
        } else {
            "MASTER_HEARTBEAT_PERIOD=1"
        };
        let change = format!(
            "{} {}='{}', {}={}, {}, {heartbeat}",
            words.change, words.host, source.host, words.port, source.port, words.gtid
        );
        self.sql(replica, &[words.stop, change.as_str(), words.start])
            .await;
    }

    /// Both replication threads of `node` run (asked of the server itself), and, when
    /// `source_port` is given, from the source on that port.
    pub async fn replicates(&self, node: &str, source_port: Option<u16>) -> bool {
        let Ok(mut conn) = self.sandbox.connect(node).await else {
            return false;
        };
        let statement = if self.flavor().is_mysql() {
            "SHOW REPLICA STATUS"
        } else {
            "SHOW SLAVE STATUS"
        };
        let row: Option<mysql_async::Row> = conn.query_first(statement).await.ok().flatten();
        let _ = conn.disconnect().await;
        let Some(row) = row else { return false };
        let get = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| row.get_opt::<String, _>(*n).and_then(Result::ok))
        };
        get(["Replica_IO_Running", "Slave_IO_Running"]).as_deref() == Some("Yes")
            && get(["Replica_SQL_Running", "Slave_SQL_Running"]).as_deref() == Some("Yes")
            && source_port
                .is_none_or(|port| get(["Source_Port", "Master_Port"]) == Some(port.to_string()))
    }

    /// The heartbeat period (seconds) of `node`'s replication link, asked of the server.
    pub async fn heartbeat_period(&self, node: &str) -> Option<f64> {
        let query = if self.flavor().is_mysql() {
            "SELECT CAST(HEARTBEAT_INTERVAL AS CHAR) FROM performance_schema.replication_connection_configuration WHERE CHANNEL_NAME = ''"
        } else {
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'SLAVE_HEARTBEAT_PERIOD'"
        };
        self.try_value(node, query).await?.parse().ok()
    }

    /// The sandbox node at `key`.
    pub fn node_at(&self, key: &InstanceKey) -> String {
        self.sandbox
            .nodes
            .iter()
            .find(|n| InstanceKey::new(n.host.clone(), n.port) == *key)
            .unwrap_or_else(|| panic!("{key} is not a node of this sandbox"))
            .name
            .clone()
    }

    /// Makes a replica writable for a moment, or read-only again (on MySQL, turning
    /// read_only OFF turns super_read_only OFF, and super_read_only ON turns both ON).
    pub async fn writable(&self, node: &str, on: bool) {
        let statement = match (self.flavor().is_mysql(), on) {
            (_, true) => "SET GLOBAL read_only=OFF",
            (true, false) => "SET GLOBAL super_read_only=ON",
            (false, false) => "SET GLOBAL read_only=ON",
        };
        self.sql(node, &[statement]).await;
    }
}

/// A counter of `conn`'s own session (`SHOW SESSION STATUS`), such as `Questions` or
/// `Com_set_option`; the question asking it counts in `Questions`.
pub async fn session_counter(conn: &mut pointsman::mysql::Connection, counter: &str) -> u64 {
    let rows = conn
        .query(&format!("SHOW SESSION STATUS LIKE '{counter}'"))
        .await
        .unwrap_or_else(|e| panic!("{}: the session's {counter}: {e}", conn.key));
    rows.first()
        .and_then(|row| row.get("Value").cloned().flatten())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{}: no {counter} row", conn.key))
}

impl Drop for TestTopology {
    /// SIGKILL every node this sandbox started, by PID, and reap it; the temp dir
    /// removes the data. Runs even when the test panicked.
    fn drop(&mut self) {
        // A test may have killed and restarted nodes through a clone of the sandbox: the
        // state file has the PIDs that run now.
        let current = Sandbox::open(&self.sandbox.dir).unwrap_or_else(|_| self.sandbox.clone());
        for node in current.status() {
            if let (Some(pid), true) = (node.pid, node.running) {
                // SAFETY: plain syscalls on a PID this sandbox started.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
                }
            }
        }
    }
}

/// Statement words per flavour.
pub struct Words {
    pub stop: &'static str,
    pub start: &'static str,
    pub change: &'static str,
    pub host: &'static str,
    pub port: &'static str,
    pub password: &'static str,
    pub delay: &'static str,
    pub gtid: &'static str,
}

/// Agent settings for a sandbox: its credentials, the given seeds, the API on a free
/// port, a store in `dir`, and an alias `t` for the sandbox's cluster.
pub fn settings(
    topology: &TestTopology,
    seeds: Vec<InstanceKey>,
    store_dir: &std::path::Path,
    tweak: impl FnOnce(&mut Config),
) -> Settings {
    let mut config = Config::defaults();
    config.mysql.user = topology.sandbox.user.clone();
    config.mysql.password = Some(pointsman::config::Secret::new(
        topology.sandbox.password.clone(),
    ));
    config.discovery.seeds = seeds;
    config.discovery.poll_interval = HumanDuration(Duration::from_millis(500));
    config.store.path = store_dir.join("pointsman.db");
    config.api.listen = "127.0.0.1:0".into();
    config.clusters = vec![pointsman::config::ClusterConfig {
        alias: "t".into(),
        instances: topology.keys(),
    }];
    tweak(&mut config);
    config.validate().expect("valid settings")
}

/// Lets the agent recover the sandbox's cluster `t` by itself, with the sandbox's
/// replication account.
pub fn automatic_recovery(topology: &TestTopology) -> impl FnOnce(&mut Config) {
    let user = topology.sandbox.repl_user.clone();
    let password = topology.sandbox.repl_password.clone();
    move |config: &mut Config| {
        config.recovery.auto_clusters = vec!["alias=t".into()];
        config.recovery.replication_user = user;
        config.recovery.replication_password = Some(pointsman::config::Secret::new(password));
    }
}

/// Starts an agent in-process.
pub async fn agent(settings: &Settings) -> RunningAgent {
    RunningAgent::start(settings).await.expect("agent starts")
}

/// An agent watching a sandbox, a client for its API, and the store it keeps (removed
/// with the watcher).
pub struct Watcher {
    pub agent: RunningAgent,
    pub api: ApiClient,
    pub store: tempfile::TempDir,
}

/// Starts an agent on `topology` from `seeds` (see `settings`) with its own store.
pub async fn watch(
    topology: &TestTopology,
    seeds: Vec<InstanceKey>,
    tweak: impl FnOnce(&mut Config),
) -> Watcher {
    let store = tempfile::tempdir().expect("temp dir");
    let agent = agent(&settings(topology, seeds, store.path(), tweak)).await;
    let api = ApiClient::new(&format!("http://{}", agent.api_address));
    Watcher { agent, api, store }
}

/// Asserts that one of the last 50 audit entries says every one of `words`; `why` says
/// what the entry should explain.
pub async fn assert_audited(api: &ApiClient, words: &[&str], why: &str) {
    let audit: Vec<pointsman::store::AuditRecord> =
        api.get("/api/v1/audit?limit=50").await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| words.iter().all(|w| a.message.contains(w))),
        "the audit says {why}: {audit:?}"
    );
}

/// Waits until `node` answers `SELECT @@read_only` with `value` ("1" or "0").
pub async fn read_only_becomes(topology: &TestTopology, node: &str, value: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("{node}'s read_only to be {value}"),
        || async {
            (topology
                .try_value(node, "SELECT @@read_only")
                .await
                .as_deref()
                == Some(value))
            .then_some(())
        },
    )
    .await;
}

/// Waits until `count` instances have been probed successfully.
pub async fn probed(discovery: &DiscoveryHandle, count: usize) {
    eventually(
        Duration::from_secs(20),
        &format!("{count} probed instances"),
        || {
            let probed = discovery
                .snapshot()
                .instances
                .values()
                .filter(|i| i.facts.is_some())
                .count();
            async move { (probed == count).then_some(()) }
        },
    )
    .await
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout`
/// saying what never happened.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match within(timeout, check).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for: {what}"),
    }
}

/// As `eventually`, and on time-out the failure also says what the agent behind `api`
/// shows then: its clusters and the recoveries it recorded. For waits on a failover,
/// so that one that times out under a full suite's load explains itself.
pub async fn eventually_or_show<T, F, Fut>(
    api: &ApiClient,
    timeout: Duration,
    what: &str,
    check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    if let Some(value) = within(timeout, check).await {
        return value;
    }
    let shown = |path: &'static str| async move {
        match api.get::<serde_json::Value>(path).await {
            Ok(value) => value.to_string(),
            Err(error) => format!("({error})"),
        }
    };
    panic!(
        "timed out after {timeout:?} waiting for: {what}\nthe agent's clusters: {}\nits recoveries: {}",
        shown("/api/v1/clusters").await,
        shown("/api/v1/recoveries").await
    );
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `timeout`.
async fn within<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Expands to one `#[tokio::test]` per flavour that every database behaviour is
/// tested on: MariaDB 10.11 and MySQL 9.7.
#[macro_export]
macro_rules! on_every_flavor {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb() {
                super::$name(pointsman::sandbox::Flavor::Mariadb).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                super::$name(pointsman::sandbox::Flavor::Mysql).await
            }
        }
    )*};
}

/// The status and sentence of a call the API refused; a success or an unreachable
/// agent fails the test.
pub fn api_error<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api {
            status, message, ..
        }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The benchmarks' `BENCH_FLAVOR` (default mariadb).
pub fn bench_flavor() -> Flavor {
    std::env::var("BENCH_FLAVOR")
        .unwrap_or_else(|_| "mariadb".into())
        .parse()
        .expect("BENCH_FLAVOR is mariadb, mysql or mariadb-11")
}

/// The benchmarks' `BENCH_RUNS` (default 5).
pub fn bench_runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
}

/// A DNS client over UDP for the agent's responder (3 s per query).
pub async fn dns_udp_client(
    addr: std::net::SocketAddr,
) -> hickory_net::client::Client<hickory_net::runtime::TokioRuntimeProvider> {
    use hickory_net::client::Client;
    use hickory_net::runtime::TokioRuntimeProvider;
    let stream = hickory_net::udp::UdpClientStream::builder(addr, TokioRuntimeProvider::default())
        .with_timeout(Some(Duration::from_secs(3)))
        .build();
    let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(background);
    client
}
