//! Part of openark/orchestrator's HTTP API, under `/api/` beside pointsman's own
//! `/api/v1/`, so scripts and `orchestrator-client` written for orchestrator keep
//! working. Every route is a GET, as in orchestrator; answers use orchestrator's JSON
//! names: an `Instance`, a `ClusterInfo`, a `TopologyRecovery`, or the envelope
//! `{"Code": "OK"|"ERROR", "Message", "Details"}` (`ERROR` with HTTP 500, as orchestrator).
//!
//! How it maps:
//! - orchestrator names a cluster after its primary's `host:port` (`ClusterName`); the
//!   name pointsman shows (an alias, or that same `host:port`) is the `ClusterAlias`. A
//!   `clusterHint` is either, or the `host:port` of any instance of the cluster.
//! - Reads (`clusters`, `clusters-info`, `cluster-info`, `master`, `instance`,
//!   `instance-replicas`, `cluster`, `topology`, `check-global-recoveries`,
//!   `audit-recovery`, `leader-check`) are drawn from the same state as `/api/v1`'s.
//! - Actions are sent, translated, through pointsman's own handlers and their middleware
//!   — origin, token, leadership — on `/api/v1` (graceful-master-takeover → switchover,
//!   recover → recover, ack-recovery → ack, the global switch, downtime, discover,
//!   forget), so their rules, refusals and audit are the same as for the CLI's calls.
//! - Any other path under `/api/` is answered 404 with an envelope naming it.
//!
//! Actions change things through GET, which any web page can make a browser send. So
//! every action needs the API token always — `Authorization: Bearer <token>`, or HTTP
//! basic auth with the token as the password (what `orchestrator-client` sends with
//! `ORCHESTRATOR_AUTH_USER`/`ORCHESTRATOR_AUTH_PASSWORD`); without `api.token` they are
//! refused (403). A request a browser marks as sent by another site's page
//! (`Sec-Fetch-Site`) is refused too, and no challenge a browser would remember basic
//! credentials from is ever sent. Reads follow `/api/v1`'s rule (`token_for_reads`).

use super::auth::Access;
use super::origin::OriginRules;
use super::stalled::ClientAddress;
use super::views::{ClusterDetail, InstanceView, Role};
use super::{ApiError, ApiState};
use crate::analysis::FindingCode;
use crate::recovery::orchestrator_hooks::failure_type;
use crate::recovery::switchover::SwitchoverReport;
use crate::store::recovery::{Downtime, RecoveryRecord, RecoveryStatus};
use crate::topology::{ClusterTreeNode, GtidState, InstanceKey, IoThreadState};
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// orchestrator's `AuditPageSize`.
const PAGE: usize = 20;

/// The most recoveries an audit page is looked for in.
const AUDIT_DEPTH: usize = 1000;

/// The largest answer of pointsman's own API read back for translation.
const ANSWER_LIMIT: usize = 16 << 20;

/// The service for `/api/{*rest}`: the translation, in front of pointsman's own
/// handlers for the actions, with the same middleware as in `super::router`.
pub(crate) fn service(state: &ApiState, access: &Access, origins: &OriginRules) -> Router {
    let pointsman = Router::new()
        .route("/api/v1/discover", post(super::discover))
        .route("/api/v1/instances/{key}", delete(super::forget))
        .merge(super::recovery::routes())
        .layer(from_fn_with_state(
            state.clone(),
            super::only_the_leader_changes,
        ))
        .layer(from_fn_with_state(
            access.clone(),
            super::auth::require_token,
        ))
        .layer(from_fn_with_state(
            origins.clone(),
            super::origin::only_from_here,
        ))
        .with_state(state.clone());
    // A fallback service sees the request before it is routed: the translation rewrites
    // it into a call of pointsman's own API, which is then routed as any other.
    Router::new()
        .fallback_service(pointsman)
        .layer(from_fn_with_state(
            Compat {
                state: state.clone(),
                access: access.clone(),
            },
            translate,
        ))
}

#[derive(Clone)]
struct Compat {
    state: ApiState,
    access: Access,
}

/// orchestrator's generic answer.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope<T: Serialize> {
    code: &'static str,
    message: String,
    details: T,
}

fn ok<T: Serialize>(message: impl Into<String>, details: T) -> Response {
    Json(Envelope {
        code: "OK",
        message: message.into(),
        details,
    })
    .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    error_with(status, message, ())
}

fn error_with<T: Serialize>(
    status: StatusCode,
    message: impl Into<String>,
    details: T,
) -> Response {
    let envelope = Envelope {
        code: "ERROR",
        message: message.into(),
        // `()` is JSON null, as orchestrator's empty Details.
        details,
    };
    (status, Json(envelope)).into_response()
}

/// orchestrator's ERROR: HTTP 500 whatever went wrong.
fn failed(message: impl Into<String>) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, message)
}

/// orchestrator's `InstanceKey`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Key {
    hostname: String,
    port: u16,
}

impl From<&InstanceKey> for Key {
    fn from(key: &InstanceKey) -> Key {
        Key {
            hostname: key.host.clone(),
            port: key.port,
        }
    }
}

/// orchestrator's `BinlogCoordinates`; `Type` 0 is a binary log, 1 a relay log.
#[derive(Default, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Coordinates {
    log_file: String,
    log_pos: u64,
    #[serde(rename = "Type")]
    kind: u8,
}

/// Go's `sql.NullInt64`.
#[derive(Default, Serialize)]
#[serde(rename_all = "PascalCase")]
struct NullInt64 {
    int64: i64,
    valid: bool,
}

impl NullInt64 {
    fn of(value: Option<u64>) -> NullInt64 {
        NullInt64 {
            int64: value.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)),
            valid: value.is_some(),
        }
    }
}

/// orchestrator's `Instance`, every one of its 87 keys. What pointsman does not probe
/// keeps Go's zero value (see the README's table).
#[derive(Default, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Instance {
    key: Key,
    instance_alias: String,
    uptime: u64,
    #[serde(rename = "ServerID")]
    server_id: u32,
    #[serde(rename = "ServerUUID")]
    server_uuid: String,
    version: String,
    version_comment: String,
    flavor_name: String,
    read_only: bool,
    #[serde(rename = "Binlog_format")]
    binlog_format: String,
    binlog_row_image: String,
    log_bin_enabled: bool,
    log_slave_updates_enabled: bool,
    log_replication_updates_enabled: bool,
    self_binlog_coordinates: Coordinates,
    master_key: Key,
    #[serde(rename = "MasterUUID")]
    master_uuid: String,
    #[serde(rename = "AncestryUUID")]
    ancestry_uuid: String,
    is_detached_master: bool,
    #[serde(rename = "Slave_SQL_Running")]
    slave_sql_running: bool,
    #[serde(rename = "ReplicationSQLThreadRuning")]
    replication_sql_thread_runing: bool,
    #[serde(rename = "Slave_IO_Running")]
    slave_io_running: bool,
    #[serde(rename = "ReplicationIOThreadRuning")]
    replication_io_thread_runing: bool,
    #[serde(rename = "ReplicationSQLThreadState")]
    replication_sql_thread_state: i8,
    #[serde(rename = "ReplicationIOThreadState")]
    replication_io_thread_state: i8,
    has_replication_filters: bool,
    #[serde(rename = "GTIDMode")]
    gtid_mode: String,
    #[serde(rename = "SupportsOracleGTID")]
    supports_oracle_gtid: bool,
    #[serde(rename = "UsingOracleGTID")]
    using_oracle_gtid: bool,
    #[serde(rename = "UsingMariaDBGTID")]
    using_mariadb_gtid: bool,
    #[serde(rename = "UsingPseudoGTID")]
    using_pseudo_gtid: bool,
    read_binlog_coordinates: Coordinates,
    exec_binlog_coordinates: Coordinates,
    is_detached: bool,
    relaylog_coordinates: Coordinates,
    #[serde(rename = "LastSQLError")]
    last_sql_error: String,
    #[serde(rename = "LastIOError")]
    last_io_error: String,
    seconds_behind_master: NullInt64,
    #[serde(rename = "SQLDelay")]
    sql_delay: u64,
    executed_gtid_set: String,
    gtid_purged: String,
    gtid_errant: String,
    slave_lag_seconds: NullInt64,
    replication_lag_seconds: NullInt64,
    slave_hosts: Vec<Key>,
    replicas: Vec<Key>,
    cluster_name: String,
    suggested_cluster_alias: String,
    data_center: String,
    region: String,
    physical_environment: String,
    replication_depth: usize,
    is_co_master: bool,
    has_replication_credentials: bool,
    replication_credentials_available: bool,
    semi_sync_available: bool,
    semi_sync_priority: u32,
    semi_sync_master_enabled: bool,
    semi_sync_replica_enabled: bool,
    semi_sync_master_timeout: u64,
    semi_sync_master_wait_for_replica_count: u32,
    semi_sync_master_status: bool,
    semi_sync_master_clients: u32,
    semi_sync_replica_status: bool,
    last_seen_timestamp: String,
    is_last_check_valid: bool,
    is_up_to_date: bool,
    is_recently_checked: bool,
    seconds_since_last_seen: NullInt64,
    #[serde(rename = "CountMySQLSnapshots")]
    count_mysql_snapshots: u32,
    is_candidate: bool,
    promotion_rule: String,
    is_downtimed: bool,
    downtime_reason: String,
    downtime_owner: String,
    downtime_end_timestamp: String,
    elapsed_downtime: u64,
    unresolved_hostname: String,
    #[serde(rename = "AllowTLS")]
    allow_tls: bool,
    problems: Vec<String>,
    last_discovery_latency: u64,
    replication_group_name: String,
    replication_group_is_single_primary: bool,
    replication_group_member_state: String,
    replication_group_member_role: String,
    replication_group_members: Vec<Key>,
    replication_group_primary_instance_key: Key,
}

/// orchestrator's `ClusterInfo`.
#[derive(Default, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ClusterInfo {
    cluster_name: String,
    cluster_alias: String,
    cluster_domain: String,
    count_instances: usize,
    heuristic_lag: i64,
    has_automated_master_recovery: bool,
    has_automated_intermediate_master_recovery: bool,
}

/// The part of orchestrator's `ReplicationAnalysis` it fills in a `TopologyRecovery`
/// read back from its database.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AnalysisEntry {
    analyzed_instance_key: Key,
    analyzed_instance_master_key: Key,
    cluster_details: ClusterInfo,
    analysis: String,
    description: String,
    is_master: bool,
    count_replicas: usize,
    replicas: Vec<Key>,
    slave_hosts: Vec<Key>,
    command_hint: String,
}

/// orchestrator's `TopologyRecovery`, from a pointsman recovery record.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TopologyRecovery {
    id: i64,
    #[serde(rename = "UID")]
    uid: String,
    analysis_entry: AnalysisEntry,
    successor_key: Option<Key>,
    successor_alias: String,
    successor_binlog_coordinates: Option<Coordinates>,
    is_active: bool,
    is_successful: bool,
    lost_replicas: Vec<Key>,
    participating_instance_keys: Vec<Key>,
    all_errors: Vec<String>,
    recovery_start_timestamp: String,
    recovery_end_timestamp: String,
    processing_node_hostname: String,
    processing_node_token: String,
    acknowledged: bool,
    acknowledged_at: String,
    acknowledged_by: String,
    acknowledged_comment: String,
    last_detection_id: i64,
    related_recovery_id: i64,
    #[serde(rename = "Type")]
    kind: String,
    recovery_type: String,
}

/// A route answered here, its arguments parsed.
enum Call {
    Clusters,
    ClustersInfo,
    ClusterInfo(String),
    Master(String),
    Instance(InstanceKey),
    InstanceReplicas(InstanceKey),
    Cluster(String),
    Topology(String),
    CheckGlobalRecoveries,
    AuditRecovery(Audit),
    LeaderCheck,
    GracefulMasterTakeover {
        hint: String,
        to: Option<InstanceKey>,
    },
    Recover {
        failed: InstanceKey,
        to: Option<InstanceKey>,
    },
    AckCluster {
        hint: String,
        comment: String,
    },
    GlobalRecoveries(bool),
    BeginDowntime {
        key: InstanceKey,
        owner: String,
        reason: String,
        seconds: u64,
    },
    EndDowntime(InstanceKey),
    Discover(InstanceKey),
    Forget(InstanceKey),
}

/// Which recoveries `audit-recovery` lists.
struct Audit {
    cluster: Option<String>,
    uid: Option<String>,
    page: usize,
    unacknowledged: bool,
}

impl Call {
    /// Whether the call changes anything (and so always needs the token).
    fn changes(&self) -> bool {
        !matches!(
            self,
            Call::Clusters
                | Call::ClustersInfo
                | Call::ClusterInfo(_)
                | Call::Master(_)
                | Call::Instance(_)
                | Call::InstanceReplicas(_)
                | Call::Cluster(_)
                | Call::Topology(_)
                | Call::CheckGlobalRecoveries
                | Call::AuditRecovery(_)
                | Call::LeaderCheck
        )
    }

    /// The route for `segments` (the path after `/api/`, decoded), `None` for a route
    /// not answered here, or what is wrong with an argument.
    fn parse(segments: &[String], query: &HashMap<String, String>) -> Result<Option<Call>, String> {
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        let call = match s.as_slice() {
            ["clusters"] => Call::Clusters,
            ["clusters-info"] => Call::ClustersInfo,
            ["cluster-info", h] => Call::ClusterInfo(h.to_string()),
            ["master", h] => Call::Master(h.to_string()),
            ["instance", host, port] => Call::Instance(key(host, port)?),
            ["instance-replicas", host, port] => Call::InstanceReplicas(key(host, port)?),
            ["cluster", h] => Call::Cluster(h.to_string()),
            ["topology", h] => Call::Topology(h.to_string()),
            ["topology", host, port] => Call::Topology(key(host, port)?.to_string()),
            ["check-global-recoveries"] => Call::CheckGlobalRecoveries,
            ["leader-check"] => Call::LeaderCheck,
            ["audit-recovery", rest @ ..] => Call::AuditRecovery(audit(rest, query)?),
            ["graceful-master-takeover" | "graceful-master-takeover-auto", rest @ ..] => {
                let (hint, to) = match rest {
                    [h] => (h.to_string(), None),
                    [host, port] => (key(host, port)?.to_string(), None),
                    [h, to_host, to_port] => (h.to_string(), Some(key(to_host, to_port)?)),
                    [host, port, to_host, to_port] => {
                        (key(host, port)?.to_string(), Some(key(to_host, to_port)?))
                    }
                    _ => return Ok(None),
                };
                Call::GracefulMasterTakeover { hint, to }
            }
            ["recover", host, port] => Call::Recover {
                failed: key(host, port)?,
                to: None,
            },
            ["recover", host, port, to_host, to_port] => Call::Recover {
                failed: key(host, port)?,
                to: Some(key(to_host, to_port)?),
            },
            ["ack-recovery", "cluster", h] => Call::AckCluster {
                hint: h.to_string(),
                // orchestrator-client's `urlencode` sends its `echo`'s newline along.
                comment: query
                    .get("comment")
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default(),
            },
            ["disable-global-recoveries"] => Call::GlobalRecoveries(false),
            ["enable-global-recoveries"] => Call::GlobalRecoveries(true),
            ["begin-downtime", host, port, owner, reason, duration @ ..] if duration.len() <= 1 => {
                Call::BeginDowntime {
                    key: key(host, port)?,
                    owner: owner.trim().to_string(),
                    reason: reason.trim().to_string(),
                    seconds: downtime_seconds(duration.first().copied().unwrap_or(""))?,
                }
            }
            ["end-downtime", host, port] => Call::EndDowntime(key(host, port)?),
            ["discover", host, port] => Call::Discover(key(host, port)?),
            ["forget", host, port] => Call::Forget(key(host, port)?),
            _ => return Ok(None),
        };
        Ok(Some(call))
    }
}

/// `:host/:port` as an instance.
fn key(host: &str, port: &str) -> Result<InstanceKey, String> {
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port \"{port}\" is not a number from 1 to 65535"))?;
    if let Some(problem) = crate::topology::instance::host_problem(host) {
        return Err(format!("host \"{host}\": {problem}"));
    }
    Ok(InstanceKey::new(host, port))
}

/// `audit-recovery[/:page]`, `/cluster/:clusterHint[/:page]`, `/alias/:alias[/:page]`,
/// `/uid/:uid`; `?unacknowledged=true` keeps the unacknowledged ones.
fn audit(rest: &[&str], query: &HashMap<String, String>) -> Result<Audit, String> {
    let page = |text: &str| {
        text.parse::<usize>()
            .map_err(|_| format!("page \"{text}\" is not a number (pages count from 0)"))
    };
    let mut audit = Audit {
        cluster: None,
        uid: None,
        page: 0,
        unacknowledged: query.get("unacknowledged").is_some_and(|v| v == "true"),
    };
    match rest {
        [] => {}
        ["uid", uid] => audit.uid = Some(uid.to_string()),
        ["cluster" | "alias", cluster] => audit.cluster = Some(cluster.to_string()),
        ["cluster" | "alias", cluster, number] => {
            audit.cluster = Some(cluster.to_string());
            audit.page = page(number)?;
        }
        [number] => audit.page = page(number)?,
        _ => {
            return Err(
                "audit-recovery takes [/:page], /cluster/:clusterHint[/:page], /alias/:alias[/:page] or /uid/:uid"
                    .into(),
            )
        }
    }
    Ok(audit)
}

/// orchestrator's `SimpleTimeToSeconds`: `^[0-9]+[smhdw]$`; none, or `0s`, is its
/// default of 10 minutes.
fn downtime_seconds(text: &str) -> Result<u64, String> {
    if text.is_empty() {
        return Ok(600);
    }
    let wrong = || {
        format!(
            "Cannot parse simple time: {text} (give a number and one of s, m, h, d, w, like 10m)"
        )
    };
    let (number, unit) = text.split_at(text.len() - text.chars().last().map_or(0, char::len_utf8));
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(wrong());
    }
    let unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(wrong()),
    };
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(wrong)?;
    Ok(if seconds == 0 { 600 } else { seconds })
}

/// The path's segments, percent-decoded each (`orchestrator-client` encodes the owner
/// and reason of a downtime, which may hold a `/`).
fn segments(rest: &str) -> Result<Vec<String>, String> {
    rest.trim_end_matches('/')
        .split('/')
        .map(|segment| {
            let bytes = segment.as_bytes();
            let mut decoded = Vec::with_capacity(bytes.len());
            let mut index = 0;
            while index < bytes.len() {
                let byte = bytes[index];
                if byte == b'%' {
                    let hex = segment
                        .get(index + 1..index + 3)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| {
                            format!("\"{segment}\" has a '%' not followed by two hex digits")
                        })?;
                    decoded.push(hex);
                    index += 3;
                } else {
                    decoded.push(byte);
                    index += 1;
                }
            }
            String::from_utf8(decoded)
                .map_err(|_| format!("\"{segment}\" is not UTF-8 once decoded"))
        })
        .collect()
}

/// A path segment for pointsman's own API: everything but unreserved characters and
/// `:` percent-encoded (an IPv6 address's brackets, a cluster name's blanks).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, as orchestrator's backend database writes times.
fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_string()
}

/// Equal bytes, in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request offers: a bearer token, or the password of HTTP basic auth
/// (any user name); blanks around it dropped.
fn offered_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_user, password) = text.split_once(':')?;
        return Some(password.trim().to_string());
    }
    None
}

async fn translate(State(compat): State<Compat>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let rest = path.strip_prefix("/api/").unwrap_or(&path);
    // Unknown paths of pointsman's own API reach this catch-all too.
    if rest == "v1" || rest.starts_with("v1/") {
        return super::not_found().await.into_response();
    }
    let query: HashMap<String, String> = Query::try_from_uri(request.uri())
        .map(|Query(query)| query)
        .unwrap_or_default();
    let call = match segments(rest).and_then(|s| Call::parse(&s, &query)) {
        Ok(Some(call)) => call,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "pointsman does not answer orchestrator's /api/{rest}: it answers clusters, clusters-info, cluster-info, master, instance, instance-replicas, cluster, topology, graceful-master-takeover[-auto], recover, ack-recovery/cluster, disable-/enable-/check-global-recoveries, begin-/end-downtime, discover, forget, audit-recovery and leader-check (see the README); its own API is under /api/v1"
                ),
            )
        }
        Err(wrong) => return failed(format!("/api/{rest}: {wrong}")),
    };
    let method = request.method().clone();
    let allowed = method == Method::GET || (method == Method::HEAD && !call.changes());
    if !allowed {
        let mut refusal = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "/api/{rest} takes GET only, as in orchestrator (pointsman's own API under /api/v1 takes POST, PUT and DELETE)"
            ),
        );
        refusal
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return refusal;
    }
    if let Some(refusal) = compat.refusal(call.changes(), request.headers()) {
        return refusal;
    }
    let (parts, _) = request.into_parts();
    let own = Own {
        next,
        headers: parts.headers,
        client: parts
            .extensions
            .get::<ConnectInfo<ClientAddress>>()
            .copied(),
        token: compat.access.token.as_ref().map(|t| t.expose().to_string()),
    };
    compat.answer(call, own).await
}

impl Compat {
    /// Why the request may not make this call, as the answer; `None` if it may.
    fn refusal(&self, changes: bool, headers: &HeaderMap) -> Option<Response> {
        let token = match (&self.access.token, changes) {
            (None, true) => {
                return Some(error(
                    StatusCode::FORBIDDEN,
                    "orchestrator's API changes things through GET, which any web page can make a browser send: this agent refuses its actions until api.token (or token_env, token_file) is set; then pass the token as Authorization: Bearer <token>, or as the password of HTTP basic auth (orchestrator-client: ORCHESTRATOR_AUTH_USER=pointsman ORCHESTRATOR_AUTH_PASSWORD=<token>)",
                ))
            }
            (Some(token), true) => token,
            (Some(token), false) if self.access.token_for_reads => token,
            _ => return None,
        };
        if changes {
            let site = headers
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none");
            if matches!(site, "cross-site" | "same-site") {
                return Some(error(
                    StatusCode::FORBIDDEN,
                    "a page of another site asked this browser for a change: refused; call it from a script or orchestrator-client",
                ));
            }
        }
        let why = match offered_token(headers) {
            Some(offered) if same(offered.as_bytes(), token.expose().as_bytes()) => return None,
            Some(_) => "Unauthorized: the token offered (bearer token or basic-auth password) is not this agent's api.token",
            None => "Unauthorized: this call needs the agent's api.token, as Authorization: Bearer <token> or as the password of HTTP basic auth (orchestrator-client: ORCHESTRATOR_AUTH_USER=pointsman ORCHESTRATOR_AUTH_PASSWORD=<token>)",
        };
        let mut refusal = error(StatusCode::UNAUTHORIZED, why);
        // Never a Basic challenge: a browser would ask for credentials and then send
        // them with every request any page makes to this agent.
        refusal.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"pointsman\""),
        );
        Some(refusal)
    }

    async fn answer(&self, call: Call, own: Own) -> Response {
        let details = || self.state.details();
        match call {
            Call::Clusters => {
                let names: Vec<String> = details().iter().map(|d| d.primary.to_string()).collect();
                Json(names).into_response()
            }
            Call::ClustersInfo => {
                let infos: Vec<ClusterInfo> =
                    details().iter().map(|d| self.cluster_info(d)).collect();
                Json(infos).into_response()
            }
            Call::ClusterInfo(hint) => match resolve(&details(), &hint) {
                Ok(detail) => Json(self.cluster_info(detail)).into_response(),
                Err(why) => failed(why),
            },
            Call::Master(hint) => {
                let all = details();
                let detail = match resolve(&all, &hint) {
                    Ok(detail) => detail,
                    Err(why) => return failed(why),
                };
                match detail.instance(&detail.primary) {
                    Some(view) => Json(self.instance(view, detail)).into_response(),
                    None => failed(format!("No masters found for {}", detail.primary)),
                }
            }
            Call::Instance(key) => {
                let all = details();
                match all.iter().find_map(|d| d.instance(&key).map(|v| (v, d))) {
                    Some((view, detail)) => Json(self.instance(view, detail)).into_response(),
                    None => failed(format!(
                        "Cannot read instance: {key}: pointsman knows no such instance; discover it first (/api/discover/{}/{})",
                        key.host, key.port
                    )),
                }
            }
            Call::InstanceReplicas(key) => {
                let all = details();
                let Some(detail) = all.iter().find(|d| d.instance(&key).is_some()) else {
                    return failed(format!(
                        "Cannot read instance: {key}: pointsman knows no such instance"
                    ));
                };
                let replicas: Vec<Instance> = detail
                    .tree
                    .find(&key)
                    .map(|node| {
                        node.replicas
                            .iter()
                            .filter_map(|r| detail.instance(&r.key))
                            .map(|view| self.instance(view, detail))
                            .collect()
                    })
                    .unwrap_or_default();
                Json(replicas).into_response()
            }
            Call::Cluster(hint) => {
                let all = details();
                match resolve(&all, &hint) {
                    Ok(detail) => {
                        let instances: Vec<Instance> = detail
                            .instances
                            .iter()
                            .filter(|v| v.role != Role::FencedPrimary)
                            .map(|view| self.instance(view, detail))
                            .collect();
                        Json(instances).into_response()
                    }
                    Err(why) => failed(why),
                }
            }
            Call::Topology(hint) => {
                let all = details();
                match resolve(&all, &hint) {
                    Ok(detail) => ok(
                        format!("Topology for cluster {}", detail.primary),
                        self.topology(detail),
                    ),
                    Err(why) => failed(why),
                }
            }
            Call::CheckGlobalRecoveries => match self.state.store.automatic_recovery_enabled() {
                Ok(true) => ok("Global recoveries enabled", "enabled"),
                Ok(false) => ok("Global recoveries disabled", "disabled"),
                Err(e) => failed(e.to_string()),
            },
            Call::AuditRecovery(audit) => self.audit_recovery(audit),
            Call::LeaderCheck => match self.state.coordinator.executor.lease.role() {
                crate::leader::Role::Leader { .. } => Json("OK").into_response(),
                _ => (StatusCode::NOT_FOUND, Json("Not leader")).into_response(),
            },
            Call::GracefulMasterTakeover { hint, to } => {
                let name = match resolve(&details(), &hint) {
                    Ok(detail) => detail.name.clone(),
                    Err(why) => return failed(why),
                };
                let body = serde_json::json!({ "to": to.map(|k| k.to_string()) });
                let path = format!("/api/v1/clusters/{}/switchover", encode(&name));
                match own
                    .call::<SwitchoverReport>(Method::POST, &path, Some(body))
                    .await
                {
                    Ok(report) => ok(
                        "graceful-master-takeover: successor promoted",
                        self.recovery(&report.recovery, true),
                    ),
                    Err(why) => failed(why),
                }
            }
            Call::Recover { failed: key, to } => self.recover(key, to, own).await,
            Call::AckCluster { hint, comment } => {
                if comment.is_empty() {
                    return failed("No acknowledge comment given: add ?comment=<why>");
                }
                // An old name (before a failover renamed the cluster) is pointsman's
                // ack's to look up.
                let (name, cluster_name) = match resolve(&details(), &hint) {
                    Ok(detail) => (detail.name.clone(), detail.primary.to_string()),
                    Err(_) => (hint.clone(), hint),
                };
                let path = format!("/api/v1/clusters/{}/ack", encode(&name));
                let body = serde_json::json!({ "comment": comment });
                match own
                    .call::<serde_json::Value>(Method::POST, &path, Some(body))
                    .await
                {
                    Ok(_) => ok("Acknowledged cluster recoveries", cluster_name),
                    Err(why) => failed(why),
                }
            }
            Call::GlobalRecoveries(on) => {
                let body = serde_json::json!({ "automatic": on });
                match own
                    .call::<serde_json::Value>(Method::PUT, "/api/v1/recovery", Some(body))
                    .await
                {
                    Ok(_) if on => ok("Globally enabled recoveries", "enabled"),
                    Ok(_) => ok("Globally disabled recoveries", "disabled"),
                    Err(why) => failed(why),
                }
            }
            Call::BeginDowntime {
                key,
                owner,
                reason,
                seconds,
            } => {
                let path = format!("/api/v1/instances/{}/downtime", encode(&key.to_string()));
                let body = serde_json::json!({
                    "duration": format!("{seconds}s"),
                    "reason": format!("{reason} (owner {owner})"),
                });
                match own.call::<Downtime>(Method::PUT, &path, Some(body)).await {
                    Ok(_) => ok(format!("Downtime begun: {key}"), Key::from(&key)),
                    Err(why) => failed(why),
                }
            }
            Call::EndDowntime(key) => {
                let path = format!("/api/v1/instances/{}/downtime", encode(&key.to_string()));
                match own
                    .call::<serde_json::Value>(Method::DELETE, &path, None)
                    .await
                {
                    Ok(_) => ok(format!("Downtime ended: {key}"), Key::from(&key)),
                    Err(why) => failed(why),
                }
            }
            Call::Discover(key) => {
                let body = serde_json::json!({ "host": key.host, "port": key.port });
                match own
                    .call::<serde_json::Value>(Method::POST, "/api/v1/discover", Some(body))
                    .await
                {
                    Ok(_) => {
                        let all = details();
                        let instance = all
                            .iter()
                            .find_map(|d| d.instance(&key).map(|v| self.instance(v, d)));
                        ok(format!("Instance discovered: {key}"), instance)
                    }
                    Err(why) => failed(why),
                }
            }
            Call::Forget(key) => {
                let path = format!("/api/v1/instances/{}", encode(&key.to_string()));
                match own
                    .call::<serde_json::Value>(Method::DELETE, &path, None)
                    .await
                {
                    Ok(_) => ok(format!("Instance forgotten: {key}"), Key::from(&key)),
                    Err(why) => failed(why),
                }
            }
        }
    }

    /// orchestrator's `recover/:host/:port`: recovers that instance's failure, so a
    /// cluster whose failure is elsewhere is not recovered ("Recovery not attempted").
    async fn recover(&self, key: InstanceKey, to: Option<InstanceKey>, own: Own) -> Response {
        let snapshot = self.state.discovery.snapshot();
        let problems =
            crate::workers::off_the_workers(|| self.state.coordinator.problems(&snapshot));
        let Some((cluster, found)) = problems
            .iter()
            .find(|(cluster, _)| cluster.members.contains(&key))
        else {
            return failed(format!(
                "Recovery not attempted: pointsman knows no instance {key}"
            ));
        };
        if !found
            .iter()
            .any(|p| p.instance == key && p.code.needs_recovery())
        {
            let seen: Vec<String> = found
                .iter()
                .map(|p| format!("{:?} on {}", p.code, p.instance))
                .collect();
            return error_with(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "Recovery not attempted: pointsman finds no failure of {key} that a recovery fixes (cluster {}: {})",
                    cluster.name,
                    if seen.is_empty() { "no problems".to_string() } else { seen.join(", ") }
                ),
                Key::from(&key),
            );
        }
        let path = format!("/api/v1/clusters/{}/recover", encode(&cluster.name));
        let body = serde_json::json!({ "to": to.map(|k| k.to_string()) });
        match own
            .call::<RecoveryRecord>(Method::POST, &path, Some(body))
            .await
        {
            Ok(record) => match (&record.status, &record.successor) {
                (RecoveryStatus::Succeeded, Some(successor)) => {
                    ok(format!("Recovery executed on {key}"), Key::from(successor))
                }
                _ => error_with(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "Recovery attempted but no instance promoted: recovery {} ended {:?}{}",
                        record.id,
                        record.status,
                        failing_steps(&record)
                    ),
                    Key::from(&key),
                ),
            },
            Err(why) => failed(why),
        }
    }

    fn audit_recovery(&self, audit: Audit) -> Response {
        let names = audit.cluster.as_deref().map(|hint| {
            let all = self.state.details();
            let name = resolve(&all, hint).map_or(hint.to_string(), |d| d.name.clone());
            super::cluster_names(&self.state, Some(&name)).unwrap_or_else(|| vec![name])
        });
        let records = match &names {
            Some(names) => self.state.store.recoveries_named(names, AUDIT_DEPTH),
            None => self.state.store.recoveries(None, AUDIT_DEPTH),
        };
        let records = match records {
            Ok(records) => records,
            Err(e) => return failed(e.to_string()),
        };
        let page: Vec<TopologyRecovery> = records
            .iter()
            .filter(|r| audit.uid.as_ref().is_none_or(|uid| &r.id == uid))
            .filter(|r| !audit.unacknowledged || r.acknowledged_at.is_none())
            .skip(audit.page.saturating_mul(PAGE))
            .take(PAGE)
            .map(|r| self.recovery(r, false))
            .collect();
        Json(page).into_response()
    }

    fn covered(&self, name: &str, alias: Option<&str>) -> bool {
        self.state
            .coordinator
            .auto_clusters
            .iter()
            .any(|filter| filter.matches(name, alias))
    }

    fn cluster_info(&self, detail: &ClusterDetail) -> ClusterInfo {
        // pointsman recovers a dead intermediate primary under the same rule.
        let automatic = self.covered(&detail.name, detail.alias.as_deref());
        ClusterInfo {
            cluster_name: detail.primary.to_string(),
            cluster_alias: detail.name.clone(),
            cluster_domain: String::new(),
            count_instances: detail
                .instances
                .iter()
                .filter(|v| v.role != Role::FencedPrimary)
                .count(),
            heuristic_lag: 0,
            has_automated_master_recovery: automatic,
            has_automated_intermediate_master_recovery: automatic,
        }
    }

    fn instance(&self, view: &InstanceView, detail: &ClusterDetail) -> Instance {
        let now = SystemTime::now();
        let downtime = self
            .state
            .store
            .downtimes(now)
            .unwrap_or_default()
            .into_iter()
            .find(|d| d.instance == view.instance.key);
        orchestrator_instance(view, detail, downtime.as_ref(), now)
    }

    /// The tree as orchestrator's `topology` prints it.
    fn topology(&self, detail: &ClusterDetail) -> String {
        let mut lines = Vec::new();
        self.topology_lines(detail, &detail.tree, 0, &mut lines);
        // orchestrator aligns the first '[' of every line.
        let column = lines.iter().filter_map(|l| l.find('[')).max().unwrap_or(0);
        lines
            .iter()
            .map(|line| match line.find('[') {
                Some(at) if at < column => {
                    format!("{}{}{}", &line[..at], " ".repeat(column - at), &line[at..])
                }
                _ => line.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn topology_lines(
        &self,
        detail: &ClusterDetail,
        node: &ClusterTreeNode,
        depth: usize,
        lines: &mut Vec<String>,
    ) {
        let instance = detail
            .instance(&node.key)
            .map(|view| self.instance(view, detail));
        let mut prefix = String::new();
        if depth > 0 {
            prefix = " ".repeat((depth - 1) * 2);
            let running = instance.as_ref().is_some_and(|i| {
                i.replication_sql_thread_runing
                    && i.replication_io_thread_runing
                    && i.is_last_check_valid
                    && i.is_recently_checked
            });
            prefix.push_str(if running { "+ " } else { "- " });
        }
        let description = instance
            .as_ref()
            .map(|i| format!(" {}", description(i)))
            .unwrap_or_default();
        lines.push(format!("{prefix}{}{description}", node.key));
        for replica in &node.replicas {
            self.topology_lines(detail, replica, depth + 1, lines);
        }
    }

    /// A pointsman recovery as orchestrator's `TopologyRecovery`: `live` as in the answer
    /// to a takeover (no successor is null), otherwise as read back from its database.
    fn recovery(&self, record: &RecoveryRecord, live: bool) -> TopologyRecovery {
        let primary_recovery = matches!(record.kind.as_str(), "failover" | "switchover");
        let details = self.state.details();
        let now_named = details.iter().find(|d| d.name == record.cluster);
        let cluster_name = if primary_recovery {
            record.failed.to_string()
        } else {
            now_named.map_or(record.cluster.clone(), |d| d.primary.to_string())
        };
        let alias = now_named.and_then(|d| d.alias.clone());
        let automatic = self.covered(&record.cluster, alias.as_deref());
        let mut participating: Vec<InstanceKey> = record
            .steps
            .iter()
            .filter_map(|s| s.instance.clone())
            .chain(std::iter::once(record.failed.clone()))
            .chain(record.successor.clone())
            .collect();
        participating.sort();
        participating.dedup();
        let errors: Vec<String> = record
            .steps
            .iter()
            .filter(|s| !s.ok && !s.pending)
            .map(|s| format!("{}: {}", s.step, s.detail))
            .collect();
        TopologyRecovery {
            id: record
                .started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            uid: record.id.clone(),
            analysis_entry: AnalysisEntry {
                analyzed_instance_key: Key::from(&record.failed),
                analyzed_instance_master_key: Key::default(),
                cluster_details: ClusterInfo {
                    cluster_name,
                    cluster_alias: record.cluster.clone(),
                    has_automated_master_recovery: automatic,
                    has_automated_intermediate_master_recovery: automatic,
                    ..ClusterInfo::default()
                },
                analysis: failure_type(&record.problem).to_string(),
                description: String::new(),
                is_master: primary_recovery,
                count_replicas: 0,
                replicas: Vec::new(),
                slave_hosts: Vec::new(),
                command_hint: if record.kind == "switchover" {
                    "graceful-master-takeover".into()
                } else {
                    String::new()
                },
            },
            successor_key: match (&record.successor, live) {
                (Some(successor), _) => Some(Key::from(successor)),
                (None, true) => None,
                (None, false) => Some(Key::default()),
            },
            successor_alias: String::new(),
            successor_binlog_coordinates: None,
            is_active: record.status == RecoveryStatus::Running,
            is_successful: record.status == RecoveryStatus::Succeeded,
            lost_replicas: Vec::new(),
            participating_instance_keys: participating.iter().map(Key::from).collect(),
            // orchestrator splits an empty text: one empty error.
            all_errors: if errors.is_empty() {
                vec![String::new()]
            } else {
                errors
            },
            recovery_start_timestamp: timestamp(record.started_at),
            recovery_end_timestamp: record.finished_at.map(timestamp).unwrap_or_default(),
            processing_node_hostname: String::new(),
            processing_node_token: String::new(),
            acknowledged: record.acknowledged_at.is_some(),
            acknowledged_at: record.acknowledged_at.map(timestamp).unwrap_or_default(),
            acknowledged_by: record.acknowledged_by.clone().unwrap_or_default(),
            acknowledged_comment: record.ack_comment.clone().unwrap_or_default(),
            last_detection_id: 0,
            related_recovery_id: 0,
            kind: if primary_recovery {
                "MasterRecovery".into()
            } else {
                "IntermediateMasterRecovery".into()
            },
            recovery_type: if primary_recovery {
                "MasterRecoveryGTID".into()
            } else {
                "NotMasterRecovery".into()
            },
        }
    }
}

/// The steps of a recovery that failed, for its error message.
fn failing_steps(record: &RecoveryRecord) -> String {
    let failing: Vec<String> = record
        .steps
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{}: {}", s.step, s.detail))
        .collect();
    if failing.is_empty() {
        String::new()
    } else {
        format!(" ({})", failing.join("; "))
    }
}

/// The cluster `hint` names, as orchestrator's `FigureClusterName`: its cluster name
/// (the primary's `host:port`), its alias (pointsman's name), or an instance of it.
fn resolve<'a>(details: &'a [ClusterDetail], hint: &str) -> Result<&'a ClusterDetail, String> {
    details
        .iter()
        .find(|d| d.primary.to_string() == hint)
        .or_else(|| details.iter().find(|d| d.name == hint))
        .or_else(|| {
            let key: InstanceKey = hint.parse().ok()?;
            details.iter().find(|d| d.instance(&key).is_some())
        })
        .ok_or_else(|| {
            let known: Vec<String> = details
                .iter()
                .map(|d| format!("{} (alias {})", d.primary, d.name))
                .collect();
            format!(
                "Unable to determine cluster name. clusterHint={hint}: no cluster is named so, by its primary's host:port or by pointsman's name, and no instance of one is at that address; clusters: {}",
                if known.is_empty() { "none yet".to_string() } else { known.join(", ") }
            )
        })
}

/// Where an instance sits in the tree: its depth and its direct replicas.
fn place(node: &ClusterTreeNode, key: &InstanceKey, depth: usize) -> Option<(usize, Vec<Key>)> {
    if &node.key == key {
        let mut replicas: Vec<Key> = node.replicas.iter().map(|r| Key::from(&r.key)).collect();
        replicas.sort_by(|a, b| (&a.hostname, a.port).cmp(&(&b.hostname, b.port)));
        return Some((depth, replicas));
    }
    node.replicas
        .iter()
        .find_map(|child| place(child, key, depth + 1))
}

/// orchestrator's `Instance` for one of pointsman's instances.
fn orchestrator_instance(
    view: &InstanceView,
    detail: &ClusterDetail,
    downtime: Option<&Downtime>,
    now: SystemTime,
) -> Instance {
    let instance = &view.instance;
    let fenced = view.role == Role::FencedPrimary;
    // A fenced old primary replicates from nobody: orchestrator would see a cluster of
    // its own.
    let (depth, replicas) = place(&detail.tree, &instance.key, 0).unwrap_or_default();
    let valid = instance.is_reachable();
    let has = |code: FindingCode| view.findings.iter().any(|f| f.code == code);
    let errant = view
        .findings
        .iter()
        .find(|f| f.code == FindingCode::ErrantGtid)
        .map(|f| f.detail.clone().unwrap_or_else(|| f.message.clone()))
        .unwrap_or_default();
    let mut out = Instance {
        key: Key::from(&instance.key),
        cluster_name: if fenced {
            instance.key.to_string()
        } else {
            detail.primary.to_string()
        },
        suggested_cluster_alias: detail.alias.clone().unwrap_or_default(),
        replication_depth: depth,
        slave_hosts: replicas.clone(),
        replicas,
        relaylog_coordinates: Coordinates {
            kind: 1,
            ..Coordinates::default()
        },
        last_seen_timestamp: instance.last_seen.map(timestamp).unwrap_or_default(),
        is_last_check_valid: valid,
        is_up_to_date: valid,
        // Discovery probes every known instance at every poll.
        is_recently_checked: instance.last_seen.is_some() || instance.last_failure.is_some(),
        seconds_since_last_seen: NullInt64::of(
            instance
                .last_seen
                .map(|seen| now.duration_since(seen).unwrap_or_default().as_secs()),
        ),
        promotion_rule: "neutral".into(),
        is_downtimed: downtime.is_some(),
        downtime_reason: downtime.map(|d| d.reason.clone()).unwrap_or_default(),
        downtime_owner: downtime.map(|d| d.owner.clone()).unwrap_or_default(),
        downtime_end_timestamp: downtime.map(|d| timestamp(d.until)).unwrap_or_default(),
        last_discovery_latency: instance.probe_millis.map_or(0, |ms| {
            Duration::from_millis(ms)
                .as_nanos()
                .try_into()
                .unwrap_or(u64::MAX)
        }),
        gtid_errant: errant,
        ..Instance::default()
    };
    let Some(facts) = &instance.facts else {
        out.problems = problems(&out, has(FindingCode::ReplicationLagging));
        return out;
    };
    let mysql = matches!(facts.gtid, GtidState::Mysql { .. });
    out.server_id = facts.server_id;
    out.server_uuid = facts.server_uuid.clone().unwrap_or_default();
    out.version = facts.version.full.clone();
    out.flavor_name = facts.flavor.to_string();
    out.read_only = facts.read_only;
    out.binlog_format = facts.binlog_format.clone();
    out.log_bin_enabled = facts.log_bin;
    out.log_slave_updates_enabled = facts.log_replica_updates;
    out.log_replication_updates_enabled = facts.log_replica_updates;
    out.supports_oracle_gtid = mysql;
    match &facts.gtid {
        GtidState::Mysql { mode, executed } => {
            out.gtid_mode = mode.clone();
            out.executed_gtid_set = executed.to_string();
        }
        GtidState::Mariadb { current_pos, .. } => {
            out.executed_gtid_set = current_pos.to_string();
        }
    }
    out.semi_sync_available = facts.semi_sync.source_enabled || facts.semi_sync.replica_enabled;
    out.semi_sync_master_enabled = facts.semi_sync.source_enabled;
    out.semi_sync_replica_enabled = facts.semi_sync.replica_enabled;
    out.semi_sync_master_status = facts.semi_sync.source_active;
    out.semi_sync_master_clients = facts.semi_sync.source_clients;
    out.semi_sync_replica_status = facts.semi_sync.replica_active;
    out.ancestry_uuid = ancestry(detail, &instance.key);
    out.replication_sql_thread_state = -1;
    out.replication_io_thread_state = -1;
    if let (Some(replication), false) = (&facts.replication, fenced) {
        out.master_key = Key::from(&replication.source);
        out.master_uuid = detail
            .instance(&replication.source)
            .and_then(|v| v.instance.facts.as_ref())
            .and_then(|f| f.server_uuid.clone())
            .unwrap_or_default();
        let io = replication.io_running == IoThreadState::Yes;
        out.slave_sql_running = replication.sql_running;
        out.replication_sql_thread_runing = replication.sql_running;
        out.slave_io_running = io;
        out.replication_io_thread_runing = io;
        out.replication_sql_thread_state = i8::from(replication.sql_running);
        out.replication_io_thread_state = match replication.io_running {
            IoThreadState::Yes => 1,
            IoThreadState::No => 0,
            IoThreadState::Connecting => 2,
        };
        out.using_oracle_gtid = mysql && replication.gtid_auto_position;
        out.using_mariadb_gtid = !mysql && replication.gtid_auto_position;
        out.read_binlog_coordinates = Coordinates {
            log_file: replication.source_log_file.clone(),
            log_pos: replication.read_source_log_pos,
            kind: 0,
        };
        out.exec_binlog_coordinates = Coordinates {
            log_file: replication.source_log_file.clone(),
            log_pos: replication.exec_source_log_pos,
            kind: 0,
        };
        out.last_sql_error = replication.last_sql_error.clone();
        out.last_io_error = replication.last_io_error.clone();
        out.seconds_behind_master = NullInt64::of(replication.seconds_behind_source);
        out.slave_lag_seconds = NullInt64::of(replication.seconds_behind_source);
        out.replication_lag_seconds = NullInt64::of(replication.seconds_behind_source);
        out.sql_delay = replication.sql_delay;
        out.has_replication_credentials = true;
    }
    out.problems = problems(&out, has(FindingCode::ReplicationLagging));
    out
}

/// The server UUIDs from the top of the tree down to `key`, as orchestrator's
/// `AncestryUUID` (empty on MariaDB, which has no server UUID).
fn ancestry(detail: &ClusterDetail, key: &InstanceKey) -> String {
    let mut uuids = Vec::new();
    let mut at = Some(key.clone());
    // Bounded: a replication loop must not hang the answer.
    for _ in 0..=detail.instances.len() {
        let Some(view) = at.as_ref().and_then(|k| detail.instance(k)) else {
            break;
        };
        let facts = view.instance.facts.as_ref();
        if let Some(uuid) = facts.and_then(|f| f.server_uuid.clone()) {
            uuids.push(uuid);
        }
        at = facts
            .and_then(|f| f.replication.as_ref())
            .map(|r| r.source.clone());
    }
    uuids.reverse();
    uuids.join(",")
}

fn is_replica(instance: &Instance) -> bool {
    !instance.master_key.hostname.is_empty()
}

fn replicating(instance: &Instance) -> bool {
    instance.replication_sql_thread_runing && instance.replication_io_thread_runing
}

/// orchestrator's `Problems`, in its order.
fn problems(instance: &Instance, lagging: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if !instance.is_last_check_valid {
        problems.push("last_check_invalid".to_string());
    } else if !instance.is_recently_checked {
        problems.push("not_recently_checked".to_string());
    } else if is_replica(instance) && !replicating(instance) {
        problems.push("not_replicating".to_string());
    } else if lagging {
        problems.push("replication_lag".to_string());
    }
    if !instance.gtid_errant.is_empty() {
        problems.push("errant_gtid".to_string());
    }
    problems
}

/// orchestrator's `HumanReadableDescription`: `[lag,status,version,ro|rw,format,extras]`.
fn description(instance: &Instance) -> String {
    let replica = is_replica(instance);
    let lagging = instance.problems.iter().any(|p| p == "replication_lag");
    let lag = if !instance.is_last_check_valid || !instance.is_recently_checked {
        "unknown".to_string()
    } else if replica && (!replicating(instance) || !instance.seconds_behind_master.valid) {
        "null".to_string()
    } else {
        format!("{}s", instance.replication_lag_seconds.int64)
    };
    let status = if !instance.is_last_check_valid {
        "invalid"
    } else if !instance.is_recently_checked {
        "unchecked"
    } else if replica && !replicating(instance) {
        "nonreplicating"
    } else if replica && lagging {
        "lag"
    } else {
        "ok"
    };
    let mut extras = Vec::new();
    if instance.log_bin_enabled && instance.log_replication_updates_enabled {
        extras.push(">>");
    }
    if instance.using_oracle_gtid || instance.using_mariadb_gtid || instance.supports_oracle_gtid {
        extras.push(if instance.gtid_errant.is_empty() {
            "GTID"
        } else {
            "GTID:errant"
        });
    }
    if instance.semi_sync_master_status {
        extras.push("semi:master");
    }
    if instance.semi_sync_replica_status {
        extras.push("semi:replica");
    }
    if instance.is_downtimed {
        extras.push("downtimed");
    }
    let extras = extras.join(",");
    let tokens = [
        lag.as_str(),
        status,
        instance.version.as_str(),
        if instance.read_only { "ro" } else { "rw" },
        if instance.log_bin_enabled {
            instance.binlog_format.as_str()
        } else {
            "nobinlog"
        },
        extras.as_str(),
    ];
    let kept: Vec<&str> = tokens.into_iter().filter(|t| !t.is_empty()).collect();
    format!("[{}]", kept.join(","))
}

/// What a translated call needs to go through pointsman's own API.
struct Own {
    next: Next,
    headers: HeaderMap,
    client: Option<ConnectInfo<ClientAddress>>,
    token: Option<String>,
}

impl Own {
    /// Calls pointsman's own API as the CLI would — JSON, the token, the caller's `Host`
    /// and `Origin` — and reads its answer, or its refusal's sentence.
    async fn call<T: DeserializeOwned>(
        self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, String> {
        let mut builder = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for name in [header::HOST, header::ORIGIN] {
            if let Some(value) = self.headers.get(&name) {
                builder = builder.header(name, value.clone());
            }
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = builder
            .body(Body::from(bytes))
            .map_err(|e| format!("cannot make the call to pointsman's own API {path}: {e}"))?;
        if let Some(client) = self.client {
            request.extensions_mut().insert(client);
        }
        let response = self.next.run(request).await;
        let status = response.status();
        let answer = axum::body::to_bytes(response.into_body(), ANSWER_LIMIT)
            .await
            .map_err(|e| format!("cannot read the answer of pointsman's own API {path}: {e}"))?;
        if status.is_success() {
            return serde_json::from_slice(&answer).map_err(|e| {
                format!(
                    "pointsman's own API {path} answered what this translation cannot read: {e}"
                )
            });
        }
        Err(match serde_json::from_slice::<ApiError>(&answer) {
            Ok(ApiError {
                error,
                leader: Some(leader),
                ..
            }) => format!("{error} (the leading agent's API: {leader})"),
            Ok(refusal) => refusal.error,
            Err(_) => format!(
                "pointsman's own API {path} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> Result<Option<Call>, String> {
        segments(text).and_then(|s| Call::parse(&s, &HashMap::new()))
    }

    #[test]
    fn routes_are_told_apart_by_their_segments() {
        assert!(matches!(path("clusters"), Ok(Some(Call::Clusters))));
        assert!(matches!(
            path("graceful-master-takeover/db1:3306"),
            Ok(Some(Call::GracefulMasterTakeover { to: None, .. }))
        ));
        match path("graceful-master-takeover-auto/db1/3306/db2/3307") {
            Ok(Some(Call::GracefulMasterTakeover { hint, to })) => {
                assert_eq!(hint, "db1:3306");
                assert_eq!(to, Some(InstanceKey::new("db2", 3307)));
            }
            _ => panic!("four segments: host, port, designated host and port"),
        }
        match path("begin-downtime/db1/3306/ops%20team/disk%2Fswap%0A/2h") {
            Ok(Some(Call::BeginDowntime {
                owner,
                reason,
                seconds,
                ..
            })) => assert_eq!(
                (owner.as_str(), reason.as_str(), seconds),
                ("ops team", "disk/swap", 7200)
            ),
            _ => panic!("begin-downtime with a duration"),
        }
        assert!(path("instance/db1/http").is_err_and(|e| e.contains("port \"http\"")));
        assert!(matches!(path("relocate/db1/3306/db2/3306"), Ok(None)));
        assert!(segments("bad%zz").is_err());
    }

    #[test]
    fn downtime_durations_are_orchestrators_simple_times() {
        assert_eq!(downtime_seconds(""), Ok(600));
        assert_eq!(downtime_seconds("0s"), Ok(600));
        assert_eq!(downtime_seconds("90s"), Ok(90));
        assert_eq!(downtime_seconds("1w"), Ok(604_800));
        for wrong in ["10", "m", "1.5h", "-1h", "10ms", "1é"] {
            assert!(downtime_seconds(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn tokens_come_as_bearer_or_as_a_basic_password() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  s3cret "),
        );
        assert_eq!(offered_token(&headers).as_deref(), Some("s3cret"));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:s3cret");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).expect("header"),
        );
        assert_eq!(offered_token(&headers).as_deref(), Some("s3cret"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(offered_token(&headers), None);
        assert_eq!(encode("[::1]:3306"), "%5B::1%5D:3306");
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "1970-01-01 00:00:00");
    }
}
