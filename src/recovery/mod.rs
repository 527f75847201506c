//! Recovery: replacing a failed primary. `plan` decides who takes over (pure),
//! `execute` carries the plan out step by step, `hooks` runs the operators' commands at
//! each moment, `coordinator` decides when to act at all, `resume` settles a recovery
//! whose agent stopped part-way, `coverage` says whether a failure would be recovered
//! automatically now, `roles` keeps each server's read-only role across its
//! own restarts, and `operate` runs an operator's single-instance actions (relocate,
//! replication, read_only). `lane` is the runtime a recovery runs on, apart from the
//! polling. `fake` is an in-memory topology behind the server edge
//! (`mysql::edge`), for the unit tests of the executor, the coordinator's failover, the
//! switchover and resumption.

pub mod calm;
pub mod coordinator;
pub mod coverage;
pub mod drill;
pub mod execute;
#[cfg(test)]
pub(crate) mod fake;
pub mod hooks;
pub mod journal_mirror;
pub mod lane;
pub mod operate;
pub mod orchestrator_hooks;
pub mod plan;
pub mod resume;
pub mod roles;
pub mod switchover;
pub mod what_if;
