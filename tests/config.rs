//! Bad configuration is a clear error at build time that names the option, from
//! `build()`, `bind()` (as `InvalidInput`) and `wrap()`; `None` disables every option.

mod support;

use std::io;
use std::time::Duration;

use tcp_hygiene::{Builder, ConfigError, Keepalive};

type Setter = Box<dyn Fn(&mut Builder)>;

fn ka(idle: Duration, interval: Duration, retries: u32) -> Keepalive {
    Keepalive::new(idle, interval, retries)
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
    assert!(cases.len() >= 23);
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
        .close_wait_timeout(Duration::from_nanos(1));
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
