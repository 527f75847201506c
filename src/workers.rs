//! Keeping the async runtime's workers free for the polling. On a large fleet some
//! synchronous work takes tens of milliseconds (judging every cluster, building every
//! cluster's detail for the API); done on a worker, it leaves the probes and their
//! parks' wake-ups to the other worker, and a death that lands meanwhile is noticed
//! only when the work ends. `off_the_workers` runs such work with the worker's tasks
//! handed to another thread first.

/// Runs `work` with the current worker's other tasks handed to another thread
/// meanwhile (`block_in_place`); run as is outside a multi-threaded runtime's worker.
pub(crate) fn off_the_workers<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
