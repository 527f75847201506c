//! The embedded DNS responder: authoritative for one zone (`mysql.local.` by default), it
//! answers `<cluster>.primary.<zone>`, `<cluster>.replicas.<zone>` and
//! `_mysql._tcp.<cluster>.primary.<zone>` over UDP and TCP from the routes last published.
//!
//! It owns three things, kept apart so the first two are tested without a socket:
//! - the records: `ZoneData::build` turns `Routes` into record sets (pure);
//! - the answers: `ZoneData::lookup` and `respond` turn a question into AA answer, NODATA,
//!   NXDOMAIN, REFUSED, … and `fit` makes it fit the transport, setting TC (pure);
//! - the sockets: over UDP, a thread of its own (`udp.rs`) answers most queries by copying
//!   a response encoded at publish (`prepared.rs`) and gives the rest to the general path
//!   (`answer_datagram`); over TCP, hickory-server's `Server` runs our own
//!   `RequestHandler`. `DnsRouter` is the `Router` the routing engine drives.
//!
//! It must not resolve anything per query (addresses arrive resolved in `Endpoint`), recurse,
//! or answer for a name outside its zone: it is never an open resolver nor an amplifier. A
//! failover replaces the whole zone in one swap (`publish`), so no query sees half a change.

mod prepared;
mod udp;

use super::{Change, Inspection, RouteError, Router, Routes};
use futures::future::BoxFuture;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, LowerQuery, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::proto::ProtoError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use hickory_server::Server;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// `routing.dns.listen` by default: loopback, and a port that needs no root.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8053);
/// `routing.dns.zone` by default.
pub const DEFAULT_ZONE: &str = "mysql.local.";
/// `routing.dns.ttl` by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// The largest UDP answer sent, whatever the client offers: the DNS Flag Day 2020 size,
/// which keeps answers out of IP fragmentation (lost or spoofable) on real networks.
/// Larger answers are truncated and the client asks again over TCP.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Without EDNS a UDP answer may not exceed 512 bytes (RFC 1035 §4.2.1).
const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// Negative-caching TTL (SOA MINIMUM, RFC 2308): how long resolvers remember that a name or
/// a type does not exist. During a failover `<cluster>.primary` has no address for the
/// milliseconds between withdrawal and promotion; a resolver that asks then must not cache
/// that emptiness for a minute and keep the application away from the new primary, so the
/// emptiness is cached for one second at most.
const NEGATIVE_TTL: u32 = 1;
// Refresh, retry and expire only matter to secondaries, which this zone never has.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86_400;

/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection before the connection waits for the client.
const TCP_RESPONSE_BUFFER: usize = 32;
/// How long `stop` waits for the listening tasks to end.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// With port 0, how many kernel-chosen UDP ports to try before giving up on finding one
/// whose TCP twin is also free.
const BIND_ATTEMPTS: usize = 16;

/// Where and what the responder serves (`[routing.dns]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// UDP and TCP, same address and port. Port 0 picks a free one (tests).
    pub listen: SocketAddr,
    /// The zone, absolute and lowercase once made by `DnsSettings::new`.
    pub zone: String,
    /// TTL of every positive answer (whole seconds).
    pub ttl: Duration,
}

impl DnsSettings {
    /// Checks and normalises the settings: the zone becomes absolute and lowercase
    /// (`MySQL.Local` → `mysql.local.`).
    pub fn new(listen: SocketAddr, zone: &str, ttl: Duration) -> Result<Self, DnsError> {
        let zone = normalise_zone(zone)?;
        if ttl.as_secs() > i32::MAX as u64 {
            return Err(DnsError::Ttl { ttl });
        }
        Ok(Self { listen, zone, ttl })
    }
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            zone: DEFAULT_ZONE.to_string(),
            ttl: DEFAULT_TTL,
        }
    }
}

/// Why the responder could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(
        "routing.dns.zone = {zone:?} is not a usable DNS zone: {reason}; \
         set it to a domain of its own, such as \"mysql.local.\""
    )]
    Zone { zone: String, reason: String },
    #[error(
        "routing.dns.ttl = {ttl:?} is longer than DNS allows (2147483647 s, RFC 2181); \
         a few seconds to a minute suits failover"
    )]
    Ttl { ttl: Duration },
    #[error("DNS responder cannot listen on {protocol} {addr}: {source}; {hint}")]
    Bind {
        protocol: &'static str,
        addr: SocketAddr,
        source: io::Error,
        hint: &'static str,
    },
    #[error("the DNS responder must be started from inside a tokio runtime")]
    NoRuntime,
}

fn bind_error(protocol: &'static str, addr: SocketAddr, source: io::Error) -> DnsError {
    let hint = match source.kind() {
        io::ErrorKind::AddrInUse => {
            "another process (another pointsman?) uses that port: stop it or set \
             routing.dns.listen to a free port"
        }
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: listen on a high port \
             (8053) and let the local resolver forward the zone to it"
        }
        io::ErrorKind::AddrNotAvailable => {
            "that address is not on this host: set routing.dns.listen to one of its \
             addresses, or 0.0.0.0"
        }
        _ => "check routing.dns.listen",
    };
    DnsError::Bind {
        protocol,
        addr,
        source,
        hint,
    }
}

/// `Some(reason)` when `label` cannot be a label of the names we serve: letters, digits,
/// '-' and '_', at most 63 characters, not starting with '-'.
fn label_problem(label: &str) -> Option<String> {
    if label.is_empty() {
        return Some("it has an empty label (two dots in a row, or a leading dot)".into());
    }
    if label.len() > 63 {
        return Some(format!("label {label:?} is longer than 63 characters"));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Some(format!(
            "label {label:?} contains {c:?}: only letters, digits, '-' and '_' can be served"
        ));
    }
    if label.starts_with('-') {
        return Some(format!("label {label:?} starts with '-'"));
    }
    None
}

/// Octets a name takes on the wire, uncompressed.
fn wire_len_of_text(absolute: &str) -> usize {
    absolute
        .trim_end_matches('.')
        .split('.')
        .map(|l| l.len() + 1)
        .sum::<usize>()
        + 1
}

fn normalise_zone(zone: &str) -> Result<String, DnsError> {
    let problem = |reason: String| DnsError::Zone {
        zone: zone.to_string(),
        reason,
    };
    let lower = zone.trim().to_ascii_lowercase();
    let bare = lower.strip_suffix('.').unwrap_or(&lower);
    if bare.is_empty() {
        return Err(problem(
            "it is empty or the root; pointsman answers for one zone of its own".into(),
        ));
    }
    if let Some(reason) = bare.split('.').find_map(label_problem) {
        return Err(problem(reason));
    }
    let absolute = format!("{bare}.");
    // Room for `_mysql._tcp.<cluster>.primary.` in front.
    if wire_len_of_text(&absolute) > 200 {
        return Err(problem(
            "it is too long to leave room for cluster names".into(),
        ));
    }
    Ok(absolute)
}

fn parse_name(absolute: &str) -> Result<Name, String> {
    Name::from_ascii(absolute).map_err(|e| format!("{absolute:?} is not a DNS name: {e}"))
}

/// The checked, parsed form of `DnsSettings` the records are built from.
#[derive(Clone, Debug)]
pub struct ZoneConfig {
    origin: Name,
    ns: Name,
    hostmaster: Name,
    ttl: u32,
    /// The address published for `ns.<zone>`: the listening one when it is a specific IP.
    ns_address: Option<IpAddr>,
}

impl ZoneConfig {
    pub fn new(settings: &DnsSettings) -> Result<Self, DnsError> {
        let settings = DnsSettings::new(settings.listen, &settings.zone, settings.ttl)?;
        let names = (|| -> Result<(Name, Name, Name), String> {
            Ok((
                parse_name(&settings.zone)?,
                parse_name(&format!("ns.{}", settings.zone))?,
                parse_name(&format!("hostmaster.{}", settings.zone))?,
            ))
        })();
        let (origin, ns, hostmaster) = names.map_err(|reason| DnsError::Zone {
            zone: settings.zone.clone(),
            reason,
        })?;
        let ip = settings.listen.ip();
        Ok(Self {
            origin,
            ns,
            hostmaster,
            // DnsSettings::new bounded it to i32::MAX.
            ttl: u32::try_from(settings.ttl.as_secs()).unwrap_or(i32::MAX as u32),
            ns_address: (!ip.is_unspecified()).then_some(ip),
        })
    }

    /// The zone, absolute and lowercase.
    pub fn zone(&self) -> String {
        self.origin.to_string()
    }
}

/// The names one cluster is served under.
struct ClusterNames {
    primary: Name,
    replicas: Name,
    srv: Name,
}

fn cluster_names(config: &ZoneConfig, alias: &str) -> Result<ClusterNames, String> {
    let lower = alias.to_ascii_lowercase();
    if let Some(reason) = lower.split('.').find_map(label_problem) {
        return Err(format!("its alias is not a DNS name: {reason}"));
    }
    let zone = config.origin.to_string();
    let srv = format!("_mysql._tcp.{lower}.primary.{zone}");
    if wire_len_of_text(&srv) > 255 {
        return Err(format!("{srv} is longer than DNS allows (255 octets)"));
    }
    Ok(ClusterNames {
        primary: parse_name(&format!("{lower}.primary.{zone}"))?,
        replicas: parse_name(&format!("{lower}.replicas.{zone}"))?,
        srv: parse_name(&srv)?,
    })
}

/// Records of one type at one name, and what goes in the additional section with them.
#[derive(Debug)]
struct RrSet {
    rtype: RecordType,
    records: Vec<Record>,
    additionals: Vec<Record>,
}

/// A name that exists in the zone. An empty one is an empty non-terminal, or a name whose
/// records are withdrawn for now (`<cluster>.primary` during a failover): NODATA either way.
#[derive(Debug, Default)]
struct Node {
    rrsets: Vec<RrSet>,
}

impl Node {
    fn add(&mut self, rtype: RecordType, records: Vec<Record>, additionals: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        match self.rrsets.iter_mut().find(|s| s.rtype == rtype) {
            Some(set) => {
                set.records.extend(records);
                set.additionals.extend(additionals);
            }
            None => self.rrsets.push(RrSet {
                rtype,
                records,
                additionals,
            }),
        }
    }
}

/// What the zone says about one cluster, for `inspect` and the audit of changes.
#[derive(Clone, Debug, Default, PartialEq)]
struct ClusterView {
    /// The cluster's own records, in a fixed order: primary, replicas, SRV.
    records: Vec<Record>,
    /// Why the cluster is served partly or not at all.
    note: Option<String>,
}

impl ClusterView {
    fn lines(&self) -> Vec<String> {
        self.note
            .iter()
            .map(|note| format!("; {note}"))
            .chain(self.records.iter().map(Record::to_string))
            .collect()
    }

    /// `(name, type) → values`, in the order the records come.
    fn rrsets(&self) -> Vec<((String, RecordType), Vec<String>)> {
        let mut sets: Vec<((String, RecordType), Vec<String>)> = Vec::new();
        for record in &self.records {
            let key = (record.name.to_string(), record.record_type());
            let value = record.data.to_string();
            match sets.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) => values.push(value),
                None => sets.push((key, vec![value])),
            }
        }
        sets
    }
}

/// The whole zone at one instant: what every query is answered from until the next
/// `publish` swaps in another.
#[derive(Debug)]
pub struct ZoneData {
    origin: LowerName,
    serial: u32,
    soa: Vec<Record>,
    nodes: HashMap<LowerName, Node>,
    clusters: BTreeMap<String, ClusterView>,
}

/// What the zone says to one question.
#[derive(Debug, PartialEq)]
pub enum Lookup<'z> {
    /// Not ours to answer: outside the zone, another class, or a zone transfer.
    Refused,
    /// The name does not exist (nor anything below it); the SOA goes in authority.
    NxDomain { soa: &'z [Record] },
    /// The name exists without records of the asked type; the SOA goes in authority.
    NoData { soa: &'z [Record] },
    Answer {
        answers: &'z [Record],
        additionals: &'z [Record],
    },
}

fn address_records(name: &Name, ttl: u32, addresses: &BTreeSet<IpAddr>) -> [Vec<Record>; 2] {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for address in addresses {
        match address {
            IpAddr::V4(ip) => v4.push(Record::from_rdata(name.clone(), ttl, RData::A(A(*ip)))),
            IpAddr::V6(ip) => v6.push(Record::from_rdata(
                name.clone(),
                ttl,
                RData::AAAA(AAAA(*ip)),
            )),
        }
    }
    [v4, v6]
}

impl ZoneData {
    /// The records `routes` call for (pure).
    pub fn build(config: &ZoneConfig, routes: &Routes) -> Self {
        let ttl = config.ttl;
        let mut nodes: HashMap<LowerName, Node> = HashMap::new();
        let soa = Record::from_rdata(
            config.origin.clone(),
            ttl,
            RData::SOA(SOA::new(
                config.ns.clone(),
                config.hostmaster.clone(),
                // RFC 1982 serial arithmetic wraps, so truncating is what the field expects.
                routes.version as u32,
                SOA_REFRESH,
                SOA_RETRY,
                SOA_EXPIRE,
                NEGATIVE_TTL,
            )),
        );
        // The SOA of a negative answer carries min(its TTL, MINIMUM) (RFC 2308 §3): a
        // cache that reads only the record's TTL must not keep a failover's short NODATA
        // window for a whole TTL.
        let mut negative_soa = soa.clone();
        negative_soa.ttl = ttl.min(NEGATIVE_TTL);
        let ns_addresses: BTreeSet<IpAddr> = config.ns_address.into_iter().collect();
        let [ns_v4, ns_v6] = address_records(&config.ns, ttl, &ns_addresses);
        let apex = nodes.entry(LowerName::new(&config.origin)).or_default();
        apex.add(RecordType::SOA, vec![soa.clone()], Vec::new());
        apex.add(
            RecordType::NS,
            vec![Record::from_rdata(
                config.origin.clone(),
                ttl,
                RData::NS(NS(config.ns.clone())),
            )],
            ns_v4.iter().chain(&ns_v6).cloned().collect(),
        );
        let ns = nodes.entry(LowerName::new(&config.ns)).or_default();
        ns.add(RecordType::A, ns_v4, Vec::new());
        ns.add(RecordType::AAAA, ns_v6, Vec::new());

        let mut clusters = BTreeMap::new();
        // Lowercased alias → alias: two aliases differing only in case would share names.
        let mut taken: HashMap<String, &str> = HashMap::new();
        for (alias, route) in &routes.clusters {
            let names = match cluster_names(config, alias) {
                Ok(names) => names,
                Err(reason) => {
                    let note = format!("cluster {alias} is not served: {reason}");
                    clusters.insert(
                        alias.clone(),
                        ClusterView {
                            records: Vec::new(),
                            note: Some(note),
                        },
                    );
                    continue;
                }
            };
            if let Some(other) = taken.insert(alias.to_ascii_lowercase(), alias) {
                let note = format!(
                    "cluster {alias} is not served: DNS names ignore case, and cluster {other} \
                     already has its names"
                );
                clusters.insert(
                    alias.clone(),
                    ClusterView {
                        records: Vec::new(),
                        note: Some(note),
                    },
                );
                continue;
            }
            let mut view = ClusterView::default();

            let writer: BTreeSet<IpAddr> = route
                .writer
                .iter()
                .flat_map(|w| w.addresses.iter().copied())
                .collect();
            let [primary_v4, primary_v6] = address_records(&names.primary, ttl, &writer);
            let readers: BTreeSet<IpAddr> = route
                .readers
                .iter()
                .flat_map(|r| r.addresses.iter().copied())
                .collect();
            let [replicas_v4, replicas_v6] = address_records(&names.replicas, ttl, &readers);
            let srv: Vec<Record> = route
                .writer
                .iter()
                .map(|w| {
                    Record::from_rdata(
                        names.srv.clone(),
                        ttl,
                        RData::SRV(SRV::new(0, 0, w.key.port, names.primary.clone())),
                    )
                })
                .collect();
            match &route.writer {
                None => {
                    view.note = Some(format!(
                        "{} has no writer now (a failover is under way): it answers NODATA",
                        names.primary
                    ))
                }
                Some(w) if w.addresses.is_empty() => {
                    view.note = Some(format!(
                        "{} has no address: writer {} did not resolve",
                        names.primary, w.key
                    ))
                }
                Some(_) => {}
            }
            view.records
                .extend(primary_v4.iter().chain(&primary_v6).cloned());
            view.records
                .extend(replicas_v4.iter().chain(&replicas_v6).cloned());
            view.records.extend(srv.iter().cloned());

            let srv_additionals = primary_v4.iter().chain(&primary_v6).cloned().collect();
            let primary = nodes.entry(LowerName::new(&names.primary)).or_default();
            primary.add(RecordType::A, primary_v4, Vec::new());
            primary.add(RecordType::AAAA, primary_v6, Vec::new());
            let replicas = nodes.entry(LowerName::new(&names.replicas)).or_default();
            replicas.add(RecordType::A, replicas_v4, Vec::new());
            replicas.add(RecordType::AAAA, replicas_v6, Vec::new());
            let srv_node = nodes.entry(LowerName::new(&names.srv)).or_default();
            srv_node.add(RecordType::SRV, srv, srv_additionals);

            clusters.insert(alias.clone(), view);
        }

        // Every name between a record's owner and the apex exists (RFC 8020): NODATA, never
        // NXDOMAIN, for `primary.<zone>` or `_tcp.<cluster>.primary.<zone>`.
        let origin = LowerName::new(&config.origin);
        let owners: Vec<LowerName> = nodes.keys().cloned().collect();
        for owner in owners {
            let mut name = owner.base_name();
            while origin.zone_of(&name) && name != origin {
                let parent = name.base_name();
                nodes.entry(name).or_default();
                name = parent;
            }
        }

        Self {
            origin,
            serial: routes.version as u32,
            soa: vec![negative_soa],
            nodes,
            clusters,
        }
    }

    /// The SOA serial: `Routes.version`, wrapping.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The zone-file lines served for `cluster` (empty when the cluster is not served).
    pub fn cluster_lines(&self, cluster: &str) -> Vec<String> {
        self.clusters
            .get(cluster)
            .map(ClusterView::lines)
            .unwrap_or_default()
    }

    /// What the zone answers to `name`/`qtype`/`qclass` (pure). `name` is matched
    /// case-insensitively. ANY gets one RRset, not all (RFC 8482).
    pub fn lookup(&self, name: &LowerName, qtype: RecordType, qclass: DNSClass) -> Lookup<'_> {
        if !self.origin.zone_of(name)
            || !matches!(qclass, DNSClass::IN | DNSClass::ANY)
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            return Lookup::Refused;
        }
        let Some(node) = self.nodes.get(name) else {
            return Lookup::NxDomain { soa: &self.soa };
        };
        let set = if qtype == RecordType::ANY {
            node.rrsets.first()
        } else {
            node.rrsets.iter().find(|s| s.rtype == qtype)
        };
        match set {
            Some(set) => Lookup::Answer {
                answers: &set.records,
                additionals: &set.additionals,
            },
            None => Lookup::NoData { soa: &self.soa },
        }
    }
}

/// Per cluster, what changed between two zones, in the words of the audit:
/// `demo.primary.mysql.local. A 127.0.0.1 → 127.0.0.2`.
fn changes(old: &ZoneData, new: &ZoneData) -> Vec<Change> {
    let empty = ClusterView::default();
    let names: BTreeSet<&String> = old.clusters.keys().chain(new.clusters.keys()).collect();
    let mut changes = Vec::new();
    for cluster in names {
        let before = old.clusters.get(cluster).unwrap_or(&empty);
        let after = new.clusters.get(cluster).unwrap_or(&empty);
        if before == after {
            continue;
        }
        let (old_sets, new_sets) = (before.rrsets(), after.rrsets());
        let mut keys: Vec<&(String, RecordType)> = new_sets.iter().map(|(k, _)| k).collect();
        for (key, _) in &old_sets {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let values = |sets: &[((String, RecordType), Vec<String>)], key: &(String, RecordType)| {
            sets.iter()
                .find(|(k, _)| k == key)
                .map_or_else(|| "(none)".to_string(), |(_, v)| v.join(", "))
        };
        let mut parts: Vec<String> = keys
            .into_iter()
            .filter_map(|key| {
                let (was, now) = (values(&old_sets, key), values(&new_sets, key));
                (was != now).then(|| format!("{} {} {was} → {now}", key.0, key.1))
            })
            .collect();
        if before.note != after.note {
            parts.extend(after.note.clone());
        }
        if !parts.is_empty() {
            changes.push(Change {
                cluster: cluster.clone(),
                what: parts.join("; "),
            });
        }
    }
    changes
}

/// A response before it is encoded: header, sections borrowed from the zone, OPT.
#[derive(Debug)]
struct Reply<'z> {
    metadata: Metadata,
    answers: &'z [Record],
    authorities: &'z [Record],
    additionals: &'z [Record],
    edns: Option<Edns>,
    /// The largest message the transport takes for this question.
    limit: u16,
}

/// The whole response to a request, before it is fitted to the transport (pure).
fn respond<'z>(
    zone: &'z ZoneData,
    request: &Metadata,
    queries: &[LowerQuery],
    edns: Option<&Edns>,
    udp: bool,
) -> Reply<'z> {
    let limit = match (udp, edns) {
        (false, _) => u16::MAX,
        (true, None) => CLASSIC_UDP_PAYLOAD,
        (true, Some(edns)) => edns
            .max_payload()
            .clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD),
    };
    let mut reply = Reply {
        metadata: Metadata::response_from_request(request),
        answers: &[],
        authorities: &[],
        additionals: &[],
        // A request with OPT gets one back (RFC 6891 §6.1.1); ours offers no options, and
        // copies the DO bit (RFC 3225 §3).
        edns: edns.map(|theirs| {
            let mut ours = Edns::new();
            ours.set_max_payload(MAX_UDP_PAYLOAD)
                .set_version(0)
                .set_dnssec_ok(theirs.flags().dnssec_ok);
            ours
        }),
        limit,
    };
    // Never recursive: RA stays clear whatever RD asks.
    reply.metadata.recursion_available = false;
    let code = if edns.is_some_and(|e| e.version() > 0) {
        ResponseCode::BADVERS
    } else if request.op_code != OpCode::Query {
        ResponseCode::NotImp
    } else if let [query] = queries {
        match zone.lookup(query.name(), query.query_type(), query.query_class()) {
            Lookup::Refused => ResponseCode::Refused,
            Lookup::NxDomain { soa } => {
                reply.metadata.authoritative = true;
                reply.authorities = soa;
                ResponseCode::NXDomain
            }
            Lookup::NoData { soa } => {
                reply.metadata.authoritative = true;
                reply.authorities = soa;
                ResponseCode::NoError
            }
            Lookup::Answer {
                answers,
                additionals,
            } => {
                reply.metadata.authoritative = true;
                reply.answers = answers;
                reply.additionals = additionals;
                ResponseCode::NoError
            }
        }
    } else {
        ResponseCode::FormErr
    };
    reply.metadata.response_code = code;
    reply
}

fn name_wire_len(name: &Name) -> usize {
    name.iter().map(|label| label.len() + 1).sum::<usize>() + 1
}

/// An upper bound of a record's size on the wire (no name compression).
fn record_wire_bound(record: &Record) -> usize {
    let rdata = match &record.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(srv) => 6 + name_wire_len(&srv.target),
        RData::NS(ns) => name_wire_len(&ns.0),
        RData::SOA(soa) => name_wire_len(&soa.mname) + name_wire_len(&soa.rname) + 20,
        _ => usize::from(u16::MAX),
    };
    name_wire_len(&record.name) + 10 + rdata
}

/// An upper bound of the encoded reply's size: header, question, records, OPT.
fn wire_bound(reply: &Reply<'_>, queries: &Queries) -> usize {
    let question: usize = queries
        .queries()
        .iter()
        .map(|q| name_wire_len(q.name()) + 4)
        .sum();
    let records: usize = reply
        .answers
        .iter()
        .chain(reply.authorities)
        .chain(reply.additionals)
        .map(record_wire_bound)
        .sum();
    let opt = if reply.edns.is_some() { 11 } else { 0 };
    12 + question + records + opt
}

/// The reply as hickory's encoder takes it, the question echoed as it was asked.
fn response<'q, 'z>(
    reply: &'q Reply<'z>,
    queries: &'q Queries,
) -> MessageResponse<
    'q,
    'z,
    impl Iterator<Item = &'z Record> + Send + 'z,
    impl Iterator<Item = &'z Record> + Send + 'z,
    impl Iterator<Item = &'z Record> + Send + 'z,
    impl Iterator<Item = &'z Record> + Send + 'z,
> {
    MessageResponseBuilder::new(queries, reply.edns.as_ref()).build(
        reply.metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        std::iter::empty(),
        reply.additionals.iter(),
    )
}

/// Whether the reply, encoded exactly as it will be sent, stays within its limit.
fn encodes_within_limit(reply: &Reply<'_>, queries: &Queries) -> bool {
    let mut buffer = Vec::with_capacity(usize::from(reply.limit));
    let mut encoder = BinEncoder::new(&mut buffer);
    encoder.set_max_size(reply.limit);
    // The encoder stops at the limit and says so with the TC bit of the header it wrote.
    response(reply, queries)
        .destructive_emit(&mut encoder)
        .is_ok_and(|info| !info.truncation)
}

/// The reply on the wire, within its limit (pure).
fn encode(reply: &Reply<'_>, queries: &Queries) -> Result<Vec<u8>, ProtoError> {
    let mut buffer = Vec::with_capacity(usize::from(CLASSIC_UDP_PAYLOAD));
    let mut encoder = BinEncoder::new(&mut buffer);
    encoder.set_max_size(reply.limit);
    response(reply, queries).destructive_emit(&mut encoder)?;
    Ok(buffer)
}

/// The general path over UDP, for the datagrams the prepared answers do not cover:
/// hickory decodes the datagram and it is answered as a TCP query is, fitted to UDP.
/// `None` for a datagram that is not a query: no answer is sent.
fn answer_datagram(zone: &ZoneData, datagram: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    let request = Request::from_bytes(datagram.to_vec(), src, Protocol::Udp).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let reply = respond(
        zone,
        &request.metadata,
        request.queries.queries(),
        request.edns.as_ref(),
        true,
    );
    let reply = fit(reply, &request.queries);
    match encode(&reply, &request.queries) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::debug!(%error, %src, "DNS response not encoded");
            None
        }
    }
}

/// Makes the reply fit its transport (pure). hickory's encoder would cut a too-large
/// message at the limit itself, but record by record: a partial RRset, TC set when only
/// the additional section overflowed, and the OPT record dropped when the records filled
/// the space. So we decide here, with hickory's own encoder as the ruler:
/// 1. everything fits: sent as is (nearly always — checked against a cheap upper bound);
/// 2. only the additional section does not fit: it is left out, TC stays clear — additional
///    data is optional (RFC 2181 §9);
/// 3. otherwise: no records, TC set, OPT kept, and the client asks again over TCP
///    (RFC 1035 §4.2.1, RFC 7766).
fn fit<'z>(mut reply: Reply<'z>, queries: &Queries) -> Reply<'z> {
    if wire_bound(&reply, queries) <= usize::from(reply.limit)
        || encodes_within_limit(&reply, queries)
    {
        return reply;
    }
    reply.additionals = &[];
    if encodes_within_limit(&reply, queries) {
        return reply;
    }
    reply.answers = &[];
    reply.authorities = &[];
    reply.metadata.truncation = true;
    reply
}

/// What queries are answered from between two publishes: the zone, and the UDP
/// responses prepared from it.
struct Served {
    zone: ZoneData,
    prepared: prepared::PreparedAnswers,
}

impl Served {
    fn new(zone: ZoneData) -> Self {
        let prepared = prepared::PreparedAnswers::build(&zone);
        Self { zone, prepared }
    }
}

/// The zone being served, replaced whole by `publish`.
struct Shared {
    config: ZoneConfig,
    current: RwLock<Arc<Served>>,
}

impl Shared {
    fn current(&self) -> Arc<Served> {
        // A panic elsewhere cannot leave a half-written `Arc` behind: poisoning is moot.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn swap(&self, served: Served) -> Arc<Served> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, Arc::new(served))
    }
}

/// hickory-server's `RequestHandler`, for TCP: answers every query from the zone of the
/// instant.
struct Responder {
    shared: Arc<Shared>,
}

impl RequestHandler for Responder {
    // The desugared form of `#[async_trait] async fn handle_request`.
    fn handle_request<'s, 'r, 'f, R, T>(
        &'s self,
        request: &'r Request,
        mut response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'f>>
    where
        R: ResponseHandler + 'f,
        T: Time + 'f,
        's: 'f,
        'r: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let served = self.shared.current();
            let reply = respond(
                &served.zone,
                &request.metadata,
                request.queries.queries(),
                request.edns.as_ref(),
                request.protocol() == Protocol::Udp,
            );
            let reply = fit(reply, &request.queries);
            match response_handle
                .send_response(response(&reply, &request.queries))
                .await
            {
                Ok(info) => info,
                Err(error) => {
                    tracing::debug!(%error, src = %request.src(), "DNS response not sent");
                    let mut metadata = reply.metadata;
                    metadata.response_code = ResponseCode::ServFail;
                    ResponseInfo::from(Header {
                        metadata,
                        counts: HeaderCounts::default(),
                    })
                }
            }
        })
    }
}

/// Binds UDP and TCP on the same address and port; with port 0, on one the kernel picks
/// for UDP and that is free for TCP too.
fn bind(listen: SocketAddr) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    let attempts = if listen.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = std::net::UdpSocket::bind(listen).map_err(|e| bind_error("UDP", listen, e))?;
        let addr = udp.local_addr().map_err(|e| bind_error("UDP", listen, e))?;
        match std::net::TcpListener::bind(addr) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                last = Some((addr, e));
            }
            Err(e) => return Err(bind_error("TCP", addr, e)),
        }
    }
    let (addr, source) = last.unwrap_or_else(|| {
        (
            listen,
            io::Error::new(
                io::ErrorKind::AddrInUse,
                "no port free for both UDP and TCP",
            ),
        )
    });
    Err(bind_error("TCP", addr, source))
}

/// The running responder. Dropping it stops it (the sockets close within moments);
/// `stop` stops it and waits until they are closed.
pub struct DnsServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// UDP: the thread of its own.
    udp: Option<udp::UdpResponder>,
    /// TCP: hickory's server on the runtime.
    server: Option<Server<Responder>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `settings.listen` and starts answering, with a zone holding
    /// only its SOA and NS until the first `publish`. Call it inside a tokio runtime.
    pub fn start(settings: &DnsSettings) -> Result<Self, DnsError> {
        let config = ZoneConfig::new(settings)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(DnsError::NoRuntime);
        }
        let (udp, tcp) = bind(settings.listen)?;
        let local_addr = udp
            .local_addr()
            .map_err(|e| bind_error("UDP", settings.listen, e))?;
        tcp.set_nonblocking(true)
            .map_err(|e| bind_error("TCP", local_addr, e))?;
        let tcp =
            tokio::net::TcpListener::from_std(tcp).map_err(|e| bind_error("TCP", local_addr, e))?;

        let empty = ZoneData::build(&config, &Routes::default());
        let shared = Arc::new(Shared {
            config,
            current: RwLock::new(Arc::new(Served::new(empty))),
        });
        let udp = udp::UdpResponder::start(udp, Arc::clone(&shared))
            .map_err(|e| bind_error("UDP", local_addr, e))?;
        let mut server = Server::new(Responder {
            shared: Arc::clone(&shared),
        });
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        tracing::info!(listen = %local_addr, zone = %shared.config.zone(), "DNS responder listening");
        Ok(Self {
            local_addr,
            shared,
            udp: Some(udp),
            server: Some(server),
        })
    }

    /// Where it listens (UDP and TCP); the real port when started with port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The zone served, absolute and lowercase.
    pub fn zone(&self) -> String {
        self.shared.config.zone()
    }

    /// Serves `routes` from now on, in one swap: a query sees either the old zone or the
    /// new one, never a mixture. Returns what changed, per cluster.
    pub fn publish(&self, routes: &Routes) -> Vec<Change> {
        let zone = ZoneData::build(&self.shared.config, routes);
        let old = self.shared.swap(Served::new(zone));
        let new = self.shared.current();
        // Not logged here: the engine audits every change, and the audit is logged.
        changes(&old.zone, &new.zone)
    }

    /// Stops answering and waits (at most a few seconds) until both sockets are closed.
    pub async fn stop(mut self) {
        if let Some(udp) = self.udp.take() {
            // The thread is woken, not polled: joining it takes a moment.
            if tokio::task::spawn_blocking(move || udp.stop())
                .await
                .is_err()
            {
                tracing::warn!(listen = %self.local_addr, "DNS UDP responder did not stop cleanly");
            }
        }
        let Some(mut server) = self.server.take() else {
            return;
        };
        match tokio::time::timeout(STOP_TIMEOUT, server.shutdown_gracefully()).await {
            Ok(Ok(())) => tracing::info!(listen = %self.local_addr, "DNS responder stopped"),
            Ok(Err(error)) => {
                tracing::warn!(listen = %self.local_addr, %error, "DNS responder stopped with an error")
            }
            Err(_) => tracing::warn!(
                listen = %self.local_addr,
                "DNS responder did not stop within {STOP_TIMEOUT:?}; its tasks are aborted"
            ),
        }
        drop(server);
        // The server's tasks let go of their sockets as the runtime gets to them: a
        // stopped responder has freed its ports only once they can be bound again.
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            let free = std::net::UdpSocket::bind(self.local_addr).is_ok()
                && std::net::TcpListener::bind(self.local_addr).is_ok();
            if free {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl DnsServer {
    /// Stops answering without waiting (the server's tasks end as the runtime gets to
    /// them); for an owner that cannot give the server up, as `stop` wants.
    pub fn cancel(&self) {
        if let Some(udp) = &self.udp {
            udp.signal_stop();
        }
        if let Some(server) = &self.server {
            server.shutdown_token().cancel();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            // Dropping the server aborts its tasks; cancelling first lets them end cleanly.
            server.shutdown_token().cancel();
        }
    }
}

/// The DNS responder as a routing backend: `reconcile` publishes, `inspect` compares.
pub struct DnsRouter {
    server: DnsServer,
}

impl DnsRouter {
    pub fn new(server: DnsServer) -> Self {
        Self { server }
    }

    pub fn server(&self) -> &DnsServer {
        &self.server
    }
}

impl Router for DnsRouter {
    fn name(&self) -> String {
        format!("dns {}", self.server.local_addr())
    }

    /// Every agent answers DNS from what it sees itself.
    fn shared(&self) -> bool {
        false
    }

    fn stop(&self) {
        self.server.cancel();
    }

    fn reconcile<'a>(
        &'a self,
        routes: &'a Routes,
    ) -> BoxFuture<'a, Result<Vec<Change>, RouteError>> {
        let changes = self.server.publish(routes);
        Box::pin(async move { Ok(changes) })
    }

    fn inspect<'a>(
        &'a self,
        routes: &'a Routes,
    ) -> BoxFuture<'a, Result<Vec<Inspection>, RouteError>> {
        let should = ZoneData::build(&self.server.shared.config, routes);
        let served = self.server.shared.current();
        let now = &served.zone;
        let clusters: BTreeSet<&String> =
            routes.clusters.keys().chain(now.clusters.keys()).collect();
        let inspections = clusters
            .into_iter()
            .map(|cluster| {
                let should = should.cluster_lines(cluster);
                let now = now.cluster_lines(cluster);
                Inspection {
                    cluster: cluster.clone(),
                    in_sync: should == now,
                    should,
                    now,
                }
            })
            .collect();
        Box::pin(async move { Ok(inspections) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{ClusterRoute, Endpoint};
    use crate::topology::InstanceKey;
    use hickory_server::proto::op::{Message, MessageType, Query};
    use hickory_server::proto::serialize::binary::{BinDecoder, BinEncodable};
    use std::str::FromStr;
    use std::time::SystemTime;

    fn endpoint(host: &str, port: u16, ip: &str) -> Endpoint {
        Endpoint {
            key: InstanceKey::new(host, port),
            addresses: vec![ip.parse().unwrap()],
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
            decided_at: SystemTime::UNIX_EPOCH,
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

    fn demo(writer_ip: &str) -> Routes {
        routes(
            7,
            vec![cluster(
                "demo",
                Some(endpoint("db1", 3306, writer_ip)),
                vec![
                    endpoint("db2", 3306, "127.0.0.2"),
                    endpoint("db3", 3306, "127.0.0.3"),
                ],
            )],
        )
    }

    fn config() -> ZoneConfig {
        ZoneConfig::new(&DnsSettings::default()).unwrap()
    }

    fn name(text: &str) -> LowerName {
        LowerName::from_str(text).unwrap()
    }

    fn values(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.data.to_string()).collect()
    }

    fn answer<'z>(zone: &'z ZoneData, text: &str, qtype: RecordType) -> Lookup<'z> {
        zone.lookup(&name(text), qtype, DNSClass::IN)
    }

    #[test]
    fn zone_is_normalised_and_bad_zones_name_the_setting() {
        let s = DnsSettings::new(DEFAULT_LISTEN, " MySQL.Local ", DEFAULT_TTL).unwrap();
        assert_eq!(s.zone, "mysql.local.");
        for bad in ["", ".", "a..b", "bad zone.", "-x.local", "é.local"] {
            let err = DnsSettings::new(DEFAULT_LISTEN, bad, DEFAULT_TTL).unwrap_err();
            assert!(err.to_string().contains("routing.dns.zone"), "{bad}: {err}");
        }
        let err = DnsSettings::new(DEFAULT_LISTEN, "x.", Duration::from_secs(1 << 40)).unwrap_err();
        assert!(err.to_string().contains("routing.dns.ttl"), "{err}");
    }

    #[test]
    fn primary_replicas_and_srv_come_from_the_routes() {
        let zone = ZoneData::build(&config(), &demo("127.0.0.1"));
        let Lookup::Answer { answers, .. } =
            answer(&zone, "demo.primary.mysql.local.", RecordType::A)
        else {
            panic!("no answer")
        };
        assert_eq!(values(answers), ["127.0.0.1"]);
        assert_eq!(answers[0].ttl, 60);
        let Lookup::Answer { answers, .. } =
            answer(&zone, "demo.replicas.mysql.local.", RecordType::A)
        else {
            panic!("no answer")
        };
        assert_eq!(values(answers), ["127.0.0.2", "127.0.0.3"]);
        let Lookup::Answer {
            answers,
            additionals,
        } = answer(
            &zone,
            "_mysql._tcp.demo.primary.mysql.local.",
            RecordType::SRV,
        )
        else {
            panic!("no answer")
        };
        assert_eq!(values(answers), ["0 0 3306 demo.primary.mysql.local."]);
        assert_eq!(values(additionals), ["127.0.0.1"]);
    }

    #[test]
    fn lookups_follow_dns_semantics() {
        let zone = ZoneData::build(&config(), &demo("127.0.0.1"));
        // Case-insensitive.
        assert!(matches!(
            answer(&zone, "DEMO.Primary.MySQL.local.", RecordType::A),
            Lookup::Answer { .. }
        ));
        // Exists, other type.
        assert!(matches!(
            answer(&zone, "demo.primary.mysql.local.", RecordType::AAAA),
            Lookup::NoData { .. }
        ));
        // Empty non-terminals.
        for ent in [
            "primary.mysql.local.",
            "replicas.mysql.local.",
            "_tcp.demo.primary.mysql.local.",
        ] {
            assert!(
                matches!(answer(&zone, ent, RecordType::A), Lookup::NoData { .. }),
                "{ent}"
            );
        }
        // Missing, with the SOA.
        let Lookup::NxDomain { soa } = answer(&zone, "nope.primary.mysql.local.", RecordType::A)
        else {
            panic!("not NXDOMAIN")
        };
        let RData::SOA(soa) = &soa[0].data else {
            panic!("not a SOA")
        };
        assert_eq!((soa.serial, soa.minimum), (7, 1));
        assert!(matches!(
            answer(&zone, "x.demo.primary.mysql.local.", RecordType::A),
            Lookup::NxDomain { .. }
        ));
        // Outside the zone, zone transfers, other classes.
        assert_eq!(
            answer(&zone, "example.com.", RecordType::A),
            Lookup::Refused
        );
        assert_eq!(answer(&zone, "local.", RecordType::SOA), Lookup::Refused);
        assert_eq!(
            answer(&zone, "mysql.local.", RecordType::AXFR),
            Lookup::Refused
        );
        assert_eq!(
            answer(&zone, "mysql.local.", RecordType::IXFR),
            Lookup::Refused
        );
        assert_eq!(
            zone.lookup(&name("mysql.local."), RecordType::SOA, DNSClass::CH),
            Lookup::Refused
        );
        // Apex.
        let Lookup::Answer {
            answers,
            additionals,
        } = answer(&zone, "mysql.local.", RecordType::NS)
        else {
            panic!("no NS")
        };
        assert_eq!(values(answers), ["ns.mysql.local."]);
        assert_eq!(values(additionals), ["127.0.0.1"]);
        assert!(matches!(
            answer(&zone, "ns.mysql.local.", RecordType::A),
            Lookup::Answer { .. }
        ));
        // ANY: one RRset only.
        let Lookup::Answer { answers, .. } = answer(&zone, "mysql.local.", RecordType::ANY) else {
            panic!("no ANY answer")
        };
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn a_withdrawn_writer_leaves_the_name_with_no_data() {
        let mut r = demo("127.0.0.1");
        r.clusters.get_mut("demo").unwrap().writer = None;
        let zone = ZoneData::build(&config(), &r);
        assert!(matches!(
            answer(&zone, "demo.primary.mysql.local.", RecordType::A),
            Lookup::NoData { .. }
        ));
        assert!(matches!(
            answer(
                &zone,
                "_mysql._tcp.demo.primary.mysql.local.",
                RecordType::SRV
            ),
            Lookup::NoData { .. }
        ));
        assert!(
            zone.cluster_lines("demo")[0].starts_with("; demo.primary.mysql.local. has no writer")
        );
    }

    #[test]
    fn dotted_aliases_ipv6_and_duplicate_readers() {
        let mut c = cluster(
            "EU.orders_1",
            Some(Endpoint {
                key: InstanceKey::new("db1", 3307),
                addresses: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            }),
            vec![
                endpoint("db2", 3306, "127.0.0.2"),
                endpoint("db2b", 3306, "127.0.0.2"),
            ],
        );
        c.readers.push(endpoint("db4", 3306, "::2"));
        let zone = ZoneData::build(&config(), &routes(1, vec![c]));
        let Lookup::Answer { answers, .. } =
            answer(&zone, "eu.orders_1.primary.mysql.local.", RecordType::AAAA)
        else {
            panic!("no AAAA")
        };
        assert_eq!(values(answers), ["::1"]);
        let Lookup::Answer { answers, .. } =
            answer(&zone, "eu.orders_1.replicas.mysql.local.", RecordType::A)
        else {
            panic!("no A")
        };
        assert_eq!(values(answers), ["127.0.0.2"]);
        let Lookup::Answer { additionals, .. } = answer(
            &zone,
            "_mysql._tcp.eu.orders_1.primary.mysql.local.",
            RecordType::SRV,
        ) else {
            panic!("no SRV")
        };
        assert_eq!(values(additionals), ["127.0.0.1", "::1"]);
        assert!(matches!(
            answer(&zone, "orders_1.primary.mysql.local.", RecordType::A),
            Lookup::NoData { .. }
        ));
    }

    #[test]
    fn unservable_aliases_are_reported_not_served() {
        let r = routes(
            1,
            vec![
                cluster(
                    "bad alias",
                    Some(endpoint("db1", 3306, "127.0.0.1")),
                    vec![],
                ),
                cluster("Demo", Some(endpoint("db1", 3306, "127.0.0.1")), vec![]),
                cluster("demo", Some(endpoint("db9", 3306, "127.0.0.9")), vec![]),
            ],
        );
        let zone = ZoneData::build(&config(), &r);
        assert!(zone.cluster_lines("bad alias")[0].contains("is not served"));
        assert!(zone.cluster_lines("demo")[0].contains("ignore case"));
        let Lookup::Answer { answers, .. } =
            answer(&zone, "demo.primary.mysql.local.", RecordType::A)
        else {
            panic!("no answer")
        };
        assert_eq!(values(answers), ["127.0.0.1"]);
    }

    #[test]
    fn lines_and_changes_speak_zone_file() {
        let before = ZoneData::build(&config(), &demo("127.0.0.1"));
        let after = ZoneData::build(&config(), &demo("127.0.0.4"));
        assert_eq!(
            before.cluster_lines("demo"),
            [
                "demo.primary.mysql.local. 60 IN A 127.0.0.1",
                "demo.replicas.mysql.local. 60 IN A 127.0.0.2",
                "demo.replicas.mysql.local. 60 IN A 127.0.0.3",
                "_mysql._tcp.demo.primary.mysql.local. 60 IN SRV 0 0 3306 demo.primary.mysql.local.",
            ]
        );
        let c = changes(&before, &after);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].cluster, "demo");
        assert_eq!(
            c[0].what,
            "demo.primary.mysql.local. A 127.0.0.1 → 127.0.0.4"
        );
        assert!(changes(&after, &ZoneData::build(&config(), &demo("127.0.0.4"))).is_empty());
        let gone = changes(&after, &ZoneData::build(&config(), &Routes::default()));
        assert!(
            gone[0]
                .what
                .contains("demo.primary.mysql.local. A 127.0.0.4 → (none)"),
            "{gone:?}"
        );
    }

    fn request(qname: &str, qtype: RecordType) -> (Metadata, Vec<LowerQuery>) {
        let mut metadata = Metadata::new(42, MessageType::Query, OpCode::Query);
        metadata.recursion_desired = true;
        let query = LowerQuery::from(Query::query(Name::from_str(qname).unwrap(), qtype));
        (metadata, vec![query])
    }

    #[test]
    fn negative_answers_carry_the_soa_at_min_ttl_minimum_and_the_do_bit_is_echoed() {
        let zone = ZoneData::build(&config(), &demo("127.0.0.1"));
        for qname in ["gone.primary.mysql.local.", "demo.primary.mysql.local."] {
            let (metadata, queries) = request(qname, RecordType::TXT);
            let reply = respond(&zone, &metadata, &queries, None, true);
            assert_eq!(reply.authorities.len(), 1, "{qname}");
            assert_eq!(reply.authorities[0].ttl, NEGATIVE_TTL, "{qname}");
        }
        // Asked for directly, the SOA keeps the zone's TTL.
        match answer(&zone, "mysql.local.", RecordType::SOA) {
            Lookup::Answer { answers, .. } => assert_eq!(answers[0].ttl, 60),
            _ => panic!("the apex has an SOA"),
        }
        for dnssec_ok in [true, false] {
            let mut edns = Edns::new();
            edns.set_dnssec_ok(dnssec_ok);
            let (metadata, queries) = request("demo.primary.mysql.local.", RecordType::A);
            let reply = respond(&zone, &metadata, &queries, Some(&edns), true);
            assert_eq!(
                reply.edns.expect("OPT answered with OPT").flags().dnssec_ok,
                dnssec_ok
            );
        }
    }

    #[test]
    fn responses_set_aa_never_ra_and_the_right_code() {
        let zone = ZoneData::build(&config(), &demo("127.0.0.1"));
        let cases = [
            (
                "demo.primary.mysql.local.",
                RecordType::A,
                ResponseCode::NoError,
                true,
                1,
                0,
            ),
            (
                "demo.primary.mysql.local.",
                RecordType::TXT,
                ResponseCode::NoError,
                true,
                0,
                1,
            ),
            (
                "gone.primary.mysql.local.",
                RecordType::A,
                ResponseCode::NXDomain,
                true,
                0,
                1,
            ),
            (
                "example.com.",
                RecordType::A,
                ResponseCode::Refused,
                false,
                0,
                0,
            ),
        ];
        for (qname, qtype, code, aa, answers, authorities) in cases {
            let (metadata, queries) = request(qname, qtype);
            let reply = respond(&zone, &metadata, &queries, None, true);
            assert_eq!(reply.metadata.response_code, code, "{qname} {qtype}");
            assert_eq!(reply.metadata.authoritative, aa, "{qname} {qtype}");
            assert!(!reply.metadata.recursion_available);
            assert!(reply.metadata.recursion_desired);
            assert_eq!(
                (reply.answers.len(), reply.authorities.len()),
                (answers, authorities)
            );
        }
        let (mut metadata, queries) = request("demo.primary.mysql.local.", RecordType::A);
        metadata.op_code = OpCode::Notify;
        assert_eq!(
            respond(&zone, &metadata, &queries, None, true)
                .metadata
                .response_code,
            ResponseCode::NotImp
        );
        let (metadata, _) = request("demo.primary.mysql.local.", RecordType::A);
        assert_eq!(
            respond(&zone, &metadata, &[], None, true)
                .metadata
                .response_code,
            ResponseCode::FormErr
        );
        let (metadata, queries) = request("demo.primary.mysql.local.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_version(1);
        let reply = respond(&zone, &metadata, &queries, Some(&edns), true);
        assert_eq!(reply.metadata.response_code, ResponseCode::BADVERS);
        assert!(reply.edns.is_some());
    }

    /// `Queries` as the server holds them: decoded from the wire.
    fn wire_queries(queries: &[LowerQuery]) -> Queries {
        let mut bytes = Vec::new();
        let mut encoder = BinEncoder::new(&mut bytes);
        for query in queries {
            query.emit(&mut encoder).unwrap();
        }
        Queries::read(&mut BinDecoder::new(&bytes), queries.len()).unwrap()
    }

    fn many_readers(n: u8) -> Routes {
        let readers = (1..=n)
            .map(|i| endpoint(&format!("r{i}"), 3306, &format!("127.0.1.{i}")))
            .collect();
        routes(
            1,
            vec![cluster(
                "big",
                Some(endpoint("db1", 3306, "127.0.0.1")),
                readers,
            )],
        )
    }

    fn encoded(reply: &Reply<'_>, queries: &Queries) -> Message {
        let mut buffer = Vec::new();
        let mut encoder = BinEncoder::new(&mut buffer);
        MessageResponseBuilder::new(queries, reply.edns.as_ref())
            .build(
                reply.metadata,
                reply.answers.iter(),
                reply.authorities.iter(),
                std::iter::empty(),
                reply.additionals.iter(),
            )
            .destructive_emit(&mut encoder)
            .unwrap();
        assert!(
            buffer.len() <= usize::from(reply.limit),
            "{} > {}",
            buffer.len(),
            reply.limit
        );
        Message::from_vec(&buffer).unwrap()
    }

    #[test]
    fn large_answers_are_truncated_over_udp_only() {
        let zone = ZoneData::build(&config(), &many_readers(100));
        let (metadata, queries) = request("big.replicas.mysql.local.", RecordType::A);
        let wire = wire_queries(&queries);
        // No EDNS: 512 bytes.
        let reply = fit(respond(&zone, &metadata, &queries, None, true), &wire);
        assert_eq!(reply.limit, 512);
        let message = encoded(&reply, &wire);
        assert!(message.metadata.truncation);
        assert!(message.answers.is_empty());
        // EDNS 4096 offered: capped at 1232, still too small for 100 addresses; OPT kept.
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        let reply = fit(
            respond(&zone, &metadata, &queries, Some(&edns), true),
            &wire,
        );
        assert_eq!(reply.limit, MAX_UDP_PAYLOAD);
        let message = encoded(&reply, &wire);
        assert!(message.metadata.truncation);
        assert!(message.edns.is_some());
        // TCP: everything.
        let reply = fit(respond(&zone, &metadata, &queries, None, false), &wire);
        let message = encoded(&reply, &wire);
        assert!(!message.metadata.truncation);
        assert_eq!(message.answers.len(), 100);
        // Small answers are untouched.
        let (metadata, queries) = request("big.primary.mysql.local.", RecordType::A);
        let wire = wire_queries(&queries);
        let message = encoded(
            &fit(respond(&zone, &metadata, &queries, None, true), &wire),
            &wire,
        );
        assert!(!message.metadata.truncation);
        assert_eq!(message.answers.len(), 1);
    }

    #[test]
    fn overflowing_additionals_are_dropped_without_tc() {
        // A writer with many addresses: the SRV answer fits in 512, its additionals do not.
        let addresses = (1..=40)
            .map(|i| format!("127.0.2.{i}").parse().unwrap())
            .collect();
        let writer = Endpoint {
            key: InstanceKey::new("db1", 3306),
            addresses,
        };
        let zone = ZoneData::build(
            &config(),
            &routes(1, vec![cluster("demo", Some(writer), vec![])]),
        );
        let (metadata, queries) = request("_mysql._tcp.demo.primary.mysql.local.", RecordType::SRV);
        let wire = wire_queries(&queries);
        let reply = fit(respond(&zone, &metadata, &queries, None, true), &wire);
        let message = encoded(&reply, &wire);
        assert!(!message.metadata.truncation);
        assert_eq!(message.answers.len(), 1);
        assert!(message.additionals.is_empty());
    }

    #[test]
    fn the_wire_bound_is_an_upper_bound() {
        let zone = ZoneData::build(&config(), &demo("127.0.0.1"));
        for (qname, qtype) in [
            ("demo.replicas.mysql.local.", RecordType::A),
            ("_mysql._tcp.demo.primary.mysql.local.", RecordType::SRV),
            ("nothing.mysql.local.", RecordType::A),
            ("mysql.local.", RecordType::NS),
        ] {
            let (metadata, queries) = request(qname, qtype);
            let wire = wire_queries(&queries);
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            let reply = respond(&zone, &metadata, &queries, Some(&edns), false);
            let mut buffer = Vec::new();
            let mut encoder = BinEncoder::new(&mut buffer);
            MessageResponseBuilder::new(&wire, reply.edns.as_ref())
                .build(
                    reply.metadata,
                    reply.answers.iter(),
                    reply.authorities.iter(),
                    std::iter::empty(),
                    reply.additionals.iter(),
                )
                .destructive_emit(&mut encoder)
                .unwrap();
            assert!(buffer.len() <= wire_bound(&reply, &wire), "{qname}");
        }
    }
}
