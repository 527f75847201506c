//! Clients that stop reading. The server keeps writing a reply only as fast as its
//! client takes it, so a client that takes nothing would hold its connection (and an
//! event-stream place, and the reply's buffers) for as long as it likes. Here a write
//! that makes no progress for `api.stalled_client_timeout` fails, and the server drops
//! the connection. Reading, and everything above the socket, is not this module's.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// Accepts connections whose writes may stall for `limit` at most.
pub struct StallLimitedListener {
    pub listener: TcpListener,
    pub limit: Duration,
}

/// The address of the client on the other end of a connection, for handlers that
/// record who asked (`Caller`).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddress(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, StallLimitedListener>>
    for ClientAddress
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, StallLimitedListener>) -> Self {
        ClientAddress(*stream.remote_addr())
    }
}

impl axum::serve::Listener for StallLimitedListener {
    type Io = StallLimited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (StallLimited, SocketAddr) {
        let (stream, address) = axum::serve::Listener::accept(&mut self.listener).await;
        let limited = StallLimited {
            stream,
            limit: self.limit,
            stalled: None,
        };
        (limited, address)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection whose writes fail once they have waited `limit` without progress.
pub struct StallLimited {
    stream: TcpStream,
    limit: Duration,
    /// Runs while a write waits for the client; any progress disarms it.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl StallLimited {
    /// What a write that waits on the client answers: keep waiting, or fail once it has
    /// waited `limit`.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took nothing for {} (api.stalled_client_timeout): dropped",
                    humantime::format_duration(limit)
                ),
            ))),
        }
    }

    fn progressed<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.waiting(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for StallLimited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallLimited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.progressed(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.progressed(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_flush(cx);
        self.progressed(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.progressed(result, cx)
    }
}
