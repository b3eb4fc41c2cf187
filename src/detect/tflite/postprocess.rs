//! `TFLite_Detection_PostProcess` (`detection_postprocess.cc`): box encodings decoded against
//! the anchors (center-size coding with the options' scales), then the fast class-agnostic NMS
//! over each anchor's best classes. Outputs, in normalized `[ymin, xmin, ymax, xmax]`, are
//! padded to `max_detections` as the op's four outputs are.

use super::TfliteError;
use super::schema::PostProcessOptions;

/// A box in normalized image coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Corners {
    pub ymin: f32,
    pub xmin: f32,
    pub ymax: f32,
    pub xmax: f32,
}

/// One kept detection: its box, class (0-based after the background class) and score.
#[derive(Debug, Clone, PartialEq)]
pub struct PostDetection {
    pub corners: Corners,
    pub class: usize,
    pub score: f32,
}

/// Decode `encodings` (`[anchors, ≥4]`: y, x, h, w) against `anchors` (`[anchors, 4]`: y, x, h, w).
pub fn decode_boxes(
    encodings: &[f32],
    coords: usize,
    anchors: &[f32],
    o: &PostProcessOptions,
) -> Vec<Corners> {
    let [sy, sx, sh, sw] = o.scale.map(|s| s as f64);
    encodings
        .chunks_exact(coords)
        .zip(anchors.chunks_exact(4))
        .map(|(e, a)| {
            let [ay, ax, ah, aw] = [a[0], a[1], a[2], a[3]].map(|v| v as f64);
            let yc = (e[0] as f64 / sy * ah + ay) as f32;
            let xc = (e[1] as f64 / sx * aw + ax) as f32;
            let half_h = (0.5 * (e[2] as f64 / sh).exp() * ah) as f32;
            let half_w = (0.5 * (e[3] as f64 / sw).exp() * aw) as f32;
            Corners {
                ymin: yc - half_h,
                xmin: xc - half_w,
                ymax: yc + half_h,
                xmax: xc + half_w,
            }
        })
        .collect()
}

fn iou(a: &Corners, b: &Corners) -> f32 {
    let area_a = (a.ymax - a.ymin) * (a.xmax - a.xmin);
    let area_b = (b.ymax - b.ymin) * (b.xmax - b.xmin);
    if area_a <= 0.0 || area_b <= 0.0 {
        return 0.0;
    }
    let ih = (a.ymax.min(b.ymax) - a.ymin.max(b.ymin)).max(0.0);
    let iw = (a.xmax.min(b.xmax) - a.xmin.max(b.xmin)).max(0.0);
    let inter = ih * iw;
    inter / (area_a + area_b - inter)
}

/// Greedy NMS over `scores` (one per box): indices kept, best first, at most `max`
/// (`NonMaxSuppressionSingleClassHelper`: a stable sort, `>=` the score threshold, `>` the IoU one).
fn nms_single_class(
    boxes: &[Corners],
    scores: &[f32],
    max: usize,
    o: &PostProcessOptions,
) -> Vec<usize> {
    let mut kept: Vec<usize> = (0..scores.len())
        .filter(|&i| scores[i] >= o.nms_score_threshold)
        .collect();
    kept.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut active = vec![true; kept.len()];
    let mut selected = Vec::new();
    for i in 0..kept.len() {
        if selected.len() >= max {
            break;
        }
        if !active[i] {
            continue;
        }
        selected.push(kept[i]);
        for j in i + 1..kept.len() {
            if active[j] && iou(&boxes[kept[i]], &boxes[kept[j]]) > o.nms_iou_threshold {
                active[j] = false;
            }
        }
    }
    selected
}

/// The best `k` classes of one anchor, best first, earliest index on ties.
fn top_classes(scores: &[f32], k: usize) -> Vec<usize> {
    if k == 1 {
        // the first of the highest (`std::max_element`), without sorting 90 classes per anchor
        let best = scores
            .iter()
            .enumerate()
            .fold(0, |b, (i, s)| if *s > scores[b] { i } else { b });
        return vec![best];
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// The fast (class-agnostic) NMS path: each anchor scored by its best class.
pub fn detect(
    boxes: &[Corners],
    scores: &[f32],
    o: &PostProcessOptions,
) -> Result<Vec<PostDetection>, TfliteError> {
    if o.use_regular_nms {
        return Err(TfliteError::Unsupported(
            "TFLite_Detection_PostProcess with use_regular_nms: true (vigil runs the fast NMS the exported SSD models use)".into(),
        ));
    }
    let with_background = scores.len() / boxes.len().max(1);
    if with_background < o.num_classes || boxes.is_empty() {
        return Err(TfliteError::Format(format!(
            "TFLite_Detection_PostProcess: {} scores for {} boxes and {} classes",
            scores.len(),
            boxes.len(),
            o.num_classes
        )));
    }
    let offset = with_background - o.num_classes;
    let per_anchor = o.max_classes_per_detection.min(o.num_classes);
    let classes: Vec<Vec<usize>> = scores
        .chunks_exact(with_background)
        .map(|row| top_classes(&row[offset..], per_anchor))
        .collect();
    let best: Vec<f32> = scores
        .chunks_exact(with_background)
        .zip(&classes)
        .map(|(row, c)| row[offset + c[0]])
        .collect();
    let selected = nms_single_class(boxes, &best, o.max_detections, o);
    let mut out = Vec::new();
    for i in selected {
        for &c in &classes[i] {
            if out.len() < o.max_detections {
                out.push(PostDetection {
                    corners: boxes[i],
                    class: c,
                    score: scores[i * with_background + offset + c],
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> PostProcessOptions {
        PostProcessOptions {
            max_detections: 10,
            max_classes_per_detection: 1,
            detections_per_class: 100,
            use_regular_nms: false,
            nms_score_threshold: 0.1,
            nms_iou_threshold: 0.5,
            num_classes: 2,
            scale: [10.0, 10.0, 5.0, 5.0],
        }
    }

    #[test]
    fn zero_encoding_gives_the_anchor() {
        let b = decode_boxes(&[0.0; 4], 4, &[0.5, 0.5, 0.2, 0.4], &opts());
        let c = b[0];
        assert!(
            (c.ymin - 0.4).abs() < 1e-6 && (c.xmax - 0.7).abs() < 1e-6,
            "{c:?}"
        );
    }

    #[test]
    fn overlapping_boxes_of_any_class_are_suppressed() {
        let boxes = decode_boxes(
            &[0.0; 12],
            4,
            &[0.5, 0.5, 0.2, 0.2, 0.5, 0.51, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1],
            &opts(),
        );
        // background, class 0, class 1 per anchor
        let scores = [0.0, 0.9, 0.1, 0.0, 0.2, 0.8, 0.0, 0.05, 0.3];
        let d = detect(&boxes, &scores, &opts()).unwrap();
        assert_eq!(
            d.iter().map(|d| (d.class, d.score)).collect::<Vec<_>>(),
            vec![(0, 0.9), (1, 0.3)]
        );
    }
}
