//! What the benches share: the run's mode and arguments, the role a copy of the bench
//! binary plays, small statistics, and the host and socket set-up they all need.
//!
//! Each bench includes this folder as its own module and uses only part of it (the
//! tool's census bench too, by path).
#![allow(dead_code)]

pub(crate) mod host;
pub(crate) mod net;
pub(crate) mod stats;

use std::process::Command;
use std::str::FromStr;

/// Set in the environment of a copy of a bench binary that plays another role than the
/// orchestrator (a server, its clients, the part that runs under callgrind).
pub(crate) const ROLE_ENV: &str = "TCP_HYGIENE_BENCH_ROLE";

/// The role this process plays; `None` for the orchestrator.
pub(crate) fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// This bench binary again, in the role `role`.
pub(crate) fn self_command(role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command.env(ROLE_ENV, role);
    command
}

/// A current-thread tokio runtime with every driver.
pub(crate) fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A multi-thread tokio runtime of 2 workers (one per core here) with every driver.
pub(crate) fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// How much to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `cargo test --all-targets` runs bench binaries without `--bench`: prove the bench
    /// works, fast.
    Smoke,
    /// `-- --quick`: provisional numbers, under a minute.
    Quick,
    Full,
}

impl Mode {
    /// Said in the bench's first line.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Mode::Smoke => "smoke test: run with `cargo bench` for numbers",
            Mode::Quick => "--quick",
            Mode::Full => "full",
        }
    }
}

/// The bench's command line (what follows `cargo bench --bench NAME --`, and the
/// `--bench` that cargo adds).
#[derive(Debug, Clone)]
pub(crate) struct Args(Vec<String>);

impl Args {
    pub(crate) fn from_env() -> Self {
        Self(std::env::args().skip(1).collect())
    }

    pub(crate) fn mode(&self) -> Mode {
        if !self.has("--bench") {
            Mode::Smoke
        } else if self.has("--quick") {
            Mode::Quick
        } else {
            Mode::Full
        }
    }

    pub(crate) fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }

    /// The value after `flag` (`--n 10000`), if given and well-formed.
    pub(crate) fn value<T: FromStr>(&self, flag: &str) -> Option<T> {
        let i = self.0.iter().position(|a| a == flag)?;
        self.0.get(i + 1)?.parse().ok()
    }

    /// The arguments that are not flags: section filters.
    pub(crate) fn positional(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|a| !a.starts_with('-'))
            .cloned()
            .collect()
    }
}
