//! Local real-server replication topologies ("sandboxes") for `pointsman demo`,
//! `pointsman sandbox up|down|status|kill|start` and the integration tests.
//!
//! This module owns everything about running MySQL/MariaDB servers on loopback:
//! finding the binaries (`scripts/install-servers.sh` puts them in place), one
//! template datadir per flavour and server build (initialised once, then copied per
//! node because initialising is 5–10 times slower than copying), the option file of
//! each node, spawning detached server processes, wiring GTID replication
//! (node1 primary, node2.. replicas) and stopping them again by PID.
//!
//! It must never be used against production servers: it creates accounts with a
//! published password, sends SIGKILL to the PIDs it recorded and deletes data
//! directories. It only ever signals a PID whose command line still names the
//! node's own option file, so a recycled PID is left alone.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row};
use serde::{Deserialize, Serialize};

/// The admin account every sandbox node has (created on the primary, replicated).
pub const SANDBOX_USER: &str = "pointsman";
/// Published on purpose: sandboxes are throw-away loopback servers.
pub const SANDBOX_PASSWORD: &str = "pointsman-sandbox";
/// The account replicas use to connect to their source.
pub const REPL_USER: &str = "repl";
/// Password of [`REPL_USER`].
pub const REPL_PASSWORD: &str = "repl-sandbox";

/// Environment variable naming the template cache directory.
pub const CACHE_ENV: &str = "POINTSMAN_SANDBOX_CACHE";
/// Environment variable overriding the MySQL 9.7 prefix.
pub const MYSQL_PREFIX_ENV: &str = "POINTSMAN_MYSQL_PREFIX";
/// Environment variable overriding the MariaDB 11.8 prefix.
pub const MARIADB11_PREFIX_ENV: &str = "POINTSMAN_MARIADB11_PREFIX";
const DEFAULT_MYSQL_PREFIX: &str = "/opt/pointsman/mysql-9.7";
const DEFAULT_MARIADB11_PREFIX: &str = "/opt/pointsman/mariadb-11.8";

const STATE_FILE: &str = "sandbox.json";
const LOOPBACK: &str = "127.0.0.1";
/// Bump when the way templates are initialised changes, so old caches are not reused.
const TEMPLATE_FORMAT: u32 = 2;
/// Generous because parallel tests may start a dozen servers on two cores.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);
/// sun_path holds 108 bytes including the NUL; MySQL also creates `<socket>.lock`.
const MAX_SOCKET_PATH: usize = 100;
const PORT_ATTEMPTS: usize = 3;

/// Which server a sandbox runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Flavor {
    /// MariaDB 10.11 from Debian 12, installed into the system.
    #[serde(rename = "mariadb")]
    Mariadb,
    /// MySQL 9.7 from Debian sid, in a private prefix.
    #[serde(rename = "mysql")]
    Mysql,
    /// MariaDB 11.8 from Debian trixie, in a private prefix.
    #[serde(rename = "mariadb-11")]
    Mariadb11,
}

impl Flavor {
    /// Every flavour, in the order the CLI lists them.
    pub const ALL: [Flavor; 3] = [Flavor::Mariadb, Flavor::Mysql, Flavor::Mariadb11];

    /// The name used on the command line, in `sandbox.json` and by the install script.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Mariadb => "mariadb",
            Flavor::Mysql => "mysql",
            Flavor::Mariadb11 => "mariadb-11",
        }
    }

    /// Human name with the server line, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Flavor::Mariadb => "MariaDB 10.11",
            Flavor::Mysql => "MySQL 9.7",
            Flavor::Mariadb11 => "MariaDB 11.8",
        }
    }

    /// MySQL speaks SOURCE/REPLICA SQL and GTID sets; MariaDB its domain-server-seq GTIDs.
    pub fn is_mysql(self) -> bool {
        matches!(self, Flavor::Mysql)
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Flavor {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Flavor::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| SandboxError::UnknownFlavor(s.to_string()))
    }
}

/// What `Sandbox::up` builds.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    pub flavor: Flavor,
    /// Where node datadirs, option files, logs and `sandbox.json` live.
    pub dir: PathBuf,
    /// Replicas of node1; the topology has `replicas + 1` nodes.
    pub replicas: usize,
    /// Port of node1; node N gets `base_port + N - 1`. `None`: free loopback ports.
    pub base_port: Option<u16>,
    /// Enable semi-synchronous replication (source on node1, replica on the others).
    pub semi_sync: bool,
}

impl SandboxOptions {
    /// Two replicas, free ports, asynchronous replication.
    pub fn new(flavor: Flavor, dir: impl Into<PathBuf>) -> Self {
        SandboxOptions {
            flavor,
            dir: dir.into(),
            replicas: 2,
            base_port: None,
            semi_sync: false,
        }
    }
}

/// One server of a sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SandboxNode {
    /// `node1`, `node2`, ...; node1 is the primary `up` built.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub server_id: u32,
    /// PID of the running server process; `None` while stopped.
    pub pid: Option<u32>,
    /// Kernel start time of `pid` (clock ticks since boot), so a PID that was
    /// recycled for another process is never mistaken for the server.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// Unix socket, used only by the sandbox itself for root-level setup.
    #[serde(default)]
    pub socket: PathBuf,
}

impl SandboxNode {
    fn set_proc(&mut self, proc: Option<Proc>) {
        self.pid = proc.map(|p| p.pid);
        self.pid_start = proc.and_then(|p| p.start);
    }
}

/// What `Sandbox::status` reports per node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    pub port: u16,
    pub pid: Option<u32>,
    /// The recorded process exists, is not a zombie and is still this node's server.
    pub running: bool,
}

/// A running (or stopped) local topology, persisted as `<dir>/sandbox.json`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Sandbox {
    pub dir: PathBuf,
    pub flavor: Flavor,
    /// Server version as the binary reports it, e.g. `9.7.4-2`.
    pub version: String,
    pub nodes: Vec<SandboxNode>,
    /// Admin account with every privilege, reachable over TCP from 127.0.0.1.
    pub user: String,
    pub password: String,
    pub semi_sync: bool,
    #[serde(default = "default_repl_user")]
    pub repl_user: String,
    #[serde(default = "default_repl_password")]
    pub repl_password: String,
}

fn default_repl_user() -> String {
    REPL_USER.to_string()
}

fn default_repl_password() -> String {
    REPL_PASSWORD.to_string()
}

/// Everything that can go wrong; each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("unknown sandbox flavour '{0}': expected mariadb, mysql or mariadb-11")]
    UnknownFlavor(String),
    #[error("{label} not found: {path} is missing; run scripts/install-servers.sh {flavor}")]
    NotInstalled {
        label: &'static str,
        flavor: Flavor,
        path: PathBuf,
    },
    #[error("{} already holds a running sandbox ({running}); run `pointsman sandbox down` on it first or pick another directory", dir.display())]
    AlreadyRunning { dir: PathBuf, running: String },
    #[error("no sandbox in {}: {} is missing; create one with `pointsman sandbox up`", dir.display(), dir.join(STATE_FILE).display())]
    NoSandbox { dir: PathBuf },
    #[error("{} is not a valid sandbox state file: {source}; remove the directory's nodes by hand or run `pointsman sandbox up` in a fresh directory", path.display())]
    BadState {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no node '{node}' in this sandbox (it has {known})")]
    UnknownNode { node: String, known: String },
    #[error("{node} is not running; start it with `pointsman sandbox start {node}`")]
    NotRunning { node: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("initialising the {label} template datadir failed ({detail}); see {}", log.display())]
    Init {
        label: &'static str,
        log: PathBuf,
        detail: String,
    },
    #[error("{node} (127.0.0.1:{port}) exited during start-up: {detail}; see {}", log.display())]
    StartFailed {
        node: String,
        port: u16,
        log: PathBuf,
        detail: String,
    },
    #[error("{node} did not accept connections on 127.0.0.1:{port} within {secs} s; see {}", log.display())]
    StartTimeout {
        node: String,
        port: u16,
        secs: u64,
        log: PathBuf,
    },
    #[error("port {port} on 127.0.0.1 is already in use; pick another base port or leave it unset to use free ports")]
    PortInUse { port: u16 },
    #[error("no free loopback port found in {low}..{high}; stop some servers or pass a base port")]
    NoFreePort { low: u16, high: u16 },
    #[error("{node} ({addr}): {what} failed: {source}")]
    Sql {
        node: String,
        addr: String,
        what: &'static str,
        source: Box<mysql_async::Error>,
    },
    #[error("{node} ({addr}): connecting timed out after {secs} s; is the server running? (`pointsman sandbox status`)")]
    ConnectTimeout {
        node: String,
        addr: String,
        secs: u64,
    },
    #[error("{node} did not apply the primary's transactions within {secs} s ({detail}); see {}", log.display())]
    CatchUp {
        node: String,
        secs: u64,
        detail: String,
        log: PathBuf,
    },
    #[error("{node} (pid {pid}) is still alive {secs} s after SIGKILL; check `ps -p {pid}`")]
    Unkillable { node: String, pid: u32, secs: u64 },
    #[error("signalling {node} (pid {pid}) failed: {source}")]
    Signal {
        node: String,
        pid: u32,
        source: io::Error,
    },
    #[error("socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter sandbox directory", path.display())]
    SocketPath { path: PathBuf },
    #[error("sandbox needs {what}, but {why}")]
    Invalid { what: &'static str, why: String },
}

type Result<T, E = SandboxError> = std::result::Result<T, E>;

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SandboxError + 'a {
    move |source| SandboxError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------
// Binaries

/// Where a flavour's server lives and how to run it.
#[derive(Clone, Debug)]
struct Install {
    flavor: Flavor,
    /// Private prefix whose own loader runs the server; `None` for system binaries.
    prefix: Option<PathBuf>,
    server: PathBuf,
    basedir: PathBuf,
    /// Holds `english/errmsg.sys`, `charsets/` and (MariaDB) the bootstrap SQL.
    share: PathBuf,
    plugin_dir: PathBuf,
}

#[cfg(target_arch = "x86_64")]
const MULTIARCH: (&str, &str) = ("x86_64-linux-gnu", "ld-linux-x86-64.so.2");
#[cfg(target_arch = "aarch64")]
const MULTIARCH: (&str, &str) = ("aarch64-linux-gnu", "ld-linux-aarch64.so.1");

impl Install {
    fn locate(flavor: Flavor) -> Result<Install> {
        let install = match flavor {
            Flavor::Mariadb => Install {
                flavor,
                prefix: None,
                server: PathBuf::from("/usr/sbin/mariadbd"),
                basedir: PathBuf::from("/usr"),
                share: PathBuf::from("/usr/share/mysql"),
                plugin_dir: PathBuf::from("/usr/lib/mysql/plugin"),
            },
            Flavor::Mysql => {
                let p = prefix_from_env(MYSQL_PREFIX_ENV, DEFAULT_MYSQL_PREFIX);
                Install {
                    flavor,
                    server: p.join("usr/sbin/mysqld"),
                    basedir: p.join("usr"),
                    share: p.join("usr/share/mysql"),
                    plugin_dir: p.join("usr/lib/mysql/plugin"),
                    prefix: Some(p),
                }
            }
            Flavor::Mariadb11 => {
                let p = prefix_from_env(MARIADB11_PREFIX_ENV, DEFAULT_MARIADB11_PREFIX);
                Install {
                    flavor,
                    server: p.join("usr/sbin/mariadbd"),
                    basedir: p.join("usr"),
                    share: p.join("usr/share/mariadb"),
                    plugin_dir: p.join(format!("usr/lib/{}/libmariadb3/plugin", MULTIARCH.0)),
                    prefix: Some(p),
                }
            }
        };
        let mut needed = vec![
            install.server.clone(),
            install.share.join("english/errmsg.sys"),
        ];
        if let Some(loader) = install.loader() {
            needed.push(loader);
        }
        for path in needed {
            if !path.exists() {
                return Err(SandboxError::NotInstalled {
                    label: flavor.label(),
                    flavor,
                    path,
                });
            }
        }
        Ok(install)
    }

    fn lib_dir(&self) -> Option<PathBuf> {
        self.prefix
            .as_ref()
            .map(|p| p.join("usr/lib").join(MULTIARCH.0))
    }

    fn loader(&self) -> Option<PathBuf> {
        self.lib_dir().map(|l| l.join(MULTIARCH.1))
    }

    /// A command running the server. Prefix binaries need a newer glibc than the
    /// host's, so they run through the prefix's loader; the loader executes the
    /// server in its own process, so the spawned PID is the server's.
    fn command(&self) -> Command {
        match (self.loader(), self.lib_dir()) {
            (Some(loader), Some(lib)) => {
                let mut cmd = Command::new(loader);
                cmd.arg("--library-path").arg(lib).arg(&self.server);
                cmd
            }
            _ => Command::new(&self.server),
        }
    }

    /// Another program of the prefix, run through its loader; `None` if absent.
    fn prefix_tool(&self, rel: &str) -> Option<Command> {
        let (prefix, loader, lib) = (self.prefix.as_ref()?, self.loader()?, self.lib_dir()?);
        let program = prefix.join(rel);
        program.exists().then(|| {
            let mut cmd = Command::new(loader);
            cmd.arg("--library-path").arg(lib).arg(program);
            cmd
        })
    }

    /// Identifies the server build for the template cache without running it.
    fn build_stamp(&self) -> Result<String> {
        let meta = fs::metadata(&self.server).map_err(io_err("reading", &self.server))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let key = format!(
            "{}|{}|{}|{}",
            TEMPLATE_FORMAT,
            self.server.display(),
            meta.len(),
            mtime
        );
        Ok(format!("{}-{:016x}", self.flavor, fnv1a(key.as_bytes())))
    }
}

fn prefix_from_env(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(default),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------
// Template datadirs

/// The template cache: `$POINTSMAN_SANDBOX_CACHE`, else `$XDG_CACHE_HOME/pointsman`,
/// else `$HOME/.cache/pointsman`.
pub fn cache_dir() -> PathBuf {
    let non_empty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
    if let Some(dir) = non_empty(CACHE_ENV) {
        PathBuf::from(dir)
    } else if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("pointsman")
    } else if let Some(home) = non_empty("HOME") {
        PathBuf::from(home).join(".cache/pointsman")
    } else {
        std::env::temp_dir().join("pointsman-cache")
    }
}

struct Template {
    data: PathBuf,
    version: String,
}

/// Returns the flavour's template datadir, initialising it on first use.
///
/// Several test processes may ask at once: an exclusive lock file serialises them,
/// and the datadir is built under a temporary name and renamed into place, so a
/// crash mid-way never leaves a half-initialised template behind.
fn ensure_template(install: &Install) -> Result<Template> {
    let root = cache_dir().join("templates");
    let stamp = install.build_stamp()?;
    let dir = root.join(&stamp);
    if let Some(t) = read_template(&dir) {
        return Ok(t);
    }
    fs::create_dir_all(&root).map_err(io_err("creating the template cache", &root))?;
    let lock_path = root.join(format!("{stamp}.lock"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("opening the template lock", &lock_path))?;
    lock.lock()
        .map_err(io_err("locking the template lock", &lock_path))?;
    if let Some(t) = read_template(&dir) {
        return Ok(t);
    }
    let tmp = root.join(format!("{stamp}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err("removing the stale template", &tmp))?;
    }
    let data = tmp.join("data");
    fs::create_dir_all(&tmp).map_err(io_err("creating the template", &tmp))?;
    let log = root.join(format!("{stamp}.init.log"));
    let version = server_version(install)?;
    tracing::info!(flavor = %install.flavor, version = %version, dir = %dir.display(), "initialising sandbox template datadir");
    let started = Instant::now();
    initialise_datadir(install, &tmp, &data, &log, &version)?;
    fs::write(tmp.join("version"), &version).map_err(io_err("writing", &tmp.join("version")))?;
    fs::rename(&tmp, &dir).map_err(io_err("moving the template into place", &dir))?;
    tracing::info!(flavor = %install.flavor, elapsed_ms = started.elapsed().as_millis() as u64, "sandbox template ready");
    Ok(Template {
        data: dir.join("data"),
        version,
    })
}

fn read_template(dir: &Path) -> Option<Template> {
    let version = fs::read_to_string(dir.join("version")).ok()?;
    let data = dir.join("data");
    data.is_dir().then(|| Template {
        data,
        version: version.trim().to_string(),
    })
}

/// `mysqld --version` prints `... Ver 9.7.4-2 for Linux ...`: keep the token after Ver.
fn server_version(install: &Install) -> Result<String> {
    let out = install
        .command()
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("running", &install.server))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "Ver")
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| SandboxError::Invalid {
            what: "a server version",
            why: format!(
                "{} --version printed {:?}",
                install.server.display(),
                text.trim()
            ),
        })
}

fn initialise_datadir(
    install: &Install,
    tmp: &Path,
    data: &Path,
    log: &Path,
    version: &str,
) -> Result<()> {
    let cnf = tmp.join("init.cnf");
    let mut opts = common_paths(install);
    opts.push(format!("datadir={}", data.display()));
    opts.extend(innodb_sizing(install.flavor));
    let log_file = fs::File::create(log).map_err(io_err("creating", log))?;
    let log_err = log_file.try_clone().map_err(io_err("opening", log))?;
    let mut cmd = install.command();
    cmd.arg(format!("--defaults-file={}", cnf.display()));
    if install.flavor.is_mysql() {
        // Binary logging would leave binlog.000001 in every copy; nodes start their own.
        opts.push("skip-log-bin".into());
        opts.push("mysqlx=OFF".into());
        write_cnf(&cnf, &opts)?;
        cmd.arg("--initialize-insecure").stdin(Stdio::null());
    } else {
        // mariadb-install-db is a shell script that runs the server through the host
        // loader and needs my_print_defaults/resolveip; feeding mariadbd --bootstrap
        // the same SQL it would (minus help tables and the test db, which nothing
        // needs) works the same for the system server and the prefix one.
        opts.push("log-warnings=0".into());
        write_cnf(&cnf, &opts)?;
        fs::create_dir_all(data).map_err(io_err("creating", data))?;
        let sql_path = tmp.join("bootstrap.sql");
        fs::write(&sql_path, mariadb_bootstrap_sql(install)?)
            .map_err(io_err("writing", &sql_path))?;
        let sql = fs::File::open(&sql_path).map_err(io_err("opening", &sql_path))?;
        cmd.args([
            "--bootstrap",
            "--enforce-storage-engine=",
            "--max_allowed_packet=8M",
            "--net_buffer_length=16K",
        ])
        .stdin(sql);
    }
    let status = cmd
        .stdout(log_file)
        .stderr(log_err)
        .current_dir(tmp)
        .status()
        .map_err(io_err("running", &install.server))?;
    if !status.success() {
        return Err(SandboxError::Init {
            label: install.flavor.label(),
            log: log.to_path_buf(),
            detail: format!("{} exited with {status}", install.server.display()),
        });
    }
    if install.flavor.is_mysql() {
        // Every copy must generate its own server_uuid, or GTIDs collide.
        let auto = data.join("auto.cnf");
        if auto.exists() {
            fs::remove_file(&auto).map_err(io_err("removing", &auto))?;
        }
    } else {
        // Tells mariadb-upgrade (and the server's own check) the tables are current.
        let short = version.split("-MariaDB").next().unwrap_or(version);
        let info = data.join("mariadb_upgrade_info");
        fs::write(&info, format!("{short}-MariaDB")).map_err(io_err("writing", &info))?;
        if install.flavor == Flavor::Mariadb11 {
            make_certificate(install, data, log);
        }
    }
    Ok(())
}

const CERT_FILE: &str = "sandbox-cert.pem";
const KEY_FILE: &str = "sandbox-key.pem";

/// MariaDB 11.8 generates a self-signed certificate (a new RSA key) at every start
/// unless it is given one, which costs 0.2-0.6 s of CPU per node. The template
/// gets one instead, made with the prefix's openssl (install-servers.sh puts it
/// there) or the host's; without either the server just keeps generating its own.
fn make_certificate(install: &Install, data: &Path, log: &Path) {
    let mut cmd = match install.prefix_tool("usr/bin/openssl") {
        Some(cmd) => cmd,
        None => Command::new("openssl"),
    };
    let out = cmd
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "36500",
        ])
        .args(["-subj", "/CN=pointsman-sandbox", "-keyout"])
        .arg(data.join(KEY_FILE))
        .arg("-out")
        .arg(data.join(CERT_FILE))
        .stdin(Stdio::null())
        .output();
    let ok = matches!(&out, Ok(o) if o.status.success());
    if !ok {
        let _ = fs::remove_file(data.join(KEY_FILE));
        let _ = fs::remove_file(data.join(CERT_FILE));
        let why = match out {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(log = %log.display(), error = %why, "could not make a TLS certificate for the MariaDB 11.8 template; each start will generate its own (slower)");
    }
}

fn mariadb_bootstrap_sql(install: &Install) -> Result<String> {
    // 10.11 names its scripts mysql_*.sql, 11.8 mariadb_*.sql.
    let pick = |stem: &str| -> Result<PathBuf> {
        ["mariadb_", "mysql_"]
            .iter()
            .map(|p| install.share.join(format!("{p}{stem}.sql")))
            .find(|p| p.exists())
            .ok_or_else(|| SandboxError::NotInstalled {
                label: install.flavor.label(),
                flavor: install.flavor,
                path: install.share.join(format!("mariadb_{stem}.sql")),
            })
    };
    let files = [
        pick("system_tables")?,
        pick("performance_tables")?,
        pick("system_tables_data")?,
        install.share.join("maria_add_gis_sp_bootstrap.sql"),
        pick("sys_schema")?,
    ];
    // A passwordless root@localhost (not unix_socket auth): the sandbox configures
    // nodes as root over the node's own socket.
    let mut sql = String::from(
        "create database if not exists mysql;\nuse mysql;\nSET @auth_root_socket=NULL;\n",
    );
    for f in files {
        let text = fs::read_to_string(&f).map_err(io_err("reading", &f))?;
        sql.push_str(&text);
        sql.push('\n');
    }
    Ok(sql)
}

/// Paths the servers would otherwise take from compile-time defaults on the host.
fn common_paths(install: &Install) -> Vec<String> {
    vec![
        // Both servers refuse to run as root unless told to.
        "user=root".into(),
        format!("basedir={}", install.basedir.display()),
        format!("lc-messages-dir={}", install.share.display()),
        format!(
            "character-sets-dir={}",
            install.share.join("charsets").display()
        ),
        format!("plugin-dir={}", install.plugin_dir.display()),
    ]
}

/// Small logs and pools: sandboxes are copied per node and many run at once.
fn innodb_sizing(flavor: Flavor) -> Vec<String> {
    let log = if flavor.is_mysql() {
        "innodb_redo_log_capacity=16M"
    } else {
        "innodb_log_file_size=16M"
    };
    vec!["innodb_buffer_pool_size=64M".into(), log.into()]
}

fn write_cnf(path: &Path, lines: &[String]) -> Result<()> {
    let mut text =
        String::from("# Written by pointsman sandbox; loopback test server only.\n[mysqld]\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    fs::write(path, text).map_err(io_err("writing", path))
}

fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let to = dst.join(entry.file_name());
        if ty.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &to)?;
        } else {
            fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Ports

/// Ports handed out by this process and not yet bound by a server: parallel `up`s
/// in one test binary must not pick the same free port before either binds it.
static RESERVED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static SEED: AtomicU64 = AtomicU64::new(0);

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok()
}

/// Below the kernel's ephemeral range, so outgoing connections (replicas, clients)
/// never hold a port a later sandbox node wants.
fn port_range() -> (u16, u16) {
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if low > 12_000 {
        (10_000, low)
    } else {
        (20_000, 30_000)
    }
}

fn next_random() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let mut x = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ nanos
        ^ (u64::from(std::process::id()) << 32);
    // xorshift64*: enough to spread processes across the range.
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn allocate_ports(count: usize, base: Option<u16>) -> Result<Vec<u16>> {
    let mut guard = RESERVED_PORTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let reserved = guard.get_or_insert_with(HashSet::new);
    if let Some(base) = base {
        let mut ports = Vec::with_capacity(count);
        for i in 0..count {
            let port = u16::try_from(usize::from(base) + i).map_err(|_| SandboxError::Invalid {
                what: "node ports below 65536",
                why: format!("base port {base} + {count} nodes overflows"),
            })?;
            if !port_is_free(port) {
                return Err(SandboxError::PortInUse { port });
            }
            ports.push(port);
        }
        reserved.extend(ports.iter().copied());
        return Ok(ports);
    }
    let (low, high) = port_range();
    let span = u64::from(high - low);
    let mut ports = Vec::with_capacity(count);
    let start = next_random() % span;
    for step in 0..span {
        if ports.len() == count {
            break;
        }
        let port = low + ((start + step * 7919) % span) as u16;
        if !reserved.contains(&port) && port_is_free(port) {
            reserved.insert(port);
            ports.push(port);
        }
    }
    if ports.len() < count {
        return Err(SandboxError::NoFreePort { low, high });
    }
    Ok(ports)
}

// ---------------------------------------------------------------------------------
// Processes

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProcState {
    Gone,
    /// Dead, every thread gone, waiting to be reaped by its parent.
    Zombie,
    /// The main thread is a zombie but other threads still unwind (a SIGKILLed
    /// server takes a few milliseconds): its sockets are still open.
    Exiting,
    Alive,
}

/// Fields of `/proc/PID/stat` we use.
struct Stat {
    state: char,
    ppid: u32,
    start: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let raw = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may hold spaces and parentheses: the rest follows the last ')'.
    let mut rest = raw[raw.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    // Field 22 (starttime) is the 20th after the comm.
    let start = rest.nth(17)?.parse().ok()?;
    Some(Stat { state, ppid, start })
}

/// A server process as recorded: its PID plus the kernel's start time for it, which
/// tells it apart from any later process that is given the same PID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Proc {
    pid: u32,
    start: Option<u64>,
}

impl Proc {
    fn of(node: &SandboxNode) -> Option<Proc> {
        node.pid.map(|pid| Proc {
            pid,
            start: node.pid_start,
        })
    }

    /// Right after spawning: the child exists, so its start time can be read.
    fn spawned(pid: u32) -> Proc {
        Proc {
            pid,
            start: read_stat(pid).map(|s| s.start),
        }
    }

    fn stat(self) -> Option<Stat> {
        read_stat(self.pid).filter(|s| self.start.is_none_or(|st| st == s.start))
    }

    /// Gone also when the PID now belongs to a process started later.
    fn state(self) -> ProcState {
        match self.stat().map(|s| s.state) {
            None => ProcState::Gone,
            Some('Z') | Some('X') | Some('x') => {
                let threads = fs::read_dir(format!("/proc/{}/task", self.pid))
                    .map(|d| d.count())
                    .unwrap_or(0);
                if threads > 1 {
                    ProcState::Exiting
                } else {
                    ProcState::Zombie
                }
            }
            Some(_) => ProcState::Alive,
        }
    }

    /// True when the process is alive and its command line names this node's option
    /// file: a PID recycled for another program is never signalled.
    fn runs(self, cnf: &Path) -> bool {
        if self.state() != ProcState::Alive {
            return false;
        }
        let want = format!("--defaults-file={}", cnf.display());
        fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|raw| raw.split(|b| *b == 0).any(|arg| arg == want.as_bytes()))
            .unwrap_or(false)
    }

    /// Collects the exit status of a dead child of ours so it stops being a zombie.
    /// True once it is reaped, or when it is not ours to reap.
    fn reap(self) -> bool {
        match self.stat() {
            Some(s) if s.ppid == std::process::id() => {
                let mut status = 0;
                // SAFETY: waitpid with WNOHANG on our own child only reads its status.
                let rc =
                    unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) };
                rc != 0
            }
            _ => true,
        }
    }

    /// Gone, or a zombie that is not ours. Our own child counts only once reaped: a
    /// killed multi-threaded server shows state Z while its other threads still
    /// unwind, and waitpid cannot collect it until they have.
    fn exited(self) -> bool {
        match self.state() {
            ProcState::Gone => true,
            ProcState::Zombie => self.reap(),
            ProcState::Exiting | ProcState::Alive => false,
        }
    }

    /// Sends `sig`; call only after `runs` confirmed the process is the node's.
    fn signal(self, node: &str, sig: libc::c_int) -> Result<()> {
        // SAFETY: kill(2) has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        Err(SandboxError::Signal {
            node: node.to_string(),
            pid: self.pid,
            source: err,
        })
    }
}

/// Starts the server detached: its own session (no terminal signals reach it), stdin
/// closed, output appended to the node's log, so it outlives the `sandbox up` process.
fn spawn_server(install: &Install, node_dir: &Path, cnf: &Path) -> Result<Proc> {
    let log_path = node_dir.join("server.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err("opening", &log_path))?;
    let log_err = log.try_clone().map_err(io_err("opening", &log_path))?;
    let mut cmd = install.command();
    // --defaults-file must come first, or the server also reads /etc/mysql.
    cmd.arg(format!("--defaults-file={}", cnf.display()))
        .current_dir(node_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(io_err("starting", &install.server))?;
    // Dropping a std Child neither kills nor waits: the server keeps running and we
    // reap it ourselves (see `Proc::reap`) if it dies while this process lives.
    Ok(Proc::spawned(child.id()))
}

fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The error lines a server wrote since `offset`, or its last lines.
fn log_excerpt(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.take(256 * 1024).read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("ERROR") || l.contains("[ERROR]"))
        .collect();
    let picked = if errors.is_empty() { &lines } else { &errors };
    let tail = &picked[picked.len().saturating_sub(3)..];
    if tail.is_empty() {
        "the log is empty".to_string()
    } else {
        tail.join(" | ")
    }
}

// ---------------------------------------------------------------------------------
// The sandbox

impl Sandbox {
    /// Builds and starts a topology: node1 primary, node2..=N+1 GTID replicas of it.
    /// Returns once every replica has applied the primary's transactions.
    pub async fn up(opts: SandboxOptions) -> Result<Sandbox> {
        let started = Instant::now();
        let install = Install::locate(opts.flavor)?;
        fs::create_dir_all(&opts.dir).map_err(io_err("creating", &opts.dir))?;
        let dir = fs::canonicalize(&opts.dir).map_err(io_err("resolving", &opts.dir))?;
        if dir.join(STATE_FILE).exists() {
            let old = Sandbox::open(&dir)?;
            let running: Vec<String> = old
                .status()
                .into_iter()
                .filter(|s| s.running)
                .map(|s| format!("{} pid {}", s.name, s.pid.unwrap_or_default()))
                .collect();
            if !running.is_empty() {
                return Err(SandboxError::AlreadyRunning {
                    dir,
                    running: running.join(", "),
                });
            }
            old.remove_files()?;
            // remove_files drops the directory itself when it ends up empty.
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }

        let install_for_template = install.clone();
        let template = tokio::task::spawn_blocking(move || ensure_template(&install_for_template))
            .await
            .map_err(|e| SandboxError::Invalid {
                what: "the template task to finish",
                why: e.to_string(),
            })??;
        let t_template = started.elapsed();

        let count = opts.replicas + 1;
        let ports = allocate_ports(count, opts.base_port)?;
        let mut sandbox = Sandbox {
            dir: dir.clone(),
            flavor: opts.flavor,
            version: template.version.clone(),
            nodes: Vec::with_capacity(count),
            user: SANDBOX_USER.to_string(),
            password: SANDBOX_PASSWORD.to_string(),
            semi_sync: opts.semi_sync,
            repl_user: REPL_USER.to_string(),
            repl_password: REPL_PASSWORD.to_string(),
        };
        for (i, port) in ports.into_iter().enumerate() {
            let name = format!("node{}", i + 1);
            let socket = socket_path(&dir, &name, port)?;
            sandbox.nodes.push(SandboxNode {
                name,
                host: LOOPBACK.to_string(),
                port,
                server_id: 101 + i as u32,
                pid: None,
                pid_start: None,
                socket,
            });
        }

        // Copy the template once per node, in parallel: it is disk-bound work.
        let mut copies = tokio::task::JoinSet::new();
        for node in &sandbox.nodes {
            let src = template.data.clone();
            let node_dir = dir.join(&node.name);
            copies.spawn_blocking(move || -> Result<()> {
                if node_dir.exists() {
                    fs::remove_dir_all(&node_dir).map_err(io_err("removing", &node_dir))?;
                }
                let data = node_dir.join("data");
                copy_tree(&src, &data).map_err(io_err("copying the template datadir to", &data))
            });
        }
        while let Some(res) = copies.join_next().await {
            res.map_err(|e| SandboxError::Invalid {
                what: "the datadir copy to finish",
                why: e.to_string(),
            })??;
        }
        for i in 0..sandbox.nodes.len() {
            sandbox.write_node_cnf(&install, i, false)?;
        }
        sandbox.persist()?;
        let t_copy = started.elapsed();

        match sandbox.bring_up(&install, &opts).await {
            Ok((start, replication)) => {
                tracing::info!(
                    dir = %sandbox.dir.display(),
                    flavor = %sandbox.flavor,
                    nodes = sandbox.nodes.len(),
                    template_ms = t_template.as_millis() as u64,
                    copy_ms = (t_copy - t_template).as_millis() as u64,
                    start_ms = start.as_millis() as u64,
                    replication_ms = replication.as_millis() as u64,
                    total_ms = started.elapsed().as_millis() as u64,
                    "sandbox up"
                );
                Ok(sandbox)
            }
            Err(e) => {
                // Leave nothing running; keep the files so server.log can be read.
                sandbox.kill_all();
                let _ = sandbox.persist();
                Err(e)
            }
        }
    }

    /// Starts every node, creates the accounts on the primary and attaches the
    /// replicas. Returns how long start-up and the replication set-up took.
    async fn bring_up(
        &mut self,
        install: &Install,
        opts: &SandboxOptions,
    ) -> Result<(Duration, Duration)> {
        let t0 = Instant::now();
        let mut attempts = 0;
        let mut pending: Vec<usize> = (0..self.nodes.len()).collect();
        loop {
            attempts += 1;
            let mut waits = tokio::task::JoinSet::new();
            for &i in &pending {
                let node_dir = self.dir.join(&self.nodes[i].name);
                let log = node_dir.join("server.log");
                let offset = log_len(&log);
                let proc = spawn_server(install, &node_dir, &self.cnf_path(&self.nodes[i].name))?;
                self.nodes[i].set_proc(Some(proc));
                let (name, port) = (self.nodes[i].name.clone(), self.nodes[i].port);
                waits.spawn(async move {
                    let r = wait_accepting(&name, proc, port, &log, offset).await;
                    (i, r, log, offset)
                });
            }
            self.persist()?;
            let mut retry = Vec::new();
            let mut first_err = None;
            while let Some(joined) = waits.join_next().await {
                let (i, r, log, offset) = joined.map_err(|e| SandboxError::Invalid {
                    what: "the start-up task to finish",
                    why: e.to_string(),
                })?;
                if let Err(e) = r {
                    // A server that timed out may still be running: keep its PID so
                    // the caller's clean-up can stop it.
                    if Proc::of(&self.nodes[i]).is_some_and(Proc::exited) {
                        self.nodes[i].set_proc(None);
                    }
                    let port_taken = log_excerpt(&log, offset).contains("already in use");
                    if port_taken && opts.base_port.is_none() && attempts < PORT_ATTEMPTS {
                        retry.push(i);
                    } else if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
            if retry.is_empty() {
                break;
            }
            // Another process bound the port between our check and the server's bind.
            for &i in &retry {
                let port = allocate_ports(1, None)?[0];
                tracing::warn!(node = %self.nodes[i].name, old_port = self.nodes[i].port, new_port = port, "port taken during start-up; retrying on another port");
                self.nodes[i].port = port;
                self.nodes[i].socket = socket_path(&self.dir, &self.nodes[i].name, port)?;
                self.write_node_cnf(install, i, false)?;
            }
            pending = retry;
        }
        let t_started = t0.elapsed();

        // Accounts on the primary only: created on every node they would give the
        // replicas GTIDs of their own (errant transactions).
        let primary = self.nodes[0].clone();
        let mut conn = self.root_conn(&primary).await?;
        let account_sql = [
            format!("CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY '{REPL_PASSWORD}'"),
            format!("GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'%'"),
            format!("CREATE USER '{SANDBOX_USER}'@'%' IDENTIFIED BY '{SANDBOX_PASSWORD}'"),
            format!("GRANT ALL PRIVILEGES ON *.* TO '{SANDBOX_USER}'@'%' WITH GRANT OPTION"),
        ];
        for sql in &account_sql {
            conn.query_drop(sql)
                .await
                .map_err(sql_err(&primary, "creating the sandbox accounts"))?;
        }
        let gtid_sql = if self.flavor.is_mysql() {
            "SELECT @@GLOBAL.gtid_executed"
        } else {
            "SELECT @@GLOBAL.gtid_binlog_pos"
        };
        let gtids: String = conn
            .query_first(gtid_sql)
            .await
            .map_err(sql_err(&primary, "reading the primary's GTID position"))?
            .unwrap_or_default();

        let mut replicas = tokio::task::JoinSet::new();
        for node in &self.nodes[1..] {
            let node = node.clone();
            let me = self.clone();
            let gtids = gtids.clone();
            let primary_port = primary.port;
            replicas.spawn(async move { me.attach_replica(&node, primary_port, &gtids).await });
        }
        while let Some(res) = replicas.join_next().await {
            res.map_err(|e| SandboxError::Invalid {
                what: "the replica set-up task to finish",
                why: e.to_string(),
            })??;
        }

        if self.semi_sync && self.nodes.len() > 1 {
            // Enabled only now: with it on from start-up the account statements
            // above would each wait rpl_semi_sync_*_timeout (10 s) for an ACK from
            // replicas that are not attached yet. The option file gets it too, so a
            // restarted node1 comes back as a semi-sync source.
            let var = if self.flavor.is_mysql() {
                "rpl_semi_sync_source_enabled"
            } else {
                "rpl_semi_sync_master_enabled"
            };
            conn.query_drop(format!("SET GLOBAL {var}=ON"))
                .await
                .map_err(sql_err(&primary, "enabling semi-sync replication"))?;
            self.write_node_cnf(install, 0, true)?;
        }
        let _ = conn.disconnect().await;
        self.persist()?;
        Ok((t_started, t0.elapsed() - t_started))
    }

    async fn attach_replica(
        &self,
        node: &SandboxNode,
        primary_port: u16,
        gtids: &str,
    ) -> Result<()> {
        let mut conn = self.root_conn(node).await?;
        let (change, start) = if self.flavor.is_mysql() {
            (
                format!(
                    "CHANGE REPLICATION SOURCE TO SOURCE_HOST='{LOOPBACK}', SOURCE_PORT={primary_port}, \
                     SOURCE_USER='{REPL_USER}', SOURCE_PASSWORD='{REPL_PASSWORD}', SOURCE_AUTO_POSITION=1, \
                     GET_SOURCE_PUBLIC_KEY=1, SOURCE_CONNECT_RETRY=1, SOURCE_RETRY_COUNT=86400, \
                     SOURCE_HEARTBEAT_PERIOD=1"
                ),
                "START REPLICA",
            )
        } else {
            (
                format!(
                    "CHANGE MASTER TO MASTER_HOST='{LOOPBACK}', MASTER_PORT={primary_port}, \
                     MASTER_USER='{REPL_USER}', MASTER_PASSWORD='{REPL_PASSWORD}', \
                     MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1"
                ),
                "START SLAVE",
            )
        };
        conn.query_drop(change)
            .await
            .map_err(sql_err(node, "pointing the replica at node1"))?;
        conn.query_drop(start)
            .await
            .map_err(sql_err(node, "starting replication"))?;

        let wait_sql = if self.flavor.is_mysql() {
            "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, 1)"
        } else {
            "SELECT MASTER_GTID_WAIT(?, 1)"
        };
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            // Both functions return 0 once the set is applied (1 / -1 on timeout).
            let r: Option<Option<i64>> = conn
                .exec_first(wait_sql, (gtids,))
                .await
                .map_err(sql_err(node, "waiting for the primary's GTIDs"))?;
            if r == Some(Some(0)) {
                break;
            }
            let (io_err, sql_err_text) = replica_errors(&mut conn).await;
            if !sql_err_text.is_empty() || Instant::now() >= deadline {
                let detail = [io_err, sql_err_text]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(SandboxError::CatchUp {
                    node: node.name.clone(),
                    secs: CATCH_UP_TIMEOUT.as_secs(),
                    detail: if detail.is_empty() {
                        "no replication error reported".into()
                    } else {
                        detail
                    },
                    log: self.dir.join(&node.name).join("server.log"),
                });
            }
        }
        let _ = conn.disconnect().await;
        Ok(())
    }

    /// Loads a sandbox from `<dir>/sandbox.json`.
    pub fn open(dir: &Path) -> Result<Sandbox> {
        let path = dir.join(STATE_FILE);
        let raw = match fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SandboxError::NoSandbox {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        serde_json::from_slice(&raw).map_err(|source| SandboxError::BadState { path, source })
    }

    /// Stops every node by its recorded PID (SIGTERM, SIGKILL after 10 s) and
    /// removes the node directories and `sandbox.json`.
    pub async fn down(&self) -> Result<()> {
        let mut live: Vec<(&SandboxNode, Proc)> = Vec::new();
        for node in &self.nodes {
            if let Some(proc) = Proc::of(node) {
                if proc.runs(&self.cnf_path(&node.name)) {
                    proc.signal(&node.name, libc::SIGTERM)?;
                    live.push((node, proc));
                } else {
                    proc.reap();
                }
            }
        }
        // Signalled all at once, then waited for together: shutdowns overlap.
        let deadline = Instant::now() + STOP_GRACE;
        while !live.is_empty() && Instant::now() < deadline {
            live.retain(|(_, proc)| !proc.exited());
            if !live.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        }
        for (node, proc) in &live {
            tracing::warn!(node = %node.name, pid = proc.pid, "server ignored SIGTERM for 10 s; sending SIGKILL");
            proc.signal(&node.name, libc::SIGKILL)?;
        }
        for (node, proc) in live {
            wait_exit(&node.name, proc).await?;
        }
        self.remove_files()?;
        tracing::info!(dir = %self.dir.display(), "sandbox down");
        Ok(())
    }

    /// Whether each node's recorded process is still serving.
    pub fn status(&self) -> Vec<NodeStatus> {
        self.nodes
            .iter()
            .map(|n| {
                let proc = Proc::of(n);
                let running = proc.is_some_and(|p| p.runs(&self.cnf_path(&n.name)));
                if let (Some(p), false) = (proc, running) {
                    p.reap();
                }
                NodeStatus {
                    name: n.name.clone(),
                    port: n.port,
                    pid: n.pid,
                    running,
                }
            })
            .collect()
    }

    /// SIGKILLs a node (a crash, as far as the topology can tell) and returns once
    /// the process is really gone.
    pub fn kill(&mut self, node: &str) -> Result<()> {
        let i = self.index(node)?;
        let name = self.nodes[i].name.clone();
        let Some(proc) = Proc::of(&self.nodes[i]) else {
            return Err(SandboxError::NotRunning { node: name });
        };
        if !proc.runs(&self.cnf_path(&name)) {
            proc.reap();
            self.nodes[i].set_proc(None);
            self.persist()?;
            return Err(SandboxError::NotRunning { node: name });
        }
        proc.signal(&name, libc::SIGKILL)?;
        // Synchronous on purpose: a SIGKILLed server is gone within milliseconds,
        // and callers (the CLI, tests) want "killed" to mean gone.
        let deadline = Instant::now() + STOP_GRACE;
        while !proc.exited() {
            if Instant::now() >= deadline {
                return Err(SandboxError::Unkillable {
                    node: name,
                    pid: proc.pid,
                    secs: STOP_GRACE.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        tracing::info!(node = %name, pid = proc.pid, "sandbox node killed");
        self.nodes[i].set_proc(None);
        self.persist()
    }

    /// Starts a stopped node again on its datadir and option file; returns once it
    /// accepts TCP connections. A node that is already running is left alone.
    pub async fn start(&mut self, node: &str) -> Result<()> {
        let i = self.index(node)?;
        let name = self.nodes[i].name.clone();
        let cnf = self.cnf_path(&name);
        if let Some(proc) = Proc::of(&self.nodes[i]) {
            if proc.runs(&cnf) {
                return Ok(());
            }
            proc.reap();
        }
        let install = Install::locate(self.flavor)?;
        // A killed MySQL leaves `<socket>.lock` holding its PID; should the kernel
        // have given that PID to another process, mysqld would refuse the socket.
        let socket = self.nodes[i].socket.clone();
        let _ = fs::remove_file(lock_of(&socket));
        let _ = fs::remove_file(&socket);
        let node_dir = self.dir.join(&name);
        let log = node_dir.join("server.log");
        let port = self.nodes[i].port;
        // The TCP probe below must reach the new server, not a listener that is
        // still closing or that another program opened meanwhile.
        let deadline = Instant::now() + STOP_GRACE;
        while !port_is_free(port) {
            if Instant::now() >= deadline {
                return Err(SandboxError::StartFailed {
                    node: name,
                    port,
                    log,
                    detail: "another process listens on its port; stop it first".into(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
        let offset = log_len(&log);
        let proc = spawn_server(&install, &node_dir, &cnf)?;
        self.nodes[i].set_proc(Some(proc));
        self.persist()?;
        if let Err(e) = wait_accepting(&name, proc, self.nodes[i].port, &log, offset).await {
            if proc.runs(&cnf) {
                let _ = proc.signal(&name, libc::SIGKILL);
                let _ = wait_exit(&name, proc).await;
            }
            self.nodes[i].set_proc(None);
            self.persist()?;
            return Err(e);
        }
        tracing::info!(node = %name, pid = proc.pid, port = self.nodes[i].port, "sandbox node started");
        Ok(())
    }

    /// Shuts a node down cleanly (SIGTERM; SIGKILL if it is still there after 10 s).
    /// A node that is not running is left alone.
    pub async fn stop(&mut self, node: &str) -> Result<()> {
        let i = self.index(node)?;
        let name = self.nodes[i].name.clone();
        if let Some(proc) = Proc::of(&self.nodes[i]) {
            if proc.runs(&self.cnf_path(&name)) {
                proc.signal(&name, libc::SIGTERM)?;
                let deadline = Instant::now() + STOP_GRACE;
                while !proc.exited() && Instant::now() < deadline {
                    tokio::time::sleep(POLL).await;
                }
                if !proc.exited() {
                    tracing::warn!(node = %name, pid = proc.pid, "server ignored SIGTERM for 10 s; sending SIGKILL");
                    proc.signal(&name, libc::SIGKILL)?;
                    wait_exit(&name, proc).await?;
                }
                tracing::info!(node = %name, pid = proc.pid, "sandbox node stopped");
            } else {
                proc.reap();
            }
        }
        self.nodes[i].set_proc(None);
        self.persist()
    }

    /// Looks a node up by name (`node1`, ...).
    pub fn node(&self, name: &str) -> Result<&SandboxNode> {
        Ok(&self.nodes[self.index(name)?])
    }

    /// Client options for the admin account over TCP. `prefer_socket(false)`: the
    /// driver would otherwise silently switch to the unix socket after connecting,
    /// and an agent must see the network the applications see.
    pub fn opts(&self, node: &str) -> Result<Opts> {
        let n = self.node(node)?;
        Ok(OptsBuilder::default()
            .ip_or_hostname(n.host.clone())
            .tcp_port(n.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .prefer_socket(false)
            .into())
    }

    /// Connects to a node as the sandbox admin user over TCP.
    pub async fn connect(&self, node: &str) -> Result<Conn> {
        let n = self.node(node)?;
        let opts = self.opts(node)?;
        match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
            Ok(r) => r.map_err(sql_err(n, "connecting as the sandbox admin")),
            Err(_) => Err(SandboxError::ConnectTimeout {
                node: n.name.clone(),
                addr: format!("{}:{}", n.host, n.port),
                secs: CONNECT_TIMEOUT.as_secs(),
            }),
        }
    }

    /// The server log of a node: the first place to look when something fails.
    pub fn log_path(&self, node: &str) -> Result<PathBuf> {
        Ok(self.dir.join(&self.node(node)?.name).join("server.log"))
    }

    /// The option file a node runs with.
    pub fn cnf_path(&self, node: &str) -> PathBuf {
        self.dir.join(node).join("my.cnf")
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| SandboxError::UnknownNode {
                node: name.to_string(),
                known: self
                    .nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn persist(&self) -> Result<()> {
        let path = self.dir.join(STATE_FILE);
        // Clones of one sandbox may persist from several tasks at once: a private
        // temporary name keeps each rename whole.
        static PERSISTS: AtomicU64 = AtomicU64::new(0);
        let n = PERSISTS.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("{STATE_FILE}.{}.{n}.tmp", std::process::id()));
        let json = serde_json::to_vec_pretty(self).map_err(|source| SandboxError::BadState {
            path: path.clone(),
            source,
        })?;
        fs::write(&tmp, json).map_err(io_err("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("writing", &path))
    }

    /// Best effort after a failed `up`: SIGKILL whatever we started.
    fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(proc) = Proc::of(&self.nodes[i]) {
                self.nodes[i].set_proc(None);
                let name = self.nodes[i].name.clone();
                if proc.runs(&self.cnf_path(&name)) {
                    let _ = proc.signal(&name, libc::SIGKILL);
                    let deadline = Instant::now() + STOP_GRACE;
                    while !proc.exited() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                } else {
                    proc.reap();
                }
            }
        }
    }

    fn remove_files(&self) -> Result<()> {
        for node in &self.nodes {
            let node_dir = self.dir.join(&node.name);
            if node_dir.exists() {
                fs::remove_dir_all(&node_dir).map_err(io_err("removing", &node_dir))?;
            }
            // Sockets outside the node directory (long sandbox paths) are ours too.
            if !node.socket.as_os_str().is_empty() && !node.socket.starts_with(&node_dir) {
                let _ = fs::remove_file(&node.socket);
                let _ = fs::remove_file(lock_of(&node.socket));
            }
        }
        let state = self.dir.join(STATE_FILE);
        if state.exists() {
            fs::remove_file(&state).map_err(io_err("removing", &state))?;
        }
        // Only succeeds when empty: never delete files we did not create.
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }

    /// Writes `<dir>/<node>/my.cnf`. `semi_sync_source` adds the source-side switch
    /// once the topology is wired (see `bring_up`).
    fn write_node_cnf(&self, install: &Install, i: usize, semi_sync_source: bool) -> Result<()> {
        let node = &self.nodes[i];
        let node_dir = self.dir.join(&node.name);
        let replica = i > 0;
        let mysql = self.flavor.is_mysql();
        // A node's own tmpdir: a starting MariaDB deletes every `#sql*` file in its
        // tmpdir, which in a shared /tmp are other running servers' temporary tables.
        let tmp = node_dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        let mut o = common_paths(install);
        o.extend([
            format!("datadir={}", node_dir.join("data").display()),
            format!("tmpdir={}", tmp.display()),
            format!("socket={}", node.socket.display()),
            format!("pid-file={}", node_dir.join("server.pid").display()),
            format!("port={}", node.port),
            format!("bind-address={LOOPBACK}"),
            format!("server-id={}", node.server_id),
            "log-bin=binlog".into(),
            "relay-log=relay".into(),
            "binlog_format=ROW".into(),
            // A promoted replica must have logged its source's events.
            if mysql {
                "log_replica_updates=ON"
            } else {
                "log_slave_updates=ON"
            }
            .into(),
            format!("report-host={LOOPBACK}"),
            format!("report-port={}", node.port),
            // Dead-primary detection within seconds, not the default minute.
            if mysql {
                "replica_net_timeout=4"
            } else {
                "slave_net_timeout=4"
            }
            .into(),
            // No DNS lookups on connect: accounts are '%' and loopback only.
            "skip-name-resolve".into(),
            // Written to the OS at every commit, synced by it later: survives a
            // SIGKILL of the server (what sandboxes simulate), not a host crash,
            // and keeps parallel test topologies from queueing on fsync.
            "innodb_flush_log_at_trx_commit=2".into(),
            "sync_binlog=0".into(),
        ]);
        o.extend(innodb_sizing(self.flavor));
        if mysql {
            o.extend([
                "gtid_mode=ON".into(),
                "enforce_gtid_consistency=ON".into(),
                // Otherwise every instance listens on 33060 and the second one fails.
                "mysqlx=OFF".into(),
                // Debian's default directory does not exist here and mysqld aborts.
                "secure-file-priv=NULL".into(),
                // INSTALL PLUGIN fails on a super_read_only replica: load at start-up.
                "plugin-load-add=semisync_source.so".into(),
                "plugin-load-add=semisync_replica.so".into(),
            ]);
        } else {
            o.extend(["gtid_strict_mode=ON".into(), "gtid_domain_id=0".into()]);
        }
        let data = node_dir.join("data");
        if data.join(CERT_FILE).exists() && data.join(KEY_FILE).exists() {
            o.push(format!("ssl-cert={}", data.join(CERT_FILE).display()));
            o.push(format!("ssl-key={}", data.join(KEY_FILE).display()));
        }
        if replica {
            o.push("read_only=ON".into());
            if mysql {
                o.push("super_read_only=ON".into());
            }
        }
        if self.semi_sync && replica {
            o.push(
                if mysql {
                    "rpl_semi_sync_replica_enabled=ON"
                } else {
                    "rpl_semi_sync_slave_enabled=ON"
                }
                .into(),
            );
        }
        if self.semi_sync && !replica && semi_sync_source {
            o.push(
                if mysql {
                    "rpl_semi_sync_source_enabled=ON"
                } else {
                    "rpl_semi_sync_master_enabled=ON"
                }
                .into(),
            );
        }
        write_cnf(&self.cnf_path(&node.name), &o)
    }

    /// Root over the node's unix socket: root@localhost exists on every node from the
    /// template, before any account has been replicated.
    async fn root_conn(&self, node: &SandboxNode) -> Result<Conn> {
        let opts: Opts = OptsBuilder::default()
            .socket(Some(node.socket.to_string_lossy().into_owned()))
            .user(Some("root"))
            .into();
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            // The TCP port can accept before the server answers the handshake.
            match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts.clone())).await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) if Instant::now() >= deadline => {
                    return Err(sql_err(node, "connecting as root over the unix socket")(e))
                }
                Err(_) => {
                    return Err(SandboxError::ConnectTimeout {
                        node: node.name.clone(),
                        addr: node.socket.display().to_string(),
                        secs: CONNECT_TIMEOUT.as_secs(),
                    })
                }
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

fn lock_of(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// `<dir>/<node>/mysql.sock` when short enough, else a name in /tmp that the port
/// (unique among live servers on this host) makes unique.
fn socket_path(dir: &Path, node: &str, port: u16) -> Result<PathBuf> {
    let inside = dir.join(node).join("mysql.sock");
    if inside.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(inside);
    }
    let outside = PathBuf::from(format!("/tmp/pointsman-{port}.sock"));
    if outside.as_os_str().len() <= MAX_SOCKET_PATH {
        Ok(outside)
    } else {
        Err(SandboxError::SocketPath { path: inside })
    }
}

fn sql_err<'a>(
    node: &'a SandboxNode,
    what: &'static str,
) -> impl FnOnce(mysql_async::Error) -> SandboxError + 'a {
    move |source| SandboxError::Sql {
        node: node.name.clone(),
        addr: format!("{}:{}", node.host, node.port),
        what,
        source: Box::new(source),
    }
}

/// Last IO and SQL errors of a replica, for a useful message when it does not catch up.
async fn replica_errors(conn: &mut Conn) -> (String, String) {
    let row: Option<Row> = conn.query_first("SHOW REPLICA STATUS").await.ok().flatten();
    let get = |row: &Row, col: &str| -> String {
        row.get_opt::<Option<String>, &str>(col)
            .and_then(|r| r.ok())
            .flatten()
            .unwrap_or_default()
    };
    match row {
        Some(row) => {
            let io = get(&row, "Last_IO_Error");
            let sql = get(&row, "Last_SQL_Error");
            (
                if io.is_empty() {
                    io
                } else {
                    format!("IO: {io}")
                },
                if sql.is_empty() {
                    sql
                } else {
                    format!("SQL: {sql}")
                },
            )
        }
        None => ("replica status unavailable".into(), String::new()),
    }
}

/// Waits until a freshly spawned server accepts TCP on its port, failing early with
/// the server's own error lines if it exits.
async fn wait_accepting(node: &str, proc: Proc, port: u16, log: &Path, offset: u64) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if proc.exited() {
            return Err(SandboxError::StartFailed {
                node: node.to_string(),
                port,
                log: log.to_path_buf(),
                detail: log_excerpt(log, offset),
            });
        }
        if let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            // A stranger on the port would make our server exit: confirm it lives.
            if !proc.exited() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(SandboxError::StartTimeout {
                node: node.to_string(),
                port,
                secs: START_TIMEOUT.as_secs(),
                log: log.to_path_buf(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_exit(node: &str, proc: Proc) -> Result<()> {
    let deadline = Instant::now() + STOP_GRACE;
    while !proc.exited() {
        if Instant::now() >= deadline {
            return Err(SandboxError::Unkillable {
                node: node.to_string(),
                pid: proc.pid,
                secs: STOP_GRACE.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavor_names_round_trip() {
        for f in Flavor::ALL {
            assert_eq!(f.as_str().parse::<Flavor>().unwrap(), f);
            assert_eq!(f.to_string(), f.as_str());
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
            assert_eq!(serde_json::from_str::<Flavor>(&json).unwrap(), f);
        }
        let err = "postgres".parse::<Flavor>().unwrap_err().to_string();
        assert!(
            err.contains("postgres") && err.contains("mariadb-11"),
            "{err}"
        );
    }

    #[test]
    fn missing_prefix_names_the_install_script() {
        let err = SandboxError::NotInstalled {
            label: Flavor::Mysql.label(),
            flavor: Flavor::Mysql,
            path: PathBuf::from("/opt/pointsman/mysql-9.7/usr/sbin/mysqld"),
        }
        .to_string();
        assert!(err.contains("MySQL 9.7 not found"), "{err}");
        assert!(err.contains("scripts/install-servers.sh mysql"), "{err}");
    }

    #[test]
    fn ports_handed_out_once_per_process() {
        let a = allocate_ports(3, None).unwrap();
        let b = allocate_ports(3, None).unwrap();
        let all: HashSet<u16> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 6, "{a:?} {b:?}");
        let (low, high) = port_range();
        assert!(all.iter().all(|p| (low..high).contains(p)));
    }

    #[tokio::test]
    async fn busy_base_port_is_refused_before_anything_starts() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = SandboxOptions::new(Flavor::Mariadb, tmp.path().join("sb"));
        opts.base_port = Some(port);
        match Sandbox::up(opts).await {
            Err(SandboxError::PortInUse { port: p }) => assert_eq!(p, port),
            other => panic!("expected PortInUse, got {other:?}"),
        }
        assert!(!tmp.path().join("sb/sandbox.json").exists());
    }

    #[test]
    fn long_dirs_get_short_sockets() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        let s = socket_path(&long, "node1", 12345).unwrap();
        assert_eq!(s, PathBuf::from("/tmp/pointsman-12345.sock"));
        let short = socket_path(Path::new("/tmp/sb"), "node1", 12345).unwrap();
        assert_eq!(short, PathBuf::from("/tmp/sb/node1/mysql.sock"));
    }

    #[test]
    fn state_file_round_trips() {
        let sb = Sandbox {
            dir: PathBuf::from("/tmp/sb"),
            flavor: Flavor::Mariadb11,
            version: "11.8.6-MariaDB".into(),
            nodes: vec![SandboxNode {
                name: "node1".into(),
                host: LOOPBACK.into(),
                port: 20001,
                server_id: 101,
                pid: Some(42),
                pid_start: Some(4242),
                socket: PathBuf::from("/tmp/sb/node1/mysql.sock"),
            }],
            user: SANDBOX_USER.into(),
            password: SANDBOX_PASSWORD.into(),
            semi_sync: true,
            repl_user: REPL_USER.into(),
            repl_password: REPL_PASSWORD.into(),
        };
        let json = serde_json::to_string(&sb).unwrap();
        assert!(json.contains("\"flavor\":\"mariadb-11\""), "{json}");
        let back: Sandbox = serde_json::from_str(&json).unwrap();
        assert_eq!(back.nodes, sb.nodes);
        assert_eq!(back.user, sb.user);
    }

    async fn scalar(conn: &mut Conn, sql: &str) -> Option<String> {
        let row: Option<Row> = conn.query_first(sql).await.unwrap();
        row.and_then(|r| r.get_opt::<Option<String>, usize>(0))
            .and_then(|v| v.ok())
            .flatten()
    }

    async fn wait_for_rows(sb: &Sandbox, node: &str, want: &str) -> Result<(), String> {
        let mut conn = sb.connect(node).await.map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // The table itself may not have reached the replica yet: an error is "not
            // yet", like a count that is still short.
            let got: Option<String> = conn
                .query_first::<Option<String>, _>("SELECT COUNT(*) FROM sbtest.t")
                .await
                .ok()
                .flatten()
                .flatten();
            if got.as_deref() == Some(want) {
                let _ = conn.disconnect().await;
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{node} has {got:?} rows in sbtest.t, want {want}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn io_state(sb: &Sandbox, node: &str) -> String {
        let mut conn = sb.connect(node).await.unwrap();
        let row: Row = conn
            .query_first("SHOW REPLICA STATUS")
            .await
            .unwrap()
            .unwrap();
        let col = if sb.flavor.is_mysql() {
            "Replica_IO_Running"
        } else {
            "Slave_IO_Running"
        };
        let v: String = row.get(col).unwrap();
        let _ = conn.disconnect().await;
        v
    }

    /// The user-visible life of a sandbox; returns the PIDs it saw so the caller can
    /// check that nothing survives `down`, which runs even when a step fails.
    async fn scenario(sb: &mut Sandbox, pids: &mut Vec<Proc>) -> Result<(), String> {
        pids.extend(sb.nodes.iter().filter_map(Proc::of));
        let status = sb.status();
        if status.len() != 3 || !status.iter().all(|s| s.running) {
            return Err(format!("not all running after up: {status:?}"));
        }

        // A second up in the same directory must refuse.
        let again = Sandbox::up(SandboxOptions::new(sb.flavor, &sb.dir)).await;
        match again {
            Err(SandboxError::AlreadyRunning { .. }) => {}
            other => return Err(format!("second up in the same dir: {other:?}")),
        }

        // Replicas are read-only and apply a write made on the primary.
        let mut p = sb.connect("node1").await.map_err(|e| e.to_string())?;
        for sql in [
            "CREATE DATABASE sbtest",
            "CREATE TABLE sbtest.t (id INT PRIMARY KEY)",
            "INSERT INTO sbtest.t VALUES (1)",
        ] {
            p.query_drop(sql).await.map_err(|e| format!("{sql}: {e}"))?;
        }
        let _ = p.disconnect().await;
        for r in ["node2", "node3"] {
            wait_for_rows(sb, r, "1").await?;
            let mut c = sb.connect(r).await.map_err(|e| e.to_string())?;
            if scalar(&mut c, "SELECT @@read_only").await.as_deref() != Some("1") {
                return Err(format!("{r} is not read_only"));
            }
            let _ = c.disconnect().await;
        }
        let reopened = Sandbox::open(&sb.dir).map_err(|e| e.to_string())?;
        if reopened.nodes != sb.nodes {
            return Err("sandbox.json does not match the sandbox".into());
        }

        // Kill the primary: gone at once, and the replicas notice within seconds.
        let old = sb.nodes[0].pid.ok_or("node1 has no pid")?;
        sb.kill("node1").map_err(|e| e.to_string())?;
        if (Proc {
            pid: old,
            start: None,
        })
        .state()
            != ProcState::Gone
        {
            return Err(format!("node1 pid {old} still in /proc after kill"));
        }
        let s1 = &sb.status()[0];
        if s1.running || s1.pid.is_some() {
            return Err(format!("node1 after kill: {s1:?}"));
        }
        if Sandbox::open(&sb.dir).map_err(|e| e.to_string())?.nodes[0]
            .pid
            .is_some()
        {
            return Err("kill did not persist".into());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while io_state(sb, "node2").await == "Yes" {
            if Instant::now() > deadline {
                return Err("node2's IO thread still Yes 10 s after the primary died".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match sb.kill("node1") {
            Err(SandboxError::NotRunning { .. }) => {}
            other => return Err(format!("killing a dead node: {other:?}")),
        }

        // Start it again: same data, and the replicas resume from it.
        sb.start("node1").await.map_err(|e| e.to_string())?;
        pids.extend(Proc::of(&sb.nodes[0]));
        if !sb.status()[0].running {
            return Err("node1 not running after start".into());
        }
        let mut p = sb.connect("node1").await.map_err(|e| e.to_string())?;
        p.query_drop("INSERT INTO sbtest.t VALUES (2)")
            .await
            .map_err(|e| e.to_string())?;
        let _ = p.disconnect().await;
        wait_for_rows(sb, "node1", "2").await?;
        wait_for_rows(sb, "node3", "2").await?;

        // A graceful stop and start of a replica.
        sb.stop("node2").await.map_err(|e| e.to_string())?;
        if sb.status()[1].running {
            return Err("node2 running after stop".into());
        }
        sb.start("node2").await.map_err(|e| e.to_string())?;
        pids.extend(Proc::of(&sb.nodes[1]));
        wait_for_rows(sb, "node2", "2").await?;
        Ok(())
    }

    async fn lifecycle(flavor: Flavor) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sb");
        let t = Instant::now();
        let mut sb = Sandbox::up(SandboxOptions::new(flavor, &dir))
            .await
            .unwrap();
        eprintln!("{flavor}: up in {:?} ({})", t.elapsed(), sb.version);
        let mut pids = Vec::new();
        let result = scenario(&mut sb, &mut pids).await;
        sb.down().await.unwrap();
        result.unwrap();
        assert!(pids.len() >= 5, "saw only {pids:?}");
        for proc in pids {
            assert_eq!(proc.state(), ProcState::Gone, "{proc:?} survived down");
        }
        assert!(!dir.exists(), "down left {}", dir.display());
        assert!(matches!(
            Sandbox::open(&dir),
            Err(SandboxError::NoSandbox { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb_lifecycle() {
        lifecycle(Flavor::Mariadb).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_lifecycle() {
        lifecycle(Flavor::Mysql).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb11_lifecycle() {
        lifecycle(Flavor::Mariadb11).await;
    }

    /// Parallel sandboxes in one process get distinct ports and share the template.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_sandboxes_with_semi_sync() {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |i: usize| {
            let mut o = SandboxOptions::new(Flavor::Mariadb, tmp.path().join(format!("sb{i}")));
            o.replicas = 1;
            o.semi_sync = true;
            o
        };
        let (a, b, c) = tokio::join!(Sandbox::up(mk(1)), Sandbox::up(mk(2)), Sandbox::up(mk(3)));
        let all = [a, b, c];
        let mut ports = HashSet::new();
        let mut failure = None;
        for sb in all.iter().flatten() {
            ports.extend(sb.nodes.iter().map(|n| n.port));
            let mut c = sb.connect("node1").await.unwrap();
            let clients = scalar(
                &mut c,
                "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'",
            )
            .await;
            let _ = c.disconnect().await;
            let row: Option<Row> = {
                let mut c = sb.connect("node1").await.unwrap();
                let r = c
                    .query_first("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")
                    .await
                    .unwrap();
                let _ = c.disconnect().await;
                r
            };
            let on: Option<String> = row.and_then(|r| r.get(1));
            if clients.is_none() || on.as_deref() != Some("ON") {
                failure = Some(format!(
                    "semi-sync not active on {}: {on:?}",
                    sb.dir.display()
                ));
            }
        }
        for sb in all.iter().flatten() {
            sb.down().await.unwrap();
        }
        for sb in &all {
            if let Err(e) = sb {
                panic!("parallel up failed: {e}");
            }
        }
        assert_eq!(ports.len(), 6);
        if let Some(f) = failure {
            panic!("{f}");
        }
    }
}
