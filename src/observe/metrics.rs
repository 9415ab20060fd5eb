//! The `metrics` feature: a listener's metrics, registered once with the recorder that
//! is installed when the listener is made (install yours before binding), each update a
//! handle's atomic operation.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};

use crate::state::{CloseReason, ConnectionState};

/// The names, each documented in the crate docs ("Observability").
pub(crate) const ACCEPTED: &str = "tcp_hygiene_connections_accepted_total";
pub(crate) const OPEN: &str = "tcp_hygiene_connections_open";
pub(crate) const CLOSED: &str = "tcp_hygiene_connections_closed_total";
pub(crate) const CONNECTED: &str = "tcp_hygiene_connections_connected_total";
pub(crate) const CONNECT_ERRORS: &str = "tcp_hygiene_connect_errors_total";
pub(crate) const ACCEPT_ERRORS: &str = "tcp_hygiene_accept_errors_total";
pub(crate) const ACCEPT_BACKOFF: &str = "tcp_hygiene_accept_backoff_seconds_total";
pub(crate) const DURATION: &str = "tcp_hygiene_connection_duration_seconds";
pub(crate) const CLOSE_WAIT: &str = "tcp_hygiene_close_wait_seconds";
pub(crate) const FIN_DETECT: &str = "tcp_hygiene_fin_detect_seconds";
pub(crate) const DRAIN: &str = "tcp_hygiene_drain_connections";
#[cfg(feature = "tls")]
pub(crate) const TLS_HANDSHAKE_FAILURES: &str = "tcp_hygiene_tls_handshake_failures_total";

/// How a connection nobody forced ended, besides the library's reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The peer closed first (its FIN before ours).
    Peer,
    /// The application closed first (our FIN, or a drop, before the peer's).
    Application,
}

/// The handles of one listener.
#[derive(Debug)]
pub(crate) struct Metrics {
    accepted: Counter,
    connected: Counter,
    connect_errors: Counter,
    open: [Gauge; ConnectionState::ALL.len()],
    closed: [Counter; CloseReason::ALL.len()],
    ended_by_peer: Counter,
    ended_by_application: Counter,
    accept_errors: [Counter; 3],
    accept_backoff: Gauge,
    duration: Histogram,
    close_wait: Histogram,
    fin_detect: Histogram,
    drain: [Gauge; 4],
    #[cfg(feature = "tls")]
    tls_handshake_failures: Counter,
}

fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        metrics::describe_counter!(ACCEPTED, Unit::Count, "Connections accepted.");
        metrics::describe_counter!(CONNECTED, Unit::Count, "Connections a connector made.");
        metrics::describe_counter!(
            CONNECT_ERRORS,
            Unit::Count,
            "Failed connects of a connector, of any kind (those that timed out are also closed{reason=connect_timeout})."
        );
        metrics::describe_gauge!(
            OPEN,
            Unit::Count,
            "Connections whose stream is held, by state: open, peer_closed (the peer sent FIN: CLOSE_WAIT), locally_closed (our FIN), closed (closed but the stream still held)."
        );
        metrics::describe_counter!(
            CLOSED,
            Unit::Count,
            "Connections closed, by reason: the library's close reasons, or peer / application for the ones nobody forced."
        );
        metrics::describe_counter!(
            ACCEPT_ERRORS,
            Unit::Count,
            "Failed accept calls, by kind: per_connection (skipped), resources (backed off), fatal."
        );
        metrics::describe_gauge!(
            ACCEPT_BACKOFF,
            Unit::Seconds,
            "Time spent backing off after accept ran out of resources (only grows)."
        );
        metrics::describe_histogram!(DURATION, Unit::Seconds, "From accept to release.");
        metrics::describe_histogram!(
            CLOSE_WAIT,
            Unit::Seconds,
            "From the peer's FIN to our close of the socket: how long it sat in CLOSE_WAIT."
        );
        metrics::describe_histogram!(
            FIN_DETECT,
            Unit::Seconds,
            "From the peer's FIN (the kernel's timestamp) to the supervisor's seeing it (Linux)."
        );
        metrics::describe_gauge!(
            DRAIN,
            Unit::Count,
            "The last drain's report, by fate: connections, finished, idle_closed, forced."
        );
        #[cfg(feature = "tls")]
        metrics::describe_counter!(
            TLS_HANDSHAKE_FAILURES,
            Unit::Count,
            "TLS handshakes that failed under a framework serve (garbage, a plain HTTP request, a refused handshake, a client gone mid-way); timeouts are counted as closed with reason tls_handshake_timeout."
        );
    });
}

impl Metrics {
    /// Registers the listener's metrics, labelled `listener`.
    pub(crate) fn new(listener: &str) -> Self {
        describe();
        let label = ("listener", listener.to_owned());
        let counter = |name: &'static str, key: &'static str, value: &'static str| {
            metrics::counter!(name, &[label.clone(), (key, value.to_owned())][..])
        };
        let gauge = |name: &'static str, key: &'static str, value: &'static str| {
            metrics::gauge!(name, &[label.clone(), (key, value.to_owned())][..])
        };
        Self {
            accepted: metrics::counter!(ACCEPTED, &[label.clone()][..]),
            connected: metrics::counter!(CONNECTED, &[label.clone()][..]),
            connect_errors: metrics::counter!(CONNECT_ERRORS, &[label.clone()][..]),
            open: ConnectionState::ALL.map(|s| gauge(OPEN, "state", s.as_str())),
            closed: CloseReason::ALL.map(|r| counter(CLOSED, "reason", r.as_str())),
            ended_by_peer: counter(CLOSED, "reason", "peer"),
            ended_by_application: counter(CLOSED, "reason", "application"),
            accept_errors: ["per_connection", "resources", "fatal"]
                .map(|k| counter(ACCEPT_ERRORS, "kind", k)),
            accept_backoff: metrics::gauge!(ACCEPT_BACKOFF, &[label.clone()][..]),
            duration: metrics::histogram!(DURATION, &[label.clone()][..]),
            close_wait: metrics::histogram!(CLOSE_WAIT, &[label.clone()][..]),
            fin_detect: metrics::histogram!(FIN_DETECT, &[label.clone()][..]),
            drain: ["connections", "finished", "idle_closed", "forced"]
                .map(|f| gauge(DRAIN, "fate", f)),
            #[cfg(feature = "tls")]
            tls_handshake_failures: metrics::counter!(TLS_HANDSHAKE_FAILURES, &[label.clone()][..]),
        }
    }

    pub(crate) fn accepted(&self) {
        self.accepted.increment(1);
    }

    pub(crate) fn connected(&self) {
        self.connected.increment(1);
    }

    pub(crate) fn connect_error(&self) {
        self.connect_errors.increment(1);
    }

    pub(crate) fn state(&self, state: ConnectionState, delta: f64) {
        self.open[state.index()].increment(delta);
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closed[reason.index()].increment(1);
    }

    pub(crate) fn ended(&self, ending: Ending) {
        match ending {
            Ending::Peer => self.ended_by_peer.increment(1),
            Ending::Application => self.ended_by_application.increment(1),
        }
    }

    /// `kind`: 0 per connection, 1 resources, 2 fatal.
    pub(crate) fn accept_error(&self, kind: usize) {
        self.accept_errors[kind.min(2)].increment(1);
    }

    pub(crate) fn backoff(&self, pause: Duration) {
        self.accept_backoff.increment(pause.as_secs_f64());
    }

    pub(crate) fn duration(&self, lived: Duration) {
        self.duration.record(lived.as_secs_f64());
    }

    pub(crate) fn close_wait(&self, sat: Duration) {
        self.close_wait.record(sat.as_secs_f64());
    }

    pub(crate) fn fin_detect(&self, took: Duration) {
        self.fin_detect.record(took.as_secs_f64());
    }

    #[cfg(feature = "tls")]
    pub(crate) fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.increment(1);
    }

    /// `fates`: connections, finished, idle-closed, forced.
    pub(crate) fn drained(&self, fates: [usize; 4]) {
        for (gauge, n) in self.drain.iter().zip(fates) {
            gauge.set(n as f64);
        }
    }
}
