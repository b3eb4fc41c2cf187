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
