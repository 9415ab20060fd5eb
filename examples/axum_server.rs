//! axum over a supervised listener.
//!
//! ```text
//! cargo run --example axum_server --features axum -- --listen 127.0.0.1:3000 \
//!     [--idle-timeout-ms N] [--close-wait-timeout-ms N]
//! ```
//!
//! `0` disables a timeout; an omitted flag keeps the library's default. The first line on
//! stdout is `listening on IP:PORT`.
//!
//! Routes:
//! - `GET /`: `ok`.
//! - `GET /conn`: `id=N peer=IP:PORT` of the connection that carried the request, from
//!   `ConnectInfo<ConnectionHandle>`.
//! - `GET|POST /hang`: never answers, and never reads a request body: the stuck handler
//!   whose socket would sit in `CLOSE_WAIT` forever once the client leaves, if the
//!   listener were tokio's.
//!
//! Try it from bash: send a request whose body never ends, then hang up, and watch
//! `ss -tan state close-wait` empty itself after `--close-wait-timeout-ms`:
//!
//! ```text
//! exec 3<>/dev/tcp/127.0.0.1/3000
//! printf 'POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc' >&3
//! exec 3>&-
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use tcp_hygiene::{Builder, ConnectionHandle};

const USAGE: &str =
    "usage: axum_server --listen ADDR [--idle-timeout-ms N] [--close-wait-timeout-ms N]
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

async fn conn(ConnectInfo(conn): ConnectInfo<ConnectionHandle>) -> String {
    format!("id={} peer={}", conn.id(), conn.peer_addr())
}

async fn hang() -> &'static str {
    std::future::pending().await
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
            eprintln!("axum_server: {e}\n{USAGE}");
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
            eprintln!("axum_server: cannot listen on {}: {e}", args.listen);
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

    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/conn", get(conn))
        .route("/hang", get(hang).post(hang));
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<ConnectionHandle>(),
    )
    .await;
    if let Err(e) = served {
        eprintln!("axum_server: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
