//! HTTPS for the framework serves: the TLS handshake in the connection's own task, bounded
//! from accept, and the stream under hyper shared with the connection's task, so that a
//! close by the library sends `close_notify` before our FIN.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

/// The TLS stream, shared by hyper (which reads and writes it) and the connection's task
/// (which closes it with `close_notify` when hyper is done with it, or was dropped idle).
/// Both run in the same task, so the lock is never contended.
#[derive(Clone)]
pub(crate) struct TlsIo(Arc<Mutex<Inner>>);

struct Inner {
    stream: TlsStream<TcpStream>,
    /// `close_notify` and our FIN are out.
    shut: bool,
}

impl TlsIo {
    pub(crate) fn new(stream: TlsStream<TcpStream>) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            stream,
            shut: false,
        })))
    }

    fn poll_close(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.lock();
        let result = Pin::new(&mut inner.stream).poll_shutdown(cx);
        if result.is_ready() {
            inner.shut = true;
        }
        result
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `close_notify` then our FIN, unless they are out already or someone else
    /// holds the stream (a handler took it over with an HTTP upgrade). Bounded: a peer
    /// that does not read gets the TCP-level close from the library instead.
    pub(crate) async fn close(&self) {
        if Arc::strong_count(&self.0) > 1 || self.lock().shut {
            return;
        }
        let shutdown = std::future::poll_fn(|cx| self.poll_close(cx));
        let _ = tokio::time::timeout(CLOSE_NOTIFY_WAIT, shutdown).await;
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.lock().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.lock().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.lock().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.lock().stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.lock().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_close(cx)
    }
}

impl fmt::Debug for TlsIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIo").finish_non_exhaustive()
    }
}
