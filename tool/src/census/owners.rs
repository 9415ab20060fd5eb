//! Which processes hold which sockets: every `/proc/PID/fd/N` that links to
//! `socket:[INODE]`, as `ss -p` finds them.
//!
//! A process whose descriptors cannot be read (another user's, without root; one that
//! exited during the scan) is skipped: its sockets' owner is unknown, which is not an
//! error. Several processes can hold one socket (forked workers sharing a listener).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs;

use serde::Serialize;

/// A process that holds a socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[non_exhaustive]
pub struct Process {
    /// Its process id (in the pid namespace of the reader's `/proc`).
    pub pid: u32,
    /// Its command name, `/proc/PID/comm` (at most 15 bytes; what `ss -p` and `top` show).
    pub command: String,
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.pid, self.command)
    }
}

/// Socket inode → the processes holding it.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    by_inode: HashMap<u64, Vec<u32>>,
    commands: HashMap<u32, String>,
}

impl Owners {
    /// Scans every process's descriptors for the sockets in `wanted`. Never fails.
    pub(crate) fn scan(wanted: &HashSet<u64>) -> Owners {
        let mut owners = Owners::default();
        if wanted.is_empty() {
            return owners;
        }
        let Ok(processes) = fs::read_dir("/proc") else {
            return owners;
        };
        for entry in processes.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            let mut holds_any = false;
            for fd in fds.flatten() {
                let Ok(target) = fs::read_link(fd.path()) else {
                    continue;
                };
                let inode = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse().ok());
                if let Some(inode) = inode.filter(|i| wanted.contains(i)) {
                    let pids = owners.by_inode.entry(inode).or_default();
                    if !pids.contains(&pid) {
                        pids.push(pid);
                    }
                    holds_any = true;
                }
            }
            if holds_any {
                let command = fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim_end().to_owned())
                    .unwrap_or_else(|_| "?".to_owned());
                owners.commands.insert(pid, command);
            }
        }
        owners
    }

    /// Made-up owners for unit tests: (inode, pid, command) triples.
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(u64, u32, &str)]) -> Owners {
        let mut owners = Owners::default();
        for (inode, pid, command) in pairs {
            owners.by_inode.entry(*inode).or_default().push(*pid);
            owners.commands.insert(*pid, (*command).to_owned());
        }
        owners
    }

    /// The processes holding socket `inode`; empty if unknown.
    pub(crate) fn of(&self, inode: u64) -> impl Iterator<Item = Process> + '_ {
        self.by_inode
            .get(&inode)
            .into_iter()
            .flatten()
            .map(|pid| Process {
                pid: *pid,
                command: self.commands.get(pid).cloned().unwrap_or_default(),
            })
    }

    /// Whether any process was found holding `inode`.
    pub(crate) fn knows(&self, inode: u64) -> bool {
        self.by_inode.contains_key(&inode)
    }

    /// The processes holding any of `inodes`, by pid.
    pub(crate) fn of_all(&self, inodes: impl IntoIterator<Item = u64>) -> Vec<Process> {
        let set: BTreeSet<Process> = inodes.into_iter().flat_map(|i| self.of(i)).collect();
        set.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_its_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = {
            use std::os::fd::AsRawFd;
            let link = fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
            let link = link.to_str().unwrap().to_owned();
            link["socket:[".len()..link.len() - 1].parse().unwrap()
        };
        let owners = Owners::scan(&HashSet::from([inode, 1]));
        let me: Vec<Process> = owners.of(inode).collect();
        assert_eq!(me.len(), 1, "{me:?}");
        assert_eq!(me[0].pid, std::process::id());
        assert!(owners.knows(inode));
        assert!(!owners.knows(1));
        assert_eq!(owners.of_all([inode, 1]), me);
    }
}
