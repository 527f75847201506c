//! The leader lease (src/leader.rs) against the Consul stand-in (tests/support/consul.rs):
//! of three agents exactly one leads and the others name it; a killed leader is replaced
//! once its lease has run out and not before; a cleanly stopped one hands over at once;
//! a leader cut off from Consul steps down before anyone else may take over, and every
//! new leader has a higher epoch. Safety orderings are checked against the moments the
//! stand-in saw (its request log and its lock grants), never against a client's belief.
//! No database is needed.

mod support;

use pointsman::config::{ConsulConfig, ConsulSettings, HumanDuration};
use pointsman::leader::{HaConfig, LeaderInfo, Lease, LeaseSettings, Role};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::consul::{ConsulOptions, ConsulStandIn};
use support::eventually;
use support::proxy::{Mode, Proxy};
use tokio::time::Instant;

const KEY: &str = "pointsman/leader/test";
const CHECK_TTL: Duration = Duration::from_secs(1);
const LOCK_DELAY: Duration = Duration::from_millis(500);
const SESSION_TTL: Duration = Duration::from_secs(10);

fn ha() -> HaConfig {
    HaConfig {
        enabled: true,
        lock_key: Some(KEY.into()),
        agent_name: None,
        check_ttl: HumanDuration(CHECK_TTL),
        lock_delay: HumanDuration(LOCK_DELAY),
        session_ttl: HumanDuration(SESSION_TTL),
    }
}

fn settings(address: &str, name: &str) -> LeaseSettings {
    let consul = ConsulSettings {
        config: ConsulConfig {
            address: Some(address.to_string()),
            timeout: HumanDuration(Duration::from_secs(1)),
            ..ConsulConfig::default()
        },
        token: None,
    };
    LeaseSettings::new(&ha(), consul, "test", info(name))
}

fn info(name: &str) -> LeaderInfo {
    LeaderInfo {
        name: name.to_string(),
        api: format!("http://{name}.test:8080"),
    }
}

/// One agent's lease, with every role it took and whether its gate was open, as a
/// watcher thread saw them. A thread polling every millisecond, not a task: what it
/// records lags by the OS's scheduling only, never by a busy async runtime's.
struct Agent {
    name: String,
    settings: LeaseSettings,
    lease: Lease,
    history: Arc<Mutex<Vec<Seen>>>,
    watching: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
    /// Cuts this agent (and only it) off from Consul, when it talks through one.
    proxy: Option<Proxy>,
}

#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    role: Role,
    gate_open: bool,
}

impl Agent {
    async fn start(consul: &ConsulStandIn, name: &str) -> Agent {
        Self::start_at(&consul.url(), name, None).await
    }

    async fn start_behind_proxy(consul: &ConsulStandIn, name: &str) -> Agent {
        let proxy = Proxy::start(consul.address()).await.expect("proxy");
        let url = format!("http://{}", proxy.address());
        Self::start_at(&url, name, Some(proxy)).await
    }

    async fn start_at(url: &str, name: &str, proxy: Option<Proxy>) -> Agent {
        let settings = settings(url, name);
        let lease = Lease::start(settings.clone()).await.expect("lease starts");
        let history = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let watching = Arc::new(AtomicBool::new(true));
        let watcher = std::thread::spawn({
            let (lease, history, watching) = (lease.clone(), history.clone(), watching.clone());
            move || {
                while watching.load(Ordering::Relaxed) {
                    let seen = Seen {
                        at: Instant::now(),
                        role: lease.role(),
                        gate_open: lease.gate().is_ok(),
                    };
                    let mut history = history.lock().unwrap();
                    let changed = history.last().is_none_or(|last| {
                        last.role != seen.role || last.gate_open != seen.gate_open
                    });
                    if changed {
                        history.push(seen);
                    }
                    drop(history);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        Agent {
            name: name.to_string(),
            settings,
            lease,
            history,
            watching,
            watcher: Some(watcher),
            proxy,
        }
    }

    fn role(&self) -> Role {
        self.lease.role()
    }

    fn epoch(&self) -> Option<u64> {
        match self.role() {
            Role::Leader { epoch } => Some(epoch),
            _ => None,
        }
    }

    fn history(&self) -> Vec<Seen> {
        self.history.lock().unwrap().clone()
    }

    /// When this agent was first seen not leading after `after`.
    fn stepped_down_after(&self, after: Instant) -> Option<Instant> {
        self.history()
            .into_iter()
            .find(|seen| seen.at >= after && !matches!(seen.role, Role::Leader { .. }))
            .map(|seen| seen.at)
    }

    /// When this agent's gate was first seen shut after `after`.
    fn gate_shut_after(&self, after: Instant) -> Option<Instant> {
        self.history()
            .into_iter()
            .find(|seen| seen.at >= after && !seen.gate_open)
            .map(|seen| seen.at)
    }

    /// When this agent was first seen leading.
    fn led_at(&self) -> Option<Instant> {
        self.history()
            .into_iter()
            .find(|seen| matches!(seen.role, Role::Leader { .. }))
            .map(|seen| seen.at)
    }

    /// The server's arrival times of this agent's check passes.
    fn passes_seen(&self, consul: &ConsulStandIn) -> Vec<Instant> {
        let path = format!("/v1/agent/check/pass/{}", self.settings.check_id());
        consul
            .requests_at()
            .into_iter()
            .filter(|(_, method, p)| method == "PUT" && *p == path)
            .map(|(at, _, _)| at)
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.watching.store(false, Ordering::Relaxed);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

/// Waits until exactly one agent leads and every other one names it; returns its index.
/// Three agents campaigning on `consul`, started one after the other.
async fn three_agents(consul: &ConsulStandIn) -> [Agent; 3] {
    [
        Agent::start(consul, "agent-a").await,
        Agent::start(consul, "agent-b").await,
        Agent::start(consul, "agent-c").await,
    ]
}

async fn one_leader(agents: &[&Agent], within: Duration) -> usize {
    eventually(within, "one leader, named by every follower", || async {
        let leaders: Vec<usize> = (0..agents.len())
            .filter(|i| agents[*i].epoch().is_some())
            .collect();
        let [leader] = leaders[..] else {
            return None;
        };
        let named = info(&agents[leader].name);
        let others_agree = agents.iter().enumerate().all(|(i, agent)| {
            i == leader
                || agent.role()
                    == Role::Follower {
                        leader: Some(named.clone()),
                    }
        });
        others_agree.then_some(leader)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_three_agents_exactly_one_leads_and_the_others_name_it() {
    let consul = ConsulStandIn::start(ConsulOptions::default()).await;
    let [a, b, c] = three_agents(&consul).await;
    let agents = [&a, &b, &c];
    let leader = one_leader(&agents, Duration::from_secs(10)).await;
    let epoch = agents[leader].epoch().expect("leads");
    let entry = consul.kv_entry(KEY).expect("the lock key exists");
    assert_eq!(entry.lock_index, epoch, "the epoch is the key's LockIndex");
    let value: serde_json::Value = serde_json::from_slice(&entry.value.unwrap()).unwrap();
    assert_eq!(value["name"], agents[leader].name.as_str());
    assert_eq!(value["api"], info(&agents[leader].name).api.as_str());
    assert_eq!(value["session"], entry.session.unwrap().as_str());

    // Over several check TTLs (passes, renewals, blocking reads going on), the same
    // single agent leads, its gate alone opens, and it alone is named.
    let until = Instant::now() + CHECK_TTL * 4;
    while Instant::now() < until {
        let grants: Vec<usize> = (0..3).filter(|i| agents[*i].lease.gate().is_ok()).collect();
        assert_eq!(grants, [leader], "gates open: {grants:?}");
        assert_eq!(agents[leader].epoch(), Some(epoch));
        for (i, agent) in agents.iter().enumerate().filter(|(i, _)| *i != leader) {
            let refused = agent.lease.gate().unwrap_err();
            assert_eq!(
                refused.leader,
                Some(info(&agents[leader].name)),
                "agent {i}"
            );
            assert!(refused.to_string().contains(&agents[leader].name));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for agent in agents {
        let history = agent.history();
        let is_leader = |seen: &Seen| matches!(seen.role, Role::Leader { .. });
        let leads = history
            .iter()
            .enumerate()
            .filter(|(i, seen)| is_leader(seen) && (*i == 0 || !is_leader(&history[i - 1])))
            .count();
        let expected = usize::from(agent.name == agents[leader].name);
        assert_eq!(leads, expected, "{} led {leads} times", agent.name);
    }
    let grant = agents[leader].lease.gate().unwrap();
    assert_eq!(grant.epoch, epoch);
    assert!(
        grant.remaining > Duration::ZERO
            && grant.remaining <= CHECK_TTL + LOCK_DELAY - CHECK_TTL / 5,
        "{grant:?}"
    );
    for agent in [a, b, c] {
        agent.lease.clone().stop().await;
    }
    assert!(consul.sessions().is_empty(), "every session destroyed");
    assert!(consul.services().is_empty(), "every service deregistered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_once_its_lease_ran_out_and_not_before() {
    let consul = ConsulStandIn::start(ConsulOptions::default()).await;
    let [a, b, c] = three_agents(&consul).await;
    let agents = [&a, &b, &c];
    let leader = one_leader(&agents, Duration::from_secs(10)).await;
    let old_epoch = agents[leader].epoch().unwrap();
    let old = agents[leader].lease.clone();
    // Let it lead through a few passes first.
    eventually(CHECK_TTL * 3, "a few passes by the leader", || async {
        (agents[leader].passes_seen(&consul).len() >= 4).then_some(())
    })
    .await;

    let killed_at = Instant::now();
    agents[leader].lease.clone().abandon();
    let followers: Vec<&Agent> = (0..3).filter(|i| *i != leader).map(|i| agents[i]).collect();
    let next = eventually(
        CHECK_TTL + LOCK_DELAY + Duration::from_secs(3),
        "another agent to lead",
        || async { followers.iter().position(|f| f.led_at().is_some()) },
    )
    .await;
    let new_leader = followers[next];
    let seen_leading = new_leader.led_at().expect("it leads");

    // What the server saw: the old leader's last pass, and when the lock went to the new one.
    let last_pass = *agents[leader]
        .passes_seen(&consul)
        .last()
        .expect("the old leader passed its check");
    let grant = consul.acquisitions(KEY).last().cloned().expect("a grant");
    let entry = consul.kv_entry(KEY).unwrap();
    assert_eq!(entry.session.as_deref(), Some(grant.session.as_str()));
    assert!(
        grant.at >= last_pass + CHECK_TTL + LOCK_DELAY,
        "the lock passed on {:?} after the old leader's last pass, before check_ttl + lock_delay ({:?})",
        grant.at - last_pass,
        CHECK_TTL + LOCK_DELAY
    );
    // Replaced within about check_ttl + lock_delay (+ the retry period): the bound is
    // generous, the ordering above is not.
    let took = seen_leading - killed_at;
    assert!(
        took < CHECK_TTL + LOCK_DELAY + Duration::from_secs(2),
        "replacement took {took:?}"
    );
    assert!(new_leader.epoch().unwrap() > old_epoch);
    // The dead agent's own gate shut by itself (its role frozen at Leader) before
    // anyone else could lead.
    let shut = eventually(
        Duration::from_secs(1),
        "the frozen leader's gate to shut",
        || async { agents[leader].gate_shut_after(killed_at) },
    )
    .await;
    assert!(
        shut < grant.at,
        "the frozen leader's gate shut {:?} after the lock went on",
        shut - grant.at
    );
    assert!(old.gate().is_err(), "a frozen leader's gate stays shut");
    let remaining: Vec<&Agent> = followers.into_iter().collect();
    let leader_now = one_leader(&remaining, Duration::from_secs(5)).await;
    assert_eq!(remaining[leader_now].name, new_leader.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_hands_over_at_once() {
    let consul = ConsulStandIn::start(ConsulOptions::default()).await;
    let [a, b, c] = three_agents(&consul).await;
    let agents = [&a, &b, &c];
    let leader = one_leader(&agents, Duration::from_secs(10)).await;
    let old_epoch = agents[leader].epoch().unwrap();
    let service = agents[leader].settings.service_id();
    assert!(consul.services().iter().any(|s| s.id == service));

    let stopping = Instant::now();
    agents[leader].lease.clone().stop().await;
    assert_eq!(agents[leader].role(), Role::Follower { leader: None });
    assert!(agents[leader].lease.gate().is_err());
    let followers: Vec<&Agent> = (0..3).filter(|i| *i != leader).map(|i| agents[i]).collect();
    let next = eventually(Duration::from_secs(3), "another agent to lead", || async {
        followers.iter().position(|f| f.led_at().is_some())
    })
    .await;
    let new_leader = followers[next];
    let took = new_leader.led_at().unwrap() - stopping;
    assert!(
        took < Duration::from_millis(500),
        "the handover took {took:?}"
    );
    let grant = consul.acquisitions(KEY).last().cloned().unwrap();
    assert!(grant.at - stopping < Duration::from_millis(500));
    assert!(new_leader.epoch().unwrap() > old_epoch);
    // Nothing of the stopped agent is left in Consul.
    assert!(!consul.services().iter().any(|s| s.id == service));
    assert_eq!(consul.sessions().len(), 2, "{:?}", consul.sessions());
    let remaining: Vec<&Agent> = followers.into_iter().collect();
    one_leader(&remaining, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_consul_steps_down_before_another_may_lead() {
    let consul = ConsulStandIn::start(ConsulOptions::default()).await;
    let a = Agent::start_behind_proxy(&consul, "agent-a").await;
    let b = Agent::start_behind_proxy(&consul, "agent-b").await;
    let c = Agent::start_behind_proxy(&consul, "agent-c").await;
    let agents = [&a, &b, &c];
    let first = one_leader(&agents, Duration::from_secs(10)).await;
    let mut epochs = vec![agents[first].epoch().unwrap()];

    let cut_at = Instant::now();
    agents[first].proxy.as_ref().unwrap().set(Mode::Blackhole);
    let followers: Vec<&Agent> = (0..3).filter(|i| *i != first).map(|i| agents[i]).collect();
    let next = eventually(
        CHECK_TTL + LOCK_DELAY + Duration::from_secs(3),
        "another agent to lead",
        || async { followers.iter().position(|f| f.led_at().is_some()) },
    )
    .await;
    let second = followers[next];
    let grant = consul.acquisitions(KEY).last().cloned().unwrap();
    // Seen by its watcher thread, which may be a moment behind the other agent's.
    let stepped_down = eventually(
        Duration::from_secs(1),
        "the cut-off leader to step down",
        || async { agents[first].stepped_down_after(cut_at) },
    )
    .await;
    assert!(
        stepped_down < grant.at,
        "the cut-off leader stepped down {:?} after the lock went to {}",
        stepped_down - grant.at,
        second.name
    );
    assert!(stepped_down < second.led_at().unwrap());
    let shut = agents[first].gate_shut_after(cut_at).unwrap();
    assert!(
        shut <= stepped_down,
        "the gate shuts first, then the role changes"
    );
    assert!(agents[first].lease.gate().is_err());
    let last_pass = *agents[first].passes_seen(&consul).last().unwrap();
    assert!(grant.at >= last_pass + CHECK_TTL + LOCK_DELAY);
    epochs.push(second.epoch().unwrap());

    // Healed, the old leader comes back as a follower of the new one.
    agents[first].proxy.as_ref().unwrap().set(Mode::Forward);
    eventually(
        Duration::from_secs(20),
        "the old leader to follow the new one",
        || async {
            (agents[first].role()
                == Role::Follower {
                    leader: Some(info(&second.name)),
                })
            .then_some(())
        },
    )
    .await;

    // And the next leader's epoch is higher again.
    second.lease.clone().stop().await;
    let rest: Vec<&Agent> = agents
        .iter()
        .copied()
        .filter(|agent| agent.name != second.name)
        .collect();
    let third = one_leader(&rest, Duration::from_secs(5)).await;
    epochs.push(rest[third].epoch().unwrap());
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "epochs across leaders: {epochs:?}"
    );
}

#[tokio::test]
async fn ha_settings_out_of_range_are_refused_by_key() {
    assert!(HaConfig::default().check().is_empty());
    let defaults: HaConfig = toml::from_str("").unwrap();
    assert_eq!(defaults, HaConfig::default());
    assert_eq!(defaults.check_ttl.0, Duration::from_millis(1500));
    assert_eq!(defaults.lock_delay.0, Duration::from_secs(1));
    assert_eq!(defaults.session_ttl.0, Duration::from_secs(10));
    assert!(toml::from_str::<HaConfig>("check_tll = \"1s\"").is_err());

    let cases = [
        ("session_ttl = \"5s\"", "ha.session_ttl", "10s..24h"),
        ("session_ttl = \"25h\"", "ha.session_ttl", "10s..24h"),
        ("lock_delay = \"61s\"", "ha.lock_delay", "60s"),
        ("check_ttl = \"0s\"", "ha.check_ttl", "at least"),
        (
            "check_ttl = \"10s\"",
            "ha.check_ttl",
            "shorter than ha.session_ttl",
        ),
        ("lock_key = \"/pointsman/leader\"", "ha.lock_key", "'/'"),
        (
            "lock_key = \"pointsman/leader/db1:3306\"",
            "ha.lock_key",
            "':'",
        ),
        (
            "lock_key = \"pointsman/leader/db.example.com\"",
            "ha.lock_key",
            ".com",
        ),
    ];
    for (toml_text, key, says) in cases {
        let ha: HaConfig = toml::from_str(toml_text).unwrap();
        let problems = ha.check();
        assert_eq!(problems.len(), 1, "{toml_text}: {problems:?}");
        assert_eq!(problems[0].0, key, "{toml_text}");
        assert!(
            problems[0].1.contains(says),
            "{toml_text}: {}",
            problems[0].1
        );
    }

    // Without Consul, a lease never leads: it stays Starting and names no leader.
    let unreachable = Lease::start(settings("http://127.0.0.1:1", "agent-a"))
        .await
        .unwrap();
    assert_eq!(unreachable.role(), Role::Starting);
    // Nothing to await: what is checked is that nothing happens while it retries.
    tokio::time::sleep(CHECK_TTL).await;
    assert_eq!(unreachable.role(), Role::Starting);
    let refused = unreachable.gate().unwrap_err();
    assert_eq!(refused.leader, None);
    assert!(
        refused.to_string().contains("no leader is known"),
        "{refused}"
    );
    tokio::time::timeout(Duration::from_secs(5), unreachable.stop())
        .await
        .expect("stop is bounded when Consul is down");

    // A lease is not started on settings Consul would refuse.
    let mut bad = settings("http://127.0.0.1:1", "agent-a");
    bad.lock_delay = Duration::from_secs(90);
    let error = Lease::start(bad).await.unwrap_err();
    assert!(error.to_string().contains("ha.lock_delay"), "{error}");
    let mut no_consul = settings("http://127.0.0.1:1", "agent-a");
    no_consul.consul.config.address = None;
    let error = Lease::start(no_consul).await.unwrap_err();
    assert!(
        error.to_string().contains("routing.consul.address"),
        "{error}"
    );
}
