//! "What if the primary died now?": who would take over and why, and what would keep an
//! automatic recovery from running — worked out from the same decisions a failover
//! takes (`coverage` for whether the agent acts, `plan::plan_promotion` for who is
//! promoted), without touching anything. Pure: the caller reads the snapshot, the
//! coverage and the configuration.

use super::coverage::{Coverage, CoverageState};
use super::plan::{CandidateVerdict, PlanError, PromotionPlan};
use crate::topology::InstanceKey;
use serde::{Deserialize, Serialize};

/// The answer for one cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhatIf {
    pub cluster: String,
    /// The primary supposed dead.
    pub primary: InstanceKey,
    /// Whether the agent would recover by itself.
    pub automatic: bool,
    /// Why it would or would not (filters, switch, downtime, block period, who acts).
    pub coverage: Coverage,
    /// The replica that would be promoted, if any may be.
    pub candidate: Option<InstanceKey>,
    /// A more advanced replica the candidate would first copy from.
    pub catch_up_from: Option<InstanceKey>,
    /// Replicas that would be re-pointed under the candidate.
    pub repointed: Vec<InstanceKey>,
    /// Every replica, ranked: eligible ones first, best first, with why not.
    pub verdicts: Vec<CandidateVerdict>,
    /// What would stop the recovery even when the agent acts (no replica, no GTID, no
    /// eligible replica), or `None`.
    pub no_promotion: Option<String>,
    /// `pre_failover` commands that would run first, and could veto it.
    pub pre_failover_hooks: Vec<String>,
    /// Everything above in a few sentences, for the CLI and the page.
    pub summary: String,
}

/// Puts the decisions together.
pub fn what_if(
    cluster: &str,
    primary: &InstanceKey,
    coverage: Coverage,
    plan: Result<PromotionPlan, PlanError>,
    pre_failover_hooks: &[String],
) -> WhatIf {
    let automatic = coverage.state == CoverageState::On && coverage.this_agent_acts;
    let (candidate, catch_up_from, repointed, verdicts, no_promotion) = match plan {
        Ok(plan) => (
            Some(plan.candidate),
            plan.catch_up_from,
            plan.siblings,
            plan.verdicts,
            None,
        ),
        Err(PlanError::NoCandidate { failed, verdicts }) => (
            None,
            None,
            Vec::new(),
            verdicts,
            Some(format!("no replica of {failed} may be promoted")),
        ),
        Err(other) => (None, None, Vec::new(), Vec::new(), Some(other.to_string())),
    };
    let mut summary = Vec::new();
    summary.push(if automatic {
        format!("If {primary} died now, this agent would recover {cluster} by itself.")
    } else if coverage.state == CoverageState::On {
        format!(
            "If {primary} died now, {} would recover {cluster}, not this agent.",
            coverage
                .acting_agent
                .as_deref()
                .unwrap_or("another agent")
        )
    } else {
        format!(
            "If {primary} died now, nothing would recover {cluster} by itself: {}. `pointsman recover {cluster}` would still act.",
            coverage.why
        )
    });
    match (&candidate, &no_promotion) {
        (Some(candidate), _) => {
            let mut line = format!("It would promote {candidate}");
            if let Some(verdict) = verdicts.iter().find(|v| &v.instance == candidate) {
                line.push_str(&format!(
                    " ({} transactions, rule {:?})",
                    verdict.position, verdict.rule
                ));
            }
            if let Some(source) = &catch_up_from {
                line.push_str(&format!(", after copying what {source} has beyond it"));
            }
            if repointed.is_empty() {
                line.push('.');
            } else {
                let names: Vec<String> = repointed.iter().map(|k| k.to_string()).collect();
                line.push_str(&format!(" and re-point {} under it.", names.join(", ")));
            }
            summary.push(line);
        }
        (None, Some(why)) => summary.push(format!("It could promote no one: {why}.")),
        (None, None) => {}
    }
    for verdict in verdicts.iter().filter(|v| !v.eligible) {
        summary.push(format!(
            "{} would be passed over: {}.",
            verdict.instance,
            verdict.reasons.join("; ")
        ));
    }
    if !pre_failover_hooks.is_empty() {
        summary.push(format!(
            "{} pre_failover hook(s) would run first; one that fails stops it.",
            pre_failover_hooks.len()
        ));
    }
    WhatIf {
        cluster: cluster.to_string(),
        primary: primary.clone(),
        automatic,
        coverage,
        candidate,
        catch_up_from,
        repointed,
        verdicts,
        no_promotion,
        pre_failover_hooks: pre_failover_hooks.to_vec(),
        summary: summary.join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::plan::PromotionRule;

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("db".to_string(), port)
    }

    fn coverage(state: CoverageState, why: &str) -> Coverage {
        Coverage {
            state,
            why: why.into(),
            until: None,
            acting_agent: None,
            this_agent_acts: true,
        }
    }

    fn verdict(port: u16, eligible: bool, reasons: &[&str]) -> CandidateVerdict {
        CandidateVerdict {
            instance: key(port),
            eligible,
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            rule: PromotionRule::Neutral,
            position: 12,
        }
    }

    fn plan() -> PromotionPlan {
        PromotionPlan {
            failed: key(1),
            candidate: key(2),
            catch_up_from: None,
            siblings: vec![key(3)],
            verdicts: vec![
                verdict(2, true, &[]),
                verdict(3, true, &[]),
                verdict(
                    4,
                    false,
                    &["lags 40s behind, more than promotion.max_lag (10s)"],
                ),
            ],
        }
    }

    #[test]
    fn a_covered_cluster_names_the_candidate_the_repointed_and_the_passed_over() {
        let answer = what_if(
            "shop",
            &key(1),
            coverage(CoverageState::On, "on"),
            Ok(plan()),
            &["/usr/local/bin/allowed".into()],
        );
        assert!(answer.automatic);
        assert_eq!(answer.candidate, Some(key(2)));
        assert_eq!(answer.repointed, vec![key(3)]);
        assert_eq!(
            answer.summary,
            "If db:1 died now, this agent would recover shop by itself. It would promote db:2 (12 transactions, rule Neutral) and re-point db:3 under it. db:4 would be passed over: lags 40s behind, more than promotion.max_lag (10s). 1 pre_failover hook(s) would run first; one that fails stops it."
        );
    }

    #[test]
    fn what_keeps_the_agent_from_acting_is_said_with_the_manual_way() {
        let answer = what_if(
            "shop",
            &key(1),
            coverage(
                CoverageState::Downtimed,
                "db:1 is downtimed until 12:00 (maintenance)",
            ),
            Ok(plan()),
            &[],
        );
        assert!(!answer.automatic);
        assert!(answer.summary.starts_with(
            "If db:1 died now, nothing would recover shop by itself: db:1 is downtimed until 12:00 (maintenance). `pointsman recover shop` would still act."
        ), "{}", answer.summary);
    }

    #[test]
    fn no_eligible_replica_is_said_with_each_reason() {
        let answer = what_if(
            "shop",
            &key(1),
            coverage(CoverageState::On, "on"),
            Err(PlanError::NoCandidate {
                failed: key(1),
                verdicts: vec![verdict(2, false, &["has errant GTIDs"])],
            }),
            &[],
        );
        assert_eq!(answer.candidate, None);
        assert!(answer
            .summary
            .contains("It could promote no one: no replica of db:1 may be promoted. db:2 would be passed over: has errant GTIDs."), "{}", answer.summary);
    }

    #[test]
    fn another_agent_acting_is_named() {
        let mut covered = coverage(CoverageState::On, "on");
        covered.acting_agent = Some("agent-b (10.0.0.2)".into());
        covered.this_agent_acts = false;
        let answer = what_if("shop", &key(1), covered, Ok(plan()), &[]);
        assert!(!answer.automatic);
        assert!(answer.summary.starts_with(
            "If db:1 died now, agent-b (10.0.0.2) would recover shop, not this agent."
        ));
    }
}
