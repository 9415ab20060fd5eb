//! The crate's errors: an invalid option ([`ConfigError`]), and the error carried inside
//! `io::Error` when the library closed a connection ([`Closed`]).

use std::error::Error as StdError;
use std::fmt;
use std::io;

use crate::state::CloseReason;

/// A read or write failed because tcp-hygiene closed the connection, or a
/// [`Connector`](crate::Connector)'s connect timed out
/// ([`CloseReason::ConnectTimeout`]).
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
        match self.reason {
            CloseReason::ConnectTimeout => {
                write!(f, "tcp-hygiene gave up connecting: {}", self.source)
            }
            reason => write!(
                f,
                "connection closed by tcp-hygiene ({reason}): {}",
                self.source
            ),
        }
    }
}

impl StdError for Closed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// An invalid option given to the [`Builder`](crate::Builder).
///
/// Its message names the option, e.g.
/// ``invalid `close_wait_timeout`: must be greater than zero (pass None to disable)``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    option: &'static str,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(option: &'static str, message: impl Into<String>) -> Self {
        Self {
            option,
            message: message.into(),
        }
    }

    /// The name of the offending option, as spelled by its builder method (for
    /// keepalive fields, `keepalive.idle`, `keepalive.interval`, `keepalive.retries`).
    pub fn option(&self) -> &'static str {
        self.option
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.option, self.message)
    }
}

impl StdError for ConfigError {}

impl From<ConfigError> for io::Error {
    fn from(e: ConfigError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}
