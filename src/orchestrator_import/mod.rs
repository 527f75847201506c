//! Importing an openark/orchestrator configuration: `orchestrator.conf.json` in, a
//! pointsman TOML configuration out, and one note per orchestrator key saying what
//! became of it — carried over, carried over with a difference the user must know, or
//! left out and why (with what to do instead, where there is something to do).
//!
//! Pure: text in, text and notes out. It reads no other file (orchestrator's
//! credentials file, its backend database), touches no network and no environment; what
//! only those could tell is a note telling the user what to do.
//!
//! The file is read the way orchestrator reads it (Go's `encoding/json` into its
//! `Configuration` struct): key names match regardless of case, unknown keys are ignored,
//! a later duplicate wins, and a value of the wrong type stops everything — orchestrator
//! would refuse to start with it, so the import refuses too, naming the key. Errors and
//! notes never show a password or a token, nor a hook's command (it may hold one).
//!
//! Every value written is checked the way `config` checks it (regexes compile, addresses
//! parse, durations sit in their ranges), so the output loads with `Config::load`.

use crate::config::{HumanDuration, MysqlConfig, PromotionConfig};
use crate::recovery::hooks::{HookPoint, HooksConfig};
use crate::topology::InstanceKey;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The result of an import: the pointsman configuration and the notes, in the order the
/// keys appear in the orchestrator file (notes about keys the file lacks come last).
#[derive(Clone, Debug)]
pub struct Imported {
    pub toml: String,
    pub notes: Vec<KeyNote>,
}

/// What became of one orchestrator key. `key` is the key as the file writes it (with
/// orchestrator's own spelling in parentheses when only the case differs), and
/// `Key[2]` for one entry of a list when entries fare differently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyNote {
    pub key: String,
    pub outcome: NoteOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoteOutcome {
    /// Carried over with the same meaning; `to` names the pointsman key(s) and value
    /// (a secret's value is never shown).
    Translated { to: String },
    /// Carried over, but pointsman's behaviour differs as `caveat` says, or the user has
    /// something to do.
    TranslatedWithCaveat { to: String, caveat: String },
    /// Not carried over: why, and what to do instead when there is something to do.
    Skipped { why: String },
}

impl fmt::Display for KeyNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            NoteOutcome::Translated { to } => write!(f, "{}: translated to {to}", self.key),
            NoteOutcome::TranslatedWithCaveat { to, caveat } => {
                write!(f, "{}: translated to {to}; but: {caveat}", self.key)
            }
            NoteOutcome::Skipped { why } => write!(f, "{}: not translated: {why}", self.key),
        }
    }
}

/// Why an orchestrator file could not be imported. Each names the file; none shows a
/// value from it.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{source_name}:{line}:{column}: not valid JSON: {what}. orchestrator could not read this file either: fix it at that place and import it again")]
    BrokenJson {
        source_name: String,
        line: usize,
        column: usize,
        what: String,
    },
    #[error("{source_name}: the file holds {found}, not a JSON object: an orchestrator configuration is one object, like {{\"MySQLTopologyUser\": \"orchestrator\", \"InstancePollSeconds\": 5}}")]
    NotAnObject {
        source_name: String,
        found: &'static str,
    },
    #[error("{source_name}: {key} is {found}, but orchestrator reads {expected} there (it would refuse to start with this file): correct the value and import it again")]
    WrongType {
        source_name: String,
        key: String,
        expected: &'static str,
        found: &'static str,
    },
}

/// Translates the orchestrator configuration `json_text` (read from `source_name`, which
/// errors and the output's header name) into a pointsman configuration.
pub fn translate(json_text: &str, source_name: &str) -> Result<Imported, ImportError> {
    let entries = read_object(json_text, source_name)?;
    let file = OrchestratorFile::read(entries, source_name)?;
    let mut import = Import::new(&file);
    import.api();
    import.logging();
    import.mysql();
    import.discovery();
    import.analysis_and_store();
    import.recovery_filters();
    import.block_period();
    import.promotion();
    import.hooks();
    import.consul_and_ha();
    import.backend();
    import.everything_else();
    Ok(import.finish(source_name))
}

// ---------------------------------------------------------------------------------------
// Reading the file as orchestrator does.

/// The top level of the file: its entries in order (duplicates kept), or what it is
/// instead of an object.
enum TopLevel {
    Object(Vec<(String, Value)>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Value>()? {
            entries.push(entry);
        }
        Ok(TopLevel::Object(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel::Other("a list"))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("true or false"))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("text"))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("null"))
    }
}

fn read_object(json_text: &str, source_name: &str) -> Result<Vec<(String, Value)>, ImportError> {
    match serde_json::from_str::<TopLevel>(json_text) {
        Ok(TopLevel::Object(entries)) => Ok(entries),
        Ok(TopLevel::Other(found)) => Err(ImportError::NotAnObject {
            source_name: source_name.to_string(),
            found,
        }),
        Err(error) => {
            let (line, column) = (error.line(), error.column());
            // serde_json appends the position; the error carries it on its own.
            let text = error.to_string();
            let what = text
                .strip_suffix(&format!(" at line {line} column {column}"))
                .unwrap_or(&text)
                .to_string();
            Err(ImportError::BrokenJson {
                source_name: source_name.to_string(),
                line,
                column,
                what,
            })
        }
    }
}

mod keys;
use keys::*;

/// A note and where it goes: the position of its key in the file, then the order the
/// import made it in.
#[derive(Clone)]
struct PlacedNote {
    position: usize,
    note: KeyNote,
}

/// One key's effective value, as orchestrator would hold it after reading the file.
struct Setting {
    key: &'static KnownKey,
    /// How the note names it: as written, with orchestrator's spelling when only the
    /// case differs.
    shown: String,
    value: Value,
    position: usize,
}

/// The file as orchestrator reads it: the effective value of every key it sets, and
/// notes about what it ignores.
struct OrchestratorFile {
    settings: Vec<Setting>,
    notes: Vec<PlacedNote>,
}

impl OrchestratorFile {
    fn read(entries: Vec<(String, Value)>, source_name: &str) -> Result<Self, ImportError> {
        let mut settings: Vec<Setting> = Vec::new();
        let mut notes = Vec::new();
        for (position, (written, value)) in entries.into_iter().enumerate() {
            let Some(key) = known_key(&written) else {
                let why = match DEPRECATED_KEYS
                    .iter()
                    .find(|name| name.eq_ignore_ascii_case(&written))
                {
                    Some(name) => format!("{name} is deprecated: orchestrator ignores it, and there is nothing to translate"),
                    None => "orchestrator has no such key and ignores it (a misspelling?); nothing to translate".to_string(),
                };
                notes.push(PlacedNote {
                    position,
                    note: KeyNote {
                        key: written,
                        outcome: NoteOutcome::Skipped { why },
                    },
                });
                continue;
            };
            let shown = if written == key.name {
                written
            } else {
                format!("{written} ({})", key.name)
            };
            let value = checked_value(key, &shown, value, source_name)?;
            let earlier = settings.iter().position(|s| s.key.name == key.name);
            let Some(value) = value else {
                // Go leaves a scalar as it was on null, and empties a list or a map.
                let why = if matches!(key.kind, TextList | TextMap) {
                    "null: orchestrator reads it as empty; nothing to translate"
                } else {
                    "null: orchestrator ignores it and keeps the value it had; nothing to translate"
                };
                if matches!(key.kind, TextList | TextMap) {
                    if let Some(index) = earlier {
                        let replaced = settings.remove(index);
                        notes.push(superseded(replaced));
                    }
                }
                notes.push(PlacedNote {
                    position,
                    note: KeyNote {
                        key: shown,
                        outcome: NoteOutcome::Skipped { why: why.into() },
                    },
                });
                continue;
            };
            if let Some(index) = earlier {
                let replaced = settings.remove(index);
                notes.push(superseded(replaced));
            }
            settings.push(Setting {
                key,
                shown,
                value,
                position,
            });
        }
        Ok(Self { settings, notes })
    }

    fn setting(&self, name: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key.name == name)
    }

    fn is_set(&self, name: &str) -> bool {
        self.setting(name).is_some()
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.setting(name).and_then(|s| s.value.as_str())
    }

    /// A text that is set and not blank.
    fn given_text(&self, name: &str) -> Option<&str> {
        self.text(name).filter(|text| !text.trim().is_empty())
    }

    fn flag(&self, name: &str) -> Option<bool> {
        self.setting(name).and_then(|s| s.value.as_bool())
    }

    fn whole(&self, name: &str) -> Option<i64> {
        self.setting(name).and_then(|s| s.value.as_i64())
    }

    fn count(&self, name: &str) -> Option<u64> {
        self.setting(name).and_then(|s| s.value.as_u64())
    }

    fn texts(&self, name: &str) -> Option<Vec<&str>> {
        self.setting(name)
            .and_then(|s| s.value.as_array())
            .map(|items| items.iter().filter_map(Value::as_str).collect())
    }

    /// Whether the key holds orchestrator's default.
    fn holds_default(&self, setting: &Setting) -> bool {
        serde_json::from_str::<Value>(setting.key.default)
            .is_ok_and(|default| default == setting.value)
    }
}

fn superseded(replaced: Setting) -> PlacedNote {
    PlacedNote {
        position: replaced.position,
        note: KeyNote {
            key: replaced.shown,
            outcome: NoteOutcome::Skipped {
                why: "given again later in the file: orchestrator uses the last one".into(),
            },
        },
    }
}

/// `value` checked against the key's Go type; `None` for null (Go's "no value").
fn checked_value(
    key: &KnownKey,
    shown: &str,
    value: Value,
    source_name: &str,
) -> Result<Option<Value>, ImportError> {
    let wrong = |key: String, found: &'static str, expected: &'static str| ImportError::WrongType {
        source_name: source_name.to_string(),
        key,
        expected,
        found,
    };
    if value.is_null() {
        return Ok(None);
    }
    match key.kind {
        TextList => {
            let Value::Array(items) = &value else {
                return Err(wrong(
                    shown.to_string(),
                    kind_of(&value),
                    key.kind.expected(),
                ));
            };
            if let Some((index, item)) = items.iter().enumerate().find(|(_, i)| !i.is_string()) {
                return Err(wrong(
                    format!("{shown}[{index}]"),
                    kind_of(item),
                    "text in quotes",
                ));
            }
        }
        TextMap => {
            let Value::Object(entries) = &value else {
                return Err(wrong(
                    shown.to_string(),
                    kind_of(&value),
                    key.kind.expected(),
                ));
            };
            if let Some((name, item)) = entries.iter().find(|(_, v)| !v.is_string()) {
                return Err(wrong(
                    format!("{shown}[{name:?}]"),
                    kind_of(item),
                    "text in quotes",
                ));
            }
        }
        kind if !kind.accepts(&value) => {
            return Err(wrong(shown.to_string(), kind_of(&value), kind.expected()));
        }
        _ => {}
    }
    Ok(Some(value))
}

// ---------------------------------------------------------------------------------------
// The pointsman configuration being written.

#[derive(Clone, Debug, PartialEq)]
enum TomlValue {
    Text(String),
    Integer(i64),
    Flag(bool),
    Texts(Vec<String>),
}

/// Sections in the order `config/pointsman.example.toml` has them.
const SECTIONS: [&str; 11] = [
    "mysql",
    "discovery",
    "analysis",
    "store",
    "api",
    "log",
    "recovery",
    "promotion",
    "hooks",
    "routing.consul",
    "ha",
];

#[derive(Default)]
struct TomlDraft {
    entries: Vec<(&'static str, String, TomlValue)>,
    /// Comments that tell the user what is left to do, per section.
    todos: Vec<(&'static str, String)>,
}

impl TomlDraft {
    fn set(&mut self, section: &'static str, key: &str, value: TomlValue) {
        match self
            .entries
            .iter_mut()
            .find(|(s, k, _)| *s == section && k == key)
        {
            Some(entry) => entry.2 = value,
            None => self.entries.push((section, key.to_string(), value)),
        }
    }

    fn todo(&mut self, section: &'static str, text: String) {
        self.todos.push((section, text));
    }

    fn render(&self, source_name: &str) -> String {
        let mut out = format!(
            "# pointsman configuration imported from the orchestrator configuration\n# {}\n\
             # The import's notes say, key by key, what was carried over, what differs and what\n\
             # was left out. Lines starting with \"# TODO\" need you. Check the result with\n\
             # `pointsman check-config --config FILE`.\n",
            comment_text(source_name)
        );
        for section in SECTIONS {
            let entries: Vec<_> = self
                .entries
                .iter()
                .filter(|(s, _, _)| *s == section)
                .collect();
            let todos: Vec<_> = self.todos.iter().filter(|(s, _)| *s == section).collect();
            if entries.is_empty() && todos.is_empty() {
                continue;
            }
            out.push_str(&format!("\n[{section}]\n"));
            for (_, text) in todos {
                out.push_str(&format!("# TODO: {}\n", comment_text(text)));
            }
            for (_, key, value) in entries {
                out.push_str(&format!("{key} = {}\n", render_value(value)));
            }
        }
        out
    }
}

fn render_value(value: &TomlValue) -> String {
    match value {
        TomlValue::Text(text) => toml_string(text),
        TomlValue::Integer(number) => number.to_string(),
        TomlValue::Flag(flag) => flag.to_string(),
        TomlValue::Texts(items) if items.len() < 2 => format!(
            "[{}]",
            items
                .iter()
                .map(|i| toml_string(i))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        TomlValue::Texts(items) => {
            let lines: String = items
                .iter()
                .map(|item| format!("    {},\n", toml_string(item)))
                .collect();
            format!("[\n{lines}]")
        }
    }
}

/// A TOML basic string: quotes, backslashes and control characters escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text fit for a `#` comment line: no line breaks or other control characters.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A whole number of seconds the way pointsman's durations read it: "90s", "5m", "1h",
/// "7days".
fn duration_text(seconds: u64) -> String {
    const DAY: u64 = 86_400;
    match seconds {
        s if s >= DAY && s % DAY == 0 => {
            let days = s / DAY;
            format!("{days}{}", if days == 1 { "day" } else { "days" })
        }
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn shown_duration(value: HumanDuration) -> String {
    duration_text(value.0.as_secs())
}

// ---------------------------------------------------------------------------------------
// The translation, one concern at a time.

struct Import<'a> {
    file: &'a OrchestratorFile,
    draft: TomlDraft,
    notes: Vec<PlacedNote>,
    noted: HashSet<&'static str>,
}

/// Placed after every key of the file.
const ABSENT: usize = usize::MAX;

/// Ranges `config` enforces, repeated here so an out-of-range value becomes a note
/// instead of a file that does not load.
const LONGEST_TIMEOUT: u64 = 3600;
const LONGEST_LAG: u64 = 7 * 86_400;
const SHORTEST_BLOCK: u64 = 60;
const LONGEST_BLOCK: u64 = 30 * 86_400;
const LONGEST_AUDIT_DAYS: u64 = 3652;

impl<'a> Import<'a> {
    fn new(file: &'a OrchestratorFile) -> Self {
        Self {
            file,
            draft: TomlDraft::default(),
            notes: Vec::new(),
            noted: HashSet::new(),
        }
    }

    fn note(&mut self, name: &'static str, outcome: NoteOutcome) {
        self.noted.insert(name);
        let (position, key) = match self.file.setting(name) {
            Some(setting) => (setting.position, setting.shown.clone()),
            None => (ABSENT, name.to_string()),
        };
        self.notes.push(PlacedNote {
            position,
            note: KeyNote { key, outcome },
        });
    }

    fn note_entry(&mut self, name: &'static str, index: usize, outcome: NoteOutcome) {
        self.noted.insert(name);
        let (position, key) = match self.file.setting(name) {
            Some(setting) => (setting.position, format!("{}[{index}]", setting.shown)),
            None => (ABSENT, format!("{name}[{index}]")),
        };
        self.notes.push(PlacedNote {
            position,
            note: KeyNote { key, outcome },
        });
    }

    fn translated(&mut self, name: &'static str, to: String) {
        self.note(name, NoteOutcome::Translated { to });
    }

    fn with_caveat(&mut self, name: &'static str, to: String, caveat: String) {
        self.note(name, NoteOutcome::TranslatedWithCaveat { to, caveat });
    }

    fn skipped(&mut self, name: &'static str, why: impl Into<String>) {
        self.note(name, NoteOutcome::Skipped { why: why.into() });
    }

    /// Notes `name` as holding orchestrator's default when it does; true if so.
    fn default_noted(&mut self, name: &'static str) -> bool {
        match self.file.setting(name) {
            Some(setting) if self.file.holds_default(setting) => {
                self.skipped(name, "orchestrator's default; nothing to translate");
                true
            }
            _ => false,
        }
    }

    /// `[api]`: ListenAddress, with ListenSocket and AuthenticationMethod deciding.
    fn api(&mut self) {
        let socket = self.file.given_text("ListenSocket").map(str::to_string);
        if let Some(socket) = &socket {
            self.skipped(
                "ListenSocket",
                format!("pointsman's API listens on TCP only; orchestrator served its API on {socket} alone, so api.listen stays 127.0.0.1:3000 (this machine only, as a socket is)"),
            );
        } else if self.file.is_set("ListenSocket") {
            self.skipped(
                "ListenSocket",
                "empty: orchestrator's default; nothing to translate",
            );
        }
        let authentication = self
            .file
            .given_text("AuthenticationMethod")
            .map(str::to_string);
        let Some(written) = self.file.text("ListenAddress").map(str::to_string) else {
            if socket.is_none() {
                self.skipped(
                    "ListenAddress",
                    "not in the file: orchestrator listened on :3000 on every interface, pointsman listens on 127.0.0.1:3000 (this machine only) unless api.listen says otherwise; to serve other machines set api.listen and api.token_file",
                );
            }
            return;
        };
        if socket.is_some() {
            self.skipped(
                "ListenAddress",
                "orchestrator did not listen on TCP, since ListenSocket is set",
            );
            return;
        }
        let (address, everywhere) = match listen_address(&written) {
            Ok(parsed) => parsed,
            Err(why) => {
                self.skipped("ListenAddress", why);
                return;
            }
        };
        if address.ip().to_canonical().is_loopback() {
            self.draft
                .set("api", "listen", TomlValue::Text(address.to_string()));
            self.translated("ListenAddress", format!("api.listen = \"{address}\""));
            return;
        }
        let ipv6 = if everywhere {
            format!(
                " (IPv4 only: orchestrator's \"{written}\" took IPv6 too; \"[::]:{}\" takes both)",
                address.port()
            )
        } else {
            String::new()
        };
        match authentication {
            None => {
                self.draft
                    .set("api", "listen", TomlValue::Text(address.to_string()));
                self.draft.set("api", "allow_open", TomlValue::Flag(true));
                self.with_caveat(
                    "ListenAddress",
                    format!("api.listen = \"{address}\" and api.allow_open = true"),
                    format!("orchestrator's API asked for no authentication, so anyone reaching port {} could fail over; pointsman refuses such an address without a token unless api.allow_open = true, which keeps it as open as it was. Better: set api.token_file (a bearer token; the CLI sends it with --token or POINTSMAN_TOKEN) and remove allow_open{ipv6}", address.port()),
                );
            }
            Some(method) => {
                let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port());
                self.draft
                    .set("api", "listen", TomlValue::Text(local.to_string()));
                self.draft.todo(
                    "api",
                    format!("orchestrator served \"{written}\" with {method} authentication; to serve other machines again, set listen = \"{address}\" and token_file = \"/etc/pointsman/api-token\" (a bearer token)"),
                );
                self.with_caveat(
                    "ListenAddress",
                    format!("api.listen = \"{local}\""),
                    format!("orchestrator asked for {method} authentication, which pointsman does not have (its API takes a bearer token), so the API stays on this machine: to serve others set api.listen = \"{address}\" and api.token_file{ipv6}"),
                );
            }
        }
    }

    /// `[log]`: Debug.
    fn logging(&mut self) {
        if self.file.flag("Debug") == Some(true) {
            self.draft.set(
                "log",
                "level",
                TomlValue::Text("info,pointsman=debug".into()),
            );
            self.translated("Debug", "log.level = \"info,pointsman=debug\"".into());
        } else {
            self.default_noted("Debug");
        }
    }

    /// `[mysql]`: the topology account and the connect timeout.
    fn mysql(&mut self) {
        let credentials_file = self
            .file
            .given_text("MySQLTopologyCredentialsConfigFile")
            .map(str::to_string);
        if let Some(path) = &credentials_file {
            self.draft.todo(
                "mysql",
                format!("orchestrator read user and password from the [client] section of {path}: set user to that user, put the password alone in a file (mode 0600) and set password_file to it"),
            );
            self.skipped(
                "MySQLTopologyCredentialsConfigFile",
                format!("pointsman cannot read a my.cnf-style file: it reads a password from a file that holds only the password. Put the [client] password of {path} alone in a file (mode 0600), set mysql.password_file to that file, and set mysql.user to the [client] user"),
            );
        } else {
            self.default_noted("MySQLTopologyCredentialsConfigFile");
        }

        match self.file.text("MySQLTopologyUser").map(str::to_string) {
            Some(user) if user.trim().is_empty() => {
                let default_user = MysqlConfig::default().user;
                self.skipped(
                    "MySQLTopologyUser",
                    format!("empty: pointsman needs a user, so mysql.user stays \"{default_user}\" (set it to the account orchestrator used)"),
                );
            }
            Some(user) => {
                self.draft
                    .set("mysql", "user", TomlValue::Text(user.clone()));
                let to = format!("mysql.user = \"{user}\"");
                match &credentials_file {
                    Some(path) => self.with_caveat(
                        "MySQLTopologyUser",
                        to,
                        format!("orchestrator took the user from the [client] section of {path} instead of this key: check that it is the same"),
                    ),
                    None => self.translated("MySQLTopologyUser", to),
                }
            }
            None => {}
        }

        if let Some(password) = self.file.text("MySQLTopologyPassword").map(str::to_string) {
            if let Some(path) = &credentials_file {
                self.skipped(
                    "MySQLTopologyPassword",
                    format!("orchestrator used the password in {path} instead, so this one is not carried over"),
                );
            } else if password.is_empty() {
                self.skipped(
                    "MySQLTopologyPassword",
                    "empty: orchestrator's default; pointsman logs in without a password too",
                );
            } else {
                self.topology_password(&password);
            }
        }

        if let Some(seconds) = self.file.whole("MySQLConnectTimeoutSeconds") {
            let default = shown_duration(MysqlConfig::default().connect_timeout);
            match u64::try_from(seconds) {
                Ok(s) if (1..=LONGEST_TIMEOUT).contains(&s) => {
                    let text = duration_text(s);
                    self.draft
                        .set("mysql", "connect_timeout", TomlValue::Text(text.clone()));
                    self.translated(
                        "MySQLConnectTimeoutSeconds",
                        format!("mysql.connect_timeout = \"{text}\""),
                    );
                }
                _ => self.skipped(
                    "MySQLConnectTimeoutSeconds",
                    format!("{seconds}s is outside pointsman's 1s..1h: every connect has a limit, so mysql.connect_timeout stays {default}"),
                ),
            }
        }
    }

    /// `MySQLTopologyPassword`: as written, or orchestrator's `${VARIABLE}` form as
    /// `password_env`. Its value is never shown.
    fn topology_password(&mut self, password: &str) {
        match environment_reference(password) {
            Some(Ok((variable, alone))) => {
                self.draft
                    .set("mysql", "password_env", TomlValue::Text(variable.clone()));
                self.draft.todo(
                    "mysql",
                    format!("pointsman reads the password from the variable {variable} at start-up (check-config fails while it is unset)"),
                );
                let to = format!("mysql.password_env = \"{variable}\"");
                let mut caveat = format!("pointsman reads ${{{variable}}} as orchestrator did, and refuses to start while it is unset; hooks never see it");
                if !alone {
                    caveat.push_str(
                        "; orchestrator dropped the text around ${...}, and so does this",
                    );
                }
                self.with_caveat("MySQLTopologyPassword", to, caveat);
            }
            Some(Err(())) => self.skipped(
                "MySQLTopologyPassword",
                "orchestrator read it from the environment variable named inside ${...}, but that is no variable name pointsman can use: set mysql.password_env to the variable that holds the password",
            ),
            None => {
                self.draft.set(
                    "mysql",
                    "password",
                    TomlValue::Text(password.to_string()),
                );
                self.with_caveat(
                    "MySQLTopologyPassword",
                    "mysql.password (the value is not shown)".into(),
                    "it is written into the TOML as the JSON held it: better, put it alone in a file (mode 0600) and use mysql.password_file".into(),
                );
            }
        }
    }

    /// `[discovery]`: seeds, poll interval, concurrency.
    fn discovery(&mut self) {
        let default_port = self.file.whole("DefaultInstancePort").unwrap_or(3306);
        let mut seeds: Vec<String> = Vec::new();
        let mut completed = false;
        if let Some(written) = self.file.texts("DiscoverySeeds") {
            let written: Vec<String> = written.into_iter().map(str::to_string).collect();
            for (index, seed) in written.iter().enumerate() {
                match seed_address(seed, default_port) {
                    Ok((address, port_added)) => {
                        completed |= port_added;
                        if !seeds.contains(&address) {
                            seeds.push(address);
                        }
                    }
                    Err(why) => {
                        self.note_entry("DiscoverySeeds", index, NoteOutcome::Skipped { why })
                    }
                }
            }
            if !seeds.is_empty() {
                self.draft
                    .set("discovery", "seeds", TomlValue::Texts(seeds.clone()));
                let to = format!("discovery.seeds = [{}]", quoted_list(&seeds));
                if completed {
                    self.with_caveat(
                        "DiscoverySeeds",
                        to,
                        format!("seeds without a port got DefaultInstancePort ({default_port}), as orchestrator did"),
                    );
                } else {
                    self.translated("DiscoverySeeds", to);
                }
            } else if written.is_empty() {
                self.skipped(
                    "DiscoverySeeds",
                    "empty: list one instance of each cluster in discovery.seeds (`orchestrator-client -c all-clusters-masters` prints them)",
                );
            }
        }
        if seeds.is_empty() {
            self.draft.todo(
                "discovery",
                "list one host:port of each cluster in seeds = [...] (`orchestrator-client -c all-clusters-masters` prints them); pointsman finds the rest".into(),
            );
            if !self.file.is_set("DiscoverySeeds") {
                self.skipped(
                    "DiscoverySeeds",
                    "not in the file: orchestrator learnt its instances from `orchestrator-client -c discover` and kept them in its backend; pointsman starts from discovery.seeds: list one instance of each cluster there (`orchestrator-client -c all-clusters-masters` prints them)",
                );
            }
        }

        if let Some(seconds) = self.file.count("InstancePollSeconds") {
            if (1..=LONGEST_TIMEOUT).contains(&seconds) {
                let text = duration_text(seconds);
                self.draft
                    .set("discovery", "poll_interval", TomlValue::Text(text.clone()));
                self.translated(
                    "InstancePollSeconds",
                    format!("discovery.poll_interval = \"{text}\""),
                );
            } else {
                self.skipped(
                    "InstancePollSeconds",
                    format!("{seconds}s is outside pointsman's 1s..1h, so discovery.poll_interval stays 1s"),
                );
            }
        }

        if let Some(concurrency) = self.file.count("DiscoveryMaxConcurrency") {
            match i64::try_from(concurrency) {
                Ok(n) if n >= 1 => {
                    self.draft
                        .set("discovery", "max_concurrent_probes", TomlValue::Integer(n));
                    self.translated(
                        "DiscoveryMaxConcurrency",
                        format!("discovery.max_concurrent_probes = {n}"),
                    );
                }
                _ => self.skipped(
                    "DiscoveryMaxConcurrency",
                    format!("{concurrency} is not a number of probes pointsman takes (1 or more), so discovery.max_concurrent_probes stays 32"),
                ),
            }
        }
    }

    /// `[analysis]` lag_warning and `[store]` keep_audit.
    fn analysis_and_store(&mut self) {
        if let Some(seconds) = self.file.whole("ReasonableReplicationLagSeconds") {
            match u64::try_from(seconds) {
                Ok(s) if (1..=LONGEST_LAG).contains(&s) => {
                    let text = duration_text(s);
                    self.draft
                        .set("analysis", "lag_warning", TomlValue::Text(text.clone()));
                    self.translated(
                        "ReasonableReplicationLagSeconds",
                        format!("analysis.lag_warning = \"{text}\""),
                    );
                }
                _ => self.skipped(
                    "ReasonableReplicationLagSeconds",
                    format!("{seconds}s is outside pointsman's 1s..7days, so analysis.lag_warning stays 10s"),
                ),
            }
        }
        if let Some(days) = self.file.count("AuditPurgeDays") {
            if (1..=LONGEST_AUDIT_DAYS).contains(&days) {
                let text = duration_text(days * 86_400);
                self.draft
                    .set("store", "keep_audit", TomlValue::Text(text.clone()));
                self.translated("AuditPurgeDays", format!("store.keep_audit = \"{text}\""));
            } else {
                self.skipped(
                    "AuditPurgeDays",
                    format!("{days} days is outside pointsman's 1day..10years, so store.keep_audit stays 90days"),
                );
            }
        }
    }

    /// `recovery.auto_clusters` from RecoverMasterClusterFilters, entry by entry.
    fn recovery_filters(&mut self) {
        const KEY: &str = "RecoverMasterClusterFilters";
        let Some(filters) = self.file.texts(KEY) else {
            return;
        };
        let filters: Vec<String> = filters.into_iter().map(str::to_string).collect();
        if filters.is_empty() {
            self.skipped(
                KEY,
                "empty: no automatic recovery, as pointsman's default (an empty recovery.auto_clusters)",
            );
            return;
        }
        let mut translated = Vec::new();
        for (index, filter) in filters.iter().enumerate() {
            match cluster_filter(filter) {
                Ok((entry, caveat)) => {
                    let to = format!("recovery.auto_clusters entry \"{entry}\"");
                    let outcome = match caveat {
                        Some(caveat) => NoteOutcome::TranslatedWithCaveat { to, caveat },
                        None => NoteOutcome::Translated { to },
                    };
                    self.note_entry(KEY, index, outcome);
                    translated.push(entry);
                }
                Err(why) => self.note_entry(KEY, index, NoteOutcome::Skipped { why }),
            }
        }
        if !translated.is_empty() {
            self.draft
                .set("recovery", "auto_clusters", TomlValue::Texts(translated));
        }
    }

    /// `recovery.block_period`: RecoveryPeriodBlockSeconds, or RecoveryPeriodBlockMinutes
    /// where orchestrator falls back to it (seconds set to 0).
    fn block_period(&mut self) {
        const SECONDS: &str = "RecoveryPeriodBlockSeconds";
        const MINUTES: &str = "RecoveryPeriodBlockMinutes";
        let seconds_set = self.file.whole(SECONDS);
        let minutes_set = self.file.whole(MINUTES);
        // orchestrator: the seconds (3600 by default) count, unless they are 0 and the
        // minutes (60 by default) are not.
        let seconds = seconds_set.unwrap_or(3600);
        let minutes = minutes_set.unwrap_or(60);
        let uses_minutes = seconds == 0 && minutes > 0;
        if minutes_set.is_some() && !uses_minutes {
            let why = if seconds_set.is_none() {
                "orchestrator ignores it while RecoveryPeriodBlockSeconds keeps its default of 3600 (the minutes count only when the seconds are set to 0): the block stays 1h, as pointsman's default"
            } else if seconds == 0 {
                "0 like RecoveryPeriodBlockSeconds: orchestrator blocked nothing after a recovery"
            } else {
                "orchestrator uses RecoveryPeriodBlockSeconds instead (the minutes count only when the seconds are 0)"
            };
            self.skipped(MINUTES, why);
        }
        if seconds_set.is_none() {
            return;
        }
        let mut notes_key = SECONDS;
        let mut differences = Vec::new();
        let effective = if uses_minutes {
            match minutes_set {
                Some(_) => {
                    self.skipped(
                        SECONDS,
                        "0: orchestrator then takes RecoveryPeriodBlockMinutes instead",
                    );
                    notes_key = MINUTES;
                }
                None => differences.push(
                    "0 makes orchestrator take RecoveryPeriodBlockMinutes, 60 by default"
                        .to_string(),
                ),
            }
            minutes.saturating_mul(60)
        } else {
            seconds
        };
        let value = match u64::try_from(effective) {
            Ok(s) if (SHORTEST_BLOCK..=LONGEST_BLOCK).contains(&s) => s,
            Ok(s) if s > LONGEST_BLOCK => {
                differences.push("pointsman blocks for at most 30days (`pointsman ack CLUSTER` lifts a block early)".into());
                LONGEST_BLOCK
            }
            _ => {
                let blocked = if effective <= 0 {
                    "nothing".to_string()
                } else {
                    format!("for only {effective}s")
                };
                differences.push(format!("orchestrator blocked {blocked} after a recovery; pointsman always blocks for at least 1m (`pointsman ack CLUSTER` lifts a block early)"));
                SHORTEST_BLOCK
            }
        };
        let text = duration_text(value);
        self.draft
            .set("recovery", "block_period", TomlValue::Text(text.clone()));
        let to = format!("recovery.block_period = \"{text}\"");
        if differences.is_empty() {
            self.translated(notes_key, to);
        } else {
            self.with_caveat(notes_key, to, differences.join("; "));
        }
    }

    /// `[promotion]`: ignore_hosts and max_lag.
    fn promotion(&mut self) {
        const IGNORE: &str = "PromotionIgnoreHostnameFilters";
        if let Some(filters) = self.file.texts(IGNORE) {
            let filters: Vec<String> = filters.into_iter().map(str::to_string).collect();
            if filters.is_empty() {
                self.skipped(
                    IGNORE,
                    "empty: orchestrator's default; nothing to translate",
                );
            }
            let mut patterns = Vec::new();
            for (index, filter) in filters.iter().enumerate() {
                match ignored_host_pattern(filter) {
                    Ok((pattern, caveat)) => {
                        let to = format!("promotion.ignore_hosts entry \"{pattern}\"");
                        let outcome = match caveat {
                            Some(caveat) => NoteOutcome::TranslatedWithCaveat { to, caveat },
                            None => NoteOutcome::Translated { to },
                        };
                        self.note_entry(IGNORE, index, outcome);
                        patterns.push(pattern);
                    }
                    Err(why) => self.note_entry(IGNORE, index, NoteOutcome::Skipped { why }),
                }
            }
            if !patterns.is_empty() {
                self.draft
                    .set("promotion", "ignore_hosts", TomlValue::Texts(patterns));
            }
        }

        const LAG: &str = "FailMasterPromotionOnLagMinutes";
        let default_lag = shown_duration(PromotionConfig::default().max_lag);
        match self.file.count(LAG) {
            None => {}
            Some(0) => self.skipped(
                LAG,
                format!("0: orchestrator set no lag limit on promotion; pointsman always has one, so promotion.max_lag stays {default_lag} (a replica further behind, or delayed more, is not promoted): raise it (up to 7days) if lagging replicas must be promotable"),
            ),
            Some(minutes) => {
                // orchestrator refused a lag of N minutes or more; pointsman refuses more
                // than max_lag, in whole seconds: one second under.
                let limit = minutes.saturating_mul(60).saturating_sub(1);
                let (seconds, clamped) = if limit > LONGEST_LAG {
                    (LONGEST_LAG, true)
                } else {
                    (limit.max(1), false)
                };
                let text = duration_text(seconds);
                self.draft
                    .set("promotion", "max_lag", TomlValue::Text(text.clone()));
                let mut caveat = format!("orchestrator chose a replica first and then failed the whole recovery when its lag (by ReplicationLagQuery) was {minutes} minute(s) or more; pointsman passes over every replica further behind than max_lag (by Seconds_Behind_Source, and a configured SQL_Delay counts) and promotes another eligible one, and refuses a switchover to such a replica. One second under {minutes}m, as lag is counted in whole seconds");
                if clamped {
                    caveat.push_str("; pointsman's longest max_lag is 7days");
                }
                self.with_caveat(LAG, format!("promotion.max_lag = \"{text}\""), caveat);
            }
        }
    }

    /// `[hooks]`: every process list, commands kept as written.
    fn hooks(&mut self) {
        let timeout = shown_duration(HooksConfig::default().timeout);
        let common = format!("each command runs under /bin/sh, not bash, and is killed after hooks.timeout ({timeout}; orchestrator waited without limit)");

        let lists: Vec<(&'static str, Vec<String>)> = [
            "OnFailureDetectionProcesses",
            "PreGracefulTakeoverProcesses",
            "PreFailoverProcesses",
            "PostMasterFailoverProcesses",
            "PostFailoverProcesses",
            "PostUnsuccessfulFailoverProcesses",
            "PostGracefulTakeoverProcesses",
            "PostIntermediateMasterFailoverProcesses",
        ]
        .into_iter()
        .map(|name| (name, self.runnable_commands(name)))
        .collect();
        let commands = |name: &str| -> Vec<String> {
            lists
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| c.clone())
                .unwrap_or_default()
        };

        let plan: [(HookPoint, &[&str]); 6] = [
            (
                HookPoint::OnFailureDetected,
                &["OnFailureDetectionProcesses"],
            ),
            (HookPoint::PreFailover, &["PreFailoverProcesses"]),
            (
                HookPoint::PostFailover,
                &["PostMasterFailoverProcesses", "PostFailoverProcesses"],
            ),
            (
                HookPoint::PostUnsuccessfulFailover,
                &["PostUnsuccessfulFailoverProcesses"],
            ),
            // orchestrator's graceful takeover ran the failover hooks too, in between.
            (
                HookPoint::PreSwitchover,
                &["PreGracefulTakeoverProcesses", "PreFailoverProcesses"],
            ),
            (
                HookPoint::PostSwitchover,
                &[
                    "PostMasterFailoverProcesses",
                    "PostFailoverProcesses",
                    "PostGracefulTakeoverProcesses",
                ],
            ),
        ];
        for (point, sources) in plan {
            let all: Vec<String> = sources.iter().flat_map(|name| commands(name)).collect();
            if !all.is_empty() {
                self.draft.set("hooks", point.name(), TomlValue::Texts(all));
            }
        }

        let described: [(&'static str, &[HookPoint], &str); 7] = [
            (
                "OnFailureDetectionProcesses",
                &[HookPoint::OnFailureDetected],
                "pointsman runs these in the background: they cannot stop a recovery, while in orchestrator a failing one did. A check that must be able to stop a failover belongs in hooks.pre_failover",
            ),
            (
                "PreGracefulTakeoverProcesses",
                &[HookPoint::PreSwitchover],
                "",
            ),
            (
                "PreFailoverProcesses",
                &[HookPoint::PreFailover, HookPoint::PreSwitchover],
                "a failing command aborts the failover, as in orchestrator. orchestrator also ran these during a graceful takeover, so they are in hooks.pre_switchover too, after PreGracefulTakeoverProcesses (there they run before the primary goes read_only; orchestrator ran them just after): remove them there if a planned switchover must not run them",
            ),
            (
                "PostMasterFailoverProcesses",
                &[HookPoint::PostFailover, HookPoint::PostSwitchover],
                "pointsman's post_failover runs after every successful recovery, re-pointing the replicas of a dead intermediate primary included ({failureType} and ORC_FAILURE_TYPE are DeadIntermediateMaster then). orchestrator also ran these after a graceful takeover, so they are in hooks.post_switchover too",
            ),
            (
                "PostFailoverProcesses",
                &[HookPoint::PostFailover, HookPoint::PostSwitchover],
                "they run after PostMasterFailoverProcesses, as in orchestrator. orchestrator also ran these after a graceful takeover, so they are in hooks.post_switchover too",
            ),
            (
                "PostUnsuccessfulFailoverProcesses",
                &[HookPoint::PostUnsuccessfulFailover],
                "pointsman also runs these when a pre_failover hook vetoed the failover (orchestrator ran nothing after a veto), and runs nothing after a failed switchover",
            ),
            (
                "PostGracefulTakeoverProcesses",
                &[HookPoint::PostSwitchover],
                "",
            ),
        ];
        for (name, points, difference) in described {
            let Some(setting) = self.file.setting(name) else {
                continue;
            };
            if self.file.holds_default(setting) {
                self.skipped(name, "empty: nothing to translate");
                continue;
            }
            let runnable = commands(name);
            if runnable.is_empty() {
                self.skipped(name, "only empty commands: nothing to run");
                continue;
            }
            let to = points
                .iter()
                .map(|p| format!("hooks.{}", p.name()))
                .collect::<Vec<_>>()
                .join(" and ");
            let caveat = if difference.is_empty() {
                common.clone()
            } else {
                format!("{difference}; {common}")
            };
            self.with_caveat(name, to, caveat);
        }

        const INTERMEDIATE: &str = "PostIntermediateMasterFailoverProcesses";
        if let Some(setting) = self.file.setting(INTERMEDIATE) {
            if self.file.holds_default(setting) {
                self.skipped(INTERMEDIATE, "empty: nothing to translate");
            } else {
                self.skipped(
                    INTERMEDIATE,
                    "pointsman has no hook point for intermediate recoveries alone: hooks.post_failover runs after them too, with {failureType} and ORC_FAILURE_TYPE set to DeadIntermediateMaster: a command that must run only then belongs there, testing the failure type first",
                );
            }
        }

        if let Some(shell) = self.file.text("ProcessesShellCommand").map(str::to_string) {
            self.skipped(
                "ProcessesShellCommand",
                format!("pointsman runs every hook with /bin/sh -c, not {shell}: a command that needs {shell} can call it itself, like {shell} -c '...'"),
            );
        }
    }

    /// The non-blank commands of a process list; each blank one gets its own note.
    fn runnable_commands(&mut self, name: &'static str) -> Vec<String> {
        let commands: Vec<String> = self
            .file
            .texts(name)
            .unwrap_or_default()
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut runnable = Vec::new();
        for (index, command) in commands.into_iter().enumerate() {
            if command.trim().is_empty() {
                self.note_entry(
                    name,
                    index,
                    NoteOutcome::Skipped {
                        why: "an empty command: orchestrator ran nothing for it, and pointsman refuses empty commands".into(),
                    },
                );
            } else {
                runnable.push(command);
            }
        }
        runnable
    }

    /// `[routing.consul]` from the Consul keys, and `[ha]` from RaftEnabled.
    fn consul_and_ha(&mut self) {
        let consul = self.consul();
        for name in [
            "ConsulScheme",
            "ConsulAclToken",
            "ConsulKVStoreProvider",
            "ConsulCrossDataCenterDistribution",
            "ConsulMaxKVsPerTransaction",
            "KVClusterMasterPrefix",
        ] {
            if consul.is_none() && self.file.is_set(name) && !self.noted.contains(name) {
                self.skipped(
                    name,
                    "there is no usable ConsulAddress, so orchestrator wrote nothing to Consul and pointsman will not either",
                );
            }
        }
        if let Some(zookeeper) = self.file.given_text("ZkAddress").map(str::to_string) {
            self.skipped(
                "ZkAddress",
                format!("pointsman publishes primaries to Consul KV, its own DNS and ProxySQL, not to ZooKeeper ({zookeeper}): point the readers of those keys at Consul (routing.consul) instead"),
            );
        } else {
            self.default_noted("ZkAddress");
        }

        match self.file.flag("RaftEnabled") {
            Some(true) if consul.is_some() => {
                self.draft.set("ha", "enabled", TomlValue::Flag(true));
                self.with_caveat(
                    "RaftEnabled",
                    "ha.enabled = true".into(),
                    "orchestrator's raft nodes elected a leader among themselves; pointsman agents take a leader lease in the Consul of routing.consul instead: run this configuration on each agent (RaftNodes are not needed)".into(),
                );
            }
            Some(true) => self.skipped(
                "RaftEnabled",
                "pointsman's HA ([ha]) is a leader lease in Consul and this file names no usable Consul: set routing.consul.address and [ha] enabled = true on every agent",
            ),
            Some(false) => {
                self.default_noted("RaftEnabled");
            }
            None => {}
        }
    }

    /// The Consul address pointsman will use, if the file names a usable one.
    fn consul(&mut self) -> Option<String> {
        let written = self.file.text("ConsulAddress").map(str::to_string)?;
        if written.trim().is_empty() {
            self.skipped(
                "ConsulAddress",
                "empty: orchestrator used no Consul; nothing to translate",
            );
            return None;
        }
        let scheme = self.file.text("ConsulScheme").unwrap_or("http").to_string();
        if scheme != "http" && scheme != "https" {
            self.skipped(
                "ConsulScheme",
                format!("\"{scheme}\" is neither http nor https, the two Consul speaks"),
            );
            self.skipped(
                "ConsulAddress",
                "ConsulScheme is neither http nor https: set routing.consul.address to the Consul agent's URL, like \"http://127.0.0.1:8500\"",
            );
            return None;
        }
        let written = written.trim();
        let (address, with_scheme) = if written.contains("://") {
            (written.to_string(), true)
        } else {
            (format!("{scheme}://{written}"), false)
        };
        let usable = (address.starts_with("http://") || address.starts_with("https://"))
            && reqwest::Url::parse(&address).is_ok();
        if !usable {
            self.skipped(
                "ConsulAddress",
                format!("\"{address}\" is not a URL pointsman can use: set routing.consul.address to the Consul agent's URL, like \"http://127.0.0.1:8500\""),
            );
            return None;
        }
        self.draft.set(
            "routing.consul",
            "address",
            TomlValue::Text(address.clone()),
        );
        self.draft
            .set("routing.consul", "services", TomlValue::Flag(false));
        self.draft.todo(
            "routing.consul",
            "pointsman writes the Consul keys only for clusters with an alias: add one [[cluster]] table (alias and instances) per cluster, aliased as orchestrator showed it, so the keys keep their names".into(),
        );
        let mut caveat = "pointsman writes orchestrator's keys (<kv_prefix>/<alias> and /hostname, /port, /ipv4, /ipv6) for clusters with a [[cluster]] alias only, and keeps them right all the time rather than at failover only: add one [[cluster]] per cluster, aliased as in orchestrator. routing.consul.services = false, since orchestrator registered no Consul services (set it true to have them)".to_string();
        if with_scheme {
            caveat.push_str(&format!(
                "; the address already had a scheme, so ConsulScheme ({scheme}) was not added"
            ));
        }
        self.with_caveat(
            "ConsulAddress",
            format!("routing.consul.address = \"{address}\""),
            caveat,
        );

        if self.file.is_set("ConsulScheme") {
            if address.starts_with("https://") {
                self.with_caveat(
                    "ConsulScheme",
                    format!("the scheme of routing.consul.address (\"{address}\")"),
                    "orchestrator did not check Consul's certificate over https; pointsman does: set routing.consul.ca_file if a private CA signed it".into(),
                );
            } else {
                self.translated(
                    "ConsulScheme",
                    format!("the scheme of routing.consul.address (\"{address}\")"),
                );
            }
        }

        match self.file.text("ConsulAclToken").map(str::to_string) {
            Some(token) if !token.is_empty() => {
                self.draft
                    .set("routing.consul", "token", TomlValue::Text(token));
                self.with_caveat(
                    "ConsulAclToken",
                    "routing.consul.token (the value is not shown)".into(),
                    "it is written into the TOML as the JSON held it: better, put it alone in a file (mode 0600) and use routing.consul.token_file".into(),
                );
            }
            Some(_) => self.skipped("ConsulAclToken", "empty: no token, as pointsman's default"),
            None => {}
        }

        if let Some(prefix) = self.file.text("KVClusterMasterPrefix").map(str::to_string) {
            match kv_prefix(&prefix) {
                Ok((translated, changed)) => {
                    let to = format!("routing.consul.kv_prefix = \"{translated}\"");
                    self.draft
                        .set("routing.consul", "kv_prefix", TomlValue::Text(translated));
                    if changed {
                        self.with_caveat(
                            "KVClusterMasterPrefix",
                            to,
                            "pointsman's prefix has no leading '/', so the keys are <kv_prefix>/<alias> without it: check that their readers (consul-template) ask for those names".into(),
                        );
                    } else {
                        self.translated("KVClusterMasterPrefix", to);
                    }
                }
                Err(why) => self.skipped("KVClusterMasterPrefix", why),
            }
        }

        if let Some(provider) = self.file.text("ConsulKVStoreProvider").map(str::to_string) {
            let why = if provider == "consul" || provider == "consul-txn" {
                "pointsman always writes a cluster's keys in one Consul transaction (/v1/txn), guarded by a check on its own key; nothing to set".to_string()
            } else {
                format!("\"{provider}\" is not a provider orchestrator knows (consul, consul-txn); pointsman always writes in one Consul transaction")
            };
            self.skipped("ConsulKVStoreProvider", why);
        }
        if self.file.is_set("ConsulMaxKVsPerTransaction") {
            self.skipped(
                "ConsulMaxKVsPerTransaction",
                "pointsman writes each cluster's keys in a transaction of its own; nothing to set",
            );
        }
        match self.file.flag("ConsulCrossDataCenterDistribution") {
            Some(true) => self.skipped(
                "ConsulCrossDataCenterDistribution",
                "pointsman writes the keys to one datacenter only (routing.consul.datacenter, by default the agent's own): replicate them to the others another way (consul-replicate), or run an agent per datacenter",
            ),
            Some(false) => {
                self.default_noted("ConsulCrossDataCenterDistribution");
            }
            None => {}
        }
        Some(address)
    }

    /// orchestrator's backend: it holds the instances, which an offline import cannot
    /// read.
    fn backend(&mut self) {
        let seeds_hint = "; orchestrator's backend also holds every instance it found, which this import does not read: list one instance of each cluster in discovery.seeds (`orchestrator-client -c all-clusters-masters` prints them)";
        for name in ["MySQLOrchestratorHost", "SQLite3DataFile"] {
            if self.file.given_text(name).is_some() {
                self.skipped(name, format!("{BACKEND}{seeds_hint}"));
            } else if self.file.is_set(name) {
                self.default_noted(name);
            }
        }
    }

    /// Every key no method noted: its table reason, or that it holds the default.
    fn everything_else(&mut self) {
        let file = self.file;
        for setting in &file.settings {
            let name = setting.key.name;
            if self.noted.contains(name) {
                continue;
            }
            if file.holds_default(setting) {
                self.skipped(name, "orchestrator's default; nothing to translate");
                continue;
            }
            let why = match setting.key.handling {
                Skip(reason) => reason,
                // Every Translate key is noted above; this is the last guard.
                Translate => NO_SETTING,
            };
            self.skipped(name, why);
        }
    }

    fn finish(self, source_name: &str) -> Imported {
        let mut notes: Vec<PlacedNote> = self.file.notes.clone();
        notes.extend(self.notes);
        // Stable: notes of one key keep the order they were made in.
        notes.sort_by_key(|placed| placed.position);
        Imported {
            toml: self.draft.render(source_name),
            notes: notes.into_iter().map(|placed| placed.note).collect(),
        }
    }
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("\"{item}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------
// Single values.

/// orchestrator's ListenAddress (Go's `net.Listen` form) as an address pointsman can
/// bind, and whether it meant every interface (an empty host).
fn listen_address(written: &str) -> Result<(SocketAddr, bool), String> {
    let Some((host, port)) = written.trim().rsplit_once(':') else {
        return Err(format!(
            "\"{written}\" has no port: set api.listen to an address like \"127.0.0.1:3000\""
        ));
    };
    let port = match port.parse::<u16>() {
        Ok(port) if port != 0 => port,
        _ => {
            return Err(format!(
                "\"{written}\": the port \"{port}\" is not a number from 1 to 65535: set api.listen to an address like \"127.0.0.1:3000\""
            ))
        }
    };
    if host.is_empty() {
        return Ok((
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            true,
        ));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok((SocketAddr::new(ip, port), false));
    }
    if bare.eq_ignore_ascii_case("localhost") {
        return Ok((
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            false,
        ));
    }
    Err(format!(
        "\"{written}\" names the host \"{host}\", and pointsman listens on an IP address: set api.listen to the address that name stands for, like \"10.0.0.5:{port}\""
    ))
}

/// orchestrator replaces a password holding `${NAME}` by the variable NAME (the first
/// `${` to the last `}`): `Some(Ok((NAME, whether nothing surrounds it)))`, `Some(Err)`
/// when what is inside is no variable name, `None` for a plain password.
fn environment_reference(password: &str) -> Option<Result<(String, bool), ()>> {
    let start = password.find("${")?;
    let end = password.rfind('}').filter(|end| *end > start + 1)?;
    let name = &password[start + 2..end];
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Some(Err(()));
    }
    let alone = start == 0 && end == password.len() - 1;
    Some(Ok((name.to_string(), alone)))
}

/// A DiscoverySeeds entry as pointsman writes a seed, and whether the port was added.
fn seed_address(seed: &str, default_port: i64) -> Result<(String, bool), String> {
    let key: InstanceKey = seed
        .parse()
        .map_err(|why: String| format!("not an address pointsman reads ({why})"))?;
    let text = seed.trim();
    let port_given = match text.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => text
            .rsplit_once(':')
            .is_some_and(|(host, _)| !host.contains(':')),
    };
    let key = if port_given {
        key
    } else {
        match u16::try_from(default_port) {
            Ok(port) if port != 0 => InstanceKey::new(key.host, port),
            _ => {
                return Err(format!(
                    "no port, and DefaultInstancePort ({default_port}) is no port: add the port to the seed in discovery.seeds"
                ))
            }
        }
    };
    let address = key.to_string();
    InstanceKey::parse_with_port(&address)
        .map(|_| (address, !port_given))
        .map_err(|why| format!("not a seed pointsman takes: {why}"))
}

/// What is wrong with `pattern` as a regex pointsman compiles, said in one line.
fn regex_problem(pattern: &str) -> Option<String> {
    regex::Regex::new(pattern).err().map(|error| match &error {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("error: "))
            .unwrap_or(text)
            .to_string(),
        _ => error.to_string(),
    })
}

/// One RecoverMasterClusterFilters entry as a `recovery.auto_clusters` entry, with what
/// differs; or why it cannot be carried over.
///
/// orchestrator matches a filter against the cluster's name (its primary's host:port)
/// and its alias, which is that name when the cluster has none: `*` is every cluster,
/// `alias=X` an alias equal to X, `alias~=P` an alias matching P, and anything else
/// equals the name or the alias or matches the name as a regex. pointsman's cluster name
/// is the alias when one applies, else the primary's host:port — orchestrator's alias.
fn cluster_filter(filter: &str) -> Result<(String, Option<String>), String> {
    const ALIASES: &str = "pointsman learns aliases from [[cluster]] tables: add one per aliased cluster (orchestrator's came from ClusterNameToAlias, DetectClusterAliasQuery or set-cluster-alias)";
    if filter.is_empty() {
        return Err("an empty filter matches no cluster in orchestrator, and pointsman would read it as a regex matching every cluster: left out".into());
    }
    if filter == "*" {
        return Ok((".*".into(), None));
    }
    if let Some(alias) = filter.strip_prefix("alias=") {
        if alias.is_empty() {
            return Err("\"alias=\" with no alias matches no cluster: left out".into());
        }
        if alias.contains(':') {
            // orchestrator's alias of a cluster without one is its name, host:port.
            let pattern = format!("^{}$", regex::escape(alias));
            return Ok((pattern, Some(format!("\"{alias}\" reads as a cluster's name (host:port), which is its alias in orchestrator when it has no other; pointsman's alias= matches real aliases only, so this is an anchored regex on the name instead"))));
        }
        return Ok((filter.to_string(), Some(ALIASES.into())));
    }
    if let Some(pattern) = filter.strip_prefix("alias~=") {
        if let Some(problem) = regex_problem(pattern) {
            return Err(format!("pointsman cannot compile \"{pattern}\" as a regex ({problem}): write one it can, matched against a cluster's alias (or host:port when it has none)"));
        }
        // pointsman would read "alias=..." as an exact alias; "(?:)" keeps it a regex.
        let entry = if pattern.starts_with("alias=") {
            format!("(?:){pattern}")
        } else {
            pattern.to_string()
        };
        return Ok((entry, Some(format!("a regex on the alias, which pointsman matches against its cluster name (the alias, or the primary's host:port when there is none), as orchestrator did; {ALIASES}"))));
    }
    if let Some(problem) = regex_problem(filter) {
        return Err(format!("pointsman cannot compile \"{filter}\" as a regex ({problem}): write one it can, matched against the primary's host:port"));
    }
    Ok((filter.to_string(), Some("a regex on the cluster name: the same as in orchestrator for a cluster without a [[cluster]] alias (its primary's host:port); for a cluster with one, pointsman matches the alias instead of host:port, and also aliases that merely contain a plain word (orchestrator wanted the whole alias)".into())))
}

/// One PromotionIgnoreHostnameFilters entry as a `promotion.ignore_hosts` regex (on
/// `host:port`), with a warning if any; or why it cannot be carried over. orchestrator
/// compares an IP address with the host exactly and matches anything else as a regex
/// against host:port.
fn ignored_host_pattern(filter: &str) -> Result<(String, Option<String>), String> {
    if let Ok(ip) = filter.parse::<IpAddr>() {
        let host = match ip {
            IpAddr::V4(_) => regex::escape(filter),
            IpAddr::V6(_) => format!(r"\[{}\]", regex::escape(filter)),
        };
        return Ok((format!("^{host}:[0-9]+$"), None));
    }
    if let Some(problem) = regex_problem(filter) {
        return Err(format!("pointsman cannot compile \"{filter}\" as a regex ({problem}): write one it can, matched against host:port"));
    }
    let caveat = filter.is_empty().then(|| {
        "an empty pattern matches every replica, so none can ever be promoted (as in orchestrator): remove it unless that is meant".to_string()
    });
    Ok((filter.to_string(), caveat))
}

/// KVClusterMasterPrefix as pointsman's kv_prefix (no '/' at either end), and whether
/// the keys' names change (a leading '/' dropped).
fn kv_prefix(written: &str) -> Result<(String, bool), String> {
    let trimmed = written.trim_matches('/');
    if trimmed.is_empty() {
        return Err(format!("\"{written}\" puts the keys at Consul's root, which pointsman cannot (routing.consul.kv_prefix must not be empty): choose a prefix, and point the keys' readers at it"));
    }
    let valid = trimmed
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ",-_./".contains(c));
    if !valid {
        return Err(format!("\"{written}\" holds characters pointsman does not take in routing.consul.kv_prefix (letters, digits and ,-_./): choose such a prefix"));
    }
    // orchestrator trims trailing slashes itself and adds one; only a leading one
    // changes the keys' names.
    Ok((trimmed.to_string(), written.starts_with('/')))
}

#[cfg(test)]
mod tests;
