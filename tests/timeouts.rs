//! The inactivity and age timeouts, enforced by the supervisor while the handler never
//! polls its stream. Every case is checked three ways: the kernel's view (`ss`, and what
//! the client's socket sees), the library's `close_reason()`, and the listener's stats.
//! Timing: never before the timeout; at most `timeout × 1.125` after the last byte for
//! the idle clocks (exactly the timeout for the absolute ones), plus scheduling slack.

mod support;

use std::io;
use std::time::{Duration, Instant};

use support::{require, Need};
use support::{ss_conn, wait_for};
use tcp_hygiene::{Builder, CloseReason, ConnectionHandle, ConnectionState, TcpListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// Scheduling slack on top of the library's own bound (noisy shared 2-core machine).
const SLACK: Duration = Duration::from_millis(300);

/// The idle clocks' own bound: closed by `timeout × 1.125` after the last byte.
fn idle_bound(timeout: Duration) -> Duration {
    timeout + timeout / 8 + SLACK
}

/// One accepted connection, held by a handler that never polls it.
struct Conn {
    client: TcpStream,
    client_port: u16,
    server_port: u16,
    server: tcp_hygiene::TcpStream,
    handle: ConnectionHandle,
    /// Before `accept` was called: no deadline counted from accept can be earlier.
    accept_called: Instant,
    /// After `accept` returned.
    accepted: Instant,
    /// Resolves with the instant the library marked the connection closed.
    closed: JoinHandle<Instant>,
}

async fn connect(listener: &TcpListener) -> Conn {
    connect_with(listener, TcpStream::connect(listener.local_addr().unwrap())).await
}

async fn connect_with(
    listener: &TcpListener,
    connect: impl std::future::Future<Output = io::Result<TcpStream>>,
) -> Conn {
    let accept_called = Instant::now();
    let (client, accepted) = tokio::join!(connect, listener.accept());
    let (client, (server, _)) = (client.unwrap(), accepted.unwrap());
    let accepted = Instant::now();
    assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
    let handle = server.handle();
    let closed = {
        let h = handle.clone();
        tokio::spawn(async move {
            h.peer_closed().await;
            Instant::now()
        })
    };
    Conn {
        client_port: client.local_addr().unwrap().port(),
        server_port: listener.local_addr().unwrap().port(),
        client,
        server,
        handle,
        accept_called,
        accepted,
        closed,
    }
}

impl Conn {
    /// Waits for the library to close the connection; returns when it did.
    async fn closed_within(&mut self, limit: Duration) -> Instant {
        tokio::time::timeout(limit, &mut self.closed)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "not closed within {limit:?}; state {:?}, reason {:?}",
                    self.handle.state(),
                    self.handle.close_reason()
                )
            })
            .unwrap()
    }

    fn established(&self) -> bool {
        ss_conn(self.server_port, self.client_port, "established") == 1
    }

    /// The kernel's view after a close by the library: our socket has left ESTABLISHED,
    /// and the client's socket reads EOF (graceful) or a reset (abortive), after any data
    /// it had not read yet. Returns which one.
    async fn kernel_sees_close(&mut self) -> &'static str {
        wait_for(
            Duration::from_secs(2),
            "server socket leaves ESTABLISHED",
            || !self.established(),
        )
        .await;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(2), self.client.read(&mut buf))
                .await
                .expect("the client sees the close");
            match read {
                Ok(0) => return "eof",
                Ok(_) => continue, // data the server had sent before
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return "reset",
                Err(e) => panic!("client read: unexpected error {e:?}"),
            }
        }
    }

    fn assert_not_closed(&self, what: &str) {
        assert_eq!(self.handle.close_reason(), None, "{what}");
        assert!(!self.closed.is_finished(), "{what}: closed");
        assert!(self.established(), "{what}: kernel no longer ESTABLISHED");
    }
}

/// Checks `closed_at` against `[earliest, latest]`; prints the measurement.
fn assert_timing(what: &str, closed_at: Instant, from: Instant, min: Duration, max: Duration) {
    let elapsed = closed_at.saturating_duration_since(from);
    eprintln!("{what}: closed {elapsed:?} after reference (bounds {min:?}..={max:?})");
    assert!(
        closed_at >= from + min,
        "{what}: closed early, {elapsed:?} < {min:?}"
    );
    assert!(elapsed <= max, "{what}: closed late, {elapsed:?} > {max:?}");
}

/// The client sends one byte every `every` for `busy`; returns the instants just before
/// and just after the last byte was written.
async fn client_sends_for(
    client: &mut TcpStream,
    busy: Duration,
    every: Duration,
) -> (Instant, Instant) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let before = Instant::now();
        client.write_all(b"x").await.unwrap();
        let after = Instant::now();
        if start.elapsed() >= busy {
            return (before, after);
        }
    }
}

/// Runs the two inactivity patterns against a timeout that counts received bytes
/// (`idle_timeout`, `read_idle_timeout`): a client that keeps sending for longer than the
/// timeout (never closed while it does), and one that sends a single byte soon after
/// accept. The handler never reads; the kernel's byte counts are what count. Both must
/// be closed between `timeout` and `timeout × 1.125` (+ slack) after their last byte.
async fn quiet_after_activity(builder: &Builder, timeout: Duration, reason: CloseReason) {
    let listener = support::listener(builder).await;
    let mut busy = connect(&listener).await;
    let mut single = connect(&listener).await;

    let busy_client = async {
        let last = client_sends_for(&mut busy.client, timeout * 2, Duration::from_millis(50)).await;
        // Still open after twice the timeout of steady traffic.
        assert_eq!(busy.handle.close_reason(), None, "closed while busy");
        last
    };
    let single_client = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = Instant::now();
        single.client.write_all(b"x").await.unwrap();
        (before, Instant::now())
    };
    let ((busy_before, busy_after), (single_before, single_after)) =
        tokio::join!(busy_client, single_client);
    assert!(busy.established());

    for (name, conn, before, after) in [
        ("busy then quiet", &mut busy, busy_before, busy_after),
        (
            "one byte then quiet",
            &mut single,
            single_before,
            single_after,
        ),
    ] {
        let what = format!("{reason} ({name})");
        let at = conn.closed_within(timeout * 3 + SLACK * 2).await;
        assert_timing(&what, at, before, timeout, idle_bound(timeout));
        assert!(at >= after, "{what}: closed before its last byte was sent");
        assert_eq!(conn.handle.close_reason(), Some(reason), "{what}");
        assert_eq!(conn.handle.state(), ConnectionState::Closed);
        assert_eq!(
            conn.handle.snapshot().bytes_read,
            0,
            "the handler never read"
        );
        let end = conn.kernel_sees_close().await;
        assert_eq!(end, "eof", "{what}: graceful close");
    }
    let stats = listener.stats();
    assert_eq!(stats.closed(reason), 2);
    assert_eq!(stats.closed_total(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_quiet_connections_without_polling() {
    require!(Need::Tool("ss"));
    let t = Duration::from_millis(800);
    quiet_after_activity(Builder::new().idle_timeout(t), t, CloseReason::IdleTimeout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_idle_timeout_closes_quiet_connections_without_polling() {
    require!(Need::Tool("ss"));
    let t = Duration::from_millis(800);
    quiet_after_activity(
        Builder::new().read_idle_timeout(t),
        t,
        CloseReason::ReadIdleTimeout,
    )
    .await;
}

/// Writes from the server count for `idle_timeout` (bytes move on the wire), but not for
/// `read_idle_timeout` (nothing was received). Same traffic on two listeners: the server
/// streams to a client that reads and never sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_writes_count_for_idle_but_not_for_read_idle() {
    require!(Need::Tool("ss"));
    let t = Duration::from_millis(600);
    let idle = support::listener(Builder::new().idle_timeout(t)).await;
    let read_idle = support::listener(Builder::new().read_idle_timeout(t)).await;
    let mut a = connect(&idle).await;
    let mut b = connect(&read_idle).await;

    async fn stream_to(
        server: &mut tcp_hygiene::TcpStream,
        for_: Duration,
    ) -> Result<Instant, io::Error> {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while start.elapsed() < for_ {
            tick.tick().await;
            server.write_all(&[7u8; 512]).await?;
        }
        Ok(Instant::now())
    }
    async fn drain(client: &mut TcpStream) {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = client.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    }
    // The clients read everything and never send.
    let stream_for = t * 2;
    let ((ra, rb), _) = tokio::join!(
        async {
            tokio::join!(
                stream_to(&mut a.server, stream_for),
                stream_to(&mut b.server, stream_for)
            )
        },
        async {
            tokio::select! {
                _ = async { tokio::join!(drain(&mut a.client), drain(&mut b.client)) } => {}
                _ = tokio::time::sleep(stream_for + Duration::from_millis(200)) => {}
            }
        }
    );

    // read_idle: nothing received since accept, writes notwithstanding.
    let err = rb.expect_err("read_idle_timeout cut the writer off");
    assert_eq!(support::reason_of(&err), CloseReason::ReadIdleTimeout);
    let at = b.closed_within(Duration::from_secs(1)).await;
    assert_timing(
        "read_idle_timeout while writing",
        at,
        b.accept_called,
        t,
        t + t / 8 + SLACK,
    );
    assert_eq!(read_idle.stats().closed(CloseReason::ReadIdleTimeout), 1);
    assert_eq!(b.kernel_sees_close().await, "eof");

    // idle: the writes kept it open for twice the timeout; quiet from the last write on.
    let last_write = ra.expect("idle_timeout must not cut off a connection with traffic");
    a.assert_not_closed("idle_timeout with traffic");
    let at = a.closed_within(t * 3).await;
    assert_timing(
        "idle_timeout after writes stop",
        at,
        last_write,
        t,
        idle_bound(t),
    );
    assert_eq!(a.handle.close_reason(), Some(CloseReason::IdleTimeout));
    assert_eq!(idle.stats().closed(CloseReason::IdleTimeout), 1);
    assert_eq!(idle.stats().closed_total(), 1);
    assert_eq!(a.kernel_sees_close().await, "eof");
}

/// `write_idle_timeout`: the client stops reading (tiny receive buffer), the server's
/// writer is stuck with bytes queued. Once nothing has been acknowledged for the timeout,
/// the connection is reset: the parked `write_all` fails with the reason, the server's
/// socket is gone from the kernel's tables, the client sees the reset. A control client
/// that reads everything is left alone even though the server then goes quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_idle_timeout_resets_a_stalled_writer() {
    require!(Need::Tool("ss"));
    let t = Duration::from_millis(600);
    let listener = support::listener(Builder::new().write_idle_timeout(t)).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = connect_with(&listener, socket.connect(listener.local_addr().unwrap())).await;
    let mut reader = connect(&listener).await;
    for conn in [&stalled, &reader] {
        socket2::SockRef::from(conn.server.get_ref())
            .set_send_buffer_size(4096)
            .unwrap();
    }

    // Control: the server writes a little to a client that reads it all, then goes quiet.
    reader.server.write_all(&[1u8; 20_000]).await.unwrap();
    let mut got = vec![0u8; 20_000];
    reader.client.read_exact(&mut got).await.unwrap();

    // The stuck writer: far more than the buffers hold. It parks in write_all.
    let write_start = Instant::now();
    let mut server = stalled.server;
    let writer = tokio::spawn(async move {
        let result = server.write_all(&vec![2u8; 8 << 20]).await;
        (result, server)
    });
    // Track when the kernel last saw an acknowledgement.
    let handle = stalled.handle.clone();
    let mut acked = 0;
    let mut last_ack = Instant::now();
    let closed_at = loop {
        // (Only while open: a reset socket reports zeroed counters.)
        let info = handle
            .snapshot()
            .tcp_info
            .filter(|_| handle.close_reason().is_none());
        if let Some(info) = info {
            if info.bytes_acked != acked {
                acked = info.bytes_acked;
                last_ack = Instant::now();
            }
        }
        if stalled.closed.is_finished() {
            break (&mut stalled.closed).await.unwrap();
        }
        assert!(write_start.elapsed() < t * 4, "not closed in time");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eprintln!(
        "stalled writer: {acked} bytes acknowledged, the last {:?} after the first write",
        last_ack - write_start
    );
    assert_timing(
        "write_idle_timeout since the first write",
        closed_at,
        write_start,
        t,
        t * 3,
    );
    assert_timing(
        "write_idle_timeout since the last ack",
        closed_at,
        last_ack,
        t - Duration::from_millis(10),
        idle_bound(t),
    );

    let (result, server) = tokio::time::timeout(Duration::from_secs(2), writer)
        .await
        .expect("the parked writer is woken")
        .unwrap();
    let err = result.expect_err("write fails after the reset");
    assert_eq!(support::reason_of(&err), CloseReason::WriteIdleTimeout);
    assert_eq!(
        stalled.handle.close_reason(),
        Some(CloseReason::WriteIdleTimeout)
    );
    stalled.server = server;

    // Abortive: no FIN_WAIT, no TIME_WAIT; the server's socket is gone from the kernel.
    assert_eq!(stalled.kernel_sees_close().await, "reset");
    assert_eq!(
        ss_conn(stalled.server_port, stalled.client_port, "connected"),
        0,
        "{}",
        support::ss_lines(stalled.server_port)
    );

    // The control, quiet but with nothing queued, outlives the timeout.
    tokio::time::sleep(t / 2).await;
    reader.assert_not_closed("write_idle_timeout with nothing queued");
    let stats = listener.stats();
    assert_eq!(stats.closed(CloseReason::WriteIdleTimeout), 1);
    assert_eq!(stats.closed_total(), 1);
}

/// `first_byte_timeout`: a client that connects and stays silent is closed that long
/// after accept; a client that sends a byte in time is not (the handler reads neither:
/// the kernel's count is what counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_timeout_closes_silent_clients_only() {
    require!(Need::Tool("ss"));
    let t = Duration::from_millis(500);
    let listener = support::listener(Builder::new().first_byte_timeout(t)).await;
    let mut silent = connect(&listener).await;
    let mut talker = connect(&listener).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    talker.client.write_all(b"G").await.unwrap();

    let at = silent.closed_within(t * 2 + SLACK).await;
    assert_timing("first_byte_timeout", at, silent.accept_called, t, t + SLACK);
    assert!(at >= silent.accepted || at >= silent.accept_called + t);
    assert_eq!(
        silent.handle.close_reason(),
        Some(CloseReason::FirstByteTimeout)
    );
    assert_eq!(silent.kernel_sees_close().await, "eof");

    tokio::time::sleep(t).await;
    talker.assert_not_closed("first_byte_timeout after a byte in time");
    assert_eq!(
        talker.handle.snapshot().bytes_read,
        0,
        "the handler never read"
    );
    let stats = listener.stats();
    assert_eq!(stats.closed(CloseReason::FirstByteTimeout), 1);
    assert_eq!(stats.closed_total(), 1);
    // The talker's handler can still read its byte.
    let mut b = [0u8; 1];
    talker.server.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"G");
}

/// `max_connection_age` is absolute: a busy connection and a quiet one are both closed
/// at that age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_age_closes_busy_and_quiet_connections() {
    require!(Need::Tool("ss"));
    let t = Duration::from_millis(700);
    let listener = support::listener(Builder::new().max_connection_age(t)).await;
    let mut quiet = connect(&listener).await;
    let mut busy = connect(&listener).await;

    // The busy client sends every 50 ms until the library closes the connection.
    let handle = busy.handle.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while handle.close_reason().is_none() && busy.accepted.elapsed() < t * 3 {
        tick.tick().await;
        if busy.client.write_all(b"x").await.is_err() {
            break;
        }
    }

    for (name, conn) in [("quiet", &mut quiet), ("busy", &mut busy)] {
        let what = format!("max_connection_age ({name})");
        let at = conn.closed_within(t * 2 + SLACK).await;
        assert_timing(&what, at, conn.accept_called, t, t + SLACK);
        assert_eq!(
            conn.handle.close_reason(),
            Some(CloseReason::MaxConnectionAge)
        );
        // The busy client may have had bytes in flight when we shut down: EOF or reset.
        let end = conn.kernel_sees_close().await;
        if name == "quiet" {
            assert_eq!(end, "eof");
        }
    }
    let stats = listener.stats();
    assert_eq!(stats.closed(CloseReason::MaxConnectionAge), 2);
    assert_eq!(stats.closed_total(), 2);
}

// ----------------------------------------------------------------------------------------
// Regressions of issue 15.

/// The process's CPU time (user + system) so far.
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// After the library's own graceful close, the rules that ended with it leave no deadline
/// behind: a connection closed for `read_idle_timeout` while its peer still owed data
/// (`min_receive_rate` on) and whose handler keeps the stream costs no CPU afterwards.
/// (It used to: a stale read-idle deadline and a receive window restarted at every look
/// kept the supervisor busy, a whole core, in a loop that never returns to the runtime.)
///
/// On a multi-thread runtime, and the second after the close is measured with a blocking
/// sleep of the test's own thread: a supervisor spinning on one worker also keeps the
/// runtime's timers and I/O from being driven, so a tokio sleep or read could hang for
/// ever instead of failing. Dropping the stream ends the spin (the supervisor stops
/// looking at a released connection), so the test drops it before it asserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_library_closed_costs_no_cpu_afterwards() {
    const LIMIT: Duration = Duration::from_secs(5);
    let listener = support::listener(
        Builder::new()
            .read_idle_timeout(Duration::from_millis(300))
            .min_receive_rate(tcp_hygiene::MinDataRate::new(1, Duration::from_secs(60))),
    )
    .await;
    let (mut client, mut server) = support::connect_pair(&listener).await;
    client.write_all(b"part of a request").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(LIMIT, server.read(&mut buf))
        .await
        .expect("the request's first part arrives")
        .unwrap();
    assert!(n > 0);
    // The handler waits for the rest, which never comes: closed for read-idle.
    let n = tokio::time::timeout(LIMIT, server.read(&mut buf))
        .await
        .expect("the library closes the connection for read-idle (EOF)")
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(server.close_reason(), Some(CloseReason::ReadIdleTimeout));
    let before = cpu_time();
    let wall = Instant::now();
    // Blocking on purpose (see above): this thread is not one of the runtime's workers.
    std::thread::sleep(Duration::from_secs(1));
    let (spent, wall) = (cpu_time() - before, wall.elapsed());
    drop(server);
    eprintln!("CPU in the {wall:?} after the close: {spent:?}");
    // Our FIN reached the client.
    let n = tokio::time::timeout(LIMIT, client.read(&mut buf))
        .await
        .expect("our FIN reaches the client")
        .unwrap();
    assert_eq!(n, 0);
    assert!(
        spent < Duration::from_millis(200),
        "the process spent {spent:?} of CPU in the {wall:?} after the library closed an idle \
         connection whose handler keeps the stream (bound 200 ms): the supervisor spins"
    );
}

/// Issue 15, defect 6: `write_idle_timeout` stopped applying once both sides had sent
/// FIN while the application still held the stream. The client sends its request,
/// half-closes and never reads (4 KiB window); the server reads to EOF, writes until it
/// stalls, shuts down its write half and keeps the stream. Data is queued, nothing is
/// acknowledged: the connection must be reset `write_idle_timeout` after the last
/// acknowledgement, as it is without the FINs. (It sat in LAST-ACK with data queued, no
/// close reason, until `TCP_USER_TIMEOUT`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_idle_timeout_resets_a_stalled_writer_after_both_sides_sent_fin() {
    require!(Need::Tool("ss"));
    let t = Duration::from_millis(500);
    let listener = support::listener(Builder::new().write_idle_timeout(t)).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = connect_with(&listener, socket.connect(listener.local_addr().unwrap())).await;
    conn.client.write_all(b"GET /big\r\n").await.unwrap();
    conn.client.shutdown().await.unwrap();
    let mut request = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(2),
        conn.server.read_to_end(&mut request),
    )
    .await
    .expect("the server reads the request and the client's FIN")
    .unwrap();
    assert_eq!(request, b"GET /big\r\n");
    // The answer: far more than the client takes. Written until a write stalls.
    let chunk = vec![7u8; 64 * 1024];
    let started = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_millis(200), conn.server.write_all(&chunk)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("write failed before stalling: {e:?}"),
            Err(_) => break, // stalled: the client's window is shut
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never stalled");
    }
    conn.server.shutdown().await.unwrap();
    let fin = Instant::now();
    let limit = t * 3 + SLACK;
    while conn.handle.close_reason().is_none() && fin.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let kernel = support::ss_lines(conn.server_port);
    assert_eq!(
        conn.handle.close_reason(),
        Some(CloseReason::WriteIdleTimeout),
        "{:?} after our FIN (write_idle_timeout {t:?}), with both FINs sent and data queued, \
         the connection has no close reason; the kernel's view:\n{kernel}",
        fin.elapsed()
    );
    wait_for(
        Duration::from_secs(2),
        "the server's socket is reset",
        || ss_conn(conn.server_port, conn.client_port, "connected") == 0,
    )
    .await;
    drop(conn.server);
}

/// Issue 15, suspected case "a bare FIN counts as the first byte for
/// `first_byte_timeout`": the kernel counts a FIN as one byte received (it takes a
/// sequence number). A client that connects and half-closes without a single byte of
/// data is exactly the silent client the rule is for: it must be closed at
/// `first_byte_timeout`, not left in CLOSE_WAIT until `close_wait_timeout` (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_without_a_byte_is_closed_at_first_byte_timeout() {
    require!(Need::Tool("ss"));
    let t = Duration::from_millis(300);
    let listener = support::listener(Builder::new().first_byte_timeout(t)).await;
    let mut silent = connect(&listener).await;
    silent.client.shutdown().await.unwrap();
    // (Its `peer_closed` resolves at the FIN: the close reason tells the library's close.)
    let limit = t * 2 + SLACK;
    while silent.handle.close_reason().is_none() && silent.accepted.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let kernel = support::ss_lines(silent.server_port);
    assert!(
        silent.handle.close_reason().is_some(),
        "{limit:?} after accept (first_byte_timeout {t:?}) a client that sent nothing but \
         its FIN is still open: reason {:?}, state {:?}, bytes read {}; the kernel's view:\n{kernel}",
        silent.handle.close_reason(),
        silent.handle.state(),
        silent.handle.snapshot().bytes_read
    );
    assert_eq!(
        silent.handle.close_reason(),
        Some(CloseReason::FirstByteTimeout)
    );
    assert_eq!(listener.stats().closed(CloseReason::FirstByteTimeout), 1);
}
