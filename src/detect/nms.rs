//! Greedy non-maximum suppression, per class or across classes. Deterministic: ties in score keep
//! the order the head produced them in.

use super::head::Candidate;

/// NMS settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NmsParams {
    /// Remove a box overlapping a kept one by more than this IoU.
    pub iou: f32,
    /// Only boxes of the same class suppress each other.
    pub class_aware: bool,
    /// Keep at most this many, best first.
    pub max_detections: usize,
}

/// Keep the best boxes; returns them sorted by descending score.
pub fn nms(mut candidates: Vec<Candidate>, p: &NmsParams) -> Vec<Candidate> {
    // Stable sort: equal scores keep their decode order, so the result never depends on luck.
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for c in candidates {
        if kept.len() >= p.max_detections {
            break;
        }
        let suppressed = kept.iter().any(|k| {
            (!p.class_aware || k.class_id == c.class_id)
                && k.box_in_model.0.iou(&c.box_in_model.0) > p.iou
        });
        if !suppressed {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{BoxInModel, Xyxy};

    fn cand(x: f32, class_id: u32, score: f32) -> Candidate {
        Candidate {
            box_in_model: BoxInModel(Xyxy {
                x1: x,
                y1: 0.0,
                x2: x + 10.0,
                y2: 10.0,
            }),
            class_id,
            score,
            mask: None,
        }
    }

    #[test]
    fn suppresses_overlaps_of_same_class_only() {
        let p = NmsParams {
            iou: 0.45,
            class_aware: true,
            max_detections: 10,
        };
        let out = nms(
            vec![
                cand(0.0, 0, 0.5),
                cand(1.0, 0, 0.9),
                cand(1.0, 1, 0.8),
                cand(50.0, 0, 0.3),
            ],
            &p,
        );
        let got: Vec<(u32, f32)> = out.iter().map(|c| (c.class_id, c.score)).collect();
        assert_eq!(got, [(0, 0.9), (1, 0.8), (0, 0.3)]);
        let p = NmsParams {
            class_aware: false,
            ..p
        };
        let out = nms(
            vec![cand(0.0, 0, 0.5), cand(1.0, 0, 0.9), cand(1.0, 1, 0.8)],
            &p,
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn caps_the_count() {
        let p = NmsParams {
            iou: 0.45,
            class_aware: true,
            max_detections: 2,
        };
        let out = nms(
            (0..5)
                .map(|i| cand(i as f32 * 100.0, 0, i as f32 / 10.0))
                .collect(),
            &p,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.4);
    }
}
