//! A TCP proxy that cuts the network the way a dead switch port does. It is a test
//! double, not product code: it owns one listening port on 127.0.0.1 and forwards every
//! connection to one target, until a test switches it to a blackhole.
//!
//! A real partition never says goodbye: no FIN, no RST, no ICMP, the peers just stop
//! hearing each other, and each side only finds out through its own timeouts. So in a
//! blackhole the proxy stops moving bytes on every existing connection but keeps both
//! sockets open, and it still accepts new connections (the kernel completes the
//! handshake) but never forwards anything on them: clients see hangs and timeouts,
//! never a refusal. Healing (back to `Forward`) makes new connections work; a connection
//! that lived through a cut stays stuck for good, as a real one whose retransmissions
//! backed off past a test's horizon.
//!
//! `BlackholeThisProcess` cuts only the connections opened by this process — the agent
//! under test runs in-process — while the database servers' own connections (their
//! replication links, opened by other processes) pass: the agent's host is cut off from
//! the target and nobody else is. On one loopback every client shares the address, so
//! the proxy tells clients apart by who owns the connecting socket (`/proc`).
//!
//! Bounded: one task per connection, each parked (never polling) while stuck, all of
//! them aborted — sockets closed — when the proxy is dropped.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does with the bytes it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow both ways.
    Forward,
    /// Every path is cut, silently, in both directions.
    Blackhole,
    /// Only this process's connections (the in-process agent's) are cut.
    BlackholeThisProcess,
}

impl Mode {
    fn cuts(self, from_this_process: bool) -> bool {
        match self {
            Mode::Forward => false,
            Mode::Blackhole => true,
            Mode::BlackholeThisProcess => from_this_process,
        }
    }
}

/// A running proxy; dropping it closes every connection it holds.
pub struct Proxy {
    address: SocketAddr,
    mode: watch::Sender<Mode>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let (mode, modes) = watch::channel(Mode::Forward);
        let accepting = tokio::spawn(accept(listener, target, modes));
        Ok(Proxy {
            address,
            mode,
            accepting,
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Switches the mode for every connection, existing and new, at once.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks' JoinSet: aborting it drops the set,
        // which aborts them all and closes their sockets.
        self.accepting.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, modes: watch::Receiver<Mode>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    connections.spawn(serve(client, peer, target, modes.clone()));
                }
                // Out of file descriptors or the like: a pause beats a hot loop.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            },
            // Reap finished connections so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    target: SocketAddr,
    mut modes: watch::Receiver<Mode>,
) {
    let proxy = client.local_addr().ok();
    let ours = match proxy {
        Some(proxy) => tokio::task::spawn_blocking(move || opened_by_this_process(peer, proxy))
            .await
            .unwrap_or(false),
        None => false,
    };
    if modes.borrow().cuts(ours) {
        // Accepted during a cut: the handshake completed, nothing ever follows.
        hold(client).await;
    }
    let upstream = tokio::select! {
        connected = TcpStream::connect(target) => connected,
        _ = cut(&mut modes, ours) => hold(client).await,
    };
    let Ok(mut upstream) = upstream else {
        // The target itself refuses: pass that on as the client would see it directly.
        return;
    };
    // MySQL's protocol is small request/response packets: Nagle would add delays the
    // real network does not have.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = cut(&mut modes, ours) => hold((client, upstream)).await,
    }
}

/// Resolves when the mode starts cutting this connection; never if the proxy is gone.
async fn cut(modes: &mut watch::Receiver<Mode>, ours: bool) {
    if modes.wait_for(|mode| mode.cuts(ours)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Keeps the sockets open and silent until the proxy is dropped: no FIN, no RST.
async fn hold<T>(sockets: T) -> ! {
    let _open = sockets;
    match std::future::pending::<std::convert::Infallible>().await {}
}

/// Whether the client end of the connection `peer` → `proxy` is a socket of this process:
/// its inode, found in the kernel's TCP table by its address pair, is one of our fds.
fn opened_by_this_process(peer: SocketAddr, proxy: SocketAddr) -> bool {
    let (SocketAddr::V4(peer), SocketAddr::V4(proxy)) = (peer, proxy) else {
        return false; // the proxy listens on IPv4 only
    };
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let (local, remote) = (proc_address(peer), proc_address(proxy));
    // Lines: `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
            .flatten()
    });
    let Some(inode) = inode else {
        return false;
    };
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == inode.as_str())
    })
}

/// An IPv4 address as /proc/net/tcp prints it: the address bytes as a host-order
/// (little-endian here) word, then the port, both in upper-case hex.
fn proc_address(address: SocketAddrV4) -> String {
    format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(address.ip().octets()),
        address.port()
    )
}
