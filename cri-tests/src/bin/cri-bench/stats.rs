//! Summaries of timed samples: mean, and percentiles by nearest rank (as
//! `bench/shim.sh` takes its p90).

use std::time::Duration;

/// Mean, median and 95th percentile of some durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
}

/// The summary of `samples`; `None` when there are none.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut ms: Vec<f64> = samples.iter().map(|sample| sample.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Some(Summary {
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
        p50: nearest_rank(&ms, 50),
        p95: nearest_rank(&ms, 95),
        min: ms[0],
        max: ms[ms.len() - 1],
    })
}

/// The `percent`th percentile of sorted, non-empty `values` by nearest
/// rank: the smallest value with at least `percent`% of values at or below.
pub fn nearest_rank(sorted: &[f64], percent: usize) -> f64 {
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 50), 10.0);
        assert_eq!(nearest_rank(&values, 95), 19.0);
        assert_eq!(nearest_rank(&values, 100), 20.0);
        assert_eq!(nearest_rank(&[7.0], 95), 7.0);
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0], 50), 2.0);
    }

    #[test]
    fn a_summary_of_durations_in_milliseconds() {
        let samples = [30, 10, 20].map(Duration::from_millis);
        let summary = summarize(&samples).unwrap();
        assert_eq!(summary.mean, 20.0);
        assert_eq!(summary.p50, 20.0);
        assert_eq!(summary.p95, 30.0);
        assert_eq!((summary.min, summary.max), (10.0, 30.0));
        assert_eq!(summarize(&[]), None);
    }
}
