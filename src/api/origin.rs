//! Where calls may come from. A browser sends what any page tells it to, to any
//! address, so the agent tells its own page apart from everyone else's:
//!
//! - `Host` must name this agent: `localhost`, an IP address (a DNS-rebinding page
//!   needs a name its owner controls, never an address), the machine's host name, or
//!   one of `api.allowed_hosts`. Checked on every request, the page's files too.
//! - A call that changes something (any method but GET, HEAD and OPTIONS) must say
//!   `Content-Type: application/json`, with or without a body: a page of another
//!   origin can only send that after a CORS preflight, which this agent never grants,
//!   while a plain form or a `text/plain` fetch needs none.
//! - Such a call that carries an `Origin` (browsers always send one with it) must come
//!   from the agent's own origin — the one its `Host` names — or one of
//!   `api.allowed_origins`. No `Origin`: a client that is not a browser (CLI, curl).
//!
//! Refusals are JSON errors (403, and 415 for the type) that say what to change. This
//! module does not check tokens (`auth`) or who leads.

use super::ApiError;
use crate::config::ApiConfig;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;

/// An origin as browsers send it: scheme, host and port (the scheme's default when
/// the origin does not say one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    /// Lower case; an IPv6 address in brackets, as in a `Host` header.
    host: String,
    port: u16,
}

impl Origin {
    /// `https://ops.example` or `http://10.0.0.5:8080`, nothing more (no path, no
    /// user); otherwise what is wrong, for the configuration check.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let wrong = |why: &str| {
            format!("\"{text}\" is not an origin like \"https://ops.example\" or \"http://10.0.0.5:8080\": {why}")
        };
        let url = reqwest::Url::parse(text).map_err(|e| wrong(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(wrong("the scheme must be http or https"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(wrong("an origin has no path, query or fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(wrong("an origin has no user or password"));
        }
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(wrong("it names no host"));
        };
        Ok(Origin {
            scheme: url.scheme().to_string(),
            host: normal_host(host),
            port,
        })
    }

    /// Whether this is the origin of a page the agent served under `host` (a `Host`
    /// header): the same host, and the same port (the scheme's default when `Host` has
    /// none, as when a proxy keeps the name of an `https://` address).
    fn is_served_as(&self, host: &HostHeader) -> bool {
        self.host == host.name && host.port.unwrap_or(self.port) == self.port
    }
}

/// A `Host` header, split.
struct HostHeader {
    /// Lower case, without a trailing dot; an IPv6 address in brackets.
    name: String,
    port: Option<u16>,
}

impl HostHeader {
    fn parse(text: &str) -> Option<HostHeader> {
        let (name, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (address, after) = rest.split_once(']')?;
                let port = match after.strip_prefix(':') {
                    Some(port) => Some(port),
                    None if after.is_empty() => None,
                    None => return None,
                };
                (format!("[{address}]"), port)
            }
            None => match text.rsplit_once(':') {
                Some((name, port)) => (name.to_string(), Some(port)),
                None => (text.to_string(), None),
            },
        };
        let port = match port {
            Some(port) => Some(port.parse().ok()?),
            None => None,
        };
        (!name.is_empty()).then(|| HostHeader {
            name: normal_host(&name),
            port,
        })
    }

    fn is_address(&self) -> bool {
        self.name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
    }
}

fn normal_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A name for `api.allowed_hosts`: a host name alone, without scheme or port.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a host name like \"pointsman.example\" (no scheme, port or path: IP addresses need no entry)"
        ))
    }
}

/// The names and origins requests may carry, besides the ones always accepted.
#[derive(Clone, Debug)]
pub struct OriginRules {
    /// `localhost`, the machine's host name and `api.allowed_hosts`, normalised.
    host_names: Vec<String>,
    origins: Vec<Origin>,
}

impl OriginRules {
    /// From `[api]` (already checked) and the machine's host name.
    pub fn new(api: &ApiConfig, machine: Option<&str>) -> OriginRules {
        let host_names = ["localhost"]
            .into_iter()
            .chain(machine)
            .chain(api.allowed_hosts.iter().map(String::as_str))
            .map(normal_host)
            .collect();
        OriginRules {
            host_names,
            // Each was parsed by the configuration check already.
            origins: api
                .allowed_origins
                .iter()
                .filter_map(|text| Origin::parse(text).ok())
                .collect(),
        }
    }

    /// Why this request may not go on, or `None`.
    fn refusal(
        &self,
        method: &Method,
        headers: &HeaderMap,
        authority: Option<&str>,
    ) -> Option<ApiError> {
        let host_text = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .or(authority);
        // A request without a Host is HTTP/1.0 and not from a browser.
        let host = match host_text {
            None => None,
            Some(text) => match HostHeader::parse(text) {
                Some(host) if host.is_address() || self.host_names.contains(&host.name) => Some(host),
                _ => {
                    return Some(ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "Host \"{text}\" is not a name of this agent: call it by an IP address, localhost or this machine's name, or add the name to api.allowed_hosts (names a page may be served under, for DNS rebinding to find none)"
                        ),
                    ))
                }
            },
        };
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return None;
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        let json = content_type.is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("application/json"))
        });
        if !json {
            return Some(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "a call that changes something must send Content-Type: application/json, with or without a body (got {}); the CLI and the web page do",
                    content_type.map_or("none".to_string(), |value| format!("\"{value}\""))
                ),
            ));
        }
        let origin_text = headers
            .get(header::ORIGIN)
            .map(|value| value.to_str().unwrap_or("(not text)"))?;
        let origin = Origin::parse(origin_text).ok();
        let allowed = origin.as_ref().is_some_and(|origin| {
            host.as_ref().is_some_and(|host| origin.is_served_as(host))
                || self.origins.contains(origin)
        });
        (!allowed).then(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "a page from {origin_text} may not change anything on this agent: only its own page may, and the origins listed in api.allowed_origins"
                ),
            )
        })
    }
}

/// Lets a request through, or answers why it may not come from where it comes from.
pub async fn only_from_here(
    State(rules): State<OriginRules>,
    request: Request,
    next: Next,
) -> Response {
    let authority = request.uri().authority().map(|a| a.as_str().to_string());
    match rules.refusal(request.method(), request.headers(), authority.as_deref()) {
        None => next.run(request).await,
        Some(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn rules() -> OriginRules {
        let api = ApiConfig {
            allowed_hosts: vec!["Pointsman.Example".into()],
            allowed_origins: vec!["https://ops.example".into()],
            ..ApiConfig::default()
        };
        OriginRules::new(&api, Some("db-ops-1"))
    }

    fn status(method: Method, headers: &[(&'static str, &str)]) -> Option<u16> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).expect("header"));
        }
        rules()
            .refusal(&method, &map, None)
            .map(|refusal| refusal.status)
    }

    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");

    #[test]
    fn hosts_are_this_agents_names_or_any_address() {
        for host in [
            "127.0.0.1:3000",
            "127.1.2.3",
            "[::1]:3000",
            "10.0.0.5:3000",
            "localhost:3000",
            "LOCALHOST.",
            "db-ops-1:3000",
            "pointsman.example",
        ] {
            assert_eq!(status(Method::GET, &[("host", host)]), None, "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:3000",
            "localhost.attacker.example",
            "[::1",
            "",
        ] {
            assert_eq!(status(Method::GET, &[("host", host)]), Some(403), "{host}");
        }
    }

    #[test]
    fn changes_need_json_and_their_own_or_a_listed_origin() {
        let host = ("host", "127.0.0.1:3000");
        assert_eq!(
            status(Method::POST, &[host, ("content-type", "text/plain")]),
            Some(415)
        );
        assert_eq!(status(Method::DELETE, &[host]), Some(415));
        assert_eq!(
            status(Method::POST, &[host, JSON]),
            None,
            "no Origin: not a browser"
        );
        assert_eq!(
            status(
                Method::POST,
                &[host, JSON, ("origin", "http://127.0.0.1:3000")]
            ),
            None
        );
        assert_eq!(
            status(
                Method::PUT,
                &[host, JSON, ("origin", "https://ops.example")]
            ),
            None
        );
        for origin in [
            "http://127.0.0.1:3001",
            "http://localhost:3000",
            "null",
            "http://attacker.example",
        ] {
            assert_eq!(
                status(Method::POST, &[host, JSON, ("origin", origin)]),
                Some(403),
                "{origin}"
            );
        }
        // Behind a TLS proxy that keeps the name: the scheme's default port.
        let proxied = ("host", "pointsman.example");
        assert_eq!(
            status(
                Method::POST,
                &[proxied, JSON, ("origin", "https://pointsman.example")]
            ),
            None
        );
    }

    #[test]
    fn configured_origins_are_origins_and_nothing_more() {
        assert!(Origin::parse("http://10.0.0.5:8080").is_ok());
        for wrong in [
            "ops.example",
            "https://ops.example/page",
            "ftp://ops.example",
            "https://u:p@ops.example",
        ] {
            assert!(Origin::parse(wrong).is_err(), "{wrong}");
        }
        assert!(check_host_name("ops.example").is_ok());
        assert!(check_host_name("ops.example:443").is_err());
    }
}
