//! The real ProxySQL 2.7.1 driver (tests/support/real_proxysql.rs), and the facts
//! `shared/tools/proxysql-2.7.1/README.md` measured on that binary that the in-process
//! stand-in may get wrong, each asserted as seen on the real one: OFFLINE_HARD rows
//! leave runtime but not memory or disk; the empty statement is an error that leaves the
//! admin running, while a lone `;` crashes it; a restart comes back from disk; the
//! read_only monitor moves a writable server into the writer hostgroup (runtime only)
//! on MariaDB 10.11 and MySQL 9.7, and the traffic port reaches it — on MySQL 9.7 with
//! caching_sha2_password accounts ProxySQL never logged in with, over plaintext.
//!
//! These tests need the binary: `POINTSMAN_PROXYSQL` (CI sets it). Without it they fail,
//! unless `POINTSMAN_PROXYSQL_OPTIONAL=1`, when they say they were skipped.

mod support;

use mysql_async::prelude::Queryable;
use pointsman::sandbox::Flavor;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::real_proxysql::{binary, RealOptions, RealProxySql, BINARY_ENV};
use support::{eventually, TestTopology};

const OPTIONAL_ENV: &str = "POINTSMAN_PROXYSQL_OPTIONAL";
const WRITER: u32 = 10;
const READER: u32 = 20;
const PATIENCE: Duration = Duration::from_secs(15);

on_every_flavor!(
    the_monitor_moves_a_writable_reader_to_the_writer_hostgroup_and_the_app_port_reaches_it
);

/// The binary, or `None` (saying so) when `POINTSMAN_PROXYSQL_OPTIONAL=1`; otherwise a
/// missing binary fails the test.
fn required_binary(test: &str) -> Option<PathBuf> {
    if let Some(path) = binary() {
        return Some(path);
    }
    if std::env::var(OPTIONAL_ENV).as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED {test}: no ProxySQL binary ({BINARY_ENV} is unset and there is no proxysql on PATH) and {OPTIONAL_ENV}=1"
        );
        return None;
    }
    panic!(
        "{test} needs a real ProxySQL 2.7.1: set {BINARY_ENV} to its binary (CI sets it; on the dev machines it is shared/tools/proxysql-2.7.1/proxysql), or {OPTIONAL_ENV}=1 to skip"
    );
}

/// (hostgroup, port, status) of every row of a `mysql_servers`-shaped table.
async fn servers(proxysql: &RealProxySql, table: &str) -> BTreeSet<(u32, u16, String)> {
    proxysql
        .rows(&format!("SELECT hostgroup_id, port, status FROM {table}"))
        .await
        .into_iter()
        .map(|row| {
            let text = |i: usize| row[i].clone().expect("not NULL");
            (
                text(0).parse().expect("a hostgroup"),
                text(1).parse().expect("a port"),
                text(2),
            )
        })
        .collect()
}

fn set(rows: &[(u32, u16, &str)]) -> BTreeSet<(u32, u16, String)> {
    rows.iter()
        .map(|(group, port, status)| (*group, *port, status.to_string()))
        .collect()
}

/// Whether `pid` is a process whose command line names `datadir` (so a recycled PID
/// does not count).
fn runs(pid: u32, datadir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            String::from_utf8_lossy(&cmdline).contains(datadir.to_string_lossy().as_ref())
        })
        .unwrap_or(false)
}

fn row(host: &str, group: u32, port: u16, status: &str) -> (u32, String, u16, String) {
    (group, host.to_string(), port, status.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_starts_kills_restarts_and_stops_a_proxysql_of_its_own() {
    let Some(bin) = required_binary("the driver test") else {
        return;
    };
    let began = Instant::now();
    let mut one = RealProxySql::start(&bin, RealOptions::default()).await;
    let started_in = began.elapsed();
    let other = RealProxySql::start(&bin, RealOptions::default()).await;
    let addresses: BTreeSet<_> = [
        one.admin_address(),
        one.app_address(),
        other.admin_address(),
        other.app_address(),
    ]
    .into();
    assert_eq!(addresses.len(), 4, "every port is its own: {addresses:?}");
    for proxysql in [&one, &other] {
        let version = proxysql.rows("select version()").await;
        assert!(
            version[0][0]
                .as_deref()
                .is_some_and(|v| v.starts_with("2.7.1")),
            "the admin answers with ProxySQL's version: {version:?}"
        );
        // Each answers as itself: its own admin address, from its own configuration.
        let ifaces = proxysql
            .rows("SELECT variable_value FROM global_variables WHERE variable_name = 'admin-mysql_ifaces'")
            .await;
        assert_eq!(
            ifaces,
            vec![vec![Some(proxysql.admin_address().to_string())]]
        );
        tokio::net::TcpStream::connect(proxysql.app_address())
            .await
            .expect("the traffic port listens");
    }

    let first = one.pid().expect("running");
    let began = Instant::now();
    one.kill().await;
    let killed_in = began.elapsed();
    assert!(!one.is_running());
    assert_eq!(one.pid(), None);
    assert!(!runs(first, one.datadir()), "PID {first} is gone");
    assert!(
        one.try_rows("SELECT 1").await.is_err(),
        "a killed ProxySQL does not answer"
    );

    let began = Instant::now();
    one.start_again().await;
    let restarted_in = began.elapsed();
    let second = one.pid().expect("running again");
    assert_ne!(first, second);
    assert_eq!(
        one.rows("SELECT 1").await,
        vec![vec![Some("1".to_string())]]
    );

    let began = Instant::now();
    one.stop().await;
    let stopped_in = began.elapsed();
    assert!(!one.is_running());
    assert!(!runs(second, one.datadir()), "PID {second} is gone");
    assert!(
        one.error_log_tail(usize::MAX)
            .contains("ProxySQL version 2.7.1"),
        "the log has ProxySQL's output: {}",
        one.error_log_tail(20)
    );
    eprintln!(
        "real ProxySQL: started in {started_in:?}, killed in {killed_in:?}, started again in {restarted_in:?}, stopped (SIGTERM) in {stopped_in:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_leaves_no_proxysql_running() {
    let Some(bin) = required_binary("the drop guard test") else {
        return;
    };
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let proxysql = RealProxySql::start(&bin, RealOptions::default()).await;
        let pid = proxysql.pid().expect("running");
        sender
            .send((pid, proxysql.datadir().to_path_buf()))
            .expect("the test waits");
        panic!("a test failing while its ProxySQL runs (on purpose)");
    });
    let outcome = test.await.expect_err("the task panicked");
    assert!(outcome.is_panic());
    let (pid, datadir) = receiver.await.expect("the task sent its PID");
    assert!(!runs(pid, &datadir), "ProxySQL PID {pid} was killed");
    assert!(!datadir.exists(), "{} was removed", datadir.display());
}

/// ProxySQL 2.7.1 can die of SIGSEGV while starting (a race in its start-up, see
/// `NotReady::Crashed` in the driver): the driver starts it again, a bounded number of
/// times. A wrapper around the real binary crashes the same way on its first run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_crashes_is_tried_again_a_bounded_number_of_times() {
    use std::os::unix::fs::PermissionsExt;
    let Some(bin) = required_binary("the crashing start test") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let wrapper = |name: &str, script: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, script).expect("write the wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("make it executable");
        path
    };
    let marker = dir.path().join("crashed-once");
    let once = wrapper(
        "crashes-once",
        format!(
            "#!/bin/sh\nif [ ! -e '{}' ]; then touch '{}'; kill -SEGV $$; fi\nexec '{}' \"$@\"\n",
            marker.display(),
            marker.display(),
            bin.display()
        ),
    );
    let proxysql = RealProxySql::start(&once, RealOptions::default()).await;
    assert!(marker.exists(), "the first start crashed");
    assert_eq!(
        proxysql.rows("SELECT 1").await,
        vec![vec![Some("1".to_string())]]
    );
    drop(proxysql);

    let always = wrapper("crashes-always", "#!/bin/sh\nkill -SEGV $$\n".to_string());
    let outcome = tokio::spawn(async move {
        RealProxySql::start(&always, RealOptions::default()).await;
    })
    .await;
    let panic = outcome.expect_err("a binary that always crashes fails the start");
    let message = panic.into_panic();
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("did not come up in 4 attempts"),
        "the start gave up: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_hard_row_nobody_uses_leaves_runtime_but_stays_in_memory_and_on_disk() {
    let Some(bin) = required_binary("the OFFLINE_HARD test") else {
        return;
    };
    // No backend listens on these ports, and nothing connects: no monitor, no traffic.
    let options = RealOptions {
        servers: vec![
            row("127.0.0.1", WRITER, 1, "ONLINE"),
            row("127.0.0.1", WRITER, 2, "OFFLINE_HARD"),
        ],
        ..RealOptions::default()
    };
    let proxysql = RealProxySql::start(&bin, options).await;
    // The cnf, loaded at start-up, already behaves so.
    assert_eq!(
        servers(&proxysql, "mysql_servers").await,
        set(&[(WRITER, 1, "ONLINE"), (WRITER, 2, "OFFLINE_HARD")])
    );
    assert_eq!(
        servers(&proxysql, "runtime_mysql_servers").await,
        set(&[(WRITER, 1, "ONLINE")])
    );

    let changed = proxysql
        .execute("UPDATE mysql_servers SET status = 'OFFLINE_HARD' WHERE port = 1")
        .await;
    assert_eq!(changed, 1);
    assert_eq!(proxysql.execute("LOAD MYSQL SERVERS TO RUNTIME").await, 0);
    assert_eq!(
        servers(&proxysql, "runtime_mysql_servers").await,
        set(&[]),
        "no OFFLINE_HARD row is in runtime right after the LOAD"
    );
    assert_eq!(
        servers(&proxysql, "mysql_servers").await,
        set(&[(WRITER, 1, "OFFLINE_HARD"), (WRITER, 2, "OFFLINE_HARD")])
    );
    assert_eq!(proxysql.execute("SAVE MYSQL SERVERS TO DISK").await, 0);
    assert_eq!(
        servers(&proxysql, "disk.mysql_servers").await,
        set(&[(WRITER, 1, "OFFLINE_HARD"), (WRITER, 2, "OFFLINE_HARD")])
    );
    assert_eq!(
        servers(&proxysql, "runtime_mysql_servers").await,
        set(&[]),
        "SAVE does not bring them back to runtime"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_empty_statement_is_an_error_and_the_admin_keeps_answering() {
    let Some(bin) = required_binary("the empty statement test") else {
        return;
    };
    let mut proxysql = RealProxySql::start(&bin, RealOptions::default()).await;
    let error = proxysql
        .try_execute("")
        .await
        .expect_err("the empty statement is refused");
    assert!(
        error.contains("ProxySQL Admin Error: not an error"),
        "the empty statement's error: {error}"
    );
    // The same connection, and the process, keep going.
    assert_eq!(
        proxysql.rows("SELECT 1").await,
        vec![vec![Some("1".to_string())]]
    );
    let error = proxysql
        .try_rows("")
        .await
        .expect_err("the empty statement is refused as a query too");
    assert!(error.contains("not an error"), "{error}");
    assert!(proxysql.is_running());
    assert_eq!(
        proxysql.rows("SELECT COUNT(*) FROM mysql_servers").await,
        vec![vec![Some("0".to_string())]]
    );
}

/// Unlike the empty statement, a query that is only a `;` crashes ProxySQL 2.7.1 (in
/// `admin_session_handler`); one whose first statement is empty but is followed by
/// another (`;SELECT 1`) runs that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_semicolon_crashes_the_admin_and_a_leading_one_does_not() {
    let Some(bin) = required_binary("the lone semicolon test") else {
        return;
    };
    let mut proxysql = RealProxySql::start(&bin, RealOptions::default()).await;
    assert_eq!(
        proxysql.rows(";SELECT 1").await,
        vec![vec![Some("1".to_string())]]
    );
    assert_eq!(
        proxysql.rows("SELECT 1;;").await,
        vec![vec![Some("1".to_string())]]
    );
    proxysql
        .try_rows(";")
        .await
        .expect_err("no answer to a lone semicolon: the connection closes");
    let began = Instant::now();
    while proxysql.is_running() {
        assert!(
            began.elapsed() < PATIENCE,
            "ProxySQL still runs {PATIENCE:?} after a lone semicolon"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = proxysql.error_log_tail(40);
    assert!(
        log.contains("crash_handler") && log.contains("admin_session_handler"),
        "the log shows the crash: {log}"
    );
    // A crash is a restart from disk like any other.
    proxysql.start_again().await;
    assert_eq!(
        proxysql.rows("SELECT 1").await,
        vec![vec![Some("1".to_string())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_comes_back_from_disk_and_loses_what_was_not_saved() {
    let Some(bin) = required_binary("the restart test") else {
        return;
    };
    let options = RealOptions {
        servers: vec![row("127.0.0.1", WRITER, 1, "ONLINE")],
        ..RealOptions::default()
    };
    let mut proxysql = RealProxySql::start(&bin, options).await;
    let admin = proxysql.admin_address();
    proxysql
        .execute(
            "INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES (10, '127.0.0.1', 2)",
        )
        .await;
    proxysql.execute("SAVE MYSQL SERVERS TO DISK").await;
    // Changed in memory (and runtime), never saved.
    proxysql
        .execute(
            "INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES (10, '127.0.0.1', 3)",
        )
        .await;
    proxysql
        .execute("UPDATE mysql_servers SET status = 'OFFLINE_SOFT' WHERE port = 1")
        .await;
    proxysql.execute("LOAD MYSQL SERVERS TO RUNTIME").await;
    let unsaved = set(&[
        (WRITER, 1, "OFFLINE_SOFT"),
        (WRITER, 2, "ONLINE"),
        (WRITER, 3, "ONLINE"),
    ]);
    assert_eq!(servers(&proxysql, "runtime_mysql_servers").await, unsaved);

    proxysql.stop().await;
    proxysql.start_again().await;
    assert_eq!(proxysql.admin_address(), admin);
    let saved = set(&[(WRITER, 1, "ONLINE"), (WRITER, 2, "ONLINE")]);
    for table in [
        "mysql_servers",
        "runtime_mysql_servers",
        "disk.mysql_servers",
    ] {
        assert_eq!(
            servers(&proxysql, table).await,
            saved,
            "{table} after the restart is what was saved"
        );
    }
}

/// The hostgroup rows ProxySQL's monitor checks, and the accounts it uses, are fresh
/// ones it never logged in with: MySQL caches a caching_sha2_password login, and only
/// an uncached account makes ProxySQL go through the full exchange (over plaintext: the
/// server's RSA public key) that every login needs after a MySQL restart.
async fn the_monitor_moves_a_writable_reader_to_the_writer_hostgroup_and_the_app_port_reaches_it(
    flavor: Flavor,
) {
    let Some(bin) = required_binary(&format!("the {flavor} monitor test")) else {
        return;
    };
    let topology = TestTopology::start(flavor, 1).await;
    topology
        .sql(
            "node1",
            &[
                // The read_only check needs no privilege at all.
                "CREATE USER 'psmonitor'@'%' IDENTIFIED BY 'monitor-secret'",
                "CREATE USER 'psapp'@'%' IDENTIFIED BY 'app-secret'",
                "GRANT ALL PRIVILEGES ON *.* TO 'psapp'@'%'",
            ],
        )
        .await;
    let plugin = if flavor.is_mysql() {
        "caching_sha2_password"
    } else {
        "mysql_native_password"
    };
    let accounts = "SELECT CONCAT(COUNT(*), ' ', GROUP_CONCAT(DISTINCT plugin)) FROM mysql.user WHERE user IN ('psmonitor', 'psapp')";
    assert_eq!(
        topology.value("node1", accounts).await,
        Some(format!("2 {plugin}"))
    );
    eventually(PATIENCE, "the accounts to reach node2", || async {
        (topology.try_value("node2", accounts).await == Some(format!("2 {plugin}"))).then_some(())
    })
    .await;

    let (primary, replica) = (topology.key("node1"), topology.key("node2"));
    let proxysql = RealProxySql::start(
        &bin,
        RealOptions {
            monitor: Some((
                "psmonitor".into(),
                "monitor-secret".into(),
                Duration::from_millis(100),
            )),
            writer_is_also_reader: false,
            replication_hostgroups: vec![(WRITER, READER)],
            app_user: Some(("psapp".into(), "app-secret".into(), WRITER)),
            // Both in the reader hostgroup: the writable one must move by itself.
            servers: vec![
                row(&primary.host, READER, primary.port, "ONLINE"),
                row(&replica.host, READER, replica.port, "ONLINE"),
            ],
        },
    )
    .await;

    let wanted = set(&[
        (WRITER, primary.port, "ONLINE"),
        (READER, replica.port, "ONLINE"),
    ]);
    eventually(
        PATIENCE,
        "the monitor to move node1 (read_only=0) into the writer hostgroup in runtime",
        || async { (servers(&proxysql, "runtime_mysql_servers").await == wanted).then_some(()) },
    )
    .await;
    assert_eq!(
        servers(&proxysql, "mysql_servers").await,
        set(&[
            (READER, primary.port, "ONLINE"),
            (READER, replica.port, "ONLINE")
        ]),
        "the monitor changes runtime only, never memory"
    );
    for (key, read_only) in [(&primary, "0"), (&replica, "1")] {
        let last = proxysql
            .rows(&format!(
                "SELECT read_only, error FROM monitor.mysql_server_read_only_log WHERE port = {} ORDER BY time_start_us DESC LIMIT 1",
                key.port
            ))
            .await;
        assert_eq!(
            last,
            vec![vec![Some(read_only.to_string()), None]],
            "the monitor logged in to {key} and read its read_only"
        );
    }

    // The traffic port: the app account reaches the primary through ProxySQL.
    let mut app = mysql_async::Conn::new(proxysql.app_opts("psapp", "app-secret"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connect to the traffic port as psapp: {e}; ProxySQL's log ends:\n{}",
                proxysql.error_log_tail(30)
            )
        });
    let port: Option<u16> = app
        .query_first("SELECT @@port")
        .await
        .expect("SELECT @@port");
    assert_eq!(port, Some(primary.port), "the query reached the primary");
    let user: Option<String> = app
        .query_first("SELECT CURRENT_USER()")
        .await
        .expect("SELECT CURRENT_USER()");
    assert_eq!(user.as_deref(), Some("psapp@%"));
    if flavor.is_mysql() {
        // ProxySQL's backend connection is plaintext (use_ssl=0): the caching_sha2_password
        // login went through the RSA public key exchange, not TLS.
        let kind: Option<String> = app
            .query_first("SELECT CONNECTION_TYPE FROM performance_schema.threads WHERE PROCESSLIST_ID = CONNECTION_ID()")
            .await
            .expect("the backend connection's type");
        assert_eq!(kind.as_deref(), Some("TCP/IP"));
    }
    let _ = app.disconnect().await;

    if flavor.is_mysql() {
        // use_ssl=1 on the row: ProxySQL speaks TLS to the backend (MySQL's own
        // auto-generated certificate; ProxySQL does not verify it by default).
        proxysql
            .execute("UPDATE mysql_servers SET use_ssl = 1")
            .await;
        proxysql.execute("LOAD MYSQL SERVERS TO RUNTIME").await;
        let tls = [
            (WRITER, primary.port, "ONLINE"),
            (READER, replica.port, "ONLINE"),
        ];
        eventually(PATIENCE, "node1 back in the writer hostgroup", || async {
            (servers(&proxysql, "runtime_mysql_servers").await == set(&tls)).then_some(())
        })
        .await;
        let mut app = mysql_async::Conn::new(proxysql.app_opts("psapp", "app-secret"))
            .await
            .expect("connect to the traffic port again");
        let kind: Option<String> = app
            .query_first("SELECT CONNECTION_TYPE FROM performance_schema.threads WHERE PROCESSLIST_ID = CONNECTION_ID()")
            .await
            .expect("the backend connection's type");
        assert_eq!(kind.as_deref(), Some("SSL/TLS"));
        let _ = app.disconnect().await;
    }
}
