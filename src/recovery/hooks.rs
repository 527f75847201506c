//! Operator hooks: runs the commands an operator configured for a recovery moment
//! (failure detected, before and after a failover or switchover), each under a timeout
//! and in its own process group, and reports what each one did for the audit log.
//!
//! This module decides nothing. It tells the caller whether each command succeeded;
//! whether a failing `pre_*` command aborts the recovery is the caller's call (it
//! should), and nothing here retries, reorders or skips a command on its own.

use crate::config::HumanDuration;
use crate::topology::InstanceKey;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The shell every command runs under, so operators can write pipes and redirections.
const SHELL: &str = "/bin/sh";

/// How long a timed-out command's process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How much of a command's output is kept: its first and last halves of this, so both
/// what it started doing and how it ended reach the audit log.
const OUTPUT_LIMIT: usize = 64 * 1024;

/// `[hooks]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Each command's own limit; when it passes, the command's process group is killed.
    pub timeout: HumanDuration,
    pub on_failure_detected: Vec<String>,
    /// A command that fails here aborts the failover.
    pub pre_failover: Vec<String>,
    pub post_failover: Vec<String>,
    pub post_unsuccessful_failover: Vec<String>,
    /// A command that fails here aborts the switchover.
    pub pre_switchover: Vec<String>,
    pub post_switchover: Vec<String>,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            timeout: HumanDuration(Duration::from_secs(30)),
            on_failure_detected: Vec::new(),
            pre_failover: Vec::new(),
            post_failover: Vec::new(),
            post_unsuccessful_failover: Vec::new(),
            pre_switchover: Vec::new(),
            post_switchover: Vec::new(),
        }
    }
}

impl HooksConfig {
    /// The commands configured for `point`, in the order they run.
    pub fn commands(&self, point: HookPoint) -> &[String] {
        match point {
            HookPoint::OnFailureDetected => &self.on_failure_detected,
            HookPoint::PreFailover => &self.pre_failover,
            HookPoint::PostFailover => &self.post_failover,
            HookPoint::PostUnsuccessfulFailover => &self.post_unsuccessful_failover,
            HookPoint::PreSwitchover => &self.pre_switchover,
            HookPoint::PostSwitchover => &self.post_switchover,
        }
    }

    /// What serde cannot check, as `(key, what is wrong)` pairs such as
    /// `("hooks.pre_failover[1]", "is empty ...")`, for the configuration check to report.
    pub fn check(&self) -> Vec<(String, String)> {
        // `timeout`'s range is checked with every other duration's, in `config`.
        let mut problems = Vec::new();
        for point in HookPoint::ALL {
            for (index, command) in self.commands(point).iter().enumerate() {
                if command.trim().is_empty() {
                    problems.push((
                        format!("hooks.{}[{index}]", point.name()),
                        "is empty; remove it or give the command to run".to_string(),
                    ));
                }
            }
        }
        problems
    }
}

/// A moment in a recovery at which operator commands run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPoint {
    OnFailureDetected,
    PreFailover,
    PostFailover,
    PostUnsuccessfulFailover,
    PreSwitchover,
    PostSwitchover,
}

impl HookPoint {
    /// Every point, in the order a recovery meets them.
    pub const ALL: [HookPoint; 6] = [
        HookPoint::OnFailureDetected,
        HookPoint::PreFailover,
        HookPoint::PostFailover,
        HookPoint::PostUnsuccessfulFailover,
        HookPoint::PreSwitchover,
        HookPoint::PostSwitchover,
    ];

    /// The configuration key and `POINTSMAN_HOOK` value, e.g. `pre_failover`.
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::OnFailureDetected => "on_failure_detected",
            HookPoint::PreFailover => "pre_failover",
            HookPoint::PostFailover => "post_failover",
            HookPoint::PostUnsuccessfulFailover => "post_unsuccessful_failover",
            HookPoint::PreSwitchover => "pre_switchover",
            HookPoint::PostSwitchover => "post_switchover",
        }
    }

    /// Whether a failing command at this point aborts what is about to happen.
    pub fn can_abort(self) -> bool {
        matches!(self, HookPoint::PreFailover | HookPoint::PreSwitchover)
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The hooks as the agent runs them: the commands, and the variables kept from them.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    pub config: HooksConfig,
    /// The variables that `*_env` keys name as the source of a secret
    /// (`mysql.password_env`, ...): never passed to a command, whatever their name.
    pub secret_variables: Vec<String>,
}

/// The variables the CLI reads (`src/main.rs`): `--api`, `--token` (a secret),
/// `--config`.
const CLI_VARIABLES: [&str; 3] = ["POINTSMAN_API", "POINTSMAN_TOKEN", "POINTSMAN_CONFIG"];

impl Hooks {
    /// Whether the agent's variable `name` is kept from the commands: a secret's
    /// source, or a setting of pointsman's own — `POINTSMAN_<SECTION>__<KEY>` (figment
    /// reads them, and they may hold the MySQL password) and the CLI's. Other
    /// `POINTSMAN_*` variables (the example scripts' settings) pass through, and
    /// the context variables are set anew for each command.
    fn withholds(&self, name: &str) -> bool {
        self.secret_variables.iter().any(|secret| secret == name)
            || CLI_VARIABLES.contains(&name)
            || name
                .strip_prefix("POINTSMAN_")
                .is_some_and(|rest| rest.contains("__"))
    }
}

/// What the commands are told, as environment variables (`POINTSMAN_*`, and
/// orchestrator's `ORC_*`: see `orchestrator_hooks`) and `{placeholder}`s.
#[derive(Clone, Debug, Default)]
pub struct HookContext {
    /// What happened, e.g. `DeadPrimary`, or `Switchover` for a planned one.
    pub failure_type: String,
    pub cluster: String,
    /// The primary that failed (for a switchover: the primary being replaced).
    pub failed: Option<InstanceKey>,
    /// The instance promoted in its place, once one is chosen.
    pub successor: Option<InstanceKey>,
    pub recovery_id: String,
    /// Why, in words (the problem's explanation).
    pub description: String,
    /// The failed primary's replicas when the failure was seen.
    pub replicas: Vec<InstanceKey>,
    /// Replicas the recovery could not move under the successor.
    pub lost_replicas: Vec<InstanceKey>,
    /// The failed instance was in downtime.
    pub downtimed: bool,
    /// The cluster is under automatic recovery (`recovery.auto_clusters`).
    pub automatic: bool,
}

impl HookContext {
    /// The variables a command at `point` gets on top of the agent's environment;
    /// absent values are empty strings so scripts under `set -u` can test them.
    pub fn variables(&self, point: HookPoint) -> Vec<(&'static str, String)> {
        let host = |key: &Option<InstanceKey>| key.as_ref().map(|k| k.host.clone());
        let port = |key: &Option<InstanceKey>| key.as_ref().map(|k| k.port.to_string());
        vec![
            ("POINTSMAN_HOOK", point.name().to_string()),
            ("POINTSMAN_FAILURE_TYPE", self.failure_type.clone()),
            ("POINTSMAN_CLUSTER", self.cluster.clone()),
            (
                "POINTSMAN_FAILED_HOST",
                host(&self.failed).unwrap_or_default(),
            ),
            (
                "POINTSMAN_FAILED_PORT",
                port(&self.failed).unwrap_or_default(),
            ),
            (
                "POINTSMAN_SUCCESSOR_HOST",
                host(&self.successor).unwrap_or_default(),
            ),
            (
                "POINTSMAN_SUCCESSOR_PORT",
                port(&self.successor).unwrap_or_default(),
            ),
            ("POINTSMAN_RECOVERY_ID", self.recovery_id.clone()),
        ]
    }
}

/// One command's run, for the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookRun {
    pub point: HookPoint,
    pub command: String,
    /// `None` when the command was killed (by the timeout or a signal) or never started.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// stdout and stderr in the order they were written (both go to one pipe); at most
    /// 64 KiB of it, the first and last 32 KiB around a marker saying how much was cut.
    /// pointsman appends a `[pointsman: ...]` line when it killed or could not start the
    /// command.
    pub output: String,
}

impl HookRun {
    pub fn succeeded(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }
}

/// Runs the commands of `point` one after another, each under `hooks.config.timeout`,
/// through `/bin/sh -c`, in its own process group (a timeout kills the whole group:
/// SIGTERM, then SIGKILL after 2 s), stdin null, with the agent's environment less
/// what [`Hooks`] withholds (secrets' sources, pointsman's own settings), plus the
/// variables of [`HookContext::variables`].
///
/// For points that can abort, stops at the first failing command: the caller aborts.
/// Never panics; a command that cannot be started is a failed run with the reason in
/// `output`.
pub async fn run_hooks(point: HookPoint, hooks: &Hooks, context: &HookContext) -> Vec<HookRun> {
    run_hooks_with(SHELL, point, hooks, context).await
}

/// [`run_hooks`] with the shell as a parameter, so tests can make a start fail.
async fn run_hooks_with(
    shell: &str,
    point: HookPoint,
    hooks: &Hooks,
    context: &HookContext,
) -> Vec<HookRun> {
    let mut runs = Vec::new();
    for command in hooks.config.commands(point) {
        let run = run_one(shell, point, command, hooks, context).await;
        record(&run, context);
        let stop = point.can_abort() && !run.succeeded();
        runs.push(run);
        if stop {
            break;
        }
    }
    runs
}

/// The one structured event per run, so logs and the audit log agree.
fn record(run: &HookRun, context: &HookContext) {
    if run.succeeded() {
        tracing::info!(
            hook = run.point.name(),
            command = %run.command,
            exit_code = run.exit_code,
            timed_out = run.timed_out,
            duration_ms = run.duration_ms,
            cluster = %context.cluster,
            recovery_id = %context.recovery_id,
            "hook command succeeded"
        );
    } else {
        tracing::warn!(
            hook = run.point.name(),
            command = %run.command,
            exit_code = run.exit_code,
            timed_out = run.timed_out,
            duration_ms = run.duration_ms,
            cluster = %context.cluster,
            recovery_id = %context.recovery_id,
            "hook command failed"
        );
    }
}

/// How a supervised command ended.
enum Ending {
    Exited(ExitStatus),
    TimedOut,
    /// Waiting for the shell failed, so its group was killed; the reason goes to the
    /// output.
    Lost(io::Error),
}

async fn run_one(
    shell: &str,
    point: HookPoint,
    command: &str,
    hooks: &Hooks,
    context: &HookContext,
) -> HookRun {
    let timeout = hooks.config.timeout.0;
    let started = Instant::now();
    let mut output = Captured::default();
    let ending = match start(shell, point, command, hooks, context) {
        Ok((child, reader)) => Some(supervise(child, reader, timeout, &mut output).await),
        Err(error) => {
            output.note(&format!("could not start {shell} -c: {error}"));
            None
        }
    };
    let (exit_code, timed_out) = match ending {
        Some(Ending::Exited(status)) => {
            if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
                output.note(&format!("killed by signal {signal}"));
            }
            (status.code(), false)
        }
        Some(Ending::TimedOut) => {
            output.note(&format!(
                "timed out after {}; its process group was killed",
                HumanDuration(timeout)
            ));
            (None, true)
        }
        Some(Ending::Lost(error)) => {
            output.note(&format!("lost track of the command: {error}"));
            (None, false)
        }
        None => (None, false),
    };
    HookRun {
        point,
        command: command.to_string(),
        exit_code,
        timed_out,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        output: output.finish(),
    }
}

/// Spawns `shell -c command` in a new process group with stdout and stderr on one pipe,
/// so the output keeps the order the command wrote it in.
fn start(
    shell: &str,
    point: HookPoint,
    command: &str,
    hooks: &Hooks,
    context: &HookContext,
) -> io::Result<(Child, pipe::Receiver)> {
    let (reader, writer) = io::pipe()?;
    let writer_for_stderr = writer.try_clone()?;
    let mut cmd = Command::new(shell);
    cmd.arg("-c")
        .arg(super::orchestrator_hooks::substitute(
            command, context, point,
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer_for_stderr))
        .process_group(0)
        // If the caller drops the recovery midway, the shell must not outlive it; the
        // group guard in `supervise` takes care of the rest of the group.
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if hooks.withholds(&name.to_string_lossy()) {
            cmd.env_remove(&name);
        }
    }
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ORC_") {
            cmd.env_remove(&name);
        }
    }
    for (name, value) in context
        .variables(point)
        .into_iter()
        .chain(super::orchestrator_hooks::variables(context, point))
    {
        cmd.env(name, value);
    }
    let child = cmd.spawn()?;
    // `cmd` holds our copies of the pipe's write end; it must close now, or the reader
    // would never see end-of-file.
    drop(cmd);
    let reader = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
    Ok((child, reader))
}

/// Waits for the command while collecting its output; on timeout kills its process group.
async fn supervise(
    mut child: Child,
    reader: pipe::Receiver,
    timeout: Duration,
    output: &mut Captured,
) -> Ending {
    let mut guard = GroupGuard::new(&child);
    let mut pipe = OutputPipe::new(reader);
    let deadline = Instant::now() + timeout;
    let ended = loop {
        tokio::select! {
            () = pipe.read_into(output) => {}
            status = child.wait() => break Some(status),
            () = tokio::time::sleep_until(deadline) => break None,
        }
    };
    let ending = match ended {
        Some(Ok(status)) => Ending::Exited(status),
        Some(Err(error)) => {
            // Unwatched, the command would run on without its timeout: stop it.
            kill_group(&mut child, &mut pipe, &guard, output).await;
            Ending::Lost(error)
        }
        None => {
            kill_group(&mut child, &mut pipe, &guard, output).await;
            Ending::TimedOut
        }
    };
    // The shell is done. Processes it left running on purpose (`nohup ... &`) are the
    // operator's; they may still hold the pipe, so take what is already written and stop
    // rather than wait for an end-of-file that may never come.
    guard.disarm();
    pipe.drain_into(output);
    ending
}

/// SIGTERM to the whole group, up to [`KILL_GRACE`] for it to go, then SIGKILL.
/// Output keeps being read meanwhile so nothing blocks on a full pipe while dying.
async fn kill_group(
    child: &mut Child,
    pipe: &mut OutputPipe,
    guard: &GroupGuard,
    output: &mut Captured,
) {
    let mut shell_gone = false;
    guard.signal(libc::SIGTERM);
    let grace_end = Instant::now() + KILL_GRACE;
    if wait_for_group(child, pipe, guard, output, &mut shell_gone, grace_end).await {
        return;
    }
    guard.signal(libc::SIGKILL);
    // SIGKILL lands asynchronously; waiting for it makes "killed" mean "gone" when the
    // run is reported. The bound only matters for a process stuck in the kernel.
    let kill_end = Instant::now() + Duration::from_secs(1);
    wait_for_group(child, pipe, guard, output, &mut shell_gone, kill_end).await;
}

/// Waits until no process of the group runs any more (true) or `until` passes (false),
/// reaping the shell and reading its output meanwhile.
async fn wait_for_group(
    child: &mut Child,
    pipe: &mut OutputPipe,
    guard: &GroupGuard,
    output: &mut Captured,
    shell_gone: &mut bool,
    until: Instant,
) -> bool {
    // Other members of the group are not our children, so there is no event to wait
    // for: poll.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            () = pipe.read_into(output) => {}
            _ = child.wait(), if !*shell_gone => *shell_gone = true,
            _ = tick.tick() => {
                if *shell_gone && !guard.group_alive() {
                    return true;
                }
            }
            () = tokio::time::sleep_until(until) => return false,
        }
    }
}

/// The read end of the command's stdout and stderr.
struct OutputPipe {
    reader: pipe::Receiver,
    open: bool,
    chunk: Vec<u8>,
}

impl OutputPipe {
    fn new(reader: pipe::Receiver) -> Self {
        Self {
            reader,
            open: true,
            chunk: vec![0; 16 * 1024],
        }
    }

    /// Reads the next piece into `output`; never completes once the pipe is closed.
    /// Cancel-safe: nothing is read unless the read completes.
    async fn read_into(&mut self, output: &mut Captured) {
        if !self.open {
            return std::future::pending().await;
        }
        match self.reader.read(&mut self.chunk).await {
            Ok(0) => self.open = false,
            Ok(n) => output.push(&self.chunk[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                output.note(&format!("reading the output failed: {error}"));
                self.open = false;
            }
        }
    }

    /// Takes what is in the pipe without waiting; bounded, since a leftover background
    /// process could write forever. Reads the descriptor itself: tokio's `try_read`
    /// trusts the reactor's last readiness event and can answer "would block" for bytes
    /// the shell wrote just before it exited, which lost a fast command's whole output.
    fn drain_into(self, output: &mut Captured) {
        if !self.open {
            return;
        }
        let mut chunk = self.chunk;
        let mut file = match self.reader.into_nonblocking_fd() {
            Ok(fd) => std::fs::File::from(fd),
            Err(error) => {
                output.note(&format!("reading the output failed: {error}"));
                return;
            }
        };
        let mut budget = 4 * OUTPUT_LIMIT;
        while budget > 0 {
            match std::io::Read::read(&mut file, &mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    output.push(&chunk[..n]);
                    budget = budget.saturating_sub(n);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: nothing more written yet, and we do not wait for more.
                Err(_) => return,
            }
        }
    }
}

/// The command's process group. Kills it if the run is dropped while the command is
/// still running, so a cancelled recovery leaves no hook behind.
struct GroupGuard {
    /// The shell's pid, which is the group id since it was started with `process_group(0)`.
    /// `None` if the shell was already reaped, when there is nothing to signal.
    pgid: Option<libc::pid_t>,
    armed: bool,
}

impl GroupGuard {
    fn new(child: &Child) -> Self {
        Self {
            pgid: child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()),
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours. A
            // negative pid addresses the group; the id cannot have been reused for
            // another group while any member (even a zombie) of this one remains, and
            // `group_alive` stops us signalling once none does.
            unsafe {
                libc::kill(-pgid, signal);
            }
        }
    }

    /// Whether any process of the group is still running. Zombies do not count: where
    /// nothing reaps orphans (a container whose init does not), they would otherwise keep
    /// the group "alive" until SIGKILL time.
    fn group_alive(&self) -> bool {
        let Some(pgid) = self.pgid else {
            return false;
        };
        // SAFETY: signal 0 only asks whether the group exists; see `signal`.
        if unsafe { libc::kill(-pgid, 0) } != 0 {
            return io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        }
        // Without /proc we cannot tell zombies apart: assume alive, which only means
        // waiting out the grace period.
        live_member_in_proc(pgid).unwrap_or(true)
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.signal(libc::SIGKILL);
        }
    }
}

/// Whether /proc lists a process of group `pgid` that is not a zombie.
fn live_member_in_proc(pgid: libc::pid_t) -> Option<bool> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may vanish between listing and reading: it is then not alive.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses, so
        // the fields are counted from the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let group = fields.nth(1).and_then(|g| g.parse::<libc::pid_t>().ok());
        if group == Some(pgid) && !matches!(state, Some("Z") | Some("X")) {
            return Some(true);
        }
    }
    Some(false)
}

/// A command's output, bounded: the first half of [`OUTPUT_LIMIT`] and the latest half.
#[derive(Default)]
struct Captured {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    omitted: u64,
    notes: Vec<String>,
}

impl Captured {
    fn push(&mut self, mut bytes: &[u8]) {
        let half = OUTPUT_LIMIT / 2;
        let room = half.saturating_sub(self.head.len());
        let (first, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(first);
        bytes = rest;
        if bytes.len() >= half {
            self.omitted += (self.tail.len() + bytes.len() - half) as u64;
            self.tail.clear();
            bytes = &bytes[bytes.len() - half..];
        }
        self.tail.extend(bytes);
        let excess = self.tail.len().saturating_sub(half);
        self.tail.drain(..excess);
        self.omitted += excess as u64;
    }

    /// A line of pointsman's own about the run, kept apart so truncation never cuts it.
    fn note(&mut self, note: &str) {
        self.notes.push(format!("[pointsman: {note}]"));
    }

    fn finish(self) -> String {
        let tail: Vec<u8> = self.tail.into();
        let mut text = if self.omitted == 0 {
            let mut all = self.head;
            all.extend_from_slice(&tail);
            String::from_utf8_lossy(&all).into_owned()
        } else {
            format!(
                "{}\n[pointsman: {} bytes of output omitted]\n{}",
                String::from_utf8_lossy(&self.head),
                self.omitted,
                String::from_utf8_lossy(&tail)
            )
        };
        for note in self.notes {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&note);
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    fn context() -> HookContext {
        HookContext {
            failure_type: "DeadPrimary".into(),
            cluster: "shop".into(),
            failed: Some(InstanceKey::new("db1.example", 3306)),
            successor: Some(InstanceKey::new("db2.example", 3307)),
            recovery_id: "r-42".into(),
            ..HookContext::default()
        }
    }

    fn config(point: HookPoint, commands: &[&str], timeout: Duration) -> Hooks {
        let mut config = HooksConfig {
            timeout: HumanDuration(timeout),
            ..HooksConfig::default()
        };
        let list = match point {
            HookPoint::OnFailureDetected => &mut config.on_failure_detected,
            HookPoint::PreFailover => &mut config.pre_failover,
            HookPoint::PostFailover => &mut config.post_failover,
            HookPoint::PostUnsuccessfulFailover => &mut config.post_unsuccessful_failover,
            HookPoint::PreSwitchover => &mut config.pre_switchover,
            HookPoint::PostSwitchover => &mut config.post_switchover,
        };
        *list = commands.iter().map(|c| c.to_string()).collect();
        Hooks {
            config,
            secret_variables: vec!["OUR_MYSQL_PASSWORD".into()],
        }
    }

    async fn run(point: HookPoint, commands: &[&str]) -> Vec<HookRun> {
        run_hooks(
            point,
            &config(point, commands, Duration::from_secs(10)),
            &context(),
        )
        .await
    }

    /// Whether `pid` is gone or only a zombie waiting for a reaper.
    fn dead(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => {
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string));
                matches!(state.as_deref(), Some("Z") | Some("X"))
            }
        }
    }

    #[tokio::test]
    async fn commands_get_the_context_as_environment_variables() {
        let runs = run(
            HookPoint::PostFailover,
            &["printf '%s|' \"$POINTSMAN_HOOK\" \"$POINTSMAN_FAILURE_TYPE\" \"$POINTSMAN_CLUSTER\" \
               \"$POINTSMAN_FAILED_HOST\" \"$POINTSMAN_FAILED_PORT\" \"$POINTSMAN_SUCCESSOR_HOST\" \
               \"$POINTSMAN_SUCCESSOR_PORT\" \"$POINTSMAN_RECOVERY_ID\""],
        )
        .await;
        assert_eq!(runs.len(), 1);
        assert_eq!(
            runs[0].output,
            "post_failover|DeadPrimary|shop|db1.example|3306|db2.example|3307|r-42|"
        );
        assert!(runs[0].succeeded());
    }

    /// A command that prints and exits at once must not lose its output to the race
    /// between its exit and the reactor noticing the pipe is readable (it did, in CI:
    /// a hook's step showed "exit 0 in 1 ms" and nothing it printed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_output_of_a_command_that_exits_at_once_is_kept() {
        let commands: Vec<String> = (0..500).map(|i| format!("printf 'line {i}'")).collect();
        let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
        let runs = run(HookPoint::PostFailover, &commands).await;
        for (i, run) in runs.iter().enumerate() {
            assert_eq!(run.output, format!("line {i}"), "run {i} of 500");
        }
    }

    #[tokio::test]
    async fn a_command_written_for_orchestrator_gets_its_variables_and_placeholders() {
        let runs = run(
            HookPoint::PostFailover,
            &["printf '%s|' {failureType} {failedHost}:{failedPort} {successorHost} \"$ORC_FAILURE_TYPE\" \
               \"$ORC_FAILURE_CLUSTER_ALIAS\" \"$ORC_SUCCESSOR_HOST\" \"$ORC_SUCCESSOR_PORT\" \"$ORC_IS_SUCCESSFUL\""],
        )
        .await;
        assert_eq!(
            runs[0].output,
            "DeadMaster|db1.example:3306|db2.example|DeadMaster|shop|db2.example|3307|true|"
        );
        assert!(runs[0].succeeded());
    }

    #[tokio::test]
    async fn absent_instances_are_set_but_empty() {
        let mut context = context();
        context.successor = None;
        let config = config(
            HookPoint::OnFailureDetected,
            &["printf '[%s][%s]' \"${POINTSMAN_SUCCESSOR_HOST-unset}\" \"${POINTSMAN_SUCCESSOR_PORT-unset}\""],
            Duration::from_secs(10),
        );
        let runs = run_hooks(HookPoint::OnFailureDetected, &config, &context).await;
        assert_eq!(runs[0].output, "[][]");
    }

    #[test]
    fn secrets_and_agent_settings_are_not_passed_on_but_script_settings_are() {
        let hooks = config(HookPoint::PostFailover, &[], Duration::from_secs(1));
        assert!(hooks.withholds("POINTSMAN_MYSQL__PASSWORD"));
        assert!(hooks.withholds("OUR_MYSQL_PASSWORD"));
        assert!(hooks.withholds("POINTSMAN_TOKEN"));
        assert!(!hooks.withholds("POINTSMAN_VIP"));
        assert!(!hooks.withholds("POINTSMAN_NOTIFY_URL"));
        assert!(!hooks.withholds("HOME"));
    }

    #[tokio::test]
    async fn exit_codes_are_recorded() {
        let runs = run(HookPoint::PostFailover, &["true", "exit 3", "kill -9 $$"]).await;
        let codes: Vec<_> = runs.iter().map(|r| r.exit_code).collect();
        assert_eq!(codes, [Some(0), Some(3), None]);
        assert!(runs[0].succeeded());
        assert!(!runs[1].succeeded());
        assert!(!runs[2].succeeded());
        assert!(!runs[2].timed_out);
        assert!(
            runs[2].output.contains("killed by signal 9"),
            "{}",
            runs[2].output
        );
    }

    #[tokio::test]
    async fn a_failing_pre_hook_stops_the_list_but_a_post_hook_does_not() {
        let commands = ["echo one", "echo two; exit 1", "echo three"];
        let pre = run(HookPoint::PreFailover, &commands).await;
        assert_eq!(pre.len(), 2, "{pre:?}");
        assert_eq!(pre[1].output, "two\n");
        assert!(!pre[1].succeeded());

        let post = run(HookPoint::PostFailover, &commands).await;
        assert_eq!(post.len(), 3, "{post:?}");
        assert_eq!(post[2].output, "three\n");

        let switchover = run(HookPoint::PreSwitchover, &commands).await;
        assert_eq!(switchover.len(), 2);
    }

    #[tokio::test]
    async fn stdout_and_stderr_keep_their_order() {
        let runs = run(
            HookPoint::PostFailover,
            &["echo out; echo err >&2; echo out again"],
        )
        .await;
        assert_eq!(runs[0].output, "out\nerr\nout again\n");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group_promptly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pid_file = dir.path().join("child.pid");
        let command = format!(
            "sleep 30 & echo $! > '{}'; echo started; sleep 30",
            pid_file.display()
        );
        let config = config(
            HookPoint::PreFailover,
            &[&command, "echo never"],
            Duration::from_millis(300),
        );
        let started = StdInstant::now();
        let runs = run_hooks(HookPoint::PreFailover, &config, &context()).await;
        let elapsed = started.elapsed();
        // Both sleeps die of SIGTERM, so no SIGKILL grace should be spent.
        assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
        assert_eq!(runs.len(), 1, "a timed-out pre hook aborts the list");
        let run = &runs[0];
        assert!(run.timed_out);
        assert_eq!(run.exit_code, None);
        assert!(!run.succeeded());
        assert!(run.output.starts_with("started\n"), "{}", run.output);
        assert!(
            run.output.contains("timed out after 300ms"),
            "{}",
            run.output
        );
        let child = std::fs::read_to_string(&pid_file).expect("pid written");
        assert!(dead(child.trim()), "background child {child} still runs");
    }

    #[tokio::test]
    async fn a_group_that_ignores_sigterm_gets_sigkill_after_the_grace() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pid_file = dir.path().join("child.pid");
        // Ignored signals stay ignored across fork and exec, so both sleeps ignore TERM.
        let command = format!(
            "trap '' TERM; sleep 30 & echo $! > '{}'; sleep 30",
            pid_file.display()
        );
        let config = config(
            HookPoint::PostFailover,
            &[&command],
            Duration::from_millis(300),
        );
        let started = StdInstant::now();
        let runs = run_hooks(HookPoint::PostFailover, &config, &context()).await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(2300), "took {elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        assert!(runs[0].timed_out);
        let child = std::fs::read_to_string(&pid_file).expect("pid written");
        assert!(dead(child.trim()), "background child {child} still runs");
    }

    #[tokio::test]
    async fn a_background_process_left_running_does_not_hold_the_run() {
        let started = StdInstant::now();
        let runs = run(HookPoint::PostFailover, &["sleep 20 & echo $!; echo done"]).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(runs[0].succeeded());
        let mut lines = runs[0].output.lines();
        let pid = lines.next().expect("pid line").to_string();
        assert_eq!(lines.next(), Some("done"));
        // Left alone on purpose (it is the operator's), so clean it up here.
        assert!(
            !dead(&pid),
            "a finished hook's background process was killed"
        );
        std::process::Command::new("kill")
            .arg(&pid)
            .status()
            .expect("kill");
    }

    #[tokio::test]
    async fn long_output_keeps_its_start_and_end() {
        let runs = run(
            HookPoint::PostFailover,
            &["printf START; head -c 200000 /dev/zero | tr '\\0' x; printf END"],
        )
        .await;
        let output = &runs[0].output;
        assert!(runs[0].succeeded());
        assert!(output.starts_with("STARTxxx"), "{}", &output[..20]);
        assert!(output.ends_with("xxxEND"));
        let omitted = 200_000 + 8 - OUTPUT_LIMIT;
        assert!(
            output.contains(&format!("[pointsman: {omitted} bytes of output omitted]")),
            "marker missing"
        );
        assert!(output.len() <= OUTPUT_LIMIT + 100, "{} bytes", output.len());
    }

    #[test]
    fn captured_output_is_exact_under_the_limit_and_bounded_above_it() {
        let mut small = Captured::default();
        small.push(b"abc");
        small.push(b"def");
        assert_eq!(small.finish(), "abcdef");

        let mut big = Captured::default();
        for _ in 0..100 {
            big.push(&[b'a'; 1000]);
        }
        big.push(b"last");
        let text = big.finish();
        assert!(text.ends_with("aaalast"));
        assert!(text.contains(&format!(
            "{} bytes of output omitted",
            100_004 - OUTPUT_LIMIT
        )));
    }

    #[tokio::test]
    async fn a_missing_command_is_exit_127_with_the_shells_message() {
        let runs = run(
            HookPoint::PostFailover,
            &["pointsman-no-such-command --now"],
        )
        .await;
        assert_eq!(runs[0].exit_code, Some(127));
        assert!(
            runs[0].output.contains("pointsman-no-such-command")
                && runs[0].output.contains("not found"),
            "{}",
            runs[0].output
        );
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_is_a_failed_run_with_the_reason() {
        let config = config(
            HookPoint::PreFailover,
            &["true", "true"],
            Duration::from_secs(1),
        );
        let runs = run_hooks_with(
            "/nonexistent/sh",
            HookPoint::PreFailover,
            &config,
            &context(),
        )
        .await;
        assert_eq!(runs.len(), 1, "a pre hook that cannot start aborts");
        assert!(!runs[0].succeeded());
        assert_eq!(runs[0].exit_code, None);
        assert!(
            runs[0].output.contains("could not start /nonexistent/sh"),
            "{}",
            runs[0].output
        );
    }

    #[test]
    fn only_pre_points_can_abort_and_names_match_the_config_keys() {
        let aborting: Vec<_> = HookPoint::ALL
            .into_iter()
            .filter(|p| p.can_abort())
            .collect();
        assert_eq!(aborting, [HookPoint::PreFailover, HookPoint::PreSwitchover]);
        let names: Vec<_> = HookPoint::ALL.into_iter().map(HookPoint::name).collect();
        assert_eq!(
            names,
            [
                "on_failure_detected",
                "pre_failover",
                "post_failover",
                "post_unsuccessful_failover",
                "pre_switchover",
                "post_switchover"
            ]
        );
    }

    #[test]
    fn defaults_and_checks() {
        let config = HooksConfig::default();
        assert_eq!(config.timeout.0, Duration::from_secs(30));
        assert!(HookPoint::ALL
            .iter()
            .all(|p| config.commands(*p).is_empty()));
        assert!(config.check().is_empty());

        let bad = HooksConfig {
            post_failover: vec!["notify.sh".into(), "  ".into()],
            ..HooksConfig::default()
        };
        let keys: Vec<_> = bad.check().into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["hooks.post_failover[1]"]);
    }
}
