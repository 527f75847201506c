//! pointsman keeps MySQL and MariaDB replication topologies available: it discovers
//! them, watches them, fails over and moves the traffic.
//!
//! The flow: `mysql` probes instances → `discovery` keeps a `topology::Snapshot` →
//! `analysis` judges it (pure) → `api` and `client` show it. `store` keeps what must
//! survive a restart; `sandbox` runs real local topologies for the demo and the tests.

pub mod agent;
pub mod analysis;
pub mod api;
pub mod claims;
pub mod client;
pub mod config;
pub mod crash;
pub mod demo;
pub mod discovery;
pub mod error_text;
pub mod leader;
pub mod mysql;
pub mod orchestrator_import;
pub mod recovery;
pub mod routing;
pub mod sandbox;
pub mod store;
pub mod topology;
pub(crate) mod workers;
