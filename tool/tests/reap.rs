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
    use std::time::Instant;

    use super::*;
    use support::tool::{self, UnprivilegedTool};

    /// Accepts forever and keeps every connection, never reading, never closing: the
    /// CLOSE_WAIT leak of a server this crate did not build.
    const LEAKY_SERVER: &str = r#"
import socket, sys
host = sys.argv[1]
family = socket.AF_INET6 if ":" in host else socket.AF_INET
listener = socket.socket(family, socket.SOCK_STREAM)
listener.bind((host, 0))
listener.listen(128)
print(listener.getsockname()[1], flush=True)
held = []
while True:
    connection, _ = listener.accept()
    held.append(connection)
"#;

    /// The Python server, killed on drop.
    struct PythonServer {
        child: Child,
        addr: SocketAddr,
    }

    impl PythonServer {
        fn start(ip: IpAddr) -> Self {
            let mut child = Command::new("python3")
                .args(["-c", LEAKY_SERVER, &ip.to_string()])
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
}
