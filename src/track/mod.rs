//! Multi-object tracking: per-stream trackers that give detections stable identities.
//!
//! Every tracker takes one frame's detections and returns the tracks it reports for that frame,
//! each with the index of the detection it was updated with (if any). IDs are unique per tracker
//! (per stream), start at 1 and are never reused; finished tracks are dropped after `max_age`
//! frames, so memory stays bounded however long the stream runs.

pub mod assign;
pub mod bytetrack;
pub mod iou;
pub mod kalman;
pub mod ocsort;
pub mod sort;
pub mod trails;

/// One detection handed to a tracker, in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerInput {
    /// `[x1, y1, x2, y2]`
    pub bbox: [f64; 4],
    pub score: f64,
    pub class_id: u32,
}

/// A track reported for the current frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackOutput {
    pub track_id: u64,
    /// The tracker's box for this frame (Kalman state for SORT-like trackers).
    pub bbox: [f64; 4],
    pub score: f64,
    pub class_id: u32,
    /// Index of the input detection this track was updated with in this frame.
    pub det: Option<usize>,
}

/// A multi-object tracker for one stream.
pub trait Tracker: Send {
    /// Advance one frame with its detections.
    fn update(&mut self, dets: &[TrackerInput]) -> Vec<TrackOutput>;
    /// Tracks held in memory (active, lost and not yet evicted).
    fn held(&self) -> usize;
    /// Where the tracks reported by the last `update` are `fraction` of a step later (for frames the
    /// detector skips: with `every: N`, frame j after a detection is `j / N` of a step). No state
    /// changes; `det` is `None`. Trackers without a motion model report their last boxes.
    fn extrapolate(&self, fraction: f64) -> Vec<TrackOutput>;
}

pub use crate::frame::iou;

/// Give `detections` the IDs of the tracks they updated this frame.
pub fn assign_ids(tracker: &mut dyn Tracker, detections: &mut [crate::frame::Detection]) {
    let inputs: Vec<TrackerInput> = detections
        .iter()
        .map(|d| {
            let b = d.box_in_frame.0;
            TrackerInput {
                bbox: [b.x1 as f64, b.y1 as f64, b.x2 as f64, b.y2 as f64],
                score: d.score as f64,
                class_id: d.class_id,
            }
        })
        .collect();
    for t in tracker.update(&inputs) {
        if let Some(d) = t.det.and_then(|i| detections.get_mut(i)) {
            d.track_id = Some(t.track_id);
        }
    }
}

/// Detections for a frame the detector skipped: the tracks' extrapolated boxes, with their IDs.
pub fn predicted_detections(tracker: &dyn Tracker, fraction: f64) -> Vec<crate::frame::Detection> {
    tracker
        .extrapolate(fraction)
        .into_iter()
        .map(|t| crate::frame::Detection {
            class_id: t.class_id,
            score: t.score as f32,
            box_in_frame: crate::frame::BoxInFrame(crate::frame::Xyxy {
                x1: t.bbox[0] as f32,
                y1: t.bbox[1] as f32,
                x2: t.bbox[2] as f32,
                y2: t.bbox[3] as f32,
            }),
            track_id: Some(t.track_id),
            mask: None,
        })
        .collect()
}

/// One tracker kind: its pipeline-file keys, how they resolve, and a fresh tracker from them. A
/// kind is one module implementing this plus one line in the [`trackers!`] registration.
pub trait TrackerAlgorithm: Tracker + Sized + 'static {
    /// The keys a person writes under `tracker:`, besides `kind`.
    type Spec: serde::de::DeserializeOwned + std::fmt::Debug + Clone;
    /// The resolved settings.
    type Params: Clone + std::fmt::Debug + PartialEq + Send + Sync;
    /// Defaults filled in and ranges checked; problems go to `problems`.
    fn resolve(spec: &Self::Spec, problems: &mut Vec<String>) -> Self::Params;
    /// A fresh tracker (one per stream).
    fn create(params: Self::Params) -> Self;
}

/// `v` (or `default`) checked to lie in `[0, 1]`.
pub fn unit(problems: &mut Vec<String>, name: &str, v: Option<f64>, default: f64) -> f64 {
    let v = v.unwrap_or(default);
    if !(0.0..=1.0).contains(&v) {
        problems.push(format!("tracker.{name} must be between 0 and 1, got {v}"));
    }
    v
}

/// The registered trackers: `"kind" => Variant(Type)`, one line each. Generates [`TrackerSpec`]
/// (the pipeline file's `tracker:`, with `kind: none` for no tracking), [`TrackerKind`] (resolved)
/// and [`build`].
macro_rules! trackers {
    ($($kind:literal => $variant:ident($ty:ty)),* $(,)?) => {
        /// A multi-object tracker and its settings: `kind` and that kind's keys (`kind: none`: no
        /// tracking, detections carry no `track_id`).
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(tag = "kind")]
        pub enum TrackerSpec {
            #[serde(rename = "none")]
            None,
            $(#[serde(rename = $kind)] $variant(<$ty as TrackerAlgorithm>::Spec),)*
        }

        /// Which tracker, with its settings.
        #[derive(Debug, Clone, PartialEq)]
        pub enum TrackerKind {
            $($variant(<$ty as TrackerAlgorithm>::Params),)*
        }

        /// The `kind` names, `none` first.
        pub const KINDS: &[&str] = &["none", $($kind),*];

        impl TrackerSpec {
            /// `None` for `kind: none`.
            pub fn resolve(&self, problems: &mut Vec<String>) -> Option<TrackerKind> {
                match self {
                    Self::None => None,
                    $(Self::$variant(s) => Some(TrackerKind::$variant(<$ty as TrackerAlgorithm>::resolve(s, problems))),)*
                }
            }
        }

        /// Build a fresh tracker (one per stream).
        pub fn build(kind: &TrackerKind) -> Box<dyn Tracker> {
            match kind {
                $(TrackerKind::$variant(p) => Box::new(<$ty as TrackerAlgorithm>::create(p.clone())),)*
            }
        }
    };
}

trackers! {
    "iou" => Iou(iou::IouTracker),
    "sort" => Sort(sort::Sort),
    "bytetrack" => ByteTrack(bytetrack::ByteTrack),
    "ocsort" => OcSort(ocsort::OcSort),
}
