//! Routing end to end, on MariaDB 10.11 and MySQL 9.7: a real sandbox, the agent
//! in-process, a real ProxySQL (2.7.1 in CI; the stand-in of tests/support where none is
//! found — see `support::stack`) with its read_only monitor, the Consul stand-in, and the
//! embedded DNS responder queried with `dig`. After a kill -9 failover every backend
//! names the new primary and never the old one, and ProxySQL's reader hostgroup never
//! lacks a healthy replica on the way, nor the replicas' DNS name an address; a backend that is down during the failover
//! catches up when it returns; drift made behind pointsman's back is repaired within
//! about a second, and a restart of ProxySQL from an old disk config does not leave the
//! fenced old primary in service.

mod support;

use hickory_net::client::ClientHandle;
use hickory_net::proto::rr::{DNSClass, Name, RecordType};
use mysql_async::prelude::Queryable;
use pointsman::sandbox::Flavor;
use pointsman::store::recovery::{RecoveryRecord, RecoveryStatus};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use support::stack::{Stack, READER, WRITER};
use support::{eventually, Watcher};

const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(
    a_failover_moves_every_backend_to_the_new_primary,
    a_proxysql_down_during_the_failover_catches_up_when_it_returns,
    drift_is_repaired,
    a_restart_from_an_old_disk_config_does_not_serve_the_fenced_old_primary,
    a_switchover_moves_the_routes_too,
    a_proxysql_that_cannot_save_routes_traffic_and_says_so,
);

/// `dig` output lines for one question (answer section only), or a panic that says
/// how to get dig.
fn dig(server: SocketAddr, name: &str, kind: &str) -> Vec<String> {
    let output = std::process::Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            name,
            kind,
            "+noall",
            "+answer",
            "+tries=1",
            "+time=2",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run dig ({e}): install bind9-dnsutils (scripts/test.sh does)")
        });
    assert!(output.status.success(), "dig failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect()
}

async fn finished_recovery(watcher: &Watcher, count: usize) -> RecoveryRecord {
    eventually(
        PATIENCE,
        &format!("{count} finished recoveries"),
        || async {
            let records: Vec<RecoveryRecord> =
                watcher.api.get("/api/v1/recoveries?cluster=t").await.ok()?;
            let finished: Vec<RecoveryRecord> = records
                .into_iter()
                .filter(|r| r.finished_at.is_some())
                .collect();
            (finished.len() >= count).then(|| finished[0].clone())
        },
    )
    .await
}

async fn a_failover_moves_every_backend_to_the_new_primary(flavor: Flavor) {
    let stack = Stack::start(flavor, Duration::from_millis(100)).await;
    stack.routes_node1(PATIENCE).await;
    stack.consul_names(PATIENCE, "node1").await;

    // From the kill until the routes settle, ProxySQL's runtime is read every few
    // milliseconds: its reader hostgroup must never lack an ONLINE replica; the old
    // primary must be out of the writer hostgroup before a replica takes writes (the
    // replicas' read_only is read first, runtime after: a writable replica seen with the
    // old primary still in service after it is a promotion that did not wait for the
    // withdrawal); and the replicas' DNS name must always answer with an address.
    let dead_port = stack.key("node1").port;
    let watching = Arc::new(AtomicBool::new(true));
    let mut readerless: Vec<String> = Vec::new();
    let mut two_writers: Vec<String> = Vec::new();
    let mut unanswered: Vec<String> = Vec::new();
    let mut dns = support::dns_udp_client(stack.dns()).await;
    let replicas = Name::from_str("t.replicas.mysql.local.").expect("a name");
    let mut replica_connections = Vec::new();
    for node in ["node2", "node3"] {
        let conn = stack.topology.sandbox.connect(node).await.expect("connect");
        replica_connections.push((node, conn));
    }
    let watch_readers = async {
        while watching.load(Ordering::Relaxed) {
            let mut writable = Vec::new();
            for (node, conn) in &mut replica_connections {
                let read_only: Option<u8> = conn
                    .query_first("SELECT @@global.read_only")
                    .await
                    .unwrap_or_else(|e| panic!("{node}: read_only: {e}"));
                if read_only == Some(0) {
                    writable.push(*node);
                }
            }
            let runtime = stack.runtime().await;
            let old_in_service = runtime.iter().any(|((group, port), status)| {
                *group == WRITER
                    && *port == dead_port
                    && (status == "ONLINE" || status == "SHUNNED")
            });
            if !writable.is_empty() && old_in_service {
                two_writers.push(format!("{writable:?} writable, runtime {runtime:?}"));
            }
            let serving = runtime.iter().any(|((group, port), status)| {
                *group == READER && *port != dead_port && status == "ONLINE"
            });
            if !serving {
                readerless.push(format!("{runtime:?}"));
            }
            match dns
                .query(replicas.clone(), DNSClass::IN, RecordType::A)
                .await
            {
                Ok(response) if !response.answers.is_empty() => {}
                other => unanswered.push(format!("{other:?}")),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let mut sandbox = stack.topology.sandbox.clone();
    let fail_over = async {
        sandbox.kill("node1").expect("kill node1");
        let recovery = finished_recovery(&stack.watcher, 1).await;
        watching.store(false, Ordering::Relaxed);
        recovery
    };
    let (recovery, ()) = tokio::join!(fail_over, watch_readers);
    assert!(
        readerless.is_empty(),
        "the reader hostgroup had no ONLINE replica during the failover, {} times; first: {}",
        readerless.len(),
        readerless[0]
    );
    assert!(
        two_writers.is_empty(),
        "a replica took writes while ProxySQL still sent writes to the old primary, {} times; first: {}",
        two_writers.len(),
        two_writers[0]
    );
    assert!(
        unanswered.is_empty(),
        "t.replicas.mysql.local. had no address during the failover, {} times; first: {}",
        unanswered.len(),
        unanswered[0]
    );
    assert_eq!(recovery.status, RecoveryStatus::Succeeded, "{recovery:?}");
    let new = recovery.successor.clone().expect("a successor");
    let new_node = if new == stack.key("node2") {
        "node2"
    } else {
        "node3"
    };
    let other = if new_node == "node2" {
        "node3"
    } else {
        "node2"
    };
    let steps: Vec<&str> = recovery.steps.iter().map(|s| s.step.as_str()).collect();
    let position = |name: &str| steps.iter().position(|s| *s == name);
    assert!(
        position("withdraw routes") < position("promote")
            && position("promote") < position("route"),
        "traffic is withdrawn before the promotion and routed after it: {steps:?}"
    );

    // The old primary is fenced in both hostgroups (the monitor cannot bring it back),
    // the new one writes, the other replica reads.
    stack
        .runtime_routes(
            PATIENCE,
            "ProxySQL routes the new primary and fences the old",
            &[
                (WRITER, "node1", "OFFLINE_HARD"),
                (READER, "node1", "OFFLINE_HARD"),
                (WRITER, new_node, "ONLINE"),
                (READER, new_node, "OFFLINE_SOFT"),
                (READER, other, "ONLINE"),
            ],
        )
        .await;
    // Saved to disk once the routes are quiet, so a ProxySQL restart keeps them.
    let mut saved = stack.by_port(&[
        (WRITER, new_node, "ONLINE"),
        (READER, new_node, "OFFLINE_SOFT"),
        (READER, other, "ONLINE"),
    ]);
    saved.insert((WRITER, dead_port), "OFFLINE_HARD".into());
    saved.insert((READER, dead_port), "OFFLINE_HARD".into());
    let started = Instant::now();
    while stack.disk().await != saved {
        assert!(
            started.elapsed() < PATIENCE,
            "the new routes are not saved to disk: disk {:?}, want {saved:?}; audit: {:#?}",
            stack.disk().await,
            stack
                .watcher
                .api
                .get::<Vec<pointsman::store::AuditRecord>>("/api/v1/audit?limit=50")
                .await
                .map(|a| a.into_iter().map(|r| r.message).collect::<Vec<_>>())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for statement in stack.proxysql.statements().unwrap_or_default() {
        let body = statement.trim().trim_end_matches(';');
        assert!(
            !body.contains(';') && !body.contains("/*") && !body.is_empty(),
            "one plain statement per query: {statement:?}"
        );
    }

    // Consul: orchestrator's five keys and ours.
    stack.consul_names(PATIENCE, new_node).await;
    assert_eq!(
        stack.consul.kv_string("mysql/master/t/hostname").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        stack.consul.kv_string("mysql/master/t/port"),
        Some(new.port.to_string())
    );
    assert_eq!(
        stack.consul.kv_string("mysql/master/t/ipv4").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        stack.consul.kv_string("mysql/master/t/ipv6").as_deref(),
        Some("")
    );
    let ours: serde_json::Value = serde_json::from_str(
        &stack
            .consul
            .kv_string("pointsman/routes/t")
            .expect("pointsman's own key"),
    )
    .expect("JSON");
    assert_eq!(ours["primary"], serde_json::json!(new.to_string()));
    assert_eq!(ours["recovery_id"], serde_json::json!(recovery.id));
    assert!(ours["epoch"].as_u64().unwrap_or(0) > 0, "{ours}");

    // DNS: the new primary's port in SRV, its address in A, TTL 60.
    let dns = stack.dns();
    assert_eq!(
        dig(dns, "t.primary.mysql.local.", "A"),
        vec!["t.primary.mysql.local. 60 IN A 127.0.0.1"]
    );
    assert_eq!(
        dig(dns, "_mysql._tcp.t.primary.mysql.local.", "SRV"),
        vec![format!(
            "_mysql._tcp.t.primary.mysql.local. 60 IN SRV 0 0 {} t.primary.mysql.local.",
            new.port
        )]
    );

    // `pointsman routes t` (the API behind it) sees every backend in sync.
    let view: pointsman::routing::engine::RoutesView =
        eventually(PATIENCE, "every backend in sync", || async {
            let view: pointsman::routing::engine::RoutesView = stack
                .watcher
                .api
                .get("/api/v1/routes?cluster=t")
                .await
                .ok()?;
            view.backends
                .iter()
                .all(|b| b.error.is_none() && b.inspections.iter().all(|i| i.in_sync))
                .then_some(view)
        })
        .await;
    assert_eq!(view.backends.len(), 3, "dns, proxysql and consul");
    assert!(
        view.backends
            .iter()
            .all(|b| b.status.last_promotion_lag_ms.is_some()),
        "each backend's lag behind the promotion is recorded: {view:?}"
    );
}

async fn a_proxysql_down_during_the_failover_catches_up_when_it_returns(flavor: Flavor) {
    let mut stack = Stack::start(flavor, Duration::from_millis(100)).await;
    stack.routes_node1(PATIENCE).await;
    stack.proxysql.go_down().await;
    let mut sandbox = stack.topology.sandbox.clone();
    sandbox.kill("node1").expect("kill node1");
    let recovery = finished_recovery(&stack.watcher, 1).await;
    assert_eq!(
        recovery.status,
        RecoveryStatus::Succeeded,
        "a down ProxySQL does not block the failover: {recovery:?}"
    );
    let new = recovery.successor.clone().expect("a successor");
    // The other backends moved regardless.
    let new_node = if new == stack.key("node2") {
        "node2"
    } else {
        "node3"
    };
    stack.consul_names(PATIENCE, new_node).await;

    stack.proxysql.come_back().await;
    let other = if new_node == "node2" {
        "node3"
    } else {
        "node2"
    };
    stack
        .runtime_routes(
            PATIENCE,
            "ProxySQL is brought up to date once it answers",
            &[
                (WRITER, "node1", "OFFLINE_HARD"),
                (READER, "node1", "OFFLINE_HARD"),
                (WRITER, new_node, "ONLINE"),
                (READER, new_node, "OFFLINE_SOFT"),
                (READER, other, "ONLINE"),
            ],
        )
        .await;
    let audit: Vec<pointsman::store::AuditRecord> = stack
        .watcher
        .api
        .get("/api/v1/audit?limit=1000")
        .await
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|r| r.message.contains("cannot be updated")),
        "the outage is in the audit log"
    );
}

/// Drift in ProxySQL is repaired by its runtime check (every second), not by the full
/// reconcile (every 20 s in the stack, which repairs Consul's deleted key): a
/// hand-edited row, a deleted writer row, a restart that lost rows.
async fn drift_is_repaired(flavor: Flavor) {
    let mut stack = Stack::start(flavor, Duration::from_millis(100)).await;
    let healthy = support::stack::NODE1_ROUTED;
    stack.routes_node1(PATIENCE).await;
    stack.consul_names(PATIENCE, "node1").await;
    // A second check interval and the work of one repair; the full reconcile would
    // take 20 s.
    const SOON: Duration = Duration::from_secs(5);

    // A hand edit on ProxySQL, loaded to runtime, and a key deleted in Consul.
    let port = stack.key("node2").port;
    stack
        .proxysql
        .edit_and_load(&format!(
            "UPDATE mysql_servers SET status = 'OFFLINE_HARD' WHERE hostgroup_id = {READER} AND port = {port}"
        ))
        .await;
    stack.consul.delete_key("mysql/master/t");
    let edited = Instant::now();
    stack
        .runtime_becomes(SOON, "the hand-edited row is restored", &healthy)
        .await;
    eprintln!(
        "{flavor}: a hand-edited reader row restored in {:?}",
        edited.elapsed()
    );
    stack.consul_names(PATIENCE, "node1").await;

    // The writer row deleted by hand: the writer hostgroup is empty until repaired.
    let writer_port = stack.key("node1").port;
    stack
        .proxysql
        .edit_and_load(&format!(
            "DELETE FROM mysql_servers WHERE hostgroup_id = {WRITER} AND port = {writer_port}"
        ))
        .await;
    let deleted = Instant::now();
    stack
        .runtime_becomes(SOON, "the deleted writer row is restored", &healthy)
        .await;
    eprintln!(
        "{flavor}: a deleted writer row restored in {:?}",
        deleted.elapsed()
    );

    // ProxySQL restarted from an old disk configuration (its reader rows lost).
    eventually(PATIENCE, "the routes saved to disk", || async {
        let saved = stack
            .proxysql
            .rows(&format!(
                "SELECT COUNT(*) FROM disk.mysql_servers WHERE hostgroup_id = {READER}"
            ))
            .await;
        (saved == vec![vec![Some("3".to_string())]]).then_some(())
    })
    .await;
    stack
        .proxysql
        .execute(&format!(
            "DELETE FROM disk.mysql_servers WHERE hostgroup_id = {READER}"
        ))
        .await;
    stack.proxysql.restart_from_disk().await;
    stack
        .runtime_becomes(SOON, "the routes lost in a restart are restored", &healthy)
        .await;
    let audit: Vec<pointsman::store::AuditRecord> = stack
        .watcher
        .api
        .get("/api/v1/audit?cluster=t&limit=1000")
        .await
        .expect("audit");
    let repaired: Vec<&str> = audit
        .iter()
        .filter(|r| r.message.contains("drift repaired"))
        .map(|r| r.message.as_str())
        .collect();
    assert!(
        repaired
            .iter()
            .filter(|m| m.starts_with("proxysql"))
            .count()
            >= 3
            && repaired.iter().any(|m| m.starts_with("consul")),
        "each repair is audited: {repaired:?}"
    );
}

/// After a failover, the fenced old primary is back (read_only) and ProxySQL restarts
/// from a disk config older than the failover: ProxySQL's monitor sorts servers by
/// read_only and puts the old primary ONLINE in the reader hostgroup. pointsman sees the
/// restart (its kept admin connection breaks) and withdraws it within about a second.
async fn a_restart_from_an_old_disk_config_does_not_serve_the_fenced_old_primary(flavor: Flavor) {
    let mut stack = Stack::start(flavor, Duration::from_millis(100)).await;
    stack.routes_node1(PATIENCE).await;
    let old_disk = eventually(PATIENCE, "the routes before the failover saved to disk", || async {
        let disk = stack
            .proxysql
            .rows(&format!(
                "SELECT hostgroup_id, port, status FROM disk.mysql_servers WHERE hostgroup_id IN ({WRITER}, {READER}) ORDER BY hostgroup_id, port"
            ))
            .await;
        (disk.len() == 4).then_some(disk)
    })
    .await;

    let mut sandbox = stack.topology.sandbox.clone();
    sandbox.kill("node1").expect("kill node1");
    let recovery = finished_recovery(&stack.watcher, 1).await;
    assert_eq!(recovery.status, RecoveryStatus::Succeeded, "{recovery:?}");
    let new = recovery.successor.clone().expect("a successor");
    sandbox.start("node1").await.expect("restart node1");
    let old = stack.key("node1");
    eventually(
        PATIENCE,
        "the old primary back and fenced (read_only)",
        || async {
            let mut conn = sandbox.connect("node1").await.ok()?;
            let read_only: Option<u8> = mysql_async::prelude::Queryable::query_first(
                &mut conn,
                "SELECT @@global.read_only",
            )
            .await
            .ok()?;
            (read_only == Some(1)).then_some(())
        },
    )
    .await;
    let dead_port = old.port;
    eventually(PATIENCE, "the new routes saved to disk", || async {
        let disk = stack
            .proxysql
            .rows(&format!(
                "SELECT status FROM disk.mysql_servers WHERE port = {dead_port}"
            ))
            .await;
        disk.iter()
            .all(|row| row[0].as_deref() == Some("OFFLINE_HARD"))
            .then_some(())
    })
    .await;

    // The disk config as it was before the failover, and a restart.
    stack
        .proxysql
        .execute("DELETE FROM disk.mysql_servers")
        .await;
    for row in &old_disk {
        let text = |i: usize| row[i].clone().unwrap_or_default();
        stack
            .proxysql
            .execute(&format!(
                "INSERT INTO disk.mysql_servers (hostgroup_id, hostname, port, status) VALUES ({}, '127.0.0.1', {}, '{}')",
                text(0),
                text(1),
                text(2)
            ))
            .await;
    }
    stack.proxysql.restart_from_disk().await;
    let restarted = Instant::now();
    let mut served_for = Duration::ZERO;
    let mut first_served: Option<Instant> = None;
    let right = loop {
        let runtime = stack.runtime().await;
        let serving_old = runtime
            .iter()
            .any(|((_, port), status)| *port == dead_port && status == "ONLINE");
        match (serving_old, first_served) {
            (true, None) => first_served = Some(Instant::now()),
            (false, Some(since)) => {
                served_for = since.elapsed();
                first_served = None;
            }
            _ => {}
        }
        let writer_right = runtime.get(&(WRITER, new.port)).map(String::as_str) == Some("ONLINE");
        if !serving_old && writer_right && restarted.elapsed() > Duration::from_secs(2) {
            break runtime;
        }
        assert!(
            restarted.elapsed() < PATIENCE,
            "30 s after the restart ProxySQL's runtime is {runtime:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!(
        "{flavor}: after the restart the fenced old primary was in service for {served_for:?}; runtime now {right:?}"
    );
    assert!(
        served_for < Duration::from_secs(3),
        "the fenced old primary stayed in service {served_for:?} after the restart"
    );
}

async fn a_switchover_moves_the_routes_too(flavor: Flavor) {
    let stack = Stack::start(flavor, Duration::from_millis(100)).await;
    stack.routes_node1(PATIENCE).await;
    let report: pointsman::recovery::switchover::SwitchoverReport = stack
        .watcher
        .api
        .post(
            "/api/v1/clusters/t/switchover",
            &serde_json::json!({ "to": stack.key("node2").to_string() }),
        )
        .await
        .expect("switchover");
    assert_eq!(report.new_primary, stack.key("node2"));
    // Writes stop in the routes as at the database (ProxySQL holds them instead of
    // sending them to a read_only server), and come back once the new primary writes.
    let steps: Vec<&str> = report
        .recovery
        .steps
        .iter()
        .map(|s| s.step.as_str())
        .collect();
    let position = |name: &str| steps.iter().position(|s| *s == name);
    assert!(
        position("withdraw routes").is_some() && position("promote") < position("route"),
        "the routes are paused with the writes and follow the promotion: {steps:?}"
    );
    assert!(
        report.route_gap_ms.is_some() && report.routing.contains("proxysql"),
        "the report says how long the routes took after the promotion: {report:?}"
    );
    // The old primary is a healthy replica now: a reader, never fenced.
    stack
        .runtime_becomes(
            PATIENCE,
            "ProxySQL routes node2 and reads from node1 and node3",
            &[
                (WRITER, "node2", "ONLINE"),
                (READER, "node2", "OFFLINE_SOFT"),
                (READER, "node1", "ONLINE"),
                (READER, "node3", "ONLINE"),
            ],
        )
        .await;
    stack.consul_names(PATIENCE, "node2").await;
}

/// SAVE TO DISK fails (a full or read-only disk; only the stand-in can be made to do
/// this): a failover still routes ProxySQL's runtime at once, `routes` shows the backend
/// cannot persist, the audit says so once, and the save is retried until it works.
async fn a_proxysql_that_cannot_save_routes_traffic_and_says_so(flavor: Flavor) {
    let stack = Stack::start_on_stand_in(flavor, Duration::from_millis(100)).await;
    stack.routes_node1(PATIENCE).await;
    stack
        .proxysql
        .set_failure(support::proxysql::Failure::SaveFails)
        .await;
    let mut sandbox = stack.topology.sandbox.clone();
    sandbox.kill("node1").expect("kill node1");
    let recovery = finished_recovery(&stack.watcher, 1).await;
    assert_eq!(recovery.status, RecoveryStatus::Succeeded, "{recovery:?}");
    let new = recovery.successor.clone().expect("a successor");
    let route = recovery
        .steps
        .iter()
        .find(|s| s.step == "route")
        .expect("a route step");
    assert!(
        route.ok && route.detail.contains("proxysql"),
        "ProxySQL took the new writer though it cannot save: {route:?}"
    );
    let writer_online = stack.runtime().await.get(&(WRITER, new.port)).cloned();
    assert_eq!(writer_online.as_deref(), Some("ONLINE"));

    let failing: pointsman::routing::engine::RoutesView =
        eventually(PATIENCE, "routes says the save fails", || async {
            let view: pointsman::routing::engine::RoutesView =
                stack.watcher.api.get("/api/v1/routes").await.ok()?;
            view.backends
                .iter()
                .any(|b| b.status.persist_error.is_some())
                .then_some(view)
        })
        .await;
    let proxysql = failing
        .backends
        .iter()
        .find(|b| b.status.backend.starts_with("proxysql"))
        .expect("the proxysql backend");
    assert!(
        proxysql.error.is_none() && proxysql.status.last_error.is_none(),
        "routing itself is fine: {proxysql:?}"
    );
    let printed = pointsman::client::format_routes(&failing);
    assert!(
        printed.contains("NOT SAVED") && printed.contains("retrying"),
        "`pointsman routes` says the routes are not saved:\n{printed}"
    );
    assert!(
        proxysql.inspections.iter().any(|i| i
            .now
            .iter()
            .any(|line| line.contains("not yet saved to disk"))),
        "routes shows the disk lagging: {proxysql:?}"
    );

    stack
        .proxysql
        .set_failure(support::proxysql::Failure::None)
        .await;
    eventually(PATIENCE, "the save retried until it works", || async {
        let view: pointsman::routing::engine::RoutesView =
            stack.watcher.api.get("/api/v1/routes").await.ok()?;
        view.backends
            .iter()
            .all(|b| b.status.persist_error.is_none())
            .then_some(())
    })
    .await;
    let disk = stack
        .proxysql
        .rows(&format!(
            "SELECT status FROM disk.mysql_servers WHERE hostgroup_id = {WRITER} AND port = {}",
            new.port
        ))
        .await;
    assert_eq!(disk, vec![vec![Some("ONLINE".to_string())]]);
    let audit: Vec<pointsman::store::AuditRecord> = stack
        .watcher
        .api
        .get("/api/v1/audit?limit=1000")
        .await
        .expect("audit");
    let said = |text: &str| audit.iter().filter(|r| r.message.contains(text)).count();
    assert_eq!(
        said("they cannot be saved"),
        1,
        "the failure is audited once"
    );
    assert_eq!(said("the routes are saved again"), 1);
}
