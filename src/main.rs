//! The `pointsman` command line: parses arguments, loads configuration, sets up logging
//! and calls into the library. No logic of its own lives here.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use pointsman::api::operate::Done;
use pointsman::api::recovery::{
    AckRequest, Acknowledged, DowntimeEnded, DowntimeRequest, Reattached, RecoverRequest,
    RecoverySwitch,
};
use pointsman::api::views::{ClusterDetail, ClusterSummary, InstanceView};
use pointsman::api::{DiscoverRequest, Forgotten};
use pointsman::client::{
    format_clusters, format_recovery, format_routes, format_topology, instance_tags, ApiClient,
};
use pointsman::config::{Config, LogConfig, LogFormat};
use pointsman::recovery::switchover::SwitchoverReport;
use pointsman::routing::engine::RoutesView;
use pointsman::sandbox::{Flavor, Sandbox, SandboxOptions};
use pointsman::store::recovery::{Downtime, RecoveryRecord, RecoveryStatus};
use pointsman::store::AuditRecord;
use pointsman::topology::InstanceKey;
use std::path::PathBuf;

/// mimalloc, not the system allocator: a probe's answer is hundreds of small buffers
/// and strings, and with glibc's malloc the agent spent a fifth of its CPU in it at
/// 3,000 instances (`cargo bench --bench fleet`, README *Benchmarks*).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "pointsman",
    version,
    about = "Keeps MySQL and MariaDB replication topologies available"
)]
struct Cli {
    /// The agent's API, for the commands that read from a running agent.
    #[arg(
        long,
        global = true,
        env = "POINTSMAN_API",
        default_value = "http://127.0.0.1:3000"
    )]
    api: String,
    /// The agent's api.token, for calls that change something (and reads, with
    /// api.token_for_reads).
    #[arg(long, global = true, env = "POINTSMAN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: discover, poll, serve the API.
    Run {
        #[arg(long, env = "POINTSMAN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and print what it resolves to (secrets hidden).
    CheckConfig {
        #[arg(long, env = "POINTSMAN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Translate an orchestrator configuration (orchestrator.conf.json) into a pointsman
    /// one, and say key by key what became of each setting.
    ImportOrchestrator {
        /// orchestrator's JSON configuration file.
        file: PathBuf,
        /// Where to write the pointsman configuration (never over an existing file);
        /// without it, standard output. The notes go to standard error.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// List clusters with their health, problems first.
    Clusters {
        #[arg(long)]
        json: bool,
    },
    /// Print one cluster's replication tree and findings.
    Topology {
        cluster: String,
        #[arg(long)]
        json: bool,
        /// Under each instance, its GTID set (MySQL's gtid_executed, tagged GTIDs
        /// included; MariaDB's gtid_current_pos and gtid_binlog_pos).
        #[arg(long)]
        gtid: bool,
    },
    /// Show one instance in full (JSON).
    Instance { instance: InstanceKey },
    /// Crawl a topology starting from one instance.
    Discover { instance: InstanceKey },
    /// Stop polling an instance and remove it.
    Forget {
        instance: InstanceKey,
        /// Also lift the fence of a fenced old primary that is being decommissioned.
        #[arg(long)]
        unfence: bool,
    },
    /// If the cluster's primary died now: would this agent recover it by itself, who
    /// would take over and why, who would be passed over. Changes nothing.
    WhatIf {
        cluster: String,
        #[arg(long)]
        json: bool,
    },
    /// Rehearse a failover: switch over to the best replica and back, checking each leg
    /// (write gap, routes, hooks, replicas), and print the verdict.
    Drill {
        cluster: String,
        #[arg(long)]
        json: bool,
    },
    /// Show where traffic goes: per routing backend, what it should say and what it says now.
    Routes {
        /// Only this cluster (an alias).
        cluster: Option<String>,
    },
    /// Show the audit log, newest first.
    Audit {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Recover a cluster whose primary is dead, now (also outside auto_clusters or when blocked).
    Recover {
        cluster: String,
        /// Promote this replica instead of the best candidate.
        #[arg(long)]
        to: Option<InstanceKey>,
    },
    /// Move the primary role to a replica while the primary is healthy.
    Switchover {
        cluster: String,
        /// Promote this replica instead of the best candidate.
        #[arg(long)]
        to: Option<InstanceKey>,
    },
    /// Recovery history, newest first, each with its steps.
    Recoveries {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Acknowledge a cluster's recoveries, lifting the anti-flapping block.
    Ack {
        cluster: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Show or switch automatic recovery for every cluster.
    Recovery {
        #[arg(value_parser = ["status", "enable", "disable"], default_value = "status")]
        action: String,
    },
    /// Take an instance out of automatic recovery for a while, or end that.
    Downtime {
        instance: InstanceKey,
        /// How long, like "1h" or "30m".
        #[arg(long = "for", required_unless_present = "end")]
        duration: Option<String>,
        #[arg(long, required_unless_present = "end")]
        reason: Option<String>,
        /// End the downtime now.
        #[arg(long)]
        end: bool,
    },
    /// Make a fenced old primary a replica of the primary that replaced it.
    Reattach { instance: InstanceKey },
    /// Move a replica to replicate from another instance of its cluster (GTID).
    Relocate {
        instance: InstanceKey,
        #[arg(long)]
        below: InstanceKey,
    },
    /// Start or stop a replica's replication (both threads).
    Replication {
        #[arg(value_parser = ["start", "stop"])]
        action: String,
        instance: InstanceKey,
    },
    /// Set read_only on or off (a fenced old primary stays read_only).
    ReadOnly {
        #[arg(value_parser = ["on", "off"])]
        state: String,
        instance: InstanceKey,
    },
    /// Real local topologies from real server binaries.
    Sandbox {
        #[command(subcommand)]
        action: SandboxAction,
    },
    /// Start a sandbox topology and the agent watching it, until Ctrl-C.
    Demo {
        #[arg(long, default_value = "mariadb")]
        flavor: Flavor,
        #[arg(long, default_value = "/tmp/pointsman-demo")]
        dir: PathBuf,
        /// The API port (3000 is what the CLI uses by default).
        #[arg(long, default_value_t = 3000)]
        port: u16,
        /// Where the embedded DNS responder answers (UDP and TCP on 127.0.0.1).
        #[arg(long, default_value_t = 8053)]
        dns_port: u16,
    },
}

#[derive(Subcommand)]
enum SandboxAction {
    /// Start 1 primary + N replicas with GTID replication.
    Up {
        #[arg(long, default_value = "mariadb")]
        flavor: Flavor,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// Port of node1; the others follow. Free ports are picked when omitted.
        #[arg(long)]
        base_port: Option<u16>,
        #[arg(long)]
        semi_sync: bool,
    },
    /// Stop every node (by the PIDs the sandbox started) and remove its data.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Show each node and whether it runs.
    Status {
        #[arg(long)]
        dir: PathBuf,
    },
    /// kill -9 one node.
    Kill {
        #[arg(long)]
        dir: PathBuf,
        node: String,
    },
    /// Start a stopped or killed node again.
    Start {
        #[arg(long)]
        dir: PathBuf,
        node: String,
    },
}

fn init_logging(config: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // hickory-server logs every DNS query at info: keep it to warnings unless asked.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{},hickory_server=warn", config.level))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() {
    // Crash points named in FAILPOINTS (builds with the `failpoints` feature only).
    #[cfg(feature = "failpoints")]
    let _crash_points = fail::FailScenario::setup();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. } | Command::Demo { .. }) {
        // A CLI command piped into `head` ends quietly when the reader goes away, as
        // other Unix tools do, instead of panicking on a closed stdout. (The agent
        // itself keeps Rust's default: a closed socket is an error, not a signal.)
        // SAFETY: restoring a signal's default action before any thread writes output.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if let Err(error) = run(cli).await {
        eprintln!("error: {}", pointsman::error_text::chain(error.as_ref()));
        std::process::exit(1);
    }
}

/// `pointsman import-orchestrator`: reads orchestrator's file, writes the translation
/// (to `output`, refusing to replace a file, or to stdout) and prints every key's note.
fn import_orchestrator(file: &std::path::Path, output: Option<&std::path::Path>) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let imported = pointsman::orchestrator_import::translate(&text, &file.display().to_string())?;
    match output {
        Some(path) => {
            let mut created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| {
                    format!(
                        "cannot create {} (an existing file is never replaced: choose another path or remove it)",
                        path.display()
                    )
                })?;
            std::io::Write::write_all(&mut created, imported.toml.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => print!("{}", imported.toml),
    }
    for note in &imported.notes {
        eprintln!("{note}");
    }
    if let Some(path) = output {
        eprintln!(
            "wrote {}: read its TODO lines, then `pointsman check-config --config {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let client = ApiClient::new(&cli.api).with_token(cli.token.clone());
    match cli.command {
        Command::Run { config } => {
            let settings = Config::load(config.as_deref())?;
            init_logging(&settings.config.log);
            let agent = pointsman::agent::RunningAgent::start(&settings).await?;
            pointsman::demo::wait_for_stop_signal().await;
            tracing::info!("stopping");
            agent.stop().await?;
        }
        Command::CheckConfig { config } => {
            let settings = Config::load(config.as_deref())?;
            println!("configuration is valid:\n{:#?}", settings.config);
        }
        Command::ImportOrchestrator { file, output } => {
            import_orchestrator(&file, output.as_deref())?;
        }
        Command::Drill { cluster, json } => {
            let report: pointsman::recovery::drill::DrillReport = client
                .post(&format!("/api/v1/clusters/{cluster}/drill"), &())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", pointsman::client::format_drill(&report));
            }
            if !report.passed {
                std::process::exit(1);
            }
        }
        Command::WhatIf { cluster, json } => {
            let answer: pointsman::recovery::what_if::WhatIf = client
                .get(&format!("/api/v1/clusters/{cluster}/what-if"))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print!("{}", pointsman::client::format_what_if(&answer));
            }
        }
        Command::Clusters { json } => {
            let clusters: Vec<ClusterSummary> = client.get("/api/v1/clusters").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&clusters)?);
            } else {
                print!("{}", format_clusters(&clusters));
            }
        }
        Command::Topology {
            cluster,
            json,
            gtid,
        } => {
            let detail: ClusterDetail = client.get(&format!("/api/v1/clusters/{cluster}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                print!("{}", format_topology(&detail, gtid));
            }
        }
        Command::Instance { instance } => {
            let view: InstanceView = client.get(&format!("/api/v1/instances/{instance}")).await?;
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
        Command::Discover { instance } => {
            let view: InstanceView = client
                .post(
                    "/api/v1/discover",
                    &DiscoverRequest {
                        host: instance.host.clone(),
                        port: instance.port,
                    },
                )
                .await?;
            println!(
                "{} {} (cluster {})",
                instance,
                instance_tags(&view),
                view.cluster
            );
        }
        Command::Forget { instance, unfence } => {
            let forgotten: Forgotten = client
                .delete(&format!("/api/v1/instances/{instance}?unfence={unfence}"))
                .await?;
            println!("forgot {}", forgotten.forgotten);
        }
        Command::Routes { cluster } => {
            let mut path = "/api/v1/routes".to_string();
            if let Some(cluster) = &cluster {
                path.push_str(&format!("?cluster={cluster}"));
            }
            let view: RoutesView = client.get(&path).await?;
            print!("{}", format_routes(&view));
        }
        Command::Audit { cluster, limit } => {
            let mut path = format!("/api/v1/audit?limit={limit}");
            if let Some(cluster) = cluster {
                path.push_str(&format!("&cluster={cluster}"));
            }
            let records: Vec<AuditRecord> = client.get(&path).await?;
            for record in records {
                println!(
                    "{} {:8} {:20} {} {}",
                    pointsman::topology::time::format(record.at),
                    record.actor,
                    record.action,
                    record.instance.unwrap_or_default(),
                    record.message
                );
            }
        }
        Command::Recover { cluster, to } => {
            let record: RecoveryRecord = client
                .post(
                    &format!("/api/v1/clusters/{cluster}/recover"),
                    &RecoverRequest { to },
                )
                .await?;
            print!("{}", format_recovery(&record));
            if record.status != RecoveryStatus::Succeeded {
                bail!("the recovery of {cluster} did not succeed");
            }
        }
        Command::Switchover { cluster, to } => {
            let report: SwitchoverReport = client
                .post(
                    &format!("/api/v1/clusters/{cluster}/switchover"),
                    &RecoverRequest { to },
                )
                .await?;
            print!("{}", format_recovery(&report.recovery));
            match report.route_gap_ms {
                Some(route_gap) => println!(
                    "switchover of {cluster}: {} -> {}; writes were refused for {} ms at the database, plus {route_gap} ms until the routes named the new primary ({})",
                    report.old_primary, report.new_primary, report.write_gap_ms, report.routing
                ),
                None => println!(
                    "switchover of {cluster}: {} -> {}; writes were refused for {} ms at the database; routes: {}",
                    report.old_primary, report.new_primary, report.write_gap_ms, report.routing
                ),
            }
        }
        Command::Recoveries { cluster, limit } => {
            let mut path = format!("/api/v1/recoveries?limit={limit}");
            if let Some(cluster) = cluster {
                path.push_str(&format!("&cluster={cluster}"));
            }
            let records: Vec<RecoveryRecord> = client.get(&path).await?;
            if records.is_empty() {
                println!("no recoveries");
            }
            for record in records {
                print!("{}", format_recovery(&record));
            }
        }
        Command::Ack { cluster, comment } => {
            let done: Acknowledged = client
                .post(
                    &format!("/api/v1/clusters/{cluster}/ack"),
                    &AckRequest { comment },
                )
                .await?;
            println!(
                "{} recoveries of {} acknowledged: automatic recovery may act again",
                done.acknowledged, done.cluster
            );
        }
        Command::Recovery { action } => {
            let switch: RecoverySwitch = match action.as_str() {
                "enable" | "disable" => {
                    client
                        .put(
                            "/api/v1/recovery",
                            &RecoverySwitch {
                                automatic: action == "enable",
                            },
                        )
                        .await?
                }
                _ => client.get("/api/v1/recovery").await?,
            };
            println!(
                "automatic recovery is {}",
                if switch.automatic {
                    "on (for clusters in recovery.auto_clusters)"
                } else {
                    "OFF for every cluster"
                }
            );
        }
        Command::Downtime {
            instance,
            duration,
            reason,
            end,
        } => {
            let path = format!("/api/v1/instances/{instance}/downtime");
            if end {
                let ended: DowntimeEnded = client.delete(&path).await?;
                println!(
                    "{}: {}",
                    ended.instance,
                    if ended.ended {
                        "downtime ended"
                    } else {
                        "was not downtimed"
                    }
                );
            } else {
                let downtime: Downtime = client
                    .put(
                        &path,
                        &DowntimeRequest {
                            duration: duration.unwrap_or_default(),
                            reason: reason.unwrap_or_default(),
                        },
                    )
                    .await?;
                println!(
                    "{} downtimed until {}: {}",
                    downtime.instance,
                    pointsman::topology::time::format(downtime.until),
                    downtime.reason
                );
            }
        }
        Command::Reattach { instance } => {
            let done: Reattached = client
                .post(&format!("/api/v1/instances/{instance}/reattach"), &())
                .await?;
            println!("{} now replicates from {}", done.instance, done.source);
        }
        Command::Relocate { instance, below } => {
            let done: Done = client
                .post(
                    &format!("/api/v1/instances/{instance}/relocate"),
                    &serde_json::json!({ "below": below }),
                )
                .await?;
            println!("{}", done.message);
        }
        Command::Replication { action, instance } => {
            let done: Done = client
                .post(
                    &format!("/api/v1/instances/{instance}/replication"),
                    &serde_json::json!({ "running": action == "start" }),
                )
                .await?;
            println!("{}", done.message);
        }
        Command::ReadOnly { state, instance } => {
            let done: Done = client
                .put(
                    &format!("/api/v1/instances/{instance}/read_only"),
                    &serde_json::json!({ "read_only": state == "on" }),
                )
                .await?;
            println!("{}", done.message);
        }
        Command::Sandbox { action } => sandbox(action).await?,
        Command::Demo {
            flavor,
            dir,
            port,
            dns_port,
        } => {
            init_logging(&LogConfig {
                level: "warn,pointsman=info".into(),
                ..LogConfig::default()
            });
            pointsman::demo::run(pointsman::demo::DemoOptions {
                flavor,
                dir,
                api_port: port,
                dns_port,
            })
            .await?;
        }
    }
    Ok(())
}

async fn sandbox(action: SandboxAction) -> Result<()> {
    match action {
        SandboxAction::Up {
            flavor,
            dir,
            replicas,
            base_port,
            semi_sync,
        } => {
            if replicas == 0 {
                bail!("--replicas must be at least 1");
            }
            let sandbox = Sandbox::up(SandboxOptions {
                flavor,
                dir,
                replicas,
                base_port,
                semi_sync,
            })
            .await?;
            print_status(&sandbox);
            println!("user {} password {}", sandbox.user, sandbox.password);
        }
        SandboxAction::Down { dir } => {
            let sandbox = Sandbox::open(&dir)?;
            sandbox.down().await?;
            println!("sandbox in {} is down", dir.display());
        }
        SandboxAction::Status { dir } => print_status(&Sandbox::open(&dir)?),
        SandboxAction::Kill { dir, node } => {
            let mut sandbox = Sandbox::open(&dir)?;
            sandbox.kill(&node)?;
            println!("{node} killed");
        }
        SandboxAction::Start { dir, node } => {
            let mut sandbox = Sandbox::open(&dir)?;
            sandbox
                .start(&node)
                .await
                .with_context(|| format!("starting {node}"))?;
            println!("{node} started");
        }
    }
    Ok(())
}

fn print_status(sandbox: &Sandbox) {
    println!("{} sandbox in {}", sandbox.flavor, sandbox.dir.display());
    for node in sandbox.status() {
        println!(
            "  {:6} 127.0.0.1:{:<5} {:8} pid {}",
            node.name,
            node.port,
            if node.running { "running" } else { "stopped" },
            node.pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
}
