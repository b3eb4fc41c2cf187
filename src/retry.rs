//! Retrying with backoff, shared by everything that reconnects to a peer (a camera, a broker):
//! exponential waits with jitter up to a cap, and sleeping in slices that a stop request cuts short.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Reconnect policy of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// First wait after a failure.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Attempts without a frame before giving up; `None` retries for ever.
    pub retries: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            retries: None,
        }
    }
}

/// The wait before attempt `n` (1-based) after failures: `initial · 2ⁿ⁻¹`, capped, ±20% jitter so
/// many cameras behind one failed switch do not reconnect in lockstep.
pub fn backoff(policy: &ReconnectPolicy, attempt: u32, salt: u64) -> Duration {
    let base = policy.initial.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let capped = base.min(policy.max.as_secs_f64());
    // cheap deterministic jitter in [0.8, 1.2) from the attempt and a per-source salt
    let h = (u64::from(attempt) ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    let jitter = 0.8 + 0.4 * (h as f64 / (1u64 << 24) as f64);
    Duration::from_secs_f64((capped * jitter).min(policy.max.as_secs_f64()))
}

/// Sleep `d` in short slices; `false` if `stop` was set meanwhile.
pub fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
        );
    }
    !stop.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = ReconnectPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            retries: None,
        };
        let waits: Vec<f64> = (1..=6).map(|a| backoff(&p, a, 7).as_secs_f64()).collect();
        for (i, w) in waits.iter().enumerate() {
            let nominal = (2f64.powi(i as i32)).min(8.0);
            assert!(
                *w >= nominal * 0.8 - 1e-9 && *w <= nominal.min(8.0) * 1.2 + 1e-9 && *w <= 8.0,
                "{waits:?}"
            );
        }
        assert!(waits[5] <= 8.0);
    }
}
