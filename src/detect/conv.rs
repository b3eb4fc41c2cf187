//! A fast CPU convolution for Candle, as a custom op: im2col into one reusable column matrix, one
//! multithreaded `gemm` against weights packed once at load, and bias + activation fused into a
//! single pass over the output. Candle's stock CPU conv tiles its im2col and transposes its
//! result (NHWC → NCHW) on every call; here the gemm writes NCHW directly.
//!
//! Shapes: input `(batch, c_in, h, w)` f32, contiguous; weights `(c_out, c_in/groups, k, k)`;
//! output `(batch, c_out, h_out, w_out)`. Other devices use Candle's own conv (see `Conv`).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

/// Activations that can be fused into the output pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fused {
    Linear,
    /// `max(x, slope·x)`
    Leaky(u32),
    Relu,
    /// `1 / (1 + e^-x)`
    Logistic,
    /// `x · tanh(ln(1 + e^x))`
    Mish,
}

impl Fused {
    #[inline]
    fn apply(self, v: f32) -> f32 {
        match self {
            Self::Linear => v,
            Self::Leaky(bits) => {
                let s = f32::from_bits(bits);
                if v > 0.0 { v } else { v * s }
            }
            Self::Relu => v.max(0.0),
            Self::Logistic => 1.0 / (1.0 + (-v).exp()),
            Self::Mish => v * v.exp().ln_1p().tanh(),
        }
    }
}

/// Convolution parameters and pre-packed weights.
#[derive(Debug, Clone)]
pub struct FastConv {
    /// `(c_out, c_in/groups · k · k)` row-major: darknet's and Candle's layout, used as the gemm's left side.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub c_out: usize,
    pub c_in: usize,
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub act: Fused,
    pub threads: usize,
}

impl FastConv {
    fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.padding - self.k) / self.stride + 1,
            (w + 2 * self.padding - self.k) / self.stride + 1,
        )
    }

    /// Fill `col` (`c · k · k` rows × `(y1 − y0) · ow` columns) for output rows `y0..y1` of one
    /// image's `c` channels.
    fn im2col_rows(
        &self,
        x: &[f32],
        c: usize,
        (h, w): (usize, usize),
        ow: usize,
        (y0, y1): (usize, usize),
        col: &mut [f32],
    ) {
        let (k, s, p) = (self.k, self.stride, self.padding);
        let n = (y1 - y0) * ow;
        for ci in 0..c {
            let plane = &x[ci * h * w..(ci + 1) * h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let r = (ci * k + ky) * k + kx;
                    let row = &mut col[r * n..(r + 1) * n];
                    for oy in y0..y1 {
                        let dst = &mut row[(oy - y0) * ow..(oy - y0 + 1) * ow];
                        let iy = (oy * s + ky) as isize - p as isize;
                        if iy < 0 || iy >= h as isize {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                        for (ox, d) in dst.iter_mut().enumerate() {
                            let ix = (ox * s + kx) as isize - p as isize;
                            *d = if ix >= 0 && (ix as usize) < w {
                                src[ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    }

    /// `dst (m × n, row stride dst_rs) = lhs (m × k) · rhs (k × n, row stride rhs_rs)`.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `m` rows of `n` values spaced `dst_rs` apart, and no other
    /// thread may touch those values meanwhile; `lhs` holds `m · k` values and `rhs` `k` rows of `n`
    /// values spaced `rhs_rs` apart.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        n: usize,
        k: usize,
        dst: *mut f32,
        dst_rs: usize,
        lhs: &[f32],
        rhs: *const f32,
        rhs_rs: usize,
        threads: usize,
    ) {
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: forwarded from the caller's contract; strides describe row-major matrices.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst,
                1,
                dst_rs as isize,
                false,
                lhs.as_ptr(),
                1,
                k as isize,
                rhs,
                1,
                rhs_rs as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }

    /// Bias and activation over `len` outputs of each of `rows` channels starting at `dst`.
    fn epilogue(&self, out: &mut [f32], n: usize, cols: (usize, usize)) {
        for (co, row) in out.chunks_mut(n).enumerate() {
            let bv = self.bias[co];
            for v in &mut row[cols.0..cols.1] {
                *v = self.act.apply(*v + bv);
            }
        }
    }

    /// Run on a contiguous NCHW f32 buffer.
    pub fn run(&self, x: &[f32], (b, c, h, w): (usize, usize, usize, usize)) -> Vec<f32> {
        let (oh, ow) = self.out_hw(h, w);
        let n = oh * ow;
        let cin_g = c / self.groups;
        let cout_g = self.c_out / self.groups;
        let kdim = cin_g * self.k * self.k;
        let direct = self.k == 1 && self.stride == 1 && self.padding == 0;
        let mut out = vec![0f32; b * self.c_out * n];
        // Large images: split the output rows into cache-sized tiles, one tile per task, each doing
        // its own im2col and a single-threaded gemm straight into its columns of the output.
        // Small images (deep layers): one gemm, parallel inside.
        let tile_cols = (TILE_BYTES / (4 * kdim.max(1))).clamp(ow, MAX_TILE_COLS.max(ow));
        let rows_per_tile = (tile_cols / ow).max(1);
        let tiles = oh.div_ceil(rows_per_tile);
        let tiled = tiles >= 2 * self.threads.max(1);
        for bi in 0..b {
            let img = &x[bi * c * h * w..(bi + 1) * c * h * w];
            let out_b = &mut out[bi * self.c_out * n..(bi + 1) * self.c_out * n];
            for g in 0..self.groups {
                let xg = &img[g * cin_g * h * w..(g + 1) * cin_g * h * w];
                let lhs = &self.weight[g * cout_g * kdim..(g + 1) * cout_g * kdim];
                let out_g = &mut out_b[g * cout_g * n..(g + 1) * cout_g * n];
                if tiled {
                    let dst = SendPtr(out_g.as_mut_ptr());
                    (0..tiles)
                        .into_par_iter()
                        .for_each_init(Vec::new, |col, t| {
                            let (y0, y1) = (t * rows_per_tile, ((t + 1) * rows_per_tile).min(oh));
                            let cols = (y0 * ow, y1 * ow);
                            let nt = cols.1 - cols.0;
                            let rhs: *const f32 = if direct {
                                // SAFETY: columns cols.0.. of each of the kdim input rows (stride n) exist.
                                unsafe { xg.as_ptr().add(cols.0) }
                            } else {
                                col.resize(kdim * nt, 0.0);
                                self.im2col_rows(xg, cin_g, (h, w), ow, (y0, y1), col);
                                col.as_ptr()
                            };
                            let rhs_rs = if direct { n } else { nt };
                            let dst = &dst;
                            // SAFETY: this task alone writes columns cols.0..cols.1 of the cout_g rows
                            // (stride n) of out_g; tiles are disjoint column ranges.
                            unsafe {
                                Self::gemm(
                                    cout_g,
                                    nt,
                                    kdim,
                                    dst.0.add(cols.0),
                                    n,
                                    lhs,
                                    rhs,
                                    rhs_rs,
                                    1,
                                )
                            };
                        });
                } else {
                    let mut col = Vec::new();
                    let rhs: *const f32 = if direct {
                        xg.as_ptr()
                    } else {
                        col.resize(kdim * n, 0.0);
                        self.im2col_rows(xg, cin_g, (h, w), ow, (0, oh), &mut col);
                        col.as_ptr()
                    };
                    // SAFETY: out_g is cout_g × n, exclusively borrowed here; rhs is kdim × n.
                    unsafe {
                        Self::gemm(
                            cout_g,
                            n,
                            kdim,
                            out_g.as_mut_ptr(),
                            n,
                            lhs,
                            rhs,
                            n,
                            self.threads,
                        )
                    };
                }
            }
            let chunk = n.div_ceil(self.threads.max(1) * 4).max(1024);
            let spans: Vec<(usize, usize)> = (0..n)
                .step_by(chunk)
                .map(|s| (s, (s + chunk).min(n)))
                .collect();
            let dst = SendPtr(out_b.as_mut_ptr());
            let len = out_b.len();
            spans.into_par_iter().for_each(|cols| {
                let dst = &dst;
                // SAFETY: each task touches only its own column span of every row; the spans are
                // disjoint, so the slices rebuilt here never overlap in what they write.
                let out = unsafe { std::slice::from_raw_parts_mut(dst.0, len) };
                self.epilogue(out, n, cols);
            });
        }
        out
    }
}

/// Bytes of im2col columns one tile aims to keep in cache.
const TILE_BYTES: usize = 256 * 1024;
/// Upper bound on a tile's columns.
const MAX_TILE_COLS: usize = 8192;

/// A raw pointer handed to rayon tasks that write disjoint parts of one buffer.
struct SendPtr(*mut f32);
// SAFETY: only used to give tasks disjoint regions of a buffer that outlives them (see call sites).
unsafe impl Send for SendPtr {}
// SAFETY: as above; tasks never read what another writes.
unsafe impl Sync for SendPtr {}

impl CustomOp1 for FastConv {
    fn name(&self) -> &'static str {
        "vigil-fast-conv2d"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        if c != self.c_in {
            candle_core::bail!("fast conv: {c} input channels, weights want {}", self.c_in);
        }
        if h + 2 * self.padding < self.k || w + 2 * self.padding < self.k {
            candle_core::bail!("fast conv: {h}x{w} input is smaller than the kernel");
        }
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("fast conv: only f32 is supported");
        };
        let x = match layout.contiguous_offsets() {
            Some((start, end)) => &data[start..end],
            None => candle_core::bail!("fast conv: input must be contiguous"),
        };
        let (oh, ow) = self.out_hw(h, w);
        Ok((
            CpuStorage::F32(self.run(x, (b, c, h, w))),
            Shape::from((b, self.c_out, oh, ow)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// A deterministic pseudo-random sequence (no RNG crate needed in the library).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The fast path equals Candle's plain conv2d (+ bias + leaky) to 1e-4 relative, on odd sizes,
    /// strides, paddings, groups and batches.
    #[test]
    fn matches_candle_conv2d_on_odd_shapes() {
        let dev = Device::Cpu;
        let cases = [
            // (b, c_in, h, w, c_out, k, stride, pad, groups)
            (1, 3, 13, 17, 5, 3, 1, 1, 1),
            (2, 4, 9, 7, 6, 3, 2, 1, 1),
            (1, 6, 11, 5, 4, 1, 1, 0, 1),
            (1, 8, 10, 10, 8, 3, 1, 1, 2),
            (3, 5, 7, 9, 7, 5, 1, 2, 1),
            (1, 3, 8, 8, 2, 2, 2, 0, 1),
        ];
        for (i, &(b, c, h, w, co, k, s, p, g)) in cases.iter().enumerate() {
            let x = values(b * c * h * w, 1 + i as u64);
            let wt = values(co * (c / g) * k * k, 100 + i as u64);
            let bias = values(co, 200 + i as u64);
            let op = FastConv {
                weight: wt.clone(),
                bias: bias.clone(),
                c_out: co,
                c_in: c,
                k,
                stride: s,
                padding: p,
                groups: g,
                act: Fused::Leaky(0.1f32.to_bits()),
                threads: 2,
            };
            let xt = Tensor::from_vec(x, (b, c, h, w), &dev).unwrap();
            let fast = xt.apply_op1_no_bwd(&op).unwrap();
            let kt = Tensor::from_vec(wt, (co, c / g, k, k), &dev).unwrap();
            let bt = Tensor::from_vec(bias, (1, co, 1, 1), &dev).unwrap();
            let plain = xt
                .conv2d(&kt, p, s, 1, g)
                .unwrap()
                .broadcast_add(&bt)
                .unwrap();
            let plain = candle_nn::ops::leaky_relu(&plain, 0.1).unwrap();
            assert_eq!(fast.dims(), plain.dims(), "case {i}");
            let a: Vec<f32> = fast.flatten_all().unwrap().to_vec1().unwrap();
            let e: Vec<f32> = plain.flatten_all().unwrap().to_vec1().unwrap();
            for (j, (x, y)) in a.iter().zip(&e).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-4 * y.abs().max(1.0),
                    "case {i} [{j}]: {x} vs {y}"
                );
            }
        }
    }
}
