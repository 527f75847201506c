//! The example hook scripts in integrations/hooks, run as pointsman runs them: with the
//! POINTSMAN_* variables set. Nothing here touches the network or an interface:
//! vip-move.sh runs in dry-run mode or with a stand-in for ssh, and notify.sh finds
//! stand-ins for `logger` and `curl` first on its PATH.
//!
//! And what a hook's environment holds when the agent runs it (its output is stored and
//! served by the API): the agent's environment and the context, never a secret's
//! source or pointsman's own settings.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

/// Held while a stand-in script is written and while a script runs: a process forked by
/// another test thread while a stand-in is still open for writing would keep it open,
/// and running it would then fail with "Text file busy".
static WRITE_OR_SPAWN: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    WRITE_OR_SPAWN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("integrations/hooks")
        .join(name)
}

/// A hook as pointsman starts it: stdin null, the context in the environment, and no
/// POINTSMAN_* settings leaking in from whoever runs the tests.
fn hook(name: &str, point: &str) -> Command {
    let mut command = Command::new(script(name));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("POINTSMAN_") {
            command.env_remove(key);
        }
    }
    command
        .stdin(Stdio::null())
        .env("POINTSMAN_HOOK", point)
        .env("POINTSMAN_FAILURE_TYPE", "DeadPrimary")
        .env("POINTSMAN_CLUSTER", "shop")
        .env("POINTSMAN_FAILED_HOST", "db1.example")
        .env("POINTSMAN_FAILED_PORT", "3306")
        .env("POINTSMAN_SUCCESSOR_HOST", "db2.example")
        .env("POINTSMAN_SUCCESSOR_PORT", "3306")
        .env("POINTSMAN_RECOVERY_ID", "r-42");
    command
}

fn run(command: &mut Command) -> (Option<i32>, String, String) {
    let _exclusive = exclusive();
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("script starts");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn executable(path: &Path, text: &str) {
    let _exclusive = exclusive();
    fs::write(path, text).expect("write stand-in");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Where `name` lives on the test's own PATH.
fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| panic!("{name} not on PATH"))
}

/// Position of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[test]
fn vip_move_removes_the_vip_from_the_old_host_before_adding_it_on_the_new_one() {
    let (code, stdout, stderr) = run(hook("vip-move.sh", "post_failover")
        .env("POINTSMAN_VIP", "10.20.30.40/24")
        .env("POINTSMAN_VIP_IFACE", "bond0")
        .env("POINTSMAN_VIP_DRY_RUN", "1"));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let remove = line_of(&stdout, "db1.example ip addr del 10.20.30.40/24 dev bond0");
    let add = line_of(
        &stdout,
        "db2.example ip addr replace 10.20.30.40/24 dev bond0",
    );
    let announce = line_of(&stdout, "db2.example arping -c 3 -U -I bond0 10.20.30.40");
    assert!(remove < add && add < announce, "{stdout}");
    assert!(
        stdout.lines().all(|line| line.contains("dry run")),
        "{stdout}"
    );
}

#[test]
fn vip_move_still_adds_the_vip_when_the_old_host_is_unreachable_and_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("remote.log");
    let remote = dir.path().join("fake-ssh");
    // Stands in for ssh: records each command, and cannot reach db1 (as when it is down).
    executable(
        &remote,
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nif [ \"$1\" = db1.example ]; then\n  \
             echo 'ssh: connect to host db1.example port 22: Connection timed out' >&2\n  \
             exit 255\nfi\n",
            log.display()
        ),
    );
    let (code, stdout, stderr) = run(hook("vip-move.sh", "post_failover")
        .env("POINTSMAN_VIP", "10.20.30.40/24")
        .env("POINTSMAN_VIP_REMOTE", &remote)
        .env("POINTSMAN_VIP_SUDO", "sudo -n"));
    let commands = fs::read_to_string(&log).expect("remote was called");
    assert_eq!(
        commands,
        "db1.example sudo -n ip addr del 10.20.30.40/24 dev eth0\n\
         db2.example sudo -n ip addr replace 10.20.30.40/24 dev eth0\n\
         db2.example sudo -n arping -c 3 -U -I eth0 10.20.30.40\n"
    );
    // Moved, but the old host may still hold the address: a non-zero exit puts the
    // run in the audit log as failed, and the output says what to do.
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("could not remove 10.20.30.40/24 from eth0 on db1.example (exit 255)"),
        "{stderr}"
    );
    assert!(stderr.contains("fence it"), "{stderr}");
    assert!(
        stdout.contains("added 10.20.30.40/24 on eth0 on db2.example"),
        "{stdout}"
    );
}

#[test]
fn vip_move_fails_when_the_vip_cannot_be_added() {
    let dir = tempfile::tempdir().expect("temp dir");
    let remote = dir.path().join("fake-ssh");
    executable(
        &remote,
        "#!/bin/sh\n[ \"$1\" = db2.example ] && [ \"$3\" = addr ] && exit 2\nexit 0\n",
    );
    let (code, _, stderr) = run(hook("vip-move.sh", "post_switchover")
        .env("POINTSMAN_VIP", "10.20.30.40/24")
        .env("POINTSMAN_VIP_REMOTE", &remote));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("could not add 10.20.30.40/24"), "{stderr}");
}

#[test]
fn vip_move_refuses_to_guess_missing_settings() {
    let (code, _, stderr) = run(&mut hook("vip-move.sh", "post_failover"));
    assert_ne!(code, Some(0));
    assert!(stderr.contains("set POINTSMAN_VIP"), "{stderr}");

    let (code, _, stderr) = run(hook("vip-move.sh", "post_failover")
        .env("POINTSMAN_VIP", "10.20.30.40/24")
        .env("POINTSMAN_VIP_DRY_RUN", "1")
        .env("POINTSMAN_SUCCESSOR_HOST", ""));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no successor"), "{stderr}");
}

/// A PATH whose `logger` and `curl` record what they were given into `dir`.
fn notify_path(dir: &Path, curl_exit: i32) -> std::ffi::OsString {
    let bin = dir.join("bin");
    fs::create_dir(&bin).expect("bin dir");
    executable(
        &bin.join("logger"),
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" > '{}'\n",
            dir.join("syslog").display()
        ),
    );
    executable(
        &bin.join("curl"),
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" > '{args}'\ncat > '{body}'\nexit {curl_exit}\n",
            args = dir.join("curl.args").display(),
            body = dir.join("curl.body").display()
        ),
    );
    let mut path = bin.into_os_string();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    path
}

#[test]
fn notify_logs_every_hook_point_to_syslog() {
    for point in [
        "on_failure_detected",
        "pre_failover",
        "post_failover",
        "post_unsuccessful_failover",
        "pre_switchover",
        "post_switchover",
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (code, stdout, stderr) =
            run(hook("notify.sh", point).env("PATH", notify_path(dir.path(), 0)));
        assert_eq!(code, Some(0), "{point}: {stdout}{stderr}");
        let syslog = fs::read_to_string(dir.path().join("syslog")).expect("logger called");
        assert!(syslog.starts_with("-t pointsman -p user."), "{syslog}");
        assert!(
            syslog.contains("cluster shop: ") && syslog.contains("db1.example:3306"),
            "{point}: {syslog}"
        );
        assert!(syslog.contains("[recovery r-42]"), "{point}: {syslog}");
        assert!(
            !dir.path().join("curl.body").exists(),
            "no URL, so no webhook"
        );
    }
}

#[test]
fn notify_posts_escaped_json_to_the_webhook() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stdout, stderr) = run(hook("notify.sh", "post_failover")
        .env("PATH", notify_path(dir.path(), 0))
        .env("POINTSMAN_CLUSTER", "shop \"eu\\1\"")
        .env("POINTSMAN_NOTIFY_URL", "http://127.0.0.1:9/hook"));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let body = fs::read_to_string(dir.path().join("curl.body")).expect("curl called");
    assert_eq!(
        body.trim_end(),
        r#"{"text":"pointsman: cluster shop \"eu\\1\": failed over from db1.example:3306 to db2.example:3306 (DeadPrimary) [recovery r-42]","hook":"post_failover","failure_type":"DeadPrimary","cluster":"shop \"eu\\1\"","failed":"db1.example:3306","successor":"db2.example:3306","recovery_id":"r-42"}"#
    );
    let args = fs::read_to_string(dir.path().join("curl.args")).expect("curl args");
    assert!(
        args.contains("Content-Type: application/json") && args.contains("http://127.0.0.1:9/hook"),
        "{args}"
    );
}

#[test]
fn a_lost_notification_fails_the_run_except_where_that_would_abort_a_recovery() {
    for (point, expected) in [("post_failover", Some(1)), ("pre_failover", Some(0))] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (code, _, stderr) = run(hook("notify.sh", point)
            .env("PATH", notify_path(dir.path(), 7))
            .env("POINTSMAN_NOTIFY_URL", "http://127.0.0.1:9/hook"));
        assert_eq!(code, expected, "{point}: {stderr}");
        assert!(
            stderr.contains("could not post to the webhook (curl exit 7)"),
            "{stderr}"
        );
        assert!(dir.path().join("syslog").exists(), "syslog line first");
    }
}

#[test]
fn notify_falls_back_to_stderr_without_logger() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Only bash on the PATH: no logger (and no curl, which is not needed without a URL).
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).expect("bin dir");
    std::os::unix::fs::symlink(which("bash"), bin.join("bash")).expect("symlink bash");
    let (code, _, stderr) = run(hook("notify.sh", "on_failure_detected")
        .env("PATH", &bin)
        .env("POINTSMAN_FAILED_HOST", "")
        .env("POINTSMAN_FAILED_PORT", ""));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr,
        "pointsman: cluster shop: detected DeadPrimary on an instance [recovery r-42]\n"
    );
}

/// The agent (the binary, on a real sandbox) with its passwords and the CLI's token in
/// its environment, as `password_env` and figment's variables put them there: a
/// switchover's hook dumps its environment, and the API serves that output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_never_see_secrets_or_the_agents_settings() {
    use pointsman::api::recovery::RecoverRequest;
    use pointsman::recovery::switchover::SwitchoverReport;
    use support::agent_process::{free_port, sees_the_cluster};

    let topology = support::TestTopology::start(pointsman::sandbox::Flavor::Mariadb, 2).await;
    let sandbox = &topology.sandbox;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let instances: Vec<String> = topology.keys().iter().map(|k| format!("\"{k}\"")).collect();
    let config = format!(
        "[mysql]\nuser = \"{user}\"\npassword_env = \"POINTSMAN_MYSQL_PASSWORD\"\n\n\
         [discovery]\nseeds = [\"{seed}\"]\npoll_interval = \"500ms\"\n\n\
         [store]\npath = \"{store}\"\n\n\
         [api]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [recovery]\nreplication_user = \"{repl_user}\"\n\n\
         [hooks]\npost_switchover = [\"env | grep -E 'POINTSMAN|CONSUL|^PATH=' | sort\"]\n\n\
         [routing.consul]\ntoken_env = \"OUR_CONSUL_TOKEN\"\n\n\
         [[cluster]]\nalias = \"t\"\ninstances = [{instances}]\n",
        user = sandbox.user,
        seed = topology.key("node1"),
        store = dir.path().join("pointsman.db").display(),
        repl_user = sandbox.repl_user,
        instances = instances.join(", "),
    );
    let path = dir.path().join("pointsman.toml");
    fs::write(&path, config).expect("write the configuration");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pointsman"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("POINTSMAN_")) {
        command.env_remove(key);
    }
    let secrets = [
        ("POINTSMAN_MYSQL_PASSWORD", sandbox.password.as_str()),
        (
            "POINTSMAN_RECOVERY__REPLICATION_PASSWORD",
            sandbox.repl_password.as_str(),
        ),
        ("POINTSMAN_TOKEN", "cli-token-0451"),
        ("OUR_CONSUL_TOKEN", "consul-token-0451"),
    ];
    let log = fs::File::create(dir.path().join("agent.log")).expect("agent log");
    let _agent = command
        .arg("run")
        .arg("--config")
        .arg(&path)
        .envs(secrets)
        .env("POINTSMAN_VIP", "10.0.0.100/24")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the agent starts");
    let api = pointsman::client::ApiClient::new(&format!("http://127.0.0.1:{port}"));
    sees_the_cluster(&api).await;
    let report: SwitchoverReport = api
        .post(
            "/api/v1/clusters/t/switchover",
            &RecoverRequest { to: None },
        )
        .await
        .unwrap_or_else(|e| panic!("switchover: {e}"));
    let hook = report
        .recovery
        .steps
        .iter()
        .find(|step| step.step == "hook post_switchover")
        .unwrap_or_else(|| panic!("no hook step in {:?}", report.recovery.steps));
    let served = &hook.detail;
    assert!(hook.ok, "{served}");
    for (name, value) in secrets {
        assert!(
            !served.contains(&format!("{name}=")),
            "{name} reached the hook: {served}"
        );
        assert!(
            !served.contains(value),
            "the value of {name} reached the hook: {served}"
        );
    }
    for expected in [
        "POINTSMAN_VIP=10.0.0.100/24",
        "POINTSMAN_CLUSTER=t",
        "POINTSMAN_HOOK=post_switchover",
        "PATH=",
    ] {
        assert!(served.contains(expected), "{expected} is missing: {served}");
    }
}
