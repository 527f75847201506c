//! Analysis: pure judgements over a topology snapshot. No clock and no I/O inside —
//! `now` is passed in — so hundreds of topology shapes are tested in milliseconds.

pub mod findings;
pub mod problems;

pub use findings::{cluster_findings, Finding, FindingCode, FindingRules, Severity};
pub use problems::{
    cluster_problems, cluster_problems_given, multiple_primaries, Problem, ProblemCode,
    ProblemRules,
};

use serde::{Deserialize, Serialize};

/// A cluster's health at a glance: the worst severity and how many of each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSummary {
    pub status: HealthStatus,
    pub problems: usize,
    pub warnings: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Warning,
    Problem,
}

pub fn summarize(findings: &[Finding]) -> HealthSummary {
    let problems = findings
        .iter()
        .filter(|f| f.severity == Severity::Problem)
        .count();
    let warnings = findings.len() - problems;
    let status = if problems > 0 {
        HealthStatus::Problem
    } else if warnings > 0 {
        HealthStatus::Warning
    } else {
        HealthStatus::Ok
    };
    HealthSummary {
        status,
        problems,
        warnings,
    }
}
