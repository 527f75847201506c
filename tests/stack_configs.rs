//! The Docker stack (docker/compose.yaml) cannot run here — there is no Docker engine on
//! the build machines — so what can be checked without it is checked: pointsman's
//! configuration in the stack loads and is valid; ProxySQL's configuration declares
//! the very hostgroups pointsman routes (the same 10 and 20 tests/routing.rs runs
//! against the ProxySQL stand-in) with the monitor set as pointsman expects; every file
//! the compose file mounts exists; every password variable pointsman reads is set.

mod support;

use pointsman::config::Config;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `NAME: value` lines of the pointsman service's environment in the compose file.
fn compose_environment(compose: &str) -> Vec<(String, String)> {
    compose
        .lines()
        .map(str::trim)
        .filter_map(|line| {
            line.strip_prefix("POINTSMAN_")
                .map(|rest| format!("POINTSMAN_{rest}"))
        })
        .filter_map(|line| {
            line.split_once(": ")
                .map(|(name, value)| (name.to_string(), value.to_string()))
        })
        .collect()
}

#[test]
fn the_stack_configuration_of_pointsman_loads() {
    let compose = read("docker/compose.yaml");
    let environment = compose_environment(&compose);
    assert!(environment.len() >= 3, "{environment:?}");
    for (name, value) in &environment {
        std::env::set_var(name, value);
    }
    let settings = Config::load(Some(&Path::new(ROOT).join("docker/pointsman.toml")))
        .unwrap_or_else(|e| panic!("docker/pointsman.toml: {e}"));
    assert_eq!(settings.mysql_password.expose(), "pointsman");
    // Reached from outside the container: a token closes it, the CLI's own is the same.
    let token = settings.api_token.as_ref().expect("the API has a token");
    assert!(environment.contains(&("POINTSMAN_TOKEN".to_string(), token.expose().to_string())));
    let routing = &settings.routing;
    assert!(routing.dns.is_some() && routing.consul.is_some());
    assert_eq!(routing.proxysql.len(), 1);
    let proxysql = &routing.proxysql[0];
    assert_eq!((proxysql.host.as_str(), proxysql.port), ("proxysql", 6032));

    // ProxySQL lets pointsman's admin account in, from another container.
    let cnf = read("integrations/proxysql/proxysql.cnf");
    let credentials = format!("{}:{}", proxysql.user, proxysql.password.expose());
    assert!(
        cnf.contains(&format!(";{credentials}\"")) || cnf.contains(&format!("\"{credentials}")),
        "proxysql.cnf admin_credentials lack {}",
        proxysql.user
    );
    assert_ne!(
        proxysql.user, "admin",
        "admin:admin may only connect locally"
    );

    // The same hostgroup pair on both sides, and the writer kept out of the readers as
    // routing.primary_serves_reads = false says.
    let hostgroups = &proxysql.hostgroups[0];
    assert!(cnf.contains(&format!(
        "writer_hostgroup={}, reader_hostgroup={}",
        hostgroups.writer, hostgroups.reader
    )));
    assert_eq!(
        (hostgroups.writer, hostgroups.reader),
        (support::stack::WRITER, support::stack::READER),
        "the pair tests/routing.rs runs against"
    );
    assert!(!routing.policy.primary_serves_reads);
    assert!(cnf.contains("monitor_writer_is_also_reader=false"));
    assert!(settings
        .aliases
        .iter()
        .any(|alias| alias.alias == hostgroups.cluster));
}

#[test]
fn every_file_the_compose_file_mounts_exists() {
    let compose = read("docker/compose.yaml");
    let mut mounted = 0;
    for line in compose.lines().map(str::trim) {
        let Some(entry) = line.strip_prefix("- ") else {
            continue;
        };
        let Some((source, _)) = entry.split_once(':') else {
            continue;
        };
        if source.starts_with("./") || source.starts_with("../") {
            let path = Path::new(ROOT).join("docker").join(source);
            assert!(
                path.is_file(),
                "compose.yaml mounts {source}, which is missing"
            );
            mounted += 1;
        }
    }
    assert!(mounted >= 4, "found {mounted} mounts");
    assert!(Path::new(ROOT).join("docker/Dockerfile").is_file());
}
