//! Candidate selection: which replica takes over from a failed primary, and why every
//! other one does not. Pure: the snapshot and the promotion policy in, a plan out — every
//! choice carries its reasons so the audit can say "node3 skipped: errant GTIDs ...".
//!
//! Excluded: unreachable replicas, `must_not` and `promotion.ignore_hosts` matches,
//! replicas with errant GTIDs, an older major version than the others, log_bin or
//! log_replica_updates OFF, a binlog format the others could not follow, a lag (or a
//! configured delay) over `promotion.max_lag`, and replication without GTID. Among the
//! rest: the most advanced GTID position, then `prefer` over neutral over `prefer_not`,
//! then configuration order. A more advanced replica that may not be promoted is caught
//! up from first, so nothing it holds is lost.

use crate::analysis::findings::errant_gtids;
use crate::topology::gtid::{GtidSet, MariadbGtidList};
use crate::topology::{GtidState, Instance, InstanceKey, Snapshot};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Operator preferences for promotion, as orchestrator's promotion rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionRule {
    Prefer,
    Neutral,
    PreferNot,
    MustNot,
}

/// The configured policy, regexes compiled (matched against `host:port`).
#[derive(Clone, Debug, Default)]
pub struct PromotionPolicy {
    pub max_lag: Duration,
    pub ignore_hosts: Vec<Regex>,
    pub prefer: Vec<Regex>,
    pub prefer_not: Vec<Regex>,
    pub must_not: Vec<Regex>,
    /// Instances in configuration order: the last tie-breaker.
    pub order: Vec<InstanceKey>,
    /// `recovery.require_semi_sync_ack`: promote only when the failed primary was last
    /// seen committing semi-synchronously, and only a replica with semi-sync's replica
    /// side on (one that acknowledges), so no write the primary acknowledged is lost.
    pub require_semi_sync_ack: bool,
}

impl PromotionPolicy {
    pub fn rule_for(&self, key: &InstanceKey) -> PromotionRule {
        let name = key.to_string();
        let hit = |list: &[Regex]| list.iter().any(|r| r.is_match(&name));
        if hit(&self.must_not) {
            PromotionRule::MustNot
        } else if hit(&self.prefer) {
            PromotionRule::Prefer
        } else if hit(&self.prefer_not) {
            PromotionRule::PreferNot
        } else {
            PromotionRule::Neutral
        }
    }
}

/// What was decided about one replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateVerdict {
    pub instance: InstanceKey,
    pub eligible: bool,
    /// Why it may not be promoted (empty when eligible).
    pub reasons: Vec<String>,
    pub rule: PromotionRule,
    /// Transactions it has or has received: what it will hold once its relay log is applied.
    pub position: u64,
}

/// How to replace a failed primary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromotionPlan {
    pub failed: InstanceKey,
    pub candidate: InstanceKey,
    /// A more advanced replica the candidate copies from before promotion.
    pub catch_up_from: Option<InstanceKey>,
    /// The other reachable replicas, to re-point under the candidate.
    pub siblings: Vec<InstanceKey>,
    /// Every replica, ranked: eligible ones first, best first.
    pub verdicts: Vec<CandidateVerdict>,
}

impl PromotionPlan {
    /// One line per replica for the audit log.
    pub fn explain(&self) -> String {
        self.verdicts
            .iter()
            .map(|v| {
                if v.instance == self.candidate {
                    format!(
                        "{} chosen ({} transactions, {:?})",
                        v.instance, v.position, v.rule
                    )
                } else if v.eligible {
                    format!(
                        "{} eligible, ranked lower ({} transactions, {:?})",
                        v.instance, v.position, v.rule
                    )
                } else {
                    format!("{} skipped: {}", v.instance, v.reasons.join("; "))
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("{failed} has no replicas to promote")]
    NoReplicas { failed: InstanceKey },
    #[error("recovery needs GTID replication, and {} replicate by file and position; switch them to GTID auto-positioning (MySQL SOURCE_AUTO_POSITION=1, MariaDB MASTER_USE_GTID=slave_pos)", .instances.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "))]
    NoGtid { instances: Vec<InstanceKey> },
    #[error("no replica of {failed} may be promoted:\n{}", explain_all(.verdicts))]
    NoCandidate {
        failed: InstanceKey,
        verdicts: Vec<CandidateVerdict>,
    },
    #[error("{instance} may not be promoted: {}", .reasons.join("; "))]
    RequestedIneligible {
        instance: InstanceKey,
        reasons: Vec<String>,
    },
    #[error("{instance} is not a replica of {failed}")]
    NotAReplica {
        instance: InstanceKey,
        failed: InstanceKey,
    },
    #[error("{failed} was last seen {why}: writes it acknowledged may be on it alone, and recovery.require_semi_sync_ack forbids promoting a replica that may lack them; bring {failed} back, or turn the setting off to promote anyway (losing them)")]
    NotInSync { failed: InstanceKey, why: String },
}

fn explain_all(verdicts: &[CandidateVerdict]) -> String {
    verdicts
        .iter()
        .map(|v| format!("  {} skipped: {}", v.instance, v.reasons.join("; ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Chooses who replaces `failed` among its direct replicas, or the `requested` one if it
/// is eligible.
pub fn plan_promotion(
    failed: &InstanceKey,
    snapshot: &Snapshot,
    policy: &PromotionPolicy,
    requested: Option<&InstanceKey>,
) -> Result<PromotionPlan, PlanError> {
    let replicas: Vec<&Instance> = snapshot
        .instances
        .values()
        .map(AsRef::as_ref)
        .filter(|i| i.source() == Some(failed))
        .collect();
    if replicas.is_empty() {
        return Err(PlanError::NoReplicas {
            failed: failed.clone(),
        });
    }
    if let Some(requested) = requested {
        if !replicas.iter().any(|r| &r.key == requested) {
            return Err(PlanError::NotAReplica {
                instance: requested.clone(),
                failed: failed.clone(),
            });
        }
    }
    let without_gtid: Vec<InstanceKey> = replicas
        .iter()
        .filter(|r| r.is_reachable())
        .filter(|r| {
            !r.facts
                .as_ref()
                .and_then(|f| f.replication.as_ref())
                .is_some_and(|s| s.gtid_auto_position)
        })
        .map(|r| r.key.clone())
        .collect();
    if !without_gtid.is_empty() {
        return Err(PlanError::NoGtid {
            instances: without_gtid,
        });
    }

    let failed_facts = snapshot.get(failed).and_then(|i| i.facts.as_ref());
    if policy.require_semi_sync_ack {
        let why = match failed_facts.map(|f| &f.semi_sync) {
            None => Some("never (its semi-sync state is unknown)"),
            Some(semi) if !semi.source_enabled => Some("with semi-sync off"),
            Some(semi) if !semi.source_active => {
                Some("committing asynchronously (semi-sync fell back after its timeout)")
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            return Err(PlanError::NotInSync {
                failed: failed.clone(),
                why: why.to_string(),
            });
        }
    }
    let reachable: Vec<&Instance> = replicas
        .iter()
        .copied()
        .filter(|r| r.is_reachable())
        .collect();
    let newest_series = reachable
        .iter()
        .filter_map(|r| r.facts.as_ref().map(|f| f.version.series()))
        .max();
    let format_rank = |format: &str| match format.to_ascii_uppercase().as_str() {
        "STATEMENT" => 0,
        "MIXED" => 1,
        _ => 2,
    };
    let lowest_format = reachable
        .iter()
        .filter_map(|r| r.facts.as_ref().map(|f| format_rank(&f.binlog_format)))
        .min()
        .unwrap_or(2);

    let mut verdicts: Vec<CandidateVerdict> = replicas
        .iter()
        .map(|replica| {
            let rule = policy.rule_for(&replica.key);
            let mut reasons = Vec::new();
            let name = replica.key.to_string();
            if !replica.is_reachable() {
                reasons.push("unreachable".to_string());
            }
            if rule == PromotionRule::MustNot {
                reasons.push("promotion rule must_not".to_string());
            }
            if policy.ignore_hosts.iter().any(|r| r.is_match(&name)) {
                reasons.push("matches promotion.ignore_hosts".to_string());
            }
            if let Some(facts) = replica.facts.as_ref().filter(|_| replica.is_reachable()) {
                if let Some(primary) = failed_facts {
                    if let Some(errant) = errant_gtids(&facts.gtid, &primary.gtid, primary) {
                        reasons.push(format!("errant GTIDs {errant}"));
                    }
                }
                if newest_series.is_some_and(|newest| facts.version.series() < newest) {
                    reasons.push(format!(
                        "older version {} than other replicas",
                        facts.version.short()
                    ));
                }
                if !facts.log_bin {
                    reasons.push("log_bin is OFF".to_string());
                } else if !facts.log_replica_updates {
                    reasons.push("log_replica_updates is OFF".to_string());
                }
                if format_rank(&facts.binlog_format) > lowest_format {
                    reasons.push(format!(
                        "binlog_format {} that replicas with a lower format could not follow",
                        facts.binlog_format
                    ));
                }
                if let Some(status) = facts.replication.as_ref().filter(|s| !s.sql_running) {
                    // It could not apply its relay log before promotion.
                    reasons.push(if status.last_sql_errno != 0 {
                        format!(
                            "SQL thread stopped (error {}: {})",
                            status.last_sql_errno, status.last_sql_error
                        )
                    } else {
                        "SQL thread stopped".to_string()
                    });
                }
                if policy.require_semi_sync_ack && !facts.semi_sync.replica_enabled {
                    reasons.push(
                        "semi-sync's replica side is off: it acknowledged nothing (recovery.require_semi_sync_ack)"
                            .to_string(),
                    );
                }
                if let Some(status) = &facts.replication {
                    let max = policy.max_lag.as_secs();
                    if status.sql_delay > max {
                        reasons.push(format!("delayed replica (SQL_Delay {}s)", status.sql_delay));
                    } else if let Some(lag) = status.seconds_behind_source.filter(|lag| *lag > max)
                    {
                        reasons.push(format!("{lag}s behind, over promotion.max_lag {max}s"));
                    }
                }
            }
            CandidateVerdict {
                instance: replica.key.clone(),
                eligible: reasons.is_empty(),
                reasons,
                rule,
                position: position(replica),
            }
        })
        .collect();

    let order = |key: &InstanceKey| {
        policy
            .order
            .iter()
            .position(|k| k == key)
            .unwrap_or(usize::MAX)
    };
    verdicts.sort_by(|a, b| {
        b.eligible
            .cmp(&a.eligible)
            .then(b.position.cmp(&a.position))
            .then(a.rule.cmp(&b.rule))
            .then(order(&a.instance).cmp(&order(&b.instance)))
            .then(a.instance.cmp(&b.instance))
    });

    let candidate = match requested {
        Some(requested) => {
            let verdict = verdicts
                .iter()
                .find(|v| &v.instance == requested)
                .expect("requested was checked to be a replica");
            if !verdict.eligible {
                return Err(PlanError::RequestedIneligible {
                    instance: requested.clone(),
                    reasons: verdict.reasons.clone(),
                });
            }
            verdict.clone()
        }
        None => match verdicts.first().filter(|v| v.eligible) {
            Some(best) => best.clone(),
            None => {
                return Err(PlanError::NoCandidate {
                    failed: failed.clone(),
                    verdicts,
                })
            }
        },
    };

    // Catch up from the most advanced reachable replica without errant transactions,
    // when it holds more than the candidate.
    let catch_up_from = verdicts
        .iter()
        .filter(|v| {
            v.instance != candidate.instance && v.reasons.iter().all(|r| can_still_serve(r))
        })
        .max_by_key(|v| v.position)
        .filter(|v| v.position > candidate.position)
        .map(|v| v.instance.clone());

    let siblings = reachable
        .iter()
        .map(|r| r.key.clone())
        .filter(|k| *k != candidate.instance)
        .collect();
    Ok(PromotionPlan {
        failed: failed.clone(),
        candidate: candidate.instance,
        catch_up_from,
        siblings,
        verdicts,
    })
}

/// Whether a replica excluded for this reason can still be a source to catch up from:
/// policy, lag and age do not matter for that; a missing binlog, errant transactions or
/// an incompatible format do.
fn can_still_serve(reason: &str) -> bool {
    ![
        "unreachable",
        "errant",
        "log_",
        "binlog_format",
        "SQL thread",
    ]
    .iter()
    .any(|prefix| reason.starts_with(prefix))
}

/// Transactions a replica holds once its relay log is applied: executed plus received.
pub fn position(instance: &Instance) -> u64 {
    let Some(facts) = &instance.facts else {
        return 0;
    };
    let received = facts
        .replication
        .as_ref()
        .map(|r| r.received_gtids.as_str())
        .unwrap_or_default();
    match &facts.gtid {
        GtidState::Mysql { executed, .. } => {
            let received = GtidSet::parse(received).unwrap_or_default();
            executed.union(&received).transaction_count()
        }
        GtidState::Mariadb {
            current_pos,
            slave_pos,
            ..
        } => {
            // MariaDB sequence numbers grow per domain: the highest seen per domain,
            // summed over domains, orders replicas of one primary.
            let received = MariadbGtidList::parse(received).unwrap_or_default();
            let mut highest: BTreeMap<u32, u64> = BTreeMap::new();
            for gtid in current_pos
                .iter()
                .chain(slave_pos.iter())
                .chain(received.iter())
            {
                let seq = highest.entry(gtid.domain).or_default();
                *seq = (*seq).max(gtid.seq);
            }
            highest.values().sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::instance::tests_support::{primary, replica};

    const UUID_P: &str = "11111111-1111-1111-1111-111111111111";

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    fn with_gtids(mut instance: Instance, executed: &str) -> Instance {
        let facts = instance.facts.as_mut().expect("facts");
        if instance.key.port == 1 {
            facts.server_uuid = Some(UUID_P.into());
        }
        facts.gtid = GtidState::Mysql {
            mode: "ON".into(),
            executed: GtidSet::parse(executed).expect("gtid"),
        };
        instance
    }

    fn r(port: u16, applied: u64) -> Instance {
        with_gtids(replica(key(port), key(1)), &format!("{UUID_P}:1-{applied}"))
    }

    fn snapshot(instances: Vec<Instance>) -> Snapshot {
        let mut all = vec![with_gtids(primary(key(1)), &format!("{UUID_P}:1-100"))];
        all[0].unreachable_since = Some(std::time::SystemTime::now());
        all.extend(instances);
        Snapshot::of(all)
    }

    fn policy() -> PromotionPolicy {
        PromotionPolicy {
            max_lag: Duration::from_secs(10),
            ..PromotionPolicy::default()
        }
    }

    fn regexes(list: &[&str]) -> Vec<Regex> {
        list.iter().map(|r| Regex::new(r).expect("regex")).collect()
    }

    fn choose(
        instances: Vec<Instance>,
        policy: &PromotionPolicy,
    ) -> Result<PromotionPlan, PlanError> {
        plan_promotion(&key(1), &snapshot(instances), policy, None)
    }

    #[test]
    fn a_plan_over_the_failed_primarys_cluster_alone_is_the_plan_over_the_fleet() {
        let elsewhere = [
            primary(key(10)),
            replica(key(11), key(10)),
            replica(key(12), key(11)),
        ];
        let mut fleet = snapshot(vec![r(2, 98), r(3, 100), r(4, 99)]);
        for instance in elsewhere {
            fleet
                .instances
                .insert(instance.key.clone(), std::sync::Arc::new(instance));
        }
        let cluster = [key(1), key(2), key(3), key(4)];
        assert_eq!(
            plan_promotion(&key(1), &fleet.only(&cluster), &policy(), None),
            plan_promotion(&key(1), &fleet, &policy(), None)
        );
        assert_eq!(fleet.only(&cluster).instances.len(), 4);
    }

    #[test]
    fn the_most_advanced_replica_wins_then_preference_then_order() {
        let plan = choose(vec![r(2, 98), r(3, 100), r(4, 99)], &policy()).expect("plan");
        assert_eq!(plan.candidate, key(3));
        assert_eq!(plan.siblings, vec![key(2), key(4)]);
        assert_eq!(plan.catch_up_from, None);

        let prefer = PromotionPolicy {
            prefer: regexes(&[":4$"]),
            ..policy()
        };
        let plan = choose(vec![r(2, 100), r(3, 100), r(4, 100)], &prefer).expect("plan");
        assert_eq!(plan.candidate, key(4), "prefer breaks a tie in position");

        let prefer_not = PromotionPolicy {
            prefer_not: regexes(&[":2$"]),
            order: vec![key(3), key(2)],
            ..policy()
        };
        let plan = choose(vec![r(2, 100), r(3, 100)], &prefer_not).expect("plan");
        assert_eq!(plan.candidate, key(3));
        let ordered = PromotionPolicy {
            order: vec![key(3), key(2)],
            ..policy()
        };
        assert_eq!(
            choose(vec![r(2, 100), r(3, 100)], &ordered)
                .expect("plan")
                .candidate,
            key(3)
        );
    }

    #[test]
    fn require_semi_sync_ack_promotes_only_from_an_in_sync_primary_to_an_acknowledging_replica() {
        let policy = PromotionPolicy {
            require_semi_sync_ack: true,
            ..policy()
        };
        let semi = |mut instance: Instance, replica_side: bool| {
            instance
                .facts
                .as_mut()
                .expect("facts")
                .semi_sync
                .replica_enabled = replica_side;
            instance
        };
        let with_primary = |source_enabled: bool, source_active: bool| {
            let mut snapshot = snapshot(vec![semi(r(2, 100), false), semi(r(3, 99), true)]);
            let primary = snapshot
                .get_mut(&key(1))
                .and_then(|i| i.facts.as_mut())
                .expect("the primary's last facts");
            primary.semi_sync.source_enabled = source_enabled;
            primary.semi_sync.source_active = source_active;
            snapshot
        };
        // In sync: the acknowledging replica is chosen, even though it is behind (it
        // copies from the other first), and the other is passed over and says why.
        let plan =
            plan_promotion(&key(1), &with_primary(true, true), &policy, None).expect("a plan");
        assert_eq!(plan.candidate, key(3));
        assert_eq!(plan.catch_up_from, Some(key(2)));
        let passed_over = plan
            .verdicts
            .iter()
            .find(|v| v.instance == key(2))
            .expect("verdict");
        assert!(
            passed_over.reasons[0].contains("acknowledged nothing"),
            "{passed_over:?}"
        );
        // Fallen back, or off: nobody is promoted, and the error says why and what to do.
        for (enabled, active, said) in [
            (true, false, "committing asynchronously"),
            (false, false, "with semi-sync off"),
        ] {
            let error = plan_promotion(&key(1), &with_primary(enabled, active), &policy, None)
                .expect_err("refused");
            let text = error.to_string();
            assert!(
                text.contains(said) && text.contains("turn the setting off"),
                "{text}"
            );
        }
        // Without the setting, nothing changes.
        let plan = plan_promotion(
            &key(1),
            &with_primary(true, false),
            &super::tests::policy(),
            None,
        )
        .expect("a plan");
        assert_eq!(plan.candidate, key(2));
    }

    #[test]
    fn every_exclusion_is_explained() {
        let mut errant = with_gtids(
            replica(key(2), key(1)),
            &format!("{UUID_P}:1-100,22222222-2222-2222-2222-222222222222:1-2"),
        );
        errant.key = key(2);
        let mut dead = r(3, 100);
        dead.unreachable_since = Some(std::time::SystemTime::now());
        let mut old = r(4, 100);
        old.facts.as_mut().expect("facts").version = crate::topology::ServerVersion::parse("8.4.3");
        let mut no_log = r(5, 100);
        no_log.facts.as_mut().expect("facts").log_replica_updates = false;
        let mut lagging = r(6, 100);
        lagging
            .facts
            .as_mut()
            .and_then(|f| f.replication.as_mut())
            .expect("replica")
            .seconds_behind_source = Some(60);
        let mut delayed = r(7, 100);
        delayed
            .facts
            .as_mut()
            .and_then(|f| f.replication.as_mut())
            .expect("replica")
            .sql_delay = 3600;
        let banned = r(8, 100);
        let ignored = r(9, 100);
        let policy = PromotionPolicy {
            must_not: regexes(&[":8$"]),
            ignore_hosts: regexes(&[":9$"]),
            ..policy()
        };
        let err = choose(
            vec![errant, dead, old, no_log, lagging, delayed, banned, ignored],
            &policy,
        )
        .expect_err("nobody eligible");
        let text = err.to_string();
        for expected in [
            "127.0.0.1:2 skipped: errant GTIDs 22222222-2222-2222-2222-222222222222:1-2",
            "127.0.0.1:3 skipped: unreachable",
            "127.0.0.1:4 skipped: older version 8.4.3",
            "127.0.0.1:5 skipped: log_replica_updates is OFF",
            "127.0.0.1:6 skipped: 60s behind, over promotion.max_lag 10s",
            "127.0.0.1:7 skipped: delayed replica (SQL_Delay 3600s)",
            "127.0.0.1:8 skipped: promotion rule must_not",
            "127.0.0.1:9 skipped: matches promotion.ignore_hosts",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn a_replica_that_cannot_apply_is_neither_promoted_nor_copied_from() {
        let mut broken = r(3, 100);
        {
            let status = broken
                .facts
                .as_mut()
                .and_then(|f| f.replication.as_mut())
                .expect("replica");
            status.sql_running = false;
            status.last_sql_errno = 1062;
            status.last_sql_error = "Duplicate entry".into();
            status.seconds_behind_source = None;
        }
        let plan = choose(vec![r(2, 98), broken], &policy()).expect("plan");
        assert_eq!(plan.candidate, key(2));
        assert_eq!(plan.catch_up_from, None);
        assert!(plan
            .explain()
            .contains("SQL thread stopped (error 1062: Duplicate entry)"));
    }

    #[test]
    fn a_more_advanced_must_not_replica_is_caught_up_from() {
        let policy = PromotionPolicy {
            must_not: regexes(&[":3$"]),
            ..policy()
        };
        let plan = choose(vec![r(2, 98), r(3, 100)], &policy).expect("plan");
        assert_eq!(plan.candidate, key(2));
        assert_eq!(plan.catch_up_from, Some(key(3)));
        assert!(plan
            .explain()
            .contains("127.0.0.1:3 skipped: promotion rule must_not"));
    }

    #[test]
    fn a_row_replica_is_not_promoted_over_statement_replicas() {
        let mut statement = r(2, 99);
        statement.facts.as_mut().expect("facts").binlog_format = "STATEMENT".into();
        let plan = choose(vec![statement, r(3, 100)], &policy()).expect("plan");
        assert_eq!(plan.candidate, key(2));
        let skipped = plan
            .verdicts
            .iter()
            .find(|v| v.instance == key(3))
            .expect("listed");
        assert!(
            skipped.reasons[0].contains("binlog_format ROW"),
            "{:?}",
            skipped.reasons
        );
        assert_eq!(
            plan.catch_up_from, None,
            "a ROW replica cannot feed a STATEMENT one"
        );
    }

    #[test]
    fn file_position_replication_is_refused_with_the_reason() {
        let mut classic = r(2, 100);
        classic
            .facts
            .as_mut()
            .and_then(|f| f.replication.as_mut())
            .expect("replica")
            .gtid_auto_position = false;
        let err = choose(vec![classic, r(3, 100)], &policy()).expect_err("refused");
        assert!(matches!(err, PlanError::NoGtid { .. }));
        assert!(err.to_string().contains("recovery needs GTID replication"));
    }

    #[test]
    fn a_requested_candidate_must_be_eligible() {
        let policy = PromotionPolicy {
            must_not: regexes(&[":3$"]),
            ..policy()
        };
        let snapshot = snapshot(vec![r(2, 100), r(3, 100)]);
        let err = plan_promotion(&key(1), &snapshot, &policy, Some(&key(3))).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "127.0.0.1:3 may not be promoted: promotion rule must_not"
        );
        let plan = plan_promotion(&key(1), &snapshot, &policy, Some(&key(2))).expect("plan");
        assert_eq!(plan.candidate, key(2));
        let err = plan_promotion(&key(1), &snapshot, &policy, Some(&key(9))).expect_err("stranger");
        assert!(matches!(err, PlanError::NotAReplica { .. }));
    }

    #[test]
    fn mariadb_positions_compare_by_sequence() {
        let mut a = replica(key(2), key(1));
        let mut b = replica(key(3), key(1));
        for (instance, pos) in [(&mut a, "0-101-40"), (&mut b, "0-101-42")] {
            let list = MariadbGtidList::parse(pos).expect("gtid");
            instance.facts.as_mut().expect("facts").gtid = GtidState::Mariadb {
                binlog_pos: list.clone(),
                current_pos: list.clone(),
                slave_pos: list.clone(),
                binlog_state: list,
                domain_id: 0,
                strict_mode: true,
            };
        }
        a.facts
            .as_mut()
            .and_then(|f| f.replication.as_mut())
            .expect("replica")
            .received_gtids = "0-101-45".into();
        assert_eq!(
            position(&a),
            45,
            "received counts: it is applied before promotion"
        );
        assert_eq!(position(&b), 42);
    }
}
