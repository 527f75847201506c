//! The responder's UDP socket and the thread that serves it. One OS thread of its own, not
//! a tokio task: it blocks in recvmmsg(2) for a batch of datagrams, sorts each with the
//! prepared answers (`prepared.rs`), hands the few they do not cover to the general path
//! (`answer_datagram` in `dns.rs`), and sends the batch's answers with one sendmmsg(2).
//! The socket asks for a receive buffer of `RECEIVE_BUFFER`, so a burst that arrives while
//! the thread waits for a core (the agent's tokio workers, a build, the load generator)
//! queues in the kernel instead of being dropped there.
//!
//! It owns the socket and the thread, and nothing else: the zone comes from `Shared`,
//! read once per batch, so a publish is seen by the next datagram received. It must not
//! allocate or decode for a datagram the prepared answers handle, nor answer one that is
//! not a DNS query.

use super::prepared::Handling;
use super::{answer_datagram, Served, Shared, MAX_UDP_PAYLOAD};
use socket2::SockRef;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Receive buffer asked of the kernel, which grants at most `net.core.rmem_max` (4 MiB on
/// Debian 12, 208 KiB on some systems): with the default 208 KiB, dnsperf's 200 queries
/// in flight alone nearly fill it, and a short stall drops queries.
const RECEIVE_BUFFER: usize = 4 << 20;
/// Datagrams read (and answers sent) per system call at most.
const BATCH: usize = 64;
/// The largest query read whole; a longer one is cut by the kernel and dropped.
const DATAGRAM_MAX: usize = 4096;
/// After an unexpected receive error, how long the thread waits before reading again.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The running UDP side: stops (the thread ends, the socket closes) when dropped.
pub struct UdpResponder {
    socket: Arc<UdpSocket>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpResponder {
    /// Serves `socket` (bound, blocking) from a thread of its own.
    pub fn start(socket: UdpSocket, shared: Arc<Shared>) -> io::Result<Self> {
        let sock = SockRef::from(&socket);
        sock.set_recv_buffer_size(RECEIVE_BUFFER)?;
        let granted = sock.recv_buffer_size()?;
        if granted < RECEIVE_BUFFER {
            tracing::info!(
                granted,
                wanted = RECEIVE_BUFFER,
                "DNS: the UDP receive buffer is smaller than asked (net.core.rmem_max); \
                 raise net.core.rmem_max if queries are lost under load"
            );
        }
        let socket = Arc::new(socket);
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("dns-udp".into()).spawn({
            let (socket, stopping) = (Arc::clone(&socket), Arc::clone(&stopping));
            move || serve(&socket, &shared, &stopping)
        })?;
        Ok(Self {
            socket,
            stopping,
            thread: Some(thread),
        })
    }

    /// Tells the thread to end and wakes it; returns at once.
    pub fn signal_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        // On Linux, shutting an unconnected UDP socket down fails with ENOTCONN but wakes
        // a reader blocked on it, which is all that is wanted here.
        let _ = SockRef::from(&*self.socket).shutdown(Shutdown::Read);
    }

    /// Stops the thread and waits for it (a moment: it is woken, not polled).
    pub fn stop(mut self) {
        self.signal_stop();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("the DNS UDP thread panicked");
            }
        }
    }
}

impl Drop for UdpResponder {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// recvmmsg/sendmmsg's arrays, allocated once per thread. The headers point into the
/// buffers, so neither moves once `Batch::new` has wired them.
struct Batch {
    queries: Box<[[u8; DATAGRAM_MAX]]>,
    answers: Box<[[u8; MAX_UDP_PAYLOAD as usize]]>,
    peers: Box<[libc::sockaddr_storage]>,
    query_iov: Box<[libc::iovec]>,
    query_headers: Box<[libc::mmsghdr]>,
    answer_iov: Box<[libc::iovec]>,
    answer_headers: Box<[libc::mmsghdr]>,
    /// How many answers `answer_headers` holds.
    pending: usize,
}

fn zeroed<T: Copy>(n: usize) -> Box<[T]> {
    // SAFETY: only used for the plain C structs and octet arrays above, for which all
    // zeroes is a valid (empty) value.
    (0..n)
        .map(|_| unsafe { MaybeUninit::<T>::zeroed().assume_init() })
        .collect()
}

impl Batch {
    fn new() -> Self {
        let mut batch = Self {
            queries: vec![[0; DATAGRAM_MAX]; BATCH].into_boxed_slice(),
            answers: vec![[0; MAX_UDP_PAYLOAD as usize]; BATCH].into_boxed_slice(),
            peers: zeroed(BATCH),
            query_iov: zeroed(BATCH),
            query_headers: zeroed(BATCH),
            answer_iov: zeroed(BATCH),
            answer_headers: zeroed(BATCH),
            pending: 0,
        };
        for i in 0..BATCH {
            batch.query_iov[i] = libc::iovec {
                iov_base: batch.queries[i].as_mut_ptr().cast(),
                iov_len: DATAGRAM_MAX,
            };
            let header = &mut batch.query_headers[i].msg_hdr;
            header.msg_iov = &mut batch.query_iov[i];
            header.msg_iovlen = 1;
            header.msg_name = (&mut batch.peers[i] as *mut libc::sockaddr_storage).cast();
        }
        batch
    }

    /// Blocks until at least one datagram arrives, then takes what else is queued.
    fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        for header in self.query_headers.iter_mut() {
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_flags = 0;
        }
        // SAFETY: every header points at a live iovec, buffer and address of `self`, with
        // their true lengths; the kernel writes within them only.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.query_headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(received as usize)
    }

    /// Sorts datagram `i` of the last `receive` and writes its answer, if it gets one,
    /// into `answers[i]`; returns the answer's length.
    fn answer(&mut self, i: usize, served: &Served) -> Option<usize> {
        let header = &self.query_headers[i];
        if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let query = &self.queries[i][..header.msg_len as usize];
        let out = &mut self.answers[i];
        match served.prepared.answer(query, out) {
            Handling::Answered(len) => Some(len),
            Handling::Drop => None,
            Handling::General => {
                let answer = answer_datagram(&served.zone, query, peer(&self.peers[i])?)?;
                let Some(slot) = out.get_mut(..answer.len()) else {
                    tracing::debug!(
                        len = answer.len(),
                        "DNS answer longer than UDP allows not sent"
                    );
                    return None;
                };
                slot.copy_from_slice(&answer);
                Some(answer.len())
            }
        }
    }

    /// Queues `len` octets of `answers[i]` for the sender of query `i`.
    fn queue_answer(&mut self, i: usize, len: usize) {
        let slot = self.pending;
        self.answer_iov[slot] = libc::iovec {
            iov_base: self.answers[i].as_mut_ptr().cast(),
            iov_len: len,
        };
        let header = &mut self.answer_headers[slot].msg_hdr;
        header.msg_iov = &mut self.answer_iov[slot];
        header.msg_iovlen = 1;
        header.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
        header.msg_namelen = self.query_headers[i].msg_hdr.msg_namelen;
        self.pending += 1;
    }

    /// Sends every queued answer; one that cannot be sent (its client gone) is skipped.
    fn send(&mut self, socket: &UdpSocket) {
        let mut sent = 0;
        while sent < self.pending {
            // SAFETY: headers `sent..pending` were wired by `queue_answer` to live buffers
            // and addresses of `self`, unchanged since.
            let result = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.answer_headers[sent..].as_mut_ptr(),
                    (self.pending - sent) as libc::c_uint,
                    0,
                )
            };
            if result > 0 {
                sent += result as usize;
                continue;
            }
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::debug!(%error, "DNS answer not sent");
            sent += 1;
        }
        self.pending = 0;
    }
}

fn serve(socket: &UdpSocket, shared: &Shared, stopping: &AtomicBool) {
    let mut batch = Batch::new();
    while !stopping.load(Ordering::Acquire) {
        let received = match batch.receive(socket) {
            Ok(received) => received,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                if !stopping.load(Ordering::Acquire) {
                    tracing::warn!(%error, "DNS: cannot read the UDP socket");
                    std::thread::sleep(ERROR_PAUSE);
                }
                continue;
            }
        };
        // Read after the datagrams arrived: a publish is seen by the next query.
        let served = shared.current();
        for i in 0..received {
            if let Some(len) = batch.answer(i, &served) {
                batch.queue_answer(i, len);
            }
        }
        batch.send(socket);
    }
}

/// The address the kernel wrote for a datagram's sender.
fn peer(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in, as ss_family says.
            let v4 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(v4.sin_addr.s_addr).into(),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6, as ss_family says.
            let v6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                v6.sin6_addr.s6_addr.into(),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
