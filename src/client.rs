//! The CLI's side of the API: fetches from a running agent and prints what it gets the
//! way DBAs read topologies — an indented tree like orchestrator's
//! (`host:port [0s,ok,9.7.4,rw,ROW,>>,GTID]`) followed by what is wrong.

use crate::analysis::{HealthStatus, ProblemCode, Severity};
use crate::api::views::{ClusterDetail, ClusterSummary, InstanceView, Role};
use crate::api::ApiError;
use crate::topology::instance::GtidState;
use crate::topology::{ClusterTreeNode, InstanceKey, IoThreadState};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Write;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the pointsman API at {url}: {reason}\n(is `pointsman run` or `pointsman demo` running? point --api or POINTSMAN_API at it)")]
    Unreachable { url: String, reason: String },
    #[error("{message} (HTTP {status})")]
    Api {
        status: u16,
        message: String,
        /// The API of the agent that leads, when this one refused because it does not.
        leader: Option<String>,
    },
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
}

/// A client for one agent's API.
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` when the agent has an `api.token`.
    token: Option<String>,
}

impl ApiClient {
    pub fn new(base: &str) -> Self {
        // reqwest is built without a default TLS provider: one must be installed first.
        crate::routing::consul::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client without TLS or proxies always builds");
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            token: None,
        }
    }

    /// The same client, sending `token` with every call.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.get(self.url(path)), path).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.change(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.change(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.change::<(), T>(reqwest::Method::DELETE, path, None)
            .await
    }

    /// A call that changes something, always with `Content-Type: application/json`
    /// (the agent refuses a change without it, body or not): an agent that does not
    /// lead names the one that does, and the call goes there instead (once).
    async fn change<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let request = |base: &str| {
            let request = self
                .http
                .request(method.clone(), format!("{base}{path}"))
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            match body {
                Some(body) => request.json(body),
                None => request,
            }
        };
        match self.send(request(&self.base), path).await {
            Err(ClientError::Api {
                leader: Some(leader),
                ..
            }) if leader.trim_end_matches('/') != self.base => {
                eprintln!("(this agent does not lead: sent to the leader at {leader})");
                self.send(request(leader.trim_end_matches('/')), path).await
            }
            other => other,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if !status.is_success() {
            let (message, leader) = match serde_json::from_slice::<ApiError>(&body) {
                Ok(error) => (error.error, error.leader),
                Err(_) => (String::from_utf8_lossy(&body).into_owned(), None),
            };
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
                leader,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            url,
            reason: e.to_string(),
        })
    }
}

/// The cluster list as a table, problems first (the API already sorts it so).
pub fn format_clusters(clusters: &[ClusterSummary]) -> String {
    if clusters.is_empty() {
        return "no clusters yet: add seeds to discovery.seeds or run `pointsman discover host:port`\n"
            .into();
    }
    let width = clusters
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let mut out = format!(
        "{:width$}  {:8}  {:>9}  primary\n",
        "CLUSTER", "HEALTH", "INSTANCES"
    );
    for cluster in clusters {
        let health = match cluster.health.status {
            HealthStatus::Ok => "ok".to_string(),
            HealthStatus::Warning => format!("{}W", cluster.health.warnings),
            HealthStatus::Problem => {
                format!("{}P {}W", cluster.health.problems, cluster.health.warnings)
            }
        };
        let _ = writeln!(
            out,
            "{:width$}  {:8}  {:>9}  {}",
            cluster.name, health, cluster.instance_count, cluster.primary
        );
    }
    out
}

/// One cluster as an indented tree (with each instance's GTID set under it when
/// `gtid`), then whether automatic recovery covers it and what is wrong.
pub fn format_topology(detail: &ClusterDetail, gtid: bool) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    tree_lines(detail, &detail.tree, 0, &mut lines);
    for view in detail
        .instances
        .iter()
        .filter(|v| v.role == Role::FencedPrimary)
    {
        lines.push((
            format!("- {}", view.instance.key),
            format!("{} old primary, fenced", instance_tags(view)),
        ));
    }
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, tags) in lines {
        let _ = writeln!(out, "{key:width$}  {tags}");
        if gtid {
            let bare: InstanceKey = key
                .trim_start_matches([' ', '+', '-'])
                .parse()
                .expect("a line starts with its instance's key");
            if let Some(view) = detail.instance(&bare) {
                let indent = key.len() - key.trim_start_matches([' ', '+', '-']).len() + 4;
                let _ = writeln!(out, "{:indent$}{}", "", gtid_line(view));
            }
        }
    }
    out.push('\n');
    if let Some(coverage) = &detail.coverage {
        let _ = writeln!(out, "automatic recovery: {}", coverage.line());
    }
    if !detail.formerly.is_empty() {
        let _ = writeln!(out, "formerly: {}", detail.formerly.join(", "));
    }
    if let Some(recovery) = &detail.unacknowledged {
        let took = recovery
            .finished_at
            .and_then(|end| end.duration_since(recovery.started_at).ok())
            .map(|d| format!(", {} ms", d.as_millis()))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "NOT ACKNOWLEDGED: {} {} at {}: {} -> {} ({}{took}); `pointsman ack {}` once looked at",
            recovery.kind,
            recovery.id,
            crate::topology::time::format(recovery.started_at),
            recovery.failed,
            recovery
                .successor
                .as_ref()
                .map_or_else(|| "no successor".to_string(), ToString::to_string),
            format!("{:?}", recovery.status).to_lowercase(),
            detail.name
        );
    }
    if let Some(why) = &detail.recovery_refused {
        let _ = writeln!(out, "AUTOMATIC RECOVERY REFUSED: {why}");
    }
    // Failover-level problems first; those that restate a finding are left to it.
    for problem in detail.problems.iter().filter(|p| {
        !matches!(
            p.code,
            ProblemCode::ErrantGtid
                | ProblemCode::ReplicationStopped
                | ProblemCode::ReplicationLagging
                | ProblemCode::PrimaryReadOnly
        )
    }) {
        let _ = writeln!(
            out,
            "PROBLEM {} {:?}: {}",
            problem.instance, problem.code, problem.explanation
        );
    }
    for finding in &detail.findings {
        let mark = match finding.severity {
            Severity::Problem => "PROBLEM",
            Severity::Warning => "warning",
        };
        let _ = writeln!(
            out,
            "{mark} {} {:?}: {}",
            finding.instance, finding.code, finding.message
        );
    }
    out
}

fn tree_lines(
    detail: &ClusterDetail,
    node: &ClusterTreeNode,
    depth: usize,
    lines: &mut Vec<(String, String)>,
) {
    let prefix = if depth == 0 {
        String::new()
    } else {
        format!("{}+ ", "  ".repeat(depth - 1))
    };
    let tags = detail
        .instance(&node.key)
        .map(instance_tags)
        .unwrap_or_else(|| "[not probed]".into());
    lines.push((format!("{prefix}{}", node.key), tags));
    for replica in &node.replicas {
        tree_lines(detail, replica, depth + 1, lines);
    }
}

/// An instance's GTID position as its server says it (tagged MySQL GTIDs included):
/// `gtid_executed` on MySQL, `gtid_current_pos` and `gtid_binlog_pos` on MariaDB.
fn gtid_line(view: &InstanceView) -> String {
    let when = if view.instance.is_reachable() {
        ""
    } else {
        " (when last seen)"
    };
    let empty = |text: String| {
        if text.is_empty() {
            "(empty)".into()
        } else {
            text
        }
    };
    match view.instance.facts.as_ref().map(|f| &f.gtid) {
        Some(GtidState::Mysql { executed, .. }) => {
            format!("gtid_executed{when}: {}", empty(executed.to_string()))
        }
        Some(GtidState::Mariadb {
            current_pos,
            binlog_pos,
            ..
        }) => format!(
            "gtid_current_pos{when}: {}; gtid_binlog_pos: {}",
            empty(current_pos.to_string()),
            empty(binlog_pos.to_string())
        ),
        _ => "GTID: unknown (never reached)".into(),
    }
}

/// `[lag,status,version,rw|ro,format,>>,GTID]` like orchestrator, plus semi-sync.
pub fn instance_tags(view: &InstanceView) -> String {
    let instance = &view.instance;
    let Some(facts) = &instance.facts else {
        return "[unknown,never reached]".into();
    };
    let replication = facts.replication.as_ref();
    let lag = match replication {
        _ if !instance.is_reachable() => "unknown".to_string(),
        None => "0s".to_string(),
        Some(r) => r
            .seconds_behind_source
            .map(|s| format!("{s}s"))
            .unwrap_or_else(|| "unknown".into()),
    };
    let status = if !instance.is_reachable() {
        "unreachable"
    } else if replication.is_some_and(|r| r.io_running != IoThreadState::Yes || !r.sql_running) {
        "nonreplicating"
    } else if view
        .findings
        .iter()
        .any(|f| f.code == crate::analysis::FindingCode::ErrantGtid)
    {
        "errant"
    } else if view
        .findings
        .iter()
        .any(|f| f.code == crate::analysis::FindingCode::ReplicationLagging)
    {
        "lagging"
    } else {
        "ok"
    };
    let mut tags = vec![
        lag,
        status.to_string(),
        facts.version.short(),
        if facts.read_only { "ro" } else { "rw" }.to_string(),
        facts.binlog_format.clone(),
    ];
    if facts.log_bin && facts.log_replica_updates {
        tags.push(">>".into());
    } else if !facts.log_bin {
        tags.push("nobinlog".into());
    }
    let gtid = match replication {
        Some(r) => r.gtid_auto_position,
        None => facts.gtid.enabled(),
    };
    if gtid {
        tags.push("GTID".into());
    }
    if facts.semi_sync.source_active {
        tags.push("semi:source".into());
    } else if facts.semi_sync.replica_active {
        tags.push("semi:replica".into());
    }
    if let Some(delay) = replication.map(|r| r.sql_delay).filter(|d| *d > 0) {
        tags.push(format!("delay={delay}s"));
    }
    if view.fenced {
        tags.push("FENCED".into());
    }
    if view.downtimed_until.is_some() {
        tags.push("downtimed".into());
    }
    format!("[{}]", tags.join(","))
}

/// One recovery: what failed, who took over, each step with its duration.
pub fn format_recovery(record: &crate::store::recovery::RecoveryRecord) -> String {
    let took = record
        .finished_at
        .and_then(|end| end.duration_since(record.started_at).ok())
        .map(|d| format!(" in {} ms", d.as_millis()))
        .unwrap_or_default();
    let mut out = format!(
        "recovery {} of {} ({}, {}): {:?}{took}\n  {} failed ({}), successor: {}\n",
        record.id,
        record.cluster,
        record.kind,
        record.trigger,
        record.status,
        record.failed,
        record.problem,
        record
            .successor
            .as_ref()
            .map(|k| k.to_string())
            .unwrap_or_else(|| "none".into())
    );
    for step in &record.steps {
        let instance = step
            .instance
            .as_ref()
            .map(|k| format!(" {k}"))
            .unwrap_or_default();
        let mark = if step.ok { "ok  " } else { "FAIL" };
        let detail = step.detail.replace('\n', "\n        ");
        let _ = writeln!(
            out,
            "  {mark} {:>5} ms  {}{instance}: {detail}",
            step.duration_ms, step.step
        );
    }
    if let Some(at) = record.acknowledged_at {
        let _ = writeln!(
            out,
            "  acknowledged {} by {}: {}",
            crate::topology::time::format(at),
            record.acknowledged_by.as_deref().unwrap_or("?"),
            record.ack_comment.as_deref().unwrap_or("")
        );
    }
    out
}

/// `pointsman drill`: the verdict, then each leg with its gaps, routes, hooks and
/// replicas.
pub fn format_drill(report: &crate::recovery::drill::DrillReport) -> String {
    let mut out = format!(
        "drill of {}: {} in {} ms\n",
        report.cluster,
        if report.passed { "PASSED" } else { "FAILED" },
        report.took_ms
    );
    for problem in &report.problems {
        let _ = writeln!(out, "  problem: {problem}");
    }
    for leg in &report.legs {
        let _ = writeln!(
            out,
            "  {} → {} ({}): writes paused {} ms, routes {}",
            leg.from,
            leg.to,
            leg.recovery_id,
            leg.write_gap_ms,
            leg.route_gap_ms
                .map(|ms| format!("{ms} ms later"))
                .unwrap_or_else(|| "not confirmed (none configured, or one did not follow)".into())
        );
        if !leg.routing.is_empty() {
            let _ = writeln!(out, "    routing: {}", leg.routing);
        }
        for hook in &leg.hooks {
            let _ = writeln!(out, "    {hook}");
        }
        for replica in &leg.replicas {
            let _ = writeln!(
                out,
                "    {} {} from {}, heartbeat {}, lag {}",
                replica.instance,
                if replica.healthy {
                    "replicates"
                } else {
                    "NOT replicating"
                },
                replica
                    .source
                    .as_ref()
                    .map_or("no one".to_string(), |s| s.to_string()),
                replica
                    .heartbeat_period
                    .map_or("—".to_string(), |p| format!("{p}s")),
                replica
                    .seconds_behind
                    .map_or("—".to_string(), |s| format!("{s}s"))
            );
        }
    }
    out
}

/// `pointsman what-if`: the verdict, then every replica ranked with why not, then the
/// hooks that would run first.
pub fn format_what_if(answer: &crate::recovery::what_if::WhatIf) -> String {
    let mut out = format!(
        "if {} ({}) died now:\n  recovered by this agent by itself: {}\n  automatic recovery: {}\n",
        answer.primary,
        answer.cluster,
        if answer.automatic { "yes" } else { "no" },
        answer.coverage.line()
    );
    match (&answer.candidate, &answer.no_promotion) {
        (Some(candidate), _) => {
            let _ = writeln!(out, "  would promote: {candidate}");
            if let Some(source) = &answer.catch_up_from {
                let _ = writeln!(out, "  after copying from: {source}");
            }
            if !answer.repointed.is_empty() {
                let names: Vec<String> = answer.repointed.iter().map(|k| k.to_string()).collect();
                let _ = writeln!(out, "  would re-point: {}", names.join(", "));
            }
        }
        (None, Some(why)) => {
            let _ = writeln!(out, "  would promote: no one ({why})");
        }
        (None, None) => {}
    }
    if !answer.verdicts.is_empty() {
        out.push_str("  replicas, best first:\n");
        for verdict in &answer.verdicts {
            let judged = if verdict.eligible {
                "eligible".to_string()
            } else {
                format!("passed over: {}", verdict.reasons.join("; "))
            };
            let _ = writeln!(
                out,
                "    {}  {} transactions, {:?}, {judged}",
                verdict.instance, verdict.position, verdict.rule
            );
        }
    }
    for hook in &answer.pre_failover_hooks {
        let _ = writeln!(out, "  pre_failover hook first (may veto): {hook}");
    }
    out
}

/// `pointsman routes`: each cluster's routes, then per backend whether it says the same
/// (its own lines when it does; what it should say and what it says when it does not).
pub fn format_routes(view: &crate::routing::engine::RoutesView) -> String {
    let mut out = String::new();
    let keys = |endpoints: &[crate::routing::Endpoint]| {
        if endpoints.is_empty() {
            "-".to_string()
        } else {
            endpoints
                .iter()
                .map(|e| e.key.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    if view.clusters.is_empty() {
        out.push_str("no routed clusters (a cluster is routed once it has a [[cluster]] alias and its primary was reached)\n");
    }
    for route in &view.clusters {
        let writer = match &route.writer {
            Some(writer) => writer.key.to_string(),
            None => "NONE (withdrawn during a failover)".to_string(),
        };
        let _ = writeln!(
            out,
            "{}: writer {writer}  epoch {}{}",
            route.cluster,
            route.epoch,
            route
                .recovery_id
                .as_ref()
                .map(|id| format!("  (recovery {id})"))
                .unwrap_or_default()
        );
        let _ = writeln!(out, "  readers {}", keys(&route.readers));
        let names = |keys: &[crate::topology::InstanceKey]| {
            keys.iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !route.standby.is_empty() {
            let _ = writeln!(
                out,
                "  standby {} (out of the reader set)",
                names(&route.standby)
            );
        }
        if !route.fenced.is_empty() {
            let _ = writeln!(
                out,
                "  fenced  {} (named by no backend)",
                names(&route.fenced)
            );
        }
    }
    for backend in &view.backends {
        let status = &backend.status;
        let state = match (&backend.error, &status.failing_since) {
            (Some(error), _) => format!("UNREACHABLE: {error}"),
            (None, Some(since)) => format!(
                "FAILING since {}: {}",
                crate::topology::time::format(*since),
                status.last_error.clone().unwrap_or_default()
            ),
            (None, None) if backend.inspections.iter().all(|i| i.in_sync) => "in sync".into(),
            (None, None) => "DRIFT".into(),
        };
        let lag = status
            .last_promotion_lag_ms
            .map(|ms| format!(", {ms} ms behind the last promotion"))
            .unwrap_or_default();
        let _ = writeln!(out, "\n{}  {state}{lag}", status.backend);
        if let Some(error) = &status.persist_error {
            let _ = writeln!(
                out,
                "  NOT SAVED: traffic follows the routes, but they would not survive a restart of the backend: {error} (retrying)"
            );
        }
        for inspection in &backend.inspections {
            if inspection.in_sync {
                for line in &inspection.now {
                    let _ = writeln!(out, "  {line}");
                }
            } else {
                let _ = writeln!(out, "  {} should say:", inspection.cluster);
                for line in &inspection.should {
                    let _ = writeln!(out, "    {line}");
                }
                let _ = writeln!(out, "  {} says now:", inspection.cluster);
                for line in &inspection.now {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    if view.backends.is_empty() {
        out.push_str("\nno routing backends are configured ([routing.dns], [routing.consul], [[routing.proxysql]])\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{FindingRules, ProblemRules};
    use crate::api::views::cluster_details;
    use crate::topology::instance::tests_support::{primary, replica};
    use crate::topology::{InstanceKey, Snapshot};
    use std::time::SystemTime;

    #[test]
    fn the_tree_reads_like_orchestrators() {
        let key = |port| InstanceKey::new("127.0.0.1", port);
        let mut stopped = replica(key(3), key(2));
        stopped
            .facts
            .as_mut()
            .and_then(|f| f.replication.as_mut())
            .expect("replica")
            .sql_running = false;
        let snapshot = Snapshot {
            instances: [primary(key(1)), replica(key(2), key(1)), stopped]
                .into_iter()
                .map(|i| (i.key.clone(), i))
                .collect(),
            ..Snapshot::default()
        };
        let rules = ProblemRules {
            findings: FindingRules::default(),
            silent_heartbeats: 3,
        };
        let details = cluster_details(
            &snapshot,
            &[],
            &rules,
            &Default::default(),
            SystemTime::now(),
        );
        let text = format_topology(&details[0], false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "127.0.0.1:1      [0s,ok,9.7.4,rw,ROW,>>,GTID]");
        assert_eq!(lines[1], "+ 127.0.0.1:2    [0s,ok,9.7.4,ro,ROW,>>,GTID]");
        assert_eq!(
            lines[2],
            "  + 127.0.0.1:3  [0s,nonreplicating,9.7.4,ro,ROW,>>,GTID]"
        );
        assert!(text.contains("PROBLEM 127.0.0.1:3 ReplicationStopped: SQL thread is stopped"));

        let table = format_clusters(&[details[0].summary()]);
        assert!(table.contains("127.0.0.1:1  1P 0W"), "{table}");
    }

    #[test]
    fn gtid_sets_show_under_each_instance_and_an_unknown_lag_says_so() {
        use crate::topology::instance::tests_support::with_gtids;
        let key = |port| InstanceKey::new("127.0.0.1", port);
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut stopped = with_gtids(replica(key(2), key(1)), &format!("{uuid}:1-5"));
        let replication = stopped
            .facts
            .as_mut()
            .and_then(|f| f.replication.as_mut())
            .expect("replica");
        replication.sql_running = false;
        replication.seconds_behind_source = None;
        let snapshot = Snapshot {
            instances: [
                with_gtids(primary(key(1)), &format!("{uuid}:1-7:tag_a:1-2")),
                stopped,
            ]
            .into_iter()
            .map(|i| (i.key.clone(), i))
            .collect(),
            ..Snapshot::default()
        };
        let details = cluster_details(
            &snapshot,
            &[],
            &ProblemRules::default(),
            &Default::default(),
            SystemTime::now(),
        );
        let text = format_topology(&details[0], true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            format!("    gtid_executed: {uuid}:1-7:tag_a:1-2"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("+ 127.0.0.1:2  [unknown,nonreplicating,"),
            "{text}"
        );
        assert_eq!(
            lines[3],
            format!("      gtid_executed: {uuid}:1-5"),
            "{text}"
        );
        assert!(!format_topology(&details[0], false).contains("gtid_executed"));
    }
}
