//! The SQL each flavour speaks for monitoring. MySQL 8.4+/9.x rejects every SLAVE and
//! MASTER statement; MariaDB accepts the new words but answers with old column names
//! (which `parse` reads either way). Statements live here, one place, so a reader can
//! see at a glance what pointsman runs on a server.

use crate::topology::ServerFlavor;

/// Asked once per connection to learn the flavour.
pub const VERSION: &str = "SELECT @@version AS version";

/// Server variables, one row, aliased to stable names.
pub const MYSQL_VARIABLES: &str = "SELECT @@server_id AS server_id, @@server_uuid AS server_uuid, \
     @@version AS version, @@read_only AS read_only, @@super_read_only AS super_read_only, \
     @@log_bin AS log_bin, @@binlog_format AS binlog_format, \
     @@log_replica_updates AS log_replica_updates, @@gtid_mode AS gtid_mode, \
     @@gtid_executed AS gtid_executed, \
     (SELECT VARIABLE_VALUE FROM performance_schema.persisted_variables \
      WHERE VARIABLE_NAME = 'super_read_only') AS persisted_super_read_only";

pub const MARIADB_VARIABLES: &str = "SELECT @@server_id AS server_id, @@version AS version, \
     @@read_only AS read_only, @@log_bin AS log_bin, @@binlog_format AS binlog_format, \
     @@log_slave_updates AS log_slave_updates, @@gtid_binlog_pos AS gtid_binlog_pos, \
     @@gtid_current_pos AS gtid_current_pos, @@gtid_slave_pos AS gtid_slave_pos, \
     @@gtid_binlog_state AS gtid_binlog_state, @@gtid_domain_id AS gtid_domain_id, \
     @@gtid_strict_mode AS gtid_strict_mode";

/// MySQL's heartbeat counter and period are not in SHOW REPLICA STATUS. Nor is the
/// real error of a stopped multi-threaded applier: SHOW REPLICA STATUS says only
/// "Coordinator stopped because there were error(s) in the worker(s)", and the worker
/// that failed names the real one (a duplicate key, a missing row) — asked here too, so
/// a probe stays one round trip.
pub const MYSQL_HEARTBEATS: &str = "SELECT s.CHANNEL_NAME, s.COUNT_RECEIVED_HEARTBEATS, \
     c.HEARTBEAT_INTERVAL, \
     (SELECT w.LAST_ERROR_NUMBER FROM performance_schema.replication_applier_status_by_worker w \
      WHERE w.CHANNEL_NAME = s.CHANNEL_NAME AND w.LAST_ERROR_NUMBER <> 0 \
      ORDER BY w.LAST_ERROR_TIMESTAMP DESC, w.WORKER_ID LIMIT 1) AS LAST_ERROR_NUMBER, \
     (SELECT w.LAST_ERROR_MESSAGE FROM performance_schema.replication_applier_status_by_worker w \
      WHERE w.CHANNEL_NAME = s.CHANNEL_NAME AND w.LAST_ERROR_NUMBER <> 0 \
      ORDER BY w.LAST_ERROR_TIMESTAMP DESC, w.WORKER_ID LIMIT 1) AS LAST_ERROR_MESSAGE \
     FROM performance_schema.replication_connection_status s \
     JOIN performance_schema.replication_connection_configuration c USING (CHANNEL_NAME)";

/// Semi-sync settings and state: these never fail, even without the plugin loaded.
pub const SEMI_SYNC_VARIABLES: &str = "SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync%'";
pub const SEMI_SYNC_STATUS: &str = "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync%'";

/// Binlog-dump threads: the fallback for finding replicas that set no report_host.
pub const BINLOG_DUMP_THREADS: &str = "SELECT HOST FROM information_schema.PROCESSLIST \
     WHERE COMMAND LIKE 'Binlog Dump%'";

/// The per-flavour statements of one probe.
pub struct Dialect {
    pub variables: &'static str,
    /// MariaDB's SHOW ALL SLAVES STATUS adds the heartbeat counter and connection name.
    pub replica_status: &'static str,
    pub replicas: &'static str,
    /// With the failed applier worker's own error, when the SQL error is only the
    /// coordinator's.
    pub heartbeats: Option<&'static str>,
}

pub fn for_flavor(flavor: ServerFlavor) -> Dialect {
    match flavor {
        ServerFlavor::Mysql => Dialect {
            variables: MYSQL_VARIABLES,
            replica_status: "SHOW REPLICA STATUS",
            replicas: "SHOW REPLICAS",
            heartbeats: Some(MYSQL_HEARTBEATS),
        },
        ServerFlavor::Mariadb => Dialect {
            variables: MARIADB_VARIABLES,
            replica_status: "SHOW ALL SLAVES STATUS",
            replicas: "SHOW SLAVE HOSTS",
            heartbeats: None,
        },
    }
}

/// MariaDB says so in `@@version`; everything else is MySQL-compatible.
pub fn flavor_of(version: &str) -> ServerFlavor {
    if version.to_ascii_lowercase().contains("mariadb") {
        ServerFlavor::Mariadb
    } else {
        ServerFlavor::Mysql
    }
}
