//! The routes the topology calls for (pure): per aliased cluster, the writer (its
//! primary) and the readers (replicas fit to serve reads). No clock, no I/O: the engine
//! passes in the snapshot, the fences, the downtimes, the pins a failover in progress
//! has set and the readers of the routes before.
//!
//! Reads keep being served while a cluster's writer changes: a replica that was a
//! reader stays one while the primary cannot be reached or a failover holds a pin,
//! though its replication is broken (its source died, or the failover is re-pointing
//! it): it holds the newest data there is. Only unreachable, downtimed or fenced
//! servers leave the readers then.

use crate::topology::{ClusterView, InstanceKey, Snapshot};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// `routing.max_reader_lag` and `routing.primary_serves_reads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutePolicy {
    pub max_reader_lag: Duration,
    pub primary_serves_reads: bool,
}

/// What a failover or switchover in progress says about a cluster's writer, ahead of
/// the topology: routes follow the promotion at once instead of at the next poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The writer to route to; `None` while the old one is withdrawn and the new one
    /// not yet promoted.
    pub writer: Option<InstanceKey>,
    /// The writer being replaced: never the writer while the pin holds.
    pub withdrawn: InstanceKey,
    /// Whether `withdrawn` is cut off from every route (a failover's old primary), or
    /// only no longer the writer (a switchover's, which stays a member and reads again
    /// once it replicates).
    pub fence: bool,
}

/// One cluster's routes, before addresses are resolved and an epoch is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredRoute {
    pub cluster: String,
    pub writer: Option<InstanceKey>,
    pub readers: Vec<InstanceKey>,
    pub standby: Vec<InstanceKey>,
    pub fenced: Vec<InstanceKey>,
}

/// The routes for every aliased cluster whose primary has been reached at least once.
/// A cluster whose primary was never seen is left out, so backends are not touched
/// about it: an agent that just started knows too little to withdraw anything.
pub fn desired_routes(
    snapshot: &Snapshot,
    clusters: &[ClusterView],
    fenced: &[(InstanceKey, String)],
    downtimed: &HashSet<InstanceKey>,
    pins: &HashMap<String, Pin>,
    previous_readers: &HashSet<InstanceKey>,
    policy: RoutePolicy,
) -> BTreeMap<String, DesiredRoute> {
    let mut routes = BTreeMap::new();
    for cluster in clusters {
        let Some(alias) = &cluster.alias else {
            continue;
        };
        let primary_known = snapshot
            .get(&cluster.primary)
            .is_some_and(|i| i.facts.is_some());
        let pin = pins.get(alias);
        if !primary_known && pin.is_none() {
            continue;
        }
        let writer_changing = pin.is_some()
            || !snapshot
                .get(&cluster.primary)
                .is_some_and(|i| i.is_reachable());
        let mut fenced_here: Vec<InstanceKey> = fenced
            .iter()
            .filter(|(key, name)| name == alias || cluster.members.contains(key))
            .map(|(key, _)| key.clone())
            .collect();
        let mut writer = Some(cluster.primary.clone());
        if let Some(pin) = pin {
            writer = pin.writer.clone();
            if pin.fence {
                fenced_here.push(pin.withdrawn.clone());
            }
        }
        fenced_here.sort();
        fenced_here.dedup();
        if writer.as_ref().is_some_and(|w| fenced_here.contains(w)) {
            writer = None;
        }
        let mut members: Vec<InstanceKey> = cluster.members.clone();
        if let Some(writer) = &writer {
            if !members.contains(writer) {
                members.push(writer.clone());
            }
        }
        let mut readers = Vec::new();
        let mut standby = Vec::new();
        for key in &members {
            if fenced_here.contains(key) {
                continue;
            }
            let is_writer = writer.as_ref() == Some(key);
            let serves = if is_writer {
                policy.primary_serves_reads
                    && snapshot.get(key).is_some_and(|i| i.is_reachable())
                    && !downtimed.contains(key)
            } else {
                fit_to_read(snapshot, key, downtimed, policy.max_reader_lag)
                    || (previous_readers.contains(key)
                        && keeps_reading(snapshot, key, downtimed, writer_changing))
            };
            // A writer that does not serve reads stands by among the readers: a replica
            // promoted leaves them drained, not cut (sessions a proxy tied to it go on),
            // and stays so.
            if serves {
                readers.push(key.clone());
            } else {
                standby.push(key.clone());
            }
        }
        readers.sort();
        standby.sort();
        routes.insert(
            alias.clone(),
            DesiredRoute {
                cluster: alias.clone(),
                writer,
                readers,
                standby,
                fenced: fenced_here,
            },
        );
    }
    routes
}

/// A replica that answers, replicates with both threads, is no further behind than
/// `max_lag`, and is not downtimed.
fn fit_to_read(
    snapshot: &Snapshot,
    key: &InstanceKey,
    downtimed: &HashSet<InstanceKey>,
    max_lag: Duration,
) -> bool {
    let Some(instance) = snapshot.get(key) else {
        return false;
    };
    let Some(replication) = instance.facts.as_ref().and_then(|f| f.replication.as_ref()) else {
        return false;
    };
    instance.is_reachable()
        && replication.is_replicating()
        && replication
            .seconds_behind_source
            .is_some_and(|lag| Duration::from_secs(lag) <= max_lag)
        && !downtimed.contains(key)
}

/// A reader whose replication broke because its writer is changing: it still answers
/// and is not downtimed, and the cluster's writer is changing or its own source cannot
/// be reached.
fn keeps_reading(
    snapshot: &Snapshot,
    key: &InstanceKey,
    downtimed: &HashSet<InstanceKey>,
    writer_changing: bool,
) -> bool {
    let Some(instance) = snapshot.get(key) else {
        return false;
    };
    let source_gone = instance
        .source()
        .is_some_and(|source| !snapshot.get(source).is_some_and(|s| s.is_reachable()));
    instance.is_reachable() && !downtimed.contains(key) && (writer_changing || source_gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::cluster::ClusterAlias;
    use crate::topology::instance::tests_support::{primary, replica};
    use crate::topology::{build_clusters, Instance, Snapshot};
    use std::time::SystemTime;

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    const POLICY: RoutePolicy = RoutePolicy {
        max_reader_lag: Duration::from_secs(10),
        primary_serves_reads: false,
    };

    /// 1 is the primary of 2, 3 and 4; the cluster is aliased "app".
    fn snapshot() -> Snapshot {
        let mut snapshot = Snapshot::default();
        for instance in [
            primary(key(1)),
            replica(key(2), key(1)),
            replica(key(3), key(1)),
            replica(key(4), key(1)),
        ] {
            snapshot.insert(instance);
        }
        snapshot
    }

    fn aliased(snapshot: &Snapshot) -> Vec<ClusterView> {
        build_clusters(
            snapshot,
            &[ClusterAlias {
                alias: "app".into(),
                instances: vec![key(1)],
            }],
        )
    }

    fn routes_of(
        snapshot: &Snapshot,
        fenced: &[(InstanceKey, String)],
        downtimed: &[InstanceKey],
        pins: &HashMap<String, Pin>,
        policy: RoutePolicy,
    ) -> BTreeMap<String, DesiredRoute> {
        desired_routes(
            snapshot,
            &aliased(snapshot),
            fenced,
            &downtimed.iter().cloned().collect(),
            pins,
            &HashSet::new(),
            policy,
        )
    }

    fn replication(instance: &mut Instance) -> &mut crate::topology::ReplicationStatus {
        instance
            .facts
            .as_mut()
            .and_then(|f| f.replication.as_mut())
            .expect("a replica")
    }

    #[test]
    fn the_primary_writes_and_healthy_replicas_read() {
        let routes = routes_of(&snapshot(), &[], &[], &HashMap::new(), POLICY);
        let app = &routes["app"];
        assert_eq!(app.writer, Some(key(1)));
        assert_eq!(app.readers, vec![key(2), key(3), key(4)]);
        assert_eq!(
            app.standby,
            vec![key(1)],
            "the writer stands by as a reader"
        );
        assert!(app.fenced.is_empty());
    }

    #[test]
    fn lagging_broken_unreachable_and_downtimed_replicas_stand_by() {
        let mut snapshot = snapshot();
        let lagging = snapshot.get_mut(&key(2)).unwrap();
        replication(lagging).seconds_behind_source = Some(11);
        let broken = snapshot.get_mut(&key(3)).unwrap();
        replication(broken).sql_running = false;
        replication(broken).seconds_behind_source = None;
        let routes = routes_of(&snapshot, &[], &[key(4)], &HashMap::new(), POLICY);
        assert_eq!(routes["app"].readers, Vec::<InstanceKey>::new());
        assert_eq!(routes["app"].standby, vec![key(1), key(2), key(3), key(4)]);

        let mut snapshot = self::snapshot();
        let gone = snapshot.get_mut(&key(2)).unwrap();
        gone.last_failure = Some(SystemTime::now());
        gone.unreachable_since = Some(SystemTime::now());
        let routes = routes_of(&snapshot, &[], &[], &HashMap::new(), POLICY);
        assert_eq!(routes["app"].readers, vec![key(3), key(4)]);
        assert_eq!(routes["app"].standby, vec![key(1), key(2)]);
    }

    #[test]
    fn the_primary_reads_too_when_configured() {
        let policy = RoutePolicy {
            primary_serves_reads: true,
            ..POLICY
        };
        let routes = routes_of(&snapshot(), &[], &[], &HashMap::new(), policy);
        assert_eq!(routes["app"].readers, vec![key(1), key(2), key(3), key(4)]);
    }

    #[test]
    fn an_unreachable_primary_keeps_its_routes_until_it_is_fenced() {
        let mut snapshot = snapshot();
        let primary = snapshot.get_mut(&key(1)).unwrap();
        primary.last_failure = Some(SystemTime::now());
        primary.unreachable_since = Some(SystemTime::now());
        let routes = routes_of(&snapshot, &[], &[], &HashMap::new(), POLICY);
        assert_eq!(
            routes["app"].writer,
            Some(key(1)),
            "unreachable is not dead"
        );

        let fenced = [(key(1), "app".to_string())];
        let routes = routes_of(&snapshot, &fenced, &[], &HashMap::new(), POLICY);
        assert_eq!(routes["app"].writer, None);
        assert_eq!(routes["app"].fenced, vec![key(1)]);
        assert!(!routes["app"].readers.contains(&key(1)));
    }

    #[test]
    fn a_pin_routes_ahead_of_the_topology_and_never_names_the_withdrawn_writer() {
        let withdrawn = HashMap::from([(
            "app".to_string(),
            Pin {
                writer: None,
                withdrawn: key(1),
                fence: true,
            },
        )]);
        let routes = routes_of(&snapshot(), &[], &[], &withdrawn, POLICY);
        assert_eq!(routes["app"].writer, None);
        assert_eq!(routes["app"].fenced, vec![key(1)]);

        let promoted = HashMap::from([(
            "app".to_string(),
            Pin {
                writer: Some(key(2)),
                withdrawn: key(1),
                fence: true,
            },
        )]);
        let routes = routes_of(&snapshot(), &[], &[], &promoted, POLICY);
        assert_eq!(routes["app"].writer, Some(key(2)));
        assert_eq!(routes["app"].readers, vec![key(3), key(4)]);
        assert_eq!(
            routes["app"].standby,
            vec![key(2)],
            "the promoted replica's reads are drained while the pin holds"
        );

        // A switchover's old primary is no longer the writer but not fenced: it is
        // drained (standby) until it replicates and reads again.
        let switched = HashMap::from([(
            "app".to_string(),
            Pin {
                writer: Some(key(2)),
                withdrawn: key(1),
                fence: false,
            },
        )]);
        let routes = routes_of(&snapshot(), &[], &[], &switched, POLICY);
        assert_eq!(routes["app"].writer, Some(key(2)));
        assert!(routes["app"].fenced.is_empty());
        assert_eq!(routes["app"].standby, vec![key(1), key(2)]);
    }

    /// The primary died: its replicas' IO threads fail. Those that served reads keep
    /// serving them through the failover (a pin), until they are re-pointed; a replica
    /// that did not read before does not start, and one that stops answering leaves.
    #[test]
    fn readers_keep_serving_while_the_writer_changes() {
        let mut snapshot = snapshot();
        let dead = snapshot.get_mut(&key(1)).unwrap();
        dead.last_failure = Some(SystemTime::now());
        dead.unreachable_since = Some(SystemTime::now());
        for port in [2, 3, 4] {
            let orphan = replication(snapshot.get_mut(&key(port)).unwrap());
            orphan.io_running = crate::topology::IoThreadState::Connecting;
            orphan.seconds_behind_source = None;
        }
        let before: HashSet<InstanceKey> = [key(2), key(3)].into();
        let routes = |snapshot: &Snapshot, pins: &HashMap<String, Pin>| {
            desired_routes(
                snapshot,
                &aliased(snapshot),
                &[],
                &HashSet::new(),
                pins,
                &before,
                POLICY,
            )
        };
        let app = &routes(&snapshot, &HashMap::new())["app"];
        assert_eq!(app.readers, vec![key(2), key(3)], "the primary is down");
        assert_eq!(app.standby, vec![key(1), key(4)], "4 did not read before");

        // The failover promotes 2; 3 is stopped to be re-pointed (both threads off).
        let promoted = HashMap::from([(
            "app".to_string(),
            Pin {
                writer: Some(key(2)),
                withdrawn: key(1),
                fence: true,
            },
        )]);
        let stopped = replication(snapshot.get_mut(&key(3)).unwrap());
        stopped.io_running = crate::topology::IoThreadState::No;
        stopped.sql_running = false;
        stopped.source = key(2);
        let app = &routes(&snapshot, &promoted)["app"];
        assert_eq!(app.writer, Some(key(2)));
        assert_eq!(
            app.readers,
            vec![key(3)],
            "the new writer leaves the readers"
        );
        assert_eq!(
            app.standby,
            vec![key(2), key(4)],
            "the new writer is drained, not cut"
        );

        // Without the pin and with the primary back, a broken replica stands by again.
        let mut healthy = self::snapshot();
        let broken = replication(healthy.get_mut(&key(2)).unwrap());
        broken.io_running = crate::topology::IoThreadState::No;
        let app = &routes(&healthy, &HashMap::new())["app"];
        assert_eq!(app.readers, vec![key(3), key(4)]);
        assert_eq!(app.standby, vec![key(1), key(2)]);

        // An unreachable reader leaves the readers even while the writer changes.
        let gone = snapshot.get_mut(&key(3)).unwrap();
        gone.unreachable_since = Some(SystemTime::now());
        let app = &routes(&snapshot, &promoted)["app"];
        assert!(app.readers.is_empty(), "{app:?}");
    }

    #[test]
    fn unaliased_clusters_and_never_seen_primaries_are_not_routed() {
        let snapshot = snapshot();
        let clusters = build_clusters(&snapshot, &[]);
        let none = desired_routes(
            &snapshot,
            &clusters,
            &[],
            &HashSet::new(),
            &HashMap::new(),
            &HashSet::new(),
            POLICY,
        );
        assert!(none.is_empty());

        let mut unseen = self::snapshot();
        unseen.get_mut(&key(1)).unwrap().facts = None;
        let routes = routes_of(&unseen, &[], &[], &HashMap::new(), POLICY);
        assert!(routes.is_empty(), "{routes:?}");
    }
}
