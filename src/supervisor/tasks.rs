//! The tasks spawned through the library, by slot: aborted when their connection ends.

use tokio::task::AbortHandle;

use super::slot_map::SlotMap;

#[derive(Debug, Default)]
pub(super) struct Tasks {
    handles: SlotMap<AbortHandle>,
}

impl Tasks {
    pub(super) fn keep(&mut self, index: u32, task: AbortHandle) {
        self.handles.insert(index, task);
    }

    /// Aborts the task serving slot `index`, if one is kept.
    pub(super) fn abort(&mut self, index: u32) {
        if let Some(task) = self.handles.remove(&index) {
            task.abort();
        }
    }

    /// The stream is released: its task no longer holds the connection.
    pub(super) fn forget(&mut self, index: u32) {
        // Most connections have no task of the library's: no hashing for them.
        if !self.handles.is_empty() {
            self.handles.remove(&index);
        }
    }
}
