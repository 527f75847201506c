//! Keeping the async runtime's workers free for the polling. On a large fleet some
//! synchronous work takes tens of milliseconds (judging every cluster, building every
//! cluster's detail for the API); done on a worker, it leaves the probes and their
//! parks' wake-ups to the other worker, and a death that lands meanwhile is noticed
//! only when the work ends. `off_the_workers` runs such work with the worker's tasks
//! handed to another thread first; `Backroom` runs what can wait (the API's reads of
//! the whole fleet) on a thread of lower priority, one job at a time.

/// Runs `work` with the current worker's other tasks handed to another thread
/// meanwhile (`block_in_place`); run as is outside a multi-threaded runtime's worker.
pub(crate) fn off_the_workers<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// How much lower than the agent's other threads the backroom runs: a weight of 335
/// against their 1,024, so a probe's or a failover's thread woken meanwhile gets the
/// core first.
const BACKROOM_NICE_ABOVE: i32 = 5;

/// Work that must be done, but after the polling and the failovers: a thread of its
/// own at a lower priority (nice +5, which needs no privilege) that does one job at a
/// time, in order. The API builds every cluster's detail here: on a large fleet each is
/// tens of ms, and clients reading back to back would otherwise take both cores from
/// the polling (at 10,002 instances two such clients made kill → writable 187 ms).
#[derive(Clone)]
pub(crate) struct Backroom {
    jobs: std::sync::mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Backroom {
    pub(crate) fn start() -> std::io::Result<Backroom> {
        let (jobs, waiting) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pointsman-backroom".into())
            .spawn(move || {
                // SAFETY: getpriority and setpriority have no memory preconditions;
                // PRIO_PROCESS with 0 is the calling thread on Linux.
                unsafe {
                    let now = libc::getpriority(libc::PRIO_PROCESS, 0);
                    libc::setpriority(libc::PRIO_PROCESS, 0, (now + BACKROOM_NICE_ABOVE).min(19));
                }
                for job in waiting {
                    job();
                }
            })?;
        Ok(Backroom { jobs })
    }

    /// Runs `work` in the backroom and returns what it returns (a panic in it is the
    /// caller's again); the calling worker's tasks go to another thread meanwhile.
    pub(crate) fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        off_the_workers(|| {
            let (done, result) = std::sync::mpsc::sync_channel(1);
            let job: Job = Box::new(move || {
                let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
            });
            let outcome = match self.jobs.send(job) {
                Ok(()) => result
                    .recv()
                    .expect("the backroom answers every job it takes"),
                // The backroom's thread is gone (never, short of the process ending):
                // the work runs here.
                Err(std::sync::mpsc::SendError(job)) => {
                    job();
                    result.recv().expect("the job just ran")
                }
            };
            outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_here() -> i32 {
        // SAFETY: no memory preconditions; 0 is the calling thread on Linux.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn the_backroom_does_the_work_at_a_lower_priority_and_hands_back_its_result() {
        let backroom = Backroom::start().expect("a backroom");
        let caller = nice_here();
        let (nice, thread) = backroom.run(|| {
            (
                nice_here(),
                std::thread::current().name().map(str::to_string),
            )
        });
        assert_eq!(thread.as_deref(), Some("pointsman-backroom"));
        assert_eq!(nice, (caller + BACKROOM_NICE_ABOVE).min(19));
    }

    #[test]
    fn a_panic_in_the_backroom_is_the_callers_and_the_backroom_goes_on() {
        let backroom = Backroom::start().expect("a backroom");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            backroom.run(|| -> u32 { panic!("a bug in a view") })
        }));
        assert!(panicked.is_err());
        assert_eq!(backroom.run(|| 7), 7);
    }

    /// One worker: had it waited for the backroom itself, nothing else would run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_worker_waiting_for_the_backroom_leaves_its_tasks_to_another_thread() {
        let backroom = Backroom::start().expect("a backroom");
        let (release, held) = std::sync::mpsc::channel::<()>();
        let waiting = tokio::spawn({
            let backroom = backroom.clone();
            async move { backroom.run(move || held.recv().is_ok()) }
        });
        // The runtime still runs tasks while its worker waits on the backroom (read
        // from this thread, which is not the worker, without the runtime's timers).
        let (sent, answered) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            let _ = sent.send(1 + 1);
        });
        let answered = answered.recv_timeout(std::time::Duration::from_secs(10));
        release.send(()).expect("the job waits");
        assert_eq!(answered, Ok(2), "nothing ran while the worker waited");
        assert!(waiting.await.expect("no panic"));
    }
}
