//! Output decoders, one per family, each giving vigil's [`Candidate`] (model-input pixels,
//! before NMS) so NMS, tracking and outputs never care which model ran. The layouts are the ones
//! each family's own exporter writes (tests/golden/onnx/README.md describes them).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::super::head::Candidate;
use super::super::head::yolo::YoloHead;
use crate::frame::{BitMask, BoxInModel, MaskInModel, Xyxy};

/// How a model's outputs become boxes (`decoder:` in a manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decoder {
    /// darknet-style `[yolo]` heads exported raw: `[1, A·(5+C), H, W]` per head; needs `anchors`.
    Yolov3,
    /// YOLOv5 7.0 (anchor-based): `[1, N, 5+C]` cx, cy, w, h (input pixels), objectness, classes.
    Yolov5,
    /// YOLOv6: as YOLOv5's layout (objectness written as 1 by its exporter).
    Yolov6,
    /// YOLOv7 exported with its grid: as YOLOv5's layout.
    Yolov7,
    /// Ultralytics YOLOv8 / YOLO11 / YOLOv5u: `[1, 4+C, N]` cx, cy, w, h, class scores.
    Yolov8,
    /// YOLOX (`decode_in_inference` off): `[1, N, 5+C]` raw offsets and log sizes on the
    /// stride-8/16/32 grids, objectness and classes after sigmoid.
    Yolox,
    /// DAMO-YOLO: scores `[1, N, C]` and boxes `[1, N, 4]` (x1, y1, x2, y2, input pixels).
    DamoYolo,
    /// RT-DETR as Ultralytics exports it: `[1, K, 6]` cx, cy, w, h normalized, score, class.
    Rtdetr,
    /// End-to-end exports with NMS in the graph: `[1, K, 6]` x1, y1, x2, y2, score, class; or
    /// `num_dets, boxes, scores, classes` (TensorRT-style, as YOLOv6/v7 `--end2end` write).
    NmsIncluded,
    /// torchvision's detection models exported as they are (`torch.onnx.export(model, ([img],))`:
    /// SSD, SSDlite, RetinaNet, FCOS, Faster and Mask R-CNN): one image, NMS in the graph,
    /// outputs boxes `[N, 4]` (x1, y1, x2, y2, input pixels), scores `[N]`, integer labels `[N]`
    /// and, from Mask R-CNN, masks `[N, 1, H, W]` (found by shape and type: exports number their
    /// outputs).
    Torchvision,
    /// EfficientDet's raw class and box maps per level (`efficientdet.rs`): anchors, decoding
    /// and NMS in vigil, as the network exports without its TorchScript post-processing.
    Efficientdet,
    /// CenterNet's heatmaps, sizes and offsets (`hm`, `wh`, `reg`; `centernet.rs`): peaks, the
    /// best 100, boxes at the maps' stride.
    Centernet,
    /// No decoding: the outputs are for `vigil model run-raw` only.
    Raw,
}

impl Decoder {
    /// Whether the boxes it gives are already suppressed (vigil's NMS then changes nothing it
    /// should not, but class-aware NMS with IoU ≥ 1 keeps them all).
    pub fn nms_in_graph(self) -> bool {
        matches!(
            self,
            Decoder::Rtdetr | Decoder::NmsIncluded | Decoder::Torchvision
        )
    }
}

/// What a decoder needs beyond the tensors.
#[derive(Debug, Clone)]
pub struct DecodeParams {
    pub classes: usize,
    /// Model input `(width, height)`.
    pub input: (usize, usize),
    /// `yolov3`: anchors per output, in input pixels, `[w0, h0, w1, h1, …]`.
    pub anchors: Vec<Vec<f32>>,
    /// Grid strides (`yolox`).
    pub strides: Vec<usize>,
}

/// Whether a model's output shapes (as resolved at load) fit `d`: a wrong `decoder:` in a manifest
/// is a load error naming what the model gives, not a failure on every frame.
pub fn check(d: Decoder, shapes: &[Vec<usize>], classes: usize) -> Result<(), String> {
    let first = shapes.first().map(Vec::as_slice).unwrap_or(&[]);
    let ok = match d {
        Decoder::Raw => true,
        Decoder::Yolov8 => shapes.len() == 1 && first.len() == 3 && first[1] > 4,
        Decoder::Yolov5 | Decoder::Yolov7 if first.len() == 5 => {
            shapes.iter().all(|s| s.len() == 5 && s[4] > 5)
        }
        Decoder::Yolov5 | Decoder::Yolov6 | Decoder::Yolov7 | Decoder::Yolox => {
            shapes.len() == 1 && first.len() == 3 && first[2] > 5
        }
        Decoder::DamoYolo => shapes.len() == 2 && shapes.iter().all(|s| s.len() == 3),
        Decoder::Rtdetr => shapes.len() == 1 && first.len() == 3 && first[2] == 6,
        Decoder::NmsIncluded => shapes.len() == 4 || shapes.len() == 1 && first.last() == Some(&6),
        // other outputs (a head exposed for debugging) are ignored
        Decoder::Torchvision => {
            shapes.iter().filter(|s| s.len() == 2 && s[1] == 4).count() == 1
                && shapes.iter().filter(|s| s.len() == 1).count() == 2
        }
        Decoder::Yolov3 => shapes
            .iter()
            .all(|s| s.len() == 4 && s[1] % (5 + classes) == 0),
        Decoder::Efficientdet => super::efficientdet::check(shapes, classes),
        Decoder::Centernet => super::centernet::check(shapes, classes),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "decoder `{}` does not fit the model's outputs {shapes:?} (see the decoders in README, \"Bring your own ONNX model\")",
            serde_json::to_value(d)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        ))
    }
}

/// Candidates of image `b` with score ≥ `threshold`.
pub fn decode(
    d: Decoder,
    outputs: &[Tensor],
    b: usize,
    threshold: f32,
    p: &DecodeParams,
) -> candle_core::Result<Vec<Candidate>> {
    let one = |i: usize| -> candle_core::Result<(Vec<usize>, Vec<f32>)> {
        let t = outputs.get(i).ok_or_else(|| {
            candle_core::Error::Msg(format!("decoder {d:?}: the model has no output {i}"))
        })?;
        Ok((t.get(b)?.dims().to_vec(), image_values(t, b)?))
    };
    let mut out = Vec::new();
    match d {
        Decoder::Raw => {}
        Decoder::Yolov8 => {
            let (dims, v) = one(0)?;
            let [rows, n] = two(&dims, d)?;
            yolov8(&v, rows, n, threshold, &mut out);
        }
        Decoder::Yolov5 | Decoder::Yolov7 if outputs.first().is_some_and(|t| t.rank() == 5) => {
            anchor_maps(outputs, b, threshold, p, &mut out)?;
        }
        Decoder::Yolov5 | Decoder::Yolov6 | Decoder::Yolov7 => {
            let (dims, v) = one(0)?;
            let [n, cols] = two(&dims, d)?;
            rows_with_objectness(
                &v,
                n,
                cols,
                threshold,
                |r| center(r[0], r[1], r[2], r[3]),
                &mut out,
            );
        }
        Decoder::Yolox => {
            let (dims, v) = one(0)?;
            let [n, cols] = two(&dims, d)?;
            yolox(&v, n, cols, threshold, p, &mut out)?;
        }
        Decoder::DamoYolo => damo(outputs, b, threshold, &mut out)?,
        Decoder::Rtdetr => {
            let (dims, v) = one(0)?;
            let [k, cols] = two(&dims, d)?;
            let (w, h) = (p.input.0 as f32, p.input.1 as f32);
            for r in v.chunks_exact(cols).take(k) {
                if cols >= 6 && r[4] >= threshold {
                    out.push(cand(
                        center(r[0] * w, r[1] * h, r[2] * w, r[3] * h),
                        r[5],
                        r[4],
                    ));
                }
            }
        }
        Decoder::NmsIncluded => end_to_end(outputs, b, threshold, &mut out)?,
        Decoder::Torchvision => torchvision(outputs, threshold, &mut out)?,
        Decoder::Efficientdet => out = super::efficientdet::decode(outputs, b, threshold, p)?,
        Decoder::Centernet => out = super::centernet::decode(outputs, b, threshold, p)?,
        Decoder::Yolov3 => yolov3(outputs, b, threshold, p, &mut out)?,
    }
    Ok(out)
}

/// Image `b`'s values of an output, flat, as f32.
fn image_values(t: &Tensor, b: usize) -> candle_core::Result<Vec<f32>> {
    t.get(b)?
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()
}

/// The two dims of one image's 2-D output.
fn two(dims: &[usize], d: Decoder) -> candle_core::Result<[usize; 2]> {
    match dims {
        [a, b] => Ok([*a, *b]),
        other => {
            candle_core::bail!("decoder {d:?}: output of shape {other:?} per image, expected 2-D")
        }
    }
}

fn center(cx: f32, cy: f32, w: f32, h: f32) -> Xyxy {
    Xyxy::from_center(cx, cy, w, h)
}

fn cand(b: Xyxy, class: f32, score: f32) -> Candidate {
    Candidate {
        box_in_model: BoxInModel(b),
        class_id: class.max(0.0) as u32,
        score,
        mask: None,
    }
}

/// The best class of `scores`: `(index, score)`; the first on ties.
fn best(scores: &[f32]) -> (usize, f32) {
    scores.iter().enumerate().fold(
        (0, f32::NEG_INFINITY),
        |m, (i, &s)| if s > m.1 { (i, s) } else { m },
    )
}

/// `[4 + C, N]`, anchor-minor (Ultralytics): one candidate per anchor, its best class.
fn yolov8(v: &[f32], rows: usize, n: usize, threshold: f32, out: &mut Vec<Candidate>) {
    let classes = rows.saturating_sub(4);
    let mut scores = vec![0f32; classes];
    for a in 0..n {
        for (c, s) in scores.iter_mut().enumerate() {
            *s = v[(4 + c) * n + a];
        }
        let (c, s) = best(&scores);
        if s >= threshold {
            let at = |r: usize| v[r * n + a];
            out.push(cand(center(at(0), at(1), at(2), at(3)), c as f32, s));
        }
    }
}

/// A row of `[box…, objectness, classes…]` and its index.
struct Row<'a> {
    index: usize,
    v: &'a [f32],
}

impl std::ops::Index<usize> for Row<'_> {
    type Output = f32;
    fn index(&self, i: usize) -> &f32 {
        &self.v[i]
    }
}

/// `[N, 5 + C]` rows scored objectness × best class (YOLOv5's and YOLOX's own rule).
fn rows_with_objectness(
    v: &[f32],
    n: usize,
    cols: usize,
    threshold: f32,
    boxed: impl Fn(&Row) -> Xyxy,
    out: &mut Vec<Candidate>,
) {
    for (index, r) in v.chunks_exact(cols).take(n).enumerate() {
        let obj = r[4];
        if obj < threshold || cols < 6 {
            continue;
        }
        let (c, s) = best(&r[5..]);
        let score = obj * s;
        if score >= threshold {
            out.push(cand(boxed(&Row { index, v: r }), c as f32, score));
        }
    }
}

/// YOLOX rows: offsets and log sizes on the stride grids, objectness × best class.
fn yolox(
    v: &[f32],
    n: usize,
    cols: usize,
    threshold: f32,
    p: &DecodeParams,
    out: &mut Vec<Candidate>,
) -> candle_core::Result<()> {
    let grid = grid_cells(p.input, &p.strides);
    if grid.len() != n {
        candle_core::bail!(
            "yolox: {n} rows, but strides {:?} on {:?} give {}",
            p.strides,
            p.input,
            grid.len()
        );
    }
    let boxed = |r: &Row| {
        let (gx, gy, s) = grid[r.index];
        center(
            (r[0] + gx) * s,
            (r[1] + gy) * s,
            r[2].exp() * s,
            r[3].exp() * s,
        )
    };
    rows_with_objectness(v, n, cols, threshold, boxed, out);
    Ok(())
}

/// Grid cells `(x, y, stride)` level by level, row-major (YOLOX's order).
fn grid_cells(input: (usize, usize), strides: &[usize]) -> Vec<(f32, f32, f32)> {
    let mut g = Vec::new();
    for &s in strides {
        let (gw, gh) = (input.0 / s, input.1 / s);
        for y in 0..gh {
            for x in 0..gw {
                g.push((x as f32, y as f32, s as f32));
            }
        }
    }
    g
}

fn damo(
    outputs: &[Tensor],
    b: usize,
    threshold: f32,
    out: &mut Vec<Candidate>,
) -> candle_core::Result<()> {
    if outputs.len() != 2 {
        candle_core::bail!(
            "damo_yolo: expected two outputs (scores, boxes), the model has {}",
            outputs.len()
        );
    }
    let (bi, si) = if outputs[1].dims().last() == Some(&4) {
        (1, 0)
    } else {
        (0, 1)
    };
    let boxes = image_values(&outputs[bi], b)?;
    let classes = *outputs[si].dims().last().unwrap_or(&0);
    let scores = image_values(&outputs[si], b)?;
    // DAMO-YOLO's own post-processing is multi-label: every (box, class) pair over the threshold.
    for (bx, sc) in boxes
        .chunks_exact(4)
        .zip(scores.chunks_exact(classes.max(1)))
    {
        for (c, &s) in sc.iter().enumerate() {
            if s >= threshold {
                out.push(cand(
                    Xyxy {
                        x1: bx[0],
                        y1: bx[1],
                        x2: bx[2],
                        y2: bx[3],
                    },
                    c as f32,
                    s,
                ));
            }
        }
    }
    Ok(())
}

/// torchvision's `boxes`, `scores` and `labels`, told apart by shape and element type.
fn torchvision(
    outputs: &[Tensor],
    threshold: f32,
    out: &mut Vec<Candidate>,
) -> candle_core::Result<()> {
    let flat = |t: &Tensor| -> candle_core::Result<Vec<f32>> {
        t.flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()
    };
    let boxes = outputs.iter().find(|t| t.rank() == 2 && t.dims()[1] == 4);
    let ones: Vec<&Tensor> = outputs.iter().filter(|t| t.rank() == 1).collect();
    let scores = ones.iter().find(|t| t.dtype().is_float());
    let labels = ones.iter().find(|t| !t.dtype().is_float());
    let (Some(boxes), Some(scores), Some(labels)) = (boxes, scores, labels) else {
        candle_core::bail!(
            "torchvision: expected boxes [N, 4], float scores [N] and integer labels [N]; got {:?}",
            outputs
                .iter()
                .map(|t| (t.dims().to_vec(), t.dtype()))
                .collect::<Vec<_>>()
        );
    };
    let (b, s, l) = (flat(boxes)?, flat(scores)?, flat(labels)?);
    // Mask R-CNN's `[N, 1, H, W]`, one plane per box (not any 4-D output a debug export adds)
    let n = b.len() / 4;
    let masks = outputs
        .iter()
        .find(|t| t.rank() == 4 && t.dims()[0] == n && t.dims()[1] == 1);
    for (k, ((bx, score), label)) in b.chunks_exact(4).zip(s).zip(l).enumerate() {
        if score >= threshold {
            let xyxy = Xyxy {
                x1: bx[0],
                y1: bx[1],
                x2: bx[2],
                y2: bx[3],
            };
            let mut c = cand(xyxy, label, score);
            if let Some(m) = masks {
                c.mask = Some(std::sync::Arc::new(instance_mask(m, k)?));
            }
            out.push(c);
        }
    }
    Ok(())
}

/// Detection `k`'s mask from Mask R-CNN's `[N, 1, H, W]` probabilities pasted at input size:
/// the pixels above 0.5, as torchvision's users threshold them.
fn instance_mask(masks: &Tensor, k: usize) -> candle_core::Result<MaskInModel> {
    let (_, _, h, w) = masks.dims4()?;
    let plane: Vec<f32> = masks
        .get(k)?
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    Ok(MaskInModel(BitMask::from_plane(&plane, w, h, 0.5)))
}

fn end_to_end(
    outputs: &[Tensor],
    b: usize,
    threshold: f32,
    out: &mut Vec<Candidate>,
) -> candle_core::Result<()> {
    let per = |i: usize| image_values(&outputs[i], b);
    match outputs.len() {
        1 => {
            let cols = *outputs[0].dims().last().unwrap_or(&0);
            if cols != 6 {
                candle_core::bail!(
                    "nms_included: one output of {:?}; expected [1, K, 6] (x1, y1, x2, y2, score, class)",
                    outputs[0].dims()
                );
            }
            for r in per(0)?.chunks_exact(6) {
                if r[4] >= threshold {
                    out.push(cand(
                        Xyxy {
                            x1: r[0],
                            y1: r[1],
                            x2: r[2],
                            y2: r[3],
                        },
                        r[5],
                        r[4],
                    ));
                }
            }
        }
        4 => {
            let num = per(0)?.first().copied().unwrap_or(0.0).max(0.0) as usize;
            let (boxes, scores, classes) = (per(1)?, per(2)?, per(3)?);
            let n = num
                .min(scores.len())
                .min(classes.len())
                .min(boxes.len() / 4);
            for i in 0..n {
                let bx = &boxes[i * 4..i * 4 + 4];
                if scores[i] >= threshold {
                    out.push(cand(
                        Xyxy {
                            x1: bx[0],
                            y1: bx[1],
                            x2: bx[2],
                            y2: bx[3],
                        },
                        classes[i],
                        scores[i],
                    ));
                }
            }
        }
        n => candle_core::bail!(
            "nms_included: {n} outputs; expected 1 ([1, K, 6]) or 4 (num_dets, boxes, scores, classes)"
        ),
    }
    Ok(())
}

/// YOLOv5/YOLOv7's anchors (COCO, P3–P5) when a manifest gives none.
const V5_ANCHORS: [[f32; 6]; 3] = [
    [10.0, 13.0, 16.0, 30.0, 33.0, 23.0],
    [30.0, 61.0, 62.0, 45.0, 59.0, 119.0],
    [116.0, 90.0, 156.0, 198.0, 373.0, 326.0],
];

/// YOLOv5/YOLOv7 exported without the in-graph decode: per level `[1, A, H, W, 5 + C]` logits;
/// xy = (2σ − ½ + cell)·stride, wh = (2σ)²·anchor, objectness × best class.
fn anchor_maps(
    outputs: &[Tensor],
    b: usize,
    threshold: f32,
    p: &DecodeParams,
    out: &mut Vec<Candidate>,
) -> candle_core::Result<()> {
    let default: Vec<Vec<f32>> = V5_ANCHORS.iter().map(|a| a.to_vec()).collect();
    let anchors = if p.anchors.is_empty() {
        &default
    } else {
        &p.anchors
    };
    if anchors.len() != outputs.len() {
        candle_core::bail!(
            "{} anchor maps but anchors for {} (manifest `anchors:`)",
            outputs.len(),
            anchors.len()
        );
    }
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    for (t, anch) in outputs.iter().zip(anchors) {
        let t = t.get(b)?;
        let (na, gh, gw, cols) = t.dims4()?;
        if anch.len() != 2 * na || cols < 6 {
            candle_core::bail!(
                "anchor map {:?}: {} anchors given",
                t.dims(),
                anch.len() / 2
            );
        }
        let stride = p.input.1 as f32 / gh as f32;
        let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
        for (i, r) in v.chunks_exact(cols).enumerate() {
            let obj = sig(r[4]);
            if obj < threshold {
                continue;
            }
            let (a, y, x) = (i / (gh * gw), (i / gw) % gh, i % gw);
            let (c, s) = best(&r[5..]);
            let score = obj * sig(s);
            if score >= threshold {
                let cx = (2.0 * sig(r[0]) - 0.5 + x as f32) * stride;
                let cy = (2.0 * sig(r[1]) - 0.5 + y as f32) * stride;
                let w = (2.0 * sig(r[2])).powi(2) * anch[2 * a];
                let h = (2.0 * sig(r[3])).powi(2) * anch[2 * a + 1];
                out.push(cand(center(cx, cy, w, h), c as f32, score));
            }
        }
    }
    Ok(())
}

fn yolov3(
    outputs: &[Tensor],
    b: usize,
    threshold: f32,
    p: &DecodeParams,
    out: &mut Vec<Candidate>,
) -> candle_core::Result<()> {
    if p.anchors.len() != outputs.len() {
        candle_core::bail!(
            "yolov3: {} outputs but anchors for {} (manifest `anchors:`, one list per output)",
            outputs.len(),
            p.anchors.len()
        );
    }
    for (t, anchors) in outputs.iter().zip(&p.anchors) {
        let (_, gh, gw) = t.get(b)?.dims3()?;
        let head = YoloHead {
            anchors: anchors.chunks_exact(2).map(|a| (a[0], a[1])).collect(),
            classes: p.classes,
            scale_x_y: 1.0,
            new_coords: false,
            net: p.input,
        };
        let raw = image_values(t, b)?;
        let want = head.anchors.len() * (5 + p.classes) * gh * gw;
        if raw.len() != want {
            candle_core::bail!(
                "yolov3: output {:?} does not hold {} anchors × (5 + {} classes)",
                t.dims(),
                head.anchors.len(),
                p.classes
            );
        }
        head.decode(&raw, (gh, gw), threshold, out);
    }
    Ok(())
}
