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
    /// `x · σ(x)` (SiLU/Swish: every modern YOLO; ONNX exports it as Sigmoid + Mul)
    Silu,
    /// `x · clamp(x/6 + ½, 0, 1)`
    HardSwish,
}

/// `e^x` without libm, for the epilogue: Cephes' expf polynomial after range reduction, written
/// branch-free so a row's loop vectorizes (libm's scalar `expf` made SiLU's epilogue cost as much as
/// the gemm on thin layers). Relative error ≤ 2e-7 over the clamped range; `x` below −87 gives ~0,
/// above 88 gives ~e^88.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer in the low bits
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let k = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((k + 127) << 23) as u32)
}

impl Fused {
    /// `act(row[i] + bias)` over a row, each activation in its own tight loop so it vectorizes.
    pub fn apply_row(self, row: &mut [f32], bias: f32) {
        match self {
            Self::Linear => row.iter_mut().for_each(|v| *v += bias),
            Self::Relu => row.iter_mut().for_each(|v| *v = (*v + bias).max(0.0)),
            Self::Silu => row.iter_mut().for_each(|v| {
                let x = *v + bias;
                *v = x / (1.0 + fast_exp(-x));
            }),
            Self::Logistic => row
                .iter_mut()
                .for_each(|v| *v = 1.0 / (1.0 + fast_exp(-(*v + bias)))),
            _ => row.iter_mut().for_each(|v| *v = self.apply(*v + bias)),
        }
    }

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
            Self::Silu => v / (1.0 + (-v).exp()),
            Self::HardSwish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
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
    /// Winograd F(2×2, 3×3) weights `U = G g Gᵀ`, `(16, c_out, c_in)`: set by [`FastConv::prepared`]
    /// for 3×3, stride-1, pad-1, ungrouped layers, which then run as 16 smaller gemms (2.25× fewer
    /// multiplications) instead of im2col.
    pub winograd: Option<Vec<f32>>,
}

impl FastConv {
    /// Finish construction: pick the Winograd path where it pays and transform the weights once.
    /// With few input channels the 16 gemms are too thin (K = c_in) and the transforms dominate:
    /// measured on yolov3-tiny at 416, Winograd doubled the 3→16 layer and lost on 16→32 and 32→64,
    /// broke even at 64, and won from 128 input channels on (the 13×13 1024-filter layer 14.5 → 10 ms).
    pub fn prepared(mut self) -> Self {
        let eligible = self.k == 3
            && self.stride == 1
            && self.padding == 1
            && self.groups == 1
            && self.c_in >= WINOGRAD_MIN_C_IN;
        self.winograd = eligible.then(|| winograd_weights(&self.weight, self.c_out, self.c_in));
        self
    }

    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.padding - self.k) / self.stride + 1,
            (w + 2 * self.padding - self.k) / self.stride + 1,
        )
    }

    /// A depthwise convolution (one input and one output channel per group: MobileNet,
    /// EfficientNet) computed directly, one channel per task, bias and activation included: the
    /// im2col + gemm route would run a 1-row gemm per channel. Each kernel tap adds a weighted
    /// input row slice to the output row (contiguous for stride 1, so it vectorizes).
    fn depthwise_image(&self, img: &[f32], (h, w): (usize, usize), out: &mut [f32]) {
        let (oh, ow) = self.out_hw(h, w);
        let (k, s, p) = (self.k, self.stride, self.padding);
        out.par_chunks_mut((oh * ow).max(1))
            .enumerate()
            .for_each(|(ch, dst)| {
                let src = &img[ch * h * w..(ch + 1) * h * w];
                let taps = &self.weight[ch * k * k..(ch + 1) * k * k];
                for kx in 0..k {
                    // outputs whose tap kx lands inside the row: 0 ≤ ox·s + kx − p < w
                    let lo = p.saturating_sub(kx).div_ceil(s);
                    let hi = ((w + p).saturating_sub(kx)).div_ceil(s).min(ow);
                    if lo >= hi {
                        continue;
                    }
                    for oy in 0..oh {
                        let row_out = &mut dst[oy * ow + lo..oy * ow + hi];
                        for ky in 0..k {
                            let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&y| y < h) else {
                                continue;
                            };
                            let tap = taps[ky * k + kx];
                            let start = iy * w + lo * s + kx - p;
                            if s == 1 {
                                let row_in = &src[start..start + row_out.len()];
                                for (o, i) in row_out.iter_mut().zip(row_in) {
                                    *o += tap * i;
                                }
                            } else {
                                for (j, o) in row_out.iter_mut().enumerate() {
                                    *o += tap * src[start + j * s];
                                }
                            }
                        }
                    }
                }
                self.act.apply_row(dst, self.bias[ch]);
            });
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
                        if s == 1 {
                            // Contiguous: the columns whose input lies inside are one copy.
                            let lo = p.saturating_sub(kx).min(ow);
                            let hi = (w + p).saturating_sub(kx).clamp(lo, ow);
                            dst[..lo].fill(0.0);
                            dst[lo..hi].copy_from_slice(&src[lo + kx - p..hi + kx - p]);
                            dst[hi..].fill(0.0);
                            continue;
                        }
                        // Strided: zero the columns that read padding, then one branch-free loop
                        // over those whose input is inside.
                        let lo = p.saturating_sub(kx).div_ceil(s).min(ow);
                        let hi = (w + p).saturating_sub(kx).div_ceil(s).clamp(lo, ow);
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        let first = lo * s + kx - p;
                        for (d, v) in dst[lo..hi].iter_mut().zip(src[first..].iter().step_by(s)) {
                            *d = *v;
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

    /// One image through Winograd F(2×2, 3×3): the output is cut into 2×2 tiles, each read as a
    /// 4×4 input patch. Per chunk of tile rows: input transform `V = Bᵀ d B` (16 × c × tiles),
    /// 16 gemms `M_ξ = U_ξ · V_ξ`, output transform `Y = Aᵀ M A` straight into NCHW. Bias and
    /// activation follow in the common epilogue.
    fn winograd_image(
        &self,
        u: &[f32],
        img: &[f32],
        (c, h, w): (usize, usize, usize),
        out: &mut [f32],
    ) {
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        // V of one chunk ≈ TILE_BYTES·4
        let target = (TILE_BYTES * 4 / (4 * 16 * c.max(1))).max(tw);
        let rows_per = (target / tw).max(1);
        let chunks = th.div_ceil(rows_per);
        let dst = SendPtr(out.as_mut_ptr());
        let threads = self.threads.max(1);
        if chunks >= 2 * threads {
            (0..chunks).into_par_iter().for_each_init(
                || (Vec::new(), Vec::new()),
                |(v, m), t| {
                    let rows = (t * rows_per, ((t + 1) * rows_per).min(th));
                    // SAFETY: chunks cover disjoint tile rows, so disjoint output rows.
                    unsafe { self.winograd_chunk(u, img, (c, h, w), tw, rows, v, m, &dst, false) };
                },
            );
        } else {
            let (mut v, mut m) = (Vec::new(), Vec::new());
            for t in 0..chunks {
                let rows = (t * rows_per, ((t + 1) * rows_per).min(th));
                // SAFETY: one chunk at a time; `out` is exclusively ours.
                unsafe {
                    self.winograd_chunk(u, img, (c, h, w), tw, rows, &mut v, &mut m, &dst, true)
                };
            }
        }
    }

    /// # Safety
    /// `dst` points at this image's `c_out × h × w` output; no other thread writes the output rows
    /// of tile rows `rows` meanwhile.
    #[allow(clippy::too_many_arguments)]
    #[allow(
        clippy::too_many_lines,
        reason = "the three Winograd phases share raw-pointer buffers under one SAFETY contract, kept in one place"
    )]
    unsafe fn winograd_chunk(
        &self,
        u: &[f32],
        img: &[f32],
        (c, h, w): (usize, usize, usize),
        tw: usize,
        (ty0, ty1): (usize, usize),
        v: &mut Vec<f32>,
        m: &mut Vec<f32>,
        dst: &SendPtr,
        parallel: bool,
    ) {
        let co = self.c_out;
        let pc = (ty1 - ty0) * tw;
        v.resize(16 * c * pc, 0.0);
        m.resize(16 * co * pc, 0.0);
        // input transform, one channel per task
        let vp = SendPtr(v.as_mut_ptr());
        let input = |ci: usize| {
            let plane = &img[ci * h * w..(ci + 1) * h * w];
            let vp = &vp;
            for ty in ty0..ty1 {
                for tx in 0..tw {
                    let p = (ty - ty0) * tw + tx;
                    let (y0, x0) = (2 * ty as isize - 1, 2 * tx as isize - 1);
                    let mut d = [[0f32; 4]; 4];
                    let inside = y0 >= 0 && x0 >= 0 && y0 as usize + 4 <= h && x0 as usize + 4 <= w;
                    for (i, row) in d.iter_mut().enumerate() {
                        let y = y0 + i as isize;
                        if !inside && (y < 0 || y >= h as isize) {
                            continue;
                        }
                        let src = &plane[y as usize * w..(y as usize + 1) * w];
                        for (j, dv) in row.iter_mut().enumerate() {
                            let x = x0 + j as isize;
                            if inside || (x >= 0 && x < w as isize) {
                                *dv = src[x as usize];
                            }
                        }
                    }
                    let mut t = [[0f32; 4]; 4];
                    for j in 0..4 {
                        t[0][j] = d[0][j] - d[2][j];
                        t[1][j] = d[1][j] + d[2][j];
                        t[2][j] = d[2][j] - d[1][j];
                        t[3][j] = d[1][j] - d[3][j];
                    }
                    for (i, ti) in t.iter().enumerate() {
                        let vals = [ti[0] - ti[2], ti[1] + ti[2], ti[2] - ti[1], ti[1] - ti[3]];
                        for (j, val) in vals.into_iter().enumerate() {
                            let xi = i * 4 + j;
                            // SAFETY: index < 16·c·pc; channel ci's entries are written only here.
                            unsafe { *vp.0.add((xi * c + ci) * pc + p) = val };
                        }
                    }
                }
            }
        };
        if parallel {
            (0..c).into_par_iter().for_each(input);
        } else {
            (0..c).for_each(input);
        }
        // 16 gemms: M_ξ (co × pc) = U_ξ (co × c) · V_ξ (c × pc)
        let mp = SendPtr(m.as_mut_ptr());
        let vr = SendPtr(v.as_mut_ptr());
        let product = |xi: usize| {
            let (mp, vr) = (&mp, &vr);
            // SAFETY: M_ξ and V_ξ are disjoint blocks of m and v; U_ξ is co × c.
            unsafe {
                Self::gemm(
                    co,
                    pc,
                    c,
                    mp.0.add(xi * co * pc),
                    pc,
                    &u[xi * co * c..(xi + 1) * co * c],
                    vr.0.add(xi * c * pc),
                    pc,
                    1,
                )
            };
        };
        if parallel {
            (0..16).into_par_iter().for_each(product);
        } else {
            (0..16).for_each(product);
        }
        // output transform, one output channel per task
        let mr = &*m;
        let output = |o: usize| {
            for ty in ty0..ty1 {
                for tx in 0..tw {
                    let p = (ty - ty0) * tw + tx;
                    let mut mm = [[0f32; 4]; 4];
                    for (i, row) in mm.iter_mut().enumerate() {
                        for (j, mv) in row.iter_mut().enumerate() {
                            *mv = mr[((i * 4 + j) * co + o) * pc + p];
                        }
                    }
                    let mut r = [[0f32; 4]; 2];
                    for j in 0..4 {
                        r[0][j] = mm[0][j] + mm[1][j] + mm[2][j];
                        r[1][j] = mm[1][j] - mm[2][j] - mm[3][j];
                    }
                    for (dy, ri) in r.iter().enumerate() {
                        let y = 2 * ty + dy;
                        if y >= h {
                            continue;
                        }
                        let ys = [ri[0] + ri[1] + ri[2], ri[1] - ri[2] - ri[3]];
                        for (dx, val) in ys.into_iter().enumerate() {
                            let x = 2 * tx + dx;
                            if x < w {
                                // SAFETY: (o, y, x) is inside this image's output, in rows only
                                // this chunk writes.
                                unsafe { *dst.0.add((o * h + y) * w + x) = val };
                            }
                        }
                    }
                }
            }
        };
        if parallel {
            (0..co).into_par_iter().for_each(output);
        } else {
            (0..co).for_each(output);
        }
    }

    /// Run on a contiguous NCHW f32 buffer.
    #[allow(
        clippy::too_many_lines,
        reason = "the tiled and single-gemm paths share one raw-pointer contract; to split with the convolution rework (issue 21)"
    )]
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
            if cin_g == 1 && cout_g == 1 {
                self.depthwise_image(img, (h, w), out_b);
                continue;
            }
            if let Some(u) = &self.winograd {
                self.winograd_image(u, img, (c, h, w), out_b);
            }
            for g in 0..self.groups {
                if self.winograd.is_some() {
                    break;
                }
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
                                );
                                // The epilogue while the tile is in cache.
                                for o in 0..cout_g {
                                    let row = std::slice::from_raw_parts_mut(
                                        dst.0.add(o * n + cols.0),
                                        nt,
                                    );
                                    self.act.apply_row(row, self.bias[g * cout_g + o]);
                                }
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
            if tiled && self.winograd.is_none() {
                continue; // the tiles applied bias and activation themselves
            }
            // Bias and activation, one output channel row per task: `par_chunks_mut` hands each
            // task its own row, so no two tasks ever hold overlapping mutable slices.
            out_b
                .par_chunks_mut(n.max(1))
                .zip(self.bias.par_iter())
                .for_each(|(row, &bv)| self.act.apply_row(row, bv));
        }
        out
    }
}

/// `U = G g Gᵀ` for every (output, input) channel pair of 3×3 weights `(c_out, c_in, 3, 3)`,
/// laid out `(16, c_out, c_in)` so each of the 16 positions is one gemm's left side.
fn winograd_weights(weight: &[f32], co: usize, ci: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * co * ci];
    for o in 0..co {
        for i in 0..ci {
            let g = &weight[(o * ci + i) * 9..(o * ci + i + 1) * 9];
            // s = G g (4 × 3)
            let mut s = [[0f32; 3]; 4];
            for j in 0..3 {
                let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                s[0][j] = g0;
                s[1][j] = 0.5 * (g0 + g1 + g2);
                s[2][j] = 0.5 * (g0 - g1 + g2);
                s[3][j] = g2;
            }
            for (a, sa) in s.iter().enumerate() {
                let row = [
                    sa[0],
                    0.5 * (sa[0] + sa[1] + sa[2]),
                    0.5 * (sa[0] - sa[1] + sa[2]),
                    sa[2],
                ];
                for (bcol, val) in row.into_iter().enumerate() {
                    u[((a * 4 + bcol) * co + o) * ci + i] = val;
                }
            }
        }
    }
    u
}

/// Fewest input channels for which Winograd beats im2col + gemm here (see [`FastConv::prepared`]).
const WINOGRAD_MIN_C_IN: usize = 128;

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

    /// The epilogue's exp stays within 3e-7 relative of libm's over the range activations see.
    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0f32;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (a, b) = (fast_exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(fast_exp(-1000.0) < 1e-37 && fast_exp(1000.0).is_finite());
    }

    /// Each activation's row form (the fused epilogue) equals its scalar definition.
    #[test]
    fn row_epilogue_matches_scalar_activations() {
        let xs = values(4096, 7);
        for act in [
            Fused::Linear,
            Fused::Relu,
            Fused::Leaky(0.1f32.to_bits()),
            Fused::Logistic,
            Fused::Mish,
            Fused::Silu,
            Fused::HardSwish,
        ] {
            let mut row: Vec<f32> = xs.iter().map(|v| v * 20.0).collect();
            let want: Vec<f32> = row.iter().map(|v| act.apply(v + 0.25)).collect();
            act.apply_row(&mut row, 0.25);
            for (a, b) in row.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{act:?}: {a} vs {b}"
                );
            }
        }
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
            // Winograd (chosen from 128 input channels): odd sizes (partial 2×2 tiles), one chunk
            // with parallel transforms and gemms, many chunks in parallel
            (2, 128, 13, 13, 9, 3, 1, 1, 1),
            (1, 128, 61, 45, 8, 3, 1, 1, 1),
            // depthwise (the direct path): strides 1 and 2, kernels 3 and 5, odd sizes
            (1, 16, 13, 11, 16, 3, 1, 1, 16),
            (2, 8, 15, 9, 8, 3, 2, 1, 8),
            (1, 12, 10, 14, 12, 5, 2, 2, 12),
            (1, 4, 6, 7, 4, 5, 1, 2, 4),
            // few input channels: YOLOv8's 3×3 s2 stem, YOLOv5's 6×6 s2 p2, ResNet's 7×7 s2 p3,
            // stride 3, one channel (a direct path for these lost to im2col + gemm: 3.6–10 ms
            // against 2.3–3.2 for yolov3-tiny's first layer)
            (1, 3, 17, 23, 16, 3, 2, 1, 1),
            (1, 3, 20, 21, 8, 6, 2, 2, 1),
            (1, 2, 15, 14, 4, 7, 2, 3, 1),
            (2, 4, 11, 10, 5, 3, 3, 0, 1),
            (1, 1, 9, 9, 3, 5, 1, 2, 1),
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
                winograd: None,
            }
            .prepared();
            // the Winograd path on small channel counts too (forced), for coverage
            let op = if k == 3 && s == 1 && p == 1 && g == 1 && op.winograd.is_none() {
                FastConv {
                    winograd: Some(winograd_weights(&op.weight, co, c)),
                    ..op
                }
            } else {
                op
            };
            assert_eq!(
                op.winograd.is_some(),
                k == 3 && s == 1 && p == 1 && g == 1,
                "case {i}"
            );
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
