//! The HTTP API against a real topology: JSON errors with the right status codes,
//! discover and forget as an operator uses them, the audit log, and an agent that stops
//! leaving no connection behind, then restarts on the same store and finds its
//! instances again without seeds.

mod support;

use pointsman::agent::RunningAgent;
use pointsman::api::recovery::DowntimeRequest;
use pointsman::api::views::{ClusterDetail, ClusterSummary, InstanceView};
use pointsman::api::{DiscoverRequest, Forgotten, Health};
use pointsman::client::ApiClient;
use pointsman::config::Config;
use pointsman::sandbox::Flavor;
use pointsman::store::recovery::{Downtime, RecoveryRecord, RecoveryStatus};
use pointsman::store::AuditRecord;
use pointsman::store::Store;
use std::time::Duration;
use support::{agent, api_error, eventually, probed, settings, watch, TestTopology};

const PATIENCE: Duration = Duration::from_secs(20);

on_every_flavor!(
    discover_forget_and_errors_through_the_api,
    a_restarted_agent_polls_what_it_knew
);

async fn discover_forget_and_errors_through_the_api(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    // No seeds and no [[cluster]] (its instances would be seeds): the agent knows
    // nothing until told. The cluster is then named after its primary.
    let watcher = watch(&topology, vec![], |c| c.clusters.clear()).await;
    let api = &watcher.api;
    let t = topology.key("node1").to_string();

    let health: Health = api.get("/api/v1/health").await.expect("health");
    assert_eq!((health.status.as_str(), health.instances), ("ok", 0));
    let clusters: Vec<ClusterSummary> = api.get("/api/v1/clusters").await.expect("list");
    assert!(clusters.is_empty());

    // Unknown things are 404 with a sentence that helps.
    let (status, message) = api_error(api.get::<ClusterDetail>("/api/v1/clusters/nope").await);
    assert_eq!(status, 404);
    assert!(message.contains("no cluster named \"nope\""), "{message}");
    let (status, _) = api_error(
        api.get::<InstanceView>("/api/v1/instances/10.1.1.1:3306")
            .await,
    );
    assert_eq!(status, 404);
    let (status, message) = api_error(api.get::<InstanceView>("/api/v1/instances/db:http").await);
    assert_eq!(
        (status, message.contains("port \"http\"")),
        (400, true),
        "{message}"
    );
    let (status, message) = api_error(
        api.post::<_, InstanceView>("/api/v1/discover", &serde_json::json!({"hostname": "x"}))
            .await,
    );
    assert_eq!(status, 400);
    assert!(message.contains("expected a JSON body"), "{message}");

    // An instance that does not answer: 502, naming it.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let (status, message) = api_error(
        api.post::<_, InstanceView>(
            "/api/v1/discover",
            &DiscoverRequest {
                host: "127.0.0.1".into(),
                port: dead_port,
            },
        )
        .await,
    );
    assert_eq!(status, 502);
    assert!(
        message.contains(&format!("cannot discover 127.0.0.1:{dead_port}")),
        "{message}"
    );

    // Discovering one replica crawls the whole topology.
    let node2 = topology.key("node2");
    let view: InstanceView = api
        .post(
            "/api/v1/discover",
            &DiscoverRequest {
                host: node2.host.clone(),
                port: node2.port,
            },
        )
        .await
        .expect("discover");
    assert_eq!(view.instance.key, node2);
    let detail: ClusterDetail = eventually(PATIENCE, "3 instances after discover", || async {
        let detail: ClusterDetail = api.get(&format!("/api/v1/clusters/{t}")).await.ok()?;
        (detail
            .instances
            .iter()
            .filter(|i| i.instance.facts.is_some())
            .count()
            == 3)
            .then_some(detail)
    })
    .await;
    assert_eq!(detail.primary, topology.key("node1"));
    let one: InstanceView = api
        .get(&format!("/api/v1/instances/{node2}"))
        .await
        .expect("instance");
    assert_eq!(one.cluster, t);
    let json = serde_json::to_string(&one).expect("json");
    assert!(
        !json.contains(&topology.sandbox.password),
        "the API must never show a password"
    );

    // Forget, and the audit log has both actions.
    let forgotten: Forgotten = api
        .delete(&format!("/api/v1/instances/{node2}"))
        .await
        .expect("forget");
    assert_eq!(forgotten.forgotten, node2);
    let (status, _) = api_error(
        api.delete::<Forgotten>("/api/v1/instances/10.9.9.9:1")
            .await,
    );
    assert_eq!(status, 404);
    let audit: Vec<AuditRecord> = api.get("/api/v1/audit").await.expect("audit");
    let actions: Vec<&str> = audit.iter().map(|r| r.action.as_str()).collect();
    assert!(
        actions.contains(&"discover") && actions.contains(&"forget"),
        "{actions:?}"
    );
    let forget = audit
        .iter()
        .find(|r| r.action == "forget")
        .expect("forget audited");
    assert_eq!(forget.cluster.as_deref(), Some(t.as_str()));
    assert_eq!(forget.instance.as_deref(), Some(&*node2.to_string()));
    let for_t: Vec<AuditRecord> = api
        .get(&format!("/api/v1/audit?cluster={t}"))
        .await
        .expect("filtered");
    assert!(
        for_t
            .iter()
            .all(|r| r.cluster.as_deref() == Some(t.as_str()))
            && !for_t.is_empty()
    );

    // Acknowledging a cluster with nothing to acknowledge, many times: one record.
    for _ in 0..30 {
        let _: serde_json::Value = api
            .post(&format!("/api/v1/clusters/{t}/ack"), &serde_json::json!({}))
            .await
            .expect("ack");
    }
    let audit: Vec<AuditRecord> = api.get("/api/v1/audit").await.expect("audit");
    assert_eq!(
        audit.iter().filter(|r| r.action == "acknowledge").count(),
        1,
        "{audit:?}"
    );

    let (status, _) = api_error(api.get::<Health>("/api/v2/nothing").await);
    assert_eq!(status, 404);
}

async fn a_restarted_agent_polls_what_it_knew(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let store = tempfile::tempdir().expect("temp");
    let first = agent(&settings(
        &topology,
        vec![topology.key("node1")],
        store.path(),
        |_| {},
    ))
    .await;
    probed(&first.discovery, 3).await;
    assert!(agent_sessions(&topology, "node1").await > 0);
    first.stop().await.expect("stops");
    // A stopped agent leaves nothing behind: no poller, no liveness watch.
    for node in ["node1", "node2", "node3"] {
        eventually(
            PATIENCE,
            &format!("no agent session left on {node}"),
            || async { (agent_sessions(&topology, node).await == 0).then_some(()) },
        )
        .await;
    }

    // Same store, no seeds (and no [[cluster]], whose instances would be seeds): the
    // remembered instances are polled again.
    let second = agent(&settings(&topology, vec![], store.path(), |c| {
        c.clusters.clear()
    }))
    .await;
    probed(&second.discovery, 3).await;
}

/// An agent with no seeds and nothing to watch, its store in `store_dir`, and a client
/// for its API: for what the API says about bad input, which needs no server.
async fn agent_alone(
    store_dir: &std::path::Path,
    tweak: impl FnOnce(&mut Config),
) -> (RunningAgent, ApiClient) {
    let mut config = Config::defaults();
    config.store.path = store_dir.join("pointsman.db");
    config.api.listen = "127.0.0.1:0".into();
    tweak(&mut config);
    let agent = agent(&config.validate().expect("valid settings")).await;
    let api = ApiClient::new(&format!("http://{}", agent.api_address));
    (agent, api)
}

/// A downtime too long for any clock, of nothing, or of an unknown instance is refused
/// with a sentence; the agent answers on (it once dropped the connection, panicking).
#[tokio::test]
async fn downtime_is_bounded_and_only_for_known_instances() {
    let store = tempfile::tempdir().expect("temp dir");
    let (agent, api) = agent_alone(store.path(), |_| {}).await;
    let path = "/api/v1/instances/127.0.0.1:3306/downtime";
    for duration in ["999999999h", "584542046090y", "0s", "366days"] {
        let (status, message) = api_error(
            api.put::<_, Downtime>(
                path,
                &DowntimeRequest {
                    duration: duration.into(),
                    reason: "maintenance".into(),
                },
            )
            .await,
        );
        assert_eq!(status, 400, "{duration}: {message}");
        assert!(
            message.contains("is outside 1s..1year"),
            "{duration}: {message}"
        );
    }
    let (status, message) = api_error(
        api.put::<_, Downtime>(
            path,
            &DowntimeRequest {
                duration: "1h".into(),
                reason: "maintenance".into(),
            },
        )
        .await,
    );
    assert_eq!(status, 404, "{message}");
    assert!(
        message.contains("127.0.0.1:3306 is not a known instance"),
        "{message}"
    );
    let health: Health = api.get("/api/v1/health").await.expect("still answers");
    assert_eq!(health.status, "ok");
    agent.stop().await.expect("stops");
}

/// An address no server can have is refused before anything connects anywhere.
#[tokio::test]
async fn discover_refuses_what_is_not_a_host() {
    let store = tempfile::tempdir().expect("temp dir");
    let (agent, api) = agent_alone(store.path(), |_| {}).await;
    for host in ["../db1", "db 1", "\"db1\""] {
        let (status, message) = api_error(
            api.post::<_, InstanceView>(
                "/api/v1/discover",
                &DiscoverRequest {
                    host: host.into(),
                    port: 3306,
                },
            )
            .await,
        );
        assert_eq!(status, 400, "{host}: {message}");
        assert!(
            message.contains("is not a host name or an IP address"),
            "{host}: {message}"
        );
    }
    agent.stop().await.expect("stops");
}

/// An agent keeps its history bounded: audit records older than store.keep_audit and
/// recoveries beyond store.keep_recoveries are gone soon after it starts.
#[tokio::test]
async fn old_history_is_deleted_in_the_background() {
    let store_dir = tempfile::tempdir().expect("temp dir");
    let path = store_dir.path().join("pointsman.db");
    let store = Store::open(&path).expect("store");
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(400 * 86_400);
    for n in 0..5 {
        let mut record = RecoveryRecord::started(
            &format!("orders-{n}"),
            "orders",
            "failover",
            "DeadPrimary",
            &"db1:3306".parse().expect("key"),
            "automatic",
            long_ago + Duration::from_secs(n),
        );
        record.status = RecoveryStatus::Succeeded;
        store.insert_recovery(&record).expect("recovery");
    }
    store.acknowledge("orders", "test", "").expect("ack");
    drop(store);
    // An audit record from long ago, as a years-old store has them.
    rusqlite::Connection::open(&path)
        .expect("open")
        .execute(
            "INSERT INTO audit (at, actor, action, cluster, instance, message)
             VALUES ('2020-01-01T00:00:00.000Z', 'api', 'acknowledge', 'orders', NULL, 'old')",
            [],
        )
        .expect("old audit record");

    let (agent, api) = agent_alone(store_dir.path(), |c| c.store.keep_recoveries = 2).await;
    eventually(PATIENCE, "old history deleted", || async {
        let audit: Vec<AuditRecord> = api.get("/api/v1/audit").await.ok()?;
        let recoveries: Vec<RecoveryRecord> = api.get("/api/v1/recoveries").await.ok()?;
        let ids: Vec<&str> = recoveries.iter().map(|r| r.id.as_str()).collect();
        (audit.iter().all(|r| r.message != "old") && ids == ["orders-4", "orders-3"]).then_some(())
    })
    .await;
    agent.stop().await.expect("stops");
}

/// Setting the recovery switch to what it already is, again and again, writes one audit
/// record, not one per call; acknowledging a cluster that does not exist is a 404.
#[tokio::test]
async fn repeated_no_ops_do_not_grow_the_audit_log() {
    let store = tempfile::tempdir().expect("temp dir");
    let (agent, api) = agent_alone(store.path(), |_| {}).await;
    for _ in 0..50 {
        let _: serde_json::Value = api
            .put("/api/v1/recovery", &serde_json::json!({"automatic": true}))
            .await
            .expect("switch");
    }
    let audit: Vec<AuditRecord> = api.get("/api/v1/audit").await.expect("audit");
    let switches: Vec<&str> = audit
        .iter()
        .filter(|r| r.action == "recovery-switch")
        .map(|r| r.message.as_str())
        .collect();
    assert_eq!(switches, ["automatic recovery was already on"]);
    let (status, message) = api_error(
        api.post::<_, serde_json::Value>("/api/v1/clusters/nope/ack", &serde_json::json!({}))
            .await,
    );
    assert_eq!(status, 404, "{message}");
    assert!(message.contains("no cluster named \"nope\""), "{message}");
    agent.stop().await.expect("stops");
}

/// A path asked with a method it does not take answers 405 with a JSON error, as every
/// other refusal does (it used to have an empty body), and says what it takes.
#[tokio::test]
async fn a_method_a_path_does_not_take_is_a_json_405() {
    let store = tempfile::tempdir().expect("temp dir");
    let (agent, _) = agent_alone(store.path(), |_| {}).await;
    let client = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/v1/health"),
        (reqwest::Method::POST, "/api/v1/clusters"),
        (reqwest::Method::PATCH, "/api/v1/recovery"),
        (reqwest::Method::PUT, "/"),
    ] {
        let response = client
            .request(
                method.clone(),
                format!("http://{}{path}", agent.api_address),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status().as_u16(), 405, "{method} {path}");
        let allow = response
            .headers()
            .get(reqwest::header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(allow.contains("GET"), "{method} {path}: Allow {allow:?}");
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("{path} does not take {method}")),
            "{method} {path}: {body}"
        );
    }
    agent.stop().await.expect("stops");
}

/// Sessions on `node` other than the one asking (the agent logs in as the same user).
async fn agent_sessions(topology: &TestTopology, node: &str) -> u64 {
    topology
        .value(
            node,
            &format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{}' AND ID <> CONNECTION_ID()",
                topology.sandbox.user
            ),
        )
        .await
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}
