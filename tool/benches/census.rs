//! The census on a busy host: one port's census, and the whole host's, read through
//! netlink sock_diag and through `/proc/net/tcp`, with about 20,000 sockets in the tables.
//!
//! ```text
//! cargo bench -p tcp-hygiene-cli --bench census                  # 20,000 sockets, 40 rounds
//! cargo bench -p tcp-hygiene-cli --bench census -- --quick       # 10 rounds (about 10 s)
//! cargo bench -p tcp-hygiene-cli --bench census -- --sockets N   # any other count
//! ```
//!
//! `RLIMIT_NOFILE` is capped at 20,000 per process here, so the sockets are split: this
//! process accepts and holds the server ends, a child process (this binary again, chosen
//! by `TCP_HYGIENE_BENCH_ROLE=clients`) holds the client ends, with `SO_LINGER` 0 so that
//! nothing is left in `TIME_WAIT` afterwards. The port being counted holds 30 sockets
//! (a listener, 20 ESTABLISHED, 9 CLOSE_WAIT).
//!
//! Both sources run interleaved in rounds, owners not looked up (that cost is the same
//! for both and printed apart). Figures (`value <figure> <source> <µs>`, medians) and
//! `ratio <figure> sock_diag <sock_diag time / procfs time>`.

// The library's bench helpers (mode, arguments, roles, statistics, host set-up): each
// bench includes that folder as a module of its own.
#[path = "../../benches/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use common::stats::median;
use common::{host, net, Args, Mode};
use tcp_hygiene_cli::{CensusQuery, KernelState, Source};

fn main() {
    if common::role().as_deref() == Some("clients") {
        return clients_main();
    }
    let args = Args::from_env();
    let mode = args.mode();
    let (sockets, rounds): (usize, usize) = match mode {
        Mode::Smoke => (1_000, 3),
        Mode::Quick => (20_000, 10),
        Mode::Full => (20_000, 40),
    };
    let sockets = args.value("--sockets").unwrap_or(sockets);
    host::raise_nofile();
    let started = Instant::now();

    // The port being counted.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let mut held = Vec::new();
    for i in 0..29 {
        let client = TcpStream::connect(target.local_addr().unwrap()).unwrap();
        held.push(target.accept().unwrap().0);
        if i >= 20 {
            client.shutdown(Shutdown::Write).unwrap();
        }
        held.push(client);
    }

    // The crowd: every connection is two sockets.
    let connections = sockets.saturating_sub(60) / 2;
    // The largest backlog the kernel allows: the client process outruns the acceptor.
    let bulk = net::listener_with_backlog(i32::MAX);
    let bulk_addr = bulk.local_addr().unwrap();
    let acceptor = thread::spawn(move || {
        (0..connections)
            .map(|_| bulk.accept().unwrap().0)
            .collect::<Vec<_>>()
    });
    let mut child = common::self_command("clients")
        .args([bulk_addr.to_string(), connections.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client process");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready", "the client process failed");
    let servers = acceptor.join().unwrap();

    let host = CensusQuery::new().owners(false).run().unwrap();
    let in_tables = host.total() + host.count(KernelState::Listen);
    let one_port = CensusQuery::new().port(port).owners(false);
    let check = one_port.run().unwrap();
    assert_eq!(
        (
            check.count(KernelState::Established),
            check.count(KernelState::CloseWait)
        ),
        (20, 9)
    );
    println!(
        "census bench ({}): {in_tables} TCP sockets in this namespace, port {port} holds {}; {rounds} rounds; set up in {:.1} s",
        mode.label(),
        check.total() + 1,
        started.elapsed().as_secs_f64()
    );

    let figures = [
        ("census_one_port", one_port.clone()),
        ("census_host", CensusQuery::new().owners(false)),
    ];
    let mut times: Vec<[Vec<f64>; 2]> = vec![Default::default(); figures.len()];
    for _ in 0..rounds {
        for (f, (_, query)) in figures.iter().enumerate() {
            for (s, source) in [Source::SockDiag, Source::Procfs].into_iter().enumerate() {
                let query = query.clone().source(source);
                let start = Instant::now();
                let census = query.run().unwrap();
                times[f][s].push(start.elapsed().as_secs_f64() * 1e6);
                assert_eq!(census.source(), Some(source));
            }
        }
    }
    let owners = median(
        &(0..rounds.min(5))
            .map(|_| {
                let start = Instant::now();
                CensusQuery::new().port(port).run().unwrap();
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect::<Vec<_>>(),
    );

    println!();
    println!(
        "{:<18} {:>14} {:>14} {:>10}",
        "figure (µs)", "sock_diag", "procfs", "ratio"
    );
    let mut lines = Vec::new();
    for (f, (name, _)) in figures.iter().enumerate() {
        let diag = median(&times[f][0]);
        let procfs = median(&times[f][1]);
        println!(
            "{name:<18} {diag:>14.0} {procfs:>14.0} {:>10.4}",
            diag / procfs
        );
        lines.push(format!("value {name}_us sock_diag {diag:.1}"));
        lines.push(format!("value {name}_us procfs {procfs:.1}"));
        lines.push(format!("ratio {name} sock_diag {:.4}", diag / procfs));
    }
    lines.push(format!(
        "value census_one_port_with_owners_us sock_diag {owners:.1}"
    ));
    println!();
    for line in lines {
        println!("{line}");
    }
    println!("value sockets_in_tables all {in_tables}");

    // The clients reset their connections as they exit: nothing lingers in TIME_WAIT.
    drop(child.stdin.take());
    let _ = child.wait();
    drop(servers);
    drop(held);
}

/// The child: opens the connections, says `ready`, and holds them until stdin closes.
fn clients_main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().unwrap().parse().unwrap();
    let count: usize = args.next().unwrap().parse().unwrap();
    let clients: Vec<TcpStream> = (0..count)
        .map(|_| {
            let client = TcpStream::connect(addr).expect("connect");
            socket2::SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            client
        })
        .collect();
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready").unwrap();
    stdout.flush().unwrap();
    let _ = std::io::stdin().lines().count();
    drop(clients);
}
