//! Runs the crate's example servers as real processes for the integration tests of the
//! `axum`, `hyper` and `tonic` features.
//!
//! Examples have no `CARGO_BIN_EXE_*`, so the test builds the one it needs with the same
//! cargo that runs the test (`$CARGO`), the same features as this test crate (from
//! `cfg!`; `serde` always), the same profile and the same target directory (found from this test
//! binary's path), and takes the binary's path from cargo's JSON messages. When the
//! example is already up to date (`cargo test` builds examples before running tests)
//! that build is a no-op check of a fraction of a second. Cargo has released its build
//! lock by the time tests run, so the nested build does not deadlock.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// How long a build of an example may take on a cold, 2-core machine.
const BUILD_LIMIT: Duration = Duration::from_secs(900);
/// How long a started example may take to print `listening on …`.
const START_LIMIT: Duration = Duration::from_secs(30);

/// The path of example `name`, built with this test crate's features.
pub(crate) fn example_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let path = build_example(name);
    built.insert(name.to_owned(), path.clone());
    path
}

fn features() -> String {
    // Whatever this test crate has: the examples print their `Stats` as JSON through serde
    // (echo_server's `--stats-every-ms`, metrics' `/stats`).
    let mut features = vec!["serde"];
    if cfg!(feature = "axum") {
        features.push("axum");
    }
    if cfg!(feature = "hyper") {
        features.push("hyper");
    }
    if cfg!(feature = "tonic") {
        features.push("tonic");
    }
    if cfg!(feature = "metrics") {
        features.push("metrics");
    }
    if cfg!(feature = "tls") {
        features.push("tls");
    }
    features.join(",")
}

/// The target directory this test binary was built in: the nearest ancestor holding
/// cargo's `CACHEDIR.TAG`.
fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

fn build_example(name: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--message-format=json-render-diagnostics",
    ])
    .args(["--example", name])
    .args(["--features", &features()])
    .arg("--manifest-path")
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        if let Some(dir) = target_dir() {
            cmd.arg("--target-dir").arg(dir);
        }
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let started = Instant::now();
    let out = cmd.output().expect("run cargo to build the example");
    assert!(
        out.status.success(),
        "cargo build --example {name} failed ({})",
        out.status
    );
    assert!(
        started.elapsed() < BUILD_LIMIT,
        "building {name} took too long"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout
        .lines()
        .filter(|line| line.contains("\"reason\":\"compiler-artifact\""))
        .filter(|line| line.contains(&format!("\"name\":\"{name}\"")))
        .find_map(|line| {
            let start = line.find("\"executable\":\"")? + "\"executable\":\"".len();
            let end = start + line[start..].find('"')?;
            Some(PathBuf::from(&line[start..end]))
        })
        .unwrap_or_else(|| panic!("cargo did not report the executable of {name}:\n{stdout}"));
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}

/// A running example server; killed when dropped.
pub(crate) struct Server {
    child: Child,
    /// The address from its first line, `listening on IP:PORT`.
    pub(crate) addr: SocketAddr,
    /// Its later stdout lines.
    lines: Option<mpsc::Receiver<String>>,
}

impl Server {
    /// Starts example `name` with `--listen 127.0.0.1:0` and `args`, and waits for its
    /// first line.
    pub(crate) fn start(name: &str, args: &[&str]) -> Server {
        let binary = example_binary(name);
        let mut child = Command::new(&binary)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            // Keep draining so the server never blocks on a full pipe.
            for line in reader.lines() {
                let Ok(line) = line else { break };
                let _ = lines_tx.send(line);
            }
        });
        let line = match rx.recv_timeout(START_LIMIT) {
            Ok(Ok(line)) => line,
            other => {
                let _ = child.kill();
                panic!("{name} did not print its address: {other:?}");
            }
        };
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim_end().parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("{name}: first line is not `listening on IP:PORT`: {line:?}")
            });
        Server {
            child,
            addr,
            lines: Some(lines_rx),
        }
    }

    /// `http://IP:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's port.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Open descriptors of the server process.
    pub(crate) fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("the server's /proc entry")
            .count()
    }

    /// Sends SIGTERM, then waits for the server to exit (within `limit`); returns its
    /// exit status and the stdout lines after the first.
    pub(crate) fn terminate(mut self, limit: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                started.elapsed() < limit,
                "server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let lines = self
            .lines
            .take()
            .map(|rx| rx.try_iter().collect())
            .unwrap_or_default();
        (status, lines)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `curl` with `args` (plus `--silent --show-error --max-time 30`); returns its
/// stdout, or panics with its stderr.
pub(crate) fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl must be installed; .ci/run installs it");
    assert!(
        out.status.success(),
        "curl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 body")
}
