//! The host as the benches see it: its load, and this process's descriptor limit.

use rustix::process::{getrlimit, setrlimit, Resource};

/// `/proc/loadavg`'s three averages, printed beside every run: a loaded host explains
/// a noisy one.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Raises the soft descriptor limit to the hard one (20,000 on these machines).
pub(crate) fn raise_nofile() {
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).expect("raise RLIMIT_NOFILE to its hard limit");
}
