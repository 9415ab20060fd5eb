//! Slow peers at the TCP level, for any protocol: `min_receive_rate` (a peer that owes
//! data and trickles it, slowloris) and `min_send_rate` (a peer that takes our queued
//! data too slowly, a slow reader). Real loopback sockets; each case has its control.

mod support;

use std::io;
use std::time::{Duration, Instant};

use support::wait_for;
use support::{require, Need};
use tcp_hygiene::{Builder, CloseReason, MinDataRate};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// A line protocol: reads a line, answers it, waits for the next.
async fn line_server(stream: tcp_hygiene::TcpStream) {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if stream.get_mut().write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A client trickles a line a byte every 300 ms (5 bytes a second in 500 ms windows, the
/// rule asks for 100): the peer owes the rest of its line, and is closed as too slow. A
/// client idle between lines (its line answered, then silent for longer than two
/// windows) is not: it owes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_receive_rate_cuts_a_trickling_peer_and_spares_an_idle_one() {
    let grace = Duration::from_millis(500);
    let listener =
        support::listener(Builder::new().min_receive_rate(MinDataRate::new(100, grace))).await;
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { listener.serve(line_server).await });

    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"hello\n").await.unwrap();
    let mut echo = [0u8; 6];
    idle.read_exact(&mut echo).await.unwrap();

    let mut trickler = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let closed = loop {
        if trickler.write_all(b"x").await.is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_millis(300), trickler.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => panic!("an answer to half a line: {n} bytes"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the trickler lives"
        );
    };
    eprintln!("trickler closed {closed:?} after its first byte");
    assert!(closed >= grace, "{closed:?}");
    assert!(
        closed <= grace * 2 + Duration::from_millis(500),
        "{closed:?}"
    );

    // The idle one is still there, and still served.
    idle.write_all(b"again\n").await.unwrap();
    let mut echo = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(2), idle.read_exact(&mut echo))
        .await
        .expect("the idle client is still served")
        .unwrap();
    assert_eq!(&echo, b"again\n");
    server.abort();
}

/// A slow reader (4 KiB window, reads 100 bytes every 100 ms) of a large stream: the
/// library resets it once a window passes with less acknowledged than the rule asks.
/// (The client still has its buffered bytes to read before it sees the reset: the
/// kernel's view, `ss`, and a write of its own tell at once.) Control: the same reader on
/// a listener without the rule is still connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_send_rate_resets_a_slow_reader() {
    require!(Need::Tool("ss"));
    let grace = Duration::from_millis(500);
    let with =
        support::listener(Builder::new().min_send_rate(MinDataRate::new(50_000, grace))).await;
    let without = support::listener(&Builder::new()).await;
    let mut connections = Vec::new();
    for listener in [&with, &without] {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let client = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let handle = server.handle();
        let ports = (
            listener.local_addr().unwrap().port(),
            client.local_addr().unwrap().port(),
        );
        let writer = tokio::spawn(async move {
            let chunk = vec![b'z'; 64 * 1024];
            while server.write_all(&chunk).await.is_ok() {}
            server
        });
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut buf = [0u8; 100];
            for _ in 0..30 {
                if client.read(&mut buf).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            client
        });
        connections.push((handle, ports, reader, writer));
    }
    let started = Instant::now();
    let (handle, (server_port, client_port), reader, writer) = connections.remove(0);
    let took = wait_for(Duration::from_secs(3), "the slow reader reset", || {
        support::ss_conn(server_port, client_port, "connected") == 0
    })
    .await;
    eprintln!("slow reader: reset {took:?} after it started reading");
    assert!(took <= grace * 2 + Duration::from_millis(500), "{took:?}");
    assert_eq!(handle.close_reason(), Some(CloseReason::SlowSend));
    let mut client = reader.await.unwrap();
    let err = client
        .write_all(b"ack?")
        .await
        .expect_err("the client's socket was reset");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "{err:?}"
    );
    writer.abort();
    // Control.
    let (handle, (server_port, client_port), reader, writer) = connections.remove(0);
    assert!(started.elapsed() >= grace * 2);
    assert_eq!(support::ss_conn(server_port, client_port, "established"), 1);
    assert_eq!(handle.close_reason(), None);
    reader.abort();
    writer.abort();
}
