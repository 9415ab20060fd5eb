//! HTTPS for the framework serves: the TLS handshake in the connection's own task, bounded
//! from accept, and a stream under hyper that sends `close_notify` before our FIN however
//! the connection ends.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::shared::Shared;
use crate::{CloseMode, CloseReason, ConnectionHandle, TcpStream};

/// The default [`Serve::tls_handshake_timeout`](super::Serve::tls_handshake_timeout): 10
/// seconds from accept, as axum-server's.
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `close_notify` and our FIN may take to go out once the connection is done:
/// the kernel takes them at once unless the peer stopped reading (then the library's
/// send rules end it anyway).
const CLOSE_NOTIFY_WAIT: Duration = Duration::from_millis(500);

/// The serve's TLS: the acceptor (its config with ALPN filled in) and the handshake
/// timeout.
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    handshake_timeout: Option<Duration>,
}

impl Tls {
    /// `config` as given, or a clone offering ALPN `h2` and `http/1.1` (`h2` only for an
    /// HTTP/2-only serve) if it offers none.
    pub(crate) fn new(
        config: Arc<ServerConfig>,
        handshake_timeout: Option<Duration>,
        http2_only: bool,
    ) -> Self {
        let config = if config.alpn_protocols.is_empty() {
            let mut config = (*config).clone();
            config.alpn_protocols = if http2_only {
                vec![b"h2".to_vec()]
            } else {
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            };
            Arc::new(config)
        } else {
            config
        };
        Self {
            acceptor: TlsAcceptor::from(config),
            handshake_timeout,
        }
    }

    /// Runs the handshake (in the connection's task): the TLS stream, or `None` if the
    /// handshake failed (counted, logged at debug level) or timed out (closed by the
    /// library for [`CloseReason::TlsHandshakeTimeout`]).
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        handle: &ConnectionHandle,
        shared: &Shared,
    ) -> Option<TlsStream<TcpStream>> {
        let mut accept = self.acceptor.accept(stream);
        let result = match self.handshake_timeout {
            Some(timeout) => {
                let deadline = crate::time::later(handle.accepted_at(), timeout);
                match tokio::time::timeout_at(deadline.into(), &mut accept).await {
                    Ok(result) => result,
                    Err(_) => {
                        handle.close(CloseMode::Graceful, CloseReason::TlsHandshakeTimeout);
                        // The stream stays held until the library has closed it (and
                        // counted the reason); the library then ends this task.
                        let _ = tokio::time::timeout(Duration::from_secs(1), handle.close_asked())
                            .await;
                        tracing::debug!(peer = %handle.peer_addr(), "TLS handshake timed out");
                        return None;
                    }
                }
            }
            None => accept.await,
        };
        match result {
            Ok(stream) => Some(stream),
            Err(error) => {
                // A scanner's garbage or a plain HTTP request on the TLS port is not the
                // server's error: no warning per client.
                shared.counters.tls_handshake_failed();
                tracing::debug!(peer = %handle.peer_addr(), %error, "TLS handshake failed");
                None
            }
        }
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// The TLS stream under hyper. If it is dropped without having been shut down (hyper
/// dropped idle by the connection's task, an upgraded stream dropped by its handler, a
/// task ended by the library), a task of its own sends `close_notify` then our FIN, so
/// that every end the library causes is a clean one at the TLS layer.
pub(crate) struct TlsIo {
    /// Taken only when dropped.
    stream: Option<TlsStream<TcpStream>>,
    /// `close_notify` and our FIN are out.
    shut: bool,
}

impl TlsIo {
    pub(crate) fn new(mut stream: TlsStream<TcpStream>) -> Self {
        // rustls reads every record it can before it hands hyper the plaintext, so the
        // stream's own read parks with each request: the peer owes data only when this
        // layer has nothing for hyper (see `poll_read`).
        stream.get_mut().0.set_read_ahead();
        Self {
            stream: Some(stream),
            shut: false,
        }
    }

    fn stream(&mut self) -> Pin<&mut TlsStream<TcpStream>> {
        Pin::new(self.stream.as_mut().expect("taken only when dropped"))
    }
}

impl Drop for TlsIo {
    fn drop(&mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        if self.shut {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Bounded: a peer that does not read gets the library's TCP-level close instead
        // (and an abortive close, or one the peer made, fails the write at once).
        runtime.spawn(async move {
            let _ = tokio::time::timeout(CLOSE_NOTIFY_WAIT, stream.shutdown()).await;
        });
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = self.stream().poll_read(cx, buf);
        if read.is_pending() {
            if let Some(stream) = &self.stream {
                stream.get_ref().0.conn().waits_in_read();
            }
        }
        read
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = self.stream().poll_shutdown(cx);
        if result.is_ready() {
            self.shut = true;
        }
        result
    }
}

impl fmt::Debug for TlsIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIo")
            .field("shut", &self.shut)
            .finish_non_exhaustive()
    }
}
