//! The ProxySQL backend: through one admin interface, each routed cluster's writer
//! hostgroup holds its primary ONLINE, its reader hostgroup its readers ONLINE, members
//! out of the reader set OFFLINE_SOFT (drained, not cut), and fenced old primaries
//! OFFLINE_HARD in both — every hostgroup, because ProxySQL's read_only monitor puts a
//! writable server marked OFFLINE_HARD in the writer hostgroup alone back ONLINE.
//!
//! The admin interface speaks SQLite over the MySQL protocol, runs only the first
//! statement of a query and has no transactions (`shared/reference/proxysql-admin.md`):
//! so one statement per query, the memory table is edited row by row, and the change
//! reaches traffic at once and whole with `LOAD MYSQL SERVERS TO RUNTIME` (atomic in
//! ProxySQL). `runtime_mysql_servers` is then read back to verify. Saving to disk, so a
//! restart does not bring old routes back, is a separate step (`persist`) that the
//! engine runs once the routes are quiet: `SAVE MYSQL SERVERS TO DISK` can take a few
//! hundred milliseconds on a busy machine, and a failover must not wait for it.
//!
//! Between reconciles, `check` reads `mysql_servers` and `runtime_mysql_servers` every
//! `check_interval` over a connection kept open, so a hand edit, a restart from an old
//! disk config (seen as the kept connection breaking) or ProxySQL's monitor putting a
//! fenced server back in service is repaired within about that long. Rows of hostgroups
//! pointsman is not told about are never touched; the monitor's own moves within the
//! cluster's hostgroups (`mysql_replication_hostgroups`) are not fought: read_only is
//! already right on every instance when pointsman loads, so both agree.
//!
//! Real ProxySQL leaves an OFFLINE_HARD row that no connection uses out of
//! `runtime_mysql_servers`: a fenced server is right in runtime when it is absent or
//! OFFLINE_HARD there, and `inspect` says so.

use super::{Change, ClusterRoute, Inspection, RouteError, Router, Routes};
use crate::config::{HostgroupConfig, ProxySqlSettings};
use crate::topology::InstanceKey;
use futures::future::BoxFuture;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A row of `mysql_servers` as far as routing cares.
type RowKey = (u32, InstanceKey);

pub struct ProxySqlRouter {
    settings: ProxySqlSettings,
    /// The admin connection reconciles and checks use, kept open between them: a
    /// failover does not pay for a connect, and a restart of ProxySQL shows as this
    /// connection breaking.
    kept: tokio::sync::Mutex<Option<Conn>>,
}

impl ProxySqlRouter {
    pub fn new(settings: ProxySqlSettings) -> Self {
        Self {
            settings,
            kept: tokio::sync::Mutex::new(None),
        }
    }

    fn address(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    fn error(&self, what: impl std::fmt::Display) -> RouteError {
        RouteError(format!("proxysql {}: {what}", self.address()))
    }

    async fn connect(&self) -> Result<Admin<'_>, RouteError> {
        let opts = OptsBuilder::default()
            .ip_or_hostname(self.settings.host.clone())
            .tcp_port(self.settings.port)
            .user(Some(self.settings.user.clone()))
            .pass(Some(self.settings.password.expose().to_string()))
            // The admin interface has no socket, and answers no @@max_allowed_packet:
            // give mysql_async what it would otherwise ask for.
            .prefer_socket(false)
            .max_allowed_packet(Some(16 * 1024 * 1024))
            .wait_timeout(Some(28800))
            .stmt_cache_size(0);
        let conn = tokio::time::timeout(self.settings.timeout, Conn::new(opts))
            .await
            .map_err(|_| {
                self.error(format!(
                    "no answer within {} (is ProxySQL running, and is routing.proxysql.address its admin port?)",
                    humantime::format_duration(self.settings.timeout)
                ))
            })?
            .map_err(|e| {
                let text = crate::mysql::driver_message(&e);
                if text.contains("Access denied") {
                    self.error(format!("{text} (check routing.proxysql user and password)"))
                } else {
                    self.error(format!("cannot connect: {text}"))
                }
            })?;
        Ok(Admin { router: self, conn })
    }

    /// The rows pointsman manages, from `table`: those of every configured hostgroup.
    async fn rows(
        &self,
        admin: &mut Admin<'_>,
        table: &str,
    ) -> Result<BTreeMap<RowKey, String>, RouteError> {
        let groups: Vec<String> = self
            .settings
            .hostgroups
            .iter()
            .flat_map(|h| [h.writer, h.reader])
            .map(|g| g.to_string())
            .collect();
        let rows = admin
            .query(&format!(
                "SELECT hostgroup_id, hostname, port, status FROM {table} WHERE hostgroup_id IN ({})",
                groups.join(",")
            ))
            .await?;
        let mut found = BTreeMap::new();
        for row in rows {
            let [group, host, port, status] = row.as_slice() else {
                return Err(self.error(format!("unexpected columns from {table}")));
            };
            let (Ok(group), Ok(port)) = (group.parse::<u32>(), port.parse::<u16>()) else {
                return Err(self.error(format!(
                    "{table} has a row that is not a hostgroup and port: {group} {host}:{port}"
                )));
            };
            found.insert(
                (group, InstanceKey::new(host.clone(), port)),
                status.to_ascii_uppercase(),
            );
        }
        Ok(found)
    }

    async fn reconcile_now(&self, routes: &Routes) -> Result<Vec<Change>, RouteError> {
        let mut kept = self.kept.lock().await;
        if let Some(conn) = kept.take() {
            // The kept connection may have gone with a restart of ProxySQL: on any
            // failure the whole (idempotent) reconcile runs again on a new one.
            let mut admin = Admin { router: self, conn };
            match self.reconcile_with(&mut admin, routes).await {
                Ok(changes) => {
                    *kept = Some(admin.conn);
                    return Ok(changes);
                }
                Err(error) => tracing::debug!(
                    backend = %self.address(),
                    %error,
                    "the kept admin connection failed: reconciling again on a new one"
                ),
            }
        }
        let mut admin = self.connect().await?;
        let changes = self.reconcile_with(&mut admin, routes).await?;
        *kept = Some(admin.conn);
        Ok(changes)
    }

    /// Whether memory and runtime still hold `routes`, over the kept connection; an
    /// error (the connection broke: ProxySQL restarted) makes the engine reconcile.
    async fn check_now(&self, routes: &Routes) -> Result<bool, RouteError> {
        let mut kept = self.kept.lock().await;
        let mut admin = match kept.take() {
            Some(conn) => Admin { router: self, conn },
            None => self.connect().await?,
        };
        let memory = self.rows(&mut admin, "mysql_servers").await?;
        let runtime = self.rows(&mut admin, "runtime_mysql_servers").await?;
        *kept = Some(admin.conn);
        let memory_right = self.settings.hostgroups.iter().all(|hostgroups| {
            routes
                .clusters
                .get(&hostgroups.cluster)
                .is_none_or(|route| {
                    plan_statements(
                        &of_cluster(&memory, hostgroups),
                        &wanted_rows(route, hostgroups),
                    )
                    .is_empty()
                })
        });
        Ok(memory_right && self.runtime_problems(routes, &runtime).is_empty())
    }

    /// Saves the configured hostgroups' rows to disk when the disk copy differs, on a
    /// connection of its own (so a slow SAVE never holds the kept one).
    async fn persist_now(&self) -> Result<bool, RouteError> {
        let mut admin = self.connect().await?;
        let result = async {
            let disk = self.rows(&mut admin, "disk.mysql_servers").await?;
            let memory = self.rows(&mut admin, "mysql_servers").await?;
            if disk == memory {
                return Ok(false);
            }
            let started = std::time::Instant::now();
            admin.execute("SAVE MYSQL SERVERS TO DISK").await?;
            tracing::debug!(
                backend = %self.address(),
                took_ms = started.elapsed().as_millis() as u64,
                "saved mysql_servers to disk"
            );
            Ok(true)
        }
        .await;
        admin.close().await;
        result
    }

    async fn reconcile_with(
        &self,
        admin: &mut Admin<'_>,
        routes: &Routes,
    ) -> Result<Vec<Change>, RouteError> {
        let memory = self.rows(admin, "mysql_servers").await?;
        let mut changes = Vec::new();
        let mut statements = Vec::new();
        let mut wanted_all = BTreeMap::new();
        for hostgroups in &self.settings.hostgroups {
            // A cluster not routed yet (its primary never seen) is left as it is.
            let Some(route) = routes.clusters.get(&hostgroups.cluster) else {
                continue;
            };
            let wanted = wanted_rows(route, hostgroups);
            let current = of_cluster(&memory, hostgroups);
            for (statement, what) in plan_statements(&current, &wanted) {
                statements.push(statement);
                changes.push(Change {
                    cluster: route.cluster.clone(),
                    what,
                });
            }
            wanted_all.extend(wanted);
        }
        for statement in &statements {
            admin.execute(statement).await?;
        }
        // With memory changed the LOAD is due anyway: runtime is read only after it.
        let runtime_right = !statements.is_empty() || {
            let runtime = self.rows(admin, "runtime_mysql_servers").await?;
            self.runtime_problems(routes, &runtime).is_empty()
        };
        if !statements.is_empty() || !runtime_right {
            if statements.is_empty() {
                changes.push(Change {
                    cluster: "*".into(),
                    what:
                        "runtime_mysql_servers differed from mysql_servers: loaded to runtime again"
                            .into(),
                });
            }
            admin.execute("LOAD MYSQL SERVERS TO RUNTIME").await?;
            let runtime = self.rows(admin, "runtime_mysql_servers").await?;
            let problems = self.runtime_problems(routes, &runtime);
            if !problems.is_empty() {
                return Err(self.error(format!(
                    "after LOAD MYSQL SERVERS TO RUNTIME, runtime_mysql_servers still {} (ProxySQL's read_only monitor moves servers by read_only: is read_only right on them?)",
                    problems.join("; ")
                )));
            }
        }
        Ok(changes)
    }

    /// What is wrong in runtime for traffic: a writer hostgroup with any ONLINE server
    /// but the writer, a fenced server ONLINE anywhere, a reader not in service. Rows
    /// the monitor adds on its own (the writer as a reader too) are not wrong.
    fn runtime_problems(&self, routes: &Routes, runtime: &BTreeMap<RowKey, String>) -> Vec<String> {
        let mut problems = Vec::new();
        let in_service = |status: &String| status == "ONLINE" || status == "SHUNNED";
        for hostgroups in &self.settings.hostgroups {
            let Some(route) = routes.clusters.get(&hostgroups.cluster) else {
                continue;
            };
            let writer = route.writer.as_ref().map(|w| &w.key);
            for ((group, key), status) in runtime {
                if *group == hostgroups.writer && in_service(status) && Some(key) != writer {
                    problems.push(format!("has {key} {status} in writer hostgroup {group}"));
                }
                if (*group == hostgroups.writer || *group == hostgroups.reader)
                    && route.fenced.contains(key)
                    && status != "OFFLINE_HARD"
                {
                    problems.push(format!(
                        "has the fenced {key} {status} in hostgroup {group}"
                    ));
                }
            }
            if let Some(writer) = writer {
                let row = runtime.get(&(hostgroups.writer, writer.clone()));
                if !row.is_some_and(in_service) {
                    problems.push(format!(
                        "lacks the writer {writer} in hostgroup {}",
                        hostgroups.writer
                    ));
                }
            }
            for reader in &route.readers {
                let row = runtime.get(&(hostgroups.reader, reader.key.clone()));
                if !row.is_some_and(in_service) {
                    problems.push(format!(
                        "lacks the reader {} in hostgroup {}",
                        reader.key, hostgroups.reader
                    ));
                }
            }
        }
        problems
    }

    /// Per cluster, what traffic uses (`runtime_mysql_servers`) next to what runtime
    /// should hold, plus a line when memory or disk lags behind it.
    async fn inspect_now(&self, routes: &Routes) -> Result<Vec<Inspection>, RouteError> {
        let mut admin = self.connect().await?;
        let read = async {
            Ok::<_, RouteError>((
                self.rows(&mut admin, "mysql_servers").await?,
                self.rows(&mut admin, "runtime_mysql_servers").await?,
                self.rows(&mut admin, "disk.mysql_servers").await?,
            ))
        }
        .await;
        admin.close().await;
        let (memory, runtime, disk) = read?;
        let mut inspections = Vec::new();
        for hostgroups in &self.settings.hostgroups {
            let Some(route) = routes.clusters.get(&hostgroups.cluster) else {
                continue;
            };
            let wanted = wanted_rows(route, hostgroups);
            let should = wanted
                .iter()
                .map(|((group, key), status)| {
                    let status = if status == "OFFLINE_HARD" {
                        "OFFLINE_HARD or absent (fenced)"
                    } else {
                        status
                    };
                    format!(
                        "hostgroup {group} {key} {status}{}",
                        role(*group, hostgroups)
                    )
                })
                .collect();
            let mut now: Vec<String> = of_cluster(&runtime, hostgroups)
                .iter()
                .map(|((group, key), status)| {
                    format!(
                        "hostgroup {group} {key} {status}{}",
                        role(*group, hostgroups)
                    )
                })
                .collect();
            let memory_plan = plan_statements(&of_cluster(&memory, hostgroups), &wanted);
            if !memory_plan.is_empty() {
                let what: Vec<String> = memory_plan.into_iter().map(|(_, what)| what).collect();
                now.push(format!(
                    "mysql_servers (memory) differs: {}",
                    what.join("; ")
                ));
            }
            if of_cluster(&disk, hostgroups) != of_cluster(&memory, hostgroups) {
                now.push("not yet saved to disk (disk.mysql_servers differs from memory)".into());
            }
            let single = Routes {
                version: routes.version,
                clusters: BTreeMap::from([(route.cluster.clone(), route.clone())]),
            };
            let runtime_right = self.runtime_problems(&single, &runtime).is_empty();
            inspections.push(Inspection {
                cluster: route.cluster.clone(),
                should,
                now,
                in_sync: runtime_right
                    && plan_statements(&of_cluster(&memory, hostgroups), &wanted).is_empty(),
            });
        }
        Ok(inspections)
    }
}

fn role(group: u32, hostgroups: &HostgroupConfig) -> &'static str {
    if group == hostgroups.writer {
        " (writer hostgroup)"
    } else {
        " (reader hostgroup)"
    }
}

/// The rows a cluster's hostgroups should hold.
fn wanted_rows(route: &ClusterRoute, hostgroups: &HostgroupConfig) -> BTreeMap<RowKey, String> {
    let mut rows = BTreeMap::new();
    for key in &route.fenced {
        rows.insert((hostgroups.writer, key.clone()), "OFFLINE_HARD".to_string());
        rows.insert((hostgroups.reader, key.clone()), "OFFLINE_HARD".to_string());
    }
    for key in &route.standby {
        rows.insert((hostgroups.reader, key.clone()), "OFFLINE_SOFT".to_string());
    }
    for reader in &route.readers {
        rows.insert(
            (hostgroups.reader, reader.key.clone()),
            "ONLINE".to_string(),
        );
    }
    if let Some(writer) = &route.writer {
        rows.insert(
            (hostgroups.writer, writer.key.clone()),
            "ONLINE".to_string(),
        );
    }
    rows
}

fn of_cluster(
    rows: &BTreeMap<RowKey, String>,
    hostgroups: &HostgroupConfig,
) -> BTreeMap<RowKey, String> {
    rows.iter()
        .filter(|((group, _), _)| *group == hostgroups.writer || *group == hostgroups.reader)
        .map(|(key, status)| (key.clone(), status.clone()))
        .collect()
}

/// The statements that turn `current` into `wanted`, one per query, each with what it
/// does in words. Rows are matched by hostgroup, host and port; other columns (weight,
/// max_connections, comment) of existing rows are left as the operator set them.
fn plan_statements(
    current: &BTreeMap<RowKey, String>,
    wanted: &BTreeMap<RowKey, String>,
) -> Vec<(String, String)> {
    let mut statements = Vec::new();
    let keys: BTreeSet<&RowKey> = current.keys().chain(wanted.keys()).collect();
    for key @ (group, instance) in keys {
        let place = format!(
            "hostgroup_id={group} AND hostname={} AND port={}",
            quote(&instance.host),
            instance.port
        );
        match (current.get(key), wanted.get(key)) {
            (Some(now), Some(want)) if now == want => {}
            (Some(now), Some(want)) => statements.push((
                format!("UPDATE mysql_servers SET status={} WHERE {place}", quote(want)),
                format!("hostgroup {group} {instance} {now} → {want}"),
            )),
            (None, Some(want)) => statements.push((
                format!(
                    "INSERT INTO mysql_servers (hostgroup_id, hostname, port, status, comment) VALUES ({group}, {}, {}, {}, 'pointsman')",
                    quote(&instance.host),
                    instance.port,
                    quote(want)
                ),
                format!("hostgroup {group} {instance} added {want}"),
            )),
            (Some(now), None) => statements.push((
                format!("DELETE FROM mysql_servers WHERE {place}"),
                format!("hostgroup {group} {instance} ({now}) removed"),
            )),
            (None, None) => {}
        }
    }
    statements
}

/// A string literal in ProxySQL's SQLite dialect: `''` escapes a quote, backslashes
/// are literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// One admin connection; every statement under the configured time limit.
struct Admin<'a> {
    router: &'a ProxySqlRouter,
    conn: Conn,
}

impl Admin<'_> {
    fn limit(&self) -> Duration {
        self.router.settings.timeout
    }

    /// Runs one statement under the time limit; errors name the statement.
    async fn bounded<T>(
        router: &ProxySqlRouter,
        statement: &str,
        work: impl std::future::Future<Output = Result<T, mysql_async::Error>>,
    ) -> Result<T, RouteError> {
        let limit = router.settings.timeout;
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(limit, work).await;
        tracing::trace!(
            backend = %router.address(),
            statement,
            took_us = started.elapsed().as_micros() as u64,
            "proxysql admin statement"
        );
        result
            .map_err(|_| {
                router.error(format!(
                    "{statement}: no answer within {}",
                    humantime::format_duration(limit)
                ))
            })?
            .map_err(|e| router.error(format!("{statement}: {}", crate::mysql::driver_message(&e))))
    }

    async fn query(&mut self, statement: &str) -> Result<Vec<Vec<String>>, RouteError> {
        let rows: Vec<Row> =
            Self::bounded(self.router, statement, self.conn.query(statement)).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        row.get_opt::<Option<String>, usize>(i)
                            .and_then(Result::ok)
                            .flatten()
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .collect())
    }

    async fn execute(&mut self, statement: &str) -> Result<(), RouteError> {
        Self::bounded(self.router, statement, self.conn.query_drop(statement)).await
    }

    async fn close(self) {
        let _ = tokio::time::timeout(self.limit(), self.conn.disconnect()).await;
    }
}

impl Router for ProxySqlRouter {
    fn name(&self) -> String {
        format!("proxysql {}", self.address())
    }

    fn reconcile<'a>(
        &'a self,
        routes: &'a Routes,
    ) -> BoxFuture<'a, Result<Vec<Change>, RouteError>> {
        Box::pin(self.reconcile_now(routes))
    }

    fn inspect<'a>(
        &'a self,
        routes: &'a Routes,
    ) -> BoxFuture<'a, Result<Vec<Inspection>, RouteError>> {
        Box::pin(self.inspect_now(routes))
    }

    fn check_interval(&self) -> Option<Duration> {
        Some(self.settings.check_interval)
    }

    fn check<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<bool, RouteError>> {
        Box::pin(self.check_now(routes))
    }

    fn persist(&self) -> BoxFuture<'_, Result<bool, RouteError>> {
        Box::pin(self.persist_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Endpoint;
    use std::time::SystemTime;

    fn key(port: u16) -> InstanceKey {
        InstanceKey::new("127.0.0.1", port)
    }

    fn endpoint(port: u16) -> Endpoint {
        Endpoint {
            key: key(port),
            addresses: Vec::new(),
        }
    }

    const GROUPS: HostgroupConfig = HostgroupConfig {
        cluster: String::new(),
        writer: 10,
        reader: 20,
    };

    fn route(
        writer: Option<u16>,
        readers: &[u16],
        standby: &[u16],
        fenced: &[u16],
    ) -> ClusterRoute {
        ClusterRoute {
            cluster: "app".into(),
            writer: writer.map(endpoint),
            readers: readers.iter().copied().map(endpoint).collect(),
            standby: standby.iter().copied().map(key).collect(),
            fenced: fenced.iter().copied().map(key).collect(),
            epoch: 1,
            recovery_id: None,
            decided_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn rows(entries: &[(u32, u16, &str)]) -> BTreeMap<RowKey, String> {
        entries
            .iter()
            .map(|(group, port, status)| ((*group, key(*port)), status.to_string()))
            .collect()
    }

    #[test]
    fn a_fenced_old_primary_is_offline_hard_in_every_hostgroup_and_the_new_one_writes() {
        let before = rows(&[(10, 1, "ONLINE"), (20, 2, "ONLINE"), (20, 3, "ONLINE")]);
        let wanted = wanted_rows(&route(Some(2), &[3], &[], &[1]), &GROUPS);
        let plan = plan_statements(&before, &wanted);
        let sql: Vec<&str> = plan.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            sql,
            vec![
                "UPDATE mysql_servers SET status='OFFLINE_HARD' WHERE hostgroup_id=10 AND hostname='127.0.0.1' AND port=1",
                "INSERT INTO mysql_servers (hostgroup_id, hostname, port, status, comment) VALUES (10, '127.0.0.1', 2, 'ONLINE', 'pointsman')",
                "INSERT INTO mysql_servers (hostgroup_id, hostname, port, status, comment) VALUES (20, '127.0.0.1', 1, 'OFFLINE_HARD', 'pointsman')",
                "DELETE FROM mysql_servers WHERE hostgroup_id=20 AND hostname='127.0.0.1' AND port=2",
            ]
        );
        assert!(
            plan.iter().all(|(s, _)| !s.contains(';')),
            "one statement per query"
        );
    }

    #[test]
    fn nothing_to_do_when_the_rows_already_agree() {
        let wanted = wanted_rows(&route(Some(1), &[2], &[3], &[]), &GROUPS);
        assert!(plan_statements(&wanted, &wanted).is_empty());
        assert_eq!(
            wanted[&(20, key(3))],
            "OFFLINE_SOFT",
            "a lagging replica is drained"
        );
    }

    #[test]
    fn literals_follow_sqlite() {
        assert_eq!(quote(r"it's a\b"), r"'it''s a\b'");
    }
}
