//! Keeps a live source alive: connect, run, and on an error, a stall or an end of stream, back off
//! (exponentially, with jitter, up to a cap) and connect again — for ever, or until a retry budget
//! is spent. A source that delivered frames starts its backoff afresh. Every state change is
//! logged with the source id (and never its credentials).
//!
//! ```text
//! connecting ──frames──► running ──error / EOS / no frame for `stall`──► backoff ──► connecting
//!      │                                                                   │
//!      └────────────── retries spent ──► failed            stop ──► stopped ◄┘
//! ```

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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

/// Where a source is in its life (readable by metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceState {
    Connecting = 0,
    Running = 1,
    Backoff = 2,
    Failed = 3,
    Stopped = 4,
}

impl SourceState {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Connecting,
            1 => Self::Running,
            2 => Self::Backoff,
            3 => Self::Failed,
            _ => Self::Stopped,
        }
    }
}

/// A source's current state, shared with whoever watches it.
#[derive(Debug, Default)]
pub struct StateCell(AtomicU8);

impl StateCell {
    pub fn set(&self, s: SourceState) {
        self.0.store(s as u8, Ordering::Relaxed);
    }
    pub fn get(&self) -> SourceState {
        SourceState::from_u8(self.0.load(Ordering::Relaxed))
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
