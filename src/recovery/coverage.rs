//! Whether automatic recovery covers a cluster now — on, not covered by
//! `recovery.auto_clusters`, switched off, downtimed, blocked by an unacknowledged
//! recovery — and which agent acts on it: what the page and the CLI show before
//! anything fails (`Coordinator::coverage` decides it).

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

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
