//! A graceful close never costs a well-behaved peer a byte: whichever rule closes the
//! connection (`max_connection_age`, `read_idle_timeout`, the drain's hard deadline,
//! `close_wait_timeout`), the client receives every byte the server application was told
//! it wrote, then a clean EOF. Never a reset, also when the client keeps sending while it
//! downloads, and also once the application has dropped the stream.
//!
//! Real loopback sockets; the byte counts are the client's own, checked byte for byte.

mod support;

use std::io;
use std::time::{Duration, Instant};

use support::{require, Need};
use support::{ss_count, wait_for};
use tcp_hygiene::{Builder, CloseReason, ConnectionHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

const CHUNK: usize = 64 * 1024;

/// Deterministic, position-dependent bytes: a lost, duplicated or reordered chunk shows
/// up at the first wrong byte.
fn pattern_byte(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (i as u8)
}

fn chunk_at(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(pattern_byte).collect()
}

/// The server application: writes the pattern until a write fails (the library closed
/// the connection), then returns the stream and how many bytes its writes reported.
async fn stream_until_error(
    mut stream: tcp_hygiene::TcpStream,
) -> (tcp_hygiene::TcpStream, u64, io::Error) {
    let mut written = 0u64;
    loop {
        match stream.write(&chunk_at(written, CHUNK)).await {
            Ok(n) => written += n as u64,
            Err(e) => return (stream, written, e),
        }
    }
}

/// What the client saw: every byte in order, then EOF (or the error that ended it).
struct Received {
    bytes: u64,
    end: io::Result<()>,
    eof_at: Instant,
}

/// The client: reads everything, checking the pattern; with `chatty`, it also sends a
/// byte every 10 ms while it reads (an HTTP/2 client's WINDOW_UPDATEs and PINGs do this),
/// until it sees EOF. With `pause`, it stops reading for a while once it has that many
/// bytes (a slow consumer, not a dead one).
async fn client_reads(client: TcpStream, chatty: bool, pause: Option<(u64, Duration)>) -> Received {
    let (mut rd, mut wr) = client.into_split();
    let (done_tx, mut done_rx) = oneshot::channel::<()>();
    let talker = tokio::spawn(async move {
        if !chatty {
            return wr;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if wr.write_all(b"k").await.is_err() {
                        return wr;
                    }
                }
                _ = &mut done_rx => return wr,
            }
        }
    });
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    let end = loop {
        match rd.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Some(i) = (0..n).find(|&i| buf[i] != pattern_byte(got + i as u64)) {
                    panic!("byte {} differs", got + i as u64);
                }
                got += n as u64;
                if let Some((after, pause)) = pause {
                    if got - (n as u64) < after && got >= after {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
            Err(e) => break Err(e),
        }
    };
    let eof_at = Instant::now();
    let _ = done_tx.send(());
    let _ = talker.await;
    Received {
        bytes: got,
        end,
        eof_at,
    }
}

fn assert_every_byte_then_eof(what: &str, got: &Received, written: u64) {
    eprintln!(
        "{what}: application wrote {written} B; client received {} B, then {:?}",
        got.bytes, got.end
    );
    if let Err(e) = &got.end {
        panic!(
            "{what}: the client got {e:?} after {} of {written} B written",
            got.bytes
        );
    }
    assert_eq!(
        got.bytes, written,
        "{what}: every byte the application wrote, no more, no less"
    );
}

/// A streaming server closed by a rule while it writes: the application's write fails,
/// it drops the stream, and the client still gets every byte it was told it wrote.
async fn streamed_then_closed(what: &str, builder: &Builder, reason: CloseReason, chatty: bool) {
    let listener = support::listener(builder).await;
    let port = listener.local_addr().unwrap().port();
    let (client, server) = support::connect_pair(&listener).await;
    let handle = server.handle();
    let reader = tokio::spawn(client_reads(client, chatty, None));
    let (server, written, err) =
        tokio::time::timeout(Duration::from_secs(10), stream_until_error(server))
            .await
            .unwrap_or_else(|_| panic!("{what}: the rule never closed the connection"));
    assert_eq!(handle.close_reason(), Some(reason), "{what}: {err:?}");
    assert_eq!(
        handle.snapshot().bytes_written,
        written,
        "{what}: the stream's own count"
    );
    // The application gives up on the connection, as it would.
    drop(server);
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap_or_else(|_| panic!("{what}: the client never saw the end"))
        .unwrap();
    assert_every_byte_then_eof(what, &got, written);
    wait_for(
        Duration::from_secs(3),
        "nothing of the server side left but TIME_WAIT",
        || ss_count(port, "connected") == ss_count(port, "time-wait"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_age_delivers_every_byte_then_eof() {
    require!(Need::Tool("ss"));
    streamed_then_closed(
        "max_connection_age",
        Builder::new().max_connection_age(Duration::from_millis(500)),
        CloseReason::MaxConnectionAge,
        false,
    )
    .await;
}

/// The peer keeps sending while it downloads. Closing with `shutdown(Both)` makes Linux
/// reset the connection at the peer's next byte and drop everything still queued
/// (`TCPAbortOnData`); after the application drops the stream, an orphan does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_age_delivers_every_byte_to_a_peer_that_keeps_sending() {
    require!(Need::Tool("ss"));
    streamed_then_closed(
        "max_connection_age, chatty client",
        Builder::new().max_connection_age(Duration::from_millis(500)),
        CloseReason::MaxConnectionAge,
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_idle_timeout_during_a_download_delivers_every_byte_then_eof() {
    require!(Need::Tool("ss"));
    streamed_then_closed(
        "read_idle_timeout",
        Builder::new().read_idle_timeout(Duration::from_millis(500)),
        CloseReason::ReadIdleTimeout,
        false,
    )
    .await;
}

/// The drain's hard deadline forces a connection that is still streaming, and aborts its
/// task (spawned by `serve_with_shutdown`): the client still gets every byte the task
/// wrote before it was aborted, then EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_hard_deadline_delivers_every_byte_then_eof() {
    let listener = support::listener(&Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let (handle_tx, mut handle_rx) = tokio::sync::mpsc::unbounded_channel::<ConnectionHandle>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(listener.serve_with_shutdown(
        move |stream| {
            let _ = handle_tx.send(stream.handle());
            async move {
                let _ = stream_until_error(stream).await;
            }
        },
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_millis(100),
        Duration::from_millis(500),
    ));
    let client = TcpStream::connect(addr).await.unwrap();
    let handle = handle_rx.recv().await.unwrap();
    let reader = tokio::spawn(client_reads(client, false, None));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("drain returns")
        .unwrap()
        .unwrap();
    assert_eq!(
        (report.connections, report.forced),
        (1, 1),
        "busy at the soft deadline, forced at the hard one: {report:?}"
    );
    assert_eq!(handle.close_reason(), Some(CloseReason::Drained));
    let written = handle.snapshot().bytes_written;
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the client sees the end")
        .unwrap();
    assert_every_byte_then_eof("drain", &got, written);
}

/// A client half-closes and reads a large response that the server wrote in one go; the
/// server then holds the stream without polling it. `close_wait_timeout` counts from the
/// later of our last write and the peer's last acknowledgement, so it fires only when
/// the client pauses its reading for longer than the timeout, with megabytes still
/// queued: the FIN must follow them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_wait_timeout_with_a_queued_response_delivers_every_byte_then_eof() {
    require!(Need::Tool("ss"));
    const TIMEOUT: Duration = Duration::from_millis(300);
    const RESPONSE: usize = 6 << 20;
    let listener = support::listener(Builder::new().close_wait_timeout(TIMEOUT)).await;
    let port = listener.local_addr().unwrap().port();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let client = socket
        .connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    socket2::SockRef::from(server.get_ref())
        .set_send_buffer_size(RESPONSE)
        .unwrap();
    let handle = server.handle();
    let mut client = client;
    client.shutdown().await.unwrap();
    wait_for(Duration::from_secs(2), "server in CLOSE_WAIT", || {
        ss_count(port, "close-wait") == 1
    })
    .await;
    // After the first megabyte the client pauses for twice the timeout.
    let reader = tokio::spawn(client_reads(client, false, Some((1 << 20, TIMEOUT * 2))));
    server.write_all(&chunk_at(0, RESPONSE)).await.unwrap();
    let last_write = Instant::now();
    let info = handle.snapshot().tcp_info.expect("TCP_INFO");
    assert!(
        info.has_pending_send(),
        "the response must still be queued for this test to mean anything: {info:?}"
    );
    // Held, never polled again.
    let got = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the client sees the end")
        .unwrap();
    assert_every_byte_then_eof("close_wait_timeout", &got, RESPONSE as u64);
    assert!(got.eof_at >= last_write + TIMEOUT);
    assert_eq!(handle.close_reason(), Some(CloseReason::CloseWaitTimeout));
    wait_for(Duration::from_secs(2), "CLOSE_WAIT gone", || {
        ss_count(port, "close-wait") == 0
    })
    .await;
    drop(server);
}

/// A handler parked in a read when the library closes its connection gracefully gets EOF
/// at once, although the peer has not closed (the library only shut down the write half,
/// so the kernel itself would not wake the read). Writes after that fail and say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_read_returns_eof_when_the_library_closes() {
    require!(Need::Tool("ss"));
    const IDLE: Duration = Duration::from_millis(300);
    let listener = support::listener(Builder::new().idle_timeout(IDLE)).await;
    let port = listener.local_addr().unwrap().port();
    let (mut client, mut server) = support::connect_pair(&listener).await;
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), server.read(&mut buf))
        .await
        .expect("the parked read is woken")
        .expect("EOF, not an error");
    let took = started.elapsed();
    assert_eq!(n, 0);
    assert!(took >= IDLE, "{took:?}");
    assert!(
        took <= IDLE + IDLE / 8 + Duration::from_millis(300),
        "{took:?}"
    );
    assert_eq!(server.close_reason(), Some(CloseReason::IdleTimeout));
    // The client got our FIN and has not answered with its own: FIN_WAIT_2 here.
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    wait_for(Duration::from_secs(2), "server in FIN_WAIT_2", || {
        ss_count(port, "fin-wait-2") == 1
    })
    .await;
    let err = server
        .write_all(b"late")
        .await
        .expect_err("write after close");
    assert_eq!(support::reason_of(&err), CloseReason::IdleTimeout);
    // Reads stay at EOF.
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
}

/// Dropping a stream with bytes the client sent and nobody read makes Linux answer with
/// RST instead of FIN, and an RST drops whatever the server still had queued. After the
/// library's close the application reads EOF, so it cannot read that data itself: the
/// library must discard it before the descriptor is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_request_bytes_do_not_turn_the_close_into_a_reset() {
    let listener =
        support::listener(Builder::new().max_connection_age(Duration::from_millis(300))).await;
    let (mut client, server) = support::connect_pair(&listener).await;
    // The client sends a request the handler never reads.
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let reader = tokio::spawn(client_reads(client, false, None));
    let (server, written, _) = stream_until_error(server).await;
    drop(server);
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the client sees the end")
        .unwrap();
    assert_every_byte_then_eof("unread request", &got, written);
}

/// `linger(ZERO)` is the user asking for RST on drop: it is honoured, and dropping such a
/// stream never blocks the runtime.
#[tokio::test]
async fn linger_zero_resets_on_drop_without_blocking() {
    let listener = support::listener(Builder::new().linger(Duration::ZERO)).await;
    let (mut client, server) = support::connect_pair(&listener).await;
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_millis(50));
    let mut buf = [0u8; 8];
    let err = client.read(&mut buf).await.expect_err("reset");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
}

/// Issue 15, defect 5: a lingering close that ended at the peer's FIN left an unbounded
/// orphan. `write_idle_timeout` bounds every socket the application dropped with data
/// still queued: here a peer with a 4 KiB window stops reading, the server writes until
/// it stalls and drops the stream (the library's lingering close takes it over), then the
/// peer half-closes and still reads nothing. Nothing is acknowledged any more: the
/// server's socket must be gone (reset) soon after `write_idle_timeout`, however the
/// lingering close ends. (It sat in CLOSING with the data unsent for `TCP_USER_TIMEOUT`,
/// 120 s: the lingering close handed it to the kernel at the peer's FIN without lowering
/// the user timeout, as the plain drop path does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_close_that_ends_at_the_peers_fin_stays_bounded_by_write_idle_timeout() {
    require!(Need::Tool("ss"));
    let write_idle = Duration::from_millis(500);
    let listener = support::listener(Builder::new().write_idle_timeout(write_idle)).await;
    let port = listener.local_addr().unwrap().port();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let (client, accepted) = tokio::join!(
        socket.connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let (mut client, (mut server, _)) = (client.unwrap(), accepted.unwrap());
    let client_port = client.local_addr().unwrap().port();
    let chunk = vec![9u8; CHUNK];
    let started = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_millis(200), server.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("write failed before stalling: {e:?}"),
            Err(_) => break, // stalled: the client's window is shut
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never stalled");
    }
    drop(server); // data still queued: a lingering close
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.shutdown().await.unwrap(); // the peer's FIN; it still reads nothing
    let fin = Instant::now();
    let limit = write_idle * 4;
    while ss_conn_any(port, client_port) && fin.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !ss_conn_any(port, client_port),
        "{:?} after the peer's FIN (write_idle_timeout {write_idle:?}), the socket the \
         application dropped with data queued is still there, acknowledging nothing:\n{}",
        fin.elapsed(),
        support::ss_lines(port)
    );
    drop(client);
}

/// Whether the server's socket of one connection is in any connected state.
fn ss_conn_any(port: u16, client_port: u16) -> bool {
    support::ss_conn(port, client_port, "connected") > 0
}

/// Issue 15, suspected case "a read returns EOF whenever SHUT is set, even when data the
/// peer sent before its FIN is still unread" (confirmed). The client sends a request the
/// handler has not read yet; the library closes the connection gracefully (here on
/// request, through the controller: any rule does the same); the client sees our FIN and
/// answers with its own, as clients do. What the client sent before its FIN must reach
/// the handler, then EOF: the bytes are in the kernel, and the kernel will end them with
/// EOF. (The handler read EOF at once, and after the client's FIN arrived the same
/// stream returned the request's bytes: data after EOF.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_peer_sent_before_a_library_close_is_read_before_eof() {
    const REQUEST: &[u8] = b"PUT /upload HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world";
    let listener = support::listener(&Builder::new()).await;
    let controller = listener.controller();
    let (mut client, mut server) = support::connect_pair(&listener).await;
    let handle = server.handle();
    client.write_all(REQUEST).await.unwrap();
    wait_for(
        Duration::from_secs(2),
        "the request in the server's kernel",
        || {
            handle
                .snapshot()
                .tcp_info
                .is_some_and(|i| i.bytes_received >= REQUEST.len() as u64)
        },
    )
    .await;
    assert!(controller.close(server.id(), tcp_hygiene::CloseMode::Graceful));
    wait_for(Duration::from_secs(2), "closed by the library", || {
        handle.close_reason().is_some()
    })
    .await;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf))
        .await
        .expect("our FIN reaches the client")
        .unwrap();
    assert_eq!(n, 0, "the client reads our FIN");
    // The client answers our FIN with its own a little later; the handler reads
    // meanwhile, to the end.
    let client_fin = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.shutdown().await.unwrap();
        client
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), server.read_to_end(&mut got)).await;
    let _client = client_fin.await.unwrap();
    let before_eof = got.clone();
    // What a second read sees once the peer's FIN has been seen too (the kernel watcher
    // reports it within microseconds; `is_peer_closed` cannot tell, being true once the
    // library has closed the connection).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut after_eof = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), server.read_to_end(&mut after_eof)).await;
    assert!(
        read.is_ok() && before_eof == REQUEST && after_eof.is_empty(),
        "after the library's close the handler read {} of the {} request bytes, then \
         {:?}; once the client's FIN was seen, reading on returned {} more bytes{}",
        before_eof.len(),
        REQUEST.len(),
        read.map(|r| r.map(|_| "EOF")),
        after_eof.len(),
        if before_eof.is_empty() && !after_eof.is_empty() {
            " (data after EOF)"
        } else {
            ""
        }
    );
}

/// EOF given after the library's close stays given even when the peer sends more and
/// the application reads again: the later bytes reach the server's kernel, but no read
/// hands them out.
#[tokio::test]
async fn what_the_peer_sends_after_eof_was_given_is_never_read() {
    let listener = support::listener(&Builder::new()).await;
    let controller = listener.controller();
    let (mut client, mut server) = support::connect_pair(&listener).await;
    let handle = server.handle();
    assert!(controller.close(server.id(), tcp_hygiene::CloseMode::Graceful));
    let mut buf = [0u8; 64];
    let first = tokio::time::timeout(Duration::from_secs(2), server.read(&mut buf))
        .await
        .expect("the waiting read ends at the library's close");
    assert_eq!(first.unwrap(), 0, "EOF after the library's close");
    // The client has not closed its side: it still sends, and the server's kernel takes it.
    client.write_all(b"late bytes").await.unwrap();
    wait_for(
        Duration::from_secs(2),
        "the late bytes in the server's kernel",
        || {
            handle
                .snapshot()
                .tcp_info
                .is_some_and(|i| i.bytes_received >= 10)
        },
    )
    .await;
    // Tokio's own readiness must show them too, or the read below would not reach the
    // kernel at all.
    tokio::time::timeout(Duration::from_secs(2), server.get_ref().readable())
        .await
        .expect("the late bytes make the socket readable")
        .unwrap();
    for attempt in 0..3 {
        let mut buf = [0u8; 64];
        let again = tokio::time::timeout(Duration::from_secs(2), server.read(&mut buf))
            .await
            .expect("a read after EOF does not wait");
        assert!(
            matches!(again, Ok(0)),
            "read {attempt} after EOF returned {again:?} (data after EOF)"
        );
        assert!(
            buf.iter().all(|b| *b == 0),
            "read {attempt} after EOF returned Ok(0) but left {:?} in the buffer",
            String::from_utf8_lossy(&buf)
        );
    }
}
