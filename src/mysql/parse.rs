//! Turns the rows that replication-status statements return into model types. Pure:
//! rows arrive as column name → text (`None` for SQL NULL), whichever flavour sent
//! them, so the same code reads MySQL's `Replica_*`/`Source_*` columns and MariaDB's
//! `Slave_*`/`Master_*` ones, and it is tested on raw output captured from real servers.

use crate::topology::gtid::{GtidSet, MariadbGtidList};
use crate::topology::{GtidState, InstanceKey, IoThreadState, ReplicationStatus, SemiSync};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One result row: each column's value as text (`None` for SQL NULL), found by the
/// column's name. The rows of one result set share their names, so that reading a
/// 55-column `SHOW REPLICA STATUS` every second per instance copies no name; a name
/// that appears twice reads as its last column.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextRow {
    names: Arc<Vec<String>>,
    values: Vec<Option<String>>,
}

impl TextRow {
    /// An empty row (columns are added with `insert`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A row of `values`, one per name of `names`, in order.
    pub fn with_names(names: Arc<Vec<String>>, values: Vec<Option<String>>) -> Self {
        debug_assert_eq!(names.len(), values.len(), "one value per column");
        TextRow { names, values }
    }

    /// The value of column `name`, if the row has that column.
    pub fn get(&self, name: &str) -> Option<&Option<String>> {
        self.position(name).map(|at| &self.values[at])
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Option<String>> {
        self.position(name).map(|at| &mut self.values[at])
    }

    /// Sets column `name` (added at the end when the row has no such column).
    pub fn insert(&mut self, name: String, value: Option<String>) {
        match self.position(&name) {
            Some(at) => self.values[at] = value,
            None => {
                Arc::make_mut(&mut self.names).push(name);
                self.values.push(value);
            }
        }
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().rposition(|column| column == name)
    }
}

impl<const N: usize> From<[(String, Option<String>); N]> for TextRow {
    fn from(columns: [(String, Option<String>); N]) -> Self {
        columns.into_iter().collect()
    }
}

impl FromIterator<(String, Option<String>)> for TextRow {
    fn from_iter<I: IntoIterator<Item = (String, Option<String>)>>(columns: I) -> Self {
        let mut row = TextRow::new();
        for (name, value) in columns {
            row.insert(name, value);
        }
        row
    }
}

/// A value the server sent that pointsman cannot read, with the column it came in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {problem}")]
pub struct ParseError {
    pub column: String,
    pub problem: String,
}

fn problem(column: &str, problem: impl Into<String>) -> ParseError {
    ParseError {
        column: column.to_string(),
        problem: problem.into(),
    }
}

/// Reads a column under the first of its names that the row has (MySQL's new name,
/// then MariaDB's old one).
fn text<'a>(row: &'a TextRow, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| row.get(name))
        .and_then(|value| value.as_deref())
}

fn required<'a>(row: &'a TextRow, names: &[&str]) -> Result<&'a str, ParseError> {
    text(row, names).ok_or_else(|| problem(names[0], "missing or NULL"))
}

fn number<T: std::str::FromStr>(row: &TextRow, names: &[&str]) -> Result<Option<T>, ParseError> {
    match text(row, names).map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) => value
            .parse::<T>()
            .map(Some)
            .map_err(|_| problem(names[0], format!("expected a number, got \"{value}\""))),
    }
}

/// `1`/`ON`/`Yes` and `0`/`OFF`/`No`, as servers print booleans.
pub fn flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_uppercase().as_str() {
        "1" | "ON" | "YES" | "TRUE" => Some(true),
        "0" | "OFF" | "NO" | "FALSE" | "" => Some(false),
        _ => None,
    }
}

fn flag_column(row: &TextRow, names: &[&str]) -> Result<bool, ParseError> {
    let value = required(row, names)?;
    flag(value).ok_or_else(|| problem(names[0], format!("expected ON or OFF, got \"{value}\"")))
}

/// Parses one row of `SHOW REPLICA STATUS` / `SHOW ALL SLAVES STATUS`.
pub fn replica_status(row: &TextRow) -> Result<ReplicationStatus, ParseError> {
    let host = required(row, &["Source_Host", "Master_Host"])?;
    let port: u16 = number(row, &["Source_Port", "Master_Port"])?
        .ok_or_else(|| problem("Source_Port", "missing"))?;
    let io_text = required(row, &["Replica_IO_Running", "Slave_IO_Running"])?;
    let io_running = IoThreadState::parse(io_text).ok_or_else(|| {
        problem(
            "Replica_IO_Running",
            format!("expected Yes, No or Connecting, got \"{io_text}\""),
        )
    })?;
    let using_gtid = text(row, &["Using_Gtid"]).unwrap_or("No");
    let auto_position = text(row, &["Auto_Position"]).unwrap_or("0") == "1"
        || !using_gtid.eq_ignore_ascii_case("No");
    Ok(ReplicationStatus {
        source: InstanceKey::new(host, port),
        source_server_id: number(row, &["Source_Server_Id", "Master_Server_Id"])?,
        io_running,
        sql_running: flag_column(row, &["Replica_SQL_Running", "Slave_SQL_Running"])?,
        io_state: text(row, &["Replica_IO_State", "Slave_IO_State"])
            .unwrap_or_default()
            .to_string(),
        last_io_errno: number(row, &["Last_IO_Errno"])?.unwrap_or(0),
        last_io_error: text(row, &["Last_IO_Error"])
            .unwrap_or_default()
            .to_string(),
        last_sql_errno: number(row, &["Last_SQL_Errno"])?.unwrap_or(0),
        last_sql_error: text(row, &["Last_SQL_Error"])
            .unwrap_or_default()
            .to_string(),
        seconds_behind_source: number(row, &["Seconds_Behind_Source", "Seconds_Behind_Master"])?,
        sql_delay: number(row, &["SQL_Delay"])?.unwrap_or(0),
        gtid_auto_position: auto_position,
        received_gtids: text(row, &["Retrieved_Gtid_Set", "Gtid_IO_Pos"])
            .unwrap_or_default()
            .split_whitespace()
            .collect(),
        source_log_file: text(row, &["Source_Log_File", "Master_Log_File"])
            .unwrap_or_default()
            .to_string(),
        read_source_log_pos: number(row, &["Read_Source_Log_Pos", "Read_Master_Log_Pos"])?
            .unwrap_or(0),
        exec_source_log_pos: number(row, &["Exec_Source_Log_Pos", "Exec_Master_Log_Pos"])?
            .unwrap_or(0),
        heartbeat_period: number(row, &["Slave_heartbeat_period"])?.and_then(heartbeat_seconds),
        received_heartbeats: number(row, &["Slave_received_heartbeats"])?,
    })
}

/// Picks the default replication channel (MariaDB's unnamed connection, MySQL's `''`
/// channel) among the rows of a replica-status statement; multi-source extras are
/// not followed.
pub fn default_channel(rows: &[TextRow]) -> Option<&TextRow> {
    rows.iter()
        .find(|row| {
            text(row, &["Connection_name", "Channel_Name"])
                .map(str::is_empty)
                .unwrap_or(true)
        })
        .or_else(|| rows.first())
}

/// The default channel's row when it names a source. MariaDB 10.11, read while another
/// session resets the replica (`RESET SLAVE ALL`) and before its new source is set, may
/// show the default connection with an empty `Master_Host` and port 3306 (fixture
/// `reset_race__node2__show-all-slaves-status`): that is no source, not one at `:3306`.
pub fn source_channel(rows: &[TextRow]) -> Option<&TextRow> {
    default_channel(rows).filter(|row| {
        text(row, &["Source_Host", "Master_Host"]).is_some_and(|host| !host.trim().is_empty())
    })
}

/// Server-wide settings read by one `SELECT @@...` per poll.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerVariables {
    pub server_id: u32,
    pub server_uuid: Option<String>,
    pub version: String,
    pub read_only: bool,
    pub super_read_only: Option<bool>,
    /// MySQL only: whether `super_read_only=ON` is persisted (`mysqld-auto.cnf`), so a
    /// restart brings the server back read-only.
    pub persisted_read_only: Option<bool>,
    pub log_bin: bool,
    pub binlog_format: String,
    pub log_replica_updates: bool,
    pub gtid: GtidState,
}

/// Parses the MySQL variables row (see `dialect::MYSQL_VARIABLES`).
pub fn mysql_variables(row: &TextRow) -> Result<ServerVariables, ParseError> {
    let executed = required(row, &["gtid_executed"])?;
    Ok(ServerVariables {
        server_id: number(row, &["server_id"])?.ok_or_else(|| problem("server_id", "missing"))?,
        server_uuid: text(row, &["server_uuid"]).map(str::to_string),
        version: required(row, &["version"])?.to_string(),
        read_only: flag_column(row, &["read_only"])?,
        super_read_only: Some(flag_column(row, &["super_read_only"])?),
        // NULL (nothing persisted) reads as not persisted; a row from before the column
        // existed (recorded fixtures) as unknown.
        persisted_read_only: row
            .contains_key("persisted_super_read_only")
            .then(|| text(row, &["persisted_super_read_only"]).and_then(flag) == Some(true)),
        log_bin: flag_column(row, &["log_bin"])?,
        binlog_format: required(row, &["binlog_format"])?.to_string(),
        log_replica_updates: flag_column(row, &["log_replica_updates", "log_slave_updates"])?,
        gtid: GtidState::Mysql {
            mode: text(row, &["gtid_mode"]).unwrap_or("OFF").to_string(),
            executed: GtidSet::parse(executed)
                .map_err(|e| problem("gtid_executed", e.to_string()))?,
        },
    })
}

/// Parses the MariaDB variables row (see `dialect::MARIADB_VARIABLES`).
pub fn mariadb_variables(row: &TextRow) -> Result<ServerVariables, ParseError> {
    let list = |name: &str| -> Result<MariadbGtidList, ParseError> {
        MariadbGtidList::parse(text(row, &[name]).unwrap_or_default())
            .map_err(|e| problem(name, e.to_string()))
    };
    Ok(ServerVariables {
        server_id: number(row, &["server_id"])?.ok_or_else(|| problem("server_id", "missing"))?,
        server_uuid: None,
        version: required(row, &["version"])?.to_string(),
        read_only: flag_column(row, &["read_only"])?,
        super_read_only: None,
        persisted_read_only: None,
        log_bin: flag_column(row, &["log_bin"])?,
        binlog_format: required(row, &["binlog_format"])?.to_string(),
        log_replica_updates: flag_column(row, &["log_slave_updates", "log_replica_updates"])?,
        gtid: GtidState::Mariadb {
            binlog_pos: list("gtid_binlog_pos")?,
            current_pos: list("gtid_current_pos")?,
            slave_pos: list("gtid_slave_pos")?,
            binlog_state: list("gtid_binlog_state")?,
            domain_id: number(row, &["gtid_domain_id"])?.unwrap_or(0),
            strict_mode: text(row, &["gtid_strict_mode"])
                .and_then(flag)
                .unwrap_or(false),
        },
    })
}

/// Reads semi-sync settings and state from `SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync%'`
/// and `SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync%'` rows (`Variable_name`, `Value`), in
/// either flavour's words (source/replica or master/slave).
pub fn semi_sync(rows: &[TextRow]) -> SemiSync {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for row in rows {
        if let (Some(name), Some(value)) = (
            text(row, &["Variable_name"]),
            text(row, &["Value", "Variable_value"]),
        ) {
            let name = name
                .to_ascii_lowercase()
                .replace("_master_", "_source_")
                .replace("_slave_", "_replica_");
            values.insert(name, value.to_string());
        }
    }
    let on = |name: &str| values.get(name).and_then(|v| flag(v)).unwrap_or(false);
    SemiSync {
        source_enabled: on("rpl_semi_sync_source_enabled"),
        replica_enabled: on("rpl_semi_sync_replica_enabled"),
        source_active: on("rpl_semi_sync_source_status"),
        replica_active: on("rpl_semi_sync_replica_status"),
        source_clients: values
            .get("rpl_semi_sync_source_clients")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        timeout_ms: values
            .get("rpl_semi_sync_source_timeout")
            .and_then(|v| v.parse().ok()),
    }
}

/// Replicas a source lists in `SHOW REPLICAS` / `SHOW SLAVE HOSTS`. Rows without a
/// host (replicas that set no `report_host`) are left to the processlist fallback.
pub fn replica_hosts(rows: &[TextRow]) -> Vec<InstanceKey> {
    rows.iter()
        .filter_map(|row| {
            let host = text(row, &["Host"])?.trim();
            let port = text(row, &["Port"])?.trim().parse::<u16>().ok()?;
            (!host.is_empty() && port != 0).then(|| InstanceKey::new(host, port))
        })
        .collect()
}

/// Client hosts of binlog-dump threads in the processlist (`HOST` is `addr:ephemeral`).
pub fn binlog_dump_hosts(rows: &[TextRow]) -> Vec<String> {
    rows.iter()
        .filter_map(|row| text(row, &["HOST", "Host"]))
        .map(|host| match host.rsplit_once(':') {
            Some((addr, port)) if port.chars().all(|c| c.is_ascii_digit()) => addr,
            _ => host,
        })
        .map(|addr| {
            addr.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        })
        .filter(|addr| !addr.is_empty())
        .collect()
}

/// MySQL's heartbeat counter and period (seconds) from performance_schema.
pub fn mysql_heartbeats(rows: &[TextRow]) -> (Option<u64>, Option<f64>) {
    let row = default_channel(rows);
    let read = |name: &str| row.and_then(|row| text(row, &[name])).map(str::trim);
    (
        read("COUNT_RECEIVED_HEARTBEATS").and_then(|v| v.parse().ok()),
        read("HEARTBEAT_INTERVAL")
            .and_then(|v| v.parse().ok())
            .and_then(heartbeat_seconds),
    )
}

/// The error of the applier worker that failed, if one did: rows of
/// `performance_schema.replication_applier_status_by_worker`, or the heartbeat rows of
/// `dialect::MYSQL_HEARTBEATS`, which carry the failed worker's columns.
pub fn worker_error(rows: &[TextRow]) -> Option<(u32, String)> {
    rows.iter().find_map(|row| {
        let errno: u32 = text(row, &["LAST_ERROR_NUMBER"])?.trim().parse().ok()?;
        let message = text(row, &["LAST_ERROR_MESSAGE"])?.to_string();
        (errno != 0).then_some((errno, message))
    })
}

/// A heartbeat period as a server can hold it (0 to 4294967 seconds); anything else is
/// no known period, never a number that would overflow a `Duration`.
fn heartbeat_seconds(seconds: f64) -> Option<f64> {
    (0.0..=4_294_967.0).contains(&seconds).then_some(seconds)
}

#[cfg(test)]
pub mod fixtures {
    //! Reads the raw `--vertical` client output captured from real servers
    //! (tests/fixtures, see its README) back into rows.

    use super::TextRow;
    use std::path::PathBuf;

    pub fn path(flavour: &str, name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(flavour)
            .join(format!("{name}.txt"))
    }

    /// The rows of one fixture file. Lines that do not start a `Name: value` field
    /// continue the previous value (MySQL prints multi-UUID GTID sets over lines).
    pub fn rows(flavour: &str, name: &str) -> Vec<TextRow> {
        let file = path(flavour, name);
        let body = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("fixture {}: {e}", file.display()));
        let field = regex::Regex::new(r"^\s*([A-Za-z_][A-Za-z0-9_]*): ?(.*)$").expect("regex");
        let mut rows: Vec<TextRow> = Vec::new();
        let mut last: Option<String> = None;
        for line in body.lines().filter(|l| !l.starts_with("-- ")) {
            if line.starts_with("***") {
                rows.push(TextRow::new());
                last = None;
            } else if let Some(caps) = field.captures(line) {
                let (name, value) = (caps[1].to_string(), caps[2].to_string());
                let value = (value != "NULL").then_some(value);
                rows.last_mut().expect("a row").insert(name.clone(), value);
                last = Some(name);
            } else if let (Some(name), Some(row)) = (&last, rows.last_mut()) {
                if let Some(Some(value)) = row.get_mut(name) {
                    value.push('\n');
                    value.push_str(line);
                }
            }
        }
        rows
    }

    pub fn row(flavour: &str, name: &str) -> TextRow {
        rows(flavour, name).into_iter().next().expect("one row")
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{row, rows};
    use super::*;

    #[test]
    fn a_row_reads_columns_by_name_and_a_repeated_name_as_its_last_column() {
        let names = Arc::new(vec!["a".to_string(), "b".to_string(), "a".to_string()]);
        let mut row = TextRow::with_names(
            names.clone(),
            vec![Some("first".into()), None, Some("last".into())],
        );
        assert_eq!(row.get("a"), Some(&Some("last".to_string())));
        assert_eq!(row.get("b"), Some(&None), "NULL is a value");
        assert_eq!(row.get("c"), None, "no such column");
        row.insert("c".into(), Some("added".into()));
        row.insert("b".into(), Some("set".into()));
        assert_eq!(text(&row, &["c"]), Some("added"));
        assert_eq!(text(&row, &["b"]), Some("set"));
        assert_eq!(names.len(), 3, "the names other rows share are left alone");
    }

    const MARIADB: [&str; 2] = ["mariadb-10.11", "mariadb-11.8"];

    #[test]
    fn the_failed_workers_error_names_what_the_coordinators_hides() {
        let coordinator =
            replica_status(&row("mysql-9.7", "sql_error__node2__show-replica-status"))
                .expect("parses");
        let workers = rows(
            "mysql-9.7",
            "sql_error__node2__ps-replication-applier-status-by-worker",
        );
        // Only the failed worker's row counts, as the statement's WHERE would keep.
        let (errno, message) = worker_error(&workers).expect("worker 1 failed");
        assert_eq!(errno, 1062);
        assert!(
            message.contains("Duplicate entry '100' for key 't.PRIMARY'"),
            "{message}"
        );
        assert!(
            !coordinator.last_sql_error.contains("Duplicate entry"),
            "{}",
            coordinator.last_sql_error
        );
        assert_eq!(worker_error(&[]), None);
    }

    #[test]
    fn healthy_replicas_parse_in_every_flavour() {
        for (flavour, statement) in [
            ("mysql-9.7", "show-replica-status"),
            ("mariadb-10.11", "show-all-slaves-status"),
            ("mariadb-10.11", "show-replica-status"),
            ("mariadb-11.8", "show-all-slaves-status"),
        ] {
            let status = replica_status(&row(flavour, &format!("healthy__node2__{statement}")))
                .unwrap_or_else(|e| panic!("{flavour} {statement}: {e}"));
            assert_eq!(status.source.host, "127.0.0.1", "{flavour}");
            assert_eq!(status.io_running, IoThreadState::Yes, "{flavour}");
            assert!(status.sql_running, "{flavour}");
            assert_eq!(status.seconds_behind_source, Some(0), "{flavour}");
            assert_eq!(status.source_server_id, Some(101), "{flavour}");
            assert!(status.gtid_auto_position, "{flavour}");
            assert!(!status.received_gtids.is_empty(), "{flavour}");
        }
        let maria = replica_status(&row(
            "mariadb-10.11",
            "healthy__node2__show-all-slaves-status",
        ))
        .expect("parses");
        assert_eq!(maria.source.port, 25306);
        assert_eq!(maria.heartbeat_period, Some(1.0));
        assert_eq!(maria.received_heartbeats, Some(0));
    }

    #[test]
    fn a_heartbeat_period_no_server_holds_is_no_period() {
        let interval = |value: &str| {
            vec![TextRow::from([(
                "HEARTBEAT_INTERVAL".to_string(),
                Some(value.to_string()),
            )])]
        };
        assert_eq!(mysql_heartbeats(&interval("1.000")).1, Some(1.0));
        for value in ["-1", "NaN", "inf", "1e300"] {
            assert_eq!(mysql_heartbeats(&interval(value)).1, None, "{value}");
        }
    }

    #[test]
    fn a_not_replica_returns_no_rows() {
        for flavour in ["mysql-9.7", "mariadb-10.11", "mariadb-11.8"] {
            assert!(rows(flavour, "healthy__node1__show-replica-status").is_empty());
        }
    }

    #[test]
    fn stopped_threads_and_errors_are_read() {
        for flavour in ["mysql-9.7", "mariadb-10.11"] {
            let sql = replica_status(&row(flavour, "sql_stopped__node2__show-replica-status"))
                .expect("parses");
            assert!(!sql.sql_running, "{flavour}");
            assert_eq!(sql.io_running, IoThreadState::Yes, "{flavour}");
            assert_eq!(sql.seconds_behind_source, None, "{flavour}");

            let io = replica_status(&row(flavour, "io_stopped__node2__show-replica-status"))
                .expect("parses");
            assert_eq!(io.io_running, IoThreadState::No, "{flavour}");
            assert_eq!(io.io_state, "", "{flavour}");

            let err = replica_status(&row(flavour, "sql_error__node2__show-replica-status"))
                .expect("parses");
            assert!(!err.sql_running, "{flavour}");
            assert_ne!(err.last_sql_errno, 0, "{flavour}");
            assert!(!err.last_sql_error.is_empty(), "{flavour}");
        }
    }

    #[test]
    fn a_killed_primary_shows_as_connecting_with_a_connect_error() {
        for flavour in ["mysql-9.7", "mariadb-10.11", "mariadb-11.8"] {
            let status = replica_status(&row(
                flavour,
                "primary_killed_3s__node2__show-replica-status",
            ))
            .expect("parses");
            assert_eq!(status.io_running, IoThreadState::Connecting, "{flavour}");
            assert_eq!(status.last_io_errno, 2003, "{flavour}");
            assert_eq!(status.seconds_behind_source, None, "{flavour}");
        }
    }

    #[test]
    fn delayed_replica_reports_its_delay() {
        for flavour in ["mysql-9.7", "mariadb-10.11"] {
            let status = replica_status(&row(flavour, "delayed__node3__show-replica-status"))
                .expect("parses");
            assert_eq!(status.sql_delay, 30, "{flavour}");
        }
    }

    #[test]
    fn multi_line_gtid_sets_are_joined() {
        let vars =
            mysql_variables(&row("mysql-9.7", "errant__node3__select-vars")).expect("parses");
        let GtidState::Mysql { executed, .. } = &vars.gtid else {
            panic!("MySQL GTID state expected");
        };
        assert_eq!(executed.to_string().matches(',').count(), 1, "{executed}");
        assert!(!vars.read_only);
        assert_eq!(vars.server_id, 103);
        let status = replica_status(&row("mysql-9.7", "delayed__node3__show-replica-status"))
            .expect("parses");
        assert!(!status.received_gtids.contains('\n'));
    }

    #[test]
    fn mariadb_variables_hold_the_gtid_positions() {
        for flavour in MARIADB {
            let mut vars_row = row(flavour, "errant__node3__select-vars");
            // The fixtures predate gtid_binlog_state: the probe asks for it too.
            vars_row.insert("gtid_binlog_state".into(), Some("0-101-13,0-103-14".into()));
            let vars = mariadb_variables(&vars_row).expect("parses");
            let GtidState::Mariadb {
                binlog_pos,
                slave_pos,
                binlog_state,
                ..
            } = &vars.gtid
            else {
                panic!("MariaDB GTID state expected");
            };
            assert_eq!(binlog_pos.to_string(), "0-103-14", "{flavour}");
            assert_eq!(slave_pos.to_string(), "0-101-13", "{flavour}");
            assert_eq!(binlog_state.to_string(), "0-101-13,0-103-14", "{flavour}");
            assert_eq!(vars.super_read_only, None);
            assert!(vars.log_replica_updates);
        }
    }

    #[test]
    fn semi_sync_reads_both_vocabularies() {
        let mysql = semi_sync(&rows(
            "mysql-9.7",
            "healthy__node2__show-global-status-rpl-semi-sync",
        ));
        assert!(!mysql.source_active && !mysql.replica_active);
        let mut on = rows(
            "mariadb-10.11",
            "healthy__node2__show-global-status-rpl-semi-sync",
        );
        on.push(
            [
                (
                    "Variable_name".to_string(),
                    Some("rpl_semi_sync_master_enabled".to_string()),
                ),
                ("Value".to_string(), Some("ON".to_string())),
            ]
            .into_iter()
            .collect(),
        );
        on.push(
            [
                (
                    "Variable_name".to_string(),
                    Some("rpl_semi_sync_master_timeout".to_string()),
                ),
                ("Value".to_string(), Some("10000".to_string())),
            ]
            .into_iter()
            .collect(),
        );
        assert!(semi_sync(&on).source_enabled);
        assert_eq!(semi_sync(&on).timeout_ms, Some(10_000));
    }

    #[test]
    fn a_status_read_while_the_replica_is_reset_names_no_source() {
        let racing = rows("mariadb-10.11", "reset_race__node2__show-all-slaves-status");
        assert_eq!(text(&racing[0], &["Master_Port"]), Some("3306"));
        assert!(source_channel(&racing).is_none());
        let healthy = rows("mariadb-10.11", "healthy__node2__show-all-slaves-status");
        let status = replica_status(source_channel(&healthy).expect("a source")).expect("parsed");
        assert_eq!(status.source.host, "127.0.0.1");
    }

    #[test]
    fn replica_lists_come_from_show_replicas_and_the_processlist() {
        let mysql = replica_hosts(&rows("mysql-9.7", "healthy__node1__show-replicas"));
        assert_eq!(mysql.len(), 2);
        assert!(mysql.contains(&InstanceKey::new("127.0.0.1", 26307)));
        let maria = replica_hosts(&rows("mariadb-10.11", "chained__node2__show-slave-hosts"));
        assert_eq!(maria, vec![InstanceKey::new("127.0.0.1", 25308)]);
        let dumps = binlog_dump_hosts(&rows(
            "mysql-9.7",
            "healthy__node1__processlist-binlog-dump",
        ));
        assert_eq!(dumps, vec!["127.0.0.1", "127.0.0.1"]);
    }

    #[test]
    fn mysql_heartbeat_counter_is_read() {
        let mut status = rows(
            "mysql-9.7",
            "healthy__node2__ps-replication-connection-status",
        );
        assert_eq!(mysql_heartbeats(&status), (Some(0), None));
        // The probe joins the configured interval in.
        status[0].insert("HEARTBEAT_INTERVAL".into(), Some("1.000".into()));
        assert_eq!(mysql_heartbeats(&status), (Some(0), Some(1.0)));
    }

    #[test]
    fn bad_values_name_their_column() {
        let mut broken = row("mysql-9.7", "healthy__node2__show-replica-status");
        broken.insert("Source_Port".into(), Some("abc".into()));
        let err = replica_status(&broken).expect_err("bad port");
        assert!(err.to_string().contains("Source_Port"), "{err}");
    }
}
