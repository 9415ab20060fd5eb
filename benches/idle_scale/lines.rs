//! What the server role says: figures for the orchestrator on stdout, commands to its
//! client on the client's stdin, and the client's answers.

use tokio::io::{AsyncWriteExt, BufReader};

/// One figure, for the orchestrator to collect.
pub(crate) fn metric(key: &str, value: f64) {
    println!("m {key} {value}");
}

/// Sends the client one command line.
pub(crate) async fn tell(to_client: &mut tokio::process::ChildStdin, line: &str) {
    to_client
        .write_all(format!("{line}\n").as_bytes())
        .await
        .expect("to client");
    to_client.flush().await.expect("flush");
}

pub(crate) type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

pub(crate) async fn expect_line(lines: &mut Lines, want: &str) {
    loop {
        match lines.next_line().await.expect("client output") {
            Some(line) if line == want => return,
            Some(line) => println!("client: {line}"),
            None => panic!("client exited before `{want}`"),
        }
    }
}
