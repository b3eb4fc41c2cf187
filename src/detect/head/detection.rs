//! `[detection]` (YOLOv1; darknet `detection_layer.c`). The input is a flat vector: class
//! probabilities `side²·C` (cell-major), then confidences `side²·num`, then boxes `side²·num·4`.
//! Box `(x, y, w, h)`: `x = (col + tx) / side · net_w`, `w = tw^(sqrt ? 2 : 1) · net_w`; the
//! score of class `c` is confidence · p(c). No activations: the values are used as they come
//! (with `softmax=1`, classes go through a softmax per cell).

use super::{Candidate, softmax_strided};
use crate::detect::darknet::cfg::{CfgError, Section};
use crate::frame::{BoxInModel, Xyxy};

/// A `[detection]` head.
#[derive(Debug, Clone)]
pub struct DetectionHead {
    /// Cells per side.
    pub side: usize,
    /// Boxes per cell.
    pub num: usize,
    pub classes: usize,
    /// `w`, `h` are square roots of the size.
    pub sqrt: bool,
    /// Softmax over each cell's classes.
    pub softmax: bool,
    /// Network input `(width, height)`.
    pub net: (usize, usize),
}

impl DetectionHead {
    /// Build from a `[detection]` section whose input holds `inputs` values.
    pub fn from_section(
        sec: &Section,
        file: &str,
        inputs: usize,
        net: (usize, usize),
    ) -> Result<Self, CfgError> {
        let side: usize = sec.get(file, "side", 7)?;
        let num: usize = sec.get(file, "num", 1)?;
        let classes: usize = sec.get(file, "classes", 20)?;
        let coords: usize = sec.get(file, "coords", 1)?;
        if coords != 4 {
            return Err(sec.error(
                file,
                format!("[detection] coords={coords}: only 4 is supported"),
            ));
        }
        let expected = side * side * (classes + num * 5);
        if inputs != expected {
            return Err(sec.error(
                file,
                format!(
                    "[detection] side={side} num={num} classes={classes} expects {expected} inputs, the layer before gives {inputs}"
                ),
            ));
        }
        Ok(Self {
            side,
            num,
            classes,
            sqrt: sec.get::<usize>(file, "sqrt", 0)? != 0,
            softmax: sec.get::<usize>(file, "softmax", 0)? != 0,
            net,
        })
    }

    fn expected(&self) -> usize {
        self.side * self.side * (self.classes + self.num * 5)
    }

    /// The class probabilities as darknet's layer outputs them (softmax applied when set).
    fn class_probs(&self, raw: &[f32]) -> Vec<f32> {
        let cells = self.side * self.side;
        let mut p = raw[..cells * self.classes].to_vec();
        if self.softmax {
            for cell in 0..cells {
                softmax_strided(&mut p, cell * self.classes, self.classes, 1);
            }
        }
        p
    }

    /// Box `(cx, cy, w, h)` in model pixels and confidence of box `n` in `cell`.
    fn box_at(&self, raw: &[f32], cell: usize, n: usize) -> ([f32; 4], f32) {
        let cells = self.side * self.side;
        let conf = raw[cells * self.classes + cell * self.num + n];
        let b = cells * (self.classes + self.num) + (cell * self.num + n) * 4;
        let (row, col) = ((cell / self.side) as f32, (cell % self.side) as f32);
        let (net_w, net_h) = (self.net.0 as f32, self.net.1 as f32);
        let size = |v: f32| if self.sqrt { v * v } else { v };
        (
            [
                (raw[b] + col) / self.side as f32 * net_w,
                (raw[b + 1] + row) / self.side as f32 * net_h,
                size(raw[b + 2]) * net_w,
                size(raw[b + 3]) * net_h,
            ],
            conf,
        )
    }

    /// Every box decoded, cell-major (see [`super::Head::rows`]).
    pub fn rows(&self, raw: &[f32]) -> Vec<f32> {
        if raw.len() != self.expected() {
            return Vec::new();
        }
        let probs = self.class_probs(raw);
        let mut out = Vec::new();
        for cell in 0..self.side * self.side {
            for n in 0..self.num {
                let (b, conf) = self.box_at(raw, cell, n);
                out.extend_from_slice(&b);
                out.push(conf);
                out.extend((0..self.classes).map(|c| conf * probs[cell * self.classes + c]));
            }
        }
        out
    }

    /// Candidates with score ≥ `threshold`, one per class above it.
    pub fn decode(&self, raw: &[f32], threshold: f32, out: &mut Vec<Candidate>) {
        if raw.len() != self.expected() {
            return;
        }
        let probs = self.class_probs(raw);
        for cell in 0..self.side * self.side {
            for n in 0..self.num {
                let ([x, y, w, h], conf) = self.box_at(raw, cell, n);
                let b = BoxInModel(Xyxy::from_center(x, y, w, h));
                super::push_classes(out, b, conf, self.classes, threshold, |c| {
                    probs[cell * self.classes + c]
                });
            }
        }
    }
}
