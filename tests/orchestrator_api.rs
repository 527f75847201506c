//! orchestrator's API under `/api/` against real servers, on MariaDB 10.11 and MySQL 9.7:
//! every answered read in orchestrator's shape (its field names and JSON types, and the
//! right values), a graceful-master-takeover by GET that moves the primary (with basic
//! auth as orchestrator-client sends it, and with a bearer token) and is refused without
//! the token, the global switch, downtime, discover and forget as pointsman's own API
//! then shows them, and the routes not answered. Without a database: actions refused
//! when the agent has no token, reads behind `token_for_reads`, and calls a browser
//! makes for another site's page or origin.

mod support;

use pointsman::config::{Config, Secret};
use pointsman::sandbox::Flavor;
use pointsman::topology::InstanceKey;
use serde_json::{json, Value};
use std::time::Duration;
use support::{automatic_recovery, eventually, probed, read_only_becomes, watch, TestTopology};

const TOKEN: &str = "orc-s3cret";
const PATIENCE: Duration = Duration::from_secs(30);

on_every_flavor!(
    reads_in_orchestrators_shape_and_a_graceful_takeover,
    the_switch_downtime_discover_forget_and_unanswered_routes,
);

/// How a call authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Anonymous,
    Bearer(&'a str),
    /// orchestrator-client's `ORCHESTRATOR_AUTH_USER`/`ORCHESTRATOR_AUTH_PASSWORD`.
    Basic(&'a str, &'a str),
}

/// GETs `path` from the agent at `base`; the status and the JSON answer.
async fn get(base: &str, path: &str, auth: Auth<'_>) -> (u16, Value) {
    call(base, reqwest::Method::GET, path, auth, &[]).await
}

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    auth: Auth<'_>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    // reqwest is built without a default TLS provider: one must be installed first.
    pointsman::routing::consul::install_crypto_provider();
    let client = reqwest::Client::new();
    let mut request = client.request(method, format!("{base}{path}"));
    request = match auth {
        Auth::Anonymous => request,
        Auth::Bearer(token) => request.bearer_auth(token),
        Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
    };
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the agent answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    (status, value)
}

/// An OK envelope's Details; anything else fails the test, saying what came.
async fn ok_details(base: &str, path: &str, auth: Auth<'_>) -> Value {
    let (status, answer) = get(base, path, auth).await;
    assert_eq!(
        (status, &answer["Code"]),
        (200, &json!("OK")),
        "{path}: {answer}"
    );
    assert!(answer["Message"].is_string(), "{path}: {answer}");
    answer["Details"].clone()
}

/// An ERROR envelope with `status`; its message.
async fn refused(base: &str, path: &str, auth: Auth<'_>, status: u16) -> String {
    let (got, answer) = get(base, path, auth).await;
    assert_eq!(
        (got, &answer["Code"]),
        (status, &json!("ERROR")),
        "{path}: {answer}"
    );
    answer["Message"].as_str().expect("a message").to_string()
}

fn key_json(key: &InstanceKey) -> Value {
    json!({"Hostname": key.host, "Port": key.port})
}

fn path_of(key: &InstanceKey) -> String {
    format!("{}/{}", key.host, key.port)
}

/// Every key orchestrator's `Instance` has, with its JSON type: `s` string, `n` number,
/// `b` bool, `k` a key, `c` binlog coordinates, `i` a NullInt64, `a` an array.
const INSTANCE_SHAPE: &[(&str, char)] = &[
    ("Key", 'k'),
    ("InstanceAlias", 's'),
    ("Uptime", 'n'),
    ("ServerID", 'n'),
    ("ServerUUID", 's'),
    ("Version", 's'),
    ("VersionComment", 's'),
    ("FlavorName", 's'),
    ("ReadOnly", 'b'),
    ("Binlog_format", 's'),
    ("BinlogRowImage", 's'),
    ("LogBinEnabled", 'b'),
    ("LogSlaveUpdatesEnabled", 'b'),
    ("LogReplicationUpdatesEnabled", 'b'),
    ("SelfBinlogCoordinates", 'c'),
    ("MasterKey", 'k'),
    ("MasterUUID", 's'),
    ("AncestryUUID", 's'),
    ("IsDetachedMaster", 'b'),
    ("Slave_SQL_Running", 'b'),
    ("ReplicationSQLThreadRuning", 'b'),
    ("Slave_IO_Running", 'b'),
    ("ReplicationIOThreadRuning", 'b'),
    ("ReplicationSQLThreadState", 'n'),
    ("ReplicationIOThreadState", 'n'),
    ("HasReplicationFilters", 'b'),
    ("GTIDMode", 's'),
    ("SupportsOracleGTID", 'b'),
    ("UsingOracleGTID", 'b'),
    ("UsingMariaDBGTID", 'b'),
    ("UsingPseudoGTID", 'b'),
    ("ReadBinlogCoordinates", 'c'),
    ("ExecBinlogCoordinates", 'c'),
    ("IsDetached", 'b'),
    ("RelaylogCoordinates", 'c'),
    ("LastSQLError", 's'),
    ("LastIOError", 's'),
    ("SecondsBehindMaster", 'i'),
    ("SQLDelay", 'n'),
    ("ExecutedGtidSet", 's'),
    ("GtidPurged", 's'),
    ("GtidErrant", 's'),
    ("SlaveLagSeconds", 'i'),
    ("ReplicationLagSeconds", 'i'),
    ("SlaveHosts", 'a'),
    ("Replicas", 'a'),
    ("ClusterName", 's'),
    ("SuggestedClusterAlias", 's'),
    ("DataCenter", 's'),
    ("Region", 's'),
    ("PhysicalEnvironment", 's'),
    ("ReplicationDepth", 'n'),
    ("IsCoMaster", 'b'),
    ("HasReplicationCredentials", 'b'),
    ("ReplicationCredentialsAvailable", 'b'),
    ("SemiSyncAvailable", 'b'),
    ("SemiSyncPriority", 'n'),
    ("SemiSyncMasterEnabled", 'b'),
    ("SemiSyncReplicaEnabled", 'b'),
    ("SemiSyncMasterTimeout", 'n'),
    ("SemiSyncMasterWaitForReplicaCount", 'n'),
    ("SemiSyncMasterStatus", 'b'),
    ("SemiSyncMasterClients", 'n'),
    ("SemiSyncReplicaStatus", 'b'),
    ("LastSeenTimestamp", 's'),
    ("IsLastCheckValid", 'b'),
    ("IsUpToDate", 'b'),
    ("IsRecentlyChecked", 'b'),
    ("SecondsSinceLastSeen", 'i'),
    ("CountMySQLSnapshots", 'n'),
    ("IsCandidate", 'b'),
    ("PromotionRule", 's'),
    ("IsDowntimed", 'b'),
    ("DowntimeReason", 's'),
    ("DowntimeOwner", 's'),
    ("DowntimeEndTimestamp", 's'),
    ("ElapsedDowntime", 'n'),
    ("UnresolvedHostname", 's'),
    ("AllowTLS", 'b'),
    ("Problems", 'a'),
    ("LastDiscoveryLatency", 'n'),
    ("ReplicationGroupName", 's'),
    ("ReplicationGroupIsSinglePrimary", 'b'),
    ("ReplicationGroupMemberState", 's'),
    ("ReplicationGroupMemberRole", 's'),
    ("ReplicationGroupMembers", 'a'),
    ("ReplicationGroupPrimaryInstanceKey", 'k'),
];

fn assert_typed(what: &str, object: &Value, shape: &[(&str, char)]) {
    let fields = object
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {object}"));
    assert_eq!(
        fields.len(),
        shape.len(),
        "{what}: {:?}",
        fields.keys().collect::<Vec<_>>()
    );
    for (name, kind) in shape {
        let value = fields
            .get(*name)
            .unwrap_or_else(|| panic!("{what}: no {name}: {object}"));
        let right = match kind {
            's' => value.is_string(),
            'n' => value.is_number(),
            'b' => value.is_boolean(),
            'a' => value.is_array(),
            'k' => value["Hostname"].is_string() && value["Port"].is_number(),
            'c' => {
                value["LogFile"].is_string()
                    && value["LogPos"].is_number()
                    && value["Type"].is_number()
            }
            'i' => value["Int64"].is_number() && value["Valid"].is_boolean(),
            _ => unreachable!("a kind of the table"),
        };
        assert!(right, "{what}: {name} is not of kind {kind}: {value}");
    }
}

fn assert_instance(what: &str, instance: &Value) {
    assert_eq!(
        INSTANCE_SHAPE.len(),
        87,
        "orchestrator's Instance has 87 keys"
    );
    assert_typed(what, instance, INSTANCE_SHAPE);
}

const CLUSTER_INFO_SHAPE: &[(&str, char)] = &[
    ("ClusterName", 's'),
    ("ClusterAlias", 's'),
    ("ClusterDomain", 's'),
    ("CountInstances", 'n'),
    ("HeuristicLag", 'n'),
    ("HasAutomatedMasterRecovery", 'b'),
    ("HasAutomatedIntermediateMasterRecovery", 'b'),
];

/// The cluster `t` as orchestrator's API shows it once `primary` is writable and every
/// other node replicates from it.
async fn settled_on(base: &str, primary: &InstanceKey, count: usize) -> Vec<Value> {
    eventually(
        PATIENCE,
        &format!("{primary} the settled primary of t"),
        || async move {
            let (status, instances) = get(base, "/api/cluster/t", Auth::Anonymous).await;
            let instances = instances.as_array().filter(|_| status == 200)?.clone();
            let fine = instances.len() == count
                && instances.iter().all(|i| {
                    if i["Key"] == key_json(primary) {
                        i["ReadOnly"] == json!(false) && i["MasterKey"]["Hostname"] == json!("")
                    } else {
                        i["ReadOnly"] == json!(true)
                            && i["MasterKey"] == key_json(primary)
                            && i["Slave_SQL_Running"] == json!(true)
                            && i["Slave_IO_Running"] == json!(true)
                    }
                });
            fine.then_some(instances)
        },
    )
    .await
}

async fn reads_in_orchestrators_shape_and_a_graceful_takeover(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 2).await;
    let (node1, node2, node3) = (
        topology.key("node1"),
        topology.key("node2"),
        topology.key("node3"),
    );
    let account = automatic_recovery(&topology);
    let watcher = watch(&topology, vec![node1.clone()], |config: &mut Config| {
        account(config);
        config.api.token = Some(Secret::new(TOKEN));
    })
    .await;
    probed(&watcher.agent.discovery, 3).await;
    let base = &format!("http://{}", watcher.agent.api_address);
    let anonymous = Auth::Anonymous;
    let instances = settled_on(base, &node1, 3).await;
    for instance in &instances {
        assert_instance("cluster/t", instance);
    }

    // The cluster list, by orchestrator's cluster name (the primary) and pointsman's (the alias).
    let (status, names) = get(base, "/api/clusters", anonymous).await;
    assert_eq!((status, names), (200, json!([node1.to_string()])));
    let (_, infos) = get(base, "/api/clusters-info", anonymous).await;
    let infos = infos.as_array().expect("an array").clone();
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert_typed("clusters-info", &infos[0], CLUSTER_INFO_SHAPE);
    let expected_info = json!({
        "ClusterName": node1.to_string(), "ClusterAlias": "t", "ClusterDomain": "",
        "CountInstances": 3, "HeuristicLag": 0, "HasAutomatedMasterRecovery": true,
        "HasAutomatedIntermediateMasterRecovery": true,
    });
    assert_eq!(infos[0], expected_info);
    // A hint is a cluster name, an alias or any instance of the cluster.
    for hint in ["t".to_string(), node1.to_string(), node3.to_string()] {
        let (status, info) = get(base, &format!("/api/cluster-info/{hint}"), anonymous).await;
        assert_eq!(
            (status, &info),
            (200, &expected_info),
            "cluster-info/{hint}"
        );
        let (status, master) = get(base, &format!("/api/master/{hint}"), anonymous).await;
        assert_eq!(status, 200, "master/{hint}: {master}");
        assert_eq!(master["Key"], key_json(&node1), "master/{hint}");
    }
    let message = refused(base, "/api/master/nope:1", anonymous, 500).await;
    assert!(
        message.contains("Unable to determine cluster name. clusterHint=nope:1"),
        "{message}"
    );

    // The primary.
    let (_, master) = get(base, "/api/master/t", anonymous).await;
    assert_instance("master/t", &master);
    let mut replicas = vec![key_json(&node2), key_json(&node3)];
    replicas.sort_by_key(|k| (k["Hostname"].as_str().map(String::from), k["Port"].as_u64()));
    for (field, value) in [
        ("ReadOnly", json!(false)),
        ("ReplicationDepth", json!(0)),
        ("ClusterName", json!(node1.to_string())),
        ("SuggestedClusterAlias", json!("t")),
        ("MasterKey", json!({"Hostname": "", "Port": 0})),
        ("Replicas", json!(replicas)),
        ("SlaveHosts", json!(replicas)),
        ("IsLastCheckValid", json!(true)),
        ("ReplicationSQLThreadState", json!(-1)),
        ("LogBinEnabled", json!(true)),
        ("SupportsOracleGTID", json!(flavor.is_mysql())),
        ("Problems", json!([])),
    ] {
        assert_eq!(master[field], value, "master's {field}: {master}");
    }
    assert!(
        master["Version"].as_str().is_some_and(|v| !v.is_empty()),
        "{master}"
    );

    // A replica, and the primary's replicas.
    let (_, replica) = get(
        base,
        &format!("/api/instance/{}", path_of(&node2)),
        anonymous,
    )
    .await;
    assert_instance("instance", &replica);
    for (field, value) in [
        ("Key", key_json(&node2)),
        ("MasterKey", key_json(&node1)),
        ("ReadOnly", json!(true)),
        ("ReplicationDepth", json!(1)),
        ("ClusterName", json!(node1.to_string())),
        ("ReplicationSQLThreadState", json!(1)),
        ("ReplicationIOThreadState", json!(1)),
        ("UsingOracleGTID", json!(flavor.is_mysql())),
        ("UsingMariaDBGTID", json!(!flavor.is_mysql())),
        ("Replicas", json!([])),
    ] {
        assert_eq!(replica[field], value, "replica's {field}: {replica}");
    }
    assert_eq!(
        replica["SecondsBehindMaster"]["Valid"],
        json!(true),
        "{replica}"
    );
    let (_, below) = get(
        base,
        &format!("/api/instance-replicas/{}", path_of(&node1)),
        anonymous,
    )
    .await;
    let mut below: Vec<Value> = below
        .as_array()
        .expect("an array")
        .iter()
        .map(|i| i["Key"].clone())
        .collect();
    below.sort_by_key(|k| (k["Hostname"].as_str().map(String::from), k["Port"].as_u64()));
    assert_eq!(json!(below), json!(replicas));
    refused(base, "/api/instance/10.9.9.9/3306", anonymous, 500).await;

    // The tree as orchestrator prints it, its descriptions aligned.
    let tree = ok_details(base, "/api/topology/t", anonymous).await;
    let tree = tree.as_str().expect("the tree is one string");
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(lines.len(), 3, "{tree}");
    assert!(lines[0].starts_with(&format!("{node1} ")), "{tree}");
    assert!(
        lines[0].contains("[0s,ok,") && lines[0].contains(",rw,"),
        "{tree}"
    );
    for line in &lines[1..] {
        assert!(line.starts_with("+ ") && line.contains(",ro,"), "{tree}");
    }
    let columns: Vec<Option<usize>> = lines.iter().map(|l| l.find('[')).collect();
    assert!(
        columns.iter().all(|c| c.is_some() && *c == columns[0]),
        "aligned: {tree}"
    );
    // The same tree from any of its instances; the lag of a replica may have moved
    // between the two reads (MySQL shows 1s for a moment now and then).
    let from_node2 = ok_details(
        base,
        &format!("/api/topology/{}", path_of(&node2)),
        anonymous,
    )
    .await;
    assert_eq!(
        without_lag(from_node2.as_str().expect("the tree is one string")),
        without_lag(tree)
    );
    let (status, leader) = get(base, "/api/leader-check", anonymous).await;
    assert_eq!((status, leader), (200, json!("OK")));

    // A takeover without the token, or with a wrong one, is refused and changes nothing.
    let takeover = "/api/graceful-master-takeover/t";
    let message = refused(base, takeover, anonymous, 401).await;
    assert!(message.contains("ORCHESTRATOR_AUTH_PASSWORD"), "{message}");
    refused(base, takeover, Auth::Basic("ops", "guess"), 401).await;
    refused(base, takeover, Auth::Bearer("guess"), 401).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        topology
            .value("node1", "SELECT @@read_only")
            .await
            .as_deref(),
        Some("0")
    );
    settled_on(base, &node1, 3).await;

    // With basic auth, as orchestrator-client sends it: the best replica takes over.
    let recovery = ok_details(base, takeover, Auth::Basic("ops", TOKEN)).await;
    let successor = &recovery["SuccessorKey"];
    assert!(
        *successor == key_json(&node2) || *successor == key_json(&node3),
        "{recovery}"
    );
    let new_primary = if *successor == key_json(&node2) {
        node2.clone()
    } else {
        node3.clone()
    };
    let new_node = topology.node_at(&new_primary);
    read_only_becomes(&topology, &new_node, "0").await;
    read_only_becomes(&topology, "node1", "1").await;
    assert_eq!(recovery["IsSuccessful"], json!(true), "{recovery}");
    assert_eq!(
        recovery["AnalysisEntry"]["Analysis"],
        json!("DeadMaster"),
        "{recovery}"
    );
    assert_eq!(
        recovery["AnalysisEntry"]["CommandHint"],
        json!("graceful-master-takeover")
    );
    assert_eq!(
        recovery["AnalysisEntry"]["AnalyzedInstanceKey"],
        key_json(&node1)
    );
    settled_on(base, &new_primary, 3).await;
    let (_, master) = get(base, "/api/master/t", anonymous).await;
    assert_eq!(master["Key"], key_json(&new_primary), "{master}");

    // Back to node1, named, with a bearer token, by the -auto route and an instance hint.
    let back = format!(
        "/api/graceful-master-takeover-auto/{}/{}",
        new_primary,
        path_of(&node1)
    );
    let recovery = ok_details(base, &back, Auth::Bearer(TOKEN)).await;
    assert_eq!(recovery["SuccessorKey"], key_json(&node1), "{recovery}");
    read_only_becomes(&topology, "node1", "0").await;
    read_only_becomes(&topology, &new_node, "1").await;
    settled_on(base, &node1, 3).await;

    // Both takeovers are in the recovery audit, newest first, as TopologyRecovery.
    let (_, audit) = get(base, "/api/audit-recovery/cluster/t", anonymous).await;
    let audit = audit.as_array().expect("an array").clone();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0]["SuccessorKey"], key_json(&node1));
    assert_eq!(audit[1]["SuccessorKey"], key_json(&new_primary));
    for recovery in &audit {
        assert!(
            recovery["UID"].as_str().is_some_and(|u| !u.is_empty()),
            "{recovery}"
        );
        assert!(
            recovery["Id"].is_i64() && recovery["AllErrors"].is_array(),
            "{recovery}"
        );
        assert_eq!(recovery["Acknowledged"], json!(false), "{recovery}");
        assert!(
            recovery["RecoveryStartTimestamp"]
                .as_str()
                .is_some_and(|t| t.len() == 19),
            "{recovery}"
        );
    }
    let (_, everything) = get(base, "/api/audit-recovery", anonymous).await;
    assert_eq!(everything.as_array().map(Vec::len), Some(2));

    // Acknowledging needs a comment, as in orchestrator, and the token.
    refused(
        base,
        "/api/ack-recovery/cluster/t",
        Auth::Bearer(TOKEN),
        500,
    )
    .await;
    refused(
        base,
        "/api/ack-recovery/cluster/t?comment=planned",
        anonymous,
        401,
    )
    .await;
    // As orchestrator-client encodes it: with its `echo`'s newline.
    let acked = ok_details(
        base,
        "/api/ack-recovery/cluster/t?comment=planned%0A",
        Auth::Bearer(TOKEN),
    )
    .await;
    assert_eq!(acked, json!(node1.to_string()));
    let (_, audit) = get(base, "/api/audit-recovery/cluster/t", anonymous).await;
    for recovery in audit.as_array().expect("an array") {
        assert_eq!(recovery["Acknowledged"], json!(true), "{recovery}");
        assert_eq!(
            recovery["AcknowledgedComment"],
            json!("planned"),
            "{recovery}"
        );
    }
    let (_, unacknowledged) = get(base, "/api/audit-recovery?unacknowledged=true", anonymous).await;
    assert_eq!(unacknowledged, json!([]));
    watcher.agent.stop().await.expect("stops");
}

async fn the_switch_downtime_discover_forget_and_unanswered_routes(flavor: Flavor) {
    let topology = TestTopology::start(flavor, 1).await;
    let (node1, node2) = (topology.key("node1"), topology.key("node2"));
    let watcher = watch(&topology, vec![node1.clone()], |config: &mut Config| {
        config.api.token = Some(Secret::new(TOKEN));
    })
    .await;
    probed(&watcher.agent.discovery, 2).await;
    let base = &format!("http://{}", watcher.agent.api_address);
    let owner = Auth::Bearer(TOKEN);
    let automatic = || async {
        let (_, switch) = get(base, "/api/v1/recovery", Auth::Anonymous).await;
        switch["automatic"].clone()
    };

    // The global switch, round trip, as pointsman's own API shows it.
    assert_eq!(
        ok_details(base, "/api/check-global-recoveries", Auth::Anonymous).await,
        json!("enabled")
    );
    refused(base, "/api/disable-global-recoveries", Auth::Anonymous, 401).await;
    assert_eq!(
        automatic().await,
        json!(true),
        "a refused call changes nothing"
    );
    assert_eq!(
        ok_details(base, "/api/disable-global-recoveries", owner).await,
        json!("disabled")
    );
    assert_eq!(automatic().await, json!(false));
    assert_eq!(
        ok_details(base, "/api/check-global-recoveries", Auth::Anonymous).await,
        json!("disabled")
    );
    assert_eq!(
        ok_details(base, "/api/enable-global-recoveries", owner).await,
        json!("enabled")
    );
    assert_eq!(automatic().await, json!(true));
    assert_eq!(
        ok_details(base, "/api/check-global-recoveries", Auth::Anonymous).await,
        json!("enabled")
    );

    // Downtime, with orchestrator-client's encoded owner and reason.
    let own_view = format!("/api/v1/instances/{node2}");
    let begin = format!(
        "/api/begin-downtime/{}/dba%20on%20call/disk%2Fswap%20change/2h",
        path_of(&node2)
    );
    refused(base, &begin, Auth::Anonymous, 401).await;
    assert_eq!(ok_details(base, &begin, owner).await, key_json(&node2));
    let (_, view) = get(base, &own_view, Auth::Anonymous).await;
    assert!(
        view["downtimed_until"].is_string(),
        "pointsman shows the downtime: {view}"
    );
    let (_, instance) = get(
        base,
        &format!("/api/instance/{}", path_of(&node2)),
        Auth::Anonymous,
    )
    .await;
    assert_eq!(instance["IsDowntimed"], json!(true), "{instance}");
    let reason = instance["DowntimeReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("disk/swap change") && reason.contains("dba on call"),
        "{instance}"
    );
    let message = refused(
        base,
        &format!("/api/begin-downtime/{}/me/x/10x", path_of(&node2)),
        owner,
        500,
    )
    .await;
    assert!(
        message.contains("Cannot parse simple time: 10x"),
        "{message}"
    );
    let end = format!("/api/end-downtime/{}", path_of(&node2));
    assert_eq!(ok_details(base, &end, owner).await, key_json(&node2));
    let (_, view) = get(base, &own_view, Auth::Anonymous).await;
    assert_eq!(view["downtimed_until"], Value::Null, "{view}");

    // A recovery of an instance that has not failed is not attempted.
    let message = refused(
        base,
        &format!("/api/recover/{}", path_of(&node1)),
        owner,
        500,
    )
    .await;
    assert!(message.contains("Recovery not attempted"), "{message}");

    // Forget and discover, as pointsman's own API then shows them.
    refused(
        base,
        &format!("/api/forget/{}", path_of(&node2)),
        Auth::Anonymous,
        401,
    )
    .await;
    assert_eq!(
        ok_details(base, &format!("/api/forget/{}", path_of(&node2)), owner).await,
        key_json(&node2)
    );
    let audit: Vec<Value> =
        serde_json::from_value(get(base, "/api/v1/audit", Auth::Anonymous).await.1).expect("audit");
    assert!(
        audit.iter().any(|a| a["action"] == json!("forget")),
        "{audit:?}"
    );
    let discovered = ok_details(base, &format!("/api/discover/{}", path_of(&node2)), owner).await;
    assert_eq!(discovered["Key"], key_json(&node2), "{discovered}");
    assert_instance("discover", &discovered);
    let (status, _) = get(base, &own_view, Auth::Anonymous).await;
    assert_eq!(status, 200, "pointsman knows it again");

    // What is not answered says so; pointsman's own unknown paths keep their answer.
    let (status, answer) = get(base, "/api/relocate/a/1/b/2", Auth::Anonymous).await;
    assert_eq!(
        (status, &answer["Code"]),
        (404, &json!("ERROR")),
        "{answer}"
    );
    let message = answer["Message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/api/relocate/a/1/b/2") && message.contains("does not answer"),
        "{message}"
    );
    assert_eq!(answer["Details"], Value::Null);
    let (status, answer) = get(base, "/api/v1/nothing", Auth::Anonymous).await;
    assert_eq!(status, 404);
    assert!(answer["error"].is_string(), "{answer}");
    let (status, answer) = call(
        base,
        reqwest::Method::POST,
        "/api/disable-global-recoveries",
        owner,
        // As the agent's own API wants a change sent, so only the method is wrong.
        &[("Content-Type", "application/json")],
    )
    .await;
    assert_eq!(
        (status, &answer["Code"]),
        (405, &json!("ERROR")),
        "{answer}"
    );
    assert_eq!(automatic().await, json!(true));
    watcher.agent.stop().await.expect("stops");
}

/// An agent with no database: `token` and `token_for_reads` as given.
async fn bare_agent(
    token: Option<&str>,
    token_for_reads: bool,
) -> (pointsman::agent::RunningAgent, tempfile::TempDir) {
    let store = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.store.path = store.path().join("pointsman.db");
    config.api.listen = "127.0.0.1:0".into();
    config.api.token = token.map(Secret::new);
    config.api.token_for_reads = token_for_reads;
    let settings = config.validate().expect("valid settings");
    let agent = pointsman::agent::RunningAgent::start(&settings)
        .await
        .expect("agent starts");
    (agent, store)
}

#[tokio::test]
async fn without_a_token_actions_are_refused_and_reads_stay_open() {
    let (agent, _store) = bare_agent(None, false).await;
    let base = &format!("http://{}", agent.api_address);
    for action in [
        "/api/disable-global-recoveries",
        "/api/graceful-master-takeover/t",
        "/api/begin-downtime/127.0.0.1/1/me/why",
        "/api/discover/127.0.0.1/1",
    ] {
        let message = refused(base, action, Auth::Basic("ops", "anything"), 403).await;
        assert!(message.contains("api.token"), "{action}: {message}");
    }
    let (_, switch) = get(base, "/api/v1/recovery", Auth::Anonymous).await;
    assert_eq!(switch["automatic"], json!(true), "nothing changed");
    let (status, infos) = get(base, "/api/clusters-info", Auth::Anonymous).await;
    assert_eq!((status, infos), (200, json!([])));
    assert_eq!(
        ok_details(base, "/api/check-global-recoveries", Auth::Anonymous).await,
        json!("enabled")
    );
    agent.stop().await.expect("stops");
}

#[tokio::test]
async fn closed_reads_take_either_credential_and_browsers_are_kept_out() {
    let (agent, _store) = bare_agent(Some(TOKEN), true).await;
    let base = &format!("http://{}", agent.api_address);
    let (status, answer) = call(
        base,
        reqwest::Method::GET,
        "/api/clusters-info",
        Auth::Anonymous,
        &[],
    )
    .await;
    assert_eq!(
        (status, &answer["Code"]),
        (401, &json!("ERROR")),
        "{answer}"
    );
    for auth in [Auth::Bearer(TOKEN), Auth::Basic("anyone", TOKEN)] {
        let (status, infos) = get(base, "/api/clusters-info", auth).await;
        assert_eq!((status, infos), (200, json!([])));
    }

    // The token alone does not let another site's page change anything.
    let action = "/api/disable-global-recoveries";
    let (status, answer) = call(
        base,
        reqwest::Method::GET,
        action,
        Auth::Basic("x", TOKEN),
        &[("Sec-Fetch-Site", "cross-site")],
    )
    .await;
    assert_eq!(
        (status, &answer["Code"]),
        (403, &json!("ERROR")),
        "{answer}"
    );
    let (status, answer) = call(
        base,
        reqwest::Method::GET,
        action,
        Auth::Bearer(TOKEN),
        &[("Origin", "http://attacker.example")],
    )
    .await;
    assert_eq!(
        (status, &answer["Code"]),
        (500, &json!("ERROR")),
        "{answer}"
    );
    assert!(
        answer["Message"]
            .as_str()
            .unwrap_or_default()
            .contains("attacker.example"),
        "{answer}"
    );
    let (status, answer) = call(
        base,
        reqwest::Method::GET,
        action,
        Auth::Bearer(TOKEN),
        &[("Host", "attacker.example")],
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (_, switch) = get(base, "/api/v1/recovery", Auth::Bearer(TOKEN)).await;
    assert_eq!(switch["automatic"], json!(true), "nothing changed");
    agent.stop().await.expect("stops");
}

/// An orchestrator tree with every instance's lag (`[3s,`) left out.
fn without_lag(tree: &str) -> String {
    tree.lines()
        .map(|line| match (line.find('['), line.find(',')) {
            (Some(open), Some(comma)) if open < comma => {
                format!("{}[{}", &line[..open], &line[comma..])
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
