//! The web page in a real browser, against the agent watching a real sandbox: headless
//! Debian Chromium driven by playwright-core (`web-tests/`, `npm ci --prefix web-tests`)
//! from Node, as a subprocess whose exit code is the verdict. The scripts check what a
//! person would: the dashboard lists the cluster; the tree shows its three instances;
//! replication stopped behind the page's back shows as a badge without a reload; a
//! replica dragged onto the primary switches over and the tree redraws; dragged onto
//! another instance it is relocated; a refused action shows the agent's reason; with
//! `api.token_for_reads` the page asks for the token once and keeps working by polling;
//! a killed primary, with automatic recovery off, shows as a problem with a Recover
//! action whose ranked candidates an operator picks from — the lower-ranked one here,
//! to see the choice honoured — and the tree redraws with it as primary, the old one
//! fenced; the recovery is then announced (on the cluster and the dashboard) until it is
//! acknowledged. Whether automatic recovery covers a cluster shows before anything
//! fails. A cluster without an alias, renamed by its failover, is found under its old
//! name ("formerly") with its history. After a kill -9 under an open page the routing
//! panel names the new writer within a second of the tree. The layout is checked at
//! 1400, 800 and 390 px, light and dark. Over 150 simulated clusters the dashboard
//! lists the one in trouble first, a page of 100 at a time, and filters by instance. A page of another origin (and a DNS-rebinding name) cannot make the agent
//! switch over, recover, or turn automatic recovery off, though the agent has no token.
//!
//! Screenshots of every step land in `target/web-tests/<test>/` — look at them.
//! Nothing here is skipped: a missing Node, Chromium or `web-tests/node_modules` fails
//! with what to install.

mod support;

use pointsman::analysis::ProblemCode;
use pointsman::api::operate::Candidates;
use pointsman::api::views::ClusterDetail;
use pointsman::config::Secret;
use pointsman::sandbox::Flavor;
use pointsman::store::recovery::{RecoveryRecord, RecoveryStatus};
use pointsman::topology::InstanceKey;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use support::{automatic_recovery, eventually, eventually_or_show, probed, watch, TestTopology};

on_every_flavor!(
    the_page_shows_the_tree_live_and_acts_on_it,
    a_dead_primary_is_recovered_from_the_page_to_the_replica_chosen,
    a_cluster_renamed_by_its_failover_keeps_its_history,
    the_layout_fits_at_every_width_light_and_dark,
    after_a_kill_the_routing_panel_follows_the_tree_within_a_second,
);

/// Long enough for every step's own 30 s patience, short enough to end a hung browser.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
const TOKEN: &str = "web-test-token";
/// How long the agent may take to see a change on the servers.
const PATIENCE: Duration = Duration::from_secs(30);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the screenshots go: `target/web-tests/<name>` (or under `$CARGO_TARGET_DIR`).
fn output_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("web-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// Node, Chromium and playwright-core are there, or a panic that says how to get them.
fn prerequisites() {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "cannot run `node` ({node:?}): the browser tests need Node.js 20 or later (apt-get install nodejs npm)"
    );
    let chromium =
        std::env::var("POINTSMAN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: apt-get install chromium (scripts/test.sh does), or set POINTSMAN_CHROMIUM"
    );
    let playwright = root().join("web-tests/node_modules/playwright-core/package.json");
    assert!(
        playwright.exists(),
        "playwright-core is not installed in web-tests/: run `npm ci --prefix web-tests` (scripts/test.sh does)"
    );
}

/// Runs `node web-tests/<script> <args>` and panics with its output unless it exits 0;
/// returns what it printed.
async fn run_script(script: &str, args: &[String]) -> String {
    run_script_and(script, args, "", || {}).await
}

/// As `run_script`, and calls `act` once the script prints a line `cue` (at once when
/// `cue` is empty): for what only the test may do, such as killing a server.
async fn run_script_and(script: &str, args: &[String], cue: &str, act: impl FnOnce()) -> String {
    let mut command = tokio::process::Command::new("node");
    command
        .arg(root().join("web-tests").join(script))
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node web-tests/{script}: {e}"));
    let mut before = String::new();
    if cue.is_empty() {
        act();
    } else {
        use tokio::io::AsyncBufReadExt;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut act = Some(act);
        // Everything it prints is read here, to its end; `act` runs at the cue.
        let _ = tokio::time::timeout(SCRIPT_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                before.push_str(&line);
                before.push('\n');
                if line == cue {
                    if let Some(act) = act.take() {
                        act();
                    }
                }
            }
        })
        .await;
    }
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("web-tests/{script} did not finish in {SCRIPT_TIMEOUT:?}"))
        .expect("node's output");
    let stdout = before + &String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "web-tests/{script} {} failed ({}):\n{stdout}\n{stderr}",
        args.join(" "),
        output.status
    );
    stdout
}

/// The page is served by the agent itself, with types and cache validators.
async fn the_assets_are_served(url: &str) {
    let client = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let response = client
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("the agent answers");
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            header("content-type").starts_with(kind),
            "{path}: {}",
            header("content-type")
        );
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        let etag = header("etag");
        assert!(!etag.is_empty(), "{path} has no ETag");
        let again = client
            .get(format!("{url}{path}"))
            .header("If-None-Match", &etag)
            .send()
            .await
            .expect("the agent answers");
        assert_eq!(again.status(), 304, "{path} with its own ETag");
    }
}

async fn the_page_shows_the_tree_live_and_acts_on_it(flavor: Flavor) {
    prerequisites();
    let topology = TestTopology::start(flavor, 2).await;
    let watcher = watch(
        &topology,
        vec![topology.key("node1")],
        automatic_recovery(&topology),
    )
    .await;
    probed(&watcher.agent.discovery, 3).await;
    let url = format!("http://{}", watcher.agent.api_address);
    the_assets_are_served(&url).await;
    let out = output_dir(&format!("topology-{flavor}"));
    run_script(
        "topology.mjs",
        &[url, "t".into(), out.display().to_string()],
    )
    .await;
}

/// A kill -9 of the primary under an open page, with automatic recovery on: the tree
/// and, within a second of it, the routing panel name the new primary, with no reload
/// (`web-tests/killed.mjs`).
async fn after_a_kill_the_routing_panel_follows_the_tree_within_a_second(flavor: Flavor) {
    prerequisites();
    let topology = TestTopology::start(flavor, 2).await;
    let watcher = watch(
        &topology,
        vec![topology.key("node1")],
        automatic_recovery(&topology),
    )
    .await;
    probed(&watcher.agent.discovery, 3).await;
    let url = format!("http://{}", watcher.agent.api_address);
    let out = output_dir(&format!("killed-{flavor}"));
    let mut sandbox = topology.sandbox.clone();
    run_script_and(
        "killed.mjs",
        &[url, "t".into(), out.display().to_string()],
        "watching",
        move || sandbox.kill("node1").expect("kill node1"),
    )
    .await;
}

/// The page at 1400, 800 and 390 px wide, light and dark, on a tree of three levels
/// (node3 moved below node2): what fits, where the focus goes, that a notice does not
/// move the tree (`web-tests/layout.mjs`).
async fn the_layout_fits_at_every_width_light_and_dark(flavor: Flavor) {
    prerequisites();
    let topology = TestTopology::start(flavor, 2).await;
    let watcher = watch(&topology, vec![topology.key("node1")], |_| {}).await;
    probed(&watcher.agent.discovery, 3).await;
    let (node2, node3) = (topology.key("node2"), topology.key("node3"));
    let _: serde_json::Value = watcher
        .api
        .post(
            &format!("/api/v1/instances/{node3}/relocate"),
            &serde_json::json!({ "below": node2.to_string() }),
        )
        .await
        .expect("node3 moved below node2");
    let url = format!("http://{}", watcher.agent.api_address);
    let out = output_dir(&format!("layout-{flavor}"));
    run_script("layout.mjs", &[url, "t".into(), out.display().to_string()]).await;
}

/// With `api.token_for_reads`, the page asks for the token once, keeps it for the tab,
/// polls with it (server-sent events cannot carry it) and acts with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_for_reads_the_page_asks_once_and_polls() {
    prerequisites();
    let topology = TestTopology::start(Flavor::Mariadb, 2).await;
    let watcher = watch(&topology, vec![topology.key("node1")], |config| {
        config.api.token = Some(Secret::new(TOKEN));
        config.api.token_for_reads = true;
    })
    .await;
    probed(&watcher.agent.discovery, 3).await;
    let url = format!("http://{}", watcher.agent.api_address);
    // The page itself is open: it holds no data, and it is what asks for the token.
    the_assets_are_served(&url).await;
    let out = output_dir("token");
    run_script(
        "token.mjs",
        &[url, "t".into(), TOKEN.into(), out.display().to_string()],
    )
    .await;
}

/// More clusters than a page holds (the fleet simulator's, 150 of three): the one whose
/// primary was killed comes first though its name sorts last, 100 to a page, and the
/// filter finds a cluster by an instance (`web-tests/fleet.mjs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_larger_than_a_page_lists_problems_first_a_page_at_a_time() {
    use support::fleet::{Fleet, FleetOptions};
    prerequisites();
    const CLUSTERS: usize = 150;
    let fleet = Fleet::start(FleetOptions {
        clusters: CLUSTERS,
        replicas: 2,
        user: "pointsman".into(),
        password: "fleet-secret".into(),
    })
    .await
    .expect("the fleet listens");
    let store = tempfile::tempdir().expect("temp dir");
    let mut config = pointsman::config::Config::defaults();
    config.mysql.user = "pointsman".into();
    config.mysql.password = Some(Secret::new("fleet-secret"));
    config.discovery.seeds = fleet
        .primaries()
        .iter()
        .map(|k| k.parse().expect("a key"))
        .collect();
    config.store.path = store.path().join("pointsman.db");
    config.api.listen = "127.0.0.1:0".into();
    // Automatic recovery covers nothing: the killed primary stays a problem.
    config.recovery.auto_clusters = Vec::new();
    let settings = config.validate().expect("valid settings");
    let agent = support::agent(&settings).await;
    let api = pointsman::client::ApiClient::new(&format!("http://{}", agent.api_address));
    let mut primaries = fleet.primaries();
    primaries.sort();
    let killed = primaries.last().cloned().expect("a cluster");
    let other = fleet.keys()[1].clone();
    eventually(PATIENCE, "every cluster seen whole", || async {
        let list: Vec<pointsman::api::views::ClusterSummary> =
            api.get("/api/v1/clusters").await.ok()?;
        (list.len() == CLUSTERS && list.iter().all(|c| c.instance_count == 3)).then_some(())
    })
    .await;
    fleet.kill(&killed);
    eventually(
        PATIENCE,
        "the killed primary's cluster in trouble",
        || async {
            let list: Vec<pointsman::api::views::ClusterSummary> =
                api.get("/api/v1/clusters").await.ok()?;
            (list.first()?.name == killed
                && list[0]
                    .problems
                    .iter()
                    .any(|p| p.code == ProblemCode::DeadPrimary))
            .then_some(())
        },
    )
    .await;
    let out = output_dir("fleet");
    run_script(
        "fleet.mjs",
        &[
            format!("http://{}", agent.api_address),
            CLUSTERS.to_string(),
            killed,
            other,
            out.display().to_string(),
        ],
    )
    .await;
}

/// A frozen agent (SIGSTOP, as a hung process or a lost network looks from the browser)
/// is not shown as live: within seconds the page says it has had no word from the
/// agent and as of when what it shows is; a quiet agent, by its heartbeats, stays live;
/// once the agent runs again the page is live again. The agent is a process of its own,
/// so the test can freeze it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_is_shown_as_not_live_and_live_again() {
    prerequisites();
    let topology = TestTopology::start(Flavor::Mariadb, 2).await;
    let agent = support::agent_process::AgentProcess::start(&topology, "");
    support::agent_process::sees_the_cluster(&agent.api).await;
    let pid = agent.pid().expect("the agent runs");
    let out = output_dir("frozen");
    run_script(
        "frozen.mjs",
        &[
            agent.url.clone(),
            pid.to_string(),
            out.display().to_string(),
        ],
    )
    .await;
}

/// The dead-primary path, by hand: with automatic recovery off (the agent has the
/// replication account to re-point with, but no `auto_clusters`), a killed primary
/// waits for an operator. The page shows it with a Recover action and the ranked
/// candidates; the script picks the lower-ranked replica and confirms; then the servers
/// and the agent's record must agree that this one — not the best — took over.
async fn a_dead_primary_is_recovered_from_the_page_to_the_replica_chosen(flavor: Flavor) {
    prerequisites();
    let topology = TestTopology::start(flavor, 2).await;
    let user = topology.sandbox.repl_user.clone();
    let password = topology.sandbox.repl_password.clone();
    let watcher = watch(&topology, vec![topology.key("node1")], move |config| {
        config.recovery.replication_user = user;
        config.recovery.replication_password = Some(Secret::new(password));
    })
    .await;
    probed(&watcher.agent.discovery, 3).await;
    let node1 = topology.key("node1");
    topology.sandbox.clone().kill("node1").expect("kill node1");
    let api = &watcher.api;
    eventually(PATIENCE, "the API to show DeadPrimary for t", || async {
        let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.ok()?;
        detail
            .problems
            .iter()
            .any(|p| p.code == ProblemCode::DeadPrimary && p.instance == node1)
            .then_some(())
    })
    .await;
    // The agent's own ranking, to check the page's against: the script picks the second.
    let candidates: Candidates = api
        .get("/api/v1/clusters/t/candidates")
        .await
        .expect("candidates");
    let ranked: Vec<InstanceKey> = candidates
        .verdicts
        .iter()
        .map(|v| v.instance.clone())
        .collect();
    assert_eq!(ranked.len(), 2, "{candidates:?}");

    let url = format!("http://{}", watcher.agent.api_address);
    let out = output_dir(&format!("recover-{flavor}"));
    let printed = run_script("recover.mjs", &[url, "t".into(), out.display().to_string()]).await;
    let chosen: InstanceKey = printed
        .lines()
        .find_map(|line| line.strip_prefix("chosen: "))
        .unwrap_or_else(|| panic!("web-tests/recover.mjs did not say what it chose:\n{printed}"))
        .trim()
        .parse()
        .expect("a host:port");
    assert_eq!(
        chosen, ranked[1],
        "the page's second candidate is not the agent's second ({ranked:?})"
    );

    let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.expect("cluster t");
    assert_eq!(detail.primary, chosen, "the primary after the recovery");
    let node = topology
        .sandbox
        .nodes
        .iter()
        .find(|n| InstanceKey::new(n.host.clone(), n.port) == chosen)
        .expect("a sandbox node")
        .name
        .clone();
    assert_eq!(
        topology.value(&node, "SELECT @@read_only").await.as_deref(),
        Some("0"),
        "{chosen} is not writable"
    );
    let recoveries: Vec<RecoveryRecord> = api
        .get("/api/v1/recoveries?cluster=t")
        .await
        .expect("recoveries");
    let recovery = recoveries.first().expect("a recovery record");
    assert_eq!(recovery.status, RecoveryStatus::Succeeded, "{recovery:?}");
    assert_eq!(recovery.failed, node1, "{recovery:?}");
    assert_eq!(recovery.successor.as_ref(), Some(&chosen), "{recovery:?}");
    assert_eq!(recovery.problem, "DeadPrimary", "{recovery:?}");
    // Who acted from the page: the API and the browser's address.
    assert_eq!(recovery.trigger, "api 127.0.0.1", "{recovery:?}");
}

/// A cluster without an alias is named after its primary: its automatic failover
/// renames it. The page at the old name follows it ("formerly"), keeps its history and
/// announces the failover until it is acknowledged (`web-tests/renamed.mjs`).
async fn a_cluster_renamed_by_its_failover_keeps_its_history(flavor: Flavor) {
    prerequisites();
    let topology = TestTopology::start(flavor, 2).await;
    let user = topology.sandbox.repl_user.clone();
    let password = topology.sandbox.repl_password.clone();
    let watcher = watch(&topology, vec![topology.key("node1")], move |config| {
        config.clusters.clear();
        config.recovery.auto_clusters = vec![r"^127\.0\.0\.1:".into()];
        config.recovery.replication_user = user;
        config.recovery.replication_password = Some(Secret::new(password));
    })
    .await;
    probed(&watcher.agent.discovery, 3).await;
    let old = topology.key("node1").to_string();
    let api = &watcher.api;
    eventually(PATIENCE, "the cluster named after node1", || async {
        let detail: ClusterDetail = api.get(&format!("/api/v1/clusters/{old}")).await.ok()?;
        (detail.name == old && detail.instances.len() == 3).then_some(())
    })
    .await;
    topology.sandbox.clone().kill("node1").expect("kill node1");
    let renamed = eventually_or_show(
        api,
        PATIENCE,
        "the failover to rename the cluster",
        || async {
            let clusters: Vec<pointsman::api::views::ClusterSummary> =
                api.get("/api/v1/clusters").await.ok()?;
            // Settled: the failover succeeded, and the fenced old primary is shown in it.
            clusters.into_iter().find(|c| {
                c.formerly.contains(&old)
                    && c.instance_count == 3
                    && c.unacknowledged
                        .as_ref()
                        .is_some_and(|r| r.status == RecoveryStatus::Succeeded)
            })
        },
    )
    .await;
    assert_ne!(renamed.name, old);
    assert_eq!(renamed.primary.to_string(), renamed.name);
    // The API answers for the old name with the cluster as it is now.
    let detail: ClusterDetail = api
        .get(&format!("/api/v1/clusters/{old}"))
        .await
        .expect("the old name answers");
    assert_eq!(detail.name, renamed.name);

    let url = format!("http://{}", watcher.agent.api_address);
    let out = output_dir(&format!("renamed-{flavor}"));
    run_script(
        "renamed.mjs",
        &[
            url,
            old.clone(),
            renamed.name.clone(),
            out.display().to_string(),
        ],
    )
    .await;
    let after: ClusterDetail = api
        .get(&format!("/api/v1/clusters/{}", renamed.name))
        .await
        .expect("the cluster");
    assert!(after.unacknowledged.is_none(), "{:?}", after.unacknowledged);
}

/// With no token (the default, and the demo's), what any page may make a browser send —
/// a `text/plain` fetch, a form — reaches the agent and changes nothing: the servers and
/// the agent's record agree that nothing was switched over or recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_origins_page_cannot_switch_over_or_recover() {
    prerequisites();
    let topology = TestTopology::start(Flavor::Mariadb, 2).await;
    let watcher = watch(
        &topology,
        vec![topology.key("node1")],
        automatic_recovery(&topology),
    )
    .await;
    probed(&watcher.agent.discovery, 3).await;
    let url = format!("http://{}", watcher.agent.api_address);
    let out = output_dir("cross-origin");
    let printed = run_script(
        "cross-origin.mjs",
        &[url, "t".into(), out.display().to_string()],
    )
    .await;
    assert!(
        printed.contains("requests answered by the agent: 4"),
        "{printed}"
    );

    let api = &watcher.api;
    let recoveries: Vec<RecoveryRecord> = api
        .get("/api/v1/recoveries?cluster=t")
        .await
        .expect("recoveries");
    assert!(recoveries.is_empty(), "{recoveries:?}");
    let detail: ClusterDetail = api.get("/api/v1/clusters/t").await.expect("cluster t");
    assert_eq!(detail.primary, topology.key("node1"));
    assert_eq!(
        topology
            .value("node1", "SELECT @@read_only")
            .await
            .as_deref(),
        Some("0"),
        "node1 is not the writable primary any more"
    );
    let switch: pointsman::api::recovery::RecoverySwitch =
        api.get("/api/v1/recovery").await.expect("the switch");
    assert!(switch.automatic, "automatic recovery was turned off");
}
