//! Wall-clock instants as they appear in the API and the store: RFC 3339 text in
//! UTC with millisecond precision, so a human reading JSON sees a date, not a number.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::SystemTime;

/// Formats an instant the way every surface of pointsman shows it.
pub fn format(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

pub fn serialize<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*at))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
}

/// The same for optional instants (`null` when absent).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        at: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_some(&format(*at)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|t| humantime::parse_rfc3339(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}
