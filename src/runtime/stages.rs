//! The work of each inner stage and output thread. Each returns when its input ends (end of
//! stream, or the edge closed) or on its first error; returning drops its edges, which is how its
//! neighbours learn of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::analytics::{Analytics, AnalyticsSettings};
use crate::detect::batch::Batching;
use crate::detect::{Detector, PostParams};
use crate::event::RegionsView;
use crate::frame::Resize;
use crate::frame::{Frame, Msg, StreamId};
use crate::output::record::EventRecord;
use crate::output::{OutputContext, OutputSettings};
use crate::preprocess::{self, ModelInput};
use crate::runtime::edge::{EdgeRx, EdgeTx};
use crate::runtime::error::StageError;
use crate::runtime::events::EventHub;
use crate::runtime::metrics::{PipelineMetrics, StageStats, lock};

/// A frame and its network input (`None` when `detector.every` skips it).
pub type Prepared = (Frame, Option<ModelInput>);

/// What the preprocess stage of one source does to each frame.
#[derive(Debug, Clone)]
pub struct PreprocessSettings {
    /// The network's input size `(width, height)`.
    pub model: (u32, u32),
    pub resize: Resize,
    /// Only every `every`-th frame goes to the detector (the load governor may raise it).
    pub every: Arc<AtomicU32>,
    /// The detector's GPU: the letterbox runs there and the input stays there.
    pub device: Option<candle_core::Device>,
}

pub fn preprocess_stage(
    rx: &EdgeRx<Frame>,
    tx: &EdgeTx<Prepared>,
    settings: PreprocessSettings,
    stats: &StageStats,
) -> Result<(), StageError> {
    while let Ok(msg) = rx.recv() {
        let out = match msg {
            Msg::Item(frame)
                if !frame
                    .seq
                    .is_multiple_of(u64::from(settings.every.load(Ordering::Relaxed).max(1))) =>
            {
                Msg::Item((frame, None))
            }
            Msg::Item(frame) => {
                crate::fault::check("preprocess", frame.seq).map_err(StageError::Injected)?;
                let t = Instant::now();
                let input = match &settings.device {
                    Some(d) => preprocess::on_device::prepare(
                        &frame.image,
                        settings.model,
                        settings.resize,
                        d,
                    ),
                    None => preprocess::prepare(&frame.image, settings.model, settings.resize),
                }
                .map_err(|source| StageError::Preprocess {
                    seq: frame.seq,
                    source,
                })?;
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

/// The detector stage's wiring.
pub struct DetectWiring {
    pub rx: EdgeRx<Prepared>,
    /// The track stage of each stream.
    pub post: HashMap<StreamId, EdgeTx<Frame>>,
    pub params: HashMap<StreamId, PostParams>,
    pub batching: Batching,
    pub stats: Arc<StageStats>,
    pub metrics: Arc<PipelineMetrics>,
}

pub fn detect_stage(w: DetectWiring, detector: &dyn Detector) -> Result<(), StageError> {
    let mut open_streams = w.post.len();
    // Decode at the lowest threshold any source asks for; each frame is then filtered by its own.
    let threshold = w
        .params
        .values()
        .map(|p| p.confidence)
        .fold(1.0f32, f32::min);
    let mut batch: Vec<Prepared> = Vec::with_capacity(w.batching.max);
    let mut eos: Vec<StreamId> = Vec::new();
    while open_streams > 0 {
        let Ok(first) = w.rx.recv() else { break };
        gather(&w.rx, w.batching, first, &mut batch, &mut eos);
        if !batch.is_empty() {
            detect_batch(&w, detector, threshold, &mut batch)?;
        }
        for s in eos.drain(..) {
            open_streams = open_streams.saturating_sub(1);
            if let Some(tx) = w.post.get(&s) {
                let _ = tx.send(Msg::Eos(s));
            }
        }
    }
    Ok(())
}

/// `detector.infer`, and when the device runs out of memory on a batch, the two halves one after
/// the other (down to single frames): a batch size that fits most of the time never fails the
/// pipeline. A single frame that does not fit is the error, saying so.
fn infer_splitting(
    detector: &dyn Detector,
    inputs: &[&ModelInput],
    threshold: f32,
) -> Result<Vec<Vec<crate::detect::head::Candidate>>, crate::detect::DetectError> {
    match detector.infer(inputs, threshold) {
        Err(e) if inputs.len() > 1 && e.is_out_of_memory() => {
            tracing::warn!(
                batch = inputs.len(),
                "the detector ran out of device memory: running the batch in halves"
            );
            let (a, b) = inputs.split_at(inputs.len() / 2);
            let mut out = infer_splitting(detector, a, threshold)?;
            out.extend(infer_splitting(detector, b, threshold)?);
            Ok(out)
        }
        other => other,
    }
}

/// A batch: `first`, then whatever else is waiting up to `batching.max`, holding on up to
/// `batching.wait` after `first` for more to arrive. An end of stream ends the batch at once, so
/// a stream's last frames are never held back.
fn gather(
    rx: &EdgeRx<Prepared>,
    batching: Batching,
    first: Msg<Prepared>,
    batch: &mut Vec<Prepared>,
    eos: &mut Vec<StreamId>,
) {
    let deadline = Instant::now() + batching.wait;
    let mut next = Some(first);
    while let Some(msg) = next.take() {
        match msg {
            Msg::Item(p) => batch.push(p),
            Msg::Eos(s) => eos.push(s),
        }
        if batch.len() < batching.max && eos.is_empty() {
            next = match rx.try_recv() {
                Some(m) => Some(m),
                None if batching.wait.is_zero() => None,
                None => rx.recv_until(deadline),
            };
        }
    }
}

fn detect_batch(
    w: &DetectWiring,
    detector: &dyn Detector,
    threshold: f32,
    batch: &mut Vec<Prepared>,
) -> Result<(), StageError> {
    for (frame, input) in batch.iter() {
        if input.is_some() {
            crate::fault::check("detect", frame.seq).map_err(StageError::Injected)?;
            record_age(&w.metrics, frame);
        }
    }
    let t = Instant::now();
    let inputs: Vec<&ModelInput> = batch.iter().filter_map(|(_, i)| i.as_ref()).collect();
    let mut cands = infer_splitting(detector, &inputs, threshold)
        .map_err(StageError::Detect)?
        .into_iter();
    let per_frame = t.elapsed() / inputs.len().max(1) as u32;
    if !inputs.is_empty() {
        w.metrics.detector_batches.fetch_add(1, Ordering::Relaxed);
        w.metrics
            .detector_batched_frames
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
    }
    drop(inputs);
    // Frames keep their order; skipped ones pass through undetected.
    for (mut frame, input) in batch.drain(..) {
        if let Some(input) = input {
            let c = cands.next().unwrap_or_default();
            if let Some(p) = w.params.get(&frame.stream) {
                frame.detections = crate::detect::postprocess(c, p, &input);
            }
            frame.detected = true;
            w.stats.record(per_frame);
            w.metrics.detector.record(per_frame);
        }
        tracing::trace!(source = %frame.stream, seq = frame.seq, n = frame.detections.len(), "detected");
        // A stream whose track stage has failed is gone; the others go on.
        if let Some(tx) = w.post.get(&frame.stream) {
            let _ = tx.send(Msg::Item(frame));
        }
    }
    Ok(())
}

/// How long `frame` waited from ingest to the detector (for the load governor): the oldest
/// since the governor's last look, and in frames of the source's nominal rate.
fn record_age(metrics: &PipelineMetrics, frame: &Frame) {
    let Some(m) = metrics.sources.iter().find(|s| *s.id == *frame.stream) else {
        return;
    };
    let age = frame.ingested.elapsed();
    let g = &m.governed;
    g.age_us
        .fetch_max(age.as_micros() as u64, Ordering::Relaxed);
    let (num, den) = frame.fps;
    if num > 0 && den > 0 {
        let frames = age.as_secs_f64() * f64::from(num) / f64::from(den);
        g.age_frames.store(frames.round() as u64, Ordering::Relaxed);
    }
}

/// The track stage of one stream.
pub struct PostWiring {
    pub rx: EdgeRx<Frame>,
    /// `(output name, its edge)`.
    pub outputs: Vec<(String, EdgeTx<Frame>)>,
    pub tracker: Option<crate::track::TrackerKind>,
    /// The detector's interval for this stream now (see [`PreprocessSettings::every`]).
    pub every: Arc<AtomicU32>,
    /// Zones and lines of this stream (empty: no analytics).
    pub analytics: AnalyticsSettings,
    /// Where its events are published for the service.
    pub hub: EventTap,
    pub stats: Arc<StageStats>,
    pub source: Arc<crate::runtime::metrics::SourceMetrics>,
}

/// The events of one pipeline, as records, into an [`EventHub`].
pub struct EventTap {
    pub hub: Arc<EventHub>,
    pub pipeline: String,
    pub classes: Vec<String>,
}

impl EventTap {
    fn publish(&self, frame: &Frame, events: &[crate::event::Event]) {
        for e in events {
            let r = EventRecord::new(e.clone(), &self.pipeline, &frame.stream, &self.classes);
            let at = humantime::format_rfc3339_millis(frame.captured_at).to_string();
            self.hub.publish(&r.with_time(Some(at)));
        }
    }
}

/// Where the track stage's frames go: every output still taking them. With analytics one frame
/// is held back, so the events of the end of the stream (last counts, tracks lost in zones) ride
/// on the last frame.
struct FanOut {
    outputs: Vec<(String, EdgeTx<Frame>)>,
    tap: EventTap,
    held: Option<Frame>,
    analytics: Option<Analytics>,
    /// What the overlay shows, rebuilt when an event or the frame size changes it.
    view: Option<(u32, u32, Arc<RegionsView>)>,
    /// Where the newest frame is left for whoever watches live (the source's metrics).
    source: Arc<crate::runtime::metrics::SourceMetrics>,
}

impl FanOut {
    fn send(&mut self, mut frame: Frame) {
        if let Some(a) = self.analytics.as_mut() {
            let size = (frame.image.width, frame.image.height);
            frame.events = a.update(frame.seq, frame.stream_time_s(), size, &frame.detections);
            self.tap.publish(&frame, &frame.events);
            let stale = self
                .view
                .as_ref()
                .is_none_or(|(w, h, _)| (*w, *h) != size || !frame.events.is_empty());
            if stale {
                self.view = Some((size.0, size.1, Arc::new(a.view(size))));
            }
            frame.regions = self.view.as_ref().map(|(_, _, v)| v.clone());
            match self.held.replace(frame) {
                Some(previous) => frame = previous,
                None => return,
            }
        }
        self.send_now(&frame);
    }

    fn send_now(&mut self, frame: &Frame) {
        // a clone is a few small vectors and an `Arc` of the pixels
        *lock(&self.source.latest) = Some(frame.clone());
        self.outputs.retain(|(name, o)| {
            let alive = o.send(Msg::Item(frame.clone())).is_ok();
            if !alive {
                tracing::debug!(output = %name, "output has stopped: no more frames to it");
            }
            alive
        });
    }

    fn end(&mut self, stream: &StreamId) {
        if let (Some(mut last), Some(mut a)) = (self.held.take(), self.analytics.take()) {
            let end = a.finish(last.seq, last.stream_time_s());
            self.tap.publish(&last, &end);
            last.events.extend(end);
            self.send_now(&last);
        }
        for (_, o) in &self.outputs {
            let _ = o.send(Msg::Eos(stream.clone()));
        }
    }

    /// The stage ends without its stream's end (it failed, or its input closed): the outputs get
    /// nothing more, but the service still learns that the tracks in zones are gone.
    fn abandon(&mut self) {
        if let (Some(last), Some(mut a)) = (self.held.take(), self.analytics.take()) {
            let end = a.finish(last.seq, last.stream_time_s());
            self.tap.publish(&last, &end);
        }
    }
}

/// Tracking, analytics and fan-out of one stream: IDs, trails and events onto the frame, then a
/// copy to every output. An output that has failed is left out from then on; the others go on.
pub fn post_stage(w: PostWiring) -> Result<(), StageError> {
    let mut fan = FanOut {
        outputs: w.outputs,
        tap: w.hub,
        held: None,
        analytics: (!w.analytics.is_empty()).then(|| Analytics::new(w.analytics)),
        view: None,
        source: w.source.clone(),
    };
    let track = Track {
        rx: w.rx,
        tracker: w.tracker,
        every: w.every,
        stats: w.stats,
        source: w.source,
    };
    let result = track.run(&mut fan);
    fan.abandon();
    result
}

/// The tracking half of the track stage.
struct Track {
    rx: EdgeRx<Frame>,
    tracker: Option<crate::track::TrackerKind>,
    every: Arc<AtomicU32>,
    stats: Arc<StageStats>,
    source: Arc<crate::runtime::metrics::SourceMetrics>,
}

impl Track {
    /// Track every frame until the stream's end (then `fan` ends it) or the input closes.
    fn run(self, fan: &mut FanOut) -> Result<(), StageError> {
        let w = self;
        let mut tracker = w.tracker.as_ref().map(crate::track::build);
        let mut trails = crate::track::trails::Trails::default();
        let mut since_detection = 0u64;
        while let Ok(msg) = w.rx.recv() {
            let mut frame = match msg {
                Msg::Item(f) => f,
                Msg::Eos(s) => {
                    fan.end(&s);
                    break;
                }
            };
            crate::fault::check("track", frame.seq).map_err(StageError::Injected)?;
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
                        since_detection as f64 / f64::from(w.every.load(Ordering::Relaxed).max(1)),
                    );
                }
                frame.trails = trails.update(&frame.detections);
            }
            w.stats.record(t.elapsed());
            w.source.latency.record(frame.ingested.elapsed());
            tracing::trace!(source = %frame.stream, seq = frame.seq, "tracked");
            fan.send(frame);
        }
        Ok(())
    }
}

/// What the runtime gives an output thread besides the output's own context.
pub struct OutputRun {
    pub cx: OutputContext,
    pub metrics: Arc<PipelineMetrics>,
    /// When a stop request must be done draining (outputs that wait on a peer stop there).
    pub drain_deadline: Arc<Mutex<Option<Instant>>>,
}

/// One output: open it, write every frame until the stream ends, finalize. On the first error the
/// output finalizes what it has (an MP4 stays playable up to there) and reports the error; its
/// edge closes, so the track stage leaves it out from then on.
pub fn output_stage(
    rx: &EdgeRx<Frame>,
    settings: OutputSettings,
    run: &OutputRun,
    stats: &StageStats,
) -> Result<u64, StageError> {
    let desc = settings.describe();
    let mut output = settings.start(&run.cx).map_err(StageError::OutputStart)?;
    if let Some(s) = output.stats() {
        run.metrics.add_output(desc.clone(), s);
    }
    let mut failed = None;
    let mut shown_file = None;
    while let Ok(Msg::Item(frame)) = rx.recv() {
        if output.file() != shown_file.as_deref() {
            shown_file = output.file().map(std::path::Path::to_path_buf);
            if let Some(f) = &shown_file {
                stats.set_file(f.display().to_string());
            }
        }
        let t = Instant::now();
        // A panic in a writer is its failure like an error: the file is still finalized.
        let wrote = crate::runtime::supervise::guarded(|| {
            crate::fault::check(output.kind(), frame.seq).map_err(StageError::Injected)?;
            output.write(&frame, &run.cx).map_err(StageError::Write)
        });
        if let Err(e) = wrote {
            failed = Some(e);
            break;
        }
        stats.record(t.elapsed());
    }
    let finished = output.finish(*lock(&run.drain_deadline));
    if let Some(e) = failed {
        let error = Box::new(e);
        return Err(match finished {
            Ok(written) => StageError::After { written, error },
            Err(finalizing) => StageError::AndFinalize { finalizing, error },
        });
    }
    let n = finished.map_err(StageError::Finalize)?;
    tracing::debug!(output = %desc, frames = n, "finished");
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectError;
    use crate::detect::head::Candidate;
    use crate::frame::{BoxInModel, FrameFromModel, Xyxy};

    /// Runs out of memory on batches above `fits`; each frame's candidate carries its width.
    struct Tight {
        fits: usize,
        calls: std::sync::Mutex<Vec<usize>>,
    }

    impl Detector for Tight {
        fn infer(
            &self,
            inputs: &[&ModelInput],
            _: f32,
        ) -> Result<Vec<Vec<Candidate>>, DetectError> {
            self.calls.lock().unwrap().push(inputs.len());
            if inputs.len() > self.fits {
                return Err(DetectError::Candle(candle_core::Error::Msg(
                    "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
                )));
            }
            Ok(inputs
                .iter()
                .map(|i| {
                    vec![Candidate {
                        class_id: 0,
                        score: 1.0,
                        box_in_model: BoxInModel(Xyxy {
                            x1: 0.0,
                            y1: 0.0,
                            x2: i.width as f32,
                            y2: 1.0,
                        }),
                        mask: None,
                    }]
                })
                .collect())
        }
    }

    fn input(width: u32) -> ModelInput {
        ModelInput {
            chw: Vec::new(),
            on_device: None,
            width,
            height: 1,
            frame_from_model: FrameFromModel {
                scale_x: 1.0,
                scale_y: 1.0,
                offset_x: 0.0,
                offset_y: 0.0,
                frame_w: 1.0,
                frame_h: 1.0,
            },
        }
    }

    #[test]
    fn a_batch_out_of_device_memory_runs_in_halves_keeping_frame_order() {
        let inputs: Vec<ModelInput> = (1..=5).map(input).collect();
        let refs: Vec<&ModelInput> = inputs.iter().collect();
        let d = Tight {
            fits: 2,
            calls: Default::default(),
        };
        let out = infer_splitting(&d, &refs, 0.1).unwrap();
        let widths: Vec<f32> = out.iter().map(|c| c[0].box_in_model.0.x2).collect();
        assert_eq!(widths, [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(*d.calls.lock().unwrap(), [5, 2, 3, 1, 2]);
        // one frame that does not fit is the error
        let one = Tight {
            fits: 0,
            calls: Default::default(),
        };
        let e = infer_splitting(&one, &refs[..2], 0.1).unwrap_err();
        assert!(e.is_out_of_memory(), "{e}");
    }
}
