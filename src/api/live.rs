//! What watchers read without asking twice: `GET /api/v1/events[?cluster=NAME]`,
//! server-sent events carrying every cluster's summary (`event: summaries`, the same
//! JSON as `GET /api/v1/clusters`) and the detail of the one cluster watched
//! (`event: cluster`, as `GET /api/v1/clusters/{name}`, `null` while there is no such
//! cluster), each at connect and whenever it changes, at most every 250 ms — so a page
//! over thousands of clusters receives the few bytes per cluster its list shows, and
//! the full detail of only the cluster it shows; `event: changes` (`{"routes":n,"recoveries":n}`, two fingerprints)
//! whenever the routes or a backend's state, or the recent recoveries change, so a page
//! reloads its routing and recovery panels when the tree changes, not on a timer; and
//! every second `event: heartbeat` with the agent's clock (`{"now":"<RFC 3339>"}`), so a
//! watcher tells a quiet agent from a frozen one or a lost network; and `GET /metrics` in Prometheus text format: instances by state,
//! lag per replica, problems by code, findings by severity, recoveries by outcome,
//! routing backends (up, lag behind the last promotion), poll latency per instance.
//!
//! The stream costs the agent little more whatever the number of watchers: one task
//! computes the clusters and the summaries' JSON (on a blocking thread, so probes never
//! wait for it, and only while someone watches) and every watcher sends the latest
//! summaries and writes out the one detail it watches. A watcher that reads slowly
//! skips to the newest state instead of queueing the ones it missed, and at most
//! `api.max_event_clients` watch at once; the next is answered 503.

use super::views::{ClusterDetail, ClusterSummary};
use super::{ApiError, ApiState};
use crate::routing::engine::BackendStatus;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures::{Stream, StreamExt};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

/// Events are sent at most this often, however often the topology changes.
const EVENT_EVERY: Duration = Duration::from_millis(250);
/// Looked at this often even without a new snapshot (fences, downtime, refusals).
const EVENT_AT_LEAST: Duration = Duration::from_secs(2);
/// How often the stream says the agent is alive, quiet or not.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/events", get(events))
        .route("/metrics", get(metrics))
}

/// What the event stream's watchers share: the latest clusters (`None` while nobody
/// watches) and the places left.
#[derive(Clone)]
pub struct EventFeed {
    latest: Arc<watch::Sender<Option<Arc<Published>>>>,
    /// The fingerprints of the routes and of the recent recoveries, as JSON.
    changes: Arc<watch::Sender<Option<Arc<str>>>>,
    places: Arc<Semaphore>,
    max_clients: usize,
    /// Wakes the publisher when the first watcher comes.
    watched: Arc<Notify>,
}

impl EventFeed {
    pub fn new(max_clients: usize) -> EventFeed {
        EventFeed {
            latest: Arc::new(watch::channel(None).0),
            changes: Arc::new(watch::channel(None).0),
            places: Arc::new(Semaphore::new(max_clients)),
            max_clients,
            watched: Arc::new(Notify::new()),
        }
    }

    /// A place for one more watcher, or `None` when every place is taken.
    fn join(&self) -> Option<Watcher> {
        let place = self.places.clone().try_acquire_owned().ok()?;
        let latest = self.latest.subscribe();
        let changes = self.changes.subscribe();
        self.watched.notify_one();
        Some(Watcher {
            _place: place,
            latest,
            changes,
        })
    }
}

/// One computation of the clusters, for every watcher: the summaries' JSON, and the
/// details each watcher picks its cluster from.
pub struct Published {
    summaries: Arc<str>,
    details: Vec<ClusterDetail>,
}

impl Published {
    fn of(details: Vec<ClusterDetail>) -> Published {
        let summaries =
            serde_json::to_string(&summaries_of(&details)).unwrap_or_else(|_| "[]".into());
        Published {
            summaries: summaries.into(),
            details,
        }
    }

    /// The JSON of the cluster called `name` now or before a recovery renamed it;
    /// `null` when there is none.
    fn detail(&self, name: &str) -> String {
        let found = self.details.iter().find(|d| d.name == name).or_else(|| {
            self.details
                .iter()
                .find(|d| d.formerly.iter().any(|f| f == name))
        });
        serde_json::to_string(&found).unwrap_or_else(|_| "null".into())
    }
}

/// Every cluster's summary, problems first, then by name: `GET /api/v1/clusters` and
/// the stream's `summaries`.
pub(crate) fn summaries_of(details: &[ClusterDetail]) -> Vec<ClusterSummary> {
    problems_first(details.iter().map(ClusterDetail::summary).collect())
}

/// `list` with the clusters that have problems first, then by name.
pub(crate) fn problems_first(mut list: Vec<ClusterSummary>) -> Vec<ClusterSummary> {
    list.sort_by(|a, b| {
        b.health
            .status
            .cmp(&a.health.status)
            .then(a.name.cmp(&b.name))
    });
    list
}

/// The one task that computes the clusters for every watcher, while there is one; it
/// ends when the agent stops.
pub async fn publish(state: ApiState) {
    tokio::spawn(publish_changes(state.clone()));
    let feed = state.events.clone();
    let mut snapshots = state.discovery.subscribe();
    let mut stopping = state.stopping.clone();
    loop {
        if feed.latest.receiver_count() == 0 {
            // Nobody watches: keep nothing, compute nothing, until someone comes.
            feed.latest.send_replace(None);
            tokio::select! {
                () = feed.watched.notified() => continue,
                _ = stopping.changed() => return,
            }
        }
        if *stopping.borrow() {
            return;
        }
        let reading = state.clone();
        let Ok(published) =
            tokio::task::spawn_blocking(move || Published::of(reading.details())).await
        else {
            return;
        };
        feed.latest.send_replace(Some(Arc::new(published)));
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stopping.changed() => return,
            () = feed.watched.notified() => {}
            () = tokio::time::sleep(EVENT_AT_LEAST) => {}
        }
        tokio::time::sleep(EVENT_EVERY).await;
        snapshots.borrow_and_update();
    }
}

/// Every `EVENT_EVERY`, while someone watches: the fingerprints of what the routing
/// and recovery panels show (the routes' version and each backend's state; the recent
/// recoveries' ids, states and step counts), published when they change.
async fn publish_changes(state: ApiState) {
    use std::hash::{Hash, Hasher};
    let feed = state.events.clone();
    let mut stopping = state.stopping.clone();
    loop {
        if *stopping.borrow() {
            return;
        }
        if feed.changes.receiver_count() > 0 {
            let routing = &state.coordinator.routing;
            let mut routes = std::collections::hash_map::DefaultHasher::new();
            routing.routes().version.hash(&mut routes);
            for status in routing.status() {
                (
                    status.backend,
                    status.applied_version,
                    status.last_error,
                    status.failing_since.is_some(),
                    status.persist_error,
                )
                    .hash(&mut routes);
            }
            let mut recoveries = std::collections::hash_map::DefaultHasher::new();
            for record in state.store.recoveries(None, 5).unwrap_or_default() {
                (
                    record.id,
                    format!("{:?}", record.status),
                    record.finished_at.is_some(),
                    record.acknowledged_at.is_some(),
                    record.steps.len(),
                )
                    .hash(&mut recoveries);
            }
            let json = format!(
                "{{\"routes\":{},\"recoveries\":{}}}",
                routes.finish() >> 11,
                recoveries.finish() >> 11
            );
            feed.changes.send_if_modified(|changes| {
                let changed = changes.as_deref() != Some(json.as_str());
                if changed {
                    *changes = Some(json.into());
                }
                changed
            });
        }
        tokio::select! {
            () = tokio::time::sleep(EVENT_EVERY) => {}
            _ = stopping.changed() => return,
        }
    }
}

/// `GET /api/v1/events?cluster=NAME`: which cluster's detail the watcher wants.
#[derive(serde::Deserialize)]
struct Watching {
    cluster: Option<String>,
}

async fn events(
    axum::extract::State(state): axum::extract::State<ApiState>,
    axum::extract::Query(watching): axum::extract::Query<Watching>,
) -> axum::response::Response {
    let feed = &state.events;
    let Some(watcher) = feed.join() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} clients already watch the event stream (api.max_event_clients): try again later, or poll GET /api/v1/clusters (the web page does by itself)",
                feed.max_clients
            ),
        )
        .into_response();
    };
    let Watcher {
        _place,
        latest,
        changes,
    } = watcher;
    // Only what changed since this watcher's last event is sent again.
    let mut sent_summaries: Option<Arc<str>> = None;
    let mut sent_detail: Option<String> = None;
    let clusters = follow(latest, state.stopping.clone()).flat_map(move |published| {
        let _held = &_place;
        let mut events = Vec::new();
        if sent_summaries.as_deref() != Some(&*published.summaries) {
            events.push(Ok::<_, Infallible>(
                Event::default()
                    .event("summaries")
                    .data(&*published.summaries),
            ));
            sent_summaries = Some(published.summaries.clone());
        }
        if let Some(name) = &watching.cluster {
            let detail = published.detail(name);
            if sent_detail.as_deref() != Some(detail.as_str()) {
                events.push(Ok(Event::default().event("cluster").data(&detail)));
                sent_detail = Some(detail);
            }
        }
        futures::stream::iter(events)
    });
    let changes = follow(changes, state.stopping.clone())
        .map(|json| Ok::<_, Infallible>(Event::default().event("changes").data(&*json)));
    let beats = heartbeats(state.stopping.clone())
        .map(|json| Ok::<_, Infallible>(Event::default().event("heartbeat").data(json)));
    Sse::new(futures::stream::select(
        clusters,
        futures::stream::select(changes, beats),
    ))
    .keep_alive(KeepAlive::default())
    .into_response()
}

/// `{"now":"<the agent's clock>"}` every `HEARTBEAT_EVERY`, until the agent stops.
fn heartbeats(stopping: watch::Receiver<bool>) -> impl Stream<Item = String> {
    futures::stream::unfold(stopping, |mut stopping| async move {
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = stopping.changed() => return None,
        }
        if *stopping.borrow() {
            return None;
        }
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        Some((format!("{{\"now\":\"{now}\"}}"), stopping))
    })
}

/// One watcher of the stream: its place, held until it goes, the latest clusters'
/// state and the latest fingerprints of the panels.
struct Watcher {
    _place: OwnedSemaphorePermit,
    latest: watch::Receiver<Option<Arc<Published>>>,
    changes: watch::Receiver<Option<Arc<str>>>,
}

/// What `latest` holds now and after each change, skipping the values it was too slow
/// to take; ends when the agent stops.
fn follow<T: Send + Sync + ?Sized + 'static>(
    latest: watch::Receiver<Option<Arc<T>>>,
    stopping: watch::Receiver<bool>,
) -> impl Stream<Item = Arc<T>> {
    futures::stream::unfold(
        (latest, stopping, true),
        |(mut latest, mut stopping, first)| async move {
            loop {
                if *stopping.borrow() {
                    return None;
                }
                if !first || latest.borrow().is_none() {
                    tokio::select! {
                        changed = latest.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                        // The agent stops: end the stream so the server can.
                        _ = stopping.changed() => return None,
                    }
                }
                let json = latest.borrow_and_update().clone();
                if let Some(json) = json {
                    return Some((json, (latest, stopping, false)));
                }
            }
        },
    )
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
    use futures::FutureExt;

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

    #[tokio::test]
    async fn watchers_have_places_and_a_slow_one_gets_the_latest_state_only() {
        let feed = EventFeed::new(2);
        let (_stop, stopping) = watch::channel(false);
        let first = feed.join().expect("a place");
        let second = feed.join().expect("a place");
        assert!(feed.join().is_none(), "a third watcher of two places");
        drop(second);
        let _third = feed.join().expect("the place the second left");

        let Watcher {
            _place: _first_place,
            latest,
            ..
        } = first;
        let mut states = Box::pin(follow(latest, stopping));
        assert!(
            states.next().now_or_never().is_none(),
            "nothing to send yet"
        );
        for n in 0..10_000 {
            feed.latest.send_replace(Some(Arc::new(Published {
                summaries: format!("state {n}").into(),
                details: Vec::new(),
            })));
        }
        let sent = states.next().now_or_never().flatten();
        assert_eq!(
            sent.map(|p| p.summaries.to_string()).as_deref(),
            Some("state 9999")
        );
        assert!(
            states.next().now_or_never().is_none(),
            "the states it was too slow for were kept"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("a", "x\"y\\z")]), "{a=\"x\\\"y\\\\z\"}");
    }
}
