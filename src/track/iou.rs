//! The simplest tracker (Bochinski et al., AVSS 2017, without its length filter): each track takes
//! the unclaimed detection of the same class that overlaps its last box the most, best scores
//! first, if the IoU reaches `iou`; unmatched detections start tracks; a track unmatched for more
//! than `max_age` frames ends. No motion model: cheap and good when the detector runs every frame.

use super::{TrackOutput, Tracker, TrackerAlgorithm, TrackerInput, iou, unit};

/// `kind: iou`: greedy IoU matching, no motion model.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IouSpec {
    /// Minimum IoU to continue a track. Default 0.5.
    #[serde(default)]
    pub iou: Option<f64>,
    /// Frames a track survives unmatched. Default 5.
    #[serde(default)]
    pub max_age: Option<u64>,
}

impl TrackerAlgorithm for IouTracker {
    type Spec = IouSpec;
    type Params = IouParams;

    fn resolve(spec: &IouSpec, problems: &mut Vec<String>) -> IouParams {
        let d = IouParams::default();
        IouParams {
            iou: unit(problems, "iou", spec.iou, d.iou),
            max_age: spec.max_age.unwrap_or(d.max_age),
        }
    }

    fn create(params: IouParams) -> Self {
        Self::new(params)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct IouParams {
    pub iou: f64,
    pub max_age: u64,
}

impl Default for IouParams {
    fn default() -> Self {
        Self {
            iou: 0.5,
            max_age: 5,
        }
    }
}

#[derive(Debug)]
struct Track {
    id: u64,
    bbox: [f64; 4],
    score: f64,
    class_id: u32,
    missed: u64,
}

#[derive(Debug)]
pub struct IouTracker {
    p: IouParams,
    tracks: Vec<Track>,
    next_id: u64,
}

impl IouTracker {
    pub fn new(p: IouParams) -> Self {
        Self {
            p,
            tracks: Vec::new(),
            next_id: 1,
        }
    }
}

impl Tracker for IouTracker {
    fn update(&mut self, inputs: &[TrackerInput]) -> Vec<TrackOutput> {
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by(|&a, &b| inputs[b].score.total_cmp(&inputs[a].score));
        let mut claimed = vec![false; self.tracks.len()];
        let mut out = Vec::new();
        for d in order {
            let det = &inputs[d];
            let best = self
                .tracks
                .iter()
                .enumerate()
                .filter(|(i, t)| !claimed[*i] && t.class_id == det.class_id)
                .map(|(i, t)| (i, iou(&t.bbox, &det.bbox)))
                .filter(|(_, v)| *v >= self.p.iou)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let index = match best {
                Some((i, _)) => i,
                None => {
                    self.tracks.push(Track {
                        id: self.next_id,
                        bbox: det.bbox,
                        score: det.score,
                        class_id: det.class_id,
                        missed: 0,
                    });
                    claimed.push(false);
                    self.next_id += 1;
                    self.tracks.len() - 1
                }
            };
            claimed[index] = true;
            let t = &mut self.tracks[index];
            t.bbox = det.bbox;
            t.score = det.score;
            t.missed = 0;
            out.push(TrackOutput {
                track_id: t.id,
                bbox: det.bbox,
                score: det.score,
                class_id: det.class_id,
                det: Some(d),
            });
        }
        for (i, t) in self.tracks.iter_mut().enumerate() {
            if !claimed.get(i).copied().unwrap_or(false) {
                t.missed += 1;
            }
        }
        let max_age = self.p.max_age;
        self.tracks.retain(|t| t.missed <= max_age);
        out
    }

    fn extrapolate(&self, _fraction: f64) -> Vec<TrackOutput> {
        self.tracks
            .iter()
            .filter(|t| t.missed == 0)
            .map(|t| TrackOutput {
                track_id: t.id,
                bbox: t.bbox,
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
