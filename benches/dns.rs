//! How many queries a second the embedded DNS responder answers, measured by dnsperf
//! (Debian's dnsperf package) against the zone of reference/dns.md: SOA, NS,
//! `demo.primary` A and `demo.replicas` 2×A, TTL 60, every query
//! `demo.primary.mysql.local. A`, `dnsperf -c 4 -q 200`.
//!
//! pointsman runs as `pointsman run` ships it: inside tokio's default multi-thread
//! runtime (`#[tokio::main]`, one worker per core). In the same run, the same dnsperf is
//! pointed at two yardsticks serving the same zone:
//! - NSD (Debian's `nsd`), started here on a free loopback port with a zone file and a
//!   configuration written to a temporary directory: one server process, response-rate
//!   limiting off (`rrl-ratelimit: 0`), stopped by its PID at the end. Without NSD
//!   installed the bench says how to install it and measures the others;
//! - hickory-server's own authoritative machinery (`Catalog` + `InMemoryZoneHandler`) in
//!   this process.
//!
//! For each it prints queries/s, queries lost (dnsperf's count and the socket's kernel
//! drop counter from /proc/net/udp), and pointsman's ratio to NSD and to hickory.
//!
//! `cargo bench --bench dns`; `BENCH_SECONDS` sets each run's length (10 by default),
//! `BENCH_JUNK=N` sends N datagrams/s of garbage to each server during its run (0 by
//! default), `BENCH_YARDSTICK=0` skips the hickory run.

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, NS, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hickory_server::Server;
use pointsman::routing::dns::{DnsServer, DnsSettings};
use pointsman::routing::{ClusterRoute, Endpoint, Routes};
use pointsman::topology::InstanceKey;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const ZONE: &str = "mysql.local.";
/// The zone NSD serves: the records pointsman publishes for `routes()`.
const ZONE_FILE: &str = "\
$ORIGIN mysql.local.
$TTL 60
@ IN SOA ns.mysql.local. hostmaster.mysql.local. 1 3600 600 86400 1
@ IN NS ns.mysql.local.
ns IN A 127.0.0.1
demo.primary IN A 127.0.0.1
demo.replicas IN A 127.0.0.2
demo.replicas IN A 127.0.0.3
";
/// How long NSD may take to answer its first query, and to stop.
const NSD_PATIENCE: Duration = Duration::from_secs(10);

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
        Err(_) => default,
    }
}

fn endpoint(host: &str, ip: &str) -> Endpoint {
    Endpoint {
        key: InstanceKey::new(host, 3306),
        addresses: vec![ip.parse().expect("a literal address")],
    }
}

fn routes() -> Routes {
    let demo = ClusterRoute {
        cluster: "demo".into(),
        writer: Some(endpoint("db1", "127.0.0.1")),
        readers: vec![endpoint("db2", "127.0.0.2"), endpoint("db3", "127.0.0.3")],
        standby: Vec::new(),
        fenced: Vec::new(),
        epoch: 1,
        recovery_id: None,
        decided_at: SystemTime::now(),
    };
    Routes {
        version: 1,
        clusters: [("demo".to_string(), demo)].into(),
    }
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("a literal name")
}

/// The same zone as hickory's own server would load it.
fn hickory_yardstick() -> std::io::Result<(Server<Catalog>, SocketAddr)> {
    let a = |owner: &str, ip: [u8; 4]| {
        Record::from_rdata(name(owner), 60, RData::A(A(Ipv4Addr::from(ip))))
    };
    let records = [
        Record::from_rdata(
            name(ZONE),
            60,
            RData::SOA(SOA::new(
                name("ns.mysql.local."),
                name("hostmaster.mysql.local."),
                1,
                3600,
                600,
                86_400,
                1,
            )),
        ),
        Record::from_rdata(name(ZONE), 60, RData::NS(NS(name("ns.mysql.local.")))),
        a("ns.mysql.local.", [127, 0, 0, 1]),
        a("demo.primary.mysql.local.", [127, 0, 0, 1]),
        a("demo.replicas.mysql.local.", [127, 0, 0, 2]),
        a("demo.replicas.mysql.local.", [127, 0, 0, 3]),
    ];
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        name(ZONE),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    for record in records {
        assert!(
            zone.upsert_mut(record, 1),
            "the yardstick zone takes its records"
        );
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&name(ZONE)), vec![Arc::new(zone)]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    udp.set_nonblocking(true)?;
    let addr = udp.local_addr()?;
    let mut server = Server::new(catalog);
    server.register_socket(tokio::net::UdpSocket::from_std(udp)?);
    Ok((server, addr))
}

/// What dnsperf reported.
#[derive(Debug)]
struct Perf {
    sent: u64,
    lost: u64,
    qps: f64,
    latency_ms: f64,
    codes: String,
    report: String,
}

/// The first word after `label` on its line.
fn field(text: &str, label: &str) -> Option<String> {
    let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
    let rest = &line.trim_start()[label.len()..];
    Some(rest.split_whitespace().next()?.to_string())
}

fn parse(text: &str) -> Option<Perf> {
    let codes = text
        .lines()
        .find(|l| l.trim_start().starts_with("Response codes:"))?
        .trim_start()
        .trim_start_matches("Response codes:")
        .trim()
        .to_string();
    Some(Perf {
        sent: field(text, "Queries sent:")?.parse().ok()?,
        lost: field(text, "Queries lost:")?.parse().ok()?,
        qps: field(text, "Queries per second:")?.parse().ok()?,
        latency_ms: field(text, "Average Latency (s):")?.parse::<f64>().ok()? * 1000.0,
        codes,
        report: text.trim_end().to_string(),
    })
}

async fn dnsperf(addr: SocketAddr, queries: &Path, seconds: u64) -> Perf {
    let mut command = tokio::process::Command::new("dnsperf");
    command
        .args(["-s", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .arg("-d")
        .arg(queries)
        .args(["-l", &seconds.to_string(), "-c", "4", "-q", "200"])
        .kill_on_drop(true);
    // dnsperf stops itself after -l seconds; the timeout bounds one that hangs.
    let limit = Duration::from_secs(seconds + 30);
    let output = match tokio::time::timeout(limit, command.output()).await {
        Err(_) => panic!("dnsperf did not finish within {limit:?}"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "dnsperf is not installed: install Debian's dnsperf package (apt-get install dnsperf)"
        ),
        Ok(Err(e)) => panic!("cannot run dnsperf: {e}"),
        Ok(Ok(output)) => output,
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(perf) = parse(&text) else {
        panic!(
            "cannot read dnsperf's report (exit {}):\n{text}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };
    assert!(
        perf.codes.starts_with("NOERROR") && !perf.codes.contains(','),
        "every answer should be NOERROR: {}",
        perf.codes
    );
    perf
}

/// A loopback port free for UDP and TCP at this moment.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket on loopback");
        let port = udp.local_addr().expect("its address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A query for `demo.primary.mysql.local. A`, ID 1.
fn probe_query() -> Vec<u8> {
    let mut query = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["demo", "primary", "mysql", "local"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// Whether a server answers on `addr` within `patience`.
fn answers(addr: SocketAddr, patience: Duration) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket on loopback");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a read timeout");
    let deadline = Instant::now() + patience;
    let mut buffer = [0u8; 512];
    while Instant::now() < deadline {
        if socket.send_to(&probe_query(), addr).is_ok() && socket.recv(&mut buffer).is_ok() {
            return true;
        }
    }
    false
}

/// NSD, started by this bench and stopped by its PID.
struct Nsd {
    child: Child,
    addr: SocketAddr,
    version: String,
    /// Its configuration, zone and log; removed with it.
    _dir: tempfile::TempDir,
}

fn nsd_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nsd"))
        .find(|candidate| candidate.is_file())
}

impl Nsd {
    /// `Err` says why NSD cannot run here (missing, or it failed to start).
    fn start() -> Result<Self, String> {
        let binary = nsd_binary().ok_or(
            "NSD is not installed: install Debian's nsd package (apt-get install nsd; \
             scripts/test.sh installs it) to compare with it",
        )?;
        let version = Command::new(&binary)
            .arg("-v")
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stderr).into_owned()
                    + &String::from_utf8_lossy(&o.stdout);
                text.lines().next().unwrap_or("NSD").trim().to_string()
            })
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("pointsman-bench-nsd")
            .tempdir()
            .map_err(|e| format!("no temporary directory for NSD: {e}"))?;
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(path("mysql.local.zone"), ZONE_FILE)
            .map_err(|e| format!("cannot write NSD's zone file: {e}"))?;
        let port = free_port();
        // Everything NSD writes stays in `dir`; it keeps root's privileges (no chroot, no
        // user switch) and has no control socket, so it touches nothing of the system's.
        let config = format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  username: \"\"\n  \
             chroot: \"\"\n  zonesdir: \"{dir}\"\n  database: \"\"\n  zonelistfile: \"{list}\"\n  \
             xfrdfile: \"{xfrd}\"\n  xfrdir: \"{dir}\"\n  pidfile: \"{pid}\"\n  logfile: \"{log}\"\n  \
             rrl-ratelimit: 0\n  verbosity: 1\nremote-control:\n  control-enable: no\n\
             zone:\n  name: \"{ZONE}\"\n  zonefile: \"{zone}\"\n",
            dir = dir.path().display(),
            list = path("zone.list"),
            xfrd = path("xfrd.state"),
            pid = path("nsd.pid"),
            log = path("nsd.log"),
            zone = path("mysql.local.zone"),
        );
        std::fs::write(path("nsd.conf"), config)
            .map_err(|e| format!("cannot write NSD's configuration: {e}"))?;
        // -d: in the foreground, so the PID is the server's own.
        let child = Command::new(&binary)
            .args(["-d", "-c", &path("nsd.conf")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let log = path("nsd.log");
        let mut nsd = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            version,
            _dir: dir,
        };
        if !answers(nsd.addr, NSD_PATIENCE) {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            nsd.stop();
            return Err(format!(
                "NSD did not answer on {} within {NSD_PATIENCE:?}; its log:\n{log}",
                nsd.addr
            ));
        }
        Ok(nsd)
    }

    /// SIGTERM to the PID this bench started (NSD then ends its own children), SIGKILL if
    /// it is still there after `NSD_PATIENCE`.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling the child this bench spawned and has not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + NSD_PATIENCE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The kernel's drop counter of the UDP socket on 127.0.0.1:`port` (/proc/net/udp):
/// datagrams that arrived while its receive buffer was full.
fn kernel_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.get(1) == Some(&local.as_str()))
        .map(|fields| fields.last()?.parse::<u64>().ok())
        .sum()
}

/// Sends `rate` datagrams a second of garbage (random octets, 12–100 of them) to
/// `target` until `stop` is set; returns how many it sent.
fn junk_flood(
    target: SocketAddr,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket on loopback");
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let start = Instant::now();
        let mut sent = 0u64;
        let mut datagram = [0u8; 100];
        while !stop.load(Ordering::Relaxed) {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            for octet in datagram.iter_mut() {
                *octet = next() as u8;
            }
            let len = 12 + (next() % 89) as usize;
            if socket.send_to(&datagram[..len], target).is_ok() {
                sent += 1;
            }
        }
        sent
    })
}

/// One server measured: dnsperf's report, the kernel's drops, the junk sent meanwhile.
struct Measured {
    perf: Perf,
    kernel_drops: Option<u64>,
    junk: u64,
}

async fn measure(addr: SocketAddr, queries: &Path, seconds: u64, junk_rate: u64) -> Measured {
    let drops_before = kernel_drops(addr.port());
    let stop = Arc::new(AtomicBool::new(false));
    let junk = (junk_rate > 0).then(|| junk_flood(addr, junk_rate, Arc::clone(&stop)));
    let perf = dnsperf(addr, queries, seconds).await;
    stop.store(true, Ordering::Relaxed);
    let junk = junk.map_or(0, |j| j.join().expect("the junk sender ends"));
    let kernel_drops = match (drops_before, kernel_drops(addr.port())) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Measured {
        perf,
        kernel_drops,
        junk,
    }
}

fn row(label: &str, m: &Measured) {
    let drops = m
        .kernel_drops
        .map_or_else(|| "?".to_string(), |d| d.to_string());
    println!(
        "| {label} | {:.0} | {} of {} | {drops} | {:.3} ms | {} |",
        m.perf.qps, m.perf.lost, m.perf.sent, m.perf.latency_ms, m.junk
    );
}

fn main() {
    let seconds = env_number("BENCH_SECONDS", 10).max(1);
    let junk_rate = env_number("BENCH_JUNK", 0);
    let yardstick = env_number("BENCH_YARDSTICK", 1) != 0;

    // What `#[tokio::main]` builds for `pointsman run`: one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let workers = runtime.metrics().num_workers();

    let mut queries = tempfile::NamedTempFile::new().expect("a temporary file");
    for _ in 0..200 {
        writeln!(queries, "demo.primary.mysql.local. A").expect("writing the query file");
    }
    queries.flush().expect("writing the query file");

    let ours = runtime.block_on(async {
        let settings = DnsSettings::new(
            "127.0.0.1:0".parse().expect("a literal address"),
            ZONE,
            Duration::from_secs(60),
        )
        .expect("valid settings");
        let server = DnsServer::start(&settings).unwrap_or_else(|e| panic!("{e}"));
        server.publish(&routes());
        let measured = measure(server.local_addr(), queries.path(), seconds, junk_rate).await;
        server.stop().await;
        measured
    });
    println!("pointsman:\n{}\n", ours.perf.report);

    let nsd = match Nsd::start() {
        Ok(mut nsd) => {
            let measured = runtime.block_on(measure(nsd.addr, queries.path(), seconds, junk_rate));
            nsd.stop();
            println!("{}:\n{}\n", nsd.version, measured.perf.report);
            Some((nsd.version.clone(), measured))
        }
        Err(why) => {
            eprintln!("dns bench: no NSD run: {why}");
            None
        }
    };

    let hickory = yardstick.then(|| {
        runtime.block_on(async {
            let (mut server, addr) = hickory_yardstick().expect("the yardstick server starts");
            let measured = measure(addr, queries.path(), seconds, junk_rate).await;
            if let Err(e) = server.shutdown_gracefully().await {
                eprintln!("the yardstick server stopped with an error: {e}");
            }
            measured
        })
    });

    println!(
        "dnsperf -c 4 -q 200 -l {seconds}, every query demo.primary.mysql.local. A, \
         servers and dnsperf sharing this machine's cores{}:",
        if junk_rate > 0 {
            format!(", {junk_rate} junk datagrams/s sent to each server meanwhile")
        } else {
            String::new()
        }
    );
    println!(
        "| responder | queries/s | lost (dnsperf) | kernel drops | average latency | junk sent |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let plural = if workers == 1 { "" } else { "s" };
    row(
        &format!("pointsman (default runtime: {workers} tokio worker{plural}, UDP thread)"),
        &ours,
    );
    if let Some((version, nsd)) = &nsd {
        row(&format!("{version} (1 server, rrl off)"), nsd);
    }
    if let Some(hickory) = &hickory {
        row("hickory-server Catalog + InMemoryZoneHandler", hickory);
    }
    let ratio = |other: Option<&Measured>| {
        other.map_or_else(
            || "n/a".to_string(),
            |o| format!("{:.2}", ours.perf.qps / o.perf.qps),
        )
    };
    println!(
        "dns: pointsman {:.0} queries/s, {} lost; ratio to NSD {}, to hickory {}",
        ours.perf.qps,
        ours.perf.lost,
        ratio(nsd.as_ref().map(|(_, m)| m)),
        ratio(hickory.as_ref()),
    );

    runtime.shutdown_timeout(Duration::from_secs(5));
}
