//! Builds and runs a pipeline's threads:
//!
//! ```text
//! ingest(src) ─► preprocess(src) ─┐                 ┌─► track(src) ─► mp4(src), jsonl(src), …
//! ingest(src) ─► preprocess(src) ─┴─► detect+nms ───┴─► track(src) ─► …
//! ```
//! Live sources drop the oldest frame on their first edge when the chain behind is busy; every
//! other edge blocks, so nothing already paid for is thrown away. EOS of each stream follows its
//! frames through every stage; outputs finalize on it, or when their input closes because a stage
//! before them failed.
//!
//! Nothing waits for ever: a stage that returns, fails or panics closes its edges (see `edge`),
//! the supervisor (`supervise`) names it, stops the sources when an inner stage is lost, gives up
//! on a stalled stage after `queues.stall_timeout`, and bounds a stop request's drain by
//! [`RunOptions::drain_timeout`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Plan;
use crate::config::plan::OutputPlan;
use crate::detect::Detector;
use crate::frame::{Frame, Msg, StreamId};
use crate::output::OutputContext;
use crate::runtime::edge::{EdgeCloser, EdgeRx, EdgeStats, EdgeTx, WhenFull, edge, edge_counted};
use crate::runtime::metrics::{PipelineMetrics, SourceMetrics, StageStats, lock};
use crate::runtime::stages::{
    self, DetectWiring, EventTap, OutputRun, PostWiring, Prepared, PreprocessSettings,
};
use crate::runtime::supervise::{Outcome, Role, Slot, Stages, Supervisor, Watch, guarded};

/// How long a stop request may take to drain when the caller says nothing.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How a run behaves beyond its plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Leave wall-clock fields out of metadata, so reruns give byte-identical output.
    pub deterministic: bool,
    /// Never overwrite outputs already on disk: JSONL is appended to, MP4 continues in the next
    /// free `NAME-N.mp4` (`vigil serve`, where a pipeline restarts on a config change).
    pub keep_existing: bool,
    /// After a stop request, how long stages and file outputs may take to drain; then every edge
    /// closes, outputs finalize what they have, and the run ends naming what did not drain.
    pub drain_timeout: Duration,
    /// The cluster node running this (`vigil serve --cluster`): written into every record.
    pub node: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            deterministic: false,
            keep_existing: false,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            node: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunReport {
    pub wall: Duration,
    /// Frames decoded per source.
    pub frames_in: Vec<(String, u64)>,
    /// Frames that reached each output, `(description, count)`.
    pub outputs: Vec<(String, u64)>,
    /// `(stage, frames, mean ms per frame)`.
    pub stages: Vec<(String, u64, f64)>,
    /// `(edge, sent, dropped)`.
    pub edges: Vec<(String, u64, u64)>,
    /// Capture → metadata latency per source: `(source, p50 ms, p99 ms, frames)`.
    pub latency: Vec<(String, Option<u64>, Option<u64>, u64)>,
    /// Times each live source came back after losing its stream.
    pub reconnects: Vec<(String, u64)>,
    /// Every error, each naming its source, stage or output, in the order they happened.
    pub errors: Vec<String>,
    /// The run ended because a stop (SIGINT/SIGTERM) was requested.
    pub stopped: bool,
}

/// Run `plan` with `detector` until every source ends (or `stop` is set and everything drains).
pub fn run(
    plan: &Plan,
    detector: Box<dyn Detector>,
    stop: &AtomicBool,
    opts: &RunOptions,
) -> RunReport {
    run_observed(
        plan,
        detector,
        stop,
        opts,
        &Arc::new(PipelineMetrics::for_plan(plan)),
    )
}

/// The edges of one source's chain, before they move into their threads.
struct SourceEdges {
    ingest_tx: EdgeTx<Frame>,
    ingest_rx: EdgeRx<Frame>,
    post_rx: EdgeRx<Frame>,
    outputs: Vec<OutputEdges>,
}

/// One output of one source and its edge.
struct OutputEdges {
    name: String,
    plan: OutputPlan,
    tx: EdgeTx<Frame>,
    rx: EdgeRx<Frame>,
}

/// Everything built before the threads start.
struct Graph {
    det_tx: EdgeTx<Prepared>,
    det_rx: EdgeRx<Prepared>,
    post_txs: HashMap<StreamId, EdgeTx<Frame>>,
    sources: Vec<SourceEdges>,
    closers: Vec<EdgeCloser>,
}

fn stats_of<T>(tx: &EdgeTx<T>) -> Arc<EdgeStats> {
    tx.stats().clone()
}

/// Create every edge of `plan`, registering each with `metrics`.
fn build_graph(plan: &Plan, metrics: &PipelineMetrics) -> Graph {
    let cap = plan.queue_capacity;
    let mut closers = Vec::new();
    let (det_tx, det_rx) = edge::<Prepared>("preprocess→detect", cap, WhenFull::Block);
    metrics.add_edge("preprocess→detect".into(), stats_of(&det_tx));
    closers.push(det_tx.closer());
    let mut post_txs = HashMap::new();
    let mut sources = Vec::new();
    for (s, sm) in plan.sources.iter().zip(&metrics.sources) {
        let name = format!("ingest→preprocess[{}]", s.id);
        let (ingest_tx, ingest_rx) =
            edge_counted::<Frame>(&name, cap, s.when_full, sm.first_edge.clone());
        metrics.add_edge(name, sm.first_edge.clone());
        closers.push(ingest_tx.closer());
        let name = format!("detect→track[{}]", s.id);
        let (post_tx, post_rx) = edge::<Frame>(&name, cap, WhenFull::Block);
        metrics.add_edge(name, stats_of(&post_tx));
        closers.push(post_tx.closer());
        post_txs.insert(StreamId::from(s.id.as_str()), post_tx);
        let mut outputs = Vec::new();
        for o in plan.outputs.iter().filter(|o| o.source == s.id) {
            let name = format!("output {}", o.settings.describe());
            let (tx, rx) = edge::<Frame>(&format!("track→{name}"), cap, WhenFull::Block);
            metrics.add_edge(format!("track→{name}"), stats_of(&tx));
            closers.push(tx.closer());
            outputs.push(OutputEdges {
                name,
                plan: o.clone(),
                tx,
                rx,
            });
        }
        sources.push(SourceEdges {
            ingest_tx,
            ingest_rx,
            post_rx,
            outputs,
        });
    }
    Graph {
        det_tx,
        det_rx,
        post_txs,
        sources,
        closers,
    }
}

/// The inner stages' names in `VIGIL_FAULT` (outputs go by their `kind`).
const FAULT_STAGES: [&str; 4] = ["ingest", "preprocess", "detect", "track"];

/// A `VIGIL_FAULT` that names no stage would silently inject nothing.
fn warn_of_unknown_fault_target() {
    if let Some(t) = crate::fault::target()
        && !FAULT_STAGES.contains(&t)
        && !crate::output::KINDS.contains(&t)
    {
        tracing::warn!(
            "VIGIL_FAULT names no stage `{t}` (stages: {}, {})",
            FAULT_STAGES.join(", "),
            crate::output::KINDS.join(", ")
        );
    }
}

/// [`run`], with live counters in `metrics` (made by [`PipelineMetrics::for_plan`] of this plan)
/// for whoever watches the run.
pub fn run_observed(
    plan: &Plan,
    detector: Box<dyn Detector>,
    stop: &AtomicBool,
    opts: &RunOptions,
    metrics: &Arc<PipelineMetrics>,
) -> RunReport {
    let started = Instant::now();
    warn_of_unknown_fault_target();
    let plan = Arc::new(plan.clone());
    let graph = build_graph(&plan, metrics);
    let source_stops: Vec<Arc<AtomicBool>> = plan.sources.iter().map(|_| Arc::default()).collect();
    let drain_deadline = Arc::new(Mutex::new(None));
    let mut stages = Stages::default();
    let Graph {
        det_tx,
        det_rx,
        post_txs,
        sources,
        closers,
    } = graph;
    let det_stats = Arc::new(StageStats::default());
    let input_device = detector.input_device();
    let mut ingest_slots = Vec::new();
    for (i, edges) in sources.into_iter().enumerate() {
        let src = SourceThreads {
            plan: &plan,
            index: i,
            metrics: metrics.clone(),
            stop: source_stops[i].clone(),
            det_tx: det_tx.clone(),
            opts,
            drain_deadline: drain_deadline.clone(),
            input_device: input_device.clone(),
        };
        ingest_slots.push(src.spawn(edges, &mut stages));
    }
    drop(det_tx); // the preprocess stages hold the only senders: detect ends when they are gone
    spawn_detect(
        &plan,
        det_rx,
        post_txs,
        detector,
        det_stats,
        metrics,
        &mut stages,
    );
    let governor = start_governor(&plan, metrics);
    let supervised = Supervisor {
        stages,
        stop_requested: stop,
        source_stops,
        every_edge: closers,
        stall_timeout: plan.stall_timeout,
        drain_timeout: opts.drain_timeout,
        drain_deadline,
    }
    .run();
    if let Some((done, thread)) = governor {
        done.store(true, Ordering::Relaxed);
        let _ = thread.join();
    }
    let mut report = RunReport {
        errors: supervised.errors,
        outputs: supervised.wrote,
        ..RunReport::default()
    };
    for (slot, r) in supervised.ingest {
        let id = ingest_slots
            .iter()
            .position(|&s| s == slot)
            .and_then(|i| plan.sources.get(i))
            .map_or_else(String::new, |s| s.id.clone());
        report.reconnects.push((id.clone(), r.reconnects));
        report.frames_in.push((id, r.frames));
    }
    report.stopped = stop.load(Ordering::Relaxed);
    report.wall = started.elapsed();
    fill_counters(&mut report, metrics);
    report
}

/// The load governor's thread when a source has a latency budget (`runtime::governor`).
fn start_governor(
    plan: &Arc<Plan>,
    metrics: &Arc<PipelineMetrics>,
) -> Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    let governed = crate::runtime::governor::governed(plan, metrics);
    if governed.is_empty() {
        return None;
    }
    let done = Arc::new(AtomicBool::new(false));
    let (d, name) = (done.clone(), plan.name.clone());
    let thread = std::thread::Builder::new()
        .name("governor".into())
        .spawn(move || crate::runtime::governor::run(&name, &governed, &d));
    match thread {
        Ok(t) => Some((done, t)),
        Err(e) => {
            tracing::error!("cannot start the load governor: {e}");
            None
        }
    }
}

/// The threads of one source: ingest, preprocess, track and its outputs.
struct SourceThreads<'a> {
    plan: &'a Arc<Plan>,
    index: usize,
    metrics: Arc<PipelineMetrics>,
    stop: Arc<AtomicBool>,
    det_tx: EdgeTx<Prepared>,
    opts: &'a RunOptions,
    drain_deadline: Arc<Mutex<Option<Instant>>>,
    /// The detector's GPU, where the letterbox then runs.
    input_device: Option<candle_core::Device>,
}

impl SourceThreads<'_> {
    fn source(&self) -> &Arc<SourceMetrics> {
        &self.metrics.sources[self.index]
    }

    /// Start the source's threads; returns the slot number of its ingest.
    fn spawn(self, edges: SourceEdges, stages: &mut Stages) -> usize {
        let SourceEdges {
            ingest_tx,
            ingest_rx,
            post_rx,
            outputs,
        } = edges;
        let ingest_slot = self.spawn_ingest(ingest_tx, stages);
        self.spawn_preprocess(ingest_rx, stages);
        let out_edges: Vec<(String, EdgeTx<Frame>)> = outputs
            .iter()
            .map(|o| (o.name.clone(), o.tx.clone()))
            .collect();
        let out_stats: Vec<Arc<EdgeStats>> = outputs.iter().map(|o| stats_of(&o.tx)).collect();
        self.spawn_track(post_rx, out_edges, out_stats, stages);
        for o in outputs {
            self.spawn_output(o, stages);
        }
        ingest_slot
    }

    fn spawn_ingest(&self, tx: EdgeTx<Frame>, stages: &mut Stages) -> usize {
        let s = self.plan.sources[self.index].clone();
        let stats = self.source().ingest.clone();
        let live = self.source().live();
        self.metrics
            .add_stage(format!("ingest[{}]", s.id), stats.clone());
        let stop = self.stop.clone();
        let slot = Slot::new(
            format!("source `{}` (ingest)", s.id),
            Role::Ingest,
            stats.clone(),
            None,
        );
        let index = stages.len();
        stages.spawn(format!("ingest-{}", s.id), slot, move || {
            let stream: StreamId = s.id.as_str().into();
            let r = guarded(|| Ok(crate::ingest::run(&s, &live, &tx, &stop, &stats)));
            if r.is_err() {
                // it panicked before sending its end of stream: send it for it
                let _ = tx.send(Msg::Eos(stream));
            }
            r.map(Outcome::Ingest)
        });
        index
    }

    fn spawn_preprocess(&self, rx: EdgeRx<Frame>, stages: &mut Stages) {
        let s = &self.plan.sources[self.index];
        let settings = PreprocessSettings {
            model: self.plan.model.input,
            resize: self.plan.resize,
            every: self.source().governed.every.clone(),
            device: self.input_device.clone(),
        };
        let stats = Arc::new(StageStats::default());
        let name = format!("preprocess[{}]", s.id);
        self.metrics.add_stage(name.clone(), stats.clone());
        let watch = Watch {
            input: rx.stats().clone(),
            outputs: vec![stats_of(&self.det_tx)],
            closers: vec![rx.closer()],
        };
        let slot = Slot::new(name, Role::Inner, stats.clone(), Some(watch));
        let tx = self.det_tx.clone();
        let stream: StreamId = s.id.as_str().into();
        stages.spawn(format!("pre-{}", s.id), slot, move || {
            let r = guarded(|| stages::preprocess_stage(&rx, &tx, settings, &stats));
            if r.is_err() {
                // the detector is shared: end this stream there so its outputs finalize
                let _ = tx.send(Msg::Eos(stream));
            }
            r.map(|()| Outcome::Drained)
        });
    }

    fn spawn_track(
        &self,
        rx: EdgeRx<Frame>,
        outputs: Vec<(String, EdgeTx<Frame>)>,
        out_stats: Vec<Arc<EdgeStats>>,
        stages: &mut Stages,
    ) {
        let s = &self.plan.sources[self.index];
        let stats = self.source().processed.clone();
        let name = format!("track[{}]", s.id);
        self.metrics.add_stage(name.clone(), stats.clone());
        let mut closers = vec![rx.closer()];
        closers.extend(outputs.iter().map(|(_, tx)| tx.closer()));
        let watch = Watch {
            input: rx.stats().clone(),
            outputs: out_stats,
            closers,
        };
        let slot = Slot::new(name, Role::Inner, stats.clone(), Some(watch));
        let wiring = PostWiring {
            rx,
            outputs,
            tracker: self.plan.tracker.clone(),
            every: self.source().governed.every.clone(),
            analytics: self.plan.source_analytics[self.index].clone(),
            hub: EventTap {
                hub: self.metrics.events.clone(),
                pipeline: self.plan.name.clone(),
                classes: self.plan.model.classes.clone(),
            },
            stats,
            source: self.source().clone(),
        };
        stages.spawn(format!("track-{}", s.id), slot, move || {
            stages::post_stage(wiring).map(|()| Outcome::Drained)
        });
    }

    fn spawn_output(&self, o: OutputEdges, stages: &mut Stages) {
        let OutputEdges { name, plan, tx, rx } = o;
        drop(tx); // the track stage holds the only sender
        let stats = Arc::new(StageStats::default());
        self.metrics.add_stage(name.clone(), stats.clone());
        let watch = Watch {
            input: rx.stats().clone(),
            outputs: Vec::new(),
            closers: vec![rx.closer()],
        };
        let slot = Slot::new(name, Role::Output, stats.clone(), Some(watch));
        let run = OutputRun {
            cx: OutputContext {
                classes: self.plan.model.classes.clone(),
                pipeline: self.plan.name.clone(),
                source: plan.source.clone(),
                deterministic: self.opts.deterministic,
                keep_existing: self.opts.keep_existing,
                node: self.opts.node.clone(),
            },
            metrics: self.metrics.clone(),
            drain_deadline: self.drain_deadline.clone(),
        };
        stages.spawn(format!("out-{}", plan.source), slot, move || {
            stages::output_stage(&rx, plan.settings, &run, &stats).map(Outcome::Wrote)
        });
    }
}

fn spawn_detect(
    plan: &Plan,
    rx: EdgeRx<Prepared>,
    post: HashMap<StreamId, EdgeTx<Frame>>,
    detector: Box<dyn Detector>,
    stats: Arc<StageStats>,
    metrics: &Arc<PipelineMetrics>,
    stages: &mut Stages,
) {
    metrics.add_stage("detect".into(), stats.clone());
    let params: HashMap<StreamId, crate::detect::PostParams> = plan
        .sources
        .iter()
        .zip(&plan.source_detect)
        .map(|(s, d)| (StreamId::from(s.id.as_str()), d.post.clone()))
        .collect();
    let mut closers = vec![rx.closer()];
    closers.extend(post.values().map(EdgeTx::closer));
    let watch = Watch {
        input: rx.stats().clone(),
        outputs: post.values().map(stats_of).collect(),
        closers,
    };
    let slot = Slot::new("detect".into(), Role::Inner, stats.clone(), Some(watch));
    let wiring = DetectWiring {
        rx,
        post,
        params,
        batching: plan.batch,
        stats,
        metrics: metrics.clone(),
    };
    stages.spawn("detect".into(), slot, move || {
        stages::detect_stage(wiring, detector.as_ref()).map(|()| Outcome::Drained)
    });
}

fn fill_counters(report: &mut RunReport, metrics: &PipelineMetrics) {
    report.latency = metrics
        .sources
        .iter()
        .map(|s| {
            let h = &s.latency;
            (
                s.id.clone(),
                h.quantile_ms(0.5),
                h.quantile_ms(0.99),
                h.count(),
            )
        })
        .collect();
    report.stages = lock(&metrics.stages)
        .iter()
        .map(|(n, s)| (n.clone(), s.frames.load(Ordering::Relaxed), s.mean_ms()))
        .collect();
    report.edges = lock(&metrics.edges)
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                s.sent.load(Ordering::Relaxed),
                s.dropped.load(Ordering::Relaxed),
            )
        })
        .collect();
}
