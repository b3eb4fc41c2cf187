//! `Conv` and `ConvTranspose`. A Conv whose weights are constants is bound to them at load
//! ([`ConvOp::bind`]): on the CPU, square kernels with symmetric padding and no dilation run as
//! vigil's [`FastConv`] (im2col/Winograd + one gemm, bias and activation fused); anything else
//! runs through Candle's convolution.

use std::sync::Arc;

use candle_core::{Device, Result, Tensor};

use super::super::super::conv::{FastConv, Fused};
use super::super::proto::Attrs;
use super::{Unary, math, req};

/// A parsed `Conv`.
#[derive(Debug, Clone)]
pub struct ConvOp {
    pub kernel: Option<(usize, usize)>,
    pub strides: (usize, usize),
    /// top, left, bottom, right
    pub pads: [usize; 4],
    pub dilations: (usize, usize),
    pub group: usize,
    /// `SAME_UPPER`/`SAME_LOWER` padding, resolved per input size.
    pub auto_pad: Option<bool>,
    /// An activation fused in by the planner.
    pub act: Fused,
    /// Constant weights and bias (set by [`ConvOp::bind`]); then the node takes only `x`.
    pub bound: Option<(Tensor, Option<Tensor>)>,
    pub fast: Option<Arc<FastConv>>,
}

fn pair(
    v: Option<Vec<i64>>,
    default: usize,
    what: &str,
) -> std::result::Result<(usize, usize), String> {
    match v.as_deref() {
        None => Ok((default, default)),
        Some([a, b]) if *a > 0 && *b > 0 => Ok((*a as usize, *b as usize)),
        Some(other) => Err(format!(
            "`{what}` {other:?}: only 2-D convolutions are supported"
        )),
    }
}

impl ConvOp {
    pub fn parse(a: &Attrs) -> std::result::Result<Self, String> {
        let pads = match a.ints("pads")?.as_deref() {
            None => [0; 4],
            Some([t, l, b, r])
                if [*t, *l, *b, *r]
                    .iter()
                    .all(|v| (0..=super::special::MAX_PAD).contains(v)) =>
            {
                [*t as usize, *l as usize, *b as usize, *r as usize]
            }
            Some(other) => {
                return Err(format!(
                    "`pads` {other:?}: only 2-D convolutions are supported"
                ));
            }
        };
        let auto_pad = match a.string_or("auto_pad", "NOTSET")?.as_str() {
            "NOTSET" | "VALID" => None,
            "SAME_UPPER" => Some(true),
            "SAME_LOWER" => Some(false),
            other => return Err(format!("auto_pad `{other}` is not supported")),
        };
        Ok(Self {
            kernel: a
                .ints("kernel_shape")?
                .map(|k| pair(Some(k), 1, "kernel_shape"))
                .transpose()?,
            strides: pair(a.ints("strides")?, 1, "strides")?,
            pads,
            dilations: pair(a.ints("dilations")?, 1, "dilations")?,
            group: a.int_or("group", 1)?.max(1) as usize,
            auto_pad,
            act: Fused::Linear,
            bound: None,
            fast: None,
        })
    }

    /// Fix the weights (and fold a following BatchNorm's `scale, bias, mean, var, eps` into them).
    pub fn bind(&mut self, w: Tensor, b: Option<Tensor>, device: &Device) -> Result<()> {
        if w.dtype() != candle_core::DType::F32 {
            candle_core::bail!(
                "the weight is {}; Conv takes float weights",
                onnx_type_name(w.dtype())
            );
        }
        let (co, _, kh, kw) = w.dims4()?;
        if let Some(k) = self.kernel
            && k != (kh, kw)
        {
            candle_core::bail!("kernel_shape {k:?} but the weights are {kh}x{kw}");
        }
        let [t, l, bo, r] = self.pads;
        let symmetric = t == l && t == bo && t == r;
        if device.is_cpu()
            && kh == kw
            && self.strides.0 == self.strides.1
            && symmetric
            && self.dilations == (1, 1)
            && self.auto_pad.is_none()
        {
            let bias = match &b {
                Some(b) => super::floats(b)?,
                None => vec![0.0; co],
            };
            let c_in = w.dims()[1] * self.group;
            self.fast = Some(Arc::new(
                FastConv {
                    weight: w.flatten_all()?.to_vec1::<f32>()?,
                    bias,
                    c_out: co,
                    c_in,
                    k: kh,
                    stride: self.strides.0,
                    padding: t,
                    groups: self.group,
                    act: self.act,
                    threads: rayon::current_num_threads(),
                    winograd: None,
                }
                .prepared(),
            ));
        }
        self.bound = Some((w, b));
        Ok(())
    }

    /// Fold `BatchNormalization(scale, bias, mean, var, eps)` applied to this conv's output.
    pub fn fold_batch_norm(&mut self, bn: [&Tensor; 4], eps: f32, device: &Device) -> Result<()> {
        let Some((w, b)) = self.bound.take() else {
            candle_core::bail!("BatchNorm fold on an unbound conv");
        };
        let [scale, shift, mean, var] = bn;
        let k = (scale / (var + f64::from(eps))?.sqrt()?)?;
        let w = w.broadcast_mul(&k.reshape(((), 1, 1, 1))?)?;
        let b0 = match b {
            Some(b) => b,
            None => mean.zeros_like()?,
        };
        let b = ((b0 - mean)? * &k)?.add(shift)?;
        self.fast = None;
        self.bind(w, Some(b), device)
    }

    /// Set the fused activation (re-packing the fast path's epilogue).
    pub fn set_activation(&mut self, act: Fused) {
        self.act = act;
        if let Some(f) = self.fast.as_mut() {
            Arc::make_mut(f).act = act;
        }
    }

    pub fn eval(&self, inputs: &[Option<Tensor>]) -> Result<Tensor> {
        let x = req(inputs, 0)?;
        if let Some(fast) = &self.fast
            && x.device().is_cpu()
        {
            return x.contiguous()?.apply_op1_no_bwd(fast.as_ref());
        }
        let (w, b) = match &self.bound {
            Some((w, b)) => (w.clone(), b.clone()),
            None => (req(inputs, 1)?.clone(), inputs.get(2).cloned().flatten()),
        };
        if w.dtype() != candle_core::DType::F32 {
            candle_core::bail!(
                "the weight is {}; Conv takes float weights",
                onnx_type_name(w.dtype())
            );
        }
        let (c, want) = (x.dims4()?.1, w.dims4()?.1 * self.group);
        if c != want {
            candle_core::bail!(
                "the input has {c} channels, the weights {:?} with {} group(s) expect {want}",
                w.dims(),
                self.group
            );
        }
        let y = self.candle_conv(x, &w)?;
        let y = match b {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?)?,
            None => y,
        };
        activation(&y, self.act)
    }

    fn candle_conv(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let (_, _, kh, kw) = w.dims4()?;
        let [mut t, mut l, mut b, mut r] = self.pads;
        if let Some(upper) = self.auto_pad {
            let (_, _, h, wd) = x.dims4()?;
            let same = |n: usize, k: usize, s: usize, d: usize| {
                let out = n.div_ceil(s);
                ((out - 1) * s + (k - 1) * d + 1).saturating_sub(n)
            };
            let ph = same(h, kh, self.strides.0, self.dilations.0);
            let pw = same(wd, kw, self.strides.1, self.dilations.1);
            (t, b) = if upper {
                (ph / 2, ph - ph / 2)
            } else {
                (ph - ph / 2, ph / 2)
            };
            (l, r) = if upper {
                (pw / 2, pw - pw / 2)
            } else {
                (pw - pw / 2, pw / 2)
            };
        }
        let x = x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?;
        if self.strides.0 != self.strides.1 || self.dilations.0 != self.dilations.1 {
            candle_core::bail!("Conv: different strides or dilations per axis are not supported");
        }
        x.contiguous()?.conv2d(
            &w.contiguous()?,
            0,
            self.strides.0,
            self.dilations.0,
            self.group,
        )
    }
}

/// The ONNX name of the type a tensor was computed in (integers load as i64).
fn onnx_type_name(d: candle_core::DType) -> &'static str {
    match d {
        candle_core::DType::I64 => "int64 (an integer type)",
        candle_core::DType::U8 => "uint8/bool",
        _ => "not float",
    }
}

/// Apply a fused activation outside the fast path.
pub fn activation(y: &Tensor, act: Fused) -> Result<Tensor> {
    match act {
        Fused::Linear => Ok(y.clone()),
        Fused::Relu => y.relu(),
        Fused::Leaky(bits) => math::unary(Unary::LeakyRelu(f32::from_bits(bits)), y),
        Fused::Logistic => candle_nn::ops::sigmoid(y),
        Fused::Silu => y.silu(),
        Fused::HardSwish => math::unary(Unary::HardSwish, y),
        Fused::Mish => y * (y.exp()? + 1.0)?.log()?.tanh()?,
    }
}

/// A parsed `ConvTranspose` (groups 1, 2-D, symmetric pads: what detector necks use).
#[derive(Debug, Clone)]
pub struct ConvTransposeOp {
    pub stride: usize,
    pub pad: usize,
    pub output_padding: usize,
    pub dilation: usize,
}

impl ConvTransposeOp {
    pub fn parse(a: &Attrs) -> std::result::Result<Self, String> {
        if a.int_or("group", 1)? != 1 {
            return Err("ConvTranspose with groups is not supported".into());
        }
        let same = |name: &str, default: i64| -> std::result::Result<usize, String> {
            match a.ints(name)?.as_deref() {
                None => Ok(default as usize),
                Some(v) if !v.is_empty() && v.iter().all(|x| *x == v[0] && *x >= 0) => {
                    Ok(v[0] as usize)
                }
                Some(v) => Err(format!(
                    "ConvTranspose `{name}` {v:?}: only equal values per axis are supported"
                )),
            }
        };
        if a.ints("output_shape")?.is_some() {
            return Err("ConvTranspose `output_shape` is not supported; export with pads".into());
        }
        Ok(Self {
            stride: same("strides", 1)?,
            pad: same("pads", 0)?,
            output_padding: same("output_padding", 0)?,
            dilation: same("dilations", 1)?,
        })
    }

    pub fn eval(&self, inputs: &[Option<Tensor>]) -> Result<Tensor> {
        let x = req(inputs, 0)?.contiguous()?;
        let w = req(inputs, 1)?.contiguous()?;
        let y = if x.device().is_cpu() && self.dilation == 1 && x.dtype() == candle_core::DType::F32
        {
            self.gemm_col2im(&x, &w)?
        } else {
            x.conv_transpose2d(
                &w,
                self.pad,
                self.output_padding,
                self.stride,
                self.dilation,
            )?
        };
        match inputs.get(2).and_then(Option::as_ref) {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
    /// On the CPU: `Wᵀ · X` as one matrix product for the whole batch (Candle's gemm,
    /// multithreaded; images side by side as columns), then each column's k × k patch added into
    /// the output (col2im), one (image, output channel) plane per task. Candle's generic
    /// `conv_transpose2d` loops over every input position and tap instead (CenterNet's three
    /// up-convolutions: 62 ms of its 196); a product per image was 412 ms of Mask R-CNN's mask
    /// head (100 regions of 14 × 14).
    fn gemm_col2im(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        use rayon::prelude::*;
        let (b, cin, h, wd) = x.dims4()?;
        let (wcin, cout, kh, kw) = w.dims4()?;
        if wcin != cin {
            candle_core::bail!("ConvTranspose: weights for {wcin} input channels, input has {cin}");
        }
        let (s, p) = (self.stride, self.pad);
        let span = |n: usize, k: usize| ((n - 1) * s + k + self.output_padding).checked_sub(2 * p);
        let (Some(oh), Some(ow)) = (span(h, kh), span(wd, kw)) else {
            candle_core::bail!("ConvTranspose: pads {p} larger than the output");
        };
        super::array::bounded(&[b, cout, oh, ow])?;
        super::array::bounded(&[cout * kh * kw, b, h, wd])?;
        let wt = w.reshape((cin, cout * kh * kw))?.t()?.contiguous()?;
        let xs = x
            .reshape((b, cin, h * wd))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((cin, b * h * wd))?;
        // row (co, ky, kx), columns image after image; read in place (a copy of it cost as
        // much as the product)
        let prod = wt.matmul(&xs)?;
        let (storage, layout) = prod.storage_and_layout();
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("ConvTranspose: strided product".into()))?;
        let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(all)) = &*storage else {
            candle_core::bail!("ConvTranspose: the product is not f32 on the CPU");
        };
        let cols = &all[start..end];
        let plane = h * wd;
        // zeroed by one thread before the parallel sums: first touches of fresh pages from two
        // threads at once cost 5× as much here (300 vs 60 ms for Mask R-CNN's 80 MB)
        let mut out = Vec::with_capacity(b * cout * oh * ow);
        out.resize(b * cout * oh * ow, 0f32);
        out.par_chunks_mut((oh * ow).max(1))
            .with_min_len(8)
            .enumerate()
            .for_each(|(i, dst)| {
                let (bi, co) = (i / cout, i % cout);
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = ((co * kh + ky) * kw + kx) * b * plane;
                        let col = &cols[row + bi * plane..][..plane];
                        // the columns whose output x = ix·s + kx − p lies in [0, ow)
                        let ix_lo = p.saturating_sub(kx).div_ceil(s);
                        let ix_hi = (ow + p).saturating_sub(kx).div_ceil(s).min(wd);
                        for iy in 0..h {
                            let Some(oy) = (iy * s + ky).checked_sub(p).filter(|&y| y < oh) else {
                                continue;
                            };
                            let src = &col[iy * wd..][..wd];
                            let drow = &mut dst[oy * ow..][..ow];
                            for ix in ix_lo..ix_hi {
                                drow[ix * s + kx - p] += src[ix];
                            }
                        }
                    }
                }
            });
        drop(storage);
        Tensor::from_vec(out, (b, cout, oh, ow), x.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gemm + col2im path equals Candle's `conv_transpose2d` (CenterNet's 4×4 stride 2 pad 1,
    /// YOLO-style 2×2 stride 2, output padding, odd sizes, a batch of 2).
    #[test]
    fn conv_transpose_gemm_path_equals_candle() {
        let dev = Device::Cpu;
        for (b, cin, h, w, cout, k, stride, pad, output_padding) in [
            (1, 8, 5, 7, 4, 4, 2, 1, 0),
            (2, 3, 4, 4, 5, 2, 2, 0, 0),
            (1, 6, 3, 5, 2, 3, 2, 1, 1),
            (1, 2, 6, 3, 3, 3, 1, 1, 0),
        ] {
            let n = |len: usize, seed: f32| -> Vec<f32> {
                (0..len).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
            };
            let x = Tensor::from_vec(n(b * cin * h * w, 0.1), (b, cin, h, w), &dev).unwrap();
            let wt = Tensor::from_vec(n(cin * cout * k * k, 0.7), (cin, cout, k, k), &dev).unwrap();
            let op = ConvTransposeOp {
                stride,
                pad,
                output_padding,
                dilation: 1,
            };
            let ours = op.gemm_col2im(&x, &wt).unwrap();
            let want = x
                .conv_transpose2d(&wt, pad, output_padding, stride, 1)
                .unwrap();
            let diff = super::super::max_diff(&ours, &want);
            assert!(
                diff < 1e-4,
                "{:?}: {diff}",
                (b, cin, h, w, cout, k, stride, pad, output_padding)
            );
        }
    }
}
