//! The error carried inside `io::Error` when the library closed a connection.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use crate::state::CloseReason;

/// A read or write failed because tcp-hygiene closed the connection.
///
/// It rides inside the `io::Error` the stream returns, which keeps the kind of the
/// underlying failure (usually `BrokenPipe`); get it back with
/// [`io::Error::get_ref`] and `downcast_ref::<Closed>()`.
#[derive(Debug)]
pub struct Closed {
    pub(crate) reason: CloseReason,
    pub(crate) source: io::Error,
}

impl Closed {
    /// Why the connection was closed.
    pub fn reason(&self) -> CloseReason {
        self.reason
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connection closed by tcp-hygiene ({}): {}",
            self.reason, self.source
        )
    }
}

impl StdError for Closed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}
