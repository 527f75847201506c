//! Who may act: a leader lease held in Consul, so that of several pointsman agents
//! watching the same servers exactly one changes them, and the gate every write passes.
//!
//! It owns this agent's Consul service (with a TTL check), its session (linked to that
//! check, `Behavior: release`) and its hold on the lock key, and it publishes this
//! agent's `Role`. A follower watches the key with a blocking read and acquires it when
//! no session holds it; the `LockIndex` Consul gives the acquisition is the epoch, a
//! fencing token that grows with every new leader.
//!
//! The lease, counted from the moment the last successful check pass was *sent*: Consul
//! turns the check critical no sooner than `check_ttl` after it received that pass, the
//! session dies with it, and the key stays locked for `lock_delay` more, so nobody else
//! can lead before `last pass sent + check_ttl + lock_delay` (or, if renewals failed
//! for that long, `last renewal sent + session_ttl + lock_delay`). The leader steps down
//! a safety margin — a fifth of `check_ttl` — before then when it could not pass or
//! renew, and `gate` refuses from that instant on whatever the task is doing, so a
//! caller that bounds each step by `Grant::remaining` never acts outside the lease.
//! A session Consul invalidated (renew → 404, or the key showing another session) ends
//! the lead at once; the agent then campaigns again with a new session. A session ended
//! from outside (destroyed by hand, its service deregistered, its node failing) frees
//! the key after `lock_delay` only, and the leader hears of it at its next renewal, a
//! quarter of `check_ttl` (plus one request) later at most: keep `lock_delay` above
//! that, as the defaults do (1s against 375ms).
//!
//! It must not decide anything about databases or routes (callers ask `gate` before each
//! step), must not hold the lock without passing the check, and must never log the
//! token: every request goes through `routing::consul_http`, which scrubs it. Sessions,
//! the service and the key live in the local agent's datacenter (no `?dc=`): a session
//! can link only checks of its own node.

use crate::config::{ConsulSettings, HumanDuration};
use crate::routing::consul_http::{check_key, go_duration, ConsulError, Http, KvEntry};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};

/// Consul's `session_ttl_min` default, and its fixed maximum (agent/structs).
const SESSION_TTL_MIN: Duration = Duration::from_secs(10);
const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Consul caps a session's LockDelay here (structs.MaxLockDelay).
const LOCK_DELAY_MAX: Duration = Duration::from_secs(60);
/// Passes go four times a check TTL: shorter TTLs would flood the agent.
const CHECK_TTL_MIN: Duration = Duration::from_millis(100);
/// The service every agent registers; its ID names the agent.
const SERVICE_NAME: &str = "pointsman";
/// How long one blocking read of the key waits for a change. Short enough that a
/// silently dead connection is noticed soon, long enough to cost nothing.
const WATCH_WAIT: Duration = Duration::from_secs(10);
/// While the key is free but an acquire is refused (a lock-delay runs), how long to
/// wait before trying again, unless the key changes first.
const ACQUIRE_RETRY: Duration = Duration::from_millis(150);
/// Blocking reads start at least this far apart (Consul asks clients to rate-limit).
const WATCH_MIN_GAP: Duration = Duration::from_millis(50);
/// Retries after a failed request or a lost session: doubling, bounded.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// What `Grant::remaining` says under `solo()`: no lease ends it, and adding it to an
/// `Instant` cannot overflow.
const SOLO_REMAINING: Duration = Duration::from_secs(365 * 24 * 3600);
/// Consul removes the service of an agent gone this long (its check critical).
const DEREGISTER_AFTER: Duration = Duration::from_secs(600);

/// `[ha]`: several agents, one acts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// Off: this agent acts alone (`solo()`).
    pub enabled: bool,
    /// The Consul key the agents lock; unset: `pointsman/leader/<name>`.
    pub lock_key: Option<String>,
    /// How other agents name this one; unset: host name and API address.
    pub agent_name: Option<String>,
    /// The TTL of this agent's check; a dead leader is replaced about
    /// `check_ttl + lock_delay` after its last pass.
    pub check_ttl: HumanDuration,
    /// How long Consul keeps the key locked after the leader's session dies.
    pub lock_delay: HumanDuration,
    /// The session's own TTL (Consul: 10s..24h); the check ends a dead leader's session
    /// much sooner.
    pub session_ttl: HumanDuration,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            enabled: false,
            lock_key: None,
            agent_name: None,
            check_ttl: HumanDuration(Duration::from_millis(1500)),
            lock_delay: HumanDuration(Duration::from_secs(1)),
            session_ttl: HumanDuration(Duration::from_secs(10)),
        }
    }
}

impl HaConfig {
    /// Every problem, as (key, what is wrong and what to do); empty when all is well.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut problems = timing_problems(self.check_ttl.0, self.lock_delay.0, self.session_ttl.0);
        if let Some(key) = &self.lock_key {
            if let Some(problem) = key_problem(key) {
                problems.push(("ha.lock_key", problem));
            }
        }
        if self
            .agent_name
            .as_ref()
            .is_some_and(|n| n.trim().is_empty())
        {
            problems.push((
                "ha.agent_name",
                "is empty: leave it unset to use the host name and the API address".into(),
            ));
        }
        problems
            .into_iter()
            .map(|(key, what)| (key.to_string(), what))
            .collect()
    }
}

fn timing_problems(
    check_ttl: Duration,
    lock_delay: Duration,
    session_ttl: Duration,
) -> Vec<(&'static str, String)> {
    let show = |d: Duration| humantime::format_duration(d).to_string();
    let mut problems = Vec::new();
    if !(SESSION_TTL_MIN..=SESSION_TTL_MAX).contains(&session_ttl) {
        problems.push((
            "ha.session_ttl",
            format!(
                "{} is outside Consul's 10s..24h for a session TTL (Consul refuses the session); 10s is usual, the check ends a dead leader's session sooner",
                show(session_ttl)
            ),
        ));
    }
    if lock_delay > LOCK_DELAY_MAX {
        problems.push((
            "ha.lock_delay",
            format!(
                "{} is over Consul's 60s cap: Consul would shorten it and the lease would count on a delay that does not happen; 1s is usual",
                show(lock_delay)
            ),
        ));
    }
    if check_ttl < CHECK_TTL_MIN {
        problems.push((
            "ha.check_ttl",
            format!(
                "{} is too short: the check is passed four times a TTL; at least 100ms (1.5s is usual)",
                show(check_ttl)
            ),
        ));
    } else if check_ttl >= session_ttl {
        problems.push((
            "ha.check_ttl",
            format!(
                "{} must be shorter than ha.session_ttl ({}): the check is what ends a dead leader's session quickly",
                show(check_ttl),
                show(session_ttl)
            ),
        ));
    }
    problems
}

fn key_problem(key: &str) -> Option<String> {
    if key.ends_with('/') {
        return Some(format!(
            "\"{key}\" ends with '/': name a key, like \"pointsman/leader/main\""
        ));
    }
    check_key(key)
        .err()
        .map(|e| format!("{e}; use a key like \"pointsman/leader/main\""))
}

/// An agent as the others see it while it leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub name: String,
    /// Its API, `http://host:port`.
    pub api: String,
}

/// What this agent may do now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// This agent acts; `epoch` is the lock's LockIndex (0 under `solo()`).
    Leader { epoch: u64 },
    /// Another agent acts (named when known); this one watches and waits.
    Follower { leader: Option<LeaderInfo> },
    /// Not yet known: the first look at the lock has not been made.
    Starting,
}

/// Permission to act: the epoch to fence writes with, and how long the lease surely
/// lasts (bound each step by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub epoch: u64,
    pub remaining: Duration,
}

/// Why `gate` said no.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct NotLeader {
    pub leader: Option<LeaderInfo>,
}

impl fmt::Display for NotLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.leader {
            Some(leader) => write!(
                f,
                "this agent does not lead: {} ({}) does; ask that agent",
                leader.name, leader.api
            ),
            None => write!(
                f,
                "this agent does not lead, and no leader is known (an election is under way, or Consul cannot be reached)"
            ),
        }
    }
}

/// A lease that cannot start; the message names the setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LeaseError(pub String);

/// Everything a lease needs, defaults resolved.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub consul: ConsulSettings,
    pub lock_key: String,
    /// This agent, as followers name it.
    pub agent: LeaderInfo,
    pub check_ttl: Duration,
    pub lock_delay: Duration,
    pub session_ttl: Duration,
}

impl LeaseSettings {
    /// From `[ha]`: `name` names the default lock key (`pointsman/leader/<name>`, e.g.
    /// the first cluster alias or "default"); `agent` is this agent with its default
    /// name (host name and API address), replaced by `ha.agent_name` when set.
    pub fn new(
        ha: &HaConfig,
        consul: ConsulSettings,
        name: &str,
        mut agent: LeaderInfo,
    ) -> LeaseSettings {
        if let Some(own) = &ha.agent_name {
            agent.name = own.clone();
        }
        LeaseSettings {
            consul,
            lock_key: ha
                .lock_key
                .clone()
                .unwrap_or_else(|| default_lock_key(name)),
            agent,
            check_ttl: ha.check_ttl.0,
            lock_delay: ha.lock_delay.0,
            session_ttl: ha.session_ttl.0,
        }
    }

    /// This agent's service in Consul: `pointsman-<agent name>-<lock key>`, made a DNS
    /// label, so several agents (and several locks) can share one Consul agent.
    pub fn service_id(&self) -> String {
        dns_safe(&format!(
            "{SERVICE_NAME}-{}-{}",
            self.agent.name, self.lock_key
        ))
    }

    /// The TTL check the session is linked to (Consul's id for a service's check).
    pub fn check_id(&self) -> String {
        format!("service:{}", self.service_id())
    }

    /// How long before the lease could pass to another agent this one steps down:
    /// a fifth of `check_ttl`, for the time between a step's last check of `gate` and
    /// its effect, and for the clocks of this host and Consul's running apart.
    pub fn margin(&self) -> Duration {
        self.check_ttl / 5
    }
}

/// `pointsman/leader/<name>`, the name made a valid key part.
pub fn default_lock_key(name: &str) -> String {
    let part: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("pointsman/leader/{part}")
}

fn dns_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------
// The handle.
// ---------------------------------------------------------------------------------

/// This agent's leader lease; a cheap handle, cloned freely. Dropping the last one
/// stops the campaign as `stop` does, in the background.
#[derive(Clone)]
pub struct Lease {
    inner: Arc<Handle>,
}

struct Handle {
    state: Arc<State>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// This agent as the others name it (`None` under `solo()`).
    agent: Option<LeaderInfo>,
}

/// What the campaign task publishes and `gate` reads.
struct State {
    role: watch::Sender<Role>,
    /// Set while leading: `gate` trusts this, never the task's progress.
    lead: watch::Sender<Option<Lead>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lead {
    epoch: u64,
    /// When to stop acting (the lease's end less the margin); `None`: never (solo).
    until: Option<Instant>,
}

impl Lease {
    /// Checks the settings and spawns the campaign; the role starts as `Starting`.
    /// Consul not answering is no error here: the task retries, and the agent follows.
    pub async fn start(settings: LeaseSettings) -> Result<Lease, LeaseError> {
        let problems = timing_problems(
            settings.check_ttl,
            settings.lock_delay,
            settings.session_ttl,
        );
        if let Some((key, what)) = problems.first() {
            return Err(LeaseError(format!("{key}: {what}")));
        }
        if let Some(problem) = key_problem(&settings.lock_key) {
            return Err(LeaseError(format!("ha.lock_key: {problem}")));
        }
        let address = settings.consul.config.address.clone().ok_or_else(|| {
            LeaseError(
                "ha.enabled needs routing.consul.address: the lease is kept in Consul".into(),
            )
        })?;
        let needs = format!(
            "key \"{}\" write, service \"{SERVICE_NAME}\" write and session write on this agent's node (session_prefix \"\" write)",
            settings.lock_key
        );
        let http = Http::new(&address, &settings.consul, needs).map_err(LeaseError)?;
        let state = Arc::new(State {
            role: watch::channel(Role::Starting).0,
            lead: watch::channel(None).0,
        });
        let (stop, stopping) = watch::channel(false);
        let agent = Some(settings.agent.clone());
        let campaign = Campaign::new(state.clone(), settings, http);
        let task = tokio::spawn(campaign.run(stopping));
        Ok(Lease {
            inner: Arc::new(Handle {
                state,
                stop,
                task: Mutex::new(Some(task)),
                agent,
            }),
        })
    }

    pub fn role(&self) -> Role {
        self.inner.state.role.borrow().clone()
    }

    /// This agent as the others name it; `None` for an agent that acts alone.
    pub fn agent(&self) -> Option<LeaderInfo> {
        self.inner.agent.clone()
    }

    /// Every change of role, as it happens.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.inner.state.role.subscribe()
    }

    /// `Ok` while this agent leads and its lease holds: the epoch and the time left
    /// (less the margin). Asks no one: it reads the lease's clock, so it says no from
    /// the instant the lease runs short, whatever the campaign task is doing.
    pub fn gate(&self) -> Result<Grant, NotLeader> {
        let lead = *self.inner.state.lead.borrow();
        match lead {
            Some(Lead { epoch, until: None }) => Ok(Grant {
                epoch,
                remaining: SOLO_REMAINING,
            }),
            Some(Lead {
                epoch,
                until: Some(until),
            }) => {
                let now = Instant::now();
                if until > now {
                    Ok(Grant {
                        epoch,
                        remaining: until - now,
                    })
                } else {
                    Err(NotLeader { leader: None })
                }
            }
            None => Err(NotLeader {
                leader: match self.role() {
                    Role::Follower { leader } => leader,
                    Role::Leader { .. } | Role::Starting => None,
                },
            }),
        }
    }

    /// Steps down at once, releases the key (an explicit release starts no lock-delay,
    /// so a follower takes over in a moment), destroys the session, deregisters the
    /// service, and ends the campaign task. Each request is bounded by
    /// `routing.consul.timeout`. Another clone's `stop` returns without waiting.
    pub async fn stop(self) {
        self.inner.stop.send_replace(true);
        let task = lock(&self.inner.task).take();
        if let Some(task) = task {
            if let Err(error) = task.await {
                if error.is_panic() {
                    tracing::error!(%error, "the leader lease task panicked");
                }
            }
        }
    }

    /// Ends the campaign task the way `kill -9` ends the process: nothing is released,
    /// destroyed or deregistered, so Consul must notice by itself. For tests.
    #[doc(hidden)]
    pub fn abandon(self) {
        if let Some(task) = lock(&self.inner.task).take() {
            task.abort();
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("role", &self.role())
            .finish_non_exhaustive()
    }
}

/// A lease held for `period` from now, then lost (`ZERO`: never held): `gate` says no
/// from then on.
#[cfg(test)]
pub(crate) fn held_for(period: Duration) -> Lease {
    let state = Arc::new(State {
        role: watch::channel(Role::Leader { epoch: 1 }).0,
        lead: watch::channel(Some(Lead {
            epoch: 1,
            until: Some(Instant::now() + period),
        }))
        .0,
    });
    Lease {
        inner: Arc::new(Handle {
            state,
            stop: watch::channel(false).0,
            task: Mutex::new(None),
            agent: None,
        }),
    }
}

/// For agents without `[ha]`: always leader with epoch 0 and no end, so callers need no
/// `Option`; `stop` does nothing.
pub fn solo() -> Lease {
    let state = Arc::new(State {
        role: watch::channel(Role::Leader { epoch: 0 }).0,
        lead: watch::channel(Some(Lead {
            epoch: 0,
            until: None,
        }))
        .0,
    });
    Lease {
        inner: Arc::new(Handle {
            state,
            stop: watch::channel(false).0,
            task: Mutex::new(None),
            agent: None,
        }),
    }
}

// ---------------------------------------------------------------------------------
// The campaign task.
// ---------------------------------------------------------------------------------

/// One Consul session and what this agent knows about it.
struct Session {
    id: String,
    /// The key's value while this agent holds it: who leads, for the followers.
    value: Vec<u8>,
    times: Mutex<Times>,
}

#[derive(Clone, Copy)]
struct Times {
    /// When the last check pass that succeeded was sent.
    passed: Instant,
    /// When the last renewal (or the creation) that succeeded was sent.
    renewed: Instant,
}

impl Session {
    fn passed(&self, sent: Instant) {
        let mut times = lock(&self.times);
        times.passed = times.passed.max(sent);
    }

    fn renewed(&self, sent: Instant) {
        let mut times = lock(&self.times);
        times.renewed = times.renewed.max(sent);
    }

    /// The earliest moment another agent could take the key if this one went silent:
    /// the check (or the session TTL) runs out, then the lock-delay.
    fn lease_end(&self, settings: &LeaseSettings) -> Instant {
        let times = *lock(&self.times);
        (times.passed + settings.check_ttl).min(times.renewed + settings.session_ttl)
            + settings.lock_delay
    }
}

/// A doubling delay between `RETRY_FIRST` and `RETRY_MAX`.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: RETRY_FIRST }
    }

    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(RETRY_MAX);
        delay
    }

    fn reset(&mut self) {
        self.next = RETRY_FIRST;
    }
}

/// Resolves when `stop` is called or every handle is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Sleeps `delay`; true if told to stop meanwhile.
async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = stopped(stop) => true,
        () = sleep(delay) => false,
    }
}

/// The blocking-read index rules: reset when it goes backwards, never below 1.
fn next_index(previous: u64, answered: u64) -> u64 {
    if answered < previous {
        0
    } else {
        answered.max(1)
    }
}

/// Who the key names while a session holds it.
fn holder(entry: &KvEntry) -> LeaderInfo {
    #[derive(Deserialize)]
    struct Value {
        name: String,
        #[serde(default)]
        api: String,
    }
    let text = entry.text();
    match serde_json::from_str::<Value>(&text) {
        Ok(value) => LeaderInfo {
            name: value.name,
            api: value.api,
        },
        // Not pointsman's value: name the holder by what there is.
        Err(_) => LeaderInfo {
            name: format!(
                "the holder of session {} (value {:?})",
                entry.session.as_deref().unwrap_or_default(),
                text.chars().take(80).collect::<String>()
            ),
            api: String::new(),
        },
    }
}

struct Campaign {
    state: Arc<State>,
    settings: LeaseSettings,
    /// Setup, acquire, release: `routing.consul.timeout` each.
    http: Http,
    /// Passes and renewals: never longer than half the check TTL, so a hung one is
    /// retried in time.
    quick: Http,
    /// Blocking reads: the wait, Consul's jitter and the usual limit.
    watching: Http,
    service_id: String,
    check_id: String,
    service_acl: String,
}

impl Campaign {
    fn new(state: Arc<State>, settings: LeaseSettings, http: Http) -> Campaign {
        let quick = http.with_timeout(
            http.timeout().min(settings.check_ttl / 2),
            "half of ha.check_ttl, or routing.consul.timeout if shorter",
        );
        let watching = http.with_timeout(
            WATCH_WAIT + WATCH_WAIT / 16 + http.timeout(),
            "a blocking read's wait plus routing.consul.timeout",
        );
        Campaign {
            state,
            service_id: settings.service_id(),
            check_id: settings.check_id(),
            service_acl: format!("service write on {SERVICE_NAME}"),
            settings,
            http,
            quick,
            watching,
        }
    }

    fn key(&self) -> &str {
        &self.settings.lock_key
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new();
        loop {
            let opened = tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                opened = self.open() => opened,
            };
            let session = match opened {
                Ok(session) => session,
                Err(error) => {
                    let delay = backoff.next();
                    tracing::warn!(
                        lock_key = %self.key(),
                        %error,
                        retry_in = ?delay,
                        "cannot join the leader election"
                    );
                    if sleep_or_stop(delay, &mut stop).await {
                        break;
                    }
                    continue;
                }
            };
            let opened_at = Instant::now();
            let ended = tokio::select! {
                biased;
                () = stopped(&mut stop) => None,
                why = self.hold(&session) => Some(why),
            };
            match ended {
                None => {
                    self.step_down("this agent is stopping");
                    self.close(&session).await;
                    break;
                }
                Some(why) => {
                    self.step_down(&why);
                    tracing::warn!(
                        lock_key = %self.key(),
                        session = %session.id,
                        %why,
                        "lost the Consul session; campaigning again with a new one"
                    );
                    self.close(&session).await;
                    // A session that lived a while says Consul is fine: start over quickly.
                    if opened_at.elapsed() > self.settings.session_ttl {
                        backoff.reset();
                    }
                    if sleep_or_stop(backoff.next(), &mut stop).await {
                        break;
                    }
                }
            }
        }
        self.step_down("this agent is stopping");
        if let Err(error) = self
            .http
            .deregister_service(&self.service_id, &self.service_acl)
            .await
        {
            tracing::warn!(%error, "could not deregister this agent's service; its check lapses and Consul removes it later");
        }
        self.state
            .role
            .send_replace(Role::Follower { leader: None });
    }

    /// Registers the service, passes its check (a re-registered check keeps a critical
    /// status) and creates a session linked to it.
    async fn open(&self) -> Result<Session, ConsulError> {
        let definition = serde_json::json!({
            "ID": self.service_id,
            "Name": SERVICE_NAME,
            "Tags": ["leader-election"],
            "Meta": {
                "pointsman-agent": self.settings.agent.name,
                "pointsman-api": self.settings.agent.api,
                "pointsman-lock-key": self.settings.lock_key,
            },
            "Check": {
                "Name": format!("pointsman agent {} is alive", self.settings.agent.name),
                "Notes": "a TTL check the agent passes four times a TTL; its leader session dies with it",
                "TTL": go_duration(self.settings.check_ttl),
                "DeregisterCriticalServiceAfter": go_duration(DEREGISTER_AFTER),
                "Status": "passing",
            },
        });
        self.http
            .register_service(&definition, &self.service_id, &self.service_acl)
            .await?;
        let passed = Instant::now();
        self.http
            .pass_check(&self.check_id, &self.service_acl)
            .await?;
        let body = serde_json::json!({
            "Name": format!("pointsman leader lease {} of {}", self.settings.lock_key, self.settings.agent.name),
            "TTL": go_duration(self.settings.session_ttl),
            "LockDelay": go_duration(self.settings.lock_delay),
            "Behavior": "release",
            // Naming any node check replaces Consul's default, which is kept.
            "NodeChecks": ["serfHealth"],
            "ServiceChecks": [{"ID": self.check_id}],
        });
        let renewed = Instant::now();
        let id = self.http.session_create(&body).await?;
        let value = serde_json::to_vec(&serde_json::json!({
            "name": self.settings.agent.name,
            "api": self.settings.agent.api,
            "session": id,
        }))
        .expect("plain JSON");
        tracing::debug!(lock_key = %self.key(), session = %id, "session created");
        Ok(Session {
            id,
            value,
            times: Mutex::new(Times { passed, renewed }),
        })
    }

    /// Keeps the session alive and campaigns with it; returns why it ended.
    async fn hold(&self, session: &Session) -> String {
        tokio::select! {
            why = self.keep_alive(session) => why,
            why = self.watchdog(session) => why,
            why = self.campaign(session) => why,
        }
    }

    /// Passes the check and renews the session every quarter of the check TTL, each
    /// counted from when it was sent; extends the lead with every success.
    async fn keep_alive(&self, session: &Session) -> String {
        let period = self.settings.check_ttl / 4;
        let mut failing = false;
        // `open` has just passed the check and created the session.
        let mut next = Instant::now() + period;
        loop {
            sleep_until(next).await;
            let sent = Instant::now();
            next = sent + period;
            let (passed, renewed) = tokio::join!(
                self.quick.pass_check(&self.check_id, &self.service_acl),
                self.quick.session_renew(&session.id),
            );
            let mut trouble = None;
            match renewed {
                Ok(true) => session.renewed(sent),
                Ok(false) => {
                    return format!(
                        "Consul no longer knows session {}: it was invalidated (its check went critical, or it was destroyed)",
                        session.id
                    )
                }
                Err(error) => trouble = Some(error),
            }
            match passed {
                Ok(()) => session.passed(sent),
                Err(error) if error.unexpected_status() == Some(404) => {
                    return format!(
                        "the Consul agent no longer has check {} (restarted, or the service was removed): {error}",
                        self.check_id
                    )
                }
                Err(error) => trouble = Some(error),
            }
            self.extend(session);
            match trouble {
                Some(error) if !failing => {
                    failing = true;
                    tracing::warn!(lock_key = %self.key(), %error, "cannot keep the lease alive; retrying");
                }
                Some(error) => {
                    tracing::debug!(lock_key = %self.key(), %error, "still cannot keep the lease alive")
                }
                None if failing => {
                    failing = false;
                    tracing::info!(lock_key = %self.key(), "the lease is kept alive again");
                }
                None => {}
            }
        }
    }

    /// Moves the end of the lead on after a successful pass or renewal.
    fn extend(&self, session: &Session) {
        let until = session.lease_end(&self.settings) - self.settings.margin();
        self.state.lead.send_if_modified(|lead| match lead {
            Some(lead) if lead.until.is_some_and(|old| old < until) => {
                lead.until = Some(until);
                true
            }
            _ => false,
        });
    }

    /// Ends the hold when the lead runs out before a pass or renewal extends it.
    async fn watchdog(&self, session: &Session) -> String {
        let mut lead = self.state.lead.subscribe();
        loop {
            let until = lead.borrow_and_update().and_then(|l| l.until);
            match until {
                Some(until) => {
                    tokio::select! {
                        () = sleep_until(until) => {}
                        changed = lead.changed() => if changed.is_err() {
                            std::future::pending::<()>().await;
                        },
                    }
                    let still = self.state.lead.borrow().and_then(|l| l.until);
                    if still.is_some_and(|until| until <= Instant::now()) {
                        let times = *lock(&session.times);
                        return format!(
                            "no check pass succeeded for {} (ha.check_ttl is {}) and the lease could pass to another agent in {}: stepping down first",
                            humantime::format_duration(round_ms(times.passed.elapsed())),
                            humantime::format_duration(self.settings.check_ttl),
                            humantime::format_duration(self.settings.margin()),
                        );
                    }
                }
                None => {
                    if lead.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// Watches the key; acquires it while it is free; ends the hold when the key shows
    /// that this agent's lead is over.
    async fn campaign(&self, session: &Session) -> String {
        let mut index = 0;
        let mut refused = false;
        let mut backoff = Backoff::new();
        let mut failing = false;
        let mut last_read = Instant::now() - WATCH_MIN_GAP;
        loop {
            sleep_until(last_read + WATCH_MIN_GAP).await;
            last_read = Instant::now();
            let wait = if refused { ACQUIRE_RETRY } else { WATCH_WAIT };
            let (answered, entry) = match self
                .watching
                .kv_read_local(self.key(), Some((index, wait)))
                .await
            {
                Ok(read) => {
                    if failing {
                        failing = false;
                        tracing::info!(lock_key = %self.key(), "the leader key can be read again");
                    }
                    backoff.reset();
                    read
                }
                Err(error) => {
                    let delay = backoff.next();
                    if !failing {
                        failing = true;
                        tracing::warn!(lock_key = %self.key(), %error, retry_in = ?delay, "cannot read the leader key");
                    }
                    sleep(delay).await;
                    continue;
                }
            };
            index = next_index(index, answered);
            let leading = self.state.lead.borrow().is_some();
            match entry.as_ref().and_then(|e| e.session.clone()) {
                Some(holder_session) if holder_session == session.id => {
                    refused = false;
                    if !leading {
                        // The acquire's answer or the read-back was lost: it is ours.
                        let epoch = entry.as_ref().map_or(0, |e| e.lock_index);
                        self.become_leader(epoch, session);
                    }
                }
                Some(other) => {
                    refused = false;
                    if leading {
                        return format!(
                            "the key {} shows session {other}, not this agent's {}",
                            self.key(),
                            session.id
                        );
                    }
                    let entry = entry.as_ref().expect("a session was read from it");
                    self.follow(Some(holder(entry)));
                }
                None => {
                    if leading {
                        return format!(
                            "the key {} was released or deleted under this agent (by hand?)",
                            self.key()
                        );
                    }
                    self.follow(None);
                    refused = false;
                    match self.acquire(session).await {
                        Ok(true) => {}
                        Ok(false) => refused = true,
                        Err(error) => {
                            let delay = backoff.next();
                            tracing::warn!(lock_key = %self.key(), %error, retry_in = ?delay, "cannot acquire the leader key");
                            sleep(delay).await;
                        }
                    }
                }
            }
        }
    }

    /// Tries to take the key; on success reads its LockIndex back and leads with it.
    /// `Ok(false)`: refused (a lock-delay runs, or another agent was faster).
    async fn acquire(&self, session: &Session) -> Result<bool, ConsulError> {
        if !self
            .http
            .kv_acquire(self.key(), &session.id, &session.value)
            .await?
        {
            return Ok(false);
        }
        match self.http.kv_read_local(self.key(), None).await {
            Ok((_, Some(entry))) if entry.session.as_deref() == Some(session.id.as_str()) => {
                self.become_leader(entry.lock_index, session);
            }
            // Lost again already, or unreadable: the watch's next read decides.
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(lock_key = %self.key(), %error, "acquired the leader key but cannot read its epoch; reading again");
            }
        }
        Ok(true)
    }

    fn become_leader(&self, epoch: u64, session: &Session) {
        let until = session.lease_end(&self.settings) - self.settings.margin();
        // The clock first: whoever sees the new role finds the gate open.
        self.state.lead.send_replace(Some(Lead {
            epoch,
            until: Some(until),
        }));
        self.state.role.send_replace(Role::Leader { epoch });
        tracing::info!(
            lock_key = %self.key(),
            epoch,
            agent = %self.settings.agent.name,
            session = %session.id,
            "became leader"
        );
    }

    fn follow(&self, leader: Option<LeaderInfo>) {
        let role = Role::Follower { leader };
        let changed = self.state.role.send_if_modified(|current| {
            if *current == role {
                false
            } else {
                *current = role.clone();
                true
            }
        });
        if changed {
            if let Role::Follower {
                leader: Some(leader),
            } = &role
            {
                tracing::info!(lock_key = %self.key(), leader = %leader.name, api = %leader.api, "following");
            }
        }
    }

    /// Stops acting at once: the gate closes before the role changes.
    fn step_down(&self, why: &str) {
        let was = self.state.lead.send_replace(None);
        self.state.role.send_if_modified(|role| {
            if matches!(role, Role::Leader { .. }) {
                *role = Role::Follower { leader: None };
                true
            } else {
                false
            }
        });
        if let Some(lead) = was {
            tracing::warn!(lock_key = %self.key(), epoch = lead.epoch, %why, "stepped down");
        }
    }

    /// Lets the key go (no lock-delay follows an explicit release) and destroys the
    /// session; best effort, each request bounded.
    async fn close(&self, session: &Session) {
        match self
            .http
            .kv_release(self.key(), &session.id, &session.value)
            .await
        {
            Ok(true) => {
                tracing::info!(lock_key = %self.key(), "released the leader key");
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(lock_key = %self.key(), %error, "could not release the leader key; Consul frees it when the session dies");
            }
        }
        if let Err(error) = self.http.session_destroy(&session.id).await {
            tracing::warn!(lock_key = %self.key(), session = %session.id, %error, "could not destroy the session; its check lapses and Consul ends it");
        }
    }
}

fn round_ms(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> HumanDuration {
        HumanDuration(Duration::from_millis(n))
    }

    #[test]
    fn defaults_are_valid_and_name_the_key_after_the_caller() {
        let ha = HaConfig::default();
        assert!(!ha.enabled);
        assert_eq!(ha.check(), Vec::<(String, String)>::new());
        let settings = LeaseSettings::new(
            &ha,
            ConsulSettings {
                config: Default::default(),
                token: None,
            },
            "demo cluster",
            LeaderInfo {
                name: "db-admin-1 10.0.0.5:8080".into(),
                api: "http://10.0.0.5:8080".into(),
            },
        );
        assert_eq!(settings.lock_key, "pointsman/leader/demo-cluster");
        assert_eq!(settings.check_ttl, Duration::from_millis(1500));
        assert_eq!(settings.margin(), Duration::from_millis(300));
        assert_eq!(
            settings.service_id(),
            "pointsman-db-admin-1-10-0-0-5-8080-pointsman-leader-demo-cluster"
        );
        assert!(check_key(&settings.lock_key).is_ok());
    }

    #[test]
    fn out_of_range_values_are_named_by_key() {
        let keys =
            |ha: HaConfig| -> Vec<String> { ha.check().into_iter().map(|(k, _)| k).collect() };
        let base = HaConfig::default();
        assert_eq!(
            keys(HaConfig {
                session_ttl: ms(5_000),
                ..base.clone()
            }),
            ["ha.session_ttl"]
        );
        assert_eq!(
            keys(HaConfig {
                session_ttl: HumanDuration(Duration::from_secs(86_401)),
                ..base.clone()
            }),
            ["ha.session_ttl"]
        );
        assert_eq!(
            keys(HaConfig {
                lock_delay: ms(61_000),
                ..base.clone()
            }),
            ["ha.lock_delay"]
        );
        assert_eq!(
            keys(HaConfig {
                check_ttl: ms(0),
                ..base.clone()
            }),
            ["ha.check_ttl"]
        );
        assert_eq!(
            keys(HaConfig {
                check_ttl: ms(10_000),
                ..base.clone()
            }),
            ["ha.check_ttl"]
        );
        for bad in [
            "/pointsman/leader",
            "pointsman/leader/db1:3306",
            "pointsman/",
            "x.json",
        ] {
            assert_eq!(
                keys(HaConfig {
                    lock_key: Some(bad.into()),
                    ..base.clone()
                }),
                ["ha.lock_key"],
                "{bad}"
            );
        }
        assert!(keys(HaConfig {
            lock_delay: ms(0),
            ..base
        })
        .is_empty());
    }

    #[test]
    fn blocking_read_indexes_reset_backwards_and_stay_positive() {
        assert_eq!(next_index(0, 0), 1);
        assert_eq!(next_index(5, 7), 7);
        assert_eq!(next_index(5, 5), 5);
        assert_eq!(next_index(9, 3), 0);
    }

    #[test]
    fn solo_always_leads_at_epoch_zero() {
        let lease = solo();
        assert_eq!(lease.role(), Role::Leader { epoch: 0 });
        let grant = lease.gate().expect("solo leads");
        assert_eq!(grant.epoch, 0);
        assert!(grant.remaining > Duration::from_secs(3600));
    }

    #[test]
    fn not_leader_names_the_leader() {
        let error = NotLeader {
            leader: Some(LeaderInfo {
                name: "b".into(),
                api: "http://10.0.0.6:8080".into(),
            }),
        };
        assert!(error.to_string().contains("b (http://10.0.0.6:8080) does"));
    }
}
