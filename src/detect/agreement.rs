//! How closely two runs of a detector agree on one frame: each detection of one run paired with
//! the same-class detection of the other that overlaps it most. Used to compare a GPU run with the
//! CPU run, and f16 with f32 (`vigil-gpu-check`).

use crate::frame::Detection;

/// The agreement of two detection lists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    /// Detections paired (same class, best IoU).
    pub paired: usize,
    /// The lowest IoU of a pair (1 with no pairs).
    pub min_iou: f64,
    /// The largest score difference of a pair.
    pub max_score_diff: f32,
    /// Detections of either list without a partner, scoring above `margin` over the threshold:
    /// a box just at the threshold may fall either side of it and is not counted.
    pub unpaired: usize,
}

impl Agreement {
    /// No pairs, nothing unpaired.
    pub const EMPTY: Self = Self {
        paired: 0,
        min_iou: 1.0,
        max_score_diff: 0.0,
        unpaired: 0,
    };

    /// `a` and `b` paired greedily, best IoU first; unpaired boxes count when they score above
    /// `threshold + margin`.
    pub fn of(a: &[Detection], b: &[Detection], threshold: f32, margin: f32) -> Self {
        let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
        for (i, da) in a.iter().enumerate() {
            for (j, db) in b.iter().enumerate() {
                let o = f64::from(da.box_in_frame.0.iou(&db.box_in_frame.0));
                if da.class_id == db.class_id && o > 0.5 {
                    candidates.push((o, i, j));
                }
            }
        }
        candidates.sort_by(|x, y| y.0.total_cmp(&x.0));
        let (mut used_a, mut used_b) = (vec![false; a.len()], vec![false; b.len()]);
        let mut out = Self::EMPTY;
        for (o, i, j) in candidates {
            if used_a[i] || used_b[j] {
                continue;
            }
            used_a[i] = true;
            used_b[j] = true;
            out.paired += 1;
            out.min_iou = out.min_iou.min(o);
            out.max_score_diff = out.max_score_diff.max((a[i].score - b[j].score).abs());
        }
        let loud = |d: &Detection| d.score > threshold + margin;
        out.unpaired = a
            .iter()
            .zip(&used_a)
            .filter(|(d, u)| !**u && loud(d))
            .count()
            + b.iter()
                .zip(&used_b)
                .filter(|(d, u)| !**u && loud(d))
                .count();
        out
    }

    /// Both agreements together (the worst of each measure).
    pub fn merge(self, o: Self) -> Self {
        Self {
            paired: self.paired + o.paired,
            min_iou: self.min_iou.min(o.min_iou),
            max_score_diff: self.max_score_diff.max(o.max_score_diff),
            unpaired: self.unpaired + o.unpaired,
        }
    }

    /// Every box paired within `min_iou` and `max_score_diff`.
    pub fn within(&self, min_iou: f64, max_score_diff: f32) -> bool {
        self.unpaired == 0 && self.min_iou >= min_iou && self.max_score_diff <= max_score_diff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{BoxInFrame, Xyxy};

    fn det(class_id: u32, score: f32, x: f32) -> Detection {
        Detection {
            class_id,
            score,
            box_in_frame: BoxInFrame(Xyxy {
                x1: x,
                y1: 0.0,
                x2: x + 10.0,
                y2: 10.0,
            }),
            track_id: None,
            mask: None,
        }
    }

    #[test]
    fn pairs_same_class_best_overlap_and_counts_the_rest() {
        let a = [det(0, 0.9, 0.0), det(1, 0.8, 100.0), det(0, 0.26, 300.0)];
        let b = [det(0, 0.9005, 0.1), det(1, 0.7, 200.0)];
        let g = Agreement::of(&a, &b, 0.25, 0.02);
        assert_eq!(g.paired, 1);
        assert!(g.min_iou > 0.97 && g.min_iou < 1.0);
        assert!((g.max_score_diff - 0.0005).abs() < 1e-6);
        // class 1 at 100 and at 200 do not overlap: both unpaired; the 0.26 box is borderline
        assert_eq!(g.unpaired, 2);
        assert!(!g.within(0.9, 1e-3));
        assert!(Agreement::of(&a[..1], &b[..1], 0.25, 0.02).within(0.97, 1e-3));
    }
}
