//! The README's first command: the same leaky server twice, once on a plain tokio
//! listener and once through tcp-hygiene, with the same clients at both, and what the
//! kernel shows for each, side by side.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! The handler is the classic bug: it echoes the first read and then holds the stream
//! forever without polling it. Clients: 20 that send a request and half-close (FIN), and
//! 10 that connect and stay silent. With plain tokio the kernel keeps 20 sockets in
//! `CLOSE_WAIT` and 10 in `ESTABLISHED` for as long as the process lives; through
//! tcp-hygiene they are gone after `close_wait_timeout` (2 s) and `first_byte_timeout`
//! (3 s). Exits 0 when the kernel shows exactly that, 1 otherwise, in about 6 seconds.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tcp_hygiene::{Builder, CloseReason, KernelState};
use tcp_hygiene_cli::Census;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const HALF_CLOSERS: usize = 20;
const SILENT: usize = 10;

/// Echoes the first read, then holds the stream forever without polling it.
async fn leaky_handler<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = [0u8; 1024];
    if let Ok(n @ 1..) = stream.read(&mut buf).await {
        let _ = stream.write_all(&buf[..n]).await;
    }
    let _held = stream;
    std::future::pending::<()>().await;
}

/// Sends a request, reads the echo, half-closes, then reads until the server closes.
async fn half_closer(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
    let mut buf = [0u8; 64];
    let _ = s.read(&mut buf).await;
    s.shutdown().await.expect("shutdown");
    while let Ok(1..) = s.read(&mut buf).await {}
}

/// Connects and never sends a byte; closes when the server does.
async fn silent(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    while let Ok(1..) = s.read(&mut buf).await {}
}

fn row(census: &Census) -> String {
    let [close_wait, established, time_wait] = [
        KernelState::CloseWait,
        KernelState::Established,
        KernelState::TimeWait,
    ]
    .map(|state| census.count(state));
    format!(
        "{close_wait:>3} CLOSE_WAIT {established:>3} ESTAB {time_wait:>3} TIME_WAIT {:>2} other",
        census.total() - close_wait - established - time_wait,
    )
}

#[tokio::main]
async fn main() -> std::io::Result<ExitCode> {
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let plain_port = plain.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = plain.accept().await {
            tokio::spawn(leaky_handler(stream));
        }
    });

    let hygiene = Builder::new()
        .close_wait_timeout(Duration::from_secs(2))
        .first_byte_timeout(Duration::from_secs(3))
        .bind("127.0.0.1:0")
        .await?;
    let hygiene_port = hygiene.local_addr()?.port();
    let hygiene = std::sync::Arc::new(hygiene);
    let server = hygiene.clone();
    tokio::spawn(async move { server.serve(leaky_handler).await });

    println!("Two servers with the same leaky handler (echoes once, then never polls again).");
    println!("  plain tokio  : 127.0.0.1:{plain_port}");
    println!(
        "  tcp-hygiene  : 127.0.0.1:{hygiene_port}  (close_wait_timeout 2s, first_byte_timeout 3s)"
    );
    println!("Clients at each: {HALF_CLOSERS} that send a request and half-close, {SILENT} that connect and stay silent.");
    println!();
    for port in [plain_port, hygiene_port] {
        for _ in 0..HALF_CLOSERS {
            tokio::spawn(half_closer(port));
        }
        for _ in 0..SILENT {
            tokio::spawn(silent(port));
        }
    }

    println!(
        "What the kernel shows for each server's port (tcp_hygiene_cli::Census, from sock_diag):"
    );
    println!("{:>5}  {:<47} | tcp-hygiene", "time", "plain tokio");
    let start = Instant::now();
    let (mut plain_now, mut hygiene_now) = (Census::default(), Census::default());
    for tick in 0..=6 {
        tokio::time::sleep_until((start + Duration::from_millis(tick * 1000 + 300)).into()).await;
        plain_now = Census::of_local_port(plain_port)?;
        hygiene_now = Census::of_local_port(hygiene_port)?;
        println!(
            "{:>4}s  {:<47} | {}",
            tick,
            row(&plain_now),
            row(&hygiene_now)
        );
    }

    let stats = hygiene.stats();
    println!();
    println!("plain tokio diagnosis:");
    for line in plain_now.diagnosis() {
        println!("  {line}");
    }
    println!(
        "tcp-hygiene closed {} lingering CLOSE_WAIT and {} silent connections of the {} it accepted",
        stats.closed(CloseReason::CloseWaitTimeout),
        stats.closed(CloseReason::FirstByteTimeout),
        stats.accepted
    );

    let plain_leaks = plain_now.count(KernelState::CloseWait) == HALF_CLOSERS as u64
        && plain_now.count(KernelState::Established) == SILENT as u64;
    // The server closed the silent ones first, so they pass through TIME_WAIT (60 s,
    // bounded, harmless): that is the kernel finishing the close, not a leak.
    let hygiene_clean = hygiene_now.count(KernelState::CloseWait) == 0
        && hygiene_now.count(KernelState::Established) == 0;
    if plain_leaks && hygiene_clean {
        println!(
            "\nOK: plain tokio holds {} sockets it will never close; tcp-hygiene none \
             (its TIME_WAITs are the kernel finishing the closes it made; they expire in 60 s).",
            plain_now.total()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nUNEXPECTED: plain tokio {plain_now}; tcp-hygiene {hygiene_now}");
        Ok(ExitCode::FAILURE)
    }
}
