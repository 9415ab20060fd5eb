//! Bad input to the `tcp-hygiene` binary: every one exits 2 with a message naming the
//! option, never a panic, a spin or a hang; and a reader that goes away ends the tool
//! quietly with status 0, as `ss` does.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::tool;

/// Runs the tool with `args`, which must be refused at once: exit status 2, a message on
/// stderr that names `flag`, nothing on stdout.
fn refused(args: &[&str], flag: &str) {
    let started = Instant::now();
    let out = tool::run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(flag),
        "{args:?} should name {flag}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{args:?} took {:?}",
        started.elapsed()
    );
}

#[test]
fn intervals_outside_a_tenth_of_a_second_to_a_day_exit_2() {
    for value in [
        "1e20", "1e19", "86400.5", "1e-9", "0.05", "0", "-1", "nan", "inf", "abc", "",
    ] {
        refused(&["census", "--watch", value], "--watch");
        refused(&["census", "--watch", value, "--count", "2"], "--watch");
        refused(
            &["reap", "--port", "1", "--idle-ms", "1", "--every", value],
            "--every",
        );
    }
}

#[test]
fn the_bounds_themselves_are_accepted() {
    // 0.1 s: two censuses, taken 0.1 s apart.
    let started = Instant::now();
    let text = tool::stdout(&["census", "--port", "1", "--watch", "0.1", "--count", "2"]);
    assert_eq!(text.matches("--- census at").count(), 2, "{text}");
    assert!(started.elapsed() >= Duration::from_millis(100));
    // A day: the first census at once, then interrupted by --count 1.
    let text = tool::stdout(&["census", "--port", "1", "--watch", "86400", "--count", "1"]);
    assert_eq!(text.matches("--- census at").count(), 1, "{text}");
}

#[test]
fn port_0_exits_2() {
    refused(&["census", "--port", "0"], "--port");
    refused(&["census", "--port", "65536"], "--port");
    refused(&["reap", "--port", "0", "--idle-ms", "1"], "--port");
    refused(
        &["reap", "--remote-port", "0", "--idle-ms", "1"],
        "--remote-port",
    );
}

#[test]
fn other_usage_errors_exit_2() {
    refused(&["census", "--watch", "1", "--count", "0"], "--count");
    refused(&["census", "--top", "0"], "--top");
    refused(&["census", "--top", "3", "--all"], "--all");
    // Reap needs a port to aim at, and only one.
    refused(&["reap", "--idle-ms", "1"], "--port");
    refused(
        &[
            "reap",
            "--port",
            "1",
            "--remote-port",
            "2",
            "--idle-ms",
            "1",
        ],
        "--remote-port",
    );
    refused(
        &["reap", "--port", "1", "--idle-ms", "1", "--count", "2"],
        "--count",
    );
    refused(
        &["reap", "--port", "1", "--idle-ms", "1", "--pid", "0"],
        "--pid",
    );
    refused(&["exporter"], "--listen");
    refused(&["exporter", "--listen", "nowhere"], "--listen");
}

/// `census | head -1`: the tool's next write finds the pipe closed and it ends with
/// status 0 and nothing on stderr.
#[test]
fn a_closed_output_pipe_ends_quietly_with_status_0() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcp-hygiene"))
        .args(["census", "--watch", "0.1", "--count", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("--- census at"), "{first:?}");
    // The reader is gone (dropped with the BufReader), as `head` exits.
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it went on writing into the void for {:?}",
        started.elapsed()
    );
}

/// The same through a shell pipeline, as an operator types it.
#[test]
fn census_piped_into_head_exits_0() {
    let script = format!(
        "{} census --watch 0.1 --count 100 | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}",
        env!("CARGO_BIN_EXE_tcp-hygiene")
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
