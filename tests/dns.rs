//! The embedded DNS responder, driven over real sockets by hickory's own client and by
//! `dig` (Debian's bind9-dnsutils). No database: routes are built by hand on 127.0.0.x.

mod support;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::{DnsResponse, ResponseCode};
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use pointsman::routing::dns::{DnsError, DnsRouter, DnsServer, DnsSettings};
use pointsman::routing::{ClusterRoute, Endpoint, Router, Routes};
use pointsman::topology::InstanceKey;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const ZONE: &str = "mysql.local.";

fn endpoint(host: &str, port: u16, addresses: &[&str]) -> Endpoint {
    Endpoint {
        key: InstanceKey::new(host, port),
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
    }
}

fn cluster(name: &str, writer: Option<Endpoint>, readers: Vec<Endpoint>) -> ClusterRoute {
    ClusterRoute {
        cluster: name.to_string(),
        writer,
        readers,
        standby: Vec::new(),
        fenced: Vec::new(),
        epoch: 1,
        recovery_id: None,
        decided_at: SystemTime::now(),
    }
}

fn routes(version: u64, clusters: Vec<ClusterRoute>) -> Routes {
    Routes {
        version,
        clusters: clusters
            .into_iter()
            .map(|c| (c.cluster.clone(), c))
            .collect(),
    }
}

/// `demo`: writer `writer` on port 3307 (plus ::1), readers 127.0.0.2 and .3 (.2 twice).
fn demo(version: u64, writer: &str) -> Routes {
    routes(
        version,
        vec![cluster(
            "demo",
            Some(endpoint("db1", 3307, &[writer, "::1"])),
            vec![
                endpoint("db2", 3306, &["127.0.0.2"]),
                endpoint("db2-alias", 3306, &["127.0.0.2"]),
                endpoint("db3", 3306, &["127.0.0.3"]),
            ],
        )],
    )
}

fn settings(ttl: Duration) -> DnsSettings {
    DnsSettings::new("127.0.0.1:0".parse().unwrap(), ZONE, ttl).unwrap()
}

fn start(routes: &Routes) -> DnsServer {
    let server =
        DnsServer::start(&settings(Duration::from_secs(60))).expect("DNS responder starts");
    server.publish(routes);
    server
}

// ---- hickory's client -------------------------------------------------------------

async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (connect, sender) = TcpClientStream::new(
        addr,
        None,
        Some(Duration::from_secs(3)),
        TokioRuntimeProvider::default(),
    );
    let stream = connect.await.expect("TCP connection to the responder");
    let (client, background) = Client::<TokioRuntimeProvider>::new(stream, sender);
    tokio::spawn(background);
    client
}

async fn ask(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    qtype: RecordType,
) -> DnsResponse {
    let name = Name::from_str(name).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        client.query(name, DNSClass::IN, qtype),
    )
    .await
    .expect("answer within 10 s")
    .expect("a DNS response")
}

fn data(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.data.to_string()).collect()
}

fn assert_authoritative(response: &DnsResponse) {
    assert!(
        response.metadata.authoritative,
        "AA must be set: {response:?}"
    );
    assert!(
        !response.metadata.recursion_available,
        "RA must be clear: {response:?}"
    );
}

fn soa_of(response: &DnsResponse) -> (u32, u32) {
    match response.authorities.as_slice() {
        [record] => match &record.data {
            RData::SOA(soa) => (soa.serial, soa.minimum),
            other => panic!("authority holds {other:?}, not a SOA"),
        },
        other => panic!("authority should hold the SOA alone: {other:?}"),
    }
}

// ---- dig ---------------------------------------------------------------------------

/// What `dig` printed, taken apart.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
    text: String,
}

impl Dig {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

async fn dig(addr: SocketAddr, args: &[&str]) -> Dig {
    let mut command = tokio::process::Command::new("dig");
    command
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+tries=1", "+time=3", "+nocookie"])
        .args(args)
        .kill_on_drop(true);
    let output = match tokio::time::timeout(Duration::from_secs(30), command.output()).await {
        Err(_) => panic!("dig {args:?} did not finish within 30 s"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "dig is not installed, and these tests need it: install bind9-dnsutils \
             (apt-get install bind9-dnsutils)"
        ),
        Ok(Err(e)) => panic!("cannot run dig: {e}"),
        Ok(Ok(output)) => output,
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut result = Dig {
        status: String::new(),
        flags: Vec::new(),
        answer: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
        text: text.clone(),
    };
    let mut section: Option<&mut Vec<String>> = None;
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            result.status = rest.split(',').next().unwrap_or_default().to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags:") {
            let flags = rest.split(';').next().unwrap_or_default();
            result.flags = flags.split_whitespace().map(String::from).collect();
        } else if line.starts_with(";; ANSWER SECTION:") {
            section = Some(&mut result.answer);
        } else if line.starts_with(";; AUTHORITY SECTION:") {
            section = Some(&mut result.authority);
        } else if line.starts_with(";; ADDITIONAL SECTION:") {
            section = Some(&mut result.additional);
        } else if line.trim().is_empty() || line.starts_with(';') {
            section = None;
        } else if let Some(records) = section.as_mut() {
            records.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    assert!(
        output.status.success() || !result.status.is_empty(),
        "dig {args:?} failed: {}{}",
        text,
        String::from_utf8_lossy(&output.stderr)
    );
    result
}

// ---- the tests -----------------------------------------------------------------------

#[tokio::test]
async fn the_primary_is_an_authoritative_a_record_with_the_configured_ttl() {
    let server = start(&demo(3, "127.0.0.1"));
    let addr = server.local_addr();

    let response = ask(
        &mut support::dns_udp_client(addr).await,
        "demo.primary.mysql.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert_authoritative(&response);
    assert_eq!(data(&response.answers), ["127.0.0.1"]);
    assert_eq!(response.answers[0].ttl, 60);

    let seen = dig(addr, &["demo.primary.mysql.local.", "A"]).await;
    assert_eq!(seen.status, "NOERROR", "{}", seen.text);
    assert!(seen.has_flag("aa") && !seen.has_flag("ra"), "{}", seen.text);
    assert!(seen.has_flag("rd"), "RD is echoed: {}", seen.text);
    assert_eq!(seen.answer, ["demo.primary.mysql.local. 60 IN A 127.0.0.1"]);

    // Names are matched without regard to case.
    let seen = dig_upper(addr).await;
    assert_eq!(seen.answer.len(), 1, "{}", seen.text);
    assert!(
        seen.answer[0].ends_with("60 IN A 127.0.0.1"),
        "{}",
        seen.text
    );

    // Another TTL, as configured.
    let short = DnsServer::start(&settings(Duration::from_secs(5))).unwrap();
    short.publish(&demo(3, "127.0.0.1"));
    let response = ask(
        &mut support::dns_udp_client(short.local_addr()).await,
        "demo.primary.mysql.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(response.answers[0].ttl, 5);
    let seen = dig(short.local_addr(), &["demo.primary.mysql.local.", "A"]).await;
    assert_eq!(seen.answer, ["demo.primary.mysql.local. 5 IN A 127.0.0.1"]);
}

async fn dig_upper(addr: SocketAddr) -> Dig {
    dig(addr, &["DEMO.Primary.MYSQL.local.", "A"]).await
}

#[tokio::test]
async fn aaaa_srv_and_replicas() {
    let server = start(&demo(3, "127.0.0.1"));
    let addr = server.local_addr();
    let mut client = support::dns_udp_client(addr).await;

    let response = ask(&mut client, "demo.primary.mysql.local.", RecordType::AAAA).await;
    assert_authoritative(&response);
    assert_eq!(data(&response.answers), ["::1"]);
    let dig_aaaa = dig(addr, &["demo.primary.mysql.local.", "AAAA"]).await;
    assert_eq!(
        dig_aaaa.answer,
        ["demo.primary.mysql.local. 60 IN AAAA ::1"]
    );

    let response = ask(
        &mut client,
        "_mysql._tcp.demo.primary.mysql.local.",
        RecordType::SRV,
    )
    .await;
    assert_authoritative(&response);
    assert_eq!(
        data(&response.answers),
        ["0 0 3307 demo.primary.mysql.local."]
    );
    let additional: BTreeSet<String> = data(&response.additionals).into_iter().collect();
    assert_eq!(
        additional,
        BTreeSet::from(["127.0.0.1".to_string(), "::1".to_string()])
    );
    let dig_srv = dig(addr, &["_mysql._tcp.demo.primary.mysql.local.", "SRV"]).await;
    assert_eq!(
        dig_srv.answer,
        ["_mysql._tcp.demo.primary.mysql.local. 60 IN SRV 0 0 3307 demo.primary.mysql.local."]
    );
    assert!(
        dig_srv
            .additional
            .contains(&"demo.primary.mysql.local. 60 IN A 127.0.0.1".to_string()),
        "{}",
        dig_srv.text
    );

    // Every reader once, though two endpoints resolve to 127.0.0.2.
    let response = ask(&mut client, "demo.replicas.mysql.local.", RecordType::A).await;
    assert_authoritative(&response);
    assert_eq!(data(&response.answers), ["127.0.0.2", "127.0.0.3"]);
    let dig_replicas = dig(addr, &["demo.replicas.mysql.local.", "A"]).await;
    assert_eq!(
        dig_replicas.answer,
        [
            "demo.replicas.mysql.local. 60 IN A 127.0.0.2",
            "demo.replicas.mysql.local. 60 IN A 127.0.0.3",
        ]
    );
}

#[tokio::test]
async fn missing_names_are_nxdomain_and_missing_types_nodata_both_with_the_soa() {
    let server = start(&demo(42, "127.0.0.1"));
    let addr = server.local_addr();
    let mut client = support::dns_udp_client(addr).await;

    let response = ask(&mut client, "nosuch.primary.mysql.local.", RecordType::A).await;
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
    assert_authoritative(&response);
    assert!(response.answers.is_empty());
    assert_eq!(
        soa_of(&response),
        (42, 1),
        "serial = routes version, negative TTL 1 s"
    );
    let nx = dig(addr, &["nosuch.primary.mysql.local.", "A"]).await;
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.text);
    assert!(nx.has_flag("aa"), "{}", nx.text);
    assert_eq!(nx.authority.len(), 1, "{}", nx.text);
    // The SOA's own TTL is min(TTL, MINIMUM) in a negative answer (RFC 2308 §3).
    assert!(
        nx.authority[0]
            .starts_with("mysql.local. 1 IN SOA ns.mysql.local. hostmaster.mysql.local. 42 "),
        "{}",
        nx.text
    );
    assert!(nx.authority[0].ends_with(" 1"), "{}", nx.text);

    // The name exists, the type does not; and empty non-terminals (RFC 8020).
    for (name, qtype) in [
        ("demo.primary.mysql.local.", RecordType::TXT),
        ("demo.replicas.mysql.local.", RecordType::AAAA),
        ("primary.mysql.local.", RecordType::A),
        ("_tcp.demo.primary.mysql.local.", RecordType::SRV),
    ] {
        let response = ask(&mut client, name, qtype).await;
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::NoError,
            "{name} {qtype}"
        );
        assert_authoritative(&response);
        assert!(response.answers.is_empty(), "{name} {qtype}");
        assert_eq!(soa_of(&response), (42, 1), "{name} {qtype}");
        let nodata = dig(addr, &[name, &qtype.to_string()]).await;
        assert_eq!(nodata.status, "NOERROR", "{}", nodata.text);
        assert!(nodata.answer.is_empty(), "{}", nodata.text);
        assert_eq!(nodata.authority.len(), 1, "{}", nodata.text);
        assert!(nodata.authority[0].contains(" IN SOA "), "{}", nodata.text);
    }
}

#[tokio::test]
async fn a_withdrawn_writer_is_nodata_not_nxdomain() {
    let server = start(&demo(1, "127.0.0.1"));
    let mut withdrawn = demo(2, "127.0.0.1");
    withdrawn.clusters.get_mut("demo").unwrap().writer = None;
    server.publish(&withdrawn);
    let addr = server.local_addr();
    let mut client = support::dns_udp_client(addr).await;
    for (name, qtype) in [
        ("demo.primary.mysql.local.", RecordType::A),
        ("_mysql._tcp.demo.primary.mysql.local.", RecordType::SRV),
    ] {
        let response = ask(&mut client, name, qtype).await;
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert!(response.answers.is_empty(), "{name}");
        assert_eq!(soa_of(&response), (2, 1));
    }
    let dig = dig(addr, &["demo.primary.mysql.local.", "A"]).await;
    assert_eq!(dig.status, "NOERROR", "{}", dig.text);
    assert!(dig.answer.is_empty(), "{}", dig.text);
}

#[tokio::test]
async fn names_outside_the_zone_and_zone_transfers_are_refused() {
    let server = start(&demo(1, "127.0.0.1"));
    let addr = server.local_addr();

    for name in ["example.com.", "local.", "mysql.local.example."] {
        let response = ask(
            &mut support::dns_udp_client(addr).await,
            name,
            RecordType::A,
        )
        .await;
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert!(!response.metadata.authoritative, "{name}");
        assert!(response.answers.is_empty() && response.authorities.is_empty());
        let dig = dig(addr, &[name, "A"]).await;
        assert_eq!(dig.status, "REFUSED", "{}", dig.text);
        assert!(!dig.has_flag("ra"), "{}", dig.text);
    }

    let response = ask(&mut tcp_client(addr).await, ZONE, RecordType::AXFR).await;
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);
    let axfr = dig(addr, &[ZONE, "AXFR"]).await;
    assert!(
        axfr.text.contains("Transfer failed") && !axfr.text.contains(" IN A "),
        "{}",
        axfr.text
    );
    let ixfr = dig(addr, &[ZONE, "IXFR=1", "+notcp", "+comments"]).await;
    assert_eq!(ixfr.status, "REFUSED", "{}", ixfr.text);
    let response = ask(
        &mut support::dns_udp_client(addr).await,
        ZONE,
        RecordType::IXFR,
    )
    .await;
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn protocol_details_any_opcodes_and_edns() {
    let server = start(&demo(1, "127.0.0.1"));
    let addr = server.local_addr();

    // The DO bit is copied into the answer's OPT (RFC 3225 §3), and left clear when
    // the query does not set it.
    let with_do = dig(addr, &["+dnssec", "demo.primary.mysql.local.", "A"]).await;
    assert!(
        with_do.text.contains("; EDNS: version: 0, flags: do;"),
        "{}",
        with_do.text
    );
    let without = dig(addr, &["demo.primary.mysql.local.", "A"]).await;
    assert!(
        without.text.contains("; EDNS: version: 0, flags:;"),
        "{}",
        without.text
    );

    // ANY gets one RRset (RFC 8482): the SOA at the apex, not the whole zone.
    let any = dig(addr, &[ZONE, "ANY"]).await;
    assert_eq!(any.status, "NOERROR", "{}", any.text);
    assert_eq!(any.answer.len(), 1, "{}", any.text);
    assert!(any.answer[0].contains(" IN SOA "), "{}", any.text);

    // NS at the apex, with the address of ns.<zone> since we listen on a specific IP.
    let ns = dig(addr, &[ZONE, "NS"]).await;
    assert_eq!(
        ns.answer,
        ["mysql.local. 60 IN NS ns.mysql.local."],
        "{}",
        ns.text
    );
    assert_eq!(
        ns.additional,
        ["ns.mysql.local. 60 IN A 127.0.0.1"],
        "{}",
        ns.text
    );

    // Only QUERY is implemented.
    let status = dig(addr, &["+opcode=status", ZONE, "SOA"]).await;
    assert_eq!(status.status, "NOTIMP", "{}", status.text);

    // EDNS: an OPT comes back, advertising our UDP size; an unknown version is BADVERS.
    let edns = dig(addr, &["+bufsize=4096", "demo.primary.mysql.local.", "A"]).await;
    assert!(edns.text.contains("; EDNS: version: 0"), "{}", edns.text);
    assert!(edns.text.contains("udp: 1232"), "{}", edns.text);
    let plain = dig(addr, &["+noedns", "demo.primary.mysql.local.", "A"]).await;
    assert!(!plain.text.contains("OPT PSEUDOSECTION"), "{}", plain.text);
    let badvers = dig(addr, &["+edns=1", "+noednsnegotiation", ZONE, "SOA"]).await;
    assert_eq!(badvers.status, "BADVERS", "{}", badvers.text);
}

#[tokio::test]
async fn a_large_answer_is_truncated_over_udp_and_complete_over_tcp() {
    let readers: Vec<Endpoint> = (1..=100)
        .map(|i| endpoint(&format!("r{i}"), 3306, &[&format!("127.0.1.{i}")]))
        .collect();
    let server = start(&routes(
        1,
        vec![cluster(
            "big",
            Some(endpoint("db1", 3306, &["127.0.0.1"])),
            readers,
        )],
    ));
    let addr = server.local_addr();
    let name = "big.replicas.mysql.local.";

    // dig without EDNS: 512 bytes at most, TC, and dig asks again over TCP.
    let dig_plain = dig(addr, &["+noedns", name, "A"]).await;
    assert!(
        dig_plain.text.contains("Truncated, retrying in TCP mode"),
        "{}",
        dig_plain.text
    );
    assert_eq!(dig_plain.status, "NOERROR", "{}", dig_plain.text);
    assert_eq!(dig_plain.answer.len(), 100, "{}", dig_plain.text);
    // With EDNS the UDP limit is 1232: still too small for 100 addresses.
    let dig_edns = dig(addr, &["+bufsize=4096", name, "A"]).await;
    assert!(
        dig_edns.text.contains("Truncated, retrying in TCP mode"),
        "{}",
        dig_edns.text
    );
    assert_eq!(dig_edns.answer.len(), 100, "{}", dig_edns.text);
    // And when told not to retry, dig shows the truncated UDP answer itself.
    let dig_ignore = dig(addr, &["+noedns", "+ignore", name, "A"]).await;
    assert!(dig_ignore.has_flag("tc"), "{}", dig_ignore.text);

    let mut udp = support::dns_udp_client(addr).await;
    udp.disable_edns();
    let response = ask(&mut udp, name, RecordType::A).await;
    assert!(response.metadata.truncation, "TC over UDP: {response:?}");
    assert!(response.answers.len() < 100);

    let response = ask(&mut tcp_client(addr).await, name, RecordType::A).await;
    assert!(!response.metadata.truncation);
    assert_authoritative(&response);
    assert_eq!(response.answers.len(), 100);
}

#[tokio::test]
async fn publish_swaps_the_answer_at_once() {
    let server = Arc::new(start(&demo(1, "127.0.0.1")));
    let addr = server.local_addr();
    let mut client = support::dns_udp_client(addr).await;
    let response = ask(&mut client, "demo.primary.mysql.local.", RecordType::A).await;
    assert_eq!(data(&response.answers), ["127.0.0.1"]);

    server.publish(&demo(2, "127.0.0.9"));
    let response = ask(&mut client, "demo.primary.mysql.local.", RecordType::A).await;
    assert_eq!(
        data(&response.answers),
        ["127.0.0.9"],
        "the first query after publish"
    );
    let dig = dig(addr, &["demo.primary.mysql.local.", "A"]).await;
    assert_eq!(dig.answer, ["demo.primary.mysql.local. 60 IN A 127.0.0.9"]);

    // Under load, every answer is one whole published set, never a mixture of two.
    let set_a = routes(
        3,
        vec![cluster(
            "demo",
            None,
            (1..=8)
                .map(|i| endpoint("a", 3306, &[&format!("127.0.3.{i}")]))
                .collect(),
        )],
    );
    let set_b = routes(
        4,
        vec![cluster(
            "demo",
            None,
            (1..=8)
                .map(|i| endpoint("b", 3306, &[&format!("127.0.4.{i}")]))
                .collect(),
        )],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut flips = 0u32;
            while !stop.load(Ordering::Relaxed) {
                server.publish(if flips.is_multiple_of(2) {
                    &set_a
                } else {
                    &set_b
                });
                flips += 1;
                tokio::task::yield_now().await;
            }
            flips
        })
    };
    let mut seen = BTreeSet::new();
    for _ in 0..300 {
        let response = ask(&mut client, "demo.replicas.mysql.local.", RecordType::A).await;
        let answer: Vec<IpAddr> = response
            .answers
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .collect();
        let prefixes: BTreeSet<[u8; 3]> = answer
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => {
                    let o = v4.octets();
                    [o[0], o[1], o[2]]
                }
                IpAddr::V6(_) => panic!("no IPv6 here"),
            })
            .collect();
        assert_eq!(answer.len(), 8, "a whole set: {answer:?}");
        assert_eq!(prefixes.len(), 1, "never a mixture: {answer:?}");
        seen.extend(prefixes);
    }
    stop.store(true, Ordering::Relaxed);
    let flips = publisher.await.unwrap();
    assert!(flips > 10, "the publisher ran ({flips} swaps)");
    assert!(!seen.is_empty());
}

#[tokio::test]
async fn the_router_publishes_reports_changes_and_inspects() {
    let server = DnsServer::start(&settings(Duration::from_secs(60))).unwrap();
    let addr = server.local_addr();
    let router = DnsRouter::new(server);
    assert_eq!(router.name(), format!("dns {addr}"));

    let before = demo(1, "127.0.0.1");
    let inspection = router.inspect(&before).await.unwrap();
    assert_eq!(inspection.len(), 1);
    assert!(
        !inspection[0].in_sync,
        "nothing published yet: {inspection:?}"
    );
    assert!(inspection[0].now.is_empty());

    let changes = router.reconcile(&before).await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].cluster, "demo");
    assert!(
        changes[0]
            .what
            .contains("demo.primary.mysql.local. A (none) → 127.0.0.1"),
        "{changes:?}"
    );
    assert!(
        router.reconcile(&before).await.unwrap().is_empty(),
        "idempotent"
    );

    let inspection = router.inspect(&before).await.unwrap();
    assert!(inspection[0].in_sync, "{inspection:?}");
    assert!(inspection[0]
        .now
        .contains(&"demo.primary.mysql.local. 60 IN A 127.0.0.1".to_string()));

    let after = demo(2, "127.0.0.2");
    let inspection = router.inspect(&after).await.unwrap();
    assert!(!inspection[0].in_sync);
    assert!(inspection[0]
        .should
        .contains(&"demo.primary.mysql.local. 60 IN A 127.0.0.2".to_string()));
    let changes = router.reconcile(&after).await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        changes[0].what,
        "demo.primary.mysql.local. A 127.0.0.1 → 127.0.0.2"
    );
    let response = ask(
        &mut support::dns_udp_client(addr).await,
        "demo.primary.mysql.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(data(&response.answers), ["127.0.0.2"]);

    // A cluster that leaves the routes is reported and stops being served.
    let changes = router.reconcile(&Routes::default()).await.unwrap();
    assert!(
        changes[0].what.contains("127.0.0.2 → (none)"),
        "{changes:?}"
    );
    let response = ask(
        &mut support::dns_udp_client(addr).await,
        "demo.primary.mysql.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn a_port_in_use_is_named_with_what_to_do() {
    let first = DnsServer::start(&settings(Duration::from_secs(60))).unwrap();
    let mut taken = settings(Duration::from_secs(60));
    taken.listen = first.local_addr();
    let error = DnsServer::start(&taken).err().expect("the port is taken");
    assert!(matches!(error, DnsError::Bind { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&first.local_addr().to_string()),
        "{message}"
    );
    assert!(message.contains("routing.dns.listen"), "{message}");

    // Stopping frees both ports.
    first.stop().await;
    let again = DnsServer::start(&taken).expect("the port is free again after stop");
    assert_eq!(again.local_addr(), taken.listen);
}

#[test]
fn starting_outside_a_runtime_is_an_error_not_a_panic() {
    let error = DnsServer::start(&settings(Duration::from_secs(60)))
        .err()
        .expect("no runtime");
    assert!(matches!(error, DnsError::NoRuntime), "{error}");
}

/// `demo.primary.mysql.local. A` with ID `id`, RD set, no EDNS.
fn primary_query(id: u16) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["demo", "primary", "mysql", "local"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// Garbage as a flood brings it: random octets, a response (QR set), a header whose
/// counts lie, a query cut short, datagrams shorter than a header.
fn junk(n: u64) -> Vec<u8> {
    let mut state = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut random = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    match n % 5 {
        0 => (0..12 + n % 80).map(|_| random()).collect(),
        1 => {
            let mut response = primary_query(n as u16);
            response[2] |= 0x80;
            response
        }
        2 => {
            let mut lying = primary_query(n as u16);
            lying[7] = 3;
            lying
        }
        3 => {
            let query = primary_query(n as u16);
            query[..query.len() - 3].to_vec()
        }
        _ => (0..n % 12).map(|_| random()).collect(),
    }
}

#[tokio::test]
async fn every_query_is_answered_while_junk_floods_the_port_and_junk_gets_nothing() {
    const WINDOWS: u16 = 100;
    const IN_FLIGHT: u16 = 50;
    const JUNK_PER_SECOND: u64 = 50_000;
    let server = start(&demo(1, "127.0.0.1"));
    let addr = server.local_addr();

    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let flooding = Arc::clone(&flooding);
        std::thread::spawn(move || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let start = std::time::Instant::now();
            let mut sent = 0u64;
            while flooding.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * JUNK_PER_SECOND as f64) as u64;
                if sent >= due {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                socket.send_to(&junk(sent), addr).unwrap();
                sent += 1;
            }
            // Whatever the responder sent back to the junk's source.
            std::thread::sleep(Duration::from_millis(200));
            socket.set_nonblocking(true).unwrap();
            let mut replies = 0;
            let mut buffer = [0u8; 1500];
            while socket.recv(&mut buffer).is_ok() {
                replies += 1;
            }
            (sent, replies)
        })
    };
    // Let the flood get going before the first query.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let answered = tokio::task::spawn_blocking(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut answered = 0u32;
        let mut buffer = [0u8; 512];
        for window in 0..WINDOWS {
            let ids: BTreeSet<u16> = (0..IN_FLIGHT).map(|i| window * IN_FLIGHT + i).collect();
            for id in &ids {
                socket.send_to(&primary_query(*id), addr).unwrap();
            }
            let mut waiting = ids.clone();
            while !waiting.is_empty() {
                let len = match socket.recv(&mut buffer) {
                    Ok(len) => len,
                    Err(e) => panic!(
                        "window {window}: {} of {IN_FLIGHT} queries unanswered ({e}) while junk \
                         arrived",
                        waiting.len()
                    ),
                };
                let response = hickory_net::proto::op::Message::from_vec(&buffer[..len])
                    .expect("a DNS response");
                assert!(
                    waiting.remove(&response.metadata.id),
                    "an answer to a query not asked: {response:?}"
                );
                assert_eq!(data(&response.answers), ["127.0.0.1"]);
                answered += 1;
            }
        }
        answered
    })
    .await
    .unwrap();
    flooding.store(false, Ordering::Relaxed);
    let (junk_sent, junk_replies) = flood.join().unwrap();

    assert_eq!(answered, u32::from(WINDOWS * IN_FLIGHT));
    assert!(junk_sent > 1000, "the flood ran: {junk_sent} datagrams");
    assert_eq!(junk_replies, 0, "junk is dropped, never answered");
    server.stop().await;
}
