//! The Consul routing backend against the Consul stand-in (tests/support/consul.rs),
//! with hand-built routes and no database: the first write makes orchestrator's five
//! keys and pointsman's key in one `/v1/txn` and registers the services; a failover
//! moves them and drops the old primary's service; a withdrawn writer deletes the
//! keys; a second reconcile changes nothing; drift is repaired; an older decision is
//! refused and writes nothing; the token is sent and a wrong one is a clear error;
//! Consul down or failing is a clear error. The TLS settings are tested against a real
//! TLS handshake with the certificates in tests/fixtures/consul-tls.

mod support;

use pointsman::config::{ConsulConfig, ConsulSettings, HumanDuration, Secret};
use pointsman::routing::consul::ConsulRouter;
use pointsman::routing::{Change, ClusterRoute, Endpoint, Router, Routes};
use pointsman::topology::InstanceKey;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::consul::{ConsulOptions, ConsulStandIn, Failure};

fn settings(address: &str) -> ConsulSettings {
    ConsulSettings {
        config: ConsulConfig {
            address: Some(address.to_string()),
            services: false,
            timeout: HumanDuration(Duration::from_secs(2)),
            ..ConsulConfig::default()
        },
        token: None,
    }
}

// ---------------------------------------------------------------------------------
// TLS: ca_file, cert_file and key_file against a real handshake.
// ---------------------------------------------------------------------------------

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/consul-tls")
        .join(name)
}

/// A TLS server that wants a client certificate from the test CA and answers every
/// request `404` with an empty body, as Consul does for a missing key. Returns its
/// port and whether a client certificate was presented.
fn tls_server() -> (u16, Arc<AtomicBool>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = CertificateDer::from_pem_file(fixture("ca.pem")).expect("ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("a CA certificate");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("a client verifier");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture("server.pem"))
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).expect("server.key");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("a server certificate"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let client_certified = Arc::new(AtomicBool::new(false));
    let seen = client_certified.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let config = config.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let Ok(connection) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(connection, stream);
                let mut reader = BufReader::new(&mut tls);
                // One request per connection is enough for these tests.
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                drop(reader);
                if tls.conn.peer_certificates().is_some_and(|c| !c.is_empty()) {
                    seen.store(true, Ordering::SeqCst);
                }
                let _ = tls.write_all(
                    b"HTTP/1.1 404 Not Found\r\nX-Consul-Index: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (port, client_certified)
}

fn one_cluster() -> Routes {
    routes(route(Some(3306), &[], 1))
}

#[tokio::test]
async fn https_with_the_configured_ca_and_client_certificate() {
    let (port, client_certified) = tls_server();
    let mut settings = settings(&format!("https://localhost:{port}"));
    settings.config.ca_file = Some(fixture("ca.pem"));
    settings.config.cert_file = Some(fixture("client.pem"));
    settings.config.key_file = Some(fixture("client.key"));
    let router = ConsulRouter::new(&settings).expect("a router");
    let inspections = router
        .inspect(&one_cluster())
        .await
        .expect("the keys are read over TLS");
    assert_eq!(inspections.len(), 1);
    assert!(
        inspections[0]
            .now
            .contains(&"mysql/master/demo: absent".to_string()),
        "{:?}",
        inspections[0].now
    );
    assert!(!inspections[0].in_sync);
    assert!(
        client_certified.load(Ordering::SeqCst),
        "the client certificate was presented"
    );
}

#[tokio::test]
async fn https_with_an_unknown_ca_is_refused_with_the_address() {
    let (port, _) = tls_server();
    let address = format!("https://localhost:{port}");
    let mut settings = settings(&address);
    settings.config.cert_file = Some(fixture("client.pem"));
    settings.config.key_file = Some(fixture("client.key"));
    // No ca_file: the system's roots do not know the test CA.
    let router = ConsulRouter::new(&settings).expect("a router");
    let error = router
        .inspect(&one_cluster())
        .await
        .expect_err("an unknown server certificate is refused");
    assert!(error.0.contains(&address), "{error}");
    assert!(error.0.contains("TLS handshake failed"), "{error}");
    assert!(error.0.contains("routing.consul.ca_file"), "{error}");
}

// ---------------------------------------------------------------------------------
// Against the Consul stand-in.
// ---------------------------------------------------------------------------------

const PRIMARY_KEY: &str = "mysql/master/demo";
const OURS: &str = "pointsman/routes/demo";

fn local(port: u16) -> Endpoint {
    Endpoint {
        key: InstanceKey::new("127.0.0.1", port),
        addresses: vec!["127.0.0.1".parse().expect("an address")],
    }
}

/// Cluster `demo` with the writer and readers on 127.0.0.1 at these ports.
fn route(writer: Option<u16>, readers: &[u16], epoch: u64) -> ClusterRoute {
    ClusterRoute {
        cluster: "demo".into(),
        writer: writer.map(local),
        readers: readers.iter().copied().map(local).collect(),
        standby: Vec::new(),
        fenced: Vec::new(),
        epoch,
        recovery_id: (epoch > 1).then(|| format!("recovery-{epoch}")),
        decided_at: SystemTime::now(),
    }
}

fn routes(route: ClusterRoute) -> Routes {
    let mut routes = Routes {
        version: 1,
        ..Routes::default()
    };
    routes.clusters.insert(route.cluster.clone(), route);
    routes
}

async fn stand_in() -> ConsulStandIn {
    start(ConsulOptions::default()).await
}

async fn start(options: ConsulOptions) -> ConsulStandIn {
    // reqwest is built without a default TLS provider: the stand-in's own client for
    // its HTTP checks, and the one `drift_is_repaired` builds, need it installed first.
    pointsman::routing::consul::install_crypto_provider();
    ConsulStandIn::start(options).await
}

fn router(consul: &ConsulStandIn) -> ConsulRouter {
    let mut settings = settings(&consul.url());
    settings.config.services = true;
    ConsulRouter::new(&settings).expect("a router")
}

fn whats(changes: &[Change]) -> Vec<String> {
    changes.iter().map(|c| c.what.clone()).collect()
}

fn has(changes: &[Change], what: &str) -> bool {
    changes
        .iter()
        .any(|c| c.what == what && c.cluster == "demo")
}

/// pointsman's key as JSON.
fn ours(consul: &ConsulStandIn) -> serde_json::Value {
    let text = consul.kv_string(OURS).expect("pointsman's key exists");
    serde_json::from_str(&text).expect("pointsman's key is JSON")
}

/// The services' IDs with their tags, sorted.
fn services(consul: &ConsulStandIn) -> Vec<(String, Vec<String>)> {
    let mut services: Vec<(String, Vec<String>)> = consul
        .services()
        .into_iter()
        .map(|s| {
            let mut tags = s.tags;
            tags.sort();
            (s.id, tags)
        })
        .collect();
    services.sort();
    services
}

/// Requests that change something (all but reads and TTL passes).
fn writes(consul: &ConsulStandIn) -> Vec<(String, String)> {
    consul
        .requests()
        .into_iter()
        .filter(|(method, path)| method != "GET" && !path.starts_with("/v1/agent/check/pass/"))
        .collect()
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| t.to_string()).collect()
}

#[tokio::test]
async fn the_first_write_makes_every_key_in_one_txn_and_registers_services() {
    let consul = stand_in().await;
    let router = router(&consul);
    let changes = router
        .reconcile(&routes(route(Some(3306), &[3307, 3308], 1)))
        .await
        .expect("reconciled");

    assert_eq!(
        consul.kv_string(PRIMARY_KEY).as_deref(),
        Some("127.0.0.1:3306")
    );
    assert_eq!(
        consul.kv_string("mysql/master/demo/hostname").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        consul.kv_string("mysql/master/demo/port").as_deref(),
        Some("3306")
    );
    assert_eq!(
        consul.kv_string("mysql/master/demo/ipv4").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        consul.kv_string("mysql/master/demo/ipv6").as_deref(),
        Some(""),
        "no IPv6 address: an empty value, as orchestrator writes it"
    );
    let record = ours(&consul);
    assert_eq!(record["cluster"], "demo");
    assert_eq!(record["primary"], "127.0.0.1:3306");
    assert_eq!(
        record["primary_addresses"],
        serde_json::json!(["127.0.0.1"])
    );
    assert_eq!(
        record["readers"],
        serde_json::json!(["127.0.0.1:3307", "127.0.0.1:3308"])
    );
    assert_eq!(record["epoch"], 1);
    assert!(record["written_by"]
        .as_str()
        .is_some_and(|w| w.starts_with("pointsman ")));

    let kv_writes: Vec<(String, String)> = writes(&consul)
        .into_iter()
        .filter(|(_, path)| !path.starts_with("/v1/agent/"))
        .collect();
    assert_eq!(
        kv_writes,
        vec![("PUT".to_string(), "/v1/txn".to_string())],
        "every key in one transaction"
    );

    assert_eq!(
        services(&consul),
        vec![
            ("mysql-demo-127-0-0-1-3306".into(), tags(&["primary"])),
            ("mysql-demo-127-0-0-1-3307".into(), tags(&["replica"])),
            ("mysql-demo-127-0-0-1-3308".into(), tags(&["replica"])),
        ]
    );
    let primary = consul
        .services()
        .into_iter()
        .find(|s| s.id == "mysql-demo-127-0-0-1-3306")
        .expect("the primary's service");
    assert_eq!(primary.name, "mysql-demo");
    assert_eq!(primary.address, "127.0.0.1");
    assert_eq!(primary.port, 3306);
    assert_eq!(
        primary.meta.get("pointsman-cluster").map(String::as_str),
        Some("demo")
    );
    assert_eq!(
        primary.meta.get("pointsman-role").map(String::as_str),
        Some("primary")
    );
    for id in ["3306", "3307", "3308"] {
        assert_eq!(
            consul
                .check_status(&format!("service:mysql-demo-127-0-0-1-{id}"))
                .as_deref(),
            Some("passing")
        );
    }

    assert!(
        has(&changes, "mysql/master/demo = 127.0.0.1:3306 (was absent)"),
        "{:?}",
        whats(&changes)
    );
    assert!(
        has(&changes, "mysql/master/demo/ipv6 = (empty) (was absent)"),
        "{:?}",
        whats(&changes)
    );
    assert!(
        has(&changes, "pointsman/routes/demo: primary 127.0.0.1:3306, epoch 1, readers 127.0.0.1:3307 127.0.0.1:3308 (was absent)"),
        "{:?}",
        whats(&changes)
    );
    assert!(
        has(
            &changes,
            "service mysql-demo-127-0-0-1-3306 registered [primary]"
        ),
        "{:?}",
        whats(&changes)
    );
    assert!(
        has(
            &changes,
            "service mysql-demo-127-0-0-1-3307 registered [replica]"
        ),
        "{:?}",
        whats(&changes)
    );
    assert_eq!(changes.len(), 6 + 3, "{:?}", whats(&changes));
}

#[tokio::test]
async fn a_second_reconcile_changes_nothing_and_inspect_agrees() {
    let consul = stand_in().await;
    let router = router(&consul);
    let wanted = routes(route(Some(3306), &[3306, 3307], 1));
    router.reconcile(&wanted).await.expect("reconciled");
    let index = consul.index();
    let modify = consul.kv_entry(OURS).expect("our key").modify_index;
    consul.clear_requests();

    let changes = router.reconcile(&wanted).await.expect("reconciled again");
    assert!(changes.is_empty(), "{:?}", whats(&changes));
    assert_eq!(
        writes(&consul),
        Vec::<(String, String)>::new(),
        "nothing written"
    );
    assert_eq!(consul.kv_entry(OURS).expect("our key").modify_index, modify);
    let passes = consul
        .requests()
        .into_iter()
        .filter(|(_, path)| path.starts_with("/v1/agent/check/pass/"))
        .count();
    assert_eq!(
        passes, 2,
        "every wanted service's TTL check is passed at every reconcile"
    );
    // Passing a check is not a KV write: the index moved only for the checks, if at all.
    assert!(consul.index() >= index);

    let inspections = router.inspect(&wanted).await.expect("inspected");
    assert_eq!(inspections.len(), 1);
    let demo = &inspections[0];
    assert!(
        demo.in_sync,
        "should {:#?}\nnow {:#?}",
        demo.should, demo.now
    );
    assert_eq!(demo.should, demo.now);
    for line in [
        "mysql/master/demo = 127.0.0.1:3306",
        "mysql/master/demo/port = 3306",
        "mysql/master/demo/ipv6 = (empty)",
        "pointsman/routes/demo: primary 127.0.0.1:3306, epoch 1, readers 127.0.0.1:3306 127.0.0.1:3307",
        "service mysql-demo 127.0.0.1:3306 [primary,replica] passing",
        "service mysql-demo 127.0.0.1:3307 [replica] passing",
    ] {
        assert!(demo.now.contains(&line.to_string()), "{line:?} not in {:#?}", demo.now);
    }
}

#[tokio::test]
async fn a_failover_moves_the_keys_and_deregisters_the_old_primary() {
    let consul = stand_in().await;
    let router = router(&consul);
    router
        .reconcile(&routes(route(Some(3306), &[3307, 3308], 1)))
        .await
        .expect("reconciled");
    consul.clear_requests();

    let mut after = route(Some(3307), &[3308], 2);
    after.fenced = vec![InstanceKey::new("127.0.0.1", 3306)];
    let changes = router.reconcile(&routes(after)).await.expect("failed over");

    assert_eq!(
        consul.kv_string(PRIMARY_KEY).as_deref(),
        Some("127.0.0.1:3307")
    );
    assert_eq!(
        consul.kv_string("mysql/master/demo/port").as_deref(),
        Some("3307")
    );
    let record = ours(&consul);
    assert_eq!(record["primary"], "127.0.0.1:3307");
    assert_eq!(record["epoch"], 2);
    assert_eq!(record["recovery_id"], "recovery-2");
    assert_eq!(
        services(&consul),
        vec![
            ("mysql-demo-127-0-0-1-3307".into(), tags(&["primary"])),
            ("mysql-demo-127-0-0-1-3308".into(), tags(&["replica"])),
        ],
        "the old primary's service is gone"
    );
    assert_eq!(
        consul
            .check_status("service:mysql-demo-127-0-0-1-3307")
            .as_deref(),
        Some("passing")
    );
    let txns = writes(&consul)
        .into_iter()
        .filter(|(_, path)| path == "/v1/txn")
        .count();
    assert_eq!(txns, 1);

    assert!(
        has(
            &changes,
            "mysql/master/demo = 127.0.0.1:3307 (was 127.0.0.1:3306)"
        ),
        "{:?}",
        whats(&changes)
    );
    assert!(
        has(&changes, "mysql/master/demo/port = 3307 (was 3306)"),
        "{:?}",
        whats(&changes)
    );
    assert!(
        has(
            &changes,
            "service mysql-demo-127-0-0-1-3306 deregistered (was 127.0.0.1:3306 [primary])"
        ),
        "{:?}",
        whats(&changes)
    );
    assert!(
        has(&changes, "service mysql-demo-127-0-0-1-3307 updated to 127.0.0.1:3307 [primary] (was 127.0.0.1:3307 [replica])"),
        "{:?}",
        whats(&changes)
    );
}

#[tokio::test]
async fn a_withdrawn_writer_deletes_the_five_keys() {
    let consul = stand_in().await;
    let router = router(&consul);
    router
        .reconcile(&routes(route(Some(3306), &[3307], 1)))
        .await
        .expect("reconciled");

    let changes = router
        .reconcile(&routes(route(None, &[3307], 2)))
        .await
        .expect("withdrawn");
    assert_eq!(
        consul.kv_keys("mysql/master/"),
        Vec::<String>::new(),
        "no stale primary is named"
    );
    let record = ours(&consul);
    assert_eq!(record["primary"], serde_json::Value::Null);
    assert_eq!(record["epoch"], 2);
    assert_eq!(
        services(&consul),
        vec![("mysql-demo-127-0-0-1-3307".into(), tags(&["replica"]))]
    );
    assert!(
        has(&changes, "mysql/master/demo deleted (was 127.0.0.1:3306)"),
        "{:?}",
        whats(&changes)
    );
    assert!(
        has(
            &changes,
            "mysql/master/demo/hostname deleted (was 127.0.0.1)"
        ),
        "{:?}",
        whats(&changes)
    );

    let again = router
        .reconcile(&routes(route(None, &[3307], 2)))
        .await
        .expect("still withdrawn");
    assert!(again.is_empty(), "{:?}", whats(&again));
}

#[tokio::test]
async fn drift_is_repaired() {
    let consul = stand_in().await;
    let router = router(&consul);
    let wanted = routes(route(Some(3306), &[3307], 1));
    router.reconcile(&wanted).await.expect("reconciled");

    consul.delete_key("mysql/master/demo/port");
    consul.set_key(PRIMARY_KEY, "10.9.9.9:3306");
    let http = reqwest::Client::new();
    let deregistered = http
        .put(format!(
            "{}/v1/agent/service/deregister/mysql-demo-127-0-0-1-3307",
            consul.url()
        ))
        .send()
        .await
        .expect("the stand-in answers");
    assert!(deregistered.status().is_success());
    assert!(!router.inspect(&wanted).await.expect("inspected")[0].in_sync);

    let changes = router.reconcile(&wanted).await.expect("repaired");
    assert!(
        has(&changes, "mysql/master/demo/port = 3306 (was absent)"),
        "{:?}",
        whats(&changes)
    );
    assert!(
        has(
            &changes,
            "mysql/master/demo = 127.0.0.1:3306 (was 10.9.9.9:3306)"
        ),
        "{:?}",
        whats(&changes)
    );
    assert!(
        has(
            &changes,
            "service mysql-demo-127-0-0-1-3307 registered [replica]"
        ),
        "{:?}",
        whats(&changes)
    );
    assert_eq!(changes.len(), 3, "{:?}", whats(&changes));
    assert_eq!(
        consul.kv_string("mysql/master/demo/port").as_deref(),
        Some("3306")
    );
    assert_eq!(
        consul.kv_string(PRIMARY_KEY).as_deref(),
        Some("127.0.0.1:3306")
    );
    assert_eq!(services(&consul).len(), 2);
    assert!(router.inspect(&wanted).await.expect("inspected")[0].in_sync);

    // pointsman's own key deleted by hand is written again too.
    consul.delete_key(OURS);
    let changes = router.reconcile(&wanted).await.expect("repaired");
    assert_eq!(changes.len(), 1, "{:?}", whats(&changes));
    assert_eq!(ours(&consul)["primary"], "127.0.0.1:3306");
}

#[tokio::test]
async fn an_older_decision_naming_another_primary_is_refused_and_writes_nothing() {
    let consul = stand_in().await;
    let newer = router(&consul);
    newer
        .reconcile(&routes(route(Some(3307), &[3308], 9)))
        .await
        .expect("the newer agent writes");
    let index = consul.index();
    let services_before = services(&consul);
    consul.clear_requests();

    let older = router(&consul);
    let error = older
        .reconcile(&routes(route(Some(3306), &[3307, 3308], 4)))
        .await
        .expect_err("an older decision is refused");
    for part in [
        consul.url().as_str(),
        "pointsman/routes/demo names primary 127.0.0.1:3307 at epoch 9",
        "primary 127.0.0.1:3306, epoch 4",
        "nothing was written for cluster demo",
        "delete that key",
    ] {
        assert!(error.0.contains(part), "{part:?} missing from: {error}");
    }
    assert_eq!(
        writes(&consul),
        Vec::<(String, String)>::new(),
        "nothing written"
    );
    assert_eq!(consul.index(), index);
    assert_eq!(
        consul.kv_string(PRIMARY_KEY).as_deref(),
        Some("127.0.0.1:3307")
    );
    assert_eq!(services(&consul), services_before);

    // The same primary at a lower epoch (an agent that just started) keeps the epoch.
    let changes = older
        .reconcile(&routes(route(Some(3307), &[3308], 0)))
        .await
        .expect("same primary");
    assert!(changes.is_empty(), "{:?}", whats(&changes));
    assert_eq!(ours(&consul)["epoch"], 9);

    // The operator's way out: delete the key, and this agent writes its decision.
    consul.delete_key(OURS);
    older
        .reconcile(&routes(route(Some(3306), &[3307, 3308], 4)))
        .await
        .expect("written once the key is gone");
    assert_eq!(
        consul.kv_string(PRIMARY_KEY).as_deref(),
        Some("127.0.0.1:3306")
    );
}

#[tokio::test]
async fn a_write_that_lost_the_race_is_read_again_and_retried() {
    let consul = stand_in().await;
    let a = ConsulRouter::new(&settings(&consul.url())).expect("a router");
    let b = ConsulRouter::new(&settings(&consul.url())).expect("a router");
    // Every answer is slow, so both agents read the same state before either writes:
    // the second transaction fails its check and must be re-planned.
    consul
        .set_failure(Failure::Slow(Duration::from_millis(150)))
        .await;
    let route_a = routes(route(Some(3306), &[3307], 1));
    let route_b = routes(route(Some(3306), &[3308], 1));
    let (from_a, from_b) = tokio::join!(a.reconcile(&route_a), b.reconcile(&route_b));
    from_a.expect("a is written");
    from_b.expect("b is written");
    let txns = consul
        .requests()
        .into_iter()
        .filter(|(method, path)| method == "PUT" && path == "/v1/txn")
        .count();
    assert_eq!(txns, 3, "two writes, one of them retried");
    let readers = ours(&consul)["readers"].clone();
    assert!(
        readers == serde_json::json!(["127.0.0.1:3307"])
            || readers == serde_json::json!(["127.0.0.1:3308"]),
        "{readers}"
    );
}

#[tokio::test]
async fn the_token_is_sent_and_a_wrong_one_is_a_clear_error() {
    let consul = start(ConsulOptions {
        acl_token: Some("the-right-token".into()),
        ..ConsulOptions::default()
    })
    .await;
    let wanted = routes(route(Some(3306), &[3307], 1));
    let with = |token: Option<&str>| {
        let mut settings = settings(&consul.url());
        settings.config.services = true;
        settings.token = token.map(Secret::new);
        ConsulRouter::new(&settings).expect("a router")
    };

    with(Some("the-right-token"))
        .reconcile(&wanted)
        .await
        .expect("the right token may write");
    assert_eq!(
        consul.kv_string(PRIMARY_KEY).as_deref(),
        Some("127.0.0.1:3306")
    );
    assert_eq!(services(&consul).len(), 2);

    let error = with(Some("a-wrong-token"))
        .reconcile(&wanted)
        .await
        .expect_err("a wrong token is refused");
    assert!(error.0.contains(&consul.url()), "{error}");
    assert!(error.0.contains("HTTP 403"), "{error}");
    assert!(error.0.contains("ACL not found"), "{error}");
    assert!(error.0.contains("is not known to this Consul"), "{error}");
    assert!(
        error.0.contains(r#"key_prefix "mysql/master/" and "pointsman/routes/" write, service_prefix "mysql-" write"#),
        "{error}"
    );
    assert!(error.0.contains("routing.consul.token"), "{error}");
    assert!(
        !error.0.contains("a-wrong-token"),
        "the token never shows: {error}"
    );

    let error = with(None)
        .reconcile(&wanted)
        .await
        .expect_err("the anonymous token is refused");
    assert!(error.0.contains("no token is configured"), "{error}");
    assert!(
        error.0.contains("lacks key read on pointsman/routes/demo"),
        "{error}"
    );
    assert!(error.0.contains("Permission denied"), "{error}");
}

#[tokio::test]
async fn consul_down_failing_or_slow_is_a_clear_error() {
    let consul = stand_in().await;
    let mut settings = settings(&consul.url());
    settings.config.timeout = HumanDuration(Duration::from_millis(300));
    let router = ConsulRouter::new(&settings).expect("a router");
    let wanted = one_cluster();
    let url = consul.url();

    consul.set_failure(Failure::Down).await;
    let error = router.reconcile(&wanted).await.expect_err("down");
    assert!(error.0.contains(&url), "{error}");
    assert!(error.0.contains("cannot be reached"), "{error}");
    assert!(error.0.to_lowercase().contains("refused"), "{error}");

    consul.set_failure(Failure::Error500).await;
    let error = router.reconcile(&wanted).await.expect_err("failing");
    assert!(error.0.contains(&url), "{error}");
    assert!(error.0.contains("HTTP 500"), "{error}");
    assert!(error.0.contains("No cluster leader"), "{error}");

    consul
        .set_failure(Failure::Slow(Duration::from_secs(2)))
        .await;
    let error = router.reconcile(&wanted).await.expect_err("slow");
    assert!(error.0.contains(&url), "{error}");
    assert!(error.0.contains("no answer within 300ms"), "{error}");

    consul.set_failure(Failure::None).await;
    router.reconcile(&wanted).await.expect("back");
    assert_eq!(
        consul.kv_string(PRIMARY_KEY).as_deref(),
        Some("127.0.0.1:3306")
    );
}

#[tokio::test]
async fn the_datacenter_is_sent() {
    let consul = stand_in().await;
    let mut settings = settings(&consul.url());
    settings.config.datacenter = Some("dc1".into());
    ConsulRouter::new(&settings)
        .expect("a router")
        .reconcile(&one_cluster())
        .await
        .expect("the stand-in's own datacenter");
    assert!(consul
        .requests()
        .iter()
        .any(|(method, path)| method == "PUT" && path == "/v1/txn?dc=dc1"));

    settings.config.datacenter = Some("dc9".into());
    let error = ConsulRouter::new(&settings)
        .expect("a router")
        .reconcile(&one_cluster())
        .await
        .expect_err("an unknown datacenter");
    assert!(error.0.contains("No path to datacenter"), "{error}");
}
