//! One database instance as pointsman sees it: its address, what the last successful
//! probe found, and whether it currently answers. A snapshot is the set of all of
//! them at one moment.

use super::gtid::{GtidSet, MariadbGtidList};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where an instance listens: the identity of an instance everywhere in pointsman.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    pub host: String,
    pub port: u16,
}

impl InstanceKey {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Parses an address as a configuration must write it: `host:port` or `[v6]:port`,
    /// the port spelled out (a seed on the wrong port finds nothing, silently), and the
    /// host a host name or an IP address.
    pub fn parse_with_port(text: &str) -> Result<Self, String> {
        let key: InstanceKey = text.parse()?;
        let text = text.trim();
        let port_given = match text.strip_prefix('[') {
            Some(rest) => rest.contains("]:"),
            None => text
                .rsplit_once(':')
                .is_some_and(|(host, _)| !host.contains(':')),
        };
        if !port_given {
            return Err(format!(
                "instance \"{text}\": give the port, like \"{}\"",
                InstanceKey::new(key.host, 3306)
            ));
        }
        if let Some(problem) = host_problem(&key.host) {
            return Err(format!("instance \"{text}\": {problem}"));
        }
        Ok(key)
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for InstanceKey {
    type Err = String;

    /// Accepts `host:port`, `[v6]:port`, or a bare host (port 3306).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("instance \"{text}\": missing ']' after IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                _ => (text, None),
            }
        };
        if host.is_empty() {
            return Err(format!(
                "instance \"{text}\": host is empty; expected host:port"
            ));
        }
        let port = match port {
            None => 3306,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    format!("instance \"{text}\": port \"{port}\" is not a number from 1 to 65535")
                })?,
        };
        Ok(Self::new(host, port))
    }
}

/// What is wrong with `host` as a server's address: it must be an IP address or a host
/// name (labels of letters, digits, '-' and '_' between dots). Blanks, quotes, slashes
/// and `..` are typing or pasting mistakes, never a server.
pub fn host_problem(host: &str) -> Option<String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let valid = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    (!valid).then(|| {
        format!(
            "\"{host}\" is not a host name or an IP address (letters, digits, '-' and '_', with dots between them)"
        )
    })
}

impl Serialize for InstanceKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InstanceKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which server family an instance runs; it decides the SQL pointsman speaks to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerFlavor {
    Mysql,
    Mariadb,
}

impl fmt::Display for ServerFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerFlavor::Mysql => "MySQL",
            ServerFlavor::Mariadb => "MariaDB",
        })
    }
}

/// A server version as `@@version` reports it, with the numbers parsed out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerVersion {
    /// `@@version` verbatim, e.g. `10.11.19-MariaDB-0+deb12u1-log`.
    pub full: String,
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    /// Parses the leading `major.minor.patch` of `@@version`; missing parts are 0.
    pub fn parse(full: &str) -> Self {
        let numeric: String = full
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = numeric.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        Self {
            full: full.to_string(),
            major: parts.next().unwrap_or(0),
            minor: parts.next().unwrap_or(0),
            patch: parts.next().unwrap_or(0),
        }
    }

    /// `9.7.4`, as the topology tree shows it.
    pub fn short(&self) -> String {
        format!("{}.{}.{}", self.major, self.minor, self.patch)
    }

    /// `major.minor`, the unit in which replication compatibility is judged.
    pub fn series(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

/// The instance's own GTID state, in its flavour's terms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "flavor", rename_all = "lowercase")]
pub enum GtidState {
    Mysql {
        /// `@@gtid_mode` (`ON`, `OFF`, `ON_PERMISSIVE`, ...).
        mode: String,
        executed: GtidSet,
    },
    Mariadb {
        binlog_pos: MariadbGtidList,
        current_pos: MariadbGtidList,
        slave_pos: MariadbGtidList,
        /// Last GTID per (domain, server id) in the binlog: what errant detection compares.
        binlog_state: MariadbGtidList,
        domain_id: u32,
        strict_mode: bool,
    },
}

impl GtidState {
    /// Whether every transaction this server executed is also on `other`, and `other`
    /// has more: this server is a stale copy of `other` (an old primary that came back
    /// writable after `other` replaced it). Servers of different flavours, or that
    /// diverged, are neither behind nor ahead.
    pub fn strictly_behind(&self, other: &GtidState) -> bool {
        match (self, other) {
            (
                GtidState::Mysql { executed, .. },
                GtidState::Mysql {
                    executed: theirs, ..
                },
            ) => executed.is_subset_of(theirs) && !theirs.is_subset_of(executed),
            (
                GtidState::Mariadb { binlog_state, .. },
                GtidState::Mariadb {
                    binlog_state: theirs,
                    ..
                },
            ) => {
                binlog_state.errant_against(theirs).is_empty()
                    && !theirs.errant_against(binlog_state).is_empty()
            }
            _ => false,
        }
    }

    /// Whether GTIDs are on for this instance (MariaDB always has them).
    pub fn enabled(&self) -> bool {
        match self {
            GtidState::Mysql { mode, .. } => mode.eq_ignore_ascii_case("ON"),
            GtidState::Mariadb { .. } => true,
        }
    }
}

/// The replica IO thread: `Connecting` is the state a replica of a dead source is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoThreadState {
    Yes,
    No,
    Connecting,
}

impl IoThreadState {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Yes" => Some(Self::Yes),
            "No" => Some(Self::No),
            // MariaDB says Preparing for a moment after START SLAVE: not connected yet.
            "Connecting" | "Preparing" => Some(Self::Connecting),
            _ => None,
        }
    }
}

/// What `SHOW REPLICA STATUS` (MySQL) or `SHOW ALL SLAVES STATUS` (MariaDB) says about an
/// instance's link to its source, plus the heartbeat counter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    pub source: InstanceKey,
    pub source_server_id: Option<u32>,
    pub io_running: IoThreadState,
    pub sql_running: bool,
    /// `Replica_IO_State` / `Slave_IO_State`; empty when the IO thread is stopped.
    pub io_state: String,
    pub last_io_errno: u32,
    pub last_io_error: String,
    pub last_sql_errno: u32,
    pub last_sql_error: String,
    /// `NULL` while a thread is stopped or reconnecting.
    pub seconds_behind_source: Option<u64>,
    /// Configured delay (`SQL_Delay`), so a delayed replica's lag is not a surprise.
    pub sql_delay: u64,
    /// GTID auto-positioning in use (MySQL `Auto_Position=1`, MariaDB `Using_Gtid` not `No`).
    pub gtid_auto_position: bool,
    /// Transactions received from the source (MySQL `Retrieved_Gtid_Set`, MariaDB `Gtid_IO_Pos`).
    pub received_gtids: String,
    pub source_log_file: String,
    pub read_source_log_pos: u64,
    pub exec_source_log_pos: u64,
    pub heartbeat_period: Option<f64>,
    /// Heartbeats received since the IO thread started (MariaDB `Slave_received_heartbeats`,
    /// MySQL `COUNT_RECEIVED_HEARTBEATS`).
    pub received_heartbeats: Option<u64>,
}

impl ReplicationStatus {
    /// A value that changes whenever the replica hears anything from its source: a
    /// heartbeat or a new event. Discovery compares it between polls to tell when the
    /// replica last heard from its source.
    pub fn contact_marker(&self) -> (Option<u64>, &str, u64, &str) {
        (
            self.received_heartbeats,
            &self.source_log_file,
            self.read_source_log_pos,
            &self.received_gtids,
        )
    }

    pub fn is_replicating(&self) -> bool {
        self.io_running == IoThreadState::Yes && self.sql_running
    }
}

/// Semi-synchronous replication as the instance reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemiSync {
    pub source_enabled: bool,
    pub replica_enabled: bool,
    /// The source is currently waiting for acknowledgements (`Rpl_semi_sync_*_status`).
    pub source_active: bool,
    pub replica_active: bool,
    pub source_clients: u32,
    /// `rpl_semi_sync_source_timeout` (MariaDB: `_master_`): how long a commit waits for
    /// an acknowledgement before the source falls back to asynchronous commits.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Everything one successful probe learned about an instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceFacts {
    pub flavor: ServerFlavor,
    pub version: ServerVersion,
    pub server_id: u32,
    /// MySQL only: MariaDB has no server UUID.
    pub server_uuid: Option<String>,
    pub read_only: bool,
    /// MySQL only.
    pub super_read_only: Option<bool>,
    /// MySQL only: whether read_only is persisted, so that a restart of this server
    /// brings it back read-only whatever its role was (see `recovery` for why).
    #[serde(default)]
    pub persisted_read_only: Option<bool>,
    pub log_bin: bool,
    pub binlog_format: String,
    pub log_replica_updates: bool,
    pub gtid: GtidState,
    pub replication: Option<ReplicationStatus>,
    pub semi_sync: SemiSync,
    /// Replicas this instance says are attached (`SHOW REPLICAS`, processlist fallback).
    pub replicas: Vec<InstanceKey>,
}

/// An instance: its last known facts and whether it currently answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub key: InstanceKey,
    /// `None` until the first successful probe; kept (stale) while unreachable.
    pub facts: Option<InstanceFacts>,
    #[serde(with = "super::time::option")]
    pub last_seen: Option<SystemTime>,
    #[serde(with = "super::time::option")]
    pub last_failure: Option<SystemTime>,
    /// Why the last probe failed, without secrets.
    pub last_error: Option<String>,
    /// Set while the instance does not answer: when it stopped answering.
    #[serde(with = "super::time::option")]
    pub unreachable_since: Option<SystemTime>,
    /// When this replica last heard from its source (a heartbeat or an event), as
    /// observed by comparing polls.
    #[serde(with = "super::time::option")]
    pub source_last_heard: Option<SystemTime>,
    /// How long the last successful probe took.
    pub probe_millis: Option<u64>,
    /// Moves on with every probe result discovery applies (a number no other instance
    /// had): what changed since a judgement is told without comparing facts. 0 in a
    /// snapshot made by hand, which is then always judged afresh.
    #[serde(skip)]
    pub version: u64,
}

impl Instance {
    pub fn new(key: InstanceKey) -> Self {
        Self {
            key,
            facts: None,
            last_seen: None,
            last_failure: None,
            last_error: None,
            unreachable_since: None,
            source_last_heard: None,
            probe_millis: None,
            version: 0,
        }
    }

    pub fn is_reachable(&self) -> bool {
        self.unreachable_since.is_none() && self.facts.is_some()
    }

    /// The source this instance replicates from, by its last known facts.
    pub fn source(&self) -> Option<&InstanceKey> {
        self.facts
            .as_ref()?
            .replication
            .as_ref()
            .map(|replication| &replication.source)
    }

    /// This instance with no facts known (to be replaced by fresh ones).
    pub fn without_facts(&self) -> Self {
        Self {
            key: self.key.clone(),
            facts: None,
            last_seen: self.last_seen,
            last_failure: self.last_failure,
            last_error: self.last_error.clone(),
            unreachable_since: self.unreachable_since,
            source_last_heard: self.source_last_heard,
            probe_millis: self.probe_millis,
            version: self.version,
        }
    }

    /// How long ago the replica last heard from its source, if it is a replica.
    pub fn source_silence(&self, now: SystemTime) -> Option<Duration> {
        self.source_last_heard
            .map(|heard| now.duration_since(heard).unwrap_or_default())
    }
}

/// Where analysis reads each instance's latest state: a whole snapshot, or one
/// cluster's members read out of it once (`ClusterInstances`).
pub trait Instances {
    fn get(&self, key: &InstanceKey) -> Option<&Instance>;
}

impl Instances for Snapshot {
    fn get(&self, key: &InstanceKey) -> Option<&Instance> {
        Snapshot::get(self, key)
    }
}

/// One cluster's members as a snapshot has them, each looked up in it once; any other
/// instance is read from the snapshot itself, so a judgement reads exactly what it
/// would read from the snapshot. Judging a cluster looks its members up a dozen times,
/// and in a fleet's snapshot each lookup walks a tree of thousands of string keys (at
/// 10,000 instances, most of the cost of summing up every cluster for the API).
pub struct ClusterInstances<'a> {
    members: Vec<(&'a InstanceKey, Option<&'a Instance>)>,
    snapshot: &'a Snapshot,
}

impl<'a> ClusterInstances<'a> {
    pub fn of(members: &'a [InstanceKey], snapshot: &'a Snapshot) -> Self {
        Self {
            members: members.iter().map(|key| (key, snapshot.get(key))).collect(),
            snapshot,
        }
    }
}

impl Instances for ClusterInstances<'_> {
    fn get(&self, key: &InstanceKey) -> Option<&Instance> {
        // The port first: comparing it reads nothing outside the key.
        match self
            .members
            .iter()
            .find(|(member, _)| member.port == key.port && member.host == key.host)
        {
            Some((_, instance)) => *instance,
            None => self.snapshot.get(key),
        }
    }
}

/// All known instances at one moment. The map shares its structure with the snapshots
/// before and after it, and every instance sits behind its own `Arc`: publishing one
/// after a probe copies the path to the instance that changed (pointers only) and that
/// one instance, whatever the size of the fleet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub instances: imbl::OrdMap<InstanceKey, Arc<Instance>>,
    /// The version of the replication trees' shape: discovery changes it whenever an
    /// instance comes or goes or replicates from another source, so grouping the
    /// instances into clusters is done again only then (`ClusterMemo`). 0: unknown,
    /// grouped afresh every time.
    #[serde(skip)]
    pub shape: u64,
    /// Every instance's latest `version` → its key, kept by discovery with the map:
    /// what changed since a version is found without looking at every instance. Empty
    /// in a snapshot made by hand.
    #[serde(skip)]
    pub changes: imbl::OrdMap<u64, InstanceKey>,
    /// How many snapshots discovery has published at once for a result asked for now
    /// (a lost connection's probe, a confirming or checking one): whoever paces its
    /// looks at snapshots looks at one that raised it without waiting. 0 in a snapshot
    /// made by hand.
    #[serde(skip)]
    pub urgent: u64,
}

impl Snapshot {
    /// A snapshot of these instances, each under its own key.
    pub fn of(instances: impl IntoIterator<Item = Instance>) -> Self {
        Self {
            instances: instances
                .into_iter()
                .map(|instance| (instance.key.clone(), Arc::new(instance)))
                .collect(),
            shape: 0,
            changes: imbl::OrdMap::new(),
            urgent: 0,
        }
    }

    /// The version of the latest probe result in this snapshot; 0 when it was made by
    /// hand (whoever compares snapshots then looks at every instance).
    pub fn version(&self) -> u64 {
        self.changes.get_max().map_or(0, |(version, _)| *version)
    }

    /// The instances whose latest probe result came after `version`, in the order the
    /// results came.
    pub fn changed_since(&self, version: u64) -> impl Iterator<Item = &InstanceKey> {
        self.changes
            .range(version.saturating_add(1)..)
            .map(|(_, key)| key)
    }

    /// Moves `key`'s version on (discovery, after it applied a probe result).
    pub fn set_version(&mut self, key: &InstanceKey, version: u64) {
        let Some(instance) = self.get_mut(key) else {
            return;
        };
        let old = std::mem::replace(&mut instance.version, version);
        if old != 0 {
            self.changes.remove(&old);
        }
        if version != 0 {
            self.changes.insert(version, key.clone());
        }
    }

    /// Removes an instance; returns whether it was there.
    pub fn remove(&mut self, key: &InstanceKey) -> bool {
        let Some(instance) = self.instances.remove(key) else {
            return false;
        };
        self.changes.remove(&instance.version);
        true
    }

    pub fn get(&self, key: &InstanceKey) -> Option<&Instance> {
        self.instances.get(key).map(Arc::as_ref)
    }

    /// These instances alone (those this snapshot has), sharing their facts: what
    /// looks at one cluster need not walk a fleet's worth of instances.
    pub fn only<'a>(&self, keys: impl IntoIterator<Item = &'a InstanceKey>) -> Snapshot {
        Snapshot {
            instances: keys
                .into_iter()
                .filter_map(|key| Some((key.clone(), self.instances.get(key)?.clone())))
                .collect(),
            shape: 0,
            changes: imbl::OrdMap::new(),
            urgent: 0,
        }
    }

    /// The instance to change in this snapshot only (copied if another snapshot shares it).
    pub fn get_mut(&mut self, key: &InstanceKey) -> Option<&mut Instance> {
        self.instances.get_mut(key).map(Arc::make_mut)
    }

    /// Adds or replaces an instance.
    pub fn insert(&mut self, instance: Instance) {
        self.instances
            .insert(instance.key.clone(), Arc::new(instance));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_reads_its_members_once_and_anything_else_from_the_snapshot() {
        let key = |host: &str, port| InstanceKey::new(host, port);
        let snapshot = Snapshot::of([
            Instance::new(key("10.0.0.1", 3306)),
            Instance::new(key("10.0.0.2", 3306)),
            Instance::new(key("10.0.0.1", 3307)),
        ]);
        let members = [key("10.0.0.1", 3306), key("10.0.0.9", 3306)];
        let cluster = ClusterInstances::of(&members, &snapshot);
        for asked in [
            key("10.0.0.1", 3306),
            key("10.0.0.2", 3306),
            key("10.0.0.1", 3307),
            key("10.0.0.9", 3306),
        ] {
            let read = Instances::get(&cluster, &asked).map(|i| &i.key);
            assert_eq!(read, snapshot.get(&asked).map(|i| &i.key), "{asked}");
        }
    }

    #[test]
    fn instance_keys_parse_and_print() {
        let key: InstanceKey = "db1.example:3307".parse().expect("valid");
        assert_eq!(key, InstanceKey::new("db1.example", 3307));
        assert_eq!(key.to_string(), "db1.example:3307");
        let v6: InstanceKey = "[::1]:3306".parse().expect("valid");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:3306");
        assert_eq!(
            "db2".parse::<InstanceKey>().expect("valid"),
            InstanceKey::new("db2", 3306)
        );
        let err = "db1:http".parse::<InstanceKey>().expect_err("bad port");
        assert!(err.contains("port \"http\""), "{err}");
        assert!(":3306".parse::<InstanceKey>().is_err());
    }

    #[test]
    fn configured_addresses_spell_out_the_port_and_name_a_host() {
        for good in ["db1.example:3307", "[::1]:3306", "10.0.0.5:3306", "db_2:1"] {
            InstanceKey::parse_with_port(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let err = InstanceKey::parse_with_port("db1").expect_err("no port");
        assert!(err.contains("give the port, like \"db1:3306\""), "{err}");
        let err = InstanceKey::parse_with_port("::1").expect_err("no port");
        assert!(err.contains("like \"[::1]:3306\""), "{err}");
        for bad in [
            "db 1:3306",
            "\"db1\":3306",
            "../db1:3306",
            "db1..example:3306",
        ] {
            let err = InstanceKey::parse_with_port(bad).expect_err(bad);
            assert!(
                err.contains("is not a host name or an IP address"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn io_thread_states_of_both_flavours() {
        assert_eq!(IoThreadState::parse("Yes"), Some(IoThreadState::Yes));
        assert_eq!(
            IoThreadState::parse("Preparing"),
            Some(IoThreadState::Connecting)
        );
        assert_eq!(IoThreadState::parse("Maybe"), None);
    }

    #[test]
    fn versions_parse_from_both_flavours() {
        let maria = ServerVersion::parse("10.11.19-MariaDB-0+deb12u1-log");
        assert_eq!((maria.major, maria.minor, maria.patch), (10, 11, 19));
        assert_eq!(ServerVersion::parse("9.7.4-2").short(), "9.7.4");
    }
}

/// Builders for hand-made snapshots in unit tests across the crate.
#[cfg(test)]
pub mod tests_support {
    use super::*;

    /// A healthy, writable MySQL 9.7 primary.
    pub fn primary(key: InstanceKey) -> Instance {
        let now = SystemTime::now();
        Instance {
            facts: Some(InstanceFacts {
                flavor: ServerFlavor::Mysql,
                version: ServerVersion::parse("9.7.4"),
                server_id: u32::from(key.port),
                server_uuid: None,
                read_only: false,
                super_read_only: Some(false),
                persisted_read_only: Some(true),
                log_bin: true,
                binlog_format: "ROW".into(),
                log_replica_updates: true,
                gtid: GtidState::Mysql {
                    mode: "ON".into(),
                    executed: GtidSet::default(),
                },
                replication: None,
                semi_sync: SemiSync::default(),
                replicas: Vec::new(),
            }),
            last_seen: Some(now),
            ..Instance::new(key)
        }
    }

    /// `instance` with MySQL's executed GTIDs set to `gtids`.
    pub fn with_gtids(mut instance: Instance, gtids: &str) -> Instance {
        instance.facts.as_mut().expect("facts").gtid = GtidState::Mysql {
            mode: "ON".into(),
            executed: GtidSet::parse(gtids).expect("a valid GTID set"),
        };
        instance
    }

    /// A healthy, read-only replica of `source`.
    pub fn replica(key: InstanceKey, source: InstanceKey) -> Instance {
        let mut instance = primary(key);
        let facts = instance.facts.as_mut().expect("primary() sets facts");
        facts.read_only = true;
        facts.super_read_only = Some(true);
        facts.replication = Some(ReplicationStatus {
            source,
            source_server_id: None,
            io_running: IoThreadState::Yes,
            sql_running: true,
            io_state: "Waiting for source to send event".into(),
            last_io_errno: 0,
            last_io_error: String::new(),
            last_sql_errno: 0,
            last_sql_error: String::new(),
            seconds_behind_source: Some(0),
            sql_delay: 0,
            gtid_auto_position: true,
            received_gtids: String::new(),
            source_log_file: "binlog.000001".into(),
            read_source_log_pos: 4,
            exec_source_log_pos: 4,
            heartbeat_period: Some(1.0),
            received_heartbeats: Some(0),
        });
        instance.source_last_heard = instance.last_seen;
        instance
    }
}
