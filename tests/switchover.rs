//! Switchover against real servers, on MariaDB 10.11 and MySQL 9.7: the primary role
//! moves to a replica and back while every node keeps replicating and writes keep
//! arriving everywhere; a candidate that is broken, delayed, errant or unknown is
//! refused with the reason and nothing changes; a failing pre_switchover hook aborts;
//! a candidate that cannot catch up is rolled back so the old primary takes writes again.

mod support;

use mysql_async::prelude::Queryable;
use pointsman::config::{Config, HumanDuration};
use pointsman::recovery::switchover::SwitchoverError;
use pointsman::sandbox::Flavor;
use pointsman::store::recovery::{RecoveryRecord, RecoveryStatus};
use pointsman::topology::{build_clusters, InstanceKey};
use std::time::{Duration, Instant, SystemTime};
use support::{automatic_recovery, eventually, probed, watch, TestTopology, Watcher};

const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(
    switchover_to_the_best_candidate_and_back_twice,
    an_ineligible_candidate_is_refused_and_nothing_changes,
    a_failing_pre_switchover_hook_aborts,
    a_candidate_that_cannot_catch_up_is_rolled_back,
    a_drill_goes_there_and_back_and_leaves_the_cluster_as_it_found_it,
);

/// The sandbox's name for an instance (`node2`).
fn node_name(topology: &TestTopology, key: &InstanceKey) -> String {
    topology
        .sandbox
        .nodes
        .iter()
        .find(|n| n.host == key.host && n.port == key.port)
        .unwrap_or_else(|| panic!("{key} is not a sandbox node"))
        .name
        .clone()
}

/// Waits until pointsman sees `primary` as the writable primary of cluster `t` and every
/// other node read_only and replicating from it with both threads running.
async fn settled(watcher: &Watcher, topology: &TestTopology, primary: &InstanceKey) {
    let aliases = &watcher.agent.coordinator.aliases;
    let discovery = &watcher.agent.discovery;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let snapshot = discovery.snapshot();
        let primary_of_t = build_clusters(&snapshot, aliases)
            .into_iter()
            .find(|c| c.name == "t")
            .map(|c| c.primary);
        let mut wrong: Vec<String> = Vec::new();
        if primary_of_t.as_ref() != Some(primary) {
            wrong.push(format!("the primary of t is {primary_of_t:?}"));
        }
        for key in topology.keys() {
            let Some(facts) = snapshot.get(&key).and_then(|i| i.facts.as_ref()) else {
                wrong.push(format!("{key} not probed"));
                continue;
            };
            let replication = facts.replication.as_ref();
            let fine = if key == *primary {
                !facts.read_only && facts.super_read_only != Some(true) && replication.is_none()
            } else {
                facts.read_only
                    && replication.is_some_and(|s| s.source == *primary && s.is_replicating())
            };
            if !fine {
                wrong.push(format!(
                    "{key}: read_only {} super_read_only {:?}, replication {replication:?}",
                    facts.read_only, facts.super_read_only
                ));
            }
        }
        if wrong.is_empty() {
            // Every link kept (or, for the old primary, was given) a 1 s heartbeat.
            for key in topology.keys().into_iter().filter(|k| k != primary) {
                let node = topology.node_at(&key);
                assert_eq!(
                    topology.heartbeat_period(&node).await,
                    Some(1.0),
                    "heartbeat period of {node} after the switchover"
                );
            }
            return;
        }
        if Instant::now() > deadline {
            // What the servers said about it themselves.
            let logs: Vec<String> = topology
                .sandbox
                .nodes
                .iter()
                .map(|node| {
                    let text = topology
                        .sandbox
                        .log_path(&node.name)
                        .ok()
                        .and_then(|path| std::fs::read_to_string(path).ok())
                        .unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                    format!(
                        "--- {} ({}:{}) log tail:\n{tail}",
                        node.name, node.host, node.port
                    )
                })
                .collect();
            panic!(
                "after {PATIENCE:?}, {primary} is not the writable primary of t with every other node its replica:\n{}\n{}",
                wrong.join("\n"),
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes row `id` on the primary and waits until every other node has it.
async fn write_reaches_everyone(topology: &TestTopology, primary: &InstanceKey, id: u32) {
    let primary_node = node_name(topology, primary);
    topology
        .sql(&primary_node, &[&format!("INSERT INTO w.t VALUES ({id})")])
        .await;
    for key in topology.keys().iter().filter(|k| *k != primary) {
        let node = node_name(topology, key);
        eventually(
            PATIENCE,
            &format!("row {id} written on {primary_node} to reach {node}"),
            || async {
                // The table itself may not have arrived yet: an error is "not yet".
                let mut conn = topology.sandbox.connect(&node).await.ok()?;
                let count: Option<u64> = conn
                    .query_first(format!("SELECT COUNT(*) FROM w.t WHERE id = {id}"))
                    .await
                    .ok()
                    .flatten();
                let _ = conn.disconnect().await;
                (count == Some(1)).then_some(())
            },
        )
        .await;
    }
}

/// node1 is still the writable primary and the others are still read_only.
async fn node1_still_primary(topology: &TestTopology) {
    assert_eq!(
        topology
            .value("node1", "SELECT @@GLOBAL.read_only")
            .await
            .as_deref(),
        Some("0"),
        "node1 must still take writes"
    );
    for node in ["node2", "node3"] {
        assert_eq!(
            topology
                .value(node, "SELECT @@GLOBAL.read_only")
                .await
                .as_deref(),
            Some("1"),
            "{node} must still be read_only"
        );
    }
}

fn recoveries(watcher: &Watcher) -> Vec<RecoveryRecord> {
    watcher
        .agent
        .store
        .recoveries(Some("t"), 100)
        .expect("recoveries")
}

/// The replication account, and whatever else a test needs.
fn configured(
    topology: &TestTopology,
    tweak: impl FnOnce(&mut Config),
) -> impl FnOnce(&mut Config) {
    let account = automatic_recovery(topology);
    move |config: &mut Config| {
        // Automatic recovery stays on: a switchover must not set it off.
        account(config);
        tweak(config);
    }
}

async fn switchover_to_the_best_candidate_and_back_twice(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let node1 = topology.key("node1");
    let watcher = watch(
        &topology,
        vec![node1.clone()],
        configured(&topology, |_| {}),
    )
    .await;
    probed(&watcher.agent.discovery, 3).await;
    topology
        .sql(
            "node1",
            &["CREATE DATABASE w", "CREATE TABLE w.t (id INT PRIMARY KEY)"],
        )
        .await;
    let coordinator = watcher.agent.coordinator.clone();

    let mut row = 0;
    let mut expected = Vec::new();
    for round in 1..=2 {
        for to in [None, Some(node1.clone())] {
            let report = coordinator
                .switchover("t", to.clone(), "test")
                .await
                .unwrap_or_else(|e| panic!("round {round}, to {to:?}: {e}"));
            let old = report.old_primary.clone();
            let new = report.new_primary.clone();
            println!(
                "{flavor}: switchover {old} -> {new}: writes paused {} ms",
                report.write_gap_ms
            );
            match &to {
                None => {
                    assert_eq!(old, node1, "round {round} starts from node1");
                    assert_ne!(new, node1);
                }
                Some(to) => assert_eq!(&new, to),
            }
            assert!(report.write_gap_ms > 0, "a pause is reported: {report:?}");
            let record = &report.recovery;
            assert_eq!(record.kind, "switchover");
            assert_eq!(record.problem, "Switchover");
            assert_eq!(record.trigger, "test");
            assert_eq!(record.status, RecoveryStatus::Succeeded, "{record:?}");
            assert_eq!(record.failed, old);
            assert_eq!(record.successor.as_ref(), Some(&new));
            assert!(record.steps.iter().all(|s| s.ok), "{:?}", record.steps);
            let steps: Vec<&str> = record.steps.iter().map(|s| s.step.as_str()).collect();
            for step in [
                "choose candidate",
                "read_only ON",
                "catch up",
                "promote",
                "attach",
                "re-point",
            ] {
                assert!(
                    steps.contains(&step),
                    "step {step:?} missing from {steps:?}"
                );
            }
            expected.push((old, new.clone()));

            settled(&watcher, &topology, &new).await;
            row += 1;
            write_reaches_everyone(&topology, &new, row).await;
        }
    }

    // Four switchovers recorded, and automatic recovery never stepped in.
    let recorded: Vec<(InstanceKey, Option<InstanceKey>, String)> = recoveries(&watcher)
        .into_iter()
        .rev()
        .map(|r| (r.failed, r.successor, r.kind))
        .collect();
    let wanted: Vec<(InstanceKey, Option<InstanceKey>, String)> = expected
        .into_iter()
        .map(|(old, new)| (old, Some(new), "switchover".to_string()))
        .collect();
    assert_eq!(recorded, wanted);
    // Planned changes do not count toward recovery.block_period: a failure right after
    // a switchover is still recovered automatically.
    assert!(watcher
        .agent
        .store
        .blocking_recoveries(SystemTime::UNIX_EPOCH)
        .expect("blocking recoveries")
        .is_empty());
    let audit = watcher
        .agent
        .store
        .audit_log(Some("t"), 100)
        .expect("audit");
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.action == "switchover" && a.message.contains("writes paused"))
            .count(),
        4,
        "{audit:?}"
    );
}

async fn an_ineligible_candidate_is_refused_and_nothing_changes(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let (node1, node2, node3) = (
        topology.key("node1"),
        topology.key("node2"),
        topology.key("node3"),
    );
    let watcher = watch(
        &topology,
        vec![node1.clone()],
        configured(&topology, |_| {}),
    )
    .await;
    probed(&watcher.agent.discovery, 3).await;
    let coordinator = watcher.agent.coordinator.clone();
    let words = topology.words();
    let refused = |to: Option<InstanceKey>| {
        let coordinator = coordinator.clone();
        async move {
            coordinator
                .switchover("t", to, "test")
                .await
                .expect_err("refused")
                .to_string()
        }
    };
    let says = |message: &str, expected: &[&str]| {
        for part in expected {
            assert!(message.contains(part), "{part:?} missing from: {message}");
        }
    };

    let stranger = InstanceKey::new("127.0.0.1", 1);
    let message = refused(Some(stranger.clone())).await;
    says(
        &message,
        &[&stranger.to_string(), "not an instance of cluster t"],
    );
    node1_still_primary(&topology).await;

    // Broken: its SQL thread is stopped, so it could never apply the last writes.
    topology
        .sql("node2", &[&format!("{} SQL_THREAD", words.stop)])
        .await;
    let message = refused(Some(node2.clone())).await;
    says(
        &message,
        &[
            &format!("{node2} may not be promoted"),
            "SQL thread stopped",
        ],
    );
    node1_still_primary(&topology).await;

    // Errant: a transaction node1 never had.
    topology.writable("node3", true).await;
    topology.sql("node3", &["CREATE DATABASE errant"]).await;
    topology.writable("node3", false).await;
    let message = refused(Some(node3.clone())).await;
    says(
        &message,
        &[&format!("{node3} may not be promoted"), "errant GTIDs"],
    );
    node1_still_primary(&topology).await;

    // With both unfit, there is no best candidate either.
    let message = refused(None).await;
    says(
        &message,
        &[
            &format!("no replica of {node1} may be promoted"),
            &format!("{node2} skipped: SQL thread stopped"),
            &format!("{node3} skipped: errant GTIDs"),
        ],
    );
    node1_still_primary(&topology).await;

    // Lagging beyond promotion.max_lag: a replica delayed by an hour.
    topology
        .sql(
            "node2",
            &[
                words.stop,
                &format!("{} {}=3600", words.change, words.delay),
                words.start,
            ],
        )
        .await;
    let message = refused(Some(node2.clone())).await;
    says(
        &message,
        &[
            &format!("{node2} may not be promoted"),
            "delayed replica (SQL_Delay 3600s)",
        ],
    );
    node1_still_primary(&topology).await;

    // The primary itself is no candidate.
    let message = refused(Some(node1.clone())).await;
    says(&message, &[&format!("{node1} is already the primary")]);

    assert!(
        recoveries(&watcher).is_empty(),
        "a refusal records no recovery"
    );
    let audit = watcher
        .agent
        .store
        .audit_log(Some("t"), 100)
        .expect("audit");
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.message.starts_with("switchover refused"))
            .count(),
        6,
        "{audit:?}"
    );
}

async fn a_failing_pre_switchover_hook_aborts(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let node1 = topology.key("node1");
    let watcher = watch(
        &topology,
        vec![node1.clone()],
        configured(&topology, |config| {
            config.hooks.pre_switchover =
                vec!["echo 'switchovers are frozen until Monday'; exit 1".into()];
        }),
    )
    .await;
    probed(&watcher.agent.discovery, 3).await;

    let error = watcher
        .agent
        .coordinator
        .switchover("t", None, "test")
        .await
        .expect_err("the hook aborts");
    assert!(
        matches!(error, SwitchoverError::Aborted { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("aborted before changing anything")
            && message.contains("switchovers are frozen until Monday"),
        "{message}"
    );
    node1_still_primary(&topology).await;
    settled(&watcher, &topology, &node1).await;

    let recorded = recoveries(&watcher);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let record = &recorded[0];
    assert_eq!(record.status, RecoveryStatus::Aborted);
    assert_eq!(record.kind, "switchover");
    assert_eq!(record.successor, None);
    let hook = record
        .steps
        .iter()
        .find(|s| s.step == "hook pre_switchover")
        .unwrap_or_else(|| panic!("no hook step in {:?}", record.steps));
    assert!(!hook.ok);
    assert!(
        hook.detail.contains("exit 1")
            && hook.detail.contains("switchovers are frozen until Monday"),
        "{}",
        hook.detail
    );
    assert!(
        !record.steps.iter().any(|s| s.step == "read_only ON"),
        "nothing was changed: {:?}",
        record.steps
    );
}

async fn a_candidate_that_cannot_catch_up_is_rolled_back(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let (node1, node2) = (topology.key("node1"), topology.key("node2"));
    // The hook holds the switchover after its checks until the test lets it go, so the
    // candidate can be broken at exactly that moment.
    let signals = tempfile::tempdir().expect("temp dir");
    let ready = signals.path().join("ready");
    let go = signals.path().join("go");
    let hook = format!(
        "touch '{}'; for i in $(seq 1 400); do [ -e '{}' ] && exit 0; sleep 0.05; done; echo 'never told to go'; exit 1",
        ready.display(),
        go.display()
    );
    let watcher = watch(
        &topology,
        vec![node1.clone()],
        configured(&topology, move |config| {
            config.hooks.pre_switchover = vec![hook];
            config.recovery.apply_timeout = HumanDuration(Duration::from_secs(1));
        }),
    )
    .await;
    probed(&watcher.agent.discovery, 3).await;
    topology
        .sql(
            "node1",
            &["CREATE DATABASE w", "CREATE TABLE w.t (id INT PRIMARY KEY)"],
        )
        .await;
    write_reaches_everyone(&topology, &node1, 1).await;

    let coordinator = watcher.agent.coordinator.clone();
    let running = tokio::spawn({
        let coordinator = coordinator.clone();
        let node2 = node2.clone();
        async move { coordinator.switchover("t", Some(node2), "test").await }
    });
    eventually(PATIENCE, "the pre_switchover hook to start", || {
        let ready = ready.clone();
        async move { ready.exists().then_some(()) }
    })
    .await;

    // One switchover at a time.
    let second = coordinator
        .switchover("t", None, "test")
        .await
        .expect_err("refused while one runs")
        .to_string();
    assert!(second.contains("already running"), "{second}");

    // The candidate stops applying, and then misses a write.
    let words = topology.words();
    topology
        .sql("node2", &[&format!("{} SQL_THREAD", words.stop)])
        .await;
    topology.sql("node1", &["INSERT INTO w.t VALUES (2)"]).await;
    std::fs::write(&go, b"").expect("signal the hook");

    let error = running
        .await
        .expect("the switchover task")
        .expect_err("it cannot complete");
    assert!(matches!(error, SwitchoverError::Failed { .. }), "{error:?}");
    let message = error.to_string();
    for part in [
        format!("{node2} did not apply everything {node1} wrote"),
        format!("rolled back: {node1} is the primary and takes writes again"),
    ] {
        assert!(message.contains(&part), "{part:?} missing from: {message}");
    }
    // Writes flow on node1 again, and node1 stays the primary.
    topology.sql("node1", &["INSERT INTO w.t VALUES (3)"]).await;
    node1_still_primary(&topology).await;

    let recorded = recoveries(&watcher);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let record = &recorded[0];
    assert_eq!(record.status, RecoveryStatus::Failed);
    assert_eq!(record.successor, None);
    let steps: Vec<(&str, bool)> = record
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.ok))
        .collect();
    for step in [
        ("read_only ON", true),
        ("catch up", false),
        ("roll back", true),
    ] {
        assert!(steps.contains(&step), "{step:?} missing from {steps:?}");
    }
    assert!(!steps.iter().any(|(s, _)| *s == "promote"), "{steps:?}");

    // Repaired, the candidate catches up with everything, and the tree is as before.
    topology
        .sql("node2", &[&format!("{} SQL_THREAD", words.start)])
        .await;
    write_reaches_everyone(&topology, &node1, 4).await;
    settled(&watcher, &topology, &node1).await;
}

/// `pointsman drill` (the API behind it): a switchover to the best replica and back,
/// each leg checked; the cluster ends as it began, the verdict says passed with each
/// leg's gaps, hooks and replicas, and the audit keeps the verdict.
async fn a_drill_goes_there_and_back_and_leaves_the_cluster_as_it_found_it(flavor: Flavor) {
    use pointsman::recovery::drill::DrillReport;

    let topology = TestTopology::start(flavor, 2).await;
    let node1 = topology.key("node1");
    let watcher = watch(
        &topology,
        vec![node1.clone()],
        configured(&topology, |config| {
            config.hooks.post_switchover = vec!["echo moved to $POINTSMAN_SUCCESSOR_PORT".into()];
        }),
    )
    .await;
    probed(&watcher.agent.discovery, 3).await;
    let report: DrillReport = watcher
        .api
        .post("/api/v1/clusters/t/drill", &())
        .await
        .expect("the drill");
    assert!(report.passed, "{report:#?}");
    assert_eq!(report.primary, node1);
    assert_eq!(report.legs.len(), 2, "{report:#?}");
    let (there, back) = (&report.legs[0], &report.legs[1]);
    assert_eq!(there.from, node1);
    assert_ne!(there.to, node1);
    assert_eq!((&back.from, &back.to), (&there.to, &node1));
    for leg in &report.legs {
        assert_eq!(leg.replicas.len(), 2, "{leg:#?}");
        assert!(
            leg.replicas
                .iter()
                .all(|r| r.healthy && r.source.as_ref() == Some(&leg.to)),
            "{leg:#?}"
        );
        assert!(
            leg.replicas.iter().all(|r| r.heartbeat_period.is_some()),
            "{leg:#?}"
        );
        assert_eq!(leg.hooks, vec!["hook post_switchover: ok".to_string()]);
    }
    settled(&watcher, &topology, &node1).await;
    node1_still_primary(&topology).await;
    let audit: Vec<pointsman::store::AuditRecord> = watcher
        .api
        .get("/api/v1/audit?cluster=t&limit=20")
        .await
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.action == "drill" && a.message.starts_with("drill of t passed")),
        "{audit:#?}"
    );
    // Two switchovers in a row leave no false alarm: a probe from before the way back
    // shows the old primary writable beside the new one, and must not be judged.
    assert!(
        !audit
            .iter()
            .any(|a| a.message.contains("beside the primary")),
        "{audit:#?}"
    );
    let switchovers: Vec<RecoveryRecord> = watcher
        .api
        .get("/api/v1/recoveries?cluster=t")
        .await
        .expect("recoveries");
    assert_eq!(
        switchovers
            .iter()
            .filter(|r| r.kind == "switchover")
            .count(),
        2
    );
}
