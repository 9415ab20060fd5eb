//! What the run prints: the end-to-end table, the per-poll table, the instruction counts,
//! then the `ratio …` and `value …` lines and the targets.

use crate::common::stats::{median, spread};
use crate::contenders::Contender;

/// The per-poll sections' table and `value` lines.
#[derive(Debug, Default)]
pub(crate) struct PollResults {
    pub(crate) table: Vec<String>,
    pub(crate) values: Vec<(&'static str, Contender, f64)>,
}

/// Instructions per poll under callgrind: (`read` or `write`, contender, instructions).
pub(crate) type Instructions = Vec<(&'static str, Contender, f64)>;

/// One figure of one contender: the median of its values and of its ratios to raw.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) contender: Contender,
    unit: &'static str,
    higher_is_better: bool,
    median: f64,
    pub(crate) ratio_median: f64,
    ratio_min: f64,
    ratio_max: f64,
}

/// `values[round][contender]` → one row per contender.
pub(crate) fn rows(
    figure: &str,
    unit: &'static str,
    higher_is_better: bool,
    values: &[[f64; Contender::SLOTS]],
) -> Vec<Row> {
    if values.is_empty() {
        return Vec::new();
    }
    Contender::ALL
        .iter()
        .map(|&c| {
            let mine: Vec<f64> = values.iter().map(|r| r[c.index()]).collect();
            let ratios: Vec<f64> = values
                .iter()
                .map(|r| r[c.index()] / r[Contender::Raw.index()])
                .collect();
            let (ratio_min, ratio_max) = spread(&ratios);
            Row {
                figure: figure.to_string(),
                contender: c,
                unit,
                higher_is_better,
                median: median(&mine),
                ratio_median: median(&ratios),
                ratio_min,
                ratio_max,
            }
        })
        .collect()
}

/// Everything after the measurements.
pub(crate) fn print(rows: &[Row], polls: &PollResults, instructions: &Instructions) {
    println!();
    print_table(rows);
    println!();
    println!("per poll (data always ready, one CPU, same kernel socket for every contender; ns per poll, Δ = contender − raw, medians over rounds):");
    for line in &polls.table {
        println!("  {line}");
    }
    if !instructions.is_empty() {
        println!("user-space instructions per poll (callgrind):");
        for (op, c, ir) in instructions {
            println!("  {op:<5} {:<17} {ir:>8.1}", c.name());
        }
    }
    println!();
    for row in rows {
        if row.contender != Contender::Raw {
            println!(
                "ratio {} {} {:.3}",
                row.figure,
                row.contender.name(),
                row.ratio_median
            );
        }
    }
    for (name, c, v) in &polls.values {
        println!("value {name} {} {v:.2}", c.name());
    }
    for (op, c, ir) in instructions {
        println!("value poll_{op}_instructions {} {ir:.1}", c.name());
    }
    for c in [Contender::Hygiene, Contender::TokioIoTimeout] {
        let raw: f64 = instructions
            .iter()
            .filter(|r| r.1 == Contender::Raw)
            .map(|r| r.2)
            .sum();
        let mine: f64 = instructions.iter().filter(|r| r.1 == c).map(|r| r.2).sum();
        let ops = instructions.iter().filter(|r| r.1 == c).count();
        if ops > 0 {
            println!(
                "value poll_overhead_instructions {} {:.1}",
                c.name(),
                (mine - raw) / ops as f64
            );
        }
    }
    print_targets(rows, &polls.values);
}

/// The targets against this run's medians: `target <what> met|MISSED (<numbers>)`.
fn print_targets(rows: &[Row], polls: &[(&'static str, Contender, f64)]) {
    let ratio = |figure: &str, c: Contender| {
        rows.iter()
            .find(|r| r.figure == figure && r.contender == c)
            .map(|r| r.ratio_median)
    };
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let limits: [(&str, f64, bool); 4] = [
        ("throughput", 0.97, true),
        ("pingpong_p50", 1.03, false),
        ("accept", 0.98, true),
        ("connect", 0.97, true),
    ];
    for suffix in ["ct", "mt"] {
        for (figure, limit, higher_is_better) in limits {
            let name = format!("{figure}_{suffix}");
            let (Some(h), Some(t)) = (
                ratio(&name, Contender::Hygiene),
                ratio(&name, Contender::TokioIoTimeout),
            ) else {
                continue;
            };
            let within = if higher_is_better {
                h >= limit
            } else {
                h <= limit
            };
            let no_worse = if higher_is_better { h >= t } else { h <= t };
            let op = if higher_is_better { "≥" } else { "≤" };
            println!(
                "target {name} {op} {limit}: {} ({h:.3}); no worse than tokio-io-timeout: {} ({t:.3})",
                verdict(within),
                verdict(no_worse)
            );
        }
    }
    // With the `metrics` feature: the same limits with a recorder receiving every update.
    #[cfg(feature = "metrics")]
    for suffix in ["ct", "mt"] {
        for (figure, limit, higher_is_better) in &limits[..2] {
            let name = format!("{figure}_{suffix}");
            let Some(m) = ratio(&name, Contender::HygieneMetrics) else {
                continue;
            };
            let within = if *higher_is_better {
                m >= *limit
            } else {
                m <= *limit
            };
            let op = if *higher_is_better { "≥" } else { "≤" };
            println!(
                "target {name} with metrics {op} {limit}: {} ({m:.3})",
                verdict(within)
            );
        }
    }
    let overhead = |c: Contender| {
        polls
            .iter()
            .find(|(n, pc, _)| *n == "poll_overhead_ns" && *pc == c)
            .map(|p| p.2)
    };
    if let (Some(h), Some(t)) = (
        overhead(Contender::Hygiene),
        overhead(Contender::TokioIoTimeout),
    ) {
        println!(
            "target poll_overhead_ns ≤ 10 and < tokio-io-timeout: {} ({h:.2} vs {t:.2})",
            verdict(h <= 10.0 && h < t)
        );
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<22} {:<17} {:>10} {:<5} {:>7} {:>15}",
        "figure", "contender", "median", "unit", "ratio", "ratio spread"
    );
    for row in rows {
        let better = if row.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        if row.contender == Contender::Raw {
            println!(
                "{:<22} {:<17} {:>10.2} {:<5} {:>7} {:>15}   ({better})",
                row.figure,
                row.contender.name(),
                row.median,
                row.unit,
                "1",
                ""
            );
        } else {
            println!(
                "{:<22} {:<17} {:>10.2} {:<5} {:>7.3} {:>15}",
                row.figure,
                row.contender.name(),
                row.median,
                row.unit,
                row.ratio_median,
                format!("{:.3}..{:.3}", row.ratio_min, row.ratio_max)
            );
        }
    }
}
