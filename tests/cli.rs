//! The `pointsman` binary as a user meets it: bad configuration is refused at start-up
//! with an error that names the file or variable, the key and what is wrong; secrets
//! never show; and the CLI says what to do when no agent is running.

use std::io::Write;
use std::process::{Command, Output};

fn pointsman(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pointsman"));
    command.args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("POINTSMAN_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    command.output().expect("runs")
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp");
    file.write_all(text.as_bytes()).expect("write");
    file
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Each bad file is refused by both `check-config` and `run`, before anything starts.
#[test]
fn bad_configuration_files_produce_the_documented_errors() {
    let cases = [
        (
            "[discovery]\npoll_interval = \"fast\"\n",
            "discovery.poll_interval: expected a duration like \"1s\", got \"fast\"",
        ),
        (
            "[discovery]\npoll_intervall = \"1s\"\n",
            "unknown key \"poll_intervall\"",
        ),
        ("[mysql]\nusr = \"x\"\n", "unknown key \"usr\""),
        (
            "[api]\nlisten = \"everywhere\"\n",
            "api.listen: expected an address like",
        ),
        ("[discovery]\nseeds = [\"db1:99999\"]\n", "discovery.seeds"),
        (
            "[mysql]\npassword = \"x\"\npassword_env = \"Y\"\n",
            "mysql.password: set only one of password, password_env and password_file",
        ),
        (
            "[mysql]\npassword_file = \"/nonexistent/pw\"\n",
            "mysql.password_file: cannot read /nonexistent/pw",
        ),
        (
            "[discovery]\nmax_concurrent_probes = 0\n",
            "discovery.max_concurrent_probes: must be at least 1",
        ),
        (
            "[api]\nlisten = \"0.0.0.0:3999\"\n",
            "api.listen: 0.0.0.0:3999 is reachable from other machines and the API has no token",
        ),
        (
            "[api]\ntoken = \" \"\n",
            "api.token: the token is empty or only blanks",
        ),
        (
            "[hooks]\ntimeout = \"584542046090y\"\n",
            "hooks.timeout: 584542046090years is outside 1ms..1h",
        ),
        (
            "[recovery]\nblock_period = \"0s\"\n",
            "recovery.block_period: 0s is outside 1m..30days",
        ),
        ("this is not toml", "TOML"),
    ];
    for (text, expected) in cases {
        let file = config_file(text);
        let path = file.path().to_str().expect("utf-8 path");
        for command in ["check-config", "run"] {
            let output = pointsman(&[command, "--config", path], &[]);
            let err = stderr(&output);
            assert!(!output.status.success(), "{command} accepted {text:?}");
            assert!(
                err.contains(expected),
                "{command} on {text:?}: expected {expected:?} in:\n{err}"
            );
            if expected != "TOML" {
                assert!(
                    err.contains(path),
                    "the error names the file {path}:\n{err}"
                );
            }
        }
    }
}

#[test]
fn a_missing_configuration_file_is_named() {
    let output = pointsman(&["run", "--config", "/nonexistent/pointsman.toml"], &[]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("/nonexistent/pointsman.toml: configuration file not found"));
}

#[test]
fn environment_variables_override_the_file_and_are_named_in_errors() {
    let file = config_file("[discovery]\npoll_interval = \"5s\"\n");
    let path = file.path().to_str().expect("utf-8 path");
    let output = pointsman(
        &["check-config", "--config", path],
        &[("POINTSMAN_DISCOVERY__POLL_INTERVAL", "250ms")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("250ms"),
        "env did not override the file:\n{printed}"
    );

    let output = pointsman(
        &["check-config", "--config", path],
        &[("POINTSMAN_DISCOVERY__POLL_INTERVAL", "soon")],
    );
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(
        err.contains("POINTSMAN_DISCOVERY__POLL_INTERVAL")
            && err.contains("expected a duration like \"1s\", got \"soon\""),
        "{err}"
    );
}

#[test]
fn passwords_never_reach_the_output() {
    let file = config_file("[mysql]\npassword = \"hunter2-secret\"\n");
    let output = pointsman(
        &[
            "check-config",
            "--config",
            file.path().to_str().expect("path"),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    assert!(!all.contains("hunter2-secret"), "{all}");
    assert!(all.contains("<redacted>"), "{all}");
}

/// Secrets through the environment are text, whatever they look like: a numeric
/// password is taken as written, never refused with its value in the error.
#[test]
fn secrets_from_the_environment_are_text_and_never_printed() {
    let file = config_file("[discovery]\npoll_interval = \"1s\"\n");
    let path = file.path().to_str().expect("utf-8 path");
    let secrets = [
        ("POINTSMAN_MYSQL__PASSWORD", "12345"),
        ("POINTSMAN_API__TOKEN", "007"),
        ("POINTSMAN_RECOVERY__REPLICATION_PASSWORD", "true"),
        ("POINTSMAN_ROUTING__CONSUL__TOKEN", "1.50"),
    ];
    let output = pointsman(&["check-config", "--config", path], &secrets);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    assert!(output.status.success(), "{all}");
    // (`true` is in the output anyway, as other keys' values.)
    for (_, value) in secrets.iter().filter(|(_, value)| *value != "true") {
        assert!(!all.contains(value), "{value} printed:\n{all}");
    }

    // Refused for another reason: still not shown.
    let both = config_file(&format!("[mysql]\npassword_file = \"{path}\"\n"));
    let output = pointsman(
        &[
            "check-config",
            "--config",
            both.path().to_str().expect("path"),
        ],
        &secrets,
    );
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(err.contains("mysql.password: set only one of"), "{err}");
    assert!(!err.contains("12345"), "{err}");
}

/// `POINTSMAN_API__TOKEN=007` is the token `007`, not the number 7.
#[tokio::test]
async fn a_token_from_the_environment_keeps_its_exact_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let store = dir.path().join("pointsman.db");
    let store = store.to_str().expect("utf-8 path");
    let listen = format!("127.0.0.1:{port}");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pointsman"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("POINTSMAN_")) {
        command.env_remove(key);
    }
    let mut agent = command
        .arg("run")
        .env("POINTSMAN_API__TOKEN", "007")
        .env("POINTSMAN_API__LISTEN", &listen)
        .env("POINTSMAN_STORE__PATH", store)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the agent starts");
    let url = format!("http://{listen}");
    let change =
        |token: &str| pointsman::client::ApiClient::new(&url).with_token(Some(token.to_string()));
    let body = serde_json::json!({"automatic": true});
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let answer = change("007")
            .put::<_, serde_json::Value>("/api/v1/recovery", &body)
            .await;
        match answer {
            Ok(_) => break,
            Err(pointsman::client::ClientError::Unreachable { .. })
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the token 007 is refused: {error}"),
        }
    }
    match change("7")
        .put::<_, serde_json::Value>("/api/v1/recovery", &body)
        .await
    {
        Err(pointsman::client::ClientError::Api { status: 401, .. }) => {}
        other => panic!("the token 7 was not refused: {other:?}"),
    }
    agent.kill().await.expect("the agent stops");
}

#[test]
fn cli_commands_say_how_to_reach_an_agent() {
    let output = pointsman(&["clusters", "--api", "http://127.0.0.1:9"], &[]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("cannot reach the pointsman API at http://127.0.0.1:9"),
        "{err}"
    );
    assert!(err.contains("pointsman run"), "{err}");
}

/// The systemd unit and the Dockerfile run commands and flags that exist, and the
/// configuration they install passes the start-up check.
#[test]
fn shipped_service_files_run_real_commands() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("config/pointsman.example.toml");
    let example = example.to_str().expect("utf-8 path");
    let unit =
        std::fs::read_to_string(root.join("integrations/systemd/pointsman.service")).expect("unit");
    let mut commands = 0;
    for line in unit.lines() {
        let Some(command) = line
            .strip_prefix("ExecStartPre=")
            .or_else(|| line.strip_prefix("ExecStart="))
        else {
            continue;
        };
        let args: Vec<String> = command
            .split_whitespace()
            .skip(1)
            .map(|a| a.replace("/etc/pointsman/pointsman.toml", example))
            .collect();
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        if args[0] == "run" {
            args.push("--help"); // parse the flags without starting an agent
        }
        let output = pointsman(&args, &[]);
        assert!(output.status.success(), "{command}: {}", stderr(&output));
        commands += 1;
    }
    assert_eq!(commands, 2, "the unit has ExecStartPre and ExecStart");
    let dockerfile = std::fs::read_to_string(root.join("docker/Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("COPY config/pointsman.example.toml /etc/pointsman/pointsman.toml"));
    assert!(dockerfile.contains(r#"CMD ["run", "--config", "/etc/pointsman/pointsman.toml"]"#));
}

/// Processes whose command line names `dir` (the demo's servers carry it in their
/// `--defaults-file`).
fn processes_under(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| {
            let pid = entry.ok()?.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(&needle)
                .then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// SIGTERM while the demo is still starting its servers, or just after, leaves nothing
/// running: whatever it started is stopped, whenever the signal comes.
#[test]
fn the_demo_stopped_while_starting_leaves_no_server_behind() {
    use std::io::{BufRead, BufReader};
    for after_line in ["Starting a", "  up in"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, dns_port) = (free_port().to_string(), free_port().to_string());
        let mut demo = Command::new(env!("CARGO_BIN_EXE_pointsman"))
            .args(["demo", "--dir"])
            .arg(dir.path())
            .args(["--port", &port, "--dns-port", &dns_port])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("demo starts");
        let mut lines = BufReader::new(demo.stdout.take().expect("stdout")).lines();
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.expect("a line");
            let found = line.starts_with(after_line);
            seen.push(line);
            if found {
                break;
            }
        }
        assert!(
            seen.last().is_some_and(|l| l.starts_with(after_line)),
            "the demo never printed {after_line:?}: {seen:?}"
        );
        // SAFETY: kill(2) on the child this test started.
        unsafe { libc::kill(demo.id() as libc::pid_t, libc::SIGTERM) };
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = demo.wait().expect("the demo exits");
        assert!(status.success(), "{status:?}: {seen:?} {rest:?}");
        assert!(
            rest.iter().any(|l| l.starts_with("Stopped.")),
            "no goodbye after {after_line:?}: {rest:?}"
        );
        let left = processes_under(dir.path());
        assert!(
            left.is_empty(),
            "left running after SIGTERM at {after_line:?}: {left:?}"
        );
    }
}

/// `pointsman … | head -1`: the CLI ends quietly when its reader goes away.
#[test]
fn a_closed_pipe_ends_the_cli_quietly() {
    use std::os::fd::FromRawFd;
    use std::process::Stdio;
    // A pipe whose reading end is closed before the CLI starts: its first write fails
    // with EPIPE, whenever it comes.
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two descriptors; the reading end is closed at once and
    // the writing end is handed to the child, which owns it from then on.
    let stdout = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0, "pipe");
        libc::close(fds[0]);
        Stdio::from_raw_fd(fds[1])
    };
    let output = Command::new(env!("CARGO_BIN_EXE_pointsman"))
        .args(["check-config", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/pointsman.example.toml"
        ))
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A read-only tmpfs of our own, unmounted when the test ends.
struct ReadOnlyFilesystem(std::path::PathBuf);

impl ReadOnlyFilesystem {
    fn mount(path: &std::path::Path) -> ReadOnlyFilesystem {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test mounts a read-only tmpfs and needs root (as CI runs): {status:?}"
        );
        ReadOnlyFilesystem(path.to_path_buf())
    }
}

impl Drop for ReadOnlyFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// What `run` cannot start with, `check-config` does not call valid: a store path that
/// is a directory, a file that is not a store, a read-only filesystem, a DNS TTL
/// longer than a day. Both say the same thing, and nothing is created.
#[test]
fn check_config_refuses_what_run_would() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a database\n").expect("write");
    let read_only = ReadOnlyFilesystem::mount(&dir.path().join("ro"));
    let on_read_only = read_only.0.join("pointsman.db");
    let cases = [
        (
            format!("[store]\npath = \"{}\"\n", dir.path().display()),
            "store.path: ".to_string() + &format!("{} is a directory", dir.path().display()),
        ),
        (
            format!("[store]\npath = \"{}\"\n", text.display()),
            format!("store.path: {} is not a pointsman store", text.display()),
        ),
        (
            format!("[store]\npath = \"{}\"\n", on_read_only.display()),
            format!(
                "store.path: cannot create {}: {} is on a read-only filesystem",
                on_read_only.display(),
                read_only.0.display()
            ),
        ),
        (
            format!(
                "[store]\npath = \"{}\"\n[routing.dns]\nenabled = true\nttl = \"2147483648s\"\n",
                dir.path().join("new/pointsman.db").display()
            ),
            "routing.dns.ttl: 68years 18days 3h 14m 8s is outside 1s..1day".to_string(),
        ),
    ];
    for (text, expected) in &cases {
        let file = config_file(text);
        let path = file.path().to_str().expect("utf-8 path");
        for command in ["check-config", "run"] {
            let output = pointsman(&[command, "--config", path], &[]);
            let err = stderr(&output);
            assert!(!output.status.success(), "{command} accepted {text:?}");
            assert!(
                err.contains(expected.as_str()),
                "{command} on {text:?}: expected {expected:?} in:\n{err}"
            );
        }
    }
    assert!(!dir.path().join("new").exists(), "nothing is created");
}

/// `run` with a port that another process holds stops before it does anything a user
/// could see: no store file, no connection to any server.
#[test]
fn run_with_a_port_taken_starts_nothing() {
    let seed = std::net::TcpListener::bind("127.0.0.1:0").expect("a seed to watch");
    seed.set_nonblocking(true).expect("nonblocking");
    let seed_address = seed.local_addr().expect("address");
    let api_taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to take");
    let dns_taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("a port to take");
    let dns_port = dns_taken.local_addr().expect("address").port();
    let _dns_taken_tcp = std::net::TcpListener::bind(("127.0.0.1", dns_port));
    for (taken, listen_keys, expected) in [
        (
            "API",
            format!(
                "[api]\nlisten = \"{}\"\n",
                api_taken.local_addr().expect("address")
            ),
            format!(
                "api.listen {}: cannot listen",
                api_taken.local_addr().expect("address")
            ),
        ),
        (
            "DNS",
            format!(
                "[api]\nlisten = \"127.0.0.1:{}\"\n[routing.dns]\nenabled = true\nlisten = \"127.0.0.1:{dns_port}\"\n",
                free_port()
            ),
            format!("DNS responder cannot listen on UDP 127.0.0.1:{dns_port}"),
        ),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store/pointsman.db");
        let file = config_file(&format!(
            "{listen_keys}[store]\npath = \"{}\"\n[discovery]\nseeds = [\"{seed_address}\"]\n",
            store.display()
        ));
        let output = pointsman(
            &["run", "--config", file.path().to_str().expect("path")],
            &[],
        );
        let err = stderr(&output);
        assert!(!output.status.success(), "{taken} port taken, yet: {err}");
        assert!(err.contains(&expected), "{taken}: expected {expected:?} in:\n{err}");
        assert_eq!(
            err.matches("Address already in use").count(),
            1,
            "{taken}: the cause is said once:\n{err}"
        );
        assert!(
            !dir.path().join("store").exists(),
            "{taken} port taken, yet the store was created: {err}"
        );
        match seed.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("{taken} port taken, yet the seed was connected to: {other:?}"),
        }
    }
}
