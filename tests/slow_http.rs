//! Slow and stalling HTTP clients against the framework serves at their defaults, over
//! plain HTTP with real clients: `slowhttptest` (slow bodies, slow readers, a slowloris
//! larger than `--max-connections`) against the `axum_server` example with `curl`
//! answered throughout, an HTTP/2 client that never opens its flow-control window (with
//! and without PINGs), and an HTTP/1 client that half-closes after its request. Each with
//! a control (`--plain` or plain `axum::serve`) where there is one; the kernel's view
//! through `ss`.
#![cfg(feature = "axum")]

mod support;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use support::attack::{attack_each, curl_timed, scratch_dir, slowhttptest, watch_clearing};
use support::example::Server;
use support::http::try_read_response;
use support::{require, ss_count, wait_for, Need};
use tcp_hygiene::{Builder, CloseReason};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// 50 slow bodies (`slowhttptest -B`: 10 bytes of an 8 KB POST body a second) and 50
/// slow readers (`-X`: a 4 MB download read 32 bytes at a time every 3 s through a 512 B
/// window) against the `axum_server` example over plain HTTP at its defaults: the
/// 240 B/s minimum rates (judged over 5 s windows) clear each attack within 25 s, while
/// `curl` is answered by both servers throughout, and the kernel keeps no `CLOSE_WAIT`.
/// Control: `--plain` (axum's own server over tokio's listener) still holds all 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowhttptest_slow_bodies_and_readers_over_http_are_cleared_at_the_defaults() {
    require!(
        Need::Tool("slowhttptest"),
        Need::Tool("curl"),
        Need::Tool("ss")
    );
    const CONNECTIONS: usize = 50;
    let dir = scratch_dir("http-slow");
    let kinds = ["B", "X"];
    let servers: Vec<Server> = kinds
        .iter()
        .map(|_| Server::start("axum_server", &[]))
        .collect();
    let control = Server::start("axum_server", &["--plain"]);
    let attacks = attack_each(dir, "http", &servers, &control, &kinds, CONNECTIONS);
    let attacked: Vec<(&Server, &str)> = servers.iter().zip(kinds).collect();
    let clearing = watch_clearing(
        "http",
        &attacked,
        CONNECTIONS,
        (control.port(), 2 * CONNECTIONS),
        Duration::from_secs(45),
    )
    .await;
    let held = ss_count(control.port(), "established");
    let (control_ok, _) = curl_timed(control.url(), Duration::from_secs(3)).await;
    eprintln!(
        "slowhttptest over HTTP: cleared -B {:?}, -X {:?}; curl answered {} times (slowest {:?}); \
         control holds {held} (curl answered there: {control_ok})",
        clearing.cleared[0], clearing.cleared[1], clearing.curls, clearing.slowest
    );
    // Checked while the attacks still run: ending them sends FINs of their own.
    clearing.assert_cleared(&servers, &kinds, Duration::from_secs(25));
    drop(attacks);
    assert!(held >= 2 * CONNECTIONS, "the control holds {held}");
}

/// A slowloris larger than `--max-connections 50` (`slowhttptest -H`, 50 new
/// connections a second for 12 s, 600 in all, each sending a header line a second)
/// against the `axum_server` example: the serve sheds the oldest connections without a
/// request in flight for the clients waiting in the backlog, so `curl` is answered 10
/// times of 10, each within 3 s, while the attack fills every slot. There is no control:
/// `--plain` has no connection limit; the measure is curl's (before the shedding, curl
/// was answered 3 times of 10 under such an attack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_above_max_connections_does_not_shut_out_curl() {
    require!(
        Need::Tool("slowhttptest"),
        Need::Tool("curl"),
        Need::Tool("ss")
    );
    const LIMIT: usize = 50;
    let dir = scratch_dir("http-shed");
    let server = Server::start("axum_server", &["--max-connections", &LIMIT.to_string()]);
    let mut attack = slowhttptest(&dir, "H", "http", server.addr, "H", 600, 50);
    // The attack fills the limit (`ss` counts the backlog's connections too).
    wait_for(Duration::from_secs(10), "the limit reached", || {
        ss_count(server.port(), "established") >= LIMIT
    })
    .await;
    let mut answered = 0;
    let mut times = Vec::new();
    let mut attack_sizes = Vec::new();
    for _ in 0..10 {
        attack_sizes.push(ss_count(server.port(), "established"));
        let (ok, took) = curl_timed(server.url(), Duration::from_secs(3)).await;
        answered += usize::from(ok);
        times.push(took);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let alive = attack.try_wait().unwrap().is_none();
    let _ = attack.kill();
    let _ = attack.wait();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "slowloris at --max-connections {LIMIT}: curl answered {answered} of 10, times {times:?}; \
         established (incl. backlog) before each curl {attack_sizes:?}; attack still running: {alive}"
    );
    assert!(alive, "the attack ended early; nothing was shown");
    let smallest = attack_sizes.iter().min().copied().unwrap_or(0);
    assert!(
        smallest >= LIMIT,
        "the attack did not fill the limit at every curl: {attack_sizes:?}"
    );
    assert_eq!(answered, 10, "curl answered {answered} of 10: {times:?}");
}

/// A response body of `left` frames of 64 KiB each.
struct Chunks {
    left: usize,
}

impl hyper::body::Body for Chunks {
    type Data = hyper::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        let chunk = hyper::body::Bytes::from(vec![b'x'; 64 << 10]);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

/// An axum app with `/` (`ok`), `/big` (4 MB in one frame) and `/stream` (4 MB in
/// 64 KiB frames).
fn big_app() -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        .route("/big", axum::routing::get(|| async { vec![b'x'; 4 << 20] }))
        .route(
            "/stream",
            axum::routing::get(|| async { axum::body::Body::new(Chunks { left: 64 }) }),
        )
}

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<hyper::body::Bytes>>;

/// An HTTP/2 (prior knowledge) client connection to `addr` whose streams' initial
/// flow-control window is `window`, sending a PING every `ping` if given.
async fn h2_client(
    addr: SocketAddr,
    window: u32,
    ping: Option<Duration>,
) -> (H2Sender, tokio::task::JoinHandle<Result<(), hyper::Error>>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut builder =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .initial_stream_window_size(window)
        .adaptive_window(false)
        .timer(hyper_util::rt::TokioTimer::new());
    if let Some(every) = ping {
        builder
            .keep_alive_interval(every)
            .keep_alive_timeout(Duration::from_secs(60))
            .keep_alive_while_idle(true);
    }
    let (sender, conn) = builder
        .handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    (sender, tokio::spawn(conn))
}

fn get(addr: SocketAddr, path: &str) -> hyper::Request<http_body_util::Empty<hyper::body::Bytes>> {
    hyper::Request::get(format!("http://{addr}{path}"))
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// 5 HTTP/2 connections, each with 4 streams of a 4 MB response (3 of them in one frame,
/// axum's `Vec<u8>`, 2 in 64 KiB frames) and a stream window of zero that is never opened, 2 of them sending a PING every 500 ms: under the library's
/// axum serve at its defaults every one is closed with `SlowSend` within 20 s (the data
/// held for a shut window counts as queued; PINGs are no progress), while a normal HTTP/2
/// client is served all along; afterwards `ss` shows nothing left on the port. Control:
/// plain `axum::serve` still holds all 5 at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_zero_window_hold_is_closed_for_slow_send_with_and_without_pings() {
    require!(Need::Tool("ss"));
    const HOLDERS: usize = 5;
    const STREAMS: usize = 4;
    let listener = support::listener(&Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let controller = listener.controller();
    tokio::spawn(tcp_hygiene::integration::axum::serve(listener, big_app()).into_future());
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    tokio::spawn(axum::serve(plain, big_app()).into_future());

    let mut holders = Vec::new();
    let mut held_streams = Vec::new();
    for target in [addr, plain_addr] {
        for i in 0..HOLDERS {
            let ping = (i < 2).then_some(Duration::from_millis(500));
            // A body of one frame and one of many: both must count as held.
            let path = if i % 2 == 0 { "/big" } else { "/stream" };
            let (mut sender, conn) = h2_client(target, 0, ping).await;
            for _ in 0..STREAMS {
                sender.ready().await.unwrap();
                let response = sender.send_request(get(target, path));
                held_streams.push(tokio::spawn(async move {
                    // The headers come; the body never can.
                    let response = response.await?;
                    let body = response.into_body();
                    std::future::pending::<()>().await;
                    drop(body);
                    Ok::<_, hyper::Error>(())
                }));
            }
            holders.push((target, conn, sender));
        }
    }
    let started = Instant::now();
    wait_for(Duration::from_secs(5), "every holder connected", || {
        ss_count(addr.port(), "established") == HOLDERS
            && ss_count(plain_addr.port(), "established") == HOLDERS
    })
    .await;
    // A normal client, served while the holders wait.
    let (mut normal, normal_conn) = h2_client(addr, 65_535, None).await;
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    let mut closed_at = None;
    while started.elapsed() < Duration::from_secs(30) {
        let asked = Instant::now();
        normal
            .ready()
            .await
            .expect("the normal client's connection");
        let response = tokio::time::timeout(
            Duration::from_secs(2),
            normal.send_request(get(addr, "/big")),
        )
        .await
        .expect("the normal client answered within 2 s")
        .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 4 << 20);
        slowest = slowest.max(asked.elapsed());
        served += 1;
        // Only the normal client's connection left on the library's port.
        if closed_at.is_none() && ss_count(addr.port(), "established") == 1 {
            closed_at = Some(started.elapsed());
        }
        if closed_at.is_some() && served >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let slow_send = controller.stats().closed(CloseReason::SlowSend);
    let held = ss_count(plain_addr.port(), "established");
    drop(normal);
    let _ = tokio::time::timeout(Duration::from_secs(5), normal_conn).await;
    let left: usize = [
        "established",
        "close-wait",
        "fin-wait-1",
        "fin-wait-2",
        "last-ack",
        "closing",
    ]
    .iter()
    .map(|state| ss_count(addr.port(), state))
    .sum();
    eprintln!(
        "HTTP/2 zero-window hold: {HOLDERS} holders (2 pinging) closed by {closed_at:?}, SlowSend {slow_send}; \
         normal client served {served} times (slowest {slowest:?}); {left} sockets left after (but TIME_WAIT); control holds {held}"
    );
    let mut ended = 0;
    for (target, conn, _) in holders.iter_mut() {
        if *target == addr {
            ended += usize::from(conn.is_finished());
        }
    }
    for stream in held_streams {
        stream.abort();
    }
    let closed_at = closed_at.expect("the holders not closed within 30 s");
    assert!(closed_at <= Duration::from_secs(20), "{closed_at:?}");
    assert_eq!(slow_send, HOLDERS as u64, "closed for SlowSend");
    assert_eq!(ended, HOLDERS, "the holders' connections ended");
    assert_eq!(left, 0, "{}", support::ss_lines(addr.port()));
    assert_eq!(held, HOLDERS, "the control holds them");
}

/// An HTTP/1 client sends `GET /slow` and then shuts its write side (legal: the request
/// is complete). Under the library's axum serve it gets its whole response (hyper's
/// half-close support is on); the response of a 300 ms handler comes in full. Control:
/// plain `axum::serve` sees the EOF and drops the connection without answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_http1_client_gets_its_response() {
    let app = || {
        axum::Router::new().route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        )
    };
    let listener = support::listener(&Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tcp_hygiene::integration::axum::serve(listener, app()).into_future());
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    tokio::spawn(axum::serve(plain, app()).into_future());

    let mut results = Vec::new();
    for target in [addr, plain_addr] {
        let mut client = TcpStream::connect(target).await.unwrap();
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let started = Instant::now();
        let result = try_read_response(&mut client, Duration::from_secs(5)).await;
        results.push((result, started.elapsed()));
    }
    eprintln!(
        "half-closed HTTP/1 client: library {:?}; plain axum {:?}",
        results[0], results[1]
    );
    let (library, _) = &results[0];
    let (status, body) = library.as_ref().expect("the library's serve answers");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "done");
    assert!(
        results[1].0.is_err(),
        "plain axum answered: {:?}",
        results[1]
    );
}
