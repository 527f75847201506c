//! The ProxySQL admin stand-in (tests/support/proxysql.rs) driven with mysql_async the way
//! the routing code drives it, asserting what shared/reference/proxysql-admin.md observed
//! on a real ProxySQL 2.7.1: the stand-in must refuse what the real one refuses, or the
//! tests that use it prove nothing. The read_only monitor runs against real MariaDB 10.11
//! and MySQL 9.7 sandboxes.

mod support;

use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, Value};
use pointsman::sandbox::Flavor;
use std::time::{Duration, Instant};
use support::proxysql::{
    Failure, Options, ProxySqlStandIn, ADMIN_ERROR_CODE, ADMIN_SQLSTATE, INJECTED_ERROR,
    PROXYSQL_VERSION,
};
use support::{eventually, TestTopology};

async fn standin() -> ProxySqlStandIn {
    ProxySqlStandIn::start(Options::default()).await
}

async fn admin(standin: &ProxySqlStandIn) -> Conn {
    Conn::new(standin.client_opts())
        .await
        .expect("the admin account connects")
}

/// The server error a statement gets: (code, SQLSTATE, message).
async fn server_error(conn: &mut Conn, sql: &str) -> (u16, String, String) {
    match conn.query_drop(sql).await {
        Err(mysql_async::Error::Server(e)) => (e.code, e.state, e.message),
        other => panic!("{sql}: expected a server error, got {other:?}"),
    }
}

async fn run(conn: &mut Conn, statements: &[&str]) {
    for statement in statements {
        conn.query_drop(*statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

fn strings(rows: &[&[&str]]) -> Vec<Vec<Option<String>>> {
    rows.iter()
        .map(|row| row.iter().map(|v| Some(v.to_string())).collect())
        .collect()
}

const SERVER: &str =
    "INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES (10, '10.0.0.1', 3306)";

#[tokio::test]
async fn greets_as_mysql_8_0_11_and_answers_version_and_variable_queries_as_proxysql() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    assert_eq!(conn.server_version(), (8, 0, 11));
    for query in ["select version()", "SELECT @@version", "Select  version() "] {
        let version: Option<String> = conn.query_first(query).await.expect(query);
        assert_eq!(version.as_deref(), Some(PROXYSQL_VERSION), "{query}");
    }
    let interval: Option<String> = conn
        .query_first("SELECT @@mysql-monitor_read_only_interval")
        .await
        .expect("a ProxySQL variable");
    assert_eq!(interval.as_deref(), Some("1000"));
    let unknown: Vec<String> = conn
        .query("SELECT @@no_such_variable")
        .await
        .expect("an unknown variable is not an error");
    assert!(unknown.is_empty(), "{unknown:?}");
    // Anything starting `SELECT @@version` is the version, as upstream matches a prefix.
    let comment: Option<String> = conn
        .query_first("SELECT @@version_comment")
        .await
        .expect("a prefix of @@version");
    assert_eq!(comment.as_deref(), Some(PROXYSQL_VERSION));
    // Two variables at once run into upstream's rewrite, which keeps the tail: an error.
    for query in [
        "SELECT @@mysql-server_version, @@admin-version",
        "SELECT @@mysql-server_version,@@admin-version",
    ] {
        let (code, state, message) = server_error(&mut conn, query).await;
        assert_eq!((code, state.as_str()), (ADMIN_ERROR_CODE, ADMIN_SQLSTATE));
        assert_eq!(
            message, "ProxySQL Admin Error: near \",\": syntax error",
            "{query}"
        );
    }
    conn.disconnect().await.expect("COM_QUIT");
    assert!(!standin.crashed());
}

#[tokio::test]
async fn mysql_async_defaults_fail_to_connect_as_on_the_real_admin_and_the_client_opts_do_not() {
    let standin = standin().await;
    let address = standin.address();
    let plain = OptsBuilder::default()
        .ip_or_hostname(address.ip().to_string())
        .tcp_port(address.port())
        .user(Some("admin"))
        .pass(Some("admin"));
    // The driver's connect-time `SELECT @@max_allowed_packet,@@wait_timeout[,@@socket]`
    // is rewritten by the admin into a query SQLite rejects.
    for opts in [plain.clone(), plain.clone().prefer_socket(false)] {
        match Conn::new(opts).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, ADMIN_ERROR_CODE);
                assert_eq!(e.message, "ProxySQL Admin Error: near \",\": syntax error");
            }
            other => panic!("default settings connected: {:?}", other.map(|c| c.id())),
        }
    }
    assert_eq!(
        standin.statements(),
        [
            "SELECT @@max_allowed_packet,@@wait_timeout,@@socket",
            "SELECT @@max_allowed_packet,@@wait_timeout"
        ]
    );
    // One variable at a time is answered from global_variables.
    let mut conn = Conn::new(plain.clone().prefer_socket(false).wait_timeout(Some(60)))
        .await
        .expect("only @@max_allowed_packet asked");
    conn.ping().await.expect("ping");
    let mut conn2 = Conn::new(
        plain
            .clone()
            .prefer_socket(false)
            .max_allowed_packet(Some(1 << 20)),
    )
    .await
    .expect("only @@wait_timeout asked: an empty result");
    conn2.ping().await.expect("ping");
    // The recommended settings send nothing at all.
    let before = standin.statements().len();
    let mut conn3 = admin(&standin).await;
    conn3.ping().await.expect("ping");
    assert_eq!(standin.statements().len(), before);
    assert!(!standin.crashed());
}

#[tokio::test]
async fn only_the_first_statement_of_a_query_runs() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    run(&mut conn, &[SERVER, "LOAD MYSQL SERVERS TO RUNTIME"]).await;
    conn.query_drop(
        "UPDATE mysql_servers SET status='OFFLINE_SOFT'; LOAD MYSQL SERVERS TO RUNTIME",
    )
    .await
    .expect("no error: the LOAD is skipped silently");
    assert_eq!(conn.affected_rows(), 1);
    assert_eq!(
        standin.rows("SELECT status FROM mysql_servers"),
        strings(&[&["OFFLINE_SOFT"]])
    );
    assert_eq!(
        standin.rows("SELECT status FROM runtime_mysql_servers"),
        strings(&[&["ONLINE"]]),
        "the LOAD after the UPDATE must not have run"
    );
    // One response: the connection is in step for the next query.
    let one: Option<String> = conn.query_first("SELECT 1").await.expect("in step");
    assert_eq!(one.as_deref(), Some("1"));
    assert_eq!(
        standin.statements(),
        [
            SERVER,
            "LOAD MYSQL SERVERS TO RUNTIME",
            "UPDATE mysql_servers SET status='OFFLINE_SOFT'; LOAD MYSQL SERVERS TO RUNTIME",
            "SELECT 1"
        ]
    );
    assert!(!standin.crashed());
}

#[tokio::test]
async fn there_are_no_transactions_an_update_survives_rollback() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    run(
        &mut conn,
        &[
            SERVER,
            "SET autocommit=0",
            "SET NAMES utf8mb4",
            "BEGIN",
            "UPDATE mysql_servers SET weight=7",
            "ROLLBACK",
        ],
    )
    .await;
    assert_eq!(
        standin.rows("SELECT weight FROM mysql_servers"),
        strings(&[&["7"]])
    );
    // The driver's own transaction API gets the same treatment.
    let mut tx = conn
        .start_transaction(Default::default())
        .await
        .expect("START TRANSACTION answers OK");
    tx.query_drop("UPDATE mysql_servers SET weight=8")
        .await
        .expect("update");
    tx.rollback().await.expect("ROLLBACK answers OK");
    assert_eq!(
        standin.rows("SELECT weight FROM mysql_servers"),
        strings(&[&["8"]])
    );
    assert!(!standin.crashed());
}

#[tokio::test]
async fn admin_commands_tolerate_case_whitespace_and_semicolons_but_not_a_comment() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    run(
        &mut conn,
        &[SERVER, "  load   MySQL servers\n to RUNTIME ;  "],
    )
    .await;
    assert_eq!(
        standin
            .rows("SELECT hostname FROM runtime_mysql_servers")
            .len(),
        1
    );
    run(&mut conn, &["DELETE FROM mysql_servers"]).await;
    let (code, state, message) =
        server_error(&mut conn, "/* x */ LOAD MYSQL SERVERS TO RUNTIME").await;
    assert_eq!((code, state.as_str()), (ADMIN_ERROR_CODE, ADMIN_SQLSTATE));
    assert_eq!(message, "ProxySQL Admin Error: near \"LOAD\": syntax error");
    assert_eq!(
        standin
            .rows("SELECT hostname FROM runtime_mysql_servers")
            .len(),
        1,
        "the commented LOAD must not have run"
    );
    assert!(!standin.crashed());
}

#[tokio::test]
async fn errors_are_1045_28000_with_the_sqlite_message_and_the_connection_survives() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    let cases = [
        ("SELEC 1", "ProxySQL Admin Error: near \"SELEC\": syntax error"),
        ("SELECT * FROM x", "ProxySQL Admin Error: no such table: x"),
        (
            "INSERT INTO mysql_servers (hostgroup_id, hostname, port, status) VALUES (10, 'h', 3306, 'BROKEN')",
            "ProxySQL Admin Error: CHECK constraint failed: UPPER(status) IN ('ONLINE','SHUNNED','OFFLINE_SOFT', 'OFFLINE_HARD')",
        ),
        (
            "INSERT INTO mysql_replication_hostgroups (writer_hostgroup, reader_hostgroup) VALUES (10, 10)",
            "ProxySQL Admin Error: CHECK constraint failed: reader_hostgroup<>writer_hostgroup AND reader_hostgroup>=0",
        ),
        (
            "INSERT INTO mysql_servers (hostgroup_id, hostname) VALUES (10, 'h'), (10, 'h')",
            "ProxySQL Admin Error: UNIQUE constraint failed: mysql_servers.hostgroup_id, mysql_servers.hostname, mysql_servers.port",
        ),
        (
            "INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES (10, 'h', 3306) ON DUPLICATE KEY UPDATE weight=2",
            "ProxySQL Admin Error: near \"DUPLICATE\": syntax error",
        ),
        ("SHOW WARNINGS", "ProxySQL Admin Error: near \"SHOW\": syntax error"),
    ];
    for (sql, expected) in cases {
        let (code, state, message) = server_error(&mut conn, sql).await;
        assert_eq!(code, ADMIN_ERROR_CODE, "{sql}");
        assert_eq!(state, ADMIN_SQLSTATE, "{sql}");
        assert_eq!(message, expected, "{sql}");
    }
    // SQLite's dialect works.
    run(
        &mut conn,
        &[
            SERVER,
            "REPLACE INTO mysql_servers (hostgroup_id, hostname, port, weight) VALUES (10, '10.0.0.1', 3306, 5)",
            "INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES (10, '10.0.0.1', 3306) ON CONFLICT (hostgroup_id, hostname, port) DO UPDATE SET weight=6",
            "UPDATE mysql_servers SET comment='it''s a \\path'",
        ],
    )
    .await;
    assert_eq!(
        standin.rows("SELECT weight, comment FROM mysql_servers"),
        strings(&[&["6", "it's a \\path"]])
    );
    assert!(!standin.crashed());
}

#[tokio::test]
async fn ok_packets_carry_change_counts_and_status_0x0202() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    run(&mut conn, &[SERVER]).await;
    assert_eq!(conn.affected_rows(), 1);
    let status = conn
        .last_ok_packet()
        .expect("an OK packet")
        .status_flags()
        .bits();
    assert_eq!(status, 0x0202);
    run(
        &mut conn,
        &["UPDATE mysql_servers SET weight=3 WHERE hostgroup_id=99"],
    )
    .await;
    assert_eq!(
        conn.affected_rows(),
        0,
        "an UPDATE matching nothing is no error"
    );
    for command in [
        "LOAD MYSQL SERVERS TO RUNTIME",
        "SAVE MYSQL SERVERS TO DISK",
        "LOAD MYSQL SERVERS FROM DISK",
        "SAVE MYSQL SERVERS FROM RUNTIME",
    ] {
        run(&mut conn, &[command]).await;
        assert_eq!(conn.affected_rows(), 0, "{command}");
    }
    assert!(!standin.crashed());
}

#[tokio::test]
async fn result_sets_are_var_strings_with_numbers_as_text_and_null_markers() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    run(&mut conn, &[SERVER]).await;
    let mut result = conn
        .query_iter("SELECT hostgroup_id, hostname, weight, NULL AS absent FROM mysql_servers")
        .await
        .expect("select");
    let columns = result.columns().expect("a result set");
    assert!(columns
        .iter()
        .all(|c| c.column_type() == ColumnType::MYSQL_TYPE_VAR_STRING));
    let rows: Vec<Row> = result.collect().await.expect("rows");
    let values = rows[0].clone().unwrap();
    assert_eq!(
        values,
        [
            Value::Bytes(b"10".to_vec()),
            Value::Bytes(b"10.0.0.1".to_vec()),
            Value::Bytes(b"1".to_vec()),
            Value::NULL
        ]
    );
    assert!(!standin.crashed());
}

#[tokio::test]
async fn load_and_save_copy_servers_and_replication_hostgroups_between_layers() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    let servers = "SELECT hostgroup_id, status FROM";
    run(
        &mut conn,
        &[
            SERVER,
            "INSERT INTO mysql_replication_hostgroups (writer_hostgroup, reader_hostgroup) VALUES (10, 20)",
        ],
    )
    .await;
    assert!(standin
        .rows("SELECT * FROM runtime_mysql_servers")
        .is_empty());
    let started = Instant::now();
    run(&mut conn, &["LOAD MYSQL SERVERS TO RUNTIME"]).await;
    // Synchronous: runtime shows the change as soon as the OK arrives.
    assert_eq!(
        standin.rows(&format!("{servers} runtime_mysql_servers")),
        strings(&[&["10", "ONLINE"]])
    );
    assert_eq!(
        standin.rows("SELECT writer_hostgroup, reader_hostgroup, check_type FROM runtime_mysql_replication_hostgroups"),
        strings(&[&["10", "20", "read_only"]])
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(standin.rows("SELECT * FROM disk.mysql_servers").is_empty());

    run(&mut conn, &["SAVE MYSQL SERVERS TO DISK"]).await;
    assert_eq!(
        standin.rows(&format!("{servers} disk.mysql_servers")),
        strings(&[&["10", "ONLINE"]])
    );
    assert_eq!(
        standin
            .rows("SELECT * FROM disk.mysql_replication_hostgroups")
            .len(),
        1
    );

    // FROM DISK reaches memory only.
    run(
        &mut conn,
        &[
            "UPDATE mysql_servers SET status='SHUNNED'",
            "DELETE FROM mysql_replication_hostgroups",
            "LOAD MYSQL SERVERS TO RUNTIME",
            "LOAD MYSQL SERVERS FROM DISK",
        ],
    )
    .await;
    assert_eq!(
        standin.rows(&format!("{servers} mysql_servers")),
        strings(&[&["10", "ONLINE"]])
    );
    assert_eq!(
        standin
            .rows("SELECT * FROM mysql_replication_hostgroups")
            .len(),
        1
    );
    assert_eq!(
        standin.rows(&format!("{servers} runtime_mysql_servers")),
        strings(&[&["10", "SHUNNED"]])
    );
    assert!(standin
        .rows("SELECT * FROM runtime_mysql_replication_hostgroups")
        .is_empty());

    // FROM RUNTIME copies runtime (and what the monitor did there) back to memory.
    standin.execute("UPDATE runtime_mysql_servers SET hostgroup_id=20");
    run(&mut conn, &["save mysql servers from runtime"]).await;
    assert_eq!(
        standin.rows(&format!("{servers} mysql_servers")),
        strings(&[&["20", "SHUNNED"]])
    );
    assert!(standin
        .rows("SELECT * FROM mysql_replication_hostgroups")
        .is_empty());
    assert!(!standin.crashed());
}

#[tokio::test]
async fn a_restart_reloads_memory_and_runtime_from_disk() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    run(
        &mut conn,
        &[
            SERVER,
            "SAVE MYSQL SERVERS TO DISK",
            "UPDATE mysql_servers SET weight=9",
            "LOAD MYSQL SERVERS TO RUNTIME",
        ],
    )
    .await;
    standin.restart_from_disk().await;
    assert!(
        conn.query_drop("SELECT 1").await.is_err(),
        "a restart drops client connections"
    );
    assert_eq!(
        standin.rows("SELECT weight FROM mysql_servers"),
        strings(&[&["1"]])
    );
    assert_eq!(
        standin.rows("SELECT weight FROM runtime_mysql_servers"),
        strings(&[&["1"]])
    );
    let mut conn = admin(&standin).await;
    let weight: Option<String> = conn
        .query_first("SELECT weight FROM runtime_mysql_servers")
        .await
        .expect("listening again");
    assert_eq!(weight.as_deref(), Some("1"));
    assert!(!standin.crashed());
}

#[tokio::test]
async fn bad_credentials_get_proxysql_access_denied() {
    let standin = standin().await;
    for (user, password) in [("admin", "wrong"), ("root", "admin")] {
        let opts = OptsBuilder::from_opts(standin.client_opts())
            .user(Some(user))
            .pass(Some(password));
        match Conn::new(opts).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!((e.code, e.state.as_str()), (1045, "28000"));
                assert_eq!(
                    e.message,
                    format!("ProxySQL Error: Access denied for user '{user}'@'127.0.0.1' (using password: YES)")
                );
            }
            other => panic!("{user}/{password} got in: {:?}", other.map(|c| c.id())),
        }
    }
    let custom = ProxySqlStandIn::start(Options {
        user: "radmin".into(),
        password: "s3cret".into(),
        ..Options::default()
    })
    .await;
    admin(&custom).await.ping().await.expect("custom account");
    assert!(!standin.crashed() && !custom.crashed());
}

#[tokio::test]
async fn tls_and_prepared_statements_are_refused() {
    let standin = standin().await;
    let tls = OptsBuilder::from_opts(standin.client_opts()).ssl_opts(Some(
        mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true),
    ));
    assert!(Conn::new(tls).await.is_err(), "TLS must be refused");
    let mut conn = admin(&standin).await;
    match conn.exec_drop("SELECT ?", (1,)).await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(
                (e.code, e.message.as_str()),
                (1045, "Command not supported")
            );
        }
        other => panic!("a prepared statement ran: {other:?}"),
    }
    conn.ping().await.expect("still usable");
    assert!(!standin.crashed());
}

#[tokio::test]
async fn down_refuses_connections_and_comes_back_on_the_same_port() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    run(&mut conn, &[SERVER]).await;
    standin.set_failure(Failure::Down).await;
    assert!(
        conn.query_drop("SELECT 1").await.is_err(),
        "open connections are closed"
    );
    assert!(!standin.listening(), "a Down stand-in listens no more");
    standin.set_failure(Failure::None).await;
    let mut conn = admin(&standin).await;
    let count: Option<String> = conn
        .query_first("SELECT COUNT(*) FROM mysql_servers")
        .await
        .expect("back, configuration intact");
    assert_eq!(count.as_deref(), Some("1"));
    assert!(!standin.crashed());
}

#[tokio::test]
async fn slow_delays_every_response() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    standin
        .set_failure(Failure::Slow(Duration::from_millis(300)))
        .await;
    let started = Instant::now();
    conn.query_drop("SELECT 1")
        .await
        .expect("slow, not failing");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let timed_out =
        tokio::time::timeout(Duration::from_millis(100), conn.query_drop("SELECT 1")).await;
    assert!(
        timed_out.is_err(),
        "a client timeout shorter than the delay fires"
    );
    standin.set_failure(Failure::None).await;
    let mut fresh = admin(&standin).await;
    let started = Instant::now();
    fresh.query_drop("SELECT 1").await.expect("fast again");
    assert!(started.elapsed() < Duration::from_millis(300));
    assert!(!standin.crashed());
}

#[tokio::test]
async fn error_mode_fails_every_statement_and_changes_nothing() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    standin.set_failure(Failure::Error).await;
    for sql in [SERVER, "SELECT 1", "LOAD MYSQL SERVERS TO RUNTIME"] {
        let (code, state, message) = server_error(&mut conn, sql).await;
        assert_eq!(
            (code, state.as_str(), message.as_str()),
            (1045, "28000", INJECTED_ERROR)
        );
    }
    assert!(standin.rows("SELECT * FROM mysql_servers").is_empty());
    standin.set_failure(Failure::None).await;
    run(&mut conn, &[SERVER]).await;
    assert!(!standin.crashed());
}

#[tokio::test]
async fn a_query_with_no_statement_answers_not_an_error_and_everything_goes_on() {
    // Measured on ProxySQL 2.7.1: each of these answers ERR 1045 (28000)
    // "ProxySQL Admin Error: not an error", and the admin keeps serving every connection.
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    let mut other = admin(&standin).await;
    for empty in ["", " ", "\n", "\t", "/* x */", "/* x */;", "-- x\n"] {
        let (code, state, message) = server_error(&mut conn, empty).await;
        assert_eq!(
            (code, state.as_str(), message.as_str()),
            (
                ADMIN_ERROR_CODE,
                ADMIN_SQLSTATE,
                "ProxySQL Admin Error: not an error"
            ),
            "{empty:?}"
        );
        let one: Option<String> = conn.query_first("SELECT 1").await.expect("same connection");
        assert_eq!(one.as_deref(), Some("1"), "{empty:?}");
        other.ping().await.expect("other connections are untouched");
    }
    // A leading empty statement is skipped, as SQLite skips it: the next one runs.
    let one: Option<String> = conn.query_first("; SELECT 1").await.expect("; SELECT 1");
    assert_eq!(one.as_deref(), Some("1"));
    assert!(!standin.crashed());
}

#[tokio::test]
async fn a_query_of_only_semicolons_crashes_it_like_proxysql_2_7_1() {
    // Measured on ProxySQL 2.7.1: SIGSEGV in admin_session_handler, every connection lost.
    for fatal in [";", "  ;  ", ";;", "; ;"] {
        let standin = standin().await;
        let mut conn = admin(&standin).await;
        let mut other = admin(&standin).await;
        assert!(!standin.crashed());
        assert!(
            conn.query_drop(fatal).await.is_err(),
            "{fatal:?} got an answer"
        );
        assert!(standin.crashed(), "{fatal:?}");
        assert!(
            other.query_drop("SELECT 1").await.is_err(),
            "every connection closes"
        );
        assert!(!standin.listening(), "it no longer listens");
        standin.set_failure(Failure::None).await;
        assert!(!standin.listening(), "only a restart revives it");
        standin.restart_from_disk().await;
        admin(&standin)
            .await
            .ping()
            .await
            .expect("a restart revives it");
        assert!(standin.crashed(), "the crash stays on record");
    }
}

#[tokio::test]
async fn load_to_runtime_leaves_offline_hard_rows_out_and_memory_and_disk_keep_them() {
    // Measured on ProxySQL 2.7.1 with no client connections: an OFFLINE_HARD row never
    // reaches runtime_mysql_servers, in any hostgroup; statuses arrive there upper case.
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    run(
        &mut conn,
        &[
            "INSERT INTO mysql_replication_hostgroups (writer_hostgroup, reader_hostgroup) VALUES (10, 20)",
            SERVER,
            "INSERT INTO mysql_servers (hostgroup_id, hostname, port, status) VALUES (20, '10.0.0.1', 3306, 'OFFLINE_HARD')",
            "INSERT INTO mysql_servers (hostgroup_id, hostname, port, status) VALUES (20, '10.0.0.2', 3306, 'offline_soft')",
            "INSERT INTO mysql_servers (hostgroup_id, hostname, port, status) VALUES (30, '10.0.0.3', 3306, 'offline_hard')",
            "LOAD MYSQL SERVERS TO RUNTIME",
            "SAVE MYSQL SERVERS TO DISK",
        ],
    )
    .await;
    let servers = "SELECT hostgroup_id, hostname, status FROM";
    let order = "ORDER BY hostgroup_id, hostname";
    let all = strings(&[
        &["10", "10.0.0.1", "ONLINE"],
        &["20", "10.0.0.1", "OFFLINE_HARD"],
        &["20", "10.0.0.2", "offline_soft"],
        &["30", "10.0.0.3", "offline_hard"],
    ]);
    let runtime = strings(&[
        &["10", "10.0.0.1", "ONLINE"],
        &["20", "10.0.0.2", "OFFLINE_SOFT"],
    ]);
    assert_eq!(
        standin.rows(&format!("{servers} runtime_mysql_servers {order}")),
        runtime
    );
    assert_eq!(
        standin.rows(&format!("{servers} mysql_servers {order}")),
        all
    );
    assert_eq!(
        standin.rows(&format!("{servers} disk.mysql_servers {order}")),
        all
    );
    // What a client reads through the admin, and after a restart from that disk.
    let seen: Vec<(String, String, String)> = conn
        .query(format!("{servers} runtime_mysql_servers {order}"))
        .await
        .expect("select runtime");
    assert_eq!(seen.len(), 2, "{seen:?}");
    standin.restart_from_disk().await;
    assert_eq!(
        standin.rows(&format!("{servers} runtime_mysql_servers {order}")),
        runtime
    );
    assert_eq!(
        standin.rows(&format!("{servers} mysql_servers {order}")),
        all
    );
}

#[tokio::test]
async fn a_slow_save_holds_every_other_admin_statement_until_it_is_done() {
    // Measured on ProxySQL 2.7.1 (one admin statement at a time, sql_query_global_mutex):
    // each of these, sent on another connection while a SAVE ran, answered only after it.
    const SAVE_DELAY: Duration = Duration::from_millis(500);
    let standin = ProxySqlStandIn::start(Options {
        save_delay: SAVE_DELAY,
        ..Options::default()
    })
    .await;
    let mut saver = admin(&standin).await;
    let mut other = admin(&standin).await;
    run(&mut other, &[SERVER, "LOAD MYSQL SERVERS TO RUNTIME"]).await;
    let started = Instant::now();
    run(&mut other, &["SAVE MYSQL SERVERS TO DISK"]).await;
    assert!(started.elapsed() >= SAVE_DELAY, "the SAVE itself is slow");
    run(&mut other, &["DELETE FROM disk.mysql_servers"]).await;

    let statements = [
        // Runs after the SAVE: sees its row on disk, and the runtime row.
        "SELECT (SELECT COUNT(*) FROM disk.mysql_servers), (SELECT COUNT(*) FROM runtime_mysql_servers)",
        // Runs after the SAVE: the weight it sets never reaches the disk copy.
        "UPDATE mysql_servers SET weight=weight+1",
        "LOAD MYSQL SERVERS TO RUNTIME",
        "SELECT hostgroup_id, hostname, status FROM runtime_mysql_servers",
        "SELECT 1",
    ];
    for statement in statements {
        let sent = standin.statements().len();
        let save_sent = Instant::now();
        let save = tokio::spawn(async move {
            saver
                .query_drop("SAVE MYSQL SERVERS TO DISK")
                .await
                .expect("SAVE");
            saver
        });
        eventually(PATIENCE, "the SAVE reaches the stand-in", || async {
            (standin.statements().len() > sent).then_some(())
        })
        .await;
        let rows: Vec<Row> = other.query(statement).await.expect(statement);
        assert!(
            save_sent.elapsed() >= SAVE_DELAY,
            "{statement} answered {:?} after the SAVE was sent, before it could be done",
            save_sent.elapsed()
        );
        saver = save.await.expect("the SAVE task");
        if statement.starts_with("SELECT (SELECT COUNT(*)") {
            let counts: (String, String) = mysql_async::from_row(rows[0].clone());
            assert_eq!(counts, ("1".to_string(), "1".to_string()));
        }
        if statement.starts_with("UPDATE") {
            assert_eq!(
                standin.rows("SELECT weight FROM mysql_servers"),
                strings(&[&["2"]])
            );
            assert_eq!(
                standin.rows("SELECT weight FROM disk.mysql_servers"),
                strings(&[&["1"]]),
                "the UPDATE ran after the SAVE that was under way"
            );
        }
    }
    assert!(!standin.crashed());
}

#[tokio::test]
async fn set_changes_proxysql_variables_and_ignores_session_settings() {
    let standin = standin().await;
    let mut conn = admin(&standin).await;
    run(
        &mut conn,
        &[
            "SET mysql-monitor_writer_is_also_reader='false'",
            "SET sql_mode=''",
            "SET SESSION wait_timeout=10",
        ],
    )
    .await;
    let value: Option<String> = conn
        .query_first("SELECT @@mysql-monitor_writer_is_also_reader")
        .await
        .expect("variable");
    assert_eq!(value.as_deref(), Some("false"));
    let tables: Vec<String> = conn.query("SHOW TABLES").await.expect("show tables");
    assert!(
        tables.contains(&"runtime_mysql_servers".to_string()),
        "{tables:?}"
    );
    assert!(!standin.crashed());
}

// ---------------------------------------------------------------------------------------
// The read_only monitor against real servers: node1 is a writable primary, node2 a
// read_only replica. Writer hostgroup 10, reader hostgroup 20.

on_every_flavor!(
    a_writable_server_offline_hard_only_as_writer_comes_back_as_writer,
    a_server_offline_hard_in_every_hostgroup_stays_out,
    a_read_only_server_loaded_as_writer_is_moved_to_the_readers,
    a_killed_writer_is_logged_at_every_check_and_taken_as_read_only_after_the_missed_checks,
    a_restart_from_a_stale_disk_config_is_rearranged_by_read_only_before_the_admin_answers,
);

const INTERVAL: Duration = Duration::from_millis(100);
const PATIENCE: Duration = Duration::from_secs(5);

async fn monitored(flavor: Flavor) -> (TestTopology, ProxySqlStandIn) {
    let topology = TestTopology::start(flavor, 1).await;
    let standin = ProxySqlStandIn::start(Options::default().with_monitor(
        topology.sandbox.user.clone(),
        topology.sandbox.password.clone(),
        INTERVAL,
    ))
    .await;
    (topology, standin)
}

/// Loads `rows` (hostgroup, node, status) and the pair (10, 20) into runtime.
async fn load(standin: &ProxySqlStandIn, topology: &TestTopology, rows: &[(u32, &str, &str)]) {
    let mut conn = admin(standin).await;
    run(
        &mut conn,
        &["INSERT INTO mysql_replication_hostgroups (writer_hostgroup, reader_hostgroup, comment) VALUES (10, 20, 't')"],
    )
    .await;
    for (hostgroup, node, status) in rows {
        let key = topology.key(node);
        run(
            &mut conn,
            &[format!(
                "INSERT INTO mysql_servers (hostgroup_id, hostname, port, status) VALUES ({hostgroup}, '{}', {}, '{status}')",
                key.host, key.port
            )
            .as_str()],
        )
        .await;
    }
    run(&mut conn, &["LOAD MYSQL SERVERS TO RUNTIME"]).await;
}

/// A node's status in a hostgroup of a layer (`mysql_servers`, `runtime_mysql_servers`).
fn status(
    standin: &ProxySqlStandIn,
    topology: &TestTopology,
    table: &str,
    hostgroup: u32,
    node: &str,
) -> Option<String> {
    let key = topology.key(node);
    standin
        .rows(&format!(
            "SELECT status FROM {table} WHERE hostgroup_id={hostgroup} AND hostname='{}' AND port={}",
            key.host, key.port
        ))
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
}

/// Successful read_only checks logged for a node.
fn checks(standin: &ProxySqlStandIn, topology: &TestTopology, node: &str) -> usize {
    let key = topology.key(node);
    standin
        .rows(&format!(
            "SELECT COUNT(*) FROM monitor.mysql_server_read_only_log WHERE hostname='{}' AND port={} AND error IS NULL",
            key.host, key.port
        ))[0][0]
        .as_deref()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn a_writable_server_offline_hard_only_as_writer_comes_back_as_writer(flavor: Flavor) {
    let (topology, standin) = monitored(flavor).await;
    load(
        &standin,
        &topology,
        &[
            (10, "node1", "OFFLINE_HARD"),
            (20, "node1", "ONLINE"),
            (20, "node2", "ONLINE"),
        ],
    )
    .await;
    let runtime = "runtime_mysql_servers";
    eventually(PATIENCE, "node1 back ONLINE as writer", || async {
        (status(&standin, &topology, runtime, 10, "node1").as_deref() == Some("ONLINE"))
            .then_some(())
    })
    .await;
    assert_eq!(
        status(&standin, &topology, runtime, 20, "node1").as_deref(),
        Some("ONLINE")
    );
    assert_eq!(
        status(&standin, &topology, runtime, 10, "node2"),
        None,
        "a read_only server never becomes writer"
    );
    // In runtime only: memory still says what was loaded.
    assert_eq!(
        status(&standin, &topology, "mysql_servers", 10, "node1").as_deref(),
        Some("OFFLINE_HARD")
    );
    assert!(!standin.crashed());
}

async fn a_server_offline_hard_in_every_hostgroup_stays_out(flavor: Flavor) {
    let (topology, standin) = monitored(flavor).await;
    load(
        &standin,
        &topology,
        &[
            (10, "node1", "OFFLINE_HARD"),
            (20, "node1", "OFFLINE_HARD"),
            (20, "node2", "ONLINE"),
        ],
    )
    .await;
    // The monitor is demonstrably at work (on node2) for several intervals...
    eventually(PATIENCE, "five read_only checks of node2", || async {
        (checks(&standin, &topology, "node2") >= 5).then_some(())
    })
    .await;
    // ...and node1, fenced everywhere, is neither checked nor moved: it is not in runtime
    // at all (OFFLINE_HARD rows stay in memory only), and stays out.
    let runtime = "runtime_mysql_servers";
    assert_eq!(checks(&standin, &topology, "node1"), 0);
    assert_eq!(status(&standin, &topology, runtime, 10, "node1"), None);
    assert_eq!(status(&standin, &topology, runtime, 20, "node1"), None);
    assert_eq!(
        status(&standin, &topology, "mysql_servers", 10, "node1").as_deref(),
        Some("OFFLINE_HARD")
    );
    assert_eq!(
        status(&standin, &topology, runtime, 20, "node2").as_deref(),
        Some("ONLINE")
    );
    assert!(!standin.crashed());
}

async fn a_read_only_server_loaded_as_writer_is_moved_to_the_readers(flavor: Flavor) {
    let (topology, standin) = monitored(flavor).await;
    load(
        &standin,
        &topology,
        &[(10, "node1", "ONLINE"), (10, "node2", "ONLINE")],
    )
    .await;
    let runtime = "runtime_mysql_servers";
    eventually(
        PATIENCE,
        "node2 moved out of the writer hostgroup",
        || async {
            status(&standin, &topology, runtime, 10, "node2")
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        status(&standin, &topology, runtime, 20, "node2").as_deref(),
        Some("ONLINE")
    );
    assert_eq!(
        status(&standin, &topology, runtime, 10, "node1").as_deref(),
        Some("ONLINE")
    );
    assert_eq!(
        status(&standin, &topology, runtime, 20, "node1"),
        None,
        "a writer already ONLINE is left alone: no reader row is added"
    );
    assert_eq!(
        status(&standin, &topology, "mysql_servers", 10, "node2").as_deref(),
        Some("ONLINE"),
        "memory keeps what was loaded"
    );
    // The next LOAD puts it back as writer, until the next check.
    let mut conn = admin(&standin).await;
    run(&mut conn, &["LOAD MYSQL SERVERS TO RUNTIME"]).await;
    assert_eq!(
        status(&standin, &topology, runtime, 10, "node2").as_deref(),
        Some("ONLINE")
    );
    eventually(PATIENCE, "node2 moved again", || async {
        status(&standin, &topology, runtime, 10, "node2")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(!standin.crashed());
}

/// Read_only checks logged for a node that failed: (read_only, success_time_us, error).
fn failed_checks(
    standin: &ProxySqlStandIn,
    host: &str,
    port: u16,
) -> Vec<(Option<String>, Option<String>, Option<String>)> {
    standin
        .rows(&format!(
            "SELECT read_only, success_time_us, error FROM monitor.mysql_server_read_only_log WHERE hostname='{host}' AND port={port} AND error IS NOT NULL ORDER BY time_start_us"
        ))
        .into_iter()
        .map(|row| (row[0].clone(), row[1].clone(), row[2].clone()))
        .collect()
}

fn count(standin: &ProxySqlStandIn, sql: &str) -> usize {
    standin.rows(sql)[0][0]
        .as_deref()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn a_killed_writer_is_logged_at_every_check_and_taken_as_read_only_after_the_missed_checks(
    flavor: Flavor,
) {
    // Measured on ProxySQL 2.7.1 (node killed with SIGKILL, no client traffic): the check
    // on the kept connection logs "Lost connection to server during query", every later
    // one "timeout on creating new connection: Can't connect to server on '127.0.0.1'
    // (115)"; after mysql-monitor_read_only_max_timeout_count (3) of those the writer is
    // taken as read_only=1 and lands ONLINE in the reader hostgroup.
    let (mut topology, standin) = monitored(flavor).await;
    load(
        &standin,
        &topology,
        &[(10, "node1", "ONLINE"), (20, "node2", "ONLINE")],
    )
    .await;
    eventually(
        PATIENCE,
        "a check of node1 over a kept connection",
        || async { (checks(&standin, &topology, "node1") >= 2).then_some(()) },
    )
    .await;
    topology.sandbox.kill("node1").expect("kill node1");
    let runtime = "runtime_mysql_servers";
    eventually(PATIENCE, "node1 out of the writer hostgroup", || async {
        status(&standin, &topology, runtime, 10, "node1")
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        status(&standin, &topology, runtime, 20, "node1").as_deref(),
        Some("ONLINE"),
        "assumed read_only=1: a reader"
    );
    assert_eq!(
        status(&standin, &topology, runtime, 20, "node2").as_deref(),
        Some("ONLINE")
    );
    let key = topology.key("node1");
    let failed = failed_checks(&standin, &key.host, key.port);
    let refused = format!(
        "timeout on creating new connection: Can't connect to server on '{}' (115)",
        key.host
    );
    assert!(failed.len() >= 4, "{failed:?}");
    assert_eq!(
        failed[0],
        (
            None,
            Some("0".into()),
            Some("Lost connection to server during query".into())
        )
    );
    for check in &failed[1..] {
        assert_eq!(check, &(None, Some("0".into()), Some(refused.clone())));
    }
    assert_eq!(
        status(&standin, &topology, "mysql_servers", 10, "node1").as_deref(),
        Some("ONLINE"),
        "in runtime only"
    );
}

async fn a_restart_from_a_stale_disk_config_is_rearranged_by_read_only_before_the_admin_answers(
    flavor: Flavor,
) {
    // Measured on ProxySQL 2.7.1: the first read_only check runs ~0.28 s after start, the
    // admin answers ~0.57 s after start, and by then a fenced old primary that the disk
    // has ONLINE as writer is ONLINE in the reader hostgroup only.
    let topology = TestTopology::start(flavor, 1).await;
    let standin = ProxySqlStandIn::start(Options::default().with_monitor(
        topology.sandbox.user.clone(),
        topology.sandbox.password.clone(),
        Duration::from_secs(1),
    ))
    .await;
    // A failover since the disk copy was saved: node1 fenced, node2 promoted.
    topology.writable("node1", false).await;
    topology.writable("node2", true).await;
    for (hostgroup, node) in [(10, "node1"), (20, "node2")] {
        let key = topology.key(node);
        standin.execute(&format!(
            "INSERT INTO disk.mysql_servers (hostgroup_id, hostname, port) VALUES ({hostgroup}, '{}', {})",
            key.host, key.port
        ));
    }
    standin.execute(
        "INSERT INTO disk.mysql_replication_hostgroups (writer_hostgroup, reader_hostgroup) VALUES (10, 20)",
    );
    standin.restart_from_disk().await;

    // Nothing awaited: this is what the first client after the restart finds.
    let runtime = "runtime_mysql_servers";
    assert_eq!(
        status(&standin, &topology, runtime, 10, "node1"),
        None,
        "the fenced old primary left the writer hostgroup"
    );
    assert_eq!(
        status(&standin, &topology, runtime, 20, "node1").as_deref(),
        Some("ONLINE")
    );
    assert_eq!(
        status(&standin, &topology, runtime, 10, "node2").as_deref(),
        Some("ONLINE"),
        "the writable one writes"
    );
    assert_eq!(
        status(&standin, &topology, runtime, 20, "node2").as_deref(),
        Some("ONLINE"),
        "and reads too: mysql-monitor_writer_is_also_reader=true"
    );
    // One check each, the restart's own, not the next interval's.
    assert_eq!(checks(&standin, &topology, "node1"), 1);
    assert_eq!(checks(&standin, &topology, "node2"), 1);
    assert_eq!(
        status(&standin, &topology, "mysql_servers", 10, "node1").as_deref(),
        Some("ONLINE"),
        "memory keeps the stale disk copy"
    );
    let mut conn = admin(&standin).await;
    let seen: Vec<(String, String)> = conn
        .query("SELECT hostgroup_id, status FROM runtime_mysql_servers ORDER BY hostgroup_id")
        .await
        .expect("runtime through the admin");
    assert_eq!(
        seen,
        [
            ("10".to_string(), "ONLINE".to_string()),
            ("20".to_string(), "ONLINE".to_string()),
            ("20".to_string(), "ONLINE".to_string())
        ]
    );
}

#[tokio::test]
async fn a_dead_backend_is_shunned_after_the_missed_pings_and_no_longer_read_only_checked() {
    // Measured on ProxySQL 2.7.1 with no client traffic: a port that refuses is logged at
    // every read_only check and taken as read_only=1 after 3; the ping monitor pings every
    // server in runtime (any hostgroup), and after mysql-monitor_ping_max_failures (3)
    // failed pings shuns it everywhere and stops its read_only checks. It stays SHUNNED
    // with no traffic; a LOAD resets it to memory's status until the next ping round.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let standin =
        ProxySqlStandIn::start(Options::default().with_monitor("monitor", "monitor", INTERVAL))
            .await;
    let mut conn = admin(&standin).await;
    run(
        &mut conn,
        &[
            "INSERT INTO mysql_replication_hostgroups (writer_hostgroup, reader_hostgroup) VALUES (10, 20)",
            &format!("INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES (10, '127.0.0.1', {dead})"),
            // A hostgroup of no pair: pinged, never read_only-checked.
            &format!("INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES (30, '127.0.0.1', {dead})"),
            "LOAD MYSQL SERVERS TO RUNTIME",
        ],
    )
    .await;
    let runtime = "SELECT hostgroup_id, status FROM runtime_mysql_servers ORDER BY hostgroup_id";
    eventually(PATIENCE, "the dead writer taken as read_only=1", || async {
        (standin.rows(runtime) == strings(&[&["20", "ONLINE"], &["30", "ONLINE"]])).then_some(())
    })
    .await;
    let failed = failed_checks(&standin, "127.0.0.1", dead);
    let refused =
        "timeout on creating new connection: Can't connect to server on '127.0.0.1' (115)";
    assert!(failed.len() >= 3, "{failed:?}");
    for check in &failed {
        assert_eq!(check, &(None, Some("0".into()), Some(refused.into())));
    }
    assert_eq!(
        count(
            &standin,
            "SELECT COUNT(*) FROM monitor.mysql_server_read_only_log WHERE error IS NULL"
        ),
        0
    );

    // Pings every 8 s by default: make them frequent. Then 3 failed pings shun it.
    run(&mut conn, &["SET mysql-monitor_ping_interval=100"]).await;
    eventually(PATIENCE, "shunned in every hostgroup", || async {
        (standin.rows(runtime) == strings(&[&["20", "SHUNNED"], &["30", "SHUNNED"]])).then_some(())
    })
    .await;
    let pings = "SELECT COUNT(*) FROM monitor.mysql_server_ping_log";
    let failed_pings = "SELECT COUNT(*) FROM monitor.mysql_server_ping_log WHERE ping_success_time_us=0 AND ping_error='Can''t connect to server on ''127.0.0.1'' (115)'";
    assert!(count(&standin, pings) >= 3);
    assert_eq!(count(&standin, pings), count(&standin, failed_pings));

    // No read_only check while its pings fail.
    let checks = "SELECT COUNT(*) FROM monitor.mysql_server_read_only_log";
    let pinged = count(&standin, pings);
    eventually(PATIENCE, "two more ping rounds", || async {
        (count(&standin, pings) >= pinged + 2).then_some(())
    })
    .await;
    let checked = count(&standin, checks);
    eventually(PATIENCE, "five more ping rounds", || async {
        (count(&standin, pings) >= pinged + 5).then_some(())
    })
    .await;
    assert_eq!(count(&standin, checks), checked, "read_only checks stopped");

    // A LOAD puts memory's rows back as they are (ONLINE, writer included); the next ping
    // round shuns them again, and the read_only monitor, still off, moves nothing.
    run(&mut conn, &["LOAD MYSQL SERVERS TO RUNTIME"]).await;
    assert_eq!(
        standin.rows(runtime),
        strings(&[&["10", "ONLINE"], &["30", "ONLINE"]])
    );
    eventually(PATIENCE, "shunned again", || async {
        (standin.rows(runtime) == strings(&[&["10", "SHUNNED"], &["30", "SHUNNED"]])).then_some(())
    })
    .await;
    assert_eq!(count(&standin, checks), checked);
}
