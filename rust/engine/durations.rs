//! How long the core takes, for the metrics' histograms: each batch of requests it processes,
//! and each fan-out of a message to the sessions here. Fixed buckets, counted under the lock
//! the work holds anyway: two clock reads and an increment per batch or fan-out.

use std::time::Duration;

/// The buckets' upper bounds, in microseconds (the last bucket is unbounded).
pub const BOUNDS_US: [u64; 14] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// Counts of durations by bucket, with their sum.
#[derive(Clone, Copy, Debug, Default)]
pub struct Durations {
    /// Per bucket (not cumulative); the last one is past every bound.
    pub counts: [u64; BOUNDS_US.len() + 1],
    pub sum: Duration,
}

impl Durations {
    pub fn record(&mut self, took: Duration) {
        let micros = took.as_micros();
        let bucket = BOUNDS_US.partition_point(|&bound| u128::from(bound) < micros);
        self.counts[bucket] += 1;
        self.sum += took;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_first_bucket_they_fit() {
        let mut durations = Durations::default();
        durations.record(Duration::from_micros(10));
        durations.record(Duration::from_micros(11));
        durations.record(Duration::from_secs(1));
        assert_eq!(durations.counts[0], 1, "up to 10 µs, inclusive");
        assert_eq!(durations.counts[1], 1);
        assert_eq!(durations.counts[BOUNDS_US.len()], 1, "past every bound");
        assert_eq!(durations.count(), 3);
        assert_eq!(durations.sum, Duration::from_micros(1_000_021));
    }
}
