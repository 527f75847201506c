//! The topology model: plain data describing instances, their replication state and
//! the clusters they form. Everything here is pure — no sockets, no clock — so the
//! analysis stages can be tested on hand-built snapshots.

pub mod cluster;
pub mod gtid;
pub mod instance;
pub mod time;

pub use cluster::{build_clusters, ClusterMemo, ClusterTreeNode, ClusterView};
pub use instance::{
    ClusterInstances, GtidState, Instance, InstanceFacts, InstanceKey, Instances, IoThreadState,
    ReplicationStatus, SemiSync, ServerFlavor, ServerVersion, Snapshot,
};
