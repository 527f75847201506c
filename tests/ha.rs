//! Several agents, exactly one acts, on MariaDB 10.11 and MySQL 9.7: three `pointsman
//! run` processes with `[ha]` share a leader lease in the Consul stand-in. Exactly one
//! leads and the others name it; a change asked of a follower goes to the leader (the
//! CLI's client follows it); the leader killed with `kill -9` together with the
//! primary is replaced, and the new leader — never a follower — recovers the primary,
//! exactly once; over several primary kills there is exactly one recovery each time and
//! never two writable primaries.

mod support;

use pointsman::sandbox::Flavor;
use std::time::Duration;
use support::agent_process::{
    describe, kill_primary_and_wait, one_leader, one_primary_everyone_follows, rejoin,
    sees_the_cluster, AgentProcess,
};
use support::consul::{ConsulOptions, ConsulStandIn};
use support::{eventually, TestTopology};

const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(
    a_killed_leader_and_primary_are_replaced_and_recovered_once,
    several_primary_kills_one_recovery_each_and_never_two_primaries
);

/// An agent with `[ha]` on the stand-in, named `name`.
fn ha_agent(topology: &TestTopology, consul: &ConsulStandIn, name: &str) -> AgentProcess {
    AgentProcess::start(
        topology,
        &format!(
            "[routing.consul]\naddress = \"{}\"\n\n[ha]\nenabled = true\nagent_name = \"{name}\"\n",
            consul.url()
        ),
    )
}

/// Succeeded failovers in each agent's record (0 for a stopped agent).
async fn failovers_per_agent(agents: &[AgentProcess]) -> Vec<usize> {
    futures::future::join_all(agents.iter().map(AgentProcess::failovers)).await
}

async fn three_agents(topology: &TestTopology, consul: &ConsulStandIn) -> Vec<AgentProcess> {
    let agents: Vec<AgentProcess> = ["a", "b", "c"]
        .iter()
        .map(|name| ha_agent(topology, consul, name))
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
        let metrics = agent.metrics().await;
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
    // The routes record carries the new leader's lease epoch: a late write of the dead
    // leader's (an older epoch) cannot overwrite it.
    let lock = consul
        .kv_entry("pointsman/leader/default")
        .expect("the lock key");
    eventually(
        PATIENCE,
        &format!(
            "the routes record of t under lease epoch {}",
            lock.lock_index
        ),
        || async {
            let record: serde_json::Value =
                serde_json::from_str(&consul.kv_string("pointsman/routes/t")?).ok()?;
            (record["epoch"].as_u64()? >> 42 == lock.lock_index).then_some(())
        },
    )
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
    let mut primary = "node1".to_string();
    for round in 1..=3 {
        let successor = kill_primary_and_wait(&topology, &primary).await;
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
        let follower = &agents[(leader + 1) % 3];
        rejoin(&topology, &primary, &successor, follower, &agents[leader]).await;
        for agent in &agents {
            sees_the_cluster(&agent.api).await;
        }
        primary = successor;
    }
}
