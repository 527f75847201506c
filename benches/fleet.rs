//! What one agent costs as the fleet grows (`cargo bench --bench fleet`): the real
//! `pointsman run` process watching simulated MySQL 9.7 fleets
//! (`tests/support/fleet.rs`) of 100, 1,000, 3,000 and 10,000 instances in clusters of
//! three (BENCH_SIZES, comma-separated), polling every second. For each size, once
//! every instance is probed and steady for BENCH_SECONDS (default 20):
//!
//! - the agent's CPU (% of one core) and RSS, read from /proc; the simulator's CPU apart
//!   (this process and its helpers);
//! - statements per instance per second, and the CPU each probe costs;
//! - probe latency p50/p99 (the agent's `pointsman_poll_seconds`), and how old the
//!   newest facts of sampled instances are (every instance probed every second?);
//! - `GET /api/v1/clusters` and one cluster's detail, median of 10;
//! - the dashboard in headless Chromium (`web-tests/first-paint.mjs`; BENCH_PAGE=0
//!   skips it): first contentful paint, the list usable with every cluster counted,
//!   the next page and a filter drawn;
//! - kill -9 → the agent's recovery started (the failure judged: from its record) and
//!   → new primary writable for one cluster, medians of BENCH_FAILOVERS (10); as many
//!   again while two API clients read `GET /api/v1/clusters` back to back (dashboards
//!   and scrapers); and 10 clusters killed at once → all writable.
//!
//! BENCH_LOG sets the agent's `log.level` (default `error`), e.g.
//! `error,pointsman::discovery=trace,pointsman::recovery=info` to see when a kill was
//! noticed, confirmed and recovered; with it, the benchmark says when it killed each
//! primary (`killed <primary> at <time>`), on the same clock as the agent's log.
//!
//! Every instance listens on its own 127.B.x.y:3306. The simulator holds a listening
//! socket and the agent's connection per instance, and room for more (probes asked for
//! now, a failover's): what does not fit in this process's open-file limit runs in more
//! processes of this benchmark (`FLEET_SHARD_CLUSTERS`), each with its own B. The agent
//! needs one connection per instance and refuses instances past its limit: a size it
//! could not watch is skipped, saying so.

// The bench uses the part of the test support that starts, kills and reads a fleet.
#[allow(dead_code)]
#[path = "../tests/support/fleet.rs"]
mod fleet;
#[allow(dead_code)]
#[path = "../tests/support/wire.rs"]
mod wire;

/// mimalloc, as the agent has (src/main.rs): the simulator's answers are many small
/// buffers too, and the less of the two cores the stand-in for the servers takes, the
/// less it measures itself.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use fleet::{Fleet, FleetOptions};
use std::time::{Duration, Instant};

const USER: &str = "pointsman";
const PASSWORD: &str = "fleet-bench";

#[derive(Default)]
struct Row {
    instances: usize,
    agent_cpu: f64,
    agent_rss: f64,
    fleet_cpu: f64,
    statements_per_instance: f64,
    cpu_per_probe_ms: f64,
    probe_p50_ms: f64,
    probe_p99_ms: f64,
    oldest_facts_ms: f64,
    api_clusters_ms: f64,
    /// The API's backroom thread (`pointsman-backroom`, where the list is built) per
    /// `GET /api/v1/clusters`, mean ms: on a core, and ready but waiting for one.
    backroom_running_ms: f64,
    backroom_waiting_ms: f64,
    api_cluster_ms: f64,
    /// The page in headless Chromium: list usable, first contentful paint, next page
    /// and filter, in ms (`None` without node or Chromium, or with BENCH_PAGE=0).
    page: Option<PageTimes>,
    detected_median_ms: f64,
    failover_median_ms: f64,
    failover_n: usize,
    /// The same while `READERS` API clients read `GET /api/v1/clusters` back to back.
    failover_read_median_ms: f64,
    failover_read_n: usize,
    ten_at_once_ms: f64,
    /// The recoveries' thread during one failover alone (kill → seen writable), median
    /// ms: on a core, and ready but waiting for one (`/proc/<pid>/task/<tid>/schedstat`).
    lane_running_ms: f64,
    lane_waiting_ms: f64,
    skipped: Option<String>,
}

#[tokio::main]
async fn main() {
    if let Ok(clusters) = std::env::var(SHARD_CLUSTERS) {
        return shard(clusters.parse().expect("a number of clusters")).await;
    }
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000,3000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let seconds: u64 = env_number("BENCH_SECONDS", 20);
    let failovers: usize = env_number("BENCH_FAILOVERS", 10);
    pointsman::routing::consul::install_crypto_provider();
    let files = raise_file_limit();
    let mut rows = Vec::new();
    for size in sizes {
        let clusters = size.div_ceil(3);
        // The agent's own bound (it refuses instances past it): one connection each.
        let agent_can_watch = files.saturating_sub(256);
        if (clusters * 3) as u64 > agent_can_watch {
            rows.push(Row {
                instances: clusters * 3,
                skipped: Some(format!(
                    "not run: an agent may watch at most {agent_can_watch} instances here (the hard RLIMIT_NOFILE of {files}, which even root cannot raise on this machine, at one connection each)"
                )),
                ..Row::default()
            });
            continue;
        }
        rows.push(measure(clusters, seconds, failovers, files).await);
    }
    print_table(&rows, seconds);
}

/// Set for a process of this benchmark that only simulates part of the fleet.
const SHARD_CLUSTERS: &str = "FLEET_SHARD_CLUSTERS";

/// A part of the fleet in a process of its own (a process may hold only so many
/// sockets): starts its clusters, prints their primaries as one JSON line, and runs
/// until its standard input closes (the benchmark is done or gone).
async fn shard(clusters: usize) {
    let fleet = Fleet::start(FleetOptions {
        clusters,
        replicas: 2,
        user: USER.into(),
        password: PASSWORD.into(),
    })
    .await
    .expect("the shard listens");
    println!("{}", serde_json::json!(fleet.primaries()));
    let mut rest = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut rest).await;
    drop(fleet);
}

/// The simulator's other processes, each with its own addresses; they stop with it.
struct Shards {
    children: Vec<tokio::process::Child>,
    primaries: Vec<String>,
}

impl Shards {
    /// Starts `clusters` clusters in processes of at most `per_process` each.
    async fn start(clusters: usize, per_process: usize) -> Shards {
        let mut shards = Shards {
            children: Vec::new(),
            primaries: Vec::new(),
        };
        let own = fleet::address_block();
        let mut left = clusters;
        while left > 0 {
            let these = left.min(per_process);
            left -= these;
            let block = 16 + (own as usize - 16 + 1 + shards.children.len()) % 200;
            let mut child =
                tokio::process::Command::new(std::env::current_exe().expect("this benchmark"))
                    .env(SHARD_CLUSTERS, these.to_string())
                    .env("FLEET_ADDRESS_BLOCK", block.to_string())
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("start a shard of the simulator");
            let stdout = child.stdout.take().expect("piped");
            let mut line = String::new();
            tokio::io::AsyncBufReadExt::read_line(
                &mut tokio::io::BufReader::new(stdout),
                &mut line,
            )
            .await
            .expect("the shard's primaries");
            let primaries: Vec<String> =
                serde_json::from_str(&line).expect("a JSON list of primaries");
            shards.primaries.extend(primaries);
            shards.children.push(child);
        }
        shards
    }

    fn cpu_ticks(&self) -> u64 {
        self.children
            .iter()
            .filter_map(tokio::process::Child::id)
            .map(cpu_ticks)
            .sum()
    }
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit; returns the limit.
fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

async fn measure(clusters: usize, seconds: u64, failovers: usize, files: u64) -> Row {
    // A listening socket and the agent's connection per simulated instance, with room
    // for as many again: what does not fit in this process goes to others (failovers
    // are timed on this one's clusters).
    let per_process = (files.saturating_sub(300) / 9) as usize;
    let own = clusters.min(per_process);
    let shards = Shards::start(clusters - own, per_process).await;
    let fleet = Fleet::start(FleetOptions {
        clusters: own,
        replicas: 2,
        user: USER.into(),
        password: PASSWORD.into(),
    })
    .await
    .expect("the fleet listens");
    let instances = clusters * 3;
    let dir = tempfile::Builder::new()
        .prefix("pm-fleet-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("address").port()
    };
    let seeds: Vec<String> = fleet
        .primaries()
        .iter()
        .chain(&shards.primaries)
        .map(|k| format!("\"{k}\""))
        .collect();
    let config = dir.path().join("fleet.toml");
    std::fs::write(
        &config,
        format!(
            "[mysql]\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\n[discovery]\nseeds = [{}]\npoll_interval = \"1s\"\n\
             [store]\npath = \"{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[log]\nlevel = \"{}\"\n\
             [recovery]\nauto_clusters = [\".\"]\nreplication_user = \"repl\"\nreplication_password = \"repl-bench\"\n",
            seeds.join(", "),
            dir.path().join("fleet.db").display(),
            std::env::var("BENCH_LOG").unwrap_or_else(|_| "error".into())
        ),
    )
    .expect("write config");
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_pointsman"))
        .args(["run", "--config"])
        .arg(&config)
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent");
    let pid = agent.id().expect("pid");
    let api = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // Every instance probed, every cluster whole.
    let started = Instant::now();
    loop {
        if let Ok(summaries) = get_json(&http, &format!("{api}/api/v1/clusters")).await {
            let list = summaries.as_array().cloned().unwrap_or_default();
            let whole = list
                .iter()
                .filter(|c| {
                    c["instance_count"].as_u64() == Some(3) && c["health"]["status"] == "ok"
                })
                .count();
            if whole == clusters {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120 + instances as u64 / 20),
            "the agent did not see {clusters} healthy clusters; the fleet: {:?}",
            fleet.statements()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The steady state.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (agent_start, fleet_start) = (
        cpu_ticks(pid),
        cpu_ticks(std::process::id()) + shards.cpu_ticks(),
    );
    let (answered_start, _, _) = fleet.statements();
    let steady = Instant::now();
    let mut rss: f64 = 0.0;
    while steady.elapsed() < Duration::from_secs(seconds) {
        rss = rss.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = steady.elapsed().as_secs_f64();
    let agent_cpu_seconds = (cpu_ticks(pid) - agent_start) as f64 / ticks;
    let fleet_cpu_seconds =
        (cpu_ticks(std::process::id()) + shards.cpu_ticks() - fleet_start) as f64 / ticks;
    let (answered_end, _, _) = fleet.statements();
    let probes = instances as f64 * elapsed; // one probe per instance per second

    let metrics = http
        .get(format!("{api}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let mut poll: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("pointsman_poll_seconds{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    poll.sort_by(f64::total_cmp);

    // How old the facts of sampled clusters are now.
    let names: Vec<String> = fleet
        .primaries()
        .into_iter()
        .step_by((clusters / 20).max(1))
        .collect();
    let mut oldest: f64 = 0.0;
    for name in &names {
        if let Ok(detail) = get_json(&http, &format!("{api}/api/v1/clusters/{name}")).await {
            for view in detail["instances"].as_array().cloned().unwrap_or_default() {
                if let Some(seen) = view["last_seen"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                {
                    let age = std::time::SystemTime::now()
                        .duration_since(seen)
                        .unwrap_or_default();
                    oldest = oldest.max(age.as_secs_f64() * 1000.0);
                }
            }
        }
    }

    let backroom = ThreadClock::find(pid, "pointsman-backr");
    let backroom_before = backroom.as_ref().and_then(ThreadClock::read);
    let api_clusters_ms = median_ms(&format!("{api}/api/v1/clusters"), 10).await;
    let (backroom_running_ms, backroom_waiting_ms) = backroom_before
        .zip(backroom.as_ref().and_then(ThreadClock::read))
        .map_or(
            (f64::NAN, f64::NAN),
            |((ran, waited), (ran_then, waited_then))| {
                (
                    (ran_then - ran) as f64 / 1e6 / 10.0,
                    (waited_then - waited) as f64 / 1e6 / 10.0,
                )
            },
        );
    let api_cluster_ms = median_ms(&format!("{api}/api/v1/clusters/{}", names[0]), 10).await;
    let page = first_paint(&api, clusters).await;

    // Failovers, one cluster at a time, then as many again while API clients read every
    // cluster, then ten at once; never the same cluster twice.
    let mut primaries = fleet.primaries().into_iter();
    let mut took: Vec<f64> = Vec::new();
    let mut detected: Vec<f64> = Vec::new();
    let (mut lane_running, mut lane_waiting) = (Vec::new(), Vec::new());
    let lane = ThreadClock::find(pid, "pointsman-recov");
    let alone = failovers.min(own.saturating_sub(10));
    for _ in 0..alone {
        let primary = primaries.next().expect("a cluster left");
        if let Some(failover) = fail_over(&fleet, &http, &api, &primary, lane.as_ref()).await {
            took.push(failover.writable_ms);
            detected.extend(failover.started_ms);
            if let Some((running, waiting)) = failover.lane {
                lane_running.push(running);
                lane_waiting.push(waiting);
            }
        }
    }
    for series in [
        &mut took,
        &mut detected,
        &mut lane_running,
        &mut lane_waiting,
    ] {
        series.sort_by(f64::total_cmp);
    }
    let readers = Readers::start(&api, READERS);
    let mut took_read: Vec<f64> = Vec::new();
    for _ in 0..failovers.min(own.saturating_sub(10 + alone)) {
        let primary = primaries.next().expect("a cluster left");
        if let Some(failover) = fail_over(&fleet, &http, &api, &primary, None).await {
            took_read.push(failover.writable_ms);
        }
    }
    readers.stop().await;
    took_read.sort_by(f64::total_cmp);
    let ten: Vec<String> = primaries.by_ref().take(10).collect();
    let killed = Instant::now();
    let mut waiting = Vec::new();
    for primary in &ten {
        waiting.push(replicas_of(&fleet, primary));
        fleet.kill(primary);
    }
    let mut ten_at_once: f64 = 0.0;
    for successors in &waiting {
        if let Some(ms) = until_writable(&fleet, successors, killed, Duration::from_secs(30)).await
        {
            ten_at_once = ten_at_once.max(ms);
        } else {
            ten_at_once = f64::INFINITY;
        }
    }

    let _ = agent.start_kill();
    let _ = agent.wait().await;
    Row {
        instances,
        agent_cpu: agent_cpu_seconds / elapsed * 100.0,
        agent_rss: rss,
        fleet_cpu: fleet_cpu_seconds / elapsed * 100.0,
        // Counted by this process's part of the fleet.
        statements_per_instance: (answered_end - answered_start) as f64
            / elapsed
            / (own * 3) as f64,
        cpu_per_probe_ms: agent_cpu_seconds / probes * 1000.0,
        probe_p50_ms: percentile(&poll, 0.50),
        probe_p99_ms: percentile(&poll, 0.99),
        oldest_facts_ms: oldest,
        api_clusters_ms,
        backroom_running_ms,
        backroom_waiting_ms,
        api_cluster_ms,
        page,
        detected_median_ms: percentile(&detected, 0.50),
        failover_median_ms: percentile(&took, 0.50),
        failover_n: took.len(),
        failover_read_median_ms: percentile(&took_read, 0.50),
        failover_read_n: took_read.len(),
        ten_at_once_ms: if ten.is_empty() {
            f64::NAN
        } else {
            ten_at_once
        },
        lane_running_ms: percentile(&lane_running, 0.50),
        lane_waiting_ms: percentile(&lane_waiting, 0.50),
        skipped: None,
    }
}

/// The replicas of the cluster whose primary is `primary` (the fleet lays clusters out
/// primary first).
/// How many API clients read every cluster, back to back, during the second series of
/// failovers: dashboards and scrapers on a busy day.
const READERS: usize = 2;

/// Kills `primary` and waits until one of its replicas is writable: ms from the kill,
/// to the recovery's start by the agent's record, and what the recoveries' thread did
/// meanwhile (given `lane`). Waits half a second after.
async fn fail_over(
    fleet: &Fleet,
    http: &reqwest::Client,
    api: &str,
    primary: &str,
    lane: Option<&ThreadClock>,
) -> Option<Failover> {
    let successors = replicas_of(fleet, primary);
    let lane_before = lane.and_then(ThreadClock::read);
    let killed_at = std::time::SystemTime::now();
    let killed = Instant::now();
    fleet.kill(primary);
    if std::env::var_os("BENCH_LOG").is_some() {
        eprintln!(
            "killed {primary} at {}",
            humantime::format_rfc3339_micros(killed_at)
        );
    }
    let took = until_writable(fleet, &successors, killed, Duration::from_secs(30)).await;
    let lane_after = lane.and_then(ThreadClock::read);
    // When the agent started the recovery (it had judged the primary dead), by its
    // record: the cluster is named after the primary that was killed.
    let url = format!("{api}/api/v1/recoveries?cluster={primary}&limit=1");
    let started = match get_json(http, &url).await {
        Ok(records) => records[0]["started_at"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(killed_at).ok())
            .map(|ms| ms.as_secs_f64() * 1000.0),
        Err(_) => None,
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lane = lane_before
        .zip(lane_after)
        .map(|((ran, waited), (ran_then, waited_then))| {
            (
                (ran_then - ran) as f64 / 1e6,
                (waited_then - waited) as f64 / 1e6,
            )
        });
    took.map(|ms| Failover {
        writable_ms: ms,
        started_ms: started,
        lane,
    })
}

/// One failover as the benchmark saw it.
struct Failover {
    /// Kill → a replica writable.
    writable_ms: f64,
    /// Kill → the recovery started, by the agent's record.
    started_ms: Option<f64>,
    /// The recoveries' thread meanwhile: ms on a core, ms ready and waiting for one.
    lane: Option<(f64, f64)>,
}

/// One of the agent's threads (the recoveries' `pointsman-recovery`, the API's
/// `pointsman-backroom`), found by the start of its name, and what the kernel counts for
/// it: nanoseconds on a core and ready but waiting for one.
struct ThreadClock {
    path: std::path::PathBuf,
}

impl ThreadClock {
    fn find(pid: u32, name: &str) -> Option<ThreadClock> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
            .map(|task| task.path())
            .find(|task| {
                std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.starts_with(name))
            })
            .map(|task| ThreadClock {
                path: task.join("schedstat"),
            })
    }

    fn read(&self) -> Option<(u64, u64)> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        Some((fields.next()??, fields.next()??))
    }
}

/// API clients reading `GET /api/v1/clusters` back to back until stopped, on a thread
/// of their own (`on_a_client_thread`).
struct Readers {
    stop: tokio::sync::watch::Sender<bool>,
    clients: tokio::task::JoinHandle<()>,
}

impl Readers {
    fn start(api: &str, count: usize) -> Readers {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let url = format!("{api}/api/v1/clusters");
        let clients = tokio::spawn(on_a_client_thread(move || async move {
            let http = reqwest::Client::new();
            let readers = (0..count).map(|_| {
                let (http, url, stopped) = (http.clone(), url.clone(), stopped.clone());
                async move {
                    while !*stopped.borrow() {
                        if let Ok(response) = http.get(&url).send().await {
                            let _ = response.bytes().await;
                        }
                    }
                }
            });
            futures::future::join_all(readers).await;
        }));
        Readers { stop, clients }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.clients.await;
    }
}

/// Runs `work` on a thread and a runtime of its own, as an API client in a process of
/// its own would: the benchmark's runtime is busy being the simulated fleet, and a
/// client on it waited behind the simulated servers' tasks (the lists of 10,002
/// instances read 117–134 ms so, against 50–60 ms for curl in another process).
async fn on_a_client_thread<T, F, Fut>(work: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the API client")
            .block_on(work())
    })
    .await
    .expect("the API client's thread")
}

fn replicas_of(fleet: &Fleet, primary: &str) -> Vec<String> {
    let keys = fleet.keys();
    let at = keys
        .iter()
        .position(|k| k == primary)
        .expect("a primary of the fleet");
    keys[at + 1..at + 3].to_vec()
}

/// Milliseconds from `since` until one of `candidates` became writable: to the instant
/// the simulated server ran the statement that made it so (looked for every ms; the
/// look's own delay, a millisecond or more on a busy simulator, is not counted).
async fn until_writable(
    fleet: &Fleet,
    candidates: &[String],
    since: Instant,
    within: Duration,
) -> Option<f64> {
    while since.elapsed() < within {
        if let Some(at) = candidates
            .iter()
            .filter_map(|c| fleet.writable_since(c))
            .min()
        {
            return Some(at.saturating_duration_since(since).as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<serde_json::Value, reqwest::Error> {
    http.get(url).send().await?.error_for_status()?.json().await
}

struct PageTimes {
    usable_ms: f64,
    first_paint_ms: f64,
    next_page_ms: f64,
    filter_ms: f64,
}

/// The dashboard over the whole fleet in headless Chromium (`web-tests/first-paint.mjs`,
/// through the web tests' playwright-core); `None` when that cannot run here.
async fn first_paint(api: &str, clusters: usize) -> Option<PageTimes> {
    if std::env::var("BENCH_PAGE").is_ok_and(|v| v == "0") {
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/web-tests/first-paint.mjs");
    let output = tokio::process::Command::new("node")
        .arg(script)
        .arg(format!("{api}/"))
        .arg(clusters.to_string())
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        eprintln!(
            "the page was not measured: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join(" ")
        );
        return None;
    }
    let said: serde_json::Value = match serde_json::from_slice(&output.stdout) {
        Ok(said) => said,
        Err(error) => {
            eprintln!("the page was not measured: its script printed no JSON ({error})");
            return None;
        }
    };
    if said["errors"].as_array().is_some_and(|e| !e.is_empty()) {
        eprintln!("the page said errors: {}", said["errors"]);
    }
    let Some(usable_ms) = said["list_usable_ms"].as_f64() else {
        eprintln!("the page was not measured: the list never became usable: {said}");
        return None;
    };
    Some(PageTimes {
        usable_ms,
        first_paint_ms: said["first_contentful_paint_ms"]
            .as_f64()
            .unwrap_or(f64::NAN),
        next_page_ms: said["next_page_ms"].as_f64().unwrap_or(f64::NAN),
        filter_ms: said["filter_ms"].as_f64().unwrap_or(f64::NAN),
    })
}

/// `n` requests of `url` one after the other, each read to its last byte, from a client
/// of its own (`on_a_client_thread`): the median ms.
async fn median_ms(url: &str, n: usize) -> f64 {
    let url = url.to_string();
    on_a_client_thread(move || async move {
        let http = reqwest::Client::new();
        let mut times = Vec::new();
        for _ in 0..n {
            let started = Instant::now();
            if let Ok(response) = http.get(&url).send().await {
                let _ = response.bytes().await;
            }
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        percentile(&times, 0.5)
    })
    .await
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process runs");
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Milliseconds, or "—" for what was not measured (a fleet of one page has no next).
fn ms(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.0} ms")
    } else {
        "—".into()
    }
}

fn print_table(rows: &[Row], seconds: u64) {
    println!("\nfleet benchmark: simulated MySQL 9.7, clusters of 3, 1 s polling, {seconds} s steady state, 2 cores shared with the simulator");
    println!("| instances | agent CPU (% of a core) | agent RSS | simulator CPU | statements / instance / s | agent CPU per probe | probe p50 / p99 | oldest facts | GET /clusters | GET one cluster | kill → recovery started (median) | kill → writable (median, n) | the same with {READERS} clients reading GET /clusters | 10 killed at once → all writable |");
    println!(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for row in rows {
        if let Some(why) = &row.skipped {
            println!("| {} | {why} |||||||||||||", row.instances);
            continue;
        }
        println!(
            "| {} | {:.1} % | {:.0} MiB | {:.1} % | {:.1} | {:.3} ms | {:.1} / {:.1} ms | {:.0} ms | {:.1} ms | {:.1} ms | {:.0} ms | {:.0} ms (n={}) | {:.0} ms (n={}) | {:.0} ms |",
            row.instances,
            row.agent_cpu,
            row.agent_rss,
            row.fleet_cpu,
            row.statements_per_instance,
            row.cpu_per_probe_ms,
            row.probe_p50_ms,
            row.probe_p99_ms,
            row.oldest_facts_ms,
            row.api_clusters_ms,
            row.api_cluster_ms,
            row.detected_median_ms,
            row.failover_median_ms,
            row.failover_n,
            row.failover_read_median_ms,
            row.failover_read_n,
            row.ten_at_once_ms
        );
    }
    println!("\nthe recoveries' thread during one failover alone, kill → seen writable (median; the kernel's schedstat)");
    println!("| instances | on a core | ready, waiting for a core |");
    println!("| --- | --- | --- |");
    for row in rows.iter().filter(|row| row.skipped.is_none()) {
        println!(
            "| {} | {:.2} ms | {:.2} ms |",
            row.instances, row.lane_running_ms, row.lane_waiting_ms
        );
    }
    println!("\nGET /api/v1/clusters: the API's backroom thread per request (mean of 10, the kernel's schedstat) beside the median a client waited");
    println!("| instances | client waited (median) | backroom on a core | backroom ready, waiting for a core |");
    println!("| --- | --- | --- | --- |");
    for row in rows.iter().filter(|row| row.skipped.is_none()) {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            row.instances, row.api_clusters_ms, row.backroom_running_ms, row.backroom_waiting_ms
        );
    }
    println!("\nthe page over the whole fleet (headless Chromium, dashboard, ms from navigation)");
    println!("| instances | clusters | list usable | first contentful paint | next page drawn | filter drawn |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for row in rows {
        match &row.page {
            Some(page) => println!(
                "| {} | {} | {} | {} | {} | {} |",
                row.instances,
                row.instances / 3,
                ms(page.usable_ms),
                ms(page.first_paint_ms),
                ms(page.next_page_ms),
                ms(page.filter_ms)
            ),
            None => println!(
                "| {} | {} | not measured |||",
                row.instances,
                row.instances / 3
            ),
        }
    }
}
