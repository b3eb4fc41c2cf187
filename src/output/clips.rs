//! The `clips` output: an MP4 clip and JPEG snapshots for every event worth a look.
//!
//! The source is encoded all the time into a ring of H.264 access units (`pre_roll` plus one
//! keyframe interval; keyframes every second), so a clip can start before the event that made
//! it without keeping raw frames. An event opens a clip at the last keyframe at or before
//! `event − pre_roll` and keeps it open until `event + post_roll`; events meanwhile extend the same
//! clip. Each clip gets a JSON sidecar (its events, first frame time, frames) and, for the event's
//! track, a snapshot of the whole frame with the box and a crop, taken at the best-scored moment of
//! the clip. After each clip the folder is trimmed to `max_size` and `max_age`, oldest first.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use serde::Deserialize;

use super::{Output, OutputContext, OutputError, Resolve};
use crate::event::{Event, EventKind};
use crate::frame::Frame;
use crate::units::{ByteSize, HumanDuration};

/// `kind: clips`: MP4 clips from before to after each event, with JPEG snapshots.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipsSpec {
    /// Folder of the clips (created); may use `{pipeline}` and `{source}`.
    pub path: String,
    /// Video kept from before the event. Default 5s.
    #[serde(default)]
    pub pre_roll: Option<HumanDuration>,
    /// Video kept after the event (and after each later event of the same clip). Default 5s.
    #[serde(default)]
    pub post_roll: Option<HumanDuration>,
    /// Event kinds that make clips. Default `[enter, cross, dwell]`.
    #[serde(default)]
    pub events: Option<Vec<EventKind>>,
    /// JPEG snapshots (whole frame with the box, and the crop). Default true.
    #[serde(default = "super::default_true")]
    pub snapshot: bool,
    /// Draw detections, zones and lines on the clips. Default true.
    #[serde(default = "super::default_true")]
    pub overlay: bool,
    /// Longest clip: events that keep coming extend a clip up to this, then the next event opens
    /// a new one. Default 60s.
    #[serde(default)]
    pub max_length: Option<HumanDuration>,
    /// Clips older than this are deleted (e.g. `7d`). Default: kept.
    #[serde(default)]
    pub max_age: Option<HumanDuration>,
    /// The folder is kept under this size, oldest clips deleted first (e.g. `2GiB`). Default 1GiB.
    #[serde(default)]
    pub max_size: Option<ByteSize>,
    /// H.264 bitrate, kbit/s. Default 2048.
    #[serde(default)]
    pub bitrate_kbps: Option<u32>,
}

/// A clips output resolved for one source.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipsSettings {
    pub folder: PathBuf,
    pub pre_roll: Duration,
    pub post_roll: Duration,
    pub max_length: Duration,
    pub events: Vec<EventKind>,
    pub snapshot: bool,
    pub overlay: bool,
    pub max_age: Option<Duration>,
    pub max_size: u64,
    pub bitrate_kbps: u32,
}

const DEFAULT_ROLL: Duration = Duration::from_secs(5);
/// Frame duration when a frame has none (25 fps).
const DEFAULT_FRAME_NS: u64 = 40_000_000;
const DEFAULT_MAX_SIZE: u64 = 1 << 30;
const DEFAULT_MAX_LENGTH: Duration = Duration::from_secs(60);
/// Longest accepted pre-roll: the ring holds this much encoded video per source.
const MAX_PRE_ROLL: Duration = Duration::from_secs(60);

/// One encoded picture.
#[derive(Debug, Clone)]
struct Au {
    pts_ns: u64,
    /// How long it shows (the muxer drops a last sample without one).
    duration_ns: u64,
    key: bool,
    buffer: gst::Buffer,
}

/// The continuous encoder: BGR frames in, access units out.
struct RingEncoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    size: (u32, u32),
    /// The access units' caps (with `codec_data`), once the first one came.
    caps: Option<gst::Caps>,
    /// Times of the frames pushed and not yet out, in order (x264 moves its timestamps by an
    /// offset of its own and, tuned for zero latency, never reorders: the n-th access unit out
    /// is the n-th frame in).
    pending: VecDeque<(u64, u64)>,
}

/// A clip being written.
struct Clip {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    stem: PathBuf,
    first_pts: u64,
    until_ns: u64,
    frames: u64,
    events: Vec<Event>,
    /// The track of the first event, and its best moment so far: (score, frame, box).
    track: Option<u64>,
    best: Option<(f32, Vec<u8>, Vec<u8>)>,
}

/// The `clips` writer of one source.
pub struct ClipsWriter {
    settings: ClipsSettings,
    encoder: Option<RingEncoder>,
    ring: VecDeque<Au>,
    clip: Option<Clip>,
    clips: u64,
    deleted: u64,
    next_pts: u64,
    /// `{pipeline}-{source}-`: the start of this output's file names (retention touches no other).
    own: String,
}

impl Output for ClipsWriter {
    type Spec = ClipsSpec;
    type Settings = ClipsSettings;

    fn resolve(spec: &ClipsSpec, cx: &mut Resolve) -> Option<ClipsSettings> {
        let pre_roll = spec.pre_roll.map_or(DEFAULT_ROLL, |d| d.0);
        if spec
            .max_length
            .is_some_and(|m| m.0 < Duration::from_secs(1))
        {
            cx.problem("clips max_length must be at least 1s".into());
        }
        if pre_roll > MAX_PRE_ROLL {
            cx.problem(format!("clips pre_roll must be at most {MAX_PRE_ROLL:?}"));
        }
        let folder = cx.path(&spec.path, "clips folder", true)?;
        Some(ClipsSettings {
            folder,
            pre_roll,
            post_roll: spec.post_roll.map_or(DEFAULT_ROLL, |d| d.0),
            max_length: spec.max_length.map_or(DEFAULT_MAX_LENGTH, |d| d.0),
            events: spec
                .events
                .clone()
                .unwrap_or_else(|| vec![EventKind::Enter, EventKind::Cross, EventKind::Dwell]),
            snapshot: spec.snapshot,
            overlay: spec.overlay,
            max_age: spec.max_age.map(|d| d.0),
            max_size: spec.max_size.map_or(DEFAULT_MAX_SIZE, |b| b.0),
            bitrate_kbps: spec
                .bitrate_kbps
                .unwrap_or(super::mp4::DEFAULT_BITRATE_KBPS),
        })
    }

    fn describe(settings: &ClipsSettings) -> String {
        format!("clips {}", settings.folder.display())
    }

    fn start(settings: ClipsSettings, cx: &OutputContext) -> Result<Self, OutputError> {
        std::fs::create_dir_all(&settings.folder).map_err(|e| OutputError::Io {
            path: settings.folder.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            settings,
            encoder: None,
            ring: VecDeque::new(),
            clip: None,
            clips: 0,
            deleted: 0,
            next_pts: 0,
            own: format!("{}-{}-", cx.pipeline, cx.source),
        })
    }

    fn write(&mut self, frame: &Frame, cx: &OutputContext) -> Result<(), OutputError> {
        let t_ns = self.frame_pts(frame);
        self.reset_on_resize(frame)?;
        let kinds = self.settings.events.clone();
        for e in frame.events.iter().filter(|e| kinds.contains(&e.kind)) {
            self.trigger(e, (t_ns, frame.captured_at))?;
        }
        self.snapshot(frame, cx);
        self.encode(frame, t_ns, cx)?;
        let aus = self.pull(false);
        self.take(aus)
    }

    /// Returns the clips written.
    fn finish(mut self, _deadline: Option<Instant>) -> Result<u64, OutputError> {
        if let Some(enc) = &self.encoder {
            let _ = enc.src.end_of_stream();
        }
        let aus = self.pull(true);
        self.take(aus)?;
        if let Some(clip) = self.clip.take() {
            self.close(clip)?;
        }
        if let Some(enc) = self.encoder.take() {
            let _ = enc.pipeline.set_state(gst::State::Null);
        }
        tracing::info!(folder = %self.settings.folder.display(), clips = self.clips, deleted = self.deleted, "clips output finished");
        Ok(self.clips)
    }

    fn file(&self) -> Option<&Path> {
        self.clip.as_ref().map(|c| c.stem.as_path())
    }
}

impl ClipsWriter {
    fn err(&self, message: impl Into<String>) -> OutputError {
        OutputError::Encode {
            path: self.settings.folder.display().to_string(),
            message: message.into(),
        }
    }

    /// The frame's time on the clip timeline: stream time, never going backwards.
    fn frame_pts(&mut self, frame: &Frame) -> u64 {
        let t = (frame.stream_time_s() * 1e9) as u64;
        let pts = t.max(self.next_pts);
        self.next_pts = pts + frame.duration_ns.unwrap_or(1);
        pts
    }

    /// An event of a kind that makes clips: extend the open clip, or open one from the ring.
    fn trigger(
        &mut self,
        e: &Event,
        (t_ns, captured): (u64, SystemTime),
    ) -> Result<(), OutputError> {
        let until = t_ns + self.settings.post_roll.as_nanos() as u64;
        let max_length = self.settings.max_length.as_nanos() as u64;
        if let Some(clip) = self.clip.as_mut() {
            if t_ns <= clip.until_ns {
                // a busy scene extends the clip, up to its longest length
                let start = clip.first_pts.min(t_ns);
                clip.until_ns = clip
                    .until_ns
                    .max(until.min(start.saturating_add(max_length)));
                clip.events.push(e.clone());
                return Ok(());
            }
            // past the (capped) end: that clip is done, this event opens the next
            if let Some(done) = self.clip.take() {
                self.close(done)?;
            }
        }
        let Some(caps) = self.encoder.as_ref().and_then(|enc| enc.caps.clone()) else {
            // nothing encoded yet: the clip starts with the first access unit
            self.clip = Some(self.open_clip(e, (t_ns, captured), until, None)?);
            return Ok(());
        };
        let mut clip = self.open_clip(e, (t_ns, captured), until, Some(&caps))?;
        let from = t_ns.saturating_sub(self.settings.pre_roll.as_nanos() as u64);
        let start = self
            .ring
            .iter()
            .rposition(|au| au.key && au.pts_ns <= from)
            .or_else(|| self.ring.iter().position(|au| au.key));
        if let Some(start) = start {
            for au in self.ring.range(start..).cloned().collect::<Vec<_>>() {
                push_au(&mut clip, &au).map_err(|m| self.err(m))?;
            }
        }
        if clip.first_pts != u64::MAX {
            // the pre-roll counts in the clip's length too
            clip.until_ns = clip.until_ns.min(clip.first_pts.saturating_add(max_length));
        }
        self.clip = Some(clip);
        Ok(())
    }

    fn open_clip(
        &self,
        e: &Event,
        (t_ns, captured): (u64, SystemTime),
        until_ns: u64,
        caps: Option<&gst::Caps>,
    ) -> Result<Clip, OutputError> {
        // the capture time keeps names unique across restarts (seq and track ids start again)
        let when: String = humantime::format_rfc3339_millis(captured)
            .to_string()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let region = if e.region.is_empty() {
            "track"
        } else {
            &e.region
        };
        let name = format!(
            "{}{when}-{:010}-{}-{}-{}",
            self.own,
            e.seq,
            e.kind.as_str(),
            sanitize(region),
            e.track_id.unwrap_or(0)
        );
        let stem = self.settings.folder.join(name);
        let (pipeline, src) =
            clip_pipeline(&stem.with_extension("mp4"), caps).map_err(|m| self.err(m))?;
        tracing::debug!(clip = %stem.display(), t_ns, "clip opened");
        Ok(Clip {
            pipeline,
            src,
            stem,
            first_pts: u64::MAX,
            until_ns,
            frames: 0,
            events: vec![e.clone()],
            track: e.track_id,
            best: None,
        })
    }

    /// Keep the best-scored moment of the clip's track: the frame with its box, and the crop.
    fn snapshot(&mut self, frame: &Frame, cx: &OutputContext) {
        if !self.settings.snapshot {
            return;
        }
        let Some(clip) = self.clip.as_mut() else {
            return;
        };
        let Some(d) = frame
            .detections
            .iter()
            .find(|d| d.track_id.is_some() && d.track_id == clip.track)
        else {
            return;
        };
        if clip.best.as_ref().is_some_and(|b| b.0 >= d.score) {
            return;
        }
        match super::snapshot::jpegs(frame, d, &cx.classes) {
            Ok((full, crop)) => clip.best = Some((d.score, full, crop)),
            Err(e) => tracing::warn!(clip = %clip.stem.display(), "snapshot: {e}"),
        }
    }

    /// A frame of a new size: the open clip ends and the ring starts again (the old pictures cannot
    /// continue a clip at the new size). Done before the frame's events open a clip.
    fn reset_on_resize(&mut self, frame: &Frame) -> Result<(), OutputError> {
        let size = super::overlay::even_size(frame.image.width, frame.image.height);
        if self.encoder.as_ref().is_some_and(|e| e.size != size) {
            // a new size: the ring's pictures cannot continue a clip of the old one
            if let Some(clip) = self.clip.take() {
                self.close(clip)?;
            }
            if let Some(old) = self.encoder.take() {
                let _ = old.pipeline.set_state(gst::State::Null);
            }
            self.ring.clear();
        }
        Ok(())
    }

    fn encode(&mut self, frame: &Frame, pts: u64, cx: &OutputContext) -> Result<(), OutputError> {
        let size = super::overlay::even_size(frame.image.width, frame.image.height);
        if self.encoder.is_none() {
            let enc = ring_encoder(size, frame.fps, self.settings.bitrate_kbps)
                .map_err(|m| self.err(m))?;
            self.encoder = Some(enc);
        }
        let pixels = super::overlay::encoder_picture(frame, &cx.classes, self.settings.overlay)
            .map_err(|e| self.err(e.to_string()))?
            .bgr;
        let mut buffer = gst::Buffer::from_mut_slice(pixels);
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(pts));
        }
        let Some(enc) = self.encoder.as_mut() else {
            return Ok(());
        };
        enc.pending
            .push_back((pts, frame.duration_ns.unwrap_or(DEFAULT_FRAME_NS)));
        let pushed = enc.src.push_buffer(buffer);
        pushed.map_err(|f| self.err(format!("encoder: {f:?}")))?;
        Ok(())
    }

    /// Access units the encoder has ready (all of them, to the end, when `drain`).
    fn pull(&mut self, drain: bool) -> Vec<Au> {
        let Some(enc) = self.encoder.as_mut() else {
            return Vec::new();
        };
        let wait = if drain { 2_000 } else { 0 };
        let mut out = Vec::new();
        while let Some(sample) = enc
            .sink
            .try_pull_sample(gst::ClockTime::from_mseconds(wait))
        {
            if enc.caps.is_none() {
                enc.caps = sample.caps_owned();
            }
            let Some(buffer) = sample.buffer_owned() else {
                continue;
            };
            let Some((pts_ns, duration_ns)) = enc.pending.pop_front() else {
                continue;
            };
            out.push(Au {
                pts_ns,
                duration_ns,
                key: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                buffer,
            });
            if drain && enc.sink.is_eos() {
                break;
            }
        }
        out
    }

    /// New access units into the ring and the open clip; a clip past its end is closed.
    fn take(&mut self, aus: Vec<Au>) -> Result<(), OutputError> {
        for au in aus {
            if let Some(clip) = self.clip.as_mut() {
                if clip.first_pts == u64::MAX && !au.key {
                    // a clip opened before anything was encoded starts at a keyframe
                } else if au.pts_ns > clip.until_ns {
                    if let Some(clip) = self.clip.take() {
                        self.close(clip)?;
                    }
                } else {
                    self.ensure_caps()?;
                    if let Some(clip) = self.clip.as_mut() {
                        push_au(clip, &au).map_err(|m| OutputError::Encode {
                            path: clip.stem.display().to_string(),
                            message: m,
                        })?;
                    }
                }
            }
            self.ring.push_back(au);
        }
        self.trim_ring();
        Ok(())
    }

    /// A clip opened before the encoder knew its caps gets them now.
    fn ensure_caps(&mut self) -> Result<(), OutputError> {
        let caps = self.encoder.as_ref().and_then(|e| e.caps.clone());
        if let (Some(clip), Some(caps)) = (self.clip.as_mut(), caps)
            && clip.src.caps().is_none()
        {
            clip.src.set_caps(Some(&caps));
        }
        Ok(())
    }

    /// Keep the ring from the last keyframe at or before `newest − pre_roll`.
    fn trim_ring(&mut self) {
        let Some(newest) = self.ring.back().map(|a| a.pts_ns) else {
            return;
        };
        let keep_from = newest.saturating_sub(self.settings.pre_roll.as_nanos() as u64);
        let cut = self
            .ring
            .iter()
            .rposition(|au| au.key && au.pts_ns <= keep_from)
            .unwrap_or(0);
        self.ring.drain(..cut);
    }

    /// Finalize a clip: its MP4, sidecar and snapshots; then trim the folder.
    fn close(&mut self, clip: Clip) -> Result<(), OutputError> {
        let mp4 = clip.stem.with_extension("mp4");
        let ended = finish_clip(&clip);
        let _ = clip.pipeline.set_state(gst::State::Null);
        if clip.frames == 0 {
            let _ = std::fs::remove_file(&mp4);
            return Ok(());
        }
        ended.map_err(|m| OutputError::Encode {
            path: mp4.display().to_string(),
            message: m,
        })?;
        let io = |e: std::io::Error| OutputError::Io {
            path: clip.stem.display().to_string(),
            message: e.to_string(),
        };
        if let Some((_, full, crop)) = &clip.best {
            std::fs::write(clip.stem.with_extension("jpg"), full).map_err(io)?;
            std::fs::write(with_suffix(&clip.stem, "-crop.jpg"), crop).map_err(io)?;
        }
        let sidecar = serde_json::json!({
            "clip": mp4.file_name().map(|n| n.to_string_lossy().to_string()),
            "start_s": clip.first_pts as f64 / 1e9,
            "frames": clip.frames,
            "events": clip.events,
        });
        std::fs::write(clip.stem.with_extension("json"), sidecar.to_string()).map_err(io)?;
        self.clips += 1;
        tracing::info!(clip = %mp4.display(), frames = clip.frames, events = clip.events.len(), "clip written");
        let keep = clip
            .stem
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let s = &self.settings;
        let now = SystemTime::now();
        self.deleted +=
            super::retention::trim(&s.folder, &self.own, &keep, s.max_size, s.max_age, now);
        Ok(())
    }
}

fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Letters, digits, `-` and `_` (a zone name in a file name).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn push_au(clip: &mut Clip, au: &Au) -> Result<(), String> {
    if clip.first_pts == u64::MAX {
        clip.first_pts = au.pts_ns;
    }
    let mut buffer = au.buffer.copy();
    if let Some(b) = buffer.get_mut() {
        let pts = gst::ClockTime::from_nseconds(au.pts_ns.saturating_sub(clip.first_pts));
        b.set_pts(pts);
        b.set_dts(pts);
        b.set_duration(gst::ClockTime::from_nseconds(au.duration_ns));
    }
    clip.src
        .push_buffer(buffer)
        .map_err(|f| format!("clip: {f:?}"))?;
    clip.frames += 1;
    Ok(())
}

fn make(name: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(name)
        .build()
        .map_err(|e| format!("{name}: {e}"))
}

/// `appsrc (BGR) → videoconvert → I420 → x264enc (keyframe every second) → h264parse → appsink (avc)`.
fn ring_encoder(
    size: (u32, u32),
    fps: (i32, i32),
    bitrate_kbps: u32,
) -> Result<RingEncoder, String> {
    let pipeline = gst::Pipeline::with_name("clips-ring");
    let caps = gst_video::VideoInfo::builder(gst_video::VideoFormat::Bgr, size.0, size.1)
        .fps(gst::Fraction::new(0, 1))
        .build()
        .map_err(|e| e.to_string())?
        .to_caps()
        .map_err(|e| e.to_string())?;
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .block(true)
        .max_bytes(u64::from(size.0) * u64::from(size.1) * 3 * 4)
        .build();
    let i420 = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::I420)
                .build(),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let x264 = make("x264enc")?;
    x264.set_property_from_str("speed-preset", "ultrafast");
    x264.set_property_from_str("tune", "zerolatency");
    x264.set_property("bitrate", bitrate_kbps);
    let per_second = if fps.0 > 0 && fps.1 > 0 {
        (fps.0 / fps.1).max(1)
    } else {
        25
    };
    x264.set_property("key-int-max", u32::try_from(per_second).unwrap_or(25));
    let parse = make("h264parse")?;
    let avc = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-h264")
                .field("stream-format", "avc")
                .field("alignment", "au")
                .build(),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let sink = gst_app::AppSink::builder().sync(false).build();
    let convert = make("videoconvert")?;
    let elements = [
        src.upcast_ref(),
        &convert,
        &i420,
        &x264,
        &parse,
        &avc,
        sink.upcast_ref(),
    ];
    pipeline.add_many(elements).map_err(|e| e.to_string())?;
    gst::Element::link_many(elements).map_err(|e| e.to_string())?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| "cannot start the clips encoder".to_string())?;
    Ok(RingEncoder {
        pipeline,
        src,
        sink,
        size,
        caps: None,
        pending: VecDeque::new(),
    })
}

/// `appsrc (H.264 avc) → mp4mux → filesink`.
fn clip_pipeline(
    path: &Path,
    caps: Option<&gst::Caps>,
) -> Result<(gst::Pipeline, gst_app::AppSrc), String> {
    let pipeline = gst::Pipeline::with_name("clip");
    let mut src = gst_app::AppSrc::builder()
        .format(gst::Format::Time)
        .block(true);
    if let Some(c) = caps {
        src = src.caps(c);
    }
    let src = src.build();
    let mux = make("mp4mux")?;
    let sink = gst::ElementFactory::make("filesink")
        .property("location", path.to_string_lossy().as_ref())
        .build()
        .map_err(|e| e.to_string())?;
    pipeline
        .add_many([src.upcast_ref(), &mux, &sink])
        .map_err(|e| e.to_string())?;
    // the muxer's video pad by name: with no caps yet, linking could pick an audio pad
    let video = mux
        .request_pad_simple("video_%u")
        .ok_or("mp4mux has no video pad")?;
    let out = src.static_pad("src").ok_or("appsrc has no pad")?;
    out.link(&video).map_err(|e| format!("{e:?}"))?;
    mux.link(&sink).map_err(|e| e.to_string())?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| format!("cannot start writing {}", path.display()))?;
    Ok((pipeline, src))
}

/// How long finishing a clip's MP4 may take.
const CLIP_FINALIZE: Duration = Duration::from_secs(30);

fn finish_clip(clip: &Clip) -> Result<(), String> {
    super::end_and_wait(&clip.pipeline, &clip.src, CLIP_FINALIZE)
}
