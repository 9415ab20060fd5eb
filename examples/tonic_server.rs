//! A tonic gRPC server over a supervised listener, serving the standard gRPC health
//! service (`grpc.health.v1.Health`, from the `tonic-health` crate: no protoc needed).
//!
//! ```text
//! cargo run --example tonic_server --features tonic -- --listen 127.0.0.1:50051 \
//!     [--idle-timeout-ms N] [--close-wait-timeout-ms N]
//! grpc_health_probe -addr 127.0.0.1:50051 -service tcp_hygiene.Example   # if you have it
//! ```
//!
//! `0` disables a timeout; an omitted flag keeps the library's default. The first line on
//! stdout is `listening on IP:PORT`. The server reports `SERVING` for the whole server
//! (`""`) and for `tcp_hygiene.Example`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tcp_hygiene::Builder;
use tonic_health::ServingStatus;

/// The service name this example reports as serving, besides the whole server.
const SERVICE: &str = "tcp_hygiene.Example";

const USAGE: &str =
    "usage: tonic_server --listen ADDR [--idle-timeout-ms N] [--close-wait-timeout-ms N]
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
            eprintln!("tonic_server: {e}\n{USAGE}");
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
            eprintln!("tonic_server: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .expect("local_addr of a bound listener");

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;

    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {addr}");
    let _ = stdout.flush();
    drop(stdout);

    // With tonic's `router` feature (on by default) this is
    // `Server::builder().add_service(health).serve_with_incoming(listener.into_incoming())`.
    let served = tonic::transport::Server::builder()
        .serve_with_incoming(health, listener.into_incoming())
        .await;
    if let Err(e) = served {
        eprintln!("tonic_server: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
