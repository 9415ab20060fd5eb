//! HTTPS under the framework serves (`Serve::tls`), over real loopback sockets with real
//! clients: stalled handshakes closed at the handshake timeout while others are served
//! (the `axum_server` example and `curl -k`, against the usual hand-written accept loop
//! that handshakes inline), failed handshakes counted and harmless, `close_notify` before
//! the library's FIN as Python's strict `ssl` module sees it, a stuck handler still
//! closed, HTTP/2 by ALPN. The kernel's view through `ss`.
#![cfg(all(feature = "axum", feature = "tls"))]

mod support;

use std::future::IntoFuture;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use support::attack::{attack_each, curl_ok, curl_timed, scratch_dir, watch_clearing};
use support::certs::certs;
use support::example::Server;
use support::{require, ss_count, wait_for, Need};
use tcp_hygiene::integration::rustls;
use tcp_hygiene::{Builder, CloseReason, TcpListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use rustls::pki_types::ServerName;

/// The first 5 bytes of a TLS `ClientHello`: its record header, announcing 512 bytes that
/// never come.
const HELLO_START: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00];

/// A self-signed certificate for `localhost`: the server's config and a client's that
/// trusts it.
fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/hang", get(std::future::pending::<&'static str>))
}

/// Serves [`app`] over TLS on a supervised listener made by `builder`, with the handshake
/// timeout given; returns the listener's address and a handle to read its stats.
async fn serve_tls(
    builder: &Builder,
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Option<Duration>,
    configure: impl FnOnce(
        tcp_hygiene::integration::http::Serve<hyper_util::service::TowerToHyperService<Router>>,
    ) -> tcp_hygiene::integration::http::Serve<
        hyper_util::service::TowerToHyperService<Router>,
    >,
) -> (SocketAddr, tcp_hygiene::Controller) {
    let listener: TcpListener = support::listener(builder).await;
    let addr = listener.local_addr().unwrap();
    let controller = listener.controller();
    let serve = tcp_hygiene::integration::axum::serve(listener, app())
        .tls(config)
        .tls_handshake_timeout(handshake_timeout);
    tokio::spawn(configure(serve).into_future());
    (addr, controller)
}

/// `GET path` over a new TLS connection with `Connection: close`; the body. The client is
/// tokio-rustls', which reports an EOF without `close_notify` as an error.
async fn https_get(addr: SocketAddr, client: &Arc<rustls::ClientConfig>, path: &str) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(client.clone())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("handshake");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tls.read_to_end(&mut response)
        .await
        .expect("a whole response, ended by close_notify");
    let text = String::from_utf8_lossy(&response).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// Reads until EOF or an error; how long after `since` that came, or `None` if the
/// connection is still open at `limit`.
async fn ends_within(stream: &mut TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    loop {
        let left = (since + limit).saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// 50 clients send the first 5 bytes of a `ClientHello` and stall. The example's serve
/// (`--tls --tls-handshake-timeout-ms 1000`) closes each within the timeout + 1 s of its
/// connect, while `curl -k` keeps being answered, each new connection's handshake
/// included: the handshakes run in the connections' tasks. Control: `--plain --tls`, the
/// accept loop that runs each handshake inline with no timeout, is stuck behind the first
/// staller: curl is not answered and the stallers are all still connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_are_closed_at_the_timeout_while_curl_is_answered() {
    require!(Need::Tool("curl"), Need::Tool("ss"));
    const STALLERS: usize = 50;
    let timeout = Duration::from_secs(1);

    let server = Server::start(
        "axum_server",
        &["--tls", "--tls-handshake-timeout-ms", "1000"],
    );
    let url = format!("https://{}/", server.addr);
    assert!(curl_ok(&url, Duration::from_secs(10)), "curl -k before");
    let mut stallers = Vec::new();
    for _ in 0..STALLERS {
        let started = Instant::now();
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        client.write_all(HELLO_START).await.unwrap();
        stallers.push(tokio::spawn(async move {
            ends_within(&mut client, started, Duration::from_secs(5)).await
        }));
    }
    // curl throughout the timeout: each answered, a new connection and handshake each.
    let curls = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let started = Instant::now();
            let mut answered = Vec::new();
            while started.elapsed() < Duration::from_millis(1500) {
                let t = Instant::now();
                assert!(curl_ok(&url, Duration::from_secs(2)), "curl -k during");
                answered.push(t.elapsed());
            }
            answered
        }
    });
    let mut closed = Vec::new();
    for staller in stallers {
        closed.push(
            staller
                .await
                .unwrap()
                .expect("a staller still open after 5 s"),
        );
    }
    let answered = curls.await.unwrap();
    let slowest = closed.iter().max().unwrap();
    let fastest = closed.iter().min().unwrap();
    eprintln!(
        "{STALLERS} stallers closed {fastest:?}..{slowest:?} after connecting; curl answered {} times during, slowest {:?}",
        answered.len(),
        answered.iter().max().unwrap()
    );
    assert!(
        *fastest >= timeout - Duration::from_millis(100),
        "{fastest:?}"
    );
    assert!(*slowest <= timeout + Duration::from_secs(1), "{slowest:?}");
    assert!(answered.len() >= 3, "{answered:?}");
    // The kernel: nothing of theirs left but what the client side closes.
    wait_for(
        Duration::from_secs(3),
        "no CLOSE_WAIT, nothing established",
        || {
            ss_count(server.port(), "close-wait") == 0
                && ss_count(server.port(), "established") == 0
        },
    )
    .await;
    drop(server);

    // The control.
    let control = Server::start("axum_server", &["--plain", "--tls"]);
    let url = format!("https://{}/", control.addr);
    assert!(
        curl_ok(&url, Duration::from_secs(10)),
        "control: curl -k before"
    );
    let mut stallers = Vec::new();
    let started = Instant::now();
    for _ in 0..STALLERS {
        let mut client = TcpStream::connect(control.addr).await.unwrap();
        client.write_all(HELLO_START).await.unwrap();
        stallers.push(client);
    }
    let (answered, _) = curl_timed(url, Duration::from_secs(2)).await;
    assert!(
        !answered,
        "control: curl was answered behind a stalled handshake"
    );
    let mut open = 0;
    for client in &mut stallers {
        if ends_within(client, started, Duration::from_secs(3))
            .await
            .is_none()
        {
            open += 1;
        }
    }
    eprintln!("control: curl not answered; {open} of {STALLERS} stallers open after 3 s");
    assert_eq!(open, STALLERS);
}

/// `max_connections` (10) all held by clients stalled in their handshake (the handshake
/// timeout 30 s, out of the way): a good HTTPS client waiting in the backlog is answered
/// within the shedding check's 100 ms, the oldest staller shed for it (`LoadShed`, the
/// staller sees its end), instead of waiting out the 30 s: a client stalled in its
/// handshake has no request in flight, and is shed first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_at_max_connections_are_shed_for_a_good_client() {
    const MAX: usize = 10;
    let certs = certs();
    let (addr, controller) = serve_tls(
        Builder::new().max_connections(MAX),
        certs.server.clone(),
        Some(Duration::from_secs(30)),
        |s| s,
    )
    .await;
    let mut stallers = Vec::new();
    for _ in 0..MAX {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(HELLO_START).await.unwrap();
        stallers.push(client);
    }
    wait_for(Duration::from_secs(3), "every slot taken", || {
        controller.stats().open == MAX as u64
    })
    .await;
    for round in 0..3 {
        let started = Instant::now();
        let body =
            tokio::time::timeout(Duration::from_secs(5), https_get(addr, &certs.client, "/"))
                .await
                .expect("answered while the stallers hold every slot");
        let took = started.elapsed();
        eprintln!("round {round}: answered in {took:?} at max_connections");
        assert_eq!(body, "ok");
        assert!(took <= Duration::from_secs(2), "{took:?}");
    }
    let shed = controller.stats().closed(CloseReason::LoadShed);
    let mut ended = 0;
    for staller in &mut stallers {
        if ends_within(staller, Instant::now(), Duration::from_millis(200))
            .await
            .is_some()
        {
            ended += 1;
        }
    }
    eprintln!("{shed} stallers shed, {ended} saw their end");
    assert!(shed >= 1, "{shed}");
    assert_eq!(ended as u64, shed);
    assert_eq!(
        controller.stats().closed(CloseReason::TlsHandshakeTimeout),
        0
    );
}

/// A [`tracing`] layer that counts events at `WARN` and `ERROR`.
struct CountLoud(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountLoud {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            eprintln!("loud: {event:?}");
            self.0.fetch_add(1, Relaxed);
        }
    }
}

/// Garbage instead of a `ClientHello`, a plain HTTP request on the TLS port, a client that
/// resets mid-handshake, and one that stalls: each is closed (the first two with a TLS
/// alert), the failures are counted in `tls_handshake_failures`, the reset as
/// `ResetByPeer` and the staller as `TlsHandshakeTimeout`, nothing is logged at `WARN` or above, and a good client is
/// served meanwhile. (One thread, so the counting subscriber sees every task's events.)
#[tokio::test]
async fn bad_handshakes_are_closed_counted_and_quiet() {
    require!(Need::Tool("ss"));
    use tracing_subscriber::layer::SubscriberExt;
    let loud = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(CountLoud(loud.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let certs = certs();
    let (addr, controller) = serve_tls(
        &Builder::new(),
        certs.server.clone(),
        Some(Duration::from_secs(1)),
        |s| s,
    )
    .await;
    let limit = Duration::from_secs(3);

    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0xde; 64]).await.unwrap();
    let mut http = TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut resetter = TcpStream::connect(addr).await.unwrap();
    resetter.write_all(HELLO_START).await.unwrap();
    let mut staller = TcpStream::connect(addr).await.unwrap();
    staller.write_all(HELLO_START).await.unwrap();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    support::reset(resetter);

    for (name, client) in [("garbage", &mut garbage), ("plain HTTP", &mut http)] {
        // A TLS alert record (content type 21), then the end.
        let mut first = [0u8; 1];
        let n = tokio::time::timeout(limit, client.read(&mut first))
            .await
            .expect("an answer")
            .unwrap_or(0);
        assert_eq!((n, first[0]), (1, 21), "{name}: a TLS alert");
        assert!(
            ends_within(client, started, limit).await.is_some(),
            "{name}"
        );
    }
    assert_eq!(https_get(addr, &certs.client, "/").await, "ok");
    let took = ends_within(&mut staller, started, limit)
        .await
        .expect("the staller closed");
    assert!(took <= Duration::from_secs(2), "{took:?}");
    // The reset is the kernel's to report (the library ends the task when it sees it):
    // counted as `ResetByPeer`, and as a failed handshake too if the handshake's read
    // took the error first.
    let counted = tokio::time::timeout(limit, async {
        loop {
            let stats = controller.stats();
            if stats.tls_handshake_failures >= 2 && stats.closed(CloseReason::ResetByPeer) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        counted.is_ok(),
        "failures and the reset counted: {:?}",
        controller.stats()
    );
    let stats = controller.stats();
    assert!(stats.tls_handshake_failures <= 3, "{stats:?}");
    eprintln!(
        "failures {}, resets {}, timeouts {}, loud events {}",
        stats.tls_handshake_failures,
        stats.closed(CloseReason::ResetByPeer),
        stats.closed(CloseReason::TlsHandshakeTimeout),
        loud.load(Relaxed)
    );
    assert_eq!(stats.closed(CloseReason::TlsHandshakeTimeout), 1);
    assert_eq!(loud.load(Relaxed), 0, "an event at WARN or ERROR");
    wait_for(limit, "no CLOSE_WAIT", || {
        ss_count(addr.port(), "close-wait") == 0
    })
    .await;
}

/// Python's `ssl` (strict: a FIN without `close_notify` raises `SSLEOFError`) makes one
/// request on a keep-alive connection, then reads until the server closes it. Prints
/// `clean after S` or `SSLEOFError after S`.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys, time
host, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection((host, port)), server_hostname="localhost", suppress_ragged_eofs=False)
s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
response = b""
while not response.endswith(b"ok"):
    response += s.recv(4096)
started = time.monotonic()
try:
    while s.recv(4096):
        pass
    print("clean after %.2f" % (time.monotonic() - started))
except ssl.SSLEOFError:
    print("SSLEOFError after %.2f" % (time.monotonic() - started))
"#;

/// Runs [`PYTHON_CLIENT`] against `addr`: its verdict and how long after the response.
async fn python_client(addr: SocketAddr) -> (String, Duration) {
    let out = tokio::process::Command::new("python3")
        .args([
            "-c",
            PYTHON_CLIENT,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ])
        .output()
        .await
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "python3: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (verdict, secs) = text.rsplit_once(" after ").expect("a verdict");
    (
        verdict.to_owned(),
        Duration::from_secs_f64(secs.parse().unwrap()),
    )
}

/// An idle keep-alive connection closed by the library, by the listener's `idle_timeout`,
/// the serve's keep-alive timeout and its header read timeout: Python's `ssl` reads a clean end (`close_notify`
/// before our FIN), not `SSLEOFError`; the kernel keeps no `CLOSE_WAIT`. Control: a
/// tokio-rustls server that drops the connection at the same time without shutting TLS
/// down: `SSLEOFError`, so the client can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_ssl_reads_a_clean_end_when_an_idle_connection_is_closed() {
    require!(Need::Tool("python3"), Need::Tool("ss"));
    let certs = certs();
    let idle = Duration::from_secs(1);

    // The listener's idle timeout (the supervisor's rule: it asks the serve first).
    let (addr, controller) = serve_tls(
        Builder::new().idle_timeout(idle),
        certs.server.clone(),
        None,
        |s| s,
    )
    .await;
    let (verdict, after) = python_client(addr).await;
    eprintln!("idle_timeout: {verdict} after {after:?}");
    assert_eq!(verdict, "clean");
    assert!(after >= idle - Duration::from_millis(100), "{after:?}");
    assert!(after <= idle + Duration::from_secs(1), "{after:?}");
    assert_eq!(controller.stats().closed(CloseReason::IdleTimeout), 1);
    wait_for(Duration::from_secs(2), "no CLOSE_WAIT", || {
        ss_count(addr.port(), "close-wait") == 0
    })
    .await;

    // The serve's keep-alive timeout (hyper winds the connection down).
    let (addr, _) = serve_tls(&Builder::new(), certs.server.clone(), None, |s| {
        s.keep_alive_timeout(idle)
    })
    .await;
    let (verdict, after) = python_client(addr).await;
    eprintln!("keep_alive_timeout: {verdict} after {after:?}");
    assert_eq!(verdict, "clean");
    assert!(after <= idle + Duration::from_secs(1), "{after:?}");

    // The serve's header read timeout (the connection task drops hyper's connection, then
    // shuts TLS down itself).
    let (addr, _) = serve_tls(&Builder::new(), certs.server.clone(), None, |s| {
        s.header_read_timeout(idle).keep_alive_timeout(None)
    })
    .await;
    let (verdict, after) = python_client(addr).await;
    eprintln!("header_read_timeout: {verdict} after {after:?}");
    assert_eq!(verdict, "clean");
    assert!(after <= idle + Duration::from_secs(1), "{after:?}");

    // The control: the connection dropped without a TLS shutdown.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = plain.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(certs.server.clone());
    tokio::spawn(async move {
        let (tcp, _) = plain.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = tls.read(&mut buf).await.unwrap();
        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        tokio::time::sleep(idle).await;
        drop(tls);
    });
    let (verdict, _) = python_client(addr).await;
    eprintln!("control (dropped): {verdict}");
    assert_eq!(verdict, "SSLEOFError");
}

/// A graceful shutdown over TLS: the idle keep-alive connection of a Python `ssl` client
/// is closed at the signal with `close_notify` first (a clean end, not `SSLEOFError`),
/// and the drain's report counts it as finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_over_tls_ends_an_idle_connection_cleanly() {
    require!(Need::Tool("python3"));
    let certs = certs();
    let listener = support::listener(&Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(
        tcp_hygiene::integration::axum::serve(listener, app())
            .tls(certs.server.clone())
            .with_graceful_shutdown(
                async {
                    let _ = stopped.await;
                },
                Duration::from_secs(2),
                Duration::from_secs(5),
            )
            .into_future(),
    );
    let client = tokio::spawn(python_client(addr));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(());
    let (verdict, after) = client.await.unwrap();
    eprintln!("drain: {verdict} after {after:?}");
    assert_eq!(verdict, "clean");
    let report = served.await.unwrap().unwrap();
    eprintln!("{report:?}");
    assert_eq!((report.connections, report.finished), (1, 1), "{report:?}");
}

/// A handler that never answers, over TLS, on a listener with a 1 s idle timeout: the
/// library asks the serve, which cannot close a busy connection cleanly, so after the
/// 1 s grace the library closes it at the TCP level and ends the task: the client sees
/// the end about 2 s in, and the kernel keeps no `CLOSE_WAIT` once the client has gone.
/// Control: the same handler under tokio-rustls and hyper with no library is still
/// connected then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_handler_over_tls_is_closed_after_the_grace() {
    require!(Need::Tool("ss"));
    let certs = certs();
    let idle = Duration::from_secs(1);
    let (addr, controller) = serve_tls(
        Builder::new().idle_timeout(idle),
        certs.server.clone(),
        None,
        |s| s,
    )
    .await;

    let connector = TlsConnector::from(certs.client.clone());
    let name = ServerName::try_from("localhost").unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
    tls.write_all(b"GET /hang HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let end = tokio::time::timeout(Duration::from_secs(6), tls.read(&mut buf))
        .await
        .expect("closed within 6 s");
    let took = started.elapsed();
    eprintln!("stuck handler over TLS: {end:?} after {took:?}");
    // Not a response; an EOF without close_notify (tokio-rustls: UnexpectedEof).
    assert!(
        matches!(&end, Ok(0))
            || end
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::UnexpectedEof),
        "{end:?}"
    );
    assert!(took >= idle + Duration::from_millis(800), "{took:?}");
    assert!(took <= idle + Duration::from_secs(3), "{took:?}");
    assert_eq!(controller.stats().closed(CloseReason::IdleTimeout), 1);
    drop(tls);
    wait_for(
        Duration::from_secs(3),
        "no CLOSE_WAIT, nothing established",
        || ss_count(addr.port(), "close-wait") == 0 && ss_count(addr.port(), "established") == 0,
    )
    .await;

    // The control.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = plain.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(certs.server.clone());
    tokio::spawn(async move {
        let (tcp, _) = plain.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let service = hyper_util::service::TowerToHyperService::new(app());
        let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
            .await;
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /hang HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf)).await;
    assert!(end.is_err(), "control: {end:?}");
    assert_eq!(ss_count(addr.port(), "established"), 1);
}

/// With a config that offers no ALPN, the serve offers `h2` and `http/1.1`: a client that
/// asks for `h2` gets HTTP/2, one that asks for `http/1.1` gets HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_offers_h2_and_http1() {
    let certs = certs();
    let (addr, _) = serve_tls(&Builder::new(), certs.server.clone(), None, |s| s).await;
    for (alpn, version) in [
        (&b"h2"[..], hyper::Version::HTTP_2),
        (&b"http/1.1"[..], hyper::Version::HTTP_11),
    ] {
        let mut client = (*certs.client).clone();
        client.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let io = hyper_util::rt::TokioIo::new(tls);
        let request = hyper::Request::get("https://localhost/")
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let response = if version == hyper::Version::HTTP_2 {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            send.send_request(request).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(request).await.unwrap()
        };
        assert_eq!(response.version(), version);
        use http_body_util::BodyExt;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
    }
}

/// `slowhttptest` over HTTPS against the example at the serve's defaults (no timeout or
/// rate flag but `--tls`), 50 connections per attack, one server per attack so the kernel's
/// counts tell them apart: slowloris (`-H`, a header line a second), a slow body (`-B`,
/// a few bytes a second to `POST /upload`) and a slow reader (`-X`, 32 bytes every 5 s of
/// a 4 MB download) are all cleared by the 240 B/s minimum rates within 25 s (slowloris
/// at the latest by the 30 s header read timeout); `curl -k` is answered by each throughout, and the kernel
/// keeps no `CLOSE_WAIT`. Control: `--plain --tls` (no library) still holds all 150 at the
/// end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowhttptest_over_https_is_cleared_at_the_defaults() {
    require!(
        Need::Tool("slowhttptest"),
        Need::Tool("curl"),
        Need::Tool("ss")
    );
    const CONNECTIONS: usize = 50;
    let dir = scratch_dir("tls-slow");
    let kinds = ["H", "B", "X"];
    let servers: Vec<Server> = kinds
        .iter()
        .map(|_| Server::start("axum_server", &["--tls"]))
        .collect();
    let control = Server::start("axum_server", &["--plain", "--tls"]);
    let attacks = attack_each(dir, "https", &servers, &control, &kinds, CONNECTIONS);
    // Debug-built rustls on a loaded 2-core machine can take longer than the rates' grace
    // to finish 300 handshakes: the attacks' connections are counted as made.
    let attacked: Vec<(&Server, &str)> = servers.iter().zip(kinds).collect();
    let clearing = watch_clearing(
        "https",
        &attacked,
        CONNECTIONS,
        (control.port(), 3 * CONNECTIONS),
        Duration::from_secs(42),
    )
    .await;
    let held = ss_count(control.port(), "established");
    eprintln!(
        "slowhttptest over HTTPS: cleared -H {:?}, -B {:?}, -X {:?}; curl answered {} times; control holds {held}",
        clearing.cleared[0], clearing.cleared[1], clearing.cleared[2], clearing.curls
    );
    // Checked while the attacks still run: ending them sends FINs of their own.
    clearing.assert_cleared(&servers, &kinds, Duration::from_secs(25));
    drop(attacks);
    assert!(held >= 3 * CONNECTIONS, "the control holds {held}");
}

/// A connector for tonic's client: TLS to one address with the given config.
#[cfg(feature = "tonic")]
#[derive(Clone)]
struct TlsConnect {
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
}

#[cfg(feature = "tonic")]
impl tower_service::Service<hyper::Uri> for TlsConnect {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let (addr, client) = (self.addr, self.client.clone());
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let tls = TlsConnector::from(client).connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// gRPC over TLS with `tonic::serve(..).tls(..)`: the serve offers ALPN `h2` alone (its
/// config offers none), a tonic client with ALPN `h2` gets its health check answered,
/// and a client that offers only `http/1.1` fails its handshake (counted).
#[cfg(feature = "tonic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_over_tls_speaks_h2_alone() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let certs = certs();
    let listener = support::listener(&Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let controller = listener.controller();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tcp_hygiene::integration::tonic::serve(listener, health)
            .tls(certs.server.clone())
            .into_future(),
    );

    let mut h2 = (*certs.client).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(TlsConnect {
            addr,
            client: Arc::new(h2),
        })
        .await
        .expect("connect");
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        HealthClient::new(channel).check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("answered in time")
    .expect("health check");
    assert_eq!(response.into_inner().status, 1, "SERVING");

    let mut h1 = (*certs.client).clone();
    h1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let refused = TlsConnector::from(Arc::new(h1))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(refused.is_err(), "an http/1.1-only client was accepted");
    wait_for(
        Duration::from_secs(3),
        "the refused handshake counted",
        || controller.stats().tls_handshake_failures == 1,
    )
    .await;
}

/// With the `metrics` feature: a failed handshake (garbage) and a timed-out one (a
/// staller, 1 s) show in the listener's metrics, as
/// `tcp_hygiene_tls_handshake_failures_total` and
/// `tcp_hygiene_connections_closed_total{reason="tls_handshake_timeout"}`.
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_failures_and_timeouts_show_in_the_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    support::trace_init();
    let certs = certs();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std.set_nonblocking(true).unwrap();
    let tokio = tokio::net::TcpListener::from_std(std).unwrap();
    let listener = metrics::with_local_recorder(&recorder, || Builder::new().wrap(tokio)).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tcp_hygiene::integration::axum::serve(listener, app())
            .tls(certs.server.clone())
            .tls_handshake_timeout(Duration::from_secs(1))
            .into_future(),
    );
    let started = Instant::now();
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0xde; 64]).await.unwrap();
    let mut staller = TcpStream::connect(addr).await.unwrap();
    staller.write_all(HELLO_START).await.unwrap();
    let limit = Duration::from_secs(3);
    assert!(ends_within(&mut garbage, started, limit).await.is_some());
    assert!(ends_within(&mut staller, started, limit).await.is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut failures = None;
    let mut timeouts = None;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let reason = key
            .labels()
            .find(|l| l.key() == "reason")
            .map(|l| l.value().to_owned());
        match (key.name(), reason.as_deref(), value) {
            ("tcp_hygiene_tls_handshake_failures_total", None, DebugValue::Counter(n)) => {
                failures = Some(n);
            }
            (
                "tcp_hygiene_connections_closed_total",
                Some("tls_handshake_timeout"),
                DebugValue::Counter(n),
            ) => timeouts = Some(n),
            _ => {}
        }
    }
    eprintln!("metrics: failures {failures:?}, timeouts {timeouts:?}");
    assert_eq!(failures, Some(1));
    assert_eq!(timeouts, Some(1));
}
