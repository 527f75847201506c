//! Whether automatic recovery covers a cluster now — on, not covered by
//! `recovery.auto_clusters`, switched off, downtimed, blocked by an unacknowledged
//! recovery — and which agent acts on it: what the page and the CLI show before
//! anything fails (`Coordinator::coverage` decides it). The facts this rests on are
//! read from the store once (`GateFacts`) and each cluster is judged from them in
//! memory, so the page's view of thousands of clusters costs a few reads, not a few per
//! cluster.

use crate::config::ClusterFilter;
use crate::store::recovery::{Downtime, RecoveryRecord};
use crate::store::{Store, StoreError};
use crate::topology::InstanceKey;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Whether a failure of a cluster's primary would be recovered automatically now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    pub state: CoverageState,
    /// Why, in a sentence.
    pub why: String,
    /// Until when it stays so (a block period, a downtime).
    #[serde(default, with = "crate::topology::time::option")]
    pub until: Option<SystemTime>,
    /// The agent that acts on the cluster, when there are several (`[ha]`, or another
    /// agent seen holding the agent lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_agent: Option<String>,
    /// Whether that is the agent that answered.
    #[serde(default = "yes")]
    pub this_agent_acts: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoverageState {
    /// A failure of the primary is recovered automatically.
    On,
    /// The cluster is not in `recovery.auto_clusters`.
    NotCovered,
    /// Automatic recovery is switched off for every cluster.
    Off,
    /// The primary is downtimed.
    Downtimed,
    /// A recent recovery is not acknowledged (anti-flapping).
    Blocked,
    /// No agent may act on it now (no leader, no majority of the agent lock).
    NoAgent,
    /// What would decide it cannot be read (the store).
    Unknown,
}

impl Coverage {
    /// One line for the CLI: `on`, or the state and why, and who acts when several do.
    pub fn line(&self) -> String {
        let state = match self.state {
            CoverageState::On => "on".to_string(),
            CoverageState::NotCovered => format!("not covered ({})", self.why),
            CoverageState::Off => format!("off ({})", self.why),
            CoverageState::Downtimed => format!("downtimed ({})", self.why),
            CoverageState::Blocked => format!(
                "blocked{} ({})",
                self.until
                    .map(|t| format!(" until {}", crate::topology::time::format(t)))
                    .unwrap_or_default(),
                self.why
            ),
            CoverageState::NoAgent => format!("no agent acts ({})", self.why),
            CoverageState::Unknown => format!("unknown ({})", self.why),
        };
        match (&self.acting_agent, self.this_agent_acts) {
            (Some(agent), true) => format!("{state}; this agent ({agent}) acts"),
            (Some(agent), false) => format!("{state}; {agent} acts, not this agent"),
            (None, _) => state,
        }
    }
}

/// What the store says about automatic recovery now, read once for any number of
/// clusters: the switch, the downtimes, the fenced instances and the unacknowledged
/// recoveries within the block period. A fact that cannot be read is kept as its error,
/// so each cluster's coverage says "unknown" and why.
pub struct GateFacts {
    enabled: Result<bool, String>,
    downtimes: Vec<Downtime>,
    fenced: Vec<InstanceKey>,
    blocking: Result<Vec<RecoveryRecord>, String>,
}

impl GateFacts {
    pub fn read(store: &Store, block_period: Duration) -> GateFacts {
        let now = SystemTime::now();
        let text = |e: StoreError| e.to_string();
        GateFacts {
            enabled: store.automatic_recovery_enabled().map_err(text),
            downtimes: store.downtimes(now).unwrap_or_default(),
            fenced: store
                .fenced()
                .unwrap_or_default()
                .into_iter()
                .map(|f| f.instance)
                .collect(),
            blocking: store.blocking_recoveries(now - block_period).map_err(text),
        }
    }

    /// The newest blocking recovery of this cluster: under its name, or else (a cluster
    /// without an alias is renamed by its own failover) one whose failed or promoted
    /// instance is among its members.
    fn blocking<'a>(
        blocking: &'a [RecoveryRecord],
        name: &str,
        members: &[InstanceKey],
    ) -> Option<&'a RecoveryRecord> {
        blocking.iter().find(|r| r.cluster == name).or_else(|| {
            blocking.iter().find(|r| {
                members.contains(&r.failed)
                    || r.successor.as_ref().is_some_and(|s| members.contains(s))
            })
        })
    }
}

/// Why automatic recovery would not act on a failure now.
pub(crate) struct Uncovered {
    pub state: CoverageState,
    pub why: String,
    /// What an operator can do about it, as the CLI says it (empty: nothing to do).
    pub what_to_do: String,
    pub until: Option<SystemTime>,
}

impl Uncovered {
    fn unknown(why: String) -> Uncovered {
        Uncovered {
            state: CoverageState::Unknown,
            why,
            what_to_do: String::new(),
            until: None,
        }
    }
}

/// Whether automatic recovery would act on a failure of `instance` in the cluster
/// `name` (with these members) now, leaving aside who acts (the lease, the agent lock);
/// `None` if it would.
pub(crate) fn uncovered(
    facts: &GateFacts,
    auto_clusters: &[ClusterFilter],
    block_period: Duration,
    name: &str,
    alias: Option<&str>,
    members: &[InstanceKey],
    instance: &InstanceKey,
) -> Option<Uncovered> {
    if !auto_clusters.iter().any(|f| f.matches(name, alias)) {
        return Some(Uncovered {
            state: CoverageState::NotCovered,
            why: format!("cluster {name} is not in recovery.auto_clusters"),
            what_to_do: format!(": recover it by hand with `pointsman recover {name}`"),
            until: None,
        });
    }
    match &facts.enabled {
        Ok(true) => {}
        Ok(false) => {
            return Some(Uncovered {
                state: CoverageState::Off,
                why: "automatic recovery is disabled".into(),
                what_to_do: " (`pointsman recovery enable` turns it on)".into(),
                until: None,
            })
        }
        Err(error) => {
            return Some(Uncovered::unknown(format!(
                "cannot read the recovery switch: {error}"
            )))
        }
    }
    if let Some(downtime) = facts.downtimes.iter().find(|d| &d.instance == instance) {
        return Some(Uncovered {
            state: CoverageState::Downtimed,
            why: format!(
                "{instance} is downtimed until {} ({}, by {})",
                crate::topology::time::format(downtime.until),
                downtime.reason,
                downtime.owner
            ),
            what_to_do: String::new(),
            until: Some(downtime.until),
        });
    }
    // Re-pointing the replicas of a fenced old primary promotes nothing: it finishes
    // the last failover, so the block that failover set does not apply.
    if facts.fenced.contains(instance) {
        return None;
    }
    let blocking = match &facts.blocking {
        Ok(blocking) => blocking,
        Err(error) => {
            return Some(Uncovered::unknown(format!(
                "cannot read past recoveries: {error}"
            )))
        }
    };
    let recovery = GateFacts::blocking(blocking, name, members)?;
    Some(Uncovered {
        state: CoverageState::Blocked,
        why: format!(
            "blocked: recovery {} of this cluster at {} is within recovery.block_period and not acknowledged",
            recovery.id,
            crate::topology::time::format(recovery.started_at),
        ),
        what_to_do: format!("; `pointsman ack {name}` allows the next one"),
        until: Some(recovery.started_at + block_period),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(blocking: Vec<RecoveryRecord>) -> GateFacts {
        GateFacts {
            enabled: Ok(true),
            downtimes: vec![Downtime {
                instance: InstanceKey::new("db9", 3306),
                until: SystemTime::now() + Duration::from_secs(600),
                reason: "kernel upgrade".into(),
                owner: "dba".into(),
            }],
            fenced: vec![InstanceKey::new("db8", 3306)],
            blocking: Ok(blocking),
        }
    }

    fn judge(
        facts: &GateFacts,
        name: &str,
        members: &[InstanceKey],
        failed: &str,
    ) -> CoverageState {
        let every = [ClusterFilter::Pattern(
            regex::Regex::new(".*").expect("regex"),
        )];
        uncovered(
            facts,
            &every,
            Duration::from_secs(3600),
            name,
            None,
            members,
            &InstanceKey::new(failed, 3306),
        )
        .map_or(CoverageState::On, |u| u.state)
    }

    #[test]
    fn one_reading_of_the_store_judges_every_cluster() {
        let mut recovery = RecoveryRecord::started(
            "r1",
            "orders",
            "failover",
            "DeadPrimary",
            &InstanceKey::new("db1", 3306),
            "automatic",
            SystemTime::now(),
        );
        recovery.successor = Some(InstanceKey::new("db2", 3306));
        let facts = facts(vec![recovery]);
        let orders = [InstanceKey::new("db2", 3306), InstanceKey::new("db3", 3306)];
        let other = [InstanceKey::new("db5", 3306), InstanceKey::new("db6", 3306)];
        // Blocked under its name, and under its new name (the promoted replica is a member).
        assert_eq!(
            judge(&facts, "orders", &orders, "db2"),
            CoverageState::Blocked
        );
        assert_eq!(
            judge(&facts, "db2:3306", &orders, "db2"),
            CoverageState::Blocked
        );
        assert_eq!(judge(&facts, "db5:3306", &other, "db5"), CoverageState::On);
        assert_eq!(
            judge(&facts, "db5:3306", &other, "db9"),
            CoverageState::Downtimed
        );
        // A fenced old primary's replicas are re-pointed despite the block.
        assert_eq!(judge(&facts, "orders", &orders, "db8"), CoverageState::On);

        let unreadable = GateFacts {
            blocking: Err("database is locked".into()),
            ..facts
        };
        assert_eq!(
            judge(&unreadable, "db5:3306", &other, "db5"),
            CoverageState::Unknown
        );
        let off = GateFacts {
            enabled: Ok(false),
            ..unreadable
        };
        assert_eq!(judge(&off, "db5:3306", &other, "db5"), CoverageState::Off);
    }
}
