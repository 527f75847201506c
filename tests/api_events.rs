//! The event stream's bounds, against a real agent over HTTP: at most
//! `api.max_event_clients` watch at once (the next is told so, in JSON, with 503), a
//! place is free again once its watcher goes, and a client that takes nothing is
//! disconnected after `api.stalled_client_timeout` instead of being kept, with its
//! replies, for as long as it likes; a watcher of one cluster gets that cluster's
//! detail beside the summaries (`null` for a cluster there is not). No database is
//! needed.

mod support;

use pointsman::agent::RunningAgent;
use pointsman::config::{Config, HumanDuration};
use std::net::SocketAddr;
use std::time::Duration;
use support::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

const PATIENCE: Duration = Duration::from_secs(20);

async fn agent(max_event_clients: usize) -> (RunningAgent, tempfile::TempDir) {
    let store = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.store.path = store.path().join("pointsman.db");
    config.api.listen = "127.0.0.1:0".into();
    config.api.max_event_clients = max_event_clients;
    config.api.stalled_client_timeout = HumanDuration(Duration::from_secs(1));
    let settings = config.validate().expect("valid settings");
    let agent = RunningAgent::start(&settings).await.expect("agent starts");
    (agent, store)
}

/// A watcher that has its first event; `Err` with the status and body when refused.
async fn watch(address: SocketAddr) -> Result<reqwest::Response, (u16, String)> {
    pointsman::routing::consul::install_crypto_provider();
    let mut response = reqwest::get(format!("http://{address}/api/v1/events"))
        .await
        .expect("the agent answers");
    let status = response.status().as_u16();
    if status != 200 {
        return Err((status, response.text().await.unwrap_or_default()));
    }
    let first = response
        .chunk()
        .await
        .expect("the stream")
        .expect("a first event");
    assert!(
        String::from_utf8_lossy(&first).contains("event: summaries"),
        "{first:?}"
    );
    Ok(response)
}

#[tokio::test]
async fn a_watcher_of_one_cluster_gets_its_detail_too() {
    let (agent, _store) = agent(3).await;
    pointsman::routing::consul::install_crypto_provider();
    let mut response = reqwest::get(format!(
        "http://{}/api/v1/events?cluster=orders",
        agent.api_address
    ))
    .await
    .expect("the agent answers");
    assert_eq!(response.status().as_u16(), 200);
    let mut said = String::new();
    while !(said.contains("event: summaries\ndata: []")
        && said.contains("event: cluster\ndata: null"))
    {
        let chunk = tokio::time::timeout(PATIENCE, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no summaries and cluster events in: {said}"))
            .expect("the stream")
            .expect("more events");
        said.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);
    agent.stop().await.expect("stops");
}

#[tokio::test]
async fn watchers_beyond_the_limit_are_refused_and_places_come_back() {
    let (agent, _store) = agent(3).await;
    let address = agent.api_address;
    let mut watchers = Vec::new();
    for _ in 0..3 {
        watchers.push(watch(address).await.expect("a place"));
    }
    let (status, body) = watch(address).await.expect_err("no place left");
    assert_eq!(status, 503, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    let said = error["error"].as_str().expect("a sentence");
    assert!(
        said.contains("3 clients already watch") && said.contains("api.max_event_clients"),
        "{said}"
    );
    drop(watchers.pop());
    let again = eventually(PATIENCE, "the place its watcher left", || async {
        watch(address).await.ok()
    })
    .await;
    drop((again, watchers));
    agent.stop().await.expect("stops");
}

/// Many replies asked for on one connection whose owner reads none of them: the agent
/// writes what the socket takes, waits a second, and drops the connection.
#[tokio::test]
async fn a_client_that_takes_nothing_is_disconnected() {
    let (agent, _store) = agent(3).await;
    let address = agent.api_address;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("a small buffer");
    let mut stream = socket.connect(address).await.expect("connects");
    const ASKED: usize = 400;
    let request = format!("GET /app.js HTTP/1.1\r\nHost: {address}\r\n\r\n").repeat(ASKED);
    stream.write_all(request.as_bytes()).await.expect("sends");
    // Read-closed is seen without reading: the agent sent its FIN (or a reset).
    eventually(
        PATIENCE,
        "the agent to drop a client that reads nothing",
        || async {
            let ready = stream.ready(Interest::READABLE).await.ok()?;
            ready.is_read_closed().then_some(())
        },
    )
    .await;
    let mut taken = Vec::new();
    // A reset may end the reading early: what came before it counts all the same.
    let _ = stream.read_to_end(&mut taken).await;
    let answered = String::from_utf8_lossy(&taken)
        .matches("HTTP/1.1 200")
        .count();
    assert!(
        answered < ASKED,
        "all {ASKED} replies were written: the connection ended normally, not dropped"
    );
    // The agent itself is fine.
    watch(address)
        .await
        .expect("a watcher after the dropped client");
    agent.stop().await.expect("stops");
}
