use super::*;
use crate::config::{Config, Settings};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/orchestrator")
        .join(name);
    std::fs::read_to_string(&path).expect("fixture")
}

/// Loads a produced TOML the way `pointsman check-config` does.
fn load(toml: &str) -> Settings {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(toml.as_bytes()).expect("write");
    match Config::load(Some(file.path())) {
        Ok(settings) => settings,
        Err(error) => panic!("the imported TOML does not load:\n{error}\n---\n{toml}"),
    }
}

fn import(json: &str) -> Imported {
    translate(json, "orchestrator.conf.json").expect("imports")
}

fn outcome<'a>(imported: &'a Imported, key: &str) -> &'a NoteOutcome {
    let found: Vec<_> = imported.notes.iter().filter(|n| n.key == key).collect();
    assert_eq!(found.len(), 1, "one note for {key}: {:#?}", imported.notes);
    &found[0].outcome
}

fn skipped_why<'a>(imported: &'a Imported, key: &str) -> &'a str {
    match outcome(imported, key) {
        NoteOutcome::Skipped { why } => why,
        other => panic!("{key} should be skipped: {other:?}"),
    }
}

fn translated_to<'a>(imported: &'a Imported, key: &str) -> &'a str {
    match outcome(imported, key) {
        NoteOutcome::Translated { to } | NoteOutcome::TranslatedWithCaveat { to, .. } => to,
        other => panic!("{key} should be translated: {other:?}"),
    }
}

fn caveat<'a>(imported: &'a Imported, key: &str) -> &'a str {
    match outcome(imported, key) {
        NoteOutcome::TranslatedWithCaveat { caveat, .. } => caveat,
        other => panic!("{key} should be translated with a caveat: {other:?}"),
    }
}

/// Every top-level key of the file has at least one note.
fn assert_every_key_noted(json: &str, imported: &Imported) {
    let TopLevel::Object(entries) = serde_json::from_str::<TopLevel>(json).expect("json") else {
        panic!("not an object");
    };
    for (key, _) in entries {
        assert!(
            imported.notes.iter().any(|n| n.key == key
                || n.key.starts_with(&format!("{key}["))
                || n.key.starts_with(&format!("{key} ("))),
            "no note for {key}"
        );
    }
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

#[test]
fn the_minimal_sample_translates_and_loads() {
    let json = fixture("minimal.conf.json");
    let imported = import(&json);
    assert_every_key_noted(&json, &imported);
    let settings = load(&imported.toml);
    let config = &settings.config;
    assert_eq!(config.mysql.user, "orc_client_user");
    assert_eq!(settings.mysql_password.expose(), "orc_client_password");
    assert_eq!(config.discovery.poll_interval.0, secs(5));
    assert_eq!(config.mysql.connect_timeout.0, secs(1));
    assert_eq!(settings.api_listen.to_string(), "0.0.0.0:3000");
    assert!(config.api.allow_open);
    assert_eq!(config.recovery.auto_clusters, vec![".*".to_string()]);
    assert_eq!(config.recovery.block_period.0, secs(3600));
    assert_eq!(config.log.level, "info,pointsman=debug");
    assert_eq!(config.store.keep_audit.0, secs(7 * 86_400));
    // No seeds in an orchestrator file like this: the TOML says what to do.
    assert!(config.discovery.seeds.is_empty());
    assert!(imported
        .toml
        .contains("# TODO: list one host:port of each cluster"));
    assert!(skipped_why(&imported, "MySQLOrchestratorHost").contains("discovery.seeds"));
    assert!(skipped_why(&imported, "MySQLOrchestratorPassword").contains("store.path"));
    assert!(caveat(&imported, "ListenAddress").contains("api.token_file"));
    assert_eq!(
        config.hooks.pre_failover,
        vec!["echo 'Will recover from {failureType} on {failureCluster}' >> /tmp/recovery.log"]
    );
}

#[test]
fn consul_hooks_and_filters_translate_and_load() {
    let json = fixture("consul-hooks-filters.conf.json");
    let imported = import(&json);
    assert_every_key_noted(&json, &imported);
    let settings = load(&imported.toml);
    let config = &settings.config;

    let consul = settings.routing.consul.as_ref().expect("consul is used");
    assert_eq!(
        consul.config.address.as_deref(),
        Some("https://consul.service.dc1.example:8501")
    );
    assert_eq!(consul.config.kv_prefix, "mysql/master");
    assert!(!consul.config.services);
    assert_eq!(
        consul.token.as_ref().map(|t| t.expose()),
        Some("b1gs3cr3t-acl")
    );
    assert!(caveat(&imported, "ConsulScheme").contains("ca_file"));
    assert!(skipped_why(&imported, "ConsulCrossDataCenterDistribution").contains("one datacenter"));

    assert_eq!(
        config.recovery.auto_clusters,
        vec![
            "alias=orders".to_string(),
            "^billing".to_string(),
            "^db-[0-9]+\\.prod".to_string(),
        ]
    );
    assert!(skipped_why(&imported, "RecoverMasterClusterFilters[3]").contains("cannot compile"));
    assert_eq!(config.recovery.block_period.0, secs(1800));
    assert_eq!(config.promotion.max_lag.0, secs(299));
    assert!(caveat(&imported, "FailMasterPromotionOnLagMinutes").contains("passes over"));

    let ignore = &settings.promotion.ignore_hosts;
    assert!(ignore.iter().any(|r| r.is_match("10.0.0.3:3306")));
    assert!(!ignore.iter().any(|r| r.is_match("10.0.0.38:3306")));
    assert!(ignore.iter().any(|r| r.is_match("backup-7.example:3306")));

    let hooks = &config.hooks;
    assert_eq!(hooks.on_failure_detected.len(), 1);
    assert_eq!(hooks.pre_failover.len(), 1);
    // PostMasterFailoverProcesses first, then PostFailoverProcesses, as orchestrator.
    assert_eq!(hooks.post_failover.len(), 2);
    assert!(hooks.post_failover[0].contains("vip-move"));
    assert!(hooks.post_failover[1].contains("{successorHost}:{successorPort}"));
    assert_eq!(hooks.post_unsuccessful_failover.len(), 1);
    // A graceful takeover ran the failover hooks in between.
    assert_eq!(hooks.pre_switchover.len(), 2);
    assert!(hooks.pre_switchover[0].contains("Planned takeover"));
    assert_eq!(hooks.post_switchover.len(), 3);
    assert!(hooks.post_switchover[2].contains("takeover complete"));
    assert!(caveat(&imported, "OnFailureDetectionProcesses").contains("cannot stop a recovery"));
    // Commands are kept as written: orchestrator's variables and placeholders too.
    assert!(hooks.post_failover[1].contains("$ORC_FAILURE_CLUSTER"));
    assert!(caveat(&imported, "PostMasterFailoverProcesses").contains("DeadIntermediateMaster"));
    assert!(
        skipped_why(&imported, "PostIntermediateMasterFailoverProcesses").contains("post_failover")
    );
    assert!(skipped_why(&imported, "ClusterNameToAlias").contains("[[cluster]]"));
    assert_eq!(
        config.discovery.seeds,
        vec![
            InstanceKey::new("db-1.prod.example", 3306),
            InstanceKey::new("db-9.prod.example", 3307)
        ]
    );
    assert!(caveat(&imported, "DiscoverySeeds").contains("DefaultInstancePort"));
}

#[test]
fn raft_with_a_credentials_file_translates_and_loads() {
    let json = fixture("raft-credentials.conf.json");
    let imported = import(&json);
    assert_every_key_noted(&json, &imported);
    let settings = load(&imported.toml);
    let config = &settings.config;
    assert!(config.ha.enabled);
    assert_eq!(settings.api_listen.to_string(), "127.0.0.1:3000");
    assert!(!config.api.allow_open);
    assert!(caveat(&imported, "ListenAddress").contains("basic authentication"));
    assert!(imported
        .toml
        .contains("# TODO: orchestrator served \":3000\" with basic authentication"));
    // The password came from the credentials file, which the import cannot read.
    assert!(config.mysql.password.is_none() && config.mysql.password_env.is_none());
    assert!(skipped_why(&imported, "MySQLTopologyCredentialsConfigFile")
        .contains("mysql.password_file"));
    assert!(
        skipped_why(&imported, "MySQLTopologyPassword").contains("/etc/orchestrator/topology.cnf")
    );
    assert!(caveat(&imported, "MySQLTopologyUser").contains("[client]"));
    assert!(imported
        .toml
        .contains("# TODO: orchestrator read user and password"));
    assert!(skipped_why(&imported, "SQLite3DataFile").contains("all-clusters-masters"));
    assert!(skipped_why(&imported, "RaftNodes").contains("[ha]"));
    assert_eq!(config.routing.consul.kv_prefix, "db/primary");
    assert!(caveat(&imported, "KVClusterMasterPrefix").contains("leading '/'"));
    let trailing =
        import(r#"{"ConsulAddress": "127.0.0.1:8500", "KVClusterMasterPrefix": "mysql/master/"}"#);
    assert_eq!(
        outcome(&trailing, "KVClusterMasterPrefix"),
        &NoteOutcome::Translated {
            to: "routing.consul.kv_prefix = \"mysql/master\"".into()
        }
    );
}

#[test]
fn broken_json_names_the_file_the_line_and_the_column() {
    let err = translate(
        "{\n  \"InstancePollSeconds\": 5,\n  \"Debug\" true\n}\n",
        "/etc/orchestrator.conf.json",
    )
    .expect_err("broken")
    .to_string();
    assert!(
        err.starts_with("/etc/orchestrator.conf.json:3:11: not valid JSON: expected `:`"),
        "{err}"
    );
    assert!(err.contains("fix it at that place"), "{err}");
    // A trailing comma, as people write in orchestrator's own docs.
    let err = translate("{\"Debug\": true,\n}", "a.json")
        .expect_err("broken")
        .to_string();
    assert!(err.starts_with("a.json:2:1: not valid JSON"), "{err}");
    let err = translate("", "empty.json").expect_err("empty").to_string();
    assert!(
        err.starts_with("empty.json:1:0: not valid JSON: EOF while parsing"),
        "{err}"
    );
}

#[test]
fn a_top_level_that_is_not_an_object_is_refused_by_name() {
    for (json, found) in [
        ("[1, 2]", "a list"),
        ("\"text\"", "text"),
        ("null", "null"),
        ("5", "a number"),
    ] {
        let err = translate(json, "orc.json")
            .expect_err("not an object")
            .to_string();
        assert!(
            err.starts_with(&format!(
                "orc.json: the file holds {found}, not a JSON object"
            )),
            "{err}"
        );
    }
}

#[test]
fn a_value_of_the_wrong_type_names_the_key_the_type_and_the_file() {
    for (json, key, expected) in [
        (
            r#"{"InstancePollSeconds": "5"}"#,
            "InstancePollSeconds is text",
            "a whole number of 0 or more",
        ),
        (
            r#"{"InstancePollSeconds": -5}"#,
            "InstancePollSeconds is a negative number",
            "a whole number of 0 or more",
        ),
        (
            r#"{"InstancePollSeconds": 5.5}"#,
            "InstancePollSeconds is a number with a fraction",
            "a whole number",
        ),
        (
            r#"{"RecoveryPeriodBlockSeconds": 1e3}"#,
            "RecoveryPeriodBlockSeconds is a number with a fraction",
            "a whole number",
        ),
        (r#"{"Debug": "true"}"#, "Debug is text", "true or false"),
        (
            r#"{"RecoverMasterClusterFilters": "*"}"#,
            "RecoverMasterClusterFilters is text",
            "a list of texts",
        ),
        (
            r#"{"PreFailoverProcesses": ["ok", 7]}"#,
            "PreFailoverProcesses[1] is a whole number",
            "text in quotes",
        ),
        (
            r#"{"ClusterNameToAlias": {"db": true}}"#,
            "ClusterNameToAlias[\"db\"] is true or false",
            "text in quotes",
        ),
        (
            r#"{"listenaddress": 3000}"#,
            "listenaddress (ListenAddress) is a whole number",
            "text in quotes",
        ),
    ] {
        let err = translate(json, "orc.json")
            .expect_err("wrong type")
            .to_string();
        assert!(
            err.starts_with(&format!("orc.json: {key}")),
            "{json}: {err}"
        );
        assert!(err.contains(expected), "{json}: {err}");
        assert!(err.contains("correct the value"), "{json}: {err}");
    }
}

#[test]
fn secrets_never_reach_errors_or_notes() {
    let err = translate(r#"{"MySQLTopologyPassword": 987654321}"#, "orc.json")
        .expect_err("a number")
        .to_string();
    assert!(!err.contains("987654321"), "{err}");
    let imported = import(
        r#"{"MySQLTopologyPassword": "t0p-s3cret", "ConsulAddress": "127.0.0.1:8500",
            "ConsulAclToken": "acl-s3cret", "HTTPAuthPassword": "web-s3cret",
            "MySQLOrchestratorPassword": "backend-s3cret",
            "PostFailoverProcesses": ["curl -H 'X-Token: hook-s3cret' https://hooks.example"]}"#,
    );
    let notes: String = imported.notes.iter().map(|n| format!("{n}\n")).collect();
    assert!(!notes.contains("s3cret"), "{notes}");
    assert!(
        notes.contains("mysql.password (the value is not shown)"),
        "{notes}"
    );
    let settings = load(&imported.toml);
    assert_eq!(settings.mysql_password.expose(), "t0p-s3cret");
}

#[test]
fn unknown_deprecated_misspelt_and_repeated_keys_are_noted() {
    let imported = import(
        r#"{"InstancePollSecs": 3, "DiscoveryPollSeconds": 3, "instancepollseconds": 2,
            "Debug": true, "Debug": false, "RecoverMasterClusterFilters": null}"#,
    );
    assert!(skipped_why(&imported, "InstancePollSecs").contains("no such key"));
    assert!(skipped_why(&imported, "DiscoveryPollSeconds").contains("deprecated"));
    assert_eq!(
        translated_to(&imported, "instancepollseconds (InstancePollSeconds)"),
        "discovery.poll_interval = \"2s\""
    );
    let debug: Vec<_> = imported.notes.iter().filter(|n| n.key == "Debug").collect();
    assert_eq!(debug.len(), 2, "{debug:?}");
    assert!(debug
        .iter()
        .any(|n| n.to_string().contains("orchestrator uses the last one")));
    assert!(debug
        .iter()
        .any(|n| n.to_string().contains("orchestrator's default")));
    assert!(skipped_why(&imported, "RecoverMasterClusterFilters").contains("null"));
    let settings = load(&imported.toml);
    assert_eq!(settings.config.log.level, "info");
}

#[test]
fn cluster_filters_keep_their_meaning_or_say_why_not() {
    let imported = import(
        r#"{"RecoverMasterClusterFilters": ["*", "alias=orders", "alias~=^pay", "db[0-9]", "", "alias=db1:3306", "a(b", "alias="]}"#,
    );
    let key = "RecoverMasterClusterFilters";
    assert_eq!(
        translated_to(&imported, &format!("{key}[0]")),
        "recovery.auto_clusters entry \".*\""
    );
    assert!(matches!(
        outcome(&imported, &format!("{key}[0]")),
        NoteOutcome::Translated { .. }
    ));
    assert!(caveat(&imported, &format!("{key}[1]")).contains("[[cluster]]"));
    assert_eq!(
        translated_to(&imported, &format!("{key}[2]")),
        "recovery.auto_clusters entry \"^pay\""
    );
    assert!(caveat(&imported, &format!("{key}[3]")).contains("host:port"));
    assert!(skipped_why(&imported, &format!("{key}[4]")).contains("matches no cluster"));
    assert_eq!(
        translated_to(&imported, &format!("{key}[5]")),
        "recovery.auto_clusters entry \"^db1:3306$\""
    );
    assert!(skipped_why(&imported, &format!("{key}[6]")).contains("cannot compile \"a(b\""));
    assert!(skipped_why(&imported, &format!("{key}[7]")).contains("no alias"));
    let settings = load(&imported.toml);
    let matches = |name: &str, alias: Option<&str>| {
        settings
            .auto_clusters
            .iter()
            .any(|f| f.matches(name, alias))
    };
    assert!(matches("anything:3306", None));
    assert_eq!(settings.auto_clusters.len(), 5);
    let only_names = import(r#"{"RecoverMasterClusterFilters": ["alias=db1:3306"]}"#);
    let settings = load(&only_names.toml);
    let hit = |name: &str| settings.auto_clusters.iter().any(|f| f.matches(name, None));
    assert!(hit("db1:3306"));
    assert!(!hit("db1:33060"));
}

#[test]
fn an_ignore_filter_that_is_an_ip_address_matches_that_host_exactly() {
    let imported =
        import(r#"{"PromotionIgnoreHostnameFilters": ["10.0.0.3", "fe80::1", "", "bad("]}"#);
    let settings = load(&imported.toml);
    let ignore = &settings.config.promotion.ignore_hosts;
    assert_eq!(ignore[0], "^10\\.0\\.0\\.3:[0-9]+$");
    assert_eq!(ignore[1], "^\\[fe80::1\\]:[0-9]+$");
    let compiled = &settings.promotion.ignore_hosts;
    assert!(compiled[1].is_match(&InstanceKey::new("fe80::1", 3306).to_string()));
    assert!(!compiled[0].is_match("10.0.0.30:3306"));
    assert!(caveat(&imported, "PromotionIgnoreHostnameFilters[2]")
        .contains("none can ever be promoted"));
    assert!(skipped_why(&imported, "PromotionIgnoreHostnameFilters[3]").contains("cannot compile"));
}

#[test]
fn the_block_period_follows_orchestrators_seconds_and_minutes_rule() {
    let only_minutes = import(r#"{"RecoveryPeriodBlockMinutes": 5}"#);
    assert!(skipped_why(&only_minutes, "RecoveryPeriodBlockMinutes").contains("ignores it"));
    assert_eq!(
        load(&only_minutes.toml).config.recovery.block_period.0,
        secs(3600)
    );

    let fallback = import(r#"{"RecoveryPeriodBlockSeconds": 0, "RecoveryPeriodBlockMinutes": 5}"#);
    assert_eq!(
        translated_to(&fallback, "RecoveryPeriodBlockMinutes"),
        "recovery.block_period = \"5m\""
    );
    assert!(skipped_why(&fallback, "RecoveryPeriodBlockSeconds")
        .contains("takes RecoveryPeriodBlockMinutes"));

    let short = import(r#"{"RecoveryPeriodBlockSeconds": 30}"#);
    assert!(caveat(&short, "RecoveryPeriodBlockSeconds").contains("at least 1m"));
    assert_eq!(load(&short.toml).config.recovery.block_period.0, secs(60));

    let none = import(r#"{"RecoveryPeriodBlockSeconds": 0, "RecoveryPeriodBlockMinutes": 0}"#);
    assert!(caveat(&none, "RecoveryPeriodBlockSeconds").contains("blocked nothing"));

    let long = import(r#"{"RecoveryPeriodBlockSeconds": 9000000}"#);
    assert_eq!(
        load(&long.toml).config.recovery.block_period.0,
        secs(30 * 86_400)
    );
}

#[test]
fn promotion_lag_is_one_second_under_orchestrators_minutes() {
    let five = import(r#"{"FailMasterPromotionOnLagMinutes": 5}"#);
    assert_eq!(
        translated_to(&five, "FailMasterPromotionOnLagMinutes"),
        "promotion.max_lag = \"299s\""
    );
    let off = import(r#"{"FailMasterPromotionOnLagMinutes": 0}"#);
    assert!(skipped_why(&off, "FailMasterPromotionOnLagMinutes").contains("no lag limit"));
    let huge = import(r#"{"FailMasterPromotionOnLagMinutes": 100000}"#);
    assert_eq!(
        load(&huge.toml).config.promotion.max_lag.0,
        secs(7 * 86_400)
    );
}

#[test]
fn listen_addresses_become_addresses_pointsman_binds() {
    let cases = [
        (
            r#"{"ListenAddress": "127.0.0.1:3001"}"#,
            Some("127.0.0.1:3001"),
            false,
        ),
        (
            r#"{"ListenAddress": "localhost:3002"}"#,
            Some("127.0.0.1:3002"),
            false,
        ),
        (
            r#"{"ListenAddress": "[::1]:3003"}"#,
            Some("[::1]:3003"),
            false,
        ),
        (
            r#"{"ListenAddress": "10.1.2.3:3000"}"#,
            Some("10.1.2.3:3000"),
            true,
        ),
        (
            r#"{"ListenAddress": ":3000", "AuthenticationMethod": "multi"}"#,
            Some("127.0.0.1:3000"),
            false,
        ),
        (
            r#"{"ListenAddress": "orchestrator.example:3000"}"#,
            None,
            false,
        ),
        (r#"{"ListenAddress": ":http"}"#, None, false),
        (
            r#"{"ListenAddress": ":3000", "ListenSocket": "/run/orchestrator.sock"}"#,
            None,
            false,
        ),
    ];
    for (json, listen, open) in cases {
        let imported = import(json);
        let settings = load(&imported.toml);
        assert_eq!(
            settings.api_listen.to_string(),
            listen.unwrap_or("127.0.0.1:3000"),
            "{json}"
        );
        assert_eq!(settings.config.api.allow_open, open, "{json}");
        if listen.is_none() {
            assert!(
                matches!(
                    outcome(&imported, "ListenAddress"),
                    NoteOutcome::Skipped { .. }
                ),
                "{json}"
            );
        }
    }
    let absent = import("{}");
    assert!(skipped_why(&absent, "ListenAddress").contains("not in the file"));
}

#[test]
fn a_password_from_the_environment_stays_in_the_environment() {
    let imported = import(r#"{"MySQLTopologyPassword": "${ORC_TOPOLOGY_PASSWORD}"}"#);
    assert_eq!(
        translated_to(&imported, "MySQLTopologyPassword"),
        "mysql.password_env = \"ORC_TOPOLOGY_PASSWORD\""
    );
    // Loading would need the variable set; parsing shows what the file says.
    let config: Config = figment::Figment::from(
        <figment::providers::Toml as figment::providers::Format>::string(&imported.toml),
    )
    .extract()
    .expect("parses");
    assert_eq!(
        config.mysql.password_env.as_deref(),
        Some("ORC_TOPOLOGY_PASSWORD")
    );
    assert!(config.mysql.password.is_none());
    let around = import(r#"{"MySQLTopologyPassword": "x${PASS}y"}"#);
    assert!(caveat(&around, "MySQLTopologyPassword").contains("dropped the text around"));
    let odd = import(r#"{"MySQLTopologyPassword": "${not a name}"}"#);
    assert!(skipped_why(&odd, "MySQLTopologyPassword").contains("password_env"));
}

#[test]
fn hooks_keep_their_commands_and_empty_ones_are_left_out() {
    let imported = import(
        r#"{"PreFailoverProcesses": ["", "  ", "/usr/local/bin/check {failedHost} &"],
            "PostTakeMasterProcesses": ["x"], "ProcessesShellCommand": "bash"}"#,
    );
    assert!(skipped_why(&imported, "PreFailoverProcesses[0]").contains("empty command"));
    assert!(skipped_why(&imported, "PreFailoverProcesses[1]").contains("empty command"));
    assert_eq!(
        translated_to(&imported, "PreFailoverProcesses"),
        "hooks.pre_failover and hooks.pre_switchover"
    );
    assert!(skipped_why(&imported, "PostTakeMasterProcesses").contains("take-master"));
    assert!(skipped_why(&imported, "ProcessesShellCommand").contains("/bin/sh -c, not bash"));
    let settings = load(&imported.toml);
    assert_eq!(
        settings.config.hooks.pre_failover,
        vec!["/usr/local/bin/check {failedHost} &"]
    );
}

#[test]
fn every_known_key_at_its_default_is_noted_and_loads() {
    let mut object = serde_json::Map::new();
    for key in KNOWN_KEYS {
        let default: Value = serde_json::from_str(key.default).expect("default parses");
        assert!(
            matches!(key.kind, TextList | TextMap) && (default.is_array() || default.is_object())
                || key.kind.accepts(&default),
            "{}: default {} is not a {:?}",
            key.name,
            key.default,
            key.kind
        );
        object.insert(key.name.to_string(), default);
    }
    let json = Value::Object(object).to_string();
    let imported = import(&json);
    assert_every_key_noted(&json, &imported);
    load(&imported.toml);
}

#[test]
fn every_known_key_set_otherwise_still_loads() {
    let mut object = serde_json::Map::new();
    for key in KNOWN_KEYS {
        let value = match key.kind {
            Text => Value::from("db-x"),
            Flag => Value::from(key.default != "true"),
            Whole | Count => Value::from(7),
            TextList => Value::from(vec!["db-x"]),
            TextMap => serde_json::json!({"db-x": "x"}),
        };
        object.insert(key.name.to_string(), value);
    }
    // A scheme Consul speaks, so that RaftEnabled has a Consul to become [ha] with.
    object.insert("ConsulScheme".into(), Value::from("http"));
    let json = Value::Object(object).to_string();
    let imported = import(&json);
    assert_every_key_noted(&json, &imported);
    let settings = load(&imported.toml);
    assert!(settings.config.ha.enabled);
    assert_eq!(
        settings.config.discovery.seeds,
        vec![InstanceKey::new("db-x", 7)]
    );
}

#[test]
fn the_key_table_is_orchestrators() {
    // go/config/config.go: 190 fields in `Configuration`.
    assert_eq!(KNOWN_KEYS.len(), 190);
    let names: HashSet<_> = KNOWN_KEYS
        .iter()
        .map(|k| k.name.to_ascii_lowercase())
        .collect();
    assert_eq!(names.len(), KNOWN_KEYS.len(), "no name twice");
    for name in DEPRECATED_KEYS {
        assert!(known_key(name).is_none(), "{name} is not a field");
    }
}

#[test]
fn durations_read_back_as_written() {
    for seconds in [1, 59, 60, 299, 3600, 5400, 86_400, 7 * 86_400, 30 * 86_400] {
        let text = duration_text(seconds);
        assert_eq!(
            humantime::parse_duration(&text).expect(&text),
            secs(seconds),
            "{text}"
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Whatever text the patterns, addresses, prefixes and commands hold, the
    /// result loads: what pointsman would refuse becomes a note instead.
    #[test]
    fn any_text_values_give_a_file_that_loads(
        filters in proptest::collection::vec("\\PC{0,12}", 0..4),
        ignore in proptest::collection::vec("\\PC{0,12}", 0..4),
        seeds in proptest::collection::vec("[a-z0-9.:\\[\\] -]{0,16}", 0..4),
        commands in proptest::collection::vec("\\PC{0,20}|[\\t\\n \"\\\\]{0,4}", 0..4),
        listen in "\\PC{0,16}",
        consul in "\\PC{0,16}",
        prefix in "\\PC{0,12}",
        user in "\\PC{0,8}",
    ) {
        let json = serde_json::json!({
            "RecoverMasterClusterFilters": filters,
            "PromotionIgnoreHostnameFilters": ignore,
            "DiscoverySeeds": seeds,
            "PostFailoverProcesses": commands,
            "ListenAddress": listen,
            "ConsulAddress": consul,
            "KVClusterMasterPrefix": prefix,
            "MySQLTopologyUser": user,
            "RaftEnabled": true,
        })
        .to_string();
        let imported = import(&json);
        load(&imported.toml);
    }
}
