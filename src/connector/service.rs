//! The `hyper` feature's client side: [`Connector`] as a `tower_service::Service<Uri>`,
//! the connector type hyper-util's legacy `Client` and tonic's `Endpoint` take, and
//! hyper-util's `Connection` for [`TcpStream`].

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;

use super::Connector;
use crate::stream::TcpStream;

/// The future of `Connector`'s `Service<Uri>::call`: connects to the URI's host and port
/// (the scheme's, 80 for `http` and 443 for `https`, if it has none) with
/// [`Connector::connect`], and wraps the stream in hyper-util's `TokioIo`. No TLS: put a
/// TLS connector (e.g. `hyper-rustls`'s `HttpsConnector::from`) around the connector for
/// `https`.
///
/// # Examples
///
/// hyper-util's legacy client, its pool and all:
///
/// ```no_run
/// use std::time::Duration;
/// use http_body_util::{BodyExt, Empty};
/// use hyper::body::Bytes;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let connector = tcp_hygiene::Builder::new()
///     .connect_timeout(Duration::from_secs(3))
///     .user_timeout(Duration::from_secs(10))
///     .connector()?;
/// let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
/// let body = client.get("http://127.0.0.1:3000/".parse()?).await?.collect().await?;
/// println!("{:?}", body.to_bytes());
/// # Ok(()) }
/// ```
///
/// tonic's channel (the `tonic` crate with its `transport` feature):
///
/// ```no_run
/// # #[cfg(feature = "tonic")]
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use std::time::Duration;
///
/// let connector = tcp_hygiene::Builder::new()
///     .user_timeout(Duration::from_secs(5)) // an RPC to a vanished server fails in 5 s
///     .connector()?;
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051")
///     .connect_with_connector(connector)
///     .await?;
/// # let _ = channel; Ok(()) }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Connecting {
    inner: Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>,
}

impl Future for Connecting {
    type Output = io::Result<TokioIo<TcpStream>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for Connecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connecting").finish_non_exhaustive()
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Connecting;

    /// Always ready: `max_connections` is waited for inside the call.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let connector = self.clone();
        Connecting {
            inner: Box::pin(async move {
                let (host, port) = host_and_port(&uri)?;
                let stream = connector.connect((host.as_str(), port)).await?;
                Ok(TokioIo::new(stream))
            }),
        }
    }
}

/// The host (without an IPv6 literal's brackets) and port to connect to for `uri`.
fn host_and_port(uri: &Uri) -> io::Result<(String, u16)> {
    let invalid = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tcp-hygiene connector: {what} in URI `{uri}`"),
        )
    };
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some("http") | None) => 80,
        (None, Some("https")) => 443,
        (None, Some(_)) => return Err(invalid("no port and a scheme without a default")),
    };
    Ok((host.to_owned(), port))
}

/// hyper-util's connection metadata: no proxy, no ALPN, and the connection's
/// [`ConnectionHandle`](crate::ConnectionHandle) as an extra, so that every response on
/// it carries the handle in its extensions.
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
impl Connection for TcpStream {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.handle())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports() {
        let hp = |s: &str| host_and_port(&s.parse().unwrap());
        assert_eq!(hp("http://a.example/x").unwrap(), ("a.example".into(), 80));
        assert_eq!(hp("https://a.example").unwrap(), ("a.example".into(), 443));
        assert_eq!(hp("http://[::1]:8080/").unwrap(), ("::1".into(), 8080));
        assert_eq!(hp("grpc://h:50051").unwrap(), ("h".into(), 50051));
        let e = hp("grpc://h").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("no port"), "{e}");
        assert!(hp("/relative").is_err());
    }
}
