//! Crash points: named places in a recovery where the crash-safety tests kill the agent
//! (`tests/crash.rs`), to prove that whoever acts next settles what was begun. Built
//! only with the `failpoints` feature (tikv's `fail` crate); in every other build a
//! crash point is nothing at all. With it, `FAILPOINTS="<name>=return"` in the agent's
//! environment aborts the process at that point, as abruptly as a `kill -9`.

/// Aborts the agent here when the crash-safety tests ask for it; nothing otherwise.
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| {
            eprintln!(
                "pointsman: crash point {} reached: aborting (FAILPOINTS)",
                $name
            );
            std::process::abort()
        })
    };
}
