//! Crash safety, on MariaDB 10.11 and MySQL 9.7: the agent binary is killed (aborted
//! at a crash point, as abruptly as `kill -9`) at every step boundary of a failover and
//! of a switchover, then started again on the same store — and, separately, with
//! `[ha]`, the leader is killed there and a follower takes over. Within seconds the cluster
//! has exactly one writable primary with every other node replicating from it, and the
//! cut-short recovery's journal shows the steps before the crash and how it was settled
//! (finished past the promotion, rolled back before it).
//!
//! Needs the `failpoints` feature (scripts/test.sh turns it on).

mod support;

use pointsman::client::ApiClient;
use pointsman::sandbox::Flavor;
use pointsman::store::recovery::{RecoveryRecord, RecoveryStatus};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;
use support::agent_process::{
    describe, free_port, one_leader, one_primary_everyone_follows, sees_the_cluster, start_agent,
    write_config, AgentProcess,
};
use support::consul::{ConsulOptions, ConsulStandIn};
use support::{eventually, TestTopology};

const PATIENCE: Duration = Duration::from_secs(30);

/// Per crash point and flavour, two tests: the agent restarted on its store settles
/// what it began (`mariadb::`, `mysql::`), and — with `[ha]` — a follower that takes
/// over from the leader that died there settles it from the journal's copy in Consul
/// (`takeover_mariadb::`, `takeover_mysql::`).
macro_rules! crash_tests {
    ($($name:ident: $kind:ident at $point:literal, settled as $status:ident;)*) => {
        crash_tests!(@flavor mariadb, crash_and_settle, Mariadb; $($name: $kind at $point, settled as $status;)*);
        crash_tests!(@flavor mysql, crash_and_settle, Mysql; $($name: $kind at $point, settled as $status;)*);
        crash_tests!(@flavor takeover_mariadb, crash_and_take_over, Mariadb; $($name: $kind at $point, settled as $status;)*);
        crash_tests!(@flavor takeover_mysql, crash_and_take_over, Mysql; $($name: $kind at $point, settled as $status;)*);
    };
    (@flavor $module:ident, $run:ident, $flavor:ident; $($name:ident: $kind:ident at $point:literal, settled as $status:ident;)*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$run(
                        pointsman::sandbox::Flavor::$flavor,
                        super::Change::$kind,
                        $point,
                        pointsman::store::recovery::RecoveryStatus::$status,
                    )
                    .await;
                }
            )*
        }
    };
}

crash_tests! {
    failover_after_choosing: Failover at "failover-after-choose", settled as RolledBack;
    failover_after_fencing: Failover at "failover-after-fence", settled as RolledBack;
    failover_after_withdrawing_routes: Failover at "failover-after-withdraw", settled as RolledBack;
    failover_after_stopping_io_threads: Failover at "failover-after-stop-io", settled as RolledBack;
    failover_after_applying_relay_logs: Failover at "failover-after-apply", settled as RolledBack;
    failover_between_reset_and_read_only_off: Failover at "promote-after-reset", settled as Succeeded;
    failover_after_promoting: Failover at "failover-after-promote", settled as Succeeded;
    failover_after_repointing: Failover at "failover-after-repoint", settled as Succeeded;
    failover_before_post_hooks: Failover at "failover-before-post-hooks", settled as Succeeded;
    switchover_after_choosing: Switchover at "switchover-after-choose", settled as RolledBack;
    switchover_after_read_only: Switchover at "switchover-after-read-only", settled as RolledBack;
    switchover_after_catching_up: Switchover at "switchover-after-catch-up", settled as RolledBack;
    switchover_between_reset_and_read_only_off: Switchover at "promote-after-reset", settled as Succeeded;
    switchover_after_promoting: Switchover at "switchover-after-promote", settled as Succeeded;
    switchover_after_repointing: Switchover at "switchover-after-repoint", settled as Succeeded;
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Change {
    /// node1 is killed; the agent fails over.
    Failover,
    /// An operator asks for a switchover to node2.
    Switchover,
}

async fn crash_and_settle(flavor: Flavor, change: Change, point: &str, settled_as: RecoveryStatus) {
    let topology = TestTopology::start(flavor, 2).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let api_port = free_port();
    let config = write_config(&topology, dir.path(), api_port, "");
    let log = dir.path().join("agent.log");
    let api = ApiClient::new(&format!("http://127.0.0.1:{api_port}"));
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let mut agent = start_agent(&config, Some(point), &log);
    sees_the_cluster(&api).await;
    match change {
        Change::Failover => {
            let mut sandbox = topology.sandbox.clone();
            sandbox.kill("node1").expect("kill -9 node1");
        }
        Change::Switchover => {
            // The agent dies while it answers: no answer is expected.
            let body = serde_json::json!({ "to": topology.key("node2") });
            let _ = api
                .post::<_, serde_json::Value>("/api/v1/clusters/t/switchover", &body)
                .await;
        }
    }
    let status = tokio::time::timeout(PATIENCE, agent.wait())
        .await
        .unwrap_or_else(|_| panic!("the agent never reached {point}:\n{}", agent_log()))
        .expect("wait for the agent");
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "the agent should have died at {point}, it ended {status:?}:\n{}",
        agent_log()
    );

    // Started again on the same store: it settles what was begun.
    let _agent = start_agent(&config, None, &log);
    let running: &[&str] = match change {
        Change::Failover => &["node2", "node3"],
        Change::Switchover => &["node1", "node2", "node3"],
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    let primary = loop {
        if let Some(primary) = one_primary_everyone_follows(&topology, running).await {
            break primary;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "after a crash at {point}, no single writable primary that every node follows within {PATIENCE:?}:\n{}\n--- agent log:\n{}",
                describe(&topology, running).await,
                agent_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let recoveries: Vec<RecoveryRecord> =
        eventually(PATIENCE, "the cut-short recovery settled", || async {
            let all: Vec<RecoveryRecord> = api.get("/api/v1/recoveries?cluster=t").await.ok()?;
            all.iter()
                .all(|r| r.status != RecoveryStatus::Running)
                .then_some(all)
        })
        .await;
    let first = recoveries
        .iter()
        .min_by_key(|r| r.started_at)
        .expect("a recovery");
    let steps: Vec<&str> = first.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        first.status,
        settled_as,
        "the recovery cut short at {point} was settled as {:?}, steps {steps:?}\n{}",
        first.status,
        agent_log()
    );
    assert!(
        steps.contains(&"choose candidate") && steps.contains(&"resume"),
        "the journal shows the steps before the crash and the resumption: {steps:?}"
    );
    match change {
        Change::Failover => {
            assert_ne!(primary, "node1");
            // Rolled back, the failure was judged afresh and recovered by a new failover.
            if settled_as == RecoveryStatus::RolledBack {
                assert!(
                    recoveries
                        .iter()
                        .any(|r| r.status == RecoveryStatus::Succeeded
                            && r.successor == Some(topology.key(&primary))),
                    "{recoveries:?}"
                );
            }
        }
        Change::Switchover => {
            let expected = if settled_as == RecoveryStatus::Succeeded {
                "node2"
            } else {
                "node1"
            };
            assert_eq!(primary, expected, "after a crash at {point}");
        }
    }
}

async fn crash_and_take_over(
    flavor: Flavor,
    change: Change,
    point: &str,
    settled_as: RecoveryStatus,
) {
    let topology = TestTopology::start(flavor, 2).await;
    let consul = ConsulStandIn::start(ConsulOptions::default()).await;
    let ha = |name: &str| {
        format!(
            "[routing.consul]\naddress = \"{}\"\n\n[ha]\nenabled = true\nagent_name = \"{name}\"\n",
            consul.url()
        )
    };
    // The first agent leads (it starts alone) and dies at the crash point.
    let mut first = AgentProcess::crashing_at(&topology, &ha("first"), Some(point));
    sees_the_cluster(&first.api).await;
    eventually(PATIENCE, "the first agent to lead", || async {
        (first.health().await?.role == "leader").then_some(())
    })
    .await;
    let second = AgentProcess::start(&topology, &ha("second"));
    sees_the_cluster(&second.api).await;
    match change {
        Change::Failover => {
            let mut sandbox = topology.sandbox.clone();
            sandbox.kill("node1").expect("kill -9 node1");
        }
        Change::Switchover => {
            // The leader dies while it answers: no answer is expected.
            let body = serde_json::json!({ "to": topology.key("node2") });
            let _ = first
                .api
                .post::<_, serde_json::Value>("/api/v1/clusters/t/switchover", &body)
                .await;
        }
    }
    let status = first.exited().await;
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "the leader should have died at {point}:\n{}",
        first.log()
    );
    let agents = vec![second];
    one_leader(&agents).await;
    let running: &[&str] = match change {
        Change::Failover => &["node2", "node3"],
        Change::Switchover => &["node1", "node2", "node3"],
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    let primary = loop {
        if let Some(primary) = one_primary_everyone_follows(&topology, running).await {
            break primary;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{flavor}: after the leader died at {point}, no single writable primary that every node follows:\n{}\n--- the new leader's log:\n{}",
            describe(&topology, running).await,
            agents[0].log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let adopted: RecoveryRecord = eventually(PATIENCE, "the adopted recovery settled", || async {
        let all: Vec<RecoveryRecord> = agents[0]
            .api
            .get("/api/v1/recoveries?cluster=t")
            .await
            .ok()?;
        all.into_iter()
            .filter(|r| r.status != RecoveryStatus::Running)
            .min_by_key(|r| r.started_at)
            .filter(|r| r.steps.iter().any(|s| s.step == "resume"))
    })
    .await;
    let steps: Vec<&str> = adopted.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        adopted.status, settled_as,
        "{flavor}: the recovery the dead leader began at {point}, settled by the new one: {steps:?}"
    );
    assert!(steps.contains(&"choose candidate"), "{steps:?}");
    match change {
        Change::Failover => assert_ne!(primary, "node1"),
        Change::Switchover => {
            let expected = if settled_as == RecoveryStatus::Succeeded {
                "node2"
            } else {
                "node1"
            };
            assert_eq!(primary, expected, "after the leader died at {point}");
        }
    }
}
