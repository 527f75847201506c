//! Routing benchmark (`cargo bench --bench routing`): what applications that reach the
//! primary through ProxySQL see at a failover and a switchover, measured on the stack of
//! the routing tests (tests/support/stack.rs: a real 3-node sandbox, ProxySQL — the real
//! binary from `$POINTSMAN_PROXYSQL` or the PATH, else the stand-in, said in the first
//! line — the Consul stand-in and the embedded DNS) while `BENCH_LOAD` busy processes
//! (default 2) keep this machine's two cores loaded.
//!
//! Each run:
//! 1. **pointsman routes ProxySQL** (its monitor at ProxySQL's default 1000 ms, as in
//!    production). An application writes through ProxySQL's traffic port every 10 ms
//!    (default hostgroup: the writer) and reads every 10 ms (a query rule sends SELECT
//!    to the reader hostgroup); the admin's `runtime_mysql_servers` is read every 5 ms.
//!    The primary is killed with kill -9. Measured: kill → the new primary ONLINE in
//!    the writer hostgroup of runtime and the old one no longer ONLINE there; how long
//!    the reader hostgroup had no ONLINE server but the dead one; the application's
//!    failed writes and reads; kill → its first write that succeeds again; and, from the
//!    recovery's record, each backend's lag behind the promotion.
//! 2. On the same stack, a **switchover** with the application writing back to back:
//!    the longest wait between two writes that succeed, next to what pointsman reports
//!    (the database's write gap and the routes' gap).
//! 3. **ProxySQL's own monitor alone**, at a 100 ms read_only interval: the same kill on
//!    a new stack whose agent promotes but does not route ProxySQL; measured: kill → the
//!    new primary ONLINE in the writer hostgroup of runtime (the monitor puts it there
//!    when it sees read_only=0).
//!
//! BENCH_FLAVOR=mariadb|mysql (default mariadb), BENCH_RUNS (default 5), BENCH_LOAD.

#[path = "../tests/support/mod.rs"]
mod support;

use mysql_async::prelude::Queryable;
use pointsman::recovery::switchover::SwitchoverReport;
use pointsman::routing::engine::RoutesView;
use pointsman::sandbox::Flavor;
use pointsman::store::recovery::RecoveryRecord;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::eventually;
use support::stack::{ProxySql, Stack, READER, WRITER};

const LIMIT: Duration = Duration::from_secs(60);
const APP_PERIOD: Duration = Duration::from_millis(10);
const ADMIN_POLL: Duration = Duration::from_millis(5);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("BENCH_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("BENCH_LOG")
                    .ok()
                    .filter(|f| f.contains('='))
                    .unwrap_or_else(|| "pointsman=debug".into()),
            )
            .init();
    }
    let flavor = support::bench_flavor();
    let runs = support::bench_runs();
    let load: usize = std::env::var("BENCH_LOAD")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let proxysql = match support::real_proxysql::binary() {
        Some(binary) => format!("the real ProxySQL {}", binary.display()),
        None => "the ProxySQL stand-in (no real one found: set POINTSMAN_PROXYSQL)".into(),
    };
    println!(
        "routing benchmark: {flavor}, {runs} runs, {proxysql}, {load} busy processes alongside"
    );
    let _load = BusyLoad::start(load);
    let mut table: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut lags: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 1..=runs {
        let routed = failover_routed(flavor).await;
        println!("run {run}: {routed:?}");
        for (name, value) in routed.rows() {
            table.entry(name).or_default().push(value);
        }
        for (backend, ms) in &routed.lags {
            lags.entry(backend.clone()).or_default().push(*ms as f64);
        }
        let monitor = failover_by_monitor(flavor).await;
        println!(
            "run {run}: ProxySQL's monitor alone: new writer ONLINE {monitor:.0} ms after the kill"
        );
        table
            .entry("kill -9 → new writer ONLINE, ProxySQL's monitor alone (100 ms)")
            .or_default()
            .push(monitor);
    }
    println!("\n{:72} {:>8} {:>17}", "", "median", "min–max");
    for (name, values) in &table {
        print_row(name, values);
    }
    for (backend, values) in &lags {
        print_row(
            &format!("new primary writable → {backend} names it, ms"),
            values,
        );
    }
    let ours = median(&table["kill -9 → new writer ONLINE in runtime (pointsman), ms"]);
    let theirs = median(&table["kill -9 → new writer ONLINE, ProxySQL's monitor alone (100 ms)"]);
    println!(
        "\npointsman moved the writer {:.1}× as fast as ProxySQL's own monitor at 100 ms (medians)",
        theirs / ours
    );
}

fn print_row(name: &str, values: &[f64]) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{name:72} {:>8.0} {:>8.0}–{:<8.0}",
        median(values),
        sorted[0],
        sorted[sorted.len() - 1]
    );
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// What one routed failover and the switchover after it showed.
#[derive(Debug)]
struct Routed {
    writer_online_ms: f64,
    readers_empty_ms: f64,
    failed_writes: u64,
    failed_reads: u64,
    writes_back_ms: f64,
    switchover_app_gap_ms: f64,
    switchover_db_gap_ms: f64,
    switchover_route_gap_ms: f64,
    withdraw_ms: f64,
    promote_ms: f64,
    lags: BTreeMap<String, u64>,
}

impl Routed {
    fn rows(&self) -> Vec<(&'static str, f64)> {
        vec![
            (
                "kill -9 → new writer ONLINE in runtime (pointsman), ms",
                self.writer_online_ms,
            ),
            (
                "reader hostgroup without an ONLINE replica during it, ms",
                self.readers_empty_ms,
            ),
            (
                "application writes that failed (one in flight at the kill)",
                self.failed_writes as f64,
            ),
            ("application reads that failed", self.failed_reads as f64),
            (
                "kill -9 → the application's first write through ProxySQL, ms",
                self.writes_back_ms,
            ),
            (
                "switchover: longest wait between two writes through ProxySQL, ms",
                self.switchover_app_gap_ms,
            ),
            (
                "switchover: writes paused at the database (pointsman's report), ms",
                self.switchover_db_gap_ms,
            ),
            (
                "failover step: withdraw the old primary from every route, ms",
                self.withdraw_ms,
            ),
            (
                "failover step: promote the new primary, ms",
                self.promote_ms,
            ),
            (
                "switchover: then until the routes named the new primary, ms",
                self.switchover_route_gap_ms,
            ),
        ]
    }
}

/// Busy processes (`yes > /dev/null`) for the length of the benchmark, stopped by PID.
struct BusyLoad(Vec<Child>);

impl BusyLoad {
    fn start(count: usize) -> BusyLoad {
        BusyLoad(
            (0..count)
                .map(|_| {
                    Command::new("yes")
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("start a busy process (yes)")
                })
                .collect(),
        )
    }
}

impl Drop for BusyLoad {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The application's account: it may read and write its own schema and nothing more,
/// so read_only stops it (the sandbox's own account has the privilege that writes
/// through read_only on MariaDB, READ_ONLY ADMIN).
const APP_USER: &str = "app";
const APP_PASSWORD: &str = "app-password";

/// The application's table and account, on the primary (replicated to the others),
/// and the account in ProxySQL.
async fn create_app(stack: &Stack) {
    let mut conn = stack
        .topology
        .sandbox
        .connect("node1")
        .await
        .expect("node1");
    for statement in [
        "CREATE DATABASE IF NOT EXISTS bench".to_string(),
        "CREATE TABLE IF NOT EXISTS bench.w (id INT AUTO_INCREMENT PRIMARY KEY, at BIGINT)".into(),
        format!("CREATE USER IF NOT EXISTS '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'"),
        format!("GRANT SELECT, INSERT ON bench.* TO '{APP_USER}'@'%'"),
    ] {
        conn.query_drop(&statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    if stack.proxysql.is_real() {
        stack
            .proxysql
            .execute(&format!(
                "INSERT INTO mysql_users (username, password, default_hostgroup) VALUES ('{APP_USER}', '{APP_PASSWORD}', {WRITER})"
            ))
            .await;
        stack.proxysql.execute("LOAD MYSQL USERS TO RUNTIME").await;
    }
}

/// Sends SELECT to the reader hostgroup (everything else goes to the user's default,
/// the writer hostgroup).
async fn route_reads(proxysql: &ProxySql) {
    if !proxysql.is_real() {
        return;
    }
    proxysql
        .execute(&format!(
            "INSERT INTO mysql_query_rules (rule_id, active, match_digest, destination_hostgroup, apply) VALUES (1, 1, '^SELECT', {READER}, 1)"
        ))
        .await;
    proxysql.execute("LOAD MYSQL QUERY RULES TO RUNTIME").await;
}

/// An application through ProxySQL's traffic port: one statement every `period` (back
/// to back when zero) on one connection, kept after a server's error and opened again
/// after a lost one. Records the time of every success and every failure's error.
struct App {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    successes: Arc<Mutex<Vec<Instant>>>,
    errors: Arc<Mutex<Vec<(Instant, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    fn start(stack: &Stack, statement: &'static str, period: Duration) -> Option<App> {
        let ProxySql::Real(real) = &stack.proxysql else {
            return None;
        };
        let opts = real.app_opts(APP_USER, APP_PASSWORD);
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let successes = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (stop2, failures2, successes2, errors2) = (
            stop.clone(),
            failures.clone(),
            successes.clone(),
            errors.clone(),
        );
        let task = tokio::spawn(async move {
            let mut conn: Option<mysql_async::Conn> = None;
            while !stop2.load(Ordering::Relaxed) {
                if conn.is_none() {
                    conn = tokio::time::timeout(
                        Duration::from_secs(2),
                        mysql_async::Conn::new(opts.clone()),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok);
                }
                let outcome = match conn.as_mut() {
                    Some(c) => {
                        match tokio::time::timeout(Duration::from_secs(5), c.query_drop(statement))
                            .await
                        {
                            Ok(Ok(())) => Ok(()),
                            // The server said no: the connection is still good.
                            Ok(Err(mysql_async::Error::Server(e))) => Err((e.to_string(), false)),
                            Ok(Err(e)) => Err((e.to_string(), true)),
                            Err(_) => Err(("no answer within 5 s".to_string(), true)),
                        }
                    }
                    None => Err(("cannot connect".to_string(), true)),
                };
                match outcome {
                    Ok(()) => successes2.lock().unwrap().push(Instant::now()),
                    Err((error, lost)) => {
                        failures2.fetch_add(1, Ordering::Relaxed);
                        errors2.lock().unwrap().push((Instant::now(), error));
                        if lost {
                            conn = None;
                        }
                    }
                }
                if !period.is_zero() {
                    tokio::time::sleep(period).await;
                }
            }
        });
        Some(App {
            stop,
            failures,
            successes,
            errors,
            task,
        })
    }

    async fn wait_working(&self) {
        let successes = self.successes.clone();
        eventually(LIMIT, "the application's statements succeed", || {
            let successes = successes.clone();
            async move { (successes.lock().unwrap().len() >= 3).then_some(()) }
        })
        .await;
    }

    /// Stops it; (failures since `from`, successes).
    /// Stops it; (failures, the times of the successes, the failures' errors).
    async fn finish(self) -> (u64, Vec<Instant>, Vec<(Instant, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let successes = self.successes.lock().unwrap().clone();
        let errors = self.errors.lock().unwrap().clone();
        (self.failures.load(Ordering::Relaxed), successes, errors)
    }
}

/// The errors after `since`, each with its time from `since`, for the run's line.
fn errors_since(errors: &[(Instant, String)], since: Instant) -> Vec<String> {
    errors
        .iter()
        .filter(|(at, _)| *at >= since)
        .map(|(at, error)| format!("+{} ms: {error}", (*at - since).as_millis()))
        .collect()
}

/// Reads runtime every `ADMIN_POLL` from `since` until the new writer (any server but
/// `dead_port`) is ONLINE in the writer hostgroup and `dead_port` is not ONLINE there;
/// returns (ms to that, ms the reader hostgroup had no ONLINE server but the dead one).
async fn watch_runtime(
    stack: &Stack,
    since: Instant,
    dead_port: u16,
    need_dead_gone: bool,
) -> (f64, f64) {
    let mut readers_empty = Duration::ZERO;
    let mut last = since;
    loop {
        let runtime = stack.runtime().await;
        let now = Instant::now();
        let online = |group: u32, port_ok: &dyn Fn(u16) -> bool| {
            runtime
                .iter()
                .any(|((g, port), status)| *g == group && port_ok(*port) && status == "ONLINE")
        };
        if !online(READER, &|port| port != dead_port) {
            readers_empty += now - last;
        }
        last = now;
        let new_writer = online(WRITER, &|port| port != dead_port);
        let dead_writer = online(WRITER, &|port| port == dead_port);
        if new_writer && (!need_dead_gone || !dead_writer) {
            return (
                (now - since).as_secs_f64() * 1000.0,
                readers_empty.as_secs_f64() * 1000.0,
            );
        }
        assert!(
            since.elapsed() < LIMIT,
            "no new writer in ProxySQL's runtime: {runtime:?}"
        );
        tokio::time::sleep(ADMIN_POLL).await;
    }
}

async fn settled(stack: &Stack) {
    eventually(LIMIT, "every backend in sync", || async {
        let view: RoutesView = stack.watcher.api.get("/api/v1/routes").await.ok()?;
        view.backends
            .iter()
            .all(|b| b.error.is_none() && b.inspections.iter().all(|i| i.in_sync))
            .then_some(())
    })
    .await;
}

async fn failover_routed(flavor: Flavor) -> Routed {
    let stack = Stack::start_with(flavor, Duration::from_millis(1000), true).await;
    create_app(&stack).await;
    route_reads(&stack.proxysql).await;
    stack.consul_names(LIMIT, "node1").await;
    settled(&stack).await;
    let writes = App::start(&stack, "INSERT INTO bench.w (at) VALUES (1)", APP_PERIOD);
    let reads = App::start(&stack, "SELECT 1", APP_PERIOD);
    for app in writes.iter().chain(reads.iter()) {
        app.wait_working().await;
    }
    let failed_before = writes
        .as_ref()
        .map_or(0, |w| w.failures.load(Ordering::Relaxed));
    let read_failed_before = reads
        .as_ref()
        .map_or(0, |r| r.failures.load(Ordering::Relaxed));

    let dead_port = stack.key("node1").port;
    let mut sandbox = stack.topology.sandbox.clone();
    let killed = Instant::now();
    sandbox.kill("node1").expect("kill node1");
    let (writer_online_ms, readers_empty_ms) = watch_runtime(&stack, killed, dead_port, true).await;
    let recovery: RecoveryRecord = eventually(LIMIT, "the failover", || async {
        let records: Vec<RecoveryRecord> =
            stack.watcher.api.get("/api/v1/recoveries").await.ok()?;
        records.into_iter().find(|r| r.finished_at.is_some())
    })
    .await;
    let new = recovery.successor.clone().expect("a successor");
    let step_ms = |name: &str| {
        recovery
            .steps
            .iter()
            .filter(|s| s.step == name)
            .map(|s| s.duration_ms as f64)
            .sum::<f64>()
    };
    let (withdraw_ms, promote_ms) = (step_ms("withdraw routes"), step_ms("promote"));
    settled(&stack).await;
    let (failed_writes, write_times, write_errors) = match writes {
        Some(app) => app.finish().await,
        None => (failed_before, Vec::new(), Vec::new()),
    };
    let (failed_reads, _, read_errors) = match reads {
        Some(app) => app.finish().await,
        None => (read_failed_before, Vec::new(), Vec::new()),
    };
    println!(
        "  after the kill: writes failed {:?}; reads failed {:?}",
        errors_since(&write_errors, killed),
        errors_since(&read_errors, killed)
    );
    let writes_back_ms = write_times
        .iter()
        .find(|at| **at > killed)
        .map_or(f64::NAN, |at| (*at - killed).as_secs_f64() * 1000.0);
    let view: RoutesView = stack
        .watcher
        .api
        .get("/api/v1/routes")
        .await
        .expect("routes");
    let lags = view
        .backends
        .iter()
        .map(|b| {
            let kind = b
                .status
                .backend
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            (
                kind,
                b.status
                    .last_promotion_lag_ms
                    .unwrap_or_else(|| panic!("{b:?}: no promotion lag")),
            )
        })
        .collect();

    // The switchover, the application writing back to back.
    let other = ["node2", "node3"]
        .into_iter()
        .find(|node| stack.key(node) != new)
        .expect("the other replica");
    let writes = App::start(
        &stack,
        "INSERT INTO bench.w (at) VALUES (2)",
        Duration::ZERO,
    );
    if let Some(app) = &writes {
        app.wait_working().await;
    }
    let asked = Instant::now();
    let report: SwitchoverReport = stack
        .watcher
        .api
        .post(
            "/api/v1/clusters/t/switchover",
            &serde_json::json!({ "to": stack.key(other).to_string() }),
        )
        .await
        .expect("switchover");
    let answered = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let switchover_app_gap_ms = match writes {
        Some(app) => {
            let (_, times, errors) = app.finish().await;
            let failed = errors_since(&errors, asked);
            println!(
                "  switchover: {} writes failed; first {:?}, last {:?}",
                failed.len(),
                failed.first(),
                failed.last()
            );
            let window: Vec<&Instant> = times.iter().filter(|t| **t >= asked).collect();
            window
                .windows(2)
                .filter(|pair| *pair[0] <= answered)
                .map(|pair| (*pair[1] - *pair[0]).as_secs_f64() * 1000.0)
                .fold(0.0, f64::max)
        }
        None => f64::NAN,
    };
    Routed {
        writer_online_ms,
        readers_empty_ms,
        failed_writes: failed_writes.saturating_sub(failed_before),
        failed_reads: failed_reads.saturating_sub(read_failed_before),
        writes_back_ms,
        switchover_app_gap_ms,
        switchover_db_gap_ms: report.write_gap_ms as f64,
        switchover_route_gap_ms: report.route_gap_ms.map_or(f64::NAN, |ms| ms as f64),
        withdraw_ms,
        promote_ms,
        lags,
    }
}

/// The same kill with ProxySQL left to its own read_only monitor at 100 ms: ms from the
/// kill to the new primary ONLINE in the writer hostgroup of runtime.
async fn failover_by_monitor(flavor: Flavor) -> f64 {
    let stack = Stack::start_with(flavor, Duration::from_millis(100), false).await;
    // As an operator who lets the monitor route sets ProxySQL up: every server listed,
    // the primary in the writer hostgroup.
    for (group, node) in [(WRITER, "node1"), (READER, "node2"), (READER, "node3")] {
        stack
            .proxysql
            .execute(&format!(
                "INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES ({group}, '127.0.0.1', {})",
                stack.key(node).port
            ))
            .await;
    }
    stack
        .proxysql
        .execute("LOAD MYSQL SERVERS TO RUNTIME")
        .await;
    stack
        .runtime_becomes(
            LIMIT,
            "the monitor's routes",
            &[
                (WRITER, "node1", "ONLINE"),
                (READER, "node2", "ONLINE"),
                (READER, "node3", "ONLINE"),
            ],
        )
        .await;
    let dead_port = stack.key("node1").port;
    let mut sandbox = stack.topology.sandbox.clone();
    let killed = Instant::now();
    sandbox.kill("node1").expect("kill node1");
    watch_runtime(&stack, killed, dead_port, false).await.0
}
