//! The Consul HTTP client shared by the routing backend (`routing::consul`) and the
//! leader lease (`leader`): one `reqwest` client with the token header, the datacenter,
//! TLS from `ca_file`/`cert_file`/`key_file`, a time limit on every request, and
//! Consul's answers mapped to errors that name the agent and say what to do.
//!
//! It owns the requests that mean the same to every user — KV reads (blocking too),
//! lock acquire and release, sessions, agent services and TTL checks — and nothing that
//! decides: what to write, when to retry and what an answer means for the routes or the
//! lease stay with the callers. The token never reaches a log line or an error: it is a
//! sensitive header, and it is scrubbed from every error body that would quote it.

use crate::config::ConsulSettings;
use base64::Engine as _;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use std::sync::Once;
use std::time::Duration;

/// How much of an error body an error message quotes.
const BODY_EXCERPT: usize = 300;
/// The configuration key that sets the time limit, for timeout messages.
const TIMEOUT_KEY: &str = "routing.consul.timeout";

/// Installs rustls's ring provider as the process default, once. reqwest is built with
/// `rustls-no-provider` (aws-lc-rs would need a C toolchain), so every
/// `reqwest::Client` in the process needs this to have run first: building one without
/// it panics. Harmless when a provider is already installed.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err means another provider was installed first: that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A duration the way Consul (Go's `time.ParseDuration`) reads it.
pub(crate) fn go_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// Consul's KV key rules (agent/kvs_endpoint.go `validateKVKey` in the newest Consul):
/// letters, digits and `,-_./`, no leading `/`, no `../`, and no ending that looks like
/// a file a proxy would cache (`.json`, `.com`, ...). `Err` says what is wrong.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a key cannot be empty".into());
    }
    if key.starts_with('/') {
        return Err(format!("\"{key}\" begins with '/', which Consul refuses"));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ",-_./".contains(*c)))
    {
        return Err(format!(
            "\"{key}\" holds '{c}': Consul takes only letters, digits and ,-_./ in a key"
        ));
    }
    if key.contains("../") {
        return Err(format!("\"{key}\" holds \"../\", which Consul refuses"));
    }
    const FILE_LIKE: &[&str] = &[
        ".js", ".css", ".html", ".htm", ".xml", ".json", ".txt", ".log", ".php", ".asp", ".jsp",
        ".cgi", ".pl", ".py", ".rb", ".sh", ".exe", ".dll", ".bat", ".cmd", ".com", ".scr", ".vbs",
        ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".zip", ".rar", ".tar", ".gz",
        ".7z", ".bz2", ".jpg", ".jpeg", ".png", ".gif", ".svg", ".ico", ".bmp", ".mp3", ".mp4",
        ".avi", ".mov", ".wmv", ".flv", ".swf", ".woff", ".woff2", ".ttf", ".eot", ".otf",
    ];
    let lower = key.to_ascii_lowercase();
    if let Some(ending) = FILE_LIKE.iter().find(|ending| lower.ends_with(*ending)) {
        return Err(format!(
            "\"{key}\" ends in \"{ending}\", which the newest Consul refuses (it looks like a file a proxy would cache)"
        ));
    }
    Ok(())
}

/// What went wrong talking to Consul. Every message names the agent and what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsulError {
    #[error("Consul at {address} cannot be reached to {what}: {reason}; is the agent running there, and is routing.consul.address right?")]
    Unreachable {
        address: String,
        what: String,
        reason: String,
    },
    #[error("Consul at {address} cannot be reached to {what}: the TLS handshake failed ({reason}); check routing.consul.ca_file (the CA that signed the agent's certificate) and cert_file/key_file if the agent verifies clients")]
    Tls {
        address: String,
        what: String,
        reason: String,
    },
    #[error("Consul at {address} gave no answer within {timeout} to {what} ({limit}); the agent may be overloaded or cut off")]
    Timeout {
        address: String,
        what: String,
        timeout: String,
        /// What sets that limit, in the user's words.
        limit: String,
    },
    #[error("Consul at {address} denied {what} ({detail}): {problem}. pointsman needs {needs}; grant that to the token's policy, or set the right token in routing.consul.token")]
    Denied {
        address: String,
        what: String,
        detail: String,
        /// Whose fault: an unknown token, or one that lacks this permission.
        problem: String,
        /// Every permission this user of the client needs.
        needs: String,
    },
    #[error("Consul at {address} failed to {what} (HTTP {status}: {detail}): its servers may have lost their leader or be overloaded; pointsman retries")]
    Server {
        address: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("Consul at {address} refused to {what} (HTTP {status}: {detail})")]
    Unexpected {
        address: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("Consul at {address} answered {what} with something Consul does not send: {reason}")]
    Decode {
        address: String,
        what: String,
        reason: String,
    },
}

impl ConsulError {
    /// Consul itself is not answering: trying the next thing would only wait again.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(
            self,
            ConsulError::Unreachable { .. }
                | ConsulError::Tls { .. }
                | ConsulError::Timeout { .. }
                | ConsulError::Server { .. }
        )
    }

    /// The HTTP status of an answer Consul gave but the caller did not expect.
    pub(crate) fn unexpected_status(&self) -> Option<u16> {
        match self {
            ConsulError::Unexpected { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Whether a rustls error is behind `error`; it may sit inside `io::Error`s, whose
/// `source` skips the error they wrap.
fn is_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    if error.is::<rustls::Error>() {
        return true;
    }
    match error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        Some(inner) => is_tls(inner),
        None => false,
    }
}

/// A key as `GET /v1/kv/` lists it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct KvEntry {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
    #[serde(rename = "LockIndex", default)]
    pub lock_index: u64,
    /// The session holding the key's lock, if one does.
    #[serde(rename = "Session", default)]
    pub session: Option<String>,
    #[serde(rename = "Value", default)]
    pub value: Option<String>,
}

impl KvEntry {
    /// The value as text; `null` and undecodable values read as empty.
    pub(crate) fn text(&self) -> String {
        self.value
            .as_deref()
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }
}

/// The Consul HTTP API, with the token, datacenter and time limit applied to every call.
/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: Url,
    /// As configured, for names and messages.
    address: String,
    token: Option<HeaderValue>,
    /// Kept to scrub it out of any error body that would quote it.
    token_text: Option<String>,
    datacenter: Option<String>,
    timeout: Duration,
    /// What sets `timeout`, for the message when it runs out.
    limit: String,
    /// The ACL permissions the user of this client needs, for the message of a 403.
    needs: String,
}

/// One answer that is neither a transport failure, a 403 nor a 5xx.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// `X-Consul-Index`, where Consul sent one.
    pub index: Option<u64>,
}

impl Http {
    /// Builds the client; no request is made. `needs` lists, in Consul's policy words,
    /// every ACL permission the caller needs, for the message of a 403. `Err` names the
    /// address and the setting that cannot be used.
    pub(crate) fn new(
        address: &str,
        settings: &ConsulSettings,
        needs: String,
    ) -> Result<Http, String> {
        let config = &settings.config;
        let setup = |what: String| format!("consul {address}: {what}");
        let base = Url::parse(address)
            .ok()
            .filter(|url| !url.cannot_be_a_base() && matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| {
                setup("routing.consul.address must be a URL like \"http://127.0.0.1:8500\"".into())
            })?;
        install_crypto_provider();
        let timeout = config.timeout.0;
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Consul answers; it never redirects the API.
            .redirect(reqwest::redirect::Policy::none());
        if base.scheme() == "https" {
            if let Some(ca_file) = &config.ca_file {
                let pem = std::fs::read(ca_file).map_err(|e| {
                    setup(format!(
                        "cannot read routing.consul.ca_file {}: {e}",
                        ca_file.display()
                    ))
                })?;
                let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                    .ok()
                    .filter(|certificates| !certificates.is_empty())
                    .ok_or_else(|| {
                        setup(format!(
                            "routing.consul.ca_file {} holds no PEM certificate",
                            ca_file.display()
                        ))
                    })?;
                // Like Consul's own clients: a configured CA is the only one trusted.
                builder = builder.tls_certs_only(certificates);
            }
            if let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) {
                let mut pem = std::fs::read(cert_file).map_err(|e| {
                    setup(format!(
                        "cannot read routing.consul.cert_file {}: {e}",
                        cert_file.display()
                    ))
                })?;
                pem.push(b'\n');
                pem.extend(std::fs::read(key_file).map_err(|e| {
                    setup(format!(
                        "cannot read routing.consul.key_file {}: {e}",
                        key_file.display()
                    ))
                })?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    setup(format!(
                        "routing.consul.cert_file {} and key_file {} are not a PEM certificate and key: {e}",
                        cert_file.display(),
                        key_file.display()
                    ))
                })?;
                builder = builder.identity(identity);
            }
        } else if config.ca_file.is_some() || config.cert_file.is_some() {
            tracing::warn!(
                address,
                "routing.consul.ca_file/cert_file are set but the address is http://: they are not used"
            );
        }
        let client = builder
            .build()
            .map_err(|e| setup(format!("cannot set up the HTTP client: {e}")))?;
        let token = match &settings.token {
            Some(token) => {
                let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                    setup(
                        "the routing.consul token holds characters an HTTP header cannot carry"
                            .into(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Http {
            client,
            base,
            address: address.trim_end_matches('/').to_string(),
            token,
            token_text: settings.token.as_ref().map(|t| t.expose().to_string()),
            datacenter: config.datacenter.clone(),
            timeout,
            limit: TIMEOUT_KEY.to_string(),
            needs,
        })
    }

    /// The same client with another time limit per request; `limit` says what sets it.
    pub(crate) fn with_timeout(&self, timeout: Duration, limit: &str) -> Http {
        Http {
            timeout,
            limit: limit.to_string(),
            ..self.clone()
        }
    }

    /// The address as configured, without a trailing '/'.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `<address>/v1/<path...>`, each segment escaped, with `?dc=` where it applies.
    pub(crate) fn url(&self, path: &[&str], datacenter: bool) -> Url {
        let mut url = self.base.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .expect("checked in new: the address can be a base");
            segments.pop_if_empty();
            segments.push("v1");
            for part in path {
                segments.extend(part.split('/'));
            }
        }
        if datacenter {
            if let Some(dc) = &self.datacenter {
                url.query_pairs_mut().append_pair("dc", dc);
            }
        }
        url
    }

    /// Sends one request; transport failures, 403 and 5xx become errors here, every
    /// other answer goes back to the caller. `acl` says what a 403 means the token lacks.
    pub(crate) async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        what: &str,
        acl: &str,
    ) -> Result<Answer, ConsulError> {
        let mut request = self.client.request(method, url).timeout(self.timeout);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token.clone());
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(|e| self.transport(e, what))?;
        let status = response.status();
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport(e, what))?
            .to_vec();
        if status == StatusCode::FORBIDDEN {
            return Err(self.denied(what, acl, format!("HTTP 403: {}", self.excerpt(&body))));
        }
        if status.is_server_error() {
            return Err(ConsulError::Server {
                address: self.address.clone(),
                what: what.to_string(),
                status: status.as_u16(),
                detail: self.excerpt(&body),
            });
        }
        Ok(Answer {
            status,
            body,
            index,
        })
    }

    pub(crate) fn denied(&self, what: &str, acl: &str, detail: String) -> ConsulError {
        let problem = if self.token.is_none() {
            format!("no token is configured, and the anonymous token lacks {acl}")
        } else if detail.contains("ACL not found") {
            "the token in routing.consul.token is not known to this Consul (mistyped, deleted or expired?)".to_string()
        } else {
            format!("the token in routing.consul.token lacks {acl}")
        };
        ConsulError::Denied {
            address: self.address.clone(),
            what: what.to_string(),
            detail,
            problem,
            needs: self.needs.clone(),
        }
    }

    fn transport(&self, error: reqwest::Error, what: &str) -> ConsulError {
        if error.is_timeout() {
            return ConsulError::Timeout {
                address: self.address.clone(),
                what: what.to_string(),
                timeout: humantime::format_duration(self.timeout).to_string(),
                limit: self.limit.clone(),
            };
        }
        // The innermost cause says it best ("Connection refused (os error 111)").
        let mut reason = error.to_string();
        let mut tls = false;
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            reason = cause.to_string();
            tls |= is_tls(cause);
            source = cause.source();
        }
        if tls {
            return ConsulError::Tls {
                address: self.address.clone(),
                what: what.to_string(),
                reason: self.scrub(reason),
            };
        }
        if !error.is_connect() {
            reason = format!("the connection failed: {reason}");
        }
        ConsulError::Unreachable {
            address: self.address.clone(),
            what: what.to_string(),
            reason: self.scrub(reason),
        }
    }

    /// The start of an error body, one line, with the token scrubbed out.
    pub(crate) fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut text: String = text.chars().take(BODY_EXCERPT).collect();
        if text.is_empty() {
            text = "no message".into();
        }
        self.scrub(text)
    }

    pub(crate) fn scrub(&self, text: String) -> String {
        match &self.token_text {
            Some(token) if !token.is_empty() => text.replace(token.as_str(), "<redacted>"),
            _ => text,
        }
    }

    pub(crate) fn unexpected(&self, what: &str, answer: &Answer) -> ConsulError {
        ConsulError::Unexpected {
            address: self.address.clone(),
            what: what.to_string(),
            status: answer.status.as_u16(),
            detail: self.excerpt(&answer.body),
        }
    }

    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        body: &[u8],
    ) -> Result<T, ConsulError> {
        serde_json::from_slice(body).map_err(|e| ConsulError::Decode {
            address: self.address.clone(),
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    /// `PUT` with a body that must answer 2xx.
    async fn put_ok(
        &self,
        url: Url,
        body: Option<Vec<u8>>,
        what: &str,
        acl: &str,
    ) -> Result<Answer, ConsulError> {
        let answer = self.call(Method::PUT, url, body, what, acl).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(self.unexpected(what, &answer))
        }
    }

    // -----------------------------------------------------------------------------
    // KV
    // -----------------------------------------------------------------------------

    /// `GET /v1/kv/<key>` (with `recurse`: the key and everything under it as a prefix);
    /// a missing key is no entries.
    pub(crate) async fn kv_get(
        &self,
        key: &str,
        recurse: bool,
    ) -> Result<Vec<KvEntry>, ConsulError> {
        self.kv_read(key, recurse, true).await
    }

    /// As `kv_get`; `datacenter`: in the configured datacenter, else the agent's own.
    async fn kv_read(
        &self,
        key: &str,
        recurse: bool,
        datacenter: bool,
    ) -> Result<Vec<KvEntry>, ConsulError> {
        let mut url = self.url(&["kv", key], datacenter);
        if recurse {
            url.query_pairs_mut().append_key_only("recurse");
        }
        let what = format!("read {key}");
        let answer = self
            .call(Method::GET, url, None, &what, &format!("key read on {key}"))
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            status if status.is_success() => self.decode(&what, &answer.body),
            _ => Err(self.unexpected(&what, &answer)),
        }
    }

    /// `PUT /v1/kv/<key>` with `value`, in the agent's own datacenter (where the lease
    /// lives).
    pub(crate) async fn kv_put_local(&self, key: &str, value: Vec<u8>) -> Result<(), ConsulError> {
        let url = self.url(&["kv", key], false);
        let what = format!("write {key}");
        self.put_ok(url, Some(value), &what, &format!("key write on {key}"))
            .await
            .map(|_| ())
    }

    /// `DELETE /v1/kv/<key>`, in the agent's own datacenter.
    pub(crate) async fn kv_delete_local(&self, key: &str) -> Result<(), ConsulError> {
        let url = self.url(&["kv", key], false);
        let what = format!("delete {key}");
        let answer = self
            .call(
                Method::DELETE,
                url,
                None,
                &what,
                &format!("key write on {key}"),
            )
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(self.unexpected(&what, &answer))
        }
    }

    /// Every key under `prefix` in the configured datacenter, with the `X-Consul-Index`
    /// of the answer. With `block` = (index, wait), a blocking read: Consul answers when
    /// something under `prefix` changes past `index`, or when `wait` runs out (this
    /// client's time limit must cover `wait`: see `with_timeout`).
    pub(crate) async fn kv_list_since(
        &self,
        prefix: &str,
        block: Option<(u64, Duration)>,
    ) -> Result<(u64, Vec<KvEntry>), ConsulError> {
        let mut url = self.url(&["kv", prefix], true);
        url.query_pairs_mut().append_key_only("recurse");
        if let Some((index, wait)) = block {
            url.query_pairs_mut()
                .append_pair("index", &index.to_string())
                .append_pair("wait", &go_duration(wait));
        }
        let what = format!("read {prefix}");
        let answer = self
            .call(
                Method::GET,
                url,
                None,
                &what,
                &format!("key read on {prefix}"),
            )
            .await?;
        let index = answer.index.unwrap_or(0);
        match answer.status {
            StatusCode::NOT_FOUND => Ok((index, Vec::new())),
            status if status.is_success() => Ok((index, self.decode(&what, &answer.body)?)),
            _ => Err(self.unexpected(&what, &answer)),
        }
    }

    /// Every key under `prefix`, in the agent's own datacenter.
    pub(crate) async fn kv_list_local(&self, prefix: &str) -> Result<Vec<KvEntry>, ConsulError> {
        self.kv_read(prefix, true, false).await
    }

    /// One key and the `X-Consul-Index` of the answer, in the agent's own datacenter.
    /// With `block` = (index, wait), a blocking read: Consul answers when the key changes
    /// past `index` or when `wait` runs out (plus its jitter of up to wait/16), so this
    /// client's time limit must cover `wait` (see `with_timeout`).
    pub(crate) async fn kv_read_local(
        &self,
        key: &str,
        block: Option<(u64, Duration)>,
    ) -> Result<(u64, Option<KvEntry>), ConsulError> {
        let mut url = self.url(&["kv", key], false);
        if let Some((index, wait)) = block {
            url.query_pairs_mut()
                .append_pair("index", &index.to_string())
                .append_pair("wait", &go_duration(wait));
        }
        let what = format!("read {key}");
        let answer = self
            .call(Method::GET, url, None, &what, &format!("key read on {key}"))
            .await?;
        let index = answer.index.unwrap_or(0);
        match answer.status {
            StatusCode::NOT_FOUND => Ok((index, None)),
            status if status.is_success() => {
                let entries: Vec<KvEntry> = self.decode(&what, &answer.body)?;
                Ok((index, entries.into_iter().find(|e| e.key == key)))
            }
            _ => Err(self.unexpected(&what, &answer)),
        }
    }

    /// `PUT /v1/kv/<key>?acquire=<session>` in the agent's datacenter: whether the lock
    /// is now held by `session` (false while another session holds it or a lock-delay
    /// runs).
    pub(crate) async fn kv_acquire(
        &self,
        key: &str,
        session: &str,
        value: &[u8],
    ) -> Result<bool, ConsulError> {
        self.kv_lock(key, "acquire", session, value).await
    }

    /// `PUT /v1/kv/<key>?release=<session>`: whether `session` held the lock and let it go.
    pub(crate) async fn kv_release(
        &self,
        key: &str,
        session: &str,
        value: &[u8],
    ) -> Result<bool, ConsulError> {
        self.kv_lock(key, "release", session, value).await
    }

    async fn kv_lock(
        &self,
        key: &str,
        verb: &str,
        session: &str,
        value: &[u8],
    ) -> Result<bool, ConsulError> {
        let mut url = self.url(&["kv", key], false);
        url.query_pairs_mut().append_pair(verb, session);
        let what = format!("{verb} the lock {key}");
        let answer = self
            .put_ok(
                url,
                Some(value.to_vec()),
                &what,
                &format!("key write on {key} and session write"),
            )
            .await?;
        self.decode(&what, &answer.body)
    }

    // -----------------------------------------------------------------------------
    // Sessions
    // -----------------------------------------------------------------------------

    /// `PUT /v1/session/create` in the agent's datacenter, on the agent's node; the ID.
    pub(crate) async fn session_create(
        &self,
        body: &serde_json::Value,
    ) -> Result<String, ConsulError> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let what = "create a session".to_string();
        let answer = self
            .put_ok(
                self.url(&["session", "create"], false),
                Some(serde_json::to_vec(body).expect("plain JSON")),
                &what,
                "session write on this agent's node",
            )
            .await?;
        let created: Created = self.decode(&what, &answer.body)?;
        Ok(created.id)
    }

    /// `PUT /v1/session/renew/<id>`: false when Consul no longer knows the session
    /// (404 `Session id '<id>' not found`: it was invalidated).
    pub(crate) async fn session_renew(&self, id: &str) -> Result<bool, ConsulError> {
        let what = format!("renew session {id}");
        let answer = self
            .call(
                Method::PUT,
                self.url(&["session", "renew", id], false),
                None,
                &what,
                "session write on this agent's node",
            )
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(false),
            status if status.is_success() => Ok(true),
            _ => Err(self.unexpected(&what, &answer)),
        }
    }

    /// `PUT /v1/session/destroy/<id>`; a session already gone is what was wanted.
    pub(crate) async fn session_destroy(&self, id: &str) -> Result<(), ConsulError> {
        let what = format!("destroy session {id}");
        self.put_ok(
            self.url(&["session", "destroy", id], false),
            None,
            &what,
            "session write on this agent's node",
        )
        .await
        .map(|_| ())
    }

    // -----------------------------------------------------------------------------
    // The agent's services and TTL checks (always the local agent: no `?dc=`).
    // -----------------------------------------------------------------------------

    /// `PUT /v1/agent/service/register` with a service definition.
    pub(crate) async fn register_service(
        &self,
        definition: &serde_json::Value,
        id: &str,
        acl: &str,
    ) -> Result<(), ConsulError> {
        let what = format!("register service {id}");
        self.put_ok(
            self.url(&["agent", "service", "register"], false),
            Some(serde_json::to_vec(definition).expect("plain JSON")),
            &what,
            acl,
        )
        .await
        .map(|_| ())
    }

    /// `PUT /v1/agent/service/deregister/<id>`; a service already gone is what was wanted.
    pub(crate) async fn deregister_service(&self, id: &str, acl: &str) -> Result<(), ConsulError> {
        let what = format!("deregister service {id}");
        let answer = self
            .call(
                Method::PUT,
                self.url(&["agent", "service", "deregister", id], false),
                None,
                &what,
                acl,
            )
            .await?;
        if answer.status.is_success() || answer.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(self.unexpected(&what, &answer))
        }
    }

    /// `PUT /v1/agent/check/pass/<check_id>`. An unknown check is an `Unexpected` 404.
    pub(crate) async fn pass_check(&self, check_id: &str, acl: &str) -> Result<(), ConsulError> {
        let what = format!("pass check {check_id}");
        self.put_ok(
            self.url(&["agent", "check", "pass", check_id], false),
            None,
            &what,
            acl,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_the_go_way() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "3600s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn keys_follow_consuls_rules() {
        assert!(check_key("pointsman/leader/demo").is_ok());
        assert!(check_key("pointsman/leader/db-1,2_3.x").is_ok());
        for bad in [
            "",
            "/pointsman/leader",
            "pointsman/leader/db1:3306",
            "pointsman/../leader",
            "pointsman/leader/db.example.com",
            "pointsman/leader/a b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?} passed");
        }
    }
}
