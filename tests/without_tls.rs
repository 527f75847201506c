//! Servers that offer no TLS, on MySQL 9.7 and MariaDB 10.11. MySQL 9.7 makes a new
//! replication link require TLS unless told otherwise, so a link to a source without
//! TLS never connects (error 2026, "SSL is required but the server doesn't support
//! it"): with `recovery.replication_tls = "auto"` (the default) a link pointsman
//! creates asks the source and uses TLS only when it is offered. A switchover, a
//! failover and a re-attach all end with every node replicating. On MySQL TLS is
//! switched off at run time (`tls_version = ''`); MariaDB keeps its own default, and the
//! same scenario shows nothing changed there.

mod support;

use pointsman::sandbox::Flavor;
use std::time::Duration;
use support::agent_process::one_primary_everyone_follows;
use support::{automatic_recovery, eventually, probed, watch, TestTopology};

const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(switchover_failover_and_reattach_work_without_tls);

/// On MySQL: no TLS offered on `node` from now on (until it restarts).
async fn switch_tls_off(topology: &TestTopology, node: &str) {
    if topology.flavor().is_mysql() {
        topology
            .sql(
                node,
                &[
                    "SET GLOBAL tls_version = ''",
                    "ALTER INSTANCE RELOAD TLS NO ROLLBACK ON ERROR",
                ],
            )
            .await;
    }
}

/// Waits until `nodes` have one writable primary that all the others follow; its name.
async fn settled(topology: &TestTopology, nodes: &[&str], after: &str) -> String {
    eventually(
        PATIENCE,
        &format!("one primary everyone follows, after {after}"),
        || one_primary_everyone_follows(topology, nodes),
    )
    .await
}

async fn switchover_failover_and_reattach_work_without_tls(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    for node in ["node1", "node2", "node3"] {
        switch_tls_off(&topology, node).await;
    }
    let watcher = watch(&topology, topology.keys(), automatic_recovery(&topology)).await;
    probed(&watcher.agent.discovery, 3).await;

    // Switchover: the old primary gets a new link to node2.
    let report: serde_json::Value = watcher
        .api
        .post(
            "/api/v1/clusters/t/switchover",
            &serde_json::json!({ "to": topology.key("node2") }),
        )
        .await
        .expect("switchover");
    assert_eq!(
        report["new_primary"],
        topology.key("node2").to_string(),
        "{report}"
    );
    assert_eq!(
        settled(&topology, &["node1", "node2", "node3"], "the switchover").await,
        "node2"
    );
    if flavor.is_mysql() {
        assert_eq!(
            topology
                .value(
                    "node1",
                    "SELECT SSL_ALLOWED FROM performance_schema.replication_connection_configuration"
                )
                .await
                .as_deref(),
            Some("NO"),
            "the link pointsman made does not ask a source without TLS for it"
        );
    }

    // Failover, then the old primary restarted (its TLS back on: the setting was not
    // persisted) and re-attached under a source that still offers none.
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node2").expect("kill -9 node2");
    let primary = settled(&topology, &["node1", "node3"], "the failover").await;
    sandbox.start("node2").await.expect("restart node2");
    let node2 = topology.key("node2");
    let reattached: serde_json::Value = eventually(PATIENCE, "node2 re-attached", || async {
        watcher
            .api
            .post::<_, serde_json::Value>(&format!("/api/v1/instances/{node2}/reattach"), &())
            .await
            .ok()
    })
    .await;
    assert_eq!(reattached["source"], topology.key(&primary).to_string());
    settled(&topology, &["node1", "node2", "node3"], "the re-attach").await;
}
