//! Failover benchmark on real sandboxes (`cargo bench --bench failover`): the agent runs
//! in-process with automatic recovery on, and each run starts a fresh 3-node topology,
//! makes its primary fail, and measures from that instant:
//!
//! (a) → the failure detected (the agent's `failure-detected` audit entry),
//! (b) → a replica writable (an application account without SUPER inserts every 2 ms
//!       into both replicas until one accepts),
//! (c) → every remaining replica replicating from the new primary (IO and SQL threads).
//!
//! Two failures: kill -9 of the primary's process, and a primary cut off from the agent
//! and its replicas (every path through a TCP proxy that silently stops forwarding; the
//! replicas heartbeat every second). Then the write-unavailability window of repeated
//! graceful switchovers (read_only ON on the old primary → read_only OFF on the new one).
//! BENCH_FLAVOR=mariadb|mysql (default mariadb),
//! BENCH_RUNS (default 5), BENCH_SILENT_HEARTBEATS (default: the configuration's
//! default). Prints min / median / max per measure.

#[path = "../tests/support/mod.rs"]
mod support;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use pointsman::sandbox::Flavor;
use pointsman::store::AuditRecord;
use pointsman::topology::InstanceKey;
use std::time::{Duration, Instant, SystemTime};
use support::proxy::{Mode, Proxy};
use support::{automatic_recovery, probed, watch, TestTopology, Watcher};

const APP_USER: &str = "bench_app";
const APP_PASSWORD: &str = "bench-app";
const LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq)]
enum Failure {
    Kill,
    CutOff,
}

struct Run {
    detected: Duration,
    writable: Duration,
    replicating: Duration,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("BENCH_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter("pointsman=debug")
            .init();
    }
    let flavor = support::bench_flavor();
    let runs = support::bench_runs();
    let mut table = Vec::new();
    for (failure, name) in [
        (Failure::Kill, "kill -9 of the primary"),
        (Failure::CutOff, "primary cut off from everyone"),
    ] {
        let mut results = Vec::new();
        for _ in 0..runs {
            results.push(one_run(flavor, failure).await);
        }
        table.push((name, results));
    }
    let gaps = switchover_gaps(flavor, runs * 2).await;
    let silent = std::env::var("BENCH_SILENT_HEARTBEATS").unwrap_or_else(|_| "default".into());
    println!(
        "\nfailover benchmark: {flavor}, 3-node sandbox, recovery.silent_heartbeats {silent}, {runs} runs each"
    );
    println!("| failure | (a) detected | (b) new primary writable | (c) all replicas replicating from it |");
    println!("| --- | --- | --- | --- |");
    for (name, results) in table {
        let stats = |pick: fn(&Run) -> Duration| {
            let mut values: Vec<Duration> = results.iter().map(pick).collect();
            values.sort();
            format!(
                "{} / {} / {} ms",
                values[0].as_millis(),
                values[values.len() / 2].as_millis(),
                values[values.len() - 1].as_millis()
            )
        };
        println!(
            "| {name} (min / median / max) | {} | {} | {} |",
            stats(|r| r.detected),
            stats(|r| r.writable),
            stats(|r| r.replicating)
        );
    }
    println!(
        "| switchover write gap, {} switchovers (min / median / max) | {} / {} / {} ms |",
        gaps.len(),
        gaps[0],
        gaps[gaps.len() / 2],
        gaps[gaps.len() - 1]
    );
}

/// Write gaps of `count` switchovers back and forth on one sandbox, sorted.
async fn switchover_gaps(flavor: Flavor, count: usize) -> Vec<u64> {
    let topology = TestTopology::start(flavor, 2).await;
    let watcher = watch(&topology, topology.keys(), automatic_recovery(&topology)).await;
    probed(&watcher.agent.discovery, 3).await;
    settle(&topology, &watcher).await;
    let mut gaps = Vec::new();
    for _ in 0..count {
        let report = watcher
            .agent
            .coordinator
            .switchover("t", None, "bench")
            .await
            .expect("switchover");
        gaps.push(report.write_gap_ms);
        // Let the agent see the new tree before the next one.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    watcher.agent.stop().await.expect("agent stops");
    gaps.sort();
    gaps
}

async fn one_run(flavor: Flavor, failure: Failure) -> Run {
    let topology = TestTopology::start(flavor, 2).await;
    let node1 = topology.key("node1");
    topology
        .sql(
            "node1",
            &[
                "CREATE DATABASE bench",
                "CREATE TABLE bench.t (id INT AUTO_INCREMENT PRIMARY KEY)",
                &format!("CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'"),
                &format!("GRANT INSERT ON bench.* TO '{APP_USER}'@'%'"),
            ],
        )
        .await;
    // With a cut-off primary, the agent and the replicas reach node1 only through the
    // proxy, so node1 is known by the proxy's address everywhere.
    let proxy = match failure {
        Failure::Kill => None,
        Failure::CutOff => {
            let target = format!("{}:{}", node1.host, node1.port)
                .parse()
                .expect("address");
            Some(Proxy::start(target).await.expect("proxy"))
        }
    };
    let primary = match &proxy {
        Some(proxy) => InstanceKey::new("127.0.0.1", proxy.address().port()),
        None => node1.clone(),
    };
    if proxy.is_some() {
        for replica in ["node2", "node3"] {
            topology.replicate_from(replica, &primary).await;
        }
    }
    let automatic = automatic_recovery(&topology);
    let watcher = watch(&topology, vec![primary.clone()], |config| {
        automatic(config);
        // [[cluster]] instances are seeds too: node1 is listed by the only address the
        // agent may know it by (the proxy's, when it is behind one).
        for cluster in &mut config.clusters {
            for key in &mut cluster.instances {
                if *key == node1 {
                    *key = primary.clone();
                }
            }
        }
    })
    .await;
    probed(&watcher.agent.discovery, 3).await;
    settle(&topology, &watcher).await;

    let mut writers = Vec::new();
    for node in ["node2", "node3"] {
        writers.push(app_connection(&topology, node).await);
    }
    let failed_at_wall = SystemTime::now();
    tracing::info!("FAILURE INJECTED NOW");
    let failed_at = Instant::now();
    match &proxy {
        Some(proxy) => proxy.set(Mode::Blackhole),
        None => {
            let mut sandbox = topology.sandbox.clone();
            sandbox.kill("node1").expect("kill -9");
        }
    }

    // (b): the first replica that takes an insert from an account without SUPER.
    let (writable, promoted) = loop {
        let mut found = None;
        for (index, conn) in writers.iter_mut().enumerate() {
            if conn
                .query_drop("INSERT INTO bench.t VALUES ()")
                .await
                .is_ok()
            {
                found = Some(index);
                break;
            }
        }
        if let Some(index) = found {
            break (failed_at.elapsed(), ["node2", "node3"][index]);
        }
        assert!(failed_at.elapsed() < LIMIT, "no replica became writable");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // (c): the other replica replicates from the new one.
    let other = if promoted == "node2" {
        "node3"
    } else {
        "node2"
    };
    let new_primary = topology.key(promoted);
    let replicating = loop {
        if topology.replicates(other, Some(new_primary.port)).await {
            break failed_at.elapsed();
        }
        assert!(
            failed_at.elapsed() < LIMIT,
            "{other} never replicated from {promoted}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // (a): when the agent recorded the failure.
    let audit: Vec<AuditRecord> = watcher
        .api
        .get("/api/v1/audit?cluster=t")
        .await
        .expect("audit");
    let detected = audit
        .iter()
        .filter(|r| r.action == "failure-detected")
        .map(|r| r.at)
        .min()
        .and_then(|at| at.duration_since(failed_at_wall).ok())
        .expect("the detection is audited");
    watcher.agent.stop().await.expect("agent stops");
    Run {
        detected,
        writable,
        replicating,
    }
}

/// Waits until the agent has seen both replicas replicate and has heard heartbeats, so
/// every run starts from the same steady state.
async fn settle(topology: &TestTopology, watcher: &Watcher) {
    let started = Instant::now();
    loop {
        let snapshot = watcher.agent.discovery.snapshot();
        let ready = snapshot
            .instances
            .values()
            .filter(|i| i.source_last_heard.is_some())
            .count()
            == 2;
        if ready
            && topology.replicates("node2", None).await
            && topology.replicates("node3", None).await
        {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            return;
        }
        assert!(started.elapsed() < LIMIT, "the sandbox never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn app_connection(topology: &TestTopology, node: &str) -> Conn {
    let key = topology.key(node);
    let opts = OptsBuilder::default()
        .ip_or_hostname(key.host)
        .tcp_port(key.port)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .db_name(Some("bench"))
        .prefer_socket(false);
    Conn::new(opts)
        .await
        .expect("the application account connects")
}
