//! Accept-loop hygiene: descriptor exhaustion never spins or kills the server, and
//! `max_connections` applies backpressure without accepting and dropping.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::example::example_binary;
use support::wait_for;
use support::{require, Need};
use tcp_hygiene::Builder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// CPU time (user + system) of process `pid`, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from 1; `after_comm` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn echo_once(s: &mut StdTcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).unwrap();
    if s.write_all(b"x").is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    s.read_exact(&mut b).is_ok()
}

/// The server runs with RLIMIT_NOFILE = 48 so `accept` hits EMFILE. While exhausted it
/// must not spin (its CPU time stays low), it must keep running, and once descriptors are
/// freed, new clients must be served.
#[test]
fn emfile_backs_off_without_spinning_and_recovers() {
    require!(Need::Tool("bash"));
    let server = example_binary("echo_server");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n 48 && exec {} --listen 127.0.0.1:0 --stats-every-ms 200",
            server.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());

    // Fill the table: 60 clients, only ~35 can be accepted.
    let mut clients: Vec<StdTcpStream> = (0..60)
        .map(|_| StdTcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let served: Vec<bool> = clients
        .iter_mut()
        .map(|c| echo_once(c, Duration::from_millis(200)))
        .collect();
    let served_count = served.iter().filter(|s| **s).count();
    assert!(
        served_count > 10 && served_count < 60,
        "served {served_count} of 60"
    );

    // Exhausted: measure CPU over 2 s.
    let cpu_before = cpu_time(child.id());
    let wall = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_time(child.id()) - cpu_before;
    let wall = wall.elapsed();
    eprintln!("CPU while exhausted: {cpu:?} over {wall:?}");
    assert!(
        cpu < Duration::from_millis(200),
        "accept loop spins: {cpu:?} CPU in {wall:?}"
    );
    assert!(child.try_wait().unwrap().is_none(), "server died");

    // Free descriptors: close the served clients; the waiting ones get served.
    let unserved: Vec<StdTcpStream> = clients
        .into_iter()
        .zip(served)
        .filter_map(|(c, served)| (!served).then_some(c))
        .collect();
    let started = Instant::now();
    let mut recovered = 0;
    for mut c in unserved {
        // Its earlier byte is echoed once it is accepted.
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        if c.read_exact(&mut b).is_ok() {
            recovered += 1;
        }
        if recovered >= 10 {
            break;
        }
    }
    assert!(
        recovered >= 10,
        "only {recovered} waiting clients were served after recovery"
    );
    eprintln!(
        "served 10 waiting clients {:?} after freeing descriptors",
        started.elapsed()
    );

    let _ = child.kill();
    let _ = child.wait();
    let stats = stderr
        .lines()
        .map_while(Result::ok)
        .last()
        .unwrap_or_default();
    assert!(
        !stats.contains("\"accept_resource_errors\":0,"),
        "EMFILE not counted: {stats}"
    );
}

/// `max_connections = 3`: the 4th client waits in the kernel backlog and is accepted only
/// after one of the first three disconnects; nothing is accepted and then dropped.
#[tokio::test]
async fn max_connections_accepts_the_next_only_after_a_disconnect() {
    let listener = std::sync::Arc::new(support::listener(Builder::new().max_connections(3)).await);
    let addr = listener.local_addr().unwrap();
    let server = listener.clone();
    tokio::spawn(async move {
        server
            .serve(|mut s| async move {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            })
            .await
    });
    let mut first = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"a").await.unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.unwrap();
        first.push(c);
    }
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    fourth.write_all(b"d").await.unwrap();
    let mut b = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), fourth.read_exact(&mut b)).await;
    assert!(early.is_err(), "4th client served while 3 are open");
    assert_eq!(
        listener.stats().accepted,
        3,
        "nothing accepted beyond the limit"
    );

    drop(first.pop());
    tokio::time::timeout(Duration::from_secs(3), fourth.read_exact(&mut b))
        .await
        .expect("4th served after a disconnect")
        .unwrap();
    assert_eq!(&b, b"d");
    let stats = listener.stats();
    assert_eq!(stats.accepted, 4);
    wait_for(Duration::from_secs(2), "3 open", || {
        listener.stats().open == 3
    })
    .await;
}

/// Per-IP limit: over the limit, the connection is closed at once and counted.
#[tokio::test]
async fn max_connections_per_ip_rejects_the_extra_connection() {
    let listener =
        std::sync::Arc::new(support::listener(Builder::new().max_connections_per_ip(2)).await);
    let addr = listener.local_addr().unwrap();
    let server = listener.clone();
    tokio::spawn(async move {
        server
            .serve(|s| async move {
                let _held = s;
                std::future::pending::<()>().await
            })
            .await
    });
    let a = TcpStream::connect(addr).await.unwrap();
    let b = TcpStream::connect(addr).await.unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "third connection from the same IP is closed");
    assert_eq!(listener.stats().rejected_per_ip, 1);
    drop((a, b));
}
