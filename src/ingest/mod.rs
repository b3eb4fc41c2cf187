//! Ingest: GStreamer `uridecodebin → videoconvert → appsink (BGR)` per source, producing [`Frame`]s
//! with their sequence number, PTS and capture time. End of stream (or an error, after whatever
//! decoded) goes downstream in-band, so outputs always finalize.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

mod container;
pub mod supervisor;

use crate::flow::{Sink, StageStats, WhenFull};
use crate::frame::{Frame, Image, Msg, StreamId};
use crate::retry::ReconnectPolicy;
use supervisor::StateCell;

/// How often the pull loop wakes to look at the stop flag and the bus.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("source `{source_id}`: cannot build the GStreamer pipeline: {message}")]
    Build { source_id: String, message: String },
    #[error("source `{source_id}`: {message}")]
    Stream { source_id: String, message: String },
}

/// What one source produced, and why it stopped if it failed.
#[derive(Debug, Default)]
pub struct IngestReport {
    pub frames: u64,
    /// Times a live source came back after losing its stream.
    pub reconnects: u64,
    pub error: Option<IngestError>,
}

/// How a file source releases frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// Every frame, as quick as the pipeline goes (regression, batch jobs).
    #[default]
    AsFastAsPossible,
    /// Frames released at their timestamps, like a live camera.
    Realtime,
}

/// A live source (camera, stream, test pattern) that produces no frame for this long has stalled.
pub const DEFAULT_STALL: Duration = Duration::from_secs(10);

/// A file source (not paced) that produces no frame for this long has stalled.
pub const DEFAULT_FILE_STALL: Duration = Duration::from_secs(60);

/// RTSP jitter-buffer latency when the file says nothing.
pub const DEFAULT_RTSP_LATENCY: Duration = Duration::from_millis(200);

/// One source, resolved: plain values, no live state (that is [`SourceLive`]).
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub id: String,
    /// A URI GStreamer can open (`file:` paths made absolute).
    pub uri: String,
    pub pace: Pace,
    pub live: bool,
    pub when_full: WhenFull,
    /// No frame for this long ⇒ the source has stalled.
    pub stall: Option<Duration>,
    /// Stop after this many frames.
    pub max_frames: Option<u64>,
    /// How a live source reconnects.
    pub reconnect: ReconnectPolicy,
    /// RTSP over TCP (else UDP).
    pub rtsp_tcp: bool,
    /// RTSP jitter-buffer latency.
    pub rtsp_latency: Duration,
    /// `seq` of the source's first frame: 0, or where the previous run of a reloaded pipeline
    /// stopped (its outputs are appended to, so a seq must not repeat).
    pub seq_start: u64,
}

impl SourceSettings {
    /// A file decoded as fast as possible, every frame kept: what tests and tools decode with.
    pub fn file(id: &str, uri: &str) -> Self {
        Self {
            id: id.to_string(),
            uri: uri.to_string(),
            pace: Pace::AsFastAsPossible,
            live: false,
            when_full: WhenFull::Block,
            stall: Some(DEFAULT_FILE_STALL),
            max_frames: None,
            reconnect: ReconnectPolicy::default(),
            rtsp_tcp: true,
            rtsp_latency: DEFAULT_RTSP_LATENCY,
            seq_start: 0,
        }
    }
}

/// What a running source shares with whoever watches it (metrics, `/pipelines`); created by the
/// runtime, one per source and run.
#[derive(Debug, Default, Clone)]
pub struct SourceLive {
    /// Where the source is in its life (connecting, running, …).
    pub state: Arc<StateCell>,
    /// Times the source came back after losing its stream.
    pub reconnects: Arc<std::sync::atomic::AtomicU64>,
    /// Set from outside (the console's "stop"): frames are decoded and dropped at ingest, so
    /// nothing is analysed or recorded, while the connection stays up for a quick resume.
    pub paused: Arc<std::sync::atomic::AtomicBool>,
    /// The newest reason the source lost its stream or failed (URI credentials redacted).
    pub last_error: Arc<std::sync::Mutex<Option<String>>>,
}

/// Initialise GStreamer once per process.
pub fn init() -> Result<(), String> {
    gst::init().map_err(|e| e.to_string())
}

/// Strip `user:password@` from a URI before it reaches a log or an error.
pub fn redact_uri(uri: &str) -> String {
    match uri.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((creds, host)) if !creds.contains('/') => format!("{scheme}://***@{host}"),
            _ => uri.to_string(),
        },
        None => uri.to_string(),
    }
}

/// Run one source until it ends, fails, or `stop` is set; always sends `Eos` downstream last.
pub fn run(
    src: &SourceSettings,
    live: &SourceLive,
    out: &dyn Sink<Frame>,
    stop: &AtomicBool,
    stats: &StageStats,
) -> IngestReport {
    let stream: StreamId = src.id.as_str().into();
    let mut report = IngestReport::default();
    let run = Run {
        src,
        live,
        stream: stream.clone(),
        out,
        stop,
        stats,
    };
    let result = if src.live {
        supervise(&run, &mut report)
    } else {
        live.state.set(supervisor::SourceState::Connecting);
        let r = pull_all(&run, &mut report);
        if let Err(e) = &r {
            *crate::flow::lock(&live.last_error) = Some(e.to_string());
        }
        live.state.set(if r.is_ok() {
            supervisor::SourceState::Stopped
        } else {
            supervisor::SourceState::Failed
        });
        r
    };
    // The downstream may already be gone (it failed): nothing more to tell it.
    let _ = out.send(Msg::Eos(stream));
    // A failure is passed on in the report (the caller reports it); only the clean end is logged here.
    match result {
        Ok(()) => {
            tracing::info!(source = %src.id, frames = report.frames, "end of stream")
        }
        Err(e) => report.error = Some(e),
    }
    report
}

/// Decode `src` to its end (or its `max_frames`) on this thread, handing every frame to `each`:
/// for tools and tests (bench, regress reports), not the pipeline.
pub fn decode_each(src: &SourceSettings, each: impl FnMut(Frame) + Send) -> IngestReport {
    let each = std::sync::Mutex::new(each);
    let sink = |msg: Msg<Frame>| {
        if let Msg::Item(frame) = msg {
            (crate::flow::lock(&each))(frame);
        }
        Ok(())
    };
    let stop = AtomicBool::new(false);
    run(
        src,
        &SourceLive::default(),
        &sink,
        &stop,
        &StageStats::default(),
    )
}

/// One source's run: what it reads, where its frames go, and what it reports to.
struct Run<'a> {
    src: &'a SourceSettings,
    live: &'a SourceLive,
    stream: StreamId,
    out: &'a dyn Sink<Frame>,
    stop: &'a AtomicBool,
    stats: &'a StageStats,
}

/// Run a live source through its reconnect policy (see [`supervisor`]).
fn supervise(run: &Run, report: &mut IngestReport) -> Result<(), IngestError> {
    use supervisor::{SourceState, backoff, sleep_unless_stopped};
    let (src, live, stop) = (run.src, run.live, run.stop);
    let salt = src
        .id
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut failures = 0u32;
    loop {
        live.state.set(SourceState::Connecting);
        let before = report.frames;
        let result = pull_all(run, report);
        // `max_frames` reached ends a live source too (it is not a lost stream to reconnect)
        let enough = result.is_ok() && src.max_frames.is_some_and(|m| report.frames >= m);
        if stop.load(Ordering::Relaxed) || enough {
            live.state.set(SourceState::Stopped);
            return result;
        }
        if report.frames > before {
            failures = 0;
            report.reconnects += 1;
            live.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        failures += 1;
        let why = match &result {
            Ok(()) => "the stream ended".to_string(),
            Err(e) => e.to_string(),
        };
        *crate::flow::lock(&live.last_error) = Some(why.clone());
        if src.reconnect.retries.is_some_and(|r| failures > r) {
            live.state.set(SourceState::Failed);
            tracing::error!(source = %src.id, attempts = failures, "giving up: {why}");
            return Err(IngestError::Stream {
                source_id: src.id.clone(),
                message: format!("failed after {} attempts without a frame: {why}", failures),
            });
        }
        let wait = backoff(&src.reconnect, failures, salt);
        live.state.set(SourceState::Backoff);
        tracing::warn!(source = %src.id, attempt = failures, wait_ms = wait.as_millis() as u64, "{why}; reconnecting");
        if !sleep_unless_stopped(wait, stop) {
            live.state.set(SourceState::Stopped);
            return Ok(());
        }
    }
}

/// `test:PATTERN?width=W&height=H&fps=F` → a live videotestsrc (demos and tests).
fn test_source(uri: &str) -> Result<gst::Element, String> {
    let rest = uri.strip_prefix("test:").unwrap_or("");
    let (pattern, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut caps = gst_video::VideoCapsBuilder::new();
    let src = gst::ElementFactory::make("videotestsrc")
        .property("is-live", true)
        .build()
        .map_err(|e| e.to_string())?;
    if !pattern.is_empty() {
        src.set_property_from_str("pattern", pattern);
    }
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("`{kv}` in {uri} is not key=value"))?;
        let n: i32 = v
            .parse()
            .map_err(|_| format!("`{kv}` in {uri}: not a number"))?;
        caps = match k {
            "width" => caps.width(n),
            "height" => caps.height(n),
            "fps" => caps.framerate(gst::Fraction::new(n, 1)),
            _ => return Err(format!("`{k}` in {uri}: expected width, height or fps")),
        };
    }
    let bin = gst::Bin::new();
    let filter = gst::ElementFactory::make("capsfilter")
        .property("caps", caps.build())
        .build()
        .map_err(|e| e.to_string())?;
    bin.add_many([&src, &filter]).map_err(|e| e.to_string())?;
    src.link(&filter).map_err(|e| e.to_string())?;
    let pad = filter
        .static_pad("src")
        .ok_or("capsfilter has no src pad")?;
    let ghost = gst::GhostPad::with_target(&pad).map_err(|e| e.to_string())?;
    bin.add_pad(&ghost).map_err(|e| e.to_string())?;
    Ok(bin.upcast())
}

/// The appsink every source ends in: packed BGR, a short queue; a live test source whose first
/// edge drops the oldest drops here too when behind (counted from the buffers' offsets), one that
/// blocks makes its videotestsrc wait instead.
fn bgr_sink(sync: bool, drop: bool) -> gst_app::AppSink {
    gst_app::AppSink::builder()
        .caps(
            &gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Bgr)
                .build(),
        )
        .sync(sync)
        .max_buffers(4)
        .drop(drop)
        .build()
}

/// What the decoder's dynamic pads turned out to be: a file may have no video at all (audio only),
/// and then nothing would ever arrive at the appsink, and not always an error either.
#[derive(Debug, Default)]
struct Pads {
    video_linked: AtomicBool,
    /// uridecodebin has exposed every pad it will.
    no_more_pads: AtomicBool,
}

impl Pads {
    fn no_video(&self) -> bool {
        self.no_more_pads.load(Ordering::Acquire) && !self.video_linked.load(Ordering::Acquire)
    }
}

/// A built source pipeline: where its frames come out, and (for decoded sources) its pads.
struct Built {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    pads: Option<Arc<Pads>>,
}

fn build(src: &SourceSettings) -> Result<Built, String> {
    let pipeline = gst::Pipeline::with_name(&format!("ingest-{}", src.id));
    if src.uri.starts_with("test:") {
        let test = test_source(&src.uri)?;
        let convert = gst::ElementFactory::make("videoconvert")
            .build()
            .map_err(|e| e.to_string())?;
        let sink = bgr_sink(true, src.when_full == WhenFull::DropOldest);
        pipeline
            .add_many([&test, &convert, sink.upcast_ref()])
            .map_err(|e| e.to_string())?;
        gst::Element::link_many([&test, &convert, sink.upcast_ref()]).map_err(|e| e.to_string())?;
        return Ok(Built {
            pipeline,
            sink,
            pads: None,
        });
    }
    let decode = gst::ElementFactory::make("uridecodebin")
        .property("uri", &src.uri)
        .build()
        .map_err(|e| e.to_string())?;
    // RTSP: transport and jitter-buffer latency on the rtspsrc uridecodebin creates.
    let (tcp, latency_ms) = (src.rtsp_tcp, src.rtsp_latency.as_millis() as u32);
    decode.connect("source-setup", false, move |args| {
        if let Some(el) = args.get(1).and_then(|v| v.get::<gst::Element>().ok())
            && el.has_property("protocols")
        {
            el.set_property_from_str("protocols", if tcp { "tcp" } else { "udp" });
            el.set_property("latency", latency_ms);
        }
        None
    });
    let convert = gst::ElementFactory::make("videoconvert")
        .build()
        .map_err(|e| e.to_string())?;
    let sink = bgr_sink(src.pace == Pace::Realtime, false);
    pipeline
        .add_many([&decode, &convert, sink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    convert.link(&sink).map_err(|e| e.to_string())?;
    let convert_weak = convert.downgrade();
    let id = src.id.clone();
    let pads = Arc::new(Pads::default());
    let seen = pads.clone();
    decode.connect_no_more_pads(move |_| seen.no_more_pads.store(true, Ordering::Release));
    let linked = pads.clone();
    decode.connect_pad_added(move |_, pad| {
        let is_video = pad
            .current_caps()
            .or_else(|| Some(pad.query_caps(None)))
            .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
            .unwrap_or(false);
        let Some(convert) = convert_weak.upgrade() else {
            return;
        };
        let Some(sinkpad) = convert.static_pad("sink") else {
            return;
        };
        if !is_video || sinkpad.is_linked() {
            return;
        }
        match pad.link(&sinkpad) {
            Ok(_) => linked.video_linked.store(true, Ordering::Release),
            Err(e) => {
                tracing::warn!(source = %id, "cannot link decoded video: {e:?}")
            }
        }
    });
    Ok(Built {
        pipeline,
        sink,
        pads: Some(pads),
    })
}

/// Build the source's GStreamer pipeline, start it, and pull frames until it ends, fails, stalls
/// or is stopped.
fn pull_all(run: &Run, report: &mut IngestReport) -> Result<(), IngestError> {
    let src = run.src;
    let safe_uri = redact_uri(&src.uri);
    let stream_err = |message: String| IngestError::Stream {
        source_id: src.id.clone(),
        message,
    };
    let Built {
        pipeline,
        sink,
        pads,
    } = build(src).map_err(|message| IngestError::Build {
        source_id: src.id.clone(),
        message,
    })?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| stream_err("pipeline has no bus".into()))?;
    tracing::info!(source = %src.id, uri = %safe_uri, "starting");
    let _guard = StopOnDrop(pipeline.clone());
    pipeline.set_state(gst::State::Playing).map_err(|_| {
        let why = first_error(&bus).unwrap_or_else(|| "cannot start playing".into());
        stream_err(format!("{safe_uri}: {why}"))
    })?;
    // A file cut short still decodes up to the cut; say so at the end rather than end "cleanly".
    let truncated = gst::glib::filename_from_uri(&src.uri)
        .ok()
        .and_then(|(path, _)| container::truncation(&path));
    if let Some(t) = &truncated {
        tracing::warn!(source = %src.id, "{t}; decoding what is there");
    }
    let mut puller = Puller {
        run,
        safe_uri,
        bus,
        pads,
        truncated,
        last_frame: Instant::now(),
        // only videotestsrc numbers its frames in offsets (a demuxer may put bytes there)
        gaps: OffsetGaps {
            counted: src.uri.starts_with("test:"),
            last: None,
        },
    };
    loop {
        if puller.should_end(report)? {
            return Ok(());
        }
        match sink.try_pull_sample(gst::ClockTime::from_nseconds(POLL.as_nanos() as u64)) {
            Some(sample) if puller.hand_on(&sample, report)? => return Ok(()),
            Some(_) => {}
            None if sink.is_eos() => return puller.at_end(report),
            None => {}
        }
    }
}

/// The pull loop of one started source pipeline: what it needs to tell a clean end from a
/// failure, a stall, or frames lost before us.
struct Puller<'a> {
    run: &'a Run<'a>,
    safe_uri: String,
    bus: gst::Bus,
    pads: Option<Arc<Pads>>,
    /// Why the file is cut short, if it is.
    truncated: Option<String>,
    last_frame: Instant,
    gaps: OffsetGaps,
}

impl Puller<'_> {
    fn error(&self, message: String) -> IngestError {
        IngestError::Stream {
            source_id: self.run.src.id.clone(),
            message,
        }
    }

    /// Before each poll: `Ok(true)` when stopped, `Err` on a bus error, a file with no video, or
    /// a stall.
    fn should_end(&self, report: &IngestReport) -> Result<bool, IngestError> {
        let (src, uri) = (self.run.src, &self.safe_uri);
        if self.run.stop.load(Ordering::Relaxed) {
            tracing::info!(source = %src.id, "stop requested");
            return Ok(true);
        }
        if let Some(m) = first_error(&self.bus) {
            return Err(self.error(format!("{uri}: {m}")));
        }
        if self.pads.as_ref().is_some_and(|p| p.no_video()) && report.frames == 0 {
            return Err(self.error(format!(
                "{uri}: no video stream in it (only other streams, e.g. audio)"
            )));
        }
        if let Some(limit) = src.stall.filter(|l| self.last_frame.elapsed() > *l) {
            return Err(self.error(format!(
                "{uri}: no frame for {} (stall watchdog): the source has stalled",
                humantime::format_duration(limit)
            )));
        }
        Ok(false)
    }

    /// Turn a sample into a frame and send it on; `Ok(true)` when `max_frames` is reached.
    fn hand_on(
        &mut self,
        sample: &gst::Sample,
        report: &mut IngestReport,
    ) -> Result<bool, IngestError> {
        let Run {
            src,
            live,
            stream,
            out,
            stats,
            ..
        } = self.run;
        if live.state.get() != supervisor::SourceState::Running {
            live.state.set(supervisor::SourceState::Running);
        }
        crate::fault::check("ingest", report.frames).map_err(|m| self.error(m))?;
        if live.paused.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        let started = Instant::now();
        let lost = self.gaps.lost_before(sample);
        if lost > 0 {
            // lost before the first edge (the appsink's own queue): still the source's drops
            out.lost_before(lost);
            tracing::debug!(source = %src.id, lost, "frames dropped before ingest");
        }
        let frame =
            to_frame(sample, stream, src.seq_start + report.frames).map_err(|m| self.error(m))?;
        report.frames += 1;
        stats.record(started.elapsed());
        tracing::trace!(source = %src.id, seq = frame.seq, "frame");
        if out.send(Msg::Item(frame)).is_err() {
            return Err(self.error("the pipeline downstream has stopped".into()));
        }
        // time spent waiting for room downstream is not the source stalling
        self.last_frame = Instant::now();
        let done = src.max_frames.is_some_and(|m| report.frames >= m);
        if done {
            tracing::info!(source = %src.id, frames = report.frames, "max_frames reached");
        }
        Ok(done)
    }

    /// End of stream: clean, or an error that came with it, or a file that had no frame or was
    /// cut short.
    fn at_end(&self, report: &IngestReport) -> Result<(), IngestError> {
        let uri = &self.safe_uri;
        if let Some(m) = first_error(&self.bus) {
            return Err(self.error(format!("{uri}: {m}")));
        }
        if report.frames == 0 {
            return Err(self.error(format!("{uri}: ended without a single video frame")));
        }
        if let Some(t) = &self.truncated {
            return Err(self.error(format!(
                "{uri}: {t} ({} frames decoded up to the cut)",
                report.frames
            )));
        }
        Ok(())
    }
}

/// Frames a source numbered (buffer offsets: `videotestsrc` counts its frames there) but that
/// never reached us, e.g. dropped by a leaky appsink.
struct OffsetGaps {
    counted: bool,
    last: Option<u64>,
}

impl OffsetGaps {
    fn lost_before(&mut self, sample: &gst::Sample) -> u64 {
        if !self.counted {
            return 0;
        }
        let offset = sample
            .buffer()
            .map(|b| b.offset())
            .filter(|&o| o != u64::MAX); // GST_BUFFER_OFFSET_NONE
        let lost = match (self.last, offset) {
            (Some(last), Some(now)) if now > last => now - last - 1,
            _ => 0,
        };
        if offset.is_some() {
            self.last = offset;
        }
        lost
    }
}

/// Sets the pipeline to NULL however the loop ends (releases files, sockets, decoders).
struct StopOnDrop(gst::Pipeline);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// The first error waiting on the bus, as one line with GStreamer's debug detail.
fn first_error(bus: &gst::Bus) -> Option<String> {
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Warning]) {
        match msg.view() {
            gst::MessageView::Error(e) => {
                if let Some(d) = e.debug() {
                    tracing::debug!("GStreamer error detail: {d}");
                }
                return Some(e.error().to_string());
            }
            gst::MessageView::Warning(w) => {
                tracing::warn!("GStreamer warning: {}", w.error());
            }
            _ => {}
        }
    }
    None
}

fn to_frame(sample: &gst::Sample, stream: &StreamId, seq: u64) -> Result<Frame, String> {
    let captured_at = SystemTime::now();
    let ingested = Instant::now();
    let caps = sample.caps().ok_or("decoded sample without caps")?;
    let info =
        gst_video::VideoInfo::from_caps(caps).map_err(|e| format!("unusable caps {caps}: {e}"))?;
    let buffer = sample.buffer().ok_or("decoded sample without a buffer")?;
    let vframe = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|e| format!("cannot map a decoded frame: {e}"))?;
    let (w, h) = (info.width(), info.height());
    let stride = vframe.plane_stride()[0] as usize;
    let data = vframe.plane_data(0).map_err(|e| e.to_string())?;
    let row = w as usize * 3;
    let mut bgr = Vec::with_capacity(row * h as usize);
    for y in 0..h as usize {
        let line = data
            .get(y * stride..y * stride + row)
            .ok_or("decoded frame is shorter than its caps say")?;
        bgr.extend_from_slice(line);
    }
    Ok(Frame {
        stream: stream.clone(),
        seq,
        pts_ns: buffer.pts().map(|t| t.nseconds()),
        duration_ns: buffer.duration().map(|t| t.nseconds()),
        fps: (info.fps().numer(), info.fps().denom()),
        captured_at,
        ingested,
        image: Arc::new(Image {
            width: w,
            height: h,
            bgr,
        }),
        detections: Vec::new(),
        trails: Vec::new(),
        events: Vec::new(),
        regions: None,
        detected: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_logs() {
        assert_eq!(
            redact_uri("rtsp://admin:hunter2@10.0.0.5:554/x"),
            "rtsp://***@10.0.0.5:554/x"
        );
        assert_eq!(redact_uri("file:///a/b@c.mp4"), "file:///a/b@c.mp4");
    }
}
