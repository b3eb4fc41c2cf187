//! Live counters of a running pipeline: per stage (frames, time), per edge (depth, drops), per
//! source (frames in/processed, reconnects, state, latency) and per output. Everything is atomics
//! behind `Arc`s, written by the stages and read at any time by `/metrics` and `/pipelines`.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::ingest::supervisor::StateCell;
use crate::runtime::edge::EdgeStats;

/// Where a stage (or an output) is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    Running,
    /// Drained and ended.
    Finished,
    /// Returned an error or panicked; see its error.
    Failed,
    /// Made no progress for `queues.stall_timeout` with work waiting; given up on.
    Stalled,
}

impl StageState {
    pub const ALL: [StageState; 4] = [
        StageState::Running,
        StageState::Finished,
        StageState::Failed,
        StageState::Stalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Stalled => "stalled",
        }
    }

    fn from_u8(v: u8) -> Self {
        Self::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(Self::Failed)
    }
}

#[derive(Debug, Default)]
pub struct StageStats {
    pub frames: AtomicU64,
    pub busy_ns: AtomicU64,
    /// A [`StageState`] (0 = running).
    state: AtomicU8,
    /// Why it failed or stalled.
    error: Mutex<Option<String>>,
    /// For an output: the file it writes now (an MP4 continues in `NAME-N.mp4` after a restart
    /// or a size change).
    file: Mutex<Option<String>>,
}

impl StageStats {
    pub fn state(&self) -> StageState {
        StageState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, s: StageState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn set_error(&self, e: String) {
        *lock(&self.error) = Some(e);
    }

    /// Failed with `e` (a stalled stage stays stalled).
    pub fn fail(&self, e: String) {
        if self.state() != StageState::Stalled {
            self.set_state(StageState::Failed);
        }
        self.set_error(e);
    }

    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    pub fn set_file(&self, f: String) {
        *lock(&self.file) = Some(f);
    }

    pub fn file(&self) -> Option<String> {
        lock(&self.file).clone()
    }

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
    /// Sum of all recorded values, µs (for a Prometheus `_sum`).
    sum_us: AtomicU64,
}

/// Buckets of 1 ms.
const LATENCY_BUCKETS: usize = 10_000;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..=LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn record(&self, d: Duration) {
        let ms = (d.as_millis() as usize).min(LATENCY_BUCKETS);
        self.buckets[ms].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Sum of all recorded values in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Cumulative counts at each upper bound (ms): `(bound_ms, values ≤ bound)`. A value is counted
    /// under the bound above its 1-ms bucket, so a bound is exact to the millisecond.
    pub fn cumulative(&self, bounds_ms: &[u64]) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(bounds_ms.len());
        let mut seen = 0u64;
        let mut next = 0usize;
        for &bound in bounds_ms {
            // bucket `ms` holds values in [ms, ms+1): all of them are ≤ bound when ms < bound
            let upto = (bound as usize).min(LATENCY_BUCKETS);
            while next < upto {
                seen += self.buckets[next].load(Ordering::Relaxed);
                next += 1;
            }
            out.push((bound, seen));
        }
        out
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

/// Stage names of outputs start with this (`output mp4 out/cam.mp4`).
pub const OUTPUT_STAGE_PREFIX: &str = "output ";

/// Live counters of one source.
#[derive(Debug)]
pub struct SourceMetrics {
    pub id: String,
    /// Connecting / running / backoff / failed / stopped.
    pub state: Arc<StateCell>,
    /// Times a live source came back after losing its stream.
    pub reconnects: Arc<AtomicU64>,
    /// Frames decoded (the ingest stage's counter).
    pub ingest: Arc<StageStats>,
    /// Frames through tracking, i.e. handed to the outputs.
    pub processed: Arc<StageStats>,
    /// The first edge, where a live source drops frames when the chain behind is busy.
    pub first_edge: Arc<EdgeStats>,
    /// Capture → metadata latency.
    pub latency: LatencyHistogram,
}

/// Counters of an MQTT output (see `output::mqtt`).
#[derive(Debug, Default)]
pub struct MqttStats {
    /// Connected to the broker now.
    pub connected: AtomicBool,
    /// Records written to the outbox.
    pub queued: AtomicU64,
    /// Records the broker acknowledged (QoS 1 PUBACK).
    pub delivered: AtomicU64,
    /// Publishes sent again after a connection loss (possible QoS-1 duplicates).
    pub redelivered: AtomicU64,
    /// Records dropped because the outbox reached its size limit.
    pub dropped: AtomicU64,
    /// Records in the outbox not yet acknowledged.
    pub backlog: AtomicU64,
    /// Bytes the outbox holds on disk.
    pub outbox_bytes: AtomicU64,
}

/// Counters of one output.
#[derive(Debug)]
pub enum OutputStats {
    Mqtt(Arc<MqttStats>),
}

/// Everything live about one running pipeline.
#[derive(Debug, Default)]
pub struct PipelineMetrics {
    pub sources: Vec<Arc<SourceMetrics>>,
    /// `(stage, stats)`, registered as the pipeline wires itself.
    pub stages: Mutex<Vec<(String, Arc<StageStats>)>>,
    /// `(edge, stats)`.
    pub edges: Mutex<Vec<(String, Arc<EdgeStats>)>>,
    /// `(output, stats)` of outputs that have more to say than frames and time.
    pub outputs: Mutex<Vec<(String, OutputStats)>>,
    /// Detector time per frame (a batch's time divided by its frames).
    pub detector: LatencyHistogram,
}

impl PipelineMetrics {
    /// Counters for the sources of `plan`, sharing each source's state cell.
    pub fn for_plan(plan: &crate::config::Plan) -> Self {
        Self {
            sources: plan
                .sources
                .iter()
                .map(|s| {
                    Arc::new(SourceMetrics {
                        id: s.id.clone(),
                        state: s.state.clone(),
                        reconnects: s.reconnects.clone(),
                        ingest: Arc::default(),
                        processed: Arc::default(),
                        first_edge: Arc::new(EdgeStats::default()),
                        latency: LatencyHistogram::default(),
                    })
                })
                .collect(),
            ..Default::default()
        }
    }

    pub fn add_stage(&self, name: String, stats: Arc<StageStats>) {
        lock(&self.stages).push((name, stats));
    }

    pub fn add_edge(&self, name: String, stats: Arc<EdgeStats>) {
        lock(&self.edges).push((name, stats));
    }

    pub fn add_output(&self, name: String, stats: OutputStats) {
        lock(&self.outputs).push((name, stats));
    }

    /// Total frames handed to outputs, over all sources.
    pub fn processed(&self) -> u64 {
        self.sources
            .iter()
            .map(|s| s.processed.frames.load(Ordering::Relaxed))
            .sum()
    }

    /// Stages and outputs that have stalled (see `runtime::supervise`).
    pub fn stalled(&self) -> Vec<String> {
        lock(&self.stages)
            .iter()
            .filter(|(_, s)| s.state() == StageState::Stalled)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Outputs that failed or stalled, with why: `(output, error)`.
    pub fn failed_outputs(&self) -> Vec<(String, String)> {
        lock(&self.stages)
            .iter()
            .filter(|(n, s)| {
                n.starts_with(OUTPUT_STAGE_PREFIX)
                    && s.state() != StageState::Running
                    && s.state() != StageState::Finished
            })
            .map(|(n, s)| (n.clone(), s.error().unwrap_or_default()))
            .collect()
    }

    /// Frames decoded but not (yet) through tracking: in queues or in a stage.
    pub fn in_flight(&self) -> u64 {
        self.sources
            .iter()
            .map(|s| {
                let decoded = s.ingest.frames.load(Ordering::Relaxed);
                let done = s.processed.frames.load(Ordering::Relaxed)
                    + s.first_edge.dropped.load(Ordering::Relaxed);
                decoded.saturating_sub(done)
            })
            .sum()
    }
}

/// A counters list stays usable even if a thread panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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

    #[test]
    fn cumulative_buckets_and_sum() {
        let h = LatencyHistogram::default();
        for ms in [3u64, 7, 7, 40, 20_000] {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(
            h.cumulative(&[5, 10, 50, 10_000]),
            vec![(5, 1), (10, 3), (50, 4), (10_000, 4)]
        );
        assert!((h.sum_seconds() - 20.057).abs() < 1e-9);
    }
}
