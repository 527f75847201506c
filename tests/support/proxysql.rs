//! A ProxySQL 2.7.1 admin interface stand-in. It is a test double, not product code: it
//! owns one listening port on 127.0.0.1, an in-memory SQLite holding ProxySQL's own table
//! definitions, and (when asked) the read_only and ping monitors, which move and shun
//! real backends the way ProxySQL's do. The routing tests run against it; a double that
//! accepted anything would prove nothing, so it refuses what the real one refuses.
//!
//! It follows `shared/reference/proxysql-admin.md` and the behaviour measured on the real
//! 2.7.1 binary (`shared/tools/proxysql-2.7.1/README.md`; each point below marked
//! "measured" was checked against that binary); where both are silent it follows
//! upstream sysown/proxysql at v2.7.1 (`include/ProxySQL_Admin_Tables_Definitions.h`,
//! `admin_session_handler`, `MySQL_Monitor.cpp`, `read_only_action_v2`).
//!
//! Implemented, by the reference's sections:
//! - Connecting: protocol 10, greeting version `8.0.11`, `mysql_native_password` checked
//!   with SHA-1 against the configured account (default `admin:admin`); capabilities
//!   PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH (+ LENENC data), MULTI_STATEMENTS,
//!   MULTI_RESULTS, SSL, CONNECT_WITH_DB, CONNECT_ATTRS, TRANSACTIONS, and **not**
//!   DEPRECATE_EOF: result sets end with EOF packets. Bad credentials: ERR 1045 (28000)
//!   `ProxySQL Error: Access denied for user 'u'@'h' (using password: YES)`.
//!   `select version()` / `SELECT @@version...` → `2.7.1-16-g2726c27`;
//!   `SELECT @@<name>` → `global_variables`, an unknown name → an empty result set, by
//!   the same query rewrite as upstream (which is why `SELECT @@a,@@b` is a syntax error,
//!   and why mysql_async's connect-time `SELECT @@max_allowed_packet,@@wait_timeout`
//!   fails here as it does on the real admin). COM_STMT_PREPARE → ERR 1045 "Command not
//!   supported"; COM_QUERY, COM_PING, COM_INIT_DB (OK) and COM_QUIT are served; any other
//!   command → the same ERR (COM_STMT_CLOSE / SEND_LONG_DATA, which expect no answer, get
//!   none).
//! - Statements: SQLite's dialect, run on SQLite itself; only the first statement of a
//!   query runs, the rest is skipped silently (one response; leading empty statements are
//!   skipped as SQLite skips them: `; SELECT 1` answers 1, measured); BEGIN / START
//!   TRANSACTION / COMMIT / ROLLBACK and every `SET` that is not a ProxySQL variable answer
//!   OK and do nothing (so nothing is ever rolled back; a transaction opened some other way
//!   is committed at once); `SET mysql-x=v` / `SET admin-x=v` update `global_variables` as
//!   upstream does. A query with no statement at all (empty, blank, only comments: `""`,
//!   `" "`, `/* x */`, `/* x */;`) answers ERR 1045 (28000) `ProxySQL Admin Error: not an
//!   error` and everything goes on (measured). A query that is nothing but `;` and
//!   whitespace (`;`, `  ;  `, `;;`) crashes it, as it crashes 2.7.1 (measured: SIGSEGV in
//!   `admin_session_handler`): `crashed()` turns true, every connection is closed and it
//!   stops listening. Admin commands are case-insensitive and tolerate extra whitespace
//!   and trailing `;`; anything else around them (a comment) sends the query to SQLite,
//!   which answers `near "...": syntax error`. Every error is ERR 1045, SQLSTATE 28000,
//!   `ProxySQL Admin Error: <SQLite message>`; the connection stays usable. OK packets
//!   carry SQLite's change count (LOAD/SAVE: 0) and status 0x0202. Result sets: every
//!   column VAR_STRING, numbers as text, NULL as the NULL marker. One statement runs at a
//!   time across all connections, as upstream's `sql_query_global_mutex` has it (measured:
//!   a `SELECT 1`, an UPDATE, a LOAD, a `SELECT ... FROM runtime_mysql_servers` sent
//!   during a 17–150 ms SAVE each answered only after the SAVE did); `Options::save_delay`
//!   makes `SAVE MYSQL SERVERS TO DISK` take that long (the real one: 7 ms quiet, up to
//!   209 ms loaded), holding every other admin statement meanwhile. The monitors do not
//!   wait for it, nor for anything else the admin does.
//! - Three layers: `LOAD MYSQL SERVERS TO RUNTIME` (memory → runtime, synchronous: done
//!   before the OK), `SAVE MYSQL SERVERS TO DISK`, `LOAD MYSQL SERVERS FROM DISK` (disk →
//!   memory only), `SAVE MYSQL SERVERS FROM RUNTIME`, with upstream's aliases (`TO RUN`,
//!   `FROM MEM`, ...). Each copies both `mysql_servers` and `mysql_replication_hostgroups`.
//!   Into runtime, OFFLINE_HARD rows are left out (memory and disk keep them; measured):
//!   upstream keeps an OFFLINE_HARD server in runtime only while a connection still uses
//!   it, and nothing here has connections; statuses arrive there upper case
//!   (`offline_soft` → `OFFLINE_SOFT`; measured). `restart_from_disk()` is a restart: connections
//!   dropped, memory and runtime reloaded from disk (OFFLINE_HARD rows again left out of
//!   runtime), the monitor logs emptied and the monitors' connections dropped; with the
//!   monitors on, it listens again only once their first round has run and been applied,
//!   so a stale disk config is already rearranged by read_only when the first client
//!   connects (measured: the first read_only check ~0.28 s after start, the admin port
//!   answering ~0.57 s after start with a fenced old primary already ONLINE in the reader
//!   hostgroup only).
//! - Tables, with upstream's exact definitions (so the CHECK and UNIQUE messages are the
//!   real ones): `mysql_servers`, `runtime_mysql_servers`, `disk.mysql_servers`, the same
//!   three for `mysql_replication_hostgroups`, `global_variables` (the reference's monitor
//!   defaults, `mysql-monitor_history` 7200000 and the ping settings as measured,
//!   `mysql-server_version`, `admin-version`, `mysql-max_allowed_packet`, ...),
//!   `stats.stats_mysql_connection_pool` (always empty), `monitor.mysql_server_read_only_log`,
//!   `monitor.mysql_server_ping_log`.
//! - Routing behaviour, with `Options::with_monitor` (variables have no runtime layer
//!   here: the monitors read `global_variables` as it is at every round, intervals
//!   included; a `SET mysql-...` through the admin starts both monitors' next rounds at
//!   once, as upstream's monitors do on new variables, within 0.5 s):
//!   - The read_only monitor checks, every `mysql-monitor_read_only_interval`, each server
//!     of `runtime_mysql_servers` that sits in a hostgroup of a
//!     `runtime_mysql_replication_hostgroups` pair with a status other than OFFLINE_SOFT /
//!     OFFLINE_HARD and that answers pings (upstream's selection), with `SELECT
//!     @@global.read_only read_only` over a kept connection, logs the result and applies,
//!     **in runtime only** and in one atomic step per server, upstream's
//!     `read_only_action_v2` per pair: read_only=0 and no live (not OFFLINE_HARD) writer
//!     row → the live reader row is copied to the writer hostgroup as ONLINE (a SHUNNED
//!     reader row comes back ONLINE too), and the reader row is removed unless
//!     `mysql-monitor_writer_is_also_reader` is true; a live writer row (ONLINE, SHUNNED,
//!     OFFLINE_SOFT) is left alone, and so is a server with no live row in the pair — that
//!     is how fencing holds. read_only=1 and a live writer row → the writer row is removed
//!     and, unless a live reader row exists, an ONLINE reader row takes its place. So a
//!     LOAD that contradicts read_only lasts until the next check. A move also purges any
//!     OFFLINE_HARD row from runtime (upstream regenerates the table after purging unused
//!     OFFLINE_HARD servers). Every failed check is logged (measured on a killed backend):
//!     a kept connection that died → `Lost connection to server during query`; no
//!     connection → `timeout on creating new connection: Can't connect to server on
//!     '127.0.0.1' (115)` (refused) or `...: Lost connection to server at 'handshake:
//!     reading initial communication packet', system error: 110` (no answer within
//!     `mysql-monitor_connect_timeout`); a slow answer → `timeout check`. After
//!     `mysql-monitor_read_only_max_timeout_count` consecutive entries starting `timeout`
//!     the server is taken as read_only=1 (measured: a killed writer left the writer
//!     hostgroup for ONLINE in the reader hostgroup 3 s after the kill at the default
//!     1000 ms interval).
//!   - The ping monitor pings, every `mysql-monitor_ping_interval` (default 8000 ms), each
//!     server in runtime in any hostgroup but OFFLINE_HARD, logs into
//!     `monitor.mysql_server_ping_log` (`Can't connect to server on '127.0.0.1' (115)`,
//!     `timeout during ping` after `mysql-monitor_ping_timeout`, ...), and after each
//!     round shuns (ONLINE → SHUNNED in every hostgroup, in runtime) each server whose
//!     last `mysql-monitor_ping_max_failures` pings all failed, access denied aside;
//!     such a server gets no read_only check until a ping succeeds again (measured: a
//!     killed backend SHUNNED ~24 s after the kill at the defaults, its read_only checks
//!     stopped). Nothing unshuns it here but a LOAD (which resets runtime to memory's
//!     status) or a read_only move: on the real one only client traffic does, after
//!     `mysql-shun_recovery_time_sec` (measured: still SHUNNED minutes after the backend
//!     came back, with no traffic).
//!
//! Not implemented (a client relying on these must be tested against a real ProxySQL):
//! - TLS: a client asking for SSL in its handshake is refused with an ERR (tests do not
//!   use TLS; a real ProxySQL would upgrade). Compression, COM_CHANGE_USER,
//!   COM_RESET_CONNECTION (ERR 1045, so a mysql_async `Pool` must not reset connections).
//! - The "admin only from localhost" rule is moot: it only listens on 127.0.0.1.
//! - Other admin commands: `LOAD/SAVE MYSQL|ADMIN VARIABLES ...` answer OK and do nothing
//!   (variables have no runtime layer here); every other LOAD/SAVE/PROXYSQL command,
//!   users, query rules and the other hostgroup tables are absent, so they fail loudly
//!   with a syntax or `no such table` error. SHOW: only TABLES [FROM], DATABASES,
//!   [GLOBAL|MYSQL|ADMIN] VARIABLES and CREATE TABLE.
//! - The MySQL interface (6033), query routing, connection pooling and its statistics,
//!   so nothing that client traffic causes: OFFLINE_HARD dropping in-flight work, 2013 /
//!   9001 errors, an OFFLINE_HARD row lingering in runtime while a connection uses it,
//!   and the fast shunning of a dead backend (measured: SHUNNED 19 ms after a kill, but
//!   only with queries running; that is `MySrvC::connect_error`, `mysql-shun_on_failures`
//!   connect errors within a second, on the hostgroup the traffic uses) and the
//!   unshunning after `mysql-shun_recovery_time_sec`.
//! - The connect monitor (`mysql_server_connect_log`), replication lag, `check_type` other
//!   than `read_only`, the monitors' `mysql-monitor_enabled` switch, how long a real
//!   restart takes (here it is immediate, once the monitors' first round is done).

use super::wire::{
    err_payload, greeting, native_password_token, native_token, nonce, ok_payload, parse_login,
    read_packet, rows_packets, Outgoing, CLIENT_PROTOCOL_41, CLIENT_SSL, COM_INIT_DB, COM_PING,
    COM_QUERY, COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA,
};
use mysql_async::prelude::Queryable;
use regex::{NoExpand, Regex};
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What `select version()` and `admin-version` say.
pub const PROXYSQL_VERSION: &str = "2.7.1-16-g2726c27";
/// What the greeting says (`mysql-server_version`), not ProxySQL's own version.
pub const SERVER_VERSION: &str = "8.0.11";
/// Every admin error's code, access denied included.
pub const ADMIN_ERROR_CODE: u16 = 1045;
/// Every admin error's SQLSTATE.
pub const ADMIN_SQLSTATE: &str = "28000";
/// What every statement gets under `Failure::Error`: an error SQLite really gives.
pub const INJECTED_ERROR: &str = "ProxySQL Admin Error: database is locked";

/// How to start the stand-in.
#[derive(Clone, Debug)]
pub struct Options {
    /// Port on 127.0.0.1; `None`: a free one.
    pub port: Option<u16>,
    /// The admin account (ProxySQL's default: admin / admin).
    pub user: String,
    pub password: String,
    /// Run the read_only and ping monitors against the backends in runtime.
    pub monitor: Option<MonitorOptions>,
    /// How long `SAVE MYSQL SERVERS TO DISK` takes (ProxySQL 2.7.1: 7 ms on a quiet
    /// machine, up to 209 ms on a loaded one). Every other admin statement waits for it,
    /// as they wait on the real admin's one statement lock.
    pub save_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: None,
            user: "admin".into(),
            password: "admin".into(),
            monitor: None,
            save_delay: Duration::ZERO,
        }
    }
}

impl Options {
    /// Adds the read_only and ping monitors, logging into the backends as `user`.
    pub fn with_monitor(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
        interval: Duration,
    ) -> Options {
        self.monitor = Some(MonitorOptions {
            user: user.into(),
            password: password.into(),
            interval,
        });
        self
    }
}

/// The monitors' backend account (`mysql-monitor_username` / `_password`) and the
/// initial `mysql-monitor_read_only_interval` (ProxySQL's default: 1000 ms).
#[derive(Clone, Debug)]
pub struct MonitorOptions {
    pub user: String,
    pub password: String,
    pub interval: Duration,
}

/// A fault the admin interface shows until the next `set_failure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Behaves.
    None,
    /// Refuses connections: the listener and every open connection are closed. Back on
    /// the same port with any other value. The monitor keeps running, and so does the
    /// configuration: only the admin interface is unreachable.
    Down,
    /// Every response (greeting and login included) comes this much later; a statement
    /// runs after the delay, as on a busy server, so one a client gave up on may still
    /// run if the connection stays open.
    Slow(Duration),
    /// Every statement answers ERR 1045 `INJECTED_ERROR` and does nothing.
    Error,
    /// Only `SAVE MYSQL SERVERS TO DISK` answers ERR 1045 `INJECTED_ERROR` (a disk that
    /// is full or read-only); everything else behaves.
    SaveFails,
}

/// A running stand-in; dropping it closes everything it holds.
pub struct ProxySqlStandIn {
    shared: Arc<Shared>,
    monitor: Option<JoinHandle<()>>,
}

impl ProxySqlStandIn {
    /// Listens on 127.0.0.1 (`options.port`, else a free port) with an empty
    /// configuration, and starts the monitor if asked.
    pub async fn start(options: Options) -> ProxySqlStandIn {
        let requested = SocketAddr::from((Ipv4Addr::LOCALHOST, options.port.unwrap_or(0)));
        let listener = bind(requested).expect("the stand-in binds 127.0.0.1");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let db = open_database(&options, address);
        let (restarts, restarts_rx) = match options.monitor {
            Some(_) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            db: Mutex::new(db),
            user: options.user.clone(),
            password: options.password.clone(),
            address,
            failure: Mutex::new(Failure::None),
            crashed: AtomicBool::new(false),
            statements: Mutex::new(Vec::new()),
            listener: Mutex::new(None),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU32::new(1),
            statement_turn: tokio::sync::Mutex::new(()),
            save_delay: options.save_delay,
            restarts,
            variables_set: tokio::sync::Notify::new(),
        });
        shared.spawn_accept(listener);
        let monitor = options.monitor.zip(restarts_rx).map(|(monitor, restarts)| {
            let monitor = Monitor {
                shared: shared.clone(),
                user: monitor.user,
                password: monitor.password,
                pool: Arc::default(),
            };
            tokio::spawn(monitor.run(restarts))
        });
        ProxySqlStandIn { shared, monitor }
    }

    /// Where the admin interface listens.
    pub fn address(&self) -> SocketAddr {
        self.shared.address
    }

    /// Client options that connect cleanly here and to a real ProxySQL admin: TCP only,
    /// and `max_allowed_packet` / `wait_timeout` given so that mysql_async sends no
    /// `SELECT @@max_allowed_packet,@@wait_timeout` (a syntax error on the admin).
    pub fn client_opts(&self) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.shared.address.ip().to_string())
            .tcp_port(self.shared.address.port())
            .user(Some(self.shared.user.clone()))
            .pass(Some(self.shared.password.clone()))
            .prefer_socket(false)
            .max_allowed_packet(Some(64 * 1024 * 1024))
            .wait_timeout(Some(28_800))
            .into()
    }

    /// Injects a fault (or clears it). `Down` returns once the port refuses connections.
    pub async fn set_failure(&self, failure: Failure) {
        *lock(&self.shared.failure) = failure;
        if failure == Failure::Down {
            self.shared.close_all(None).await;
        } else {
            self.shared.listen_again().await;
        }
    }

    /// Reads the stand-in's SQLite directly (`runtime_mysql_servers`, `disk.mysql_servers`,
    /// `monitor.mysql_server_read_only_log`, ...), values as ProxySQL would send them.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let db = lock(&self.shared.db);
        let mut statement = db
            .prepare(sql)
            .unwrap_or_else(|e| panic!("stand-in rows({sql}): {e}"));
        let columns = statement.column_count();
        let mut rows = statement
            .query([])
            .unwrap_or_else(|e| panic!("stand-in rows({sql}): {e}"));
        let mut out = Vec::new();
        while let Some(row) = rows
            .next()
            .unwrap_or_else(|e| panic!("stand-in rows({sql}): {e}"))
        {
            out.push(
                (0..columns)
                    .map(|i| {
                        let value = row.get_ref(i).expect("column index below column_count");
                        render(value).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    })
                    .collect(),
            );
        }
        out
    }

    /// A hand edit behind the admin interface's back (drift): one statement, its change
    /// count.
    pub fn execute(&self, sql: &str) -> usize {
        lock(&self.shared.db)
            .execute(sql, [])
            .unwrap_or_else(|e| panic!("stand-in execute({sql}): {e}"))
    }

    /// A ProxySQL restart: every connection dropped, memory and runtime reloaded from disk
    /// (memory edits that were never saved are lost; OFFLINE_HARD rows stay out of
    /// runtime), the monitor logs emptied. With the monitors on, it returns once their
    /// first round (a ping and a read_only check of every target, moves applied) is done,
    /// as a real ProxySQL has rearranged runtime by read_only before its admin answers. It
    /// listens again unless `Down`, even after a crash (`crashed()` stays true).
    pub async fn restart_from_disk(&self) {
        self.shared.close_all(None).await;
        {
            let db = lock(&self.shared.db);
            for (from, to) in [(Layer::Disk, Layer::Memory), (Layer::Disk, Layer::Runtime)] {
                copy_layer(&db, from, to).expect("copying between the stand-in's own tables");
            }
            db.execute_batch(
                "DELETE FROM monitor.mysql_server_read_only_log;
                 DELETE FROM monitor.mysql_server_ping_log;",
            )
            .expect("the monitor logs exist");
        }
        if let Some(restarts) = &self.shared.restarts {
            let (done, started) = tokio::sync::oneshot::channel();
            if restarts.send(Restart(done)).is_ok() {
                let _ = started.await;
            }
        }
        if *lock(&self.shared.failure) != Failure::Down {
            self.shared.bind_again().await;
        }
    }

    /// Every statement received (COM_QUERY text), in order, whatever became of it.
    pub fn statements(&self) -> Vec<String> {
        lock(&self.shared.statements).clone()
    }

    /// Whether it listens on its port now. Asked of the stand-in itself, not by
    /// connecting: a port it let go of may at once be another test's.
    pub fn listening(&self) -> bool {
        lock(&self.shared.listener).is_some()
    }

    /// Whether a client crashed it (a query of nothing but `;` and whitespace). Sticky.
    pub fn crashed(&self) -> bool {
        self.shared.crashed.load(Ordering::SeqCst)
    }
}

impl Drop for ProxySqlStandIn {
    fn drop(&mut self) {
        if let Some(monitor) = &self.monitor {
            // Aborting the monitor drops its JoinSet of checks and its backend connections.
            monitor.abort();
        }
        if let Some(listener) = lock(&self.shared.listener).take() {
            listener.abort();
        }
        for (_, connection) in lock(&self.shared.connections).drain() {
            connection.abort();
        }
    }
}

/// State every task shares. The SQLite lock is never held across an await.
struct Shared {
    db: Mutex<Connection>,
    user: String,
    password: String,
    address: SocketAddr,
    failure: Mutex<Failure>,
    crashed: AtomicBool,
    statements: Mutex<Vec<String>>,
    listener: Mutex<Option<JoinHandle<()>>>,
    connections: Mutex<HashMap<u32, JoinHandle<()>>>,
    next_connection: AtomicU32,
    /// One admin statement at a time, as upstream's `sql_query_global_mutex`: a slow SAVE
    /// holds every other connection's statements.
    statement_turn: tokio::sync::Mutex<()>,
    save_delay: Duration,
    /// Tells the monitors of a restart; `None` without monitors.
    restarts: Option<tokio::sync::mpsc::UnboundedSender<Restart>>,
    /// A `SET mysql-...` through the admin: the monitors start their next rounds at once.
    variables_set: tokio::sync::Notify,
}

/// A poisoned lock only means another test task panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A listening socket with SO_REUSEADDR, so the same port can be bound again after
/// `Down` while the closed connections sit in TIME_WAIT.
fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(128)
}

impl Shared {
    fn spawn_accept(self: &Arc<Self>, listener: TcpListener) {
        let shared = self.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
                        let session = tokio::spawn(serve(shared.clone(), stream, peer, id));
                        let mut connections = lock(&shared.connections);
                        connections.retain(|_, task| !task.is_finished());
                        connections.insert(id, session);
                    }
                    // Out of file descriptors or the like: a pause beats a hot loop.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        *lock(&self.listener) = Some(task);
    }

    /// Stops listening and closes every connection but `except`, returning once all of
    /// their sockets are closed.
    async fn close_all(&self, except: Option<u32>) {
        let listener = lock(&self.listener).take();
        if let Some(listener) = listener {
            listener.abort();
            let _ = listener.await;
        }
        let connections: Vec<(u32, JoinHandle<()>)> = lock(&self.connections).drain().collect();
        for (id, connection) in connections {
            if Some(id) == except {
                continue; // the caller itself: dropping its handle only detaches it
            }
            connection.abort();
            let _ = connection.await;
        }
    }

    /// Listens again after `Down`, unless a crash took it down (only a restart revives it).
    async fn listen_again(self: &Arc<Self>) {
        if !self.crashed.load(Ordering::SeqCst) {
            self.bind_again().await;
        }
    }

    async fn bind_again(self: &Arc<Self>) {
        if lock(&self.listener).is_some() {
            return;
        }
        // Another socket may hold the port for a moment (an outgoing connection given it
        // as an ephemeral port): retry briefly, then fail the test loudly.
        let mut attempts = 0;
        let listener = loop {
            match bind(self.address) {
                Ok(listener) => break listener,
                Err(e) if attempts >= 100 => panic!("stand-in: rebinding {}: {e}", self.address),
                Err(_) => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.spawn_accept(listener);
    }

    fn failure(&self) -> Failure {
        *lock(&self.failure)
    }

    async fn delay(&self) {
        if let Failure::Slow(delay) = self.failure() {
            tokio::time::sleep(delay).await;
        }
    }

    fn record(&self, statement: &str) {
        lock(&self.statements).push(statement.to_owned());
    }

    async fn crash(&self, me: u32) {
        self.crashed.store(true, Ordering::SeqCst);
        tracing::warn!(
            address = %self.address,
            "ProxySQL stand-in crashed on a query of only `;`, as ProxySQL 2.7.1 does"
        );
        self.close_all(Some(me)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The admin database: upstream's table definitions, verbatim, so SQLite's CHECK and
// UNIQUE messages are the ones a real ProxySQL sends.

/// `ADMIN_SQLITE_TABLE_MYSQL_SERVERS_V2_0_11` (also `runtime_` and `disk.`).
const MYSQL_SERVERS: &str = "(hostgroup_id INT CHECK (hostgroup_id>=0) NOT NULL DEFAULT 0 , hostname VARCHAR NOT NULL , port INT CHECK (port >= 0 AND port <= 65535) NOT NULL DEFAULT 3306 , gtid_port INT CHECK ((gtid_port <> port OR gtid_port=0) AND gtid_port >= 0 AND gtid_port <= 65535) NOT NULL DEFAULT 0 , status VARCHAR CHECK (UPPER(status) IN ('ONLINE','SHUNNED','OFFLINE_SOFT', 'OFFLINE_HARD')) NOT NULL DEFAULT 'ONLINE' , weight INT CHECK (weight >= 0 AND weight <=10000000) NOT NULL DEFAULT 1 , compression INT CHECK (compression IN(0,1)) NOT NULL DEFAULT 0 , max_connections INT CHECK (max_connections >=0) NOT NULL DEFAULT 1000 , max_replication_lag INT CHECK (max_replication_lag >= 0 AND max_replication_lag <= 126144000) NOT NULL DEFAULT 0 , use_ssl INT CHECK (use_ssl IN(0,1)) NOT NULL DEFAULT 0 , max_latency_ms INT UNSIGNED CHECK (max_latency_ms>=0) NOT NULL DEFAULT 0 , comment VARCHAR NOT NULL DEFAULT '' , PRIMARY KEY (hostgroup_id, hostname, port) )";

/// `ADMIN_SQLITE_TABLE_MYSQL_REPLICATION_HOSTGROUPS_V2_0_8` (also `runtime_` and `disk.`).
const MYSQL_REPLICATION_HOSTGROUPS: &str = "(writer_hostgroup INT CHECK (writer_hostgroup>=0) NOT NULL PRIMARY KEY , reader_hostgroup INT NOT NULL CHECK (reader_hostgroup<>writer_hostgroup AND reader_hostgroup>=0) , check_type VARCHAR CHECK (LOWER(check_type) IN ('read_only','innodb_read_only','super_read_only','read_only|innodb_read_only','read_only&innodb_read_only')) NOT NULL DEFAULT 'read_only' , comment VARCHAR NOT NULL DEFAULT '', UNIQUE (reader_hostgroup))";

const GLOBAL_VARIABLES: &str =
    "(variable_name VARCHAR NOT NULL PRIMARY KEY , variable_value VARCHAR NOT NULL)";

const STATS_MYSQL_CONNECTION_POOL: &str = "(hostgroup INT , srv_host VARCHAR , srv_port INT , status VARCHAR , ConnUsed INT , ConnFree INT , ConnOK INT , ConnERR INT , MaxConnUsed INT , Queries INT , Queries_GTID_sync INT , Bytes_data_sent INT , Bytes_data_recv INT , Latency_us INT)";

const MYSQL_SERVER_READ_ONLY_LOG: &str = "( hostname VARCHAR NOT NULL , port INT NOT NULL DEFAULT 3306 , time_start_us INT NOT NULL DEFAULT 0 , success_time_us INT DEFAULT 0 , read_only INT DEFAULT 1 , error VARCHAR , PRIMARY KEY (hostname, port, time_start_us))";

const MYSQL_SERVER_PING_LOG: &str = "( hostname VARCHAR NOT NULL , port INT NOT NULL DEFAULT 3306 , time_start_us INT NOT NULL DEFAULT 0 , ping_success_time_us INT DEFAULT 0 , ping_error VARCHAR , PRIMARY KEY (hostname, port, time_start_us))";

/// The tables "MYSQL SERVERS" covers here (upstream: these and the other hostgroup
/// tables, which the stand-in does not have).
const SERVER_TABLES: [&str; 2] = ["mysql_servers", "mysql_replication_hostgroups"];

fn open_database(options: &Options, address: SocketAddr) -> Connection {
    let db = Connection::open_in_memory().expect("an in-memory SQLite opens");
    db.execute_batch(&format!(
        "CREATE TABLE mysql_servers {MYSQL_SERVERS};
         CREATE TABLE runtime_mysql_servers {MYSQL_SERVERS};
         CREATE TABLE mysql_replication_hostgroups {MYSQL_REPLICATION_HOSTGROUPS};
         CREATE TABLE runtime_mysql_replication_hostgroups {MYSQL_REPLICATION_HOSTGROUPS};
         CREATE TABLE global_variables {GLOBAL_VARIABLES};
         ATTACH DATABASE ':memory:' AS disk;
         CREATE TABLE disk.mysql_servers {MYSQL_SERVERS};
         CREATE TABLE disk.mysql_replication_hostgroups {MYSQL_REPLICATION_HOSTGROUPS};
         ATTACH DATABASE ':memory:' AS stats;
         CREATE TABLE stats.stats_mysql_connection_pool {STATS_MYSQL_CONNECTION_POOL};
         ATTACH DATABASE ':memory:' AS monitor;
         CREATE TABLE monitor.mysql_server_read_only_log {MYSQL_SERVER_READ_ONLY_LOG};
         CREATE TABLE monitor.mysql_server_ping_log {MYSQL_SERVER_PING_LOG};"
    ))
    .expect("upstream's table definitions are valid SQLite");
    let (monitor_user, monitor_password, interval) = match &options.monitor {
        Some(m) => (m.user.clone(), m.password.clone(), m.interval),
        None => (
            "monitor".into(),
            "monitor".into(),
            Duration::from_millis(1000),
        ),
    };
    let variables: Vec<(&str, String)> = vec![
        (
            "admin-admin_credentials",
            format!("{}:{}", options.user, options.password),
        ),
        ("admin-mysql_ifaces", address.to_string()),
        ("admin-version", PROXYSQL_VERSION.into()),
        ("mysql-connect_timeout_server_max", "10000".into()),
        ("mysql-max_allowed_packet", "67108864".into()),
        ("mysql-monitor_connect_timeout", "600".into()),
        ("mysql-monitor_enabled", "true".into()),
        ("mysql-monitor_history", "7200000".into()),
        ("mysql-monitor_password", monitor_password),
        ("mysql-monitor_ping_interval", "8000".into()),
        ("mysql-monitor_ping_max_failures", "3".into()),
        ("mysql-monitor_ping_timeout", "1000".into()),
        (
            "mysql-monitor_read_only_interval",
            interval.as_millis().to_string(),
        ),
        ("mysql-monitor_read_only_max_timeout_count", "3".into()),
        ("mysql-monitor_read_only_timeout", "800".into()),
        ("mysql-monitor_username", monitor_user),
        ("mysql-monitor_writer_is_also_reader", "true".into()),
        ("mysql-server_version", SERVER_VERSION.into()),
        ("mysql-wait_timeout", "28800000".into()),
    ];
    for (name, value) in variables {
        db.execute(
            "INSERT INTO global_variables VALUES (?1, ?2)",
            params![name, value],
        )
        .expect("distinct variable names");
    }
    db
}

#[derive(Clone, Copy)]
enum Layer {
    Memory,
    Runtime,
    Disk,
}

impl Layer {
    fn table(self, table: &str) -> String {
        match self {
            Layer::Memory => format!("main.{table}"),
            Layer::Runtime => format!("main.runtime_{table}"),
            Layer::Disk => format!("disk.{table}"),
        }
    }
}

/// One LOAD/SAVE: every "MYSQL SERVERS" table of `to` replaced by `from`'s, atomically.
/// Into runtime, OFFLINE_HARD rows are left out (upstream keeps an OFFLINE_HARD server
/// only while a connection uses it, and nothing here has connections) and every status
/// is upper case (upstream keeps them as numbers).
fn copy_layer(db: &Connection, from: Layer, to: Layer) -> rusqlite::Result<()> {
    let tx = db.unchecked_transaction()?;
    for table in SERVER_TABLES {
        let (source, target) = (from.table(table), to.table(table));
        tx.execute_batch(&format!(
            "DELETE FROM {target}; INSERT INTO {target} SELECT * FROM {source};"
        ))?;
    }
    if matches!(to, Layer::Runtime) {
        tx.execute_batch(
            "DELETE FROM main.runtime_mysql_servers WHERE UPPER(status)='OFFLINE_HARD';
             UPDATE main.runtime_mysql_servers SET status=UPPER(status);",
        )?;
    }
    tx.commit()
}

/// `LOAD|SAVE MYSQL SERVERS ...` with upstream's aliases, on a command already trimmed,
/// collapsed and upper-cased.
fn servers_command(command: &str) -> Option<(Layer, Layer)> {
    let rest = command
        .strip_prefix("LOAD MYSQL SERVERS ")
        .map(|r| (true, r));
    let rest = rest.or_else(|| {
        command
            .strip_prefix("SAVE MYSQL SERVERS ")
            .map(|r| (false, r))
    });
    match rest? {
        (true, "TO RUNTIME" | "TO RUN" | "FROM MEMORY" | "FROM MEM") => {
            Some((Layer::Memory, Layer::Runtime))
        }
        (true, "FROM DISK" | "TO MEMORY" | "TO MEM") => Some((Layer::Disk, Layer::Memory)),
        (false, "TO DISK" | "FROM MEMORY" | "FROM MEM") => Some((Layer::Memory, Layer::Disk)),
        (false, "FROM RUNTIME" | "FROM RUN" | "TO MEMORY" | "TO MEM") => {
            Some((Layer::Runtime, Layer::Memory))
        }
        _ => None,
    }
}

/// `LOAD|SAVE MYSQL|ADMIN VARIABLES ...`: accepted, nothing to do here.
fn variables_command(command: &str) -> bool {
    let Some(rest) = ["LOAD MYSQL VARIABLES ", "LOAD ADMIN VARIABLES "]
        .iter()
        .find_map(|p| command.strip_prefix(p))
        .map(|r| (true, r))
        .or_else(|| {
            ["SAVE MYSQL VARIABLES ", "SAVE ADMIN VARIABLES "]
                .iter()
                .find_map(|p| command.strip_prefix(p))
                .map(|r| (false, r))
        })
    else {
        return false;
    };
    matches!(
        rest,
        (
            true,
            "TO RUNTIME"
                | "TO RUN"
                | "FROM MEMORY"
                | "FROM MEM"
                | "FROM DISK"
                | "TO MEMORY"
                | "TO MEM"
                | "FROM CONFIG"
        ) | (
            false,
            "TO DISK"
                | "FROM MEMORY"
                | "FROM MEM"
                | "FROM RUNTIME"
                | "FROM RUN"
                | "TO MEMORY"
                | "TO MEM"
        )
    )
}

// ---------------------------------------------------------------------------------------
// Statements.

/// What a COM_QUERY gets.
enum Reply {
    Ok(u64),
    Rows(Vec<String>, Vec<Vec<Option<Vec<u8>>>>),
    /// The whole message, `ProxySQL Admin Error: ...`.
    Err(String),
}

fn admin_error(message: impl std::fmt::Display) -> Reply {
    Reply::Err(format!("ProxySQL Admin Error: {message}"))
}

/// Whitespace trimmed and collapsed to single spaces: upstream's `query_no_space`.
fn no_space(query: &str) -> String {
    query.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether the query crashes ProxySQL 2.7.1: with its whitespace collapsed it is
/// nothing but `;` and spaces, and upstream's loop that strips trailing `;` and spaces
/// (`admin_session_handler`, "fix bug #925") runs off the start of the string. An empty,
/// blank or comment-only query does not crash it: SQLite finds no statement there.
fn crashes_proxysql(query: &str) -> bool {
    let collapsed = no_space(query);
    !collapsed.is_empty() && collapsed.bytes().all(|b| b == b';' || b == b' ')
}

/// `SAVE MYSQL SERVERS TO DISK` and its aliases: the statement `save_delay` slows.
fn saves_to_disk(query: &str) -> bool {
    let no_space = no_space(query);
    let upper = no_space.trim_end_matches([';', ' ']).to_ascii_uppercase();
    matches!(servers_command(&upper), Some((Layer::Memory, Layer::Disk)))
}

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a valid pattern"))
}

impl Shared {
    /// The answer to one COM_QUERY, in upstream's order: admin commands on the whole
    /// (trimmed) query, then SET, then the rewrites of SELECT @@..., then SQLite.
    fn answer(&self, query: &str) -> Reply {
        let no_space = no_space(query);
        let command = no_space.trim_end_matches([';', ' ']);
        let upper = command.to_ascii_uppercase();
        if let Some((from, to)) = servers_command(&upper) {
            let db = lock(&self.db);
            return match copy_layer(&db, from, to) {
                Ok(()) => Reply::Ok(0),
                Err(e) => admin_error(sqlite_message(&e)),
            };
        }
        if variables_command(&upper)
            || matches!(
                upper.as_str(),
                "BEGIN" | "START TRANSACTION" | "COMMIT" | "ROLLBACK"
            )
        {
            return Reply::Ok(0);
        }
        if upper.starts_with("SET ") {
            return self.set(command);
        }
        let sql = self.rewrite(&no_space, command);
        let db = lock(&self.db);
        match first_statement(&db, sql.as_deref().unwrap_or(query)) {
            Ok(reply) => reply,
            Err(e) => admin_error(sqlite_message(&e)),
        }
    }

    /// `SET mysql-x=...` / `SET admin-x=...` change `global_variables` (upstream rewrites
    /// them into an UPDATE); every other SET (autocommit, NAMES, ...) is a no-op.
    fn set(&self, command: &str) -> Reply {
        static SET_VARIABLE: OnceLock<Regex> = OnceLock::new();
        let set_variable = regex(
            &SET_VARIABLE,
            r"(?i)^SET\s+((?:mysql|admin)-[0-9A-Za-z_]+)\s*=\s*(.*)$",
        );
        let Some(captures) = set_variable.captures(command) else {
            return Reply::Ok(0);
        };
        let name = captures[1].to_ascii_lowercase();
        let raw = captures[2].trim();
        let value = raw
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| raw.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .unwrap_or(raw);
        let db = lock(&self.db);
        match db.execute(
            "UPDATE global_variables SET variable_value=?1 WHERE variable_name=?2",
            params![value, name],
        ) {
            Ok(changed) => {
                self.variables_set.notify_one();
                Reply::Ok(changed as u64)
            }
            Err(e) => admin_error(sqlite_message(&e)),
        }
    }

    /// Upstream's rewrites, on `query_no_space` (`command`: without trailing `;`).
    fn rewrite(&self, no_space: &str, command: &str) -> Option<String> {
        static MAX_PACKET: OnceLock<Regex> = OnceLock::new();
        static MAX_PACKET_REPLACE: OnceLock<Regex> = OnceLock::new();
        static VARIABLE: OnceLock<Regex> = OnceLock::new();
        static VARIABLE_REPLACE: OnceLock<Regex> = OnceLock::new();
        let lower = no_space.to_ascii_lowercase();
        if lower == "select @@version_comment limit 1" {
            return Some("SELECT '(ProxySQL Admin Module)'".into());
        }
        if lower == "select database(), user() limit 1" {
            return Some(format!(
                "SELECT \"admin\" AS 'DATABASE()', \"{}\" AS 'USER()'",
                self.user
            ));
        }
        if lower.starts_with("select @@version") {
            return Some(format!("SELECT '{PROXYSQL_VERSION}' AS '@@version'"));
        }
        if lower.starts_with("select version()") {
            return Some(format!("SELECT '{PROXYSQL_VERSION}' AS 'version()'"));
        }
        // Upstream replaces only the matched head: whatever follows it (`,@@wait_timeout`)
        // stays, and SQLite then rejects the query.
        if regex(&MAX_PACKET, r"(?i)^SELECT\s+@@max_allowed_packet\s*").is_match(no_space) {
            let replace = regex(&MAX_PACKET_REPLACE, r"^(\w+)\s+@@(\w+)\s*");
            return Some(
                replace
                    .replacen(
                        no_space,
                        1,
                        NoExpand(
                            "SELECT variable_value AS '@@max_allowed_packet' FROM global_variables WHERE variable_name='mysql-max_allowed_packet'",
                        ),
                    )
                    .into_owned(),
            );
        }
        if regex(&VARIABLE, r"(?i)^SELECT\s+@@[0-9A-Za-z_-]+\s*").is_match(no_space) {
            let replace = regex(&VARIABLE_REPLACE, r"^(\w+)  *@@([0-9A-Za-z_-]+) *");
            return Some(
                replace
                    .replacen(
                        no_space,
                        1,
                        "SELECT variable_value AS '@@${2}' FROM global_variables WHERE variable_name='${2}'",
                    )
                    .into_owned(),
            );
        }
        show_rewrite(command)
    }
}

/// The SHOW commands upstream turns into SQLite queries (a subset).
fn show_rewrite(command: &str) -> Option<String> {
    let upper = command.to_ascii_uppercase();
    let variables =
        "SELECT variable_name AS Variable_name, variable_value AS Value FROM global_variables";
    match upper.as_str() {
        "SHOW TABLES" => {
            return Some("SELECT name AS tables FROM sqlite_master WHERE type='table' AND name NOT IN ('sqlite_sequence') ORDER BY name".into())
        }
        "SHOW DATABASES" | "SHOW SCHEMAS" => return Some("PRAGMA DATABASE_LIST".into()),
        "SHOW VARIABLES" | "SHOW GLOBAL VARIABLES" | "SHOW ALL VARIABLES" => {
            return Some(format!("{variables} ORDER BY variable_name"))
        }
        "SHOW MYSQL VARIABLES" => {
            return Some(format!(
                "{variables} WHERE variable_name LIKE 'mysql-%' ORDER BY variable_name"
            ))
        }
        "SHOW ADMIN VARIABLES" => {
            return Some(format!(
                "{variables} WHERE variable_name LIKE 'admin-%' ORDER BY variable_name"
            ))
        }
        _ => {}
    }
    if upper.starts_with("SHOW TABLES FROM ") {
        let schema = &command["SHOW TABLES FROM ".len()..];
        return Some(format!("SELECT name AS tables FROM {schema}.sqlite_master WHERE type='table' AND name NOT IN ('sqlite_sequence') ORDER BY name"));
    }
    if upper.starts_with("SHOW CREATE TABLE ") {
        let name = command["SHOW CREATE TABLE ".len()..].replace('`', "");
        let (schema, table) = name.split_once('.').unwrap_or(("main", name.as_str()));
        return Some(format!(
            "SELECT name AS 'table', sql AS 'Create Table' FROM {schema}.sqlite_master WHERE type='table' AND name='{table}'"
        ));
    }
    None
}

/// Runs the first statement of `sql` and ignores the rest, as `sqlite3_prepare_v2` does.
fn first_statement(db: &Connection, sql: &str) -> rusqlite::Result<Reply> {
    let reply = {
        let mut batch = rusqlite::Batch::new(db, sql);
        // No statement at all (empty, blank, only comments): `sqlite3_prepare_v2` gives
        // no statement and SQLITE_OK, whose message ProxySQL sends as an error.
        let Some(mut statement) = batch.next()? else {
            return Ok(admin_error("not an error"));
        };
        let columns = statement.column_count();
        if columns > 0 {
            let names = statement
                .column_names()
                .into_iter()
                .map(String::from)
                .collect();
            let mut rows = statement.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(
                    (0..columns)
                        .map(|i| row.get_ref(i).map(render))
                        .collect::<rusqlite::Result<_>>()?,
                );
            }
            Reply::Rows(names, out)
        } else {
            Reply::Ok(statement.execute([])? as u64)
        }
    };
    // No transactions: one opened some other way (BEGIN IMMEDIATE, SAVEPOINT) would hold
    // every other session's and the monitor's writes hostage.
    if !db.is_autocommit() {
        db.execute_batch("COMMIT")?;
    }
    Ok(reply)
}

/// SQLite's own message, as ProxySQL puts it after `ProxySQL Admin Error: `.
fn sqlite_message(error: &rusqlite::Error) -> String {
    match error {
        rusqlite::Error::SqliteFailure(_, Some(message)) => message.clone(),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

/// A value as text, the way SQLite's `sqlite3_column_text` renders it.
fn render(value: ValueRef<'_>) -> Option<Vec<u8>> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string().into_bytes()),
        ValueRef::Real(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => {
            Some(format!("{f:.1}").into_bytes())
        }
        ValueRef::Real(f) => Some(f.to_string().into_bytes()),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Some(bytes.to_vec()),
    }
}

fn reply_packets(out: &mut Outgoing, reply: &Reply) {
    match reply {
        Reply::Ok(affected) => out.packet(&ok_payload(*affected)),
        Reply::Err(message) => out.packet(&admin_err_payload(message)),
        Reply::Rows(columns, rows) => rows_packets(out, columns, rows),
    }
}

/// An error as ProxySQL's admin sends every one: code 1045, state 28000.
fn admin_err_payload(message: &str) -> Vec<u8> {
    err_payload(ADMIN_ERROR_CODE, ADMIN_SQLSTATE, message)
}
/// One client connection, from greeting to goodbye; removes itself from the registry.
async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr, id: u32) {
    // Small request/response packets: Nagle would only add delays.
    let _ = stream.set_nodelay(true);
    let _ = session(&shared, &mut stream, peer, id).await;
    lock(&shared.connections).remove(&id);
}

async fn session(
    shared: &Arc<Shared>,
    stream: &mut TcpStream,
    peer: SocketAddr,
    id: u32,
) -> io::Result<()> {
    let nonce = nonce();
    shared.delay().await;
    let mut out = Outgoing::new(0);
    out.packet(&greeting(SERVER_VERSION, id, &nonce));
    out.send(stream).await?;

    let (seq, response) = read_packet(stream).await?;
    let seq = seq.wrapping_add(1);
    let Some(login) = parse_login(&response) else {
        let mut out = Outgoing::new(seq);
        out.packet(&admin_err_payload(
            "ProxySQL Error: malformed handshake response",
        ));
        out.send(stream).await?;
        return Ok(());
    };
    if login.capabilities & CLIENT_SSL != 0 {
        // The client will now speak TLS and read this as a broken handshake: a refusal.
        let mut out = Outgoing::new(seq);
        out.packet(&admin_err_payload(
            "ProxySQL stand-in: TLS is not supported by this test double; connect without SSL",
        ));
        out.send(stream).await?;
        return Ok(());
    }
    if login.capabilities & CLIENT_PROTOCOL_41 == 0 {
        let mut out = Outgoing::new(seq);
        out.packet(&admin_err_payload("ProxySQL Error: protocol 4.1 required"));
        out.send(stream).await?;
        return Ok(());
    }
    let user = login.user.clone();
    let (token, seq) = native_password_token(stream, login, &nonce, seq).await?;
    shared.delay().await;
    let mut out = Outgoing::new(seq);
    if user != shared.user || token != native_token(&shared.password, &nonce) {
        let using = if token.is_empty() { "NO" } else { "YES" };
        out.packet(&admin_err_payload(&format!(
            "ProxySQL Error: Access denied for user '{}'@'{}' (using password: {using})",
            user,
            peer.ip()
        )));
        out.send(stream).await?;
        return Ok(());
    }
    out.packet(&ok_payload(0));
    out.send(stream).await?;

    loop {
        let (seq, payload) = read_packet(stream).await?;
        let seq = seq.wrapping_add(1);
        let Some((&command, body)) = payload.split_first() else {
            return Ok(());
        };
        let mut out = Outgoing::new(seq);
        match command {
            COM_QUIT => return Ok(()),
            COM_QUERY => {
                let query = String::from_utf8_lossy(body).into_owned();
                shared.record(&query);
                if crashes_proxysql(&query) {
                    shared.crash(id).await;
                    return Ok(());
                }
                shared.delay().await;
                let turn = shared.statement_turn.lock().await;
                let failure = shared.failure();
                let reply = if failure == Failure::Error
                    || (failure == Failure::SaveFails && saves_to_disk(&query))
                {
                    Reply::Err(INJECTED_ERROR.into())
                } else {
                    if !shared.save_delay.is_zero() && saves_to_disk(&query) {
                        tokio::time::sleep(shared.save_delay).await;
                    }
                    shared.answer(&query)
                };
                drop(turn);
                reply_packets(&mut out, &reply);
            }
            COM_INIT_DB | COM_PING => {
                shared.delay().await;
                out.packet(&ok_payload(0));
            }
            // These expect no answer.
            COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA => continue,
            // COM_STMT_PREPARE and every other command.
            _ => {
                shared.delay().await;
                out.packet(&admin_err_payload("Command not supported"));
            }
        }
        out.send(stream).await?;
    }
}

// ---------------------------------------------------------------------------------------
// The monitors: read_only and ping, as upstream's `MySQL_Monitor` runs them.

type Backend = (String, u16);

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// What libmariadb says when the connection dies under a query (a killed backend, seen
/// through a connection the monitor had kept).
const LOST_CONNECTION: &str = "Lost connection to server during query";

/// What `restart_from_disk` asks of the monitors: start over as a restarted ProxySQL's
/// do, and say when their first round is done.
struct Restart(tokio::sync::oneshot::Sender<()>);

/// The monitor's settings, read from `global_variables` at every round (there is no
/// runtime layer for variables here).
struct MonitorSettings {
    read_only_interval: Duration,
    ping_interval: Duration,
    connect_timeout: Duration,
    read_only_timeout: Duration,
    ping_timeout: Duration,
    max_timeout_count: i64,
    ping_max_failures: i64,
    writer_is_also_reader: bool,
    history_us: i64,
}

impl Shared {
    fn variable(db: &Connection, name: &str) -> Option<String> {
        db.query_row(
            "SELECT variable_value FROM global_variables WHERE variable_name=?1",
            [name],
            |row| row.get(0),
        )
        .optional()
        .ok()
        .flatten()
    }

    fn monitor_settings(&self) -> MonitorSettings {
        let db = lock(&self.db);
        let number = |name: &str, default: i64| {
            Self::variable(&db, name)
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(default)
        };
        let millis = |name: &str, default: i64| {
            Duration::from_millis(u64::try_from(number(name, default)).unwrap_or(0))
        };
        let ping_interval = number("mysql-monitor_ping_interval", 8000);
        let ping_max_failures = number("mysql-monitor_ping_max_failures", 3);
        let mut history = number("mysql-monitor_history", 7_200_000);
        // Upstream (issue #626): the history always covers the pings that shun.
        if history < ping_interval * (ping_max_failures + 1) && ping_interval < 3_600_000 {
            history = ping_interval * (ping_max_failures + 1);
        }
        MonitorSettings {
            // A zero interval would spin: one millisecond is as often as it gets here.
            read_only_interval: millis("mysql-monitor_read_only_interval", 1000)
                .max(Duration::from_millis(1)),
            ping_interval: millis("mysql-monitor_ping_interval", 8000)
                .max(Duration::from_millis(1)),
            connect_timeout: millis("mysql-monitor_connect_timeout", 600),
            read_only_timeout: millis("mysql-monitor_read_only_timeout", 800),
            ping_timeout: millis("mysql-monitor_ping_timeout", 1000),
            max_timeout_count: number("mysql-monitor_read_only_max_timeout_count", 3),
            ping_max_failures,
            writer_is_also_reader: Self::variable(&db, "mysql-monitor_writer_is_also_reader")
                .is_none_or(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1")),
            history_us: history * 1000,
        }
    }

    /// Upstream's read_only selection: servers of a replication pair, not OFFLINE_SOFT or
    /// OFFLINE_HARD, that answer pings.
    fn read_only_targets(&self, settings: &MonitorSettings) -> Vec<Backend> {
        let targets = self.backends(
            "SELECT DISTINCT s.hostname, s.port FROM runtime_mysql_servers s \
             JOIN runtime_mysql_replication_hostgroups r \
             ON s.hostgroup_id=r.writer_hostgroup OR s.hostgroup_id=r.reader_hostgroup \
             WHERE UPPER(s.status) NOT IN ('OFFLINE_SOFT','OFFLINE_HARD')",
        );
        targets
            .into_iter()
            .filter(|backend| !self.missed_pings(backend, settings.ping_max_failures))
            .collect()
    }

    /// Upstream's ping selection: every server in runtime, in any hostgroup, but
    /// OFFLINE_HARD.
    fn ping_targets(&self) -> Vec<Backend> {
        self.backends(
            "SELECT DISTINCT hostname, port FROM runtime_mysql_servers \
             WHERE UPPER(status) <> 'OFFLINE_HARD'",
        )
    }

    fn backends(&self, sql: &str) -> Vec<Backend> {
        let db = lock(&self.db);
        let mut statement = db.prepare(sql).expect("the runtime tables exist");
        let targets = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, u16>(1)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        targets.unwrap_or_default()
    }

    fn log_read_only(
        &self,
        (host, port): &Backend,
        start_us: i64,
        success_us: i64,
        read_only: Option<i64>,
        error: Option<&str>,
        history_us: i64,
    ) {
        let db = lock(&self.db);
        let _ = db.execute(
            "INSERT OR REPLACE INTO monitor.mysql_server_read_only_log VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![host, port, start_us, success_us, read_only, error],
        );
        let _ = db.execute(
            "DELETE FROM monitor.mysql_server_read_only_log WHERE time_start_us < ?1",
            [start_us - history_us],
        );
    }

    fn log_ping(
        &self,
        (host, port): &Backend,
        start_us: i64,
        success_us: i64,
        error: Option<&str>,
        history_us: i64,
    ) {
        let db = lock(&self.db);
        let _ = db.execute(
            "INSERT OR REPLACE INTO monitor.mysql_server_ping_log VALUES (?1, ?2, ?3, ?4, ?5)",
            params![host, port, start_us, success_us, error],
        );
        let _ = db.execute(
            "DELETE FROM monitor.mysql_server_ping_log WHERE time_start_us < ?1",
            [start_us - history_us],
        );
    }

    /// Upstream: the last `count` checks all timed out → "Assuming read_only=1". A
    /// failed connect is logged as `timeout on creating new connection: ...`, so a dead
    /// backend counts too.
    fn missed_read_only_checks(&self, backend: &Backend, count: i64) -> bool {
        self.last_all_match(
            "SELECT 1 FROM (SELECT hostname,port,read_only,error FROM monitor.mysql_server_read_only_log \
             WHERE hostname=?1 AND port=?2 ORDER BY time_start_us DESC LIMIT ?3) a \
             WHERE read_only IS NULL AND SUBSTR(error,1,7) = 'timeout' \
             GROUP BY hostname,port HAVING COUNT(*)=?3",
            backend,
            count,
        )
    }

    /// Whether `sql` (over the last `?3` log rows of backend `?1:?2`) finds a row: the
    /// shape of upstream's "the last N checks all failed" queries.
    fn last_all_match(&self, sql: &str, (host, port): &Backend, count: i64) -> bool {
        lock(&self.db)
            .query_row(sql, params![host, port, count], |_| Ok(()))
            .optional()
            .ok()
            .flatten()
            .is_some()
    }

    /// Upstream's `server_responds_to_ping`, negated: the last `count` pings all failed
    /// (access denied aside).
    fn missed_pings(&self, backend: &Backend, count: i64) -> bool {
        self.last_all_match(
            "SELECT 1 FROM (SELECT hostname,port,ping_error FROM monitor.mysql_server_ping_log \
             WHERE hostname=?1 AND port=?2 ORDER BY time_start_us DESC LIMIT ?3) a \
             WHERE ping_error IS NOT NULL AND ping_error NOT LIKE 'Access denied for user%' \
             AND ping_error NOT LIKE 'ProxySQL Error: Access denied for user%' \
             AND ping_error NOT LIKE 'Your password has expired.%' \
             GROUP BY hostname,port HAVING COUNT(*)=?3",
            backend,
            count,
        )
    }

    /// Upstream's `shun_and_killall`: every ONLINE row of the server SHUNNED, in runtime.
    fn shun(&self, (host, port): &Backend) -> usize {
        lock(&self.db)
            .execute(
                "UPDATE runtime_mysql_servers SET status='SHUNNED' \
                 WHERE hostname=?1 AND port=?2 AND UPPER(status)='ONLINE'",
                params![host, port],
            )
            .unwrap_or(0)
    }

    /// `read_only_action_v2` for one server, in runtime only, as one transaction.
    fn read_only_action(&self, (host, port): &Backend, read_only: i64, also_reader: bool) {
        let db = lock(&self.db);
        let result = (|| -> rusqlite::Result<()> {
            let tx = db.unchecked_transaction()?;
            let pairs: Vec<(i64, i64)> = tx
                .prepare(
                    "SELECT writer_hostgroup, reader_hostgroup FROM runtime_mysql_replication_hostgroups",
                )?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let live = |hostgroup: i64| -> rusqlite::Result<bool> {
                let status: Option<String> = tx
                    .query_row(
                        "SELECT status FROM runtime_mysql_servers WHERE hostgroup_id=?1 AND hostname=?2 AND port=?3",
                        params![hostgroup, host, port],
                        |row| row.get(0),
                    )
                    .optional()?;
                Ok(status.is_some_and(|s| !s.eq_ignore_ascii_case("OFFLINE_HARD")))
            };
            // The row of `from` copied into `to` as ONLINE, replacing whatever was there;
            // a SHUNNED source comes back ONLINE too (upstream's `copy_if_not_exists`: the
            // check just reached the server).
            let copy = |from: i64, to: i64| -> rusqlite::Result<()> {
                tx.execute(
                    "INSERT OR REPLACE INTO runtime_mysql_servers (hostgroup_id, hostname, port, gtid_port, status, weight, compression, max_connections, max_replication_lag, use_ssl, max_latency_ms, comment) \
                     SELECT ?1, hostname, port, gtid_port, 'ONLINE', weight, compression, max_connections, max_replication_lag, use_ssl, max_latency_ms, comment \
                     FROM runtime_mysql_servers WHERE hostgroup_id=?2 AND hostname=?3 AND port=?4",
                    params![to, from, host, port],
                )?;
                tx.execute(
                    "UPDATE runtime_mysql_servers SET status='ONLINE' \
                     WHERE hostgroup_id=?1 AND hostname=?2 AND port=?3 AND UPPER(status)='SHUNNED'",
                    params![from, host, port],
                )?;
                Ok(())
            };
            let remove = |hostgroup: i64| {
                tx.execute(
                    "DELETE FROM runtime_mysql_servers WHERE hostgroup_id=?1 AND hostname=?2 AND port=?3",
                    params![hostgroup, host, port],
                )
            };
            let mut changed = false;
            for (writer, reader) in pairs {
                if read_only == 0 {
                    if !live(writer)? && live(reader)? {
                        copy(reader, writer)?;
                        if !also_reader {
                            remove(reader)?;
                        }
                        changed = true;
                    }
                } else if live(writer)? {
                    if !live(reader)? {
                        copy(writer, reader)?;
                    }
                    remove(writer)?;
                    changed = true;
                }
            }
            if changed {
                // Upstream regenerates the table after purging OFFLINE_HARD servers that no
                // connection uses: here no connection uses any.
                tx.execute(
                    "DELETE FROM runtime_mysql_servers WHERE UPPER(status)='OFFLINE_HARD'",
                    [],
                )?;
            }
            tx.commit()
        })();
        if let Err(e) = result {
            tracing::warn!(host = %host, port, error = %e, "stand-in monitor: read_only action failed");
        }
    }
}

/// Both monitors and the connections they keep (upstream: one pool for every check).
#[derive(Clone)]
struct Monitor {
    shared: Arc<Shared>,
    user: String,
    password: String,
    pool: Arc<Mutex<HashMap<Backend, Vec<mysql_async::Conn>>>>,
}

impl Monitor {
    /// A kept connection, else a new one within `mysql-monitor_connect_timeout`; the
    /// error as libmariadb words it.
    async fn connection(
        &self,
        (host, port): &Backend,
        timeout: Duration,
    ) -> Result<(mysql_async::Conn, bool), String> {
        if let Some(conn) = lock(&self.pool)
            .get_mut(&(host.clone(), *port))
            .and_then(Vec::pop)
        {
            return Ok((conn, true));
        }
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(host.clone())
            .tcp_port(*port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .prefer_socket(false);
        match tokio::time::timeout(timeout, mysql_async::Conn::new(opts)).await {
            Ok(Ok(conn)) => Ok((conn, false)),
            Ok(Err(mysql_async::Error::Server(e))) => Err(e.message),
            Ok(Err(mysql_async::Error::Io(mysql_async::IoError::Io(e))))
                if e.kind() == io::ErrorKind::ConnectionRefused =>
            {
                // The errno is EINPROGRESS: libmariadb connects without blocking.
                Err(format!("Can't connect to server on '{host}' (115)"))
            }
            Ok(Err(e)) => Err(format!("Can't connect to server on '{host}' ({e})")),
            Err(_) => Err(
                "Lost connection to server at 'handshake: reading initial communication packet', system error: 110"
                    .to_owned(),
            ),
        }
    }

    fn keep(&self, backend: Backend, conn: mysql_async::Conn) {
        lock(&self.pool).entry(backend).or_default().push(conn);
    }

    /// One read_only check, logged and acted on, as upstream's `monitor_read_only_thread`.
    async fn check_read_only(self, backend: Backend) {
        let settings = self.shared.monitor_settings();
        let start_us = now_us();
        let started = Instant::now();
        let mut conn = match self.connection(&backend, settings.connect_timeout).await {
            Ok((conn, _)) => conn,
            Err(error) => {
                let error = format!("timeout on creating new connection: {error}");
                self.failed_read_only(&backend, start_us, &error, &settings);
                return;
            }
        };
        let query =
            conn.query_first::<mysql_async::Value, _>("SELECT @@global.read_only read_only");
        let outcome = tokio::time::timeout(settings.read_only_timeout, query).await;
        match outcome {
            Ok(Ok(value)) => {
                // Upstream: read_only=1 unless the server says "0" or "OFF".
                let read_only = match value {
                    Some(mysql_async::Value::Int(0)) | Some(mysql_async::Value::UInt(0)) => 0,
                    Some(mysql_async::Value::Bytes(b))
                        if b == b"0" || b.eq_ignore_ascii_case(b"OFF") =>
                    {
                        0
                    }
                    _ => 1,
                };
                let took = started.elapsed().as_micros() as i64;
                self.shared.log_read_only(
                    &backend,
                    start_us,
                    took,
                    Some(read_only),
                    None,
                    settings.history_us,
                );
                self.shared
                    .read_only_action(&backend, read_only, settings.writer_is_also_reader);
                self.keep(backend, conn);
            }
            // The connection is dropped: the next check connects anew.
            Ok(Err(e)) => self.failed_read_only(&backend, start_us, &query_error(e), &settings),
            Err(_) => self.failed_read_only(&backend, start_us, "timeout check", &settings),
        }
    }

    fn failed_read_only(
        &self,
        backend: &Backend,
        start_us: i64,
        error: &str,
        settings: &MonitorSettings,
    ) {
        self.shared
            .log_read_only(backend, start_us, 0, None, Some(error), settings.history_us);
        if self
            .shared
            .missed_read_only_checks(backend, settings.max_timeout_count)
        {
            tracing::warn!(
                host = %backend.0,
                port = backend.1,
                "stand-in monitor: missed read_only checks, assuming read_only=1"
            );
            self.shared
                .read_only_action(backend, 1, settings.writer_is_also_reader);
        }
    }

    /// One ping, logged, as upstream's ping monitor.
    async fn ping(&self, backend: Backend, settings: &MonitorSettings) {
        let start_us = now_us();
        let started = Instant::now();
        let error = match self.connection(&backend, settings.connect_timeout).await {
            Err(error) => Some(error),
            Ok((mut conn, _)) => {
                match tokio::time::timeout(settings.ping_timeout, conn.ping()).await {
                    Ok(Ok(())) => {
                        let took = started.elapsed().as_micros() as i64;
                        self.shared
                            .log_ping(&backend, start_us, took, None, settings.history_us);
                        self.keep(backend, conn);
                        return;
                    }
                    Ok(Err(e)) => Some(query_error(e)),
                    Err(_) => Some("timeout during ping".to_owned()),
                }
            }
        };
        self.shared
            .log_ping(&backend, start_us, 0, error.as_deref(), settings.history_us);
    }

    /// Every server pinged at once; then, as upstream, each one whose last
    /// `mysql-monitor_ping_max_failures` pings all failed is shunned.
    async fn ping_round(self) {
        let settings = self.shared.monitor_settings();
        let targets = self.shared.ping_targets();
        futures::future::join_all(targets.iter().map(|b| self.ping(b.clone(), &settings))).await;
        for backend in targets {
            if self
                .shared
                .missed_pings(&backend, settings.ping_max_failures)
                && self.shared.shun(&backend) > 0
            {
                tracing::warn!(
                    host = %backend.0,
                    port = backend.1,
                    "stand-in monitor: missed heartbeats, shunning it"
                );
            }
        }
    }

    /// Both monitors' loops until the stand-in is dropped. Each read_only interval, one
    /// check per target not already being checked (a hung backend delays only itself,
    /// as upstream's asynchronous checks do); each ping interval, one ping round unless
    /// the last one is still running. A restart starts both over at once.
    async fn run(self, mut restarts: tokio::sync::mpsc::UnboundedReceiver<Restart>) {
        let in_flight: Arc<Mutex<HashSet<Backend>>> = Arc::default();
        let mut checks = JoinSet::new();
        let mut pings = JoinSet::new();
        let mut next_read_only = tokio::time::Instant::now();
        let mut next_ping = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_read_only) => {
                    let settings = self.shared.monitor_settings();
                    next_read_only = tokio::time::Instant::now() + settings.read_only_interval;
                    while checks.try_join_next().is_some() {}
                    for backend in self.shared.read_only_targets(&settings) {
                        if !lock(&in_flight).insert(backend.clone()) {
                            continue;
                        }
                        let guard = InFlight { set: in_flight.clone(), backend: backend.clone() };
                        let check = self.clone().check_read_only(backend);
                        checks.spawn(async move {
                            check.await;
                            drop(guard);
                        });
                    }
                }
                _ = tokio::time::sleep_until(next_ping) => {
                    let settings = self.shared.monitor_settings();
                    next_ping = tokio::time::Instant::now() + settings.ping_interval;
                    while pings.try_join_next().is_some() {}
                    if pings.is_empty() {
                        pings.spawn(self.clone().ping_round());
                    }
                }
                () = self.shared.variables_set.notified() => {
                    // Upstream: new variables → `next_loop_at=0` in both loops, which sleep
                    // at most 0.5 s at a time.
                    next_read_only = tokio::time::Instant::now();
                    next_ping = next_read_only;
                }
                Some(Restart(done)) = restarts.recv() => {
                    // A restarted ProxySQL: no check survives, no connection is kept, and
                    // both monitors run at once, before the admin listens (measured: the
                    // first read_only check ~0.28 s after start, the admin ~0.57 s).
                    checks.abort_all();
                    while checks.join_next().await.is_some() {}
                    pings.abort_all();
                    while pings.join_next().await.is_some() {}
                    lock(&self.pool).clear();
                    let settings = self.shared.monitor_settings();
                    let targets = self.shared.read_only_targets(&settings);
                    let read_only = futures::future::join_all(
                        targets.into_iter().map(|b| self.clone().check_read_only(b)),
                    );
                    futures::future::join(self.clone().ping_round(), read_only).await;
                    let now = tokio::time::Instant::now();
                    next_read_only = now + settings.read_only_interval;
                    next_ping = now + settings.ping_interval;
                    let _ = done.send(());
                }
            }
        }
    }
}

/// A failed query as libmariadb words it: the server's own message, or a lost connection.
fn query_error(error: mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(e) => e.message,
        _ => LOST_CONNECTION.to_owned(),
    }
}

/// Marks a backend free again however its check ends (done, panicked, aborted).
struct InFlight {
    set: Arc<Mutex<HashSet<Backend>>>,
    backend: Backend,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.set).remove(&self.backend);
    }
}
