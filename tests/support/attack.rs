//! Real attack tools against the examples: slowhttptest over HTTP or HTTPS, and `curl`
//! as the good client that must be answered meanwhile.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::example::Server;
use super::{ss_count, PeersSeen};

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

/// `curl` of `url` (`--insecure`: any certificate over HTTPS), at most `limit`: whether it
/// was answered `ok`.
pub(crate) fn curl_ok(url: &str, limit: Duration) -> bool {
    let out = Command::new("curl")
        .args(["--silent", "--insecure", "--max-time"])
        .arg(format!("{:.1}", limit.as_secs_f64()))
        .arg(url)
        .output()
        .expect("curl must be installed (.ci/run installs it)");
    out.status.success() && out.stdout == b"ok"
}

/// [`curl_ok`] off the runtime's threads, timed.
pub(crate) async fn curl_timed(url: String, limit: Duration) -> (bool, Duration) {
    let started = Instant::now();
    let ok = tokio::task::spawn_blocking(move || curl_ok(&url, limit))
        .await
        .unwrap();
    (ok, started.elapsed())
}

/// How slow attacks against some servers ended: when each server's attack connections
/// were all gone (from when the last one was made), and how `curl` fared meanwhile.
pub(crate) struct Clearing {
    pub(crate) cleared: Vec<Option<Duration>>,
    pub(crate) curls: usize,
    pub(crate) slowest: Duration,
}

/// Waits until each server in `attacked` (with the name of its attack) has had
/// `connections` attack connections, and the control `control` (port, connections) its
/// own (counting those made, not those open at one instant: on a loaded machine a
/// server may clear the first before the last connects). Then, until each server's
/// attack connections are all gone or `limit` passed, curls each server
/// (`scheme://addr/`) every 2 s and asserts it is answered.
pub(crate) async fn watch_clearing(
    scheme: &str,
    attacked: &[(&Server, &str)],
    connections: usize,
    control: (u16, usize),
    limit: Duration,
) -> Clearing {
    let mut wants: Vec<(u16, usize)> = attacked
        .iter()
        .map(|(s, _)| (s.port(), connections))
        .collect();
    wants.push(control);
    PeersSeen::default()
        .wait(&wants, Duration::from_secs(30))
        .await;
    let started = Instant::now();
    let mut clearing = Clearing {
        cleared: vec![None; attacked.len()],
        curls: 0,
        slowest: Duration::ZERO,
    };
    while started.elapsed() < limit && clearing.cleared.iter().any(Option::is_none) {
        for (i, (server, kind)) in attacked.iter().enumerate() {
            if clearing.cleared[i].is_none() && ss_count(server.port(), "established") == 0 {
                clearing.cleared[i] = Some(started.elapsed());
            }
            let url = format!("{scheme}://{}/", server.addr);
            let (ok, took) = curl_timed(url, Duration::from_secs(3)).await;
            assert!(
                ok,
                "-{kind} server: curl not answered at {:?}",
                started.elapsed()
            );
            clearing.slowest = clearing.slowest.max(took);
            clearing.curls += 1;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    clearing
}

/// Running attacks, and the directory of their files: both ended when dropped, so that a
/// failed assertion leaves no slowhttptest behind.
pub(crate) struct Attacks {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Attacks {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One slowhttptest of each of `kinds` against each of `servers` (in turn) and against
/// `control`, `connections` each at 50 a second, their files in `dir`.
pub(crate) fn attack_each(
    dir: PathBuf,
    scheme: &str,
    servers: &[Server],
    control: &Server,
    kinds: &[&str],
    connections: usize,
) -> Attacks {
    let mut children = Vec::new();
    for (server, &kind) in servers.iter().zip(kinds) {
        children.push(slowhttptest(
            &dir,
            kind,
            scheme,
            server.addr,
            kind,
            connections,
            50,
        ));
        let name = format!("control-{kind}");
        children.push(slowhttptest(
            &dir,
            &name,
            scheme,
            control.addr,
            kind,
            connections,
            50,
        ));
    }
    Attacks { children, dir }
}

impl Clearing {
    /// Asserts that each server's attack (named by `kinds`) was cleared within `bound`,
    /// and that the kernel keeps no `CLOSE_WAIT` on any of `servers`.
    pub(crate) fn assert_cleared(&self, servers: &[Server], kinds: &[&str], bound: Duration) {
        for ((cleared, kind), server) in self.cleared.iter().zip(kinds).zip(servers) {
            let cleared = cleared.unwrap_or_else(|| panic!("-{kind}: attack not cleared"));
            assert!(cleared <= bound, "-{kind}: cleared after {cleared:?}");
            assert_eq!(ss_count(server.port(), "close-wait"), 0, "-{kind} server");
        }
    }
}
