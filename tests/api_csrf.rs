//! Other sites' pages, as a browser sends their requests, in raw HTTP: with no token
//! (the default, and the demo's), a `text/plain` or form POST — which a browser sends
//! cross-origin without asking — is refused on every route that changes something, so
//! is a JSON call from another origin, and a request naming a host that is not this
//! agent's (DNS rebinding) reaches no endpoint and not the page. The agent's own page,
//! the CLI (no `Origin`) and the configured names and origins pass. No database is
//! needed: the refusals come before anything is done.

mod support;

use pointsman::agent::RunningAgent;
use pointsman::client::ApiClient;
use pointsman::config::Config;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn agent(tweak: impl FnOnce(&mut Config)) -> (RunningAgent, tempfile::TempDir) {
    let store = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.store.path = store.path().join("pointsman.db");
    config.api.listen = "127.0.0.1:0".into();
    tweak(&mut config);
    let settings = config.validate().expect("valid settings");
    let agent = RunningAgent::start(&settings).await.expect("agent starts");
    (agent, store)
}

/// One request as written, on its own connection; the status and the body.
async fn raw(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {address}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("reads");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The sentence of a JSON error, or a panic showing what came instead.
fn sentence(body: &str) -> String {
    let error: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON error: {body}"));
    error["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error sentence: {body}"))
        .to_string()
}

/// Every route that changes something, with a body it would take.
const CHANGES: [(&str, &str, &str); 12] = [
    ("POST", "/api/v1/clusters/t/switchover", "{}"),
    ("POST", "/api/v1/clusters/t/recover", "{}"),
    ("POST", "/api/v1/clusters/t/ack", "{\"comment\":\"x\"}"),
    ("POST", "/api/v1/instances/127.0.0.1:1/reattach", ""),
    (
        "POST",
        "/api/v1/discover",
        "{\"host\":\"127.0.0.1\",\"port\":1}",
    ),
    ("PUT", "/api/v1/recovery", "{\"automatic\":false}"),
    (
        "PUT",
        "/api/v1/instances/127.0.0.1:1/downtime",
        "{\"duration\":\"1h\",\"reason\":\"x\"}",
    ),
    ("DELETE", "/api/v1/instances/127.0.0.1:1/downtime", ""),
    ("DELETE", "/api/v1/instances/127.0.0.1:1", ""),
    (
        "POST",
        "/api/v1/instances/127.0.0.1:1/relocate",
        "{\"below\":\"127.0.0.1:2\"}",
    ),
    (
        "POST",
        "/api/v1/instances/127.0.0.1:1/replication",
        "{\"running\":false}",
    ),
    (
        "PUT",
        "/api/v1/instances/127.0.0.1:1/read_only",
        "{\"read_only\":true}",
    ),
];

#[tokio::test]
async fn another_origins_page_changes_nothing() {
    let (agent, _store) = agent(|_| {}).await;
    let address = agent.api_address;
    let evil = ("Origin", "http://attacker.example");
    for (method, path, body) in CHANGES {
        for kind in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let (status, answer) =
                raw(address, method, path, &[evil, ("Content-Type", kind)], body).await;
            assert_eq!(status, 415, "{method} {path} as {kind}: {answer}");
            assert!(
                sentence(&answer).contains("Content-Type: application/json"),
                "{answer}"
            );
        }
        let (status, answer) = raw(
            address,
            method,
            path,
            &[("Content-Type", "text/plain")],
            body,
        )
        .await;
        assert_eq!(
            status, 415,
            "{method} {path} as text/plain without Origin: {answer}"
        );
        let (status, answer) = raw(
            address,
            method,
            path,
            &[evil, ("Content-Type", "application/json")],
            body,
        )
        .await;
        assert_eq!(status, 403, "{method} {path} from another origin: {answer}");
        let said = sentence(&answer);
        assert!(
            said.contains("http://attacker.example") && said.contains("api.allowed_origins"),
            "{said}"
        );
    }
    // Nothing was changed: the switch is on, and the audit log is empty.
    let api = ApiClient::new(&format!("http://{address}"));
    let switch: Value = api.get("/api/v1/recovery").await.expect("read");
    assert_eq!(switch["automatic"], json!(true), "{switch}");
    let audit: Vec<Value> = api.get("/api/v1/audit").await.expect("audit");
    assert!(audit.is_empty(), "{audit:?}");
    agent.stop().await.expect("stops");
}

#[tokio::test]
async fn the_agents_own_page_the_cli_and_listed_origins_pass() {
    let (agent, _store) = agent(|config| {
        config.api.allowed_origins = vec!["https://ops.example".into()];
    })
    .await;
    let address = agent.api_address;
    let own = format!("http://{address}");
    let json = ("Content-Type", "application/json");
    for origin in [own.as_str(), "https://ops.example"] {
        let (status, answer) = raw(
            address,
            "PUT",
            "/api/v1/recovery",
            &[("Origin", origin), json],
            "{\"automatic\":false}",
        )
        .await;
        assert_eq!(status, 200, "from {origin}: {answer}");
    }
    // A change without a body says JSON too, and is taken as the default request: the
    // call runs and is refused on its own terms (no cluster t here), not as a bad body.
    let (status, answer) = raw(address, "POST", "/api/v1/clusters/t/ack", &[json], "").await;
    assert_eq!(
        (status, answer.contains("no cluster named \\\"t\\\"")),
        (404, true),
        "{answer}"
    );
    // The CLI sends the type on a DELETE too: the call runs and fails on its own terms.
    let cli = ApiClient::new(&own);
    let (status, message) =
        support::api_error(cli.delete::<Value>("/api/v1/instances/127.0.0.1:1").await);
    assert_eq!(status, 404, "{message}");
    agent.stop().await.expect("stops");
}

#[tokio::test]
async fn a_name_that_is_not_the_agents_reaches_nothing() {
    let (agent, _store) = agent(|config| {
        config.api.allowed_hosts = vec!["pointsman.example".into()];
    })
    .await;
    let address = agent.api_address;
    let port = address.port();
    for path in [
        "/",
        "/app.js",
        "/api/v1/clusters",
        "/api/v1/health",
        "/api/v1/events",
        "/metrics",
    ] {
        for host in [
            "attacker.example".to_string(),
            format!("attacker.example:{port}"),
        ] {
            let (status, answer) = raw(address, "GET", path, &[("Host", &host)], "").await;
            assert_eq!(status, 403, "GET {path} as {host}: {answer}");
            assert!(sentence(&answer).contains("api.allowed_hosts"), "{answer}");
        }
    }
    let (status, _) = raw(
        address,
        "PUT",
        "/api/v1/recovery",
        &[
            ("Host", "attacker.example"),
            ("Content-Type", "application/json"),
        ],
        "{\"automatic\":false}",
    )
    .await;
    assert_eq!(status, 403);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "pointsman.example".into(),
    ] {
        let (status, answer) =
            raw(address, "GET", "/api/v1/clusters", &[("Host", &host)], "").await;
        assert_eq!(status, 200, "as {host}: {answer}");
    }
    agent.stop().await.expect("stops");
}
