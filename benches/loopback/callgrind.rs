//! Instructions per poll, exact and immune to noise: this binary again, under
//! `valgrind --tool=callgrind`, counting only inside `read_polls` and `write_polls`, one
//! dump after each call.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use crate::common::ROLE_ENV;
use crate::contenders::Contender;
use crate::per_poll::{PollRig, LOOPS, READ_BATCH, WRITE_BATCH};
use crate::report::Instructions;
use crate::Params;

/// The role of the copy of this binary that runs under callgrind.
pub(crate) const ROLE: &str = "callgrind-polls";

/// In the copy of this binary that runs under callgrind: every contender's loops, in a
/// fixed order that the parent reads back from our stdout (one dump per loop).
pub(crate) fn child() {
    let polls: usize = std::env::var("POLLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
        .min(READ_BATCH);
    let mut rig = PollRig::new();
    rig.warm_up();
    for round in 0..2 {
        // Round 0 warms up caches of lazily resolved symbols; round 1 is reported.
        for c in Contender::PER_POLL {
            let done = rig.read_batch(c, polls).is_some();
            let seq = LOOPS.load(Ordering::Relaxed);
            println!(
                "cg {seq} read {} {polls} {} {round}",
                c.name(),
                u8::from(done)
            );
            let mut written = 0;
            let mut ok = true;
            while written < polls {
                let n = WRITE_BATCH.min(polls - written);
                ok &= rig.write_batch(c, n).is_some();
                let seq = LOOPS.load(Ordering::Relaxed);
                println!("cg {seq} write {} {n} {} {round}", c.name(), u8::from(ok));
                written += n;
            }
        }
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn have_valgrind() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ensure_valgrind() -> bool {
    if have_valgrind() {
        return true;
    }
    if !is_root() {
        println!("note: valgrind is not installed and we are not root; skipping instruction counts (apt-get install valgrind)");
        return false;
    }
    println!("valgrind missing: apt-get install -y valgrind");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "valgrind"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        install();
    }
    let ok = have_valgrind();
    if !ok {
        println!("note: could not install valgrind; skipping instruction counts");
    }
    ok
}

/// (op, contender, instructions per poll) from one callgrind run of this binary.
pub(crate) fn run(p: &Params) -> Instructions {
    if !ensure_valgrind() {
        return Vec::new();
    }
    let dir = std::env::temp_dir().join(format!("tcp-hygiene-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out_file = dir.join("cg.out");
    let exe = std::env::current_exe().expect("current_exe");
    let output = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=*read_polls*",
            "--toggle-collect=*write_polls*",
            "--dump-after=loopback::per_poll::read_polls*",
            "--dump-after=loopback::per_poll::write_polls*",
        ])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&exe)
        .env(ROLE_ENV, ROLE)
        .env("POLLS", p.callgrind_polls.to_string())
        .output()
        .expect("run valgrind");
    if !output.status.success() {
        println!(
            "note: callgrind run failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return Vec::new();
    }
    let results = parse_callgrind(&String::from_utf8_lossy(&output.stdout), &out_file);
    let _ = std::fs::remove_dir_all(&dir);
    results
}

fn parse_callgrind(child_stdout: &str, out_file: &Path) -> Instructions {
    // [op][contender] → (instructions, polls)
    let mut sums = [[(0.0, 0.0); 3]; 2];
    for line in child_stdout.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let ["cg", seq, op, name, polls, ok, round] = f[..] else {
            continue;
        };
        if round != "1" || ok != "1" {
            continue;
        }
        let dump = PathBuf::from(format!("{}.{seq}", out_file.display()));
        let Some(ir) = callgrind_total(&dump) else {
            println!("note: no callgrind dump {}", dump.display());
            continue;
        };
        let Some(c) = Contender::PER_POLL.into_iter().find(|c| c.name() == name) else {
            continue;
        };
        let o = usize::from(op == "write");
        sums[o][c.index()].0 += ir;
        sums[o][c.index()].1 += polls.parse::<f64>().unwrap_or(f64::NAN);
    }
    let mut out = Vec::new();
    for (o, op) in ["read", "write"].into_iter().enumerate() {
        for c in Contender::PER_POLL {
            let (ir, polls) = sums[o][c.index()];
            if polls > 0.0 {
                out.push((op, c, ir / polls));
            }
        }
    }
    out
}

/// The event total of one callgrind dump (`totals:` or `summary:` line).
fn callgrind_total(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
