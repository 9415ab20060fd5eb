//! The host as the benches see it: its load, and this process's descriptor limit.

use rustix::process::{getrlimit, setrlimit, Resource};

/// `/proc/loadavg`'s three averages, printed beside every run: a loaded host explains
/// a noisy one.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Descriptors a process holding `n` connections needs: those, and room for the
/// runtime, pipes and epolls.
pub(crate) fn nofile_for(n: usize) -> u64 {
    (n + 256) as u64
}

/// Raises the descriptor limit to [`nofile_for`]`(n)`: past the hard limit (20,000 on
/// these machines) when the process may (`CAP_SYS_RESOURCE`), up to the kernel's
/// `fs.nr_open`; otherwise to the hard limit. The soft limit it ends with.
pub(crate) fn raise_nofile_for(n: usize) -> u64 {
    let want = nofile_for(n);
    let limit = getrlimit(Resource::Nofile);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if limit.maximum.is_some_and(|max| max < want) && nr_open >= want {
        let raised = rustix::process::Rlimit {
            current: Some(want),
            maximum: Some(want),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return want;
        }
    }
    raise_nofile();
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Raises the soft descriptor limit to the hard one (20,000 on these machines).
pub(crate) fn raise_nofile() {
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).expect("raise RLIMIT_NOFILE to its hard limit");
}
