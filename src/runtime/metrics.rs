//! Live counters of a running pipeline: per stage (frames, time), per edge (depth, drops), per
//! source (frames in/processed, reconnects, state, latency) and per output. Everything is atomics
//! behind `Arc`s, written by the stages and read at any time by `/metrics` and `/pipelines`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::flow::{StageState, StageStats, lock};
use crate::ingest::supervisor::StateCell;
use crate::runtime::edge::EdgeStats;

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

    /// Every bucket's count now (to take the quantiles of an interval: [`quantile_between`]).
    pub fn snapshot(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
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

/// The `q` quantile (ms, upper bucket edge) of what was recorded between two snapshots of one
/// histogram; `None` when nothing was.
pub fn quantile_between(before: &[u64], after: &[u64], q: f64) -> Option<u64> {
    let diff: Vec<u64> = after
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let n: u64 = diff.iter().sum();
    if n == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (ms, c) in diff.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(ms as u64 + 1);
        }
    }
    None
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
    /// Paused from outside (see [`crate::ingest::SourceLive::paused`]).
    pub paused: Arc<std::sync::atomic::AtomicBool>,
    /// Why the source last lost its stream (see [`crate::ingest::SourceLive::last_error`]).
    pub last_error: Arc<Mutex<Option<String>>>,
    /// The newest frame handed to the outputs, tracks and regions on it (the console's live
    /// view encodes it on demand: nothing is encoded while nobody watches).
    pub latest: Mutex<Option<crate::frame::Frame>>,
    /// The load governor's side of the source (`runtime::governor`).
    pub governed: Governed,
}

/// What the load governor reads and sets for one source.
#[derive(Debug, Default)]
pub struct Governed {
    /// The detector runs on every `every`-th frame now (the configured value, or more while
    /// degraded). Read by the preprocess and track stages for each frame.
    pub every: Arc<std::sync::atomic::AtomicU32>,
    /// The oldest frame age at the detector since the governor last looked, µs.
    pub age_us: AtomicU64,
    /// The same in frames of the source's nominal rate (the last look's, for `/metrics`).
    pub age_frames: AtomicU64,
    pub degradations: AtomicU64,
    pub restorations: AtomicU64,
}

impl SourceMetrics {
    /// What the source's ingest writes its state and reconnects into.
    pub fn live(&self) -> crate::ingest::SourceLive {
        crate::ingest::SourceLive {
            state: self.state.clone(),
            reconnects: self.reconnects.clone(),
            paused: self.paused.clone(),
            last_error: self.last_error.clone(),
        }
    }
}

pub use crate::output::OutputStats;

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
    /// Forward passes of the detector, and the frames they carried (their ratio is the mean
    /// batch size that `detector.batch` achieves).
    pub detector_batches: std::sync::atomic::AtomicU64,
    pub detector_batched_frames: std::sync::atomic::AtomicU64,
    /// Where the analytics' events go (the service shares one hub among its pipelines).
    pub events: Arc<crate::runtime::events::EventHub>,
}

impl PipelineMetrics {
    /// Fresh counters for the sources of `plan` (the ingest of each shares its state and
    /// reconnects through [`SourceMetrics::live`]).
    pub fn for_plan(plan: &crate::config::Plan) -> Self {
        Self {
            sources: plan
                .sources
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    Arc::new(SourceMetrics {
                        id: s.id.clone(),
                        state: Arc::default(),
                        reconnects: Arc::default(),
                        ingest: Arc::default(),
                        processed: Arc::default(),
                        first_edge: Arc::new(EdgeStats::default()),
                        latency: LatencyHistogram::default(),
                        paused: Arc::default(),
                        governed: Governed {
                            every: Arc::new(std::sync::atomic::AtomicU32::new(
                                plan.source_detect.get(i).map_or(1, |d| d.every),
                            )),
                            ..Governed::default()
                        },
                        last_error: Arc::default(),
                        latest: Mutex::new(None),
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
