//! The atomics and cells of the lock-free protocols (the socket cell, a slot's counts),
//! from `loom` under `--cfg loom` so that its models explore every interleaving, from
//! `std` otherwise.

#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{AtomicI32, AtomicU32};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{AtomicI32, AtomicU32};

/// An `UnsafeCell` with loom's interface: access through a closure, so that loom can
/// check that no two accesses overlap.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(
    #[cfg(all(test, loom))] loom::cell::UnsafeCell<T>,
    #[cfg(not(all(test, loom)))] std::cell::UnsafeCell<T>,
);

impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(all(test, loom))]
        return Self(loom::cell::UnsafeCell::new(value));
        #[cfg(not(all(test, loom)))]
        return Self(std::cell::UnsafeCell::new(value));
    }

    /// Runs `f` with a pointer to the value; the caller must hold whatever gives it the
    /// only access.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(all(test, loom))]
        return self.0.with_mut(f);
        #[cfg(not(all(test, loom)))]
        return f(self.0.get());
    }
}

/// Waits a little before trying a lock again: spins, then yields (under loom, always
/// yields, so that the model lets the lock's holder run).
pub(crate) fn backoff(spins: u32) {
    #[cfg(all(test, loom))]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
    #[cfg(not(all(test, loom)))]
    if spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}
