//! Two agents that share no `[ha]` lease, configured differently, on one sandbox, on
//! MariaDB 10.11 and MySQL 9.7: the second is caught, not obeyed. The first holds the
//! agent lock on the members (through its connection to each) and acts; the second
//! says who acts — in the cluster's `recovery_refused`, `/metrics` and its refusals —
//! and over ten primary kills there is exactly one recovery each time, always by the
//! first, never two writable primaries, and only the first writes the shared routes.

mod support;

use pointsman::api::views::ClusterDetail;
use pointsman::recovery::coverage::{Coverage, CoverageState};
use pointsman::sandbox::Flavor;
use std::time::Duration;
use support::agent_process::{
    free_port, kill_primary_and_wait, rejoin, sees_the_cluster, write_config, AgentProcess,
};
use support::consul::{ConsulOptions, ConsulStandIn};
use support::{api_error, eventually, TestTopology};

const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(a_second_agent_is_caught_not_obeyed);

/// What an agent recorded of cluster `t`: kind, status and successor of each recovery.
async fn history(agent: &AgentProcess) -> Vec<String> {
    let all: Vec<pointsman::store::recovery::RecoveryRecord> = agent
        .api
        .get("/api/v1/recoveries?cluster=t")
        .await
        .unwrap_or_default();
    all.iter()
        .map(|r| format!("{} {:?} {:?}", r.kind, r.status, r.successor))
        .collect()
}

/// An agent named `name`; `reversed` lists the cluster's instances the other way round,
/// as a second agent configured by someone else might. It routes through `consul`,
/// under keys of its own (`pointsman/routes-<name>`), so what each agent writes shows.
fn start(
    topology: &TestTopology,
    consul: &ConsulStandIn,
    name: &str,
    reversed: bool,
) -> AgentProcess {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = write_config(
        topology,
        dir.path(),
        port,
        &format!(
            "[ha]\nagent_name = \"{name}\"\n\n[routing.consul]\naddress = \"{}\"\nkv_prefix = \"mysql/master-{name}\"\nroutes_prefix = \"pointsman/routes-{name}\"\nservices = false\n",
            consul.url()
        ),
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
    let consul = ConsulStandIn::start(ConsulOptions::default()).await;
    let first = start(&topology, &consul, "agent-a", false);
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

    let second = start(&topology, &consul, "agent-b", true);
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
    // Its connections read the holder of each lock one by one: the refusal
    // names agent-a from the first; awaited, all three.
    let text = eventually(PATIENCE, "agent-b to see agent-a hold all 3", || async {
        let text = second.metrics().await;
        text.contains("pointsman_agent_locks{cluster=\"t\",agent=\"agent-a\"} 3\n")
            .then_some(text)
    })
    .await;
    assert!(
        text.contains("pointsman_acting{cluster=\"t\"} 0\n"),
        "{text}"
    );
    // What each shows before anything fails: automatic recovery is on; the second
    // names the agent that acts. (The first holds every lock and sees no other holder:
    // it says only that it acts.)
    let first_says = coverage_of(&first).await;
    assert_eq!(first_says.state, CoverageState::On, "{first_says:?}");
    assert!(first_says.this_agent_acts, "{first_says:?}");
    let second_says = coverage_of(&second).await;
    assert_eq!(second_says.state, CoverageState::On, "{second_says:?}");
    assert_eq!(
        second_says.acting_agent.as_deref(),
        Some("agent-a"),
        "{second_says:?}"
    );
    assert!(!second_says.this_agent_acts, "{second_says:?}");
    // And refuses to act when asked, naming the one that does.
    let (status, message) = api_error(
        second
            .api
            .post::<_, serde_json::Value>("/api/v1/clusters/t/switchover", &serde_json::json!({}))
            .await,
    );
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("agent-a"), "{message}");

    let routed_primary = |name: &str| {
        consul
            .kv_string(&format!("pointsman/routes-{name}/t"))
            .and_then(|json| serde_json::from_str::<serde_json::Value>(&json).ok())
            .and_then(|record| record["primary"].as_str().map(str::to_string))
    };
    eventually(PATIENCE, "agent-a's routes in Consul", || async {
        (routed_primary("agent-a") == Some(topology.key("node1").to_string())).then_some(())
    })
    .await;

    let mut primary = "node1".to_string();
    for round in 1..=10 {
        let successor = kill_primary_and_wait(&topology, &primary).await;
        let deadline = std::time::Instant::now() + PATIENCE;
        let recorded = loop {
            let counts = (first.failovers().await, second.failovers().await);
            if counts.0 + counts.1 >= round {
                break counts;
            }
            if std::time::Instant::now() > deadline {
                // Say what each agent recorded: a failover that did not succeed is not
                // counted above, and the log says why.
                panic!(
                    "round {round}: after {PATIENCE:?}, failovers by (agent-a, agent-b) = {counts:?}; agent-a recorded {:?}, agent-b {:?}\n--- agent-a's log:\n{}",
                    history(&first).await,
                    history(&second).await,
                    first.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if recorded != (round, 0) {
            // Say who held which lock, what each recorded, and why agent-b acted.
            panic!(
                "round {round}: failovers by (agent-a, agent-b) = {recorded:?}, expected ({round}, 0); agent-a recorded {:?}, agent-b {:?}\n--- agent-a's locks:\n{}\n--- agent-b's locks:\n{}\n--- agent-b's log:\n{}",
                history(&first).await,
                history(&second).await,
                locks(&first).await,
                locks(&second).await,
                second.log()
            );
        }
        let successor_key = topology.key(&successor).to_string();
        eventually(PATIENCE, "agent-a's routes follow the failover", || async {
            (routed_primary("agent-a") == Some(successor_key.clone())).then_some(())
        })
        .await;
        assert!(
            consul.kv_keys("pointsman/routes-agent-b").is_empty()
                && consul.kv_keys("mysql/master-agent-b").is_empty(),
            "round {round}: agent-b wrote routes although agent-a acts"
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

/// What an agent says of automatic recovery of cluster `t`.
async fn coverage_of(agent: &AgentProcess) -> Coverage {
    let detail: ClusterDetail = agent.api.get("/api/v1/clusters/t").await.expect("t");
    detail.coverage.expect("coverage")
}

/// The agent's lock lines from its metrics (`pointsman_agent_locks`, `pointsman_acting`).
async fn locks(agent: &AgentProcess) -> String {
    agent
        .metrics()
        .await
        .lines()
        .filter(|line| {
            line.starts_with("pointsman_agent_locks") || line.starts_with("pointsman_acting")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
