//! A command-line echo server, for people and for black-box tests.
//!
//! ```text
//! cargo run --release --features serde --example echo_server -- --listen ADDR
//!     [--close-wait-timeout-ms N] [--fin-wait-timeout-ms N] [--idle-timeout-ms N]
//!     [--read-idle-timeout-ms N] [--write-idle-timeout-ms N] [--first-byte-timeout-ms N]
//!     [--keepalive IDLE_MS,INTERVAL_MS,COUNT] [--user-timeout-ms N] [--max-connections N]
//!     [--leak] [--no-hygiene] [--stats-every-ms N]
//! ```
//!
//! (and every other listener flag the examples share: `--max-connection-age-ms`,
//! `--min-receive-rate`, `--min-send-rate`, `--min-rate-grace-ms`).
//!
//! A value of 0 disables that option; an option left out keeps the library's default.
//! The first line on stdout is `listening on IP:PORT`. Every byte read is echoed; on EOF
//! the server shuts down its write half and drops the stream. With `--leak` the handler
//! is the classic bug: after echoing its first read it holds the stream forever and never
//! polls it again. `--no-hygiene` (or `--plain`) runs the same handler on a plain tokio
//! listener. `--stats-every-ms N` prints the listener's `Stats` as one JSON object per
//! line on stderr every N ms (serde_json, hence the `serde` feature). Bad flags print usage and exit 2.

mod common;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const USAGE: &str = "usage: echo_server";
const OWN_FLAGS: &str = "[--leak] [--no-hygiene] [--stats-every-ms N]";

/// The flags of this example alone.
#[derive(Default)]
struct Own {
    leak: bool,
    no_hygiene: bool,
    stats_every: Option<Duration>,
}

/// Echoes until EOF, then shuts down the write half. With `leak`, it echoes the first
/// read and then parks forever, holding the stream.
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, leak: bool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                if leak {
                    let _held = stream;
                    std::future::pending::<()>().await;
                    unreachable!();
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let usage = format!("{USAGE} {} {OWN_FLAGS}", common::LIBRARY_FLAGS);
    let mut own = Own::default();
    let parsed = common::args(&usage, |flag, value| {
        match flag {
            "--leak" => own.leak = true,
            "--no-hygiene" => own.no_hygiene = true,
            "--stats-every-ms" => {
                let ms: u64 = value()?
                    .parse()
                    .map_err(|_| "--stats-every-ms: not a number of milliseconds")?;
                own.stats_every = (ms > 0).then(|| Duration::from_millis(ms));
            }
            _ => return Ok(false),
        }
        Ok(true)
    });
    let args = match parsed {
        Ok(args) => args,
        Err(code) => return code,
    };
    let result = if own.no_hygiene || args.plain {
        run_plain(&args, &own, &usage).await
    } else {
        run_hygiene(&args, &own, &usage).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

async fn run_hygiene(args: &common::Args, own: &Own, usage: &str) -> Result<(), ExitCode> {
    let listener = Arc::new(common::bind(args, usage).await?);
    common::announce(listener.local_addr().expect("bound"));
    if let Some(every) = own.stats_every {
        let listener = listener.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let stats = serde_json::to_string(&listener.stats()).expect("stats as JSON");
                eprintln!("{stats}");
            }
        });
    }
    let leak = own.leak;
    listener
        .serve(move |stream| handle(stream, leak))
        .await
        .map_err(|e| {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        })
}

async fn run_plain(args: &common::Args, own: &Own, usage: &str) -> Result<(), ExitCode> {
    // Validate the flags the same way, even though the plain listener ignores them.
    if let Err(e) = args.builder.build() {
        eprintln!("echo_server: {e}\n{usage}");
        return Err(ExitCode::from(2));
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| {
            eprintln!("echo_server: cannot listen on {}: {e}", args.listen);
            ExitCode::FAILURE
        })?;
    common::announce(listener.local_addr().expect("bound"));
    let accepted = Arc::new(AtomicU64::new(0));
    if let Some(every) = own.stats_every {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                eprintln!(
                    "{{\"accepted\":{},\"no_hygiene\":true}}",
                    accepted.load(Relaxed)
                );
            }
        });
    }
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("echo_server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        accepted.fetch_add(1, Relaxed);
        tokio::spawn(handle(stream, own.leak));
    }
}
