//! A whole routed stack for the routing tests and benchmark: a sandbox (node1 primary,
//! node2 and node3 replicas), the ProxySQL admin stand-in with its read_only monitor
//! watching the hostgroup pair 10/20 (as integrations/proxysql/proxysql.cnf sets a
//! real one up), the Consul stand-in, and an agent with automatic recovery routing
//! cluster `t` to both and to its own DNS responder on a free port.

use super::consul::{ConsulOptions, ConsulStandIn};
use super::proxysql::{Options, ProxySqlStandIn};
use super::{automatic_recovery, eventually, probed, watch, TestTopology, Watcher};
use pointsman::config::{Config, HostgroupConfig, HumanDuration, ProxySqlConfig, Secret};
use pointsman::sandbox::Flavor;
use pointsman::topology::InstanceKey;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub const WRITER: u32 = 10;
pub const READER: u32 = 20;

/// A sandbox (node1 primary, node2 and node3 replicas), a ProxySQL with its monitor and
/// a replication hostgroup pair, a Consul, and an agent routing cluster `t` to all of
/// them and to its DNS responder.
pub struct Stack {
    pub topology: TestTopology,
    pub proxysql: ProxySqlStandIn,
    pub consul: ConsulStandIn,
    pub watcher: Watcher,
}

impl Stack {
    /// `monitor_interval` is ProxySQL's `mysql-monitor_read_only_interval`.
    pub async fn start(flavor: Flavor, monitor_interval: Duration) -> Stack {
        let topology = TestTopology::start(flavor, 2).await;
        let proxysql = ProxySqlStandIn::start(Options::default().with_monitor(
            topology.sandbox.user.clone(),
            topology.sandbox.password.clone(),
            monitor_interval,
        ))
        .await;
        // As an operator sets ProxySQL up: its own monitor watches the pair, and keeps the
        // writer out of the reader hostgroup, as routing.primary_serves_reads = false does.
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
        let consul = ConsulStandIn::start(ConsulOptions::default()).await;
        let admin = proxysql.address();
        let consul_url = consul.url();
        let recover = automatic_recovery(&topology);
        let watcher = watch(&topology, topology.keys(), move |config: &mut Config| {
            recover(config);
            config.routing.reconcile_interval = HumanDuration(Duration::from_secs(1));
            config.routing.dns.enabled = true;
            config.routing.dns.listen = "127.0.0.1:0".into();
            config.routing.proxysql = vec![ProxySqlConfig {
                address: admin.to_string(),
                user: "admin".into(),
                password: Some(Secret::new("admin")),
                password_env: None,
                password_file: None,
                timeout: HumanDuration(Duration::from_secs(1)),
                hostgroups: vec![HostgroupConfig {
                    cluster: "t".into(),
                    writer: WRITER,
                    reader: READER,
                }],
            }];
            config.routing.consul.address = Some(consul_url);
            config.routing.consul.check_ttl = HumanDuration(Duration::from_secs(5));
            config.routing.consul.deregister_critical_after =
                HumanDuration(Duration::from_secs(60));
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
    pub fn runtime(&self) -> BTreeMap<(u32, u16), String> {
        self.proxysql
            .rows(&format!(
                "SELECT hostgroup_id, port, status FROM runtime_mysql_servers WHERE hostgroup_id IN ({WRITER}, {READER})"
            ))
            .into_iter()
            .map(|row| {
                let text = |i: usize| row[i].clone().unwrap_or_default();
                ((text(0).parse().unwrap(), text(1).parse().unwrap()), text(2))
            })
            .collect()
    }

    /// Waits until ProxySQL's runtime says exactly `expected`.
    pub async fn runtime_becomes(
        &self,
        patience: Duration,
        what: &str,
        expected: &[(u32, &str, &str)],
    ) {
        let expected: BTreeMap<(u32, u16), String> = expected
            .iter()
            .map(|(group, node, status)| ((*group, self.key(node).port), status.to_string()))
            .collect();
        eventually(patience, what, || {
            let now = self.runtime();
            let expected = expected.clone();
            async move { (now == expected).then_some(()) }
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
