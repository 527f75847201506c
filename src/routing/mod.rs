//! Routing: where applications are sent. From the topology, `desired` works out (pure)
//! each routed cluster's writer and readers; the `engine` hands those routes to every
//! backend — ProxySQL, Consul, the embedded DNS responder — each a `Router` that makes
//! its own world match them, idempotently, after every change and on a timer so drift
//! is repaired. Backends never wait for each other: one that is down is retried with a
//! bounded backoff while the others, and the failover, go on.
//!
//! Only clusters with an alias (`[[cluster]]`) are routed: the names applications use
//! (`<alias>.primary.<zone>`, `mysql/master/<alias>`) must not change at a failover,
//! and an unaliased cluster is named after its primary.

pub mod consul;
pub(crate) mod consul_http;
pub mod desired;
pub mod dns;
pub mod engine;
pub mod follow;
pub mod proxysql;

use crate::topology::InstanceKey;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

pub use desired::{desired_routes, DesiredRoute, RoutePolicy};
pub use engine::{Routing, RoutingReport};

use crate::config::Settings;
use crate::discovery::DiscoveryHandle;
use crate::store::Store;
use engine::EngineSettings;
use std::sync::Arc;
use std::time::Duration;

/// The routing engine with its configured backends, as the agent runs it.
pub struct RunningRouting {
    pub routing: Routing,
    /// Where the embedded DNS responder answers, when it is on.
    pub dns_address: Option<std::net::SocketAddr>,
}

/// A backend that cannot start (the DNS responder cannot bind, a Consul TLS file is
/// unusable): found at start-up, never during a failover.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// The configured backends, ready to be driven: the DNS responder already listens.
/// Made before the agent touches its store or any server, so a port that is taken or
/// an unusable TLS file stops it with nothing started.
pub struct Backends {
    routers: Vec<Arc<dyn Router>>,
    /// With Consul: the routes record, which fences and followers read.
    record: Option<engine::RoutesRecord>,
    /// Where the embedded DNS responder answers, when it is on.
    dns_address: Option<std::net::SocketAddr>,
}

/// Binds the DNS responder (when on) and builds the Consul and ProxySQL backends; no
/// backend is contacted yet.
pub fn backends(settings: &Settings) -> Result<Backends, StartError> {
    let config = &settings.routing;
    let mut routers: Vec<Arc<dyn Router>> = Vec::new();
    let mut dns_address = None;
    if let Some(listen) = &config.dns {
        let settings = dns::DnsSettings::new(listen.listen, &listen.zone, listen.ttl)
            .map_err(|e| StartError(e.to_string()))?;
        let server = dns::DnsServer::start(&settings).map_err(|e| StartError(e.to_string()))?;
        dns_address = Some(server.local_addr());
        routers.push(Arc::new(dns::DnsRouter::new(server)));
    }
    let mut record = None;
    if let Some(consul) = &config.consul {
        let router =
            Arc::new(consul::ConsulRouter::new(consul).map_err(|e| StartError(e.to_string()))?);
        record = Some(engine::RoutesRecord {
            consul: router.clone(),
            followed: settings.config.ha.enabled,
        });
        routers.push(router);
    }
    for proxysql in &config.proxysql {
        routers.push(Arc::new(proxysql::ProxySqlRouter::new(proxysql.clone())));
    }
    Ok(Backends {
        routers,
        record,
        dns_address,
    })
}

/// Starts the engine that drives `backends`.
pub fn start(
    settings: &Settings,
    backends: Backends,
    store: Store,
    discovery: DiscoveryHandle,
    lease: crate::leader::Lease,
) -> RunningRouting {
    let config = &settings.routing;
    let slowest_backend = config
        .proxysql
        .iter()
        .map(|p| p.timeout)
        .chain(config.consul.iter().map(|c| c.config.timeout.0))
        .max()
        .unwrap_or(Duration::from_secs(2));
    let routing = Routing::start(
        backends.routers,
        EngineSettings {
            policy: config.policy,
            reconcile_interval: config.reconcile_interval,
            apply_timeout: config.apply_timeout,
            // Several statements or requests, each under the backend's own limit.
            reconcile_timeout: slowest_backend * 4,
        },
        store,
        discovery,
        settings.aliases.clone(),
        lease,
        backends.record,
    );
    RunningRouting {
        routing,
        dns_address: backends.dns_address,
    }
}

/// An instance a route names, with the addresses its host name resolved to when the
/// route was made (resolved once per change, never per query).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub key: InstanceKey,
    pub addresses: Vec<IpAddr>,
}

impl Endpoint {
    pub fn ipv4(&self) -> Option<IpAddr> {
        self.addresses.iter().copied().find(IpAddr::is_ipv4)
    }

    pub fn ipv6(&self) -> Option<IpAddr> {
        self.addresses.iter().copied().find(IpAddr::is_ipv6)
    }
}

/// Where one cluster's traffic goes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterRoute {
    pub cluster: String,
    /// The primary; `None` while a failover has withdrawn the old one and not yet
    /// promoted the next: no backend names any writer then.
    pub writer: Option<Endpoint>,
    /// Healthy replicas (and the primary, with `routing.primary_serves_reads`).
    pub readers: Vec<Endpoint>,
    /// Members that are neither writer nor reader now (lagging, broken, downtimed):
    /// backends keep them out of service but drain them gently.
    pub standby: Vec<InstanceKey>,
    /// Old primaries fenced by a failover: no backend may send them anything.
    pub fenced: Vec<InstanceKey>,
    /// Grows with every change of writer, so an older decision never overwrites a newer.
    pub epoch: u64,
    /// The recovery that made the last change of writer, if one did.
    pub recovery_id: Option<String>,
    #[serde(with = "crate::topology::time")]
    pub decided_at: SystemTime,
}

/// The routes of every routed cluster, as one value: backends always see a whole,
/// consistent set. `version` grows with every change.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Routes {
    pub version: u64,
    pub clusters: BTreeMap<String, ClusterRoute>,
}

/// One thing a backend changed, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub cluster: String,
    pub what: String,
}

/// What a backend says about one cluster now, against what it should say. Lines are
/// the backend's own words (a ProxySQL row, a Consul key, a DNS record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    pub cluster: String,
    pub should: Vec<String>,
    pub now: Vec<String>,
    pub in_sync: bool,
}

/// Why a backend could not be reconciled or read; the message names the backend's
/// address and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RouteError(pub String);

/// A backend that applications are routed through. `reconcile` makes it say what
/// `routes` says and returns what it had to change (nothing when it already agreed);
/// calling it twice in a row changes nothing the second time.
pub trait Router: Send + Sync + 'static {
    /// Names the backend in logs, the audit and `pointsman routes`: `proxysql
    /// 10.0.0.5:6032`, `consul http://127.0.0.1:8500`, `dns 127.0.0.1:8053`.
    fn name(&self) -> String;

    fn reconcile<'a>(
        &'a self,
        routes: &'a Routes,
    ) -> BoxFuture<'a, Result<Vec<Change>, RouteError>>;

    /// Reads what the backend says now, per routed cluster.
    fn inspect<'a>(
        &'a self,
        routes: &'a Routes,
    ) -> BoxFuture<'a, Result<Vec<Inspection>, RouteError>>;

    /// How often `check` should run between reconciles; `None`: the backend has no
    /// check cheaper than `reconcile`.
    fn check_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// A cheap look at whether what traffic uses still says what `routes` says (for
    /// ProxySQL, `mysql_servers` and `runtime_mysql_servers`): `false`, or an error,
    /// makes the engine reconcile at once.
    fn check<'a>(&'a self, _routes: &'a Routes) -> BoxFuture<'a, Result<bool, RouteError>> {
        Box::pin(async { Ok(true) })
    }

    /// Makes what `reconcile` applied survive a restart of the backend, where that is a
    /// separate and slower step (ProxySQL's `SAVE MYSQL SERVERS TO DISK`). The engine
    /// calls it off a failover's path, once the routes have been quiet for a moment;
    /// `true` when something had to be saved.
    fn persist(&self) -> BoxFuture<'_, Result<bool, RouteError>> {
        Box::pin(async { Ok(false) })
    }

    /// Whether other agents write this backend too (ProxySQL, Consul): then only the
    /// agent that leads does. This agent's own DNS responder is not shared.
    fn shared(&self) -> bool {
        true
    }

    /// Stops whatever the backend runs itself (the DNS responder); the agent is ending.
    fn stop(&self) {}
}
