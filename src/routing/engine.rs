//! The routing engine: works out the routes from every new snapshot (and from the pins a
//! failover sets), publishes them as one value, and drives each backend on its own task
//! — after every change and every `routing.reconcile_interval`, so drift is repaired.
//! A backend that fails is retried with a doubling backoff, a bounded number of times,
//! then again at the next change or tick; it never holds up the others or a failover,
//! which waits for the backends at most `routing.apply_timeout`. Every change a backend
//! makes is audited, and each backend's lag behind a promotion is recorded.

use super::desired::{desired_routes, DesiredRoute, Pin, RoutePolicy};
use super::{ClusterRoute, Endpoint, Inspection, Router, Routes};
use crate::discovery::DiscoveryHandle;
use crate::leader::Lease;
use crate::store::routes::WriterDecision;
use crate::store::{AuditEntry, Store, StoreError};
use crate::topology::cluster::ClusterAlias;
use crate::topology::InstanceKey;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Attempts at one set of routes before waiting for the next change or tick.
const MAX_ATTEMPTS: u32 = 5;
/// The first retry's delay; each next one doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How soon a shared backend looks again at clusters another agent (or nobody yet)
/// holds the agent lock of.
const CLAIMS_LOOK_AGAIN: Duration = Duration::from_millis(500);
/// How long the routes must stay unchanged before a backend's slow persisting step
/// (ProxySQL's SAVE TO DISK) runs: a failover's withdraw and promote are both done by
/// then, and never wait behind it.
const PERSIST_AFTER_QUIET: Duration = Duration::from_millis(500);
/// How long a resolved host name is trusted before it is looked up again.
const ADDRESS_TTL: Duration = Duration::from_secs(60);
/// A host name lookup that takes longer is given up (the route keeps no address).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// How the engine runs.
#[derive(Clone, Copy, Debug)]
pub struct EngineSettings {
    pub policy: RoutePolicy,
    pub reconcile_interval: Duration,
    /// How long a failover waits for the backends before going on without them.
    pub apply_timeout: Duration,
    /// How long one reconcile of one backend may take.
    pub reconcile_timeout: Duration,
}

/// How a backend is doing, for the API, `pointsman routes` and the metrics.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BackendStatus {
    pub backend: String,
    /// The version of the last routes it was brought to.
    pub applied_version: u64,
    #[serde(with = "crate::topology::time::option")]
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    #[serde(with = "crate::topology::time::option")]
    pub failing_since: Option<SystemTime>,
    /// How long after the last promotion this backend named the new primary.
    pub last_promotion_lag_ms: Option<u64>,
    /// Why the routes could not be made to survive a restart of the backend (ProxySQL's
    /// SAVE TO DISK failed); traffic already follows them. Retried until it works.
    #[serde(default)]
    pub persist_error: Option<String>,
    #[serde(skip)]
    pub(crate) applied_at: Option<Instant>,
}

/// How each backend took one change of routes that a recovery waited for.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RoutingReport {
    /// Whether the cluster is routed at all (it has a `[[cluster]]` alias).
    pub routed: bool,
    pub version: u64,
    pub backends: Vec<BackendOutcome>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackendOutcome {
    pub backend: String,
    /// How long after the change it was applied; `None` if not within the wait.
    pub took_ms: Option<u64>,
    pub error: Option<String>,
}

impl RoutingReport {
    /// True when every backend took the change within the wait.
    pub fn complete(&self) -> bool {
        self.backends.iter().all(|b| b.took_ms.is_some())
    }
}

impl fmt::Display for RoutingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.routed {
            return f.write_str(
                "the cluster is not routed (only clusters with a [[cluster]] alias are)",
            );
        }
        if self.backends.is_empty() {
            return f.write_str("no routing backends are configured");
        }
        let parts: Vec<String> = self
            .backends
            .iter()
            .map(|b| match (b.took_ms, &b.error) {
                (Some(ms), _) => format!("{} in {ms} ms", b.backend),
                (None, Some(error)) => {
                    format!(
                        "{}: not yet ({error}); retried in the background",
                        b.backend
                    )
                }
                (None, None) => format!("{}: not yet; retried in the background", b.backend),
            })
            .collect();
        f.write_str(&parts.join("; "))
    }
}

/// What `pointsman routes` shows: the routes, and per backend what it says now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoutesView {
    pub version: u64,
    pub clusters: Vec<ClusterRoute>,
    pub backends: Vec<BackendView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendView {
    pub status: BackendStatus,
    pub inspections: Vec<Inspection>,
    /// Why the backend could not be read now.
    pub error: Option<String>,
}

/// The routes record in Consul (`<routes_prefix>/<cluster>`), as the engine reads it.
pub struct RoutesRecord {
    pub consul: Arc<super::consul::ConsulRouter>,
    /// With `[ha]`: followers' own backends (DNS) answer what the leader recorded.
    pub followed: bool,
}

/// A handle to the running engine; cheap to clone.
#[derive(Clone)]
pub struct Routing {
    inner: Arc<Inner>,
}

struct Inner {
    backends: Vec<Arc<dyn Router>>,
    settings: EngineSettings,
    store: Store,
    discovery: DiscoveryHandle,
    aliases: Vec<ClusterAlias>,
    routes: watch::Sender<Arc<Routes>>,
    status: watch::Sender<BTreeMap<String, BackendStatus>>,
    pins: Mutex<HashMap<String, (Pin, Option<String>)>>,
    decisions: Mutex<HashMap<String, WriterDecision>>,
    addresses: tokio::sync::Mutex<HashMap<String, (Vec<IpAddr>, Instant)>>,
    /// Held while routes are worked out and published, so versions never interleave.
    publishing: tokio::sync::Mutex<()>,
    /// Shared backends are written only while this agent leads.
    lease: Lease,
    /// With Consul: the routes record, where fences and decisions outlive this agent's
    /// store.
    record: Option<Arc<super::consul::ConsulRouter>>,
    /// Whether the fences the record names have been read back into the store since
    /// this agent began to act (`Routing::set_fences_restored`): until then the record
    /// is not written, or a store that lacks them (lost, or another leader's fences)
    /// would write them out of it.
    fences_restored: std::sync::atomic::AtomicBool,
    /// With `[ha]` and Consul: the leader's routes as last read (see `follow`), which
    /// this agent's own backends (its DNS responder) follow while it does not lead.
    leader_routes: watch::Sender<Option<Arc<Routes>>>,
    /// Turns true when the agent stops: every task of the engine ends.
    stopping: watch::Sender<bool>,
}

impl Routing {
    /// Starts the engine and one task per backend.
    pub fn start(
        backends: Vec<Arc<dyn Router>>,
        settings: EngineSettings,
        store: Store,
        discovery: DiscoveryHandle,
        aliases: Vec<ClusterAlias>,
        lease: Lease,
        record: Option<RoutesRecord>,
    ) -> Routing {
        let status = backends
            .iter()
            .map(|b| {
                (
                    b.name(),
                    BackendStatus {
                        backend: b.name(),
                        ..BackendStatus::default()
                    },
                )
            })
            .collect();
        let inner = Arc::new(Inner {
            backends,
            settings,
            store,
            discovery,
            aliases,
            routes: watch::Sender::new(Arc::new(Routes::default())),
            status: watch::Sender::new(status),
            pins: Mutex::new(HashMap::new()),
            decisions: Mutex::new(HashMap::new()),
            addresses: tokio::sync::Mutex::new(HashMap::new()),
            publishing: tokio::sync::Mutex::new(()),
            lease,
            record: record.as_ref().map(|r| r.consul.clone()),
            fences_restored: std::sync::atomic::AtomicBool::new(false),
            leader_routes: watch::Sender::new(None),
            stopping: watch::Sender::new(false),
        });
        if let Some(record) = record.filter(|r| r.followed) {
            tokio::spawn(super::follow::follow_leader(
                record.consul,
                inner.lease.clone(),
                inner.leader_routes.clone(),
                inner.stopping.subscribe(),
            ));
        }
        tokio::spawn(plan_routes(inner.clone()));
        for backend in &inner.backends {
            let (applied, applied_rx) = watch::channel(0u64);
            tokio::spawn(drive(inner.clone(), backend.clone(), applied));
            tokio::spawn(persist(inner.clone(), backend.clone(), applied_rx));
        }
        Routing { inner }
    }

    /// Ends the engine's tasks and stops the backends that run something of their own
    /// (the DNS responder).
    pub fn stop(&self) {
        self.inner.stopping.send_replace(true);
        for backend in &self.inner.backends {
            backend.stop();
        }
    }

    /// Says whether the fences of the routes record are in the store now (read back
    /// since this agent began to act: `recovery::resume`), which the record's writes
    /// wait for.
    pub fn set_fences_restored(&self, restored: bool) {
        self.inner
            .fences_restored
            .store(restored, std::sync::atomic::Ordering::SeqCst);
    }

    /// The old primaries the routes record in Consul names as fenced, per cluster;
    /// `None` without Consul routing.
    pub async fn recorded_fences(&self) -> Option<Result<Vec<(String, InstanceKey)>, String>> {
        let record = self.inner.record.as_ref()?;
        Some(record.recorded_routes(None).await.map(|(_, routes)| {
            routes
                .into_values()
                .flat_map(|route| {
                    let cluster = route.cluster;
                    route
                        .fenced
                        .into_iter()
                        .map(move |key| (cluster.clone(), key))
                })
                .collect()
        }))
    }

    /// The routes as last published.
    pub fn routes(&self) -> Arc<Routes> {
        self.inner.routes.borrow().clone()
    }

    pub fn status(&self) -> Vec<BackendStatus> {
        self.inner.status.borrow().values().cloned().collect()
    }

    /// Failover, step one: no backend names `old` as the writer of `cluster` any more,
    /// and it is fenced from every route. Waits for the backends at most
    /// `routing.apply_timeout`.
    pub async fn withdraw_writer(
        &self,
        cluster: &str,
        old: &InstanceKey,
        recovery_id: &str,
    ) -> RoutingReport {
        self.no_writer(cluster, old, true, recovery_id).await
    }

    /// A switchover, as writes stop: no backend names `old` as the writer while the new
    /// one is promoted (ProxySQL holds new writes until a writer is back instead of
    /// sending them to a read_only server, and cuts sessions tied to `old`), but `old`
    /// stays a member. `release` undoes it if the switchover rolls back. Waits for the
    /// backends at most `routing.apply_timeout`.
    pub async fn pause_writer(
        &self,
        cluster: &str,
        old: &InstanceKey,
        recovery_id: &str,
    ) -> RoutingReport {
        self.no_writer(cluster, old, false, recovery_id).await
    }

    async fn no_writer(
        &self,
        cluster: &str,
        old: &InstanceKey,
        fence: bool,
        recovery_id: &str,
    ) -> RoutingReport {
        let pin = Pin {
            writer: None,
            withdrawn: old.clone(),
            fence,
        };
        self.pin(cluster, pin, recovery_id).await
    }

    /// After a promotion: every backend names `new` as the writer of `cluster`; `old` is
    /// named nowhere (`fence_old`, a failover) or only drained until the topology shows
    /// it as a replica (a switchover). Waits at most `routing.apply_timeout`; each
    /// backend's lag behind the promotion is recorded.
    pub async fn route_writer(
        &self,
        cluster: &str,
        new: &InstanceKey,
        old: &InstanceKey,
        fence_old: bool,
        recovery_id: &str,
    ) -> RoutingReport {
        let report = self
            .pin(
                cluster,
                Pin {
                    writer: Some(new.clone()),
                    withdrawn: old.clone(),
                    fence: fence_old,
                },
                recovery_id,
            )
            .await;
        self.inner.status.send_modify(|all| {
            for outcome in &report.backends {
                if let (Some(status), Some(ms)) = (all.get_mut(&outcome.backend), outcome.took_ms) {
                    status.last_promotion_lag_ms = Some(ms);
                }
            }
        });
        if !report.backends.is_empty() {
            let _ = self.inner.store.audit(AuditEntry {
                actor: "routing".into(),
                action: "route".into(),
                cluster: Some(cluster.to_string()),
                instance: Some(new.clone()),
                message: format!("routes follow the promotion of {new}: {report}"),
            });
        }
        report
    }

    /// A failover that promoted nothing: routes follow the topology again.
    pub async fn release(&self, cluster: &str) {
        let removed = self
            .inner
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cluster)
            .is_some();
        if removed {
            self.inner.refresh().await;
        }
    }

    async fn pin(&self, cluster: &str, pin: Pin, recovery_id: &str) -> RoutingReport {
        if !self.inner.aliases.iter().any(|a| a.alias == cluster) {
            return RoutingReport::default();
        }
        let started = Instant::now();
        self.inner
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cluster.to_string(), (pin, Some(recovery_id.to_string())));
        let version = self.inner.refresh().await;
        self.inner.wait_applied(version, started).await
    }

    /// What every backend says now, next to what it should say; `cluster` narrows it.
    pub async fn inspect(&self, cluster: Option<&str>) -> RoutesView {
        let routes = self.routes();
        let mut shown = (*routes).clone();
        if let Some(cluster) = cluster {
            shown.clusters.retain(|name, _| name == cluster);
        }
        let status = self.inner.status.borrow().clone();
        let timeout = self.inner.settings.reconcile_timeout;
        let views = join_all(self.inner.backends.iter().map(|backend| {
            let shown = &shown;
            let status = status.get(&backend.name()).cloned().unwrap_or_default();
            async move {
                match tokio::time::timeout(timeout, backend.inspect(shown)).await {
                    Ok(Ok(inspections)) => BackendView {
                        status,
                        inspections,
                        error: None,
                    },
                    Ok(Err(error)) => BackendView {
                        status,
                        inspections: Vec::new(),
                        error: Some(error.to_string()),
                    },
                    Err(_) => BackendView {
                        status,
                        inspections: Vec::new(),
                        error: Some(format!(
                            "{}: no answer within {}",
                            backend.name(),
                            humantime::format_duration(timeout)
                        )),
                    },
                }
            }
        }))
        .await;
        RoutesView {
            version: shown.version,
            clusters: shown.clusters.into_values().collect(),
            backends: views,
        }
    }
}

impl Inner {
    /// Whether `backend` is the one that writes the routes record.
    fn is_record(&self, backend: &Arc<dyn Router>) -> bool {
        self.record
            .as_ref()
            .is_some_and(|record| std::ptr::addr_eq(Arc::as_ptr(record), Arc::as_ptr(backend)))
    }

    /// Works the routes out again and publishes them if they changed; returns the
    /// version now published.
    async fn refresh(&self) -> u64 {
        let _publishing = self.publishing.lock().await;
        let desired = match self.desired() {
            Ok(desired) => desired,
            Err(error) => {
                // Without the fences the routes could name an old primary again: keep
                // the routes as they are until the store answers.
                tracing::error!(%error, "cannot read fences and downtime from the store: routes left as they are");
                return self.routes.borrow().version;
            }
        };
        let now = SystemTime::now();
        let mut clusters = BTreeMap::new();
        for (name, route) in desired {
            let decision = self.decide(&name, &route, now);
            let writer = match &route.writer {
                Some(key) => Some(self.endpoint(key).await),
                None => None,
            };
            let mut readers = Vec::new();
            for key in &route.readers {
                readers.push(self.endpoint(key).await);
            }
            clusters.insert(
                name.clone(),
                ClusterRoute {
                    cluster: name,
                    writer,
                    readers,
                    standby: route.standby,
                    fenced: route.fenced,
                    epoch: decision.epoch,
                    recovery_id: decision.recovery_id,
                    decided_at: decision.decided_at,
                },
            );
        }
        let current = self.routes.borrow().clone();
        if current.clusters == clusters {
            return current.version;
        }
        let version = current.version + 1;
        self.routes
            .send_replace(Arc::new(Routes { version, clusters }));
        version
    }

    /// The routes the topology and the pins call for; pins the topology has caught up
    /// with are dropped.
    fn desired(&self) -> Result<BTreeMap<String, DesiredRoute>, StoreError> {
        let snapshot = self.discovery.snapshot();
        let clusters = self.discovery.clusters(&snapshot, &self.aliases);
        let fenced: Vec<(InstanceKey, String)> = self
            .store
            .fenced()?
            .into_iter()
            .map(|f| (f.instance, f.cluster))
            .collect();
        let downtimed: HashSet<InstanceKey> = self
            .store
            .downtimes(SystemTime::now())?
            .into_iter()
            .map(|d| d.instance)
            .collect();
        let policy = self.settings.policy;
        let previous_readers: HashSet<InstanceKey> = self
            .routes
            .borrow()
            .clusters
            .values()
            .flat_map(|route| route.readers.iter().map(|reader| reader.key.clone()))
            .collect();
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if !pins.is_empty() {
            let plain = desired_routes(
                &snapshot,
                &clusters,
                &fenced,
                &downtimed,
                &HashMap::new(),
                &previous_readers,
                policy,
            );
            pins.retain(|cluster, (pin, _)| {
                pin.writer.is_none()
                    || plain.get(cluster).and_then(|r| r.writer.as_ref()) != pin.writer.as_ref()
            });
        }
        let pinned: HashMap<String, Pin> = pins
            .iter()
            .map(|(cluster, (pin, _))| (cluster.clone(), pin.clone()))
            .collect();
        let mut routes = desired_routes(
            &snapshot,
            &clusters,
            &fenced,
            &downtimed,
            &pinned,
            &previous_readers,
            policy,
        );
        // Until every instance a `[[cluster]]` lists has been probed once (answered or
        // failed), which tree holds the alias is not known: an agent that just started
        // (on a new store, say) must not route a stale old primary it happened to probe
        // before the primary that replaced it.
        routes.retain(|name, _| {
            pinned.contains_key(name)
                || self
                    .aliases
                    .iter()
                    .filter(|alias| &alias.alias == name)
                    .flat_map(|alias| &alias.instances)
                    .all(|key| {
                        snapshot
                            .get(key)
                            .is_some_and(|i| i.facts.is_some() || i.last_failure.is_some())
                    })
        });
        Ok(routes)
    }

    /// The epoch of the cluster's writer: unchanged while the writer is, else a new
    /// decision. A writer first seen at start-up (no decision recorded) is epoch 0: it
    /// is only an observation and must not outrank a decision another agent recorded.
    /// A change seen while running gets an epoch above every earlier one and above the
    /// wall clock in milliseconds, so decisions made later rank higher across agents.
    fn decide(&self, cluster: &str, route: &DesiredRoute, now: SystemTime) -> WriterDecision {
        let mut decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        if !decisions.contains_key(cluster) {
            if let Ok(Some(stored)) = self.store.writer_decision(cluster) {
                decisions.insert(cluster.to_string(), stored);
            }
        }
        let previous = decisions.get(cluster).cloned();
        if let Some(previous) = &previous {
            if previous.writer == route.writer {
                return previous.clone();
            }
        }
        let recovery_id = self
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
            .and_then(|(_, id)| id.clone());
        let epoch = match &previous {
            None => 0,
            Some(previous) => {
                let millis = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64;
                let lease = self.lease.gate().map_or(0, |grant| grant.epoch);
                (previous.epoch + 1).max(decision_epoch(lease, millis))
            }
        };
        let decision = WriterDecision {
            epoch,
            writer: route.writer.clone(),
            recovery_id,
            decided_at: now,
        };
        if let Err(error) = self.store.record_writer_decision(cluster, &decision) {
            tracing::error!(%error, cluster, "cannot record the routing epoch");
        }
        if previous.is_some() {
            tracing::info!(
                cluster,
                epoch,
                writer = %route.writer.as_ref().map(|w| w.to_string()).unwrap_or_else(|| "none".into()),
                "new writer decision"
            );
        }
        decisions.insert(cluster.to_string(), decision.clone());
        decision
    }

    /// The instance with its host name resolved (an address literal as is), from a
    /// cache kept for `ADDRESS_TTL`.
    async fn endpoint(&self, key: &InstanceKey) -> Endpoint {
        if let Ok(address) = key.host.parse::<IpAddr>() {
            return Endpoint {
                key: key.clone(),
                addresses: vec![address],
            };
        }
        let mut cache = self.addresses.lock().await;
        if let Some((addresses, at)) = cache.get(&key.host) {
            if at.elapsed() < ADDRESS_TTL {
                return Endpoint {
                    key: key.clone(),
                    addresses: addresses.clone(),
                };
            }
        }
        let looked_up = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((key.host.as_str(), key.port)),
        )
        .await;
        let addresses: Vec<IpAddr> = match looked_up {
            Ok(Ok(found)) => {
                let mut addresses: Vec<IpAddr> = found.map(|a| a.ip()).collect();
                addresses.sort();
                addresses.dedup();
                addresses
            }
            Ok(Err(error)) => {
                tracing::warn!(host = %key.host, %error, "cannot resolve an instance's host name: DNS and Consul get no address for it");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(host = %key.host, "resolving an instance's host name timed out: DNS and Consul get no address for it");
                Vec::new()
            }
        };
        cache.insert(key.host.clone(), (addresses.clone(), Instant::now()));
        Endpoint {
            key: key.clone(),
            addresses,
        }
    }

    /// Waits until every backend that is not failing has applied `version`, at most
    /// `apply_timeout`; reports how long each took from `since`.
    async fn wait_applied(&self, version: u64, since: Instant) -> RoutingReport {
        let mut status = self.status.subscribe();
        let deadline = tokio::time::Instant::from_std(since + self.settings.apply_timeout);
        loop {
            let done = {
                let all = status.borrow_and_update();
                all.values()
                    .all(|s| s.applied_version >= version || s.failing_since.is_some())
            };
            if done {
                break;
            }
            if tokio::time::timeout_at(deadline, status.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        let all = status.borrow();
        RoutingReport {
            routed: true,
            version,
            backends: all
                .values()
                .map(|s| {
                    let applied = s.applied_version >= version;
                    BackendOutcome {
                        backend: s.backend.clone(),
                        took_ms: applied.then(|| {
                            s.applied_at
                                .map(|at| at.saturating_duration_since(since).as_millis() as u64)
                                .unwrap_or(0)
                        }),
                        error: if applied { None } else { s.last_error.clone() },
                    }
                })
                .collect(),
        }
    }

    /// Without `[ha]`, the routes of the clusters this agent acts on (it holds the agent
    /// lock on a majority of their reachable members): a second agent leaves shared
    /// backends to the one that acts, cluster by cluster. A backend leaves a cluster
    /// missing from the routes as it is. With `[ha]` the lease decides instead.
    fn only_acted_on(&self, routes: Arc<Routes>) -> Arc<Routes> {
        let Some(claims) = self.discovery.claims() else {
            return routes;
        };
        let snapshot = self.discovery.snapshot();
        let views = self.discovery.clusters(&snapshot, &self.aliases);
        let by_name: HashMap<&str, &crate::topology::ClusterView> =
            views.iter().map(|v| (v.name.as_str(), v)).collect();
        let acting = |cluster: &str| {
            by_name
                .get(cluster)
                .is_some_and(|view| crate::claims::standing(view, &*snapshot, claims).acting())
        };
        if routes.clusters.keys().all(|cluster| acting(cluster)) {
            return routes;
        }
        let mut mine = (*routes).clone();
        mine.clusters.retain(|cluster, _| acting(cluster));
        Arc::new(mine)
    }

    fn audit(&self, cluster: Option<&str>, message: String) {
        if let Err(error) = self.store.audit(AuditEntry {
            actor: "routing".into(),
            action: "route".into(),
            cluster: cluster.map(str::to_string),
            instance: None,
            message,
        }) {
            tracing::error!(%error, "cannot write the audit log");
        }
    }
}

/// Works the routes out on every new snapshot and every tick.
async fn plan_routes(inner: Arc<Inner>) {
    let mut snapshots = inner.discovery.subscribe();
    let mut stopping = inner.stopping.subscribe();
    loop {
        let started = std::time::Instant::now();
        inner.refresh().await;
        crate::recovery::coordinator::pace(started.elapsed()).await;
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stopping.changed() => return,
            _ = tokio::time::sleep(inner.settings.reconcile_interval) => {}
        }
    }
}

/// A decision's epoch: the leader's lease epoch above the decision's time, so a decision
/// of a later leader is newer than any of an earlier one's whatever their clocks say,
/// and a deposed leader's late write is refused by the Consul backend's compare-and-set
/// (which never lets an older decision overwrite a newer one). Milliseconds take the
/// low 42 bits (until 2109); without `[ha]` the lease epoch is 0.
pub fn decision_epoch(lease_epoch: u64, millis: u64) -> u64 {
    const MILLIS_BITS: u32 = 42;
    (lease_epoch << MILLIS_BITS) | (millis & ((1 << MILLIS_BITS) - 1))
}

/// How soon the routes record is looked at again while its fences are being read back.
const FENCES_LOOK_AGAIN: Duration = Duration::from_millis(200);

/// Keeps one backend in line with the routes, for as long as the engine runs: a full
/// reconcile at every change and every `reconcile_interval`, and between them the
/// backend's cheap check (if it has one) every `check_interval`. Each success bumps
/// `applied`, which the backend's `persist` task follows.
async fn drive(inner: Arc<Inner>, backend: Arc<dyn Router>, applied: watch::Sender<u64>) {
    let name = backend.name();
    let mut routes_rx = inner.routes.subscribe();
    let mut leader_rx = inner.leader_routes.subscribe();
    let mut stopping = inner.stopping.subscribe();
    let mut last_applied: Option<u64> = None;
    let mut run_now = true;
    let mut next_look = inner.settings.reconcile_interval;
    let check_every = backend
        .check_interval()
        .filter(|every| *every < inner.settings.reconcile_interval);
    let mut last_reconcile = Instant::now();
    loop {
        let mut timer_only = false;
        if !run_now {
            let wait = check_every.map_or(next_look, |every| every.min(next_look));
            tokio::select! {
                changed = routes_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = leader_rx.changed(), if !backend.shared() => {}
                _ = stopping.changed() => return,
                _ = tokio::time::sleep(wait) => timer_only = true,
            }
        }
        run_now = false;
        // Between full reconciles, woken only by the clock: the cheap check decides
        // whether a reconcile is due (someone changed the backend) or not.
        let check_only = timer_only
            && check_every.is_some()
            && last_reconcile.elapsed() < next_look
            && last_applied == Some(routes_rx.borrow().version);
        next_look = inner.settings.reconcile_interval;
        let mut routes = routes_rx.borrow_and_update().clone();
        if backend.shared() {
            if let Err(not) = inner.lease.gate() {
                // The leader keeps it; this agent looks again at the next tick.
                inner.status.send_modify(|all| {
                    if let Some(status) = all.get_mut(&name) {
                        status.last_error = Some(format!("not written from here: {not}"));
                    }
                });
                continue;
            }
            if inner.is_record(&backend)
                && !inner
                    .fences_restored
                    .load(std::sync::atomic::Ordering::SeqCst)
            {
                inner.status.send_modify(|all| {
                    if let Some(status) = all.get_mut(&name) {
                        status.last_error = Some(
                            "not written yet: the fences the routes record names are read back into the store first"
                                .into(),
                        );
                    }
                });
                next_look = FENCES_LOOK_AGAIN;
                continue;
            }
            let all = routes.clusters.len();
            routes = inner.only_acted_on(routes);
            if routes.clusters.len() < all {
                // Held by another agent, or this one has not taken its locks yet (just
                // started): looked at again soon, not only at the next reconcile.
                next_look = next_look.min(CLAIMS_LOOK_AGAIN);
            }
        } else if inner.lease.gate().is_err() {
            // A follower's own backends say what the leader decided, once it is known.
            if let Some(leader) = leader_rx.borrow_and_update().clone() {
                routes = leader;
            }
        }
        if check_only {
            let looked =
                tokio::time::timeout(inner.settings.reconcile_timeout, backend.check(&routes))
                    .await;
            match looked {
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => {
                    tracing::debug!(backend = %name, "the check found the backend changed: reconciling");
                }
                Ok(Err(error)) => {
                    tracing::debug!(backend = %name, %error, "the check failed: reconciling");
                }
                Err(_) => tracing::debug!(backend = %name, "the check took too long: reconciling"),
            }
        }
        last_reconcile = Instant::now();
        for attempt in 1..=MAX_ATTEMPTS {
            let result =
                tokio::time::timeout(inner.settings.reconcile_timeout, backend.reconcile(&routes))
                    .await
                    .unwrap_or_else(|_| {
                        Err(super::RouteError(format!(
                            "{name}: no answer within {}",
                            humantime::format_duration(inner.settings.reconcile_timeout)
                        )))
                    });
            match result {
                Ok(changes) => {
                    let recovered = inner
                        .status
                        .borrow()
                        .get(&name)
                        .and_then(|s| s.failing_since)
                        .is_some();
                    inner.status.send_modify(|all| {
                        if let Some(status) = all.get_mut(&name) {
                            status.applied_version = routes.version;
                            status.applied_at = Some(Instant::now());
                            status.last_success = Some(SystemTime::now());
                            status.last_error = None;
                            status.failing_since = None;
                        }
                    });
                    if recovered {
                        inner.audit(None, format!("{name}: answers again and is up to date"));
                    }
                    // Routes unchanged since the backend last agreed: someone else
                    // changed it (a restart from an old disk config, a hand edit).
                    let drift = last_applied == Some(routes.version) && !changes.is_empty();
                    let mut by_cluster: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                    for change in &changes {
                        by_cluster
                            .entry(change.cluster.as_str())
                            .or_default()
                            .push(change.what.as_str());
                    }
                    for (cluster, whats) in by_cluster {
                        let message = if drift {
                            format!(
                                "{name}: drift repaired (it no longer said what pointsman told it): {}",
                                whats.join("; ")
                            )
                        } else {
                            format!("{name}: {}", whats.join("; "))
                        };
                        // The audit entry is logged too (store); drift is said louder.
                        if drift {
                            tracing::warn!(backend = %name, cluster, "{message}");
                        }
                        inner.audit(Some(cluster), message);
                    }
                    last_applied = Some(routes.version);
                    applied.send_modify(|count| *count += 1);
                    break;
                }
                Err(error) => {
                    let first_failure = inner
                        .status
                        .borrow()
                        .get(&name)
                        .is_some_and(|s| s.failing_since.is_none());
                    inner.status.send_modify(|all| {
                        if let Some(status) = all.get_mut(&name) {
                            status.last_error = Some(error.to_string());
                            status.failing_since.get_or_insert_with(SystemTime::now);
                        }
                    });
                    if first_failure {
                        tracing::warn!(backend = %name, %error, "routing backend failed; retrying");
                        inner.audit(
                            None,
                            format!(
                                "{name}: cannot be updated: {error}; retrying in the background"
                            ),
                        );
                    }
                    if attempt == MAX_ATTEMPTS {
                        break;
                    }
                    let backoff = FIRST_BACKOFF * 2u32.pow(attempt - 1);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        changed = routes_rx.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            run_now = true;
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Runs a backend's slow persisting step (`Router::persist`) after the routes it applied
/// have been quiet for `PERSIST_AFTER_QUIET`, so a failover never waits behind it; a
/// failure is reported in the backend's status and the audit log, and retried with a
/// doubling backoff (at most `reconcile_interval` apart) until it works.
async fn persist(inner: Arc<Inner>, backend: Arc<dyn Router>, mut applied: watch::Receiver<u64>) {
    let name = backend.name();
    let mut stopping = inner.stopping.subscribe();
    loop {
        if wait_apply(&mut applied, &mut stopping, None)
            .await
            .is_none()
        {
            return;
        }
        // Quiet first: every further apply restarts the wait.
        loop {
            match wait_apply(&mut applied, &mut stopping, Some(PERSIST_AFTER_QUIET)).await {
                None => return,
                Some(true) => continue,
                Some(false) => break,
            }
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            if backend.shared() && inner.lease.gate().is_err() {
                break;
            }
            let result = tokio::time::timeout(inner.settings.reconcile_timeout, backend.persist())
                .await
                .unwrap_or_else(|_| {
                    Err(super::RouteError(format!(
                        "{name}: no answer within {}",
                        humantime::format_duration(inner.settings.reconcile_timeout)
                    )))
                });
            let had_failed = inner
                .status
                .borrow()
                .get(&name)
                .is_some_and(|s| s.persist_error.is_some());
            match result {
                Ok(_) => {
                    if had_failed {
                        inner.status.send_modify(|all| {
                            if let Some(status) = all.get_mut(&name) {
                                status.persist_error = None;
                            }
                        });
                        inner.audit(None, format!("{name}: the routes are saved again"));
                    }
                    break;
                }
                Err(error) => {
                    inner.status.send_modify(|all| {
                        if let Some(status) = all.get_mut(&name) {
                            status.persist_error = Some(error.to_string());
                        }
                    });
                    if !had_failed {
                        tracing::warn!(backend = %name, %error, "cannot save the routes; retrying");
                        inner.audit(
                            None,
                            format!("{name}: traffic follows the routes, but they cannot be saved: {error}; retrying in the background"),
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopping.changed() => return,
                    }
                    backoff = (backoff * 2).min(inner.settings.reconcile_interval);
                }
            }
        }
    }
}

/// The next apply (`Some(true)`), or `quiet` passing without one (`Some(false)`);
/// `None` once the engine stops.
async fn wait_apply(
    applied: &mut watch::Receiver<u64>,
    stopping: &mut watch::Receiver<bool>,
    quiet: Option<Duration>,
) -> Option<bool> {
    let quiet_passed = async {
        match quiet {
            Some(quiet) => tokio::time::sleep(quiet).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        changed = applied.changed() => changed.is_ok().then_some(true),
        _ = stopping.changed() => None,
        _ = quiet_passed => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::decision_epoch;

    #[test]
    fn a_later_leader_decides_newer_whatever_the_clocks_say() {
        let now = 1_796_000_000_000; // 2026, in milliseconds
        assert_eq!(decision_epoch(0, now), now, "alone, the epoch is the time");
        // The next leader's clock is an hour behind: its decision is still newer.
        assert!(decision_epoch(8, now - 3_600_000) > decision_epoch(7, now));
        // The same leader: later is newer.
        assert!(decision_epoch(7, now + 1) > decision_epoch(7, now));
    }
}
