//! Prepared answers, the UDP fast path. The answers change only when routes are published,
//! so `PreparedAnswers::build` encodes, once per publish, the complete response to every
//! question a client is likely to ask of this zone: each name in it with each type it has,
//! plus A and AAAA (stub resolvers ask both), with EDNS and without. It encodes them with
//! the general path itself (`respond` and hickory's encoder), so the two cannot disagree;
//! once per question, with EDNS: the response without it is the same minus its trailing
//! OPT record.
//!
//! `PreparedAnswers::answer` then reads a datagram in place and sorts it:
//! - a plain query (opcode QUERY, one question of class IN, nothing else but an EDNS
//!   version 0 OPT) for a prepared question whose response fits the client's payload is
//!   answered by copying that response and patching the ID, the RD and CD bits, the DO
//!   bit and the letter case of the question: no allocation, no decoding;
//! - anything else that is a well-formed DNS query goes to the general path;
//! - anything that is not (shorter than a header, a response, names or records running
//!   past the end) is dropped unanswered, having cost a few comparisons: answering
//!   garbage only helps whoever spoofs its source.
//!
//! It must not answer anything the general path would answer differently: the tests
//! compare the two byte for byte.

use super::{encode, respond, ZoneData, CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD};
use hickory_server::proto::op::{Edns, MessageType, Metadata, OpCode};
use hickory_server::proto::rr::{LowerName, RecordType};
use hickory_server::proto::serialize::binary::BinDecoder;
use hickory_server::zone_handler::Queries;
use std::collections::HashMap;

/// Octets of a DNS header.
const HEADER_LEN: usize = 12;
/// Third header octet: QR (a response), the opcode, RD.
const QR: u8 = 0x80;
const OPCODE: u8 = 0x78;
const RD: u8 = 0x01;
/// Fourth header octet: CD, which a response copies.
const CD: u8 = 0x10;
/// High octet of the OPT record's flags: DO.
const DNSSEC_OK: u8 = 0x80;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// EDNS options hickory decodes rather than carries as opaque bytes (NSID, DAU, client
/// subnet): a query with one goes to the general path, which may refuse its content.
const DECODED_OPTIONS: [u16; 3] = [3, 5, 8];
/// A name takes at most 255 octets on the wire (RFC 1035 §3.1).
const NAME_MAX: usize = 255;
/// A prepared question's key: the name lowercased, then the type.
const KEY_MAX: usize = NAME_MAX + 2;
/// Octets of an OPT record without options: root name, type, class, TTL, RDLENGTH.
const OPT_LEN: usize = 11;
/// Where the DO octet sits, counted back from the end of a response whose last record is
/// an OPT without options.
const DO_FROM_END: usize = 4;

/// What to do with one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Handling {
    /// The response is in the first octets of the output buffer.
    Answered(usize),
    /// A well-formed query the prepared answers do not cover.
    General,
    /// Not a DNS query: no answer.
    Drop,
}

/// The responses to one question, complete (never truncated), with ID 0, RD and CD clear.
#[derive(Debug, Default)]
struct Prepared {
    /// Without EDNS; only when it fits in 512 octets.
    classic: Option<Box<[u8]>>,
    /// With an OPT record last and its DO bit clear; only when it fits our UDP maximum.
    edns: Option<Box<[u8]>>,
}

/// The prepared responses of one published zone.
#[derive(Debug, Default)]
pub struct PreparedAnswers {
    by_question: HashMap<Box<[u8]>, Prepared>,
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// The wire form of a name, uncompressed.
fn wire_name(name: &LowerName) -> Vec<u8> {
    let mut wire = Vec::with_capacity(NAME_MAX);
    for label in name.iter() {
        // Labels of a parsed name are at most 63 octets.
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
    }
    wire.push(0);
    wire
}

/// The complete response to `question` (a name's wire form, type, class) as the general
/// path encodes it without a size limit, with ID 0 and no flags asked for.
fn complete_response(zone: &ZoneData, question: &[u8], edns: Option<&Edns>) -> Option<Vec<u8>> {
    let queries = Queries::read(&mut BinDecoder::new(question), 1).ok()?;
    let request = Metadata::new(0, MessageType::Query, OpCode::Query);
    let reply = respond(zone, &request, queries.queries(), edns, false);
    encode(&reply, &queries).ok()
}

/// Whether `response` ends with an OPT record without options and with DO clear: where
/// `answer` sets the DO bit, and what a response without EDNS leaves out.
fn ends_with_plain_opt(response: &[u8]) -> bool {
    let Some(opt) = response
        .len()
        .checked_sub(OPT_LEN)
        .map(|at| &response[at..])
    else {
        return false;
    };
    opt[0] == 0
        && read_u16(opt, 1) == Some(TYPE_OPT)
        && opt[OPT_LEN - DO_FROM_END] & DNSSEC_OK == 0
        && read_u16(opt, OPT_LEN - 2) == Some(0)
}

/// The response to the same question without EDNS: the OPT record, last, left out of
/// the additional section.
fn without_opt(with_edns: &[u8]) -> Option<Vec<u8>> {
    let additionals = read_u16(with_edns, 10)?.checked_sub(1)?;
    let mut classic = with_edns.get(..with_edns.len() - OPT_LEN)?.to_vec();
    classic[10..12].copy_from_slice(&additionals.to_be_bytes());
    Some(classic)
}

impl PreparedAnswers {
    /// The prepared responses for `zone` (pure).
    pub fn build(zone: &ZoneData) -> Self {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        let mut by_question = HashMap::new();
        for (name, node) in &zone.nodes {
            let name = wire_name(name);
            let mut types: Vec<RecordType> = vec![RecordType::A, RecordType::AAAA];
            for set in &node.rrsets {
                if !types.contains(&set.rtype) {
                    types.push(set.rtype);
                }
            }
            for rtype in types {
                let mut key = name.clone();
                key.extend_from_slice(&u16::from(rtype).to_be_bytes());
                let mut question = key.clone();
                question.extend_from_slice(&CLASS_IN.to_be_bytes());
                let Some(complete) = complete_response(zone, &question, Some(&edns))
                    .filter(|r| ends_with_plain_opt(r))
                else {
                    continue;
                };
                let classic =
                    without_opt(&complete).filter(|r| r.len() <= usize::from(CLASSIC_UDP_PAYLOAD));
                let with_edns = Some(complete).filter(|r| r.len() <= usize::from(MAX_UDP_PAYLOAD));
                by_question.insert(
                    key.into_boxed_slice(),
                    Prepared {
                        classic: classic.map(Vec::into_boxed_slice),
                        edns: with_edns.map(Vec::into_boxed_slice),
                    },
                );
            }
        }
        Self { by_question }
    }

    /// Sorts `datagram` and, for a prepared question, writes the response into `out`
    /// (which must hold `MAX_UDP_PAYLOAD` octets). Never allocates.
    pub fn answer(&self, datagram: &[u8], out: &mut [u8]) -> Handling {
        if datagram.len() < HEADER_LEN || datagram[2] & QR != 0 {
            return Handling::Drop;
        }
        match self.prepared_answer(datagram, out) {
            Some(len) => Handling::Answered(len),
            None if is_well_formed(datagram) => Handling::General,
            None => Handling::Drop,
        }
    }

    fn prepared_answer(&self, datagram: &[u8], out: &mut [u8]) -> Option<usize> {
        let counts = [4, 6, 8, 10].map(|at| read_u16(datagram, at));
        let [Some(1), Some(0), Some(0), Some(additionals @ 0..=1)] = counts else {
            return None;
        };
        if datagram[2] & OPCODE != 0 {
            return None;
        }
        let mut key = [0u8; KEY_MAX];
        let name_end = lowercase_name(datagram, HEADER_LEN, &mut key)?;
        let name_len = name_end - HEADER_LEN;
        key[name_len..name_len + 2].copy_from_slice(datagram.get(name_end..name_end + 2)?);
        if read_u16(datagram, name_end + 2)? != CLASS_IN {
            return None;
        }
        let question_end = name_end + 4;
        let prepared = self.by_question.get(&key[..name_len + 2])?;
        let (response, dnssec_ok) = if additionals == 0 {
            if datagram.len() != question_end {
                return None;
            }
            (prepared.classic.as_deref()?, false)
        } else {
            let opt = read_plain_opt(datagram, question_end)?;
            let response = prepared.edns.as_deref()?;
            let limit = opt.payload.clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD);
            if response.len() > usize::from(limit) {
                return None;
            }
            (response, opt.dnssec_ok)
        };
        let out = out.get_mut(..response.len())?;
        out.copy_from_slice(response);
        out[..2].copy_from_slice(&datagram[..2]);
        out[2] |= datagram[2] & RD;
        out[3] |= datagram[3] & CD;
        // The question goes back as asked, letter case included (0x20 randomisation).
        out[HEADER_LEN..name_end].copy_from_slice(&datagram[HEADER_LEN..name_end]);
        if dnssec_ok {
            out[response.len() - DO_FROM_END] |= DNSSEC_OK;
        }
        Some(response.len())
    }
}

/// Copies the uncompressed name at `at` into `key`, lowercased; returns where it ends.
/// `None` for a compressed or malformed name (the general path reads those).
fn lowercase_name(datagram: &[u8], mut at: usize, key: &mut [u8; KEY_MAX]) -> Option<usize> {
    let start = at;
    loop {
        let len = usize::from(*datagram.get(at)?);
        if len > 63 {
            return None;
        }
        let end = at + 1 + len;
        if end - start > NAME_MAX {
            return None;
        }
        let label = datagram.get(at..end)?;
        for (to, from) in key[at - start..end - start].iter_mut().zip(label) {
            *to = from.to_ascii_lowercase();
        }
        at = end;
        if len == 0 {
            return Some(at);
        }
    }
}

/// What the prepared path needs from a query's OPT record.
struct PlainOpt {
    payload: u16,
    dnssec_ok: bool,
}

/// The OPT record at `at` when it is the datagram's last record, at the root, version 0
/// with no extended RCODE, and its options are whole and carried as opaque bytes.
fn read_plain_opt(datagram: &[u8], at: usize) -> Option<PlainOpt> {
    let fixed = datagram.get(at..at + OPT_LEN)?;
    let rdata_len = usize::from(read_u16(fixed, 9)?);
    if fixed[0] != 0
        || read_u16(fixed, 1)? != TYPE_OPT
        || fixed[5] != 0
        || fixed[6] != 0
        || datagram.len() != at + OPT_LEN + rdata_len
    {
        return None;
    }
    let mut options = &datagram[at + OPT_LEN..];
    while !options.is_empty() {
        let code = read_u16(options, 0)?;
        let len = usize::from(read_u16(options, 2)?);
        if DECODED_OPTIONS.contains(&code) {
            return None;
        }
        options = options.get(4 + len..)?;
    }
    Some(PlainOpt {
        payload: read_u16(fixed, 3)?,
        dnssec_ok: fixed[7] & DNSSEC_OK != 0,
    })
}

/// Where the (possibly compressed) name at `at` ends, or `None` when it is malformed.
fn skip_name(datagram: &[u8], mut at: usize) -> Option<usize> {
    let start = at;
    loop {
        let len = *datagram.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(len),
            // A pointer ends the name.
            0xC0 => return (at + 2 <= datagram.len()).then_some(at + 2),
            _ => return None,
        }
        if at - start > NAME_MAX {
            return None;
        }
    }
}

/// Whether the datagram is shaped like a DNS message: every question and record its
/// header counts lies within it, with at most one OPT. Reads each octet at most once
/// and allocates nothing, so a flood of garbage costs little.
fn is_well_formed(datagram: &[u8]) -> bool {
    let counts = [4, 6, 8, 10].map(|at| read_u16(datagram, at).map(usize::from));
    let [Some(questions), Some(answers), Some(authorities), Some(additionals)] = counts else {
        return false;
    };
    let mut at = HEADER_LEN;
    for _ in 0..questions {
        match skip_name(datagram, at) {
            Some(end) => at = end + 4,
            None => return false,
        }
    }
    let mut opts = 0;
    for _ in 0..answers + authorities + additionals {
        let Some(end) = skip_name(datagram, at) else {
            return false;
        };
        let (Some(rtype), Some(rdata_len)) = (read_u16(datagram, end), read_u16(datagram, end + 8))
        else {
            return false;
        };
        opts += usize::from(rtype == TYPE_OPT);
        at = end + 10 + usize::from(rdata_len);
    }
    opts <= 1 && at <= datagram.len()
}

#[cfg(test)]
mod tests {
    use super::super::{answer_datagram, ZoneConfig};
    use super::*;
    use crate::routing::dns::DnsSettings;
    use crate::routing::{ClusterRoute, Endpoint, Routes};
    use crate::topology::InstanceKey;
    use proptest::prelude::*;
    use std::net::SocketAddr;
    use std::time::SystemTime;

    fn endpoint(host: &str, ip: &str) -> Endpoint {
        Endpoint {
            key: InstanceKey::new(host, 3306),
            addresses: vec![ip.parse().unwrap()],
        }
    }

    fn zone(readers: usize) -> ZoneData {
        let demo = ClusterRoute {
            cluster: "demo".into(),
            writer: Some(endpoint("db1", "127.0.0.1")),
            readers: (1..=readers)
                .map(|i| endpoint(&format!("r{i}"), &format!("127.0.1.{i}")))
                .collect(),
            standby: Vec::new(),
            fenced: Vec::new(),
            epoch: 1,
            recovery_id: None,
            decided_at: SystemTime::UNIX_EPOCH,
        };
        let routes = Routes {
            version: 9,
            clusters: [("demo".to_string(), demo)].into(),
        };
        ZoneData::build(&ZoneConfig::new(&DnsSettings::default()).unwrap(), &routes)
    }

    /// A query as a client sends it.
    struct Query<'a> {
        id: u16,
        flags: [u8; 2],
        name: &'a str,
        qtype: u16,
        qclass: u16,
        /// (payload, DO, options)
        edns: Option<(u16, bool, &'a [u8])>,
    }

    impl Query<'_> {
        fn plain(name: &str, qtype: RecordType) -> Query<'_> {
            Query {
                id: 0xBEEF,
                flags: [RD, 0],
                name,
                qtype: qtype.into(),
                qclass: CLASS_IN,
                edns: None,
            }
        }

        fn wire(&self) -> Vec<u8> {
            let mut wire = self.id.to_be_bytes().to_vec();
            wire.extend_from_slice(&self.flags);
            let additionals = u16::from(self.edns.is_some());
            for count in [1, 0, 0, additionals] {
                wire.extend_from_slice(&u16::to_be_bytes(count));
            }
            for label in self.name.trim_end_matches('.').split('.') {
                wire.push(label.len() as u8);
                wire.extend_from_slice(label.as_bytes());
            }
            wire.push(0);
            wire.extend_from_slice(&self.qtype.to_be_bytes());
            wire.extend_from_slice(&self.qclass.to_be_bytes());
            if let Some((payload, dnssec_ok, options)) = self.edns {
                wire.push(0);
                wire.extend_from_slice(&TYPE_OPT.to_be_bytes());
                wire.extend_from_slice(&payload.to_be_bytes());
                wire.extend_from_slice(&[0, 0, if dnssec_ok { DNSSEC_OK } else { 0 }, 0]);
                wire.extend_from_slice(&(options.len() as u16).to_be_bytes());
                wire.extend_from_slice(options);
            }
            wire
        }
    }

    const CLIENT: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5353);

    /// What the prepared path does with `datagram`, checked against the general path: an
    /// answer it gives is the one the general path gives, octet for octet.
    fn sort(prepared: &PreparedAnswers, zone: &ZoneData, datagram: &[u8]) -> Handling {
        let mut out = [0u8; MAX_UDP_PAYLOAD as usize];
        let handling = prepared.answer(datagram, &mut out);
        let general = answer_datagram(zone, datagram, CLIENT);
        match &handling {
            Handling::Answered(len) => {
                assert_eq!(Some(&out[..*len]), general.as_deref(), "{datagram:?}")
            }
            Handling::Drop => assert_eq!(general, None, "a query dropped: {datagram:?}"),
            Handling::General => {}
        }
        handling
    }

    #[test]
    fn prepared_answers_are_the_general_paths_octet_for_octet() {
        let zone = zone(2);
        let prepared = PreparedAnswers::build(&zone);
        let cookie: &[u8] = &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        let names = [
            "demo.primary.mysql.local.",
            "demo.replicas.mysql.local.",
            "_mysql._tcp.demo.primary.mysql.local.",
            "primary.mysql.local.",
            "mysql.local.",
            "ns.mysql.local.",
        ];
        let types = [
            RecordType::A,
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::SOA,
            RecordType::NS,
        ];
        let edns = [
            None,
            Some((1232, false, &[][..])),
            Some((4096, true, &[][..])),
            Some((100, true, cookie)),
        ];
        let mut answered = 0;
        for name in names {
            for qtype in types {
                for edns in edns {
                    for flags in [[0, 0], [RD, 0], [RD, CD], [0, CD | 0x20]] {
                        let query = Query {
                            flags,
                            edns,
                            ..Query::plain(name, qtype)
                        };
                        if sort(&prepared, &zone, &query.wire()) != Handling::General {
                            answered += 1;
                        }
                    }
                }
            }
        }
        // Every name has A and AAAA prepared, and each its own types.
        assert!(answered >= names.len() * 2 * 16, "{answered}");
        let common = Query::plain("demo.primary.mysql.local.", RecordType::A);
        assert!(matches!(
            sort(&prepared, &zone, &common.wire()),
            Handling::Answered(_)
        ));
    }

    #[test]
    fn the_question_goes_back_in_the_case_it_was_asked() {
        let zone = zone(2);
        let prepared = PreparedAnswers::build(&zone);
        let query = Query::plain("DEMO.Primary.mysql.LOCAL.", RecordType::A).wire();
        let mut out = [0u8; MAX_UDP_PAYLOAD as usize];
        let Handling::Answered(len) = prepared.answer(&query, &mut out) else {
            panic!("a prepared question, whatever its case")
        };
        let question_end = query.len();
        assert_eq!(&out[HEADER_LEN..question_end], &query[HEADER_LEN..]);
        let ours = hickory_server::proto::op::Message::from_vec(&out[..len]).unwrap();
        let general = answer_datagram(&zone, &query, CLIENT).unwrap();
        let general = hickory_server::proto::op::Message::from_vec(&general).unwrap();
        assert_eq!(ours.queries, general.queries);
        assert_eq!(ours.answers.len(), 1);
        assert_eq!(ours.answers[0].data, general.answers[0].data);
        assert_eq!(ours.metadata, general.metadata);
    }

    #[test]
    fn the_unusual_goes_to_the_general_path() {
        let zone = zone(100);
        let prepared = PreparedAnswers::build(&zone);
        let general = |query: Query<'_>| {
            assert_eq!(
                sort(&prepared, &zone, &query.wire()),
                Handling::General,
                "{}",
                query.name
            )
        };
        // Too large for UDP: truncated by the general path.
        general(Query::plain("demo.replicas.mysql.local.", RecordType::A));
        // Missing names, other types and classes, other opcodes, EDNS version 1,
        // a decoded EDNS option, names outside the zone.
        general(Query::plain("nosuch.mysql.local.", RecordType::A));
        general(Query::plain("demo.primary.mysql.local.", RecordType::TXT));
        general(Query {
            qclass: 3,
            ..Query::plain("demo.primary.mysql.local.", RecordType::A)
        });
        general(Query {
            flags: [2 << 3, 0],
            ..Query::plain("demo.primary.mysql.local.", RecordType::A)
        });
        let mut version_1 = Query {
            edns: Some((1232, false, &[])),
            ..Query::plain("demo.primary.mysql.local.", RecordType::A)
        }
        .wire();
        let version_at = version_1.len() - 5;
        version_1[version_at] = 1;
        assert_eq!(sort(&prepared, &zone, &version_1), Handling::General);
        general(Query {
            edns: Some((1232, false, &[0, 8, 0, 4, 0, 1, 0, 0])),
            ..Query::plain("demo.primary.mysql.local.", RecordType::A)
        });
        general(Query::plain("example.com.", RecordType::A));
        // Trailing octets after the question.
        let mut trailing = Query::plain("demo.primary.mysql.local.", RecordType::A).wire();
        trailing.push(0);
        assert_eq!(sort(&prepared, &zone, &trailing), Handling::General);
    }

    #[test]
    fn garbage_is_dropped_without_an_answer() {
        let zone = zone(2);
        let prepared = PreparedAnswers::build(&zone);
        let query = Query::plain("demo.primary.mysql.local.", RecordType::A).wire();
        let mut response = query.clone();
        response[2] |= QR;
        let mut counts_lie = query.clone();
        counts_lie[7] = 9;
        let mut label_runs_off = query.clone();
        label_runs_off[HEADER_LEN] = 60;
        let mut bad_label_type = query.clone();
        bad_label_type[HEADER_LEN] = 0x45;
        for junk in [
            &[][..],
            &query[..11],
            &response,
            &counts_lie,
            &label_runs_off,
            &bad_label_type,
            &query[..query.len() - 1],
            &[0x55; 40],
        ] {
            assert_eq!(sort(&prepared, &zone, junk), Handling::Drop, "{junk:?}");
        }
    }

    proptest! {
        /// Whatever arrives, the prepared path never answers differently from the general
        /// path, and never drops what the general path would answer.
        #[test]
        fn any_datagram_is_sorted_consistently(
            edits in proptest::collection::vec((0usize..64, any::<u8>()), 0..4),
            cut in 0usize..64,
            edns in any::<bool>(),
        ) {
            let zone = zone(2);
            let prepared = PreparedAnswers::build(&zone);
            let mut datagram = Query {
                edns: edns.then_some((1232, true, &[][..])),
                ..Query::plain("demo.primary.mysql.local.", RecordType::A)
            }
            .wire();
            for (at, value) in edits {
                if let Some(octet) = datagram.get_mut(at) {
                    *octet = value;
                }
            }
            datagram.truncate(datagram.len().saturating_sub(cut % 8));
            sort(&prepared, &zone, &datagram);
        }

        #[test]
        fn random_octets_are_sorted_consistently(
            datagram in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let zone = zone(2);
            let prepared = PreparedAnswers::build(&zone);
            sort(&prepared, &zone, &datagram);
        }
    }
}
