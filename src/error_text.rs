//! How an error reads to a person: its message and each cause it does not already
//! say, every part once. Drivers and `thiserror` messages often embed their cause and
//! also return it as `source()` (mysql_async: "Input/output error: Input/output error:
//! connection closed"; a store error printed with its SQLite cause), so printing the
//! chain as it comes says things twice.

use std::error::Error;

/// `error`'s message, then each cause in turn unless the text so far already says it,
/// joined by ": ", with any part repeated right after itself said once.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let message = next.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = next.source();
    }
    said_once(&text)
}

/// `text` (parts joined by ": ") with every part that repeats the one before it dropped.
pub fn said_once(text: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("api.listen 127.0.0.1:3000: cannot listen: {source} (choose another port)")]
    struct Listen {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_is_said_once() {
        assert_eq!(
            said_once("db1:3306: `SELECT 1` failed: Input/output error: Input/output error: connection closed"),
            "db1:3306: `SELECT 1` failed: Input/output error: connection closed"
        );
        let error = Listen {
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use"),
        };
        assert_eq!(
            chain(&error),
            "api.listen 127.0.0.1:3000: cannot listen: Address already in use (choose another port)"
        );
        let wrapped = std::io::Error::other(Listen {
            source: std::io::Error::other("gone"),
        });
        assert_eq!(
            chain(&wrapped),
            "api.listen 127.0.0.1:3000: cannot listen: gone (choose another port)"
        );
    }
}
