//! Failover against real servers, on MariaDB 10.11 and MySQL 9.7: a killed primary is
//! replaced by a replica within seconds, the other replica follows it, and every write a
//! client saw acknowledged before the kill is on the new primary.

mod support;

use mysql_async::prelude::Queryable;
use pointsman::api::views::ClusterDetail;
use pointsman::mysql::{admin, Connection};
use pointsman::sandbox::Flavor;
use pointsman::store::recovery::{RecoveryRecord, RecoveryStatus};
use pointsman::topology::IoThreadState;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{
    assert_audited, automatic_recovery, eventually, eventually_or_show, probed, read_only_becomes,
    session_counter, watch, TestTopology, Watcher,
};

const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(
    a_killed_primary_is_replaced_without_losing_acknowledged_writes,
    the_old_primary_returns_fenced_and_reattach_makes_it_a_replica,
    a_fence_and_its_lifting_are_one_statement_each,
    what_a_replica_received_before_its_stop_is_applied_and_its_status_read_once,
    a_second_failure_inside_the_block_period_waits_for_an_ack,
    a_failing_pre_failover_hook_aborts_the_recovery,
    hooks_written_for_orchestrator_get_its_variables_and_placeholders,
    what_if_names_the_replica_a_failover_then_promotes,
    auto_rejoin_reattaches_an_old_primary_that_lacks_nothing,
    auto_rejoin_keeps_an_old_primary_with_errant_transactions_fenced,
    semi_sync_is_carried_over_to_the_new_primary_and_its_replicas_acknowledge,
    a_killed_intermediate_primary_has_its_replicas_repointed,
    catch_up_from_a_more_advanced_must_not_replica_loses_nothing,
    a_replica_with_errant_gtids_is_never_chosen,
    recovery_refuses_file_position_replication,
    a_replica_that_was_down_during_the_failover_follows_the_new_primary,
    a_restarted_old_primary_takes_no_write,
    a_primary_restarted_without_failover_gets_its_writes_back,
);

async fn a_replica_that_was_down_during_the_failover_follows_the_new_primary(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let watcher = watch(&topology, topology.keys(), automatic_recovery(&topology)).await;
    probed(&watcher.agent.discovery, 3).await;
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node3").expect("kill node3");
    sandbox.kill("node1").expect("kill node1");
    let first = finished_recovery(&watcher.api, 1).await;
    assert_eq!(first.status, RecoveryStatus::Succeeded, "{first:?}");
    assert_eq!(first.successor, Some(topology.key("node2")));

    // node3 comes back still pointing at the dead, fenced node1: it must be re-pointed
    // under node2 — never promoted into a second primary — despite the block period.
    sandbox.start("node3").await.expect("start node3");
    let second = finished_recovery(&watcher.api, 2).await;
    assert_eq!(second.kind, "stragglers", "{second:?}");
    assert_eq!(second.status, RecoveryStatus::Succeeded, "{second:?}");
    assert_eq!(second.successor, Some(topology.key("node2")));
    assert_eq!(
        topology
            .value("node3", "SELECT @@read_only")
            .await
            .as_deref(),
        Some("1")
    );
    eventually(PATIENCE, "node3 replicates from node2", || async {
        topology.replicates("node3", None).await.then_some(())
    })
    .await;
    topology
        .sql("node2", &["CREATE DATABASE after_stragglers"])
        .await;
    topology
        .replicated(
            "node3",
            "after_stragglers",
            None,
            "node3 receives node2's writes",
        )
        .await;
}

/// Rows in `w.t` on a node.
async fn row_count(topology: &TestTopology, node: &str) -> u64 {
    topology
        .try_value(node, "SELECT COUNT(*) FROM w.t")
        .await
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn catch_up_from_a_more_advanced_must_not_replica_loses_nothing(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let node3 = topology.key("node3");
    topology
        .sql(
            "node1",
            &["CREATE DATABASE w", "CREATE TABLE w.t (id INT PRIMARY KEY)"],
        )
        .await;
    // node2 stops receiving; node1 writes 5 rows that only node3 gets.
    let w = topology.words();
    eventually(PATIENCE, "the table on node2", || async {
        topology
            .try_value("node2", "SELECT COUNT(*) FROM w.t")
            .await
            .map(|_| ())
    })
    .await;
    topology
        .sql("node2", &[&format!("{} IO_THREAD", w.stop)])
        .await;
    for id in 1..=5 {
        topology
            .sql("node1", &[&format!("INSERT INTO w.t VALUES ({id})")])
            .await;
    }
    eventually(PATIENCE, "node3 has the 5 rows", || async {
        (row_count(&topology, "node3").await == 5).then_some(())
    })
    .await;
    assert_eq!(row_count(&topology, "node2").await, 0);

    let automatic = automatic_recovery(&topology);
    let banned = format!("^{}$", regex_escape(&node3.to_string()));
    // node2, not receiving, has no binlog-dump thread on node1 and is not listed by it:
    // crawling down from node1 cannot find it, so it is a seed too.
    let watcher = watch(&topology, topology.keys(), |config| {
        automatic(config);
        config.promotion.must_not = vec![banned];
    })
    .await;
    let record = kill_node1_and_await_recovery(&topology, &watcher).await;
    assert_eq!(record.status, RecoveryStatus::Succeeded, "{record:?}");
    assert_eq!(
        record.successor,
        Some(topology.key("node2")),
        "node3 must not be promoted"
    );
    assert!(
        record.steps.iter().any(|s| s.step == "catch up" && s.ok),
        "{:?}",
        record.steps
    );
    assert_eq!(
        row_count(&topology, "node2").await,
        5,
        "node2 caught up from node3 before promotion"
    );
    eventually(PATIENCE, "node3 replicates from node2", || async {
        topology.replicates("node3", None).await.then_some(())
    })
    .await;
}

/// A regex that matches `text` literally.
fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ':' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

async fn a_replica_with_errant_gtids_is_never_chosen(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    topology
        .sql(
            "node1",
            &["CREATE DATABASE w", "CREATE TABLE w.t (id INT PRIMARY KEY)"],
        )
        .await;
    eventually(PATIENCE, "the table on node2", || async {
        topology
            .try_value("node2", "SELECT COUNT(*) FROM w.t")
            .await
            .map(|_| ())
    })
    .await;
    // node2 gets a transaction of its own, and is otherwise as advanced as node3.
    topology.writable("node2", true).await;
    topology
        .sql("node2", &["CREATE DATABASE errant_only_here"])
        .await;
    topology.writable("node2", false).await;
    let watcher = watch(
        &topology,
        vec![topology.key("node1")],
        automatic_recovery(&topology),
    )
    .await;
    let record = kill_node1_and_await_recovery(&topology, &watcher).await;
    assert_eq!(record.successor, Some(topology.key("node3")), "{record:?}");
    let choice = record
        .steps
        .iter()
        .find(|s| s.step == "choose candidate")
        .expect("choice");
    assert!(
        choice
            .detail
            .contains(&format!("{} skipped: errant GTIDs", topology.key("node2"))),
        "{}",
        choice.detail
    );
}

async fn recovery_refuses_file_position_replication(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let node1 = topology.key("node1");
    let w = topology.words();
    let no_gtid = if flavor.is_mysql() {
        "SOURCE_AUTO_POSITION=0"
    } else {
        "MASTER_USE_GTID=no"
    };
    let (file_key, pos_key) = if flavor.is_mysql() {
        ("SOURCE_LOG_FILE", "SOURCE_LOG_POS")
    } else {
        ("MASTER_LOG_FILE", "MASTER_LOG_POS")
    };
    let status = if flavor.is_mysql() {
        "SHOW BINARY LOG STATUS"
    } else {
        "SHOW MASTER STATUS"
    };
    let mut conn = topology.sandbox.connect("node1").await.expect("connect");
    let (file, position): (String, u64) = conn
        .query_first(status)
        .await
        .expect("status")
        .map(|row: mysql_async::Row| (row.get(0).expect("file"), row.get(1).expect("position")))
        .expect("a binlog");
    let _ = conn.disconnect().await;
    for replica in ["node2", "node3"] {
        topology
            .sql(
                replica,
                &[
                    w.stop,
                    &format!(
                        "{} {no_gtid}, {file_key}='{file}', {pos_key}={position}",
                        w.change
                    ),
                    w.start,
                ],
            )
            .await;
    }
    let watcher = watch(
        &topology,
        vec![node1.clone()],
        automatic_recovery(&topology),
    )
    .await;
    // Discovered and shown like any other topology.
    let detail: ClusterDetail = eventually(PATIENCE, "the file/position topology", || async {
        let detail: ClusterDetail = watcher.api.get("/api/v1/clusters/t").await.ok()?;
        (detail.instances.len() == 3 && detail.instances.iter().all(|i| i.instance.facts.is_some()))
            .then_some(detail)
    })
    .await;
    assert_eq!(detail.primary, node1);
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node1").expect("kill");
    let record = finished_recovery(&watcher.api, 1).await;
    assert_eq!(record.status, RecoveryStatus::Aborted, "{record:?}");
    let choice = record
        .steps
        .iter()
        .find(|s| s.step == "choose candidate")
        .expect("choice");
    assert!(
        choice.detail.contains("recovery needs GTID replication"),
        "{}",
        choice.detail
    );
    for node in ["node2", "node3"] {
        assert_eq!(
            topology.value(node, "SELECT @@read_only").await.as_deref(),
            Some("1"),
            "{node} untouched"
        );
    }
}

/// The newest recovery of cluster `t` once it has ended.
/// Once the three instances are probed, kills node1 and waits for the first recovery.
async fn kill_node1_and_await_recovery(
    topology: &TestTopology,
    watcher: &Watcher,
) -> RecoveryRecord {
    probed(&watcher.agent.discovery, 3).await;
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node1").expect("kill");
    finished_recovery(&watcher.api, 1).await
}

async fn finished_recovery(api: &pointsman::client::ApiClient, count: usize) -> RecoveryRecord {
    eventually(
        PATIENCE,
        &format!("recovery number {count} to finish"),
        || async {
            let records: Vec<RecoveryRecord> =
                api.get("/api/v1/recoveries?cluster=t").await.ok()?;
            (records.len() >= count && records[0].status != RecoveryStatus::Running)
                .then(|| records[0].clone())
        },
    )
    .await
}

/// A fence is a single statement, and so is lifting it: no reader, and no crash of the
/// agent between two statements, can find the server half fenced (read_only ON while
/// SUPER still writes, MySQL's super_read_only OFF). A client of the sandbox once saw
/// that half state while the agent fenced an old primary.
async fn a_fence_and_its_lifting_are_one_statement_each(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 0).await;
    let mut conn = Connection::open(&topology.key("node1"), &topology.connect_settings())
        .await
        .expect("connected");
    let flags = |read_only: &str, super_read_only: &str| {
        let super_read_only = flavor.is_mysql().then(|| super_read_only.to_string());
        (Some(read_only.to_string()), super_read_only)
    };
    for (fenced, expected) in [(true, flags("1", "1")), (false, flags("0", "0"))] {
        let before = session_counter(&mut conn, "Com_set_option").await;
        admin::set_read_only(&mut conn, fenced)
            .await
            .expect("read_only set");
        assert_eq!(
            session_counter(&mut conn, "Com_set_option").await - before,
            1,
            "fenced={fenced}: one SET statement"
        );
        let super_read_only = match flavor.is_mysql() {
            true => topology.value("node1", "SELECT @@super_read_only").await,
            false => None,
        };
        assert_eq!(
            (
                topology.value("node1", "SELECT @@read_only").await,
                super_read_only
            ),
            expected,
            "fenced={fenced}"
        );
    }
    conn.close().await;
}

/// A failover stops the candidate's IO thread, then waits until it applied what it had
/// received. The stop reads the replica's status in its own round trip, so the wait
/// asks the server nothing more before it waits, and still waits for everything
/// received before the stop — here a write the applier is held back from by a global
/// read lock on the replica.
async fn what_a_replica_received_before_its_stop_is_applied_and_its_status_read_once(
    flavor: Flavor,
) {
    let topology = TestTopology::start(flavor, 1).await;
    let status_counter = match flavor.is_mysql() {
        true => "Com_show_replica_status",
        false => "Com_show_slave_status",
    };
    let (node2, settings) = (topology.key("node2"), topology.connect_settings());
    let received = || async {
        let mut conn = Connection::open(&node2, &settings).await.ok()?;
        let status = admin::replica_status(&mut conn).await;
        conn.close().await;
        Some(status.ok()??.received_gtids)
    };
    let mut lock = topology.sandbox.connect("node2").await.expect("connect");
    lock.query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .expect("node2's applier held back");
    let before = received().await.expect("node2 replicates");
    topology.sql("node1", &["CREATE DATABASE held_back"]).await;
    eventually(PATIENCE, "node2 received the write", || async {
        received().await.filter(|now| *now != before)
    })
    .await;
    let mut session = Connection::open(&node2, &settings)
        .await
        .expect("connected");

    let before = session_counter(&mut session, status_counter).await;
    admin::stop_io_thread(&mut session)
        .await
        .expect("IO thread stopped");
    let questions = session_counter(&mut session, "Questions").await;
    let (applied, unlocked) = tokio::join!(
        admin::wait_relay_applied(&mut session, Duration::from_secs(10)),
        lock.query_drop("UNLOCK TABLES")
    );
    unlocked.expect("node2's applier let go");
    applied.expect("relay log applied");
    assert_eq!(
        session_counter(&mut session, "Questions").await - questions,
        2,
        "the wait itself, then this question"
    );
    assert_eq!(
        session_counter(&mut session, status_counter).await - before,
        1,
        "the status read once, by the stop"
    );
    assert_eq!(
        topology
            .value(
                "node2",
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'held_back'"
            )
            .await
            .as_deref(),
        Some("1"),
        "the write received before the stop is applied when the wait returns"
    );
    session.close().await;
}

async fn the_old_primary_returns_fenced_and_reattach_makes_it_a_replica(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let node1 = topology.key("node1");
    let watcher = watch(
        &topology,
        vec![node1.clone()],
        automatic_recovery(&topology),
    )
    .await;
    let recovery = kill_node1_and_await_recovery(&topology, &watcher).await;
    assert_eq!(recovery.status, RecoveryStatus::Succeeded, "{recovery:?}");
    let successor = recovery.successor.clone().expect("a successor");

    // node1 comes back writable from its own configuration: the agent fences it.
    let mut sandbox = topology.sandbox.clone();
    sandbox.start("node1").await.expect("start node1");
    eventually(PATIENCE, "node1 set read_only by the agent", || async {
        (topology
            .value("node1", "SELECT @@read_only")
            .await
            .as_deref()
            == Some("1"))
        .then_some(())
    })
    .await;
    if flavor.is_mysql() {
        assert_eq!(
            topology
                .value("node1", "SELECT @@super_read_only")
                .await
                .as_deref(),
            Some("1")
        );
    }
    let detail: ClusterDetail = watcher
        .api
        .get("/api/v1/clusters/t")
        .await
        .expect("cluster");
    assert_eq!(
        detail.primary, successor,
        "the old primary never becomes primary again"
    );
    let old = detail
        .instance(&node1)
        .expect("the old primary is shown in its cluster");
    assert!(old.fenced);
    // Back and safe, but not done: once the agent has seen it answer, the cluster says
    // it needs an operator.
    let detail: ClusterDetail = eventually(
        PATIENCE,
        "the old primary shown as back but detached",
        || async {
            let detail: ClusterDetail = watcher.api.get("/api/v1/clusters/t").await.ok()?;
            detail
                .instance(&node1)?
                .findings
                .iter()
                .any(|f| {
                    f.code == pointsman::analysis::FindingCode::FencedDetached
                        && f.message.contains("pointsman reattach")
                })
                .then_some(detail)
        },
    )
    .await;
    assert_ne!(
        detail.health.status,
        pointsman::analysis::HealthStatus::Ok,
        "a cluster with a detached old primary is not OK"
    );

    // Forgetting it would end the fence silently: refused, with what to do instead.
    match watcher
        .api
        .delete::<serde_json::Value>(&format!("/api/v1/instances/{node1}"))
        .await
    {
        Err(pointsman::client::ClientError::Api {
            status, message, ..
        }) => {
            assert_eq!(status, 409);
            assert!(
                message.contains("fenced old primary") && message.contains("--unfence"),
                "{message}"
            );
        }
        other => panic!("forgetting a fenced old primary must be refused, got {other:?}"),
    }

    // Re-attached, it replicates from the new primary and receives its writes.
    let reattached: serde_json::Value = watcher
        .api
        .post(&format!("/api/v1/instances/{node1}/reattach"), &())
        .await
        .expect("reattach");
    assert_eq!(reattached["source"], successor.to_string());
    assert!(topology.replicates("node1", None).await);
    let primary_node = topology.node_at(&successor);
    topology
        .sql(&primary_node, &["CREATE DATABASE after_reattach"])
        .await;
    eventually(PATIENCE, "the write reaches node1", || async {
        topology
            .value("node1", "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'after_reattach'")
            .await
            .filter(|count| count == "1")
    })
    .await;
    let detail: ClusterDetail = eventually(PATIENCE, "node1 back in the tree", || async {
        let detail: ClusterDetail = watcher.api.get("/api/v1/clusters/t").await.ok()?;
        detail
            .instance(&node1)
            .filter(|v| !v.fenced && v.role != pointsman::api::views::Role::FencedPrimary)?;
        Some(detail)
    })
    .await;
    assert_eq!(detail.instances.len(), 3);
}

async fn a_second_failure_inside_the_block_period_waits_for_an_ack(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let watcher = watch(
        &topology,
        vec![topology.key("node1")],
        automatic_recovery(&topology),
    )
    .await;
    let first = kill_node1_and_await_recovery(&topology, &watcher).await;
    assert_eq!(first.status, RecoveryStatus::Succeeded);
    let second_primary = first.successor.clone().expect("successor");
    eventually(
        PATIENCE,
        "the remaining replica replicates from the new primary",
        || async {
            let detail: ClusterDetail = watcher.api.get("/api/v1/clusters/t").await.ok()?;
            (detail.primary == second_primary
                && detail.tree.replicas.len() == 1
                && detail
                    .findings
                    .iter()
                    .all(|f| f.instance == topology.key("node1")))
            .then_some(())
        },
    )
    .await;

    // The new primary dies too, inside the block period: detected, not recovered.
    let mut sandbox = topology.sandbox.clone();
    sandbox
        .kill(&topology.node_at(&second_primary))
        .expect("kill the new primary");
    let audit: Vec<pointsman::store::AuditRecord> =
        eventually(PATIENCE, "the refusal in the audit", || async {
            let audit: Vec<pointsman::store::AuditRecord> =
                watcher.api.get("/api/v1/audit?cluster=t").await.ok()?;
            audit
                .iter()
                .any(|r| r.action == "failure-refused")
                .then_some(audit)
        })
        .await;
    let refusal = audit
        .iter()
        .find(|r| r.action == "failure-refused")
        .expect("refused");
    assert!(
        refusal.message.contains("blocked") && refusal.message.contains("pointsman ack t"),
        "{}",
        refusal.message
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records: Vec<RecoveryRecord> = watcher
        .api
        .get("/api/v1/recoveries?cluster=t")
        .await
        .expect("list");
    assert_eq!(
        records.len(),
        1,
        "no second automatic recovery inside the block period"
    );
    // The topology says so too: nobody waits for a failover that will not come.
    let detail: ClusterDetail = watcher
        .api
        .get("/api/v1/clusters/t")
        .await
        .expect("cluster");
    let refused = detail
        .recovery_refused
        .clone()
        .expect("the refusal is shown");
    assert!(refused.contains("pointsman ack t"), "{refused}");
    assert!(
        pointsman::client::format_topology(&detail, false).contains("AUTOMATIC RECOVERY REFUSED")
    );

    // After an acknowledgement it recovers.
    let _: serde_json::Value = watcher
        .api
        .post(
            "/api/v1/clusters/t/ack",
            &serde_json::json!({"comment": "first failover checked"}),
        )
        .await
        .expect("ack");
    let second = finished_recovery(&watcher.api, 2).await;
    assert_eq!(second.status, RecoveryStatus::Succeeded, "{second:?}");
    assert_eq!(second.failed, second_primary);
}

async fn a_failing_pre_failover_hook_aborts_the_recovery(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let recovery = automatic_recovery(&topology);
    let watcher = watch(&topology, vec![topology.key("node1")], |config| {
        recovery(config);
        config.hooks.pre_failover = vec!["echo not now, maintenance window; exit 1".into()];
    })
    .await;
    let record = kill_node1_and_await_recovery(&topology, &watcher).await;
    assert_eq!(record.status, RecoveryStatus::Aborted, "{record:?}");
    let hook = record
        .steps
        .iter()
        .find(|s| s.step == "hook pre_failover")
        .expect("hook step");
    assert!(
        !hook.ok && hook.detail.contains("exit 1") && hook.detail.contains("maintenance window"),
        "{}",
        hook.detail
    );
    // Nothing changed: both replicas are still read_only replicas of node1.
    for node in ["node2", "node3"] {
        assert_eq!(
            topology.value(node, "SELECT @@read_only").await.as_deref(),
            Some("1"),
            "{node}"
        );
    }
    let audit: Vec<pointsman::store::AuditRecord> = watcher
        .api
        .get("/api/v1/audit?cluster=t")
        .await
        .expect("audit");
    assert!(audit
        .iter()
        .any(|r| r.action == "recovery" && r.message.contains("pre_failover hook failed")));
}

/// A semi-sync primary killed: its successor gets semi-sync's source side, the other
/// replica (re-pointed) acknowledges its commits, and a write on it is acknowledged —
/// not committed asynchronously after the timeout.
async fn semi_sync_is_carried_over_to_the_new_primary_and_its_replicas_acknowledge(flavor: Flavor) {
    let topology = TestTopology::start_with(flavor, 2, true).await;
    let watcher = watch(
        &topology,
        vec![topology.key("node1")],
        automatic_recovery(&topology),
    )
    .await;
    let record = kill_node1_and_await_recovery(&topology, &watcher).await;
    assert_eq!(record.status, RecoveryStatus::Succeeded, "{record:?}");
    assert!(
        record.steps.iter().any(|s| s.step == "semi-sync" && s.ok),
        "{:?}",
        record.steps
    );
    let successor = record.successor.clone().expect("a successor");
    let new_primary = topology.node_at(&successor);
    let status = |name: &str| {
        let table = if flavor == Flavor::Mariadb {
            "information_schema.GLOBAL_STATUS"
        } else {
            "performance_schema.global_status"
        };
        format!("SELECT VARIABLE_VALUE FROM {table} WHERE VARIABLE_NAME LIKE '{name}'")
    };
    eventually(
        PATIENCE,
        "a semi-sync replica acknowledges the new primary",
        || async {
            let clients = topology
                .value(&new_primary, &status("Rpl_semi_sync_%_clients"))
                .await?;
            (clients.parse::<u32>().ok()? >= 1).then_some(())
        },
    )
    .await;
    let acknowledged = || async {
        topology
            .value(&new_primary, &status("Rpl_semi_sync_%_yes_tx"))
            .await
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = acknowledged().await;
    let started = std::time::Instant::now();
    topology
        .sql(
            &new_primary,
            &[
                "CREATE DATABASE IF NOT EXISTS semi",
                "CREATE TABLE semi.t (id INT PRIMARY KEY)",
            ],
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the writes waited {:?}: no replica acknowledged them",
        started.elapsed()
    );
    assert!(
        acknowledged().await >= before + 2,
        "the new primary's commits were not acknowledged by a replica"
    );
}

/// `recovery.auto_rejoin`: the old primary, started again after the failover with
/// nothing its successor lacks, replicates from it without anyone asking.
async fn auto_rejoin_reattaches_an_old_primary_that_lacks_nothing(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let recovery = automatic_recovery(&topology);
    let watcher = watch(&topology, vec![topology.key("node1")], |config| {
        recovery(config);
        config.recovery.auto_rejoin = true;
    })
    .await;
    let record = kill_node1_and_await_recovery(&topology, &watcher).await;
    assert_eq!(record.status, RecoveryStatus::Succeeded, "{record:?}");
    let successor = record.successor.clone().expect("a successor");
    let mut sandbox = topology.sandbox.clone();
    sandbox.start("node1").await.expect("start node1");
    eventually(
        PATIENCE,
        "node1 replicates from the new primary by itself",
        || async {
            topology
                .replicates("node1", Some(successor.port))
                .await
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        topology
            .value("node1", "SELECT @@read_only")
            .await
            .as_deref(),
        Some("1")
    );
    let said = format!("re-attached as a replica of {successor}");
    eventually(PATIENCE, "the automatic re-attach in the audit", || async {
        let audit: Vec<pointsman::store::AuditRecord> =
            watcher.api.get("/api/v1/audit?limit=50").await.ok()?;
        audit
            .iter()
            .any(|a| a.action == "reattach" && a.actor == "automatic" && a.message.contains(&said))
            .then_some(())
    })
    .await;
}

/// `recovery.auto_rejoin` never re-attaches an old primary that took a write its
/// successor lacks: it stays fenced (read_only, replicating from no one), and the audit
/// names the GTIDs and what to do on this flavour.
async fn auto_rejoin_keeps_an_old_primary_with_errant_transactions_fenced(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let store = tempfile::tempdir().expect("temp dir");
    let first = support::agent(&support::settings(
        &topology,
        vec![topology.key("node1")],
        store.path(),
        automatic_recovery(&topology),
    ))
    .await;
    let api = pointsman::client::ApiClient::new(&format!("http://{}", first.api_address));
    probed(&first.discovery, 3).await;
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node1").expect("kill node1");
    let record = finished_recovery(&api, 1).await;
    assert_eq!(record.status, RecoveryStatus::Succeeded, "{record:?}");
    first.stop().await.expect("the first agent stops");

    // With no agent watching, node1 comes back and takes a write of its own.
    sandbox.start("node1").await.expect("start node1");
    topology.writable("node1", true).await;
    topology
        .sql(
            "node1",
            &[
                "CREATE DATABASE IF NOT EXISTS errant",
                "CREATE TABLE errant.t (id INT PRIMARY KEY)",
            ],
        )
        .await;
    topology.writable("node1", false).await;

    let recover = automatic_recovery(&topology);
    let second = support::agent(&support::settings(
        &topology,
        topology.keys(),
        store.path(),
        |config| {
            recover(config);
            config.recovery.auto_rejoin = true;
        },
    ))
    .await;
    let api = pointsman::client::ApiClient::new(&format!("http://{}", second.api_address));
    let remedy = if flavor == Flavor::Mariadb {
        "mysqlbinlog --flashback"
    } else {
        "re-clone"
    };
    let refusal = eventually(PATIENCE, "the refused rejoin in the audit", || async {
        let audit: Vec<pointsman::store::AuditRecord> =
            api.get("/api/v1/audit?limit=50").await.ok()?;
        audit
            .into_iter()
            .find(|a| a.action == "rejoin-refused" && a.message.contains("never had"))
            .map(|a| a.message)
    })
    .await;
    assert!(
        refusal.contains("never had") && refusal.contains(remedy),
        "{refusal}"
    );
    assert!(
        !topology.replicates("node1", None).await,
        "node1 replicates although it has transactions the new primary lacks"
    );
    assert_eq!(
        topology
            .value("node1", "SELECT @@read_only")
            .await
            .as_deref(),
        Some("1")
    );
    second.stop().await.expect("the second agent stops");
}

/// `what-if` before a failure matches what the failover then does: the preferred
/// replica is named and then promoted, the other re-pointed; a downtimed primary is said
/// to be left alone; and asking changes nothing.
async fn what_if_names_the_replica_a_failover_then_promotes(flavor: Flavor) {
    use pointsman::api::recovery::DowntimeRequest;
    use pointsman::recovery::what_if::WhatIf;
    use pointsman::store::recovery::Downtime;

    let topology = TestTopology::start(flavor, 2).await;
    let recovery = automatic_recovery(&topology);
    let preferred = format!("^{}$", regex_escape(&topology.key("node3").to_string()));
    let watcher = watch(&topology, vec![topology.key("node1")], |config| {
        recovery(config);
        config.promotion.prefer = vec![preferred];
    })
    .await;
    probed(&watcher.agent.discovery, 3).await;
    let node1 = topology.key("node1");
    let ask = || async {
        watcher
            .api
            .get::<WhatIf>("/api/v1/clusters/t/what-if")
            .await
            .expect("what-if")
    };
    // Asked the moment all three are probed: the agent locks are weighed as they stand
    // now (each connection took its lock before its first probe), not as the last
    // judgement, perhaps from before those probes, found them.
    let answer = ask().await;
    assert!(answer.automatic, "{answer:?}");
    assert_eq!(answer.primary, node1);
    assert_eq!(answer.candidate, Some(topology.key("node3")), "{answer:?}");
    assert_eq!(answer.repointed, vec![topology.key("node2")]);
    assert!(
        answer.summary.starts_with(&format!(
            "If {node1} died now, this agent would recover t by itself. It would promote {}",
            topology.key("node3")
        )),
        "{}",
        answer.summary
    );

    let downtime = format!("/api/v1/instances/{node1}/downtime");
    let _: Downtime = watcher
        .api
        .put(
            &downtime,
            &DowntimeRequest {
                duration: "1h".into(),
                reason: "kernel upgrade".into(),
            },
        )
        .await
        .expect("downtime");
    let downtimed = ask().await;
    assert!(!downtimed.automatic, "{downtimed:?}");
    assert!(
        downtimed
            .summary
            .contains("nothing would recover t by itself")
            && downtimed.summary.contains("kernel upgrade"),
        "{}",
        downtimed.summary
    );
    let _: serde_json::Value = watcher.api.delete(&downtime).await.expect("end downtime");

    // Asking touched nothing; then the failover does what was said.
    for node in ["node2", "node3"] {
        assert_eq!(
            topology.value(node, "SELECT @@read_only").await.as_deref(),
            Some("1"),
            "{node}"
        );
    }
    assert!(ask().await.automatic);
    let record = kill_node1_and_await_recovery(&topology, &watcher).await;
    assert_eq!(record.status, RecoveryStatus::Succeeded, "{record:?}");
    assert_eq!(record.successor, answer.candidate);
    eventually(PATIENCE, "node2 replicates from node3", || async {
        topology
            .replicates("node2", Some(topology.key("node3").port))
            .await
            .then_some(())
    })
    .await;
}

/// Hooks as orchestrator users wrote them: its `ORC_*` variables and `{placeholders}`,
/// with its rules (no successor before the failover).
async fn hooks_written_for_orchestrator_get_its_variables_and_placeholders(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let recovery = automatic_recovery(&topology);
    let watcher = watch(&topology, vec![topology.key("node1")], |config| {
        recovery(config);
        config.hooks.pre_failover = vec![
            "printf 'pre %s %s %s {successorHost}' \"$ORC_FAILURE_TYPE\" \"$ORC_IS_SUCCESSFUL\" \"${ORC_SUCCESSOR_HOST-absent}\"".into(),
        ];
        config.hooks.post_failover = vec![
            "printf 'post %s %s:%s %s %s %s {successorHost}:{successorPort} {failureClusterAlias} {countReplicas} {failedPort}' \"$ORC_FAILURE_TYPE\" \"$ORC_SUCCESSOR_HOST\" \"$ORC_SUCCESSOR_PORT\" \"$ORC_IS_SUCCESSFUL\" \"$ORC_FAILURE_CLUSTER\" \"$ORC_REPLICA_HOSTS\"".into(),
        ];
    })
    .await;
    let record = kill_node1_and_await_recovery(&topology, &watcher).await;
    assert_eq!(record.status, RecoveryStatus::Succeeded, "{record:?}");
    let successor = record.successor.clone().expect("a successor");
    let output = |point: &str| {
        record
            .steps
            .iter()
            .find(|s| s.step == format!("hook {point}"))
            .map(|s| s.detail.clone())
            .unwrap_or_else(|| panic!("no {point} hook step in {:?}", record.steps))
    };
    assert!(
        output("pre_failover").contains("pre DeadMaster false absent {successorHost}"),
        "{}",
        output("pre_failover")
    );
    let old = topology.key("node1");
    let post = output("post_failover");
    let expected = format!("post DeadMaster {successor} true {old} ");
    assert!(post.contains(&expected), "{expected:?} not in {post}");
    let printed = &post[post.find("post DeadMaster").expect("the printed line")..];
    let replicas = printed
        .split_whitespace()
        .nth(5)
        .unwrap_or_else(|| panic!("ORC_REPLICA_HOSTS in {post}"));
    let mut listed: Vec<&str> = replicas.split(',').collect();
    listed.sort();
    let mut want = vec![
        topology.key("node2").to_string(),
        topology.key("node3").to_string(),
    ];
    want.sort();
    assert_eq!(listed, want, "ORC_REPLICA_HOSTS");
    let placeholders = format!("{successor} t 2 {}", old.port);
    assert!(
        post.contains(&placeholders),
        "{placeholders:?} not in {post}"
    );
}

async fn a_killed_intermediate_primary_has_its_replicas_repointed(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let (node1, node2) = (topology.key("node1"), topology.key("node2"));
    topology.replicate_from("node3", &node2).await;
    let watcher = watch(
        &topology,
        vec![node1.clone()],
        automatic_recovery(&topology),
    )
    .await;
    probed(&watcher.agent.discovery, 3).await;
    let mut sandbox = topology.sandbox.clone();
    sandbox
        .kill("node2")
        .expect("kill the intermediate primary");
    let record = finished_recovery(&watcher.api, 1).await;
    assert_eq!(record.status, RecoveryStatus::Succeeded, "{record:?}");
    assert_eq!(record.problem, "DeadIntermediatePrimary");
    assert_eq!(record.successor.as_ref(), Some(&node1));
    assert!(topology.replicates("node3", None).await);
    topology
        .sql("node1", &["CREATE DATABASE after_intermediate"])
        .await;
    eventually(PATIENCE, "node3 receives node1's writes", || async {
        topology
            .value("node3", "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'after_intermediate'")
            .await
            .filter(|count| count == "1")
    })
    .await;
}

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
    let detail: ClusterDetail =
        eventually_or_show(api, PATIENCE, "a new primary with its replica", || async {
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
    let successor_node = topology.node_at(&successor);
    // The replica re-pointed under the new primary kept its heartbeat of 1 s.
    let other = if successor_node == "node2" {
        "node3"
    } else {
        "node2"
    };
    assert_eq!(topology.heartbeat_period(other).await, Some(1.0));

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

/// An application still aimed at the old primary keeps writing while it restarts. On
/// MySQL the role persisted by the agent brings it back read-only: not one write. On
/// MariaDB (nothing persisted, the sandbox's configuration leaves the primary writable)
/// the fenced old primary is probed every 100 ms and set read_only as soon as it answers:
/// writes are taken only in that first moment.
async fn a_restarted_old_primary_takes_no_write(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let node1 = topology.key("node1");
    let watcher = watch(
        &topology,
        vec![node1.clone()],
        automatic_recovery(&topology),
    )
    .await;
    probed(&watcher.agent.discovery, 3).await;
    // An ordinary application account: read_only stops it (not an admin).
    topology
        .sql(
            "node1",
            &[
                "CREATE DATABASE w",
                "CREATE TABLE w.t (id INT AUTO_INCREMENT PRIMARY KEY)",
                "CREATE USER 'app'@'%' IDENTIFIED BY 'app'",
                "GRANT INSERT, SELECT ON w.* TO 'app'@'%'",
            ],
        )
        .await;
    if flavor.is_mysql() {
        eventually(PATIENCE, "the read-only role persisted on every node", || async {
            for node in ["node1", "node2", "node3"] {
                let persisted = topology
                    .try_value(node, "SELECT VARIABLE_VALUE FROM performance_schema.persisted_variables WHERE VARIABLE_NAME = 'super_read_only'")
                    .await;
                if persisted.as_deref() != Some("ON") {
                    return None;
                }
            }
            Some(())
        })
        .await;
        assert_eq!(
            topology
                .value("node1", "SELECT @@read_only")
                .await
                .as_deref(),
            Some("0"),
            "the running primary stays writable"
        );
    }
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node1").expect("kill -9 node1");
    let recovery = finished_recovery(&watcher.api, 1).await;
    assert_eq!(recovery.status, RecoveryStatus::Succeeded, "{recovery:?}");

    // The application keeps trying node1, as one that was never told would.
    let opts: mysql_async::Opts =
        mysql_async::OptsBuilder::from_opts(topology.sandbox.opts("node1").expect("opts"))
            .user(Some("app"))
            .pass(Some("app"))
            .into();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut first_answer: Option<std::time::Instant> = None;
            let mut accepted: Vec<Duration> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(Ok(mut conn)) = tokio::time::timeout(
                    Duration::from_millis(500),
                    mysql_async::Conn::new(opts.clone()),
                )
                .await
                else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let since = *first_answer.get_or_insert_with(std::time::Instant::now);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match conn.query_drop("INSERT INTO w.t () VALUES ()").await {
                        Ok(()) => accepted.push(since.elapsed()),
                        Err(mysql_async::Error::Server(_)) => {}
                        Err(_) => break,
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            (first_answer.is_some(), accepted)
        })
    };
    sandbox.start("node1").await.expect("restart node1");
    read_only_becomes(&topology, "node1", "1").await;
    // Long enough for a write slipped in after the fence to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, accepted) = app.await.expect("the application task");
    assert!(
        answered,
        "the application never reached the restarted node1"
    );
    eprintln!(
        "writes taken by the restarted old primary: {}",
        accepted.len()
    );
    if flavor.is_mysql() {
        assert!(
            accepted.is_empty(),
            "the restarted old primary took {} writes",
            accepted.len()
        );
    } else {
        // One 100 ms probe interval, the probe and the fence; generous for a busy machine.
        let last = accepted.iter().max().copied().unwrap_or_default();
        assert!(
            last < Duration::from_millis(600),
            "the restarted old primary took {} writes, the last {last:?} after it first answered",
            accepted.len()
        );
    }
    let fenced: ClusterDetail = watcher
        .api
        .get("/api/v1/clusters/t")
        .await
        .expect("cluster");
    assert!(
        fenced.instance(&node1).is_some_and(|v| v.fenced),
        "node1 is shown fenced"
    );
}

/// The other side of the persisted role: a primary restarted while no failover could
/// replace it (automatic recovery off here) comes back read-only — from the role the
/// agent persisted (MySQL) or from `read_only=ON` in its own configuration, as the
/// README asks (MariaDB) — and the agent, seeing its replicas still follow it and no
/// fence on it, gives it its writes back.
async fn a_primary_restarted_without_failover_gets_its_writes_back(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 1).await;
    let node1 = topology.key("node1");
    let watcher = watch(&topology, vec![node1.clone()], |_| {}).await;
    probed(&watcher.agent.discovery, 2).await;
    if flavor.is_mysql() {
        eventually(PATIENCE, "the read-only role persisted on node1", || async {
            (topology
                .try_value("node1", "SELECT VARIABLE_VALUE FROM performance_schema.persisted_variables WHERE VARIABLE_NAME = 'super_read_only'")
                .await
                .as_deref()
                == Some("ON"))
            .then_some(())
        })
        .await;
    } else {
        let cnf = topology.sandbox.cnf_path("node1");
        let mut text = std::fs::read_to_string(&cnf).expect("node1's configuration");
        text.push_str("read_only=ON\n");
        std::fs::write(&cnf, text).expect("node1's configuration");
    }
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node1").expect("kill -9 node1");
    eventually(PATIENCE, "the agent sees node1 gone", || async {
        let detail: ClusterDetail = watcher.api.get("/api/v1/clusters/t").await.ok()?;
        detail
            .instance(&node1)
            .filter(|v| !v.instance.is_reachable())
            .map(|_| ())
    })
    .await;
    sandbox.start("node1").await.expect("restart node1");
    read_only_becomes(&topology, "node1", "0").await;
    topology
        .sql("node1", &["CREATE DATABASE after_restart"])
        .await;
    topology
        .replicated(
            "node2",
            "after_restart",
            None,
            "the write reaches node2, which still follows node1",
        )
        .await;
    assert_audited(
        &watcher.api,
        &["came back read-only", "takes writes again"],
        "why node1 was made writable",
    )
    .await;
}
