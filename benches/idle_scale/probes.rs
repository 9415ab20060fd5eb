//! What a server process measures about itself: clocks, CPU time, wake-ups, resident
//! memory and epoll registrations.

use std::time::Duration;

use rustix::time::{clock_gettime, ClockId};

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process on the host.
pub(crate) fn mono_ns() -> u64 {
    let ts = clock_gettime(ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User + system CPU time of the whole process (what `getrusage` sums, to the ns).
pub(crate) fn cpu_time() -> Duration {
    let ts = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Context switches of every thread of this process so far (a wakeup costs at least one).
pub(crate) fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Descriptors registered in all of this process's epoll instances (the `tfd:` lines of
/// their fdinfo): tokio's reactor and, for `hygiene`, the FIN watcher.
pub(crate) fn epoll_registrations() -> usize {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:[eventpoll]")
        })
        .filter_map(|fd| {
            let info = format!("/proc/self/fdinfo/{}", fd.file_name().to_string_lossy());
            let info = std::fs::read_to_string(info).ok()?;
            Some(
                info.lines()
                    .filter(|l| l.starts_with("tfd:"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })
        // mio keeps a duplicate of its epoll descriptor: count each instance once.
        .collect::<std::collections::HashSet<String>>()
        .iter()
        .map(|regs| regs.lines().count())
        .sum()
}

/// Kernel bytes per epoll registration: one `epitem` and one `eppoll_entry`, from their
/// slab caches' object sizes (128 + 64 on x86-64 when `/sys/kernel/slab` is not readable).
pub(crate) fn epoll_registration_bytes() -> u64 {
    let size = |cache: &str, default: u64| {
        std::fs::read_to_string(format!("/sys/kernel/slab/{cache}/slab_size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(default)
    };
    size("eventpoll_epi", 128) + size("eventpoll_pwq", 64)
}
