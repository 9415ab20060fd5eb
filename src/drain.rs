//! Graceful drain with deadlines, and the `serve` helpers that spawn one task per
//! connection.

use std::future::Future;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::listener::TcpListener;
use crate::stream::TcpStream;
use crate::supervisor::{DrainRequest, Msg};

/// How the connections of a drained listener ended, from [`TcpListener::drain`].
///
/// Each connection open when the drain began is counted exactly once:
/// `connections == finished + idle_closed + forced`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Connections open when the drain began.
    pub connections: usize,
    /// Ended before the hard deadline without being half-closed by the drain: the
    /// application dropped the stream (including after a timeout or kernel failure
    /// during the drain).
    pub finished: usize,
    /// Idle at the soft deadline: the library half-closed them (FIN to the peer) and
    /// they ended before the hard deadline.
    pub idle_closed: usize,
    /// Still open at the hard deadline: the library closed them and aborted their
    /// tasks, if spawned through [`TcpListener::serve`].
    pub forced: usize,
}

impl TcpListener {
    /// Stops accepting and drains the connections, with deadlines, and resolves with a
    /// report by the hard deadline at the latest.
    ///
    /// 1. The listening socket is closed at once; every handler waiting on
    ///    [`ConnectionHandle::draining`](crate::ConnectionHandle::draining) is woken, so
    ///    it can finish its current work and close.
    /// 2. At `soft` after the call, each connection that moved no byte since the drain
    ///    began (and has nothing queued to send) is half-closed: the peer gets FIN, and
    ///    a well-behaved client closes its side.
    /// 3. At `hard` after the call, every connection still open is closed (reason
    ///    [`CloseReason::Drained`](crate::CloseReason::Drained)) and its task aborted if
    ///    it was spawned by [`serve`](Self::serve).
    ///
    /// Nothing waits forever: the future resolves as soon as all connections have ended,
    /// and never later than `hard` (plus the supervisor's scheduling delay). A `hard`
    /// shorter than `soft` is treated as equal to it.
    pub async fn drain(self, soft: Duration, hard: Duration) -> DrainReport {
        let (io, shared) = self.into_parts();
        shared.draining.store(true, Relaxed);
        shared.drain_started.notify_waiters();
        let (reply, report) = oneshot::channel();
        let _ = shared
            .tx
            .send(Msg::Drain(DrainRequest { soft, hard, reply }));
        drop(io);
        // The supervisor holds the reply until done; it only goes away with the runtime.
        report.await.unwrap_or_default()
    }

    /// Accepts connections forever, running `handler` for each in its own task.
    ///
    /// The library keeps each task's abort handle: when the supervisor closes a
    /// connection (a timeout, a keepalive failure, a drain's hard deadline) it also
    /// aborts the task, so a stuck handler's memory and descriptor are freed at once. A
    /// task that finishes on its own leaves nothing behind.
    ///
    /// # Errors
    ///
    /// Only those of [`accept`](Self::accept) that say the listener itself is broken.
    pub async fn serve<H, F>(&self, handler: H) -> io::Result<()>
    where
        H: Fn(TcpStream) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        loop {
            let (stream, _) = self.accept().await?;
            spawn_supervised(stream, &handler);
        }
    }

    /// Like [`serve`](Self::serve), until `signal` completes; then
    /// [`drain`](Self::drain)s with the given deadlines and returns the report.
    ///
    /// # Errors
    ///
    /// Only those of [`accept`](Self::accept) that say the listener itself is broken.
    pub async fn serve_with_shutdown<H, F, S>(
        self,
        handler: H,
        signal: S,
        soft: Duration,
        hard: Duration,
    ) -> io::Result<DrainReport>
    where
        H: Fn(TcpStream) -> F,
        F: Future<Output = ()> + Send + 'static,
        S: Future<Output = ()>,
    {
        tokio::pin!(signal);
        loop {
            tokio::select! {
                accepted = self.accept() => {
                    let (stream, _) = accepted?;
                    spawn_supervised(stream, &handler);
                }
                () = &mut signal => break,
            }
        }
        Ok(self.drain(soft, hard).await)
    }
}

fn spawn_supervised<H, F>(stream: TcpStream, handler: &H)
where
    H: Fn(TcpStream) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let conn = stream.conn_arc();
    let task = tokio::spawn(handler(stream));
    conn.set_abort_handle(task.abort_handle());
    // The supervisor may have closed it before the handle was stored.
    if conn.has(crate::state::flags::CLOSED) {
        conn.abort_task();
    }
}
