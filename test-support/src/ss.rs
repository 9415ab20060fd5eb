//! The kernel's own view of sockets, through `ss` (iproute2).

use std::process::Command;

/// Runs an `ss` command (here, or in a namespace) and returns its non-empty lines;
/// panics if it cannot run or fails.
pub fn ss_output(mut ss: Command) -> Vec<String> {
    let out = ss
        .output()
        .expect("ss must be installed (iproute2); .ci/run installs it");
    assert!(
        out.status.success(),
        "ss failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}
