//! The command line shared by the axum, hyper and tonic examples:
//! `--listen ADDR [--idle-timeout-ms N] [--close-wait-timeout-ms N]`, where `0` disables
//! a timeout and an omitted flag keeps the library's default; `--help` prints the usage
//! and exits 0, bad flags print it and exit 2.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tcp_hygiene::{Builder, TcpListener};

fn usage(name: &str) -> String {
    format!(
        "usage: {name} --listen ADDR [--idle-timeout-ms N] [--close-wait-timeout-ms N]
  N in milliseconds; 0 disables the timeout; an omitted flag keeps the library default"
    )
}

fn millis(flag: &str, value: &str) -> Result<Option<Duration>, String> {
    let ms: u64 = value.parse().map_err(|e| format!("{flag} {value}: {e}"))?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

fn parse_args() -> Result<(SocketAddr, Builder), String> {
    let mut listen = None;
    let mut builder = Builder::new();
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
            "--idle-timeout-ms" => _ = builder.idle_timeout(millis(&flag, &value)?),
            "--close-wait-timeout-ms" => _ = builder.close_wait_timeout(millis(&flag, &value)?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok((listen.ok_or("--listen is required")?, builder))
}

/// Parses the command line, sets up logging (`RUST_LOG`) and binds the listener; on
/// `--help`, bad flags or a bind failure, returns the exit code to end with.
pub(crate) async fn bind(name: &str) -> Result<TcpListener, ExitCode> {
    if std::env::args().any(|a| a == "-h" || a == "--help") {
        println!("{}", usage(name));
        return Err(ExitCode::SUCCESS);
    }
    let (listen, builder) = parse_args().map_err(|e| {
        eprintln!("{name}: {e}\n{}", usage(name));
        ExitCode::from(2)
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    builder.bind(listen).await.map_err(|e| {
        eprintln!("{name}: cannot listen on {listen}: {e}");
        ExitCode::FAILURE
    })
}

/// Prints the first stdout line, `listening on IP:PORT`, and flushes it.
pub(crate) fn announce(listener: &TcpListener) {
    let addr = listener
        .local_addr()
        .expect("local_addr of a bound listener");
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {addr}");
    let _ = stdout.flush();
}
