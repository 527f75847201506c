//! The agent as its users run it: the `pointsman` binary started on a configuration
//! file for a sandbox, its output in a log file, killed by its PID when the test ends;
//! and what the servers themselves say about the topology, for tests that must not
//! take the agent's word for it.

use super::{eventually, TestTopology};
use pointsman::api::Health;
use pointsman::client::ApiClient;
use pointsman::sandbox::Sandbox;
use pointsman::store::recovery::{RecoveryRecord, RecoveryStatus};
use std::path::Path;
use std::time::Duration;
use tokio::process::{Child, Command};

const PATIENCE: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The agent's configuration for the sandbox, as a user would write it.
pub fn write_config(
    topology: &TestTopology,
    dir: &Path,
    api_port: u16,
    more: &str,
) -> std::path::PathBuf {
    let sandbox = &topology.sandbox;
    let instances: Vec<String> = topology.keys().iter().map(|k| format!("\"{k}\"")).collect();
    let text = format!(
        "[mysql]\nuser = \"{user}\"\npassword = \"{password}\"\n\
         # Generous: a loaded CI machine must not turn a slow connect into a failed step.\n\
         connect_timeout = \"3s\"\n\n\
         [discovery]\nseeds = [\"{seed}\"]\npoll_interval = \"500ms\"\n\n\
         [store]\npath = \"{store}\"\n\n\
         [api]\nlisten = \"127.0.0.1:{api_port}\"\n\n\
         [recovery]\nauto_clusters = [\"alias=t\"]\nreplication_user = \"{repl_user}\"\n\
         replication_password = \"{repl_password}\"\n\n\
         [[cluster]]\nalias = \"t\"\ninstances = [{instances}]\n\n{more}",
        user = sandbox.user,
        password = sandbox.password,
        seed = topology.key("node1"),
        store = dir.join("pointsman.db").display(),
        repl_user = sandbox.repl_user,
        repl_password = sandbox.repl_password,
        instances = instances.join(", "),
    );
    let path = dir.join("pointsman.toml");
    std::fs::write(&path, text).expect("write the configuration");
    path
}

/// Starts `pointsman run`, with crash point `point` armed when given; killed (by its
/// PID) if the test ends first.
pub fn start_agent(config: &Path, point: Option<&str>, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("agent log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_pointsman"));
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .env_remove("FAILPOINTS")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("POINTSMAN_")) {
        command.env_remove(key);
    }
    if let Some(point) = point {
        command.env("FAILPOINTS", format!("{point}=return"));
    }
    command.spawn().expect("the agent starts")
}

/// Waits until the agent's API shows every node of `t` probed; if it never does, the
/// failure says what the agent saw last of each.
pub async fn sees_the_cluster(api: &ApiClient) {
    let last_seen = std::sync::Mutex::new(String::from("no answer from the agent's API"));
    let seen = tokio::time::timeout(PATIENCE, async {
        loop {
            match api
                .get::<pointsman::api::views::ClusterDetail>("/api/v1/clusters/t")
                .await
            {
                Ok(detail) => {
                    let whole = detail.instances.len() == 3
                        && detail
                            .instances
                            .iter()
                            .all(|v| v.instance.facts.is_some() && v.instance.is_reachable());
                    if whole {
                        return;
                    }
                    let said: Vec<String> = detail
                        .instances
                        .iter()
                        .map(|v| {
                            format!(
                                "{} (facts: {}, reachable: {}, last error: {:?})",
                                v.instance.key,
                                v.instance.facts.is_some(),
                                v.instance.is_reachable(),
                                v.instance.last_error
                            )
                        })
                        .collect();
                    *last_seen.lock().expect("not poisoned") = said.join("; ");
                }
                Err(error) => {
                    *last_seen.lock().expect("not poisoned") = format!("GET t: {error}");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if seen.is_err() {
        panic!(
            "timed out after {PATIENCE:?} waiting for the agent to see the 3 nodes of t; it saw last: {}",
            last_seen.lock().expect("not poisoned")
        );
    }
}

/// What each node says of itself, for a failure message.
pub async fn describe(topology: &TestTopology, nodes: &[&str]) -> String {
    let status = if topology.flavor().is_mysql() {
        "SHOW REPLICA STATUS"
    } else {
        "SHOW SLAVE STATUS"
    };
    let mut lines = Vec::new();
    for node in nodes {
        let read_only = topology
            .try_value(node, "SELECT @@GLOBAL.read_only")
            .await
            .unwrap_or_else(|| "?".into());
        let replication = match topology.sandbox.connect(node).await {
            Ok(mut conn) => {
                use mysql_async::prelude::Queryable;
                let row: Option<mysql_async::Row> = conn.query_first(status).await.ok().flatten();
                let _ = conn.disconnect().await;
                row.map(|row| {
                    [
                        "Source_Port",
                        "Master_Port",
                        "Replica_IO_Running",
                        "Slave_IO_Running",
                        "Replica_SQL_Running",
                        "Slave_SQL_Running",
                        "Last_IO_Error",
                        "Last_SQL_Error",
                    ]
                    .iter()
                    .filter_map(|name| {
                        row.get_opt::<String, _>(*name)
                            .and_then(Result::ok)
                            .map(|value| format!("{name}={value}"))
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
                })
                .unwrap_or_else(|| "not a replica".into())
            }
            Err(error) => format!("does not answer: {error}"),
        };
        lines.push(format!(
            "{node} (port {}): read_only={read_only} {replication}",
            topology.key(node).port
        ));
    }
    lines.join("\n")
}

/// Exactly one writable node, and every other running node replicates from it (asked of
/// the servers themselves); returns the primary.
pub async fn one_primary_everyone_follows(
    topology: &TestTopology,
    running: &[&str],
) -> Option<String> {
    let mut writable = Vec::new();
    for node in running {
        let read_only = topology
            .try_value(node, "SELECT @@GLOBAL.read_only")
            .await?;
        if read_only == "0" {
            writable.push(*node);
        }
    }
    let [primary] = writable[..] else {
        return None;
    };
    let port = topology.key(primary).port;
    for node in running.iter().filter(|n| **n != primary) {
        if !topology.replicates(node, Some(port)).await {
            return None;
        }
    }
    Some(primary.to_string())
}

/// One agent process with its own store and API port, stopped (by its PID) with the
/// test.
pub struct AgentProcess {
    pub api: ApiClient,
    pub url: String,
    process: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl AgentProcess {
    /// Starts an agent on `topology` with `more` appended to its configuration.
    pub fn start(topology: &TestTopology, more: &str) -> AgentProcess {
        AgentProcess::crashing_at(topology, more, None)
    }

    /// As `start`, with crash point `point` armed (a `failpoints` build only).
    pub fn crashing_at(topology: &TestTopology, more: &str, point: Option<&str>) -> AgentProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = write_config(topology, dir.path(), port, more);
        AgentProcess::run(&config, port, dir, point)
    }

    /// Starts an agent on a configuration already written in `dir`.
    pub fn on(config: &Path, port: u16, dir: tempfile::TempDir) -> AgentProcess {
        AgentProcess::run(config, port, dir, None)
    }

    fn run(config: &Path, port: u16, dir: tempfile::TempDir, point: Option<&str>) -> AgentProcess {
        let process = start_agent(config, point, &dir.path().join("agent.log"));
        let url = format!("http://127.0.0.1:{port}");
        AgentProcess {
            api: ApiClient::new(&url),
            url,
            process: Some(process),
            dir,
        }
    }

    /// Waits for the process to end by itself (a crash point); how it ended.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let mut process = self.process.take().expect("a running agent");
        tokio::time::timeout(PATIENCE, process.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("the agent did not end within {PATIENCE:?}:\n{}", self.log())
            })
            .expect("wait for the agent")
    }

    /// What the agent printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The PID of the agent this test started, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref()?.id()
    }

    pub async fn health(&self) -> Option<Health> {
        self.process.as_ref()?;
        self.api.get("/api/v1/health").await.ok()
    }

    /// `kill -9`, by the PID this test started.
    pub async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill().await;
        }
    }

    /// SIGTERM, as an operator stops an agent, and waits for it to exit.
    pub async fn terminate(&mut self) {
        if let Some(mut process) = self.process.take() {
            if let Some(pid) = process.id() {
                // SAFETY: kill(2) on the child this test started.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            }
            let _ = tokio::time::timeout(PATIENCE, process.wait()).await;
        }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Succeeded failovers of cluster `t` in this agent's record (0 once it is stopped).
    pub async fn failovers(&self) -> usize {
        if self.process.is_none() {
            return 0;
        }
        let all: Vec<RecoveryRecord> = self
            .api
            .get("/api/v1/recoveries?cluster=t")
            .await
            .unwrap_or_default();
        all.iter()
            .filter(|r| r.kind == "failover" && r.status == RecoveryStatus::Succeeded)
            .count()
    }
}

/// Exactly one running agent leads and every other running one names it: its index.
pub async fn leader_now(agents: &[AgentProcess]) -> Option<usize> {
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
}

/// Waits until exactly one running agent leads; its index.
pub async fn one_leader(agents: &[AgentProcess]) -> usize {
    eventually(PATIENCE, "exactly one leader, named by the others", || {
        leader_now(agents)
    })
    .await
}

/// Kills the primary `node` with `kill -9` and waits until the other nodes have one
/// writable primary that they all follow (asked of the servers); its node name.
pub async fn kill_primary_and_wait(topology: &TestTopology, node: &str) -> String {
    // What runs now (nodes may have been restarted through other handles).
    let mut sandbox = Sandbox::open(&topology.sandbox.dir).expect("the sandbox's state");
    sandbox.kill(node).expect("kill -9 the primary");
    let names = node_names(topology);
    let running: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != node)
        .collect();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(successor) = one_primary_everyone_follows(topology, &running).await {
            return successor;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new primary after {node} was killed:\n{}",
            describe(topology, &running).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the killed old primary `old` again (it comes back fenced), re-attaches it
/// through `via` (a follower's client follows the leader), acknowledges the recovery
/// through `acker` so the next failure may fail over at once, and waits until every node
/// follows `primary`.
pub async fn rejoin(
    topology: &TestTopology,
    old: &str,
    primary: &str,
    via: &AgentProcess,
    acker: &AgentProcess,
) {
    let mut sandbox = Sandbox::open(&topology.sandbox.dir).expect("the sandbox's state");
    sandbox.start(old).await.expect("restart the old primary");
    let key = topology.key(old);
    eventually(PATIENCE, "the old primary re-attached", || async {
        via.api
            .post::<_, serde_json::Value>(
                &format!("/api/v1/instances/{key}/reattach"),
                &serde_json::json!({}),
            )
            .await
            .ok()
    })
    .await;
    let _: serde_json::Value = acker
        .api
        .post("/api/v1/clusters/t/ack", &serde_json::json!({}))
        .await
        .expect("ack");
    let names = node_names(topology);
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    eventually(PATIENCE, "everyone follows the new primary", || async {
        (one_primary_everyone_follows(topology, &all)
            .await
            .as_deref()
            == Some(primary))
        .then_some(())
    })
    .await;
}

fn node_names(topology: &TestTopology) -> Vec<String> {
    topology
        .sandbox
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect()
}
