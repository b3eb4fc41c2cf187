//! CenterNet's heads (`decoder: centernet`, "Objects as Points"): class heatmaps `hm`
//! `[1, C, H, W]` (logits), box sizes `wh` `[1, 2, H, W]` and sub-pixel offsets `reg`
//! `[1, 2, H, W]`, in that output order, as the reference code's networks export (decoding is
//! outside them). A detection is a heatmap peak (not below any of its 8 neighbours in its class),
//! the best [`MAX_PEAKS`] of them as the reference `ctdet_decode` keeps; its box is centred on the
//! cell plus offset, `wh` cells wide (a negative size counts as 0), in input pixels at the map's
//! stride.

use candle_core::Tensor;

use super::decode::DecodeParams;
use crate::detect::head::Candidate;
use crate::frame::{BoxInModel, Xyxy};

/// Peaks kept per image (the reference's K).
pub const MAX_PEAKS: usize = 100;

/// Whether the outputs fit (at load): `hm` with `classes` channels, then two 2-channel maps of
/// the same size.
pub fn check(shapes: &[Vec<usize>], classes: usize) -> bool {
    match shapes {
        [hm, wh, reg] => {
            hm.len() == 4
                && hm[1] == classes
                && [wh, reg]
                    .iter()
                    .all(|s| s.len() == 4 && s[1] == 2 && s[2..] == hm[2..])
        }
        _ => false,
    }
}

/// The best [`MAX_PEAKS`] peaks of image `b` scoring ≥ `threshold`, in model-input pixels.
pub fn decode(
    outputs: &[Tensor],
    b: usize,
    threshold: f32,
    p: &DecodeParams,
) -> candle_core::Result<Vec<Candidate>> {
    let [hm, wh, reg] = outputs else {
        candle_core::bail!(
            "decoder centernet: {} outputs, expected hm, wh and reg",
            outputs.len()
        );
    };
    let (_, classes, h, w) = hm.dims4()?;
    let stride = (p.input.0 as f32 / w as f32, p.input.1 as f32 / h as f32);
    let heat: Vec<f32> = hm.get(b)?.flatten_all()?.to_vec1()?;
    let size: Vec<f32> = wh.get(b)?.flatten_all()?.to_vec1()?;
    let offset: Vec<f32> = reg.get(b)?.flatten_all()?.to_vec1()?;
    // sigmoid(x) ≥ t ⇔ x ≥ logit(t); peaks are compared on logits (sigmoid is monotonic)
    let min_logit = crate::detect::head::logit(threshold);
    let plane = h * w;
    let mut peaks: Vec<(f32, usize, usize)> = Vec::new();
    for c in 0..classes {
        let map = &heat[c * plane..(c + 1) * plane];
        for (cell, &v) in map.iter().enumerate() {
            if v >= min_logit && is_peak(map, (h, w), cell) {
                peaks.push((v, c, cell));
            }
        }
    }
    peaks.sort_by(|a, b| b.0.total_cmp(&a.0));
    peaks.truncate(MAX_PEAKS);
    Ok(peaks
        .into_iter()
        .map(|(logit, c, cell)| {
            let x = (cell % w) as f32 + offset[cell];
            let y = (cell / w) as f32 + offset[plane + cell];
            // a negative size (an untrained or confused head) is a point, not an inverted box
            let (bw, bh) = (size[cell].max(0.0), size[plane + cell].max(0.0));
            Candidate {
                box_in_model: BoxInModel(Xyxy {
                    x1: (x - bw / 2.0) * stride.0,
                    y1: (y - bh / 2.0) * stride.1,
                    x2: (x + bw / 2.0) * stride.0,
                    y2: (y + bh / 2.0) * stride.1,
                }),
                class_id: c as u32,
                score: crate::detect::head::sigmoid(logit),
                mask: None,
            }
        })
        .collect())
}

/// Not below any neighbour in the 3×3 window (the reference's max-pool equality).
fn is_peak(map: &[f32], (h, w): (usize, usize), cell: usize) -> bool {
    let (y, x) = (cell / w, cell % w);
    let v = map[cell];
    (y.saturating_sub(1)..(y + 2).min(h))
        .all(|ny| (x.saturating_sub(1)..(x + 2).min(w)).all(|nx| map[ny * w + nx] <= v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn peaks_offsets_and_sizes_make_boxes() {
        let (h, w) = (4, 5);
        let mut hm = vec![-10f32; 2 * h * w];
        hm[2 * w + 3] = 3.0; // class 0 peak at (3, 2)
        hm[2 * w + 2] = 2.0; // its neighbour: not a peak
        hm[h * w] = 1.0; // class 1 peak at (0, 0)
        let mut wh = vec![0f32; 2 * h * w];
        let mut reg = vec![0f32; 2 * h * w];
        (wh[2 * w + 3], wh[h * w + 2 * w + 3]) = (2.0, 4.0);
        (reg[2 * w + 3], reg[h * w + 2 * w + 3]) = (0.5, 0.25);
        let t = |v: Vec<f32>, c| Tensor::from_vec(v, (1, c, h, w), &Device::Cpu).unwrap();
        let outs = [t(hm, 2), t(wh, 2), t(reg, 2)];
        assert!(check(
            &outs.iter().map(|o| o.dims().to_vec()).collect::<Vec<_>>(),
            2
        ));
        let p = DecodeParams {
            classes: 2,
            input: (20, 16),
            anchors: vec![],
            strides: vec![],
        };
        let c = decode(&outs, 0, 0.5, &p).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].class_id, c[1].class_id), (0, 1));
        // centre (3.5, 2.25) cells, 2 × 4 cells, stride 4: x 10..18, y 1..17
        let b = c[0].box_in_model.0;
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (10.0, 1.0, 18.0, 17.0));
        assert!((c[0].score - 0.952_574_1).abs() < 1e-6);
    }
}
