//! Leader hand-over benchmark (`cargo bench --bench ha`): three `pointsman run`
//! processes with `[ha]` on a sandbox, sharing a lease in the Consul stand-in (default
//! `[ha]` settings: check_ttl 1.5 s, lock_delay 1 s). Each run measures from the instant
//! of the event:
//!
//! (a) the leader killed with SIGKILL → another agent leads (`/api/v1/health` polled
//!     every 10 ms on the survivors);
//! (b) the leader and the primary killed together → a replica writable (asked of the
//!     servers every 10 ms);
//! (c) the leader stopped with SIGTERM → another agent leads.
//!
//! BENCH_FLAVOR=mariadb|mysql (default mariadb), BENCH_RUNS (default 5). Prints min /
//! median / max per measure. Real Consul is not measured: it cannot run here.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::agent_process::{leader_now, one_leader, sees_the_cluster, AgentProcess};
use support::consul::{ConsulOptions, ConsulStandIn};
use support::TestTopology;

const LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(10);

#[derive(Clone, Copy)]
enum Event {
    KillLeader,
    KillLeaderAndPrimary,
    StopLeader,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let flavor = support::bench_flavor();
    let runs = support::bench_runs();
    let mut table = Vec::new();
    for (event, name) in [
        (
            Event::KillLeader,
            "(a) leader kill -9 → a new leader acting",
        ),
        (
            Event::KillLeaderAndPrimary,
            "(b) leader and primary kill -9 together → new primary writable",
        ),
        (
            Event::StopLeader,
            "(c) leader stopped (SIGTERM) → a new leader acting",
        ),
    ] {
        let mut results = Vec::new();
        for _ in 0..runs {
            results.push(one_run(flavor, event).await);
        }
        results.sort();
        table.push((name, results));
    }
    println!(
        "\nleader hand-over benchmark: {flavor}, 3-node sandbox, 3 agents, [ha] defaults (check_ttl 1.5s, lock_delay 1s), Consul stand-in, {runs} runs each"
    );
    println!("| event | min / median / max |");
    println!("| --- | --- |");
    for (name, results) in table {
        println!(
            "| {name} | {} / {} / {} ms |",
            results[0].as_millis(),
            results[results.len() / 2].as_millis(),
            results[results.len() - 1].as_millis()
        );
    }
}

async fn one_run(flavor: pointsman::sandbox::Flavor, event: Event) -> Duration {
    let topology = TestTopology::start(flavor, 2).await;
    let consul = ConsulStandIn::start(ConsulOptions::default()).await;
    let mut agents: Vec<AgentProcess> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            AgentProcess::start(
                &topology,
                &format!(
                    "[routing.consul]\naddress = \"{}\"\n\n[ha]\nenabled = true\nagent_name = \"{name}\"\n",
                    consul.url()
                ),
            )
        })
        .collect();
    for agent in &agents {
        sees_the_cluster(&agent.api).await;
    }
    let leader = one_leader(&agents).await;
    let started = Instant::now();
    match event {
        Event::KillLeader => agents[leader].kill().await,
        Event::KillLeaderAndPrimary => {
            agents[leader].kill().await;
            let mut sandbox = topology.sandbox.clone();
            sandbox.kill("node1").expect("kill -9 node1");
        }
        Event::StopLeader => agents[leader].terminate().await,
    }
    loop {
        let done = match event {
            Event::KillLeader | Event::StopLeader => {
                leader_now(&agents).await.is_some_and(|new| new != leader)
            }
            Event::KillLeaderAndPrimary => {
                let mut writable = false;
                for node in ["node2", "node3"] {
                    writable |= topology
                        .try_value(node, "SELECT @@GLOBAL.read_only")
                        .await
                        .as_deref()
                        == Some("0");
                }
                writable
            }
        };
        if done {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < LIMIT,
            "nothing happened within {LIMIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}
