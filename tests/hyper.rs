//! The `hyper` integration, end to end: the `hyper_server` example (hyper-util's `auto`
//! builder over the supervised stream) answers real `curl` over HTTP/1.1 and over HTTP/2
//! with prior knowledge, on 127.0.0.1.
#![cfg(feature = "hyper")]

mod support;

use support::example::{curl, Server};
use support::{require, Need};

fn start() -> Server {
    Server::start("hyper_server", &[])
}

/// Body, then the `http_version` curl reports, then the `x-connection` header.
fn fetch(extra: &[&str], url: &str) -> (String, String, String) {
    let mut args = vec!["--write-out", "\n%{http_version}\n%header{x-connection}"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = curl(&args);
    let mut lines = out.lines();
    let body = lines.next().unwrap_or_default().to_owned();
    let version = lines.next().unwrap_or_default().to_owned();
    let connection = lines.next().unwrap_or_default().to_owned();
    (body, version, connection)
}

#[test]
fn http1_request_through_curl() {
    require!(Need::Tool("curl"));
    let server = start();
    let (body, version, connection) = fetch(&["--http1.1"], &format!("{}/", server.url()));
    assert_eq!(body, "ok");
    assert_eq!(version, "1.1");
    assert!(
        connection.parse::<u64>().is_ok(),
        "x-connection: {connection:?}"
    );
}

#[test]
fn http2_prior_knowledge_request_through_curl() {
    require!(Need::Tool("curl"));
    let server = start();
    let (body, version, connection) =
        fetch(&["--http2-prior-knowledge"], &format!("{}/", server.url()));
    assert_eq!(body, "ok");
    assert_eq!(version, "2");
    assert!(
        connection.parse::<u64>().is_ok(),
        "x-connection: {connection:?}"
    );
}

/// Two requests in one curl run reuse one supervised HTTP/1.1 connection. (HTTP/2 is
/// left out: curl 7.88 fails the second request on a reused prior-knowledge connection
/// with "Error in the HTTP2 framing layer" before sending it, against plain tokio +
/// hyper-util as well.)
#[test]
fn keep_alive_reuses_the_connection() {
    require!(Need::Tool("curl"));
    let server = start();
    let out = curl(&[
        "--http1.1",
        "--write-out",
        " %{http_version} %header{x-connection}\n",
        &format!("{}/a", server.url()),
        &format!("{}/b", server.url()),
    ]);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[0][..2], ["ok", "1.1"], "{out:?}");
    assert_eq!(lines[1][..2], ["ok", "1.1"], "{out:?}");
    assert_eq!(
        lines[0][2], lines[1][2],
        "a new connection for the second request: {out:?}"
    );
}
