//! `vigil regress` settings of a pipeline file: what counts as unchanged against the goldens.
//! Resolved here (the regress command sits above config and reads them from the plan).

use super::spec::RegressSpec;

/// What counts as unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerances {
    pub iou: f32,
    pub score: f32,
    /// Largest accepted move of a matched box's corners, in pixels.
    pub box_px: f32,
    pub max_missing: u64,
    pub max_extra: u64,
    pub min_idf1: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Self {
            iou: 0.5,
            score: 0.05,
            box_px: 2.0,
            max_missing: 0,
            max_extra: 0,
            min_idf1: 0.9,
        }
    }
}

impl Tolerances {
    pub fn from_spec(s: Option<&RegressSpec>) -> Self {
        let d = Self::default();
        let Some(s) = s else { return d };
        Self {
            iou: s.iou.unwrap_or(d.iou),
            score: s.score_tolerance.unwrap_or(d.score),
            box_px: s.box_tolerance_px.unwrap_or(d.box_px),
            max_missing: s.max_missing.unwrap_or(d.max_missing),
            max_extra: s.max_extra.unwrap_or(d.max_extra),
            min_idf1: s.min_idf1.unwrap_or(d.min_idf1),
        }
    }
}
