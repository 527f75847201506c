//! The Consul backend: makes Consul say what the routes say, through a small typed
//! client of its HTTP API (KV, `/v1/txn`, the agent's services and TTL checks).
//!
//! Per routed cluster it keeps:
//! - orchestrator's keys, so existing consul-template setups keep working:
//!   `<kv_prefix>/<cluster>` = `host:port` of the primary, and `/hostname`, `/port`,
//!   `/ipv4`, `/ipv6` below it. As orchestrator does, a missing address family is
//!   written as an empty value (orchestrator's `extractIPs` leaves the string empty and
//!   `GetClusterMasterKVPairs` still writes the pair). While a failover has withdrawn
//!   the primary the five keys are deleted: no stale primary is ever named.
//! - its own key, `<routes_prefix>/<cluster>`: JSON with the primary, the readers and
//!   the epoch of the decision, so an older agent never overwrites a newer decision.
//! - with `services`, one agent service per primary and reader, tagged, with a TTL
//!   check pointsman passes at every reconcile.
//!
//! All keys of a cluster change in one `/v1/txn` guarded by a compare-and-set on
//! pointsman's own key: readers never see half a change, and two agents writing at
//! once cannot interleave. Everything is read before it is written and nothing is
//! written when Consul already agrees.
//!
//! Services go to the agent at `address` as external services (Address = the
//! database's first resolved address, else its host name); `datacenter` applies to KV
//! and `/v1/txn` only, agent endpoints being local. Service names and IDs are made DNS
//! labels (`mysql-demo-127-0-0-1-3307`). Only clusters in the routes are touched: the
//! services of a cluster that left them stay until their TTL check lapses.
//!
//! When one cluster fails (a refused decision, a lost race twice), the others are still
//! reconciled and the errors are returned together; when Consul itself does not answer
//! the reconcile stops at once.
//!
//! What a route calls for and what must change (`orchestrator_keys`, `plan_kv`,
//! `wanted_services`, `plan_services`) is pure and tested here; the HTTP client is
//! `consul_http::Http`, shared with the leader lease, and this module adds only its own
//! requests (the routes transaction, the agent's listings). This module must not decide
//! routes (that is `desired` and the engine), and the token never reaches a log line or
//! an error.

use super::consul_http::{go_duration, ConsulError, Http};
use super::{Change, ClusterRoute, Endpoint, Inspection, RouteError, Router, Routes};
use crate::config::{ConsulConfig, ConsulSettings};
use base64::Engine as _;
use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

/// Service meta that marks a service as pointsman's, and of which cluster.
const META_CLUSTER: &str = "pointsman-cluster";
/// `primary`, `replica`, or `primary,replica`.
const META_ROLE: &str = "pointsman-role";
/// The keys orchestrator writes below `<kv_prefix>/<cluster>`, in its order.
const ORCHESTRATOR_SUFFIXES: [&str; 4] = ["hostname", "port", "ipv4", "ipv6"];

pub use super::consul_http::install_crypto_provider;

/// The Consul routing backend.
pub struct ConsulRouter {
    http: Http,
    config: ConsulConfig,
    /// Who writes pointsman's key: `pointsman 0.1.0 on db-admin-1 (pid 4242)`.
    written_by: String,
}

impl ConsulRouter {
    /// Builds the client; no request is made yet. Fails when the address or the TLS
    /// files cannot be used (they were checked at start-up, but may have changed).
    pub fn new(settings: &ConsulSettings) -> Result<ConsulRouter, RouteError> {
        let config = settings.config.clone();
        let address = config.address.clone().ok_or_else(|| {
            RouteError("consul: routing.consul.address is not set, so Consul cannot be used".into())
        })?;
        let http = Http::new(&address, settings, acl_needs(&config)).map_err(RouteError)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "an unknown host".into());
        let written_by = format!(
            "pointsman {} on {host} (pid {})",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        );
        Ok(ConsulRouter {
            http,
            config,
            written_by,
        })
    }

    fn names(&self, cluster: &str) -> KvNames {
        KvNames::new(&self.config, cluster)
    }

    /// Reads the five orchestrator keys and pointsman's key of one cluster.
    async fn read_kv(&self, names: &KvNames) -> Result<KvState, ConsulError> {
        let (orchestrator, ours) = tokio::try_join!(
            self.http.kv_get(&names.primary, true),
            self.http.kv_get(&names.ours, false),
        )?;
        let wanted: BTreeSet<String> = names.orchestrator().into_iter().collect();
        let values = orchestrator
            .into_iter()
            .filter(|entry| wanted.contains(&entry.key))
            .map(|entry| {
                let value = entry.text();
                (entry.key, value)
            })
            .collect();
        let ours = ours
            .into_iter()
            .find(|entry| entry.key == names.ours)
            .map(|entry| {
                let text = entry.text();
                match serde_json::from_str::<RouteRecord>(&text) {
                    Ok(record) => Stored::Valid {
                        record,
                        index: entry.modify_index,
                    },
                    Err(error) => Stored::Unreadable {
                        reason: error.to_string(),
                        index: entry.modify_index,
                    },
                }
            });
        Ok(KvState { values, ours })
    }

    /// Brings one cluster's keys in line: read, plan, one guarded transaction; a
    /// write that lost the race is re-read and tried once more.
    async fn reconcile_kv(&self, route: &ClusterRoute) -> Result<Vec<String>, RoutesError> {
        let names = self.names(&route.cluster);
        let mut lost_race = false;
        loop {
            let state = self.read_kv(&names).await?;
            let plan = plan_kv(&names, route, &state, &self.written_by)
                .map_err(|refusal| (*refusal).into_error(self.http.address()))?;
            if plan.ops.is_empty() {
                return Ok(Vec::new());
            }
            match self.http.txn(&plan.ops, &route.cluster).await? {
                TxnOutcome::Applied => return Ok(plan.changes),
                TxnOutcome::RolledBack(what) if lost_race => {
                    return Err(RoutesError::Conflict {
                        address: self.http.address().to_string(),
                        key: names.ours.clone(),
                        what,
                    })
                }
                TxnOutcome::RolledBack(what) => {
                    lost_race = true;
                    tracing::info!(
                        backend = %self.name(),
                        cluster = %route.cluster,
                        key = %names.ours,
                        %what,
                        "the routes key changed while pointsman wrote it; reading it again"
                    );
                }
            }
        }
    }

    /// Brings one cluster's services in line with `current` (the agent's services) and
    /// passes every wanted service's TTL check.
    async fn reconcile_services(
        &self,
        route: &ClusterRoute,
        current: &[AgentService],
    ) -> Result<Vec<String>, ConsulError> {
        let wanted = wanted_services(&self.config, route);
        let plan = plan_services(&route.cluster, &wanted, current);
        let mut changes = Vec::new();
        // Deregister first: for a moment no primary beats two primaries.
        for old in &plan.deregister {
            self.http.deregister(old).await?;
            changes.push(format!(
                "service {} deregistered (was {} {})",
                old.id,
                host_port(&old.address, old.port),
                tag_list(&old.tags)
            ));
        }
        for (service, old) in &plan.register {
            self.http.register(&self.config, service).await?;
            changes.push(match old {
                None => format!(
                    "service {} registered {}",
                    service.id,
                    tag_list(&service.tags)
                ),
                Some(old) => format!(
                    "service {} updated to {} {} (was {} {})",
                    service.id,
                    host_port(&service.address, service.port),
                    tag_list(&service.tags),
                    host_port(&old.address, old.port),
                    tag_list(&old.tags)
                ),
            });
        }
        for service in &wanted {
            self.http.pass(service).await?;
        }
        Ok(changes)
    }

    async fn reconcile_all(&self, routes: &Routes) -> Result<Vec<Change>, RouteError> {
        let mut changes = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut written = Vec::new();
        for (cluster, route) in &routes.clusters {
            match self.reconcile_kv(route).await {
                Ok(made) => {
                    changes.extend(made.into_iter().map(|what| change(cluster, what)));
                    written.push(route);
                }
                // Consul itself is not answering: the other clusters would fail alike.
                Err(error) if error.is_fatal() => return Err(self.fail(changes, error)),
                Err(error) => failures.push(error.to_string()),
            }
        }
        // An agent whose decision was refused registers nothing either: its services
        // would name the primary it was refused for.
        if self.config.services && !written.is_empty() {
            let current = match self.http.agent_services().await {
                Ok(current) => current,
                Err(error) => return Err(self.fail(changes, error)),
            };
            for route in written {
                match self.reconcile_services(route, &current).await {
                    Ok(made) => {
                        changes.extend(made.into_iter().map(|what| change(&route.cluster, what)))
                    }
                    Err(error) if error.is_fatal() => return Err(self.fail(changes, error)),
                    Err(error) => failures.push(error.to_string()),
                }
            }
        }
        if failures.is_empty() {
            Ok(changes)
        } else {
            Err(self.fail_with(changes, failures.join("; ")))
        }
    }

    fn fail(&self, made: Vec<Change>, error: impl fmt::Display) -> RouteError {
        self.fail_with(made, error.to_string())
    }

    /// The `Router` trait has no way to return changes together with an error: the
    /// changes that were made are logged here so they are not lost; the engine
    /// retries and audits the rest.
    fn fail_with(&self, made: Vec<Change>, message: String) -> RouteError {
        for change in made {
            tracing::info!(backend = %self.name(), cluster = %change.cluster, "{}", change.what);
        }
        RouteError(message)
    }

    async fn inspect_all(&self, routes: &Routes) -> Result<Vec<Inspection>, RouteError> {
        let (current, checks) = if self.config.services {
            let current = self.http.agent_services().await.map_err(to_route_error)?;
            let checks = self.http.agent_checks().await.map_err(to_route_error)?;
            (current, checks)
        } else {
            (Vec::new(), None)
        };
        let mut inspections = Vec::new();
        for (cluster, route) in &routes.clusters {
            let names = self.names(cluster);
            let state = self.read_kv(&names).await.map_err(to_route_error)?;
            let (record, kv_in_sync) = match plan_kv(&names, route, &state, &self.written_by) {
                Ok(plan) => (plan.record, plan.ops.is_empty()),
                Err(refusal) => (refusal.ours, false),
            };
            let mut should = kv_lines(&names, route.writer.as_ref(), &record);
            let mut now = state.lines(&names);
            let mut services_in_sync = true;
            if self.config.services {
                let wanted = wanted_services(&self.config, route);
                let plan = plan_services(cluster, &wanted, &current);
                services_in_sync = plan.deregister.is_empty() && plan.register.is_empty();
                should.extend(
                    wanted.iter().map(|s| {
                        service_line(&s.name, &s.address, s.port, &s.tags, Some("passing"))
                    }),
                );
                let mut mine: Vec<&AgentService> = current
                    .iter()
                    .filter(|s| s.cluster() == Some(cluster))
                    .collect();
                mine.sort_by(|a, b| a.id.cmp(&b.id));
                now.extend(mine.into_iter().map(|s| {
                    let status = match &checks {
                        Some(checks) => Some(
                            checks
                                .get(&check_id(&s.id))
                                .map(String::as_str)
                                .unwrap_or("without a check"),
                        ),
                        None => None,
                    };
                    service_line(&s.service, &s.address, s.port, &s.tags, status)
                }));
                if checks.is_none() {
                    // The agent did not say how the checks are: compare without them.
                    for line in should.iter_mut() {
                        if let Some(stripped) = line.strip_suffix(" passing") {
                            *line = stripped.to_string();
                        }
                    }
                }
            }
            let in_sync = kv_in_sync && services_in_sync && should == now;
            inspections.push(Inspection {
                cluster: cluster.clone(),
                should,
                now,
                in_sync,
            });
        }
        Ok(inspections)
    }
}

impl ConsulRouter {
    /// The routes the leader recorded under `routes_prefix`, every cluster's, with the
    /// index of the answer; with `block` = (index, wait), a blocking read that answers
    /// when they change past `index` or when `wait` runs out. A record that is not
    /// pointsman's JSON is left out.
    pub async fn recorded_routes(
        &self,
        block: Option<(u64, std::time::Duration)>,
    ) -> Result<(u64, BTreeMap<String, ClusterRoute>), String> {
        let http = match block {
            Some((_, wait)) => self.http.with_timeout(
                wait + wait / 16 + self.http.timeout(),
                "the blocking read's wait, its jitter and routing.consul.timeout",
            ),
            None => self.http.clone(),
        };
        let prefix = format!("{}/", self.config.routes_prefix.trim_end_matches('/'));
        let (index, entries) = http
            .kv_list_since(&prefix, block)
            .await
            .map_err(|e| e.to_string())?;
        let routes = entries
            .iter()
            .filter_map(|entry| serde_json::from_str::<RouteRecord>(&entry.text()).ok())
            .filter_map(|record| record.to_route())
            .map(|route| (route.cluster.clone(), route))
            .collect();
        Ok((index, routes))
    }
}

impl Router for ConsulRouter {
    fn name(&self) -> String {
        format!("consul {}", self.http.address())
    }

    fn reconcile<'a>(
        &'a self,
        routes: &'a Routes,
    ) -> BoxFuture<'a, Result<Vec<Change>, RouteError>> {
        Box::pin(self.reconcile_all(routes))
    }

    fn inspect<'a>(
        &'a self,
        routes: &'a Routes,
    ) -> BoxFuture<'a, Result<Vec<Inspection>, RouteError>> {
        Box::pin(self.inspect_all(routes))
    }
}

fn change(cluster: &str, what: String) -> Change {
    Change {
        cluster: cluster.to_string(),
        what,
    }
}

fn to_route_error(error: ConsulError) -> RouteError {
    RouteError(error.to_string())
}

// ---------------------------------------------------------------------------------
// The pure part: what a route calls for, and what has to change.
// ---------------------------------------------------------------------------------

/// The keys of one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KvNames {
    /// `<kv_prefix>/<cluster>`, orchestrator's main key.
    primary: String,
    /// `<routes_prefix>/<cluster>`, pointsman's own.
    ours: String,
}

impl KvNames {
    fn new(config: &ConsulConfig, cluster: &str) -> KvNames {
        KvNames {
            primary: format!("{}/{cluster}", config.kv_prefix.trim_end_matches('/')),
            ours: format!("{}/{cluster}", config.routes_prefix.trim_end_matches('/')),
        }
    }

    /// The five orchestrator keys, the main key first.
    fn orchestrator(&self) -> Vec<String> {
        std::iter::once(self.primary.clone())
            .chain(
                ORCHESTRATOR_SUFFIXES
                    .iter()
                    .map(|suffix| format!("{}/{suffix}", self.primary)),
            )
            .collect()
    }
}

/// orchestrator's keys for a cluster's writer, in orchestrator's order; `None` means
/// the key must not exist (no writer). Values are orchestrator's: `host:port` as its
/// `StringCode` writes it (no brackets), and an empty string for a missing family.
fn orchestrator_keys(names: &KvNames, writer: Option<&Endpoint>) -> Vec<(String, Option<String>)> {
    let mut keys: Vec<(String, Option<String>)> = names
        .orchestrator()
        .into_iter()
        .map(|key| (key, None))
        .collect();
    if let Some(writer) = writer {
        let ip = |address: Option<IpAddr>| address.map(|a| a.to_string()).unwrap_or_default();
        let values = [
            format!("{}:{}", writer.key.host, writer.key.port),
            writer.key.host.clone(),
            writer.key.port.to_string(),
            ip(writer.ipv4()),
            ip(writer.ipv6()),
        ];
        for ((_, slot), value) in keys.iter_mut().zip(values) {
            *slot = Some(value);
        }
    }
    keys
}

/// pointsman's own key: the decision, for pointsman agents and for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RouteRecord {
    cluster: String,
    /// `host:port`, `null` while no writer is routed.
    primary: Option<String>,
    #[serde(default)]
    primary_addresses: Vec<String>,
    #[serde(default)]
    readers: Vec<String>,
    /// Each reader's addresses, so another agent can answer DNS from this record.
    #[serde(default)]
    reader_addresses: BTreeMap<String, Vec<String>>,
    /// Old primaries fenced by a failover: found here by an agent whose store lost them.
    #[serde(default)]
    fenced: Vec<String>,
    epoch: u64,
    #[serde(default)]
    recovery_id: Option<String>,
    #[serde(default)]
    decided_at: String,
    #[serde(default)]
    written_by: String,
}

impl RouteRecord {
    fn from_route(route: &ClusterRoute, written_by: &str) -> RouteRecord {
        RouteRecord {
            cluster: route.cluster.clone(),
            primary: route.writer.as_ref().map(|w| w.key.to_string()),
            primary_addresses: route
                .writer
                .as_ref()
                .map(|w| w.addresses.iter().map(IpAddr::to_string).collect())
                .unwrap_or_default(),
            readers: route.readers.iter().map(|r| r.key.to_string()).collect(),
            reader_addresses: route
                .readers
                .iter()
                .map(|r| {
                    let addresses = r.addresses.iter().map(IpAddr::to_string).collect();
                    (r.key.to_string(), addresses)
                })
                .collect(),
            fenced: route.fenced.iter().map(|k| k.to_string()).collect(),
            epoch: route.epoch,
            recovery_id: route.recovery_id.clone(),
            decided_at: crate::topology::time::format(route.decided_at),
            written_by: written_by.to_string(),
        }
    }

    /// Equal in everything but when and by whom it was written.
    fn same_decision(&self, other: &RouteRecord) -> bool {
        self.cluster == other.cluster
            && self.primary == other.primary
            && self.primary_addresses == other.primary_addresses
            && self.readers == other.readers
            && self.reader_addresses == other.reader_addresses
            && self.fenced == other.fenced
            && self.epoch == other.epoch
            && self.recovery_id == other.recovery_id
    }

    /// The route this record describes, as another agent reads it; `None` when it names
    /// something that is not an instance or an address (a hand edit).
    fn to_route(&self) -> Option<ClusterRoute> {
        let endpoint = |key: &str, addresses: &[String]| -> Option<Endpoint> {
            Some(Endpoint {
                key: key.parse().ok()?,
                addresses: addresses
                    .iter()
                    .map(|a| a.parse().ok())
                    .collect::<Option<Vec<IpAddr>>>()?,
            })
        };
        let writer = match &self.primary {
            Some(primary) => Some(endpoint(primary, &self.primary_addresses)?),
            None => None,
        };
        let readers = self
            .readers
            .iter()
            .map(|key| {
                endpoint(
                    key,
                    self.reader_addresses.get(key).map_or(&[], Vec::as_slice),
                )
            })
            .collect::<Option<Vec<Endpoint>>>()?;
        let fenced = self
            .fenced
            .iter()
            .map(|key| key.parse().ok())
            .collect::<Option<Vec<_>>>()?;
        Some(ClusterRoute {
            cluster: self.cluster.clone(),
            writer,
            readers,
            standby: Vec::new(),
            fenced,
            epoch: self.epoch,
            recovery_id: self.recovery_id.clone(),
            decided_at: humantime::parse_rfc3339(&self.decided_at).unwrap_or(std::time::UNIX_EPOCH),
        })
    }

    /// `primary 127.0.0.1:3307, epoch 7, readers 127.0.0.1:3308 127.0.0.1:3309`.
    fn summary(&self) -> String {
        let readers = if self.readers.is_empty() {
            "no readers".to_string()
        } else {
            format!("readers {}", self.readers.join(" "))
        };
        format!(
            "primary {}, epoch {}, {readers}",
            self.primary.as_deref().unwrap_or("none"),
            self.epoch
        )
    }
}

/// pointsman's key as read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stored {
    Valid {
        record: RouteRecord,
        index: u64,
    },
    /// Not pointsman's JSON (a hand edit?): overwritten, still under compare-and-set.
    Unreadable {
        reason: String,
        index: u64,
    },
}

/// What Consul holds for one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct KvState {
    /// The orchestrator keys that exist, with their values (`null` read as empty).
    values: BTreeMap<String, String>,
    ours: Option<Stored>,
}

impl KvState {
    fn lines(&self, names: &KvNames) -> Vec<String> {
        let mut lines: Vec<String> = orchestrator_keys(names, None)
            .into_iter()
            .map(|(key, _)| match self.values.get(&key) {
                Some(value) => kv_line(&key, value),
                None => format!("{key}: absent"),
            })
            .collect();
        lines.push(match &self.ours {
            None => format!("{}: absent", names.ours),
            Some(Stored::Valid { record, .. }) => format!("{}: {}", names.ours, record.summary()),
            Some(Stored::Unreadable { reason, .. }) => {
                format!("{}: not pointsman's JSON ({reason})", names.ours)
            }
        });
        lines
    }
}

fn kv_line(key: &str, value: &str) -> String {
    if value.is_empty() {
        format!("{key} = (empty)")
    } else {
        format!("{key} = {value}")
    }
}

/// What the keys should say, in the same words as `KvState::lines`.
fn kv_lines(names: &KvNames, writer: Option<&Endpoint>, record: &RouteRecord) -> Vec<String> {
    let mut lines: Vec<String> = orchestrator_keys(names, writer)
        .into_iter()
        .map(|(key, value)| match value {
            Some(value) => kv_line(&key, &value),
            None => format!("{key}: absent"),
        })
        .collect();
    lines.push(format!("{}: {}", names.ours, record.summary()));
    lines
}

/// One operation of a `/v1/txn` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct TxnOp {
    #[serde(rename = "KV")]
    kv: KvOp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
struct KvOp {
    verb: &'static str,
    key: String,
    /// Base64, as the API wants it.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
}

impl TxnOp {
    fn new(verb: &'static str, key: &str, value: Option<&str>, index: Option<u64>) -> TxnOp {
        TxnOp {
            kv: KvOp {
                verb,
                key: key.to_string(),
                value: value.map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
                index,
            },
        }
    }
}

/// One cluster's write: the guard first, then every key that differs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KvPlan {
    /// What pointsman's key should hold (with a newer epoch kept; see `plan_kv`).
    record: RouteRecord,
    /// Empty when Consul already agrees.
    ops: Vec<TxnOp>,
    /// In the audit's words, one per key written or deleted.
    changes: Vec<String>,
}

/// Why nothing was written: another agent's decision is newer and names another primary.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Refusal {
    key: String,
    theirs: RouteRecord,
    ours: RouteRecord,
}

impl Refusal {
    fn into_error(self, address: &str) -> RoutesError {
        RoutesError::NewerDecision {
            address: address.to_string(),
            refusal: Box::new(self),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let primary = |record: &RouteRecord| {
            record
                .primary
                .clone()
                .unwrap_or_else(|| "no primary".into())
        };
        write!(
            f,
            "{key} names primary {their_primary} at epoch {their_epoch} (written by {their_writer}), \
             newer than this agent's decision (primary {our_primary}, epoch {our_epoch}): another \
             pointsman decided later, so nothing was written for cluster {cluster}. If this agent \
             is right, delete that key (consul kv delete {key}) and it is written at the next \
             reconcile",
            key = self.key,
            their_primary = primary(&self.theirs),
            their_epoch = self.theirs.epoch,
            their_writer = self.theirs.written_by,
            our_primary = primary(&self.ours),
            our_epoch = self.ours.epoch,
            cluster = self.ours.cluster,
        )
    }
}

/// What to write for one cluster, given what Consul holds. The epoch rule: a stored
/// decision with a higher epoch that names another primary wins — nothing is written;
/// one that names the same primary keeps its epoch (and its recovery and time), so
/// the higher epoch is never lowered.
fn plan_kv(
    names: &KvNames,
    route: &ClusterRoute,
    state: &KvState,
    written_by: &str,
) -> Result<KvPlan, Box<Refusal>> {
    let mut record = RouteRecord::from_route(route, written_by);
    let mut changes = Vec::new();
    let mut writes = Vec::new();
    let guard = match &state.ours {
        None => TxnOp::new("check-not-exists", &names.ours, None, None),
        Some(Stored::Valid { index, .. }) | Some(Stored::Unreadable { index, .. }) => {
            TxnOp::new("check-index", &names.ours, None, Some(*index))
        }
    };
    match &state.ours {
        Some(Stored::Valid { record: stored, .. }) => {
            if stored.epoch > record.epoch {
                if stored.primary != record.primary {
                    return Err(Box::new(Refusal {
                        key: names.ours.clone(),
                        theirs: stored.clone(),
                        ours: record,
                    }));
                }
                record.epoch = stored.epoch;
                record.recovery_id = stored.recovery_id.clone();
                record.decided_at = stored.decided_at.clone();
            }
            if !stored.same_decision(&record) {
                changes.push(format!(
                    "{}: {} (was {})",
                    names.ours,
                    record.summary(),
                    stored.summary()
                ));
            }
        }
        Some(Stored::Unreadable { reason, .. }) => changes.push(format!(
            "{}: {} (was not pointsman's JSON: {reason})",
            names.ours,
            record.summary()
        )),
        None => changes.push(format!("{}: {} (was absent)", names.ours, record.summary())),
    }
    if !changes.is_empty() {
        let json = serde_json::to_string(&record).expect("a record of strings and numbers");
        writes.push(TxnOp::new("set", &names.ours, Some(&json), None));
    }
    for (key, wanted) in orchestrator_keys(names, route.writer.as_ref()) {
        let held = state.values.get(&key);
        match (wanted, held) {
            (Some(wanted), Some(held)) if &wanted == held => {}
            (Some(wanted), held) => {
                let was = match held {
                    Some(held) if held.is_empty() => "(empty)".to_string(),
                    Some(held) => held.clone(),
                    None => "absent".to_string(),
                };
                changes.push(format!("{} (was {was})", kv_line(&key, &wanted)));
                writes.push(TxnOp::new("set", &key, Some(&wanted), None));
            }
            (None, Some(held)) => {
                let was = if held.is_empty() { "(empty)" } else { held };
                changes.push(format!("{key} deleted (was {was})"));
                writes.push(TxnOp::new("delete", &key, None, None));
            }
            (None, None) => {}
        }
    }
    let ops = if writes.is_empty() {
        Vec::new()
    } else {
        std::iter::once(guard).chain(writes).collect()
    };
    Ok(KvPlan {
        record,
        ops,
        changes,
    })
}

/// A service a route calls for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct WantedService {
    id: String,
    name: String,
    /// Sorted.
    tags: Vec<String>,
    address: String,
    port: u16,
    cluster: String,
    role: String,
}

/// Letters, digits and '-', so names and IDs are DNS labels Consul serves.
fn dns_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn service_name(config: &ConsulConfig, cluster: &str) -> String {
    dns_safe(&config.service_name.replace("{cluster}", cluster))
}

/// The services a route calls for, sorted by ID: the writer tagged `primary_tag`, each
/// reader `replica_tag`, an instance that is both with both tags.
fn wanted_services(config: &ConsulConfig, route: &ClusterRoute) -> Vec<WantedService> {
    let name = service_name(config, &route.cluster);
    let mut by_key: BTreeMap<String, (WantedService, bool, bool)> = BTreeMap::new();
    let roles = route
        .writer
        .iter()
        .map(|w| (w, true))
        .chain(route.readers.iter().map(|r| (r, false)));
    for (endpoint, primary) in roles {
        let id = dns_safe(&format!(
            "{name}-{}-{}",
            endpoint.key.host, endpoint.key.port
        ));
        let entry = by_key.entry(id.clone()).or_insert_with(|| {
            (
                WantedService {
                    id,
                    name: name.clone(),
                    tags: Vec::new(),
                    address: endpoint
                        .addresses
                        .first()
                        .map(IpAddr::to_string)
                        .unwrap_or_else(|| endpoint.key.host.clone()),
                    port: endpoint.key.port,
                    cluster: route.cluster.clone(),
                    role: String::new(),
                },
                false,
                false,
            )
        });
        if primary {
            entry.1 = true;
        } else {
            entry.2 = true;
        }
    }
    by_key
        .into_values()
        .map(|(mut service, primary, replica)| {
            let mut tags = BTreeSet::new();
            let mut roles = Vec::new();
            if primary {
                tags.insert(config.primary_tag.clone());
                roles.push("primary");
            }
            if replica {
                tags.insert(config.replica_tag.clone());
                roles.push("replica");
            }
            service.tags = tags.into_iter().collect();
            service.role = roles.join(",");
            service
        })
        .collect()
}

/// A service as the agent lists it (`GET /v1/agent/services`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
struct AgentService {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Service", default)]
    service: String,
    #[serde(rename = "Tags", default, deserialize_with = "null_as_default")]
    tags: Vec<String>,
    #[serde(rename = "Meta", default, deserialize_with = "null_as_default")]
    meta: BTreeMap<String, String>,
    #[serde(rename = "Port", default)]
    port: u16,
    #[serde(rename = "Address", default)]
    address: String,
}

impl AgentService {
    fn cluster(&self) -> Option<&str> {
        self.meta.get(META_CLUSTER).map(String::as_str)
    }

    /// Says what `wanted` says (tags compared as a set).
    fn matches(&self, wanted: &WantedService) -> bool {
        let tags: BTreeSet<&String> = self.tags.iter().collect();
        let wanted_tags: BTreeSet<&String> = wanted.tags.iter().collect();
        self.service == wanted.name
            && tags == wanted_tags
            && self.address == wanted.address
            && self.port == wanted.port
            && self.cluster() == Some(wanted.cluster.as_str())
            && self.meta.get(META_ROLE) == Some(&wanted.role)
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// What to do about one cluster's services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServicePlan {
    /// pointsman's services of the cluster that no route calls for (an old primary,
    /// fenced or standby instances).
    deregister: Vec<AgentService>,
    /// Missing or different; the agent's current entry if there is one. Those without
    /// the primary tag come first, so a demoted primary loses it before another gains it.
    register: Vec<(WantedService, Option<AgentService>)>,
}

fn plan_services(cluster: &str, wanted: &[WantedService], current: &[AgentService]) -> ServicePlan {
    let wanted_ids: BTreeSet<&str> = wanted.iter().map(|s| s.id.as_str()).collect();
    let deregister = current
        .iter()
        .filter(|s| s.cluster() == Some(cluster) && !wanted_ids.contains(s.id.as_str()))
        .cloned()
        .collect();
    let mut register: Vec<(WantedService, Option<AgentService>)> = wanted
        .iter()
        .filter_map(|service| {
            let existing = current.iter().find(|s| s.id == service.id);
            match existing {
                Some(existing) if existing.matches(service) => None,
                _ => Some((service.clone(), existing.cloned())),
            }
        })
        .collect();
    register.sort_by_key(|(service, _)| service.role.contains("primary"));
    ServicePlan {
        deregister,
        register,
    }
}

fn check_id(service_id: &str) -> String {
    format!("service:{service_id}")
}

fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

fn tag_list(tags: &[String]) -> String {
    format!("[{}]", tags.join(","))
}

/// `service mysql-demo 127.0.0.1:3307 [primary] passing`.
fn service_line(
    name: &str,
    address: &str,
    port: u16,
    tags: &[String],
    status: Option<&str>,
) -> String {
    let mut sorted = tags.to_vec();
    sorted.sort();
    let mut line = format!(
        "service {name} {} {}",
        host_port(address, port),
        tag_list(&sorted)
    );
    if let Some(status) = status {
        line.push(' ');
        line.push_str(status);
    }
    line
}

// ---------------------------------------------------------------------------------
// The backend's own requests, on the shared client (`consul_http`).
// ---------------------------------------------------------------------------------

/// Why a cluster's routes were not written: Consul failed, or the routes key said no.
#[derive(Debug, thiserror::Error)]
enum RoutesError {
    #[error(transparent)]
    Consul(#[from] ConsulError),
    #[error("Consul at {address}: {key} was changed by someone else twice while pointsman wrote it ({what}); is another pointsman writing the same cluster? retried")]
    Conflict {
        address: String,
        key: String,
        what: String,
    },
    #[error("Consul at {address}: {refusal}")]
    NewerDecision {
        address: String,
        refusal: Box<Refusal>,
    },
}

impl RoutesError {
    /// Consul itself is not answering: trying the next cluster would only wait again.
    fn is_fatal(&self) -> bool {
        matches!(self, RoutesError::Consul(error) if error.is_fatal())
    }
}

/// The ACL rules the backend needs, in Consul's policy words.
fn acl_needs(config: &ConsulConfig) -> String {
    let mut needs = format!(
        "key_prefix \"{}/\" and \"{}/\" write",
        config.kv_prefix, config.routes_prefix
    );
    if config.services {
        let services = match config.service_name.split_once("{cluster}") {
            Some((before, _)) => format!("service_prefix \"{before}\""),
            None => format!("service \"{}\"", config.service_name),
        };
        needs.push_str(&format!(", {services} write"));
    }
    needs
}

#[derive(Debug, Default, Deserialize)]
struct TxnAnswer {
    #[serde(rename = "Errors", default, deserialize_with = "null_as_default")]
    errors: Vec<TxnError>,
}

#[derive(Debug, Deserialize)]
struct TxnError {
    #[serde(rename = "OpIndex", default)]
    op_index: usize,
    #[serde(rename = "What", default)]
    what: String,
}

enum TxnOutcome {
    Applied,
    /// 409: nothing applied; why, in Consul's words.
    RolledBack(String),
}

#[derive(Debug, Deserialize)]
struct AgentCheck {
    #[serde(rename = "Status", default)]
    status: String,
}

/// The backend's own requests (the routes transaction, the agent's listings, its
/// services), beside the backend; the shared client keeps what every user needs.
impl Http {
    async fn txn(&self, ops: &[TxnOp], cluster: &str) -> Result<TxnOutcome, ConsulError> {
        let body = serde_json::to_vec(ops).expect("transaction ops are plain data");
        let keys: BTreeSet<&str> = ops.iter().map(|op| op.kv.key.as_str()).collect();
        let keys: Vec<&str> = keys.into_iter().collect();
        let what = format!("write the routes of cluster {cluster}");
        let acl = format!("key write on {}", keys.join(", "));
        let answer = self
            .call(
                Method::PUT,
                self.url(&["txn"], true),
                Some(body),
                &what,
                &acl,
            )
            .await?;
        match answer.status {
            status if status.is_success() => Ok(TxnOutcome::Applied),
            StatusCode::CONFLICT => {
                let parsed: TxnAnswer = self.decode(&what, &answer.body)?;
                // ACL denials of single ops come back as op errors, not as a 403.
                if let Some(denied) = parsed
                    .errors
                    .iter()
                    .find(|e| e.what.to_ascii_lowercase().contains("permission denied"))
                {
                    return Err(self.denied(&what, &acl, self.scrub(denied.what.clone())));
                }
                let why: Vec<String> = parsed
                    .errors
                    .iter()
                    .map(|e| match ops.get(e.op_index) {
                        Some(op) => format!("{} {}: {}", op.kv.verb, op.kv.key, e.what),
                        None => e.what.clone(),
                    })
                    .collect();
                Ok(TxnOutcome::RolledBack(if why.is_empty() {
                    "rolled back".into()
                } else {
                    self.scrub(why.join("; "))
                }))
            }
            _ => Err(self.unexpected(&what, &answer)),
        }
    }

    /// Every service the agent has (pointsman's are told apart by their meta).
    async fn agent_services(&self) -> Result<Vec<AgentService>, ConsulError> {
        let what = "list the agent's services".to_string();
        let answer = self
            .call(
                Method::GET,
                self.url(&["agent", "services"], false),
                None,
                &what,
                "service read on the services pointsman registers",
            )
            .await?;
        if !answer.status.is_success() {
            return Err(self.unexpected(&what, &answer));
        }
        let services: BTreeMap<String, AgentService> = self.decode(&what, &answer.body)?;
        Ok(services.into_values().collect())
    }

    /// Check ID → status, or `None` when the agent does not list checks.
    async fn agent_checks(&self) -> Result<Option<BTreeMap<String, String>>, ConsulError> {
        let what = "list the agent's checks".to_string();
        let answer = self
            .call(
                Method::GET,
                self.url(&["agent", "checks"], false),
                None,
                &what,
                "service read on the services pointsman registers",
            )
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => {
                let checks: BTreeMap<String, AgentCheck> = self.decode(&what, &answer.body)?;
                Ok(Some(
                    checks.into_iter().map(|(id, c)| (id, c.status)).collect(),
                ))
            }
            _ => Err(self.unexpected(&what, &answer)),
        }
    }

    async fn register(
        &self,
        config: &ConsulConfig,
        service: &WantedService,
    ) -> Result<(), ConsulError> {
        let body = serde_json::json!({
            "ID": service.id,
            "Name": service.name,
            "Tags": service.tags,
            "Address": service.address,
            "Port": service.port,
            "Meta": {
                META_CLUSTER: service.cluster,
                META_ROLE: service.role,
            },
            "Check": {
                "Name": format!("pointsman routes {} here", service.cluster),
                "Notes": "a TTL check pointsman passes at every reconcile; critical when pointsman stopped routing",
                "TTL": go_duration(config.check_ttl.0),
                "DeregisterCriticalServiceAfter": go_duration(config.deregister_critical_after.0),
                "Status": "passing",
            },
        });
        self.register_service(
            &body,
            &service.id,
            &format!("service write on {}", service.name),
        )
        .await
    }

    async fn deregister(&self, service: &AgentService) -> Result<(), ConsulError> {
        self.deregister_service(
            &service.id,
            &format!("service write on {}", service.service),
        )
        .await
    }

    async fn pass(&self, service: &WantedService) -> Result<(), ConsulError> {
        self.pass_check(
            &check_id(&service.id),
            &format!("service write on {}", service.name),
        )
        .await
    }
}

impl fmt::Debug for ConsulRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulRouter")
            .field("address", &self.http.address())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HumanDuration, Secret};
    use crate::topology::InstanceKey;
    use std::time::{Duration, SystemTime};

    fn endpoint(host: &str, port: u16, addresses: &[&str]) -> Endpoint {
        Endpoint {
            key: InstanceKey::new(host, port),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn local(port: u16) -> Endpoint {
        endpoint("127.0.0.1", port, &["127.0.0.1"])
    }

    fn route(writer: Option<Endpoint>, readers: Vec<Endpoint>, epoch: u64) -> ClusterRoute {
        ClusterRoute {
            cluster: "demo".into(),
            writer,
            readers,
            standby: Vec::new(),
            fenced: Vec::new(),
            epoch,
            recovery_id: (epoch > 0).then(|| format!("recovery-{epoch}")),
            decided_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + epoch),
        }
    }

    fn names() -> KvNames {
        KvNames::new(&ConsulConfig::default(), "demo")
    }

    /// What Consul holds after `plan` was applied to `state` (what the txn does).
    fn apply(state: &KvState, plan: &KvPlan, index: u64) -> KvState {
        let mut next = state.clone();
        for op in &plan.ops {
            let value = op.kv.value.as_ref().map(|v| {
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).unwrap())
                    .unwrap()
            });
            match (op.kv.verb, op.kv.key == names().ours) {
                ("set", true) => {
                    next.ours = Some(Stored::Valid {
                        record: serde_json::from_str(&value.unwrap()).unwrap(),
                        index,
                    })
                }
                ("set", false) => {
                    next.values.insert(op.kv.key.clone(), value.unwrap());
                }
                ("delete", _) => {
                    next.values.remove(&op.kv.key);
                }
                _ => {}
            }
        }
        next
    }

    #[test]
    fn orchestrator_keys_follow_orchestrators_layout() {
        let keys = orchestrator_keys(&names(), Some(&local(3307)));
        assert_eq!(
            keys,
            vec![
                ("mysql/master/demo".into(), Some("127.0.0.1:3307".into())),
                (
                    "mysql/master/demo/hostname".into(),
                    Some("127.0.0.1".into())
                ),
                ("mysql/master/demo/port".into(), Some("3307".into())),
                ("mysql/master/demo/ipv4".into(), Some("127.0.0.1".into())),
                ("mysql/master/demo/ipv6".into(), Some(String::new())),
            ]
        );
        let both = endpoint("db1.example", 3306, &["10.0.0.5", "fd00::5", "10.0.0.6"]);
        let keys = orchestrator_keys(&names(), Some(&both));
        assert_eq!(keys[0].1.as_deref(), Some("db1.example:3306"));
        assert_eq!(keys[1].1.as_deref(), Some("db1.example"));
        assert_eq!(
            keys[3].1.as_deref(),
            Some("10.0.0.5"),
            "the first v4 address"
        );
        assert_eq!(keys[4].1.as_deref(), Some("fd00::5"));
        let unresolved = endpoint("db1.example", 3306, &[]);
        let keys = orchestrator_keys(&names(), Some(&unresolved));
        assert_eq!(
            keys[3].1.as_deref(),
            Some(""),
            "orchestrator writes an empty ipv4"
        );
        assert_eq!(keys[4].1.as_deref(), Some(""));
        assert!(orchestrator_keys(&names(), None)
            .iter()
            .all(|(_, value)| value.is_none()));
    }

    #[test]
    fn the_first_write_is_guarded_by_check_not_exists_and_sets_everything() {
        let route = route(Some(local(3306)), vec![local(3307)], 0);
        let plan = plan_kv(&names(), &route, &KvState::default(), "me").unwrap();
        let verbs: Vec<(&str, &str)> = plan
            .ops
            .iter()
            .map(|op| (op.kv.verb, op.kv.key.as_str()))
            .collect();
        assert_eq!(
            verbs,
            vec![
                ("check-not-exists", "pointsman/routes/demo"),
                ("set", "pointsman/routes/demo"),
                ("set", "mysql/master/demo"),
                ("set", "mysql/master/demo/hostname"),
                ("set", "mysql/master/demo/port"),
                ("set", "mysql/master/demo/ipv4"),
                ("set", "mysql/master/demo/ipv6"),
            ]
        );
        assert!(plan
            .changes
            .contains(&"mysql/master/demo = 127.0.0.1:3306 (was absent)".to_string()));
        assert!(plan.changes.contains(
            &"pointsman/routes/demo: primary 127.0.0.1:3306, epoch 0, readers 127.0.0.1:3307 (was absent)"
                .to_string()
        ));
        let json: serde_json::Value = serde_json::from_str(
            &String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(plan.ops[1].kv.value.as_ref().unwrap())
                    .unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(json["cluster"], "demo");
        assert_eq!(json["primary"], "127.0.0.1:3306");
        assert_eq!(json["primary_addresses"], serde_json::json!(["127.0.0.1"]));
        assert_eq!(json["readers"], serde_json::json!(["127.0.0.1:3307"]));
        assert_eq!(json["epoch"], 0);
        assert_eq!(json["recovery_id"], serde_json::Value::Null);
        assert_eq!(json["decided_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(json["written_by"], "me");
    }

    #[test]
    fn a_second_plan_writes_nothing_even_from_another_writer_later() {
        let route = route(Some(local(3306)), vec![local(3307)], 3);
        let first = plan_kv(&names(), &route, &KvState::default(), "agent a").unwrap();
        let state = apply(&KvState::default(), &first, 10);
        let mut later = route.clone();
        later.decided_at += Duration::from_secs(60);
        let second = plan_kv(&names(), &later, &state, "agent b").unwrap();
        assert!(second.ops.is_empty(), "{:?}", second.ops);
        assert!(second.changes.is_empty());
    }

    #[test]
    fn a_failover_moves_every_key_under_a_check_index() {
        let before = route(Some(local(3306)), vec![local(3307)], 1);
        let state = apply(
            &KvState::default(),
            &plan_kv(&names(), &before, &KvState::default(), "me").unwrap(),
            42,
        );
        let after = route(Some(local(3307)), vec![], 2);
        let plan = plan_kv(&names(), &after, &state, "me").unwrap();
        assert_eq!(
            plan.ops[0],
            TxnOp::new("check-index", "pointsman/routes/demo", None, Some(42))
        );
        let keys: Vec<&str> = plan
            .ops
            .iter()
            .skip(1)
            .map(|op| op.kv.key.as_str())
            .collect();
        assert_eq!(
            keys,
            vec![
                "pointsman/routes/demo",
                "mysql/master/demo",
                "mysql/master/demo/port"
            ],
            "hostname, ipv4 and ipv6 did not change"
        );
        assert!(plan
            .changes
            .contains(&"mysql/master/demo = 127.0.0.1:3307 (was 127.0.0.1:3306)".to_string()));
        assert!(plan
            .changes
            .contains(&"mysql/master/demo/port = 3307 (was 3306)".to_string()));
        assert!(plan.changes.contains(
            &"pointsman/routes/demo: primary 127.0.0.1:3307, epoch 2, no readers (was primary 127.0.0.1:3306, epoch 1, readers 127.0.0.1:3307)".to_string()
        ));
    }

    #[test]
    fn a_withdrawn_writer_deletes_the_five_keys() {
        let before = route(Some(local(3306)), vec![local(3307)], 1);
        let state = apply(
            &KvState::default(),
            &plan_kv(&names(), &before, &KvState::default(), "me").unwrap(),
            7,
        );
        let withdrawn = route(None, vec![local(3307)], 2);
        let plan = plan_kv(&names(), &withdrawn, &state, "me").unwrap();
        let deletes: Vec<&str> = plan
            .ops
            .iter()
            .filter(|op| op.kv.verb == "delete")
            .map(|op| op.kv.key.as_str())
            .collect();
        assert_eq!(deletes, names().orchestrator());
        assert!(plan
            .changes
            .contains(&"mysql/master/demo deleted (was 127.0.0.1:3306)".to_string()));
        assert!(plan
            .changes
            .contains(&"mysql/master/demo/ipv6 deleted (was (empty))".to_string()));
        assert_eq!(plan.record.primary, None);
        let state = apply(&state, &plan, 8);
        assert!(state.values.is_empty());
        assert!(plan_kv(&names(), &withdrawn, &state, "me")
            .unwrap()
            .ops
            .is_empty());
    }

    #[test]
    fn an_older_decision_naming_another_primary_is_refused() {
        let newer = route(Some(local(3307)), vec![], 9);
        let state = apply(
            &KvState::default(),
            &plan_kv(&names(), &newer, &KvState::default(), "agent b").unwrap(),
            5,
        );
        let older = route(Some(local(3306)), vec![], 4);
        let refusal = plan_kv(&names(), &older, &state, "agent a").unwrap_err();
        let message = refusal.into_error("http://127.0.0.1:8500").to_string();
        for part in [
            "http://127.0.0.1:8500",
            "pointsman/routes/demo names primary 127.0.0.1:3307 at epoch 9",
            "agent b",
            "primary 127.0.0.1:3306, epoch 4",
            "delete that key",
        ] {
            assert!(message.contains(part), "{part:?} missing from: {message}");
        }
        // Withdrawing the writer is a decision too: an older one is refused as well.
        let older_withdrawal = route(None, vec![], 4);
        assert!(plan_kv(&names(), &older_withdrawal, &state, "agent a").is_err());
    }

    #[test]
    fn a_newer_epoch_for_the_same_primary_is_kept() {
        let newer = route(Some(local(3307)), vec![local(3306)], 9);
        let state = apply(
            &KvState::default(),
            &plan_kv(&names(), &newer, &KvState::default(), "agent b").unwrap(),
            5,
        );
        // This agent just started: it has seen the same primary, at epoch 0.
        let observed = route(Some(local(3307)), vec![local(3306)], 0);
        let plan = plan_kv(&names(), &observed, &state, "agent a").unwrap();
        assert!(plan.ops.is_empty(), "{:?}", plan.changes);
        assert_eq!(plan.record.epoch, 9);
        assert_eq!(plan.record.recovery_id.as_deref(), Some("recovery-9"));
        // A reader it knows about is written, with the higher epoch kept.
        let more = route(Some(local(3307)), vec![local(3306), local(3308)], 0);
        let plan = plan_kv(&names(), &more, &state, "agent a").unwrap();
        assert_eq!(plan.record.epoch, 9);
        assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    }

    #[test]
    fn an_unreadable_key_is_overwritten_under_its_index() {
        let state = KvState {
            values: BTreeMap::new(),
            ours: Some(Stored::Unreadable {
                reason: "expected value".into(),
                index: 3,
            }),
        };
        let plan = plan_kv(&names(), &route(Some(local(3306)), vec![], 1), &state, "me").unwrap();
        assert_eq!(plan.ops[0].kv.verb, "check-index");
        assert_eq!(plan.ops[0].kv.index, Some(3));
        assert!(plan.changes[0].contains("was not pointsman's JSON"));
    }

    #[test]
    fn txn_ops_are_consuls_json() {
        let ops = vec![
            TxnOp::new("check-index", "pointsman/routes/demo", None, Some(12)),
            TxnOp::new("set", "mysql/master/demo", Some("127.0.0.1:3306"), None),
            TxnOp::new("delete", "mysql/master/demo/ipv6", None, None),
        ];
        assert_eq!(
            serde_json::to_value(&ops).unwrap(),
            serde_json::json!([
                {"KV": {"Verb": "check-index", "Key": "pointsman/routes/demo", "Index": 12}},
                {"KV": {"Verb": "set", "Key": "mysql/master/demo", "Value": "MTI3LjAuMC4xOjMzMDY="}},
                {"KV": {"Verb": "delete", "Key": "mysql/master/demo/ipv6"}},
            ])
        );
    }

    #[test]
    fn inspection_lines_of_a_synced_state_equal_what_is_wanted() {
        let route = route(Some(local(3307)), vec![], 4);
        let plan = plan_kv(&names(), &route, &KvState::default(), "me").unwrap();
        let state = apply(&KvState::default(), &plan, 1);
        let should = kv_lines(&names(), route.writer.as_ref(), &plan.record);
        assert_eq!(should, state.lines(&names()));
        assert_eq!(should[0], "mysql/master/demo = 127.0.0.1:3307");
        assert_eq!(should[2], "mysql/master/demo/port = 3307");
        assert_eq!(should[4], "mysql/master/demo/ipv6 = (empty)");
        assert_eq!(
            should[5],
            "pointsman/routes/demo: primary 127.0.0.1:3307, epoch 4, no readers"
        );
        assert_eq!(
            KvState::default().lines(&names())[0],
            "mysql/master/demo: absent"
        );
    }

    fn service(
        id: &str,
        cluster: Option<&str>,
        tags: &[&str],
        role: &str,
        port: u16,
    ) -> AgentService {
        let mut meta = BTreeMap::new();
        if let Some(cluster) = cluster {
            meta.insert(META_CLUSTER.to_string(), cluster.to_string());
            meta.insert(META_ROLE.to_string(), role.to_string());
        }
        AgentService {
            id: id.into(),
            service: "mysql-demo".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            meta,
            port,
            address: "127.0.0.1".into(),
        }
    }

    #[test]
    fn services_are_tagged_by_role_with_safe_ids() {
        let config = ConsulConfig::default();
        let mut route = route(
            Some(local(3306)),
            vec![local(3306), endpoint("db2.example", 3307, &[])],
            0,
        );
        route.cluster = "my_db.eu".into();
        let wanted = wanted_services(&config, &route);
        assert_eq!(wanted.len(), 2);
        assert_eq!(wanted[0].id, "mysql-my-db-eu-127-0-0-1-3306");
        assert_eq!(wanted[0].name, "mysql-my-db-eu");
        assert_eq!(wanted[0].tags, vec!["primary", "replica"]);
        assert_eq!(wanted[0].role, "primary,replica");
        assert_eq!(wanted[0].cluster, "my_db.eu");
        assert_eq!(wanted[1].id, "mysql-my-db-eu-db2-example-3307");
        assert_eq!(
            wanted[1].address, "db2.example",
            "no address: the host name"
        );
        assert_eq!(wanted[1].tags, vec!["replica"]);
    }

    #[test]
    fn a_failover_deregisters_the_old_primary_and_leaves_others_alone() {
        let config = ConsulConfig::default();
        let current = vec![
            service(
                "mysql-demo-127-0-0-1-3306",
                Some("demo"),
                &["primary"],
                "primary",
                3306,
            ),
            service(
                "mysql-demo-127-0-0-1-3307",
                Some("demo"),
                &["replica"],
                "replica",
                3307,
            ),
            service(
                "mysql-other-127-0-0-1-4406",
                Some("other"),
                &["primary"],
                "primary",
                4406,
            ),
            service("web-1", None, &[], "", 80),
        ];
        let after = route(Some(local(3307)), vec![], 2);
        let wanted = wanted_services(&config, &after);
        let plan = plan_services("demo", &wanted, &current);
        let gone: Vec<&str> = plan.deregister.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(gone, vec!["mysql-demo-127-0-0-1-3306"]);
        assert_eq!(plan.register.len(), 1);
        assert_eq!(plan.register[0].0.tags, vec!["primary"]);
        assert_eq!(
            plan.register[0].1.as_ref().map(|s| s.tags.clone()),
            Some(vec!["replica".to_string()])
        );
        // Once the agent says so, nothing is left to do.
        let synced: Vec<AgentService> = vec![
            service(
                "mysql-demo-127-0-0-1-3307",
                Some("demo"),
                &["primary"],
                "primary",
                3307,
            ),
            current[2].clone(),
            current[3].clone(),
        ];
        assert_eq!(
            plan_services("demo", &wanted, &synced),
            ServicePlan::default()
        );
    }

    #[test]
    fn a_demoted_primary_is_updated_before_the_new_one_is_tagged() {
        let config = ConsulConfig::default();
        let route = route(Some(local(3307)), vec![local(3306)], 2);
        let wanted = wanted_services(&config, &route);
        let plan = plan_services("demo", &wanted, &[]);
        let order: Vec<&str> = plan.register.iter().map(|(s, _)| s.role.as_str()).collect();
        assert_eq!(order, vec!["replica", "primary"]);
    }

    fn settings(address: &str, token: Option<&str>) -> ConsulSettings {
        ConsulSettings {
            config: ConsulConfig {
                address: Some(address.into()),
                datacenter: Some("dc 2".into()),
                timeout: HumanDuration(Duration::from_millis(500)),
                ..ConsulConfig::default()
            },
            token: token.map(Secret::new),
        }
    }

    #[test]
    fn urls_carry_the_datacenter_and_escape_segments() {
        let router = ConsulRouter::new(&settings("http://127.0.0.1:8500/", None)).unwrap();
        assert_eq!(router.name(), "consul http://127.0.0.1:8500");
        assert_eq!(
            router.http.url(&["kv", "mysql/master/demo"], true).as_str(),
            "http://127.0.0.1:8500/v1/kv/mysql/master/demo?dc=dc+2"
        );
        assert_eq!(
            router
                .http
                .url(&["agent", "check", "pass", "service:mysql-demo-1"], false)
                .as_str(),
            "http://127.0.0.1:8500/v1/agent/check/pass/service:mysql-demo-1"
        );
    }

    #[test]
    fn bad_addresses_and_tls_files_are_named() {
        let error = ConsulRouter::new(&settings("127.0.0.1:8500", None)).unwrap_err();
        assert!(error.0.contains("routing.consul.address"), "{error}");
        let mut with_ca = settings("https://consul.example:8501", None);
        with_ca.config.ca_file = Some("/nonexistent/ca.pem".into());
        let error = ConsulRouter::new(&with_ca).unwrap_err();
        assert!(
            error
                .0
                .contains("routing.consul.ca_file /nonexistent/ca.pem"),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("ca.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        with_ca.config.ca_file = Some(garbage);
        let error = ConsulRouter::new(&with_ca).unwrap_err();
        assert!(error.0.contains("holds no PEM certificate"), "{error}");
    }

    #[test]
    fn the_token_never_shows() {
        let router =
            ConsulRouter::new(&settings("http://127.0.0.1:8500", Some("s3cr3t-token"))).unwrap();
        assert!(!format!("{router:?}").contains("s3cr3t"));
        assert_eq!(
            router
                .http
                .excerpt(b"ACL not found for token s3cr3t-token\n  please"),
            "ACL not found for token <redacted> please"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_address() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("http://127.0.0.1:{port}");
        let router = ConsulRouter::new(&settings(&address, None)).unwrap();
        let mut routes = Routes::default();
        routes
            .clusters
            .insert("demo".into(), route(Some(local(3306)), vec![], 1));
        let error = router.reconcile(&routes).await.unwrap_err();
        assert!(error.0.contains(&address), "{error}");
        assert!(error.0.contains("cannot be reached"), "{error}");
        assert!(error.0.contains("refused"), "{error}");
    }
}
