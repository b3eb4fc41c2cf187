//! OC-SORT (Cao et al., CVPR 2023): SORT made robust to occlusion by trusting observations over
//! the Kalman filter.
//! - Observation-centric momentum (OCM): the association cost adds how well each detection agrees
//!   with the track's direction of travel, measured between real observations `delta_t` apart.
//! - Observation-centric re-update (ORU): when a lost track is found again, the filter is rewound to
//!   where it was lost and re-run over a straight virtual path to the new observation.
//! - Observation-centric recovery (OCR): unmatched detections get a second chance against the last
//!   observed boxes of unmatched tracks.
//!
//! Follows the reference implementation (noahcao/OC_SORT, as packaged in `ocsort` 0.0.2) step for
//! step, including the real box being applied twice after a re-update.

use std::collections::BTreeMap;

use super::assign::min_cost;
use super::kalman::{SortKalman, xyxy_to_xysr};
use super::sort::{split_candidates, unique_overlaps};
use super::{TrackOutput, Tracker, TrackerAlgorithm, TrackerInput, iou, unit};

/// `kind: ocsort`: OC-SORT, SORT with observation-centric momentum, re-update and recovery
/// (robust to occlusion).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcSortSpec {
    /// Detections above this score are associated and start tracks. Default 0.5.
    #[serde(default)]
    pub det_thresh: Option<f64>,
    /// Frames a track survives unmatched. Default 30.
    #[serde(default)]
    pub max_age: Option<u64>,
    /// Consecutive matches before a track is reported. Default 3.
    #[serde(default)]
    pub min_hits: Option<u64>,
    /// Minimum IoU for a match. Default 0.3.
    #[serde(default)]
    pub iou: Option<f64>,
    /// Frames between the observations that give a track's direction. Default 3.
    #[serde(default)]
    pub delta_t: Option<u64>,
    /// Weight of the direction-consistency term. Default 0.2.
    #[serde(default)]
    pub inertia: Option<f64>,
}

impl TrackerAlgorithm for OcSort {
    type Spec = OcSortSpec;
    type Params = OcSortParams;

    fn resolve(spec: &OcSortSpec, problems: &mut Vec<String>) -> OcSortParams {
        let d = OcSortParams::default();
        OcSortParams {
            det_thresh: unit(problems, "det_thresh", spec.det_thresh, d.det_thresh),
            iou: unit(problems, "iou", spec.iou, d.iou),
            inertia: unit(problems, "inertia", spec.inertia, d.inertia),
            max_age: spec.max_age.unwrap_or(d.max_age),
            min_hits: spec.min_hits.unwrap_or(d.min_hits),
            delta_t: spec.delta_t.unwrap_or(d.delta_t).max(1),
        }
    }

    fn create(params: OcSortParams) -> Self {
        Self::new(params)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OcSortParams {
    /// Detections above this score are associated (and start tracks).
    pub det_thresh: f64,
    /// Frames a track survives without a match.
    pub max_age: u64,
    /// Consecutive matches before a track is reported.
    pub min_hits: u64,
    /// Minimum IoU for a match.
    pub iou: f64,
    /// How many frames apart the observations that give a track's direction are.
    pub delta_t: u64,
    /// Weight of the direction-consistency term.
    pub inertia: f64,
}

impl Default for OcSortParams {
    fn default() -> Self {
        Self {
            det_thresh: 0.5,
            max_age: 30,
            min_hits: 3,
            iou: 0.3,
            delta_t: 3,
            inertia: 0.2,
        }
    }
}

/// An observation: box and score.
type Obs = [f64; 5];
const NO_OBS: Obs = [-1.0; 5];

/// The Kalman filter with ORU's memory: measurements seen (None for misses) and the state saved
/// at the first miss.
#[derive(Debug, Clone)]
struct OruKalman {
    kf: SortKalman,
    history: Vec<Option<[f64; 4]>>,
    saved: Option<(SortKalman, Vec<Option<[f64; 4]>>)>,
    observed: bool,
}

impl OruKalman {
    fn new(z: [f64; 4]) -> Self {
        Self {
            kf: SortKalman::new(z),
            history: Vec::new(),
            saved: None,
            observed: false,
        }
    }

    fn update(&mut self, z: Option<[f64; 4]>) {
        self.history.push(z);
        let Some(z) = z else {
            if self.observed {
                self.saved = Some((self.kf.clone(), self.history.clone()));
            }
            self.observed = false;
            return;
        };
        if !self.observed {
            self.reupdate();
        }
        self.observed = true;
        self.kf.update(z);
    }

    /// Rewind to the first miss and walk a straight line from the last observation to the new one.
    fn reupdate(&mut self) {
        let Some((kf, mut history)) = self.saved.take() else {
            return;
        };
        let new_history = std::mem::take(&mut self.history);
        self.kf = kf;
        history.pop();
        self.history = history;
        let seen: Vec<usize> = new_history
            .iter()
            .enumerate()
            .filter(|(_, z)| z.is_some())
            .map(|(i, _)| i)
            .collect();
        let (Some(&i1), Some(&i2)) = (seen.get(seen.len().wrapping_sub(2)), seen.last()) else {
            return;
        };
        let (Some(b1), Some(b2)) = (new_history[i1], new_history[i2]) else {
            return;
        };
        let (w1, h1) = ((b1[2] * b1[3]).sqrt(), (b1[2] / b1[3]).sqrt());
        let (w2, h2) = ((b2[2] * b2[3]).sqrt(), (b2[2] / b2[3]).sqrt());
        let gap = (i2 - i1) as f64;
        let (dx, dy, dw, dh) = (
            (b2[0] - b1[0]) / gap,
            (b2[1] - b1[1]) / gap,
            (w2 - w1) / gap,
            (h2 - h1) / gap,
        );
        let steps = i2 - i1;
        for i in 0..steps {
            let k = (i + 1) as f64;
            let (w, h) = (w1 + k * dw, h1 + k * dh);
            let virtual_box = [b1[0] + k * dx, b1[1] + k * dy, w * h, w / h];
            // observed is true again here (it was when the state was saved)
            self.history.push(Some(virtual_box));
            self.kf.update(virtual_box);
            if i != steps - 1 {
                self.kf.predict();
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    kf: OruKalman,
    time_since_update: u64,
    hit_streak: u64,
    age: u64,
    last_obs: Obs,
    observations: BTreeMap<u64, Obs>,
    velocity: Option<(f64, f64)>,
    class_id: u32,
    score: f64,
    det: Option<usize>,
}

fn centre(b: &[f64]) -> (f64, f64) {
    ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)
}

/// Unit direction `(dy, dx)` from `a`'s centre to `b`'s.
fn direction(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (ax, ay) = centre(a);
    let (bx, by) = centre(b);
    let norm = ((by - ay).powi(2) + (bx - ax).powi(2)).sqrt() + 1e-6;
    ((by - ay) / norm, (bx - ax) / norm)
}

impl Track {
    fn previous_obs(&self, k: u64) -> Obs {
        if self.observations.is_empty() {
            return NO_OBS;
        }
        for dt in (1..=k).rev() {
            if let Some(o) = self
                .age
                .checked_sub(dt)
                .and_then(|a| self.observations.get(&a))
            {
                return *o;
            }
        }
        self.observations
            .values()
            .next_back()
            .copied()
            .unwrap_or(NO_OBS)
    }

    fn observe(&mut self, obs: Obs, class_id: u32, det: usize, delta_t: u64) {
        if self.last_obs.iter().sum::<f64>() >= 0.0 {
            let mut prev = None;
            for dt in (1..=delta_t).rev() {
                if let Some(o) = self
                    .age
                    .checked_sub(dt)
                    .and_then(|a| self.observations.get(&a))
                {
                    prev = Some(*o);
                    break;
                }
            }
            self.velocity = Some(direction(&prev.unwrap_or(self.last_obs), &obs));
        }
        self.last_obs = obs;
        self.observations.insert(self.age, obs);
        self.time_since_update = 0;
        self.hit_streak += 1;
        self.class_id = class_id;
        self.score = obs[4];
        self.det = Some(det);
        self.kf
            .update(Some(xyxy_to_xysr([obs[0], obs[1], obs[2], obs[3]], 1e-6)));
    }
}

#[derive(Debug)]
pub struct OcSort {
    p: OcSortParams,
    tracks: Vec<Track>,
    frame: u64,
    next_id: u64,
}

impl OcSort {
    pub fn new(p: OcSortParams) -> Self {
        Self {
            p,
            tracks: Vec::new(),
            frame: 0,
            next_id: 1,
        }
    }
}

/// Max-IoU assignment (`-IoU` costs), pairs below `thr` dropped.
fn rematch(ious: &[f64], rows: usize, cols: usize, thr: f64) -> Vec<(usize, usize)> {
    let neg: Vec<f64> = ious.iter().map(|v| -v).collect();
    min_cost(&neg, rows, cols)
        .into_iter()
        .filter(|&(r, c)| ious[r * cols + c] >= thr)
        .collect()
}

impl Tracker for OcSort {
    #[allow(
        clippy::too_many_lines,
        reason = "step for step as the reference OC-SORT, kept in its order for parity"
    )]
    fn update(&mut self, inputs: &[TrackerInput]) -> Vec<TrackOutput> {
        self.frame += 1;
        let p = self.p.clone();
        // (index into inputs, observation)
        let dets: Vec<(usize, Obs)> = inputs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.score > p.det_thresh)
            .map(|(i, d)| (i, [d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3], d.score]))
            .collect();

        let mut predicted = Vec::with_capacity(self.tracks.len());
        for t in &mut self.tracks {
            if t.kf.kf.x[6] + t.kf.kf.x[2] <= 0.0 {
                t.kf.kf.x[6] = 0.0;
            }
            t.kf.kf.predict();
            t.age += 1;
            if t.time_since_update > 0 {
                t.hit_streak = 0;
            }
            t.time_since_update += 1;
            t.det = None;
            predicted.push(t.kf.kf.xyxy());
        }
        let finite: Vec<bool> = predicted
            .iter()
            .map(|b| b.iter().all(|v| v.is_finite()))
            .collect();
        let mut keep = finite.iter();
        self.tracks.retain(|_| *keep.next().unwrap_or(&true));
        let predicted: Vec<[f64; 4]> = predicted
            .into_iter()
            .zip(&finite)
            .filter(|(_, k)| **k)
            .map(|(b, _)| b)
            .collect();

        let (nd, nt) = (dets.len(), self.tracks.len());
        let (mut matches, mut unmatched_dets, mut unmatched_trks): (
            Vec<(usize, usize)>,
            Vec<usize>,
            Vec<usize>,
        ) = if nt == 0 {
            (Vec::new(), (0..nd).collect(), Vec::new())
        } else {
            let ious: Vec<f64> = dets
                .iter()
                .flat_map(|(_, d)| {
                    predicted
                        .iter()
                        .map(move |t| iou(&[d[0], d[1], d[2], d[3]], t))
                })
                .collect();
            let shortcut = if nd == 0 {
                Some(Vec::new())
            } else {
                unique_overlaps(&ious, nd, nt, p.iou)
            };
            let candidates: Vec<(usize, usize)> = match shortcut {
                Some(pairs) => pairs,
                None => {
                    // momentum: agreement of each detection with each track's direction of travel
                    let mut cost = Vec::with_capacity(nd * nt);
                    for (r, (_, d)) in dets.iter().enumerate() {
                        for (c, t) in self.tracks.iter().enumerate() {
                            let prev = t.previous_obs(p.delta_t);
                            let valid = if prev[4] < 0.0 { 0.0 } else { 1.0 };
                            let (dy, dx) = direction(&prev, d);
                            let (vy, vx) = t.velocity.unwrap_or((0.0, 0.0));
                            let cos = (vx * dx + vy * dy).clamp(-1.0, 1.0);
                            let angle = (std::f64::consts::FRAC_PI_2 - cos.acos().abs())
                                / std::f64::consts::PI;
                            cost.push(-(ious[r * nt + c] + valid * angle * p.inertia * d[4]));
                        }
                    }
                    min_cost(&cost, nd, nt)
                }
            };
            split_candidates(candidates, &ious, nd, nt, p.iou)
        };
        for &(r, c) in &matches {
            let (i, obs) = dets[r];
            self.tracks[c].observe(obs, inputs[i].class_id, i, p.delta_t);
        }

        // OCR: leftovers against the last observed boxes.
        if !unmatched_dets.is_empty() && !unmatched_trks.is_empty() {
            let ious: Vec<f64> = unmatched_dets
                .iter()
                .flat_map(|&r| {
                    let d = dets[r].1;
                    let tracks = &self.tracks;
                    unmatched_trks.iter().map(move |&c| {
                        iou(&[d[0], d[1], d[2], d[3]], &{
                            let o = tracks[c].last_obs;
                            [o[0], o[1], o[2], o[3]]
                        })
                    })
                })
                .collect();
            if ious.iter().cloned().fold(f64::NEG_INFINITY, f64::max) > p.iou {
                let pairs = rematch(&ious, unmatched_dets.len(), unmatched_trks.len(), p.iou);
                let mut taken_d = Vec::new();
                let mut taken_t = Vec::new();
                for (r, c) in pairs {
                    let (di, ti) = (unmatched_dets[r], unmatched_trks[c]);
                    let (i, obs) = dets[di];
                    self.tracks[ti].observe(obs, inputs[i].class_id, i, p.delta_t);
                    matches.push((di, ti));
                    taken_d.push(di);
                    taken_t.push(ti);
                }
                // the reference's np.setdiff1d: what is left comes back sorted
                unmatched_dets.retain(|d| !taken_d.contains(d));
                unmatched_dets.sort_unstable();
                unmatched_trks.retain(|t| !taken_t.contains(t));
                unmatched_trks.sort_unstable();
            }
        }
        for &t in &unmatched_trks {
            self.tracks[t].kf.update(None);
        }
        for &r in &unmatched_dets {
            let (i, obs) = dets[r];
            self.tracks.push(Track {
                id: self.next_id,
                kf: OruKalman::new(xyxy_to_xysr([obs[0], obs[1], obs[2], obs[3]], 1e-6)),
                time_since_update: 0,
                hit_streak: 0,
                age: 0,
                last_obs: NO_OBS,
                observations: BTreeMap::new(),
                velocity: None,
                class_id: inputs[i].class_id,
                score: obs[4],
                det: Some(i),
            });
            self.next_id += 1;
        }

        let (min_hits, frame, max_age) = (p.min_hits, self.frame, p.max_age);
        let out = self
            .tracks
            .iter()
            .rev()
            .filter(|t| t.time_since_update < 1 && (t.hit_streak >= min_hits || frame <= min_hits))
            .map(|t| {
                let bbox = if t.last_obs.iter().sum::<f64>() < 0.0 {
                    t.kf.kf.xyxy()
                } else {
                    [t.last_obs[0], t.last_obs[1], t.last_obs[2], t.last_obs[3]]
                };
                TrackOutput {
                    track_id: t.id,
                    bbox,
                    score: t.score,
                    class_id: t.class_id,
                    det: t.det,
                }
            })
            .collect();
        self.tracks.retain(|t| t.time_since_update <= max_age);
        // Observations older than the direction window are never read again: keep memory bounded.
        for t in &mut self.tracks {
            let horizon = t.age.saturating_sub(p.delta_t + 1);
            let newest = t.observations.keys().next_back().copied();
            t.observations
                .retain(|&a, _| a >= horizon || Some(a) == newest);
            if t.kf.observed && t.kf.history.len() > 1 {
                // Only the last real measurement is needed for a later re-update.
                let last = t.kf.history.len() - 1;
                t.kf.history.drain(..last);
            }
        }
        out
    }

    fn extrapolate(&self, fraction: f64) -> Vec<TrackOutput> {
        let (min_hits, frame) = (self.p.min_hits, self.frame);
        self.tracks
            .iter()
            .filter(|t| t.time_since_update < 1 && (t.hit_streak >= min_hits || frame <= min_hits))
            .map(|t| TrackOutput {
                track_id: t.id,
                bbox: t.kf.kf.xyxy_ahead(fraction),
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
