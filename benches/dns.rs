//! How many queries a second the embedded DNS responder answers, measured by dnsperf
//! (Debian's dnsperf package) against the zone of reference/dns.md: SOA, NS,
//! `demo.primary` A and `demo.replicas` 2×A, TTL 60, every query
//! `demo.primary.mysql.local. A`.
//!
//! The same dnsperf run is then pointed at hickory-server's own authoritative machinery
//! (`Catalog` + `InMemoryZoneHandler`) serving the same zone in this process, so the
//! comparison holds even when the machine is busy with other work.
//!
//! `cargo bench --bench dns`; `BENCH_SECONDS` shortens each run (10 by default),
//! `BENCH_WORKERS` sets the tokio worker threads serving DNS (1 by default, as the
//! yardsticks were measured), `BENCH_YARDSTICK=0` skips the hickory run.

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
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// hickory-dns 0.26.3's own authoritative server, one worker, this machine (dns.md).
const HICKORY_QPS: f64 = 116_000.0;
/// NSD 4.6.1, one process, rate limiting off, this machine (dns.md).
const NSD_QPS: f64 = 335_000.0;
const ZONE: &str = "mysql.local.";

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

fn main() {
    let seconds = env_number("BENCH_SECONDS", 10).max(1);
    let workers = env_number("BENCH_WORKERS", 1).max(1) as usize;
    let yardstick = env_number("BENCH_YARDSTICK", 1) != 0;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime");

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
        let perf = dnsperf(server.local_addr(), queries.path(), seconds).await;
        server.stop().await;
        perf
    });
    println!("{}", ours.report);
    println!();

    let theirs = yardstick.then(|| {
        runtime.block_on(async {
            let (mut server, addr) = hickory_yardstick().expect("the yardstick server starts");
            let perf = dnsperf(addr, queries.path(), seconds).await;
            if let Err(e) = server.shutdown_gracefully().await {
                eprintln!("the yardstick server stopped with an error: {e}");
            }
            perf
        })
    });

    let plural = if workers == 1 { "" } else { "s" };
    if let Some(theirs) = &theirs {
        println!(
            "hickory-server's own Catalog + InMemoryZoneHandler, same zone, same run: \
             {:.0} queries/s, {} lost, average latency {:.3} ms",
            theirs.qps, theirs.lost, theirs.latency_ms
        );
    }
    println!(
        "dns.md's yardsticks (a quiet machine): hickory-dns's own server {HICKORY_QPS:.0} q/s \
         (pointsman: {:.0}% of it), NSD {NSD_QPS:.0} q/s ({:.0}%)",
        ours.qps / HICKORY_QPS * 100.0,
        ours.qps / NSD_QPS * 100.0,
    );
    let same_run = theirs
        .as_ref()
        .map(|t| {
            format!(
                "; hickory-server's own authoritative handler in the same run: {:.0} q/s",
                t.qps
            )
        })
        .unwrap_or_default();
    println!(
        "dns: {:.0} queries/s, {} lost of {}, average latency {:.3} ms \
         (dnsperf -c 4 -q 200 -l {seconds}, {workers} tokio worker{plural}, \
         server and dnsperf sharing 2 cores{same_run})",
        ours.qps, ours.lost, ours.sent, ours.latency_ms,
    );

    runtime.shutdown_timeout(Duration::from_secs(5));
}
