//! The edge every change of a server crosses: `Replication` opens an admin session on
//! an instance, and `AdminSession` holds the operations recovery, switchover and the
//! operators' actions perform with it — stop or start replication, wait for GTIDs,
//! promote, set read_only, re-point, attach. The real implementation is a `Connection`
//! speaking `admin`'s SQL; unit tests put an in-memory topology behind the same traits
//! (`recovery::fake`) so the order of the steps is checked without servers.
//!
//! Nothing here decides or gates: the executor wraps every session in the leader
//! lease's gate (`recovery::execute`), and reads (probes) do not come this way.

use super::admin::{self, LinkTls, ReplicationAccount};
use super::{ConnectSettings, Connection, MysqlError};
use crate::topology::InstanceKey;
use futures::future::BoxFuture;
use std::time::Duration;

/// Opens admin sessions on instances.
pub trait Replication: Send + Sync + 'static {
    fn open<'a>(
        &'a self,
        key: &'a InstanceKey,
    ) -> BoxFuture<'a, Result<Box<dyn AdminSession>, MysqlError>>;

    /// Takes a connection that is already open (a confirming probe's, with the same
    /// account) as a session, so the first change skips the connect; given back when
    /// this edge does not reach real servers (the in-memory topology of the tests).
    fn adopt(&self, connection: Connection) -> Result<Box<dyn AdminSession>, Connection> {
        Err(connection)
    }
}

/// An open session on one instance and the changes made through it. Each operation
/// says in `admin` what the server does.
pub trait AdminSession: Send {
    /// The instance this session is open on.
    fn key(&self) -> &InstanceKey;

    /// Stops receiving from the source; applying goes on.
    fn stop_io_thread(&mut self) -> BoxFuture<'_, Result<(), MysqlError>>;

    /// Stops both replication threads.
    fn stop_replication(&mut self) -> BoxFuture<'_, Result<(), MysqlError>>;

    /// Starts both replication threads.
    fn start_replication(&mut self) -> BoxFuture<'_, Result<(), MysqlError>>;

    /// Waits until everything received is applied, or fails after `timeout`.
    fn wait_relay_applied(&mut self, timeout: Duration) -> BoxFuture<'_, Result<(), MysqlError>>;

    /// Waits until `gtids` (as `written_gtids` gives them) are executed, or fails after
    /// `timeout`.
    fn wait_for_gtids<'a>(
        &'a mut self,
        gtids: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), MysqlError>>;

    /// Everything the instance wrote to its binlog.
    fn written_gtids(&mut self) -> BoxFuture<'_, Result<String, MysqlError>>;

    /// Replication stopped and forgotten, read_only OFF: a writable primary.
    fn promote(&mut self) -> BoxFuture<'_, Result<(), MysqlError>>;

    /// read_only (with MySQL's super_read_only) ON or OFF.
    fn set_read_only(&mut self, on: bool) -> BoxFuture<'_, Result<(), MysqlError>>;

    /// read_only ON for the server's next start (MySQL); the running value stays.
    fn persist_read_only(&mut self) -> BoxFuture<'_, Result<(), MysqlError>>;

    /// Semi-sync's source side and replica side ON or OFF.
    fn set_semi_sync(
        &mut self,
        source: bool,
        replica: bool,
    ) -> BoxFuture<'_, Result<(), MysqlError>>;

    /// A replica follows `source` instead (GTID), keeping its credentials and heartbeat
    /// (`heartbeat` when it has none), and is started.
    fn repoint<'a>(
        &'a mut self,
        source: &'a InstanceKey,
        heartbeat: Duration,
        tls: LinkTls,
    ) -> BoxFuture<'a, Result<(), MysqlError>>;

    /// An instance that is not a replica (an old primary) replicates from `source`.
    fn attach<'a>(
        &'a mut self,
        source: &'a InstanceKey,
        account: &'a ReplicationAccount,
        heartbeat: Duration,
        tls: LinkTls,
    ) -> BoxFuture<'a, Result<(), MysqlError>>;

    /// What a link to this instance should say about TLS when the policy is `auto`: on
    /// MySQL, TLS exactly when this server offers it; MariaDB links keep their setting.
    fn tls_for_replicas(&mut self) -> BoxFuture<'_, Result<LinkTls, MysqlError>>;

    /// Waits until both threads run, or fails with the replica's own error.
    fn verify_replicating(&mut self, timeout: Duration) -> BoxFuture<'_, Result<(), MysqlError>>;

    /// Ends the session politely.
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The real servers, reached over TCP with the agent's account.
pub struct MysqlReplication {
    pub settings: ConnectSettings,
}

impl Replication for MysqlReplication {
    fn open<'a>(
        &'a self,
        key: &'a InstanceKey,
    ) -> BoxFuture<'a, Result<Box<dyn AdminSession>, MysqlError>> {
        Box::pin(async move {
            let conn = Connection::open(key, &self.settings).await?;
            Ok(Box::new(conn) as Box<dyn AdminSession>)
        })
    }

    fn adopt(&self, connection: Connection) -> Result<Box<dyn AdminSession>, Connection> {
        Ok(Box::new(connection))
    }
}

impl AdminSession for Connection {
    fn key(&self) -> &InstanceKey {
        &self.key
    }

    fn stop_io_thread(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        Box::pin(admin::stop_io_thread(self))
    }

    fn stop_replication(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        Box::pin(admin::stop_replication(self))
    }

    fn start_replication(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        Box::pin(admin::start_replication(self))
    }

    fn wait_relay_applied(&mut self, timeout: Duration) -> BoxFuture<'_, Result<(), MysqlError>> {
        Box::pin(admin::wait_relay_applied(self, timeout))
    }

    fn wait_for_gtids<'a>(
        &'a mut self,
        gtids: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), MysqlError>> {
        Box::pin(admin::wait_for_gtids(self, gtids, timeout))
    }

    fn written_gtids(&mut self) -> BoxFuture<'_, Result<String, MysqlError>> {
        Box::pin(admin::written_gtids(self))
    }

    fn promote(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        Box::pin(admin::promote(self))
    }

    fn set_read_only(&mut self, on: bool) -> BoxFuture<'_, Result<(), MysqlError>> {
        Box::pin(admin::set_read_only(self, on))
    }

    fn persist_read_only(&mut self) -> BoxFuture<'_, Result<(), MysqlError>> {
        Box::pin(admin::persist_read_only(self))
    }

    fn set_semi_sync(
        &mut self,
        source: bool,
        replica: bool,
    ) -> BoxFuture<'_, Result<(), MysqlError>> {
        Box::pin(admin::set_semi_sync(self, source, replica))
    }

    fn repoint<'a>(
        &'a mut self,
        source: &'a InstanceKey,
        heartbeat: Duration,
        tls: LinkTls,
    ) -> BoxFuture<'a, Result<(), MysqlError>> {
        Box::pin(admin::repoint(self, source, heartbeat, tls))
    }

    fn attach<'a>(
        &'a mut self,
        source: &'a InstanceKey,
        account: &'a ReplicationAccount,
        heartbeat: Duration,
        tls: LinkTls,
    ) -> BoxFuture<'a, Result<(), MysqlError>> {
        Box::pin(admin::attach(self, source, account, heartbeat, tls))
    }

    fn tls_for_replicas(&mut self) -> BoxFuture<'_, Result<LinkTls, MysqlError>> {
        Box::pin(async move {
            Ok(match self.flavor {
                crate::topology::ServerFlavor::Mariadb => LinkTls::Keep,
                crate::topology::ServerFlavor::Mysql => {
                    if admin::offers_tls(self).await? {
                        LinkTls::On
                    } else {
                        LinkTls::Off
                    }
                }
            })
        })
    }

    fn verify_replicating(&mut self, timeout: Duration) -> BoxFuture<'_, Result<(), MysqlError>> {
        Box::pin(admin::verify_replicating(self, timeout))
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin((*self).close())
    }
}
