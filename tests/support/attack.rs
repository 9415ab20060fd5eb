//! Real attack tools against the examples: slowhttptest, over HTTP or HTTPS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A slowhttptest run against `scheme://addr`, `kind` `H` (slowloris), `B` (slow body,
/// `POST /upload`) or `X` (slow reader of `GET /big?bytes=4000000`), with `connections`
/// connections made at up to `rate` a second, for at most 60 s; its files go to `dir`
/// under `name`. `https` skips certificate checks, as slowhttptest always does.
pub(crate) fn slowhttptest(
    dir: &Path,
    name: &str,
    scheme: &str,
    addr: SocketAddr,
    kind: &str,
    connections: usize,
    rate: usize,
) -> Child {
    let mut command = Command::new("slowhttptest");
    command
        .args(["-c", &connections.to_string(), "-r", &rate.to_string()])
        .args(["-l", "60", "-p", "3", "-g", "-o"])
        .arg(dir.join(name))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match kind {
        "H" => command.args(["-H", "-i", "1", "-u", &format!("{scheme}://{addr}/")]),
        "B" => command
            .args(["-B", "-i", "1", "-s", "8192", "-x", "10", "-t", "POST"])
            .args(["-u", &format!("{scheme}://{addr}/upload")]),
        _ => command
            .args([
                "-X", "-w", "512", "-y", "1024", "-n", "5", "-z", "32", "-k", "3",
            ])
            .args(["-u", &format!("{scheme}://{addr}/big?bytes=4000000")]),
    };
    command
        .spawn()
        .expect("slowhttptest must be installed (.ci/run installs it)")
}

/// A fresh directory for one test's files under the temporary directory.
pub(crate) fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tcp-hygiene-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
