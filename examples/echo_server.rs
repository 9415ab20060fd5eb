//! A command-line echo server, for people and for black-box tests.
//!
//! ```text
//! cargo run --release --example echo_server -- --listen ADDR
//!     [--close-wait-timeout-ms N] [--fin-wait-timeout-ms N] [--idle-timeout-ms N]
//!     [--read-idle-timeout-ms N] [--write-idle-timeout-ms N] [--first-byte-timeout-ms N]
//!     [--keepalive IDLE_MS,INTERVAL_MS,COUNT] [--user-timeout-ms N] [--max-connections N]
//!     [--leak] [--no-hygiene] [--stats-every-ms N]
//! ```
//!
//! A value of 0 disables that option; an option left out keeps the library's default.
//! The first line on stdout is `listening on IP:PORT`. Every byte read is echoed; on EOF
//! the server shuts down its write half and drops the stream. With `--leak` the handler
//! is the classic bug: after echoing its first read it holds the stream forever and never
//! polls it again. `--no-hygiene` runs the same handler on a plain tokio listener.
//! `--stats-every-ms N` prints the listener's `Stats` as one JSON object per line on
//! stderr every N ms. Bad flags print usage and exit 2.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tcp_hygiene::{Builder, Keepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const USAGE: &str = "usage: echo_server --listen ADDR [--close-wait-timeout-ms N] [--fin-wait-timeout-ms N] \
[--idle-timeout-ms N] [--read-idle-timeout-ms N] [--write-idle-timeout-ms N] [--first-byte-timeout-ms N] \
[--keepalive IDLE_MS,INTERVAL_MS,COUNT] [--user-timeout-ms N] [--max-connections N] [--leak] [--no-hygiene] \
[--stats-every-ms N]";

struct Args {
    listen: String,
    builder: Builder,
    leak: bool,
    no_hygiene: bool,
    stats_every: Option<Duration>,
}

fn millis(value: &str) -> Result<Option<Duration>, String> {
    let n: u64 = value
        .parse()
        .map_err(|_| format!("not a number of milliseconds: {value:?}"))?;
    Ok((n > 0).then(|| Duration::from_millis(n)))
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut listen = None;
    let mut builder = Builder::new();
    let (mut leak, mut no_hygiene, mut stats_every) = (false, false, None);
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?),
            "--close-wait-timeout-ms" => _ = builder.close_wait_timeout(millis(&value()?)?),
            "--fin-wait-timeout-ms" => _ = builder.fin_wait_timeout(millis(&value()?)?),
            "--idle-timeout-ms" => _ = builder.idle_timeout(millis(&value()?)?),
            "--read-idle-timeout-ms" => _ = builder.read_idle_timeout(millis(&value()?)?),
            "--write-idle-timeout-ms" => _ = builder.write_idle_timeout(millis(&value()?)?),
            "--first-byte-timeout-ms" => _ = builder.first_byte_timeout(millis(&value()?)?),
            "--user-timeout-ms" => _ = builder.user_timeout(millis(&value()?)?),
            "--keepalive" => {
                let v = value()?;
                let keepalive = if v == "0" {
                    None
                } else {
                    let parts: Vec<&str> = v.split(',').collect();
                    let [idle, interval, count] = parts[..] else {
                        return Err(format!(
                            "--keepalive wants IDLE_MS,INTERVAL_MS,COUNT, got {v:?}"
                        ));
                    };
                    let ms = |s: &str| -> Result<Duration, String> {
                        s.parse()
                            .map(Duration::from_millis)
                            .map_err(|_| format!("bad --keepalive part {s:?}"))
                    };
                    let count = count
                        .parse()
                        .map_err(|_| format!("bad --keepalive count {count:?}"))?;
                    Some(
                        Keepalive::new()
                            .with_idle(ms(idle)?)
                            .with_interval(ms(interval)?)
                            .with_retries(count),
                    )
                };
                builder.keepalive(keepalive);
            }
            "--max-connections" => {
                let v = value()?;
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("bad --max-connections {v:?}"))?;
                builder.max_connections((n > 0).then_some(n));
            }
            "--stats-every-ms" => stats_every = millis(&value()?)?,
            "--leak" => leak = true,
            "--no-hygiene" => no_hygiene = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    Ok(Args {
        listen,
        builder,
        leak,
        no_hygiene,
        stats_every,
    })
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

fn announce(addr: std::net::SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("echo_server: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = if args.no_hygiene {
        run_plain(&args).await
    } else {
        run_hygiene(&args).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("echo_server: {e}");
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_hygiene(args: &Args) -> std::io::Result<()> {
    let listener = Arc::new(args.builder.bind(&args.listen).await?);
    announce(listener.local_addr()?);
    if let Some(every) = args.stats_every {
        let listener = listener.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                eprintln!("{}", listener.stats().to_json());
            }
        });
    }
    let leak = args.leak;
    listener.serve(move |stream| handle(stream, leak)).await
}

async fn run_plain(args: &Args) -> std::io::Result<()> {
    // Validate the flags the same way, even though the plain listener ignores them.
    args.builder.build()?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    announce(listener.local_addr()?);
    let accepted = Arc::new(AtomicU64::new(0));
    if let Some(every) = args.stats_every {
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
        tokio::spawn(handle(stream, args.leak));
    }
}
