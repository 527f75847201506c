//! The recoveries' own runtime: one thread whose tasks never wait behind the polling
//! of the fleet. On an agent watching thousands of instances the main runtime's queues
//! hold hundreds of probe tasks at any moment, and a recovery's every statement waited
//! its turn behind them twice (sent, then answered): at 10,000 simulated instances on
//! two cores that was 15–25 ms a statement (README, *Benchmarks*). A lost primary's
//! confirmation round and the recovery itself run here instead.
//!
//! Its threads also ask the kernel to run them ahead of the agent's other threads
//! (`RunsAhead`): on a busy machine a woken recovery then takes a core from the polling
//! instead of waiting for a polling thread's time slice to end.
//!
//! The agent owns it; when the agent stops (or is dropped) the lane is shut down and
//! what runs on it is dropped, as when the process ends: a recovery cut short is
//! settled from its journal by whoever acts next (`resume`).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use tokio::runtime::{Builder, Handle, Runtime};

/// The runtime, shut down when dropped.
pub struct Lane {
    runtime: Option<Runtime>,
    runs_ahead: Arc<OnceLock<RunsAhead>>,
}

impl Lane {
    pub fn start() -> std::io::Result<Lane> {
        let runs_ahead = Arc::new(OnceLock::new());
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pointsman-recovery")
            // Every thread of the lane: one that takes over the worker's place (a
            // blocking section) runs recoveries too.
            .on_thread_start({
                let runs_ahead = runs_ahead.clone();
                move || {
                    let granted = RunsAhead::ask();
                    if runs_ahead.set(granted).is_ok() {
                        granted.say();
                    }
                }
            })
            .enable_all()
            .build()?;
        Ok(Lane {
            runtime: Some(runtime),
            runs_ahead,
        })
    }

    /// What the kernel granted the lane's first thread (`None` before it started).
    pub fn runs_ahead(&self) -> Option<RunsAhead> {
        self.runs_ahead.get().copied()
    }

    /// Where to spawn onto it.
    pub fn handle(&self) -> LaneHandle {
        LaneHandle(
            self.runtime
                .as_ref()
                .map(|runtime| runtime.handle().clone()),
        )
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Never blocks: the agent may be dropped on an async worker.
            runtime.shutdown_background();
        }
    }
}

/// How far ahead of the agent's other threads (all at the default nice value 0 and
/// time slice) a lane thread runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunsAhead {
    /// Its nice value: `RUNS_AHEAD_NICE` where the process may raise a thread's
    /// priority (root, or `CAP_SYS_NICE`), else 0.
    pub nice: i32,
    /// Whether the kernel took its request for short time slices (Linux 6.12 and
    /// later): a woken thread with a shorter slice is run first.
    pub short_slices: bool,
}

/// A lane thread's nice value when the process may set it: a weight of 9,548 against
/// the 1,024 of every other thread, so a woken recovery preempts the polling; the
/// lane's own work is small, so the polling keeps the rest.
pub const RUNS_AHEAD_NICE: i32 = -10;

/// The time slice a lane thread asks for, in nanoseconds: the shortest Linux grants
/// (0.1 ms); the lane's work comes in short bursts between round trips.
const SHORT_SLICE_NANOS: u64 = 100_000;

/// `struct sched_attr` as `sched_setattr(2)` and `sched_getattr(2)` read and write it
/// (its first version, 48 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

impl RunsAhead {
    /// Asks the kernel to run the calling thread ahead: the nice value and the short
    /// slice together, or, where the nice value is refused, the slice alone. Returns
    /// what the thread was given, read back from the kernel.
    fn ask() -> RunsAhead {
        let before = RunsAhead::of_this_thread().nice;
        let set = |nice: i32| {
            let attr = SchedAttr {
                size: std::mem::size_of::<SchedAttr>() as u32,
                policy: libc::SCHED_OTHER as u32,
                nice,
                runtime: SHORT_SLICE_NANOS,
                ..SchedAttr::default()
            };
            // SAFETY: `attr` is a complete sched_attr of the size it states and lives
            // through the call; pid 0 is the calling thread.
            unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) == 0 }
        };
        if !set(RUNS_AHEAD_NICE.min(before)) {
            set(before);
        }
        RunsAhead::of_this_thread()
    }

    /// Tells the operator, once at start-up, what the lane was given and how to give it
    /// the rest.
    fn say(self) {
        let slices = if self.short_slices {
            "asks for 0.1 ms time slices"
        } else {
            "has the default time slices (shorter ones need Linux 6.12 or later)"
        };
        if self.nice <= RUNS_AHEAD_NICE {
            tracing::info!(
                nice = self.nice,
                "the recoveries' thread runs ahead of the polling: it has nice {} and {slices}",
                self.nice
            );
        } else {
            tracing::info!(
                nice = self.nice,
                "the recoveries' thread {slices} but keeps nice {}: on a busy machine a \
                 failover may wait for the polling's time slices. Nice {RUNS_AHEAD_NICE}, \
                 which runs it ahead, takes root or CAP_SYS_NICE \
                 (AmbientCapabilities=CAP_SYS_NICE in a systemd unit, as in the one shipped)",
                self.nice
            );
        }
    }

    /// The calling thread's nice value and slice as the kernel has them.
    pub fn of_this_thread() -> RunsAhead {
        let mut attr = SchedAttr::default();
        let size = std::mem::size_of::<SchedAttr>() as u32;
        // SAFETY: the kernel writes at most `size` bytes into `attr`; pid 0 is the
        // calling thread.
        let read = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                size,
                0,
            )
        };
        if read != 0 {
            return RunsAhead {
                nice: 0,
                short_slices: false,
            };
        }
        RunsAhead {
            nice: attr.nice,
            short_slices: attr.runtime == SHORT_SLICE_NANOS,
        }
    }
}

/// Spawns onto a lane, or, without one (the coordinator's unit tests), onto the
/// runtime of the caller.
#[derive(Clone, Default)]
pub struct LaneHandle(Option<Handle>);

impl LaneHandle {
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.0 {
            Some(handle) => drop(handle.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn a_task_on_the_lane_runs_while_the_callers_runtime_is_held_up() {
        let lane = Lane::start().expect("lane");
        let (sent, received) = std::sync::mpsc::channel();
        lane.handle().spawn(async move {
            let name = std::thread::current().name().map(str::to_string);
            let _ = sent.send(name);
        });
        // This thread is the caller's only worker and it waits here, running nothing:
        // the task can only have run on the lane's own thread.
        let ran_on = received
            .recv_timeout(Duration::from_secs(10))
            .expect("the task ran while the caller's runtime was held up");
        assert_eq!(ran_on.as_deref(), Some("pointsman-recovery"));
    }

    /// Whether this process holds CAP_SYS_NICE (bit 23 of `CapEff` in
    /// /proc/self/status), as root does outside a container that drops it.
    fn may_raise_priority() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("CapEff:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << 23) != 0)
    }

    /// The lane's threads run ahead of the agent's others as far as the kernel lets them,
    /// and what the agent says of it at start-up is what they have. Run as root (as in
    /// CI, with CAP_SYS_NICE) that is the raised nice value.
    #[tokio::test]
    async fn the_lanes_thread_has_what_the_agent_says_it_has() {
        let lane = Lane::start().expect("lane");
        let (sent, received) = tokio::sync::oneshot::channel();
        lane.handle().spawn(async move {
            let _ = sent.send(RunsAhead::of_this_thread());
        });
        let has = received.await.expect("ran on the lane");
        assert_eq!(lane.runs_ahead(), Some(has));
        let elsewhere = RunsAhead::of_this_thread();
        assert!(
            has.nice <= elsewhere.nice,
            "{has:?}, the caller's {elsewhere:?}"
        );
        if may_raise_priority() {
            assert_eq!(has.nice, RUNS_AHEAD_NICE.min(elsewhere.nice));
        }
    }

    #[tokio::test]
    async fn what_runs_on_the_lane_is_dropped_with_it() {
        let lane = Lane::start().expect("lane");
        let (held, dropped) = tokio::sync::oneshot::channel::<()>();
        lane.handle().spawn(async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        drop(lane);
        let ended = tokio::time::timeout(Duration::from_secs(10), dropped)
            .await
            .expect("the task was dropped with the lane");
        assert!(ended.is_err(), "the task never finished by itself");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_a_lane_a_task_runs_on_the_callers_runtime() {
        let (sent, received) = tokio::sync::oneshot::channel();
        let caller = std::thread::current().id();
        LaneHandle::default().spawn(async move {
            let _ = sent.send(std::thread::current().id());
        });
        assert_eq!(received.await.expect("ran"), caller);
    }
}
