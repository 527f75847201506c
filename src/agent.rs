//! The agent: opens the store (and keeps it pruned), starts discovery, the routing
//! backends and the recovery coordinator, and serves the API, until told to stop.
//! `pointsman run` and `pointsman demo` both run it; tests run it in-process.

use crate::analysis::ProblemRules;
use crate::api::{self, ApiState};
use crate::claims::Claims;
use crate::config::Settings;
use crate::discovery::{self, DiscoveryHandle, DiscoveryOptions};
use crate::leader::{self, LeaderInfo, Lease, LeaseError, LeaseSettings};
use crate::mysql::admin::ReplicationAccount;
use crate::mysql::edge::MysqlReplication;
use crate::mysql::ConnectSettings;
use crate::recovery::coordinator::Coordinator;
use crate::recovery::execute::Executor;
use crate::recovery::hooks::Hooks;
use crate::recovery::journal_mirror::JournalMirror;
use crate::recovery::lane::Lane;
use crate::routing::{self, RunningRouting};
use crate::store::retention::Retention;
use crate::store::{Store, StoreError};
use crate::workers::Backroom;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("api.listen {address}: cannot listen: {source} (is another pointsman running? choose another port)")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the API server stopped: {0}")]
    Server(std::io::Error),
    #[error(transparent)]
    Routing(#[from] routing::StartError),
    #[error("ha: {0}")]
    Lease(#[from] LeaseError),
    #[error(
        "cannot start the thread recoveries run on: {0} (is the machine out of threads or memory?)"
    )]
    Lane(std::io::Error),
    #[error(
        "cannot start the thread the API builds the whole fleet's views on: {0} (is the machine out of threads or memory?)"
    )]
    Backroom(std::io::Error),
}

/// A started agent.
pub struct RunningAgent {
    /// Where the API listens (useful when the configured port was 0).
    pub api_address: SocketAddr,
    pub discovery: DiscoveryHandle,
    pub store: Store,
    pub coordinator: Arc<Coordinator>,
    pub routing: RunningRouting,
    /// Who may act: released first when the agent stops, so another takes over at once.
    pub lease: Lease,
    store_watch: JoinHandle<()>,
    pruning: JoinHandle<()>,
    stop: oneshot::Sender<()>,
    stopping: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    /// Where recoveries run; what still runs there is dropped with the agent.
    _lane: Lane,
}

impl RunningAgent {
    /// Starts everything; returns once the API accepts connections. Every port (the
    /// API's, the DNS responder's) is bound first: one that is taken stops the agent
    /// before it creates its store or connects to any server.
    pub async fn start(settings: &Settings) -> Result<RunningAgent, AgentError> {
        let config = &settings.config;
        let max_instances = raise_file_limit();
        let listener = tokio::net::TcpListener::bind(settings.api_listen)
            .await
            .map_err(|source| AgentError::Listen {
                address: settings.api_listen,
                source,
            })?;
        let api_address = listener.local_addr().map_err(|source| AgentError::Listen {
            address: settings.api_listen,
            source,
        })?;
        let backends = routing::backends(settings)?;
        let store = Store::open(&config.store.path)?;
        let options = DiscoveryOptions {
            connect: ConnectSettings {
                user: config.mysql.user.clone(),
                password: settings.mysql_password.clone(),
                connect_timeout: config.mysql.connect_timeout.0,
                query_timeout: config.mysql.query_timeout.0,
            },
            poll_interval: config.discovery.poll_interval.0,
            max_concurrent_probes: config.discovery.max_concurrent_probes,
            claims: None,
            max_instances,
        };
        let lease = start_lease(settings, api_address).await?;
        let mut options = options;
        // Without a shared lease, the agent lock on every instance keeps a second agent
        // from acting on the same cluster.
        if !config.ha.enabled {
            let name = config
                .ha
                .agent_name
                .clone()
                .unwrap_or_else(|| agent_name(api_address));
            options.claims = Some(Claims::new(&name));
        }
        let executor = Executor {
            servers: Arc::new(MysqlReplication {
                settings: options.connect.clone(),
            }),
            connect: options.connect.clone(),
            account: ReplicationAccount {
                user: config.recovery.replication_user.clone(),
                password: settings.replication_password.clone(),
                tls: config.recovery.replication_tls,
            },
            apply_timeout: config.recovery.apply_timeout.0,
            verify_timeout: config.recovery.verify_timeout.0,
            heartbeat_period: config.recovery.heartbeat_period.0,
            lease: lease.clone(),
            kept: None,
        };
        let lane = Lane::start().map_err(AgentError::Lane)?;
        let backroom = Backroom::start().map_err(AgentError::Backroom)?;
        let discovery = discovery::start(options, settings.seeds(), store.clone());
        let rules = ProblemRules::from_config(config);
        let routing = routing::start(
            settings,
            backends,
            store.clone(),
            discovery.clone(),
            lease.clone(),
        );
        let coordinator = Coordinator::new(
            discovery.clone(),
            store.clone(),
            executor,
            settings.promotion.clone(),
            rules,
            settings.aliases.clone(),
            settings.auto_clusters.clone(),
            config.recovery.block_period.0,
            Hooks {
                config: config.hooks.clone(),
                secret_variables: settings.secret_variables.clone(),
            },
            routing.routing.clone(),
            journal_mirror(settings)?,
            config.recovery.auto_rejoin,
            lane.handle(),
        );
        tokio::spawn(coordinator.clone().run());
        let store_watch = tokio::spawn(watch_store(store.clone()));
        let pruning = tokio::spawn(prune_store(
            store.clone(),
            Retention {
                keep_audit: config.store.keep_audit.0,
                keep_recoveries: config.store.keep_recoveries,
                block_period: config.recovery.block_period.0,
            },
        ));
        let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
        let state = ApiState {
            stopping,
            discovery: discovery.clone(),
            store: store.clone(),
            aliases: Arc::new(settings.aliases.clone()),
            rules,
            coordinator: coordinator.clone(),
            events: api::live::EventFeed::new(config.api.max_event_clients),
            backroom,
        };
        // Ends by itself when `stopping` turns true.
        tokio::spawn(api::live::publish(state.clone()));
        let access = api::auth::Access {
            token: settings.api_token.clone(),
            token_for_reads: config.api.token_for_reads,
        };
        let origins = api::origin::OriginRules::new(&config.api, machine_name().as_deref());
        if access.token.is_none() && !api_address.ip().to_canonical().is_loopback() {
            tracing::warn!(
                api = %api_address,
                "THE API IS OPEN: it listens where other machines reach it and has no token (api.allow_open = true), so anyone who reaches {api_address} can change servers and routes; set api.token"
            );
        }
        let listener = api::stalled::StallLimitedListener {
            listener,
            limit: config.api.stalled_client_timeout.0,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                api::router(state, access, origins)
                    .into_make_service_with_connect_info::<api::stalled::ClientAddress>(),
            )
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
        });
        tracing::info!(api = %format!("http://{api_address}"), "pointsman agent started");
        Ok(RunningAgent {
            api_address,
            discovery,
            store,
            coordinator,
            routing,
            lease,
            store_watch,
            pruning,
            stop,
            stopping: stopping_tx,
            server,
            _lane: lane,
        })
    }

    /// Ends everything the agent started: gives up the lease (with `[ha]`) so another
    /// agent takes over at once, stops the API server and waits for it, then ends
    /// discovery (every instance's watch, closing its connection — the
    /// coordinator ends with it), the routing engine and its DNS responder, the store
    /// watch and its pruning. A recovery still running is dropped with the agent's
    /// recovery lane, as when the process ends: its journal settles it later.
    pub async fn stop(self) -> Result<(), AgentError> {
        self.lease.clone().stop().await;
        let _ = self.stopping.send(true);
        let _ = self.stop.send(());
        let served = match self.server.await {
            Ok(result) => result.map_err(AgentError::Server),
            Err(_) => Ok(()),
        };
        self.discovery.stop().await;
        self.routing.routing.stop();
        self.store_watch.abort();
        self.pruning.abort();
        served
    }
}

/// The leader lease when `[ha]` is on (this agent acts only while it holds it), else an
/// agent that always acts.
async fn start_lease(settings: &Settings, api_address: SocketAddr) -> Result<Lease, LeaseError> {
    let ha = &settings.config.ha;
    let Some(consul) = settings.routing.consul.clone().filter(|_| ha.enabled) else {
        return Ok(leader::solo());
    };
    let agent = LeaderInfo {
        name: agent_name(api_address),
        api: format!("http://{api_address}"),
    };
    // One lock for every agent of a deployment, however their clusters are configured:
    // `ha.lock_key` separates deployments that share a Consul.
    Lease::start(LeaseSettings::new(ha, consul, "default", agent)).await
}

/// With `[ha]`: the journal's copy in Consul, beside the lease's lock key.
fn journal_mirror(settings: &Settings) -> Result<Option<Arc<JournalMirror>>, LeaseError> {
    let ha = &settings.config.ha;
    let Some(consul) = settings.routing.consul.as_ref().filter(|_| ha.enabled) else {
        return Ok(None);
    };
    let lock_key = ha
        .lock_key
        .clone()
        .unwrap_or_else(|| leader::default_lock_key("default"));
    JournalMirror::new(consul, &lock_key)
        .map(|mirror| Some(Arc::new(mirror)))
        .map_err(LeaseError)
}

/// How other agents name this one by default: its host name and API address.
fn agent_name(api_address: SocketAddr) -> String {
    let host = machine_name().unwrap_or_else(|| "pointsman".into());
    format!("{host} http://{api_address}")
}

/// The machine's host name, as the kernel has it.
fn machine_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

/// Checks every second that the store is still there and takes writes, so a deleted
/// file or a full disk is reported at once, not found at the next restart.
async fn watch_store(store: Store) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let checking = store.clone();
        if tokio::task::spawn_blocking(move || checking.check())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// How often old audit records and recoveries are deleted (the first time at start-up).
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes what `retention` no longer keeps, at start-up and every [`PRUNE_EVERY`],
/// so the store stops growing however long the agent runs.
async fn prune_store(store: Store, retention: Retention) {
    let mut ticker = tokio::time::interval(PRUNE_EVERY);
    loop {
        ticker.tick().await;
        let pruning = store.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            pruning.prune(&retention, std::time::SystemTime::now())
        })
        .await;
        match outcome {
            Ok(Ok(pruned)) if pruned.audit_records + pruned.recoveries > 0 => tracing::info!(
                audit_records = pruned.audit_records,
                recoveries = pruned.recoveries,
                "deleted history older than store.keep_audit and beyond store.keep_recoveries"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!("cannot delete old history: {error}"),
            Err(_) => return,
        }
    }
}

/// Every watched instance keeps one connection open (probed, then parked until the next
/// probe): the common soft limit of 1,024 open files runs out near 800 instances.
/// Raises the soft limit to the hard one, says how many instances that allows, and
/// returns it (discovery refuses more, loudly). 256 descriptors are kept for the rest:
/// the store, the API's clients, probes asked for now and the connections of recoveries.
fn raise_file_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !read {
        return usize::MAX;
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            limit.rlim_cur = was;
        }
    }
    let instances = limit.rlim_cur.saturating_sub(256);
    if limit.rlim_cur != was {
        tracing::info!(
            from = was,
            to = limit.rlim_cur,
            "raised the open-file limit (RLIMIT_NOFILE): enough for about {instances} instances at one connection each"
        );
    }
    if instances < 1_000 {
        tracing::warn!(
            limit = limit.rlim_cur,
            "this agent may open only {} files: enough for about {instances} instances at one connection each; raise the hard limit (LimitNOFILE= in a systemd unit, ulimit -Hn) to watch more",
            limit.rlim_cur
        );
    }
    usize::try_from(instances).unwrap_or(usize::MAX)
}
