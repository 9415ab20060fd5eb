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

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use tcp_hygiene::integration::hyper::serve_connection;
use tcp_hygiene::Builder;

const USAGE: &str =
    "usage: hyper_server --listen ADDR [--idle-timeout-ms N] [--close-wait-timeout-ms N]
  N in milliseconds; 0 disables the timeout; an omitted flag keeps the library default";

struct Args {
    listen: SocketAddr,
    /// `None`: library default; `Some(None)`: disabled.
    idle_timeout: Option<Option<Duration>>,
    close_wait_timeout: Option<Option<Duration>>,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut idle_timeout = None;
    let mut close_wait_timeout = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                listen = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--listen {value}: {e}"))?,
                );
            }
            "--idle-timeout-ms" => idle_timeout = Some(millis(&flag, &value)?),
            "--close-wait-timeout-ms" => close_wait_timeout = Some(millis(&flag, &value)?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        idle_timeout,
        close_wait_timeout,
    })
}

fn millis(flag: &str, value: &str) -> Result<Option<Duration>, String> {
    let ms: u64 = value.parse().map_err(|e| format!("{flag} {value}: {e}"))?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("hyper_server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();

    let mut builder = Builder::new();
    if let Some(t) = args.idle_timeout {
        builder.idle_timeout(t);
    }
    if let Some(t) = args.close_wait_timeout {
        builder.close_wait_timeout(t);
    }
    let listener = match builder.bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("hyper_server: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .expect("local_addr of a bound listener");
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {addr}");
    let _ = stdout.flush();
    drop(stdout);

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
