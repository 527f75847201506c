//! Network partitions against real servers, on MariaDB 10.11 and MySQL 9.7. A cut is
//! silent, as a dead switch port is (no RST, no refusal: only timeouts), made by the
//! TCP proxy in `support::proxy` that stands between node1 and everyone who talks to it.
//!
//! - The agent alone cut off from a live primary whose replicas still hear it (the proxy
//!   cuts only this process's connections, the in-process agent's): nothing but an
//!   alert — promoting then would split the brain.
//! - A primary cut off from the agent and its replicas alike: replaced within seconds,
//!   and set read_only as soon as it is reachable again, so a client still writing to it
//!   is refused — both when heartbeat silence decides, and when only the replicas'
//!   own reconnecting IO threads do.

mod support;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use pointsman::analysis::{Problem, ProblemCode};
use pointsman::api::recovery::RecoverySwitch;
use pointsman::api::views::{ClusterDetail, InstanceView};
use pointsman::client::ApiClient;
use pointsman::sandbox::Flavor;
use pointsman::store::recovery::{RecoveryRecord, RecoveryStatus};
use pointsman::topology::{InstanceKey, IoThreadState};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use support::proxy::{Mode, Proxy};
use support::{automatic_recovery, eventually, watch, TestTopology, Watcher};

const PATIENCE: Duration = Duration::from_secs(30);

/// `recovery.silent_heartbeats` as shipped.
const DEFAULT_SILENT_HEARTBEATS: u32 = 3;

/// An account with no privilege to bypass read_only (the sandbox admin has SUPER, which
/// MariaDB's read_only lets through): what an application writes with.
const APP_USER: &str = "app";
const APP_PASSWORD: &str = "app-partition";

/// node1 reachable only through a proxy — by the agent and, by their replication links,
/// by both replicas — so its instance key everywhere is the proxy's address.
struct BehindProxy {
    topology: TestTopology,
    proxy: Proxy,
    /// node1 as everyone sees it: the proxy's address.
    primary: InstanceKey,
    watcher: Watcher,
}

impl BehindProxy {
    /// `silent_heartbeats`: `recovery.silent_heartbeats` for the agent.
    async fn start(flavor: Flavor, silent_heartbeats: u32) -> BehindProxy {
        Self::start_with(flavor, silent_heartbeats, false).await
    }

    /// As `start`; with `semi_sync`, the sandbox replicates semi-synchronously and the
    /// agent runs with `recovery.require_semi_sync_ack`.
    async fn start_with(flavor: Flavor, silent_heartbeats: u32, semi_sync: bool) -> BehindProxy {
        let topology = TestTopology::start_with(flavor, 2, semi_sync).await;
        let node1 = topology.key("node1");
        let target: SocketAddr = format!("{}:{}", node1.host, node1.port)
            .parse()
            .expect("the sandbox listens on an IP address");
        let proxy = Proxy::start(target).await.expect("proxy starts");
        let primary = InstanceKey::new("127.0.0.1", proxy.address().port());
        for replica in ["node2", "node3"] {
            topology.replicate_from(replica, &primary).await;
        }
        let automatic = automatic_recovery(&topology);
        let watcher = watch(&topology, vec![primary.clone()], |config| {
            automatic(config);
            config.recovery.silent_heartbeats = silent_heartbeats;
            config.recovery.require_semi_sync_ack = semi_sync;
            // [[cluster]] instances are seeds too: node1 is listed by the only address
            // anyone knows it by.
            for cluster in &mut config.clusters {
                for key in &mut cluster.instances {
                    if *key == node1 {
                        *key = primary.clone();
                    }
                }
            }
        })
        .await;
        let api = &watcher.api;
        eventually(
            PATIENCE,
            &format!("cluster t healthy under {primary}, both replicas replicating through it"),
            || async {
                let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.ok()?;
                let replicating = |view: &InstanceView| {
                    view.instance
                        .facts
                        .as_ref()
                        .and_then(|f| f.replication.as_ref())
                        .is_some_and(|s| {
                            s.source == primary
                                && s.io_running == IoThreadState::Yes
                                && s.sql_running
                        })
                };
                (detail.primary == primary
                    && detail.instances.len() == 3
                    && detail.instances.iter().all(|i| i.instance.facts.is_some())
                    && detail.instances.iter().filter(|v| replicating(v)).count() == 2
                    && detail.problems.is_empty())
                .then_some(())
            },
        )
        .await;
        BehindProxy {
            topology,
            proxy,
            primary,
            watcher,
        }
    }

    fn api(&self) -> &ApiClient {
        &self.watcher.api
    }

    async fn recoveries(&self) -> Vec<RecoveryRecord> {
        self.api()
            .get("/api/v1/recoveries?cluster=t")
            .await
            .expect("recoveries")
    }
}

/// One insert on node1, straight to the server (no proxy), as the application account.
async fn app_insert(topology: &TestTopology, id: i64) -> Result<(), mysql_async::Error> {
    let node1 = topology.key("node1");
    let opts = OptsBuilder::default()
        .ip_or_hostname(node1.host)
        .tcp_port(node1.port)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .prefer_socket(false);
    let mut conn = tokio::time::timeout(Duration::from_secs(5), Conn::new(opts))
        .await
        .expect("node1 answers the application within 5 s")?;
    let result = conn
        .query_drop(format!("INSERT INTO app.t VALUES ({id})"))
        .await;
    let _ = conn.disconnect().await;
    result
}

fn millis(from: SystemTime, to: SystemTime) -> u128 {
    to.duration_since(from).unwrap_or_default().as_millis()
}

on_every_flavor!(
    an_agent_cut_off_from_a_live_primary_does_not_fail_over,
    a_primary_cut_off_from_everyone_is_replaced_and_fenced_when_it_returns,
    with_semi_sync_an_isolated_primary_acknowledges_no_write_the_new_primary_lacks,
);

/// What the application account needs on node1 (created there, replicated everywhere).
async fn create_app(topology: &TestTopology) {
    topology
        .sql(
            "node1",
            &[
                "CREATE DATABASE app",
                "CREATE TABLE app.t (id INT PRIMARY KEY)",
                &format!("CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'"),
                &format!("GRANT SELECT, INSERT ON app.* TO '{APP_USER}'@'%'"),
            ],
        )
        .await;
}

/// The proof semi-sync is for: node1 cut off from the agent and both replicas while an
/// application still reaches it and keeps writing. Semi-sync without fallback (a one-hour
/// timeout, waiting after the binary log is synced) means node1 can acknowledge a write
/// only once a replica has it; the agent (with `recovery.require_semi_sync_ack`) promotes
/// a replica; and every write the application saw acknowledged — before the cut and
/// after it — is on the new primary. The writes after the cut are seen to wait and never
/// be acknowledged.
async fn with_semi_sync_an_isolated_primary_acknowledges_no_write_the_new_primary_lacks(
    flavor: Flavor,
) {
    let setup = BehindProxy::start_with(flavor, DEFAULT_SILENT_HEARTBEATS, true).await;
    let (topology, primary, api) = (&setup.topology, &setup.primary, setup.api());
    let (timeout, wait_point) = if flavor.is_mysql() {
        (
            "rpl_semi_sync_source_timeout",
            "rpl_semi_sync_source_wait_point",
        )
    } else {
        (
            "rpl_semi_sync_master_timeout",
            "rpl_semi_sync_master_wait_point",
        )
    };
    topology
        .sql(
            "node1",
            &[
                &format!("SET GLOBAL {timeout} = 3600000"),
                &format!("SET GLOBAL {wait_point} = AFTER_SYNC"),
            ],
        )
        .await;
    create_app(topology).await;
    eventually(
        PATIENCE,
        "node1 in sync: semi-sync on, a replica acknowledging",
        || async {
            let view: InstanceView = api
                .get(&format!("/api/v1/instances/{primary}"))
                .await
                .ok()?;
            let semi = &view.instance.facts.as_ref()?.semi_sync;
            (semi.source_enabled && semi.source_active && semi.source_clients >= 1).then_some(())
        },
    )
    .await;
    let mut acknowledged = vec![1];
    app_insert(topology, 1)
        .await
        .expect("the application writes to node1 before the cut");

    setup.proxy.set(Mode::Blackhole);
    let cut_at = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let writer = async {
        let mut attempts = 0;
        let mut after_cut = Vec::new();
        for id in 100.. {
            if done.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            attempts += 1;
            // Unanswered within 1.5 s: not acknowledged (the application gives up).
            if let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_millis(1500), app_insert(topology, id)).await
            {
                after_cut.push(id);
            }
        }
        (attempts, after_cut)
    };
    let recovered = async {
        let recovery = eventually(PATIENCE, "a finished recovery of cluster t", || async {
            setup
                .recoveries()
                .await
                .into_iter()
                .find(|r| r.finished_at.is_some())
        })
        .await;
        // A last write attempt or two against node1 after the promotion, then stop.
        tokio::time::sleep(Duration::from_secs(2)).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        recovery
    };
    let ((attempts, after_cut), recovery) = tokio::join!(writer, recovered);
    println!(
        "{flavor}: cut -> recovered in {} ms; {attempts} writes tried on the isolated node1, {} acknowledged",
        cut_at.elapsed().as_millis(),
        after_cut.len()
    );
    assert_eq!(recovery.status, RecoveryStatus::Succeeded, "{recovery:#?}");
    assert!(
        attempts >= 2,
        "the application kept writing to node1 ({attempts} tries)"
    );
    acknowledged.extend(after_cut);
    let successor = recovery.successor.clone().expect("a successor");
    let new_primary = topology.node_at(&successor);
    for id in &acknowledged {
        assert_eq!(
            topology
                .value(
                    &new_primary,
                    &format!("SELECT COUNT(*) FROM app.t WHERE id = {id}")
                )
                .await
                .as_deref(),
            Some("1"),
            "write {id} was acknowledged by node1 but {successor} lacks it"
        );
    }
}

async fn an_agent_cut_off_from_a_live_primary_does_not_fail_over(flavor: Flavor) {
    let setup = BehindProxy::start(flavor, DEFAULT_SILENT_HEARTBEATS).await;
    let (topology, primary, api) = (&setup.topology, &setup.primary, setup.api());
    topology
        .sql(
            "node1",
            &["CREATE DATABASE p", "CREATE TABLE p.t (id INT PRIMARY KEY)"],
        )
        .await;

    setup.proxy.set(Mode::BlackholeThisProcess);
    let problem: Problem = eventually(PATIENCE, "UnreachablePrimary on node1", || async {
        let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.ok()?;
        detail
            .problems
            .into_iter()
            .find(|p| &p.instance == primary && p.code == ProblemCode::UnreachablePrimary)
    })
    .await;
    println!("{flavor}: {:?}: {}", problem.code, problem.explanation);

    // The cut is the agent's alone: a write on node1 still reaches both replicas through
    // the very proxy that blackholes the agent.
    topology.sql("node1", &["INSERT INTO p.t VALUES (1)"]).await;
    for replica in ["node2", "node3"] {
        eventually(PATIENCE, &format!("the write on {replica}"), || async {
            (topology
                .value(replica, "SELECT COUNT(*) FROM p.t")
                .await
                .as_deref()
                == Some("1"))
            .then_some(())
        })
        .await;
    }

    // Automatic recovery is allowed for this cluster, and still nothing happens: the
    // replicas keep hearing node1's heartbeats, so it is never judged dead. Watched for
    // twice the heartbeat-silence limit (3 periods of 1 s).
    let switch: RecoverySwitch = api.get("/api/v1/recovery").await.expect("switch");
    assert!(
        switch.automatic,
        "automatic recovery must be on for this test to mean anything"
    );
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(6) {
        let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.expect("cluster t");
        assert_eq!(&detail.primary, primary, "node1 must stay the primary");
        assert!(
            detail.problems.iter().all(|p| !p.code.needs_recovery()),
            "a live primary was judged dead: {:?}",
            detail.problems
        );
        assert!(
            detail.problems.iter().any(|p| &p.instance == primary
                && matches!(
                    p.code,
                    ProblemCode::UnreachablePrimary
                        | ProblemCode::UnreachablePrimaryWithLaggingReplicas
                )),
            "the agent must keep reporting that it cannot reach node1: {:?}",
            detail.problems
        );
        let recoveries = setup.recoveries().await;
        assert!(
            recoveries.is_empty(),
            "no failover expected: {recoveries:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Nobody touched node1: it still takes writes.
    assert_eq!(
        topology
            .value("node1", "SELECT @@read_only")
            .await
            .as_deref(),
        Some("0")
    );
}

async fn a_primary_cut_off_from_everyone_is_replaced_and_fenced_when_it_returns(flavor: Flavor) {
    cut_off_from_everyone(flavor, DEFAULT_SILENT_HEARTBEATS).await
}

// The same cut judged only by the replicas' own IO threads: heartbeat silence alone would
// need 30 s here, so the verdict waits until the replicas time out (replica_net_timeout,
// 4 s) and are reconnecting into the cut. That is the order production defaults give
// (heartbeat = net timeout / 2, 3 silent heartbeats = 1.5 net timeouts), and the moment
// MySQL's STOP REPLICA IO_THREAD is slowest: it waits ~2 s for the connect attempt.
mod a_cut_judged_by_reconnecting_replicas_is_recovered {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb() {
        super::cut_off_from_everyone(pointsman::sandbox::Flavor::Mariadb, 30).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql() {
        super::cut_off_from_everyone(pointsman::sandbox::Flavor::Mysql, 30).await
    }
}

async fn cut_off_from_everyone(flavor: Flavor, silent_heartbeats: u32) {
    let setup = BehindProxy::start(flavor, silent_heartbeats).await;
    let (topology, primary, api) = (&setup.topology, &setup.primary, setup.api());
    create_app(topology).await;
    app_insert(topology, 1)
        .await
        .expect("the application writes to node1 before the cut");
    assert!(setup.recoveries().await.is_empty());

    setup.proxy.set(Mode::Blackhole);
    let cut_at = SystemTime::now();
    let recovery = eventually(PATIENCE, "a finished recovery of cluster t", || async {
        setup
            .recoveries()
            .await
            .into_iter()
            .find(|r| r.finished_at.is_some())
    })
    .await;
    let finished_at = recovery.finished_at.expect("finished");
    println!(
        "{flavor}: cut -> recovery started {} ms, finished {} ms ({} promoted)",
        millis(cut_at, recovery.started_at),
        millis(cut_at, finished_at),
        recovery
            .successor
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert_eq!(recovery.status, RecoveryStatus::Succeeded, "{recovery:#?}");
    assert_eq!(recovery.problem, "DeadPrimary");
    assert_eq!(&recovery.failed, primary);
    let successor = recovery.successor.clone().expect("a successor");
    assert!(
        [topology.key("node2"), topology.key("node3")].contains(&successor),
        "{successor} is not a replica of node1"
    );
    // The agent re-reads everyone after a recovery; the new tree shows from then on.
    eventually(
        PATIENCE,
        &format!("{successor} primary of cluster t"),
        || async {
            let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.ok()?;
            (detail.primary == successor).then_some(())
        },
    )
    .await;

    // The cut kept the agent from fencing node1 so far: it still takes writes.
    assert_eq!(
        topology
            .value("node1", "SELECT @@read_only")
            .await
            .as_deref(),
        Some("0"),
        "node1 was made read_only through a cut that should have stopped everything"
    );

    setup.proxy.set(Mode::Forward);
    let healed = Instant::now();
    eventually(
        Duration::from_secs(15),
        "node1 set read_only once reachable again",
        || async {
            (topology
                .value("node1", "SELECT @@read_only")
                .await
                .as_deref()
                == Some("1"))
            .then_some(())
        },
    )
    .await;
    println!(
        "{flavor}: heal -> node1 fenced {} ms",
        healed.elapsed().as_millis()
    );
    if flavor.is_mysql() {
        assert_eq!(
            topology
                .value("node1", "SELECT @@super_read_only")
                .await
                .as_deref(),
            Some("1")
        );
    }
    let view: InstanceView = api
        .get(&format!("/api/v1/instances/{primary}"))
        .await
        .expect("node1 through the API");
    assert!(view.fenced, "node1 must show as fenced: {view:?}");

    // A client still writing to the old primary is refused.
    match app_insert(topology, 2).await {
        Err(mysql_async::Error::Server(error)) => assert_eq!(
            error.code, 1290,
            "expected ER_OPTION_PREVENTS_STATEMENT (read-only), got {error:?}"
        ),
        other => panic!("a write on the fenced old primary must fail read-only: {other:?}"),
    }
}
