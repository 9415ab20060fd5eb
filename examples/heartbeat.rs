//! A line-protocol server with an application heartbeat, on tcp-hygiene.
//!
//! Every line a client sends is echoed back, except `PONG`. When a client has sent nothing
//! for `--idle-ms`, the server sends `PING`; if no line arrives within `--reply-ms` after
//! that, the client is considered gone and the connection is reset (an abortive close: the
//! unacknowledged `PING` would otherwise keep an orphan retransmitting in `FIN_WAIT_1`).
//! Worst case, a vanished client is dropped `idle + reply` after the last byte it sent,
//! far sooner than keepalive's defaults, and it works through proxies that answer
//! keepalive probes themselves.
//!
//! ```text
//! cargo run --example heartbeat -- --listen 127.0.0.1:7000 --idle-ms 5000 --reply-ms 2000
//! ```
//!
//! Output, one line per event (the first line is exactly `listening on IP:PORT`):
//!
//! ```text
//! listening on 127.0.0.1:7000
//! accepted 127.0.0.1:51234
//! ping 127.0.0.1:51234
//! closed 127.0.0.1:51234 reason=heartbeat after_ms=7003
//! ```
//!
//! `after_ms` is the time since the last line received from the client (or since accept).
//! Other reasons: `eof` (the client closed), `error` (a read or write failed; the
//! library's close reason follows if it closed the connection itself).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const USAGE: &str = "usage: heartbeat [--listen ADDR] [--idle-ms N] [--reply-ms N]";

#[derive(Debug)]
struct Args {
    listen: String,
    idle: Duration,
    reply: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:0".to_owned(),
        idle: Duration::from_secs(30),
        reply: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let millis = |v: String| -> Result<Duration, String> {
            match v.parse::<u64>() {
                Ok(0) | Err(_) => Err(format!("{flag}: expected milliseconds > 0, got {v:?}")),
                Ok(ms) => Ok(Duration::from_millis(ms)),
            }
        };
        match flag.as_str() {
            "--listen" => args.listen = value()?,
            "--idle-ms" => args.idle = millis(value()?)?,
            "--reply-ms" => args.reply = millis(value()?)?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// How a connection ended.
enum End {
    Heartbeat,
    Eof,
    Error(std::io::Error),
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        // `--help`: the usage on stdout, success.
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("heartbeat: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The heartbeat is the fast detector; the library's defaults (keepalive, user
    // timeout, CLOSE_WAIT reaping) stay on as the backstop for everything else.
    let listener = match tcp_hygiene::Builder::new().bind(&args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("heartbeat: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("heartbeat: local_addr: {e}");
            return ExitCode::FAILURE;
        }
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("heartbeat: accept: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("accepted {peer}");
        let (idle, reply) = (args.idle, args.reply);
        tokio::spawn(async move {
            let handle = stream.handle();
            let (end, silent) = serve(stream, peer, idle, reply).await;
            let after_ms = silent.as_millis();
            match end {
                End::Heartbeat => println!("closed {peer} reason=heartbeat after_ms={after_ms}"),
                End::Eof => println!("closed {peer} reason=eof after_ms={after_ms}"),
                End::Error(e) => {
                    let library = handle
                        .close_reason()
                        .map_or(String::new(), |r| format!(" closed_by={r}"));
                    println!("closed {peer} reason=error after_ms={after_ms}{library} error={e}");
                }
            }
        });
    }
}

/// Serves one client until it leaves or stops answering; returns why, and how long the
/// client had been silent (time since its last line).
async fn serve(
    stream: tcp_hygiene::TcpStream,
    peer: SocketAddr,
    idle: Duration,
    reply: Duration,
) -> (End, Duration) {
    let handle = stream.handle();
    // `Lines::next_line` is cancel-safe, so it can sit in `select!` next to the timers.
    let mut lines = BufReader::new(stream).lines();
    let mut last_line = Instant::now();
    // When we sent a PING that is still unanswered.
    let mut ping_sent: Option<Instant> = None;
    loop {
        let reply_deadline = ping_sent.map_or_else(Instant::now, |at| at + reply);
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    last_line = Instant::now();
                    ping_sent = None;
                    if line.trim_end() == "PONG" {
                        continue;
                    }
                    let stream = lines.get_mut().get_mut();
                    let echo = format!("{line}\n");
                    if let Err(e) = stream.write_all(echo.as_bytes()).await {
                        return (End::Error(e), last_line.elapsed());
                    }
                }
                Ok(None) => return (End::Eof, last_line.elapsed()),
                Err(e) => return (End::Error(e), last_line.elapsed()),
            },
            // Nothing received for `idle` (counted by the kernel's byte counter, so any
            // byte, even half a line, counts as a sign of life).
            () = handle.read_idle(idle), if ping_sent.is_none() => {
                println!("ping {peer}");
                let stream = lines.get_mut().get_mut();
                if let Err(e) = stream.write_all(b"PING\n").await {
                    return (End::Error(e), last_line.elapsed());
                }
                ping_sent = Some(Instant::now());
            }
            () = tokio::time::sleep_until(reply_deadline.into()), if ping_sent.is_some() => {
                // Reset rather than FIN: the peer is gone, and a FIN would queue behind
                // the unacknowledged PING in an orphan socket for minutes.
                let _ = lines.get_ref().get_ref().get_ref().set_zero_linger();
                return (End::Heartbeat, last_line.elapsed());
            }
        }
    }
}
