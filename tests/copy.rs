//! The stream drops in where a `tokio::net::TcpStream` goes: `copy_bidirectional` in a
//! proxy, and `tokio::io::split` with the halves in different tasks. 8 MiB of
//! pseudo-random data each way, checked byte for byte, over real loopback sockets.

mod support;

use std::time::Duration;

use tcp_hygiene::{Builder, ConnectionState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LEN: usize = 8 << 20;

/// xorshift64: deterministic pseudo-random bytes without a dependency.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn assert_same(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("byte {i} differs: got {}, want {}", got[i], want[i]);
    }
}

/// The client writes everything, half-closes, and reads everything back.
async fn echo_through(addr: std::net::SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let client = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = client.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
        w
    });
    let mut got = Vec::with_capacity(LEN);
    tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut got))
        .await
        .expect("echo completes")
        .unwrap();
    drop(writer.await.unwrap());
    got
}

/// A proxy: the accepted tcp-hygiene stream <-> an upstream tokio echo server, joined by
/// `copy_bidirectional`. Half-closes propagate both ways and the library neither cuts
/// nor counts anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_with_copy_bidirectional_is_byte_exact() {
    // The upstream: a plain tokio echo server.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    });

    // The proxy, behind tcp-hygiene with short timeouts that must not fire while data
    // moves.
    let listener = support::listener(
        Builder::new()
            .close_wait_timeout(Duration::from_millis(500))
            .idle_timeout(Duration::from_secs(2)),
    )
    .await;
    let addr = listener.local_addr().unwrap();
    let proxy = tokio::spawn(async move {
        let (mut down, _) = listener.accept().await.unwrap();
        let mut up = TcpStream::connect(upstream_addr).await.unwrap();
        let moved = tokio::io::copy_bidirectional(&mut down, &mut up).await;
        (moved, down, listener)
    });

    let data = payload(0xC0FFEE, LEN);
    let got = echo_through(addr, data.clone()).await;
    assert_same(&got, &data);

    let (moved, down, listener) = tokio::time::timeout(Duration::from_secs(10), proxy)
        .await
        .expect("proxy finishes")
        .unwrap();
    assert_eq!(moved.unwrap(), (LEN as u64, LEN as u64));
    let snap = down.handle().snapshot();
    assert_eq!(snap.bytes_read, LEN as u64);
    assert_eq!(snap.bytes_written, LEN as u64);
    // Both halves were closed the ordinary way: EOF in, shutdown out.
    assert_eq!(down.state(), ConnectionState::Closed);
    assert_eq!(down.close_reason(), None);
    assert_eq!(listener.stats().closed_total(), 0, "{:?}", listener.stats());
}

/// `tokio::io::split`: the read half in one task, the write half in another, joined by a
/// channel; then `unsplit` gives the stream (and its handle) back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_in_separate_tasks_are_byte_exact() {
    let listener = support::listener(&Builder::new()).await;
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let handle = stream.handle();
        let (mut r, mut w) = tokio::io::split(stream);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = r.read(&mut buf).await.unwrap();
                if n == 0 {
                    return r;
                }
                tx.send(buf[..n].to_vec()).await.unwrap();
            }
        });
        let writer = tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                w.write_all(&chunk).await.unwrap();
            }
            w.shutdown().await.unwrap();
            w
        });
        let (r, w) = (reader.await.unwrap(), writer.await.unwrap());
        (r.unsplit(w), handle, listener)
    });

    let data = payload(0x5EED, LEN);
    let got = echo_through(addr, data.clone()).await;
    assert_same(&got, &data);

    let (stream, handle, listener) = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server finishes")
        .unwrap();
    assert_eq!(stream.id(), handle.id());
    let snap = handle.snapshot();
    assert_eq!(snap.bytes_read, LEN as u64);
    assert_eq!(snap.bytes_written, LEN as u64);
    assert_eq!(stream.state(), ConnectionState::Closed);
    assert_eq!(stream.close_reason(), None);
    assert_eq!(listener.stats().closed_total(), 0);
}
