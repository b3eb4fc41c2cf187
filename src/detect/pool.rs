//! darknet's max-pool on the CPU as a Candle custom op: windows may hang over the edge by
//! `pad_lo` before and `pad_hi` after (size 2 / stride 1 pads right and bottom only); values
//! outside the input never win. Parallel over channels.
//!
//! Input `(batch, c, h, w)` f32 contiguous → `(batch, c, (h + pad − size)/stride + 1, …)`.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy)]
pub struct MaxPool {
    pub size: usize,
    pub stride: usize,
    pub pad_lo: usize,
    pub pad_hi: usize,
}

impl MaxPool {
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let pad = self.pad_lo + self.pad_hi;
        (
            (h + pad - self.size) / self.stride + 1,
            (w + pad - self.size) / self.stride + 1,
        )
    }

    pub fn run(&self, x: &[f32], (b, c, h, w): (usize, usize, usize, usize)) -> Vec<f32> {
        let (oh, ow) = self.out_hw(h, w);
        let window = Window {
            kernel: (self.size, self.size),
            stride: (self.stride, self.stride),
            top_left: (self.pad_lo, self.pad_lo),
        };
        pool_planes(x, (b * c, h, w), (oh, ow), window)
    }
}

/// A max-pool window: its size, its stride, and how far the first one hangs over the top and
/// left edges (padding; cells outside the input never win).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub top_left: (usize, usize),
}

/// `planes` planes of `h × w` (contiguous) max-pooled to `oh × ow` each, in parallel over planes.
/// Shared by darknet's `[maxpool]` and ONNX's `MaxPool`.
pub fn pool_planes(
    x: &[f32],
    (planes, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
    win: Window,
) -> Vec<f32> {
    let mut out = vec![0f32; planes * oh * ow];
    if oh * ow == 0 {
        return out;
    }
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(dst, src)| pool_plane(src, (h, w), dst, (oh, ow), win));
    out
}

/// One plane. The 2×2 stride-2 window inside the input (every YOLO backbone's downsampling) is a
/// max of two rows then of neighbour pairs; anything else runs separably (the window's max along
/// each row, then down the columns: 2k comparisons instead of k², SPPF's 5×5 among them).
fn pool_plane(
    src: &[f32],
    (h, w): (usize, usize),
    dst: &mut [f32],
    (oh, ow): (usize, usize),
    win: Window,
) {
    if win.kernel == (2, 2)
        && win.stride == (2, 2)
        && win.top_left == (0, 0)
        && 2 * oh <= h
        && 2 * ow <= w
    {
        for (oy, d) in dst.chunks_exact_mut(ow).enumerate() {
            let r0 = &src[2 * oy * w..][..2 * ow];
            let r1 = &src[(2 * oy + 1) * w..][..2 * ow];
            for ((d, a), b) in d.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2)) {
                *d = a[0].max(a[1]).max(b[0].max(b[1]));
            }
        }
        return;
    }
    let span = |o: usize, k: usize, s: usize, lo: usize, n: usize| {
        let start = (o * s) as isize - lo as isize;
        (start.max(0) as usize).min(n)..((start + k as isize).min(n as isize)).max(0) as usize
    };
    let (kh, kw) = win.kernel;
    let (sh, sw) = win.stride;
    let (top, left) = win.top_left;
    // each input row's window maxima at the output columns
    let mut rows = vec![f32::NEG_INFINITY; h * ow];
    for (row, across) in src.chunks_exact(w).zip(rows.chunks_exact_mut(ow)) {
        for (ox, m) in across.iter_mut().enumerate() {
            let xs = span(ox, kw, sw, left, w);
            *m = row[xs.start..xs.end.max(xs.start)]
                .iter()
                .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        }
    }
    for (oy, d) in dst.chunks_exact_mut(ow).enumerate() {
        d.fill(f32::NEG_INFINITY);
        for y in span(oy, kh, sh, top, h) {
            for (m, &v) in d.iter_mut().zip(&rows[y * ow..][..ow]) {
                *m = m.max(v);
            }
        }
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "vigil-darknet-maxpool"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        if h + self.pad_lo + self.pad_hi < self.size || w + self.pad_lo + self.pad_hi < self.size {
            candle_core::bail!(
                "maxpool: {h}x{w} input is smaller than the window {}",
                self.size
            );
        }
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("maxpool: only f32 is supported");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("maxpool: input must be contiguous");
        };
        let (oh, ow) = self.out_hw(h, w);
        Ok((
            CpuStorage::F32(self.run(&data[start..end], (b, c, h, w))),
            Shape::from((b, c, oh, ow)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The fast 2×2 path and the separable path equal the window-by-window definition, windows
    /// hanging over every edge included (SPPF's 5×5 stride 1 pad 2, odd sizes, stride 3).
    #[test]
    fn every_window_equals_its_definition() {
        for (k, s, pad, h, w) in [
            ((2, 2), (2, 2), (0, 0), 9, 8),
            ((5, 5), (1, 1), (2, 2), 7, 6),
            ((3, 2), (3, 2), (1, 0), 11, 5),
            ((2, 2), (2, 2), (1, 1), 6, 6),
        ] {
            let x: Vec<f32> = (0..2 * h * w)
                .map(|i| ((i * 7919) % 103) as f32 - 50.0)
                .collect();
            let o = |n: usize, k: usize, s: usize, p: usize| (n + 2 * p - k) / s + 1;
            let (oh, ow) = (o(h, k.0, s.0, pad.0), o(w, k.1, s.1, pad.1));
            let win = Window {
                kernel: k,
                stride: s,
                top_left: pad,
            };
            let got = pool_planes(&x, (2, h, w), (oh, ow), win);
            for p in 0..2 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut m = f32::NEG_INFINITY;
                        for dy in 0..k.0 {
                            for dx in 0..k.1 {
                                let y = (oy * s.0 + dy) as isize - pad.0 as isize;
                                let xx = (ox * s.1 + dx) as isize - pad.1 as isize;
                                if (0..h as isize).contains(&y) && (0..w as isize).contains(&xx) {
                                    m = m.max(x[p * h * w + y as usize * w + xx as usize]);
                                }
                            }
                        }
                        assert_eq!(got[(p * oh + oy) * ow + ox], m, "{k:?} {s:?} {pad:?}");
                    }
                }
            }
        }
    }

    /// Matches Candle's max_pool2d on an edge-replicated input (the plain path) for darknet's two
    /// yolov3-tiny shapes and an odd one.
    #[test]
    fn matches_padded_candle_maxpool() {
        for (size, stride, h, w) in [(2, 2, 8, 8), (2, 1, 13, 13), (3, 2, 9, 7)] {
            let padding = size - 1;
            let p = MaxPool {
                size,
                stride,
                pad_lo: padding / 2,
                pad_hi: padding - padding / 2,
            };
            let n = 2 * 3 * h * w;
            let data: Vec<f32> = (0..n).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
            let x = Tensor::from_vec(data, (2, 3, h, w), &Device::Cpu).unwrap();
            let fast = x.apply_op1_no_bwd(&p).unwrap();
            let plain = x
                .pad_with_same(2, p.pad_lo, p.pad_hi)
                .unwrap()
                .pad_with_same(3, p.pad_lo, p.pad_hi)
                .unwrap()
                .max_pool2d_with_stride(size, stride)
                .unwrap();
            assert_eq!(fast.dims(), plain.dims());
            let a: Vec<f32> = fast.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = plain.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b, "size {size} stride {stride} {h}x{w}");
        }
    }
}
