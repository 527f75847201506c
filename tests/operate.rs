//! An operator's actions through the API, on MariaDB 10.11 and MySQL 9.7: relocate a
//! replica below a sibling and back (GTID), refusals that say why and change nothing,
//! stop and start replication, set read_only, the ranked candidates, the live event
//! stream (which never keeps a stopping agent alive) and the metrics page.

mod support;

use futures::StreamExt;
use pointsman::api::operate::{Candidates, Done};
use pointsman::api::views::{ClusterDetail, ClusterSummary};
use pointsman::client::ClientError;
use pointsman::sandbox::Flavor;
use serde_json::json;
use std::time::Duration;
use support::{api_error, eventually, probed, watch, TestTopology};

const PATIENCE: Duration = Duration::from_secs(20);

on_every_flavor!(
    relocate_replication_and_read_only_through_the_api,
    candidates_events_and_metrics
);

fn refused(result: Result<Done, ClientError>) -> String {
    let (status, message) = api_error(result);
    assert_eq!(status, 409, "a refusal: {message}");
    message
}

async fn relocate_replication_and_read_only_through_the_api(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let watcher = watch(&topology, topology.keys(), |_| {}).await;
    probed(&watcher.agent.discovery, 3).await;
    let api = &watcher.api;
    let (node1, node2, node3) = (
        topology.key("node1"),
        topology.key("node2"),
        topology.key("node3"),
    );

    // node3 moves below node2, and back below node1.
    let done: Done = api
        .post(
            &format!("/api/v1/instances/{node3}/relocate"),
            &json!({"below": node2}),
        )
        .await
        .expect("relocate");
    assert!(done.message.contains("relocated"), "{}", done.message);
    assert!(topology.replicates("node3", Some(node2.port)).await);
    topology.sql("node1", &["CREATE DATABASE relocated"]).await;
    topology
        .replicated(
            "node3",
            "relocated",
            None,
            "node3 receives node1's writes through node2",
        )
        .await;
    let _: Done = api
        .post(
            &format!("/api/v1/instances/{node3}/relocate"),
            &json!({"below": node1}),
        )
        .await
        .expect("relocate back");
    assert!(topology.replicates("node3", Some(node1.port)).await);
    // Both moves kept the sandbox's heartbeat of 1 s (a CHANGE of the host resets it to
    // the server's default unless it is given again).
    assert_eq!(topology.heartbeat_period("node3").await, Some(1.0));

    // Nonsense is refused with a reason, and nothing moves.
    let why = refused(
        api.post(
            &format!("/api/v1/instances/{node2}/relocate"),
            &json!({"below": node2}),
        )
        .await,
    );
    assert!(why.contains("itself"), "{why}");
    let why = refused(
        api.post(
            &format!("/api/v1/instances/{node1}/relocate"),
            &json!({"below": node2}),
        )
        .await,
    );
    assert!(why.contains("is a primary"), "{why}");
    assert!(topology.replicates("node2", Some(node1.port)).await);

    // Stop and start replication; the agent sees it.
    let _: Done = api
        .post(
            &format!("/api/v1/instances/{node2}/replication"),
            &json!({"running": false}),
        )
        .await
        .expect("stop");
    assert!(!topology.replicates("node2", None).await);
    eventually(PATIENCE, "the agent sees node2 stopped", || async {
        let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.ok()?;
        detail
            .findings
            .iter()
            .any(|f| f.instance == node2 && format!("{:?}", f.code).contains("Stopped"))
            .then_some(())
    })
    .await;
    let _: Done = api
        .post(
            &format!("/api/v1/instances/{node2}/replication"),
            &json!({"running": true}),
        )
        .await
        .expect("start");
    eventually(PATIENCE, "node2 replicates again", || async {
        topology
            .replicates("node2", Some(node1.port))
            .await
            .then_some(())
    })
    .await;
    let why = refused(
        api.post(
            &format!("/api/v1/instances/{node1}/replication"),
            &json!({"running": false}),
        )
        .await,
    );
    assert!(why.contains("not a replica"), "{why}");

    // read_only off and on again.
    let _: Done = api
        .put(
            &format!("/api/v1/instances/{node3}/read_only"),
            &json!({"read_only": false}),
        )
        .await
        .expect("read_only off");
    assert_eq!(
        topology
            .value("node3", "SELECT @@read_only")
            .await
            .as_deref(),
        Some("0")
    );
    let _: Done = api
        .put(
            &format!("/api/v1/instances/{node3}/read_only"),
            &json!({"read_only": true}),
        )
        .await
        .expect("read_only on");
    assert_eq!(
        topology
            .value("node3", "SELECT @@read_only")
            .await
            .as_deref(),
        Some("1")
    );

    let audit: Vec<pointsman::store::AuditRecord> = api
        .get("/api/v1/audit?cluster=t&limit=100")
        .await
        .expect("audit");
    for action in ["relocate", "replication", "read_only"] {
        assert!(
            audit.iter().any(|r| r.action == action),
            "{action} is audited"
        );
    }
}

async fn candidates_events_and_metrics(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let watcher = watch(&topology, topology.keys(), |_| {}).await;
    probed(&watcher.agent.discovery, 3).await;
    let api = &watcher.api;

    let candidates: Candidates = api
        .get("/api/v1/clusters/t/candidates")
        .await
        .expect("candidates");
    assert_eq!(candidates.failed, topology.key("node1"));
    assert_eq!(candidates.verdicts.len(), 2, "{candidates:?}");
    assert!(
        candidates.verdicts.iter().all(|v| v.eligible),
        "{candidates:?}"
    );

    // The first events carry every cluster's summary, then the watched one's detail.
    let url = format!(
        "http://{}/api/v1/events?cluster=t",
        watcher.agent.api_address
    );
    let response = reqwest::get(&url).await.expect("events");
    assert_eq!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default(),
        "text/event-stream"
    );
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while text.matches("\n\n").count() < 2 {
        let chunk = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = |event: &str| {
        text.split("\n\n")
            .find_map(|block| block.strip_prefix(&format!("event: {event}\ndata: ")))
            .unwrap_or_else(|| panic!("no {event} event in {text}"))
            .to_string()
    };
    assert!(text.starts_with("event: summaries"), "{text}");
    let summaries: Vec<ClusterSummary> =
        serde_json::from_str(&data("summaries")).expect("cluster summaries");
    assert_eq!(summaries[0].members.len(), 3);
    let detail: ClusterDetail = serde_json::from_str(&data("cluster")).expect("a cluster detail");
    assert_eq!((detail.name.as_str(), detail.instances.len()), ("t", 3));

    let metrics = reqwest::get(format!("http://{}/metrics", watcher.agent.api_address))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("pointsman_instances{state=\"reachable\"} 3\n"),
        "{metrics}"
    );
    // An agent without [ha] acts alone, and its store is fine.
    assert!(metrics.contains("pointsman_leader 1\n"), "{metrics}");
    assert!(metrics.contains("pointsman_store_ok 1\n"), "{metrics}");
    // node2's lag, whatever it is this second (MySQL may say 1 just after a write).
    let port = topology.key("node2").port;
    let lag_line =
        format!("pointsman_replica_lag_seconds{{cluster=\"t\",instance=\"127.0.0.1:{port}\"}} ");
    assert!(
        metrics.lines().any(|line| line
            .strip_prefix(&lag_line)
            .is_some_and(|value| value.parse::<f64>().is_ok())),
        "{metrics}"
    );

    // An open event stream does not keep a stopping agent alive.
    let support::Watcher {
        agent,
        store: _store,
        ..
    } = watcher;
    tokio::time::timeout(Duration::from_secs(5), agent.stop())
        .await
        .expect("the agent stops with an event stream open")
        .expect("stops cleanly");
    drop(stream);
}
