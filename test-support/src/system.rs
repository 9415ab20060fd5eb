//! What a test needs from the machine beyond loopback sockets — root, network namespaces,
//! tc's `blackhole` qdisc, programs such as `ss` or `curl` — and skipping loudly when the
//! machine does not have it.
//!
//! A test that needs any of these says so first, with [`require!`](crate::require):
//!
//! ```ignore
//! #[test]
//! fn keepalive_closes_idle_connection_whose_peer_vanished() {
//!     require!(Need::Netns, Need::Blackhole, Need::Tool("ss"));
//!     // …
//! }
//! ```
//!
//! Where something is missing the test prints one line on stderr (past the test harness's
//! capture, so it shows in a passing run) and passes without running:
//!
//! ```text
//! SKIPPED half_open::keepalive_closes_idle_connection_whose_peer_vanished: needs root to create network namespaces (set TCP_HYGIENE_SYSTEM_TESTS=1 to make this fail)
//! ```
//!
//! With `TCP_HYGIENE_SYSTEM_TESTS=1` in the environment (CI sets it) the test fails
//! instead, with the same reason: there, nothing may be skipped.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The environment variable that turns every skip into a failure.
pub const SYSTEM_TESTS: &str = "TCP_HYGIENE_SYSTEM_TESTS";

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Root: `SOCK_DESTROY` (`CAP_NET_ADMIN`), running a program as another user.
    Root,
    /// Network namespaces: `ip netns add` works (root and iproute2). Checked by creating
    /// one, once per test binary.
    Netns,
    /// tc's `blackhole` qdisc (`sch_blackhole`), to make a peer vanish. Checked inside
    /// that namespace.
    Blackhole,
    /// A program on `PATH`.
    Tool(&'static str),
}

impl Need {
    /// Why the machine lacks it, or `None` if it has it.
    fn missing(self) -> Option<String> {
        match self {
            Need::Root => {
                let uid = rustix::process::geteuid();
                (!uid.is_root()).then(|| format!("needs root (runs as uid {})", uid.as_raw()))
            }
            Need::Netns => namespace_probe().netns.clone().err(),
            Need::Blackhole => namespace_probe().blackhole.clone().err(),
            Need::Tool(name) => (!on_path(name)).then(|| format!("needs `{name}` on PATH")),
        }
    }
}

/// Whether this machine has everything in `needs`. If not, prints why on stderr and
/// returns `false` — or panics with the reason when [`SYSTEM_TESTS`] is `1`. The test's
/// name is its thread's, as the test harness names it.
#[track_caller]
pub fn require(needs: &[Need]) -> bool {
    let mut reasons: Vec<String> = Vec::new();
    for reason in needs.iter().filter_map(|need| need.missing()) {
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    }
    if reasons.is_empty() {
        return true;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let reasons = reasons.join("; ");
    if std::env::var_os(SYSTEM_TESTS).as_deref() == Some(OsStr::new("1")) {
        panic!("{test}: {reasons} ({SYSTEM_TESTS}=1: nothing may be skipped)");
    }
    // Straight to the process's stderr: the harness captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {reasons} (set {SYSTEM_TESTS}=1 to make this fail)"
    );
    false
}

/// Returns from the test (it passes) unless the machine has every [`Need`] given; see
/// [`require`].
#[macro_export]
macro_rules! require {
    ($($need:expr),+ $(,)?) => {
        if !$crate::system::require(&[$($need),+]) {
            return;
        }
    };
}

/// Whether `name` is an executable file in a directory of `PATH`.
fn on_path(name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        Path::new(&dir)
            .join(name)
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// What creating a namespace, and a blackhole qdisc inside it, told.
struct NamespaceProbe {
    netns: Result<(), String>,
    blackhole: Result<(), String>,
}

/// Creates a namespace, adds a blackhole qdisc to its loopback and deletes it, once.
fn namespace_probe() -> &'static NamespaceProbe {
    static PROBE: OnceLock<NamespaceProbe> = OnceLock::new();
    PROBE.get_or_init(|| {
        let netns = probe_netns();
        let blackhole = match &netns {
            Err(reason) => Err(reason.clone()),
            Ok(name) => {
                let blackhole = probe_blackhole(name);
                let _ = Command::new("ip").args(["netns", "del", name]).output();
                blackhole
            }
        };
        NamespaceProbe {
            netns: netns.map(drop),
            blackhole,
        }
    })
}

/// Creates a namespace to probe with; returns its name.
fn probe_netns() -> Result<String, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root to create network namespaces".to_owned());
    }
    if !on_path("ip") {
        return Err("needs `ip` (iproute2) on PATH to create network namespaces".to_owned());
    }
    let name = format!("thprobe{}", std::process::id());
    let out = Command::new("ip").args(["netns", "add", &name]).output();
    failure(out)
        .map(|()| name)
        .map_err(|e| format!("cannot create a network namespace (`ip netns add`: {e})"))
}

fn probe_blackhole(netns: &str) -> Result<(), String> {
    if !on_path("tc") {
        return Err("needs `tc` (iproute2) on PATH for the blackhole qdisc".to_owned());
    }
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "tc", "qdisc", "add", "dev", "lo"])
        .args(["root", "blackhole"])
        .output();
    failure(out).map_err(|e| format!("needs tc's blackhole qdisc (sch_blackhole): {e}"))
}

/// A command's failure as its stderr.
fn failure(out: std::io::Result<Output>) -> Result<(), String> {
    match out {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}
