//! What hook commands written for orchestrator expect, so they run unchanged: the 24
//! `ORC_*` environment variables and the `{placeholder}`s of the command line, with
//! orchestrator's names, formats and rules (openark/orchestrator,
//! `go/logic/topology_recovery.go`: `applyEnvironmentVariables`, `prepareCommand`).
//!
//! Mapped from pointsman's own context:
//! - the failure type is orchestrator's analysis code (`DeadPrimary` → `DeadMaster`, …);
//!   a switchover is `DeadMaster` with the command `graceful-master-takeover`, as
//!   orchestrator reports its graceful takeover;
//! - orchestrator's cluster name is its primary's `host:port`, its alias the name
//!   pointsman shows (orchestrator's keys in Consul are by alias);
//! - lists are `host:port` joined by commas, booleans `true`/`false`;
//! - a successor is given where orchestrator gives one: not to `pre_failover` (chosen,
//!   but orchestrator has not chosen yet) nor `on_failure_detected`; the `pre_switchover`
//!   hook gets the designated replica and no recovery id, like `PreGracefulTakeover`.
//!   Without a successor the `ORC_SUCCESSOR_*` variables are absent and the
//!   `{successor…}` placeholders are left as written, as orchestrator leaves them;
//! - `ORC_SUCCESSOR_BINLOG_COORDINATES` is never set (pointsman promotes by GTID and
//!   keeps no coordinates), and `{successorBinlogCoordinates}` stays as written — what
//!   orchestrator does when it has none.
//!
//! One difference, for safety: orchestrator pastes values into the command as they are;
//! here a character the shell would act on (quotes, `$`, `` ` ``, `;`, `|`, `&`,
//! redirections, globs, newlines …) becomes `_` in a substituted value, so a free-text
//! description or a crafted host name cannot run anything. The variables carry the
//! values untouched.

use super::hooks::{HookContext, HookPoint};
use crate::topology::InstanceKey;

/// orchestrator's analysis code for pointsman's failure type (`ProblemCode`'s name, or
/// `Switchover`); a type orchestrator has no code for keeps pointsman's name.
pub fn failure_type(pointsman: &str) -> &str {
    match pointsman {
        "DeadPrimary" | "Switchover" => "DeadMaster",
        "DeadPrimaryAndSomeReplicas" => "DeadMasterAndSomeReplicas",
        "DeadPrimaryAndReplicas" => "DeadMasterAndReplicas",
        "DeadPrimaryWithoutReplicas" => "DeadMasterWithoutReplicas",
        "UnreachablePrimary" => "UnreachableMaster",
        "UnreachablePrimaryWithLaggingReplicas" => "UnreachableMasterWithLaggingReplicas",
        "AllReplicasNotReplicating" => "AllMasterReplicasNotReplicating",
        "DeadIntermediatePrimary" => "DeadIntermediateMaster",
        "LockedSemiSyncPrimary" => "LockedSemiSyncMaster",
        "PrimaryReadOnly" => "NoWriteableMasterStructureWarning",
        "ErrantGtid" => "ErrantGTIDStructureWarning",
        other => other,
    }
}

/// One value orchestrator gives a command: its variable (if it has one), its
/// placeholders (legacy synonyms included) and the value.
struct Field {
    variable: Option<&'static str>,
    placeholders: &'static [&'static str],
    value: String,
}

fn comma_list(keys: &[InstanceKey]) -> String {
    keys.iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// Every value orchestrator would give a command at `point`, in its order; the
/// successor's only when there is one.
fn fields(context: &HookContext, point: HookPoint) -> Vec<Field> {
    let switchover = context.failure_type == "Switchover";
    let intermediate = context.failure_type == "DeadIntermediatePrimary";
    let successor = match point {
        HookPoint::OnFailureDetected | HookPoint::PreFailover => None,
        _ => context.successor.clone(),
    };
    let failed = context.failed.as_ref();
    let field = |variable, placeholders, value: String| Field {
        variable,
        placeholders,
        value,
    };
    let mut fields = vec![
        field(
            Some("ORC_FAILURE_TYPE"),
            &["{failureType}"],
            failure_type(&context.failure_type).to_string(),
        ),
        field(
            Some("ORC_INSTANCE_TYPE"),
            &["{instanceType}"],
            if intermediate {
                "intermediate-master"
            } else {
                "master"
            }
            .to_string(),
        ),
        field(
            Some("ORC_IS_MASTER"),
            &["{isMaster}"],
            (!intermediate).to_string(),
        ),
        field(Some("ORC_IS_CO_MASTER"), &["{isCoMaster}"], "false".into()),
        field(
            Some("ORC_FAILURE_DESCRIPTION"),
            &["{failureDescription}"],
            context.description.clone(),
        ),
        field(
            Some("ORC_COMMAND"),
            &["{command}"],
            if switchover {
                "graceful-master-takeover"
            } else {
                ""
            }
            .to_string(),
        ),
        field(
            Some("ORC_FAILED_HOST"),
            &["{failedHost}"],
            failed.map(|k| k.host.clone()).unwrap_or_default(),
        ),
        field(
            Some("ORC_FAILED_PORT"),
            &["{failedPort}"],
            failed.map(|k| k.port.to_string()).unwrap_or_default(),
        ),
        field(
            Some("ORC_FAILURE_CLUSTER"),
            &["{failureCluster}"],
            failed.map_or_else(|| context.cluster.clone(), |k| k.to_string()),
        ),
        field(
            Some("ORC_FAILURE_CLUSTER_ALIAS"),
            &["{failureClusterAlias}"],
            context.cluster.clone(),
        ),
        field(
            Some("ORC_FAILURE_CLUSTER_DOMAIN"),
            &["{failureClusterDomain}"],
            String::new(),
        ),
        field(
            Some("ORC_COUNT_REPLICAS"),
            &["{countReplicas}", "{countSlaves}"],
            context.replicas.len().to_string(),
        ),
        field(
            Some("ORC_IS_DOWNTIMED"),
            &["{isDowntimed}"],
            context.downtimed.to_string(),
        ),
        field(
            Some("ORC_AUTO_MASTER_RECOVERY"),
            &["{autoMasterRecovery}"],
            context.automatic.to_string(),
        ),
        field(
            Some("ORC_AUTO_INTERMEDIATE_MASTER_RECOVERY"),
            &["{autoIntermediateMasterRecovery}"],
            "false".into(),
        ),
        field(
            Some("ORC_ORCHESTRATOR_HOST"),
            &["{orchestratorHost}"],
            this_host(),
        ),
        field(
            Some("ORC_IS_SUCCESSFUL"),
            &["{isSuccessful}"],
            successor.is_some().to_string(),
        ),
        field(
            Some("ORC_LOST_REPLICAS"),
            &["{lostReplicas}", "{lostSlaves}"],
            comma_list(&context.lost_replicas),
        ),
        field(
            None,
            &["{countLostReplicas}"],
            context.lost_replicas.len().to_string(),
        ),
        field(
            Some("ORC_REPLICA_HOSTS"),
            &["{replicaHosts}", "{slaveHosts}"],
            comma_list(&context.replicas),
        ),
        field(
            Some("ORC_RECOVERY_UID"),
            &["{recoveryUID}"],
            if point == HookPoint::PreSwitchover {
                String::new()
            } else {
                context.recovery_id.clone()
            },
        ),
    ];
    if let Some(successor) = successor {
        fields.push(field(
            Some("ORC_SUCCESSOR_HOST"),
            &["{successorHost}"],
            successor.host.clone(),
        ));
        fields.push(field(
            Some("ORC_SUCCESSOR_PORT"),
            &["{successorPort}"],
            successor.port.to_string(),
        ));
        fields.push(field(
            Some("ORC_SUCCESSOR_ALIAS"),
            &["{successorAlias}"],
            String::new(),
        ));
    }
    fields
}

/// The `ORC_*` variables for a command at `point`, in orchestrator's order.
pub fn variables(context: &HookContext, point: HookPoint) -> Vec<(&'static str, String)> {
    fields(context, point)
        .into_iter()
        .filter_map(|f| f.variable.map(|name| (name, f.value)))
        .collect()
}

/// A value as it may be pasted into a shell command line: what the shell would act on
/// becomes `_`.
fn shell_inert(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || " .,:/@+=%-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `command` with orchestrator's `{placeholder}`s replaced for `point`; a command
/// without any is returned as it is.
pub fn substitute(command: &str, context: &HookContext, point: HookPoint) -> String {
    if !command.contains('{') {
        return command.to_string();
    }
    let mut command = command.to_string();
    for field in fields(context, point) {
        for placeholder in field.placeholders {
            if command.contains(placeholder) {
                command = command.replace(placeholder, &shell_inert(&field.value));
            }
        }
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str, port: u16) -> InstanceKey {
        InstanceKey::new(host.to_string(), port)
    }

    fn failover() -> HookContext {
        HookContext {
            failure_type: "DeadPrimary".into(),
            cluster: "shop".into(),
            failed: Some(key("db1", 3306)),
            successor: Some(key("db2", 3306)),
            recovery_id: "shop-17".into(),
            description: "the primary does not answer; 'both' replicas confirm it".into(),
            replicas: vec![key("db2", 3306), key("db3", 3306)],
            lost_replicas: vec![key("db3", 3306)],
            downtimed: false,
            automatic: true,
        }
    }

    fn variable<'a>(variables: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        variables
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn after_a_failover_every_variable_is_set_in_orchestrators_format() {
        let variables = variables(&failover(), HookPoint::PostFailover);
        assert_eq!(variables.len(), 23, "20 always, 3 of the successor's");
        for (name, want) in [
            ("ORC_FAILURE_TYPE", "DeadMaster"),
            ("ORC_INSTANCE_TYPE", "master"),
            ("ORC_IS_MASTER", "true"),
            ("ORC_IS_CO_MASTER", "false"),
            ("ORC_COMMAND", ""),
            ("ORC_FAILED_HOST", "db1"),
            ("ORC_FAILED_PORT", "3306"),
            ("ORC_FAILURE_CLUSTER", "db1:3306"),
            ("ORC_FAILURE_CLUSTER_ALIAS", "shop"),
            ("ORC_COUNT_REPLICAS", "2"),
            ("ORC_IS_DOWNTIMED", "false"),
            ("ORC_AUTO_MASTER_RECOVERY", "true"),
            ("ORC_IS_SUCCESSFUL", "true"),
            ("ORC_LOST_REPLICAS", "db3:3306"),
            ("ORC_REPLICA_HOSTS", "db2:3306,db3:3306"),
            ("ORC_RECOVERY_UID", "shop-17"),
            ("ORC_SUCCESSOR_HOST", "db2"),
            ("ORC_SUCCESSOR_PORT", "3306"),
            ("ORC_SUCCESSOR_ALIAS", ""),
        ] {
            assert_eq!(variable(&variables, name), Some(want), "{name}");
        }
        assert_eq!(
            variable(&variables, "ORC_FAILURE_DESCRIPTION"),
            Some("the primary does not answer; 'both' replicas confirm it"),
            "the variable carries the text untouched"
        );
    }

    #[test]
    fn before_a_failover_there_is_no_successor_yet_as_in_orchestrator() {
        for point in [HookPoint::OnFailureDetected, HookPoint::PreFailover] {
            let variables = variables(&failover(), point);
            assert_eq!(variable(&variables, "ORC_IS_SUCCESSFUL"), Some("false"));
            assert_eq!(variable(&variables, "ORC_SUCCESSOR_HOST"), None, "{point}");
            assert_eq!(
                substitute(
                    "notify {successorHost}:{successorPort} {failedHost}",
                    &failover(),
                    point
                ),
                "notify {successorHost}:{successorPort} db1",
                "left as written, like orchestrator"
            );
        }
    }

    #[test]
    fn a_switchover_reads_as_orchestrators_graceful_takeover() {
        let context = HookContext {
            failure_type: "Switchover".into(),
            ..failover()
        };
        let pre = variables(&context, HookPoint::PreSwitchover);
        assert_eq!(variable(&pre, "ORC_FAILURE_TYPE"), Some("DeadMaster"));
        assert_eq!(
            variable(&pre, "ORC_COMMAND"),
            Some("graceful-master-takeover")
        );
        assert_eq!(variable(&pre, "ORC_SUCCESSOR_HOST"), Some("db2"));
        assert_eq!(variable(&pre, "ORC_IS_SUCCESSFUL"), Some("true"));
        assert_eq!(variable(&pre, "ORC_RECOVERY_UID"), Some(""));
        let post = variables(&context, HookPoint::PostSwitchover);
        assert_eq!(variable(&post, "ORC_RECOVERY_UID"), Some("shop-17"));
    }

    #[test]
    fn placeholders_are_replaced_with_what_the_shell_would_act_on_made_inert() {
        let command = substitute(
            "/usr/local/bin/failover.sh {failureType} {failureClusterAlias} {successorHost} {successorPort} {countReplicas} {countSlaves} {lostReplicas} '{failureDescription}' {isSuccessful} {unknown}",
            &failover(),
            HookPoint::PostFailover,
        );
        assert_eq!(
            command,
            "/usr/local/bin/failover.sh DeadMaster shop db2 3306 2 2 db3:3306 'the primary does not answer_ _both_ replicas confirm it' true {unknown}"
        );
        let hostile = HookContext {
            failed: Some(key("$(reboot)`id`;rm -rf /", 3306)),
            ..failover()
        };
        assert_eq!(
            substitute("echo {failedHost}", &hostile, HookPoint::PostFailover),
            "echo __reboot__id__rm -rf /"
        );
    }

    #[test]
    fn failure_types_map_to_orchestrators_analysis_codes() {
        assert_eq!(
            failure_type("DeadPrimaryAndSomeReplicas"),
            "DeadMasterAndSomeReplicas"
        );
        assert_eq!(
            failure_type("DeadIntermediatePrimary"),
            "DeadIntermediateMaster"
        );
        assert_eq!(failure_type("MultiplePrimaries"), "MultiplePrimaries");
    }
}
