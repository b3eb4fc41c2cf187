//! The last hour of each source's rate, latency and drops, sampled every [`INTERVAL`] (for the
//! console's small charts and the current fps of `/api/sources`). Fixed memory: [`POINTS`] points
//! per source, and one latency snapshot per source to take an interval's quantiles from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::runtime::metrics::{PipelineMetrics, quantile_between};

pub const INTERVAL: Duration = Duration::from_secs(10);
/// One hour.
pub const POINTS: usize = 360;

/// One interval of one source.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Point {
    /// Unix seconds at the interval's end.
    pub t: u64,
    /// Frames through tracking per second.
    pub fps: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Frames dropped at the source's first edge in the interval.
    pub dropped: u64,
}

/// What the previous sample saw of a source.
#[derive(Debug, Default)]
struct Last {
    processed: u64,
    dropped: u64,
    latency: Vec<u64>,
    at: Option<std::time::Instant>,
}

#[derive(Debug, Default)]
struct Series {
    points: VecDeque<Point>,
    last: Last,
}

/// `(pipeline, source)` → its last hour.
#[derive(Debug, Default)]
pub struct History {
    series: BTreeMap<(String, String), Series>,
}

impl History {
    /// Sample every source of `pipelines` (`(name, metrics)`); sources no longer running keep
    /// their points until they age out of the hour, then are forgotten.
    pub fn sample(&mut self, pipelines: &[(String, std::sync::Arc<PipelineMetrics>)]) {
        let now = crate::service::auth::unix_now();
        let mut seen = Vec::new();
        for (pipeline, m) in pipelines {
            for s in &m.sources {
                let key = (pipeline.clone(), s.id.clone());
                let series = self.series.entry(key.clone()).or_default();
                let processed = s.processed.frames.load(Ordering::Relaxed);
                let dropped = s.first_edge.dropped.load(Ordering::Relaxed);
                let latency = s.latency.snapshot();
                let instant = std::time::Instant::now();
                if let Some(at) = series.last.at {
                    let secs = instant.duration_since(at).as_secs_f64().max(1e-3);
                    let q =
                        |q| quantile_between(&series.last.latency, &latency, q).map(|v| v as f64);
                    let point = Point {
                        t: now,
                        // counters restart with a restarted pipeline: never negative
                        fps: processed.saturating_sub(series.last.processed) as f64 / secs,
                        latency_p50_ms: q(0.5),
                        latency_p99_ms: q(0.99),
                        dropped: dropped.saturating_sub(series.last.dropped),
                    };
                    if series.points.len() == POINTS {
                        series.points.pop_front();
                    }
                    series.points.push_back(point);
                }
                series.last = Last {
                    processed,
                    dropped,
                    latency,
                    at: Some(instant),
                };
                seen.push(key);
            }
        }
        let hour = INTERVAL.as_secs() * POINTS as u64;
        self.series
            .retain(|k, s| seen.contains(k) || s.points.back().is_some_and(|p| p.t + hour > now));
    }

    /// The points of the last `minutes` of each source.
    pub fn last(&self, minutes: u64) -> Vec<(String, String, Vec<Point>)> {
        let from = crate::service::auth::unix_now().saturating_sub(minutes * 60);
        self.series
            .iter()
            .map(|((p, s), series)| {
                let points = series.points.iter().filter(|pt| pt.t >= from).copied();
                (p.clone(), s.clone(), points.collect())
            })
            .collect()
    }

    /// The newest point of one source.
    pub fn newest(&self, pipeline: &str, source: &str) -> Option<Point> {
        self.series
            .get(&(pipeline.to_string(), source.to_string()))
            .and_then(|s| s.points.back().copied())
    }
}
