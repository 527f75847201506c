//! Talking to MySQL and MariaDB servers: connections (always TCP, every call under a
//! timeout), the SQL each flavour speaks, and reading what comes back. Nothing here
//! decides anything; it reports what a server says.

pub mod admin;
pub mod dialect;
pub mod edge;
pub mod parse;
pub mod probe;

use crate::config::Secret;
use crate::topology::{InstanceKey, ServerFlavor};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, Value};
use parse::TextRow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How pointsman logs in to the servers it watches.
#[derive(Clone, Debug)]
pub struct ConnectSettings {
    pub user: String,
    pub password: Secret,
    pub connect_timeout: Duration,
    pub query_timeout: Duration,
}

/// Why talking to an instance failed. Messages name the instance and never carry the
/// password.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    #[error("{instance}: could not connect: {message}")]
    Connect {
        instance: InstanceKey,
        message: String,
    },
    #[error("{instance}: no answer within {timeout:?} to {}", brief(what))]
    Timeout {
        instance: InstanceKey,
        what: String,
        timeout: Duration,
    },
    #[error("{instance}: `{}` failed: {message}", brief(statement))]
    Query {
        instance: InstanceKey,
        statement: String,
        message: String,
    },
    #[error("{instance}: unexpected answer to `{}`: {message}", brief(statement))]
    Unexpected {
        instance: InstanceKey,
        statement: String,
        message: String,
    },
    /// Not sent: this agent may not change servers now (it does not lead, or its lease
    /// ran out during the step).
    #[error("{instance}: not changed: {why}")]
    NotLeader { instance: InstanceKey, why: String },
}

impl MysqlError {
    /// The message without the leading `host:port: `, for places that already name
    /// the instance.
    pub fn without_instance(&self) -> String {
        let text = self.to_string();
        let instance = match self {
            MysqlError::Connect { instance, .. }
            | MysqlError::Timeout { instance, .. }
            | MysqlError::Query { instance, .. }
            | MysqlError::Unexpected { instance, .. }
            | MysqlError::NotLeader { instance, .. } => instance,
        };
        text.strip_prefix(&format!("{instance}: "))
            .map(str::to_string)
            .unwrap_or(text)
    }
}

/// What the driver says went wrong, each cause once (mysql_async's I/O errors embed
/// their cause twice: "Input/output error: Input/output error: connection closed").
pub(crate) fn driver_message(error: &mysql_async::Error) -> String {
    crate::error_text::said_once(&error.to_string())
}

/// A statement shortened for messages: its first words, enough to recognise it.
fn brief(statement: &str) -> String {
    const LIMIT: usize = 40;
    if statement.len() <= LIMIT {
        return statement.to_string();
    }
    let mut cut = LIMIT;
    while !statement.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &statement[..cut];
    let head = head.rsplit_once(' ').map(|(h, _)| h).unwrap_or(head);
    format!("{head} …")
}

/// The largest packet the driver accepts: the most any server may be set to send
/// (`max_allowed_packet` tops out at 1 GiB), so no answer is refused on our side.
const LARGEST_PACKET: usize = 1 << 30;

/// What the driver is told the server's `wait_timeout` is. It uses the value only to
/// expire pooled connections, and pointsman pools none.
const UNPOOLED_WAIT_TIMEOUT_SECS: usize = 28_800;

/// An open connection to one instance, with the flavour learned on connect.
pub struct Connection {
    pub key: InstanceKey,
    pub flavor: ServerFlavor,
    conn: Conn,
    query_timeout: Duration,
    /// The column names each statement of the last `query_all` returned, by position.
    names: Vec<Option<Arc<Vec<String>>>>,
    /// What the replica had received when this session last stopped its IO thread
    /// (`admin::stop_io_thread`): nothing arrives after that until this session starts
    /// replication again, which forgets it. `admin::wait_relay_applied` waits for it
    /// without asking the server again.
    pub(crate) received_when_stopped: Option<String>,
}

impl Connection {
    /// Connects over TCP — never the unix socket, whatever the driver prefers, so the
    /// agent sees the network the applications see — and learns the flavour.
    pub async fn open(key: &InstanceKey, settings: &ConnectSettings) -> Result<Self, MysqlError> {
        Self::open_as(key, settings, None).await
    }

    /// As `open`; given the flavour a probe of this instance already learned, it is not
    /// asked again: a round trip less for a lost primary's confirming probes, the first
    /// thing a failover waits for. A server of the other flavour fails the probe's
    /// first statement (each dialect's names variables the other lacks), so it is never
    /// read in the wrong dialect; the watch's own connection learns the flavour afresh.
    pub async fn open_as(
        key: &InstanceKey,
        settings: &ConnectSettings,
        flavor: Option<ServerFlavor>,
    ) -> Result<Self, MysqlError> {
        let opts = OptsBuilder::default()
            .ip_or_hostname(key.host.clone())
            .tcp_port(key.port)
            .user(Some(settings.user.clone()))
            .pass(Some(settings.password.expose().to_string()))
            .prefer_socket(false)
            .stmt_cache_size(0)
            // Given, so the driver does not ask the server for them on every connect (a
            // round trip more on each confirming probe and recovery step): pointsman's
            // statements and answers are small, and it pools no connections.
            .max_allowed_packet(Some(LARGEST_PACKET))
            .wait_timeout(Some(UNPOOLED_WAIT_TIMEOUT_SECS));
        let conn = within(key, "connect", settings.connect_timeout, Conn::new(opts))
            .await?
            .map_err(|e| MysqlError::Connect {
                instance: key.clone(),
                message: driver_message(&e),
            })?;
        let mut connection = Self {
            key: key.clone(),
            flavor: flavor.unwrap_or(ServerFlavor::Mysql),
            conn,
            query_timeout: settings.query_timeout,
            names: Vec::new(),
            received_when_stopped: None,
        };
        if flavor.is_some() {
            return Ok(connection);
        }
        let rows = connection.query(dialect::VERSION).await?;
        let version = rows
            .first()
            .and_then(|row| row.get("version").cloned().flatten())
            .unwrap_or_default();
        connection.flavor = dialect::flavor_of(&version);
        Ok(connection)
    }

    /// Runs a statement and returns its rows as text, under the query timeout.
    pub async fn query(&mut self, statement: &str) -> Result<Vec<TextRow>, MysqlError> {
        self.query_for(statement, self.query_timeout).await
    }

    /// As `query`, for statements that wait on purpose (GTID waits) up to `timeout`.
    pub async fn query_for(
        &mut self,
        statement: &str,
        timeout: Duration,
    ) -> Result<Vec<TextRow>, MysqlError> {
        let key = self.key.clone();
        let rows: Vec<Row> = within(
            &key,
            statement,
            timeout,
            self.conn.query::<Row, _>(statement),
        )
        .await?
        .map_err(|e| MysqlError::Query {
            instance: key.clone(),
            statement: statement.to_string(),
            message: driver_message(&e),
        })?;
        Ok(text_rows(rows, &mut None))
    }

    /// Runs several statements in one round trip (the protocol's multi-statement query)
    /// and returns each one's rows, in order, under one query timeout. An error names
    /// the statement that failed; the server runs none after it.
    pub async fn query_all(
        &mut self,
        statements: &[&str],
    ) -> Result<Vec<Vec<TextRow>>, MysqlError> {
        self.query_all_within(statements, self.query_timeout).await
    }

    /// Parks the connection as `park` does and then, in the same query, asks
    /// `statements`: one round trip for the wait and what follows it. Their result sets
    /// (not the park's) come once the last has run; `Err` as soon as the server goes
    /// away, parked or answering.
    pub async fn park_then(
        &mut self,
        period: Duration,
        comment: &str,
        statements: &[&str],
    ) -> Result<Vec<Vec<TextRow>>, MysqlError> {
        let park = park_statement(period, comment);
        let all: Vec<&str> = std::iter::once(park.as_str())
            .chain(statements.iter().copied())
            .collect();
        let mut sets = self
            .query_all_within(&all, period + self.query_timeout)
            .await?;
        sets.remove(0);
        Ok(sets)
    }

    /// As `query_all`, for statements that may take up to `timeout`.
    pub(crate) async fn query_all_within(
        &mut self,
        statements: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Vec<TextRow>>, MysqlError> {
        let key = self.key.clone();
        let query = statements.join(";\n");
        let conn = &mut self.conn;
        let names = &mut self.names;
        names.resize(names.len().max(statements.len()), None);
        let collected = within(&key, &query, timeout, async {
            let mut sets: Vec<Vec<TextRow>> = Vec::with_capacity(statements.len());
            let mut result = match conn.query_iter(query.as_str()).await {
                Ok(result) => result,
                Err(error) => return Err((0, error)),
            };
            while sets.len() < statements.len() {
                match result.collect::<Row>().await {
                    Ok(rows) => sets.push(text_rows(rows, &mut names[sets.len()])),
                    Err(error) => return Err((sets.len(), error)),
                }
            }
            result
                .drop_result()
                .await
                .map_err(|error| (sets.len(), error))?;
            Ok(sets)
        })
        .await?;
        collected.map_err(|(failed, error)| MysqlError::Query {
            instance: key,
            statement: statements
                .get(failed)
                .copied()
                .unwrap_or_default()
                .to_string(),
            message: driver_message(&error),
        })
    }

    /// Runs a statement that returns no rows.
    pub async fn execute(&mut self, statement: &str) -> Result<(), MysqlError> {
        self.query(statement).await.map(|_| ())
    }

    /// Parks the connection in `SLEEP(period)` under `/* comment */` (what the
    /// processlist shows of it); returns `Err` as soon as the server goes away (the
    /// query fails on a dead peer at once) or stops answering. `comment` must not hold
    /// `*/`.
    pub async fn park(&mut self, period: Duration, comment: &str) -> Result<(), MysqlError> {
        let statement = park_statement(period, comment);
        let key = self.key.clone();
        within(
            &key,
            "liveness",
            period + self.query_timeout,
            self.conn.query_drop(statement.as_str()),
        )
        .await?
        .map_err(|e| MysqlError::Query {
            instance: key,
            statement,
            message: driver_message(&e),
        })
    }

    /// Closes politely, bounded by the query timeout; a dead peer is simply dropped.
    pub async fn close(self) {
        let _ = tokio::time::timeout(self.query_timeout, self.conn.disconnect()).await;
    }
}

/// Closes each of `connections`, all at once.
pub async fn close_all(connections: Vec<Connection>) {
    futures::future::join_all(connections.into_iter().map(Connection::close)).await;
}

/// The statement a connection parks in: it names the agent in the processlist, and it
/// fails the moment the server's process dies. `DO`, not `SELECT`: the server answers
/// with one OK packet instead of five (a column count, a column, an EOF, a row and an
/// EOF), every second on every instance. Milliseconds, as both flavours' SLEEP takes
/// fractions of a second.
fn park_statement(period: Duration, comment: &str) -> String {
    format!(
        "DO /* {comment} */ SLEEP({}.{:03})",
        period.as_secs(),
        period.subsec_millis()
    )
}

async fn within<T>(
    key: &InstanceKey,
    what: &str,
    timeout: Duration,
    future: impl Future<Output = T>,
) -> Result<T, MysqlError> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| MysqlError::Timeout {
            instance: key.clone(),
            what: what.to_string(),
            timeout,
        })
}

/// The rows of one result set as text. The driver's values are taken, not copied, and
/// the column names are those of `names` (what the same statement returned last time)
/// when they are the same, else read once for every row: a probe every second of
/// thousands of instances should not copy the same 55 names each time.
fn text_rows(rows: Vec<Row>, names: &mut Option<Arc<Vec<String>>>) -> Vec<TextRow> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    let columns = first.columns_ref();
    let known = names.as_ref().is_some_and(|known| {
        known.len() == columns.len()
            && known
                .iter()
                .zip(columns.iter())
                .all(|(name, column)| name.as_bytes() == column.name_ref())
    });
    if !known {
        *names = Some(shared_names(
            columns.iter().map(|c| c.name_str().into_owned()).collect(),
        ));
    }
    let names = names.clone().unwrap_or_default();
    rows.into_iter()
        .map(|row| {
            let values = row.unwrap().into_iter().map(value_text).collect();
            TextRow::with_names(names.clone(), values)
        })
        .collect()
}

/// The column names every connection's rows share: thousands of connections asking the
/// same statements hold one copy of each statement's names, not one each.
fn shared_names(names: Vec<String>) -> Arc<Vec<String>> {
    /// Past this many different lists (never, with the statements pointsman sends), new
    /// ones are not kept.
    const AT_MOST: usize = 256;
    static KNOWN: std::sync::Mutex<Vec<Arc<Vec<String>>>> = std::sync::Mutex::new(Vec::new());
    let mut known = KNOWN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(same) = known.iter().find(|list| ***list == names) {
        return same.clone();
    }
    let names = Arc::new(names);
    if known.len() < AT_MOST {
        known.push(names.clone());
    }
    names
}

fn value_text(value: Value) -> Option<String> {
    match value {
        Value::NULL => None,
        Value::Bytes(bytes) => Some(
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        ),
        Value::Int(n) => Some(n.to_string()),
        Value::UInt(n) => Some(n.to_string()),
        Value::Float(n) => Some(n.to_string()),
        Value::Double(n) => Some(n.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_long_statements_by_their_first_words() {
        let error = MysqlError::Query {
            instance: InstanceKey::new("db1", 3306),
            statement: dialect::MARIADB_VARIABLES.to_string(),
            message: "connection closed".into(),
        };
        assert_eq!(
            error.to_string(),
            "db1:3306: `SELECT @@server_id AS server_id, …` failed: connection closed"
        );
        assert_eq!(
            error.without_instance(),
            "`SELECT @@server_id AS server_id, …` failed: connection closed"
        );
        assert_eq!(brief("SHOW REPLICAS"), "SHOW REPLICAS");
    }

    /// A server that hangs up at once: the driver's "Input/output error" is said once.
    #[tokio::test]
    async fn a_closed_connection_says_its_cause_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let settings = ConnectSettings {
            user: "pointsman".into(),
            password: Secret::default(),
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
        };
        let error = match Connection::open(&InstanceKey::new("127.0.0.1", port), &settings).await {
            Ok(_) => panic!("a server that hangs up cannot be connected to"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("Input/output error"), "{error}");
        assert!(
            !error.contains("Input/output error: Input/output error"),
            "{error}"
        );
    }
}
