//! Bad configuration is a clear error at build time that names the option, from
//! `build()`, `bind()` (as `InvalidInput`) and `wrap()`; `None` disables every option.

mod support;

use std::io;
use std::time::Duration;

use support::{require, Need};
use tcp_hygiene::{Builder, ConfigError, Keepalive};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Setter = Box<dyn Fn(&mut Builder)>;

fn ka(idle: Duration, interval: Duration, retries: u32) -> Keepalive {
    Keepalive::new()
        .with_idle(idle)
        .with_interval(interval)
        .with_retries(retries)
}

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

/// Every invalid setting and the option its error must name.
fn invalid() -> Vec<(&'static str, &'static str, Setter)> {
    let mut cases: Vec<(&'static str, &'static str, Setter)> = vec![
        (
            "close_wait_timeout",
            "zero",
            Box::new(|b: &mut Builder| {
                b.close_wait_timeout(Duration::ZERO);
            }),
        ),
        (
            "fin_wait_timeout",
            "zero",
            Box::new(|b: &mut Builder| {
                b.fin_wait_timeout(Duration::ZERO);
            }),
        ),
        (
            "idle_timeout",
            "zero",
            Box::new(|b: &mut Builder| {
                b.idle_timeout(Duration::ZERO);
            }),
        ),
        (
            "read_idle_timeout",
            "zero",
            Box::new(|b: &mut Builder| {
                b.read_idle_timeout(Duration::ZERO);
            }),
        ),
        (
            "write_idle_timeout",
            "zero",
            Box::new(|b: &mut Builder| {
                b.write_idle_timeout(Duration::ZERO);
            }),
        ),
        (
            "first_byte_timeout",
            "zero",
            Box::new(|b: &mut Builder| {
                b.first_byte_timeout(Duration::ZERO);
            }),
        ),
        (
            "max_connection_age",
            "zero",
            Box::new(|b: &mut Builder| {
                b.max_connection_age(Duration::ZERO);
            }),
        ),
        (
            "user_timeout",
            "zero",
            Box::new(|b: &mut Builder| {
                b.user_timeout(Duration::ZERO);
            }),
        ),
        (
            "user_timeout",
            "over i32::MAX ms",
            Box::new(|b: &mut Builder| {
                b.user_timeout(MS(i32::MAX as u64 + 1));
            }),
        ),
        (
            "idle_timeout",
            "under 1 ms",
            Box::new(|b: &mut Builder| {
                b.idle_timeout(Duration::from_micros(999));
            }),
        ),
        (
            "max_connections",
            "zero",
            Box::new(|b: &mut Builder| {
                b.max_connections(0);
            }),
        ),
        (
            "max_connections_per_ip",
            "zero",
            Box::new(|b: &mut Builder| {
                b.max_connections_per_ip(0);
            }),
        ),
        (
            "linger",
            "sub-second",
            Box::new(|b: &mut Builder| {
                b.linger(MS(500));
            }),
        ),
        (
            "linger",
            "not whole seconds",
            Box::new(|b: &mut Builder| {
                b.linger(MS(1500));
            }),
        ),
        (
            "linger",
            "non-zero (close() would block the runtime)",
            Box::new(|b: &mut Builder| {
                b.linger(S(1));
            }),
        ),
        (
            "keepalive.retries",
            "zero",
            Box::new(|b: &mut Builder| {
                b.keepalive(ka(S(10), S(10), 0));
            }),
        ),
        (
            "keepalive.retries",
            "over 127",
            Box::new(|b: &mut Builder| {
                b.keepalive(ka(S(10), S(10), 128));
            }),
        ),
    ];
    // Each keepalive duration: zero, sub-second, not whole seconds, over the kernel's max.
    for (what, bad) in [
        ("zero", Duration::ZERO),
        ("sub-second", MS(500)),
        ("not whole seconds", MS(1500)),
        ("over 32767 s", S(32_768)),
    ] {
        cases.push((
            "keepalive.idle",
            what,
            Box::new(move |b: &mut Builder| {
                b.keepalive(ka(bad, S(10), 3));
            }),
        ));
        cases.push((
            "keepalive.interval",
            what,
            Box::new(move |b: &mut Builder| {
                b.keepalive(ka(S(10), bad, 3));
            }),
        ));
    }
    for (what, bad) in [("NaN", f64::NAN), ("negative", -0.1), ("over 1", 1.5)] {
        cases.push((
            "max_connection_age_jitter",
            what,
            Box::new(move |b: &mut Builder| {
                b.max_connection_age_jitter(bad);
            }),
        ));
    }
    cases
}

fn config_error(e: &io::Error) -> &ConfigError {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<ConfigError>())
        .unwrap_or_else(|| panic!("not a ConfigError inside: {e:?}"))
}

#[test]
fn every_invalid_option_is_named_by_build() {
    let cases = invalid();
    assert!(cases.len() >= 25);
    for (option, what, set) in &cases {
        let mut b = Builder::new();
        set(&mut b);
        let err = b
            .build()
            .expect_err(&format!("{option} {what} must be rejected"));
        assert_eq!(err.option(), *option, "{what}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("`{option}`")),
            "{option} {what}: message does not name it: {msg}"
        );
        eprintln!("{option} ({what}): {msg}");
    }
}

#[tokio::test]
async fn bind_and_wrap_return_invalid_input_naming_the_option() {
    for (option, what, set) in &invalid() {
        let mut b = Builder::new();
        set(&mut b);
        let err = b
            .bind("127.0.0.1:0")
            .await
            .expect_err(&format!("bind with {option} {what} must fail"));
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{option} {what}");
        assert!(err.to_string().contains(option), "{option} {what}: {err}");
        assert_eq!(config_error(&err).option(), *option);

        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = b.wrap(plain).expect_err("wrap must fail too");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(config_error(&err).option(), *option);
    }
}

/// The first invalid option is reported, and a valid builder still builds after a bad
/// value is replaced (the builder is reusable).
#[test]
fn fixing_the_value_makes_it_build() {
    let mut b = Builder::new();
    b.idle_timeout(Duration::ZERO);
    assert_eq!(b.build().unwrap_err().option(), "idle_timeout");
    b.idle_timeout(S(30));
    b.build().expect("valid after the fix");
}

/// `None` disables every option: it builds, binds, and accepts.
#[tokio::test]
async fn none_disables_everything() {
    let mut b = Builder::new();
    b.close_wait_timeout(None)
        .fin_wait_timeout(None)
        .idle_timeout(None)
        .read_idle_timeout(None)
        .write_idle_timeout(None)
        .first_byte_timeout(None)
        .max_connection_age(None)
        .user_timeout(None)
        .keepalive(None)
        .linger(None)
        .max_connections(None)
        .max_connections_per_ip(None);
    let config = b.build().expect("all disabled is valid");
    assert_eq!(config.close_wait_timeout(), None);
    assert_eq!(config.fin_wait_timeout(), None);
    assert_eq!(config.idle_timeout(), None);
    assert_eq!(config.read_idle_timeout(), None);
    assert_eq!(config.write_idle_timeout(), None);
    assert_eq!(config.first_byte_timeout(), None);
    assert_eq!(config.max_connection_age(), None);
    assert_eq!(config.user_timeout(), None);
    assert_eq!(config.keepalive(), None);
    assert_eq!(config.max_connections(), None);

    let listener = support::listener(&b).await;
    let addr = listener.local_addr().unwrap();
    let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    assert_eq!(stream.close_reason(), None);
    assert_eq!(listener.stats().socket_option_failures, 0);
}

/// The limits themselves are valid, and applied to real sockets without failures.
#[tokio::test]
async fn boundary_values_are_accepted_by_builder_and_kernel() {
    let mut b = Builder::new();
    b.keepalive(ka(S(32_767), S(32_767), 127))
        .user_timeout(MS(i32::MAX as u64))
        .linger(Duration::ZERO)
        .max_connections(1)
        .max_connections_per_ip(1)
        .close_wait_timeout(MS(1));
    b.build().expect("limits are valid");
    let listener = support::listener(&b).await;
    let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    assert_eq!(
        listener.stats().socket_option_failures,
        0,
        "the kernel accepted every option"
    );
    let sock = socket2::SockRef::from(stream.get_ref());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), S(32_767));
    assert_eq!(sock.tcp_keepalive_interval().unwrap(), S(32_767));
    assert_eq!(sock.tcp_keepalive_retries().unwrap(), 127);
    assert_eq!(sock.tcp_user_timeout().unwrap(), Some(MS(i32::MAX as u64)));
    assert_eq!(sock.linger().unwrap(), Some(Duration::ZERO));
}

/// Extreme values for every duration the API takes: each is either rejected by
/// `build()` with an error naming the option, or accepted and enforced without harm: the
/// supervisor keeps reaping CLOSE_WAIT afterwards and a drain still adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_durations_are_rejected_or_enforced() {
    require!(Need::Tool("ss"));
    let extremes = [
        ("0", Duration::ZERO),
        ("1 ns", Duration::from_nanos(1)),
        ("1 ms", MS(1)),
        ("i32::MAX ms", MS(i32::MAX as u64)),
        ("i32::MAX ms + 1", MS(i32::MAX as u64 + 1)),
        ("u32::MAX s", S(u32::MAX as u64)),
        ("u64::MAX s", S(u64::MAX)),
        ("Duration::MAX", Duration::MAX),
    ];
    type Set = fn(&mut Builder, Duration);
    let options: [(&str, Set); 10] = [
        ("close_wait_timeout", |b, d| _ = b.close_wait_timeout(d)),
        ("fin_wait_timeout", |b, d| _ = b.fin_wait_timeout(d)),
        ("idle_timeout", |b, d| _ = b.idle_timeout(d)),
        ("read_idle_timeout", |b, d| _ = b.read_idle_timeout(d)),
        ("write_idle_timeout", |b, d| _ = b.write_idle_timeout(d)),
        ("first_byte_timeout", |b, d| _ = b.first_byte_timeout(d)),
        ("max_connection_age", |b, d| _ = b.max_connection_age(d)),
        ("user_timeout", |b, d| _ = b.user_timeout(d)),
        ("linger", |b, d| _ = b.linger(d)),
        ("keepalive.idle", |b, d| _ = b.keepalive(ka(d, S(1), 1))),
    ];
    let mut accepted = Vec::new();
    for (option, set) in options {
        for (what, value) in extremes {
            let mut b = Builder::new();
            // The probe below needs CLOSE_WAIT reaped within a second, whatever else is set.
            if option == "close_wait_timeout" {
                b.idle_timeout(MS(200));
            } else {
                b.close_wait_timeout(MS(200));
            }
            set(&mut b, value);
            match b.build() {
                Err(e) => {
                    assert_eq!(e.option(), option, "{option} = {what}: {e}");
                    continue;
                }
                Ok(_) => accepted.push(format!("{option} = {what}")),
            }
            let listener = support::listener(&b).await;
            probe_still_enforcing(&format!("{option} = {what}"), listener, None).await;
        }
    }
    eprintln!("accepted and enforced: {accepted:?}");
    // Durations given to `drain` itself.
    for (soft, hard) in [
        (Duration::ZERO, Duration::ZERO),
        (Duration::from_nanos(1), Duration::from_nanos(1)),
        (Duration::MAX, Duration::MAX),
        (Duration::from_nanos(1), Duration::MAX),
        (Duration::MAX, Duration::ZERO),
    ] {
        let listener = support::listener(Builder::new().close_wait_timeout(MS(200))).await;
        probe_still_enforcing(
            &format!("drain({soft:?}, {hard:?})"),
            listener,
            Some((soft, hard)),
        )
        .await;
    }
    // Keepalive's own arithmetic never overflows, whatever it is given.
    let huge = Keepalive::new()
        .with_idle(Duration::MAX)
        .with_interval(Duration::MAX)
        .with_retries(u32::MAX);
    assert_eq!(huge.worst_case(), Duration::MAX);
}

/// Checks that the listener's supervisor still works: a stuck handler's CLOSE_WAIT is
/// reaped (the client reads EOF or a reset, `ss` shows no CLOSE_WAIT), a parked
/// `read_idle(d)` of any size is harmless, and a drain (with `drain_with`, started
/// before the probe) returns a report that adds up.
async fn probe_still_enforcing(
    what: &str,
    listener: tcp_hygiene::TcpListener,
    drain_with: Option<(Duration, Duration)>,
) {
    let port = listener.local_addr().unwrap().port();
    let (mut client, held) = support::connect_pair(&listener).await;
    let handle = held.handle();
    for d in [Duration::ZERO, Duration::from_nanos(1), Duration::MAX] {
        let _ = tokio::time::timeout(MS(20), handle.read_idle(d)).await;
    }
    let (soft, hard) = drain_with.unwrap_or((MS(50), MS(300)));
    let drain = tokio::spawn(listener.drain(soft, hard));
    let _ = client.shutdown().await; // may already be closed by the option under test
    let mut buf = [0u8; 64];
    let end = tokio::time::timeout(S(3), async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: CLOSE_WAIT not reaped; the supervisor stopped?"));
    if let Err(e) = end {
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{what}: {e:?}");
    }
    support::wait_for(S(2), &format!("{what}: no CLOSE_WAIT"), || {
        support::ss_count(port, "close-wait") == 0
    })
    .await;
    drop(held);
    let report = tokio::time::timeout(S(3), drain)
        .await
        .unwrap_or_else(|_| panic!("{what}: drain did not return"))
        .unwrap();
    assert_eq!(report.connections, 1, "{what}: {report:?}");
    assert_eq!(
        report.finished + report.idle_closed + report.forced,
        report.connections,
        "{what}: {report:?}"
    );
}
