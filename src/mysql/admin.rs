//! The statements that change replication, in each flavour's words: stop a replica's IO
//! thread, wait until it has applied what it received, promote, re-point, attach a new
//! replica, set read_only. Each is one small function over an open connection; the
//! recovery executor decides the order, and reaches them only through `edge` (the
//! `AdminSession` a `Connection` is), behind the lease gate. GTID auto-positioning
//! everywhere (MySQL `SOURCE_AUTO_POSITION=1` with `GET_SOURCE_PUBLIC_KEY=1`, since
//! caching_sha2_password needs the key or TLS on a freshly promoted source; MariaDB
//! `MASTER_USE_GTID=slave_pos`).

use super::parse::{self, TextRow};
use super::{dialect, Connection, MysqlError};
use crate::config::Secret;
use crate::topology::{InstanceKey, IoThreadState, ReplicationStatus, ServerFlavor};
use std::time::{Duration, Instant};

/// The account a new replication link logs in with.
#[derive(Clone, Debug)]
pub struct ReplicationAccount {
    pub user: String,
    pub password: Secret,
    /// Whether the links made with this account use TLS (`recovery.replication_tls`).
    pub tls: ReplicationTls,
}

/// `recovery.replication_tls`: whether a replication link pointsman creates uses TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationTls {
    /// A link pointsman creates or re-points uses TLS exactly when its source offers
    /// it — on MySQL, which would otherwise require TLS of a source that has none
    /// (error 2026); MariaDB links keep their own setting.
    #[default]
    Auto,
    /// Every link pointsman creates or re-points requires TLS.
    Required,
    /// No link pointsman creates or re-points uses TLS.
    Off,
}

/// What one CHANGE says about TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkTls {
    /// Nothing: the link keeps its setting (a new link gets the server's default).
    Keep,
    On,
    Off,
}

impl LinkTls {
    /// The CHANGE option, with its leading comma; empty for `Keep`.
    fn option(self, flavor: ServerFlavor) -> &'static str {
        match (self, flavor) {
            (LinkTls::Keep, _) => "",
            (LinkTls::On, ServerFlavor::Mysql) => ", SOURCE_SSL=1",
            (LinkTls::Off, ServerFlavor::Mysql) => ", SOURCE_SSL=0",
            (LinkTls::On, ServerFlavor::Mariadb) => ", MASTER_SSL=1",
            (LinkTls::Off, ServerFlavor::Mariadb) => ", MASTER_SSL=0",
        }
    }
}

/// Whether the server offers TLS to the clients that connect to it, replicas included:
/// MySQL with a non-empty `tls_version` and a certificate loaded, MariaDB with
/// `have_ssl = YES`.
pub async fn offers_tls(conn: &mut Connection) -> Result<bool, MysqlError> {
    let query = match conn.flavor {
        ServerFlavor::Mysql => {
            "SELECT @@GLOBAL.tls_version <> '' AND IFNULL((SELECT VARIABLE_VALUE FROM performance_schema.global_status WHERE VARIABLE_NAME = 'Current_tls_cert'), '') <> '' AS tls"
        }
        ServerFlavor::Mariadb => "SELECT @@GLOBAL.have_ssl = 'YES' AS tls",
    };
    let rows = conn.query(query).await?;
    Ok(rows
        .first()
        .and_then(|row| row.get("tls").cloned().flatten())
        .is_some_and(|value| value == "1"))
}

/// A string literal for SQL: quotes and backslashes escaped.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// How long a STOP REPLICA may take. Not the query timeout: MySQL waits about 2 s (a
/// round of its kill-and-wait loop) to stop an IO thread that is connecting to a silent
/// source — exactly the state the replicas of a cut-off primary are in.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Stops replication (`what`: "" for both threads, " IO_THREAD" for receiving only).
async fn stop(conn: &mut Connection, what: &str) -> Result<(), MysqlError> {
    let statement = format!("{}{what}", stop_replica(conn.flavor));
    conn.query_for(&statement, STOP_TIMEOUT).await.map(|_| ())
}

fn stop_replica(flavor: ServerFlavor) -> &'static str {
    match flavor {
        ServerFlavor::Mysql => "STOP REPLICA",
        ServerFlavor::Mariadb => "STOP SLAVE",
    }
}

/// Starts both replication threads through `conn`; what its last stop noted as
/// received no longer holds.
async fn start(conn: &mut Connection) -> Result<(), MysqlError> {
    conn.received_when_stopped = None;
    conn.execute(start_replica(conn.flavor)).await
}

fn start_replica(flavor: ServerFlavor) -> &'static str {
    match flavor {
        ServerFlavor::Mysql => "START REPLICA",
        ServerFlavor::Mariadb => "START SLAVE",
    }
}

/// The replica status of the default channel, if the instance is a replica.
pub async fn replica_status(
    conn: &mut Connection,
) -> Result<Option<ReplicationStatus>, MysqlError> {
    let statement = dialect::for_flavor(conn.flavor).replica_status;
    let rows = conn.query(statement).await?;
    status_in(conn, &rows)
}

/// The default channel's status in `rows`, the answer to the flavour's replica status
/// statement.
fn status_in(conn: &Connection, rows: &[TextRow]) -> Result<Option<ReplicationStatus>, MysqlError> {
    parse::source_channel(rows)
        .map(parse::replica_status)
        .transpose()
        .map_err(|e| MysqlError::Unexpected {
            instance: conn.key.clone(),
            statement: dialect::for_flavor(conn.flavor).replica_status.to_string(),
            message: e.to_string(),
        })
}

/// Stops receiving from the source, so nothing new arrives while a recovery decides,
/// and notes what the replica had received by then (read in the same round trip) for
/// `wait_relay_applied`.
pub async fn stop_io_thread(conn: &mut Connection) -> Result<(), MysqlError> {
    let stop = format!("{} IO_THREAD", stop_replica(conn.flavor));
    let status = dialect::for_flavor(conn.flavor).replica_status;
    let sets = conn
        .query_all_within(&[&stop, status], STOP_TIMEOUT)
        .await?;
    let received = status_in(conn, sets.last().map_or(&[][..], Vec::as_slice))?;
    conn.received_when_stopped = received.map(|status| status.received_gtids);
    Ok(())
}

/// Stops both replication threads (an operator's "stop replication").
pub async fn stop_replication(conn: &mut Connection) -> Result<(), MysqlError> {
    stop(conn, "").await
}

/// Starts both replication threads.
pub async fn start_replication(conn: &mut Connection) -> Result<(), MysqlError> {
    start(conn).await
}

/// Waits until the replica has applied everything it received (its relay log), or fails
/// after `timeout`.
pub async fn wait_relay_applied(
    conn: &mut Connection,
    timeout: Duration,
) -> Result<(), MysqlError> {
    // Noted by this session's stop of the IO thread, if it made one: nothing arrived
    // since, so the server need not be asked again.
    let received = match conn.received_when_stopped.take() {
        Some(received) => received,
        None => match replica_status(conn).await? {
            Some(status) => status.received_gtids,
            None => return Ok(()),
        },
    };
    wait_for_gtids(conn, &received, timeout).await
}

/// Waits until the instance has executed `gtids` (a MySQL set or a MariaDB position).
pub async fn wait_for_gtids(
    conn: &mut Connection,
    gtids: &str,
    timeout: Duration,
) -> Result<(), MysqlError> {
    if gtids.trim().is_empty() {
        return Ok(());
    }
    let seconds = timeout.as_secs().max(1);
    let statement = match conn.flavor {
        ServerFlavor::Mysql => format!(
            "SELECT WAIT_FOR_EXECUTED_GTID_SET({}, {seconds}) AS r",
            quote(gtids)
        ),
        ServerFlavor::Mariadb => {
            format!("SELECT MASTER_GTID_WAIT({}, {seconds}) AS r", quote(gtids))
        }
    };
    let rows = conn
        .query_for(&statement, timeout + Duration::from_secs(2))
        .await?;
    let result = rows.first().and_then(|row| row.get("r").cloned().flatten());
    if result.as_deref() == Some("0") {
        Ok(())
    } else {
        Err(MysqlError::Unexpected {
            instance: conn.key.clone(),
            statement,
            message: format!("did not reach {gtids} within {seconds}s"),
        })
    }
}

/// Everything the instance wrote to its binlog — what its replicas receive — in the form
/// `wait_for_gtids` takes. MariaDB: `gtid_binlog_pos`, which MASTER_GTID_WAIT compares a
/// replica's `gtid_slave_pos` with; `gtid_current_pos` may carry a domain from the
/// instance's own `gtid_slave_pos` that never reached its binlog, and waiting for a
/// domain the replica never sees lasts until the timeout.
pub async fn written_gtids(conn: &mut Connection) -> Result<String, MysqlError> {
    let statement = match conn.flavor {
        ServerFlavor::Mysql => "SELECT @@GLOBAL.gtid_executed AS g",
        ServerFlavor::Mariadb => "SELECT @@GLOBAL.gtid_binlog_pos AS g",
    };
    let rows: Vec<TextRow> = conn.query(statement).await?;
    Ok(rows
        .first()
        .and_then(|row| row.get("g").cloned().flatten())
        .unwrap_or_default()
        .split_whitespace()
        .collect())
}

/// Makes the instance a standalone writable primary: replication stopped and forgotten,
/// read_only (and MySQL's super_read_only) OFF.
pub async fn promote(conn: &mut Connection) -> Result<(), MysqlError> {
    let flavor = conn.flavor;
    let reset = match flavor {
        ServerFlavor::Mysql => "RESET REPLICA ALL",
        ServerFlavor::Mariadb => "RESET SLAVE ALL",
    };
    // One round trip; a failed stop leaves the replication settings as they were (the
    // server runs no statement after a failed one).
    conn.query_all_within(&[stop_replica(flavor), reset], STOP_TIMEOUT)
        .await?;
    conn.received_when_stopped = None;
    crate::crash_point!("promote-after-reset");
    set_read_only(conn, false).await
}

/// read_only ON (with super_read_only on MySQL, so even SUPER cannot write) or OFF.
///
/// One statement each way, so no reader and no crash of the agent can find the server
/// between two states: on MySQL, turning super_read_only ON also turns read_only ON, and
/// turning read_only OFF also turns super_read_only OFF (WL#6799, FR2 and FR3).
pub async fn set_read_only(conn: &mut Connection, on: bool) -> Result<(), MysqlError> {
    conn.execute(match (conn.flavor, on) {
        (ServerFlavor::Mysql, true) => "SET GLOBAL super_read_only=ON",
        (ServerFlavor::Mariadb, true) => "SET GLOBAL read_only=ON",
        (_, false) => "SET GLOBAL read_only=OFF",
    })
    .await
}

/// Semi-sync on the source side and the replica side, ON or OFF, under the names this
/// server has (MySQL's semisync_source/semisync_replica plugins say source/replica, the
/// older plugins and MariaDB master/slave). A server without semi-sync (MySQL without
/// its plugins) is an error that says how to load them.
pub async fn set_semi_sync(
    conn: &mut Connection,
    source: bool,
    replica: bool,
) -> Result<(), MysqlError> {
    let names: Vec<String> = conn
        .query(crate::mysql::dialect::SEMI_SYNC_VARIABLES)
        .await?
        .iter()
        .filter_map(|row| row.get("Variable_name").cloned().flatten())
        .filter(|name| name.ends_with("_enabled"))
        .collect();
    let find = |words: [&str; 2]| {
        names
            .iter()
            .find(|n| words.iter().any(|w| n.contains(w)))
            .cloned()
    };
    let (Some(source_name), Some(replica_name)) = (
        find(["_source_", "_master_"]),
        find(["_replica_", "_slave_"]),
    ) else {
        return Err(MysqlError::Unexpected {
            instance: conn.key.clone(),
            statement: crate::mysql::dialect::SEMI_SYNC_VARIABLES.to_string(),
            message: "semi-sync is not available on this server: load its plugins (MySQL: INSTALL PLUGIN rpl_semi_sync_source SONAME 'semisync_source.so' and rpl_semi_sync_replica SONAME 'semisync_replica.so')".into(),
        });
    };
    let switch = |on: bool| if on { "ON" } else { "OFF" };
    conn.execute(&format!("SET GLOBAL {replica_name}={}", switch(replica)))
        .await?;
    conn.execute(&format!("SET GLOBAL {source_name}={}", switch(source)))
        .await
}

/// MySQL: persists read_only and super_read_only ON for the server's next start,
/// leaving the running values as they are (a primary stays writable until it restarts).
/// Needs SYSTEM_VARIABLES_ADMIN and PERSIST_RO_VARIABLES_ADMIN. MariaDB cannot persist a
/// variable: nothing is done there.
pub async fn persist_read_only(conn: &mut Connection) -> Result<(), MysqlError> {
    if conn.flavor == ServerFlavor::Mysql {
        conn.execute("SET PERSIST_ONLY read_only=ON, super_read_only=ON")
            .await?;
    }
    Ok(())
}

/// A heartbeat period as CHANGE takes it: seconds, to the millisecond.
fn heartbeat_seconds(period: Duration) -> String {
    format!("{:.3}", period.as_secs_f64())
}

/// Points an existing replica at a new source, keeping its credentials and its heartbeat
/// period (a CHANGE of the host resets the period to the server's default, which can
/// make a cut-off primary slow to see), and starts it. `heartbeat` is the period set
/// when the replica has none.
pub async fn repoint(
    conn: &mut Connection,
    source: &InstanceKey,
    heartbeat: Duration,
    tls: LinkTls,
) -> Result<(), MysqlError> {
    let flavor = conn.flavor;
    let kept = replica_status(conn)
        .await?
        .and_then(|status| status.heartbeat_period)
        .filter(|seconds| *seconds > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(heartbeat);
    stop(conn, "").await?;
    let change = match flavor {
        ServerFlavor::Mysql => format!(
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST={}, SOURCE_PORT={}, SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1, SOURCE_HEARTBEAT_PERIOD={}{}",
            quote(&source.host),
            source.port,
            heartbeat_seconds(kept),
            tls.option(flavor)
        ),
        ServerFlavor::Mariadb => format!(
            "CHANGE MASTER TO MASTER_HOST={}, MASTER_PORT={}, MASTER_USE_GTID=slave_pos, MASTER_HEARTBEAT_PERIOD={}{}",
            quote(&source.host),
            source.port,
            heartbeat_seconds(kept),
            tls.option(flavor)
        ),
    };
    conn.execute(&change).await?;
    start(conn).await
}

/// Makes an instance that is not a replica (an old primary) replicate from `source`
/// with the given account, hearing a heartbeat every `heartbeat`.
pub async fn attach(
    conn: &mut Connection,
    source: &InstanceKey,
    account: &ReplicationAccount,
    heartbeat: Duration,
    tls: LinkTls,
) -> Result<(), MysqlError> {
    let flavor = conn.flavor;
    stop(conn, "").await?;
    let change = match flavor {
        ServerFlavor::Mysql => format!(
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST={}, SOURCE_PORT={}, SOURCE_USER={}, SOURCE_PASSWORD={}, \
             SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1, SOURCE_CONNECT_RETRY=1, SOURCE_RETRY_COUNT=86400, \
             SOURCE_HEARTBEAT_PERIOD={}{}",
            quote(&source.host),
            source.port,
            quote(&account.user),
            quote(account.password.expose()),
            heartbeat_seconds(heartbeat),
            tls.option(flavor)
        ),
        ServerFlavor::Mariadb => {
            // An old primary's own transactions are in its binlog, not in gtid_slave_pos:
            // without this it would ask its new source for them again.
            conn.execute("SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos").await?;
            format!(
                "CHANGE MASTER TO MASTER_HOST={}, MASTER_PORT={}, MASTER_USER={}, MASTER_PASSWORD={}, \
                 MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD={}{}",
                quote(&source.host),
                source.port,
                quote(&account.user),
                quote(account.password.expose()),
                heartbeat_seconds(heartbeat),
                tls.option(flavor)
            )
        }
    };
    conn.execute(&change)
        .await
        .map_err(|e| redact(e, account))?;
    start(conn).await
}

/// A statement that carried the replication password must not put it in an error.
fn redact(error: MysqlError, account: &ReplicationAccount) -> MysqlError {
    match error {
        MysqlError::Query {
            instance, message, ..
        } => MysqlError::Query {
            instance,
            statement: "CHANGE REPLICATION SOURCE / CHANGE MASTER (credentials hidden)".into(),
            message: message.replace(account.password.expose(), "<redacted>"),
        },
        MysqlError::Timeout {
            instance, timeout, ..
        } => MysqlError::Timeout {
            instance,
            what: "CHANGE REPLICATION SOURCE / CHANGE MASTER (credentials hidden)".into(),
            timeout,
        },
        other => other,
    }
}

/// Waits until both replication threads run, or fails with the replica's own error.
pub async fn verify_replicating(
    conn: &mut Connection,
    timeout: Duration,
) -> Result<(), MysqlError> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = replica_status(conn).await?;
        let why = match &status {
            None => "it is not a replica".to_string(),
            Some(s) if s.io_running == IoThreadState::Yes && s.sql_running => return Ok(()),
            Some(s) if s.last_io_errno != 0 => {
                format!("IO error {}: {}", s.last_io_errno, s.last_io_error)
            }
            Some(s) if s.last_sql_errno != 0 => {
                format!("SQL error {}: {}", s.last_sql_errno, s.last_sql_error)
            }
            Some(s) => format!(
                "IO thread {:?}, SQL thread running: {}",
                s.io_running, s.sql_running
            ),
        };
        if Instant::now() >= deadline {
            return Err(MysqlError::Unexpected {
                instance: conn.key.clone(),
                statement: "SHOW REPLICA STATUS".into(),
                message: format!("not replicating after {}s: {why}", timeout.as_secs()),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_periods_keep_milliseconds() {
        assert_eq!(heartbeat_seconds(Duration::from_secs(1)), "1.000");
        assert_eq!(heartbeat_seconds(Duration::from_millis(250)), "0.250");
    }

    #[test]
    fn literals_are_escaped() {
        assert_eq!(quote("db1"), "'db1'");
        assert_eq!(quote("o'brien\\x"), "'o\\'brien\\\\x'");
    }
}
