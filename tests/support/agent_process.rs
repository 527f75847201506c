//! The agent as its users run it: the `pointsman` binary started on a configuration
//! file for a sandbox, its output in a log file, killed by its PID when the test ends;
//! and what the servers themselves say about the topology, for tests that must not
//! take the agent's word for it.

use super::{eventually, TestTopology};
use pointsman::client::ApiClient;
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

/// Waits until the agent's API shows every node of `t` probed.
pub async fn sees_the_cluster(api: &ApiClient) {
    eventually(PATIENCE, "the agent to see the 3 nodes of t", || async {
        let detail: pointsman::api::views::ClusterDetail =
            api.get("/api/v1/clusters/t").await.ok()?;
        (detail.instances.len() == 3
            && detail
                .instances
                .iter()
                .all(|v| v.instance.facts.is_some() && v.instance.is_reachable()))
        .then_some(())
    })
    .await;
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
