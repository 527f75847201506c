//! The agent lock: how two agents that share no `[ha]` lease are caught instead of both
//! obeyed. Every agent already parks a connection on every instance (the liveness
//! watch); on it, it takes the server's named lock `pointsman.agent` (`GET_LOCK`, held
//! for as long as that session lives) and parks under a comment naming itself, so an
//! agent that finds the lock taken reads who holds it from the processlist.
//!
//! An agent acts on a cluster only while it holds the lock on a strict majority of the
//! cluster's reachable members (`Standing::acting`). Two agents can never both have
//! that. So that one of them always does, an agent that holds fewer locks of a cluster
//! than another agent (or as many, and its name sorts after the other's) lets go of
//! them and stops taking them until the other is gone. The loser is loud: it says who
//! acts in the cluster's `recovery_refused`, the log, and `/metrics`.
//!
//! This module owns the book of what each liveness connection found (`Claims`), the
//! statements, and the pure judgement of a cluster (`standing`). It does not decide
//! recoveries; with `[ha]` the lease decides instead and no lock is taken.

use crate::mysql::{Connection, MysqlError};
use crate::topology::{ClusterView, InstanceKey, Snapshot};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// The lock's name on every server: one per server, as a server is in one cluster.
const LOCK: &str = "pointsman.agent";

/// What this agent's liveness connection found on one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This agent holds the lock.
    Held,
    /// Another session holds it: the agent it names (or its address when it says none).
    Taken { by: String },
    /// Nobody holds it (this agent let go, or has not taken it yet).
    Free,
}

/// The book every liveness connection writes and the coordinator reads; cheap to clone.
#[derive(Clone, Debug)]
pub struct Claims {
    /// This agent, as it names itself in its parked statements.
    me: String,
    inner: Arc<Mutex<Book>>,
}

#[derive(Debug, Default)]
struct Book {
    found: HashMap<InstanceKey, Claim>,
    /// Instances whose lock this agent must not take (it yields their cluster).
    yielded: HashSet<InstanceKey>,
}

impl Claims {
    pub fn new(me: &str) -> Claims {
        Claims {
            me: me.to_string(),
            inner: Arc::default(),
        }
    }

    /// This agent's name as others read it.
    pub fn me(&self) -> &str {
        &self.me
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn claim(&self, key: &InstanceKey) -> Option<Claim> {
        self.book().found.get(key).cloned()
    }

    fn set(&self, key: &InstanceKey, claim: Option<Claim>) {
        let mut book = self.book();
        match claim {
            Some(claim) => book.found.insert(key.clone(), claim),
            None => book.found.remove(key),
        };
    }

    fn may_take(&self, key: &InstanceKey) -> bool {
        !self.book().yielded.contains(key)
    }

    /// Lets go of (or takes again) the locks of these instances.
    pub fn yield_to_others(&self, keys: &[InstanceKey], yielding: bool) {
        let mut book = self.book();
        for key in keys {
            if yielding {
                book.yielded.insert(key.clone());
            } else {
                book.yielded.remove(key);
            }
        }
    }

    /// The comment a parked statement carries: names this agent to the others. Only
    /// characters that cannot end a comment.
    pub fn comment(&self) -> String {
        let name: String = self
            .me
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || " .:/_-@".contains(*c))
            .collect();
        format!("pointsman agent {name}")
    }

    /// On the liveness connection, between two parks: takes the lock when allowed and
    /// not held, lets it go when this agent yields, and records who holds it.
    pub async fn keep(
        &self,
        conn: &mut Connection,
        key: &InstanceKey,
        held: &mut bool,
    ) -> Result<(), MysqlError> {
        let may_take = self.may_take(key);
        if *held && !may_take {
            conn.execute(&format!("DO RELEASE_LOCK('{LOCK}')")).await?;
            *held = false;
        }
        if !*held && may_take {
            let rows = conn
                .query(&format!("SELECT GET_LOCK('{LOCK}', 0) AS got"))
                .await?;
            *held = rows
                .first()
                .and_then(|row| row.get("got").cloned().flatten())
                .as_deref()
                == Some("1");
        }
        let claim = if *held {
            Claim::Held
        } else {
            self.holder(conn).await?
        };
        self.set(key, Some(claim));
        Ok(())
    }

    /// Forgets what the connection found: it is gone (and with it any lock it held).
    pub fn lost(&self, key: &InstanceKey) {
        self.set(key, None);
    }

    async fn holder(&self, conn: &mut Connection) -> Result<Claim, MysqlError> {
        let rows = conn
            .query(&format!(
                "SELECT p.HOST AS host, p.INFO AS info FROM information_schema.PROCESSLIST p \
                 WHERE p.ID = IS_USED_LOCK('{LOCK}')"
            ))
            .await?;
        let Some(row) = rows.first() else {
            return Ok(Claim::Free);
        };
        let info = row.get("info").cloned().flatten().unwrap_or_default();
        let by = agent_named_in(&info).unwrap_or_else(|| {
            format!(
                "a session from {}",
                row.get("host")
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| "an unknown host".into())
            )
        });
        Ok(Claim::Taken { by })
    }
}

/// The agent a parked statement names: `/* pointsman agent NAME */`.
fn agent_named_in(statement: &str) -> Option<String> {
    let start = statement.find("/* pointsman agent ")? + "/* pointsman agent ".len();
    let rest = &statement[start..];
    let end = rest.find(" */")?;
    Some(rest[..end].to_string())
}

/// How one cluster's locks stand, from this agent's point of view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// Reachable members whose lock this agent holds.
    pub held: usize,
    pub reachable: usize,
    /// Other agents and how many of the reachable members' locks each holds.
    pub others: BTreeMap<String, usize>,
}

impl Standing {
    /// A strict majority of the reachable members: no other agent can have one too.
    pub fn acting(&self) -> bool {
        self.held * 2 > self.reachable
    }

    /// Whether this agent should let go of its locks for `other`, which holds more (or
    /// as many, with a name that sorts first).
    pub fn yields(&self, me: &str) -> bool {
        self.others.iter().any(|(other, count)| {
            *count > self.held || (*count == self.held && other.as_str() < me)
        })
    }

    /// Why this agent may not act, for `recovery_refused` and the log.
    pub fn refusal(&self, cluster: &str) -> Option<String> {
        if self.acting() {
            return None;
        }
        if self.others.is_empty() {
            return Some(format!(
                "this agent holds the agent lock on {} of the {} reachable members of {cluster}, not a majority yet: it acts once its liveness connections have taken them",
                self.held, self.reachable
            ));
        }
        let others: Vec<String> = self
            .others
            .iter()
            .map(|(name, count)| format!("{name} (on {count})"))
            .collect();
        Some(format!(
            "another pointsman agent acts on {cluster}: {} holds the agent lock of its {} reachable members (this agent: {}); only one agent may act on a cluster — stop the other one, or give them one [ha] lease",
            others.join(", "),
            self.reachable,
            self.held
        ))
    }
}

/// How the agent locks of `cluster` stand (pure).
pub fn standing(cluster: &ClusterView, snapshot: &Snapshot, claims: &Claims) -> Standing {
    let mut standing = Standing::default();
    for key in &cluster.members {
        if !snapshot.get(key).is_some_and(|i| i.is_reachable()) {
            continue;
        }
        standing.reachable += 1;
        match claims.claim(key) {
            Some(Claim::Held) => standing.held += 1,
            Some(Claim::Taken { by }) => *standing.others.entry(by).or_default() += 1,
            Some(Claim::Free) | None => {}
        }
    }
    standing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(held: usize, reachable: usize, others: &[(&str, usize)]) -> Standing {
        Standing {
            held,
            reachable,
            others: others.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
        }
    }

    #[test]
    fn only_a_strict_majority_of_the_reachable_members_acts() {
        assert!(standing(2, 3, &[("b", 1)]).acting());
        assert!(!standing(1, 3, &[("a", 2)]).acting());
        // The primary died: two reachable, both held.
        assert!(standing(2, 2, &[]).acting());
        // A tie acts for nobody.
        assert!(!standing(1, 2, &[("b", 1)]).acting());
    }

    #[test]
    fn the_agent_with_fewer_locks_yields_and_a_tie_goes_to_the_first_name() {
        assert!(standing(1, 3, &[("a", 2)]).yields("b"));
        assert!(!standing(2, 3, &[("b", 1)]).yields("a"));
        assert!(standing(1, 2, &[("a", 1)]).yields("b"));
        assert!(!standing(1, 2, &[("b", 1)]).yields("a"));
        assert!(!standing(3, 3, &[]).yields("a"));
    }

    #[test]
    fn the_loser_names_the_agent_that_acts() {
        let why = standing(1, 3, &[("db-ops-1 http://10.0.0.5:3000", 2)])
            .refusal("orders")
            .expect("refused");
        assert!(
            why.contains("db-ops-1 http://10.0.0.5:3000 (on 2)"),
            "{why}"
        );
        assert!(why.contains("[ha]"), "{why}");
        assert!(standing(2, 3, &[]).refusal("orders").is_none());
    }

    #[test]
    fn the_agent_is_read_back_from_its_parked_statement() {
        let claims = Claims::new("db-ops-1 http://10.0.0.5:3000 */ DROP");
        let comment = claims.comment();
        assert!(!comment.contains("*/"), "{comment}");
        let parked = format!("SELECT /* {comment} */ SLEEP(5)");
        assert_eq!(
            agent_named_in(&parked).as_deref(),
            Some("db-ops-1 http://10.0.0.5:3000 / DROP")
        );
        assert_eq!(agent_named_in("SELECT SLEEP(5)"), None);
    }
}
