//! The coordinator decides when to act. On every new snapshot it judges each cluster;
//! a primary that just stopped answering gets its replicas re-probed at once so the
//! verdict (dead or merely unreachable) comes in milliseconds, not at the next poll. A
//! failure that needs recovery is recovered automatically only when everything allows it
//! — the cluster is in `recovery.auto_clusters`, automatic recovery is on, the failed
//! instance is not downtimed, and no unacknowledged recovery of the cluster happened
//! within `recovery.block_period` — and each refusal is said loudly, once. Operators can
//! always recover by hand. Old primaries stay fenced: whenever one answers and is
//! writable, it is set read_only at once.

use super::coverage::{uncovered, Coverage, CoverageState, GateFacts, Uncovered};
use super::execute::{Executor, StepLog};
use super::hooks::{run_hooks, HookContext, HookPoint, HookRun, Hooks};
use super::journal_mirror::JournalMirror;
use super::lane::LaneHandle;
use super::plan::{plan_promotion, PlanError, PromotionPolicy};
use super::roles::{restarted_without_failover, unpersisted, WriterMemory};
use crate::analysis::{cluster_problems, multiple_primaries, Problem, ProblemCode, ProblemRules};
use crate::config::ClusterFilter;
use crate::discovery::{DiscoveryHandle, ProbedHere};
use crate::mysql::{close_all, Connection};
use crate::routing::Routing;
use crate::store::recovery::{RecoveryRecord, RecoveryStatus};
use crate::store::{AuditEntry, Store};
use crate::topology::cluster::writable_root;
use crate::topology::cluster::ClusterAlias;
use crate::topology::{
    ClusterInstances, ClusterView, InstanceKey, Instances, ServerFlavor, Snapshot,
};
use crate::workers::off_the_workers;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long the replicas of a lost primary are re-probed at a quick pace: past this, a
/// primary the replicas still hear is plainly unreachable, and regular polling goes on
/// (a new quick round at most every `CONFIRM_AGAIN` while the suspicion lasts).
const CONFIRM_FOR: Duration = Duration::from_secs(10);
const CONFIRM_AGAIN: Duration = Duration::from_secs(60);
/// One round of that quick confirmation: the replicas probed again, at most this often.
const CONFIRM_ROUND: Duration = Duration::from_millis(50);

/// How often the coordinator judges even when no new snapshot arrived.
const JUDGE_EVERY: Duration = Duration::from_millis(100);

/// How often a fenced old primary that does not answer is probed: it is fenced this
/// soon after it comes back.
const FENCED_LOOK_EVERY: Duration = Duration::from_millis(100);

/// How soon the fences of the routes record are read again when Consul (or the store)
/// could not be read as this agent began to act.
const RESTORE_FENCES_AGAIN: Duration = Duration::from_secs(1);

/// How often `recovery.auto_rejoin` tries a fenced old primary that answers again.
const REJOIN_EVERY: Duration = Duration::from_secs(5);

/// Everything the coordinator decides with.
pub struct Coordinator {
    pub discovery: DiscoveryHandle,
    pub store: Store,
    pub executor: Executor,
    pub policy: PromotionPolicy,
    pub rules: ProblemRules,
    pub aliases: Vec<ClusterAlias>,
    pub auto_clusters: Vec<ClusterFilter>,
    pub block_period: Duration,
    pub hooks: Hooks,
    pub routing: Routing,
    /// With `[ha]`: the journal's copy in Consul, for whoever leads next.
    pub mirror: Option<Arc<JournalMirror>>,
    /// `recovery.auto_rejoin`: fenced old primaries with nothing their successor lacks
    /// are re-attached by the agent itself.
    pub auto_rejoin: bool,
    /// Where a lost primary's confirmation and the recoveries run (`lane`).
    lane: LaneHandle,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Clusters with a recovery in progress.
    recovering: HashSet<String>,
    /// Refusals and detections already reported, so each is said once per failure.
    said: HashSet<String>,
    /// When a quick round of re-probing started for a cluster whose primary was lost.
    confirming: HashMap<String, Instant>,
    /// The connections a settled confirmation left open to the cluster's replicas,
    /// there only while it acts on its verdict: a failover it starts takes them.
    confirmed_open: HashMap<String, Vec<Connection>>,
    /// When a fenced instance was last set read_only.
    fencing: HashMap<InstanceKey, Instant>,
    /// When the agent last tried to re-attach a fenced old primary by itself
    /// (`recovery.auto_rejoin`), and why it would not, once said.
    rejoining: HashMap<InstanceKey, (Instant, Option<String>)>,
    /// Why automatic recovery of a cluster is being refused now, for the API to show.
    refused: HashMap<String, String>,
    /// When a recovery that touched an instance ended: a judgement that rests on data
    /// about it from before then is stale (the recovery changed it).
    changed_at: HashMap<InstanceKey, SystemTime>,
    /// Clusters whose last automatic attempt did not succeed: not before then again.
    retry: HashMap<String, Retry>,
    /// How the agent locks of each cluster stood at the last look.
    standings: HashMap<String, crate::claims::Standing>,
    /// Which healthy clusters need no judgement until something changes.
    calm: super::calm::Calm,
    /// When fenced old primaries that do not answer were last probed.
    fenced_looked_at: Option<Instant>,
    /// Which primaries were writable before they went away (see `roles`).
    writers: WriterMemory,
    /// When persisting an instance's read-only role was last tried.
    persisting: HashMap<InstanceKey, Instant>,
    /// Second writable primaries being probed again before they are fenced.
    checking: HashSet<InstanceKey>,
    /// Whether this agent leads and has settled what an earlier run (or leader) left
    /// half-done: until then only the main loop acts (`look_at_lost_primaries` waits).
    settled: bool,
}

/// After a judgement that took `took`, waits twice as long before the next one (when it
/// took a millisecond or more): snapshots arrive after every probe, and judging each of
/// them in turn would keep a core busy on a large fleet. A judgement then takes at most a
/// third of a core, sees every change made meanwhile at once, and a small fleet (whose
/// judgements take microseconds) is never held back.
pub(crate) async fn pace(took: Duration) {
    if took >= Duration::from_millis(1) {
        tokio::time::sleep((took * 2).min(Duration::from_millis(100))).await;
    }
}

/// `pace`, cut short by a snapshot published for a result asked for now (a primary's
/// lost connection, a replica confirming it): that one is judged at once. Returns
/// whether a snapshot came meanwhile (it has been marked seen, so the caller judges it
/// without waiting for another).
async fn pace_unless_urgent(
    took: Duration,
    snapshots: &mut tokio::sync::watch::Receiver<Arc<Snapshot>>,
    urgent_judged: u64,
) -> bool {
    until_urgent_or(pace(took), snapshots, urgent_judged).await
}

/// Waits for `rest` to end, or for a snapshot published for a result asked for now
/// (one whose count is past `urgent_judged`); returns whether a snapshot came.
async fn until_urgent_or(
    rest: impl std::future::Future<Output = ()>,
    snapshots: &mut tokio::sync::watch::Receiver<Arc<Snapshot>>,
    urgent_judged: u64,
) -> bool {
    let mut came = false;
    tokio::pin!(rest);
    loop {
        // Snapshots first: one that came as the pause ended is still counted.
        tokio::select! {
            biased;
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return came;
                }
                came = true;
                if snapshots.borrow().urgent > urgent_judged {
                    return true;
                }
            }
            () = &mut rest => return came,
        }
    }
}

/// The clusters whose primary's latest result, among those `snapshot` took in after
/// `version`, is its first failure since it last answered (`clusters` is asked for
/// only when some result is one). A primary that stays down (a fenced old one, probed
/// again and again) is left to the main loop.
fn lost_primaries(
    snapshot: &Snapshot,
    version: u64,
    clusters: impl FnOnce() -> Arc<Vec<ClusterView>>,
) -> Vec<String> {
    let lost: HashSet<&InstanceKey> = snapshot
        .changed_since(version)
        .filter(|key| {
            snapshot.get(key).is_some_and(|i| {
                i.unreachable_since.is_some() && i.unreachable_since == i.last_failure
            })
        })
        .collect();
    if lost.is_empty() {
        return Vec::new();
    }
    clusters()
        .iter()
        .filter(|cluster| lost.contains(&cluster.primary))
        .map(|cluster| cluster.name.clone())
        .collect()
}

/// How long a second writable primary and its cluster's primary are probed again for,
/// before the stale one is fenced.
const STALE_PRIMARY_PROBE_WAIT: Duration = Duration::from_secs(2);

/// How long `reattach` waits for a fresh probe of the old primary.
const REATTACH_PROBE_WAIT: Duration = Duration::from_secs(2);

/// How long after a failed attempt to persist an instance's role it is tried again.
const PERSIST_RETRY: Duration = Duration::from_secs(60);

/// When an automatic recovery that did not succeed may be tried again, and why it did
/// not: attempts back off (1 s, doubling, at most `RETRY_AT_MOST`), so nothing that keeps
/// a recovery from proceeding turns into a storm of attempts.
struct Retry {
    not_before: Instant,
    next_wait: Duration,
    why: String,
}

/// The longest wait between two automatic attempts on one cluster.
const RETRY_AT_MOST: Duration = Duration::from_secs(5);

/// Why a manual recovery was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("no cluster named \"{0}\"")]
    UnknownCluster(String),
    #[error("cluster {cluster} needs no recovery: {why}")]
    NothingToRecover { cluster: String, why: String },
    #[error("a recovery of cluster {0} is already running")]
    AlreadyRunning(String),
    /// Another agent acts on the cluster; nothing was done.
    #[error("{0}")]
    NotActing(String),
}

/// How a recovery was asked for.
#[derive(Clone, Debug)]
pub enum Trigger {
    Automatic,
    Operator { who: String },
}

impl Trigger {
    fn name(&self) -> String {
        match self {
            Trigger::Automatic => "automatic".into(),
            Trigger::Operator { who } => who.clone(),
        }
    }
}

impl Coordinator {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        discovery: DiscoveryHandle,
        store: Store,
        executor: Executor,
        policy: PromotionPolicy,
        rules: ProblemRules,
        aliases: Vec<ClusterAlias>,
        auto_clusters: Vec<ClusterFilter>,
        block_period: Duration,
        hooks: Hooks,
        routing: Routing,
        mirror: Option<Arc<JournalMirror>>,
        auto_rejoin: bool,
        lane: LaneHandle,
    ) -> Arc<Self> {
        Arc::new(Self {
            auto_rejoin,
            lane,
            discovery,
            store,
            executor,
            policy,
            rules,
            aliases,
            auto_clusters,
            block_period,
            hooks,
            routing,
            mirror,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Why automatic recovery of `cluster` is refused right now, if it is.
    pub fn refusal(&self, cluster: &str) -> Option<String> {
        self.state().refused.get(cluster).cloned()
    }

    /// Marks `cluster` as being changed (a recovery or a switchover) so nothing else
    /// changes it meanwhile; false if it already is.
    pub(crate) fn begin_change(&self, cluster: &str) -> bool {
        self.state().recovering.insert(cluster.to_string())
    }

    pub(crate) fn end_change(&self, cluster: &str) {
        self.state().recovering.remove(cluster);
    }

    /// Records that a recovery just changed these instances: judgements on data from
    /// before now are stale; and looks at them at once.
    pub(crate) fn mark_changed(&self, keys: impl IntoIterator<Item = InstanceKey>) {
        let keys: Vec<InstanceKey> = keys.into_iter().collect();
        {
            let mut state = self.state();
            let now = SystemTime::now();
            for key in &keys {
                state.changed_at.insert(key.clone(), now);
            }
        }
        self.discovery.probe_now(keys);
    }

    /// Watches snapshots until discovery stops.
    pub async fn run(self: Arc<Self>) {
        let mut leading = false;
        // Judged on every new snapshot, and on a short timer too: heartbeat silence makes
        // a replica's verdict change with time alone.
        let mut snapshots = self.discovery.subscribe();
        self.lane.spawn(self.clone().look_at_lost_primaries());
        let mut ticker = tokio::time::interval(JUDGE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A snapshot came while the last judgement's pause ran: judged without waiting.
        let mut came = false;
        loop {
            if !std::mem::take(&mut came) {
                tokio::select! {
                    changed = snapshots.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = ticker.tick() => {}
                }
            }
            // Whenever this agent starts to lead (at start-up when it acts alone), a
            // recovery it began and did not finish is settled first: finished or undone.
            let leads = self.executor.lease.gate().is_ok();
            if leads && !leading {
                // A recovery another leader left half-done is taken over first.
                self.adopt_mirrored().await;
                if !self.restore_recorded_fences().await {
                    self.clone().keep_restoring_fences();
                }
                self.resume_unfinished();
            } else if leading && !leads {
                // Another agent leads now: when this one leads again, the record's
                // fences are read back (they may have changed) before it writes it.
                self.routing.set_fences_restored(false);
            }
            leading = leads;
            self.state().settled = leads;
            let snapshot = snapshots.borrow_and_update().clone();
            let started = Instant::now();
            off_the_workers(|| self.consider(&snapshot));
            came = pace_unless_urgent(started.elapsed(), &mut snapshots, snapshot.urgent).await;
        }
    }

    /// Consul (or the store) could not be read when this agent began to act: the fences
    /// of the routes record are read again every `RESTORE_FENCES_AGAIN`, off the judging
    /// loop (a Consul that hangs must not hold up judgements), until they are restored
    /// or this agent no longer acts (it reads them again when it next begins to).
    fn keep_restoring_fences(self: Arc<Self>) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESTORE_FENCES_AGAIN).await;
                if self.executor.lease.gate().is_err() || self.restore_recorded_fences().await {
                    return;
                }
            }
        });
    }

    /// On the recovery lane, beside the main loop: the cluster of a primary whose loss a
    /// snapshot published at once (its connection failed, and the probe after it) is
    /// judged at once, so a death never waits for the main loop to finish judging the
    /// whole fleet (tens of ms at 10,000 instances) or for its pause.
    async fn look_at_lost_primaries(self: Arc<Self>) {
        let mut snapshots = self.discovery.subscribe();
        let (mut urgent, mut version) = {
            let snapshot = snapshots.borrow_and_update();
            (snapshot.urgent, snapshot.version())
        };
        while snapshots.changed().await.is_ok() {
            let snapshot = snapshots.borrow_and_update().clone();
            let since = std::mem::replace(&mut version, snapshot.version());
            if std::mem::replace(&mut urgent, snapshot.urgent) == snapshot.urgent
                || !self.state().settled
            {
                continue;
            }
            let clusters = || self.discovery.clusters(&snapshot, &self.aliases);
            for name in lost_primaries(&snapshot, since, clusters) {
                self.consider_clusters(&snapshot, Some(&name));
            }
        }
    }

    /// The problems of every cluster now.
    pub fn problems(&self, snapshot: &Snapshot) -> Vec<(ClusterView, Vec<Problem>)> {
        let clusters = self.discovery.clusters(snapshot, &self.aliases);
        let doubled = multiple_primaries(&clusters, snapshot, &self.aliases);
        clusters
            .iter()
            .map(|cluster| {
                let members = ClusterInstances::of(&cluster.members, snapshot);
                (cluster.clone(), self.judge(cluster, &members, &doubled))
            })
            .collect()
    }

    /// The problems of one cluster of `snapshot`; `doubled`: the fleet's second primaries.
    fn judge(
        &self,
        cluster: &ClusterView,
        snapshot: &impl Instances,
        doubled: &[Problem],
    ) -> Vec<Problem> {
        let mut problems = cluster_problems(cluster, snapshot, &self.rules, SystemTime::now());
        problems.extend(
            doubled
                .iter()
                .filter(|p| p.cluster == cluster.name)
                .cloned(),
        );
        problems
    }

    /// Which clusters to judge now (see `calm`).
    fn to_judge<'a>(
        &self,
        clusters: &'a Arc<Vec<ClusterView>>,
        snapshot: &Snapshot,
        doubled: &[Problem],
        leading: bool,
    ) -> Vec<&'a ClusterView> {
        let doubled = doubled.iter().map(|p| p.cluster.as_str());
        let chosen =
            self.state()
                .calm
                .to_judge(clusters, snapshot, doubled, leading, Instant::now());
        chosen.into_iter().map(|at| &clusters[at]).collect()
    }

    /// Judges the clusters due for it (`to_judge`) and acts on what it finds.
    fn consider(self: &Arc<Self>, snapshot: &Snapshot) {
        self.consider_clusters(snapshot, None);
    }

    /// Judges and acts on the clusters due for it or, given `only`, on that one alone
    /// (a settled confirmation acts on its cluster without waiting for the whole
    /// fleet's judgement).
    fn consider_clusters(self: &Arc<Self>, snapshot: &Snapshot, only: Option<&str>) {
        let not_leading = self.executor.lease.gate().err();
        // The fleet-wide watches (fenced old primaries kept read-only, primaries that
        // came back read-only) are the main loop's, every judgement: a confirmed death
        // acting on its one cluster does not walk what changed across the fleet since
        // (at 10,002 instances, a millisecond on the failover's path).
        if not_leading.is_none() && only.is_none() {
            self.keep_fenced(snapshot);
        }
        // Watched by followers too, so that one that comes to lead knows it; what came
        // back read-only waits until this agent may act on its cluster.
        let back_read_only = match only {
            None => self.state().writers.observe(snapshot),
            Some(_) => self.state().writers.settling(),
        };
        let clusters = self.discovery.clusters(snapshot, &self.aliases);
        let doubled = multiple_primaries(&clusters, snapshot, &self.aliases);
        let chosen = match only {
            Some(name) => clusters.iter().filter(|c| c.name == name).collect(),
            None => self.to_judge(&clusters, snapshot, &doubled, not_leading.is_none()),
        };
        for cluster in chosen {
            let members = ClusterInstances::of(&cluster.members, snapshot);
            let problems = self.judge(cluster, &members, &doubled);
            (self.state().calm).judged(&cluster.name, problems.is_empty());
            // Without a shared lease: the agent lock says whether this agent, or another
            // one, acts on this cluster (said loudly, and always shown, failure or not).
            let not_holding = self.weigh_claims(cluster, &members);
            if not_leading.is_none() && not_holding.is_none() {
                self.keep_roles(cluster, snapshot, &clusters, &back_read_only);
            }
            if !problems.iter().any(|p| p.code.needs_recovery()) {
                let mut state = self.state();
                match &not_holding {
                    Some(why) => state.refused.insert(cluster.name.clone(), why.clone()),
                    None => state.refused.remove(&cluster.name),
                };
            }
            if problems.is_empty() {
                self.state()
                    .said
                    .retain(|key| !key.starts_with(&format!("{}|", cluster.name)));
            }
            for problem in problems {
                match problem.code {
                    ProblemCode::UnreachablePrimary
                    | ProblemCode::UnreachablePrimaryWithLaggingReplicas => {
                        self.confirm(cluster, &problem);
                    }
                    ProblemCode::MultiplePrimaries => {
                        // Both writers must have been probed since the last change of
                        // the cluster: a switchover's old primary still shows writable
                        // in the probe taken just before it.
                        let both = Problem {
                            related: vec![problem.instance.clone()],
                            ..problem.clone()
                        };
                        // Mid-switchover two writers are seen by design, for a moment.
                        if self.state().recovering.contains(&cluster.name)
                            || self.judged_on_stale_data(&problem, snapshot)
                            || self.judged_on_stale_data(&both, snapshot)
                        {
                            continue;
                        }
                        self.say_once(&cluster.name, &problem, "detected", || {
                            problem.explanation.clone()
                        });
                        if not_leading.is_none() && not_holding.is_none() {
                            self.fence_stale_primary(cluster, &problem);
                        }
                    }
                    code if code.needs_recovery() => {
                        let first = self.say_once(&cluster.name, &problem, "detected", || {
                            format!(
                                "{:?} on {}: {}",
                                problem.code, problem.instance, problem.explanation
                            )
                        });
                        // Hooks are actions too: only the agent that acts runs them.
                        if first && not_leading.is_none() && not_holding.is_none() {
                            self.failure_detected_hooks(cluster, &problem);
                        }
                        if self.state().recovering.contains(&cluster.name) {
                            continue; // this very failure is being recovered
                        }
                        if self.judged_on_stale_data(&problem, snapshot) {
                            continue; // wait for a probe after the last recovery
                        }
                        let refusal = not_leading
                            .as_ref()
                            .map(|not| not.to_string())
                            .or_else(|| not_holding.clone())
                            .or_else(|| self.automatic_refusal(cluster, &problem))
                            .or_else(|| self.waiting_to_retry(&cluster.name));
                        match &refusal {
                            Some(why) => {
                                self.state()
                                    .refused
                                    .insert(cluster.name.clone(), why.clone());
                            }
                            None => {
                                self.state().refused.remove(&cluster.name);
                            }
                        }
                        if let Some(refusal) = refusal {
                            // Said once per reason (a refusal that changes is news).
                            let kind = format!(
                                "refused|{}",
                                refusal.split(" (next attempt").next().unwrap_or_default()
                            );
                            self.say_once(&cluster.name, &problem, &kind, || refusal);
                        } else {
                            self.start(cluster.clone(), problem.clone(), Trigger::Automatic, None);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Whether the replicas this problem rests on were last probed before a recovery
    /// changed them (the coordinator may look again before the probes come back).
    fn judged_on_stale_data(&self, problem: &Problem, snapshot: &Snapshot) -> bool {
        let state = self.state();
        problem.related.iter().any(|key| {
            state.changed_at.get(key).is_some_and(|changed| {
                snapshot
                    .get(key)
                    .and_then(|i| i.last_seen)
                    .is_none_or(|seen| seen <= *changed)
            })
        })
    }

    /// Re-reads the replicas of a primary the agent lost every 50 ms until they either
    /// confirm it dead or show it alive, so the verdict does not wait for the next poll.
    /// One such task per cluster at a time, on the recovery lane with its probes; it
    /// ends when the suspicion does.
    fn confirm(self: &Arc<Self>, cluster: &ClusterView, problem: &Problem) {
        {
            let mut state = self.state();
            if state
                .confirming
                .get(&cluster.name)
                .is_some_and(|started| started.elapsed() < CONFIRM_AGAIN)
            {
                return;
            }
            state
                .confirming
                .insert(cluster.name.clone(), Instant::now());
        }
        let this = self.clone();
        let name = cluster.name.clone();
        let replicas = problem.related.clone();
        self.lane.spawn(async move {
            let started = Instant::now();
            while started.elapsed() < CONFIRM_FOR {
                // Judged as soon as every replica has answered (or after the round's
                // 50 ms), and a new round no sooner than 50 ms after the last began.
                let round = tokio::time::Instant::now() + CONFIRM_ROUND;
                // Judged on the probes' own results, without waiting for discovery to
                // publish them: on a large fleet its owner shares the busy workers.
                let ProbedHere { snapshot, open } = this
                    .discovery
                    .probe_here_and_wait(replicas.clone(), CONFIRM_ROUND)
                    .await;
                // This cluster only: judging the whole fleet every 50 ms, for each
                // suspicion, starved everything else on a large one.
                let clusters = this.discovery.clusters(&snapshot, &this.aliases);
                let still_suspected = clusters.iter().find(|c| c.name == name).is_some_and(|c| {
                    this.judge(c, &*snapshot, &[]).iter().any(|p| {
                        matches!(
                            p.code,
                            ProblemCode::UnreachablePrimary
                                | ProblemCode::UnreachablePrimaryWithLaggingReplicas
                        )
                    })
                });
                if !still_suspected {
                    // Settled: act on the verdict now, on this cluster alone (silence
                    // can turn a suspicion into a death with no new snapshot), and let a
                    // new suspicion start its own quick round at once.
                    // A failover started now takes this round's connections (`start`):
                    // opened a moment ago, they spare its first steps their connects.
                    {
                        let mut state = this.state();
                        state.confirming.remove(&name);
                        state.confirmed_open.insert(name.clone(), open);
                    }
                    this.consider_clusters(&snapshot, Some(&name));
                    let unused = this.state().confirmed_open.remove(&name);
                    close_all(unused.unwrap_or_default()).await;
                    return;
                }
                close_all(open).await;
                tokio::time::sleep_until(round).await;
            }
        });
    }

    /// Logs and audits a message once per (cluster, problem, kind) until the cluster is
    /// healthy again; returns whether it was said now.
    fn say_once(
        &self,
        cluster: &str,
        problem: &Problem,
        kind: &str,
        message: impl FnOnce() -> String,
    ) -> bool {
        let key = format!("{cluster}|{:?}|{}|{kind}", problem.code, problem.instance);
        if !self.state().said.insert(key) {
            return false;
        }
        let message = message();
        if kind.starts_with("refused") {
            tracing::warn!(cluster, instance = %problem.instance, "{message}");
        }
        let _ = self.store.audit(AuditEntry {
            actor: "agent".into(),
            action: format!("failure-{}", kind.split('|').next().unwrap_or(kind)),
            cluster: Some(cluster.to_string()),
            instance: Some(problem.instance.clone()),
            message,
        });
        true
    }

    /// If the primary of `cluster` died now: whether this agent would recover it, who
    /// would take over and why (`what_if`). Changes nothing.
    pub fn what_if(&self, cluster: &ClusterView, snapshot: &Snapshot) -> super::what_if::WhatIf {
        let coverage = self.coverage(
            &self.gate_facts(),
            &cluster.name,
            cluster.alias.as_deref(),
            &cluster.members,
            &cluster.primary,
            snapshot,
        );
        let members = snapshot.only(cluster.members.iter().chain([&cluster.primary]));
        let plan = plan_promotion(&cluster.primary, &members, &self.policy, None);
        super::what_if::what_if(
            &cluster.name,
            &cluster.primary,
            coverage,
            plan,
            &self.hooks.config.pre_failover,
        )
    }

    /// What the hooks of a recovery of `problem` in `cluster` are told.
    fn hook_context(
        &self,
        cluster: &ClusterView,
        problem: &Problem,
        successor: Option<InstanceKey>,
        recovery_id: &str,
    ) -> HookContext {
        HookContext {
            failure_type: format!("{:?}", problem.code),
            cluster: cluster.name.clone(),
            failed: Some(problem.instance.clone()),
            successor,
            recovery_id: recovery_id.to_string(),
            description: problem.explanation.clone(),
            replicas: cluster
                .tree
                .find(&problem.instance)
                .map(|node| node.replicas.iter().map(|r| r.key.clone()).collect())
                .unwrap_or_default(),
            lost_replicas: Vec::new(),
            downtimed: self
                .store
                .downtimes(SystemTime::now())
                .is_ok_and(|all| all.iter().any(|d| d.instance == problem.instance)),
            automatic: self
                .auto_clusters
                .iter()
                .any(|f| f.matches(&cluster.name, cluster.alias.as_deref())),
        }
    }

    /// Runs the `on_failure_detected` hooks in the background; their runs go to the audit.
    fn failure_detected_hooks(self: &Arc<Self>, cluster: &ClusterView, problem: &Problem) {
        if self.hooks.config.on_failure_detected.is_empty() {
            return;
        }
        let this = self.clone();
        let context = self.hook_context(cluster, problem, None, "");
        tokio::spawn(async move {
            for run in run_hooks(HookPoint::OnFailureDetected, &this.hooks, &context).await {
                let _ = this.store.audit(AuditEntry {
                    actor: "agent".into(),
                    action: "hook".into(),
                    cluster: Some(context.cluster.clone()),
                    instance: context.failed.clone(),
                    message: describe_run(&run),
                });
            }
        });
    }

    /// Runs the hooks of `point` and records each run as a step; false if one failed.
    async fn hooks_as_steps(
        &self,
        point: HookPoint,
        context: &HookContext,
        log: &mut StepLog,
    ) -> bool {
        let mut all_ok = true;
        for run in run_hooks(point, &self.hooks, context).await {
            all_ok &= run.succeeded();
            log.note(
                &format!("hook {}", point.name()),
                None,
                run.succeeded(),
                describe_run(&run),
                Duration::from_millis(run.duration_ms),
            );
        }
        all_ok
    }

    /// Weighs the agent locks of `cluster` (when this agent takes them): lets go of them
    /// when another agent holds more, takes them again once no other holds any, says
    /// once who acts when it is another agent, and returns why this agent may not act.
    fn weigh_claims(&self, cluster: &ClusterView, snapshot: &impl Instances) -> Option<String> {
        let claims = self.discovery.claims()?;
        let standing = crate::claims::standing(cluster, snapshot, claims);
        claims.yield_to_others(&cluster.members, standing.yields(claims.me()));
        let refusal = standing.refusal(&cluster.name);
        let mut state = self.state();
        let others: Vec<&String> = standing.others.keys().collect();
        if !others.is_empty() {
            let key = format!("{}|other agents|{others:?}", cluster.name);
            if state.said.insert(key) {
                tracing::warn!(
                    cluster = %cluster.name,
                    "{}",
                    refusal.clone().unwrap_or_else(|| format!(
                        "another pointsman agent ({}) watches {} too: this agent acts (it holds the agent lock on {} of {} reachable members); the other one does not",
                        others.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(", "),
                        cluster.name,
                        standing.held,
                        standing.reachable
                    ))
                );
            }
        }
        state.standings.insert(cluster.name.clone(), standing);
        refusal
    }

    /// How the agent locks of each cluster stood at the last look, for `/metrics`.
    pub fn standings(&self) -> HashMap<String, crate::claims::Standing> {
        self.state().standings.clone()
    }

    /// Whether this agent may change `cluster` now: it leads (with `[ha]`), and without
    /// `[ha]` it holds the agent lock on most of the cluster's reachable members.
    pub(crate) fn may_act_on(&self, cluster: &str) -> Result<(), String> {
        self.executor.lease.gate().map_err(|not| not.to_string())?;
        let Some(claims) = self.discovery.claims() else {
            return Ok(());
        };
        let snapshot = self.discovery.snapshot();
        let clusters = self.discovery.clusters(&snapshot, &self.aliases);
        let Some(view) = clusters.iter().find(|c| c.name == cluster) else {
            return Ok(());
        };
        match crate::claims::standing(view, &*snapshot, claims).refusal(cluster) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Why an automatic recovery of `cluster` must wait: its last attempt did not succeed
    /// and the back-off has not run out.
    fn waiting_to_retry(&self, cluster: &str) -> Option<String> {
        let state = self.state();
        let retry = state.retry.get(cluster)?;
        let left = retry.not_before.checked_duration_since(Instant::now())?;
        let at = SystemTime::now() + left;
        Some(format!(
            "the last attempt did not succeed: {} (next attempt at {})",
            retry.why,
            crate::topology::time::format(at)
        ))
    }

    /// After an automatic attempt: success clears the back-off, anything else lengthens it.
    fn attempted(&self, cluster: &str, outcome: Result<(), String>) {
        let mut state = self.state();
        match outcome {
            Ok(()) => {
                state.retry.remove(cluster);
            }
            Err(why) => {
                let wait = state
                    .retry
                    .get(cluster)
                    .map_or(Duration::from_secs(1), |r| r.next_wait);
                state.retry.insert(
                    cluster.to_string(),
                    Retry {
                        not_before: Instant::now() + wait,
                        next_wait: (wait * 2).min(RETRY_AT_MOST),
                        why,
                    },
                );
            }
        }
    }

    /// Why automatic recovery refuses this failure now (configuration, the switch, a
    /// downtime, the block period), in the words the CLI and the log use.
    fn automatic_refusal(&self, cluster: &ClusterView, problem: &Problem) -> Option<String> {
        self.uncovered(
            &cluster.name,
            cluster.alias.as_deref(),
            &cluster.members,
            &problem.instance,
        )
        .map(|u| format!("{}{}", u.why, u.what_to_do))
    }

    /// Whether automatic recovery would act on a failure of `instance` in this cluster
    /// now, leaving aside who acts (the lease, the agent lock); `None` if it would.
    fn uncovered(
        &self,
        name: &str,
        alias: Option<&str>,
        members: &[InstanceKey],
        instance: &InstanceKey,
    ) -> Option<Uncovered> {
        uncovered(
            &self.gate_facts(),
            &self.auto_clusters,
            self.block_period,
            name,
            alias,
            members,
            instance,
        )
    }

    /// The store's facts that coverage rests on, read once for as many clusters as the
    /// caller judges (`coverage`).
    pub fn gate_facts(&self) -> GateFacts {
        GateFacts::read(&self.store, self.block_period)
    }

    /// What automatic recovery would do if the primary of this cluster failed now, and
    /// which agent would act, for the page and the CLI to show before anything fails.
    /// Without `[ha]`, the agent locks are weighed as they stand in `snapshot`, not as
    /// the last judgement found them (which, just after start-up, may predate the
    /// probes that made the members reachable).
    pub fn coverage(
        &self,
        facts: &GateFacts,
        name: &str,
        alias: Option<&str>,
        members: &[InstanceKey],
        primary: &InstanceKey,
        snapshot: &impl Instances,
    ) -> Coverage {
        let mut coverage = match uncovered(
            facts,
            &self.auto_clusters,
            self.block_period,
            name,
            alias,
            members,
            primary,
        ) {
            Some(u) => Coverage {
                state: u.state,
                why: u.why,
                until: u.until,
                acting_agent: None,
                this_agent_acts: true,
            },
            None => Coverage {
                state: CoverageState::On,
                why: format!("a failure of {primary} is recovered automatically"),
                until: None,
                acting_agent: None,
                this_agent_acts: true,
            },
        };
        let lease = &self.executor.lease;
        if let Some(me) = lease.agent() {
            match lease.gate() {
                Ok(_) => coverage.acting_agent = Some(me.name),
                Err(not) => {
                    coverage.this_agent_acts = false;
                    match not.leader {
                        Some(leader) => coverage.acting_agent = Some(leader.name),
                        None => {
                            coverage.state = CoverageState::NoAgent;
                            coverage.why = not.to_string();
                        }
                    }
                }
            }
            return coverage;
        }
        if let Some(claims) = self.discovery.claims() {
            let standing = crate::claims::standing_now(members, snapshot, claims);
            if standing.acting() {
                if !standing.others.is_empty() {
                    coverage.acting_agent = Some(claims.me().to_string());
                }
            } else if let Some((other, _)) = standing
                .others
                .iter()
                .filter(|(_, count)| **count * 2 > standing.reachable)
                .max_by_key(|(_, count)| **count)
            {
                coverage.acting_agent = Some(other.clone());
                coverage.this_agent_acts = false;
            } else if let Some(why) = standing.refusal(name) {
                coverage.state = CoverageState::NoAgent;
                coverage.why = why;
                coverage.this_agent_acts = false;
            }
        }
        coverage
    }

    /// Recovers a cluster now on an operator's request (outside auto_clusters, blocked,
    /// or disabled alike). The failure must be one a recovery fixes: an unreachable
    /// primary that replicas still hear is refused, since promoting then splits the brain.
    pub async fn recover_by_hand(
        self: &Arc<Self>,
        cluster_name: &str,
        to: Option<InstanceKey>,
        who: &str,
    ) -> Result<RecoveryRecord, RecoverError> {
        let snapshot = self.discovery.snapshot();
        let (cluster, problems) = self
            .problems(&snapshot)
            .into_iter()
            .find(|(c, _)| c.name == cluster_name)
            .ok_or_else(|| RecoverError::UnknownCluster(cluster_name.to_string()))?;
        let Some(problem) = problems.iter().find(|p| p.code.needs_recovery()).cloned() else {
            let why = problems
                .first()
                .map(|p| format!("{:?}: {}", p.code, p.explanation))
                .unwrap_or_else(|| {
                    "its primary is healthy (use switchover to change primaries)".into()
                });
            return Err(RecoverError::NothingToRecover {
                cluster: cluster_name.to_string(),
                why,
            });
        };
        self.may_act_on(cluster_name)
            .map_err(RecoverError::NotActing)?;
        if !self.state().recovering.insert(cluster_name.to_string()) {
            return Err(RecoverError::AlreadyRunning(cluster_name.to_string()));
        }
        Ok(self
            .recover(
                cluster,
                problem,
                Trigger::Operator {
                    who: who.to_string(),
                },
                to,
                Vec::new(),
            )
            .await)
    }

    fn start(
        self: &Arc<Self>,
        cluster: ClusterView,
        problem: Problem,
        trigger: Trigger,
        to: Option<InstanceKey>,
    ) {
        // Marked before the task starts, so the next judgement cannot start a second one.
        let warm = {
            let mut state = self.state();
            if !state.recovering.insert(cluster.name.clone()) {
                return;
            }
            state
                .confirmed_open
                .remove(&cluster.name)
                .unwrap_or_default()
        };
        let this = self.clone();
        self.lane.spawn(async move {
            this.recover(cluster, problem, trigger, to, warm).await;
        });
    }

    /// Runs one recovery to its end and records it. The caller has marked the cluster
    /// as recovering; this clears the mark. `warm`: connections to the cluster's
    /// replicas its confirmation just opened, for a failover's first steps; closed when
    /// this recovery is of another kind or fails before.
    async fn recover(
        self: &Arc<Self>,
        cluster: ClusterView,
        problem: Problem,
        trigger: Trigger,
        to: Option<InstanceKey>,
        warm: Vec<Connection>,
    ) -> RecoveryRecord {
        let started = Instant::now();
        let now = SystemTime::now();
        let id = format!(
            "{}-{}",
            cluster.name.replace([':', '.'], "-"),
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
        );
        let fence = self
            .store
            .fenced()
            .unwrap_or_default()
            .into_iter()
            .find(|f| f.instance == problem.instance);
        let kind = if fence.is_some() {
            // Replicas still pointing at a fenced old primary: re-point them under its
            // successor; promoting one would make a second primary.
            "stragglers"
        } else if problem.code == ProblemCode::DeadIntermediatePrimary {
            "intermediate"
        } else {
            "failover"
        };
        let mut record = RecoveryRecord::started(
            &id,
            &cluster.name,
            kind,
            &format!("{:?}", problem.code),
            &problem.instance,
            &trigger.name(),
            now,
        );
        let epoch = self.executor.lease.gate().map_or(0, |grant| grant.epoch);
        let mut log = StepLog::journaled(&id, self.store.clone()).mirrored(
            self.mirror.as_ref(),
            &record,
            epoch,
        );
        let snapshot = self.discovery.snapshot();
        let recorded = self.store.insert_recovery(&record);
        let outcome = if let Err(error) = recorded {
            close_all(warm).await;
            // Without a record (and its journal) nobody could settle what this began.
            tracing::error!(%error, recovery_id = %id, "cannot record the recovery: nothing is changed");
            Err(Outcome::Aborted(format!(
                "the store cannot be written ({error}): nothing was changed"
            )))
        } else if let Some(fence) = &fence {
            close_all(warm).await;
            self.recover_stragglers(fence, &problem, &snapshot, &mut log)
                .await
        } else if kind == "intermediate" {
            close_all(warm).await;
            self.recover_intermediate(&problem, &snapshot, &mut log)
                .await
        } else {
            self.fail_over(&cluster, &problem, &snapshot, to.as_ref(), &mut log, warm)
                .await
        };
        record.status = match &outcome {
            Ok(_) => RecoveryStatus::Succeeded,
            Err(Outcome::Aborted(_)) => RecoveryStatus::Aborted,
            Err(Outcome::Failed(_)) => RecoveryStatus::Failed,
        };
        if matches!(trigger, Trigger::Automatic) {
            self.attempted(
                &cluster.name,
                match &outcome {
                    Ok(_) => Ok(()),
                    Err(Outcome::Aborted(why)) | Err(Outcome::Failed(why)) => Err(why.clone()),
                },
            );
        }
        record.successor = outcome.as_ref().ok().cloned();
        let context = HookContext {
            // Replicas a re-point failed for still hang below the old primary.
            lost_replicas: log
                .steps
                .iter()
                .filter(|s| s.step == "re-point" && !s.ok)
                .filter_map(|s| s.instance.clone())
                .collect(),
            ..self.hook_context(&cluster, &problem, record.successor.clone(), &id)
        };
        let point = if outcome.is_ok() {
            HookPoint::PostFailover
        } else {
            HookPoint::PostUnsuccessfulFailover
        };
        crate::crash_point!("failover-before-post-hooks");
        self.hooks_as_steps(point, &context, &mut log).await;
        record.steps = log.steps;
        record.finished_at = Some(SystemTime::now());
        if let Err(error) = self.store.update_recovery(&record) {
            tracing::error!(%error, recovery_id = %id, "cannot record the recovery's outcome");
        }
        if let Some(mirror) = &self.mirror {
            mirror.remove(&id).await;
        }
        let message = match &outcome {
            Ok(successor) => format!(
                "{:?} on {}: {} recovered in {} ms, {} is the new {}",
                problem.code,
                problem.instance,
                cluster.name,
                started.elapsed().as_millis(),
                successor,
                if kind == "intermediate" {
                    "source"
                } else {
                    "primary"
                }
            ),
            Err(Outcome::Aborted(why)) | Err(Outcome::Failed(why)) => {
                format!(
                    "{:?} on {}: recovery {:?}: {why}",
                    problem.code, problem.instance, record.status
                )
            }
        };
        let _ = self.store.audit(AuditEntry {
            actor: trigger.name(),
            action: "recovery".into(),
            cluster: Some(cluster.name.clone()),
            instance: Some(problem.instance.clone()),
            message,
        });
        self.state().recovering.remove(&cluster.name);
        // The cluster's state just changed: look now rather than at the next tick. Only
        // its own instances: the rest of the fleet was not touched, and probing all of
        // it at once here queued a second cluster's failover behind thousands of probes.
        let touched: BTreeSet<InstanceKey> = cluster
            .members
            .iter()
            .chain([&problem.instance])
            .chain(&problem.related)
            .chain(to.as_ref())
            .cloned()
            .collect();
        self.mark_changed(touched);
        record
    }

    /// Fails `cluster` over (`fail_over_with`), each instance's session kept open from
    /// one step to the next, starting with the `warm` ones its confirmation opened.
    async fn fail_over(
        &self,
        cluster: &ClusterView,
        problem: &Problem,
        snapshot: &Snapshot,
        to: Option<&InstanceKey>,
        log: &mut StepLog,
        warm: Vec<Connection>,
    ) -> Result<InstanceKey, Outcome> {
        let executor = self.executor.keeping_sessions_from(warm).await;
        let outcome = self
            .fail_over_with(&executor, cluster, problem, snapshot, to, log)
            .await;
        executor.close_kept_sessions().await;
        outcome
    }

    async fn fail_over_with(
        &self,
        executor: &Executor,
        cluster: &ClusterView,
        problem: &Problem,
        snapshot: &Snapshot,
        to: Option<&InstanceKey>,
        log: &mut StepLog,
    ) -> Result<InstanceKey, Outcome> {
        let started = Instant::now();
        // The failed primary's replicas are members of its cluster: planned over those,
        // not over every instance of the fleet.
        let members = snapshot.only(cluster.members.iter().chain([&problem.instance]));
        let plan = match plan_promotion(&problem.instance, &members, &self.policy, to) {
            Ok(plan) => plan,
            Err(error) => {
                log.note(
                    "choose candidate",
                    None,
                    false,
                    error.to_string(),
                    started.elapsed(),
                );
                return Err(Outcome::Aborted(match error {
                    PlanError::NoCandidate { failed, .. } => {
                        format!("no replica of {failed} may be promoted")
                    }
                    other => other.to_string(),
                }));
            }
        };
        log.note(
            "choose candidate",
            Some(&plan.candidate),
            true,
            plan.explain(),
            started.elapsed(),
        );
        if let Err(error) = log.mirror_now().await {
            return Err(Outcome::Aborted(format!(
                "{error}: nothing was changed (every step is recorded there before it runs)"
            )));
        }
        crate::crash_point!("failover-after-choose");
        let context = self.hook_context(
            cluster,
            problem,
            Some(plan.candidate.clone()),
            &log.recovery_id,
        );
        if !self
            .hooks_as_steps(HookPoint::PreFailover, &context, log)
            .await
        {
            return Err(Outcome::Aborted(
                "a pre_failover hook failed: nothing was changed".into(),
            ));
        }
        // Hooks may take seconds: act only if the primary is still gone.
        if self
            .discovery
            .snapshot()
            .get(&problem.instance)
            .is_some_and(|i| i.is_reachable())
        {
            return Err(Outcome::Aborted(format!(
                "{} answers again: nothing was changed",
                problem.instance
            )));
        }
        // Fenced from this moment: never writable again on its own. Without a recorded
        // fence nothing may change, so a store that cannot write it aborts the recovery.
        let fenced = match log.begin("fence", Some(&problem.instance)).await {
            Ok(()) => self
                .store
                .fence(&problem.instance, &cluster.name, Some(&log.recovery_id))
                .map_err(|e| e.to_string()),
            Err(error) => Err(error),
        };
        if let Err(error) = fenced {
            log.note(
                "fence",
                Some(&problem.instance),
                false,
                error.to_string(),
                Duration::ZERO,
            );
            return Err(Outcome::Aborted(format!(
                "the fence could not be recorded ({error}): nothing was changed"
            )));
        }
        log.note(
            "fence",
            Some(&problem.instance),
            true,
            "marked fenced: set read_only whenever it answers, until re-attached".into(),
            Duration::ZERO,
        );
        crate::crash_point!("failover-after-fence");
        // Traffic first: no backend may send writes to the old primary once the new one
        // takes writes. The candidate catches up meanwhile (nothing is writable before
        // `promote`, which waits for both). A backend that does not answer is not
        // waited for.
        let _ = log.begin("withdraw routes", Some(&problem.instance)).await;
        let mut prepare_log = log.branch();
        let ((report, withdraw_took), prepared) = tokio::join!(
            timed(
                self.routing
                    .withdraw_writer(&cluster.name, &problem.instance, &log.recovery_id)
            ),
            executor.prepare(&plan, &mut prepare_log)
        );
        log.note(
            "withdraw routes",
            Some(&problem.instance),
            report.complete(),
            format!("no route names {} any more: {report}", problem.instance),
            withdraw_took,
        );
        log.absorb(prepare_log);
        crate::crash_point!("failover-after-withdraw");
        let promoted = match prepared {
            Ok(()) => executor.promote(&plan, log).await,
            Err(failure) => Err(failure),
        };
        crate::crash_point!("failover-after-promote");
        let repointed = match promoted {
            Ok(()) => {
                let mut repoint_log = log.branch();
                let _ = log.begin("route", Some(&plan.candidate)).await;
                let ((report, routing_took), left_behind) = tokio::join!(
                    timed(self.routing.route_writer(
                        &cluster.name,
                        &plan.candidate,
                        &problem.instance,
                        true,
                        &log.recovery_id
                    )),
                    executor.repoint_under(&mut repoint_log, &plan.siblings, &plan.candidate)
                );
                log.note(
                    "route",
                    Some(&plan.candidate),
                    report.complete(),
                    format!("routes name {} as the writer: {report}", plan.candidate),
                    routing_took,
                );
                log.absorb(repoint_log);
                let semi_sync = snapshot
                    .get(&problem.instance)
                    .and_then(|i| i.facts.as_ref())
                    .is_some_and(|f| f.semi_sync.source_enabled);
                if semi_sync {
                    executor.carry_semi_sync(log, &plan.candidate).await;
                }
                crate::crash_point!("failover-after-repoint");
                Ok(left_behind)
            }
            Err(failure) => Err(failure),
        };
        match repointed {
            Ok(left_behind) if left_behind.is_empty() => Ok(plan.candidate),
            Ok(left_behind) => {
                let names: Vec<String> = left_behind.iter().map(|k| k.to_string()).collect();
                tracing::warn!(
                    cluster = %cluster.name,
                    "promoted {}, but {} still replicate from the old primary: re-point them (`pointsman recover {}`)",
                    plan.candidate,
                    names.join(", "),
                    cluster.name
                );
                Ok(plan.candidate)
            }
            Err(failure) => {
                let promoted = log.steps.iter().any(|s| s.step == "promote" && s.ok);
                if promoted {
                    return Err(Outcome::Failed(format!(
                        "{failure}; {} was promoted, check the steps",
                        plan.candidate
                    )));
                }
                // Nothing was promoted: undo what was done, so the old primary is not
                // kept read_only by a fence nobody can lift, replicas receive again, and
                // traffic goes where it went before.
                let _ = self.store.unfence(&problem.instance);
                self.routing.release(&cluster.name).await;
                let mut everyone = vec![plan.candidate.clone()];
                everyone.extend(plan.siblings.iter().cloned());
                executor.resume_receiving(log, &everyone).await;
                Err(Outcome::Failed(format!(
                    "{failure}; nothing was promoted: the fence on {} was lifted and the replicas receive again",
                    problem.instance
                )))
            }
        }
    }

    async fn recover_stragglers(
        &self,
        fence: &crate::store::recovery::FencedInstance,
        problem: &Problem,
        snapshot: &Snapshot,
        log: &mut StepLog,
    ) -> Result<InstanceKey, Outcome> {
        let successor = fence
            .recovery_id
            .as_deref()
            .and_then(|id| self.store.recovery_with_id(id).ok().flatten()?.successor);
        let primary = successor.and_then(|successor| {
            self.discovery
                .clusters(snapshot, &self.aliases)
                .iter()
                .find(|c| c.members.contains(&successor))
                .map(|c| c.primary.clone())
        });
        let Some(primary) = primary.filter(|p| snapshot.get(p).is_some_and(|i| i.is_reachable()))
        else {
            return Err(Outcome::Aborted(format!(
                "{} is a fenced old primary and the primary that replaced it is not known or does not answer: re-point its replicas by hand",
                problem.instance
            )));
        };
        // Only instances that replicate from the fenced one right now, and never the
        // primary itself, whatever an older snapshot said.
        let current = self.discovery.snapshot();
        let stragglers: Vec<InstanceKey> = problem
            .related
            .iter()
            .filter(|k| **k != primary)
            .filter(|k| current.get(k).and_then(|i| i.source()) == Some(&problem.instance))
            .cloned()
            .collect();
        if stragglers.is_empty() {
            return Err(Outcome::Aborted(format!(
                "no instance replicates from the fenced {} any more",
                problem.instance
            )));
        }
        let failed = self
            .executor
            .repoint_under(log, &stragglers, &primary)
            .await;
        if failed.len() == stragglers.len() {
            return Err(Outcome::Failed(format!(
                "no replica of the fenced {} could be re-pointed under {primary}",
                problem.instance
            )));
        }
        Ok(primary)
    }

    async fn recover_intermediate(
        &self,
        problem: &Problem,
        snapshot: &Snapshot,
        log: &mut StepLog,
    ) -> Result<InstanceKey, Outcome> {
        let Some(new_source) = snapshot
            .get(&problem.instance)
            .and_then(|i| i.source())
            .cloned()
        else {
            return Err(Outcome::Aborted(format!(
                "the source of {} is not known",
                problem.instance
            )));
        };
        let failed = self
            .executor
            .repoint_under(log, &problem.related, &new_source)
            .await;
        if failed.len() == problem.related.len() {
            return Err(Outcome::Failed(format!(
                "no replica of {} could be re-pointed",
                problem.instance
            )));
        }
        Ok(new_source)
    }

    /// Keeps the servers' roles true across their restarts (see `roles`): persists the
    /// read-only role on MySQL instances that lack it, and gives its writes back to a
    /// primary of this cluster that restarted read-only without a failover.
    fn keep_roles(
        self: &Arc<Self>,
        cluster: &ClusterView,
        snapshot: &Snapshot,
        clusters: &[ClusterView],
        back_read_only: &[InstanceKey],
    ) {
        if self.state().recovering.contains(&cluster.name) {
            return;
        }
        for key in unpersisted(snapshot, cluster) {
            {
                let mut state = self.state();
                let recent = state
                    .persisting
                    .get(&key)
                    .is_some_and(|last| last.elapsed() < PERSIST_RETRY);
                if recent {
                    continue;
                }
                state.persisting.insert(key.clone(), Instant::now());
            }
            let this = self.clone();
            let cluster_name = cluster.name.clone();
            tokio::spawn(async move {
                match this.executor.persist_read_only(&key).await {
                    Ok(()) => {
                        let _ = this.store.audit(AuditEntry {
                            actor: "agent".into(),
                            action: "persist-role".into(),
                            cluster: Some(cluster_name),
                            instance: Some(key.clone()),
                            message: format!(
                                "{key}: read_only and super_read_only persisted ON (SET PERSIST_ONLY): if it restarts it comes back read-only, whatever its role now"
                            ),
                        });
                        this.discovery.probe_now(vec![key]);
                    }
                    Err(error) => tracing::warn!(
                        instance = %key,
                        %error,
                        "cannot persist the read-only role: if this server restarts as an old primary it takes writes until it is fenced (grant the topology user SYSTEM_VARIABLES_ADMIN and PERSIST_RO_VARIABLES_ADMIN); tried again in a minute"
                    ),
                }
            });
        }
        // The store is read only for a primary that came back read-only: not for every
        // cluster at every judgement.
        let Some(key) = back_read_only.iter().find(|k| **k == cluster.primary) else {
            return;
        };
        let Ok(fenced) = self.store.fenced() else {
            return;
        };
        let fenced: Vec<InstanceKey> = fenced.into_iter().map(|f| f.instance).collect();
        self.state().writers.settled(key);
        if restarted_without_failover(key, snapshot, clusters, &fenced) {
            let this = self.clone();
            let key = key.clone();
            let cluster_name = cluster.name.clone();
            tokio::spawn(async move {
                let result = this.executor.set_read_only(&key, false).await;
                let message = match &result {
                    Ok(()) => format!(
                        "primary {key} restarted and came back read-only (its persisted or configured role); no failover replaced it and its replicas still follow it: read_only set OFF, it takes writes again"
                    ),
                    Err(error) => format!(
                        "primary {key} restarted and came back read-only; giving it its writes back failed: {error}"
                    ),
                };
                tracing::warn!(instance = %key, "{message}");
                let _ = this.store.audit(AuditEntry {
                    actor: "agent".into(),
                    action: "read-only".into(),
                    cluster: Some(cluster_name),
                    instance: Some(key.clone()),
                    message,
                });
                this.discovery.probe_now(vec![key]);
            });
        }
    }

    /// Fences the second writable primary of a cluster when it is a stale copy of the
    /// cluster's primary (its executed GTIDs a strict subset): recorded like a failover's
    /// fence, so `keep_fenced` sets it read_only at once and keeps it so until
    /// `pointsman reattach`. One that diverged is only reported. Never while the cluster
    /// is being changed, and only on a fresh probe of both servers: a snapshot mixes
    /// probes of different moments, and mid-switchover it can show the old primary
    /// still writable beside the new one.
    fn fence_stale_primary(self: &Arc<Self>, cluster: &ClusterView, problem: &Problem) {
        if self.state().recovering.contains(&cluster.name)
            || !self.state().checking.insert(problem.instance.clone())
        {
            return;
        }
        let this = self.clone();
        let cluster = cluster.name.clone();
        let stale_key = problem.instance.clone();
        tokio::spawn(async move {
            // Held from the second look to the fence: no switchover or recovery of the
            // cluster runs in between.
            if !this.begin_change(&cluster) {
                this.state().checking.remove(&stale_key);
                return;
            }
            let primary_key = this.recheck_stale_primary(&cluster, &stale_key).await;
            let recorded = primary_key
                .as_ref()
                .map(|_| this.store.fence(&stale_key, &cluster, None));
            this.end_change(&cluster);
            this.state().checking.remove(&stale_key);
            let (Some(primary_key), Some(recorded)) = (primary_key, recorded) else {
                return;
            };
            let message = match &recorded {
                Ok(()) => format!(
                    "{stale_key} took writes beside the primary {primary_key} and its GTIDs are a strict subset of the primary's: fenced as a stale old primary (read_only until `pointsman reattach`)"
                ),
                Err(error) => format!(
                    "{stale_key} is a stale second writable primary, but its fence could not be recorded: {error}"
                ),
            };
            tracing::warn!(%cluster, instance = %stale_key, "{message}");
            let _ = this.store.audit(AuditEntry {
                actor: "agent".into(),
                action: "fence".into(),
                cluster: Some(cluster.clone()),
                instance: Some(stale_key.clone()),
                message,
            });
        });
    }

    /// Probes both servers now and judges again: the cluster's primary when `stale` is
    /// still a writable stale copy of it, and nothing changes the cluster meanwhile.
    async fn recheck_stale_primary(
        &self,
        cluster: &str,
        stale: &InstanceKey,
    ) -> Option<InstanceKey> {
        let primary = self
            .discovery
            .clusters(&self.discovery.snapshot(), &self.aliases)
            .iter()
            .find(|c| c.name == cluster)?
            .primary
            .clone();
        self.discovery
            .probe_and_wait(
                vec![stale.clone(), primary.clone()],
                STALE_PRIMARY_PROBE_WAIT,
            )
            .await;
        let snapshot = self.discovery.snapshot();
        self.discovery
            .clusters(&snapshot, &self.aliases)
            .iter()
            .find(|c| c.name == cluster && c.primary == primary)?;
        let stale_facts = writable_root(&snapshot, stale)?;
        let primary_facts = writable_root(&snapshot, &primary)?;
        stale_facts
            .gtid
            .strictly_behind(&primary_facts.gtid)
            .then_some(primary)
    }

    /// `recovery.auto_rejoin`: re-attaches a fenced old primary that answers, as
    /// `pointsman reattach` would (which refuses one with transactions its successor
    /// lacks), in the background, at most every `REJOIN_EVERY`. A refusal is said once
    /// (log and audit) until its reason changes.
    fn rejoin(self: &Arc<Self>, key: &InstanceKey, cluster: &str) {
        {
            let mut state = self.state();
            let due = state
                .rejoining
                .get(key)
                .is_none_or(|(last, _)| last.elapsed() >= REJOIN_EVERY);
            if !due {
                return;
            }
            let said = state.rejoining.get(key).and_then(|(_, why)| why.clone());
            state.rejoining.insert(key.clone(), (Instant::now(), said));
        }
        // Only the agent that acts on the cluster re-attaches (another one's lock is
        // shown as such, not as a refusal to rejoin); looked at when a try is due.
        if self.may_act_on(cluster).is_err() {
            return;
        }
        let this = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            match this.reattach(&key, "automatic").await {
                Ok(primary) => {
                    this.state().rejoining.remove(&key);
                    tracing::info!(instance = %key, %primary, "auto_rejoin: the old primary answered with nothing its successor lacks and replicates from it again");
                }
                // Still starting, or its cluster is being changed: tried again later.
                Err(ReattachError::Unreachable(_)) => {}
                Err(error) => {
                    let why = error.to_string();
                    let first = {
                        let mut state = this.state();
                        let entry = state
                            .rejoining
                            .entry(key.clone())
                            .or_insert((Instant::now(), None));
                        let first = entry.1.as_deref() != Some(why.as_str());
                        entry.1 = Some(why.clone());
                        first
                    };
                    if first {
                        tracing::warn!(instance = %key, "auto_rejoin: stays fenced: {why}");
                        let cluster = this
                            .store
                            .fenced()
                            .ok()
                            .and_then(|all| all.into_iter().find(|f| f.instance == key))
                            .map(|f| f.cluster);
                        let _ = this.store.audit(AuditEntry {
                            actor: "agent".into(),
                            action: "rejoin-refused".into(),
                            cluster,
                            instance: Some(key.clone()),
                            message: format!("not re-attached by auto_rejoin: {why}"),
                        });
                    }
                }
            }
        });
    }

    /// Sets every fenced old primary that answers and is writable back to read_only.
    fn keep_fenced(self: &Arc<Self>, snapshot: &Snapshot) {
        let Ok(fenced) = self.store.fenced() else {
            return;
        };
        // A fenced old primary that does not answer is looked at on every judgement
        // (every 100 ms), not every poll: when it restarts (writable, unless its own
        // configuration says read_only) it is set read_only the moment it answers. Looked
        // at through places of their own: one gone for good holds its place for the whole
        // connect timeout, and a death's probe must not wait for those.
        let down: Vec<InstanceKey> = fenced
            .iter()
            .filter(|f| snapshot.get(&f.instance).is_some_and(|i| !i.is_reachable()))
            .map(|f| f.instance.clone())
            .collect();
        let due = {
            let mut state = self.state();
            let due = state
                .fenced_looked_at
                .is_none_or(|last| last.elapsed() >= FENCED_LOOK_EVERY);
            if due && !down.is_empty() {
                state.fenced_looked_at = Some(Instant::now());
            }
            due
        };
        if due && !down.is_empty() {
            self.discovery.look_at(down);
        }
        for fence in fenced {
            let Some(instance) = snapshot.get(&fence.instance) else {
                continue;
            };
            if self.auto_rejoin && instance.is_reachable() {
                self.rejoin(&fence.instance, &fence.cluster);
            }
            let writable = instance.is_reachable()
                && instance
                    .facts
                    .as_ref()
                    .is_some_and(|f| !f.read_only || f.super_read_only == Some(false));
            if !writable {
                continue;
            }
            {
                let mut state = self.state();
                let recent = state
                    .fencing
                    .get(&fence.instance)
                    .is_some_and(|last| last.elapsed() < Duration::from_secs(1));
                if recent {
                    continue;
                }
                state.fencing.insert(fence.instance.clone(), Instant::now());
            }
            let this = self.clone();
            tokio::spawn(async move {
                let mut log = StepLog::new(fence.recovery_id.as_deref().unwrap_or("fence"));
                let result = this.executor.fence(&mut log, &fence.instance).await;
                let _ = this.store.audit(AuditEntry {
                    actor: "agent".into(),
                    action: "fence".into(),
                    cluster: Some(fence.cluster.clone()),
                    instance: Some(fence.instance.clone()),
                    message: match result {
                        Ok(()) => format!(
                            "old primary {} answered writable: set read_only (fenced until `pointsman reattach`)",
                            fence.instance
                        ),
                        Err(error) => format!("old primary {} answered writable, fencing failed: {error}", fence.instance),
                    },
                });
                this.discovery.probe_now(vec![fence.instance.clone()]);
            });
        }
    }
}

/// One hook run in a line (and its output, shortened) for steps and the audit.
/// Runs `future` and says how long it took (when it runs alongside others, the time
/// of the whole join would not be its own).
pub(super) async fn timed<T>(future: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let value = future.await;
    (value, started.elapsed())
}

pub(super) fn describe_run(run: &HookRun) -> String {
    const KEEP: usize = 2000;
    let status = match (run.exit_code, run.timed_out) {
        (_, true) => "timed out".to_string(),
        (Some(code), false) => format!("exit {code}"),
        (None, false) => "killed".to_string(),
    };
    let mut output = run.output.trim().to_string();
    if output.len() > KEEP {
        let mut cut = KEEP;
        while !output.is_char_boundary(cut) {
            cut -= 1;
        }
        output.truncate(cut);
        output.push_str(" …");
    }
    format!(
        "`{}`: {status} in {} ms; output: {output}",
        run.command, run.duration_ms
    )
}

/// How a recovery ended when it did not succeed.
enum Outcome {
    /// Nothing was changed.
    Aborted(String),
    /// It stopped part-way.
    Failed(String),
}

/// What to do with an old primary that has transactions its successor lacks.
fn diverged_remedy(flavor: ServerFlavor, old: &InstanceKey, primary: &InstanceKey) -> String {
    match flavor {
        ServerFlavor::Mariadb => format!(
            "On MariaDB: save those transactions if they matter (mysqlbinlog the old primary's binary logs from the first errant GTID), undo them with `mysqlbinlog --flashback --start-position=<first errant event> <binlog> | mariadb` on {old} (binlog_format=ROW and binlog_row_image=FULL needed), then `pointsman reattach {old}`; or rebuild {old} from a backup of {primary}"
        ),
        ServerFlavor::Mysql => format!(
            "On MySQL: save those transactions if they matter (mysqlbinlog the old primary's binary logs), then re-clone {old} from {primary} (`CLONE INSTANCE FROM ...@{}:{}` with the clone plugin, or a backup) and `pointsman reattach {old}`",
            primary.host, primary.port
        ),
    }
}

/// Why an old primary could not be re-attached.
#[derive(Debug, thiserror::Error)]
pub enum ReattachError {
    #[error("{0} is not fenced: only an old primary fenced by a failover is re-attached")]
    NotFenced(InstanceKey),
    #[error("{0} does not answer: start it first")]
    Unreachable(InstanceKey),
    #[error("the primary that replaced {0} is not known any more: re-attach it by hand")]
    NoPrimary(InstanceKey),
    #[error("{instance} has transactions {primary} never had ({errant}): as a replica they would conflict or be lost, so it stays fenced. {remedy}")]
    Diverged {
        instance: InstanceKey,
        primary: InstanceKey,
        errant: String,
        /// What to do, for the server's flavour.
        remedy: String,
    },
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Coordinator {
    /// Makes a fenced old primary a replica of the primary that replaced it, when its
    /// GTIDs allow (it has nothing the new primary lacks).
    pub async fn reattach(
        &self,
        key: &InstanceKey,
        who: &str,
    ) -> Result<InstanceKey, ReattachError> {
        let fence = self
            .store
            .fenced()?
            .into_iter()
            .find(|f| &f.instance == key)
            .ok_or_else(|| ReattachError::NotFenced(key.clone()))?;
        self.may_act_on(&fence.cluster)
            .map_err(ReattachError::Failed)?;
        // Judged on a probe taken now: an old primary started a moment ago answers
        // before the next poll would say so.
        self.discovery
            .probe_and_wait(vec![key.clone()], REATTACH_PROBE_WAIT)
            .await;
        let snapshot = self.discovery.snapshot();
        let old = snapshot
            .get(key)
            .filter(|i| i.is_reachable())
            .and_then(|i| i.facts.as_ref())
            .ok_or_else(|| ReattachError::Unreachable(key.clone()))?;
        let successor = fence
            .recovery_id
            .as_deref()
            .and_then(|id| self.store.recovery_with_id(id).ok().flatten()?.successor);
        let clusters = self.discovery.clusters(&snapshot, &self.aliases);
        // The primary that replaced it: the successor's cluster now, or — for a fence no
        // failover set (a stale second primary) — the primary of the cluster it was in.
        let primary_key = match &successor {
            Some(successor) => clusters.iter().find(|c| c.members.contains(successor)),
            None => clusters.iter().find(|c| c.name == fence.cluster),
        }
        .map(|c| c.primary.clone())
        .filter(|primary| primary != key)
        .ok_or_else(|| ReattachError::NoPrimary(key.clone()))?;
        let primary = snapshot
            .get(&primary_key)
            .filter(|i| i.is_reachable())
            .and_then(|i| i.facts.as_ref())
            .ok_or_else(|| ReattachError::NoPrimary(key.clone()))?;
        if let Some(errant) =
            crate::analysis::findings::errant_gtids(&old.gtid, &primary.gtid, primary)
        {
            let remedy = diverged_remedy(old.flavor, key, &primary_key);
            return Err(ReattachError::Diverged {
                instance: key.clone(),
                primary: primary_key,
                errant,
                remedy,
            });
        }
        let mut log = StepLog::new(fence.recovery_id.as_deref().unwrap_or("reattach"));
        self.executor
            .attach(
                &mut log,
                key,
                &primary_key,
                primary.semi_sync.source_enabled,
            )
            .await
            .map_err(|e| ReattachError::Failed(e.to_string()))?;
        self.store.unfence(key)?;
        let _ = self.store.audit(AuditEntry {
            actor: who.to_string(),
            action: "reattach".into(),
            cluster: Some(fence.cluster.clone()),
            instance: Some(key.clone()),
            message: format!("old primary {key} re-attached as a replica of {primary_key}"),
        });
        self.discovery
            .probe_and_wait(
                vec![key.clone(), primary_key.clone()],
                Duration::from_secs(2),
            )
            .await;
        Ok(primary_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::fake::{FakeServer, FakeTopology, Op};

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    /// The primary 1 died after 12 transactions; 2 received them all, 3 and 4 fewer.
    fn dead_primary() -> FakeTopology {
        FakeTopology::new([
            (key(1), FakeServer::primary(12).unreachable()),
            (key(2), FakeServer::replica(&key(1), 12, 9)),
            (key(3), FakeServer::replica(&key(1), 11, 11)),
            (key(4), FakeServer::replica(&key(1), 10, 10)),
        ])
    }

    /// Runs the coordinator's failover of 1 on `fake` with its store in `dir`: the
    /// outcome, the steps, and the store (for the fence).
    async fn fail_over_on(
        fake: &FakeTopology,
        dir: &std::path::Path,
    ) -> (Result<InstanceKey, String>, StepLog, Store) {
        let coordinator = fake.coordinator(dir);
        let snapshot = fake.snapshot();
        let cluster = crate::topology::build_clusters(&snapshot, &[])
            .into_iter()
            .find(|c| c.primary == key(1))
            .expect("the dead primary's cluster");
        let problem = Problem {
            code: ProblemCode::DeadPrimary,
            cluster: cluster.name.clone(),
            instance: key(1),
            related: vec![key(2), key(3), key(4)],
            explanation: "dead".into(),
        };
        let mut log = StepLog::new("r");
        let outcome = coordinator
            .fail_over(&cluster, &problem, &snapshot, None, &mut log, Vec::new())
            .await
            .map_err(|outcome| match outcome {
                Outcome::Aborted(why) => format!("aborted: {why}"),
                Outcome::Failed(why) => format!("failed: {why}"),
            });
        (outcome, log, coordinator.store.clone())
    }

    #[tokio::test]
    async fn a_failover_fences_and_withdraws_before_promoting_and_repoints_after() {
        let fake = dead_primary();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (outcome, log, store) = fail_over_on(&fake, dir.path()).await;
        assert_eq!(outcome, Ok(key(2)));
        let steps: Vec<(&str, u16)> = log
            .steps
            .iter()
            .map(|s| (s.step.as_str(), s.instance.as_ref().map_or(0, |k| k.port)))
            .collect();
        assert_eq!(
            steps,
            [
                ("choose candidate", 2),
                ("fence", 1),
                ("withdraw routes", 1),
                ("stop IO thread", 2),
                ("stop IO thread", 3),
                ("stop IO thread", 4),
                ("apply relay log", 2),
                ("promote", 2),
                ("route", 2),
                ("re-point", 3),
                ("re-point", 4),
            ]
        );
        assert!(store
            .fenced()
            .expect("fences")
            .iter()
            .any(|f| f.instance == key(1)));
        let promote = fake.first(&key(2), Op::Promote);
        for port in [3, 4] {
            assert!(fake.first(&key(port), Op::StopIoThread) < promote);
            assert!(fake.first(&key(port), Op::Repoint) > promote);
            assert_eq!(fake.server(&key(port)).source, Some(key(2)));
        }
        assert!(!fake.server(&key(2)).read_only);
        for port in [2, 3, 4] {
            let opened = fake
                .operations()
                .iter()
                .filter(|(k, op)| *k == key(port) && *op == Op::Open)
                .count();
            assert_eq!(
                opened, 1,
                "one session on {port} from its first step to its last"
            );
        }
    }

    #[test]
    fn a_primary_that_just_failed_is_looked_at_and_nothing_else() {
        use crate::topology::instance::tests_support::{primary, replica};
        let failed = SystemTime::now();
        let down = |mut instance: crate::topology::Instance| {
            instance.unreachable_since = Some(failed);
            instance.last_failure = Some(failed);
            instance
        };
        let still_down = |mut instance: crate::topology::Instance| {
            instance.unreachable_since = Some(failed - Duration::from_secs(5));
            instance.last_failure = Some(failed);
            instance
        };
        let mut snapshot = Snapshot::of([
            primary(key(10)),
            down(replica(key(11), key(10))),
            down(primary(key(1))),
            replica(key(2), key(1)),
            still_down(primary(key(20))),
        ]);
        for (version, port) in [(1, 10), (2, 11), (3, 1), (4, 2), (5, 20)] {
            snapshot.set_version(&key(port), version);
        }
        let clusters = || Arc::new(crate::topology::build_clusters(&snapshot, &[]));
        let cluster_of_1 = clusters()
            .iter()
            .find(|c| c.primary == key(1))
            .map(|c| c.name.clone())
            .expect("the cluster of 1");
        assert_eq!(
            lost_primaries(&snapshot, 0, clusters),
            [cluster_of_1],
            "not the reachable primary 10, nor its unreachable replica, nor 20, down for 5 s"
        );
        let unasked = || -> Arc<Vec<ClusterView>> { panic!("grouped with nothing lost") };
        assert!(
            lost_primaries(&snapshot, 3, unasked).is_empty(),
            "1 failed before, and 20 failed again"
        );
    }

    fn snapshot_numbered(urgent: u64) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            urgent,
            ..Snapshot::default()
        })
    }

    #[tokio::test]
    async fn a_snapshot_asked_for_now_cuts_the_pause_after_a_judgement_short() {
        use futures::poll;
        use std::task::Poll;
        let (publish, mut snapshots) = tokio::sync::watch::channel(snapshot_numbered(3));
        snapshots.borrow_and_update();

        // A pause that never ends by itself: a regular snapshot does not end it, one
        // published for a result asked for now does.
        {
            let waiting = until_urgent_or(std::future::pending(), &mut snapshots, 3);
            tokio::pin!(waiting);
            assert_eq!(poll!(&mut waiting), Poll::Pending);
            publish.send_replace(snapshot_numbered(3));
            assert_eq!(poll!(&mut waiting), Poll::Pending, "a regular snapshot");
            publish.send_replace(snapshot_numbered(4));
            assert_eq!(poll!(&mut waiting), Poll::Ready(true), "one asked for now");
        }

        // The pause over: whether a snapshot came meanwhile, to be judged at once.
        publish.send_replace(snapshot_numbered(4));
        assert!(until_urgent_or(std::future::ready(()), &mut snapshots, 4).await);
        assert!(!until_urgent_or(std::future::ready(()), &mut snapshots, 4).await);
    }

    #[tokio::test]
    async fn a_failed_promotion_lifts_the_fence_and_every_replica_receives_again() {
        let fake = dead_primary();
        fake.fail(&key(2), Op::Promote);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (outcome, log, store) = fail_over_on(&fake, dir.path()).await;
        let why = outcome.expect_err("failed");
        assert!(why.contains("nothing was promoted"), "{why}");
        assert!(store.fenced().expect("fences").is_empty());
        let promote = fake.first(&key(2), Op::Promote);
        for port in [2, 3, 4] {
            assert!(fake.first(&key(port), Op::StartReplication) > promote);
            let replica = fake.server(&key(port));
            assert!(replica.io_running && replica.sql_running && replica.read_only);
            assert_eq!(replica.source, Some(key(1)));
        }
        assert!(log
            .steps
            .iter()
            .any(|s| s.step == "resume replication" && s.ok));
    }
}
