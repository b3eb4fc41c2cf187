//! Quantized CONV_2D and DEPTHWISE_CONV_2D over NHWC tensors, as the interpreter's XNNPACK
//! kernels compute them: `acc = bias + Σ (x − x_zp)(w − w_zp)` in int32, then the "fp32"
//! requantization — `acc` times the f32 scale `x_scale · w_scale / y_scale`, rounded half to
//! even — plus the output zero point, clamped to the fused activation's range. Padding
//! contributes nothing (it stands for the input's zero point).

use rayon::prelude::*;

use super::TfliteError;
use super::gemm::{PackedWeights, TILE};
use super::quant::{QType, activation_range};
use super::schema::{ConvOptions, DType, ModelDef, OpDef, Padding, TensorDef};

/// A convolution with its weights offset by their zero point and its multipliers computed.
#[derive(Debug)]
pub struct ConvStep {
    depthwise: bool,
    /// `(batch, height, width, channels)`.
    input: [usize; 4],
    output: [usize; 4],
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    /// Top and left padding.
    pad: (usize, usize),
    depth_multiplier: usize,
    /// Depthwise: `[ky][kx][out]` minus the zero point (regular convolutions keep theirs packed).
    weights: Vec<i16>,
    /// Regular: `[out][ky · kx · in]` minus the zero point, packed for the matrix kernel.
    packed: Option<PackedWeights>,
    bias: Vec<i32>,
    /// Per output channel: `x_scale · w_scale / y_scale`, in f32 as XNNPACK computes it.
    scales: Vec<f32>,
    input_zero: i32,
    output_zero: i32,
    range: (i32, i32),
}

fn dims4(t: &TensorDef) -> Result<[usize; 4], TfliteError> {
    <[usize; 4]>::try_from(t.shape.as_slice()).map_err(|_| {
        TfliteError::Format(format!(
            "tensor `{}` has shape {:?}; expected 4 dimensions",
            t.name, t.shape
        ))
    })
}

/// Check that the output shape is what the input, weights and options give; the padding
/// before the first row and column.
fn check_geometry(
    input: [usize; 4],
    output: [usize; 4],
    wd: [usize; 4],
    o: &ConvOptions,
    depthwise: bool,
    name: &str,
) -> Result<(usize, usize), TfliteError> {
    let (kernel, out_channels) = if depthwise {
        ((wd[1], wd[2]), wd[3])
    } else {
        ((wd[1], wd[2]), wd[0])
    };
    if kernel.0 == 0 || kernel.1 == 0 || input.contains(&0) {
        return Err(TfliteError::Format(format!(
            "`{name}`: input {input:?} with weights {wd:?}"
        )));
    }
    let (oh, pad_h) = out_and_pad(input[1], kernel.0, o.stride.0, o.dilation.0, o.padding);
    let (ow, pad_w) = out_and_pad(input[2], kernel.1, o.stride.1, o.dilation.1, o.padding);
    let channels_ok = if depthwise {
        out_channels == input[3] * o.depth_multiplier
    } else {
        wd[3] == input[3]
    };
    if output != [input[0], oh, ow, out_channels] || !channels_ok {
        return Err(TfliteError::Format(format!(
            "`{name}`: input {input:?} and weights {wd:?} give {:?}, the file says {output:?}",
            [input[0], oh, ow, out_channels]
        )));
    }
    Ok((pad_h, pad_w))
}

/// Output size and the padding before the first element (TFLite's `ComputePaddingHeightWidth`).
fn out_and_pad(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
) -> (usize, usize) {
    let effective = (kernel - 1) * dilation + 1;
    let out = match padding {
        Padding::Same => input.div_ceil(stride),
        Padding::Valid => (input + stride).saturating_sub(effective) / stride,
    };
    let total = ((out.saturating_sub(1)) * stride + effective).saturating_sub(input);
    (out, total / 2)
}

impl ConvStep {
    pub fn prepare(
        model: &ModelDef,
        op: &OpDef,
        o: &ConvOptions,
        depthwise: bool,
    ) -> Result<Self, TfliteError> {
        let t = |i: usize| {
            op.inputs
                .get(i)
                .copied()
                .flatten()
                .map(|t| &model.tensors[t])
        };
        let (x, w) = match (t(0), t(1)) {
            (Some(x), Some(w)) => (x, w),
            _ => {
                return Err(TfliteError::Format(
                    "a convolution needs an input and weights".into(),
                ));
            }
        };
        let y = &model.tensors[*op
            .outputs
            .first()
            .ok_or_else(|| TfliteError::Format("no output".into()))?];
        let (input, output, wd) = (dims4(x)?, dims4(y)?, dims4(w)?);
        let (kernel, out_channels) = if depthwise {
            ((wd[1], wd[2]), wd[3])
        } else {
            ((wd[1], wd[2]), wd[0])
        };
        let pad = check_geometry(input, output, wd, o, depthwise, &y.name)?;
        let (xs, xz) = super::per_tensor(x)?;
        let (ys, yz) = super::per_tensor(y)?;
        let wq = w
            .quant
            .as_ref()
            .ok_or_else(|| TfliteError::Unsupported(format!("float weights `{}`", w.name)))?;
        let per_channel = |v: &[f32], i: usize| v.get(i).or(v.first()).copied().unwrap_or(0.0);
        let zeros: Vec<i32> = (0..out_channels)
            .map(|c| {
                wq.zero_point
                    .get(c)
                    .or(wq.zero_point.first())
                    .copied()
                    .unwrap_or(0) as i32
            })
            .collect();
        let weights = offset_weights(model, op.inputs[1].unwrap_or(0), w, &zeros, depthwise)?;
        let bias = match op.inputs.get(2).copied().flatten() {
            Some(b) => super::i32_data(model, b, out_channels)?,
            None => vec![0; out_channels],
        };
        let scales = (0..out_channels)
            .map(|c| xs * per_channel(&wq.scale, c) / ys)
            .collect();
        let range = match y.dtype {
            DType::U8 => activation_range::<u8>(o.activation, ys, yz),
            _ => activation_range::<i8>(o.activation, ys, yz),
        };
        let packed = (!depthwise)
            .then(|| PackedWeights::new(&weights, out_channels, kernel.0 * kernel.1 * input[3]));
        Ok(Self {
            depthwise,
            packed,
            input,
            output,
            kernel,
            stride: o.stride,
            dilation: o.dilation,
            pad,
            depth_multiplier: o.depth_multiplier,
            weights,
            bias,
            scales,
            input_zero: xz,
            output_zero: yz,
            range,
        })
    }

    pub fn is_depthwise(&self) -> bool {
        self.depthwise
    }

    /// Run on one input tensor's elements.
    pub fn run<T: QType>(&self, x: &[T]) -> Vec<T> {
        let mut xi = vec![0i16; x.len()];
        xi.par_chunks_mut(1 << 16)
            .zip(x.par_chunks(1 << 16))
            .for_each(|(d, s)| {
                for (d, v) in d.iter_mut().zip(s) {
                    *d = (v.to_i32() - self.input_zero) as i16;
                }
            });
        let [_, oh, ow, oc] = self.output;
        let mut out = vec![T::default(); self.output.iter().product()];
        out.par_chunks_mut(ow * oc)
            .enumerate()
            .for_each(|(row, out_row)| {
                let (b, oy) = (row / oh, row % oh);
                if self.depthwise {
                    self.depthwise_row(&xi, b, oy, out_row);
                } else {
                    self.conv_row(&xi, b, oy, out_row);
                }
            });
        out
    }

    /// One pixel's outputs from its int32 sums (`bias` added when given): zipped slices, no
    /// indexing, so the loop vectorizes.
    #[inline(always)]
    fn requantize<T: QType>(&self, sums: &[i32], bias: Option<&[i32]>, out: &mut [T]) {
        let (lo, hi, zero) = (self.range.0, self.range.1, self.output_zero);
        let one = |acc: i32, scale: f32| {
            let scaled = round_half_even(acc as f32 * scale) as i32;
            T::from_i32((scaled + zero).clamp(lo, hi))
        };
        match bias {
            Some(bias) => {
                for (((y, &s), &b), &scale) in out.iter_mut().zip(sums).zip(bias).zip(&self.scales)
                {
                    *y = one(s + b, scale);
                }
            }
            None => {
                for ((y, &s), &scale) in out.iter_mut().zip(sums).zip(&self.scales) {
                    *y = one(s, scale);
                }
            }
        }
    }

    /// The input row and column an output position's kernel tap reads, if inside the image.
    #[inline(always)]
    fn tap(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.stride.0 + ky * self.dilation.0).checked_sub(self.pad.0)?;
        let ix = (ox * self.stride.1 + kx * self.dilation.1).checked_sub(self.pad.1)?;
        (iy < self.input[1] && ix < self.input[2]).then_some((iy, ix))
    }

    /// One output row of a regular convolution: patches gathered [`TILE`] pixels at a time
    /// (taps outside the image stay zero) and multiplied with the packed weights.
    fn conv_row<T: QType>(&self, xi: &[i16], b: usize, oy: usize, out_row: &mut [T]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above); the function is otherwise safe.
            unsafe { self.conv_row_avx2(xi, b, oy, out_row) };
            return;
        }
        self.conv_row_body(xi, b, oy, out_row);
    }

    /// [`Self::conv_row`] built with AVX2 enabled: the gathering and requantization loops
    /// vectorize 8 wide.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn conv_row_avx2<T: QType>(&self, xi: &[i16], b: usize, oy: usize, out_row: &mut [T]) {
        self.conv_row_body(xi, b, oy, out_row);
    }

    #[inline(always)]
    fn conv_row_body<T: QType>(&self, xi: &[i16], b: usize, oy: usize, out_row: &mut [T]) {
        let Some(packed) = &self.packed else { return };
        let [_, h, w, c] = self.input;
        let oc = self.output[3];
        let (kh, kw) = self.kernel;
        let (pl, sl) = (packed.patch_len(), packed.sums_len());
        let mut patches = vec![0i16; TILE * pl];
        let mut sums = vec![0i32; TILE * sl];
        let ow = self.output[2];
        for ox0 in (0..ow).step_by(TILE) {
            let n = (ow - ox0).min(TILE);
            for p in 0..n {
                let patch = &mut patches[p * pl..(p + 1) * pl];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let dst = &mut patch[(ky * kw + kx) * c..][..c];
                        match self.tap(oy, ox0 + p, ky, kx) {
                            Some((iy, ix)) => {
                                dst.copy_from_slice(&xi[((b * h + iy) * w + ix) * c..][..c])
                            }
                            None => dst.fill(0),
                        }
                    }
                }
            }
            packed.tile(&patches, &mut sums);
            for p in 0..n {
                let out_px = &mut out_row[(ox0 + p) * oc..(ox0 + p + 1) * oc];
                self.requantize(&sums[p * sl..p * sl + oc], Some(&self.bias), out_px);
            }
        }
    }

    /// One output row of a depthwise convolution, vectorized across channels; built twice,
    /// the second time with AVX2 enabled (where the CPU has it, 8 channels an instruction).
    fn depthwise_row<T: QType>(&self, xi: &[i16], b: usize, oy: usize, out_row: &mut [T]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above); the function is otherwise safe.
            unsafe { self.depthwise_row_avx2(xi, b, oy, out_row) };
            return;
        }
        self.depthwise_row_body(xi, b, oy, out_row);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn depthwise_row_avx2<T: QType>(&self, xi: &[i16], b: usize, oy: usize, out_row: &mut [T]) {
        self.depthwise_row_body(xi, b, oy, out_row);
    }

    #[inline(always)]
    fn depthwise_row_body<T: QType>(&self, xi: &[i16], b: usize, oy: usize, out_row: &mut [T]) {
        let [_, h, w, c] = self.input;
        let oc = self.output[3];
        let m = self.depth_multiplier;
        let mut acc = vec![0i32; oc];
        for ox in 0..self.output[2] {
            acc.copy_from_slice(&self.bias);
            for ky in 0..self.kernel.0 {
                for kx in 0..self.kernel.1 {
                    let Some((iy, ix)) = self.tap(oy, ox, ky, kx) else {
                        continue;
                    };
                    let xp = &xi[((b * h + iy) * w + ix) * c..][..c];
                    let wp = &self.weights[(ky * self.kernel.1 + kx) * oc..][..oc];
                    if m == 1 {
                        for ((a, &xv), &wv) in acc.iter_mut().zip(xp).zip(wp) {
                            *a += xv as i32 * wv as i32;
                        }
                    } else {
                        for (o, (a, &wv)) in acc.iter_mut().zip(wp).enumerate() {
                            *a += xp[o / m] as i32 * wv as i32;
                        }
                    }
                }
            }
            self.requantize(&acc, None, &mut out_row[ox * oc..(ox + 1) * oc]);
        }
    }
}

/// `x` rounded half to even, as `roundss`/XNNPACK's magic-number rounding do, without a libm
/// call where the build targets plain x86-64: adding 1.5·2^23 leaves no fraction bits, and the
/// FPU's default mode rounds that addition to even. Values beyond ±2^22 are clamped first (any
/// result that large saturates the 8-bit output anyway).
#[inline(always)]
pub fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x.clamp(-4_194_304.0, 4_194_304.0) + MAGIC) - MAGIC
}

/// The weights minus their (per output channel) zero point, as i16.
fn offset_weights(
    model: &ModelDef,
    t: usize,
    w: &TensorDef,
    zeros: &[i32],
    depthwise: bool,
) -> Result<Vec<i16>, TfliteError> {
    let raw = model.data(t);
    if raw.len() != w.elements() {
        return Err(TfliteError::Format(format!(
            "weights `{}`: {} bytes for shape {:?}",
            w.name,
            raw.len(),
            w.shape
        )));
    }
    let widen: fn(u8) -> i32 = match w.dtype {
        DType::U8 => |b| b as i32,
        DType::I8 => |b| b as i8 as i32,
        other => {
            return Err(TfliteError::Unsupported(format!(
                "weights `{}` of type {other:?}",
                w.name
            )));
        }
    };
    let per = zeros.len();
    Ok(raw
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            // the output channel is the first dimension, or the last for depthwise weights
            let c = if depthwise {
                i % per
            } else {
                i / (raw.len() / per)
            };
            (widen(b) - zeros[c]) as i16
        })
        .collect())
}
