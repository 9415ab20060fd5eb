//! The framework serves (`integration::{axum, hyper, tonic}::serve`), end to end: the
//! example servers run as real processes, driven by raw sockets, `curl` and an HTTP/2
//! client on 127.0.0.1, with the kernel's view from `ss` and `/proc`.
#![cfg(all(feature = "axum", feature = "hyper", feature = "tonic"))]

mod support;

use std::future::IntoFuture;
use std::io;
use std::time::{Duration, Instant};

use support::example::{curl, Server};
use support::http::{closed_within, get_ok, read_response};
use support::{require, Need};
use support::{ss_count, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A `POST /hang` whose body (9 bytes announced, 3 sent) never completes: the handler
/// does not read it, so hyper does not read the socket either and never sees the FIN.
const UNFINISHED_POST: &[u8] = b"POST /hang HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nabc";

/// 20 stuck handlers whose clients left: under the library's serve, their tasks are
/// ended with the `CLOSE_WAIT` close, so the server process's descriptors are back to the
/// baseline within the timeout + 200 ms. Control: with `--plain` (the framework's own
/// server over tokio's listener) they stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_handlers_free_their_descriptors_under_each_serve() {
    require!(Need::Tool("curl"), Need::Tool("ss"));
    const STUCK: usize = 20;
    const CLOSE_WAIT: Duration = Duration::from_millis(300);
    for example in ["axum_server", "hyper_server"] {
        let hygiene = Server::start(example, &["--close-wait-timeout-ms", "300"]);
        let plain = Server::start(example, &["--plain"]);
        assert_eq!(curl(&[&format!("{}/", hygiene.url())]), "ok");
        assert_eq!(curl(&[&format!("{}/", plain.url())]), "ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (base, plain_base) = (hygiene.open_fds(), plain.open_fds());
        let mut clients = Vec::new();
        for server in [&hygiene, &plain] {
            for _ in 0..STUCK {
                let mut c = TcpStream::connect(server.addr).await.unwrap();
                c.write_all(UNFINISHED_POST).await.unwrap();
                clients.push(c);
            }
        }
        wait_for(
            Duration::from_secs(3),
            "every stuck handler holds a descriptor",
            || hygiene.open_fds() == base + STUCK && plain.open_fds() == plain_base + STUCK,
        )
        .await;
        drop(clients); // the clients leave
        let left = Instant::now();
        wait_for(
            CLOSE_WAIT + Duration::from_secs(3),
            "descriptors back to the baseline",
            || hygiene.open_fds() == base,
        )
        .await;
        let took = left.elapsed();
        eprintln!("{example}: {STUCK} stuck handlers' descriptors freed {took:?} after their clients left");
        assert!(
            took <= CLOSE_WAIT + Duration::from_millis(200),
            "{example}: freed {took:?} after the clients left"
        );
        assert_eq!(ss_count(hygiene.port(), "close-wait"), 0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            plain.open_fds(),
            plain_base + STUCK,
            "{example} --plain: the control keeps them"
        );
        assert_eq!(ss_count(plain.port(), "close-wait"), STUCK);
    }
}

/// gRPC over the library's tonic serve: HTTP/2 reads its connection all along, so a
/// client that leaves mid-stream is noticed by hyper itself; the library's part is that
/// the task is its own to end, and that the descriptor is back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_that_leave_free_their_descriptors() {
    let server = Server::start("tonic_server", &["--close-wait-timeout-ms", "300"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let base = server.open_fds();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let channel = tonic::transport::Endpoint::from_shared(server.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        // A Watch stream that never ends on its own.
        let watch = health
            .watch(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        clients.push((channel, watch));
    }
    wait_for(Duration::from_secs(3), "20 more descriptors", || {
        server.open_fds() == base + 20
    })
    .await;
    drop(clients);
    let took = wait_for(
        Duration::from_secs(3),
        "descriptors back to the baseline",
        || server.open_fds() == base,
    )
    .await;
    eprintln!("tonic_server: 20 gRPC clients' descriptors freed {took:?} after they left");
}

/// Slowloris: 50 clients trickle their request heads a byte every 200 ms, forever.
/// hyper's header read timeout (the serve sets hyper's timer, so it works) closes every
/// one within its bound, and `curl` keeps getting answers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_by_the_header_read_timeout_while_curl_is_served() {
    require!(Need::Tool("curl"), Need::Tool("ss"));
    const TRICKLERS: usize = 50;
    const HEADER_READ: Duration = Duration::from_millis(1000);
    let server = Server::start("axum_server", &["--header-read-timeout-ms", "1000"]);
    let addr = server.addr;
    let started = Instant::now();
    let mut tricklers = tokio::task::JoinSet::new();
    for i in 0..TRICKLERS {
        tricklers.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let connected = Instant::now();
            let head = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Trickle-{i}: ");
            let mut bytes = head.into_bytes().into_iter().chain(std::iter::repeat(b'a'));
            loop {
                let byte = [bytes.next().unwrap()];
                if stream.write_all(&byte).await.is_err() {
                    return connected.elapsed();
                }
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await
                {
                    Err(_) => {}                         // still open; next byte
                    Ok(_) => return connected.elapsed(), // EOF, an error, or a 408: closed
                }
                assert!(
                    connected.elapsed() < Duration::from_secs(10),
                    "slowloris lives"
                );
            }
        });
    }
    // curl is answered all along.
    let mut answered = 0;
    while started.elapsed() < HEADER_READ + Duration::from_millis(500) {
        assert_eq!(curl(&[&format!("{}/", server.url())]), "ok");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lived = Vec::new();
    while let Some(took) = tricklers.join_next().await {
        lived.push(took.unwrap());
    }
    lived.sort();
    eprintln!(
        "slowloris: {TRICKLERS} tricklers closed after {:?}..{:?}; curl answered {answered} times meanwhile",
        lived[0],
        lived[TRICKLERS - 1]
    );
    assert!(
        lived[0] >= HEADER_READ - Duration::from_millis(50),
        "{:?}",
        lived[0]
    );
    assert!(
        lived[TRICKLERS - 1] <= HEADER_READ + Duration::from_secs(1),
        "{:?}",
        lived[TRICKLERS - 1]
    );
    wait_for(Duration::from_secs(2), "no trickler's socket left", || {
        ss_count(server.port(), "connected") <= ss_count(server.port(), "time-wait")
    })
    .await;
}

/// A slow reader (a tiny window, a few hundred bytes a second) downloading a large
/// response: `min_send_rate` resets it within a couple of windows (the kernel's view:
/// the server's socket is gone; the client's own write is refused), while `curl` is
/// served. Control: without the rule it is still connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_cut_by_min_send_rate() {
    require!(Need::Tool("curl"), Need::Tool("ss"));
    let server = Server::start(
        "axum_server",
        &["--min-send-rate", "50000", "--min-rate-grace-ms", "500"],
    );
    let control = Server::start("axum_server", &[]);
    let mut readers = Vec::new();
    for addr in [server.addr, control.addr] {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        stream
            .write_all(b"GET /big?bytes=20000000 HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let port = stream.local_addr().unwrap().port();
        readers.push((
            port,
            tokio::spawn(async move {
                let mut buf = [0u8; 100];
                for _ in 0..30 {
                    if stream.read(&mut buf).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                stream
            }),
        ));
    }
    let started = Instant::now();
    let (port, reader) = readers.remove(0);
    let took = wait_for(Duration::from_secs(4), "the slow reader reset", || {
        support::ss_conn(server.port(), port, "connected") == 0
    })
    .await;
    assert_eq!(curl(&[&format!("{}/", server.url())]), "ok");
    eprintln!("slow reader: reset {took:?} after its request");
    assert!(took <= Duration::from_secs(2), "{took:?}");
    let mut stream = reader.await.unwrap();
    let err = stream.write_all(b"more?").await.expect_err("reset");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "{err:?}"
    );
    let (port, reader) = readers.remove(0);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        support::ss_conn(control.port(), port, "established"),
        1,
        "control"
    );
    reader.abort();
}

/// The keep-alive timeout closes an idle connection even when its handler spent the
/// task's coop budget (inside hyper's poll, which the connection's task polls before its
/// timer): a timer polled with no budget left registers nothing, and before the fix 8 of
/// 20 such connections were still open 2 s after their response under a 300 ms timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_closes_an_idle_connection_whose_handler_spent_the_coop_budget() {
    const KEEP_ALIVE: Duration = Duration::from_millis(300);
    let listener = support::listener(&tcp_hygiene::Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            for _ in 0..300 {
                tokio::task::consume_budget().await;
            }
            "ok"
        }),
    );
    tokio::spawn(
        tcp_hygiene::integration::axum::serve(listener, app)
            .keep_alive_timeout(KEEP_ALIVE)
            .into_future(),
    );
    let clients: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = TcpStream::connect(addr).await.unwrap();
                assert_eq!(get_ok(&mut client, "/").await, "ok");
                let answered = Instant::now();
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => Some(answered.elapsed()),
                    Ok(Ok(n)) => panic!("{n} bytes after the response"),
                    Err(_) => None,
                }
            })
        })
        .collect();
    let mut open = 0;
    for client in clients {
        match client.await.unwrap() {
            Some(after) => assert!(
                after >= KEEP_ALIVE.mul_f64(0.9),
                "closed {after:?} after the response, before the keep-alive timeout"
            ),
            None => open += 1,
        }
    }
    assert_eq!(
        open, 0,
        "{open} of 20 idle connections were still open 2 s after their response (keep-alive {KEEP_ALIVE:?})"
    );
}

/// The keep-alive timeout runs only while no request is in flight: a request that takes
/// 1 s is answered under a 300 ms keep-alive timeout, and the idle connection after it
/// is closed within the timeout × 1.125.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_timeout_never_cuts_a_slow_request() {
    const KEEP_ALIVE: Duration = Duration::from_millis(300);
    let server = Server::start("axum_server", &["--keep-alive-timeout-ms", "300"]);
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(get_ok(&mut stream, "/slow?ms=1000").await, "done");
    let answered = Instant::now();
    let closed = closed_within(&mut stream, Duration::from_secs(3)).await;
    let idle = closed - answered;
    eprintln!("keep-alive: idle connection closed {idle:?} after the response");
    assert!(idle >= KEEP_ALIVE - Duration::from_millis(20), "{idle:?}");
    assert!(
        idle <= KEEP_ALIVE + KEEP_ALIVE / 8 + Duration::from_millis(200),
        "{idle:?}"
    );
}

/// SIGTERM under axum: an idle keep-alive connection is closed at once, an in-flight
/// `/slow?ms=1500` is answered in full, the process exits before the hard deadline, and
/// the report printed as JSON adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_axum_and_prints_a_report_that_adds_up() {
    let hard = Duration::from_secs(4);
    let server = Server::start(
        "axum_server",
        &["--drain-soft-ms", "1000", "--drain-hard-ms", "4000"],
    );
    // Idle keep-alive: one request answered, then quiet.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(get_ok(&mut idle, "/").await, "ok");
    // In flight.
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(b"GET /slow?ms=1500 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    let terminate =
        tokio::task::spawn_blocking(move || server.terminate(hard + Duration::from_secs(2)));
    let idle_closed = closed_within(&mut idle, Duration::from_secs(2)).await - signalled;
    let (status, body) = read_response(&mut busy).await;
    let (exit, lines) = terminate.await.unwrap();
    let exited = signalled.elapsed();
    eprintln!("drain: idle closed {idle_closed:?} after SIGTERM; exit {exit:?} after {exited:?}; {lines:?}");
    assert!(idle_closed < Duration::from_millis(500), "{idle_closed:?}");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "done", "the request in flight was answered");
    assert!(exit.success(), "{exit:?}");
    assert!(exited < hard, "exited after {exited:?}");
    let report = lines
        .iter()
        .find(|l| l.starts_with("{\"drain\""))
        .unwrap_or_else(|| panic!("no report in {lines:?}"));
    let json: serde_json::Value = serde_json::from_str(report).unwrap();
    let n = |k: &str| json["drain"][k].as_u64().unwrap();
    assert_eq!(n("connections"), 2, "{report}");
    assert_eq!(
        n("finished") + n("idle_closed") + n("forced"),
        n("connections"),
        "{report}"
    );
    assert_eq!(n("forced"), 0, "{report}");
}

/// An HTTP/2 (prior knowledge) client connection to `addr`: its request sender, and the
/// task driving the connection (it ends when the connection does).
async fn h2_connect(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<hyper::body::Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(conn))
}

/// An HTTP/2 (h2c, prior knowledge) client of an in-process `axum::serve`: sends
/// `/slow`, and returns the response body and how the connection ended (`Ok`: GOAWAY
/// and a clean close; an error: a reset, or a protocol failure).
async fn h2_slow_request(
    addr: std::net::SocketAddr,
) -> (
    String,
    Result<(), hyper::Error>,
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<hyper::body::Bytes>>,
) {
    use http_body_util::BodyExt;
    let (mut sender, conn) = h2_connect(addr).await;
    let request = hyper::Request::get(format!("http://{addr}/slow"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .expect("the request in flight is answered");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the whole body")
        .to_bytes();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the connection ends")
        .unwrap();
    (String::from_utf8(body.to_vec()).unwrap(), ended, sender)
}

fn slow_app() -> axum::Router {
    axum::Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            "done"
        }),
    )
}

/// HTTP/2 at the connection's age gets GOAWAY, not a reset: the stream in flight is
/// answered in full, the connection then closes cleanly, and the library's own close
/// (at the age plus the grace period) never had to act.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_gets_goaway_not_rst_at_max_connection_age() {
    let listener = support::listener(
        tcp_hygiene::Builder::new()
            .max_connection_age(Duration::from_millis(300))
            .max_connection_age_jitter(0.0)
            .max_connection_age_grace(Duration::from_secs(5)),
    )
    .await;
    let addr = listener.local_addr().unwrap();
    let controller = listener.controller();
    tokio::spawn(tcp_hygiene::integration::axum::serve(listener, slow_app()).into_future());
    let started = Instant::now();
    let (body, ended, mut sender) = h2_slow_request(addr).await;
    eprintln!(
        "h2 at max age: {body:?}, connection ended {ended:?} after {:?}",
        started.elapsed()
    );
    assert_eq!(body, "done");
    ended.expect("GOAWAY and a clean close, not a reset");
    assert!(started.elapsed() < Duration::from_secs(3));
    // After GOAWAY no new stream is accepted on that connection.
    let request = hyper::Request::get(format!("http://{addr}/slow"))
        .body(http_body_util::Empty::new())
        .unwrap();
    assert!(sender.send_request(request).await.is_err());
    // Ended by HTTP, not by the library's TCP-level close.
    assert_eq!(controller.stats().closed_total(), 0);
}

/// HTTP/2 under a graceful shutdown: GOAWAY, the stream in flight finishes, and the
/// drain's report counts it as finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_gets_goaway_not_rst_on_drain() {
    let listener = support::listener(&tcp_hygiene::Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tcp_hygiene::integration::axum::serve(listener, slow_app())
            .with_graceful_shutdown(
                async move {
                    let _ = stop_rx.await;
                },
                Duration::from_secs(3),
                Duration::from_secs(6),
            )
            .into_future(),
    );
    let client = tokio::spawn(h2_slow_request(addr));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(()).unwrap();
    let (body, ended, _) = client.await.unwrap();
    assert_eq!(body, "done");
    ended.expect("GOAWAY and a clean close, not a reset");
    let report = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the drain returns once the stream is done")
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            report.connections,
            report.finished,
            report.idle_closed,
            report.forced
        ),
        (1, 1, 0, 0),
        "{report:?}"
    );
}

/// The header read timeout is HTTP/1's, as hyper's: an idle HTTP/1 keep-alive connection
/// is closed when it runs out (counted from the end of the response), while an HTTP/2
/// connection that has made a request stays open past it and keeps serving. A request
/// longer than the timeout is never cut by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_read_timeout_ends_idle_http1_but_not_http2() {
    use http_body_util::BodyExt;
    const TIMEOUT: Duration = Duration::from_millis(300);
    let listener = support::listener(&tcp_hygiene::Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let app = slow_app().route("/", axum::routing::get(|| async { "ok" }));
    tokio::spawn(
        tcp_hygiene::integration::axum::serve(listener, app)
            .header_read_timeout(TIMEOUT)
            .keep_alive_timeout(None)
            .into_future(),
    );

    // HTTP/1: a 1 s request is answered in full, then the idle connection is closed one
    // timeout after the response.
    let mut h1 = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_ok(&mut h1, "/slow").await, "done");
    let answered = Instant::now();
    let closed = closed_within(&mut h1, Duration::from_secs(5)).await;
    let after = closed - answered;
    eprintln!("header read timeout: idle HTTP/1 closed {after:?} after its response");
    assert!(after >= TIMEOUT - Duration::from_millis(20), "{after:?}");
    assert!(after < TIMEOUT + Duration::from_millis(500), "{after:?}");

    // HTTP/2: the same idle time and more, and the connection still serves.
    let (mut sender, conn) = h2_connect(addr).await;
    for _ in 0..2 {
        let request = hyper::Request::get(format!("http://{addr}/"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .expect("HTTP/2 is still served after the header read timeout");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        tokio::time::sleep(TIMEOUT * 3).await;
    }
    assert!(!conn.is_finished(), "the HTTP/2 connection ended");
}

/// `slowhttptest -H` itself (slowloris: 100 connections, a header line every second):
/// under the library's serve with a 1 s header read timeout the kernel shows none of its
/// connections left 4 s in, and `curl` is answered meanwhile; under `--plain`
/// (`axum::serve` on tokio's listener) all 100 are still established.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowhttptest_slowloris_is_cut_and_plain_axum_is_not() {
    require!(
        Need::Tool("slowhttptest"),
        Need::Tool("curl"),
        Need::Tool("ss")
    );
    const CONNECTIONS: usize = 100;
    let hygiene = Server::start("axum_server", &["--header-read-timeout-ms", "1000"]);
    let plain = Server::start("axum_server", &["--plain"]);
    let dir = std::env::temp_dir().join(format!("tcp-hygiene-slowloris-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let attack = |server: &Server, name: &str| {
        let mut command = std::process::Command::new("slowhttptest");
        command
            .args(["-H", "-c", &CONNECTIONS.to_string(), "-r", "100", "-i", "1"])
            .args(["-l", "6", "-p", "3", "-g", "-o"])
            .arg(dir.join(name))
            .args(["-u", &format!("{}/", server.url())])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = command
            .spawn()
            .expect("slowhttptest must be installed (.ci/run installs it)");
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap().status)
    };
    let on_hygiene = attack(&hygiene, "hygiene");
    let on_plain = attack(&plain, "plain");
    wait_for(Duration::from_secs(3), "slowhttptest connected", || {
        ss_count(plain.port(), "established") >= CONNECTIONS
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        curl(&["-sf", "--max-time", "3", &format!("{}/", hygiene.url())]),
        "ok"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (left, held) = (
        ss_count(hygiene.port(), "established"),
        ss_count(plain.port(), "established"),
    );
    eprintln!(
        "slowhttptest -H, 4 s in: {left} connections left under the serve, {held} under --plain"
    );
    assert_eq!(
        left, 0,
        "slowloris connections survived the header read timeout"
    );
    assert_eq!(
        held, CONNECTIONS,
        "the control should hold every connection"
    );
    assert!(on_hygiene.await.unwrap().success());
    assert!(on_plain.await.unwrap().success());
    let csv = std::fs::read_to_string(dir.join("hygiene.csv")).expect("slowhttptest's CSV");
    eprintln!("slowhttptest on the serve:\n{csv}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ----------------------------------------------------------------------------------------
// Regressions of issue 15.

/// A listener on 127.0.0.1 whose accepted sockets have a small send buffer (they inherit
/// the listening socket's): what is not yet in the kernel stays in hyper's buffers.
fn listener_with_send_buffer(
    builder: &tcp_hygiene::Builder,
    bytes: usize,
) -> tcp_hygiene::TcpListener {
    support::trace_init();
    let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&std)
        .set_send_buffer_size(bytes)
        .unwrap();
    std.set_nonblocking(true).unwrap();
    builder
        .wrap(tokio::net::TcpListener::from_std(std).unwrap())
        .unwrap()
}

/// Issue 15, defect 1: the serve's header read timeout cut off a response still being
/// written. A `GET` of a 2 MiB body under `header_read_timeout(1 s)`, by a client with a
/// 16 KiB receive buffer reading about 800 KB/s (the server's sockets have a 64 KiB send
/// buffer, so most of the body waits in hyper's write buffer): the client gets every
/// byte. (The request counted as finished once hyper had taken the body's last frame; the
/// header-read clock started then, and when it ran out the connection was dropped with
/// hyper's unsent bytes: a clean EOF after part of the body. With the 30 s default this
/// hits any slow client downloading a large response.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_downloading_a_large_response_gets_every_byte_despite_the_header_read_timeout(
) {
    const BODY: usize = 2 << 20;
    let listener = listener_with_send_buffer(&tcp_hygiene::Builder::new(), 64 * 1024);
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/big", axum::routing::get(|| async { vec![b'x'; BODY] }));
    let server = tokio::spawn(
        tcp_hygiene::integration::axum::serve(listener, app)
            .header_read_timeout(Duration::from_secs(1))
            .into_future(),
    );
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut client = socket.connect(addr).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let asked = Instant::now();
    let mut received = Vec::with_capacity(BODY + 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk)).await {
            Err(_) => break "nothing for 5 s".to_owned(),
            Ok(Ok(0)) => break "EOF".to_owned(),
            Ok(Err(e)) => break format!("{e:?}"),
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
        }
        let head_end = received.windows(4).position(|w| w == b"\r\n\r\n");
        if head_end.is_some_and(|end| received.len() >= end + 4 + BODY) {
            break "the whole response".to_owned();
        }
        assert!(asked.elapsed() < Duration::from_secs(30), "too slow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let head_end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let body = received.len() - (head_end + 4);
    eprintln!(
        "slow download: {body} of {BODY} body bytes in {:?}, then {ended}",
        asked.elapsed()
    );
    assert_eq!(
        body,
        BODY,
        "the client got {body} of {BODY} body bytes, then {ended} {:?} after its request",
        asked.elapsed()
    );
    server.abort();
}

/// HTTP/2 frames by hand, for a test that must control exactly which bytes a client
/// sends last (a library client decides for itself when to send WINDOW_UPDATE).
mod h2_frames {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub(crate) const DATA: u8 = 0;
    pub(crate) const HEADERS: u8 = 1;
    pub(crate) const SETTINGS: u8 = 4;
    pub(crate) const WINDOW_UPDATE: u8 = 8;
    pub(crate) const END_STREAM: u8 = 1;

    pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A WINDOW_UPDATE of `increment` for `stream` (0: the connection).
    pub(crate) fn window_update(stream: u32, increment: u32) -> Vec<u8> {
        frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
    }

    /// The preface and SETTINGS (stream windows of 2^31 - 1), and the connection's window
    /// opened as wide: the server never waits for a WINDOW_UPDATE of ours.
    pub(crate) fn preface() -> Vec<u8> {
        let mut p = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // SETTINGS_INITIAL_WINDOW_SIZE (4) = 2^31 - 1.
        p.extend(frame(SETTINGS, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]));
        p.extend(window_update(0, 0x7fff_0000));
        p
    }

    /// `GET path` on `stream` (HPACK: :method GET, :scheme http, :authority t, :path
    /// literal), ending the stream.
    pub(crate) fn get(stream: u32, path: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x41, 1, b't', 0x44, path.len() as u8];
        block.extend_from_slice(path.as_bytes());
        frame(HEADERS, 0x4 | END_STREAM, stream, &block)
    }

    /// Reads one frame: its type, flags, stream and payload.
    pub(crate) async fn read(stream: &mut TcpStream) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await?;
        Ok((head[3], head[4], id, payload))
    }

    /// Reads the response on `id` to its end (acknowledging the server's SETTINGS on the
    /// way); returns its status byte (HPACK 0x88 is `:status 200`) and body length.
    pub(crate) async fn response(stream: &mut TcpStream, id: u32) -> std::io::Result<(u8, usize)> {
        let (mut status, mut body) = (0, 0);
        loop {
            let (kind, flags, on, payload) = read(stream).await?;
            match kind {
                SETTINGS if flags & 1 == 0 => {
                    stream.write_all(&frame(SETTINGS, 1, 0, &[])).await?;
                }
                HEADERS if on == id => status = payload.first().copied().unwrap_or(0),
                DATA if on == id => body += payload.len(),
                _ => {}
            }
            if on == id && flags & END_STREAM != 0 && (kind == DATA || kind == HEADERS) {
                return Ok((status, body));
            }
        }
    }
}

/// Issue 15, defect 9: `min_receive_rate` closed healthy HTTP/2 connections. After a
/// download every h2 client sends WINDOW_UPDATE frames as it consumes the data; on a
/// connection then idle those were the last bytes to move, so the client looked as if
/// it owed data, and the connection was closed `SlowReceive` about 1.9 s later (rate
/// 100 B/s, grace 1 s), with no GOAWAY. Here an HTTP/2 client (frames by hand, so that
/// its last frame is always that WINDOW_UPDATE) downloads 1 MiB, gives the window back,
/// and stays idle for 4 s: the connection is still open, and serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_after_a_download_is_not_cut_by_min_receive_rate() {
    const IDLE: Duration = Duration::from_secs(4);
    const BIG: usize = 1 << 20;
    let listener = support::listener(
        tcp_hygiene::Builder::new()
            .min_receive_rate(tcp_hygiene::MinDataRate::new(100, Duration::from_secs(1))),
    )
    .await;
    let addr = listener.local_addr().unwrap();
    let controller = listener.controller();
    let app = axum::Router::new()
        .route("/ok", axum::routing::get(|| async { "ok" }))
        .route("/big", axum::routing::get(|| async { vec![b'x'; BIG] }));
    let server = tokio::spawn(
        tcp_hygiene::integration::axum::serve(listener, app)
            .keep_alive_timeout(None)
            .into_future(),
    );
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(&h2_frames::preface()).await.unwrap();
    client.write_all(&h2_frames::get(1, "/big")).await.unwrap();
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(10), h2_frames::response(&mut client, 1))
            .await
            .expect("the download in time")
            .expect("the download");
    assert_eq!((status, body), (0x88, BIG), "200 and the whole body");
    // The client consumed the data and gives the connection's window back.
    client
        .write_all(&h2_frames::window_update(0, BIG as u32))
        .await
        .unwrap();
    let downloaded = Instant::now();
    let idle = tokio::time::timeout(IDLE, h2_frames::read(&mut client)).await;
    let stats = controller.stats();
    if let Ok(ended) = idle {
        panic!(
            "the idle HTTP/2 connection ended {:?} after its download: {ended:?} (0 bytes \
             read: EOF); closed SlowReceive: {}",
            downloaded.elapsed(),
            stats.closed(tcp_hygiene::CloseReason::SlowReceive)
        );
    }
    client.write_all(&h2_frames::get(3, "/ok")).await.unwrap();
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(5), h2_frames::response(&mut client, 3))
            .await
            .expect("the next request answered in time")
            .expect("the idle HTTP/2 connection still serves");
    assert_eq!((status, body), (0x88, 2));
    assert_eq!(stats.closed_total(), 0, "{stats:?}");
    server.abort();
}

/// Issue 15, defect 10: `min_receive_rate` counted a small request body that had been
/// fully sent, but not yet read by the handler, as owed. `GET /slow` with a 5-byte body
/// the handler never reads, a 3 s handler, rate 100 B/s with a 1 s grace: the client sent
/// everything at once and owes nothing; it gets its answer. (It got an empty reply at
/// 1.0 s, closed `SlowReceive`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_the_handler_has_not_read_is_not_owed_under_min_receive_rate() {
    let listener = support::listener(
        tcp_hygiene::Builder::new()
            .min_receive_rate(tcp_hygiene::MinDataRate::new(100, Duration::from_secs(1))),
    )
    .await;
    let addr = listener.local_addr().unwrap();
    let controller = listener.controller();
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "done"
        }),
    );
    let server = tokio::spawn(tcp_hygiene::integration::axum::serve(listener, app).into_future());
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let response = support::http::try_read_response(&mut client, Duration::from_secs(10)).await;
    let stats = controller.stats();
    let (status, body) = response.unwrap_or_else(|how| {
        panic!(
            "no response: {how}; closed SlowReceive: {}",
            stats.closed(tcp_hygiene::CloseReason::SlowReceive)
        )
    });
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "done");
    assert_eq!(stats.closed_total(), 0, "{stats:?}");
    server.abort();
}
