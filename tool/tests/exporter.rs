//! `tcp-hygiene exporter`: its `/metrics` checked by `promtool check metrics`, scraped by
//! a real Prometheus server (Debian's `prometheus` package) whose query answers are
//! compared with `ss`, and stopped cleanly by SIGTERM.
//!
//! Without `prometheus`, `promtool` or `ss` on PATH a test skips with a line saying so,
//! and fails instead under `TCP_HYGIENE_SYSTEM_TESTS=1` (as in CI, which installs them).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{fs, thread};

use support::census::wait_until;
use support::{require, ss_output, Need};

/// A child process killed on drop (a test that fails leaves nothing running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The exporter, started on a free loopback port; its address from the line it prints
/// first.
fn start_exporter(extra: &[&str]) -> (Running, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcp-hygiene"))
        .args(["exporter", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the exporter");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("the first line names the address: {line:?}"));
    (Running(child), addr)
}

/// One HTTP/1.0 GET; the status line and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a header");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `n` connections to a listener on loopback whose server side stays in CLOSE_WAIT (the
/// clients closed, the server holds its sockets), and `n` more whose *client* side is in
/// CLOSE_WAIT (the server closed, this process never closes its client sockets: a pool
/// that keeps connections its server closed).
struct Piles {
    server_port: u16,
    remote_port: u16,
    _held: Vec<TcpStream>,
    _listeners: [TcpListener; 2],
}

fn piles(n: usize) -> Piles {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut held = Vec::new();
    for _ in 0..n {
        let client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        held.push(server.accept().unwrap().0);
        client.shutdown(Shutdown::Write).unwrap();
        held.push(client);
        // The remote server closes at once; our client socket is left in CLOSE_WAIT.
        held.push(TcpStream::connect(remote.local_addr().unwrap()).unwrap());
        drop(remote.accept().unwrap().0);
    }
    Piles {
        server_port: server.local_addr().unwrap().port(),
        remote_port: remote.local_addr().unwrap().port(),
        _held: held,
        _listeners: [server, remote],
    }
}

/// `ss`'s count of CLOSE_WAIT sockets with local port `sport` or remote port `dport`.
fn ss_close_wait(filter: &str) -> u64 {
    let mut ss = Command::new("ss");
    ss.args(["-Htan", "state", "close-wait", filter]);
    ss_output(ss).len() as u64
}

fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_are_clean_for_promtool_and_match_ss() {
    require!(Need::Tool("promtool"), Need::Tool("ss"));
    let p = piles(5);
    let (_exporter, addr) = start_exporter(&[]);
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let server = format!(
        "tcp_hygiene_sockets{{side=\"server\",port=\"{}\",state=\"CLOSE_WAIT\"}}",
        p.server_port
    );
    let client = format!(
        "tcp_hygiene_sockets{{side=\"client\",port=\"{}\",state=\"CLOSE_WAIT\"}}",
        p.remote_port
    );
    assert_eq!(metric_value(&body, &server), Some(5.0), "{body}");
    assert_eq!(metric_value(&body, &client), Some(5.0), "{body}");
    assert_eq!(ss_close_wait(&format!("sport = :{}", p.server_port)), 5);
    assert_eq!(ss_close_wait(&format!("dport = :{}", p.remote_port)), 5);
    for family in [
        "tcp_hygiene_orphans",
        "tcp_hygiene_lingered_seconds_max",
        "tcp_hygiene_accept_queue",
        "tcp_hygiene_accept_backlog",
        "tcp_hygiene_listen_overflows_total",
        "tcp_hygiene_census_duration_seconds",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family}: {body}"
        );
    }
    // No label holds the client sockets' ephemeral local ports.
    let ss_locals: Vec<String> = {
        let mut ss = Command::new("ss");
        ss.args([
            "-Htan",
            "state",
            "close-wait",
            &format!("dport = :{}", p.remote_port),
        ]);
        ss_output(ss)
            .iter()
            .map(|l| {
                l.split_whitespace()
                    .nth(2)
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    for local in ss_locals {
        assert!(
            !body.contains(&format!("port=\"{local}\"")),
            "ephemeral local port {local} in a label"
        );
    }
    let (status, _) = get(addr, "/nowhere");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[test]
fn sigterm_stops_the_exporter_with_status_0() {
    let (mut exporter, addr) = start_exporter(&[]);
    assert_eq!(get(addr, "/").0, "HTTP/1.1 200 OK");
    let pid = rustix::process::Pid::from_child(&exporter.0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = exporter.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still running");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status}");
}

/// `--netns`: the metrics of another namespace's sockets, as its `ss` counts them, and
/// none of the caller's.
#[test]
fn the_exporter_counts_inside_a_namespace() {
    require!(Need::Netns, Need::Tool("ss"));
    let pair = support::netns::NetPair::new();
    let listener = pair.listen();
    listener.set_nonblocking(false).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..6 {
        let client = pair.connect(addr);
        held.push(listener.accept().unwrap().0);
        client.shutdown(Shutdown::Write).unwrap();
        held.push(client);
    }
    let server_ss = || pair.server_ss(addr.port(), "close-wait").len() as f64;
    wait_until(Duration::from_secs(10), "6 CLOSE_WAIT", || {
        (server_ss() == 6.0, server_ss())
    });
    let (_exporter, target) = start_exporter(&["--netns", &pair.server_ns]);
    let (_, body) = get(target, "/metrics");
    let series = format!(
        "tcp_hygiene_sockets{{side=\"server\",port=\"{}\",state=\"CLOSE_WAIT\"}}",
        addr.port()
    );
    assert_eq!(metric_value(&body, &series), Some(server_ss()), "{body}");
    // The exporter's own listener lives in the caller's namespace: not counted there.
    assert!(
        !body.contains(&format!("port=\"{}\"", target.port())),
        "{body}"
    );
}

#[test]
fn an_unreachable_namespace_fails_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_tcp-hygiene"))
        .args([
            "exporter",
            "--listen",
            "127.0.0.1:0",
            "--netns",
            "tcp-hygiene-no-such-ns",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tcp-hygiene-no-such-ns"));
    assert!(
        out.stdout.is_empty(),
        "no 'listening on' before the failure"
    );
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A real Prometheus server scrapes the exporter every second; its answer to a query
/// about each pile equals `ss`'s count, and the target is up.
#[test]
fn prometheus_scrapes_the_exporter_and_its_queries_match_ss() {
    require!(Need::Tool("prometheus"), Need::Tool("ss"));
    let p = piles(7);
    let (_exporter, target) = start_exporter(&[]);
    let dir = TempDir::new("tcp-hygiene-prometheus");
    let config = dir.path().join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: tcp-hygiene\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let web = {
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    let log = fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Running(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let query = |q: &str| -> Option<f64> {
        let mut stream = TcpStream::connect(web).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET /api/v1/query?query={} HTTP/1.0\r\n\r\n",
            encode(q)
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let body = response.split_once("\r\n\r\n")?.1;
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let server_query = format!(
        "tcp_hygiene_sockets{{side=\"server\",port=\"{}\",state=\"CLOSE_WAIT\"}}",
        p.server_port
    );
    let client_query = format!(
        "tcp_hygiene_sockets{{side=\"client\",port=\"{}\",state=\"CLOSE_WAIT\"}}",
        p.remote_port
    );
    let log_path = dir.path().join("prometheus.log");
    wait_until(
        Duration::from_secs(60),
        "Prometheus to scrape the exporter",
        || {
            let seen = (
                query("up{job=\"tcp-hygiene\"}"),
                query(&server_query),
                query(&client_query),
            );
            let ss = (
                ss_close_wait(&format!("sport = :{}", p.server_port)),
                ss_close_wait(&format!("dport = :{}", p.remote_port)),
            );
            let ok =
                seen.0 == Some(1.0) && seen.1 == Some(ss.0 as f64) && seen.2 == Some(ss.1 as f64);
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<String> = log.lines().rev().take(5).map(str::to_owned).collect();
            (ok, (seen, ss, tail))
        },
    );
    // The lingering maximum is there too, and an alert-style query works.
    let older = query(&format!(
        "max(tcp_hygiene_lingered_seconds_max{{side=\"server\",port=\"{}\",state=\"CLOSE_WAIT\"}}) >= 0",
        p.server_port
    ));
    assert!(older.is_some(), "no lingering maximum");
}
