//! The values that travel between stages: [`Frame`] with its timestamps and pixels, and the boxes
//! found in it. Every box type names the coordinate space it lives in.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Identifies one source of a pipeline (its `id` in the pipeline file).
pub type StreamId = Arc<str>;

/// A decoded picture: tightly packed 8-bit BGR (OpenCV's channel order), `width * 3` bytes a row.
#[derive(Debug, Clone)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub bgr: Vec<u8>,
}

impl Image {
    /// Bytes in one row.
    pub fn row_bytes(&self) -> usize {
        self.width as usize * 3
    }
}

/// One decoded frame and everything learned about it so far. Moves by value from stage to stage;
/// the pixels sit behind an `Arc` and are never copied after ingest.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Which source this frame came from.
    pub stream: StreamId,
    /// 0, 1, 2, … per stream, in decode order, with no gaps at ingest (a gap downstream is a drop).
    pub seq: u64,
    /// Presentation timestamp from the container or camera, in nanoseconds, if it had one.
    pub pts_ns: Option<u64>,
    /// Duration of this frame, if the stream says.
    pub duration_ns: Option<u64>,
    /// Nominal frame rate of the stream `(numerator, denominator)`, `(0, 1)` when variable or unknown.
    pub fps: (i32, i32),
    /// Wall-clock time at which ingest received the frame.
    pub captured_at: SystemTime,
    /// Monotonic instant at which ingest received the frame (for latency measurement).
    pub ingested: Instant,
    /// The pixels.
    pub image: Arc<Image>,
    /// Objects found in the frame, boxes in frame pixels (filled by the detector stage, or predicted
    /// by the tracker on frames the detector skipped).
    pub detections: Vec<Detection>,
    /// Whether the detector ran on this frame (`detector.every`).
    pub detected: bool,
    /// Recent path of each track reported in this frame (for the overlay), oldest point first.
    pub trails: Vec<Trail>,
    /// What the analytics made of this frame (zones, lines, counts); empty without zones/lines.
    pub events: Vec<crate::event::Event>,
    /// The zones and lines with their live counts, for the overlay (`None` without analytics).
    pub regions: Option<Arc<crate::event::RegionsView>>,
}

impl Frame {
    /// Stream time, seconds: the PTS, else the frame's number at the stream's frame rate, else 0.
    pub fn stream_time_s(&self) -> f64 {
        match (self.pts_ns, self.fps) {
            (Some(pts), _) => pts as f64 / 1e9,
            (None, (n, d)) if n > 0 && d > 0 => self.seq as f64 * f64::from(d) / f64::from(n),
            _ => 0.0,
        }
    }
}

/// Where a track has been: bottom-centre points of its last boxes, in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Trail {
    pub track_id: u64,
    pub points: Vec<(f32, f32)>,
}

/// An axis-aligned box `[x1, y1, x2, y2]` in some coordinate space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Xyxy {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl Xyxy {
    pub fn from_center(cx: f32, cy: f32, w: f32, h: f32) -> Self {
        Self {
            x1: cx - w / 2.0,
            y1: cy - h / 2.0,
            x2: cx + w / 2.0,
            y2: cy + h / 2.0,
        }
    }
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
    /// Intersection over union; 0 when either box is empty. In f32, as darknet's NMS computes it
    /// (tracking and metrics use [`iou`], in f64, as their references do).
    pub fn iou(&self, other: &Xyxy) -> f32 {
        let iw = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let ih = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
    /// Clamp into `[0, width] x [0, height]`.
    pub fn clamped(&self, width: f32, height: f32) -> Self {
        Self {
            x1: self.x1.clamp(0.0, width),
            y1: self.y1.clamp(0.0, height),
            x2: self.x2.clamp(0.0, width),
            y2: self.y2.clamp(0.0, height),
        }
    }
}

/// IoU of two `[x1, y1, x2, y2]` boxes in f64 (no +1 pixel convention); 0 when the union is
/// empty. Trackers and MOT metrics use this, as their Python references do.
pub fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// A box in the model's input pixels (after letterbox/stretch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxInModel(pub Xyxy);

/// A box in the source frame's pixels: what users see, what JSONL and MQTT carry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxInFrame(pub Xyxy);

/// A binary instance mask cut to the rectangle that holds it: `width × height` bytes, row-major,
/// 1 inside the object and 0 outside, for the pixels `x..x + width`, `y..y + height`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BitMask {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub bits: Vec<u8>,
}

impl BitMask {
    /// The mask of `plane` (`width × height`, row-major) where it is above `threshold`, cut to
    /// the rectangle of those pixels (an empty mask when there are none).
    pub fn from_plane(plane: &[f32], width: usize, height: usize, threshold: f32) -> Self {
        let set = |x: usize, y: usize| plane[y * width + x] > threshold;
        let rows: Vec<usize> = (0..height)
            .filter(|&y| (0..width).any(|x| set(x, y)))
            .collect();
        let (Some(&y0), Some(&y1)) = (rows.first(), rows.last()) else {
            return Self::default();
        };
        let cols = |x: usize| (y0..=y1).any(|y| set(x, y));
        let x0 = (0..width).find(|&x| cols(x)).unwrap_or(0);
        let x1 = (0..width).rev().find(|&x| cols(x)).unwrap_or(x0);
        let bits = (y0..=y1)
            .flat_map(|y| (x0..=x1).map(move |x| u8::from(set(x, y))))
            .collect();
        Self {
            x: x0 as u32,
            y: y0 as u32,
            width: (x1 - x0 + 1) as u32,
            height: (y1 - y0 + 1) as u32,
            bits,
        }
    }

    /// Whether pixel `(x, y)` (in the mask's space, not relative to its rectangle) is set.
    pub fn get(&self, x: i64, y: i64) -> bool {
        let (rx, ry) = (x - i64::from(self.x), y - i64::from(self.y));
        rx >= 0
            && ry >= 0
            && rx < i64::from(self.width)
            && ry < i64::from(self.height)
            && self.bits[(ry * i64::from(self.width) + rx) as usize] != 0
    }

    /// Set pixels.
    pub fn area(&self) -> usize {
        self.bits.iter().filter(|&&b| b != 0).count()
    }
}

/// An instance mask in the model's input pixels (as a segmentation head gives it).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskInModel(pub BitMask);

/// An instance mask in the source frame's pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskInFrame(pub BitMask);

/// How a frame is fitted to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Keep the aspect ratio and pad the short side with grey (darknet, Ultralytics).
    Letterbox,
    /// Scale each axis independently to fill the input (OpenCV's `blobFromImage`).
    Stretch,
}

/// Maps model-input pixels to frame pixels: `x_frame = (x_model − offset_x) / scale_x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameFromModel {
    pub scale_x: f32,
    pub scale_y: f32,
    pub offset_x: f32,
    pub offset_y: f32,
    /// Frame size, for clamping.
    pub frame_w: f32,
    pub frame_h: f32,
}

impl FrameFromModel {
    pub fn apply(&self, b: BoxInModel) -> BoxInFrame {
        let m = b.0;
        BoxInFrame(
            Xyxy {
                x1: (m.x1 - self.offset_x) / self.scale_x,
                y1: (m.y1 - self.offset_y) / self.scale_y,
                x2: (m.x2 - self.offset_x) / self.scale_x,
                y2: (m.y2 - self.offset_y) / self.scale_y,
            }
            .clamped(self.frame_w, self.frame_h),
        )
    }

    /// The mask in frame pixels: each frame pixel takes the model pixel under its centre
    /// (nearest neighbour; the letterbox's inverse, clamped to the frame).
    pub fn apply_mask(&self, m: &MaskInModel) -> MaskInFrame {
        let m = &m.0;
        let r = self
            .apply(BoxInModel(Xyxy {
                x1: m.x as f32,
                y1: m.y as f32,
                x2: (m.x + m.width) as f32,
                y2: (m.y + m.height) as f32,
            }))
            .0;
        let (x0, y0) = (r.x1.floor() as u32, r.y1.floor() as u32);
        let (x1, y1) = (r.x2.ceil() as u32, r.y2.ceil() as u32);
        let to_model =
            |f: u32, scale: f32, offset: f32| ((f as f32 + 0.5) * scale + offset).floor() as i64;
        let bits = (y0..y1)
            .flat_map(|y| {
                let my = to_model(y, self.scale_y, self.offset_y);
                (x0..x1).map(move |x| u8::from(m.get(to_model(x, self.scale_x, self.offset_x), my)))
            })
            .collect();
        MaskInFrame(BitMask {
            x: x0,
            y: y0,
            width: x1.saturating_sub(x0),
            height: y1.saturating_sub(y0),
            bits,
        })
    }
}

/// A frame ready for the network.
#[derive(Debug, Clone)]
pub struct ModelInput {
    /// `3 × height × width` values, planes R, G, B, in `[0, 1]` (empty when `on_device` holds them).
    pub chw: Vec<f32>,
    /// The same as a `(1, 3, height, width)` f32 tensor on the detector's GPU, when the letterbox
    /// ran there (`preprocess::on_device`); `None` for inputs prepared on the host.
    pub on_device: Option<candle_core::Tensor>,
    pub width: u32,
    pub height: u32,
    pub frame_from_model: FrameFromModel,
}

impl ModelInput {
    /// The planes on the host (copied from the device when the letterbox ran there).
    pub fn host_chw(&self) -> candle_core::Result<std::borrow::Cow<'_, [f32]>> {
        match &self.on_device {
            Some(t) if self.chw.is_empty() => {
                Ok(std::borrow::Cow::Owned(t.flatten_all()?.to_vec1()?))
            }
            _ => Ok(std::borrow::Cow::Borrowed(&self.chw)),
        }
    }
}

/// One detected object.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Index into the model's class list.
    pub class_id: u32,
    /// Confidence in `[0, 1]` (objectness × class probability for YOLO heads).
    pub score: f32,
    pub box_in_frame: BoxInFrame,
    /// Set by the tracker stage.
    pub track_id: Option<u64>,
    /// The object's pixels, from segmentation models (Mask R-CNN); `None` from box detectors.
    pub mask: Option<Arc<MaskInFrame>>,
}

/// A message on a stage edge: a frame, or the end of one stream (travels in-band, after its last frame).
#[derive(Debug)]
pub enum Msg<T> {
    Item(T),
    Eos(StreamId),
}
