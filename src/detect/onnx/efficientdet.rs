//! EfficientDet's raw heads (`decoder: efficientdet`), as the network exports without its
//! post-processing (effdet's and the official AutoML exports: the NMS part is a TorchScript loop
//! that does not export): per pyramid level a class map `[1, A·C, H, W]` (logits) and a box map
//! `[1, A·4, H, W]` (ty, tx, th, tw), A = 9 anchors per cell. Anchors as the paper's
//! implementation generates them: 3 octave scales × aspect ratios (1, 1), (1.4, 0.7), (0.7, 1.4),
//! size `4 · stride · 2^(octave/3)`, centred on each cell; levels from the map sizes.

use candle_core::Tensor;

use super::decode::DecodeParams;
use crate::detect::head::Candidate;
use crate::frame::{BoxInModel, Xyxy};

/// Anchors per cell: 3 octave scales × 3 aspect ratios.
const ANCHORS: usize = 9;
const ASPECTS: [(f64, f64); 3] = [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)];
const ANCHOR_SCALE: f64 = 4.0;

/// The levels' `(class map, box map)` output indices, largest map first; `None` when the
/// outputs are not EfficientDet's heads for `classes` classes.
fn levels(shapes: &[Vec<usize>], classes: usize) -> Option<Vec<(usize, usize)>> {
    let maps: Vec<(usize, &Vec<usize>)> = shapes
        .iter()
        .enumerate()
        .filter(|(_, s)| s.len() == 4)
        .collect();
    if maps.len() != shapes.len() || maps.is_empty() || !maps.len().is_multiple_of(2) {
        return None;
    }
    // class maps first where the channel counts cannot tell them apart (C = 4), as exported
    let half = maps.len() / 2;
    let (mut cls, mut boxes): (Vec<_>, Vec<_>) = if ANCHORS * classes == ANCHORS * 4 {
        (maps[..half].to_vec(), maps[half..].to_vec())
    } else {
        maps.iter().partition(|(_, s)| s[1] == ANCHORS * classes)
    };
    if cls.len() != half || boxes.iter().any(|(_, s)| s[1] != ANCHORS * 4) {
        return None;
    }
    cls.sort_by_key(|(_, s)| std::cmp::Reverse(s[2] * s[3]));
    boxes.sort_by_key(|(_, s)| std::cmp::Reverse(s[2] * s[3]));
    cls.iter()
        .zip(&boxes)
        .map(|((c, cs), (b, bs))| (cs[2..] == bs[2..]).then_some((*c, *b)))
        .collect()
}

/// Whether the outputs fit (at load).
pub fn check(shapes: &[Vec<usize>], classes: usize) -> bool {
    levels(shapes, classes).is_some()
}

/// Candidates of image `b` scoring ≥ `threshold`, in model-input pixels.
pub fn decode(
    outputs: &[Tensor],
    b: usize,
    threshold: f32,
    p: &DecodeParams,
) -> candle_core::Result<Vec<Candidate>> {
    let shapes: Vec<Vec<usize>> = outputs.iter().map(|t| t.dims().to_vec()).collect();
    let Some(levels) = levels(&shapes, p.classes) else {
        candle_core::bail!(
            "decoder efficientdet: outputs {shapes:?} are not class and box maps for {} classes",
            p.classes
        );
    };
    // sigmoid(x) ≥ t ⇔ x ≥ logit(t): the 1e6 class logits are compared, not transformed
    let min_logit = crate::detect::head::logit(threshold);
    let mut out = Vec::new();
    for (ci, bi) in levels {
        let (_, _, h, w) = outputs[ci].dims4()?;
        let stride = (p.input.1 / h.max(1), p.input.0 / w.max(1));
        let cls: Vec<f32> = outputs[ci].get(b)?.flatten_all()?.to_vec1()?;
        let reg: Vec<f32> = outputs[bi].get(b)?.flatten_all()?.to_vec1()?;
        let plane = h * w;
        for (k, &logit) in cls.iter().enumerate() {
            if logit < min_logit {
                continue;
            }
            let (channel, cell) = (k / plane, k % plane);
            let (anchor, class_id) = (channel / p.classes, channel % p.classes);
            let code = |j: usize| reg[(anchor * 4 + j) * plane + cell];
            let (ya1, xa1, ya2, xa2) = anchor_box(anchor, cell / w, cell % w, stride);
            out.push(Candidate {
                box_in_model: decode_box(
                    [code(0), code(1), code(2), code(3)],
                    [ya1, xa1, ya2, xa2],
                ),
                class_id: class_id as u32,
                score: crate::detect::head::sigmoid(logit),
                mask: None,
            });
        }
    }
    Ok(out)
}

/// The anchor `(y1, x1, y2, x2)` of index `anchor` (octave-major) at cell `(row, col)`, computed
/// in f64 and stored in f32 as effdet's anchor table is.
fn anchor_box(
    anchor: usize,
    row: usize,
    col: usize,
    stride: (usize, usize),
) -> (f32, f32, f32, f32) {
    let (octave, aspect) = (anchor / ASPECTS.len(), ASPECTS[anchor % ASPECTS.len()]);
    let (sy, sx) = (stride.0 as f64, stride.1 as f64);
    let scale = 2f64.powf(octave as f64 / 3.0);
    let half_x = ANCHOR_SCALE * sx * scale * aspect.0 / 2.0;
    let half_y = ANCHOR_SCALE * sy * scale * aspect.1 / 2.0;
    let (cy, cx) = (sy / 2.0 + row as f64 * sy, sx / 2.0 + col as f64 * sx);
    (
        (cy - half_y) as f32,
        (cx - half_x) as f32,
        (cy + half_y) as f32,
        (cx + half_x) as f32,
    )
}

/// effdet's `decode_box_outputs`: centre offsets in anchor sizes, log sizes; in f32.
fn decode_box([ty, tx, th, tw]: [f32; 4], [y1, x1, y2, x2]: [f32; 4]) -> BoxInModel {
    let (yc_a, xc_a) = ((y1 + y2) / 2.0, (x1 + x2) / 2.0);
    let (ha, wa) = (y2 - y1, x2 - x1);
    let (w, h) = (tw.exp() * wa, th.exp() * ha);
    let (yc, xc) = (ty * ha + yc_a, tx * wa + xc_a);
    BoxInModel(Xyxy {
        x1: xc - w / 2.0,
        y1: yc - h / 2.0,
        x2: xc + w / 2.0,
        y2: yc + h / 2.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// effdet's table for a 256² input: the first anchor of P3 (stride 8, octave 0, 1:1) is
    /// 32 px wide around (4, 4); anchor 4 is octave 1 (2^⅓) at aspect 1.4 : 0.7.
    #[test]
    fn anchors_follow_the_effdet_table() {
        assert_eq!(anchor_box(0, 0, 0, (8, 8)), (-12.0, -12.0, 20.0, 20.0));
        let (y1, x1, y2, x2) = anchor_box(4, 1, 2, (8, 8));
        let s = 32.0 * 2f64.powf(1.0 / 3.0);
        assert!(
            ((x2 - x1) as f64 - s * 1.4).abs() < 1e-4 && ((y2 - y1) as f64 - s * 0.7).abs() < 1e-4
        );
        assert!(((x1 + x2) / 2.0 - 20.0).abs() < 1e-5 && ((y1 + y2) / 2.0 - 12.0).abs() < 1e-5);
    }

    #[test]
    fn outputs_pair_by_channels_and_size() {
        let s = |c, h| vec![1, c, h, h];
        let shapes = [s(810, 32), s(810, 16), s(36, 32), s(36, 16)];
        assert_eq!(levels(&shapes, 90), Some(vec![(0, 2), (1, 3)]));
        assert!(levels(&shapes[..3], 90).is_none());
        assert!(levels(&shapes, 80).is_none());
    }
}
