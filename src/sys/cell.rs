//! The part of a connection that the application's task and the supervisor share and that
//! needs care to share soundly: a state word, the descriptor the application owns, and the
//! waker of a read parked on it.
//!
//! Two bits of the word are locks that only this type takes: `FD_BUSY` while someone
//! borrows the descriptor, `WAKER_LOCK` while someone swaps the waker. `FD_GONE` says the
//! owner has closed (or is about to close) the descriptor: nobody may borrow it any more.
//! The owner sets it while holding `FD_BUSY`, so no borrow is in progress when it closes
//! the descriptor, and none can start after: the supervisor can never act on a descriptor
//! number that the kernel has handed to another socket. Every lock is held for one short
//! operation (a syscall, swapping a waker), so waiting spins.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::Ordering;
use std::task::Waker;

use crate::sync::{backoff, AtomicI32, AtomicU32, UnsafeCell};

const FD_BUSY: u32 = 1 << 29;
const WAKER_LOCK: u32 = 1 << 30;
const FD_GONE: u32 = 1 << 31;
const RESERVED: u32 = FD_BUSY | WAKER_LOCK | FD_GONE;

/// The bits of the word that belong to the caller: bits 0..=28.
pub(crate) const USER_BITS: u32 = !RESERVED;

pub(crate) struct SocketCell {
    word: AtomicU32,
    fd: AtomicI32,
    reader: UnsafeCell<Option<Waker>>,
}

// SAFETY: `reader` is only accessed while `WAKER_LOCK` is held (see `with_reader`), and
// `Waker` is `Send + Sync`; everything else is atomic.
unsafe impl Sync for SocketCell {}

impl SocketCell {
    /// An empty cell: no descriptor.
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU32::new(FD_GONE),
            fd: AtomicI32::new(-1),
            reader: UnsafeCell::new(None),
        }
    }

    /// Gives the cell a new descriptor and user bits. Only for a cell nobody else can
    /// reach (a free slot being handed out): the release store publishes both.
    pub(crate) fn reset(&self, fd: RawFd, bits: u32) {
        drop(self.take_waker());
        self.fd.store(fd, Ordering::Relaxed);
        self.word.store(bits & USER_BITS, Ordering::Release);
    }

    /// The user bits.
    #[inline]
    pub(crate) fn load(&self) -> u32 {
        self.word.load(Ordering::Acquire) & USER_BITS
    }

    /// The user bits, without ordering: for the hot path's checks of a flag.
    #[cfg(feature = "tls")]
    #[inline]
    pub(crate) fn load_relaxed(&self) -> u32 {
        self.word.load(Ordering::Relaxed) & USER_BITS
    }

    /// Clears user bits; returns the user bits before.
    pub(crate) fn fetch_clear(&self, bits: u32) -> u32 {
        self.word.fetch_and(!(bits & USER_BITS), Ordering::AcqRel) & USER_BITS
    }

    /// Sets user bits; returns the user bits before.
    pub(crate) fn fetch_or(&self, bits: u32) -> u32 {
        self.word.fetch_or(bits & USER_BITS, Ordering::AcqRel) & USER_BITS
    }

    /// Replaces the user bits with `f(bits)` for as long as it returns `Some`, atomically;
    /// returns the user bits before, and whether `f` agreed.
    pub(crate) fn update(&self, mut f: impl FnMut(u32) -> Option<u32>) -> (u32, bool) {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let Some(new) = f(word & USER_BITS) else {
                return (word & USER_BITS, false);
            };
            let new = (new & USER_BITS) | (word & RESERVED);
            match self
                .word
                .compare_exchange_weak(word, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return (word & USER_BITS, true),
                Err(actual) => word = actual,
            }
        }
    }

    /// Takes `bit` (one of the locks), unless `unless` is set; returns whether it did.
    fn lock(&self, bit: u32, unless: u32) -> bool {
        self.lock_word(bit, unless).is_some()
    }

    /// Takes `bit` (one of the locks), unless `unless` is set; returns the word it was
    /// taken on (so `unless` was clear when it was taken), or `None` if it was not.
    fn lock_word(&self, bit: u32, unless: u32) -> Option<u32> {
        let mut spins = 0u32;
        loop {
            let word = self.word.load(Ordering::Relaxed);
            if word & unless != 0 {
                return None;
            }
            if word & bit == 0
                && self
                    .word
                    .compare_exchange_weak(word, word | bit, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Some(word);
            }
            spins += 1;
            backoff(spins);
        }
    }

    fn unlock(&self, bit: u32) {
        self.word.fetch_and(!bit, Ordering::Release);
    }

    /// Runs `f` on the descriptor if its owner has not given it up yet.
    pub(crate) fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
        if !self.lock(FD_BUSY, FD_GONE) {
            return None;
        }
        let fd = self.fd.load(Ordering::Relaxed);
        // SAFETY: `FD_GONE` was not set when we took `FD_BUSY`, and the owner sets it (while
        // holding `FD_BUSY`) before it closes the descriptor; we hold `FD_BUSY` for the whole
        // borrow, so the descriptor is open and still the socket of this connection.
        let result = f(unsafe { BorrowedFd::borrow_raw(fd) });
        self.unlock(FD_BUSY);
        Some(result)
    }

    /// The owner is about to close the descriptor (or keeps it for itself): once this
    /// returns, nobody borrows it any more.
    pub(crate) fn forget_fd(&self) {
        if self.lock(FD_BUSY, FD_GONE) {
            self.word.fetch_or(FD_GONE, Ordering::Relaxed);
            self.unlock(FD_BUSY);
        }
    }

    /// Remembers `waker` as the parked reader's (unless it is the same one already),
    /// unless one of the user bits `unless` is set; returns the user bits it saw, or
    /// `None` if it remembered nothing.
    ///
    /// The bits are judged under the lock: whoever sets one of them and then takes the
    /// waker ([`take_waker`](Self::take_waker)) either makes this return `None` or
    /// takes the waker it remembered. No second look at the bits is needed.
    pub(crate) fn register_waker(&self, waker: &Waker, unless: u32) -> Option<u32> {
        let (word, replaced) = self.with_reader(unless, |slot| match slot {
            Some(w) if w.will_wake(waker) => None,
            _ => slot.replace(waker.clone()),
        })?;
        // Dropping a waker can run arbitrary code: outside the lock.
        drop(replaced);
        Some(word)
    }

    /// Takes the parked reader's waker, if any (to be woken outside the lock).
    pub(crate) fn take_waker(&self) -> Option<Waker> {
        self.with_reader(0, Option::take)
            .and_then(|(_, waker)| waker)
    }

    /// Runs `f` on the parked reader's waker under `WAKER_LOCK`, unless one of the user
    /// bits `unless` is set when the lock is taken; returns the user bits it was taken on,
    /// and what `f` returned.
    fn with_reader<R>(
        &self,
        unless: u32,
        f: impl FnOnce(&mut Option<Waker>) -> R,
    ) -> Option<(u32, R)> {
        let word = self.lock_word(WAKER_LOCK, unless & USER_BITS)?;
        // SAFETY: we hold `WAKER_LOCK`, the only way to reach `reader`, until the unlock
        // below, and the reference does not escape `f`.
        let result = self.reader.with_mut(|reader| f(unsafe { &mut *reader }));
        self.unlock(WAKER_LOCK);
        Some((word & USER_BITS, result))
    }
}

impl std::fmt::Debug for SocketCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketCell")
            .field("word", &self.word.load(Ordering::Relaxed))
            .field("fd", &self.fd.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn user_bits_never_touch_the_locks() {
        let cell = SocketCell::new();
        cell.reset(3, u32::MAX);
        assert_eq!(cell.load(), USER_BITS);
        assert_eq!(cell.fetch_or(RESERVED), USER_BITS);
        let (before, done) = cell.update(|_| Some(u32::MAX));
        assert!(done);
        assert_eq!(before, USER_BITS);
        // The descriptor is still borrowable: no lock bit was set by the user.
        assert_eq!(
            cell.with_fd(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd)),
            Some(3)
        );
    }

    #[test]
    fn a_forgotten_descriptor_is_never_borrowed() {
        let cell = SocketCell::new();
        assert_eq!(cell.with_fd(|_| ()), None, "an empty cell");
        cell.reset(5, 0);
        assert!(cell.with_fd(|_| ()).is_some());
        cell.forget_fd();
        assert_eq!(cell.with_fd(|_| ()), None);
        cell.reset(6, 0);
        assert!(
            cell.with_fd(|_| ()).is_some(),
            "a new descriptor after reuse"
        );
    }

    #[test]
    fn the_waker_is_taken_once_and_replaced_only_when_different() {
        let cell = SocketCell::new();
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(count.clone());
        assert_eq!(cell.register_waker(&waker, 0), Some(0));
        assert_eq!(cell.register_waker(&waker, 0), Some(0));
        cell.take_waker().expect("registered").wake();
        assert!(cell.take_waker().is_none());
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_waker_is_not_remembered_once_a_bit_it_is_registered_unless_is_set() {
        let cell = SocketCell::new();
        cell.reset(3, 0b101);
        let waker = Waker::from(Arc::new(Count(0.into())));
        assert_eq!(cell.register_waker(&waker, 0b010), Some(0b101));
        assert!(cell.take_waker().is_some());
        assert_eq!(cell.register_waker(&waker, 0b100), None);
        assert!(cell.take_waker().is_none(), "nothing remembered");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use std::sync::atomic::Ordering::SeqCst;

    /// Counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    /// A cell, and a thread that parks a read on it (`register_waker` unless `unless`)
    /// with a waker that counts its wakes; the thread returns whether it parked.
    fn parking_reader(
        unless: u32,
    ) -> (
        Arc<SocketCell>,
        std::sync::Arc<Count>,
        loom::thread::JoinHandle<bool>,
    ) {
        let cell = Arc::new(SocketCell::new());
        cell.reset(3, 0);
        let count = std::sync::Arc::new(Count(0.into()));
        let waker = Waker::from(count.clone());
        let reader = {
            let cell = cell.clone();
            loom::thread::spawn(move || cell.register_waker(&waker, unless).is_some())
        };
        (cell, count, reader)
    }

    /// The owner forgets and closes its descriptor while the supervisor borrows it: a
    /// borrow either runs entirely before the close or not at all.
    #[test]
    fn loom_a_borrowed_descriptor_is_never_closed_under_the_borrow() {
        loom::model(|| {
            let cell = Arc::new(SocketCell::new());
            cell.reset(7, 0);
            let closed = Arc::new(AtomicBool::new(false));
            let supervisor = {
                let (cell, closed) = (cell.clone(), closed.clone());
                loom::thread::spawn(move || {
                    cell.with_fd(|fd| {
                        assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&fd), 7);
                        assert!(!closed.load(SeqCst), "borrowed a closed descriptor");
                    })
                })
            };
            // The owner: forget, then close.
            cell.forget_fd();
            closed.store(true, SeqCst);
            supervisor.join().unwrap();
            assert_eq!(cell.with_fd(|_| ()), None, "forgotten for good");
        });
    }

    /// The user bits change (a flag set, a reason claimed) while the descriptor is
    /// borrowed and the owner forgets it: no update is lost, and no lock bit leaks into
    /// the user's word.
    #[test]
    fn loom_user_bits_and_locks_never_lose_an_update() {
        loom::model(|| {
            let cell = Arc::new(SocketCell::new());
            cell.reset(3, 0);
            let a = {
                let cell = cell.clone();
                loom::thread::spawn(move || {
                    cell.with_fd(|_| {
                        cell.fetch_or(1);
                    });
                })
            };
            let b = {
                let cell = cell.clone();
                loom::thread::spawn(move || {
                    cell.update(|w| Some(w | 2));
                    cell.forget_fd();
                })
            };
            a.join().unwrap();
            b.join().unwrap();
            // Bit 0 is set only if the borrow ran; bit 1 always.
            let word = cell.load();
            assert_eq!(word & 2, 2);
            assert_eq!(word & !3, 0, "no lock bit in the user's word");
        });
    }

    /// A read parks (registers its waker) while the supervisor closes and takes the
    /// waker to wake it: the waker is taken at most once and never touched by both at
    /// once (loom checks the cell's accesses).
    #[test]
    fn loom_the_parked_readers_waker_is_swapped_safely() {
        loom::model(|| {
            let (cell, count, reader) = parking_reader(0);
            let woken = cell.take_waker().map(Waker::wake).is_some();
            assert!(reader.join().unwrap());
            let left = cell.take_waker().is_some();
            // Taken by the supervisor, or still registered: exactly one of them.
            assert!(woken ^ left);
            assert_eq!(count.0.load(SeqCst), usize::from(woken));
        });
    }

    /// The library closes (sets a bit) and then wakes the parked reader, while a read
    /// parks unless that bit is set: the read either sees the bit and does not park, or
    /// parks and is woken. It is never left parked with nobody to wake it.
    #[test]
    fn loom_a_read_parking_as_the_library_closes_sees_the_close_or_is_woken() {
        const SHUT: u32 = 0b1000;
        loom::model(|| {
            let (cell, count, reader) = parking_reader(SHUT);
            cell.fetch_or(SHUT);
            if let Some(waker) = cell.take_waker() {
                waker.wake();
            }
            let parked = reader.join().unwrap();
            assert_eq!(
                count.0.load(SeqCst),
                usize::from(parked),
                "parked and never woken"
            );
            assert!(cell.take_waker().is_none());
        });
    }
}
