//! Summary statistics: the one definition of mean, median and percentiles used by every report,
//! benchmark, profile and simulation.
//!
//! Percentiles interpolate linearly between the two closest ranks (Hyndman & Fan type 7, NumPy's
//! default), so the median is the 50th percentile and the mean of the two middle values of an
//! even-length sample. Empty input gives `NaN` (JSON `null`), never a panic; `NaN` values sort last.

use serde::Serialize;

/// Arithmetic mean (`NaN` when empty).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Median (`NaN` when empty).
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// Percentile `q` in `0..=100` of unsorted values, linearly interpolated (`NaN` when empty).
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile_sorted(&sorted, q)
}

/// [`percentile`] of values already sorted ascending.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = (q.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    if lo == hi {
        sorted[lo]
    } else {
        sorted[lo] + (sorted[hi] - sorted[lo]) * frac
    }
}

/// Mean, median, 95th percentile and range of a sample, in the sample's unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median (50th percentile).
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises `values` (every field `NaN` but `n` when empty).
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Self {
            n: sorted.len(),
            mean: mean(&sorted),
            p50: percentile_sorted(&sorted, 50.0),
            p95: percentile_sorted(&sorted, 95.0),
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_sample_is_the_mean_of_the_middle_pair() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v: Vec<f64> = (1..=11).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 11.0);
        assert_eq!(percentile(&v, 95.0), 10.5);
        assert_eq!(percentile(&[7.0], 95.0), 7.0);
    }

    #[test]
    fn empty_samples_give_nan_not_a_panic() {
        assert!(mean(&[]).is_nan());
        assert!(percentile(&[], 50.0).is_nan());
        let s = Summary::of(&[]);
        assert_eq!(s.n, 0);
        assert!(s.p95.is_nan() && s.min.is_nan());
    }

    #[test]
    fn summary_matches_the_single_functions() {
        let v = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0];
        let s = Summary::of(&v);
        assert_eq!((s.n, s.min, s.max), (6, 1.0, 9.0));
        assert_eq!(s.mean, mean(&v));
        assert_eq!(s.p50, median(&v));
        assert_eq!(s.p95, percentile(&v, 95.0));
    }
}
