//! A whole routed stack for the routing tests and benchmark: a sandbox (node1 primary,
//! node2 and node3 replicas), a ProxySQL with its read_only monitor watching the
//! hostgroup pair 10/20 (as integrations/proxysql/proxysql.cnf sets one up), the Consul
//! stand-in, and an agent with automatic recovery routing cluster `t` to both and to its
//! own DNS responder on a free port.
//!
//! The ProxySQL is the real one (`$POINTSMAN_PROXYSQL`, or `proxysql` on the PATH; CI
//! sets the variable to ProxySQL 2.7.1) when it is found, else the in-process admin
//! stand-in of `proxysql.rs`; each test says which it ran on, and `scripts/test.sh`'s
//! summary line too.

use super::consul::{ConsulOptions, ConsulStandIn};
use super::proxysql::{Failure, Options, ProxySqlStandIn};
use super::real_proxysql::{self, RealOptions, RealProxySql};
use super::{automatic_recovery, eventually, probed, watch, TestTopology, Watcher};
use pointsman::config::{Config, HostgroupConfig, HumanDuration, ProxySqlConfig, Secret};
use pointsman::sandbox::Flavor;
use pointsman::topology::InstanceKey;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub const WRITER: u32 = 10;
pub const READER: u32 = 20;

/// ProxySQL's runtime with node1 the primary: the writer ONLINE (and standing by among
/// the readers), node2 and node3 reading.
pub const NODE1_ROUTED: [(u32, &str, &str); 4] = [
    (WRITER, "node1", "ONLINE"),
    (READER, "node1", "OFFLINE_SOFT"),
    (READER, "node2", "ONLINE"),
    (READER, "node3", "ONLINE"),
];

/// A sandbox (node1 primary, node2 and node3 replicas), a ProxySQL with its monitor and
/// a replication hostgroup pair, a Consul, and an agent routing cluster `t` to all of
/// them and to its DNS responder.
pub struct Stack {
    pub topology: TestTopology,
    pub proxysql: ProxySql,
    pub consul: ConsulStandIn,
    pub watcher: Watcher,
}

impl Stack {
    /// `monitor_interval` is ProxySQL's `mysql-monitor_read_only_interval`.
    pub async fn start(flavor: Flavor, monitor_interval: Duration) -> Stack {
        Self::start_with(flavor, monitor_interval, true).await
    }

    /// As `start`; without `route_proxysql` the agent leaves ProxySQL to its own
    /// monitor (the benchmark's comparison).
    pub async fn start_with(
        flavor: Flavor,
        monitor_interval: Duration,
        route_proxysql: bool,
    ) -> Stack {
        Self::start_inner(flavor, monitor_interval, route_proxysql, true).await
    }

    /// As `start`, always on the stand-in: for failures only it can inject (a SAVE that
    /// fails).
    pub async fn start_on_stand_in(flavor: Flavor, monitor_interval: Duration) -> Stack {
        Self::start_inner(flavor, monitor_interval, true, false).await
    }

    async fn start_inner(
        flavor: Flavor,
        monitor_interval: Duration,
        route_proxysql: bool,
        real_if_found: bool,
    ) -> Stack {
        let topology = TestTopology::start(flavor, 2).await;
        let proxysql = ProxySql::start(&topology, monitor_interval, real_if_found).await;
        let consul = ConsulStandIn::start(ConsulOptions::default()).await;
        let admin = proxysql.admin_address();
        let consul_url = consul.url();
        let recover = automatic_recovery(&topology);
        let watcher = watch(&topology, topology.keys(), move |config: &mut Config| {
            recover(config);
            // Drift must be found by ProxySQL's one-second runtime check, not by the
            // full reconcile.
            config.routing.reconcile_interval = HumanDuration(Duration::from_secs(20));
            config.routing.dns.enabled = true;
            config.routing.dns.listen = "127.0.0.1:0".into();
            config.routing.consul.address = Some(consul_url);
            config.routing.consul.check_ttl = HumanDuration(Duration::from_secs(60));
            config.routing.consul.deregister_critical_after =
                HumanDuration(Duration::from_secs(60));
            if !route_proxysql {
                return;
            }
            config.routing.proxysql = vec![ProxySqlConfig {
                address: admin.to_string(),
                user: "admin".into(),
                password: Some(Secret::new("admin")),
                password_env: None,
                password_file: None,
                timeout: HumanDuration(Duration::from_secs(1)),
                check_interval: HumanDuration(Duration::from_secs(1)),
                hostgroups: vec![HostgroupConfig {
                    cluster: "t".into(),
                    writer: WRITER,
                    reader: READER,
                }],
            }];
        })
        .await;
        probed(&watcher.agent.discovery, 3).await;
        Stack {
            topology,
            proxysql,
            consul,
            watcher,
        }
    }

    pub fn key(&self, node: &str) -> InstanceKey {
        self.topology.key(node)
    }

    pub fn dns(&self) -> SocketAddr {
        self.watcher
            .agent
            .routing
            .dns_address
            .expect("DNS is on in these tests")
    }

    /// `runtime_mysql_servers` of the pair: (hostgroup, port) → status.
    pub async fn runtime(&self) -> BTreeMap<(u32, u16), String> {
        self.servers("runtime_mysql_servers").await
    }

    /// `disk.mysql_servers` of the pair: (hostgroup, port) → status.
    pub async fn disk(&self) -> BTreeMap<(u32, u16), String> {
        self.servers("disk.mysql_servers").await
    }

    async fn servers(&self, table: &str) -> BTreeMap<(u32, u16), String> {
        self.proxysql
            .rows(&format!(
                "SELECT hostgroup_id, port, status FROM {table} WHERE hostgroup_id IN ({WRITER}, {READER})"
            ))
            .await
            .into_iter()
            .map(|row| {
                let text = |i: usize| row[i].clone().unwrap_or_default();
                ((text(0).parse().unwrap(), text(1).parse().unwrap()), text(2))
            })
            .collect()
    }

    /// Waits until ProxySQL's runtime is `NODE1_ROUTED`.
    pub async fn routes_node1(&self, patience: Duration) {
        self.runtime_becomes(patience, "ProxySQL routes node1", &NODE1_ROUTED)
            .await;
    }

    /// (hostgroup, node, status) as (hostgroup, port) → status.
    pub fn by_port(&self, rows: &[(u32, &str, &str)]) -> BTreeMap<(u32, u16), String> {
        rows.iter()
            .map(|(group, node, status)| ((*group, self.key(node).port), status.to_string()))
            .collect()
    }

    /// Waits until ProxySQL's runtime says exactly `expected`.
    pub async fn runtime_becomes(
        &self,
        patience: Duration,
        what: &str,
        expected: &[(u32, &str, &str)],
    ) {
        let expected = self.by_port(expected);
        eventually(patience, what, || {
            let expected = expected.clone();
            async move { (self.runtime().await == expected).then_some(()) }
        })
        .await;
    }

    /// Waits until ProxySQL's runtime holds `expected` for the rows it names, a fenced
    /// server either absent or OFFLINE_HARD (real ProxySQL drops an OFFLINE_HARD row that
    /// no connection uses from runtime), and no row that `expected` does not name.
    pub async fn runtime_routes(
        &self,
        patience: Duration,
        what: &str,
        expected: &[(u32, &str, &str)],
    ) {
        let expected = self.by_port(expected);
        eventually(patience, what, || {
            let expected = expected.clone();
            async move {
                let now = self.runtime().await;
                let hard_or_gone = |row: &(u32, u16), status: &String| {
                    status == "OFFLINE_HARD" && now.get(row).is_none_or(|s| s == "OFFLINE_HARD")
                };
                let right = expected
                    .iter()
                    .all(|(row, status)| now.get(row) == Some(status) || hard_or_gone(row, status))
                    && now.keys().all(|row| expected.contains_key(row));
                right.then_some(())
            }
        })
        .await;
    }

    /// Waits until Consul's orchestrator key names `node`.
    pub async fn consul_names(&self, patience: Duration, node: &str) {
        let wanted = self.key(node).to_string();
        eventually(patience, &format!("consul names {wanted}"), || {
            let now = self.consul.kv_string("mysql/master/t");
            let wanted = wanted.clone();
            async move { (now.as_deref() == Some(wanted.as_str())).then_some(()) }
        })
        .await;
    }
}

/// The ProxySQL of a stack: the real binary when one is found, else the stand-in.
pub enum ProxySql {
    Real(RealProxySql),
    StandIn(ProxySqlStandIn),
}

impl ProxySql {
    /// A ProxySQL whose read_only monitor (every `monitor_interval`, as the sandbox's
    /// user) watches the pair 10/20 and keeps the writer out of the reader hostgroup, as
    /// `routing.primary_serves_reads = false` does; an application user (the sandbox's)
    /// sends its queries to the writer hostgroup.
    /// The real one when `real_if_found` and one is found, else the stand-in.
    pub async fn start(
        topology: &TestTopology,
        monitor_interval: Duration,
        real_if_found: bool,
    ) -> ProxySql {
        let user = topology.sandbox.user.clone();
        let password = topology.sandbox.password.clone();
        if let Some(binary) = real_proxysql::binary().filter(|_| real_if_found) {
            eprintln!("ProxySQL: the real one, {}", binary.display());
            return ProxySql::Real(
                RealProxySql::start(
                    &binary,
                    RealOptions {
                        monitor: Some((user.clone(), password.clone(), monitor_interval)),
                        writer_is_also_reader: false,
                        replication_hostgroups: vec![(WRITER, READER)],
                        app_user: Some((user, password, WRITER)),
                        servers: Vec::new(),
                    },
                )
                .await,
            );
        }
        eprintln!(
            "ProxySQL: the stand-in (no real one found: set {} or put proxysql on the PATH)",
            real_proxysql::BINARY_ENV
        );
        let proxysql = ProxySqlStandIn::start(Options::default().with_monitor(
            user,
            password,
            monitor_interval,
        ))
        .await;
        proxysql.execute(
            "UPDATE global_variables SET variable_value = 'false' WHERE variable_name = 'mysql-monitor_writer_is_also_reader'",
        );
        for table in [
            "mysql_replication_hostgroups",
            "runtime_mysql_replication_hostgroups",
            "disk.mysql_replication_hostgroups",
        ] {
            proxysql.execute(&format!(
                "INSERT INTO {table} (writer_hostgroup, reader_hostgroup, check_type) VALUES ({WRITER}, {READER}, 'read_only')"
            ));
        }
        ProxySql::StandIn(proxysql)
    }

    pub fn is_real(&self) -> bool {
        matches!(self, ProxySql::Real(_))
    }

    pub fn admin_address(&self) -> SocketAddr {
        match self {
            ProxySql::Real(real) => real.admin_address(),
            ProxySql::StandIn(stand_in) => stand_in.address(),
        }
    }

    /// An admin query's rows.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            ProxySql::Real(real) => real.rows(sql).await,
            ProxySql::StandIn(stand_in) => stand_in.rows(sql),
        }
    }

    /// One admin statement.
    pub async fn execute(&self, sql: &str) {
        match self {
            ProxySql::Real(real) => {
                real.execute(sql).await;
            }
            // Admin commands (LOAD, SAVE) go over the wire as a client sends them; the
            // stand-in's own execute is plain SQL on its tables.
            ProxySql::StandIn(stand_in) if sql.starts_with("LOAD ") || sql.starts_with("SAVE ") => {
                use mysql_async::prelude::Queryable;
                let mut conn = mysql_async::Conn::new(stand_in.client_opts())
                    .await
                    .expect("a connection to the stand-in");
                conn.query_drop(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                let _ = conn.disconnect().await;
            }
            ProxySql::StandIn(stand_in) => {
                stand_in.execute(sql);
            }
        }
    }

    /// A hand edit: one statement on `mysql_servers`, then `LOAD MYSQL SERVERS TO
    /// RUNTIME`, as an operator types them.
    pub async fn edit_and_load(&self, sql: &str) {
        self.execute(sql).await;
        self.execute("LOAD MYSQL SERVERS TO RUNTIME").await;
    }

    /// Stops answering: the real one is stopped (SIGTERM), the stand-in refuses.
    pub async fn go_down(&mut self) {
        match self {
            ProxySql::Real(real) => real.stop().await,
            ProxySql::StandIn(stand_in) => stand_in.set_failure(Failure::Down).await,
        }
    }

    /// Answers again after `go_down`; the real one restarts from its disk config.
    pub async fn come_back(&mut self) {
        match self {
            ProxySql::Real(real) => real.start_again().await,
            ProxySql::StandIn(stand_in) => stand_in.set_failure(Failure::None).await,
        }
    }

    /// A restart: memory and runtime come back from the disk config.
    pub async fn restart_from_disk(&mut self) {
        match self {
            ProxySql::Real(real) => {
                real.stop().await;
                real.start_again().await;
            }
            ProxySql::StandIn(stand_in) => stand_in.restart_from_disk().await,
        }
    }

    /// Injects a failure into the stand-in; the real one cannot be made to fail so.
    pub async fn set_failure(&self, failure: Failure) {
        match self {
            ProxySql::Real(_) => panic!("a real ProxySQL cannot be made to fail on purpose"),
            ProxySql::StandIn(stand_in) => stand_in.set_failure(failure).await,
        }
    }

    /// Every statement the stand-in was sent; the real one keeps no such list.
    pub fn statements(&self) -> Option<Vec<String>> {
        match self {
            ProxySql::Real(_) => None,
            ProxySql::StandIn(stand_in) => Some(stand_in.statements()),
        }
    }
}
