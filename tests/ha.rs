//! Several agents, exactly one acts, on MariaDB 10.11 and MySQL 9.7: three `pointsman
//! run` processes with `[ha]` share a leader lease in the Consul stand-in. Exactly one
//! leads and the others name it; a change asked of a follower goes to the leader (the
//! CLI's client follows it); the leader killed with `kill -9` together with the
//! primary is replaced, and the new leader — never a follower — recovers the primary,
//! exactly once; over several primary kills there is exactly one recovery each time and
//! never two writable primaries.

mod support;

use pointsman::api::Health;
use pointsman::client::ApiClient;
use pointsman::sandbox::Flavor;
use pointsman::store::recovery::{RecoveryRecord, RecoveryStatus};
use std::time::Duration;
use support::agent_process::{
    describe, free_port, one_primary_everyone_follows, sees_the_cluster, start_agent, write_config,
};
use support::consul::{ConsulOptions, ConsulStandIn};
use support::{eventually, TestTopology};
use tokio::process::Child;

const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(
    a_killed_leader_and_primary_are_replaced_and_recovered_once,
    several_primary_kills_one_recovery_each_and_never_two_primaries
);

/// One agent process and how to reach it.
struct Agent {
    api: ApiClient,
    url: String,
    process: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(topology: &TestTopology, consul: &ConsulStandIn, name: &str) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let more = format!(
            "[routing.consul]\naddress = \"{}\"\n\n[ha]\nenabled = true\nagent_name = \"{name}\"\n",
            consul.url()
        );
        let config = write_config(topology, dir.path(), port, &more);
        let process = start_agent(&config, None, &dir.path().join("agent.log"));
        let url = format!("http://127.0.0.1:{port}");
        Agent {
            api: ApiClient::new(&url),
            url,
            process: Some(process),
            _dir: dir,
        }
    }

    async fn health(&self) -> Option<Health> {
        self.process.as_ref()?;
        self.api.get("/api/v1/health").await.ok()
    }

    /// `kill -9`, by the PID this test started.
    async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill().await;
        }
    }

    async fn failovers(&self) -> Vec<RecoveryRecord> {
        let all: Vec<RecoveryRecord> = self
            .api
            .get("/api/v1/recoveries?cluster=t")
            .await
            .unwrap_or_default();
        all.into_iter()
            .filter(|r| r.kind == "failover" && r.status == RecoveryStatus::Succeeded)
            .collect()
    }
}

/// Succeeded failovers in each agent's record (0 for a killed agent).
async fn failovers_per_agent(agents: &[Agent]) -> Vec<usize> {
    futures::future::join_all(agents.iter().map(|agent| async move {
        if agent.process.is_none() {
            0
        } else {
            agent.failovers().await.len()
        }
    }))
    .await
}

/// Waits until exactly one running agent leads and every other names it; its index.
async fn one_leader(agents: &[Agent]) -> usize {
    eventually(
        PATIENCE,
        "exactly one leader, named by the others",
        || async {
            let mut leaders = Vec::new();
            let mut named = Vec::new();
            for (index, agent) in agents.iter().enumerate() {
                let Some(health) = agent.health().await else {
                    continue;
                };
                match health.role.as_str() {
                    "leader" => leaders.push(index),
                    "follower" => named.push(health.leader.map(|l| l.api)),
                    _ => return None,
                }
            }
            let [leader] = leaders[..] else {
                return None;
            };
            named
                .iter()
                .all(|n| n.as_deref() == Some(agents[leader].url.as_str()))
                .then_some(leader)
        },
    )
    .await
}

async fn three_agents(topology: &TestTopology, consul: &ConsulStandIn) -> Vec<Agent> {
    let agents: Vec<Agent> = ["a", "b", "c"]
        .iter()
        .map(|name| Agent::start(topology, consul, name))
        .collect();
    for agent in &agents {
        sees_the_cluster(&agent.api).await;
    }
    agents
}

async fn a_killed_leader_and_primary_are_replaced_and_recovered_once(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let consul = ConsulStandIn::start(ConsulOptions::default()).await;
    let mut agents = three_agents(&topology, &consul).await;
    let leader = one_leader(&agents).await;

    // A change asked of a follower is refused there, naming the leader, and the client
    // sends it to the leader.
    let follower = (leader + 1) % 3;
    for (index, agent) in agents.iter().enumerate() {
        let metrics = reqwest::get(format!("{}/metrics", agent.url))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let expected = if index == leader { 1 } else { 0 };
        assert!(
            metrics.contains(&format!("pointsman_leader {expected}\n")),
            "agent {index}: {metrics}"
        );
    }
    let raw = reqwest::Client::new()
        .post(format!("{}/api/v1/clusters/t/ack", agents[follower].url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("the follower answers");
    assert_eq!(raw.status().as_u16(), 503);
    let refusal: serde_json::Value = raw.json().await.expect("json");
    assert_eq!(refusal["leader"], agents[leader].url.as_str(), "{refusal}");
    let _: serde_json::Value = agents[follower]
        .api
        .post("/api/v1/clusters/t/ack", &serde_json::json!({}))
        .await
        .expect("the client follows the leader");

    // The leader and the primary die together.
    agents[leader].kill().await;
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node1").expect("kill -9 node1");
    let new_leader = one_leader(&agents).await;
    assert_ne!(new_leader, leader);
    let deadline = std::time::Instant::now() + PATIENCE;
    while one_primary_everyone_follows(&topology, &["node2", "node3"])
        .await
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no new primary after the leader and the primary died:\n{}",
            describe(&topology, &["node2", "node3"]).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Exactly one recovery, by the new leader; the other survivor did nothing.
    let by_agent = eventually(PATIENCE, "the failover recorded", || async {
        let counts = failovers_per_agent(&agents).await;
        (counts.iter().sum::<usize>() >= 1).then_some(counts)
    })
    .await;
    let mut expected = vec![0; 3];
    expected[new_leader] = 1;
    assert_eq!(
        by_agent, expected,
        "failovers per agent (the new leader is {new_leader})"
    );
}

async fn several_primary_kills_one_recovery_each_and_never_two_primaries(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let consul = ConsulStandIn::start(ConsulOptions::default()).await;
    let agents = three_agents(&topology, &consul).await;
    let leader = one_leader(&agents).await;
    let mut sandbox = topology.sandbox.clone();
    let nodes = ["node1", "node2", "node3"];
    let mut primary = "node1".to_string();
    for round in 1..=3 {
        sandbox.kill(&primary).expect("kill -9 the primary");
        let running: Vec<&str> = nodes.iter().copied().filter(|n| *n != primary).collect();
        let deadline = std::time::Instant::now() + PATIENCE;
        let successor = loop {
            if let Some(successor) = one_primary_everyone_follows(&topology, &running).await {
                break successor;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no new primary:\n{}",
                describe(&topology, &running).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let counts = eventually(PATIENCE, "the failover recorded", || async {
            let counts = failovers_per_agent(&agents).await;
            (counts.iter().sum::<usize>() >= round).then_some(counts)
        })
        .await;
        assert_eq!(
            counts,
            (0..3)
                .map(|i| if i == leader { round } else { 0 })
                .collect::<Vec<_>>(),
            "round {round}: failovers per agent (the leader is agent {leader})"
        );
        // The old primary comes back (fenced: read_only) and rejoins below the new one;
        // the next round may fail over at once.
        sandbox
            .start(&primary)
            .await
            .expect("restart the old primary");
        let old = topology.key(&primary);
        eventually(PATIENCE, "the old primary to be re-attached", || async {
            agents[(leader + 1) % 3]
                .api
                .post::<_, serde_json::Value>(
                    &format!("/api/v1/instances/{old}/reattach"),
                    &serde_json::json!({}),
                )
                .await
                .ok()
        })
        .await;
        let _: serde_json::Value = agents[leader]
            .api
            .post("/api/v1/clusters/t/ack", &serde_json::json!({}))
            .await
            .expect("ack");
        let all: Vec<&str> = nodes.to_vec();
        eventually(PATIENCE, "everyone follows the new primary", || async {
            (one_primary_everyone_follows(&topology, &all)
                .await
                .as_deref()
                == Some(successor.as_str()))
            .then_some(())
        })
        .await;
        for agent in &agents {
            sees_the_cluster(&agent.api).await;
        }
        primary = successor;
    }
}
