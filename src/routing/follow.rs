//! Followers answer from the leader's routes. With `[ha]` and Consul routing, only the
//! leader decides routes; every other agent keeps its own DNS responder in line with
//! the leader's routes record (`<routes_prefix>/<cluster>`), read with Consul's
//! blocking queries, so every agent's DNS says the same thing at the same moment. When
//! the leader is gone the last routes read keep being answered; an agent that comes to
//! lead answers from its own routes again.
//!
//! This module owns the watch of the record; the engine decides which routes each
//! backend is given (`engine::drive`).

use super::consul::ConsulRouter;
use super::Routes;
use crate::leader::Lease;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long one blocking read of the routes record waits for a change.
const BLOCKING_WAIT: Duration = Duration::from_secs(30);
/// After a failed read, how long until the next (Consul down, or a follower cut off).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Reads the leader's routes while this agent follows and publishes them on `leader`
/// (never `None` again once read); ends when `stopping` turns true.
pub async fn follow_leader(
    source: Arc<ConsulRouter>,
    lease: Lease,
    leader: watch::Sender<Option<Arc<Routes>>>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut roles = lease.subscribe();
    let mut index: u64 = 0;
    let mut failing = false;
    loop {
        if *stopping.borrow() {
            return;
        }
        if lease.gate().is_ok() {
            // Leading: its own routes are the truth. Read again from scratch afterwards.
            index = 0;
            tokio::select! {
                changed = roles.changed() => if changed.is_err() { return },
                _ = stopping.changed() => return,
            }
            continue;
        }
        let block = (index > 0).then_some((index, BLOCKING_WAIT));
        let read = tokio::select! {
            read = source.recorded_routes(block) => read,
            changed = roles.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            _ = stopping.changed() => return,
        };
        match read {
            Ok((answered, clusters)) => {
                if failing {
                    tracing::info!("the leader's routes can be read again: DNS follows them");
                    failing = false;
                }
                // Consul's rule: an index that went backwards (a restored snapshot)
                // restarts the watch; one that did not move means nothing changed.
                index = if answered < index { 0 } else { answered.max(1) };
                let routes = Routes {
                    version: answered,
                    clusters,
                };
                leader.send_if_modified(|current| {
                    let same = current
                        .as_ref()
                        .is_some_and(|c| c.clusters == routes.clusters);
                    if !same {
                        *current = Some(Arc::new(routes));
                    }
                    !same
                });
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot read the leader's routes record: DNS keeps answering the last routes read");
                    failing = true;
                }
                index = 0;
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_AFTER) => {}
                    _ = stopping.changed() => return,
                }
            }
        }
    }
}
