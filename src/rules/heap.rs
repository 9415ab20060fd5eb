//! One heap of deadlines for every connection, lingering ones included, as tokio-util's
//! `DelayQueue` is one structure for every key.
//!
//! Rescheduling leaves the old item behind, deleted lazily when it reaches the top: an
//! item is current only while its schedule number is the key's current one (the caller
//! keeps those, one per key, in its own entries). Far-off items of keys long gone would
//! pile up with churn, so the heap is rebuilt from its current items once it holds more
//! than twice as many as there are keys: amortised O(1) per push.
//!
//! An item is 16 bytes, and every connection with a deadline has a current one: the heap
//! grows by a quarter at a time, not by doubling, so that its spare room costs a
//! connection at most 4 bytes more, not up to 16 (stale items, up to twice as many as
//! keys between rebuilds, are another matter: an idle connection leaves none). Each
//! growth copies the items, four to five copies per item amortised, against a look's
//! microseconds; a rebuild leaves room for a quarter more.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::Nanos;

/// Deadlines by key `K`, each with the schedule it belongs to.
#[derive(Debug)]
pub(crate) struct DeadlineHeap<K> {
    heap: BinaryHeap<Reverse<(Nanos, K, u32)>>,
}

impl<K: Copy + Ord> Default for DeadlineHeap<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Copy + Ord> DeadlineHeap<K> {
    /// Adds `key`'s deadline `at` for its schedule `sched`. `keys` is how many keys
    /// are live, and `is_current` tells the current items from stale ones.
    pub(crate) fn push(
        &mut self,
        at: Nanos,
        key: K,
        sched: u32,
        keys: usize,
        is_current: impl Fn(K, u32) -> bool,
    ) {
        if self.heap.len() == self.heap.capacity() {
            self.heap.reserve_exact(Self::growth(self.heap.len()));
        }
        self.heap.push(Reverse((at, key, sched)));
        if self.heap.len() > 2 * keys + 64 {
            let heap = std::mem::take(&mut self.heap);
            let mut current: Vec<_> = heap
                .into_vec()
                .into_iter()
                .filter(|Reverse((_, key, sched))| is_current(*key, *sched))
                .collect();
            current.shrink_to(current.len() + Self::growth(current.len()));
            self.heap = BinaryHeap::from(current);
        }
    }

    /// Room to add to a heap of `len` items when it is full: a quarter more.
    fn growth(len: usize) -> usize {
        (len / 4).max(64)
    }

    /// The earliest current deadline (stale items on top are dropped).
    pub(crate) fn next(&mut self, is_current: impl Fn(K, u32) -> bool) -> Option<Nanos> {
        while let Some(Reverse((at, key, sched))) = self.heap.peek().copied() {
            if is_current(key, sched) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes the next key whose current deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Nanos, is_current: impl Fn(K, u32) -> bool) -> Option<K> {
        while let Some(Reverse((at, key, sched))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if is_current(key, sched) {
                return Some(key);
            }
        }
        None
    }

    /// Items held, stale ones included (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Items there is room for (tests).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.heap.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_items_are_skipped_and_pruned() {
        let mut heap = DeadlineHeap::default();
        let mut sched = [0u32; 4];
        // Key 1 rescheduled 1,000 times: the heap never holds more than it needs.
        for i in 0..1_000u64 {
            sched[1] += 1;
            let current = sched;
            heap.push(100 + i, 1u32, sched[1], 4, |k, s| current[k as usize] == s);
        }
        assert!(heap.len() <= 2 * 4 + 65, "{}", heap.len());
        sched[2] += 1;
        let current = sched;
        heap.push(50, 2, sched[2], 4, |k, s| current[k as usize] == s);
        let is = |k: u32, s: u32| current[k as usize] == s;
        assert_eq!(heap.next(is), Some(50));
        assert_eq!(heap.pop_due(49, is), None);
        assert_eq!(heap.pop_due(2_000, is), Some(2));
        assert_eq!(heap.pop_due(2_000, is), Some(1));
        assert_eq!(heap.pop_due(2_000, is), None);
        assert_eq!(heap.next(is), None);
    }

    /// A heap of one item per connection keeps room for at most a quarter more (and 64),
    /// as it grows and after it is rebuilt.
    #[test]
    fn room_for_more_is_at_most_a_quarter() {
        let mut heap = DeadlineHeap::default();
        let bound = |len: usize| len + len / 4 + 64;
        for key in 0..20_000u32 {
            heap.push(u64::from(key), key, 0, 20_000, |_, _| true);
            assert!(
                heap.capacity() <= bound(heap.len()),
                "{} for {}",
                heap.capacity(),
                heap.len()
            );
        }
        // Every key rescheduled twice: once the heap holds more than 2 × 20,000 + 64
        // items, the rebuild keeps only the current ones, and gives back the room.
        for sched in 1..=2 {
            for key in 0..20_000u32 {
                heap.push(u64::from(key), key, sched, 20_000, |_, s| s == sched);
                let (room, len) = (heap.capacity(), heap.len());
                assert!(room <= bound(len), "{room} for {len}");
            }
        }
        assert_eq!(heap.len(), 20_000, "the stale items went at the rebuild");
    }
}
