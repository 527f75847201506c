//! Recovery: replacing a failed primary. `plan` decides who takes over (pure); the
//! executor, hooks and switchover build on it.

pub mod plan;
