//! `[yolo]` (YOLOv3/v4): for each cell `(cx, cy)` and anchor `a` of the mask, channels
//! `a·(5+C) + {x, y, w, h, objectness, class₀…}`:
//! `x = (cx + σ(tx)·s − (s−1)/2) / grid_w · net_w`, `w = anchor_w · e^tw`, score = σ(obj)·σ(cls).
//! With `new_coords=1` (scaled YOLOv4) the layer before already applied the logistic:
//! `x = (cx + tx·s − (s−1)/2)/grid_w`, `w = anchor_w · 4·tw²`.

use super::{Candidate, sigmoid};
use crate::detect::darknet::cfg::{CfgError, Section};
use crate::frame::{BoxInModel, Xyxy};

/// A `[yolo]` head.
#[derive(Debug, Clone)]
pub struct YoloHead {
    /// Anchors of this head (after `mask`), in model-input pixels.
    pub anchors: Vec<(f32, f32)>,
    pub classes: usize,
    pub scale_x_y: f32,
    pub new_coords: bool,
    /// Network input `(width, height)`.
    pub net: (usize, usize),
}

impl YoloHead {
    /// Build from a `[yolo]` section whose input has shape `(channels, h, w)`.
    pub fn from_section(
        sec: &Section,
        file: &str,
        input: (usize, usize, usize),
        net: (usize, usize),
    ) -> Result<Self, CfgError> {
        let classes: usize = sec.get(file, "classes", 80)?;
        let all: Vec<f32> = sec.list(file, "anchors")?.unwrap_or_default();
        if all.is_empty() || !all.len().is_multiple_of(2) {
            return Err(sec.error(file, "[yolo] needs `anchors` as w,h pairs".into()));
        }
        let num: usize = sec.get(file, "num", all.len() / 2)?;
        if num != all.len() / 2 {
            return Err(sec.error(
                file,
                format!(
                    "[yolo] num={num} but {} anchor pairs are given",
                    all.len() / 2
                ),
            ));
        }
        let mask: Vec<usize> = sec
            .list(file, "mask")?
            .unwrap_or_else(|| (0..num).collect());
        let mut anchors = Vec::with_capacity(mask.len());
        for m in mask {
            let a = all.get(2 * m..2 * m + 2).ok_or_else(|| {
                sec.error(
                    file,
                    format!("[yolo] mask names anchor {m}, but there are {num}"),
                )
            })?;
            anchors.push((a[0], a[1]));
        }
        let expected = anchors.len() * (5 + classes);
        if input.0 != expected {
            return Err(sec.error(
                file,
                format!(
                    "[yolo] expects {expected} input channels ({} anchors × (5 + {classes} classes)), the layer before gives {}",
                    anchors.len(),
                    input.0
                ),
            ));
        }
        let new_coords: usize = sec.get(file, "new_coords", 0)?;
        Ok(Self {
            anchors,
            classes,
            scale_x_y: sec.get(file, "scale_x_y", 1.0)?,
            new_coords: new_coords != 0,
            net,
        })
    }

    /// Box centre and size in model pixels for anchor `a` at `cell`; `at(k)` reads entry `k`.
    fn box_at(
        &self,
        a: usize,
        cell: usize,
        grid: (usize, usize),
        at: impl Fn(usize) -> f32,
    ) -> [f32; 4] {
        let (gh, gw) = grid;
        let s = self.scale_x_y;
        let act = |v: f32| if self.new_coords { v } else { sigmoid(v) };
        let (aw, ah) = self.anchors[a];
        let (cy, cx) = ((cell / gw) as f32, (cell % gw) as f32);
        let x = (cx + act(at(0)) * s - (s - 1.0) / 2.0) / gw as f32 * self.net.0 as f32;
        let y = (cy + act(at(1)) * s - (s - 1.0) / 2.0) / gh as f32 * self.net.1 as f32;
        let (w, h) = if self.new_coords {
            (4.0 * at(2) * at(2) * aw, 4.0 * at(3) * at(3) * ah)
        } else {
            (at(2).exp() * aw, at(3).exp() * ah)
        };
        [x, y, w, h]
    }

    /// Every box decoded, anchor-major: rows of `[cx, cy, w, h, objectness, score₀…]` in model
    /// pixels, score = objectness·p(class). Empty when `raw` does not fit.
    pub fn rows(&self, raw: &[f32], grid: (usize, usize)) -> Vec<f32> {
        let plane = grid.0 * grid.1;
        let stride = 5 + self.classes;
        if raw.len() != self.anchors.len() * stride * plane {
            return Vec::new();
        }
        let act = |v: f32| if self.new_coords { v } else { sigmoid(v) };
        let mut out = Vec::with_capacity(raw.len());
        for a in 0..self.anchors.len() {
            let base = a * stride * plane;
            for cell in 0..plane {
                let at = |k: usize| raw[base + k * plane + cell];
                out.extend_from_slice(&self.box_at(a, cell, grid, at));
                let obj = act(at(4));
                out.push(obj);
                out.extend((0..self.classes).map(|c| obj * act(at(5 + c))));
            }
        }
        out
    }

    /// Decode one image's output (`anchors·(5+C)` planes of `grid_h × grid_w`, row-major) into
    /// candidates with score ≥ `threshold`, one per class above it (darknet's multi-label rule).
    pub fn decode(
        &self,
        raw: &[f32],
        grid: (usize, usize),
        threshold: f32,
        out: &mut Vec<Candidate>,
    ) {
        let plane = grid.0 * grid.1;
        let stride = 5 + self.classes;
        if raw.len() != self.anchors.len() * stride * plane {
            return;
        }
        let act = |v: f32| if self.new_coords { v } else { sigmoid(v) };
        for a in 0..self.anchors.len() {
            let base = a * stride * plane;
            for cell in 0..plane {
                let at = |k: usize| raw[base + k * plane + cell];
                let obj = act(at(4));
                if obj < threshold {
                    continue;
                }
                let [x, y, w, h] = self.box_at(a, cell, grid, at);
                let b = BoxInModel(Xyxy::from_center(x, y, w, h));
                super::push_classes(out, b, obj, self.classes, threshold, |c| act(at(5 + c)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A single confident cell decodes to the box the formula gives, in model pixels.
    #[test]
    fn decodes_one_cell() {
        let head = YoloHead {
            anchors: vec![(10.0, 20.0)],
            classes: 2,
            scale_x_y: 1.0,
            new_coords: false,
            net: (64, 64),
        };
        let (gh, gw) = (2, 2);
        let mut raw = vec![-20.0f32; 7 * gh * gw];
        let cell = gw + 1; // row 1, col 1
        raw[cell] = 0.0; // tx -> 0.5
        raw[4 + cell] = 0.0; // ty -> 0.5 (plane 1)
        raw[4 * 2 + cell] = 0.0; // tw -> e^0 = 1
        raw[4 * 3 + cell] = 0.0;
        raw[4 * 4 + cell] = 20.0; // objectness ~1
        raw[4 * 6 + cell] = 20.0; // class 1
        let mut out = Vec::new();
        head.decode(&raw, (gh, gw), 0.5, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 1);
        let b = out[0].box_in_model.0;
        // centre (1.5/2*64, ...) = 48, size 10x20
        assert!(
            (b.x1 - 43.0).abs() < 1e-4 && (b.y1 - 38.0).abs() < 1e-4,
            "{b:?}"
        );
        assert!(
            (b.x2 - 53.0).abs() < 1e-4 && (b.y2 - 58.0).abs() < 1e-4,
            "{b:?}"
        );
    }
}
