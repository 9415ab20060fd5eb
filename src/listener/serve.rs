//! Accept loops that spawn one task per connection and give the supervisor each task's
//! abort handle.

use std::future::Future;
use std::io;
use std::time::Duration;

use super::TcpListener;
use crate::stats::DrainReport;
use crate::stream::TcpStream;

impl TcpListener {
    /// Accepts connections forever, running `handler` for each in its own task.
    ///
    /// The library keeps each task's abort handle: when the supervisor closes a
    /// connection (a timeout, a keepalive failure, a drain's hard deadline) it also
    /// aborts the task, so a stuck handler's memory and descriptor are freed at once (the
    /// close itself stays graceful: what the task wrote is still delivered). A task that
    /// finishes on its own leaves nothing behind.
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
            self.spawn_supervised(stream, &handler);
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
                    self.spawn_supervised(stream, &handler);
                }
                () = &mut signal => break,
            }
        }
        Ok(self.drain(soft, hard).await)
    }

    /// Spawns `handler(stream)` and hands its abort handle to the supervisor.
    pub(crate) fn spawn_supervised<H, F>(&self, stream: TcpStream, handler: &H)
    where
        H: Fn(TcpStream) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let id = stream.conn().id();
        let task = tokio::spawn(handler(stream));
        // If the connection ended before the supervisor gets this (closed by the library
        // or failed in the kernel), it aborts the task on arrival; if the stream is
        // released already, it forgets it.
        self.shared().tx.task(id, task.abort_handle());
    }
}
