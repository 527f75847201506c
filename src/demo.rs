//! `pointsman demo`: a real local topology (the sandbox) with the agent watching it,
//! in one command. It writes an ordinary configuration file for the agent, so what
//! the demo runs is what a user would run, and cleans up everything it started when
//! it gets Ctrl-C or SIGTERM.

use crate::agent::{AgentError, RunningAgent};
use crate::api::views::cluster_details;
use crate::client::format_topology;
use crate::config::{Config, ConfigError};
use crate::sandbox::{Flavor, Sandbox, SandboxError, SandboxOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("demo configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct DemoOptions {
    pub flavor: Flavor,
    pub dir: PathBuf,
    /// Where the API listens; 3000 lets the CLI's default `--api` reach it.
    pub api_port: u16,
    /// Where the embedded DNS responder answers `demo.primary.mysql.local.`.
    pub dns_port: u16,
}

/// Runs the demo until Ctrl-C or SIGTERM, whenever it comes: a signal while the sandbox
/// is still starting stops the servers already spawned too.
pub async fn run(options: DemoOptions) -> Result<(), DemoError> {
    // Installed before anything is started, so no signal finds the default action
    // (which would end the process and leave the servers running).
    let mut stop = StopSignal::install();
    std::fs::create_dir_all(&options.dir).map_err(|source| DemoError::Io {
        path: options.dir.clone(),
        source,
    })?;
    println!(
        "Starting a {} topology (1 primary, 2 replicas) in {} ...",
        options.flavor,
        options.dir.display()
    );
    let started = Instant::now();
    let up = Sandbox::up(SandboxOptions {
        flavor: options.flavor,
        dir: options.dir.clone(),
        replicas: 2,
        base_port: None,
        semi_sync: false,
    });
    let sandbox = tokio::select! {
        sandbox = up => sandbox,
        () = stop.received() => {
            // The servers spawned so far are in the sandbox's state file (written
            // right after each spawn): stop those.
            println!("Stopping the sandbox before it was up ...");
            if let Ok(partial) = Sandbox::open(&options.dir) {
                partial.down().await?;
            }
            println!("Stopped. Everything the demo started is gone.");
            return Ok(());
        }
    };
    let sandbox = match sandbox {
        Ok(sandbox) => sandbox,
        Err(error) => {
            // A sandbox that failed part-way may have left servers running.
            if let Ok(partial) = Sandbox::open(&options.dir) {
                let _ = partial.down().await;
            }
            return Err(error.into());
        }
    };
    println!(
        "  up in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        sandbox
            .nodes
            .iter()
            .map(|n| format!("{} {}:{}", n.name, n.host, n.port))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // A demo starts from a clean slate: a store left by a demo that was killed would
    // carry its recoveries (and their anti-flapping block) and its instances.
    remove_demo_files(&options.dir);
    let result = watch(&sandbox, &options, &mut stop).await;
    println!("Stopping the agent and the sandbox ...");
    // Nodes may have been killed and restarted from another terminal since `up`:
    // tear down what the sandbox's state file says runs now.
    let current = Sandbox::open(&options.dir).unwrap_or(sandbox);
    let down = current.down().await;
    remove_demo_files(&options.dir);
    result?;
    down?;
    println!("Stopped. Everything the demo started is gone.");
    Ok(())
}

async fn watch(
    sandbox: &Sandbox,
    options: &DemoOptions,
    stop: &mut StopSignal,
) -> Result<(), DemoError> {
    let config_path = options.dir.join("pointsman.toml");
    write_config(sandbox, options, &config_path)?;
    let settings = Config::load(Some(&config_path))?;
    let agent = tokio::select! {
        agent = RunningAgent::start(&settings) => agent?,
        () = stop.received() => return Ok(()),
    };
    let url = format!("http://{}", agent.api_address);

    // Show the first complete view, so the user sees discovery worked.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = agent.discovery.snapshot();
        let complete = snapshot.instances.len() >= sandbox.nodes.len()
            && snapshot.instances.values().all(|i| i.facts.is_some());
        if stop.arrived() {
            agent.stop().await?;
            return Ok(());
        }
        if complete || Instant::now() > deadline {
            let details = cluster_details(
                &snapshot,
                &settings.aliases,
                &rules(&settings),
                &Default::default(),
                SystemTime::now(),
            );
            println!();
            for detail in &details {
                println!("cluster {}:", detail.name);
                print!("{}", format_topology(detail, false));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let dir = options.dir.display();
    let cli = cli_path();
    let api_flag = if options.api_port == 3000 {
        String::new()
    } else {
        format!(" --api {url}")
    };
    println!(
        "\npointsman is watching the cluster \"demo\" with automatic recovery on. API: {url}\n\
         \n\
         Open {url}/ in a browser: the topology, live; drag a replica onto the primary to switch over.\n\
         \n\
         Or try, in another terminal:\n\
         \x20 {cli} topology demo{api_flag}\n\
         \x20 {cli} routes demo{api_flag}                    # where traffic goes: the embedded DNS\n\
         \x20 dig @127.0.0.1 -p {dns_port} _mysql._tcp.demo.primary.mysql.local SRV +short\n\
         \x20 {cli} sandbox kill --dir {dir} node1      # kill -9 the primary: a replica takes over\n\
         \x20 {cli} topology demo{api_flag}                  # the new primary, node1 FENCED and unreachable\n\
         \x20 {cli} routes demo{api_flag}                    # DNS names the new primary (see its port)\n\
         \x20 {cli} recoveries{api_flag}                     # every step of the failover, with its duration\n\
         \x20 {cli} sandbox start --dir {dir} node1     # node1 comes back read_only, fenced\n\
         \x20 {cli} reattach 127.0.0.1:{node1_port}{api_flag}       # and becomes a replica of the new primary\n\
         \x20 {cli} ack demo{api_flag}                       # allow the next automatic recovery at once\n\
         \x20 curl -s {url}/api/v1/clusters/demo\n\
         \n\
         The agent's configuration is {config}. Press Ctrl-C to stop; the demo removes what it started.",
        config = config_path.display(),
        dns_port = options.dns_port,
        node1_port = sandbox.nodes.first().map(|n| n.port).unwrap_or_default(),
    );

    stop.received().await;
    agent.stop().await?;
    Ok(())
}

/// The files the demo writes beside the sandbox.
fn remove_demo_files(dir: &Path) {
    for file in [
        "pointsman.toml",
        "pointsman.db",
        "pointsman.db-wal",
        "pointsman.db-shm",
    ] {
        let _ = std::fs::remove_file(dir.join(file));
    }
}

/// How to call this very binary from the current directory, so the hints can be
/// pasted as they are even when pointsman is not on the PATH.
fn cli_path() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "pointsman".into();
    };
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join("pointsman") == exe))
        .unwrap_or(false);
    if on_path {
        return "pointsman".into();
    }
    std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
        .unwrap_or_else(|| exe.display().to_string())
}

fn rules(settings: &crate::config::Settings) -> crate::analysis::ProblemRules {
    crate::analysis::ProblemRules::from_config(&settings.config)
}

fn write_config(sandbox: &Sandbox, options: &DemoOptions, path: &Path) -> Result<(), DemoError> {
    let quoted = |items: Vec<String>| {
        items
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let instances = quoted(
        sandbox
            .nodes
            .iter()
            .map(|n| format!("{}:{}", n.host, n.port))
            .collect(),
    );
    let seed = sandbox
        .nodes
        .first()
        .map(|n| format!("{}:{}", n.host, n.port))
        .unwrap_or_default();
    let text = format!(
        "# Written by `pointsman demo` for its sandbox; removed when the demo stops.\n\
         [mysql]\nuser = \"{user}\"\npassword = \"{password}\"\n\n\
         [discovery]\nseeds = [\"{seed}\"]\npoll_interval = \"1s\"\n\n\
         [store]\npath = \"{store}\"\n\n\
         [api]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [recovery]\nauto_clusters = [\"alias=demo\"]\nreplication_user = \"{repl_user}\"\n\
         replication_password = \"{repl_password}\"\n\n\
         [routing]\nreconcile_interval = \"2s\"\n\n\
         [routing.dns]\nenabled = true\nlisten = \"127.0.0.1:{dns_port}\"\nzone = \"mysql.local.\"\nttl = \"60s\"\n\n\
         [[cluster]]\nalias = \"demo\"\ninstances = [{instances}]\n",
        dns_port = options.dns_port,
        user = sandbox.user,
        password = sandbox.password,
        store = options.dir.join("pointsman.db").display(),
        port = options.api_port,
        repl_user = sandbox.repl_user,
        repl_password = sandbox.repl_password,
    );
    std::fs::write(path, text).map_err(|source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Ctrl-C, SIGTERM and SIGHUP (a closed terminal), caught from the moment it is
/// installed: a signal that comes before anyone waits is kept, not lost.
pub struct StopSignal {
    signals: Vec<tokio::signal::unix::Signal>,
    arrived: bool,
}

impl StopSignal {
    pub fn install() -> StopSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let signals = [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ]
        .into_iter()
        .filter_map(|kind| signal(kind).ok())
        .collect();
        StopSignal {
            signals,
            arrived: false,
        }
    }

    /// Resolves when one of the signals has arrived (at once if one already has).
    pub async fn received(&mut self) {
        if self.arrived {
            return;
        }
        if self.signals.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.signals.iter_mut().map(|s| Box::pin(s.recv()));
        futures::future::select_all(waits).await;
        self.arrived = true;
    }

    /// Whether a signal has arrived, without waiting.
    pub fn arrived(&mut self) -> bool {
        if !self.arrived {
            let waker = futures::task::noop_waker();
            let mut context = std::task::Context::from_waker(&waker);
            self.arrived = self
                .signals
                .iter_mut()
                .any(|s| s.poll_recv(&mut context).is_ready());
        }
        self.arrived
    }
}

/// Resolves on Ctrl-C, SIGTERM or SIGHUP (a closed terminal), whichever comes first.
pub async fn wait_for_stop_signal() {
    StopSignal::install().received().await;
}
