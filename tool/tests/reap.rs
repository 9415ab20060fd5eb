//! Reaping lingering sockets of any process with netlink `SOCK_DESTROY`: what the owner
//! and the peer see afterwards (library), and the `tcp-hygiene reap` command against a
//! server this crate did not build — a Python server that accepts and never closes —
//! over IPv4 and IPv6, as root and as an unprivileged user.
//!
//! Destroying needs root (CAP_NET_ADMIN), and so does switching to an unprivileged user:
//! without root those tests skip with a line saying so, and fail instead under
//! `TCP_HYGIENE_SYSTEM_TESTS=1` (as in CI).

mod support;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::Duration;

use support::census::{loopback_connection, n, ss_here, wait_for_ss};
use support::{require, Need};
use tcp_hygiene_cli::{reap, KernelState, ReapFilter, ReapOutcome};

/// After a reap the owner keeps its descriptor; its reads return EOF, its first write
/// fails with ECONNABORTED and the next with EPIPE; the peer gets a RST.
#[test]
fn what_the_owner_and_the_peer_see_after_a_reap() {
    require!(Need::Root, Need::Tool("ss"));
    let (listener, mut client, mut server) = loopback_connection("127.0.0.1:0");
    let port = listener.local_addr().unwrap().port();
    client.shutdown(Shutdown::Write).unwrap();
    wait_for_ss(port, "CLOSE_WAIT", |v| n(v, "CLOSE_WAIT") == 1);
    let fd_link = format!("/proc/self/fd/{}", server.as_raw_fd());
    let socket_inode = fs::read_link(&fd_link).unwrap();

    let report = reap(&ReapFilter::new(port, Duration::ZERO)).unwrap();
    assert_eq!((report.reaped(), report.matched()), (1, 1), "{report}");
    let victim = &report.victims[0];
    assert_eq!(victim.state, KernelState::CloseWait);
    assert_eq!(victim.peer, client.local_addr().unwrap());
    assert_eq!(victim.outcome, ReapOutcome::Destroyed);
    assert!(victim.owners.iter().any(|o| o.pid == std::process::id()));

    assert_eq!(n(&ss_here(port), "CLOSE_WAIT"), 0, "the socket left ss");
    assert_eq!(
        fs::read_link(&fd_link).unwrap(),
        socket_inode,
        "the descriptor is still open, on the same socket"
    );
    assert_eq!(server.read(&mut [0u8; 8]).unwrap(), 0, "reads return EOF");
    let first = server.write(b"late reply").unwrap_err();
    assert_eq!(first.raw_os_error(), Some(libc::ECONNABORTED), "{first}");
    let second = server.write(b"again").unwrap_err();
    assert_eq!(second.kind(), ErrorKind::BrokenPipe, "{second}");
    let peer = client.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(
        peer.kind(),
        ErrorKind::ConnectionReset,
        "the peer got a RST: {peer}"
    );
}

/// A socket its owner still holds in FIN_WAIT_1 or FIN_WAIT_2 (it shut down writing and
/// waits to read the rest): after a reap its reads fail with ECONNABORTED, not EOF, and
/// the peer gets a RST.
#[test]
fn a_held_fin_wait_2_reads_econnaborted_after_a_reap() {
    require!(Need::Root, Need::Tool("ss"));
    let (listener, mut client, mut server) = loopback_connection("127.0.0.1:0");
    let port = listener.local_addr().unwrap().port();
    server.shutdown(Shutdown::Write).unwrap();
    wait_for_ss(port, "a held FIN_WAIT_2", |v| {
        n(v, "FIN_WAIT_2") == 1 && v.orphans == 0
    });
    let filter = ReapFilter::new(port, Duration::ZERO).with_state(KernelState::FinWait2);
    let report = reap(&filter).unwrap();
    assert_eq!((report.reaped(), report.matched()), (1, 1), "{report}");
    let read = server.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(read.raw_os_error(), Some(libc::ECONNABORTED), "{read}");
    // The client had the FIN (its reads return EOF), then the RST: it leaves CLOSE_WAIT
    // with the error a reset leaves there, EPIPE.
    let client_port = client.local_addr().unwrap().port();
    wait_for_ss(client_port, "the client reset", |v| n(v, "CLOSE_WAIT") == 0);
    assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0);
    let reset = client.take_error().unwrap().expect("the RST's error");
    assert_eq!(reset.raw_os_error(), Some(libc::EPIPE), "{reset}");
}

/// An orphaned FIN_WAIT_2 (its process closed it; the kernel parks it in a time-wait
/// slot) sends nothing when destroyed: the peer stays in CLOSE_WAIT, unaware, and learns
/// only from the RST its next write draws.
#[test]
fn a_destroyed_orphaned_fin_wait_2_sends_the_peer_no_rst() {
    require!(Need::Root, Need::Tool("ss"));
    let (listener, mut client, server) = loopback_connection("127.0.0.1:0");
    let port = listener.local_addr().unwrap().port();
    let client_port = client.local_addr().unwrap().port();
    drop(server);
    wait_for_ss(port, "an orphaned FIN_WAIT_2", |v| {
        n(v, "FIN_WAIT_2") == 1 && v.orphans == 1
    });
    let filter = ReapFilter::new(port, Duration::ZERO).with_state(KernelState::FinWait2);
    let report = reap(&filter).unwrap();
    assert_eq!((report.reaped(), report.matched()), (1, 1), "{report}");
    assert_eq!(n(&ss_here(port), "FIN_WAIT_2"), 0);
    // No RST: the client is still in CLOSE_WAIT a moment later, and reads the FIN's EOF,
    // not a reset.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        n(&ss_here(client_port), "CLOSE_WAIT"),
        1,
        "the peer was reset"
    );
    assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0);
    assert!(client.take_error().unwrap().is_none());
    // Its next write reaches a host without the connection, which answers with a RST.
    client.write_all(b"hello?").unwrap();
    wait_for_ss(client_port, "the RST drawn by the write", |v| {
        n(v, "CLOSE_WAIT") == 0
    });
}

/// Nothing lingered long enough, a dry run, and a state outside the four.
#[test]
fn reap_leaves_young_sockets_and_dry_runs_alone() {
    require!(Need::Tool("ss"));
    let (listener, client, _server) = loopback_connection("[::1]:0");
    let port = listener.local_addr().unwrap().port();
    client.shutdown(Shutdown::Write).unwrap();
    wait_for_ss(port, "CLOSE_WAIT", |v| n(v, "CLOSE_WAIT") == 1);
    let young = reap(&ReapFilter::new(port, Duration::from_secs(60))).unwrap();
    assert_eq!((young.matched(), young.younger), (0, 1), "{young}");
    let dry = reap(&ReapFilter::new(port, Duration::ZERO).with_dry_run(true)).unwrap();
    assert_eq!(dry.victims[0].outcome, ReapOutcome::WouldDestroy);
    assert_eq!(dry.to_string(), "reaped 0 of 1 (dry run: would destroy 1)");
    assert_eq!(n(&ss_here(port), "CLOSE_WAIT"), 1);
}

mod cli {
    //! `tcp-hygiene reap` against a Python server.

    use std::collections::BTreeSet;
    use std::io::{BufRead, BufReader};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    use super::*;
    use support::tool::{self, UnprivilegedTool};

    /// Accepts forever and keeps every connection, never reading, never closing: the
    /// CLOSE_WAIT leak of a server this crate did not build. With a second argument N,
    /// keepalive probes every N seconds on each connection (Go's default is 15 s): their
    /// replies reset the kernel's `tcpi_last_ack_recv`.
    const LEAKY_SERVER: &str = r#"
import socket, sys
host = sys.argv[1]
keepalive = int(sys.argv[2]) if len(sys.argv) > 2 else 0
family = socket.AF_INET6 if ":" in host else socket.AF_INET
listener = socket.socket(family, socket.SOCK_STREAM)
listener.bind((host, 0))
listener.listen(1024)
print(listener.getsockname()[1], flush=True)
held = []
while True:
    connection, _ = listener.accept()
    if keepalive:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, keepalive)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, keepalive)
    held.append(connection)
"#;

    /// The Python server, killed on drop.
    struct PythonServer {
        child: Child,
        addr: SocketAddr,
    }

    impl PythonServer {
        fn start(ip: IpAddr) -> Self {
            Self::start_with(ip, &[])
        }

        fn start_with(ip: IpAddr, extra: &[&str]) -> Self {
            let mut child = Command::new("python3")
                .args(["-c", LEAKY_SERVER, &ip.to_string()])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3 must be installed (.ci/run installs it)");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let port = line.trim().parse().unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the Python server printed {line:?}, not its port")
            });
            PythonServer {
                child,
                addr: SocketAddr::new(ip, port),
            }
        }
    }

    impl Drop for PythonServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Sockets older than this are reaped; the young ones must stay younger while the
    /// test runs four reaps, so it is generous.
    const IDLE: Duration = Duration::from_secs(3);

    /// Connects `count` clients that half-close (the server's side goes to CLOSE_WAIT).
    fn half_closed_clients(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
        (0..count)
            .map(|_| {
                let client = TcpStream::connect(addr).unwrap();
                client.shutdown(Shutdown::Write).unwrap();
                client
            })
            .collect()
    }

    /// The peers of the server's CLOSE_WAIT sockets, from `ss`.
    fn close_wait_peers(port: u16) -> BTreeSet<u16> {
        let mut ss = Command::new("ss");
        ss.args([
            "-Htan",
            "state",
            "close-wait",
            &format!("( sport = :{port} )"),
        ]);
        support::ss_output(ss)
            .iter()
            .map(|line| {
                let peer = line.split_whitespace().last().unwrap();
                peer.rsplit(':').next().unwrap().parse().unwrap()
            })
            .collect()
    }

    fn ports(clients: &[TcpStream]) -> BTreeSet<u16> {
        clients
            .iter()
            .map(|c| c.local_addr().unwrap().port())
            .collect()
    }

    /// The last line of a reap's output, and the per-socket lines.
    fn summary(stdout: &str) -> (&str, Vec<&str>) {
        let mut lines: Vec<&str> = stdout.lines().collect();
        let last = lines.pop().expect("a summary line");
        (last, lines)
    }

    fn reap_a_python_server(ip: IpAddr) {
        let server = PythonServer::start(ip);
        let port = server.addr.port();
        let port_arg = port.to_string();
        let idle_arg = IDLE.as_millis().to_string();
        let reap_args = ["reap", "--port", &port_arg, "--idle-ms", &idle_arg];

        let old = half_closed_clients(server.addr, 10);
        wait_for_ss(port, "10 CLOSE_WAIT", |v| n(v, "CLOSE_WAIT") == 10);
        let old_made = Instant::now();
        std::thread::sleep(IDLE + Duration::from_secs(1));
        let young = half_closed_clients(server.addr, 5);
        let young_made = Instant::now();
        let _established: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(server.addr).unwrap())
            .collect();
        wait_for_ss(port, "15 CLOSE_WAIT and 3 ESTABLISHED", |v| {
            n(v, "CLOSE_WAIT") == 15 && n(v, "ESTABLISHED") == 3
        });
        let all: BTreeSet<u16> = ports(&old).union(&ports(&young)).copied().collect();
        assert_eq!(close_wait_peers(port), all);

        // A dry run destroys nothing, and lists the 10 old ones, oldest first.
        let dry = tool::stdout(&[&reap_args[..], &["--dry-run"]].concat());
        let (last, lines) = summary(&dry);
        assert_eq!(
            last, "reaped 0 of 10 (dry run: would destroy 10); 5 younger than 3.0 s left alone",
            "{dry}"
        );
        assert_eq!(lines.len(), 10, "{dry}");
        let pid = server.child.id().to_string();
        for line in &lines {
            assert!(line.starts_with("CLOSE_WAIT "), "{line}");
            assert!(line.ends_with("would destroy (dry run)"), "{line}");
            assert!(line.contains(&format!("owner {pid} ")), "{line}");
        }
        assert_eq!(close_wait_peers(port), all, "a dry run destroyed something");

        // Unprivileged: refused with the capability it needs, nothing destroyed.
        let unprivileged = UnprivilegedTool::new().run(&reap_args);
        let stderr = String::from_utf8_lossy(&unprivileged.stderr);
        assert!(!unprivileged.status.success(), "{stderr}");
        assert!(
            stderr.contains("needs CAP_NET_ADMIN (run as root)"),
            "{stderr}"
        );
        assert_eq!(
            close_wait_peers(port),
            all,
            "an unprivileged reap destroyed something"
        );

        // A limit takes the oldest first; the rest are reaped by the next run.
        let limited = tool::stdout(&[&reap_args[..], &["--limit", "4"]].concat());
        let (last, lines) = summary(&limited);
        assert!(
            last.starts_with("reaped 4 of 10; 6 over the limit left alone"),
            "{limited}"
        );
        assert_eq!(
            lines.iter().filter(|l| l.ends_with(" destroyed")).count(),
            4
        );
        assert_eq!(close_wait_peers(port).len(), 11);
        let rest = tool::stdout(&reap_args);
        let (last, _) = summary(&rest);
        assert_eq!(
            last, "reaped 6 of 6; 5 younger than 3.0 s left alone",
            "{rest}"
        );
        assert!(
            young_made.elapsed() < IDLE,
            "the young sockets aged past the threshold while the test ran ({:?}); the checks \
             below would not mean anything",
            young_made.elapsed()
        );

        // Exactly the 10 old ones are gone; their clients got a RST.
        assert_eq!(close_wait_peers(port), ports(&young));
        let view = ss_here(port);
        assert_eq!(
            (n(&view, "CLOSE_WAIT"), n(&view, "ESTABLISHED")),
            (5, 3),
            "{view:?}"
        );
        for mut client in old {
            let err = client.read(&mut [0u8; 8]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
        }
        assert!(old_made.elapsed() >= IDLE);
    }

    #[test]
    fn reaps_exactly_the_old_close_wait_of_a_python_server_ipv4() {
        require!(Need::Root, Need::Tool("python3"), Need::Tool("ss"));
        reap_a_python_server(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn reaps_exactly_the_old_close_wait_of_a_python_server_ipv6() {
        require!(Need::Root, Need::Tool("python3"), Need::Tool("ss"));
        reap_a_python_server(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    /// An orphaned FIN_WAIT_2 (in a time-wait slot, no descriptor) is reaped by state.
    #[test]
    fn reaps_orphaned_fin_wait_2() {
        require!(Need::Root, Need::Tool("ss"));
        let (listener, _client, server) = loopback_connection("127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        drop(server);
        wait_for_ss(port, "an orphaned FIN_WAIT_2", |v| {
            n(v, "FIN_WAIT_2") == 1 && v.orphans == 1
        });
        let out = tool::stdout(&[
            "reap",
            "--port",
            &port.to_string(),
            "--idle-ms",
            "0",
            "--state",
            "fin-wait-2",
        ]);
        let (last, lines) = summary(&out);
        assert_eq!(last, "reaped 1 of 1", "{out}");
        assert!(
            lines[0].starts_with("FIN_WAIT_2 ") && lines[0].contains("owner none (orphan)"),
            "{out}"
        );
        assert_eq!(n(&ss_here(port), "FIN_WAIT_2"), 0);
    }

    /// How long the guard runs against the leak: a minute, as an operator would watch it.
    const GUARD_RUN: Duration = Duration::from_secs(60);
    /// The guard's threshold and interval.
    const GUARD_IDLE: Duration = Duration::from_secs(2);
    const GUARD_EVERY: Duration = Duration::from_millis(500);
    /// The leak: one new CLOSE_WAIT every 100 ms.
    const LEAK_EVERY: Duration = Duration::from_millis(100);

    /// A server that leaks CLOSE_WAIT at 10 a second, with 1 s keepalive probes that keep
    /// resetting the kernel's age of each socket. `reap --every 0.5 --idle-ms 2000` holds
    /// the pile under its bound (10/s × (2 s + 0.5 s), plus a margin) for a minute —
    /// unguarded it would reach 600 — reaps only sockets that had been in CLOSE_WAIT 2 s,
    /// leaves every younger one alone, prints one summary line a round, and stops with
    /// status 0 on SIGTERM.
    #[test]
    fn the_guard_holds_a_leaking_servers_close_wait_pile_under_its_bound() {
        require!(Need::Root, Need::Tool("python3"), Need::Tool("ss"));
        let server = PythonServer::start_with(IpAddr::V4(Ipv4Addr::LOCALHOST), &["1"]);
        let port = server.addr.port();

        // Keepalive hides the age from a single reap: 10 sockets 3 s in CLOSE_WAIT look
        // younger than 2 s to it.
        let early = half_closed_clients(server.addr, 10);
        wait_for_ss(port, "10 CLOSE_WAIT", |v| n(v, "CLOSE_WAIT") == 10);
        std::thread::sleep(Duration::from_secs(3));
        let one_shot = tool::stdout(&[
            "reap",
            "--port",
            &port.to_string(),
            "--idle-ms",
            "2000",
            "--dry-run",
            "--json",
        ]);
        let one_shot: serde_json::Value = serde_json::from_str(&one_shot).unwrap();
        assert_eq!(
            one_shot["matched"], 0,
            "keepalive replies reset the age: {one_shot}"
        );
        assert_eq!(one_shot["younger"], 10, "{one_shot}");

        let guard = Command::new(env!("CARGO_BIN_EXE_tcp-hygiene"))
            .args([
                "reap",
                "--port",
                &port.to_string(),
                "--idle-ms",
                &GUARD_IDLE.as_millis().to_string(),
                "--every",
                &GUARD_EVERY.as_secs_f64().to_string(),
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let guard_started = Instant::now();
        let mut guard = KillOnDrop(Some(guard));
        // Read as it goes: a full pipe would block the guard.
        let mut guard_stdout = guard.0.as_mut().unwrap().stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            guard_stdout.read_to_string(&mut text).unwrap();
            text
        });

        // The leak, with when each client's FIN went out and from which local port (a
        // port comes back to a later client once its socket is reaped), and the pile's
        // size from `ss` as it goes.
        let fin_of_early = SystemTime::now() - Duration::from_secs(3);
        let mut clients: Vec<(SystemTime, u16, TcpStream)> = early
            .into_iter()
            .map(|c| (fin_of_early, c.local_addr().unwrap().port(), c))
            .collect();
        let mut largest = 0;
        // In a steady state the pile holds what leaked in the last 2.5 s (25); twice that
        // leaves room for a round late on a loaded machine.
        let bound = 2 * (GUARD_IDLE + GUARD_EVERY).as_millis() / LEAK_EVERY.as_millis();
        let mut sizes = Vec::new();
        let mut next = Instant::now();
        while guard_started.elapsed() < GUARD_RUN {
            let client = TcpStream::connect(server.addr).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let local = client.local_addr().unwrap().port();
            clients.push((SystemTime::now(), local, client));
            let size = n(&ss_here(port), "CLOSE_WAIT");
            largest = largest.max(size);
            sizes.push(size);
            assert!(
                size <= bound as u64,
                "{size} CLOSE_WAIT after {:?} of the guard: over its bound {bound}",
                guard_started.elapsed()
            );
            next += LEAK_EVERY;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let leaked = clients.len() - 10;
        let stopped_at = SystemTime::now();
        rustix::process::kill_process(guard.pid(), rustix::process::Signal::TERM).unwrap();
        let out = guard.wait();
        let stdout = reader.join().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("stopped by a signal after"), "{stderr}");

        // One line a round, about every 0.5 s; every destroyed socket had been seen 2 s in
        // CLOSE_WAIT, and by our own clock its FIN had gone out 2 s before the round.
        let rounds: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let expected_rounds = (GUARD_RUN.as_millis() / GUARD_EVERY.as_millis()) as usize;
        assert!(
            rounds.len() + 5 >= expected_rounds && rounds.len() <= expected_rounds + 3,
            "{} rounds in {GUARD_RUN:?}",
            rounds.len()
        );
        let mut reaped = vec![false; clients.len()];
        for round in &rounds {
            // When the round ended, on the wall clock both processes share: its sockets
            // were dated and destroyed before then.
            let round_at = UNIX_EPOCH
                + Duration::from_millis(
                    round["at_unix_ms"].as_u64().unwrap() + round["took_ms"].as_u64().unwrap(),
                );
            for victim in round["victims"].as_array().unwrap() {
                assert_eq!(victim["outcome"], "destroyed", "{victim}");
                assert!(victim["idle_ms"].as_u64().unwrap() >= 2_000, "{victim}");
                let peer: SocketAddr = victim["peer"].as_str().unwrap().parse().unwrap();
                // The client this was: the earliest not yet reaped with this port (a port
                // comes back to a later client only once its socket is gone).
                let i = clients
                    .iter()
                    .enumerate()
                    .position(|(i, (_, local, _))| *local == peer.port() && !reaped[i])
                    .unwrap_or_else(|| panic!("no client of ours: {victim}"));
                let fin = clients[i].0;
                assert!(
                    round_at + Duration::from_millis(20) >= fin + GUARD_IDLE,
                    "reaped {:?} after its FIN: {victim}",
                    round_at.duration_since(fin).unwrap_or_default()
                );
                reaped[i] = true;
            }
        }
        // The early ten and every leaked socket old enough before the guard stopped were
        // reaped; the young ones were left alone.
        let old_enough = GUARD_IDLE + GUARD_EVERY + Duration::from_millis(500);
        let mut young_left = 0;
        for (i, (fin, _, _)) in clients.iter().enumerate() {
            let age = stopped_at.duration_since(*fin).unwrap_or_default();
            if age > old_enough {
                assert!(reaped[i], "a socket {age:?} old was not reaped");
            }
            if age < GUARD_IDLE {
                assert!(!reaped[i], "a socket {age:?} old was reaped");
                young_left += 1;
            }
        }
        assert!(young_left >= 10, "{young_left} young sockets left alone");
        sizes.sort_unstable();
        eprintln!(
            "guard: {leaked} leaked in {GUARD_RUN:?} after 10 early ones, {} reaped over {} \
             rounds, the pile's median {} and largest {largest} (bound {bound}), \
             {young_left} young ones left alone",
            reaped.iter().filter(|r| **r).count(),
            rounds.len(),
            sizes[sizes.len() / 2]
        );
    }

    /// A child killed on drop, unless waited for.
    struct KillOnDrop(Option<Child>);

    impl KillOnDrop {
        fn pid(&self) -> rustix::process::Pid {
            rustix::process::Pid::from_child(self.0.as_ref().unwrap())
        }

        fn wait(mut self) -> std::process::Output {
            self.0.take().unwrap().wait_with_output().unwrap()
        }
    }

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(mut child) = self.0.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// A client's pile: connections this process opened to a server that closed them,
    /// which it never closes. `reap --remote-port` destroys them; `--port` with the
    /// server's port does not touch them; `--pid` narrows to a process.
    #[test]
    fn reaps_a_clients_close_wait_by_remote_port_and_pid() {
        require!(Need::Root, Need::Tool("ss"));
        let remote = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let remote_port = remote.local_addr().unwrap().port();
        let mut pool: Vec<TcpStream> = (0..4)
            .map(|_| {
                let client = TcpStream::connect(remote.local_addr().unwrap()).unwrap();
                drop(remote.accept().unwrap().0);
                client
            })
            .collect();
        let dport = format!("dport = :{remote_port}");
        let pile = || {
            let mut ss = Command::new("ss");
            ss.args(["-Htan", "state", "close-wait", &dport]);
            support::ss_output(ss).len()
        };
        let started = Instant::now();
        while pile() < 4 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no client CLOSE_WAIT"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The census groups them by the remote endpoint, worded for a client.
        let census = support::tool::census_json(&[]);
        let group = census["remotes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["remote"] == format!("127.0.0.1:{remote_port}"))
            .unwrap_or_else(|| panic!("no group for the remote endpoint"));
        assert_eq!(group["states"]["CLOSE_WAIT"], 4, "{group}");
        assert_eq!(group["by_process"][0]["pid"], std::process::id(), "{group}");
        assert_eq!(group["by_process"][0]["states"]["CLOSE_WAIT"], 4, "{group}");

        // The server's port names no client socket.
        let remote_arg = remote_port.to_string();
        let by_local = tool::stdout(&["reap", "--port", &remote_arg, "--idle-ms", "0"]);
        assert_eq!(summary(&by_local).0, "reaped 0 of 0", "{by_local}");
        // Another process's sockets only: none of these.
        let other = tool::stdout(&[
            "reap",
            "--remote-port",
            &remote_arg,
            "--idle-ms",
            "0",
            "--pid",
            "1",
        ]);
        assert_eq!(summary(&other).0, "reaped 0 of 0", "{other}");
        assert_eq!(pile(), 4);
        // This process's: all four, as JSON.
        let me = std::process::id().to_string();
        let json = tool::stdout(&[
            "reap",
            "--remote-port",
            &remote_arg,
            "--idle-ms",
            "0",
            "--pid",
            &me,
            "--json",
        ]);
        let report: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (report["matched"].as_u64(), report["reaped"].as_u64()),
            (Some(4), Some(4)),
            "{report}"
        );
        for victim in report["victims"].as_array().unwrap() {
            assert_eq!(victim["state"], "CLOSE_WAIT");
            assert_eq!(victim["peer"], format!("127.0.0.1:{remote_port}"));
            assert_eq!(victim["owners"][0]["pid"], std::process::id());
        }
        assert_eq!(pile(), 0);
        for client in &mut pool {
            assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0, "EOF after the reap");
        }
    }
}
