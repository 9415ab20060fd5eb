//! hyper 1 + hyper-util over a supervised listener: HTTP/1.1 and HTTP/2 (prior
//! knowledge) on the same port, detected per connection by hyper-util's `auto` builder.
//!
//! ```text
//! cargo run --example hyper_server --features hyper -- --listen 127.0.0.1:3000 \
//!     [--idle-timeout-ms N] [--close-wait-timeout-ms N]
//! curl http://127.0.0.1:3000/
//! curl --http2-prior-knowledge http://127.0.0.1:3000/
//! ```
//!
//! `0` disables a timeout; an omitted flag keeps the library's default. The first line on
//! stdout is `listening on IP:PORT`. Every request gets `200 ok`; the response header
//! `x-connection` carries the supervised connection's id.

mod common;

use std::convert::Infallible;
use std::process::ExitCode;

use hyper::body::Incoming;
use hyper::{Request, Response};
use tcp_hygiene::integration::hyper::serve_connection;

#[tokio::main]
async fn main() -> ExitCode {
    let listener = match common::bind("hyper_server").await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    common::announce(&listener);

    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Only errors that say the listener itself is broken get here.
                eprintln!("hyper_server: accept: {e}");
                return ExitCode::FAILURE;
            }
        };
        let id = stream.id();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_: Request<Incoming>| async move {
                let response = Response::builder()
                    .header("x-connection", id)
                    .body("ok".to_owned())
                    .expect("a valid response");
                Ok::<_, Infallible>(response)
            });
            if let Err(e) = serve_connection(stream, service).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
