//! The command line the examples share: the listener's options, the framework serves'
//! options, the drain's deadlines, and `--plain` (the same server without the library).
//! A value of 0 disables a timeout; an omitted flag keeps the default; `--help` prints
//! the usage and exits 0, bad flags print it and exit 2.
#![allow(dead_code)] // each example uses its part

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tcp_hygiene::{Builder, Keepalive, MinDataRate, TcpListener};

/// The flags every example takes, for the usage line.
pub(crate) const LIBRARY_FLAGS: &str = "--listen ADDR [--close-wait-timeout-ms N] \
[--fin-wait-timeout-ms N] [--idle-timeout-ms N] [--read-idle-timeout-ms N] \
[--write-idle-timeout-ms N] [--first-byte-timeout-ms N] [--max-connection-age-ms N] \
[--keepalive IDLE_MS,INTERVAL_MS,COUNT] [--user-timeout-ms N] [--max-connections N] \
[--min-receive-rate BYTES_PER_S] [--min-send-rate BYTES_PER_S] [--min-rate-grace-ms N]";

/// The flags of the HTTP and gRPC examples, for the usage line.
pub(crate) const SERVE_FLAGS: &str = "[--header-read-timeout-ms N] [--keep-alive-timeout-ms N] \
[--drain-soft-ms N] [--drain-hard-ms N] [--plain]";

/// What the command line asked for.
pub(crate) struct Args {
    pub(crate) listen: String,
    pub(crate) builder: Builder,
    /// `--header-read-timeout-ms`, if given (inner `None`: 0, disabled).
    pub(crate) header_read_timeout: Option<Option<Duration>>,
    /// `--keep-alive-timeout-ms`, if given (inner `None`: 0, disabled).
    pub(crate) keep_alive_timeout: Option<Option<Duration>>,
    pub(crate) drain_soft: Duration,
    pub(crate) drain_hard: Duration,
    /// The control: the framework's own server over tokio's listener.
    pub(crate) plain: bool,
}

fn millis(flag: &str, value: &str) -> Result<Option<Duration>, String> {
    let ms: u64 = value
        .parse()
        .map_err(|_| format!("{flag}: not a number of milliseconds: {value:?}"))?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: not a number: {value:?}"))
}

fn keepalive(value: &str) -> Result<Option<Keepalive>, String> {
    if value == "0" {
        return Ok(None);
    }
    let parts: Vec<&str> = value.split(',').collect();
    let [idle, interval, count] = parts[..] else {
        return Err(format!(
            "--keepalive wants IDLE_MS,INTERVAL_MS,COUNT, got {value:?}"
        ));
    };
    let ms = |s: &str| -> Result<Duration, String> {
        s.parse()
            .map(Duration::from_millis)
            .map_err(|_| format!("bad --keepalive part {s:?}"))
    };
    Ok(Some(
        Keepalive::new()
            .with_idle(ms(idle)?)
            .with_interval(ms(interval)?)
            .with_retries(number("--keepalive count", count)?),
    ))
}

/// Parses `argv`; flags `extra` recognises (given the flag and a way to take its value;
/// returning whether it was its flag) are the example's own.
pub(crate) fn parse(
    argv: impl IntoIterator<Item = String>,
    mut extra: impl FnMut(&str, &mut dyn FnMut() -> Result<String, String>) -> Result<bool, String>,
) -> Result<Args, String> {
    let mut argv = argv.into_iter();
    let mut listen = None;
    let mut builder = Builder::new();
    let (mut receive_rate, mut send_rate, mut grace) = (None, None, Duration::from_secs(1));
    let mut args = Args {
        listen: String::new(),
        builder: Builder::new(),
        header_read_timeout: None,
        keep_alive_timeout: None,
        drain_soft: Duration::from_millis(5000),
        drain_hard: Duration::from_millis(30000),
        plain: false,
    };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        let flag = flag.as_str();
        match flag {
            "--listen" => listen = Some(value()?),
            "--close-wait-timeout-ms" => _ = builder.close_wait_timeout(millis(flag, &value()?)?),
            "--fin-wait-timeout-ms" => _ = builder.fin_wait_timeout(millis(flag, &value()?)?),
            "--idle-timeout-ms" => _ = builder.idle_timeout(millis(flag, &value()?)?),
            "--read-idle-timeout-ms" => _ = builder.read_idle_timeout(millis(flag, &value()?)?),
            "--write-idle-timeout-ms" => _ = builder.write_idle_timeout(millis(flag, &value()?)?),
            "--first-byte-timeout-ms" => _ = builder.first_byte_timeout(millis(flag, &value()?)?),
            "--max-connection-age-ms" => _ = builder.max_connection_age(millis(flag, &value()?)?),
            "--user-timeout-ms" => _ = builder.user_timeout(millis(flag, &value()?)?),
            "--keepalive" => _ = builder.keepalive(keepalive(&value()?)?),
            "--max-connections" => {
                let n: usize = number(flag, &value()?)?;
                builder.max_connections((n > 0).then_some(n));
            }
            "--min-receive-rate" => receive_rate = Some(number::<u64>(flag, &value()?)?),
            "--min-send-rate" => send_rate = Some(number::<u64>(flag, &value()?)?),
            "--min-rate-grace-ms" => grace = Duration::from_millis(number(flag, &value()?)?),
            "--header-read-timeout-ms" => {
                args.header_read_timeout = Some(millis(flag, &value()?)?);
            }
            "--keep-alive-timeout-ms" => {
                args.keep_alive_timeout = Some(millis(flag, &value()?)?);
            }
            "--drain-soft-ms" => {
                args.drain_soft = Duration::from_millis(number(flag, &value()?)?);
            }
            "--drain-hard-ms" => {
                args.drain_hard = Duration::from_millis(number(flag, &value()?)?);
            }
            "--plain" => args.plain = true,
            "-h" | "--help" => return Err(String::new()),
            other => {
                if !extra(other, &mut value)? {
                    return Err(format!("unknown flag {other:?}"));
                }
            }
        }
    }
    // Only a rate given is set: an omitted flag keeps the default (under a serve, 240 B/s
    // after 5 s), `0` disables.
    let rate = |bytes: u64| (bytes > 0).then(|| MinDataRate::new(bytes, grace));
    if let Some(bytes) = receive_rate {
        builder.min_receive_rate(rate(bytes));
    }
    if let Some(bytes) = send_rate {
        builder.min_send_rate(rate(bytes));
    }
    args.listen = listen.ok_or("--listen is required")?;
    args.builder = builder;
    Ok(args)
}

/// Parses the process's own command line and sets up logging (`RUST_LOG`, on stderr); on
/// `--help` or bad flags, the exit code to end with (the usage printed).
pub(crate) fn args(
    usage: &str,
    extra: impl FnMut(&str, &mut dyn FnMut() -> Result<String, String>) -> Result<bool, String>,
) -> Result<Args, ExitCode> {
    let name = usage.split_whitespace().nth(1).unwrap_or("example");
    match parse(std::env::args().skip(1), extra) {
        Ok(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
            Ok(args)
        }
        Err(message) if message.is_empty() => {
            println!("{usage}");
            Err(ExitCode::SUCCESS)
        }
        Err(message) => {
            eprintln!("{name}: {message}\n{usage}");
            Err(ExitCode::from(2))
        }
    }
}

/// Binds the supervised listener the arguments ask for; a bad option (named by the
/// library) exits 2 with the usage, a bind failure exits 1.
pub(crate) async fn bind(args: &Args, usage: &str) -> Result<TcpListener, ExitCode> {
    let name = usage.split_whitespace().nth(1).unwrap_or("example");
    args.builder.bind(&args.listen).await.map_err(|e| {
        eprintln!("{name}: {e}");
        if e.kind() == std::io::ErrorKind::InvalidInput {
            eprintln!("{usage}");
            ExitCode::from(2)
        } else {
            ExitCode::FAILURE
        }
    })
}

/// The command line of the HTTP or gRPC example `name` (listener and serve flags), and its
/// usage line; on `--help` or bad flags, the exit code to end with.
pub(crate) fn serve_args(name: &str) -> Result<(Args, String), ExitCode> {
    let usage = format!("usage: {name} {LIBRARY_FLAGS} {SERVE_FLAGS}");
    args(&usage, |_, _| Ok(false)).map(|args| (args, usage))
}

/// How a served example ends: the drain's report on stdout and 0, or the error and 1.
pub(crate) fn finish(name: &str, served: std::io::Result<tcp_hygiene::DrainReport>) -> ExitCode {
    match served {
        Ok(report) => {
            print_report(&report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The serve with the HTTP options the arguments ask for (the header read timeout is
/// HTTP/1's: a gRPC server ignores it).
#[cfg(feature = "hyper")]
pub(crate) fn configure<S>(
    mut serve: tcp_hygiene::integration::http::Serve<S>,
    args: &Args,
) -> tcp_hygiene::integration::http::Serve<S> {
    if let Some(timeout) = args.header_read_timeout {
        serve = serve.header_read_timeout(timeout);
    }
    if let Some(timeout) = args.keep_alive_timeout {
        serve = serve.keep_alive_timeout(timeout);
    }
    serve
}

/// Prints the first stdout line, `listening on IP:PORT`, and flushes it.
pub(crate) fn announce(addr: SocketAddr) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {addr}");
    let _ = stdout.flush();
}

/// Resolves at the first SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Prints a drain's report as one line of JSON on stdout.
pub(crate) fn print_report(report: &tcp_hygiene::DrainReport) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "{{\"drain\":{{\"connections\":{},\"finished\":{},\"idle_closed\":{},\"forced\":{}}}}}",
        report.connections, report.finished, report.idle_closed, report.forced
    );
    let _ = stdout.flush();
}

/// `ms` from a query string like `ms=250&x=y`, if there.
pub(crate) fn query_number(query: Option<&str>, key: &str) -> Option<u64> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// A client example's command line: its own flags, and at most one URL.
pub(crate) enum ClientArgs {
    /// Run, against this URL if one was given.
    Run(Option<String>),
    /// `--help` (exit 0), or a bad flag (its message and the usage printed, exit 2).
    Exit(ExitCode),
}

/// Parses a client example's command line. `flag(name, number)` takes each flag: it
/// returns `None` for a flag it does not know, else whether it was well formed; `number()`
/// reads the flag's value as a whole number.
pub(crate) fn client_args(
    name: &str,
    usage: &str,
    mut flag: impl FnMut(&str, &mut dyn FnMut() -> Result<u64, String>) -> Option<Result<(), String>>,
) -> ClientArgs {
    let mut url = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            println!("{usage}");
            return ClientArgs::Exit(ExitCode::SUCCESS);
        }
        let mut number = || -> Result<u64, String> {
            let value = args.next().ok_or(format!("{arg} needs a value"))?;
            value
                .parse()
                .map_err(|e| format!("{arg} {value}: {e} (a whole number)"))
        };
        let parsed = match flag(&arg, &mut number) {
            Some(parsed) => parsed,
            None if arg.starts_with("--") => Err(format!("unknown flag {arg}")),
            None => {
                url = Some(arg);
                Ok(())
            }
        };
        if let Err(e) = parsed {
            eprintln!("{name}: {e}\n{usage}");
            return ClientArgs::Exit(ExitCode::from(2));
        }
    }
    ClientArgs::Run(url)
}
