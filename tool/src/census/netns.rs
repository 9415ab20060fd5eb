//! Running a census or a reap inside another network namespace.
//!
//! A thread of our own enters the namespace (`setns(CLONE_NEWNET)` through rustix's safe
//! wrapper), does all the work there — netlink sockets and `/proc/thread-self/net` belong
//! to the namespace of the thread that opens them — and ends. The caller's threads never
//! change namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::thread;

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// Where `ip netns add NAME` pins a namespace.
const NAMED: &str = "/var/run/netns";

/// The namespace file for `name`: a name made by `ip netns` (`/var/run/netns/NAME`), or a
/// path such as `/proc/PID/ns/net` (anything with a `/`).
fn path_of(name: &str) -> io::Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    if name.is_empty() || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid network namespace name {name:?}"),
        ));
    }
    Ok(PathBuf::from(NAMED).join(name))
}

/// Runs `f` on a new thread inside network namespace `name` and returns its result.
///
/// # Errors
///
/// If the namespace does not exist, cannot be entered (needs `CAP_SYS_ADMIN`), or `f`
/// fails.
pub(crate) fn run_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let path = path_of(name)?;
    let name = name.to_owned();
    let worker = thread::Builder::new()
        .name("tcp-hygiene-netns".into())
        .spawn(move || {
            let context = |e: io::Error, what: &str| {
                io::Error::new(
                    e.kind(),
                    format!("network namespace {name} ({}): {what}: {e}", path.display()),
                )
            };
            let file = File::open(&path).map_err(|e| context(e, "cannot open"))?;
            move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).map_err(
                |e| {
                    let hint = if e == rustix::io::Errno::PERM {
                        "cannot enter (needs CAP_SYS_ADMIN: run as root)"
                    } else {
                        "cannot enter"
                    };
                    context(e.into(), hint)
                },
            )?;
            f()
        })?;
    worker
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the network namespace thread panicked")))
}

#[cfg(test)]
mod tests {
    use tcp_hygiene_test_support::system::Need;

    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(
            path_of("blue").unwrap(),
            PathBuf::from("/var/run/netns/blue")
        );
        assert_eq!(
            path_of("/proc/1/ns/net").unwrap(),
            PathBuf::from("/proc/1/ns/net")
        );
        assert!(path_of("..").is_err());
        assert!(path_of("").is_err());
    }

    #[test]
    fn a_missing_namespace_is_a_clear_error() {
        let err = run_in("tcp-hygiene-no-such-namespace", || Ok(())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains("tcp-hygiene-no-such-namespace"),
            "{err}"
        );
    }

    #[test]
    fn runs_inside_the_namespace_of_a_process() {
        // Entering a namespace, even our own, needs CAP_SYS_ADMIN.
        tcp_hygiene_test_support::require!(Need::Root);
        // Our own namespace, entered by path: the closure runs and its result comes back.
        let inode = run_in("/proc/self/ns/net", || {
            std::fs::read_link("/proc/thread-self/ns/net")
        })
        .unwrap();
        assert_eq!(inode, std::fs::read_link("/proc/self/ns/net").unwrap());
    }
}
