//! HTTP/1.1 by hand over a raw socket, for tests that need to see exactly when a server
//! answers or closes.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a response may take on a noisy 2-core machine.
const RESPONSE_LIMIT: Duration = Duration::from_secs(10);

/// Reads one HTTP/1.1 response with a `content-length`; returns its status line and body.
pub(crate) async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(RESPONSE_LIMIT, stream.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read response");
        assert!(
            n > 0,
            "EOF before a full response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("content-length");
            if text.len() >= end + 4 + length {
                let status = head.lines().next().unwrap_or_default().to_owned();
                return (status, text[end + 4..end + 4 + length].to_owned());
            }
        }
    }
}

/// Sends `GET path` on a keep-alive connection and reads one response, which must be a
/// `200`; returns its body.
pub(crate) async fn get_ok(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let (status, body) = read_response(stream).await;
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "GET {path}: not 200: {status}"
    );
    body
}

/// Reads until EOF or an error (a reset also ends the connection); returns when. Panics
/// if the connection is still open after `limit`.
pub(crate) async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Instant {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {limit:?}"),
            Ok(Ok(0) | Err(_)) => return Instant::now(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Like [`read_response`], but a connection that ends first is an `Err` that says how
/// (EOF or the error), when (after the call), and how many bytes of response came.
pub(crate) async fn try_read_response(
    stream: &mut TcpStream,
    limit: Duration,
) -> Result<(String, String), String> {
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        let n = match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return Err(format!("no full response within {limit:?}")),
            Ok(Err(e)) => {
                return Err(format!(
                    "{e:?} {:?} after the request, {} bytes of response before it",
                    started.elapsed(),
                    buf.len()
                ))
            }
            Ok(Ok(0)) => {
                return Err(format!(
                    "EOF {:?} after the request, {} bytes of response before it: {:?}",
                    started.elapsed(),
                    buf.len(),
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("content-length");
            if text.len() >= end + 4 + length {
                let status = head.lines().next().unwrap_or_default().to_owned();
                return Ok((status, text[end + 4..end + 4 + length].to_owned()));
            }
        }
    }
}
