//! Routing end to end, on MariaDB 10.11 and MySQL 9.7: a real sandbox, the agent
//! in-process, the ProxySQL admin and Consul stand-ins from tests/support (ProxySQL's
//! read_only monitor included), and the embedded DNS responder queried with `dig`.
//! After a kill -9 failover every backend names the new primary and never the old one;
//! a backend that is down during the failover catches up when it returns; drift made
//! behind pointsman's back is repaired.

mod support;

use pointsman::sandbox::Flavor;
use pointsman::store::recovery::{RecoveryRecord, RecoveryStatus};
use std::net::SocketAddr;
use std::time::Duration;
use support::proxysql::Failure;
use support::stack::{Stack, READER, WRITER};
use support::{eventually, Watcher};

const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(
    a_failover_moves_every_backend_to_the_new_primary,
    a_proxysql_down_during_the_failover_catches_up_when_it_returns,
    drift_is_repaired,
    a_switchover_moves_the_routes_too,
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
    stack
        .runtime_becomes(
            PATIENCE,
            "ProxySQL routes node1 as writer, node2 and node3 as readers",
            &[
                (WRITER, "node1", "ONLINE"),
                (READER, "node2", "ONLINE"),
                (READER, "node3", "ONLINE"),
            ],
        )
        .await;
    stack.consul_names(PATIENCE, "node1").await;

    let mut sandbox = stack.topology.sandbox.clone();
    sandbox.kill("node1").expect("kill node1");
    let recovery = finished_recovery(&stack.watcher, 1).await;
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
        .runtime_becomes(
            PATIENCE,
            "ProxySQL routes the new primary and fences the old",
            &[
                (WRITER, "node1", "OFFLINE_HARD"),
                (READER, "node1", "OFFLINE_HARD"),
                (WRITER, new_node, "ONLINE"),
                (READER, other, "ONLINE"),
            ],
        )
        .await;
    let disk = stack.proxysql.rows(&format!(
        "SELECT port FROM disk.mysql_servers WHERE hostgroup_id = {WRITER} AND status = 'ONLINE'"
    ));
    assert_eq!(
        disk,
        vec![vec![Some(new.port.to_string())]],
        "saved to disk, so a ProxySQL restart keeps the new routes"
    );
    for statement in stack.proxysql.statements() {
        let body = statement.trim().trim_end_matches(';');
        assert!(
            !body.contains(';') && !body.contains("/*") && !body.is_empty(),
            "one plain statement per query: {statement:?}"
        );
    }
    assert!(!stack.proxysql.crashed());

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
    let stack = Stack::start(flavor, Duration::from_millis(100)).await;
    stack
        .runtime_becomes(
            PATIENCE,
            "ProxySQL routes node1 as writer",
            &[
                (WRITER, "node1", "ONLINE"),
                (READER, "node2", "ONLINE"),
                (READER, "node3", "ONLINE"),
            ],
        )
        .await;
    stack.proxysql.set_failure(Failure::Down).await;
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

    stack.proxysql.set_failure(Failure::None).await;
    let other = if new_node == "node2" {
        "node3"
    } else {
        "node2"
    };
    stack
        .runtime_becomes(
            PATIENCE,
            "ProxySQL is brought up to date once it answers",
            &[
                (WRITER, "node1", "OFFLINE_HARD"),
                (READER, "node1", "OFFLINE_HARD"),
                (WRITER, new_node, "ONLINE"),
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

async fn drift_is_repaired(flavor: Flavor) {
    let stack = Stack::start(flavor, Duration::from_millis(100)).await;
    let healthy = [
        (WRITER, "node1", "ONLINE"),
        (READER, "node2", "ONLINE"),
        (READER, "node3", "ONLINE"),
    ];
    stack
        .runtime_becomes(PATIENCE, "ProxySQL routes node1", &healthy)
        .await;
    stack.consul_names(PATIENCE, "node1").await;

    // A hand edit on ProxySQL (memory and runtime), and a key deleted in Consul.
    let port = stack.key("node2").port;
    for table in ["mysql_servers", "runtime_mysql_servers"] {
        stack.proxysql.execute(&format!(
            "UPDATE {table} SET status = 'OFFLINE_HARD' WHERE hostgroup_id = {READER} AND port = {port}"
        ));
    }
    stack.consul.delete_key("mysql/master/t");
    stack
        .runtime_becomes(PATIENCE, "the hand-edited row is restored", &healthy)
        .await;
    stack.consul_names(PATIENCE, "node1").await;

    // ProxySQL restarted from an old disk configuration.
    stack.proxysql.execute(&format!(
        "DELETE FROM disk.mysql_servers WHERE hostgroup_id = {READER}"
    ));
    stack.proxysql.restart_from_disk().await;
    stack
        .runtime_becomes(
            PATIENCE,
            "the routes lost in a restart are restored",
            &healthy,
        )
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
        repaired.iter().any(|m| m.starts_with("proxysql"))
            && repaired.iter().any(|m| m.starts_with("consul")),
        "each repair is audited: {repaired:?}"
    );
}

async fn a_switchover_moves_the_routes_too(flavor: Flavor) {
    let stack = Stack::start(flavor, Duration::from_millis(100)).await;
    stack
        .runtime_becomes(
            PATIENCE,
            "ProxySQL routes node1",
            &[
                (WRITER, "node1", "ONLINE"),
                (READER, "node2", "ONLINE"),
                (READER, "node3", "ONLINE"),
            ],
        )
        .await;
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
    // The old primary is a healthy replica now: a reader, never fenced.
    stack
        .runtime_becomes(
            PATIENCE,
            "ProxySQL routes node2 and reads from node1 and node3",
            &[
                (WRITER, "node2", "ONLINE"),
                (READER, "node1", "ONLINE"),
                (READER, "node3", "ONLINE"),
            ],
        )
        .await;
    stack.consul_names(PATIENCE, "node2").await;
}
