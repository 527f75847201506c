//! The agent lock: how two agents that share no `[ha]` lease are caught instead of both
//! obeyed. Every agent keeps one connection on every instance, parked between two probes
//! (the liveness watch); on it, it takes the server's named lock `pointsman.agent`
//! (`GET_LOCK`, held for as long as that session lives) and parks under a comment naming
//! itself, so an agent that finds the lock taken reads who holds it from the processlist.
//!
//! An agent acts on a cluster only while it holds the lock on a strict majority of the
//! cluster's reachable members (`Standing::acting`). Two agents can never both have
//! that. So that one of them always does, an agent that holds fewer locks of a cluster
//! than another agent (or as many, and its name sorts after the other's) lets go of
//! them and stops taking them until the other is gone. The loser is loud: it says who
//! acts in the cluster's `recovery_refused`, the log, and `/metrics`.
//!
//! The members counted are the cluster's and those that were in one cluster with them
//! within the last minute (`Companions`). A failover splits a cluster for a moment (the
//! promoted replica is a root of its own before the others follow it); an agent that
//! counted only the half it sees then could hold "a majority" of a half that the other
//! agent is recovering. Counted with the companions of a minute ago, both agents weigh
//! the same members, and two strict majorities stay impossible.
//!
//! This module owns the book of what each instance's connection found (`Claims`), the
//! statements, and the pure judgement of a cluster (`standing`). It does not decide
//! recoveries; with `[ha]` the lease decides instead and no lock is taken.

use crate::mysql::{Connection, MysqlError};
use crate::topology::{ClusterView, InstanceKey, Instances};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The lock's name on every server: one per server, as a server is in one cluster.
const LOCK: &str = "pointsman.agent";

/// How long instances seen in one cluster still count together: longer than any
/// failover splits a cluster, and than a loser takes to let go of a lock it took.
const COMPANION_MEMORY: Duration = Duration::from_secs(60);

/// What this agent's connection to one instance found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This agent holds the lock.
    Held,
    /// Another session holds it: the agent it names (or its address when it says none).
    Taken { by: String },
    /// Nobody holds it (this agent let go, or has not taken it yet).
    Free,
}

/// The book every instance's watch writes and the coordinator reads; cheap to clone.
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
    companions: Companions,
}

/// Which instances were in one cluster with which, and when that was last seen.
#[derive(Debug, Default)]
pub struct Companions {
    last_together: HashMap<InstanceKey, HashMap<InstanceKey, Instant>>,
    /// When what is too old was last forgotten: the whole book is swept once per
    /// `COMPANION_MEMORY`, not at every cluster weighed (that would cost the square of
    /// the fleet per judgement).
    swept: Option<Instant>,
}

impl Companions {
    /// Notes that `members` are one cluster at `now`; now and then forgets what is too
    /// old (`widen` never counts it meanwhile).
    pub fn saw(&mut self, members: &[InstanceKey], now: Instant) {
        for member in members {
            if !self.last_together.contains_key(member) {
                self.last_together.insert(member.clone(), HashMap::new());
            }
            let together = self.last_together.get_mut(member).expect("inserted above");
            for other in members.iter().filter(|other| *other != member) {
                // Keys are cloned only when first seen together: this runs for every
                // cluster at every judgement.
                match together.get_mut(other) {
                    Some(seen) => *seen = now,
                    None => {
                        together.insert(other.clone(), now);
                    }
                }
            }
        }
        let due = self
            .swept
            .is_none_or(|swept| now.saturating_duration_since(swept) >= COMPANION_MEMORY);
        if due {
            self.swept = Some(now);
            self.last_together.retain(|_, together| {
                together.retain(|_, seen| now.saturating_duration_since(*seen) < COMPANION_MEMORY);
                !together.is_empty()
            });
        }
    }

    /// `members` (each once) and every instance seen in one cluster with one of them
    /// within `COMPANION_MEMORY` of `now`, each once: the members first. Borrowed, not
    /// copied: every view of the fleet weighs every cluster. A companion is most often a
    /// member itself: those are left out first (ports compared before hosts), so only
    /// the others are sorted.
    pub fn widen<'a>(&'a self, members: &'a [InstanceKey], now: Instant) -> Vec<&'a InstanceKey> {
        let is_member = |key: &InstanceKey| {
            members
                .iter()
                .any(|member| member.port == key.port && member.host == key.host)
        };
        let mut others: Vec<&InstanceKey> = Vec::new();
        for member in members {
            if let Some(together) = self.last_together.get(member) {
                others.extend(
                    together
                        .iter()
                        .filter(|(other, seen)| {
                            now.saturating_duration_since(**seen) < COMPANION_MEMORY
                                && !is_member(other)
                        })
                        .map(|(other, _)| other),
                );
            }
        }
        others.sort_unstable();
        others.dedup();
        let mut all: Vec<&InstanceKey> = Vec::with_capacity(members.len() + others.len());
        for member in members {
            if !all.contains(&member) {
                all.push(member);
            }
        }
        all.extend(others);
        all
    }
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

    /// On an instance's connection, before a probe or a park: takes the lock when allowed and
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
    /// Reachable members (and companions of the last minute) whose lock this agent holds.
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
                "this agent holds the agent lock on {} of the {} reachable members of {cluster}, not a majority yet: it acts once its connections to them have taken them",
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

/// How the agent locks of `cluster` stand: over its members and their companions of
/// the last minute (`Companions::widen`), noting its members as companions first.
pub fn standing(cluster: &ClusterView, snapshot: &impl Instances, claims: &Claims) -> Standing {
    let now = Instant::now();
    let mut book = claims.book();
    book.companions.saw(&cluster.members, now);
    let book = &*book;
    standing_over(
        book,
        &book.companions.widen(&cluster.members, now),
        snapshot,
    )
}

/// How the agent locks of a cluster with these `members` stand in `snapshot`, read
/// without noting anything (what the views show; the coordinator's judgement, which
/// notes the members as companions, is `standing`).
pub fn standing_now(
    members: &[InstanceKey],
    snapshot: &impl Instances,
    claims: &Claims,
) -> Standing {
    let book = claims.book();
    standing_over(
        &book,
        &book.companions.widen(members, Instant::now()),
        snapshot,
    )
}

/// How the agent locks of `members` stand, as `book` has them (pure).
fn standing_over(book: &Book, members: &[&InstanceKey], snapshot: &impl Instances) -> Standing {
    let mut standing = Standing::default();
    for key in members {
        if !snapshot.get(key).is_some_and(|i| i.is_reachable()) {
            continue;
        }
        standing.reachable += 1;
        match book.found.get(*key) {
            Some(Claim::Held) => standing.held += 1,
            Some(Claim::Taken { by }) => *standing.others.entry(by.clone()).or_default() += 1,
            Some(Claim::Free) | None => {}
        }
    }
    standing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Snapshot;

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

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    fn snapshot(instances: Vec<crate::topology::Instance>) -> Snapshot {
        Snapshot::of(instances)
    }

    /// The cluster whose primary is `primary`, as `build_clusters` sees it.
    fn cluster_of(snapshot: &Snapshot, primary: u16) -> ClusterView {
        crate::topology::build_clusters(snapshot, &[])
            .into_iter()
            .find(|c| c.primary == key(primary))
            .expect("a cluster")
    }

    #[test]
    fn a_cluster_split_by_the_other_agents_failover_is_weighed_whole() {
        use crate::topology::instance::tests_support::{primary, replica};
        // agent-b took the lock of 3 (restarted a moment ago) before it let go of it;
        // agent-a holds 2. Then 1, the primary, dies.
        let claims = Claims::new("agent-b");
        claims.set(
            &key(2),
            Some(Claim::Taken {
                by: "agent-a".into(),
            }),
        );
        claims.set(&key(3), Some(Claim::Held));
        let mut dead = primary(key(1));
        dead.unreachable_since = Some(std::time::SystemTime::now());
        let whole = snapshot(vec![
            dead.clone(),
            replica(key(2), key(1)),
            replica(key(3), key(1)),
        ]);
        let before = super::standing(&cluster_of(&whole, 1), &whole, &claims);
        assert!(!before.acting(), "{before:?}");
        assert!(before.yields(claims.me()), "{before:?}");
        // agent-a promoted 2; 3 still follows the dead 1. Of the half agent-b sees,
        // {1, 3}, it holds the only reachable lock — but 2 was with them a moment ago.
        let split = snapshot(vec![dead, primary(key(2)), replica(key(3), key(1))]);
        let half = super::standing(&cluster_of(&split, 1), &split, &claims);
        assert_eq!((half.held, half.reachable), (1, 2), "{half:?}");
        assert!(!half.acting(), "{half:?}");
        assert!(half.yields(claims.me()), "{half:?}");
        // Counted without its companions, the half would have looked like a majority.
        let members = cluster_of(&split, 1).members;
        let alone = standing_over(&claims.book(), &members.iter().collect::<Vec<_>>(), &split);
        assert!(alone.acting(), "{alone:?}");
    }

    #[test]
    fn companions_are_forgotten_after_a_minute() {
        let mut companions = Companions::default();
        let start = Instant::now();
        companions.saw(&[key(1), key(2), key(3)], start);
        companions.saw(&[key(3), key(4)], start + Duration::from_secs(30));
        assert_eq!(
            companions.widen(&[key(3)], start + Duration::from_secs(31)),
            vec![&key(3), &key(1), &key(2), &key(4)]
        );
        assert_eq!(
            companions.widen(&[key(3)], start + COMPANION_MEMORY + Duration::from_secs(1)),
            vec![&key(3), &key(4)]
        );
        companions.saw(&[key(5)], start + COMPANION_MEMORY * 2);
        assert!(companions.last_together.is_empty(), "{companions:?}");
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
        let parked = format!("DO /* {comment} */ SLEEP(5)");
        assert_eq!(
            agent_named_in(&parked).as_deref(),
            Some("db-ops-1 http://10.0.0.5:3000 / DROP")
        );
        assert_eq!(agent_named_in("DO SLEEP(5)"), None);
    }
}
