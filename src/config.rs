//! The builder and the validated configuration it produces.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::ToSocketAddrs;

use crate::listener::TcpListener;

/// Default for [`Builder::close_wait_timeout`]: 30 seconds.
pub const DEFAULT_CLOSE_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`Builder::fin_wait_timeout`]: 60 seconds, Linux's `tcp_fin_timeout`.
pub const DEFAULT_FIN_WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`Builder::keepalive`]: idle 60 s, then 6 probes 10 s apart, so a vanished
/// idle peer is found within 2 minutes (Linux alone: 2 h + 9 × 75 s).
pub const DEFAULT_KEEPALIVE: Keepalive = Keepalive {
    idle: Duration::from_secs(60),
    interval: Duration::from_secs(10),
    retries: 6,
};
/// Default for [`Builder::user_timeout`] when keepalive is off: 120 seconds. With
/// keepalive on (the default), the default user timeout is the keepalive's
/// [`worst_case`](Keepalive::worst_case) instead, which for [`DEFAULT_KEEPALIVE`] is also
/// 120 seconds.
pub const DEFAULT_USER_TIMEOUT: Duration = Duration::from_secs(120);

// Linux's limits (include/net/tcp.h): MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT.
const MAX_KEEPALIVE_SECS: u64 = 32_767;
const MAX_KEEPALIVE_RETRIES: u32 = 127;
// The shortest timeout: the supervisor's timer and the kernel count no finer.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
// `TCP_USER_TIMEOUT` is an `int` of milliseconds.
const MAX_USER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// TCP keepalive parameters: after `idle` without traffic the kernel sends a probe every
/// `interval`, and resets the connection after `retries` unanswered probes.
///
/// A vanished peer of an idle connection is found within
/// `idle + interval × retries` ([`Keepalive::worst_case`]). Keepalive stops probing while
/// sent data is unacknowledged; [`Builder::user_timeout`] covers that case.
///
/// The kernel counts in whole seconds: each duration must be a whole number of seconds
/// between 1 and 32767, and `retries` between 1 and 127.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    idle: Duration,
    interval: Duration,
    retries: u32,
}

impl Keepalive {
    /// Keepalive with the given idle time, probe interval and probe count.
    pub const fn new(idle: Duration, interval: Duration, retries: u32) -> Self {
        Self {
            idle,
            interval,
            retries,
        }
    }

    /// Idle time before the first probe (`TCP_KEEPIDLE`).
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Time between probes (`TCP_KEEPINTVL`).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Unanswered probes before the connection is reset (`TCP_KEEPCNT`).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The longest an idle connection to a vanished peer can survive:
    /// `idle + interval × retries` (saturating at `Duration::MAX`).
    pub fn worst_case(&self) -> Duration {
        self.idle
            .saturating_add(self.interval.saturating_mul(self.retries))
    }
}

/// How the library closes a connection when a timeout fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CloseMode {
    /// `shutdown(Write)`: the peer gets our FIN after every byte already written, never a
    /// reset, also if it sends more meanwhile; the application's reads return EOF (a
    /// parked read is woken) and its writes fail. `fin_wait_timeout` then bounds the wait
    /// for the peer's FIN, and `write_idle_timeout` a peer that stops taking the queued
    /// data. The default.
    ///
    /// A few rules close abortively whatever the mode, because the peer has stopped
    /// taking data and nothing more can be delivered: `write_idle_timeout`, and
    /// `fin_wait_timeout` after our FIN went unanswered.
    #[default]
    Graceful,
    /// Reset (RST), without closing the application's descriptor (on Linux
    /// `connect(AF_UNSPEC)`; elsewhere this degrades to `shutdown(Both)`). Leaves no
    /// `TIME_WAIT` or `LAST_ACK` behind; the application's reads fail with
    /// `ConnectionReset`.
    Abortive,
}

/// Configures and builds tcp-hygiene listeners.
///
/// Every timeout takes `impl Into<Option<Duration>>`: pass `None` to disable it. A timeout
/// must be at least 1 ms; there is no upper limit (a duration too large for the clock,
/// such as `Duration::MAX`, means "not in the next 30 years"). The final methods take
/// `&self`, so one builder can make many listeners.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// # async fn run() -> std::io::Result<()> {
/// let listener = tcp_hygiene::Builder::new()
///     .close_wait_timeout(Duration::from_secs(5))
///     .idle_timeout(Duration::from_secs(300))
///     .first_byte_timeout(Duration::from_secs(10))
///     .bind("127.0.0.1:8080")
///     .await?;
/// # let _ = listener; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    inner: Inner,
}

#[derive(Debug, Clone)]
pub(crate) struct Inner {
    pub(crate) close_wait_timeout: Option<Duration>,
    pub(crate) fin_wait_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) read_idle_timeout: Option<Duration>,
    pub(crate) write_idle_timeout: Option<Duration>,
    pub(crate) first_byte_timeout: Option<Duration>,
    pub(crate) max_connection_age: Option<Duration>,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) user_timeout: Option<Duration>,
    /// Whether `user_timeout` was set by the user; if not, it follows the keepalive.
    pub(crate) user_timeout_set: bool,
    pub(crate) nodelay: bool,
    pub(crate) linger: Option<Duration>,
    pub(crate) close_mode: CloseMode,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_ip: Option<usize>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! timeout_setter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub fn $name(&mut self, timeout: impl Into<Option<Duration>>) -> &mut Self {
            self.inner.$name = timeout.into();
            self
        }
    };
}

impl Builder {
    /// A builder with every option at its default.
    pub fn new() -> Self {
        Self {
            inner: Inner {
                close_wait_timeout: Some(DEFAULT_CLOSE_WAIT_TIMEOUT),
                fin_wait_timeout: Some(DEFAULT_FIN_WAIT_TIMEOUT),
                idle_timeout: None,
                read_idle_timeout: None,
                write_idle_timeout: None,
                first_byte_timeout: None,
                max_connection_age: None,
                keepalive: Some(DEFAULT_KEEPALIVE),
                user_timeout: Some(DEFAULT_USER_TIMEOUT),
                user_timeout_set: false,
                nodelay: false,
                linger: None,
                close_mode: CloseMode::Graceful,
                max_connections: None,
                max_connections_per_ip: None,
            },
        }
    }

    timeout_setter! {
        /// Closes a connection whose peer has sent FIN (our socket is in `CLOSE_WAIT`) once
        /// we have written nothing for this long, counted from the later of the FIN and
        /// our last byte written. A server still streaming a response to a half-closed
        /// client is not cut off; a handler that forgot the socket is.
        ///
        /// Enforced by the supervisor, whether or not the handler polls the stream. Pass
        /// `None` to disable. Default is 30 seconds.
        close_wait_timeout
    }

    timeout_setter! {
        /// After our FIN, waits this long for the peer's, counted from the later of our
        /// FIN and the last byte the peer acknowledged (a peer still taking a long
        /// response is not cut off), then resets the connection: the `FIN_WAIT_2` a peer
        /// never ends. It follows every FIN we send: the application's `shutdown`, a
        /// close by the library, the drain's half-close. Linux's `tcp_fin_timeout` only
        /// covers sockets the application has closed; this covers the ones it still
        /// holds, and once it drops the stream the socket gets it as `TCP_LINGER2`
        /// (Linux only; whole seconds rounded up, at most 120 s, the kernel's cap).
        /// Pass `None` to disable. Default is 60 seconds.
        fin_wait_timeout
    }

    timeout_setter! {
        /// Closes a connection on which no byte moved in either direction for this long.
        /// Measured from the kernel's counters on Linux (bytes received, bytes
        /// acknowledged), so a handler that does not poll still counts as idle only when
        /// the wire is. Pass `None` to disable. Default is `None`.
        idle_timeout
    }

    timeout_setter! {
        /// Closes a connection that received no byte for this long. Pass `None` to
        /// disable. Default is `None`.
        read_idle_timeout
    }

    timeout_setter! {
        /// Closes a connection that has bytes waiting to be sent (queued in the kernel)
        /// and had none acknowledged for this long: a peer that stopped reading, or
        /// vanished mid-transfer. Such a close is always abortive (RST): the peer takes
        /// nothing more, and a FIN would queue behind the unsent data. It also bounds the
        /// sockets the application dropped with data still queued (the library's
        /// lingering close, or, past it, the kernel's orphan, whose `TCP_USER_TIMEOUT` is
        /// lowered to it). On platforms without `TCP_INFO` it measures the application's
        /// writes instead. Pass `None` to disable. Default is `None`.
        write_idle_timeout
    }

    timeout_setter! {
        /// Closes a connection whose peer has not sent a single byte this long after
        /// accept (the "connect and stay silent" attack). Pass `None` to disable. Default
        /// is `None`.
        first_byte_timeout
    }

    timeout_setter! {
        /// Closes every connection this long after accept, busy or not. Pass `None` to
        /// disable. Default is `None`.
        max_connection_age
    }

    /// `TCP_USER_TIMEOUT` (Linux only; ignored elsewhere): the longest sent data may
    /// stay unacknowledged before the kernel gives up on the connection. It catches the
    /// peer that vanished while we were sending, which keepalive cannot see.
    ///
    /// It also takes over keepalive's verdict: when it is set, Linux ends a probing
    /// connection once this much time has passed since the peer was last heard from
    /// (checked at each probe, after at least one unanswered probe) instead of after
    /// `retries` probes. So an idle connection to a vanished peer ends at the first probe
    /// time `idle + k × interval` (k ≥ 1) that is at least this timeout: a shorter user
    /// timeout ends it after the first unanswered probe, a longer one keeps probing past
    /// `retries`. Left unset, it follows the keepalive: it equals
    /// [`Keepalive::worst_case`], so keepalive keeps its own bound and unacknowledged data
    /// gets the same one.
    ///
    /// Millisecond resolution, at most `i32::MAX` ms. Pass `None` to disable. Default is
    /// the keepalive's worst case (120 seconds with [`DEFAULT_KEEPALIVE`]), or
    /// [`DEFAULT_USER_TIMEOUT`] (120 seconds) with keepalive off.
    pub fn user_timeout(&mut self, timeout: impl Into<Option<Duration>>) -> &mut Self {
        self.inner.user_timeout = timeout.into();
        self.inner.user_timeout_set = true;
        self
    }

    /// TCP keepalive applied to every accepted socket. Pass `None` to leave the socket's
    /// (system) setting alone. Default is [`DEFAULT_KEEPALIVE`]: idle 60 s, interval 10 s,
    /// 6 probes, so an idle half-open connection is found within 2 minutes.
    pub fn keepalive(&mut self, keepalive: impl Into<Option<Keepalive>>) -> &mut Self {
        self.inner.keepalive = keepalive.into();
        self
    }

    /// `TCP_NODELAY` on every accepted socket. Default is `false` (Nagle on, the
    /// kernel's default).
    pub fn nodelay(&mut self, nodelay: bool) -> &mut Self {
        self.inner.nodelay = nodelay;
        self
    }

    /// `SO_LINGER` on every accepted socket. Only `Some(Duration::ZERO)` is accepted: it
    /// makes dropping a stream abortive (RST, no `TIME_WAIT`, unsent data discarded), and
    /// the library then leaves such a socket to the kernel when it is dropped. A non-zero
    /// linger makes `close()` block the thread until the data is sent or the time is up,
    /// even on a non-blocking socket, which would stall a tokio runtime: it is rejected by
    /// [`build`](Self::build) (tokio deprecated `set_linger` for the same reason). Pass
    /// `None` to leave the kernel's default (graceful close in the background). Default is
    /// `None`.
    pub fn linger(&mut self, linger: impl Into<Option<Duration>>) -> &mut Self {
        self.inner.linger = linger.into();
        self
    }

    /// How the library closes connections when a timeout fires. Default is
    /// [`CloseMode::Graceful`].
    pub fn close_mode(&mut self, mode: CloseMode) -> &mut Self {
        self.inner.close_mode = mode;
        self
    }

    /// The most connections open at once. When reached, the listener stops accepting
    /// (the kernel's backlog holds the next clients) until one closes. Pass `None` for
    /// no limit. Default is `None`.
    pub fn max_connections(&mut self, max: impl Into<Option<usize>>) -> &mut Self {
        self.inner.max_connections = max.into();
        self
    }

    /// The most connections open at once from one peer IP address. A connection over the
    /// limit is accepted and closed at once (there is no per-address backlog). Pass
    /// `None` for no limit. Default is `None`.
    pub fn max_connections_per_ip(&mut self, max: impl Into<Option<usize>>) -> &mut Self {
        self.inner.max_connections_per_ip = max.into();
        self
    }

    /// Validates the options.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid option: a zero duration (pass `None`
    /// to disable instead), keepalive values the kernel rejects, or a `user_timeout` that
    /// overflows the kernel's millisecond field.
    pub fn build(&self) -> Result<Config, ConfigError> {
        let c = &self.inner;
        for (option, value) in [
            ("close_wait_timeout", c.close_wait_timeout),
            ("fin_wait_timeout", c.fin_wait_timeout),
            ("idle_timeout", c.idle_timeout),
            ("read_idle_timeout", c.read_idle_timeout),
            ("write_idle_timeout", c.write_idle_timeout),
            ("first_byte_timeout", c.first_byte_timeout),
            ("max_connection_age", c.max_connection_age),
        ] {
            if value == Some(Duration::ZERO) {
                return Err(ConfigError::new(
                    option,
                    "must be greater than zero (pass None to disable)",
                ));
            }
            if let Some(t) = value.filter(|t| *t < MIN_TIMEOUT) {
                return Err(ConfigError::new(
                    option,
                    format!(
                        "must be at least 1 ms, the supervisor's resolution, got {t:?} (pass None \
                         to disable)"
                    ),
                ));
            }
        }
        if let Some(ka) = c.keepalive {
            whole_seconds("keepalive.idle", ka.idle, MAX_KEEPALIVE_SECS)?;
            whole_seconds("keepalive.interval", ka.interval, MAX_KEEPALIVE_SECS)?;
            if ka.retries == 0 || ka.retries > MAX_KEEPALIVE_RETRIES {
                return Err(ConfigError::new(
                    "keepalive.retries",
                    format!(
                        "must be between 1 and {MAX_KEEPALIVE_RETRIES}, got {}",
                        ka.retries
                    ),
                ));
            }
        }
        if let (Some(t), true) = (c.user_timeout, c.user_timeout_set) {
            if t.is_zero() {
                return Err(ConfigError::new(
                    "user_timeout",
                    "must be greater than zero (pass None to disable)",
                ));
            }
            if t > MAX_USER_TIMEOUT {
                return Err(ConfigError::new(
                    "user_timeout",
                    format!(
                        "must be at most {} ms (the kernel's limit), got {t:?}",
                        i32::MAX
                    ),
                ));
            }
            if t.subsec_nanos() % 1_000_000 != 0 {
                return Err(ConfigError::new(
                    "user_timeout",
                    format!("must be a whole number of milliseconds, got {t:?}"),
                ));
            }
        }
        if let Some(l) = c.linger {
            if !l.is_zero() {
                return Err(ConfigError::new(
                    "linger",
                    format!(
                        "only Duration::ZERO (reset on drop) is supported, got {l:?}: a non-zero \
                         SO_LINGER makes close() block the runtime's thread (pass None for a \
                         graceful close in the background)"
                    ),
                ));
            }
        }
        if c.max_connections == Some(0) {
            return Err(ConfigError::new(
                "max_connections",
                "must be at least 1 (pass None for no limit)",
            ));
        }
        if c.max_connections_per_ip == Some(0) {
            return Err(ConfigError::new(
                "max_connections_per_ip",
                "must be at least 1 (pass None for no limit)",
            ));
        }
        let mut inner = c.clone();
        if !c.user_timeout_set {
            inner.user_timeout = Some(match c.keepalive {
                // Up to 32767 × 128 s: capped to the kernel's field, about 24.8 days.
                Some(ka) => ka.worst_case().min(MAX_USER_TIMEOUT),
                None => DEFAULT_USER_TIMEOUT,
            });
        }
        Ok(Config {
            inner: Arc::new(inner),
        })
    }

    /// Builds the configuration and binds a listener to `addr`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` carrying the [`ConfigError`] if the configuration is invalid, or
    /// the error of binding.
    pub async fn bind(&self, addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let config = self.build()?;
        TcpListener::bind_with(addr, config).await
    }

    /// Builds the configuration and wraps an existing tokio listener.
    ///
    /// # Errors
    ///
    /// `InvalidInput` carrying the [`ConfigError`] if the configuration is invalid, or
    /// an error creating the supervisor (e.g. out of descriptors).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn wrap(&self, listener: tokio::net::TcpListener) -> io::Result<TcpListener> {
        TcpListener::from_tokio(listener, self.build()?)
    }
}

fn whole_seconds(option: &'static str, value: Duration, max: u64) -> Result<(), ConfigError> {
    if value.subsec_nanos() != 0 || value.as_secs() == 0 || value.as_secs() > max {
        return Err(ConfigError::new(
            option,
            format!("must be a whole number of seconds between 1 and {max} (the kernel's unit and limit), got {value:?}"),
        ));
    }
    Ok(())
}

/// A validated configuration, cheap to clone (an `Arc` inside).
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) inner: Arc<Inner>,
}

impl Default for Config {
    fn default() -> Self {
        Builder::new().build().expect("defaults are valid")
    }
}

impl Config {
    /// A new [`Builder`].
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// See [`Builder::close_wait_timeout`].
    pub fn close_wait_timeout(&self) -> Option<Duration> {
        self.inner.close_wait_timeout
    }

    /// See [`Builder::fin_wait_timeout`].
    pub fn fin_wait_timeout(&self) -> Option<Duration> {
        self.inner.fin_wait_timeout
    }

    /// See [`Builder::idle_timeout`].
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.inner.idle_timeout
    }

    /// See [`Builder::read_idle_timeout`].
    pub fn read_idle_timeout(&self) -> Option<Duration> {
        self.inner.read_idle_timeout
    }

    /// See [`Builder::write_idle_timeout`].
    pub fn write_idle_timeout(&self) -> Option<Duration> {
        self.inner.write_idle_timeout
    }

    /// See [`Builder::first_byte_timeout`].
    pub fn first_byte_timeout(&self) -> Option<Duration> {
        self.inner.first_byte_timeout
    }

    /// See [`Builder::max_connection_age`].
    pub fn max_connection_age(&self) -> Option<Duration> {
        self.inner.max_connection_age
    }

    /// See [`Builder::keepalive`].
    pub fn keepalive(&self) -> Option<Keepalive> {
        self.inner.keepalive
    }

    /// The `TCP_USER_TIMEOUT` applied: the one set with [`Builder::user_timeout`], or if
    /// none was set, the keepalive's worst case (or [`DEFAULT_USER_TIMEOUT`] without
    /// keepalive).
    pub fn user_timeout(&self) -> Option<Duration> {
        self.inner.user_timeout
    }

    /// See [`Builder::close_mode`].
    pub fn close_mode(&self) -> CloseMode {
        self.inner.close_mode
    }

    /// See [`Builder::max_connections`].
    pub fn max_connections(&self) -> Option<usize> {
        self.inner.max_connections
    }
}

/// An invalid option given to the [`Builder`].
///
/// Its message names the option, e.g.
/// ``invalid `close_wait_timeout`: must be greater than zero (pass None to disable)``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    option: &'static str,
    message: String,
}

impl ConfigError {
    fn new(option: &'static str, message: impl Into<String>) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Builder::new().build().unwrap();
        assert_eq!(
            config.close_wait_timeout(),
            Some(DEFAULT_CLOSE_WAIT_TIMEOUT)
        );
        assert_eq!(
            config.keepalive().unwrap().worst_case(),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn user_timeout_follows_the_keepalive_unless_set() {
        let ka = Keepalive::new(Duration::from_secs(1), Duration::from_secs(1), 3);
        let config = Builder::new().keepalive(ka).build().unwrap();
        assert_eq!(config.user_timeout(), Some(Duration::from_secs(4)));
        let config = Builder::new().keepalive(None).build().unwrap();
        assert_eq!(config.user_timeout(), Some(DEFAULT_USER_TIMEOUT));
        let config = Builder::new()
            .keepalive(ka)
            .user_timeout(Duration::from_secs(9))
            .build()
            .unwrap();
        assert_eq!(config.user_timeout(), Some(Duration::from_secs(9)));
        let config = Builder::new()
            .keepalive(ka)
            .user_timeout(None)
            .build()
            .unwrap();
        assert_eq!(config.user_timeout(), None);
        // The largest keepalive still fits TCP_USER_TIMEOUT's i32 milliseconds.
        let max = Keepalive::new(
            Duration::from_secs(MAX_KEEPALIVE_SECS),
            Duration::from_secs(MAX_KEEPALIVE_SECS),
            MAX_KEEPALIVE_RETRIES,
        );
        let t = Builder::new()
            .keepalive(max)
            .build()
            .unwrap()
            .user_timeout()
            .unwrap();
        assert!(t.as_millis() <= i32::MAX as u128, "{t:?}");
    }

    #[test]
    fn none_disables() {
        let config = Builder::new()
            .close_wait_timeout(None)
            .keepalive(None)
            .user_timeout(None)
            .build()
            .unwrap();
        assert_eq!(config.close_wait_timeout(), None);
        assert_eq!(config.keepalive(), None);
    }
}
