//! ByteTrack (Zhang et al., ECCV 2022): two-stage association — confident detections first against
//! every track (score-fused IoU), then low-score detections against the tracks still unmatched —
//! so occluded objects, whose scores drop, keep their identity.
//!
//! Follows the reference (ifzhang/ByteTrack as packaged by supervision 0.26.1) step for step,
//! including its quirks: detection boxes are held in f32, lost tracks have their height velocity
//! zeroed before predicting, a track removed for age can still be re-found in the next frame,
//! duplicate tracked/lost pairs (IoU > 0.85) keep the older one, and every started track takes an
//! ID even if it is never confirmed.

use super::assign::min_cost;
use super::kalman::XyahKalman;
use super::{TrackOutput, Tracker, TrackerAlgorithm, TrackerInput, iou, unit};

/// `kind: bytetrack`: ByteTrack, two-stage association with high- and low-score detections.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteTrackSpec {
    /// Score above which a detection is "high" (first stage). New tracks need high + 0.1. Default 0.5.
    #[serde(default)]
    pub high: Option<f64>,
    /// Score above which a detection joins the second stage. Default 0.1.
    #[serde(default)]
    pub low: Option<f64>,
    /// First-stage match threshold on the cost 1 − IoU·score. Default 0.8.
    #[serde(default)]
    pub match_thresh: Option<f64>,
    /// Frames a lost track is kept to be re-found. Default 30.
    #[serde(default)]
    pub max_age: Option<u64>,
}

impl TrackerAlgorithm for ByteTrack {
    type Spec = ByteTrackSpec;
    type Params = ByteTrackParams;

    fn resolve(spec: &ByteTrackSpec, problems: &mut Vec<String>) -> ByteTrackParams {
        let d = ByteTrackParams::default();
        let p = ByteTrackParams {
            high: unit(problems, "high", spec.high, d.high),
            low: unit(problems, "low", spec.low, d.low),
            match_thresh: unit(problems, "match_thresh", spec.match_thresh, d.match_thresh),
            max_age: spec.max_age.unwrap_or(d.max_age),
        };
        if p.low >= p.high {
            problems.push(format!(
                "tracker.low ({}) must be below tracker.high ({})",
                p.low, p.high
            ));
        }
        p
    }

    fn create(params: ByteTrackParams) -> Self {
        Self::new(params)
    }
}

/// ByteTrack's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ByteTrackParams {
    /// Detections above this score are "high" (first stage); new tracks need `high + 0.1`.
    pub high: f64,
    /// Detections above this (and not high) take part in the second stage.
    pub low: f64,
    /// First-stage cost threshold on `1 − IoU·score`.
    pub match_thresh: f64,
    /// Frames a lost track is kept for re-identification.
    pub max_age: u64,
}

impl Default for ByteTrackParams {
    fn default() -> Self {
        Self {
            high: 0.5,
            low: 0.1,
            match_thresh: 0.8,
            max_age: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Tracked,
    Lost,
    Removed,
}

#[derive(Debug, Clone)]
struct Track {
    internal: u64,
    id: u64,
    kf: XyahKalman,
    state: State,
    activated: bool,
    frame: u64,
    start: u64,
    tracklet_len: u64,
    score: f64,
    class_id: u32,
    det: Option<usize>,
}

/// A detection as the reference holds it: box in f32 `tlwh`.
#[derive(Debug, Clone, Copy)]
struct Det {
    tlwh: [f32; 4],
    score: f64,
    class_id: u32,
    index: usize,
}

impl Det {
    fn new(d: &TrackerInput, index: usize) -> Self {
        let b = d.bbox;
        Self {
            tlwh: [
                b[0] as f32,
                b[1] as f32,
                (b[2] - b[0]) as f32,
                (b[3] - b[1]) as f32,
            ],
            score: d.score,
            class_id: d.class_id,
            index,
        }
    }
    fn tlbr(&self) -> [f64; 4] {
        let t = self.tlwh;
        [
            t[0] as f64,
            t[1] as f64,
            (t[0] + t[2]) as f64,
            (t[1] + t[3]) as f64,
        ]
    }
    fn xyah(&self) -> [f64; 4] {
        let t = self.tlwh;
        [
            (t[0] + t[2] / 2.0) as f64,
            (t[1] + t[3] / 2.0) as f64,
            (t[2] / t[3]) as f64,
            t[3] as f64,
        ]
    }
}

/// ByteTrack for one stream.
#[derive(Debug)]
pub struct ByteTrack {
    p: ByteTrackParams,
    frame: u64,
    tracked: Vec<Track>,
    lost: Vec<Track>,
    /// Internal ids removed in the previous frame (dropped from `lost` one frame later).
    removed_prev: Vec<u64>,
    next_internal: u64,
    next_id: u64,
}

/// `linear_assignment` of the reference: costs above `thresh` clamped, then only pairs ≤ thresh kept.
fn linear_assignment(
    cost: &mut [f64],
    rows: usize,
    cols: usize,
    thresh: f64,
) -> (Vec<(usize, usize)>, Vec<usize>, Vec<usize>) {
    for c in cost.iter_mut() {
        if *c > thresh {
            *c = thresh + 1e-4;
        }
    }
    let matches: Vec<(usize, usize)> = min_cost(cost, rows, cols)
        .into_iter()
        .filter(|&(r, c)| cost[r * cols + c] <= thresh)
        .collect();
    let ur = (0..rows)
        .filter(|r| !matches.iter().any(|m| m.0 == *r))
        .collect();
    let uc = (0..cols)
        .filter(|c| !matches.iter().any(|m| m.1 == *c))
        .collect();
    (matches, ur, uc)
}

fn iou_cost(tracks: &[&Track], dets: &[Det], fuse: bool) -> Vec<f64> {
    let mut out = Vec::with_capacity(tracks.len() * dets.len());
    for t in tracks {
        let tb = t.kf.xyxy();
        for d in dets {
            let sim = iou(&tb, &d.tlbr());
            out.push(if fuse { 1.0 - sim * d.score } else { 1.0 - sim });
        }
    }
    out
}

impl ByteTrack {
    pub fn new(p: ByteTrackParams) -> Self {
        Self {
            p,
            frame: 0,
            tracked: Vec::new(),
            lost: Vec::new(),
            removed_prev: Vec::new(),
            next_internal: 0,
            next_id: 1,
        }
    }

    fn update_track(t: &mut Track, d: &Det, frame: u64) {
        t.frame = frame;
        t.tracklet_len += 1;
        t.kf.update(d.xyah());
        t.state = State::Tracked;
        if t.tracklet_len == 1 {
            t.activated = true;
        }
        t.score = d.score;
        t.class_id = d.class_id;
        t.det = Some(d.index);
    }

    fn reactivate(t: &mut Track, d: &Det, frame: u64) {
        t.kf.update(d.xyah());
        t.tracklet_len = 0;
        t.state = State::Tracked;
        t.frame = frame;
        t.score = d.score;
        t.class_id = d.class_id;
        t.det = Some(d.index);
    }
}

/// Append the tracks of `b` whose internal id is not already in `a`.
fn joint(a: &mut Vec<Track>, b: Vec<Track>) {
    for t in b {
        if !a.iter().any(|x| x.internal == t.internal) {
            a.push(t);
        }
    }
}

impl Tracker for ByteTrack {
    #[allow(
        clippy::too_many_lines,
        reason = "step for step as the reference ByteTrack, kept in its order for parity"
    )]
    fn update(&mut self, inputs: &[TrackerInput]) -> Vec<TrackOutput> {
        self.frame += 1;
        let frame = self.frame;
        let p = self.p.clone();
        let high: Vec<Det> = inputs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.score > p.high)
            .map(|(i, d)| Det::new(d, i))
            .collect();
        let second: Vec<Det> = inputs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.score > p.low && d.score < p.high)
            .map(|(i, d)| Det::new(d, i))
            .collect();

        let prev_order: Vec<u64> = self.tracked.iter().map(|t| t.internal).collect();
        let (unconfirmed, confirmed): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.tracked)
            .into_iter()
            .partition(|t| !t.activated);
        let mut pool = confirmed;
        joint(&mut pool, std::mem::take(&mut self.lost));
        for t in &mut pool {
            t.det = None;
            if t.state != State::Tracked {
                t.kf.mean[7] = 0.0;
            }
            t.kf.predict();
        }

        let mut activated: Vec<Track> = Vec::new();
        let mut refound: Vec<Track> = Vec::new();
        let mut lost_now: Vec<Track> = Vec::new();
        let mut removed_now: Vec<Track> = Vec::new();

        // Stage 1: high detections against tracked + lost, score-fused IoU.
        let refs: Vec<&Track> = pool.iter().collect();
        let mut cost = iou_cost(&refs, &high, true);
        let (m1, u_track, u_det) =
            linear_assignment(&mut cost, pool.len(), high.len(), p.match_thresh);
        let mut slots: Vec<Option<Track>> = pool.into_iter().map(Some).collect();
        for &(ti, di) in &m1 {
            let Some(mut t) = slots[ti].take() else {
                continue;
            };
            if t.state == State::Tracked {
                Self::update_track(&mut t, &high[di], frame);
                activated.push(t);
            } else {
                Self::reactivate(&mut t, &high[di], frame);
                refound.push(t);
            }
        }

        // Stage 2: low detections against the still-tracked leftovers, plain IoU at 0.5.
        let mut r_tracked: Vec<Track> = Vec::new();
        let mut still_lost: Vec<Track> = Vec::new();
        for i in u_track {
            if let Some(t) = slots[i].take() {
                if t.state == State::Tracked {
                    r_tracked.push(t)
                } else {
                    still_lost.push(t)
                }
            }
        }
        let refs: Vec<&Track> = r_tracked.iter().collect();
        let mut cost = iou_cost(&refs, &second, false);
        let (m2, u_track2, _) = linear_assignment(&mut cost, r_tracked.len(), second.len(), 0.5);
        let mut slots2: Vec<Option<Track>> = r_tracked.into_iter().map(Some).collect();
        for &(ti, di) in &m2 {
            if let Some(mut t) = slots2[ti].take() {
                Self::update_track(&mut t, &second[di], frame);
                activated.push(t);
            }
        }
        for i in u_track2 {
            if let Some(mut t) = slots2[i].take() {
                t.state = State::Lost;
                lost_now.push(t);
            }
        }

        // Unconfirmed tracks against the leftover high detections.
        let left: Vec<Det> = u_det.iter().map(|&i| high[i]).collect();
        let refs: Vec<&Track> = unconfirmed.iter().collect();
        let mut cost = iou_cost(&refs, &left, true);
        let (m3, u_unconf, u_left) =
            linear_assignment(&mut cost, unconfirmed.len(), left.len(), 0.7);
        let mut slots3: Vec<Option<Track>> = unconfirmed.into_iter().map(Some).collect();
        for &(ti, di) in &m3 {
            if let Some(mut t) = slots3[ti].take() {
                t.det = None;
                Self::update_track(&mut t, &left[di], frame);
                activated.push(t);
            }
        }
        for i in u_unconf {
            if let Some(mut t) = slots3[i].take() {
                t.state = State::Removed;
                removed_now.push(t);
            }
        }

        // New tracks from confident leftovers.
        for i in u_left {
            let d = left[i];
            if d.score < p.high + 0.1 {
                continue;
            }
            let t = Track {
                internal: self.next_internal,
                id: self.next_id,
                kf: XyahKalman::initiate(d.xyah()),
                state: State::Tracked,
                activated: frame == 1,
                frame,
                start: frame,
                tracklet_len: 0,
                score: d.score,
                class_id: d.class_id,
                det: Some(d.index),
            };
            self.next_internal += 1;
            self.next_id += 1;
            activated.push(t);
        }

        // Age out lost tracks (they stay one more frame in `lost`, as in the reference).
        for t in &mut still_lost {
            if frame - t.frame > p.max_age {
                t.state = State::Removed;
                removed_now.push(t.clone());
            }
        }

        // The reference keeps last frame's tracked order, then appends new and re-found tracks.
        let mut tracked: Vec<Track> = Vec::new();
        joint(&mut tracked, activated);
        joint(&mut tracked, refound);
        tracked.sort_by_key(|t| match prev_order.iter().position(|&i| i == t.internal) {
            Some(p) => (0, p),
            None => (1, 0),
        });
        let mut lost: Vec<Track> = still_lost
            .into_iter()
            .filter(|t| !tracked.iter().any(|x| x.internal == t.internal))
            .collect();
        lost.extend(lost_now);
        lost.retain(|t| !self.removed_prev.contains(&t.internal));
        self.removed_prev = removed_now.iter().map(|t| t.internal).collect();

        // Remove duplicates between tracked and lost: keep the longer-lived one.
        let mut drop_a = vec![false; tracked.len()];
        let mut drop_b = vec![false; lost.len()];
        for (i, a) in tracked.iter().enumerate() {
            for (j, b) in lost.iter().enumerate() {
                if 1.0 - iou(&a.kf.xyxy(), &b.kf.xyxy()) < 0.15 {
                    if a.frame - a.start > b.frame - b.start {
                        drop_b[j] = true;
                    } else {
                        drop_a[i] = true;
                    }
                }
            }
        }
        let mut ia = drop_a.into_iter();
        tracked.retain(|_| !ia.next().unwrap_or(false));
        let mut ib = drop_b.into_iter();
        lost.retain(|_| !ib.next().unwrap_or(false));

        let out = tracked
            .iter()
            .filter(|t| t.activated)
            .map(|t| TrackOutput {
                track_id: t.id,
                bbox: t.kf.xyxy(),
                score: t.score,
                class_id: t.class_id,
                det: t.det,
            })
            .collect();
        self.tracked = tracked;
        self.lost = lost;
        out
    }

    fn extrapolate(&self, fraction: f64) -> Vec<TrackOutput> {
        self.tracked
            .iter()
            .filter(|t| t.activated && t.state == State::Tracked)
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
        self.tracked.len() + self.lost.len()
    }
}
