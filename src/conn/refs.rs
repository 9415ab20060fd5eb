//! A slot's reference count and generation: who may still reach the connection in it,
//! and which connection that is.
//!
//! The stream, the supervisor and every handle hold a reference; the last to let go frees
//! the slot, whose generation then moves on, so that an id (slot, generation) taken
//! earlier never reaches the slot's next connection. A lookup by id counts a reference
//! first and checks the generation after: counted, the slot cannot be freed and taken by
//! another connection under it.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::sync::AtomicU32;

#[derive(Debug)]
pub(crate) struct Refs {
    count: AtomicU32,
    gen: AtomicU32,
}

impl Refs {
    /// A free slot, of generation 1.
    pub(crate) fn new() -> Self {
        Self {
            count: AtomicU32::new(0),
            gen: AtomicU32::new(1),
        }
    }

    /// The free slot becomes a connection's, with `holders` references. Nobody else holds
    /// a free slot; the release store publishes everything written to the slot before,
    /// and the generation moved on when it was freed, to whoever counts a reference.
    pub(crate) fn occupy(&self, holders: u32) {
        self.count.store(holders, Release);
    }

    /// One more reference, from a holder of one (a handle cloned).
    pub(crate) fn add(&self) {
        self.count.fetch_add(1, Relaxed);
    }

    /// Counts a reference if the slot is occupied.
    pub(crate) fn acquire(&self) -> bool {
        self.count
            .fetch_update(AcqRel, Acquire, |r| (r > 0).then_some(r + 1))
            .is_ok()
    }

    /// Lets go of a reference; returns true if it was the last: the slot's generation
    /// has moved on, and the caller must put it back on the free list.
    #[must_use]
    pub(crate) fn release(&self) -> bool {
        if self.count.fetch_sub(1, AcqRel) == 1 {
            self.gen.fetch_add(1, Release);
            return true;
        }
        false
    }

    pub(crate) fn generation(&self) -> u32 {
        self.gen.load(Acquire)
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;

    /// Two holders let go while someone looks the connection up by id, and the slot is
    /// taken by the next connection as soon as it is free: the lookup gets the first
    /// connection or nothing, never the second; the slot is freed exactly once per
    /// connection; a successful lookup keeps it from being freed under it.
    #[test]
    fn loom_a_lookup_by_id_never_reaches_the_next_connection() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let refs = Arc::new(Refs::new());
            refs.occupy(2);
            let first = refs.generation();
            let freed = Arc::new(AtomicUsize::new(0));
            let holders: Vec<_> = (0..2)
                .map(|_| {
                    let (refs, freed) = (refs.clone(), freed.clone());
                    loom::thread::spawn(move || {
                        if refs.release() {
                            freed.fetch_add(1, Relaxed);
                            // The next connection takes the slot at once.
                            refs.occupy(1);
                        }
                    })
                })
                .collect();
            let lookup = {
                let (refs, freed) = (refs.clone(), freed.clone());
                loom::thread::spawn(move || {
                    // As `Table::find`: count a reference, then check the generation.
                    if !refs.acquire() {
                        return;
                    }
                    if refs.generation() == first {
                        // Counted: not freed while we hold it.
                        assert_eq!(freed.load(Relaxed), 0, "freed under a reference");
                    }
                    if refs.release() {
                        freed.fetch_add(1, Relaxed);
                    }
                })
            };
            for holder in holders {
                holder.join().unwrap();
            }
            lookup.join().unwrap();
            // Freed once per connection: the first, and the next one if the lookup held
            // its last reference.
            let freed = freed.load(Relaxed);
            assert!(freed == 1 || freed == 2, "freed {freed} times");
            assert_eq!(refs.generation(), first + freed as u32);
        });
    }
}
