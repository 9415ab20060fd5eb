//! hyper-util's legacy `Client` over a supervised `Connector`: every pooled connection
//! has a connect timeout, keepalive and `TCP_USER_TIMEOUT`, and a `CLOSE_WAIT` bound; each
//! response carries its connection's `ConnectionHandle`.
//!
//! ```text
//! cargo run --example http_client --features hyper -- [URL] [--requests N] [--pause-ms MS]
//! ```
//!
//! Without a URL it starts a small HTTP/1 server of its own on 127.0.0.1 which closes
//! each connection 300 ms after it opened (once its requests are answered), as servers
//! with a short keep-alive timeout do. The client sends `--requests` requests (default 3) `--pause-ms` apart
//! (default 500): hyper-util's pool drops the connection the server closed before reuse
//! (its connection task reads the FIN), so each request after a pause goes out on a new
//! connection. For every response it prints the connection it came on and whether the
//! server has closed that connection since; at the end, the connector's stats.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tcp_hygiene::{Builder, ConnectionHandle};

const USAGE: &str = "usage: http_client [URL] [--requests N] [--pause-ms MS]";

#[tokio::main]
async fn main() -> ExitCode {
    let mut requests = 3_u32;
    let mut pause = Duration::from_millis(500);
    let url = match common::client_args("http_client", USAGE, |flag, number| match flag {
        "--requests" => Some(number().map(|n| requests = n as u32)),
        "--pause-ms" => Some(number().map(|n| pause = Duration::from_millis(n))),
        _ => None,
    }) {
        common::ClientArgs::Run(url) => url,
        common::ClientArgs::Exit(code) => return code,
    };
    let url = match url {
        Some(url) => url,
        None => match local_server().await {
            Ok(addr) => format!("http://{addr}/"),
            Err(e) => {
                eprintln!("http_client: cannot start the local server: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let uri: hyper::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => {
            eprintln!("http_client: {url}: {e}");
            return ExitCode::from(2);
        }
    };

    let connector = match Builder::new()
        .connect_timeout(Duration::from_secs(3))
        .user_timeout(Duration::from_secs(10))
        .close_wait_timeout(Duration::from_secs(5))
        .connector()
    {
        Ok(connector) => connector,
        Err(e) => {
            eprintln!("http_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector.clone());

    let mut handles: Vec<ConnectionHandle> = Vec::new();
    for i in 0..requests {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        let response = match client.get(uri.clone()).await {
            Ok(response) => response,
            Err(e) => {
                eprintln!("http_client: request {i}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let status = response.status();
        let handle = response.extensions().get::<ConnectionHandle>().cloned();
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                eprintln!("http_client: request {i}: body: {e}");
                return ExitCode::FAILURE;
            }
        };
        match handle {
            Some(handle) => {
                println!(
                    "request {i}: {status}, {} bytes, on connection {} to {}",
                    body.len(),
                    handle.id(),
                    handle.peer_addr()
                );
                handles.push(handle);
            }
            None => println!("request {i}: {status}, {} bytes", body.len()),
        }
    }
    // Let the local server's keep-alive run out, then look at every connection used.
    tokio::time::sleep(pause).await;
    for handle in &handles {
        println!(
            "connection {}: server closed it: {}, state {}, closed by the library for: {:?}",
            handle.id(),
            handle.is_peer_closed(),
            handle.state(),
            handle.close_reason()
        );
    }
    println!("{:?}", connector.stats());
    ExitCode::SUCCESS
}

/// An HTTP/1 server on 127.0.0.1 that closes each connection 300 ms after it opened,
/// once its requests are answered (a short keep-alive timeout).
async fn local_server() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|_: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"hello\n",
                        ))))
                    });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                // After 300 ms: close once idle, as a keep-alive timeout does.
                loop {
                    tokio::select! {
                        _ = conn.as_mut() => break,
                        () = tokio::time::sleep(Duration::from_millis(300)) => {
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}
