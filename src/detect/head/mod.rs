//! Head decoders: raw network outputs → candidate boxes in model-input pixels.
//!
//! Three kinds, one output type ([`Candidate`]), so NMS, tracking and overlays never care which
//! model ran:
//! - [`DetectionHead`] — YOLOv1 `[detection]`: a fixed `side × side` grid, boxes relative to the
//!   image, class probabilities per cell;
//! - [`RegionHead`] — YOLOv2 `[region]`: anchors in grid units, softmax classes, or the WordTree
//!   hierarchy of YOLO9000 ([`WordTree`]);
//! - [`YoloHead`] — YOLOv3/v4 `[yolo]`: anchors in pixels, logistic classes, `scale_x_y`,
//!   `new_coords`.
//!
//! Every head also gives its dense decoding ([`Head::rows`]: `[cx, cy, w, h, objectness,
//! score₀…]` per box, model pixels) so parity tests can compare the decoders themselves.

mod detection;
mod region;
mod tree;
pub mod yolo;

pub use detection::DetectionHead;
pub use region::RegionHead;
pub use tree::WordTree;
pub use yolo::YoloHead;

use crate::frame::BoxInModel;

/// A box before NMS, in model-input pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub box_in_model: BoxInModel,
    pub class_id: u32,
    pub score: f32,
    /// The object's pixels, from segmentation models; `None` from box detectors.
    pub mask: Option<std::sync::Arc<crate::frame::MaskInModel>>,
}

/// The logit whose sigmoid is `p` (clamped inside (0, 1)): decoders compare raw logits against it
/// instead of taking the sigmoid of every value.
pub(crate) fn logit(p: f32) -> f32 {
    let p = f64::from(p.clamp(1e-6, 1.0 - 1e-6));
    (p / (1.0 - p)).ln() as f32
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// darknet's `softmax`: over `n` values `stride` apart, max subtracted first.
pub(crate) fn softmax_strided(x: &mut [f32], start: usize, n: usize, stride: usize) {
    let idx = |i: usize| start + i * stride;
    let largest = (0..n).fold(f32::NEG_INFINITY, |m, i| m.max(x[idx(i)]));
    let mut sum = 0.0f32;
    for i in 0..n {
        let e = (x[idx(i)] - largest).exp();
        sum += e;
        x[idx(i)] = e;
    }
    for i in 0..n {
        x[idx(i)] /= sum;
    }
}

/// A detection head of any kind.
#[derive(Debug, Clone)]
pub enum Head {
    Detection(DetectionHead),
    Region(RegionHead),
    Yolo(YoloHead),
}

impl Head {
    /// Number of classes the head scores.
    pub fn classes(&self) -> usize {
        match self {
            Self::Detection(h) => h.classes,
            Self::Region(h) => h.classes,
            Self::Yolo(h) => h.classes,
        }
    }

    /// Decode one image's raw head input (the tensor that enters the head layer, flat CHW, grid
    /// `(h, w)`) into candidates with score ≥ `threshold`.
    pub fn decode(
        &self,
        raw: &[f32],
        grid: (usize, usize),
        threshold: f32,
        out: &mut Vec<Candidate>,
    ) {
        match self {
            Self::Detection(h) => h.decode(raw, threshold, out),
            Self::Region(h) => h.decode(raw, grid, threshold, out),
            Self::Yolo(h) => h.decode(raw, grid, threshold, out),
        }
    }

    /// Every box, decoded: rows of `5 + classes` values `[cx, cy, w, h, objectness, score₀…]` in
    /// model pixels (score = objectness · p(class); for a WordTree, the absolute hierarchical
    /// probability). Row order is the head's own: YOLOv1 cell-major (`cell·num + box`), `[region]`
    /// and `[yolo]` anchor-major (`anchor·cells + cell`).
    pub fn rows(&self, raw: &[f32], grid: (usize, usize)) -> Vec<f32> {
        match self {
            Self::Detection(h) => h.rows(raw),
            Self::Region(h) => h.rows(raw, grid),
            Self::Yolo(h) => h.rows(raw, grid),
        }
    }
}

/// Push one candidate per class whose score (`conf · class_prob(c)`) reaches `threshold`: the
/// emission rule every head kind shares.
pub(crate) fn push_classes(
    out: &mut Vec<Candidate>,
    box_in_model: BoxInModel,
    conf: f32,
    classes: usize,
    threshold: f32,
    class_prob: impl Fn(usize) -> f32,
) {
    for c in 0..classes {
        let score = conf * class_prob(c);
        if score >= threshold {
            out.push(Candidate {
                box_in_model,
                class_id: c as u32,
                score,
                mask: None,
            });
        }
    }
}
