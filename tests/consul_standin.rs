//! The Consul stand-in (tests/support/consul.rs) driven over HTTP as a client would: it
//! must answer like Consul, and above all refuse what Consul refuses, or the routing and
//! leader-election tests built on it prove nothing. No database is needed.

mod support;

use base64::Engine as _;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::consul::{ConsulOptions, ConsulStandIn, Failure};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn index(&self) -> u64 {
        self.header("X-Consul-Index")
            .unwrap_or_else(|| panic!("no X-Consul-Index in {:?}", self.headers))
            .parse()
            .expect("a numeric index")
    }

    fn expect(&self, status: u16) -> &Reply {
        assert_eq!(self.status, status, "unexpected answer: {:?}", self.body);
        self
    }
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<(String, String)>,
}

impl Client {
    fn new(consul: &ConsulStandIn) -> Client {
        support::consul::install_crypto_provider();
        Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            base: consul.url(),
            token: None,
        }
    }

    fn with_header(&self, name: &str, value: &str) -> Client {
        Client {
            token: Some((name.to_owned(), value.to_owned())),
            ..self.clone()
        }
    }

    async fn try_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some((name, value)) = &self.token {
            request = request.header(name.as_str(), value.as_str());
        }
        if !body.is_empty() {
            request = request.body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> Reply {
        self.try_send(method.clone(), path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, Vec::new()).await
    }

    async fn put(&self, path: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.send(reqwest::Method::PUT, path, body.into()).await
    }

    async fn put_json(&self, path: &str, body: Value) -> Reply {
        self.put(path, body.to_string()).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, Vec::new()).await
    }

    async fn session(&self, body: Value) -> String {
        let reply = self.put_json("/v1/session/create", body).await;
        reply.expect(200);
        reply.json()["ID"]
            .as_str()
            .expect("a session ID")
            .to_owned()
    }
}

async fn start() -> (ConsulStandIn, Client) {
    start_with(ConsulOptions::default()).await
}

async fn start_with(options: ConsulOptions) -> (ConsulStandIn, Client) {
    let consul = ConsulStandIn::start(options).await;
    let client = Client::new(&consul);
    (consul, client)
}

fn value_of(entry: &Value) -> Option<Vec<u8>> {
    entry["Value"]
        .as_str()
        .map(|v| B64.decode(v).expect("base64 value"))
}

fn kv_op(verb: &str, key: &str, extra: Value) -> Value {
    let mut op = json!({"Verb": verb, "Key": key});
    if let (Value::Object(op), Value::Object(extra)) = (&mut op, extra) {
        op.extend(extra);
    }
    json!({ "KV": op })
}

async fn wait_until<F: FnMut() -> bool>(what: &str, within: Duration, mut done: F) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------------------- KV

#[tokio::test]
async fn kv_round_trip_with_meta_headers_and_raw_values() {
    let (consul, client) = start().await;
    let reply = client.put("/v1/kv/mysql/master/t", "db1:3306").await;
    reply.expect(200);
    assert_eq!(reply.body, "true");
    assert_eq!(
        consul.kv_string("mysql/master/t").as_deref(),
        Some("db1:3306")
    );

    let reply = client.get("/v1/kv/mysql/master/t").await;
    reply.expect(200);
    let entry = &reply.json()[0];
    assert_eq!(entry["Key"], "mysql/master/t");
    assert_eq!(value_of(entry).as_deref(), Some(&b"db1:3306"[..]));
    assert_eq!(entry["Flags"], 0);
    assert_eq!(entry["LockIndex"], 0);
    assert!(entry.get("Session").is_none(), "no lock holder: {entry}");
    assert_eq!(entry["CreateIndex"], entry["ModifyIndex"]);
    assert_eq!(reply.index(), entry["ModifyIndex"].as_u64().unwrap());
    assert_eq!(reply.header("X-Consul-KnownLeader"), Some("true"));
    assert_eq!(reply.header("X-Consul-LastContact"), Some("0"));

    let raw = client.get("/v1/kv/mysql/master/t?raw").await;
    raw.expect(200);
    assert_eq!(raw.body, "db1:3306");
    assert_eq!(raw.header("Content-Type"), Some("text/plain"));
    assert_eq!(raw.index(), reply.index());

    client.put("/v1/kv/flagged?flags=42", "x").await.expect(200);
    assert_eq!(client.get("/v1/kv/flagged").await.json()[0]["Flags"], 42);

    // An empty PUT stores a null value.
    client.put("/v1/kv/empty", "").await.expect(200);
    assert_eq!(
        client.get("/v1/kv/empty").await.json()[0]["Value"],
        Value::Null
    );
    assert_eq!(consul.kv("empty"), Some(Vec::new()));
}

#[tokio::test]
async fn missing_keys_bad_keys_and_missing_names_are_refused_like_consul() {
    let (_consul, client) = start().await;
    let missing = client.get("/v1/kv/nothing/here").await;
    missing.expect(404);
    assert_eq!(missing.body, "", "a missing key has an empty body");
    assert!(missing.index() >= 1, "the index is set even on 404");

    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let reply = client.send(method.clone(), "/v1/kv/", Vec::new()).await;
        reply.expect(400);
        assert_eq!(reply.body, "Missing key name", "{method}");
    }

    // Listing keys: the root is [] when empty, an empty prefix is 404.
    let root = client.get("/v1/kv/?keys").await;
    root.expect(200);
    assert_eq!(root.json(), json!([]));
    client.get("/v1/kv/nothing/?keys").await.expect(404);
    client.get("/v1/kv/nothing/?recurse").await.expect(404);

    let colon = client.put("/v1/kv/mysql/master/db1:3306", "x").await;
    colon.expect(400);
    assert!(
        colon.body.contains("invalid character ':'"),
        "{}",
        colon.body
    );
    let leading = client.put("/v1/kv//leading", "x").await;
    leading.expect(400);
    assert!(
        leading.body.contains("must not begin with a '/'"),
        "{}",
        leading.body
    );
    let dotted = client.put("/v1/kv/mysql/master/db.example.com", "x").await;
    dotted.expect(400);
    assert!(
        dotted.body.contains("suspicious file extension '.com'"),
        "{}",
        dotted.body
    );
    let spaced = client.put("/v1/kv/a%20b", "x").await;
    spaced.expect(400);

    let post = client
        .send(reqwest::Method::POST, "/v1/kv/a", Vec::new())
        .await;
    post.expect(405);
    client.get("/v1/no/such/endpoint").await.expect(404);
}

#[tokio::test]
async fn recurse_keys_separator_and_delete_tree() {
    let (consul, client) = start().await;
    for key in ["a/b", "a/c/d", "a/c/e", "other"] {
        client.put(&format!("/v1/kv/{key}"), key).await.expect(200);
    }
    let tree = client.get("/v1/kv/a/?recurse").await;
    tree.expect(200);
    let entries = tree.json();
    let keys: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a/b", "a/c/d", "a/c/e"]);
    let highest = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ModifyIndex"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(
        tree.index(),
        highest,
        "a tree's index is its highest ModifyIndex"
    );

    let listed = client.get("/v1/kv/a/?keys&separator=/").await;
    assert_eq!(listed.json(), json!(["a/b", "a/c/"]));
    let all = client.get("/v1/kv/?keys").await;
    assert_eq!(all.json(), json!(["a/b", "a/c/d", "a/c/e", "other"]));

    let deleted = client.delete("/v1/kv/a/c?recurse").await;
    deleted.expect(200);
    assert_eq!(deleted.body, "true");
    assert_eq!(consul.kv_keys(""), ["a/b", "other"]);
    // The tombstones keep the prefix's index from going backwards.
    let after = client.get("/v1/kv/a/?recurse").await;
    assert!(after.index() > tree.index());
}

#[tokio::test]
async fn cas_writes_only_on_the_expected_index() {
    let (consul, client) = start().await;
    assert_eq!(client.put("/v1/kv/k?cas=0", "one").await.body, "true");
    assert_eq!(
        client.put("/v1/kv/k?cas=0", "two").await.body,
        "false",
        "cas=0 only creates"
    );
    let index = consul.kv_entry("k").unwrap().modify_index;
    assert_eq!(
        client
            .put(&format!("/v1/kv/k?cas={}", index + 7), "two")
            .await
            .body,
        "false"
    );
    assert_eq!(
        client
            .put(&format!("/v1/kv/k?cas={index}"), "two")
            .await
            .body,
        "true"
    );
    assert_eq!(consul.kv_string("k").as_deref(), Some("two"));
    let newer = consul.kv_entry("k").unwrap().modify_index;
    assert!(newer > index);
    assert_eq!(client.put("/v1/kv/missing?cas=5", "x").await.body, "false");

    assert_eq!(
        client.delete(&format!("/v1/kv/k?cas={index}")).await.body,
        "false"
    );
    assert!(consul.kv("k").is_some());
    assert_eq!(client.delete("/v1/kv/k?cas=0").await.body, "false");
    assert_eq!(
        client.delete(&format!("/v1/kv/k?cas={newer}")).await.body,
        "true"
    );
    assert!(consul.kv("k").is_none());
    // Consul counts a missing key as deleted.
    assert_eq!(client.delete("/v1/kv/k?cas=3").await.body, "true");

    let garbage = client.put("/v1/kv/k?cas=abc", "x").await;
    garbage.expect(500);
    assert!(garbage.body.contains("invalid syntax"), "{}", garbage.body);
}

#[tokio::test]
async fn conflicting_flags_and_value_size_limits() {
    let (consul, client) = start().await;
    let both = client.put("/v1/kv/k?cas=0&acquire=abc", "x").await;
    both.expect(400);
    assert_eq!(both.body, "Conflicting flags: acquire=abc&cas=0\n");
    client
        .put("/v1/kv/k?acquire=a&release=a", "x")
        .await
        .expect(400);
    client.delete("/v1/kv/k?recurse&cas=1").await.expect(400);

    let limit = 512 * 1024;
    client
        .put("/v1/kv/big", vec![b'x'; limit])
        .await
        .expect(200);
    let too_big = client.put("/v1/kv/bigger", vec![b'x'; limit + 1]).await;
    too_big.expect(413);
    assert!(too_big.body.contains("too large"), "{}", too_big.body);
    assert!(consul.kv("bigger").is_none());
}

#[tokio::test]
async fn every_write_bumps_the_index_but_an_unchanged_value_keeps_its_modify_index() {
    let (consul, client) = start().await;
    client.put("/v1/kv/k", "v").await.expect(200);
    let first = consul.kv_entry("k").unwrap();
    let raft = consul.index();
    client.put("/v1/kv/k", "v").await.expect(200);
    assert!(consul.index() > raft, "every write is a Raft apply");
    assert_eq!(
        consul.kv_entry("k").unwrap().modify_index,
        first.modify_index
    );
    client.put("/v1/kv/k", "w").await.expect(200);
    let second = consul.kv_entry("k").unwrap();
    assert!(second.modify_index > first.modify_index);
    assert_eq!(second.create_index, first.create_index);
}

// ------------------------------------------------------------------------- Blocking

#[tokio::test]
async fn a_blocking_read_returns_when_the_key_changes() {
    let (_consul, client) = start().await;
    client.put("/v1/kv/leader", "a").await.expect(200);
    let index = client.get("/v1/kv/leader").await.index();
    let writer = client.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.put("/v1/kv/leader", "b").await.expect(200);
    });
    let started = Instant::now();
    let reply = client
        .get(&format!("/v1/kv/leader?index={index}&wait=20s"))
        .await;
    let took = started.elapsed();
    reply.expect(200);
    assert!(
        took >= Duration::from_millis(250),
        "returned before the change: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "did not return on the change: {took:?}"
    );
    assert!(reply.index() > index);
    assert_eq!(value_of(&reply.json()[0]).as_deref(), Some(&b"b"[..]));
}

#[tokio::test]
async fn a_blocking_read_honours_wait_and_ignores_other_keys() {
    let (_consul, client) = start().await;
    client.put("/v1/kv/watched", "a").await.expect(200);
    let index = client.get("/v1/kv/watched").await.index();
    let writer = client.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.put("/v1/kv/unrelated", "x").await.expect(200);
    });
    let started = Instant::now();
    let reply = client
        .get(&format!("/v1/kv/watched?index={index}&wait=600ms"))
        .await;
    let took = started.elapsed();
    reply.expect(200);
    assert!(
        took >= Duration::from_millis(550),
        "returned early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "wait not honoured: {took:?}");
    assert_eq!(reply.index(), index, "nothing the reader watches changed");

    client
        .get(&format!("/v1/kv/watched?index={index}&wait=soon"))
        .await
        .expect(400);
    assert_eq!(
        client.get("/v1/kv/watched?index=x").await.body,
        "Invalid index"
    );
    assert_eq!(
        client.get("/v1/kv/watched?stale&consistent").await.status,
        400
    );
}

#[tokio::test]
async fn a_blocking_tree_read_wakes_on_a_delete_under_the_prefix() {
    let (consul, client) = start().await;
    client.put("/v1/kv/routes/a", "1").await.expect(200);
    client.put("/v1/kv/routes/b", "2").await.expect(200);
    let index = client.get("/v1/kv/routes/?recurse").await.index();
    let watcher = client.clone();
    let watch = tokio::spawn(async move {
        watcher
            .get(&format!("/v1/kv/routes/?recurse&index={index}&wait=20s"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A hand edit, as an operator would make it, wakes watchers too.
    consul.delete_key("routes/a");
    let reply = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("the watcher woke")
        .expect("the watcher ran");
    assert!(reply.index() > index);
    assert_eq!(reply.json().as_array().unwrap().len(), 1);

    let before = consul.index();
    consul.set_key("routes/c", "3");
    assert!(consul.index() > before);
    assert_eq!(
        value_of(&client.get("/v1/kv/routes/c").await.json()[0]).as_deref(),
        Some(&b"3"[..])
    );
}

#[tokio::test]
async fn a_snapshot_restore_sends_indexes_backwards_and_wakes_watchers() {
    let (consul, client) = start().await;
    for value in ["1", "2", "3", "4"] {
        client.put("/v1/kv/leader", value).await.expect(200);
    }
    let index = client.get("/v1/kv/leader").await.index();
    let watcher = client.clone();
    let watch = tokio::spawn(async move {
        watcher
            .get(&format!("/v1/kv/leader?index={index}&wait=20s"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    consul.restore_snapshot();
    let reply = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("a restore wakes blocking queries")
        .expect("the watcher ran");
    assert!(
        reply.index() < index,
        "{} is not below {index}",
        reply.index()
    );
    assert_eq!(value_of(&reply.json()[0]).as_deref(), Some(&b"4"[..]));
    assert!(reply.index() >= 1);
}

// ----------------------------------------------------------------------- Transactions

#[tokio::test]
async fn a_transaction_applies_every_op_and_returns_results() {
    let (consul, client) = start().await;
    let ops = json!([
        kv_op(
            "set",
            "mysql/master/t",
            json!({"Value": B64.encode("db2:3306")})
        ),
        kv_op(
            "set",
            "mysql/master/t/hostname",
            json!({"Value": B64.encode("db2")})
        ),
        kv_op("get", "mysql/master/t", json!({})),
    ]);
    consul.clear_requests();
    let reply = client.put_json("/v1/txn", ops).await;
    reply.expect(200);
    let body = reply.json();
    assert_eq!(body["Errors"], Value::Null);
    let results = body["Results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[0]["KV"]["Value"],
        Value::Null,
        "a set returns no value"
    );
    assert_eq!(
        value_of(&results[2]["KV"]).as_deref(),
        Some(&b"db2:3306"[..])
    );
    assert_eq!(
        results[0]["KV"]["ModifyIndex"], results[1]["KV"]["ModifyIndex"],
        "one transaction, one index"
    );
    assert_eq!(
        consul.kv_string("mysql/master/t/hostname").as_deref(),
        Some("db2")
    );
    assert_eq!(
        consul.requests(),
        [("PUT".to_owned(), "/v1/txn".to_owned())],
        "a routing change is one request"
    );
}

#[tokio::test]
async fn a_failing_check_rolls_back_the_whole_transaction() {
    let (consul, client) = start().await;
    client.put("/v1/kv/guard", "g").await.expect(200);
    let guard = consul.kv_entry("guard").unwrap().modify_index;
    let ops = json!([
        kv_op("set", "x", json!({"Value": B64.encode("1")})),
        kv_op("delete", "guard", json!({})),
        kv_op("check-index", "guard", json!({"Index": guard + 100})),
    ]);
    let reply = client.put_json("/v1/txn", ops).await;
    reply.expect(409);
    let body = reply.json();
    assert_eq!(body["Results"], Value::Null);
    let errors = body["Errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["OpIndex"], 2);
    assert!(
        errors[0]["What"]
            .as_str()
            .unwrap()
            .contains("doesn't exist"),
        "the check saw the delete before it: {body}"
    );
    assert!(consul.kv("x").is_none(), "the set was rolled back");
    assert_eq!(
        consul.kv_string("guard").as_deref(),
        Some("g"),
        "the delete too"
    );

    // Every failing op is reported.
    let ops = json!([
        kv_op("check-index", "guard", json!({"Index": guard + 1})),
        kv_op(
            "cas",
            "guard",
            json!({"Index": guard + 1, "Value": B64.encode("z")})
        ),
        kv_op("check-not-exists", "guard", json!({})),
    ]);
    let reply = client.put_json("/v1/txn", ops).await;
    reply.expect(409);
    let errors = reply.json()["Errors"].clone();
    let whats: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["What"].as_str().unwrap())
        .collect();
    assert!(whats[0].contains("failed index check"), "{whats:?}");
    assert!(whats[1].contains("index is stale"), "{whats:?}");
    assert!(whats[2].contains("exists"), "{whats:?}");

    // And with the right index the same guard passes.
    let ops = json!([
        kv_op("check-index", "guard", json!({"Index": guard})),
        kv_op("set", "x", json!({"Value": B64.encode("1")})),
    ]);
    client.put_json("/v1/txn", ops).await.expect(200);
    assert_eq!(consul.kv_string("x").as_deref(), Some("1"));
}

#[tokio::test]
async fn transactions_refuse_what_consul_refuses() {
    let (consul, client) = start().await;
    let many: Vec<Value> = (0..129)
        .map(|i| kv_op("set", &format!("k{i}"), json!({"Value": B64.encode("v")})))
        .collect();
    let reply = client.put_json("/v1/txn", Value::Array(many)).await;
    reply.expect(413);
    assert_eq!(
        reply.body,
        "Transaction contains too many operations (129 > 128)"
    );
    assert!(consul.kv("k0").is_none());
    let most: Vec<Value> = (0..128)
        .map(|i| kv_op("set", &format!("k{i}"), json!({"Value": B64.encode("v")})))
        .collect();
    client
        .put_json("/v1/txn", Value::Array(most))
        .await
        .expect(200);

    let bad = client.put("/v1/txn", "[{\"KV\": ").await;
    bad.expect(400);
    assert!(
        bad.body.starts_with("Failed to parse body:"),
        "{}",
        bad.body
    );
    client
        .put_json("/v1/txn", json!({"KV": {}}))
        .await
        .expect(400);
    client
        .put_json(
            "/v1/txn",
            json!([kv_op("set", "b", json!({"Value": "%%%"}))]),
        )
        .await
        .expect(400);
    client
        .put_json(
            "/v1/txn",
            json!([kv_op("set", "b", json!({"Index": "seven"}))]),
        )
        .await
        .expect(400);

    let unknown = client
        .put_json("/v1/txn", json!([kv_op("frobnicate", "b", json!({}))]))
        .await;
    unknown.expect(409);
    assert_eq!(
        unknown.json()["Errors"][0]["What"],
        "unknown KV verb \"frobnicate\""
    );
    let keyless = client
        .put_json("/v1/txn", json!([kv_op("set", "", json!({}))]))
        .await;
    keyless.expect(409);
    assert_eq!(keyless.json()["Errors"][0]["What"], "Must provide key");

    let huge = B64.encode(vec![b'x'; 512 * 1024 + 1]);
    client
        .put_json(
            "/v1/txn",
            json!([kv_op("set", "h", json!({"Value": huge}))]),
        )
        .await
        .expect(413);

    let node = client
        .put_json(
            "/v1/txn",
            json!([{"Node": {"Verb": "get", "Node": {"Node": "n"}}}]),
        )
        .await;
    node.expect(501);
}

#[tokio::test]
async fn transaction_locks_follow_sessions() {
    let (_consul, client) = start().await;
    let mine = client.session(json!({"Name": "mine"})).await;
    let theirs = client.session(json!({"Name": "theirs"})).await;
    let ops = json!([kv_op(
        "lock",
        "leader",
        json!({"Session": mine, "Value": B64.encode("me")})
    )]);
    let reply = client.put_json("/v1/txn", ops).await;
    reply.expect(200);
    assert_eq!(reply.json()["Results"][0]["KV"]["Session"], mine.as_str());
    assert_eq!(reply.json()["Results"][0]["KV"]["LockIndex"], 1);

    let ops = json!([
        kv_op("check-session", "leader", json!({"Session": theirs})),
        kv_op("set", "route", json!({"Value": B64.encode("x")})),
    ]);
    let reply = client.put_json("/v1/txn", ops).await;
    reply.expect(409);
    assert!(reply.json()["Errors"][0]["What"]
        .as_str()
        .unwrap()
        .contains("failed session check"));

    let ops = json!([kv_op("lock", "leader", json!({"Session": theirs}))]);
    let reply = client.put_json("/v1/txn", ops).await;
    reply.expect(409);
    assert!(reply.json()["Errors"][0]["What"]
        .as_str()
        .unwrap()
        .contains("lock is already held"));

    // Read-only transactions carry the read headers.
    let ops = json!([kv_op("get", "leader", json!({}))]);
    let reply = client.put_json("/v1/txn", ops).await;
    reply.expect(200);
    assert_eq!(reply.header("X-Consul-KnownLeader"), Some("true"));
}

// --------------------------------------------------------------------------- Sessions

#[tokio::test]
async fn a_session_holds_a_lock_until_destroyed_then_lock_delay_applies() {
    let (consul, client) = start().await;
    let leader = client
        .session(json!({"Name": "pointsman", "TTL": "15s", "LockDelay": "1s"}))
        .await;
    let follower = client.session(json!({"Name": "other", "TTL": "15s"})).await;

    let acquired = client
        .put(
            &format!("/v1/kv/pointsman/leader?acquire={leader}"),
            "node-a",
        )
        .await;
    assert_eq!(acquired.body, "true");
    assert_eq!(
        client
            .put(
                &format!("/v1/kv/pointsman/leader?acquire={follower}"),
                "node-b"
            )
            .await
            .body,
        "false"
    );
    let entry = client.get("/v1/kv/pointsman/leader").await.json()[0].clone();
    assert_eq!(entry["Session"], leader.as_str());
    assert_eq!(entry["LockIndex"], 1);
    assert_eq!(value_of(&entry).as_deref(), Some(&b"node-a"[..]));

    // Re-acquiring by the holder updates the value, not the lock index.
    client
        .put(
            &format!("/v1/kv/pointsman/leader?acquire={leader}"),
            "node-a2",
        )
        .await
        .expect(200);
    assert_eq!(consul.kv_entry("pointsman/leader").unwrap().lock_index, 1);
    // A plain PUT does not need the lock and keeps the holder; Consul's kvsSetTxn does
    // not carry LockIndex over, so it drops back to 0.
    client
        .put("/v1/kv/pointsman/leader", "plain")
        .await
        .expect(200);
    let entry = consul.kv_entry("pointsman/leader").unwrap();
    assert_eq!(entry.session.as_deref(), Some(leader.as_str()));
    assert_eq!(entry.lock_index, 0);
    assert_eq!(
        client
            .put(&format!("/v1/kv/pointsman/leader?release={follower}"), "")
            .await
            .body,
        "false",
        "only the holder releases"
    );

    let renewed = client.put(&format!("/v1/session/renew/{leader}"), "").await;
    renewed.expect(200);
    assert_eq!(renewed.json()[0]["ID"], leader.as_str());
    assert_eq!(renewed.json()[0]["TTL"], "15s");

    let destroyed = client
        .put(&format!("/v1/session/destroy/{leader}"), "")
        .await;
    assert_eq!(destroyed.body, "true");
    assert_eq!(consul.kv_entry("pointsman/leader").unwrap().session, None);
    assert_eq!(
        client
            .put(
                &format!("/v1/kv/pointsman/leader?acquire={follower}"),
                "node-b"
            )
            .await
            .body,
        "false",
        "lock delay after the holder's session was invalidated"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        client
            .put(
                &format!("/v1/kv/pointsman/leader?acquire={follower}"),
                "node-b"
            )
            .await
            .body,
        "true"
    );
    let entry = consul.kv_entry("pointsman/leader").unwrap();
    assert_eq!(entry.lock_index, 1);
    assert_eq!(entry.session.as_deref(), Some(follower.as_str()));
    let released = client
        .put(
            &format!("/v1/kv/pointsman/leader?release={follower}"),
            "bye",
        )
        .await;
    assert_eq!(released.body, "true");
    let entry = consul.kv_entry("pointsman/leader").unwrap();
    assert_eq!(entry.lock_index, 1, "a release leaves LockIndex alone");
    assert_eq!(entry.session, None);
}

#[tokio::test]
async fn session_errors_match_consul() {
    let (consul, client) = start().await;
    let gone = client
        .put("/v1/session/renew/1b4e1a8e-0000-0000-0000-000000000000", "")
        .await;
    gone.expect(404);
    assert_eq!(
        gone.body,
        "Session id '1b4e1a8e-0000-0000-0000-000000000000' not found"
    );

    // Consul rejects these in the RPC layer, which its HTTP layer answers with 500.
    let short = client
        .put_json("/v1/session/create", json!({"TTL": "5s"}))
        .await;
    short.expect(500);
    assert_eq!(
        short.body,
        "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"
    );
    client
        .put_json("/v1/session/create", json!({"TTL": "86401s"}))
        .await
        .expect(500);
    client
        .put_json("/v1/session/create", json!({"TTL": "86400s"}))
        .await
        .expect(200);
    let garbled = client
        .put_json("/v1/session/create", json!({"TTL": "soon"}))
        .await;
    garbled.expect(500);
    assert!(
        garbled.body.starts_with("Session TTL 'soon' invalid"),
        "{}",
        garbled.body
    );
    let behavior = client
        .put_json("/v1/session/create", json!({"Behavior": "explode"}))
        .await;
    behavior.expect(500);
    assert_eq!(behavior.body, "Invalid Behavior setting 'explode'");
    let bad = client.put("/v1/session/create", "{not json").await;
    bad.expect(400);
    assert!(
        bad.body.starts_with("Request decode failed:"),
        "{}",
        bad.body
    );
    let unchecked = client
        .put_json("/v1/session/create", json!({"Checks": ["nope"]}))
        .await;
    unchecked.expect(500);
    assert_eq!(unchecked.body, "Missing check 'nope' registration");

    let stranger = client.put("/v1/kv/k?acquire=no-such-session", "x").await;
    stranger.expect(500);
    assert!(
        stranger.body.contains("invalid session"),
        "{}",
        stranger.body
    );
    assert!(consul.kv("k").is_none());
    client.put("/v1/session/renew/", "").await.expect(400);
}

#[tokio::test]
async fn an_expired_session_deletes_or_releases_what_it_held() {
    let options = ConsulOptions {
        session_ttl_min: Duration::from_secs(1),
        ..ConsulOptions::default()
    };
    let (consul, client) = start_with(options).await;
    let started = Instant::now();
    let deleting = client
        .session(json!({"TTL": "1s", "Behavior": "delete", "LockDelay": 0}))
        .await;
    let releasing = client.session(json!({"TTL": "1s", "LockDelay": 0})).await;
    let renewed = client.session(json!({"TTL": "1s"})).await;
    client
        .put(&format!("/v1/kv/gone?acquire={deleting}"), "x")
        .await
        .expect(200);
    client
        .put(&format!("/v1/kv/kept?acquire={releasing}"), "y")
        .await
        .expect(200);

    // The server's timer is TTL × 2: a renewal within that keeps the session.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(consul.kv("gone").is_some(), "expired before 2 × TTL");
    client
        .put(&format!("/v1/session/renew/{renewed}"), "")
        .await
        .expect(200);

    wait_until("both sessions to expire", Duration::from_secs(5), || {
        consul.kv("gone").is_none() && consul.kv_entry("kept").is_some_and(|e| e.session.is_none())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "expired before 2 × TTL"
    );
    let kept = consul.kv_entry("kept").expect("released, not deleted");
    assert_eq!(kept.session, None);
    assert_eq!(kept.value.as_deref(), Some(&b"y"[..]));
    assert_eq!(consul.sessions(), std::slice::from_ref(&renewed));
    client
        .put(&format!("/v1/session/renew/{deleting}"), "")
        .await
        .expect(404);
}

#[tokio::test]
async fn a_session_linked_to_a_ttl_check_dies_when_the_check_lapses() {
    let (consul, client) = start().await;
    client
        .put_json(
            "/v1/agent/service/register",
            json!({"ID": "agent-a", "Name": "pointsman",
                   "Check": {"TTL": "500ms", "Status": "passing"}}),
        )
        .await
        .expect(200);
    let session = client
        .session(
            json!({"TTL": "10s", "LockDelay": "300ms", "NodeChecks": ["serfHealth"],
                        "ServiceChecks": [{"ID": "service:agent-a"}]}),
        )
        .await;
    client
        .put(&format!("/v1/kv/pointsman/leader?acquire={session}"), "a")
        .await
        .expect(200);
    let index = client.get("/v1/kv/pointsman/leader").await.index();
    let passed = Instant::now();
    client
        .put("/v1/agent/check/pass/service:agent-a", "")
        .await
        .expect(200);

    // Nobody passes the check any more: a blocking reader wakes when the check's
    // critical status takes the session and its lock with it.
    let woken = client
        .get(&format!("/v1/kv/pointsman/leader?index={index}&wait=5s"))
        .await;
    let woke = Instant::now();
    woken.expect(200);
    assert!(woken.json()[0].get("Session").is_none(), "{}", woken.body);
    assert!(
        woke >= passed + Duration::from_millis(500),
        "the check lapsed {:?} after its last pass, before its TTL",
        woke - passed
    );
    assert_eq!(
        consul.check_status("service:agent-a").as_deref(),
        Some("critical")
    );
    assert!(consul.sessions().is_empty());
    client
        .put(&format!("/v1/session/renew/{session}"), "")
        .await
        .expect(404);
    // The invalidation started the session's lock-delay.
    let other = client.session(json!({"TTL": "10s"})).await;
    let refused = client
        .put(&format!("/v1/kv/pointsman/leader?acquire={other}"), "b")
        .await;
    assert_eq!(refused.body, "false");
    wait_until("the lock-delay to run out", Duration::from_secs(3), || {
        consul.acquisitions("pointsman/leader").len() == 1
    })
    .await;
}

#[tokio::test]
async fn requests_and_lock_grants_are_timed_as_the_server_saw_them() {
    let (consul, client) = start().await;
    let first = client.session(json!({"TTL": "10s", "LockDelay": 0})).await;
    let second = client.session(json!({"TTL": "10s", "LockDelay": 0})).await;
    let before = tokio::time::Instant::now();
    let acquire = format!("/v1/kv/leader?acquire={first}");
    assert_eq!(client.put(&acquire, "1").await.body, "true");
    // A holder re-acquiring only updates the value: no new grant.
    assert_eq!(client.put(&acquire, "1b").await.body, "true");
    assert_eq!(
        client
            .put(&format!("/v1/kv/leader?acquire={second}"), "2")
            .await
            .body,
        "false"
    );
    client
        .put(&format!("/v1/kv/leader?release={first}"), "")
        .await
        .expect(200);
    client
        .put_json(
            "/v1/txn",
            json!([kv_op("lock", "leader", json!({"Session": second}))]),
        )
        .await
        .expect(200);
    let after = tokio::time::Instant::now();

    let grants = consul.acquisitions("leader");
    let holders: Vec<(&str, u64)> = grants
        .iter()
        .map(|g| (g.session.as_str(), g.lock_index))
        .collect();
    assert_eq!(holders, [(first.as_str(), 1), (second.as_str(), 2)]);
    assert!(grants[0].at >= before && grants[0].at <= grants[1].at && grants[1].at <= after);
    assert!(consul.acquisitions("other").is_empty());

    let timed = consul.requests_at();
    assert_eq!(
        timed
            .iter()
            .map(|(_, m, p)| (m.clone(), p.clone()))
            .collect::<Vec<_>>(),
        consul.requests()
    );
    assert!(timed.windows(2).all(|w| w[0].0 <= w[1].0));
    let acquired_at = timed
        .iter()
        .find(|(_, _, path)| *path == acquire)
        .map(|(at, _, _)| *at)
        .expect("the acquire was logged");
    assert!(acquired_at >= before && acquired_at <= grants[0].at);
}

// --------------------------------------------------------------------------- Services

#[tokio::test]
async fn a_registered_service_shows_in_catalog_and_health_with_its_ttl_check() {
    let (consul, client) = start().await;
    let reply = client
        .put_json(
            "/v1/agent/service/register",
            json!({
                "ID": "mysql-t-primary",
                "Name": "mysql",
                "Tags": ["primary", "t"],
                "Address": "10.0.0.5",
                "Port": 3306,
                "Meta": {"cluster": "t"},
                "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "10m"},
            }),
        )
        .await;
    reply.expect(200);
    assert_eq!(reply.body, "");
    let services = consul.services();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].id, "mysql-t-primary");
    assert_eq!(services[0].tags, ["primary", "t"]);
    assert_eq!(services[0].port, 3306);
    assert_eq!(services[0].meta["cluster"], "t");
    assert_eq!(
        consul.check_status("service:mysql-t-primary").as_deref(),
        Some("critical"),
        "a TTL check starts critical"
    );

    assert_eq!(
        client.get("/v1/health/service/mysql?passing").await.json(),
        json!([])
    );
    let health = client.get("/v1/health/service/mysql").await.json();
    let checks = health[0]["Checks"].as_array().unwrap();
    let ids: Vec<&str> = checks
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["serfHealth", "service:mysql-t-primary"]);
    assert_eq!(health[0]["Service"]["Address"], "10.0.0.5");

    let catalog = client.get("/v1/catalog/service/mysql").await;
    catalog.expect(200);
    let index = catalog.index();
    let node = &catalog.json()[0];
    assert_eq!(node["Node"], "pointsman-test");
    assert_eq!(node["Datacenter"], "dc1");
    assert_eq!(node["Address"], "127.0.0.1");
    assert_eq!(node["ServiceID"], "mysql-t-primary");
    assert_eq!(node["ServiceName"], "mysql");
    assert_eq!(node["ServiceAddress"], "10.0.0.5");
    assert_eq!(node["ServicePort"], 3306);
    assert_eq!(node["ServiceTags"], json!(["primary", "t"]));
    assert_eq!(node["ServiceMeta"], json!({"cluster": "t"}));
    assert!(node["CreateIndex"].as_u64().unwrap() > 0);
    assert!(node["ModifyIndex"].as_u64().unwrap() > 0);
    assert_eq!(
        client
            .get("/v1/catalog/service/mysql?tag=PRIMARY")
            .await
            .json()[0]["ServiceID"],
        "mysql-t-primary"
    );
    assert_eq!(
        client
            .get("/v1/catalog/service/mysql?tag=replica")
            .await
            .json(),
        json!([])
    );
    assert_eq!(
        client.get("/v1/catalog/service/nothing").await.json(),
        json!([])
    );

    // A blocking catalog read wakes when the check passes.
    let watcher = client.clone();
    let watch = tokio::spawn(async move {
        watcher
            .get(&format!(
                "/v1/health/service/mysql?passing&index={index}&wait=20s"
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .put(
            "/v1/agent/check/pass/service:mysql-t-primary?note=replicating",
            "",
        )
        .await
        .expect(200);
    let woke = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("the health watcher woke")
        .expect("the watcher ran");
    assert!(woke.index() > index);
    assert_eq!(woke.json().as_array().unwrap().len(), 1);
    assert_eq!(
        consul.check_status("service:mysql-t-primary").as_deref(),
        Some("passing")
    );
    assert_eq!(
        consul.check_output("service:mysql-t-primary").as_deref(),
        Some("replicating")
    );

    client
        .put("/v1/agent/check/warn/service:mysql-t-primary", "")
        .await
        .expect(200);
    assert_eq!(
        client.get("/v1/health/service/mysql?passing").await.json(),
        json!([]),
        "?passing leaves out warnings too"
    );
    assert_eq!(
        client
            .get("/v1/health/service/mysql?passing=false")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    client
        .get("/v1/health/service/mysql?passing=maybe")
        .await
        .expect(400);

    let agent = client.get("/v1/agent/services").await.json();
    assert_eq!(agent["mysql-t-primary"]["Service"], "mysql");
    assert_eq!(agent["mysql-t-primary"]["Port"], 3306);
}

#[tokio::test]
async fn a_ttl_check_goes_critical_when_its_ttl_lapses() {
    let (consul, client) = start().await;
    client
        .put_json(
            "/v1/agent/service/register",
            json!({"Name": "probe", "Port": 1, "Check": {"TTL": "400ms"}}),
        )
        .await
        .expect(200);
    client
        .put("/v1/agent/check/pass/service:probe", "")
        .await
        .expect(200);
    let index = client.get("/v1/health/service/probe").await.index();
    assert_eq!(
        consul.check_status("service:probe").as_deref(),
        Some("passing")
    );

    let started = Instant::now();
    let woke = client
        .get(&format!("/v1/health/service/probe?index={index}&wait=10s"))
        .await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "lapsed early: {took:?}");
    assert!(took < Duration::from_secs(3), "never lapsed: {took:?}");
    let checks = woke.json()[0]["Checks"].clone();
    assert_eq!(checks[1]["Status"], "critical");
    assert_eq!(checks[1]["Output"], "TTL expired");
    assert_eq!(
        consul.check_status("service:probe").as_deref(),
        Some("critical")
    );
}

#[tokio::test]
async fn unknown_ids_and_bad_registrations_are_refused() {
    let (consul, client) = start().await;
    let unknown = client.put("/v1/agent/service/deregister/nope", "").await;
    unknown.expect(404);
    assert_eq!(
        unknown.body,
        "Unknown service ID \"nope\". Ensure that the service ID is passed, not the service name."
    );
    let unknown = client.put("/v1/agent/check/pass/nope", "").await;
    unknown.expect(404);
    assert_eq!(
        unknown.body,
        "Unknown check ID \"nope\". Ensure that the check ID is passed, not the check name."
    );
    client.get("/v1/agent/check/pass/nope").await.expect(405);

    let refusals = [
        (json!({"Port": 1}), "Missing service name"),
        (
            json!({"Name": "a", "Address": "0.0.0.0"}),
            "Invalid service address",
        ),
        (
            json!({"Name": "a", "Check": {"Notes": "no kind"}}),
            "Invalid check: TTL must be > 0 for TTL checks",
        ),
        (
            json!({"Name": "a", "Check": {"HTTP": "http://127.0.0.1:1/"}}),
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks",
        ),
        (
            json!({"Name": "a", "Check": {"TTL": "1s", "Interval": "1s"}}),
            "Invalid check: Interval and TTL cannot both be specified",
        ),
        (
            json!({"Name": "a", "Meta": {"consul-x": "y"}}),
            "Invalid Service Meta: Key prefix 'consul-' is reserved for internal use",
        ),
        (
            json!({"Name": "a", "Check": {"TTL": "1s", "Status": "fine"}}),
            "Status for checks must 'passing', 'warning', 'critical'",
        ),
    ];
    for (body, text) in refusals {
        let reply = client
            .put_json("/v1/agent/service/register", body.clone())
            .await;
        reply.expect(400);
        assert_eq!(reply.body, text, "{body}");
    }
    let bad = client.put("/v1/agent/service/register", "{").await;
    bad.expect(400);
    assert!(
        bad.body.starts_with("Request decode failed:"),
        "{}",
        bad.body
    );
    let typed = client
        .put_json(
            "/v1/agent/service/register",
            json!({"Name": "a", "Port": "3306"}),
        )
        .await;
    typed.expect(400);
    assert!(consul.services().is_empty());

    // ID defaults to Name; deregistering removes the service and its checks.
    client
        .put_json(
            "/v1/agent/service/register",
            json!({"Name": "web", "Check": {"TTL": "10s"}}),
        )
        .await
        .expect(200);
    assert_eq!(consul.services()[0].id, "web");
    client
        .put("/v1/agent/service/deregister/web", "")
        .await
        .expect(200);
    assert!(consul.services().is_empty());
    assert_eq!(consul.check_status("service:web"), None);
    assert_eq!(
        client.get("/v1/catalog/service/web").await.json(),
        json!([])
    );
}

#[tokio::test]
async fn several_checks_are_numbered_and_reregistration_keeps_their_status() {
    let (consul, client) = start().await;
    let registration = json!({
        "Name": "db",
        "Checks": [{"TTL": "30s"}, {"TTL": "30s", "Status": "passing"}],
    });
    client
        .put_json("/v1/agent/service/register", registration.clone())
        .await
        .expect(200);
    assert_eq!(
        consul.check_status("service:db:1").as_deref(),
        Some("critical")
    );
    assert_eq!(
        consul.check_status("service:db:2").as_deref(),
        Some("passing")
    );
    client
        .put("/v1/agent/check/pass/service:db:1", "")
        .await
        .expect(200);
    let before = client.get("/v1/catalog/service/db").await.index();
    client
        .put_json("/v1/agent/service/register", registration)
        .await
        .expect(200);
    assert_eq!(
        consul.check_status("service:db:1").as_deref(),
        Some("passing")
    );
    assert_eq!(
        client.get("/v1/catalog/service/db").await.index(),
        before,
        "an identical registration changes nothing a watcher sees"
    );
}

#[tokio::test]
async fn a_service_critical_past_its_deadline_is_deregistered() {
    let options = ConsulOptions {
        check_deregister_interval_min: Duration::from_millis(100),
        ..ConsulOptions::default()
    };
    let (consul, client) = start_with(options).await;
    client
        .put_json(
            "/v1/agent/service/register",
            json!({"Name": "doomed", "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "300ms"}}),
        )
        .await
        .expect(200);
    client
        .put_json(
            "/v1/agent/service/register",
            json!({"Name": "healthy", "Check": {"TTL": "30s", "Status": "passing", "DeregisterCriticalServiceAfter": "300ms"}}),
        )
        .await
        .expect(200);
    let started = Instant::now();
    wait_until("the critical service to go", Duration::from_secs(5), || {
        consul.services().iter().all(|s| s.name != "doomed")
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(consul.services().len(), 1, "the passing one stays");
}

#[tokio::test]
async fn http_and_tcp_checks_probe_their_targets() {
    let (consul, client) = start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_address = closed.local_addr().unwrap();
    drop(closed);
    client
        .put_json(
            "/v1/agent/service/register",
            json!({
                "Name": "api",
                "Checks": [
                    {"CheckID": "api-http", "HTTP": format!("{}/v1/status/leader", consul.url()), "Interval": "1s"},
                    {"CheckID": "api-tcp", "TCP": consul.address().to_string(), "Interval": "1s"},
                    {"CheckID": "api-dead", "TCP": closed_address.to_string(), "Interval": "1s", "Timeout": "500ms"},
                ],
            }),
        )
        .await
        .expect(200);
    wait_until("the probes to pass", Duration::from_secs(5), || {
        consul.check_status("api-http").as_deref() == Some("passing")
            && consul.check_status("api-tcp").as_deref() == Some("passing")
    })
    .await;
    wait_until(
        "the dead port's probe to run",
        Duration::from_secs(5),
        || {
            consul
                .check_output("api-dead")
                .is_some_and(|o| o.contains("dial tcp"))
        },
    )
    .await;
    assert_eq!(consul.check_status("api-dead").as_deref(), Some("critical"));
    assert!(consul
        .check_output("api-http")
        .unwrap()
        .starts_with("HTTP GET "));
    let not_ttl = client.put("/v1/agent/check/pass/api-http", "").await;
    not_ttl.expect(500);
    assert_eq!(
        not_ttl.body,
        "CheckID \"api-http\" does not have associated TTL"
    );
}

// ----------------------------------------------------------------- ACLs, datacenters

#[tokio::test]
async fn with_acls_on_only_the_token_is_let_in() {
    let options = ConsulOptions {
        acl_token: Some("s3cret".into()),
        ..ConsulOptions::default()
    };
    let (consul, client) = start_with(options).await;
    let anonymous = client.put("/v1/kv/k", "x").await;
    anonymous.expect(403);
    assert!(
        anonymous.body.starts_with("Permission denied"),
        "{}",
        anonymous.body
    );
    let wrong = client
        .with_header("X-Consul-Token", "guess")
        .get("/v1/kv/k")
        .await;
    wrong.expect(403);
    assert_eq!(wrong.body, "ACL not found");
    assert!(consul.kv("k").is_none());

    let admin = client.with_header("X-Consul-Token", "s3cret");
    admin.put("/v1/kv/k", "x").await.expect(200);
    admin.get("/v1/kv/k").await.expect(200);
    client
        .with_header("Authorization", "Bearer s3cret")
        .get("/v1/kv/k")
        .await
        .expect(200);
    client.get("/v1/kv/k?token=s3cret").await.expect(200);

    client.get("/v1/kv/k").await.expect(403);
    // Lists are filtered rather than refused, as Consul does.
    client.get("/v1/kv/?recurse").await.expect(404);
    let txn = client
        .put_json(
            "/v1/txn",
            json!([kv_op("set", "k", json!({"Value": B64.encode("y")}))]),
        )
        .await;
    txn.expect(409);
    assert!(txn.json()["Errors"][0]["What"]
        .as_str()
        .unwrap()
        .starts_with("Permission denied"));
    assert_eq!(consul.kv_string("k").as_deref(), Some("x"));

    client
        .put_json("/v1/agent/service/register", json!({"Name": "a"}))
        .await
        .expect(403);
    client
        .put_json("/v1/session/create", json!({}))
        .await
        .expect(403);
    admin
        .put_json("/v1/agent/service/register", json!({"Name": "a"}))
        .await
        .expect(200);
    assert_eq!(client.get("/v1/agent/services").await.json(), json!({}));
    assert_eq!(client.get("/v1/catalog/service/a").await.json(), json!([]));
    assert_eq!(
        admin
            .get("/v1/catalog/service/a")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn another_datacenter_has_no_path() {
    let (_consul, client) = start().await;
    client.put("/v1/kv/k", "x").await.expect(200);
    for path in [
        "/v1/kv/k?dc=dc2",
        "/v1/catalog/service/a?dc=dc2",
        "/v1/health/service/a?dc=dc2",
    ] {
        let reply = client.get(path).await;
        reply.expect(500);
        assert_eq!(reply.body, "No path to datacenter", "{path}");
    }
    client.put("/v1/kv/k?dc=dc2", "y").await.expect(500);
    client
        .put_json("/v1/txn?dc=dc2", json!([kv_op("get", "k", json!({}))]))
        .await
        .expect(500);
    client.get("/v1/kv/k?dc=dc1").await.expect(200);
}

// ----------------------------------------------------------------- Failure modes

#[tokio::test]
async fn failure_modes_refuse_slow_down_and_recover() {
    let (consul, client) = start().await;
    client.put("/v1/kv/k", "x").await.expect(200);

    consul.set_failure(Failure::Error500).await;
    let failed = client.get("/v1/kv/k").await;
    failed.expect(500);
    assert_eq!(failed.body, "No cluster leader");
    client.put("/v1/agent/check/pass/x", "").await.expect(500);

    consul
        .set_failure(Failure::Slow(Duration::from_millis(400)))
        .await;
    let started = Instant::now();
    client.get("/v1/kv/k").await.expect(200);
    assert!(started.elapsed() >= Duration::from_millis(400));

    consul.set_failure(Failure::None).await;
    let index = client.get("/v1/kv/k").await.index();
    let watcher = client.clone();
    let in_flight = tokio::spawn(async move {
        watcher
            .try_send(
                reqwest::Method::GET,
                &format!("/v1/kv/k?index={index}&wait=30s"),
                Vec::new(),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    consul.set_failure(Failure::Down).await;
    let dropped = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the in-flight request ended")
        .expect("the task ran");
    assert!(dropped.is_err(), "a request in flight is dropped");
    let refused = client
        .try_send(reqwest::Method::GET, "/v1/kv/k", Vec::new())
        .await;
    let error = refused.err().expect("nobody listens");
    assert!(error.is_connect(), "connection refused, got {error:?}");
    let seen = consul.requests().len();

    consul.set_failure(Failure::None).await;
    let back = client.get("/v1/kv/k").await;
    back.expect(200);
    assert_eq!(
        value_of(&back.json()[0]).as_deref(),
        Some(&b"x"[..]),
        "same data"
    );
    assert_eq!(
        consul.requests().len(),
        seen + 1,
        "nothing was received while down"
    );
}

#[tokio::test]
async fn every_request_is_logged_in_order() {
    let (consul, client) = start().await;
    client.put("/v1/kv/a?cas=0", "1").await;
    client.get("/v1/kv/a?raw").await;
    client.delete("/v1/kv/a").await;
    client.get("/v1/status/leader").await.expect(200);
    let expected: Vec<(String, String)> = [
        ("PUT", "/v1/kv/a?cas=0"),
        ("GET", "/v1/kv/a?raw"),
        ("DELETE", "/v1/kv/a"),
        ("GET", "/v1/status/leader"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(consul.requests(), expected);
}
