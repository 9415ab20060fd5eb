//! The client process: opens the connections, then half-closes the ones it is told to
//! and stamps the EOF that comes back.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::host::raise_nofile_for;
use crate::probes::mono_ns;
use crate::{env_usize, CLOSE_WAIT_TIMEOUT};

/// Connections per client source address: well inside one address's ephemeral ports
/// (28,232 by default), so that 100,000 connections to one server port fit.
const PER_SOURCE: usize = 1000;

/// The source address of connection `i` in server run `run`: `127.<run>.x.y`, a fresh
/// range per run, so that no run finds ports still in `TIME_WAIT` from the one before.
fn source(run: usize, i: usize) -> SocketAddr {
    let block = i / PER_SOURCE;
    let ip = Ipv4Addr::new(
        127,
        (run % 250 + 1) as u8,
        (block / 250) as u8,
        (block % 250 + 1) as u8,
    );
    (ip, 0).into()
}

async fn connect(from: SocketAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(from)?;
    socket.connect(to).await
}

pub(crate) fn main() {
    let _ = raise_nofile_for(env_usize("N", 0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(client());
}

async fn client() {
    let port: u16 = env_usize("PORT", 0) as u16;
    let n = env_usize("N", 0);
    let run = env_usize("RUN", 0);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    // Not before the server has taken its memory baseline and built its listener.
    let go = lines.next_line().await.expect("stdin");
    assert_eq!(go.as_deref(), Some("connect"), "the server's first command");
    let mut conns: HashMap<SocketAddr, Arc<TcpStream>> = HashMap::with_capacity(n);
    let mut pending = tokio::task::JoinSet::new();
    let mut started = 0;
    while conns.len() < n {
        while started < n && pending.len() < 64 {
            pending.spawn(connect(source(run, started), addr));
            started += 1;
        }
        let stream = pending
            .join_next()
            .await
            .expect("connects pending")
            .expect("join")
            .expect("connect");
        let local = stream.local_addr().expect("local");
        conns.insert(local, Arc::new(stream));
    }
    println!("connected");

    while let Some(line) = lines.next_line().await.expect("stdin") {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first().copied() {
            Some("close") => {
                let gap = Duration::from_micros(f[1].parse().expect("gap"));
                let ports: Vec<SocketAddr> =
                    f[2..].iter().map(|p| p.parse().expect("address")).collect();
                close(&conns, &ports, gap).await;
            }
            Some("touch") => touch(&conns).await,
            Some("exit") | None => break,
            Some(other) => println!("unknown command {other}"),
        }
    }
}

/// Writes one byte on every connection (the server never reads it).
async fn touch(conns: &HashMap<SocketAddr, Arc<TcpStream>>) {
    for stream in conns.values() {
        loop {
            match stream.try_write(b"!") {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stream.writable().await.expect("writable");
                }
                Err(e) => panic!("touch: {e}"),
            }
        }
    }
    println!("touched");
}

/// Shuts down the write half of each of `ports` (client addresses, `gap` apart) and
/// stamps the EOF that comes back when the server closes its side.
async fn close(conns: &HashMap<SocketAddr, Arc<TcpStream>>, ports: &[SocketAddr], gap: Duration) {
    let mut readers = tokio::task::JoinSet::new();
    for &port in ports {
        let stream = conns[&port].clone();
        readers.spawn(async move {
            let mut buf = [0_u8; 64];
            loop {
                if stream.readable().await.is_err() {
                    return (port, None);
                }
                match stream.try_read(&mut buf) {
                    Ok(0) => return (port, Some(mono_ns())),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return (port, None),
                }
            }
        });
    }
    // Let every reader park first.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut stamps = Vec::with_capacity(ports.len());
    for &port in ports {
        let t = mono_ns();
        SockRef::from(&*conns[&port])
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        stamps.push((port, t));
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    let mut out = io::stdout().lock();
    for (port, t) in stamps {
        writeln!(out, "fin {port} {t}").expect("stdout");
    }
    drop(out);
    // close_wait_timeout plus generous slack for a loaded machine.
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT_TIMEOUT + Duration::from_secs(4);
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, readers.join_next()).await {
        if let Ok((port, Some(t))) = joined {
            println!("eof {port} {t}");
        }
    }
    readers.abort_all();
    println!("done");
}
