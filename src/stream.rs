//! Our `TcpStream`: tokio's stream plus byte counters on the hot path, one comparison per
//! write, and an EOF check per read.

use std::fmt;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::{Conn, ConnRef, Flags};
use crate::handle::{ConnectionHandle, PeerClosed};
use crate::state::{CloseReason, ConnectionState};

/// A TCP connection accepted by a [`TcpListener`](crate::TcpListener) (or made by a
/// [`Connector`](crate::Connector)) and watched by its supervisor.
///
/// It implements [`AsyncRead`] and [`AsyncWrite`] and is `Unpin + Send + 'static`, so it
/// goes wherever a `tokio::net::TcpStream` does: `tokio::io::split`,
/// `copy_bidirectional`, hyper-util's `TokioIo`, tonic, axum.
///
/// On the hot path it adds relaxed counter updates (bytes read, bytes written) and, per
/// write, one comparison (a write after a read, or one the supervisor asked to hear of, is
/// noted), and notes EOF, a read that waits and `poll_shutdown`; everything else (deadlines, FIN detection, closing)
/// happens in the supervisor, which keeps working when nobody polls this stream.
///
/// When the supervisor closes the connection gracefully, pending and later reads return
/// EOF (after what the peer sent before its FIN, if it had sent one) and writes fail with
/// an [`io::Error`] that carries a [`Closed`](crate::error::Closed) naming the reason;
/// after an abortive close, reads fail the same way. When the kernel ended it (reset,
/// keepalive or user timeout), reads and writes return the kernel's error (e.g.
/// `TimedOut`, `ConnectionReset`), even if the supervisor took it from the socket first.
/// The descriptor itself is freed when this stream is dropped.
pub struct TcpStream {
    // Field order matters: the registration is dropped (released) before `io` closes
    // the descriptor, so the supervisor can never act on a reused descriptor number.
    registration: Registration,
    io: tokio::net::TcpStream,
    /// 0, or `u32::MAX` once a read returned EOF after the library's close (every later
    /// read does too): a read whose count is above it is the fast path's, so one
    /// comparison asks both whether the read returned data and whether EOF was given.
    eof_floor: u32,
    /// A layer above reads ahead of the application (TLS): a read parked here says
    /// nothing about whether the peer owes data; the layer judges that itself.
    read_ahead: bool,
}

struct Registration(ConnRef);

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.release(true);
    }
}

impl TcpStream {
    pub(crate) fn new(io: tokio::net::TcpStream, conn: ConnRef) -> Self {
        Self {
            registration: Registration(conn),
            io,
            eof_floor: 0,
            read_ahead: false,
        }
    }

    pub(crate) fn conn(&self) -> &Conn {
        &self.registration.0
    }

    /// A layer above reads ahead of the application (TLS) and judges itself, with
    /// [`Conn::waits_in_read`], when the peer owes data.
    #[cfg(feature = "tls")]
    pub(crate) fn set_read_ahead(&mut self) {
        self.read_ahead = true;
    }

    /// A cheap, clonable handle to this connection's state, for code that does not own
    /// the stream (request handlers, a task waiting for the peer to leave).
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle::new(self.registration.0.clone())
    }

    /// The connection's id, unique within its listener.
    pub fn id(&self) -> crate::ConnectionId {
        self.conn().id()
    }

    /// The peer's address: the kernel's while the connection is up, and the one `accept`
    /// returned (or `connect` reached), IPv6 flow information and scope id included,
    /// after it has closed.
    ///
    /// # Errors
    ///
    /// Never; the `io::Result` mirrors `tokio::net::TcpStream::peer_addr`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.io.peer_addr().unwrap_or_else(|_| self.conn().peer()))
    }

    /// Our local address of this connection (`getsockname`).
    ///
    /// # Errors
    ///
    /// Those of `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// The connection's state as the library sees it.
    pub fn state(&self) -> ConnectionState {
        self.conn().state()
    }

    /// Why the library closed this connection, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.conn().close_reason()
    }

    /// Resolves when the peer has sent FIN (or the connection ended otherwise), as seen
    /// by the kernel watcher, whether or not anyone reads this stream. See
    /// [`ConnectionHandle::peer_closed`].
    pub fn peer_closed(&self) -> PeerClosed {
        self.handle().peer_closed()
    }

    /// Whether the peer has sent FIN or the connection has ended, as seen by the kernel
    /// watcher (Linux: within tens of microseconds of the FIN; elsewhere within the
    /// 100 ms sweep), whether or not anyone reads this stream: [`peer_closed`](Self::peer_closed)
    /// without waiting. A pool asks it before reusing an idle stream, and drops the
    /// stream if the server has closed it (see [`Connector`](crate::Connector)'s
    /// "Pools"). The same as [`ConnectionHandle::is_peer_closed`].
    pub fn is_peer_closed(&self) -> bool {
        self.conn().flags().peer_gone()
    }

    /// The tokio stream inside, for socket options and `peek`.
    pub fn get_ref(&self) -> &tokio::net::TcpStream {
        &self.io
    }

    /// Takes the tokio stream back. The connection leaves supervision: no timeouts, no
    /// FIN tracking, and it no longer counts toward `max_connections`.
    pub fn into_inner(self) -> tokio::net::TcpStream {
        let TcpStream {
            registration, io, ..
        } = self;
        registration.0.release(false);
        drop(registration);
        io
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("id", &self.conn().id())
            .field("peer", &self.conn().peer())
            .field("state", &self.state())
            .finish()
    }
}

impl AsyncRead for TcpStream {
    // Always: whether the compiler inlines it into the caller's loop otherwise depends on
    // what else the caller's crate holds (measured: +22 instructions per read when an
    // unrelated use of the library in the same binary tipped it over).
    #[inline(always)]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // What the read filled, from `remaining()`: no bounds check, so no unwinding path
        // that would keep `result` on the stack.
        let room = buf.remaining();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = room.wrapping_sub(buf.remaining());
        // Data is returned even after the library's close: the peer sent it before our
        // FIN reached it (and before its own FIN), and the kernel holds it. (Tokio fills
        // the buffer only for a read that is ready and succeeded.) Not once EOF was given
        // (`eof_floor`), nor, through the cold path, a count that is a multiple of 2^32.
        if n as u32 > this.eof_floor {
            this.registration.0.add_read(n);
            return result;
        }
        read_cold(this, cx, buf, result, n)
    }
}

/// The reads the fast path leaves: any after EOF was given, and those that returned no
/// data (or a multiple of 2^32 bytes).
///
/// EOF given after the library's close stays given: what the peer sends later is taken
/// from the kernel by a read the application still makes (a syscall each), but never
/// handed to it, nor left in its buffer.
#[cold]
#[inline(never)]
fn read_cold(
    this: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    result: Poll<io::Result<()>>,
    n: usize,
) -> Poll<io::Result<()>> {
    if this.eof_floor != 0 {
        // Taken from the kernel, and wiped from the application's buffer too.
        let filled = buf.filled().len();
        let start = filled.saturating_sub(n);
        buf.initialized_mut()[start..filled].fill(0);
        buf.set_filled(start);
        return shut(&this.registration.0);
    }
    if n > 0 {
        this.registration.0.add_read(n);
        return result;
    }
    nothing_read(this, cx, buf, result)
}

/// A read that returned no data: EOF (the peer's, or ours after the library closed the
/// connection gracefully), a read that waits, or an error.
///
/// After the library's graceful close, what the kernel already holds is still read, then
/// EOF, at the first read that would wait (or the kernel's own EOF). Once given, EOF
/// stays: nothing the peer sends later is read.
fn nothing_read(
    this: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    result: Poll<io::Result<()>>,
) -> Poll<io::Result<()>> {
    let conn: &Conn = &this.registration.0;
    match result {
        Poll::Ready(Ok(())) if buf.remaining() == 0 => Poll::Ready(Ok(())),
        Poll::Ready(Ok(())) => {
            // The peer's FIN: nothing is left unread.
            conn.observed_eof();
            if conn.has(Flags::SHUT) {
                this.eof_floor = u32::MAX;
            }
            shut(conn)
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(explain(conn, e))),
        Poll::Pending => {
            // Parks unless the library has shut the connection, judged under the waker's
            // lock: a shut after it wakes the waker parked here.
            if conn.park_read(cx.waker(), !this.read_ahead) {
                return Poll::Pending;
            }
            this.eof_floor = u32::MAX;
            shut(conn)
        }
    }
}

/// EOF, unless the kernel reported an error the application must see instead.
#[cold]
fn shut(conn: &Conn) -> Poll<io::Result<()>> {
    match conn.explain(None) {
        Some(err) => Poll::Ready(Err(err)),
        None => Poll::Ready(Ok(())),
    }
}

#[cold]
fn explain(conn: &Conn, err: io::Error) -> io::Error {
    conn.explain(Some(err)).expect("explain(Some) is Some")
}

/// Counts what a write reported, or explains its error.
#[inline]
fn wrote(conn: &Conn, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
    match result {
        Poll::Ready(Ok(n)) => {
            if conn.add_written(n) {
                // Out of line, and what it returns is the result: nothing of the write
                // needs keeping across the call.
                return noted_write(conn, n);
            }
            result
        }
        _ => not_written(conn, result),
    }
}

/// A write that waits, or failed.
#[cold]
#[inline(never)]
fn not_written(conn: &Conn, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
    match result {
        Poll::Ready(Err(e)) => Poll::Ready(Err(explain(conn, e))),
        result => result,
    }
}

#[cold]
#[inline(never)]
fn noted_write(conn: &Conn, n: usize) -> Poll<io::Result<usize>> {
    conn.note_write();
    Poll::Ready(Ok(n))
}

impl AsyncWrite for TcpStream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        wrote(&this.registration.0, result)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        wrote(&this.registration.0, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Ready(Ok(())) => {
                this.registration.0.observed_local_shutdown();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(explain(&this.registration.0, e))),
            Poll::Pending => Poll::Pending,
        }
    }
}
