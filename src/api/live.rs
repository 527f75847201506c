//! What watchers read without asking twice: `GET /api/v1/events`, server-sent events
//! carrying every cluster's detail (`event: clusters`, the same JSON as
//! `GET /api/v1/clusters/{name}`, as an array) at connect and whenever it changes, at
//! most every 250 ms; and `GET /metrics` in Prometheus text format: instances by state,
//! lag per replica, problems by code, findings by severity, recoveries by outcome,
//! routing backends (up, lag behind the last promotion), poll latency per instance.

use super::views::ClusterDetail;
use super::ApiState;
use crate::routing::engine::BackendStatus;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures::Stream;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::time::Duration;

/// Events are sent at most this often, however often the topology changes.
const EVENT_EVERY: Duration = Duration::from_millis(250);
/// Looked at this often even without a new snapshot (fences, downtime, refusals).
const EVENT_AT_LEAST: Duration = Duration::from_secs(2);

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/events", get(events))
        .route("/metrics", get(metrics))
}

async fn events(
    axum::extract::State(state): axum::extract::State<ApiState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let snapshots = state.discovery.subscribe();
    let stopping = state.stopping.clone();
    let stream = futures::stream::unfold(
        (state, snapshots, stopping, None::<String>, true),
        |(state, mut snapshots, mut stopping, last, first)| async move {
            loop {
                if *stopping.borrow() {
                    return None;
                }
                if !first || last.is_some() {
                    tokio::select! {
                        changed = snapshots.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                        // The agent stops: end the stream so the server can.
                        _ = stopping.changed() => return None,
                        _ = tokio::time::sleep(EVENT_AT_LEAST) => {}
                    }
                    tokio::time::sleep(EVENT_EVERY).await;
                    snapshots.borrow_and_update();
                }
                let json = serde_json::to_string(&state.details()).unwrap_or_else(|_| "[]".into());
                if last.as_deref() != Some(json.as_str()) {
                    let event = Event::default().event("clusters").data(json.clone());
                    return Some((Ok(event), (state, snapshots, stopping, Some(json), false)));
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(axum::extract::State(state): axum::extract::State<ApiState>) -> impl IntoResponse {
    let details = state.details();
    let routing = state.coordinator.routing.status();
    // Counted in SQL: a scrape must not read every recovery's steps.
    let recoveries = state.store.recovery_counts().unwrap_or_default();
    let mut text = render_metrics(&details, &routing, &recoveries);
    let leads = state.coordinator.executor.lease.gate().is_ok();
    let _ = writeln!(
        text,
        "# HELP pointsman_leader 1 while this agent leads (it acts), 0 while another does\n\
         # TYPE pointsman_leader gauge\npointsman_leader {}\n\
         # HELP pointsman_store_ok 1 while the agent's store is its file and takes writes\n\
         # TYPE pointsman_store_ok gauge\npointsman_store_ok {}",
        u8::from(leads),
        u8::from(state.store.problem().is_none())
    );
    let standings = state.coordinator.standings();
    if !standings.is_empty() {
        let mut clusters: Vec<_> = standings.into_iter().collect();
        clusters.sort_by(|a, b| a.0.cmp(&b.0));
        let _ = writeln!(
            text,
            "# HELP pointsman_agent_locks Reachable members of a cluster whose agent lock this agent (agent=\"self\") or another agent holds\n\
             # TYPE pointsman_agent_locks gauge"
        );
        for (cluster, standing) in &clusters {
            let mine = labels(&[("cluster", cluster), ("agent", "self")]);
            let _ = writeln!(text, "pointsman_agent_locks{mine} {}", standing.held);
            for (other, count) in &standing.others {
                let theirs = labels(&[("cluster", cluster), ("agent", other)]);
                let _ = writeln!(text, "pointsman_agent_locks{theirs} {count}");
            }
        }
        let _ = writeln!(
            text,
            "# HELP pointsman_acting 1 while this agent may act on the cluster (it holds the agent lock on most reachable members)\n\
             # TYPE pointsman_acting gauge"
        );
        for (cluster, standing) in &clusters {
            let _ = writeln!(
                text,
                "pointsman_acting{} {}",
                labels(&[("cluster", cluster)]),
                u8::from(standing.acting())
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The metrics page (pure).
pub fn render_metrics(
    details: &[ClusterDetail],
    routing: &[BackendStatus],
    recoveries: &BTreeMap<String, usize>,
) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let instances = details.iter().flat_map(|d| d.instances.iter());
    let mut states: BTreeMap<&str, usize> =
        [("reachable", 0), ("unreachable", 0), ("unprobed", 0)].into();
    for view in instances.clone() {
        let state = if view.instance.is_reachable() {
            "reachable"
        } else if view.instance.facts.is_none() && view.instance.last_seen.is_none() {
            "unprobed"
        } else {
            "unreachable"
        };
        *states.entry(state).or_default() += 1;
    }
    family(
        "pointsman_instances",
        "gauge",
        "Instances known to pointsman, by state.",
        states
            .iter()
            .map(|(state, n)| (labels(&[("state", state)]), *n as f64))
            .collect(),
    );
    family(
        "pointsman_replica_lag_seconds",
        "gauge",
        "Seconds_Behind_Source of each replicating replica.",
        instances
            .clone()
            .filter_map(|view| {
                let lag = view
                    .instance
                    .facts
                    .as_ref()?
                    .replication
                    .as_ref()?
                    .seconds_behind_source?;
                let key = view.instance.key.to_string();
                Some((
                    labels(&[("cluster", &view.cluster), ("instance", &key)]),
                    lag as f64,
                ))
            })
            .collect(),
    );
    family(
        "pointsman_poll_seconds",
        "gauge",
        "How long the last probe of each instance took.",
        instances
            .clone()
            .filter_map(|view| {
                let millis = view.instance.probe_millis?;
                let key = view.instance.key.to_string();
                Some((
                    labels(&[("cluster", &view.cluster), ("instance", &key)]),
                    millis as f64 / 1000.0,
                ))
            })
            .collect(),
    );
    let mut problems: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut findings: BTreeMap<(String, String), usize> = BTreeMap::new();
    for detail in details {
        for problem in &detail.problems {
            *problems
                .entry((detail.name.clone(), format!("{:?}", problem.code)))
                .or_default() += 1;
        }
        for finding in &detail.findings {
            *findings
                .entry((
                    detail.name.clone(),
                    format!("{:?}", finding.severity).to_lowercase(),
                ))
                .or_default() += 1;
        }
    }
    family(
        "pointsman_problems",
        "gauge",
        "Problems (failures that may need recovery) by cluster and code.",
        problems
            .iter()
            .map(|((cluster, code), n)| {
                (labels(&[("cluster", cluster), ("code", code)]), *n as f64)
            })
            .collect(),
    );
    family(
        "pointsman_findings",
        "gauge",
        "Findings by cluster and severity.",
        findings
            .iter()
            .map(|((cluster, severity), n)| {
                (
                    labels(&[("cluster", cluster), ("severity", severity)]),
                    *n as f64,
                )
            })
            .collect(),
    );
    family(
        "pointsman_recoveries",
        "gauge",
        "Recoveries and switchovers in the store, by outcome.",
        recoveries
            .iter()
            .map(|(status, n)| (labels(&[("status", status)]), *n as f64))
            .collect(),
    );
    family(
        "pointsman_routing_backend_up",
        "gauge",
        "1 when the routing backend took the last routes, 0 while it fails.",
        routing
            .iter()
            .map(|s| {
                let up = if s.failing_since.is_none() { 1.0 } else { 0.0 };
                (labels(&[("backend", &s.backend)]), up)
            })
            .collect(),
    );
    family(
        "pointsman_routing_promotion_lag_seconds",
        "gauge",
        "How long after the last promotion each routing backend named the new primary.",
        routing
            .iter()
            .filter_map(|s| {
                let ms = s.last_promotion_lag_ms?;
                Some((labels(&[("backend", &s.backend)]), ms as f64 / 1000.0))
            })
            .collect(),
    );
    out
}

/// `{a="x",b="y"}` with Prometheus escaping.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(name, value)| {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_and_recoveries_render_as_prometheus_text() {
        let status = BackendStatus {
            backend: "proxysql 127.0.0.1:6032".into(),
            last_promotion_lag_ms: Some(4),
            failing_since: Some(std::time::SystemTime::now()),
            ..BackendStatus::default()
        };
        let recoveries = BTreeMap::from([("succeeded".to_string(), 2)]);
        let text = render_metrics(&[], &[status], &recoveries);
        assert!(
            text.contains("pointsman_instances{state=\"reachable\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("pointsman_recoveries{status=\"succeeded\"} 2\n"));
        assert!(
            text.contains("pointsman_routing_backend_up{backend=\"proxysql 127.0.0.1:6032\"} 0\n")
        );
        assert!(text.contains(
            "pointsman_routing_promotion_lag_seconds{backend=\"proxysql 127.0.0.1:6032\"} 0.004\n"
        ));
        assert!(text.contains("# TYPE pointsman_replica_lag_seconds gauge\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("a", "x\"y\\z")]), "{a=\"x\\\"y\\\\z\"}");
    }
}
