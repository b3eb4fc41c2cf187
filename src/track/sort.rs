//! SORT (Bewley et al., ICIP 2016): a Kalman filter per object on `(cx, cy, area, ratio)` and
//! Hungarian matching on IoU. Follows the reference `sort.py` step for step: a unique
//! above-threshold overlap per row and column is matched directly, new tracks start from unmatched
//! detections in a fixed order, and a track is reported once it has `min_hits` consecutive hits
//! (or during the first `min_hits` frames) and only in frames where it was matched.

use super::assign::min_cost;
use super::kalman::{SortKalman, xyxy_to_xysr};
use super::{TrackOutput, Tracker, TrackerAlgorithm, TrackerInput, iou, unit};

/// `kind: sort`: SORT, a Kalman filter and Hungarian matching on IoU.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SortSpec {
    /// Frames a track survives unmatched. Default 1.
    #[serde(default)]
    pub max_age: Option<u64>,
    /// Consecutive matches before a track is reported. Default 3.
    #[serde(default)]
    pub min_hits: Option<u64>,
    /// Minimum IoU for a match. Default 0.3.
    #[serde(default)]
    pub iou: Option<f64>,
}

impl TrackerAlgorithm for Sort {
    type Spec = SortSpec;
    type Params = SortParams;

    fn resolve(spec: &SortSpec, problems: &mut Vec<String>) -> SortParams {
        let d = SortParams::default();
        SortParams {
            iou: unit(problems, "iou", spec.iou, d.iou),
            max_age: spec.max_age.unwrap_or(d.max_age),
            min_hits: spec.min_hits.unwrap_or(d.min_hits),
        }
    }

    fn create(params: SortParams) -> Self {
        Self::new(params)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortParams {
    /// Frames a track survives without a match.
    pub max_age: u64,
    /// Consecutive matches before a track is reported.
    pub min_hits: u64,
    /// Minimum IoU for a match.
    pub iou: f64,
}

impl Default for SortParams {
    fn default() -> Self {
        Self {
            max_age: 1,
            min_hits: 3,
            iou: 0.3,
        }
    }
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    kf: SortKalman,
    time_since_update: u64,
    hit_streak: u64,
    score: f64,
    class_id: u32,
    det: Option<usize>,
}

#[derive(Debug)]
pub struct Sort {
    p: SortParams,
    tracks: Vec<Track>,
    frame: u64,
    next_id: u64,
}

impl Sort {
    pub fn new(p: SortParams) -> Self {
        Self {
            p,
            tracks: Vec::new(),
            frame: 0,
            next_id: 1,
        }
    }
}

/// SORT's shortcut: when every detection overlaps at most one track above `thr` and every track
/// at most one detection, those pairs are the matching (no assignment solved).
pub(super) fn unique_overlaps(
    ious: &[f64],
    nd: usize,
    nt: usize,
    thr: f64,
) -> Option<Vec<(usize, usize)>> {
    let above = |r: usize, c: usize| ious[r * nt + c] > thr;
    let row_max = (0..nd)
        .map(|r| (0..nt).filter(|&c| above(r, c)).count())
        .max()
        .unwrap_or(0);
    let col_max = (0..nt)
        .map(|c| (0..nd).filter(|&r| above(r, c)).count())
        .max()
        .unwrap_or(0);
    (row_max == 1 && col_max == 1).then(|| {
        (0..nd)
            .flat_map(|r| (0..nt).map(move |c| (r, c)))
            .filter(|&(r, c)| above(r, c))
            .collect()
    })
}

/// Split candidate pairs into matches (IoU ≥ `thr`) and the unmatched detections and tracks, in the
/// order the reference lists them (never-paired first, ascending, then rejected pairs in order).
pub(super) fn split_candidates(
    candidates: Vec<(usize, usize)>,
    ious: &[f64],
    nd: usize,
    nt: usize,
    thr: f64,
) -> (Vec<(usize, usize)>, Vec<usize>, Vec<usize>) {
    let mut ud: Vec<usize> = (0..nd)
        .filter(|r| !candidates.iter().any(|m| m.0 == *r))
        .collect();
    let mut ut: Vec<usize> = (0..nt)
        .filter(|c| !candidates.iter().any(|m| m.1 == *c))
        .collect();
    let mut matches = Vec::new();
    for (r, c) in candidates {
        if ious[r * nt + c] < thr {
            ud.push(r);
            ut.push(c);
        } else {
            matches.push((r, c));
        }
    }
    (matches, ud, ut)
}

/// SORT's association: returns matches `(det, track)` and the unmatched detections in the order
/// the reference creates tracks for them.
pub(super) fn associate(
    dets: &[[f64; 4]],
    trks: &[[f64; 4]],
    thr: f64,
) -> (Vec<(usize, usize)>, Vec<usize>) {
    if trks.is_empty() {
        return (Vec::new(), (0..dets.len()).collect());
    }
    let (nd, nt) = (dets.len(), trks.len());
    let ious: Vec<f64> = dets
        .iter()
        .flat_map(|d| trks.iter().map(move |t| iou(d, t)))
        .collect();
    let candidates = if nd == 0 {
        Vec::new()
    } else {
        unique_overlaps(&ious, nd, nt, thr).unwrap_or_else(|| {
            let neg: Vec<f64> = ious.iter().map(|v| -v).collect();
            min_cost(&neg, nd, nt)
        })
    };
    let (matches, unmatched, _) = split_candidates(candidates, &ious, nd, nt, thr);
    (matches, unmatched)
}

impl Tracker for Sort {
    fn update(&mut self, inputs: &[TrackerInput]) -> Vec<TrackOutput> {
        self.frame += 1;
        let mut predicted = Vec::with_capacity(self.tracks.len());
        for t in &mut self.tracks {
            if t.kf.x[6] + t.kf.x[2] <= 0.0 {
                t.kf.x[6] = 0.0;
            }
            t.kf.predict();
            if t.time_since_update > 0 {
                t.hit_streak = 0;
            }
            t.time_since_update += 1;
            t.det = None;
            predicted.push(t.kf.xyxy());
        }
        // A prediction gone numerically wrong is dropped, as in the reference.
        let keep: Vec<bool> = predicted
            .iter()
            .map(|b| b.iter().all(|v| v.is_finite()))
            .collect();
        let mut k = keep.iter();
        self.tracks.retain(|_| *k.next().unwrap_or(&true));
        let predicted: Vec<[f64; 4]> = predicted
            .into_iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(b, _)| b)
            .collect();

        let dets: Vec<[f64; 4]> = inputs.iter().map(|d| d.bbox).collect();
        let (matches, unmatched) = associate(&dets, &predicted, self.p.iou);
        for (d, t) in matches {
            let tr = &mut self.tracks[t];
            tr.time_since_update = 0;
            tr.hit_streak += 1;
            tr.kf.update(xyxy_to_xysr(dets[d], 0.0));
            tr.det = Some(d);
            tr.score = inputs[d].score;
            tr.class_id = inputs[d].class_id;
        }
        for d in unmatched {
            self.tracks.push(Track {
                id: self.next_id,
                kf: SortKalman::new(xyxy_to_xysr(dets[d], 0.0)),
                time_since_update: 0,
                hit_streak: 0,
                score: inputs[d].score,
                class_id: inputs[d].class_id,
                det: Some(d),
            });
            self.next_id += 1;
        }
        let (min_hits, frame, max_age) = (self.p.min_hits, self.frame, self.p.max_age);
        let out = self
            .tracks
            .iter()
            .rev()
            .filter(|t| t.time_since_update < 1 && (t.hit_streak >= min_hits || frame <= min_hits))
            .map(|t| TrackOutput {
                track_id: t.id,
                bbox: t.kf.xyxy(),
                score: t.score,
                class_id: t.class_id,
                det: t.det,
            })
            .collect();
        self.tracks.retain(|t| t.time_since_update <= max_age);
        out
    }

    fn extrapolate(&self, fraction: f64) -> Vec<TrackOutput> {
        let (min_hits, frame) = (self.p.min_hits, self.frame);
        self.tracks
            .iter()
            .filter(|t| t.time_since_update < 1 && (t.hit_streak >= min_hits || frame <= min_hits))
            .map(|t| TrackOutput {
                track_id: t.id,
                bbox: t.kf.xyxy_ahead(fraction),
                score: t.score,
                class_id: t.class_id,
                det: None,
            })
            .collect()
    }

    fn held(&self) -> usize {
        self.tracks.len()
    }
}
