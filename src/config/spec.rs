//! What a person writes in a pipeline file. Every struct refuses unknown keys; each field's `///`
//! comment is its user documentation. Nothing here is validated beyond its type: see `plan.rs`.

use serde::Deserialize;
use serde_saphyr::Spanned;

pub use crate::analytics::{AnalyticsSpec, LineSpec, ZoneSpec};
pub use crate::detect::Precision;
pub use crate::detect::batch::BatchSpec;
pub use crate::flow::WhenFull;
pub use crate::frame::Resize;
pub use crate::ingest::Pace;
/// One output, run for every source: `kind` (one of `output::KINDS`) and that kind's keys
/// (each kind's `…Spec` in `src/output/`). Relative paths are relative to the pipeline file.
pub use crate::output::OutputSpec;
pub use crate::track::TrackerSpec;

/// Default confidence threshold: darknet's and Ultralytics' usual 0.25.
pub const DEFAULT_CONFIDENCE: f32 = 0.25;
/// Default NMS IoU threshold (darknet's 0.45).
pub const DEFAULT_NMS_IOU: f32 = 0.45;
/// Default cap on detections kept per frame.
pub const DEFAULT_MAX_DETECTIONS: usize = 300;
/// Default capacity of every edge between stages.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8;

/// A pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Name of the pipeline: appears in metadata (`pipeline`) and may be used in output paths as `{pipeline}`.
    /// Unique across the files of one `vigil serve` folder; no `/`, and not `.` or `..`.
    pub name: Spanned<String>,
    /// The video streams to analyse (at least one, at most 32: see README, "Limits").
    pub sources: Spanned<Vec<SourceSpec>>,
    /// The object detector and its thresholds.
    pub detector: DetectorSpec,
    /// Non-maximum suppression of overlapping boxes.
    #[serde(default)]
    pub nms: NmsSpec,
    /// Multi-object tracker, one per source (IDs in metadata and overlay): `kind` (`none`, `iou`,
    /// `sort`, `bytetrack`, `ocsort`) and that kind's keys (`IouSpec` … below). Default: ByteTrack.
    #[serde(default)]
    pub tracker: Option<Spanned<TrackerSpec>>,
    /// Capacity and full-policy of the queues between stages.
    #[serde(default)]
    pub queues: QueueSpec,
    /// Where results go: each entry is `kind` (`mp4`, `jsonl`, `mqtt`, `rtsp`, `events`) and that
    /// kind's keys (`Mp4Spec`, `JsonlSpec`, `MqttSpec`, `RtspSpec`, `EventsSpec` below). Paths may use `{pipeline}` and
    /// `{source}`; each entry runs once per source; at most 8.
    #[serde(default)]
    pub outputs: Vec<Spanned<OutputSpec>>,
    /// How tracks become zone and line events (`AnalyticsSpec` below), for every source.
    #[serde(default)]
    pub analytics: Option<AnalyticsSpec>,
    /// Tolerances for `vigil regress` against golden metadata.
    #[serde(default)]
    pub regress: Option<RegressSpec>,
}

/// What `vigil regress` accepts as "unchanged".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressSpec {
    /// Minimum IoU (and the same class) for a new detection to match a golden one. Default 0.5.
    #[serde(default)]
    pub iou: Option<f32>,
    /// Largest accepted score difference of a matched detection. Default 0.05.
    #[serde(default)]
    pub score_tolerance: Option<f32>,
    /// Largest accepted move of a matched box's corners, in pixels. Default 2.
    #[serde(default)]
    pub box_tolerance_px: Option<f32>,
    /// Golden detections allowed to go missing, over the whole run. Default 0.
    #[serde(default)]
    pub max_missing: Option<u64>,
    /// New detections allowed that the golden does not have. Default 0.
    #[serde(default)]
    pub max_extra: Option<u64>,
    /// Lowest accepted IDF1 of the new tracks taking the golden tracks as truth. Default 0.9.
    #[serde(default)]
    pub min_idf1: Option<f64>,
}

/// One video stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Unique id of the stream within the pipeline: `source` in metadata, `{source}` in output paths.
    /// Letters, digits, `-`, `_` and `.`, but not `.` or `..`.
    pub id: Spanned<String>,
    /// Where the video comes from: `file:PATH` (relative to the pipeline file), `file:///abs/path`,
    /// or any URI GStreamer's `uridecodebin` can open (`rtsp://…`, `http://…`).
    pub uri: Spanned<String>,
    /// For files: `as_fast_as_possible` (default: every frame, as quick as the pipeline goes) or
    /// `realtime` (frames released at their timestamps, like a camera).
    #[serde(default)]
    pub pace: Pace,
    /// RTSP transport: `tcp` (default: survives NAT and lossy Wi-Fi) or `udp` (lower latency).
    #[serde(default)]
    pub transport: Option<Transport>,
    /// RTSP jitter-buffer latency, e.g. `200ms` (default 200ms).
    #[serde(default)]
    pub latency: Option<super::units::HumanDuration>,
    /// How a live source comes back after losing its stream.
    #[serde(default)]
    pub reconnect: Option<ReconnectSpec>,
    /// Stop after this many frames (files: regression runs on the start of a long recording).
    #[serde(default)]
    pub max_frames: Option<u64>,
    /// Stall watchdog: if no frame arrives for this long (e.g. `5s`), the source is reported
    /// stalled and stopped. Default 10s for live sources, 60s for files (a decoder that hangs).
    #[serde(default)]
    pub stall: Option<Spanned<super::units::HumanDuration>>,
    /// Detector settings for this source only, overriding the pipeline's `detector` ones.
    #[serde(default)]
    pub detector: Option<SourceDetectorSpec>,
    /// Zones of this source's frame (`ZoneSpec` below): enter, exit, dwell and occupancy events.
    #[serde(default)]
    pub zones: Vec<ZoneSpec>,
    /// Counting lines of this source's frame (`LineSpec` below): crossings by direction.
    #[serde(default)]
    pub lines: Vec<LineSpec>,
}

/// RTSP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// RTP interleaved in the RTSP TCP connection.
    Tcp,
    /// RTP over UDP.
    Udp,
}

/// Reconnect policy of a live source: exponential backoff with jitter, capped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectSpec {
    /// First wait after losing the stream, e.g. `500ms` (default 500ms).
    #[serde(default)]
    pub initial: Option<super::units::HumanDuration>,
    /// Longest wait between attempts, e.g. `30s` (default 30s).
    #[serde(default)]
    pub max: Option<super::units::HumanDuration>,
    /// Attempts without a frame before the source is marked failed; absent: retry for ever.
    #[serde(default)]
    pub retries: Option<u32>,
}

/// Per-source detector overrides (a busy entrance may want a higher threshold, a car park only cars).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDetectorSpec {
    /// Minimum score for this source, in `[0, 1]`.
    #[serde(default)]
    pub confidence: Option<Spanned<f32>>,
    /// Only these classes for this source (names from the model's class list).
    #[serde(default)]
    pub classes: Option<Vec<Spanned<String>>>,
    /// Run the detector on every Nth frame of this source.
    #[serde(default)]
    pub every: Option<Spanned<u32>>,
    /// Live latency budget, e.g. `500ms`: when this source's frames wait longer than this for the
    /// detector, the load governor detects fewer of them (every 2nd, 4th, … 16th frame, the
    /// tracker predicting in between), lowest `priority` first, and restores when load falls.
    #[serde(default)]
    pub latency_budget: Option<Spanned<super::units::HumanDuration>>,
    /// Sources with a higher priority keep full detection longest. Default 0.
    #[serde(default)]
    pub priority: Option<i32>,
}

/// The object detector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// Model manifest (`models/NAME.yaml`), relative to the pipeline file.
    pub model: Spanned<String>,
    /// Where inference runs: `cpu` (default), `cuda:N`, or `auto` (the first GPU if there is one).
    #[serde(default)]
    pub device: Option<Spanned<String>>,
    /// Minimum score (objectness × class probability) for a box to be kept, in `[0, 1]`.
    #[serde(default)]
    pub confidence: Option<Spanned<f32>>,
    /// Only report these classes (names from the model's class list); all classes when absent.
    #[serde(default)]
    pub classes: Option<Vec<Spanned<String>>>,
    /// Override the manifest's resize mode: `letterbox` or `stretch`.
    #[serde(default)]
    pub resize: Option<Resize>,
    /// Run the detector on every Nth frame of each source; on the frames between, the tracker
    /// predicts where its tracks are. Default 1 (every frame).
    #[serde(default)]
    pub every: Option<Spanned<u32>>,
    /// The number type the detector computes in: `f32` (default) or `f16` (for GPUs: half the
    /// memory traffic; boxes move by about a pixel; darknet models).
    #[serde(default)]
    pub precision: Option<Precision>,
    /// Frames sent to the detector together, from one or several streams: `8` (up to 8 of the
    /// frames already waiting) or `{max: 8, wait: 5ms}` (the first frame may wait up to 5 ms for
    /// the batch to fill: throughput on a GPU). Default 1.
    #[serde(default)]
    pub batch: Option<Spanned<BatchSpec>>,
}

/// Non-maximum suppression.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NmsSpec {
    /// Boxes overlapping a better one by more than this IoU are removed. Default 0.45; for models
    /// that suppress in their own graph (torchvision exports, end-to-end YOLO, RT-DETR, TFLite
    /// SSD) none, unless written here.
    #[serde(default = "default_nms_iou")]
    pub iou: Spanned<f32>,
    /// Only suppress boxes of the same class (default true); false suppresses across classes.
    #[serde(default = "default_true")]
    pub class_aware: bool,
    /// Keep at most this many detections per frame, best first. Default 300.
    #[serde(default = "default_max_detections")]
    pub max_detections: usize,
}

impl Default for NmsSpec {
    fn default() -> Self {
        Self {
            iou: Spanned::new(
                DEFAULT_NMS_IOU,
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            ),
            class_aware: true,
            max_detections: DEFAULT_MAX_DETECTIONS,
        }
    }
}

/// Queues between stages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// Frames each queue holds. Default 8.
    #[serde(default = "default_queue_capacity")]
    pub capacity: Spanned<usize>,
    /// `block` (lossless; the default for files) or `drop_oldest` (bounded latency; the default for live streams).
    #[serde(default)]
    pub when_full: Option<WhenFull>,
    /// A stage or output with frames waiting and none taken for this long has stalled: it is
    /// reported by name and treated as failed (a stage ends the pipeline, an output stops alone);
    /// `vigil serve`'s health calls the pipeline stuck. Default 30s.
    #[serde(default)]
    pub stall_timeout: Option<Spanned<super::units::HumanDuration>>,
}

impl Default for QueueSpec {
    fn default() -> Self {
        Self {
            capacity: Spanned::new(
                DEFAULT_QUEUE_CAPACITY,
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            ),
            when_full: None,
            stall_timeout: None,
        }
    }
}

fn default_nms_iou() -> Spanned<f32> {
    NmsSpec::default().iou
}
fn default_true() -> bool {
    true
}
fn default_max_detections() -> usize {
    DEFAULT_MAX_DETECTIONS
}
fn default_queue_capacity() -> Spanned<usize> {
    QueueSpec::default().capacity
}
