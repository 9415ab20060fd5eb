//! Running the `tcp-hygiene` binary, as root and as an unprivileged user.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

/// `nobody`.
pub(crate) const UNPRIVILEGED: u32 = 65534;

/// Runs the tool with `args`.
pub(crate) fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tcp-hygiene"))
        .args(args)
        .output()
        .expect("run tcp-hygiene")
}

/// Runs the tool with `args` and returns its stdout; panics with its stderr if it fails.
pub(crate) fn stdout(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "tcp-hygiene {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `census --json` with `args`, parsed.
pub(crate) fn census_json(args: &[&str]) -> serde_json::Value {
    let args: Vec<&str> = ["census", "--json"].iter().chain(args).copied().collect();
    let text = stdout(&args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The object for `port` in a `census --json` output.
pub(crate) fn json_port(census: &serde_json::Value, port: u16) -> &serde_json::Value {
    census["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("no port {port} in {census}"))
}

/// A copy of the tool that an unprivileged user can execute (the build directory may sit
/// under a home only root can enter). Deleted on drop.
pub(crate) struct UnprivilegedTool {
    dir: PathBuf,
}

impl UnprivilegedTool {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tcp-hygiene-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).expect("create a directory for the unprivileged copy");
        let tool = UnprivilegedTool { dir };
        fs::copy(env!("CARGO_BIN_EXE_tcp-hygiene"), tool.path()).expect("copy the tool");
        for path in [tool.dir.as_path(), tool.path().as_path()] {
            fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        tool
    }

    fn path(&self) -> PathBuf {
        self.dir.join("tcp-hygiene")
    }

    /// Runs the copy as uid/gid [`UNPRIVILEGED`] with no supplementary groups. The test
    /// must run as root to switch users; it fails otherwise.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        let mut attempts = 0;
        loop {
            let out = Command::new(self.path())
                .args(args)
                .uid(UNPRIVILEGED)
                .gid(UNPRIVILEGED)
                .current_dir(Path::new("/"))
                .output();
            match out {
                // Another test thread forked while the copy was open for writing; its
                // child holds that descriptor until it execs.
                Err(e) if e.kind() == ErrorKind::ExecutableFileBusy && attempts < 100 => {
                    attempts += 1;
                    thread::sleep(Duration::from_millis(10));
                }
                out => {
                    return out
                        .expect("run tcp-hygiene as an unprivileged user (the tests run as root)")
                }
            }
        }
    }
}

impl Drop for UnprivilegedTool {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
