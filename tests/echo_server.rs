//! Black-box tests of `examples/echo_server.rs`: the command-line interface other tools
//! and people rely on.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::example::example_binary;
use support::ss_count;
use support::{require, Need};

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(example_binary("echo_server"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn echo_server");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line was {first:?}"));
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        assert_ne!(port, 0, "must print the real port");
        Server { child, port }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn bad_flags_print_usage_and_exit_2() {
    for args in [
        &["--listen", "127.0.0.1:0", "--bogus"][..],
        &["--listen"][..],
        &[][..],
        &["--listen", "127.0.0.1:0", "--idle-timeout-ms", "soon"][..],
        &["--listen", "127.0.0.1:0", "--keepalive", "1000,1000"][..],
        // Keepalive is in whole seconds in the kernel: the library rejects 1.5 s by name.
        &["--listen", "127.0.0.1:0", "--keepalive", "1500,1000,3"][..],
    ] {
        let out = Command::new(example_binary("echo_server"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "args {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("usage: echo_server --listen ADDR"),
            "{stderr}"
        );
    }
}

#[test]
fn echoes_and_closes_its_side_on_eof() {
    require!(Need::Tool("ss"));
    let server = Server::start(&[]);
    let mut client = server.connect();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    client.write_all(&data).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    assert!(echoed == data, "echo differs");
    // The server shut down and dropped its stream: nothing of it left but TIME_WAIT.
    wait_until(Duration::from_secs(5), "server socket gone", || {
        ss_count(server.port, "connected") == ss_count(server.port, "time-wait")
    });
}

#[test]
fn leak_is_reaped_with_hygiene_and_stays_without() {
    require!(Need::Tool("ss"));
    let hygiene = Server::start(&["--leak", "--close-wait-timeout-ms", "300"]);
    let plain = Server::start(&["--leak", "--no-hygiene"]);
    let mut clients = Vec::new();
    for server in [&hygiene, &plain] {
        let mut c = server.connect();
        c.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        c.shutdown(Shutdown::Write).unwrap();
        clients.push(c);
    }
    wait_until(Duration::from_secs(3), "plain server in CLOSE_WAIT", || {
        ss_count(plain.port, "close-wait") == 1
    });
    let took = wait_until(Duration::from_secs(3), "hygiene reaps CLOSE_WAIT", || {
        ss_count(hygiene.port, "close-wait") == 0
    });
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The leaked client reads the server's FIN.
    let mut rest = Vec::new();
    clients[0].read_to_end(&mut rest).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ss_count(plain.port, "close-wait"),
        1,
        "plain tokio keeps the leak"
    );
}

#[test]
fn stats_every_prints_json_lines() {
    let mut server = Server::start(&["--stats-every-ms", "100"]);
    let mut c = server.connect();
    c.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).unwrap();
    let stderr = server.child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = lines.next().expect("stderr open").unwrap();
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
        assert!(line.contains("\"closed_by_reason\""), "{line}");
        if line.contains("\"accepted\":1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stats line with the connection"
        );
    }
}

#[test]
fn max_connections_holds_the_next_client_in_the_backlog() {
    let server = Server::start(&["--max-connections", "1"]);
    let mut first = server.connect();
    first.write_all(b"a").unwrap();
    let mut b = [0u8; 1];
    first.read_exact(&mut b).unwrap();
    // The second connects (kernel backlog) but is not accepted: no echo.
    let mut second = server.connect();
    second.write_all(b"b").unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(
        second.read_exact(&mut b).is_err(),
        "second served too early"
    );
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    second.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"b");
}

/// The classic leak behind `serve`, closed by `idle_timeout`: the library aborts the
/// stuck handler's task, so the socket is an orphan after our FIN; the clients read it
/// and never close. `fin_wait_timeout` still bounds every one of them.
#[test]
fn leaked_connections_closed_for_idleness_do_not_linger_in_fin_wait_2() {
    require!(Need::Tool("ss"));
    let server = Server::start(&[
        "--leak",
        "--idle-timeout-ms",
        "300",
        "--fin-wait-timeout-ms",
        "500",
    ]);
    let connected = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = server.connect();
        c.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        clients.push(c);
    }
    for c in &mut clients {
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap(); // our FIN; no FIN back
    }
    // idle 300 ms (+1/8) + fin-wait 500 ms rounded up to 1 s + slack.
    let took = wait_until(Duration::from_secs(4), "no server socket left", || {
        ss_count(server.port, "connected") == 0
    });
    eprintln!(
        "FIN_WAIT_2 gone {:?} after connect ({took:?} of waiting)",
        connected.elapsed()
    );
    assert!(
        connected.elapsed() < Duration::from_millis(2500),
        "{:?}",
        connected.elapsed()
    );
}
