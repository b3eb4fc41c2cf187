//! Per-stage counters: frames handled and time spent on them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct StageStats {
    pub frames: AtomicU64,
    pub busy_ns: AtomicU64,
}

impl StageStats {
    pub fn record(&self, took: Duration) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.busy_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Mean milliseconds per frame so far.
    pub fn mean_ms(&self) -> f64 {
        let n = self.frames.load(Ordering::Relaxed);
        if n == 0 {
            0.0
        } else {
            self.busy_ns.load(Ordering::Relaxed) as f64 / n as f64 / 1e6
        }
    }
}

/// Latency histogram with 1 ms buckets up to 10 s (and one overflow bucket): fixed memory however
/// long the daemon runs.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Vec<AtomicU64>,
}

/// Buckets of 1 ms.
const LATENCY_BUCKETS: usize = 10_000;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..=LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LatencyHistogram {
    pub fn record(&self, d: Duration) {
        let ms = (d.as_millis() as usize).min(LATENCY_BUCKETS);
        self.buckets[ms].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in milliseconds (upper edge of its bucket); `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (ms, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(ms as u64 + 1);
            }
        }
        Some(LATENCY_BUCKETS as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let h = LatencyHistogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.quantile_ms(0.5), Some(51));
        assert_eq!(h.quantile_ms(0.99), Some(100));
        assert_eq!(LatencyHistogram::default().quantile_ms(0.5), None);
    }
}
