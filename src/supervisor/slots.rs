//! The connections as the supervisor reaches them: the table's pages it knows of, and its
//! own entry ([`Entry`]) per slot, page by page like the table, and beside them the
//! clocks of the connections that keep any.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::slot_map::SlotMap;
use crate::conn::{Conn, Page, PAGE};
use crate::id::ConnectionId;
use crate::rules::{Clocks, Entry, Watch};
use crate::shared::Shared;
use crate::sys;

pub(super) struct Slots {
    shared: Arc<Shared>,
    /// The table's pages, as far as registrations have reached.
    pages: Vec<Arc<Page>>,
    /// Boxed, so that the list's spare capacity is pointers rather than 2 KiB pages, and
    /// a new page moves no entry (clippy's `vec_box` would unbox anything under 4 KiB).
    #[allow(clippy::vec_box)]
    watches: Vec<Box<[Entry; PAGE]>>,
    /// The clocks of the connections that keep any (see [`Entry`]), apart: in the entry, a
    /// pointer to them would double every connection's 8 bytes for the sake of those
    /// closing or waiting on data. Shrunk as connections are freed, so a burst of them (a
    /// drain, a wave of `CLOSE_WAIT`) leaves no table of its size behind.
    clocks: SlotMap<Box<Clocks>>,
}

impl Slots {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            pages: Vec::new(),
            watches: Vec::new(),
            clocks: SlotMap::default(),
        }
    }

    /// Learns of the table's new pages, up to the one of slot `index`.
    fn know_page(&mut self, index: u32) {
        if index as usize / PAGE < self.pages.len() {
            return;
        }
        self.pages = self.shared.table.pages();
        while self.watches.len() < self.pages.len() {
            self.watches.push(Box::new([Entry::default(); PAGE]));
        }
    }

    fn known(&self, index: u32) -> bool {
        (index as usize / PAGE) < self.watches.len()
    }

    /// A connection registered in slot `index`: its entry opens.
    pub(super) fn open(&mut self, index: u32) -> Conn {
        self.know_page(index);
        self.watch_mut(index).open();
        self.conn(index)
    }

    /// The connection in slot `index` (its page must be known).
    pub(super) fn conn(&self, index: u32) -> Conn {
        Conn::new(self.page(index).clone(), index)
    }

    /// The page of slot `index` (it must be known), to read the slot without a `Conn`.
    fn page(&self, index: u32) -> &Arc<Page> {
        &self.pages[index as usize / PAGE]
    }

    /// The entry of slot `index` (its page must be known), to ask about the connection.
    pub(super) fn watch(&self, index: u32) -> &Entry {
        &self.watches[index as usize / PAGE][index as usize % PAGE]
    }

    /// The connection in slot `index` (its page must be known) as the rules change it: its
    /// entry, with its clocks if it has any; both are stored back when the guard drops.
    pub(super) fn watch_mut(&mut self, index: u32) -> WatchMut<'_> {
        let entry = &mut self.watches[index as usize / PAGE][index as usize % PAGE];
        // Only a connection that has clocks pays for the lookup.
        let clocks = if entry.has_clocks() {
            self.clocks.remove(&index)
        } else {
            None
        };
        WatchMut {
            watch: Watch::load(*entry, clocks),
            entry,
            clocks: &mut self.clocks,
            index,
        }
    }

    /// The slot's heap items so far are stale from now on: returns the schedule of its
    /// next. The clocks have no part in it, so they stay where they are.
    pub(super) fn reschedule(&mut self, index: u32) -> u32 {
        let entry = &mut self.watches[index as usize / PAGE][index as usize % PAGE];
        entry.sched = entry.sched.wrapping_add(1);
        entry.sched
    }

    pub(super) fn is_live(&self, index: u32) -> bool {
        self.known(index) && self.watch(index).is_live()
    }

    /// Whether a heap item (slot, schedule) is still the slot's current one.
    pub(super) fn is_current(&self, index: u32, sched: u32) -> bool {
        self.is_live(index) && self.watch(index).sched == sched
    }

    /// The slot of `id` if it is this connection's (not an earlier occupant's).
    fn of(&self, id: ConnectionId) -> Option<u32> {
        let index = id.slot();
        (self.is_live(index) && self.page(index).generation(index) == id.generation())
            .then_some(index)
    }

    /// The slot of `id` while its application holds the stream (over or not).
    pub(super) fn held(&self, id: ConnectionId) -> Option<u32> {
        self.of(id)
            .filter(|i| !self.watch(*i).is_lingering() && !self.page(*i).is_released(*i))
    }

    /// The slot of `id` while the rules apply to it: held, and not over.
    pub(super) fn supervised(&self, id: ConnectionId) -> Option<u32> {
        self.held(id).filter(|i| !self.watch(*i).is_ended())
    }

    /// The slot of `id` while its socket's events matter: not over, held or lingering.
    pub(super) fn watched(&self, id: ConnectionId) -> Option<u32> {
        self.of(id).filter(|i| {
            let watch = self.watch(*i);
            !watch.is_ended() && (watch.is_lingering() || !self.page(*i).is_released(*i))
        })
    }

    /// Every slot whose connection is held by its application.
    pub(super) fn held_indices(&self) -> Vec<u32> {
        self.indices(|watch| !watch.is_lingering())
    }

    /// The slots to sweep for a FIN or a failure: held, not over, and not watched by the
    /// kernel (all of them where there are no kernel events).
    pub(super) fn swept(&self) -> Vec<u32> {
        self.indices(|watch| watch.is_supervised() && (sys::NEEDS_SWEEP || watch.is_unwatched()))
            .into_iter()
            .filter(|i| !self.page(*i).is_released(*i))
            .collect()
    }

    fn indices(&self, keep: impl Fn(&Entry) -> bool) -> Vec<u32> {
        let mut indices = Vec::new();
        for (p, watches) in self.watches.iter().enumerate() {
            for (i, watch) in watches.iter().enumerate() {
                if watch.is_live() && keep(watch) {
                    indices.push((p * PAGE + i) as u32);
                }
            }
        }
        indices
    }

    /// The connection in slot `index` is done with: its entry closes, and the
    /// supervisor's reference goes.
    pub(super) fn free(&mut self, index: u32) {
        let conn = self.conn(index);
        self.watch_mut(index).free();
        // Down to a quarter of its room: half of it goes (amortised O(1) per free).
        let room = self.clocks.capacity();
        if room > 64 && self.clocks.len() * 4 < room {
            self.clocks.shrink_to(self.clocks.len() * 2);
        }
        conn.unref();
    }

    /// Lets go of the pages (the supervisor is ending).
    pub(super) fn clear(&mut self) {
        self.pages.clear();
        self.watches.clear();
        self.clocks.clear();
    }
}

/// A connection's [`Watch`], lent out of its slot's entry and the side map of clocks: on
/// drop, the entry takes back the flags and the map the clocks (kept, or gone).
pub(super) struct WatchMut<'a> {
    watch: Watch,
    entry: &'a mut Entry,
    clocks: &'a mut SlotMap<Box<Clocks>>,
    index: u32,
}

impl Deref for WatchMut<'_> {
    type Target = Watch;

    fn deref(&self) -> &Watch {
        &self.watch
    }
}

impl DerefMut for WatchMut<'_> {
    fn deref_mut(&mut self) -> &mut Watch {
        &mut self.watch
    }
}

impl Drop for WatchMut<'_> {
    fn drop(&mut self) {
        let (entry, clocks) = std::mem::take(&mut self.watch).store();
        *self.entry = entry;
        // Taken out of the map when lent: clocks that went are gone already.
        if let Some(clocks) = clocks {
            self.clocks.insert(self.index, clocks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Flags;
    use crate::state::CloseReason;

    /// Clocks lent and stored back stay with their connection, go when it is freed (a new
    /// occupant starts without them), and a burst of them leaves the side table small.
    #[test]
    fn clocks_follow_their_connection_and_their_table_shrinks_after_a_burst() {
        let (tx, _rx) = crate::mailbox::channel();
        let config = crate::listener::Builder::new().build().expect("defaults");
        let shared = Arc::new(Shared::new(config, tx, "t"));
        let mut slots = Slots::new(shared.clone());
        let peer = "192.0.2.1:9".parse().unwrap();
        let n = 2_000;
        let indices: Vec<u32> = (0..n)
            .map(|_| {
                let (_, index) = shared.table.occupy(&shared, -1, peer, Flags::NONE).unwrap();
                drop(slots.open(index));
                index
            })
            .collect();
        for &i in &indices {
            let mut watch = slots.watch_mut(i);
            watch.set_owner_closes();
            let _ = watch.closing(CloseReason::IdleTimeout, false, 1);
        }
        assert_eq!(slots.clocks.len(), n);
        for &i in &indices {
            assert!(slots.watch(i).has_clocks());
            assert!(slots.watch_mut(i).has_clocks(), "lent with its clocks");
        }
        assert_eq!(slots.clocks.len(), n, "every guard stored its clocks back");
        for &i in &indices {
            slots.free(i);
            assert!(!slots.watch(i).has_clocks());
        }
        assert!(slots.clocks.is_empty());
        assert!(
            slots.clocks.capacity() <= 128,
            "{}",
            slots.clocks.capacity()
        );
        drop(slots.open(indices[0]));
        assert!(!slots.watch_mut(indices[0]).has_clocks());
        shared.table.clear();
    }
}
