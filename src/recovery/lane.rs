//! The recoveries' own runtime: one thread whose tasks never wait behind the polling
//! of the fleet. On an agent watching thousands of instances the main runtime's queues
//! hold hundreds of probe tasks at any moment, and a recovery's every statement waited
//! its turn behind them twice (sent, then answered): at 10,000 simulated instances on
//! two cores that was 15–25 ms a statement (README, *Benchmarks*). A lost primary's
//! confirmation round and the recovery itself run here instead.
//!
//! The agent owns it; when the agent stops (or is dropped) the lane is shut down and
//! what runs on it is dropped, as when the process ends: a recovery cut short is
//! settled from its journal by whoever acts next (`resume`).

use std::future::Future;
use tokio::runtime::{Builder, Handle, Runtime};

/// The runtime, shut down when dropped.
pub struct Lane {
    runtime: Option<Runtime>,
}

impl Lane {
    pub fn start() -> std::io::Result<Lane> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pointsman-recovery")
            .enable_all()
            .build()?;
        Ok(Lane {
            runtime: Some(runtime),
        })
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
