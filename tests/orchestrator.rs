//! Coming from orchestrator: `pointsman import-orchestrator` as a user runs it — on the
//! sample configurations (each imported file passes `check-config`), on broken input
//! (an error naming the file, the place and what to do; nothing written), and end to end
//! on MariaDB 10.11 and MySQL 9.7: an orchestrator configuration for a sandbox,
//! imported, completed where its TODO lines say, runs an agent that recovers a kill -9
//! of the primary as orchestrator would, its orchestrator-style hook told who took over.

mod support;

use pointsman::sandbox::Flavor;
use pointsman::store::recovery::{RecoveryRecord, RecoveryStatus};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use support::agent_process::{free_port, sees_the_cluster, AgentProcess};
use support::{eventually, TestTopology};

const PATIENCE: Duration = Duration::from_secs(30);

fn pointsman(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pointsman"));
    command.args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("POINTSMAN_")) {
        command.env_remove(key);
    }
    command.output().expect("runs")
}

/// `pointsman import-orchestrator SOURCE -o OUTPUT`.
fn import(source: &Path, output: &Path) -> Output {
    pointsman(&[
        "import-orchestrator",
        source.to_str().expect("utf-8"),
        "-o",
        output.to_str().expect("utf-8"),
    ])
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/orchestrator")
        .join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_sample_imports_into_a_configuration_that_check_config_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    for sample in [
        "minimal.conf.json",
        "consul-hooks-filters.conf.json",
        "raft-credentials.conf.json",
    ] {
        let output = dir.path().join(sample.replace(".conf.json", ".toml"));
        let source = fixture(sample);
        let imported = import(&source, &output);
        let notes = text(&imported.stderr);
        assert!(imported.status.success(), "{sample}: {notes}");
        let keys: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&source).expect("the sample"))
                .expect("a JSON object");
        for key in keys.keys() {
            assert!(
                notes
                    .lines()
                    .any(|line| line.starts_with(&format!("{key}:"))
                        || line.starts_with(&format!("{key}["))),
                "{sample}: no note for {key}: {notes}"
            );
        }
        assert!(
            notes.contains(&format!("wrote {}", output.display())),
            "{notes}"
        );
        let checked = pointsman(&["check-config", "--config", output.to_str().expect("utf-8")]);
        assert!(
            checked.status.success(),
            "{sample}: {}\n{}",
            text(&checked.stderr),
            std::fs::read_to_string(&output).unwrap_or_default()
        );

        // A second import never replaces the first.
        let again = import(&source, &output);
        assert!(!again.status.success());
        assert!(
            text(&again.stderr).contains("an existing file is never replaced"),
            "{}",
            text(&again.stderr)
        );
    }
}

#[test]
fn broken_json_and_wrong_types_are_refused_with_the_place_and_nothing_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (body, expected) in [
        (
            "{\n  \"InstancePollSeconds\": 5,\n}\n",
            "broken.json:3:1: not valid JSON",
        ),
        (
            "{\"InstancePollSeconds\": \"5\"}",
            "broken.json: InstancePollSeconds is text, but orchestrator reads a whole number",
        ),
        (
            "[1, 2]",
            "broken.json: the file holds a list, not a JSON object",
        ),
    ] {
        let source = dir.path().join("broken.json");
        std::fs::write(&source, body).expect("write");
        let output = dir.path().join("out.toml");
        let result = import(&source, &output);
        let error = text(&result.stderr);
        assert!(!result.status.success(), "{body}");
        assert!(error.contains(expected), "{expected:?} not in {error}");
        assert!(!output.exists(), "nothing is written for {body}");
    }
}

/// What a user does after the import, as its TODO lines say: the replication account
/// (orchestrator kept the one each replica had), where the store lives, and a
/// `[[cluster]]` naming the cluster as orchestrator's alias did.
fn complete(imported: &str, topology: &TestTopology, dir: &Path) -> String {
    let sandbox = &topology.sandbox;
    let instances: Vec<String> = topology.keys().iter().map(|k| format!("\"{k}\"")).collect();
    let completed = imported.replacen(
        "[recovery]\n",
        &format!(
            "[recovery]\nreplication_user = \"{}\"\nreplication_password = \"{}\"\n",
            sandbox.repl_user, sandbox.repl_password
        ),
        1,
    );
    assert_ne!(completed, imported, "the import wrote a [recovery] section");
    format!(
        "{completed}\n[store]\npath = \"{}\"\n\n[[cluster]]\nalias = \"t\"\ninstances = [{}]\n",
        dir.join("pointsman.db").display(),
        instances.join(", ")
    )
}

on_every_flavor!(an_imported_configuration_recovers_as_orchestrator_would);

async fn an_imported_configuration_recovers_as_orchestrator_would(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let sandbox = &topology.sandbox;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let hook_output = dir.path().join("hook.out");
    let orchestrator = serde_json::json!({
        "Debug": false,
        "ListenAddress": format!("127.0.0.1:{port}"),
        "MySQLTopologyUser": sandbox.user,
        "MySQLTopologyPassword": sandbox.password,
        "MySQLConnectTimeoutSeconds": 3,
        "DiscoverySeeds": [topology.key("node1").to_string()],
        "InstancePollSeconds": 1,
        "RecoverMasterClusterFilters": ["*"],
        "RecoveryPeriodBlockSeconds": 3600,
        "PostFailoverProcesses": [format!(
            "echo \"$ORC_FAILURE_TYPE {{failedHost}}:{{failedPort}} {{successorHost}}:{{successorPort}}\" > {}",
            hook_output.display()
        )],
    });
    let source = dir.path().join("orchestrator.conf.json");
    std::fs::write(&source, orchestrator.to_string()).expect("write");
    let imported_path = dir.path().join("imported.toml");
    let imported = import(&source, &imported_path);
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let imported = std::fs::read_to_string(&imported_path).expect("the imported file");
    let config = dir.path().join("pointsman.toml");
    std::fs::write(&config, complete(&imported, &topology, dir.path())).expect("write");

    let agent = AgentProcess::on(&config, port, dir);
    sees_the_cluster(&agent.api).await;
    let mut killer = topology.sandbox.clone();
    killer.kill("node1").expect("kill node1");
    let recovery: RecoveryRecord = eventually(PATIENCE, "the failover", || async {
        let records: Vec<RecoveryRecord> = agent.api.get("/api/v1/recoveries").await.ok()?;
        records.into_iter().find(|r| r.finished_at.is_some())
    })
    .await;
    assert_eq!(
        recovery.status,
        RecoveryStatus::Succeeded,
        "{recovery:?}\n{}",
        agent.log()
    );
    let successor = recovery.successor.clone().expect("a successor");
    let told = eventually(PATIENCE, "the post-failover hook's output", || async {
        std::fs::read_to_string(&hook_output).ok()
    })
    .await;
    assert_eq!(
        told.trim(),
        format!("DeadMaster {} {successor}", topology.key("node1"))
    );
    assert_eq!(
        topology
            .value(&topology.node_at(&successor), "SELECT @@read_only")
            .await
            .as_deref(),
        Some("0"),
        "the successor takes writes"
    );
}
