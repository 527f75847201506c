//! Configuration: built-in defaults < a TOML file (`--config`) < `POINTSMAN_<SECTION>__<KEY>`
//! environment variables, merged by figment. Everything is checked at start-up, and every
//! error names where the value came from (file or variable), the key, and what is wrong —
//! a bad setting must stop the agent when it starts, not surprise it during a failover.

use crate::recovery::hooks::HooksConfig;
use crate::recovery::plan::PromotionPolicy;
use crate::routing::RoutePolicy;
use crate::topology::cluster::ClusterAlias;
use crate::topology::InstanceKey;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, UncasedStr};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A password or token. Shows as `<redacted>` in every Debug and Display, so it cannot
/// reach a log line or an error by accident.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The only way to read the value: call sites that need it are easy to find.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Takes text only, and refuses anything else without repeating it: serde's own
/// refusal ("found unsigned int `12345`") would print the secret.
struct SecretVisitor;

const SECRET_IS_TEXT: &str =
    "a secret is text: write it in quotes, like \"0123\" (a number or a boolean is refused, and not shown)";

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret in quotes")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Secret, E> {
        Ok(Secret(value))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
        Err(E::custom(SECRET_IS_TEXT))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
        Err(E::custom(SECRET_IS_TEXT))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
        Err(E::custom(SECRET_IS_TEXT))
    }

    fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Secret, E> {
        Err(E::custom(SECRET_IS_TEXT))
    }

    fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Secret, E> {
        Err(E::custom(SECRET_IS_TEXT))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(E::custom(SECRET_IS_TEXT))
    }

    fn visit_char<E: serde::de::Error>(self, _: char) -> Result<Secret, E> {
        Err(E::custom(SECRET_IS_TEXT))
    }
}

/// The keys that hold a secret's value. Their `POINTSMAN_<SECTION>__<KEY>` variables
/// are read by [`SecretVariables`], never by figment's `Env`.
const SECRET_KEYS: [&str; 4] = [
    "mysql.password",
    "recovery.replication_password",
    "api.token",
    "routing.consul.token",
];

/// Whether `key` (a variable's name after `POINTSMAN_`, any case) sets a secret key.
fn sets_a_secret(key: &UncasedStr) -> bool {
    SECRET_KEYS
        .iter()
        .any(|secret| key == secret.replace('.', "__").as_str())
}

/// The secret keys' variables, each taken as exactly the text it holds. figment's
/// `Env` parses values: `007` would become the number 7 (and then be refused, its
/// value printed in the error), `true` a boolean.
struct SecretVariables(Env);

impl Provider for SecretVariables {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.0
            .iter()
            .fold(Figment::new(), |figment, (key, value)| {
                figment.merge(Serialized::default(key.as_str(), value))
            })
            .data()
    }
}

/// A duration written the human way in the file: `"1s"`, `"250ms"`, `"1h 30m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a duration in quotes, like \"1s\" or \"250ms\"")
        })?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|_| {
                serde::de::Error::custom(format!("expected a duration like \"1s\", got \"{text}\""))
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// The whole configuration, as read from file and environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mysql: MysqlConfig,
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    #[serde(default)]
    pub analysis: AnalysisConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub recovery: RecoveryConfig,
    #[serde(default)]
    pub promotion: PromotionConfig,
    #[serde(default)]
    pub hooks: HooksConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    /// `[ha]`: several agents, one acts (a leader lease in Consul).
    #[serde(default)]
    pub ha: crate::leader::HaConfig,
    /// `[[cluster]]` tables: aliases for clusters.
    #[serde(default, rename = "cluster")]
    pub clusters: Vec<ClusterConfig>,
}

/// How pointsman logs in to the database servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MysqlConfig {
    pub user: String,
    /// At most one of `password`, `password_env`, `password_file`.
    pub password: Option<Secret>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub connect_timeout: HumanDuration,
    pub query_timeout: HumanDuration,
}

impl Default for MysqlConfig {
    fn default() -> Self {
        Self {
            user: "pointsman".into(),
            password: None,
            password_env: None,
            password_file: None,
            connect_timeout: HumanDuration(Duration::from_millis(1000)),
            query_timeout: HumanDuration(Duration::from_millis(1000)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Instances to crawl from at start-up (`host:port`, the port spelled out).
    #[serde(deserialize_with = "addresses")]
    pub seeds: Vec<InstanceKey>,
    pub poll_interval: HumanDuration,
    /// At most this many probes that are not sent behind a park run at once (a new
    /// connection with its first probe, above all at start-up), however many instances
    /// there are. The probes of parked connections ride in their park's query.
    pub max_concurrent_probes: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            seeds: Vec::new(),
            poll_interval: HumanDuration(Duration::from_secs(1)),
            max_concurrent_probes: 32,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// A replica further behind than this gets a lag finding.
    pub lag_warning: HumanDuration,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            lag_warning: HumanDuration(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The embedded SQLite file; its directory is created if missing.
    pub path: PathBuf,
    /// Audit records older than this are deleted (in the background, hourly).
    pub keep_audit: HumanDuration,
    /// Only the newest this many finished recoveries are kept (with their journals);
    /// a running one, one a fence names and one that still blocks are always kept.
    pub keep_recoveries: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/pointsman/pointsman.db"),
            keep_audit: HumanDuration(Duration::from_secs(90 * 86_400)),
            keep_recoveries: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: String,
    /// When set (at most one of `token`, `token_env`, `token_file`), every call that
    /// changes something needs `Authorization: Bearer <token>`. Blanks around it are
    /// dropped; an empty one is an error.
    pub token: Option<Secret>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// With a token: whether reading (topology, audit, routes, metrics) needs it too.
    /// `/api/v1/health` stays open for load balancers.
    pub token_for_reads: bool,
    /// Lets `listen` be an address other machines reach while there is no token.
    pub allow_open: bool,
    /// Host names (besides localhost, the machine's own name and any IP address) that
    /// requests may name in their `Host` header, e.g. a DNS name or a proxy's.
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://ops.example`) whose pages may send changes, besides the agent's
    /// own page.
    pub allowed_origins: Vec<String>,
    /// At most this many `/api/v1/events` streams at once; more are refused with 503.
    pub max_event_clients: usize,
    /// A client that takes none of a reply for this long is disconnected.
    pub stalled_client_timeout: HumanDuration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:3000".into(),
            token: None,
            token_env: None,
            token_file: None,
            token_for_reads: false,
            allow_open: false,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_event_clients: 64,
            stalled_client_timeout: HumanDuration(Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `pointsman=debug`; `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// When and how pointsman recovers from a failed primary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Clusters recovered automatically: regexes on the cluster name, or `alias=NAME`.
    /// Empty: none (manual recovery only), as orchestrator's RecoverMasterClusterFilters.
    pub auto_clusters: Vec<String>,
    /// After a recovery, no automatic recovery of the same cluster for this long, unless
    /// an operator acknowledges it (`pointsman ack CLUSTER`).
    pub block_period: HumanDuration,
    /// A replica whose IO thread says Yes but has heard nothing for this many heartbeat
    /// periods counts as not replicating (a primary alive but cut off).
    pub silent_heartbeats: u32,
    /// How long a candidate may take to apply its relay log or catch up.
    pub apply_timeout: HumanDuration,
    /// How long a re-pointed replica may take to replicate again.
    pub verify_timeout: HumanDuration,
    /// The heartbeat period of every replication link pointsman creates; a replica it
    /// re-points keeps its own period when it has one.
    pub heartbeat_period: HumanDuration,
    /// Whether the links pointsman creates or re-points use TLS: `auto` (on MySQL, when
    /// the source offers it; MariaDB links keep their setting), `required` or `off`.
    pub replication_tls: crate::mysql::admin::ReplicationTls,
    /// An old primary fenced by a failover that answers again with no transaction its
    /// successor lacks is re-attached below it by the agent itself (as `pointsman
    /// reattach`), like MaxScale's auto_rejoin; one with such transactions stays fenced,
    /// and the audit says which and what to do. Off by default: then only an operator
    /// re-attaches.
    pub auto_rejoin: bool,
    /// Like replication-manager's failover-at-sync: a failover promotes only when the
    /// failed primary was last seen committing semi-synchronously (semi-sync on, not
    /// fallen back), and only a replica whose semi-sync replica side is on — so it
    /// never promotes past a write the primary acknowledged. Off by default.
    pub require_semi_sync_ack: bool,
    /// The account new replication links use (re-attaching an old primary, switchover).
    pub replication_user: String,
    pub replication_password: Option<Secret>,
    pub replication_password_env: Option<String>,
    pub replication_password_file: Option<PathBuf>,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            auto_clusters: Vec::new(),
            block_period: HumanDuration(Duration::from_secs(3600)),
            silent_heartbeats: 3,
            apply_timeout: HumanDuration(Duration::from_secs(10)),
            verify_timeout: HumanDuration(Duration::from_secs(10)),
            heartbeat_period: HumanDuration(Duration::from_secs(1)),
            replication_tls: crate::mysql::admin::ReplicationTls::Auto,
            auto_rejoin: false,
            require_semi_sync_ack: false,
            replication_user: "repl".into(),
            replication_password: None,
            replication_password_env: None,
            replication_password_file: None,
        }
    }
}

/// Which replica may take over. Patterns are regexes matched against `host:port`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromotionConfig {
    /// A replica further behind than this (or delayed by more) is not promoted.
    pub max_lag: HumanDuration,
    pub ignore_hosts: Vec<String>,
    pub prefer: Vec<String>,
    pub prefer_not: Vec<String>,
    pub must_not: Vec<String>,
}

impl Default for PromotionConfig {
    fn default() -> Self {
        Self {
            max_lag: HumanDuration(Duration::from_secs(10)),
            ignore_hosts: Vec::new(),
            prefer: Vec::new(),
            prefer_not: Vec::new(),
            must_not: Vec::new(),
        }
    }
}

/// Where applications are sent: `[routing]`, `[routing.dns]`, `[routing.consul]` and any
/// number of `[[routing.proxysql]]`. Only clusters with an alias are routed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// A replica further behind than this is taken out of the reader set.
    pub max_reader_lag: HumanDuration,
    /// Whether the primary is in the reader set too.
    pub primary_serves_reads: bool,
    /// Every backend is checked and repaired at least this often.
    pub reconcile_interval: HumanDuration,
    /// How long a failover waits for the backends before going on without them.
    pub apply_timeout: HumanDuration,
    pub dns: DnsConfig,
    pub consul: ConsulConfig,
    pub proxysql: Vec<ProxySqlConfig>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            max_reader_lag: HumanDuration(Duration::from_secs(10)),
            primary_serves_reads: false,
            reconcile_interval: HumanDuration(Duration::from_secs(10)),
            apply_timeout: HumanDuration(Duration::from_secs(1)),
            dns: DnsConfig::default(),
            consul: ConsulConfig::default(),
            proxysql: Vec::new(),
        }
    }
}

/// The embedded DNS responder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    pub enabled: bool,
    /// UDP and TCP; the default needs no root.
    pub listen: String,
    pub zone: String,
    pub ttl: HumanDuration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:8053".into(),
            zone: "mysql.local.".into(),
            ttl: HumanDuration(Duration::from_secs(60)),
        }
    }
}

/// Consul KV (orchestrator's keys and pointsman's own) and services.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsulConfig {
    /// The agent's HTTP API, e.g. `http://127.0.0.1:8500`; unset: Consul is not used.
    pub address: Option<String>,
    /// At most one of `token`, `token_env`, `token_file`.
    pub token: Option<Secret>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Sent as `?dc=`; unset: the agent's own datacenter.
    pub datacenter: Option<String>,
    /// PEM CA bundle to trust for an `https://` address.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for agents that verify clients.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// orchestrator-compatible keys: `<kv_prefix>/<cluster>` = `host:port`, and
    /// `/hostname`, `/port`, `/ipv4`, `/ipv6` below it.
    pub kv_prefix: String,
    /// pointsman's own key, `<routes_prefix>/<cluster>`: JSON with the epoch.
    pub routes_prefix: String,
    /// Register the primary and the readers as services.
    pub services: bool,
    /// `{cluster}` is replaced by the cluster's alias.
    pub service_name: String,
    pub primary_tag: String,
    pub replica_tag: String,
    /// The TTL of each service's check; pointsman passes it at every reconcile.
    pub check_ttl: HumanDuration,
    /// Consul removes a service whose check stayed critical this long.
    pub deregister_critical_after: HumanDuration,
    /// Each request's time limit.
    pub timeout: HumanDuration,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            address: None,
            token: None,
            token_env: None,
            token_file: None,
            datacenter: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            kv_prefix: "mysql/master".into(),
            routes_prefix: "pointsman/routes".into(),
            services: true,
            service_name: "mysql-{cluster}".into(),
            primary_tag: "primary".into(),
            replica_tag: "replica".into(),
            check_ttl: HumanDuration(Duration::from_secs(30)),
            deregister_critical_after: HumanDuration(Duration::from_secs(3600)),
            timeout: HumanDuration(Duration::from_secs(2)),
        }
    }
}

/// One ProxySQL admin interface (`[[routing.proxysql]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySqlConfig {
    /// `host:port` of the admin interface (6032 by default in ProxySQL).
    pub address: String,
    #[serde(default = "default_proxysql_user")]
    pub user: String,
    pub password: Option<Secret>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Connect and statement time limit.
    #[serde(default = "default_proxysql_timeout")]
    pub timeout: HumanDuration,
    /// How often `runtime_mysql_servers` is read to see whether someone (a hand edit, a
    /// restart from an old disk config, ProxySQL's own monitor) changed what traffic
    /// uses; the full reconcile runs every `routing.reconcile_interval`.
    #[serde(default = "default_proxysql_check_interval")]
    pub check_interval: HumanDuration,
    /// Per cluster, the writer and reader hostgroups.
    pub hostgroups: Vec<HostgroupConfig>,
}

fn default_proxysql_user() -> String {
    "admin".into()
}

fn default_proxysql_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

fn default_proxysql_check_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostgroupConfig {
    /// A `[[cluster]]` alias.
    pub cluster: String,
    pub writer: u32,
    pub reader: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The name the cluster is shown and addressed by.
    pub alias: String,
    /// The cluster that contains any of these instances gets the alias (`host:port`,
    /// the port spelled out); an instance is listed under one alias only.
    #[serde(deserialize_with = "addresses")]
    pub instances: Vec<InstanceKey>,
}

/// `host:port` addresses as a configuration writes them: [`InstanceKey::parse_with_port`].
fn addresses<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<InstanceKey>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| InstanceKey::parse_with_port(text))
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

/// A configuration that failed to load; `Display` lists every problem, one a line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: String) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

/// The checked configuration the agent runs with: secrets resolved, addresses parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub mysql_password: Secret,
    pub replication_password: Secret,
    pub api_listen: SocketAddr,
    /// `api.token`, resolved; `None`: the API is open.
    pub api_token: Option<Secret>,
    /// The variables `*_env` keys name (`mysql.password_env`, ...): hooks never see them.
    pub secret_variables: Vec<String>,
    pub aliases: Vec<ClusterAlias>,
    /// `recovery.auto_clusters`, compiled.
    pub auto_clusters: Vec<ClusterFilter>,
    /// The promotion rules, compiled.
    pub promotion: PromotionPolicy,
    pub routing: RoutingSettings,
}

impl Settings {
    /// Where discovery starts: `discovery.seeds`, and every instance a `[[cluster]]`
    /// lists — so a member is found even when the seeds lead nowhere (a store lost,
    /// a seed down, an old primary no replica points at any more).
    pub fn seeds(&self) -> Vec<InstanceKey> {
        let mut seeds = self.config.discovery.seeds.clone();
        for alias in &self.aliases {
            for key in &alias.instances {
                if !seeds.contains(key) {
                    seeds.push(key.clone());
                }
            }
        }
        seeds
    }
}

/// `[routing]`, checked: addresses parsed, secrets resolved.
#[derive(Debug, Clone)]
pub struct RoutingSettings {
    pub policy: RoutePolicy,
    pub reconcile_interval: Duration,
    pub apply_timeout: Duration,
    pub dns: Option<DnsListen>,
    pub consul: Option<ConsulSettings>,
    pub proxysql: Vec<ProxySqlSettings>,
}

#[derive(Debug, Clone)]
pub struct DnsListen {
    pub listen: SocketAddr,
    /// Absolute and lower case: `mysql.local.`.
    pub zone: String,
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct ConsulSettings {
    pub config: ConsulConfig,
    pub token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct ProxySqlSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub timeout: Duration,
    pub check_interval: Duration,
    pub hostgroups: Vec<HostgroupConfig>,
}

/// One entry of `recovery.auto_clusters`.
#[derive(Debug, Clone)]
pub enum ClusterFilter {
    Alias(String),
    Pattern(regex::Regex),
}

impl ClusterFilter {
    pub fn matches(&self, name: &str, alias: Option<&str>) -> bool {
        match self {
            ClusterFilter::Alias(wanted) => alias == Some(wanted.as_str()),
            ClusterFilter::Pattern(pattern) => pattern.is_match(name),
        }
    }
}

impl Config {
    /// Reads defaults, then `file` (if given), then `POINTSMAN_<SECTION>__<KEY>` variables,
    /// and checks the result. Every problem names where its value came from.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::one(format!(
                    "{}: configuration file not found (pass an existing file to --config)",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment
            .merge(
                Env::prefixed("POINTSMAN_")
                    .filter(|key| key.as_str().contains("__") && !sets_a_secret(key))
                    .split("__"),
            )
            .merge(SecretVariables(
                Env::prefixed("POINTSMAN_")
                    .filter(sets_a_secret)
                    .split("__"),
            ));
        let config = figment.extract::<Config>().map_err(|error| ConfigError {
            problems: error.into_iter().map(describe).collect(),
        })?;
        config.check(&|key| origin_of(&figment, key))
    }

    /// The built-in defaults alone, for configurations built in code.
    pub fn defaults() -> Config {
        Figment::new()
            .extract()
            .expect("every section has a default")
    }

    /// Checks a configuration built in code.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        self.check(&|_| "configuration".to_string())
    }

    /// Checks what serde cannot and resolves the password; `origin` says where a key's
    /// value came from.
    fn check(self, origin: &dyn Fn(&str) -> String) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, what: String| {
            let section = key.split(['.', '[']).next().unwrap_or(key);
            problems.push(format!(
                "{}: {key}: {what}",
                origin(section_key(key, section))
            ));
        };
        if self.mysql.user.trim().is_empty() {
            problem("mysql.user", "must not be empty".into());
        }
        let password = match resolve_secret(
            [
                "mysql.password",
                "mysql.password_env",
                "mysql.password_file",
            ],
            &self.mysql.password,
            &self.mysql.password_env,
            &self.mysql.password_file,
        ) {
            Ok(password) => password,
            Err((key, what)) => {
                problem(key, what);
                Secret::default()
            }
        };
        let recovery = &self.recovery;
        let replication_password = match resolve_secret(
            [
                "recovery.replication_password",
                "recovery.replication_password_env",
                "recovery.replication_password_file",
            ],
            &recovery.replication_password,
            &recovery.replication_password_env,
            &recovery.replication_password_file,
        ) {
            Ok(password) => password,
            Err((key, what)) => {
                problem(key, what);
                Secret::default()
            }
        };
        for (key, what) in self.hooks.check() {
            problem(&key, what);
        }
        for (key, what) in self.ha.check() {
            problem(&key, what);
        }
        if self.ha.enabled && self.routing.consul.address.is_none() {
            problem(
                "ha.enabled",
                "needs routing.consul.address: the leader lease lives in the Consul that routing uses".into(),
            );
        }
        if !(1..=100).contains(&recovery.silent_heartbeats) {
            problem(
                "recovery.silent_heartbeats",
                format!(
                    "{} is outside 1..100: a cut-off primary is seen after this many heartbeat periods of silence (3 is usual)",
                    recovery.silent_heartbeats
                ),
            );
        }
        let auto_clusters: Vec<ClusterFilter> = recovery
            .auto_clusters
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| match entry.strip_prefix("alias=") {
                Some(alias) => Some(ClusterFilter::Alias(alias.to_string())),
                None => match regex::Regex::new(entry) {
                    Ok(regex) => Some(ClusterFilter::Pattern(regex)),
                    Err(error) => {
                        problem(
                            "recovery.auto_clusters",
                            format!("entry {index} \"{entry}\" is not a valid regex: {error}"),
                        );
                        None
                    }
                },
            })
            .collect();
        let promotion_config = &self.promotion;
        let promotion = PromotionPolicy {
            max_lag: promotion_config.max_lag.0,
            ignore_hosts: compile_patterns(
                "promotion.ignore_hosts",
                &promotion_config.ignore_hosts,
                &mut problem,
            ),
            prefer: compile_patterns("promotion.prefer", &promotion_config.prefer, &mut problem),
            prefer_not: compile_patterns(
                "promotion.prefer_not",
                &promotion_config.prefer_not,
                &mut problem,
            ),
            must_not: compile_patterns(
                "promotion.must_not",
                &promotion_config.must_not,
                &mut problem,
            ),
            order: self
                .clusters
                .iter()
                .flat_map(|c| c.instances.iter().cloned())
                .collect(),
            require_semi_sync_ack: self.recovery.require_semi_sync_ack,
        };
        for (key, value, range, what) in [
            (
                "mysql.connect_timeout",
                self.mysql.connect_timeout,
                TIMEOUT,
                "every connect waits at most this (1s is usual)",
            ),
            (
                "mysql.query_timeout",
                self.mysql.query_timeout,
                TIMEOUT,
                "every statement waits at most this (1s is usual)",
            ),
            (
                "discovery.poll_interval",
                self.discovery.poll_interval,
                TIMEOUT,
                "every instance is probed this often (1s is usual)",
            ),
            (
                "analysis.lag_warning",
                self.analysis.lag_warning,
                LAG,
                "lag is counted in whole seconds (10s is usual)",
            ),
            (
                "api.stalled_client_timeout",
                self.api.stalled_client_timeout,
                TIMEOUT,
                "a client that reads nothing this long is dropped (30s is usual)",
            ),
            (
                "recovery.block_period",
                recovery.block_period,
                BLOCK_PERIOD,
                "a shorter block does not stop a flapping primary; `pointsman ack` lifts it early (1h is usual)",
            ),
            (
                "recovery.apply_timeout",
                recovery.apply_timeout,
                TIMEOUT,
                "how long a candidate may take to apply its relay log (10s is usual)",
            ),
            (
                "recovery.verify_timeout",
                recovery.verify_timeout,
                TIMEOUT,
                "how long a re-pointed replica may take to replicate (10s is usual)",
            ),
            (
                "recovery.heartbeat_period",
                recovery.heartbeat_period,
                HEARTBEAT_PERIOD,
                "replicas hear their source's heartbeat this often, and a cut-off primary is seen after recovery.silent_heartbeats of them (1s is usual)",
            ),
            (
                "promotion.max_lag",
                self.promotion.max_lag,
                LAG,
                "lag is counted in whole seconds (10s is usual)",
            ),
            (
                "hooks.timeout",
                self.hooks.timeout,
                TIMEOUT,
                "each hook command is killed after this (30s is usual)",
            ),
            (
                "store.keep_audit",
                self.store.keep_audit,
                KEEP_AUDIT,
                "audit records older than this are deleted (90d is the default)",
            ),
        ] {
            if let Some(what_is_wrong) = outside(value, range, what) {
                problem(key, what_is_wrong);
            }
        }
        if let Some(what_is_wrong) = crate::store::path_problem(&self.store.path) {
            problem("store.path", what_is_wrong);
        }
        if !(1..=1_000_000).contains(&self.store.keep_recoveries) {
            problem(
                "store.keep_recoveries",
                format!(
                    "{} is outside 1..1000000: the newest this many finished recoveries are kept (1000 is the default)",
                    self.store.keep_recoveries
                ),
            );
        }
        if self.discovery.max_concurrent_probes == 0 {
            problem(
                "discovery.max_concurrent_probes",
                "must be at least 1".into(),
            );
        }
        let api_listen = self.api.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
            problem(
                "api.listen",
                format!(
                    "expected an address like \"127.0.0.1:3000\", got \"{}\"",
                    self.api.listen
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 3000))
        });
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            problem(
                "log.level",
                format!(
                    "expected a level like \"info\" or \"pointsman=debug\", got \"{}\"",
                    self.log.level
                ),
            );
        }
        let mut aliases: Vec<ClusterAlias> = Vec::new();
        for (index, cluster) in self.clusters.iter().enumerate() {
            let valid = !cluster.alias.is_empty()
                && cluster
                    .alias
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid {
                problem(
                    &format!("cluster[{index}].alias"),
                    format!(
                        "\"{}\" must be letters, digits, '-', '_' or '.' (it is used in URLs and DNS names)",
                        cluster.alias
                    ),
                );
            }
            if aliases.iter().any(|a| a.alias == cluster.alias) {
                problem(
                    &format!("cluster[{index}].alias"),
                    format!("\"{}\" is used by another [[cluster]]", cluster.alias),
                );
            }
            for key in &cluster.instances {
                if let Some(other) = aliases.iter().find(|a| a.instances.contains(key)) {
                    problem(
                        &format!("cluster[{index}].instances"),
                        format!(
                            "{key} is listed under the alias \"{}\" too: an instance belongs to one cluster, so list it under one [[cluster]] only",
                            other.alias
                        ),
                    );
                }
            }
            if cluster.instances.is_empty() {
                problem(
                    &format!("cluster[{index}].instances"),
                    format!(
                        "list at least one host:port of the cluster \"{}\"",
                        cluster.alias
                    ),
                );
            }
            aliases.push(ClusterAlias {
                alias: cluster.alias.clone(),
                instances: cluster.instances.clone(),
            });
        }
        let api_token = self.api_token(&mut problem);
        if self.api.token_for_reads && api_token.is_none() {
            problem(
                "api.token_for_reads",
                "needs api.token (or token_env, token_file): there is no token to ask for".into(),
            );
        }
        let reachable = !api_listen.ip().to_canonical().is_loopback();
        if reachable && api_token.is_none() && !self.api.allow_open {
            problem(
                "api.listen",
                format!(
                    "{api_listen} is reachable from other machines and the API has no token, so anyone who reaches it could switch primaries over: set api.token (or token_env, token_file), listen on 127.0.0.1, or set api.allow_open = true for a network you trust"
                ),
            );
        }
        for (index, host) in self.api.allowed_hosts.iter().enumerate() {
            if let Err(what) = crate::api::origin::check_host_name(host) {
                problem(&format!("api.allowed_hosts[{index}]"), what);
            }
        }
        for (index, origin) in self.api.allowed_origins.iter().enumerate() {
            if let Err(what) = crate::api::origin::Origin::parse(origin) {
                problem(&format!("api.allowed_origins[{index}]"), what);
            }
        }
        if !(1..=10_000).contains(&self.api.max_event_clients) {
            problem(
                "api.max_event_clients",
                "must be 1 to 10000 (each watcher of the event stream holds a connection)".into(),
            );
        }
        let routing = check_routing(&self.routing, &aliases, &mut problem);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Settings {
            routing,
            secret_variables: self.secret_variables(),
            config: self,
            mysql_password: password,
            replication_password,
            api_listen,
            api_token,
            aliases,
            auto_clusters,
            promotion,
        })
    }

    /// `api.token` from wherever it is configured, blanks around it dropped; `None`
    /// when none is. An empty one is a problem: it would silently leave the API open.
    fn api_token(&self, problem: &mut dyn FnMut(&str, String)) -> Option<Secret> {
        let api = &self.api;
        let token = match resolve_secret(
            ["api.token", "api.token_env", "api.token_file"],
            &api.token,
            &api.token_env,
            &api.token_file,
        ) {
            Ok(token) => token,
            Err((key, what)) => {
                problem(key, what);
                return None;
            }
        };
        let (key, source) = match (&api.token, &api.token_env, &api.token_file) {
            (Some(_), _, _) => ("api.token", "the token".to_string()),
            (_, Some(variable), _) => ("api.token_env", format!("variable {variable}")),
            (_, _, Some(path)) => ("api.token_file", path.display().to_string()),
            (None, None, None) => return None,
        };
        let trimmed = token.expose().trim();
        if trimmed.is_empty() {
            problem(
                key,
                format!("{source} is empty or only blanks, which would leave the API open: give a token, or remove the key for no token"),
            );
            return None;
        }
        Some(Secret::new(trimmed))
    }

    /// The environment variables that `*_env` keys name as the source of a secret.
    fn secret_variables(&self) -> Vec<String> {
        [
            &self.mysql.password_env,
            &self.recovery.replication_password_env,
            &self.api.token_env,
            &self.routing.consul.token_env,
        ]
        .into_iter()
        .chain(self.routing.proxysql.iter().map(|p| &p.password_env))
        .flatten()
        .cloned()
        .collect()
    }
}

/// Checks `[routing]` and resolves its secrets.
fn check_routing(
    routing: &RoutingConfig,
    aliases: &[ClusterAlias],
    problem: &mut dyn FnMut(&str, String),
) -> RoutingSettings {
    for (key, value, range, what) in [
        (
            "routing.max_reader_lag",
            routing.max_reader_lag,
            LAG,
            "lag is counted in whole seconds (10s is usual)",
        ),
        (
            "routing.reconcile_interval",
            routing.reconcile_interval,
            TIMEOUT,
            "every backend is checked this often (10s is usual)",
        ),
        (
            "routing.apply_timeout",
            routing.apply_timeout,
            TIMEOUT,
            "a failover waits this long for the backends (1s is usual)",
        ),
        (
            "routing.dns.ttl",
            routing.dns.ttl,
            DNS_TTL,
            "resolvers cache the answers this long, and a failover moves them (60s is usual)",
        ),
        (
            "routing.consul.timeout",
            routing.consul.timeout,
            TIMEOUT,
            "each request to Consul waits at most this (2s is usual)",
        ),
        (
            "routing.consul.deregister_critical_after",
            routing.consul.deregister_critical_after,
            DEREGISTER_AFTER,
            "Consul removes a service whose check stayed critical this long (1h is usual)",
        ),
    ] {
        if let Some(what_is_wrong) = outside(value, range, what) {
            problem(key, what_is_wrong);
        }
    }
    let dns = routing.dns.enabled.then(|| {
        let listen = routing
            .dns
            .listen
            .parse::<SocketAddr>()
            .unwrap_or_else(|_| {
                problem(
                    "routing.dns.listen",
                    format!(
                        "expected an address like \"127.0.0.1:8053\", got \"{}\"",
                        routing.dns.listen
                    ),
                );
                SocketAddr::from(([127, 0, 0, 1], 8053))
            });
        let zone = routing.dns.zone.trim().to_ascii_lowercase();
        let zone = if zone.ends_with('.') {
            zone
        } else {
            format!("{zone}.")
        };
        let labels: Vec<&str> = zone.trim_end_matches('.').split('.').collect();
        let valid = zone.len() <= 200
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            problem(
                "routing.dns.zone",
                format!(
                    "\"{}\" is not a domain name like \"mysql.local.\"",
                    routing.dns.zone
                ),
            );
        }
        DnsListen {
            listen,
            zone,
            ttl: routing.dns.ttl.0,
        }
    });
    let consul = routing.consul.address.as_ref().map(|address| {
        let config = &routing.consul;
        let scheme_ok = address.starts_with("http://") || address.starts_with("https://");
        if !scheme_ok || reqwest::Url::parse(address).is_err() {
            problem(
                "routing.consul.address",
                format!("expected a URL like \"http://127.0.0.1:8500\", got \"{address}\""),
            );
        }
        let token = match resolve_secret(
            [
                "routing.consul.token",
                "routing.consul.token_env",
                "routing.consul.token_file",
            ],
            &config.token,
            &config.token_env,
            &config.token_file,
        ) {
            Ok(token) => (!token.expose().is_empty()).then_some(token),
            Err((key, what)) => {
                problem(key, what);
                None
            }
        };
        for (key, file) in [
            ("routing.consul.ca_file", &config.ca_file),
            ("routing.consul.cert_file", &config.cert_file),
            ("routing.consul.key_file", &config.key_file),
        ] {
            if let Some(file) = file {
                if let Err(error) = std::fs::read(file) {
                    problem(key, format!("cannot read {}: {error}", file.display()));
                }
            }
        }
        if config.cert_file.is_some() != config.key_file.is_some() {
            problem(
                "routing.consul.cert_file",
                "set both cert_file and key_file, or neither".into(),
            );
        }
        for (key, prefix) in [
            ("routing.consul.kv_prefix", &config.kv_prefix),
            ("routing.consul.routes_prefix", &config.routes_prefix),
        ] {
            let valid = !prefix.is_empty()
                && !prefix.starts_with('/')
                && !prefix.ends_with('/')
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ",-_./".contains(c));
            if !valid {
                problem(
                    key,
                    format!("\"{prefix}\" must be letters, digits and ,-_./, with no leading or trailing '/'"),
                );
            }
        }
        let name = config.service_name.replace("{cluster}", "x");
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            problem(
                "routing.consul.service_name",
                format!(
                    "\"{}\" must be letters, digits and '-' (it is a DNS label in Consul), with {{cluster}} for the alias",
                    config.service_name
                ),
            );
        }
        if config.services && config.check_ttl.0 < routing.reconcile_interval.0.saturating_mul(2) {
            problem(
                "routing.consul.check_ttl",
                format!(
                    "{} is shorter than two routing.reconcile_interval ({}): the check is passed once an interval, so it would go critical between passes",
                    config.check_ttl, routing.reconcile_interval
                ),
            );
        }
        if config.check_ttl.0 > CONSUL_CHECK_TTL_MAX {
            problem(
                "routing.consul.check_ttl",
                format!(
                    "{} is over 1day: a service whose agent died would stay healthy that long (30s is usual)",
                    config.check_ttl
                ),
            );
        }
        ConsulSettings {
            config: config.clone(),
            token,
        }
    });
    let mut proxysql = Vec::new();
    for (index, entry) in routing.proxysql.iter().enumerate() {
        let at = |key: &str| format!("routing.proxysql[{index}].{key}");
        let (host, port) = match entry.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => (
                host.trim_matches(['[', ']']).to_string(),
                port.parse::<u16>().unwrap_or(6032),
            ),
            _ => {
                problem(
                    &at("address"),
                    format!(
                        "expected the admin interface as host:port, like \"127.0.0.1:6032\", got \"{}\"",
                        entry.address
                    ),
                );
                (String::new(), 6032)
            }
        };
        let password = match resolve_secret(
            [
                "routing.proxysql.password",
                "routing.proxysql.password_env",
                "routing.proxysql.password_file",
            ],
            &entry.password,
            &entry.password_env,
            &entry.password_file,
        ) {
            Ok(password) => password,
            Err((key, what)) => {
                problem(&at(short(key)), what);
                Secret::default()
            }
        };
        if let Some(what_is_wrong) = outside(
            entry.timeout,
            TIMEOUT,
            "each statement to the admin interface waits at most this (2s is usual)",
        ) {
            problem(&at("timeout"), what_is_wrong);
        }
        if let Some(what_is_wrong) = outside(
            entry.check_interval,
            CHECK_INTERVAL,
            "runtime_mysql_servers is read this often to repair drift fast (1s is usual)",
        ) {
            problem(&at("check_interval"), what_is_wrong);
        }
        if entry.hostgroups.is_empty() {
            problem(
                &at("hostgroups"),
                "list the writer and reader hostgroup of at least one cluster, like [{ cluster = \"app\", writer = 10, reader = 20 }]".into(),
            );
        }
        let mut used = std::collections::HashSet::new();
        for (position, hostgroup) in entry.hostgroups.iter().enumerate() {
            let key = at(&format!("hostgroups[{position}]"));
            if !aliases.iter().any(|a| a.alias == hostgroup.cluster) {
                problem(
                    &key,
                    format!(
                        "cluster \"{}\" is not a [[cluster]] alias: only aliased clusters are routed",
                        hostgroup.cluster
                    ),
                );
            }
            if hostgroup.writer == hostgroup.reader {
                problem(
                    &key,
                    format!(
                        "writer and reader are both hostgroup {}: they must differ",
                        hostgroup.writer
                    ),
                );
            }
            for group in [hostgroup.writer, hostgroup.reader] {
                if !used.insert(group) {
                    problem(
                        &key,
                        format!("hostgroup {group} is used twice on this ProxySQL: each cluster needs its own"),
                    );
                }
            }
        }
        proxysql.push(ProxySqlSettings {
            host,
            port,
            user: entry.user.clone(),
            password,
            timeout: entry.timeout.0,
            check_interval: entry.check_interval.0,
            hostgroups: entry.hostgroups.clone(),
        });
    }
    RoutingSettings {
        policy: RoutePolicy {
            max_reader_lag: routing.max_reader_lag.0,
            primary_serves_reads: routing.primary_serves_reads,
        },
        reconcile_interval: routing.reconcile_interval.0,
        apply_timeout: routing.apply_timeout.0,
        dns,
        consul,
        proxysql,
    }
}

/// The key to look a value's origin up by: array entries by their table name.
fn section_key<'a>(key: &'a str, section: &'a str) -> &'a str {
    if key.contains('[') {
        section
    } else {
        key
    }
}

/// Where the value of `key` came from: the file, the variable, or the defaults.
fn origin_of(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key) {
        Some(metadata) => match &metadata.source {
            Some(Source::File(path)) => path.display().to_string(),
            _ if metadata.name.contains("environment") => format!(
                "environment variable POINTSMAN_{}",
                key.replace('.', "__").to_uppercase()
            ),
            _ => metadata.name.to_string(),
        },
        None => "built-in default".to_string(),
    }
}

/// A password from wherever it was configured (at most one of the three keys), or the
/// key and what is wrong.
fn resolve_secret(
    keys: [&'static str; 3],
    value: &Option<Secret>,
    variable: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Secret, (&'static str, String)> {
    match (value, variable, file) {
        (None, None, None) => Ok(Secret::default()),
        (Some(password), None, None) => Ok(password.clone()),
        (None, Some(variable), None) => std::env::var(variable).map(Secret).map_err(|_| {
            (
                keys[1],
                format!("environment variable {variable} is not set"),
            )
        }),
        (None, None, Some(path)) => std::fs::read_to_string(path)
            .map(|text| Secret(text.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|e| (keys[2], format!("cannot read {}: {e}", path.display()))),
        _ => Err((
            keys[0],
            format!(
                "set only one of {}, {} and {}",
                short(keys[0]),
                short(keys[1]),
                short(keys[2])
            ),
        )),
    }
}

fn short(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// The range of every timeout and interval: none may be zero (nothing would wait, or a
/// timer would spin), and none may be so long that a clock overflows adding it.
const TIMEOUT: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(3600);
/// A ProxySQL runtime check: more often than every 50 ms would only load its admin
/// interface; less often than hourly would not be a check.
const CHECK_INTERVAL: RangeInclusive<Duration> =
    Duration::from_millis(50)..=Duration::from_secs(3600);
/// Lag limits: lag is counted in whole seconds, so under 1s every replica would count
/// as lagging.
const LAG: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(7 * 86_400);
const BLOCK_PERIOD: RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(30 * 86_400);
/// MySQL and MariaDB take 0.001 to 4294967 seconds; past a minute a cut-off primary
/// would be noticed only after minutes of silence.
const HEARTBEAT_PERIOD: RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(60);
/// A day to ten years (as `humantime` counts years: 365.25 days, so the bound reads
/// "10years").
const KEEP_AUDIT: RangeInclusive<Duration> =
    Duration::from_secs(86_400)..=Duration::from_secs(10 * 31_557_600);
/// RFC 2181 §8 allows up to 2^31-1 seconds; a name that moves at a failover must not be
/// cached for longer than a day, and a TTL is whole seconds.
const DNS_TTL: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(86_400);
/// Consul's own minimum for `deregister_critical_after` is a minute.
const DEREGISTER_AFTER: RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(30 * 86_400);
const CONSUL_CHECK_TTL_MAX: Duration = Duration::from_secs(86_400);

/// What is wrong with a duration outside `range`, saying the range and `what` the key
/// does; `None` inside it.
fn outside(value: HumanDuration, range: RangeInclusive<Duration>, what: &str) -> Option<String> {
    (!range.contains(&value.0)).then(|| {
        format!(
            "{value} is outside {}..{}: {what}",
            HumanDuration(*range.start()),
            HumanDuration(*range.end())
        )
    })
}

fn compile_patterns(
    key: &str,
    patterns: &[String],
    problem: &mut dyn FnMut(&str, String),
) -> Vec<regex::Regex> {
    patterns
        .iter()
        .enumerate()
        .filter_map(|(index, pattern)| match regex::Regex::new(pattern) {
            Ok(regex) => Some(regex),
            Err(error) => {
                problem(
                    key,
                    format!("entry {index} \"{pattern}\" is not a valid regex: {error}"),
                );
                None
            }
        })
        .collect()
}

/// One figment error as a line: where the value came from, the key, what is wrong.
fn describe(error: figment::Error) -> String {
    // `cluster[0].instances`, as the checks after parsing name array entries.
    let key = error.path.iter().fold(String::new(), |key, segment| {
        match (key.is_empty(), segment.parse::<usize>()) {
            (false, Ok(index)) => format!("{key}[{index}]"),
            (true, _) => segment.clone(),
            (false, Err(_)) => format!("{key}.{segment}"),
        }
    });
    let origin = match error.metadata.as_ref() {
        Some(metadata) => match &metadata.source {
            Some(Source::File(path)) => path.display().to_string(),
            _ if metadata.name.contains("environment") => {
                format!(
                    "environment variable POINTSMAN_{}",
                    error.path.join("__").to_uppercase()
                )
            }
            _ => metadata.name.to_string(),
        },
        None => "configuration".to_string(),
    };
    let what = match &error.kind {
        figment::error::Kind::UnknownField(field, _) => {
            format!("unknown key \"{field}\" (see config/pointsman.example.toml for every key)")
        }
        kind => kind.to_string(),
    };
    if key.is_empty() {
        format!("{origin}: {what}")
    } else {
        format!("{origin}: {key}: {what}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        file
    }

    fn load(text: &str) -> Result<Settings, ConfigError> {
        let f = file(text);
        Config::load(Some(f.path()))
    }

    #[test]
    fn cluster_instances_are_seeds_too() {
        let settings = load(
            "[discovery]\nseeds = [\"db1:3306\"]\n\n[[cluster]]\nalias = \"orders\"\ninstances = [\"db1:3306\", \"db2:3306\"]\n",
        )
        .expect("valid");
        assert_eq!(
            settings.seeds(),
            vec![InstanceKey::new("db1", 3306), InstanceKey::new("db2", 3306)]
        );
    }

    #[test]
    fn defaults_apply_when_the_file_is_empty() {
        let settings = load("").expect("valid");
        assert_eq!(
            settings.config.discovery.poll_interval.0,
            Duration::from_secs(1)
        );
        assert_eq!(settings.config.mysql.user, "pointsman");
        assert_eq!(settings.api_listen.to_string(), "127.0.0.1:3000");
    }

    #[test]
    fn a_bad_duration_names_the_file_the_key_and_the_value() {
        let f = file("[discovery]\npoll_interval = \"fast\"\n");
        let err = Config::load(Some(f.path()))
            .expect_err("bad duration")
            .to_string();
        assert!(err.contains(&f.path().display().to_string()), "{err}");
        assert!(
            err.contains("discovery.poll_interval: expected a duration like \"1s\", got \"fast\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = load("[discovery]\npoll_intervall = \"1s\"\n")
            .expect_err("typo")
            .to_string();
        assert!(err.contains("unknown key \"poll_intervall\""), "{err}");
        let err = load("[discovry]\n").expect_err("typo").to_string();
        assert!(err.contains("unknown key \"discovry\""), "{err}");
    }

    #[test]
    fn passwords_come_from_one_place_and_never_print() {
        let mut secret = tempfile::NamedTempFile::new().expect("temp");
        writeln!(secret, "s3cret-from-file").expect("write");
        let settings = load(&format!(
            "[mysql]\npassword_file = \"{}\"\n",
            secret.path().display()
        ))
        .expect("valid");
        assert_eq!(settings.mysql_password.expose(), "s3cret-from-file");
        assert!(!format!("{settings:?}").contains("s3cret"));

        let err = load("[mysql]\npassword = \"a\"\npassword_file = \"/x\"\n")
            .expect_err("two sources")
            .to_string();
        assert!(
            err.contains("mysql.password: set only one of password"),
            "{err}"
        );
        let err = load("[mysql]\npassword_env = \"POINTSMAN_TEST_SURELY_UNSET\"\n")
            .expect_err("unset")
            .to_string();
        assert!(
            err.contains("POINTSMAN_TEST_SURELY_UNSET is not set"),
            "{err}"
        );
    }

    #[test]
    fn bad_seeds_listen_addresses_and_aliases_are_named() {
        let err = load("[discovery]\nseeds = [\"db1:http\"]\n")
            .expect_err("bad seed")
            .to_string();
        assert!(err.contains("discovery.seeds"), "{err}");
        assert!(err.contains("port \"http\""), "{err}");
        let err = load("[api]\nlisten = \"localhost\"\n")
            .expect_err("bad listen")
            .to_string();
        assert!(err.contains("api.listen"), "{err}");
        let err = load("[[cluster]]\nalias = \"a b\"\ninstances = []\n")
            .expect_err("bad alias")
            .to_string();
        assert!(err.contains("cluster[0].alias"), "{err}");
        assert!(err.contains("cluster[0].instances"), "{err}");
        for (seed, expected) in [
            ("db1", "give the port, like \"db1:3306\""),
            ("db 1:3306", "is not a host name or an IP address"),
            ("'db1':3306", "is not a host name or an IP address"),
            ("../db1:3306", "is not a host name or an IP address"),
        ] {
            let err = load(&format!("[discovery]\nseeds = [\"{seed}\"]\n"))
                .expect_err("bad seed")
                .to_string();
            assert!(err.contains("discovery.seeds"), "{seed}: {err}");
            assert!(err.contains(expected), "{seed}: {err}");
        }
        let err = load("[[cluster]]\nalias = \"a\"\ninstances = [\"db1\"]\n")
            .expect_err("no port")
            .to_string();
        assert!(err.contains("cluster[0].instances"), "{err}");
        let err = load(
            "[[cluster]]\nalias = \"a\"\ninstances = [\"db1:3306\"]\n\n\
             [[cluster]]\nalias = \"b\"\ninstances = [\"db2:3306\", \"db1:3306\"]\n",
        )
        .expect_err("one instance, two aliases")
        .to_string();
        assert!(
            err.contains("cluster[1].instances: db1:3306 is listed under the alias \"a\" too"),
            "{err}"
        );
    }

    #[test]
    fn a_store_path_run_could_not_open_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = load(&format!("[store]\npath = \"{}\"\n", dir.path().display()))
            .expect_err("a directory")
            .to_string();
        assert!(err.contains("store.path: "), "{err}");
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_file_they_come_from() {
        let f = file("[api]\nlisten = \"everywhere\"\n");
        let err = Config::load(Some(f.path())).expect_err("bad").to_string();
        assert!(
            err.starts_with(&format!(
                "{}: api.listen: expected an address",
                f.path().display()
            )),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_is_reported_by_name() {
        let err = Config::load(Some(Path::new("/nonexistent/pointsman.toml")))
            .expect_err("missing")
            .to_string();
        assert!(err.contains("/nonexistent/pointsman.toml: configuration file not found"));
    }

    #[test]
    fn an_empty_api_token_is_refused_by_its_key_and_blanks_around_one_are_dropped() {
        let err = load("[api]\ntoken = \"  \"\n")
            .expect_err("empty")
            .to_string();
        assert!(err.contains("api.token: the token is empty"), "{err}");
        let blank = file(" \n\n");
        let err = load(&format!(
            "[api]\ntoken_file = \"{}\"\n",
            blank.path().display()
        ))
        .expect_err("blank file")
        .to_string();
        assert!(
            err.contains(&format!(
                "api.token_file: {} is empty",
                blank.path().display()
            )),
            "{err}"
        );
        let padded = file("  s3cret-token \n");
        let settings = load(&format!(
            "[api]\ntoken_file = \"{}\"\n",
            padded.path().display()
        ))
        .expect("valid");
        assert_eq!(
            settings.api_token.as_ref().map(Secret::expose),
            Some("s3cret-token")
        );
    }

    #[test]
    fn an_api_other_machines_reach_needs_a_token_or_allow_open() {
        let err = load("[api]\nlisten = \"0.0.0.0:3000\"\n")
            .expect_err("open")
            .to_string();
        assert!(
            err.contains("api.listen: 0.0.0.0:3000 is reachable from other machines"),
            "{err}"
        );
        assert!(err.contains("api.allow_open"), "{err}");
        load("[api]\nlisten = \"0.0.0.0:3000\"\nallow_open = true\n").expect("allowed");
        load("[api]\nlisten = \"0.0.0.0:3000\"\ntoken = \"t\"\n").expect("a token");
        load("[api]\nlisten = \"[::1]:3000\"\n").expect("loopback");
    }

    #[test]
    fn a_secret_that_is_not_text_is_refused_without_being_shown() {
        for value in ["12345", "true", "1.5"] {
            let err = load(&format!("[mysql]\npassword = {value}\n"))
                .expect_err("not text")
                .to_string();
            assert!(err.contains("mysql.password: a secret is text"), "{err}");
            assert!(!err.contains(value), "{err}");
        }
    }

    #[test]
    fn origins_and_hosts_to_allow_are_checked() {
        let err = load(
            "[api]\nallowed_origins = [\"ops.example\"]\nallowed_hosts = [\"ops.example:80\"]\n",
        )
        .expect_err("not an origin")
        .to_string();
        assert!(err.contains("api.allowed_origins[0]"), "{err}");
        assert!(err.contains("api.allowed_hosts[0]"), "{err}");
    }

    /// `[a.b]\nc = "value"` for the key `a.b.c`.
    fn setting(key: &str, value: &str) -> String {
        let (section, name) = key.rsplit_once('.').expect("a dotted key");
        format!("[{section}]\n{name} = {value}\n")
    }

    #[test]
    fn every_duration_is_refused_outside_its_range_naming_the_key() {
        let consul = "[routing.consul]\naddress = \"http://127.0.0.1:8500\"\n";
        for key in [
            "mysql.connect_timeout",
            "mysql.query_timeout",
            "discovery.poll_interval",
            "analysis.lag_warning",
            "api.stalled_client_timeout",
            "recovery.block_period",
            "recovery.apply_timeout",
            "recovery.verify_timeout",
            "recovery.heartbeat_period",
            "promotion.max_lag",
            "hooks.timeout",
            "store.keep_audit",
            "routing.max_reader_lag",
            "routing.reconcile_interval",
            "routing.apply_timeout",
            "routing.dns.ttl",
            "routing.consul.timeout",
            "routing.consul.deregister_critical_after",
        ] {
            // The longest duration humantime reads, which overflowed clocks, and zero.
            for value in ["\"584542046090y\"", "\"0s\""] {
                let text = match key.strip_prefix("routing.consul.") {
                    Some(name) => format!("{consul}{name} = {value}\n"),
                    None => format!("{}{consul}", setting(key, value)),
                };
                let err = load(&text).expect_err("out of range").to_string();
                assert!(err.contains(&format!("{key}: ")), "{key} = {value}: {err}");
                assert!(err.contains("is outside"), "{key} = {value}: {err}");
            }
        }
        let err = load(&format!(
            "{}{consul}check_ttl = \"2days\"\n",
            setting("routing.reconcile_interval", "\"1s\"")
        ))
        .expect_err("too long")
        .to_string();
        assert!(
            err.contains("routing.consul.check_ttl: 2days is over 1day"),
            "{err}"
        );
        let err = load("[store]\nkeep_recoveries = 0\n")
            .expect_err("none kept")
            .to_string();
        assert!(err.contains("store.keep_recoveries: 0 is outside"), "{err}");
        let err = load("[recovery]\nsilent_heartbeats = 4000000000\n")
            .expect_err("too many")
            .to_string();
        assert!(err.contains("recovery.silent_heartbeats"), "{err}");
        let settings =
            load("[routing.dns]\nttl = \"1day\"\n[recovery]\nblock_period = \"30days\"\n")
                .expect("the bounds themselves are valid");
        assert_eq!(
            settings.config.recovery.block_period.0,
            Duration::from_secs(30 * 86_400)
        );
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pointsman.example.toml");
        Config::load(Some(&example)).expect("example is valid");
    }
}
