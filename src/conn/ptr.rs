//! [`Conn`]: a connection's slot, reached in one load (the stream's hot path), and the page
//! that keeps it alive.

use std::ptr::NonNull;
use std::sync::Arc;

use super::table::{Page, Slot, PAGE};

/// A connection: the page that keeps its slot (and the listener's shared state) alive, and
/// the slot's address, so that nothing recomputes page + index × slot size on every use.
/// Not counted: the supervisor's own reference is counted once, when the connection is
/// registered; [`ConnRef`](super::ConnRef) is the counted kind.
#[derive(Clone)]
pub(crate) struct Conn {
    page: Arc<Page>,
    /// Points into `page`'s slots.
    slot: NonNull<Slot>,
}

// SAFETY: a `Conn` is an `Arc<Page>` (`Send + Sync`: a page is slots and an `Arc<Shared>`,
// all `Sync`) and a `&Slot` into that page, kept alive by the `Arc`; `Slot` is `Sync`
// (atomics and a `SocketCell`), so `&Slot` is `Send + Sync`.
unsafe impl Send for Conn {}
// SAFETY: as above.
unsafe impl Sync for Conn {}

impl Conn {
    pub(crate) fn new(page: Arc<Page>, index: u32) -> Self {
        let slot = NonNull::from(&page.slots[index as usize % PAGE]);
        Self { page, slot }
    }

    /// The slot, without recomputing its address.
    #[inline]
    pub(super) fn slot(&self) -> &Slot {
        // SAFETY: `slot` points into the slots of the page that `self.page` keeps alive for
        // as long as `self` lives; a page's slots never move (they are part of the `Arc`'s
        // allocation) and are only ever shared (`&Slot`: every field is atomic, immutable,
        // or synchronised by `SocketCell`).
        unsafe { self.slot.as_ref() }
    }

    /// Which slot of its page this is.
    pub(super) fn offset(&self) -> u32 {
        let first = self.page.slots.as_ptr() as usize;
        ((self.slot.as_ptr() as usize - first) / std::mem::size_of::<Slot>()) as u32
    }

    /// The page: the listener's shared state.
    #[inline]
    pub(super) fn page(&self) -> &Page {
        &self.page
    }
}
