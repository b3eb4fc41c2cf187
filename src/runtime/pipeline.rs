//! Builds and runs a pipeline's threads:
//!
//! ```text
//! ingest(src) ─► preprocess(src) ─┐                 ┌─► post(src) ─► mp4(src), jsonl(src), …
//! ingest(src) ─► preprocess(src) ─┴─► detect+nms ───┴─► post(src) ─► …
//! ```
//! Live sources drop the oldest frame on their first edge when the chain behind is busy; every
//! other edge blocks, so nothing already paid for is thrown away. EOS of each stream follows its
//! frames through every stage; outputs finalize on it, or when their input closes because a stage
//! before them failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::Plan;
use crate::config::plan::OutputKind;
use crate::detect::Detector;
use crate::frame::{Frame, Msg, StreamId};
use crate::output::jsonl::JsonlWriter;
use crate::output::mp4::{Mp4Settings, Mp4Writer};
use crate::output::mqtt::MqttWriter;
use crate::output::record::Record;
use crate::output::rtsp::RtspWriter;
use crate::preprocess::{self, ModelInput};
use crate::runtime::edge::{EdgeRx, EdgeTx, WhenFull, edge, edge_counted};
use crate::runtime::metrics::{
    LatencyHistogram, MqttStats, OutputStats, PipelineMetrics, StageStats, lock,
};

/// How a run behaves beyond its plan.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Leave wall-clock fields out of metadata, so reruns give byte-identical output.
    pub deterministic: bool,
    /// Never overwrite outputs already on disk: JSONL is appended to, MP4 continues in the next
    /// free `NAME-N.mp4` (`vigil serve`, where a pipeline restarts on a config change).
    pub keep_existing: bool,
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
    /// Every error, each naming its source or output.
    pub errors: Vec<String>,
    /// The run ended because a stop (SIGINT/SIGTERM) was requested.
    pub stopped: bool,
}

/// A frame and its network input (`None` when `detector.every` skips it).
type Prepared = (Frame, Option<ModelInput>);
/// One output of one source: description, settings, its edge, its stats.
type OutputWiring = (
    String,
    OutputKind,
    EdgeTx<Frame>,
    EdgeRx<Frame>,
    Arc<StageStats>,
);

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
    let cap = plan.queue_capacity;
    let stage = |name: String| {
        let s = Arc::new(StageStats::default());
        metrics.add_stage(name, s.clone());
        s
    };

    let (det_tx, det_rx) = edge::<Prepared>("preprocess→detect", cap, WhenFull::Block);
    metrics.add_edge("preprocess→detect".into(), det_tx.stats().clone());
    let mut post_txs: HashMap<StreamId, EdgeTx<Frame>> = HashMap::new();

    struct SourceWiring {
        ingest_tx: EdgeTx<Frame>,
        ingest_rx: EdgeRx<Frame>,
        post_rx: EdgeRx<Frame>,
        outputs: Vec<OutputWiring>,
        pre_stats: Arc<StageStats>,
    }
    let mut wiring = Vec::new();
    for (s, sm) in plan.sources.iter().zip(&metrics.sources) {
        let name = format!("ingest→preprocess[{}]", s.id);
        let (ingest_tx, ingest_rx) =
            edge_counted::<Frame>(&name, cap, s.when_full, sm.first_edge.clone());
        metrics.add_edge(name, sm.first_edge.clone());
        let name = format!("detect→post[{}]", s.id);
        let (post_tx, post_rx) = edge::<Frame>(&name, cap, WhenFull::Block);
        metrics.add_edge(name, post_tx.stats().clone());
        post_txs.insert(s.id.as_str().into(), post_tx);
        let mut outputs = Vec::new();
        for o in plan.outputs.iter().filter(|o| o.source == s.id) {
            let desc = o.kind.describe();
            let name = format!("post→{desc}");
            let (tx, rx) = edge::<Frame>(&name, cap, WhenFull::Block);
            metrics.add_edge(name, tx.stats().clone());
            let st = stage(format!("output {desc}"));
            outputs.push((desc, o.kind.clone(), tx, rx, st));
        }
        metrics.add_stage(format!("ingest[{}]", s.id), sm.ingest.clone());
        let pre_stats = stage(format!("preprocess[{}]", s.id));
        metrics.add_stage(format!("post[{}]", s.id), sm.processed.clone());
        wiring.push(SourceWiring {
            ingest_tx,
            ingest_rx,
            post_rx,
            outputs,
            pre_stats,
        });
    }
    let det_stats = stage("detect".into());

    let classes = plan.model.classes.clone();
    let mut report = RunReport::default();
    std::thread::scope(|scope| {
        let mut ingest_handles = Vec::new();
        let mut other_handles = Vec::new();
        let mut output_handles = Vec::new();
        for (((s, w), sd), sm) in plan
            .sources
            .iter()
            .zip(wiring)
            .zip(&plan.source_detect)
            .zip(&metrics.sources)
        {
            let SourceWiring {
                ingest_tx,
                ingest_rx,
                post_rx,
                outputs,
                pre_stats,
            } = w;
            let ingest_stats = &sm.ingest;
            let post_stats = &sm.processed;
            let latency = &sm.latency;
            ingest_handles.push((
                s.id.clone(),
                std::thread::Builder::new()
                    .name(format!("ingest-{}", s.id))
                    .spawn_scoped(scope, move || {
                        crate::ingest::run(s, &ingest_tx, stop, ingest_stats)
                    })
                    .map_err(|e| format!("source `{}`: cannot start its ingest thread: {e}", s.id)),
            ));
            let det_tx = det_tx.clone();
            let (model_w, model_h) = plan.model.input;
            let resize = plan.resize;
            let every = sd.every;
            other_handles.push(
                std::thread::Builder::new()
                    .name(format!("pre-{}", s.id))
                    .spawn_scoped(scope, move || {
                        preprocess_stage(
                            &ingest_rx,
                            &det_tx,
                            (model_w, model_h),
                            resize,
                            every,
                            &pre_stats,
                        )
                    })
                    .map_err(|e| {
                        format!("source `{}`: cannot start its preprocess thread: {e}", s.id)
                    }),
            );
            let out_txs: Vec<EdgeTx<Frame>> = outputs.iter().map(|o| o.2.clone()).collect();
            let tracker = plan.tracker.clone();
            other_handles.push(
                std::thread::Builder::new()
                    .name(format!("post-{}", s.id))
                    .spawn_scoped(scope, move || {
                        post_stage(&post_rx, out_txs, tracker, every, latency, post_stats)
                    })
                    .map_err(|e| format!("source `{}`: cannot start its post thread: {e}", s.id)),
            );
            for (desc, kind, tx, rx, st) in outputs {
                drop(tx);
                let classes = classes.clone();
                let pipeline_name = plan.name.clone();
                let deterministic = opts.deterministic;
                let ctx = OutputContext {
                    classes,
                    pipeline: pipeline_name,
                    source: s.id.clone(),
                    deterministic,
                    keep_existing: opts.keep_existing,
                    metrics: metrics.clone(),
                };
                output_handles.push((
                    desc.clone(),
                    std::thread::Builder::new()
                        .name(format!("out-{}", s.id))
                        .spawn_scoped(scope, move || output_stage(&rx, kind, &ctx, &st))
                        .map_err(|e| format!("{desc}: cannot start its thread: {e}")),
                ));
            }
        }
        drop(det_tx);
        let n_sources = plan.sources.len();
        let post: HashMap<StreamId, crate::detect::PostParams> = plan
            .sources
            .iter()
            .zip(&plan.source_detect)
            .map(|(s, d)| (StreamId::from(s.id.as_str()), d.post.clone()))
            .collect();
        let batch = plan.batch;
        let det_handle = std::thread::Builder::new()
            .name("detect".into())
            .spawn_scoped(scope, move || {
                detect_stage(
                    &det_rx,
                    post_txs,
                    detector,
                    &post,
                    batch,
                    n_sources,
                    &det_stats,
                    &metrics.detector,
                )
            })
            .map_err(|e| format!("cannot start the detect thread: {e}"));

        // A thread that could not start dropped its edge ends with its closure: the stages around
        // it see a closed edge and wind down, so nothing waits for it.
        for (id, h) in ingest_handles {
            let h = match h {
                Ok(h) => h,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            match h.join() {
                Ok(r) => {
                    report.reconnects.push((id.clone(), r.reconnects));
                    report.frames_in.push((id, r.frames));
                    report.errors.extend(r.error.map(|e| e.to_string()));
                }
                Err(_) => report
                    .errors
                    .push(format!("source `{id}`: ingest thread panicked")),
            }
        }
        match det_handle {
            Ok(h) => {
                if let Ok(Err(e)) = h.join() {
                    report.errors.push(e);
                }
            }
            Err(e) => report.errors.push(e),
        }
        for h in other_handles {
            match h {
                Ok(h) => {
                    if let Ok(Err(e)) = h.join() {
                        report.errors.push(e);
                    }
                }
                Err(e) => report.errors.push(e),
            }
        }
        for (desc, h) in output_handles {
            let h = match h {
                Ok(h) => h,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            match h.join() {
                Ok(Ok(n)) => report.outputs.push((desc, n)),
                Ok(Err(e)) => report.errors.push(e),
                Err(_) => report
                    .errors
                    .push(format!("{desc}: output thread panicked")),
            }
        }
    });
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
    report.stopped = stop.load(Ordering::Relaxed);
    report.wall = started.elapsed();
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
    report
}

fn preprocess_stage(
    rx: &EdgeRx<Frame>,
    tx: &EdgeTx<Prepared>,
    model: (u32, u32),
    resize: crate::config::spec::Resize,
    every: u32,
    stats: &StageStats,
) -> Result<(), String> {
    while let Ok(msg) = rx.recv() {
        let out = match msg {
            Msg::Item(frame) if !frame.seq.is_multiple_of(u64::from(every)) => {
                Msg::Item((frame, None))
            }
            Msg::Item(frame) => {
                let t = Instant::now();
                let input = preprocess::prepare(&frame.image, model, resize)
                    .map_err(|e| format!("source `{}`: preprocess: {e}", frame.stream))?;
                stats.record(t.elapsed());
                Msg::Item((frame, Some(input)))
            }
            Msg::Eos(s) => Msg::Eos(s),
        };
        if tx.send(out).is_err() {
            break;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the stage's wiring, named one by one
fn detect_stage(
    rx: &EdgeRx<Prepared>,
    post: HashMap<StreamId, EdgeTx<Frame>>,
    detector: Box<dyn Detector>,
    params: &HashMap<StreamId, crate::detect::PostParams>,
    max_batch: usize,
    n_sources: usize,
    stats: &StageStats,
    per_frame_hist: &LatencyHistogram,
) -> Result<(), String> {
    let mut ended = 0;
    // Decode at the lowest threshold any source asks for; each frame is then filtered by its own.
    let threshold = params.values().map(|p| p.confidence).fold(1.0f32, f32::min);
    let mut batch: Vec<Prepared> = Vec::with_capacity(max_batch);
    let mut eos: Vec<StreamId> = Vec::new();
    while ended < n_sources {
        let Ok(first) = rx.recv() else { break };
        // Take whatever else is already waiting, up to the batch size; never wait for more.
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Item(p) => batch.push(p),
                Msg::Eos(s) => eos.push(s),
            }
            if batch.len() < max_batch && eos.is_empty() {
                next = rx.try_recv();
            }
        }
        if !batch.is_empty() {
            let t = Instant::now();
            let inputs: Vec<&ModelInput> = batch.iter().filter_map(|(_, i)| i.as_ref()).collect();
            let mut cands = detector
                .infer(&inputs, threshold)
                .map_err(|e| format!("detector: {e}"))?
                .into_iter();
            let per_frame = t.elapsed() / inputs.len().max(1) as u32;
            drop(inputs);
            // Frames keep their order; skipped ones pass through undetected.
            for (mut frame, input) in batch.drain(..) {
                if let Some(input) = input {
                    let c = cands.next().unwrap_or_default();
                    if let Some(p) = params.get(&frame.stream) {
                        frame.detections = crate::detect::postprocess(c, p, &input);
                    }
                    frame.detected = true;
                    stats.record(per_frame);
                    per_frame_hist.record(per_frame);
                }
                tracing::trace!(target: "vigil::detect", source = %frame.stream, seq = frame.seq, n = frame.detections.len(), "detected");
                if let Some(tx) = post.get(&frame.stream) {
                    let _ = tx.send(Msg::Item(frame));
                }
            }
        }
        for s in eos.drain(..) {
            ended += 1;
            if let Some(tx) = post.get(&s) {
                let _ = tx.send(Msg::Eos(s));
            }
        }
    }
    Ok(())
}

/// Tracking and fan-out of one stream: IDs and trails onto the frame, then a copy to every output.
fn post_stage(
    rx: &EdgeRx<Frame>,
    outputs: Vec<EdgeTx<Frame>>,
    tracker: Option<crate::track::TrackerKind>,
    every: u32,
    latency: &LatencyHistogram,
    stats: &StageStats,
) -> Result<(), String> {
    let mut tracker = tracker.as_ref().map(crate::track::build);
    let mut trails = crate::track::trails::Trails::default();
    let mut since_detection = 0u64;
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Item(mut frame) => {
                let t = Instant::now();
                if let Some(tr) = tracker.as_deref_mut() {
                    if frame.detected {
                        since_detection = 0;
                        crate::track::assign_ids(tr, &mut frame.detections);
                    } else {
                        // detector.every: the tracker says where its tracks are now
                        since_detection += 1;
                        frame.detections = crate::track::predicted_detections(
                            tr,
                            since_detection as f64 / every as f64,
                        );
                    }
                    frame.trails = trails.update(&frame.detections);
                }
                stats.record(t.elapsed());
                latency.record(frame.ingested.elapsed());
                tracing::trace!(target: "vigil::track", source = %frame.stream, seq = frame.seq, "tracked");
                for o in &outputs {
                    let _ = o.send(Msg::Item(frame.clone()));
                }
            }
            Msg::Eos(s) => {
                for o in &outputs {
                    let _ = o.send(Msg::Eos(s.clone()));
                }
                break;
            }
        }
    }
    Ok(())
}

/// What every output of a source needs besides its own settings.
struct OutputContext {
    classes: Vec<String>,
    pipeline: String,
    source: String,
    deterministic: bool,
    keep_existing: bool,
    metrics: Arc<PipelineMetrics>,
}

enum Writer {
    Mp4(Mp4Writer),
    Jsonl(JsonlWriter),
    Mqtt(MqttWriter),
    Rtsp(RtspWriter),
}

fn output_stage(
    rx: &EdgeRx<Frame>,
    kind: OutputKind,
    ctx: &OutputContext,
    stats: &StageStats,
) -> Result<u64, String> {
    let desc = kind.describe();
    let classes = &ctx.classes;
    let mut writer = match kind {
        OutputKind::Mp4 {
            path,
            overlay,
            preset,
            bitrate_kbps,
        } => Mp4Writer::new(
            Mp4Settings {
                path,
                overlay,
                preset,
                bitrate_kbps,
            },
            classes.clone(),
            ctx.keep_existing,
        )
        .map(Writer::Mp4),
        OutputKind::Jsonl { path } => {
            JsonlWriter::create(&path, ctx.keep_existing).map(Writer::Jsonl)
        }
        OutputKind::Mqtt(settings) => {
            let st = Arc::new(MqttStats::default());
            ctx.metrics
                .add_output(desc.clone(), OutputStats::Mqtt(st.clone()));
            MqttWriter::start(settings, &ctx.pipeline, &ctx.source, st).map(Writer::Mqtt)
        }
        OutputKind::Rtsp(settings) => {
            RtspWriter::start(settings, classes.clone()).map(Writer::Rtsp)
        }
    }
    .map_err(|e| e.to_string());
    if let Err(e) = &writer {
        tracing::error!(target: "vigil::output", "{e}");
    }
    let mut first_error: Option<String> = None;
    // Keep draining after an error, so the stages before never block on us.
    while let Ok(msg) = rx.recv() {
        let Msg::Item(frame) = msg else { break };
        let Ok(w) = writer.as_mut() else { continue };
        if first_error.is_some() {
            continue;
        }
        let t = Instant::now();
        let record = || Record::of(&frame, &ctx.pipeline, classes, !ctx.deterministic);
        let r = match w {
            Writer::Mp4(m) => m.write(&frame),
            Writer::Jsonl(j) => j.write(&record()),
            Writer::Mqtt(q) => q.write(&record()),
            Writer::Rtsp(r) => r.write(&frame),
        };
        stats.record(t.elapsed());
        if let Err(e) = r {
            tracing::error!(target: "vigil::output", "{e}");
            first_error = Some(e.to_string());
        }
    }
    let n = match writer? {
        Writer::Mp4(m) => m.finish(),
        Writer::Jsonl(j) => j.finish(),
        Writer::Mqtt(q) => q.finish(),
        Writer::Rtsp(r) => r.finish(),
    }
    .map_err(|e| e.to_string())?;
    tracing::debug!(target: "vigil::output", output = %desc, frames = n, "finished");
    match first_error {
        Some(e) => Err(e),
        None => Ok(n),
    }
}
