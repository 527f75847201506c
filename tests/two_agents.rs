//! Two agents that share no `[ha]` lease, configured differently, on one sandbox, on
//! MariaDB 10.11 and MySQL 9.7: the second is caught, not obeyed. The first holds the
//! agent lock on the members (through its liveness connections) and acts; the second
//! says who acts — in the cluster's `recovery_refused`, `/metrics` and its refusals —
//! and over several primary kills there is exactly one recovery each time, always by
//! the first, and never two writable primaries.

mod support;

use pointsman::api::views::ClusterDetail;
use pointsman::sandbox::Flavor;
use std::time::Duration;
use support::agent_process::{
    free_port, kill_primary_and_wait, rejoin, sees_the_cluster, write_config, AgentProcess,
};
use support::{api_error, eventually, TestTopology};

const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(a_second_agent_is_caught_not_obeyed);

/// An agent named `name`; `reversed` lists the cluster's instances the other way round,
/// as a second agent configured by someone else might.
fn start(topology: &TestTopology, name: &str, reversed: bool) -> AgentProcess {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = write_config(
        topology,
        dir.path(),
        port,
        &format!("[ha]\nagent_name = \"{name}\"\n"),
    );
    if reversed {
        let text = std::fs::read_to_string(&config).expect("config");
        let listed: Vec<String> = topology.keys().iter().map(|k| format!("\"{k}\"")).collect();
        let mut backwards = listed.clone();
        backwards.reverse();
        let text = text.replace(&listed.join(", "), &backwards.join(", "));
        std::fs::write(&config, text).expect("config");
    }
    AgentProcess::on(&config, port, dir)
}

async fn a_second_agent_is_caught_not_obeyed(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let first = start(&topology, "agent-a", false);
    sees_the_cluster(&first.api).await;
    eventually(
        PATIENCE,
        "agent-a to hold the agent lock of all 3",
        || async {
            let text = first.metrics().await;
            (text.contains("pointsman_agent_locks{cluster=\"t\",agent=\"self\"} 3\n")
                && text.contains("pointsman_acting{cluster=\"t\"} 1\n"))
            .then_some(())
        },
    )
    .await;

    let second = start(&topology, "agent-b", true);
    sees_the_cluster(&second.api).await;
    // The second agent says who acts, before anything fails.
    let refused = eventually(PATIENCE, "agent-b to name agent-a", || async {
        let detail: ClusterDetail = second.api.get("/api/v1/clusters/t").await.ok()?;
        detail
            .recovery_refused
            .filter(|why| why.contains("another pointsman agent") && why.contains("agent-a"))
    })
    .await;
    assert!(refused.contains("[ha]"), "{refused}");
    let text = second.metrics().await;
    assert!(
        text.contains("pointsman_acting{cluster=\"t\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("pointsman_agent_locks{cluster=\"t\",agent=\"agent-a\"} 3\n"),
        "{text}"
    );
    // And refuses to act when asked, naming the one that does.
    let (status, message) = api_error(
        second
            .api
            .post::<_, serde_json::Value>("/api/v1/clusters/t/switchover", &serde_json::json!({}))
            .await,
    );
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("agent-a"), "{message}");

    let mut primary = "node1".to_string();
    for round in 1..=3 {
        let successor = kill_primary_and_wait(&topology, &primary).await;
        eventually(PATIENCE, "the failover recorded by agent-a", || async {
            (first.failovers().await == round).then_some(())
        })
        .await;
        assert_eq!(
            second.failovers().await,
            0,
            "round {round}: agent-b failed over"
        );
        rejoin(&topology, &primary, &successor, &first, &first).await;
        sees_the_cluster(&first.api).await;
        sees_the_cluster(&second.api).await;
        eventually(PATIENCE, "agent-a acting on t again", || async {
            first
                .metrics()
                .await
                .contains("pointsman_acting{cluster=\"t\"} 1\n")
                .then_some(())
        })
        .await;
        primary = successor;
    }
}
