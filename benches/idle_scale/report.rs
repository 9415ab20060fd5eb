//! The summary: every figure by contender, the `value` lines, the overheads over raw, the
//! figure derived from two server processes, and the targets.

use crate::{Plan, Results, TIMEOUTS};

const CONTENDERS: [&str; 3] = ["raw", "hygiene", "hygiene_timeouts"];

pub(crate) fn print(results: &mut Results, plan: &Plan) {
    derive(results, plan);
    let results = &*results;
    let get = |key: &str, c: &str| results.get(&(key.to_string(), c.to_string())).copied();

    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>17} {:>12}",
        "figure", "raw", "hygiene", "hygiene_timeouts", "hygiene−raw"
    );
    let mut keys: Vec<&String> = results.keys().map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    for key in &keys {
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let (r, h, t) = (
            get(key, "raw"),
            get(key, "hygiene"),
            get(key, "hygiene_timeouts"),
        );
        let d = r.zip(h).map(|(r, h)| h - r);
        println!(
            "{key:<28} {:>12} {:>12} {:>17} {:>12}",
            fmt(r),
            fmt(h),
            fmt(t),
            fmt(d)
        );
    }
    println!();
    for key in &keys {
        for c in CONTENDERS {
            if let Some(v) = get(key, c) {
                println!("value {key} {c} {v:.3}");
            }
        }
    }
    for c in ["hygiene", "hygiene_timeouts"] {
        for key in [
            "mem_per_conn_bytes",
            "rss_per_conn_bytes",
            "idle_cpu_pct",
            "allocs_per_conn",
        ] {
            if let (Some(r), Some(h)) = (get(key, "raw"), get(key, c)) {
                println!("value {key}_overhead {c} {:.3}", h - r);
            }
        }
    }
    targets(results, plan);
}

/// The cost curve: the figures that should stay flat as connections grow, at each size.
pub(crate) fn curve(runs: &[(usize, Results)]) {
    let figures: [(&str, &str, &str); 8] = [
        ("fin_detect_p99_us", "hygiene", "FIN detection p99 (µs)"),
        (
            "fin_burst_max_ms",
            "hygiene",
            "1,000 FINs at once, slowest (ms)",
        ),
        ("reap_late_p99_ms", "hygiene", "reap lateness p99 (ms)"),
        (
            "mem_per_conn_bytes_overhead",
            "hygiene",
            "memory over raw (B)",
        ),
        (
            "mem_per_conn_bytes_overhead",
            "hygiene_timeouts",
            "… with the idle timeouts (B)",
        ),
        ("idle_cpu_pct", "hygiene", "idle CPU (% of a core)"),
        (
            "idle_cpu_pct_per_timeout",
            "hygiene_timeouts",
            "… with timeouts, per 60 s (%)",
        ),
        (
            "look_us",
            "hygiene_timeouts",
            "… of which a look, per connection (µs)",
        ),
    ];
    println!();
    print!("curve {:<36}", "connections");
    for (n, _) in runs {
        print!(" {n:>12}");
    }
    println!();
    let value = |r: &Results, key: &str, c: &str| {
        let get = |k: &str, c: &str| r.get(&(k.to_string(), c.to_string())).copied();
        match key.strip_suffix("_overhead") {
            Some(base) => get(base, c).zip(get(base, "raw")).map(|(h, r)| h - r),
            None => get(key, c),
        }
    };
    for (key, c, label) in figures {
        print!("curve {label:<36}");
        for (_, r) in runs {
            print!(
                " {:>12}",
                value(r, key, c).map_or("-".into(), |v| format!("{v:.3}"))
            );
        }
        println!();
    }
    for (key, c, _) in figures {
        for (n, r) in runs {
            if let Some(v) = value(r, key, c) {
                println!("value curve_{key}_n{n} {c} {v:.3}");
            }
        }
    }
}

/// The average idle CPU over one 60 s timeout of `hygiene_timeouts`: the window between
/// deadlines (measured, `hold` phase) plus one look per connection per timeout (the cost
/// of a look measured in the `looks` phase).
fn derive(results: &mut Results, plan: &Plan) {
    let key = |k: &str| (k.to_string(), "hygiene_timeouts".to_string());
    if let (Some(&idle), Some(&look_us)) = (
        results.get(&key("idle_cpu_pct")),
        results.get(&key("look_us")),
    ) {
        let looks_pct = plan.n as f64 * look_us * 1e-6 / TIMEOUTS.as_secs_f64() * 100.0;
        results.insert(key("idle_cpu_pct_per_timeout"), idle + looks_pct);
    }
}

fn targets(results: &Results, plan: &Plan) {
    let get = |key: &str, c: &str| results.get(&(key.to_string(), c.to_string())).copied();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let overhead = |key: &str, c: &str| get(key, c).zip(get(key, "raw")).map(|(h, r)| h - r);
    if let (Some(h), Some(d)) = (
        get("idle_cpu_pct", "hygiene"),
        overhead("idle_cpu_pct", "hygiene"),
    ) {
        println!(
            "target idle CPU < 0.1 % of a core with {} connections: {} (hygiene {h:.4} %, {d:+.4} % over raw)",
            plan.n,
            verdict(h < 0.1)
        );
    }
    if let (Some(avg), Some(between), Some(look)) = (
        get("idle_cpu_pct_per_timeout", "hygiene_timeouts"),
        get("idle_cpu_pct", "hygiene_timeouts"),
        get("look_us", "hygiene_timeouts"),
    ) {
        println!(
            "target idle CPU < 0.1 % of a core with {} connections and idle, read-idle and write-idle timeouts at {} s: {} (averaged over a timeout, one look per connection included: {avg:.4} %; between deadlines {between:.4} %; a look {look:.2} µs)",
            plan.n,
            TIMEOUTS.as_secs(),
            verdict(avg < 0.1)
        );
    }
    if let Some(d) = overhead("mem_per_conn_bytes", "hygiene") {
        println!(
            "target user-space memory ≤ 64 B per connection over raw with the defaults, counted from before the listener is built: {} ({d:.0} B; kernel: {:.0} B more in epoll)",
            verdict(d <= 64.0),
            overhead("kernel_epoll_bytes_per_conn", "hygiene").unwrap_or(f64::NAN)
        );
    }
    if let Some(d) = overhead("mem_per_conn_bytes", "hygiene_timeouts") {
        println!(
            "target user-space memory ≤ 128 B per connection over raw with idle, read-idle and write-idle timeouts on: {} ({d:.0} B)",
            verdict(d <= 128.0)
        );
    }
    if let Some(p99) = get("fin_detect_p99_us", "hygiene") {
        println!(
            "target FIN detection p99 ≤ 1 ms with {} registered: {} ({p99:.0} µs)",
            plan.n,
            verdict(p99 <= 1000.0)
        );
    }
    if let (Some(max), Some(detected), Some(sent)) = (
        get("fin_burst_max_ms", "hygiene"),
        get("fin_burst_detected", "hygiene"),
        get("fin_burst_sent", "hygiene"),
    ) {
        println!(
            "target {sent:.0} simultaneous FINs all detected within 250 ms: {} ({detected:.0} detected, slowest {max:.1} ms)",
            verdict(detected == sent && max <= 250.0)
        );
    }
    if let (Some(p99), Some(early), Some(measured)) = (
        get("reap_late_p99_ms", "hygiene"),
        get("reap_early", "hygiene"),
        get("reap_measured", "hygiene"),
    ) {
        println!(
            "target reap p99 ≤ 20 ms late, never early: {} (p99 {p99:.1} ms, {early:.0} early of {measured:.0})",
            verdict(p99 <= 20.0 && early == 0.0)
        );
    }
}
