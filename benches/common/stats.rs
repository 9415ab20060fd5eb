//! Small statistics: medians, percentiles and a confidence interval of the median.

/// The median (nearest rank: the lower middle of an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    percentile(&sorted(values.to_vec()), 0.5)
}

/// Nearest-rank percentile of sorted values; NaN if there are none.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(crate) fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// A distribution-free 95 % confidence interval of the median of sorted values (order
/// statistics, normal approximation of the binomial).
pub(crate) fn median_ci(sorted: &[f64]) -> (f64, f64) {
    let n = sorted.len() as f64;
    let half = 0.98 * n.sqrt();
    let lo = ((n / 2.0 - half).floor().max(0.0)) as usize;
    let hi = ((n / 2.0 + half).ceil() as usize).min(sorted.len().saturating_sub(1));
    match sorted.get(lo).zip(sorted.get(hi)) {
        Some((&a, &b)) => (a, b),
        None => (f64::NAN, f64::NAN),
    }
}

/// The smallest and the largest value.
pub(crate) fn spread(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}
