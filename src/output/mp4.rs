//! H.264 in MP4: `appsrc (BGR) → videoconvert → I420 → x264enc → h264parse → mp4mux → filesink`.
//! The encoder starts at the first frame (its size is known then) and is finalized with EOS, so the
//! file gets its index (`moov`) and plays.
//!
//! I420 is forced before x264enc: from BGR, videoconvert would otherwise negotiate Y444 and x264
//! writes "High 4:4:4" H.264, which many players refuse.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use serde::Deserialize;

use super::{Output, OutputContext, OutputError, Resolve};
use crate::frame::Frame;

/// H.264 bitrate of video outputs (MP4, RTSP) when the file says nothing, kbit/s.
pub const DEFAULT_BITRATE_KBPS: u32 = 2048;

/// x264's speed presets, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum X264Preset {
    /// On a CPU box the detector needs the cores more than the encoder needs the bits.
    #[default]
    Ultrafast,
    /// A little better compression for a little more CPU.
    Superfast,
    /// Fast, already well compressed.
    Veryfast,
    /// Between `veryfast` and `fast`.
    Faster,
    /// Good compression; a core's worth of CPU at 1080p.
    Fast,
    /// x264's own default.
    Medium,
    /// For archives made offline.
    Slow,
    /// Slower still, smaller files.
    Slower,
    /// Near the best compression x264 has.
    Veryslow,
    /// For tests of x264 itself: no real gain over `veryslow`.
    Placebo,
}

impl X264Preset {
    /// The name x264enc's `speed-preset` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ultrafast => "ultrafast",
            Self::Superfast => "superfast",
            Self::Veryfast => "veryfast",
            Self::Faster => "faster",
            Self::Fast => "fast",
            Self::Medium => "medium",
            Self::Slow => "slow",
            Self::Slower => "slower",
            Self::Veryslow => "veryslow",
            Self::Placebo => "placebo",
        }
    }
}

/// `kind: mp4`: H.264 in MP4, optionally with boxes, classes and scores drawn on the frames.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mp4Spec {
    /// File to write (its folder is created); may use `{pipeline}` and `{source}`.
    pub path: String,
    /// Draw the detections on the video. Default true.
    #[serde(default = "super::default_true")]
    pub overlay: bool,
    /// x264 speed preset (`ultrafast` … `veryslow`, `placebo`). Default `ultrafast`: on a CPU box
    /// the detector needs the cores more than the encoder needs the bits.
    #[serde(default)]
    pub preset: X264Preset,
    /// Target bitrate in kbit/s. Default 2048.
    #[serde(default)]
    pub bitrate_kbps: Option<u32>,
}

impl Output for Mp4Writer {
    type Spec = Mp4Spec;
    type Settings = Mp4Settings;

    fn resolve(spec: &Mp4Spec, cx: &mut Resolve) -> Option<Mp4Settings> {
        let path = cx.path(&spec.path, "output path", false)?;
        Some(Mp4Settings {
            path,
            overlay: spec.overlay,
            preset: spec.preset,
            bitrate_kbps: spec.bitrate_kbps.unwrap_or(DEFAULT_BITRATE_KBPS),
        })
    }

    fn describe(settings: &Mp4Settings) -> String {
        format!("mp4 {}", settings.path.display())
    }

    fn start(settings: Mp4Settings, cx: &OutputContext) -> Result<Self, OutputError> {
        Self::new(settings, cx.classes.clone(), cx.keep_existing)
    }

    fn write(&mut self, frame: &Frame, _cx: &OutputContext) -> Result<(), OutputError> {
        self.encode(frame)
    }

    fn finish(self, _deadline: Option<std::time::Instant>) -> Result<u64, OutputError> {
        self.finalize()
    }

    fn file(&self) -> Option<&Path> {
        Some(&self.current)
    }
}

/// How long finalizing may take before we give up on the muxer.
const FINALIZE_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of one MP4 output.
#[derive(Debug, Clone)]
pub struct Mp4Settings {
    pub path: PathBuf,
    pub overlay: bool,
    pub preset: X264Preset,
    pub bitrate_kbps: u32,
}

struct Encoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    width: u32,
    height: u32,
    first_pts: Option<u64>,
    next_pts: u64,
}

pub struct Mp4Writer {
    settings: Mp4Settings,
    /// The file being written: the configured path, then `-1`, `-2`, … after size changes.
    current: PathBuf,
    part: u32,
    classes: Vec<String>,
    enc: Option<Encoder>,
    pub frames: u64,
}

impl Mp4Writer {
    /// `keep_existing`: never overwrite a file already there (a restarted service pipeline
    /// continues in the next free `NAME-N.mp4`).
    pub fn new(
        settings: Mp4Settings,
        classes: Vec<String>,
        keep_existing: bool,
    ) -> Result<Self, OutputError> {
        let mut part = 0;
        if keep_existing {
            while part_path(&settings.path, part).exists() {
                part += 1;
            }
        }
        let current = part_path(&settings.path, part);
        // Fail early (before any frame) when the file cannot be created.
        drop(super::create_file(&current)?);
        Ok(Self {
            current,
            part,
            settings,
            classes,
            enc: None,
            frames: 0,
        })
    }

    fn err(&self, message: impl Into<String>) -> OutputError {
        OutputError::Encode {
            path: self.current.display().to_string(),
            message: message.into(),
        }
    }

    fn start(&self, width: u32, height: u32, fps: (i32, i32)) -> Result<Encoder, OutputError> {
        let e = |m: String| self.err(m);
        let pipeline = gst::Pipeline::with_name("mp4-out");
        let caps = gst_video::VideoInfo::builder(gst_video::VideoFormat::Bgr, width, height)
            .fps(gst::Fraction::new(fps.0, fps.1.max(1)))
            .build()
            .map_err(|x| e(x.to_string()))?
            .to_caps()
            .map_err(|x| e(x.to_string()))?;
        let src = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .block(true)
            .max_bytes(u64::from(width) * u64::from(height) * 3 * 4)
            .build();
        let make = |name: &str| {
            gst::ElementFactory::make(name)
                .build()
                .map_err(|x| e(format!("{name}: {x}")))
        };
        let convert = make("videoconvert")?;
        let i420 = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst_video::VideoCapsBuilder::new()
                    .format(gst_video::VideoFormat::I420)
                    .build(),
            )
            .build()
            .map_err(|x| e(x.to_string()))?;
        let x264 = make("x264enc")?;
        x264.set_property_from_str("speed-preset", self.settings.preset.as_str());
        x264.set_property("bitrate", self.settings.bitrate_kbps);
        let parse = make("h264parse")?;
        let mux = make("mp4mux")?;
        let sink = gst::ElementFactory::make("filesink")
            .property("location", self.current.to_string_lossy().as_ref())
            .build()
            .map_err(|x| e(x.to_string()))?;
        let elements = [
            src.upcast_ref(),
            &convert,
            &i420,
            &x264,
            &parse,
            &mux,
            &sink,
        ];
        pipeline.add_many(elements).map_err(|x| e(x.to_string()))?;
        gst::Element::link_many(elements).map_err(|x| e(x.to_string()))?;
        pipeline.set_state(gst::State::Playing).map_err(|_| {
            e(bus_error(&pipeline).unwrap_or_else(|| "cannot start the encoder".into()))
        })?;
        tracing::info!(path = %self.current.display(), width, height, "mp4 encoder started");
        Ok(Encoder {
            pipeline,
            src,
            width,
            height,
            first_pts: None,
            next_pts: 0,
        })
    }

    /// Encode one frame (drawing its detections first if overlay is on).
    /// Encode one frame (the encoder starts, or restarts in a new part, at a size change).
    pub fn encode(&mut self, frame: &Frame) -> Result<(), OutputError> {
        // x264 needs even sizes: odd frames are padded by one repeated column/row (overlay).
        let (w, h) = super::overlay::even_size(frame.image.width, frame.image.height);
        // A camera that comes back at another size continues in a new file (`name-1.mp4`, …):
        // the finished one stays playable at its own size.
        if let Some(enc) = self.enc.take_if(|e| (e.width, e.height) != (w, h)) {
            let done = self.current.clone();
            finalize(&enc).map_err(|m| self.err(m))?;
            let _ = enc.pipeline.set_state(gst::State::Null);
            self.part += 1;
            self.current = part_path(&self.settings.path, self.part);
            tracing::warn!(finished = %done.display(), next = %self.current.display(), width = w, height = h, "frame size changed: new MP4");
        }
        if self.enc.is_none() {
            self.enc = Some(self.start(w, h, frame.fps)?);
        }
        let Some(enc) = self.enc.as_mut() else {
            return Ok(());
        };
        let pixels = super::overlay::encoder_picture(frame, &self.classes, self.settings.overlay)
            .map_err(|x| OutputError::Encode {
                path: self.current.display().to_string(),
                message: x.to_string(),
            })?
            .bgr;
        // Timestamps start at zero; frames without a PTS follow the previous one.
        let pts = match (frame.pts_ns, enc.first_pts) {
            (Some(p), None) => {
                enc.first_pts = Some(p);
                0
            }
            (Some(p), Some(first)) => p.saturating_sub(first).max(enc.next_pts),
            (None, _) => enc.next_pts,
        };
        let duration = frame.duration_ns.unwrap_or(40_000_000);
        enc.next_pts = pts + duration;
        let mut buffer = gst::Buffer::from_mut_slice(pixels);
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(duration));
        }
        enc.src.push_buffer(buffer).map_err(|flow| {
            let detail = bus_error(&enc.pipeline).unwrap_or_else(|| format!("{flow:?}"));
            OutputError::Encode {
                path: self.current.display().to_string(),
                message: detail,
            }
        })?;
        self.frames += 1;
        Ok(())
    }

    /// Send EOS and wait until the muxer has written the index. Returns frames written.
    pub fn finalize(mut self) -> Result<u64, OutputError> {
        let Some(enc) = self.enc.take() else {
            // No frame ever came: leave no empty, unplayable file behind.
            let _ = std::fs::remove_file(&self.current);
            return Ok(0);
        };
        let result = finalize(&enc);
        let _ = enc.pipeline.set_state(gst::State::Null);
        result.map_err(|m| self.err(m))?;
        tracing::info!(path = %self.current.display(), frames = self.frames, "mp4 finalized");
        Ok(self.frames)
    }
}

/// `out/cam.mp4` part 2 → `out/cam-2.mp4`.
fn part_path(base: &Path, part: u32) -> PathBuf {
    if part == 0 {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let name = match base.extension() {
        Some(ext) => format!("{stem}-{part}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{part}"),
    };
    base.with_file_name(name)
}

fn finalize(enc: &Encoder) -> Result<(), String> {
    super::end_and_wait(&enc.pipeline, &enc.src, FINALIZE_TIMEOUT)
}

fn bus_error(p: &gst::Pipeline) -> Option<String> {
    let bus = p.bus()?;
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(e.error().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(path: &Path) -> Mp4Settings {
        Mp4Settings {
            path: path.to_path_buf(),
            overlay: false,
            preset: X264Preset::Ultrafast,
            bitrate_kbps: 512,
        }
    }

    /// Regression: part 0 is the configured file itself (a `keep_existing` change once made the
    /// first file `NAME-0.mp4`).
    #[test]
    fn first_part_is_the_configured_file_and_later_parts_are_numbered() {
        let base = Path::new("/out/cam.mp4");
        assert_eq!(part_path(base, 0), base);
        assert_eq!(part_path(base, 2), Path::new("/out/cam-2.mp4"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cam.mp4");
        let w = Mp4Writer::new(settings(&p), vec![], false).unwrap();
        assert_eq!(w.current, p);
    }

    #[test]
    fn keep_existing_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cam.mp4");
        std::fs::write(&p, b"earlier recording").unwrap();
        std::fs::write(dir.path().join("cam-1.mp4"), b"and another").unwrap();
        let w = Mp4Writer::new(settings(&p), vec![], true).unwrap();
        assert_eq!(w.current, dir.path().join("cam-2.mp4"));
        assert_eq!(std::fs::read(&p).unwrap(), b"earlier recording");
        // without keep_existing the configured file is (re)created
        drop(Mp4Writer::new(settings(&p), vec![], false).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"");
    }
}
