//! GTID sets of both flavours and their algebra: MySQL's `uuid[:tag]:intervals`
//! sets (`@@gtid_executed`, `@@gtid_purged`) and MariaDB's `domain-server_id-seq`
//! lists (`@@gtid_binlog_pos`, `@@gtid_current_pos`, `@@gtid_slave_pos`,
//! `@@gtid_binlog_state`).
//!
//! Pure data: parsing, canonical printing and set operations. No I/O, no clock.
//! The SQL that reads these values lives in `mysql/`; what they mean for a
//! topology (errant transactions, the best promotion candidate) is decided in
//! analysis and recovery, not here.
//!
//! `GtidSet`'s `Display` prints what MySQL's `Gtid_set::to_string` prints: UUIDs
//! in byte order, each UUID once, its untagged intervals first and then its tags
//! in byte order (MySQL keeps sets in a map ordered by (uuid, tag), and the empty
//! tag sorts first). The one difference is that the server writes a newline after
//! each comma and we do not, so compare parsed sets, never raw strings. Checked
//! against MySQL 9.7.4: `@@gtid_executed` printed `uuid:1:alpha:1:ops:1`, and
//! union, `GTID_SUBTRACT` and `GTID_SUBSET` over 400 random tagged pairs gave
//! the same text as this module.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// MySQL reserves 2^63-1 (`GNO_END`) as an end marker, so this is the last
/// transaction number a server accepts. Staying below `u64::MAX` also lets the
/// interval code compute `end + 1` without overflow.
const MAX_TRANSACTION: u64 = i64::MAX as u64 - 1;

const MAX_TAG_LEN: usize = 32;

/// A `gtid_executed` entry can hold thousands of intervals; errors quote only
/// its start so the message stays readable in a log line.
const MAX_QUOTE_CHARS: usize = 120;

/// Why a GTID value could not be read. Every message quotes the offending token
/// and the entry it sits in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GtidParseError {
    #[error(
        "empty entry in GTID value {input:?}: nothing between two commas, or a comma at an end"
    )]
    EmptyEntry { input: String },

    #[error(
        "invalid server UUID {token:?} in {entry:?}: expected 32 hex digits grouped 8-4-4-4-12"
    )]
    InvalidUuid { token: String, entry: String },

    #[error(
        "invalid GTID tag {token:?} in {entry:?}: a tag is a letter or underscore followed by \
         at most 31 letters, digits or underscores"
    )]
    InvalidTag { token: String, entry: String },

    #[error("invalid GTID interval {token:?} in {entry:?}: {reason}")]
    InvalidInterval {
        token: String,
        entry: String,
        reason: &'static str,
    },

    #[error("GTID entry {entry:?} names no transactions after {after:?}: expected an interval such as 7 or 1-5")]
    MissingIntervals { entry: String, after: String },

    #[error("invalid MariaDB GTID {token:?} in {input:?}: {reason}")]
    InvalidMariadbGtid {
        token: String,
        input: String,
        reason: &'static str,
    },

    #[error(
        "MariaDB GTID list {input:?} holds two GTIDs for domain {domain}, server_id {server_id}; \
         a position or binlog state holds at most one per (domain, server_id)"
    )]
    DuplicateMariadbOrigin {
        input: String,
        domain: u32,
        server_id: u32,
    },
}

fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTE_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Implements serde through the canonical string, so stored snapshots and the
/// API show the same text an operator would type into `GTID_SUBTRACT`.
macro_rules! serde_as_string {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl FromStr for $ty {
            type Err = GtidParseError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }
    };
}

// ---------------------------------------------------------------- MySQL

/// Who numbered a transaction: a server UUID, and since MySQL 8.3 an optional
/// tag. Transactions of the same UUID under different tags are distinct.
///
/// Ordered as MySQL orders them: by UUID, then untagged before tagged, then by
/// tag. Lower-case hex with fixed hyphen positions makes string order equal the
/// byte order MySQL uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GtidSource {
    uuid: String,
    tag: Option<String>,
}

impl GtidSource {
    /// Validates and normalises (lower case) a UUID and an optional tag.
    pub fn new(uuid: &str, tag: Option<&str>) -> Result<Self, GtidParseError> {
        let entry = match tag {
            Some(tag) => format!("{uuid}:{tag}"),
            None => uuid.to_owned(),
        };
        Ok(Self {
            uuid: parse_uuid(uuid.trim(), &entry)?,
            tag: tag.map(|tag| parse_tag(tag.trim(), &entry)).transpose()?,
        })
    }

    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
}

impl fmt::Display for GtidSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uuid)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        Ok(())
    }
}

/// An inclusive range of transaction numbers, `start <= end`, both at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    start: u64,
    end: u64,
}

impl Interval {
    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    fn count(&self) -> u64 {
        self.end - self.start + 1
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// A MySQL GTID set, as in `@@gtid_executed` or `GTID_SUBTRACT()`.
///
/// Kept canonical at all times: every source present has at least one
/// interval, and its intervals are sorted, disjoint and not adjacent (`1-3:4-5`
/// is stored as `1-5`). So derived equality is set equality.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GtidSet {
    sources: BTreeMap<GtidSource, Vec<Interval>>,
}

impl GtidSet {
    /// Reads the text MySQL prints, e.g. `uuid1:1-13:15,\nuuid2:tag:1-3`.
    ///
    /// Case-insensitive, whitespace around tokens ignored, overlapping or
    /// repeated entries merged; an empty or blank string is the empty set.
    ///
    /// Stricter than MySQL, which silently reads `5-3` as nothing, drops a tag
    /// or a bare UUID with no intervals, and skips empty entries. A server never
    /// prints those shapes, so they can only come from a person typing, where
    /// they are mistakes worth reporting.
    pub fn parse(text: &str) -> Result<Self, GtidParseError> {
        let mut raw: BTreeMap<GtidSource, Vec<Interval>> = BTreeMap::new();
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        for entry in text.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(GtidParseError::EmptyEntry { input: quote(text) });
            }
            parse_entry(entry, &mut raw)?;
        }
        Ok(Self::from_raw(raw))
    }

    /// Every raw list must be non-empty; it need not be sorted or merged.
    fn from_raw(raw: BTreeMap<GtidSource, Vec<Interval>>) -> Self {
        Self {
            sources: raw
                .into_iter()
                .map(|(source, intervals)| (source, normalize(intervals)))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Each source with its canonical intervals, in print order.
    pub fn iter(&self) -> impl Iterator<Item = (&GtidSource, &[Interval])> {
        self.sources
            .iter()
            .map(|(source, intervals)| (source, intervals.as_slice()))
    }

    /// Number of transactions in the set; saturates rather than wrapping,
    /// since MySQL's 2^63 range per source allows sums beyond `u64`.
    pub fn transaction_count(&self) -> u64 {
        self.sources
            .values()
            .flatten()
            .fold(0, |total, interval| total.saturating_add(interval.count()))
    }

    pub fn contains(&self, source: &GtidSource, txn: u64) -> bool {
        self.sources
            .get(source)
            .is_some_and(|intervals| covers(intervals, txn, txn))
    }

    pub fn union(&self, other: &GtidSet) -> GtidSet {
        let mut raw = self.sources.clone();
        for (source, intervals) in &other.sources {
            raw.entry(source.clone())
                .or_default()
                .extend_from_slice(intervals);
        }
        Self::from_raw(raw)
    }

    /// What `self` holds and `other` does not, like `GTID_SUBTRACT(self, other)`.
    /// A replica's `gtid_executed` minus its primary's is its errant set.
    pub fn subtract(&self, other: &GtidSet) -> GtidSet {
        let sources = self
            .sources
            .iter()
            .filter_map(|(source, intervals)| {
                let rest = match other.sources.get(source) {
                    Some(removed) => subtract_intervals(intervals, removed),
                    None => intervals.clone(),
                };
                (!rest.is_empty()).then(|| (source.clone(), rest))
            })
            .collect();
        GtidSet { sources }
    }

    pub fn intersection(&self, other: &GtidSet) -> GtidSet {
        let sources = self
            .sources
            .iter()
            .filter_map(|(source, intervals)| {
                let common = intersect_intervals(intervals, other.sources.get(source)?);
                (!common.is_empty()).then(|| (source.clone(), common))
            })
            .collect();
        GtidSet { sources }
    }

    /// The transactions numbered by `uuid`, under every tag. Lets a caller set
    /// aside one server's own writes, such as a primary's that reached a
    /// replica after the primary was probed.
    pub fn restricted_to_uuid(&self, uuid: &str) -> GtidSet {
        let uuid = uuid.trim().to_ascii_lowercase();
        let sources = self
            .sources
            .iter()
            .filter(|(source, _)| source.uuid == uuid)
            .map(|(source, intervals)| (source.clone(), intervals.clone()))
            .collect();
        GtidSet { sources }
    }

    /// Like `GTID_SUBSET(self, other)`: every transaction of `self` is in `other`.
    pub fn is_subset_of(&self, other: &GtidSet) -> bool {
        self.is_subset_of_except(other, None)
    }

    /// Every transaction of `self` is in `other`, those numbered by `uuid` (under any
    /// tag) aside: `self.subtract(other)` less `restricted_to_uuid(uuid)` is empty,
    /// found without building either.
    pub fn is_subset_of_except(&self, other: &GtidSet, uuid: Option<&str>) -> bool {
        let uuid = uuid.map(str::trim);
        self.sources.iter().all(|(source, intervals)| {
            uuid.is_some_and(|uuid| source.uuid.eq_ignore_ascii_case(uuid))
                || other.sources.get(source).is_some_and(|superset| {
                    intervals
                        .iter()
                        .all(|interval| covers(superset, interval.start, interval.end))
                })
        })
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous_uuid: Option<&str> = None;
        for (source, intervals) in &self.sources {
            if previous_uuid != Some(source.uuid.as_str()) {
                if previous_uuid.is_some() {
                    f.write_str(",")?;
                }
                f.write_str(&source.uuid)?;
                previous_uuid = Some(&source.uuid);
            }
            if let Some(tag) = &source.tag {
                write!(f, ":{tag}")?;
            }
            for interval in intervals {
                write!(f, ":{interval}")?;
            }
        }
        Ok(())
    }
}

serde_as_string!(GtidSet);

/// One comma-separated entry: a UUID, then intervals, each run of intervals
/// optionally preceded by a tag that applies until the next tag.
fn parse_entry(
    entry: &str,
    raw: &mut BTreeMap<GtidSource, Vec<Interval>>,
) -> Result<(), GtidParseError> {
    let (uuid_token, rest) = match entry.split_once(':') {
        Some((uuid_token, rest)) => (uuid_token.trim(), Some(rest)),
        None => (entry, None),
    };
    let uuid = parse_uuid(uuid_token, entry)?;
    let Some(rest) = rest else {
        return Err(GtidParseError::MissingIntervals {
            entry: quote(entry),
            after: quote(uuid_token),
        });
    };
    let mut source = GtidSource {
        uuid: uuid.clone(),
        tag: None,
    };
    // The token after which no interval has been seen yet: a tag must be
    // followed by at least one interval, or the entry is malformed.
    let mut awaiting: Option<&str> = None;
    for token in rest.split(':').map(str::trim) {
        if token.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            if let Some(tag) = awaiting {
                return Err(GtidParseError::MissingIntervals {
                    entry: quote(entry),
                    after: tag.to_owned(),
                });
            }
            source = GtidSource {
                uuid: uuid.clone(),
                tag: Some(parse_tag(token, entry)?),
            };
            awaiting = Some(token);
        } else {
            let interval = parse_interval(token, entry)?;
            raw.entry(source.clone()).or_default().push(interval);
            awaiting = None;
        }
    }
    match awaiting {
        Some(tag) => Err(GtidParseError::MissingIntervals {
            entry: quote(entry),
            after: tag.to_owned(),
        }),
        None => Ok(()),
    }
}

fn parse_uuid(token: &str, entry: &str) -> Result<String, GtidParseError> {
    let well_formed = token.len() == 36
        && token.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if well_formed {
        Ok(token.to_ascii_lowercase())
    } else {
        Err(GtidParseError::InvalidUuid {
            token: quote(token),
            entry: quote(entry),
        })
    }
}

fn parse_tag(token: &str, entry: &str) -> Result<String, GtidParseError> {
    let well_formed = (1..=MAX_TAG_LEN).contains(&token.len())
        && token
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphabetic() || b == b'_' || (i > 0 && b.is_ascii_digit()));
    if well_formed {
        Ok(token.to_ascii_lowercase())
    } else {
        Err(GtidParseError::InvalidTag {
            token: quote(token),
            entry: quote(entry),
        })
    }
}

fn parse_interval(token: &str, entry: &str) -> Result<Interval, GtidParseError> {
    let invalid = |reason| GtidParseError::InvalidInterval {
        token: quote(token),
        entry: quote(entry),
        reason,
    };
    if token.is_empty() {
        return Err(invalid(
            "nothing between the colons; expected a number such as 7 or a range such as 1-5",
        ));
    }
    let (start, end) = match token.split_once('-') {
        Some((start, end)) => (start.trim(), end.trim()),
        None => (token, token),
    };
    let start = parse_transaction(start).map_err(invalid)?;
    let end = parse_transaction(end).map_err(invalid)?;
    if start > end {
        return Err(invalid("start is after end"));
    }
    Ok(Interval { start, end })
}

fn parse_transaction(text: &str) -> Result<u64, &'static str> {
    const TOO_LARGE: &str =
        "transaction number is above the largest MySQL accepts (9223372036854775806)";
    // `u64::from_str` would also take a leading `+`, which MySQL does not.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a number; expected a number such as 7 or a range such as 1-5");
    }
    match text.parse::<u64>() {
        Ok(0) => Err("transaction numbers start at 1"),
        Ok(n) if n <= MAX_TRANSACTION => Ok(n),
        _ => Err(TOO_LARGE),
    }
}

fn normalize(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.sort_unstable_by_key(|interval| interval.start);
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for interval in intervals {
        match merged.last_mut() {
            Some(last) if interval.start <= last.end + 1 => last.end = last.end.max(interval.end),
            _ => merged.push(interval),
        }
    }
    merged
}

/// Whether one interval of the canonical list `intervals` spans `start..=end`.
/// A single one must, because canonical intervals are never adjacent.
fn covers(intervals: &[Interval], start: u64, end: u64) -> bool {
    let after = intervals.partition_point(|interval| interval.start <= start);
    after > 0 && intervals[after - 1].end >= end
}

fn subtract_intervals(kept: &[Interval], removed: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut first_relevant = 0;
    for interval in kept {
        while removed
            .get(first_relevant)
            .is_some_and(|r| r.end < interval.start)
        {
            first_relevant += 1;
        }
        let mut start = interval.start;
        let mut survives = true;
        for cut in removed[first_relevant..]
            .iter()
            .take_while(|cut| cut.start <= interval.end)
        {
            if cut.start > start {
                out.push(Interval {
                    start,
                    end: cut.start - 1,
                });
            }
            if cut.end >= interval.end {
                survives = false;
                break;
            }
            start = cut.end + 1;
        }
        if survives {
            out.push(Interval {
                start,
                end: interval.end,
            });
        }
    }
    out
}

fn intersect_intervals(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        let start = x.start.max(y.start);
        let end = x.end.min(y.end);
        if start <= end {
            out.push(Interval { start, end });
        }
        if x.end < y.end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

// ---------------------------------------------------------------- MariaDB

/// One MariaDB GTID, printed `domain-server_id-seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MariadbGtid {
    pub domain: u32,
    pub server_id: u32,
    pub seq: u64,
}

impl MariadbGtid {
    pub fn parse(text: &str) -> Result<Self, GtidParseError> {
        parse_mariadb_gtid(text.trim(), text)
    }
}

impl fmt::Display for MariadbGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server_id, self.seq)
    }
}

serde_as_string!(MariadbGtid);

fn parse_mariadb_gtid(token: &str, input: &str) -> Result<MariadbGtid, GtidParseError> {
    let invalid = |reason| GtidParseError::InvalidMariadbGtid {
        token: quote(token),
        input: quote(input),
        reason,
    };
    let mut parts = token.split('-').map(str::trim);
    let (Some(domain), Some(server_id), Some(seq), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "expected domain-server_id-seq, three unsigned integers joined by '-'",
        ));
    };
    let number = |text: &str| {
        // `from_str` would also take a leading `+`, which MariaDB never prints.
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    let to_u32 = |n: u64| u32::try_from(n).ok();
    Ok(MariadbGtid {
        domain: number(domain)
            .and_then(to_u32)
            .ok_or_else(|| invalid("domain is not an unsigned 32-bit integer"))?,
        server_id: number(server_id)
            .and_then(to_u32)
            .ok_or_else(|| invalid("server_id is not an unsigned 32-bit integer"))?,
        seq: number(seq).ok_or_else(|| invalid("seq is not an unsigned 64-bit integer"))?,
    })
}

/// A MariaDB GTID list: a position (`@@gtid_binlog_pos`, `@@gtid_current_pos`,
/// `@@gtid_slave_pos`: one GTID per domain) or a binlog state
/// (`@@gtid_binlog_state`: the last GTID of each (domain, server_id)).
/// One type reads both; at most one GTID per (domain, server_id).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MariadbGtidList {
    seq_by_origin: BTreeMap<(u32, u32), u64>,
}

impl MariadbGtidList {
    /// Reads a comma list such as `0-101-13,1-2-3`; whitespace around entries
    /// is ignored and an empty or blank string is the empty list.
    pub fn parse(text: &str) -> Result<Self, GtidParseError> {
        let mut seq_by_origin = BTreeMap::new();
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        for token in text.split(',').map(str::trim) {
            if token.is_empty() {
                return Err(GtidParseError::EmptyEntry { input: quote(text) });
            }
            let gtid = parse_mariadb_gtid(token, text)?;
            if seq_by_origin
                .insert((gtid.domain, gtid.server_id), gtid.seq)
                .is_some()
            {
                return Err(GtidParseError::DuplicateMariadbOrigin {
                    input: quote(text),
                    domain: gtid.domain,
                    server_id: gtid.server_id,
                });
            }
        }
        Ok(Self { seq_by_origin })
    }

    pub fn is_empty(&self) -> bool {
        self.seq_by_origin.is_empty()
    }

    /// The GTIDs sorted by domain, then server_id.
    pub fn iter(&self) -> impl Iterator<Item = MariadbGtid> + '_ {
        self.seq_by_origin
            .iter()
            .map(|(&(domain, server_id), &seq)| MariadbGtid {
                domain,
                server_id,
                seq,
            })
    }

    pub fn domains(&self) -> BTreeSet<u32> {
        self.seq_by_origin
            .keys()
            .map(|&(domain, _)| domain)
            .collect()
    }

    /// Given this replica's `gtid_binlog_state` and the primary's, the GTIDs
    /// the primary never had: a (domain, server_id) the primary has no GTID
    /// from, or a higher seq than the primary's last from that origin. A
    /// replica that only lags (lower seqs, same origins) has none.
    ///
    /// MariaDB keeps only the last seq per (domain, server_id), so this names
    /// the newest errant GTID of each origin, not every errant transaction.
    /// It also trusts that the primary's state was never cleared by
    /// `RESET MASTER`, which forgets origins.
    pub fn errant_against(&self, primary: &MariadbGtidList) -> MariadbGtidList {
        let seq_by_origin = self
            .seq_by_origin
            .iter()
            .filter(|(origin, &seq)| {
                primary
                    .seq_by_origin
                    .get(origin)
                    .is_none_or(|&primary_seq| seq > primary_seq)
            })
            .map(|(&origin, &seq)| (origin, seq))
            .collect();
        MariadbGtidList { seq_by_origin }
    }

    /// The list without the GTIDs `server_id` wrote, in any domain.
    pub fn without_server(&self, server_id: u32) -> MariadbGtidList {
        let seq_by_origin = self
            .seq_by_origin
            .iter()
            .filter(|&(&(_, origin_server), _)| origin_server != server_id)
            .map(|(&origin, &seq)| (origin, seq))
            .collect();
        MariadbGtidList { seq_by_origin }
    }

    /// Whether, in every domain `other` names, this list has reached at least
    /// `other`'s seq, whichever server_id wrote it. That is the test
    /// `MASTER_GTID_WAIT()` applies: seqs grow monotonically within a domain
    /// across a failover, so the origin server does not matter.
    pub fn is_at_or_beyond(&self, other: &MariadbGtidList) -> bool {
        // `None < Some(_)`, so a domain missing here fails the comparison.
        other
            .domains()
            .into_iter()
            .all(|domain| self.highest_seq(domain) >= other.highest_seq(domain))
    }

    fn highest_seq(&self, domain: u32) -> Option<u64> {
        self.seq_by_origin
            .range((domain, 0)..=(domain, u32::MAX))
            .map(|(_, &seq)| seq)
            .max()
    }
}

impl fmt::Display for MariadbGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, gtid) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{gtid}")?;
        }
        Ok(())
    }
}

serde_as_string!(MariadbGtidList);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::{value::Error as DeError, IntoDeserializer};
    use serde::Deserialize;

    const U1: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const U2: &str = "f1b33322-e6f0-11f1-ae18-02fc00000001";

    fn set(text: &str) -> GtidSet {
        GtidSet::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    fn source(uuid: &str, tag: Option<&str>) -> GtidSource {
        GtidSource::new(uuid, tag).unwrap()
    }

    fn list(text: &str) -> MariadbGtidList {
        MariadbGtidList::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    #[test]
    fn parses_real_mysql_values_to_canonical_text() {
        let cases = [
            (format!("{U2}:1-5"), format!("{U2}:1-5"), 5),
            // Two sources as the server prints them: a newline after the comma.
            (
                format!("{U2}:1-13,\n{U1}:1"),
                format!("{U1}:1,{U2}:1-13"),
                14,
            ),
            (format!("{}:1-5", U2.to_uppercase()), format!("{U2}:1-5"), 5),
            (
                format!("{U1}:7:1-3:4-5:9-12:2"),
                format!("{U1}:1-5:7:9-12"),
                10,
            ),
            (format!("{U1}:1-3,{U1}:2-8"), format!("{U1}:1-8"), 8),
            (
                format!("{U1}:1-5:mytag:1-3:othertag:7"),
                format!("{U1}:1-5:mytag:1-3:othertag:7"),
                9,
            ),
            // Tags sort after the untagged intervals, and among themselves.
            (
                format!("{U1}:b:1-3:a:5,{U1}:1-4"),
                format!("{U1}:1-4:a:5:b:1-3"),
                8,
            ),
            (
                format!("{U1}:MyTag:1:_x9:2"),
                format!("{U1}:_x9:2:mytag:1"),
                2,
            ),
            (format!("{U1}:a:1:b:2:a:3"), format!("{U1}:a:1:3:b:2"), 3),
            // `@@gtid_executed` of a MySQL 9.7.4 server after tagged writes.
            (
                "2b07d529-e6fd-11f1-b771-02fc00000001:1:alpha:1:ops:1".to_owned(),
                "2b07d529-e6fd-11f1-b771-02fc00000001:1:alpha:1:ops:1".to_owned(),
                3,
            ),
            (
                format!("  {U1} : 1 - 3 : t : 4 ,\n\t {U2}:1  \n"),
                format!("{U1}:1-3:t:4,{U2}:1"),
                5,
            ),
            (
                format!("{U1}:1-9223372036854775806"),
                format!("{U1}:1-9223372036854775806"),
                MAX_TRANSACTION,
            ),
            (String::new(), String::new(), 0),
            (" \n\t".to_owned(), String::new(), 0),
        ];
        for (input, canonical, count) in cases {
            let parsed = set(&input);
            assert_eq!(parsed.to_string(), canonical, "input {input:?}");
            assert_eq!(parsed.transaction_count(), count, "input {input:?}");
            assert_eq!(parsed.is_empty(), count == 0, "input {input:?}");
        }
    }

    #[test]
    fn rejects_malformed_mysql_values_saying_why() {
        let bad_uuid = "f1b33322-e6f0-11f1-ae18-02fc0000000";
        let cases = [
            (
                format!("{U1}:5-3"),
                format!(
                    "invalid GTID interval \"5-3\" in \"{U1}:5-3\": start is after end"
                ),
            ),
            (
                format!("{bad_uuid}:1-5"),
                format!(
                    "invalid server UUID \"{bad_uuid}\" in \"{bad_uuid}:1-5\": \
                     expected 32 hex digits grouped 8-4-4-4-12"
                ),
            ),
            (
                "3e11fa47-71ca-11e1-9e33-c80aa942956g:1".to_owned(),
                "invalid server UUID \"3e11fa47-71ca-11e1-9e33-c80aa942956g\" in \
                 \"3e11fa47-71ca-11e1-9e33-c80aa942956g:1\": expected 32 hex digits grouped \
                 8-4-4-4-12"
                    .to_owned(),
            ),
            (
                format!("{U1}:0"),
                format!("invalid GTID interval \"0\" in \"{U1}:0\": transaction numbers start at 1"),
            ),
            (
                format!("{U1}:0-4"),
                format!(
                    "invalid GTID interval \"0-4\" in \"{U1}:0-4\": transaction numbers start at 1"
                ),
            ),
            (
                format!("{U1}:9223372036854775807"),
                format!(
                    "invalid GTID interval \"9223372036854775807\" in \"{U1}:9223372036854775807\": \
                     transaction number is above the largest MySQL accepts (9223372036854775806)"
                ),
            ),
            (
                format!("{U1}:1-99999999999999999999"),
                format!(
                    "invalid GTID interval \"1-99999999999999999999\" in \
                     \"{U1}:1-99999999999999999999\": transaction number is above the largest \
                     MySQL accepts (9223372036854775806)"
                ),
            ),
            (
                format!("{U1}:+3"),
                format!(
                    "invalid GTID interval \"+3\" in \"{U1}:+3\": not a number; expected a number \
                     such as 7 or a range such as 1-5"
                ),
            ),
            (
                format!("{U1}:1-2-3"),
                format!(
                    "invalid GTID interval \"1-2-3\" in \"{U1}:1-2-3\": not a number; expected a \
                     number such as 7 or a range such as 1-5"
                ),
            ),
            (
                format!("{U1}:1-3:"),
                format!(
                    "invalid GTID interval \"\" in \"{U1}:1-3:\": nothing between the colons; \
                     expected a number such as 7 or a range such as 1-5"
                ),
            ),
            (
                format!("{U1}:my-tag:1"),
                format!(
                    "invalid GTID tag \"my-tag\" in \"{U1}:my-tag:1\": a tag is a letter or \
                     underscore followed by at most 31 letters, digits or underscores"
                ),
            ),
            (
                format!("{U1}:{}:1", "t".repeat(33)),
                format!(
                    "invalid GTID tag \"{t}\" in \"{U1}:{t}:1\": a tag is a letter or \
                     underscore followed by at most 31 letters, digits or underscores",
                    t = "t".repeat(33)
                ),
            ),
            (
                U1.to_owned(),
                format!(
                    "GTID entry \"{U1}\" names no transactions after \"{U1}\": expected an \
                     interval such as 7 or 1-5"
                ),
            ),
            (
                format!("{U1}:1-3:tag"),
                format!(
                    "GTID entry \"{U1}:1-3:tag\" names no transactions after \"tag\": expected an \
                     interval such as 7 or 1-5"
                ),
            ),
            (
                format!("{U1}:a:b:1"),
                format!(
                    "GTID entry \"{U1}:a:b:1\" names no transactions after \"a\": expected an \
                     interval such as 7 or 1-5"
                ),
            ),
            (
                format!("{U1}:1,,{U2}:1"),
                format!(
                    "empty entry in GTID value \"{U1}:1,,{U2}:1\": nothing between two commas, or \
                     a comma at an end"
                ),
            ),
            (
                format!("{U1}:1,"),
                format!(
                    "empty entry in GTID value \"{U1}:1,\": nothing between two commas, or a \
                     comma at an end"
                ),
            ),
        ];
        for (input, message) in cases {
            match GtidSet::parse(&input) {
                Ok(parsed) => panic!("{input:?} parsed as {parsed}"),
                Err(e) => assert_eq!(e.to_string(), message, "input {input:?}"),
            }
        }
    }

    #[test]
    fn long_entries_are_cut_in_error_messages() {
        let many: Vec<String> = (1..200).map(|n| (n * 2).to_string()).collect();
        let input = format!("{U1}:{}:0", many.join(":"));
        let message = GtidSet::parse(&input).unwrap_err().to_string();
        assert!(
            message.starts_with("invalid GTID interval \"0\" in \""),
            "{message}"
        );
        assert!(message.contains("...\""), "{message}");
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn source_constructor_validates_and_lowercases() {
        let tagged = source(&U1.to_uppercase(), Some("Blue"));
        assert_eq!((tagged.uuid(), tagged.tag()), (U1, Some("blue")));
        assert_eq!(tagged.to_string(), format!("{U1}:blue"));
        assert!(GtidSource::new("nope", None).is_err());
        assert!(GtidSource::new(U1, Some("9lives")).is_err());
    }

    #[test]
    fn algebra_on_real_values() {
        let primary = set(&format!("{U1}:1-100,\n{U2}:1-5"));
        let lagging = set(&format!("{U1}:1-90,\n{U2}:1-5"));
        let errant = set(&format!("{U1}:1-100,\n{U2}:1-5:7,{U2}:ops:1"));
        assert!(lagging.is_subset_of(&primary));
        assert!(lagging.subtract(&primary).is_empty());
        assert!(!errant.is_subset_of(&primary));
        assert_eq!(
            errant.subtract(&primary).to_string(),
            format!("{U2}:7:ops:1")
        );
        assert_eq!(
            primary.subtract(&lagging).to_string(),
            format!("{U1}:91-100")
        );
        assert_eq!(
            errant.intersection(&lagging).to_string(),
            format!("{U1}:1-90,{U2}:1-5")
        );
        assert_eq!(primary.union(&errant), errant);
        assert_eq!(
            errant.restricted_to_uuid(&U2.to_uppercase()).to_string(),
            format!("{U2}:1-5:7:ops:1")
        );
        assert!(errant.restricted_to_uuid("not-a-uuid").is_empty());
        assert!(errant.contains(&source(U2, Some("ops")), 1));
        assert!(!errant.contains(&source(U2, None), 6));
        assert!(!errant.contains(&source(U2, Some("other")), 1));
        let shapes: Vec<(String, Vec<(u64, u64)>)> = errant
            .iter()
            .map(|(s, ivs)| {
                (
                    s.to_string(),
                    ivs.iter().map(|i| (i.start(), i.end())).collect(),
                )
            })
            .collect();
        assert_eq!(
            shapes,
            vec![
                (U1.to_owned(), vec![(1, 100)]),
                (U2.to_owned(), vec![(1, 5), (7, 7)]),
                (format!("{U2}:ops"), vec![(1, 1)]),
            ]
        );
    }

    #[test]
    fn transaction_count_saturates() {
        let huge = set(&format!(
            "{U1}:1-9223372036854775806,{U2}:1-9223372036854775806,{U2}:t:1-9223372036854775806"
        ));
        assert_eq!(huge.transaction_count(), u64::MAX);
    }

    #[test]
    fn serde_reads_the_canonical_string_and_rejects_bad_ones() {
        let text = format!("{U2}:1-3,\n{U1}:5");
        let parsed = GtidSet::deserialize(text.as_str().into_deserializer())
            .map_err(|e: DeError| e.to_string());
        assert_eq!(parsed, Ok(set(&text)));
        let bad = GtidSet::deserialize(format!("{U1}:3-1").as_str().into_deserializer())
            .map_err(|e: DeError| e.to_string());
        assert!(bad.unwrap_err().contains("start is after end"));
        let list = MariadbGtidList::deserialize("0-1-9,1-2-3".into_deserializer())
            .map_err(|e: DeError| e.to_string());
        assert_eq!(list.map(|l| l.to_string()), Ok("0-1-9,1-2-3".to_owned()));
        let one = MariadbGtid::deserialize("0-101-15".into_deserializer())
            .map_err(|e: DeError| e.to_string());
        assert_eq!(
            one,
            Ok(MariadbGtid {
                domain: 0,
                server_id: 101,
                seq: 15
            })
        );
        assert_eq!(
            "1-2-3,0-1-9".parse::<MariadbGtidList>(),
            Ok(list_of(&[(0, 1, 9), (1, 2, 3)]))
        );
        assert_eq!(
            format!("{U1}:1").parse::<GtidSet>(),
            Ok(set(&format!("{U1}:1")))
        );
    }

    fn list_of(gtids: &[(u32, u32, u64)]) -> MariadbGtidList {
        let text: Vec<String> = gtids
            .iter()
            .map(|&(domain, server_id, seq)| format!("{domain}-{server_id}-{seq}"))
            .collect();
        list(&text.join(","))
    }

    #[test]
    fn parses_real_mariadb_values() {
        let cases = [
            ("0-101-15", "0-101-15", vec![(0, 101, 15)]),
            (
                "0-101-13,0-103-14",
                "0-101-13,0-103-14",
                vec![(0, 101, 13), (0, 103, 14)],
            ),
            ("1-2-3,0-1-9", "0-1-9,1-2-3", vec![(0, 1, 9), (1, 2, 3)]),
            (
                " 0-1-2 ,\n 1-1-5\n",
                "0-1-2,1-1-5",
                vec![(0, 1, 2), (1, 1, 5)],
            ),
            (
                "4294967295-4294967295-18446744073709551615",
                "4294967295-4294967295-18446744073709551615",
                vec![(u32::MAX, u32::MAX, u64::MAX)],
            ),
            ("", "", vec![]),
            ("  ", "", vec![]),
        ];
        for (input, canonical, gtids) in cases {
            let parsed = list(input);
            assert_eq!(parsed.to_string(), canonical, "input {input:?}");
            let seen: Vec<(u32, u32, u64)> = parsed
                .iter()
                .map(|g| (g.domain, g.server_id, g.seq))
                .collect();
            assert_eq!(seen, gtids, "input {input:?}");
            assert_eq!(parsed.is_empty(), gtids.is_empty());
        }
        assert_eq!(list("1-2-3,0-1-9,0-4-10").domains(), BTreeSet::from([0, 1]));
        assert_eq!(
            list("1-2-3,0-1-9,0-2-10,5-2-1")
                .without_server(2)
                .to_string(),
            "0-1-9"
        );
        assert_eq!(
            MariadbGtid::parse(" 0-101-15 ").map(|g| g.to_string()),
            Ok("0-101-15".to_owned())
        );
    }

    #[test]
    fn rejects_malformed_mariadb_values_saying_why() {
        let shape = "expected domain-server_id-seq, three unsigned integers joined by '-'";
        let cases = [
            (
                "0-101",
                format!("invalid MariaDB GTID \"0-101\" in \"0-101\": {shape}"),
            ),
            (
                "0-1-2,0-101-13-4",
                format!("invalid MariaDB GTID \"0-101-13-4\" in \"0-1-2,0-101-13-4\": {shape}"),
            ),
            (
                "a-1-2",
                "invalid MariaDB GTID \"a-1-2\" in \"a-1-2\": domain is not an unsigned 32-bit \
                 integer"
                    .to_owned(),
            ),
            (
                "4294967296-1-2",
                "invalid MariaDB GTID \"4294967296-1-2\" in \"4294967296-1-2\": domain is not an \
                 unsigned 32-bit integer"
                    .to_owned(),
            ),
            (
                "0-+1-2",
                "invalid MariaDB GTID \"0-+1-2\" in \"0-+1-2\": server_id is not an unsigned \
                 32-bit integer"
                    .to_owned(),
            ),
            (
                "0-1-",
                "invalid MariaDB GTID \"0-1-\" in \"0-1-\": seq is not an unsigned 64-bit integer"
                    .to_owned(),
            ),
            (
                "0-1-18446744073709551616",
                "invalid MariaDB GTID \"0-1-18446744073709551616\" in \
                 \"0-1-18446744073709551616\": seq is not an unsigned 64-bit integer"
                    .to_owned(),
            ),
            (
                "0-1-2,0-1-3",
                "MariaDB GTID list \"0-1-2,0-1-3\" holds two GTIDs for domain 0, server_id 1; a \
                 position or binlog state holds at most one per (domain, server_id)"
                    .to_owned(),
            ),
            (
                "0-1-2,,1-1-1",
                "empty entry in GTID value \"0-1-2,,1-1-1\": nothing between two commas, or a \
                 comma at an end"
                    .to_owned(),
            ),
        ];
        for (input, message) in cases {
            match MariadbGtidList::parse(input) {
                Ok(parsed) => panic!("{input:?} parsed as {parsed}"),
                Err(e) => assert_eq!(e.to_string(), message, "input {input:?}"),
            }
        }
    }

    #[test]
    fn mariadb_errant_gtids() {
        // (replica gtid_binlog_state, primary gtid_binlog_state, errant)
        let cases = [
            // Seen on a real server: the replica wrote with its own server_id.
            ("0-101-13,0-103-14", "0-101-13", "0-103-14"),
            ("0-101-10", "0-101-13", ""),
            ("0-101-13", "0-101-13", ""),
            ("0-101-15", "0-101-13", "0-101-15"),
            // After a failover the new primary's origin is known to both.
            ("0-101-13,0-103-18", "0-101-13,0-103-20", ""),
            ("0-101-13,1-104-3", "0-101-13", "1-104-3"),
            (
                "0-101-13,1-104-3,1-105-9",
                "1-104-3,0-101-13,1-105-7",
                "1-105-9",
            ),
            ("", "0-101-13", ""),
            ("0-101-1", "", "0-101-1"),
        ];
        for (replica, primary, errant) in cases {
            assert_eq!(
                list(replica).errant_against(&list(primary)).to_string(),
                errant,
                "replica {replica:?} primary {primary:?}"
            );
        }
    }

    #[test]
    fn mariadb_at_or_beyond() {
        // (replica position, target, reached)
        let cases = [
            ("0-101-13", "0-101-13", true),
            ("0-101-12", "0-101-13", false),
            ("0-101-14", "0-101-13", true),
            ("0-101-13,1-5-4", "1-5-4", true),
            ("0-101-13", "1-5-4", false),
            ("0-101-13,1-5-3", "0-101-13,1-5-4", false),
            ("0-101-13", "", true),
            ("", "", true),
            ("", "0-1-1", false),
            // Seqs keep growing across a failover: the origin does not matter.
            ("0-103-20", "0-101-15", true),
            ("0-101-13,0-103-20", "0-103-15,0-101-19", true),
            ("0-101-13,0-103-14", "0-101-15", false),
        ];
        for (replica, target, reached) in cases {
            assert_eq!(
                list(replica).is_at_or_beyond(&list(target)),
                reached,
                "replica {replica:?} target {target:?}"
            );
        }
    }

    // ------------------------------------------------------- properties

    const UUIDS: [&str; 3] = [U1, U2, "00000000-0000-0000-0000-00000000000a"];
    const TAGS: [Option<&str>; 3] = [None, Some("a"), Some("b_2")];

    /// One `uuid[:tag]:start-end` piece of generated input text.
    #[derive(Clone, Debug)]
    struct Piece {
        uuid: usize,
        tag: usize,
        start: u64,
        end: u64,
        upper: bool,
    }

    type Model = BTreeSet<(GtidSource, u64)>;

    fn pieces() -> impl Strategy<Value = Vec<Piece>> {
        let piece = (
            0..UUIDS.len(),
            0..TAGS.len(),
            1..40u64,
            0..6u64,
            any::<bool>(),
        )
            .prop_map(|(uuid, tag, start, len, upper)| Piece {
                uuid,
                tag,
                start,
                end: start + len,
                upper,
            });
        prop::collection::vec(piece, 0..8)
    }

    fn text_of(pieces: &[Piece]) -> String {
        let entries: Vec<String> = pieces
            .iter()
            .map(|p| {
                let mut entry = UUIDS[p.uuid].to_owned();
                if let Some(tag) = TAGS[p.tag] {
                    entry = format!("{entry}:{tag}");
                }
                if p.upper {
                    entry = entry.to_uppercase();
                }
                if p.start == p.end {
                    format!("{entry}:{}", p.start)
                } else {
                    format!("{entry}:{}-{}", p.start, p.end)
                }
            })
            .collect();
        entries.join(",\n")
    }

    fn model_of(pieces: &[Piece]) -> Model {
        pieces
            .iter()
            .flat_map(|p| {
                let src = source(UUIDS[p.uuid], TAGS[p.tag]);
                (p.start..=p.end).map(move |n| (src.clone(), n))
            })
            .collect()
    }

    fn expand(set: &GtidSet) -> Model {
        set.iter()
            .flat_map(|(src, intervals)| {
                intervals
                    .iter()
                    .flat_map(move |i| (i.start()..=i.end()).map(move |n| (src.clone(), n)))
            })
            .collect()
    }

    fn assert_canonical(set: &GtidSet) {
        for (src, intervals) in set.iter() {
            assert!(!intervals.is_empty(), "{src} has no intervals");
            assert!(intervals
                .iter()
                .all(|i| 1 <= i.start() && i.start() <= i.end()));
            assert!(
                intervals.windows(2).all(|w| w[0].end() + 1 < w[1].start()),
                "{src} intervals not merged: {intervals:?}"
            );
        }
    }

    fn built(pieces: &[Piece]) -> GtidSet {
        let parsed = set(&text_of(pieces));
        assert_canonical(&parsed);
        parsed
    }

    proptest! {
        #[test]
        fn parse_matches_model_and_round_trips(p in pieces()) {
            let s = built(&p);
            let model = model_of(&p);
            prop_assert_eq!(expand(&s), model.clone());
            prop_assert_eq!(s.transaction_count(), model.len() as u64);
            prop_assert_eq!(s.is_empty(), model.is_empty());
            prop_assert_eq!(GtidSet::parse(&s.to_string()), Ok(s.clone()));
            prop_assert!(!s.to_string().contains('\n'));
        }

        #[test]
        fn operations_match_model(a in pieces(), b in pieces()) {
            let (sa, sb) = (built(&a), built(&b));
            let (ma, mb) = (model_of(&a), model_of(&b));

            let union = sa.union(&sb);
            let difference = sa.subtract(&sb);
            let common = sa.intersection(&sb);
            for result in [&union, &difference, &common] {
                assert_canonical(result);
            }
            prop_assert_eq!(expand(&union), &ma | &mb);
            prop_assert_eq!(expand(&difference), &ma - &mb);
            prop_assert_eq!(expand(&common), &ma & &mb);
            prop_assert_eq!(sa.is_subset_of(&sb), ma.is_subset(&mb));
            let own = sa.restricted_to_uuid(U1);
            assert_canonical(&own);
            let own_model: Model = ma.iter().filter(|(s, _)| s.uuid() == U1).cloned().collect();
            prop_assert_eq!(expand(&own), own_model);
            prop_assert_eq!(
                sa.is_subset_of_except(&sb, Some(U1)),
                difference.subtract(&difference.restricted_to_uuid(U1)).is_empty()
            );

            for uuid in UUIDS {
                for tag in TAGS {
                    let src = source(uuid, tag);
                    for n in 0..50 {
                        prop_assert_eq!(sa.contains(&src, n), ma.contains(&(src.clone(), n)));
                    }
                }
            }
        }

        #[test]
        fn algebraic_laws_hold(a in pieces(), b in pieces(), c in pieces()) {
            let (a, b, c) = (built(&a), built(&b), built(&c));
            prop_assert_eq!(a.union(&b), b.union(&a));
            prop_assert_eq!(a.union(&b).union(&c), a.union(&b.union(&c)));
            prop_assert_eq!(a.union(&a), a.clone());
            prop_assert_eq!(a.intersection(&b), b.intersection(&a));
            prop_assert!(a.is_subset_of(&a.union(&b)));
            prop_assert!(a.intersection(&b).is_subset_of(&a));
            prop_assert!(a.subtract(&b).intersection(&b).is_empty());
            prop_assert_eq!(a.subtract(&b).union(&a.intersection(&b)), a.clone());
            prop_assert_eq!(a.subtract(&b).union(&b), a.union(&b));
            prop_assert_eq!(a.is_subset_of(&b), a.subtract(&b).is_empty());
            prop_assert!(
                a.union(&b).transaction_count() <= a.transaction_count() + b.transaction_count()
            );
            prop_assert!(a.subtract(&a).is_empty());
            prop_assert!(GtidSet::default().is_subset_of(&a));
        }

        #[test]
        fn mariadb_lists_round_trip(gtids in prop::collection::btree_map((0..4u32, 0..4u32), any::<u64>(), 0..6)) {
            let text: Vec<String> = gtids
                .iter()
                .rev()
                .map(|(&(d, s), q)| format!("{d}-{s}-{q}"))
                .collect();
            let parsed = list(&text.join(", "));
            prop_assert_eq!(parsed.iter().count(), gtids.len());
            prop_assert_eq!(MariadbGtidList::parse(&parsed.to_string()), Ok(parsed.clone()));
            prop_assert!(parsed.errant_against(&parsed).is_empty());
            prop_assert!(parsed.is_at_or_beyond(&parsed));
        }
    }
}
