//! Findings: what is wrong or risky in a cluster that needs no failover logic to see —
//! broken or stopped replication, lag, errant GTIDs, read_only on the wrong role,
//! mismatched binlog formats or versions, replicas that do not log what they apply.
//! Pure: a cluster, the snapshot and `now` in, findings out.

use crate::topology::gtid::GtidSet;
use crate::topology::{ClusterView, GtidState, Instance, InstanceKey, Instances, IoThreadState};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// How bad a finding is: a problem needs action now, a warning is a risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Problem,
}

/// What kind of finding, stable for scripts and alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FindingCode {
    Unreachable,
    ReplicationIoError,
    ReplicationSqlError,
    ReplicationStopped,
    ReplicationLagging,
    ErrantGtid,
    PrimaryReadOnly,
    ReplicaWritable,
    BinlogFormatMismatch,
    VersionMismatch,
    LogReplicaUpdatesOff,
    BinlogOff,
    SlowHeartbeat,
    /// A fenced old primary that is back and answers but replicates from nobody: safe
    /// (read_only), and waiting for an operator to re-attach or forget it.
    FencedDetached,
    /// The primary has semi-sync on, but no replica acknowledged within its timeout: it
    /// commits asynchronously now, and a failover may lose what it acknowledged.
    SemiSyncFellBack,
    /// With `recovery.require_semi_sync_ack`: the primary's semi-sync timeout is short
    /// enough that a partition lets it fall back and acknowledge writes a failover loses.
    SemiSyncMayFallBack,
}

/// One thing found wrong on one instance, with a sentence a DBA can act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub code: FindingCode,
    pub severity: Severity,
    pub instance: InstanceKey,
    pub message: String,
    /// Machine-readable extra, e.g. the errant GTID set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Thresholds the findings are judged by.
#[derive(Clone, Copy, Debug)]
pub struct FindingRules {
    pub lag_warning: Duration,
    /// A replica that hears its source's heartbeat less often than this (or never) is
    /// slow to tell that a primary was cut off: twice `recovery.heartbeat_period`.
    pub heartbeat_warning: Duration,
    /// `recovery.require_semi_sync_ack` relies on semi-sync never falling back: a
    /// semi-sync primary whose timeout is shorter than `SEMI_SYNC_NO_FALLBACK` is then
    /// warned about.
    pub semi_sync_must_not_fall_back: bool,
}

/// A semi-sync timeout at least this long counts as "never falls back": a partition
/// that outlasts it is one an operator has long been looking at.
pub const SEMI_SYNC_NO_FALLBACK: Duration = Duration::from_secs(3600);

impl Default for FindingRules {
    /// The configuration's defaults.
    fn default() -> Self {
        Self {
            lag_warning: Duration::from_secs(10),
            heartbeat_warning: Duration::from_secs(2),
            semi_sync_must_not_fall_back: false,
        }
    }
}

/// Everything found in one cluster, problems first.
pub fn cluster_findings(
    cluster: &ClusterView,
    snapshot: &impl Instances,
    rules: &FindingRules,
    now: SystemTime,
) -> Vec<Finding> {
    let primary = snapshot.get(&cluster.primary);
    let mut findings = Vec::new();
    for key in &cluster.members {
        let Some(instance) = snapshot.get(key) else {
            continue;
        };
        if let Some(since) = instance.unreachable_since {
            let ago = now.duration_since(since).unwrap_or_default();
            findings.push(Finding {
                code: FindingCode::Unreachable,
                severity: Severity::Problem,
                instance: key.clone(),
                message: format!(
                    "does not answer for {}: {}",
                    humantime::format_duration(round_seconds(ago)),
                    instance.last_error.as_deref().unwrap_or("no reason known")
                ),
                detail: None,
            });
            continue;
        }
        if key == &cluster.primary {
            primary_findings(instance, rules, &mut findings);
        } else {
            replica_findings(instance, primary, rules, &mut findings);
        }
    }
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.code.cmp(&b.code)));
    findings
}

fn round_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}

fn primary_findings(primary: &Instance, rules: &FindingRules, findings: &mut Vec<Finding>) {
    let Some(facts) = &primary.facts else {
        return;
    };
    if facts.read_only {
        findings.push(Finding {
            code: FindingCode::PrimaryReadOnly,
            severity: Severity::Problem,
            instance: primary.key.clone(),
            message: "the primary is read_only: applications cannot write".into(),
            detail: None,
        });
    }
    if facts.semi_sync.source_enabled && !facts.semi_sync.source_active {
        findings.push(Finding {
            code: FindingCode::SemiSyncFellBack,
            severity: Severity::Warning,
            instance: primary.key.clone(),
            message: "semi-sync is on, but no replica acknowledged within the primary's semi-sync timeout, so it fell back to asynchronous commits: a failover now may lose writes it acknowledged (check the replicas' semi-sync side and the timeout)".into(),
            detail: None,
        });
    }
    let semi = &facts.semi_sync;
    let timeout = semi.timeout_ms.map(Duration::from_millis);
    if rules.semi_sync_must_not_fall_back
        && semi.source_enabled
        && semi.source_active
        && timeout.is_some_and(|t| t < SEMI_SYNC_NO_FALLBACK)
    {
        findings.push(Finding {
            code: FindingCode::SemiSyncMayFallBack,
            severity: Severity::Warning,
            instance: primary.key.clone(),
            message: format!(
                "semi-sync falls back to asynchronous commits after {} without an acknowledgement: cut off from its replicas longer than that, this primary acknowledges writes a failover loses, whatever recovery.require_semi_sync_ack does (raise rpl_semi_sync_*_timeout to {} or more)",
                humantime::format_duration(timeout.unwrap_or_default()),
                humantime::format_duration(SEMI_SYNC_NO_FALLBACK)
            ),
            detail: None,
        });
    }
    if !facts.log_bin {
        findings.push(Finding {
            code: FindingCode::BinlogOff,
            severity: Severity::Problem,
            instance: primary.key.clone(),
            message: "the primary has log_bin OFF: replicas cannot follow it".into(),
            detail: None,
        });
    }
}

fn replica_findings(
    replica: &Instance,
    primary: Option<&Instance>,
    rules: &FindingRules,
    findings: &mut Vec<Finding>,
) {
    let Some(facts) = &replica.facts else {
        return;
    };
    let key = &replica.key;
    let mut push = |code, severity, message: String, detail: Option<String>| {
        findings.push(Finding {
            code,
            severity,
            instance: key.clone(),
            message,
            detail,
        })
    };

    if let Some(replication) = &facts.replication {
        let source = &replication.source;
        match replication.io_running {
            IoThreadState::Yes => {}
            _ if replication.last_io_errno != 0 => push(
                FindingCode::ReplicationIoError,
                Severity::Problem,
                format!(
                    "cannot receive from {source}: error {} {}",
                    replication.last_io_errno, replication.last_io_error
                ),
                None,
            ),
            IoThreadState::Connecting => push(
                FindingCode::ReplicationIoError,
                Severity::Problem,
                format!("IO thread is still connecting to {source}"),
                None,
            ),
            IoThreadState::No => push(
                FindingCode::ReplicationStopped,
                Severity::Problem,
                format!("IO thread is stopped: nothing is received from {source}"),
                None,
            ),
        }
        if !replication.sql_running {
            if replication.last_sql_errno != 0 {
                push(
                    FindingCode::ReplicationSqlError,
                    Severity::Problem,
                    format!(
                        "SQL thread stopped on error {}: {}",
                        replication.last_sql_errno, replication.last_sql_error
                    ),
                    None,
                );
            } else {
                push(
                    FindingCode::ReplicationStopped,
                    Severity::Problem,
                    "SQL thread is stopped: received transactions are not applied".into(),
                    None,
                );
            }
        }
        match replication.heartbeat_period {
            Some(period) if period <= 0.0 => push(
                FindingCode::SlowHeartbeat,
                Severity::Warning,
                format!("no heartbeat from {source}: if that primary were cut off from everyone, this replica would never tell (set a heartbeat period of 1s)"),
                None,
            ),
            Some(period) if Duration::from_secs_f64(period) > rules.heartbeat_warning => push(
                FindingCode::SlowHeartbeat,
                Severity::Warning,
                format!(
                    "heartbeat from {source} only every {period}s: a primary cut off from everyone is seen only after several of these (set a heartbeat period of at most {}s)",
                    rules.heartbeat_warning.as_secs_f64()
                ),
                Some(period.to_string()),
            ),
            _ => {}
        }
        if let Some(lag) = replication.seconds_behind_source {
            if lag > rules.lag_warning.as_secs() {
                let delay = if replication.sql_delay > 0 {
                    format!(" (a delay of {}s is configured)", replication.sql_delay)
                } else {
                    String::new()
                };
                push(
                    FindingCode::ReplicationLagging,
                    Severity::Warning,
                    format!(
                        "{lag}s behind its source, over the {}s threshold{delay}",
                        rules.lag_warning.as_secs()
                    ),
                    Some(lag.to_string()),
                );
            }
        }
    }

    if !facts.read_only {
        push(
            FindingCode::ReplicaWritable,
            Severity::Warning,
            "replica is not read_only: a stray write here becomes an errant transaction".into(),
            None,
        );
    }
    if !facts.log_bin {
        push(
            FindingCode::BinlogOff,
            Severity::Warning,
            "log_bin is OFF: this replica cannot be promoted".into(),
            None,
        );
    } else if !facts.log_replica_updates {
        push(
            FindingCode::LogReplicaUpdatesOff,
            Severity::Warning,
            "log_replica_updates is OFF: after a promotion the other replicas could not follow it"
                .into(),
            None,
        );
    }

    let Some(primary_facts) = primary
        .filter(|p| p.is_reachable())
        .and_then(|p| p.facts.as_ref())
    else {
        return;
    };
    if !facts
        .binlog_format
        .eq_ignore_ascii_case(&primary_facts.binlog_format)
    {
        push(
            FindingCode::BinlogFormatMismatch,
            Severity::Warning,
            format!(
                "binlog_format is {} but the primary's is {}",
                facts.binlog_format, primary_facts.binlog_format
            ),
            None,
        );
    }
    if facts.flavor != primary_facts.flavor
        || facts.version.series() != primary_facts.version.series()
    {
        let older = facts.flavor == primary_facts.flavor
            && facts.version.series() < primary_facts.version.series();
        push(
            FindingCode::VersionMismatch,
            Severity::Warning,
            format!(
                "runs {} {} while the primary runs {} {}{}",
                facts.flavor,
                facts.version.short(),
                primary_facts.flavor,
                primary_facts.version.short(),
                if older {
                    ": an older replica may not apply what a newer primary writes"
                } else {
                    ""
                }
            ),
            None,
        );
    }
    if let Some(errant) = errant_gtids(&facts.gtid, &primary_facts.gtid, primary_facts) {
        push(
            FindingCode::ErrantGtid,
            Severity::Problem,
            format!("has transactions the primary never had: {errant}"),
            Some(errant),
        );
    }
}

/// Transactions on a replica that its cluster's primary never had, as text, or `None`.
/// The primary's own transactions are left out: it may have committed more since it
/// was probed, and a replica that is ahead of that probe is not errant.
pub fn errant_gtids(
    replica: &GtidState,
    primary: &GtidState,
    primary_facts: &crate::topology::InstanceFacts,
) -> Option<String> {
    match (replica, primary) {
        (
            GtidState::Mysql { executed, .. },
            GtidState::Mysql {
                executed: primary_executed,
                ..
            },
        ) => {
            // The common answer, "none", without building a set (this runs for every
            // replica of every cluster a list of clusters shows).
            let own = primary_facts.server_uuid.as_deref();
            if executed.is_subset_of_except(primary_executed, own) {
                return None;
            }
            let mut errant = executed.subtract(primary_executed);
            if let Some(uuid) = &primary_facts.server_uuid {
                let own: GtidSet = errant.restricted_to_uuid(uuid);
                errant = errant.subtract(&own);
            }
            (!errant.is_empty()).then(|| errant.to_string())
        }
        (
            GtidState::Mariadb { binlog_state, .. },
            GtidState::Mariadb {
                binlog_state: primary_state,
                ..
            },
        ) => {
            let errant = binlog_state
                .errant_against(primary_state)
                .without_server(primary_facts.server_id);
            (!errant.is_empty()).then(|| errant.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::instance::tests_support::{primary, replica};
    use crate::topology::{build_clusters, IoThreadState, Snapshot};

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    fn findings_of(instances: Vec<Instance>) -> Vec<Finding> {
        findings_under(instances, &FindingRules::default())
    }

    fn findings_under(instances: Vec<Instance>, rules: &FindingRules) -> Vec<Finding> {
        let snapshot = Snapshot::of(instances);
        let clusters = build_clusters(&snapshot, &[]);
        assert_eq!(clusters.len(), 1, "one cluster expected");
        cluster_findings(&clusters[0], &snapshot, rules, SystemTime::now())
    }

    fn codes(findings: &[Finding]) -> Vec<(FindingCode, u16)> {
        findings.iter().map(|f| (f.code, f.instance.port)).collect()
    }

    fn with_replication(
        mut instance: Instance,
        change: impl FnOnce(&mut crate::topology::ReplicationStatus),
    ) -> Instance {
        let facts = instance.facts.as_mut().expect("facts");
        change(facts.replication.as_mut().expect("a replica"));
        instance
    }

    #[test]
    fn a_healthy_cluster_has_no_findings() {
        let found = findings_of(vec![primary(key(1)), replica(key(2), key(1))]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_replica_that_hears_its_source_rarely_or_never_is_warned_about() {
        let found = findings_of(vec![
            primary(key(1)),
            with_replication(replica(key(2), key(1)), |r| r.heartbeat_period = Some(2.0)),
            with_replication(replica(key(3), key(1)), |r| r.heartbeat_period = Some(30.0)),
            with_replication(replica(key(4), key(1)), |r| r.heartbeat_period = Some(0.0)),
            with_replication(replica(key(5), key(1)), |r| r.heartbeat_period = None),
        ]);
        assert_eq!(
            codes(&found),
            vec![
                (FindingCode::SlowHeartbeat, 3),
                (FindingCode::SlowHeartbeat, 4)
            ]
        );
        assert!(
            found[0].message.contains("every 30s"),
            "{}",
            found[0].message
        );
        assert!(
            found[1].message.contains("never tell"),
            "{}",
            found[1].message
        );
    }

    #[test]
    fn stopped_and_broken_threads_are_problems() {
        let found = findings_of(vec![
            primary(key(1)),
            with_replication(replica(key(2), key(1)), |r| r.sql_running = false),
            with_replication(replica(key(3), key(1)), |r| {
                r.io_running = IoThreadState::Connecting;
                r.last_io_errno = 2003;
                r.last_io_error = "Can't connect".into();
            }),
            with_replication(replica(key(4), key(1)), |r| {
                r.sql_running = false;
                r.last_sql_errno = 1062;
                r.last_sql_error = "Duplicate entry".into();
            }),
        ]);
        assert_eq!(
            codes(&found),
            vec![
                (FindingCode::ReplicationIoError, 3),
                (FindingCode::ReplicationSqlError, 4),
                (FindingCode::ReplicationStopped, 2),
            ]
        );
        assert!(
            found[0].message.contains("error 2003"),
            "{}",
            found[0].message
        );
        assert!(found.iter().all(|f| f.severity == Severity::Problem));
    }

    #[test]
    fn lag_over_the_threshold_is_a_warning_that_mentions_a_configured_delay() {
        let found = findings_of(vec![
            primary(key(1)),
            with_replication(replica(key(2), key(1)), |r| {
                r.seconds_behind_source = Some(31);
                r.sql_delay = 30;
            }),
            with_replication(replica(key(3), key(1)), |r| {
                r.seconds_behind_source = Some(10)
            }),
        ]);
        assert_eq!(codes(&found), vec![(FindingCode::ReplicationLagging, 2)]);
        assert!(found[0].message.contains("31s behind"));
        assert!(found[0].message.contains("delay of 30s"));
    }

    #[test]
    fn a_semi_sync_primary_that_fell_back_to_asynchronous_commits_is_warned_about() {
        let semi_sync = |enabled: bool, active: bool| {
            let mut instance = primary(key(1));
            let semi = &mut instance.facts.as_mut().expect("facts").semi_sync;
            semi.source_enabled = enabled;
            semi.source_active = active;
            semi.source_clients = u32::from(active);
            instance
        };
        let found = findings_of(vec![semi_sync(true, false), replica(key(2), key(1))]);
        assert_eq!(codes(&found), vec![(FindingCode::SemiSyncFellBack, 1)]);
        assert_eq!(found[0].severity, Severity::Warning);
        assert!(found[0].message.contains("asynchronous commits"));
        for (enabled, active) in [(true, true), (false, false)] {
            let found = findings_of(vec![semi_sync(enabled, active), replica(key(2), key(1))]);
            assert!(found.is_empty(), "{enabled} {active}: {found:?}");
        }
    }

    #[test]
    fn with_require_semi_sync_ack_a_timeout_that_lets_the_primary_fall_back_is_warned_about() {
        let in_sync = |timeout_ms: u64| {
            let mut instance = primary(key(1));
            let semi = &mut instance.facts.as_mut().expect("facts").semi_sync;
            semi.source_enabled = true;
            semi.source_active = true;
            semi.source_clients = 1;
            semi.timeout_ms = Some(timeout_ms);
            vec![instance, replica(key(2), key(1))]
        };
        let strict = FindingRules {
            semi_sync_must_not_fall_back: true,
            ..FindingRules::default()
        };
        let found = findings_under(in_sync(10_000), &strict);
        assert_eq!(codes(&found), vec![(FindingCode::SemiSyncMayFallBack, 1)]);
        assert!(
            found[0].message.contains("after 10s"),
            "{}",
            found[0].message
        );
        assert!(findings_under(in_sync(3_600_000), &strict).is_empty());
        assert!(
            findings_of(in_sync(10_000)).is_empty(),
            "only when the setting relies on it"
        );
    }

    #[test]
    fn read_only_on_the_wrong_role_is_found() {
        let mut writable_replica = replica(key(2), key(1));
        writable_replica.facts.as_mut().expect("facts").read_only = false;
        let mut read_only_primary = primary(key(1));
        read_only_primary.facts.as_mut().expect("facts").read_only = true;
        let found = findings_of(vec![read_only_primary, writable_replica]);
        assert_eq!(
            codes(&found),
            vec![
                (FindingCode::PrimaryReadOnly, 1),
                (FindingCode::ReplicaWritable, 2)
            ]
        );
    }

    #[test]
    fn format_version_and_logging_mismatches_are_warnings() {
        let mut odd = replica(key(2), key(1));
        {
            let facts = odd.facts.as_mut().expect("facts");
            facts.binlog_format = "MIXED".into();
            facts.version = crate::topology::ServerVersion::parse("8.4.3");
            facts.log_replica_updates = false;
        }
        let found = findings_of(vec![primary(key(1)), odd]);
        assert_eq!(
            codes(&found),
            vec![
                (FindingCode::BinlogFormatMismatch, 2),
                (FindingCode::VersionMismatch, 2),
                (FindingCode::LogReplicaUpdatesOff, 2),
            ]
        );
        assert!(
            found[1].message.contains("older replica"),
            "{}",
            found[1].message
        );
    }

    #[test]
    fn errant_mysql_transactions_are_shown_but_the_primarys_newer_ones_are_not() {
        let uuid_primary = "11111111-1111-1111-1111-111111111111";
        let uuid_replica = "22222222-2222-2222-2222-222222222222";
        let mut p = primary(key(1));
        {
            let facts = p.facts.as_mut().expect("facts");
            facts.server_uuid = Some(uuid_primary.into());
            facts.gtid = GtidState::Mysql {
                mode: "ON".into(),
                executed: GtidSet::parse(&format!("{uuid_primary}:1-10")).expect("gtid"),
            };
        }
        let mut errant = replica(key(2), key(1));
        errant.facts.as_mut().expect("facts").gtid = GtidState::Mysql {
            mode: "ON".into(),
            executed: GtidSet::parse(&format!("{uuid_primary}:1-12,\n{uuid_replica}:1-2"))
                .expect("gtid"),
        };
        let found = findings_of(vec![p, errant]);
        assert_eq!(codes(&found), vec![(FindingCode::ErrantGtid, 2)]);
        assert_eq!(
            found[0].detail.as_deref(),
            Some(&*format!("{uuid_replica}:1-2"))
        );
    }

    #[test]
    fn errant_mariadb_transactions_are_found_client_side() {
        use crate::topology::gtid::MariadbGtidList;
        let maria = |state: &str, server_id: u32, instance: &mut Instance| {
            let facts = instance.facts.as_mut().expect("facts");
            facts.flavor = crate::topology::ServerFlavor::Mariadb;
            facts.server_id = server_id;
            let list = MariadbGtidList::parse(state).expect("gtid");
            facts.gtid = GtidState::Mariadb {
                binlog_pos: list.clone(),
                current_pos: list.clone(),
                slave_pos: list.clone(),
                binlog_state: list,
                domain_id: 0,
                strict_mode: true,
            };
        };
        let mut p = primary(key(1));
        maria("0-101-13", 101, &mut p);
        let mut lagging = replica(key(2), key(1));
        maria("0-101-12", 102, &mut lagging);
        let mut ahead = replica(key(3), key(1));
        maria("0-101-14", 103, &mut ahead);
        let mut errant = replica(key(4), key(1));
        maria("0-101-13,0-104-14", 104, &mut errant);
        let found = findings_of(vec![p, lagging, ahead, errant]);
        assert_eq!(codes(&found), vec![(FindingCode::ErrantGtid, 4)]);
        assert_eq!(found[0].detail.as_deref(), Some("0-104-14"));
    }

    #[test]
    fn an_unreachable_instance_says_since_when_and_why() {
        let mut gone = replica(key(2), key(1));
        gone.unreachable_since = Some(SystemTime::now() - Duration::from_secs(5));
        gone.last_error = Some("connection refused".into());
        let found = findings_of(vec![primary(key(1)), gone]);
        assert_eq!(codes(&found), vec![(FindingCode::Unreachable, 2)]);
        assert!(found[0].message.contains("5s"), "{}", found[0].message);
        assert!(found[0].message.contains("connection refused"));
    }
}
