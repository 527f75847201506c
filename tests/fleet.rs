//! The fleet simulator (`tests/support/fleet.rs`) is only worth its numbers if pointsman
//! sees a simulated cluster as it sees a real one. Here one agent watches a real MySQL
//! 9.7 sandbox of three and another the simulated cluster of three, with the same
//! configuration: healthy, both show the same roles, health, findings and problems; after
//! a kill -9 of the primary, both recover it automatically the same way (a replica
//! promoted and writable, the other one following it, the old primary fenced), and show
//! the same again. Every statement the agent sent was one the simulator knows.

mod support;

use pointsman::api::views::{ClusterDetail, Role};
use pointsman::config::{ClusterConfig, Config, HumanDuration, Secret};
use pointsman::sandbox::Flavor;
use pointsman::store::recovery::{RecoveryRecord, RecoveryStatus};
use std::time::Duration;
use support::fleet::{Fleet, FleetOptions};
use support::{agent, automatic_recovery, eventually, probed, watch, TestTopology};

const PATIENCE: Duration = Duration::from_secs(30);

/// What a person compares between two clusters: roles, health, what is wrong.
#[derive(Debug, PartialEq)]
struct Seen {
    roles: Vec<Role>,
    health: (String, usize, usize),
    findings: Vec<String>,
    problems: Vec<String>,
}

fn seen(detail: &ClusterDetail) -> Seen {
    let mut roles: Vec<Role> = detail.instances.iter().map(|v| v.role).collect();
    roles.sort_by_key(|r| format!("{r:?}"));
    let mut findings: Vec<String> = detail
        .findings
        .iter()
        .map(|f| {
            format!(
                "{:?} {:?} on the {:?}",
                f.severity,
                f.code,
                role_of(detail, &f.instance)
            )
        })
        .collect();
    findings.sort();
    let mut problems: Vec<String> = detail
        .problems
        .iter()
        .map(|p| format!("{:?} on the {:?}", p.code, role_of(detail, &p.instance)))
        .collect();
    problems.sort();
    Seen {
        roles,
        health: (
            format!("{:?}", detail.health.status),
            detail.health.problems,
            detail.health.warnings,
        ),
        findings,
        problems,
    }
}

fn role_of(detail: &ClusterDetail, key: &pointsman::topology::InstanceKey) -> Option<Role> {
    detail.instance(key).map(|v| v.role)
}

/// A fleet of one cluster of three, with the account `watch_fleet` logs in with.
async fn one_cluster() -> Fleet {
    Fleet::start(FleetOptions {
        clusters: 1,
        replicas: 2,
        user: "pointsman".into(),
        password: "fleet-secret".into(),
    })
    .await
    .expect("the fleet listens")
}

/// An agent on the fleet, configured as `watch` configures one on a sandbox.
async fn watch_fleet(
    fleet: &Fleet,
    store: &std::path::Path,
) -> (pointsman::agent::RunningAgent, pointsman::client::ApiClient) {
    let keys: Vec<pointsman::topology::InstanceKey> = fleet
        .keys()
        .iter()
        .map(|k| k.parse().expect("a key"))
        .collect();
    let mut config = Config::defaults();
    config.mysql.user = "pointsman".into();
    config.mysql.password = Some(Secret::new("fleet-secret"));
    config.discovery.seeds = vec![keys[0].clone()];
    config.discovery.poll_interval = HumanDuration(Duration::from_millis(500));
    config.store.path = store.join("pointsman.db");
    config.api.listen = "127.0.0.1:0".into();
    config.clusters = vec![ClusterConfig {
        alias: "t".into(),
        instances: keys,
    }];
    config.recovery.auto_clusters = vec!["alias=t".into()];
    config.recovery.replication_user = "repl".into();
    config.recovery.replication_password = Some(Secret::new("repl-secret"));
    let settings = config.validate().expect("valid settings");
    let running = agent(&settings).await;
    let api = pointsman::client::ApiClient::new(&format!("http://{}", running.api_address));
    (running, api)
}

async fn cluster_t(
    api: &pointsman::client::ApiClient,
    what: &str,
    ready: impl Fn(&ClusterDetail) -> bool,
) -> ClusterDetail {
    eventually(PATIENCE, what, || async {
        let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.ok()?;
        ready(&detail).then_some(detail)
    })
    .await
}

async fn finished_failover(api: &pointsman::client::ApiClient) -> RecoveryRecord {
    eventually(PATIENCE, "a finished failover of t", || async {
        let all: Vec<RecoveryRecord> = api.get("/api/v1/recoveries?cluster=t").await.ok()?;
        all.into_iter()
            .find(|r| r.kind == "failover" && r.status != RecoveryStatus::Running)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_cluster_looks_and_fails_over_like_a_real_one() {
    let fleet = one_cluster().await;
    let store = tempfile::tempdir().expect("temp dir");
    let (_simulated_agent, simulated) = watch_fleet(&fleet, store.path()).await;

    let topology = TestTopology::start(Flavor::Mysql, 2).await;
    let real = watch(
        &topology,
        vec![topology.key("node1")],
        automatic_recovery(&topology),
    )
    .await;
    probed(&real.agent.discovery, 3).await;

    let healthy = |d: &ClusterDetail| {
        d.instances.len() == 3 && d.instances.iter().all(|v| v.instance.facts.is_some())
    };
    let real_healthy = cluster_t(&real.api, "the real cluster", healthy).await;
    let simulated_healthy = cluster_t(&simulated, "the simulated cluster", healthy).await;
    assert_eq!(seen(&simulated_healthy), seen(&real_healthy), "healthy");
    assert_eq!(
        seen(&real_healthy).roles,
        vec![Role::Primary, Role::Replica, Role::Replica]
    );

    // The same failure on both.
    topology.sandbox.clone().kill("node1").expect("kill node1");
    let killed = std::time::Instant::now();
    fleet.kill(&fleet.primaries()[0]);
    let real_recovery = finished_failover(&real.api).await;
    let simulated_recovery = finished_failover(&simulated).await;
    assert_eq!(
        real_recovery.status,
        RecoveryStatus::Succeeded,
        "{real_recovery:?}"
    );
    assert_eq!(
        simulated_recovery.status,
        RecoveryStatus::Succeeded,
        "{simulated_recovery:?}\nthe fleet: {:?}",
        fleet.statements()
    );
    let steps = |r: &RecoveryRecord| r.steps.iter().map(|s| s.step.clone()).collect::<Vec<_>>();
    assert_eq!(steps(&simulated_recovery), steps(&real_recovery));
    let successor = simulated_recovery
        .successor
        .clone()
        .expect("a successor")
        .to_string();
    assert!(
        fleet.writable(&successor),
        "{successor} is not writable in the fleet"
    );
    // The benchmark times a failover to this instant: the promotion's statement.
    let writable_since = fleet
        .writable_since(&successor)
        .expect("the instant it became writable");
    assert!(writable_since > killed && writable_since.elapsed() < killed.elapsed());
    assert_eq!(fleet.writable_since(&fleet.primaries()[0]), None, "killed");

    let recovered = |d: &ClusterDetail| {
        d.instances.iter().any(|v| v.role == Role::FencedPrimary)
            && d.instances
                .iter()
                .filter(|v| v.role == Role::Replica)
                .count()
                == 1
    };
    let real_after = cluster_t(&real.api, "the real cluster recovered", recovered).await;
    let simulated_after = cluster_t(&simulated, "the simulated cluster recovered", recovered).await;
    assert_eq!(
        seen(&simulated_after),
        seen(&real_after),
        "after the failover"
    );

    // The old primaries come back: read-only and fenced, detached, on both.
    let mut sandbox =
        pointsman::sandbox::Sandbox::open(&topology.sandbox.dir).expect("the sandbox");
    sandbox.start("node1").await.expect("restart node1");
    fleet
        .start_again(&fleet.primaries()[0])
        .await
        .expect("restart the simulated primary");
    let back = |d: &ClusterDetail| {
        d.findings
            .iter()
            .any(|f| f.code == pointsman::analysis::FindingCode::FencedDetached)
    };
    let real_back = cluster_t(&real.api, "the real old primary back", back).await;
    let simulated_back = cluster_t(&simulated, "the simulated old primary back", back).await;
    assert_eq!(
        seen(&simulated_back),
        seen(&real_back),
        "with the old primary back"
    );
    println!(
        "healthy: {:?}\nafter the failover: {:?}\nback: {:?}",
        seen(&real_healthy),
        seen(&real_after),
        seen(&real_back)
    );

    let (answered, unknown, last) = fleet.statements();
    assert!(
        answered > 100,
        "the agent asked the fleet only {answered} statements"
    );
    assert_eq!(
        unknown, 0,
        "statements the simulator does not know, the last: {last}"
    );
}

/// A frozen instance (a stopped process: it accepts and answers nothing) turns
/// unreachable, and answers again when thawed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_simulated_replica_turns_unreachable_and_back() {
    let fleet = one_cluster().await;
    let store = tempfile::tempdir().expect("temp dir");
    let (_agent, api) = watch_fleet(&fleet, store.path()).await;
    cluster_t(&api, "the simulated cluster", |d| {
        d.instances.len() == 3 && d.findings.is_empty()
    })
    .await;
    let replica = fleet.keys()[1].clone();
    fleet.freeze(&replica, true);
    let unreachable = |d: &ClusterDetail| {
        d.findings.iter().any(|f| {
            f.code == pointsman::analysis::FindingCode::Unreachable
                && f.instance.to_string() == replica
        })
    };
    cluster_t(&api, "the frozen replica unreachable", unreachable).await;
    fleet.freeze(&replica, false);
    cluster_t(&api, "the thawed replica back", |d| d.findings.is_empty()).await;
}

/// An agent whose open-file limit allows two instances (`max_instances`, which the
/// agent works out from RLIMIT_NOFILE) watches two of the cluster's three and refuses
/// the third loudly — in the audit log, and to an operator asking to discover it —
/// instead of watching it through connections that fail for want of a file descriptor,
/// which would look like the instance dying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_open_file_limit_an_agent_refuses_instances_loudly() {
    use pointsman::discovery::{self, DiscoverError, DiscoveryOptions};
    let fleet = one_cluster().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = pointsman::store::Store::open(&dir.path().join("pointsman.db")).expect("store");
    let keys: Vec<pointsman::topology::InstanceKey> = fleet
        .keys()
        .iter()
        .map(|k| k.parse().expect("a key"))
        .collect();
    let watching = discovery::start(
        DiscoveryOptions {
            connect: pointsman::mysql::ConnectSettings {
                user: "pointsman".into(),
                password: Secret::new("fleet-secret"),
                connect_timeout: Duration::from_secs(2),
                query_timeout: Duration::from_secs(2),
            },
            poll_interval: Duration::from_millis(200),
            max_concurrent_probes: 4,
            claims: None,
            max_instances: 2,
        },
        vec![keys[0].clone()],
        store.clone(),
    );
    let refused = eventually(PATIENCE, "an instance refused in the audit log", || async {
        store
            .audit_log(None, 50)
            .ok()?
            .into_iter()
            .find(|a| a.action == "instance-not-watched")
    })
    .await;
    assert!(
        refused.message.contains("RLIMIT_NOFILE") && refused.message.contains("LimitNOFILE="),
        "{}",
        refused.message
    );
    let snapshot = watching.snapshot();
    assert_eq!(snapshot.instances.len(), 2);
    let left_out: pointsman::topology::InstanceKey = refused
        .instance
        .expect("the instance refused")
        .parse()
        .expect("a key");
    assert!(snapshot.get(&left_out).is_none());
    match watching.discover(left_out.clone()).await {
        Err(DiscoverError::Full(2)) => {}
        other => panic!("discovering {left_out} past the limit: {other:?}"),
    }
    watching.stop().await;
}

/// A kill -9 closes the process's sockets in the kernel, whatever the process was
/// doing: the simulator shuts a killed instance's sockets before `kill` returns, not
/// when its tasks next run (on a busy simulator that was hundreds of ms later, and the
/// fleet benchmark timed the simulator's lag as the agent's). On a single-threaded
/// runtime nothing of the simulator runs between the kill and these reads.
#[tokio::test(flavor = "current_thread")]
async fn a_killed_simulated_instance_closes_its_connections_and_refuses_new_ones_at_once() {
    use std::io::Read;
    let fleet = one_cluster().await;
    let primary = fleet.primaries()[0].clone();
    let mut client = std::net::TcpStream::connect(&primary).expect("the primary listens");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    // Let the simulator accept it and send its greeting.
    let greeted = &client;
    eventually(PATIENCE, "the simulator's greeting", || async move {
        let mut first = [0u8; 4];
        greeted.set_nonblocking(true).expect("non-blocking");
        let read = greeted.peek(&mut first);
        greeted.set_nonblocking(false).expect("blocking");
        matches!(read, Ok(n) if n > 0).then_some(())
    })
    .await;

    fleet.kill(&primary);
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .expect("the connection ends, not times out");
    let refused = std::net::TcpStream::connect(&primary).expect_err("nothing listens any more");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}
