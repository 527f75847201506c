//! Recovery: replacing a failed primary. `plan` decides who takes over (pure),
//! `execute` carries the plan out step by step, `hooks` runs the operators' commands at
//! each moment, and `coordinator` decides when to act at all.

pub mod coordinator;
pub mod execute;
pub mod hooks;
pub mod plan;
pub mod switchover;
