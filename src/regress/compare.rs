//! Golden vs new metadata, frame by frame: detections matched by class and IoU (optimal
//! assignment), score drift on the matches, missing and extra detections; tracks scored with the
//! MOT metrics taking the golden tracks as truth.

use crate::frame::Xyxy;
use crate::output::record::{Record, RecordDetection};
use crate::regress::mot::{MotMetrics, MotRow, evaluate};
use crate::track::assign::max_valid_min_cost;

pub use crate::config::Tolerances;

/// Differences in one frame.
#[derive(Debug, Clone, Default)]
pub struct FrameDiff {
    pub seq: u64,
    pub golden: Vec<RecordDetection>,
    pub new: Vec<RecordDetection>,
    pub matched: usize,
    pub missing: Vec<RecordDetection>,
    pub extra: Vec<RecordDetection>,
    /// `(class, golden score, new score)` of matches beyond the score tolerance.
    pub score_violations: Vec<(String, f32, f32)>,
    /// `(class, golden box, new box)` of matches whose corners moved beyond the box tolerance.
    pub box_moves: Vec<(String, [f32; 4], [f32; 4])>,
    pub max_score_drift: f32,
}

impl FrameDiff {
    /// How bad this frame is, for picking the frames to show.
    pub fn badness(&self) -> usize {
        self.missing.len() + self.extra.len() + self.score_violations.len() + self.box_moves.len()
    }
}

/// Differences for one source.
#[derive(Debug, Clone)]
pub struct SourceDiff {
    pub source: String,
    pub frames_golden: usize,
    pub frames_new: usize,
    pub frames: Vec<FrameDiff>,
    pub matched: u64,
    pub missing: u64,
    pub extra: u64,
    pub score_violations: u64,
    pub box_moves: u64,
    pub max_score_drift: f32,
    pub mean_score_drift: f32,
    /// Tracks vs golden tracks, when both have track IDs.
    pub tracks: Option<MotMetrics>,
    pub failures: Vec<String>,
}

impl SourceDiff {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

fn xyxy(b: &[f32; 4]) -> Xyxy {
    Xyxy {
        x1: b[0],
        y1: b[1],
        x2: b[2],
        y2: b[3],
    }
}

fn mot_rows(records: &[Record]) -> Vec<MotRow> {
    records
        .iter()
        .flat_map(|r| {
            r.detections.iter().filter_map(move |d| {
                d.track_id.map(|id| MotRow {
                    frame: r.seq as i64,
                    id: id as i64,
                    bbox: xyxy(&d.bbox),
                })
            })
        })
        .collect()
}

/// Compare `new` with `golden` (records of one source) under `tol`.
#[allow(
    clippy::too_many_lines,
    reason = "per-frame matching and its drift statistics in one pass"
)]
pub fn compare(source: &str, golden: &[Record], new: &[Record], tol: &Tolerances) -> SourceDiff {
    let mut d = SourceDiff {
        source: source.to_string(),
        frames_golden: golden.len(),
        frames_new: new.len(),
        frames: Vec::new(),
        matched: 0,
        missing: 0,
        extra: 0,
        score_violations: 0,
        box_moves: 0,
        max_score_drift: 0.0,
        mean_score_drift: 0.0,
        tracks: None,
        failures: Vec::new(),
    };
    let mut drift_sum = 0f64;
    let n = golden.len().max(new.len());
    for i in 0..n {
        let g = golden
            .get(i)
            .map(|r| r.detections.clone())
            .unwrap_or_default();
        let w = new.get(i).map(|r| r.detections.clone()).unwrap_or_default();
        let seq = golden.get(i).or(new.get(i)).map_or(i as u64, |r| r.seq);
        let costs: Vec<Option<f64>> = g
            .iter()
            .flat_map(|a| w.iter().map(move |b| (a, b)))
            .map(|(a, b)| {
                let iou = xyxy(&a.bbox).iou(&xyxy(&b.bbox));
                (a.class_id == b.class_id && iou >= tol.iou).then_some(1.0 - iou as f64)
            })
            .collect();
        let pairs = max_valid_min_cost(&costs, g.len(), w.len());
        let mut f = FrameDiff {
            seq,
            golden: g.clone(),
            new: w.clone(),
            matched: pairs.len(),
            ..Default::default()
        };
        for &(a, b) in &pairs {
            let drift = (g[a].score - w[b].score).abs();
            drift_sum += drift as f64;
            f.max_score_drift = f.max_score_drift.max(drift);
            if drift > tol.score {
                f.score_violations
                    .push((g[a].class.clone(), g[a].score, w[b].score));
            }
            let moved = g[a]
                .bbox
                .iter()
                .zip(&w[b].bbox)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            if moved > tol.box_px {
                f.box_moves.push((g[a].class.clone(), g[a].bbox, w[b].bbox));
            }
        }
        f.missing = (0..g.len())
            .filter(|a| !pairs.iter().any(|p| p.0 == *a))
            .map(|a| g[a].clone())
            .collect();
        f.extra = (0..w.len())
            .filter(|b| !pairs.iter().any(|p| p.1 == *b))
            .map(|b| w[b].clone())
            .collect();
        d.matched += f.matched as u64;
        d.missing += f.missing.len() as u64;
        d.extra += f.extra.len() as u64;
        d.score_violations += f.score_violations.len() as u64;
        d.box_moves += f.box_moves.len() as u64;
        d.max_score_drift = d.max_score_drift.max(f.max_score_drift);
        d.frames.push(f);
    }
    d.mean_score_drift = if d.matched > 0 {
        (drift_sum / d.matched as f64) as f32
    } else {
        0.0
    };
    let (gt, pred) = (mot_rows(golden), mot_rows(new));
    if !gt.is_empty() || !pred.is_empty() {
        d.tracks = Some(evaluate(&gt, &pred, 1.0 - tol.iou as f64));
    }

    if d.frames_golden != d.frames_new {
        d.failures.push(format!(
            "{} frames, the golden has {}",
            d.frames_new, d.frames_golden
        ));
    }
    if d.missing > tol.max_missing {
        d.failures.push(format!(
            "{} golden detections missing (allowed {})",
            d.missing, tol.max_missing
        ));
    }
    if d.extra > tol.max_extra {
        d.failures.push(format!(
            "{} extra detections (allowed {})",
            d.extra, tol.max_extra
        ));
    }
    if d.score_violations > 0 {
        d.failures.push(format!(
            "{} scores moved by more than {}",
            d.score_violations, tol.score
        ));
    }
    if d.box_moves > 0 {
        d.failures.push(format!(
            "{} boxes moved by more than {} px",
            d.box_moves, tol.box_px
        ));
    }
    if let Some(t) = &d.tracks
        && t.idf1 < tol.min_idf1
    {
        d.failures.push(format!(
            "track IDF1 {:.4} below {} ({} ID switches)",
            t.idf1, tol.min_idf1, t.num_switches
        ));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, dets: &[(u32, f32, [f32; 4], Option<u64>)]) -> Record {
        Record {
            schema: 1,
            pipeline: "p".into(),
            source: "s".into(),
            seq,
            pts_ns: None,
            captured_at: None,
            latency_ms: None,
            detections: dets
                .iter()
                .map(|&(c, s, b, t)| RecordDetection {
                    class: format!("c{c}"),
                    class_id: c,
                    score: s,
                    bbox: b,
                    track_id: t,
                    mask: None,
                })
                .collect(),
            events: Vec::new(),
            node: None,
        }
    }

    #[test]
    fn identical_runs_pass() {
        let g = vec![
            rec(0, &[(0, 0.9, [0.0, 0.0, 10.0, 10.0], Some(1))]),
            rec(1, &[(0, 0.9, [1.0, 0.0, 11.0, 10.0], Some(1))]),
        ];
        let d = compare("s", &g, &g, &Tolerances::default());
        assert!(d.passed(), "{:?}", d.failures);
        assert_eq!((d.matched, d.missing, d.extra), (2, 0, 0));
    }

    #[test]
    fn moved_box_is_missing_plus_extra_in_its_frame_only() {
        let g = vec![
            rec(0, &[(0, 0.9, [0.0, 0.0, 10.0, 10.0], None)]),
            rec(1, &[(0, 0.9, [0.0, 0.0, 10.0, 10.0], None)]),
        ];
        let mut n = g.clone();
        n[1].detections[0].bbox = [20.0, 0.0, 30.0, 10.0];
        let d = compare("s", &g, &n, &Tolerances::default());
        assert!(!d.passed());
        let bad: Vec<u64> = d
            .frames
            .iter()
            .filter(|f| f.badness() > 0)
            .map(|f| f.seq)
            .collect();
        assert_eq!(bad, [1]);
    }

    #[test]
    fn score_drift_beyond_tolerance_fails() {
        let g = vec![rec(0, &[(0, 0.9, [0.0, 0.0, 10.0, 10.0], None)])];
        let mut n = g.clone();
        n[0].detections[0].score = 0.8;
        let d = compare("s", &g, &n, &Tolerances::default());
        assert_eq!(d.score_violations, 1);
        assert!(!d.passed());
    }
}
