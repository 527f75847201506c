//! Discovery against real servers, on MariaDB 10.11 and MySQL 9.7: the crawl finds the
//! whole tree from any instance, and what goes wrong on a replica shows up as the
//! finding a DBA would expect, through the same API the CLI reads.

mod support;

use pointsman::analysis::FindingCode;
use pointsman::api::views::{ClusterDetail, Role};
use pointsman::client::ApiClient;
use pointsman::discovery::DiscoveryOptions;
use pointsman::mysql::Connection;
use pointsman::sandbox::Flavor;
use pointsman::store::Store;
use pointsman::topology::{InstanceKey, ServerFlavor};
use std::time::{Duration, Instant, SystemTime};
use support::{eventually, session_counter, watch, TestTopology};

const PATIENCE: Duration = Duration::from_secs(20);

/// The cluster `t` once every listed instance has been probed.
async fn cluster_with(api: &ApiClient, instances: usize) -> ClusterDetail {
    eventually(
        PATIENCE,
        &format!("cluster t with {instances} probed instances"),
        || async {
            let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.ok()?;
            (detail.instances.len() == instances
                && detail.instances.iter().all(|i| i.instance.facts.is_some()))
            .then_some(detail)
        },
    )
    .await
}

/// Waits until `instance` carries a finding with `code`, and returns its message.
async fn finding(
    api: &ApiClient,
    instance: &InstanceKey,
    code: FindingCode,
) -> (String, Option<String>) {
    eventually(PATIENCE, &format!("{code:?} on {instance}"), || async {
        let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.ok()?;
        detail
            .findings
            .into_iter()
            .find(|f| &f.instance == instance && f.code == code)
            .map(|f| (f.message, f.detail))
    })
    .await
}

on_every_flavor!(
    discovery_finds_the_tree_from_the_primary_and_from_a_replica,
    a_chained_replica_is_placed_under_its_source,
    stopped_sql_thread_and_broken_io_thread_are_reported,
    lag_of_a_delayed_replica_is_reported,
    a_write_on_a_replica_is_reported_as_errant_with_its_gtids,
    a_broken_sql_thread_names_the_real_error,
    a_killed_instance_turns_unreachable_and_others_keep_their_pace,
    the_agent_keeps_one_connection_per_server_parked_between_probes,
    opening_a_connection_asks_the_server_its_version_and_nothing_else,
    a_connection_told_the_flavor_asks_nothing_and_never_reads_the_other_dialect,
    a_probe_asked_from_another_runtime_is_in_the_snapshot_it_returns,
    an_instance_that_stays_down_is_no_reason_to_judge_at_once,
    looks_at_hosts_gone_for_good_never_delay_the_notice_of_a_death,
    a_replica_probed_while_it_is_reset_never_names_a_source_without_a_host,
);

/// A failover resets the promoted replica and re-points the others while the agent
/// probes them. MariaDB 10.11, read between `RESET SLAVE ALL` and the new source, can
/// show the default connection with no host and port 3306 (3 reads in 600 here): the
/// agent had taken that for a source at `:3306`, looked for it, and listed a key its
/// own API clients could not read back, so `GET /api/v1/clusters` failed for them.
async fn a_replica_probed_while_it_is_reset_never_names_a_source_without_a_host(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 1).await;
    let settings = topology.connect_settings();
    let (source, replica) = (topology.key("node1"), topology.key("node2"));
    let (user, password) = (
        topology.sandbox.repl_user.clone(),
        topology.sandbox.repl_password.clone(),
    );
    let mut resetting = Connection::open(&replica, &settings)
        .await
        .expect("connected");
    let statements: Vec<String> = match flavor {
        Flavor::Mysql => vec![
            "STOP REPLICA".into(),
            "RESET REPLICA ALL".into(),
            format!("CHANGE REPLICATION SOURCE TO SOURCE_HOST='{}', SOURCE_PORT={}, SOURCE_USER='{user}', SOURCE_PASSWORD='{password}', SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1", source.host, source.port),
            "START REPLICA".into(),
        ],
        _ => vec![
            "STOP SLAVE".into(),
            "RESET SLAVE ALL".into(),
            format!("CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, MASTER_USER='{user}', MASTER_PASSWORD='{password}', MASTER_USE_GTID=slave_pos", source.host, source.port),
            "START SLAVE".into(),
        ],
    };
    let resets = tokio::spawn(async move {
        for _ in 0..150 {
            for statement in &statements {
                resetting
                    .execute(statement)
                    .await
                    .expect("reset and re-pointed");
            }
        }
        resetting.close().await;
    });
    let mut probing = Connection::open(&replica, &settings)
        .await
        .expect("connected");
    let (mut probes, mut sources) = (0, std::collections::BTreeSet::new());
    while !resets.is_finished() {
        let facts = pointsman::mysql::probe::probe(&mut probing)
            .await
            .expect("probed");
        probes += 1;
        if let Some(status) = facts.replication {
            sources.insert(status.source.to_string());
        }
    }
    resets.await.expect("the resets ended");
    probing.close().await;
    assert!(probes > 100, "only {probes} probes");
    assert_eq!(
        sources.into_iter().collect::<Vec<_>>(),
        vec![source.to_string()],
        "the sources {probes} probes named"
    );
}

/// Each round trip of a connect is one more a failover waits for on a busy server: the
/// agent's connection asks the server its version, and nothing else (the driver's own
/// question for `max_allowed_packet` and `wait_timeout` is answered in advance).
async fn opening_a_connection_asks_the_server_its_version_and_nothing_else(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 0).await;
    let mut conn = Connection::open(&topology.key("node1"), &topology.connect_settings())
        .await
        .expect("connected");
    assert_eq!(
        session_counter(&mut conn, "Questions").await,
        2,
        "the version, then this question"
    );
    conn.close().await;
}

/// A lost primary's confirming probes connect knowing each replica's flavour from its
/// last probe: the connect asks the server nothing (a round trip less before a
/// failover), and the probe reads what a connection that asked would read. Told the
/// wrong flavour, the probe fails rather than read the server in the other dialect.
async fn a_connection_told_the_flavor_asks_nothing_and_never_reads_the_other_dialect(
    flavor: Flavor,
) {
    let topology = TestTopology::start(flavor, 0).await;
    let (key, settings) = (topology.key("node1"), topology.connect_settings());
    let mut asked = Connection::open(&key, &settings).await.expect("connected");
    let known = asked.flavor;
    let mut told = Connection::open_as(&key, &settings, Some(known))
        .await
        .expect("connected, told the flavour");
    assert_eq!(
        session_counter(&mut told, "Questions").await,
        1,
        "this question only"
    );
    let (by_asked, by_told) = (
        pointsman::mysql::probe::probe(&mut asked)
            .await
            .expect("probed"),
        pointsman::mysql::probe::probe(&mut told)
            .await
            .expect("probed"),
    );
    assert_eq!(
        (by_told.flavor, by_told.server_id, &by_told.version),
        (by_asked.flavor, by_asked.server_id, &by_asked.version)
    );

    let other = match known {
        ServerFlavor::Mysql => ServerFlavor::Mariadb,
        ServerFlavor::Mariadb => ServerFlavor::Mysql,
    };
    let mut misled = Connection::open_as(&key, &settings, Some(other))
        .await
        .expect("connected, told the wrong flavour");
    let error = pointsman::mysql::probe::probe(&mut misled)
        .await
        .expect_err("a probe in the other dialect fails");
    assert!(error.to_string().contains(&key.to_string()), "{error}");
    for conn in [asked, told, misled] {
        conn.close().await;
    }
}

/// Discovery alone (no agent) on `topology`'s primary, polling once a minute: every
/// probe after the first is one a test asked for. The store's directory goes with the
/// second value.
fn slow_discovery(
    topology: &TestTopology,
) -> (pointsman::discovery::DiscoveryHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(&dir.path().join("pointsman.db")).expect("a store");
    let discovery = pointsman::discovery::start(
        DiscoveryOptions {
            connect: topology.connect_settings(),
            poll_interval: Duration::from_secs(60),
            max_concurrent_probes: 4,
            claims: None,
            max_instances: 100,
        },
        vec![topology.key("node1")],
        store,
    );
    (discovery, dir)
}

/// A lost primary's confirmation runs on the recovery lane, a runtime of its own: the
/// replicas it probes from there are in the snapshot the call returns (judged at once,
/// without waiting for discovery to publish them) and then in discovery's own, long
/// before their next poll (a minute away here), and the watch keeps its parked
/// connection. The probe's own connection comes back open, for the failover that may
/// follow.
async fn a_probe_asked_from_another_runtime_is_in_the_snapshot_it_returns(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 1).await;
    let (discovery, _store) = slow_discovery(&topology);
    let replica = topology.key("node2");
    let first = eventually(PATIENCE, "the replica's first probe", || async {
        discovery.snapshot().get(&replica)?.last_seen
    })
    .await;

    let asked_at = SystemTime::now();
    let lane = discovery.clone();
    let asked = replica.clone();
    // The probe's connection is handed back open, for a recovery to go on with: the
    // session that asked the probe's questions, used on the runtime that opened it.
    let (left_open, returned) = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime of its own")
            .block_on(async {
                let probed = lane
                    .probe_here_and_wait(vec![asked], Duration::from_secs(10))
                    .await;
                let mut asked_before = Vec::new();
                for mut connection in probed.open {
                    let count = session_counter(&mut connection, "Questions").await;
                    asked_before.push((connection.key.clone(), count - 1));
                    connection.close().await;
                }
                (asked_before, probed.snapshot)
            })
    })
    .join()
    .expect("the asking thread");
    assert_eq!(
        left_open.len(),
        1,
        "one connection, the replica's: {left_open:?}"
    );
    let (key, asked_before) = &left_open[0];
    assert_eq!(key, &replica);
    assert!(
        *asked_before > 2,
        "the probe's statements were asked on it, not only the version: {asked_before}"
    );
    let probed_since_asked = |snapshot: &pointsman::topology::Snapshot| {
        let instance = snapshot.get(&replica)?;
        let seen = instance.last_seen?;
        let source = instance
            .facts
            .as_ref()?
            .replication
            .as_ref()?
            .source
            .clone();
        (seen > first && seen >= asked_at).then_some(source)
    };
    assert_eq!(
        probed_since_asked(&returned),
        Some(topology.key("node1")),
        "the returned snapshot holds what the probe read"
    );
    let published = eventually(PATIENCE, "discovery publishes the probe", || async {
        probed_since_asked(&discovery.snapshot())
    })
    .await;
    assert_eq!(published, topology.key("node1"));
    discovery.stop().await;
}

/// A snapshot published for a result asked for now raises its `urgent` count, and the
/// coordinator then judges without its pause: a death, and a return, are news. An
/// instance that stays down is not: looked at again and again (as fenced old primaries
/// are, every 100 ms), it is published each time but never raises the count, or dozens
/// of dead old primaries keep the coordinator judging a whole fleet without pause.
async fn an_instance_that_stays_down_is_no_reason_to_judge_at_once(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 1).await;
    let (discovery, _store) = slow_discovery(&topology);
    let replica = topology.key("node2");
    eventually(PATIENCE, "the replica's first probe", || async {
        discovery.snapshot().get(&replica)?.last_seen
    })
    .await;
    let urgent_before = discovery.snapshot().urgent;

    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node2").expect("kill node2");
    let down = eventually(PATIENCE, "node2 seen down", || async {
        let snapshot = discovery.snapshot();
        snapshot.get(&replica)?.unreachable_since?;
        Some(snapshot.urgent)
    })
    .await;
    assert!(
        down > urgent_before,
        "its death is news: {urgent_before} -> {down}"
    );

    for _ in 0..3 {
        let asked_at = SystemTime::now();
        discovery
            .probe_and_wait(vec![replica.clone()], PATIENCE)
            .await;
        let snapshot = discovery.snapshot();
        let failed = snapshot.get(&replica).and_then(|i| i.last_failure);
        assert!(
            failed.is_some_and(|at| at >= asked_at),
            "the failed probe is published: {failed:?}"
        );
        assert_eq!(snapshot.urgent, down, "still down is no news");
    }

    sandbox.start("node2").await.expect("start node2");
    let back = eventually(PATIENCE, "node2 answers again", || async {
        discovery
            .probe_and_wait(vec![replica.clone()], Duration::from_secs(1))
            .await;
        let snapshot = discovery.snapshot();
        snapshot
            .get(&replica)?
            .is_reachable()
            .then_some(snapshot.urgent)
    })
    .await;
    assert!(back > down, "its return is news: {down} -> {back}");
    discovery.stop().await;
}

async fn discovery_finds_the_tree_from_the_primary_and_from_a_replica(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let (node1, node2, node3) = (
        topology.key("node1"),
        topology.key("node2"),
        topology.key("node3"),
    );

    for seed in [node1.clone(), node3.clone()] {
        // The alias lists the seed only: [[cluster]] instances are seeds too, and the
        // crawl must find the rest by itself.
        let watcher = watch(&topology, vec![seed.clone()], |c| {
            c.clusters[0].instances = vec![seed.clone()];
        })
        .await;
        let detail = cluster_with(&watcher.api, 3).await;
        assert_eq!(detail.primary, node1, "seeded from {seed}");
        let mut replicas: Vec<InstanceKey> =
            detail.tree.replicas.iter().map(|r| r.key.clone()).collect();
        replicas.sort();
        let mut expected = vec![node2.clone(), node3.clone()];
        expected.sort();
        assert_eq!(replicas, expected, "seeded from {seed}");
        assert!(
            detail.findings.is_empty(),
            "healthy sandbox, found {:?}",
            detail.findings
        );

        let primary = detail.instance(&node1).expect("primary listed");
        assert_eq!(primary.role, Role::Primary);
        let facts = primary.instance.facts.as_ref().expect("probed");
        assert!(!facts.read_only);
        assert_eq!(facts.server_id, 101);
        assert_eq!(facts.binlog_format, "ROW");
        assert_eq!(
            facts.flavor.to_string(),
            if flavor.is_mysql() {
                "MySQL"
            } else {
                "MariaDB"
            }
        );
        assert_eq!(facts.server_uuid.is_some(), flavor.is_mysql());
        let replica = detail.instance(&node3).expect("replica listed");
        let replication = replica
            .instance
            .facts
            .as_ref()
            .and_then(|f| f.replication.as_ref())
            .expect("replicates");
        assert_eq!(replication.source, node1);
        assert!(replication.gtid_auto_position);
        assert!(replica.instance.source_last_heard.is_some());
        watcher.agent.stop().await.expect("stops");
    }
}

async fn a_chained_replica_is_placed_under_its_source(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let (node2, node3) = (topology.key("node2"), topology.key("node3"));
    topology.replicate_from("node3", &node2).await;

    let watcher = watch(&topology, vec![node2.clone()], |c| {
        c.clusters[0].instances = vec![node2.clone()];
    })
    .await;
    let api = &watcher.api;
    let detail = eventually(PATIENCE, "node3 under node2", || async {
        let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.ok()?;
        let under_node2 = detail.tree.replicas.iter().find(|r| r.key == node2)?;
        (under_node2.replicas.iter().any(|r| r.key == node3)).then_some(detail)
    })
    .await;
    assert_eq!(detail.primary, topology.key("node1"));
    assert_eq!(
        detail.instance(&node2).expect("node2").role,
        Role::IntermediatePrimary
    );
    assert_eq!(detail.instance(&node3).expect("node3").role, Role::Replica);
}

async fn stopped_sql_thread_and_broken_io_thread_are_reported(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let (node2, node3) = (topology.key("node2"), topology.key("node3"));
    let watcher = watch(&topology, vec![topology.key("node1")], |_| {}).await;
    let api = &watcher.api;
    cluster_with(api, 3).await;

    let w = topology.words();
    topology
        .sql("node2", &[&format!("{} SQL_THREAD", w.stop)])
        .await;
    let (message, _) = finding(api, &node2, FindingCode::ReplicationStopped).await;
    assert!(message.contains("SQL thread is stopped"), "{message}");

    // A wrong replication password: the IO thread fails to authenticate.
    topology
        .sql(
            "node3",
            &[
                w.stop,
                &format!("{} {}='wrong-password'", w.change, w.password),
                w.start,
            ],
        )
        .await;
    let (message, _) = finding(api, &node3, FindingCode::ReplicationIoError).await;
    assert!(message.contains("error 1045"), "{message}");

    // Repaired, both findings go away.
    topology
        .sql("node2", &[&format!("{} SQL_THREAD", w.start)])
        .await;
    topology
        .sql(
            "node3",
            &[
                w.stop,
                &format!(
                    "{} {}='{}'",
                    w.change, w.password, topology.sandbox.repl_password
                ),
                w.start,
            ],
        )
        .await;
    eventually(PATIENCE, "no findings after repair", || async {
        let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.ok()?;
        detail.findings.is_empty().then_some(())
    })
    .await;
}

/// A row written on a replica behind replication's back, then the same key on the
/// primary: the replica's SQL thread stops on a duplicate key. MySQL's own SQL error
/// says only "Coordinator stopped because there were error(s) in the worker(s)"; the
/// finding names the duplicate key, as MariaDB's does.
async fn a_broken_sql_thread_names_the_real_error(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let node2 = topology.key("node2");
    let watcher = watch(&topology, vec![topology.key("node1")], |_| {}).await;
    let api = &watcher.api;
    cluster_with(api, 3).await;

    topology
        .sql(
            "node1",
            &[
                "CREATE DATABASE broken",
                "CREATE TABLE broken.t (id INT PRIMARY KEY)",
            ],
        )
        .await;
    topology
        .replicated("node2", "broken", Some("t"), "the table on node2")
        .await;
    topology.writable("node2", true).await;
    topology
        .sql(
            "node2",
            &[
                "SET SESSION sql_log_bin = 0",
                "INSERT INTO broken.t VALUES (100)",
            ],
        )
        .await;
    topology.writable("node2", false).await;
    topology
        .sql("node1", &["INSERT INTO broken.t VALUES (100)"])
        .await;

    let (message, _) = finding(api, &node2, FindingCode::ReplicationSqlError).await;
    assert!(message.contains("error 1062"), "{message}");
    assert!(message.contains("Duplicate entry '100'"), "{message}");
}

async fn lag_of_a_delayed_replica_is_reported(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let node3 = topology.key("node3");
    let watcher = watch(&topology, vec![topology.key("node1")], |c| {
        c.analysis.lag_warning = pointsman::config::HumanDuration(Duration::from_secs(1));
    })
    .await;
    let api = &watcher.api;
    cluster_with(api, 3).await;

    let w = topology.words();
    topology
        .sql(
            "node3",
            &[w.stop, &format!("{} {}=20", w.change, w.delay), w.start],
        )
        .await;
    topology
        .sql(
            "node1",
            &[
                "CREATE DATABASE lagtest",
                "CREATE TABLE lagtest.t (id INT PRIMARY KEY)",
            ],
        )
        .await;
    // A write every half second keeps the delayed replica measurably behind.
    let writer = {
        let sandbox = topology.sandbox.clone();
        tokio::spawn(async move {
            use mysql_async::prelude::Queryable;
            let mut conn = sandbox.connect("node1").await.expect("connect");
            for id in 0..60 {
                let _ = conn
                    .query_drop(format!("INSERT INTO lagtest.t VALUES ({id})"))
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let (message, detail) = finding(api, &node3, FindingCode::ReplicationLagging).await;
    writer.abort();
    assert!(message.contains("delay of 20s"), "{message}");
    let lag: u64 = detail.expect("lag detail").parse().expect("seconds");
    assert!(lag > 1, "lag {lag}");
}

async fn a_write_on_a_replica_is_reported_as_errant_with_its_gtids(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let node3 = topology.key("node3");
    let watcher = watch(&topology, vec![topology.key("node1")], |_| {}).await;
    let api = &watcher.api;
    cluster_with(api, 3).await;

    topology.sql("node1", &["CREATE DATABASE errant"]).await;
    // Replicated before node3 writes into it (on a busy machine it takes a while).
    topology
        .replicated("node3", "errant", None, "the database on node3")
        .await;
    topology.writable("node3", true).await;
    topology
        .sql(
            "node3",
            &["CREATE TABLE errant.local_only (id INT PRIMARY KEY)"],
        )
        .await;
    topology.writable("node3", false).await;

    let (message, gtids) = finding(api, &node3, FindingCode::ErrantGtid).await;
    let gtids = gtids.expect("the errant GTIDs");
    if flavor.is_mysql() {
        let uuid = topology
            .value("node3", "SELECT @@server_uuid")
            .await
            .expect("uuid");
        assert_eq!(gtids, format!("{uuid}:1"), "{message}");
    } else {
        // node3's server_id is 103: its own transaction is 0-103-<seq>.
        assert!(gtids.starts_with("0-103-"), "{gtids}");
    }
    assert!(message.contains(&gtids), "{message}");
    // The primary and node2 are not accused.
    let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.expect("cluster");
    assert!(detail
        .findings
        .iter()
        .all(|f| f.code != FindingCode::ErrantGtid || f.instance == node3));
}

/// A dead and a silent instance (one that accepts connections and never answers) hold
/// back no one: the silent one's connects take the agent's only place
/// (`max_concurrent_probes = 1`) nearly all the time, and still the others are probed
/// every interval and a death among them is seen at once, as each probe rides behind
/// its connection's park and needs no place.
async fn a_killed_instance_turns_unreachable_and_others_keep_their_pace(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let (node1, node3) = (topology.key("node1"), topology.key("node3"));
    // A server that accepts connections and never answers: its probes hang until the
    // connect timeout, and must not hold back anyone else's.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent = InstanceKey::new("127.0.0.1", black_hole.local_addr().expect("addr").port());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            open.push(socket);
        }
    });

    let interval = Duration::from_millis(500);
    let watcher = watch(&topology, vec![node1.clone(), silent.clone()], |c| {
        c.mysql.connect_timeout = pointsman::config::HumanDuration(Duration::from_secs(3));
        c.discovery.max_concurrent_probes = 1;
    })
    .await;
    let api = &watcher.api;
    cluster_with(api, 3).await;

    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node3").expect("kill node3");
    let killed_at = Instant::now();
    let discovery = watcher.agent.discovery.clone();
    eventually(PATIENCE, "node3 unreachable", || {
        let snapshot = discovery.snapshot();
        let node3 = node3.clone();
        async move {
            snapshot
                .get(&node3)
                .and_then(|i| i.unreachable_since)
                .map(|_| ())
        }
    })
    .await;
    let noticed = killed_at.elapsed();
    assert!(
        noticed <= interval * 2,
        "killed node3 noticed after {noticed:?}, poll interval {interval:?}"
    );

    // Over the next few seconds node1 is probed on schedule, despite a dead and a silent
    // instance in the same agent.
    let mut seen = Vec::new();
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        if let Some(at) = watcher
            .agent
            .discovery
            .snapshot()
            .get(&node1)
            .and_then(|i| i.last_seen)
        {
            if seen.last() != Some(&at) {
                seen.push(at);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gaps: Vec<Duration> = seen
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap_or_default())
        .collect();
    assert!(
        gaps.len() >= 4,
        "node1 probed only {} times in 3s",
        seen.len()
    );
    assert!(
        gaps.iter().all(|gap| *gap < interval * 2),
        "node1 probe gaps {gaps:?} with a {interval:?} interval"
    );
    let silent_state = watcher
        .agent
        .discovery
        .snapshot()
        .get(&silent)
        .cloned()
        .expect("tracked");
    assert!(
        silent_state.unreachable_since.is_some(),
        "the silent instance is marked unreachable"
    );
    assert!(
        silent_state
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("no answer within"),
        "{:?}",
        silent_state.last_error
    );
    let since = watcher
        .agent
        .discovery
        .snapshot()
        .get(&node3)
        .and_then(|i| i.unreachable_since)
        .expect("still unreachable");
    assert!(since <= SystemTime::now());
    held.abort();
}

/// What a DBA sees in the processlist: one connection of the agent per server, parked in
/// its `SLEEP` under a comment that names pointsman, over several polls — never a second
/// one beside it.
async fn the_agent_keeps_one_connection_per_server_parked_between_probes(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let watcher = watch(&topology, vec![topology.key("node1")], |_| {}).await;
    cluster_with(&watcher.api, 3).await;
    // The agent logs in as the test does: its sessions are the user's others, less the
    // replication threads. How many, and each as a person reads it (for a failure).
    const AGENT_SESSIONS: &str = "SELECT CONCAT(COUNT(*), ' session(s): ', \
         IFNULL(GROUP_CONCAT(CONCAT(ID, ' ', COMMAND, ' ', TIME, ' s ', IFNULL(STATE, ''), \
         ': ', IFNULL(LEFT(INFO, 80), '')) SEPARATOR ' | '), '')) \
         FROM information_schema.PROCESSLIST \
         WHERE USER = SUBSTRING_INDEX(USER(), '@', 1) AND ID <> CONNECTION_ID() \
         AND COMMAND NOT LIKE 'Binlog Dump%'";
    const PARKED: &str = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
         WHERE ID <> CONNECTION_ID() AND INFO LIKE 'DO /* pointsman %SLEEP(%'";
    for node in ["node1", "node2", "node3"] {
        eventually(PATIENCE, &format!("the agent parked on {node}"), || async {
            (topology.try_value(node, PARKED).await.as_deref() == Some("1")).then_some(())
        })
        .await;
    }
    // Two sessions may be seen for a moment: a probe asked for now runs on a connection
    // of its own, and a connection the agent gave up on (a statement past its timeout,
    // on a loaded machine) stays listed until its statement ends. Two sessions all along
    // — a second connection kept beside the parked one — is what must never be.
    let until = Instant::now() + Duration::from_secs(3);
    let mut samples = 0;
    let mut not_one: Vec<String> = Vec::new();
    while Instant::now() < until {
        for node in ["node1", "node2", "node3"] {
            let sessions = topology
                .value(node, AGENT_SESSIONS)
                .await
                .unwrap_or_default();
            assert!(
                !sessions.starts_with("0 "),
                "the agent has no session on {node}"
            );
            if !sessions.starts_with("1 ") {
                not_one.push(format!("{node}: {sessions}"));
            }
            samples += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(samples >= 9, "only {samples} samples in 3 s");
    assert!(
        not_one.len() * 5 <= samples,
        "more than one agent session in {} of {samples} samples:\n{}",
        not_one.len(),
        not_one.join("\n")
    );
}

/// Fenced old primaries are looked at every 100 ms while they are down, so that one that
/// restarts is fenced at once. A host gone for good (powered off, its address dropped)
/// answers nothing, and each connect to it waits out the connect timeout: a dozen such
/// old primaries, looked at as the agent looks at them, must not keep the death of a
/// watched primary from being seen at once. Here they are ports that take a connection
/// and never say a word, and the connect timeout is 3 s.
async fn looks_at_hosts_gone_for_good_never_delay_the_notice_of_a_death(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 0).await;
    let mut silent = Vec::new();
    let mut gone = Vec::new();
    for _ in 0..16 {
        // Never accepted: the kernel completes the handshake, and nothing is ever sent.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a silent port");
        let port = listener.local_addr().expect("its address").port();
        gone.push(InstanceKey::new("127.0.0.1", port));
        silent.push(listener);
    }
    let node1 = topology.key("node1");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(&dir.path().join("pointsman.db")).expect("a store");
    let discovery = pointsman::discovery::start(
        DiscoveryOptions {
            connect: pointsman::mysql::ConnectSettings {
                connect_timeout: Duration::from_secs(3),
                ..topology.connect_settings()
            },
            poll_interval: Duration::from_secs(60),
            max_concurrent_probes: 4,
            claims: None,
            max_instances: 100,
        },
        std::iter::once(node1.clone()).chain(gone.clone()).collect(),
        store,
    );
    eventually(PATIENCE, "node1 probed", || async {
        discovery.snapshot().get(&node1)?.last_seen
    })
    .await;
    // As the agent looks at its fenced old primaries that are down: every 100 ms, the
    // first looks under way before the kill.
    discovery.look_at(gone.clone());
    let looking = discovery.clone();
    let looks = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            looking.look_at(gone.clone());
        }
    });

    let killed = SystemTime::now();
    let started = Instant::now();
    topology.sandbox.clone().kill("node1").expect("kill node1");
    eventually(PATIENCE, "node1's death seen", || async {
        discovery
            .snapshot()
            .get(&node1)?
            .last_failure
            .filter(|failed| *failed >= killed)
    })
    .await;
    let noticed = started.elapsed();
    looks.abort();
    discovery.stop().await;
    assert!(
        noticed < Duration::from_millis(1500),
        "the death was seen {noticed:?} after the kill, as if its probe had waited for a connect to a host gone for good (3 s)"
    );
    drop(silent);
}
