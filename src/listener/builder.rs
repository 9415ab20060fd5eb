//! The builder: every option with its default, validated into a [`Config`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::ToSocketAddrs;

use super::TcpListener;
use crate::config::{CloseMode, Config, Keepalive, MinDataRate, Options};
use crate::connector::Connector;
use crate::error::ConfigError;
use crate::observe::{ConnectionEvent, Hook};

// Linux's limits (include/net/tcp.h): MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT.
const MAX_KEEPALIVE_SECS: u64 = 32_767;
const MAX_KEEPALIVE_RETRIES: u32 = 127;
// The shortest timeout: the supervisor's timer and the kernel count no finer.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
// `TCP_USER_TIMEOUT` is an `int` of milliseconds.
const MAX_USER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// Configures and builds tcp-hygiene listeners ([`bind`](Self::bind), [`wrap`](Self::wrap))
/// and connectors ([`connector`](Self::connector)).
///
/// A [`Connector`]'s connections follow the same rules as accepted ones (close-wait,
/// fin-wait, idle, keepalive and user-timeout defaults, max age, min rates, close mode,
/// `max_connections`, the hook and the metrics) plus
/// [`connect_timeout`](Self::connect_timeout); the server-only options
/// ([`first_byte_timeout`](Self::first_byte_timeout),
/// [`max_connections_per_ip`](Self::max_connections_per_ip), and the accept back-off,
/// which has no setting) do not apply to it.
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
    options: Options,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// Default for [`close_wait_timeout`](Self::close_wait_timeout): 30 seconds.
    pub const DEFAULT_CLOSE_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default for [`fin_wait_timeout`](Self::fin_wait_timeout): 60 seconds, Linux's
    /// `tcp_fin_timeout`.
    pub const DEFAULT_FIN_WAIT_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default for [`user_timeout`](Self::user_timeout) when keepalive is off: 120 seconds.
    /// With keepalive on (the default), the default user timeout is the keepalive's
    /// [`worst_case`](Keepalive::worst_case) instead, which for [`Keepalive::DEFAULT`] is
    /// also 120 seconds.
    pub const DEFAULT_USER_TIMEOUT: Duration = Duration::from_secs(120);

    /// The default [`max_connection_age_grace`](Self::max_connection_age_grace): 30
    /// seconds.
    pub const DEFAULT_MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);

    /// The minimum data rates a framework serve applies each way unless set
    /// ([`min_receive_rate`](Self::min_receive_rate), [`min_send_rate`](Self::min_send_rate)):
    /// 240 bytes a second, judged over 5-second windows, as Kestrel's defaults.
    pub const DEFAULT_SERVE_MIN_DATA_RATE: MinDataRate =
        MinDataRate::new(240, Duration::from_secs(5));

    /// Default for [`connect_timeout`](Self::connect_timeout): 10 seconds.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The default [`max_connection_age_jitter`](Self::max_connection_age_jitter): 0.1.
    pub const DEFAULT_MAX_CONNECTION_AGE_JITTER: f64 = 0.1;

    /// A builder with every option at its default.
    pub fn new() -> Self {
        Self {
            options: Options {
                close_wait_timeout: Some(Self::DEFAULT_CLOSE_WAIT_TIMEOUT),
                fin_wait_timeout: Some(Self::DEFAULT_FIN_WAIT_TIMEOUT),
                idle_timeout: None,
                read_idle_timeout: None,
                write_idle_timeout: None,
                first_byte_timeout: None,
                max_connection_age: None,
                connect_timeout: Some(Self::DEFAULT_CONNECT_TIMEOUT),
                max_connection_age_grace: Self::DEFAULT_MAX_CONNECTION_AGE_GRACE,
                max_connection_age_jitter: Self::DEFAULT_MAX_CONNECTION_AGE_JITTER,
                keepalive: Some(Keepalive::DEFAULT),
                user_timeout: Some(Self::DEFAULT_USER_TIMEOUT),
                user_timeout_set: false,
                nodelay: false,
                linger: None,
                close_mode: CloseMode::Graceful,
                max_connections: None,
                max_connections_per_ip: None,
                min_receive_rate: None,
                min_receive_rate_set: false,
                min_send_rate: None,
                min_send_rate_set: false,
                hook: None,
                metrics_label: None,
            },
        }
    }

    /// Closes a connection whose peer has sent FIN (our socket is in `CLOSE_WAIT`) once
    /// nothing has moved our way for this long, counted from the latest of the FIN, our
    /// last write and the peer's last acknowledgement. A server still streaming a
    /// response to a half-closed client is not cut off; a handler that forgot the socket
    /// is. The close comes within `timeout / 8` after that.
    ///
    /// Enforced by the supervisor, whether or not the handler polls the stream. Pass
    /// `None` to disable. Default is 30 seconds.
    pub fn close_wait_timeout(&mut self, timeout: impl Into<Option<Duration>>) -> &mut Self {
        self.options.close_wait_timeout = timeout.into();
        self
    }

    /// After our FIN, waits this long for the peer's, counted from the later of our FIN
    /// and the last byte the peer acknowledged (a peer still taking a long response is
    /// not cut off), then resets the connection: the `FIN_WAIT_2` a peer never ends. It
    /// follows every FIN we send: the application's `shutdown`, a close by the library,
    /// the drain's half-close. Linux's `tcp_fin_timeout` only covers sockets the
    /// application has closed; this covers the ones it still holds, and once it drops the
    /// stream the socket gets it as `TCP_LINGER2` (Linux only; whole seconds rounded up,
    /// at most 120 s, the kernel's cap). Pass `None` to disable. Default is 60 seconds.
    pub fn fin_wait_timeout(&mut self, timeout: impl Into<Option<Duration>>) -> &mut Self {
        self.options.fin_wait_timeout = timeout.into();
        self
    }

    /// Closes a connection on which no data moved in either direction for this long. On
    /// Linux the kernel's own timestamps (`TCP_INFO`: last data received, last data sent)
    /// say when the wire was last used, so a handler that does not poll still counts as
    /// idle only when the wire is; elsewhere the application's reads and writes count.
    /// Pass `None` to disable. Default is `None`.
    pub fn idle_timeout(&mut self, timeout: impl Into<Option<Duration>>) -> &mut Self {
        self.options.idle_timeout = timeout.into();
        self
    }

    /// Closes a connection that received no data for this long (Linux: the kernel's
    /// timestamp of the last data received; elsewhere the application's reads). Pass
    /// `None` to disable. Default is `None`.
    pub fn read_idle_timeout(&mut self, timeout: impl Into<Option<Duration>>) -> &mut Self {
        self.options.read_idle_timeout = timeout.into();
        self
    }

    /// Closes a connection that has data waiting to be sent and had none acknowledged for
    /// this long: a peer that stopped reading (zero window), or vanished mid-transfer.
    /// Such a close is always abortive (RST): the peer takes nothing more, and a FIN would
    /// queue behind the unsent data. It also bounds the sockets the application dropped
    /// with data still queued (the library's lingering close, or past it the kernel's
    /// orphan, whose `TCP_USER_TIMEOUT` is lowered to it). On Linux it costs nothing while
    /// nothing is queued: the supervisor looks only after a write, and only until the
    /// data is acknowledged; it looks within a pause after a write (a sixteenth of this
    /// timeout or of `min_send_rate`'s grace, whichever is shorter, at most 250 ms), so a
    /// connection that writes often costs one look a pause, and the close may come that
    /// much late. Elsewhere it measures the application's writes. Pass `None` to disable.
    /// Default is `None`.
    pub fn write_idle_timeout(&mut self, timeout: impl Into<Option<Duration>>) -> &mut Self {
        self.options.write_idle_timeout = timeout.into();
        self
    }

    /// Closes a connection whose peer has not sent a single byte this long after accept
    /// (the "connect and stay silent" attack). Pass `None` to disable. Default is `None`.
    ///
    /// Server side only: a [`Connector`] ignores it (a server rightly waits for the
    /// client's request before it says anything).
    pub fn first_byte_timeout(&mut self, timeout: impl Into<Option<Duration>>) -> &mut Self {
        self.options.first_byte_timeout = timeout.into();
        self
    }

    /// Ends every connection this long after accept, busy or not, so that clients
    /// reconnect now and then (to rebalance across a fleet, to pick up new
    /// certificates). Under a plain accept loop the library closes it at the age
    /// (gracefully: our FIN after every byte already written). Under a framework serve
    /// ([`integration`](crate::integration)) HTTP winds it down first, at the age less a
    /// random part of [`max_connection_age_jitter`](Self::max_connection_age_jitter)
    /// (`Connection: close` after the current response, GOAWAY for HTTP/2), and the
    /// library closes it [`max_connection_age_grace`](Self::max_connection_age_grace)
    /// after the age. Pass `None` to disable. Default is `None`.
    pub fn max_connection_age(&mut self, age: impl Into<Option<Duration>>) -> &mut Self {
        self.options.max_connection_age = age.into();
        self
    }

    /// Under a framework serve, how long a connection wound down for its age may finish
    /// its requests before the library closes it: the close comes at `max_connection_age
    /// + grace`. A plain accept loop has nothing that winds a connection down, and its
    /// connections are closed at the age. Default is 30 seconds
    /// ([`DEFAULT_MAX_CONNECTION_AGE_GRACE`](Self::DEFAULT_MAX_CONNECTION_AGE_GRACE)).
    pub fn max_connection_age_grace(&mut self, grace: Duration) -> &mut Self {
        self.options.max_connection_age_grace = grace;
        self
    }

    /// Under a framework serve, how much earlier than `max_connection_age` a connection
    /// may start winding down, as a fraction of the age chosen at random per connection
    /// (0.1: up to 10 % earlier), so that the clients of a fleet do not reconnect at
    /// once. From 0.0 to 1.0 ([`build`](Self::build) checks). Default is 0.1
    /// ([`DEFAULT_MAX_CONNECTION_AGE_JITTER`](Self::DEFAULT_MAX_CONNECTION_AGE_JITTER)).
    pub fn max_connection_age_jitter(&mut self, fraction: f64) -> &mut Self {
        self.options.max_connection_age_jitter = fraction;
        self
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
    /// the keepalive's worst case (120 seconds with [`Keepalive::DEFAULT`]), or
    /// [`DEFAULT_USER_TIMEOUT`](Self::DEFAULT_USER_TIMEOUT) (120 seconds) with keepalive
    /// off.
    pub fn user_timeout(&mut self, timeout: impl Into<Option<Duration>>) -> &mut Self {
        self.options.user_timeout = timeout.into();
        self.options.user_timeout_set = true;
        self
    }

    /// TCP keepalive applied to every accepted socket. Pass `None` to leave the socket's
    /// (system) setting alone. Default is [`Keepalive::DEFAULT`]: idle 60 s, interval
    /// 10 s, 6 probes, so an idle half-open connection is found within 2 minutes.
    pub fn keepalive(&mut self, keepalive: impl Into<Option<Keepalive>>) -> &mut Self {
        self.options.keepalive = keepalive.into();
        self
    }

    /// `TCP_NODELAY` on every accepted socket. Default is `false` (Nagle on, the
    /// kernel's default).
    pub fn nodelay(&mut self, nodelay: bool) -> &mut Self {
        self.options.nodelay = nodelay;
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
        self.options.linger = linger.into();
        self
    }

    /// How the library closes connections when a timeout fires. Default is
    /// [`CloseMode::Graceful`].
    pub fn close_mode(&mut self, mode: CloseMode) -> &mut Self {
        self.options.close_mode = mode;
        self
    }

    /// The most connections open at once. When reached, the listener stops accepting
    /// (the kernel's backlog holds the next clients) until one closes; a [`Connector`]'s
    /// `connect` waits likewise before it connects. Pass `None` for no limit. Default is
    /// `None`.
    pub fn max_connections(&mut self, max: impl Into<Option<usize>>) -> &mut Self {
        self.options.max_connections = max.into();
        self
    }

    /// The most connections open at once from one peer IP address. A connection over the
    /// limit is accepted and closed at once (there is no per-address backlog). Pass
    /// `None` for no limit. Default is `None`. Server side only: a [`Connector`] ignores
    /// it.
    pub fn max_connections_per_ip(&mut self, max: impl Into<Option<usize>>) -> &mut Self {
        self.options.max_connections_per_ip = max.into();
        self
    }

    /// Closes a connection whose peer sends too slowly while it owes us data (reason
    /// `SlowReceive`): a slowloris client trickling a request, or an upload crawling
    /// along. The peer owes data while the application waits in a read and the last
    /// thing that moved was the peer's data, not our reply (mid-request, not between
    /// requests; "a read is pending" alone means nothing, since hyper keeps one pending
    /// during every request); under a framework serve, while a request's head or body is
    /// being read. A client merely idle between requests is not judged (that is a
    /// keep-alive timeout's job), nor one silent for a whole window (the idle timeouts
    /// judge silence), except where a framework serve knows a handler waits for a
    /// request body. Looked at only while it applies: a quiet connection costs nothing.
    /// The close is graceful. Pass `None` to disable.
    ///
    /// Default: `None` under a plain accept loop; under a framework serve
    /// ([`integration`](crate::integration)),
    /// [`DEFAULT_SERVE_MIN_DATA_RATE`](Self::DEFAULT_SERVE_MIN_DATA_RATE), 240 bytes a
    /// second after a 5-second grace (Kestrel's), so that a slow body is bounded without
    /// any setting.
    pub fn min_receive_rate(&mut self, rate: impl Into<Option<MinDataRate>>) -> &mut Self {
        self.options.min_receive_rate = rate.into();
        self.options.min_receive_rate_set = true;
        self
    }

    /// Closes a connection whose peer takes our queued data too slowly (reason
    /// `SlowSend`): a slow-read client with a tiny window reading a few bytes a second.
    /// Applies while data is queued, judged by the bytes the peer acknowledges (Linux
    /// only: `TCP_INFO`; ignored elsewhere). The close is abortive (RST): the peer is not
    /// taking the data, and a FIN would queue behind it. Under a framework serve it also
    /// judges the data waiting in user space for the peer (an HTTP/2 stream whose
    /// flow-control window stays shut): the bytes hyper takes from the response bodies.
    /// Its clock starts at the supervisor's first look after a write, within a pause (see
    /// [`write_idle_timeout`](Self::write_idle_timeout)): at most 250 ms late at the
    /// default grace. Pass `None` to disable.
    ///
    /// Default: `None` under a plain accept loop; under a framework serve,
    /// [`DEFAULT_SERVE_MIN_DATA_RATE`](Self::DEFAULT_SERVE_MIN_DATA_RATE), so that a slow
    /// reader is bounded without any setting (a normal client downloading a large
    /// response reads far faster).
    pub fn min_send_rate(&mut self, rate: impl Into<Option<MinDataRate>>) -> &mut Self {
        self.options.min_send_rate = rate.into();
        self.options.min_send_rate_set = true;
        self
    }

    /// How long a [`Connector`]'s connect may take, from the first `SYN` (and the name's
    /// resolution) to the connection: past it the connect fails with `TimedOut`, counted
    /// as [`CloseReason::ConnectTimeout`](crate::CloseReason::ConnectTimeout). With
    /// several addresses to try, they share it. Without it a `SYN` to a blackholed
    /// address is retried for about 127 s (Linux's `tcp_syn_retries`). Waiting for a slot
    /// under [`max_connections`](Self::max_connections) is not counted. Pass `None` to
    /// leave it to the kernel. Default is 10 seconds. A listener ignores it.
    pub fn connect_timeout(&mut self, timeout: impl Into<Option<Duration>>) -> &mut Self {
        self.options.connect_timeout = timeout.into();
        self
    }

    /// Calls `hook` at every event of every connection (as Go's `http.Server.ConnState`):
    /// accepted, the peer's FIN, our FIN, the kernel's end of it (reset, keepalive or user
    /// timeout), the library's close and its reason, the stream's release. See
    /// [`ConnectionEvent`] for the order they come in.
    ///
    /// The hook runs on the task where the event happened (the accept loop, the
    /// application's task, the supervisor), so it must be quick and must not block:
    /// count, log, or send to a channel. A panic in it is caught and logged once at error
    /// level; enforcement goes on. Default: no hook.
    pub fn on_event(
        &mut self,
        hook: impl Fn(&ConnectionEvent) + Send + Sync + 'static,
    ) -> &mut Self {
        self.options.hook = Some(Hook::new(hook));
        self
    }

    /// The value of the `listener` label on this listener's metrics (the `metrics`
    /// feature), for a server with several listeners. Default: the bound address, as
    /// `127.0.0.1:8080`.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_label(&mut self, label: impl Into<String>) -> &mut Self {
        self.options.metrics_label = Some(label.into());
        self
    }

    /// Validates the options.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid option: a zero or sub-millisecond
    /// timeout (pass `None` to disable instead), keepalive values the kernel rejects, a
    /// `user_timeout` that overflows the kernel's millisecond field, a non-zero `linger`,
    /// a zero connection limit.
    pub fn build(&self) -> Result<Config, ConfigError> {
        let o = &self.options;
        for (option, value) in [
            ("close_wait_timeout", o.close_wait_timeout),
            ("fin_wait_timeout", o.fin_wait_timeout),
            ("idle_timeout", o.idle_timeout),
            ("read_idle_timeout", o.read_idle_timeout),
            ("write_idle_timeout", o.write_idle_timeout),
            ("first_byte_timeout", o.first_byte_timeout),
            ("max_connection_age", o.max_connection_age),
            ("connect_timeout", o.connect_timeout),
        ] {
            timeout(option, value)?;
        }
        if let Some(ka) = o.keepalive {
            whole_seconds("keepalive.idle", ka.idle(), MAX_KEEPALIVE_SECS)?;
            whole_seconds("keepalive.interval", ka.interval(), MAX_KEEPALIVE_SECS)?;
            if ka.retries() == 0 || ka.retries() > MAX_KEEPALIVE_RETRIES {
                return Err(ConfigError::new(
                    "keepalive.retries",
                    format!(
                        "must be between 1 and {MAX_KEEPALIVE_RETRIES}, got {}",
                        ka.retries()
                    ),
                ));
            }
        }
        if let (Some(t), true) = (o.user_timeout, o.user_timeout_set) {
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
        if let Some(l) = o.linger.filter(|l| !l.is_zero()) {
            return Err(ConfigError::new(
                "linger",
                format!(
                    "only Duration::ZERO (reset on drop) is supported, got {l:?}: a non-zero \
                     SO_LINGER makes close() block the runtime's thread (pass None for a \
                     graceful close in the background)"
                ),
            ));
        }
        for (option, rate) in [
            ("min_receive_rate", o.min_receive_rate),
            ("min_send_rate", o.min_send_rate),
        ] {
            if let Some(rate) = rate {
                if rate.bytes_per_second() == 0 {
                    return Err(ConfigError::new(
                        option,
                        "bytes_per_second must be at least 1 (pass None to disable)",
                    ));
                }
                timeout(option, Some(rate.grace()))?;
            }
        }
        let jitter = o.max_connection_age_jitter;
        if !(0.0..=1.0).contains(&jitter) {
            return Err(ConfigError::new(
                "max_connection_age_jitter",
                format!("must be a fraction from 0.0 to 1.0, got {jitter}"),
            ));
        }
        for (option, value) in [
            ("max_connections", o.max_connections),
            ("max_connections_per_ip", o.max_connections_per_ip),
        ] {
            if value == Some(0) {
                return Err(ConfigError::new(
                    option,
                    "must be at least 1 (pass None for no limit)",
                ));
            }
        }
        let mut options = o.clone();
        if !o.user_timeout_set {
            options.user_timeout = Some(match o.keepalive {
                // Up to 32767 × 128 s: capped to the kernel's field, about 24.8 days.
                Some(ka) => ka.worst_case().min(MAX_USER_TIMEOUT),
                None => Self::DEFAULT_USER_TIMEOUT,
            });
        }
        Ok(Config {
            options: Arc::new(options),
        })
    }

    /// Builds the configuration and binds a listener to `addr`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` carrying the [`ConfigError`] if the configuration is invalid, or
    /// the error of binding.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn bind(&self, addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let config = self.build()?;
        TcpListener::with_config(tokio::net::TcpListener::bind(addr).await?, config)
    }

    /// Builds the configuration and makes a [`Connector`], for outbound connections
    /// supervised as accepted ones are. Its configuration leaves out the server-only
    /// options (`first_byte_timeout` and `max_connections_per_ip` read `None` in
    /// [`Connector::config`]). Spawns the connector's supervisor on the current runtime.
    ///
    /// # Errors
    ///
    /// `InvalidInput` carrying the [`ConfigError`] if the configuration is invalid
    /// (e.g. a zero `connect_timeout`), or an error creating the supervisor.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn connector(&self) -> io::Result<Connector> {
        let mut config = self.build()?;
        let options = Arc::make_mut(&mut config.options);
        options.first_byte_timeout = None;
        options.max_connections_per_ip = None;
        Connector::with_config(config)
    }

    /// Builds the configuration and wraps an existing tokio listener.
    ///
    /// On Linux the socket options (keepalive, `user_timeout`, `nodelay`, `linger`) are
    /// set once, on the listening socket, and the kernel copies them into every socket it
    /// accepts; elsewhere, and for an option the listening socket refuses, each accepted
    /// socket gets its own. (The same holds for [`bind`](Self::bind).)
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
        TcpListener::with_config(listener, self.build()?)
    }
}

fn timeout(option: &'static str, value: Option<Duration>) -> Result<(), ConfigError> {
    match value {
        Some(t) if t.is_zero() => Err(ConfigError::new(
            option,
            "must be greater than zero (pass None to disable)",
        )),
        Some(t) if t < MIN_TIMEOUT => Err(ConfigError::new(
            option,
            format!(
                "must be at least 1 ms, the supervisor's resolution, got {t:?} (pass None to \
                 disable)"
            ),
        )),
        _ => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Builder::new().build().unwrap();
        assert_eq!(
            config.close_wait_timeout(),
            Some(Builder::DEFAULT_CLOSE_WAIT_TIMEOUT)
        );
        assert_eq!(
            config.keepalive().unwrap().worst_case(),
            Duration::from_secs(120)
        );
        assert_eq!(Keepalive::new(), Keepalive::DEFAULT);
    }

    #[test]
    fn user_timeout_follows_the_keepalive_unless_set() {
        let ka = Keepalive::new()
            .with_idle(Duration::from_secs(1))
            .with_interval(Duration::from_secs(1))
            .with_retries(3);
        let config = Builder::new().keepalive(ka).build().unwrap();
        assert_eq!(config.user_timeout(), Some(Duration::from_secs(4)));
        let config = Builder::new().keepalive(None).build().unwrap();
        assert_eq!(config.user_timeout(), Some(Builder::DEFAULT_USER_TIMEOUT));
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
        let max = Keepalive::new()
            .with_idle(Duration::from_secs(MAX_KEEPALIVE_SECS))
            .with_interval(Duration::from_secs(MAX_KEEPALIVE_SECS))
            .with_retries(MAX_KEEPALIVE_RETRIES);
        let t = Builder::new()
            .keepalive(max)
            .build()
            .unwrap()
            .user_timeout()
            .unwrap();
        assert!(t <= MAX_USER_TIMEOUT, "{t:?}");
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
        assert_eq!(config.user_timeout(), None);
    }
}
