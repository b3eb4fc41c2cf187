//! Is a pipeline making progress? It is stuck when frames are inside it (decoded, not yet through
//! tracking) and its processed counter has not moved for a while. An idle pipeline (a camera in
//! backoff, a finished file) is not stuck: nothing waits in it.

use std::time::{Duration, Instant};

/// Progress of one pipeline, fed with its counters at each check.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    last_processed: u64,
    /// When `processed` last moved, or when frames started waiting.
    since: Option<Instant>,
}

impl Progress {
    /// Feed the counters seen at `now`; `true` if stuck for at least `after`.
    pub fn observe(
        &mut self,
        processed: u64,
        in_flight: u64,
        now: Instant,
        after: Duration,
    ) -> bool {
        if processed != self.last_processed || in_flight == 0 {
            self.last_processed = processed;
            self.since = Some(now);
            return false;
        }
        let since = *self.since.get_or_insert(now);
        now.duration_since(since) >= after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_only_with_frames_waiting_and_no_output() {
        let t0 = Instant::now();
        let s = |x: u64| t0 + Duration::from_secs(x);
        let after = Duration::from_secs(10);
        let mut p = Progress::default();
        assert!(!p.observe(5, 2, s(0), after));
        // moving: fine
        assert!(!p.observe(9, 2, s(20), after));
        // idle with nothing inside: fine however long
        assert!(!p.observe(9, 0, s(100), after));
        // frames waiting, output frozen: stuck once `after` has passed
        assert!(!p.observe(9, 3, s(105), after));
        assert!(p.observe(9, 3, s(111), after));
        // it moves again: healthy
        assert!(!p.observe(10, 3, s(112), after));
    }
}
