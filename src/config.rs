//! The validated configuration, and the option types it is made of.

use std::sync::Arc;
use std::time::Duration;

/// TCP keepalive parameters: after `idle` without traffic the kernel sends a probe every
/// `interval`, and resets the connection after `retries` unanswered probes.
///
/// A vanished peer of an idle connection is found within
/// `idle + interval × retries` ([`Keepalive::worst_case`]). Keepalive stops probing while
/// sent data is unacknowledged; [`Builder::user_timeout`](crate::Builder::user_timeout) covers that case.
///
/// The kernel counts in whole seconds: each duration must be a whole number of seconds
/// between 1 and 32767, and `retries` between 1 and 127 ([`Builder::build`](crate::Builder::build) checks).
/// Other Unix systems apply the idle time only.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tcp_hygiene::Keepalive;
///
/// let keepalive = Keepalive::new()
///     .with_idle(Duration::from_secs(30))
///     .with_interval(Duration::from_secs(5))
///     .with_retries(4);
/// assert_eq!(keepalive.worst_case(), Duration::from_secs(50));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    idle: Duration,
    interval: Duration,
    retries: u32,
}

impl Keepalive {
    /// The default: idle 60 s, then 6 probes 10 s apart, so a vanished idle peer is found
    /// within 2 minutes (Linux alone: 2 h + 9 × 75 s).
    pub const DEFAULT: Keepalive = Keepalive {
        idle: Duration::from_secs(60),
        interval: Duration::from_secs(10),
        retries: 6,
    };

    /// [`Keepalive::DEFAULT`], to adjust with the `with_` methods.
    pub const fn new() -> Self {
        Self::DEFAULT
    }

    /// Idle time before the first probe (`TCP_KEEPIDLE`). Default is 60 seconds.
    pub const fn with_idle(self, idle: Duration) -> Self {
        Self { idle, ..self }
    }

    /// Time between probes (`TCP_KEEPINTVL`; Linux only). Default is 10 seconds.
    pub const fn with_interval(self, interval: Duration) -> Self {
        Self { interval, ..self }
    }

    /// Unanswered probes before the connection is reset (`TCP_KEEPCNT`; Linux only).
    /// Default is 6.
    pub const fn with_retries(self, retries: u32) -> Self {
        Self { retries, ..self }
    }

    /// Idle time before the first probe.
    pub const fn idle(&self) -> Duration {
        self.idle
    }

    /// Time between probes.
    pub const fn interval(&self) -> Duration {
        self.interval
    }

    /// Unanswered probes before the connection is reset.
    pub const fn retries(&self) -> u32 {
        self.retries
    }

    /// The longest an idle connection to a vanished peer can survive:
    /// `idle + interval × retries` (saturating at `Duration::MAX`).
    pub fn worst_case(&self) -> Duration {
        self.idle
            .saturating_add(self.interval.saturating_mul(self.retries))
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A minimum data rate, as Kestrel's `MinDataRate`: a peer that moves less than
/// `bytes_per_second` × `grace` in any `grace` window, while the rule applies, is too slow.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tcp_hygiene::MinDataRate;
///
/// // At least 240 bytes a second, judged over 5-second windows.
/// let rate = MinDataRate::new(240, Duration::from_secs(5));
/// assert_eq!(rate.bytes_per_second(), 240);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinDataRate {
    bytes_per_second: u64,
    grace: Duration,
}

impl MinDataRate {
    /// At least `bytes_per_second`, judged over windows of `grace` (the first window
    /// starts when the rule starts to apply, so a peer always gets `grace` to get going).
    /// [`Builder::build`](crate::Builder::build) requires a rate of at least 1 and a grace
    /// of at least 1 ms.
    pub const fn new(bytes_per_second: u64, grace: Duration) -> Self {
        Self {
            bytes_per_second,
            grace,
        }
    }

    /// The minimum rate, in bytes per second.
    pub const fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    /// The window the rate is judged over.
    pub const fn grace(&self) -> Duration {
        self.grace
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

/// Every option, as set (in a [`Builder`](crate::Builder)) or validated (in a [`Config`]).
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) close_wait_timeout: Option<Duration>,
    pub(crate) fin_wait_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) read_idle_timeout: Option<Duration>,
    pub(crate) write_idle_timeout: Option<Duration>,
    pub(crate) first_byte_timeout: Option<Duration>,
    pub(crate) max_connection_age: Option<Duration>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) max_connection_age_grace: Duration,
    pub(crate) max_connection_age_jitter: f64,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) user_timeout: Option<Duration>,
    /// Whether `user_timeout` was set by the user; if not, it follows the keepalive.
    pub(crate) user_timeout_set: bool,
    pub(crate) nodelay: bool,
    pub(crate) linger: Option<Duration>,
    pub(crate) close_mode: CloseMode,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) min_receive_rate: Option<MinDataRate>,
    /// Whether `min_receive_rate` was set (else a framework serve applies its default).
    pub(crate) min_receive_rate_set: bool,
    pub(crate) min_send_rate: Option<MinDataRate>,
    pub(crate) min_send_rate_set: bool,
    /// The connection-event hook.
    pub(crate) hook: Option<crate::observe::Hook>,
    /// The `listener` label of the metrics; `None`: the bound address.
    pub(crate) metrics_label: Option<String>,
}

/// A validated configuration, cheap to clone (an `Arc` inside): what [`Builder::build`](crate::Builder::build)
/// makes, and what a listener reports as its own.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) options: Arc<Options>,
}

impl Config {
    /// See [`Builder::close_wait_timeout`](crate::Builder::close_wait_timeout).
    pub fn close_wait_timeout(&self) -> Option<Duration> {
        self.options.close_wait_timeout
    }

    /// See [`Builder::fin_wait_timeout`](crate::Builder::fin_wait_timeout).
    pub fn fin_wait_timeout(&self) -> Option<Duration> {
        self.options.fin_wait_timeout
    }

    /// See [`Builder::idle_timeout`](crate::Builder::idle_timeout).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.options.idle_timeout
    }

    /// See [`Builder::read_idle_timeout`](crate::Builder::read_idle_timeout).
    pub fn read_idle_timeout(&self) -> Option<Duration> {
        self.options.read_idle_timeout
    }

    /// See [`Builder::write_idle_timeout`](crate::Builder::write_idle_timeout).
    pub fn write_idle_timeout(&self) -> Option<Duration> {
        self.options.write_idle_timeout
    }

    /// See [`Builder::first_byte_timeout`](crate::Builder::first_byte_timeout).
    pub fn first_byte_timeout(&self) -> Option<Duration> {
        self.options.first_byte_timeout
    }

    /// See [`Builder::max_connection_age`](crate::Builder::max_connection_age).
    pub fn max_connection_age(&self) -> Option<Duration> {
        self.options.max_connection_age
    }

    /// See [`Builder::connect_timeout`](crate::Builder::connect_timeout).
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.options.connect_timeout
    }

    /// See [`Builder::max_connection_age_grace`](crate::Builder::max_connection_age_grace).
    pub fn max_connection_age_grace(&self) -> Duration {
        self.options.max_connection_age_grace
    }

    /// See [`Builder::max_connection_age_jitter`](crate::Builder::max_connection_age_jitter).
    pub fn max_connection_age_jitter(&self) -> f64 {
        self.options.max_connection_age_jitter
    }

    /// See [`Builder::keepalive`](crate::Builder::keepalive).
    pub fn keepalive(&self) -> Option<Keepalive> {
        self.options.keepalive
    }

    /// The `TCP_USER_TIMEOUT` applied: the one set with [`Builder::user_timeout`](crate::Builder::user_timeout), or if
    /// none was set, the keepalive's worst case (or
    /// [`Builder::DEFAULT_USER_TIMEOUT`](crate::Builder::DEFAULT_USER_TIMEOUT) without keepalive).
    pub fn user_timeout(&self) -> Option<Duration> {
        self.options.user_timeout
    }

    /// See [`Builder::nodelay`](crate::Builder::nodelay).
    pub fn nodelay(&self) -> bool {
        self.options.nodelay
    }

    /// See [`Builder::linger`](crate::Builder::linger).
    pub fn linger(&self) -> Option<Duration> {
        self.options.linger
    }

    /// See [`Builder::close_mode`](crate::Builder::close_mode).
    pub fn close_mode(&self) -> CloseMode {
        self.options.close_mode
    }

    /// See [`Builder::max_connections`](crate::Builder::max_connections).
    pub fn max_connections(&self) -> Option<usize> {
        self.options.max_connections
    }

    /// See [`Builder::max_connections_per_ip`](crate::Builder::max_connections_per_ip).
    pub fn max_connections_per_ip(&self) -> Option<usize> {
        self.options.max_connections_per_ip
    }

    /// See [`Builder::min_receive_rate`](crate::Builder::min_receive_rate): as set, `None`
    /// if unset (a framework serve then applies its default, see
    /// [`served_min_receive_rate`](Self::served_min_receive_rate)).
    pub fn min_receive_rate(&self) -> Option<MinDataRate> {
        self.options.min_receive_rate
    }

    /// See [`Builder::min_send_rate`](crate::Builder::min_send_rate): as set, `None` if
    /// unset.
    pub fn min_send_rate(&self) -> Option<MinDataRate> {
        self.options.min_send_rate
    }

    /// The `min_receive_rate` in force under a framework serve: as set, or
    /// [`Builder::DEFAULT_SERVE_MIN_DATA_RATE`](crate::Builder::DEFAULT_SERVE_MIN_DATA_RATE).
    pub fn served_min_receive_rate(&self) -> Option<MinDataRate> {
        match self.options.min_receive_rate_set {
            true => self.options.min_receive_rate,
            false => Some(crate::Builder::DEFAULT_SERVE_MIN_DATA_RATE),
        }
    }

    /// The `min_send_rate` in force under a framework serve: as set, or
    /// [`Builder::DEFAULT_SERVE_MIN_DATA_RATE`](crate::Builder::DEFAULT_SERVE_MIN_DATA_RATE).
    pub fn served_min_send_rate(&self) -> Option<MinDataRate> {
        match self.options.min_send_rate_set {
            true => self.options.min_send_rate,
            false => Some(crate::Builder::DEFAULT_SERVE_MIN_DATA_RATE),
        }
    }

    /// The rates in force: under a framework serve (`served`) or not.
    pub(crate) fn rates(&self, served: bool) -> (Option<MinDataRate>, Option<MinDataRate>) {
        match served {
            true => (self.served_min_receive_rate(), self.served_min_send_rate()),
            false => (self.min_receive_rate(), self.min_send_rate()),
        }
    }

    /// The connection-event hook, if one was set.
    pub(crate) fn hook(&self) -> Option<&crate::observe::Hook> {
        self.options.hook.as_ref()
    }

    /// The `listener` label of the metrics, if one was set.
    pub(crate) fn metrics_label(&self) -> Option<&str> {
        self.options.metrics_label.as_deref()
    }
}
