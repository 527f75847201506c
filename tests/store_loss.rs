//! The agent's own store failing under it, on MariaDB 10.11 and MySQL 9.7, with the
//! agent binary as users run it: a store file deleted while the agent runs is reported
//! at once; a store on a full filesystem is reported, a failover that cannot be recorded
//! is refused (nothing changes on the servers) and tried again at most about once a
//! second — not hundreds of times — and goes through once there is room again.

mod support;

use pointsman::api::Health;
use pointsman::client::ApiClient;
use pointsman::sandbox::Flavor;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::agent_process::{
    describe, free_port, one_primary_everyone_follows, sees_the_cluster, start_agent, write_config,
};
use support::consul::{ConsulOptions, ConsulStandIn, Failure};
use support::{
    assert_audited, automatic_recovery, eventually, probed, read_only_becomes, watch, TestTopology,
};

const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(
    a_deleted_store_is_reported_at_once,
    a_full_store_refuses_failovers_calmly_and_recovers_when_there_is_room,
    an_agent_that_lost_its_store_never_routes_a_stale_old_primary,
    an_agent_that_lost_its_store_finds_the_fences_in_consul,
    an_agent_that_lost_its_store_finds_the_fences_once_consul_answers_again
);

async fn degraded(api: &ApiClient, words: &str) -> String {
    eventually(
        PATIENCE,
        &format!("/api/v1/health to say {words:?}"),
        || async {
            let health: Health = api.get("/api/v1/health").await.ok()?;
            (health.status == "degraded")
                .then(|| health.problems.join(" "))
                .filter(|problems| problems.contains(words))
        },
    )
    .await
}

async fn a_deleted_store_is_reported_at_once(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let api_port = free_port();
    let config = write_config(&topology, dir.path(), api_port, "");
    let _agent = start_agent(&config, None, &dir.path().join("agent.log"));
    let api = ApiClient::new(&format!("http://127.0.0.1:{api_port}"));
    sees_the_cluster(&api).await;
    let health: Health = api.get("/api/v1/health").await.expect("health");
    assert_eq!(health.status, "ok", "{health:?}");

    let removed = Instant::now();
    std::fs::remove_file(dir.path().join("pointsman.db")).expect("delete the store");
    let problem = degraded(&api, "is gone").await;
    assert!(
        removed.elapsed() < Duration::from_secs(3),
        "reported after {:?}",
        removed.elapsed()
    );
    assert!(problem.contains("restart the agent"), "{problem}");
}

/// A small tmpfs of our own, unmounted when the test ends.
struct SmallFilesystem {
    path: PathBuf,
}

impl SmallFilesystem {
    fn mount(path: &Path) -> SmallFilesystem {
        std::fs::create_dir_all(path).expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill it and needs root (as CI runs): {status:?}"
        );
        SmallFilesystem {
            path: path.to_path_buf(),
        }
    }

    /// Writes a file until the filesystem has no room left.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

async fn a_full_store_refuses_failovers_calmly_and_recovers_when_there_is_room(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let small = SmallFilesystem::mount(&dir.path().join("store"));
    let api_port = free_port();
    let config = write_config(&topology, &small.path, api_port, "");
    let log = dir.path().join("agent.log");
    let _agent = start_agent(&config, None, &log);
    let api = ApiClient::new(&format!("http://127.0.0.1:{api_port}"));
    sees_the_cluster(&api).await;

    let filler = small.fill();
    degraded(&api, "takes no writes").await;
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node1").expect("kill -9 node1");

    // Five seconds of a dead primary with a store that cannot record a failover.
    let window = Duration::from_secs(5);
    let killed = Instant::now();
    let attempts = |text: &str| text.matches("cannot record the recovery").count();
    eventually(PATIENCE, "a first failover attempt, refused", || async {
        (attempts(&std::fs::read_to_string(&log).unwrap_or_default()) > 0).then_some(())
    })
    .await;
    let first = Instant::now();
    while first.elapsed() < window {
        // Nothing changed on the servers meanwhile: no replica was made writable.
        assert_eq!(
            one_primary_everyone_follows(&topology, &["node2", "node3"]).await,
            None,
            "a failover went through without being recorded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tried = attempts(&text);
    assert!(
        (1..=6).contains(&tried),
        "{tried} failover attempts in the {window:?} after the first (at most about one a second)"
    );
    let detail: pointsman::api::views::ClusterDetail =
        api.get("/api/v1/clusters/t").await.expect("cluster");
    let refused = detail.recovery_refused.unwrap_or_default();
    assert!(
        refused.contains("store") && refused.contains("next attempt at"),
        "the refusal says why and when it is tried again: {refused:?}"
    );

    // Room again: the next attempt goes through.
    std::fs::remove_file(filler).expect("free the space");
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        if one_primary_everyone_follows(&topology, &["node2", "node3"])
            .await
            .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failover {:?} after the store had room again:\n{}",
            killed.elapsed(),
            describe(&topology, &["node2", "node3"]).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The store with its fences is lost (a new machine, a deleted file) and the old primary
/// comes back writable: the agent started afresh has no record that it was fenced. The
/// GTIDs tell instead: it is a stale copy of the primary that replaced it, so the
/// cluster's alias (and its routes) stay with the real primary, the two writable
/// primaries are reported as `MultiplePrimaries`, and the stale one is fenced.
async fn an_agent_that_lost_its_store_never_routes_a_stale_old_primary(flavor: Flavor) {
    // One replica: after the failover both trees are one server each, so only the GTIDs
    // can tell which one the alias — and the routes — belong to.
    let topology = TestTopology::start(flavor, 1).await;
    let node1 = topology.key("node1");
    let first = watch(&topology, topology.keys(), automatic_recovery(&topology)).await;
    probed(&first.agent.discovery, 2).await;
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node1").expect("kill -9 node1");
    let successor = eventually(PATIENCE, "a failover", || async {
        let detail: pointsman::api::views::ClusterDetail =
            first.api.get("/api/v1/clusters/t").await.ok()?;
        (detail.primary != node1
            && pointsman::topology::cluster::writable_root(
                &first.agent.discovery.snapshot(),
                &detail.primary,
            )
            .is_some())
        .then_some(detail.primary)
    })
    .await;
    let successor_node = topology.node_at(&successor);
    topology
        .sql(&successor_node, &["CREATE DATABASE after_failover"])
        .await;
    first.agent.stop().await.expect("stop the first agent");
    drop(first.store); // the store, and every fence in it, is gone

    // node1 back, writable (on MySQL as a server whose role was never persisted).
    sandbox.start("node1").await.expect("restart node1");
    topology.writable("node1", true).await;

    let second = watch(&topology, topology.keys(), automatic_recovery(&topology)).await;
    let routed_to_node1 = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch_routes = {
        let routing = second.agent.routing.routing.clone();
        let routed_to_node1 = routed_to_node1.clone();
        let node1 = node1.clone();
        tokio::spawn(async move {
            loop {
                let routes = routing.routes();
                if routes
                    .clusters
                    .values()
                    .any(|r| r.writer.as_ref().is_some_and(|w| w.key == node1))
                {
                    routed_to_node1.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    read_only_becomes(&topology, "node1", "1").await;
    watch_routes.abort();
    assert!(
        !routed_to_node1.load(std::sync::atomic::Ordering::Relaxed),
        "the stale old primary was routed as a writer"
    );
    let detail: pointsman::api::views::ClusterDetail =
        second.api.get("/api/v1/clusters/t").await.expect("cluster");
    assert_eq!(
        detail.primary, successor,
        "the alias stays with the real primary"
    );
    assert_audited(
        &second.api,
        &["fenced as a stale old primary"],
        "why node1 was fenced",
    )
    .await;
    second.agent.stop().await.expect("stop");
}

/// With Consul routing, the fences live in the routes record too. The old primary comes
/// back writable *and takes a write of its own* while no agent runs, so its GTIDs no
/// longer show it as a stale copy; an agent started with a new store still fences it,
/// from the record.
async fn an_agent_that_lost_its_store_finds_the_fences_in_consul(flavor: Flavor) {
    fences_from_consul(flavor, false).await;
}

/// As above, with Consul failing (500, no leader) when the new agent begins to act:
/// the record is read again until it can be, and the old primary is fenced then.
async fn an_agent_that_lost_its_store_finds_the_fences_once_consul_answers_again(flavor: Flavor) {
    fences_from_consul(flavor, true).await;
}

/// An old primary fenced by a first agent, back writable with a write of its own, and a
/// second agent started with a new store; `failing_at_start`: Consul answers 500 until
/// the second agent has asked for the routes record once.
async fn fences_from_consul(flavor: Flavor, failing_at_start: bool) {
    let topology = TestTopology::start(flavor, 2).await;
    let node1 = topology.key("node1");
    let consul = ConsulStandIn::start(ConsulOptions::default()).await;
    let with_consul = |topology: &TestTopology| {
        let recovery = automatic_recovery(topology);
        let address = consul.url();
        move |config: &mut pointsman::config::Config| {
            recovery(config);
            config.routing.consul.address = Some(address);
            config.routing.consul.services = false;
        }
    };
    let first = watch(&topology, topology.keys(), with_consul(&topology)).await;
    probed(&first.agent.discovery, 3).await;
    let mut sandbox = topology.sandbox.clone();
    sandbox.kill("node1").expect("kill -9 node1");
    eventually(PATIENCE, "node1 fenced in the routes record", || async {
        let record: serde_json::Value =
            serde_json::from_str(&consul.kv_string("pointsman/routes/t")?).ok()?;
        record["fenced"]
            .as_array()?
            .iter()
            .any(|f| f.as_str() == Some(node1.to_string().as_str()))
            .then_some(())
    })
    .await;
    first.agent.stop().await.expect("stop the first agent");
    drop(first.store);

    sandbox.start("node1").await.expect("restart node1");
    topology.writable("node1", true).await;
    topology
        .sql("node1", &["CREATE DATABASE errant_on_node1"])
        .await;

    if failing_at_start {
        consul.set_failure(Failure::Error500).await;
        consul.clear_requests();
    }
    let second = watch(&topology, topology.keys(), with_consul(&topology)).await;
    if failing_at_start {
        eventually(
            PATIENCE,
            "the routes record asked for, and refused",
            || async {
                consul
                    .requests()
                    .iter()
                    .any(|(method, path)| method == "GET" && path.contains("pointsman/routes"))
                    .then_some(())
            },
        )
        .await;
        consul.set_failure(Failure::None).await;
    }
    read_only_becomes(&topology, "node1", "1").await;
    assert_audited(
        &second.api,
        &["fenced in the routes record in Consul"],
        "where the fence came from",
    )
    .await;
    second.agent.stop().await.expect("stop");
}
