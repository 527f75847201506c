//! Several agents, exactly one acts, on MariaDB 10.11 and MySQL 9.7: three `pointsman
//! run` processes with `[ha]` share a leader lease in the Consul stand-in. Exactly one
//! leads and the others name it; a change asked of a follower goes to the leader (the
//! CLI's client follows it); the leader killed with `kill -9` together with the
//! primary is replaced, and the new leader — never a follower — recovers the primary,
//! exactly once; over ten primary kills there is exactly one recovery each time and
//! never two writable primaries; a leader cut off from Consul stops acting and a
//! follower takes over; followers' DNS answers the leader's routes.

mod support;

use pointsman::sandbox::Flavor;
use std::time::Duration;
use support::agent_process::{
    describe, free_port, kill_primary_and_wait, one_leader, one_primary_everyone_follows, rejoin,
    sees_the_cluster, write_config, AgentProcess,
};
use support::consul::{ConsulOptions, ConsulStandIn};
use support::proxy::{Mode, Proxy};
use support::{eventually, TestTopology};

const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(
    a_killed_leader_and_primary_are_replaced_and_recovered_once,
    several_primary_kills_one_recovery_each_and_never_two_primaries,
    followers_answer_dns_from_the_leaders_routes,
    a_leader_cut_off_from_consul_changes_nothing_and_a_follower_recovers
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
    for round in 1..=10 {
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

/// The port `dig` finds in the SRV record of `<alias>.primary.mysql.local.` at an agent's
/// DNS responder; `None` while there is none.
async fn primary_port_in_dns(dns_port: u16, alias: &str) -> Option<u16> {
    let output = tokio::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &dns_port.to_string(),
            "+short",
            "+time=1",
            "+tries=1",
            "SRV",
            &format!("_mysql._tcp.{alias}.primary.mysql.local."),
        ])
        .output()
        .await
        .expect("dig (bind9-dnsutils, installed by scripts/test.sh)");
    let text = String::from_utf8_lossy(&output.stdout);
    // `priority weight port target`
    text.lines().next()?.split_whitespace().nth(2)?.parse().ok()
}

/// Every agent's DNS says what the leader decided, not what it would decide itself: the
/// three agents call the same cluster by different aliases (`ta`, `tb`, `tc`), and every
/// responder — the followers' too — answers the leader's alias with the primary's port,
/// while a follower's own alias is unknown there. When the leader is killed, the others
/// keep answering its routes, then the new leader's.
async fn followers_answer_dns_from_the_leaders_routes(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let consul = ConsulStandIn::start(ConsulOptions::default()).await;
    let mut agents = Vec::new();
    let mut dns_ports = Vec::new();
    for name in ["ta", "tb", "tc"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let api_port = free_port();
        let dns_port = free_port();
        let config = write_config(
            &topology,
            dir.path(),
            api_port,
            &format!(
                "[routing.consul]\naddress = \"{}\"\nservices = false\n\n\
                 [routing.dns]\nenabled = true\nlisten = \"127.0.0.1:{dns_port}\"\n\
                 zone = \"mysql.local.\"\n\n[ha]\nenabled = true\nagent_name = \"{name}\"\n",
                consul.url()
            ),
        );
        let text = std::fs::read_to_string(&config).expect("config");
        std::fs::write(
            &config,
            text.replace("alias = \"t\"", &format!("alias = \"{name}\""))
                .replace("alias=t", &format!("alias={name}")),
        )
        .expect("config");
        agents.push(AgentProcess::on(&config, api_port, dir));
        dns_ports.push(dns_port);
    }
    let leader = one_leader(&agents).await;
    let aliases = ["ta", "tb", "tc"];
    let node1_port = topology.key("node1").port;
    for (index, dns_port) in dns_ports.iter().enumerate() {
        eventually(
            PATIENCE,
            &format!("agent {} to answer the leader's alias", aliases[index]),
            || async {
                (primary_port_in_dns(*dns_port, aliases[leader]).await == Some(node1_port))
                    .then_some(())
            },
        )
        .await;
        if index != leader {
            assert_eq!(
                primary_port_in_dns(*dns_port, aliases[index]).await,
                None,
                "follower {} answers from its own view",
                aliases[index]
            );
        }
    }

    // The leader dies: with no leader (until its check and the lock-delay run out) the
    // others go on answering its routes; then everyone answers the new leader's.
    agents[leader].kill().await;
    for (index, dns_port) in dns_ports.iter().enumerate() {
        if index != leader {
            assert_eq!(
                primary_port_in_dns(*dns_port, aliases[leader]).await,
                Some(node1_port),
                "agent {} still answers the routes of the leader that died",
                aliases[index]
            );
        }
    }
    let new_leader = one_leader(&agents).await;
    for (index, dns_port) in dns_ports.iter().enumerate() {
        if index == leader {
            continue;
        }
        eventually(
            PATIENCE,
            &format!("agent {} to answer the new leader's alias", aliases[index]),
            || async {
                (primary_port_in_dns(*dns_port, aliases[new_leader]).await == Some(node1_port))
                    .then_some(())
            },
        )
        .await;
    }
}

/// The leader loses Consul (a silent partition: its proxy to Consul turns into a
/// blackhole) and the primary is killed at that very moment. The cut-off leader may
/// still hold its lease for a moment, but every step is written to Consul before it
/// runs, so it changes nothing; a follower takes the lease once it may and recovers the
/// primary, exactly once. Healed, the old leader follows, and the routes record carries
/// the new leader's epoch: nothing the old one had in flight overwrote it.
async fn a_leader_cut_off_from_consul_changes_nothing_and_a_follower_recovers(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let consul = ConsulStandIn::start(ConsulOptions::default()).await;
    let mut proxies = Vec::new();
    let mut agents = Vec::new();
    for name in ["a", "b", "c"] {
        let proxy = Proxy::start(consul.address()).await.expect("proxy");
        agents.push(AgentProcess::start(
            &topology,
            &format!(
                "[routing.consul]\naddress = \"http://{}\"\n\n[ha]\nenabled = true\nagent_name = \"{name}\"\n",
                proxy.address()
            ),
        ));
        proxies.push(proxy);
    }
    for agent in &agents {
        sees_the_cluster(&agent.api).await;
    }
    let leader = one_leader(&agents).await;
    eventually(
        PATIENCE,
        "the routes record written by the leader",
        || async { consul.kv_string("pointsman/routes/t").map(|_| ()) },
    )
    .await;

    proxies[leader].set(Mode::Blackhole);
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node1").expect("kill -9 node1");
    let deadline = std::time::Instant::now() + PATIENCE;
    while one_primary_everyone_follows(&topology, &["node2", "node3"])
        .await
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no new primary after the leader was cut off and the primary died:\n{}",
            describe(&topology, &["node2", "node3"]).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let by_agent = eventually(PATIENCE, "the failover recorded", || async {
        let counts = failovers_per_agent(&agents).await;
        (counts.iter().sum::<usize>() >= 1).then_some(counts)
    })
    .await;
    assert_eq!(
        by_agent.iter().sum::<usize>(),
        1,
        "failovers per agent: {by_agent:?}"
    );
    assert_eq!(
        by_agent[leader], 0,
        "the cut-off leader failed over: {by_agent:?}"
    );
    let new_leader = by_agent
        .iter()
        .position(|count| *count == 1)
        .expect("who failed over");

    // Healed: the old leader follows the new one, and the record keeps the new epoch.
    proxies[leader].set(Mode::Forward);
    eventually(PATIENCE, "the old leader to follow", || async {
        let health = agents[leader].health().await?;
        (health.role == "follower").then_some(())
    })
    .await;
    let lock = consul
        .kv_entry("pointsman/leader/default")
        .expect("the lock key");
    assert!(lock.session.is_some(), "someone holds the lease");
    let record: serde_json::Value = serde_json::from_str(
        &consul
            .kv_string("pointsman/routes/t")
            .expect("the routes record"),
    )
    .expect("json");
    assert_eq!(
        record["epoch"].as_u64().map(|epoch| epoch >> 42),
        Some(lock.lock_index),
        "the routes record carries the new leader's epoch: {record}"
    );
    assert_eq!(
        record["primary"].as_str(),
        Some(
            topology
                .key(
                    &one_primary_everyone_follows(&topology, &["node2", "node3"])
                        .await
                        .expect("primary")
                )
                .to_string()
                .as_str()
        ),
        "the routes record names the new primary"
    );
    let health = agents[new_leader].health().await.expect("health");
    assert_eq!(health.role, "leader");
}
