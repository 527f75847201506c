//! A fleet simulator: thousands of simulated MySQL 9.7 servers in one process, each its
//! own `host:3306` on loopback (`127.B.x.y`: 127.0.0.0/8 is all local), grouped in
//! clusters of one primary and its replicas, for measuring what one agent costs at
//! scale (`benches/fleet.rs`) where real servers cannot run by the thousand.
//!
//! Each instance speaks the MySQL protocol (`wire`) and answers every statement the
//! agent's probe, liveness watch, agent lock and failover send — and nothing else: an
//! unknown statement is an error 1064 naming it, and is counted (`Fleet::unknown`). The
//! answers are built from the raw output of a real MySQL 9.7.4 sandbox
//! (`tests/fixtures/mysql-9.7/healthy__*`): its columns, in its order, with this
//! instance's values put in. GTID sets advance (each primary commits a transaction every
//! tick, its replicas follow), heartbeats count, and the statements of a failover act:
//! STOP/START REPLICA, RESET REPLICA ALL, CHANGE REPLICATION SOURCE TO, read_only,
//! WAIT_FOR_EXECUTED_GTID_SET. An instance can be killed (its sockets are shut at
//! once, as the kernel shuts a killed process's, and new ones are refused; its
//! replicas' IO threads start failing with error 2003) and
//! started again, or frozen (it accepts, and answers nothing, as a stopped process).

use super::wire::{
    err_payload, greeting, native_password_token, native_token, nonce, ok_payload, ok_payload_then,
    parse_login, read_packet, result_set, Columns, Outgoing, CLIENT_SSL, COM_INIT_DB, COM_PING,
    COM_QUERY, COM_QUIT,
};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What every simulated instance says it is.
pub const VERSION: &str = "9.7.4-sim";
/// The port every instance listens on, each on its own address.
pub const PORT: u16 = 3306;
/// How often primaries commit and replicas catch up and hear a heartbeat.
const TICK: Duration = Duration::from_millis(250);

/// The shape of the fleet.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub clusters: usize,
    /// Replicas per cluster (each cluster has one primary besides).
    pub replicas: usize,
    pub user: String,
    pub password: String,
}

/// One simulated server.
struct Instance {
    address: Ipv4Addr,
    server_id: u32,
    uuid: String,
    read_only: bool,
    super_read_only: bool,
    /// Whom it replicates from (an index into the fleet), with both threads' state.
    source: Option<usize>,
    io_running: bool,
    sql_running: bool,
    /// Executed GTIDs: the last sequence number of each server uuid, in first-seen order.
    executed: Vec<(String, u64)>,
    heartbeats: u64,
    alive: bool,
    frozen: bool,
    /// The connection holding the agent lock (`GET_LOCK`), if any.
    lock: Option<u32>,
    /// What each parked connection is running (its processlist INFO).
    parked: HashMap<u32, String>,
    /// The sockets of its open connections and its listening socket: a kill shuts
    /// them at once, as the kernel does when a server's process dies, not when their
    /// tasks next run (which, on a busy simulator, can be hundreds of ms later).
    sockets: HashMap<u32, RawFd>,
    listening: Option<RawFd>,
    /// Bumped on kill and start: the instance's tasks end when it moves.
    generation: watch::Sender<u64>,
    /// Since when it takes writes (alive, read_only OFF, replicating from no one), as
    /// the statement that made it so ran: a benchmark times a failover to this
    /// instant, not to when its own poll next looks.
    writable_since: Option<std::time::Instant>,
}

impl Instance {
    /// Whether it takes writes: alive, read_only OFF, replicating from nobody.
    fn takes_writes(&self) -> bool {
        self.alive && !self.read_only && self.source.is_none()
    }

    /// Notes the instant it became writable, or that it no longer is.
    fn note_writable(&mut self) {
        match (self.takes_writes(), self.writable_since) {
            (true, None) => self.writable_since = Some(std::time::Instant::now()),
            (false, Some(_)) => self.writable_since = None,
            _ => {}
        }
    }

    fn key(&self) -> String {
        format!("{}:{PORT}", self.address)
    }

    fn gtid_set(&self) -> String {
        self.executed
            .iter()
            .filter(|(_, last)| *last > 0)
            .map(|(uuid, last)| format!("{uuid}:1-{last}"))
            .collect::<Vec<_>>()
            .join(",\n")
    }

    /// Whether `self` has executed everything in `wanted` (`uuid:1-N` parts).
    fn has_executed(&self, wanted: &str) -> bool {
        wanted
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .all(|part| {
                let Some((uuid, range)) = part.split_once(':') else {
                    return false;
                };
                let last: u64 = range
                    .rsplit(['-', ':'])
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(u64::MAX);
                self.executed
                    .iter()
                    .any(|(have, seq)| have == uuid && *seq >= last)
            })
    }
}

/// The fleet's state, shared by every connection.
struct State {
    instances: Vec<Instance>,
    by_address: HashMap<Ipv4Addr, usize>,
}

/// The answers of the real server to copy, column by column.
struct Templates {
    replica_status: Vec<(String, Option<String>)>,
    replica_status_columns: Arc<Columns>,
    replicas: Vec<(String, Option<String>)>,
    replicas_columns: Arc<Columns>,
}

/// A running fleet; dropping it stops every instance.
pub struct Fleet {
    state: Arc<Mutex<State>>,
    shared: Arc<Shared>,
    ticker: tokio::task::JoinHandle<()>,
}

/// What connections need besides the state.
struct Shared {
    options: FleetOptions,
    templates: Templates,
    next_connection: AtomicU32,
    /// Statements answered, and statements no instance knows (with the last one).
    answered: AtomicU64,
    unknown: Mutex<(u64, String)>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Addresses handed out in this process so far: fleets started side by side (tests run
/// in parallel) never share one.
static ADDRESSES_USED: AtomicUsize = AtomicUsize::new(0);

/// The address of the `nth` instance this process starts: 127.B.x.y, y from 1 to 250,
/// with B from the process id, so two processes' fleets do not meet either.
fn address_of(nth: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        address_block(),
        (nth / 250) as u8,
        (nth % 250 + 1) as u8,
    )
}

/// This process's B in 127.B.x.y: `FLEET_ADDRESS_BLOCK` when set (a benchmark that
/// splits one fleet across processes gives each its own), else from the process id.
pub fn address_block() -> u8 {
    std::env::var("FLEET_ADDRESS_BLOCK")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(16 + (std::process::id() % 200) as u8)
}

impl Fleet {
    /// Starts every instance of `options` listening, clusters replicating.
    pub async fn start(options: FleetOptions) -> io::Result<Fleet> {
        let templates = Templates::read(&fixtures())?;
        let size = options.clusters * (1 + options.replicas);
        let first = ADDRESSES_USED.fetch_add(size, Ordering::Relaxed);
        assert!(
            first + size <= 250 * 256,
            "a process simulates at most 64,000 instances"
        );
        let mut instances = Vec::with_capacity(size);
        for index in 0..size {
            let cluster = index / (1 + options.replicas);
            let primary = cluster * (1 + options.replicas);
            let is_primary = index == primary;
            // Unique across the processes of one fleet too (the block is in it).
            let block = address_block();
            let uuid_of = |i: usize| {
                format!(
                    "5eed{:04x}-{block:04x}-4000-8000-{i:012x}",
                    cluster % 0xffff
                )
            };
            instances.push(Instance {
                address: address_of(first + index),
                server_id: 100 + index as u32,
                uuid: uuid_of(index),
                read_only: !is_primary,
                super_read_only: !is_primary,
                source: (!is_primary).then_some(primary),
                io_running: !is_primary,
                sql_running: !is_primary,
                executed: vec![(uuid_of(primary), 10)],
                heartbeats: 0,
                alive: true,
                frozen: false,
                lock: None,
                parked: HashMap::new(),
                sockets: HashMap::new(),
                listening: None,
                generation: watch::channel(0).0,
                writable_since: is_primary.then(std::time::Instant::now),
            });
        }
        let by_address = instances
            .iter()
            .enumerate()
            .map(|(i, instance)| (instance.address, i))
            .collect();
        let state = Arc::new(Mutex::new(State {
            instances,
            by_address,
        }));
        let shared = Arc::new(Shared {
            options,
            templates,
            next_connection: AtomicU32::new(10),
            answered: AtomicU64::new(0),
            unknown: Mutex::new((0, String::new())),
        });
        for index in 0..size {
            listen(&state, &shared, index).await?;
        }
        let ticker = tokio::spawn(tick(state.clone()));
        Ok(Fleet {
            state,
            shared,
            ticker,
        })
    }

    /// Every instance's `host:port`, cluster by cluster, each primary first.
    pub fn keys(&self) -> Vec<String> {
        lock(&self.state)
            .instances
            .iter()
            .map(Instance::key)
            .collect()
    }

    /// The primaries' keys, one per cluster.
    pub fn primaries(&self) -> Vec<String> {
        let per = 1 + self.shared.options.replicas;
        self.keys().into_iter().step_by(per).collect()
    }

    fn index(&self, key: &str) -> usize {
        let address: Ipv4Addr = key
            .split(':')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{key} is not a fleet address"));
        *lock(&self.state)
            .by_address
            .get(&address)
            .unwrap_or_else(|| panic!("{key} is not in the fleet"))
    }

    /// Kills an instance: its connections close, new ones are refused, its replicas
    /// lose it (IO thread connecting, error 2003).
    pub fn kill(&self, key: &str) {
        let index = self.index(key);
        let mut state = lock(&self.state);
        let instance = &mut state.instances[index];
        instance.alive = false;
        instance.note_writable();
        instance.lock = None;
        instance.parked.clear();
        let sockets = instance.sockets.drain().map(|(_, fd)| fd);
        for fd in sockets.chain(instance.listening.take()) {
            // SAFETY: a registered descriptor is open: its owner unregisters it, under
            // this lock, before it closes it.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        instance.generation.send_modify(|g| *g += 1);
    }

    /// Starts a killed instance again, as it was (read_only as a restarted MySQL with
    /// `super_read_only` persisted comes back), replicating from nobody's new primary.
    pub async fn start_again(&self, key: &str) -> io::Result<()> {
        let index = self.index(key);
        {
            let mut state = lock(&self.state);
            let instance = &mut state.instances[index];
            instance.alive = true;
            instance.read_only = true;
            instance.super_read_only = true;
            instance.generation.send_modify(|g| *g += 1);
        }
        listen(&self.state, &self.shared, index).await
    }

    /// Freezes an instance (or thaws it): it accepts and answers nothing.
    pub fn freeze(&self, key: &str, frozen: bool) {
        let index = self.index(key);
        let mut state = lock(&self.state);
        state.instances[index].frozen = frozen;
        // Wakes its tasks without moving the generation: they look at `frozen` again.
        state.instances[index].generation.send_modify(|_| {});
    }

    /// Whether the instance takes writes (read_only OFF) and replicates from nobody.
    pub fn writable(&self, key: &str) -> bool {
        let index = self.index(key);
        lock(&self.state).instances[index].takes_writes()
    }

    /// Since when `key` takes writes, as the statement that made it so ran; `None`
    /// while it does not.
    pub fn writable_since(&self, key: &str) -> Option<std::time::Instant> {
        let index = self.index(key);
        lock(&self.state).instances[index].writable_since
    }

    /// Statements answered so far, and those no instance knows (count, last one).
    pub fn statements(&self) -> (u64, u64, String) {
        let unknown = self
            .shared
            .unknown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (
            self.shared.answered.load(Ordering::Relaxed),
            unknown.0,
            unknown.1,
        )
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.ticker.abort();
        let mut state = lock(&self.state);
        for instance in &mut state.instances {
            instance.alive = false;
            instance.generation.send_modify(|g| *g += 1);
        }
    }
}

/// `tests/fixtures/mysql-9.7`, wherever the crate is.
fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mysql-9.7")
}

impl Templates {
    fn read(dir: &Path) -> io::Result<Templates> {
        let first_row = |name: &str| -> io::Result<Vec<(String, Option<String>)>> {
            let text = std::fs::read_to_string(dir.join(name))?;
            Ok(vertical_rows(&text).into_iter().next().unwrap_or_default())
        };
        let replica_status = first_row("healthy__node2__show-replica-status.txt")?;
        let replicas = first_row("healthy__node1__show-replicas.txt")?;
        let columns_of = |row: &[(String, Option<String>)]| {
            Arc::new(Columns::named(row.iter().map(|(name, _)| name)))
        };
        Ok(Templates {
            replica_status_columns: columns_of(&replica_status),
            replica_status,
            replicas_columns: columns_of(&replicas),
            replicas,
        })
    }
}

/// The rows of the mysql client's `--vertical` output, columns in order.
fn vertical_rows(text: &str) -> Vec<Vec<(String, Option<String>)>> {
    let mut rows: Vec<Vec<(String, Option<String>)>> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with("-- ")) {
        if line.starts_with("***") {
            rows.push(Vec::new());
        } else if let (Some(row), Some((name, value))) = (rows.last_mut(), line.split_once(':')) {
            let name = name.trim();
            if name.is_empty() || name.contains(' ') {
                continue;
            }
            let value = value.strip_prefix(' ').unwrap_or(value);
            row.push((
                name.to_string(),
                (value != "NULL").then(|| value.to_string()),
            ));
        }
    }
    rows
}

/// Listens for instance `index` until it is killed.
async fn listen(state: &Arc<Mutex<State>>, shared: &Arc<Shared>, index: usize) -> io::Result<()> {
    let (address, mut generation) = {
        let state = lock(state);
        let instance = &state.instances[index];
        (instance.address, instance.generation.subscribe())
    };
    let listener = TcpListener::bind(SocketAddr::from((address, PORT))).await?;
    lock(state).instances[index].listening = Some(listener.as_raw_fd());
    let state = state.clone();
    let shared = shared.clone();
    tokio::spawn(async move {
        let born = *generation.borrow_and_update();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut stream, _)) = accepted else {
                        // A killed instance's listening socket is shut.
                        if lock(&state).instances[index].alive {
                            continue;
                        }
                        return;
                    };
                    let state = state.clone();
                    let shared = shared.clone();
                    let generation = generation.clone();
                    tokio::spawn(async move {
                        let _ = stream.set_nodelay(true);
                        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
                        let open = Open::register(&state, index, id, stream.as_raw_fd());
                        let _ = connection(&state, &shared, index, &mut stream, id, generation).await;
                        drop(open);
                    });
                }
                changed = generation.changed() => {
                    if changed.is_err() || *generation.borrow() != born {
                        // Killed: the listener closes (its socket was shut already).
                        let mut state = lock(&state);
                        let instance = &mut state.instances[index];
                        if instance.listening == Some(listener.as_raw_fd()) {
                            instance.listening = None;
                        }
                        return;
                    }
                }
            }
        }
    });
    Ok(())
}

/// A connection known to its instance (its socket, its lock, its park) until it ends:
/// dropped before the socket closes, so that a kill never shuts a descriptor that was
/// closed and taken by another socket meanwhile.
struct Open<'a> {
    state: &'a Mutex<State>,
    index: usize,
    id: u32,
}

impl<'a> Open<'a> {
    fn register(state: &'a Mutex<State>, index: usize, id: u32, fd: RawFd) -> Self {
        let mut locked = lock(state);
        let instance = &mut locked.instances[index];
        if instance.alive {
            instance.sockets.insert(id, fd);
        }
        Open { state, index, id }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        let mut state = lock(self.state);
        let instance = &mut state.instances[self.index];
        instance.sockets.remove(&self.id);
        instance.parked.remove(&self.id);
        if instance.lock == Some(self.id) {
            instance.lock = None;
        }
    }
}

/// Waits while the instance is frozen; false once it is killed.
async fn thawed(state: &Mutex<State>, index: usize, generation: &mut watch::Receiver<u64>) -> bool {
    let born = *generation.borrow();
    loop {
        {
            let state = lock(state);
            let instance = &state.instances[index];
            if !instance.alive || *generation.borrow() != born {
                return false;
            }
            if !instance.frozen {
                return true;
            }
        }
        if generation.changed().await.is_err() {
            return false;
        }
    }
}

/// One client connection: the login, then statements until it quits or the instance
/// is killed.
async fn connection(
    state: &Arc<Mutex<State>>,
    shared: &Arc<Shared>,
    index: usize,
    stream: &mut TcpStream,
    id: u32,
    mut generation: watch::Receiver<u64>,
) -> io::Result<()> {
    if !thawed(state, index, &mut generation).await {
        return Ok(());
    }
    let nonce = nonce();
    let mut out = Outgoing::new(0);
    out.packet(&greeting(VERSION, id, &nonce));
    out.send(stream).await?;
    let (seq, response) = read_packet(stream).await?;
    let seq = seq.wrapping_add(1);
    let Some(login) = parse_login(&response) else {
        return Ok(());
    };
    if login.capabilities & CLIENT_SSL != 0 {
        let mut out = Outgoing::new(seq);
        out.packet(&err_payload(
            2026,
            "HY000",
            "the fleet simulator speaks no TLS",
        ));
        out.send(stream).await?;
        return Ok(());
    }
    let user = login.user.clone();
    let (token, seq) = native_password_token(stream, login, &nonce, seq).await?;
    let mut out = Outgoing::new(seq);
    if user != shared.options.user || token != native_token(&shared.options.password, &nonce) {
        out.packet(&err_payload(
            1045,
            "28000",
            &format!("Access denied for user '{user}'@'127.0.0.1' (using password: YES)"),
        ));
        out.send(stream).await?;
        return Ok(());
    }
    out.packet(&ok_payload(0));
    out.send(stream).await?;

    loop {
        let (seq, payload) = tokio::select! {
            read = read_packet(stream) => read?,
            _ = generation.changed() => {
                if !lock(state).instances[index].alive {
                    return Ok(());
                }
                continue;
            }
        };
        let seq = seq.wrapping_add(1);
        let Some((&command, body)) = payload.split_first() else {
            return Ok(());
        };
        if !thawed(state, index, &mut generation).await {
            return Ok(());
        }
        let mut out = Outgoing::new(seq);
        match command {
            COM_QUIT => return Ok(()),
            COM_PING | COM_INIT_DB => out.packet(&ok_payload(0)),
            COM_QUERY => {
                let query = String::from_utf8_lossy(body).into_owned();
                // Several statements in one query (CLIENT_MULTI_STATEMENTS): one
                // result set each, in order, until the first error, as a server does.
                let statements = split_statements(&query);
                let last = statements.len().saturating_sub(1);
                for (position, statement) in statements.into_iter().enumerate() {
                    shared.answered.fetch_add(1, Ordering::Relaxed);
                    let answer = {
                        let mut state = lock(state);
                        let answer = answer(&mut state, &shared.templates, index, id, statement);
                        state.instances[index].note_writable();
                        answer
                    };
                    let answer = match answer {
                        Answer::Sleep(duration) => {
                            // Parked: answered after `duration`, or never if it is killed.
                            // Nothing of the query is sent before it ends: a server
                            // sends a multi-statement query's results when it ends.
                            tokio::select! {
                                _ = tokio::time::sleep(duration) => {}
                                _ = killed(state, index, &mut generation) => return Ok(()),
                            }
                            lock(state).instances[index].parked.remove(&id);
                            Answer::Ok
                        }
                        other => other,
                    };
                    let more = position < last;
                    match answer {
                        Answer::Ok => out.packet(&ok_payload_then(0, more)),
                        Answer::Rows(columns, rows) => result_set(&mut out, &columns, &rows, more),
                        Answer::Error(code, message) => {
                            if code == 1064 {
                                let mut unknown =
                                    shared.unknown.lock().unwrap_or_else(|p| p.into_inner());
                                unknown.0 += 1;
                                unknown.1 = statement.to_string();
                            }
                            out.packet(&err_payload(code, "42000", &message));
                            break;
                        }
                        Answer::Sleep(_) => unreachable!("answered above"),
                    }
                }
            }
            _ => out.packet(&err_payload(1047, "08S01", "Unknown command")),
        }
        out.send(stream).await?;
    }
}

/// Resolves when the instance is killed.
async fn killed(state: &Mutex<State>, index: usize, generation: &mut watch::Receiver<u64>) {
    loop {
        if generation.changed().await.is_err() || !lock(state).instances[index].alive {
            return;
        }
    }
}

enum Answer {
    Ok,
    Rows(Arc<Columns>, Vec<Vec<Option<String>>>),
    Error(u16, String),
    /// `DO SLEEP(seconds)`: OK once it has slept.
    Sleep(Duration),
}

/// A result set of one row: `"column" => value, …`, the columns encoded once per call
/// site.
macro_rules! one_row {
    ($($name:literal => $value:expr),+ $(,)?) => {{
        static COLUMNS: std::sync::LazyLock<Arc<Columns>> =
            std::sync::LazyLock::new(|| Arc::new(Columns::named([$($name),+])));
        Answer::Rows(COLUMNS.clone(), vec![vec![$($value),+]])
    }};
}

/// The columns `names`, encoded once per call site.
macro_rules! columns {
    ($($name:literal),+ $(,)?) => {{
        static COLUMNS: std::sync::LazyLock<Arc<Columns>> =
            std::sync::LazyLock::new(|| Arc::new(Columns::named([$($name),+])));
        COLUMNS.clone()
    }};
}

fn flag(on: bool) -> Option<String> {
    Some(if on { "1" } else { "0" }.into())
}

/// A quoted SQL string's contents, after `after` in `query`.
fn quoted_after<'a>(query: &'a str, after: &str) -> Option<&'a str> {
    let start = query.find(after)? + after.len();
    let rest = &query[start..];
    let open = rest.find('\'')? + 1;
    let close = rest[open..].find('\'')? + open;
    Some(&rest[open..close])
}

/// The statements of a query, split at the semicolons outside quotes; empty ones (a
/// trailing semicolon) are left out.
fn split_statements(query: &str) -> Vec<&str> {
    let mut statements = Vec::new();
    let mut quote = None;
    let mut start = 0;
    for (at, c) in query.char_indices() {
        match (quote, c) {
            (None, '\'' | '"' | '`') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            (None, ';') => {
                statements.push(&query[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    statements.push(&query[start..]);
    let mut statements: Vec<&str> = statements
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
    if statements.is_empty() {
        statements.push(query);
    }
    statements
}

/// What instance `index` answers to `query` on connection `id`.
fn answer(state: &mut State, templates: &Templates, index: usize, id: u32, query: &str) -> Answer {
    let q = query.trim();
    let lower = q.to_ascii_lowercase();
    if lower.starts_with("select @@max_allowed_packet") {
        return one_row! {
            "@@max_allowed_packet" => Some("67108864".into()),
            "@@wait_timeout" => Some("28800".into()),
        };
    }
    if lower == "select @@version as version" {
        return one_row! { "version" => Some(VERSION.into()) };
    }
    if lower.starts_with("select @@server_id as server_id, @@server_uuid") {
        let i = &state.instances[index];
        return one_row! {
            "server_id" => Some(i.server_id.to_string()),
            "server_uuid" => Some(i.uuid.clone()),
            "version" => Some(VERSION.into()),
            "read_only" => flag(i.read_only),
            "super_read_only" => flag(i.super_read_only),
            "log_bin" => flag(true),
            "binlog_format" => Some("ROW".into()),
            "log_replica_updates" => flag(true),
            "gtid_mode" => Some("ON".into()),
            "gtid_executed" => Some(i.gtid_set()),
            "persisted_super_read_only" => Some("ON".into()),
        };
    }
    if lower == "show replica status" {
        return replica_status(state, templates, index);
    }
    if lower.starts_with("select s.channel_name, s.count_received_heartbeats") {
        let i = &state.instances[index];
        if i.source.is_none() {
            return Answer::Rows(
                columns!(
                    "CHANNEL_NAME",
                    "COUNT_RECEIVED_HEARTBEATS",
                    "HEARTBEAT_INTERVAL",
                    "LAST_ERROR_NUMBER",
                    "LAST_ERROR_MESSAGE",
                ),
                Vec::new(),
            );
        }
        // No applier worker of a simulated replica ever fails.
        return one_row! {
            "CHANNEL_NAME" => Some(String::new()),
            "COUNT_RECEIVED_HEARTBEATS" => Some(i.heartbeats.to_string()),
            "HEARTBEAT_INTERVAL" => Some("1.000".into()),
            "LAST_ERROR_NUMBER" => None,
            "LAST_ERROR_MESSAGE" => None,
        };
    }
    if lower.starts_with("show global variables like 'rpl_semi_sync")
        || lower.starts_with("show global status like 'rpl_semi_sync")
    {
        return Answer::Rows(columns!("Variable_name", "Value"), Vec::new());
    }
    if lower == "show replicas" {
        let replicas: Vec<usize> = (0..state.instances.len())
            .filter(|r| state.instances[*r].source == Some(index) && state.instances[*r].alive)
            .collect();
        let rows = replicas
            .iter()
            .map(|r| {
                let replica = &state.instances[*r];
                templates
                    .replicas
                    .iter()
                    .map(|(name, value)| match name.as_str() {
                        "Server_Id" => Some(replica.server_id.to_string()),
                        "Host" => Some(replica.address.to_string()),
                        "Port" => Some(PORT.to_string()),
                        "Source_Id" => Some(state.instances[index].server_id.to_string()),
                        "Replica_UUID" => Some(replica.uuid.clone()),
                        _ => value.clone(),
                    })
                    .collect()
            })
            .collect();
        return Answer::Rows(templates.replicas_columns.clone(), rows);
    }
    if lower.starts_with("select host from information_schema.processlist") {
        let rows = (0..state.instances.len())
            .filter(|r| {
                state.instances[*r].source == Some(index)
                    && state.instances[*r].alive
                    && state.instances[*r].io_running
            })
            .map(|r| {
                vec![Some(format!(
                    "{}:{}",
                    state.instances[r].address,
                    40000 + r % 20000
                ))]
            })
            .collect();
        return Answer::Rows(columns!("HOST"), rows);
    }
    if lower.starts_with("select get_lock('pointsman.agent'") {
        let i = &mut state.instances[index];
        let got = match i.lock {
            None => {
                i.lock = Some(id);
                true
            }
            Some(holder) => holder == id,
        };
        return one_row! { "got" => flag(got) };
    }
    if lower.starts_with("do release_lock('pointsman.agent')") {
        let i = &mut state.instances[index];
        if i.lock == Some(id) {
            i.lock = None;
        }
        return Answer::Ok;
    }
    if lower
        .starts_with("select p.host as host, p.info as info from information_schema.processlist")
    {
        let i = &state.instances[index];
        return match i.lock {
            Some(holder) => one_row! {
                "host" => Some("127.0.0.1:50000".into()),
                "info" => i.parked.get(&holder).cloned(),
            },
            None => Answer::Rows(columns!("host", "info"), Vec::new()),
        };
    }
    if lower.starts_with("do /*") && lower.contains("sleep(") {
        let argument = lower
            .rsplit("sleep(")
            .next()
            .and_then(|rest| rest.split(')').next())
            .unwrap_or("1")
            .trim();
        let seconds: f64 = argument.parse().unwrap_or(1.0);
        state.instances[index].parked.insert(id, q.to_string());
        return Answer::Sleep(Duration::from_secs_f64(seconds.max(0.0)));
    }
    if lower.starts_with("select @@global.tls_version") {
        return one_row! { "tls" => flag(false) };
    }
    if lower == "select @@global.gtid_executed as g" {
        return one_row! { "g" => Some(state.instances[index].gtid_set()) };
    }
    if lower.starts_with("select wait_for_executed_gtid_set(") {
        let wanted = quoted_after(q, "WAIT_FOR_EXECUTED_GTID_SET(").unwrap_or_default();
        let done = state.instances[index].has_executed(wanted);
        return one_row! { "r" => Some(if done { "0" } else { "1" }.into()) };
    }
    if let Some(rest) = lower.strip_prefix("stop replica") {
        let i = &mut state.instances[index];
        i.io_running = false;
        if rest.trim().is_empty() {
            i.sql_running = false;
        }
        return Answer::Ok;
    }
    if lower == "start replica" {
        let i = &mut state.instances[index];
        if i.source.is_some() {
            i.io_running = true;
            i.sql_running = true;
        }
        return Answer::Ok;
    }
    if lower == "reset replica all" {
        let i = &mut state.instances[index];
        i.source = None;
        i.io_running = false;
        i.sql_running = false;
        return Answer::Ok;
    }
    if lower.starts_with("change replication source to") {
        let host = quoted_after(q, "SOURCE_HOST=").unwrap_or_default();
        let Some(source) = host
            .parse::<Ipv4Addr>()
            .ok()
            .and_then(|a| state.by_address.get(&a).copied())
        else {
            return Answer::Error(1200, format!("the fleet has no instance at {host}"));
        };
        state.instances[index].source = Some(source);
        return Answer::Ok;
    }
    if let Some(setting) = lower.strip_prefix("set global ") {
        let i = &mut state.instances[index];
        match setting.replace(' ', "").as_str() {
            "read_only=on" => i.read_only = true,
            "read_only=off" => {
                i.read_only = false;
                i.super_read_only = false;
            }
            "super_read_only=on" => {
                i.super_read_only = true;
                i.read_only = true;
            }
            "super_read_only=off" => i.super_read_only = false,
            _ => return Answer::Error(1064, format!("the fleet simulator does not set {setting}")),
        }
        return Answer::Ok;
    }
    if lower.starts_with("set persist_only ") {
        return Answer::Ok;
    }
    Answer::Error(
        1064,
        format!("You have an error in your SQL syntax (the fleet simulator does not know: {q})"),
    )
}

/// SHOW REPLICA STATUS as MySQL 9.7 answers it, with this replica's values.
fn replica_status(state: &State, templates: &Templates, index: usize) -> Answer {
    let columns = templates.replica_status_columns.clone();
    let i = &state.instances[index];
    let Some(source_index) = i.source else {
        return Answer::Rows(columns, Vec::new());
    };
    let source = &state.instances[source_index];
    let reachable = source.alive;
    let io = if !i.io_running {
        "No"
    } else if reachable {
        "Yes"
    } else {
        "Connecting"
    };
    let gtids = i.gtid_set();
    let row = templates
        .replica_status
        .iter()
        .map(|(name, value)| match name.as_str() {
            "Replica_IO_State" => Some(
                if io == "Yes" {
                    "Waiting for source to send event"
                } else if io == "Connecting" {
                    "Reconnecting after a failed source event read"
                } else {
                    ""
                }
                .to_string(),
            ),
            "Source_Host" => Some(source.address.to_string()),
            "Source_Port" => Some(PORT.to_string()),
            "Replica_IO_Running" => Some(io.into()),
            "Replica_SQL_Running" => Some(if i.sql_running { "Yes" } else { "No" }.into()),
            "Seconds_Behind_Source" => (i.sql_running && io == "Yes").then(|| "0".to_string()),
            "Last_IO_Errno" => Some(if io == "Connecting" { "2003" } else { "0" }.into()),
            "Last_IO_Error" => Some(if io == "Connecting" {
                format!("Error reconnecting to source 'repl@{}:{PORT}'. This was attempt 1/86400, with a delay of 1 seconds between attempts. Message: Can't connect to MySQL server on '{}:{PORT}' (111)", source.address, source.address)
            } else {
                String::new()
            }),
            "Source_Server_Id" => Some(source.server_id.to_string()),
            "Source_UUID" => Some(source.uuid.clone()),
            "Retrieved_Gtid_Set" | "Executed_Gtid_Set" => Some(gtids.clone()),
            _ => value.clone(),
        })
        .collect();
    Answer::Rows(columns, vec![row])
}

/// Every tick: live primaries commit one transaction; replicas that receive and apply
/// catch up with their source and hear its heartbeat.
async fn tick(state: Arc<Mutex<State>>) {
    let mut interval = tokio::time::interval(TICK);
    loop {
        interval.tick().await;
        let mut state = lock(&state);
        let count = state.instances.len();
        for index in 0..count {
            let i = &mut state.instances[index];
            if i.alive && !i.frozen && i.source.is_none() && !i.read_only {
                let uuid = i.uuid.clone();
                match i.executed.iter_mut().find(|(u, _)| *u == uuid) {
                    Some((_, last)) => *last += 1,
                    None => i.executed.push((uuid, 1)),
                }
            }
        }
        for index in 0..count {
            let Some(source) = state.instances[index].source else {
                continue;
            };
            let (source_alive, source_frozen, source_executed) = {
                let s = &state.instances[source];
                (s.alive, s.frozen, s.executed.clone())
            };
            let i = &mut state.instances[index];
            if !i.alive || !source_alive || source_frozen || !i.io_running {
                continue;
            }
            i.heartbeats += 1;
            if i.sql_running {
                let mut merged: BTreeMap<String, u64> = i.executed.iter().cloned().collect();
                for (uuid, last) in source_executed {
                    let entry = merged.entry(uuid.clone()).or_default();
                    *entry = (*entry).max(last);
                    if !i.executed.iter().any(|(u, _)| *u == uuid) {
                        i.executed.push((uuid, 0));
                    }
                }
                for (uuid, last) in &mut i.executed {
                    *last = merged[uuid.as_str()];
                }
            }
        }
    }
}
