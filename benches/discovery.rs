//! Discovery benchmark on a real 3-node sandbox (`cargo bench --bench discovery`):
//!
//! 0. how long a warm 3-node sandbox takes to start;
//! 1. how long one full poll round takes — every instance probed once, concurrently,
//!    over kept-open connections, as the agent does each interval;
//! 2. what the agent costs: the real `pointsman run` process watching the sandbox at a
//!    1 s interval for 60 s (BENCH_SECONDS), its CPU share and resident memory read
//!    from /proc.
//!
//! BENCH_FLAVOR=mariadb|mysql picks the servers (default mariadb). Prints a table.

use pointsman::config::Secret;
use pointsman::mysql::probe::probe;
use pointsman::mysql::{ConnectSettings, Connection};
use pointsman::sandbox::{Flavor, Sandbox, SandboxOptions};
use pointsman::topology::InstanceKey;
use std::time::{Duration, Instant};

const ROUNDS: usize = 200;

#[tokio::main]
async fn main() {
    let flavor: Flavor = std::env::var("BENCH_FLAVOR")
        .unwrap_or_else(|_| "mariadb".into())
        .parse()
        .expect("BENCH_FLAVOR is mariadb, mysql or mariadb-11");
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::Builder::new()
        .prefix("pm-bench-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    // The first start may build the template datadir; the second is the warm start.
    let first = Sandbox::up(SandboxOptions::new(flavor, dir.path().join("first")))
        .await
        .expect("sandbox");
    first.down().await.expect("sandbox down");
    let started = Instant::now();
    let sandbox = Sandbox::up(SandboxOptions::new(flavor, dir.path().join("bench")))
        .await
        .expect("sandbox");
    let sandbox_up = started.elapsed();
    let keys: Vec<InstanceKey> = sandbox
        .nodes
        .iter()
        .map(|n| InstanceKey::new(n.host.clone(), n.port))
        .collect();

    let rounds = poll_rounds(&sandbox, &keys).await;
    let (cpu, rss_max, rss_end) = agent_cost(&sandbox, &keys, dir.path(), seconds).await;
    sandbox.down().await.expect("sandbox down");

    println!(
        "\ndiscovery benchmark: {} {} sandbox, 3 instances",
        flavor, sandbox.version
    );
    println!("| measure | value |");
    println!("| --- | --- |");
    println!(
        "| sandbox up, 3 nodes, warm | {:.2} s |",
        sandbox_up.as_secs_f64()
    );
    println!(
        "| one poll round (3 probes concurrently), {ROUNDS} rounds | median {:.2} ms, p95 {:.2} ms, max {:.2} ms |",
        ms(percentile(&rounds, 50)),
        ms(percentile(&rounds, 95)),
        ms(percentile(&rounds, 100))
    );
    println!("| agent CPU, 1 s interval, {seconds} s | {cpu:.2} % of one core |");
    println!("| agent resident memory | {rss_end:.1} MiB at the end, {rss_max:.1} MiB at most |");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let index = ((sorted.len() - 1) * p) / 100;
    sorted[index]
}

/// Times ROUNDS full rounds over kept-open connections; sorted durations.
async fn poll_rounds(sandbox: &Sandbox, keys: &[InstanceKey]) -> Vec<Duration> {
    let settings = ConnectSettings {
        user: sandbox.user.clone(),
        password: Secret::new(sandbox.password.clone()),
        connect_timeout: Duration::from_secs(2),
        query_timeout: Duration::from_secs(2),
    };
    let mut connections = Vec::new();
    for key in keys {
        connections.push(Connection::open(key, &settings).await.expect("connect"));
    }
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let probes = connections.iter_mut().map(probe);
        for result in futures::future::join_all(probes).await {
            result.expect("probe");
        }
        times.push(started.elapsed());
    }
    for conn in connections {
        conn.close().await;
    }
    times.sort();
    times
}

/// Runs the real agent binary against the sandbox; returns (CPU %, max RSS MiB, end RSS MiB).
async fn agent_cost(
    sandbox: &Sandbox,
    keys: &[InstanceKey],
    dir: &std::path::Path,
    seconds: u64,
) -> (f64, f64, f64) {
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[mysql]\nuser = \"{}\"\npassword = \"{}\"\n[discovery]\nseeds = [\"{}\"]\npoll_interval = \"1s\"\n\
             [store]\npath = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n",
            sandbox.user,
            sandbox.password,
            keys[0],
            dir.join("bench.db").display()
        ),
    )
    .expect("write config");
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_pointsman"))
        .args(["run", "--config"])
        .arg(&config)
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent");
    let pid = agent.id().expect("pid");
    // Let discovery settle, then measure a steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_start = cpu_ticks(pid);
    let started = Instant::now();
    let mut rss_max: f64 = 0.0;
    while started.elapsed() < Duration::from_secs(seconds) {
        rss_max = rss_max.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu_seconds = (cpu_ticks(pid) - cpu_start) as f64 / ticks_per_second;
    let rss_end = rss_mib(pid);
    let _ = agent.start_kill();
    let _ = agent.wait().await;
    (
        cpu_seconds / started.elapsed().as_secs_f64() * 100.0,
        rss_max,
        rss_end,
    )
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent is running");
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent is running");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}
