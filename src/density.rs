//! `vigil bench --density`: how many copies of a pipeline's first source (vtest: 768x576 at
//! 10 fps) one process holds in real time — every frame through detection (or every 2nd),
//! tracking and analytics — on this machine. Each trial runs N copies paced like cameras (frames
//! released at their timestamps, the oldest dropped when the chain behind is busy) for a fixed
//! time; N streams are held when every stream had at least 98% of its frames processed and its
//! capture → metadata latency p95 stayed under a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::plan::Plan;
use crate::ingest::Pace;
use crate::runtime::edge::WhenFull;
use crate::runtime::metrics::PipelineMetrics;
use crate::runtime::pipeline::RunOptions;

/// One trial.
#[derive(Debug, Clone)]
pub struct Trial {
    pub streams: usize,
    pub every: u32,
    /// Frames each stream should have processed.
    pub expected: u64,
    /// The fewest any stream processed.
    pub min_processed: u64,
    /// The worst stream's capture → metadata p95, ms.
    pub worst_p95_ms: u64,
    pub held: bool,
}

/// Most streams tried.
const MAX_STREAMS: usize = 16;

/// The trials for `every`, from one stream up until one is not held.
pub fn density(plan: &Plan, every: u32, seconds: u64) -> Result<Vec<Trial>, String> {
    let mut trials = Vec::new();
    for n in 1..=MAX_STREAMS {
        let t = trial(plan, n, every, seconds)?;
        let held = t.held;
        trials.push(t);
        if !held {
            break;
        }
    }
    Ok(trials)
}

/// `plan` with `n` real-time copies of its first source, detecting every `every`-th frame, no
/// outputs (their cost is the outputs', not the analytics').
fn copies(plan: &Plan, n: usize, every: u32, frames: u64) -> Result<Plan, String> {
    let src = plan.sources.first().ok_or("the pipeline has no source")?;
    let mut p = plan.clone();
    p.sources = (0..n)
        .map(|i| {
            let mut s = src.clone();
            s.id = format!("stream{i}");
            s.pace = Pace::Realtime;
            s.when_full = WhenFull::DropOldest;
            s.max_frames = Some(frames);
            s
        })
        .collect();
    let mut detect = plan
        .source_detect
        .first()
        .cloned()
        .ok_or("no detector settings")?;
    detect.every = every;
    p.source_detect = vec![detect; n];
    p.source_analytics = vec![plan.source_analytics.first().cloned().unwrap_or_default(); n];
    p.outputs.clear();
    Ok(p)
}

fn trial(plan: &Plan, n: usize, every: u32, seconds: u64) -> Result<Trial, String> {
    let expected = seconds * 10;
    let p = copies(plan, n, every, expected)?;
    let detector = p.load_detector().map_err(|e| e.to_string())?;
    let metrics = Arc::new(PipelineMetrics::for_plan(&p));
    let stop = AtomicBool::new(false);
    let report = crate::runtime::pipeline::run_observed(
        &p,
        detector,
        &stop,
        &RunOptions::default(),
        &metrics,
    );
    if !report.errors.is_empty() {
        return Err(report.errors.join("; "));
    }
    let min_processed = metrics
        .sources
        .iter()
        .map(|s| s.processed.frames.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    let worst_p95_ms = metrics
        .sources
        .iter()
        .filter_map(|s| s.latency.quantile_ms(0.95))
        .max()
        .unwrap_or(0);
    let held = min_processed * 100 >= expected * 98 && worst_p95_ms < 1000;
    Ok(Trial {
        streams: n,
        every,
        expected,
        min_processed,
        worst_p95_ms,
        held,
    })
}

/// The report's lines.
pub fn describe(trials: &[Trial]) -> String {
    let mut out = String::new();
    for t in trials {
        out.push_str(&format!(
            "  {} stream(s), detect every {}: min {}/{} frames processed, worst p95 latency {} ms: {}\n",
            t.streams,
            t.every,
            t.min_processed,
            t.expected,
            t.worst_p95_ms,
            if t.held { "held" } else { "not held" }
        ));
    }
    out
}

/// How many streams the trials held.
pub fn held(trials: &[Trial]) -> usize {
    trials
        .iter()
        .filter(|t| t.held)
        .map(|t| t.streams)
        .max()
        .unwrap_or(0)
}
