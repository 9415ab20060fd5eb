//! axum over a supervised listener, served by the library (each connection's task is
//! the library's to end), or with `--plain` by `axum::serve` over tokio's listener (the
//! control).
//!
//! ```text
//! cargo run --example axum_server --features axum -- --listen 127.0.0.1:3000 \
//!     [--close-wait-timeout-ms N] [--fin-wait-timeout-ms N] [--idle-timeout-ms N] \
//!     [--read-idle-timeout-ms N] [--write-idle-timeout-ms N] [--first-byte-timeout-ms N] \
//!     [--max-connection-age-ms N] [--keepalive IDLE_MS,INTERVAL_MS,COUNT] \
//!     [--user-timeout-ms N] [--max-connections N] [--min-receive-rate BYTES_PER_S] \
//!     [--min-send-rate BYTES_PER_S] [--min-rate-grace-ms N] [--header-read-timeout-ms N] \
//!     [--keep-alive-timeout-ms N] [--drain-soft-ms N] [--drain-hard-ms N] [--plain] \
//!     [--tls [--tls-cert PATH --tls-key PATH] [--tls-handshake-timeout-ms N]]
//! ```
//!
//! `0` disables a timeout; an omitted flag keeps the default (the drain: 5000 and 30000
//! ms). With `--plain` every other flag is accepted and ignored.
//!
//! With `--features axum,tls`, `--tls` serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with a
//! self-signed certificate for `localhost` and `127.0.0.1` made at start, or the PEM
//! certificate chain and private key of `--tls-cert` and `--tls-key`;
//! `--tls-handshake-timeout-ms` bounds the handshake (default 10000, `0` disables).
//! `--plain --tls` is the control: hyper-util's auto builder over a hand-written
//! tokio-rustls accept loop that runs each handshake inline, with no timeout, as it is
//! commonly written. The first line on stdout
//! is `listening on IP:PORT`. On SIGTERM or SIGINT the server drains with the given
//! deadlines, prints the report as one line of JSON,
//! `{"drain":{"connections":N,"finished":N,"idle_closed":N,"forced":N}}`, and exits 0.
//!
//! Routes:
//! - `GET /`: `ok`.
//! - `GET /conn`: `id=N peer=IP:PORT` of the connection that carried the request, from
//!   `ConnectInfo<ConnectionHandle>`.
//! - `GET|POST /hang`: never answers, and never reads a request body: the stuck handler
//!   whose socket would sit in `CLOSE_WAIT` forever once the client leaves, if the
//!   listener were tokio's.
//! - `GET /slow?ms=N`: `done`, after N ms.
//! - `GET /big?bytes=N`: N bytes (a download for slow readers).
//! - `POST /upload`: reads the whole request body, answers its length (an upload for slow
//!   senders).
//!
//! Try it from bash: send a request whose body never ends, then hang up, and watch
//! `ss -tan state close-wait` empty itself after `--close-wait-timeout-ms`:
//!
//! ```text
//! exec 3<>/dev/tcp/127.0.0.1/3000
//! printf 'POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc' >&3
//! exec 3>&-
//! ```

mod common;

use std::process::ExitCode;
use std::time::Duration;

use axum::extract::{ConnectInfo, RawQuery};
use axum::routing::{get, post};
use axum::Router;
use tcp_hygiene::ConnectionHandle;

async fn conn(ConnectInfo(conn): ConnectInfo<ConnectionHandle>) -> String {
    format!("id={} peer={}", conn.id(), conn.peer_addr())
}

async fn hang() -> &'static str {
    std::future::pending().await
}

async fn slow(RawQuery(query): RawQuery) -> &'static str {
    let ms = common::query_number(query.as_deref(), "ms").unwrap_or(1000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "done"
}

async fn big(RawQuery(query): RawQuery) -> Vec<u8> {
    let bytes = common::query_number(query.as_deref(), "bytes").unwrap_or(1 << 20);
    vec![b'x'; usize::try_from(bytes).unwrap_or(usize::MAX).min(1 << 30)]
}

/// Every route but `/conn`, which each mode answers its own way.
fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/hang", get(hang).post(hang))
        .route("/slow", get(slow))
        .route("/big", get(big))
        .route(
            "/upload",
            post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
}

/// The TLS flags.
#[derive(Default)]
struct TlsArgs {
    tls: bool,
    cert: Option<String>,
    key: Option<String>,
    /// `--tls-handshake-timeout-ms`, if given (inner `None`: 0, disabled).
    handshake_timeout: Option<Option<Duration>>,
}

impl TlsArgs {
    /// Takes `flag` if it is a TLS flag.
    fn take(
        &mut self,
        flag: &str,
        value: &mut dyn FnMut() -> Result<String, String>,
    ) -> Result<bool, String> {
        match flag {
            "--tls" => self.tls = true,
            "--tls-cert" => self.cert = Some(value()?),
            "--tls-key" => self.key = Some(value()?),
            "--tls-handshake-timeout-ms" => {
                let v = value()?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("{flag}: not a number of milliseconds: {v:?}"))?;
                self.handshake_timeout = Some((ms > 0).then(|| Duration::from_millis(ms)));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether the flags make sense together (and with the features built).
    fn check(&self) -> Result<(), String> {
        let any = self.cert.is_some() || self.key.is_some() || self.handshake_timeout.is_some();
        if any && !self.tls {
            return Err("--tls-cert, --tls-key and --tls-handshake-timeout-ms need --tls".into());
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err("--tls-cert and --tls-key go together".into());
        }
        if self.tls && !cfg!(feature = "tls") {
            return Err("--tls needs the example built with --features axum,tls".into());
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let usage = format!(
        "usage: axum_server {} {} [--tls [--tls-cert PATH --tls-key PATH] [--tls-handshake-timeout-ms N]]",
        common::LIBRARY_FLAGS,
        common::SERVE_FLAGS
    );
    let mut tls_args = TlsArgs::default();
    let args = match common::args(&usage, |flag, value| tls_args.take(flag, value)) {
        Ok(args) => args,
        Err(code) => return code,
    };
    if let Err(message) = tls_args.check() {
        eprintln!("axum_server: {message}\n{usage}");
        return ExitCode::from(2);
    }
    #[cfg(feature = "tls")]
    let tls = match tls_args.tls.then(|| tls::config(&tls_args)).transpose() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("axum_server: {message}");
            return ExitCode::from(2);
        }
    };
    if args.plain {
        #[cfg(feature = "tls")]
        if let Some(config) = tls {
            return tls::plain(&args, config).await;
        }
        return plain(&args).await;
    }
    let listener = match common::bind(&args, &usage).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    common::announce(listener.local_addr().expect("bound"));
    let app = routes().route("/conn", get(conn));
    let serve = tcp_hygiene::integration::axum::serve(listener, app);
    #[cfg(feature = "tls")]
    let serve = match (tls, tls_args.handshake_timeout) {
        (Some(config), Some(timeout)) => serve.tls(config).tls_handshake_timeout(timeout),
        (Some(config), None) => serve.tls(config),
        (None, _) => serve,
    };
    let served = common::configure(serve, &args)
        .with_graceful_shutdown(common::shutdown_signal(), args.drain_soft, args.drain_hard)
        .await;
    common::finish("axum_server", served)
}

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::process::ExitCode;
    use tcp_hygiene::integration::rustls;
    use tokio_rustls::TlsAcceptor;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// The server's TLS config: the PEM files given, or a self-signed certificate for
    /// `localhost` and `127.0.0.1` made now.
    pub(crate) fn config(args: &super::TlsArgs) -> Result<Arc<rustls::ServerConfig>, String> {
        let (chain, key) = match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("--tls-cert {cert}: {e}"))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("--tls-key {key}: {e}"))?;
                (chain, key)
            }
            _ => {
                let made = rcgen::generate_simple_self_signed(vec![
                    "localhost".to_owned(),
                    "127.0.0.1".to_owned(),
                ])
                .map_err(|e| format!("--tls: cannot make a certificate: {e}"))?;
                let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
                (vec![made.cert.der().clone()], key)
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map(Arc::new)
            .map_err(|e| format!("--tls-cert/--tls-key: {e}"))
    }

    /// The control: tokio's listener, each TLS handshake run inline in the accept loop
    /// with no timeout, then hyper-util's auto builder in a task of its own.
    pub(crate) async fn plain(
        args: &crate::common::Args,
        config: Arc<rustls::ServerConfig>,
    ) -> ExitCode {
        let listener = match tokio::net::TcpListener::bind(&args.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("axum_server: cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        crate::common::announce(listener.local_addr().expect("bound"));
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let app = super::routes().route(
            "/conn",
            get(
                |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move {
                    format!("id=0 peer={peer}")
                },
            ),
        );
        let serve = async {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let Ok(stream) = acceptor.accept(tcp).await else {
                    continue;
                };
                let app = app.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |mut request: hyper::Request<hyper::body::Incoming>| {
                            request.extensions_mut().insert(ConnectInfo(peer));
                            tower_service::Service::call(&mut app.clone(), request)
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        };
        tokio::select! {
            () = serve => {}
            () = crate::common::shutdown_signal() => {}
        }
        ExitCode::SUCCESS
    }
}

/// The control: axum's own server over tokio's listener, no library at all.
async fn plain(args: &common::Args) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("axum_server: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    common::announce(listener.local_addr().expect("bound"));
    // `/conn` answers with the plain peer address here.
    let app = routes().route(
        "/conn",
        get(
            |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move {
                format!("id=0 peer={peer}")
            },
        ),
    );
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(common::shutdown_signal())
    .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axum_server: {e}");
            ExitCode::FAILURE
        }
    }
}
