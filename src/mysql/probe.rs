//! One probe of one instance: the handful of statements that tell pointsman what the
//! instance is, how it replicates and who replicates from it, sent together in one
//! round trip. `statements` and `read` are apart so that the poller tells a connection
//! that failed (dropped and opened again) from an answer it could not read (kept).

use super::dialect::{self, BINLOG_DUMP_THREADS, SEMI_SYNC_STATUS, SEMI_SYNC_VARIABLES};
use super::parse::{self, ParseError, TextRow};
use super::{Connection, MysqlError};
use crate::topology::{InstanceFacts, InstanceKey, ServerFlavor, ServerVersion};

/// Reads everything pointsman tracks about the instance behind `conn`.
pub async fn probe(conn: &mut Connection) -> Result<InstanceFacts, MysqlError> {
    let sets = conn.query_all(&statements(conn.flavor)).await?;
    read(&conn.key, conn.flavor, sets)
}

/// The statements of one probe, in the order `read` takes their results.
pub fn statements(flavor: ServerFlavor) -> Vec<&'static str> {
    let dialect = dialect::for_flavor(flavor);
    // The heartbeat counters of a server that replicates from no one are simply no rows.
    let mut statements = vec![dialect.variables, dialect.replica_status];
    statements.extend(dialect.heartbeats);
    statements.extend([
        SEMI_SYNC_VARIABLES,
        SEMI_SYNC_STATUS,
        dialect.replicas,
        BINLOG_DUMP_THREADS,
    ]);
    statements
}

/// What the results of `statements(flavor)`, in order, say about instance `key`.
pub fn read(
    key: &InstanceKey,
    flavor: ServerFlavor,
    sets: Vec<Vec<TextRow>>,
) -> Result<InstanceFacts, MysqlError> {
    let dialect = dialect::for_flavor(flavor);
    let unexpected = |statement: &str, e: ParseError| MysqlError::Unexpected {
        instance: key.clone(),
        statement: statement.to_string(),
        message: e.to_string(),
    };
    let mut sets = sets.into_iter();
    let mut next = || sets.next().unwrap_or_default();

    let variables_rows = next();
    let variables_row = variables_rows
        .first()
        .ok_or_else(|| MysqlError::Unexpected {
            instance: key.clone(),
            statement: dialect.variables.to_string(),
            message: "no row".into(),
        })?;
    let variables = match flavor {
        ServerFlavor::Mysql => parse::mysql_variables(variables_row),
        ServerFlavor::Mariadb => parse::mariadb_variables(variables_row),
    }
    .map_err(|e| unexpected(dialect.variables, e))?;

    let status_rows = next();
    let mut replication = parse::source_channel(&status_rows)
        .map(parse::replica_status)
        .transpose()
        .map_err(|e| unexpected(dialect.replica_status, e))?;
    let heartbeat_rows = dialect.heartbeats.map(|_| next());
    if let (Some(status), Some(rows)) = (replication.as_mut(), heartbeat_rows) {
        let (beats, period) = parse::mysql_heartbeats(&rows);
        status.received_heartbeats = beats;
        status.heartbeat_period = period;
        // A stopped applier's real error is its failed worker's (MySQL).
        if !status.sql_running && status.last_sql_errno != 0 {
            let worker = parse::default_channel(&rows).map(std::slice::from_ref);
            if let Some((errno, error)) = worker.and_then(parse::worker_error) {
                status.last_sql_errno = errno;
                status.last_sql_error = error;
            }
        }
    }

    let mut semi_sync_rows = next();
    semi_sync_rows.extend(next());

    let mut replicas = parse::replica_hosts(&next());
    let dump_hosts = parse::binlog_dump_hosts(&next());
    add_unreported_replicas(&mut replicas, &dump_hosts, key.port);

    Ok(InstanceFacts {
        flavor,
        version: ServerVersion::parse(&variables.version),
        server_id: variables.server_id,
        server_uuid: variables.server_uuid,
        read_only: variables.read_only,
        super_read_only: variables.super_read_only,
        persisted_read_only: variables.persisted_read_only,
        log_bin: variables.log_bin,
        binlog_format: variables.binlog_format,
        log_replica_updates: variables.log_replica_updates,
        gtid: variables.gtid,
        replication,
        semi_sync: parse::semi_sync(&semi_sync_rows),
        replicas,
    })
}

/// A replica without `report_host` is missing from SHOW REPLICAS but has a binlog-dump
/// thread. Its listening port is unknown, so assume the source's own port, as most
/// fleets run every server on the same port.
fn add_unreported_replicas(replicas: &mut Vec<InstanceKey>, dump_hosts: &[String], port: u16) {
    for host in dump_hosts {
        let dumping = dump_hosts.iter().filter(|h| *h == host).count();
        let listed = replicas.iter().filter(|k| &k.host == host).count();
        let guess = InstanceKey::new(host.clone(), port);
        if dumping > listed && !replicas.contains(&guess) {
            replicas.push(guess);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_replicas_need_no_guess() {
        let mut replicas = vec![
            InstanceKey::new("127.0.0.1", 3307),
            InstanceKey::new("127.0.0.1", 3308),
        ];
        add_unreported_replicas(
            &mut replicas,
            &["127.0.0.1".into(), "127.0.0.1".into()],
            3306,
        );
        assert_eq!(replicas.len(), 2);
    }

    #[test]
    fn an_unreported_replica_is_guessed_on_the_source_port() {
        let mut replicas = vec![];
        add_unreported_replicas(&mut replicas, &["10.0.0.7".into()], 3306);
        assert_eq!(replicas, vec![InstanceKey::new("10.0.0.7", 3306)]);
    }
}
