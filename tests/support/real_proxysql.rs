//! A real ProxySQL per test: the binary from `$POINTSMAN_PROXYSQL` (or `proxysql` on
//! PATH), run in the foreground on two free loopback ports (admin and traffic) with a
//! datadir and cnf of its own in a temp dir, and an admin client for it. It is a dev
//! helper, not product code. It owns that one process and that directory: it signals
//! only the PID it started (and has not reaped, so the PID cannot have been recycled),
//! and dropping it SIGKILLs the process and removes the directory, however the test
//! ends. A test process killed outright takes its ProxySQL with it
//! (`PR_SET_PDEATHSIG`), so call `start` / `start_again` from the test's own task, not
//! from a short-lived thread such as `spawn_blocking`'s.
//!
//! ProxySQL binds both ports with SO_REUSEPORT: a second process on the same port does
//! not fail, the kernel shares the connections between the two. So readiness means more
//! than an answering port: every listener on both ports must belong to this process
//! (from `/proc`), and on a shared port `start` picks new ports and tries again.
//!
//! ProxySQL 2.7.1 sometimes dies of SIGSEGV while starting on a loaded machine (a race
//! in its own start-up, see `NotReady::Crashed`); a start that dies of a signal before
//! it answered is tried again, as ProxySQL's angel process would, and said on stderr.
//!
//! ProxySQL writes its log to stderr when it runs in the foreground (its cnf `errorlog`
//! is for the daemon): stdout and stderr go to `proxysql.log` in the datadir, which
//! `error_log_tail` reads and every start-up failure quotes.
//!
//! The admin client follows `src/routing/proxysql.rs`: mysql_async over TCP in plaintext
//! (the admin offers TLS; no `ssl_opts`, so it is not used), with `max_allowed_packet`
//! and `wait_timeout` given so mysql_async asks no `@@` variables, and no statement
//! cache (the admin has no prepared statements). The admin runs only the first statement
//! of a query: send one per call.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row, Value};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The variable naming the binary (CI sets it).
pub const BINARY_ENV: &str = "POINTSMAN_PROXYSQL";
/// The admin account in every cnf written here (ProxySQL's default).
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin";

/// Until the admin answers; start-up takes well under a second on an idle machine.
const START_PATIENCE: Duration = Duration::from_secs(10);
/// From SIGTERM to exit, before SIGKILL.
const STOP_PATIENCE: Duration = Duration::from_secs(10);
/// One admin connection attempt, and one admin statement.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Starts tried before giving up, when ports turn out shared or ProxySQL crashes while
/// starting.
const START_ATTEMPTS: usize = 4;
const POLL: Duration = Duration::from_millis(10);
const LOG_FILE: &str = "proxysql.log";
const CNF_FILE: &str = "proxysql.cnf";

/// Where the real binary is: `$POINTSMAN_PROXYSQL` if set (a panic if it is set but not
/// an executable file; set to the empty string it counts as unset), else `proxysql` on
/// PATH, else `None`.
pub fn binary() -> Option<PathBuf> {
    if let Some(value) = std::env::var_os(BINARY_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        assert!(
            is_executable_file(&path),
            "{BINARY_ENV}={} is not an executable file",
            path.display()
        );
        return Some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("proxysql"))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What the cnf of a fresh start says beyond the two ports and the admin account.
#[derive(Clone, Debug, Default)]
pub struct RealOptions {
    /// `mysql-monitor_username` / `_password` and `mysql-monitor_read_only_interval`;
    /// `None`: the monitor is off (`mysql-monitor_enabled=false`).
    pub monitor: Option<(String, String, Duration)>,
    /// `mysql-monitor_writer_is_also_reader`.
    pub writer_is_also_reader: bool,
    /// `mysql_replication_hostgroups` (writer, reader) pairs, check_type `read_only`.
    pub replication_hostgroups: Vec<(u32, u32)>,
    /// One `mysql_users` row for the traffic port: (user, password, default_hostgroup).
    /// The password is stored in clear text, which ProxySQL needs to log into
    /// caching_sha2_password backends (MySQL 9.7) as that user.
    pub app_user: Option<(String, String, u32)>,
    /// Initial `mysql_servers` rows: (hostgroup, host, port, status).
    pub servers: Vec<(u32, String, u16, String)>,
}

/// A running (or stopped) real ProxySQL; dropping it kills the process and removes its
/// datadir.
pub struct RealProxySql {
    binary: PathBuf,
    dir: tempfile::TempDir,
    admin: SocketAddr,
    app: SocketAddr,
    /// The process this value started and has not reaped yet.
    child: Option<Child>,
    /// How the last process ended, once reaped.
    exited: Option<ExitStatus>,
    /// The cached admin connection; dropped on any error that is not the admin's answer.
    conn: tokio::sync::Mutex<Option<Conn>>,
}

/// Why a start did not come up.
enum NotReady {
    /// Another process listens on this port too.
    Shared(u16),
    /// ProxySQL died of a signal before it answered. 2.7.1 has a start-up race:
    /// `MySQL_HostGroups_Manager::commit()`, run by `init_mysql_servers()`, calls
    /// `ev_async_send(gtid_ev_loop, ...)` while `gtid_ev_loop` is still NULL because the
    /// GTID syncer thread that creates it has not run yet (lib/MySQL_HostGroups_Manager.cpp,
    /// lib/GTID_Server_Data.cpp; still so in 3.0.1). It shows as a SIGSEGV on a loaded
    /// machine, about one start in a hundred here. In production the angel process
    /// restarts it; here the start is tried again.
    Crashed(ExitStatus),
}

impl RealProxySql {
    /// Starts `binary` with `--initial` (a fresh `proxysql.db` from the cnf written for
    /// `options`) on free loopback ports, and waits until its admin answers a query and
    /// both ports are its own. Panics, quoting the end of its log, if it does not come up
    /// within 10 s.
    pub async fn start(binary: &Path, options: RealOptions) -> RealProxySql {
        let dir = tempfile::Builder::new()
            .prefix("pm-proxysql-")
            .tempdir()
            .expect("a temp dir for the ProxySQL datadir");
        let (admin, app) = free_ports();
        let mut proxysql = RealProxySql {
            binary: binary.to_path_buf(),
            dir,
            admin,
            app,
            child: None,
            exited: None,
            conn: tokio::sync::Mutex::new(None),
        };
        for attempt in 1..=START_ATTEMPTS {
            fs::write(proxysql.cnf_path(), proxysql.cnf(&options)).expect("write the cnf");
            proxysql.spawn(true);
            match proxysql.wait_ready().await {
                Ok(()) => return proxysql,
                Err(NotReady::Shared(port)) => {
                    proxysql.kill().await;
                    eprintln!(
                        "real_proxysql: port {port} is shared with another process (attempt {attempt} of {START_ATTEMPTS}); trying other ports"
                    );
                    (proxysql.admin, proxysql.app) = free_ports();
                }
                Err(NotReady::Crashed(status)) => proxysql.crashed(status, attempt),
            }
        }
        panic!("ProxySQL did not come up in {START_ATTEMPTS} attempts (see above)");
    }

    /// The admin interface (user `ADMIN_USER`, password `ADMIN_PASSWORD`).
    pub fn admin_address(&self) -> SocketAddr {
        self.admin
    }

    /// The traffic port (`mysql-interfaces`), for `RealOptions::app_user`.
    pub fn app_address(&self) -> SocketAddr {
        self.app
    }

    /// The datadir (cnf, `proxysql.db`, certificates, log).
    pub fn datadir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of the process this value started, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Client options for the traffic port as `user`: plaintext (ProxySQL offers TLS to
    /// clients too), and `prefer_socket(false)` — otherwise mysql_async asks
    /// `@@socket`, gets the *backend's* unix socket through ProxySQL and silently
    /// connects to the backend directly.
    pub fn app_opts(&self, user: &str, password: &str) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(self.app.ip().to_string())
            .tcp_port(self.app.port())
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false)
            .into()
    }

    /// Rows of one statement over the admin, every value as text; panics naming the
    /// statement on error.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.try_rows(sql)
            .await
            .unwrap_or_else(|e| panic!("ProxySQL admin {}: {sql}: {e}", self.admin))
    }

    /// Rows of one statement over the admin, or the error's text.
    pub async fn try_rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            *guard = Some(connect_admin(self.admin).await?);
        }
        let conn = guard.as_mut().expect("connected just above");
        let result = tokio::time::timeout(QUERY_TIMEOUT, conn.query::<Row, _>(sql)).await;
        match result {
            Ok(Ok(rows)) => Ok(rows.into_iter().map(text_row).collect()),
            Ok(Err(e)) => {
                forget_unless_answered(&mut guard, &e);
                Err(e.to_string())
            }
            Err(_) => {
                *guard = None;
                Err(format!("no answer within {QUERY_TIMEOUT:?}"))
            }
        }
    }

    /// Runs one statement over the admin and returns its affected rows; panics naming
    /// the statement on error.
    pub async fn execute(&self, sql: &str) -> u64 {
        self.try_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("ProxySQL admin {}: {sql}: {e}", self.admin))
    }

    /// Runs one statement over the admin: its affected rows, or the error's text.
    pub async fn try_execute(&self, sql: &str) -> Result<u64, String> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            *guard = Some(connect_admin(self.admin).await?);
        }
        let conn = guard.as_mut().expect("connected just above");
        let result = tokio::time::timeout(QUERY_TIMEOUT, conn.query_drop(sql)).await;
        match result {
            Ok(Ok(())) => Ok(conn.affected_rows()),
            Ok(Err(e)) => {
                forget_unless_answered(&mut guard, &e);
                Err(e.to_string())
            }
            Err(_) => {
                *guard = None;
                Err(format!("no answer within {QUERY_TIMEOUT:?}"))
            }
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 10 s). Nothing if not running.
    pub async fn stop(&mut self) {
        self.forget_admin();
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let pid = libc::pid_t::try_from(child.id()).expect("a PID fits pid_t");
        // SAFETY: a plain syscall on the PID of a child this value started and has not
        // reaped, so it cannot belong to anyone else.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        if !self.wait_exit(STOP_PATIENCE).await {
            eprintln!("real_proxysql: PID {pid} ignored SIGTERM for {STOP_PATIENCE:?}; killing it");
            self.kill().await;
        }
    }

    /// SIGKILL, then waits for the exit. Nothing if not running.
    pub async fn kill(&mut self) {
        self.forget_admin();
        let Some(child) = self.child.as_mut() else {
            return;
        };
        // Sends SIGKILL to the child's own PID (not yet reaped, so still ours).
        let _ = child.kill();
        assert!(
            self.wait_exit(STOP_PATIENCE).await,
            "ProxySQL did not exit within {STOP_PATIENCE:?} of SIGKILL"
        );
    }

    /// Starts the binary again on the same datadir and ports, without `--initial`: a
    /// restart from the configuration on its disk (`proxysql.db`), as after a crash or
    /// a reboot. Waits until the admin answers; panics if it does not, or if another
    /// process has taken one of the ports meanwhile.
    pub async fn start_again(&mut self) {
        assert!(
            !self.is_running(),
            "start_again: ProxySQL (PID {:?}) still runs; stop or kill it first",
            self.pid()
        );
        for attempt in 1..=START_ATTEMPTS {
            self.spawn(false);
            match self.wait_ready().await {
                Ok(()) => return,
                Err(NotReady::Shared(port)) => {
                    let tail = self.error_log_tail(30);
                    self.kill().await;
                    panic!(
                        "start_again: another process listens on port {port} too (ProxySQL binds with SO_REUSEPORT, so both would answer); its log ends:\n{tail}"
                    );
                }
                Err(NotReady::Crashed(status)) => self.crashed(status, attempt),
            }
        }
        panic!("ProxySQL did not come up again in {START_ATTEMPTS} attempts (see above)");
    }

    /// Says that a start crashed (see `NotReady::Crashed`), with the log's last lines.
    fn crashed(&self, status: ExitStatus, attempt: usize) {
        eprintln!(
            "real_proxysql: ProxySQL crashed while starting ({status}; attempt {attempt} of {START_ATTEMPTS}); its log ends:\n{}",
            self.error_log_tail(20)
        );
    }

    /// Whether the process started last still runs (one that ended is reaped here).
    pub fn is_running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.exited = Some(status);
                self.child = None;
                false
            }
            Err(e) => panic!("waitpid on ProxySQL PID {}: {e}", child.id()),
        }
    }

    /// The last `lines` lines of the log (ProxySQL's stderr and stdout, every start).
    pub fn error_log_tail(&self, lines: usize) -> String {
        let text = fs::read(self.dir.path().join(LOG_FILE))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("(no log: {e})"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn cnf_path(&self) -> PathBuf {
        self.dir.path().join(CNF_FILE)
    }

    /// The cnf (libconfig syntax) for the current ports.
    fn cnf(&self, options: &RealOptions) -> String {
        let mut cnf = String::new();
        let w = &mut cnf;
        let _ = writeln!(w, "datadir={}", quote(&self.dir.path().to_string_lossy()));
        let _ = writeln!(w, "admin_variables=\n{{");
        let _ = writeln!(
            w,
            "  admin_credentials={}",
            quote(&format!("{ADMIN_USER}:{ADMIN_PASSWORD}"))
        );
        let _ = writeln!(w, "  mysql_ifaces={}", quote(&self.admin.to_string()));
        let _ = writeln!(w, "}}\nmysql_variables=\n{{");
        let _ = writeln!(w, "  interfaces={}", quote(&self.app.to_string()));
        match &options.monitor {
            Some((user, password, interval)) => {
                let _ = writeln!(w, "  monitor_enabled=true");
                let _ = writeln!(w, "  monitor_username={}", quote(user));
                let _ = writeln!(w, "  monitor_password={}", quote(password));
                let _ = writeln!(w, "  monitor_read_only_interval={}", interval.as_millis());
            }
            None => {
                let _ = writeln!(w, "  monitor_enabled=false");
            }
        }
        let _ = writeln!(
            w,
            "  monitor_writer_is_also_reader={}",
            options.writer_is_also_reader
        );
        let _ = writeln!(w, "}}");
        let pairs: Vec<String> = options
            .replication_hostgroups
            .iter()
            .map(|(writer, reader)| {
                format!("  {{ writer_hostgroup={writer}, reader_hostgroup={reader}, check_type=\"read_only\" }}")
            })
            .collect();
        list(w, "mysql_replication_hostgroups", &pairs);
        let servers: Vec<String> = options
            .servers
            .iter()
            .map(|(group, host, port, status)| {
                format!(
                    "  {{ hostgroup_id={group}, hostname={}, port={port}, status={} }}",
                    quote(host),
                    quote(status)
                )
            })
            .collect();
        list(w, "mysql_servers", &servers);
        let users: Vec<String> = options
            .app_user
            .iter()
            .map(|(user, password, group)| {
                format!(
                    "  {{ username={}, password={}, default_hostgroup={group} }}",
                    quote(user),
                    quote(password)
                )
            })
            .collect();
        list(w, "mysql_users", &users);
        cnf
    }

    /// Spawns the binary in the foreground on the datadir, its output appended to the log.
    fn spawn(&mut self, initial: bool) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(LOG_FILE))
            .expect("open the ProxySQL log");
        let stderr = log.try_clone().expect("clone the log handle");
        let mut command = Command::new(&self.binary);
        command
            .arg("-f")
            .arg("-c")
            .arg(self.cnf_path())
            .arg("-D")
            .arg(self.dir.path())
            .arg("--no-version-check");
        if initial {
            command.arg("--initial");
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        let parent = std::process::id();
        // SAFETY: prctl, getppid are async-signal-safe and touch no memory of the parent;
        // the error is built without allocating.
        unsafe {
            command.pre_exec(move || {
                // The test process dying (even by SIGKILL) takes ProxySQL with it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before prctl: nobody would ever stop this one.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.exited = None;
    }

    /// Waits until both ports have listeners of this process only and the admin
    /// answers a query; the answering connection becomes the cached one.
    async fn wait_ready(&mut self) -> Result<(), NotReady> {
        let began = Instant::now();
        let mut last_error = String::from("its ports were not listening yet");
        loop {
            if !self.is_running() {
                if let Some(status) = self.exited.filter(|s| s.signal().is_some()) {
                    return Err(NotReady::Crashed(status));
                }
                panic!(
                    "ProxySQL exited ({}) before its admin on {} answered; its log ends:\n{}",
                    self.exited.map(|s| s.to_string()).unwrap_or_default(),
                    self.admin,
                    self.error_log_tail(30)
                );
            }
            let pid = self.pid().expect("running");
            let admin = listeners(self.admin.port());
            let app = listeners(self.app.port());
            // Read after the listener tables: a listener of ours listed there is in here.
            let ours = socket_inodes(pid);
            for (port, found) in [(self.admin.port(), &admin), (self.app.port(), &app)] {
                if found.iter().any(|inode| !ours.contains(inode)) {
                    return Err(NotReady::Shared(port));
                }
            }
            if !admin.is_empty() && !app.is_empty() {
                match answer(self.admin).await {
                    Ok(conn) => {
                        *self.conn.get_mut() = Some(conn);
                        return Ok(());
                    }
                    Err(e) => last_error = e,
                }
            }
            if began.elapsed() > START_PATIENCE {
                let tail = self.error_log_tail(30);
                self.kill().await;
                panic!(
                    "ProxySQL did not answer on its admin {} within {START_PATIENCE:?} ({last_error}); its log ends:\n{tail}",
                    self.admin
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls for the exit of the child for up to `patience`; true once reaped.
    async fn wait_exit(&mut self, patience: Duration) -> bool {
        let began = Instant::now();
        while self.is_running() {
            if began.elapsed() > patience {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
        true
    }

    /// Drops the cached admin connection (the process behind it is going away).
    fn forget_admin(&mut self) {
        self.conn.get_mut().take();
    }
}

impl Drop for RealProxySql {
    /// SIGKILLs the process by its own PID and reaps it; then the temp dir goes.
    fn drop(&mut self) {
        self.conn.get_mut().take();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two distinct free loopback addresses (the kernel's choice, released at once).
fn free_ports() -> (SocketAddr, SocketAddr) {
    let bind =
        || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port on 127.0.0.1");
    let (a, b) = (bind(), bind());
    let address = |l: &TcpListener| l.local_addr().expect("a bound socket has an address");
    (address(&a), address(&b))
}

/// Socket inodes of every TCP listener (IPv4 or IPv6, any address) on `port`.
fn listeners(port: u16) -> Vec<u64> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let listening_here = *state == "0A"
                && local
                    .rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                    == Some(port);
            if let (true, Ok(inode)) = (listening_here, inode.parse()) {
                found.push(inode);
            }
        }
    }
    found
}

/// The socket inodes among the open files of `pid`.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    entries
        .flatten()
        .filter_map(|entry| fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

fn admin_opts(address: SocketAddr) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(address.ip().to_string())
        .tcp_port(address.port())
        .user(Some(ADMIN_USER))
        .pass(Some(ADMIN_PASSWORD))
        // As src/routing/proxysql.rs: no socket, and the admin answers no
        // `SELECT @@max_allowed_packet,@@wait_timeout`, so give mysql_async both.
        .prefer_socket(false)
        .max_allowed_packet(Some(16 * 1024 * 1024))
        .wait_timeout(Some(28800))
        .stmt_cache_size(0)
        .into()
}

async fn connect_admin(address: SocketAddr) -> Result<Conn, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(admin_opts(address))).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("cannot connect to the admin {address}: {e}")),
        Err(_) => Err(format!(
            "no greeting from the admin {address} within {CONNECT_TIMEOUT:?}"
        )),
    }
}

/// A fresh admin connection that has answered `SELECT 1`.
async fn answer(address: SocketAddr) -> Result<Conn, String> {
    let mut conn = connect_admin(address).await?;
    match tokio::time::timeout(QUERY_TIMEOUT, conn.query_drop("SELECT 1")).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(e)) => Err(format!("SELECT 1: {e}")),
        Err(_) => Err(format!("SELECT 1: no answer within {QUERY_TIMEOUT:?}")),
    }
}

/// Keeps the cached connection only when the admin itself answered with an error: any
/// other failure may have left it unusable.
fn forget_unless_answered(conn: &mut Option<Conn>, error: &mysql_async::Error) {
    if !matches!(error, mysql_async::Error::Server(_)) {
        *conn = None;
    }
}

/// Every value as text (the admin sends every column as VAR_STRING), NULL as `None`.
fn text_row(row: Row) -> Vec<Option<String>> {
    row.unwrap()
        .into_iter()
        .map(|value| match value {
            Value::NULL => None,
            Value::Bytes(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            other => Some(other.as_sql(true).trim_matches('\'').to_string()),
        })
        .collect()
}

/// A libconfig string.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A libconfig list setting, left out when empty.
fn list(w: &mut String, name: &str, items: &[String]) {
    if !items.is_empty() {
        let _ = writeln!(w, "{name}=\n(\n{}\n)", items.join(",\n"));
    }
}
