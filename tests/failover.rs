//! Failover against real servers, on MariaDB 10.11 and MySQL 9.7: a killed primary is
//! replaced by a replica within seconds, the other replica follows it, and every write a
//! client saw acknowledged before the kill is on the new primary.

mod support;

use mysql_async::prelude::Queryable;
use pointsman::api::views::ClusterDetail;
use pointsman::sandbox::Flavor;
use pointsman::store::recovery::{RecoveryRecord, RecoveryStatus};
use pointsman::topology::{InstanceKey, IoThreadState};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{automatic_recovery, eventually, probed, watch, TestTopology};

const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(a_killed_primary_is_replaced_without_losing_acknowledged_writes);

async fn a_killed_primary_is_replaced_without_losing_acknowledged_writes(flavor: Flavor) {
    let topology = TestTopology::start_with(flavor, 2, true).await;
    let node1 = topology.key("node1");
    let watcher = watch(
        &topology,
        vec![node1.clone()],
        automatic_recovery(&topology),
    )
    .await;
    probed(&watcher.agent.discovery, 3).await;
    topology
        .sql(
            "node1",
            &["CREATE DATABASE w", "CREATE TABLE w.t (id INT PRIMARY KEY)"],
        )
        .await;

    // A writer that records every insert the server acknowledged.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let writer = {
        let acknowledged = acknowledged.clone();
        let mut conn = topology.sandbox.connect("node1").await.expect("connect");
        tokio::spawn(async move {
            for id in 1.. {
                if conn
                    .query_drop(format!("INSERT INTO w.t VALUES ({id})"))
                    .await
                    .is_err()
                {
                    break;
                }
                acknowledged.lock().expect("lock").insert(id);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node1").expect("kill -9 node1");
    let _ = writer.await;
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() > 10,
        "the writer wrote only {} rows",
        acknowledged.len()
    );

    // A replica takes over and the other follows it.
    let api = &watcher.api;
    let detail: ClusterDetail = eventually(PATIENCE, "a new primary with its replica", || async {
        let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.ok()?;
        let primary = detail.instance(&detail.primary)?;
        let writable = primary
            .instance
            .facts
            .as_ref()
            .is_some_and(|f| !f.read_only);
        let follower = detail.tree.replicas.iter().any(|r| {
            detail.instance(&r.key).is_some_and(|view| {
                view.instance
                    .facts
                    .as_ref()
                    .and_then(|f| f.replication.as_ref())
                    .is_some_and(|s| s.io_running == IoThreadState::Yes && s.sql_running)
            })
        });
        (detail.primary != node1 && writable && follower).then_some(detail)
    })
    .await;
    let successor = detail.primary.clone();
    let successor_node = topology
        .sandbox
        .nodes
        .iter()
        .find(|n| InstanceKey::new(n.host.clone(), n.port) == successor)
        .expect("a sandbox node")
        .name
        .clone();

    // Every acknowledged write is on the new primary.
    let mut conn = topology
        .sandbox
        .connect(&successor_node)
        .await
        .expect("connect");
    let present: BTreeSet<i64> = conn
        .query::<i64, _>("SELECT id FROM w.t")
        .await
        .expect("read")
        .into_iter()
        .collect();
    let lost: Vec<&i64> = acknowledged.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    // And it takes new writes.
    conn.query_drop("INSERT INTO w.t VALUES (-1)")
        .await
        .expect("new primary takes writes");

    let recoveries: Vec<RecoveryRecord> = api
        .get("/api/v1/recoveries?cluster=t")
        .await
        .expect("recoveries");
    let recovery = &recoveries[0];
    assert_eq!(recovery.status, RecoveryStatus::Succeeded, "{recovery:?}");
    assert_eq!(recovery.failed, node1);
    assert_eq!(recovery.successor.as_ref(), Some(&successor));
    assert_eq!(recovery.problem, "DeadPrimary");
    let steps: Vec<&str> = recovery.steps.iter().map(|s| s.step.as_str()).collect();
    for expected in [
        "choose candidate",
        "fence",
        "stop IO thread",
        "apply relay log",
        "promote",
        "re-point",
    ] {
        assert!(
            steps.contains(&expected),
            "step {expected:?} missing from {steps:?}"
        );
    }
    assert!(recovery.steps.iter().all(|s| s.ok), "{:?}", recovery.steps);
}
