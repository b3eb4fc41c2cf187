//! `[region]` (YOLOv2, YOLO9000; darknet `region_layer.c`). Per anchor `a`, planes
//! `a·(5+C) + {x, y, w, h, objectness, class₀…}` over the `grid_h × grid_w` cells:
//! `x = (cx + σ(tx)) / grid_w · net_w`, `w = anchor_w · e^tw / grid_w · net_w` (anchors in grid
//! units), objectness σ(to), classes softmax over all classes or, with `tree=`, within each
//! WordTree sibling group, then multiplied down the tree.

use std::path::Path;

use super::{Candidate, WordTree, sigmoid, softmax_strided};
use crate::detect::darknet::cfg::{CfgError, Section};
use crate::frame::{BoxInModel, Xyxy};

/// darknet's default `hier_thresh` for walking the WordTree (`detector test`).
pub const DEFAULT_HIER_THRESH: f32 = 0.5;

/// A `[region]` head.
#[derive(Debug, Clone)]
pub struct RegionHead {
    /// Anchors in grid cells.
    pub anchors: Vec<(f32, f32)>,
    pub classes: usize,
    /// Softmax over the classes (else logistic per class).
    pub softmax: bool,
    /// The YOLO9000 class hierarchy (`tree=`), if any.
    pub tree: Option<WordTree>,
    /// Network input `(width, height)`.
    pub net: (usize, usize),
}

impl RegionHead {
    /// Build from a `[region]` section whose input has shape `(channels, h, w)`; `dir` resolves
    /// a relative `tree=` path.
    pub fn from_section(
        sec: &Section,
        file: &str,
        input: (usize, usize, usize),
        net: (usize, usize),
        dir: &Path,
    ) -> Result<Self, CfgError> {
        let classes: usize = sec.get(file, "classes", 20)?;
        let coords: usize = sec.get(file, "coords", 4)?;
        if coords != 4 {
            return Err(sec.error(
                file,
                format!("[region] coords={coords}: only 4 is supported"),
            ));
        }
        let background: usize = sec.get(file, "background", 0)?;
        if background != 0 {
            return Err(sec.error(file, "[region] background=1 is not supported".into()));
        }
        let all: Vec<f32> = sec.list(file, "anchors")?.unwrap_or_default();
        let num: usize = sec.get(file, "num", all.len() / 2)?;
        if all.len() != 2 * num || num == 0 {
            return Err(sec.error(
                file,
                format!(
                    "[region] num={num} needs {num} anchor pairs, {} values are given",
                    all.len()
                ),
            ));
        }
        let anchors: Vec<(f32, f32)> = all.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        let softmax: usize = sec.get(file, "softmax", 0)?;
        let tree = match sec.options.get("tree") {
            None => None,
            Some((p, _)) => {
                let path = dir.join(p);
                let t =
                    WordTree::load(&path).map_err(|m| sec.error(file, format!("[region] {m}")))?;
                if t.len() != classes {
                    return Err(sec.error(
                        file,
                        format!("[region] the tree has {} nodes, classes={classes}", t.len()),
                    ));
                }
                Some(t)
            }
        };
        let expected = num * (5 + classes);
        if input.0 != expected {
            return Err(sec.error(
                file,
                format!(
                    "[region] expects {expected} input channels ({num} anchors × (5 + {classes} classes)), the layer before gives {}",
                    input.0
                ),
            ));
        }
        Ok(Self {
            anchors,
            classes,
            softmax: softmax != 0,
            tree,
            net,
        })
    }

    /// darknet's region output: x, y, objectness through the logistic, classes through the
    /// (tree) softmax, w and h untouched. Same layout as `raw`; empty when `raw` does not fit.
    pub fn activate(&self, raw: &[f32], grid: (usize, usize)) -> Vec<f32> {
        let plane = grid.0 * grid.1;
        let stride = 5 + self.classes;
        if raw.len() != self.anchors.len() * stride * plane {
            return Vec::new();
        }
        let mut x = raw.to_vec();
        for a in 0..self.anchors.len() {
            let base = a * stride * plane;
            for k in [0, 1, 4] {
                for v in &mut x[base + k * plane..base + (k + 1) * plane] {
                    *v = sigmoid(*v);
                }
            }
            let cls = base + 5 * plane;
            for cell in 0..plane {
                match &self.tree {
                    Some(t) => t.softmax(&mut x, cls + cell, plane),
                    None if self.softmax => {
                        softmax_strided(&mut x, cls + cell, self.classes, plane)
                    }
                    None => {}
                }
            }
            if self.tree.is_none() && !self.softmax {
                for v in &mut x[cls..cls + self.classes * plane] {
                    *v = sigmoid(*v);
                }
            }
        }
        x
    }

    /// With a tree: the activated output with every class probability made absolute
    /// (darknet `hierarchy_predictions`); without one, the activated output.
    pub fn absolute(&self, activated: &mut [f32], grid: (usize, usize)) {
        let plane = grid.0 * grid.1;
        let stride = 5 + self.classes;
        if let Some(t) = &self.tree {
            for a in 0..self.anchors.len() {
                for cell in 0..plane {
                    t.absolute(activated, (a * stride + 5) * plane + cell, plane);
                }
            }
        }
    }

    fn box_at(&self, x: &[f32], a: usize, cell: usize, grid: (usize, usize)) -> [f32; 4] {
        let (gh, gw) = grid;
        let plane = gh * gw;
        let base = a * (5 + self.classes) * plane + cell;
        let (aw, ah) = self.anchors[a];
        let (net_w, net_h) = (self.net.0 as f32, self.net.1 as f32);
        let (cy, cx) = ((cell / gw) as f32, (cell % gw) as f32);
        [
            (cx + x[base]) / gw as f32 * net_w,
            (cy + x[base + plane]) / gh as f32 * net_h,
            x[base + 2 * plane].exp() * aw / gw as f32 * net_w,
            x[base + 3 * plane].exp() * ah / gh as f32 * net_h,
        ]
    }

    /// Every box decoded, anchor-major (see [`super::Head::rows`]).
    pub fn rows(&self, raw: &[f32], grid: (usize, usize)) -> Vec<f32> {
        let mut x = self.activate(raw, grid);
        if x.is_empty() {
            return x;
        }
        self.absolute(&mut x, grid);
        let plane = grid.0 * grid.1;
        let stride = 5 + self.classes;
        let mut out = Vec::with_capacity(x.len());
        for a in 0..self.anchors.len() {
            let base = a * stride * plane;
            for cell in 0..plane {
                out.extend_from_slice(&self.box_at(&x, a, cell, grid));
                let obj = x[base + 4 * plane + cell];
                out.push(obj);
                out.extend((0..self.classes).map(|c| obj * x[base + (5 + c) * plane + cell]));
            }
        }
        out
    }

    /// Candidates with score ≥ `threshold`: one per class above it; with a tree, darknet's rule:
    /// the class the walk down the tree ends at ([`WordTree::top`], `hier_thresh` 0.5), scored
    /// by the objectness.
    pub fn decode(
        &self,
        raw: &[f32],
        grid: (usize, usize),
        threshold: f32,
        out: &mut Vec<Candidate>,
    ) {
        let mut x = self.activate(raw, grid);
        if x.is_empty() {
            return;
        }
        let plane = grid.0 * grid.1;
        let stride = 5 + self.classes;
        for a in 0..self.anchors.len() {
            let base = a * stride * plane;
            for cell in 0..plane {
                let obj = x[base + 4 * plane + cell];
                if obj < threshold {
                    continue;
                }
                let [bx, by, bw, bh] = self.box_at(&x, a, cell, grid);
                let b = BoxInModel(Xyxy::from_center(bx, by, bw, bh));
                let cls = base + 5 * plane + cell;
                if let Some(t) = &self.tree {
                    t.absolute(&mut x, cls, plane);
                    let c = t.top(&x, cls, plane, DEFAULT_HIER_THRESH);
                    out.push(Candidate {
                        box_in_model: b,
                        class_id: c as u32,
                        score: obj,
                        mask: None,
                    });
                    continue;
                }
                super::push_classes(out, b, obj, self.classes, threshold, |c| x[cls + c * plane]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One confident cell decodes to the box the formula gives (anchors in grid cells), and the
    /// softmax splits the class score.
    #[test]
    fn decodes_one_cell() {
        let head = RegionHead {
            anchors: vec![(1.0, 2.0)],
            classes: 2,
            softmax: true,
            tree: None,
            net: (64, 64),
        };
        let (gh, gw) = (2, 2);
        let mut raw = vec![-20.0f32; 7 * gh * gw];
        let cell = gw + 1; // row 1, col 1
        for k in 0..4 {
            raw[k * 4 + cell] = 0.0; // σ(0) = 0.5, e^0 = 1
        }
        raw[4 * 4 + cell] = 20.0; // objectness ≈ 1
        raw[5 * 4 + cell] = 0.0;
        raw[6 * 4 + cell] = 2f32.ln(); // p = 1/3, 2/3
        let mut out = Vec::new();
        head.decode(&raw, (gh, gw), 0.5, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].class_id, 1);
        assert!((out[0].score - 2.0 / 3.0).abs() < 1e-4);
        // centre 1.5/2·64 = 48, size 1/2·64 × 2/2·64 = 32 × 64
        let b = out[0].box_in_model.0;
        for (got, want) in [(b.x1, 32.0), (b.y1, 16.0), (b.x2, 64.0), (b.y2, 80.0)] {
            assert!((got - want).abs() < 1e-3, "{b:?}");
        }
    }
}
